/* Broken plug-in for the loader tests: forward returns invalid tensors, chosen by
 * the input's first value (0: unknown dtype, 1: no data, 2: zero dimension,
 * 3: device memory, 4: fails with a message). */
#include "model/mw_stage_abi.h"

#include <stdio.h>
#include <string.h>

const uint32_t mw_plugin_abi_version = MW_PLUGIN_ABI_VERSION;

static float buf[16];

int mw_plugin_init(const char *config_json, int stage_index, int device, void **state, char *errstr,
                   size_t errstr_size)
{
    (void)config_json, (void)stage_index, (void)device, (void)errstr, (void)errstr_size;
    *state = buf;
    return 0;
}

int mw_plugin_forward(void *state, const mw_plugin_tensor *in, mw_plugin_tensor *out, char *errstr,
                      size_t errstr_size)
{
    int mode = (int)((const float *)in->data)[0];
    memset(out, 0, sizeof(*out));
    out->dtype = MW_PLUGIN_F32;
    out->ndim = 1;
    out->shape[0] = 4;
    out->data = state;
    out->device = -1;
    switch (mode) {
    case 0:
        out->dtype = 42;
        break;
    case 1:
        out->data = NULL;
        break;
    case 2:
        out->shape[0] = 0;
        break;
    case 3:
        out->device = 0;
        break;
    default:
        snprintf(errstr, errstr_size, "cannot handle input %d", mode);
        return 3;
    }
    return 0;
}

void mw_plugin_destroy(void *state)
{
    (void)state;
}
