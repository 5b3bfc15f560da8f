/* Broken plug-in for the loader tests: init always fails with a message. */
#include "model/mw_stage_abi.h"

#include <stdio.h>

const uint32_t mw_plugin_abi_version = MW_PLUGIN_ABI_VERSION;

int mw_plugin_init(const char *config_json, int stage_index, int device, void **state, char *errstr,
                   size_t errstr_size)
{
    (void)device;
    *state = NULL;
    snprintf(errstr, errstr_size, "stage %d: weights file missing in config %s", stage_index,
             config_json);
    return 7;
}

int mw_plugin_forward(void *state, const mw_plugin_tensor *in, mw_plugin_tensor *out, char *errstr,
                      size_t errstr_size)
{
    (void)state, (void)in, (void)out, (void)errstr, (void)errstr_size;
    return 1;
}

void mw_plugin_destroy(void *state)
{
    (void)state;
}
