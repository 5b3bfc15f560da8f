/* Integration-test support for serving (see mwt_pipeline.h). */
#include "clock.h"
#include "mwt_pipeline.h"

#include "err.h"
#include "harness.h"
#include "cluster/keys.h"
#include "cluster/plan_doc.h"
#include "kafka.h"
#include "model/model.h"
#include "topics/record.h"
#include "topics/topics.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#define IN_FEATURES  16
#define HIDDEN       32
#define OUT_FEATURES 8

static void die(const char *what, const char *err)
{
    fprintf(stderr, "mwt_pipeline: %s: %s\n", what, err);
    abort();
}

static pid_t spawn(mwt_pipeline_t *p, const char *prog, const char *const *extra1,
                   const char *const *extra2)
{
    char args[48][600];
    char *argv[50];
    int n = 0;
#define ARG(...) (snprintf(args[n], sizeof(args[0]), __VA_ARGS__), argv[n] = args[n], n++)
    if (p->netns != NULL) {
        ARG("/bin/ip");
        ARG("netns");
        ARG("exec");
        ARG("%s", p->netns);
    }
    ARG("%s", mwt_bin(prog));
    ARG("--redis.host=%s", p->cfg.redis_host);
    ARG("--redis.port=%lld", (long long)p->cfg.redis_port);
    if (p->host_addr != NULL)
        ARG("--world.listen_host=%s", p->host_addr);
    ARG("--cluster.name=%s", p->cfg.cluster);
    ARG("--kafka.bootstrap.servers=%s", mw_config_kafka_get(&p->cfg, "bootstrap.servers"));
    ARG("--heartbeat.interval_ms=100");
    ARG("--heartbeat.ttl_ms=%lld", (long long)mwt_scaled(1500));
    ARG("--log.level=%s", mwt_log_level());
    for (int i = 0; extra1 != NULL && extra1[i] != NULL && n < 46; i++)
        ARG("%s", extra1[i]);
    for (int i = 0; extra2 != NULL && extra2[i] != NULL && n < 46; i++)
        ARG("%s", extra2[i]);
#undef ARG
    argv[n] = NULL;
    pid_t pid = mwt_spawn(argv);
    if (pid <= 0)
        die("spawn", prog);
    return pid;
}

mwt_pipeline_t *mwt_pipeline_new(const char *suffix, int nstages, int layers, int partitions,
                                 const char *const *worker_flags)
{
    mw_model_spec_t spec = {.layers = layers,
                            .inputs = IN_FEATURES,
                            .hidden = HIDDEN,
                            .outputs = OUT_FEATURES,
                            .seed = 7,
                            .activation = MW_ACT_GELU,
                            .layernorm = 1,
                            .residual = 1};
    return mwt_pipeline_new_model(suffix, nstages, &spec, partitions, worker_flags);
}

mwt_pipeline_t *mwt_pipeline_new_model(const char *suffix, int nstages, const mw_model_spec_t *spec,
                                       int partitions, const char *const *worker_flags)
{
    char err[512];
    mwt_pipeline_t *p = calloc(1, sizeof(*p));
    if (p == NULL)
        die("calloc", "out of memory");
    mwt_config(&p->cfg);
    /* Pipeline names are topic names: the prefix is unique per run. */
    snprintf(p->name, sizeof(p->name), "%s", mwt_name(suffix));
    p->nstages = nstages;
    p->partitions = partitions;
    p->in_features = spec->inputs;
    p->out_features = spec->outputs;
    p->worker_flags = worker_flags;
    const char *dir = getenv("MWTEST_DIR") ? getenv("MWTEST_DIR") : "/tmp";
    snprintf(p->model_path, sizeof(p->model_path), "%s/%s.safetensors", dir, p->name);
    if (mw_model_generate(spec, p->model_path, err, sizeof(err)) != MW_OK)
        die("model", err);

    rd_kafka_t *admin = mw_topics_admin_new(&p->cfg, err, sizeof(err));
    mw_topic_info_t info[MW_TOPIC_COUNT];
    if (admin == NULL || mw_topics_create(admin, p->name, partitions, partitions, 1, 30000, info,
                                          err, sizeof(err)) != MW_OK)
        die("topics", err);
    mw_kafka_destroy(admin);
    p->producer = mw_kafka_producer_new(&p->cfg, NULL, NULL, err, sizeof(err));
    if (p->producer == NULL)
        die("producer", err);

    p->coordinator = mwt_pipeline_coordinator(p);
    return p;
}

