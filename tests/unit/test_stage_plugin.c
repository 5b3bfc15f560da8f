/* Stage plug-ins: the example plug-in loads and computes; broken ones fail cleanly, named. */
#include "config.h"
#include "err.h"
#include "model/model.h"
#include "ops/mwctl/mwctl.h"
#include "model/stage_plugin.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

/* $MW_BUILD/plugins/NAME.so (tests/run.sh sets MW_BUILD; "build" otherwise). */
static const char *plugin(const char *name)
{
    static char buf[4][512];
    static int next;
    char *p = buf[next++ % 4];
    const char *build = getenv("MW_BUILD");
    snprintf(p, sizeof(buf[0]), "%s/plugins/%s.so", build && *build ? build : "build", name);
    return p;
}

static void expect_load_error(const char *name, const char *config, const char *want1,
                              const char *want2)
{
    char err[1024] = "";
    mw_stage_t *st = (mw_stage_t *)1;
    const char *path = plugin(name);
    assert_int_equal(mw_stage_plugin_new(path, config, 2, -1, &st, err, sizeof(err)), MW_EINVAL);
    assert_null(st);
    if (strstr(err, path) == NULL || strstr(err, want1) == NULL ||
        (want2 && strstr(err, want2) == NULL))
        fail_msg("message '%s' lacks the path, '%s' or '%s'", err, want1, want2 ? want2 : "");
}

static void example_plugin_loads_and_runs(void **state)
{
    (void)state;
    char err[512];
    mw_stage_t *st;
    if (mw_stage_plugin_new(plugin("example_stage"), "{\"scale\": 2.5, \"shift\": -1}", 0, -1, &st,
                            err, sizeof(err)) != MW_OK)
        fail_msg("%s", err);
    assert_string_equal(mw_stage_kind(st), "plugin");
    mw_stage_info_t info;
    mw_stage_get_info(st, &info);
    assert_int_equal(info.first_layer, -1);
    assert_int_equal(info.in_features, 0);

    float x[6] = {0, 1, 2, 3, 4, 5};
    mw_tensor_desc_t in = {MW_DTYPE_F32, 2, {2, 3}}, out;
    const void *res;
    assert_int_equal(mw_stage_run(st, &in, x, &out, &res, err, sizeof(err)), MW_OK);
    assert_int_equal(out.dtype, MW_DTYPE_F32);
    assert_int_equal(out.ndim, 2);
    assert_int_equal(out.shape[0], 2);
    assert_int_equal(out.shape[1], 3);
    const float *y = res;
    for (int i = 0; i < 6; i++)
        assert_true(y[i] == 2.5f * x[i] - 1.0f);

    /* The plug-in's own error for an input it does not take, then it carries on. */
    in.dtype = MW_DTYPE_I32;
    assert_int_equal(mw_stage_run(st, &in, x, &out, &res, err, sizeof(err)), MW_EINVAL);
    assert_non_null(strstr(err, "example_stage.so"));
    assert_non_null(strstr(err, "takes f32 host tensors"));
    in.dtype = MW_DTYPE_F32;
    assert_int_equal(mw_stage_run(st, &in, x, &out, &res, err, sizeof(err)), MW_OK);

    /* Plug-in stages have no f32 fast path. */
    assert_int_equal(mw_stage_forward(st, x, 1, (float *)x), MW_EINVAL);
    mw_stage_destroy(st);
}

static void example_plugin_defaults_follow_the_stage_index(void **state)
{
    (void)state;
    char err[512];
    mw_stage_t *a, *b;
    assert_int_equal(
        mw_stage_plugin_new(plugin("example_stage"), NULL, 2, -1, &a, err, sizeof(err)), MW_OK);
    /* Two states of the same library are independent. */
    assert_int_equal(
        mw_stage_plugin_new(plugin("example_stage"), "{}", 0, -1, &b, err, sizeof(err)), MW_OK);
    float x[1] = {4};
    mw_tensor_desc_t in = {MW_DTYPE_F32, 1, {1}}, out;
    const void *ra, *rb;
    assert_int_equal(mw_stage_run(a, &in, x, &out, &ra, err, sizeof(err)), MW_OK);
    assert_int_equal(mw_stage_run(b, &in, x, &out, &rb, err, sizeof(err)), MW_OK);
    assert_true(*(const float *)ra == 12.0f); /* scale = stage index + 1 = 3 */
    assert_true(*(const float *)rb == 4.0f);
    mw_stage_destroy(a);
    mw_stage_destroy(b);
}

static void missing_library_names_the_path(void **state)
{
    (void)state;
    expect_load_error("no_such_plugin", NULL, "cannot load", NULL);
}

static void missing_symbol_names_the_library_and_symbol(void **state)
{
    (void)state;
    expect_load_error("bad_missing_symbol", NULL, "missing symbol mw_plugin_forward", NULL);
}

