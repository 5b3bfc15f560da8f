/* Autoscaling with real processes (issue 18): a 3-stage pipeline whose middle
 * stage is slower (worker.compute_delay_us), a leading coordinator measuring
 * load and deciding desired counts, and real mw-agents starting and draining
 * mw-worker processes. A load ramp low -> high -> low must add workers to the
 * middle stage only while the backlog grows, remove them once the load falls,
 * explain each step in an event, and answer every request exactly once; with
 * --stage auto workers and no agent, the same ramp moves them to the middle
 * stage and back. */
#include "clock.h"
#include "err.h"
#include "cluster/events.h"
#include "cluster/keys.h"
#include "cluster/plan_doc.h"
#include "harness.h"
#include "mwt_pipeline.h"
#include "redis.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* The middle stage's cost per stage call, and one row per call: a worker there
 * serves about 1e6 / DELAY_US requests a second; the others far more. */
#define DELAY_US     40000
#define LOW_RATE     5  /* requests/s: the middle stage a fifth busy */
#define HIGH_RATE    65 /* more than two middle workers serve, less than three */
#define MAX_MID      3
#define MAX_REQUESTS 20000 /* room in a tally opened before the last request is sent */

typedef struct fixture {
    const char *stages; /* the pipeline spec's stages (JSON); NULL: the ramp's */
    mwt_pipeline_t *p;
    mw_redis_t *r;
    pid_t agent, agent2; /* agent-{P}; agent2-{P} when a second one shares the slots */
    float *expected;
    mwt_tally_t t;
} fixture_t;

static void spawn_into(char args[][1200], char **argv, int *n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void spawn_into(char args[][1200], char **argv, int *n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args[*n], 1200, fmt, ap);
    va_end(ap);
    argv[*n] = args[*n];
    (*n)++;
}

/* The flags every process of the test shares. */
static void common_flags(fixture_t *f, char args[][1200], char **argv, int *n)
{
    spawn_into(args, argv, n, "--redis.port=%lld", (long long)f->p->cfg.redis_port);
    spawn_into(args, argv, n, "--cluster.name=%s", f->p->cfg.cluster);
    spawn_into(args, argv, n, "--kafka.bootstrap.servers=%s",
               mw_config_kafka_get(&f->p->cfg, "bootstrap.servers"));
    spawn_into(args, argv, n, "--log.level=%s", mwt_log_level());
    char ramp[160];
    snprintf(ramp, sizeof(ramp),
             "[{\"min\":1,\"max\":2},{\"min\":1,\"max\":%d},{\"min\":1,\"max\":2}]", MAX_MID);
    spawn_into(args, argv, n, "--pipeline.spec={\"name\":\"%s\",\"model\":\"%s\",\"stages\":%s}",
               f->p->name, f->p->model_path, f->stages != NULL ? f->stages : ramp);
}

/* The pipeline's coordinator replaced by one that autoscales quickly. */
static void start_coordinator(fixture_t *f)
{
    if (f->p->coordinator > 0) {
        /* Also by pid: it may not have made its process group yet. */
        kill(f->p->coordinator, SIGKILL);
        kill(-f->p->coordinator, SIGKILL);
        mwt_wait_exit(f->p->coordinator, 5000);
    }
    char args[24][1200];
    char *argv[25];
    int n = 0;
    spawn_into(args, argv, &n, "%s", mwt_bin("mw-coordinator"));
    common_flags(f, args, argv, &n);
    spawn_into(args, argv, &n, "--coordinator.interval_ms=50");
    spawn_into(args, argv, &n, "--coordinator.lease_ms=1000");
    spawn_into(args, argv, &n, "--heartbeat.ttl_ms=%lld", (long long)mwt_scaled(1500));
    spawn_into(args, argv, &n, "--autoscale.interval_ms=500");
    spawn_into(args, argv, &n, "--autoscale.window_ms=3000");
    spawn_into(args, argv, &n, "--autoscale.lag_min=30");
    spawn_into(args, argv, &n, "--autoscale.cooldown_ms=2000");
    spawn_into(args, argv, &n, "--autoscale.scale_in_after_ms=3000");
    argv[n] = NULL;
    f->p->coordinator = mwt_spawn(argv);
    assert_true(f->p->coordinator > 0);
}

