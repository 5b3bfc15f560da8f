/* mwctl's check of pipeline outputs against the reference runner (see verify.h). */
#include "verify.h"

#include "err.h"
#include "model/model.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One kept request input; entries of one bucket form a list. */
struct input {
    struct input *next;
    uint64_t hash;
    mw_tensor_desc_t desc;
    size_t id_len, nbytes;
    unsigned char *data; /* id_len bytes of id, then nbytes of tensor at id_len */
};

struct mwctl_verifier {
    mw_model_t *model;
    mw_stage_t *stage;
    struct input **buckets;
    size_t nbuckets, count;
    mwctl_verify_stats_t stats;
    double tolerance;
    char criterion[48];
};

static uint64_t hash_id(const void *id, size_t len)
{
    const unsigned char *p = id;
    uint64_t h = UINT64_C(14695981039346656037);
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * UINT64_C(1099511628211);
    return h;
}

static int same_id(const struct input *in, uint64_t hash, const void *id, size_t id_len)
{
    return in->hash == hash && in->id_len == id_len && memcmp(in->data, id, id_len) == 0;
}

int mwctl_verifier_new(const char *model_path, int max_rows, mwctl_verifier_t **out, char *errstr,
                       size_t errstr_size)
{
    mwctl_verifier_t *v = calloc(1, sizeof(*v));
    if (v == NULL)
        return mw_errf(MW_ENOMEM, errstr, errstr_size, "out of memory");
    v->nbuckets = 1024;
    mwctl_verifier_set_tolerance(v, 0);
    v->buckets = calloc(v->nbuckets, sizeof(*v->buckets));
    if (v->buckets == NULL) {
        free(v);
        return mw_errf(MW_ENOMEM, errstr, errstr_size, "out of memory");
    }
    int rc = mw_model_open(model_path, &v->model, errstr, errstr_size);
    if (rc != MW_OK)
        goto out_free;
    /* The whole model as one stage: bit-identical to any split of it and to
     * any batch a request shares (model.h). */
    rc = mw_stage_new(v->model, 0, mw_model_num_layers(v->model), max_rows, -1, &v->stage, errstr,
                      errstr_size);
    if (rc != MW_OK)
        goto out_model;
    *out = v;
    return MW_OK;
out_model:
    mw_model_destroy(v->model);
out_free:
    free(v->buckets);
    free(v);
    return rc;
}

void mwctl_verifier_destroy(mwctl_verifier_t *v)
{
    if (v == NULL)
        return;
    for (size_t b = 0; b < v->nbuckets; b++) {
        struct input *in = v->buckets[b];
        while (in != NULL) {
            struct input *next = in->next;
            free(in->data);
            free(in);
            in = next;
        }
    }
    free(v->buckets);
    mw_stage_destroy(v->stage);
    mw_model_destroy(v->model);
    free(v);
}

/* Doubles the table when it holds more than two entries per bucket. */
static void maybe_grow(mwctl_verifier_t *v)
{
    if (v->count < 2 * v->nbuckets)
        return;
    size_t n = v->nbuckets * 2;
    struct input **b = calloc(n, sizeof(*b));
    if (b == NULL)
        return; /* keep the longer chains */
    for (size_t i = 0; i < v->nbuckets; i++) {
        struct input *in = v->buckets[i];
        while (in != NULL) {
            struct input *next = in->next;
            in->next = b[in->hash % n];
            b[in->hash % n] = in;
            in = next;
        }
    }
    free(v->buckets);
    v->buckets = b;
    v->nbuckets = n;
}

int mwctl_verifier_put(mwctl_verifier_t *v, const void *id, size_t id_len,
                       const mw_tensor_desc_t *desc, const void *data, size_t nbytes)
{
    uint64_t h = hash_id(id, id_len);
    for (struct input *in = v->buckets[h % v->nbuckets]; in != NULL; in = in->next)
        if (same_id(in, h, id, id_len) && in->nbytes == nbytes &&
            memcmp(&in->desc, desc, sizeof(*desc)) == 0 &&
            memcmp(in->data + id_len, data, nbytes) == 0)
            return MW_OK; /* the same request read twice */
    struct input *in = calloc(1, sizeof(*in));
    unsigned char *copy = malloc(id_len + nbytes + 1);
    if (in == NULL || copy == NULL) {
        free(in);
        free(copy);
        return MW_ENOMEM;
    }
    memcpy(copy, id, id_len);
    if (nbytes > 0)
        memcpy(copy + id_len, data, nbytes);
    in->hash = h;
    in->desc = *desc;
    in->id_len = id_len;
    in->nbytes = nbytes;
    in->data = copy;
    in->next = v->buckets[h % v->nbuckets];
    v->buckets[h % v->nbuckets] = in;
    v->count++;
    v->stats.pending++;
    maybe_grow(v);
    return MW_OK;
}

int mwctl_verifier_has(const mwctl_verifier_t *v, const void *id, size_t id_len)
{
    uint64_t h = hash_id(id, id_len);
    for (const struct input *in = v->buckets[h % v->nbuckets]; in != NULL; in = in->next)
        if (same_id(in, h, id, id_len))
            return 1;
    return 0;
}

