/* The leader's autoscaling loop (autoscale.h). */
#include "autoscale.h"

#include "clock.h"
#include "cluster/events.h"
#include "cluster/keys.h"
#include "err.h"
#include "load.h"
#include "log.h"
#include "scale.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Load samples per window: enough for a trend, few enough to stay cheap. */
#define SAMPLES_PER_WINDOW 16

struct mw_autoscale {
    const mw_config_t *cfg;
    const mw_pipelines_t *spec;
    mw_history_t *history;
    mw_lease_t *lease;
    mw_load_t *load;
    mw_scale_state_t *state; /* per pipeline */
    mw_scale_options_t opt;
    int64_t *lag; /* per pipeline, for mw_load_sample */
    int64_t next_sample_ms, next_decision_ms;
};

mw_autoscale_t *mw_autoscale_new(const mw_config_t *cfg, const mw_pipelines_t *spec,
                                 mw_history_t *history, mw_lease_t *lease)
{
    mw_autoscale_t *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return NULL;
    a->cfg = cfg;
    a->spec = spec;
    a->history = history;
    a->lease = lease;
    a->load = mw_load_new(spec, cfg->autoscale_window_ms);
    a->state = calloc(spec->count + 1, sizeof(*a->state));
    a->lag = calloc(spec->count + 1, sizeof(*a->lag));
    if (a->load == NULL || a->state == NULL || a->lag == NULL) {
        mw_autoscale_destroy(a);
        return NULL;
    }
    a->opt = (mw_scale_options_t){
        .busy_high = (double)cfg->autoscale_busy_high_pct / 100.0,
        .busy_low = (double)cfg->autoscale_busy_low_pct / 100.0,
        .lag_min = cfg->autoscale_lag_min,
        .cooldown_ms = cfg->autoscale_cooldown_ms,
        .scale_in_after_ms = cfg->autoscale_scale_in_after_ms,
    };
    return a;
}

void mw_autoscale_destroy(mw_autoscale_t *a)
{
    if (a == NULL)
        return;
    mw_load_destroy(a->load);
    free(a->state);
    free(a->lag);
    free(a);
}

void mw_autoscale_reset(mw_autoscale_t *a)
{
    for (size_t p = 0; p < a->spec->count; p++)
        a->state[p].initialized = 0;
    a->next_decision_ms = 0;
}

/* A published per-stage hash (desired:{P} or auto:{P}) of pipeline ps into
 * counts: 1 when every stage has a count. */
static int read_counts(mw_redis_t *r, const char *key, const mw_pipeline_spec_t *ps, int *counts,
                       int *rc)
{
    redisReply *reply = NULL;
    *rc = mw_redis_cmd(r, &reply, "HGETALL %s", key);
    if (*rc != MW_OK)
        return 0;
    int found = 0;
    for (size_t i = 0; reply->type == REDIS_REPLY_ARRAY && i + 1 < reply->elements; i += 2) {
        const char *f = reply->element[i]->str, *v = reply->element[i + 1]->str;
        char *end;
        long s = f ? strtol(f, &end, 10) : -1;
        if (f == NULL || v == NULL || *end != '\0' || s < 0 || s >= ps->nstages)
            continue;
        counts[s] = atoi(v);
        found++;
    }
    freeReplyObject(reply);
    return found == ps->nstages;
}

/* desired:{P} and auto:{P} in one fenced step (agents read both at once): a
 * deposed leader's decision is not published. */
static int write_desired(mw_autoscale_t *a, mw_redis_t *r, const mw_pipeline_spec_t *ps,
                         const mw_scale_state_t *st)
{
    char desired[MW_KEY_MAX], autos[MW_KEY_MAX];
    char text[4 * MW_PIPELINE_MAX_STAGES][16];
    const char *fields[4 * MW_PIPELINE_MAX_STAGES];
    const char *keys[2] = {mw_key_desired(r, ps->name, desired, sizeof(desired)),
                           mw_key_auto(r, ps->name, autos, sizeof(autos))};
    int nfields[2] = {ps->nstages, ps->nstages};
    for (int k = 0, f = 0; k < 2; k++) {
        for (int s = 0; s < ps->nstages; s++, f += 2) {
            snprintf(text[f], sizeof(text[0]), "%d", s);
            snprintf(text[f + 1], sizeof(text[0]), "%d", k == 0 ? st->desired[s] : st->autos[s]);
            fields[f] = text[f];
            fields[f + 1] = text[f + 1];
        }
    }
    return mw_lease_hset(a->lease, 2, keys, nfields, fields);
}

