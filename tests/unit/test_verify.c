/* mwctl's output verifier: bit-identical by default, within a relative
 * tolerance when asked (GPU workers), differences named by element. */
#include "err.h"
#include "model/model.h"
#include "mwt_files.h"
#include "ops/mwctl/verify.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static const mw_model_spec_t spec = {
    .layers = 3, .inputs = 8, .hidden = 16, .outputs = 4, .seed = 3, .activation = MW_ACT_GELU};

/* The reference output y[4] of input x[8], through the whole model at batch 1. */
static void reference(const char *path, const float *x, float *y)
{
    char err[256];
    mw_model_t *m = NULL;
    mw_stage_t *st = NULL;
    assert_int_equal(mw_model_open(path, &m, err, sizeof(err)), MW_OK);
    assert_int_equal(mw_stage_new(m, 0, mw_model_num_layers(m), 1, -1, &st, err, sizeof(err)),
                     MW_OK);
    assert_int_equal(mw_stage_forward(st, x, 1, y), MW_OK);
    mw_stage_destroy(st);
    mw_model_destroy(m);
}

/* Checks output y (shape [1, 4]) as the result of request "r1" with input x. */
static int check(mwctl_verifier_t *v, const float *x, const float *y, char *err, size_t size)
{
    mw_tensor_desc_t in = {.dtype = MW_DTYPE_F32, .ndim = 2, .shape = {1, 8}};
    assert_int_equal(mwctl_verifier_put(v, "r1", 2, &in, x, 8 * sizeof(float)), MW_OK);
    mw_result_t res = {.id = (const uint8_t *)"r1",
                       .id_len = 2,
                       .ok = 1,
                       .desc = {.dtype = MW_DTYPE_F32, .ndim = 2, .shape = {1, 4}},
                       .data = y,
                       .nbytes = 4 * sizeof(float)};
    return mwctl_verifier_check(v, &res, err, size);
}

static void outputs_are_bit_identical_or_within_the_tolerance_asked(void **state)
{
    (void)state;
    char err[512];
    mw_model_destroy(mwt_model_make(&spec, "m.safetensors"));
    const char *path = mwt_tmp_path("m.safetensors");
    float *x = mwt_random_rows(1, 8, 7), y[4];
    reference(path, x, y);
    mwctl_verifier_t *v = NULL;
    assert_int_equal(mwctl_verifier_new(path, 256, &v, err, sizeof(err)), MW_OK);
    assert_string_equal(mwctl_verifier_criterion(v), "bit-identical to");

    /* The reference itself; then off by one part in a million (a GPU's last bits). */
    assert_int_equal(check(v, x, y, err, sizeof(err)), MW_OK);
    float near[4], far[4];
    memcpy(near, y, sizeof(near));
    memcpy(far, y, sizeof(far));
    near[2] = y[2] * (1 + 1e-6f) + 1e-7f;
    far[3] = y[3] * 1.01f + 0.01f;
    assert_int_equal(check(v, x, near, err, sizeof(err)), MW_EINVAL);
    assert_non_null(strstr(err, "element 2 is"));

    mwctl_verifier_set_tolerance(v, 1e-4);
    assert_string_equal(mwctl_verifier_criterion(v), "within 0.0001 of");
    assert_int_equal(check(v, x, near, err, sizeof(err)), MW_OK);
    assert_int_equal(check(v, x, far, err, sizeof(err)), MW_EINVAL);
    assert_non_null(strstr(err, "element 3 is"));

    mwctl_verify_stats_t st;
    mwctl_verifier_stats(v, &st);
    assert_int_equal(st.verified, 2);
    assert_int_equal(st.differ, 2);
    mwctl_verifier_destroy(v);
    free(x);
}

static void tolerance_must_be_a_finite_number_not_below_zero(void **state)
{
    (void)state;
    double rel = -1;
    assert_int_equal(mwctl_parse_tolerance("results", "1e-4", &rel), 0);
    assert_true(rel == 1e-4);
    assert_int_equal(mwctl_parse_tolerance("results", "0", &rel), 0);
    assert_true(rel == 0);
    static const char *const bad[] = {"", "x", "-1e-4", "nan", "inf", "1e-4x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(mwctl_parse_tolerance("results", bad[i], &rel), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(outputs_are_bit_identical_or_within_the_tolerance_asked),
        cmocka_unit_test(tolerance_must_be_a_finite_number_not_below_zero),
    };
    return cmocka_run_group_tests(tests, mwt_files_setup, mwt_files_teardown);
}
