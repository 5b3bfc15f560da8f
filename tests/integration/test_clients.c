/* A client we did not write against a real pipeline: ops/examples/mw_client.py
 * (confluent-kafka and numpy, the README's Python example made complete) sends
 * requests and reads their results; each must equal the reference model's
 * output bit for bit. The interpreter is $MWTEST_PYTHON, default
 * /usr/bin/python3 (where Debian's python3-confluent-kafka is installed). */
#include "cjson/cJSON.h"
#include "harness.h"
#include "mwt_pipeline.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#define N_REQUESTS 40

static void python_client_gets_the_reference_output_for_each_request(void **state)
{
    mwt_pipeline_t *p = mwt_pipeline_new("py", 2, 4, 1, NULL);
    *state = p; /* killed by mwt_pipeline_teardown() even when the test fails */
    mwt_pipeline_worker(p, 0, "py-s0");
    mwt_pipeline_worker(p, 1, "py-s1");
    float *expected = mwt_pipeline_reference(p, N_REQUESTS);

    char input[256];
    snprintf(input, sizeof(input), "%s/py-input-%d.f32", getenv("MWTEST_DIR"), (int)getpid());
    FILE *f = fopen(input, "wb");
    assert_non_null(f);
    for (int i = 0; i < N_REQUESTS; i++) {
        float x[16];
        mwt_request_input(i, x);
        assert_int_equal(fwrite(x, sizeof(x), 1, f), 1);
    }
    fclose(f);

    const char *python = getenv("MWTEST_PYTHON") ? getenv("MWTEST_PYTHON") : "/usr/bin/python3";
    char cmd[2048];
    snprintf(cmd, sizeof(cmd),
             "%s %s/ops/examples/mw_client.py --bootstrap %s --pipeline %s --shape 1,16 "
             "--input %s --id-prefix py- --timeout-s %lld",
             python, getenv("MWTEST_ROOT"), getenv("MWTEST_KAFKA_BOOTSTRAP"), p->name, input,
             (long long)mwt_scaled(90000) / 1000);
    static char out[1 << 20];
    int rc = mwt_run(cmd, out, sizeof(out));
    unlink(input);
    if (rc != 0)
        fail_msg("mw_client.py exited with %d; its output:\n%s", rc, out);

    int seen[N_REQUESTS] = {0}, lines = 0;
    for (char *line = strtok(out, "\n"); line != NULL; line = strtok(NULL, "\n"), lines++) {
        cJSON *j = cJSON_Parse(line);
        if (j == NULL)
            fail_msg("not a JSON line: %s", line);
        const char *id = cJSON_GetStringValue(cJSON_GetObjectItem(j, "id"));
        const char *status = cJSON_GetStringValue(cJSON_GetObjectItem(j, "status"));
        cJSON *values = cJSON_GetObjectItem(j, "values");
        int i = id != NULL && strncmp(id, "py-", 3) == 0 ? atoi(id + 3) : -1;
        if (i < 0 || i >= N_REQUESTS || status == NULL || strcmp(status, "ok") != 0 ||
            cJSON_GetArraySize(values) != p->out_features)
            fail_msg("unexpected result line: %s", line);
        seen[i]++;
        for (int k = 0; k < p->out_features; k++) {
            float got = (float)cJSON_GetArrayItem(values, k)->valuedouble;
            if (memcmp(&got, &expected[i * p->out_features + k], sizeof(got)) != 0)
                fail_msg("%s value %d: %.9g, the reference gives %.9g", id, k, got,
                         expected[i * p->out_features + k]);
        }
        cJSON_Delete(j);
    }
    assert_int_equal(lines, N_REQUESTS);
    for (int i = 0; i < N_REQUESTS; i++)
        assert_int_equal(seen[i], 1);
    free(expected);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(python_client_gets_the_reference_output_for_each_request,
                                  mwt_pipeline_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
