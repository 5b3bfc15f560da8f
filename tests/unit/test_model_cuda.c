/* The CUDA stage on a real GPU against the CPU stage: same outputs (within f32
 * tolerance) at batch 1 and 8, deterministic run to run, clear errors for bad
 * devices. Skipped when built without cuBLAS or when no CUDA device is present.
 *
 * Tolerance: |gpu - cpu| <= 1e-4 * (1 + |cpu|) per element. Both sides compute
 * each layer in f32 but sum the GEMM's dot products in different orders
 * (OpenBLAS vs cuBLAS; PEDANTIC math, so no TF32), and erff differs by an ulp
 * or so: over K <= 512 terms of O(1) values that is ~1e-6 per layer; 1e-4 is
 * the bound test_model.c uses against a double-precision reference. TF32 (10
 * mantissa bits) would miss it by an order of magnitude. */
#include "err.h"
#include "model/model.h"
#include "mwt_files.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#ifdef MW_HAVE_CUBLAS
#include <cuda_runtime.h>

#define TOL_REL 1e-4

/* CUDA devices usable here; 0 (with the reason printed once) when none. */
static int cuda_devices(void)
{
    static int known = -1;
    if (known >= 0)
        return known;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n < 1) {
        printf("# no CUDA device: %s\n", e != cudaSuccess ? cudaGetErrorString(e) : "count is 0");
        n = 0;
    } else {
        struct cudaDeviceProp p;
        if (cudaGetDeviceProperties(&p, 0) == cudaSuccess)
            printf("# CUDA device 0 of %d: %s, sm_%d%d, %zu MiB\n", n, p.name, p.major, p.minor,
                   p.totalGlobalMem >> 20);
    }
    known = n;
    return known;
}

static mw_stage_t *stage_or_fail(const mw_model_t *m, int first, int last, int max_batch,
                                 int device)
{
    char err[512];
    mw_stage_t *st = NULL;
    if (mw_stage_new(m, first, last, max_batch, device, &st, err, sizeof(err)) != MW_OK)
        fail_msg("stage %d:%d on device %d: %s", first, last, device, err);
    return st;
}

/* rows through st, batch rows per call. */
static void forward_rows(mw_stage_t *st, const float *in, size_t rows, int batch, float *out)
{
    mw_stage_info_t info;
    mw_stage_get_info(st, &info);
    for (size_t r = 0; r < rows; r += (size_t)batch) {
        int n = rows - r < (size_t)batch ? (int)(rows - r) : batch;
        int rc = mw_stage_forward(st, in + r * (size_t)info.in_features, n,
                                  out + r * (size_t)info.out_features);
        if (rc != MW_OK)
            fail_msg("%s stage forward of %d rows: %s", mw_stage_kind(st), n, mw_strerror(rc));
    }
}

/* Largest |got - want| / (1 + |want|); fails past TOL_REL naming the element. */
static double check_close(const char *what, const float *got, const float *want, size_t n)
{
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i]))
            fail_msg("%s: element %zu is %g", what, i, got[i]);
        double d = fabs((double)got[i] - (double)want[i]) / (1.0 + fabs((double)want[i]));
        if (d > TOL_REL)
            fail_msg("%s: element %zu is %.9g, expected %.9g", what, i, got[i], want[i]);
        worst = d > worst ? d : worst;
    }
    return worst;
}

static const mw_model_spec_t small_spec = {
    .layers = 6,
    .inputs = 16,
    .hidden = 64,
    .outputs = 10,
    .seed = 7,
    .activation = MW_ACT_GELU,
    .layernorm = 1,
    .residual = 1,
};

static void cuda_stage_matches_the_cpu_stage_at_batch_1_and_8(void **state)
{
    (void)state;
    if (cuda_devices() == 0)
        skip();
    /* small and wide (odd sizes, so tensors sit at unaligned offsets in the
     * stage's one device allocation), every activation, with and without
     * layer norm and residual */
    const mw_activation_t acts[] = {MW_ACT_GELU, MW_ACT_RELU, MW_ACT_NONE};
    for (int v = 0; v < 6; v++) {
        mw_model_spec_t spec = small_spec;
        spec.activation = acts[v % 3];
        spec.layernorm = v % 2 == 0;
        spec.residual = v < 4;
        if (v >= 3) {
            spec.inputs = 37;
            spec.hidden = 509;
            spec.outputs = 13;
            spec.seed = 11;
        }
        mw_model_t *m = mwt_model_make(&spec, "match.safetensors");
        const int L = mw_model_num_layers(m);
        const mw_layer_range_t ranges[] = {{0, L}, {1, 4}, {L - 1, L}, {0, 1}};
        for (int ri = 0; ri < 4; ri++) {
            const int first = ranges[ri].first, last = ranges[ri].last;
            const int in_f = mw_model_layer(m, first)->in, out_f = mw_model_layer(m, last - 1)->out;
            const size_t rows = 8;
            float *x = mwt_random_rows(rows, in_f, (uint64_t)(100 * v + ri));
            float *want = malloc(rows * (size_t)out_f * sizeof(float));
            float *got = malloc(rows * (size_t)out_f * sizeof(float));
            assert_non_null(want);
            assert_non_null(got);
            mw_stage_t *gpu = stage_or_fail(m, first, last, 8, 0);
            assert_string_equal(mw_stage_kind(gpu), "cuda");
            mw_stage_info_t info;
            mw_stage_get_info(gpu, &info);
            assert_int_equal(info.first_layer, first);
            assert_int_equal(info.last_layer, last);
            assert_int_equal(info.max_batch, 8);
            assert_int_equal(info.in_features, in_f);
            assert_int_equal(info.out_features, out_f);
            const int batches[] = {1, 8};
            for (int bi = 0; bi < 2; bi++) {
                char what[128];
                mw_stage_t *cpu = stage_or_fail(m, first, last, batches[bi], -1);
                forward_rows(cpu, x, rows, batches[bi], want);
                mw_stage_destroy(cpu);
                memset(got, 0xff, rows * (size_t)out_f * sizeof(float));
                forward_rows(gpu, x, rows, batches[bi], got);
                snprintf(what, sizeof(what), "GPU vs CPU, variant %d, layers %d:%d, batch %d", v,
                         first, last, batches[bi]);
                double worst = check_close(what, got, want, rows * (size_t)out_f);
                printf("# %s: max relative difference %.3g\n", what, worst);
            }
            /* mw_stage_run on [2, 4, in] is the batch of 8 */
            mw_tensor_desc_t in_desc = {MW_DTYPE_F32, 3, {2, 4, in_f}}, out_desc;
            const void *res = NULL;
            char err[256];
            if (mw_stage_run(gpu, &in_desc, x, &out_desc, &res, err, sizeof(err)) != MW_OK)
                fail_msg("mw_stage_run: %s", err);
            assert_int_equal(out_desc.ndim, 3);
            assert_int_equal(out_desc.shape[2], out_f);
            assert_memory_equal(res, got, rows * (size_t)out_f * sizeof(float));
            mw_stage_destroy(gpu);
            free(x);
            free(want);
            free(got);
        }
        mw_model_destroy(m);
    }
}

