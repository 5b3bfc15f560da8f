/* The world planner: a pure function (no I/O, no clock) from membership to the plan. */
#include "plan.h"

#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ planner */

/* One pipeline's graph while planning: nodes are indices into plan->workers. */
typedef struct node {
    int w; /* index into plan->workers */
    int stage;
    int isnew;  /* joined, or changed pipeline/stage/device since prev */
    int active; /* not draining */
    int *adj;   /* neighbour node indices */
    int nadj, capadj;
    int origin; /* bit index among active origins, or -1 */
} node_t;

typedef struct graph {
    const mw_plan_t *plan;
    const mw_pipeline_spec_t *spec;
    node_t *nodes;
    int n;
    int fanout;
    int words;       /* uint64 words per origin bitset */
    uint64_t *back;  /* n * words: origins that reach the node going forward */
    uint64_t *fwd;   /* n * words: origins the node reaches (through the return) */
    int (*edges)[2]; /* new edges: node indices, [0] = rank 0 */
    int nedges, capedges;
} graph_t;

static const char *node_id(const graph_t *g, int i)
{
    return g->plan->workers[g->nodes[i].w].id;
}

static int adjacent(const graph_t *g, int a, int b)
{
    const node_t *x = &g->nodes[a];
    for (int i = 0; i < x->nadj; i++)
        if (x->adj[i] == b)
            return 1;
    return 0;
}

static int push_adj(node_t *x, int b)
{
    if (x->nadj == x->capadj) {
        int cap = x->capadj ? x->capadj * 2 : 8;
        int *adj = realloc(x->adj, (size_t)cap * sizeof(*adj));
        if (adj == NULL)
            return MW_ENOMEM;
        x->adj = adj;
        x->capadj = cap;
    }
    x->adj[x->nadj++] = b;
    return MW_OK;
}

/* Links a and b (adjacency only). */
static int link_nodes(graph_t *g, int a, int b)
{
    int rc = push_adj(&g->nodes[a], b);
    return rc != MW_OK ? rc : push_adj(&g->nodes[b], a);
}

/* Stage that sends over the pair (sa, sb) in ring order: rank 0 of the world. */
static int ring_first(int sa, int sb, int nstages)
{
    if (nstages == 2)
        return sa < sb ? 0 : 1; /* the one world carries both directions; stage 0 first */
    return (sa + 1) % nstages == sb ? 0 : 1;
}

static int ring_adjacent(int sa, int sb, int nstages)
{
    return nstages >= 2 && sa != sb && ((sa + 1) % nstages == sb || (sb + 1) % nstages == sa);
}

/* Adds a new world between a and b (not yet adjacent, adjacent stages). */
static int add_edge(graph_t *g, int a, int b)
{
    if (g->nedges == g->capedges) {
        int cap = g->capedges ? g->capedges * 2 : 16;
        int(*e)[2] = realloc(g->edges, (size_t)cap * sizeof(*e));
        if (e == NULL)
            return MW_ENOMEM;
        g->edges = e;
        g->capedges = cap;
    }
    if (ring_first(g->nodes[a].stage, g->nodes[b].stage, g->spec->nstages) != 0) {
        int t = a;
        a = b;
        b = t;
    }
    g->edges[g->nedges][0] = a;
    g->edges[g->nedges][1] = b;
    g->nedges++;
    return link_nodes(g, a, b);
}

/* Worlds of node a toward stage s. */
static int degree_to(const graph_t *g, int a, int s)
{
    int d = 0;
    for (int i = 0; i < g->nodes[a].nadj; i++)
        d += g->nodes[g->nodes[a].adj[i]].stage == s;
    return d;
}

/* Candidate order: under the fanout first, then fewer worlds, then a hash of the
 * pair so that equal candidates spread evenly and deterministically. */
typedef struct cand {
    int node;
    int over;
    int deg;
    uint64_t h;
} cand_t;

static int cmp_cand(const void *a, const void *b)
{
    const cand_t *x = a, *y = b;
    if (x->over != y->over)
        return x->over - y->over;
    if (x->deg != y->deg)
        return x->deg - y->deg;
    return x->h < y->h ? -1 : x->h > y->h;
}

static cand_t make_cand(const graph_t *g, int self, int c)
{
    int deg = degree_to(g, c, g->nodes[self].stage);
    cand_t k = {c, deg >= g->fanout, deg,
                mw_plan_fnv1a(mw_plan_fnv1a(MW_PLAN_FNV_SEED, node_id(g, self)), node_id(g, c))};
    return k;
}

