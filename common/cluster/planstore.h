/* Reading the published plan from Redis: `plan` (JSON) and `plan:version`
 * ("epoch:version"), for workers, mwctl and a coordinator that takes over. */
#ifndef MW_PLANSTORE_H
#define MW_PLANSTORE_H

#include "plan_doc.h"
#include "redis.h"

#include <stddef.h>
#include <stdint.h>

/* The published plan's epoch and version (0, 0 when none). Cheap: for polling. */
int mw_planstore_version(mw_redis_t *r, int64_t *epoch, int64_t *version);

/* Reads and decodes the published plan. *out is NULL (and MW_OK) when there is none;
 * a malformed plan returns MW_EINVAL with the decoder's message. Caller frees *out. */
int mw_planstore_read(mw_redis_t *r, mw_plan_t **out, char *errstr, size_t errstr_size);

#endif
