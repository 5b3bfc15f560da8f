/* NumPy .npy header parser and writer (see npy.h). The header is a Python dict
 * literal; only the subset numpy writes is accepted: quoted keys, a quoted
 * descr, True/False, and a tuple of non-negative integers. */
#include "npy.h"

#include "err.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static const unsigned char magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

/* descr strings this parser takes, and names for the ones people try. */
static const struct {
    const char *descr;
    mw_dtype_t dtype;
} accepted[] = {
    {"<f4", MW_DTYPE_F32}, {"<f2", MW_DTYPE_F16}, {"<i4", MW_DTYPE_I32},
    {"<i8", MW_DTYPE_I64}, {"|u1", MW_DTYPE_U8},  {"<u1", MW_DTYPE_U8},
};
static const struct {
    const char *code, *name;
} known[] = {
    {"f8", "float64"},     {"f4", "float32"}, {"f2", "float16"},   {"i1", "int8"},
    {"i2", "int16"},       {"i4", "int32"},   {"i8", "int64"},     {"u2", "uint16"},
    {"u4", "uint32"},      {"u8", "uint64"},  {"b1", "bool"},      {"c8", "complex64"},
    {"c16", "complex128"}, {"O", "object"},   {"f16", "float128"},
};

struct cursor {
    const char *p, *end;
};

static void skip_ws(struct cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static int take(struct cursor *c, char ch)
{
    skip_ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return 1;
    }
    return 0;
}

/* A quoted string ('...' or "..."); *s and *n: its text, inside the header. */
static int string(struct cursor *c, const char **s, size_t *n)
{
    skip_ws(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"'))
        return 0;
    char q = *c->p++;
    const char *start = c->p;
    while (c->p < c->end && *c->p != q && *c->p != '\\')
        c->p++;
    if (c->p >= c->end || *c->p != q)
        return 0;
    *s = start;
    *n = (size_t)(c->p - start);
    c->p++;
    return 1;
}

static int word(struct cursor *c, const char *w)
{
    size_t n = strlen(w);
    skip_ws(c);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, w, n) != 0)
        return 0;
    c->p += n;
    return 1;
}

static int descr_dtype(const char *s, size_t n, mw_dtype_t *dtype, char *errstr, size_t errstr_size)
{
    for (size_t i = 0; i < sizeof(accepted) / sizeof(accepted[0]); i++)
        if (strlen(accepted[i].descr) == n && memcmp(accepted[i].descr, s, n) == 0) {
            *dtype = accepted[i].dtype;
            return MW_OK;
        }
    const char *name = NULL;
    if (n >= 2)
        for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
            if (strlen(known[i].code) == n - 1 && memcmp(known[i].code, s + 1, n - 1) == 0)
                name = known[i].name;
    if (name != NULL && s[0] == '>')
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "dtype '%.*s' is big-endian %s; save it little-endian "
                       "(a.astype('<%.*s'))",
                       (int)n, s, name, (int)n - 1, s + 1);
    return mw_errf(MW_EINVAL, errstr, errstr_size,
                   "dtype '%.*s'%s%s%s is not supported (f32 '<f4', f16 '<f2', i32 '<i4', "
                   "i64 '<i8', u8 '|u1')",
                   (int)(n > 32 ? 32 : n), s, name ? " (" : "", name ? name : "", name ? ")" : "");
}

/* The shape tuple: (), (n,), (a, b) or (a, b,). */
static int shape_tuple(struct cursor *c, mwctl_npy_t *npy, char *errstr, size_t errstr_size)
{
    if (!take(c, '('))
        return mw_errf(MW_EINVAL, errstr, errstr_size, "the header's 'shape' is not a tuple");
    npy->ndim = 0;
    int comma = 1;
    while (!take(c, ')')) {
        skip_ws(c);
        if (!comma || c->p >= c->end || *c->p < '0' || *c->p > '9')
            return mw_errf(MW_EINVAL, errstr, errstr_size,
                           "the header's 'shape' is not a tuple of integers");
        if (npy->ndim == MW_TENSOR_MAX_DIMS)
            return mw_errf(MW_EINVAL, errstr, errstr_size, "the array has more than %d dimensions",
                           MW_TENSOR_MAX_DIMS);
        int64_t v = 0;
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
            if (v > (INT64_MAX - 9) / 10)
                return mw_errf(MW_EINVAL, errstr, errstr_size,
                               "a dimension in the header's 'shape' is too large");
            v = v * 10 + (*c->p++ - '0');
        }
        if (c->p < c->end && *c->p == 'L')
            c->p++; /* written by Python 2 */
        npy->shape[npy->ndim++] = v;
        comma = take(c, ',');
    }
    if (npy->ndim == 1 && !comma)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "the header's 'shape' (%" PRId64 ") is not a tuple", npy->shape[0]);
    return MW_OK;
}

