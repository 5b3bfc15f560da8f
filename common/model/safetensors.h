/* safetensors files: a validating, memory-mapping reader and a streaming writer.
 *
 * Format (https://github.com/huggingface/safetensors): an 8-byte little-endian
 * header length N, N bytes of JSON header, then the data. The header maps each
 * tensor name to {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}
 * (offsets relative to the start of the data) and may hold "__metadata__", an
 * object of string values. */
#ifndef MW_SAFETENSORS_H
#define MW_SAFETENSORS_H

#include "tensor.h"

#include <stddef.h>
#include <stdint.h>

/* Headers larger than this are refused (the reference implementation's limit). */
#define MW_SAFETENSORS_MAX_HEADER (100u * 1024 * 1024)

/* One tensor of an open file. Everything points into the file object: valid
 * until mw_safetensors_destroy. */
typedef struct mw_st_tensor {
    const char *name;
    mw_tensor_desc_t desc; /* dtype and shape; ndim 0 is a scalar, dimensions may be 0 */
    uint64_t numel;
    uint64_t nbytes;
    uint64_t offset;  /* from the start of the data section */
    const void *data; /* inside the mapping; aligned as the file laid it out */
} mw_st_tensor_t;

typedef struct mw_safetensors mw_safetensors_t;

/* Opens and validates path, mapping its data read-only (the pages are shared
 * with the page cache: nothing is copied). Every problem is rejected with
 * MW_EINVAL (MW_EIO for system errors) and a message that names the file and,
 * where there is one, the tensor. On success *out is the caller's to destroy. */
int mw_safetensors_open(const char *path, mw_safetensors_t **out, char *errstr, size_t errstr_size);

/* Validates a file image held in memory. buf is borrowed: it must outlive *out,
 * whose tensors point into it. Same checks and errors as mw_safetensors_open. */
int mw_safetensors_parse(const void *buf, size_t len, mw_safetensors_t **out, char *errstr,
                         size_t errstr_size);

/* Unmaps and frees; accepts NULL. */
void mw_safetensors_destroy(mw_safetensors_t *st);

/* Tensors in header order. */
size_t mw_safetensors_count(const mw_safetensors_t *st);
const mw_st_tensor_t *mw_safetensors_tensor(const mw_safetensors_t *st, size_t index);

/* The tensor called name, or NULL. */
const mw_st_tensor_t *mw_safetensors_find(const mw_safetensors_t *st, const char *name);

/* The __metadata__ value of key, or NULL. */
const char *mw_safetensors_metadata(const mw_safetensors_t *st, const char *key);

/* "F32" ... as spelled in files; NULL for an invalid dtype. */
const char *mw_safetensors_dtype_name(mw_dtype_t dtype);

/* --- writing ----------------------------------------------------------------- */

/* A tensor to write: name and desc are copied by mw_st_writer_new; data is only
 * read by mw_safetensors_write. */
typedef struct mw_st_entry {
    const char *name;
    mw_tensor_desc_t desc;
    const void *data;
} mw_st_entry_t;

typedef struct mw_st_writer mw_st_writer_t;

/* Starts writing path: the header (tensors in the given order, metadata as
 * n_meta key/value pairs meta[2i], meta[2i+1]) goes out at once, padded so that
 * the data starts 8-byte aligned. The data then follows through
 * mw_st_writer_append, tensor after tensor, in order. The file appears under
 * its name only when mw_st_writer_finish succeeds (written to a temporary name,
 * then renamed). Not thread-safe. */
int mw_st_writer_new(const char *path, const mw_st_entry_t *entries, size_t n,
                     const char *const *meta, size_t n_meta, mw_st_writer_t **out, char *errstr,
                     size_t errstr_size);

/* Appends len bytes of tensor data. */
int mw_st_writer_append(mw_st_writer_t *w, const void *data, size_t len, char *errstr,
                        size_t errstr_size);

/* Checks that exactly the announced bytes were written, flushes and renames
 * the file into place. The writer must still be destroyed. */
int mw_st_writer_finish(mw_st_writer_t *w, char *errstr, size_t errstr_size);

/* Frees the writer; an unfinished file is removed. Accepts NULL. */
void mw_st_writer_destroy(mw_st_writer_t *w);

/* Writes entries (their data included) and metadata to path in one call. */
int mw_safetensors_write(const char *path, const mw_st_entry_t *entries, size_t n,
                         const char *const *meta, size_t n_meta, char *errstr, size_t errstr_size);

#endif
