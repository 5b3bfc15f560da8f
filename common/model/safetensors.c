/* safetensors reader (cJSON header, every byte range checked, data mapped) and writer. */
#include "safetensors.h"

#include "bytes.h"
#include "err.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; this reader maps it as host memory"
#endif

struct mw_safetensors {
    void *map; /* from mw_safetensors_open; NULL when parsed from a caller's buffer */
    size_t map_len;
    cJSON *header; /* owns the tensor names and metadata strings */
    const cJSON *metadata;
    mw_st_tensor_t *tensors;
    size_t count;
    const mw_st_tensor_t **by_name; /* sorted by name, for lookups */
};

static const char *const st_dtype_names[MW_DTYPE_COUNT] = {
    [MW_DTYPE_F32] = "F32", [MW_DTYPE_F16] = "F16", [MW_DTYPE_BF16] = "BF16",
    [MW_DTYPE_I32] = "I32", [MW_DTYPE_I64] = "I64", [MW_DTYPE_U8] = "U8",
};

/* dtypes of the format that mwserve recognises but has no type for. */
static const char *const st_unsupported[] = {"BOOL",    "I8",      "U16",     "I16",     "U32",
                                             "U64",     "F64",     "F8_E4M3", "F8_E5M2", "F8_E8M0",
                                             "F6_E2M3", "F6_E3M2", "F4",      "C64"};

const char *mw_safetensors_dtype_name(mw_dtype_t dtype)
{
    return (unsigned)dtype < MW_DTYPE_COUNT ? st_dtype_names[dtype] : NULL;
}

/* A JSON number that is an exact non-negative integer below 2^53. */
static int json_u64(const cJSON *item, uint64_t *out)
{
    if (!cJSON_IsNumber(item))
        return 0;
    double d = item->valuedouble;
    if (!(d >= 0.0) || d > 9007199254740992.0 || floor(d) != d)
        return 0;
    *out = (uint64_t)d;
    return 1;
}

static int parse_dtype(const char *label, const char *name, const cJSON *item, mw_dtype_t *dtype,
                       char *errstr, size_t errstr_size)
{
    if (!cJSON_IsString(item))
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "%s: tensor '%s': \"dtype\" is missing or not a string", label, name);
    for (int i = 0; i < MW_DTYPE_COUNT; i++) {
        if (strcmp(item->valuestring, st_dtype_names[i]) == 0) {
            *dtype = (mw_dtype_t)i;
            return MW_OK;
        }
    }
    for (size_t i = 0; i < sizeof(st_unsupported) / sizeof(st_unsupported[0]); i++)
        if (strcmp(item->valuestring, st_unsupported[i]) == 0)
            return mw_errf(MW_EINVAL, errstr, errstr_size,
                           "%s: tensor '%s': dtype %s is not supported (mwserve reads F32, F16, "
                           "BF16, I32, I64 and U8)",
                           label, name, st_unsupported[i]);
    return mw_errf(MW_EINVAL, errstr, errstr_size, "%s: tensor '%s': unknown dtype '%.32s'", label,
                   name, item->valuestring);
}

