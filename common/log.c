/* The log sink: formats a whole line, then writes it with a single write(). */
#include "log.h"

#include "err.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static const char *log_ident = "mw";
static atomic_int log_level = MW_LOG_INFO;

static const char *const level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

void mw_log_init(const char *ident, mw_log_level_t level)
{
    log_ident = ident;
    atomic_store(&log_level, (int)level);
}

void mw_log_set_level(mw_log_level_t level)
{
    atomic_store(&log_level, (int)level);
}

int mw_log_enabled(mw_log_level_t level)
{
    return (int)level >= atomic_load(&log_level);
}

int mw_log_level_parse(const char *name, mw_log_level_t *level)
{
    for (int i = MW_LOG_DEBUG; i <= MW_LOG_ERROR; i++) {
        if (strcasecmp(name, level_names[i]) == 0) {
            *level = (mw_log_level_t)i;
            return MW_OK;
        }
    }
    if (strcasecmp(name, "warning") == 0) {
        *level = MW_LOG_WARN;
        return MW_OK;
    }
    return MW_EINVAL;
}

void mw_log(mw_log_level_t level, const char *facility, const char *fmt, ...)
{
    if (!mw_log_enabled(level))
        return;

    char line[4096];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof(line),
                     "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s %s[%ld] %s: ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (long)(tv.tv_usec / 1000), level_names[level], log_ident, (long)getpid(),
                     facility);
    if (n < 0)
        return;
    size_t len = (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1;

    va_list ap;
    va_start(ap, fmt);
    n = vsnprintf(line + len, sizeof(line) - len, fmt, ap);
    va_end(ap);
    if (n > 0)
        len += (size_t)n < sizeof(line) - len ? (size_t)n : sizeof(line) - len - 1;

    /* One event, one line: newlines inside a message would split it. */
    for (size_t i = 0; i < len; i++)
        if (line[i] == '\n' || line[i] == '\r')
            line[i] = ' ';
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len++] = '\n';

    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
