/* The world planner: a pure function (no I/O, no clock) from live workers, pipeline
 * specs and the previous plan to the next plan document. */
#ifndef MW_PLAN_H
#define MW_PLAN_H

#include "cluster/plan_doc.h"

#include <stddef.h>

typedef struct mw_plan_options {
    int max_fanout; /* worlds a worker opens toward each adjacent stage (soft bound, >= 1) */
    /* --stage auto workers wanted at stage s of spec->items[p]:
     * auto_want[p * MW_PIPELINE_MAX_STAGES + s] (the autoscaling decision). NULL,
     * or -1 at stage 0 of a pipeline: placed by the stages' need alone. */
    const int *auto_want;
} mw_plan_options_t;

/* Computes the plan for members (any order; duplicates and members naming an unknown
 * pipeline or stage, or with an invalid id, go to rejected). prev may be NULL.
 * Guarantees: worlds only between live workers of adjacent stages of the ring
 * 0 -> 1 -> ... -> S-1 -> 0; every world of prev whose members are still live with
 * the same pipeline, stage and device is kept under the same name; new worlds go
 * only to workers that are new or changed, except where a route would otherwise be
 * missing; whenever each stage has a live non-draining worker, every such worker
 * lies on a cycle origin -> ... -> last stage -> same origin. --stage auto
 * workers keep their stage, except to fill a stage with none or to follow
 * opt->auto_want (from a stage over its count to one under it); one leaving
 * for auto_want while its member reports requests in flight (and not at stage
 * 0) is first kept at its stage marked draining, and placed by a later plan. epoch and version are
 * copied from prev (0 without one); the caller sets them. *out is the caller's
 * (mw_plan_destroy). Pure: no I/O, no clock, deterministic. */
/* The backend of a new world between members a and b (DESIGN §4): between GPU
 * workers ("cuda:N"), "cuda-ipc" when they share the GPU (same host and
 * device: NCCL refuses two ranks on one GPU) and "nccl" otherwise (other GPUs
 * of the host, or other hosts), each only when both data planes carry it
 * (mw_plan_member_t.carries); "tcp", with host staging, in every other case
 * (a CPU worker on either end, or a backend one of them cannot use). Pure. */
const char *mw_plan_backend(const mw_plan_member_t *a, const mw_plan_member_t *b);

int mw_plan_compute(const mw_pipelines_t *spec, const mw_plan_member_t *members, size_t nmembers,
                    const mw_plan_t *prev, const mw_plan_options_t *opt, mw_plan_t **out,
                    char *errstr, size_t errstr_size);

#endif
