/* Planner: invariants over generated membership sequences, stability, auto stages,
 * rejections, the JSON codec and pipeline specs. */
#include "err.h"
#include "cluster/pipeline.h"
#include "coordinator/plan.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

static char err[512];

/* xorshift64*: fixed seeds, same sequences everywhere. */
static uint64_t rng_state;
static uint64_t rnd(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}
static int rnd_below(int n)
{
    return (int)(rnd() % (uint64_t)n);
}

static mw_pipelines_t spec_of(const char *text)
{
    mw_pipelines_t p;
    int rc = mw_pipelines_parse(text, &p, err, sizeof(err));
    if (rc != MW_OK)
        fail_msg("spec %s: %s", text, err);
    return p;
}

static mw_plan_member_t member(const char *id, const char *pipeline, int stage, const char *device)
{
    mw_plan_member_t m;
    memset(&m, 0, sizeof(m));
    snprintf(m.id, sizeof(m.id), "%s", id);
    snprintf(m.pipeline, sizeof(m.pipeline), "%s", pipeline);
    snprintf(m.device, sizeof(m.device), "%s", device);
    m.stage = stage;
    m.capacity = 1;
    return m;
}

static mw_plan_t *compute(const mw_pipelines_t *spec, const mw_plan_member_t *m, size_t n,
                          const mw_plan_t *prev, int fanout)
{
    mw_plan_options_t opt = {.max_fanout = fanout};
    mw_plan_t *plan = NULL;
    int rc = mw_plan_compute(spec, m, n, prev, &opt, &plan, err, sizeof(err));
    if (rc != MW_OK)
        fail_msg("mw_plan_compute: %s", err);
    return plan;
}

/* ------------------------------------------------------------- invariants */

static const mw_plan_member_t *live_member(const mw_plan_member_t *m, size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(m[i].id, id) == 0)
            return &m[i];
    return NULL;
}

static int world_between(const mw_plan_t *p, const char *a, const char *b)
{
    for (size_t i = 0; i < p->nworlds; i++)
        if (mw_plan_world_has(&p->worlds[i], a, NULL) && mw_plan_world_has(&p->worlds[i], b, NULL))
            return 1;
    return 0;
}

/* Independent of the planner's bitsets: forward sets from each origin and the sets
 * that reach it back, stage by stage, over active workers only. Fails unless every
 * active worker of a complete pipeline lies on a cycle origin -> ... -> same origin. */
static void assert_routes(const mw_plan_t *p)
{
    for (size_t pi = 0; pi < p->npipelines; pi++) {
        const mw_plan_pipeline_t *pp = &p->pipelines[pi];
        int S = pp->spec.nstages;
        size_t n = 0;
        const mw_plan_worker_t *ws[512];
        int count[MW_PIPELINE_MAX_STAGES] = {0};
        for (size_t i = 0; i < p->nworkers; i++) {
            if (strcmp(p->workers[i].pipeline, pp->spec.name) == 0 && !p->workers[i].draining) {
                assert_true(n < 512);
                ws[n++] = &p->workers[i];
                count[p->workers[i].stage]++;
            }
        }
        int complete = 1;
        for (int s = 0; s < S; s++)
            complete &= count[s] > 0;
        assert_int_equal(pp->complete, complete);
        if (!complete || S == 1)
            continue;
        char *oncycle = calloc(n, 1), *fw = calloc(n, 1), *bk = calloc(n, 1);
        for (size_t o = 0; o < n; o++) {
            if (ws[o]->stage != 0)
                continue;
            memset(fw, 0, n);
            memset(bk, 0, n);
            fw[o] = 1;
            for (int k = 1; k < S; k++)
                for (size_t j = 0; j < n; j++)
                    if (ws[j]->stage == k)
                        for (size_t i = 0; i < n && !fw[j]; i++)
                            if (fw[i] && ws[i]->stage == k - 1 &&
                                world_between(p, ws[i]->id, ws[j]->id))
                                fw[j] = 1;
            for (size_t j = 0; j < n; j++)
                if (ws[j]->stage == S - 1 && world_between(p, ws[j]->id, ws[o]->id))
                    bk[j] = 1;
            for (int k = S - 2; k >= 0; k--)
                for (size_t j = 0; j < n; j++)
                    if (ws[j]->stage == k)
                        for (size_t i = 0; i < n && !bk[j]; i++)
                            if (bk[i] && ws[i]->stage == k + 1 &&
                                world_between(p, ws[i]->id, ws[j]->id))
                                bk[j] = 1;
            for (size_t j = 0; j < n; j++)
                if (fw[j] && bk[j])
                    oncycle[j] = 1;
        }
        for (size_t j = 0; j < n; j++)
            if (!oncycle[j])
                fail_msg("pipeline %s: worker %s (stage %d) has no route to the end and back "
                         "to its origin",
                         pp->spec.name, ws[j]->id, ws[j]->stage);
        free(oncycle);
        free(fw);
        free(bk);
    }
}

/* Worlds only between live workers of adjacent stages, with the right backend and
 * canonical names for new worlds; determinism; JSON round trip. */
