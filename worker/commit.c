/* The committer: an origin's results commits on a thread of their own. */
#include "commit.h"

#include "err.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

enum { C_IDLE, C_RUNNING, C_ENDED };

struct mw_commit {
    mw_commit_opts_t o;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int busy;                                 /* the caller's thread only */
    int state;                                /* lock */
    int stop;                                 /* lock */
    rd_kafka_topic_partition_list_t *offsets; /* lock: C_RUNNING's (NULL: a resume), then its
                                                 result's */
    mw_commit_result_t res;                   /* lock: C_ENDED */
};

/* The Kafka side of one commit (committer thread); without offsets, a resume:
 * only commit_transaction again. */
static void commit_run(const mw_commit_opts_t *o, mw_commit_result_t *res)
{
    if (o->transactional) {
        if (res->offsets != NULL) {
            rd_kafka_consumer_group_metadata_t *cgmd =
                rd_kafka_consumer_group_metadata(o->consumer);
            res->error = rd_kafka_send_offsets_to_transaction(o->producer, res->offsets, cgmd,
                                                              o->timeout_ms);
            rd_kafka_consumer_group_metadata_destroy(cgmd);
            if (res->error != NULL)
                return; /* retriable or not, a new call sends new offsets */
        }
        res->error = rd_kafka_commit_transaction(o->producer, o->timeout_ms);
        res->resumable = res->error != NULL && rd_kafka_error_is_retriable(res->error) &&
                         !rd_kafka_error_txn_requires_abort(res->error) &&
                         !rd_kafka_error_is_fatal(res->error);
        return;
    }
    rd_kafka_resp_err_t err = rd_kafka_flush(o->producer, o->timeout_ms);
    if (atomic_exchange(o->delivery_failed, 0))
        res->undelivered = 1;
    else if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
        res->err = err; /* results still queued: their offsets wait for the next flush */
    else
        res->err = rd_kafka_commit(o->consumer, res->offsets, 0);
}

static void *committer_main(void *arg)
{
    mw_commit_t *c = arg;
    pthread_mutex_lock(&c->lock);
    for (;;) {
        while (!c->stop && c->state != C_RUNNING)
            pthread_cond_wait(&c->cond, &c->lock);
        if (c->state != C_RUNNING)
            break;
        mw_commit_result_t res = {.offsets = c->offsets, .err = RD_KAFKA_RESP_ERR_NO_ERROR};
        pthread_mutex_unlock(&c->lock);
        commit_run(&c->o, &res);
        pthread_mutex_lock(&c->lock);
        c->res = res;
        c->state = C_ENDED;
        pthread_cond_broadcast(&c->cond);
        pthread_mutex_unlock(&c->lock);
        c->o.wake(c->o.arg);
        pthread_mutex_lock(&c->lock);
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

mw_commit_t *mw_commit_new(const mw_commit_opts_t *opts, char *errstr, size_t errstr_size)
{
    mw_commit_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        mw_errf(MW_ENOMEM, errstr, errstr_size, "out of memory");
        return NULL;
    }
    c->o = *opts;
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->cond, NULL);
    if (pthread_create(&c->thread, NULL, committer_main, c) != 0) {
        mw_errf(MW_EIO, errstr, errstr_size, "cannot start the results committer thread");
        pthread_cond_destroy(&c->cond);
        pthread_mutex_destroy(&c->lock);
        free(c);
        return NULL;
    }
    return c;
}

void mw_commit_start(mw_commit_t *c, rd_kafka_topic_partition_list_t *offsets)
{
    c->busy = 1;
    pthread_mutex_lock(&c->lock);
    c->offsets = offsets;
    c->state = C_RUNNING;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

void mw_commit_resume(mw_commit_t *c)
{
    mw_commit_start(c, NULL);
}

int mw_commit_busy(const mw_commit_t *c)
{
    return c->busy;
}

int mw_commit_collect(mw_commit_t *c, int wait, mw_commit_result_t *res)
{
    pthread_mutex_lock(&c->lock);
    while (wait && c->state == C_RUNNING)
        pthread_cond_wait(&c->cond, &c->lock);
    int ended = c->state == C_ENDED;
    if (ended) {
        *res = c->res;
        memset(&c->res, 0, sizeof(c->res));
        c->state = C_IDLE;
        c->busy = 0;
    }
    pthread_mutex_unlock(&c->lock);
    return ended;
}

void mw_commit_destroy(mw_commit_t *c)
{
    if (c == NULL)
        return;
    mw_commit_result_t res;
    if (mw_commit_collect(c, 1, &res)) {
        if (res.offsets != NULL)
            rd_kafka_topic_partition_list_destroy(res.offsets);
        if (res.error != NULL)
            rd_kafka_error_destroy(res.error);
    }
    pthread_mutex_lock(&c->lock);
    c->stop = 1;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
    pthread_join(c->thread, NULL);
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->lock);
    free(c);
}
