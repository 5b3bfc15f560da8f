/* Batching and group commit with real processes: requests above
 * batch.max_rows are refused before any compute, a batch that is not full
 * waits at most batch.max_delay_us, a world that breaks under batches in
 * flight has each of their requests answered once, by its second attempt, and
 * a lone request's result is committed without waiting for
 * results.commit_interval_ms or the gap after the previous commit. */
#include "clock.h"
#include "harness.h"
#include "mwt_pipeline.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

static mwt_pipeline_t *over_p; /* the pipeline over_limit() asks */

static int over_limit(int i)
{
    return mwt_request_rows(over_p, i) > 8;
}

static void request_over_batch_max_rows_gets_an_error_result_and_a_dlq_copy(void **state)
{
    const int n = 400;
    static const char *const flags[] = {"--batch.max_rows=8", NULL};
    mwt_pipeline_t *p = mwt_pipeline_new("over", 2, 4, 2, flags);
    *state = p; /* killed by mwt_pipeline_teardown() even when the test fails */
    p->rows_max = 16;
    over_p = p;
    mwt_pipeline_worker(p, 0, "w0");
    mwt_pipeline_worker(p, 1, "w1");
    float *expected = mwt_pipeline_reference(p, n);
    mwt_pipeline_submit(p, 0, n, NULL);

    mwt_tally_t t = {0}, dlq = {0};
    assert_int_equal(mwt_pipeline_read(p, "results", &t, n, expected, n, mwt_scaled(60000)), n);
    int nover = 0;
    for (int i = 0; i < n; i++)
        nover += over_limit(i);
    assert_true(nover > n / 4 && nover < n);
    assert_int_equal(mwt_pipeline_read(p, "dlq", &dlq, n, NULL, nover, mwt_scaled(30000)), nover);
    assert_int_equal(mwt_pipeline_stop_workers(p, mwt_scaled(20000)), 0);
    /* Those of 9 to 16 rows get an error, every other one its rows' outputs. */
    mwt_pipeline_check_exactly_once(p, &t, n, expected, over_limit, NULL);
    mwt_pipeline_read(p, "dlq", &dlq, n, NULL, -1, mwt_scaled(20000));
    for (int i = 0; i < n; i++)
        if (dlq.count[i] != over_limit(i))
            fail_msg("request %d: %d DLQ copies, want %d", i, dlq.count[i], over_limit(i));

    mwt_tally_fini(&t);
    mwt_tally_fini(&dlq);
    free(expected);
}

static void lone_request_waits_for_a_fuller_batch_at_most_batch_max_delay(void **state)
{
    const int64_t delay_ms = 300;
    static const char *const flags[] = {"--batch.max_delay_us=300000", NULL};
    mwt_pipeline_t *p = mwt_pipeline_new("delay", 2, 4, 1, flags);
    *state = p; /* killed by mwt_pipeline_teardown() even when the test fails */
    mwt_pipeline_worker(p, 0, "w0");
    mwt_pipeline_worker(p, 1, "w1");
    assert_true(mwt_wait_for(mwt_pipeline_origins_assigned(p) == 1, mwt_scaled(30000)));
    float *expected = mwt_pipeline_reference(p, 3);

    /* One request at a time: each batch stays one row short of full. */
    mwt_tally_t t = {0};
    for (int i = 0; i < 3; i++) {
        mwt_pipeline_submit(p, i, 1, NULL);
        assert_int_equal(mwt_pipeline_read(p, "results", &t, 3, expected, i + 1, mwt_scaled(30000)),
                         i + 1);
    }
    for (int i = 0; i < 3; i++) {
        int64_t ms = t.latency_us[i] / 1000;
        print_message("request %d: %lld ms from consumption to result\n", i, (long long)ms);
        /* It waited for the delay, and not much longer: processing is a few ms. */
        assert_true(ms >= delay_ms);
        assert_true(ms < delay_ms + mwt_scaled(150));
    }
    assert_int_equal(mwt_pipeline_stop_workers(p, mwt_scaled(20000)), 0);
    mwt_pipeline_check_exactly_once(p, &t, 3, expected, NULL, NULL);

    mwt_tally_fini(&t);
    free(expected);
}

