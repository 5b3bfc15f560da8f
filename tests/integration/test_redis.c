/* Redis helper against a real redis-server: restarts, outages, script cache, binary safety. */
#include "clock.h"
#include "err.h"
#include "harness.h"
#include "redis.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

static mw_config_t cfg;

static int setup(void **state)
{
    (void)state;
    mwt_config(&cfg);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    mw_config_fini(&cfg);
    return 0;
}

static mw_redis_t *connect_or_fail(void)
{
    char err[512];
    mw_redis_t *r = mw_redis_new(&cfg, 0, err, sizeof(err));
    if (r == NULL)
        fail_msg("connect: %s", err);
    return r;
}

static void commands_are_binary_safe(void **state)
{
    (void)state;
    mw_redis_t *r = connect_or_fail();
    const char value[] = {'a', '\0', 'b', '\r', '\n', (char)0xff};
    const char *key = mwt_name("bin");
    const char *argv[] = {"SET", key, value};
    size_t lens[] = {3, strlen(key), sizeof(value)};
    assert_int_equal(mw_redis_argv(r, NULL, 3, argv, lens), MW_OK);
    redisReply *reply = NULL;
    assert_int_equal(mw_redis_cmd(r, &reply, "GET %s", key), MW_OK);
    assert_int_equal(reply->type, REDIS_REPLY_STRING);
    assert_int_equal(reply->len, sizeof(value));
    assert_memory_equal(reply->str, value, sizeof(value));
    freeReplyObject(reply);
    mw_redis_destroy(r);
}

static void error_reply_is_reported_with_its_text(void **state)
{
    (void)state;
    mw_redis_t *r = connect_or_fail();
    assert_int_equal(mw_redis_cmd(r, NULL, "NOSUCHCOMMAND x"), MW_EREDIS);
    assert_non_null(strstr(mw_redis_errstr(r), "unknown command"));
    mw_redis_destroy(r);
}

static void next_command_works_after_redis_restart(void **state)
{
    (void)state;
    mw_redis_t *r = connect_or_fail();
    const char *key = mwt_name("restart");
    assert_int_equal(mw_redis_cmd(r, NULL, "SET %s before", key), MW_OK);
    assert_int_equal(mwt_service("redis", "restart"), 0);
    /* The old connection is dead; the helper reconnects at once and retries. */
    redisReply *reply = NULL;
    assert_int_equal(mw_redis_cmd(r, &reply, "INCR %s", mwt_name("after-restart")), MW_OK);
    assert_int_equal(reply->type, REDIS_REPLY_INTEGER);
    freeReplyObject(reply);
    assert_true(mw_redis_connected(r));
    mw_redis_destroy(r);
}

/* HLEN of key; MW_OK once Redis serves it. Notes a LOADING outage in *saw_loading. */
static int hlen_noting_loading(mw_redis_t *r, const char *key, long long *len, int *saw_loading)
{
    redisReply *reply = NULL;
    int rc = mw_redis_cmd(r, &reply, "HLEN %s", key);
    if (rc == MW_EUNAVAIL && strstr(mw_redis_errstr(r), "LOADING") != NULL)
        *saw_loading = 1;
    if (rc == MW_OK) {
        *len = reply->integer;
        freeReplyObject(reply);
    }
    return rc;
}

