/* Reference model: validation, deterministic generation, stage ranges, and the
 * stage wrapper with its CPU backend (a batch-invariant matrix product). */
#include "model.h"

#include "err.h"

#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "model files and raw tensors are little-endian and used in place"
#endif

struct mw_model {
    mw_safetensors_t *st;
    mw_layer_t *layers;
    int n_layers;
};

/* --- activations ----------------------------------------------------------- */

static const char *const act_names[] = {
    [MW_ACT_NONE] = "none", [MW_ACT_RELU] = "relu", [MW_ACT_GELU] = "gelu"};

const char *mw_activation_name(mw_activation_t act)
{
    return (unsigned)act <= MW_ACT_GELU ? act_names[act] : "invalid";
}

int mw_activation_parse(const char *name, mw_activation_t *act)
{
    for (int i = 0; i <= MW_ACT_GELU; i++) {
        if (strcmp(name, act_names[i]) == 0) {
            *act = (mw_activation_t)i;
            return MW_OK;
        }
    }
    return MW_EINVAL;
}

/* --- opening and validating -------------------------------------------------- */

/* The F32 tensor called name with the given shape (ndim 1 or 2), or an error. */
static int layer_tensor(const mw_safetensors_t *st, const char *label, const char *name, int ndim,
                        int64_t d0, int64_t d1, const float **data, char *errstr,
                        size_t errstr_size)
{
    const mw_st_tensor_t *t = mw_safetensors_find(st, name);
    if (t == NULL)
        return mw_errf(MW_EINVAL, errstr, errstr_size, "%s: tensor '%s' is missing", label, name);
    if (t->desc.dtype != MW_DTYPE_F32)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "%s: tensor '%s' is %s; the reference model needs F32", label, name,
                       mw_safetensors_dtype_name(t->desc.dtype));
    int ok = t->desc.ndim == ndim && (d0 < 0 || t->desc.shape[0] == d0) &&
             (ndim < 2 || d1 < 0 || t->desc.shape[1] == d1);
    for (int i = 0; i < t->desc.ndim; i++)
        ok = ok && t->desc.shape[i] > 0 && t->desc.shape[i] <= INT_MAX / 2;
    if (!ok) {
        char got[128], want[64];
        mw_shape_format(&t->desc, got, sizeof(got));
        if (ndim == 1)
            snprintf(want, sizeof(want), "[%" PRId64 "]", d0);
        else if (d0 < 0)
            snprintf(want, sizeof(want), "[out, in] with positive sizes");
        else
            snprintf(want, sizeof(want), "[%" PRId64 ", %" PRId64 "]", d0, d1);
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "%s: tensor '%s' has shape [%s]; expected %s", label, name,
                       t->desc.ndim ? got : "", want);
    }
    if ((uintptr_t)t->data % sizeof(float) != 0)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "%s: tensor '%s' is not 4-byte aligned in the file (data offset %" PRIu64
                       ")",
                       label, name, t->offset);
    *data = t->data;
    return MW_OK;
}

static int layer_meta_bool(const mw_safetensors_t *st, const char *label, const char *key,
                           int *value, char *errstr, size_t errstr_size)
{
    const char *v = mw_safetensors_metadata(st, key);
    *value = 0;
    if (v == NULL || strcmp(v, "false") == 0 || strcmp(v, "0") == 0)
        return MW_OK;
    if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0) {
        *value = 1;
        return MW_OK;
    }
    return mw_errf(MW_EINVAL, errstr, errstr_size,
                   "%s: metadata '%s' is '%.32s'; expected true or false", label, key, v);
}

static int load_layer(const mw_safetensors_t *st, const char *label, int i, int prev_out,
                      mw_layer_t *l, char *errstr, size_t errstr_size)
{
    char name[64];
    snprintf(name, sizeof(name), "layers.%d.weight", i);
    int rc = layer_tensor(st, label, name, 2, -1, -1, &l->weight, errstr, errstr_size);
    if (rc != MW_OK)
        return rc;
    const mw_st_tensor_t *w = mw_safetensors_find(st, name);
    l->out = (int)w->desc.shape[0];
    l->in = (int)w->desc.shape[1];
    if (prev_out > 0 && l->in != prev_out)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "%s: tensor '%s' has %d inputs but layer %d has %d outputs", label, name,
                       l->in, i - 1, prev_out);
    snprintf(name, sizeof(name), "layers.%d.bias", i);
    rc = layer_tensor(st, label, name, 1, l->out, 0, &l->bias, errstr, errstr_size);
    if (rc != MW_OK)
        return rc;

    char gname[64], bname[64];
    snprintf(gname, sizeof(gname), "layers.%d.ln.gamma", i);
    snprintf(bname, sizeof(bname), "layers.%d.ln.beta", i);
    int has_g = mw_safetensors_find(st, gname) != NULL,
        has_b = mw_safetensors_find(st, bname) != NULL;
    if (has_g != has_b)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "%s: tensor '%s' needs '%s' (layer norm has both or neither)", label,
                       has_g ? gname : bname, has_g ? bname : gname);
    if (has_g) {
        rc = layer_tensor(st, label, gname, 1, l->in, 0, &l->ln_gamma, errstr, errstr_size);
        if (rc == MW_OK)
            rc = layer_tensor(st, label, bname, 1, l->in, 0, &l->ln_beta, errstr, errstr_size);
        if (rc != MW_OK)
            return rc;
    }

    snprintf(name, sizeof(name), "layers.%d.activation", i);
    const char *act = mw_safetensors_metadata(st, name);
    l->activation = MW_ACT_NONE;
    if (act != NULL && mw_activation_parse(act, &l->activation) != MW_OK)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "%s: metadata '%s' is '%.32s'; expected none, relu or gelu", label, name,
                       act);
    snprintf(name, sizeof(name), "layers.%d.residual", i);
    rc = layer_meta_bool(st, label, name, &l->residual, errstr, errstr_size);
    if (rc != MW_OK)
        return rc;
    if (l->residual && l->in != l->out)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "%s: metadata '%s' is true but layer %d maps %d to %d features (a "
                       "residual needs in == out)",
                       label, name, i, l->in, l->out);
    return MW_OK;
}

