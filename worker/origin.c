/* The origin (stage 0) side of the data plane: consumes requests, validates
 * them, gathers them into batches, dispatches stage 0's output of each batch
 * into the pipeline, splits the last stage's output per request, dispatches
 * aborted or unanswered requests again (in new batches), and releases results
 * per partition in input-offset order in Kafka transactions with the input
 * offsets, group-committed (commit_due; DESIGN §2, §3, §6). */
#include "clock.h"
#include "commit.h"
#include "dataplane_int.h"

#include "err.h"
#include "kafka.h"
#include "log.h"
#include "topics/record.h"
#include "topics/topics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FAC            "origin"
#define REQ_BUCKETS    4096
#define BATCH_BUCKETS  1024
#define POLL_MIN       64 /* messages taken per engine pass, at least */
#define FULL_POLL_MS   50
#define PAUSE_AFTER_MS 250
#define RESUME_TRIES   3     /* commit_transaction calls to finish one that timed out */
#define RENEW_TRIES    3     /* new results producers tried after one failed for good */
#define ABORT_RETRY_MS 60000 /* how long an abort that timed out is called again */
/* How long a snapshot of the cluster's topics serves reply routes: a reply
 * topic created (or grown) is used at most this long after. */
#define REPLY_METADATA_TTL_MS 2000

enum { RQ_WAIT = 1, RQ_SENT, RQ_DONE };

typedef struct dp_part dp_part_t;
typedef struct dp_req dp_req_t;
typedef struct dp_batch dp_batch_t;

/* RQ_WAIT: in the wait queue, for the next batch; RQ_SENT: its current batch
 * is in the pipeline; RQ_DONE: answered (ok or error), waiting for release. */
struct dp_req {
    dp_req_t *next;          /* in its partition, offset order */
    dp_req_t *hnext;         /* in the seq hash */
    dp_req_t *wprev, *wnext; /* in the wait queue (RQ_WAIT) */
    dp_part_t *part;
    rd_kafka_message_t *msg; /* owned until the result is committed */
    mw_request_t in;         /* the parsed request (borrows from msg) */
    uint64_t rows;           /* rows of in (the product of its leading dimensions) */
    uint64_t seq;
    int64_t offset;
    int state;
    uint32_t attempt;
    int64_t consumed_us;         /* monotonic */
    int64_t deadline_ms;         /* monotonic */
    int64_t attempt_deadline_ms; /* monotonic */
    dp_link_t *link;             /* RQ_SENT: where the current batch went */
    uint64_t batch;              /* RQ_SENT: the current batch */
    int ok;
    char *error;
    mw_tensor_desc_t out_desc;
    void *out;
    uint64_t out_bytes;
    int64_t latency_us;
    int produced;            /* in the open transaction (or flushed, at-least-once) */
    int32_t reply_partition; /* of in.reply_topic, checked; -1: the result goes to P.results */
};

/* A batch in the pipeline: its requests, in row order. Kept until its result
 * or abort arrives, its world goes down, or it expires. */
struct dp_batch {
    dp_batch_t *hnext;
    uint64_t id;
    int64_t expires_ms; /* monotonic */
    uint32_t n;
    struct {
        uint64_t seq;
        uint64_t row, rows;
    } req[];
};

struct dp_part {
    dp_part_t *next;
    char topic[256];
    int32_t partition;
    int started;         /* a message arrived since the assignment */
    int paused;          /* paused by flow control (only these are resumed) */
    int64_t next_offset; /* one past the last offset taken; -1 before the first */
    int64_t skipped;     /* redelivered messages dropped */
    dp_req_t *head, *tail;
};

struct dp_origin {
    rd_kafka_t *consumer, *producer;
    rd_kafka_queue_t *queue; /* the consumer's: wakes the engine when a message arrives */
    rd_kafka_topic_partition_list_t *subscription;
    char t_requests[128], t_results[128], t_dlq[128];
    int transactional;
    int txn_open;
    atomic_int delivery_failed; /* at-least-once: a delivery report failed since the last flush */
    mw_commit_t *committer;     /* runs the results commits */
    int commit_resumable;       /* the last commit_transaction timed out: call it again */
    dp_part_t *parts;
    dp_req_t *hash[REQ_BUCKETS];
    dp_batch_t *batches[BATCH_BUCKETS];
    dp_req_t *wait_head, *wait_tail;   /* RQ_WAIT requests, oldest first */
    int64_t ninflight, inflight_bytes; /* requests held, and their records' bytes */
    uint64_t next_seq, next_batch;
    dp_req_t **pick; /* the requests of the batch being formed (batch.max_rows) */
    uint8_t *gather; /* their rows, stacked, when there are several */
    size_t gather_cap;
    int paused;
    int draining;          /* paused for good */
    int64_t full_since_ms; /* when the window filled up; -1 while it has room */
    int64_t next_commit_ms, next_check_ms, next_full_poll_ms, next_sweep_ms;
    const struct rd_kafka_metadata *topics; /* every topic, for reply routes; NULL: none yet */
    int64_t topics_ms;                      /* when it was last asked for (monotonic); 0: never */
};

/* ------------------------------------------------------------- requests */

static dp_req_t *req_find(dp_origin_t *o, uint64_t seq)
{
    for (dp_req_t *r = o->hash[seq % REQ_BUCKETS]; r != NULL; r = r->hnext)
        if (r->seq == seq)
            return r;
    return NULL;
}

static void req_unhash(dp_origin_t *o, dp_req_t *r)
{
    for (dp_req_t **pp = &o->hash[r->seq % REQ_BUCKETS]; *pp != NULL; pp = &(*pp)->hnext) {
        if (*pp == r) {
            *pp = r->hnext;
            return;
        }
    }
}

static void leave_state(dp_origin_t *o, dp_req_t *r)
{
    if (r->state == RQ_SENT && r->link != NULL)
        r->link->outstanding--;
    if (r->state == RQ_WAIT) {
        *(r->wprev != NULL ? &r->wprev->wnext : &o->wait_head) = r->wnext;
        *(r->wnext != NULL ? &r->wnext->wprev : &o->wait_tail) = r->wprev;
        r->wprev = r->wnext = NULL;
    }
    r->state = 0;
    r->link = NULL;
}

/* Queues r for the next batch (it must be in no state). */
static void wait_for_batch(dp_origin_t *o, dp_req_t *r)
{
    r->state = RQ_WAIT;
    r->wprev = o->wait_tail;
    *(o->wait_tail != NULL ? &o->wait_tail->wnext : &o->wait_head) = r;
    o->wait_tail = r;
}

static void req_free(dp_origin_t *o, dp_req_t *r)
{
    req_unhash(o, r);
    leave_state(o, r);
    o->ninflight--;
    o->inflight_bytes -= (int64_t)(r->msg->len + r->msg->key_len);
    mw_request_fini(&r->in);
    rd_kafka_message_destroy(r->msg);
    free(r->out);
    free(r->error);
    free(r);
}

/* ---------------------------------------------------------------- batches */

static dp_batch_t *batch_take(dp_origin_t *o, uint64_t id)
{
    for (dp_batch_t **pp = &o->batches[id % BATCH_BUCKETS]; *pp != NULL; pp = &(*pp)->hnext) {
        dp_batch_t *b = *pp;
        if (b->id == id) {
            *pp = b->hnext;
            return b;
        }
    }
    return NULL;
}

/* Forgets batches whose requests can no longer need them (their attempts
 * were abandoned long ago: a late answer is not coming). */
static void batches_sweep(dp_origin_t *o, int64_t now)
{
    for (size_t i = 0; i < BATCH_BUCKETS; i++) {
        for (dp_batch_t **pp = &o->batches[i]; *pp != NULL;) {
            dp_batch_t *b = *pp;
            if (b->expires_ms <= now) {
                *pp = b->hnext;
                free(b);
            } else {
                pp = &b->hnext;
            }
        }
    }
}