/* An agent (agent-{P}, or agent2-{P} while that one runs): 8 cpu slots of this
 * host; workers whose stage 1 is slow, or with command (not NULL) as
 * agent.worker_command. */
static void start_agent(fixture_t *f, const char *command)
{
    int second = f->agent > 0;
    char args[24][1200];
    char *argv[25];
    int n = 0;
    spawn_into(args, argv, &n, "%s", mwt_bin("mw-agent"));
    common_flags(f, args, argv, &n);
    spawn_into(args, argv, &n, "--agent.id=agent%s-%s", second ? "2" : "", f->p->name);
    spawn_into(args, argv, &n, "--agent.slots=cpu:8");
    spawn_into(args, argv, &n, "--agent.interval_ms=200");
    spawn_into(args, argv, &n, "--agent.backoff_ms=200");
    spawn_into(args, argv, &n, "--agent.backoff_max_ms=800");
    if (command != NULL)
        spawn_into(args, argv, &n, "--agent.worker_command=%s", command);
    else
        spawn_into(args, argv, &n,
                   "--agent.worker_command=d=; [ \"$MW_WORKER_STAGE\" = 1 ] && "
                   "d=--worker.compute_delay_us=%d; exec %s --redis.port=%lld --cluster.name=%s "
                   "--kafka.bootstrap.servers=%s --heartbeat.interval_ms=100 "
                   "--heartbeat.ttl_ms=%lld --batch.max_rows=1 --log.level=%s $d",
                   DELAY_US, mwt_bin("mw-worker"), (long long)f->p->cfg.redis_port,
                   f->p->cfg.cluster, mw_config_kafka_get(&f->p->cfg, "bootstrap.servers"),
                   (long long)mwt_scaled(1500), mwt_log_level());
    argv[n] = NULL;
    pid_t pid = mwt_spawn(argv);
    assert_true(pid > 0);
    *(second ? &f->agent2 : &f->agent) = pid;
}

/* SIGKILL to the agents; their workers keep running. */
static void kill_agents(fixture_t *f)
{
    pid_t *agents[] = {&f->agent, &f->agent2};
    for (int i = 0; i < 2; i++) {
        if (*agents[i] > 0) {
            kill(-*agents[i], SIGKILL);
            mwt_wait_exit(*agents[i], 5000);
        }
        *agents[i] = 0;
    }
}

/* A pipeline with the autoscaling coordinator and an agent running command. */
static fixture_t *fixture_new(void **state, const char *suffix, const char *command)
{
    char err[256];
    fixture_t *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    *state = f; /* torn down by teardown() even when the test fails */
    f->p = mwt_pipeline_new(suffix, 3, 6, 2, NULL);
    f->r = mw_redis_new(&f->p->cfg, 0, err, sizeof(err));
    if (f->r == NULL)
        fail_msg("redis: %s", err);
    start_coordinator(f);
    start_agent(f, command);
    return f;
}

/* Every worker the agents run (from `slots`), killed: they outlive the agent. */
static void kill_pool(fixture_t *f)
{
    char key[MW_KEY_MAX];
    redisReply *reply = NULL;
    if (mw_redis_cmd(f->r, &reply, "HVALS %s", mw_key(f->r, MW_KEY_SLOTS, key, sizeof(key))) !=
        MW_OK)
        return;
    for (size_t i = 0; reply->type == REDIS_REPLY_ARRAY && i < reply->elements; i++) {
        long long pid = 0;
        if (sscanf(reply->element[i]->str, "%*s %lld", &pid) == 1 && pid > 0) {
            kill(-(pid_t)pid, SIGKILL);
            mwt_wait_exit((pid_t)pid, 5000);
        }
    }
    freeReplyObject(reply);
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    if (f == NULL)
        return 0;
    kill_agents(f);
    kill_pool(f);
    mwt_pipeline_destroy(f->p);
    mw_redis_destroy(f->r);
    mwt_tally_fini(&f->t);
    free(f->expected);
    free(f);
    *state = NULL;
    return 0;
}

