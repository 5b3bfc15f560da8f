/* Request/result/DLQ record codecs (see record.h): validation, JSON form, headers. */
#include "record.h"

#include "err.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "records are little-endian and copied as is: big-endian hosts are not supported"
#endif

/* JSON text may take this many bytes per tensor byte (plus slack) before it is
 * refused unparsed: numbers as text are at most ~5x their binary size. */
#define JSON_TEXT_FACTOR 16
#define JSON_TEXT_SLACK  4096

/* ---- small helpers -------------------------------------------------------- */

/* Writes a printable, quoted-safe rendering of untrusted bytes (at most 64 of
 * them) into buf, so error messages never carry control bytes. */
static const char *printable(char *buf, size_t size, const void *value, size_t len)
{
    const unsigned char *p = value;
    size_t o = 0;
    size_t shown = len < 64 ? len : 64;
    for (size_t i = 0; i < shown && o + 5 < size; i++) {
        if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\'' && p[i] != '\\')
            buf[o++] = (char)p[i];
        else
            o += (size_t)snprintf(buf + o, size - o, "\\x%02x", p[i]);
    }
    if (shown < len && o + 4 < size) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o < size ? o : size - 1] = '\0';
    return buf;
}

int mw_header_find(const mw_header_t *headers, size_t nheaders, const char *name,
                   const void **value, size_t *size)
{
    for (size_t i = nheaders; i-- > 0;) {
        if (headers[i].name != NULL && strcmp(headers[i].name, name) == 0) {
            if (value != NULL)
                *value = headers[i].value;
            if (size != NULL)
                *size = headers[i].value != NULL ? headers[i].size : 0;
            return MW_OK;
        }
    }
    return MW_ENOTFOUND;
}

/* Parses a header holding a non-negative decimal integer. */
static int parse_uint_header(const void *value, size_t size, int64_t *out)
{
    const char *s = value;
    int64_t v = 0;
    if (size == 0 || size > 19)
        return MW_EINVAL;
    for (size_t i = 0; i < size; i++) {
        if (s[i] < '0' || s[i] > '9')
            return MW_EINVAL;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return MW_OK;
}

/* Compares a content-type header value with a media type, ignoring case,
 * surrounding blanks and parameters ("application/json; charset=utf-8"). */
static int media_type_is(const char *value, size_t size, const char *type)
{
    size_t b = 0, e = size;
    for (size_t i = 0; i < size; i++) {
        if (value[i] == ';') {
            e = i;
            break;
        }
    }
    while (b < e && isspace((unsigned char)value[b]))
        b++;
    while (e > b && isspace((unsigned char)value[e - 1]))
        e--;
    return e - b == strlen(type) && strncasecmp(value + b, type, e - b) == 0;
}

/* ---- half and bfloat16 ----------------------------------------------------- */

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t mw_f32_to_f16(float f)
{
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) /* inf or NaN */
        return (uint16_t)(sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0));
    if (absx >= 0x477ff000u) /* rounds to >= 65520: overflow */
        return (uint16_t)(sign | 0x7c00);
    if (absx < 0x38800000u) {   /* below the smallest normal half: subnormal or zero */
        if (absx < 0x33000000u) /* below half the smallest subnormal */
            return sign;
        uint32_t mant = (absx & 0x7fffff) | 0x800000;
        int shift = 126 - (int)(absx >> 23); /* 14 .. 24: value = mant * 2^-24 */
        uint32_t half = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1)))
            half++;
        return (uint16_t)(sign | half);
    }
    uint32_t h = ((absx >> 13) - (112u << 10)) & 0xffffu;
    uint32_t rem = absx & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
        h++;
    return (uint16_t)(sign | h);
}

float mw_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    if (exp == 0) {
        float v = (float)mant * (1.0f / 16777216.0f); /* mant * 2^-24 */
        return sign ? -v : v;
    }
    if (exp == 31)
        return f32_from_bits(sign | 0x7f800000u | (mant << 13));
    return f32_from_bits(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t mw_f32_to_bf16(float f)
{
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it quiet */
        return (uint16_t)((x >> 16) | 0x40);
    x += 0x7fffu + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

float mw_bf16_to_f32(uint16_t h)
{
    return f32_from_bits((uint32_t)h << 16);
}

double mw_tensor_elem(mw_dtype_t dtype, const void *data, size_t i)
{
    const unsigned char *p = data;
    switch (dtype) {
    case MW_DTYPE_F32: {
        float v;
        memcpy(&v, p + 4 * i, 4);
        return v;
    }
    case MW_DTYPE_F16:
    case MW_DTYPE_BF16: {
        uint16_t v;
        memcpy(&v, p + 2 * i, 2);
        return dtype == MW_DTYPE_F16 ? mw_f16_to_f32(v) : mw_bf16_to_f32(v);
    }
    case MW_DTYPE_I32: {
        int32_t v;
        memcpy(&v, p + 4 * i, 4);
        return v;
    }
    case MW_DTYPE_I64: {
        int64_t v;
        memcpy(&v, p + 8 * i, 8);
        return (double)v;
    }
    case MW_DTYPE_U8:
        return p[i];
    default:
        return 0;
    }
}

/* ---- JSON requests ---------------------------------------------------------- */

/* Stores JSON number v as element i of out; errors name the element. */
static int store_elem(mw_dtype_t dtype, const cJSON *item, void *out, uint64_t i, char *errstr,
                      size_t errstr_size)
{
    unsigned char *p = out;
    if (!cJSON_IsNumber(item))
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "JSON data element %" PRIu64 " is not a number", i);
    double v = item->valuedouble;
    if (!isfinite(v))
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "JSON data element %" PRIu64 " is not a finite number", i);
    switch (dtype) {
    case MW_DTYPE_F32:
    case MW_DTYPE_F16:
    case MW_DTYPE_BF16: {
        float f = (float)v;
        if (isinf(f))
            goto out_of_range;
        if (dtype == MW_DTYPE_F32) {
            memcpy(p + 4 * i, &f, 4);
        } else {
            uint16_t h = dtype == MW_DTYPE_F16 ? mw_f32_to_f16(f) : mw_f32_to_bf16(f);
            uint16_t inf = dtype == MW_DTYPE_F16 ? 0x7c00 : 0x7f80;
            if ((h & 0x7fff) == inf) /* finite input rounded to infinity */
                goto out_of_range;
            memcpy(p + 2 * i, &h, 2);
        }
        return MW_OK;
    }
    default:
        break;
    }
    if (v != floor(v))
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "JSON data element %" PRIu64 " = %g is not an integer (dtype %s)", i, v,
                       mw_dtype_name(dtype));
    switch (dtype) {
    case MW_DTYPE_I32: {
        if (v < INT32_MIN || v > INT32_MAX)
            goto out_of_range;
        int32_t x = (int32_t)v;
        memcpy(p + 4 * i, &x, 4);
        return MW_OK;
    }
    case MW_DTYPE_I64: {
        /* Beyond 2^53 a JSON number (a double here) is no longer exact. */
        if (v < -9007199254740992.0 || v > 9007199254740992.0)
            return mw_errf(MW_EINVAL, errstr, errstr_size,
                           "JSON data element %" PRIu64 " = %.17g is beyond +-2^53 and cannot be "
                           "exact in JSON; use the binary form for such i64 values",
                           i, v);
        int64_t x = (int64_t)v;
        memcpy(p + 8 * i, &x, 8);
        return MW_OK;
    }
    case MW_DTYPE_U8:
        if (v < 0 || v > 255)
            goto out_of_range;
        p[i] = (unsigned char)v;
        return MW_OK;
    default:
        return mw_errf(MW_EINVAL, errstr, errstr_size, "invalid dtype");
    }
