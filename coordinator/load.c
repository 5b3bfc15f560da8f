/* Measured load per pipeline and stage (load.h). */
#include "load.h"

#include "cluster/keys.h"
#include "err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Samples kept per series; mw_load_sample is called about 16 times a window. */
#define SERIES_MAX 32

/* A counter or gauge over time: the newest SERIES_MAX samples. */
typedef struct series {
    int64_t t[SERIES_MAX], v[SERIES_MAX];
    int n, head; /* head: index of the oldest */
} series_t;

static void series_push(series_t *s, int64_t t, int64_t v)
{
    if (s->n == SERIES_MAX) {
        s->t[s->head] = t;
        s->v[s->head] = v;
        s->head = (s->head + 1) % SERIES_MAX;
        return;
    }
    int i = (s->head + s->n++) % SERIES_MAX;
    s->t[i] = t;
    s->v[i] = v;
}

static int64_t series_last(const series_t *s)
{
    return s->v[(s->head + s->n - 1) % SERIES_MAX];
}

/* Growth per second between the oldest sample within window_ms of the newest
 * and the newest; 0 when there are not two such samples. *ok says which. */
static double series_rate(const series_t *s, int64_t window_ms, int *ok)
{
    *ok = 0;
    if (s->n < 2)
        return 0;
    int last = (s->head + s->n - 1) % SERIES_MAX;
    for (int k = 0; k < s->n - 1; k++) {
        int i = (s->head + k) % SERIES_MAX;
        if (s->t[last] - s->t[i] > window_ms)
            continue;
        if (s->t[last] == s->t[i])
            return 0;
        *ok = 1;
        return (double)(s->v[last] - s->v[i]) * 1000.0 / (double)(s->t[last] - s->t[i]);
    }
    return 0;
}

typedef struct tracked {
    char id[MW_PLAN_ID_MAX];
    series_t compute; /* compute_us */
    size_t gen;       /* the sample it was last seen in */
} tracked_t;

struct mw_load {
    const mw_pipelines_t *spec;
    int64_t window_ms;
    mw_pipeline_load_t *now; /* per pipeline */
    series_t *lag;           /* per pipeline */
    tracked_t *workers;
    size_t nworkers, cap;
    size_t gen;
};

mw_load_t *mw_load_new(const mw_pipelines_t *spec, int64_t window_ms)
{
    mw_load_t *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return NULL;
    l->spec = spec;
    l->window_ms = window_ms;
    l->now = calloc(spec->count + 1, sizeof(*l->now));
    l->lag = calloc(spec->count + 1, sizeof(*l->lag));
    if (l->now == NULL || l->lag == NULL) {
        mw_load_destroy(l);
        return NULL;
    }
    for (size_t p = 0; p < spec->count; p++) {
        l->now[p].nstages = spec->items[p].nstages;
        l->now[p].lag = -1;
    }
    return l;
}

void mw_load_destroy(mw_load_t *l)
{
    if (l == NULL)
        return;
    free(l->now);
    free(l->lag);
    free(l->workers);
    free(l);
}

const mw_pipeline_load_t *mw_load_get(const mw_load_t *l, size_t p)
{
    return &l->now[p];
}

static tracked_t *track(mw_load_t *l, const char *id)
{
    for (size_t i = 0; i < l->nworkers; i++)
        if (strcmp(l->workers[i].id, id) == 0)
            return &l->workers[i];
    if (l->nworkers == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        tracked_t *w = realloc(l->workers, cap * sizeof(*w));
        if (w == NULL)
            return NULL;
        l->workers = w;
        l->cap = cap;
    }
    tracked_t *t = &l->workers[l->nworkers++];
    memset(t, 0, sizeof(*t));
    snprintf(t->id, sizeof(t->id), "%s", id);
    return t;
}

static void forget_gone(mw_load_t *l)
{
    size_t j = 0;
    for (size_t i = 0; i < l->nworkers; i++)
        if (l->workers[i].gen == l->gen)
            l->workers[j++] = l->workers[i];
    l->nworkers = j;
}

/* The compute_us counter of worker id's stats hash: 1 with *v, 0 when absent. */
static int read_compute(mw_redis_t *r, const char *id, int64_t *v, int *rc)
{
    char key[MW_KEY_MAX];
    redisReply *reply = NULL;
    *rc =
        mw_redis_cmd(r, &reply, "HGET %s compute_us", mw_key_worker_stats(r, id, key, sizeof(key)));
    if (*rc != MW_OK)
        return 0;
    int have = reply->type == REDIS_REPLY_STRING;
    if (have)
        *v = strtoll(reply->str, NULL, 10);
    freeReplyObject(reply);
    return have;
}

