/* Batched serving at saturation on `make run`'s pipeline shape (2 stages x 2 CPU
 * workers, make run's model, f32 [R, 64] requests, 4 partitions), with real
 * processes on the Redis and Kafka of tests/run.sh: throughput against a Kafka
 * exactly-once relay on the same broker (consume, produce the value unchanged,
 * commit a transaction with the input offsets every 100 ms; no compute), both
 * draining backlogs made visible at once (mwt_batch_backlog), requests/s
 * and rows/s at 1, 8 and 64 rows per request, mean rows per stage call, the
 * stage-0 workers' CPU per request, throughput with group commit (the default)
 * against a pipeline whose workers commit at most every 100 ms (the timer of
 * earlier versions), and the latency of one request at a time and at half the
 * saturation throughput (against the relay, committing every 10 ms, under the
 * same paced load), and the latency of one request at a time answered on
 * a reply topic (kafka_replyTopic) next to P.results. JSON lines on stdout.
 *
 * MW_BENCH_ONLY=relay|rows|commit|latency|reply runs one part only. */
#include "clock.h"
#include "err.h"
#include "harness.h"
#include "kafka.h"
#include "model/model.h"
#include "mwt_batch.h"
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

#define BENCH      "bench_batch"
#define SETUP_MS   60000
#define PARTITIONS 4
#define WIDTH      64  /* make run's model: --inputs 64 */
#define MAX_ROWS   64  /* the largest request measured */
#define COMMIT_MS  100 /* results.commit_interval_ms's default */
#define STAGES     2
#define PER_STAGE  2
#define WORKERS    (STAGES * PER_STAGE)

enum { REPS = 3 };

#define LONE         300 /* lone requests timed, after LONE_WARM */
#define LONE_WARM    20
#define LONE_BLOCK   25 /* the reply part alternates P.results and the reply topic */
#define HALF_S       10 /* seconds of paced load at half the saturation */
#define RELAY_GAP_MS 10 /* results.commit_min_gap_ms's default */

/* --- the relay: Kafka's exactly-once floor ------------------------------------ */

/* One member of the relay's consumer group with a transactional producer of its
 * own, as an origin worker has. */
typedef struct relay {
    const char *in, *out, *group;
    char txn_id[200];
    const atomic_int *stop;
    int commit_ms;       /* a commit of what was relayed every commit_ms */
    atomic_int assigned; /* partitions assigned now */
    rd_kafka_t *cons, *prod;
    int txn_open;
    pthread_t th;
} relay_t;

/* Commits the open transaction with the consumed position of every assigned
 * partition, as an origin commits its results with their input offsets. */
static void relay_commit(relay_t *rl)
{
    if (!rl->txn_open)
        return;
    rd_kafka_topic_partition_list_t *pos = NULL;
    rd_kafka_resp_err_t err = rd_kafka_assignment(rl->cons, &pos);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
        err = rd_kafka_position(rl->cons, pos);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
        mwt_die("relay position", rd_kafka_err2str(err));
    rd_kafka_consumer_group_metadata_t *cgmd = rd_kafka_consumer_group_metadata(rl->cons);
    rd_kafka_error_t *e = rd_kafka_send_offsets_to_transaction(rl->prod, pos, cgmd, 30000);
    rd_kafka_consumer_group_metadata_destroy(cgmd);
    rd_kafka_topic_partition_list_destroy(pos);
    if (e == NULL)
        e = rd_kafka_commit_transaction(rl->prod, 30000);
    if (e != NULL)
        mwt_die("relay commit", rd_kafka_error_string(e));
    rl->txn_open = 0;
}

/* The consumer is cooperative-sticky (mw_kafka_consumer_new): what was relayed
 * from revoked partitions is committed while they are still ours. */
static void relay_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                            rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    relay_t *rl = opaque;
    rd_kafka_error_t *e;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        e = rd_kafka_incremental_assign(rk, parts);
        atomic_fetch_add(&rl->assigned, parts->cnt);
    } else {
        relay_commit(rl);
        e = rd_kafka_incremental_unassign(rk, parts);
        atomic_fetch_sub(&rl->assigned, parts->cnt);
    }
    if (e != NULL)
        mwt_die("relay rebalance", rd_kafka_error_string(e));
}

/* Each record consumed is produced to rl->out (same partition, key, headers
 * and value) inside a transaction committed every rl->commit_ms. */
