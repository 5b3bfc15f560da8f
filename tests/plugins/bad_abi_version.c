/* Broken plug-in for the loader tests: built for a future ABI version. */
#include "model/mw_stage_abi.h"

const uint32_t mw_plugin_abi_version = 999;

int mw_plugin_init(const char *config_json, int stage_index, int device, void **state, char *errstr,
                   size_t errstr_size)
{
    (void)config_json, (void)stage_index, (void)device, (void)errstr, (void)errstr_size;
    *state = NULL;
    return 0;
}

int mw_plugin_forward(void *state, const mw_plugin_tensor *in, mw_plugin_tensor *out, char *errstr,
                      size_t errstr_size)
{
    (void)state, (void)errstr, (void)errstr_size;
    *out = *in;
    return 0;
}

void mw_plugin_destroy(void *state)
{
    (void)state;
}