/* The kernels and cuBLAS (one stream, PEDANTIC math) are deterministic; cuts
 * are compared within tolerance and reported when not bit-identical. */
static void cuda_stage_is_bit_identical_run_to_run_and_cuts_agree(void **state)
{
    (void)state;
    if (cuda_devices() == 0)
        skip();
    mw_model_spec_t spec = small_spec;
    spec.hidden = 257;
    mw_model_t *m = mwt_model_make(&spec, "repeat.safetensors");
    const int L = mw_model_num_layers(m);
    const size_t rows = 32, n = rows * 10;
    float *x = mwt_random_rows(rows, 16, 5);
    float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
    float *mid = malloc(rows * 257 * sizeof(float));
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(mid);
    const int batches[] = {1, 8};
    for (int bi = 0; bi < 2; bi++) {
        mw_stage_t *whole = stage_or_fail(m, 0, L, batches[bi], 0);
        forward_rows(whole, x, rows, batches[bi], a);
        for (int rep = 0; rep < 3; rep++) {
            forward_rows(whole, x, rows, batches[bi], b);
            assert_memory_equal(a, b, n * sizeof(float));
        }
        mw_stage_destroy(whole);
        for (int cut = 1; cut < L; cut++) {
            mw_stage_t *s0 = stage_or_fail(m, 0, cut, batches[bi], 0);
            mw_stage_t *s1 = stage_or_fail(m, cut, L, batches[bi], 0);
            forward_rows(s0, x, rows, batches[bi], mid);
            forward_rows(s1, mid, rows, batches[bi], b);
            char what[128];
            snprintf(what, sizeof(what), "GPU stages 0:%d,%d:%d vs GPU whole, batch %d", cut, cut,
                     L, batches[bi]);
            double worst = check_close(what, b, a, n);
            printf("# %s: %s (max relative difference %.3g)\n", what,
                   memcmp(a, b, n * sizeof(float)) == 0 ? "bit-identical to the whole model"
                                                        : "differs in the last bits",
                   worst);
            mw_stage_destroy(s1);
            mw_stage_destroy(s0);
        }
    }
    free(x);
    free(a);
    free(b);
    free(mid);
    mw_model_destroy(m);
}

static void cuda_stage_on_a_missing_device_fails_naming_it(void **state)
{
    (void)state;
    /* needs no GPU: without one, device 0 is as missing as device 1000 */
    mw_model_t *m = mwt_model_make(&small_spec, "bad.safetensors");
    const int devices[] = {cuda_devices(), 1000};
    for (int i = 0; i < 2; i++) {
        char err[512] = "", want[64];
        mw_stage_t *st = NULL;
        int rc = mw_stage_new(m, 0, 6, 4, devices[i], &st, err, sizeof(err));
        printf("# device %d: %s\n", devices[i], err);
        assert_int_equal(rc, MW_EUNAVAIL);
        assert_null(st);
        snprintf(want, sizeof(want), "CUDA device %d", devices[i]);
        if (strstr(err, want) == NULL)
            fail_msg("message '%s' lacks '%s'", err, want);
    }
    /* the failures leave the working devices usable */
    if (cuda_devices() > 0) {
        mw_stage_t *st = stage_or_fail(m, 0, 6, 4, 0);
        float *x = mwt_random_rows(4, 16, 1), y[40];
        int rc = mw_stage_forward(st, x, 4, y);
        if (rc != MW_OK)
            fail_msg("forward on device 0 after the failed stages: %s", mw_strerror(rc));
        free(x);
        mw_stage_destroy(st);
    }
    mw_model_destroy(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cuda_stage_matches_the_cpu_stage_at_batch_1_and_8),
        cmocka_unit_test(cuda_stage_is_bit_identical_run_to_run_and_cuts_agree),
        cmocka_unit_test(cuda_stage_on_a_missing_device_fails_naming_it),
    };
    return cmocka_run_group_tests(tests, mwt_files_setup, mwt_files_teardown);
}
#else
static void cuda_stage_is_not_built_here(void **state)
{
    (void)state;
    skip();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cuda_stage_is_not_built_here),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
#endif