out_of_range:
    return mw_errf(MW_EINVAL, errstr, errstr_size,
                   "JSON data element %" PRIu64 " = %.17g is out of range for %s", i, v,
                   mw_dtype_name(dtype));
}

/* Stores a nested data array whose structure must follow desc's shape from
 * dimension dim on; *next is the flat index of the next element. */
static int store_nested(const mw_tensor_desc_t *desc, const cJSON *node, int dim, void *out,
                        uint64_t *next, char *errstr, size_t errstr_size)
{
    if (!cJSON_IsArray(node))
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "JSON data: expected an array at depth %d (element %" PRIu64
                       "), shape has %d dimensions",
                       dim, *next, desc->ndim);
    int n = cJSON_GetArraySize(node);
    if ((int64_t)n != desc->shape[dim])
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "JSON data: an array at depth %d has %d elements, shape says %" PRId64, dim,
                       n, desc->shape[dim]);
    const cJSON *child;
    cJSON_ArrayForEach(child, node)
    {
        int rc = dim + 1 == desc->ndim
                     ? store_elem(desc->dtype, child, out, (*next)++, errstr, errstr_size)
                     : store_nested(desc, child, dim + 1, out, next, errstr, errstr_size);
        if (rc != MW_OK)
            return rc;
    }
    return MW_OK;
}

static int header_text_equal(const void *hv, size_t hs, const char *text)
{
    return hs == strlen(text) && memcmp(hv, text, hs) == 0;
}

