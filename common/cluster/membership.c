/* Worker registration, heartbeats (Redis TIME in Lua) and the reader of worker hashes. */
#include "membership.h"

#include "err.h"
#include "keys.h"
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *const state_names[] = {"joining", "ready", "draining", "gone"};

const char *mw_member_state_name(mw_member_state_t s)
{
    return s >= MW_MEMBER_JOINING && s <= MW_MEMBER_GONE ? state_names[s] : "unknown";
}

void mw_member_default_id(char *buf, size_t size)
{
    char host[64] = "host";
    gethostname(host, sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    for (char *p = host; *p; p++) /* ids allow [A-Za-z0-9_.:-] */
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_' || *p == '.'))
            *p = '-';
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    unsigned seed = (unsigned)ts.tv_nsec ^ (unsigned)getpid() * 2654435761u;
    unsigned rnd = (unsigned)rand_r(&seed) ^ ((unsigned)rand_r(&seed) << 15);
    snprintf(buf, size, "%.40s.%ld.%06x", host, (long)getpid(), rnd & 0xffffff);
}

int mw_member_parse_stage(const char *text, int *stage)
{
    if (strcmp(text, "auto") == 0) {
        *stage = MW_PLAN_STAGE_AUTO;
        return MW_OK;
    }
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (*text == '\0' || *end != '\0' || errno != 0 || v < 0 || v >= MW_PIPELINE_MAX_STAGES)
        return MW_EINVAL;
    *stage = (int)v;
    return MW_OK;
}

static mw_redis_script_t heartbeat_script = {
    "heartbeat",
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local existed = redis.call('EXISTS', KEYS[2])\n"
    "redis.call('ZADD', KEYS[1], now, ARGV[1])\n"
    "local kv = {}\n"
    "for i = 4, #ARGV do kv[#kv + 1] = ARGV[i] end\n"
    "kv[#kv + 1] = 'heartbeat'; kv[#kv + 1] = tostring(now)\n"
    "if existed == 0 then\n"
    "  kv[#kv + 1] = 'started'; kv[#kv + 1] = tostring(now)\n"
    "  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'type', 'join', 'worker',\n"
    "             ARGV[1], 'msg', ARGV[3])\n"
    "end\n"
    "redis.call('HSET', KEYS[2], unpack(kv))\n"
    "return {now, 1 - existed}\n",
    {0},
};

static mw_redis_script_t leave_script = {
    "leave",
    "redis.call('ZREM', KEYS[1], ARGV[1])\n"
    "local existed = redis.call('DEL', KEYS[2])\n"
    "redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'type', 'leave', 'worker',\n"
    "           ARGV[1], 'msg', ARGV[3])\n"
    "return existed\n",
    {0},
};

/* KEYS: workers. ARGV: worker hash prefix (worker:{id} without the id). */
static mw_redis_script_t read_script = {
    "read_workers",
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local ids = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')\n"
    "local out = {now}\n"
    "for i = 1, #ids, 2 do\n"
    "  out[#out + 1] = ids[i]\n"
    "  out[#out + 1] = ids[i + 1]\n"
    "  out[#out + 1] = redis.call('HGETALL', ARGV[1] .. ids[i])\n"
    "end\n"
    "return out\n",
    {0},
};

static void worker_keys(mw_redis_t *r, const char *id, char *set, char *hash, char *events,
                        size_t size)
{
    mw_key(r, MW_KEY_WORKERS, set, size);
    mw_key_worker(r, id, hash, size);
    mw_key(r, MW_KEY_EVENTS, events, size);
}

int mw_member_heartbeat(mw_redis_t *r, const mw_member_info_t *in, int64_t events_maxlen,
                        int64_t *server_ms, int *registered)
{
    char set[MW_KEY_MAX], hash[MW_KEY_MAX], events[MW_KEY_MAX];
    worker_keys(r, in->id, set, hash, events, sizeof(set));
    const char *keys[3] = {set, hash, events};
    char maxlen[24], pid[24], stage[16], cap[24], astage[16], pe[24], pv[24], wu[24], wt[24],
        infl[24], proc[24], errs[24], p50[24], p99[24], joinmsg[192];
    snprintf(maxlen, sizeof(maxlen), "%lld", (long long)events_maxlen);
    snprintf(pid, sizeof(pid), "%lld", (long long)in->pid);
    if (in->stage == MW_PLAN_STAGE_AUTO)
        snprintf(stage, sizeof(stage), "auto");
    else
        snprintf(stage, sizeof(stage), "%d", in->stage);
    snprintf(cap, sizeof(cap), "%lld", (long long)in->capacity);
    snprintf(astage, sizeof(astage), "%d", in->assigned_stage);
    snprintf(pe, sizeof(pe), "%lld", (long long)in->plan_epoch);
    snprintf(pv, sizeof(pv), "%lld", (long long)in->plan_version);
    snprintf(wu, sizeof(wu), "%lld", (long long)in->worlds_up);
    snprintf(wt, sizeof(wt), "%lld", (long long)in->worlds_total);
    snprintf(infl, sizeof(infl), "%lld", (long long)in->inflight);
    snprintf(proc, sizeof(proc), "%lld", (long long)in->processed);
    snprintf(errs, sizeof(errs), "%lld", (long long)in->errors);
    snprintf(p50, sizeof(p50), "%lld", (long long)in->latency_p50_us);
    snprintf(p99, sizeof(p99), "%lld", (long long)in->latency_p99_us);
    snprintf(joinmsg, sizeof(joinmsg), "pipeline=%.47s stage=%s device=%.31s host=%.40s pid=%s",
             in->pipeline, stage, in->device, in->host, pid);
    const char *args[] = {in->id,
                          maxlen,
                          joinmsg,
                          "host",
                          in->host,
                          "pid",
                          pid,
                          "pipeline",
                          in->pipeline,
                          "stage",
                          stage,
                          "device",
                          in->device,
                          "backends",
                          in->backends[0] != '\0' ? in->backends : "tcp",
                          "capacity",
                          cap,
                          "state",
                          mw_member_state_name(in->state),
                          "assigned_stage",
                          astage,
                          "plan_epoch",
                          pe,
                          "plan_version",
                          pv,
                          "worlds_up",
                          wu,
                          "worlds_total",
                          wt,
                          "inflight",
                          infl,
                          "processed",
                          proc,
                          "errors",
                          errs,
                          "latency_p50_us",
                          p50,
                          "latency_p99_us",
                          p99,
                          "last_error",
                          in->last_error,
                          "broken",
                          in->broken};
    redisReply *reply = NULL;
    int rc = mw_redis_eval(r, &heartbeat_script, &reply, 3, keys,
                           (int)(sizeof(args) / sizeof(args[0])), args, NULL);
    if (rc != MW_OK)
        return rc;
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2) {
        if (server_ms != NULL)
            *server_ms = reply->element[0]->integer;
        if (registered != NULL)
            *registered = (int)reply->element[1]->integer;
    }
    freeReplyObject(reply);
    return MW_OK;
}

