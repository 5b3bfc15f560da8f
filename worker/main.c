/* mw-worker: registers in Redis, heartbeats, follows the plan (notices + polling)
 * and reconciles its worlds; SIGTERM drains, leaves and exits 0. */
#include "clock.h"
#include "program.h"
#include "config.h"
#include "err.h"
#include "cluster/events.h"
#include "cluster/keys.h"
#include "log.h"
#include "cluster/membership.h"
#include "cluster/pipeline.h"
#include "cluster/plan_doc.h"
#include "cluster/planstore.h"
#include "reconcile.h"
#include "redis.h"
#include "serving.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

typedef struct worker {
    mw_config_t *cfg;
    mw_redis_t *r;
    redisContext *sub; /* SUBSCRIBE connection for plan notices (NULL while down) */
    char channel[MW_KEY_MAX];
    mw_member_info_t info;
    int registered; /* a heartbeat went through at least once */
    int redis_down;
    int64_t seen_epoch, seen_version; /* the plan applied last */
    int64_t bad_epoch, bad_version;   /* a malformed plan reported already */
    mw_plan_world_t *worlds;          /* current worlds (the reconciliation's "current") */
    size_t nworlds;
    int in_plan;
    int64_t drain_epoch, drain_version; /* first plan applied that shows us draining, lately */
    mw_serving_stats_t reported;        /* counters as of the last activity report */
    mw_serving_t *serving;              /* worlds and data plane */
} worker_t;

/* ---------------------------------------------------------------- notices */

static void sub_close(worker_t *w)
{
    if (w->sub != NULL) {
        redisFree(w->sub);
        w->sub = NULL;
    }
}