void mwctl_verifier_set_tolerance(mwctl_verifier_t *v, double rel)
{
    v->tolerance = rel;
    if (rel > 0)
        snprintf(v->criterion, sizeof(v->criterion), "within %g of", rel);
    else
        snprintf(v->criterion, sizeof(v->criterion), "bit-identical to");
}

const char *mwctl_verifier_criterion(const mwctl_verifier_t *v)
{
    return v->criterion;
}

int mwctl_parse_tolerance(const char *cmd, const char *arg, double *rel)
{
    char *end = NULL;
    *rel = strtod(arg, &end);
    if (end == arg || *end != '\0' || !isfinite(*rel) || *rel < 0) {
        fprintf(stderr, "mwctl %s: --tolerance must be a number >= 0 (e.g. 1e-4), not '%s'\n", cmd,
                arg);
        return -1;
    }
    return 0;
}

/* The first element of got that is not within the tolerance of want, or -1. */
static int64_t beyond_tolerance(double rel, mw_dtype_t dtype, const void *got, const void *want,
                                uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        double g = mw_tensor_elem(dtype, got, i), w = mw_tensor_elem(dtype, want, i);
        if (!(fabs(g - w) <= rel * (1 + fabs(w))))
            return (int64_t)i;
    }
    return -1;
}

/* Compares res with the reference output of one input: MW_OK or MW_EINVAL with why. */
static int compare(mwctl_verifier_t *v, const struct input *in, const mw_result_t *res,
                   char *errstr, size_t errstr_size)
{
    mw_tensor_desc_t want_desc;
    const void *want = NULL;
    char e[256];
    if (mw_stage_run(v->stage, &in->desc, in->data + in->id_len, &want_desc, &want, e, sizeof(e)) !=
        MW_OK)
        return mw_errf(MW_EINVAL, errstr, errstr_size, "the reference rejects the input: %s", e);
    char s1[MW_TENSOR_MAX_DIMS * 21], s2[MW_TENSOR_MAX_DIMS * 21];
    mw_shape_format(&res->desc, s1, sizeof(s1));
    mw_shape_format(&want_desc, s2, sizeof(s2));
    if (res->desc.dtype != want_desc.dtype || strcmp(s1, s2) != 0)
        return mw_errf(MW_EINVAL, errstr, errstr_size, "output is %s [%s], the reference %s [%s]",
                       mw_dtype_name(res->desc.dtype), s1, mw_dtype_name(want_desc.dtype), s2);
    uint64_t nbytes = 0;
    mw_tensor_nbytes(&want_desc, &nbytes);
    if (res->nbytes != nbytes)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "output has %zu bytes, the reference %" PRIu64, res->nbytes, nbytes);
    if (memcmp(res->data, want, nbytes) == 0)
        return MW_OK;
    size_t esize = mw_dtype_size(want_desc.dtype);
    size_t i = 0;
    if (v->tolerance > 0) {
        int64_t at =
            beyond_tolerance(v->tolerance, want_desc.dtype, res->data, want, nbytes / esize);
        if (at < 0)
            return MW_OK;
        i = (size_t)at;
    } else {
        while (memcmp((const char *)res->data + i * esize, (const char *)want + i * esize, esize) ==
               0)
            i++;
    }
    uint32_t got_bits = 0, want_bits = 0;
    memcpy(&got_bits, (const char *)res->data + i * esize, esize < 4 ? esize : 4);
    memcpy(&want_bits, (const char *)want + i * esize, esize < 4 ? esize : 4);
    return mw_errf(MW_EINVAL, errstr, errstr_size,
                   "element %zu is %.9g (0x%08" PRIx32 "), the reference %.9g (0x%08" PRIx32 ")", i,
                   mw_tensor_elem(want_desc.dtype, res->data, i), got_bits,
                   mw_tensor_elem(want_desc.dtype, want, i), want_bits);
}

int mwctl_verifier_check(mwctl_verifier_t *v, const mw_result_t *res, char *errstr,
                         size_t errstr_size)
{
    if (!res->ok)
        return MW_OK;
    uint64_t h = hash_id(res->id, res->id_len);
    struct input **link = &v->buckets[h % v->nbuckets], **first_match = NULL;
    int rc = MW_ENOTFOUND;
    char e[512] = "";
    /* The first kept input of this id that the output matches; with none, the
     * first one's difference is reported. */
    for (; *link != NULL; link = &(*link)->next) {
        if (!same_id(*link, h, res->id, res->id_len))
            continue;
        if (first_match == NULL)
            first_match = link;
        rc = compare(v, *link, res, first_match == link ? e : NULL, sizeof(e));
        if (rc == MW_OK)
            break;
    }
    if (rc == MW_ENOTFOUND) {
        v->stats.no_input++;
        return mw_errf(MW_ENOTFOUND, errstr, errstr_size, "no request input of this id is known");
    }
    if (rc != MW_OK)
        link = first_match;
    struct input *in = *link;
    *link = in->next;
    free(in->data);
    free(in);
    v->count--;
    v->stats.pending--;
    if (rc == MW_OK) {
        v->stats.verified++;
        return MW_OK;
    }
    v->stats.differ++;
    return mw_errf(MW_EINVAL, errstr, errstr_size, "%s", e);
}

void mwctl_verifier_stats(const mwctl_verifier_t *v, mwctl_verify_stats_t *stats)
{
    *stats = v->stats;
}
