/* mwctl dashboard: Prometheus metrics (/metrics), the cluster state as JSON
 * (/api/status) and a live page (/) over HTTP (libmicrohttpd), read from Redis
 * (the snapshot of `mwctl status`, the history streams) and Kafka metadata (lag).
 * Nothing a client sends is written anywhere. */
#include "mwctl.h"

#include "topics/lag.h"
#include "snapshot.h"

#include "err.h"
#include "cluster/keys.h"

#include <microhttpd.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dashboard_html.h" /* dashboard_html[]: ops/mwctl/dashboard.html, generated */

#define DASH_EVENTS         30
#define DASH_HISTORY        300         /* samples charted: five minutes at one a second */
#define DASH_LAG_MAX_AGE_MS 1000        /* Kafka is asked at most once a second per pipeline */
#define DASH_CONN_TIMEOUT_S 10          /* a client idle this long is cut off (slowloris) */
#define DASH_CONN_MEMORY    (32 * 1024) /* per connection: a larger request head gets 431 */
#define DASH_CONN_LIMIT     64

typedef struct dash {
    const mw_config_t *cfg;
    mw_redis_t *r;
    mw_lag_t *lag;
} dash_t;

/* What a page or a scrape shows of one plan pipeline besides the snapshot. */
typedef struct view_pipeline {
    mw_partition_lag_t *lag;
    size_t nlag;
    char lag_error[256];
    cJSON *history; /* [{ms, results_per_s, errors_per_s, replays_per_s}]; NULL: not read */
    int desired[MW_PIPELINE_MAX_STAGES]; /* desired:{P} per stage, -1 when not published */
} view_pipeline_t;

typedef struct view {
    int redis_up;
    char redis_error[256];
    mwctl_snapshot_t s;
    view_pipeline_t *pipes; /* one per plan pipeline; NULL when out of memory */
} view_t;

static void view_free(view_t *v)
{
    for (size_t p = 0; v->pipes != NULL && p < v->s.plan->npipelines; p++) {
        free(v->pipes[p].lag);
        cJSON_Delete(v->pipes[p].history);
    }
    free(v->pipes);
    mwctl_snapshot_free(&v->s);
}

/* The last DASH_HISTORY samples of history:{pipeline} as rates between
 * consecutive samples (the stream holds the totals at each sample). */
static cJSON *read_history(mw_redis_t *r, const char *pipeline)
{
    char key[MW_KEY_MAX];
    redisReply *reply = NULL;
    cJSON *points = cJSON_CreateArray();
    if (points == NULL ||
        mw_redis_cmd(r, &reply, "XREVRANGE %s + - COUNT %d",
                     mw_key_history(r, pipeline, key, sizeof(key)), DASH_HISTORY + 1) != MW_OK)
        return points;
    double prev[4] = {0};
    for (size_t k = reply->type == REDIS_REPLY_ARRAY ? reply->elements : 0; k-- > 0;) {
        const redisReply *e = reply->element[k];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
            e->element[0]->type != REDIS_REPLY_STRING || e->element[1]->type != REDIS_REPLY_ARRAY)
            continue;
        double cur[4] = {(double)strtoll(e->element[0]->str, NULL, 10), 0, 0, 0};
        const redisReply *f = e->element[1];
        for (size_t i = 0; i + 1 < f->elements; i += 2) {
            static const char *const fields[] = {"results", "errors", "replays"};
            for (int j = 0; j < 3 && f->element[i]->type == REDIS_REPLY_STRING &&
                            f->element[i + 1]->type == REDIS_REPLY_STRING;
                 j++)
                if (strcmp(f->element[i]->str, fields[j]) == 0)
                    cur[j + 1] = (double)strtoll(f->element[i + 1]->str, NULL, 10);
        }
        double dt = (cur[0] - prev[0]) / 1000.0;
        cJSON *pt = prev[0] > 0 && dt > 0 ? cJSON_CreateObject() : NULL;
        if (pt != NULL) {
            cJSON_AddNumberToObject(pt, "ms", cur[0]);
            /* totals restart from 0 when the stats hash was lost: no negative rates */
            cJSON_AddNumberToObject(pt, "results_per_s",
                                    cur[1] >= prev[1] ? (cur[1] - prev[1]) / dt : 0);
            cJSON_AddNumberToObject(pt, "errors_per_s",
                                    cur[2] >= prev[2] ? (cur[2] - prev[2]) / dt : 0);
            cJSON_AddNumberToObject(pt, "replays_per_s",
                                    cur[3] >= prev[3] ? (cur[3] - prev[3]) / dt : 0);
            cJSON_AddItemToArray(points, pt);
        }
        memcpy(prev, cur, sizeof(prev));
    }
    freeReplyObject(reply);
    return points;
}