static int better(const cand_t *a, const cand_t *best)
{
    return best->node < 0 || cmp_cand(a, best) < 0;
}

/* A new worker opens worlds to up to limit active workers of stage t, preferring
 * those under the fanout; at least one when t has any. */
static int fill(graph_t *g, int self, int t, int limit, cand_t *buf)
{
    int nc = 0, total = 0;
    for (int c = 0; c < g->n; c++) {
        if (g->nodes[c].stage != t || !g->nodes[c].active)
            continue;
        total++;
        if (!adjacent(g, self, c))
            buf[nc++] = make_cand(g, self, c);
    }
    int want = (total < limit ? total : limit) - degree_to(g, self, t);
    qsort(buf, (size_t)nc, sizeof(*buf), cmp_cand);
    for (int i = 0; i < nc && want > 0; i++) {
        if (buf[i].over && degree_to(g, self, t) > 0)
            break;
        int rc = add_edge(g, self, buf[i].node);
        if (rc != MW_OK)
            return rc;
        want--;
    }
    return MW_OK;
}

static uint64_t *bits(uint64_t *set, const graph_t *g, int node)
{
    return set + (size_t)node * g->words;
}

static int intersects(const graph_t *g, const uint64_t *a, const uint64_t *b)
{
    for (int i = 0; i < g->words; i++)
        if (a[i] & b[i])
            return 1;
    return 0;
}

static int has_bit(const uint64_t *a, int bit)
{
    return (a[bit / 64] >> (bit % 64)) & 1;
}

/* back: origins that reach the node going forward; fwd: origins the node reaches
 * through the later stages and the return world. Draining workers carry nothing. */
static void reach(graph_t *g)
{
    int S = g->spec->nstages;
    memset(g->back, 0, (size_t)g->n * g->words * sizeof(uint64_t));
    memset(g->fwd, 0, (size_t)g->n * g->words * sizeof(uint64_t));
    for (int k = 0; k < S; k++) {
        for (int i = 0; i < g->n; i++) {
            node_t *x = &g->nodes[i];
            if (x->stage != k || !x->active)
                continue;
            uint64_t *b = bits(g->back, g, i);
            if (k == 0) {
                b[x->origin / 64] |= 1ULL << (x->origin % 64);
                continue;
            }
            for (int j = 0; j < x->nadj; j++) {
                const node_t *y = &g->nodes[x->adj[j]];
                if (y->active && y->stage == k - 1)
                    for (int w = 0; w < g->words; w++)
                        b[w] |= bits(g->back, g, x->adj[j])[w];
            }
        }
    }
    for (int k = S - 1; k >= 0; k--) {
        for (int i = 0; i < g->n; i++) {
            node_t *x = &g->nodes[i];
            if (x->stage != k || !x->active)
                continue;
            uint64_t *f = bits(g->fwd, g, i);
            for (int j = 0; j < x->nadj; j++) {
                const node_t *y = &g->nodes[x->adj[j]];
                if (!y->active || y->stage != (k + 1) % S)
                    continue;
                if (k == S - 1)
                    f[y->origin / 64] |= 1ULL << (y->origin % 64);
                else
                    for (int w = 0; w < g->words; w++)
                        f[w] |= bits(g->fwd, g, x->adj[j])[w];
            }
        }
    }
}

static int on_cycle(graph_t *g, int i)
{
    return intersects(g, bits(g->back, g, i), bits(g->fwd, g, i));
}

/* Walks a cycle through origin o (on a cycle): c[k] for every stage. */
static void walk_cycle(graph_t *g, int o, int *c)
{
    int S = g->spec->nstages, bit = g->nodes[o].origin;
    c[0] = o;
    for (int k = 1; k < S; k++) {
        cand_t best = {-1, 0, 0, 0};
        const node_t *x = &g->nodes[c[k - 1]];
        for (int j = 0; j < x->nadj; j++) {
            int y = x->adj[j];
            if (!g->nodes[y].active || g->nodes[y].stage != k || !has_bit(bits(g->fwd, g, y), bit))
                continue;
            cand_t cd = make_cand(g, c[k - 1], y);
            if (better(&cd, &best))
                best = cd;
        }
        c[k] = best.node; /* exists: o reaches itself through c[k-1] */
    }
}