static void relay_one(relay_t *rl, const rd_kafka_message_t *m)
{
    if (!rl->txn_open) {
        rd_kafka_error_t *e = rd_kafka_begin_transaction(rl->prod);
        if (e != NULL)
            mwt_die("relay begin", rd_kafka_error_string(e));
        rl->txn_open = 1;
    }
    rd_kafka_headers_t *hdrs = NULL;
    if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR)
        hdrs = rd_kafka_headers_copy(hdrs);
    rd_kafka_resp_err_t err;
    /* The headers go to the producer on success, stay ours on failure. */
    while ((err = rd_kafka_producev(
                rl->prod, RD_KAFKA_V_TOPIC(rl->out), RD_KAFKA_V_PARTITION(m->partition),
                RD_KAFKA_V_KEY(m->key, m->key_len), RD_KAFKA_V_VALUE(m->payload, m->len),
                RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                RD_KAFKA_V_END)) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
        rd_kafka_poll(rl->prod, 10);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
        mwt_die("relay produce", rd_kafka_err2str(err));
}

static void *relay_run(void *arg)
{
    relay_t *rl = arg;
    char err[512];
    mw_config_t cfg;
    mwt_config(&cfg);
    mw_kafka_hooks_t hooks = {.rebalance_cb = relay_rebalance, .opaque = rl};
    rl->prod = mw_kafka_producer_new(&cfg, rl->txn_id, NULL, err, sizeof(err));
    if (rl->prod == NULL)
        mwt_die("relay producer", err);
    rl->cons = mw_kafka_consumer_new(&cfg, rl->group, &hooks, err, sizeof(err));
    mw_config_fini(&cfg);
    if (rl->cons == NULL)
        mwt_die("relay consumer", err);
    rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(sub, rl->in, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t rerr = rd_kafka_subscribe(rl->cons, sub);
    rd_kafka_topic_partition_list_destroy(sub);
    if (rerr != RD_KAFKA_RESP_ERR_NO_ERROR)
        mwt_die("relay subscribe", rd_kafka_err2str(rerr));
    int64_t last_commit = mw_now_ms();
    while (!atomic_load(rl->stop)) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rl->cons, 5);
        if (m != NULL) {
            if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR)
                relay_one(rl, m);
            rd_kafka_message_destroy(m);
        }
        rd_kafka_poll(rl->prod, 0);
        if (mw_now_ms() - last_commit >= rl->commit_ms) {
            relay_commit(rl);
            last_commit = mw_now_ms();
        }
    }
    relay_commit(rl);
    mw_kafka_destroy(rl->cons); /* leaves the group: revokes (nothing left to commit) */
    mw_kafka_destroy(rl->prod);
    return NULL;
}

/* As many relay members as the pipeline has origins, on <name>.requests and
 * <name>.results (PARTITIONS partitions), and a load on them (raw results). */
typedef struct relays {
    char in[200], out[200], group[200];
    atomic_int stop;
    relay_t rl[PER_STAGE];
    mwt_load_t l;
} relays_t;

static void relays_start(relays_t *g, const char *name, int commit_ms)
{
    memset(g, 0, sizeof(*g));
    snprintf(g->in, sizeof(g->in), "%s.requests", name);
    snprintf(g->out, sizeof(g->out), "%s.results", name);
    snprintf(g->group, sizeof(g->group), "%s.group", name);
    const char *names[] = {g->in, g->out};
    mwt_load_create_topics(names, 2, PARTITIONS);
    for (int i = 0; i < PER_STAGE; i++) {
        relay_t *rl = &g->rl[i];
        rl->in = g->in;
        rl->out = g->out;
        rl->group = g->group;
        rl->stop = &g->stop;
        rl->commit_ms = commit_ms;
        snprintf(rl->txn_id, sizeof(rl->txn_id), "%s.txn%d", name, i);
        if (pthread_create(&rl->th, NULL, relay_run, rl) != 0)
            mwt_die("relay", "no thread");
    }
    if (!mwt_wait_for(atomic_load(&g->rl[0].assigned) > 0 && atomic_load(&g->rl[1].assigned) > 0 &&
                          atomic_load(&g->rl[0].assigned) + atomic_load(&g->rl[1].assigned) ==
                              PARTITIONS,
                      SETUP_MS))
        mwt_die("relay", "the members did not both get partitions");
    mwt_batch_init(&g->l, name, WIDTH, 1, PARTITIONS, 1);
}

