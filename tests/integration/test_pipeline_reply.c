/* Request-reply with real processes: requests that name a reply topic (with
 * correlation ids) are answered there, exactly once, in the partition the
 * README documents; requests naming a topic outside results.reply_topics, a
 * missing topic or a missing partition get an error result on P.results and a
 * DLQ copy while their neighbours are served. */
#include "clock.h"
#include "err.h"
#include "harness.h"
#include "kafka.h"
#include "mwt_pipeline.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static const char *const reply_flags[] = {"--results.reply_topics=*.replies, *.missing",
                                          "--request.max_attempts=20", NULL};

static void add_text(mw_record_t *rec, const char *name, const char *text)
{
    mw_record_add_header(rec, name, text, strlen(text));
}

/* Every request to <name>.replies, with its correlation id. */
static void to_replies(const mwt_pipeline_t *p, int i, mw_record_t *rec)
{
    char topic[160], key[32], cid[40];
    snprintf(topic, sizeof(topic), "%s.replies", p->name);
    mwt_request_key(i, key, sizeof(key));
    mwt_correlation_id(key, cid, sizeof(cid));
    add_text(rec, "mw-reply-topic", topic);
    add_text(rec, "kafka_correlationId", cid);
}

/* Requests i % 10 == 3, 5, 7 name a route the origin must refuse. */
static int bad_route(int i)
{
    return i % 10 == 3 || i % 10 == 5 || i % 10 == 7;
}

/* Spring's form for most requests; refused routes by i % 10: 3 a topic the
 * allow-list leaves out (P.results), 5 a topic that does not exist, 7 a
 * partition the reply topic does not have. Request i % 10 == 9 names
 * partition 1 of the reply topic. */
static void mixed_routes(const mwt_pipeline_t *p, int i, mw_record_t *rec)
{
    char topic[160], key[32], cid[40];
    static const char *const suffixes[10] = {"replies", "replies", "replies", "results", "replies",
                                             "missing", "replies", "replies", "replies", "replies"};
    snprintf(topic, sizeof(topic), "%s.%s", p->name, suffixes[i % 10]);
    mwt_request_key(i, key, sizeof(key));
    mwt_correlation_id(key, cid, sizeof(cid));
    add_text(rec, "kafka_replyTopic", topic);
    mw_record_add_header(rec, "kafka_correlationId", cid, strlen(cid));
    if (i % 10 == 7 || i % 10 == 9) {
        const unsigned char part[4] = {0, 0, 0, i % 10 == 7 ? 99 : 1};
        mw_record_add_header(rec, "kafka_replyPartition", part, 4);
    }
}

/* Fails the test unless <name>.results holds nbad error results of requests
 * [0, n), each naming the problem its route has (mixed_routes). */
static void check_route_errors(mwt_pipeline_t *p, int n, int nbad)
{
    static const char *const want[10] = {[3] = "is not allowed (results.reply_topics",
                                         [5] = "does not exist",
                                         [7] = "reply partition 99 does not exist: topic"};
    char err[512], topic[160];
    mw_config_t cfg;
    mwt_config(&cfg);
    snprintf(topic, sizeof(topic), "%s.results", p->name);
    rd_kafka_t *c = mw_kafka_consumer_new(&cfg, "route-errors", NULL, err, sizeof(err));
    mw_config_fini(&cfg);
    assert_non_null(c);
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(p->partitions);
    for (int k = 0; k < p->partitions; k++)
        rd_kafka_topic_partition_list_add(list, topic, k)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(c, list);
    rd_kafka_topic_partition_list_destroy(list);
    int seen = 0, wrong = 0;
    for (int64_t deadline = mw_now_ms() + mwt_scaled(30000);
         seen + wrong < nbad && mw_now_ms() < deadline;) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
        if (m == NULL)
            continue;
        mw_result_t res;
        char key[16];
        int i = -1;
        if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR && m->key_len < sizeof(key)) {
            memcpy(key, m->key, m->key_len);
            key[m->key_len] = '\0';
            sscanf(key, "r%d", &i);
        }
        if (i >= 0 && i < n && mw_result_from_message(&res, m, err, sizeof(err)) == MW_OK) {
            char text[MW_RECORD_ERROR_MAX + 1];
            snprintf(text, sizeof(text), "%.*s", (int)res.error_len, res.error ? res.error : "");
            if (want[i % 10] != NULL && strstr(text, want[i % 10]) != NULL) {
                seen++;
            } else {
                print_message("%s: '%s'\n", key, text);
                wrong++;
            }
        }
        rd_kafka_message_destroy(m);
    }
    mw_kafka_destroy(c);
    assert_int_equal(wrong, 0);
    assert_int_equal(seen, nbad);
}

/* Where a reply without a reply partition lands: the request's partition
 * (the test producer's default partitioner) modulo the reply topic's. */
static int reply_partition_of(int i, int request_partitions, int reply_partitions)
{
    char key[32];
    mwt_request_key(i, key, sizeof(key));
    int32_t req =
        rd_kafka_msg_partitioner_consistent(NULL, key, strlen(key), request_partitions, NULL, NULL);
    return req % reply_partitions;
}