static void assert_well_formed(const mw_pipelines_t *spec, const mw_plan_member_t *m, size_t n,
                               const mw_plan_t *prev, const mw_plan_t *p, int fanout)
{
    for (size_t i = 0; i < p->nworkers; i++)
        assert_non_null(live_member(m, n, p->workers[i].id));
    for (size_t i = 0; i < p->nworlds; i++) {
        const mw_plan_world_t *w = &p->worlds[i];
        assert_int_equal(w->nmembers, 2);
        const mw_plan_worker_t *a = mw_plan_find_worker(p, w->members[0]);
        const mw_plan_worker_t *b = mw_plan_find_worker(p, w->members[1]);
        if (a == NULL || b == NULL)
            fail_msg("world %s has a dead member", w->name);
        assert_non_null(live_member(m, n, a->id));
        assert_non_null(live_member(m, n, b->id));
        assert_string_equal(a->pipeline, w->pipeline);
        assert_string_equal(b->pipeline, w->pipeline);
        int S = mw_pipelines_find(spec, w->pipeline)->nstages;
        assert_true(S >= 2);
        assert_true((a->stage + 1) % S == b->stage || (S == 2 && a->stage == 0 && b->stage == 1));
        /* new and kept worlds alike: the members' devices, hosts and carries do not change */
        assert_string_equal(w->backend,
                            mw_plan_backend(live_member(m, n, a->id), live_member(m, n, b->id)));
        if (i > 0)
            assert_true(strcmp(p->worlds[i - 1].name, w->name) < 0);
    }
    mw_plan_t *again = compute(spec, m, n, prev, fanout);
    assert_true(mw_plan_same(p, again));
    mw_plan_destroy(again);
    char *json = mw_plan_encode(p);
    assert_non_null(json);
    mw_plan_t *back = NULL;
    if (mw_plan_decode(json, strlen(json), &back, err, sizeof(err)) != MW_OK)
        fail_msg("decode of an encoded plan: %s", err);
    assert_true(mw_plan_same(p, back));
    mw_plan_destroy(back);
    free(json);
}

/* A worker whose pipeline, stage or device differs between plans, or who joined or left. */
static int changed(const mw_plan_t *prev, const mw_plan_t *p, const char *id)
{
    const mw_plan_worker_t *a = mw_plan_find_worker(prev, id), *b = mw_plan_find_worker(p, id);
    return a == NULL || b == NULL || a->stage != b->stage ||
           strcmp(a->pipeline, b->pipeline) != 0 || strcmp(a->device, b->device) != 0;
}

/* Stability: worlds between unchanged workers survive with the same name; removed worlds
 * contain a changed worker; a new world contains a changed worker unless the step had
 * a leave or drain (routes repaired) or its pipeline was incomplete before. Returns the
 * number of repair worlds seen. */
static int assert_stable(const mw_plan_t *prev, const mw_plan_t *p, int step_had_loss)
{
    int repairs = 0;
    for (size_t i = 0; i < prev->nworlds; i++) {
        const mw_plan_world_t *w = &prev->worlds[i];
        int ch = changed(prev, p, w->members[0]) || changed(prev, p, w->members[1]);
        const mw_plan_world_t *now = mw_plan_find_world(p, w->name);
        if (!ch && now == NULL)
            fail_msg("world %s between unchanged workers was removed", w->name);
        if (now != NULL) {
            assert_int_equal(now->nmembers, w->nmembers);
            assert_string_equal(now->members[0], w->members[0]);
            assert_string_equal(now->members[1], w->members[1]);
        }
    }
    for (size_t i = 0; i < p->nworlds; i++) {
        const mw_plan_world_t *w = &p->worlds[i];
        if (mw_plan_find_world(prev, w->name) != NULL)
            continue;
        if (changed(prev, p, w->members[0]) || changed(prev, p, w->members[1]))
            continue;
        int was_complete = 0;
        for (size_t k = 0; k < prev->npipelines; k++)
            if (strcmp(prev->pipelines[k].spec.name, w->pipeline) == 0)
                was_complete = prev->pipelines[k].complete;
        if (!step_had_loss && was_complete)
            fail_msg("world %s between unchanged workers was added without a loss", w->name);
        repairs++;
    }
    return repairs;
}

/* ------------------------------------------------------- random sequences */

typedef struct sim {
    mw_plan_member_t m[256];
    size_t n;
    int next_id;
} sim_t;

static const char *const pipes[] = {"a", "b", "c", "d"};
static const char *const spec_text = "{\"pipelines\": [{\"name\": \"a\", \"stages\": 3},"
                                     " {\"name\": \"b\", \"stages\": 2},"
                                     " {\"name\": \"c\", \"stages\": 1},"
                                     " {\"name\": \"d\", \"stages\": [{\"need\": 1}, {\"need\": "
                                     "3}, {\"need\": 1}, {\"need\": 2}]}]}";

static void sim_join(sim_t *s, const mw_pipelines_t *spec)
{
    static const char *const devices[] = {"cpu", "cpu", "cuda:0", "cuda:1"};
    char id[32];
    int host = rnd_below(4);
    snprintf(id, sizeof(id), "h%d.w%d", host, s->next_id++);
    const char *pipe = pipes[rnd_below(4)];
    int S = mw_pipelines_find(spec, pipe)->nstages;
    int stage = rnd_below(3) == 0 ? MW_PLAN_STAGE_AUTO : rnd_below(S);
    s->m[s->n] = member(id, pipe, stage, devices[rnd_below(4)]);
    s->m[s->n].capacity = 1 + rnd_below(3);
    snprintf(s->m[s->n].host, sizeof(s->m[s->n].host), "h%d", host);
    s->m[s->n].carries = (unsigned)rnd_below(4); /* any mix of NCCL and CUDA IPC */
    s->n++;
}

static void sim_leave(sim_t *s, int idx)
{
    s->m[idx] = s->m[s->n - 1];
    s->n--;
}