static void sub_open(worker_t *w)
{
    struct timeval tv = {.tv_sec = w->cfg->redis_connect_timeout_ms / 1000,
                         .tv_usec = (w->cfg->redis_connect_timeout_ms % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(w->cfg->redis_host, (int)w->cfg->redis_port, tv);
    redisReply *reply = NULL;
    if (c == NULL || c->err)
        goto out_fail;
    redisSetTimeout(c, tv);
    if (w->cfg->redis_password[0] != '\0') {
        reply = redisCommand(c, "AUTH %s", w->cfg->redis_password);
        if (reply == NULL || reply->type == REDIS_REPLY_ERROR)
            goto out_fail;
        freeReplyObject(reply);
    }
    reply = redisCommand(c, "SUBSCRIBE %s", w->channel);
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY)
        goto out_fail;
    freeReplyObject(reply);
    w->sub = c;
    return;
out_fail:
    if (reply != NULL)
        freeReplyObject(reply);
    if (c != NULL)
        redisFree(c);
}

/* Waits up to ms for a plan notice; 1 when one (or more) arrived. */
static int sub_wait(worker_t *w, int64_t ms)
{
    if (ms < 0)
        ms = 0;
    if (w->sub == NULL) {
        struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
        nanosleep(&ts, NULL);
        return 0;
    }
    struct pollfd pfd = {.fd = w->sub->fd, .events = POLLIN};
    int n = poll(&pfd, 1, (int)ms);
    if (n <= 0)
        return 0;
    if (redisBufferRead(w->sub) != REDIS_OK) {
        sub_close(w); /* Redis went away: polling continues, reconnect later */
        return 1;
    }
    int got = 0;
    void *reply = NULL;
    while (redisGetReplyFromReader(w->sub, &reply) == REDIS_OK && reply != NULL) {
        got = 1;
        freeReplyObject(reply);
        reply = NULL;
    }
    return got;
}

/* ----------------------------------------------------------- reconciliation */

/* The seam with the world layer: planned worlds are recorded as current, and
 * mw_serving_apply joins them and hands them to the data plane (serving.h). */
static void apply_plan(worker_t *w, const mw_plan_t *plan)
{
    const mw_plan_worker_t *me = mw_plan_find_worker(plan, w->info.id);
    mw_reconcile_t d;
    if (mw_reconcile_diff(me ? plan : NULL, w->info.id, w->worlds, w->nworlds, &d) != MW_OK)
        return;
    for (size_t i = 0; i < d.ndestroy; i++)
        mw_log(MW_LOG_INFO, "worker", "world %s removed by plan %lld:%lld", d.destroy[i].name,
               (long long)plan->epoch, (long long)plan->version);
    for (size_t i = 0; i < d.ncreate; i++) {
        const mw_plan_world_t *pw = &d.create[i];
        int rank = 0;
        mw_plan_world_has(pw, w->info.id, &rank);
        mw_log(MW_LOG_INFO, "worker", "world %s assigned: rank %d of %d, backend %s, peer %s",
               pw->name, rank, pw->nmembers, pw->backend, pw->members[rank == 0 ? 1 : 0]);
    }
    mw_plan_world_t *next = calloc(d.nkeep + d.ncreate + 1, sizeof(*next));
    if (next != NULL) {
        memcpy(next, d.keep, d.nkeep * sizeof(*next));
        memcpy(next + d.nkeep, d.create, d.ncreate * sizeof(*next));
        free(w->worlds);
        w->worlds = next;
        w->nworlds = d.nkeep + d.ncreate;
    }
    if (d.ncreate + d.ndestroy > 0 || (me != NULL) != w->in_plan)
        mw_log(MW_LOG_INFO, "worker",
               "applied plan %lld:%lld: %s, %zu worlds (%zu new, %zu removed, %zu kept)",
               (long long)plan->epoch, (long long)plan->version, me ? "placed" : "not placed",
               w->nworlds, d.ncreate, d.ndestroy, d.nkeep);
    mw_serving_apply(w->serving, plan, &d);
    mw_reconcile_fini(&d);
    w->in_plan = me != NULL;
    if (me != NULL && me->draining && w->drain_version == 0) {
        w->drain_epoch = plan->epoch;
        w->drain_version = plan->version;
    } else if (me != NULL && !me->draining) {
        w->drain_version = 0; /* drained for a move, and serving again */
    }
    w->info.assigned_stage = me ? me->stage : -1;
    w->info.worlds_total = (int64_t)w->nworlds;
    w->info.plan_epoch = plan->epoch;
    w->info.plan_version = plan->version;
    if (me != NULL && w->info.state == MW_MEMBER_JOINING) {
        w->info.state = MW_MEMBER_READY;
        mw_log(MW_LOG_INFO, "worker", "ready: stage %d of pipeline %s", me->stage, me->pipeline);
    } else if (me == NULL && w->info.state == MW_MEMBER_READY) {
        w->info.state = MW_MEMBER_JOINING;
    }
}

static void check_plan(worker_t *w)
{
    int64_t e, v;
    if (mw_planstore_version(w->r, &e, &v) != MW_OK)
        return;
    if (e == 0 || !mw_reconcile_should_apply(w->seen_epoch, w->seen_version, e, v)) {
        if (e != 0 && (e != w->seen_epoch || v != w->seen_version) && e < w->seen_epoch)
            mw_log(MW_LOG_DEBUG, "worker", "ignoring plan %lld:%lld older than %lld:%lld",
                   (long long)e, (long long)v, (long long)w->seen_epoch,
                   (long long)w->seen_version);
        return;
    }
    char err[512];
    mw_plan_t *plan = NULL;
    int rc = mw_planstore_read(w->r, &plan, err, sizeof(err));
    if (rc == MW_EINVAL) {
        if (e != w->bad_epoch || v != w->bad_version) {
            mw_log(MW_LOG_ERROR, "worker", "ignoring malformed plan %lld:%lld: %s", (long long)e,
                   (long long)v, err);
            mw_events_add(w->r, w->cfg->events_maxlen, "bad_plan", "worker", w->info.id, "msg", err,
                          (const char *)NULL);
            w->bad_epoch = e;
            w->bad_version = v;
        }
        return;
    }
    if (rc != MW_OK || plan == NULL)
        return;
    if (mw_reconcile_should_apply(w->seen_epoch, w->seen_version, plan->epoch, plan->version)) {
        apply_plan(w, plan);
        w->seen_epoch = plan->epoch;
        w->seen_version = plan->version;
    }
    mw_plan_destroy(plan);
}

/* ---------------------------------------------------------------- liveness */

static void heartbeat(worker_t *w)
{
    int created = 0;
    int rc = mw_member_heartbeat(w->r, &w->info, w->cfg->events_maxlen, NULL, &created);
    if (rc != MW_OK) {
        if (!w->redis_down)
            mw_log(MW_LOG_WARN, "worker",
                   "heartbeat failed (%s): retrying with backoff, serving on current worlds",
                   mw_redis_errstr(w->r));
        w->redis_down = 1;
        sub_close(w);
        return;
    }
    if (w->redis_down)
        mw_log(MW_LOG_INFO, "worker", "Redis reachable again");
    w->redis_down = 0;
    if (created && w->registered) {
        /* Our keys were swept or Redis lost its data: we are a new member again, and
         * a fresh Redis starts its epochs over, so accept any plan from now on. */
        mw_log(MW_LOG_WARN, "worker", "re-registered %s: its keys had been removed", w->info.id);
        w->seen_epoch = w->seen_version = 0;
    } else if (created) {
        mw_log(MW_LOG_INFO, "worker", "registered %s: pipeline %s, stage %s, device %s", w->info.id,
               w->info.pipeline, w->cfg->worker_stage, w->info.device);
    }
    w->registered = 1;
    if (w->sub == NULL)
        sub_open(w);
}

/* The data plane's counters into the heartbeat's fields. */
static void refresh_stats(worker_t *w)
{
    mw_serving_stats_t st;
    mw_serving_stats(w->serving, &st);
    w->info.worlds_up = st.worlds_up;
    w->info.inflight = st.inflight;
    w->info.processed = st.processed;
    w->info.errors = st.errors;
    mw_serving_latency(w->serving, &w->info.latency_p50_us, &w->info.latency_p99_us);
    mw_serving_broken(w->serving, w->info.broken, sizeof(w->info.broken));
}

/* 1 when no coordinator holds the lease: no plan that shows us draining will come.
 * 0 while one does, or when Redis does not answer. */
static int no_coordinator(worker_t *w)
{
    char key[MW_KEY_MAX];
    redisReply *reply = NULL;
    if (mw_redis_cmd(w->r, &reply, "EXISTS %s",
                     mw_key(w->r, MW_KEY_COORDINATOR, key, sizeof(key))) != MW_OK)
        return 0;
    int none = reply->type == REDIS_REPLY_INTEGER && reply->integer == 0;
    freeReplyObject(reply);
    return none;
}

/* 1 once no peer routes new work to us: we are not planned, or every peer of our
 * worlds has applied a plan that shows us draining (or is gone), or no coordinator
 * runs to publish that plan: then peers learn of our leaving when our worlds close,
 * and replay what they send meanwhile, as after a failure. */
static int peers_stopped_routing(worker_t *w)
{
    if (!w->in_plan || no_coordinator(w))
        return 1;
    if (w->drain_version == 0)
        return 0;
    for (size_t i = 0; i < w->nworlds; i++) {
        for (int m = 0; m < w->worlds[i].nmembers; m++) {
            const char *peer = w->worlds[i].members[m];
            if (strcmp(peer, w->info.id) == 0)
                continue;
            char key[MW_KEY_MAX];
            redisReply *reply = NULL;
            if (mw_redis_cmd(w->r, &reply, "HMGET %s plan_epoch plan_version",
                             mw_key_worker(w->r, peer, key, sizeof(key))) != MW_OK)
                return 0;
            int done = 1; /* no hash: the peer is gone */
            if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
                reply->element[0]->type == REDIS_REPLY_STRING &&
                reply->element[1]->type == REDIS_REPLY_STRING) {
                long long e = atoll(reply->element[0]->str), v = atoll(reply->element[1]->str);
                done = e > w->drain_epoch || (e == w->drain_epoch && v >= w->drain_version);
            }
            freeReplyObject(reply);
            if (!done)
                return 0;
        }
    }
    return 1;
}

