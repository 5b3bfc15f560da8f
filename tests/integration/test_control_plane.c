/* Control plane with real Redis and real processes: membership, sweep after kill -9,
 * leader election and fencing, Redis restarts, SIGTERM drain, bad input. */
#include "clock.h"
#include "err.h"
#include "cluster/events.h"
#include "cluster/keys.h"
#include "harness.h"
#include "coordinator/lease.h"
#include "cluster/membership.h"
#include "cluster/plan_doc.h"
#include "cluster/planstore.h"
#include "redis.h"

#include <cjson/cJSON.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#define HB_MS    100
#define TTL_MS   600
#define LEASE_MS 1000
#define LOOP_MS  100
#define MAX_PIDS 16

/* One test's cluster: its own cluster.name, so tests never see each other's keys. */
typedef struct cluster {
    mw_config_t cfg;
    mw_redis_t *r;
    char name[128];
    pid_t pids[MAX_PIDS];
    int npids;
} cluster_t;

/* The test's cluster, so that the teardown kills its processes when an assertion
 * jumps out of the test. */
static cluster_t *current;

static cluster_t *cluster_new(const char *suffix)
{
    cluster_t *c = calloc(1, sizeof(*c));
    current = c;
    char err[512];
    mwt_config(&c->cfg);
    snprintf(c->name, sizeof(c->name), "%s", mwt_name(suffix));
    assert_int_equal(mw_config_set(&c->cfg, "cluster.name", c->name, "test", err, sizeof(err)), 0);
    c->r = mw_redis_new(&c->cfg, 0, err, sizeof(err));
    if (c->r == NULL)
        fail_msg("redis: %s", err);
    return c;
}

static void cluster_destroy(cluster_t *c)
{
    current = NULL;
    for (int i = 0; i < c->npids; i++) {
        if (c->pids[i] > 0) {
            kill(-c->pids[i], SIGCONT);
            kill(-c->pids[i], SIGKILL);
            mwt_wait_exit(c->pids[i], 5000);
        }
    }
    mw_redis_destroy(c->r);
    mw_config_fini(&c->cfg);
    free(c);
}

static pid_t spawn(cluster_t *c, const char *prog, const char *const *extra)
{
    static char args[24][160];
    char *argv[32];
    int n = 0;
    snprintf(args[n], sizeof(args[0]), "%s", mwt_bin(prog));
    argv[n] = args[n], n++;
    snprintf(args[n], sizeof(args[0]), "--redis.port=%lld", (long long)c->cfg.redis_port);
    argv[n] = args[n], n++;
    snprintf(args[n], sizeof(args[0]), "--cluster.name=%s", c->name);
    argv[n] = args[n], n++;
    snprintf(args[n], sizeof(args[0]), "--heartbeat.interval_ms=%d", HB_MS);
    argv[n] = args[n], n++;
    snprintf(args[n], sizeof(args[0]), "--heartbeat.ttl_ms=%d", TTL_MS);
    argv[n] = args[n], n++;
    snprintf(args[n], sizeof(args[0]), "--coordinator.lease_ms=%d", LEASE_MS);
    argv[n] = args[n], n++;
    snprintf(args[n], sizeof(args[0]), "--coordinator.interval_ms=%d", LOOP_MS);
    argv[n] = args[n], n++;
    snprintf(args[n], sizeof(args[0]), "--redis.retry_max_ms=200");
    argv[n] = args[n], n++;
    for (int i = 0; extra != NULL && extra[i] != NULL; i++, n++) {
        snprintf(args[n], sizeof(args[0]), "%s", extra[i]);
        argv[n] = args[n];
    }
    argv[n] = NULL;
    pid_t pid = mwt_spawn(argv);
    assert_true(pid > 0);
    assert_true(c->npids < MAX_PIDS);
    c->pids[c->npids++] = pid;
    return pid;
}