/* A numeric field of hash kind:{pipeline} (load, desired); -1 when absent. */
static double field(fixture_t *f,
                    const char *(*key_of)(const mw_redis_t *, const char *, char *, size_t),
                    const char *name)
{
    char key[MW_KEY_MAX];
    redisReply *reply = NULL;
    double v = -1;
    if (mw_redis_cmd(f->r, &reply, "HGET %s %s", key_of(f->r, f->p->name, key, sizeof(key)),
                     name) != MW_OK)
        return -1;
    if (reply->type == REDIS_REPLY_STRING)
        v = atof(reply->str);
    freeReplyObject(reply);
    return v;
}

static int desired(fixture_t *f, int stage)
{
    char name[8];
    snprintf(name, sizeof(name), "%d", stage);
    return (int)field(f, mw_key_desired, name);
}

static int workers(fixture_t *f, int stage)
{
    char name[16];
    snprintf(name, sizeof(name), "%d.workers", stage);
    return (int)field(f, mw_key_load, name);
}

/* Events of the pipeline (or its agent) so far whose type starts with prefix:
 * their number, and in msgs (when not NULL) their "type text" lines. */
static int events_of(fixture_t *f, const char *prefix, char msgs[][600], int max)
{
    mw_event_t *ev = NULL;
    size_t n = 0;
    char last[32] = "";
    if (mw_events_read(f->r, "0", 10000, 0, &ev, &n, last, sizeof(last)) != MW_OK)
        return 0;
    int k = 0;
    for (size_t i = 0; i < n; i++) {
        if (strncmp(ev[i].type, prefix, strlen(prefix)) != 0 ||
            strstr(ev[i].text, f->p->name) == NULL)
            continue;
        if (msgs != NULL && k < max)
            snprintf(msgs[k], 600, "%s %s", ev[i].type, ev[i].text);
        k++;
    }
    free(ev);
    return k;
}

/* Produces rate requests/s for up to ms, from *sent on; stops early once
 * until(f) holds (NULL: never). Returns until's last answer (1 with NULL). */
static int load(fixture_t *f, int rate, int64_t ms, int *sent, int (*until)(fixture_t *))
{
    int64_t t0 = mw_now_ms();
    int first = *sent;
    while (mw_now_ms() - t0 < ms) {
        if (until != NULL && until(f))
            return 1;
        int due = first + (int)((mw_now_ms() - t0) * rate / 1000);
        if (due > *sent) {
            mwt_pipeline_submit(f->p, *sent, due - *sent, NULL);
            *sent = due;
        }
        mwt_sleep_ms(50);
    }
    return until == NULL || until(f);
}

static int mid_at_max(fixture_t *f)
{
    return desired(f, 1) == MAX_MID && workers(f, 1) == MAX_MID;
}

static int mid_back_to_one(fixture_t *f)
{
    return desired(f, 1) == 1 && workers(f, 1) == 1;
}

static int pool_at_min(fixture_t *f)
{
    return workers(f, 0) == 1 && workers(f, 1) == 1 && workers(f, 2) == 1 &&
           mwt_pipeline_origins_assigned(f->p) > 0;
}

/* Workers of the pipeline that agents run, from `slots` (pid 0 while starting). */
static int slots_in_use(fixture_t *f)
{
    char key[MW_KEY_MAX], pipeline[160];
    redisReply *reply = NULL;
    long long pid;
    int n = 0;
    if (mw_redis_cmd(f->r, &reply, "HVALS %s", mw_key(f->r, MW_KEY_SLOTS, key, sizeof(key))) !=
        MW_OK)
        return -1;
    for (size_t i = 0; reply->type == REDIS_REPLY_ARRAY && i < reply->elements; i++)
        n += sscanf(reply->element[i]->str, "%*s %lld %159s", &pid, pipeline) == 2 &&
             strcmp(pipeline, f->p->name) == 0;
    freeReplyObject(reply);
    return n;
}