static void relays_stop(relays_t *g)
{
    atomic_store(&g->stop, 1);
    for (int i = 0; i < PER_STAGE; i++)
        pthread_join(g->rl[i].th, NULL);
    mwt_load_fini(&g->l);
}

/* --- the pipeline ----------------------------------------------------------- */

typedef struct bench {
    mwt_pipeline_t *p;
    mw_redis_t *r;
    mwt_load_t l;
    char ids[WORKERS][32];
    long long rows_sent; /* rows of every request submitted to the pipeline */
} bench_t;

/* Per stage: worker:{id}:stats processed (stage calls) and rows, summed. */
typedef struct usage {
    long long calls[STAGES], rows[STAGES];
} usage_t;

static mwt_pipeline_t *live[2]; /* killed when the program exits early (die) */

static void kill_live(void)
{
    for (int i = 0; i < 2; i++)
        mwt_pipeline_destroy(live[i]);
}

static void usage_read(bench_t *b, usage_t *u)
{
    char id[64];
    memset(u, 0, sizeof(*u));
    for (int i = 0; i < b->p->nworkers; i++) {
        snprintf(id, sizeof(id), "%s:stats", b->ids[i]); /* worker:{id}:stats */
        long long calls = mwt_worker_field(b->r, id, "processed");
        long long rows = mwt_worker_field(b->r, id, "rows");
        u->calls[b->p->stages[i]] += calls > 0 ? calls : 0;
        u->rows[b->p->stages[i]] += rows > 0 ? rows : 0;
    }
}

/* Waits until the workers' counters (written at each heartbeat) hold every row
 * submitted so far, then reads them. */
static void usage_settled(bench_t *b, usage_t *u)
{
    if (!mwt_wait_for((usage_read(b, u), u->rows[0] >= b->rows_sent && u->rows[1] >= b->rows_sent),
                      10000))
        fprintf(stderr, "%s: worker counters behind: %lld and %lld of %lld rows\n", BENCH,
                u->rows[0], u->rows[1], b->rows_sent);
}

/* CPU ticks of the workers of one stage. */
static double stage_ticks(const mwt_pipeline_t *p, int stage)
{
    double t = 0;
    for (int i = 0; i < p->nworkers; i++)
        if (p->stages[i] == stage && p->pids[i] > 0)
            t += mwt_cpu_ticks(p->pids[i]);
    return t;
}

/* make run's model in a cluster of its own (so that a second pipeline can run
 * beside it), workers with `flags`. */
static void pipeline_start(bench_t *b, const char *suffix, const char *const *flags)
{
    char err[256];
    b->p = mwt_pipeline_new_model(suffix, STAGES, &mwt_make_run_model, PARTITIONS, flags);
    mwt_batch_own_cluster(b->p);
    live[live[0] == NULL ? 0 : 1] = b->p;
    for (int s = 0; s < STAGES; s++)
        for (int k = 0; k < PER_STAGE; k++) {
            char *id = b->ids[b->p->nworkers];
            snprintf(id, sizeof(b->ids[0]), "s%d-%d", s, k);
            mwt_pipeline_worker(b->p, s, id);
        }
    b->r = mw_redis_new(&b->p->cfg, 0, err, sizeof(err));
    if (b->r == NULL)
        mwt_die("redis", err);
    if (!mwt_wait_for(mwt_pipeline_origins_assigned(b->p) == PER_STAGE, SETUP_MS))
        mwt_die("pipeline", "the origins did not both get partitions");
    mwt_batch_init(&b->l, b->p->name, WIDTH, MAX_ROWS, PARTITIONS, 0);
    mwt_load_submit_rows(&b->l, 20, 1, PARTITIONS);
    rd_kafka_flush(b->l.prod, 60000);
    if (mwt_load_collect(&b->l, 20, SETUP_MS) < 20)
        mwt_die("pipeline", "warm-up requests unanswered");
    b->rows_sent = 20;
}

static void pipeline_stop(bench_t *b)
{
    mwt_load_fini(&b->l);
    mw_redis_destroy(b->r);
    live[live[0] == b->p ? 0 : 1] = NULL;
    mwt_pipeline_destroy(b->p);
}

/* A backlog of n requests of `rows` rows drained by the pipeline
 * (mwt_batch_backlog); adds its workers' CPU ticks to ticks[stage]. */
