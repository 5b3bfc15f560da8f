/* The origin (stage 0) side of the data plane: consumes requests, validates
 * them, dispatches stage 0's output into the pipeline, re-dispatches aborted or
 * unanswered attempts, and releases results per partition in input-offset order
 * in one Kafka transaction per commit interval with the input offsets
 * (DESIGN §2, §3, §6). */
#include "clock.h"
#include "dataplane_int.h"

#include "err.h"
#include "kafka.h"
#include "log.h"
#include "topics/record.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FAC               "origin"
#define REQ_BUCKETS       4096
#define POLL_BATCH        64
#define FULL_POLL_MS      50
#define COMMIT_MIN_GAP_MS 10
#define PAUSE_AFTER_MS    250

enum { RQ_WAIT = 1, RQ_SENT, RQ_DONE };

typedef struct dp_part dp_part_t;
typedef struct dp_req dp_req_t;

struct dp_req {
    dp_req_t *next;  /* in its partition, offset order */
    dp_req_t *hnext; /* in the seq hash */
    dp_part_t *part;
    rd_kafka_message_t *msg; /* owned until the result is committed */
    uint64_t seq;
    int64_t offset;
    int state;
    uint32_t attempt;
    int64_t consumed_us;         /* monotonic */
    int64_t deadline_ms;         /* monotonic */
    int64_t attempt_deadline_ms; /* monotonic */
    dp_link_t *link;             /* where the current attempt went */
    mw_tensor_desc_t act_desc;   /* stage 0's output, kept for re-dispatch */
    void *act;
    uint64_t act_bytes;
    int ok;
    char *error;
    mw_tensor_desc_t out_desc;
    void *out;
    uint64_t out_bytes;
    int64_t latency_us;
    int produced; /* in the open transaction (or flushed, at-least-once) */
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
    int delivery_failed; /* at-least-once: a delivery report failed since the last flush */
    dp_part_t *parts;
    dp_req_t *hash[REQ_BUCKETS];
    int64_t ninflight, nwait;
    uint64_t next_seq;
    int paused;
    int draining;          /* paused for good */
    int64_t full_since_ms; /* when the window filled up; -1 while it has room */
    int64_t next_commit_ms, next_check_ms, next_full_poll_ms;
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

static void req_free(dp_origin_t *o, dp_req_t *r)
{
    req_unhash(o, r);
    if (r->state == RQ_SENT && r->link != NULL)
        r->link->outstanding--;
    if (r->state == RQ_WAIT)
        o->nwait--;
    o->ninflight--;
    rd_kafka_message_destroy(r->msg);
    free(r->act);
    free(r->out);
    free(r->error);
    free(r);
}

static void leave_state(dp_origin_t *o, dp_req_t *r)
{
    if (r->state == RQ_SENT && r->link != NULL)
        r->link->outstanding--;
    if (r->state == RQ_WAIT)
        o->nwait--;
    r->link = NULL;
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
    free(r->act);
    r->act = NULL;
    mw_log(MW_LOG_INFO, FAC, "request %.*s (%s [%d] offset %lld) failed: %s",
           (int)(r->msg->key_len < 64 ? r->msg->key_len : 64), (const char *)r->msg->key,
           r->part->topic, (int)r->part->partition, (long long)r->offset, msg);
}

static void finish_ok(mw_dataplane_t *dp, dp_req_t *r, const mw_tensor_desc_t *desc,
                      const void *data)
{
    uint64_t n;
    if (mw_tensor_nbytes(desc, &n) != MW_OK || (r->out = malloc(n ? n : 1)) == NULL) {
        finish_err(dp, r, "out of memory for the result");
        return;
    }
    memcpy(r->out, data, n);
    leave_state(dp->origin, r);
    r->state = RQ_DONE;
    r->ok = 1;
    r->out_desc = *desc;
    r->out_bytes = n;
    r->latency_us = mw_now_us() - r->consumed_us;
    free(r->act);
    r->act = NULL;
}

/* Sends the current attempt to the least loaded usable stage-1 world that can
 * reach back here; a request with no such world waits (RQ_WAIT). */
static int dispatch(mw_dataplane_t *dp, dp_req_t *r)
{
    dp_origin_t *o = dp->origin;
    dp_link_t *best = NULL;
    for (dp_link_t *l = dp->links; l != NULL; l = l->next) {
        if (l->peer_stage != 1 || !dp_link_usable(dp, l) || !dp_reaches(dp, l, dp->worker_id))
            continue;
        if (dp_link_better(l, l->outstanding + l->nsends, best,
                           best != NULL ? best->outstanding + best->nsends : 0))
            best = l;
    }
    if (best == NULL) {
        if (r->state != RQ_WAIT) {
            leave_state(o, r);
            r->state = RQ_WAIT;
            o->nwait++;
        }
        return 0;
    }
    mw_hop_t hop = {.type = MW_HOP_TENSOR,
                    .stage = 0,
                    .incarnation = dp->incarnation,
                    .seq = r->seq,
                    .attempt = r->attempt,
                    .desc = r->act_desc,
                    .nbytes = r->act_bytes};
    snprintf(hop.origin, sizeof(hop.origin), "%s", dp->worker_id);
    hop.key_len = r->msg->key_len < MW_HOP_KEY_MAX ? r->msg->key_len : MW_HOP_KEY_MAX;
    if (hop.key_len > 0)
        memcpy(hop.key, r->msg->key, hop.key_len);
    void *buf = malloc(r->act_bytes ? r->act_bytes : 1);
    if (buf == NULL)
        return 0;
    memcpy(buf, r->act, r->act_bytes);
    best->picked = ++dp->picks;
    if (dp_link_send(dp, best, &hop, buf) != MW_OK)
        return 0; /* the link is going down; the next pass picks another */
    leave_state(o, r);
    r->state = RQ_SENT;
    r->link = best;
    best->outstanding++;
    r->attempt_deadline_ms = mw_now_ms() + dp->cfg.request_attempt_timeout_ms;
    return 1;
}

/* The current attempt failed (why): dispatch attempt + 1, or give up. */
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
    r->state = 0;
    dispatch(dp, r);
}

