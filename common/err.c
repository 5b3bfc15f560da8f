/* Error descriptions and the errstr formatting helper. */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>

const char *mw_strerror(int err)
{
    switch (err) {
    case MW_OK:
        return "success";
#define MW_ERR_CASE(name, value, text)                                                             \
    case name:                                                                                     \
        return text;
        MW_ERRNO_MAP(MW_ERR_CASE)
#undef MW_ERR_CASE
    default:
        return "unknown error";
    }
}

int mw_errf(int err, char *errstr, size_t errstr_size, const char *fmt, ...)
{
    if (errstr != NULL && errstr_size > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errstr, errstr_size, fmt, ap);
        va_end(ap);
    }
    return err;
}
