/* Kafka helper against a real broker: group consumption, transactions, idempotence across a
 * restart. */
#include "clock.h"
#include "err.h"
#include "harness.h"
#include "kafka.h"
#include "log.h"
#include "mwt_load.h"

#include <pthread.h>
#include <stdatomic.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

static mw_config_t cfg;
static char err[512];

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

static void create_topic(const char *topic, int partitions)
{
    rd_kafka_t *admin = mw_kafka_producer_new(&cfg, NULL, NULL, err, sizeof(err));
    assert_non_null(admin);
    if (mw_kafka_create_topic(admin, topic, partitions, 30000, err, sizeof(err)) != MW_OK)
        fail_msg("%s", err);
    mw_kafka_destroy(admin);
}

static rd_kafka_t *subscribe(const char *topic, const char *group)
{
    rd_kafka_t *c = mw_kafka_consumer_new(&cfg, group, NULL, err, sizeof(err));
    if (c == NULL)
        fail_msg("%s", err);
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, topic, RD_KAFKA_PARTITION_UA);
    assert_int_equal(rd_kafka_subscribe(c, topics), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_topic_partition_list_destroy(topics);
    return c;
}

/* Consumes values of the form "<tag>-<n>" into counts[n] (n < max) until
 * `want` values arrived or the deadline passes; returns how many arrived.
 * Values equal to `stop` end the loop early. */
static int consume_counts(rd_kafka_t *c, const char *tag, int *counts, int max, int want,
                          const char *stop, int64_t timeout_ms)
{
    int got = 0;
    int64_t deadline = mw_now_ms() + timeout_ms;
    size_t taglen = strlen(tag);
    while (got < want && mw_now_ms() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 200);
        if (m == NULL)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            char v[64];
            snprintf(v, sizeof(v), "%.*s", (int)m->len, (const char *)m->payload);
            if (stop != NULL && strcmp(v, stop) == 0) {
                rd_kafka_message_destroy(m);
                break;
            }
            if (strncmp(v, tag, taglen) == 0 && v[taglen] == '-') {
                int n = atoi(v + taglen + 1);
                if (n >= 0 && n < max)
                    counts[n]++;
            }
            got++;
        }
        rd_kafka_message_destroy(m);
    }
    return got;
}

static void produce_value(rd_kafka_t *p, const char *topic, const char *value)
{
    rd_kafka_resp_err_t e =
        rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(value, strlen(value)),
                          RD_KAFKA_V_VALUE((void *)value, strlen(value)),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
    while (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
        rd_kafka_poll(p, 50);
        e = rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(value, strlen(value)),
                              RD_KAFKA_V_VALUE((void *)value, strlen(value)),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
    }
    assert_int_equal(e, RD_KAFKA_RESP_ERR_NO_ERROR);
}

