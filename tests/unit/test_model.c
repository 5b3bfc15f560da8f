/* Reference model: generation, validation, stage ranges and the bit-identity of staged compute. */
#include "config.h"
#include "err.h"
#include "model/model.h"
#include "ops/mwctl/mwctl.h"
#include "mwt_files.h"
#include "model/safetensors.h"

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

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(*len ? *len : 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, *len, f), *len);
    fclose(f);
    return b;
}

/* Runs rows through the given stages one after the other, batch rows at a time. */
static void run_staged(const mw_model_t *m, const mw_layer_range_t *ranges, int count,
                       const float *in, size_t rows, int batch, float *out)
{
    char err[256];
    mw_stage_t *st[16];
    float *tmp[2];
    tmp[0] = malloc((size_t)batch * 1024 * sizeof(float));
    tmp[1] = malloc((size_t)batch * 1024 * sizeof(float));
    for (int s = 0; s < count; s++)
        if (mw_stage_new(m, ranges[s].first, ranges[s].last, batch, -1, &st[s], err, sizeof(err)) !=
            MW_OK)
            fail_msg("stage: %s", err);
    const int in_f = mw_model_layer(m, ranges[0].first)->in;
    const int out_f = mw_model_layer(m, ranges[count - 1].last - 1)->out;
    for (size_t r = 0; r < rows; r += (size_t)batch) {
        int n = rows - r < (size_t)batch ? (int)(rows - r) : batch;
        const float *x = in + r * (size_t)in_f;
        for (int s = 0; s < count; s++) {
            float *y = s == count - 1 ? out + r * (size_t)out_f : tmp[s & 1];
            assert_int_equal(mw_stage_forward(st[s], x, n, y), MW_OK);
            x = y;
        }
    }
    for (int s = 0; s < count; s++)
        mw_stage_destroy(st[s]);
    free(tmp[0]);
    free(tmp[1]);
}

/* The model in double precision, straight from the formulas in model.h. */
static void naive_forward(const mw_model_t *m, const float *in, size_t rows, double *out)
{
    int width = 0;
    for (int i = 0; i < mw_model_num_layers(m); i++)
        width = mw_model_layer(m, i)->in > width ? mw_model_layer(m, i)->in : width;
    double *x = calloc(rows * (size_t)width, sizeof(double));
    double *a = calloc((size_t)width, sizeof(double));
    for (size_t i = 0; i < rows * (size_t)mw_model_inputs(m); i++)
        x[i] = in[i];
    for (int li = 0; li < mw_model_num_layers(m); li++) {
        const mw_layer_t *l = mw_model_layer(m, li);
        double *y = calloc(rows * (size_t)l->out, sizeof(double));
        for (size_t r = 0; r < rows; r++) {
            const double *xr = x + r * (size_t)l->in;
            double mean = 0, var = 0;
            for (int k = 0; k < l->in; k++)
                mean += xr[k] / l->in;
            for (int k = 0; k < l->in; k++)
                var += (xr[k] - mean) * (xr[k] - mean) / l->in;
            for (int k = 0; k < l->in; k++)
                a[k] = l->ln_gamma
                           ? (xr[k] - mean) / sqrt(var + MW_LAYERNORM_EPS) * l->ln_gamma[k] +
                                 l->ln_beta[k]
                           : xr[k];
            for (int j = 0; j < l->out; j++) {
                double v = l->bias[j];
                for (int k = 0; k < l->in; k++)
                    v += a[k] * l->weight[(size_t)j * (size_t)l->in + (size_t)k];
                if (l->activation == MW_ACT_RELU)
                    v = v > 0 ? v : 0;
                else if (l->activation == MW_ACT_GELU)
                    v = 0.5 * v * (1 + erf(v / sqrt(2.0)));
                y[r * (size_t)l->out + (size_t)j] = v + (l->residual ? xr[j] : 0);
            }
        }
        memcpy(x, y, rows * (size_t)l->out * sizeof(double));
        free(y);
    }
    memcpy(out, x, rows * (size_t)mw_model_outputs(m) * sizeof(double));
    free(a);
    free(x);
}

