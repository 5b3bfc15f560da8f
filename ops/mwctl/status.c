/* mwctl status / mwctl events: the control plane at a glance (leader, epoch,
 * pipelines, workers, recent events), as a table or JSON; the event stream. */
#include "mwctl.h"

#include "err.h"
#include "cluster/events.h"
#include "cluster/keys.h"
#include "cluster/membership.h"
#include "cluster/plan_doc.h"
#include "cluster/planstore.h"
#include "redis.h"

#include <cjson/cJSON.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static mw_redis_t *connect_or_say(const mw_config_t *cfg)
{
    char err[512];
    mw_redis_t *r = mw_redis_new(cfg, 0, err, sizeof(err));
    if (r == NULL)
        fprintf(stderr, "mwctl: Redis %s:%lld is unreachable: %s\n", cfg->redis_host,
                (long long)cfg->redis_port, err);
    return r;
}

typedef struct snapshot {
    int64_t now_ms; /* server time */
    char leader[64];
    int64_t leader_ttl_ms;
    int64_t epoch;
    char (*coords)[64];
    int64_t *coord_seen;
    size_t ncoords;
    mw_plan_t *plan;
    char plan_error[512];
    mw_member_record_t *workers;
    size_t nworkers;
    mw_event_t *events;
    size_t nevents;
} snapshot_t;

static void snapshot_free(snapshot_t *s)
{
    free(s->coords);
    free(s->coord_seen);
    mw_plan_destroy(s->plan);
    free(s->workers);
    free(s->events);
}

static int take_snapshot(mw_redis_t *r, size_t nevents, snapshot_t *s)
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
    return mw_events_read(r, "", nevents, 0, &s->events, &s->nevents, NULL, 0);
}

static size_t worlds_of(const mw_plan_t *plan, const char *id)
{
    size_t n = 0;
    for (size_t i = 0; plan != NULL && i < plan->nworlds; i++)
        n += mw_plan_world_has(&plan->worlds[i], id, NULL);
    return n;
}