static mwt_batch_rate_t pipeline_burst(bench_t *b, int n, int rows, double *ticks)
{
    double t0[STAGES];
    for (int s = 0; s < STAGES; s++)
        t0[s] = stage_ticks(b->p, s);
    mwt_batch_rate_t r = mwt_batch_backlog(&b->l, n, rows, PARTITIONS);
    for (int s = 0; s < STAGES; s++)
        ticks[s] += stage_ticks(b->p, s) - t0[s];
    b->rows_sent += (long long)n * rows;
    return r;
}

/* throughput_req_s, throughput_rows_s, batch_rows_mean per stage and
 * stage0_cpu_us_per_request of REPS backlogs of n requests of `rows` rows. */
static void report(const bench_t *b, int rows, int n, double *req_s, double *first_last,
                   const usage_t *u0, const usage_t *u1, const double *ticks)
{
    char extra[900];
    double m = mwt_median(req_s, REPS), fl = mwt_median(first_last, REPS);
    snprintf(extra, sizeof(extra),
             ", \"rows_per_request\": %d, \"requests\": %d, \"runs\": %d, \"first_to_last_req_s\": "
             "%.1f, \"errors\": %d, \"note\": \"2 stages x 2 CPU workers, make run's model, "
             "f32 [%d, %d] requests over 4 partitions, defaults (batch.max_rows 256, "
             "batch.max_delay_us 0, exactly-once); median of %d backlogs of n requests made "
             "visible at once (one client transaction committed); value: committed results "
             "(read_committed) per second between the 10th "
             "and the 90th percentile result\"",
             rows, n, REPS, fl, b->l.errors, rows, WIDTH, REPS);
    mwt_emit("throughput_req_s", m, "req/s", extra);
    snprintf(extra, sizeof(extra), ", \"rows_per_request\": %d", rows);
    mwt_emit("throughput_rows_s", m * rows, "rows/s", extra);
    for (int s = 0; s < STAGES; s++) {
        long long calls = u1->calls[s] - u0->calls[s], nrows = u1->rows[s] - u0->rows[s];
        snprintf(extra, sizeof(extra),
                 ", \"rows_per_request\": %d, \"stage\": %d, \"stage_calls\": %lld, \"rows\": "
                 "%lld, \"note\": \"rows / processed of worker:{id}:stats over the bursts, "
                 "summed over the stage's 2 workers\"",
                 rows, s, calls, nrows);
        mwt_emit("batch_rows_mean", calls > 0 ? (double)nrows / (double)calls : 0, "rows", extra);
    }
    double us_per_tick = 1e6 / (double)sysconf(_SC_CLK_TCK), served = (double)n * REPS;
    snprintf(extra, sizeof(extra),
             ", \"rows_per_request\": %d, \"stage1_cpu_us_per_request\": %.1f, \"note\": \"user "
             "+ system CPU time (/proc/<pid>/stat) of the 2 stage-0 workers (origins: Kafka "
             "consume, batching, stage 0, results transaction) over the bursts, per request "
             "served\"",
             rows, ticks[1] * us_per_tick / served);
    mwt_emit("stage0_cpu_us_per_request", ticks[0] * us_per_tick / served, "us", extra);
}

/* Rows per request 1, against the relay on topics of the same shape, measured
 * interleaved. */
