/* The scaling decision (scale.h). */
#include "scale.h"

#include <stdio.h>
#include <string.h>

static int clamp(const mw_stage_spec_t *ss, int n)
{
    if (n < ss->min)
        n = ss->min;
    if (ss->max > 0 && n > ss->max)
        n = ss->max;
    return n;
}

void mw_scale_init(mw_scale_state_t *st, const mw_pipeline_spec_t *spec, const int *counts)
{
    memset(st, 0, sizeof(*st));
    for (int s = 0; s < spec->nstages; s++)
        st->desired[s] = clamp(&spec->stages[s], counts[s]);
    st->initialized = 1;
}

static mw_scale_decision_t change(mw_scale_state_t *st, mw_scale_action_t action, int stage, int to,
                                  int64_t now_ms)
{
    mw_scale_decision_t d = {
        .action = action, .stage = stage, .from = st->desired[stage], .to = to};
    st->desired[stage] = to;
    st->changed_ms = now_ms;
    st->spare_since_ms = 0;
    return d;
}

mw_scale_decision_t mw_scale_decide(mw_scale_state_t *st, const mw_pipeline_spec_t *spec,
                                    const mw_pipeline_load_t *load, const mw_scale_options_t *opt,
                                    int64_t now_ms)
{
    mw_scale_decision_t none = {.action = MW_SCALE_NONE, .stage = -1};
    int settled = 1, spare = 1, unmeasured = 0;
    int busiest = -1, idlest = -1;
    double idlest_after = 2;
    for (int s = 0; s < spec->nstages; s++) {
        const mw_stage_load_t *sl = &load->stages[s];
        settled &= sl->workers >= st->desired[s]; /* more: started by hand, or draining soon */
        unmeasured |= sl->measured == 0;
        if (busiest < 0 || sl->busy > load->stages[busiest].busy)
            busiest = s;
        /* Busy with one worker less, if the load spreads evenly over the rest. */
        double after = sl->workers > 1 ? sl->busy * sl->workers / (sl->workers - 1) : 2;
        spare &= sl->busy < opt->busy_low;
        if (st->desired[s] > spec->stages[s].min && after < opt->busy_high &&
            after < idlest_after) {
            idlest = s;
            idlest_after = after;
        }
    }
    /* Bad news is judged at once, spare capacity only when it lasts. */
    int slo_missed = spec->slo_ms > 0 && load->p99_us > spec->slo_ms * 1000;
    int growing = load->lag >= opt->lag_min && load->lag_rate > 0;
    spare &= !slo_missed && load->lag_rate <= 0 && load->lag < opt->lag_min && !unmeasured;
    if (!spare)
        st->spare_since_ms = 0;
    else if (st->spare_since_ms == 0)
        st->spare_since_ms = now_ms;
    if (!settled || unmeasured ||
        (st->changed_ms != 0 && now_ms - st->changed_ms < opt->cooldown_ms))
        return none;

    const mw_stage_load_t *b = &load->stages[busiest];
    const mw_stage_spec_t *bs = &spec->stages[busiest];
    if ((growing || slo_missed) && b->busy >= opt->busy_high &&
        (bs->max == 0 || st->desired[busiest] < bs->max)) {
        mw_scale_decision_t d = change(st, MW_SCALE_OUT, busiest, st->desired[busiest] + 1, now_ms);
        int len =
            snprintf(d.reason, sizeof(d.reason), "busy %.2f, lag %+.0f/s", b->busy, load->lag_rate);
        if (slo_missed && len > 0 && (size_t)len < sizeof(d.reason))
            snprintf(d.reason + len, sizeof(d.reason) - (size_t)len,
                     ", p99 %lld ms over slo %lld ms", (long long)(load->p99_us / 1000),
                     (long long)spec->slo_ms);
        return d;
    }
    if (spare && idlest >= 0 && now_ms - st->spare_since_ms >= opt->scale_in_after_ms) {
        int64_t spare_ms = now_ms - st->spare_since_ms;
        double busy = load->stages[idlest].busy;
        mw_scale_decision_t d = change(st, MW_SCALE_IN, idlest, st->desired[idlest] - 1, now_ms);
        snprintf(d.reason, sizeof(d.reason),
                 "busy %.2f (%.2f with one less), every stage under %.2f for %lld ms, lag %+.0f/s",
                 busy, idlest_after, opt->busy_low, (long long)spare_ms, load->lag_rate);
        return d;
    }
    return none;
}