/* desired:{pipeline} (README, Autoscaling) into desired[stage]; -1 where absent. */
static void read_desired(mw_redis_t *r, const char *pipeline, int *desired)
{
    char key[MW_KEY_MAX];
    redisReply *reply = NULL;
    for (int s = 0; s < MW_PIPELINE_MAX_STAGES; s++)
        desired[s] = -1;
    if (mw_redis_cmd(r, &reply, "HGETALL %s", mw_key_desired(r, pipeline, key, sizeof(key))) !=
        MW_OK)
        return;
    for (size_t i = 0; reply->type == REDIS_REPLY_ARRAY && i + 1 < reply->elements; i += 2) {
        int s = atoi(reply->element[i]->str);
        if (s >= 0 && s < MW_PIPELINE_MAX_STAGES)
            desired[s] = atoi(reply->element[i + 1]->str);
    }
    freeReplyObject(reply);
}

/* Reads everything a page or a scrape shows. v->redis_up 0 when Redis failed. */
static void view_read(dash_t *d, view_t *v, int with_history)
{
    memset(v, 0, sizeof(*v));
    if (mwctl_snapshot_take(d->r, DASH_EVENTS, &v->s) != MW_OK) {
        snprintf(v->redis_error, sizeof(v->redis_error), "%s", mw_redis_errstr(d->r));
        return;
    }
    v->redis_up = 1;
    if (v->s.plan == NULL)
        return;
    v->pipes = calloc(v->s.plan->npipelines + 1, sizeof(*v->pipes));
    for (size_t p = 0; v->pipes != NULL && p < v->s.plan->npipelines; p++) {
        view_pipeline_t *vp = &v->pipes[p];
        const char *name = v->s.plan->pipelines[p].spec.name;
        mw_lag_read(d->lag, name, DASH_LAG_MAX_AGE_MS, &vp->lag, &vp->nlag, vp->lag_error,
                    sizeof(vp->lag_error));
        read_desired(d->r, name, vp->desired);
        if (with_history)
            vp->history = read_history(d->r, name);
    }
}

/* ---------------------------------------------------------------- /metrics */

/* s with \, " and newline escaped for a label value. */
static const char *esc(const char *s, char *buf, size_t size)
{
    size_t o = 0;
    for (; *s != '\0' && o + 3 < size; s++) {
        if (*s == '\\' || *s == '"' || *s == '\n')
            buf[o++] = '\\';
        buf[o++] = *s == '\n' ? 'n' : *s;
    }
    buf[o] = '\0';
    return buf;
}

/* Prints HELP and TYPE unless the previous family printed was this one. */
static void family(FILE *f, const char **last, const char *name, const char *type, const char *help)
{
    if (*last != NULL && strcmp(*last, name) == 0)
        return;
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    *last = name;
}

