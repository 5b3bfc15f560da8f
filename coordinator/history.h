/* The leading coordinator's per-second samples of each pipeline into the
 * capped stream history:{P} (README, Redis keys): its totals from stats:{P}
 * and the consumer lag of its origins on P.requests. The lag is read from
 * Kafka on a thread of its own, started with the first sample, so that a
 * Kafka that does not answer delays the lag, never the lease. */
#ifndef MW_COORDINATOR_HISTORY_H
#define MW_COORDINATOR_HISTORY_H

#include "cluster/pipeline.h"
#include "config.h"
#include "redis.h"

typedef struct mw_history mw_history_t;

/* cfg and spec are borrowed and must outlive the sampler. NULL when out of memory. */
mw_history_t *mw_history_new(const mw_config_t *cfg, const mw_pipelines_t *spec);

/* One sample of every pipeline (best effort: a failed one is a gap in the
 * chart). The lag field is the last total the lag thread read, -1 while
 * unknown (Kafka unreachable, no topic yet). */
void mw_history_sample(mw_history_t *h, mw_redis_t *r);

/* The last total lag the lag thread read for pipeline p (index in the spec);
 * -1 while unknown. */
int64_t mw_history_lag(mw_history_t *h, size_t p);

/* Stops the lag thread; accepts NULL. */
void mw_history_destroy(mw_history_t *h);

#endif
