/* Stage plug-ins: a user's shared library (mw_stage_abi.h) loaded with dlopen
 * and presented as an mw_stage_t, like the built-in model's stages. */
#ifndef MW_STAGE_PLUGIN_H
#define MW_STAGE_PLUGIN_H

#include "model.h"

#include <stddef.h>

/* Loads the plug-in at path (dlopen, RTLD_NOW | RTLD_LOCAL), checks its ABI
 * version and calls its mw_plugin_init(config_json or "{}", stage_index,
 * device). Errors name the library: dlopen's message, a missing symbol,
 * "ABI version X, this mwserve supports Y", or the plug-in's own init message.
 * The stage computes through mw_stage_run (mw_stage_forward refuses it); its
 * outputs are checked (known dtype, sane shape, data present) before they are
 * returned. *out is the caller's to destroy, which calls mw_plugin_destroy and
 * unloads the library. */
int mw_stage_plugin_new(const char *path, const char *config_json, int stage_index, int device,
                        mw_stage_t **out, char *errstr, size_t errstr_size);

#endif