/* Growth of a counter since the last report; a data plane that was re-created
 * starts its counters over. */
static int64_t delta(int64_t now, int64_t before)
{
    return now >= before ? now - before : now;
}

/* The growth of a worker's counters into `stats:{pipeline}` in one step, so
 * that a reader never sees `results` grown and `errors` not yet.
 * KEYS[1] the totals hash; ARGV field, growth, field, growth ... */
static mw_redis_script_t totals_script = {
    "totals",
    "for i = 1, #ARGV, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end\n"
    "return 0\n",
    ""};

/* Data-plane activity into Redis (DESIGN §5), from the main thread so that the
 * engine never waits on Redis: the counters into `worker:{id}:stats` (expires
 * unless refreshed), their growth into `stats:{pipeline}`, and one coalesced
 * `replay`, `abort` and `dlq` event per kind and heartbeat when there was any. */
static void report_activity(worker_t *w)
{
    mw_serving_stats_t st;
    if (w->serving == NULL || w->redis_down)
        return;
    mw_serving_stats(w->serving, &st);
    const mw_serving_stats_t *b = &w->reported;
    char key[MW_KEY_MAX], totals[MW_KEY_MAX];
    mw_key_worker_stats(w->r, w->info.id, key, sizeof(key));
    mw_key_stats(w->r, w->info.pipeline, totals, sizeof(totals));
    redisReply *reply = NULL;
    if (mw_redis_cmd(w->r, &reply,
                     "HSET %s processed %lld rows %lld compute_us %lld results %lld errors %lld "
                     "replays %lld aborts %lld inflight %lld",
                     key, (long long)st.processed, (long long)st.rows, (long long)st.compute_us,
                     (long long)st.results, (long long)st.errors, (long long)st.replays,
                     (long long)st.aborts, (long long)st.inflight) != MW_OK)
        return;
    freeReplyObject(reply);
    int64_t ttl = 10 * w->cfg->heartbeat_ttl_ms;
    if (mw_redis_cmd(w->r, &reply, "PEXPIRE %s %lld", key, (long long)ttl) == MW_OK)
        freeReplyObject(reply);
    enum { NGREW = 6 };
    const struct {
        const char *field, *event, *what;
        int64_t n;
    } grew[NGREW] = {
        {"processed", NULL, NULL, delta(st.processed, b->processed)},
        {"rows", NULL, NULL, delta(st.rows, b->rows)},
        {"results", NULL, NULL, delta(st.results, b->results)},
        {"errors", "dlq", "request(s) answered with an error and copied to the DLQ",
         delta(st.errors, b->errors)},
        {"replays", "replay", "request(s) dispatched again after a failed attempt",
         delta(st.replays, b->replays)},
        {"aborts", "abort", "abort(s) sent upstream for requests on broken worlds",
         delta(st.aborts, b->aborts)},
    };
    const char *args[2 * NGREW];
    char num[NGREW][24];
    int nargs = 0;
    for (size_t i = 0; i < NGREW; i++) {
        if (grew[i].n <= 0)
            continue;
        snprintf(num[i], sizeof(num[i]), "%lld", (long long)grew[i].n);
        args[nargs++] = grew[i].field;
        args[nargs++] = num[i];
    }
    const char *keys[1] = {totals};
    if (nargs > 0 && mw_redis_eval(w->r, &totals_script, NULL, 1, keys, nargs, args, NULL) != MW_OK)
        return; /* the growth is reported again with the next heartbeat */
    for (size_t i = 0; i < NGREW; i++) {
        if (grew[i].n <= 0 || grew[i].event == NULL)
            continue;
        char msg[160];
        snprintf(msg, sizeof(msg), "%lld %s", (long long)grew[i].n, grew[i].what);
        mw_events_add(w->r, w->cfg->events_maxlen, grew[i].event, "worker", w->info.id, "msg", msg,
                      (const char *)NULL);
    }
    w->reported = st;
}