static void load_ramp_scales_the_slow_middle_stage_out_and_back_in(void **state)
{
    fixture_t *f = fixture_new(state, "ramp", NULL);
    start_agent(f, NULL); /* a second agent on the same slots: they share, never overshoot */
    /* Nothing is desired yet: the coordinator starts every stage at its min. */
    if (!mwt_wait_for(pool_at_min(f), mwt_scaled(30000)))
        fail_msg("the agent did not start one worker per stage (workers %d %d %d)", workers(f, 0),
                 workers(f, 1), workers(f, 2));

    int sent = 0;
    load(f, LOW_RATE, 6000, &sent, NULL);
    char msgs[16][600];
    int nev = events_of(f, "scale_", msgs, 16);
    if (nev != 0)
        fail_msg("scaled under low load: %s", msgs[0]);

    int64_t t_high = mw_now_ms();
    if (!load(f, HIGH_RATE, mwt_scaled(60000), &sent, mid_at_max))
        fail_msg("the middle stage did not grow to %d workers under %d requests/s (desired %d, "
                 "workers %d, busy %.2f, lag %.0f)",
                 MAX_MID, HIGH_RATE, desired(f, 1), workers(f, 1), field(f, mw_key_load, "1.busy"),
                 field(f, mw_key_load, "lag"));
    int64_t t_max = mw_now_ms();
    assert_int_equal(slots_in_use(f), 1 + MAX_MID + 1);
    /* The operator sees the measured load and the desired counts. */
    char cmd[1024], text[16384];
    snprintf(cmd, sizeof(cmd), "%s --redis.port=%lld --cluster.name=%s status 2>&1",
             mwt_bin("mwctl"), (long long)f->p->cfg.redis_port, f->p->cfg.cluster);
    assert_int_equal(mwt_run(cmd, text, sizeof(text)), 0);
    if (strstr(text, "  load: backlog ") == NULL || strstr(text, "desired 3, busy ") == NULL)
        fail_msg("mwctl status shows no load or desired count:\n%s", text);
    if (!load(f, LOW_RATE, mwt_scaled(90000), &sent, mid_back_to_one))
        fail_msg("the middle stage did not shrink back to 1 worker (desired %d, workers %d, busy "
                 "%.2f, lag %.0f)",
                 desired(f, 1), workers(f, 1), field(f, mw_key_load, "1.busy"),
                 field(f, mw_key_load, "lag"));
    int64_t t_min = mw_now_ms();
    assert_int_equal(desired(f, 0), 1);
    assert_int_equal(desired(f, 2), 1);

    /* Out to MAX_MID, then back in to 1, all at stage 1, each with its reason. */
    nev = events_of(f, "scale_", msgs, 16);
    for (int i = 0; i < nev && i < 16; i++)
        printf("event: %s\n", msgs[i]);
    assert_int_equal(nev, 2 * (MAX_MID - 1));
    for (int i = 0; i < nev; i++) {
        int out = i < MAX_MID - 1;
        assert_non_null(strstr(msgs[i], out ? "scale_out" : "scale_in"));
        assert_non_null(strstr(msgs[i], "stage=1 from"));
        assert_non_null(strstr(msgs[i], "busy"));
        if (out)
            assert_non_null(strstr(msgs[i], "lag +"));
    }

    f->expected = mwt_pipeline_reference(f->p, sent);
    if (mwt_pipeline_read(f->p, "results", &f->t, sent, f->expected, sent, mwt_scaled(60000)) !=
        sent)
        fail_msg("%d of %d requests answered", f->t.distinct, sent);
    kill_agents(f);
    kill_pool(f);
    mwt_pipeline_check_exactly_once(f->p, &f->t, sent, f->expected, NULL, NULL);
    printf("ramp: %d requests; out to %d middle workers %.1f s after the step up, back to 1 "
           "%.1f s after the step down\n",
           sent, MAX_MID, (double)(t_max - t_high) / 1000, (double)(t_min - t_max) / 1000);
}