/* The header dict: each of descr, fortran_order and shape exactly once. */
static int header_dict(struct cursor *c, mwctl_npy_t *npy, char *errstr, size_t errstr_size)
{
    int have_descr = 0, have_order = 0, have_shape = 0, rc;
    if (!take(c, '{'))
        return mw_errf(MW_EINVAL, errstr, errstr_size, "the header is not a dict");
    while (!take(c, '}')) {
        const char *k, *s;
        size_t kn, sn;
        if (!string(c, &k, &kn) || !take(c, ':'))
            return mw_errf(MW_EINVAL, errstr, errstr_size,
                           "the header is not a dict of quoted keys");
        if (kn == 5 && memcmp(k, "descr", 5) == 0 && !have_descr) {
            if (!string(c, &s, &sn))
                return mw_errf(MW_EINVAL, errstr, errstr_size,
                               "the header's 'descr' is not a string (a structured dtype is "
                               "not supported)");
            if ((rc = descr_dtype(s, sn, &npy->dtype, errstr, errstr_size)) != MW_OK)
                return rc;
            have_descr = 1;
        } else if (kn == 13 && memcmp(k, "fortran_order", 13) == 0 && !have_order) {
            if (word(c, "True"))
                return mw_errf(MW_EINVAL, errstr, errstr_size,
                               "the array is in Fortran order; save it in C order "
                               "(np.ascontiguousarray(a))");
            if (!word(c, "False"))
                return mw_errf(MW_EINVAL, errstr, errstr_size,
                               "the header's 'fortran_order' is neither True nor False");
            have_order = 1;
        } else if (kn == 5 && memcmp(k, "shape", 5) == 0 && !have_shape) {
            if ((rc = shape_tuple(c, npy, errstr, errstr_size)) != MW_OK)
                return rc;
            have_shape = 1;
        } else {
            return mw_errf(MW_EINVAL, errstr, errstr_size,
                           "the header has an unexpected or repeated key '%.*s'",
                           (int)(kn > 32 ? 32 : kn), k);
        }
        if (!take(c, ',')) {
            if (!take(c, '}'))
                return mw_errf(MW_EINVAL, errstr, errstr_size,
                               "the header dict is malformed (expected ',' or '}')");
            break;
        }
    }
    skip_ws(c);
    if (c->p != c->end)
        return mw_errf(MW_EINVAL, errstr, errstr_size, "text after the header dict");
    if (!have_descr || !have_order || !have_shape)
        return mw_errf(MW_EINVAL, errstr, errstr_size, "the header lacks '%s'",
                       !have_descr   ? "descr"
                       : !have_order ? "fortran_order"
                                     : "shape");
    return MW_OK;
}

int mwctl_npy_parse(mwctl_npy_t *npy, const void *buf, size_t len, char *errstr, size_t errstr_size)
{
    const unsigned char *b = buf;
    memset(npy, 0, sizeof(*npy));
    if (len < 8 || memcmp(b, magic, sizeof(magic)) != 0)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "not a .npy file (it does not start with \\x93NUMPY)");
    npy->major = b[6];
    npy->minor = b[7];
    if (npy->major < 1 || npy->major > 3 || npy->minor != 0)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       ".npy format version %d.%d is not supported (1.0, 2.0, 3.0)", npy->major,
                       npy->minor);
    size_t lenbytes = npy->major == 1 ? 2 : 4;
    if (len < 8 + lenbytes)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "truncated header: the file ends after %zu bytes", len);
    uint64_t hlen = (uint64_t)b[8] | (uint64_t)b[9] << 8;
    if (lenbytes == 4)
        hlen |= (uint64_t)b[10] << 16 | (uint64_t)b[11] << 24;
    npy->data_offset = 8 + lenbytes + hlen;
    if (npy->data_offset > len)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "truncated header: it says %" PRIu64 " bytes, the file has %zu",
                       npy->data_offset, len);
    struct cursor c = {(const char *)b + 8 + lenbytes, (const char *)b + npy->data_offset};
    int rc = header_dict(&c, npy, errstr, errstr_size);
    if (rc != MW_OK)
        return rc;
    uint64_t n = mw_dtype_size(npy->dtype);
    for (int i = 0; i < npy->ndim; i++) {
        if (npy->shape[i] != 0 && n > UINT64_MAX / (uint64_t)npy->shape[i])
            return mw_errf(MW_EINVAL, errstr, errstr_size, "the header's shape is too large");
        n *= (uint64_t)npy->shape[i];
    }
    npy->data_bytes = n;
    uint64_t have = len - npy->data_offset;
    if (have < n)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "truncated data: the shape needs %" PRIu64 " bytes, the file has %" PRIu64
                       " after the header",
                       n, have);
    if (have > n)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "%" PRIu64 " bytes follow the array's data (not a single .npy array)",
                       have - n);
    return MW_OK;
}

size_t mwctl_npy_header(char *buf, size_t size, mw_dtype_t dtype, int ndim, const int64_t *shape)
{
    const char *descr = NULL;
    for (size_t i = 0; i < sizeof(accepted) / sizeof(accepted[0]) && descr == NULL; i++)
        if (accepted[i].dtype == dtype)
            descr = accepted[i].descr;
    if (descr == NULL || ndim < 0 || ndim > MW_TENSOR_MAX_DIMS)
        return 0;
    char dict[MWCTL_NPY_HEADER_MAX];
    int n =
        snprintf(dict, sizeof(dict), "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
    for (int i = 0; i < ndim && n > 0 && (size_t)n < sizeof(dict); i++)
        n += snprintf(dict + n, sizeof(dict) - (size_t)n, "%s%" PRId64 "%s", i ? ", " : "",
                      shape[i], ndim == 1 ? "," : "");
    if (n > 0 && (size_t)n < sizeof(dict))
        n += snprintf(dict + n, sizeof(dict) - (size_t)n, "), }");
    if (n <= 0 || (size_t)n >= sizeof(dict))
        return 0;
    size_t total = (10 + (size_t)n + 1 + 63) / 64 * 64; /* magic, version, length, dict, '\n' */
    if (total > size || total - 10 > 0xffff)
        return 0;
    memcpy(buf, magic, sizeof(magic));
    buf[6] = 1;
    buf[7] = 0;
    buf[8] = (char)((total - 10) & 0xff);
    buf[9] = (char)((total - 10) >> 8);
    memcpy(buf + 10, dict, (size_t)n);
    memset(buf + 10 + n, ' ', total - 10 - (size_t)n - 1);
    buf[total - 1] = '\n';
    return total;
}