static void generated_model_is_deterministic_for_a_seed(void **state)
{
    (void)state;
    char err[256];
    mw_model_spec_t spec = small_spec;
    assert_int_equal(mw_model_generate(&spec, mwt_tmp_path("a.safetensors"), err, sizeof(err)),
                     MW_OK);
    assert_int_equal(mw_model_generate(&spec, mwt_tmp_path("b.safetensors"), err, sizeof(err)),
                     MW_OK);
    spec.seed = 8;
    assert_int_equal(mw_model_generate(&spec, mwt_tmp_path("c.safetensors"), err, sizeof(err)),
                     MW_OK);
    size_t la, lb, lc;
    unsigned char *a = slurp(mwt_tmp_path("a.safetensors"), &la);
    unsigned char *b = slurp(mwt_tmp_path("b.safetensors"), &lb);
    unsigned char *c = slurp(mwt_tmp_path("c.safetensors"), &lc);
    assert_int_equal(la, lb);
    assert_memory_equal(a, b, la);
    assert_true(la != lc || memcmp(a, c, la) != 0);
    free(a);
    free(b);
    free(c);

    mw_model_t *m = mwt_model_make(&small_spec, "d.safetensors");
    assert_int_equal(mw_model_num_layers(m), 6);
    assert_int_equal(mw_model_inputs(m), 16);
    assert_int_equal(mw_model_outputs(m), 10);
    const mw_layer_t *l0 = mw_model_layer(m, 0), *l3 = mw_model_layer(m, 3),
                     *l5 = mw_model_layer(m, 5);
    assert_int_equal(l0->out, 64);
    assert_false(l0->residual); /* 16 -> 64 */
    assert_true(l3->residual);
    assert_int_equal(l3->activation, MW_ACT_GELU);
    assert_int_equal(l5->activation, MW_ACT_NONE);
    assert_non_null(l3->ln_gamma);
    assert_null(mw_model_layer(m, 6));
    assert_string_equal(mw_safetensors_metadata(mw_model_file(m), "seed"), "7");
    assert_int_equal(mw_model_flops(m, 0, 6), 2 * (16 * 64 + 4 * 64 * 64 + 64 * 10));
    assert_int_equal(mw_model_weight_bytes(m, 0, 1), 4 * (16 * 64 + 64 + 2 * 16));
    mw_model_destroy(m);
}

static void forward_matches_a_naive_double_precision_reference(void **state)
{
    (void)state;
    const mw_activation_t acts[] = {MW_ACT_GELU, MW_ACT_RELU, MW_ACT_NONE};
    for (int v = 0; v < 6; v++) {
        mw_model_spec_t spec = small_spec;
        spec.activation = acts[v % 3];
        spec.layernorm = v < 3;
        spec.residual = v % 2;
        mw_model_t *m = mwt_model_make(&spec, "ref.safetensors");
        const size_t rows = 5;
        float *x = mwt_random_rows(rows, 16, (uint64_t)v);
        float *y = malloc(rows * 10 * sizeof(float));
        double *want = malloc(rows * 10 * sizeof(double));
        mw_layer_range_t all = {0, 6};
        run_staged(m, &all, 1, x, rows, (int)rows, y);
        naive_forward(m, x, rows, want);
        for (size_t i = 0; i < rows * 10; i++)
            if (fabs(y[i] - want[i]) > 1e-4 * (1 + fabs(want[i])))
                fail_msg("variant %d, element %zu: %.9g vs %.9g", v, i, y[i], want[i]);
        free(x);
        free(y);
        free(want);
        mw_model_destroy(m);
    }
}

/* Every set of cut points (so 1, 2, ... L stages, in every position) at batch 1, 3 and 8. */
static void every_cut_into_stages_is_bit_identical_to_the_whole_model(void **state)
{
    (void)state;
    for (int variant = 0; variant < 2; variant++) {
        mw_model_spec_t spec = small_spec;
        if (variant == 1) {
            spec.activation = MW_ACT_RELU;
            spec.layernorm = 0;
            spec.inputs = 64; /* residual on layer 0 too */
        }
        mw_model_t *m = mwt_model_make(&spec, "cut.safetensors");
        const int L = mw_model_num_layers(m);
        const size_t rows = 24;
        float *x = mwt_random_rows(rows, spec.inputs, 42);
        float *whole = malloc(rows * 10 * sizeof(float));
        float *staged = malloc(rows * 10 * sizeof(float));
        const int batches[] = {1, 3, 8};
        for (int bi = 0; bi < 3; bi++) {
            mw_layer_range_t all = {0, L};
            run_staged(m, &all, 1, x, rows, batches[bi], whole);
            for (unsigned cuts = 0; cuts < 1u << (L - 1); cuts++) {
                mw_layer_range_t r[16];
                int count = 0, first = 0;
                for (int b = 1; b <= L; b++) {
                    if (b == L || (cuts >> (b - 1) & 1)) {
                        r[count].first = first;
                        r[count++].last = b;
                        first = b;
                    }
                }
                memset(staged, 0xff, rows * 10 * sizeof(float));
                run_staged(m, r, count, x, rows, batches[bi], staged);
                if (memcmp(whole, staged, rows * 10 * sizeof(float)) != 0) {
                    char text[128];
                    mw_layer_ranges_format(r, count, text, sizeof(text));
                    fail_msg("variant %d batch %d: stages %s differ from the whole model", variant,
                             batches[bi], text);
                }
            }
            for (int k = 1; k <= L; k++) {
                mw_layer_range_t r[16];
                char err[128];
                assert_int_equal(mw_model_split(m, k, r, err, sizeof(err)), MW_OK);
                run_staged(m, r, k, x, rows, batches[bi], staged);
                assert_memory_equal(whole, staged, rows * 10 * sizeof(float));
            }
        }
        free(x);
        free(whole);
        free(staged);
        mw_model_destroy(m);
    }
}

/* A request's output may not depend on what shares its batch: every row of a
 * batch of B rows, whatever its position, is bit-identical to that row computed
 * alone. Shapes: the model `make run` serves, then widths that are not multiples
 * of a vector, with layer norm and residuals. */