static pid_t coordinator(cluster_t *c)
{
    const char *extra[] = {"--pipeline.spec=P:2", "--plan.max_fanout=4", NULL};
    return spawn(c, "mw-coordinator", extra);
}

static pid_t worker(cluster_t *c, const char *id, const char *stage)
{
    char a[80], b[80];
    snprintf(a, sizeof(a), "--id=%s", id);
    snprintf(b, sizeof(b), "--stage=%s", stage);
    const char *extra[] = {a, b, "--pipeline=P", NULL};
    return spawn(c, "mw-worker", extra);
}

static void forget(cluster_t *c, pid_t pid)
{
    for (int i = 0; i < c->npids; i++)
        if (c->pids[i] == pid)
            c->pids[i] = 0;
}

/* The published plan, or NULL. */
static mw_plan_t *plan_now(cluster_t *c)
{
    mw_plan_t *p = NULL;
    char err[512];
    if (mw_planstore_read(c->r, &p, err, sizeof(err)) != MW_OK)
        return NULL;
    return p;
}

/* 1 when the plan holds exactly the workers in ids (NULL-terminated) and is complete. */
static int plan_is(cluster_t *c, const char *const *ids)
{
    mw_plan_t *p = plan_now(c);
    int ok = p != NULL;
    size_t n = 0;
    for (; ids[n] != NULL && ok; n++)
        ok = mw_plan_find_worker(p, ids[n]) != NULL;
    ok = ok && p->nworkers == n && p->npipelines == 1 && p->pipelines[0].complete;
    mw_plan_destroy(p);
    return ok;
}

static int plan_lacks(cluster_t *c, const char *id)
{
    mw_plan_t *p = plan_now(c);
    int ok = p != NULL && mw_plan_find_worker(p, id) == NULL;
    mw_plan_destroy(p);
    return ok;
}

static int64_t get_int(cluster_t *c, mw_key_t key)
{
    char name[MW_KEY_MAX];
    redisReply *reply = NULL;
    int64_t v = -1;
    if (mw_redis_cmd(c->r, &reply, "GET %s", mw_key(c->r, key, name, sizeof(name))) == MW_OK) {
        if (reply->type == REDIS_REPLY_STRING)
            v = strtoll(reply->str, NULL, 10);
        freeReplyObject(reply);
    }
    return v;
}

static void get_leader(cluster_t *c, char *buf, size_t size)
{
    char key[MW_KEY_MAX];
    redisReply *reply = NULL;
    buf[0] = '\0';
    if (mw_redis_cmd(c->r, &reply, "GET %s", mw_key(c->r, MW_KEY_COORDINATOR, key, sizeof(key))) ==
        MW_OK) {
        if (reply->type == REDIS_REPLY_STRING)
            snprintf(buf, size, "%s", reply->str);
        freeReplyObject(reply);
    }
}

/* The pid inside a coordinator id "host.pid.random". */
static pid_t id_pid(const char *id)
{
    const char *dot = strrchr(id, '.');
    if (dot == NULL || dot == id)
        return -1;
    const char *p = dot - 1;
    while (p > id && *p != '.')
        p--;
    return (pid_t)atol(p + 1);
}

static int has_event(cluster_t *c, const char *type, const char *worker, const char *text)
{
    mw_event_t *ev = NULL;
    size_t n = 0;
    int found = 0;
    if (mw_events_read(c->r, "", 1000, 0, &ev, &n, NULL, 0) != MW_OK)
        return 0;
    for (size_t i = 0; i < n && !found; i++)
        found = strcmp(ev[i].type, type) == 0 &&
                (worker == NULL || strcmp(ev[i].worker, worker) == 0) &&
                (text == NULL || strstr(ev[i].text, text) != NULL);
    free(ev);
    return found;
}

