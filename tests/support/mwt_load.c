/* Benchmark support (see mwt_load.h). */
#include "clock.h"
#include "mwt_load.h"

#include "err.h"
#include "harness.h"
#include "kafka.h"
#include "topics/record.h"
#include "topics/topics.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BIG_MESSAGE MWT_LOAD_BIG_MESSAGE
#define SETUP_MS    60000

double mwt_now_us(void)
{
    return (double)mw_now_us();
}

void mwt_die(const char *what, const char *err)
{
    fprintf(stderr, "%s: %s: %s\n", program_invocation_short_name, what, err);
    exit(1);
}

void mwt_emit(const char *metric, double value, const char *unit, const char *extra)
{
    printf("{\"bench\": \"pipeline\", \"metric\": \"%s\", \"value\": %.3f, \"unit\": \"%s\"%s}\n",
           metric, value, unit, extra ? extra : "");
    fflush(stdout);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

void mwt_sort(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
}

double mwt_median(double *v, int n)
{
    mwt_sort(v, n);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Nearest-rank percentile. */
double mwt_percentile(double *v, int n, double pct)
{
    mwt_sort(v, n);
    int k = (int)ceil(pct / 100.0 * n) - 1;
    return v[k < 0 ? 0 : (k >= n ? n - 1 : k)];
}

/* --- Kafka plumbing --------------------------------------------------------- */

/* Topics with room for 4 MiB records (the broker's default limit is 1 MiB). */
void mwt_load_create_topics(const char *const *names, int n, int partitions)
{
    char err[512];
    mw_config_t cfg;
    mwt_config(&cfg);
    rd_kafka_t *rk = mw_topics_admin_new(&cfg, err, sizeof(err));
    mw_config_fini(&cfg);
    if (rk == NULL)
        mwt_die("admin", err);
    rd_kafka_NewTopic_t *nt[8];
    for (int i = 0; i < n; i++) {
        nt[i] = rd_kafka_NewTopic_new(names[i], partitions, -1, err, sizeof(err));
        if (nt[i] == NULL)
            mwt_die("topic", err);
        rd_kafka_NewTopic_set_config(nt[i], "max.message.bytes", BIG_MESSAGE);
    }
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_CreateTopics(rk, nt, (size_t)n, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 30000);
    const rd_kafka_CreateTopics_result_t *res = ev ? rd_kafka_event_CreateTopics_result(ev) : NULL;
    size_t cnt = 0;
    const rd_kafka_topic_result_t **tr =
        res ? rd_kafka_CreateTopics_result_topics(res, &cnt) : NULL;
    if (res == NULL)
        mwt_die("create topics", "no answer");
    for (size_t i = 0; i < cnt; i++)
        if (rd_kafka_topic_result_error(tr[i]) != RD_KAFKA_RESP_ERR_NO_ERROR &&
            rd_kafka_topic_result_error(tr[i]) != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
            mwt_die(rd_kafka_topic_result_name(tr[i]), rd_kafka_topic_result_error_string(tr[i]));
    rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    for (int i = 0; i < n; i++)
        rd_kafka_NewTopic_destroy(nt[i]);
    mw_kafka_destroy(rk);
}

rd_kafka_t *mwt_load_producer(void)
{
    char err[512];
    mw_config_t cfg;
    mwt_config(&cfg);
    mw_config_set(&cfg, "kafka.message.max.bytes", BIG_MESSAGE, "bench", NULL, 0);
    rd_kafka_t *rk = mw_kafka_producer_new(&cfg, NULL, NULL, err, sizeof(err));
    mw_config_fini(&cfg);
    if (rk == NULL)
        mwt_die("producer", err);
    return rk;
}

/* A consumer reading partition 0 of topic from the beginning (no group join). */
rd_kafka_t *mwt_load_reader(const char *topic, const char *group)
{
    char err[512];
    mw_config_t cfg;
    mwt_config(&cfg);
    mw_config_set(&cfg, "kafka.fetch.wait.max.ms", "5", "bench", NULL, 0);
    rd_kafka_t *rk = mw_kafka_consumer_new(&cfg, group, NULL, err, sizeof(err));
    mw_config_fini(&cfg);
    if (rk == NULL)
        mwt_die("consumer", err);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    return rk;
}

/* --- a load source and result sink for one pipeline ----------------------- */

void mwt_load_init(mwt_load_t *l, const char *topic_prefix, int in_features, int raw)
{
    memset(l, 0, sizeof(*l));
    snprintf(l->requests, sizeof(l->requests), "%s.requests", topic_prefix);
    snprintf(l->results, sizeof(l->results), "%s.results", topic_prefix);
    l->in_features = in_features;
    l->req_bytes = (size_t)in_features * sizeof(float);
    l->input = malloc(l->req_bytes);
    for (int i = 0; i < in_features; i++)
        l->input[i] = (float)((int)((long long)i * 7919 % 2001) - 1000) / 1000.0f;
    l->prod = mwt_load_producer();
    char group[260];
    snprintf(group, sizeof(group), "%s.bench.%d", l->results, rand());
    l->cons = mwt_load_reader(l->results, group);
    l->raw_results = raw;
    l->sent = calloc(MWT_LOAD_MAX_REQ, sizeof(double));
    l->got = calloc(MWT_LOAD_MAX_REQ, sizeof(double));
    l->released = calloc(MWT_LOAD_MAX_REQ, sizeof(double));
    l->pipeline_us = calloc(MWT_LOAD_MAX_REQ, sizeof(double));
    l->wall_minus_mono_us = (double)mw_unix_ms() * 1e3 - mwt_now_us();
    if (l->input == NULL || l->sent == NULL || l->got == NULL || l->released == NULL ||
        l->pipeline_us == NULL)
        mwt_die("load", "out of memory");
}

void mwt_load_fini(mwt_load_t *l)
{
    mw_kafka_destroy(l->prod);
    mw_kafka_destroy(l->cons);
    free(l->input);
    free(l->sent);
    free(l->got);
    free(l->released);
    free(l->pipeline_us);
}

void mwt_load_submit_rows(mwt_load_t *l, int n, int rows, int partitions)
{
    char key[32], err[256];
    mw_tensor_desc_t desc = {.dtype = MW_DTYPE_F32, .ndim = 2, .shape = {rows, l->in_features}};
    for (int k = 0; k < n; k++) {
        int i = atomic_load(&l->next);
        if (i >= MWT_LOAD_MAX_REQ)
            mwt_die("submit", "too many requests");
        snprintf(key, sizeof(key), "r%07d", i);
        mw_record_t rec;
        mw_record_init(&rec);
        if (mw_request_encode(&rec, key, strlen(key), &desc, l->input, (size_t)rows * l->req_bytes,
                              0, 0, err, sizeof(err)) != MW_OK)
            mwt_die("encode", err);
        if (l->reply_topic[0] != '\0' &&
            mw_record_add_header(&rec, MW_HDR_SPRING_REPLY_TOPIC, l->reply_topic,
                                 strlen(l->reply_topic)) != MW_OK)
            mwt_die("encode", "out of memory");
        l->sent[i] = mwt_now_us();
        int rc;
        while ((rc = mw_record_produce(l->prod, l->requests, i % partitions, &rec, NULL, err,
                                       sizeof(err))) == MW_EAGAIN)
            rd_kafka_poll(l->prod, 10);
        if (rc != MW_OK)
            mwt_die("produce", err);
        mw_record_fini(&rec);
        atomic_store(&l->next, i + 1);
        rd_kafka_poll(l->prod, 0);
    }
}

void mwt_load_submit(mwt_load_t *l, int n)
{
    mwt_load_submit_rows(l, n, 1, 1);
}

/* Reads results until every request below upto has one, or timeout; returns ngot. */
int mwt_load_collect(mwt_load_t *l, int upto, int64_t timeout_ms)
{
    char err[256];
    int64_t deadline = mw_now_ms() + timeout_ms;
    while (atomic_load(&l->ngot) < upto && mw_now_ms() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(l->cons, 20);
        if (m == NULL)
            continue;
        double t = mwt_now_us();
        int i = -1;
        char key[16];
        if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR && m->key_len > 0 && m->key_len < sizeof(key)) {
            memcpy(key, m->key, m->key_len);
            key[m->key_len] = '\0';
            if (sscanf(key, "r%d", &i) != 1 || i < 0 || i >= MWT_LOAD_MAX_REQ)
                i = -1;
        }
        if (i >= 0 && l->got[i] == 0) {
            l->got[i] = t;
            atomic_fetch_add(&l->ngot, 1);
            l->released[i] = l->pipeline_us[i] = -1;
            if (!l->raw_results) {
                mw_result_t res = {0};
                int rc = mw_result_from_message(&res, m, err, sizeof(err));
                int64_t created = rd_kafka_message_timestamp(m, NULL);
                if (rc == MW_OK && created >= 0) {
                    l->released[i] = (double)created * 1e3 - l->wall_minus_mono_us;
                    l->pipeline_us[i] = (double)res.latency_us;
                }
                if (rc != MW_OK || !res.ok) {
                    if (l->errors++ == 0)
                        fprintf(stderr, "mwt_load: error result for %s: %.*s\n", key,
                                (int)res.error_len, res.error ? res.error : err);
                }
            }
        }
        rd_kafka_message_destroy(m);
    }
    return atomic_load(&l->ngot);
}

/* A burst of n requests: requests/s from the first produce to the last result. */
double mwt_load_burst(mwt_load_t *l, int n)
{
    int first = atomic_load(&l->next);
    double t0 = mwt_now_us();
    mwt_load_submit(l, n);
    rd_kafka_flush(l->prod, 60000);
    if (mwt_load_collect(l, first + n, 120000) < first + n)
        mwt_die("burst", "results missing");
    double last = t0;
    for (int i = first; i < first + n; i++)
        last = l->got[i] > last ? l->got[i] : last;
    return n / ((last - t0) / 1e6);
}

/* One request at a time: produce to committed result, ms. */
void mwt_load_latency(mwt_load_t *l, int n, double *lat_ms)
{
    for (int k = 0; k < n; k++) {
        int i = atomic_load(&l->next);
        mwt_load_submit(l, 1);
        rd_kafka_flush(l->prod, 60000);
        if (mwt_load_collect(l, i + 1, 60000) < i + 1)
            mwt_die("latency", "result missing");
        lat_ms[k] = (l->got[i] - l->sent[i]) / 1e3;
    }
}

/* --- pipelines ----------------------------------------------------------------- */

const char *const mwt_load_elastic_flags[] = {"--heartbeat.interval_ms=500",
                                              "--world.timeout_ms=5000",
                                              "--world.keepalive_ms=1000",
                                              "--request.attempt_timeout_ms=5000",
                                              "--kafka.message.max.bytes=" BIG_MESSAGE,
                                              NULL};
const char *const mwt_load_static_flags[] = {"--heartbeat.interval_ms=600000",
                                             "--heartbeat.ttl_ms=3600000",
                                             "--world.timeout_ms=3600000",
                                             "--world.keepalive_ms=600000",
                                             "--request.attempt_timeout_ms=5000",
                                             "--kafka.message.max.bytes=" BIG_MESSAGE,
                                             NULL};
/* The recovery pipeline: defaults, with 50 ms heartbeats so that `processed`
 * in the worker's hash shows the first served request within 50 ms. */
const char *const mwt_load_fast_hb_flags[] = {
    "--heartbeat.interval_ms=50", "--world.timeout_ms=5000", "--world.keepalive_ms=1000",
    "--request.attempt_timeout_ms=5000", NULL};

/* Moves the pipeline to a cluster of its own (<prefix>.<suffix>: pipelines of
 * one run may then overlap; one coordinator leads a cluster and plans only its
 * spec) and replaces the helper's coordinator (heartbeat.ttl_ms 1500) by one
 * there with ttl_ms. */
static void own_cluster(mwt_pipeline_t *p, const char *suffix, long long ttl_ms)
{
    char cluster[160], err[256];
    /* By pid too: the child may not have made its own process group yet. */
    kill(p->coordinator, SIGKILL);
    kill(-p->coordinator, SIGKILL);
    mwt_wait_exit(p->coordinator, 5000);
    snprintf(cluster, sizeof(cluster), "%s", mwt_name(suffix));
    if (mw_config_set(&p->cfg, "cluster.name", cluster, "bench", err, sizeof(err)) != MW_OK)
        mwt_die("cluster.name", err);
    static char a[10][1000];
    snprintf(a[0], sizeof(a[0]), "%s", mwt_bin("mw-coordinator"));
    snprintf(a[1], sizeof(a[1]), "--redis.port=%lld", (long long)p->cfg.redis_port);
    snprintf(a[2], sizeof(a[2]), "--cluster.name=%s", p->cfg.cluster);
    snprintf(a[3], sizeof(a[3]), "--pipeline.spec={\"name\":\"%s\",\"stages\":%d,\"model\":\"%s\"}",
             p->name, p->nstages, p->model_path);
    snprintf(a[4], sizeof(a[4]), "--heartbeat.ttl_ms=%lld", ttl_ms);
    snprintf(a[5], sizeof(a[5]), "--log.level=warn");
    char *argv[] = {a[0], a[1], a[2], a[3], a[4], a[5], NULL}; /* interval, lease: defaults */
    p->coordinator = mwt_spawn(argv);
}

/* A pipeline of nstages with per_stage[s] workers, its topics sized for big
 * records, and a load whose warm-up requests were answered. */
/* Pipelines started and not yet stopped: killed when the program exits early
 * (die), so that no worker outlives a failed benchmark. */
static mwt_pipeline_t *live[8];

static void kill_live(void)
{
    for (size_t k = 0; k < sizeof(live) / sizeof(live[0]); k++) {
        mwt_pipeline_t *p = live[k];
        if (p == NULL)
            continue;
        for (int i = 0; i < p->nworkers; i++)
            if (p->pids[i] > 0)
                kill(p->pids[i], SIGKILL);
        if (p->coordinator > 0)
            kill(p->coordinator, SIGKILL);
    }
}

static void track(mwt_pipeline_t *p, mwt_pipeline_t *old)
{
    static int registered;
    if (!registered && atexit(kill_live) == 0)
        registered = 1;
    for (size_t k = 0; k < sizeof(live) / sizeof(live[0]); k++)
        if (live[k] == old) {
            live[k] = p;
            return;
        }
}

mwt_pipeline_t *mwt_load_pipeline(const char *suffix, int nstages, const mw_model_spec_t *spec,
                                  const char *const *flags, const int *per_stage,
                                  long long coordinator_ttl_ms, mwt_load_t *l)
{
    const char *name = mwt_name(suffix);
    char t[3][200];
    snprintf(t[0], sizeof(t[0]), "%s.requests", name);
    snprintf(t[1], sizeof(t[1]), "%s.results", name);
    snprintf(t[2], sizeof(t[2]), "%s.dlq", name);
    const char *names[] = {t[0], t[1], t[2]};
    mwt_load_create_topics(names, 3, 1);
    mwt_pipeline_t *p = mwt_pipeline_new_model(suffix, nstages, spec, 1, flags);
    track(p, NULL);
    own_cluster(p, suffix, coordinator_ttl_ms);
    char id[128];
    for (int s = 0; s < nstages; s++)
        for (int k = 0; k < per_stage[s]; k++) {
            snprintf(id, sizeof(id), "%s-s%d-%d", suffix, s, k);
            mwt_pipeline_worker(p, s, id);
        }
    mwt_load_init(l, p->name, spec->inputs, 0);
    if (!mwt_wait_for(mwt_pipeline_origins_assigned(p) == 1, SETUP_MS))
        mwt_die(suffix, "the origin got no partition");
    mwt_load_submit(l, 3);
    rd_kafka_flush(l->prod, 60000);
    if (mwt_load_collect(l, 3, SETUP_MS) < 3)
        mwt_die(suffix, "warm-up requests unanswered");
    return p;
}

void mwt_load_pipeline_stop(mwt_pipeline_t *p, mwt_load_t *l)
{
    mwt_load_fini(l);
    track(NULL, p);
    mwt_pipeline_destroy(p);
}

/* A model that is all transport: layer 0 maps the request (inputs wide) to
 * `hidden`, layer 1 to 8 outputs; no layer norm, relu. */
mw_model_spec_t mwt_load_light_model(int inputs, int hidden, int outputs, int layers)
{
    mw_model_spec_t s = {.layers = layers,
                         .inputs = inputs,
                         .hidden = hidden,
                         .outputs = outputs,
                         .seed = 11,
                         .activation = MW_ACT_RELU,
                         .layernorm = 0,
                         .residual = 0};
    return s;
}