static int parse_json_request(mw_request_t *req, const void *value, size_t value_len,
                              const mw_header_t *headers, size_t nheaders,
                              uint64_t max_tensor_bytes, char *errstr, size_t errstr_size)
{
    int rc = MW_OK;
    char q[300];
    uint64_t text_max = max_tensor_bytes > (UINT64_MAX - JSON_TEXT_SLACK) / JSON_TEXT_FACTOR
                            ? UINT64_MAX
                            : max_tensor_bytes * JSON_TEXT_FACTOR + JSON_TEXT_SLACK;
    if (value_len == 0)
        return mw_errf(MW_EINVAL, errstr, errstr_size, "malformed JSON: the value is empty");
    if (value_len > text_max)
        return mw_errf(MW_ETOOBIG, errstr, errstr_size,
                       "JSON value of %zu bytes is over the limit of %" PRIu64
                       " bytes (%d x records.max_tensor_bytes)",
                       value_len, text_max, JSON_TEXT_FACTOR);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(value, value_len, &end, 0);
    if (root == NULL) {
        size_t at =
            end != NULL && end >= (const char *)value ? (size_t)(end - (const char *)value) : 0;
        return mw_errf(MW_EINVAL, errstr, errstr_size, "malformed JSON at byte %zu", at);
    }
    for (const char *p = end; p < (const char *)value + value_len; p++) {
        if (!isspace((unsigned char)*p) && *p != '\0') {
            rc = mw_errf(MW_EINVAL, errstr, errstr_size,
                         "malformed JSON: unexpected data after the object at byte %zu",
                         (size_t)(p - (const char *)value));
            goto out_json;
        }
    }
    if (!cJSON_IsObject(root)) {
        rc = mw_errf(MW_EINVAL, errstr, errstr_size,
                     "JSON request is not an object {\"dtype\",\"shape\",\"data\"}");
        goto out_json;
    }
    const cJSON *jdtype = cJSON_GetObjectItemCaseSensitive(root, "dtype");
    const cJSON *jshape = cJSON_GetObjectItemCaseSensitive(root, "shape");
    const cJSON *jdata = cJSON_GetObjectItemCaseSensitive(root, "data");
    if (!cJSON_IsString(jdtype)) {
        rc = mw_errf(MW_EINVAL, errstr, errstr_size,
                     "JSON request: \"dtype\" is missing or not a string");
        goto out_json;
    }
    const char *dname = jdtype->valuestring;
    if (mw_dtype_parse(dname, strlen(dname), &req->desc.dtype) != MW_OK) {
        rc = mw_errf(MW_EINVAL, errstr, errstr_size,
                     "JSON request: unknown dtype '%s' (expected f32, f16, bf16, i32, i64 or u8)",
                     printable(q, sizeof(q), dname, strlen(dname)));
        goto out_json;
    }
    if (!cJSON_IsArray(jshape) || cJSON_GetArraySize(jshape) == 0 ||
        cJSON_GetArraySize(jshape) > MW_TENSOR_MAX_DIMS) {
        rc = mw_errf(MW_EINVAL, errstr, errstr_size,
                     "JSON request: \"shape\" must be an array of 1 to %d positive integers",
                     MW_TENSOR_MAX_DIMS);
        goto out_json;
    }
    req->desc.ndim = 0;
    const cJSON *jd;
    cJSON_ArrayForEach(jd, jshape)
    {
        double d = cJSON_IsNumber(jd) ? jd->valuedouble : 0;
        if (!(d >= 1 && d <= 4.0e18) || d != floor(d)) {
            rc = mw_errf(MW_EINVAL, errstr, errstr_size,
                         "JSON request: shape dimension %d is not a positive integer",
                         req->desc.ndim);
            goto out_json;
        }
        req->desc.shape[req->desc.ndim++] = (int64_t)d;
    }
    uint64_t numel, nbytes;
    if (mw_tensor_numel(&req->desc, &numel) != MW_OK ||
        mw_tensor_nbytes(&req->desc, &nbytes) != MW_OK) {
        rc = mw_errf(MW_ETOOBIG, errstr, errstr_size, "JSON request: shape has too many elements");
        goto out_json;
    }
    /* Optional headers must agree with the JSON. */
    const void *hv;
    size_t hs;
    if (mw_header_find(headers, nheaders, MW_HDR_DTYPE, &hv, &hs) == MW_OK &&
        !header_text_equal(hv, hs, mw_dtype_name(req->desc.dtype))) {
        rc = mw_errf(MW_EINVAL, errstr, errstr_size,
                     "header mw-dtype '%s' disagrees with the JSON dtype '%s'",
                     printable(q, sizeof(q), hv, hs), mw_dtype_name(req->desc.dtype));
        goto out_json;
    }
    char shape_text[MW_TENSOR_MAX_DIMS * 21];
    mw_shape_format(&req->desc, shape_text, sizeof(shape_text));
    if (mw_header_find(headers, nheaders, MW_HDR_SHAPE, &hv, &hs) == MW_OK &&
        !header_text_equal(hv, hs, shape_text)) {
        rc = mw_errf(MW_EINVAL, errstr, errstr_size,
                     "header mw-shape '%s' disagrees with the JSON shape '%s'",
                     printable(q, sizeof(q), hv, hs), shape_text);
        goto out_json;
    }
    if (nbytes > max_tensor_bytes) {
        rc = mw_errf(MW_ETOOBIG, errstr, errstr_size,
                     "tensor of %" PRIu64 " bytes (%s %s) is over the limit of %" PRIu64
                     " bytes (records.max_tensor_bytes)",
                     nbytes, mw_dtype_name(req->desc.dtype), shape_text, max_tensor_bytes);
        goto out_json;
    }
    if (!cJSON_IsArray(jdata)) {
        rc = mw_errf(MW_EINVAL, errstr, errstr_size,
                     "JSON request: \"data\" is missing or not an array");
        goto out_json;
    }
    void *out = malloc(nbytes);
    if (out == NULL) {
        rc = mw_errf(MW_ENOMEM, errstr, errstr_size, "out of memory for %" PRIu64 " bytes", nbytes);
        goto out_json;
    }
    /* Flat: numel numbers. Nested: arrays following the shape. */
    const cJSON *first = jdata->child;
    if (first != NULL && cJSON_IsNumber(first)) {
        uint64_t n = (uint64_t)cJSON_GetArraySize(jdata);
        if (n != numel) {
            rc = mw_errf(MW_EINVAL, errstr, errstr_size,
                         "JSON data has %" PRIu64 " elements but shape %s needs %" PRIu64, n,
                         shape_text, numel);
            goto out_data;
        }
        uint64_t i = 0;
        const cJSON *item;
        cJSON_ArrayForEach(item, jdata)
        {
            rc = store_elem(req->desc.dtype, item, out, i++, errstr, errstr_size);
            if (rc != MW_OK)
                goto out_data;
        }
    } else {
        uint64_t next = 0;
        rc = store_nested(&req->desc, jdata, 0, out, &next, errstr, errstr_size);
        if (rc != MW_OK)
            goto out_data;
    }
    req->owned = out;
    req->data = out;
    req->nbytes = (size_t)nbytes;
    req->json = 1;
    goto out_json;
out_data:
    free(out);
out_json:
    cJSON_Delete(root);
    return rc;
}

/* ---- requests ------------------------------------------------------------------ */

/* 1 when s is a name Kafka accepts for a topic: 1 to 249 of [a-zA-Z0-9._-],
 * neither "." nor "..". */
