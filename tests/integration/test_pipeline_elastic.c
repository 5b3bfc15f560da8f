/* Elasticity and infrastructure faults with real processes (issue 6): a
 * SIGSTOPped mid-stage worker routed around and rejoining, scale-out of the
 * bottleneck stage under load, scale-in by SIGTERM, the leading coordinator
 * killed, and the Kafka broker restarted. Every request must still get exactly
 * one committed result, equal to the unsplit reference model's output. */
#include "clock.h"
#include "err.h"
#include "cluster/events.h"
#include "cluster/keys.h"
#include "harness.h"
#include "mwt_pipeline.h"
#include "cluster/plan_doc.h"
#include "cluster/planstore.h"
#include "redis.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

typedef struct fixture {
    mwt_pipeline_t *p;
    mw_redis_t *r;
    float *expected;
    mwt_tally_t t;
} fixture_t;

static fixture_t *fixture_new(void **state, const char *suffix, int per_stage, int partitions,
                              int n, const char *const *flags)
{
    char err[256];
    fixture_t *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    *state = f; /* torn down by teardown() even when the test fails */
    f->p = mwt_pipeline_new(suffix, 3, 6, partitions, flags);
    f->r = mw_redis_new(&f->p->cfg, 0, err, sizeof(err));
    if (f->r == NULL)
        fail_msg("redis: %s", err);
    char id[64];
    for (int s = 0; s < 3; s++) {
        for (int k = 0; k < per_stage; k++) {
            snprintf(id, sizeof(id), "w%d-%d", s, k);
            mwt_pipeline_worker(f->p, s, id);
        }
    }
    f->expected = mwt_pipeline_reference(f->p, n);
    return f;
}

/* Kills the test's processes and frees everything, passed or failed. */
static int teardown(void **state)
{
    fixture_t *f = *state;
    if (f == NULL)
        return 0;
    mwt_pipeline_destroy(f->p);
    mw_redis_destroy(f->r);
    mwt_tally_fini(&f->t);
    free(f->expected);
    free(f);
    *state = NULL;
    return 0;
}

/* A string key of the cluster into buf ("" when absent). */
static void cluster_get(fixture_t *f, mw_key_t key, char *buf, size_t size)
{
    char name[MW_KEY_MAX];
    redisReply *reply = NULL;
    buf[0] = '\0';
    if (mw_redis_cmd(f->r, &reply, "GET %s", mw_key(f->r, key, name, sizeof(name))) == MW_OK &&
        reply->type == REDIS_REPLY_STRING)
        snprintf(buf, size, "%s", reply->str);
    if (reply != NULL)
        freeReplyObject(reply);
}

/* 1 when id is in the current plan (not draining), has applied it, and every
 * world the plan gives it is up. */
static int worker_serving(fixture_t *f, const char *id)
{
    char err[256];
    mw_plan_t *plan = NULL;
    if (mw_planstore_read(f->r, &plan, err, sizeof(err)) != MW_OK || plan == NULL)
        return 0;
    const mw_plan_worker_t *pw = mw_plan_find_worker(plan, id);
    int64_t worlds = 0;
    for (size_t i = 0; i < plan->nworlds; i++)
        worlds += mw_plan_world_has(&plan->worlds[i], id, NULL);
    int ok = pw != NULL && !pw->draining && worlds > 0 &&
             mwt_worker_field(f->r, id, "plan_version") == plan->version &&
             mwt_worker_field(f->r, id, "worlds_up") == worlds;
    mw_plan_destroy(plan);
    return ok;
}

/* Submits requests [*sent, *sent + k) (k up to burst, at most n in all) and
 * reads results for ms. */
static void pump(fixture_t *f, int *sent, int n, int burst, int64_t ms)
{
    int k = n - *sent < burst ? n - *sent : burst;
    if (k > 0) {
        mwt_pipeline_submit(f->p, *sent, k, NULL);
        *sent += k;
    }
    mwt_pipeline_read(f->p, "results", &f->t, n, f->expected, n, ms);
}

