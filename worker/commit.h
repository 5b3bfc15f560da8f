/* An origin's results commits, run on a thread of their own (DESIGN §3): the
 * engine thread releases results into the open transaction (or, at least
 * once, produces them) and hands the input offsets over; while the broker
 * commits, the engine keeps taking requests and computing, and it collects
 * the outcome when the committer wakes it. One commit at a time; the caller
 * produces nothing and begins or aborts no transaction while one runs. */
#ifndef MW_COMMIT_H
#define MW_COMMIT_H

#include <librdkafka/rdkafka.h>
#include <stdatomic.h>
#include <stddef.h>

typedef struct mw_commit mw_commit_t;

typedef struct mw_commit_opts {
    rd_kafka_t *producer, *consumer;
    int transactional; /* else at least once: flush, then commit the offsets */
    int timeout_ms;    /* of each Kafka call */
    /* At least once: set by the delivery report callback when a result was
     * not delivered; a flush that leaves it set commits no offsets. */
    atomic_int *delivery_failed;
    void (*wake)(void *arg); /* called on the committer's thread when a commit ended */
    void *arg;
} mw_commit_opts_t;

/* How a commit ended. */
typedef struct mw_commit_result {
    rd_kafka_topic_partition_list_t *offsets; /* what it committed (or tried to); the caller's */
    rd_kafka_error_t *error; /* transactional: NULL when committed, else the caller's */
    /* Transactional: rd_kafka_commit_transaction itself failed retriably (a
     * timeout): it goes on in the background and only calling it again may
     * finish it, so the next commit must be mw_commit_resume; nothing may be
     * produced meanwhile. */
    int resumable;
    rd_kafka_resp_err_t err; /* at least once: the offset commit's (NO_ERROR: committed) */
    int undelivered;         /* at least once: a result was not delivered; nothing committed */
} mw_commit_result_t;

/* Starts the committer's thread. NULL on failure, with errstr set. */
mw_commit_t *mw_commit_new(const mw_commit_opts_t *opts, char *errstr, size_t errstr_size);

/* Commits offsets (taken over), with the open transaction when transactional.
 * Only while none runs (mw_commit_busy). */
void mw_commit_start(mw_commit_t *c, rd_kafka_topic_partition_list_t *offsets);

/* Calls rd_kafka_commit_transaction again for a commit that ended resumable.
 * Only while none runs. */
void mw_commit_resume(mw_commit_t *c);

/* 1 from mw_commit_start until its result is collected. */
int mw_commit_busy(const mw_commit_t *c);

/* 1 and *res filled when the running commit has ended (waiting for it when
 * wait is set); 0 while it runs or when none was started. */
int mw_commit_collect(mw_commit_t *c, int wait, mw_commit_result_t *res);

/* Waits for a running commit (its result is dropped) and joins the thread.
 * Accepts NULL. */
void mw_commit_destroy(mw_commit_t *c);

#endif
