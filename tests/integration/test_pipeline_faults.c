/* Serving under failures with real processes: an origin killed mid-run, and a
 * chaos run of requests of 1 to 64 rows (batched together) that kill -9s a
 * random worker every 2 s and starts a replacement. Every request must still
 * get exactly one committed result, equal to the unsplit reference model's
 * output for that request alone. */
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

static const char *const fault_flags[] = {"--request.max_attempts=20", NULL};

static void killed_origin_loses_and_duplicates_nothing(void **state)
{
    const int n = 3000;
    mwt_pipeline_t *p = mwt_pipeline_new("p3", 3, 6, 4, fault_flags);
    *state = p; /* killed by mwt_pipeline_teardown() even when the test fails */
    mwt_pipeline_workers(p, 2);
    float *expected = mwt_pipeline_reference(p, n);
    assert_true(mwt_wait_for(mwt_pipeline_origins_assigned(p) == 2, mwt_scaled(30000)));
    mwt_pipeline_submit(p, 0, n, NULL);

    mwt_tally_t t = {0};
    /* Mid-run: some results are committed, many requests are still in flight. */
    assert_true(mwt_pipeline_read(p, "results", &t, n, expected, n / 5, mwt_scaled(60000)) >=
                n / 5);
    mwt_pipeline_signal(p, 0, SIGKILL); /* w0-0, an origin */
    int64_t t0 = mw_now_ms();
    int got = mwt_pipeline_read(p, "results", &t, n, expected, n, mwt_scaled(100000));
    print_message("origin killed at %d/%d; all answered %lld ms later\n", n / 5, n,
                  (long long)(mw_now_ms() - t0));
    assert_int_equal(got, n);
    assert_int_equal(mwt_pipeline_stop_workers(p, mwt_scaled(20000)), 0);
    int replayed = mwt_pipeline_check_exactly_once(p, &t, n, expected, NULL, NULL);
    print_message("%d requests answered by a later attempt\n", replayed);

    mwt_tally_fini(&t);
    free(expected);
}

static void chaos_kill_every_2s_keeps_exactly_once_with_1_to_64_row_requests(void **state)
{
    const int n = 6000;
    mwt_pipeline_t *p = mwt_pipeline_new("p2", 3, 6, 4, fault_flags);
    *state = p; /* killed by mwt_pipeline_teardown() even when the test fails */
    p->rows_max = 64;
    mwt_pipeline_workers(p, 2);
    float *expected = mwt_pipeline_reference(p, n);
    assert_true(mwt_wait_for(mwt_pipeline_origins_assigned(p) == 2, mwt_scaled(30000)));
    srand(2); /* the same victims every run */

    /* A random worker, origins included, killed every 2 s under load. */
    mwt_tally_t t = {0};
    int kills = mwt_pipeline_chaos(p, "results", &t, n, expected, -1);
    int got = mwt_pipeline_read(p, "results", &t, n, expected, n, mwt_scaled(100000));
    print_message("%d kills; %d/%d answered\n", kills, got, n);
    assert_int_equal(got, n);
    assert_int_equal(mwt_pipeline_stop_workers(p, mwt_scaled(20000)), 0);
    int replayed = mwt_pipeline_check_exactly_once(p, &t, n, expected, NULL, NULL);
    print_message("replays: %d of %d requests answered by attempt > 1\n", replayed, n);

    mwt_tally_fini(&t);
    free(expected);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(killed_origin_loses_and_duplicates_nothing,
                                  mwt_pipeline_teardown),
        cmocka_unit_test_teardown(chaos_kill_every_2s_keeps_exactly_once_with_1_to_64_row_requests,
                                  mwt_pipeline_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
