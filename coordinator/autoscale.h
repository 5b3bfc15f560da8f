/* The leader's autoscaling loop (README, Autoscaling): measures load (load.h)
 * every autoscale.window_ms / 16, publishes it in load:{P}, and every
 * autoscale.interval_ms decides (scale.h) and publishes the desired worker
 * count of each stage in desired:{P}, and of them the --stage auto workers the
 * planner places there in auto:{P}, recording each change as a scale_out,
 * scale_in or move event with its reason. Host agents (mw-agent) and external scalers
 * act on desired:{P}; nothing here starts or stops a process. */
#ifndef MW_COORDINATOR_AUTOSCALE_H
#define MW_COORDINATOR_AUTOSCALE_H

#include "cluster/membership.h"
#include "cluster/pipeline.h"
#include "config.h"
#include "history.h"
#include "lease.h"
#include "redis.h"

typedef struct mw_autoscale mw_autoscale_t;

/* cfg, spec, history and lease are borrowed and must outlive the handle;
 * desired:{P} is written through lease (fenced). NULL when out of memory. */
mw_autoscale_t *mw_autoscale_new(const mw_config_t *cfg, const mw_pipelines_t *spec,
                                 mw_history_t *history, mw_lease_t *lease);

/* Leadership was (re)gained: the next tick starts each pipeline from its
 * published desired counts (or, when none, from the workers at each stage). */
void mw_autoscale_reset(mw_autoscale_t *a);

/* One leader iteration with the workers as read (mw_member_read_all). */
void mw_autoscale_tick(mw_autoscale_t *a, mw_redis_t *r, const mw_member_record_t *recs, size_t n);

/* The --stage auto workers the decision places at each stage of pipeline p
 * (auto:{P}) into want[MW_PIPELINE_MAX_STAGES], for the planner: 1, or 0 while
 * this leader has not decided for p yet. */
int mw_autoscale_auto_want(const mw_autoscale_t *a, size_t p, int *want);

/* Accepts NULL. */
void mw_autoscale_destroy(mw_autoscale_t *a);

#endif