/* Puts active node i, which lies on no cycle, on one by adding worlds that include it. */
static int repair(graph_t *g, int i, int *cyc)
{
    int S = g->spec->nstages, k = g->nodes[i].stage;
    int up = (k + S - 1) % S, down = (k + 1) % S;
    cand_t best = {-1, 0, 0, 0};
    for (int c = 0; c < g->n; c++) {
        const node_t *y = &g->nodes[c];
        if (!y->active || (y->stage != up && y->stage != down) || adjacent(g, i, c))
            continue;
        int ok;
        if (S == 2)
            ok = 1; /* any partner makes a two-stage cycle */
        else if (y->stage == down)
            ok = down == 0 ? has_bit(bits(g->back, g, i), y->origin)
                           : intersects(g, bits(g->fwd, g, c), bits(g->back, g, i));
        else
            ok = k == 0 ? has_bit(bits(g->back, g, c), g->nodes[i].origin)
                        : intersects(g, bits(g->back, g, c), bits(g->fwd, g, i));
        if (!ok)
            continue;
        cand_t cd = make_cand(g, i, c);
        if (better(&cd, &best))
            best = cd;
    }
    if (best.node >= 0)
        return add_edge(g, i, best.node);

    /* Splice into an existing cycle: c[up] -> i -> c[down]. */
    cand_t orig = {-1, 0, 0, 0};
    for (int c = 0; c < g->n; c++) {
        if (g->nodes[c].active && g->nodes[c].stage == 0 && on_cycle(g, c)) {
            cand_t cd = make_cand(g, i, c);
            cd.over = 0; /* the origin's own fanout does not matter here */
            cd.deg = g->nodes[c].nadj;
            if (better(&cd, &orig))
                orig = cd;
        }
    }
    if (orig.node < 0)
        return MW_ENOTFOUND;
    walk_cycle(g, orig.node, cyc);
    int rc = MW_OK;
    if (!adjacent(g, i, cyc[up]))
        rc = add_edge(g, cyc[up], i);
    if (rc == MW_OK && !adjacent(g, i, cyc[down]))
        rc = add_edge(g, i, cyc[down]);
    return rc;
}

/* No cycle at all: builds one per greedy walk from the origin needing the fewest new worlds. */
static int seed_cycle(graph_t *g, int *cyc, int *best_cyc)
{
    int S = g->spec->nstages, best_cost = -1;
    for (int o = 0; o < g->n; o++) {
        if (!g->nodes[o].active || g->nodes[o].stage != 0)
            continue;
        int cost = 0;
        cyc[0] = o;
        for (int k = 1; k < S; k++) {
            cand_t best = {-1, 0, 0, 0};
            const node_t *x = &g->nodes[cyc[k - 1]];
            for (int j = 0; j < x->nadj; j++) { /* an existing world first */
                int y = x->adj[j];
                if (g->nodes[y].active && g->nodes[y].stage == k) {
                    cand_t cd = make_cand(g, cyc[k - 1], y);
                    if (better(&cd, &best))
                        best = cd;
                }
            }
            if (best.node < 0) {
                cost++;
                for (int y = 0; y < g->n; y++) {
                    if (g->nodes[y].active && g->nodes[y].stage == k) {
                        cand_t cd = make_cand(g, cyc[k - 1], y);
                        if (better(&cd, &best))
                            best = cd;
                    }
                }
            }
            cyc[k] = best.node;
        }
        cost += !adjacent(g, cyc[S - 1], o);
        if (best_cost < 0 || cost < best_cost) {
            best_cost = cost;
            memcpy(best_cyc, cyc, (size_t)S * sizeof(*cyc));
        }
    }
    if (best_cost < 0)
        return MW_ENOTFOUND;
    for (int k = 0; k < S; k++) {
        int a = best_cyc[k], b = best_cyc[(k + 1) % S];
        if (a != b && !adjacent(g, a, b)) {
            int rc = add_edge(g, a, b);
            if (rc != MW_OK)
                return rc;
        }
    }
    return MW_OK;
}

