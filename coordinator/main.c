/* mw-coordinator: lease, sweep, read workers, plan, publish; standbys wait their turn. */
#include "clock.h"
#include "program.h"
#include "autoscale.h"
#include "config.h"
#include "err.h"
#include "cluster/events.h"
#include "cluster/keys.h"
#include "history.h"
#include "lease.h"
#include "log.h"
#include "cluster/membership.h"
#include "cluster/pipeline.h"
#include "plan.h"
#include "cluster/planstore.h"
#include "redis.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void sleep_ms(int64_t ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    nanosleep(&ts, NULL); /* a signal ends it early: stop is checked at once */
}

/* Problems already reported, so that a bad worker hash is logged once, not every loop. */
typedef struct seen {
    char (*keys)[256];
    size_t n, cap;
    size_t *mark; /* generation each key was last seen in */
} seen_t;

/* 1 when key is new (report it); keeps keys seen in this generation only. */
static int seen_first(seen_t *s, const char *key, size_t gen)
{
    for (size_t i = 0; i < s->n; i++) {
        if (strcmp(s->keys[i], key) == 0) {
            s->mark[i] = gen;
            return 0;
        }
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        char(*k)[256] = realloc(s->keys, cap * sizeof(*k));
        if (k == NULL)
            return 1;
        s->keys = k;
        size_t *m = realloc(s->mark, cap * sizeof(*m));
        if (m == NULL)
            return 1;
        s->mark = m;
        s->cap = cap;
    }
    snprintf(s->keys[s->n], sizeof(s->keys[0]), "%s", key);
    s->mark[s->n++] = gen;
    return 1;
}

static void seen_forget_old(seen_t *s, size_t gen)
{
    size_t j = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (s->mark[i] == gen) {
            memmove(s->keys[j], s->keys[i], sizeof(s->keys[0]));
            s->mark[j++] = gen;
        }
    }
    s->n = j;
}

typedef struct coord {
    mw_config_t *cfg;
    mw_redis_t *r;
    mw_lease_t *lease;
    mw_pipelines_t spec;
    mw_history_t *history;
    mw_autoscale_t *autoscale;
    mw_plan_t *prev; /* last plan published or read (the planner's previous plan) */
    int have_prev;   /* prev is current for this leadership */
    int64_t version; /* version of prev */
    seen_t reported;
    size_t gen;
    int redis_down;
    int64_t sweep_after_ms; /* after an outage, workers get one ttl to heartbeat again */
} coord_t;

static void report(coord_t *c, const char *worker, const char *type, const char *msg)
{
    char key[256];
    snprintf(key, sizeof(key), "%s|%s|%s", type, worker, msg);
    if (!seen_first(&c->reported, key, c->gen))
        return;
    mw_log(MW_LOG_WARN, "coordinator", "%s %s: %s", type, worker, msg);
    mw_events_add(c->r, c->cfg->events_maxlen, type, "worker", worker, "msg", msg,
                  (const char *)NULL);
}

/* On taking over: continue from the published plan, so that worlds keep their names. */
static void load_published(coord_t *c)
{
    char err[512];
    mw_plan_t *plan = NULL;
    int rc = mw_planstore_read(c->r, &plan, err, sizeof(err));
    mw_plan_destroy(c->prev);
    c->prev = NULL;
    c->version = 0;
    if (rc == MW_EINVAL) {
        mw_log(MW_LOG_ERROR, "coordinator",
               "the published plan is malformed (%s); planning from scratch", err);
        mw_events_add(c->r, c->cfg->events_maxlen, "bad_plan", "msg", err, (const char *)NULL);
    } else if (rc != MW_OK) {
        return; /* Redis trouble: try again next loop */
    } else if (plan != NULL) {
        c->prev = plan;
        c->version = plan->version;
        mw_log(MW_LOG_INFO, "coordinator", "continuing from plan epoch %lld version %lld",
               (long long)plan->epoch, (long long)plan->version);
    }
    c->have_prev = 1;
}

static void count_changes(const mw_plan_t *a, const mw_plan_t *b, size_t *added, size_t *removed)
{
    *added = *removed = 0;
    for (size_t i = 0; b != NULL && i < b->nworlds; i++)
        *added += mw_plan_find_world(a, b->worlds[i].name) == NULL;
    for (size_t i = 0; a != NULL && i < a->nworlds; i++)
        *removed += mw_plan_find_world(b, a->worlds[i].name) == NULL;
}