static void bench_vs_relay(bench_t *b)
{
    const int n = 50000, nr = 300000; /* relay: over a second of its commits */
    relays_t g;
    relays_start(&g, mwt_name("relay"), COMMIT_MS);
    double warm[STAGES] = {0};
    mwt_batch_backlog(&g.l, nr / 10, 1, PARTITIONS); /* warm-up, both */
    pipeline_burst(b, n / 10, 1, warm);

    usage_t u0, u1;
    usage_settled(b, &u0);
    double ticks[STAGES] = {0};
    double pr[REPS], pfl[REPS], rr[REPS], rfl[REPS], pcpu[REPS], rcpu[REPS], pus[REPS], rus[REPS];
    for (int r = 0; r < REPS; r++) { /* alternate which goes first */
        mwt_batch_rate_t p, q;
        if (r % 2 == 0) {
            p = pipeline_burst(b, n, 1, ticks);
            q = mwt_batch_backlog(&g.l, nr, 1, PARTITIONS);
        } else {
            q = mwt_batch_backlog(&g.l, nr, 1, PARTITIONS);
            p = pipeline_burst(b, n, 1, ticks);
        }
        pr[r] = p.steady_req_s;
        pfl[r] = p.first_last_req_s;
        rr[r] = q.steady_req_s;
        rfl[r] = q.first_last_req_s;
        pcpu[r] = p.cpu_busy;
        rcpu[r] = q.cpu_busy;
        pus[r] = p.cpu_us_per_req;
        rus[r] = q.cpu_us_per_req;
    }
    usage_settled(b, &u1);
    relays_stop(&g);

    double mp = mwt_median(pr, REPS), mr = mwt_median(rr, REPS), mrfl = mwt_median(rfl, REPS);
    char extra[2000];
    snprintf(extra, sizeof(extra),
             ", \"baseline\": %.1f, \"ratio\": %.4f, \"baseline_first_to_last_req_s\": %.1f, "
             "\"cpu_busy\": %.3f, \"baseline_cpu_busy\": %.3f, \"cpu_us_per_request\": %.2f, "
             "\"baseline_cpu_us_per_request\": %.2f, "
             "\"rows_per_request\": 1, \"requests\": %d, \"baseline_requests\": %d, \"runs\": "
             "%d, \"note\": \"value: the pipeline (2 stages x 2 CPU workers, make run's model, "
             "f32 [1, 64] requests over 4 partitions, defaults); baseline: a relay on topics of "
             "the same shape in this process (2 members of a consumer group, each with a "
             "transactional producer: consume, produce key, headers and value unchanged, "
             "send_offsets_to_transaction + commit_transaction every 100 ms; no compute): "
             "Kafka's exactly-once floor on this broker; both drain a backlog: n requests "
             "produced in one client transaction, invisible to their read_committed consumers "
             "until it commits, so that no producer competes for this machine's CPUs meanwhile "
             "(the relay outpaces any producer here); committed results (read_committed) per "
             "second between the 10th and the 90th percentile result; medians of %d "
             "interleaved backlogs; cpu_busy: the share of the machine's CPUs busy (/proc/stat) "
             "from the client's commit to the last result, "
             "cpu_us_per_request: that busy CPU time (Kafka broker, client, workers or relay, "
             "everything else running) per request\"",
             mr, mp / mr, mrfl, mwt_median(pcpu, REPS), mwt_median(rcpu, REPS),
             mwt_median(pus, REPS), mwt_median(rus, REPS), n, nr, REPS, REPS);
    mwt_emit("throughput_vs_eos_relay", mp, "req/s", extra);
    report(b, 1, n, pr, pfl, &u0, &u1, ticks);
}

/* Rows per request 8 and 64 on the same pipeline. */
static void bench_rows(bench_t *b, int rows, int n)
{
    double warm[STAGES] = {0};
    pipeline_burst(b, n / 10, rows, warm);
    usage_t u0, u1;
    usage_settled(b, &u0);
    double ticks[STAGES] = {0}, rs[REPS], fl[REPS];
    for (int r = 0; r < REPS; r++) {
        mwt_batch_rate_t q = pipeline_burst(b, n, rows, ticks);
        rs[r] = q.steady_req_s;
        fl[r] = q.first_last_req_s;
    }
    usage_settled(b, &u1);
    report(b, rows, n, rs, fl, &u0, &u1, ticks);
}

/* v[0..n) as a JSON list of integers. */
static void list_format(char *buf, size_t size, const double *v, int n)
{
    size_t len = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < n && len < size; i++)
        len += (size_t)snprintf(buf + len, size - len, "%s%.0f", i ? ", " : "", v[i]);
    if (len < size)
        snprintf(buf + len, size - len, "]");
}

/* p50, p99 and mean of lat[0..n) (sorted in place) in p[0..2]. */
static void lat_stats(double *lat, int n, double *p)
{
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += lat[i];
    p[2] = sum / n;
    p[0] = mwt_percentile(lat, n, 50);
    p[1] = mwt_percentile(lat, n, 99);
}

/* Lone requests of l: LONE_WARM, then n timed; their p50, p99 and mean in
 * p[0..2]. Returns how many were sent (one row each). */
static int lone_latency(mwt_load_t *l, int n, double *p)
{
    double lat[LONE];
    mwt_batch_latency(l, LONE_WARM, PARTITIONS, lat);
    mwt_batch_latency(l, n, PARTITIONS, lat);
    lat_stats(lat, n, p);
    return LONE_WARM + n;
}