/* Per-worker series: rows of one name are one family (extra: a label of the row). */
enum {
    WM_UP,
    WM_STATE_JOINING,
    WM_STATE_READY,
    WM_STATE_DRAINING,
    WM_HEARTBEAT_AGE,
    WM_WORLDS_UP,
    WM_WORLDS,
    WM_INFLIGHT,
    WM_OK,
    WM_ERRORS,
    WM_REPLAYS,
    WM_ABORTS,
    WM_DLQ,
    WM_CALLS,
    WM_ROWS,
    WM_P50,
    WM_P99,
};
static const struct {
    const char *name, *type, *extra, *help;
} worker_metrics[] = {
    [WM_UP] = {"mwserve_worker_up", "gauge", NULL,
               "1 while the worker's last heartbeat is within heartbeat.ttl_ms"},
    [WM_STATE_JOINING] = {"mwserve_worker_state", "gauge", "state=\"joining\"",
                          "1 for the worker's current state"},
    [WM_STATE_READY] = {"mwserve_worker_state", "gauge", "state=\"ready\"", NULL},
    [WM_STATE_DRAINING] = {"mwserve_worker_state", "gauge", "state=\"draining\"", NULL},
    [WM_HEARTBEAT_AGE] = {"mwserve_worker_heartbeat_age_seconds", "gauge", NULL,
                          "time since the worker's last heartbeat (Redis server time)"},
    [WM_WORLDS_UP] = {"mwserve_worker_worlds_up", "gauge", NULL, "the worker's worlds that are up"},
    [WM_WORLDS] = {"mwserve_worker_worlds", "gauge", NULL, "worlds of the worker in the plan"},
    [WM_INFLIGHT] = {"mwserve_worker_inflight", "gauge", NULL,
                     "origins: requests consumed and not yet committed; others: batches held"},
    [WM_OK] = {"mwserve_requests_total", "counter", "status=\"ok\"",
               "results committed by this origin, by status"},
    [WM_ERRORS] = {"mwserve_requests_total", "counter", "status=\"error\"", NULL},
    [WM_REPLAYS] = {"mwserve_replays_total", "counter", NULL,
                    "requests this origin dispatched again after a failed attempt"},
    [WM_ABORTS] = {"mwserve_aborts_total", "counter", NULL,
                   "aborts this worker sent upstream for batches on broken worlds"},
    [WM_DLQ] = {"mwserve_dlq_records_total", "counter", NULL,
                "error results this origin copied to P.dlq"},
    [WM_CALLS] = {"mwserve_stage_calls_total", "counter", NULL,
                  "batches this worker computed (one stage call each)"},
    [WM_ROWS] = {"mwserve_batch_rows_total", "counter", NULL,
                 "rows in those batches: rate(rows) / rate(calls) is the mean batch"},
    [WM_P50] = {"mwserve_latency_seconds", "summary", "quantile=\"0.5\"",
                "origins: consume to result of the ok results committed in the last 10 s"},
    [WM_P99] = {"mwserve_latency_seconds", "summary", "quantile=\"0.99\"", NULL},
};

/* Worker i's value of metric m into *out; 0 when it has none. */
static int worker_value(const dash_t *d, const view_t *v, size_t i, int m, double *out)
{
    const mw_member_record_t *w = &v->s.workers[i];
    const mwctl_counters_t *c = &v->s.worker_stats[i];
    double age_ms = (double)(v->s.now_ms - w->heartbeat_ms);
    switch (m) {
    case WM_UP:
        *out = age_ms <= (double)d->cfg->heartbeat_ttl_ms;
        return 1;
    case WM_STATE_JOINING:
    case WM_STATE_READY:
    case WM_STATE_DRAINING:
        *out = (int)w->info.state == m - WM_STATE_JOINING + MW_MEMBER_JOINING;
        return 1;
    case WM_HEARTBEAT_AGE:
        *out = age_ms / 1000.0;
        return 1;
    case WM_WORLDS_UP:
        *out = (double)w->info.worlds_up;
        return 1;
    case WM_WORLDS:
        *out = (double)mwctl_snapshot_worlds_of(&v->s, w->info.id);
        return 1;
    case WM_INFLIGHT:
        *out = (double)w->info.inflight;
        return 1;
    case WM_P50:
    case WM_P99:
        *out = (double)(m == WM_P50 ? w->info.latency_p50_us : w->info.latency_p99_us) / 1e6;
        return w->info.latency_p99_us > 0;
    default:
        break;
    }
    if (!c->present)
        return 0;
    const int64_t values[] = {[WM_OK] = c->results - c->errors,
                              [WM_ERRORS] = c->errors,
                              [WM_REPLAYS] = c->replays,
                              [WM_ABORTS] = c->aborts,
                              [WM_DLQ] = c->errors,
                              [WM_CALLS] = c->processed,
                              [WM_ROWS] = c->rows};
    *out = (double)values[m];
    return 1;
}