static void format_time(int64_t ms, char *buf, size_t size)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(buf, size, "%02d:%02d:%02d.%03dZ", tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

static void print_event(const mw_event_t *ev, FILE *out)
{
    char when[32];
    format_time(ev->ms, when, sizeof(when));
    fprintf(out, "  %s  %-9s %-20s %s\n", when, ev->type, ev->worker[0] ? ev->worker : "-",
            ev->text);
}

static void print_human(const mw_config_t *cfg, const snapshot_t *s, FILE *out)
{
    fprintf(out, "cluster %s   leader %s", cfg->cluster, s->leader[0] ? s->leader : "NONE");
    if (s->leader[0])
        fprintf(out, " (epoch %lld, lease %lld ms left)", (long long)s->epoch,
                (long long)s->leader_ttl_ms);
    size_t standbys = 0;
    for (size_t i = 0; i < s->ncoords; i++)
        standbys += strcmp(s->coords[i], s->leader) != 0 && s->now_ms - s->coord_seen[i] < 10000;
    fprintf(out, "   standbys %zu\n", standbys);
    if (!s->leader[0])
        fprintf(out, "  ! no coordinator holds the lease: plans are frozen (serving continues)\n");
    if (s->plan_error[0])
        fprintf(out, "  ! the published plan is malformed: %s\n", s->plan_error);
    else if (s->plan == NULL)
        fprintf(out, "plan    none published yet\n");
    else
        fprintf(out, "plan    epoch %lld version %lld: %zu workers, %zu worlds\n",
                (long long)s->plan->epoch, (long long)s->plan->version, s->plan->nworkers,
                s->plan->nworlds);

    for (size_t p = 0; s->plan != NULL && p < s->plan->npipelines; p++) {
        const mw_plan_pipeline_t *pp = &s->plan->pipelines[p];
        fprintf(out, "\npipeline %s: %d stage(s), %s\n", pp->spec.name, pp->spec.nstages,
                pp->complete ? "complete" : "INCOMPLETE (a stage has no live worker)");
        for (int k = 0; k < pp->spec.nstages; k++) {
            int n = 0;
            for (size_t i = 0; i < s->plan->nworkers; i++)
                n += strcmp(s->plan->workers[i].pipeline, pp->spec.name) == 0 &&
                     s->plan->workers[i].stage == k && !s->plan->workers[i].draining;
            fprintf(out, "  stage %d: %d worker(s), need %g%s\n", k, n, pp->spec.stages[k].need,
                    n == 0 ? "  <- EMPTY" : "");
        }
    }

    fprintf(out, "\n%-28s %-10s %-5s %-9s %-10s %-7s %-8s %-9s %-6s %-13s %s\n", "WORKER",
            "PIPELINE", "STAGE", "STATE", "HEARTBEAT", "WORLDS", "INFLIGHT", "PROCESSED", "ERRORS",
            "P50/P99 MS", "DEVICE");
    for (size_t i = 0; i < s->nworkers; i++) {
        const mw_member_record_t *w = &s->workers[i];
        const mw_plan_worker_t *pw = mw_plan_find_worker(s->plan, w->info.id);
        char stage[16], age[24], worlds[24], latency[32] = "-";
        if (pw != NULL)
            snprintf(stage, sizeof(stage), "%d%s", pw->stage, pw->auto_stage ? "a" : "");
        else
            snprintf(stage, sizeof(stage), "-");
        snprintf(age, sizeof(age), "%.1fs ago", (double)(s->now_ms - w->heartbeat_ms) / 1000.0);
        snprintf(worlds, sizeof(worlds), "%lld/%zu", (long long)w->info.worlds_up,
                 worlds_of(s->plan, w->info.id));
        if (w->info.latency_p99_us > 0)
            snprintf(latency, sizeof(latency), "%.1f/%.1f", (double)w->info.latency_p50_us / 1e3,
                     (double)w->info.latency_p99_us / 1e3);
        fprintf(out, "%-28s %-10s %-5s %-9s %-10s %-7s %-8lld %-9lld %-6lld %-13s %s%s%s\n",
                w->info.id, w->info.pipeline, stage,
                w->invalid[0] ? "INVALID" : mw_member_state_name(w->info.state), age, worlds,
                (long long)w->info.inflight, (long long)w->info.processed,
                (long long)w->info.errors, latency, w->info.device, w->invalid[0] ? "  ! " : "",
                w->invalid);
    }
    if (s->nworkers == 0)
        fprintf(out, "(no workers registered)\n");
    fprintf(out, "\nrecent events (newest last):\n");
    for (size_t i = 0; i < s->nevents; i++)
        print_event(&s->events[i], out);
}

static void print_json(const mw_config_t *cfg, const snapshot_t *s, FILE *out)
{
    cJSON *root = cJSON_CreateObject();
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
            int n = 0;
            for (size_t i = 0; i < s->plan->nworkers; i++)
                n += strcmp(s->plan->workers[i].pipeline, pp->spec.name) == 0 &&
                     s->plan->workers[i].stage == k && !s->plan->workers[i].draining;
            cJSON *js = cJSON_CreateObject();
            cJSON_AddNumberToObject(js, "stage", k);
            cJSON_AddNumberToObject(js, "workers", n);
            cJSON_AddNumberToObject(js, "need", pp->spec.stages[k].need);
            cJSON_AddItemToArray(stages, js);
        }
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
        cJSON_AddNumberToObject(jw, "worlds_total", (double)worlds_of(s->plan, w->info.id));
        cJSON_AddNumberToObject(jw, "inflight", (double)w->info.inflight);
        cJSON_AddNumberToObject(jw, "processed", (double)w->info.processed);
        cJSON_AddNumberToObject(jw, "errors", (double)w->info.errors);
        cJSON_AddNumberToObject(jw, "latency_p50_us", (double)w->info.latency_p50_us);
        cJSON_AddNumberToObject(jw, "latency_p99_us", (double)w->info.latency_p99_us);
        cJSON_AddNumberToObject(jw, "plan_epoch", (double)w->info.plan_epoch);
        cJSON_AddNumberToObject(jw, "plan_version", (double)w->info.plan_version);
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
    char *text = cJSON_Print(root);
    if (text != NULL)
        fprintf(out, "%s\n", text);
    free(text);
    cJSON_Delete(root);
}

