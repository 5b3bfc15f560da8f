/* Error codes shared by every mwserve module: 0 is success, negative MW_E* a failure. */
#ifndef MW_ERR_H
#define MW_ERR_H

#include <stddef.h>

/* X-macro: name, value, description. */
#define MW_ERRNO_MAP(X)                                                                            \
    X(MW_EINVAL, -1, "invalid argument")                                                           \
    X(MW_ENOMEM, -2, "out of memory")                                                              \
    X(MW_EIO, -3, "input/output error")                                                            \
    X(MW_ETIMEDOUT, -4, "timed out")                                                               \
    X(MW_ECLOSED, -5, "closed")                                                                    \
    X(MW_EBROKEN, -6, "world broken")                                                              \
    X(MW_ENOTFOUND, -7, "not found")                                                               \
    X(MW_EPROTO, -8, "protocol error")                                                             \
    X(MW_EUNAVAIL, -9, "service unavailable")                                                      \
    X(MW_EFENCED, -10, "fenced: lease or epoch lost")                                              \
    X(MW_ETOOBIG, -11, "too large")                                                                \
    X(MW_EAGAIN, -12, "try again")                                                                 \
    X(MW_EKAFKA, -13, "Kafka error")                                                               \
    X(MW_EREDIS, -14, "Redis error")                                                               \
    X(MW_EABORTED, -15, "aborted")

enum {
    MW_OK = 0,
#define MW_ERR_ENUM(name, value, text) name = value,
    MW_ERRNO_MAP(MW_ERR_ENUM)
#undef MW_ERR_ENUM
};

/* A static description of err (never NULL). */
const char *mw_strerror(int err);

/* Formats into errstr when it is not NULL and errstr_size > 0; returns err
 * unchanged so that callers can write `return mw_errf(MW_EINVAL, ...)`. */
int mw_errf(int err, char *errstr, size_t errstr_size, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