static int topic_name_valid(const char *s, size_t len)
{
    size_t dots = 0;
    if (len == 0 || len > MW_TOPIC_NAME_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (!isalnum((unsigned char)s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-')
            return 0;
        dots += s[i] == '.';
    }
    return !(len <= 2 && dots == len);
}

/* The reply topic from mw-reply-topic or kafka_replyTopic (equal when both). */
static int reply_topic_parse(mw_request_t *req, const mw_header_t *headers, size_t nheaders,
                             char *errstr, size_t errstr_size)
{
    static const char *const names[] = {MW_HDR_REPLY_TOPIC, MW_HDR_SPRING_REPLY_TOPIC};
    char q[300];
    for (int k = 0; k < 2; k++) {
        const void *hv;
        size_t hs;
        if (mw_header_find(headers, nheaders, names[k], &hv, &hs) != MW_OK)
            continue;
        if (hv == NULL || !topic_name_valid(hv, hs))
            return mw_errf(MW_EINVAL, errstr, errstr_size,
                           "header %s '%s' is not a Kafka topic name (1 to %d of a-z A-Z 0-9 . "
                           "_ -)",
                           names[k], printable(q, sizeof(q), hv, hs), MW_TOPIC_NAME_MAX);
        if (req->reply_topic != NULL &&
            (hs != req->reply_topic_len || memcmp(hv, req->reply_topic, hs) != 0))
            return mw_errf(MW_EINVAL, errstr, errstr_size,
                           "headers %s and %s name different reply topics", names[0], names[1]);
        req->reply_topic = hv;
        req->reply_topic_len = hs;
    }
    return MW_OK;
}

/* The reply partition from mw-reply-partition (decimal) or kafka_replyPartition
 * (a 4-byte big-endian int, as Spring Kafka writes it), equal when both; only
 * with a reply topic. */
static int reply_partition_parse(mw_request_t *req, const mw_header_t *headers, size_t nheaders,
                                 char *errstr, size_t errstr_size)
{
    char q[300];
    const void *hv;
    size_t hs;
    int64_t part = -1;
    if (mw_header_find(headers, nheaders, MW_HDR_REPLY_PART, &hv, &hs) == MW_OK &&
        (parse_uint_header(hv, hs, &part) != MW_OK || part > INT32_MAX))
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "header %s '%s' is not a partition number (0 to %d)", MW_HDR_REPLY_PART,
                       printable(q, sizeof(q), hv, hs), INT32_MAX);
    if (mw_header_find(headers, nheaders, MW_HDR_SPRING_REPLY_PART, &hv, &hs) == MW_OK) {
        const unsigned char *b = hv;
        if (hv == NULL || hs != 4 || b[0] >= 0x80)
            return mw_errf(MW_EINVAL, errstr, errstr_size,
                           "header %s '%s' is not a partition number (4 bytes, big-endian, "
                           "non-negative)",
                           MW_HDR_SPRING_REPLY_PART, printable(q, sizeof(q), hv, hs));
        int64_t spring = (int64_t)b[0] << 24 | (int64_t)b[1] << 16 | (int64_t)b[2] << 8 | b[3];
        if (part >= 0 && part != spring)
            return mw_errf(MW_EINVAL, errstr, errstr_size,
                           "headers %s and %s name different reply partitions", MW_HDR_REPLY_PART,
                           MW_HDR_SPRING_REPLY_PART);
        part = spring;
    }
    if (part >= 0 && req->reply_topic == NULL)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "a reply partition without a reply topic (%s or %s)", MW_HDR_REPLY_TOPIC,
                       MW_HDR_SPRING_REPLY_TOPIC);
    req->reply_partition = (int32_t)part;
    return MW_OK;
}

/* The reply route and kafka_correlationId. */
static int reply_parse(mw_request_t *req, const mw_header_t *headers, size_t nheaders, char *errstr,
                       size_t errstr_size)
{
    const void *hv;
    size_t hs;
    int rc = reply_topic_parse(req, headers, nheaders, errstr, errstr_size);
    if (rc == MW_OK)
        rc = reply_partition_parse(req, headers, nheaders, errstr, errstr_size);
    if (rc != MW_OK)
        return rc;
    if (mw_header_find(headers, nheaders, MW_HDR_CORRELATION_ID, &hv, &hs) == MW_OK) {
        if (hv == NULL || hs == 0 || hs > MW_CORRELATION_ID_MAX)
            return mw_errf(MW_EINVAL, errstr, errstr_size,
                           "header %s is %zu bytes, it must be 1 to %d", MW_HDR_CORRELATION_ID, hs,
                           MW_CORRELATION_ID_MAX);
        req->correlation_id = hv;
        req->correlation_id_len = hs;
    }
    return MW_OK;
}

