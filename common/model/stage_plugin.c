/* Stage plug-in loader: dlopen, symbol and ABI checks, init, forward with output checks. */
#include "stage_plugin.h"

#include "err.h"
#include "mw_stage_abi.h"
#include "tensor.h"

#include <dlfcn.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(MW_PLUGIN_F32 == (int)MW_DTYPE_F32 && MW_PLUGIN_F16 == (int)MW_DTYPE_F16 &&
                   MW_PLUGIN_BF16 == (int)MW_DTYPE_BF16 && MW_PLUGIN_I32 == (int)MW_DTYPE_I32 &&
                   MW_PLUGIN_I64 == (int)MW_DTYPE_I64 && MW_PLUGIN_U8 == (int)MW_DTYPE_U8 &&
                   MW_PLUGIN_U8 + 1 == (int)MW_DTYPE_COUNT,
               "plug-in dtypes follow mw_dtype_t");
_Static_assert(MW_PLUGIN_MAX_DIMS == MW_TENSOR_MAX_DIMS, "plug-in and tensor ranks agree");

struct plugin_stage {
    void *lib;
    char *path;
    void *state;
    int initialised;
    mw_plugin_forward_fn *forward;
    mw_plugin_destroy_fn *destroy;
};

static void plugin_destroy(void *impl)
{
    struct plugin_stage *ps = impl;
    if (ps == NULL)
        return;
    if (ps->initialised)
        ps->destroy(ps->state);
    if (ps->lib != NULL)
        dlclose(ps->lib);
    free(ps->path);
    free(ps);
}

/* Checks what the plug-in returned and converts it; errors name the library. */
static int check_output(const struct plugin_stage *ps, const mw_plugin_tensor *t,
                        mw_tensor_desc_t *desc, char *errstr, size_t errstr_size)
{
    if (t->dtype < 0 || t->dtype >= MW_DTYPE_COUNT)
        return mw_errf(MW_EPROTO, errstr, errstr_size,
                       "plug-in %s: forward returned unknown dtype %" PRId32, ps->path, t->dtype);
    if (t->ndim < 1 || t->ndim > MW_PLUGIN_MAX_DIMS)
        return mw_errf(MW_EPROTO, errstr, errstr_size,
                       "plug-in %s: forward returned %" PRId32 " dimensions (1..%d allowed)",
                       ps->path, t->ndim, MW_PLUGIN_MAX_DIMS);
    desc->dtype = (mw_dtype_t)t->dtype;
    desc->ndim = t->ndim;
    for (int i = 0; i < t->ndim; i++) {
        if (t->shape[i] < 1)
            return mw_errf(MW_EPROTO, errstr, errstr_size,
                           "plug-in %s: forward returned shape dimension %d = %" PRId64
                           " (must be positive)",
                           ps->path, i, t->shape[i]);
        desc->shape[i] = t->shape[i];
    }
    uint64_t nbytes;
    if (mw_tensor_nbytes(desc, &nbytes) != MW_OK)
        return mw_errf(MW_EPROTO, errstr, errstr_size,
                       "plug-in %s: forward returned a shape too large to address", ps->path);
    if (t->data == NULL)
        return mw_errf(MW_EPROTO, errstr, errstr_size,
                       "plug-in %s: forward returned no data for %" PRIu64 " bytes", ps->path,
                       nbytes);
    if (t->device != -1)
        return mw_errf(MW_EPROTO, errstr, errstr_size,
                       "plug-in %s: forward returned memory of device %" PRId32
                       "; this worker passes and expects host tensors (device -1)",
                       ps->path, t->device);
    return MW_OK;
}

