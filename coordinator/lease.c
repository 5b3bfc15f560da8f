/* Lease, fencing epoch and fenced writes, each one Lua script (atomic in Redis). */
#include "clock.h"
#include "lease.h"

#include "err.h"
#include "cluster/events.h"
#include "cluster/keys.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct mw_lease {
    mw_redis_t *r;
    char id[64];
    int64_t lease_ms;
    int64_t maxlen;
    int leader;
    int64_t epoch;
    int64_t renew_sent_ms; /* monotonic time the last successful acquire/renew was sent */
    char holder[64];
    char k_coord[MW_KEY_MAX], k_epoch[MW_KEY_MAX], k_events[MW_KEY_MAX], k_coords[MW_KEY_MAX],
        k_plan[MW_KEY_MAX], k_version[MW_KEY_MAX], k_workers[MW_KEY_MAX], k_worker[MW_KEY_MAX],
        channel[MW_KEY_MAX];
};

/* KEYS: coordinator, epoch, events, coordinators. ARGV: id, lease_ms, my epoch, maxlen. */
static mw_redis_script_t lease_script = {
    "lease",
    "local cur = redis.call('GET', KEYS[1])\n"
    "local epoch = tonumber(redis.call('GET', KEYS[2]) or '0')\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "redis.call('ZADD', KEYS[4], now, ARGV[1])\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - 10 * tonumber(ARGV[2]))\n"
    "if cur == ARGV[1] and tonumber(ARGV[3]) == epoch then\n"
    "  redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "  return {1, epoch, ARGV[1]}\n"
    "end\n"
    "if cur == false or cur == ARGV[1] then\n"
    "  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
    "  epoch = redis.call('INCR', KEYS[2])\n"
    "  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'type', 'leader',\n"
    "             'coordinator', ARGV[1], 'epoch', tostring(epoch))\n"
    "  return {1, epoch, ARGV[1]}\n"
    "end\n"
    "return {0, epoch, cur}\n",
    {0},
};

/* KEYS: coordinator, events. ARGV: id, maxlen. */
static mw_redis_script_t release_script = {
    "lease_release",
    "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
    "  redis.call('DEL', KEYS[1])\n"
    "  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'type', 'stepdown',\n"
    "             'coordinator', ARGV[1], 'msg', 'released the lease (shutdown)')\n"
    "  return 1\n"
    "end\n"
    "return 0\n",
    {0},
};

/* KEYS: coordinator, epoch, plan, plan:version, events.
 * ARGV: id, epoch, json, version, maxlen, summary, channel. */
static mw_redis_script_t publish_script = {
    "publish_plan",
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then\n"
    "  return redis.error_reply('FENCED the lease is not held by ' .. ARGV[1])\n"
    "end\n"
    "if redis.call('GET', KEYS[2]) ~= ARGV[2] then\n"
    "  return redis.error_reply('FENCED epoch ' .. ARGV[2] .. ' is over')\n"
    "end\n"
    "redis.call('SET', KEYS[3], ARGV[3])\n"
    "redis.call('SET', KEYS[4], ARGV[2] .. ':' .. ARGV[4])\n"
    "redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[5], '*', 'type', 'plan', 'epoch', ARGV[2],\n"
    "           'version', ARGV[4], 'msg', ARGV[6])\n"
    "redis.call('PUBLISH', ARGV[7], ARGV[2] .. ':' .. ARGV[4])\n"
    "return 1\n",
    {0},
};

/* KEYS: coordinator, epoch, hash, ... ARGV: id, epoch, pairs of each hash, then
 * field, value, ... of the first hash, then of the next. */
static mw_redis_script_t hset_script = {
    "fenced_hset",
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('GET', KEYS[2]) ~= ARGV[2] then\n"
    "  return redis.error_reply('FENCED not the leader of epoch ' .. ARGV[2])\n"
    "end\n"
    "local at = #KEYS + 1\n"
    "for i = 3, #KEYS do\n"
    "  local n = 2 * tonumber(ARGV[i])\n"
    "  redis.call('HSET', KEYS[i], unpack(ARGV, at, at + n - 1))\n"
    "  at = at + n\n"
    "end\n"
    "return 1\n",
    {0},
};

/* KEYS: coordinator, epoch, workers, events.
 * ARGV: id, epoch, ttl_ms, maxlen, worker hash prefix (worker:{id} without the id). */