static int ensure_cycles(graph_t *g)
{
    int S = g->spec->nstages, norigins = 0;
    for (int i = 0; i < g->n; i++)
        g->nodes[i].origin = g->nodes[i].active && g->nodes[i].stage == 0 ? norigins++ : -1;
    g->words = (norigins + 63) / 64;
    g->back = calloc((size_t)g->n * g->words, sizeof(uint64_t));
    g->fwd = calloc((size_t)g->n * g->words, sizeof(uint64_t));
    int *cyc = malloc(2 * (size_t)S * sizeof(int));
    int rc = MW_ENOMEM;
    if (g->back == NULL || g->fwd == NULL || cyc == NULL)
        goto out_free;
    rc = MW_OK;
    for (int guard = 0; guard < 4 * g->n + 8; guard++) {
        reach(g);
        int bad = -1;
        for (int i = 0; i < g->n && bad < 0; i++)
            if (g->nodes[i].active && !on_cycle(g, i))
                bad = i;
        if (bad < 0)
            break;
        rc = repair(g, bad, cyc);
        if (rc == MW_ENOTFOUND)
            rc = seed_cycle(g, cyc, cyc + S);
        if (rc != MW_OK)
            break;
    }
out_free:
    free(cyc);
    free(g->back);
    free(g->fwd);
    g->back = g->fwd = NULL;
    return rc;
}

static int push_world(mw_plan_t *plan, size_t *cap, const mw_plan_world_t *w)
{
    if (plan->nworlds == *cap) {
        size_t c = *cap ? *cap * 2 : 64;
        mw_plan_world_t *ws = realloc(plan->worlds, c * sizeof(*ws));
        if (ws == NULL)
            return MW_ENOMEM;
        plan->worlds = ws;
        *cap = c;
    }
    plan->worlds[plan->nworlds++] = *w;
    return MW_OK;
}

static int reject(mw_plan_t *plan, const char *id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int reject(mw_plan_t *plan, const char *id, const char *fmt, ...)
{
    mw_plan_reject_t *r = realloc(plan->rejected, (plan->nrejected + 1) * sizeof(*r));
    if (r == NULL)
        return MW_ENOMEM;
    plan->rejected = r;
    r = &r[plan->nrejected++];
    snprintf(r->id, sizeof(r->id), "%s", id);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->reason, sizeof(r->reason), fmt, ap);
    va_end(ap);
    return MW_OK;
}

/* 1 when the report ("name@gen name@gen ...") names this incarnation of w. */
static int reports_broken(const char *report, const mw_plan_world_t *w)
{
    size_t len = strlen(w->name);
    for (const char *t = report; (t = strstr(t, w->name)) != NULL; t += len) {
        if ((t != report && t[-1] != ' ') || t[len] != '@')
            continue;
        char *end = NULL;
        long long gen = strtoll(t + len + 1, &end, 10);
        if (gen == w->gen && (*end == ' ' || *end == '\0'))
            return 1;
    }
    return 0;
}

static int is_gpu(const mw_plan_member_t *m)
{
    return strncmp(m->device, "cuda:", 5) == 0;
}

const char *mw_plan_backend(const mw_plan_member_t *a, const mw_plan_member_t *b)
{
    if (!is_gpu(a) || !is_gpu(b))
        return "tcp";
    unsigned both = a->carries & b->carries;
    if (strcmp(a->host, b->host) == 0 && strcmp(a->device, b->device) == 0)
        return both & MW_PLAN_CARRIES_CUDA_IPC ? "cuda-ipc" : "tcp";
    return both & MW_PLAN_CARRIES_NCCL ? "nccl" : "tcp";
}

/* Plans one pipeline: keeps prev's worlds between unchanged workers, fills new
 * workers up to the fanout, then makes sure every active worker is on a cycle. */
