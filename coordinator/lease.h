/* Coordinator leadership: a Redis lease (SET PX) with a fencing epoch (INCR on each
 * takeover), and the writes only the leader may do — plan publication and the sweep
 * of expired workers — each checking lease and epoch in the same Lua script. */
#ifndef MW_LEASE_H
#define MW_LEASE_H

#include "redis.h"

#include <stddef.h>
#include <stdint.h>

typedef struct mw_lease mw_lease_t;

/* A lease handle for coordinator id (copied). r is borrowed and must outlive it.
 * Caller frees with mw_lease_destroy. One thread at a time. */
mw_lease_t *mw_lease_new(mw_redis_t *r, const char *id, int64_t lease_ms, int64_t events_maxlen);
void mw_lease_destroy(mw_lease_t *l);

/* Acquires the lease when free, renews it when held: 1 when this handle leads
 * (mw_lease_epoch is its epoch), 0 when another coordinator does, or a negative
 * MW_E* when Redis did not answer. A leader steps down when the script says the
 * lease is someone else's, and also on its own when it could not renew for
 * lease_ms (it cannot know whether it still leads). */
int mw_lease_tick(mw_lease_t *l);

int mw_lease_is_leader(const mw_lease_t *l);
int64_t mw_lease_epoch(const mw_lease_t *l);
/* The leader as last seen ("" when unknown). */
const char *mw_lease_holder(const mw_lease_t *l);

/* Forgets leadership locally (after a fenced write); the next tick re-reads it. */
void mw_lease_step_down(mw_lease_t *l, const char *why);

/* Gives the lease up when held (compare-and-delete), so a standby takes over at once. */
int mw_lease_release(mw_lease_t *l);

/* Publishes a plan: in one script, checks that this handle holds the lease under
 * its epoch, then sets `plan` and `plan:version` ("epoch:version"), appends a `plan`
 * event with summary and PUBLISHes "epoch:version" on the `plan:notify` channel.
 * MW_EFENCED when the lease or epoch moved on (the caller steps down). */
int mw_lease_publish(mw_lease_t *l, const char *plan_json, int64_t version, const char *summary);

/* Sets, in one step, nfields[i] (at least 1) field/value pairs of each hash
 * keys[i] (i < nkeys <= MW_LEASE_HSET_KEYS; MW_LEASE_HSET_MAX pairs in all):
 * fields holds the pairs of keys[0], then of keys[1], ...; fenced like
 * publication (MW_EFENCED when the lease or epoch moved on). */
#define MW_LEASE_HSET_KEYS 4
#define MW_LEASE_HSET_MAX  64
int mw_lease_hset(mw_lease_t *l, int nkeys, const char *const *keys, const int *nfields,
                  const char *const *fields);

/* Removes workers whose last heartbeat (server time) is older than ttl_ms, with an
 * `expire` event each; fenced like publication. *expired (caller frees, may be NULL)
 * gets *n ids, each MW_PLAN-sized (64 bytes). */
int mw_lease_sweep(mw_lease_t *l, int64_t ttl_ms, char (**expired)[64], size_t *n);

#endif