static int load_model(mw_model_t *m, const char *label, char *errstr, size_t errstr_size)
{
    const mw_safetensors_t *st = m->st;
    int n = 0;
    char name[64];
    for (;; n++) {
        snprintf(name, sizeof(name), "layers.%d.weight", n);
        if (mw_safetensors_find(st, name) == NULL)
            break;
    }
    if (n == 0)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "%s: no tensor 'layers.0.weight': not an mwserve reference model", label);
    const char *declared = mw_safetensors_metadata(st, "layers");
    if (declared != NULL &&
        (atoi(declared) != n || strspn(declared, "0123456789") != strlen(declared)))
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "%s: metadata 'layers' is '%.32s' but the file has layers 0..%d "
                       "(tensor 'layers.%d.weight' is missing)",
                       label, declared, n - 1, n);
    m->layers = calloc((size_t)n, sizeof(*m->layers));
    if (m->layers == NULL)
        return mw_errf(MW_ENOMEM, errstr, errstr_size, "out of memory");
    m->n_layers = n;
    for (int i = 0; i < n; i++) {
        int rc = load_layer(st, label, i, i ? m->layers[i - 1].out : 0, &m->layers[i], errstr,
                            errstr_size);
        if (rc != MW_OK)
            return rc;
    }
    return MW_OK;
}

static int model_new(mw_safetensors_t *st, const char *label, mw_model_t **out, char *errstr,
                     size_t errstr_size)
{
    *out = NULL;
    mw_model_t *m = calloc(1, sizeof(*m));
    if (m == NULL) {
        mw_safetensors_destroy(st);
        return mw_errf(MW_ENOMEM, errstr, errstr_size, "out of memory");
    }
    m->st = st;
    int rc = load_model(m, label, errstr, errstr_size);
    if (rc != MW_OK) {
        mw_model_destroy(m);
        return rc;
    }
    *out = m;
    return MW_OK;
}

int mw_model_open(const char *path, mw_model_t **out, char *errstr, size_t errstr_size)
{
    mw_safetensors_t *st;
    *out = NULL;
    int rc = mw_safetensors_open(path, &st, errstr, errstr_size);
    if (rc != MW_OK)
        return rc;
    return model_new(st, path, out, errstr, errstr_size);
}

int mw_model_from_safetensors(mw_safetensors_t *st, mw_model_t **out, char *errstr,
                              size_t errstr_size)
{
    return model_new(st, "model", out, errstr, errstr_size);
}

void mw_model_destroy(mw_model_t *m)
{
    if (m == NULL)
        return;
    mw_safetensors_destroy(m->st);
    free(m->layers);
    free(m);
}

int mw_model_num_layers(const mw_model_t *m)
{
    return m->n_layers;
}

const mw_layer_t *mw_model_layer(const mw_model_t *m, int index)
{
    return index >= 0 && index < m->n_layers ? &m->layers[index] : NULL;
}

int mw_model_inputs(const mw_model_t *m)
{
    return m->layers[0].in;
}

int mw_model_outputs(const mw_model_t *m)
{
    return m->layers[m->n_layers - 1].out;
}

const mw_safetensors_t *mw_model_file(const mw_model_t *m)
{
    return m->st;
}

uint64_t mw_model_flops(const mw_model_t *m, int first, int last)
{
    uint64_t f = 0;
    for (int i = first < 0 ? 0 : first; i < last && i < m->n_layers; i++)
        f += 2 * (uint64_t)m->layers[i].in * (uint64_t)m->layers[i].out;
    return f;
}

uint64_t mw_model_weight_bytes(const mw_model_t *m, int first, int last)
{
    uint64_t b = 0;
    for (int i = first < 0 ? 0 : first; i < last && i < m->n_layers; i++) {
        const mw_layer_t *l = &m->layers[i];
        b += sizeof(float) * ((uint64_t)l->in * (uint64_t)l->out + (uint64_t)l->out +
                              (l->ln_gamma ? 2 * (uint64_t)l->in : 0));
    }
    return b;
}

/* --- generation ----------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* Uniform in [center - half, center + half), computed the same way everywhere. */
static float uniform(uint64_t *state, double center, double half)
{
    double u = (double)(splitmix64(state) >> 40) * (1.0 / 16777216.0);
    return (float)(center + (2.0 * u - 1.0) * half);
}

enum gen_kind { GEN_WEIGHT, GEN_BIAS, GEN_GAMMA, GEN_BETA };

int mw_model_generate(const mw_model_spec_t *spec, const char *path, char *errstr,
                      size_t errstr_size)
{
    const int L = spec->layers;
    if (L < 1 || L > 100000 || spec->inputs < 1 || spec->hidden < 1 || spec->outputs < 1 ||
        spec->inputs > 1 << 20 || spec->hidden > 1 << 20 || spec->outputs > 1 << 20 ||
        (unsigned)spec->activation > MW_ACT_GELU)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "model spec: layers must be 1..100000 and inputs, hidden, outputs 1..%d",
                       1 << 20);
    const int per_layer = spec->layernorm ? 4 : 2;
    const size_t n = (size_t)L * (size_t)per_layer;
    const size_t n_meta = 9 + 2 * (size_t)L;
    int rc = MW_ENOMEM;
    mw_st_entry_t *entries = calloc(n, sizeof(*entries));
    enum gen_kind *kinds = calloc(n, sizeof(*kinds));
    char(*names)[48] = calloc(n, sizeof(*names));
    char(*strs)[48] = calloc(2 * n_meta, sizeof(*strs));
    const char **meta = calloc(2 * n_meta, sizeof(*meta));
    float *chunk = malloc(16384 * sizeof(float));
    mw_st_writer_t *w = NULL;
    if (!entries || !kinds || !names || !strs || !meta || !chunk) {
        mw_errf(rc, errstr, errstr_size, "out of memory");
        goto out_free;
    }
    size_t k = 0, mi = 0;