/* `mwctl status --json` parsed, or NULL. */
static cJSON *status_json(cluster_t *c)
{
    char cmd[1024];
    static char out[1 << 16];
    snprintf(cmd, sizeof(cmd), "%s --redis.port=%lld --cluster.name=%s status --json 2>/dev/null",
             mwt_bin("mwctl"), (long long)c->cfg.redis_port, c->name);
    if (mwt_run(cmd, out, sizeof(out)) != 0)
        return NULL;
    return cJSON_Parse(out);
}

static const cJSON *status_worker(const cJSON *st, const char *id)
{
    const cJSON *w;
    cJSON_ArrayForEach(w, cJSON_GetObjectItem(st, "workers"))
    {
        if (strcmp(cJSON_GetObjectItem(w, "id")->valuestring, id) == 0)
            return w;
    }
    return NULL;
}

static int status_shows(cluster_t *c, const char *id, const char *state)
{
    cJSON *st = status_json(c);
    const cJSON *w = st ? status_worker(st, id) : NULL;
    int ok = state == NULL
                 ? (st != NULL && w == NULL)
                 : (w != NULL && strcmp(cJSON_GetObjectItem(w, "state")->valuestring, state) == 0 &&
                    cJSON_IsTrue(cJSON_GetObjectItem(w, "in_plan")));
    cJSON_Delete(st);
    return ok;
}

/* ------------------------------------------------------------------- tests */

static void workers_join_and_leave_visible_in_plan_and_status(void **state)
{
    (void)state;
    cluster_t *c = cluster_new("join");
    coordinator(c);
    worker(c, "a0", "0");
    worker(c, "a1", "1");
    pid_t x = worker(c, "x", "auto");
    const char *all[] = {"a0", "a1", "x", NULL};
    assert_true(mwt_wait_for(plan_is(c, all), mwt_scaled(10000)));
    /* Each reports ready in its next heartbeat after applying the plan that
     * places it: x may be placed (and ready) one plan before a0. */
    assert_true(mwt_wait_for(status_shows(c, "x", "ready"), mwt_scaled(5000)));
    assert_true(mwt_wait_for(status_shows(c, "a0", "ready"), mwt_scaled(5000)));

    cJSON *st = status_json(c);
    assert_non_null(st);
    assert_non_null(cJSON_GetObjectItem(cJSON_GetObjectItem(st, "leader"), "id")->valuestring);
    assert_true(
        cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetObjectItem(st, "plan"), "worlds")) >= 2);
    cJSON_Delete(st);

    kill(x, SIGTERM);
    int status = mwt_wait_exit(x, mwt_scaled(10000));
    forget(c, x);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    const char *two[] = {"a0", "a1", NULL};
    assert_true(mwt_wait_for(plan_is(c, two), mwt_scaled(5000)));
    assert_true(mwt_wait_for(status_shows(c, "x", NULL), mwt_scaled(5000)));
    cluster_destroy(c);
}