/* One leader iteration: sweep, read, measure load and scale, plan, publish when changed. */
static void lead_once(coord_t *c)
{
    char err[512];
    char(*expired)[64] = NULL;
    size_t nexp = 0;
    int rc = MW_OK;
    if (mw_now_ms() >= c->sweep_after_ms)
        rc = mw_lease_sweep(c->lease, c->cfg->heartbeat_ttl_ms, &expired, &nexp);
    if (rc == MW_EFENCED) {
        mw_lease_step_down(c->lease, "fenced during the sweep");
        return;
    }
    for (size_t i = 0; i < nexp; i++)
        mw_log(MW_LOG_WARN, "coordinator",
               "worker %s expired: no heartbeat for over %lld ms; removed", expired[i],
               (long long)c->cfg->heartbeat_ttl_ms);
    free(expired);
    if (rc != MW_OK)
        return;

    mw_member_record_t *recs = NULL;
    size_t n = 0;
    if (mw_member_read_all(c->r, &recs, &n, NULL) != MW_OK)
        return;
    mw_plan_member_t *members = calloc(n + 1, sizeof(*members));
    size_t nm = 0;
    if (members == NULL) {
        free(recs);
        return;
    }
    c->gen++;
    for (size_t i = 0; i < n; i++) {
        if (recs[i].invalid[0] != '\0')
            report(c, recs[i].info.id, "reject", recs[i].invalid);
        else
            mw_member_to_plan(&recs[i], &members[nm++]);
    }
    mw_autoscale_tick(c->autoscale, c->r, recs, n);
    free(recs);

    /* Auto workers follow the autoscaling decision (README, Autoscaling). */
    int *want = calloc(c->spec.count * MW_PIPELINE_MAX_STAGES + 1, sizeof(*want));
    for (size_t p = 0; want != NULL && p < c->spec.count; p++)
        if (!mw_autoscale_auto_want(c->autoscale, p, &want[p * MW_PIPELINE_MAX_STAGES]))
            want[p * MW_PIPELINE_MAX_STAGES] = -1;
    mw_plan_options_t opt = {.max_fanout = (int)c->cfg->plan_max_fanout, .auto_want = want};
    mw_plan_t *plan = NULL;
    rc = mw_plan_compute(&c->spec, members, nm, c->prev, &opt, &plan, err, sizeof(err));
    free(members);
    free(want);
    if (rc != MW_OK) {
        mw_log(MW_LOG_ERROR, "coordinator", "%s", err);
        return;
    }
    for (size_t i = 0; i < plan->nrejected; i++)
        report(c, plan->rejected[i].id, "reject", plan->rejected[i].reason);
    seen_forget_old(&c->reported, c->gen);

    if (c->prev != NULL && mw_plan_same(c->prev, plan) &&
        c->prev->epoch == mw_lease_epoch(c->lease)) {
        mw_plan_destroy(plan);
        return;
    }
    plan->epoch = mw_lease_epoch(c->lease);
    plan->version = c->version + 1;
    /* New and re-issued worlds: their members join under this version (README, Worlds). */
    for (size_t i = 0; i < plan->nworlds; i++) {
        if (plan->worlds[i].gen != 0)
            continue;
        plan->worlds[i].gen = plan->version;
        if (mw_plan_find_world(c->prev, plan->worlds[i].name) != NULL)
            mw_log(MW_LOG_INFO, "coordinator", "world %s reported broken: issued again as gen %lld",
                   plan->worlds[i].name, (long long)plan->version);
    }
    char *json = mw_plan_encode(plan);
    size_t added, removed;
    count_changes(c->prev, plan, &added, &removed);
    char summary[256];
    snprintf(summary, sizeof(summary), "%zu workers, %zu worlds (+%zu -%zu)", plan->nworkers,
             plan->nworlds, added, removed);
    rc = json ? mw_lease_publish(c->lease, json, plan->version, summary) : MW_ENOMEM;
    free(json);
    if (rc == MW_OK) {
        mw_log(MW_LOG_INFO, "coordinator", "published plan epoch %lld version %lld: %s",
               (long long)plan->epoch, (long long)plan->version, summary);
        for (size_t p = 0; p < plan->npipelines; p++)
            if (!plan->pipelines[p].complete)
                mw_log(MW_LOG_WARN, "coordinator",
                       "pipeline %s is incomplete: a stage has no live worker",
                       plan->pipelines[p].spec.name);
        mw_plan_destroy(c->prev);
        c->prev = plan;
        c->version = plan->version;
        return;
    }
    mw_plan_destroy(plan);
    if (rc == MW_EFENCED)
        mw_lease_step_down(c->lease, mw_redis_errstr(c->r));
    else
        mw_log(MW_LOG_WARN, "coordinator", "publishing the plan failed: %s", mw_redis_errstr(c->r));
}

static void usage(FILE *out)
{
    fprintf(out, "usage: mw-coordinator [--config=FILE] [--key=value ...]\n\n"
                 "Watches worker membership in Redis and publishes the world plan. Run one or\n"
                 "more: one leads (Redis lease, fencing epoch), the others stand by.\n\n"
                 "configuration keys:\n\n");
    mw_config_print_help(out, 0);
}