static int request_parse(mw_request_t *req, const void *key, size_t key_len, const void *value,
                         size_t value_len, const mw_header_t *headers, size_t nheaders,
                         uint64_t max_tensor_bytes, char *errstr, size_t errstr_size)
{
    char q[300];
    const void *hv;
    size_t hs;
    int rc;
    if (key == NULL || key_len == 0)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "missing request id: the record key is empty");
    if (key_len > MW_REQUEST_ID_MAX)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "request id (record key) is %zu bytes, at most %d are allowed", key_len,
                       MW_REQUEST_ID_MAX);
    if (value == NULL)
        value_len = 0;

    int json = 0;
    if (mw_header_find(headers, nheaders, MW_HDR_CONTENT_TYPE, &hv, &hs) == MW_OK) {
        if (media_type_is(hv, hs, MW_CONTENT_TYPE_JSON))
            json = 1;
        else if (!media_type_is(hv, hs, MW_CONTENT_TYPE_BINARY))
            return mw_errf(
                MW_EINVAL, errstr, errstr_size, "unsupported content-type '%s' (expected %s or %s)",
                printable(q, sizeof(q), hv, hs), MW_CONTENT_TYPE_JSON, MW_CONTENT_TYPE_BINARY);
    }

    rc = reply_parse(req, headers, nheaders, errstr, errstr_size);
    if (rc != MW_OK)
        return rc;

    int64_t deadline = 0;
    if (mw_header_find(headers, nheaders, MW_HDR_DEADLINE, &hv, &hs) == MW_OK &&
        parse_uint_header(hv, hs, &deadline) != MW_OK)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "header mw-deadline-ms '%s' is not a non-negative integer (Unix time in "
                       "milliseconds)",
                       printable(q, sizeof(q), hv, hs));

    if (json) {
        rc = parse_json_request(req, value, value_len, headers, nheaders, max_tensor_bytes, errstr,
                                errstr_size);
        if (rc != MW_OK)
            return rc;
    } else {
        if (mw_header_find(headers, nheaders, MW_HDR_DTYPE, &hv, &hs) != MW_OK)
            return mw_errf(MW_EINVAL, errstr, errstr_size, "missing header mw-dtype");
        if (mw_dtype_parse(hv, hs, &req->desc.dtype) != MW_OK)
            return mw_errf(MW_EINVAL, errstr, errstr_size,
                           "unknown dtype '%s' in header mw-dtype (expected f32, f16, bf16, i32, "
                           "i64 or u8)",
                           printable(q, sizeof(q), hv, hs));
        if (mw_header_find(headers, nheaders, MW_HDR_SHAPE, &hv, &hs) != MW_OK)
            return mw_errf(MW_EINVAL, errstr, errstr_size, "missing header mw-shape");
        /* Only printable text reaches mw_shape_parse, which echoes it into errors. */
        const unsigned char *st = hv;
        for (size_t i = 0; i < hs; i++)
            if (st[i] < 0x20 || st[i] > 0x7e)
                return mw_errf(MW_EINVAL, errstr, errstr_size,
                               "bad header mw-shape '%s': expected dimensions like 1,784",
                               printable(q, sizeof(q), hv, hs));
        char serr[256];
        if (mw_shape_parse(hv, hs, &req->desc, serr, sizeof(serr)) != MW_OK)
            return mw_errf(MW_EINVAL, errstr, errstr_size, "bad header mw-shape: %s", serr);
        char shape_text[MW_TENSOR_MAX_DIMS * 21];
        mw_shape_format(&req->desc, shape_text, sizeof(shape_text));
        uint64_t nbytes;
        if (mw_tensor_nbytes(&req->desc, &nbytes) != MW_OK)
            return mw_errf(MW_ETOOBIG, errstr, errstr_size,
                           "bad header mw-shape '%s': too many elements", shape_text);
        if (nbytes != value_len)
            return mw_errf(MW_EINVAL, errstr, errstr_size,
                           "value is %zu bytes but shape %s of %s needs %" PRIu64 " bytes",
                           value_len, shape_text, mw_dtype_name(req->desc.dtype), nbytes);
        if (nbytes > max_tensor_bytes)
            return mw_errf(MW_ETOOBIG, errstr, errstr_size,
                           "tensor of %" PRIu64 " bytes is over the limit of %" PRIu64
                           " bytes (records.max_tensor_bytes)",
                           nbytes, max_tensor_bytes);
        req->data = value;
        req->nbytes = value_len;
    }
    req->id = key;
    req->id_len = key_len;
    req->deadline_ms = deadline;
    return MW_OK;
}

int mw_request_parse(mw_request_t *req, const void *key, size_t key_len, const void *value,
                     size_t value_len, const mw_header_t *headers, size_t nheaders,
                     uint64_t max_tensor_bytes, char *errstr, size_t errstr_size)
{
    memset(req, 0, sizeof(*req));
    int rc = request_parse(req, key, key_len, value, value_len, headers, nheaders, max_tensor_bytes,
                           errstr, errstr_size);
    if (rc != MW_OK)
        memset(req, 0, sizeof(*req)); /* parse_json_request frees its data on failure */
    return rc;
}

void mw_request_fini(mw_request_t *req)
{
    if (req == NULL)
        return;
    free(req->owned);
    memset(req, 0, sizeof(*req));
}

int mw_reply_topic_allowed(const char *patterns, const char *topic)
{
    char pat[MW_TOPIC_NAME_MAX * 4 + 1];
    for (const char *p = patterns; *p != '\0';) {
        size_t len = strcspn(p, ",");
        size_t b = 0, e = len;
        while (b < e && isspace((unsigned char)p[b]))
            b++;
        while (e > b && isspace((unsigned char)p[e - 1]))
            e--;
        if (e > b && e - b < sizeof(pat)) {
            memcpy(pat, p + b, e - b);
            pat[e - b] = '\0';
            if (fnmatch(pat, topic, 0) == 0)
                return 1;
        }
        p += len + (p[len] == ',');
    }
    return 0;
}

/* ---- results --------------------------------------------------------------------- */