/* SIGTERM: draining (no new work; the plan stops routing to us), wait until every
 * peer applied that plan and no request is in flight here, then leave: keys
 * removed, `leave` event. Heartbeats and plans go on meanwhile. */
static void drain_and_leave(worker_t *w)
{
    mw_serving_drain(w->serving);
    refresh_stats(w);
    mw_log(MW_LOG_INFO, "worker", "draining: no new work, finishing %lld in-flight request(s)",
           (long long)w->info.inflight);
    w->info.state = MW_MEMBER_DRAINING;
    heartbeat(w);
    mw_events_add(w->r, w->cfg->events_maxlen, "drain", "worker", w->info.id, (const char *)NULL);
    int64_t deadline = mw_now_ms() + w->cfg->worker_drain_timeout_ms;
    int64_t next_beat = mw_now_ms() + w->cfg->heartbeat_interval_ms, quiet_since = -1;
    for (;;) {
        int64_t now = mw_now_ms();
        if (now >= deadline) {
            mw_log(MW_LOG_WARN, "worker",
                   "drain timed out after %lld ms: leaving with %lld request(s) in flight",
                   (long long)w->cfg->worker_drain_timeout_ms, (long long)w->info.inflight);
            break;
        }
        if (now >= next_beat) {
            heartbeat(w);
            report_activity(w);
            next_beat = now + w->cfg->heartbeat_interval_ms;
        }
        check_plan(w);
        refresh_stats(w);
        /* A request sent just before a peer applied the plan may still be on its
         * way: leave only after a short quiet period. */
        if (w->info.inflight > 0 || !peers_stopped_routing(w))
            quiet_since = -1;
        else if (quiet_since < 0)
            quiet_since = now;
        else if (now - quiet_since >= 100)
            break;
        sub_wait(w, 20);
    }
    mw_serving_destroy(w->serving); /* commits what is done, leaves the consumer group */
    w->serving = NULL;
    char key[MW_KEY_MAX];
    redisReply *reply = NULL;
    if (mw_redis_cmd(w->r, &reply, "DEL %s",
                     mw_key_worker_stats(w->r, w->info.id, key, sizeof(key))) == MW_OK)
        freeReplyObject(reply);
    int rc = mw_member_leave(w->r, w->info.id, "drained (SIGTERM)", w->cfg->events_maxlen);
    if (rc != MW_OK)
        mw_log(MW_LOG_WARN, "worker", "could not remove my keys (%s): the sweep will",
               mw_redis_errstr(w->r));
    w->info.state = MW_MEMBER_GONE;
    mw_log(MW_LOG_INFO, "worker", "left the cluster (%zu worlds closed)", w->nworlds);
}