static void write_worker_metrics(const dash_t *d, const view_t *v, FILE *f, const char **last)
{
    char cl[128], pl[128], wk[192], stage[16];
    esc(d->cfg->cluster, cl, sizeof(cl));
    for (int m = 0; m < (int)(sizeof(worker_metrics) / sizeof(worker_metrics[0])); m++) {
        for (size_t i = 0; i < v->s.nworkers; i++) {
            const mw_member_record_t *w = &v->s.workers[i];
            double value;
            if (!worker_value(d, v, i, m, &value))
                continue;
            const char *help = worker_metrics[m].help;
            for (int k = m; help == NULL && k > 0; k--)
                help = worker_metrics[k - 1].help;
            family(f, last, worker_metrics[m].name, worker_metrics[m].type, help);
            if (w->info.assigned_stage >= 0)
                snprintf(stage, sizeof(stage), "%d", w->info.assigned_stage);
            else
                snprintf(stage, sizeof(stage), "none");
            fprintf(f, "%s{cluster=\"%s\",pipeline=\"%s\",stage=\"%s\",worker=\"%s\"%s%s} %.10g\n",
                    worker_metrics[m].name, cl, esc(w->info.pipeline, pl, sizeof(pl)), stage,
                    esc(w->info.id, wk, sizeof(wk)), worker_metrics[m].extra ? "," : "",
                    worker_metrics[m].extra ? worker_metrics[m].extra : "", value);
        }
    }
}

