/* Clients we did not write against a real pipeline: ops/examples/mw_client.py
 * (confluent-kafka and numpy, the README's Python example made complete), on
 * P.results and on a reply topic, and the Java request-reply example
 * (ops/examples/java, kafka-clients, built with Maven) send requests and read
 * their results; each must equal the reference model's output bit for bit. The interpreter is
 * $MWTEST_PYTHON, default /usr/bin/python3 (where Debian's python3-confluent-kafka is installed).
 */
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

static const char *const reply_flags[] = {"--results.reply_topics=*.replies", NULL};

/* A 2-stage pipeline, one worker a stage, and the reference outputs of n requests. */
static mwt_pipeline_t *client_pipeline(void **state, const char *suffix, int partitions,
                                       const char *const *flags, int n, float **expected)
{
    char s0[64], s1[64];
    mwt_pipeline_t *p = mwt_pipeline_new(suffix, 2, 4, partitions, flags);
    *state = p; /* killed by mwt_pipeline_teardown() even when the test fails */
    snprintf(s0, sizeof(s0), "%s-s0", suffix);
    snprintf(s1, sizeof(s1), "%s-s1", suffix);
    mwt_pipeline_worker(p, 0, s0);
    mwt_pipeline_worker(p, 1, s1);
    *expected = mwt_pipeline_reference(p, n);
    return p;
}

/* Writes the inputs of requests [0, n) as raw f32 rows into path. */
static void write_inputs(const char *path, int n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    for (int i = 0; i < n; i++) {
        float x[16];
        mwt_request_input(i, x);
        assert_int_equal(fwrite(x, sizeof(x), 1, f), 1);
    }
    fclose(f);
}

/* Runs a client command; fails the test unless it exits 0 and prints exactly
 * one ok JSON line per request [0, n) (ids prefix + i), each equal to the
 * reference bit for bit. */
static void check_client(const mwt_pipeline_t *p, const char *cmd, const char *prefix, int n,
                         const float *expected)
{
    static char out[1 << 20];
    int rc = mwt_run(cmd, out, sizeof(out));
    if (rc != 0)
        fail_msg("%s exited with %d; its output:\n%s", cmd, rc, out);
    int *seen = calloc((size_t)n, sizeof(int)), lines = 0;
    assert_non_null(seen);
    size_t plen = strlen(prefix);
    for (char *line = strtok(out, "\n"); line != NULL; line = strtok(NULL, "\n"), lines++) {
        cJSON *j = cJSON_Parse(line);
        if (j == NULL)
            fail_msg("not a JSON line: %s", line);
        const char *id = cJSON_GetStringValue(cJSON_GetObjectItem(j, "id"));
        const char *status = cJSON_GetStringValue(cJSON_GetObjectItem(j, "status"));
        cJSON *values = cJSON_GetObjectItem(j, "values");
        int i = id != NULL && strncmp(id, prefix, plen) == 0 ? atoi(id + plen) : -1;
        if (i < 0 || i >= n || status == NULL || strcmp(status, "ok") != 0 ||
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
    assert_int_equal(lines, n);
    for (int i = 0; i < n; i++)
        assert_int_equal(seen[i], 1);
    free(seen);
}

/* mw_client.py against p, answering on P.results or, with reply_suffix, on
 * <name>.<reply_suffix>. */
static void run_python_client(const mwt_pipeline_t *p, int n, const float *expected,
                              const char *reply_suffix)
{
    char input[256], reply[200] = "", cmd[2048];
    snprintf(input, sizeof(input), "%s/py-input-%d.f32", getenv("MWTEST_DIR"), (int)getpid());
    write_inputs(input, n);
    if (reply_suffix != NULL)
        snprintf(reply, sizeof(reply), "--reply-topic %s.%s", p->name, reply_suffix);
    const char *python = getenv("MWTEST_PYTHON") ? getenv("MWTEST_PYTHON") : "/usr/bin/python3";
    snprintf(cmd, sizeof(cmd),
             "%s %s/ops/examples/mw_client.py --bootstrap %s --pipeline %s --shape 1,16 "
             "--input %s --id-prefix py- --timeout-s %lld %s",
             python, getenv("MWTEST_ROOT"), getenv("MWTEST_KAFKA_BOOTSTRAP"), p->name, input,
             (long long)mwt_scaled(90000) / 1000, reply);
    check_client(p, cmd, "py-", n, expected);
    unlink(input);
}

static void python_client_gets_the_reference_output_for_each_request(void **state)
{
    float *expected;
    mwt_pipeline_t *p = client_pipeline(state, "py", 1, NULL, 40, &expected);
    run_python_client(p, 40, expected, NULL);
    free(expected);
}

static void python_client_gets_its_replies_on_its_reply_topic(void **state)
{
    float *expected;
    mwt_pipeline_t *p = client_pipeline(state, "pyr", 2, reply_flags, 40, &expected);
    mwt_pipeline_topic(p, "replies", 2);
    run_python_client(p, 40, expected, "replies");
    free(expected);
}

/* ops/examples/java, built here with Maven (from Maven Central, or the local
 * repository), sends 1,000 requests with kafka_replyTopic and correlation ids
 * and matches the 1,000 replies. */
static void java_client_gets_1000_replies_with_their_correlation_ids(void **state)
{
    const int n = 1000;
    char dir[600], cmd[2048], input[256];
    static char out[1 << 16];
    if (mwt_run("command -v mvn >/dev/null 2>&1", NULL, 0) != 0) {
        print_message("SKIPPED: mvn is not installed; the Java example needs Maven\n");
        skip();
    }
    snprintf(dir, sizeof(dir), "%s/ops/examples/java", getenv("MWTEST_ROOT"));
    snprintf(cmd, sizeof(cmd), "mvn -q -B -f %s/pom.xml package 2>&1", dir);
    int rc = mwt_run(cmd, out, sizeof(out));
    if (rc != 0)
        fail_msg("%s exited with %d:\n%s", cmd, rc, out);

    float *expected;
    mwt_pipeline_t *p = client_pipeline(state, "jv", 2, reply_flags, n, &expected);
    mwt_pipeline_topic(p, "replies", 2);
    snprintf(input, sizeof(input), "%s/jv-input-%d.f32", getenv("MWTEST_DIR"), (int)getpid());
    write_inputs(input, n);
    snprintf(cmd, sizeof(cmd),
             "java -cp '%s/target/mw-reply-client.jar:%s/target/lib/*' "
             "io.mwserve.example.MwReplyClient --bootstrap %s --pipeline %s --reply-topic "
             "%s.replies --shape 1,16 --input %s --id-prefix jv- --timeout-s %lld",
             dir, dir, getenv("MWTEST_KAFKA_BOOTSTRAP"), p->name, p->name, input,
             (long long)mwt_scaled(90000) / 1000);
    check_client(p, cmd, "jv-", n, expected);
    unlink(input);
    free(expected);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(python_client_gets_the_reference_output_for_each_request,
                                  mwt_pipeline_teardown),
        cmocka_unit_test_teardown(python_client_gets_its_replies_on_its_reply_topic,
                                  mwt_pipeline_teardown),
        cmocka_unit_test_teardown(java_client_gets_1000_replies_with_their_correlation_ids,
                                  mwt_pipeline_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
