/* Redis key names of a cluster (see keys.h and the README's key table). */
#include "keys.h"

#include <stdio.h>

static const char *const names[] = {
    [MW_KEY_WORKERS] = "workers",
    [MW_KEY_COORDINATOR] = "coordinator",
    [MW_KEY_EPOCH] = "epoch",
    [MW_KEY_COORDINATORS] = "coordinators",
    [MW_KEY_PLAN] = "plan",
    [MW_KEY_PLAN_VERSION] = "plan:version",
    [MW_KEY_PLAN_NOTIFY] = "plan:notify",
    [MW_KEY_EVENTS] = "events",
    [MW_KEY_AGENTS] = "agents",
    [MW_KEY_SLOTS] = "slots",
};

const char *mw_key(const mw_redis_t *r, mw_key_t k, char *buf, size_t size)
{
    snprintf(buf, size, "%s%s", mw_redis_prefix(r), names[k]);
    return buf;
}

const char *mw_key_worker(const mw_redis_t *r, const char *id, char *buf, size_t size)
{
    snprintf(buf, size, "%sworker:%s", mw_redis_prefix(r), id);
    return buf;
}

const char *mw_key_worker_stats(const mw_redis_t *r, const char *id, char *buf, size_t size)
{
    snprintf(buf, size, "%sworker:%s:stats", mw_redis_prefix(r), id);
    return buf;
}

const char *mw_key_stats(const mw_redis_t *r, const char *pipeline, char *buf, size_t size)
{
    snprintf(buf, size, "%sstats:%s", mw_redis_prefix(r), pipeline);
    return buf;
}

static const char *named(const mw_redis_t *r, const char *kind, const char *name, char *buf,
                         size_t size)
{
    snprintf(buf, size, "%s%s:%s", mw_redis_prefix(r), kind, name);
    return buf;
}

const char *mw_key_history(const mw_redis_t *r, const char *pipeline, char *buf, size_t size)
{
    return named(r, "history", pipeline, buf, size);
}

const char *mw_key_load(const mw_redis_t *r, const char *pipeline, char *buf, size_t size)
{
    return named(r, "load", pipeline, buf, size);
}

const char *mw_key_desired(const mw_redis_t *r, const char *pipeline, char *buf, size_t size)
{
    return named(r, "desired", pipeline, buf, size);
}

const char *mw_key_auto(const mw_redis_t *r, const char *pipeline, char *buf, size_t size)
{
    return named(r, "auto", pipeline, buf, size);
}

const char *mw_key_pool(const mw_redis_t *r, const char *pipeline, char *buf, size_t size)
{
    return named(r, "pool", pipeline, buf, size);
}

const char *mw_key_agent(const mw_redis_t *r, const char *id, char *buf, size_t size)
{
    return named(r, "agent", id, buf, size);
}