/* ------------------------------------------------------------------- main */

static void usage(FILE *out)
{
    fprintf(out,
            "usage: mw-worker [--config=FILE] [--key=value ...] [--pipeline=P] [--stage=K|auto]\n"
            "                 [--id=ID] [--device=cpu|cuda:N] [--capacity=N]\n\n"
            "Runs one stage of one pipeline: registers in Redis, heartbeats, follows the\n"
            "coordinator's plan. SIGTERM drains and leaves. The short flags are aliases of\n"
            "worker.pipeline, worker.stage, worker.id, worker.device, worker.capacity.\n\n"
            "configuration keys:\n\n");
    mw_config_print_help(out, 0);
}

/* --stage K, --stage=K and friends: aliases of worker.* keys. */
static int apply_aliases(mw_config_t *cfg, int *argc, char **argv, char *err, size_t errsize)
{
    static const char *const names[][2] = {{"pipeline", "worker.pipeline"},
                                           {"stage", "worker.stage"},
                                           {"id", "worker.id"},
                                           {"device", "worker.device"},
                                           {"capacity", "worker.capacity"}};
    int out = 1;
    for (int i = 1; i < *argc; i++) {
        const char *a = argv[i];
        int matched = 0;
        for (size_t k = 0; k < sizeof(names) / sizeof(names[0]) && !matched; k++) {
            size_t n = strlen(names[k][0]);
            if (strncmp(a, "--", 2) != 0 || strncmp(a + 2, names[k][0], n) != 0)
                continue;
            const char *v = NULL;
            if (a[2 + n] == '=')
                v = a + 3 + n;
            else if (a[2 + n] == '\0' && i + 1 < *argc)
                v = argv[++i];
            else
                continue;
            matched = 1;
            int rc = mw_config_set(cfg, names[k][1], v, "flag", err, errsize);
            if (rc != MW_OK)
                return rc;
        }
        if (!matched)
            argv[out++] = argv[i];
    }
    *argc = out;
    return MW_OK;
}