void dp_origin_on_result(mw_dataplane_t *dp, const mw_hop_t *hop, const void *buf)
{
    dp_req_t *r = req_find(dp->origin, hop->seq);
    if (r == NULL || r->state == RQ_DONE || hop->incarnation != dp->incarnation ||
        strcmp(hop->origin, dp->worker_id) != 0)
        return; /* an earlier attempt's answer, or one for a revoked partition */
    /* Any attempt's output is the same tensor: the first one answers. */
    finish_ok(dp, r, &hop->desc, buf);
}

void dp_origin_on_abort(mw_dataplane_t *dp, const mw_hop_t *hop, const char *why)
{
    dp_req_t *r = req_find(dp->origin, hop->seq);
    if (r == NULL || r->state != RQ_SENT || r->attempt != hop->attempt ||
        hop->incarnation != dp->incarnation)
        return;
    redispatch(dp, r, why);
}

void dp_origin_link_down(mw_dataplane_t *dp, dp_link_t *l)
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

/* ---------------------------------------------------------------- output */

static int produce_one(mw_dataplane_t *dp, dp_req_t *r)
{
    dp_origin_t *o = dp->origin;
    char err[256];
    mw_record_t rec;
    mw_result_t res = {.id = r->msg->key,
                       .id_len = r->msg->key_len,
                       .ok = r->ok,
                       .error = r->error,
                       .desc = r->out_desc,
                       .data = r->out,
                       .nbytes = r->out_bytes,
                       .attempts = r->attempt,
                       .latency_us = r->latency_us};
    mw_record_init(&rec);
    int rc = mw_result_encode(&rec, &res, err, sizeof(err));
    if (rc == MW_OK)
        rc = mw_record_produce(o->producer, o->t_results, RD_KAFKA_PARTITION_UA, &rec, NULL, err,
                               sizeof(err));
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
                    dp_fatal(dp, MW_EKAFKA, "begin transaction: %s", rd_kafka_error_string(e));
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
                dp_latency_add(dp, r->latency_us);
            req_free(o, r);
        }
    }
}