static void write_pipeline_metrics(const dash_t *d, const view_t *v, FILE *f, const char **last)
{
    static const struct {
        const char *name, *help;
        size_t offset;
    } totals[] = {
        {"mwserve_pipeline_results_total", "results committed, ok and error (stats:{P})",
         offsetof(mwctl_counters_t, results)},
        {"mwserve_pipeline_error_results_total", "error results, each with a DLQ copy",
         offsetof(mwctl_counters_t, errors)},
        {"mwserve_pipeline_replays_total", "requests dispatched again",
         offsetof(mwctl_counters_t, replays)},
        {"mwserve_pipeline_aborts_total", "aborts sent upstream",
         offsetof(mwctl_counters_t, aborts)},
        {"mwserve_pipeline_stage_calls_total", "batches computed, all stages",
         offsetof(mwctl_counters_t, processed)},
        {"mwserve_pipeline_batch_rows_total", "rows in those batches",
         offsetof(mwctl_counters_t, rows)},
    };
    const mw_plan_t *plan = v->s.plan;
    size_t np = plan != NULL ? plan->npipelines : 0;
    char cl[128], pl[128];
    esc(d->cfg->cluster, cl, sizeof(cl));
    for (size_t p = 0; p < np; p++) {
        family(f, last, "mwserve_pipeline_complete", "gauge",
               "1 when every stage of the pipeline has a live worker");
        fprintf(f, "mwserve_pipeline_complete{cluster=\"%s\",pipeline=\"%s\"} %d\n", cl,
                esc(plan->pipelines[p].spec.name, pl, sizeof(pl)), plan->pipelines[p].complete);
    }
    for (size_t p = 0; p < np; p++) {
        const mw_plan_pipeline_t *pp = &plan->pipelines[p];
        esc(pp->spec.name, pl, sizeof(pl));
        for (int k = 0; k < pp->spec.nstages; k++) {
            family(f, last, "mwserve_stage_workers", "gauge",
                   "live (not draining) workers of the stage in the plan");
            fprintf(f, "mwserve_stage_workers{cluster=\"%s\",pipeline=\"%s\",stage=\"%d\"} %d\n",
                    cl, pl, k, mwctl_snapshot_stage_workers(&v->s, pp->spec.name, k));
        }
    }
    for (size_t p = 0; v->pipes != NULL && p < np; p++) {
        const mw_plan_pipeline_t *pp = &plan->pipelines[p];
        esc(pp->spec.name, pl, sizeof(pl));
        for (int k = 0; k < pp->spec.nstages; k++) {
            if (v->pipes[p].desired[k] < 0)
                continue;
            family(f, last, "mwserve_stage_desired_workers", "gauge",
                   "workers the leading coordinator wants at the stage (desired:{P}): the target "
                   "for mw-agent or an external scaler");
            fprintf(f,
                    "mwserve_stage_desired_workers{cluster=\"%s\",pipeline=\"%s\",stage=\"%d\"} "
                    "%d\n",
                    cl, pl, k, v->pipes[p].desired[k]);
        }
    }
    for (size_t t = 0; t < sizeof(totals) / sizeof(totals[0]); t++) {
        for (size_t p = 0; p < np; p++) {
            const mwctl_counters_t *c = &v->s.pipeline_stats[p];
            if (!c->present)
                continue;
            family(f, last, totals[t].name, "counter", totals[t].help);
            fprintf(f, "%s{cluster=\"%s\",pipeline=\"%s\"} %lld\n", totals[t].name, cl,
                    esc(plan->pipelines[p].spec.name, pl, sizeof(pl)),
                    (long long)*(const int64_t *)((const char *)c + totals[t].offset));
        }
    }
    for (size_t p = 0; v->pipes != NULL && p < np; p++) {
        const view_pipeline_t *vp = &v->pipes[p];
        esc(plan->pipelines[p].spec.name, pl, sizeof(pl));
        for (size_t i = 0; i < vp->nlag; i++) {
            family(f, last, "mwserve_kafka_consumer_lag", "gauge",
                   "records of P.requests not yet committed by group mw.P (high watermark - "
                   "committed offset), per partition");
            fprintf(f,
                    "mwserve_kafka_consumer_lag{cluster=\"%s\",pipeline=\"%s\",partition=\"%d\"} "
                    "%lld\n",
                    cl, pl, vp->lag[i].partition, (long long)vp->lag[i].lag);
        }
    }
}

static void write_cluster_metrics(const dash_t *d, const view_t *v, FILE *f, const char **last)
{
    char cl[128], id[128];
    esc(d->cfg->cluster, cl, sizeof(cl));
    for (size_t i = 0; i < v->s.ncoords; i++) {
        if (v->s.now_ms - v->s.coord_seen[i] >= 10000)
            continue; /* gone: mwctl status counts standbys seen in the last 10 s too */
        family(f, last, "mwserve_coordinator_leader", "gauge",
               "1 for the coordinator holding the lease, 0 for standbys seen in the last 10 s");
        fprintf(f, "mwserve_coordinator_leader{cluster=\"%s\",coordinator=\"%s\"} %d\n", cl,
                esc(v->s.coords[i], id, sizeof(id)), strcmp(v->s.coords[i], v->s.leader) == 0);
    }
    family(f, last, "mwserve_coordinator_epoch", "gauge", "the fencing epoch (+1 per takeover)");
    fprintf(f, "mwserve_coordinator_epoch{cluster=\"%s\"} %lld\n", cl, (long long)v->s.epoch);
    family(f, last, "mwserve_coordinator_lease_held", "gauge",
           "1 while a coordinator holds the lease");
    fprintf(f, "mwserve_coordinator_lease_held{cluster=\"%s\"} %d\n", cl, v->s.leader[0] != '\0');
    if (v->s.plan != NULL) {
        family(f, last, "mwserve_plan_version", "gauge", "version of the published plan");
        fprintf(f, "mwserve_plan_version{cluster=\"%s\"} %lld\n", cl,
                (long long)v->s.plan->version);
    }
}