int mwctl_status(int argc, char **argv, const mw_config_t *cfg)
{
    int json = 0;
    long nevents = 10;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = 1;
        else if (strncmp(argv[i], "--events=", 9) == 0)
            nevents = strtol(argv[i] + 9, NULL, 10);
        else {
            fprintf(strcmp(argv[i], "--help") == 0 ? stdout : stderr,
                    "usage: mwctl status [--json] [--events=N]\n"
                    "  leader and epoch, pipelines and stages, workers (state, heartbeat age,\n"
                    "  worlds up/total, in-flight, processed, errors, origins' latency p50/p99\n"
                    "  of the last 10 s), the last N events\n");
            return strcmp(argv[i], "--help") == 0 ? 0 : 2;
        }
    }
    if (nevents < 0 || nevents > 10000)
        nevents = 10;
    mw_redis_t *r = connect_or_say(cfg);
    if (r == NULL)
        return 1;
    snapshot_t s;
    int rc = take_snapshot(r, (size_t)nevents, &s);
    if (rc != MW_OK) {
        fprintf(stderr, "mwctl: reading the cluster state from Redis failed: %s\n",
                mw_redis_errstr(r));
    } else if (json) {
        print_json(cfg, &s, stdout);
    } else {
        print_human(cfg, &s, stdout);
    }
    snapshot_free(&s);
    mw_redis_destroy(r);
    return rc == MW_OK ? 0 : 1;
}

static volatile sig_atomic_t follow_stop;
static void on_sigint(int sig)
{
    (void)sig;
    follow_stop = 1;
}

int mwctl_events(int argc, char **argv, const mw_config_t *cfg)
{
    int follow = 0;
    long count = 20;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--follow") == 0 || strcmp(argv[i], "-f") == 0)
            follow = 1;
        else if (strncmp(argv[i], "--count=", 8) == 0)
            count = strtol(argv[i] + 8, NULL, 10);
        else {
            fprintf(strcmp(argv[i], "--help") == 0 ? stdout : stderr,
                    "usage: mwctl events [--count=N] [--follow]\n"
                    "  the last N events of the cluster (join, leave, expire, plan, leader,\n"
                    "  stepdown, reject, ...); --follow keeps printing new ones until Ctrl-C\n");
            return strcmp(argv[i], "--help") == 0 ? 0 : 2;
        }
    }
    if (count <= 0 || count > 100000)
        count = 20;
    mw_redis_t *r = connect_or_say(cfg);
    if (r == NULL)
        return 1;
    mw_event_t *ev = NULL;
    size_t n = 0;
    char last[32] = "0-0";
    int rc = mw_events_read(r, "", (size_t)count, 0, &ev, &n, last, sizeof(last));
    for (size_t i = 0; rc == MW_OK && i < n; i++)
        print_event(&ev[i], stdout);
    free(ev);
    fflush(stdout);
    if (follow && rc == MW_OK) {
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_sigint;
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        while (!follow_stop) {
            rc = mw_events_read(r, last, 100, 500, &ev, &n, last, sizeof(last));
            if (rc == MW_EUNAVAIL) {
                fprintf(stderr, "mwctl: %s (retrying)\n", mw_redis_errstr(r));
                struct timespec ts = {0, 200 * 1000000};
                nanosleep(&ts, NULL);
                continue;
            }
            if (rc != MW_OK)
                break;
            for (size_t i = 0; i < n; i++)
                print_event(&ev[i], stdout);
            free(ev);
            fflush(stdout);
        }
        rc = follow_stop ? MW_OK : rc;
    }
    if (rc != MW_OK)
        fprintf(stderr, "mwctl: reading events failed: %s\n", mw_redis_errstr(r));
    mw_redis_destroy(r);
    return rc == MW_OK ? 0 : 1;
}
