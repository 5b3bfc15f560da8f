/* The scaling decision (coordinator/scale.c) and the spec fields it reads
 * (per-stage min/max, slo_ms): one step at a time, the busiest stage only,
 * within bounds, with cooldown and sustained spare capacity; --stage auto
 * workers moved to the bottleneck instead of a new one, and back. */
#include "cluster/pipeline.h"
#include "coordinator/scale.h"
#include "err.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

static const mw_scale_options_t opt = {.busy_high = 0.85,
                                       .busy_low = 0.5,
                                       .lag_min = 100,
                                       .cooldown_ms = 1000,
                                       .scale_in_after_ms = 5000};

static const int no_autos[3] = {0, 0, 0};

static mw_pipelines_t spec_of(const char *text)
{
    char err[256];
    mw_pipelines_t p;
    if (mw_pipelines_parse(text, &p, err, sizeof(err)) != MW_OK)
        fail_msg("spec %s: %s", text, err);
    return p;
}

/* 3 stages, stage 1 bounded 1..3, stages 0 and 2 at most 2. */
static mw_pipelines_t three_stages(void)
{
    return spec_of("{\"name\": \"p\", \"slo_ms\": 50, \"stages\": [{\"max\": 2}, "
                   "{\"min\": 1, \"max\": 3}, {\"max\": 2}]}");
}

static mw_pipeline_load_t load_of(const int *workers, const double *busy, int64_t lag,
                                  double lag_rate)
{
    mw_pipeline_load_t l;
    memset(&l, 0, sizeof(l));
    l.nstages = 3;
    l.lag = lag;
    l.lag_rate = lag_rate;
    for (int s = 0; s < 3; s++) {
        l.stages[s].workers = l.stages[s].measured = workers[s];
        l.stages[s].busy = busy[s];
    }
    return l;
}

static void spec_reads_bounds_and_slo(void **state)
{
    (void)state;
    mw_pipelines_t p = three_stages();
    assert_int_equal(p.items[0].slo_ms, 50);
    assert_int_equal(p.items[0].stages[0].min, 1);
    assert_int_equal(p.items[0].stages[0].max, 2);
    assert_int_equal(p.items[0].stages[1].max, 3);
    mw_pipelines_fini(&p);
    p = spec_of("a:2");
    assert_int_equal(p.items[0].slo_ms, 0);
    assert_int_equal(p.items[0].stages[1].min, 1);
    assert_int_equal(p.items[0].stages[1].max, 0);
    mw_pipelines_fini(&p);
}