static int parse_tensor(const char *label, const cJSON *entry, uint64_t data_len, mw_st_tensor_t *t,
                        char *errstr, size_t errstr_size)
{
    const char *name = entry->string;
    if (!cJSON_IsObject(entry))
        return mw_errf(MW_EINVAL, errstr, errstr_size, "%s: tensor '%s': entry is not an object",
                       label, name);
    int rc = parse_dtype(label, name, cJSON_GetObjectItemCaseSensitive(entry, "dtype"),
                         &t->desc.dtype, errstr, errstr_size);
    if (rc != MW_OK)
        return rc;

    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(entry, "shape");
    if (!cJSON_IsArray(shape))
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "%s: tensor '%s': \"shape\" is missing or not an array", label, name);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > MW_TENSOR_MAX_DIMS)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "%s: tensor '%s': shape has %d dimensions, at most %d are supported", label,
                       name, ndim, MW_TENSOR_MAX_DIMS);
    t->desc.ndim = ndim;
    uint64_t numel = 1;
    int overflow = 0, i = 0;
    const cJSON *dim;
    cJSON_ArrayForEach(dim, shape)
    {
        uint64_t d;
        if (!json_u64(dim, &d))
            return mw_errf(MW_EINVAL, errstr, errstr_size,
                           "%s: tensor '%s': shape dimension %d is not a non-negative integer",
                           label, name, i);
        t->desc.shape[i++] = (int64_t)d;
        overflow |= __builtin_mul_overflow(numel, d, &numel);
    }
    uint64_t nbytes = 0;
    overflow |= __builtin_mul_overflow(numel, (uint64_t)mw_dtype_size(t->desc.dtype), &nbytes);

    const cJSON *offsets = cJSON_GetObjectItemCaseSensitive(entry, "data_offsets");
    uint64_t begin, end;
    if (!cJSON_IsArray(offsets) || cJSON_GetArraySize(offsets) != 2 ||
        !json_u64(cJSON_GetArrayItem(offsets, 0), &begin) ||
        !json_u64(cJSON_GetArrayItem(offsets, 1), &end))
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "%s: tensor '%s': \"data_offsets\" must be [begin, end], two non-negative "
                       "integers",
                       label, name);
    if (begin > end)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "%s: tensor '%s': data_offsets [%llu, %llu] end before they begin", label,
                       name, (unsigned long long)begin, (unsigned long long)end);
    if (end > data_len)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "%s: tensor '%s': data_offsets [%llu, %llu] are out of range: the data "
                       "section has %llu bytes (truncated file or wrong offsets)",
                       label, name, (unsigned long long)begin, (unsigned long long)end,
                       (unsigned long long)data_len);
    if (overflow)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "%s: tensor '%s': shape/size mismatch: the %d-dimensional %s shape has more "
                       "than 2^64 bytes but data_offsets [%llu, %llu] hold %llu",
                       label, name, ndim, st_dtype_names[t->desc.dtype], (unsigned long long)begin,
                       (unsigned long long)end, (unsigned long long)(end - begin));
    if (nbytes != end - begin)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "%s: tensor '%s': shape/size mismatch: the %d-dimensional %s shape needs "
                       "%llu bytes but data_offsets [%llu, %llu] hold %llu",
                       label, name, ndim, st_dtype_names[t->desc.dtype], (unsigned long long)nbytes,
                       (unsigned long long)begin, (unsigned long long)end,
                       (unsigned long long)(end - begin));
    t->name = name;
    t->numel = numel;
    t->nbytes = nbytes;
    t->offset = begin;
    return MW_OK;
}

static int metadata_check(const char *label, const cJSON *meta, char *errstr, size_t errstr_size)
{
    if (!cJSON_IsObject(meta))
        return mw_errf(MW_EINVAL, errstr, errstr_size, "%s: \"__metadata__\" is not an object",
                       label);
    const cJSON *kv;
    cJSON_ArrayForEach(kv, meta)
    {
        if (!cJSON_IsString(kv))
            return mw_errf(MW_EINVAL, errstr, errstr_size,
                           "%s: __metadata__ '%s' is not a string (the format allows only "
                           "string values)",
                           label, kv->string);
    }
    return MW_OK;
}

static int by_name_cmp(const void *a, const void *b)
{
    const mw_st_tensor_t *x = *(const mw_st_tensor_t *const *)a;
    const mw_st_tensor_t *y = *(const mw_st_tensor_t *const *)b;
    return strcmp(x->name, y->name);
}

