/* The scaling decision (coordinator/scale.c) and the spec fields it reads
 * (per-stage min/max, slo_ms): one step at a time, the busiest stage only,
 * within bounds, with cooldown and sustained spare capacity. */
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
    mw_scale_init(&st, &p.items[0], w);
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
    mw_scale_init(&st, &p.items[0], w);
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
    mw_scale_init(&st, &p.items[0], w);
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

static void init_clamps_counts_to_the_bounds(void **state)
{
    (void)state;
    mw_pipelines_t p = three_stages();
    mw_scale_state_t st;
    int w[3] = {0, 7, 2};
    mw_scale_init(&st, &p.items[0], w);
    assert_int_equal(st.desired[0], 1);
    assert_int_equal(st.desired[1], 3);
    assert_int_equal(st.desired[2], 2);
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
        cmocka_unit_test(init_clamps_counts_to_the_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