static void txn_abort(mw_dataplane_t *dp, const char *why)
{
    dp_origin_t *o = dp->origin;
    mw_log(MW_LOG_WARN, FAC, "aborting the results transaction: %s", why);
    rd_kafka_error_t *e = rd_kafka_abort_transaction(o->producer, (int)dp->cfg.kafka_timeout_ms);
    if (e != NULL) {
        dp_fatal(dp, MW_EKAFKA, "abort transaction: %s", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    }
    o->txn_open = 0;
    unproduce_all(o);
}

/* Releases what it can and commits results with their input offsets. */
static void commit(mw_dataplane_t *dp)
{
    dp_origin_t *o = dp->origin;
    int timeout = (int)dp->cfg.kafka_timeout_ms;
    release(dp);
    rd_kafka_topic_partition_list_t *offsets = produced_offsets(o);
    if (offsets->cnt == 0) {
        rd_kafka_topic_partition_list_destroy(offsets);
        return;
    }
    if (o->transactional) {
        rd_kafka_consumer_group_metadata_t *cgmd = rd_kafka_consumer_group_metadata(o->consumer);
        rd_kafka_error_t *e =
            rd_kafka_send_offsets_to_transaction(o->producer, offsets, cgmd, timeout);
        rd_kafka_consumer_group_metadata_destroy(cgmd);
        if (e == NULL)
            e = rd_kafka_commit_transaction(o->producer, timeout);
        if (e == NULL) {
            o->txn_open = 0;
            for (int i = 0; i < offsets->cnt && mw_log_enabled(MW_LOG_DEBUG); i++)
                mw_log(MW_LOG_DEBUG, FAC, "committed %s [%d] up to offset %lld",
                       offsets->elems[i].topic, (int)offsets->elems[i].partition,
                       (long long)offsets->elems[i].offset);
            retire_produced(dp);
        } else if (rd_kafka_error_is_fatal(e)) {
            dp_fatal(dp, MW_EFENCED, "results transaction: %s", rd_kafka_error_string(e));
        } else if (rd_kafka_error_txn_requires_abort(e)) {
            txn_abort(dp, rd_kafka_error_string(e));
        } else {
            /* Retriable: the transaction stays open; the next interval tries again. */
            mw_log(MW_LOG_WARN, FAC, "committing results: %s (will retry)",
                   rd_kafka_error_string(e));
        }
        if (e != NULL)
            rd_kafka_error_destroy(e);
    } else {
        rd_kafka_flush(o->producer, timeout);
        if (o->delivery_failed) {
            o->delivery_failed = 0;
            unproduce_all(o); /* produced again next time: at least once */
        } else {
            rd_kafka_resp_err_t err = rd_kafka_commit(o->consumer, offsets, 0);
            if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
                retire_produced(dp);
            else
                mw_log(MW_LOG_WARN, FAC, "committing offsets: %s (will retry)",
                       rd_kafka_err2str(err));
        }
    }
    rd_kafka_topic_partition_list_destroy(offsets);
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
 * offsets) while the worlds keep being served (dp_pump). */
static void fetch_offsets(mw_dataplane_t *dp, rd_kafka_topic_partition_list_t *parts)
{
    dp_origin_t *o = dp->origin;
    char group[160], kerr[256];
    snprintf(group, sizeof(group), "mw.%s", dp->pipeline);
    int64_t deadline = mw_now_ms() + 2 * dp->cfg.kafka_timeout_ms;
    rd_kafka_queue_t *q = rd_kafka_queue_new(o->consumer);
    for (int tries = 0;; tries++) {
        int stable = mw_now_ms() < deadline;
        rd_kafka_ListConsumerGroupOffsets_t *req =
            rd_kafka_ListConsumerGroupOffsets_new(group, parts);
        rd_kafka_AdminOptions_t *opt =
            rd_kafka_AdminOptions_new(o->consumer, RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPOFFSETS);
        rd_kafka_AdminOptions_set_request_timeout(opt, 5000, kerr, sizeof(kerr));
        rd_kafka_error_t *e = rd_kafka_AdminOptions_set_require_stable_offsets(opt, stable);
        if (e != NULL)
            rd_kafka_error_destroy(e);
        rd_kafka_ListConsumerGroupOffsets(o->consumer, &req, 1, opt, q);
        rd_kafka_ListConsumerGroupOffsets_destroy(req);
        rd_kafka_AdminOptions_destroy(opt);
        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 10000);
        const char *why = "no answer";
        int done = 0;
        const rd_kafka_ListConsumerGroupOffsets_result_t *res =
            ev != NULL ? rd_kafka_event_ListConsumerGroupOffsets_result(ev) : NULL;
        size_t n = 0;
        const rd_kafka_group_result_t **groups =
            res != NULL ? rd_kafka_ListConsumerGroupOffsets_result_groups(res, &n) : NULL;
        if (ev != NULL && rd_kafka_event_error(ev) != RD_KAFKA_RESP_ERR_NO_ERROR) {
            why = rd_kafka_event_error_string(ev);
        } else if (n == 1 && rd_kafka_group_result_error(groups[0]) != NULL) {
            why = rd_kafka_error_string(rd_kafka_group_result_error(groups[0]));
        } else if (n == 1) {
            const rd_kafka_topic_partition_list_t *got =
                rd_kafka_group_result_partitions(groups[0]);
            done = 1;
            for (int i = 0; i < parts->cnt && done; i++) {
                rd_kafka_topic_partition_t *tp = rd_kafka_topic_partition_list_find(
                    (rd_kafka_topic_partition_list_t *)got, parts->elems[i].topic,
                    parts->elems[i].partition);
                if (tp == NULL || tp->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
                    why = tp != NULL ? rd_kafka_err2str(tp->err) : "partition missing";
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
        /* Meanwhile the worlds keep moving: results come back, aborts go on. */
        for (int64_t until = mw_now_ms() + 250; mw_now_ms() < until;)
            if (dp_pump(dp) == 0) {
                struct timespec ts = {.tv_sec = 0, .tv_nsec = 500 * 1000};
                nanosleep(&ts, NULL);
            }
    }
    rd_kafka_queue_destroy(q);
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
            txn_abort(dp, "partitions lost");
        }
        if (o->transactional && o->txn_open)
            txn_abort(dp, "partitions revoked with results not committed");
        for (int i = 0; i < parts->cnt; i++) {
            dp_part_t *p = part_find(o, parts->elems[i].topic, parts->elems[i].partition);
            if (p != NULL)
                part_drop(o, p);
        }
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
        dp->origin->delivery_failed = 1;
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
    r->consumed_us = mw_now_us();
    if (p->tail != NULL)
        p->tail->next = r;
    else
        p->head = r;
    p->tail = r;
    r->hnext = o->hash[r->seq % REQ_BUCKETS];
    o->hash[r->seq % REQ_BUCKETS] = r;
    o->ninflight++;

    int64_t now = mw_now_ms();
    mw_request_t req;
    if (mw_request_from_message(&req, msg, (uint64_t)dp->cfg.records_max_tensor_bytes, err,
                                sizeof(err)) != MW_OK) {
        r->attempt = 0;
        finish_err(dp, r, "invalid request: %s", err);
        return;
    }
    r->deadline_ms = now + dp->cfg.request_timeout_ms;
    if (req.deadline_ms > 0)
        r->deadline_ms = now + (req.deadline_ms - mw_unix_ms());
    mw_tensor_desc_t od;
    const void *out;
    if (r->deadline_ms <= now) {
        finish_err(dp, r, "deadline passed before the request was processed");
    } else if (dp_compute(dp, &req.desc, req.data, &od, &out, err, sizeof(err)) != MW_OK) {
        finish_err(dp, r, "invalid request: %s", err);
    } else if (dp->nstages == 1) {
        finish_ok(dp, r, &od, out);
    } else if (mw_tensor_nbytes(&od, &r->act_bytes) != MW_OK ||
               (r->act = malloc(r->act_bytes ? r->act_bytes : 1)) == NULL) {
        finish_err(dp, r, "out of memory");
    } else {
        memcpy(r->act, out, r->act_bytes);
        r->act_desc = od;
        dispatch(dp, r);
    }
    mw_request_fini(&req);
}

static void flow_control(mw_dataplane_t *dp, int64_t now)
{
    dp_origin_t *o = dp->origin;
    int64_t max = dp->cfg.worker_max_inflight;
    if (o->ninflight < max)
        o->full_since_ms = -1;
    else if (o->full_since_ms < 0)
        o->full_since_ms = now;
    /* A full window only stops polling (librdkafka keeps prefetching, so
     * taking requests again costs nothing); the partitions are paused when it
     * stays full for PAUSE_AFTER_MS (a resumed partition may wait up to a
     * second for its next fetch), and resumed at three quarters; always
     * paused while draining. */
    int want = o->draining || (o->full_since_ms >= 0 && now - o->full_since_ms >= PAUSE_AFTER_MS) ||
               (o->paused && o->ninflight > max - (max + 3) / 4);
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

/* Whether the window is full and committing now would free a quarter of it:
 * waiting for the interval would leave the origin idle with finished results
 * (and hold them back from the client). At most one such early commit per
 * COMMIT_MIN_GAP_MS. */
static int window_blocked(mw_dataplane_t *dp, int64_t now)
{
    dp_origin_t *o = dp->origin;
    int64_t max = dp->cfg.worker_max_inflight;
    if (o->ninflight < max || o->draining ||
        now < o->next_commit_ms - dp->cfg.results_commit_interval_ms + COMMIT_MIN_GAP_MS)
        return 0;
    int64_t releasable = 0;
    for (dp_part_t *p = o->parts; p != NULL; p = p->next)
        for (dp_req_t *r = p->head; r != NULL && r->state == RQ_DONE; r = r->next)
            releasable++;
    return releasable >= (max + 3) / 4;
}

/* Deadlines, unanswered attempts and requests waiting for a route. */
static int check_requests(mw_dataplane_t *dp, int64_t now, int timeouts)
{
    dp_origin_t *o = dp->origin;
    int n = 0;
    for (dp_part_t *p = o->parts; p != NULL; p = p->next) {
        for (dp_req_t *r = p->head; r != NULL; r = r->next) {
            if (r->state == RQ_DONE)
                continue;
            if (timeouts && now >= r->deadline_ms) {
                finish_err(dp, r, "deadline exceeded after %u attempt(s)", r->attempt);
                n++;
            } else if (timeouts && r->state == RQ_SENT && now >= r->attempt_deadline_ms) {
                redispatch(dp, r, "no answer within request.attempt_timeout_ms");
                n++;
            } else if (r->state == RQ_WAIT) {
                n += dispatch(dp, r);
            }
        }
    }
    return n;
}

int dp_origin_step(mw_dataplane_t *dp)
{
    dp_origin_t *o = dp->origin;
    int n = 0;
    int64_t now = mw_now_ms();
    /* Polled even when paused or draining (rebalances are served from here),
     * but then at most one message per FULL_POLL_MS; not while the window is
     * full but not yet paused: that would take requests beyond it. */
    int full = o->draining || o->ninflight >= dp->cfg.worker_max_inflight;
    int hold = full && !o->paused && !o->draining;
    for (int i = 0; i < POLL_BATCH && !hold && (!full || now >= o->next_full_poll_ms); i++) {
        if (full) {
            o->next_full_poll_ms = now + FULL_POLL_MS;
            if (i > 0)
                break;
        } else if (o->ninflight >= dp->cfg.worker_max_inflight) {
            break;
        }
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(o->consumer, 0);
        if (msg == NULL)
            break;
        on_message(dp, msg);
        n++;
    }
    flow_control(dp, now);
    int timeouts = now >= o->next_check_ms;
    if (timeouts || o->nwait > 0)
        n += check_requests(dp, now, timeouts);
    if (timeouts)
        o->next_check_ms = now + 10;
    rd_kafka_poll(o->producer, 0);
    if (now >= o->next_commit_ms || window_blocked(dp, now)) {
        commit(dp);
        o->next_commit_ms = mw_now_ms() + dp->cfg.results_commit_interval_ms;
    }
    dp->counters.inflight = o->ninflight;
    return n;
}

int dp_origin_wait_ms(mw_dataplane_t *dp, int max_ms)
{
    dp_origin_t *o = dp->origin;
    int64_t now = mw_now_ms(), due = now + max_ms;
    if (o->next_commit_ms < due)
        due = o->next_commit_ms;
    if (o->next_check_ms < due)
        due = o->next_check_ms;
    return due > now ? (int)(due - now) : 0;
}

/* ------------------------------------------------------------- lifecycle */

int dp_origin_new(mw_dataplane_t *dp, char *errstr, size_t errstr_size)
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
    return MW_OK;
}

int dp_origin_connect(mw_dataplane_t *dp, char *errstr, size_t errstr_size)
{
    dp_origin_t *o = dp->origin;
    char txn_id[512], group[128];
    snprintf(txn_id, sizeof(txn_id), "mw.%s.%s.%s", dp->cfg.cluster, dp->pipeline, dp->worker_id);
    snprintf(group, sizeof(group), "mw.%s", dp->pipeline);
    const mw_kafka_hooks_t hooks = {
        .dr_msg_cb = dr_msg_cb, .rebalance_cb = rebalance_cb, .opaque = dp};
    /* A transactional producer fences an earlier incarnation of this worker
     * and aborts its open transaction. */
    o->producer = mw_kafka_producer_new(&dp->cfg, o->transactional ? txn_id : NULL, &hooks, errstr,
                                        errstr_size);
    if (o->producer == NULL)
        return MW_EKAFKA;
    o->consumer = mw_kafka_consumer_new(&dp->cfg, group, &hooks, errstr, errstr_size);
    if (o->consumer == NULL)
        return MW_EKAFKA;
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

void dp_origin_drain(mw_dataplane_t *dp)
{
    dp->origin->draining = 1;
    mw_log(MW_LOG_INFO, FAC, "draining: %s paused, finishing %lld request(s)",
           dp->origin->t_requests, (long long)dp->origin->ninflight);
}

void dp_origin_close(mw_dataplane_t *dp)
{
    dp_origin_t *o = dp->origin;
    if (o == NULL || o->consumer == NULL)
        return;
    if (!dp->fatal)
        commit(dp);
    /* Leaving the group revokes every partition through rebalance_cb. */
    rd_kafka_consumer_close(o->consumer);
    if (o->transactional && o->txn_open)
        txn_abort(dp, "closing");
}

void dp_origin_destroy(mw_dataplane_t *dp)
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
    free(o);
    dp->origin = NULL;
}