/* The Prometheus text exposition (format 0.0.4) of v; caller frees. */
static char *metrics_text(const dash_t *d, const view_t *v, size_t *len)
{
    char *buf = NULL;
    FILE *f = open_memstream(&buf, len);
    if (f == NULL)
        return NULL;
    const char *last = NULL;
    char cl[128];
    family(f, &last, "mwserve_redis_up", "gauge", "1 when the last read of Redis succeeded");
    fprintf(f, "mwserve_redis_up{cluster=\"%s\"} %d\n", esc(d->cfg->cluster, cl, sizeof(cl)),
            v->redis_up);
    if (v->redis_up) {
        write_cluster_metrics(d, v, f, &last);
        write_pipeline_metrics(d, v, f, &last);
        write_worker_metrics(d, v, f, &last);
    }
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* ------------------------------------------------------------- /api/status */

/* `mwctl status --json` plus, per pipeline, lag and history; the page's data. */
static char *status_text(const dash_t *d, view_t *v, size_t *len)
{
    cJSON *root = v->redis_up ? mwctl_snapshot_json(d->cfg, &v->s) : cJSON_CreateObject();
    if (root == NULL)
        return NULL;
    cJSON_AddBoolToObject(root, "redis_up", v->redis_up);
    cJSON_AddNumberToObject(root, "heartbeat_ttl_ms", (double)d->cfg->heartbeat_ttl_ms);
    if (!v->redis_up) {
        cJSON_AddStringToObject(root, "cluster", d->cfg->cluster);
        cJSON_AddStringToObject(root, "redis_error", v->redis_error);
    }
    cJSON *pipes = cJSON_GetObjectItem(root, "pipelines");
    for (int p = 0; v->pipes != NULL && p < cJSON_GetArraySize(pipes); p++) {
        view_pipeline_t *vp = &v->pipes[p];
        cJSON *jp = cJSON_GetArrayItem(pipes, p);
        cJSON *lag = cJSON_AddArrayToObject(jp, "lag");
        for (size_t i = 0; i < vp->nlag; i++) {
            const mw_partition_lag_t *l = &vp->lag[i];
            cJSON *jl = cJSON_CreateObject();
            cJSON_AddNumberToObject(jl, "partition", l->partition);
            cJSON_AddNumberToObject(jl, "committed", (double)l->committed);
            cJSON_AddNumberToObject(jl, "high_watermark", (double)l->high);
            cJSON_AddNumberToObject(jl, "lag", (double)l->lag);
            cJSON_AddItemToArray(lag, jl);
        }
        if (vp->lag_error[0])
            cJSON_AddStringToObject(jp, "lag_error", vp->lag_error);
        cJSON_AddItemToObject(jp, "history", vp->history ? vp->history : cJSON_CreateArray());
        vp->history = NULL; /* now owned by root */
    }
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    *len = text ? strlen(text) : 0;
    return text;
}

/* ------------------------------------------------------------------- HTTP */

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *type,
                             void *body, size_t len, enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, mode);
    if (resp == NULL) {
        if (mode == MHD_RESPMEM_MUST_FREE)
            free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    enum MHD_Result rc = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result reply_text(struct MHD_Connection *conn, unsigned status, const char *text)
{
    return reply(conn, status, "text/plain; charset=utf-8", (void *)text, strlen(text),
                 MHD_RESPMEM_PERSISTENT);
}

/* One request: GET or HEAD of /, /metrics or /api/status. Runs on libmicrohttpd's
 * one polling thread, so d's Redis and Kafka handles are used by one thread. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    (void)version;
    (void)upload;
    (void)upload_size;
    (void)con_cls;
    /* Answered at the first call, before any body is read: libmicrohttpd then
     * closes the connection instead of reading a body nobody wants. */
    dash_t *d = cls;
    int page = strcmp(url, "/") == 0, metrics = strcmp(url, "/metrics") == 0,
        status = strcmp(url, "/api/status") == 0;
    if (!page && !metrics && !status)
        return reply_text(conn, MHD_HTTP_NOT_FOUND, "not found: try /, /metrics or /api/status\n");
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return reply_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET and HEAD\n");
    if (page)
        return reply(conn, MHD_HTTP_OK, "text/html; charset=utf-8", (void *)dashboard_html,
                     sizeof(dashboard_html), MHD_RESPMEM_PERSISTENT);
    view_t v;
    view_read(d, &v, status);
    size_t len = 0;
    char *body = metrics ? metrics_text(d, &v, &len) : status_text(d, &v, &len);
    view_free(&v);
    if (body == NULL)
        return reply_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    return reply(conn, status && !v.redis_up ? MHD_HTTP_SERVICE_UNAVAILABLE : MHD_HTTP_OK,
                 metrics ? "text/plain; version=0.0.4; charset=utf-8" : "application/json", body,
                 len, MHD_RESPMEM_MUST_FREE);
}