#define META(key_fmt, key_arg, ...)                                                                \
    do {                                                                                           \
        snprintf(strs[2 * mi], sizeof(strs[0]), key_fmt, key_arg);                                 \
        snprintf(strs[2 * mi + 1], sizeof(strs[0]), __VA_ARGS__);                                  \
        meta[2 * mi] = strs[2 * mi];                                                               \
        meta[2 * mi + 1] = strs[2 * mi + 1];                                                       \
        mi++;                                                                                      \
    } while (0)
    META("%s", "format", "%s", "mwserve-mlp");
    META("%s", "layers", "%d", L);
    META("%s", "inputs", "%d", spec->inputs);
    META("%s", "hidden", "%d", spec->hidden);
    META("%s", "outputs", "%d", spec->outputs);
    META("%s", "seed", "%" PRIu64, spec->seed);
    META("%s", "activation", "%s", mw_activation_name(spec->activation));
    META("%s", "layernorm", "%s", spec->layernorm ? "true" : "false");
    META("%s", "residual", "%s", spec->residual ? "true" : "false");
    for (int i = 0; i < L; i++) {
        int in = i == 0 ? spec->inputs : spec->hidden;
        int out = i == L - 1 ? spec->outputs : spec->hidden;
        META("layers.%d.activation", i, "%s",
             mw_activation_name(i == L - 1 ? MW_ACT_NONE : spec->activation));
        META("layers.%d.residual", i, "%s", spec->residual && in == out ? "true" : "false");
        static const char *const suffix[] = {"weight", "bias", "ln.gamma", "ln.beta"};
        for (int j = 0; j < per_layer; j++, k++) {
            snprintf(names[k], sizeof(names[k]), "layers.%d.%s", i, suffix[j]);
            entries[k].name = names[k];
            entries[k].desc.dtype = MW_DTYPE_F32;
            entries[k].desc.ndim = j == 0 ? 2 : 1;
            entries[k].desc.shape[0] = j == 0 || j == 1 ? out : in;
            entries[k].desc.shape[1] = in;
            kinds[k] = (enum gen_kind)j;
        }
    }
#undef META
    rc = mw_st_writer_new(path, entries, n, meta, mi, &w, errstr, errstr_size);
    if (rc != MW_OK)
        goto out_free;
    uint64_t state = spec->seed;
    for (k = 0; k < n && rc == MW_OK; k++) {
        const mw_tensor_desc_t *d = &entries[k].desc;
        uint64_t count = (uint64_t)d->shape[0] * (d->ndim == 2 ? (uint64_t)d->shape[1] : 1);
        int in = (int)(k / (size_t)per_layer == 0 ? spec->inputs : spec->hidden);
        double bound = 1.0 / sqrt((double)in);
        while (count > 0 && rc == MW_OK) {
            size_t len = count < 16384 ? (size_t)count : 16384;
            for (size_t e = 0; e < len; e++) {
                switch (kinds[k]) {
                case GEN_WEIGHT:
                case GEN_BIAS:
                    chunk[e] = uniform(&state, 0.0, bound);
                    break;
                case GEN_GAMMA:
                    chunk[e] = uniform(&state, 1.0, 0.1);
                    break;
                case GEN_BETA:
                    chunk[e] = uniform(&state, 0.0, 0.1);
                    break;
                }
            }
            rc = mw_st_writer_append(w, chunk, len * sizeof(float), errstr, errstr_size);
            count -= len;
        }
    }
    if (rc == MW_OK)
        rc = mw_st_writer_finish(w, errstr, errstr_size);
out_free:
    mw_st_writer_destroy(w);
    free(chunk);
    free(meta);
    free(strs);
    free(names);
    free(kinds);
    free(entries);
    return rc;
}

/* --- stage ranges ------------------------------------------------------------------ */

static unsigned __int128 dist(unsigned __int128 a, unsigned __int128 b)
{
    return a > b ? a - b : b - a;
}

int mw_layer_ranges_split(const uint64_t *cost, int n, int k, mw_layer_range_t *ranges)
{
    if (n < 1 || k < 1 || k > n)
        return MW_EINVAL;
    uint64_t *prefix = malloc(((size_t)n + 1) * sizeof(*prefix));
    if (prefix == NULL)
        return MW_ENOMEM;
    prefix[0] = 0;
    for (int i = 0; i < n; i++)
        prefix[i + 1] = prefix[i] + cost[i];
    const unsigned __int128 total = prefix[n];
    int prev = 0;
    for (int j = 1; j <= k; j++) {
        int cut = n;
        if (j < k) {
            /* The boundary b minimising |prefix[b] - j*total/k|, in integers:
             * |prefix[b]*k - j*total|, leaving room for the stages after it. */
            const unsigned __int128 target = total * (unsigned)j;
            const int hi = n - (k - j);
            cut = prev + 1;
            while (cut < hi && dist((unsigned __int128)prefix[cut + 1] * (unsigned)k, target) <
                                   dist((unsigned __int128)prefix[cut] * (unsigned)k, target))
                cut++;
        }
        ranges[j - 1].first = prev;
        ranges[j - 1].last = cut;
        prev = cut;
    }
    free(prefix);
    return MW_OK;
}

int mw_model_split(const mw_model_t *m, int k, mw_layer_range_t *ranges, char *errstr,
                   size_t errstr_size)
{
    if (k < 1 || k > m->n_layers)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "cannot split %d layers into %d stages (1 to %d)", m->n_layers, k,
                       m->n_layers);
    uint64_t *cost = malloc((size_t)m->n_layers * sizeof(*cost));
    if (cost == NULL)
        return mw_errf(MW_ENOMEM, errstr, errstr_size, "out of memory");
    for (int i = 0; i < m->n_layers; i++)
        cost[i] = mw_model_flops(m, i, i + 1);
    int rc = mw_layer_ranges_split(cost, m->n_layers, k, ranges);
    free(cost);
    return rc == MW_OK ? MW_OK : mw_errf(rc, errstr, errstr_size, "%s", mw_strerror(rc));
}

static int parse_int(const char **p, int *v)
{
    const char *s = *p;
    long long n = 0;
    if (*s < '0' || *s > '9')
        return -1;
    while (*s >= '0' && *s <= '9') {
        n = n * 10 + (*s++ - '0');
        if (n > INT_MAX)
            return -1;
    }
    *v = (int)n;
    *p = s;
    return 0;
}

