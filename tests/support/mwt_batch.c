/* Benchmark support for batched serving (see mwt_batch.h). */
#include "mwt_batch.h"

#include "err.h"
#include "harness.h"
#include "kafka.h"
#include "topics/record.h"
#include "topics/topics.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

const mw_model_spec_t mwt_make_run_model = {
    .layers = 6, .inputs = 64, .hidden = 256, .outputs = 10, .seed = 7, .activation = MW_ACT_GELU};

/* Assigns l's consumer every partition of topic, from the beginning. */
static void assign_all(mwt_load_t *l, const char *topic, int partitions)
{
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(partitions);
    for (int i = 0; i < partitions; i++)
        rd_kafka_topic_partition_list_add(parts, topic, i)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_resp_err_t err = rd_kafka_assign(l->cons, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
        mwt_die("assign", rd_kafka_err2str(err));
}

void mwt_batch_init(mwt_load_t *l, const char *topic_prefix, int in_features, int max_rows,
                    int partitions, int raw)
{
    /* One buffer of max_rows rows; a request of R rows sends its first R. */
    mwt_load_init(l, topic_prefix, in_features * max_rows, raw);
    l->in_features = in_features;
    l->req_bytes = (size_t)in_features * sizeof(float);
    assign_all(l, l->results, partitions);
}

void mwt_batch_reply(mwt_load_t *l, const char *reply_topic, int partitions)
{
    snprintf(l->reply_topic, sizeof(l->reply_topic), "%s", reply_topic);
    assign_all(l, reply_topic, partitions);
}

typedef struct burst_arg {
    mwt_load_t *l;
    int n, rows, partitions;
} burst_arg_t;

static void *burst_produce(void *arg)
{
    burst_arg_t *b = arg;
    mwt_load_submit_rows(b->l, b->n, b->rows, b->partitions);
    if (rd_kafka_flush(b->l->prod, 60000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        mwt_die("burst", "requests not delivered");
    return NULL;
}

mwt_batch_rate_t mwt_batch_rate(const mwt_load_t *l, int first, int n, double t0,
                                const double cpu0[2])
{
    double busy, total;
    mwt_machine_ticks(&busy, &total);
    double *t = malloc((size_t)n * sizeof(double));
    if (t == NULL)
        mwt_die("rate", "out of memory");
    memcpy(t, l->got + first, (size_t)n * sizeof(double));
    mwt_sort(t, n);
    /* Arrival times from the 10th to the 90th percentile: the steady state,
     * without the first commit's wait and the tail. */
    int lo = n / 10, hi = n - 1 - n / 10;
    mwt_batch_rate_t r = {
        .steady_req_s = (hi - lo) / ((t[hi] - t[lo]) / 1e6),
        .first_last_req_s = n / ((t[n - 1] - t0) / 1e6),
        .cpu_busy = total > cpu0[1] ? (busy - cpu0[0]) / (total - cpu0[1]) : 0,
        .cpu_us_per_req = (busy - cpu0[0]) * 1e6 / (double)sysconf(_SC_CLK_TCK) / n,
    };
    free(t);
    return r;
}

mwt_batch_rate_t mwt_batch_burst(mwt_load_t *l, int n, int rows, int partitions)
{
    int first = atomic_load(&l->next);
    burst_arg_t b = {.l = l, .n = n, .rows = rows, .partitions = partitions};
    pthread_t th;
    double cpu0[2];
    mwt_machine_ticks(&cpu0[0], &cpu0[1]);
    double t0 = mwt_now_us();
    if (pthread_create(&th, NULL, burst_produce, &b) != 0)
        mwt_die("burst", "no thread");
    int got = mwt_load_collect(l, first + n, 300000);
    pthread_join(th, NULL);
    if (got < first + n)
        mwt_die("burst", "results missing");
    return mwt_batch_rate(l, first, n, t0, cpu0);
}

mwt_batch_rate_t mwt_batch_backlog(mwt_load_t *l, int n, int rows, int partitions)
{
    char err[512], txn_id[240];
    mw_config_t cfg;
    mwt_config(&cfg);
    snprintf(txn_id, sizeof(txn_id), "%s.backlog", l->requests);
    rd_kafka_t *txn = mw_kafka_producer_new(&cfg, txn_id, NULL, err, sizeof(err));
    mw_config_fini(&cfg);
    if (txn == NULL)
        mwt_die("backlog producer", err);
    rd_kafka_error_t *e = rd_kafka_begin_transaction(txn);
    if (e != NULL)
        mwt_die("backlog", rd_kafka_error_string(e));
    rd_kafka_t *prod = l->prod;
    l->prod = txn;
    int first = atomic_load(&l->next);
    mwt_load_submit_rows(l, n, rows, partitions);
    if (rd_kafka_flush(txn, 60000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        mwt_die("backlog", "requests not delivered");
    l->prod = prod;
    double cpu0[2];
    mwt_machine_ticks(&cpu0[0], &cpu0[1]);
    double t0 = mwt_now_us();
    if ((e = rd_kafka_commit_transaction(txn, 60000)) != NULL)
        mwt_die("backlog commit", rd_kafka_error_string(e));
    int got = mwt_load_collect(l, first + n, 300000);
    mwt_batch_rate_t r = mwt_batch_rate(l, first, n, t0, cpu0);
    mw_kafka_destroy(txn);
    if (got < first + n)
        mwt_die("backlog", "results missing");
    return r;
}

void mwt_batch_own_cluster(mwt_pipeline_t *p)
{
    char err[256];
    /* By pid too: the child may not have made its own process group yet. */
    kill(p->coordinator, SIGKILL);
    kill(-p->coordinator, SIGKILL);
    mwt_wait_exit(p->coordinator, 5000);
    if (mw_config_set(&p->cfg, "cluster.name", p->name, "bench", err, sizeof(err)) != MW_OK)
        mwt_die("cluster.name", err);
    p->coordinator = 0; /* the next is the first, not a standby */
    p->coordinator = mwt_pipeline_coordinator(p);
}

void mwt_batch_linger0(mwt_load_t *l)
{
    char err[512];
    mw_config_t cfg;
    mwt_config(&cfg);
    if (mw_config_set(&cfg, "kafka.linger.ms", "0", "bench", err, sizeof(err)) != MW_OK)
        mwt_die("linger.ms", err);
    rd_kafka_t *prod = mw_kafka_producer_new(&cfg, NULL, NULL, err, sizeof(err));
    mw_config_fini(&cfg);
    if (prod == NULL)
        mwt_die("producer", err);
    if (rd_kafka_flush(l->prod, 60000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        mwt_die("linger0", "requests not delivered");
    mw_kafka_destroy(l->prod);
    l->prod = prod;
}

void mwt_batch_latency(mwt_load_t *l, int n, int partitions, double *lat_ms)
{
    for (int k = 0; k < n; k++) {
        int i = atomic_load(&l->next);
        mwt_load_submit_rows(l, 1, 1, partitions);
        if (mwt_load_collect(l, i + 1, 60000) < i + 1)
            mwt_die("latency", "result missing");
        lat_ms[k] = (l->got[i] - l->sent[i]) / 1e3;
    }
}

typedef struct paced_arg {
    mwt_load_t *l;
    int n, partitions;
    double req_s;
} paced_arg_t;

static void *paced_produce(void *arg)
{
    paced_arg_t *a = arg;
    double t0 = mwt_now_us(), every_us = 1e6 / a->req_s;
    for (int k = 0; k < a->n;) {
        double now = mwt_now_us();
        int due = (int)((now - t0) / every_us) + 1; /* requests due by now */
        if (due > a->n)
            due = a->n;
        if (due > k) {
            mwt_load_submit_rows(a->l, due - k, 1, a->partitions);
            k = due;
            continue;
        }
        double wait_us = t0 + k * every_us - now;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)(wait_us * 1e3)};
        nanosleep(&ts, NULL);
    }
    if (rd_kafka_flush(a->l->prod, 60000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        mwt_die("paced", "requests not delivered");
    return NULL;
}

double mwt_batch_paced(mwt_load_t *l, int n, double req_s, int partitions)
{
    int first = atomic_load(&l->next);
    paced_arg_t a = {.l = l, .n = n, .partitions = partitions, .req_s = req_s};
    pthread_t th;
    if (pthread_create(&th, NULL, paced_produce, &a) != 0)
        mwt_die("paced", "no thread");
    int got = mwt_load_collect(l, first + n, 300000);
    pthread_join(th, NULL);
    if (got < first + n)
        mwt_die("paced", "results missing");
    return (n - 1) / ((l->sent[first + n - 1] - l->sent[first]) / 1e6);
}