/* Runs steps random joins, leaves and drains; checks every invariant at each step. */
static void run_sequence(uint64_t seed, int steps, int fanout, int allow_drain, int *repairs)
{
    mw_pipelines_t spec = spec_of(spec_text);
    sim_t *s = calloc(1, sizeof(*s));
    rng_state = seed * 0x9E3779B97F4A7C15ULL + 1;
    mw_plan_t *prev = compute(&spec, NULL, 0, NULL, fanout);
    for (int step = 0; step < steps; step++) {
        int loss = 0;
        int r = rnd_below(100);
        int burst = rnd_below(8) == 0 ? 1 + rnd_below(4) : 1; /* several at once sometimes */
        for (int b = 0; b < burst; b++) {
            if (s->n < 8 || (r < 55 && s->n < 120)) {
                sim_join(s, &spec);
            } else if (r < 90 || !allow_drain) {
                sim_leave(s, rnd_below((int)s->n));
                loss = 1;
            } else {
                int i = rnd_below((int)s->n);
                s->m[i].draining = !s->m[i].draining;
                loss = 1;
            }
        }
        mw_plan_t *p = compute(&spec, s->m, s->n, prev, fanout);
        assert_int_equal(p->nworkers, s->n);
        assert_int_equal(p->nrejected, 0);
        assert_well_formed(&spec, s->m, s->n, prev, p, fanout);
        assert_routes(p);
        *repairs += assert_stable(prev, p, loss);
        mw_plan_destroy(prev);
        prev = p;
    }
    mw_plan_destroy(prev);
    mw_pipelines_fini(&spec);
    free(s);
}

static void random_joins_and_leaves_keep_routes_and_unchanged_worlds(void **state)
{
    (void)state;
    int repairs = 0;
    for (uint64_t seed = 1; seed <= 6; seed++)
        for (int fanout = 1; fanout <= 4; fanout++)
            run_sequence(seed, 150, fanout, 1, &repairs);
    print_message("repair worlds after losses: %d\n", repairs);
}

/* With a fanout larger than any stage, a leave never adds a world between survivors. */
static void full_fanout_changes_only_worlds_of_joiners_and_leavers(void **state)
{
    (void)state;
    int repairs = 0;
    for (uint64_t seed = 11; seed <= 14; seed++)
        run_sequence(seed, 150, 1000, 0, &repairs);
    assert_int_equal(repairs, 0);
}

/* From scratch, degrees stay within the fanout unless a smaller stage forces more. */
static void fresh_plan_respects_fanout_where_stage_sizes_allow(void **state)
{
    (void)state;
    mw_pipelines_t spec = spec_of("x:3");
    for (int sizes = 0; sizes < 40; sizes++) {
        rng_state = 777 + (uint64_t)sizes;
        int per[3] = {1 + rnd_below(12), 1 + rnd_below(12), 1 + rnd_below(12)};
        int fanout = 1 + rnd_below(4);
        mw_plan_member_t m[64];
        size_t n = 0;
        for (int s = 0; s < 3; s++)
            for (int i = 0; i < per[s]; i++) {
                char id[16];
                snprintf(id, sizeof(id), "s%dw%d", s, i);
                m[n++] = member(id, "x", s, "cpu");
            }
        mw_plan_t *p = compute(&spec, m, n, NULL, fanout);
        assert_routes(p);
        for (size_t i = 0; i < n; i++) {
            int s = m[i].stage;
            for (int t = 0; t < 3; t++) {
                if (t == s)
                    continue;
                int deg = 0;
                for (size_t j = 0; j < n; j++)
                    if (m[j].stage == t && world_between(p, m[i].id, m[j].id))
                        deg++;
                int forced = (per[t] + per[s] - 1) / per[s];
                int bound = (fanout > forced ? fanout : forced) + 1;
                if (deg > bound)
                    fail_msg("sizes %d/%d/%d fanout %d: %s has %d worlds to stage %d (bound %d)",
                             per[0], per[1], per[2], fanout, m[i].id, deg, t, bound);
            }
        }
        mw_plan_destroy(p);
    }
    mw_pipelines_fini(&spec);
}

/* --------------------------------------------------------- fixed scenarios */

static void kill_of_a_worker_removes_only_its_worlds(void **state)
{
    (void)state;
    mw_pipelines_t spec = spec_of("P:2");
    mw_plan_member_t m[4] = {member("o1", "P", 0, "cpu"), member("o2", "P", 0, "cpu"),
                             member("l1", "P", 1, "cpu"), member("l2", "P", 1, "cpu")};
    mw_plan_t *p1 = compute(&spec, m, 4, NULL, 4);
    assert_int_equal(p1->nworlds, 4);
    assert_non_null(mw_plan_find_world(p1, "P.s0-o1--s1-l1"));
    m[2] = m[3]; /* l1 dies */
    mw_plan_t *p2 = compute(&spec, m, 3, p1, 4);
    assert_int_equal(p2->nworlds, 2);
    assert_non_null(mw_plan_find_world(p2, "P.s0-o1--s1-l2"));
    assert_non_null(mw_plan_find_world(p2, "P.s0-o2--s1-l2"));
    mw_plan_destroy(p1);
    mw_plan_destroy(p2);
    mw_pipelines_fini(&spec);
}