/* Pumps until want results are in; 0 when timeout_ms passed first. */
static int pump_until(fixture_t *f, int *sent, int n, int want, int64_t timeout_ms)
{
    int64_t deadline = mw_now_ms() + timeout_ms;
    while (f->t.distinct < want && mw_now_ms() < deadline)
        pump(f, sent, n, 20, 50);
    return f->t.distinct >= want;
}

/* A counter of stats:{pipeline} (0 when absent). */
static int64_t pipeline_stat(fixture_t *f, const char *field)
{
    char key[MW_KEY_MAX];
    redisReply *reply = NULL;
    int64_t v = 0;
    if (mw_redis_cmd(f->r, &reply, "HGET %s %s", mw_key_stats(f->r, f->p->name, key, sizeof(key)),
                     field) == MW_OK &&
        reply->type == REDIS_REPLY_STRING)
        v = atoll(reply->str);
    if (reply != NULL)
        freeReplyObject(reply);
    return v;
}

/* Sum of the leading counts ("N ...") of the recent events of a type. */
static int64_t events_total(fixture_t *f, const char *type)
{
    mw_event_t *ev = NULL;
    size_t n = 0;
    char last[64] = "";
    int64_t total = 0;
    if (mw_events_read(f->r, "", 10000, 0, &ev, &n, last, sizeof(last)) != MW_OK)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const char *msg = strstr(ev[i].text, "msg=");
        if (strcmp(ev[i].type, type) == 0 && msg != NULL)
            total += atoll(msg + 4);
    }
    free(ev);
    return total;
}

static int64_t max_latency_ms(const mwt_tally_t *t, int first, int end)
{
    int64_t m = 0;
    for (int i = first; i < end; i++)
        if (t->latency_us[i] > m)
            m = t->latency_us[i];
    return m / 1000;
}

/* ------------------------------------------------------------------ tests */

/* world.timeout_ms of this test's workers (before scaling). The attempt timeout
 * is far longer, so only the world failure path can re-dispatch in time. */
#define STOP_WORLD_TIMEOUT_MS 1000