void mwt_pipeline_topic(mwt_pipeline_t *p, const char *suffix, int partitions)
{
    char err[512], topic[160];
    snprintf(topic, sizeof(topic), "%s.%s", p->name, suffix);
    rd_kafka_t *admin = mw_topics_admin_new(&p->cfg, err, sizeof(err));
    if (admin == NULL ||
        mw_kafka_create_topic(admin, topic, partitions, 30000, err, sizeof(err)) != MW_OK)
        die("topic", err);
    mw_kafka_destroy(admin);
}

void mwt_correlation_id(const char *key, char *buf, size_t size)
{
    snprintf(buf, size, "c%s", key);
}

pid_t mwt_pipeline_coordinator(mwt_pipeline_t *p)
{
    char spec_flag[900];
    snprintf(spec_flag, sizeof(spec_flag),
             "--pipeline.spec={\"name\":\"%s\",\"stages\":%d,\"model\":\"%s\"}", p->name,
             p->nstages, p->model_path);
    const char *extra[] = {spec_flag, "--coordinator.interval_ms=50", "--coordinator.lease_ms=1000",
                           NULL};
    pid_t pid = spawn(p, "mw-coordinator", extra, NULL);
    if (p->coordinator > 0 && p->nstandbys < (int)(sizeof(p->standbys) / sizeof(p->standbys[0])))
        p->standbys[p->nstandbys++] = pid;
    return pid;
}

int mwt_pipeline_worker(mwt_pipeline_t *p, int stage, const char *id)
{
    char a[128], b[128], c[160], d[64], e[64];
    if (p->nworkers >= MWT_MAX_WORKERS)
        die("worker", "too many workers");
    snprintf(a, sizeof(a), "--id=%s", id);
    if (stage == MW_PLAN_STAGE_AUTO)
        snprintf(b, sizeof(b), "--stage=auto");
    else
        snprintf(b, sizeof(b), "--stage=%d", stage);
    snprintf(c, sizeof(c), "--pipeline=%s", p->name);
    snprintf(d, sizeof(d), "--world.timeout_ms=%lld", (long long)mwt_scaled(2000));
    snprintf(e, sizeof(e), "--request.attempt_timeout_ms=%lld", (long long)mwt_scaled(3000));
    const char *extra[] = {a,
                           b,
                           c,
                           d,
                           e,
                           "--worker.drain_timeout_ms=10000",
                           "--request.timeout_ms=120000",
                           "--kafka.transaction.timeout.ms=10000",
                           "--kafka.session.timeout.ms=6000",
                           "--kafka.heartbeat.interval.ms=500",
                           NULL};
    int i = p->nworkers++;
    p->stages[i] = stage;
    p->pids[i] = spawn(p, "mw-worker", extra, p->worker_flags);
    return i;
}

void mwt_pipeline_signal(mwt_pipeline_t *p, int i, int sig)
{
    if (p->pids[i] <= 0)
        return;
    kill(-p->pids[i], sig);
    if (sig == SIGKILL) {
        mwt_wait_exit(p->pids[i], 10000);
        p->pids[i] = 0;
    }
}

int mwt_pipeline_stop_workers(mwt_pipeline_t *p, int64_t timeout_ms)
{
    int bad = 0;
    for (int i = 0; i < p->nworkers; i++)
        if (p->pids[i] > 0)
            kill(-p->pids[i], SIGTERM);
    for (int i = 0; i < p->nworkers; i++) {
        if (p->pids[i] <= 0)
            continue;
        int status = mwt_wait_exit(p->pids[i], timeout_ms);
        if (status < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "worker %d: status %d\n", i, status);
            bad = 1;
            kill(-p->pids[i], SIGKILL);
            mwt_wait_exit(p->pids[i], 5000);
        }
        p->pids[i] = 0;
    }
    return bad;
}

long long mwt_worker_field(mw_redis_t *r, const char *id, const char *field)
{
    char key[MW_KEY_MAX];
    redisReply *rep = NULL;
    long long v = -1;
    if (mw_redis_cmd(r, &rep, "HGET %s %s", mw_key_worker(r, id, key, sizeof(key)), field) ==
            MW_OK &&
        rep != NULL && rep->type == REDIS_REPLY_STRING)
        v = atoll(rep->str);
    if (rep != NULL)
        freeReplyObject(rep);
    return v;
}

