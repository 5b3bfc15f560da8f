/* A worker's serving side: its worlds (joined and destroyed as the plan's
 * reconciliation says) and its data plane (created once the plan places the
 * worker). The one place where the control plane meets the data path. */
#ifndef MW_SERVING_H
#define MW_SERVING_H

#include "config.h"
#include "cluster/plan_doc.h"
#include "reconcile.h"

#include <stddef.h>
#include <stdint.h>

/* The world backends whose worlds serving hands to the data plane, which moves
 * host buffers; the worker announces them (`backends` in its hash) so that the
 * planner gives it no world it would join and never use. */
#define MW_SERVING_BACKENDS "tcp"

typedef struct mw_serving mw_serving_t;

/* Creates the worlds context (listener, progress and rendezvous threads) for
 * worker_id. cfg is borrowed and must outlive the handle. *out is the caller's
 * (mw_serving_destroy). */
int mw_serving_new(const mw_config_t *cfg, const char *worker_id, mw_serving_t **out, char *errstr,
                   size_t errstr_size);

/* Stops the data plane (an origin commits what it can and leaves its group),
 * then destroys every world. Accepts NULL. */
void mw_serving_destroy(mw_serving_t *s);

/* Applies one reconciliation of plan (d from mw_reconcile_diff): worlds in
 * d->destroy are taken from the data plane and destroyed, worlds in d->create
 * joined (epoch = the plan's epoch) and handed to it. The data plane is
 * created when the plan first places the worker, re-created when its stage
 * changes, and stopped when the plan drops it. Main thread. */
void mw_serving_apply(mw_serving_t *s, const mw_plan_t *plan, const mw_reconcile_t *d);

/* Origins stop taking new requests (their partitions stay paused) and finish
 * the ones they hold. */
void mw_serving_drain(mw_serving_t *s);

typedef struct mw_serving_stats {
    int64_t worlds_up; /* READY worlds */
    int64_t inflight, processed, rows, compute_us, errors, replays;
    int64_t results, aborts; /* see mw_dataplane_stats_t */
} mw_serving_stats_t;

void mw_serving_stats(mw_serving_t *s, mw_serving_stats_t *stats);

/* The data plane's recent latency percentiles (mw_dataplane_latency); 0
 * without a data plane. */
void mw_serving_latency(mw_serving_t *s, int64_t *p50_us, int64_t *p99_us);

/* The planned worlds that broke, closed or failed to join, as "name@gen name@gen"
 * (what the heartbeat reports, so that the coordinator issues them again under a
 * new gen; README, Worlds). Truncated to whole entries. Main thread. */
void mw_serving_broken(mw_serving_t *s, char *buf, size_t size);

/* 0, or the data plane's fatal error (see mw_dataplane_error): the worker should exit. */
int mw_serving_error(mw_serving_t *s, char *errstr, size_t errstr_size);

#endif