/* Saturation throughput at one row per request with the default workers
 * (group commit) against workers with results.commit_min_gap_ms 100 (under
 * load, about the 100 ms timer of earlier versions), a pipeline each,
 * interleaved bursts. */
static void bench_group_vs_timer(bench_t *b)
{
    const int n = 50000;
    static const char *timer_flags[16];
    int k = 0;
    for (; mwt_load_elastic_flags[k] != NULL; k++)
        timer_flags[k] = mwt_load_elastic_flags[k];
    timer_flags[k] = "--results.commit_min_gap_ms=100";
    bench_t t = {0};
    pipeline_start(&t, "batch-timer", timer_flags);
    double ticks[STAGES] = {0}, gr[REPS], tr[REPS], gus[REPS], tus[REPS];
    pipeline_burst(&t, n / 10, 1, ticks); /* warm-up of the new pipeline */
    for (int r = 0; r < REPS; r++) {      /* alternate which goes first */
        mwt_batch_rate_t g, q;
        if (r % 2 == 0) {
            g = pipeline_burst(b, n, 1, ticks);
            q = pipeline_burst(&t, n, 1, ticks);
        } else {
            q = pipeline_burst(&t, n, 1, ticks);
            g = pipeline_burst(b, n, 1, ticks);
        }
        gr[r] = g.steady_req_s;
        tr[r] = q.steady_req_s;
        gus[r] = g.cpu_us_per_req;
        tus[r] = q.cpu_us_per_req;
    }
    int errors = b->l.errors + t.l.errors;
    pipeline_stop(&t);

    char bursts[2][100];
    list_format(bursts[0], sizeof(bursts[0]), gr, REPS);
    list_format(bursts[1], sizeof(bursts[1]), tr, REPS);
    double mg = mwt_median(gr, REPS), mt = mwt_median(tr, REPS);
    char extra[1200];
    snprintf(extra, sizeof(extra),
             ", \"baseline\": %.1f, \"ratio\": %.4f, \"goal\": \"ratio >= 0.95\", \"bursts\": %s, "
             "\"baseline_bursts\": %s, \"cpu_us_per_request\": %.2f, "
             "\"baseline_cpu_us_per_request\": %.2f, \"rows_per_request\": 1, \"requests\": %d, "
             "\"runs\": %d, \"errors\": %d, \"note\": "
             "\"value: the pipeline with default workers (group commit: results.commit_min_gap_ms "
             "10); baseline: the same shape (2 stages x 2 CPU workers, make run's model, f32 [1, "
             "64] requests over 4 partitions) with --results.commit_min_gap_ms=100 (about the "
             "100 ms timer of earlier versions), both up at once, bursts taken in turn; "
             "committed results (read_committed) per second between the 10th and the 90th "
             "percentile result, "
             "medians of %d interleaved backlogs of n requests made visible at once (one client "
             "transaction committed); cpu_us_per_request: the machine's busy CPU time "
             "(/proc/stat: Kafka broker, workers, client, everything) per request\"",
             mt, mg / mt, bursts[0], bursts[1], mwt_median(gus, REPS), mwt_median(tus, REPS), n,
             REPS, errors, REPS);
    mwt_emit("throughput_group_vs_timer_commit", mg, "req/s", extra);
}

/* Produce-to-read latency of requests first..first+n of l: p50, p99, mean in
 * p[0..2]; with parts, the p50, p99 and mean of each leg in parts[leg]: 0 from
 * the produce call to the origin taking the request, 1 in the pipeline
 * (mw-latency-us), 2 from the result's produce call (its record's CreateTime,
 * a millisecond clock) to its read: the commit and the reader's fetch. */
static void paced_latency(const mwt_load_t *l, int first, int n, double *p, double parts[3][3])
{
    double *v = malloc((size_t)n * sizeof(double));
    if (v == NULL)
        mwt_die("latency", "out of memory");
    for (int i = 0; i < n; i++)
        v[i] = (l->got[first + i] - l->sent[first + i]) / 1e3;
    lat_stats(v, n, p);
    for (int leg = 0; parts != NULL && leg < 3; leg++) {
        int k = 0;
        for (int i = first; i < first + n; i++) {
            if (l->released[i] < 0)
                continue; /* an error result: counted in errors */
            double in_pipeline = l->pipeline_us[i] / 1e3;
            double after = (l->got[i] - l->released[i]) / 1e3;
            double to_origin = (l->released[i] - l->sent[i]) / 1e3 - in_pipeline;
            v[k++] = leg == 0 ? to_origin : leg == 1 ? in_pipeline : after;
        }
        lat_stats(v, k, parts[leg]);
    }
    free(v);
}