static int by_offset_cmp(const void *a, const void *b)
{
    const mw_st_tensor_t *x = *(const mw_st_tensor_t *const *)a;
    const mw_st_tensor_t *y = *(const mw_st_tensor_t *const *)b;
    if (x->offset != y->offset)
        return x->offset < y->offset ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

/* Names must be unique, and no two non-empty byte ranges may share a byte. */
static int check_layout(const char *label, mw_safetensors_t *st, char *errstr, size_t errstr_size)
{
    size_t n = st->count;
    for (size_t i = 0; i < n; i++)
        st->by_name[i] = &st->tensors[i];
    qsort(st->by_name, n, sizeof(*st->by_name), by_name_cmp);
    for (size_t i = 1; i < n; i++) {
        const char *a = st->by_name[i - 1]->name;
        if (strcmp(a, st->by_name[i]->name) == 0)
            return mw_errf(MW_EINVAL, errstr, errstr_size, "%s: tensor '%s' appears twice", label,
                           a);
    }
    const mw_st_tensor_t **by_offset = malloc((n ? n : 1) * sizeof(*by_offset));
    if (by_offset == NULL)
        return mw_errf(MW_ENOMEM, errstr, errstr_size, "%s: out of memory", label);
    memcpy(by_offset, st->by_name, n * sizeof(*by_offset));
    qsort(by_offset, n, sizeof(*by_offset), by_offset_cmp);
    int rc = MW_OK;
    const mw_st_tensor_t *prev = NULL;
    for (size_t i = 0; i < n && rc == MW_OK; i++) {
        const mw_st_tensor_t *t = by_offset[i];
        if (t->nbytes == 0)
            continue;
        if (prev != NULL && t->offset < prev->offset + prev->nbytes)
            rc =
                mw_errf(MW_EINVAL, errstr, errstr_size,
                        "%s: tensors '%s' and '%s' overlap: bytes [%llu, %llu) and [%llu, %llu)",
                        label, prev->name, t->name, (unsigned long long)prev->offset,
                        (unsigned long long)(prev->offset + prev->nbytes),
                        (unsigned long long)t->offset, (unsigned long long)(t->offset + t->nbytes));
        prev = t;
    }
    free(by_offset);
    return rc;
}

static int parse(const char *label, const unsigned char *buf, size_t len, mw_safetensors_t *st,
                 char *errstr, size_t errstr_size)
{
    if (len < 8)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "%s: truncated: %zu bytes, shorter than the 8-byte header length", label,
                       len);
    uint64_t hlen = mw_le64_get(buf);
    if (hlen > MW_SAFETENSORS_MAX_HEADER)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "%s: header length %llu exceeds the %u-byte limit", label,
                       (unsigned long long)hlen, MW_SAFETENSORS_MAX_HEADER);
    if (hlen > len - 8)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "%s: truncated: the header needs %llu bytes but only %zu follow", label,
                       (unsigned long long)hlen, len - 8);
    const char *json = (const char *)buf + 8, *end = NULL;
    st->header = cJSON_ParseWithLengthOpts(json, (size_t)hlen, &end, 0);
    if (st->header == NULL)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "%s: header is not valid JSON (error at byte %td of %llu)", label,
                       end != NULL ? end - json : (ptrdiff_t)0, (unsigned long long)hlen);
    for (const char *p = end; p < json + hlen; p++)
        if (*p != ' ' && *p != '\n' && *p != '\r' && *p != '\t')
            return mw_errf(MW_EINVAL, errstr, errstr_size,
                           "%s: header is not valid JSON (unexpected byte at %td of %llu after "
                           "the object)",
                           label, p - json, (unsigned long long)hlen);
    if (!cJSON_IsObject(st->header))
        return mw_errf(MW_EINVAL, errstr, errstr_size, "%s: header is not a JSON object", label);

    uint64_t data_len = len - 8 - hlen;
    const unsigned char *data = buf + 8 + hlen;
    size_t n = 0;
    const cJSON *entry;
    cJSON_ArrayForEach(entry, st->header) n++;
    st->tensors = calloc(n ? n : 1, sizeof(*st->tensors));
    st->by_name = calloc(n ? n : 1, sizeof(*st->by_name));
    if (st->tensors == NULL || st->by_name == NULL)
        return mw_errf(MW_ENOMEM, errstr, errstr_size, "%s: out of memory", label);
    cJSON_ArrayForEach(entry, st->header)
    {
        int rc;
        if (strcmp(entry->string, "__metadata__") == 0) {
            if (st->metadata != NULL)
                return mw_errf(MW_EINVAL, errstr, errstr_size, "%s: \"__metadata__\" appears twice",
                               label);
            st->metadata = entry;
            rc = metadata_check(label, entry, errstr, errstr_size);
        } else if (entry->string[0] == '\0') {
            rc = mw_errf(MW_EINVAL, errstr, errstr_size, "%s: a tensor has an empty name", label);
        } else {
            mw_st_tensor_t *t = &st->tensors[st->count];
            rc = parse_tensor(label, entry, data_len, t, errstr, errstr_size);
            if (rc == MW_OK) {
                t->data = data + t->offset;
                st->count++;
            }
        }
        if (rc != MW_OK)
            return rc;
    }
    return check_layout(label, st, errstr, errstr_size);
}

