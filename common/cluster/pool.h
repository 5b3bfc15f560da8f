/* The pool of workers that host agents run (README, Autoscaling): pool:{P}
 * holds one field "<stage>|<agent>|<slot>" per worker started and not being
 * stopped, and `slots` one field "<slot>" (a host's device slot, "host/cpu#0",
 * "host/cuda:1") -> "<agent> <pid> <pipeline> <stage>" per slot in use. Each
 * change is one Lua script that compares the pool with its share of
 * desired:{P} (less the --stage auto workers of auto:{P}), so several
 * agents never start more workers than desired, never stop more than the
 * surplus, and never take the same slot. */
#ifndef MW_POOL_H
#define MW_POOL_H

#include "redis.h"

#include <stddef.h>
#include <stdint.h>

/* Claims slot for a new worker of pipeline at stage when the pool holds fewer
 * than desired:{pipeline}[stage] workers there and the slot is free: 1
 * claimed, 0 not (enough workers), MW_POOL_SLOT_TAKEN (the slot is in use:
 * try another), or a negative MW_E*. */
#define MW_POOL_SLOT_TAKEN 2

/* Room for a value of `slots`. */
#define MW_POOL_VALUE_MAX 256

int mw_pool_claim(mw_redis_t *r, const char *pipeline, int stage, const char *agent,
                  const char *slot);

/* Records the pid of the worker started on a claimed slot. */
int mw_pool_started(mw_redis_t *r, const char *pipeline, int stage, const char *agent,
                    const char *slot, int64_t pid);

/* Takes agent's worker on slot out of the pool when the pool holds more than
 * desired at stage: 1 taken out (the caller stops it, then releases the slot),
 * 0 not, or a negative MW_E*. The slot stays claimed until mw_pool_release. */
int mw_pool_shrink(mw_redis_t *r, const char *pipeline, int stage, const char *agent,
                   const char *slot);

/* The value of `slots` for agent's worker pid (0 while it is being started)
 * of pipeline at stage, in buf; returns buf. */
char *mw_pool_slot_value(char *buf, size_t size, const char *agent, int64_t pid,
                         const char *pipeline, int stage);

/* Frees slot and removes its worker from the pool (it exited), but only while
 * `slots` still holds value for slot (what the caller read there, or wrote:
 * mw_pool_slot_value), so that a stale release never frees a slot claimed
 * again since: 1 freed, 0 not (its value changed), or a negative MW_E*. */
int mw_pool_release(mw_redis_t *r, const char *pipeline, int stage, const char *agent,
                    const char *slot, const char *value);

#endif