/* Paced open-loop load at half of the saturation throughput, both produced by
 * the load's producer (librdkafka's linger.ms, 5 ms: what a client producing
 * thousands of requests a second uses) beside the pipeline; then one request
 * at a time with a producer of linger.ms 0. */
static void bench_latency(bench_t *b)
{
    double sat_req_s = mwt_batch_burst(&b->l, 50000, 1, PARTITIONS).steady_req_s;
    b->rows_sent += 50000;
    const int n = (int)(sat_req_s / 2 * HALF_S);
    int first = atomic_load(&b->l.next);
    double produced = mwt_batch_paced(&b->l, n, sat_req_s / 2, PARTITIONS);
    b->rows_sent += n;
    double half[3], parts[3][3], relay[3];
    paced_latency(&b->l, first, n, half, parts);

    /* The same paced load through the relay, committing as often as an
     * origin under load does (results.commit_min_gap_ms). */
    relays_t g;
    relays_start(&g, mwt_name("relay-paced"), RELAY_GAP_MS);
    mwt_batch_backlog(&g.l, n / 10, 1, PARTITIONS); /* warm-up */
    int rfirst = atomic_load(&g.l.next);
    mwt_batch_paced(&g.l, n, sat_req_s / 2, PARTITIONS);
    paced_latency(&g.l, rfirst, n, relay, NULL);
    relays_stop(&g);

    mwt_batch_linger0(&b->l);
    double lone[3];
    b->rows_sent += lone_latency(&b->l, LONE, lone);
    char extra[2600];
    const char *note =
        "\"note\": \"2 stages x 2 CPU workers, make run's model, f32 [1, 64] requests over 4 "
        "partitions, defaults; one request at a time (produced by a producer with linger.ms 0 "
        "once the previous result was read, partitions in turn), produce call -> result read "
        "by a read_committed consumer (fetch.wait.max.ms 5)";
    snprintf(extra, sizeof(extra),
             ", \"goal\": \"<= 15\", \"mean_ms\": %.2f, \"requests\": %d, \"warm_up\": %d, "
             "%s\"",
             lone[2], LONE, LONE_WARM, note);
    mwt_emit("latency_lone_e2e_p50_ms", lone[0], "ms", extra);
    snprintf(extra, sizeof(extra),
             ", \"goal\": \"<= 30\", \"mean_ms\": %.2f, \"requests\": %d, %s\"", lone[2], LONE,
             note);
    mwt_emit("latency_lone_e2e_p99_ms", lone[1], "ms", extra);

    note = "\"note\": \"2 stages x 2 CPU workers, make run's model, f32 [1, 64] requests over 4 "
           "partitions, defaults; requests produced open-loop (request k due k / rate after the "
           "first) at half the saturation throughput measured just before (saturation_req_s: "
           "50,000 requests produced at once while the pipeline serves them), both by one "
           "producer with librdkafka's linger.ms (5 ms), produce call -> result read by a "
           "read_committed consumer (fetch.wait.max.ms 5); its legs (p50 and p99 of each): "
           "to_origin from the produce call to the origin taking the request (the produce, "
           "the origin's fetch, its queue), in_pipeline the result's mw-latency-us, "
           "commit_and_read from the origin producing the result (its record's CreateTime, "
           "a millisecond clock) to its read (the results transaction and the reader's "
           "fetch); baseline: the same paced load through the relay of throughput_vs_eos_relay "
           "(no compute) committing every 10 ms (results.commit_min_gap_ms), after the "
           "pipeline; ratio: value / baseline";
    snprintf(extra, sizeof(extra),
             ", \"p50_ms\": %.2f, \"mean_ms\": %.2f, \"goal\": \"<= 60\", \"baseline\": %.2f, "
             "\"ratio\": %.3f, \"baseline_p50_ms\": %.2f, \"to_origin_p50_ms\": %.2f, "
             "\"to_origin_p99_ms\": %.2f, \"in_pipeline_p50_ms\": %.2f, "
             "\"in_pipeline_p99_ms\": %.2f, \"commit_and_read_p50_ms\": %.2f, "
             "\"commit_and_read_p99_ms\": %.2f, \"rate_req_s\": %.1f, "
             "\"produced_req_s\": %.1f, \"saturation_req_s\": %.1f, \"requests\": %d, "
             "\"seconds\": %d, \"errors\": %d, %s\"",
             half[0], half[2], relay[1], half[1] / relay[1], relay[0], parts[0][0], parts[0][1],
             parts[1][0], parts[1][1], parts[2][0], parts[2][1], sat_req_s / 2, produced, sat_req_s,
             n, HALF_S, b->l.errors, note);
    mwt_emit("latency_half_load_e2e_p99_ms", half[1], "ms", extra);
    snprintf(extra, sizeof(extra), ", \"rate_req_s\": %.1f", sat_req_s / 2);
    mwt_emit("latency_half_load_e2e_p50_ms", half[0], "ms", extra);
}

