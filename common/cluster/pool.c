/* The agents' worker pool in Redis (pool.h). */
#include "pool.h"

#include "err.h"
#include "keys.h"

#include <stdio.h>

/* Workers of stage ARGV[1] in pool KEYS[1], as a Lua function, and the pool's
 * share of the stage: desired KEYS[2] less the --stage auto workers the
 * coordinator places there (KEYS[3]; absent: none). */
#define COUNT_LUA                                                                                  \
    "local function count()\n"                                                                     \
    "  local n, p = 0, ARGV[1] .. '|'\n"                                                           \
    "  for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do\n"                                      \
    "    if string.sub(f, 1, #p) == p then n = n + 1 end\n"                                        \
    "  end\n"                                                                                      \
    "  return n\n"                                                                                 \
    "end\n"                                                                                        \
    "local want = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '')\n"                          \
    "if want ~= nil then\n"                                                                        \
    "  want = want - (tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '') or 0)\n"                \
    "end\n"

/* KEYS: pool, desired, auto, slots; ARGV: stage, field, slot, slot value */
static mw_redis_script_t claim_script = {
    "pool_claim",
    COUNT_LUA "if want == nil or count() >= want then return 0 end\n"
              "if redis.call('HSETNX', KEYS[4], ARGV[3], ARGV[4]) == 0 then return 2 end\n"
              "redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])\n"
              "return 1\n",
    "",
};

/* KEYS: pool, desired, auto; ARGV: stage, field */
static mw_redis_script_t shrink_script = {
    "pool_shrink",
    COUNT_LUA "if want == nil or count() <= want then return 0 end\n"
              "return redis.call('HDEL', KEYS[1], ARGV[2])\n",
    "",
};

/* KEYS: pool, slots; ARGV: field, slot, the slot's value as the caller read it.
 * Only while the slot still holds that value: another agent may have freed it
 * and claimed it again since (the same field when the same agent and stage). */
static mw_redis_script_t release_script = {
    "pool_release",
    "if redis.call('HGET', KEYS[2], ARGV[2]) ~= ARGV[3] then return 0 end\n"
    "redis.call('HDEL', KEYS[1], ARGV[1])\n"
    "redis.call('HDEL', KEYS[2], ARGV[2])\n"
    "return 1\n",
    "",
};

typedef struct names {
    char pool[MW_KEY_MAX], desired[MW_KEY_MAX], autos[MW_KEY_MAX], slots[MW_KEY_MAX];
    char stage[16], field[512], value[MW_POOL_VALUE_MAX];
} names_t;

static void name(names_t *n, mw_redis_t *r, const char *pipeline, int stage, const char *agent,
                 const char *slot, int64_t pid)
{
    mw_key_pool(r, pipeline, n->pool, sizeof(n->pool));
    mw_key_desired(r, pipeline, n->desired, sizeof(n->desired));
    mw_key_auto(r, pipeline, n->autos, sizeof(n->autos));
    mw_key(r, MW_KEY_SLOTS, n->slots, sizeof(n->slots));
    snprintf(n->stage, sizeof(n->stage), "%d", stage);
    snprintf(n->field, sizeof(n->field), "%d|%s|%s", stage, agent, slot);
    mw_pool_slot_value(n->value, sizeof(n->value), agent, pid, pipeline, stage);
}

char *mw_pool_slot_value(char *buf, size_t size, const char *agent, int64_t pid,
                         const char *pipeline, int stage)
{
    snprintf(buf, size, "%s %lld %s %d", agent, (long long)pid, pipeline, stage);
    return buf;
}

/* The script's integer answer (0 when it is not one), or a negative MW_E*. */
static int eval_int(mw_redis_t *r, mw_redis_script_t *s, int nkeys, const char **keys, int nargs,
                    const char **args)
{
    redisReply *reply = NULL;
    int rc = mw_redis_eval(r, s, &reply, nkeys, keys, nargs, args, NULL);
    if (rc != MW_OK)
        return rc;
    rc = reply->type == REDIS_REPLY_INTEGER ? (int)reply->integer : 0;
    freeReplyObject(reply);
    return rc;
}

int mw_pool_claim(mw_redis_t *r, const char *pipeline, int stage, const char *agent,
                  const char *slot)
{
    names_t n;
    name(&n, r, pipeline, stage, agent, slot, 0);
    const char *keys[] = {n.pool, n.desired, n.autos, n.slots};
    const char *args[] = {n.stage, n.field, slot, n.value};
    return eval_int(r, &claim_script, 4, keys, 4, args);
}

int mw_pool_started(mw_redis_t *r, const char *pipeline, int stage, const char *agent,
                    const char *slot, int64_t pid)
{
    names_t n;
    name(&n, r, pipeline, stage, agent, slot, pid);
    return mw_redis_cmd(r, NULL, "HSET %s %s %s", n.slots, slot, n.value);
}

int mw_pool_shrink(mw_redis_t *r, const char *pipeline, int stage, const char *agent,
                   const char *slot)
{
    names_t n;
    name(&n, r, pipeline, stage, agent, slot, 0);
    const char *keys[] = {n.pool, n.desired, n.autos};
    const char *args[] = {n.stage, n.field};
    return eval_int(r, &shrink_script, 3, keys, 2, args);
}

int mw_pool_release(mw_redis_t *r, const char *pipeline, int stage, const char *agent,
                    const char *slot, const char *value)
{
    names_t n;
    name(&n, r, pipeline, stage, agent, slot, 0);
    const char *keys[] = {n.pool, n.slots};
    const char *args[] = {n.field, slot, value};
    return eval_int(r, &release_script, 2, keys, 3, args);
}
