/* NumPy .npy files (format versions 1.0, 2.0 and 3.0): the header parsed from
 * a file's bytes and written for a new file. Pure: no I/O, no allocation. */
#ifndef MW_MWCTL_NPY_H
#define MW_MWCTL_NPY_H

#include "model/tensor.h"

#include <stddef.h>
#include <stdint.h>

/* Longest header mwctl_npy_header writes (a 1.0 header of MW_TENSOR_MAX_DIMS dims fits). */
#define MWCTL_NPY_HEADER_MAX 256

/* A parsed .npy file: a little-endian (or single-byte) C-order array. */
typedef struct mwctl_npy {
    mw_dtype_t dtype;
    int ndim; /* 0 for a scalar */
    int64_t shape[MW_TENSOR_MAX_DIMS];
    int major, minor;     /* format version */
    uint64_t data_offset; /* where the array's bytes start */
    uint64_t data_bytes;  /* product of shape times the dtype's size */
} mwctl_npy_t;

/* Parses the whole file, buf[len], into npy: magic, version, header dict
 * ({'descr': ..., 'fortran_order': ..., 'shape': (...)}), then checks that
 * exactly data_bytes follow the header. Accepts the dtypes f32, f16, i32, i64
 * and u8 ('<f4', '<f2', '<i4', '<i8', '|u1'); anything else is rejected by
 * name, as are Fortran order, big-endian data, and a truncated header or data.
 * MW_OK, or MW_EINVAL with errstr naming the problem. Thread-safe. */
int mwctl_npy_parse(mwctl_npy_t *npy, const void *buf, size_t len, char *errstr,
                    size_t errstr_size);

/* Writes the header of a C-order array of dtype and shape[ndim] into buf:
 * format 1.0, padded with spaces so that the data starts at a multiple of 64.
 * Returns its length (the data offset), or 0 when it does not fit in size or
 * the dtype is not one mwctl_npy_parse accepts. */
size_t mwctl_npy_header(char *buf, size_t size, mw_dtype_t dtype, int ndim, const int64_t *shape);

#endif