static void sigstopped_mid_stage_worker_is_routed_around_then_rejoins(void **state)
{
    const int n = 20000; /* room: requests are sent at a steady pace, as long as it takes */
    char wt[64];
    snprintf(wt, sizeof(wt), "--world.timeout_ms=%lld",
             (long long)mwt_scaled(STOP_WORLD_TIMEOUT_MS));
    const char *flags[] = {wt, "--request.attempt_timeout_ms=100000", "--request.max_attempts=20",
                           NULL};
    fixture_t *f = fixture_new(state, "stop", 2, 2, n, flags);
    mwt_pipeline_t *p = f->p;
    const int victim = 2; /* w1-0, stage 1 */
    assert_true(mwt_wait_for(mwt_pipeline_origins_assigned(p) == 2, mwt_scaled(30000)));
    assert_true(mwt_wait_for(worker_serving(f, "w1-0"), mwt_scaled(20000)));
    int sent = 0;
    assert_true(pump_until(f, &sent, n, 300, mwt_scaled(60000)));

    /* Two stops: one shorter than the heartbeat ttl (w1-0 stays in the plan; its
     * worlds break and are issued again), one longer (it is expired, then
     * re-registers and is planned again). */
    const int64_t stops[2] = {mwt_scaled(STOP_WORLD_TIMEOUT_MS) + mwt_scaled(300),
                              mwt_scaled(1500) + mwt_scaled(2000)};
    for (int round = 0; round < 2; round++) {
        int first = sent;
        int64_t processed_before = mwt_worker_field(f->r, "w1-0", "processed");
        mwt_pipeline_signal(p, victim, SIGSTOP);
        int64_t until = mw_now_ms() + stops[round];
        while (mw_now_ms() < until)
            pump(f, &sent, n, 20, 50);
        mwt_pipeline_signal(p, victim, SIGCONT);
        int64_t t_cont = mw_now_ms();
        int resumed_at = sent;
        /* Everything sent while it was stopped is answered meanwhile. */
        int64_t deadline = mw_now_ms() + mwt_scaled(30000);
        while (mw_now_ms() < deadline) {
            int done = 1;
            for (int i = first; i < resumed_at && done; i++)
                done = f->t.count[i] > 0;
            if (done)
                break;
            pump(f, &sent, n, 10, 50);
        }
        int64_t worst = max_latency_ms(&f->t, first, resumed_at);
        print_message("stop %d (%lld ms): %d requests sent meanwhile, slowest answered in %lld ms "
                      "(world.timeout_ms %lld)\n",
                      round, (long long)stops[round], resumed_at - first, (long long)worst,
                      (long long)mwt_scaled(STOP_WORLD_TIMEOUT_MS));
        for (int i = first; i < resumed_at; i++)
            if (f->t.count[i] == 0)
                fail_msg("request %d, sent while w1-0 was stopped, is unanswered", i);
        assert_true(worst <= mwt_scaled(STOP_WORLD_TIMEOUT_MS) + mwt_scaled(1500));

        /* Resumed: back in the plan with its worlds up, and serving again. */
        deadline = mw_now_ms() + mwt_scaled(30000);
        while (!worker_serving(f, "w1-0") && mw_now_ms() < deadline)
            pump(f, &sent, n, 10, 50);
        assert_true(worker_serving(f, "w1-0"));
        int64_t rejoined = mw_now_ms() - t_cont;
        int64_t base = mwt_worker_field(f->r, "w1-0", "processed");
        deadline = mw_now_ms() + mwt_scaled(30000);
        while (mwt_worker_field(f->r, "w1-0", "processed") <= base && mw_now_ms() < deadline)
            pump(f, &sent, n, 20, 50);
        print_message("stop %d: w1-0 serving again %lld ms after SIGCONT (processed %lld -> %lld "
                      "-> %lld)\n",
                      round, (long long)rejoined, (long long)processed_before, (long long)base,
                      (long long)mwt_worker_field(f->r, "w1-0", "processed"));
        assert_true(mwt_worker_field(f->r, "w1-0", "processed") > base);
    }
    assert_true(sent < n); /* the pace never ran out of requests */
    assert_int_equal(
        mwt_pipeline_read(p, "results", &f->t, n, f->expected, sent, mwt_scaled(60000)), sent);
    assert_int_equal(mwt_pipeline_stop_workers(p, mwt_scaled(20000)), 0);
    int64_t attempts = 0;
    int replayed = mwt_pipeline_check_exactly_once(p, &f->t, sent, f->expected, NULL, &attempts);
    /* The re-dispatches are visible to operators: events and counters. */
    print_message("%lld requests answered by a later attempt (up to %lld); replay events count "
                  "%lld, stats %lld\n",
                  (long long)replayed, (long long)attempts, (long long)events_total(f, "replay"),
                  (long long)pipeline_stat(f, "replays"));
    /* One failed attempt per stop at most: the default request.max_attempts (3) suffices. */
    assert_true(attempts <= 3);
    assert_true(events_total(f, "replay") > 0);
    assert_true(pipeline_stat(f, "replays") > 0);
}

/* Results per second committed between two instants of a run. */
typedef struct rate_window {
    int64_t t0;
    int d0;
} rate_window_t;

static double window_rate(fixture_t *f, int n, int64_t ms)
{
    mwt_pipeline_read(f->p, "results", &f->t, n, f->expected, n, 0);
    rate_window_t w = {mw_now_ms(), f->t.distinct};
    while (mw_now_ms() < w.t0 + ms)
        mwt_pipeline_read(f->p, "results", &f->t, n, f->expected, n, 50);
    return (double)(f->t.distinct - w.d0) * 1000.0 / (double)(mw_now_ms() - w.t0);
}