static void bad_bounds_and_slo_say_what_is_wrong(void **state)
{
    (void)state;
    static const struct {
        const char *spec, *expect;
    } cases[] = {
        {"{\"name\": \"a\", \"stages\": [{\"min\": 0}]}", "\"min\" must be a whole number"},
        {"{\"name\": \"a\", \"stages\": [{\"max\": 1.5}]}", "\"max\" must be a whole number"},
        {"{\"name\": \"a\", \"stages\": [{\"min\": 3, \"max\": 2}]}", "\"max\" 2 is below"},
        {"{\"name\": \"a\", \"stages\": 1, \"slo_ms\": \"fast\"}", "\"slo_ms\" must be"},
        {"{\"name\": \"a\", \"stages\": 1, \"slo_ms\": 0}", "\"slo_ms\" must be"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[256] = "";
        mw_pipelines_t p;
        int rc = mw_pipelines_parse(cases[i].spec, &p, err, sizeof(err));
        if (rc != MW_EINVAL || strstr(err, cases[i].expect) == NULL)
            fail_msg("spec '%s': rc %d, message '%s', expected '%s'", cases[i].spec, rc, err,
                     cases[i].expect);
    }
}

static void growing_backlog_scales_out_the_busiest_stage_one_step_at_a_time(void **state)
{
    (void)state;
    mw_pipelines_t p = three_stages();
    mw_scale_state_t st;
    int w[3] = {1, 1, 1};
    mw_scale_init(&st, &p.items[0], w, no_autos);
    double busy[3] = {0.3, 0.97, 0.2};
    mw_pipeline_load_t l = load_of(w, busy, 1500, 1200);
    mw_scale_decision_t d = mw_scale_decide(&st, &p.items[0], &l, &opt, 10000);
    assert_int_equal(d.action, MW_SCALE_OUT);
    assert_int_equal(d.stage, 1);
    assert_int_equal(d.from, 1);
    assert_int_equal(d.to, 2);
    assert_string_equal(d.reason, "busy 0.97, lag +1200/s");
    /* The new worker has not joined yet: wait. Then the cooldown. */
    assert_int_equal(mw_scale_decide(&st, &p.items[0], &l, &opt, 12000).action, MW_SCALE_NONE);
    w[1] = 2;
    l = load_of(w, busy, 1800, 300);
    assert_int_equal(mw_scale_decide(&st, &p.items[0], &l, &opt, 10500).action, MW_SCALE_NONE);
    d = mw_scale_decide(&st, &p.items[0], &l, &opt, 11000);
    assert_int_equal(d.action, MW_SCALE_OUT);
    assert_int_equal(d.to, 3);
    /* At max: no further step. */
    w[1] = 3;
    l = load_of(w, busy, 2000, 100);
    assert_int_equal(mw_scale_decide(&st, &p.items[0], &l, &opt, 20000).action, MW_SCALE_NONE);
    assert_int_equal(st.desired[0], 1);
    assert_int_equal(st.desired[2], 1);
    mw_pipelines_fini(&p);
}

static void busy_stage_without_backlog_or_slo_miss_is_left_alone(void **state)
{
    (void)state;
    mw_pipelines_t p = three_stages();
    mw_scale_state_t st;
    int w[3] = {1, 1, 1};
    mw_scale_init(&st, &p.items[0], w, no_autos);
    double busy[3] = {0.3, 0.97, 0.2};
    mw_pipeline_load_t l = load_of(w, busy, 50, 10); /* a small backlog */
    assert_int_equal(mw_scale_decide(&st, &p.items[0], &l, &opt, 10000).action, MW_SCALE_NONE);
    l = load_of(w, busy, 5000, -200); /* a large one, draining */
    assert_int_equal(mw_scale_decide(&st, &p.items[0], &l, &opt, 10000).action, MW_SCALE_NONE);
    l.p99_us = 80000; /* over slo_ms 50 */
    mw_scale_decision_t d = mw_scale_decide(&st, &p.items[0], &l, &opt, 10000);
    assert_int_equal(d.action, MW_SCALE_OUT);
    assert_non_null(strstr(d.reason, "p99 80 ms over slo 50 ms"));
    mw_pipelines_fini(&p);
}

static void sustained_spare_capacity_scales_in_never_below_min(void **state)
{
    (void)state;
    mw_pipelines_t p = three_stages();
    mw_scale_state_t st;
    int w[3] = {1, 3, 1};
    mw_scale_init(&st, &p.items[0], w, no_autos);
    double busy[3] = {0.1, 0.2, 0.1};
    mw_pipeline_load_t l = load_of(w, busy, 0, 0);
    assert_int_equal(mw_scale_decide(&st, &p.items[0], &l, &opt, 1000).action, MW_SCALE_NONE);
    /* A blip of backlog growth restarts the wait. */
    l = load_of(w, busy, 150, 40);
    assert_int_equal(mw_scale_decide(&st, &p.items[0], &l, &opt, 4000).action, MW_SCALE_NONE);
    l = load_of(w, busy, 0, 0);
    assert_int_equal(mw_scale_decide(&st, &p.items[0], &l, &opt, 5000).action, MW_SCALE_NONE);
    assert_int_equal(mw_scale_decide(&st, &p.items[0], &l, &opt, 9999).action, MW_SCALE_NONE);
    mw_scale_decision_t d = mw_scale_decide(&st, &p.items[0], &l, &opt, 10000);
    assert_int_equal(d.action, MW_SCALE_IN);
    assert_int_equal(d.stage, 1);
    assert_int_equal(d.to, 2);
    w[1] = 2;
    busy[1] = 0.3;
    l = load_of(w, busy, 0, 0);
    d = mw_scale_decide(&st, &p.items[0], &l, &opt, 16000);
    assert_int_equal(d.action, MW_SCALE_NONE); /* spare again only since 16000 */
    d = mw_scale_decide(&st, &p.items[0], &l, &opt, 21000);
    assert_int_equal(d.action, MW_SCALE_IN);
    assert_int_equal(d.to, 1);
    w[1] = 1;
    l = load_of(w, busy, 0, 0);
    for (int64_t t = 22000; t < 60000; t += 1000)
        assert_int_equal(mw_scale_decide(&st, &p.items[0], &l, &opt, t).action, MW_SCALE_NONE);
    assert_int_equal(st.desired[0], 1);
    assert_int_equal(st.desired[1], 1);
    assert_int_equal(st.desired[2], 1);
    mw_pipelines_fini(&p);
}

static void
scale_out_that_cannot_be_reached_freezes_decisions_for_scale_in_after_ms_only(void **state)
{
    (void)state;
    mw_pipelines_t p = three_stages();
    mw_scale_state_t st;
    int w[3] = {1, 1, 1};
    mw_scale_init(&st, &p.items[0], w, no_autos);
    double busy[3] = {0.2, 0.95, 0.2};
    mw_pipeline_load_t l = load_of(w, busy, 500, 100);
    mw_scale_decision_t d = mw_scale_decide(&st, &p.items[0], &l, &opt, 1000);
    assert_int_equal(d.action, MW_SCALE_OUT);
    assert_int_equal(d.to, 2);
    /* No slot for the second worker: stage 1 stays at one, the load falls. */
    busy[1] = 0.1;
    l = load_of(w, busy, 0, 0);
    for (int64_t t = 2000; t < 1000 + opt.scale_in_after_ms; t += 500)
        assert_int_equal(mw_scale_decide(&st, &p.items[0], &l, &opt, t).action, MW_SCALE_NONE);
    /* Past the deadline the spare capacity counts again: scaled back in. */
    d.action = MW_SCALE_NONE;
    for (int64_t t = 1000 + opt.scale_in_after_ms; t <= 30000 && d.action == MW_SCALE_NONE;
         t += 500)
        d = mw_scale_decide(&st, &p.items[0], &l, &opt, t);
    assert_int_equal(d.action, MW_SCALE_IN);
    assert_int_equal(d.stage, 1);
    assert_int_equal(d.to, 1);
    mw_pipelines_fini(&p);
}

static void init_clamps_counts_to_the_bounds(void **state)
{
    (void)state;
    mw_pipelines_t p = three_stages();
    mw_scale_state_t st;
    int w[3] = {0, 7, 2};
    mw_scale_init(&st, &p.items[0], w, no_autos);
    assert_int_equal(st.desired[0], 1);
    assert_int_equal(st.desired[1], 3);
    assert_int_equal(st.desired[2], 2);
    mw_pipelines_fini(&p);
}

/* load_of with autos[s] of each stage's workers started --stage auto. */
static mw_pipeline_load_t load_with_autos(const int *workers, const int *autos, const double *busy,
                                          int64_t lag, double lag_rate)
{
    mw_pipeline_load_t l = load_of(workers, busy, lag, lag_rate);
    for (int s = 0; s < 3; s++)
        l.stages[s].autos = autos[s];
    return l;
}

static void spare_auto_worker_moves_to_the_bottleneck_and_back(void **state)
{
    (void)state;
    mw_pipelines_t p = three_stages();
    const mw_pipeline_spec_t *ps = &p.items[0];
    mw_scale_state_t st;
    int w[3] = {2, 1, 2}, autos[3] = {1, 0, 1};
    mw_scale_init(&st, ps, w, autos);
    /* Stage 2 stays spare without one of its workers (0.2 * 2 = 0.4), stage 0 not (0.6). */
    double busy[3] = {0.3, 0.97, 0.2};
    mw_pipeline_load_t l = load_with_autos(w, autos, busy, 1500, 1200);
    mw_scale_decision_t d = mw_scale_decide(&st, ps, &l, &opt, 10000);
    assert_int_equal(d.action, MW_SCALE_MOVE);
    assert_int_equal(d.donor, 2);
    assert_int_equal(d.stage, 1);
    assert_int_equal(d.from, 1);
    assert_int_equal(d.to, 2);
    assert_string_equal(d.reason, "busy 0.97 vs 0.20, lag +1200/s");
    assert_int_equal(st.desired[1], 2);
    assert_int_equal(st.desired[2], 1);
    assert_int_equal(st.autos[1], 1);
    assert_int_equal(st.autos[2], 0);
    /* Moved: still the bottleneck, and no stage can give one more: a new worker. */
    w[1] = 2, w[2] = 1, autos[1] = 1, autos[2] = 0;
    l = load_with_autos(w, autos, busy, 1800, 300);
    d = mw_scale_decide(&st, ps, &l, &opt, 11000);
    assert_int_equal(d.action, MW_SCALE_OUT);
    assert_int_equal(d.to, 3);
    /* The load falls: after the sustained spare capacity, the moved worker goes back first. */
    w[1] = 3;
    double calm[3] = {0.3, 0.2, 0.3};
    l = load_with_autos(w, autos, calm, 0, 0);
    assert_int_equal(mw_scale_decide(&st, ps, &l, &opt, 20000).action, MW_SCALE_NONE);
    d = mw_scale_decide(&st, ps, &l, &opt, 25000);
    assert_int_equal(d.action, MW_SCALE_MOVE);
    assert_int_equal(d.donor, 1);
    assert_int_equal(d.stage, 2);
    assert_int_equal(d.to, 2);
    assert_non_null(strstr(d.reason, "back: busy 0.20 (0.30 with one less)"));
    assert_int_equal(st.desired[1], 2);
    assert_int_equal(st.autos[1], 0);
    assert_int_equal(st.autos[2], 1);
    /* Then the scale-out is scaled in as before. */
    w[1] = 2, w[2] = 2, autos[1] = 0, autos[2] = 1;
    l = load_with_autos(w, autos, calm, 0, 0);
    assert_int_equal(mw_scale_decide(&st, ps, &l, &opt, 26000).action, MW_SCALE_NONE);
    d = mw_scale_decide(&st, ps, &l, &opt, 31000);
    assert_int_equal(d.action, MW_SCALE_IN);
    assert_int_equal(d.stage, 1);
    assert_int_equal(d.to, 1);
    mw_pipelines_fini(&p);
}

static void no_move_from_a_busy_stage_its_min_or_without_auto_workers(void **state)
{
    (void)state;
    mw_pipelines_t p = spec_of("{\"name\": \"p\", \"stages\": [{\"min\": 2}, {\"max\": 3}, {}]}");
    const mw_pipeline_spec_t *ps = &p.items[0];
    int w[3] = {2, 1, 3}, autos[3] = {2, 0, 0};
    double busy[3] = {0.1, 0.97, 0.45}; /* stage 2: 0.68 without one */
    for (int c = 0; c < 3; c++) {
        mw_scale_state_t st;
        if (c == 1)
            autos[2] = 1, busy[2] = 0.9; /* an auto worker, on a busy stage */
        if (c == 2)
            autos[0] = autos[2] = 0, busy[2] = 0.1; /* spare, but no auto worker anywhere */
        mw_scale_init(&st, ps, w, autos);
        mw_pipeline_load_t l = load_with_autos(w, autos, busy, 1500, 1200);
        mw_scale_decision_t d = mw_scale_decide(&st, ps, &l, &opt, 10000);
        assert_int_equal(d.action, MW_SCALE_OUT);
        assert_int_equal(d.stage, 1);
        assert_int_equal(d.donor, -1);
    }
    mw_pipelines_fini(&p);
}

static void auto_workers_that_leave_or_join_take_their_desired_count_along(void **state)
{
    (void)state;
    mw_pipelines_t p = three_stages();
    const mw_pipeline_spec_t *ps = &p.items[0];
    mw_scale_state_t st;
    int w[3] = {1, 3, 1}, autos[3] = {0, 2, 0};
    mw_scale_init(&st, ps, w, autos);
    double busy[3] = {0.3, 0.6, 0.3};
    /* One auto worker is gone (and none turned up elsewhere). */
    w[1] = 2, autos[1] = 1;
    mw_pipeline_load_t l = load_with_autos(w, autos, busy, 0, 0);
    assert_int_equal(mw_scale_decide(&st, ps, &l, &opt, 1000).action, MW_SCALE_NONE);
    assert_int_equal(st.desired[1], 2);
    assert_int_equal(st.autos[1], 1);
    /* On its way to another stage, it still counts. */
    w[1] = 1, w[2] = 2, autos[1] = 0, autos[2] = 1;
    l = load_with_autos(w, autos, busy, 0, 0);
    mw_scale_decide(&st, ps, &l, &opt, 2000);
    assert_int_equal(st.desired[1], 2);
    assert_int_equal(st.autos[1], 1);
    /* Two new ones at stage 2 (with the one on its way): desired up to max (2) only. */
    w[2] = 4, autos[2] = 3;
    l = load_with_autos(w, autos, busy, 0, 0);
    mw_scale_decide(&st, ps, &l, &opt, 3000);
    assert_int_equal(st.desired[2], 2);
    assert_int_equal(st.autos[2], 2);
    assert_int_equal(st.autos[1], 1);
    mw_pipelines_fini(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(spec_reads_bounds_and_slo),
        cmocka_unit_test(bad_bounds_and_slo_say_what_is_wrong),
        cmocka_unit_test(growing_backlog_scales_out_the_busiest_stage_one_step_at_a_time),
        cmocka_unit_test(busy_stage_without_backlog_or_slo_miss_is_left_alone),
        cmocka_unit_test(sustained_spare_capacity_scales_in_never_below_min),
        cmocka_unit_test(
            scale_out_that_cannot_be_reached_freezes_decisions_for_scale_in_after_ms_only),
        cmocka_unit_test(init_clamps_counts_to_the_bounds),
        cmocka_unit_test(spare_auto_worker_moves_to_the_bottleneck_and_back),
        cmocka_unit_test(no_move_from_a_busy_stage_its_min_or_without_auto_workers),
        cmocka_unit_test(auto_workers_that_leave_or_join_take_their_desired_count_along),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
