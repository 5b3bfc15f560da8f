/* Benchmark support for batched serving: topics with several partitions, and a
 * mwt_load_t whose requests have several rows ([rows, in_features]), spread
 * over every partition, with results read from every partition; pipelines in
 * clusters of their own; latency of lone requests and under paced load. Fails
 * the program (exit 1) on setup errors. */
#ifndef MWT_BATCH_H
#define MWT_BATCH_H

#include "mwt_load.h"

/* Creates topics of `partitions` partitions each. */

/* mwt_load_init for requests of up to max_rows rows of in_features f32 on
 * <topic_prefix>.requests/.results of `partitions` partitions: the results
 * consumer reads every partition from the beginning. Free with mwt_load_fini. */
void mwt_batch_init(mwt_load_t *l, const char *topic_prefix, int in_features, int max_rows,
                    int partitions, int raw);

/* Makes l's requests name reply_topic (kafka_replyTopic) and l read their
 * results there, every partition from the beginning. */
void mwt_batch_reply(mwt_load_t *l, const char *reply_topic, int partitions);

/* make run's model: mwctl model init --layers 6 --hidden 256 --inputs 64
 * --outputs 10 --seed 7 (gelu, no layer norm, no residual). */
extern const mw_model_spec_t mwt_make_run_model;

typedef struct mwt_batch_rate {
    double steady_req_s;     /* between the 10th and the 90th percentile result */
    double first_last_req_s; /* n over t0 -> last result */
    double cpu_busy;         /* share of the machine's CPU busy from t0 to now */
    double cpu_us_per_req;   /* the machine's busy CPU time from t0 to now, over n */
} mwt_batch_rate_t;

/* Throughput of requests [first, first + n) of l, all answered, from t0
 * (mwt_now_us), and the machine's CPU use since cpu0 (mwt_machine_ticks at
 * t0: busy, total). */
mwt_batch_rate_t mwt_batch_rate(const mwt_load_t *l, int first, int n, double t0,
                                const double cpu0[2]);

/* n requests of `rows` rows produced at once (by a thread of their own, while
 * this one reads results): their rate from the first produce. */
mwt_batch_rate_t mwt_batch_burst(mwt_load_t *l, int n, int rows, int partitions);

/* n requests of `rows` rows made visible at once: produced in one transaction
 * (read_committed consumers, as the pipeline's origins, see none of them yet),
 * then committed: their rate from the commit call. A backlog drained, with no
 * producer at work on this machine meanwhile. */
mwt_batch_rate_t mwt_batch_backlog(mwt_load_t *l, int n, int rows, int partitions);

/* Moves p, before any of its workers started, to a cluster of its own named
 * after it (its coordinator is restarted there), so that pipelines of one
 * program can run at once: one coordinator leads a cluster and plans only its
 * spec. */
void mwt_batch_own_cluster(mwt_pipeline_t *p);

/* Replaces l's producer (flushed, then destroyed) by one with linger.ms 0, so
 * that each request leaves at once: for latency. */
void mwt_batch_linger0(mwt_load_t *l);

/* n one-row requests one at a time (each produced once the previous result
 * was read), request i to partition i % partitions: produce -> result read,
 * in ms, in lat_ms[0..n). */
void mwt_batch_latency(mwt_load_t *l, int n, int partitions, double *lat_ms);

/* n one-row requests produced open-loop at req_s (by a thread of their own:
 * request k is due k / req_s after the first, whatever the results), request i
 * to partition i % partitions, all read by this thread. Returns the rate they
 * were produced at (first to last produce). */
double mwt_batch_paced(mwt_load_t *l, int n, double req_s, int partitions);

#endif