static void worker_added_to_bottleneck_stage_raises_throughput(void **state)
{
    const int n = 5000;
    /* Stage 1 is the slow one: 5 ms per request (a slower device), while the
     * others take microseconds; the delay is a sleep, so the CPU load of the
     * machine does not decide the result. One row per batch, so that the delay
     * (per stage call) is per request. */
    static const char *const slow[] = {"--worker.compute_delay_us=5000", "--batch.max_rows=1",
                                       NULL};
    static const char *const unbatched[] = {"--batch.max_rows=1", "--worker.max_inflight=256",
                                            NULL};
    fixture_t *f = calloc(1, sizeof(*f));
    char err[256];
    assert_non_null(f);
    *state = f;
    f->p = mwt_pipeline_new("scale", 3, 6, 2, NULL);
    f->r = mw_redis_new(&f->p->cfg, 0, err, sizeof(err));
    if (f->r == NULL)
        fail_msg("redis: %s", err);
    f->p->worker_flags = unbatched;
    mwt_pipeline_worker(f->p, 0, "w0-0");
    f->p->worker_flags = slow;
    mwt_pipeline_worker(f->p, 1, "w1-0");
    f->p->worker_flags = unbatched;
    mwt_pipeline_worker(f->p, 2, "w2-0");
    f->expected = mwt_pipeline_reference(f->p, n);
    assert_true(mwt_wait_for(mwt_pipeline_origins_assigned(f->p) == 1, mwt_scaled(30000)));

    mwt_pipeline_submit(f->p, 0, n, NULL); /* a backlog: the pipeline runs at its bottleneck */
    assert_true(mwt_pipeline_read(f->p, "results", &f->t, n, f->expected, 100, mwt_scaled(30000)) >=
                100);
    double before = window_rate(f, n, 3000);
    assert_true(before > 0);
    f->p->worker_flags = slow;
    mwt_pipeline_worker(f->p, 1, "w1-1");
    int64_t t0 = mw_now_ms();
    while (!worker_serving(f, "w1-1") && mw_now_ms() < t0 + mwt_scaled(30000))
        mwt_pipeline_read(f->p, "results", &f->t, n, f->expected, n, 50);
    assert_true(worker_serving(f, "w1-1"));
    int64_t ready_ms = mw_now_ms() - t0;
    /* Results leave in input order, and the origin's window (worker.max_inflight, 256)
     * is queued at w1-0 when w1-1 arrives: until w1-0 has worked through that
     * queue, the window frees at w1-0's pace alone. Measure after one turnover of
     * the window at the old rate, plus half a second. */
    window_rate(f, n, (int64_t)(1000.0 * 256 / before) + 500);
    int left = n - f->t.distinct;
    double after = window_rate(f, n, 3000);
    print_message("throughput %.0f/s before, %.0f/s after w1-1 became ready (%lld ms after its "
                  "start; %d requests were left)\n",
                  before, after, (long long)ready_ms, left);
    assert_true(left > 1500); /* the second window ran on a backlog too */
    /* Two workers could at most double it. Over 44 runs of the earlier version
     * (measured 500 ms after w1-1 was ready) the gain was 1.32-2.25x, median 1.74x,
     * and one-worker windows alone vary by +-15 %: 1.25x is clearly a raise. */
    assert_true(after > 1.25 * before);

    assert_int_equal(
        mwt_pipeline_read(f->p, "results", &f->t, n, f->expected, n, mwt_scaled(60000)), n);
    assert_int_equal(mwt_pipeline_stop_workers(f->p, mwt_scaled(20000)), 0);
    mwt_pipeline_check_exactly_once(f->p, &f->t, n, f->expected, NULL, NULL);
}