static void batched_rows_are_bit_identical_to_each_row_alone(void **state)
{
    (void)state;
    static const mw_model_spec_t specs[] = {
        {.layers = 6,
         .inputs = 64,
         .hidden = 256,
         .outputs = 10,
         .seed = 7,
         .activation = MW_ACT_GELU},
        {.layers = 4,
         .inputs = 13,
         .hidden = 37,
         .outputs = 5,
         .seed = 11,
         .activation = MW_ACT_RELU,
         .layernorm = 1,
         .residual = 1},
        {.layers = 3,
         .inputs = 100,
         .hidden = 200,
         .outputs = 3,
         .seed = 12,
         .activation = MW_ACT_GELU,
         .layernorm = 1,
         .residual = 1},
        {.layers = 2,
         .inputs = 1,
         .hidden = 1031,
         .outputs = 1,
         .seed = 13,
         .activation = MW_ACT_NONE},
    };
    const int batches[] = {1, 2, 3, 7, 16, 64, 256};
    const int rows = 256;
    char err[256];
    for (size_t v = 0; v < sizeof(specs) / sizeof(specs[0]); v++) {
        mw_model_t *m = mwt_model_make(&specs[v], "batch.safetensors");
        const int L = mw_model_num_layers(m), in_f = specs[v].inputs, out_f = specs[v].outputs;
        mw_stage_t *st;
        if (mw_stage_new(m, 0, L, rows, -1, &st, err, sizeof(err)) != MW_OK)
            fail_msg("stage: %s", err);
        float *x = mwt_random_rows((size_t)rows, in_f, 100 + v);
        float *alone = malloc((size_t)rows * (size_t)out_f * sizeof(float));
        float *batched = malloc((size_t)rows * (size_t)out_f * sizeof(float));
        for (int r = 0; r < rows; r++)
            assert_int_equal(mw_stage_forward(st, x + (size_t)r * (size_t)in_f, 1,
                                              alone + (size_t)r * (size_t)out_f),
                             MW_OK);
        for (size_t bi = 0; bi < sizeof(batches) / sizeof(batches[0]); bi++) {
            const int b = batches[bi];
            for (int r = 0; r < rows; r += b) {
                const int n = rows - r < b ? rows - r : b;
                assert_int_equal(mw_stage_forward(st, x + (size_t)r * (size_t)in_f, n,
                                                  batched + (size_t)r * (size_t)out_f),
                                 MW_OK);
            }
            for (int r = 0; r < rows; r++)
                if (memcmp(alone + (size_t)r * (size_t)out_f, batched + (size_t)r * (size_t)out_f,
                           (size_t)out_f * sizeof(float)) != 0)
                    fail_msg("model %zu (%d layers, %d -> %d -> %d), batch %d: row %d (position "
                             "%d) differs from the row alone",
                             v, L, in_f, specs[v].hidden, out_f, b, r, r % b);
        }
        free(x);
        free(alone);
        free(batched);
        mw_stage_destroy(st);
        mw_model_destroy(m);
    }
}

/* A fleet of mixed CPUs gives the same outputs: every layer-product kernel
 * this CPU has (AVX-512, AVX2, portable) gives the portable kernel's bits, on
 * rows 1 to 9 and 64 (tiles and lone rows), widths that are not multiples of
 * a vector or of a tile, and values of both signs including zeros (a padded
 * lane may turn -0 into +0: every kernel must do so alike). */
static void every_cpu_kernel_gives_the_same_bits(void **state)
{
    (void)state;
    static const int shapes[][2] = {{64, 256}, {256, 10}, {13, 37}, {1, 1031},
                                    {100, 3},  {8, 8},    {9, 25},  {1, 1}};
    static const int rows[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 64};
    int tried = 0;
    for (size_t sh = 0; sh < sizeof(shapes) / sizeof(shapes[0]); sh++) {
        const int in = shapes[sh][0], out = shapes[sh][1];
        float *w = mwt_random_rows((size_t)out, in, 500 + sh);
        float *a = mwt_random_rows(64, in, 600 + sh);
        for (int i = 0; i < in; i += 5) /* zeros of both signs */
            a[i] = (i / 5) % 2 ? -0.0f : 0.0f;
        float *want = malloc((size_t)64 * (size_t)out * sizeof(float));
        float *got = malloc((size_t)64 * (size_t)out * sizeof(float));
        assert_non_null(want);
        assert_non_null(got);
        const int portable = mw_cpu_kernel_count() - 1;
        assert_string_equal(mw_cpu_kernel_name(portable), "portable");
        for (size_t ri = 0; ri < sizeof(rows) / sizeof(rows[0]); ri++) {
            mw_cpu_kernel_matmul(portable, a, rows[ri], w, in, out, want);
            for (int k = 0; k < portable; k++) {
                if (mw_cpu_kernel_name(k) == NULL)
                    continue;
                tried++;
                mw_cpu_kernel_matmul(k, a, rows[ri], w, in, out, got);
                for (int e = 0; e < rows[ri] * out; e++)
                    if (memcmp(&got[e], &want[e], sizeof(float)) != 0)
                        fail_msg("kernel %s, [%d x %d] x [%d x %d]: element %d is %a, portable %a",
                                 mw_cpu_kernel_name(k), rows[ri], in, out, in, e, (double)got[e],
                                 (double)want[e]);
            }
        }
        free(want);
        free(got);
        free(a);
        free(w);
    }
    if (tried == 0)
        print_message("only the portable kernel on this CPU: nothing to compare\n");
}