static void wrong_abi_version_states_both_versions(void **state)
{
    (void)state;
    expect_load_error("bad_abi_version", NULL, "ABI version 999", "supports version 1");
}

static void failing_init_passes_the_plugin_message(void **state)
{
    (void)state;
    expect_load_error("bad_init", "{\"weights\": \"/nowhere\"}", "init failed (7)",
                      "stage 2: weights file missing in config {\"weights\": \"/nowhere\"}");
}

static void invalid_plugin_outputs_are_refused(void **state)
{
    (void)state;
    char err[512];
    mw_stage_t *st;
    assert_int_equal(mw_stage_plugin_new(plugin("bad_output"), NULL, 0, -1, &st, err, sizeof(err)),
                     MW_OK);
    static const struct {
        float mode;
        int rc;
        const char *want;
    } cases[] = {
        {0, MW_EPROTO, "unknown dtype 42"},
        {1, MW_EPROTO, "no data"},
        {2, MW_EPROTO, "dimension 0 = 0"},
        {3, MW_EPROTO, "memory of device 0"},
        {4, MW_EINVAL, "forward failed (3): cannot handle input 4"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        float x[1] = {cases[i].mode};
        mw_tensor_desc_t in = {MW_DTYPE_F32, 1, {1}}, out;
        const void *res = NULL;
        err[0] = '\0';
        assert_int_equal(mw_stage_run(st, &in, x, &out, &res, err, sizeof(err)), cases[i].rc);
        if (strstr(err, "bad_output.so") == NULL || strstr(err, cases[i].want) == NULL)
            fail_msg("case %zu: message '%s' lacks the library or '%s'", i, err, cases[i].want);
    }
    mw_stage_destroy(st);
}

static int mwctl(const char *line)
{
    char buf[2048], *argv[32];
    int argc = 0;
    snprintf(buf, sizeof(buf), "%s", line);
    for (char *t = strtok(buf, " "); t != NULL && argc < 31; t = strtok(NULL, " "))
        argv[argc++] = t;
    argv[argc] = NULL;
    mw_config_t cfg;
    mw_config_init(&cfg);
    int rc = mwctl_model(argc, argv, &cfg);
    mw_config_fini(&cfg);
    return rc;
}

static void mwctl_model_plugin_loads_checks_and_runs_a_plugin(void **state)
{
    (void)state;
    char cmd[2048], x[512], y[512];
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(x, sizeof(x), "%s/mwtest-plugin-x-%ld.bin", dir, (long)getpid());
    snprintf(y, sizeof(y), "%s/mwtest-plugin-y-%ld.bin", dir, (long)getpid());
    const float in[4] = {1, 2, 3, 4};
    FILE *f = fopen(x, "wb");
    assert_int_equal(fwrite(in, sizeof(float), 4, f), 4);
    fclose(f);

    snprintf(cmd, sizeof(cmd), "model plugin --plugin %s --stage 1", plugin("example_stage"));
    assert_int_equal(mwctl(cmd), 0);
    snprintf(cmd, sizeof(cmd),
             "model plugin --plugin %s --config {\"scale\":3} --input %s "
             "--shape 2,2 --output %s",
             plugin("example_stage"), x, y);
    assert_int_equal(mwctl(cmd), 0);
    float out[4];
    f = fopen(y, "rb");
    assert_non_null(f);
    assert_int_equal(fread(out, sizeof(float), 4, f), 4);
    fclose(f);
    for (int i = 0; i < 4; i++)
        assert_true(out[i] == 3 * in[i]);
    snprintf(cmd, sizeof(cmd), "model plugin --plugin %s --input %s --shape 3,2 --output %s",
             plugin("example_stage"), x, y);
    assert_int_equal(mwctl(cmd), 1); /* 4 values for a 6-value shape */
    snprintf(cmd, sizeof(cmd), "model plugin --plugin %s", plugin("bad_abi_version"));
    assert_int_equal(mwctl(cmd), 1);
    snprintf(cmd, sizeof(cmd), "model plugin --plugin %s --input %s", plugin("example_stage"), x);
    assert_int_equal(mwctl(cmd), 2);
    unlink(x);
    unlink(y);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(example_plugin_loads_and_runs),
        cmocka_unit_test(example_plugin_defaults_follow_the_stage_index),
        cmocka_unit_test(missing_library_names_the_path),
        cmocka_unit_test(missing_symbol_names_the_library_and_symbol),
        cmocka_unit_test(wrong_abi_version_states_both_versions),
        cmocka_unit_test(failing_init_passes_the_plugin_message),
        cmocka_unit_test(invalid_plugin_outputs_are_refused),
        cmocka_unit_test(mwctl_model_plugin_loads_checks_and_runs_a_plugin),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