static int plan_pipeline(mw_plan_t *plan, size_t *wcap, const mw_plan_pipeline_t *pp,
                         const mw_plan_t *prev, const char *isnew,
                         const mw_plan_member_t *const *member_of, int fanout)
{
    graph_t g = {.plan = plan, .spec = &pp->spec, .fanout = fanout};
    int rc = MW_ENOMEM;
    int *index = malloc((plan->nworkers + 1) * sizeof(int)); /* worker -> node */
    g.nodes = calloc(plan->nworkers + 1, sizeof(node_t));
    cand_t *buf = malloc((plan->nworkers + 1) * sizeof(cand_t));
    if (index == NULL || g.nodes == NULL || buf == NULL)
        goto out_free;
    for (size_t w = 0; w < plan->nworkers; w++) {
        index[w] = -1;
        const mw_plan_worker_t *pw = &plan->workers[w];
        if (strcmp(pw->pipeline, pp->spec.name) != 0)
            continue;
        index[w] = g.n;
        node_t *x = &g.nodes[g.n++];
        x->w = (int)w;
        x->stage = pw->stage;
        x->isnew = isnew[w];
        x->active = !pw->draining;
    }
    rc = MW_OK;

    /* Worlds of prev between unchanged workers keep their names. */
    for (size_t i = 0; prev != NULL && i < prev->nworlds && rc == MW_OK; i++) {
        const mw_plan_world_t *pw = &prev->worlds[i];
        if (strcmp(pw->pipeline, pp->spec.name) != 0 || pw->nmembers != 2)
            continue;
        const mw_plan_worker_t *a = mw_plan_find_worker(plan, pw->members[0]);
        const mw_plan_worker_t *b = mw_plan_find_worker(plan, pw->members[1]);
        if (a == NULL || b == NULL)
            continue;
        int na = index[a - plan->workers], nb = index[b - plan->workers];
        if (na < 0 || nb < 0 || g.nodes[na].isnew || g.nodes[nb].isnew ||
            !ring_adjacent(a->stage, b->stage, pp->spec.nstages) ||
            ring_first(a->stage, b->stage, pp->spec.nstages) != 0 || adjacent(&g, na, nb))
            continue;
        rc = push_world(plan, wcap, pw); /* prev's names are unique (decode checks) */
        if (rc == MW_OK)
            rc = link_nodes(&g, na, nb);
    }

    /* One world each first, so that early joiners do not use up the fanout of a
     * small stage that later joiners need too; then up to the fanout. */
    int S = pp->spec.nstages;
    for (int limit = 1; limit <= fanout && limit <= 2; limit++) {
        for (int i = 0; i < g.n && rc == MW_OK && S >= 2; i++) {
            if (!g.nodes[i].isnew || !g.nodes[i].active)
                continue;
            int k = g.nodes[i].stage, lim = limit == 1 ? 1 : fanout;
            rc = fill(&g, i, (k + 1) % S, lim, buf);
            if (rc == MW_OK && S >= 3)
                rc = fill(&g, i, (k + S - 1) % S, lim, buf);
        }
    }
    if (rc == MW_OK && S >= 2 && pp->complete)
        rc = ensure_cycles(&g);

    for (int e = 0; e < g.nedges && rc == MW_OK; e++) {
        const mw_plan_worker_t *a = &plan->workers[g.nodes[g.edges[e][0]].w];
        const mw_plan_worker_t *b = &plan->workers[g.nodes[g.edges[e][1]].w];
        mw_plan_world_t w;
        memset(&w, 0, sizeof(w));
        mw_plan_world_name(w.name, sizeof(w.name), pp->spec.name, a->stage, a->id, b->stage, b->id);
        snprintf(w.pipeline, sizeof(w.pipeline), "%s", pp->spec.name);
        snprintf(w.backend, sizeof(w.backend), "%s",
                 mw_plan_backend(member_of[g.nodes[g.edges[e][0]].w],
                                 member_of[g.nodes[g.edges[e][1]].w]));
        w.nmembers = 2;
        snprintf(w.members[0], sizeof(w.members[0]), "%s", a->id);
        snprintf(w.members[1], sizeof(w.members[1]), "%s", b->id);
        rc = push_world(plan, wcap, &w);
    }
out_free:
    for (int i = 0; g.nodes != NULL && i < g.n; i++)
        free(g.nodes[i].adj);
    free(g.nodes);
    free(g.edges);
    free(index);
    free(buf);
    return rc;
}

static int cmp_member_ptr(const void *a, const void *b)
{
    return strcmp((*(const mw_plan_member_t *const *)a)->id,
                  (*(const mw_plan_member_t *const *)b)->id);
}

/* Stage for new --stage auto workers: the one furthest under its wanted auto
 * workers when want is given and one is under, else least capacity relative to need. */
static int pick_stage(const mw_pipeline_spec_t *spec, const double *load, const int *want,
                      const int *autos)
{
    int best = 0, short_best = 0;
    for (int s = 1; s < spec->nstages; s++)
        if (load[s] / spec->stages[s].need < load[best] / spec->stages[best].need)
            best = s;
    for (int s = 1; want != NULL && s < spec->nstages; s++)
        if (want[s] - autos[s] > want[short_best] - autos[short_best])
            short_best = s;
    return want != NULL && want[short_best] > autos[short_best] ? short_best : best;
}

/* Worker w leaves its stage for stage to: at once when it holds nothing (or is
 * an origin, whose own intake a plan does not pause), else it drains there
 * first (marked draining: no new work is routed to it) and is placed at to by
 * a later plan, once its member reports nothing in flight. Either way it
 * counts toward to's auto workers. */
