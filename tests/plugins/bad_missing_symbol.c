/* Broken plug-in for the loader tests: it does not export mw_plugin_forward. */
#include "model/mw_stage_abi.h"

#include <stdlib.h>

const uint32_t mw_plugin_abi_version = MW_PLUGIN_ABI_VERSION;

int mw_plugin_init(const char *config_json, int stage_index, int device, void **state, char *errstr,
                   size_t errstr_size)
{
    (void)config_json, (void)stage_index, (void)device, (void)errstr, (void)errstr_size;
    *state = NULL;
    return 0;
}

void mw_plugin_destroy(void *state)
{
    (void)state;
}
