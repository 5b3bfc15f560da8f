/* The cluster's event stream (mw:{cluster}:events, capped): what a dashboard shows. */
#ifndef MW_EVENTS_H
#define MW_EVENTS_H

#include "redis.h"

#include <stddef.h>
#include <stdint.h>

/* One event as read back: the stream id ("<ms>-<seq>", server time) and its fields. */
typedef struct mw_event {
    char id[32];
    int64_t ms; /* server time of the event */
    char type[24];
    char worker[64];
    char text[512]; /* the other fields as "k=v k=v" */
} mw_event_t;

/* Appends an event (XADD MAXLEN ~ maxlen) with type and NULL-terminated field/value
 * string pairs. Errors are logged at debug level and returned (events are best effort). */
int mw_events_add(mw_redis_t *r, int64_t maxlen, const char *type, ...) __attribute__((sentinel));

/* Reads up to count events after after_id ("0" or "$"-less id; "" = the last count
 * events), oldest first, waiting up to block_ms for new ones when block_ms > 0.
 * *out (caller frees) holds *n events; *last_id is updated to the newest id seen. */
int mw_events_read(mw_redis_t *r, const char *after_id, size_t count, int64_t block_ms,
                   mw_event_t **out, size_t *n, char *last_id, size_t last_id_size);

#endif
