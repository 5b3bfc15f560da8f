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

static void die(const char *what, const char *err)
{
    fprintf(stderr, "mwt_batch: %s: %s\n", what, err);
    exit(1);
}

void mwt_batch_create_topics(const char *const *names, int n, int partitions)
{
    char err[512];
    mw_config_t cfg;
    mwt_config(&cfg);
    rd_kafka_t *rk = mw_topics_admin_new(&cfg, err, sizeof(err));
    mw_config_fini(&cfg);
    if (rk == NULL)
        die("admin", err);
    for (int i = 0; i < n; i++)
        if (mw_kafka_create_topic(rk, names[i], partitions, 30000, err, sizeof(err)) != MW_OK)
            die(names[i], err);
    mw_kafka_destroy(rk);
}

/* Assigns l's consumer every partition of topic, from the beginning. */
static void assign_all(mwt_load_t *l, const char *topic, int partitions)
{
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(partitions);
    for (int i = 0; i < partitions; i++)
        rd_kafka_topic_partition_list_add(parts, topic, i)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_resp_err_t err = rd_kafka_assign(l->cons, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
        die("assign", rd_kafka_err2str(err));
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

void mwt_batch_submit(mwt_load_t *l, int n, int rows, int partitions)
{
    char key[32], err[256];
    mw_tensor_desc_t desc = {.dtype = MW_DTYPE_F32, .ndim = 2, .shape = {rows, l->in_features}};
    for (int k = 0; k < n; k++) {
        int i = atomic_load(&l->next);
        if (i >= MWT_LOAD_MAX_REQ)
            die("submit", "too many requests");
        snprintf(key, sizeof(key), "r%07d", i);
        mw_record_t rec;
        mw_record_init(&rec);
        if (mw_request_encode(&rec, key, strlen(key), &desc, l->input, (size_t)rows * l->req_bytes,
                              0, 0, err, sizeof(err)) != MW_OK)
            die("encode", err);
        if (l->reply_topic[0] != '\0' &&
            mw_record_add_header(&rec, MW_HDR_SPRING_REPLY_TOPIC, l->reply_topic,
                                 strlen(l->reply_topic)) != MW_OK)
            die("encode", "out of memory");
        l->sent[i] = mwt_now_us();
        int rc;
        while ((rc = mw_record_produce(l->prod, l->requests, i % partitions, &rec, NULL, err,
                                       sizeof(err))) == MW_EAGAIN)
            rd_kafka_poll(l->prod, 10);
        if (rc != MW_OK)
            die("produce", err);
        mw_record_fini(&rec);
        atomic_store(&l->next, i + 1);
        rd_kafka_poll(l->prod, 0);
    }
}

typedef struct burst_arg {
    mwt_load_t *l;
    int n, rows, partitions;
} burst_arg_t;

static void *burst_produce(void *arg)
{
    burst_arg_t *b = arg;
    mwt_batch_submit(b->l, b->n, b->rows, b->partitions);
    if (rd_kafka_flush(b->l->prod, 60000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        die("burst", "requests not delivered");
    return NULL;
}

mwt_batch_rate_t mwt_batch_rate(const mwt_load_t *l, int first, int n, double t0)
{
    double *t = malloc((size_t)n * sizeof(double));
    if (t == NULL)
        die("rate", "out of memory");
    memcpy(t, l->got + first, (size_t)n * sizeof(double));
    mwt_sort(t, n);
    /* Arrival times from the 10th to the 90th percentile: the steady state,
     * without the first commit's wait and the tail. */
    int lo = n / 10, hi = n - 1 - n / 10;
    mwt_batch_rate_t r = {
        .steady_req_s = (hi - lo) / ((t[hi] - t[lo]) / 1e6),
        .first_last_req_s = n / ((t[n - 1] - t0) / 1e6),
    };
    free(t);
    return r;
}

mwt_batch_rate_t mwt_batch_burst(mwt_load_t *l, int n, int rows, int partitions)
{
    int first = atomic_load(&l->next);
    burst_arg_t b = {.l = l, .n = n, .rows = rows, .partitions = partitions};
    pthread_t th;
    double t0 = mwt_now_us();
    if (pthread_create(&th, NULL, burst_produce, &b) != 0)
        die("burst", "no thread");
    int got = mwt_load_collect(l, first + n, 300000);
    pthread_join(th, NULL);
    if (got < first + n)
        die("burst", "results missing");
    return mwt_batch_rate(l, first, n, t0);
}

void mwt_batch_own_cluster(mwt_pipeline_t *p)
{
    char err[256];
    /* By pid too: the child may not have made its own process group yet. */
    kill(p->coordinator, SIGKILL);
    kill(-p->coordinator, SIGKILL);
    mwt_wait_exit(p->coordinator, 5000);
    if (mw_config_set(&p->cfg, "cluster.name", p->name, "bench", err, sizeof(err)) != MW_OK)
        die("cluster.name", err);
    p->coordinator = 0; /* the next is the first, not a standby */
    p->coordinator = mwt_pipeline_coordinator(p);
}

void mwt_batch_linger0(mwt_load_t *l)
{
    char err[512];
    mw_config_t cfg;
    mwt_config(&cfg);
    if (mw_config_set(&cfg, "kafka.linger.ms", "0", "bench", err, sizeof(err)) != MW_OK)
        die("linger.ms", err);
    rd_kafka_t *prod = mw_kafka_producer_new(&cfg, NULL, NULL, err, sizeof(err));
    mw_config_fini(&cfg);
    if (prod == NULL)
        die("producer", err);
    if (rd_kafka_flush(l->prod, 60000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        die("linger0", "requests not delivered");
    mw_kafka_destroy(l->prod);
    l->prod = prod;
}

void mwt_batch_latency(mwt_load_t *l, int n, int partitions, double *lat_ms)
{
    for (int k = 0; k < n; k++) {
        int i = atomic_load(&l->next);
        mwt_batch_submit(l, 1, 1, partitions);
        if (mwt_load_collect(l, i + 1, 60000) < i + 1)
            die("latency", "result missing");
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
            mwt_batch_submit(a->l, due - k, 1, a->partitions);
            k = due;
            continue;
        }
        double wait_us = t0 + k * every_us - now;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)(wait_us * 1e3)};
        nanosleep(&ts, NULL);
    }
    if (rd_kafka_flush(a->l->prod, 60000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        die("paced", "requests not delivered");
    return NULL;
}

double mwt_batch_paced(mwt_load_t *l, int n, double req_s, int partitions)
{
    int first = atomic_load(&l->next);
    paced_arg_t a = {.l = l, .n = n, .partitions = partitions, .req_s = req_s};
    pthread_t th;
    if (pthread_create(&th, NULL, paced_produce, &a) != 0)
        die("paced", "no thread");
    int got = mwt_load_collect(l, first + n, 300000);
    pthread_join(th, NULL);
    if (got < first + n)
        die("paced", "results missing");
    return (n - 1) / ((l->sent[first + n - 1] - l->sent[first]) / 1e6);
}
