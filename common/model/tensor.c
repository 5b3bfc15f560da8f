/* dtype names and sizes, shape parsing and formatting. */
#include "tensor.h"

#include "err.h"

#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    size_t size;
} dtypes[MW_DTYPE_COUNT] = {
    [MW_DTYPE_F32] = {"f32", 4}, [MW_DTYPE_F16] = {"f16", 2}, [MW_DTYPE_BF16] = {"bf16", 2},
    [MW_DTYPE_I32] = {"i32", 4}, [MW_DTYPE_I64] = {"i64", 8}, [MW_DTYPE_U8] = {"u8", 1},
};

const char *mw_dtype_name(mw_dtype_t dtype)
{
    return (unsigned)dtype < MW_DTYPE_COUNT ? dtypes[dtype].name : "invalid";
}

size_t mw_dtype_size(mw_dtype_t dtype)
{
    return (unsigned)dtype < MW_DTYPE_COUNT ? dtypes[dtype].size : 0;
}

int mw_dtype_parse(const char *name, size_t len, mw_dtype_t *dtype)
{
    for (int i = 0; i < MW_DTYPE_COUNT; i++) {
        if (strlen(dtypes[i].name) == len && memcmp(dtypes[i].name, name, len) == 0) {
            *dtype = (mw_dtype_t)i;
            return MW_OK;
        }
    }
    return MW_EINVAL;
}

int mw_shape_parse(const char *text, size_t len, mw_tensor_desc_t *desc, char *errstr,
                   size_t errstr_size)
{
    int ndim = 0;
    size_t i = 0;
    if (len == 0)
        return mw_errf(MW_EINVAL, errstr, errstr_size, "shape is empty");
    while (i < len) {
        if (ndim == MW_TENSOR_MAX_DIMS)
            return mw_errf(MW_EINVAL, errstr, errstr_size, "shape has more than %d dimensions",
                           MW_TENSOR_MAX_DIMS);
        int64_t dim = 0;
        size_t start = i;
        while (i < len && text[i] >= '0' && text[i] <= '9') {
            if (dim > (INT64_MAX - 9) / 10)
                return mw_errf(MW_EINVAL, errstr, errstr_size, "shape dimension %d is too large",
                               ndim);
            dim = dim * 10 + (text[i] - '0');
            i++;
        }
        if (i == start)
            return mw_errf(MW_EINVAL, errstr, errstr_size,
                           "shape '%.*s': expected a number at position %zu", (int)len, text,
                           start);
        if (dim == 0)
            return mw_errf(MW_EINVAL, errstr, errstr_size, "shape '%.*s': dimension %d is zero",
                           (int)len, text, ndim);
        desc->shape[ndim++] = dim;
        if (i < len) {
            if (text[i] != ',' || i + 1 == len)
                return mw_errf(MW_EINVAL, errstr, errstr_size,
                               "shape '%.*s': unexpected character at position %zu", (int)len, text,
                               i);
            i++;
        }
    }
    desc->ndim = ndim;
    uint64_t nbytes;
    if (mw_tensor_numel(desc, &nbytes) != MW_OK)
        return mw_errf(MW_ETOOBIG, errstr, errstr_size, "shape '%.*s' has too many elements",
                       (int)len, text);
    return MW_OK;
}

size_t mw_shape_format(const mw_tensor_desc_t *desc, char *buf, size_t size)
{
    size_t len = 0;
    if (size > 0)
        buf[0] = '\0';
    for (int i = 0; i < desc->ndim; i++) {
        char part[24];
        int n = snprintf(part, sizeof(part), "%s%lld", i ? "," : "", (long long)desc->shape[i]);
        if (len + (size_t)n < size)
            memcpy(buf + len, part, (size_t)n + 1);
        len += (size_t)n;
    }
    return len;
}

int mw_tensor_numel(const mw_tensor_desc_t *desc, uint64_t *numel)
{
    uint64_t n = 1;
    if (desc->ndim < 0 || desc->ndim > MW_TENSOR_MAX_DIMS)
        return MW_EINVAL;
    for (int i = 0; i < desc->ndim; i++) {
        if (desc->shape[i] <= 0)
            return MW_EINVAL;
        if (__builtin_mul_overflow(n, (uint64_t)desc->shape[i], &n) || n > (UINT64_C(1) << 62))
            return MW_ETOOBIG;
    }
    *numel = n;
    return MW_OK;
}

int mw_tensor_nbytes(const mw_tensor_desc_t *desc, uint64_t *nbytes)
{
    uint64_t n;
    int rc = mw_tensor_numel(desc, &n);
    if (rc != MW_OK)
        return rc;
    size_t elem = mw_dtype_size(desc->dtype);
    if (elem == 0)
        return MW_EINVAL;
    if (__builtin_mul_overflow(n, (uint64_t)elem, nbytes))
        return MW_ETOOBIG;
    return MW_OK;
}