static volatile sig_atomic_t dash_stop;
static void on_stop(int sig)
{
    (void)sig;
    dash_stop = 1;
}

/* "HOST:PORT" ("[v6]:PORT" too) into an address libmicrohttpd can bind. */
static int parse_listen(const char *text, struct addrinfo **ai)
{
    char host[256];
    const char *colon = strrchr(text, ':');
    if (colon == NULL || colon == text || (size_t)(colon - text) >= sizeof(host))
        return MW_EINVAL;
    const char *h = text;
    size_t hl = (size_t)(colon - text);
    if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    return getaddrinfo(host, colon + 1, &hints, ai) == 0 ? MW_OK : MW_EINVAL;
}

int mwctl_dashboard(int argc, char **argv, const mw_config_t *cfg)
{
    const char *listen = "127.0.0.1:8080";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc)
            listen = argv[++i];
        else if (strncmp(argv[i], "--listen=", 9) == 0)
            listen = argv[i] + 9;
        else {
            fprintf(strcmp(argv[i], "--help") == 0 ? stdout : stderr,
                    "usage: mwctl dashboard [--listen HOST:PORT]\n"
                    "  serves /metrics (Prometheus), /api/status (JSON) and / (a live page)\n"
                    "  from Redis and Kafka metadata; listens on 127.0.0.1:8080 by default\n");
            return strcmp(argv[i], "--help") == 0 ? 0 : 2;
        }
    }
    struct addrinfo *ai = NULL;
    if (parse_listen(listen, &ai) != MW_OK) {
        fprintf(stderr, "mwctl dashboard: --listen %s: not HOST:PORT with a numeric port\n",
                listen);
        return 2;
    }
    char err[512];
    int rc = 1;
    dash_t d = {.cfg = cfg};
    d.r = mw_redis_new(cfg, 1, err, sizeof(err)); /* lazy: Redis may come up later */
    d.lag = mw_lag_new(cfg);
    if (d.r == NULL || d.lag == NULL) {
        fprintf(stderr, "mwctl dashboard: %s\n", d.r ? "out of memory" : err);
        goto out_clients;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO |
                     (ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0);
    struct MHD_Daemon *daemon =
        MHD_start_daemon(flags, 0, NULL, NULL, on_request, &d, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                         MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)DASH_CONN_TIMEOUT_S,
                         MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)DASH_CONN_MEMORY,
                         MHD_OPTION_CONNECTION_LIMIT, (unsigned)DASH_CONN_LIMIT, MHD_OPTION_END);
    if (daemon == NULL) {
        fprintf(stderr, "mwctl dashboard: cannot listen on %s (in use, or not an address here)\n",
                listen);
        goto out_clients;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_BIND_PORT);
    char host[256];
    snprintf(host, sizeof(host), "%.*s", (int)(strrchr(listen, ':') - listen), listen);
    printf("mwctl dashboard: http://%s:%u/ (metrics: /metrics, JSON: /api/status)\n", host,
           info ? info->port : 0);
    fflush(stdout);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    while (!dash_stop) {
        struct timespec ts = {0, 100 * 1000000};
        nanosleep(&ts, NULL);
    }
    MHD_stop_daemon(daemon);
    rc = 0;
out_clients:
    mw_lag_destroy(d.lag);
    mw_redis_destroy(d.r);
    freeaddrinfo(ai);
    return rc;
}