static void kill9_worker_leaves_plan_within_ttl_and_other_worlds_keep_identity(void **state)
{
    (void)state;
    cluster_t *c = cluster_new("kill9");
    coordinator(c);
    worker(c, "o1", "0");
    worker(c, "o2", "0");
    worker(c, "l1", "1");
    pid_t victim = worker(c, "l2", "1");
    const char *all[] = {"o1", "o2", "l1", "l2", NULL};
    assert_true(mwt_wait_for(plan_is(c, all), mwt_scaled(10000)));
    mw_plan_t *before = plan_now(c);
    assert_int_equal(before->nworlds, 4); /* full mesh at fanout 4 */

    int64_t t0 = mw_now_ms();
    kill(victim, SIGKILL);
    mwt_wait_exit(victim, 5000);
    forget(c, victim);
    assert_true(mwt_wait_for(plan_lacks(c, "l2"), mwt_scaled(TTL_MS + 3000)));
    int64_t took = mw_now_ms() - t0;
    print_message("kill -9 -> plan without the worker: %lld ms (ttl %d, loop %d)\n",
                  (long long)took, TTL_MS, LOOP_MS);
    assert_true(took <= mwt_scaled(TTL_MS + HB_MS + 2 * LOOP_MS + 400));
    assert_true(has_event(c, "expire", "l2", NULL));

    mw_plan_t *after = plan_now(c);
    size_t kept = 0;
    for (size_t i = 0; i < before->nworlds; i++) {
        const mw_plan_world_t *w = &before->worlds[i];
        const mw_plan_world_t *now = mw_plan_find_world(after, w->name);
        if (mw_plan_world_has(w, "l2", NULL)) {
            assert_null(now);
        } else {
            assert_non_null(now); /* same name, same members: never reconnected */
            assert_string_equal(now->members[0], w->members[0]);
            assert_string_equal(now->members[1], w->members[1]);
            kept++;
        }
    }
    assert_int_equal(kept, 2);
    assert_int_equal(after->nworlds, 2);
    /* the survivors applied the new plan */
    assert_true(mwt_wait_for(status_shows(c, "o1", "ready"), mwt_scaled(3000)));
    mw_plan_destroy(before);
    mw_plan_destroy(after);
    cluster_destroy(c);
}

static void two_coordinators_elect_one_and_standby_takes_over_after_kill9(void **state)
{
    (void)state;
    cluster_t *c = cluster_new("elect");
    coordinator(c);
    coordinator(c);
    worker(c, "a0", "0");
    worker(c, "a1", "1");
    const char *all[] = {"a0", "a1", NULL};
    assert_true(mwt_wait_for(plan_is(c, all), mwt_scaled(10000)));
    char leader[64], now[64];
    get_leader(c, leader, sizeof(leader));
    int64_t epoch = get_int(c, MW_KEY_EPOCH);
    assert_true(leader[0] != '\0');
    /* the second one stands by: the leader and epoch do not move */
    mwt_sleep_ms(3 * LOOP_MS);
    get_leader(c, now, sizeof(now));
    assert_string_equal(now, leader);
    assert_int_equal(get_int(c, MW_KEY_EPOCH), epoch);

    pid_t lp = id_pid(leader);
    assert_true(lp > 0);
    int64_t t0 = mw_now_ms();
    kill(lp, SIGKILL);
    mwt_wait_exit(lp, 5000);
    forget(c, lp);
    assert_true(mwt_wait_for((get_leader(c, now, sizeof(now)), now[0] && strcmp(now, leader) != 0),
                             mwt_scaled(LEASE_MS + 3000)));
    int64_t took = mw_now_ms() - t0;
    print_message("kill -9 of the leader -> standby leads: %lld ms (lease %d)\n", (long long)took,
                  LEASE_MS);
    assert_true(took <= mwt_scaled(LEASE_MS + LOOP_MS + 400));
    assert_int_equal(get_int(c, MW_KEY_EPOCH), epoch + 1);
    /* the new leader republishes under its epoch, keeping the worlds */
    mw_plan_t *p = NULL;
    assert_true(mwt_wait_for((mw_plan_destroy(p), p = plan_now(c), p && p->epoch == epoch + 1),
                             mwt_scaled(3000)));
    assert_non_null(mw_plan_find_world(p, "P.s0-a0--s1-a1"));
    mw_plan_destroy(p);
    cluster_destroy(c);
}