int mw_result_parse(mw_result_t *res, const void *key, size_t key_len, const void *value,
                    size_t value_len, const mw_header_t *headers, size_t nheaders, char *errstr,
                    size_t errstr_size)
{
    char q[300];
    const void *hv;
    size_t hs;
    memset(res, 0, sizeof(*res));
    res->latency_us = -1;
    res->id = key;
    res->id_len = key != NULL ? key_len : 0;
    if (value == NULL)
        value_len = 0;
    if (mw_header_find(headers, nheaders, MW_HDR_STATUS, &hv, &hs) != MW_OK)
        return mw_errf(MW_EINVAL, errstr, errstr_size, "result: missing header mw-status");
    if (header_text_equal(hv, hs, "ok"))
        res->ok = 1;
    else if (!header_text_equal(hv, hs, "error"))
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "result: mw-status '%s' is neither ok nor error",
                       printable(q, sizeof(q), hv, hs));
    if (mw_header_find(headers, nheaders, MW_HDR_ERROR, &hv, &hs) == MW_OK) {
        res->error = hv != NULL ? hv : "";
        res->error_len = hs;
    }
    if (mw_header_find(headers, nheaders, MW_HDR_CORRELATION_ID, &hv, &hs) == MW_OK) {
        res->correlation_id = hv;
        res->correlation_id_len = hs;
    }
    if (mw_header_find(headers, nheaders, MW_HDR_ATTEMPTS, &hv, &hs) == MW_OK &&
        parse_uint_header(hv, hs, &res->attempts) != MW_OK)
        return mw_errf(MW_EINVAL, errstr, errstr_size, "result: bad mw-attempts '%s'",
                       printable(q, sizeof(q), hv, hs));
    if (mw_header_find(headers, nheaders, MW_HDR_LATENCY, &hv, &hs) == MW_OK &&
        parse_uint_header(hv, hs, &res->latency_us) != MW_OK)
        return mw_errf(MW_EINVAL, errstr, errstr_size, "result: bad mw-latency-us '%s'",
                       printable(q, sizeof(q), hv, hs));
    int have_dtype = mw_header_find(headers, nheaders, MW_HDR_DTYPE, &hv, &hs) == MW_OK;
    if (have_dtype && mw_dtype_parse(hv, hs, &res->desc.dtype) != MW_OK)
        return mw_errf(MW_EINVAL, errstr, errstr_size, "result: unknown dtype '%s'",
                       printable(q, sizeof(q), hv, hs));
    int have_shape = mw_header_find(headers, nheaders, MW_HDR_SHAPE, &hv, &hs) == MW_OK;
    if (have_shape) {
        char serr[256];
        if (hs == 0 || memchr(hv, '\0', hs) != NULL ||
            mw_shape_parse(hv, hs, &res->desc, serr, sizeof(serr)) != MW_OK)
            return mw_errf(MW_EINVAL, errstr, errstr_size, "result: bad mw-shape '%s'",
                           printable(q, sizeof(q), hv, hs));
    }
    if (res->ok) {
        uint64_t nbytes;
        if (!have_dtype || !have_shape)
            return mw_errf(MW_EINVAL, errstr, errstr_size,
                           "result: status ok without mw-dtype and mw-shape");
        if (mw_tensor_nbytes(&res->desc, &nbytes) != MW_OK || nbytes != value_len)
            return mw_errf(MW_EINVAL, errstr, errstr_size,
                           "result: value is %zu bytes, its shape needs %" PRIu64, value_len,
                           nbytes);
        res->data = value;
        res->nbytes = value_len;
    }
    return MW_OK;
}

/* ---- building records --------------------------------------------------------------- */

void mw_record_init(mw_record_t *rec)
{
    memset(rec, 0, sizeof(*rec));
}

void mw_record_fini(mw_record_t *rec)
{
    if (rec == NULL)
        return;
    for (size_t i = 0; i < rec->nowned; i++)
        free(rec->owned[i]);
    free(rec->owned);
    free(rec->headers);
    memset(rec, 0, sizeof(*rec));
}

/* Makes rec own p (freed by fini); frees p on failure. */
static int own(mw_record_t *rec, char *p)
{
    char **o = realloc(rec->owned, (rec->nowned + 1) * sizeof(*o));
    if (o == NULL) {
        free(p);
        return MW_ENOMEM;
    }
    rec->owned = o;
    rec->owned[rec->nowned++] = p;
    return MW_OK;
}

int mw_record_add_header(mw_record_t *rec, const char *name, const void *value, size_t size)
{
    if (rec->nheaders == rec->cap) {
        size_t cap = rec->cap ? rec->cap * 2 : 8;
        mw_header_t *h = realloc(rec->headers, cap * sizeof(*h));
        if (h == NULL)
            return MW_ENOMEM;
        rec->headers = h;
        rec->cap = cap;
    }
    size_t nlen = strlen(name);
    char *copy = malloc(nlen + 1 + size + 1);
    if (copy == NULL || own(rec, copy) != MW_OK)
        return MW_ENOMEM;
    memcpy(copy, name, nlen + 1);
    if (size > 0)
        memcpy(copy + nlen + 1, value, size);
    copy[nlen + 1 + size] = '\0';
    rec->headers[rec->nheaders++] =
        (mw_header_t){.name = copy, .value = value != NULL ? copy + nlen + 1 : NULL, .size = size};
    return MW_OK;
}

static int add_text(mw_record_t *rec, const char *name, const char *text)
{
    return mw_record_add_header(rec, name, text, strlen(text));
}

static int add_int(mw_record_t *rec, const char *name, int64_t v)
{
    char buf[24];
    snprintf(buf, sizeof(buf), "%" PRId64, v);
    return add_text(rec, name, buf);
}

static int add_desc(mw_record_t *rec, const mw_tensor_desc_t *desc)
{
    char shape[MW_TENSOR_MAX_DIMS * 21];
    mw_shape_format(desc, shape, sizeof(shape));
    int rc = add_text(rec, MW_HDR_DTYPE, mw_dtype_name(desc->dtype));
    return rc != MW_OK ? rc : add_text(rec, MW_HDR_SHAPE, shape);
}

/* A growable string for the JSON encoder. */
struct sbuf {
    char *p;
    size_t len, cap;
};

static int sb_grow(struct sbuf *b, size_t more)
{
    if (b->len + more + 1 <= b->cap)
        return MW_OK;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (p == NULL)
        return MW_ENOMEM;
    b->p = p;
    b->cap = cap;
    return MW_OK;
}

static int sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int sb_printf(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    char tmp[64];
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(tmp) || sb_grow(b, (size_t)n) != MW_OK)
        return MW_ENOMEM;
    memcpy(b->p + b->len, tmp, (size_t)n + 1);
    b->len += (size_t)n;
    return MW_OK;
}