int main(int argc, char **argv)
{
    char err[512];
    mw_config_t cfg;
    int rc = mw_program_start("mw-coordinator", &argc, argv, &cfg, usage);
    if (rc >= 0)
        return rc;
    rc = 2;
    coord_t c;
    memset(&c, 0, sizeof(c));
    c.cfg = &cfg;
    if (argc > 1) {
        fprintf(stderr, "mw-coordinator: unexpected argument '%s' (--help for usage)\n", argv[1]);
        goto out_config;
    }
    if (mw_pipelines_parse(cfg.pipeline_spec, &c.spec, err, sizeof(err)) != MW_OK) {
        fprintf(stderr, "mw-coordinator: invalid pipeline.spec: %s\n", err);
        goto out_config;
    }
    if (cfg.coordinator_interval_ms * 2 > cfg.coordinator_lease_ms)
        mw_log(MW_LOG_WARN, "coordinator",
               "coordinator.interval_ms %lld is over half of coordinator.lease_ms %lld: the "
               "lease may lapse between renewals",
               (long long)cfg.coordinator_interval_ms, (long long)cfg.coordinator_lease_ms);

    mw_program_on_stop(on_signal);

    char id[MW_PLAN_ID_MAX];
    mw_member_default_id(id, sizeof(id));
    c.r = mw_redis_new(&cfg, 1, err, sizeof(err));
    c.lease = c.r ? mw_lease_new(c.r, id, cfg.coordinator_lease_ms, cfg.events_maxlen) : NULL;
    c.history = mw_history_new(&cfg, &c.spec);
    c.autoscale = c.history && c.lease ? mw_autoscale_new(&cfg, &c.spec, c.history, c.lease) : NULL;
    if (c.r == NULL || c.lease == NULL || c.autoscale == NULL) {
        fprintf(stderr, "mw-coordinator: %s\n", c.r ? "out of memory" : err);
        goto out_spec;
    }
    mw_log(MW_LOG_INFO, "coordinator",
           "%s starting: %zu pipeline(s), lease %lld ms, heartbeat ttl %lld ms, fanout %lld", id,
           c.spec.count, (long long)cfg.coordinator_lease_ms, (long long)cfg.heartbeat_ttl_ms,
           (long long)cfg.plan_max_fanout);

    int was_leader = 0;
    int64_t next_sample_ms = 0;
    char last_holder[64] = "";
    while (!stop_requested) {
        int64_t t0 = mw_now_ms();
        int lead = mw_lease_tick(c.lease);
        if (lead < 0) {
            if (!c.redis_down)
                mw_log(MW_LOG_WARN, "coordinator",
                       "Redis unreachable (%s); retrying with backoff, planning paused",
                       mw_redis_errstr(c.r));
            c.redis_down = 1;
        } else {
            if (c.redis_down) {
                /* Workers could not heartbeat either: give them one ttl before sweeping,
                 * or a Redis restart would expire every worker and rebuild every world. */
                c.sweep_after_ms = mw_now_ms() + cfg.heartbeat_ttl_ms + cfg.heartbeat_interval_ms;
                mw_log(MW_LOG_INFO, "coordinator",
                       "Redis reachable again; resuming (sweep paused for %lld ms)",
                       (long long)(cfg.heartbeat_ttl_ms + cfg.heartbeat_interval_ms));
            }
            c.redis_down = 0;
        }
        if (lead == 1) {
            if (!was_leader) {
                c.have_prev = 0;
                mw_autoscale_reset(c.autoscale);
            }
            if (!c.have_prev)
                load_published(&c);
            if (c.have_prev)
                lead_once(&c);
            if (mw_now_ms() >= next_sample_ms) {
                mw_history_sample(c.history, c.r);
                next_sample_ms = mw_now_ms() + 1000;
            }
        } else if (lead == 0 && strcmp(last_holder, mw_lease_holder(c.lease)) != 0) {
            snprintf(last_holder, sizeof(last_holder), "%s", mw_lease_holder(c.lease));
            mw_log(MW_LOG_INFO, "coordinator", "standing by: %s leads with epoch %lld", last_holder,
                   (long long)mw_lease_epoch(c.lease));
        }
        was_leader = mw_lease_is_leader(c.lease);
        if (was_leader)
            last_holder[0] = '\0'; /* log the next leader when this one steps down */
        sleep_ms(t0 + cfg.coordinator_interval_ms - mw_now_ms());
    }
    mw_log(MW_LOG_INFO, "coordinator", "stopping%s",
           mw_lease_is_leader(c.lease) ? ": releasing the lease" : "");
    mw_lease_release(c.lease);
    rc = 0;

    mw_plan_destroy(c.prev);
    free(c.reported.keys);
    free(c.reported.mark);
out_spec:
    mw_autoscale_destroy(c.autoscale);
    mw_history_destroy(c.history);
    mw_lease_destroy(c.lease);
    mw_redis_destroy(c.r);
    mw_pipelines_fini(&c.spec);
out_config:
    mw_config_fini(&cfg);
    return rc;
}
