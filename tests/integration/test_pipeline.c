/* Serving end to end with real processes: a coordinator and workers of a
 * 3-stage pipeline, requests on Kafka, results compared bit for bit with the
 * unsplit reference model; malformed requests answered with an error and a
 * DLQ copy; a stage slower than the backlog paces the origin. */
#include "clock.h"
#include "harness.h"
#include "mwt_pipeline.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

static void pipeline_3x2_answers_each_request_exactly_once_bit_exact(void **state)
{
    const int n = 5000;
    mwt_pipeline_t *p = mwt_pipeline_new("p1", 3, 6, 4, NULL);
    *state = p; /* killed by mwt_pipeline_teardown() even when the test fails */
    mwt_pipeline_workers(p, 2);
    float *expected = mwt_pipeline_reference(p, n);
    /* Both origins serve: each holds some of the 4 partitions. */
    assert_true(mwt_wait_for(mwt_pipeline_origins_assigned(p) == 2, mwt_scaled(30000)));
    int64_t t0 = mw_now_ms();
    mwt_pipeline_submit(p, 0, n, NULL);

    mwt_tally_t t = {0};
    int got = mwt_pipeline_read(p, "results", &t, n, expected, n, mwt_scaled(90000));
    int64_t t1 = mw_now_ms();
    print_message("%d/%d results in %lld ms\n", got, n, (long long)(t1 - t0));
    assert_int_equal(got, n);
    /* Operators see each origin's recent latency in its hash (mwctl status). */
    char err[256];
    mw_redis_t *r = mw_redis_new(&p->cfg, 0, err, sizeof(err));
    assert_non_null(r);
    for (int k = 0; k < 2; k++) {
        char id[16];
        snprintf(id, sizeof(id), "w0-%d", k);
        assert_true(mwt_wait_for(mwt_worker_field(r, id, "latency_p50_us") > 0, mwt_scaled(5000)));
        long long p50 = mwt_worker_field(r, id, "latency_p50_us");
        long long p99 = mwt_worker_field(r, id, "latency_p99_us");
        print_message("origin %s: latency p50 %lld us, p99 %lld us\n", id, p50, p99);
        assert_true(p99 >= p50 && p99 < (t1 - t0) * 1000);
    }
    mw_redis_destroy(r);
    /* Stop serving (drain: commit what is done), then read every committed record. */
    assert_int_equal(mwt_pipeline_stop_workers(p, mwt_scaled(20000)), 0);
    mwt_pipeline_check_exactly_once(p, &t, n, expected, NULL, NULL);

    mwt_tally_fini(&t);
    free(expected);
}

static int one_in_ten(int i)
{
    return i % 10 == 3;
}

static void malformed_requests_get_one_error_result_and_one_dlq_copy(void **state)
{
    const int n = 1000;
    mwt_pipeline_t *p = mwt_pipeline_new("p8", 3, 6, 2, NULL);
    *state = p; /* killed by mwt_pipeline_teardown() even when the test fails */
    mwt_pipeline_workers(p, 1);
    float *expected = mwt_pipeline_reference(p, n);
    mwt_pipeline_submit(p, 0, n, one_in_ten);

    mwt_tally_t t = {0}, dlq = {0};
    assert_int_equal(mwt_pipeline_read(p, "results", &t, n, expected, n, mwt_scaled(60000)), n);
    int nbad = 0;
    for (int i = 0; i < n; i++)
        nbad += one_in_ten(i);
    assert_int_equal(mwt_pipeline_read(p, "dlq", &dlq, n, NULL, nbad, mwt_scaled(30000)), nbad);
    assert_int_equal(mwt_pipeline_stop_workers(p, mwt_scaled(20000)), 0);
    mwt_pipeline_read(p, "dlq", &dlq, n, NULL, -1, mwt_scaled(20000));
    mwt_pipeline_check_exactly_once(p, &t, n, expected, one_in_ten, NULL);
    for (int i = 0; i < n; i++)
        if (dlq.count[i] != one_in_ten(i))
            fail_msg("request %d: %d DLQ copies, want %d", i, dlq.count[i], one_in_ten(i));
    assert_int_equal(dlq.foreign, 0);

    mwt_tally_fini(&t);
    mwt_tally_fini(&dlq);
    free(expected);
}

static void at_least_once_delivery_answers_every_request(void **state)
{
    const int n = 500;
    static const char *const flags[] = {"--results.delivery=at-least-once", NULL};
    mwt_pipeline_t *p = mwt_pipeline_new("alo", 3, 6, 2, flags);
    *state = p; /* killed by mwt_pipeline_teardown() even when the test fails */
    mwt_pipeline_workers(p, 1);
    float *expected = mwt_pipeline_reference(p, n);
    mwt_pipeline_submit(p, 0, n, NULL);

    mwt_tally_t t = {0};
    assert_int_equal(mwt_pipeline_read(p, "results", &t, n, expected, n, mwt_scaled(60000)), n);
    assert_int_equal(mwt_pipeline_stop_workers(p, mwt_scaled(20000)), 0);
    /* Without failures nothing is produced twice, even without transactions. */
    mwt_pipeline_check_exactly_once(p, &t, n, expected, NULL, NULL);

    mwt_tally_fini(&t);
    free(expected);
}

/* A middle stage four times slower than the backlog's work in an attempt:
 * 400 one-row requests at 20 ms each are 8 s of work for it, and an attempt
 * times out after 2 s. The origin sends it only what it answered over the
 * last half second, so the backlog waits at the origin and in Kafka, and no
 * request waits in the pipeline long enough to be sent again. */
static void stage_slower_than_the_backlog_gets_no_attempt_sent_twice(void **state)
{
    const int n = 400;
    static const char *const flags[] = {"--worker.compute_delay_us=20000",
                                        "--worker.compute_delay_stage=1", "--batch.max_rows=1",
                                        "--request.attempt_timeout_ms=2000", NULL};
    mwt_pipeline_t *p = mwt_pipeline_new("slow", 3, 6, 2, flags);
    *state = p; /* killed by mwt_pipeline_teardown() even when the test fails */
    mwt_pipeline_workers(p, 1);
    float *expected = mwt_pipeline_reference(p, n);
    assert_true(mwt_wait_for(mwt_pipeline_origins_assigned(p) == 1, mwt_scaled(30000)));
    int64_t t0 = mw_now_ms();
    mwt_pipeline_submit(p, 0, n, NULL);

    mwt_tally_t t = {0};
    assert_int_equal(mwt_pipeline_read(p, "results", &t, n, expected, n, mwt_scaled(90000)), n);
    print_message("%d results in %lld ms\n", n, (long long)(mw_now_ms() - t0));
    assert_int_equal(mwt_pipeline_stop_workers(p, mwt_scaled(20000)), 0);
    int64_t attempts = 0;
    int replayed = mwt_pipeline_check_exactly_once(p, &t, n, expected, NULL, &attempts);
    if (replayed > 0)
        fail_msg("%d requests were sent again (up to %lld attempts)", replayed,
                 (long long)attempts);

    mwt_tally_fini(&t);
    free(expected);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(pipeline_3x2_answers_each_request_exactly_once_bit_exact,
                                  mwt_pipeline_teardown),
        cmocka_unit_test_teardown(malformed_requests_get_one_error_result_and_one_dlq_copy,
                                  mwt_pipeline_teardown),
        cmocka_unit_test_teardown(at_least_once_delivery_answers_every_request,
                                  mwt_pipeline_teardown),
        cmocka_unit_test_teardown(stage_slower_than_the_backlog_gets_no_attempt_sent_twice,
                                  mwt_pipeline_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