void mw_safetensors_destroy(mw_safetensors_t *st)
{
    if (st == NULL)
        return;
    if (st->map != NULL)
        munmap(st->map, st->map_len);
    cJSON_Delete(st->header);
    free(st->tensors);
    free(st->by_name);
    free(st);
}

int mw_safetensors_parse(const void *buf, size_t len, mw_safetensors_t **out, char *errstr,
                         size_t errstr_size)
{
    *out = NULL;
    mw_safetensors_t *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return mw_errf(MW_ENOMEM, errstr, errstr_size, "out of memory");
    int rc = parse("safetensors", buf, len, st, errstr, errstr_size);
    if (rc != MW_OK) {
        mw_safetensors_destroy(st);
        return rc;
    }
    *out = st;
    return MW_OK;
}

int mw_safetensors_open(const char *path, mw_safetensors_t **out, char *errstr, size_t errstr_size)
{
    static const unsigned char empty[1];
    int rc;
    *out = NULL;
    mw_safetensors_t *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return mw_errf(MW_ENOMEM, errstr, errstr_size, "out of memory");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = mw_errf(errno == ENOENT ? MW_ENOTFOUND : MW_EIO, errstr, errstr_size, "%s: %s", path,
                     strerror(errno));
        goto out_free;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        rc = mw_errf(MW_EIO, errstr, errstr_size, "%s: %s", path, strerror(errno));
        goto out_close;
    }
    if (!S_ISREG(sb.st_mode)) {
        rc = mw_errf(MW_EINVAL, errstr, errstr_size, "%s: not a regular file", path);
        goto out_close;
    }
    const unsigned char *buf = empty;
    if (sb.st_size > 0) {
        st->map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (st->map == MAP_FAILED) {
            st->map = NULL;
            rc = mw_errf(MW_EIO, errstr, errstr_size, "%s: mmap: %s", path, strerror(errno));
            goto out_close;
        }
        st->map_len = (size_t)sb.st_size;
        buf = st->map;
    }
    rc = parse(path, buf, (size_t)sb.st_size, st, errstr, errstr_size);
out_close:
    close(fd);
out_free:
    if (rc != MW_OK) {
        mw_safetensors_destroy(st);
        return rc;
    }
    *out = st;
    return MW_OK;
}

size_t mw_safetensors_count(const mw_safetensors_t *st)
{
    return st->count;
}

const mw_st_tensor_t *mw_safetensors_tensor(const mw_safetensors_t *st, size_t index)
{
    return index < st->count ? &st->tensors[index] : NULL;
}

