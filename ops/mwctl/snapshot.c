/* The cluster state as one read of Redis (snapshot.h), and its JSON. */
#include "snapshot.h"

#include "err.h"
#include "cluster/keys.h"
#include "cluster/planstore.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void mwctl_snapshot_free(mwctl_snapshot_t *s)
{
    free(s->coords);
    free(s->coord_seen);
    mw_plan_destroy(s->plan);
    free(s->workers);
    free(s->worker_stats);
    free(s->pipeline_stats);
    free(s->events);
    memset(s, 0, sizeof(*s));
}

/* One counters hash (worker:{id}:stats or stats:{pipeline}) into c. */
static int read_counters(mw_redis_t *r, const char *key, mwctl_counters_t *c)
{
    static const char *const fields[] = {"processed", "rows",   "results", "errors",
                                         "replays",   "aborts", "inflight"};
    int64_t *dst[] = {&c->processed, &c->rows,   &c->results, &c->errors,
                      &c->replays,   &c->aborts, &c->inflight};
    redisReply *reply = NULL;
    int rc = mw_redis_cmd(r, &reply, "HMGET %s %s %s %s %s %s %s %s", key, fields[0], fields[1],
                          fields[2], fields[3], fields[4], fields[5], fields[6]);
    if (rc != MW_OK)
        return rc;
    memset(c, 0, sizeof(*c));
    for (size_t i = 0; reply->type == REDIS_REPLY_ARRAY && i < reply->elements && i < 7; i++) {
        if (reply->element[i]->type == REDIS_REPLY_STRING) {
            *dst[i] = strtoll(reply->element[i]->str, NULL, 10);
            c->present = 1;
        }
    }
    freeReplyObject(reply);
    return MW_OK;
}

static int read_all_counters(mw_redis_t *r, mwctl_snapshot_t *s)
{
    char key[MW_KEY_MAX];
    size_t npipes = s->plan != NULL ? s->plan->npipelines : 0;
    s->worker_stats = calloc(s->nworkers + 1, sizeof(*s->worker_stats));
    s->pipeline_stats = calloc(npipes + 1, sizeof(*s->pipeline_stats));
    if (s->worker_stats == NULL || s->pipeline_stats == NULL)
        return MW_ENOMEM;
    int rc = MW_OK;
    for (size_t i = 0; rc == MW_OK && i < s->nworkers; i++)
        rc = read_counters(r, mw_key_worker_stats(r, s->workers[i].info.id, key, sizeof(key)),
                           &s->worker_stats[i]);
    for (size_t p = 0; rc == MW_OK && p < npipes; p++)
        rc = read_counters(r, mw_key_stats(r, s->plan->pipelines[p].spec.name, key, sizeof(key)),
                           &s->pipeline_stats[p]);
    return rc;
}

int mwctl_snapshot_take(mw_redis_t *r, size_t nevents, mwctl_snapshot_t *s)
{
    memset(s, 0, sizeof(*s));
    char coord[MW_KEY_MAX], key[MW_KEY_MAX];
    mw_key(r, MW_KEY_COORDINATOR, coord, sizeof(coord));
    redisReply *reply = NULL;
    int rc = mw_member_read_all(r, &s->workers, &s->nworkers, &s->now_ms);
    if (rc != MW_OK)
        return rc;
    if (mw_redis_cmd(r, &reply, "GET %s", coord) == MW_OK) {
        if (reply->type == REDIS_REPLY_STRING)
            snprintf(s->leader, sizeof(s->leader), "%s", reply->str);
        freeReplyObject(reply);
    }
    if (mw_redis_cmd(r, &reply, "PTTL %s", coord) == MW_OK) {
        s->leader_ttl_ms = reply->integer;
        freeReplyObject(reply);
    }
    if (mw_redis_cmd(r, &reply, "GET %s", mw_key(r, MW_KEY_EPOCH, key, sizeof(key))) == MW_OK) {
        if (reply->type == REDIS_REPLY_STRING)
            s->epoch = strtoll(reply->str, NULL, 10);
        freeReplyObject(reply);
    }
    if (mw_redis_cmd(r, &reply, "ZRANGE %s 0 -1 WITHSCORES",
                     mw_key(r, MW_KEY_COORDINATORS, key, sizeof(key))) == MW_OK) {
        size_t n = reply->type == REDIS_REPLY_ARRAY ? reply->elements / 2 : 0;
        s->coords = calloc(n + 1, sizeof(*s->coords));
        s->coord_seen = calloc(n + 1, sizeof(*s->coord_seen));
        for (size_t i = 0; s->coords && s->coord_seen && i < n; i++) {
            snprintf(s->coords[i], sizeof(s->coords[0]), "%s", reply->element[2 * i]->str);
            s->coord_seen[i] = strtoll(reply->element[2 * i + 1]->str, NULL, 10);
            s->ncoords++;
        }
        freeReplyObject(reply);
    }
    rc = mw_planstore_read(r, &s->plan, s->plan_error, sizeof(s->plan_error));
    if (rc != MW_OK && rc != MW_EINVAL)
        return rc;
    if (rc == MW_OK)
        s->plan_error[0] = '\0';
    rc = read_all_counters(r, s);
    if (rc != MW_OK)
        return rc;
    return mw_events_read(r, "", nevents, 0, &s->events, &s->nevents, NULL, 0);
}

