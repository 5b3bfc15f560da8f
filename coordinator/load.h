/* The leading coordinator's measured load of each pipeline and stage (README,
 * Autoscaling): how busy each stage's workers are (growth of the compute_us
 * counter of worker:{id}:stats over wall time), what is queued at the stage
 * (the workers' inflight), the backlog (Kafka lag of P.requests) and its
 * trend over autoscale.window_ms, and the worst origin p99 latency against
 * the pipeline's slo_ms. Published in load:{P}. */
#ifndef MW_COORDINATOR_LOAD_H
#define MW_COORDINATOR_LOAD_H

#include "cluster/membership.h"
#include "cluster/pipeline.h"
#include "redis.h"

#include <stddef.h>
#include <stdint.h>

typedef struct mw_stage_load {
    int workers;    /* serving at the stage (planned there, or asking for it), not draining */
    int autos;      /* of them, --stage auto workers (the planner may move them) */
    int measured;   /* of them, those with two compute samples in the window */
    double busy;    /* mean over the measured of compute time / wall time (0..1); 0: none */
    int64_t queued; /* requests its workers hold (inflight) */
} mw_stage_load_t;

typedef struct mw_pipeline_load {
    int nstages;
    mw_stage_load_t stages[MW_PIPELINE_MAX_STAGES];
    int64_t lag;     /* Kafka lag of P.requests; -1 while unknown */
    double lag_rate; /* its growth per second over the window (negative: draining) */
    int64_t p99_us;  /* worst p99 latency its origins report (last 10 s); 0: none */
} mw_pipeline_load_t;

typedef struct mw_load mw_load_t;

/* A tracker for the pipelines of spec (borrowed, must outlive it) measuring over
 * window_ms. NULL when out of memory. */
mw_load_t *mw_load_new(const mw_pipelines_t *spec, int64_t window_ms);

/* One measurement at now_ms: recs are every worker as read (mw_member_read_all),
 * lag[p] the backlog of pipeline p (-1 unknown); reads each worker's compute_us.
 * MW_OK, or the Redis error (the sample is then skipped). */
int mw_load_sample(mw_load_t *l, mw_redis_t *r, const mw_member_record_t *recs, size_t n,
                   const int64_t *lag, int64_t now_ms);

/* The latest figures of pipeline p (borrowed; valid until the next sample). */
const mw_pipeline_load_t *mw_load_get(const mw_load_t *l, size_t p);

/* Writes pipeline p's figures into load:{P} (one HSET), with at_ms. */
int mw_load_publish(const mw_load_t *l, mw_redis_t *r, size_t p, int64_t at_ms);

/* Accepts NULL. */
void mw_load_destroy(mw_load_t *l);

#endif