/* GELU's vector kernels give the portable kernel's bits, on a sweep of
 * values, tails, zeros of both signs, denormals and infinities, at lengths
 * that leave remainders for the narrower kernels; and the portable GELU is
 * within 1e-6 of the exact GELU (relative to max(1, |GELU|)), as the README
 * says. */
static void every_cpu_kernel_gives_the_same_gelu_and_it_is_within_1e_6(void **state)
{
    (void)state;
    enum { N = 20000 + 23 };
    static const float special[] = {0.0f,   -0.0f,     1e-38f, -1e-38f, 1e-45f,   -1e-45f,
                                    3.99f,  -3.99f,    4.0f,   -4.0f,   5.6523f,  -5.6523f,
                                    100.0f, -100.0f,   1e30f,  -1e30f,  INFINITY, -INFINITY,
                                    0.5f,   -0.70711f, 1.0f,   -1.0f,   2.5f};
    float *x = malloc(N * sizeof(float)), *bias = calloc(N, sizeof(float));
    float *want = malloc(N * sizeof(float)), *got = malloc(N * sizeof(float));
    assert_true(x && bias && want && got);
    for (int i = 0; i < N; i++) /* -12 .. 12, then the specials */
        x[i] = i < N - 23 ? -12.0f + 24.0f * (float)i / (float)(N - 23) : special[i - (N - 23)];
    const int portable = mw_cpu_kernel_count() - 1;
    memcpy(want, x, N * sizeof(float));
    mw_cpu_kernel_gelu(portable, want, bias, N);
    for (int k = 0; k < portable; k++) {
        if (mw_cpu_kernel_name(k) == NULL)
            continue;
        for (int n = N - 17; n <= N; n += 17) { /* remainders of 16 and 8 */
            memcpy(got, x, N * sizeof(float));
            mw_cpu_kernel_gelu(k, got, bias, n);
            for (int i = 0; i < n; i++)
                if (memcmp(&got[i], &want[i], sizeof(float)) != 0 &&
                    !(isnan(got[i]) && isnan(want[i])))
                    fail_msg("kernel %s: GELU(%a) is %a, portable %a", mw_cpu_kernel_name(k),
                             (double)x[i], (double)got[i], (double)want[i]);
        }
    }
    double worst = 0;
    for (int i = 0; i < N - 23; i++) {
        const double v = x[i], exact = 0.5 * v * (1 + erf(v / sqrt(2.0)));
        const double err = fabs(want[i] - exact) / fmax(1.0, fabs(exact));
        worst = err > worst ? err : worst;
    }
    assert_true(worst <= 1e-6);
    assert_true(want[N - 23 + 16] == INFINITY && isnan(want[N - 23 + 17])); /* as 0.5 v (1 + erf) */
    free(x);
    free(bias);
    free(want);
    free(got);
}

/* Each stage's cost is within one (largest) layer of total/k. */
static void check_balanced(const uint64_t *cost, int n, int k)
{
    mw_layer_range_t r[64];
    assert_int_equal(mw_layer_ranges_split(cost, n, k, r), MW_OK);
    uint64_t total = 0, max = 0;
    for (int i = 0; i < n; i++) {
        total += cost[i];
        max = cost[i] > max ? cost[i] : max;
    }
    assert_int_equal(r[0].first, 0);
    assert_int_equal(r[k - 1].last, n);
    for (int s = 0; s < k; s++) {
        assert_true(r[s].first < r[s].last);
        if (s > 0)
            assert_int_equal(r[s].first, r[s - 1].last);
        uint64_t c = 0;
        for (int i = r[s].first; i < r[s].last; i++)
            c += cost[i];
        double dev = fabs((double)c - (double)total / k);
        if (dev > (double)max)
            fail_msg("n %d k %d: stage %d costs %llu, ideal %.1f, largest layer %llu", n, k, s,
                     (unsigned long long)c, (double)total / k, (unsigned long long)max);
    }
}

