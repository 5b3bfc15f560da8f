/* Elasticity benchmarks with real processes on the Redis and Kafka of
 * tests/run.sh: recovery of the committed-result rate after kill -9 of a
 * mid-stage worker under load, and scale-out from a new worker's start to its
 * first served request. JSON lines on stdout. */
#include "clock.h"
#include "err.h"
#include "harness.h"
#include "model/model.h"
#include "mwt_load.h"
#include "mwt_pipeline.h"
#include "redis.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BENCH     "bench_recovery"
#define WINDOW_MS 250.0  /* printed to stderr, for diagnosis */
#define SLIDE_MS  1000.0 /* rate windows of the recovery criterion */
#define HOLD_MS   2000.0 /* recovered: the rate holds for this long */
#define STEP_MS   50.0

/* --- 4. recovery after kill -9 of a mid-stage worker; 5. scale-out ----------- */

typedef struct feeder {
    mwt_load_t *l;
    int backlog;
    atomic_int stop;
} feeder_t;

/* Keeps about `backlog` requests unanswered, so the pipeline is always busy. */
static void *feed(void *arg)
{
    feeder_t *f = arg;
    while (!atomic_load(&f->stop)) {
        if (atomic_load(&f->l->next) - atomic_load(&f->l->ngot) < f->backlog)
            mwt_load_submit(f->l, 10);
        else
            mwt_sleep_ms(1);
        rd_kafka_poll(f->l->prod, 0);
    }
    rd_kafka_flush(f->l->prod, 10000);
    return NULL;
}

/* Results seen in [t0, t1) (monotonic us). */
static int results_between(const mwt_load_t *l, double t0, double t1)
{
    int n = 0, last = atomic_load(&l->next);
    for (int i = 0; i < last; i++)
        n += l->got[i] >= t0 && l->got[i] < t1;
    return n;
}

/* Whether every SLIDE_MS window starting in [t0, t1] (ms after t_kill) holds
 * at least 90 % of rate. */
static int windows_hold(const mwt_load_t *l, double t_kill, double t0, double t1, double rate)
{
    for (double t = t0; t <= t1; t += STEP_MS) {
        double a = t_kill + t * 1e3;
        if (results_between(l, a, a + SLIDE_MS * 1e3) / (SLIDE_MS / 1e3) < 0.9 * rate)
            return 0;
    }
    return 1;
}

static void collect_for(mwt_load_t *l, int64_t ms)
{
    int64_t end = mw_now_ms() + ms;
    while (mw_now_ms() < end)
        mwt_load_collect(l, MWT_LOAD_MAX_REQ, end - mw_now_ms());
}