static mw_redis_script_t sweep_script = {
    "sweep",
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('GET', KEYS[2]) ~= ARGV[2] then\n"
    "  return redis.error_reply('FENCED not the leader of epoch ' .. ARGV[2])\n"
    "end\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local limit = now - tonumber(ARGV[3])\n"
    "local dead = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. string.format('%d', limit),\n"
    "                        'WITHSCORES')\n"
    "local out = {}\n"
    "for i = 1, #dead, 2 do\n"
    "  local id = dead[i]\n"
    "  local age = now - tonumber(dead[i + 1])\n"
    "  redis.call('ZREM', KEYS[3], id)\n"
    "  redis.call('DEL', ARGV[5] .. id)\n"
    "  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], '*', 'type', 'expire', 'worker', id,\n"
    "             'msg', 'no heartbeat for ' .. string.format('%d', age) .. ' ms')\n"
    "  out[#out + 1] = id\n"
    "end\n"
    "return out\n",
    {0},
};

mw_lease_t *mw_lease_new(mw_redis_t *r, const char *id, int64_t lease_ms, int64_t events_maxlen)
{
    mw_lease_t *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return NULL;
    l->r = r;
    snprintf(l->id, sizeof(l->id), "%s", id);
    l->lease_ms = lease_ms;
    l->maxlen = events_maxlen;
    mw_key(r, MW_KEY_COORDINATOR, l->k_coord, sizeof(l->k_coord));
    mw_key(r, MW_KEY_EPOCH, l->k_epoch, sizeof(l->k_epoch));
    mw_key(r, MW_KEY_EVENTS, l->k_events, sizeof(l->k_events));
    mw_key(r, MW_KEY_COORDINATORS, l->k_coords, sizeof(l->k_coords));
    mw_key(r, MW_KEY_PLAN, l->k_plan, sizeof(l->k_plan));
    mw_key(r, MW_KEY_PLAN_VERSION, l->k_version, sizeof(l->k_version));
    mw_key(r, MW_KEY_WORKERS, l->k_workers, sizeof(l->k_workers));
    mw_key_worker(r, "", l->k_worker, sizeof(l->k_worker));
    mw_key(r, MW_KEY_PLAN_NOTIFY, l->channel, sizeof(l->channel));
    return l;
}

void mw_lease_destroy(mw_lease_t *l)
{
    free(l);
}

int mw_lease_is_leader(const mw_lease_t *l)
{
    return l->leader;
}
int64_t mw_lease_epoch(const mw_lease_t *l)
{
    return l->epoch;
}
const char *mw_lease_holder(const mw_lease_t *l)
{
    return l->holder;
}

void mw_lease_step_down(mw_lease_t *l, const char *why)
{
    if (!l->leader)
        return;
    mw_log(MW_LOG_WARN, "lease", "stepping down as leader of epoch %lld: %s", (long long)l->epoch,
           why);
    l->leader = 0;
    char epoch[24];
    snprintf(epoch, sizeof(epoch), "%lld", (long long)l->epoch);
    mw_events_add(l->r, l->maxlen, "stepdown", "coordinator", l->id, "epoch", epoch, "msg", why,
                  (const char *)NULL);
}

int mw_lease_tick(mw_lease_t *l)
{
    char lease[24], epoch[24], maxlen[24];
    snprintf(lease, sizeof(lease), "%lld", (long long)l->lease_ms);
    snprintf(epoch, sizeof(epoch), "%lld", (long long)(l->leader ? l->epoch : 0));
    snprintf(maxlen, sizeof(maxlen), "%lld", (long long)l->maxlen);
    const char *keys[4] = {l->k_coord, l->k_epoch, l->k_events, l->k_coords};
    const char *args[4] = {l->id, lease, epoch, maxlen};
    int64_t sent = mw_now_ms();
    redisReply *reply = NULL;
    int rc = mw_redis_eval(l->r, &lease_script, &reply, 4, keys, 4, args, NULL);
    if (rc != MW_OK) {
        if (l->leader && mw_now_ms() - l->renew_sent_ms >= l->lease_ms) {
            char why[256];
            snprintf(why, sizeof(why), "could not renew the lease for %lld ms: %s",
                     (long long)(mw_now_ms() - l->renew_sent_ms), mw_redis_errstr(l->r));
            mw_log(MW_LOG_WARN, "lease", "stepping down as leader of epoch %lld: %s",
                   (long long)l->epoch, why);
            l->leader = 0;
        }
        return rc;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3) {
        freeReplyObject(reply);
        return MW_EPROTO;
    }
    int lead = reply->element[0]->integer == 1;
    int64_t e = reply->element[1]->integer;
    const redisReply *h = reply->element[2];
    snprintf(l->holder, sizeof(l->holder), "%s", h->type == REDIS_REPLY_STRING ? h->str : "");
    freeReplyObject(reply);
    if (lead) {
        if (!l->leader || e != l->epoch)
            mw_log(MW_LOG_INFO, "lease", "%s leads with epoch %lld", l->id, (long long)e);
        l->leader = 1;
        l->epoch = e;
        l->renew_sent_ms = sent;
        return 1;
    }
    if (l->leader) {
        char why[160];
        snprintf(why, sizeof(why), "the lease belongs to %s (epoch %lld)", l->holder, (long long)e);
        mw_lease_step_down(l, why);
    }
    l->epoch = e;
    return 0;
}

