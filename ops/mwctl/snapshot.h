/* The cluster state as one read of Redis, shared by `mwctl status` and
 * `mwctl dashboard`: leader, epoch, coordinators, plan, workers with their
 * data-plane counters, pipeline totals and recent events. */
#ifndef MW_MWCTL_SNAPSHOT_H
#define MW_MWCTL_SNAPSHOT_H

#include "cluster/events.h"
#include "cluster/membership.h"
#include "cluster/plan_doc.h"
#include "config.h"
#include "redis.h"

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

/* Data-plane counters: worker:{id}:stats or stats:{pipeline} (README, Redis keys). */
typedef struct mwctl_counters {
    int64_t processed, rows, results, errors, replays, aborts, inflight;
    int present; /* 0: the hash does not exist (yet, or any more) */
} mwctl_counters_t;

typedef struct mwctl_snapshot {
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
    mwctl_counters_t *worker_stats; /* one per worker */
    size_t nworkers;
    mwctl_counters_t *pipeline_stats; /* one per plan pipeline */
    mw_event_t *events;
    size_t nevents;
} mwctl_snapshot_t;

/* Reads the state with the last nevents events into s (zeroed first; free with
 * mwctl_snapshot_free, also after a failure). Returns MW_OK or the Redis error. */
int mwctl_snapshot_take(mw_redis_t *r, size_t nevents, mwctl_snapshot_t *s);
void mwctl_snapshot_free(mwctl_snapshot_t *s);

/* Worlds of the plan that have worker id as a member. */
size_t mwctl_snapshot_worlds_of(const mwctl_snapshot_t *s, const char *id);

/* Live (not draining) workers of the plan at stage k of pipeline. */
int mwctl_snapshot_stage_workers(const mwctl_snapshot_t *s, const char *pipeline, int k);

/* The snapshot as the JSON object of `mwctl status --json` (README); caller
 * frees with cJSON_Delete. NULL when out of memory. */
cJSON *mwctl_snapshot_json(const mw_config_t *cfg, const mwctl_snapshot_t *s);

#endif