static void finish_err(mw_dataplane_t *dp, dp_req_t *r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void finish_err(mw_dataplane_t *dp, dp_req_t *r, const char *fmt, ...)
{
    char msg[MW_RECORD_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    leave_state(dp->origin, r);
    r->state = RQ_DONE;
    r->ok = 0;
    r->error = strdup(msg);
    r->latency_us = mw_now_us() - r->consumed_us;
    mw_log(MW_LOG_INFO, FAC, "request %.*s (%s [%d] offset %lld) failed: %s",
           (int)(r->msg->key_len < 64 ? r->msg->key_len : 64), (const char *)r->msg->key,
           r->part->topic, (int)r->part->partition, (long long)r->offset, msg);
}

/* r's rows of a batch's output: the request's own leading dimensions, the
 * output's last one. */
static void finish_ok(mw_dataplane_t *dp, dp_req_t *r, const mw_tensor_desc_t *batch_desc,
                      const void *data)
{
    mw_tensor_desc_t desc = r->in.desc;
    desc.dtype = batch_desc->dtype;
    desc.shape[desc.ndim - 1] = batch_desc->shape[batch_desc->ndim - 1];
    uint64_t n;
    if (mw_tensor_nbytes(&desc, &n) != MW_OK || (r->out = malloc(n ? n : 1)) == NULL) {
        finish_err(dp, r, "out of memory for the result");
        return;
    }
    memcpy(r->out, data, n);
    leave_state(dp->origin, r);
    r->state = RQ_DONE;
    r->ok = 1;
    r->out_desc = desc;
    r->out_bytes = n;
    r->latency_us = mw_now_us() - r->consumed_us;
}

/* The queueing window: the longest a request should wait in the pipeline's
 * queues, so that a queue never outlasts an attempt. */
static int64_t queue_window_ms(const mw_dataplane_t *dp)
{
    int64_t w = dp->cfg.request_attempt_timeout_ms / 4;
    return w > 1 ? w : 1;
}

/* Starts the next half of l's queueing window once the current one is over. */
static void link_roll(const mw_dataplane_t *dp, dp_link_t *l, int64_t now)
{
    int64_t half = queue_window_ms(dp) / 2 + 1;
    if (now - l->answered_since_ms < half)
        return;
    l->answered_prev = now - l->answered_since_ms < 2 * half ? l->answered_cur : 0;
    l->answered_cur = 0;
    l->answered_since_ms = now;
}

/* Flow control by the pipeline's pace: a world may hold as many requests as
 * it answered over the last queueing window, so that a stage that is slower
 * than the load (until it is scaled out) leaves the backlog in Kafka instead
 * of queueing requests past their attempt timeout, where they would be sent
 * again and computed twice. The rate counts the previous and the current
 * half-window, scaled to a whole one. */
int mw_dp_origin_link_room(const mw_dataplane_t *dp, dp_link_t *l)
{
    int64_t now = mw_now_ms(), w = queue_window_ms(dp);
    link_roll(dp, l, now);
    int64_t span = w / 2 + 1 + (now - l->answered_since_ms);
    int64_t cap = (l->answered_prev + l->answered_cur) * w / span;
    return l->outstanding < (cap > dp->cfg.batch_max_rows ? cap : dp->cfg.batch_max_rows);
}

/* Splits a batch's output (rows stacked in the batch's order) among its
 * requests still waiting for an answer: any batch's output for a request is
 * the same bits, so the first one answers. */
static void finish_batch(mw_dataplane_t *dp, const dp_batch_t *b, const mw_tensor_desc_t *desc,
                         const void *data)
{
    uint64_t numel, total = 0;
    for (uint32_t i = 0; i < b->n; i++)
        total += b->req[i].rows;
    if (desc->ndim < 1 || mw_tensor_numel(desc, &numel) != MW_OK ||
        numel / (uint64_t)desc->shape[desc->ndim - 1] != total) {
        mw_log(MW_LOG_WARN, FAC, "batch #%llu: output shape does not have its %llu rows: ignored",
               (unsigned long long)b->id, (unsigned long long)total);
        return;
    }
    size_t row_bytes = (size_t)desc->shape[desc->ndim - 1] * mw_dtype_size(desc->dtype);
    int64_t now = mw_now_ms();
    for (uint32_t i = 0; i < b->n; i++) {
        dp_req_t *r = req_find(dp->origin, b->req[i].seq);
        if (r == NULL || r->state == RQ_DONE)
            continue;
        if (r->state == RQ_SENT && r->batch == b->id && r->link != NULL) {
            link_roll(dp, r->link, now);
            r->link->answered_cur++;
        }
        finish_ok(dp, r, desc, (const uint8_t *)data + b->req[i].row * row_bytes);
    }
}

/* Takes waiting requests, oldest first, for one batch of at most
 * batch.max_rows rows of the head's dtype and row width, into o->pick; returns
 * how many (0: the queue is empty, or the batch is not full and its oldest
 * request has waited less than batch.max_delay_us). */
static uint32_t batch_pick(mw_dataplane_t *dp, uint64_t *rows)
{
    dp_origin_t *o = dp->origin;
    const dp_req_t *head = o->wait_head;
    uint64_t max = (uint64_t)dp->cfg.batch_max_rows;
    uint32_t k = 0;
    *rows = 0;
    if (head == NULL)
        return 0;
    const mw_tensor_desc_t *hd = &head->in.desc;
    for (dp_req_t *r = o->wait_head; r != NULL && *rows < max; r = r->wnext) {
        const mw_tensor_desc_t *d = &r->in.desc;
        if (*rows + r->rows > max || d->dtype != hd->dtype ||
            d->shape[d->ndim - 1] != hd->shape[hd->ndim - 1])
            continue;
        o->pick[k++] = r;
        *rows += r->rows;
    }
    if (*rows < max && dp->cfg.batch_max_delay_us > 0 && !o->draining &&
        mw_now_us() - head->consumed_us < dp->cfg.batch_max_delay_us)
        return 0;
    return k;
}

/* Stage 0 on the k picked requests' rows, stacked in pick order: one
 * request's tensor as it is, several as [rows, width]. */
static int batch_compute(mw_dataplane_t *dp, uint32_t k, uint64_t rows, mw_tensor_desc_t *out_desc,
                         const void **out, char *errstr, size_t errstr_size)
{
    dp_origin_t *o = dp->origin;
    if (k == 1)
        return mw_dp_compute(dp, &o->pick[0]->in.desc, o->pick[0]->in.data, out_desc, out, errstr,
                             errstr_size);
    const mw_tensor_desc_t *hd = &o->pick[0]->in.desc;
    mw_tensor_desc_t desc = {
        .dtype = hd->dtype, .ndim = 2, .shape = {(int64_t)rows, hd->shape[hd->ndim - 1]}};
    uint64_t nbytes;
    if (mw_tensor_nbytes(&desc, &nbytes) != MW_OK)
        return mw_errf(MW_ETOOBIG, errstr, errstr_size, "batch too large");
    if (o->gather_cap < nbytes) {
        uint8_t *p = realloc(o->gather, nbytes);
        if (p == NULL)
            return mw_errf(MW_ENOMEM, errstr, errstr_size, "out of memory");
        o->gather = p;
        o->gather_cap = nbytes;
    }
    uint8_t *at = o->gather;
    for (uint32_t i = 0; i < k; i++) {
        memcpy(at, o->pick[i]->in.data, o->pick[i]->in.nbytes);
        at += o->pick[i]->in.nbytes;
    }
    return mw_dp_compute(dp, &desc, o->gather, out_desc, out, errstr, errstr_size);
}

/* Records the k picked requests as batch id, their rows in pick order. */
static dp_batch_t *batch_new(mw_dataplane_t *dp, uint32_t k)
{
    dp_origin_t *o = dp->origin;
    dp_batch_t *b = malloc(sizeof(*b) + k * sizeof(b->req[0]));
    if (b == NULL)
        return NULL;
    b->id = ++o->next_batch;
    b->expires_ms = mw_now_ms() + 2 * dp->cfg.request_attempt_timeout_ms;
    b->n = k;
    uint64_t row = 0;
    for (uint32_t i = 0; i < k; i++) {
        b->req[i].seq = o->pick[i]->seq;
        b->req[i].row = row;
        b->req[i].rows = o->pick[i]->rows;
        row += o->pick[i]->rows;
    }
    return b;
}

/* One batch from the wait queue: stage 0, then the router's world to stage 1
 * (or, in a one-stage pipeline, the results at once). Returns the number of
 * requests it took; 0 when there was nothing to send or nowhere to send it. */
static uint32_t dispatch_batch(mw_dataplane_t *dp)
{
    dp_origin_t *o = dp->origin;
    char err[256];
    uint64_t rows;
    int full;
    dp_link_t *down = NULL;
    uint32_t k = batch_pick(dp, &rows);
    if (k == 0 ||
        (dp->nstages > 1 && (down = mw_dp_pick_downstream(dp, dp->worker_id, &full)) == NULL))
        return 0;
    mw_tensor_desc_t od;
    const void *out;
    uint64_t nbytes = 0;
    int rc = batch_compute(dp, k, rows, &od, &out, err, sizeof(err));
    if (rc != MW_OK) {
        for (uint32_t i = 0; i < k; i++)
            finish_err(dp, o->pick[i], "stage 0 failed: %s", err);
        return k;
    }
    dp_batch_t *b = batch_new(dp, k);
    if (b != NULL && down == NULL) {
        finish_batch(dp, b, &od, out);
        free(b);
        return k;
    }
    void *buf = NULL;
    if (b == NULL || mw_tensor_nbytes(&od, &nbytes) != MW_OK ||
        (buf = malloc(nbytes ? nbytes : 1)) == NULL) {
        free(b);
        return 0; /* out of memory: the requests wait for the next pass */
    }
    memcpy(buf, out, nbytes);
    mw_hop_t hop = {.type = MW_HOP_TENSOR,
                    .stage = 0,
                    .incarnation = dp->incarnation,
                    .batch = b->id,
                    .nrequests = k,
                    .desc = od,
                    .nbytes = nbytes};
    snprintf(hop.origin, sizeof(hop.origin), "%s", dp->worker_id);
    if (mw_dp_link_send(dp, down, &hop, buf) != MW_OK) {
        free(b);
        return 0; /* the world is going down; the next pass picks another */
    }
    int64_t deadline = mw_now_ms() + dp->cfg.request_attempt_timeout_ms;
    for (uint32_t i = 0; i < k; i++) {
        dp_req_t *r = o->pick[i];
        leave_state(o, r);
        r->state = RQ_SENT;
        r->link = down;
        r->batch = b->id;
        r->attempt_deadline_ms = deadline;
        down->outstanding++;
    }
    b->hnext = o->batches[b->id % BATCH_BUCKETS];
    o->batches[b->id % BATCH_BUCKETS] = b;
    return k;
}

/* Dispatches batches while requests wait and a world has room; returns the
 * number of requests sent. */
static int dispatch_waiting(mw_dataplane_t *dp)
{
    int n = 0;
    for (uint32_t k; (k = dispatch_batch(dp)) > 0;)
        n += (int)k;
    return n;
}

/* The current attempt failed (why): the request waits for a batch again as
 * attempt + 1, or gives up. */
static void redispatch(mw_dataplane_t *dp, dp_req_t *r, const char *why)
{
    if ((int64_t)r->attempt >= dp->cfg.request_max_attempts) {
        finish_err(dp, r, "failed after %u attempts: %s", r->attempt, why);
        return;
    }
    mw_log(MW_LOG_DEBUG, FAC, "request #%llu attempt %u failed (%s): dispatching again",
           (unsigned long long)r->seq, r->attempt, why);
    r->attempt++;
    dp->counters.replays++;
    leave_state(dp->origin, r);
    wait_for_batch(dp->origin, r);
}

void mw_dp_origin_on_result(mw_dataplane_t *dp, const mw_hop_t *hop, const void *buf)
{
    if (hop->incarnation != dp->incarnation || strcmp(hop->origin, dp->worker_id) != 0)
        return; /* for an earlier process of this worker */
    dp_batch_t *b = batch_take(dp->origin, hop->batch);
    if (b == NULL)
        return; /* expired: its requests were answered by later batches */
    finish_batch(dp, b, &hop->desc, buf);
    free(b);
}

void mw_dp_origin_on_abort(mw_dataplane_t *dp, const mw_hop_t *hop, const char *why)
{
    if (hop->incarnation != dp->incarnation)
        return;
    dp_batch_t *b = batch_take(dp->origin, hop->batch);
    if (b == NULL)
        return;
    for (uint32_t i = 0; i < b->n; i++) {
        dp_req_t *r = req_find(dp->origin, b->req[i].seq);
        if (r != NULL && r->state == RQ_SENT && r->batch == b->id)
            redispatch(dp, r, why);
    }
    free(b);
}

void mw_dp_origin_link_down(mw_dataplane_t *dp, dp_link_t *l)
{
    dp_origin_t *o = dp->origin;
    if (o == NULL)
        return;
    for (dp_part_t *p = o->parts; p != NULL; p = p->next)
        for (dp_req_t *r = p->head; r != NULL; r = r->next)
            if (r->state == RQ_SENT && r->link == l)
                redispatch(dp, r, "world to the next stage lost");
}

/* ----------------------------------------------------------- partitions */

static dp_part_t *part_find(dp_origin_t *o, const char *topic, int32_t partition)
{
    for (dp_part_t *p = o->parts; p != NULL; p = p->next)
        if (p->partition == partition && strcmp(p->topic, topic) == 0)
            return p;
    return NULL;
}

static void part_drop(dp_origin_t *o, dp_part_t *p)
{
    int64_t dropped = 0;
    while (p->head != NULL) {
        dp_req_t *r = p->head;
        p->head = r->next;
        req_free(o, r);
        dropped++;
    }
    for (dp_part_t **pp = &o->parts; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    mw_log(MW_LOG_INFO, FAC,
           "partition %s [%d] revoked; %lld uncommitted requests left to its "
           "next owner",
           p->topic, (int)p->partition, (long long)dropped);
    free(p);
}

/* ----------------------------------------------------------- reply routes */

/* Partitions of topic in a snapshot of every topic's metadata, fetched again
 * when the last try is older than REPLY_METADATA_TTL_MS (every topic: asking
 * for one by name would create it on a broker that auto-creates topics). A
 * stale snapshot serves while Kafka does not answer; it is asked again only
 * after the TTL, so that the engine blocks on it at most that often. 0 when the
 * topic does not exist, or MW_EKAFKA with err when no snapshot could be had. */
static int topic_partitions(mw_dataplane_t *dp, const char *topic, char *err, size_t size)
{
    dp_origin_t *o = dp->origin;
    int64_t now = mw_now_ms();
    if (o->topics_ms == 0 || now - o->topics_ms >= REPLY_METADATA_TTL_MS) {
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_resp_err_t e =
            rd_kafka_metadata(o->producer, 1, NULL, &md, (int)dp->cfg.kafka_timeout_ms);
        o->topics_ms = now;
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
            if (o->topics != NULL)
                rd_kafka_metadata_destroy(o->topics);
            o->topics = md;
        } else {
            mw_log(MW_LOG_WARN, FAC, "metadata for reply topics: %s", rd_kafka_err2str(e));
        }
    }
    if (o->topics == NULL)
        return mw_errf(MW_EKAFKA, err, size, "no metadata to check reply topic %s", topic);
    for (int i = 0; i < o->topics->topic_cnt; i++)
        if (strcmp(o->topics->topics[i].topic, topic) == 0)
            return o->topics->topics[i].partition_cnt;
    return 0;
}

/* Checks r's reply route and sets r->reply_partition: the topic must match
 * results.reply_topics and exist, the partition asked for too. Without one,
 * the request's own partition modulo the topic's partition count: the replies
 * to one request partition stay in one reply partition, in input order. */
static int reply_route(mw_dataplane_t *dp, dp_req_t *r, char *err, size_t size)
{
    char topic[MW_TOPIC_NAME_MAX + 1];
    snprintf(topic, sizeof(topic), "%.*s", (int)r->in.reply_topic_len, r->in.reply_topic);
    if (!mw_reply_topic_allowed(dp->cfg.results_reply_topics, topic))
        return mw_errf(MW_EINVAL, err, size,
                       "reply topic %s is not allowed (results.reply_topics: '%s')", topic,
                       dp->cfg.results_reply_topics);
    int n = topic_partitions(dp, topic, err, size);
    if (n < 0)
        return n;
    if (n == 0)
        return mw_errf(MW_ENOTFOUND, err, size, "reply topic %s does not exist", topic);
    if (r->in.reply_partition >= n)
        return mw_errf(MW_ENOTFOUND, err, size,
                       "reply partition %d does not exist: topic %s has %d partition(s)",
                       (int)r->in.reply_partition, topic, n);
    r->reply_partition =
        r->in.reply_partition >= 0 ? r->in.reply_partition : r->part->partition % n;
    return MW_OK;
}

/* ---------------------------------------------------------------- output */

static int produce_one(mw_dataplane_t *dp, dp_req_t *r)
{
    dp_origin_t *o = dp->origin;
    char err[256], reply[MW_TOPIC_NAME_MAX + 1];
    const char *topic = o->t_results;
    int32_t partition = RD_KAFKA_PARTITION_UA;
    if (r->reply_partition >= 0 && reply_route(dp, r, err, sizeof(err)) != MW_OK) {
        /* The reply topic went away since the request was consumed: producing
         * to it would fail the transaction every time it is tried again. */
        mw_log(MW_LOG_WARN, FAC, "request at %s [%d] offset %lld: %s; answered on %s",
               r->part->topic, (int)r->part->partition, (long long)r->offset, err, o->t_results);
        free(r->out);
        free(r->error);
        r->out = NULL;
        r->out_bytes = 0;
        r->ok = 0;
        r->error = strdup(err);
        r->reply_partition = -1;
    }
    if (r->reply_partition >= 0) {
        snprintf(reply, sizeof(reply), "%.*s", (int)r->in.reply_topic_len, r->in.reply_topic);
        topic = reply;
        partition = r->reply_partition;
    }
    mw_record_t rec;
    mw_result_t res = {.id = r->msg->key,
                       .id_len = r->msg->key_len,
                       .ok = r->ok,
                       .error = r->error,
                       .desc = r->out_desc,
                       .data = r->out,
                       .nbytes = r->out_bytes,
                       .attempts = r->attempt,
                       .latency_us = r->latency_us,
                       .correlation_id = r->in.correlation_id,
                       .correlation_id_len = r->in.correlation_id_len};
    mw_record_init(&rec);
    int rc = mw_result_encode(&rec, &res, err, sizeof(err));
    if (rc == MW_OK)
        rc = mw_record_produce(o->producer, topic, partition, &rec, NULL, err, sizeof(err));
    mw_record_fini(&rec);
    if (rc == MW_OK && !r->ok) {
        rc = mw_dlq_encode_message(&rec, r->msg, r->error, r->attempt);
        if (rc == MW_OK)
            rc = mw_record_produce(o->producer, o->t_dlq, RD_KAFKA_PARTITION_UA, &rec, NULL, err,
                                   sizeof(err));
        mw_record_fini(&rec);
    }
    if (rc != MW_OK && rc != MW_EAGAIN)
        mw_log(MW_LOG_WARN, FAC, "producing a result: %s", err);
    return rc;
}

static void unproduce_all(dp_origin_t *o)
{
    for (dp_part_t *p = o->parts; p != NULL; p = p->next)
        for (dp_req_t *r = p->head; r != NULL && r->produced; r = r->next)
            r->produced = 0;
}

/* Produces every result that can be released (a done request whose
 * predecessors in its partition are done too); returns how many. */
static int release(mw_dataplane_t *dp)
{
    dp_origin_t *o = dp->origin;
    int n = 0;
    for (dp_part_t *p = o->parts; p != NULL; p = p->next) {
        for (dp_req_t *r = p->head; r != NULL; r = r->next) {
            if (r->produced)
                continue;
            if (r->state != RQ_DONE)
                break;
            if (o->transactional && !o->txn_open) {
                rd_kafka_error_t *e = rd_kafka_begin_transaction(o->producer);
                if (e != NULL) {
                    mw_dp_fatal(dp, MW_EKAFKA, "begin transaction: %s", rd_kafka_error_string(e));
                    rd_kafka_error_destroy(e);
                    return n;
                }
                o->txn_open = 1;
            }
            if (produce_one(dp, r) != MW_OK)
                return n; /* queue full or a transaction error: the commit sorts it out */
            r->produced = 1;
            n++;
        }
    }
    return n;
}

/* Offsets to commit: one past the last produced request of each partition. */
static rd_kafka_topic_partition_list_t *produced_offsets(dp_origin_t *o)
{
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(4);
    for (dp_part_t *p = o->parts; p != NULL; p = p->next) {
        int64_t next = -1;
        for (dp_req_t *r = p->head; r != NULL && r->produced; r = r->next)
            next = r->offset + 1;
        if (next >= 0)
            rd_kafka_topic_partition_list_add(list, p->topic, p->partition)->offset = next;
    }
    return list;
}

/* The produced results are committed: forget them. */
static void retire_produced(mw_dataplane_t *dp)
{
    dp_origin_t *o = dp->origin;
    for (dp_part_t *p = o->parts; p != NULL; p = p->next) {
        while (p->head != NULL && p->head->produced) {
            dp_req_t *r = p->head;
            p->head = r->next;
            if (p->head == NULL)
                p->tail = NULL;
            dp->counters.results++;
            dp->counters.errors += !r->ok;
            if (r->ok)
                mw_dp_latency_add(dp, r->latency_us);
            req_free(o, r);
        }
    }
}

static void commit_settle(mw_dataplane_t *dp);

static int producer_start(mw_dataplane_t *dp, rd_kafka_t **producer, mw_commit_t **committer,
                          char *errstr, size_t errstr_size);

/* The abort of the open transaction failed for good: the broker had aborted
 * that transaction itself (it outlived transaction.timeout.ms while the
 * broker hung, and librdkafka 2.0 takes the answer to its own abort,
 * INVALID_TXN_STATE, as fatal). The producer is replaced by a new one with
 * the same transactional.id, which starts clean. The transaction did not
 * commit (it ended in an abortable error, so no commit was sent), or its
 * partitions are being given up and their next owner reads their stable
 * committed offsets: either way its results may be produced again. A fenced
 * producer is not replaced: that is another process with this worker's id,
 * and only one may produce. */
static void producer_renew(mw_dataplane_t *dp, const char *why)
{
    dp_origin_t *o = dp->origin;
    char reason[512], err[512];
    rd_kafka_t *producer;
    mw_commit_t *committer;
    rd_kafka_resp_err_t code = rd_kafka_fatal_error(o->producer, reason, sizeof(reason));
    if (code != RD_KAFKA_RESP_ERR_INVALID_TXN_STATE) {
        mw_dp_fatal(dp, MW_EKAFKA, "abort transaction: %s", reason);
        return;
    }
    mw_log(MW_LOG_WARN, FAC, "%s: the results producer failed for good (%s): starting a new one",
           why, reason);
    int rc = MW_EKAFKA;
    for (int tries = 0; rc != MW_OK && tries < RENEW_TRIES; tries++)
        rc = producer_start(dp, &producer, &committer, err, sizeof(err));
    if (rc != MW_OK) {
        mw_dp_fatal(dp, MW_EKAFKA, "starting a new results producer: %s", err);
        return;
    }
    mw_commit_destroy(o->committer);
    rd_kafka_purge(o->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    mw_kafka_destroy(o->producer);
    o->producer = producer;
    o->committer = committer;
    o->commit_resumable = 0;
}

/* Aborts the open transaction, once a running commit has ended. librdkafka
 * takes no abort_transaction while a commit_transaction that timed out is
 * unfinished ("Conflicting commit_transaction API call is already in
 * progress"): that commit is resumed first, up to RESUME_TRIES times; it may
 * well commit (its offsets went with it: exactly once either way, as the next
 * owner of the partitions reads stable offsets). renew: an abort that fails
 * for good renews the producer (not when closing). */
static void txn_abort(mw_dataplane_t *dp, const char *why, int renew)
{
    dp_origin_t *o = dp->origin;
    commit_settle(dp);
    for (int tries = 0; o->commit_resumable && !dp->fatal && tries < RESUME_TRIES; tries++) {
        mw_log(MW_LOG_WARN, FAC, "%s: finishing the commit that timed out first", why);
        mw_commit_resume(o->committer);
        commit_settle(dp);
    }
    if (o->commit_resumable && !dp->fatal) {
        mw_dp_fatal(dp, MW_EKAFKA, "%s: the results commit that timed out did not finish", why);
        return;
    }
    if (!o->txn_open)
        return;
    mw_log(MW_LOG_WARN, FAC, "aborting the results transaction: %s", why);
    /* An abort that timed out (the broker hung) goes on in the background
     * and is finished by calling it again. */
    int64_t until = mw_now_ms() + ABORT_RETRY_MS;
    rd_kafka_error_t *e;
    while ((e = rd_kafka_abort_transaction(o->producer, (int)dp->cfg.kafka_timeout_ms)) != NULL &&
           rd_kafka_error_is_retriable(e) && mw_now_ms() < until) {
        mw_log(MW_LOG_WARN, FAC, "aborting the results transaction: %s (will retry)",
               rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
        mw_dp_pump(dp);
    }
    if (e != NULL) {
        if (renew && rd_kafka_error_is_fatal(e))
            producer_renew(dp, why);
        else
            mw_dp_fatal(dp, MW_EKAFKA, "abort transaction: %s", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    }
    o->txn_open = 0;
    unproduce_all(o);
}

/* Releases what it can and starts committing the released results with their
 * input offsets, or calls commit_transaction again after it timed out
 * (releasing nothing: that transaction is committing); 0 when there is
 * nothing to commit. No commit may be running. */
static int commit_start(mw_dataplane_t *dp)
{
    dp_origin_t *o = dp->origin;
    if (o->commit_resumable) {
        mw_commit_resume(o->committer);
        return 1;
    }
    release(dp);
    rd_kafka_topic_partition_list_t *offsets = produced_offsets(o);
    if (offsets->cnt == 0) {
        rd_kafka_topic_partition_list_destroy(offsets);
        return 0;
    }
    mw_commit_start(o->committer, offsets);
    return 1;
}

/* Acts on how a commit ended. */
static void commit_end(mw_dataplane_t *dp, mw_commit_result_t *res)
{
    dp_origin_t *o = dp->origin;
    rd_kafka_error_t *e = res->error;
    o->commit_resumable = res->resumable;
    if (!o->transactional) {
        if (res->undelivered)
            unproduce_all(o); /* produced again next time: at least once */
        else if (res->err == RD_KAFKA_RESP_ERR_NO_ERROR)
            retire_produced(dp);
        else
            mw_log(MW_LOG_WARN, FAC, "committing offsets: %s (will retry)",
                   rd_kafka_err2str(res->err));
    } else if (e == NULL) {
        o->txn_open = 0;
        for (int i = 0;
             res->offsets != NULL && i < res->offsets->cnt && mw_log_enabled(MW_LOG_DEBUG); i++)
            mw_log(MW_LOG_DEBUG, FAC, "committed %s [%d] up to offset %lld",
                   res->offsets->elems[i].topic, (int)res->offsets->elems[i].partition,
                   (long long)res->offsets->elems[i].offset);
        retire_produced(dp);
    } else if (rd_kafka_error_is_fatal(e)) {
        mw_dp_fatal(dp, MW_EFENCED, "results transaction: %s", rd_kafka_error_string(e));
    } else if (rd_kafka_error_txn_requires_abort(e)) {
        txn_abort(dp, rd_kafka_error_string(e), 1);
    } else {
        /* Retriable: the transaction stays open; the next commit tries again. */
        mw_log(MW_LOG_WARN, FAC, "committing results: %s (will retry)", rd_kafka_error_string(e));
    }
    if (e != NULL)
        rd_kafka_error_destroy(e);
    if (res->offsets != NULL)
        rd_kafka_topic_partition_list_destroy(res->offsets);
}

/* Waits for the running commit, if any, and acts on its end. */
static void commit_settle(mw_dataplane_t *dp)
{
    mw_commit_result_t res;
    if (mw_commit_collect(dp->origin->committer, 1, &res))
        commit_end(dp, &res);
}

/* Commits what can be released now and waits for it (rebalances, closing). */
static void commit(mw_dataplane_t *dp)
{
    commit_settle(dp);
    if (commit_start(dp))
        commit_settle(dp);
}

/* ------------------------------------------------------------- rebalance */

/* Fills parts with the group's committed offsets (the beginning where there
 * are none), waiting while an open transaction holds them (require_stable):
 * the transaction of an origin that died, until Kafka aborts it, or of one
 * that is still finishing. The partitions are then assigned at these offsets,
 * so librdkafka does not fetch them itself: librdkafka 2.0 starts a partition
 * at auto.offset.reset (answering it all again) when its assignment changes
 * while such a fetch waits on a transaction. Blocks the origin's Kafka side
 * (up to twice kafka_client.timeout_ms, then it takes the last committed
 * offsets) while the worlds keep being served (mw_dp_pump). */
static void fetch_offsets(mw_dataplane_t *dp, rd_kafka_topic_partition_list_t *parts)
{
    dp_origin_t *o = dp->origin;
    char group[160], kerr[256];
    snprintf(group, sizeof(group), "mw.%s", dp->pipeline);
    int64_t deadline = mw_now_ms() + 2 * dp->cfg.kafka_timeout_ms;
    /* Asked through the consumer's handle, and through a client of its own
     * once the group's coordinator answered NOT_COORDINATOR: librdkafka 2.0
     * keeps asking the broker its coordinator cache names (for
     * metadata.max.age.ms), so after the coordinator moved, a restarted
     * broker that no longer is it answered that to every try. */
    rd_kafka_t *rk = o->consumer, *own = NULL;
    int64_t renew_ms = 0;
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    for (int tries = 0;; tries++) {
        int stable = mw_now_ms() < deadline;
        rd_kafka_ListConsumerGroupOffsets_t *req =
            rd_kafka_ListConsumerGroupOffsets_new(group, parts);
        rd_kafka_AdminOptions_t *opt =
            rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPOFFSETS);
        rd_kafka_AdminOptions_set_request_timeout(opt, 5000, kerr, sizeof(kerr));
        rd_kafka_error_t *e = rd_kafka_AdminOptions_set_require_stable_offsets(opt, stable);
        if (e != NULL)
            rd_kafka_error_destroy(e);
        rd_kafka_ListConsumerGroupOffsets(rk, &req, 1, opt, q);
        rd_kafka_ListConsumerGroupOffsets_destroy(req);
        rd_kafka_AdminOptions_destroy(opt);
        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 10000);
        char why[256] = "no answer"; /* a copy: the strings below go with ev */
        int done = 0;
        int moved = ev != NULL && rd_kafka_event_error(ev) == RD_KAFKA_RESP_ERR_NOT_COORDINATOR;
        const rd_kafka_ListConsumerGroupOffsets_result_t *res =
            ev != NULL ? rd_kafka_event_ListConsumerGroupOffsets_result(ev) : NULL;
        size_t n = 0;
        const rd_kafka_group_result_t **groups =
            res != NULL ? rd_kafka_ListConsumerGroupOffsets_result_groups(res, &n) : NULL;
        if (ev != NULL && rd_kafka_event_error(ev) != RD_KAFKA_RESP_ERR_NO_ERROR) {
            snprintf(why, sizeof(why), "%s", rd_kafka_event_error_string(ev));
        } else if (n == 1 && rd_kafka_group_result_error(groups[0]) != NULL) {
            snprintf(why, sizeof(why), "%s",
                     rd_kafka_error_string(rd_kafka_group_result_error(groups[0])));
        } else if (n == 1) {
            const rd_kafka_topic_partition_list_t *got =
                rd_kafka_group_result_partitions(groups[0]);
            done = 1;
            for (int i = 0; i < parts->cnt && done; i++) {
                rd_kafka_topic_partition_t *tp = rd_kafka_topic_partition_list_find(
                    (rd_kafka_topic_partition_list_t *)got, parts->elems[i].topic,
                    parts->elems[i].partition);
                if (tp == NULL || tp->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
                    snprintf(why, sizeof(why), "%s",
                             tp != NULL ? rd_kafka_err2str(tp->err) : "partition missing");
                    done = 0;
                } else {
                    parts->elems[i].offset =
                        tp->offset >= 0 ? tp->offset : RD_KAFKA_OFFSET_BEGINNING;
                }
            }
        }
        if (ev != NULL)
            rd_kafka_event_destroy(ev);
        if (done) {
            if (!stable)
                mw_log(MW_LOG_WARN, FAC,
                       "committed offsets still unstable after %lld ms: "
                       "starting at the last committed ones",
                       (long long)(2 * dp->cfg.kafka_timeout_ms));
            break;
        }
        if (tries == 0 || tries % 20 == 0)
            mw_log(MW_LOG_INFO, FAC, "waiting for the committed offsets of %d partition(s): %s",
                   parts->cnt, why);
        if (moved && mw_now_ms() >= renew_ms) {
            rd_kafka_t *fresh = mw_topics_admin_new(&dp->cfg, kerr, sizeof(kerr));
            renew_ms = mw_now_ms() + 5000; /* at most one new client per 5 s */
            if (fresh == NULL) {
                mw_log(MW_LOG_WARN, FAC, "asking for the committed offsets: %s", kerr);
            } else {
                rd_kafka_queue_destroy(q);
                if (own != NULL)
                    mw_kafka_destroy(own);
                rk = own = fresh;
                q = rd_kafka_queue_new(rk);
            }
        }
        /* Meanwhile the worlds keep moving: results come back, aborts go on. */
        for (int64_t until = mw_now_ms() + 250; mw_now_ms() < until;)
            if (mw_dp_pump(dp) == 0) {
                struct timespec ts = {.tv_sec = 0, .tv_nsec = 500 * 1000};
                nanosleep(&ts, NULL);
            }
    }
    rd_kafka_queue_destroy(q);
    if (own != NULL)
        mw_kafka_destroy(own);
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    mw_dataplane_t *dp = opaque;
    dp_origin_t *o = dp->origin;
    int cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    rd_kafka_error_t *e = NULL;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        for (int i = 0; i < parts->cnt; i++) {
            if (part_find(o, parts->elems[i].topic, parts->elems[i].partition) != NULL)
                continue;
            dp_part_t *p = calloc(1, sizeof(*p));
            if (p == NULL)
                continue;
            snprintf(p->topic, sizeof(p->topic), "%s", parts->elems[i].topic);
            p->partition = parts->elems[i].partition;
            p->next_offset = -1;
            p->next = o->parts;
            o->parts = p;
        }
        if (parts->cnt > 0)
            mw_log(MW_LOG_INFO, FAC, "%d partition(s) of %s assigned", parts->cnt, o->t_requests);
        rd_kafka_topic_partition_list_t *at = rd_kafka_topic_partition_list_copy(parts);
        if (at->cnt > 0)
            fetch_offsets(dp, at);
        if (cooperative)
            e = rd_kafka_incremental_assign(rk, at);
        else
            rd_kafka_assign(rk, at);
        rd_kafka_topic_partition_list_destroy(at);
        /* Not paused here even when the window is full: a partition paused
         * before its first message may resume at auto.offset.reset. Flow
         * control pauses it after its first message. */
    } else {
        /* Revoked: what is done is committed while the partitions are still
         * ours; lost: the transaction cannot commit them any more. */
        if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS && !rd_kafka_assignment_lost(rk)) {
            if (!dp->fatal)
                commit(dp);
        } else if (o->transactional && o->txn_open) {
            txn_abort(dp, "partitions lost", 1);
        }
        if (o->transactional && o->txn_open)
            txn_abort(dp, "partitions revoked with results not committed", 1);
        /* librdkafka keeps a partition's pause across its unassignment: one
         * that flow control paused would come back paused, and never be
         * resumed (flow control resumes only what it paused since). */
        rd_kafka_topic_partition_list_t *paused = rd_kafka_topic_partition_list_new(parts->cnt);
        for (int i = 0; i < parts->cnt; i++) {
            dp_part_t *p = part_find(o, parts->elems[i].topic, parts->elems[i].partition);
            if (p != NULL && p->paused)
                rd_kafka_topic_partition_list_add(paused, p->topic, p->partition);
            if (p != NULL)
                part_drop(o, p);
        }
        if (paused->cnt > 0)
            rd_kafka_resume_partitions(rk, paused);
        rd_kafka_topic_partition_list_destroy(paused);
        if (cooperative)
            e = rd_kafka_incremental_unassign(rk, parts);
        else
            rd_kafka_assign(rk, NULL);
    }
    if (e != NULL) {
        mw_log(MW_LOG_WARN, FAC, "rebalance: %s", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    }
}

static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    (void)rk;
    mw_dataplane_t *dp = opaque;
    if (msg->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        mw_log(MW_LOG_WARN, FAC, "result delivery failed: %s", rd_kafka_err2str(msg->err));
        atomic_store(&dp->origin->delivery_failed, 1);
    }
}

/* ----------------------------------------------------------------- input */

static void on_message(mw_dataplane_t *dp, rd_kafka_message_t *msg)
{
    dp_origin_t *o = dp->origin;
    char err[512];
    if (msg->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
            mw_log(MW_LOG_WARN, FAC, "consumer: %s", rd_kafka_message_errstr(msg));
        rd_kafka_message_destroy(msg);
        return;
    }
    dp_part_t *p = part_find(o, rd_kafka_topic_name(msg->rkt), msg->partition);
    dp_req_t *r = p != NULL ? calloc(1, sizeof(*r)) : NULL;
    if (r == NULL) {
        rd_kafka_message_destroy(msg);
        return;
    }
    if (p->next_offset >= 0 && msg->offset < p->next_offset) {
        /* A rewind (librdkafka can restart a resumed partition at an older
         * position): these requests are held or committed already. Skip them,
         * and seek back to where this partition really is. */
        if (p->skipped++ == 0) {
            mw_log(MW_LOG_WARN, FAC,
                   "partition %s [%d]: redelivered from offset %lld, seeking to %lld", p->topic,
                   (int)p->partition, (long long)msg->offset, (long long)p->next_offset);
            rd_kafka_topic_partition_list_t *to = rd_kafka_topic_partition_list_new(1);
            rd_kafka_topic_partition_list_add(to, p->topic, p->partition)->offset = p->next_offset;
            rd_kafka_error_t *e = rd_kafka_seek_partitions(o->consumer, to, 0);
            if (e != NULL)
                rd_kafka_error_destroy(e);
            rd_kafka_topic_partition_list_destroy(to);
        }
        free(r);
        rd_kafka_message_destroy(msg);
        return;
    }
    p->skipped = 0;
    p->next_offset = msg->offset + 1;
    if (!p->started) {
        p->started = 1;
        mw_log(MW_LOG_INFO, FAC, "partition %s [%d]: consuming from offset %lld", p->topic,
               (int)p->partition, (long long)msg->offset);
    }
    r->msg = msg;
    r->part = p;
    r->offset = msg->offset;
    r->seq = ++o->next_seq;
    r->attempt = 1;
    r->reply_partition = -1;
    r->consumed_us = mw_now_us();
    if (p->tail != NULL)
        p->tail->next = r;
    else
        p->head = r;
    p->tail = r;
    r->hnext = o->hash[r->seq % REQ_BUCKETS];
    o->hash[r->seq % REQ_BUCKETS] = r;
    o->ninflight++;
    o->inflight_bytes += (int64_t)(msg->len + msg->key_len);

    int64_t now = mw_now_ms();
    uint64_t max_rows = (uint64_t)dp->cfg.batch_max_rows;
    if (mw_request_from_message(&r->in, msg, (uint64_t)dp->cfg.records_max_tensor_bytes, err,
                                sizeof(err)) != MW_OK) {
        r->attempt = 0;
        finish_err(dp, r, "invalid request: %s", err);
        return;
    }
    if (r->in.reply_topic != NULL && reply_route(dp, r, err, sizeof(err)) != MW_OK) {
        r->attempt = 0;
        finish_err(dp, r, "%s", err); /* answered on P.results */
        return;
    }
    r->deadline_ms = now + dp->cfg.request_timeout_ms;
    if (r->in.deadline_ms > 0)
        r->deadline_ms = now + (r->in.deadline_ms - mw_unix_ms());
    /* Checked here, before any compute, so that it never spoils a batch. */
    if (r->deadline_ms <= now)
        finish_err(dp, r, "deadline passed before the request was processed");
    else if (mw_stage_rows(dp->st, &r->in.desc, &r->rows, err, sizeof(err)) != MW_OK)
        finish_err(dp, r, "invalid request: %s", err);
    else if (r->rows > max_rows)
        finish_err(dp, r, "invalid request: %llu rows; batch.max_rows is %llu",
                   (unsigned long long)r->rows, (unsigned long long)max_rows);
    else
        wait_for_batch(o, r);
}

/* 1 when the origin holds at least num/den of worker.max_inflight requests or
 * of worker.max_inflight_bytes bytes of request records: at 1/1 its window
 * is full. */
static int window_at(const mw_dataplane_t *dp, int64_t num, int64_t den)
{
    const dp_origin_t *o = dp->origin;
    return o->ninflight * den >= dp->cfg.worker_max_inflight * num ||
           o->inflight_bytes * den >= dp->cfg.worker_max_inflight_bytes * num;
}

static void flow_control(mw_dataplane_t *dp, int64_t now)
{
    dp_origin_t *o = dp->origin;
    if (!window_at(dp, 1, 1))
        o->full_since_ms = -1;
    else if (o->full_since_ms < 0)
        o->full_since_ms = now;
    /* A full window only stops polling (librdkafka keeps prefetching, so
     * taking requests again costs nothing); the partitions are paused when it
     * stays full for PAUSE_AFTER_MS (a resumed partition may wait up to a
     * second for its next fetch), and resumed at three quarters; always
     * paused while draining. */
    int want = o->draining || (o->full_since_ms >= 0 && now - o->full_since_ms >= PAUSE_AFTER_MS) ||
               (o->paused && window_at(dp, 3, 4));
    o->paused = want;
    /* Only partitions that delivered a message are paused, and only those
     * paused here are resumed: librdkafka may restart others at an older
     * position. */
    rd_kafka_topic_partition_list_t *list = NULL;
    for (dp_part_t *p = o->parts; p != NULL; p = p->next) {
        if (p->paused == want || (want && p->next_offset < 0))
            continue;
        if (list == NULL)
            list = rd_kafka_topic_partition_list_new(4);
        rd_kafka_topic_partition_list_add(list, p->topic, p->partition);
        p->paused = want;
    }
    if (list == NULL)
        return;
    if (want)
        rd_kafka_pause_partitions(o->consumer, list);
    else
        rd_kafka_resume_partitions(o->consumer, list);
    rd_kafka_topic_partition_list_destroy(list);
}

/* Whether a result is waiting for a transaction: a partition's head that is
 * done is either released into the open transaction or releasable now
 * (results leave in offset order). */
static int results_waiting(const dp_origin_t *o)
{
    for (const dp_part_t *p = o->parts; p != NULL; p = p->next)
        if (p->head != NULL && p->head->state == RQ_DONE)
            return 1;
    return 0;
}

/* Group commit: a results transaction starts as soon as a result can be
 * released (or a commit that failed is to be retried), none is running on the
 * committer, and next_commit_ms has come: under load each one carries
 * everything released while the previous one committed, and a lone result
 * waits for one commit. */
static int commit_due(mw_dataplane_t *dp, int64_t now)
{
    dp_origin_t *o = dp->origin;
    return now >= o->next_commit_ms && !mw_commit_busy(o->committer) && results_waiting(o);
}

/* Deadlines and unanswered attempts. */
static int check_requests(mw_dataplane_t *dp, int64_t now)
{
    dp_origin_t *o = dp->origin;
    int n = 0;
    for (dp_part_t *p = o->parts; p != NULL; p = p->next) {
        for (dp_req_t *r = p->head; r != NULL; r = r->next) {
            if (r->state == RQ_DONE)
                continue;
            if (now >= r->deadline_ms) {
                finish_err(dp, r, "deadline exceeded after %u attempt(s)", r->attempt);
                n++;
            } else if (r->state == RQ_SENT && now >= r->attempt_deadline_ms) {
                redispatch(dp, r, "no answer within request.attempt_timeout_ms");
                n++;
            }
        }
    }
    return n;
}

int mw_dp_origin_step(mw_dataplane_t *dp)
{
    dp_origin_t *o = dp->origin;
    int n = 0;
    int64_t now = mw_now_ms();
    /* Polled even when paused or draining (rebalances are served from here),
     * but then at most one message per FULL_POLL_MS; not while the window is
     * full but not yet paused: that would take requests beyond it. */
    int full = o->draining || window_at(dp, 1, 1);
    int hold = full && !o->paused && !o->draining;
    /* Up to a full batch per pass, so that batches are not cut at the poll. */
    int64_t poll_max = dp->cfg.batch_max_rows > POLL_MIN ? dp->cfg.batch_max_rows : POLL_MIN;
    for (int64_t i = 0; i < poll_max && !hold && (!full || now >= o->next_full_poll_ms); i++) {
        if (full) {
            o->next_full_poll_ms = now + FULL_POLL_MS;
            if (i > 0)
                break;
        } else if (window_at(dp, 1, 1)) {
            break;
        }
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(o->consumer, 0);
        if (msg == NULL)
            break;
        on_message(dp, msg);
        n++;
    }
    flow_control(dp, now);
    if (now >= o->next_check_ms) {
        n += check_requests(dp, now);
        o->next_check_ms = now + 10;
    }
    if (now >= o->next_sweep_ms) {
        batches_sweep(o, now);
        o->next_sweep_ms = now + 500;
    }
    n += dispatch_waiting(dp);
    rd_kafka_poll(o->producer, 0);
    mw_commit_result_t res;
    if (mw_commit_collect(o->committer, 0, &res)) {
        /* Results that became ready while it committed wait the gap
         * (results.commit_min_gap_ms, at most results.commit_interval_ms) for
         * more to join them; when none did, the next result is committed as
         * soon as it is ready: a lone request waits for no gap. */
        int64_t gap = dp->cfg.results_commit_interval_ms < dp->cfg.results_commit_min_gap_ms
                          ? dp->cfg.results_commit_interval_ms
                          : dp->cfg.results_commit_min_gap_ms;
        commit_end(dp, &res);
        o->next_commit_ms = results_waiting(o) ? mw_now_ms() + gap : 0;
        n++;
    }
    if (commit_due(dp, now))
        n += commit_start(dp);
    dp->counters.inflight = o->ninflight;
    return n;
}

int mw_dp_origin_wait_ms(mw_dataplane_t *dp, int max_ms)
{
    dp_origin_t *o = dp->origin;
    int64_t now = mw_now_ms(), due = now + max_ms;
    if (o->next_commit_ms < due && commit_due(dp, o->next_commit_ms))
        due = o->next_commit_ms;
    if (o->next_check_ms < due)
        due = o->next_check_ms;
    if (o->wait_head != NULL && dp->cfg.batch_max_delay_us > 0) {
        int64_t full_us = o->wait_head->consumed_us + dp->cfg.batch_max_delay_us;
        int64_t at = now + (full_us - mw_now_us() + 999) / 1000;
        if (at < due)
            due = at;
    }
    return due > now ? (int)(due - now) : 0;
}

/* ------------------------------------------------------------- lifecycle */

int mw_dp_origin_new(mw_dataplane_t *dp, char *errstr, size_t errstr_size)
{
    dp_origin_t *o = calloc(1, sizeof(*o));
    if (o == NULL)
        return mw_errf(MW_ENOMEM, errstr, errstr_size, "out of memory");
    dp->origin = o;
    snprintf(o->t_requests, sizeof(o->t_requests), "%s.requests", dp->pipeline);
    snprintf(o->t_results, sizeof(o->t_results), "%s.results", dp->pipeline);
    snprintf(o->t_dlq, sizeof(o->t_dlq), "%s.dlq", dp->pipeline);
    o->transactional = strcmp(dp->cfg.results_delivery, "at-least-once") != 0;
    o->full_since_ms = -1;
    o->pick = calloc((size_t)dp->cfg.batch_max_rows, sizeof(*o->pick));
    if (o->pick == NULL)
        return mw_errf(MW_ENOMEM, errstr, errstr_size, "out of memory");
    return MW_OK;
}

static void wake_engine(void *dp)
{
    mw_dp_wake(dp);
}

/* A results producer and a committer that uses it (the consumer must
 * exist). A transactional producer fences an earlier incarnation of this
 * worker (or this one's earlier producer) and aborts its open transaction. */
static int producer_start(mw_dataplane_t *dp, rd_kafka_t **producer, mw_commit_t **committer,
                          char *errstr, size_t errstr_size)
{
    dp_origin_t *o = dp->origin;
    char txn_id[512];
    snprintf(txn_id, sizeof(txn_id), "mw.%s.%s.%s", dp->cfg.cluster, dp->pipeline, dp->worker_id);
    const mw_kafka_hooks_t hooks = {.dr_msg_cb = dr_msg_cb, .opaque = dp};
    *producer = mw_kafka_producer_new(&dp->cfg, o->transactional ? txn_id : NULL, &hooks, errstr,
                                      errstr_size);
    if (*producer == NULL)
        return MW_EKAFKA;
    const mw_commit_opts_t copts = {.producer = *producer,
                                    .consumer = o->consumer,
                                    .transactional = o->transactional,
                                    .timeout_ms = (int)dp->cfg.kafka_timeout_ms,
                                    .delivery_failed = &o->delivery_failed,
                                    .wake = wake_engine,
                                    .arg = dp};
    *committer = mw_commit_new(&copts, errstr, errstr_size);
    if (*committer == NULL) {
        mw_kafka_destroy(*producer);
        *producer = NULL;
        return MW_EIO;
    }
    return MW_OK;
}

int mw_dp_origin_connect(mw_dataplane_t *dp, char *errstr, size_t errstr_size)
{
    dp_origin_t *o = dp->origin;
    char group[128];
    snprintf(group, sizeof(group), "mw.%s", dp->pipeline);
    const mw_kafka_hooks_t hooks = {.rebalance_cb = rebalance_cb, .opaque = dp};
    o->consumer = mw_kafka_consumer_new(&dp->cfg, group, &hooks, errstr, errstr_size);
    if (o->consumer == NULL)
        return MW_EKAFKA;
    int rc = producer_start(dp, &o->producer, &o->committer, errstr, errstr_size);
    if (rc != MW_OK)
        return rc;
    static const uint64_t one = 1; /* what an eventfd reads */
    o->queue = rd_kafka_queue_get_consumer(o->consumer);
    if (o->queue != NULL) /* else the engine polls Kafka at its next timer */
        rd_kafka_queue_io_event_enable(o->queue, dp->wakefd, &one, sizeof(one));
    o->subscription = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(o->subscription, o->t_requests, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(o->consumer, o->subscription);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
        return mw_errf(MW_EKAFKA, errstr, errstr_size, "subscribing to %s: %s", o->t_requests,
                       rd_kafka_err2str(err));
    mw_log(MW_LOG_INFO, FAC, "origin %s: consuming %s in group %s, results to %s (%s)",
           dp->worker_id, o->t_requests, group, o->t_results,
           o->transactional ? "exactly once" : "at least once");
    return MW_OK;
}

void mw_dp_origin_drain(mw_dataplane_t *dp)
{
    dp->origin->draining = 1;
    mw_log(MW_LOG_INFO, FAC, "draining: %s paused, finishing %lld request(s)",
           dp->origin->t_requests, (long long)dp->origin->ninflight);
}

void mw_dp_origin_close(mw_dataplane_t *dp)
{
    dp_origin_t *o = dp->origin;
    if (o == NULL || o->consumer == NULL)
        return;
    if (!dp->fatal)
        commit(dp);
    /* Leaving the group revokes every partition through rebalance_cb. */
    rd_kafka_consumer_close(o->consumer);
    if (o->transactional && o->txn_open)
        txn_abort(dp, "closing", 0);
}

void mw_dp_origin_destroy(mw_dataplane_t *dp)
{
    dp_origin_t *o = dp->origin;
    if (o == NULL)
        return;
    while (o->parts != NULL) {
        dp_part_t *p = o->parts;
        o->parts = p->next;
        while (p->head != NULL) {
            dp_req_t *r = p->head;
            p->head = r->next;
            req_free(o, r);
        }
        free(p);
    }
    batches_sweep(o, INT64_MAX);
    free(o->pick);
    free(o->gather);
    mw_commit_destroy(o->committer);
    if (o->queue != NULL) {
        rd_kafka_queue_io_event_enable(o->queue, -1, NULL, 0);
        rd_kafka_queue_destroy(o->queue);
    }
    if (o->consumer != NULL)
        rd_kafka_destroy(o->consumer);
    if (o->producer != NULL)
        mw_kafka_destroy(o->producer);
    if (o->subscription != NULL)
        rd_kafka_topic_partition_list_destroy(o->subscription);
    if (o->topics != NULL)
        rd_kafka_metadata_destroy(o->topics);
    free(o);
    dp->origin = NULL;
}