static void leave_for(mw_plan_t *plan, size_t w, int to, const int64_t *capacity,
                      const mw_plan_member_t *const *member_of, double *load, int *count,
                      int *autos)
{
    mw_plan_worker_t *pw = &plan->workers[w];
    load[pw->stage] -= (double)capacity[w];
    count[pw->stage]--;
    autos[pw->stage]--;
    autos[to]++;
    if (pw->stage != 0 && member_of[w]->inflight > 0) {
        pw->draining = 1;
        return;
    }
    pw->stage = to;
    load[to] += (double)capacity[w];
    count[to]++;
}

/* The stage furthest under its wanted auto workers; -1 when none is under. */
static int most_short(const mw_plan_pipeline_t *pp, const int *want, const int *autos)
{
    int best = -1;
    for (int s = 0; s < pp->spec.nstages; s++)
        if (autos[s] < want[s] && (best < 0 || want[s] - autos[s] > want[best] - autos[best]))
            best = s;
    return best;
}

/* Moves auto workers of pipeline pp from stages over their wanted count to
 * stages under it (never emptying a stage), one at a time, each from the stage
 * most over. A worker that prev had draining for a move (its member is not
 * draining) goes on leaving while it is still wanted elsewhere. */
static void follow_want(mw_plan_t *plan, const mw_plan_pipeline_t *pp, const int *want,
                        const mw_plan_t *prev, const int64_t *capacity,
                        const mw_plan_member_t *const *member_of, double *load, int *count,
                        int *autos)
{
    for (size_t w = 0; w < plan->nworkers; w++) {
        const mw_plan_worker_t *pw = &plan->workers[w];
        const mw_plan_worker_t *old = mw_plan_find_worker(prev, pw->id);
        int to = most_short(pp, want, autos);
        if (strcmp(pw->pipeline, pp->spec.name) == 0 && pw->auto_stage && !pw->draining &&
            old != NULL && old->draining && old->stage == pw->stage && to >= 0 &&
            autos[pw->stage] > want[pw->stage])
            leave_for(plan, w, to, capacity, member_of, load, count, autos);
    }
    for (int s; (s = most_short(pp, want, autos)) >= 0;) {
        size_t take = plan->nworkers;
        int most = 0;
        for (size_t w = 0; w < plan->nworkers; w++) {
            const mw_plan_worker_t *pw = &plan->workers[w];
            if (strcmp(pw->pipeline, pp->spec.name) != 0 || !pw->auto_stage || pw->draining ||
                pw->stage == s || count[pw->stage] < 2 ||
                autos[pw->stage] - want[pw->stage] <= most)
                continue;
            most = autos[pw->stage] - want[pw->stage];
            take = w;
        }
        if (take == plan->nworkers)
            break;
        leave_for(plan, take, s, capacity, member_of, load, count, autos);
    }
}