/* The event and log line of decision d. */
static void report(mw_autoscale_t *a, mw_redis_t *r, const mw_pipeline_spec_t *ps,
                   const mw_scale_decision_t *d)
{
    char stage[16], from[16], to[16], msg[256];
    snprintf(stage, sizeof(stage), "%d", d->stage);
    if (d->action == MW_SCALE_MOVE) {
        snprintf(from, sizeof(from), "%d", d->donor);
        snprintf(msg, sizeof(msg), "stage=%d to stage=%d: %s", d->donor, d->stage, d->reason);
        mw_log(MW_LOG_INFO, "coordinator", "%s move %s", ps->name, msg);
        mw_events_add(r, a->cfg->events_maxlen, "move", "pipeline", ps->name, "from_stage", from,
                      "to_stage", stage, "msg", msg, (const char *)NULL);
        return;
    }
    const char *type = d->action == MW_SCALE_OUT ? "scale_out" : "scale_in";
    snprintf(from, sizeof(from), "%d", d->from);
    snprintf(to, sizeof(to), "%d", d->to);
    snprintf(msg, sizeof(msg), "stage=%d from %d to %d: %s", d->stage, d->from, d->to, d->reason);
    mw_log(MW_LOG_INFO, "coordinator", "%s %s %s", ps->name, type, msg);
    mw_events_add(r, a->cfg->events_maxlen, type, "pipeline", ps->name, "stage", stage, "from",
                  from, "to", to, "msg", msg, (const char *)NULL);
}

static void decide(mw_autoscale_t *a, mw_redis_t *r, size_t p, int64_t now)
{
    const mw_pipeline_spec_t *ps = &a->spec->items[p];
    const mw_pipeline_load_t *pl = mw_load_get(a->load, p);
    mw_scale_state_t *st = &a->state[p];
    if (!st->initialized) {
        int counts[MW_PIPELINE_MAX_STAGES] = {0}, autos[MW_PIPELINE_MAX_STAGES] = {0}, rc;
        char key[MW_KEY_MAX];
        if (!read_counts(r, mw_key_desired(r, ps->name, key, sizeof(key)), ps, counts, &rc)) {
            if (rc != MW_OK)
                return;
            for (int s = 0; s < ps->nstages; s++)
                counts[s] = pl->stages[s].workers;
        }
        if (!read_counts(r, mw_key_auto(r, ps->name, key, sizeof(key)), ps, autos, &rc)) {
            if (rc != MW_OK)
                return;
            for (int s = 0; s < ps->nstages; s++)
                autos[s] = pl->stages[s].autos;
        }
        mw_scale_init(st, ps, counts, autos);
        if (write_desired(a, r, ps, st) != MW_OK)
            st->initialized = 0;
        return;
    }
    mw_scale_state_t before = *st;
    mw_scale_decision_t d = mw_scale_decide(st, ps, pl, &a->opt, now);
    if (memcmp(before.desired, st->desired, sizeof(st->desired)) == 0 &&
        memcmp(before.autos, st->autos, sizeof(st->autos)) == 0)
        return;
    if (write_desired(a, r, ps, st) != MW_OK) {
        *st = before; /* not published: decide again next time */
        return;
    }
    if (d.action != MW_SCALE_NONE)
        report(a, r, ps, &d);
}

int mw_autoscale_auto_want(const mw_autoscale_t *a, size_t p, int *want)
{
    const mw_scale_state_t *st = &a->state[p];
    if (!st->initialized)
        return 0;
    memcpy(want, st->autos, sizeof(st->autos));
    return 1;
}

void mw_autoscale_tick(mw_autoscale_t *a, mw_redis_t *r, const mw_member_record_t *recs, size_t n)
{
    int64_t now = mw_now_ms();
    if (now < a->next_sample_ms)
        return;
    a->next_sample_ms = now + a->cfg->autoscale_window_ms / SAMPLES_PER_WINDOW;
    for (size_t p = 0; p < a->spec->count; p++)
        a->lag[p] = mw_history_lag(a->history, p);
    if (mw_load_sample(a->load, r, recs, n, a->lag, now) != MW_OK)
        return;
    for (size_t p = 0; p < a->spec->count; p++)
        mw_load_publish(a->load, r, p, now);
    if (now < a->next_decision_ms)
        return;
    a->next_decision_ms = now + a->cfg->autoscale_interval_ms;
    for (size_t p = 0; p < a->spec->count; p++)
        decide(a, r, p, now);
}
