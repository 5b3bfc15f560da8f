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

void mw_scale_init(mw_scale_state_t *st, const mw_pipeline_spec_t *spec, const int *counts,
                   const int *autos)
{
    memset(st, 0, sizeof(*st));
    for (int s = 0; s < spec->nstages; s++) {
        st->desired[s] = clamp(&spec->stages[s], counts[s]);
        st->autos[s] = autos[s] < 0 ? 0 : autos[s] > st->desired[s] ? st->desired[s] : autos[s];
    }
    st->initialized = 1;
}

static mw_scale_decision_t change(mw_scale_state_t *st, mw_scale_action_t action, int stage, int to,
                                  int64_t now_ms)
{
    mw_scale_decision_t d = {
        .action = action, .stage = stage, .from = st->desired[stage], .to = to, .donor = -1};
    st->desired[stage] = to;
    if (st->autos[stage] > to)
        st->autos[stage] = to;
    st->changed_ms = now_ms;
    st->spare_since_ms = 0;
    return d;
}

/* Moves one --stage auto worker from donor to stage. */
static mw_scale_decision_t move(mw_scale_state_t *st, int donor, int stage, int64_t now_ms)
{
    mw_scale_decision_t d = change(st, MW_SCALE_MOVE, stage, st->desired[stage] + 1, now_ms);
    d.donor = donor;
    st->desired[donor]--;
    st->autos[donor]--;
    st->autos[stage]++;
    return d;
}

/* Busy with one worker less, if the load spreads evenly over the rest. */
static double busy_without_one(const mw_stage_load_t *sl)
{
    return sl->workers > 1 ? sl->busy * sl->workers / (sl->workers - 1) : 2;
}

/* A stage that can give an auto worker to stage to and stay spare, the least
 * busy without it; -1 when none. */
static int pick_donor(const mw_scale_state_t *st, const mw_pipeline_spec_t *spec,
                      const mw_pipeline_load_t *load, const mw_scale_options_t *opt, int to)
{
    int donor = -1;
    double least = opt->busy_low;
    for (int s = 0; s < spec->nstages; s++) {
        double after = busy_without_one(&load->stages[s]);
        if (s != to && st->autos[s] > 0 && load->stages[s].autos > 0 &&
            st->desired[s] > spec->stages[s].min && after < least) {
            donor = s;
            least = after;
        }
    }
    return donor;
}

/* Appends ", p99 X ms over slo Y ms" to reason when the SLO is missed. */
static void add_slo(char *reason, size_t size, int len, const mw_pipeline_spec_t *spec,
                    const mw_pipeline_load_t *load)
{
    if (len > 0 && (size_t)len < size)
        snprintf(reason + len, size - (size_t)len, ", p99 %lld ms over slo %lld ms",
                 (long long)(load->p99_us / 1000), (long long)spec->slo_ms);
}

/* The auto workers placed follow those measured: one that left takes its
 * place with it (desired too, down to min: below it the agents replace it),
 * one that joined adds its place (desired too, up to max). */
static void follow_autos(mw_scale_state_t *st, const mw_pipeline_spec_t *spec,
                         const mw_pipeline_load_t *load)
{
    int placed = 0, measured = 0;
    for (int s = 0; s < spec->nstages; s++) {
        placed += st->autos[s];
        measured += load->stages[s].autos;
    }
    for (int s = 0; s < spec->nstages && measured < placed; s++) {
        while (st->autos[s] > load->stages[s].autos && measured < placed) {
            st->autos[s]--;
            st->desired[s] = clamp(&spec->stages[s], st->desired[s] - 1);
            placed--;
        }
    }
    for (int s = 0; s < spec->nstages && measured > placed; s++) {
        while (st->autos[s] < load->stages[s].autos && measured > placed) {
            st->desired[s] = clamp(&spec->stages[s], st->desired[s] + 1);
            if (st->autos[s] == st->desired[s])
                break; /* at max */
            st->autos[s]++;
            placed++;
        }
    }
}

