/* Integration tests of the record layer against a real Kafka: mwctl topics,
 * requests produced by kcat decoded (or rejected) through the librdkafka
 * adapters, DLQ and result records produced and read back, mwctl submit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "clock.h"
#include "err.h"
#include "harness.h"
#include "kafka.h"
#include "topics/record.h"
#include "topics/topics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_MSGS 256

static const char *bootstrap(void)
{
    return getenv("MWTEST_KAFKA_BOOTSTRAP");
}

/* Runs mwctl with the test's Kafka; returns its exit status, stdout in out. */
static int mwctl(const char *args, char *out, size_t out_size)
{
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "%s --kafka.bootstrap.servers=%s %s", mwt_bin("mwctl"), bootstrap(),
             args);
    return mwt_run(cmd, out, out_size); /* the exit status, -1 when killed */
}

static void write_bytes(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

/* Produces FILE's content as one record to partition 0 of topic with kcat. */
static void kcat_produce(const char *topic, const char *key, const char *headers, const void *value,
                         size_t len)
{
    char path[512], cmd[2048];
    snprintf(path, sizeof(path), "%s/kcat-value.bin", getenv("MWTEST_DIR"));
    write_bytes(path, value, len);
    snprintf(cmd, sizeof(cmd), "kcat -P -q -b %s -t %s -p 0 %s%s%s %s '%s'", bootstrap(), topic,
             key ? "-k '" : "", key ? key : "", key ? "'" : "", headers, path);
    int st = mwt_run(cmd, NULL, 0);
    if (st != 0)
        fail_msg("kcat failed (%d): %s", st, cmd);
}

static void create_topics(const char *pipeline, int partitions)
{
    mw_config_t cfg;
    char err[512];
    mwt_config(&cfg);
    rd_kafka_t *rk = mw_topics_admin_new(&cfg, err, sizeof(err));
    assert_non_null(rk);
    mw_topic_info_t info[MW_TOPIC_COUNT];
    int rc =
        mw_topics_create(rk, pipeline, partitions, partitions, 1, 30000, info, err, sizeof(err));
    if (rc != MW_OK)
        fail_msg("creating topics: %s", err);
    mw_kafka_destroy(rk);
    mw_config_fini(&cfg);
}

/* A read_committed consumer assigned to every partition of topic from the start. */
static rd_kafka_t *consumer_from_beginning(const char *topic, int partitions)
{
    mw_config_t cfg;
    char err[512];
    mwt_config(&cfg);
    rd_kafka_t *rk = mw_kafka_consumer_new(&cfg, mwt_name("group"), NULL, err, sizeof(err));
    if (rk == NULL)
        fail_msg("consumer: %s", err);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(partitions);
    for (int p = 0; p < partitions; p++)
        rd_kafka_topic_partition_list_add(parts, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    assert_int_equal(rd_kafka_assign(rk, parts), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_topic_partition_list_destroy(parts);
    mw_config_fini(&cfg);
    return rk;
}

/* Consumes until n messages arrived (or the deadline); returns how many. */
static int consume(rd_kafka_t *rk, rd_kafka_message_t **msgs, int n, int64_t timeout_ms)
{
    int got = 0;
    int64_t deadline = mw_now_ms() + mwt_scaled(timeout_ms);
    while (got < n && mw_now_ms() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (m == NULL)
            continue;
        if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            rd_kafka_message_destroy(m);
            continue;
        }
        msgs[got++] = m;
    }
    return got;
}

static void destroy_all(rd_kafka_message_t **msgs, int n)
{
    for (int i = 0; i < n; i++)
        rd_kafka_message_destroy(msgs[i]);
}

static void mwctl_topics_create_makes_three_topics_with_partition_counts(void **state)
{
    (void)state;
    char out[4096], args[512];
    const char *p = mwt_name("tp");
    snprintf(args, sizeof(args),
             "topics create --pipeline %s --partitions 3 "
             "--results-partitions 2",
             p);
    assert_int_equal(mwctl(args, out, sizeof(out)), 0);
    assert_non_null(strstr(out, "created"));

    mw_config_t cfg;
    char err[512];
    mwt_config(&cfg);
    rd_kafka_t *rk = mw_topics_admin_new(&cfg, err, sizeof(err));
    mw_topic_info_t info[MW_TOPIC_COUNT];
    assert_int_equal(mw_topics_describe(rk, p, 10000, info, err, sizeof(err)), MW_OK);
    assert_true(info[MW_TOPIC_REQUESTS].exists);
    assert_int_equal(info[MW_TOPIC_REQUESTS].partitions, 3);
    assert_int_equal(info[MW_TOPIC_RESULTS].partitions, 2);
    assert_int_equal(info[MW_TOPIC_DLQ].partitions, 1);
    mw_kafka_destroy(rk);
    mw_config_fini(&cfg);

    /* Again: nothing to create, everything reported as existing. */
    assert_int_equal(mwctl(args, out, sizeof(out)), 0);
    assert_null(strstr(out, "created"));
    assert_non_null(strstr(out, "exists"));
    snprintf(args, sizeof(args), "topics list --pipeline %s", p);
    assert_int_equal(mwctl(args, out, sizeof(out)), 0);
    assert_non_null(strstr(out, ".requests"));
    snprintf(args, sizeof(args), "topics list --pipeline %s", mwt_name("absent"));
    assert_int_equal(mwctl(args, out, sizeof(out)), 1);
    assert_non_null(strstr(out, "missing"));
    assert_int_equal(mwctl("topics create --pipeline 'bad/name'", out, sizeof(out)), 2);
}

static void kcat_requests_are_decoded_by_the_record_layer(void **state)
{
    (void)state;
    const char *p = mwt_name("ok");
    char topic[256];
    snprintf(topic, sizeof(topic), "%s.requests", p);
    create_topics(p, 1);

    float f[4] = {1.5f, -2, 3.25f, 1e-3f};
    kcat_produce(topic, "bin-1", "-H mw-dtype=f32 -H mw-shape=1,4 -H mw-deadline-ms=1700000000000",
                 f, sizeof(f));
    const char *j = "{\"dtype\":\"i64\",\"shape\":[2,2],\"data\":[[1,-2],[3,4000000000]]}";
    kcat_produce(topic, "json-1", "-H content-type=application/json", j, strlen(j));
    uint8_t u[3] = {0, 128, 255};
    kcat_produce(topic, "u8-1",
                 "-H mw-dtype=u8 -H mw-shape=3 -H content-type=application/octet-stream", u,
                 sizeof(u));

    rd_kafka_t *rk = consumer_from_beginning(topic, 1);
    rd_kafka_message_t *msgs[3];
    assert_int_equal(consume(rk, msgs, 3, 30000), 3);
    char err[512];
    mw_request_t req;

    assert_int_equal(mw_request_from_message(&req, msgs[0], 1 << 20, err, sizeof(err)), MW_OK);
    assert_int_equal(req.id_len, 5);
    assert_memory_equal(req.id, "bin-1", 5);
    assert_int_equal(req.desc.dtype, MW_DTYPE_F32);
    assert_int_equal(req.desc.ndim, 2);
    assert_int_equal(req.nbytes, sizeof(f));
    assert_ptr_equal(req.data, msgs[0]->payload); /* points into the message */
    assert_memory_equal(req.data, f, sizeof(f));
    assert_int_equal(req.deadline_ms, 1700000000000);
    mw_request_fini(&req);

    assert_int_equal(mw_request_from_message(&req, msgs[1], 1 << 20, err, sizeof(err)), MW_OK);
    int64_t want[4] = {1, -2, 3, 4000000000};
    assert_int_equal(req.json, 1);
    assert_int_equal(req.desc.dtype, MW_DTYPE_I64);
    assert_int_equal(req.nbytes, sizeof(want));
    assert_memory_equal(req.data, want, sizeof(want));
    mw_request_fini(&req);

    assert_int_equal(mw_request_from_message(&req, msgs[2], 1 << 20, err, sizeof(err)), MW_OK);
    assert_int_equal(req.desc.dtype, MW_DTYPE_U8);
    assert_memory_equal(req.data, u, 3);
    mw_request_fini(&req);

    destroy_all(msgs, 3);
    mw_kafka_destroy(rk);
}

static const struct {
    const char *key; /* NULL: no key */
    const char *headers;
    const char *value;
    size_t len;
    uint64_t limit;
    const char *want;
} bad[] = {
    {"no-dtype", "-H mw-shape=1,4", "0123456789abcdef", 16, 1 << 20, "missing header mw-dtype"},
    {"f64", "-H mw-dtype=f64 -H mw-shape=1,4", "0123456789abcdef", 16, 1 << 20,
     "unknown dtype 'f64' in header mw-dtype"},
    {"no-shape", "-H mw-dtype=f32", "0123456789abcdef", 16, 1 << 20, "missing header mw-shape"},
    {"bad-shape", "-H mw-dtype=f32 -H mw-shape=1,x", "0123456789abcdef", 16, 1 << 20,
     "bad header mw-shape"},
    {"short", "-H mw-dtype=f32 -H mw-shape=1,4", "0123456789abcde", 15, 1 << 20,
     "value is 15 bytes but shape 1,4 of f32 needs 16 bytes"},
    {"too-big", "-H mw-dtype=f32 -H mw-shape=1,4", "0123456789abcdef", 16, 8,
     "over the limit of 8 bytes"},
    {"bad-json", "-H content-type=application/json", "{\"dtype\":\"f32\",", 15, 1 << 20,
     "malformed JSON"},
    {"json-u8", "-H content-type=application/json",
     "{\"dtype\":\"u8\",\"shape\":[1],\"data\":[256]}", 0, 1 << 20, "out of range for u8"},
    {NULL, "-H mw-dtype=f32 -H mw-shape=1,4", "0123456789abcdef", 16, 1 << 20,
     "missing request id"},
};
#define NBAD (sizeof(bad) / sizeof(bad[0]))

static void kcat_malformed_requests_are_rejected_and_copied_to_the_dlq(void **state)
{
    (void)state;
    const char *p = mwt_name("bad");
    char topic[256], dlq[256], results[256];
    snprintf(topic, sizeof(topic), "%s.requests", p);
    snprintf(dlq, sizeof(dlq), "%s.dlq", p);
    snprintf(results, sizeof(results), "%s.results", p);
    create_topics(p, 1);
    for (size_t i = 0; i < NBAD; i++)
        kcat_produce(topic, bad[i].key, bad[i].headers, bad[i].value,
                     bad[i].len ? bad[i].len : strlen(bad[i].value));

    mw_config_t cfg;
    char err[512];
    mwt_config(&cfg);
    rd_kafka_t *producer = mw_kafka_producer_new(&cfg, NULL, NULL, err, sizeof(err));
    assert_non_null(producer);
    rd_kafka_t *rk = consumer_from_beginning(topic, 1);
    rd_kafka_message_t *msgs[NBAD];
    assert_int_equal(consume(rk, msgs, NBAD, 30000), NBAD);
    for (size_t i = 0; i < NBAD; i++) {
        mw_request_t req;
        err[0] = '\0';
        int rc = mw_request_from_message(&req, msgs[i], bad[i].limit, err, sizeof(err));
        if (rc == MW_OK || strstr(err, bad[i].want) == NULL)
            fail_msg("request %zu (%s): want '%s', got rc %d '%s'", i, bad[i].key, bad[i].want, rc,
                     err);
        /* What the origin does with it: an error result and a DLQ copy. */
        mw_record_t rec;
        mw_record_init(&rec);
        assert_int_equal(mw_dlq_encode_message(&rec, msgs[i], err, 1), MW_OK);
        assert_int_equal(mw_record_produce(producer, dlq, 0, &rec, NULL, err, sizeof(err)), MW_OK);
        mw_record_fini(&rec);
        mw_result_t res = {.id = msgs[i]->key,
                           .id_len = msgs[i]->key_len,
                           .ok = 0,
                           .error = err,
                           .attempts = 1,
                           .latency_us = 10};
        assert_int_equal(mw_result_encode(&rec, &res, err, sizeof(err)), MW_OK);
        assert_int_equal(mw_record_produce(producer, results, 0, &rec, NULL, err, sizeof(err)),
                         MW_OK);
        mw_record_fini(&rec);
    }
    assert_int_equal(rd_kafka_flush(producer, mwt_scaled(30000)), RD_KAFKA_RESP_ERR_NO_ERROR);

    /* The DLQ holds each original record with its headers plus the reason. */
    rd_kafka_t *dc = consumer_from_beginning(dlq, 1);
    rd_kafka_message_t *copies[NBAD];
    assert_int_equal(consume(dc, copies, NBAD, 30000), NBAD);
    for (size_t i = 0; i < NBAD; i++) {
        assert_int_equal(copies[i]->len, msgs[i]->len);
        assert_memory_equal(copies[i]->payload, msgs[i]->payload, msgs[i]->len);
        assert_int_equal(copies[i]->key_len, msgs[i]->key_len);
        rd_kafka_headers_t *h = NULL;
        assert_int_equal(rd_kafka_message_headers(copies[i], &h), RD_KAFKA_RESP_ERR_NO_ERROR);
        const void *v;
        size_t s;
        assert_int_equal(rd_kafka_header_get_last(h, "mw-error", &v, &s),
                         RD_KAFKA_RESP_ERR_NO_ERROR);
        if (memmem(v, s, bad[i].want, strlen(bad[i].want)) == NULL)
            fail_msg("DLQ copy %zu: mw-error '%.*s'", i, (int)s, (const char *)v);
        assert_int_equal(rd_kafka_header_get_last(h, "mw-attempts", &v, &s),
                         RD_KAFKA_RESP_ERR_NO_ERROR);
        assert_memory_equal(v, "1", 1);
        /* The original headers are kept. */
        assert_true(rd_kafka_header_cnt(h) >= 3);
    }
    destroy_all(copies, NBAD);
    mw_kafka_destroy(dc);

    /* The error results decode, empty-valued, with the reason. */
    rd_kafka_t *rc = consumer_from_beginning(results, 1);
    rd_kafka_message_t *res_msgs[NBAD];
    assert_int_equal(consume(rc, res_msgs, NBAD, 30000), NBAD);
    for (size_t i = 0; i < NBAD; i++) {
        mw_result_t res;
        assert_int_equal(mw_result_from_message(&res, res_msgs[i], err, sizeof(err)), MW_OK);
        assert_int_equal(res.ok, 0);
        assert_int_equal(res_msgs[i]->len, 0);
        assert_int_equal(res.attempts, 1);
        assert_int_equal(res.latency_us, 10);
        assert_non_null(memmem(res.error, res.error_len, bad[i].want, strlen(bad[i].want)));
    }
    destroy_all(res_msgs, NBAD);
    mw_kafka_destroy(rc);

    destroy_all(msgs, NBAD);
    mw_kafka_destroy(rk);
    mw_kafka_destroy(producer);
    mw_config_fini(&cfg);
}

/* The number after prefix in a request id, or -1 when the id has another prefix. */
static int id_number(const rd_kafka_message_t *m, const char *prefix)
{
    size_t pl = strlen(prefix);
    const char *k = m->key;
    if (m->key_len <= pl || memcmp(k, prefix, pl) != 0)
        return -1;
    int v = 0;
    for (size_t i = pl; i < m->key_len; i++)
        v = v * 10 + (k[i] - '0');
    return v;
}

static void mwctl_submit_generate_produces_decodable_deterministic_requests(void **state)
{
    (void)state;
    const char *p = mwt_name("gen");
    char topic[256], args[512], out[4096];
    snprintf(topic, sizeof(topic), "%s.requests", p);
    create_topics(p, 3);
    snprintf(args, sizeof(args),
             "submit --pipeline %s --generate 100 --shape 1,64 --seed 7 --id-prefix g-", p);
    assert_int_equal(mwctl(args, out, sizeof(out)), 0);
    if (strstr(out, "produced 100 requests") == NULL || strstr(out, "100 acknowledged") == NULL)
        fail_msg("mwctl submit said: %s", out);
    /* The same seed again, as JSON: requests 0..2 must carry the same tensors. */
    snprintf(args, sizeof(args),
             "submit --pipeline %s --generate 3 --shape 1,64 --seed 7 --id-prefix h- --json", p);
    assert_int_equal(mwctl(args, out, sizeof(out)), 0);

    rd_kafka_t *rk = consumer_from_beginning(topic, 3);
    rd_kafka_message_t *msgs[MAX_MSGS];
    int got = consume(rk, msgs, 103, 60000);
    assert_int_equal(got, 103);
    rd_kafka_message_t *gen[100] = {0};
    mw_request_t json[3] = {0};
    char err[512];
    for (int i = 0; i < got; i++) {
        mw_request_t req;
        if (mw_request_from_message(&req, msgs[i], 1 << 20, err, sizeof(err)) != MW_OK)
            fail_msg("generated request %d: %s", i, err);
        assert_int_equal(req.desc.dtype, MW_DTYPE_F32);
        assert_int_equal(req.desc.ndim, 2);
        assert_int_equal(req.desc.shape[1], 64);
        assert_int_equal(req.nbytes, 256);
        int g = id_number(msgs[i], "g-"), h = id_number(msgs[i], "h-");
        if (g >= 0 && g < 100) {
            assert_null(gen[g]); /* each id once */
            assert_int_equal(req.json, 0);
            gen[g] = msgs[i];
            mw_request_fini(&req);
        } else if (h >= 0 && h < 3) {
            assert_int_equal(req.json, 1);
            json[h] = req;
        } else {
            fail_msg("unexpected request id '%.*s'", (int)msgs[i]->key_len,
                     (const char *)msgs[i]->key);
        }
    }
    for (int i = 0; i < 100; i++)
        assert_non_null(gen[i]);
    for (int i = 0; i < 3; i++) {
        assert_non_null(json[i].data);
        assert_memory_equal(json[i].data, gen[i]->payload, 256);
        mw_request_fini(&json[i]);
    }
    assert_memory_not_equal(gen[0]->payload, gen[1]->payload, 256);
    destroy_all(msgs, got);
    mw_kafka_destroy(rk);
}

static void mwctl_submit_wait_reports_client_and_in_pipeline_latency(void **state)
{
    (void)state;
    const char *p = mwt_name("wait");
    char requests[256], results[256], outfile[512], cmd[2048];
    snprintf(requests, sizeof(requests), "%s.requests", p);
    snprintf(results, sizeof(results), "%s.results", p);
    create_topics(p, 2);
    snprintf(outfile, sizeof(outfile), "%s/submit-wait.out", getenv("MWTEST_DIR"));
    snprintf(cmd, sizeof(cmd),
             "exec %s --kafka.bootstrap.servers=%s submit --pipeline %s --generate 5 --shape 1,4 "
             "--id-prefix w- --wait --timeout-s %d >%s 2>&1",
             mwt_bin("mwctl"), bootstrap(), p, (int)mwt_scaled(60), outfile);
    char *const argv[] = {"/bin/sh", "-c", cmd, NULL};
    pid_t pid = mwt_spawn(argv);
    assert_true(pid > 0);

    /* A stand-in for the data plane: answer each request, one with an error. */
    mw_config_t cfg;
    char err[512];
    mwt_config(&cfg);
    rd_kafka_t *producer = mw_kafka_producer_new(&cfg, NULL, NULL, err, sizeof(err));
    assert_non_null(producer);
    rd_kafka_t *rk = consumer_from_beginning(requests, 2);
    rd_kafka_message_t *msgs[5];
    assert_int_equal(consume(rk, msgs, 5, 60000), 5);
    for (int i = 0; i < 5; i++) {
        mw_request_t req;
        assert_int_equal(mw_request_from_message(&req, msgs[i], 1 << 20, err, sizeof(err)), MW_OK);
        int failing = req.id[req.id_len - 1] == '3';
        mw_result_t res = {.id = req.id,
                           .id_len = req.id_len,
                           .ok = !failing,
                           .error = "stage 1 failed",
                           .desc = req.desc,
                           .data = req.data,
                           .nbytes = req.nbytes,
                           .attempts = 1,
                           .latency_us = 1000 * (req.id[req.id_len - 1] - '0' + 1)};
        mw_record_t rec;
        mw_record_init(&rec);
        assert_int_equal(mw_result_encode(&rec, &res, err, sizeof(err)), MW_OK);
        assert_int_equal(mw_record_produce(producer, results, RD_KAFKA_PARTITION_UA, &rec, NULL,
                                           err, sizeof(err)),
                         MW_OK);
        mw_record_fini(&rec);
        mw_request_fini(&req);
    }
    assert_int_equal(rd_kafka_flush(producer, mwt_scaled(30000)), RD_KAFKA_RESP_ERR_NO_ERROR);
    int st = mwt_wait_exit(pid, mwt_scaled(90000));
    assert_true(st != -1);
    char out[4096] = "";
    FILE *f = fopen(outfile, "r");
    assert_non_null(f);
    size_t n = fread(out, 1, sizeof(out) - 1, f);
    out[n] = '\0';
    fclose(f);
    /* What the client saw, then what the results' mw-latency-us say. */
    const char *seen = strstr(out, "; latency (produce to committed result read) p50 ");
    double p50 = 0;
    if (strstr(out, "results: 5/5 received, 1 errors") == NULL || seen == NULL ||
        sscanf(seen, "; latency (produce to committed result read) p50 %lf ms", &p50) != 1 ||
        p50 <= 0 ||
        strstr(seen, "; in-pipeline (mw-latency-us) p50 3.00 ms, p90 5.00 ms, p99 5.00 ms") == NULL)
        fail_msg("mwctl submit --wait said: %s", out);
    assert_non_null(strstr(out, "stage 1 failed"));
    assert_int_equal(WEXITSTATUS(st), 1); /* one request failed */

    /* mwctl results reads them back. */
    char args[512], res_out[8192];
    snprintf(args, sizeof(args), "results --pipeline %s --from-beginning --count 5", p);
    assert_int_equal(mwctl(args, res_out, sizeof(res_out)), 0);
    assert_non_null(strstr(res_out, "w-0 ok f32 1,4 attempts=1 latency=1.000 ms"));
    assert_non_null(strstr(res_out, "w-3 error attempts=1 latency=4.000 ms: stage 1 failed"));

    destroy_all(msgs, 5);
    mw_kafka_destroy(rk);
    mw_kafka_destroy(producer);
    mw_config_fini(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(mwctl_topics_create_makes_three_topics_with_partition_counts),
        cmocka_unit_test(kcat_requests_are_decoded_by_the_record_layer),
        cmocka_unit_test(kcat_malformed_requests_are_rejected_and_copied_to_the_dlq),
        cmocka_unit_test(mwctl_submit_generate_produces_decodable_deterministic_requests),
        cmocka_unit_test(mwctl_submit_wait_reports_client_and_in_pipeline_latency),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
