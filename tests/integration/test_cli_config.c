/* Every program refuses bad configuration before starting anything. */
#include "err.h"
#include "harness.h"
#include "redis.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

static const char *const programs[] = {"mwctl", "mw-worker", "mw-coordinator"};

/* Runs PROGRAM with args (and the run's Redis); expects exit code 2 and
 * `expect` in its stderr. */
static void expect_refusal(const char *program, const char *args, const char *expect)
{
    char cmd[2048], out[8192];
    snprintf(cmd, sizeof(cmd),
             "%s --redis.port=%s --cluster.name=%s %s 2>&1 >/dev/null; echo \"exit=$?\"",
             mwt_bin(program), getenv("MWTEST_REDIS_PORT"), mwt_prefix(), args);
    mwt_run(cmd, out, sizeof(out));
    if (strstr(out, expect) == NULL || strstr(out, "exit=2") == NULL)
        fail_msg("%s %s: expected exit 2 and '%s', got: %s", program, args, expect, out);
}

/* No program wrote anything under the test's cluster prefix. */
static void assert_nothing_started(void)
{
    mw_config_t cfg;
    char err[512];
    mwt_config(&cfg);
    mw_redis_t *r = mw_redis_new(&cfg, 0, err, sizeof(err));
    assert_non_null(r);
    redisReply *reply = NULL;
    assert_int_equal(mw_redis_cmd(r, &reply, "KEYS %s*", mw_redis_prefix(r)), MW_OK);
    assert_int_equal(reply->elements, 0);
    freeReplyObject(reply);
    mw_redis_destroy(r);
    mw_config_fini(&cfg);
}

static const char *write_config(const char *text)
{
    static char path[256];
    snprintf(path, sizeof(path), "%s/%s.json", getenv("MWTEST_DIR"), mwt_prefix());
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static void unknown_key_stops_every_program(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(programs) / sizeof(programs[0]); i++)
        expect_refusal(programs[i], "--redis.hots=x", "unknown configuration key 'redis.hots'");
    assert_nothing_started();
}

static void wrong_type_stops_every_program(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(programs) / sizeof(programs[0]); i++)
        expect_refusal(programs[i], "--redis.db=two", "redis.db must be an integer");
    assert_nothing_started();
}

static void out_of_range_value_stops_every_program(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(programs) / sizeof(programs[0]); i++)
        expect_refusal(programs[i], "--redis.connect_timeout_ms=1", "out of range [10, 600000]");
    assert_nothing_started();
}

static void malformed_config_file_stops_every_program_naming_the_line(void **state)
{
    (void)state;
    const char *path = write_config("{\n  \"log.level\": \"info\",\n  \"redis.db\": 0,,\n}\n");
    char args[512], expect[512];
    snprintf(args, sizeof(args), "--config=%s", path);
    snprintf(expect, sizeof(expect), "%s:3:", path);
    for (size_t i = 0; i < sizeof(programs) / sizeof(programs[0]); i++)
        expect_refusal(programs[i], args, expect);
    unlink(path);
    assert_nothing_started();
}

static void unknown_kafka_property_stops_every_program(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(programs) / sizeof(programs[0]); i++)
        expect_refusal(programs[i], "--kafka.bootstrap.srvers=x", "kafka.bootstrap.srvers");
    assert_nothing_started();
}

static void help_lists_the_keys(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(programs) / sizeof(programs[0]); i++) {
        char cmd[1024], out[65536];
        snprintf(cmd, sizeof(cmd), "%s --help 2>&1; echo \"exit=$?\"", mwt_bin(programs[i]));
        mwt_run(cmd, out, sizeof(out));
        if (strstr(out, "--redis.port=integer") == NULL || strstr(out, "exit=0") == NULL)
            fail_msg("%s --help: %s", programs[i], out);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(unknown_key_stops_every_program),
        cmocka_unit_test(wrong_type_stops_every_program),
        cmocka_unit_test(out_of_range_value_stops_every_program),
        cmocka_unit_test(malformed_config_file_stops_every_program_naming_the_line),
        cmocka_unit_test(unknown_kafka_property_stops_every_program),
        cmocka_unit_test(help_lists_the_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