mw_scale_decision_t mw_scale_decide(mw_scale_state_t *st, const mw_pipeline_spec_t *spec,
                                    const mw_pipeline_load_t *load, const mw_scale_options_t *opt,
                                    int64_t now_ms)
{
    mw_scale_decision_t none = {.action = MW_SCALE_NONE, .stage = -1, .donor = -1};
    follow_autos(st, spec, load);
    int settled = 1, spare = 1, unmeasured = 0;
    int busiest = -1, idlest = -1;
    double idlest_after = 2;
    for (int s = 0; s < spec->nstages; s++) {
        const mw_stage_load_t *sl = &load->stages[s];
        settled &= sl->workers >= st->desired[s]; /* more: started by hand, or draining soon */
        unmeasured |= sl->measured == 0;
        if (busiest < 0 || sl->busy > load->stages[busiest].busy)
            busiest = s;
        /* Below its desired count, one less stops no worker. */
        double after = sl->workers < st->desired[s] ? sl->busy : busy_without_one(sl);
        spare &= sl->busy < opt->busy_low;
        /* A scale-in stops an agent's worker: auto workers only move. */
        if (st->desired[s] > spec->stages[s].min && st->desired[s] > st->autos[s] &&
            after < opt->busy_high && after < idlest_after) {
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
    /* A change that was not reached within scale_in_after_ms (no free slot,
     * a worker that keeps failing) no longer holds decisions back: else the
     * pipeline would never be scaled again, not even in. */
    settled |= st->changed_ms != 0 && now_ms - st->changed_ms >= opt->scale_in_after_ms;
    if (!settled || unmeasured ||
        (st->changed_ms != 0 && now_ms - st->changed_ms < opt->cooldown_ms))
        return none;

    const mw_stage_load_t *b = &load->stages[busiest];
    const mw_stage_spec_t *bs = &spec->stages[busiest];
    if ((growing || slo_missed) && b->busy >= opt->busy_high &&
        (bs->max == 0 || st->desired[busiest] < bs->max)) {
        int donor = pick_donor(st, spec, load, opt, busiest);
        mw_scale_decision_t d;
        int len;
        if (donor >= 0) {
            double donor_busy = load->stages[donor].busy;
            d = move(st, donor, busiest, now_ms);
            if (st->nmoved == MW_SCALE_MOVES_MAX)
                memmove(st->moved, st->moved + 1, sizeof(st->moved[0]) * --st->nmoved);
            st->moved[st->nmoved].from = donor;
            st->moved[st->nmoved++].to = busiest;
            len = snprintf(d.reason, sizeof(d.reason), "busy %.2f vs %.2f, lag %+.0f/s", b->busy,
                           donor_busy, load->lag_rate);
        } else {
            d = change(st, MW_SCALE_OUT, busiest, st->desired[busiest] + 1, now_ms);
            len = snprintf(d.reason, sizeof(d.reason), "busy %.2f, lag %+.0f/s", b->busy,
                           load->lag_rate);
        }
        if (slo_missed)
            add_slo(d.reason, sizeof(d.reason), len, spec, load);
        return d;
    }
    if (!spare || now_ms - st->spare_since_ms < opt->scale_in_after_ms)
        return none;
    int64_t spare_ms = now_ms - st->spare_since_ms;
    /* Spare capacity gives moved workers back first, the last move first. */
    while (st->nmoved > 0) {
        int home = st->moved[st->nmoved - 1].from, at = st->moved[st->nmoved - 1].to;
        const mw_stage_load_t *sl = &load->stages[at];
        double after = busy_without_one(sl);
        st->nmoved--;
        if (st->autos[at] == 0 || sl->autos == 0 || st->desired[at] <= spec->stages[at].min ||
            after >= opt->busy_high ||
            (spec->stages[home].max > 0 && st->desired[home] >= spec->stages[home].max))
            continue; /* no longer possible: forgotten */
        mw_scale_decision_t d = move(st, at, home, now_ms);
        snprintf(d.reason, sizeof(d.reason),
                 "back: busy %.2f (%.2f with one less), every stage under %.2f for %lld ms, "
                 "lag %+.0f/s",
                 sl->busy, after, opt->busy_low, (long long)spare_ms, load->lag_rate);
        return d;
    }
    if (idlest >= 0) {
        double busy = load->stages[idlest].busy;
        mw_scale_decision_t d = change(st, MW_SCALE_IN, idlest, st->desired[idlest] - 1, now_ms);
        snprintf(d.reason, sizeof(d.reason),
                 "busy %.2f (%.2f with one less), every stage under %.2f for %lld ms, lag %+.0f/s",
                 busy, idlest_after, opt->busy_low, (long long)spare_ms, load->lag_rate);
        return d;
    }
    return none;
}