static void command_while_restarted_redis_loads_is_an_outage_not_an_error(void **state)
{
    (void)state;
    enum { FIELDS = 300000 };
    /* Short backoff, so that the client asks again during the load. */
    int64_t retry_max_ms = cfg.redis_retry_max_ms;
    cfg.redis_retry_max_ms = 20;
    mw_redis_t *r = connect_or_fail();
    cfg.redis_retry_max_ms = retry_max_ms;
    const char *key = mwt_name("loading");
    /* Enough data that reloading the append-only file takes a while. */
    assert_int_equal(mw_redis_cmd(r, NULL, "EVAL %s 1 %s %d",
                                  "for i = 1, tonumber(ARGV[1]) do "
                                  "redis.call('HSET', KEYS[1], i, i) end",
                                  key, FIELDS),
                     MW_OK);

    pid_t restart = mwt_service_spawn("redis", "restart");
    assert_true(restart > 0);
    long long len = -1;
    int saw_loading = 0;
    /* Served until the old server stops, then an outage until the new one has loaded. */
    assert_true(mwt_wait_for(hlen_noting_loading(r, key, &len, &saw_loading) != MW_OK, 30000));
    assert_true(mwt_wait_for(hlen_noting_loading(r, key, &len, &saw_loading) == MW_OK, 60000));
    assert_true(saw_loading);
    assert_int_equal(len, FIELDS);
    int status = mwt_wait_exit(restart, 60000);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    assert_int_equal(mw_redis_cmd(r, NULL, "DEL %s", key), MW_OK);
    /* Later restarts in this run load a compacted file again. Housekeeping, not
     * under test: refused only while another rewrite runs, which compacts too. */
    (void)mw_redis_cmd(r, NULL, "BGREWRITEAOF");
    mw_redis_destroy(r);
}

static void outage_fails_fast_then_recovers_with_backoff(void **state)
{
    (void)state;
    mw_redis_t *r = connect_or_fail();
    assert_int_equal(mwt_service("redis", "kill"), 0);
    int64_t t0 = mw_now_ms();
    assert_int_equal(mw_redis_cmd(r, NULL, "PING"), MW_EUNAVAIL);
    assert_int_equal(mw_redis_cmd(r, NULL, "PING"), MW_EUNAVAIL);
    /* Refused connections fail at once rather than hanging the caller. */
    assert_true(mw_now_ms() - t0 < 1000);
    assert_non_null(strstr(mw_redis_errstr(r), "Redis"));
    assert_int_equal(mwt_service("redis", "start"), 0);
    /* The backoff is capped by redis.retry_max_ms (5 s by default). */
    assert_true(mwt_wait_for(mw_redis_cmd(r, NULL, "PING") == MW_OK, 10000));
    mw_redis_destroy(r);
}

static mw_redis_script_t add_script = {
    .name = "add",
    .source = "return redis.call('INCRBY', KEYS[1], ARGV[1])",
};

static void script_runs_again_after_script_cache_flush(void **state)
{
    (void)state;
    mw_redis_t *r = connect_or_fail();
    const char *keys[] = {mwt_name("counter")};
    const char *args[] = {"5"};
    redisReply *reply = NULL;
    assert_int_equal(mw_redis_eval(r, &add_script, &reply, 1, keys, 1, args, NULL), MW_OK);
    assert_int_equal(reply->integer, 5);
    freeReplyObject(reply);
    assert_int_equal(mw_redis_cmd(r, NULL, "SCRIPT FLUSH"), MW_OK);
    assert_int_equal(mw_redis_eval(r, &add_script, &reply, 1, keys, 1, args, NULL), MW_OK);
    assert_int_equal(reply->integer, 10);
    freeReplyObject(reply);
    mw_redis_destroy(r);
}

static void unreachable_redis_fails_new_with_a_clear_message(void **state)
{
    (void)state;
    mw_config_t bad;
    char err[512];
    mwt_config(&bad);
    assert_int_equal(mw_config_set(&bad, "redis.port", "1", "test", err, sizeof(err)), MW_OK);
    assert_null(mw_redis_new(&bad, 0, err, sizeof(err)));
    assert_non_null(strstr(err, "cannot connect to Redis 127.0.0.1:1"));
    mw_redis_t *lazy = mw_redis_new(&bad, 1, err, sizeof(err));
    assert_non_null(lazy);
    assert_int_equal(mw_redis_cmd(lazy, NULL, "PING"), MW_EUNAVAIL);
    mw_redis_destroy(lazy);
    mw_config_fini(&bad);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(commands_are_binary_safe),
        cmocka_unit_test(error_reply_is_reported_with_its_text),
        cmocka_unit_test(next_command_works_after_redis_restart),
        cmocka_unit_test(command_while_restarted_redis_loads_is_an_outage_not_an_error),
        cmocka_unit_test(outage_fails_fast_then_recovers_with_backoff),
        cmocka_unit_test(script_runs_again_after_script_cache_flush),
        cmocka_unit_test(unreachable_redis_fails_new_with_a_clear_message),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