int mw_layer_ranges_parse(const char *text, int num_layers, int full, mw_layer_range_t *ranges,
                          int max, int *count, char *errstr, size_t errstr_size)
{
    const char *p = text;
    int c = 0;
    *count = 0;
    for (;;) {
        int a, b;
        const char *start = p;
        if (parse_int(&p, &a) != 0 || *p++ != ':' || parse_int(&p, &b) != 0 ||
            (*p != ',' && *p != '\0'))
            return mw_errf(MW_EINVAL, errstr, errstr_size,
                           "layer ranges '%s': expected FIRST:LAST[,FIRST:LAST...] at '%s'", text,
                           start);
        if (a >= b)
            return mw_errf(MW_EINVAL, errstr, errstr_size,
                           "layer ranges '%s': range %d:%d is empty", text, a, b);
        if (b > num_layers)
            return mw_errf(MW_EINVAL, errstr, errstr_size,
                           "layer ranges '%s': range %d:%d goes past the model's %d layers", text,
                           a, b, num_layers);
        if (c > 0 && a != ranges[c - 1].last)
            return mw_errf(MW_EINVAL, errstr, errstr_size,
                           "layer ranges '%s': %d:%d does not start where the previous range "
                           "ends (%s layer %d)",
                           text, a, b, a < ranges[c - 1].last ? "overlap at" : "gap before",
                           a < ranges[c - 1].last ? a : ranges[c - 1].last);
        if (c == max)
            return mw_errf(MW_EINVAL, errstr, errstr_size, "layer ranges '%s': more than %d ranges",
                           text, max);
        ranges[c].first = a;
        ranges[c].last = b;
        c++;
        if (*p == '\0')
            break;
        p++;
    }
    if (full && (ranges[0].first != 0 || ranges[c - 1].last != num_layers))
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "layer ranges '%s' must cover the model's layers 0:%d", text, num_layers);
    *count = c;
    return MW_OK;
}

size_t mw_layer_ranges_format(const mw_layer_range_t *ranges, int count, char *buf, size_t size)
{
    size_t len = 0;
    if (size > 0)
        buf[0] = '\0';
    for (int i = 0; i < count; i++) {
        char part[32];
        int n =
            snprintf(part, sizeof(part), "%s%d:%d", i ? "," : "", ranges[i].first, ranges[i].last);
        if (len + (size_t)n < size)
            memcpy(buf + len, part, (size_t)n + 1);
        len += (size_t)n;
    }
    return len;
}

/* --- the stage wrapper --------------------------------------------------------------- */

struct mw_stage {
    const mw_stage_ops_t *ops;
    void *impl;
    mw_stage_info_t info;
    float *out_buf; /* mw_stage_run's output for forward-only backends */
    float *in_buf;  /* and the aligned copy of an input that is not aligned */
};

int mw_stage_wrap(const mw_stage_ops_t *ops, void *impl, const mw_stage_info_t *info,
                  mw_stage_t **out, char *errstr, size_t errstr_size)
{
    *out = NULL;
    mw_stage_t *st = calloc(1, sizeof(*st));
    if (st == NULL)
        goto out_nomem;
    st->ops = ops;
    st->impl = impl;
    st->info = *info;
    if (ops->run == NULL) {
        size_t n = (size_t)info->max_batch * (size_t)info->out_features;
        size_t in = (size_t)info->max_batch * (size_t)info->in_features;
        st->out_buf = malloc((n ? n : 1) * sizeof(float));
        st->in_buf = malloc((in ? in : 1) * sizeof(float));
        if (st->out_buf == NULL || st->in_buf == NULL)
            goto out_nomem;
    }
    *out = st;
    return MW_OK;
out_nomem:
    mw_stage_destroy(st);
    if (st == NULL)
        ops->destroy(impl);
    return mw_errf(MW_ENOMEM, errstr, errstr_size, "out of memory");
}

void mw_stage_destroy(mw_stage_t *st)
{
    if (st == NULL)
        return;
    st->ops->destroy(st->impl);
    free(st->out_buf);
    free(st->in_buf);
    free(st);
}

const char *mw_stage_kind(const mw_stage_t *st)
{
    return st->ops->kind;
}

void mw_stage_get_info(const mw_stage_t *st, mw_stage_info_t *info)
{
    *info = st->info;
}

int mw_stage_forward(mw_stage_t *st, const float *in, int batch, float *out)
{
    if (st->ops->forward == NULL || batch < 1 || batch > st->info.max_batch)
        return MW_EINVAL;
    return st->ops->forward(st->impl, in, batch, out);
}

int mw_stage_rows(const mw_stage_t *st, const mw_tensor_desc_t *in_desc, uint64_t *rows,
                  char *errstr, size_t errstr_size)
{
    uint64_t numel = 1;
    if (st->ops->run != NULL) { /* a plug-in: its tensors are not rows of ours */
        *rows = 1;
        return MW_OK;
    }
    if (in_desc->dtype != MW_DTYPE_F32)
        return mw_errf(MW_EINVAL, errstr, errstr_size, "stage input is %s; expected f32",
                       mw_dtype_name(in_desc->dtype));
    if (in_desc->ndim < 1 || mw_tensor_numel(in_desc, &numel) != MW_OK ||
        in_desc->shape[in_desc->ndim - 1] != st->info.in_features) {
        char shape[128];
        mw_shape_format(in_desc, shape, sizeof(shape));
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "stage input shape [%s] does not end in the stage's %" PRId64
                       " input features",
                       shape, st->info.in_features);
    }
    *rows = numel / (uint64_t)st->info.in_features;
    return MW_OK;
}

int mw_stage_run(mw_stage_t *st, const mw_tensor_desc_t *in_desc, const void *in,
                 mw_tensor_desc_t *out_desc, const void **out, char *errstr, size_t errstr_size)
{
    if (st->ops->run != NULL)
        return st->ops->run(st->impl, in_desc, in, out_desc, out, errstr, errstr_size);
    char shape[128];
    mw_shape_format(in_desc, shape, sizeof(shape));
    uint64_t rows;
    int rc = mw_stage_rows(st, in_desc, &rows, errstr, errstr_size);
    if (rc != MW_OK)
        return rc;
    if (rows > (uint64_t)st->info.max_batch)
        return mw_errf(MW_ETOOBIG, errstr, errstr_size,
                       "stage input shape [%s] has %" PRIu64 " rows; the stage takes at most %d",
                       shape, rows, st->info.max_batch);
    /* Records and receive buffers carry no alignment guarantee for f32. */
    if ((uintptr_t)in % sizeof(float) != 0) {
        memcpy(st->in_buf, in, (size_t)rows * (size_t)st->info.in_features * sizeof(float));
        in = st->in_buf;
    }
    rc = st->ops->forward(st->impl, in, (int)rows, st->out_buf);
    if (rc != MW_OK)
        return mw_errf(rc, errstr, errstr_size, "stage compute failed: %s", mw_strerror(rc));
    *out_desc = *in_desc;
    out_desc->shape[out_desc->ndim - 1] = st->info.out_features;
    *out = st->out_buf;
    return MW_OK;
}

/* --- CPU backend ------------------------------------------------------------------------ */