int mw_lease_release(mw_lease_t *l)
{
    if (!l->leader)
        return MW_OK;
    char maxlen[24];
    snprintf(maxlen, sizeof(maxlen), "%lld", (long long)l->maxlen);
    const char *keys[2] = {l->k_coord, l->k_events};
    const char *args[2] = {l->id, maxlen};
    l->leader = 0;
    return mw_redis_eval(l->r, &release_script, NULL, 2, keys, 2, args, NULL);
}

static int fenced(mw_lease_t *l, int rc)
{
    if (rc == MW_EREDIS && strncmp(mw_redis_errstr(l->r), "FENCED", 6) == 0)
        return MW_EFENCED;
    return rc;
}

int mw_lease_publish(mw_lease_t *l, const char *plan_json, int64_t version, const char *summary)
{
    char epoch[24], ver[24], maxlen[24];
    snprintf(epoch, sizeof(epoch), "%lld", (long long)l->epoch);
    snprintf(ver, sizeof(ver), "%lld", (long long)version);
    snprintf(maxlen, sizeof(maxlen), "%lld", (long long)l->maxlen);
    const char *keys[5] = {l->k_coord, l->k_epoch, l->k_plan, l->k_version, l->k_events};
    const char *args[7] = {l->id, epoch, plan_json, ver, maxlen, summary, l->channel};
    return fenced(l, mw_redis_eval(l->r, &publish_script, NULL, 5, keys, 7, args, NULL));
}

int mw_lease_hset(mw_lease_t *l, int nkeys, const char *const *keys, const int *nfields,
                  const char *const *fields)
{
    char epoch[24], counts[MW_LEASE_HSET_KEYS][16];
    const char *k[2 + MW_LEASE_HSET_KEYS];
    const char *args[2 + MW_LEASE_HSET_KEYS + 2 * MW_LEASE_HSET_MAX];
    int total = 0;
    if (nkeys < 1 || nkeys > MW_LEASE_HSET_KEYS)
        return MW_EINVAL;
    snprintf(epoch, sizeof(epoch), "%lld", (long long)l->epoch);
    k[0] = l->k_coord;
    k[1] = l->k_epoch;
    args[0] = l->id;
    args[1] = epoch;
    for (int i = 0; i < nkeys; i++) {
        if (nfields[i] < 1 || total + nfields[i] > MW_LEASE_HSET_MAX)
            return MW_EINVAL;
        total += nfields[i];
        k[2 + i] = keys[i];
        snprintf(counts[i], sizeof(counts[i]), "%d", nfields[i]);
        args[2 + i] = counts[i];
    }
    memcpy(&args[2 + nkeys], fields, 2 * (size_t)total * sizeof(*fields));
    return fenced(l, mw_redis_eval(l->r, &hset_script, NULL, 2 + nkeys, k, 2 + nkeys + 2 * total,
                                   args, NULL));
}

int mw_lease_sweep(mw_lease_t *l, int64_t ttl_ms, char (**expired)[64], size_t *n)
{
    char epoch[24], ttl[24], maxlen[24];
    snprintf(epoch, sizeof(epoch), "%lld", (long long)l->epoch);
    snprintf(ttl, sizeof(ttl), "%lld", (long long)ttl_ms);
    snprintf(maxlen, sizeof(maxlen), "%lld", (long long)l->maxlen);
    const char *keys[4] = {l->k_coord, l->k_epoch, l->k_workers, l->k_events};
    const char *args[5] = {l->id, epoch, ttl, maxlen, l->k_worker};
    redisReply *reply = NULL;
    if (expired != NULL)
        *expired = NULL;
    *n = 0;
    int rc = fenced(l, mw_redis_eval(l->r, &sweep_script, &reply, 4, keys, 5, args, NULL));
    if (rc != MW_OK)
        return rc;
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0) {
        if (expired != NULL) {
            *expired = calloc(reply->elements, sizeof(**expired));
            if (*expired == NULL) {
                freeReplyObject(reply);
                return MW_ENOMEM;
            }
            for (size_t i = 0; i < reply->elements; i++)
                snprintf((*expired)[i], 64, "%s",
                         reply->element[i]->str ? reply->element[i]->str : "");
        }
        *n = reply->elements;
    }
    freeReplyObject(reply);
    return MW_OK;
}