int mw_tensor_json(char **out, const mw_tensor_desc_t *desc, const void *data, size_t nbytes)
{
    uint64_t numel, need;
    if (mw_tensor_numel(desc, &numel) != MW_OK || mw_tensor_nbytes(desc, &need) != MW_OK ||
        need != nbytes)
        return MW_EINVAL;
    size_t orig_len = *out != NULL ? strlen(*out) : 0;
    struct sbuf b = {.p = *out, .len = orig_len, .cap = *out != NULL ? orig_len + 1 : 0};
    int rc = sb_printf(&b, "{\"dtype\":\"%s\",\"shape\":[", mw_dtype_name(desc->dtype));
    for (int d = 0; rc == MW_OK && d < desc->ndim; d++)
        rc = sb_printf(&b, "%s%" PRId64, d ? "," : "", desc->shape[d]);
    if (rc == MW_OK)
        rc = sb_printf(&b, "],\"data\":[");
    for (uint64_t i = 0; rc == MW_OK && i < numel; i++) {
        const char *sep = i ? "," : "";
        if (desc->dtype == MW_DTYPE_I64) {
            int64_t v;
            memcpy(&v, (const char *)data + 8 * i, 8);
            rc = sb_printf(&b, "%s%" PRId64, sep, v);
            continue;
        }
        double v = mw_tensor_elem(desc->dtype, data, (size_t)i);
        if (!isfinite(v))
            rc = MW_EINVAL; /* JSON has no NaN or infinity */
        else if (desc->dtype == MW_DTYPE_I32 || desc->dtype == MW_DTYPE_U8)
            rc = sb_printf(&b, "%s%.0f", sep, v);
        else
            rc = sb_printf(&b, "%s%.9g", sep, v);
    }
    if (rc == MW_OK)
        rc = sb_printf(&b, "]}");
    if (rc != MW_OK) {
        if (*out == NULL)
            free(b.p);
        else
            b.p[orig_len] = '\0'; /* the caller's text as it was, perhaps moved */
        *out = *out == NULL ? NULL : b.p;
        return rc;
    }
    *out = b.p;
    return MW_OK;
}

int mw_request_encode(mw_record_t *rec, const void *id, size_t id_len, const mw_tensor_desc_t *desc,
                      const void *data, size_t nbytes, int64_t deadline_ms, int json, char *errstr,
                      size_t errstr_size)
{
    uint64_t need;
    if (id_len == 0 || id_len > MW_REQUEST_ID_MAX)
        return mw_errf(MW_EINVAL, errstr, errstr_size, "request id must be 1 to %d bytes",
                       MW_REQUEST_ID_MAX);
    if (mw_tensor_nbytes(desc, &need) != MW_OK || need != nbytes)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "tensor is %zu bytes, its dtype and shape need %" PRIu64, nbytes, need);
    rec->key = id;
    rec->key_len = id_len;
    int rc;
    if (json) {
        char *text = NULL;
        rc = mw_tensor_json(&text, desc, data, nbytes);
        if (rc != MW_OK || own(rec, text) != MW_OK) {
            if (rc != MW_OK)
                free(text);
            return mw_errf(rc != MW_OK ? rc : MW_ENOMEM, errstr, errstr_size,
                           rc == MW_EINVAL ? "tensor has NaN or infinite values, which JSON "
                                             "cannot carry"
                                           : "out of memory");
        }
        rec->value = text;
        rec->value_len = strlen(text);
        rc = add_text(rec, MW_HDR_CONTENT_TYPE, MW_CONTENT_TYPE_JSON);
    } else {
        rec->value = data;
        rec->value_len = nbytes;
        rc = add_desc(rec, desc);
    }
    if (rc == MW_OK && json)
        rc = add_desc(rec, desc);
    if (rc == MW_OK && deadline_ms > 0)
        rc = add_int(rec, MW_HDR_DEADLINE, deadline_ms);
    if (rc != MW_OK)
        return mw_errf(rc, errstr, errstr_size, "out of memory");
    return MW_OK;
}

int mw_result_encode(mw_record_t *rec, const mw_result_t *res, char *errstr, size_t errstr_size)
{
    int rc;
    rec->key = res->id;
    rec->key_len = res->id_len;
    rec->value = NULL;
    rec->value_len = 0;
    if (res->ok) {
        uint64_t need;
        if (mw_tensor_nbytes(&res->desc, &need) != MW_OK || need != res->nbytes)
            return mw_errf(MW_EINVAL, errstr, errstr_size,
                           "result tensor is %zu bytes, its dtype and shape need %" PRIu64,
                           res->nbytes, need);
        rc = add_text(rec, MW_HDR_STATUS, "ok");
        if (rc == MW_OK)
            rc = add_desc(rec, &res->desc);
        rec->value = res->data;
        rec->value_len = res->nbytes;
    } else {
        const char *e = res->error != NULL ? res->error : "unknown error";
        size_t elen = res->error != NULL && res->error_len > 0 ? res->error_len : strlen(e);
        rc = add_text(rec, MW_HDR_STATUS, "error");
        if (rc == MW_OK)
            rc = mw_record_add_header(rec, MW_HDR_ERROR, e,
                                      elen < MW_RECORD_ERROR_MAX ? elen : MW_RECORD_ERROR_MAX);
    }
    if (rc == MW_OK)
        rc = add_int(rec, MW_HDR_ATTEMPTS, res->attempts);
    if (rc == MW_OK && res->latency_us >= 0)
        rc = add_int(rec, MW_HDR_LATENCY, res->latency_us);
    if (rc == MW_OK && res->correlation_id != NULL)
        rc = mw_record_add_header(rec, MW_HDR_CORRELATION_ID, res->correlation_id,
                                  res->correlation_id_len);
    if (rc != MW_OK)
        return mw_errf(rc, errstr, errstr_size, "out of memory");
    return MW_OK;
}