/* The layer product y = a W^T, batch-invariant: every output element is the
 * same dot product whatever the batch size and the row's position in it, so a
 * request's result never depends on what shares its batch. Each element keeps
 * 8 partial sums, lane l accumulating the products of inputs k = l mod 8 in
 * increasing k with fused multiply-adds (the last block zero-padded), then adds
 * them as (s0+s4 + s2+s6) + (s1+s5 + s3+s7). The AVX2 kernel does exactly that
 * for a tile of rows x columns at once; the portable one does it with fmaf, one
 * element at a time, and gives the same bits (on x86 CPUs without FMA, slowly:
 * fmaf is then done in software). Every multiply-add is fused explicitly and
 * the rest are additions, so no -ffp-contract or -march setting can change the
 * bits. The element-wise passes below work row by row. */
#define DOT_LANES 8
#define TILE_ROWS 4
#define TILE_COLS 3
#define ROW_COLS  6 /* a lone row takes more columns at a time */

static float lanes_sum(const float s[DOT_LANES])
{
    const float t0 = s[0] + s[4], t1 = s[1] + s[5], t2 = s[2] + s[6], t3 = s[3] + s[7];
    return (t0 + t2) + (t1 + t3);
}

static float dot_portable(const float *a, const float *w, int k)
{
    float s[DOT_LANES] = {0};
    for (int i = 0; i < k; i += DOT_LANES)
        for (int l = 0; l < DOT_LANES; l++)
            /* The padding too, as the vector kernel does: it can turn -0 into +0. */
            s[l] = i + l < k ? fmaf(a[i + l], w[i + l], s[l]) : fmaf(0.0f, 0.0f, s[l]);
    return lanes_sum(s);
}

/* y [rows, out] (row stride out) = a [rows, in] W^T, W [out, in]. */
typedef void matmul_fn(const float *a, int rows, const float *w, int in, int out, float *y);

static void matmul_portable(const float *a, int rows, const float *w, int in, int out, float *y)
{
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < out; j++)
            y[(size_t)r * (size_t)out + (size_t)j] =
                dot_portable(a + (size_t)r * (size_t)in, w + (size_t)j * (size_t)in, in);
}

/* GELU, 0.5 v (1 + erf(v / sqrt 2)), with erf as the rational function
 * x P(x^2) / Q(x^2) on x clamped to [-4, 4] (Eigen's and TensorFlow's float
 * erf), the quotient clamped to [-1, 1]: within 1e-6 of the exact GELU over
 * every float (relative to max(1, |GELU|); libm's erff gave 1.2e-7), and made
 * of operations a vector unit does with the same bits (fused multiply-adds,
 * products, one quotient, min and max), in this order, so every kernel's
 * GELU is this function's, element for element. libm's erff, one call per
 * element, took half of make run's model. */
#define ERF_X_MAX 4.0f
static const float erf_p[] = {
    -2.72614225801306e-10f, 2.77068142495902e-08f,  -2.10102402082508e-06f, -5.69250639462346e-05f,
    -7.34990630326855e-04f, -2.95459980854025e-03f, -1.60960333262415e-02f};
static const float erf_q[] = {-1.45660718464996e-05f, -2.13374055278905e-04f,
                              -1.68282697438203e-03f, -7.37332916720468e-03f,
                              -1.42647390514189e-02f};
#define ERF_NP ((int)(sizeof(erf_p) / sizeof(erf_p[0])))
#define ERF_NQ ((int)(sizeof(erf_q) / sizeof(erf_q[0])))

static float gelu_one(float v)
{
    const float x = fminf(fmaxf(v * (float)M_SQRT1_2, -ERF_X_MAX), ERF_X_MAX);
    const float x2 = x * x;
    float p = erf_p[0], q = erf_q[0];
    for (int i = 1; i < ERF_NP; i++)
        p = fmaf(x2, p, erf_p[i]);
    for (int i = 1; i < ERF_NQ; i++)
        q = fmaf(x2, q, erf_q[i]);
    const float e = fminf(fmaxf(x * p / q, -1.0f), 1.0f);
    return 0.5f * v * (1.0f + e);
}

/* y[i] = GELU(y[i] + bias[i]), i < n. */
typedef void gelu_fn(float *y, const float *bias, int n);

static void gelu_portable(float *y, const float *bias, int n)
{
    for (int i = 0; i < n; i++)
        y[i] = gelu_one(y[i] + bias[i]);
}

#if defined(__x86_64__) || defined(__i386__)
#define AVX2        __attribute__((target("avx2,fma")))
#define AVX2_INLINE __attribute__((target("avx2,fma"), always_inline))

AVX2 static inline float lanes_sum_avx2(__m256 s)
{
    const __m128 t = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    const __m128 u = _mm_add_ps(t, _mm_movehl_ps(t, t)); /* t0+t2, t1+t3 */
    return _mm_cvtss_f32(_mm_add_ss(u, _mm_shuffle_ps(u, u, 1)));
}

/* rows x tile_cols elements (constants once inlined: TILE_ROWS x TILE_COLS, or
 * one row x ROW_COLS): rows of a (stride k) times the weight rows w[c]; stores
 * y[r][c] (stride ldy) for c < cols, the columns past an edge being repeats of
 * a real one. The unroll pragmas keep the accumulators in registers: without
 * them gcc -O2 keeps them in memory, 2.5x slower. */
