/* The reference model (a stack of dense blocks in a safetensors file), stage
 * ranges, and stage compute: one mw_stage_t whether the layers run on the CPU
 * (a batch-invariant kernel in model.c), on a GPU (cuBLAS) or in a user's
 * plug-in (stage_plugin.h).
 *
 * Block l maps x [batch, in_l] to y [batch, out_l]:
 *     a = layernorm(x) * gamma + beta      (when layers.l.ln.gamma/beta exist)
 *     h = act(a W^T + b)                   (W = layers.l.weight [out, in], b = layers.l.bias [out])
 *     y = x + h  when residual, else h     (residual needs in == out)
 * Everything is f32. On the CPU each output row is computed exactly the same
 * way whatever stage its layer belongs to, whatever batch it is in and
 * wherever in the batch (every element's dot product adds the same terms in the
 * same order, then the same element-wise pass), on every x86-64 CPU (AVX2+FMA
 * or not) and run to run: a request's output is bit-identical to the whole
 * model run on that request alone. cuBLAS stages promise none of that. */
#ifndef MW_MODEL_H
#define MW_MODEL_H

#include "safetensors.h"
#include "tensor.h"

#include <stddef.h>
#include <stdint.h>

typedef enum {
    MW_ACT_NONE = 0,
    MW_ACT_RELU,
    MW_ACT_GELU, /* exact: 0.5 x (1 + erf(x / sqrt 2)) */
} mw_activation_t;

/* "none", "relu", "gelu". */
const char *mw_activation_name(mw_activation_t act);
int mw_activation_parse(const char *name, mw_activation_t *act);

#define MW_LAYERNORM_EPS 1e-5f

/* One block. The pointers point into the model's file mapping. */
typedef struct mw_layer {
    int in, out;
    mw_activation_t activation;
    int residual;
    const float *weight;   /* [out][in] */
    const float *bias;     /* [out] */
    const float *ln_gamma; /* [in], or NULL without layer norm */
    const float *ln_beta;  /* [in], or NULL */
} mw_layer_t;

typedef struct mw_model mw_model_t;

/* Opens a reference model file: the safetensors data stays mapped (read-only,
 * shared with the page cache; pages are read when a stage first touches them)
 * and every layer is validated: F32 tensors, chained shapes, known activations,
 * residual only where in == out. Errors name the file and tensor or metadata
 * key. *out is the caller's to destroy; layers point into it. */
int mw_model_open(const char *path, mw_model_t **out, char *errstr, size_t errstr_size);

/* Same from an already parsed file; takes ownership of st, even on failure. */
int mw_model_from_safetensors(mw_safetensors_t *st, mw_model_t **out, char *errstr,
                              size_t errstr_size);

/* Accepts NULL. Every stage made from the model must be destroyed first. */
void mw_model_destroy(mw_model_t *m);

int mw_model_num_layers(const mw_model_t *m);
const mw_layer_t *mw_model_layer(const mw_model_t *m, int index);
int mw_model_inputs(const mw_model_t *m);  /* in of layer 0 */
int mw_model_outputs(const mw_model_t *m); /* out of the last layer */
const mw_safetensors_t *mw_model_file(const mw_model_t *m);

/* Floating-point operations of layers [first, last) per input row: the GEMMs'
 * 2 * in * out each (layer norm and activations are not counted). */
uint64_t mw_model_flops(const mw_model_t *m, int first, int last);

/* Bytes of the tensors of layers [first, last). */
uint64_t mw_model_weight_bytes(const mw_model_t *m, int first, int last);

/* What `mwctl model init` writes. */
typedef struct mw_model_spec {
    int layers;  /* >= 1 */
    int inputs;  /* in of layer 0 */
    int hidden;  /* out of layers 0..L-2, in of layers 1..L-1 */
    int outputs; /* out of layer L-1 */
    uint64_t seed;
    mw_activation_t activation; /* layers 0..L-2; the last layer has none (logits) */
    int layernorm;              /* every layer gets ln.gamma/beta */
    int residual;               /* every layer with in == out */
} mw_model_spec_t;

/* Writes a deterministic model: the same spec gives the same bytes on every
 * machine (weights and biases uniform in +-1/sqrt(in), from splitmix64 seeded
 * with spec->seed). The data is generated and written in small chunks, so even
 * a large model needs little memory. The file replaces path atomically. */
int mw_model_generate(const mw_model_spec_t *spec, const char *path, char *errstr,
                      size_t errstr_size);

/* --- stage ranges ---------------------------------------------------------- */

/* Layers [first, last) of one stage. */
typedef struct mw_layer_range {
    int first, last;
} mw_layer_range_t;

/* Cuts n layers with the given per-layer costs into k contiguous non-empty
 * stages (1 <= k <= n): cut j is the layer boundary nearest to j/k of the total,
 * so each stage is within one layer's cost of total/k whenever total/k exceeds
 * the largest layer's cost. Pure function. */
int mw_layer_ranges_split(const uint64_t *cost, int n, int k, mw_layer_range_t *ranges);

