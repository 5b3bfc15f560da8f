/* The scaling decision (README, Autoscaling): a pure function of a pipeline's
 * measured load (load.h), its spec's per-stage min/max and slo_ms, and the
 * decision state, giving the desired worker count of each stage. One step per
 * decision, with hysteresis: scale out the busiest stage by one while the
 * backlog grows or the p99 misses slo_ms; scale in by one when every stage has
 * had spare capacity for scale_in_after_ms; nothing within cooldown_ms of the
 * last change, nor while the last change has not taken effect (for at most
 * scale_in_after_ms: a count that cannot be reached does not freeze it). A scale-out
 * is a move instead when another stage can give one of its --stage auto
 * workers (above its min, spare even without it), and spare capacity moves it
 * back before anything is scaled in. */
#ifndef MW_COORDINATOR_SCALE_H
#define MW_COORDINATOR_SCALE_H

#include "cluster/pipeline.h"
#include "load.h"

#include <stddef.h>
#include <stdint.h>

typedef struct mw_scale_options {
    double busy_high;          /* a stage this busy may be scaled out */
    double busy_low;           /* every stage under this (and under busy_high with one less) */
    int64_t lag_min;           /* a backlog under this never scales out */
    int64_t cooldown_ms;       /* between two changes */
    int64_t scale_in_after_ms; /* spare capacity this long before a scale-in */
} mw_scale_options_t;

/* Moves remembered for moving back: at most this many, the oldest forgotten. */
#define MW_SCALE_MOVES_MAX 8

/* One pipeline's decision state; zeroed before the first decision. */
typedef struct mw_scale_state {
    int initialized;
    int desired[MW_PIPELINE_MAX_STAGES]; /* workers per stage, --stage auto ones included */
    int autos[MW_PIPELINE_MAX_STAGES];   /* of them, --stage auto workers placed there */
    struct {
        int from, to;
    } moved[MW_SCALE_MOVES_MAX]; /* moves not yet moved back, oldest first */
    int nmoved;
    int64_t changed_ms;     /* time of the last change (0: none yet) */
    int64_t spare_since_ms; /* every stage had spare capacity since then (0: not now) */
} mw_scale_state_t;

typedef enum {
    MW_SCALE_NONE = 0,
    MW_SCALE_OUT = 1,
    MW_SCALE_IN = 2,
    MW_SCALE_MOVE = 3 /* one --stage auto worker from stage donor to stage */
} mw_scale_action_t;

typedef struct mw_scale_decision {
    mw_scale_action_t action;
    int stage, from, to; /* the stage gaining (MOVE) or changing, its count before and after */
    int donor;           /* MOVE: the stage giving the worker; -1 otherwise */
    char reason[160];    /* "busy 0.97, lag +1200/s" */
} mw_scale_decision_t;

/* Starts st from counts (e.g. desired counts already published, or the workers
 * at each stage), clamped to the spec's bounds, and autos (the --stage auto
 * workers placed at each stage, at most counts[s]). */
void mw_scale_init(mw_scale_state_t *st, const mw_pipeline_spec_t *spec, const int *counts,
                   const int *autos);

/* Decides at now_ms; updates st->desired and st->autos and returns the decision
 * (action MW_SCALE_NONE when nothing is decided). First, without a decision,
 * the --stage auto workers placed follow those measured (load's autos): one
 * gone is forgotten with its desired count (not under min), one new is added
 * with one (not over max). A scale-in never counts on stopping an auto
 * worker. Pure: no I/O. */
mw_scale_decision_t mw_scale_decide(mw_scale_state_t *st, const mw_pipeline_spec_t *spec,
                                    const mw_pipeline_load_t *load, const mw_scale_options_t *opt,
                                    int64_t now_ms);

#endif
