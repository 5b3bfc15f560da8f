/* Stage compute benchmark on a 4-layer 4096-wide model: peak memory of a process
 * holding one stage vs that stage's weights, then stage-forward GFLOP/s at batch
 * 1, 8, 64 and 256 (batch-invariant kernel) against the bare OpenBLAS products
 * of the same shapes (sgemv for one row, sgemm otherwise: the stage's path
 * before it was batch-invariant), in the same run.
 * JSON lines on stdout; medians of interleaved repetitions.
 * MW_BENCH_THREADS sets the OpenBLAS threads of the baseline (default 1);
 * MW_BENCH_BATCH=N measures batch N only (for a profiler). */
#include "clock.h"
#include "err.h"
#include "model/model.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WIDTH  4096
#define LAYERS 4
#define REPS   7
#define BATCH  256 /* the largest batch measured */

static double now_s(void)
{
    return (double)mw_now_us() / 1e6;
}

/* VmHWM or VmRSS of this process, in bytes. */
static long long status_bytes(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long long kb = -1;
    size_t n = strlen(key);
    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, key, n) == 0 && line[n] == ':')
            kb = atoll(line + n + 1);
    if (f != NULL)
        fclose(f);
    return kb * 1024;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static float *alloc_floats(size_t n, unsigned seed)
{
    float *p = NULL;
    if (posix_memalign((void **)&p, 64, n * sizeof(float)) != 0)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        p[i] = (float)((seed >> 8) & 0xffff) / 65536.0f - 0.5f;
    }
    return p;
}

/* The same BLAS products as the stage, and nothing else. */
static void bare_blas(const mw_model_t *m, const float *in, int batch, float *buf[2])
{
    const float *x = in;
    for (int i = 0; i < LAYERS; i++) {
        const mw_layer_t *l = mw_model_layer(m, i);
        float *y = buf[i & 1];
        if (batch == 1)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, l->out, l->in, 1.0f, l->weight, l->in, x, 1,
                        0.0f, y, 1);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, batch, l->out, l->in, 1.0f, x,
                        l->in, l->weight, l->in, 0.0f, y, l->out);
        x = y;
    }
}

int main(void)
{
    char err[512], path[512];
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    const char *threads_env = getenv("MW_BENCH_THREADS");
    const int threads = threads_env ? atoi(threads_env) : 1;
    snprintf(path, sizeof(path), "%s/mwbench-stage-%ld.safetensors", dir, (long)getpid());
    openblas_set_num_threads(threads); /* the baseline's; the stage computes on this thread */

    mw_model_spec_t spec = {.layers = LAYERS,
                            .inputs = WIDTH,
                            .hidden = WIDTH,
                            .outputs = WIDTH,
                            .seed = 1,
                            .activation = MW_ACT_GELU};
    double t0 = now_s();
    if (mw_model_generate(&spec, path, err, sizeof(err)) != MW_OK) {
        fprintf(stderr, "bench_stage: %s\n", err);
        return 1;
    }
    fprintf(stderr, "bench_stage: wrote %s in %.1f s\n", path, now_s() - t0);
    mw_model_t *m;
    if (mw_model_open(path, &m, err, sizeof(err)) != MW_OK) {
        fprintf(stderr, "bench_stage: %s\n", err);
        unlink(path);
        return 1;
    }
    unlink(path); /* the mapping keeps the data */

    /* 1. Memory: one stage of layers 0:2 (half the model), 10 batches of 64. */
    float *in = alloc_floats((size_t)BATCH * WIDTH, 7),
          *out = alloc_floats((size_t)BATCH * WIDTH, 0);
    float *buf[2] = {alloc_floats((size_t)BATCH * WIDTH, 0),
                     alloc_floats((size_t)BATCH * WIDTH, 0)};
    if (!in || !out || !buf[0] || !buf[1])
        return 1;
    long long rss_before = status_bytes("VmRSS");
    mw_stage_t *half;
    if (mw_stage_new(m, 0, 2, 64, -1, &half, err, sizeof(err)) != MW_OK) {
        fprintf(stderr, "bench_stage: %s\n", err);
        return 1;
    }
    mw_stage_forward(half, in, 64, out);
    long long hwm_first = status_bytes("VmHWM");
    for (int i = 0; i < 10; i++)
        mw_stage_forward(half, in, 64, out);
    long long hwm = status_bytes("VmHWM");
    const double weights = (double)mw_model_weight_bytes(m, 0, 2);
    printf("{\"bench\":\"stage\",\"metric\":\"peak_rss_one_stage\",\"value\":%lld,\"unit\":"
           "\"bytes\",\"baseline\":%.0f,\"ratio\":%.3f,\"baseline_is\":\"stage weight bytes "
           "(layers 0:2 of 4, 4096x4096)\",\"rss_before_stage\":%lld}\n",
           hwm, weights, (double)hwm / weights, rss_before);
    printf("{\"bench\":\"stage\",\"metric\":\"peak_rss_growth_over_10_batches\",\"value\":%lld,"
           "\"unit\":\"bytes\",\"baseline\":%lld,\"ratio\":%.4f}\n",
           hwm - hwm_first, hwm_first, (double)(hwm - hwm_first) / (double)hwm_first);
    fflush(stdout);
    mw_stage_destroy(half);

    /* 2. Throughput: the whole model as one stage vs the bare GEMMs. */
    mw_stage_t *st;
    if (mw_stage_new(m, 0, LAYERS, BATCH, -1, &st, err, sizeof(err)) != MW_OK) {
        fprintf(stderr, "bench_stage: %s\n", err);
        return 1;
    }
    const char *only_env = getenv("MW_BENCH_BATCH");
    const int only = only_env ? atoi(only_env) : 0;
    const int batches[] = {1, 8, 64, BATCH};
    for (int b = 0; b < 4; b++) {
        const int batch = batches[b];
        if (only > 0 && batch != only)
            continue;
        const double gflop = (double)mw_model_flops(m, 0, LAYERS) * batch / 1e9;
        double s_rate[REPS], g_rate[REPS];
        mw_stage_forward(st, in, batch, out); /* warm-up: pages, OpenBLAS buffers */
        bare_blas(m, in, batch, buf);
        for (int r = 0; r < REPS; r++) {
            double t = now_s();
            mw_stage_forward(st, in, batch, out);
            s_rate[r] = gflop / (now_s() - t);
            t = now_s();
            bare_blas(m, in, batch, buf);
            g_rate[r] = gflop / (now_s() - t);
        }
        double s = median(s_rate, REPS), g = median(g_rate, REPS);
        printf("{\"bench\":\"stage\",\"metric\":\"forward_gflops_batch_%d\",\"value\":%.2f,"
               "\"unit\":\"GFLOP/s\",\"baseline\":%.2f,\"ratio\":%.3f,\"baseline_is\":\"bare "
               "cblas_sgemv (batch 1) or cblas_sgemm, same shapes\",\"threads\":%d,\"reps\":%d}\n",
               batch, s, g, s / g, threads, REPS);
        fflush(stdout);
    }
    mw_stage_destroy(st);
    mw_model_destroy(m);
    free(in);
    free(out);
    free(buf[0]);
    free(buf[1]);
    return 0;
}
