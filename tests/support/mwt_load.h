/* Benchmark support: a load source and result sink for one pipeline (requests
 * of any width with keys r%07d, a read_committed reader timing each result),
 * topics that take 4 MiB records, and pipelines of real processes in a Redis
 * cluster of their own. Fails the program (exit 1) on setup errors. */
#ifndef MWT_LOAD_H
#define MWT_LOAD_H

#include "model/model.h"
#include "mwt_pipeline.h"

#include <librdkafka/rdkafka.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define MWT_LOAD_MAX_REQ     2000000
#define MWT_LOAD_BIG_MESSAGE "16777216" /* topic max.message.bytes, producer message.max.bytes */

typedef struct mwt_load {
    char requests[200], results[200];
    char reply_topic[200]; /* requests carry kafka_replyTopic with it ("": none) */
    int in_features;
    size_t req_bytes;
    float *input;
    rd_kafka_t *prod, *cons;
    int raw_results;    /* results are bare tensors (the Kafka chain), not mw result records */
    _Atomic int next;   /* requests submitted: keys r0000000 .. next-1 */
    _Atomic int ngot;   /* distinct results seen */
    int errors;         /* error results (mw-status: error, or unparsable) */
    double *sent, *got; /* per request: produce time / result seen, mwt_now_us; 0 = not yet */
    /* Per request, of mw result records: when the origin produced the result
     * (its record's CreateTime, a millisecond of the wall clock, on mwt_now_us's
     * scale) and its mw-latency-us; -1 when unknown. */
    double *released, *pipeline_us;
    double wall_minus_mono_us; /* wall clock - mwt_now_us, at mwt_load_init */
} mwt_load_t;

/* Microseconds on the monotonic clock. */
double mwt_now_us(void);

/* Sorts v ascending; median and nearest-rank percentile of v (sorted in place). */
void mwt_sort(double *v, int n);
double mwt_median(double *v, int n);
double mwt_percentile(double *v, int n, double pct);

/* Creates topics of `partitions` partitions that accept records up to 16 MiB. */
void mwt_load_create_topics(const char *const *names, int n, int partitions);

/* Prints "<program>: what: err" and exits 1 (benchmark set-up failures). */
void mwt_die(const char *what, const char *err) __attribute__((noreturn));

/* One JSON line of bench "pipeline" on stdout; extra is ", \"key\": value..." or NULL. */
void mwt_emit(const char *metric, double value, const char *unit, const char *extra);

/* A producer allowing 16 MiB records; a consumer (read_committed, 5 ms fetch
 * wait) assigned partition 0 of topic from the beginning. Caller destroys. */
rd_kafka_t *mwt_load_producer(void);
rd_kafka_t *mwt_load_reader(const char *topic, const char *group);

/* Load on <topic_prefix>.requests / .results with f32 [1, in_features]
 * requests; raw: results are bare tensors, not mw result records. */
void mwt_load_init(mwt_load_t *l, const char *topic_prefix, int in_features, int raw);
void mwt_load_fini(mwt_load_t *l);

/* Produces n requests (no flush). Thread-safe against mwt_load_collect. */
void mwt_load_submit(mwt_load_t *l, int n);

/* Produces n requests of f32 [rows, in_features] (l->input holds that many
 * rows: mwt_batch_init's max_rows), request i to partition i % partitions (no
 * flush). Thread-safe against mwt_load_collect. */
void mwt_load_submit_rows(mwt_load_t *l, int n, int rows, int partitions);

/* Reads results until each request below upto has one or timeout; returns ngot. */
int mwt_load_collect(mwt_load_t *l, int upto, int64_t timeout_ms);

/* n requests at once: requests/s from the first produce to the last result. */
double mwt_load_burst(mwt_load_t *l, int n);

/* n requests one at a time: produce to committed result, in ms. */
void mwt_load_latency(mwt_load_t *l, int n, double *lat_ms);

/* Worker flags: elastic = the defaults; static = heartbeats, watchdog and
 * keepalives effectively off; fast_hb = defaults with 50 ms heartbeats. */
extern const char *const mwt_load_elastic_flags[];
extern const char *const mwt_load_static_flags[];
extern const char *const mwt_load_fast_hb_flags[];

/* A pipeline in cluster <prefix>.<suffix> with a coordinator of its own
 * (heartbeat.ttl_ms = coordinator_ttl_ms, other keys default), per_stage[s]
 * workers at stage s, one partition, topics for big records, and l set up on
 * it with 3 warm-up requests answered. */
mwt_pipeline_t *mwt_load_pipeline(const char *suffix, int nstages, const mw_model_spec_t *spec,
                                  const char *const *flags, const int *per_stage,
                                  long long coordinator_ttl_ms, mwt_load_t *l);
void mwt_load_pipeline_stop(mwt_pipeline_t *p, mwt_load_t *l);

/* layers dense relu layers inputs -> hidden ... -> outputs, no layer norm or
 * residual: cheap, so that transport dominates. */
mw_model_spec_t mwt_load_light_model(int inputs, int hidden, int outputs, int layers);

#endif
