/* mwctl status / mwctl events: the control plane at a glance (leader, epoch,
 * pipelines, workers, recent events), as a table or JSON; the event stream. */
#include "mwctl.h"

#include "snapshot.h"

#include "cluster/keys.h"
#include "err.h"

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

/* The fields of hash key as numbers into obj (nothing when the hash is absent). */
static void add_hash(mw_redis_t *r, const char *key, cJSON *obj)
{
    redisReply *reply = NULL;
    if (mw_redis_cmd(r, &reply, "HGETALL %s", key) != MW_OK)
        return;
    for (size_t i = 0; reply->type == REDIS_REPLY_ARRAY && i + 1 < reply->elements; i += 2)
        if (reply->element[i]->str != NULL && reply->element[i + 1]->str != NULL)
            cJSON_AddNumberToObject(obj, reply->element[i]->str,
                                    strtod(reply->element[i + 1]->str, NULL));
    freeReplyObject(reply);
}

/* {"load": load:{P}, "desired": desired:{P}} of each pipeline of the plan
 * (README, Autoscaling), keyed by pipeline name. */
static cJSON *autoscale_json(mw_redis_t *r, const mwctl_snapshot_t *s)
{
    cJSON *all = cJSON_CreateObject();
    for (size_t p = 0; all != NULL && s->plan != NULL && p < s->plan->npipelines; p++) {
        const char *name = s->plan->pipelines[p].spec.name;
        char key[MW_KEY_MAX];
        cJSON *one = cJSON_AddObjectToObject(all, name);
        cJSON *load = one ? cJSON_AddObjectToObject(one, "load") : NULL;
        cJSON *desired = one ? cJSON_AddObjectToObject(one, "desired") : NULL;
        if (load == NULL || desired == NULL)
            break;
        add_hash(r, mw_key_load(r, name, key, sizeof(key)), load);
        add_hash(r, mw_key_desired(r, name, key, sizeof(key)), desired);
    }
    return all;
}

static double number_or(const cJSON *obj, const char *name, double dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

/* One pipeline's measured load line, and a stage's load and desired count. */
static void print_load(const cJSON *as, FILE *out)
{
    const cJSON *load = cJSON_GetObjectItemCaseSensitive(as, "load");
    if (load == NULL || load->child == NULL) {
        fprintf(out, "  load: not measured yet (no leading coordinator?)\n");
        return;
    }
    double lag = number_or(load, "lag", -1), slo = number_or(load, "slo_ms", 0);
    fprintf(out, "  load: backlog ");
    if (lag < 0)
        fprintf(out, "unknown");
    else
        fprintf(out, "%.0f (%+.0f/s)", lag, number_or(load, "lag_rate", 0));
    fprintf(out, ", p99 %.1f ms", number_or(load, "p99_us", 0) / 1e3);
    if (slo > 0)
        fprintf(out, " (slo %.0f ms%s)", slo,
                number_or(load, "p99_us", 0) > slo * 1e3 ? ", MISSED" : "");
    fprintf(out, "\n");
}

static void print_stage_load(const cJSON *as, int k, FILE *out)
{
    const cJSON *load = cJSON_GetObjectItemCaseSensitive(as, "load");
    const cJSON *desired = cJSON_GetObjectItemCaseSensitive(as, "desired");
    char name[32];
    snprintf(name, sizeof(name), "%d", k);
    double want = number_or(desired, name, -1);
    if (want >= 0)
        fprintf(out, ", desired %.0f", want);
    snprintf(name, sizeof(name), "%d.busy", k);
    double busy = number_or(load, name, -1);
    snprintf(name, sizeof(name), "%d.queued", k);
    if (busy >= 0)
        fprintf(out, ", busy %.2f, queued %.0f", busy, number_or(load, name, 0));
}

static void print_human(const mw_config_t *cfg, const mwctl_snapshot_t *s, const cJSON *as,
                        FILE *out)
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
        const cJSON *pas = cJSON_GetObjectItemCaseSensitive(as, pp->spec.name);
        fprintf(out, "\npipeline %s: %d stage(s), %s\n", pp->spec.name, pp->spec.nstages,
                pp->complete ? "complete" : "INCOMPLETE (a stage has no live worker)");
        print_load(pas, out);
        for (int k = 0; k < pp->spec.nstages; k++) {
            int n = mwctl_snapshot_stage_workers(s, pp->spec.name, k);
            fprintf(out, "  stage %d: %d worker(s), need %g", k, n, pp->spec.stages[k].need);
            print_stage_load(pas, k, out);
            fprintf(out, "%s\n", n == 0 ? "  <- EMPTY" : "");
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
                 mwctl_snapshot_worlds_of(s, w->info.id));
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

static void print_json(const mw_config_t *cfg, const mwctl_snapshot_t *s, cJSON *as, FILE *out)
{
    cJSON *root = mwctl_snapshot_json(cfg, s);
    if (root != NULL && as != NULL)
        cJSON_AddItemReferenceToObject(root, "autoscale", as);
    char *text = root != NULL ? cJSON_Print(root) : NULL;
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
                    "  leader and epoch, pipelines and stages (with their measured load and\n"
                    "  desired worker counts), workers (state, heartbeat age,\n"
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
    mwctl_snapshot_t s;
    int rc = mwctl_snapshot_take(r, (size_t)nevents, &s);
    if (rc != MW_OK) {
        fprintf(stderr, "mwctl: reading the cluster state from Redis failed: %s\n",
                mw_redis_errstr(r));
    } else {
        cJSON *as = autoscale_json(r, &s);
        if (json)
            print_json(cfg, &s, as, stdout);
        else
            print_human(cfg, &s, as, stdout);
        cJSON_Delete(as);
    }
    mwctl_snapshot_free(&s);
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