static void world_reported_broken_is_issued_again_and_others_untouched(void **state)
{
    (void)state;
    mw_pipelines_t spec = spec_of("P:2");
    mw_plan_member_t m[3] = {member("o1", "P", 0, "cpu"), member("l1", "P", 1, "cpu"),
                             member("l2", "P", 1, "cpu")};
    mw_plan_t *p1 = compute(&spec, m, 3, NULL, 4);
    assert_int_equal(p1->nworlds, 2);
    for (size_t i = 0; i < p1->nworlds; i++) {
        assert_int_equal(p1->worlds[i].gen, 0); /* new: the publisher stamps them */
        p1->worlds[i].gen = 7;
    }
    /* A report of another incarnation, or of an unknown world, changes nothing. */
    snprintf(m[1].broken, sizeof(m[1].broken), "P.s0-o1--s1-l1@6 nope@7 P.s0-o1--s1-l1x@7");
    mw_plan_t *p2 = compute(&spec, m, 3, p1, 4);
    assert_true(mw_plan_same(p1, p2));
    /* The current incarnation: that world gets gen 0 (issued again), the other stays. */
    snprintf(m[1].broken, sizeof(m[1].broken), "x@1 P.s0-o1--s1-l1@7");
    mw_plan_t *p3 = compute(&spec, m, 3, p1, 4);
    assert_false(mw_plan_same(p1, p3));
    assert_int_equal(p3->nworlds, 2);
    assert_int_equal(mw_plan_find_world(p3, "P.s0-o1--s1-l1")->gen, 0);
    assert_int_equal(mw_plan_find_world(p3, "P.s0-o1--s1-l2")->gen, 7);
    /* gen survives the JSON form. */
    p3->worlds[0].gen = 12;
    char *json = mw_plan_encode(p3);
    mw_plan_t *back = NULL;
    assert_int_equal(mw_plan_decode(json, strlen(json), &back, err, sizeof(err)), MW_OK);
    assert_true(mw_plan_same(p3, back));
    assert_int_equal(back->worlds[0].gen, 12);
    free(json);
    mw_plan_destroy(back);
    mw_plan_destroy(p1);
    mw_plan_destroy(p2);
    mw_plan_destroy(p3);
    mw_pipelines_fini(&spec);
}

static void three_stage_ring_returns_to_origins(void **state)
{
    (void)state;
    mw_pipelines_t spec = spec_of("R:3");
    mw_plan_member_t m[3] = {member("a", "R", 0, "cpu"), member("b", "R", 1, "cpu"),
                             member("c", "R", 2, "cpu")};
    mw_plan_t *p = compute(&spec, m, 3, NULL, 2);
    assert_int_equal(p->nworlds, 3);
    assert_non_null(mw_plan_find_world(p, "R.s0-a--s1-b"));
    assert_non_null(mw_plan_find_world(p, "R.s1-b--s2-c"));
    assert_non_null(mw_plan_find_world(p, "R.s2-c--s0-a")); /* last stage is rank 0 */
    assert_true(p->pipelines[0].complete);
    mw_plan_destroy(p);
    mw_pipelines_fini(&spec);
}

static void single_stage_pipeline_has_no_worlds(void **state)
{
    (void)state;
    mw_pipelines_t spec = spec_of("one:1");
    mw_plan_member_t m[2] = {member("a", "one", 0, "cpu"), member("b", "one", 0, "cpu")};
    mw_plan_t *p = compute(&spec, m, 2, NULL, 4);
    assert_int_equal(p->nworlds, 0);
    assert_true(p->pipelines[0].complete);
    mw_plan_destroy(p);
    mw_pipelines_fini(&spec);
}

/* A world between two GPU workers must be one both data planes can use, or
 * their requests would find no route: today's workers announce tcp only. */
static void gpu_pairs_get_device_worlds_only_where_both_data_planes_carry_them(void **state)
{
    (void)state;
    mw_pipelines_t spec = spec_of("G:2");
    mw_plan_member_t m[3] = {member("g0", "G", 0, "cuda:0"), member("g1", "G", 1, "cuda:1"),
                             member("c1", "G", 1, "cpu")};
    for (int i = 0; i < 3; i++)
        snprintf(m[i].host, sizeof(m[i].host), "h");
    mw_plan_t *p = compute(&spec, m, 3, NULL, 4);
    assert_string_equal(mw_plan_find_world(p, "G.s0-g0--s1-g1")->backend, "tcp");
    assert_string_equal(mw_plan_find_world(p, "G.s0-g0--s1-c1")->backend, "tcp");
    mw_plan_destroy(p);
    for (int i = 0; i < 3; i++)
        m[i].carries = mw_plan_carries_parse("tcp nccl cuda-ipc");
    p = compute(&spec, m, 3, NULL, 4);
    assert_string_equal(mw_plan_find_world(p, "G.s0-g0--s1-g1")->backend, "nccl");
    assert_string_equal(mw_plan_find_world(p, "G.s0-g0--s1-c1")->backend, "tcp");
    mw_plan_destroy(p);
    mw_pipelines_fini(&spec);
}