AVX2_INLINE static inline void tile_avx2(const float *a, int rows, int tile_cols,
                                         const float *const *w, int k, float *y, size_t ldy,
                                         int cols)
{
    __m256 acc[TILE_ROWS][ROW_COLS];
#pragma GCC unroll 8
    for (int r = 0; r < rows; r++)
#pragma GCC unroll 8
        for (int c = 0; c < tile_cols; c++)
            acc[r][c] = _mm256_setzero_ps();
    int i = 0;
    for (; i + DOT_LANES <= k; i += DOT_LANES) {
        __m256 wv[ROW_COLS];
#pragma GCC unroll 8
        for (int c = 0; c < tile_cols; c++)
            wv[c] = _mm256_loadu_ps(w[c] + i);
#pragma GCC unroll 8
        for (int r = 0; r < rows; r++) {
            const __m256 av = _mm256_loadu_ps(a + (size_t)r * (size_t)k + i);
#pragma GCC unroll 8
            for (int c = 0; c < tile_cols; c++)
                acc[r][c] = _mm256_fmadd_ps(av, wv[c], acc[r][c]);
        }
    }
    if (i < k) {
        float pad[DOT_LANES] = {0};
        __m256 wv[ROW_COLS];
#pragma GCC unroll 8
        for (int c = 0; c < tile_cols; c++) {
            memcpy(pad, w[c] + i, (size_t)(k - i) * sizeof(float));
            wv[c] = _mm256_loadu_ps(pad);
        }
#pragma GCC unroll 8
        for (int r = 0; r < rows; r++) {
            memcpy(pad, a + (size_t)r * (size_t)k + i, (size_t)(k - i) * sizeof(float));
            const __m256 av = _mm256_loadu_ps(pad);
#pragma GCC unroll 8
            for (int c = 0; c < tile_cols; c++)
                acc[r][c] = _mm256_fmadd_ps(av, wv[c], acc[r][c]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < rows; r++)
#pragma GCC unroll 8
        for (int c = 0; c < tile_cols; c++)
            if (c < cols)
                y[(size_t)r * ldy + (size_t)c] = lanes_sum_avx2(acc[r][c]);
}

/* Weight rows per panel: a panel's weights (about PANEL_BYTES) stay in the
 * core's L2 cache while every row of the batch goes past them. */
#define PANEL_BYTES (512 * 1024)

AVX2 static void matmul_avx2(const float *a, int rows, const float *w, int in, int out, float *y)
{
    int panel = (int)(PANEL_BYTES / ((size_t)in * sizeof(float))) / ROW_COLS * ROW_COLS;
    panel = panel < ROW_COLS ? ROW_COLS : panel;
    for (int j0 = 0; j0 < out; j0 += panel) {
        const int j1 = out - j0 < panel ? out : j0 + panel;
        for (int r = 0; r < rows;) {
            const int tile_rows = rows - r >= TILE_ROWS ? TILE_ROWS : 1;
            const int tile_cols = tile_rows == 1 ? ROW_COLS : TILE_COLS;
            for (int j = j0; j < j1; j += tile_cols) {
                const float *wc[ROW_COLS];
                for (int c = 0; c < tile_cols; c++)
                    wc[c] = w + (size_t)(j + c < j1 ? j + c : j1 - 1) * (size_t)in;
                const int cols = j1 - j < tile_cols ? j1 - j : tile_cols;
                const float *ar = a + (size_t)r * (size_t)in;
                float *yr = y + (size_t)r * (size_t)out + (size_t)j;
                if (tile_rows == TILE_ROWS)
                    tile_avx2(ar, TILE_ROWS, TILE_COLS, wc, in, yr, (size_t)out, cols);
                else
                    tile_avx2(ar, 1, ROW_COLS, wc, in, yr, (size_t)out, cols);
            }
            r += tile_rows;
        }
    }
}

/* gelu_one's operations, in its order, on vectors of LANES floats of type T
 * through the intrinsics prefixed P (_mm256 or _mm512: the same names at
 * either width), from y + i while whole vectors remain; leaves i at the rest. */
#define GELU_VECTORS(P, T, LANES)                                                                  \
    for (; i + (LANES) <= n; i += (LANES)) {                                                       \
        const T v = P##_add_ps(P##_loadu_ps(y + i), P##_loadu_ps(bias + i));                       \
        const T x = P##_min_ps(                                                                    \
            P##_max_ps(P##_mul_ps(v, P##_set1_ps((float)M_SQRT1_2)), P##_set1_ps(-ERF_X_MAX)),     \
            P##_set1_ps(ERF_X_MAX));                                                               \
        const T x2 = P##_mul_ps(x, x);                                                             \
        T p = P##_set1_ps(erf_p[0]), q = P##_set1_ps(erf_q[0]);                                    \
        for (int k = 1; k < ERF_NP; k++)                                                           \
            p = P##_fmadd_ps(x2, p, P##_set1_ps(erf_p[k]));                                        \
        for (int k = 1; k < ERF_NQ; k++)                                                           \
            q = P##_fmadd_ps(x2, q, P##_set1_ps(erf_q[k]));                                        \
        const T e = P##_min_ps(P##_max_ps(P##_div_ps(P##_mul_ps(x, p), q), P##_set1_ps(-1.0f)),    \
                               P##_set1_ps(1.0f));                                                 \
        P##_storeu_ps(y + i, P##_mul_ps(P##_mul_ps(P##_set1_ps(0.5f), v),                          \
                                        P##_add_ps(P##_set1_ps(1.0f), e)));                        \
    }

/* gelu_one on 8 elements at a time; the rest one at a time. */
AVX2 static void gelu_avx2(float *y, const float *bias, int n)
{
    int i = 0;
    GELU_VECTORS(_mm256, __m256, 8)
    gelu_portable(y + i, bias + i, n - i);
}
#endif

#if defined(__x86_64__) || defined(__i386__)
/* AVX-512: the same per-element sums, two columns to a register: lanes 0-7
 * hold column c's 8 partial sums, lanes 8-15 column c+1's, each lane
 * accumulating the same products in the same order as the AVX2 kernel, and
 * each half added up by lanes_sum_avx2: the same bits, twice the products per
 * instruction. Only AVX-512F instructions. */
#define AVX512        __attribute__((target("avx512f,avx2,fma")))
#define AVX512_INLINE __attribute__((target("avx512f,avx2,fma"), always_inline))
#define Z_ROWS        8 /* rows of a tile (or 4, at the end of a batch) */
#define Z_PAIRS       3 /* column pairs: ROW_COLS columns, as a lone row's AVX2 tile */

/* 8 floats of w0 in lanes 0-7, 8 of w1 in lanes 8-15. */
AVX512_INLINE static inline __m512 pair_load(const float *w0, const float *w1)
{
    const __m512d lo = _mm512_castpd256_pd512(_mm256_castps_pd(_mm256_loadu_ps(w0)));
    return _mm512_castpd_ps(_mm512_insertf64x4(lo, _mm256_castps_pd(_mm256_loadu_ps(w1)), 1));
}

/* 8 floats of a in both halves. */
AVX512_INLINE static inline __m512 half_broadcast(const float *a)
{
    return _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(_mm256_loadu_ps(a))));
}

