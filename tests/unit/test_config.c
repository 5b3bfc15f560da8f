/* Config: defaults, precedence (file < env < flags) and errors that name the key or line. */
#include "config.h"
#include "err.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

static char err[512];

static const char *write_file(const char *text)
{
    static char path[64];
    snprintf(path, sizeof(path), "/tmp/mw-test-config-%d.json", (int)getpid());
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

/* Runs mw_config_load on a NULL-terminated argument list. */
static int load(mw_config_t *cfg, int *argc, char **argv)
{
    *argc = 0;
    while (argv[*argc] != NULL)
        (*argc)++;
    err[0] = '\0';
    return mw_config_load(cfg, argc, argv, err, sizeof(err));
}

static void defaults_satisfy_their_own_bounds(void **state)
{
    (void)state;
    mw_config_t cfg;
    char *argv[] = {"prog", NULL};
    int argc;
    assert_int_equal(load(&cfg, &argc, argv), MW_OK);
    assert_string_equal(cfg.redis_host, "127.0.0.1");
    assert_int_equal(cfg.redis_port, 6379);
    assert_string_equal(cfg.cluster, "local");
    mw_config_fini(&cfg);
}

static void unknown_key_is_rejected_by_name(void **state)
{
    (void)state;
    mw_config_t cfg;
    char *argv[] = {"prog", "--redis.prot=6380", NULL};
    int argc;
    assert_int_equal(load(&cfg, &argc, argv), MW_EINVAL);
    assert_non_null(strstr(err, "unknown configuration key 'redis.prot'"));

    const char *path = write_file("{\"redis\": {\"hots\": \"x\"}}");
    char *argv2[] = {"prog", "--config", (char *)path, NULL};
    assert_int_equal(load(&cfg, &argc, argv2), MW_EINVAL);
    assert_non_null(strstr(err, "'redis.hots'"));
    unlink(path);
}

static void wrong_type_is_rejected_by_name(void **state)
{
    (void)state;
    mw_config_t cfg;
    char *argv[] = {"prog", "--redis.port=sixthousand", NULL};
    int argc;
    assert_int_equal(load(&cfg, &argc, argv), MW_EINVAL);
    assert_non_null(strstr(err, "redis.port must be an integer"));

    const char *path = write_file("{\"redis.port\": [1, 2]}");
    char *argv2[] = {"prog", "--config", (char *)path, NULL};
    assert_int_equal(load(&cfg, &argc, argv2), MW_EINVAL);
    assert_non_null(strstr(err, "redis.port"));
    unlink(path);

    char *argv3[] = {"prog", "--log.level=loud", NULL};
    assert_int_equal(load(&cfg, &argc, argv3), MW_EINVAL);
    assert_non_null(strstr(err, "log.level must be one of debug|info|warn|error"));
}

static void out_of_range_value_is_rejected_with_bounds(void **state)
{
    (void)state;
    mw_config_t cfg;
    char *argv[] = {"prog", "--redis.port=70000", NULL};
    int argc;
    assert_int_equal(load(&cfg, &argc, argv), MW_EINVAL);
    assert_non_null(strstr(err, "redis.port = 70000 is out of range [1, 65535]"));
}

static void malformed_file_is_rejected_with_its_line(void **state)
{
    (void)state;
    mw_config_t cfg;
    const char *path = write_file("{\n  \"redis.port\": 6380,\n  \"redis.host\" \"x\"\n}\n");
    char *argv[] = {"prog", "--config=", NULL};
    char flag[128];
    snprintf(flag, sizeof(flag), "--config=%s", path);
    argv[1] = flag;
    int argc;
    assert_int_equal(load(&cfg, &argc, argv), MW_EINVAL);
    char where[96];
    snprintf(where, sizeof(where), "%s:3:", path);
    assert_non_null(strstr(err, where));
    assert_non_null(strstr(err, "malformed JSON"));
    unlink(path);

    char *argv2[] = {"prog", "--config=/nonexistent/mw.json", NULL};
    assert_int_equal(load(&cfg, &argc, argv2), MW_EINVAL);
    assert_non_null(strstr(err, "/nonexistent/mw.json"));
}

static void flags_override_env_which_overrides_file(void **state)
{
    (void)state;
    mw_config_t cfg;
    const char *path =
        write_file("{\"redis\": {\"host\": \"file-host\", \"port\": 1000, \"db\": 3}}");
    setenv("MW_REDIS_PORT", "2000", 1);
    setenv("MW_REDIS_DB", "4", 1);
    char flag[128];
    snprintf(flag, sizeof(flag), "--config=%s", path);
    char *argv[] = {"prog", flag, "--redis.db=5", "positional", "--verbose", NULL};
    int argc;
    assert_int_equal(load(&cfg, &argc, argv), MW_OK);
    assert_string_equal(cfg.redis_host, "file-host");
    assert_int_equal(cfg.redis_port, 2000);
    assert_int_equal(cfg.redis_db, 5);
    /* Non-config arguments stay, in order, for the program. */
    assert_int_equal(argc, 3);
    assert_string_equal(argv[1], "positional");
    assert_string_equal(argv[2], "--verbose");
    assert_null(argv[3]);
    mw_config_fini(&cfg);
    unsetenv("MW_REDIS_PORT");
    unsetenv("MW_REDIS_DB");
    unlink(path);
}

static void env_error_names_the_variable(void **state)
{
    (void)state;
    mw_config_t cfg;
    setenv("MW_REDIS_PORT", "0", 1);
    char *argv[] = {"prog", NULL};
    int argc;
    assert_int_equal(load(&cfg, &argc, argv), MW_EINVAL);
    assert_non_null(strstr(err, "MW_REDIS_PORT"));
    unsetenv("MW_REDIS_PORT");
}

static void kafka_keys_pass_through_and_are_validated(void **state)
{
    (void)state;
    mw_config_t cfg;
    setenv("MW_KAFKA_SOCKET_TIMEOUT_MS", "1234", 1);
    char *argv[] = {"prog", "--kafka.bootstrap.servers=h1:9092,h2:9092", NULL};
    int argc;
    assert_int_equal(load(&cfg, &argc, argv), MW_OK);
    assert_string_equal(mw_config_kafka_get(&cfg, "bootstrap.servers"), "h1:9092,h2:9092");
    assert_string_equal(mw_config_kafka_get(&cfg, "socket.timeout.ms"), "1234");
    mw_config_fini(&cfg);
    unsetenv("MW_KAFKA_SOCKET_TIMEOUT_MS");

    char *argv2[] = {"prog", "--kafka.no.such.property=1", NULL};
    assert_int_equal(load(&cfg, &argc, argv2), MW_EINVAL);
    assert_non_null(strstr(err, "kafka.no.such.property"));
}

static void copy_owns_its_kafka_pairs(void **state)
{
    (void)state;
    mw_config_t cfg, copy;
    mw_config_init(&cfg);
    assert_int_equal(mw_config_set(&cfg, "kafka.acks", "all", "test", err, sizeof(err)), MW_OK);
    assert_int_equal(mw_config_set(&cfg, "redis.port", "6390", "test", err, sizeof(err)), MW_OK);
    assert_int_equal(mw_config_copy(&copy, &cfg, err, sizeof(err)), MW_OK);
    mw_config_fini(&cfg);
    assert_int_equal(copy.redis_port, 6390);
    assert_string_equal(mw_config_kafka_get(&copy, "acks"), "all");
    mw_config_fini(&copy);
}

static void flag_without_value_is_rejected(void **state)
{
    (void)state;
    mw_config_t cfg;
    char *argv[] = {"prog", "--redis.port", NULL};
    int argc;
    assert_int_equal(load(&cfg, &argc, argv), MW_EINVAL);
    assert_non_null(strstr(err, "--redis.port needs a value"));
}

static void help_lists_every_key_with_default(void **state)
{
    (void)state;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    mw_config_print_help(f, 1);
    fclose(f);
    assert_non_null(
        strstr(buf, "| `redis.port` | integer | `6379` | 1..65535 | `MW_REDIS_PORT` |"));
    assert_non_null(strstr(buf, "`kafka.*`"));
    free(buf);
}

/* The README's configuration table is generated from the key table (make
 * docs); a key added without regenerating it fails here. */
static void readme_table_matches_the_key_table(void **state)
{
    (void)state;
    char *table = NULL, *readme = NULL;
    size_t table_len = 0;
    FILE *f = open_memstream(&table, &table_len);
    mw_config_print_help(f, 1);
    fclose(f);
    f = fopen("README.md", "r"); /* tests run from the repository root */
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    readme = calloc(1, (size_t)n + 1);
    assert_int_equal(fread(readme, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    for (char *line = strtok(table, "\n"); line != NULL; line = strtok(NULL, "\n"))
        if (strstr(readme, line) == NULL)
            fail_msg("README.md lacks the config row '%s': run make docs", line);
    free(readme);
    free(table);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults_satisfy_their_own_bounds),
        cmocka_unit_test(unknown_key_is_rejected_by_name),
        cmocka_unit_test(wrong_type_is_rejected_by_name),
        cmocka_unit_test(out_of_range_value_is_rejected_with_bounds),
        cmocka_unit_test(malformed_file_is_rejected_with_its_line),
        cmocka_unit_test(flags_override_env_which_overrides_file),
        cmocka_unit_test(env_error_names_the_variable),
        cmocka_unit_test(kafka_keys_pass_through_and_are_validated),
        cmocka_unit_test(copy_owns_its_kafka_pairs),
        cmocka_unit_test(flag_without_value_is_rejected),
        cmocka_unit_test(help_lists_every_key_with_default),
        cmocka_unit_test(readme_table_matches_the_key_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
