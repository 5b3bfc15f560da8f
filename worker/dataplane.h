/* The data plane of a worker (DESIGN §2, §3): receives activations over its
 * worlds, runs its stage, forwards to the next stage; at stage 0 (an origin) it
 * also consumes requests from Kafka and produces results exactly once.
 *
 * The control plane owns the worlds (it joins and destroys them as the plan
 * says) and hands each one to the data plane through the seam below; the data
 * plane only posts operations on them. Everything runs on one engine thread
 * started by mw_dataplane_new; the functions here may be called from any
 * other thread. */
#ifndef MW_DATAPLANE_H
#define MW_DATAPLANE_H

#include "config.h"
#include "cluster/plan_doc.h"
#include "world/world.h"

#include <stddef.h>
#include <stdint.h>

typedef struct mw_dataplane mw_dataplane_t;

/* What one worker serves. Strings are copied by mw_dataplane_new. */
typedef struct mw_dataplane_opts {
    const char *worker_id; /* this worker; the origin id of the requests it consumes */
    const char *pipeline;  /* topics P.requests, P.results, P.dlq; consumer group mw.P */
    int stage, nstages;    /* 0 <= stage < nstages */
    const char *model_path;
    int first_layer, last_layer; /* layers [first, last) of this stage; -1: the model cut
                                    into nstages by FLOPs (mw_model_split) */
    int device;                  /* -1: CPU, else a CUDA device */
    mw_worlds_t *worlds;         /* the context of the worlds handed over (its completion
                                    descriptor wakes the engine); NULL: checked every 10 ms */
} mw_dataplane_opts_t;

/* Fills opts for worker_id from the plan: its stage, the pipeline's stage
 * count, model (model_default when the pipeline names none) and layer range.
 * Strings in opts borrow from plan and model_default. MW_ENOTFOUND when the
 * plan does not place the worker. */
int mw_dataplane_opts_from_plan(const mw_plan_t *plan, const char *worker_id,
                                const char *model_default, mw_dataplane_opts_t *opts, char *errstr,
                                size_t errstr_size);

/* Opens the model and the stage and starts the engine thread, which at stage
 * 0 first creates the Kafka consumer (group mw.P, cooperative-sticky) and the
 * producer (transactional, id "mw.<cluster>.<pipeline>.<worker id>", unless
 * delivery = at-least-once); a failure there is fatal (mw_dataplane_error). cfg is copied. *out is
 * the caller's (mw_dataplane_destroy). */
int mw_dataplane_new(const mw_config_t *cfg, const mw_dataplane_opts_t *opts, mw_dataplane_t **out,
                     char *errstr, size_t errstr_size);

/* Stops the engine: an origin commits the results it can release and leaves
 * its consumer group. Worlds still handed over are dropped (not destroyed:
 * they are the caller's); worlds given back with world_removed are destroyed.
 * Accepts NULL. */
void mw_dataplane_destroy(mw_dataplane_t *dp);

/* The seam with the control plane. world_added hands over a world (JOINING
 * or READY) of exactly two members to peer peer_id at peer_stage; my_rank is
 * this worker's rank in it. The world stays the caller's while it is handed
 * over; world_removed gives it to the data plane for good: the engine aborts
 * the requests routed through it (as for a broken world) and destroys it, so
 * the caller must not touch w after the call (which does not wait for the
 * engine). A broken world is noticed by the engine itself: it stops using it
 * and aborts the requests routed through it. */
void mw_dataplane_world_added(mw_dataplane_t *dp, mw_world_t *w, const char *peer_id,
                              int peer_stage, int my_rank);
void mw_dataplane_world_removed(mw_dataplane_t *dp, mw_world_t *w);

/* Routes from the plan: a hop only picks a downstream worker from which the
 * request can still reach its origin. Until the first call every downstream
 * world is assumed to reach every origin. plan is read during the call only. */
void mw_dataplane_set_routes(mw_dataplane_t *dp, const mw_plan_t *plan);

/* Stops taking requests from Kafka (an origin's partitions stay paused);
 * requests already held are finished and committed. Any thread. */
void mw_dataplane_drain(mw_dataplane_t *dp);

typedef struct mw_dataplane_stats {
    int64_t inflight;  /* origin: consumed, not yet committed; others: tensors received,
                          held or being sent */
    int64_t processed; /* batches this stage computed (one stage call each) */
    int64_t rows;      /* rows in them: rows / processed is the mean batch */
    int64_t results;   /* origin: results committed (ok and error) */
    int64_t errors;    /* origin: error results (each with a DLQ copy) */
    int64_t replays;   /* origin: dispatches after the first (attempt > 1) */
    int64_t aborts;    /* abort frames sent upstream */
    int64_t worlds;    /* worlds handed over and usable */

    int64_t compute_us; /* time in stage calls: its growth over wall time is how busy */
} mw_dataplane_stats_t;

/* A snapshot of the counters. Any thread. */
void mw_dataplane_stats(mw_dataplane_t *dp, mw_dataplane_stats_t *stats);

#define MW_DATAPLANE_LATENCY_WINDOW_MS 10000

/* Origins: the median and 99th percentile (nearest rank) of the latencies
 * (consumed -> result ready, as mw-latency-us) of the ok results committed in
 * the last MW_DATAPLANE_LATENCY_WINDOW_MS; 0 when there are none. Any thread. */
void mw_dataplane_latency(mw_dataplane_t *dp, int64_t *p50_us, int64_t *p99_us);

/* 0 while the engine runs; after a fatal error (a fenced transactional
 * producer, a model that fails to load) a negative MW_E* with its text. The
 * worker should then exit, so that a fresh process takes its place. */
int mw_dataplane_error(mw_dataplane_t *dp, char *errstr, size_t errstr_size);

#endif
