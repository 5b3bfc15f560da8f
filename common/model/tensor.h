/* Tensor descriptions shared by records, worlds and models: dtype, shape, bytes. */
#ifndef MW_TENSOR_H
#define MW_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#define MW_TENSOR_MAX_DIMS 8

typedef enum {
    MW_DTYPE_F32 = 0,
    MW_DTYPE_F16,
    MW_DTYPE_BF16,
    MW_DTYPE_I32,
    MW_DTYPE_I64,
    MW_DTYPE_U8,
    MW_DTYPE_COUNT,
} mw_dtype_t;

/* A tensor's shape and type; data lives elsewhere (host or device memory). */
typedef struct mw_tensor_desc {
    mw_dtype_t dtype;
    int ndim;
    int64_t shape[MW_TENSOR_MAX_DIMS];
} mw_tensor_desc_t;

/* Name as in records and safetensors' lowercase form: "f32", "f16", "bf16",
 * "i32", "i64", "u8". */
const char *mw_dtype_name(mw_dtype_t dtype);
size_t mw_dtype_size(mw_dtype_t dtype);

/* Parses a record dtype name ("f32" ...); 0 or MW_EINVAL. */
int mw_dtype_parse(const char *name, size_t len, mw_dtype_t *dtype);

/* Parses "1,784" (1..MW_TENSOR_MAX_DIMS positive dims, no spaces) into desc->shape
 * and desc->ndim; errors name the problem in errstr. */
int mw_shape_parse(const char *text, size_t len, mw_tensor_desc_t *desc, char *errstr,
                   size_t errstr_size);

/* Writes "1,784" into buf (always NUL-terminated); returns the length it needed. */
size_t mw_shape_format(const mw_tensor_desc_t *desc, char *buf, size_t size);

/* Number of elements, and of bytes; MW_ETOOBIG when the product overflows. */
int mw_tensor_numel(const mw_tensor_desc_t *desc, uint64_t *numel);
int mw_tensor_nbytes(const mw_tensor_desc_t *desc, uint64_t *nbytes);

#endif
