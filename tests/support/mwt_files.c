/* Unit-test support: a temporary directory, models and input rows (see mwt_files.h). */
#include "mwt_files.h"

#include "err.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

static char tmpdir[256];

int mwt_files_setup(void **state)
{
    (void)state;
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(tmpdir, sizeof(tmpdir), "%s/%s-XXXXXX", base, program_invocation_short_name);
    return mkdtemp(tmpdir) != NULL ? 0 : -1;
}

int mwt_files_teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

const char *mwt_tmp_path(const char *name)
{
    static char buf[8][512];
    static int next;
    char *p = buf[next++ % 8];
    snprintf(p, sizeof(buf[0]), "%s/%s", tmpdir, name);
    return p;
}

mw_model_t *mwt_model_make(const mw_model_spec_t *spec, const char *name)
{
    char err[512];
    const char *path = mwt_tmp_path(name);
    mw_model_t *m = NULL;
    if (mw_model_generate(spec, path, err, sizeof(err)) != MW_OK ||
        mw_model_open(path, &m, err, sizeof(err)) != MW_OK) {
        fprintf(stderr, "test setup: model %s: %s\n", path, err);
        exit(1);
    }
    return m;
}

float *mwt_random_rows(size_t rows, int cols, uint64_t seed)
{
    float *x = malloc(rows * (size_t)cols * sizeof(float) + 1);
    if (x == NULL) {
        fprintf(stderr, "test setup: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < rows * (size_t)cols; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        x[i] = (float)((double)(seed >> 40) / 16777216.0 * 4.0 - 2.0);
    }
    return x;
}