/* As tile_avx2, for rows x 2 * pairs columns (w: 2 * pairs weight rows). */
AVX512_INLINE static inline void tile_avx512(const float *a, int rows, int pairs,
                                             const float *const *w, int k, float *y, size_t ldy,
                                             int cols)
{
    __m512 acc[Z_ROWS][Z_PAIRS];
#pragma GCC unroll 8
    for (int r = 0; r < rows; r++)
#pragma GCC unroll 8
        for (int p = 0; p < pairs; p++)
            acc[r][p] = _mm512_setzero_ps();
    int i = 0;
    for (; i + DOT_LANES <= k; i += DOT_LANES) {
        __m512 wv[Z_PAIRS];
#pragma GCC unroll 8
        for (int p = 0; p < pairs; p++)
            wv[p] = pair_load(w[2 * p] + i, w[2 * p + 1] + i);
#pragma GCC unroll 8
        for (int r = 0; r < rows; r++) {
            const __m512 av = half_broadcast(a + (size_t)r * (size_t)k + i);
#pragma GCC unroll 8
            for (int p = 0; p < pairs; p++)
                acc[r][p] = _mm512_fmadd_ps(av, wv[p], acc[r][p]);
        }
    }
    if (i < k) {
        float pad[2][DOT_LANES] = {{0}};
        __m512 wv[Z_PAIRS];
#pragma GCC unroll 8
        for (int p = 0; p < pairs; p++) {
            memcpy(pad[0], w[2 * p] + i, (size_t)(k - i) * sizeof(float));
            memcpy(pad[1], w[2 * p + 1] + i, (size_t)(k - i) * sizeof(float));
            wv[p] = pair_load(pad[0], pad[1]);
        }
#pragma GCC unroll 8
        for (int r = 0; r < rows; r++) {
            memcpy(pad[0], a + (size_t)r * (size_t)k + i, (size_t)(k - i) * sizeof(float));
            const __m512 av = half_broadcast(pad[0]);
#pragma GCC unroll 8
            for (int p = 0; p < pairs; p++)
                acc[r][p] = _mm512_fmadd_ps(av, wv[p], acc[r][p]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < rows; r++)
#pragma GCC unroll 8
        for (int p = 0; p < pairs; p++) {
            const __m512d d = _mm512_castps_pd(acc[r][p]);
            if (2 * p < cols)
                y[(size_t)r * ldy + (size_t)(2 * p)] =
                    lanes_sum_avx2(_mm256_castpd_ps(_mm512_castpd512_pd256(d)));
            if (2 * p + 1 < cols)
                y[(size_t)r * ldy + (size_t)(2 * p + 1)] =
                    lanes_sum_avx2(_mm256_castpd_ps(_mm512_extractf64x4_pd(d, 1)));
        }
}

/* Tiles of 8 rows, then of 4; rows left over go one at a time through the
 * AVX2 kernel's lone-row tile (memory-bound, where it is the faster). Every
 * tile is ROW_COLS columns wide. */
AVX512 static void matmul_avx512(const float *a, int rows, const float *w, int in, int out,
                                 float *y)
{
    int panel = (int)(PANEL_BYTES / ((size_t)in * sizeof(float))) / ROW_COLS * ROW_COLS;
    panel = panel < ROW_COLS ? ROW_COLS : panel;
    for (int j0 = 0; j0 < out; j0 += panel) {
        const int j1 = out - j0 < panel ? out : j0 + panel;
        for (int r = 0; r < rows;) {
            const int tile_rows = rows - r >= Z_ROWS       ? Z_ROWS
                                  : rows - r >= Z_ROWS / 2 ? Z_ROWS / 2
                                                           : 1;
            for (int j = j0; j < j1; j += ROW_COLS) {
                const float *wc[ROW_COLS];
                for (int c = 0; c < ROW_COLS; c++)
                    wc[c] = w + (size_t)(j + c < j1 ? j + c : j1 - 1) * (size_t)in;
                const int cols = j1 - j < ROW_COLS ? j1 - j : ROW_COLS;
                const float *ar = a + (size_t)r * (size_t)in;
                float *yr = y + (size_t)r * (size_t)out + (size_t)j;
                if (tile_rows == Z_ROWS)
                    tile_avx512(ar, Z_ROWS, Z_PAIRS, wc, in, yr, (size_t)out, cols);
                else if (tile_rows == Z_ROWS / 2)
                    tile_avx512(ar, Z_ROWS / 2, Z_PAIRS, wc, in, yr, (size_t)out, cols);
                else
                    tile_avx2(ar, 1, ROW_COLS, wc, in, yr, (size_t)out, cols);
            }
            r += tile_rows;
        }
    }
}

/* gelu_one on 16 elements at a time; the rest through gelu_avx2. */
AVX512 static void gelu_avx512(float *y, const float *bias, int n)
{
    int i = 0;
    GELU_VECTORS(_mm512, __m512, 16)
    gelu_avx2(y + i, bias + i, n - i);
}
#endif

/* The kernels, fastest first; every one gives the same bits
 * (tests/unit/test_model.c runs each the CPU has on the same inputs), so a
 * fleet of mixed CPUs agrees too. */
static const struct {
    const char *name;
    matmul_fn *fn;
    gelu_fn *gelu;
} kernels[] = {
#if defined(__x86_64__) || defined(__i386__)
    {"avx512", matmul_avx512, gelu_avx512},
    {"avx2", matmul_avx2, gelu_avx2},
#endif
    {"portable", matmul_portable, gelu_portable},
};
enum { NKERNELS = sizeof(kernels) / sizeof(kernels[0]) };

static int kernel_supported(int i)
{
#if defined(__x86_64__) || defined(__i386__)
    if (kernels[i].fn == matmul_avx512)
        return __builtin_cpu_supports("avx512f");
    if (kernels[i].fn == matmul_avx2)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    return 1;
}

const char *mw_cpu_kernel_name(int i)
{
    return i >= 0 && i < NKERNELS && kernel_supported(i) ? kernels[i].name : NULL;
}

int mw_cpu_kernel_count(void)
{
    return NKERNELS;
}

void mw_cpu_kernel_matmul(int i, const float *a, int rows, const float *w, int in, int out,
                          float *y)
{
    kernels[i].fn(a, rows, w, in, out, y);
}

void mw_cpu_kernel_gelu(int i, float *y, const float *bias, int n)
{
    kernels[i].gelu(y, bias, n);
}

/* The first kernel this CPU has (the portable one, last, always). */
static int kernel_select(void)
{
    int i = 0;
    while (!kernel_supported(i))
        i++;
    return i;
}

struct cpu_stage {
    const mw_model_t *m;
    int first, last, max_batch;
    matmul_fn *matmul;
    gelu_fn *gelu;
    float *buf[2]; /* activations between layers, ping-pong */
    float *ln;     /* layer-norm output */
};

static void layernorm_rows(const float *x, int rows, int n, const float *gamma, const float *beta,
                           float *y)
{
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * (size_t)n;
        float *yr = y + (size_t)r * (size_t)n;
        double sum = 0.0, sq = 0.0;
        for (int i = 0; i < n; i++)
            sum += xr[i];
        const double mean = sum / n;
        for (int i = 0; i < n; i++)
            sq += (xr[i] - mean) * (xr[i] - mean);
        const float mu = (float)mean;
        const float inv = (float)(1.0 / sqrt(sq / n + MW_LAYERNORM_EPS));
        for (int i = 0; i < n; i++)
            yr[i] = (xr[i] - mu) * inv * gamma[i] + beta[i];
    }
}

/* y += bias, then the activation, then the residual x (NULL: none), row by row. */
static inline float relu(float v)
{
    return v > 0.0f ? v : 0.0f;
}

static void bias_act_residual(float *y, int rows, int n, const float *bias, mw_activation_t act,
                              gelu_fn *gelu, const float *x)
{
    for (int r = 0; r < rows; r++) {
        float *yr = y + (size_t)r * (size_t)n;
        const float *xr = x ? x + (size_t)r * (size_t)n : NULL;
        switch (act) {
        case MW_ACT_NONE:
            for (int i = 0; i < n; i++)
                yr[i] += bias[i];
            break;
        case MW_ACT_RELU: {
            /* In blocks of 8 through a temporary, which gcc -O2 turns into
             * vector max instructions: a branch on each activation's sign
             * mispredicts half the time and cost 10x the layer's matrix
             * product on wide layers. Same results bit for bit. */
            int i = 0;
            for (; i + 8 <= n; i += 8) {
                float t[8];
                for (int j = 0; j < 8; j++)
                    t[j] = relu(yr[i + j] + bias[i + j]);
                memcpy(yr + i, t, sizeof(t));
            }
            for (; i < n; i++)
                yr[i] = relu(yr[i] + bias[i]);
            break;
        }
        case MW_ACT_GELU:
            gelu(yr, bias, n);
            break;
        }
        if (xr != NULL)
            for (int i = 0; i < n; i++)
                yr[i] += xr[i];
    }
}

static int cpu_forward(void *impl, const float *in, int batch, float *out)
{
    struct cpu_stage *cs = impl;
    const float *x = in;
    for (int i = cs->first; i < cs->last; i++) {
        const mw_layer_t *l = mw_model_layer(cs->m, i);
        float *y = i == cs->last - 1 ? out : cs->buf[(i - cs->first) & 1];
        const float *a = x;
        if (l->ln_gamma != NULL) {
            layernorm_rows(x, batch, l->in, l->ln_gamma, l->ln_beta, cs->ln);
            a = cs->ln;
        }
        cs->matmul(a, batch, l->weight, l->in, l->out, y);
        bias_act_residual(y, batch, l->out, l->bias, l->activation, cs->gelu,
                          l->residual ? x : NULL);
        x = y;
    }
    return MW_OK;
}

static void cpu_destroy(void *impl)
{
    struct cpu_stage *cs = impl;
    if (cs == NULL)
        return;
    free(cs->buf[0]);
    free(cs->buf[1]);
    free(cs->ln);
    free(cs);
}

static const mw_stage_ops_t cpu_ops = {
    .kind = "cpu",
    .forward = cpu_forward,
    .run = NULL,
    .destroy = cpu_destroy,
};

/* 64-byte aligned, zeroed (so its pages are resident before the first batch). */
static float *alloc_floats(size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, (n ? n : 1) * sizeof(float)) != 0)
        return NULL;
    memset(p, 0, (n ? n : 1) * sizeof(float));
    return p;
}