static int resolve_stages(mw_plan_t *plan, const mw_pipelines_t *spec, const mw_plan_t *prev,
                          const int64_t *capacity, const mw_plan_member_t *const *member_of,
                          const int *auto_want, char *isnew)
{
    double *load = calloc(MW_PIPELINE_MAX_STAGES, sizeof(double));
    int *count = calloc(2 * MW_PIPELINE_MAX_STAGES, sizeof(int));
    if (load == NULL || count == NULL) {
        free(load);
        free(count);
        return MW_ENOMEM;
    }
    int *autos = count + MW_PIPELINE_MAX_STAGES;
    for (size_t p = 0; p < plan->npipelines; p++) {
        const mw_plan_pipeline_t *pp = &plan->pipelines[p];
        const mw_pipeline_spec_t *ps = mw_pipelines_find(spec, pp->spec.name);
        const int *want = auto_want != NULL && ps != NULL &&
                                  auto_want[(ps - spec->items) * MW_PIPELINE_MAX_STAGES] >= 0
                              ? &auto_want[(ps - spec->items) * MW_PIPELINE_MAX_STAGES]
                              : NULL;
        memset(load, 0, MW_PIPELINE_MAX_STAGES * sizeof(double));
        memset(count, 0, 2 * MW_PIPELINE_MAX_STAGES * sizeof(int));
        /* Fixed stages and auto workers that keep the stage prev gave them. */
        for (size_t w = 0; w < plan->nworkers; w++) {
            mw_plan_worker_t *pw = &plan->workers[w];
            if (strcmp(pw->pipeline, pp->spec.name) != 0)
                continue;
            if (pw->auto_stage) {
                const mw_plan_worker_t *old = mw_plan_find_worker(prev, pw->id);
                pw->stage = old != NULL && old->auto_stage &&
                                    strcmp(old->pipeline, pw->pipeline) == 0 &&
                                    old->stage < pp->spec.nstages
                                ? old->stage
                                : MW_PLAN_STAGE_AUTO;
            }
            if (pw->stage >= 0 && !pw->draining) {
                load[pw->stage] += (double)capacity[w];
                count[pw->stage]++;
                autos[pw->stage] += pw->auto_stage;
            }
        }
        for (size_t w = 0; w < plan->nworkers; w++) {
            mw_plan_worker_t *pw = &plan->workers[w];
            if (strcmp(pw->pipeline, pp->spec.name) != 0 || pw->stage != MW_PLAN_STAGE_AUTO)
                continue;
            pw->stage = pick_stage(&pp->spec, load, want, autos);
            if (!pw->draining) {
                load[pw->stage] += (double)capacity[w];
                count[pw->stage]++;
                autos[pw->stage]++;
            }
        }
        if (want != NULL)
            follow_want(plan, pp, want, prev, capacity, member_of, load, count, autos);
        /* An empty stage takes an auto worker from a stage that has several. */
        for (int s = 0; s < pp->spec.nstages; s++) {
            if (count[s] > 0)
                continue;
            size_t take = plan->nworkers;
            double most = -1;
            for (size_t w = 0; w < plan->nworkers; w++) {
                const mw_plan_worker_t *pw = &plan->workers[w];
                if (strcmp(pw->pipeline, pp->spec.name) != 0 || !pw->auto_stage || pw->draining ||
                    count[pw->stage] < 2)
                    continue;
                double surplus = load[pw->stage] / pp->spec.stages[pw->stage].need;
                if (surplus > most) {
                    most = surplus;
                    take = w;
                }
            }
            if (take == plan->nworkers)
                continue;
            mw_plan_worker_t *pw = &plan->workers[take];
            load[pw->stage] -= (double)capacity[take];
            count[pw->stage]--;
            autos[pw->stage]--;
            pw->stage = s;
            load[s] += (double)capacity[take];
            count[s]++;
            autos[s]++;
        }
        int complete = 1;
        for (int s = 0; s < pp->spec.nstages; s++)
            complete &= count[s] > 0;
        plan->pipelines[p].complete = complete;
    }
    for (size_t w = 0; w < plan->nworkers; w++) {
        const mw_plan_worker_t *pw = &plan->workers[w];
        const mw_plan_worker_t *old = mw_plan_find_worker(prev, pw->id);
        isnew[w] = old == NULL || strcmp(old->pipeline, pw->pipeline) != 0 ||
                   old->stage != pw->stage || strcmp(old->device, pw->device) != 0;
    }
    free(load);
    free(count);
    return MW_OK;
}