/* The description of the consumer group mw.<name>, asked through rk, or NULL;
 * the caller destroys *ev (set whenever an answer came). */
static const rd_kafka_ConsumerGroupDescription_t *describe_group(mwt_pipeline_t *p, rd_kafka_t *rk,
                                                                 rd_kafka_event_t **ev)
{
    char group[200];
    snprintf(group, sizeof(group), "mw.%s", p->name);
    const char *groups[] = {group};
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_DescribeConsumerGroups(rk, groups, 1, NULL, q);
    *ev = rd_kafka_queue_poll(q, 10000);
    rd_kafka_queue_destroy(q);
    const rd_kafka_DescribeConsumerGroups_result_t *res =
        *ev != NULL ? rd_kafka_event_DescribeConsumerGroups_result(*ev) : NULL;
    size_t cnt = 0;
    const rd_kafka_ConsumerGroupDescription_t **descs =
        res != NULL ? rd_kafka_DescribeConsumerGroups_result_groups(res, &cnt) : NULL;
    return cnt == 1 && rd_kafka_ConsumerGroupDescription_error(descs[0]) == NULL ? descs[0] : NULL;
}

int mwt_pipeline_origins_assigned(mwt_pipeline_t *p)
{
    int n = 0;
    rd_kafka_event_t *ev;
    const rd_kafka_ConsumerGroupDescription_t *desc = describe_group(p, p->producer, &ev);
    size_t members = desc != NULL ? rd_kafka_ConsumerGroupDescription_member_count(desc) : 0;
    for (size_t i = 0; i < members; i++) {
        const rd_kafka_MemberDescription_t *m = rd_kafka_ConsumerGroupDescription_member(desc, i);
        const rd_kafka_topic_partition_list_t *parts =
            rd_kafka_MemberAssignment_partitions(rd_kafka_MemberDescription_assignment(m));
        n += parts != NULL && parts->cnt > 0;
    }
    if (ev != NULL)
        rd_kafka_event_destroy(ev);
    return n;
}

int mwt_pipeline_group_coordinator(mwt_pipeline_t *p)
{
    char err[256];
    rd_kafka_t *rk = mw_topics_admin_new(&p->cfg, err, sizeof(err));
    if (rk == NULL)
        return -1;
    rd_kafka_event_t *ev;
    const rd_kafka_ConsumerGroupDescription_t *desc = describe_group(p, rk, &ev);
    const rd_kafka_Node_t *node =
        desc != NULL ? rd_kafka_ConsumerGroupDescription_coordinator(desc) : NULL;
    int id = node != NULL ? rd_kafka_Node_id(node) : -1;
    if (ev != NULL)
        rd_kafka_event_destroy(ev);
    mw_kafka_destroy(rk);
    return id;
}

void mwt_pipeline_destroy(mwt_pipeline_t *p)
{
    if (p == NULL)
        return;
    for (int i = 0; i < p->nworkers; i++)
        mwt_pipeline_signal(p, i, SIGKILL);
    if (p->coordinator > 0) {
        kill(-p->coordinator, SIGKILL);
        mwt_wait_exit(p->coordinator, 5000);
    }
    for (int i = 0; i < p->nstandbys; i++) {
        kill(-p->standbys[i], SIGKILL);
        mwt_wait_exit(p->standbys[i], 5000);
    }
    mw_kafka_destroy(p->producer);
    unlink(p->model_path);
    mw_config_fini(&p->cfg);
    free(p);
}

void mwt_pipeline_workers(mwt_pipeline_t *p, int per_stage)
{
    char id[64];
    for (int s = 0; s < p->nstages; s++) {
        for (int k = 0; k < per_stage; k++) {
            snprintf(id, sizeof(id), "w%d-%d", s, k);
            mwt_pipeline_worker(p, s, id);
        }
    }
}

