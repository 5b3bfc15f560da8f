/* What mwctl's Kafka client commands (submit, results, score) share: clocks,
 * the progress line, config tuned per client, and a results consumer. */
#ifndef MW_MWCTL_CLIENT_H
#define MW_MWCTL_CLIENT_H

#include "config.h"

#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <stdint.h>

/* Monotonic seconds. */
double mwctl_now_s(void);

/* Unix time in milliseconds. */
int64_t mwctl_wall_ms(void);

/* A progress report on stderr: a bar redrawn in place on a terminal (tty), a
 * plain line every 2 s otherwise; nothing unless enabled. The rate counts
 * done - base (work done before start, e.g. found already done, is not this
 * run's speed). */
typedef struct mwctl_progress {
    int enabled, tty;
    double start, last;
    int64_t base;
    const char *what;
} mwctl_progress_t;

/* A progress for what, started now. */
void mwctl_progress_init(mwctl_progress_t *p, const char *what, int enabled);

/* Shows "WHAT [bar] done/total (x%), N acked, R/s, ETA m:ss" (acked < 0 leaves the
 * acknowledged count out; total <= 0 the total, bar and ETA), at most every 0.2 s
 * on a terminal unless force. */
void mwctl_progress_show(mwctl_progress_t *p, int64_t done, int64_t total, int64_t acked,
                         int force);

/* Ends the redrawn line on a terminal. */
void mwctl_progress_end(mwctl_progress_t *p);

/* cfg with one more kafka.* setting, key = value, unless cfg sets key itself
 * (later settings win). *out borrows cfg's strings and kv, which needs room for
 * cfg->kafka_count + 1 pairs: never mw_config_fini it. */
void mwctl_with_kafka_default(const mw_config_t *cfg, mw_config_t *out, mw_kv_t *kv, char *key,
                              char *value);

/* A read_committed consumer of topic in a group of its own ("mwctl-WHAT-<pid>-<ms>",
 * committing nothing), assigned to every partition at its current end
 * (from_beginning = 0: only records that come after this call) or at its
 * start. With ends not NULL, *ends gets a malloc'ed array (the caller frees
 * it) of each partition's end offset at this call and *nparts its length.
 * NULL with errstr (a missing topic says so). Caller frees with
 * mw_kafka_destroy. */
rd_kafka_t *mwctl_consumer_open(const mw_config_t *cfg, const char *what, const char *topic,
                                int from_beginning, int64_t **ends, int *nparts, char *errstr,
                                size_t errstr_size);

#endif