static void bench_recovery_and_scale_out(void)
{
    static const int per_stage[] = {1, 2, 1};
    mw_model_spec_t spec = mwt_load_light_model(1024, 64, 8, 3);
    mwt_load_t l;
    mwt_pipeline_t *p =
        mwt_load_pipeline("rec", 3, &spec, mwt_load_fast_hb_flags, per_stage, 1500, &l);
    char err[256];
    mw_redis_t *r = mw_redis_new(&p->cfg, 0, err, sizeof(err));
    if (r == NULL)
        mwt_die("redis", err);
    feeder_t f = {.l = &l, .backlog = 400};
    pthread_t th;
    pthread_create(&th, NULL, feed, &f);

    enum { REPS = 3, PRE_MS = 3000, POST_MS = 6000, LOST_MS = 3000 };
    double rec[REPS], rec_end[REPS], lost[REPS], pre[REPS], scale[REPS], steady_below[REPS];
    int victim = 1; /* worker indexes: 0 = stage 0, 1 and 2 = stage 1, 3 = stage 2 */
    for (int rep = 0; rep < REPS; rep++) {
        collect_for(&l, PRE_MS + 200);
        double t_kill = mwt_now_us();
        pre[rep] = results_between(&l, t_kill - PRE_MS * 1e3, t_kill) / (PRE_MS / 1e3);
        mwt_pipeline_signal(p, victim, SIGKILL);
        collect_for(&l, POST_MS + 300);
        fprintf(stderr, "%s: kill %d: pre-fault %.0f req/s; results per %.0f ms before:", BENCH,
                rep, pre[rep], WINDOW_MS);
        for (int w = -(int)(PRE_MS / WINDOW_MS); w < 0; w++) {
            double a = t_kill + w * WINDOW_MS * 1e3;
            fprintf(stderr, " %d", results_between(&l, a, a + WINDOW_MS * 1e3));
        }
        fprintf(stderr, "; after:");
        for (int w = 0; w < (int)(POST_MS / WINDOW_MS); w++) {
            double a = t_kill + w * WINDOW_MS * 1e3;
            fprintf(stderr, " %d", results_between(&l, a, a + WINDOW_MS * 1e3));
        }
        fprintf(stderr, "\n");
        /* Recovered at T: the first T after which every SLIDE_MS window for
         * HOLD_MS holds >= 90 %; stricter, rec_end: every window from T to the
         * end of the observation (a dip seconds later, fault or not, counts). */
        rec[rep] = rec_end[rep] = POST_MS; /* not recovered within the observation */
        for (double t = 0; t + HOLD_MS <= POST_MS; t += STEP_MS) {
            if (windows_hold(&l, t_kill, t, t + HOLD_MS - SLIDE_MS, pre[rep])) {
                rec[rep] = t;
                break;
            }
        }
        for (double t = POST_MS - SLIDE_MS; t >= 0 && windows_hold(&l, t_kill, t, t, pre[rep]);
             t -= STEP_MS)
            rec_end[rep] = t;
        /* The same criterion on the steady state before the kill: how often a
         * SLIDE_MS window falls under 90 % without any fault (lumpy commits). */
        int below = 0, total = 0;
        for (double t = -PRE_MS; t + SLIDE_MS <= 0; t += STEP_MS, total++) {
            double a = t_kill + t * 1e3;
            below += results_between(&l, a, a + SLIDE_MS * 1e3) / (SLIDE_MS / 1e3) < 0.9 * pre[rep];
        }
        steady_below[rep] = total > 0 ? (double)below / total : 0;
        double got = results_between(&l, t_kill, t_kill + LOST_MS * 1e3);
        lost[rep] =
            pre[rep] * LOST_MS / 1e3 > got ? (pre[rep] * LOST_MS / 1e3 - got) / pre[rep] * 1e3 : 0;

        /* Scale-out: a new stage-1 worker; its first served request. */
        char id[64];
        snprintf(id, sizeof(id), "rec-s1-new%d", rep);
        double t0 = mwt_now_us();
        int idx = mwt_pipeline_worker(p, 1, id);
        double served = 0;
        while (mwt_now_us() - t0 < 10e6) {
            mwt_load_collect(&l, MWT_LOAD_MAX_REQ, 5);
            if (mwt_worker_field(r, id, "processed") > 0) {
                served = mwt_now_us();
                break;
            }
        }
        if (served == 0)
            mwt_die("scale-out", "the new worker served nothing within 10 s");
        scale[rep] = (served - t0) / 1e3;
        victim = rep == 0 ? 2 : idx - 1; /* the older of the two stage-1 workers */
    }
    atomic_store(&f.stop, 1);
    pthread_join(th, NULL);

    double worst = 0, sworst = 0, eworst = 0;
    for (int i = 0; i < REPS; i++) {
        worst = rec[i] > worst ? rec[i] : worst;
        eworst = rec_end[i] > eworst ? rec_end[i] : eworst;
        sworst = scale[i] > sworst ? scale[i] : sworst;
    }
    char extra[1200];
    snprintf(extra, sizeof(extra),
             ", \"max\": %.0f, \"goal\": \"< 2000\", \"until_end_ms\": %.0f, "
             "\"until_end_max_ms\": %.0f, \"pre_fault_req_s\": %.0f, "
             "\"lost_throughput_ms\": %.0f, \"steady_windows_below_90_percent\": %.2f, "
             "\"kills\": %d, \"errors\": %d, \"note\": \"3 "
             "stages (1, 2, 1 CPU workers, 4 KiB requests, backlog kept at 400), kill -9 of a "
             "stage-1 worker; value: first time T after the kill from which every %.0f ms window "
             "(sampled every %.0f ms) for %.0f ms holds >= 90%% of the committed-result rate of "
             "the %d ms before the kill (%d: not within the observation); until_end: the same "
             "with every window to the end of the observation; lost_throughput_ms: results "
             "missing in the %d ms after the kill, in ms of pre-fault rate; medians of %d "
             "kills; steady_windows_below_90_percent: share of the pre-fault windows that "
             "already fail the criterion\"",
             worst, mwt_median(rec_end, REPS), eworst, mwt_median(pre, REPS),
             mwt_median(lost, REPS), mwt_median(steady_below, REPS), REPS, l.errors, SLIDE_MS,
             STEP_MS, HOLD_MS, PRE_MS, POST_MS, LOST_MS, REPS);
    mwt_emit("recovery_ms", mwt_median(rec, REPS), "ms", extra);
    snprintf(extra, sizeof(extra),
             ", \"max\": %.0f, \"goal\": \"< 1000\", \"samples\": %d, \"note\": \"under load, "
             "mw-worker --stage=1 spawned to its hash showing processed > 0 (heartbeat every "
             "50 ms, so up to 50 ms late); model already on disk\"",
             sworst, REPS);
    mwt_emit("scale_out_first_request_ms", mwt_median(scale, REPS), "ms", extra);
    mw_redis_destroy(r);
    mwt_load_pipeline_stop(p, &l);
}

int main(void)
{
    srand((unsigned)getpid());
    bench_recovery_and_scale_out();
    return 0;
}