static void auto_split_balances_flops_within_one_layer(void **state)
{
    (void)state;
    uint64_t cost[48];
    for (int n = 1; n <= 48; n++) {
        for (int i = 0; i < n; i++)
            cost[i] = 1000;
        for (int k = 1; k <= n; k++)
            check_balanced(cost, n, k);
    }
    /* The reference model's shape: a small first and last layer. */
    mw_model_spec_t spec = small_spec;
    spec.layers = 12;
    mw_model_t *m = mwt_model_make(&spec, "split.safetensors");
    for (int k = 1; k <= 12; k++) {
        mw_layer_range_t r[12];
        char err[128];
        assert_int_equal(mw_model_split(m, k, r, err, sizeof(err)), MW_OK);
        for (int i = 0; i < 12; i++)
            cost[i] = mw_model_flops(m, i, i + 1);
        check_balanced(cost, 12, k);
    }
    mw_layer_range_t r[13];
    char err[128];
    assert_int_equal(mw_model_split(m, 13, r, err, sizeof(err)), MW_EINVAL);
    assert_non_null(strstr(err, "13 stages"));
    assert_int_equal(mw_model_split(m, 0, r, err, sizeof(err)), MW_EINVAL);
    mw_model_destroy(m);

    /* Random widths, wherever total/k exceeds the largest layer. */
    uint64_t seed = 1;
    for (int trial = 0; trial < 500; trial++) {
        int n = 2 + trial % 40;
        uint64_t total = 0, max = 0;
        for (int i = 0; i < n; i++) {
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            uint64_t w1 = 16 + (seed >> 33) % 1024, w2 = 16 + (seed >> 13) % 1024;
            cost[i] = 2 * w1 * w2;
            total += cost[i];
            max = cost[i] > max ? cost[i] : max;
        }
        for (int k = 1; k <= n && total / (uint64_t)k > max; k++)
            check_balanced(cost, n, k);
    }
}