static void stopped_leader_resumed_past_its_lease_cannot_publish_and_steps_down(void **state)
{
    (void)state;
    cluster_t *c = cluster_new("fence");
    pid_t c1 = coordinator(c);
    char leader[64], now[64];
    assert_true(mwt_wait_for((get_leader(c, leader, sizeof(leader)), leader[0]), mwt_scaled(5000)));
    assert_int_equal(id_pid(leader), c1);
    int64_t epoch = get_int(c, MW_KEY_EPOCH);
    coordinator(c);
    worker(c, "a0", "0");
    worker(c, "a1", "1");
    const char *all[] = {"a0", "a1", NULL};
    assert_true(mwt_wait_for(plan_is(c, all), mwt_scaled(10000)));

    kill(c1, SIGSTOP);
    assert_true(mwt_wait_for((get_leader(c, now, sizeof(now)), now[0] && strcmp(now, leader) != 0),
                             mwt_scaled(LEASE_MS + 3000)));
    assert_int_equal(get_int(c, MW_KEY_EPOCH), epoch + 1);
    worker(c, "b0", "0"); /* membership changes while the old leader sleeps */
    const char *three[] = {"a0", "a1", "b0", NULL};
    assert_true(mwt_wait_for(plan_is(c, three), mwt_scaled(5000)));

    kill(c1, SIGCONT);
    char text[64];
    snprintf(text, sizeof(text), "epoch=%lld", (long long)epoch);
    assert_true(mwt_wait_for(has_event(c, "stepdown", NULL, text), mwt_scaled(3000)));
    mwt_sleep_ms(3 * LOOP_MS);
    get_leader(c, leader, sizeof(leader));
    assert_string_equal(leader, now); /* the resumed one did not take anything back */
    mw_plan_t *p = plan_now(c);
    assert_int_equal(p->epoch, epoch + 1);
    mw_plan_destroy(p);
    cluster_destroy(c);
}

/* The fencing itself, deterministically: a deposed handle's writes fail in Lua. */
static void deposed_lease_holder_writes_are_fenced(void **state)
{
    (void)state;
    cluster_t *c = cluster_new("lease");
    mw_lease_t *a = mw_lease_new(c->r, "coord-a", 200, 1000);
    mw_lease_t *b = mw_lease_new(c->r, "coord-b", 200, 1000);
    assert_int_equal(mw_lease_tick(a), 1);
    assert_int_equal(mw_lease_tick(b), 0);
    int64_t e = mw_lease_epoch(a);
    assert_int_equal(mw_lease_publish(a, "{}", 1, "test"), MW_OK);
    assert_int_equal(mw_lease_tick(a), 1); /* renewal keeps the epoch */
    assert_int_equal(mw_lease_epoch(a), e);
    assert_true(mwt_wait_for(mw_lease_tick(b) == 1, 3000)); /* a stopped renewing */
    assert_int_equal(mw_lease_epoch(b), e + 1);
    assert_int_equal(mw_lease_publish(a, "{\"stale\": 1}", 2, "stale"), MW_EFENCED);
    size_t n;
    assert_int_equal(mw_lease_sweep(a, 1, NULL, &n), MW_EFENCED);
    assert_int_equal(mw_lease_tick(a), 0);
    assert_false(mw_lease_is_leader(a));
    assert_int_equal(mw_lease_publish(b, "{}", 2, "test"), MW_OK);
    int64_t pe, pv;
    assert_int_equal(mw_planstore_version(c->r, &pe, &pv), MW_OK);
    assert_int_equal(pe, e + 1);
    assert_int_equal(mw_lease_release(b), MW_OK);
    assert_int_equal(mw_lease_tick(a), 1); /* released: taken at once, epoch + 1 again */
    assert_int_equal(mw_lease_epoch(a), e + 2);
    mw_lease_destroy(a);
    mw_lease_destroy(b);
    cluster_destroy(c);
}

