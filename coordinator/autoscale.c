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

/* The published desired counts of pipeline p into counts: 1 when every stage has one. */
static int read_desired(mw_redis_t *r, const mw_pipeline_spec_t *ps, int *counts, int *rc)
{
    char key[MW_KEY_MAX];
    redisReply *reply = NULL;
    *rc = mw_redis_cmd(r, &reply, "HGETALL %s", mw_key_desired(r, ps->name, key, sizeof(key)));
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

/* desired:{P}, fenced: a deposed leader's decision is not published. */
static int write_desired(mw_autoscale_t *a, mw_redis_t *r, const mw_pipeline_spec_t *ps,
                         const int *desired)
{
    char key[MW_KEY_MAX];
    char text[2 * MW_PIPELINE_MAX_STAGES][16];
    const char *fields[2 * MW_PIPELINE_MAX_STAGES];
    for (int s = 0; s < ps->nstages; s++) {
        snprintf(text[2 * s], sizeof(text[0]), "%d", s);
        snprintf(text[2 * s + 1], sizeof(text[0]), "%d", desired[s]);
        fields[2 * s] = text[2 * s];
        fields[2 * s + 1] = text[2 * s + 1];
    }
    return mw_lease_hset(a->lease, mw_key_desired(r, ps->name, key, sizeof(key)), ps->nstages,
                         fields);
}

static void decide(mw_autoscale_t *a, mw_redis_t *r, size_t p, int64_t now)
{
    const mw_pipeline_spec_t *ps = &a->spec->items[p];
    const mw_pipeline_load_t *pl = mw_load_get(a->load, p);
    mw_scale_state_t *st = &a->state[p];
    if (!st->initialized) {
        int counts[MW_PIPELINE_MAX_STAGES] = {0}, rc;
        if (!read_desired(r, ps, counts, &rc)) {
            if (rc != MW_OK)
                return;
            for (int s = 0; s < ps->nstages; s++)
                counts[s] = pl->stages[s].workers;
        }
        mw_scale_init(st, ps, counts);
        if (write_desired(a, r, ps, st->desired) != MW_OK)
            st->initialized = 0;
        return;
    }
    mw_scale_decision_t d = mw_scale_decide(st, ps, pl, &a->opt, now);
    if (d.action == MW_SCALE_NONE)
        return;
    const char *type = d.action == MW_SCALE_OUT ? "scale_out" : "scale_in";
    char stage[16], from[16], to[16], msg[256];
    snprintf(stage, sizeof(stage), "%d", d.stage);
    snprintf(from, sizeof(from), "%d", d.from);
    snprintf(to, sizeof(to), "%d", d.to);
    snprintf(msg, sizeof(msg), "stage=%d from %d to %d: %s", d.stage, d.from, d.to, d.reason);
    if (write_desired(a, r, ps, st->desired) != MW_OK) {
        st->desired[d.stage] = d.from; /* not published: decide again next time */
        return;
    }
    mw_log(MW_LOG_INFO, "coordinator", "%s %s %s", ps->name, type, msg);
    mw_events_add(r, a->cfg->events_maxlen, type, "pipeline", ps->name, "stage", stage, "from",
                  from, "to", to, "msg", msg, (const char *)NULL);
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