static void sigterm_under_load_drains_and_aborts_nothing(void **state)
{
    const int n = 3000;
    fixture_t *f = fixture_new(state, "drain", 2, 2, n, NULL);
    mwt_pipeline_t *p = f->p;
    const int victim = 2; /* w1-0, stage 1 */
    assert_true(mwt_wait_for(mwt_pipeline_origins_assigned(p) == 2, mwt_scaled(30000)));
    assert_true(mwt_wait_for(worker_serving(f, "w1-0"), mwt_scaled(20000)));
    int sent = 0;
    assert_true(pump_until(f, &sent, n, 500, mwt_scaled(60000)));
    assert_true(mwt_worker_field(f->r, "w1-0", "processed") > 0); /* it was carrying load */
    kill(-p->pids[victim], SIGTERM);
    int64_t t0 = mw_now_ms();
    int status = -1;
    while (mw_now_ms() < t0 + mwt_scaled(20000)) {
        pump(f, &sent, n, 25, 50);
        if (waitpid(p->pids[victim], &status, WNOHANG) == p->pids[victim])
            break;
        status = -1;
    }
    print_message("w1-0 exited %lld ms after SIGTERM, status %d\n", (long long)(mw_now_ms() - t0),
                  status);
    assert_true(status != -1);
    p->pids[victim] = 0;
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    while (sent < n)
        pump(f, &sent, n, 50, 20);
    assert_int_equal(mwt_pipeline_read(p, "results", &f->t, n, f->expected, n, mwt_scaled(60000)),
                     n);
    assert_int_equal(mwt_pipeline_stop_workers(p, mwt_scaled(20000)), 0);
    /* Drained, not aborted: no request needed a second attempt. */
    int64_t attempts = 0;
    mwt_pipeline_check_exactly_once(f->p, &f->t, n, f->expected, NULL, &attempts);
    assert_int_equal(attempts, 1);
}

static void killed_coordinator_does_not_pause_serving_and_a_standby_takes_over(void **state)
{
    const int n = 3000;
    fixture_t *f = fixture_new(state, "coord", 2, 2, n, NULL);
    mwt_pipeline_t *p = f->p;
    char leader[128], now[128], epoch0[32], epoch1[32], pv[64];
    assert_true(mwt_wait_for(mwt_pipeline_origins_assigned(p) == 2, mwt_scaled(30000)));
    cluster_get(f, MW_KEY_COORDINATOR, leader, sizeof(leader));
    cluster_get(f, MW_KEY_EPOCH, epoch0, sizeof(epoch0));
    assert_true(leader[0] != '\0');
    mwt_pipeline_coordinator(p); /* the standby */
    int sent = 0;
    assert_true(pump_until(f, &sent, n, 300, mwt_scaled(60000)));

    kill(-p->coordinator, SIGKILL);
    mwt_wait_exit(p->coordinator, 5000);
    p->coordinator = 0;
    /* Serving goes on: the largest gap between newly committed results in the
     * 4 s after the kill (the lease is 1 s, the heartbeat ttl 1.5 s). */
    int64_t t_kill = mw_now_ms(), last = t_kill, gap = 0, took_over = -1;
    int d = f->t.distinct;
    while (mw_now_ms() < t_kill + mwt_scaled(4000) && sent < n) {
        pump(f, &sent, n, 20, 50);
        int64_t t = mw_now_ms();
        if (f->t.distinct > d) {
            if (t - last > gap)
                gap = t - last;
            last = t;
            d = f->t.distinct;
        }
        if (took_over < 0) {
            cluster_get(f, MW_KEY_COORDINATOR, now, sizeof(now));
            if (now[0] != '\0' && strcmp(now, leader) != 0)
                took_over = t - t_kill;
        }
    }
    if (mw_now_ms() - last > gap)
        gap = mw_now_ms() - last;
    print_message("coordinator killed: largest gap between committed results %lld ms; standby "
                  "leads %lld ms after the kill\n",
                  (long long)gap, (long long)took_over);
    assert_true(gap < mwt_scaled(750));
    /* The standby leads under a new epoch and publishes the plan under it. */
    assert_true(mwt_wait_for((cluster_get(f, MW_KEY_COORDINATOR, now, sizeof(now)),
                              now[0] != '\0' && strcmp(now, leader) != 0),
                             mwt_scaled(10000)));
    cluster_get(f, MW_KEY_EPOCH, epoch1, sizeof(epoch1));
    assert_true(atoll(epoch1) > atoll(epoch0));
    assert_true(mwt_wait_for(
        (cluster_get(f, MW_KEY_PLAN_VERSION, pv, sizeof(pv)), atoll(pv) == atoll(epoch1)),
        mwt_scaled(10000)));

    while (sent < n)
        pump(f, &sent, n, 50, 20);
    assert_int_equal(mwt_pipeline_read(p, "results", &f->t, n, f->expected, n, mwt_scaled(60000)),
                     n);
    assert_int_equal(mwt_pipeline_stop_workers(p, mwt_scaled(20000)), 0);
    mwt_pipeline_check_exactly_once(f->p, &f->t, n, f->expected, NULL, NULL);
}