static void redis_restart_reconnects_everyone_and_plan_converges(void **state)
{
    (void)state;
    cluster_t *c = cluster_new("restart");
    coordinator(c);
    pid_t w0 = worker(c, "a0", "0");
    pid_t w1 = worker(c, "a1", "1");
    const char *two[] = {"a0", "a1", NULL};
    assert_true(mwt_wait_for(plan_is(c, two), mwt_scaled(10000)));
    assert_int_equal(mwt_service("redis", "restart"), 0);
    assert_true(mwt_wait_for(status_shows(c, "a0", "ready"), mwt_scaled(10000)));
    /* a worker started after the restart joins the same plan */
    worker(c, "a2", "1");
    const char *three[] = {"a0", "a1", "a2", NULL};
    assert_true(mwt_wait_for(plan_is(c, three), mwt_scaled(15000)));
    assert_true(mwt_wait_for(status_shows(c, "a2", "ready"), mwt_scaled(5000)));
    assert_true(status_shows(c, "a0", "ready"));
    /* nobody was expired for the outage: the world between them kept its identity */
    assert_false(has_event(c, "expire", "a0", NULL));
    assert_false(has_event(c, "expire", "a1", NULL));
    mw_plan_t *p = plan_now(c);
    assert_non_null(mw_plan_find_world(p, "P.s0-a0--s1-a1"));
    mw_plan_destroy(p);
    assert_int_equal(kill(w0, 0), 0); /* no worker was restarted */
    assert_int_equal(kill(w1, 0), 0);
    assert_int_equal(waitpid(w0, NULL, WNOHANG), 0);
    assert_int_equal(waitpid(w1, NULL, WNOHANG), 0);
    cluster_destroy(c);
}

static void sigterm_worker_drains_removes_its_keys_and_exits_0(void **state)
{
    (void)state;
    cluster_t *c = cluster_new("drain");
    coordinator(c);
    pid_t w = worker(c, "d0", "0");
    assert_true(mwt_wait_for(status_shows(c, "d0", "ready"), mwt_scaled(10000)));
    kill(w, SIGTERM);
    int status = mwt_wait_exit(w, mwt_scaled(10000));
    forget(c, w);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    char key[MW_KEY_MAX];
    redisReply *reply = NULL;
    assert_int_equal(
        mw_redis_cmd(c->r, &reply, "EXISTS %s", mw_key_worker(c->r, "d0", key, sizeof(key))),
        MW_OK);
    assert_int_equal(reply->integer, 0);
    freeReplyObject(reply);
    assert_int_equal(
        mw_redis_cmd(c->r, &reply, "ZSCORE %s d0", mw_key(c->r, MW_KEY_WORKERS, key, sizeof(key))),
        MW_OK);
    assert_int_equal(reply->type, REDIS_REPLY_NIL);
    freeReplyObject(reply);
    assert_true(has_event(c, "drain", "d0", NULL));
    assert_true(has_event(c, "leave", "d0", NULL));
    assert_true(mwt_wait_for(plan_lacks(c, "d0"), mwt_scaled(3000)));
    cluster_destroy(c);
}

/* The plan still routes to the worker, but no coordinator is left to publish one
 * that shows it draining: it leaves once idle instead of waiting out its drain timeout. */
static void draining_worker_without_coordinator_leaves_within_a_second(void **state)
{
    (void)state;
    cluster_t *c = cluster_new("nocoord");
    pid_t coord = coordinator(c);
    worker(c, "n0", "0");
    pid_t w = worker(c, "n1", "1");
    const char *both[] = {"n0", "n1", NULL};
    assert_true(mwt_wait_for(plan_is(c, both), mwt_scaled(10000)));
    assert_true(mwt_wait_for(status_shows(c, "n1", "ready"), mwt_scaled(5000)));
    kill(coord, SIGTERM); /* releases the lease */
    assert_true(WIFEXITED(mwt_wait_exit(coord, mwt_scaled(5000))));
    forget(c, coord);
    char leader[64];
    get_leader(c, leader, sizeof(leader));
    assert_string_equal(leader, "");

    int64_t t0 = mw_now_ms();
    kill(w, SIGTERM);
    int status = mwt_wait_exit(w, mwt_scaled(1000));
    int64_t took = mw_now_ms() - t0;
    print_message("drained and left in %lld ms\n", (long long)took);
    if (status == -1)
        fail_msg("still running %lld ms after SIGTERM", (long long)took);
    forget(c, w);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_true(has_event(c, "drain", "n1", NULL));
    assert_true(has_event(c, "leave", "n1", NULL));
    assert_false(status_shows(c, "n1", "draining"));
    assert_true(status_shows(c, "n1", NULL)); /* gone from the membership */
    cluster_destroy(c);
}