static int crashes_at_stage(fixture_t *f, int stage)
{
    char msgs[64][600], want[32];
    int n = events_of(f, "worker_crash", msgs, 64), k = 0;
    snprintf(want, sizeof(want), " stage %d on ", stage);
    for (int i = 0; i < n && i < 64; i++)
        k += strstr(msgs[i], want) != NULL;
    return k;
}

static void worker_exiting_at_once_is_backed_off_and_reported(void **state)
{
    char command[700];
    snprintf(command, sizeof(command), "exec %s --no.such.key=1", mwt_bin("mw-worker"));
    fixture_t *f = fixture_new(state, "crash", command);
    /* Every stage wants one worker; each start exits at once with status 2. */
    if (!mwt_wait_for(crashes_at_stage(f, 1) >= 1, mwt_scaled(20000)))
        fail_msg("no worker_crash event");
    int64_t t0 = mw_now_ms();
    mwt_sleep_ms(4000);
    /* Waits of 200, 400, 800, 800 ... ms: at most 7 starts in 4 s, where the
     * agent's 200 ms loop alone would make 20. */
    int n = crashes_at_stage(f, 1);
    if (n < 3 || n > 8)
        fail_msg("%d early exits at stage 1 in %lld ms", n, (long long)(mw_now_ms() - t0));
    char msgs[64][600];
    int all = events_of(f, "worker_crash", msgs, 64);
    int waits[3] = {0, 0, 0};
    for (int i = 0; i < all && i < 64; i++) {
        assert_non_null(strstr(msgs[i], "exited with status 2"));
        waits[0] |= strstr(msgs[i], "(early exit 1 in a row): next start in 200 ms") != NULL;
        waits[1] |= strstr(msgs[i], "(early exit 2 in a row): next start in 400 ms") != NULL;
        waits[2] |= strstr(msgs[i], "(early exit 4 in a row): next start in 800 ms") != NULL;
    }
    if (!waits[0] || !waits[1] || !waits[2])
        fail_msg("the backoff did not double up to its cap: %s", msgs[all > 0 ? all - 1 : 0]);
    /* The agent's report carries the exits; the desired counts stay at min. */
    char key[MW_KEY_MAX], id[160];
    snprintf(id, sizeof(id), "agent-%s", f->p->name);
    redisReply *reply = NULL;
    assert_int_equal(
        mw_redis_cmd(f->r, &reply, "HGET %s exits", mw_key_agent(f->r, id, key, sizeof(key))),
        MW_OK);
    assert_int_equal(reply->type, REDIS_REPLY_STRING);
    assert_true(atoi(reply->str) >= 3 * 3);
    freeReplyObject(reply);
    for (int s = 0; s < 3; s++)
        assert_int_equal(desired(f, s), 1);
}

/* The pids of the workers of this test's agent (from `slots`), sorted;
 * returns how many. */
static int pool_pids(fixture_t *f, long long *pids, int max)
{
    char key[MW_KEY_MAX], me[160], owner[160];
    redisReply *reply = NULL;
    int n = 0;
    snprintf(me, sizeof(me), "agent-%s", f->p->name);
    if (mw_redis_cmd(f->r, &reply, "HVALS %s", mw_key(f->r, MW_KEY_SLOTS, key, sizeof(key))) !=
        MW_OK)
        return 0;
    for (size_t i = 0; reply->type == REDIS_REPLY_ARRAY && i < reply->elements && n < max; i++)
        if (sscanf(reply->element[i]->str, "%159s %lld", owner, &pids[n]) == 2 &&
            strcmp(owner, me) == 0)
            n++;
    freeReplyObject(reply);
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && pids[j - 1] > pids[j]; j--) {
            long long t = pids[j];
            pids[j] = pids[j - 1];
            pids[j - 1] = t;
        }
    return n;
}