/* Lone requests answered on P.results and on a reply topic <name>.replies
 * (PARTITIONS partitions), the same pipeline, measured in turn. */
static void bench_reply(bench_t *b)
{
    char topic[240], extra[1000];
    mwt_pipeline_topic(b->p, "replies", PARTITIONS);
    snprintf(topic, sizeof(topic), "%s.replies", b->p->name);
    mwt_load_t r = {0};
    mwt_batch_init(&r, b->p->name, WIDTH, MAX_ROWS, PARTITIONS, 0);
    mwt_batch_reply(&r, topic, PARTITIONS);
    mwt_batch_linger0(&r);
    mwt_batch_linger0(&b->l);
    /* In turn, LONE_BLOCK at a time: whichever goes first after the warm-up
     * is slower (by 1 to 3 ms at p50 in trials), so neither goes all first. */
    double lat[2][LONE], results[3], reply[3];
    mwt_batch_latency(&b->l, LONE_WARM, PARTITIONS, lat[0]);
    mwt_batch_latency(&r, LONE_WARM, PARTITIONS, lat[1]);
    for (int k = 0; k < LONE; k += LONE_BLOCK) {
        mwt_batch_latency(&b->l, LONE_BLOCK, PARTITIONS, lat[0] + k);
        mwt_batch_latency(&r, LONE_BLOCK, PARTITIONS, lat[1] + k);
    }
    b->rows_sent += 2 * (LONE_WARM + LONE);
    lat_stats(lat[0], LONE, results);
    lat_stats(lat[1], LONE, reply);
    mwt_load_fini(&r);
    snprintf(extra, sizeof(extra),
             ", \"baseline\": %.2f, \"ratio\": %.4f, \"p99_ms\": %.2f, \"mean_ms\": %.2f, "
             "\"baseline_p99_ms\": %.2f, \"baseline_mean_ms\": %.2f, \"requests\": %d, "
             "\"note\": \"2 stages x 2 CPU workers, make run's model, f32 [1, 64] requests over "
             "4 partitions, one at a time (linger.ms 0), produce call -> result read by a "
             "read_committed consumer; value: answered on a reply topic of 4 partitions "
             "(kafka_replyTopic), baseline: the same requests without it, on P.results, the same "
             "pipeline, 25 of each in turn\"",
             results[0], reply[0] / results[0], reply[1], reply[2], results[1], results[2], LONE);
    mwt_emit("latency_lone_reply_topic_p50_ms", reply[0], "ms", extra);
}

/* Whether MW_BENCH_ONLY (unset: every part) names part. */
static int runs(const char *part)
{
    const char *only = getenv("MW_BENCH_ONLY");
    return only == NULL || strcmp(only, part) == 0;
}

int main(void)
{
    srand((unsigned)getpid());
    if (atexit(kill_live) != 0)
        mwt_die("atexit", "refused");
    bench_t b = {0};
    /* The workers inherit it: the reply part's topic. */
    if (setenv("MW_RESULTS_REPLY_TOPICS", "*.replies", 1) != 0)
        mwt_die("setenv", "refused");
    pipeline_start(&b, "batch", mwt_load_elastic_flags);
    if (runs("relay"))
        bench_vs_relay(&b);
    if (runs("rows")) {
        bench_rows(&b, 8, 20000);
        bench_rows(&b, 64, 5000);
    }
    if (runs("commit"))
        bench_group_vs_timer(&b);
    if (runs("latency"))
        bench_latency(&b);
    if (runs("reply"))
        bench_reply(&b);
    pipeline_stop(&b);
    return 0;
}
