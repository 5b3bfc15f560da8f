/* mwserve stage plug-in ABI, version 1: the only header a plug-in includes.
 *
 * A plug-in is a shared library (cc -shared -fPIC) that computes one pipeline
 * stage. It exports these four symbols with C linkage:
 *
 *   const uint32_t mw_plugin_abi_version = MW_PLUGIN_ABI_VERSION;
 *   int  mw_plugin_init(const char *config_json, int stage_index, int device,
 *                       void **state, char *errstr, size_t errstr_size);
 *   int  mw_plugin_forward(void *state, const mw_plugin_tensor *in,
 *                          mw_plugin_tensor *out, char *errstr, size_t errstr_size);
 *   void mw_plugin_destroy(void *state);
 *
 * Contract:
 * - init gets the pipeline's plug-in configuration (a JSON text, "{}" when
 *   there is none), the stage index (0-based) and the device (-1: CPU, >= 0: the
 *   CUDA device the worker owns). It stores its own state in *state. It returns
 *   0, or non-zero with a message in errstr (always room for at least one byte).
 * - forward computes one input tensor. in and in->data are read-only and valid
 *   only during the call. The plug-in fills *out: dtype, ndim, shape, device
 *   and data, which points to memory the plug-in owns and keeps valid until the
 *   next forward or destroy of the same state. Return 0, or non-zero with a
 *   message in errstr: the request then fails with that message (and the worker
 *   carries on).
 * - destroy frees the state; it is called once, after a successful init.
 * - The worker calls a state from one thread at a time; separate states (one
 *   per stage) may be called from different threads at once.
 * - Tensors are C order (row-major), little-endian. On the CPU, data is host
 *   memory; with device >= 0 it is that device's memory.
 */
#ifndef MW_STAGE_ABI_H
#define MW_STAGE_ABI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MW_PLUGIN_ABI_VERSION 1u
#define MW_PLUGIN_MAX_DIMS    8

/* Same numbering as mwserve's records (mw-dtype header names in comments). */
enum mw_plugin_dtype {
    MW_PLUGIN_F32 = 0,  /* f32 */
    MW_PLUGIN_F16 = 1,  /* f16 */
    MW_PLUGIN_BF16 = 2, /* bf16 */
    MW_PLUGIN_I32 = 3,  /* i32 */
    MW_PLUGIN_I64 = 4,  /* i64 */
    MW_PLUGIN_U8 = 5,   /* u8 */
};

typedef struct mw_plugin_tensor {
    int32_t dtype; /* enum mw_plugin_dtype */
    int32_t ndim;  /* 0..MW_PLUGIN_MAX_DIMS; 0 is a scalar */
    int64_t shape[MW_PLUGIN_MAX_DIMS];
    void *data;     /* shape's product * dtype size bytes */
    int32_t device; /* -1: host memory; >= 0: CUDA device memory */
    int32_t reserved;
} mw_plugin_tensor;

extern const uint32_t mw_plugin_abi_version;
int mw_plugin_init(const char *config_json, int stage_index, int device, void **state, char *errstr,
                   size_t errstr_size);
int mw_plugin_forward(void *state, const mw_plugin_tensor *in, mw_plugin_tensor *out, char *errstr,
                      size_t errstr_size);
void mw_plugin_destroy(void *state);

/* The same signatures as types, for loaders. */
typedef int mw_plugin_init_fn(const char *config_json, int stage_index, int device, void **state,
                              char *errstr, size_t errstr_size);
typedef int mw_plugin_forward_fn(void *state, const mw_plugin_tensor *in, mw_plugin_tensor *out,
                                 char *errstr, size_t errstr_size);
typedef void mw_plugin_destroy_fn(void *state);

#ifdef __cplusplus
}
#endif

#endif