const mw_st_tensor_t *mw_safetensors_find(const mw_safetensors_t *st, const char *name)
{
    size_t lo = 0, hi = st->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const mw_st_tensor_t *t = st->by_name[mid];
        int c = strcmp(name, t->name);
        if (c == 0)
            return t;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const char *mw_safetensors_metadata(const mw_safetensors_t *st, const char *key)
{
    if (st->metadata == NULL)
        return NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(st->metadata, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* --- writer -------------------------------------------------------------------- */

struct mw_st_writer {
    int fd;
    char *path;
    char *tmp_path;
    uint64_t expected; /* data bytes announced by the header */
    uint64_t written;
    int finished;
};

static int write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static cJSON *build_header(const mw_st_entry_t *entries, size_t n, const char *const *meta,
                           size_t n_meta, uint64_t *data_len, int *rc, char *errstr,
                           size_t errstr_size)
{
    *rc = MW_EINVAL;
    cJSON *root = cJSON_CreateObject();
    if (root == NULL)
        goto out_nomem;
    if (n_meta > 0) {
        cJSON *m = cJSON_AddObjectToObject(root, "__metadata__");
        if (m == NULL)
            goto out_nomem;
        for (size_t i = 0; i < n_meta; i++)
            if (cJSON_AddStringToObject(m, meta[2 * i], meta[2 * i + 1]) == NULL)
                goto out_nomem;
    }
    uint64_t offset = 0;
    for (size_t i = 0; i < n; i++) {
        const mw_st_entry_t *e = &entries[i];
        uint64_t nbytes = mw_dtype_size(e->desc.dtype);
        if (e->name == NULL || e->name[0] == '\0' || strcmp(e->name, "__metadata__") == 0 ||
            nbytes == 0 || e->desc.ndim < 0 || e->desc.ndim > MW_TENSOR_MAX_DIMS) {
            mw_errf(MW_EINVAL, errstr, errstr_size, "tensor %zu ('%s'): invalid name or desc", i,
                    e->name ? e->name : "(null)");
            goto out_delete;
        }
        if (cJSON_GetObjectItemCaseSensitive(root, e->name) != NULL) {
            mw_errf(MW_EINVAL, errstr, errstr_size, "tensor '%s' is given twice", e->name);
            goto out_delete;
        }
        cJSON *t = cJSON_AddObjectToObject(root, e->name);
        cJSON *shape = t ? cJSON_AddArrayToObject(t, "shape") : NULL;
        if (shape == NULL ||
            cJSON_AddStringToObject(t, "dtype", st_dtype_names[e->desc.dtype]) == NULL)
            goto out_nomem;
        for (int d = 0; d < e->desc.ndim; d++) {
            if (e->desc.shape[d] < 0 ||
                __builtin_mul_overflow(nbytes, (uint64_t)e->desc.shape[d], &nbytes)) {
                mw_errf(MW_EINVAL, errstr, errstr_size, "tensor '%s': invalid shape", e->name);
                goto out_delete;
            }
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)e->desc.shape[d]));
        }
        cJSON *offs = cJSON_AddArrayToObject(t, "data_offsets");
        if (offs == NULL)
            goto out_nomem;
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)offset));
        offset += nbytes;
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)offset));
        if (cJSON_GetArraySize(offs) != 2 || cJSON_GetArraySize(shape) != e->desc.ndim)
            goto out_nomem;
    }
    *data_len = offset;
    *rc = MW_OK;
    return root;
out_nomem:
    *rc = mw_errf(MW_ENOMEM, errstr, errstr_size, "out of memory");
out_delete:
    cJSON_Delete(root);
    return NULL;
}