/* The value of field slot of `slots` (empty when absent), in buf. */
static const char *slot_value(fixture_t *f, const char *slot, char *buf, size_t size)
{
    char key[MW_KEY_MAX];
    redisReply *reply = NULL;
    buf[0] = '\0';
    if (mw_redis_cmd(f->r, &reply, "HGET %s %s", mw_key(f->r, MW_KEY_SLOTS, key, sizeof(key)),
                     slot) == MW_OK) {
        if (reply->type == REDIS_REPLY_STRING)
            snprintf(buf, size, "%s", reply->str);
        freeReplyObject(reply);
    }
    return buf;
}

/* After a reboot (or a long time), the pid a slot names may be another
 * process's: a restarted agent must neither adopt it nor ever signal it. */
static void slot_naming_a_reused_pid_is_freed_and_that_process_left_alone(void **state)
{
    fixture_t *f = fixture_new(state, "reuse", NULL);
    assert_true(mwt_wait_for(pool_at_min(f), mwt_scaled(60000)));
    kill_agents(f);
    char *sleeper[] = {"/bin/sleep", "120", NULL};
    pid_t other = mwt_spawn(sleeper);
    assert_true(other > 0);
    char host[64] = "", slot[160], value[400], key[MW_KEY_MAX], buf[400];
    gethostname(host, sizeof(host) - 1);
    snprintf(slot, sizeof(slot), "%s/cpu#7", host); /* the pool at min uses the first ones */
    snprintf(value, sizeof(value), "agent-%s %lld %s 1", f->p->name, (long long)other, f->p->name);
    redisReply *reply = NULL;
    assert_int_equal(mw_redis_cmd(f->r, &reply, "HSET %s %s %s",
                                  mw_key(f->r, MW_KEY_SLOTS, key, sizeof(key)), slot, value),
                     MW_OK);
    freeReplyObject(reply);
    start_agent(f, NULL);
    assert_true(
        mwt_wait_for(strcmp(slot_value(f, slot, buf, sizeof(buf)), value) != 0, mwt_scaled(10000)));
    assert_int_equal(kill(other, 0), 0); /* not signalled */
    kill(other, SIGKILL);
    mwt_wait_exit(other, 5000);
}