int mwt_pipeline_chaos(mwt_pipeline_t *p, const char *suffix, mwt_tally_t *t, int n,
                       const float *expected, int stage)
{
    const int per_tick = 100;
    int kills = 0;
    int64_t next_kill = mw_now_ms() + 2000;
    for (int sent = 0; sent < n; sent += per_tick) {
        mwt_pipeline_submit(p, sent, per_tick, NULL);
        mwt_pipeline_read(p, suffix, t, n, expected, n, 10);
        if (mw_now_ms() < next_kill) {
            mwt_pipeline_read(p, suffix, t, n, expected, n, 200);
            continue;
        }
        next_kill += 2000;
        int live[MWT_MAX_WORKERS], nlive = 0;
        for (int i = 0; i < p->nworkers; i++)
            if (p->pids[i] > 0 && (stage < 0 || p->stages[i] == stage))
                live[nlive++] = i;
        if (nlive == 0)
            continue;
        int victim = live[stage < 0 ? rand() % nlive : 0];
        int at = p->stages[victim];
        mwt_pipeline_signal(p, victim, SIGKILL);
        char id[64];
        snprintf(id, sizeof(id), "r%d-%d", at, kills++);
        mwt_pipeline_worker(p, at, id);
    }
    return kills;
}

int mwt_pipeline_teardown(void **state)
{
    mwt_pipeline_destroy(*state);
    *state = NULL;
    return 0;
}

void mwt_request_key(int i, char *buf, size_t size)
{
    snprintf(buf, size, "r%06d", i);
}

void mwt_request_input(int i, float *x)
{
    for (int j = 0; j < IN_FEATURES; j++) {
        uint64_t h = (uint64_t)i * 0x9e3779b97f4a7c15u + (uint64_t)j * 0xbf58476d1ce4e5b9u;
        h ^= h >> 29;
        h *= 0x94d049bb133111ebu;
        h ^= h >> 32;
        x[j] = (float)((double)(h >> 40) / (double)(1 << 24) * 2.0 - 1.0);
    }
}

int mwt_request_rows(const mwt_pipeline_t *p, int i)
{
    return p->rows_max > 1 ? 1 + (int)(((unsigned)i * 2654435761u >> 7) % (unsigned)p->rows_max)
                           : 1;
}

/* Request i's rows, stacked, into x (room for rows_max rows); returns the rows. */
static int request_rows_input(const mwt_pipeline_t *p, int i, float *x)
{
    int rows = mwt_request_rows(p, i);
    for (int r = 0; r < rows; r++)
        mwt_request_input(i + r * MWT_ROW_STRIDE, x + (size_t)r * IN_FEATURES);
    return rows;
}

static int rows_stride(const mwt_pipeline_t *p)
{
    return p->rows_max > 1 ? p->rows_max : 1;
}

static void produce(mwt_pipeline_t *p, const char *topic, const mw_record_t *rec)
{
    char err[256];
    for (;;) {
        int rc = mw_record_produce(p->producer, topic, RD_KAFKA_PARTITION_UA, rec, NULL, err,
                                   sizeof(err));
        if (rc == MW_OK)
            return;
        if (rc != MW_EAGAIN)
            die("produce", err);
        rd_kafka_poll(p->producer, 100);
    }
}

