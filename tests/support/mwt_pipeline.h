/* Integration-test support for serving: a pipeline with its model, topics,
 * coordinator and workers as real processes, requests with a reference answer
 * computed in-process, and a tally of what P.results and P.dlq hold. */
#ifndef MWT_PIPELINE_H
#define MWT_PIPELINE_H

#include "config.h"
#include "model/model.h"
#include "redis.h"
#include "topics/record.h"

#include <librdkafka/rdkafka.h>
#include <stdint.h>
#include <sys/types.h>

#define MWT_MAX_WORKERS 64

typedef struct mwt_pipeline {
    mw_config_t cfg;
    char name[96];
    char model_path[512];
    int nstages, partitions;
    int in_features, out_features;
    pid_t coordinator; /* the first coordinator */
    pid_t standbys[4]; /* more coordinators (mwt_pipeline_coordinator) */
    int nstandbys;
    pid_t pids[MWT_MAX_WORKERS];
    int stages[MWT_MAX_WORKERS];
    int nworkers;
    const char *const *worker_flags; /* extra flags for every worker (NULL-terminated) */
    /* Where the processes started next run: `ip netns exec netns` (mwt_netns), and
     * workers listen on and advertise host_addr. NULL: here, on 127.0.0.1. */
    const char *netns, *host_addr;
    int rows_max; /* request i has mwt_request_rows(p, i) rows, 1..rows_max (0: one) */
    /* Adds headers of its own to the record of well-formed request i (NULL: none). */
    void (*headers)(const struct mwt_pipeline *p, int i, mw_record_t *rec);
    rd_kafka_t *producer;
} mwt_pipeline_t;

/* A model of `layers` layers (16 inputs, 32 hidden, 8 outputs), the topics
 * <name>.requests/results/dlq with `partitions` partitions each, and a
 * coordinator planning the pipeline (nstages stages). Fails the test on error. */
mwt_pipeline_t *mwt_pipeline_new(const char *suffix, int nstages, int layers, int partitions,
                                 const char *const *worker_flags);

/* The same with a model of the caller's choice (in_features/out_features follow
 * spec; mwt_pipeline_submit and mwt_pipeline_reference assume 16 inputs and 8
 * outputs, so use them only with such a spec). */
mwt_pipeline_t *mwt_pipeline_new_model(const char *suffix, int nstages, const mw_model_spec_t *spec,
                                       int partitions, const char *const *worker_flags);

/* Creates topic <name>.<suffix> with `partitions` partitions. */
void mwt_pipeline_topic(mwt_pipeline_t *p, const char *suffix, int partitions);

/* The kafka_correlationId the tally expects on a result for key: "c" + key. */
void mwt_correlation_id(const char *key, char *buf, size_t size);

/* Starts one more coordinator of the pipeline (a standby while another leads);
 * killed by mwt_pipeline_destroy. Returns its pid. */
pid_t mwt_pipeline_coordinator(mwt_pipeline_t *p);

/* Kills every process (SIGKILL) and frees p. */
void mwt_pipeline_destroy(mwt_pipeline_t *p);

/* A cmocka teardown: destroys the pipeline in *state (kills its processes),
 * whether the test passed or failed. */
int mwt_pipeline_teardown(void **state);

/* Starts a worker at stage (MW_PLAN_STAGE_AUTO: --stage=auto) with the given id;
 * returns its index. */
int mwt_pipeline_worker(mwt_pipeline_t *p, int stage, const char *id);

/* per_stage workers at every stage, ids w<stage>-<k>. */
void mwt_pipeline_workers(mwt_pipeline_t *p, int per_stage);

/* Sends sig to worker i (its process group); with SIGKILL also reaps it. */
void mwt_pipeline_signal(mwt_pipeline_t *p, int i, int sig);

/* Members of the consumer group mw.<name> that have partitions assigned. */
int mwt_pipeline_origins_assigned(mwt_pipeline_t *p);