static void kafka_restart_mid_run_loses_and_duplicates_nothing(void **state)
{
    const int n = 2000;
    fixture_t *f = fixture_new(state, "kafka", 1, 2, n, NULL);
    mwt_pipeline_t *p = f->p;
    assert_true(mwt_wait_for(mwt_pipeline_origins_assigned(p) == 1, mwt_scaled(30000)));
    int sent = 0;
    assert_true(pump_until(f, &sent, n, 300, mwt_scaled(60000)));
    int64_t t0 = mw_now_ms();
    assert_int_equal(mwt_service("kafka", "restart"), 0);
    print_message("kafka restarted in %lld ms at %d/%d results\n", (long long)(mw_now_ms() - t0),
                  f->t.distinct, n);
    while (sent < n)
        pump(f, &sent, n, 50, 20);
    int got = mwt_pipeline_read(p, "results", &f->t, n, f->expected, n, mwt_scaled(90000));
    print_message("%d/%d answered %lld ms after the restart began\n", got, n,
                  (long long)(mw_now_ms() - t0));
    assert_int_equal(got, n);
    assert_int_equal(mwt_pipeline_stop_workers(p, mwt_scaled(20000)), 0);
    mwt_pipeline_check_exactly_once(f->p, &f->t, n, f->expected, NULL, NULL);
}

/* 2000 requests; after 300 and a backlog up to 1000, the broker is hung
 * (SIGSTOP) for pause_ms while the origin commits (a window of 50: it takes
 * more of the backlog only as it commits, so it is committing when the broker
 * stops); then every request must be answered exactly once and the workers
 * must stop cleanly. flags: the workers' own (a window of 50 among them). */
static void kafka_hung_mid_commit(void **state, const char *suffix, const char *const *flags,
                                  int64_t pause_ms)
{
    const int n = 2000;
    fixture_t *f = fixture_new(state, suffix, 1, 2, n, flags);
    mwt_pipeline_t *p = f->p;
    assert_true(mwt_wait_for(mwt_pipeline_origins_assigned(p) == 1, mwt_scaled(30000)));
    int sent = 0;
    assert_true(pump_until(f, &sent, n, 300, mwt_scaled(60000)));
    mwt_pipeline_submit(p, sent, n / 2 - sent, NULL); /* a backlog being served and committed */
    sent = n / 2;
    assert_int_equal(mwt_service("kafka", "pause"), 0);
    mwt_sleep_ms(pause_ms); /* on purpose: the fault is the wait */
    assert_int_equal(mwt_service("kafka", "resume"), 0);
    int64_t t0 = mw_now_ms();
    while (sent < n)
        pump(f, &sent, n, 50, 20);
    int got = mwt_pipeline_read(p, "results", &f->t, n, f->expected, n, mwt_scaled(90000));
    print_message("%d/%d answered %lld ms after the broker resumed\n", got, n,
                  (long long)(mw_now_ms() - t0));
    assert_int_equal(got, n);
    assert_int_equal(mwt_pipeline_stop_workers(p, mwt_scaled(20000)), 0);
    mwt_pipeline_check_exactly_once(f->p, &f->t, n, f->expected, NULL, NULL);
}

/* A broker hung for longer than kafka_client.timeout_ms while results commit:
 * a commit_transaction that timed out is called again (a new commit would be
 * refused as conflicting, for good) until the broker is back. */
static void kafka_hung_past_the_commit_timeout_loses_and_duplicates_nothing(void **state)
{
    const char *const flags[] = {"--kafka_client.timeout_ms=1000", "--worker.max_inflight=50",
                                 NULL};
    kafka_hung_mid_commit(state, "kafkahung", flags, 3000); /* three commit timeouts */
}

