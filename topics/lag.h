/* Kafka consumer lag of a pipeline's origins: per partition of P.requests, the
 * committed offset of group mw.P against the high watermark. Read-only: the
 * consumer handles never join the group. */
#ifndef MW_TOPICS_LAG_H
#define MW_TOPICS_LAG_H

#include "config.h"

#include <stddef.h>
#include <stdint.h>

typedef struct mw_lag mw_lag_t;

typedef struct mw_partition_lag {
    int32_t partition;
    int64_t committed; /* -1: the group committed nothing yet (lag counts from the low watermark) */
    int64_t low, high; /* watermarks */
    int64_t lag;
} mw_partition_lag_t;

/* A lag reader for cfg's Kafka (cfg is borrowed and must outlive it); free with
 * mw_lag_destroy. NULL when out of memory. Used by one thread at a time. */
mw_lag_t *mw_lag_new(const mw_config_t *cfg);
void mw_lag_destroy(mw_lag_t *lag);

/* The lag of each partition of <pipeline>.requests into *out (caller frees;
 * *n entries, by partition), asking Kafka at most once per max_age_ms per
 * pipeline (ten times less often after a failure). MW_OK, or an error with
 * errstr (Kafka unreachable, no topic). */
int mw_lag_read(mw_lag_t *lag, const char *pipeline, int64_t max_age_ms, mw_partition_lag_t **out,
                size_t *n, char *errstr, size_t errstr_size);

#endif