static void thousand_records_come_back_through_a_consumer_group(void **state)
{
    (void)state;
    const char *topic = mwt_name("roundtrip");
    create_topic(topic, 3);
    rd_kafka_t *p = mw_kafka_producer_new(&cfg, NULL, NULL, err, sizeof(err));
    assert_non_null(p);
    for (int i = 0; i < 1000; i++) {
        char v[32];
        snprintf(v, sizeof(v), "r-%d", i);
        produce_value(p, topic, v);
    }
    assert_int_equal(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    mw_kafka_destroy(p);

    rd_kafka_t *c = subscribe(topic, mwt_name("group"));
    int counts[1000] = {0};
    assert_int_equal(consume_counts(c, "r", counts, 1000, 1000, NULL, 60000), 1000);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(counts[i], 1);
    /* Offsets are managed by hand (enable.auto.offset.store=false): commit
     * the consumed positions and read them back from the group. */
    rd_kafka_topic_partition_list_t *parts = NULL;
    assert_int_equal(rd_kafka_assignment(c, &parts), RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(rd_kafka_position(c, parts), RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(rd_kafka_commit(c, parts, 0), RD_KAFKA_RESP_ERR_NO_ERROR);
    for (int i = 0; i < parts->cnt; i++)
        parts->elems[i].offset = RD_KAFKA_OFFSET_INVALID;
    assert_int_equal(rd_kafka_committed(c, parts, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
    int64_t committed = 0;
    for (int i = 0; i < parts->cnt; i++)
        committed += parts->elems[i].offset;
    assert_int_equal(committed, 1000);
    rd_kafka_topic_partition_list_destroy(parts);
    mw_kafka_destroy(c);
}

static void committed_transaction_is_visible_and_aborted_one_is_not(void **state)
{
    (void)state;
    const char *topic = mwt_name("txn");
    create_topic(topic, 1);
    rd_kafka_t *p = mw_kafka_producer_new(&cfg, mwt_name("txn-producer"), NULL, err, sizeof(err));
    if (p == NULL)
        fail_msg("%s", err);

    char v[32];
    assert_null(rd_kafka_begin_transaction(p));
    for (int i = 0; i < 10; i++) {
        snprintf(v, sizeof(v), "committed-%d", i);
        produce_value(p, topic, v);
    }
    assert_null(rd_kafka_commit_transaction(p, 30000));

    assert_null(rd_kafka_begin_transaction(p));
    for (int i = 0; i < 10; i++) {
        snprintf(v, sizeof(v), "aborted-%d", i);
        produce_value(p, topic, v);
    }
    assert_int_equal(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_null(rd_kafka_abort_transaction(p, 30000));

    assert_null(rd_kafka_begin_transaction(p));
    produce_value(p, topic, "end");
    assert_null(rd_kafka_commit_transaction(p, 30000));
    mw_kafka_destroy(p);

    /* read_committed (the helper's default) reads up to "end": the committed
     * records, none of the aborted ones. */
    rd_kafka_t *c = subscribe(topic, mwt_name("txn-group"));
    int committed[10] = {0};
    int got = consume_counts(c, "committed", committed, 10, 1000, "end", 60000);
    mw_kafka_destroy(c);
    assert_int_equal(got, 10);
    for (int i = 0; i < 10; i++)
        assert_int_equal(committed[i], 1);

    /* A read_uncommitted consumer proves the aborted records were written. */
    mw_config_t raw;
    mwt_config(&raw);
    assert_int_equal(
        mw_config_set(&raw, "kafka.isolation.level", "read_uncommitted", "test", err, sizeof(err)),
        MW_OK);
    mw_config_t saved = cfg;
    cfg = raw;
    c = subscribe(topic, mwt_name("raw-group"));
    int aborted[10] = {0};
    consume_counts(c, "aborted", aborted, 10, 1000, "end", 60000);
    mw_kafka_destroy(c);
    cfg = saved;
    mw_config_fini(&raw);
    for (int i = 0; i < 10; i++)
        assert_int_equal(aborted[i], 1);
}

/* A results transaction begun right after the previous commit is refused with
 * CONCURRENT_TRANSACTIONS until the broker has written that commit's markers;
 * with librdkafka's default retry backoff each such transaction waited 100 ms
 * in send_offsets_to_transaction. */
static void back_to_back_transactions_do_not_wait_out_a_100_ms_retry_backoff(void **state)
{
    (void)state;
    enum { TXNS = 21 };
    const char *topic = mwt_name("b2b");
    create_topic(topic, 1);
    rd_kafka_t *p = mw_kafka_producer_new(&cfg, mwt_name("b2b-producer"), NULL, err, sizeof(err));
    if (p == NULL)
        fail_msg("%s", err);
    rd_kafka_consumer_group_metadata_t *group =
        rd_kafka_consumer_group_metadata_new(mwt_name("b2b-group"));
    double ms[TXNS];
    for (int i = 0; i < TXNS; i++) {
        int64_t t0 = mw_now_us();
        assert_null(rd_kafka_begin_transaction(p));
        produce_value(p, topic, "v");
        rd_kafka_topic_partition_list_t *offsets = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(offsets, topic, 0)->offset = i + 1;
        assert_null(rd_kafka_send_offsets_to_transaction(p, offsets, group, 30000));
        rd_kafka_topic_partition_list_destroy(offsets);
        assert_null(rd_kafka_commit_transaction(p, 30000));
        ms[i] = (double)(mw_now_us() - t0) / 1e3;
    }
    rd_kafka_consumer_group_metadata_destroy(group);
    mw_kafka_destroy(p);
    /* Those after the first (which finds no commit before it): about 20 ms
     * of backoff and a few round trips. */
    double median = mwt_median(ms + 1, TXNS - 1);
    if (median >= 75)
        fail_msg("back-to-back transactions took %.1f ms at the median", median);
}

#define RECORDS_BEFORE_RESTART 1000
#define RECORDS_AFTER_RESTART  1000
#define RECORDS_MAX            200000

static atomic_int restart_done;

static void *restart_broker(void *arg)
{
    (void)arg;
    long rc = mwt_service("kafka", "restart");
    atomic_store(&restart_done, 1);
    return (void *)rc;
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR)
        ((int *)m->_private)[0]++;
    else
        ((int *)m->_private)[1]++;
}

static void idempotent_producer_loses_and_duplicates_nothing_across_broker_restart(void **state)
{
    (void)state;
    const char *topic = mwt_name("idempotent");
    create_topic(topic, 2);
    mw_config_t pcfg;
    mwt_config(&pcfg);
    assert_int_equal(
        mw_config_set(&pcfg, "kafka.message.timeout.ms", "180000", "test", err, sizeof(err)),
        MW_OK);
    const mw_kafka_hooks_t hooks = {.dr_msg_cb = on_delivery};
    rd_kafka_t *p = mw_kafka_producer_new(&pcfg, NULL, &hooks, err, sizeof(err));
    if (p == NULL)
        fail_msg("%s", err);
    int outcome[2] = {0, 0}; /* failed, delivered */

    /* Produce steadily before, during and after the restart: some records are
     * acknowledged before it, some are in flight while the broker is down, and
     * RECORDS_AFTER_RESTART are produced once it is back. */
    pthread_t restarter;
    int total = 0, stop_at = RECORDS_MAX;
    atomic_store(&restart_done, 0);
    for (int i = 0; i < stop_at; i++) {
        char v[32];
        snprintf(v, sizeof(v), "i-%d", i);
        rd_kafka_resp_err_t e;
        while ((e = rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_VALUE(v, strlen(v)),
                                      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                      RD_KAFKA_V_OPAQUE(outcome), RD_KAFKA_V_END)) ==
               RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rd_kafka_poll(p, 50);
        assert_int_equal(e, RD_KAFKA_RESP_ERR_NO_ERROR);
        total++;
        rd_kafka_poll(p, 0);
        if (i == RECORDS_BEFORE_RESTART) {
            assert_true(mwt_wait_for((rd_kafka_poll(p, 10), outcome[1] > 0), 30000));
            assert_int_equal(pthread_create(&restarter, NULL, restart_broker, NULL), 0);
        }
        if (i > RECORDS_BEFORE_RESTART && stop_at == RECORDS_MAX && atomic_load(&restart_done))
            stop_at = i + RECORDS_AFTER_RESTART;
        if (i % 5 == 0)
            mwt_sleep_ms(1);
    }
    assert_true(total < RECORDS_MAX); /* the restart finished while producing */
    void *restart_rc;
    assert_int_equal(pthread_join(restarter, &restart_rc), 0);
    assert_int_equal((long)restart_rc, 0);
    assert_int_equal(rd_kafka_flush(p, 180000), RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(outcome[0], 0);
    assert_int_equal(outcome[1], total);
    rd_kafka_destroy(p);
    mw_config_fini(&pcfg);

    rd_kafka_t *c = subscribe(topic, mwt_name("idem-group"));
    int *counts = calloc((size_t)total, sizeof(*counts));
    assert_non_null(counts);
    int got = consume_counts(c, "i", counts, total, total, NULL, 90000);
    /* Anything beyond total would be a duplicate: give it a moment to show. */
    got += consume_counts(c, "i", counts, total, 1, NULL, 2000);
    mw_kafka_destroy(c);
    assert_int_equal(got, total);
    for (int i = 0; i < total; i++)
        if (counts[i] != 1)
            fail_msg("record i-%d arrived %d times", i, counts[i]);
    free(counts);
    print_message("produced %d records across the broker restart\n", total);
}

static void dummy_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)m;
    (void)opaque;
}

static void dummy_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t e,
                            rd_kafka_topic_partition_list_t *partitions, void *opaque)
{
    (void)rk;
    (void)e;
    (void)partitions;
    (void)opaque;
}

/* What a worker's origin does: one config with a consumer-only and a
 * producer-only property, one hooks value for both of its clients. */
static void one_config_for_producer_and_consumer_logs_no_scope_warnings(void **state)
{
    (void)state;
    mw_config_t both;
    mwt_config(&both);
    assert_int_equal(
        mw_config_set(&both, "kafka.session.timeout.ms", "6000", "test", err, sizeof(err)), MW_OK);
    assert_int_equal(
        mw_config_set(&both, "kafka.transaction.timeout.ms", "10000", "test", err, sizeof(err)),
        MW_OK);
    const mw_kafka_hooks_t hooks = {.dr_msg_cb = dummy_dr, .rebalance_cb = dummy_rebalance};

    FILE *log = tmpfile();
    assert_non_null(log);
    int saved_stderr = dup(STDERR_FILENO);
    assert_true(saved_stderr >= 0);
    assert_true(dup2(fileno(log), STDERR_FILENO) >= 0);
    rd_kafka_t *p = mw_kafka_producer_new(&both, NULL, &hooks, err, sizeof(err));
    rd_kafka_t *c = mw_kafka_consumer_new(&both, mwt_name("scope"), &hooks, err, sizeof(err));
    mw_log(MW_LOG_WARN, "test", "capture works");
    mw_kafka_destroy(p);
    mw_kafka_destroy(c);
    dup2(saved_stderr, STDERR_FILENO);
    close(saved_stderr);
    mw_config_fini(&both);
    assert_non_null(p);
    assert_non_null(c);

    char text[16384];
    rewind(log);
    size_t n = fread(text, 1, sizeof(text) - 1, log);
    text[n] = '\0';
    fclose(log);
    fputs(text, stderr);
    assert_non_null(strstr(text, "capture works"));
    for (const char *line = text; *line != '\0';) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        if (memmem(line, len, " WARN ", 6) != NULL && memmem(line, len, "CONFWARN", 8) != NULL)
            fail_msg("scope warning logged: %.*s", (int)len, line);
        line += len + (end != NULL);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(thousand_records_come_back_through_a_consumer_group),
        cmocka_unit_test(committed_transaction_is_visible_and_aborted_one_is_not),
        cmocka_unit_test(back_to_back_transactions_do_not_wait_out_a_100_ms_retry_backoff),
        cmocka_unit_test(idempotent_producer_loses_and_duplicates_nothing_across_broker_restart),
        cmocka_unit_test(one_config_for_producer_and_consumer_logs_no_scope_warnings),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