static void backend_follows_both_devices_hosts_and_what_both_carry(void **state)
{
    (void)state;
    const unsigned N = MW_PLAN_CARRIES_NCCL, I = MW_PLAN_CARRIES_CUDA_IPC;
    static const struct {
        const char *dev_a, *host_a, *dev_b, *host_b;
        unsigned carries_a, carries_b;
        const char *want;
    } cases[] = {
        {"cpu", "h", "cpu", "h", N | I, N | I, "tcp"},
        {"cpu", "h", "cuda:0", "h", N | I, N | I, "tcp"},
        {"cuda:0", "h", "cuda:0", "h", N | I, N | I, "cuda-ipc"}, /* one GPU: NCCL refuses */
        {"cuda:0", "h", "cuda:0", "h", N, N, "tcp"},
        {"cuda:0", "h", "cuda:0", "h", I, N, "tcp"},
        {"cuda:0", "h", "cuda:1", "h", N | I, N | I, "nccl"},
        {"cuda:0", "h", "cuda:1", "h", I, I, "tcp"},
        {"cuda:0", "h", "cuda:1", "h", N, 0, "tcp"},
        {"cuda:0", "h", "cuda:0", "k", N | I, N | I, "nccl"}, /* "cuda:0" of two hosts */
        {"cuda:0", "h", "cuda:0", "k", I, I, "tcp"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        mw_plan_member_t a = member("a", "P", 0, cases[i].dev_a);
        mw_plan_member_t b = member("b", "P", 1, cases[i].dev_b);
        snprintf(a.host, sizeof(a.host), "%s", cases[i].host_a);
        snprintf(b.host, sizeof(b.host), "%s", cases[i].host_b);
        a.carries = cases[i].carries_a;
        b.carries = cases[i].carries_b;
        if (strcmp(mw_plan_backend(&a, &b), cases[i].want) != 0 ||
            strcmp(mw_plan_backend(&b, &a), cases[i].want) != 0)
            fail_msg("case %zu: %s / %s, want %s", i, mw_plan_backend(&a, &b),
                     mw_plan_backend(&b, &a), cases[i].want);
    }
    assert_int_equal(mw_plan_carries_parse("tcp"), 0);
    assert_int_equal(mw_plan_carries_parse(""), 0);
    assert_int_equal(mw_plan_carries_parse("tcp nccl"), N);
    assert_int_equal(mw_plan_carries_parse("cuda-ipc,nccl"), N | I);
    assert_int_equal(mw_plan_carries_parse("ncclx cuda tcp-ipc rdma"), 0); /* newer names: none */
}

static void auto_workers_go_to_stage_with_least_capacity_per_need(void **state)
{
    (void)state;
    mw_pipelines_t spec =
        spec_of("{\"name\": \"A\", \"stages\": [{\"need\": 1}, {\"need\": 4}, {\"need\": 1}]}");
    mw_plan_member_t m[8];
    size_t n = 0;
    m[n++] = member("f0", "A", 0, "cpu");
    m[n++] = member("f2", "A", 2, "cpu");
    for (int i = 0; i < 5; i++) {
        char id[8];
        snprintf(id, sizeof(id), "x%d", i);
        m[n++] = member(id, "A", MW_PLAN_STAGE_AUTO, "cpu");
    }
    mw_plan_t *p = compute(&spec, m, n, NULL, 4);
    /* stage 1 needs 4x: the first four auto workers go there, the fifth ties -> stage 0 */
    int at1 = 0;
    for (size_t i = 0; i < p->nworkers; i++)
        if (p->workers[i].auto_stage) {
            at1 += p->workers[i].stage == 1;
        }
    assert_int_equal(at1, 4);
    assert_int_equal(mw_plan_find_worker(p, "x4")->stage, 0);
    assert_true(mw_plan_find_worker(p, "x0")->auto_stage);
    assert_false(mw_plan_find_worker(p, "f0")->auto_stage);

    /* Sticky: a new plan keeps their stages although loads changed. */
    m[n++] = member("f1", "A", 1, "cpu");
    mw_plan_t *p2 = compute(&spec, m, n, p, 4);
    for (size_t i = 0; i < p->nworkers; i++)
        assert_int_equal(mw_plan_find_worker(p2, p->workers[i].id)->stage, p->workers[i].stage);
    mw_plan_destroy(p);
    mw_plan_destroy(p2);
    mw_pipelines_fini(&spec);
}

static void empty_stage_takes_an_auto_worker_from_a_crowded_one(void **state)
{
    (void)state;
    mw_pipelines_t spec = spec_of("E:2");
    mw_plan_member_t m[3] = {member("a", "E", MW_PLAN_STAGE_AUTO, "cpu"),
                             member("b", "E", MW_PLAN_STAGE_AUTO, "cpu"),
                             member("c", "E", 1, "cpu")};
    mw_plan_t *p = compute(&spec, m, 3, NULL, 4);
    assert_true(p->pipelines[0].complete);
    m[2] = m[1]; /* c leaves; a and b share stage 0 unless one moves */
    mw_plan_t *p2 = compute(&spec, m, 2, p, 4);
    assert_true(p2->pipelines[0].complete);
    assert_int_equal(p2->nworlds, 1);
    mw_plan_destroy(p);
    mw_plan_destroy(p2);
    mw_pipelines_fini(&spec);
}

static mw_plan_t *compute_wanting(const mw_pipelines_t *spec, const mw_plan_member_t *m, size_t n,
                                  const mw_plan_t *prev, const int *want)
{
    mw_plan_options_t opt = {.max_fanout = 4, .auto_want = want};
    mw_plan_t *plan = NULL;
    if (mw_plan_compute(spec, m, n, prev, &opt, &plan, err, sizeof(err)) != MW_OK)
        fail_msg("mw_plan_compute: %s", err);
    assert_routes(plan);
    return plan;
}

static void auto_workers_follow_the_wanted_counts_and_back(void **state)
{
    (void)state;
    mw_pipelines_t spec = spec_of("A:3");
    mw_plan_member_t m[6] = {member("f0", "A", 0, "cpu"),
                             member("f1", "A", 1, "cpu"),
                             member("f2", "A", 2, "cpu"),
                             member("x0", "A", MW_PLAN_STAGE_AUTO, "cpu"),
                             member("x1", "A", MW_PLAN_STAGE_AUTO, "cpu"),
                             member("x2", "A", MW_PLAN_STAGE_AUTO, "cpu")};
    int want[MW_PIPELINE_MAX_STAGES] = {0, 0, 2};
    /* New auto workers go where they are wanted (by need alone, x1 would go to stage 1). */
    mw_plan_t *p = compute_wanting(&spec, m, 5, NULL, want);
    assert_int_equal(mw_plan_find_worker(p, "x0")->stage, 2);
    assert_int_equal(mw_plan_find_worker(p, "x1")->stage, 2);
    /* One more wanted at stage 1: one moves from stage 2, nothing else changes stage. */
    want[1] = 1, want[2] = 1;
    mw_plan_t *p2 = compute_wanting(&spec, m, 5, p, want);
    assert_int_equal(mw_plan_find_worker(p2, "x0")->stage, 1);
    assert_int_equal(mw_plan_find_worker(p2, "x1")->stage, 2);
    assert_int_equal(mw_plan_find_worker(p2, "f2")->stage, 2);
    /* And back. A draining auto worker is neither moved nor counted: with x0
     * draining, x1 is the one stage 2 wants and stays. */
    want[1] = 0, want[2] = 2;
    mw_plan_t *p3 = compute_wanting(&spec, m, 5, p2, want);
    assert_int_equal(mw_plan_find_worker(p3, "x0")->stage, 2);
    m[3].draining = 1;
    want[1] = 1, want[2] = 1;
    mw_plan_t *p4 = compute_wanting(&spec, m, 5, p3, want);
    assert_int_equal(mw_plan_find_worker(p4, "x0")->stage, 2);
    assert_int_equal(mw_plan_find_worker(p4, "x1")->stage, 2);
    /* Never at the cost of emptying a stage; with no wanted counts (-1), auto workers stay. */
    m[3].draining = 0;
    mw_plan_member_t lone[3] = {m[0], m[1], m[5]};
    int none_at_2[MW_PIPELINE_MAX_STAGES] = {0, 1, 0};
    mw_plan_t *p5 = compute_wanting(&spec, lone, 3, NULL, none_at_2);
    assert_int_equal(mw_plan_find_worker(p5, "x2")->stage, 2);
    assert_true(p5->pipelines[0].complete);
    int unknown[MW_PIPELINE_MAX_STAGES] = {-1};
    mw_plan_t *p6 = compute_wanting(&spec, m, 5, p2, unknown);
    assert_int_equal(mw_plan_find_worker(p6, "x0")->stage, 1);
    mw_plan_destroy(p5);
    mw_plan_destroy(p6);
    /* A worker holding requests drains at its stage first (no new work routed
     * to it, its worlds kept), and moves once it holds none. */
    int back[MW_PIPELINE_MAX_STAGES] = {0, 0, 2};
    m[3].inflight = 2;
    p5 = compute_wanting(&spec, m, 5, p2, back);
    const mw_plan_worker_t *x0 = mw_plan_find_worker(p5, "x0");
    assert_int_equal(x0->stage, 1);
    assert_true(x0->draining);
    assert_int_equal(p5->nworlds, p2->nworlds);
    assert_int_equal(mw_plan_find_worker(p5, "x1")->stage, 2);
    p6 = compute_wanting(&spec, m, 5, p5, back); /* still holding: still draining */
    assert_true(mw_plan_find_worker(p6, "x0")->draining);
    m[3].inflight = 0;
    mw_plan_destroy(p5);
    p5 = compute_wanting(&spec, m, 5, p6, back);
    assert_int_equal(mw_plan_find_worker(p5, "x0")->stage, 2);
    assert_false(mw_plan_find_worker(p5, "x0")->draining);
    /* Wanted back where it is before it left: it stays, serving again. */
    m[3].inflight = 2;
    mw_plan_destroy(p6);
    p6 = compute_wanting(&spec, m, 5, p2, back);
    assert_true(mw_plan_find_worker(p6, "x0")->draining);
    int stay[MW_PIPELINE_MAX_STAGES] = {0, 1, 1};
    mw_plan_t *p7 = compute_wanting(&spec, m, 5, p6, stay);
    assert_int_equal(mw_plan_find_worker(p7, "x0")->stage, 1);
    assert_false(mw_plan_find_worker(p7, "x0")->draining);
    mw_plan_destroy(p7);
    mw_plan_destroy(p);
    mw_plan_destroy(p2);
    mw_plan_destroy(p3);
    mw_plan_destroy(p4);
    mw_plan_destroy(p5);
    mw_plan_destroy(p6);
    mw_pipelines_fini(&spec);
}

static void bad_members_are_rejected_with_reasons(void **state)
{
    (void)state;
    mw_pipelines_t spec = spec_of("P:2");
    mw_plan_member_t m[5] = {member("ok", "P", 0, "cpu"), member("ok", "P", 1, "cpu"),
                             member("lost", "Q", 0, "cpu"), member("far", "P", 7, "cpu"),
                             member("bad id!", "P", 0, "cpu")};
    mw_plan_t *p = compute(&spec, m, 5, NULL, 4);
    assert_int_equal(p->nworkers, 1);
    assert_int_equal(p->nrejected, 4);
    int seen = 0;
    for (size_t i = 0; i < p->nrejected; i++) {
        seen |= strstr(p->rejected[i].reason, "duplicate") ? 1 : 0;
        seen |= strstr(p->rejected[i].reason, "unknown pipeline 'Q'") ? 2 : 0;
        seen |= strstr(p->rejected[i].reason, "stage 7 out of range") ? 4 : 0;
        seen |= strstr(p->rejected[i].reason, "invalid worker id") ? 8 : 0;
    }
    assert_int_equal(seen, 15);
    assert_false(p->pipelines[0].complete);
    mw_plan_destroy(p);
    mw_pipelines_fini(&spec);
}

static void long_ids_get_hashed_world_names(void **state)
{
    (void)state;
    char a[64], b[64], name[MW_PLAN_WORLD_NAME_MAX], name2[MW_PLAN_WORLD_NAME_MAX];
    memset(a, 'a', 63);
    a[63] = '\0';
    memset(b, 'b', 63);
    b[63] = '\0';
    mw_plan_world_name(name, sizeof(name), "pipeline-with-a-long-name-0123456789", 0, a, 1, b);
    mw_plan_world_name(name2, sizeof(name2), "pipeline-with-a-long-name-0123456789", 0, a, 1, b);
    assert_string_equal(name, name2);
    assert_true(strlen(name) < 80);
    assert_non_null(strstr(name, ".s0-s1-"));
}

/* ---------------------------------------------------------------- codec */

static void malformed_plans_are_rejected_with_a_message(void **state)
{
    (void)state;
    static const struct {
        const char *json;
        const char *expect;
    } cases[] = {
        {"", "not valid JSON"},
        {"{\"epoch\": 1", "not valid JSON"},
        {"[]", "epoch"},
        {"{\"epoch\": -1, \"version\": 0, \"pipelines\": [], \"workers\": [], \"worlds\": []}",
         "epoch"},
        {"{\"epoch\": 1.5, \"version\": 0, \"pipelines\": [], \"workers\": [], \"worlds\": []}",
         "epoch"},
        {"{\"epoch\": 1, \"version\": 0, \"pipelines\": {}, \"workers\": [], \"worlds\": []}",
         "arrays"},
        {"{\"epoch\": 1, \"version\": 0, \"pipelines\": [], \"workers\": [{\"id\": \"w\"}], "
         "\"worlds\": []}",
         "pipeline"},
        {"{\"epoch\": 1, \"version\": 0, \"pipelines\": [{\"name\": \"P\", \"complete\": true, "
         "\"stages\": []}], \"workers\": [], \"worlds\": []}",
         "stages"},
        {"{\"epoch\": 1, \"version\": 0, \"pipelines\": [{\"name\": \"P\", \"complete\": true, "
         "\"stages\": [{\"need\": 1}]}],"
         " \"workers\": [{\"id\": \"w\", \"pipeline\": \"P\", \"stage\": 3, \"device\": \"cpu\", "
         "\"state\": \"active\"}], \"worlds\": []}",
         "stage"},
        {"{\"epoch\": 1, \"version\": 0, \"pipelines\": [{\"name\": \"P\", \"complete\": true, "
         "\"stages\": [{\"need\": 1}, {\"need\": 1}]}],"
         " \"workers\": [{\"id\": \"w\", \"pipeline\": \"P\", \"stage\": 0, \"device\": \"cpu\", "
         "\"state\": \"active\"},"
         " {\"id\": \"w\", \"pipeline\": \"P\", \"stage\": 1, \"device\": \"cpu\", \"state\": "
         "\"active\"}], \"worlds\": []}",
         "listed twice"},
        {"{\"epoch\": 1, \"version\": 0, \"pipelines\": [{\"name\": \"P\", \"complete\": true, "
         "\"stages\": [{\"need\": 1}, {\"need\": 1}]}],"
         " \"workers\": [{\"id\": \"w\", \"pipeline\": \"P\", \"stage\": 0, \"device\": \"cpu\", "
         "\"state\": \"active\"}],"
         " \"worlds\": [{\"name\": \"x\", \"pipeline\": \"P\", \"backend\": \"tcp\", \"members\": "
         "[\"w\", \"ghost\"]}]}",
         "rank 1"},
        {"{\"epoch\": 1, \"version\": 0, \"pipelines\": [{\"name\": \"P\", \"complete\": true, "
         "\"stages\": [{\"need\": 1}, {\"need\": 1}]}],"
         " \"workers\": [{\"id\": \"w\", \"pipeline\": \"P\", \"stage\": 0, \"device\": \"cpu\", "
         "\"state\": \"active\"},"
         " {\"id\": \"v\", \"pipeline\": \"P\", \"stage\": 1, \"device\": \"cpu\", \"state\": "
         "\"active\"}],"
         " \"worlds\": [{\"name\": \"x\", \"pipeline\": \"P\", \"backend\": \"carrier-pigeon\", "
         "\"members\": [\"w\", \"v\"]}]}",
         "backend"},
        {"{\"epoch\": 1, \"version\": 0, \"pipelines\": [{\"name\": \"P\", \"complete\": true, "
         "\"stages\": [{\"need\": 1}, {\"need\": 1}]}],"
         " \"workers\": [{\"id\": \"w\", \"pipeline\": \"P\", \"stage\": 0, \"device\": \"cpu\", "
         "\"state\": \"active\"},"
         " {\"id\": \"v\", \"pipeline\": \"P\", \"stage\": 1, \"device\": \"cpu\", \"state\": "
         "\"active\"}],"
         " \"worlds\": [{\"name\": \"x\", \"pipeline\": \"P\", \"backend\": \"tcp\", \"members\": "
         "[\"w\", \"v\"]},"
         " {\"name\": \"x\", \"pipeline\": \"P\", \"backend\": \"tcp\", \"members\": [\"w\", "
         "\"v\"]}]}",
         "world 'x' listed twice"},
        {"{\"epoch\": 1, \"version\": 0, \"pipelines\": [{\"name\": \"P\", \"complete\": true, "
         "\"stages\": [{\"need\": 1}, {\"need\": 1}]}],"
         " \"workers\": [{\"id\": \"w\", \"pipeline\": \"P\", \"stage\": 0, \"device\": \"cpu\", "
         "\"state\": \"active\"}],"
         " \"worlds\": [{\"name\": \"x\", \"pipeline\": \"P\", \"backend\": \"tcp\", \"members\": "
         "[\"w\", \"w\"]}]}",
         "listed twice"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        mw_plan_t *p = (mw_plan_t *)1;
        err[0] = '\0';
        int rc = mw_plan_decode(cases[i].json, strlen(cases[i].json), &p, err, sizeof(err));
        if (rc != MW_EINVAL || p != NULL || strstr(err, cases[i].expect) == NULL)
            fail_msg("case %zu: rc %d, message '%s', expected '%s'", i, rc, err, cases[i].expect);
    }
}

static void plan_json_round_trips(void **state)
{
    (void)state;
    mw_pipelines_t spec = spec_of("{\"name\": \"M\", \"model\": \"m.safetensors\", \"stages\": "
                                  "[{\"need\": 2, \"layers\": [0, 3]}, {\"layers\": [3, 5]}]}");
    mw_plan_member_t m[3] = {member("a", "M", 0, "cpu"), member("b", "M", 1, "cuda:0"),
                             member("c", "M", MW_PLAN_STAGE_AUTO, "cpu")};
    m[2].draining = 1;
    mw_plan_t *p = compute(&spec, m, 3, NULL, 4);
    p->epoch = 7;
    p->version = 42;
    char *json = mw_plan_encode(p);
    mw_plan_t *q = NULL;
    assert_int_equal(mw_plan_decode(json, strlen(json), &q, err, sizeof(err)), MW_OK);
    assert_true(mw_plan_same(p, q));
    assert_int_equal(q->epoch, 7);
    assert_int_equal(q->version, 42);
    assert_int_equal(q->pipelines[0].spec.stages[1].layer_begin, 3);
    assert_string_equal(q->pipelines[0].spec.model, "m.safetensors");
    assert_true(mw_plan_find_worker(q, "c")->draining);
    free(json);
    mw_plan_destroy(p);
    mw_plan_destroy(q);
    mw_pipelines_fini(&spec);
}

/* ---------------------------------------------------------- pipeline specs */

static void pipeline_specs_parse_in_every_form(void **state)
{
    (void)state;
    mw_pipelines_t p = spec_of("a:2,b:3");
    assert_int_equal(p.count, 2);
    assert_int_equal(mw_pipelines_find(&p, "b")->nstages, 3);
    mw_pipelines_fini(&p);
    p = spec_of("[{\"name\": \"x\", \"stages\": 1}]");
    assert_int_equal(p.count, 1);
    mw_pipelines_fini(&p);

    char path[64];
    snprintf(path, sizeof(path), "/tmp/mw-test-spec-%d.json", (int)getpid());
    FILE *f = fopen(path, "w");
    fputs("{\"pipelines\": [{\"name\": \"f\", \"stages\": [{\"need\": 2, \"layers\": [0, 1]}]}]}",
          f);
    fclose(f);
    p = spec_of(path);
    assert_true(mw_pipelines_find(&p, "f")->stages[0].need == 2.0);
    mw_pipelines_fini(&p);
    remove(path);
}

static void invalid_pipeline_specs_say_what_is_wrong(void **state)
{
    (void)state;
    static const struct {
        const char *spec;
        const char *expect;
    } cases[] = {
        {"", "no pipeline spec"},
        {"a:0", "stages of 'a' must be 1..64"},
        {"a:2,a:3", "declared twice"},
        {"{\"name\": \"a\"}", "\"stages\" is missing"},
        {"{\"name\": \"a b\", \"stages\": 1}", "\"name\" must be"},
        {"{\"name\": \"a\", \"stages\": 1, \"colour\": 1}", "unknown field \"colour\""},
        {"{\"name\": \"a\", \"stages\": [{\"need\": 0}]}", "\"need\" must be a number > 0"},
        {"{\"name\": \"a\", \"stages\": [{\"layers\": [0, 2]}, {\"layers\": [3, 4]}]}",
         "contiguous"},
        {"{\"name\": \"a\", \"stages\": [{\"layers\": [2, 1]}]}", "\"layers\" must be"},
        {"{\"pipelines\": []}", "declares no pipeline"},
        {"{\"pipelines\": [", "not valid JSON"},
        {"/nonexistent/spec.json", "/nonexistent/spec.json"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        mw_pipelines_t p;
        err[0] = '\0';
        int rc = mw_pipelines_parse(cases[i].spec, &p, err, sizeof(err));
        if (rc != MW_EINVAL || p.count != 0 || strstr(err, cases[i].expect) == NULL)
            fail_msg("spec '%s': rc %d, message '%s', expected '%s'", cases[i].spec, rc, err,
                     cases[i].expect);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(random_joins_and_leaves_keep_routes_and_unchanged_worlds),
        cmocka_unit_test(full_fanout_changes_only_worlds_of_joiners_and_leavers),
        cmocka_unit_test(fresh_plan_respects_fanout_where_stage_sizes_allow),
        cmocka_unit_test(kill_of_a_worker_removes_only_its_worlds),
        cmocka_unit_test(world_reported_broken_is_issued_again_and_others_untouched),
        cmocka_unit_test(three_stage_ring_returns_to_origins),
        cmocka_unit_test(single_stage_pipeline_has_no_worlds),
        cmocka_unit_test(gpu_pairs_get_device_worlds_only_where_both_data_planes_carry_them),
        cmocka_unit_test(backend_follows_both_devices_hosts_and_what_both_carry),
        cmocka_unit_test(auto_workers_go_to_stage_with_least_capacity_per_need),
        cmocka_unit_test(empty_stage_takes_an_auto_worker_from_a_crowded_one),
        cmocka_unit_test(auto_workers_follow_the_wanted_counts_and_back),
        cmocka_unit_test(bad_members_are_rejected_with_reasons),
        cmocka_unit_test(long_ids_get_hashed_world_names),
        cmocka_unit_test(malformed_plans_are_rejected_with_a_message),
        cmocka_unit_test(plan_json_round_trips),
        cmocka_unit_test(pipeline_specs_parse_in_every_form),
        cmocka_unit_test(invalid_pipeline_specs_say_what_is_wrong),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