int mw_st_writer_new(const char *path, const mw_st_entry_t *entries, size_t n,
                     const char *const *meta, size_t n_meta, mw_st_writer_t **out, char *errstr,
                     size_t errstr_size)
{
    int rc;
    *out = NULL;
    uint64_t data_len = 0;
    cJSON *root = build_header(entries, n, meta, n_meta, &data_len, &rc, errstr, errstr_size);
    if (root == NULL)
        return rc;
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    mw_st_writer_t *w = calloc(1, sizeof(*w));
    if (json == NULL || w == NULL) {
        rc = mw_errf(MW_ENOMEM, errstr, errstr_size, "out of memory");
        goto out_free;
    }
    w->fd = -1;
    w->expected = data_len;
    w->path = strdup(path);
    size_t tmp_len = strlen(path) + 32;
    w->tmp_path = malloc(tmp_len);
    if (w->path == NULL || w->tmp_path == NULL) {
        rc = mw_errf(MW_ENOMEM, errstr, errstr_size, "out of memory");
        goto out_free;
    }
    snprintf(w->tmp_path, tmp_len, "%s.tmp.%ld", path, (long)getpid());
    w->fd = open(w->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        rc = mw_errf(MW_EIO, errstr, errstr_size, "%s: %s", w->tmp_path, strerror(errno));
        goto out_free;
    }
    /* Pad with spaces so that the data section starts 8-byte aligned. */
    size_t jlen = strlen(json);
    size_t hlen = (jlen + 8 + 7) / 8 * 8 - 8;
    unsigned char *hdr = malloc(8 + hlen);
    if (hdr == NULL) {
        rc = mw_errf(MW_ENOMEM, errstr, errstr_size, "out of memory");
        goto out_free;
    }
    mw_le64_put(hdr, (uint64_t)hlen);
    memcpy(hdr + 8, json, jlen);
    memset(hdr + 8 + jlen, ' ', hlen - jlen);
    int wr = write_all(w->fd, hdr, 8 + hlen);
    free(hdr);
    if (wr != 0) {
        rc = mw_errf(MW_EIO, errstr, errstr_size, "%s: write: %s", w->tmp_path, strerror(errno));
        goto out_free;
    }
    cJSON_free(json);
    *out = w;
    return MW_OK;
out_free:
    cJSON_free(json);
    mw_st_writer_destroy(w);
    return rc;
}

int mw_st_writer_append(mw_st_writer_t *w, const void *data, size_t len, char *errstr,
                        size_t errstr_size)
{
    if (w->finished || len > w->expected - w->written)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "%s: %zu more bytes than the header announced", w->path, len);
    if (write_all(w->fd, data, len) != 0)
        return mw_errf(MW_EIO, errstr, errstr_size, "%s: write: %s", w->tmp_path, strerror(errno));
    w->written += len;
    return MW_OK;
}

int mw_st_writer_finish(mw_st_writer_t *w, char *errstr, size_t errstr_size)
{
    if (w->finished)
        return MW_OK;
    if (w->written != w->expected)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "%s: %llu data bytes written, the header announced %llu", w->path,
                       (unsigned long long)w->written, (unsigned long long)w->expected);
    int fd = w->fd;
    w->fd = -1;
    if (close(fd) != 0)
        return mw_errf(MW_EIO, errstr, errstr_size, "%s: close: %s", w->tmp_path, strerror(errno));
    if (rename(w->tmp_path, w->path) != 0)
        return mw_errf(MW_EIO, errstr, errstr_size, "rename %s to %s: %s", w->tmp_path, w->path,
                       strerror(errno));
    w->finished = 1;
    return MW_OK;
}

void mw_st_writer_destroy(mw_st_writer_t *w)
{
    if (w == NULL)
        return;
    if (w->fd >= 0)
        close(w->fd);
    if (!w->finished && w->tmp_path != NULL)
        unlink(w->tmp_path);
    free(w->path);
    free(w->tmp_path);
    free(w);
}

int mw_safetensors_write(const char *path, const mw_st_entry_t *entries, size_t n,
                         const char *const *meta, size_t n_meta, char *errstr, size_t errstr_size)
{
    mw_st_writer_t *w;
    int rc = mw_st_writer_new(path, entries, n, meta, n_meta, &w, errstr, errstr_size);
    if (rc != MW_OK)
        return rc;
    for (size_t i = 0; i < n && rc == MW_OK; i++) {
        /* Shapes were checked for overflow by mw_st_writer_new. */
        uint64_t nbytes = mw_dtype_size(entries[i].desc.dtype);
        for (int d = 0; d < entries[i].desc.ndim; d++)
            nbytes *= (uint64_t)entries[i].desc.shape[d];
        if (nbytes > 0)
            rc = mw_st_writer_append(w, entries[i].data, (size_t)nbytes, errstr, errstr_size);
    }
    if (rc == MW_OK)
        rc = mw_st_writer_finish(w, errstr, errstr_size);
    mw_st_writer_destroy(w);
    return rc;
}