static int plugin_run(void *impl, const mw_tensor_desc_t *in_desc, const void *in,
                      mw_tensor_desc_t *out_desc, const void **out, char *errstr,
                      size_t errstr_size)
{
    struct plugin_stage *ps = impl;
    mw_plugin_tensor tin, tout;
    memset(&tin, 0, sizeof(tin));
    memset(&tout, 0, sizeof(tout));
    if (in_desc->ndim < 0 || in_desc->ndim > MW_PLUGIN_MAX_DIMS)
        return mw_errf(MW_EINVAL, errstr, errstr_size, "stage input has %d dimensions",
                       in_desc->ndim);
    tin.dtype = (int32_t)in_desc->dtype;
    tin.ndim = in_desc->ndim;
    memcpy(tin.shape, in_desc->shape, sizeof(tin.shape));
    tin.data = (void *)(uintptr_t)in;
    tin.device = -1;
    tout.device = -1;
    char perr[512] = "";
    int rc = ps->forward(ps->state, &tin, &tout, perr, sizeof(perr));
    perr[sizeof(perr) - 1] = '\0';
    if (rc != 0)
        return mw_errf(MW_EINVAL, errstr, errstr_size, "plug-in %s: forward failed (%d): %s",
                       ps->path, rc, perr[0] ? perr : "no message");
    rc = check_output(ps, &tout, out_desc, errstr, errstr_size);
    if (rc != MW_OK)
        return rc;
    *out = tout.data;
    return MW_OK;
}

static const mw_stage_ops_t plugin_ops = {
    .kind = "plugin",
    .forward = NULL,
    .run = plugin_run,
    .destroy = plugin_destroy,
};

/* dlsym with its error in errstr; dlerror's text names the library and symbol. */
static void *symbol(struct plugin_stage *ps, const char *name, int *rc, char *errstr,
                    size_t errstr_size)
{
    dlerror();
    void *p = dlsym(ps->lib, name);
    if (p == NULL) {
        const char *e = dlerror();
        *rc = mw_errf(MW_EINVAL, errstr, errstr_size, "plug-in %s: missing symbol %s (%s)",
                      ps->path, name, e ? e : "it is NULL");
    }
    return p;
}

int mw_stage_plugin_new(const char *path, const char *config_json, int stage_index, int device,
                        mw_stage_t **out, char *errstr, size_t errstr_size)
{
    int rc = MW_OK;
    *out = NULL;
    struct plugin_stage *ps = calloc(1, sizeof(*ps));
    if (ps == NULL || (ps->path = strdup(path)) == NULL) {
        rc = mw_errf(MW_ENOMEM, errstr, errstr_size, "out of memory");
        goto out_destroy;
    }
    ps->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (ps->lib == NULL) {
        const char *e = dlerror();
        rc = mw_errf(MW_EINVAL, errstr, errstr_size, "plug-in %s: cannot load: %s", path,
                     e ? e : "unknown error");
        goto out_destroy;
    }
    const uint32_t *version = symbol(ps, "mw_plugin_abi_version", &rc, errstr, errstr_size);
    if (version == NULL)
        goto out_destroy;
    if (*version != MW_PLUGIN_ABI_VERSION) {
        rc = mw_errf(MW_EINVAL, errstr, errstr_size,
                     "plug-in %s: ABI version %" PRIu32 ", this mwserve supports version %u", path,
                     *version, MW_PLUGIN_ABI_VERSION);
        goto out_destroy;
    }
    mw_plugin_init_fn *init =
        (mw_plugin_init_fn *)symbol(ps, "mw_plugin_init", &rc, errstr, errstr_size);
    if (init != NULL)
        ps->forward =
            (mw_plugin_forward_fn *)symbol(ps, "mw_plugin_forward", &rc, errstr, errstr_size);
    if (ps->forward != NULL)
        ps->destroy =
            (mw_plugin_destroy_fn *)symbol(ps, "mw_plugin_destroy", &rc, errstr, errstr_size);
    if (ps->destroy == NULL)
        goto out_destroy;
    char perr[512] = "";
    int prc = init(config_json != NULL ? config_json : "{}", stage_index, device, &ps->state, perr,
                   sizeof(perr));
    perr[sizeof(perr) - 1] = '\0';
    if (prc != 0) {
        rc = mw_errf(MW_EINVAL, errstr, errstr_size, "plug-in %s: init failed (%d): %s", path, prc,
                     perr[0] ? perr : "no message");
        goto out_destroy;
    }
    ps->initialised = 1;
    mw_stage_info_t info = {.first_layer = -1, .last_layer = -1};
    return mw_stage_wrap(&plugin_ops, ps, &info, out, errstr, errstr_size);
out_destroy:
    plugin_destroy(ps);
    return rc;
}
