/* A worker's serving side: worlds joined per the plan, handed to the data plane. */
#include "serving.h"

#include "dataplane.h"
#include "err.h"
#include "log.h"
#include "world/world.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAC "serving"

typedef struct sv_world {
    struct sv_world *next;
    char name[MW_PLAN_WORLD_NAME_MAX];
    mw_world_t *w; /* NULL when the join failed at once */
    int64_t gen;   /* incarnation, as the plan issued it */
    char peer[MW_PLAN_ID_MAX];
    int rank;
    int host; /* a TCP world: the data plane moves host buffers only */
} sv_world_t;

struct mw_serving {
    const mw_config_t *cfg_src; /* borrowed */
    char id[MW_PLAN_ID_MAX];
    mw_worlds_t *ctx;
    sv_world_t *worlds;
    mw_dataplane_t *dp;
    int stage; /* of dp */
    int draining;
};

int mw_serving_new(const mw_config_t *cfg, const char *worker_id, mw_serving_t **out, char *errstr,
                   size_t errstr_size)
{
    mw_serving_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return mw_errf(MW_ENOMEM, errstr, errstr_size, "out of memory");
    s->cfg_src = cfg;
    snprintf(s->id, sizeof(s->id), "%s", worker_id);
    s->stage = -1;
    mw_world_options_t wo;
    mw_world_options_from_config(cfg, &wo);
    s->ctx = mw_worlds_new(&wo, errstr, errstr_size);
    if (s->ctx == NULL) {
        free(s);
        return MW_EIO;
    }
    mw_log(MW_LOG_INFO, FAC, "worlds listen on %s", mw_worlds_address(s->ctx));
    *out = s;
    return MW_OK;
}

static void world_drop(mw_serving_t *s, sv_world_t *sw)
{
    if (sw->w == NULL)
        ; /* its join failed: nothing to leave */
    else if (s->dp != NULL && sw->host)
        mw_dataplane_world_removed(s->dp, sw->w); /* destroys it */
    else
        mw_world_destroy(sw->w);
    free(sw);
}

void mw_serving_destroy(mw_serving_t *s)
{
    if (s == NULL)
        return;
    mw_dataplane_destroy(s->dp);
    s->dp = NULL;
    while (s->worlds != NULL) {
        sv_world_t *sw = s->worlds;
        s->worlds = sw->next;
        world_drop(s, sw);
    }
    mw_worlds_destroy(s->ctx);
    free(s);
}

static int peer_stage(const mw_plan_t *plan, const char *peer)
{
    const mw_plan_worker_t *pw = mw_plan_find_worker(plan, peer);
    return pw != NULL ? pw->stage : -1;
}

/* Creates the data plane for the plan's placement of this worker, and hands it
 * every world already joined. */
static void dataplane_start(mw_serving_t *s, const mw_plan_t *plan)
{
    char err[512];
    mw_dataplane_opts_t opts;
    int rc =
        mw_dataplane_opts_from_plan(plan, s->id, s->cfg_src->model_path, &opts, err, sizeof(err));
    opts.worlds = s->ctx;
    if (rc != MW_OK || mw_dataplane_new(s->cfg_src, &opts, &s->dp, err, sizeof(err)) != MW_OK) {
        mw_log(MW_LOG_ERROR, FAC, "cannot serve: %s", err);
        s->dp = NULL;
        return;
    }
    s->stage = opts.stage;
    if (s->draining)
        mw_dataplane_drain(s->dp);
    for (sv_world_t *sw = s->worlds; sw != NULL; sw = sw->next)
        if (sw->host && sw->w != NULL)
            mw_dataplane_world_added(s->dp, sw->w, sw->peer, peer_stage(plan, sw->peer), sw->rank);
}