/* mw_layer_ranges_split over the model's layer FLOPs. ranges has room for k. */
int mw_model_split(const mw_model_t *m, int k, mw_layer_range_t *ranges, char *errstr,
                   size_t errstr_size);

/* Parses "0:3,3:6": contiguous non-empty ranges within [0, num_layers); with
 * full set they must also start at 0 and end at num_layers. At most max ranges. */
int mw_layer_ranges_parse(const char *text, int num_layers, int full, mw_layer_range_t *ranges,
                          int max, int *count, char *errstr, size_t errstr_size);

/* Writes "0:3,3:6" (always NUL-terminated); returns the length it needed. */
size_t mw_layer_ranges_format(const mw_layer_range_t *ranges, int count, char *buf, size_t size);

/* --- stage compute --------------------------------------------------------- */

typedef struct mw_stage mw_stage_t;

/* A stage computing layers [first, last) of m for batches of up to max_batch
 * rows: on the CPU when device < 0, else on that CUDA device (MW_EUNAVAIL when
 * built without cuBLAS). CPU stages use the weights straight from the model's
 * mapping and allocate their work buffers here, never per batch. m is borrowed
 * and must outlive the stage. One thread at a time may use a stage; different
 * stages may run concurrently. */
int mw_stage_new(const mw_model_t *m, int first, int last, int max_batch, int device,
                 mw_stage_t **out, char *errstr, size_t errstr_size);

/* Computes batch rows (1..max_batch): in is [batch, in_features] and out is
 * [batch, out_features], f32 host memory, not overlapping. Built-in stages
 * only (MW_EINVAL for plug-ins; use mw_stage_run). */
int mw_stage_forward(mw_stage_t *st, const float *in, int batch, float *out);

/* Computes one tensor, whatever the stage's kind. Built-in stages take f32
 * [..., in_features] (rows = the product of the leading dimensions, at most
 * max_batch; in need not be aligned: it is copied into a work buffer then)
 * and give f32 [..., out_features]. *out points to memory the stage owns,
 * valid until the next call or mw_stage_destroy. Errors (wrong dtype or
 * shape, a plug-in's failure) are described in errstr. */
int mw_stage_run(mw_stage_t *st, const mw_tensor_desc_t *in_desc, const void *in,
                 mw_tensor_desc_t *out_desc, const void **out, char *errstr, size_t errstr_size);

/* The rows of in_desc for st (the product of its leading dimensions), after
 * the checks mw_stage_run makes of its dtype and shape (not of max_batch);
 * plug-in stages count each tensor as one row. */
int mw_stage_rows(const mw_stage_t *st, const mw_tensor_desc_t *in_desc, uint64_t *rows,
                  char *errstr, size_t errstr_size);

/* Accepts NULL. */
void mw_stage_destroy(mw_stage_t *st);

/* The CPU stage's kernels, fastest first (i in [0, mw_cpu_kernel_count())):
 * the layer product y [rows, out] = a [rows, in] W^T, W [out, in], and GELU.
 * Every kernel gives the same bits; CPU stages use the first this CPU has.
 * mw_cpu_kernel_name is NULL for a kernel this CPU lacks (then do not call
 * it). */
int mw_cpu_kernel_count(void);
const char *mw_cpu_kernel_name(int i);
void mw_cpu_kernel_matmul(int i, const float *a, int rows, const float *w, int in, int out,
                          float *y);
/* y[j] = GELU(y[j] + bias[j]) for j < n, with kernel i's vector unit. */
void mw_cpu_kernel_gelu(int i, float *y, const float *bias, int n);

/* "cpu", "cuda" or "plugin". */
const char *mw_stage_kind(const mw_stage_t *st);

/* What a built-in stage computes; plug-in stages give -1 for the layers and 0
 * for the features and max_batch (they decide shapes themselves). */
typedef struct mw_stage_info {
    int first_layer, last_layer;
    int max_batch;
    int64_t in_features, out_features;
} mw_stage_info_t;

void mw_stage_get_info(const mw_stage_t *st, mw_stage_info_t *info);

/* Backends fill one const table each. A backend provides forward (f32 fast
 * path; run is then derived from it) or run (any tensor), or both. */
typedef struct mw_stage_ops {
    const char *kind;
    int (*forward)(void *impl, const float *in, int batch, float *out);
    int (*run)(void *impl, const mw_tensor_desc_t *in_desc, const void *in,
               mw_tensor_desc_t *out_desc, const void **out, char *errstr, size_t errstr_size);
    void (*destroy)(void *impl);
} mw_stage_ops_t;

/* Wraps a backend's impl into a stage; takes ownership of impl (destroyed
 * through ops->destroy, also when this fails). */
int mw_stage_wrap(const mw_stage_ops_t *ops, void *impl, const mw_stage_info_t *info,
                  mw_stage_t **out, char *errstr, size_t errstr_size);

#ifdef MW_HAVE_CUBLAS
/* model_cuda.c: the CUDA backend of mw_stage_new. */
int mw_stage_new_cuda(const mw_model_t *m, int first, int last, int max_batch, int device,
                      mw_stage_t **out, char *errstr, size_t errstr_size);
#endif

#endif