static void broken_world_under_batches_answers_each_request_once_by_attempt_2(void **state)
{
    const int n = 3000;
    /* Stage 1 takes 100 ms per batch, so that batches (of up to 256 rows, about
     * 30 in all) queue there: more than a second of work per worker. */
    static const char *const slow[] = {"--worker.compute_delay_us=100000", NULL};
    mwt_pipeline_t *p = mwt_pipeline_new("break", 3, 6, 1, NULL);
    *state = p; /* killed by mwt_pipeline_teardown() even when the test fails */
    p->rows_max = 4;
    mwt_pipeline_worker(p, 0, "w0");
    p->worker_flags = slow;
    int victim = mwt_pipeline_worker(p, 1, "w1-0");
    mwt_pipeline_worker(p, 1, "w1-1");
    p->worker_flags = NULL;
    mwt_pipeline_worker(p, 2, "w2");
    float *expected = mwt_pipeline_reference(p, n);
    assert_true(mwt_wait_for(mwt_pipeline_origins_assigned(p) == 1, mwt_scaled(30000)));

    mwt_tally_t t = {0};
    mwt_pipeline_submit(p, 0, n, NULL);
    assert_true(mwt_pipeline_read(p, "results", &t, n, expected, 1, mwt_scaled(30000)) >= 1);
    mwt_pipeline_signal(p, victim, SIGKILL); /* its worlds break with batches queued on them */
    assert_int_equal(mwt_pipeline_read(p, "results", &t, n, expected, n, mwt_scaled(60000)), n);
    assert_int_equal(mwt_pipeline_stop_workers(p, mwt_scaled(20000)), 0);
    int64_t attempts = 0;
    int replayed = mwt_pipeline_check_exactly_once(p, &t, n, expected, NULL, &attempts);
    print_message("%d of %d requests answered by their second attempt\n", replayed, n);
    assert_true(replayed > 0);
    assert_int_equal(attempts, 2);

    mwt_tally_fini(&t);
    free(expected);
}

static void lone_request_waits_for_neither_the_commit_interval_nor_the_gap(void **state)
{
    /* A 20 s interval: a timer would make each request wait 10 s on average.
     * A 10 s gap: it is for results that became ready while a commit ran;
     * each request here is produced after the previous result was read, so
     * it finds the origin idle and must not wait for it. */
    static const char *const flags[] = {"--results.commit_interval_ms=20000",
                                        "--results.commit_min_gap_ms=10000", NULL};
    mwt_pipeline_t *p = mwt_pipeline_new("group", 2, 4, 1, flags);
    *state = p; /* killed by mwt_pipeline_teardown() even when the test fails */
    mwt_pipeline_worker(p, 0, "w0");
    mwt_pipeline_worker(p, 1, "w1");
    assert_true(mwt_wait_for(mwt_pipeline_origins_assigned(p) == 1, mwt_scaled(30000)));
    float *expected = mwt_pipeline_reference(p, 4);

    mwt_tally_t t = {0};
    mwt_pipeline_submit(p, 0, 1, NULL); /* the first one finds the pipeline cold */
    assert_int_equal(mwt_pipeline_read(p, "results", &t, 4, expected, 1, mwt_scaled(30000)), 1);
    for (int i = 1; i < 4; i++) {
        int64_t t0 = mw_now_ms();
        mwt_pipeline_submit(p, i, 1, NULL);
        assert_int_equal(mwt_pipeline_read(p, "results", &t, 4, expected, i + 1, mwt_scaled(30000)),
                         i + 1);
        int64_t ms = mw_now_ms() - t0;
        print_message("request %d: produced to committed result read in %lld ms\n", i,
                      (long long)ms);
        assert_true(ms < mwt_scaled(1000));
    }
    assert_int_equal(mwt_pipeline_stop_workers(p, mwt_scaled(20000)), 0);
    mwt_pipeline_check_exactly_once(p, &t, 4, expected, NULL, NULL);

    mwt_tally_fini(&t);
    free(expected);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(request_over_batch_max_rows_gets_an_error_result_and_a_dlq_copy,
                                  mwt_pipeline_teardown),
        cmocka_unit_test_teardown(lone_request_waits_for_a_fuller_batch_at_most_batch_max_delay,
                                  mwt_pipeline_teardown),
        cmocka_unit_test_teardown(broken_world_under_batches_answers_each_request_once_by_attempt_2,
                                  mwt_pipeline_teardown),
        cmocka_unit_test_teardown(lone_request_waits_for_neither_the_commit_interval_nor_the_gap,
                                  mwt_pipeline_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
