/* Logging: one line per event, one write() per line, to one sink (stderr by
 * default). librdkafka's log callback feeds the same sink (see kafka.c). */
#ifndef MW_LOG_H
#define MW_LOG_H

#include <stddef.h>

typedef enum {
    MW_LOG_DEBUG = 0,
    MW_LOG_INFO = 1,
    MW_LOG_WARN = 2,
    MW_LOG_ERROR = 3,
} mw_log_level_t;

/* Logs one line: `2026-11-27T14:41:24.123Z INFO  mw-worker[123] facility: msg`.
 * Thread-safe; lines longer than 4 KiB are truncated. */
void mw_log(mw_log_level_t level, const char *facility, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Process-wide settings; call from main before threads start. ident is
 * borrowed and must outlive logging. */
void mw_log_init(const char *ident, mw_log_level_t level);
void mw_log_set_level(mw_log_level_t level);
int mw_log_enabled(mw_log_level_t level);

/* Parses "debug", "info", "warn" or "error"; 0 on success, MW_EINVAL otherwise. */
int mw_log_level_parse(const char *name, mw_log_level_t *level);

#endif