/* The broker (node id) coordinating the consumer group mw.<name>, asked
 * through a new client (librdkafka 2.0 keeps asking a coordinator it cached);
 * -1 when unknown. */
int mwt_pipeline_group_coordinator(mwt_pipeline_t *p);

/* A numeric field of worker id's hash in the cluster of r; -1 when absent. */
long long mwt_worker_field(mw_redis_t *r, const char *id, const char *field);

/* SIGTERM to every worker, then waits for each to exit (0 when all exited 0). */
int mwt_pipeline_stop_workers(mwt_pipeline_t *p, int64_t timeout_ms);

/* Request i: key "r%06d", input [rows, 16] f32, deterministic (row r of
 * request i is mwt_request_input(i + r * MWT_ROW_STRIDE)). */
#define MWT_ROW_STRIDE 1000003
void mwt_request_key(int i, char *buf, size_t size);
void mwt_request_input(int i, float *x);
int mwt_request_rows(const mwt_pipeline_t *p, int i);

/* Produces requests [first, first+n); request i is malformed when bad(i)
 * (a missing header, a bad dtype, a size mismatch or a shape the model
 * rejects, by i % 4). Flushes. */
void mwt_pipeline_submit(mwt_pipeline_t *p, int first, int n, int (*bad)(int i));

/* Expected outputs of the unsplit model, each request computed alone: request
 * i's rows at row i * max(1, rows_max), [out_features] each. */
float *mwt_pipeline_reference(mwt_pipeline_t *p, int n);

/* What a topic holds, per request index. */
typedef struct mwt_tally {
    int n;
    int *count;    /* records with this key */
    int *errors;   /* of them, error results (results) */
    int *mismatch; /* of them, ok results whose tensor differs from the reference, or whose
                      kafka_correlationId is not mwt_correlation_id's */
    int64_t *attempts_max;
    int64_t *first_offset; /* where the first record of each key is (partition << 48 | offset) */
    int64_t *latency_us;   /* largest mw-latency-us of its results (0: none) */
    int distinct, total, foreign;
    int error_results; /* error results seen (the first few are printed) */
    rd_kafka_t *consumer;
    int partitions, eof;
} mwt_tally_t;

/* Reads <name>.<suffix> (read_committed, from the beginning; results, or
 * with suffix "dlq" DLQ records; the suffix of the first call sticks) into t until
 * want_distinct keys were seen, or, with want_distinct < 0, until the end of
 * every partition; gives up after timeout_ms. Returns t->distinct.
 * expected may be NULL (no comparison). */
int mwt_pipeline_read(mwt_pipeline_t *p, const char *suffix, mwt_tally_t *t, int n,
                      const float *expected, int want_distinct, int64_t timeout_ms);
void mwt_tally_fini(mwt_tally_t *t);

/* After the workers stopped: reads the rest of t's topic (<name>.results when
 * t is not open yet) into t (to the end
 * of every partition), then fails the test unless each request [0, n) has
 * exactly one committed result, equal to expected, an error result exactly when
 * bad(i) (bad NULL: none is bad), and t holds no foreign record. Returns the
 * requests answered by a later attempt (mw-attempts > 1); *attempts_max, when
 * not NULL, gets the largest attempt count. */
int mwt_pipeline_check_exactly_once(mwt_pipeline_t *p, mwt_tally_t *t, int n, const float *expected,
                                    int (*bad)(int i), int64_t *attempts_max);

/* The chaos run: requests [0, n) in bursts of 100 (about 400/s), reading
 * <name>.<suffix> into t as they are answered, while every 2 s, 10 ms after a
 * burst (requests in flight, results not yet committed), a worker is killed
 * with SIGKILL and a replacement started at its stage: a random live worker
 * (rand()), or with stage >= 0 the first live one of that stage. Returns the
 * number of kills. */
int mwt_pipeline_chaos(mwt_pipeline_t *p, const char *suffix, mwt_tally_t *t, int n,
                       const float *expected, int stage);

#endif