int mw_member_leave(mw_redis_t *r, const char *id, const char *reason, int64_t events_maxlen)
{
    char set[MW_KEY_MAX], hash[MW_KEY_MAX], events[MW_KEY_MAX], maxlen[24];
    worker_keys(r, id, set, hash, events, sizeof(set));
    snprintf(maxlen, sizeof(maxlen), "%lld", (long long)events_maxlen);
    const char *keys[3] = {set, hash, events};
    const char *args[3] = {id, maxlen, reason};
    return mw_redis_eval(r, &leave_script, NULL, 3, keys, 3, args, NULL);
}

static int64_t to_i64(const char *s, int *ok)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*s == '\0' || *end != '\0' || errno != 0)
        *ok = 0;
    return v;
}

/* Fills rec from a hash reply; rec->invalid says what is wrong with it. */
static void parse_hash(const redisReply *h, mw_member_record_t *rec)
{
    mw_member_info_t *in = &rec->info;
    int have_pipeline = 0, have_stage = 0, have_device = 0, bad_number = 0;
    in->state = MW_MEMBER_JOINING;
    in->assigned_stage = -1;
    in->capacity = 1;
    snprintf(in->backends, sizeof(in->backends), "tcp"); /* workers from before the field */
    rec->has_hash = h->type == REDIS_REPLY_ARRAY && h->elements > 0;
    for (size_t i = 0; h->type == REDIS_REPLY_ARRAY && i + 1 < h->elements; i += 2) {
        const char *k = h->element[i]->str, *v = h->element[i + 1]->str;
        int ok = 1;
        if (k == NULL || v == NULL)
            continue;
        if (strcmp(k, "host") == 0)
            snprintf(in->host, sizeof(in->host), "%s", v);
        else if (strcmp(k, "pid") == 0)
            in->pid = to_i64(v, &ok);
        else if (strcmp(k, "pipeline") == 0) {
            have_pipeline = strlen(v) < sizeof(in->pipeline);
            snprintf(in->pipeline, sizeof(in->pipeline), "%s", v);
        } else if (strcmp(k, "stage") == 0)
            have_stage = mw_member_parse_stage(v, &in->stage) == MW_OK;
        else if (strcmp(k, "backends") == 0)
            snprintf(in->backends, sizeof(in->backends), "%s", v);
        else if (strcmp(k, "device") == 0) {
            have_device = v[0] != '\0' && strlen(v) < sizeof(in->device);
            snprintf(in->device, sizeof(in->device), "%s", v);
        } else if (strcmp(k, "capacity") == 0) {
            in->capacity = to_i64(v, &ok);
            ok = ok && in->capacity >= 1;
        } else if (strcmp(k, "state") == 0) {
            for (int s = MW_MEMBER_JOINING; s <= MW_MEMBER_GONE; s++)
                if (strcmp(v, state_names[s]) == 0)
                    in->state = (mw_member_state_t)s;
        } else if (strcmp(k, "assigned_stage") == 0)
            in->assigned_stage = (int)to_i64(v, &ok);
        else if (strcmp(k, "plan_epoch") == 0)
            in->plan_epoch = to_i64(v, &ok);
        else if (strcmp(k, "plan_version") == 0)
            in->plan_version = to_i64(v, &ok);
        else if (strcmp(k, "worlds_up") == 0)
            in->worlds_up = to_i64(v, &ok);
        else if (strcmp(k, "worlds_total") == 0)
            in->worlds_total = to_i64(v, &ok);
        else if (strcmp(k, "inflight") == 0)
            in->inflight = to_i64(v, &ok);
        else if (strcmp(k, "processed") == 0)
            in->processed = to_i64(v, &ok);
        else if (strcmp(k, "errors") == 0)
            in->errors = to_i64(v, &ok);
        else if (strcmp(k, "latency_p50_us") == 0)
            in->latency_p50_us = to_i64(v, &ok);
        else if (strcmp(k, "latency_p99_us") == 0)
            in->latency_p99_us = to_i64(v, &ok);
        else if (strcmp(k, "started") == 0)
            rec->started_ms = to_i64(v, &ok);
        else if (strcmp(k, "last_error") == 0)
            snprintf(in->last_error, sizeof(in->last_error), "%s", v);
        else if (strcmp(k, "broken") == 0)
            snprintf(in->broken, sizeof(in->broken), "%s", v);
        if (!ok && !bad_number) {
            bad_number = 1;
            snprintf(rec->invalid, sizeof(rec->invalid),
                     "field '%.40s' is not a valid number: '%.40s'", k, v);
        }
    }
    if (!rec->has_hash)
        snprintf(rec->invalid, sizeof(rec->invalid), "no worker hash");
    else if (!mw_plan_id_valid(in->id))
        snprintf(rec->invalid, sizeof(rec->invalid), "invalid worker id");
    else if (!have_pipeline)
        snprintf(rec->invalid, sizeof(rec->invalid), "missing or invalid field 'pipeline'");
    else if (!have_stage)
        snprintf(rec->invalid, sizeof(rec->invalid),
                 "missing or invalid field 'stage' (a number or auto)");
    else if (!have_device)
        snprintf(rec->invalid, sizeof(rec->invalid), "missing or invalid field 'device'");
}