int mw_load_sample(mw_load_t *l, mw_redis_t *r, const mw_member_record_t *recs, size_t n,
                   const int64_t *lag, int64_t now_ms)
{
    l->gen++;
    double *busy_sum = calloc(l->spec->count * MW_PIPELINE_MAX_STAGES + 1, sizeof(*busy_sum));
    if (busy_sum == NULL)
        return MW_ENOMEM;
    for (size_t p = 0; p < l->spec->count; p++) {
        mw_pipeline_load_t *pl = &l->now[p];
        memset(pl->stages, 0, sizeof(pl->stages));
        pl->p99_us = 0;
        pl->lag = lag[p];
        if (lag[p] >= 0)
            series_push(&l->lag[p], now_ms, lag[p]);
        int ok;
        pl->lag_rate = series_rate(&l->lag[p], l->window_ms, &ok);
    }
    int rc = MW_OK;
    for (size_t i = 0; i < n; i++) {
        const mw_member_info_t *info = &recs[i].info;
        const mw_pipeline_spec_t *ps = mw_pipelines_find(l->spec, info->pipeline);
        int stage = info->assigned_stage >= 0 ? info->assigned_stage : info->stage;
        if (recs[i].invalid[0] != '\0' || ps == NULL || stage < 0 || stage >= ps->nstages ||
            info->state == MW_MEMBER_DRAINING)
            continue;
        size_t p = (size_t)(ps - l->spec->items);
        mw_pipeline_load_t *pl = &l->now[p];
        mw_stage_load_t *st = &pl->stages[stage];
        st->workers++;
        st->autos += info->stage == MW_PLAN_STAGE_AUTO;
        st->queued += info->inflight;
        if (info->latency_p99_us > pl->p99_us)
            pl->p99_us = info->latency_p99_us;
        int64_t v;
        tracked_t *t = track(l, info->id);
        if (t == NULL || !read_compute(r, info->id, &v, &rc)) {
            if (rc != MW_OK)
                break;
            continue;
        }
        t->gen = l->gen;
        if (t->compute.n > 0 && v < series_last(&t->compute))
            memset(&t->compute, 0, sizeof(t->compute)); /* a new data plane counts anew */
        series_push(&t->compute, now_ms, v);
        int ok;
        double busy = series_rate(&t->compute, l->window_ms, &ok) / 1e6;
        if (!ok)
            continue;
        busy_sum[p * MW_PIPELINE_MAX_STAGES + (size_t)stage] += busy > 1 ? 1 : busy < 0 ? 0 : busy;
        st->measured++;
    }
    for (size_t p = 0; p < l->spec->count; p++)
        for (int s = 0; s < l->now[p].nstages; s++)
            if (l->now[p].stages[s].measured > 0)
                l->now[p].stages[s].busy =
                    busy_sum[p * MW_PIPELINE_MAX_STAGES + (size_t)s] / l->now[p].stages[s].measured;
    free(busy_sum);
    if (rc == MW_OK)
        forget_gone(l); /* after a Redis error the workers not read are not gone */
    return rc;
}

int mw_load_publish(const mw_load_t *l, mw_redis_t *r, size_t p, int64_t at_ms)
{
    const mw_pipeline_load_t *pl = &l->now[p];
    char key[MW_KEY_MAX];
    /* 6 pipeline fields and 3 per stage, each a name and a value. */
    enum { FIELD_MAX = 32 };
    char text[2 * (6 + 3 * MW_PIPELINE_MAX_STAGES)][FIELD_MAX];
    const char *argv[2 + 2 * (6 + 3 * MW_PIPELINE_MAX_STAGES)];
    int argc = 0, f = 0;
    argv[argc++] = "HSET";
    argv[argc++] = mw_key_load(r, l->spec->items[p].name, key, sizeof(key));
#define FIELD(name_fmt, name_arg, val_fmt, val)                                                    \
    do {                                                                                           \
        snprintf(text[f], FIELD_MAX, name_fmt, name_arg);                                          \
        argv[argc++] = text[f++];                                                                  \
        snprintf(text[f], FIELD_MAX, val_fmt, val);                                                \
        argv[argc++] = text[f++];                                                                  \
    } while (0)
    FIELD("%s", "at_ms", "%lld", (long long)at_ms);
    FIELD("%s", "stages", "%d", pl->nstages);
    FIELD("%s", "lag", "%lld", (long long)pl->lag);
    FIELD("%s", "lag_rate", "%.1f", pl->lag_rate);
    FIELD("%s", "p99_us", "%lld", (long long)pl->p99_us);
    FIELD("%s", "slo_ms", "%lld", (long long)l->spec->items[p].slo_ms);
    for (int s = 0; s < pl->nstages; s++) {
        FIELD("%d.workers", s, "%d", pl->stages[s].workers);
        FIELD("%d.busy", s, "%.3f", pl->stages[s].busy);
        FIELD("%d.queued", s, "%lld", (long long)pl->stages[s].queued);
    }
#undef FIELD
    return mw_redis_argv(r, NULL, argc, argv, NULL);
}