int mw_dlq_encode(mw_record_t *rec, const void *key, size_t key_len, const void *value,
                  size_t value_len, const mw_header_t *headers, size_t nheaders, const char *error,
                  int64_t attempts)
{
    int rc = MW_OK;
    rec->key = key;
    rec->key_len = key != NULL ? key_len : 0;
    rec->value = value;
    rec->value_len = value != NULL ? value_len : 0;
    for (size_t i = 0; rc == MW_OK && i < nheaders; i++) {
        if (headers[i].name == NULL || strcmp(headers[i].name, MW_HDR_ERROR) == 0 ||
            strcmp(headers[i].name, MW_HDR_ATTEMPTS) == 0)
            continue;
        rc = mw_record_add_header(rec, headers[i].name, headers[i].value, headers[i].size);
    }
    const char *e = error != NULL ? error : "unknown error";
    size_t elen = strlen(e);
    if (rc == MW_OK)
        rc = mw_record_add_header(rec, MW_HDR_ERROR, e,
                                  elen < MW_RECORD_ERROR_MAX ? elen : MW_RECORD_ERROR_MAX);
    if (rc == MW_OK)
        rc = add_int(rec, MW_HDR_ATTEMPTS, attempts);
    return rc;
}

/* ---- librdkafka adapters ------------------------------------------------------------- */

/* Borrows the last value of each named header of msg into out[]; returns how many. */
static size_t message_headers(const rd_kafka_message_t *msg, const char *const *names,
                              size_t nnames, mw_header_t *out)
{
    rd_kafka_headers_t *hdrs = NULL;
    size_t n = 0;
    if (rd_kafka_message_headers(msg, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR || hdrs == NULL)
        return 0;
    for (size_t i = 0; i < nnames; i++) {
        const void *v;
        size_t s;
        if (rd_kafka_header_get_last(hdrs, names[i], &v, &s) == RD_KAFKA_RESP_ERR_NO_ERROR)
            out[n++] = (mw_header_t){.name = names[i], .value = v, .size = v != NULL ? s : 0};
    }
    return n;
}

int mw_request_from_message(mw_request_t *req, const rd_kafka_message_t *msg,
                            uint64_t max_tensor_bytes, char *errstr, size_t errstr_size)
{
    static const char *const names[] = {MW_HDR_DTYPE,
                                        MW_HDR_SHAPE,
                                        MW_HDR_DEADLINE,
                                        MW_HDR_CONTENT_TYPE,
                                        MW_HDR_REPLY_TOPIC,
                                        MW_HDR_REPLY_PART,
                                        MW_HDR_SPRING_REPLY_TOPIC,
                                        MW_HDR_SPRING_REPLY_PART,
                                        MW_HDR_CORRELATION_ID};
    mw_header_t h[sizeof(names) / sizeof(names[0])];
    size_t n = message_headers(msg, names, sizeof(names) / sizeof(names[0]), h);
    return mw_request_parse(req, msg->key, msg->key_len, msg->payload, msg->len, h, n,
                            max_tensor_bytes, errstr, errstr_size);
}

int mw_result_from_message(mw_result_t *res, const rd_kafka_message_t *msg, char *errstr,
                           size_t errstr_size)
{
    static const char *const names[] = {MW_HDR_STATUS,        MW_HDR_ERROR,    MW_HDR_DTYPE,
                                        MW_HDR_SHAPE,         MW_HDR_ATTEMPTS, MW_HDR_LATENCY,
                                        MW_HDR_CORRELATION_ID};
    mw_header_t h[sizeof(names) / sizeof(names[0])];
    size_t n = message_headers(msg, names, sizeof(names) / sizeof(names[0]), h);
    return mw_result_parse(res, msg->key, msg->key_len, msg->payload, msg->len, h, n, errstr,
                           errstr_size);
}

int mw_dlq_encode_message(mw_record_t *rec, const rd_kafka_message_t *msg, const char *error,
                          int64_t attempts)
{
    rd_kafka_headers_t *hdrs = NULL;
    mw_header_t *list = NULL;
    size_t n = 0;
    if (rd_kafka_message_headers(msg, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR && hdrs != NULL) {
        size_t count = rd_kafka_header_cnt(hdrs);
        list = calloc(count ? count : 1, sizeof(*list));
        if (list == NULL)
            return MW_ENOMEM;
        const char *name;
        const void *v;
        size_t s;
        while (n < count &&
               rd_kafka_header_get_all(hdrs, n, &name, &v, &s) == RD_KAFKA_RESP_ERR_NO_ERROR) {
            list[n] = (mw_header_t){.name = name, .value = v, .size = v != NULL ? s : 0};
            n++;
        }
    }
    int rc = mw_dlq_encode(rec, msg->key, msg->key_len, msg->payload, msg->len, list, n, error,
                           attempts);
    free(list);
    return rc;
}

rd_kafka_headers_t *mw_record_kafka_headers(const mw_record_t *rec)
{
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(rec->nheaders);
    for (size_t i = 0; i < rec->nheaders; i++) {
        const mw_header_t *h = &rec->headers[i];
        rd_kafka_header_add(hdrs, h->name, -1, h->value, h->value != NULL ? (ssize_t)h->size : 0);
    }
    return hdrs;
}

int mw_record_produce(rd_kafka_t *rk, const char *topic, int32_t partition, const mw_record_t *rec,
                      void *msg_opaque, char *errstr, size_t errstr_size)
{
    rd_kafka_headers_t *hdrs = mw_record_kafka_headers(rec);
    rd_kafka_resp_err_t err = rd_kafka_producev(
        rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY((void *)rec->key, rec->key_len),
        RD_KAFKA_V_VALUE((void *)rec->value, rec->value_len), RD_KAFKA_V_HEADERS(hdrs),
        RD_KAFKA_V_OPAQUE(msg_opaque), RD_KAFKA_V_END);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_headers_destroy(hdrs); /* producev takes them over only on success */
        return mw_errf(err == RD_KAFKA_RESP_ERR__QUEUE_FULL ? MW_EAGAIN : MW_EKAFKA, errstr,
                       errstr_size, "producing to %s: %s", topic, rd_kafka_err2str(err));
    }
    return MW_OK;
}