static int cmp_record(const void *a, const void *b)
{
    return strcmp(((const mw_member_record_t *)a)->info.id,
                  ((const mw_member_record_t *)b)->info.id);
}

int mw_member_read_all(mw_redis_t *r, mw_member_record_t **out, size_t *n, int64_t *server_ms)
{
    char set[MW_KEY_MAX], hashes[MW_KEY_MAX];
    const char *keys[1] = {mw_key(r, MW_KEY_WORKERS, set, sizeof(set))};
    const char *args[1] = {mw_key_worker(r, "", hashes, sizeof(hashes))};
    redisReply *reply = NULL;
    *out = NULL;
    *n = 0;
    int rc = mw_redis_eval(r, &read_script, &reply, 1, keys, 1, args, NULL);
    if (rc != MW_OK)
        return rc;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 || (reply->elements - 1) % 3 != 0) {
        freeReplyObject(reply);
        return MW_EPROTO;
    }
    size_t count = (reply->elements - 1) / 3;
    if (server_ms != NULL)
        *server_ms = reply->element[0]->integer;
    mw_member_record_t *recs = calloc(count + 1, sizeof(*recs));
    if (recs == NULL) {
        freeReplyObject(reply);
        return MW_ENOMEM;
    }
    for (size_t i = 0; i < count; i++) {
        const redisReply *id = reply->element[1 + 3 * i], *score = reply->element[2 + 3 * i];
        mw_member_record_t *rec = &recs[i];
        snprintf(rec->info.id, sizeof(rec->info.id), "%s", id->str ? id->str : "");
        rec->heartbeat_ms = score->str ? strtoll(score->str, NULL, 10) : 0;
        parse_hash(reply->element[3 + 3 * i], rec);
        if (id->str != NULL && strlen(id->str) >= sizeof(rec->info.id))
            snprintf(rec->invalid, sizeof(rec->invalid), "worker id too long");
    }
    freeReplyObject(reply);
    qsort(recs, count, sizeof(*recs), cmp_record);
    *out = recs;
    *n = count;
    return MW_OK;
}

void mw_member_to_plan(const mw_member_record_t *rec, mw_plan_member_t *m)
{
    memset(m, 0, sizeof(*m));
    snprintf(m->id, sizeof(m->id), "%s", rec->info.id);
    snprintf(m->pipeline, sizeof(m->pipeline), "%s", rec->info.pipeline);
    snprintf(m->device, sizeof(m->device), "%s", rec->info.device);
    snprintf(m->host, sizeof(m->host), "%s", rec->info.host);
    m->carries = mw_plan_carries_parse(rec->info.backends);
    m->stage = rec->info.stage;
    m->capacity = rec->info.capacity;
    m->draining = rec->info.state == MW_MEMBER_DRAINING;
    m->inflight = rec->info.inflight;
    snprintf(m->broken, sizeof(m->broken), "%s", rec->info.broken);
}