int mw_stage_new(const mw_model_t *m, int first, int last, int max_batch, int device,
                 mw_stage_t **out, char *errstr, size_t errstr_size)
{
    *out = NULL;
    if (first < 0 || first >= last || last > m->n_layers)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "stage layers %d:%d are not a non-empty range of the model's %d layers",
                       first, last, m->n_layers);
    if (max_batch < 1 || max_batch > 1 << 20)
        return mw_errf(MW_EINVAL, errstr, errstr_size, "stage max_batch %d is not in 1..%d",
                       max_batch, 1 << 20);
    if (device >= 0) {
#ifdef MW_HAVE_CUBLAS
        return mw_stage_new_cuda(m, first, last, max_batch, device, out, errstr, errstr_size);
#else
        return mw_errf(MW_EUNAVAIL, errstr, errstr_size,
                       "stage on CUDA device %d: this mwserve was built without CUDA/cuBLAS",
                       device);
#endif
    }
    struct cpu_stage *cs = calloc(1, sizeof(*cs));
    if (cs == NULL)
        return mw_errf(MW_ENOMEM, errstr, errstr_size, "out of memory");
    cs->m = m;
    cs->first = first;
    cs->last = last;
    cs->max_batch = max_batch;
    const int kernel = kernel_select();
    cs->matmul = kernels[kernel].fn;
    cs->gelu = kernels[kernel].gelu;
    size_t width = 1, ln_width = 0;
    for (int i = first; i < last; i++) {
        if (i < last - 1 && (size_t)m->layers[i].out > width)
            width = (size_t)m->layers[i].out;
        if (m->layers[i].ln_gamma != NULL && (size_t)m->layers[i].in > ln_width)
            ln_width = (size_t)m->layers[i].in;
    }
    /* Intermediate activations only exist between this stage's layers. */
    const size_t rows = (size_t)max_batch;
    if (last - first > 1) {
        cs->buf[0] = alloc_floats(rows * width);
        cs->buf[1] = alloc_floats(last - first > 2 ? rows * width : 1);
    }
    if (ln_width > 0)
        cs->ln = alloc_floats(rows * ln_width);
    if ((last - first > 1 && (cs->buf[0] == NULL || cs->buf[1] == NULL)) ||
        (ln_width > 0 && cs->ln == NULL)) {
        cpu_destroy(cs);
        return mw_errf(MW_ENOMEM, errstr, errstr_size, "out of memory");
    }
    mw_stage_info_t info = {
        .first_layer = first,
        .last_layer = last,
        .max_batch = max_batch,
        .in_features = m->layers[first].in,
        .out_features = m->layers[last - 1].out,
    };
    return mw_stage_wrap(&cpu_ops, cs, &info, out, errstr, errstr_size);
}