int main(int argc, char **argv)
{
    char err[512];
    mw_config_t cfg;
    int rc = mw_program_start("mw-worker", &argc, argv, &cfg, usage);
    if (rc >= 0)
        return rc;
    rc = 2;
    worker_t w;
    memset(&w, 0, sizeof(w));
    w.cfg = &cfg;
    if (apply_aliases(&cfg, &argc, argv, err, sizeof(err)) != MW_OK) {
        fprintf(stderr, "mw-worker: %s\n", err);
        goto out_config;
    }
    if (argc > 1) {
        fprintf(stderr, "mw-worker: unexpected argument '%s' (--help for usage)\n", argv[1]);
        goto out_config;
    }

    mw_member_info_t *in = &w.info;
    if (cfg.worker_id[0] != '\0')
        snprintf(in->id, sizeof(in->id), "%s", cfg.worker_id);
    else
        mw_member_default_id(in->id, sizeof(in->id));
    if (!mw_plan_id_valid(in->id)) {
        fprintf(stderr, "mw-worker: invalid worker.id '%s': 1-63 characters of [A-Za-z0-9_.:-]\n",
                in->id);
        goto out_config;
    }
    if (!mw_pipeline_name_valid(cfg.worker_pipeline)) {
        fprintf(stderr,
                "mw-worker: worker.pipeline %s'%s': set --pipeline=NAME "
                "(1-47 characters of [A-Za-z0-9_.-])\n",
                cfg.worker_pipeline[0] ? "is invalid: " : "is missing", cfg.worker_pipeline);
        goto out_config;
    }
    if (mw_member_parse_stage(cfg.worker_stage, &in->stage) != MW_OK) {
        fprintf(stderr, "mw-worker: worker.stage '%s' must be auto or a stage number\n",
                cfg.worker_stage);
        goto out_config;
    }
    if (cfg.worker_device[0] == '\0' ||
        (strcmp(cfg.worker_device, "cpu") != 0 && strncmp(cfg.worker_device, "cuda", 4) != 0)) {
        fprintf(stderr, "mw-worker: worker.device '%s' must be cpu or cuda:N\n", cfg.worker_device);
        goto out_config;
    }
    snprintf(in->pipeline, sizeof(in->pipeline), "%s", cfg.worker_pipeline);
    snprintf(in->device, sizeof(in->device), "%s", cfg.worker_device);
    snprintf(in->backends, sizeof(in->backends), "%s", MW_SERVING_BACKENDS);
    gethostname(in->host, sizeof(in->host) - 1);
    in->pid = (int64_t)getpid();
    in->capacity = cfg.worker_capacity;
    in->state = MW_MEMBER_JOINING;
    in->assigned_stage = -1;

    mw_program_on_stop(on_signal);

    w.r = mw_redis_new(&cfg, 1, err, sizeof(err));
    if (w.r == NULL) {
        fprintf(stderr, "mw-worker: %s\n", err);
        goto out_config;
    }
    if (mw_serving_new(&cfg, in->id, &w.serving, err, sizeof(err)) != MW_OK) {
        fprintf(stderr, "mw-worker: %s\n", err);
        mw_redis_destroy(w.r);
        goto out_config;
    }
    mw_key(w.r, MW_KEY_PLAN_NOTIFY, w.channel, sizeof(w.channel));
    mw_log(MW_LOG_INFO, "worker",
           "%s starting: pipeline %s, stage %s, device %s, heartbeat %lld ms", in->id, in->pipeline,
           cfg.worker_stage, in->device, (long long)cfg.heartbeat_interval_ms);

    int64_t next_beat = 0;
    while (!stop_requested) {
        int notice = 0;
        if (mw_now_ms() >= next_beat) {
            next_beat = mw_now_ms() + cfg.heartbeat_interval_ms;
            if (mw_serving_error(w.serving, err, sizeof(err)) != MW_OK) {
                mw_log(MW_LOG_ERROR, "worker", "data plane failed: %s; exiting", err);
                break;
            }
            refresh_stats(&w);
            heartbeat(&w);
            report_activity(&w);
            notice = 1; /* poll the plan at every heartbeat too, in case a notice was missed */
        }
        if (notice && !w.redis_down)
            check_plan(&w);
        if (sub_wait(&w, next_beat - mw_now_ms()) && !w.redis_down)
            check_plan(&w);
    }
    rc = stop_requested ? 0 : 1;
    drain_and_leave(&w);

    sub_close(&w);
    free(w.worlds);
    mw_redis_destroy(w.r);
out_config:
    mw_config_fini(&cfg);
    return rc;
}