int mw_plan_compute(const mw_pipelines_t *spec, const mw_plan_member_t *members, size_t nmembers,
                    const mw_plan_t *prev, const mw_plan_options_t *opt, mw_plan_t **out,
                    char *errstr, size_t errstr_size)
{
    *out = NULL;
    if (opt == NULL || opt->max_fanout < 1)
        return mw_errf(MW_EINVAL, errstr, errstr_size, "plan.max_fanout must be >= 1");
    mw_plan_t *plan = calloc(1, sizeof(*plan));
    const mw_plan_member_t **sorted = malloc((nmembers + 1) * sizeof(*sorted));
    int64_t *capacity = malloc((nmembers + 1) * sizeof(*capacity));
    char *isnew = malloc(nmembers + 1);
    const mw_plan_member_t **member_of = malloc((nmembers + 1) * sizeof(*member_of)); /* worker */
    int rc = MW_ENOMEM;
    size_t wcap = 0;
    if (plan == NULL || sorted == NULL || capacity == NULL || isnew == NULL || member_of == NULL)
        goto out_fail;
    plan->epoch = prev ? prev->epoch : 0;
    plan->version = prev ? prev->version : 0;

    plan->pipelines = calloc(spec->count + 1, sizeof(*plan->pipelines));
    plan->workers = calloc(nmembers + 1, sizeof(*plan->workers));
    if (plan->pipelines == NULL || plan->workers == NULL)
        goto out_fail;
    for (size_t p = 0; p < spec->count; p++)
        plan->pipelines[p].spec = spec->items[p];
    plan->npipelines = spec->count;
    mw_plan_sort(plan);

    for (size_t i = 0; i < nmembers; i++)
        sorted[i] = &members[i];
    qsort(sorted, nmembers, sizeof(*sorted), cmp_member_ptr);
    for (size_t i = 0; i < nmembers; i++) {
        const mw_plan_member_t *m = sorted[i];
        const mw_pipeline_spec_t *ps = mw_pipelines_find(spec, m->pipeline);
        if (memchr(m->id, '\0', sizeof(m->id)) == NULL || !mw_plan_id_valid(m->id))
            rc = reject(plan, "?", "invalid worker id (1-63 characters of [A-Za-z0-9_.:-])");
        else if (i > 0 && strcmp(sorted[i - 1]->id, m->id) == 0)
            rc = reject(plan, m->id, "duplicate worker id");
        else if (memchr(m->pipeline, '\0', sizeof(m->pipeline)) == NULL || ps == NULL)
            rc = reject(plan, m->id, "unknown pipeline '%.47s'",
                        memchr(m->pipeline, '\0', sizeof(m->pipeline)) ? m->pipeline : "?");
        else if (m->stage != MW_PLAN_STAGE_AUTO && (m->stage < 0 || m->stage >= ps->nstages))
            rc = reject(plan, m->id, "stage %d out of range: pipeline '%s' has stages 0..%d",
                        m->stage, ps->name, ps->nstages - 1);
        else if (memchr(m->device, '\0', sizeof(m->device)) == NULL || m->device[0] == '\0')
            rc = reject(plan, m->id, "invalid device");
        else {
            mw_plan_worker_t *pw = &plan->workers[plan->nworkers];
            snprintf(pw->id, sizeof(pw->id), "%s", m->id);
            snprintf(pw->pipeline, sizeof(pw->pipeline), "%s", m->pipeline);
            snprintf(pw->device, sizeof(pw->device), "%s", m->device);
            pw->stage = m->stage;
            pw->auto_stage = m->stage == MW_PLAN_STAGE_AUTO;
            pw->draining = m->draining != 0;
            capacity[plan->nworkers] = m->capacity > 0 ? m->capacity : 1;
            member_of[plan->nworkers] = m;
            plan->nworkers++;
            rc = MW_OK;
        }
        if (rc != MW_OK)
            goto out_fail;
    }

    rc = resolve_stages(plan, spec, prev, capacity, member_of, opt->auto_want, isnew);
    for (size_t p = 0; p < plan->npipelines && rc == MW_OK; p++)
        rc = plan_pipeline(plan, &wcap, &plan->pipelines[p], prev, isnew, member_of,
                           opt->max_fanout);
    if (rc != MW_OK)
        goto out_fail;
    /* A kept world that one of its members reports broken is issued again (gen 0:
     * the publisher stamps a new one), so that both ends join a new incarnation. */
    for (size_t i = 0; i < plan->nworlds; i++)
        for (int m = 0; m < plan->worlds[i].nmembers && plan->worlds[i].gen != 0; m++)
            for (size_t k = 0; k < nmembers; k++)
                if (strcmp(members[k].id, plan->worlds[i].members[m]) == 0 &&
                    reports_broken(members[k].broken, &plan->worlds[i]))
                    plan->worlds[i].gen = 0;
    if (plan->nworlds > 0)
        mw_plan_sort(plan);
    /* Names are unique unless two id pairs spell the same text ("a--s1-b"); hash those. */
    for (size_t i = 1; i < plan->nworlds; i++) {
        if (strcmp(plan->worlds[i - 1].name, plan->worlds[i].name) != 0)
            continue;
        mw_plan_world_t *w = &plan->worlds[i];
        const mw_plan_worker_t *a = mw_plan_find_worker(plan, w->members[0]);
        const mw_plan_worker_t *b = mw_plan_find_worker(plan, w->members[1]);
        char longname[MW_PLAN_WORLD_NAME_MAX * 2];
        snprintf(longname, sizeof(longname), "%s", w->name);
        mw_plan_world_name(w->name, sizeof(w->name), w->pipeline, a->stage, longname, b->stage,
                           longname);
        mw_plan_sort(plan);
        i = 0;
    }
    free(sorted);
    free(capacity);
    free(isnew);
    free(member_of);
    *out = plan;
    return MW_OK;

out_fail:
    free(sorted);
    free(capacity);
    free(isnew);
    free(member_of);
    mw_plan_destroy(plan);
    return mw_errf(rc, errstr, errstr_size, "planning failed: %s", mw_strerror(rc));
}