size_t mwctl_snapshot_worlds_of(const mwctl_snapshot_t *s, const char *id)
{
    size_t n = 0;
    for (size_t i = 0; s->plan != NULL && i < s->plan->nworlds; i++)
        n += mw_plan_world_has(&s->plan->worlds[i], id, NULL);
    return n;
}

int mwctl_snapshot_stage_workers(const mwctl_snapshot_t *s, const char *pipeline, int k)
{
    int n = 0;
    for (size_t i = 0; s->plan != NULL && i < s->plan->nworkers; i++)
        n += strcmp(s->plan->workers[i].pipeline, pipeline) == 0 &&
             s->plan->workers[i].stage == k && !s->plan->workers[i].draining;
    return n;
}

/* 1 when a member of world w is not registered or reports w broken (its hash's
 * `broken` lists "name@gen"). */
static int world_broken(const mwctl_snapshot_t *s, const mw_plan_world_t *w)
{
    size_t len = strlen(w->name);
    for (int k = 0; k < w->nmembers; k++) {
        const mw_member_record_t *m = NULL;
        for (size_t i = 0; m == NULL && i < s->nworkers; i++)
            if (strcmp(s->workers[i].info.id, w->members[k]) == 0)
                m = &s->workers[i];
        if (m == NULL)
            return 1;
        for (const char *b = strstr(m->info.broken, w->name); b != NULL; b = strstr(b + 1, w->name))
            if ((b == m->info.broken || b[-1] == ' ') && b[len] == '@')
                return 1;
    }
    return 0;
}

static void add_counters(cJSON *obj, const char *name, const mwctl_counters_t *c)
{
    if (!c->present) {
        cJSON_AddNullToObject(obj, name);
        return;
    }
    cJSON *j = cJSON_AddObjectToObject(obj, name);
    cJSON_AddNumberToObject(j, "processed", (double)c->processed);
    cJSON_AddNumberToObject(j, "rows", (double)c->rows);
    cJSON_AddNumberToObject(j, "results", (double)c->results);
    cJSON_AddNumberToObject(j, "errors", (double)c->errors);
    cJSON_AddNumberToObject(j, "replays", (double)c->replays);
    cJSON_AddNumberToObject(j, "aborts", (double)c->aborts);
    cJSON_AddNumberToObject(j, "inflight", (double)c->inflight);
}

