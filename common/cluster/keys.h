/* Every Redis key and channel of a cluster (README "Redis keys"), built in one
 * place from the prefix "mw:{cluster}:". The world rendezvous key
 * (world:{name}:{epoch}) is built by world/rendezvous.c. */
#ifndef MW_KEYS_H
#define MW_KEYS_H

#include "redis.h"

#include <stddef.h>

/* Room for any key below: a 67-byte prefix, "worker:", a worker id, ":stats". */
#define MW_KEY_MAX 192

/* The keys without a parameter. */
typedef enum {
    MW_KEY_WORKERS,      /* workers: sorted set, score = last heartbeat */
    MW_KEY_COORDINATOR,  /* coordinator: the lease */
    MW_KEY_EPOCH,        /* epoch: the fencing epoch */
    MW_KEY_COORDINATORS, /* coordinators: sorted set, every coordinator seen */
    MW_KEY_PLAN,         /* plan: the plan JSON */
    MW_KEY_PLAN_VERSION, /* plan:version: "<epoch>:<version>" of plan */
    MW_KEY_PLAN_NOTIFY,  /* plan:notify: pub/sub channel of plan notices */
    MW_KEY_EVENTS,       /* events: stream */
    MW_KEY_AGENTS,       /* agents: sorted set of host agents, score = last report (ms) */
    MW_KEY_SLOTS,        /* slots: hash, a host's slot -> the agent's worker on it */
} mw_key_t;

/* Writes key k of r's cluster into buf (size >= MW_KEY_MAX); returns buf. */
const char *mw_key(const mw_redis_t *r, mw_key_t k, char *buf, size_t size);

/* worker:{id}, the worker's hash. With id "" it is the prefix of every worker
 * hash, which Lua scripts complete with an id. Returns buf. */
const char *mw_key_worker(const mw_redis_t *r, const char *id, char *buf, size_t size);

/* worker:{id}:stats, the worker's data-plane counters. Returns buf. */
const char *mw_key_worker_stats(const mw_redis_t *r, const char *id, char *buf, size_t size);

/* stats:{pipeline}, the pipeline's totals. Returns buf. */
const char *mw_key_stats(const mw_redis_t *r, const char *pipeline, char *buf, size_t size);

/* Samples kept in each history:{pipeline} stream (XADD MAXLEN ~): an hour at one a second. */
#define MW_HISTORY_MAXLEN 3600

/* history:{pipeline}, the stream of the leader's per-second samples of the
 * pipeline's totals. Returns buf. */
const char *mw_key_history(const mw_redis_t *r, const char *pipeline, char *buf, size_t size);

/* load:{pipeline}, the leader's measured load of the pipeline (hash). Returns buf. */
const char *mw_key_load(const mw_redis_t *r, const char *pipeline, char *buf, size_t size);

/* desired:{pipeline}, the desired worker count per stage (hash). Returns buf. */
const char *mw_key_desired(const mw_redis_t *r, const char *pipeline, char *buf, size_t size);

/* auto:{pipeline}, of the desired count per stage, the --stage auto workers the
 * coordinator places there (hash). Returns buf. */
const char *mw_key_auto(const mw_redis_t *r, const char *pipeline, char *buf, size_t size);

/* pool:{pipeline}, the workers host agents run for the pipeline (hash). Returns buf. */
const char *mw_key_pool(const mw_redis_t *r, const char *pipeline, char *buf, size_t size);

/* agent:{id}, a host agent's capacity report (hash). Returns buf. */
const char *mw_key_agent(const mw_redis_t *r, const char *id, char *buf, size_t size);

#endif