void mwt_pipeline_submit(mwt_pipeline_t *p, int first, int n, int (*bad)(int i))
{
    char topic[160], key[32], err[256];
    float *x = calloc((size_t)rows_stride(p) * IN_FEATURES, sizeof(float));
    if (x == NULL)
        die("submit", "out of memory");
    snprintf(topic, sizeof(topic), "%s.requests", p->name);
    for (int i = first; i < first + n; i++) {
        mw_record_t rec;
        mw_record_init(&rec);
        mwt_request_key(i, key, sizeof(key));
        int rows = request_rows_input(p, i, x);
        if (bad != NULL && bad(i)) {
            static const char *const dtypes[] = {NULL, "f99", "f32", "f32"};
            static const char *const shapes[] = {"1,16", "1,16", "1,16", "1,15"};
            static const size_t sizes[] = {64, 64, 60, 60};
            int kind = i % 4;
            rec.key = key;
            rec.key_len = strlen(key);
            rec.value = x;
            rec.value_len = sizes[kind];
            if (dtypes[kind] != NULL)
                mw_record_add_header(&rec, "mw-dtype", dtypes[kind], strlen(dtypes[kind]));
            mw_record_add_header(&rec, "mw-shape", shapes[kind], strlen(shapes[kind]));
        } else {
            mw_tensor_desc_t desc = {
                .dtype = MW_DTYPE_F32, .ndim = 2, .shape = {rows, IN_FEATURES}};
            if (mw_request_encode(&rec, key, strlen(key), &desc, x,
                                  (size_t)rows * IN_FEATURES * sizeof(float), 0, 0, err,
                                  sizeof(err)) != MW_OK)
                die("encode", err);
            if (p->headers != NULL)
                p->headers(p, i, &rec);
        }
        produce(p, topic, &rec);
        mw_record_fini(&rec);
        rd_kafka_poll(p->producer, 0);
    }
    free(x);
    if (rd_kafka_flush(p->producer, 60000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        die("flush", "requests not delivered");
}

float *mwt_pipeline_reference(mwt_pipeline_t *p, int n)
{
    char err[512];
    mw_model_t *m = NULL;
    mw_stage_t *st = NULL;
    size_t stride = (size_t)rows_stride(p);
    float *x = calloc(stride * IN_FEATURES, sizeof(float));
    float *y = calloc((size_t)n * stride * OUT_FEATURES, sizeof(float));
    if (x == NULL || y == NULL || mw_model_open(p->model_path, &m, err, sizeof(err)) != MW_OK ||
        mw_stage_new(m, 0, mw_model_num_layers(m), (int)stride, -1, &st, err, sizeof(err)) != MW_OK)
        die("reference", err);
    for (int i = 0; i < n; i++) {
        int rows = request_rows_input(p, i, x);
        if (mw_stage_forward(st, x, rows, y + (size_t)i * stride * OUT_FEATURES) != MW_OK)
            die("reference", "forward failed");
    }
    mw_stage_destroy(st);
    mw_model_destroy(m);
    free(x);
    return y;
}

static void tally_open(mwt_pipeline_t *p, const char *suffix, mwt_tally_t *t, int n)
{
    char err[512], topic[160], group[200];
    t->n = n;
    t->count = calloc((size_t)n, sizeof(int));
    t->errors = calloc((size_t)n, sizeof(int));
    t->mismatch = calloc((size_t)n, sizeof(int));
    t->attempts_max = calloc((size_t)n, sizeof(int64_t));
    t->first_offset = calloc((size_t)n, sizeof(int64_t));
    t->latency_us = calloc((size_t)n, sizeof(int64_t));
    snprintf(topic, sizeof(topic), "%s.%s", p->name, suffix);
    snprintf(group, sizeof(group), "%s.reader.%d", topic, rand());
    mw_config_t cfg;
    mwt_config(&cfg);
    mw_config_set(&cfg, "kafka.enable.partition.eof", "true", "test", NULL, 0);
    t->consumer = mw_kafka_consumer_new(&cfg, group, NULL, err, sizeof(err));
    mw_config_fini(&cfg);
    if (t->consumer == NULL)
        die("reader", err);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(t->consumer, topic, NULL);
    if (rd_kafka_metadata(t->consumer, 0, rkt, &md, 30000) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        md->topic_cnt != 1 || md->topics[0].partition_cnt < 1)
        die("reader", "no metadata for the topic");
    t->partitions = md->topics[0].partition_cnt;
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(t->partitions);
    for (int i = 0; i < t->partitions; i++)
        rd_kafka_topic_partition_list_add(list, topic, i)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(t->consumer, list);
    rd_kafka_topic_partition_list_destroy(list);
}

int mwt_pipeline_read(mwt_pipeline_t *p, const char *suffix, mwt_tally_t *t, int n,
                      const float *expected, int want_distinct, int64_t timeout_ms)
{
    char err[256];
    if (t->consumer == NULL)
        tally_open(p, suffix, t, n);
    int64_t deadline = mw_now_ms() + timeout_ms;
    int is_results = strcmp(suffix, "dlq") != 0;
    while (mw_now_ms() < deadline) {
        if (want_distinct >= 0 && t->distinct >= want_distinct)
            break;
        if (want_distinct < 0 && t->eof == (1 << t->partitions) - 1)
            break;
        int64_t left = deadline - mw_now_ms();
        rd_kafka_message_t *msg =
            rd_kafka_consumer_poll(t->consumer, (int)(left < 100 ? (left > 0 ? left : 0) : 100));
        if (msg == NULL)
            continue;
        if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            t->eof |= 1 << msg->partition;
            rd_kafka_message_destroy(msg);
            continue;
        }
        if (msg->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            rd_kafka_message_destroy(msg);
            continue;
        }
        t->eof &= ~(1 << msg->partition);
        t->total++;
        int i = -1;
        char key[16];
        if (msg->key_len > 0 && msg->key_len < sizeof(key)) {
            memcpy(key, msg->key, msg->key_len);
            key[msg->key_len] = '\0';
            if (sscanf(key, "r%d", &i) != 1 || i < 0 || i >= t->n)
                i = -1;
        }
        if (i < 0) {
            t->foreign++;
            rd_kafka_message_destroy(msg);
            continue;
        }
        int64_t where = (int64_t)msg->partition << 48 | msg->offset;
        if (t->count[i]++ == 0) {
            t->distinct++;
            t->first_offset[i] = where;
        } else if (t->total - t->distinct <= 10) {
            /* The first duplicates, to find them in the workers' logs. */
            fprintf(stderr, "duplicate %s: %s [%d] offset %lld, first at [%d] offset %lld\n", key,
                    rd_kafka_topic_name(msg->rkt), (int)msg->partition, (long long)msg->offset,
                    (int)(t->first_offset[i] >> 48),
                    (long long)(t->first_offset[i] & ((INT64_C(1) << 48) - 1)));
        }
        if (is_results) {
            mw_result_t res = {0};
            if (mw_result_from_message(&res, msg, err, sizeof(err)) != MW_OK) {
                t->mismatch[i]++;
            } else if (!res.ok) {
                t->errors[i]++;
                if (t->error_results++ < 10) /* the first ones, to tell what went wrong */
                    fprintf(stderr, "error result %s: %.*s\n", key, (int)res.error_len,
                            res.error != NULL ? res.error : "");
            } else if (expected != NULL &&
                       (res.nbytes !=
                            (size_t)mwt_request_rows(p, i) * p->out_features * sizeof(float) ||
                        memcmp(res.data,
                               expected + (size_t)i * (size_t)rows_stride(p) * p->out_features,
                               res.nbytes) != 0)) {
                t->mismatch[i]++;
            }
            char want[32];
            mwt_correlation_id(key, want, sizeof(want));
            if (res.correlation_id != NULL && (res.correlation_id_len != strlen(want) ||
                                               memcmp(res.correlation_id, want, strlen(want)) != 0))
                t->mismatch[i]++;
            if (res.attempts > t->attempts_max[i])
                t->attempts_max[i] = res.attempts;
            if (res.latency_us > t->latency_us[i])
                t->latency_us[i] = res.latency_us;
        }
        rd_kafka_message_destroy(msg);
    }
    return t->distinct;
}

void mwt_tally_fini(mwt_tally_t *t)
{
    if (t->consumer != NULL)
        mw_kafka_destroy(t->consumer);
    free(t->count);
    free(t->errors);
    free(t->mismatch);
    free(t->attempts_max);
    free(t->first_offset);
    free(t->latency_us);
    memset(t, 0, sizeof(*t));
}

int mwt_pipeline_check_exactly_once(mwt_pipeline_t *p, mwt_tally_t *t, int n, const float *expected,
                                    int (*bad)(int i), int64_t *attempts_max)
{
    mwt_pipeline_read(p, "results", t, n, expected, -1, mwt_scaled(30000));
    int missing = 0, dup = 0, mismatch = 0, wrong_status = 0, replayed = 0;
    int64_t attempts = 0;
    for (int i = 0; i < n; i++) {
        missing += t->count[i] == 0;
        dup += t->count[i] > 1;
        mismatch += t->mismatch[i] > 0;
        wrong_status += (bad != NULL && bad(i)) ? t->errors[i] != t->count[i] : t->errors[i] > 0;
        replayed += t->attempts_max[i] > 1;
        if (t->attempts_max[i] > attempts)
            attempts = t->attempts_max[i];
    }
    if (missing || dup || mismatch || wrong_status || t->foreign)
        fail_msg("results: %d missing, %d duplicated, %d differ from the reference, %d with the "
                 "wrong status, %d foreign (of %d requests, %d records)",
                 missing, dup, mismatch, wrong_status, t->foreign, n, t->total);
    if (attempts_max != NULL)
        *attempts_max = attempts;
    return replayed;
}