/* The broker stops for longer than the consumer's session timeout while the
 * origin is committing: its commit_transaction times out (resumable), then
 * librdkafka declares the partitions lost and the origin must end that
 * transaction before it gives them up. librdkafka takes no abort while the
 * timed-out commit is unfinished, so the origin finishes it first (an origin
 * that tried to abort exited: "Conflicting commit_transaction API call is
 * already in progress"); and a partition flow control had paused must come
 * back unpaused when the group hands it back. */
static void
kafka_hung_past_the_session_timeout_mid_commit_loses_and_duplicates_nothing(void **state)
{
    const char *const flags[] = {"--kafka_client.timeout_ms=1000", "--worker.max_inflight=50",
                                 "--kafka.session.timeout.ms=6000",
                                 "--kafka.heartbeat.interval.ms=500", NULL};
    kafka_hung_mid_commit(state, "kafkalost", flags, 7500); /* past the session timeout */
}

static int one_in_ten(int i)
{
    return i % 10 == 3;
}

static void data_plane_activity_reaches_stats_and_events(void **state)
{
    const int n = 200;
    fixture_t *f = fixture_new(state, "stats", 1, 1, n, NULL);
    mwt_pipeline_submit(f->p, 0, n, one_in_ten);
    assert_int_equal(mwt_pipeline_read(f->p, "results", &f->t, n, NULL, n, mwt_scaled(60000)), n);
    /* Counters reach Redis with the next heartbeats, each worker's with its own;
     * the origin's results and errors grow together. */
    assert_true(mwt_wait_for(pipeline_stat(f, "results") == n, mwt_scaled(10000)));
    assert_int_equal(pipeline_stat(f, "errors"), n / 10);
    /* Every stage computed every valid request's row, in batches of one or more. */
    assert_true(mwt_wait_for(pipeline_stat(f, "rows") >= 3 * (n - n / 10), mwt_scaled(10000)));
    assert_true(pipeline_stat(f, "processed") > 0);
    assert_true(pipeline_stat(f, "processed") <= pipeline_stat(f, "rows"));
    assert_true(mwt_wait_for(mwt_worker_field(f->r, "w1-0", "processed") > 0, mwt_scaled(10000)));
    char key[MW_KEY_MAX];
    mw_key_worker_stats(f->r, "w0-0", key, sizeof(key));
    redisReply *reply = NULL;
    assert_int_equal(mw_redis_cmd(f->r, &reply, "HGET %s results", key), MW_OK);
    assert_int_equal(reply->type, REDIS_REPLY_STRING);
    assert_int_equal(atoll(reply->str), n);
    freeReplyObject(reply);
    assert_true(mwt_wait_for(events_total(f, "dlq") == n / 10, mwt_scaled(10000)));
    /* A worker that leaves takes its stats key along. */
    assert_int_equal(mwt_pipeline_stop_workers(f->p, mwt_scaled(20000)), 0);
    assert_int_equal(mw_redis_cmd(f->r, &reply, "EXISTS %s", key), MW_OK);
    assert_int_equal(reply->integer, 0);
    freeReplyObject(reply);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(sigstopped_mid_stage_worker_is_routed_around_then_rejoins,
                                  teardown),
        cmocka_unit_test_teardown(worker_added_to_bottleneck_stage_raises_throughput, teardown),
        cmocka_unit_test_teardown(sigterm_under_load_drains_and_aborts_nothing, teardown),
        cmocka_unit_test_teardown(
            killed_coordinator_does_not_pause_serving_and_a_standby_takes_over, teardown),
        cmocka_unit_test_teardown(kafka_restart_mid_run_loses_and_duplicates_nothing, teardown),
        cmocka_unit_test_teardown(kafka_hung_past_the_commit_timeout_loses_and_duplicates_nothing,
                                  teardown),
        cmocka_unit_test_teardown(
            kafka_hung_past_the_session_timeout_mid_commit_loses_and_duplicates_nothing, teardown),
        cmocka_unit_test_teardown(data_plane_activity_reaches_stats_and_events, teardown),
    };
    mwt_test_filter();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