void mw_serving_apply(mw_serving_t *s, const mw_plan_t *plan, const mw_reconcile_t *d)
{
    char err[512];
    const mw_plan_worker_t *me = mw_plan_find_worker(plan, s->id);
    for (size_t i = 0; i < d->ndestroy; i++) {
        for (sv_world_t **pp = &s->worlds; *pp != NULL; pp = &(*pp)->next) {
            if (strcmp((*pp)->name, d->destroy[i].name) == 0) {
                sv_world_t *sw = *pp;
                *pp = sw->next;
                world_drop(s, sw);
                break;
            }
        }
    }
    if (s->dp != NULL && (me == NULL || me->stage != s->stage)) {
        mw_log(MW_LOG_INFO, FAC, "stage %d no longer mine: stopping its data plane", s->stage);
        mw_dataplane_destroy(s->dp); /* worlds stay ours: handed to the next one */
        s->dp = NULL;
        s->stage = -1;
    }
    for (size_t i = 0; i < d->ncreate; i++) {
        const mw_plan_world_t *pw = &d->create[i];
        int rank = -1;
        if (!mw_plan_world_has(pw, s->id, &rank) || pw->nmembers != 2)
            continue;
        sv_world_t *sw = calloc(1, sizeof(*sw));
        if (sw == NULL)
            continue;
        snprintf(sw->name, sizeof(sw->name), "%s", pw->name);
        snprintf(sw->peer, sizeof(sw->peer), "%s", pw->members[1 - rank]);
        sw->rank = rank;
        sw->gen = pw->gen;
        sw->host = strcmp(pw->backend, "tcp") == 0;
        if (!sw->host)
            mw_log(MW_LOG_WARN, FAC,
                   "world %s is %s: joined, but the data plane only uses %s worlds", pw->name,
                   pw->backend, MW_SERVING_BACKENDS);
        /* Both ends take the epoch from the plan's world, so a re-issued world
         * (new gen) is a new incarnation with its own rendezvous. */
        mw_world_opts_t o = {.name = pw->name,
                             .epoch = pw->gen != 0 ? pw->gen : plan->epoch,
                             .size = pw->nmembers,
                             .rank = rank,
                             .backend = pw->backend,
                             .device = 0};
        sw->next = s->worlds;
        s->worlds = sw; /* kept even when the join fails: reported broken, issued again */
        if (mw_world_join(s->ctx, &o, &sw->w, err, sizeof(err)) != MW_OK) {
            mw_log(MW_LOG_WARN, FAC, "cannot join world %s: %s", pw->name, err);
            sw->w = NULL;
            continue;
        }
        if (s->dp != NULL && sw->host)
            mw_dataplane_world_added(s->dp, sw->w, sw->peer, peer_stage(plan, sw->peer), rank);
    }
    if (s->dp == NULL && me != NULL)
        dataplane_start(s, plan);
    if (s->dp != NULL)
        mw_dataplane_set_routes(s->dp, plan);
}

void mw_serving_drain(mw_serving_t *s)
{
    s->draining = 1;
    if (s->dp != NULL)
        mw_dataplane_drain(s->dp);
}

void mw_serving_stats(mw_serving_t *s, mw_serving_stats_t *stats)
{
    memset(stats, 0, sizeof(*stats));
    for (sv_world_t *sw = s->worlds; sw != NULL; sw = sw->next)
        stats->worlds_up += sw->w != NULL && mw_world_state(sw->w) == MW_WORLD_READY;
    if (s->dp != NULL) {
        mw_dataplane_stats_t d;
        mw_dataplane_stats(s->dp, &d);
        stats->inflight = d.inflight;
        stats->processed = d.processed;
        stats->rows = d.rows;
        stats->compute_us = d.compute_us;
        stats->errors = d.errors;
        stats->replays = d.replays;
        stats->results = d.results;
        stats->aborts = d.aborts;
    }
}

void mw_serving_latency(mw_serving_t *s, int64_t *p50_us, int64_t *p99_us)
{
    *p50_us = *p99_us = 0;
    if (s->dp != NULL)
        mw_dataplane_latency(s->dp, p50_us, p99_us);
}

void mw_serving_broken(mw_serving_t *s, char *buf, size_t size)
{
    size_t len = 0;
    buf[0] = '\0';
    for (sv_world_t *sw = s->worlds; sw != NULL; sw = sw->next) {
        mw_world_state_t st = sw->w != NULL ? mw_world_state(sw->w) : MW_WORLD_BROKEN;
        if (st != MW_WORLD_BROKEN && st != MW_WORLD_CLOSED)
            continue;
        int n = snprintf(buf + len, size - len, "%s%s@%lld", len > 0 ? " " : "", sw->name,
                         (long long)sw->gen);
        if (n < 0 || (size_t)n >= size - len) {
            buf[len] = '\0'; /* the rest is reported once these are issued again */
            break;
        }
        len += (size_t)n;
    }
}

int mw_serving_error(mw_serving_t *s, char *errstr, size_t errstr_size)
{
    return s->dp != NULL ? mw_dataplane_error(s->dp, errstr, errstr_size) : 0;
}