static void killed_agent_and_coordinator_freeze_the_pool_while_serving_continues(void **state)
{
    fixture_t *f = fixture_new(state, "freeze", NULL);
    if (!mwt_wait_for(pool_at_min(f), mwt_scaled(30000)))
        fail_msg("the agent did not start one worker per stage");
    long long before[8], after[8];
    int nbefore = pool_pids(f, before, 8);
    assert_int_equal(nbefore, 3);

    kill_agents(f);
    kill(-f->p->coordinator, SIGKILL);
    mwt_wait_exit(f->p->coordinator, 5000);
    f->p->coordinator = 0;
    /* Serving continues on the frozen pool, and nothing changes it. */
    int sent = 0;
    load(f, HIGH_RATE, 4000, &sent, NULL);
    f->expected = mwt_pipeline_reference(f->p, MAX_REQUESTS);
    if (mwt_pipeline_read(f->p, "results", &f->t, MAX_REQUESTS, f->expected, sent / 2,
                          mwt_scaled(30000)) < sent / 2)
        fail_msg("%d of %d requests answered without coordinator and agent", f->t.distinct, sent);
    assert_int_equal(pool_pids(f, after, 8), 3);
    assert_memory_equal(before, after, sizeof(long long) * 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(kill((pid_t)after[i], 0), 0);

    /* A restarted agent adopts the workers instead of starting others; a
     * restarted coordinator resumes scaling the backlog that grew meanwhile. */
    start_agent(f, NULL);
    start_coordinator(f);
    if (!load(f, HIGH_RATE, mwt_scaled(60000), &sent, mid_at_max))
        fail_msg("scaling did not resume (desired %d, workers %d)", desired(f, 1), workers(f, 1));
    int nafter = pool_pids(f, after, 8);
    assert_int_equal(nafter, 3 + MAX_MID - 1);
    int kept = 0;
    for (int i = 0; i < nafter; i++)
        for (int j = 0; j < 3; j++)
            kept += after[i] == before[j];
    assert_int_equal(kept, 3);
    assert_int_equal(desired(f, 0), 1);
    assert_int_equal(desired(f, 2), 1);

    assert_true(sent <= MAX_REQUESTS);
    if (mwt_pipeline_read(f->p, "results", &f->t, MAX_REQUESTS, f->expected, sent,
                          mwt_scaled(60000)) != sent)
        fail_msg("%d of %d requests answered", f->t.distinct, sent);
    kill_agents(f);
    kill_pool(f);
    mwt_pipeline_check_exactly_once(f->p, &f->t, sent, f->expected, NULL, NULL);
}

static int mid_at_max_by_moves(fixture_t *f)
{
    return desired(f, 1) == MAX_MID && workers(f, 1) == MAX_MID && workers(f, 2) == 1;
}

static int moved_back(fixture_t *f)
{
    return desired(f, 1) == 1 && workers(f, 1) == 1 && workers(f, 2) == MAX_MID;
}

static void auto_workers_move_to_the_slow_stage_under_load_and_back(void **state)
{
    /* Every worker is slow at stage 1 only, wherever it is placed. */
    static char delay[64];
    snprintf(delay, sizeof(delay), "--worker.compute_delay_us=%d", DELAY_US);
    static const char *flags[] = {delay, "--worker.compute_delay_stage=1", "--batch.max_rows=1",
                                  NULL};
    fixture_t *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    *state = f;
    /* Stage 2 needs 4x the capacity of the others: the auto workers start there. */
    f->stages = "[{\"min\":1,\"max\":1},{\"min\":1,\"max\":3},{\"min\":1,\"max\":3,\"need\":4}]";
    f->p = mwt_pipeline_new("move", 3, 6, 2, flags);
    char err[256];
    f->r = mw_redis_new(&f->p->cfg, 0, err, sizeof(err));
    if (f->r == NULL)
        fail_msg("redis: %s", err);
    start_coordinator(f);
    mwt_pipeline_worker(f->p, 0, "fixed0");
    mwt_pipeline_worker(f->p, 1, "fixed1");
    if (!mwt_wait_for(workers(f, 0) == 1 && workers(f, 1) == 1, mwt_scaled(20000)))
        fail_msg("the fixed workers did not join");
    for (int i = 0; i < MAX_MID; i++) {
        char id[16];
        snprintf(id, sizeof(id), "auto%d", i);
        mwt_pipeline_worker(f->p, MW_PLAN_STAGE_AUTO, id);
    }
    if (!mwt_wait_for(workers(f, 2) == MAX_MID && desired(f, 2) == MAX_MID &&
                          mwt_pipeline_origins_assigned(f->p) > 0,
                      mwt_scaled(30000)))
        fail_msg("the auto workers did not all join stage 2 (workers %d %d %d, desired %d)",
                 workers(f, 0), workers(f, 1), workers(f, 2), desired(f, 2));

    int sent = 0;
    int64_t t_high = mw_now_ms();
    if (!load(f, HIGH_RATE, mwt_scaled(40000), &sent, mid_at_max_by_moves))
        fail_msg("the auto workers did not move to stage 1 under %d requests/s (desired %d %d, "
                 "workers %d %d, busy %.2f, lag %.0f)",
                 HIGH_RATE, desired(f, 1), desired(f, 2), workers(f, 1), workers(f, 2),
                 field(f, mw_key_load, "1.busy"), field(f, mw_key_load, "lag"));
    int64_t t_max = mw_now_ms();
    if (!load(f, LOW_RATE, mwt_scaled(40000), &sent, moved_back))
        fail_msg("the auto workers did not move back (desired %d %d, workers %d %d, busy %.2f, "
                 "lag %.0f)",
                 desired(f, 1), desired(f, 2), workers(f, 1), workers(f, 2),
                 field(f, mw_key_load, "1.busy"), field(f, mw_key_load, "lag"));
    int64_t t_back = mw_now_ms();

    /* Two moves there and two back, each with its reason; nothing started or stopped. */
    char msgs[16][600];
    int nev = events_of(f, "move", msgs, 16);
    for (int i = 0; i < nev && i < 16; i++)
        printf("event: %s\n", msgs[i]);
    assert_int_equal(nev, 2 * (MAX_MID - 1));
    for (int i = 0; i < nev; i++) {
        int out = i < MAX_MID - 1;
        assert_non_null(
            strstr(msgs[i], out ? "stage=2 to stage=1: busy " : "stage=1 to stage=2: back: busy "));
        if (out)
            assert_non_null(strstr(msgs[i], "lag +"));
    }
    assert_int_equal(events_of(f, "scale_", msgs, 16), 0);
    /* Moved workers drain first: what they held is not replayed (not asserted:
     * a request racing a plan change may still be). */
    int replays = events_of(f, "replay", NULL, 0);

    f->expected = mwt_pipeline_reference(f->p, sent);
    if (mwt_pipeline_read(f->p, "results", &f->t, sent, f->expected, sent, mwt_scaled(60000)) !=
        sent)
        fail_msg("%d of %d requests answered", f->t.distinct, sent);
    mwt_pipeline_check_exactly_once(f->p, &f->t, sent, f->expected, NULL, NULL);
    printf("move: %d requests; %d auto workers at stage 1 %.1f s after the step up, back at "
           "stage 2 %.1f s after the step down; %d replay event(s)\n",
           sent, MAX_MID - 1, (double)(t_max - t_high) / 1000, (double)(t_back - t_max) / 1000,
           replays);
}

static void bad_agent_slots_and_command_are_refused_with_a_message(void **state)
{
    (void)state;
    static const struct {
        const char *flags, *expect;
    } cases[] = {
        {"--agent.slots=gpu:0", "expected cpu:N or cuda:0,1,..."},
        {"--agent.slots=cpu:0", "cpu:N needs N in 1..256"},
        {"--agent.slots=cpu:2x", "cpu:N needs N in 1..256"},
        {"--agent.slots=cuda:1,x", "cuda: needs a list of device numbers 0..1023"},
        {"--agent.slots=cuda:0,1,0", "cuda:0 listed twice"},
        {"--agent.worker_command=", "agent.worker_command is empty"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char cmd[1024], out[1024];
        snprintf(cmd, sizeof(cmd),
                 "%s --pipeline.spec=p:2 --agent.worker_command=true %s 2>&1; echo \"rc=$?\"",
                 mwt_bin("mw-agent"), cases[i].flags);
        assert_int_equal(mwt_run(cmd, out, sizeof(out)), 0);
        if (strstr(out, cases[i].expect) == NULL || strstr(out, "rc=2") == NULL)
            fail_msg("mw-agent %s: expected '%s' and exit status 2, got: %s", cases[i].flags,
                     cases[i].expect, out);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bad_agent_slots_and_command_are_refused_with_a_message),
        cmocka_unit_test_teardown(load_ramp_scales_the_slow_middle_stage_out_and_back_in, teardown),
        cmocka_unit_test_teardown(worker_exiting_at_once_is_backed_off_and_reported, teardown),
        cmocka_unit_test_teardown(slot_naming_a_reused_pid_is_freed_and_that_process_left_alone,
                                  teardown),
        cmocka_unit_test_teardown(
            killed_agent_and_coordinator_freeze_the_pool_while_serving_continues, teardown),
        cmocka_unit_test_teardown(auto_workers_move_to_the_slow_stage_under_load_and_back,
                                  teardown),
    };
    mwt_test_filter();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