static void replies_reach_the_reply_topic_exactly_once_in_their_partition(void **state)
{
    const int n = 1000;
    mwt_pipeline_t *p = mwt_pipeline_new("rp1", 2, 4, 4, reply_flags);
    *state = p; /* killed by mwt_pipeline_teardown() even when the test fails */
    mwt_pipeline_topic(p, "replies", 3);
    p->headers = to_replies;
    mwt_pipeline_workers(p, 1);
    float *expected = mwt_pipeline_reference(p, n);
    assert_true(mwt_wait_for(mwt_pipeline_origins_assigned(p) == 1, mwt_scaled(30000)));
    mwt_pipeline_submit(p, 0, n, NULL);

    mwt_tally_t t = {0};
    assert_int_equal(mwt_pipeline_read(p, "replies", &t, n, expected, n, mwt_scaled(60000)), n);
    assert_int_equal(mwt_pipeline_stop_workers(p, mwt_scaled(20000)), 0);
    mwt_pipeline_check_exactly_once(p, &t, n, expected, NULL, NULL);
    int wrong = 0;
    for (int i = 0; i < n; i++)
        wrong += (int)(t.first_offset[i] >> 48) != reply_partition_of(i, 4, 3);
    assert_int_equal(wrong, 0);
    mwt_tally_t results = {0};
    mwt_pipeline_read(p, "results", &results, n, NULL, -1, mwt_scaled(30000));
    assert_int_equal(results.total, 0);

    mwt_tally_fini(&results);
    mwt_tally_fini(&t);
    free(expected);
}

static void refused_reply_routes_get_an_error_result_and_a_dlq_copy(void **state)
{
    const int n = 400;
    mwt_pipeline_t *p = mwt_pipeline_new("rp2", 2, 4, 2, reply_flags);
    *state = p; /* killed by mwt_pipeline_teardown() even when the test fails */
    mwt_pipeline_topic(p, "replies", 2);
    p->headers = mixed_routes;
    mwt_pipeline_workers(p, 1);
    float *expected = mwt_pipeline_reference(p, n);
    assert_true(mwt_wait_for(mwt_pipeline_origins_assigned(p) == 1, mwt_scaled(30000)));
    mwt_pipeline_submit(p, 0, n, NULL);

    int bad = 0;
    for (int i = 0; i < n; i++)
        bad += bad_route(i);
    mwt_tally_t replies = {0}, results = {0}, dlq = {0};
    assert_int_equal(
        mwt_pipeline_read(p, "replies", &replies, n, expected, n - bad, mwt_scaled(60000)),
        n - bad);
    assert_int_equal(mwt_pipeline_read(p, "results", &results, n, expected, bad, mwt_scaled(30000)),
                     bad);
    assert_int_equal(mwt_pipeline_read(p, "dlq", &dlq, n, NULL, bad, mwt_scaled(30000)), bad);
    assert_int_equal(mwt_pipeline_stop_workers(p, mwt_scaled(20000)), 0);
    mwt_pipeline_read(p, "replies", &replies, n, expected, -1, mwt_scaled(30000));
    mwt_pipeline_read(p, "results", &results, n, expected, -1, mwt_scaled(30000));
    mwt_pipeline_read(p, "dlq", &dlq, n, NULL, -1, mwt_scaled(30000));
    int wrong = 0;
    for (int i = 0; i < n; i++) {
        if (bad_route(i))
            wrong += replies.count[i] != 0 || results.count[i] != 1 || results.errors[i] != 1 ||
                     results.mismatch[i] != 0 || dlq.count[i] != 1;
        else
            wrong += replies.count[i] != 1 || replies.errors[i] != 0 || replies.mismatch[i] != 0 ||
                     results.count[i] != 0 || dlq.count[i] != 0 ||
                     (i % 10 == 9 && (replies.first_offset[i] >> 48) != 1);
    }
    print_message("%d refused routes, %d replies; %d requests answered wrongly\n", bad,
                  replies.distinct, wrong);
    assert_int_equal(wrong, 0);
    check_route_errors(p, n, bad);

    mwt_tally_fini(&dlq);
    mwt_tally_fini(&results);
    mwt_tally_fini(&replies);
    free(expected);
}

static void killed_origins_keep_replies_exactly_once(void **state)
{
    const int n = 2000;
    mwt_pipeline_t *p = mwt_pipeline_new("rp3", 2, 4, 4, reply_flags);
    *state = p; /* killed by mwt_pipeline_teardown() even when the test fails */
    mwt_pipeline_topic(p, "replies", 4);
    p->headers = to_replies;
    mwt_pipeline_workers(p, 2);
    float *expected = mwt_pipeline_reference(p, n);
    assert_true(mwt_wait_for(mwt_pipeline_origins_assigned(p) == 2, mwt_scaled(30000)));

    /* Every 2 s an origin is killed under load (replies produced, not yet
     * committed) and a replacement started. */
    mwt_tally_t t = {0};
    int kills = mwt_pipeline_chaos(p, "replies", &t, n, expected, 0);
    int got = mwt_pipeline_read(p, "replies", &t, n, expected, n, mwt_scaled(100000));
    print_message("%d origin kills; %d/%d replies\n", kills, got, n);
    assert_int_equal(got, n);
    assert_int_equal(mwt_pipeline_stop_workers(p, mwt_scaled(20000)), 0);
    int replayed = mwt_pipeline_check_exactly_once(p, &t, n, expected, NULL, NULL);
    print_message("%d requests answered by a later attempt\n", replayed);

    mwt_tally_fini(&t);
    free(expected);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(replies_reach_the_reply_topic_exactly_once_in_their_partition,
                                  mwt_pipeline_teardown),
        cmocka_unit_test_teardown(refused_reply_routes_get_an_error_result_and_a_dlq_copy,
                                  mwt_pipeline_teardown),
        cmocka_unit_test_teardown(killed_origins_keep_replies_exactly_once, mwt_pipeline_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