cJSON *mwctl_snapshot_json(const mw_config_t *cfg, const mwctl_snapshot_t *s)
{
    cJSON *root = cJSON_CreateObject();
    if (root == NULL)
        return NULL;
    cJSON_AddStringToObject(root, "cluster", cfg->cluster);
    cJSON_AddNumberToObject(root, "server_time_ms", (double)s->now_ms);
    cJSON *leader = cJSON_AddObjectToObject(root, "leader");
    if (s->leader[0]) {
        cJSON_AddStringToObject(leader, "id", s->leader);
        cJSON_AddNumberToObject(leader, "lease_left_ms", (double)s->leader_ttl_ms);
    } else {
        cJSON_AddNullToObject(leader, "id");
    }
    cJSON_AddNumberToObject(leader, "epoch", (double)s->epoch);
    cJSON *coords = cJSON_AddArrayToObject(root, "coordinators");
    for (size_t i = 0; i < s->ncoords; i++) {
        cJSON *c = cJSON_CreateObject();
        cJSON_AddStringToObject(c, "id", s->coords[i]);
        cJSON_AddBoolToObject(c, "leader", strcmp(s->coords[i], s->leader) == 0);
        cJSON_AddNumberToObject(c, "seen_ms_ago", (double)(s->now_ms - s->coord_seen[i]));
        cJSON_AddItemToArray(coords, c);
    }
    cJSON *plan = cJSON_AddObjectToObject(root, "plan");
    if (s->plan != NULL) {
        cJSON_AddNumberToObject(plan, "epoch", (double)s->plan->epoch);
        cJSON_AddNumberToObject(plan, "version", (double)s->plan->version);
        cJSON_AddNumberToObject(plan, "workers", (double)s->plan->nworkers);
        cJSON *worlds = cJSON_AddArrayToObject(plan, "worlds");
        for (size_t i = 0; i < s->plan->nworlds; i++) {
            const mw_plan_world_t *w = &s->plan->worlds[i];
            cJSON *jw = cJSON_CreateObject();
            cJSON_AddStringToObject(jw, "name", w->name);
            cJSON_AddStringToObject(jw, "backend", w->backend);
            cJSON_AddBoolToObject(jw, "broken", world_broken(s, w));
            cJSON *m = cJSON_AddArrayToObject(jw, "members");
            for (int k = 0; k < w->nmembers; k++)
                cJSON_AddItemToArray(m, cJSON_CreateString(w->members[k]));
            cJSON_AddItemToArray(worlds, jw);
        }
    }
    if (s->plan_error[0])
        cJSON_AddStringToObject(plan, "error", s->plan_error);
    cJSON *pipes = cJSON_AddArrayToObject(root, "pipelines");
    for (size_t p = 0; s->plan != NULL && p < s->plan->npipelines; p++) {
        const mw_plan_pipeline_t *pp = &s->plan->pipelines[p];
        cJSON *jp = cJSON_CreateObject();
        cJSON_AddStringToObject(jp, "name", pp->spec.name);
        cJSON_AddBoolToObject(jp, "complete", pp->complete);
        cJSON *stages = cJSON_AddArrayToObject(jp, "stages");
        for (int k = 0; k < pp->spec.nstages; k++) {
            int n = mwctl_snapshot_stage_workers(s, pp->spec.name, k);
            cJSON *js = cJSON_CreateObject();
            cJSON_AddNumberToObject(js, "stage", k);
            cJSON_AddNumberToObject(js, "workers", n);
            cJSON_AddNumberToObject(js, "need", pp->spec.stages[k].need);
            cJSON_AddItemToArray(stages, js);
        }
        add_counters(jp, "totals", &s->pipeline_stats[p]);
        cJSON_AddItemToArray(pipes, jp);
    }
    cJSON *workers = cJSON_AddArrayToObject(root, "workers");
    for (size_t i = 0; i < s->nworkers; i++) {
        const mw_member_record_t *w = &s->workers[i];
        const mw_plan_worker_t *pw = mw_plan_find_worker(s->plan, w->info.id);
        cJSON *jw = cJSON_CreateObject();
        cJSON_AddStringToObject(jw, "id", w->info.id);
        cJSON_AddStringToObject(jw, "host", w->info.host);
        cJSON_AddNumberToObject(jw, "pid", (double)w->info.pid);
        cJSON_AddStringToObject(jw, "pipeline", w->info.pipeline);
        if (w->info.stage == MW_PLAN_STAGE_AUTO)
            cJSON_AddStringToObject(jw, "requested_stage", "auto");
        else
            cJSON_AddNumberToObject(jw, "requested_stage", w->info.stage);
        if (pw != NULL)
            cJSON_AddNumberToObject(jw, "stage", pw->stage);
        else
            cJSON_AddNullToObject(jw, "stage");
        cJSON_AddBoolToObject(jw, "in_plan", pw != NULL);
        cJSON_AddStringToObject(jw, "device", w->info.device);
        cJSON_AddStringToObject(jw, "state", mw_member_state_name(w->info.state));
        cJSON_AddNumberToObject(jw, "heartbeat_age_ms", (double)(s->now_ms - w->heartbeat_ms));
        cJSON_AddNumberToObject(jw, "worlds_up", (double)w->info.worlds_up);
        cJSON_AddNumberToObject(jw, "worlds_total",
                                (double)mwctl_snapshot_worlds_of(s, w->info.id));
        cJSON_AddNumberToObject(jw, "inflight", (double)w->info.inflight);
        cJSON_AddNumberToObject(jw, "processed", (double)w->info.processed);
        cJSON_AddNumberToObject(jw, "errors", (double)w->info.errors);
        cJSON_AddNumberToObject(jw, "latency_p50_us", (double)w->info.latency_p50_us);
        cJSON_AddNumberToObject(jw, "latency_p99_us", (double)w->info.latency_p99_us);
        cJSON_AddNumberToObject(jw, "plan_epoch", (double)w->info.plan_epoch);
        cJSON_AddNumberToObject(jw, "plan_version", (double)w->info.plan_version);
        add_counters(jw, "stats", &s->worker_stats[i]);
        if (w->invalid[0])
            cJSON_AddStringToObject(jw, "invalid", w->invalid);
        cJSON_AddItemToArray(workers, jw);
    }
    cJSON *events = cJSON_AddArrayToObject(root, "events");
    for (size_t i = 0; i < s->nevents; i++) {
        cJSON *je = cJSON_CreateObject();
        cJSON_AddStringToObject(je, "id", s->events[i].id);
        cJSON_AddNumberToObject(je, "ms", (double)s->events[i].ms);
        cJSON_AddStringToObject(je, "type", s->events[i].type);
        cJSON_AddStringToObject(je, "worker", s->events[i].worker);
        cJSON_AddStringToObject(je, "text", s->events[i].text);
        cJSON_AddItemToArray(events, je);
    }
    return root;
}
