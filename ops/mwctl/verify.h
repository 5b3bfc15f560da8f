/* mwctl's check of pipeline outputs against the reference runner: request
 * inputs kept by request id, the unsplit model run on them at batch 1 (as a
 * worker runs each request), and a bit-exact comparison with the result (or
 * one within a relative tolerance, for GPU workers). */
#ifndef MW_MWCTL_VERIFY_H
#define MW_MWCTL_VERIFY_H

#include "topics/record.h"

#include <stddef.h>
#include <stdint.h>

typedef struct mwctl_verifier mwctl_verifier_t;

/* What a verifier has seen so far. */
typedef struct mwctl_verify_stats {
    int64_t verified; /* ok results that match the reference (see set_tolerance) */
    int64_t differ;   /* ok results that differ (or that the reference rejects) */
    int64_t no_input; /* ok results whose request input is not known */
    int64_t pending;  /* inputs kept, not matched by a result yet */
} mwctl_verify_stats_t;

/* Opens the model (the whole of it as one CPU stage taking requests of up to
 * max_rows rows: the workers' batch.max_rows). Each request is computed
 * alone: a row's output does not
 * depend on what shares its batch (model.h), so a pipeline's output for it is
 * the same bits. *out is the caller's to destroy. Errors name the file. Not
 * thread-safe: one thread uses a verifier. */
int mwctl_verifier_new(const char *model_path, int max_rows, mwctl_verifier_t **out, char *errstr,
                       size_t errstr_size);

/* Accepts NULL. */
void mwctl_verifier_destroy(mwctl_verifier_t *v);

/* 0 (the default): outputs must be bit-identical to the reference. rel > 0:
 * each element g must satisfy |g - r| <= rel * (1 + |r|) against the
 * reference r: CUDA (cuBLAS) stages sum in another order than OpenBLAS and
 * differ in the last bits (about 1e-6 relative on an H200). */
void mwctl_verifier_set_tolerance(mwctl_verifier_t *v, double rel);

/* "bit-identical to" or "within REL of", for "... the reference runner". */
const char *mwctl_verifier_criterion(const mwctl_verifier_t *v);

/* Parses --tolerance's argument (a finite number >= 0) for command cmd;
 * prints why not and returns -1 when it is not one. */
int mwctl_parse_tolerance(const char *cmd, const char *arg, double *rel);

/* Keeps a copy of a request's input under its id, until a result of that id
 * is checked. The same id may be kept more than once (ids reused with other
 * data): a result then matches any of them. An identical copy is not added
 * twice. Returns MW_OK or MW_ENOMEM. */
int mwctl_verifier_put(mwctl_verifier_t *v, const void *id, size_t id_len,
                       const mw_tensor_desc_t *desc, const void *data, size_t nbytes);

/* 1 when an input is kept for this id. */
int mwctl_verifier_has(const mwctl_verifier_t *v, const void *id, size_t id_len);

/* Checks one ok result: runs the model on the kept input of res->id and
 * compares dtype, shape and bytes (or values, within the tolerance). MW_OK
 * when they match; MW_EINVAL when they differ (errstr says where: "element 3
 * is 0.125 (0x3e000000), the reference 0.126 (0x3e010625)"); MW_ENOTFOUND when no input of that id
 * is kept. A matched input is forgotten. Counts into the stats. Error results are not checked
 * (MW_OK, nothing counted). */
int mwctl_verifier_check(mwctl_verifier_t *v, const mw_result_t *res, char *errstr,
                         size_t errstr_size);

void mwctl_verifier_stats(const mwctl_verifier_t *v, mwctl_verify_stats_t *stats);

#endif