static void bad_hashes_unknown_pipelines_and_malformed_plans_are_reported_not_fatal(void **state)
{
    (void)state;
    cluster_t *c = cluster_new("bad");
    pid_t coord = coordinator(c);
    pid_t good = worker(c, "g0", "0");
    const char *extra[] = {"--id=lost", "--stage=0", "--pipeline=Nope", NULL};
    spawn(c, "mw-worker", extra);
    char key[MW_KEY_MAX];
    /* a hash someone else wrote, with a bad stage */
    assert_int_equal(mw_redis_cmd(c->r, NULL, "HSET %s pipeline P stage sideways device cpu",
                                  mw_key_worker(c->r, "junk", key, sizeof(key))),
                     MW_OK);
    assert_int_equal(mw_redis_cmd(c->r, NULL, "ZADD %s 99999999999999 junk",
                                  mw_key(c->r, MW_KEY_WORKERS, key, sizeof(key))),
                     MW_OK);
    assert_true(
        mwt_wait_for(has_event(c, "reject", "lost", "unknown pipeline 'Nope'"), mwt_scaled(5000)));
    assert_true(mwt_wait_for(has_event(c, "reject", "junk", "stage"), mwt_scaled(5000)));
    assert_true(mwt_wait_for(status_shows(c, "g0", "ready"), mwt_scaled(5000)));

    /* a malformed plan: workers report it and keep running */
    assert_int_equal(mw_redis_cmd(c->r, NULL, "SET %s {\"epoch\":99",
                                  mw_key(c->r, MW_KEY_PLAN, key, sizeof(key))),
                     MW_OK);
    assert_int_equal(mw_redis_cmd(c->r, NULL, "SET %s 99:1",
                                  mw_key(c->r, MW_KEY_PLAN_VERSION, key, sizeof(key))),
                     MW_OK);
    assert_int_equal(mw_redis_cmd(c->r, NULL, "PUBLISH %s 99:1",
                                  mw_key(c->r, MW_KEY_PLAN_NOTIFY, key, sizeof(key))),
                     MW_OK);
    assert_true(mwt_wait_for(has_event(c, "bad_plan", "g0", "not valid JSON"), mwt_scaled(5000)));
    assert_int_equal(waitpid(good, NULL, WNOHANG), 0);
    assert_int_equal(waitpid(coord, NULL, WNOHANG), 0);
    cluster_destroy(c);
}

static int teardown(void **state)
{
    (void)state;
    if (current != NULL)
        cluster_destroy(current);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(workers_join_and_leave_visible_in_plan_and_status, teardown),
        cmocka_unit_test_teardown(
            kill9_worker_leaves_plan_within_ttl_and_other_worlds_keep_identity, teardown),
        cmocka_unit_test_teardown(two_coordinators_elect_one_and_standby_takes_over_after_kill9,
                                  teardown),
        cmocka_unit_test_teardown(
            stopped_leader_resumed_past_its_lease_cannot_publish_and_steps_down, teardown),
        cmocka_unit_test_teardown(deposed_lease_holder_writes_are_fenced, teardown),
        cmocka_unit_test_teardown(sigterm_worker_drains_removes_its_keys_and_exits_0, teardown),
        cmocka_unit_test_teardown(draining_worker_without_coordinator_leaves_within_a_second,
                                  teardown),
        cmocka_unit_test_teardown(
            bad_hashes_unknown_pipelines_and_malformed_plans_are_reported_not_fatal, teardown),
        cmocka_unit_test_teardown(redis_restart_reconnects_everyone_and_plan_converges, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