static void layer_ranges_parse_accepts_contiguous_lists_and_names_mistakes(void **state)
{
    (void)state;
    mw_layer_range_t r[8];
    int n;
    char err[256], text[64];
    assert_int_equal(mw_layer_ranges_parse("0:3,3:6", 6, 1, r, 8, &n, err, sizeof(err)), MW_OK);
    assert_int_equal(n, 2);
    assert_int_equal(r[1].first, 3);
    assert_int_equal(r[1].last, 6);
    mw_layer_ranges_format(r, n, text, sizeof(text));
    assert_string_equal(text, "0:3,3:6");
    assert_int_equal(mw_layer_ranges_parse("2:4", 6, 0, r, 8, &n, err, sizeof(err)), MW_OK);
    assert_int_equal(mw_layer_ranges_parse("2:4", 6, 1, r, 8, &n, err, sizeof(err)), MW_EINVAL);
    assert_non_null(strstr(err, "must cover"));
    static const struct {
        const char *text, *msg;
    } bad[] = {
        {"0:2,3:6", "gap before layer 2"},
        {"0:4,3:6", "overlap at layer 3"},
        {"0:7", "past the model's 6 layers"},
        {"3:3", "is empty"},
        {"0-3", "expected FIRST:LAST"},
        {"0:3,", "expected FIRST:LAST"},
        {"", "expected FIRST:LAST"},
        {"0:3 ,3:6", "expected FIRST:LAST"},
        {"0:1,1:2,2:3,3:4,4:5,5:6", "more than 4"},
        {"0:99999999999", "expected"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        assert_int_equal(mw_layer_ranges_parse(bad[i].text, 6, 0, r, 4, &n, err, sizeof(err)),
                         MW_EINVAL);
        if (strstr(err, bad[i].msg) == NULL)
            fail_msg("'%s': message '%s' lacks '%s'", bad[i].text, err, bad[i].msg);
    }
}

/* A model file from explicit tensors (values 0.5) and metadata pairs. */
static int open_custom(const mw_st_entry_t *e, size_t n, const char *const *meta, size_t n_meta,
                       char *err, size_t err_size)
{
    static float data[4096];
    for (size_t i = 0; i < 4096; i++)
        data[i] = 0.5f;
    mw_st_entry_t copy[16];
    for (size_t i = 0; i < n; i++) {
        copy[i] = e[i];
        copy[i].data = data;
    }
    const char *path = mwt_tmp_path("custom.safetensors");
    assert_int_equal(mw_safetensors_write(path, copy, n, meta, n_meta, err, err_size), MW_OK);
    mw_model_t *m = NULL;
    int rc = mw_model_open(path, &m, err, err_size);
    mw_model_destroy(m);
    return rc;
}

#define F32(name, ...)                                                                             \
    {                                                                                              \
        name, {MW_DTYPE_F32, sizeof((int64_t[]){__VA_ARGS__}) / 8, {__VA_ARGS__}}, NULL            \
    }

static void malformed_models_are_rejected_with_the_tensor_named(void **state)
{
    (void)state;
    char err[512];
    const mw_st_entry_t good[] = {F32("layers.0.weight", 4, 3), F32("layers.0.bias", 4),
                                  F32("layers.1.weight", 2, 4), F32("layers.1.bias", 2)};
    assert_int_equal(open_custom(good, 4, NULL, 0, err, sizeof(err)), MW_OK);
    static const struct {
        mw_st_entry_t e[4];
        const char *meta[4];
        const char *want1, *want2;
    } cases[] = {
        {{F32("layers.0.weight", 4, 3), F32("layers.0.bias", 4), F32("layers.1.weight", 2, 5),
          F32("layers.1.bias", 2)},
         {NULL},
         "'layers.1.weight' has 5 inputs",
         "layer 0 has 4 outputs"},
        {{F32("layers.0.weight", 4, 3), F32("layers.0.bias", 3), F32("x", 1), F32("y", 1)},
         {NULL},
         "'layers.0.bias' has shape [3]",
         "expected [4]"},
        {{F32("layers.0.weight", 12), F32("layers.0.bias", 4), F32("x", 1), F32("y", 1)},
         {NULL},
         "'layers.0.weight' has shape [12]",
         "[out, in]"},
        {{F32("layers.0.weight", 4, 3), F32("x", 1), F32("y", 1), F32("z", 1)},
         {NULL},
         "'layers.0.bias' is missing",
         NULL},
        {{F32("weight", 4, 3), F32("x", 1), F32("y", 1), F32("z", 1)},
         {NULL},
         "no tensor 'layers.0.weight'",
         NULL},
        {{F32("layers.0.weight", 4, 3), F32("layers.0.bias", 4), F32("layers.0.ln.gamma", 3),
          F32("y", 1)},
         {NULL},
         "'layers.0.ln.gamma' needs 'layers.0.ln.beta'",
         NULL},
        {{F32("layers.0.weight", 4, 3), F32("layers.0.bias", 4), F32("layers.0.ln.gamma", 4),
          F32("layers.0.ln.beta", 4)},
         {NULL},
         "'layers.0.ln.gamma' has shape [4]",
         "expected [3]"},
        {{F32("layers.0.weight", 4, 3), F32("layers.0.bias", 4), F32("x", 1), F32("y", 1)},
         {"layers.0.activation", "swish"},
         "'layers.0.activation' is 'swish'",
         "none, relu or gelu"},
        {{F32("layers.0.weight", 4, 3), F32("layers.0.bias", 4), F32("x", 1), F32("y", 1)},
         {"layers.0.residual", "true"},
         "maps 3 to 4 features",
         "in == out"},
        {{F32("layers.0.weight", 4, 3), F32("layers.0.bias", 4), F32("x", 1), F32("y", 1)},
         {"layers.0.residual", "maybe"},
         "'layers.0.residual' is 'maybe'",
         NULL},
        {{F32("layers.0.weight", 4, 3), F32("layers.0.bias", 4), F32("x", 1), F32("y", 1)},
         {"layers", "2"},
         "metadata 'layers' is '2'",
         "'layers.1.weight' is missing"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        err[0] = '\0';
        size_t n_meta = cases[i].meta[0] ? 1 : 0;
        assert_int_equal(open_custom(cases[i].e, 4, cases[i].meta, n_meta, err, sizeof(err)),
                         MW_EINVAL);
        if (strstr(err, cases[i].want1) == NULL ||
            (cases[i].want2 && strstr(err, cases[i].want2) == NULL))
            fail_msg("case %zu: message '%s' lacks '%s' / '%s'", i, err, cases[i].want1,
                     cases[i].want2 ? cases[i].want2 : "");
    }

    /* Wrong dtype, and F32 data that is not 4-byte aligned. */
    static const char f16[] =
        "{\"layers.0.weight\":{\"dtype\":\"F16\",\"shape\":[1,1],\"data_offsets\":[0,2]},"
        "\"layers.0.bias\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}";
    static const char misaligned[] =
        "{\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[1,1],\"data_offsets\":[2,6]},"
        "\"layers.0.bias\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}";
    const char *const hdrs[] = {f16, misaligned};
    const char *const wants[] = {"'layers.0.weight' is F16", "not 4-byte aligned"};
    for (int i = 0; i < 2; i++) {
        size_t hlen = strlen(hdrs[i]), padded = (hlen + 7) / 8 * 8;
        _Alignas(8) unsigned char buf[512];
        memset(buf, ' ', sizeof(buf));
        for (int b = 0; b < 8; b++)
            buf[b] = (unsigned char)(padded >> (8 * b));
        memcpy(buf + 8, hdrs[i], hlen);
        mw_safetensors_t *st;
        assert_int_equal(mw_safetensors_parse(buf, 8 + padded + 12, &st, err, sizeof(err)), MW_OK);
        mw_model_t *m = NULL;
        assert_int_equal(mw_model_from_safetensors(st, &m, err, sizeof(err)), MW_EINVAL);
        assert_null(m);
        if (strstr(err, wants[i]) == NULL)
            fail_msg("message '%s' lacks '%s'", err, wants[i]);
    }
}

static void stage_rejects_bad_ranges_batches_and_shapes(void **state)
{
    (void)state;
    char err[256];
    mw_model_t *m = mwt_model_make(&small_spec, "shapes.safetensors");
    mw_stage_t *st = NULL;
    assert_int_equal(mw_stage_new(m, 2, 2, 4, -1, &st, err, sizeof(err)), MW_EINVAL);
    assert_non_null(strstr(err, "2:2"));
    assert_int_equal(mw_stage_new(m, 0, 7, 4, -1, &st, err, sizeof(err)), MW_EINVAL);
    assert_int_equal(mw_stage_new(m, 0, 6, 0, -1, &st, err, sizeof(err)), MW_EINVAL);
#ifndef MW_HAVE_CUBLAS
    assert_int_equal(mw_stage_new(m, 0, 6, 4, 0, &st, err, sizeof(err)), MW_EUNAVAIL);
    assert_non_null(strstr(err, "without CUDA"));
#endif
    assert_null(st);
    assert_int_equal(mw_stage_new(m, 1, 4, 6, -1, &st, err, sizeof(err)), MW_OK);
    assert_string_equal(mw_stage_kind(st), "cpu");
    mw_stage_info_t info;
    mw_stage_get_info(st, &info);
    assert_int_equal(info.first_layer, 1);
    assert_int_equal(info.last_layer, 4);
    assert_int_equal(info.in_features, 64);
    assert_int_equal(info.out_features, 64);

    float *x = mwt_random_rows(7, 64, 9), *y = malloc(7 * 64 * sizeof(float));
    assert_int_equal(mw_stage_forward(st, x, 7, y), MW_EINVAL);
    assert_int_equal(mw_stage_forward(st, x, 0, y), MW_EINVAL);
    assert_int_equal(mw_stage_forward(st, x, 6, y), MW_OK);

    /* mw_stage_run: [2, 3, 64] is 6 rows, the same numbers as forward. */
    mw_tensor_desc_t in = {MW_DTYPE_F32, 3, {2, 3, 64}}, out;
    const void *res;
    assert_int_equal(mw_stage_run(st, &in, x, &out, &res, err, sizeof(err)), MW_OK);
    assert_int_equal(out.ndim, 3);
    assert_int_equal(out.shape[0], 2);
    assert_int_equal(out.shape[2], 64);
    assert_memory_equal(res, y, 6 * 64 * sizeof(float));
    /* An input that is not aligned for f32 (a record's value) gives the same. */
    unsigned char *odd = malloc(6 * 64 * sizeof(float) + 1);
    memcpy(odd + 1, x, 6 * 64 * sizeof(float));
    assert_int_equal(mw_stage_run(st, &in, odd + 1, &out, &res, err, sizeof(err)), MW_OK);
    assert_memory_equal(res, y, 6 * 64 * sizeof(float));
    free(odd);
    in.shape[0] = 3; /* 9 rows */
    assert_int_equal(mw_stage_run(st, &in, x, &out, &res, err, sizeof(err)), MW_ETOOBIG);
    assert_non_null(strstr(err, "9 rows"));
    in.shape[2] = 16;
    in.shape[0] = 1;
    assert_int_equal(mw_stage_run(st, &in, x, &out, &res, err, sizeof(err)), MW_EINVAL);
    assert_non_null(strstr(err, "[1,3,16]"));
    in.dtype = MW_DTYPE_F16;
    assert_int_equal(mw_stage_run(st, &in, x, &out, &res, err, sizeof(err)), MW_EINVAL);
    assert_non_null(strstr(err, "f16"));
    free(x);
    free(y);
    mw_stage_destroy(st);
    mw_stage_destroy(NULL);
    mw_model_destroy(m);
}

static int mwctl(const mw_config_t *cfg, const char *line)
{
    char buf[2048], *argv[32];
    int argc = 0;
    snprintf(buf, sizeof(buf), "%s", line);
    for (char *t = strtok(buf, " "); t != NULL && argc < 31; t = strtok(NULL, " "))
        argv[argc++] = t;
    argv[argc] = NULL;
    return mwctl_model(argc, argv, cfg);
}

static void mwctl_model_run_is_the_oracle_at_any_cut(void **state)
{
    (void)state;
    mw_config_t cfg;
    mw_config_init(&cfg);
    char cmd[2048];
    char model[512];
    snprintf(model, sizeof(model), "%s", mwt_tmp_path("cli.safetensors"));
    snprintf(cmd, sizeof(cmd),
             "model init --layers 6 --hidden 64 --inputs 16 --outputs 10 --seed 7 "
             "--activation=gelu --layernorm --residual -o %s",
             model);
    assert_int_equal(mwctl(&cfg, cmd), 0);
    /* The same file as the library writes for the same spec. */
    char err[256];
    assert_int_equal(
        mw_model_generate(&small_spec, mwt_tmp_path("lib.safetensors"), err, sizeof(err)), MW_OK);
    size_t la, lb;
    unsigned char *a = slurp(model, &la), *b = slurp(mwt_tmp_path("lib.safetensors"), &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(a, b, la);
    free(a);
    free(b);

    const size_t rows = 10;
    float *x = mwt_random_rows(rows, 16, 5);
    FILE *f = fopen(mwt_tmp_path("x.bin"), "wb");
    assert_int_equal(fwrite(x, sizeof(float), rows * 16, f), rows * 16);
    fclose(f);

    const char *variants[] = {"", "--stages 3", "--layers 0:1,1:5,5:6", "--stages=6"};
    unsigned char *first = NULL;
    for (int v = 0; v < 4; v++) {
        snprintf(cmd, sizeof(cmd), "model run --model %s --input %s --output %s --batch 4 %s",
                 model, mwt_tmp_path("x.bin"), mwt_tmp_path("y.bin"), variants[v]);
        assert_int_equal(mwctl(&cfg, cmd), 0);
        size_t len;
        unsigned char *y = slurp(mwt_tmp_path("y.bin"), &len);
        assert_int_equal(len, rows * 10 * sizeof(float));
        if (first == NULL)
            first = y;
        else {
            assert_memory_equal(first, y, len);
            free(y);
        }
    }
    /* And the library at the same batch size. */
    mw_model_t *m = mwt_model_make(&small_spec, "lib2.safetensors");
    float *want = malloc(rows * 10 * sizeof(float));
    mw_layer_range_t all = {0, 6};
    run_staged(m, &all, 1, x, rows, 4, want);
    assert_memory_equal(first, want, rows * 10 * sizeof(float));
    /* Default batch: all rows at once. */
    snprintf(cmd, sizeof(cmd), "model run --model %s --input %s --output %s", model,
             mwt_tmp_path("x.bin"), mwt_tmp_path("y.bin"));
    assert_int_equal(mwctl(&cfg, cmd), 0);
    run_staged(m, &all, 1, x, rows, (int)rows, want);
    size_t len;
    unsigned char *y = slurp(mwt_tmp_path("y.bin"), &len);
    assert_memory_equal(y, want, len);
    free(y);

    /* Part of the model: layers 2:4 take and give 64 features. */
    float *h = mwt_random_rows(3, 64, 8);
    f = fopen(mwt_tmp_path("h.bin"), "wb");
    assert_int_equal(fwrite(h, sizeof(float), 3 * 64, f), 3 * 64);
    fclose(f);
    snprintf(cmd, sizeof(cmd), "model run --model %s --input %s --output %s --layers 2:4", model,
             mwt_tmp_path("h.bin"), mwt_tmp_path("hy.bin"));
    assert_int_equal(mwctl(&cfg, cmd), 0);
    y = slurp(mwt_tmp_path("hy.bin"), &len);
    assert_int_equal(len, 3 * 64 * sizeof(float));
    free(y);
    free(h);

    /* Mistakes: exit status 2 for usage, 1 for bad files. */
    snprintf(cmd, sizeof(cmd), "model run --model %s --input %s --output %s --layers 2:4", model,
             mwt_tmp_path("x.bin"), mwt_tmp_path("y.bin"));
    assert_int_equal(mwctl(&cfg, cmd), 1); /* 16-float rows, 640 bytes: not 64-float rows */
    snprintf(cmd, sizeof(cmd), "model run --model %s --input %s --output %s --stages 7", model,
             mwt_tmp_path("x.bin"), mwt_tmp_path("y.bin"));
    assert_int_equal(mwctl(&cfg, cmd), 2);
    snprintf(cmd, sizeof(cmd),
             "model run --model %s --input %s --output %s --stages 2 "
             "--layers 0:6",
             model, mwt_tmp_path("x.bin"), mwt_tmp_path("y.bin"));
    assert_int_equal(mwctl(&cfg, cmd), 2);
    snprintf(cmd, sizeof(cmd), "model run --model %s --input %s", mwt_tmp_path("x.bin"),
             mwt_tmp_path("x.bin"));
    assert_int_equal(mwctl(&cfg, cmd), 2);
    snprintf(cmd, sizeof(cmd), "model run --model %s --input %s --output %s", mwt_tmp_path("x.bin"),
             mwt_tmp_path("x.bin"), mwt_tmp_path("y.bin"));
    assert_int_equal(mwctl(&cfg, cmd), 1);
    assert_int_equal(mwctl(&cfg, "model init --layers 0 -o /dev/null"), 2);
    assert_int_equal(mwctl(&cfg, "model init --bogus -o x"), 2);
    assert_int_equal(mwctl(&cfg, "model init --activation swish -o x"), 2);
    assert_int_equal(mwctl(&cfg, "model frobnicate"), 2);
    snprintf(cmd, sizeof(cmd), "model info --model %s --stages 3", model);
    assert_int_equal(mwctl(&cfg, cmd), 0);

    free(first);
    free(want);
    free(x);
    mw_model_destroy(m);
    mw_config_fini(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(generated_model_is_deterministic_for_a_seed),
        cmocka_unit_test(forward_matches_a_naive_double_precision_reference),
        cmocka_unit_test(every_cut_into_stages_is_bit_identical_to_the_whole_model),
        cmocka_unit_test(batched_rows_are_bit_identical_to_each_row_alone),
        cmocka_unit_test(every_cpu_kernel_gives_the_same_bits),
        cmocka_unit_test(every_cpu_kernel_gives_the_same_gelu_and_it_is_within_1e_6),
        cmocka_unit_test(auto_split_balances_flops_within_one_layer),
        cmocka_unit_test(layer_ranges_parse_accepts_contiguous_lists_and_names_mistakes),
        cmocka_unit_test(malformed_models_are_rejected_with_the_tensor_named),
        cmocka_unit_test(stage_rejects_bad_ranges_batches_and_shapes),
        cmocka_unit_test(mwctl_model_run_is_the_oracle_at_any_cut),
    };
    return cmocka_run_group_tests(tests, mwt_files_setup, mwt_files_teardown);
}
