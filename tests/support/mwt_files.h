/* Unit-test support for tests that write files and models: one temporary
 * directory per test binary (for a cmocka group's setup and teardown), paths
 * in it, generated reference models and deterministic input rows. */
#ifndef MWT_FILES_H
#define MWT_FILES_H

#include "model/model.h"

#include <stddef.h>
#include <stdint.h>

/* A cmocka group's setup and teardown: a temporary directory named after the
 * test program ($TMPDIR/<program>-XXXXXX, TMPDIR default /tmp); the directory
 * is then removed with what it holds. 0 or -1. */
int mwt_files_setup(void **state);
int mwt_files_teardown(void **state);

/* <dir>/<name>; the result lives until 8 more calls. */
const char *mwt_tmp_path(const char *name);

/* Generates spec's model as <dir>/<name> and opens it; the caller destroys
 * it. A failure ends the test program (exit 1, the reason on stderr), as
 * every setup failure of tests/support does. */
mw_model_t *mwt_model_make(const mw_model_spec_t *spec, const char *name);

/* rows x cols floats in [-2, 2), the same for the same seed; caller frees.
 * Out of memory ends the test program. */
float *mwt_random_rows(size_t rows, int cols, uint64_t seed);

#endif
