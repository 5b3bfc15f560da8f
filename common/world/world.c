/* Worlds: the context and its progress and rendezvous threads, the join state
 * machine, requests, collectives and the watchdog (see world.h, world_int.h). */
#include "clock.h"
#include "world_int.h"

#include "err.h"
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

struct cb_event {
    struct cb_event *next;
    mw_world_event_t ev;
    mw_world_t *w; /* reference held until delivered */
};

static void timespec_at(int64_t deadline_ms, struct timespec *ts)
{
    ts->tv_sec = deadline_ms / 1000;
    ts->tv_nsec = (deadline_ms % 1000) * 1000000;
}

/* Waits on cond until signalled or deadline_ms (monotonic; < 0: no deadline). */
static void cond_wait_until(pthread_cond_t *cond, pthread_mutex_t *mu, int64_t deadline_ms)
{
    if (deadline_ms < 0) {
        pthread_cond_wait(cond, mu);
    } else {
        struct timespec ts;
        timespec_at(deadline_ms, &ts);
        pthread_cond_timedwait(cond, mu, &ts);
    }
}

static void cond_init_monotonic(pthread_cond_t *cond)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(cond, &attr);
    pthread_condattr_destroy(&attr);
}

const char *mw_world_state_name(mw_world_state_t state)
{
    switch (state) {
    case MW_WORLD_JOINING:
        return "joining";
    case MW_WORLD_READY:
        return "ready";
    case MW_WORLD_BROKEN:
        return "broken";
    case MW_WORLD_CLOSED:
        return "closed";
    }
    return "unknown";
}

/* --- world references ---------------------------------------------------------- */

static void world_ref(mw_world_t *w)
{
    __atomic_fetch_add(&w->refs, 1, __ATOMIC_RELAXED);
}

static void world_unref(mw_world_t *w)
{
    if (__atomic_sub_fetch(&w->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    if (w->links != NULL)
        for (int p = 0; p < w->size; p++)
            mw_link_free(w->links[p]);
    free(w->links);
    if (w->ops != NULL && w->ops->destroy != NULL)
        w->ops->destroy(w);
    free(w->peer_addrs);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->cond);
    free(w);
}

/* --- commands and wakeups -------------------------------------------------------- */

static int on_progress_thread(mw_worlds_t *ctx)
{
    return ctx->threads_started && pthread_equal(pthread_self(), ctx->thread);
}

static void wake(mw_worlds_t *ctx)
{
    if (!__atomic_exchange_n(&ctx->wake_pending, 1, __ATOMIC_ACQ_REL)) {
        uint64_t one = 1;
        ssize_t n = write(ctx->wakefd, &one, sizeof(one));
        (void)n;
    }
}

/* Rings donefd once until the next mw_worlds_done_clear. */
static void done_ring(mw_worlds_t *ctx)
{
    if (!__atomic_exchange_n(&ctx->done_pending, 1, __ATOMIC_ACQ_REL)) {
        uint64_t one = 1;
        ssize_t n = write(ctx->donefd, &one, sizeof(one));
        (void)n;
    }
}

int mw_worlds_done_fd(const mw_worlds_t *ctx)
{
    return ctx->donefd;
}

void mw_worlds_done_clear(mw_worlds_t *ctx)
{
    if (__atomic_exchange_n(&ctx->done_pending, 0, __ATOMIC_ACQ_REL)) {
        uint64_t v;
        ssize_t n = read(ctx->donefd, &v, sizeof(v));
        (void)n;
    }
}

static void handle_cmd(mw_worlds_t *ctx, mw_cmd_t *cmd);

static void cmd_push(mw_worlds_t *ctx, mw_cmd_t *cmd)
{
    cmd->next = NULL;
    pthread_mutex_lock(&ctx->lock);
    if (ctx->cmds == NULL)
        ctx->cmds = cmd;
    else
        ctx->cmds_tail->next = cmd;
    ctx->cmds_tail = cmd;
    pthread_mutex_unlock(&ctx->lock);
    wake(ctx);
}

/* Runs cmd on the progress thread and waits for it (inline when called there). */
static void cmd_run_sync(mw_worlds_t *ctx, mw_cmd_t *cmd)
{
    if (on_progress_thread(ctx)) {
        handle_cmd(ctx, cmd);
        return;
    }
    cmd->sync = 1;
    cmd->done = 0;
    cmd_push(ctx, cmd);
    pthread_mutex_lock(&ctx->lock);
    while (!cmd->done)
        pthread_cond_wait(&ctx->cond, &ctx->lock);
    pthread_mutex_unlock(&ctx->lock);
}

/* --- rendezvous jobs --------------------------------------------------------------- */

static void rdv_push(mw_worlds_t *ctx, int type, mw_world_t *w, int64_t delay_ms)
{
    mw_rdv_job_t *job = calloc(1, sizeof(*job));
    if (job == NULL) {
        mw_world_break(w, MW_ENOMEM, "out of memory");
        return;
    }
    job->type = type;
    job->w = w;
    world_ref(w);
    snprintf(job->name, sizeof(job->name), "%s", w->name);
    job->epoch = w->epoch;
    job->not_before_ms = mw_now_ms() + delay_ms;
    job->ttl_ms = (w->join_deadline_ms - mw_now_ms()) + 60000;
    if (type == RDV_PUBLISH &&
        mw_rdv_record_format(&w->rdv, job->record, sizeof(job->record)) < 0) {
        free(job);
        world_unref(w);
        mw_world_break(w, MW_EINVAL, "rendezvous record too large");
        return;
    }
    pthread_mutex_lock(&ctx->lock);
    if (ctx->jobs == NULL)
        ctx->jobs = job;
    else
        ctx->jobs_tail->next = job;
    ctx->jobs_tail = job;
    pthread_cond_signal(&ctx->rdv_cond);
    pthread_mutex_unlock(&ctx->lock);
}

static int world_joining(mw_world_t *w)
{
    pthread_mutex_lock(&w->lock);
    int joining = w->state == MW_WORLD_JOINING;
    pthread_mutex_unlock(&w->lock);
    return joining;
}

/* Runs one job; returns a delay to run it again, or -1 when it is finished. */
static int64_t rdv_run(mw_worlds_t *ctx, mw_redis_t **r, mw_rdv_job_t *job)
{
    char err[256];
    if (job->type != RDV_REMOVE && !world_joining(job->w))
        return -1;
    if (*r == NULL) {
        *r = mw_redis_new(&ctx->redis_cfg, 1, err, sizeof(err));
        if (*r == NULL) {
            __atomic_store_n(&job->w->rdv_last_rc, MW_EUNAVAIL, __ATOMIC_RELAXED);
            return 100;
        }
    }
    int rc;
    switch (job->type) {
    case RDV_PUBLISH:
        rc = mw_rdv_publish(*r, job->name, job->epoch, job->record, job->ttl_ms);
        __atomic_store_n(&job->w->rdv_last_rc, rc, __ATOMIC_RELAXED);
        if (rc != MW_OK) {
            mw_log(MW_LOG_WARN, "world", "world %s epoch %lld: publishing rendezvous: %s",
                   job->name, (long long)job->epoch, mw_redis_errstr(*r));
            return 50;
        }
        return -1;
    case RDV_FETCH: {
        char record[MW_RDV_RECORD_MAX];
        rc = mw_rdv_fetch(*r, job->name, job->epoch, record, sizeof(record));
        __atomic_store_n(&job->w->rdv_last_rc, rc, __ATOMIC_RELAXED);
        if (rc != MW_OK)
            return rc == MW_ENOTFOUND ? 10 : 50;
        mw_cmd_t *cmd = calloc(1, sizeof(*cmd));
        char *text = strdup(record);
        if (cmd == NULL || text == NULL) {
            free(cmd);
            free(text);
            return 50;
        }
        cmd->type = CMD_RDV_RESULT;
        cmd->heap = 1;
        cmd->w = job->w;
        world_ref(job->w);
        cmd->text = text;
        cmd_push(ctx, cmd);
        return -1;
    }
    default:
        rc = mw_rdv_remove(*r, job->name, job->epoch);
        if (rc != MW_OK)
            mw_log(MW_LOG_DEBUG, "world", "world %s epoch %lld: removing rendezvous: %s", job->name,
                   (long long)job->epoch, mw_redis_errstr(*r));
        return -1;
    }
}

static void *rdv_main(void *arg)
{
    mw_worlds_t *ctx = arg;
    mw_redis_t *r = NULL;
    pthread_mutex_lock(&ctx->lock);
    for (;;) {
        int64_t now = mw_now_ms(), next = -1;
        mw_rdv_job_t **pp = &ctx->jobs, *job = NULL, *prev = NULL;
        for (mw_rdv_job_t *j = ctx->jobs; j != NULL; prev = j, j = j->next) {
            /* at shutdown only removals run, at once */
            if (ctx->stop ? j->type == RDV_REMOVE : j->not_before_ms <= now) {
                job = j;
                break;
            }
            if (next < 0 || j->not_before_ms < next)
                next = j->not_before_ms;
            pp = &j->next;
        }
        if (job == NULL) {
            if (ctx->stop)
                break;
            cond_wait_until(&ctx->rdv_cond, &ctx->lock, next < 0 ? now + 1000 : next);
            continue;
        }
        *pp = job->next;
        if (ctx->jobs_tail == job)
            ctx->jobs_tail = prev;
        pthread_mutex_unlock(&ctx->lock);
        int64_t again = rdv_run(ctx, &r, job);
        pthread_mutex_lock(&ctx->lock);
        if (again >= 0 && !ctx->stop) {
            job->not_before_ms = mw_now_ms() + again;
            job->next = NULL;
            if (ctx->jobs == NULL)
                ctx->jobs = job;
            else
                ctx->jobs_tail->next = job;
            ctx->jobs_tail = job;
        } else {
            pthread_mutex_unlock(&ctx->lock);
            world_unref(job->w);
            free(job);
            pthread_mutex_lock(&ctx->lock);
        }
    }
    while (ctx->jobs != NULL) {
        mw_rdv_job_t *job = ctx->jobs;
        ctx->jobs = job->next;
        pthread_mutex_unlock(&ctx->lock);
        world_unref(job->w);
        free(job);
        pthread_mutex_lock(&ctx->lock);
    }
    ctx->jobs_tail = NULL;
    pthread_mutex_unlock(&ctx->lock);
    mw_redis_destroy(r);
    return NULL;
}

/* --- state changes and events ---------------------------------------------------- */

/* Queues a state-change event (before the state becomes visible, so that a
 * waiter that sees the new state also finds the event). */
static void queue_event(mw_world_t *w, mw_world_state_t state, int err, const char *errstr)
{
    mw_worlds_t *ctx = w->ctx;
    mw_world_event_t ev = {
        .world = w, .epoch = w->epoch, .user = w->user, .state = state, .err = err};
    snprintf(ev.name, sizeof(ev.name), "%s", w->name);
    snprintf(ev.errstr, sizeof(ev.errstr), "%s", errstr ? errstr : "");

    pthread_mutex_lock(&ctx->lock);
    if (ctx->ev_count == MW_EVENTS_MAX) {
        ctx->ev_head = (ctx->ev_head + 1) % MW_EVENTS_MAX;
        ctx->ev_count--;
        if (ctx->events_dropped++ % 1000 == 0)
            mw_log(MW_LOG_WARN, "world", "world event queue full: dropping the oldest events");
    }
    ctx->events[(ctx->ev_head + ctx->ev_count) % MW_EVENTS_MAX] = ev;
    ctx->ev_count++;
    pthread_cond_broadcast(&ctx->cond);
    pthread_mutex_unlock(&ctx->lock);

    if (w->on_event != NULL) {
        struct cb_event *cb = calloc(1, sizeof(*cb));
        if (cb == NULL)
            return;
        cb->ev = ev;
        cb->w = w;
        world_ref(w);
        if (ctx->callbacks == NULL)
            ctx->callbacks = cb;
        else
            ctx->callbacks_tail->next = cb;
        ctx->callbacks_tail = cb;
    }
}

static void set_state(mw_world_t *w, mw_world_state_t state, int err, const char *errstr)
{
    pthread_mutex_lock(&w->lock);
    w->state = state;
    w->err = err;
    if (errstr != NULL)
        snprintf(w->errstr, sizeof(w->errstr), "%s", errstr);
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
    done_ring(w->ctx);
}

/* Completes every operation of req with rc (the owner may free req after). */
static void req_fail_ops(mw_world_t *w, mw_world_req_t *req, int rc)
{
    mw_op_t *ops = req->ops;
    int nops = req->nops;
    for (int i = 0; i < nops; i++)
        mw_world_op_done(w, &ops[i], rc);
}

static void fail_everything(mw_world_t *w, int rc)
{
    if (w->links != NULL)
        for (int p = 0; p < w->size; p++)
            if (w->links[p] != NULL)
                mw_link_close(w->links[p], rc);
    while (w->preready != NULL) {
        mw_world_req_t *req = w->preready;
        w->preready = req->next;
        req_fail_ops(w, req, rc);
    }
    w->preready_tail = NULL;
    if (w->ops->abort != NULL)
        w->ops->abort(w);
    if (w->rank == 0 && w->rdv_published && !w->rdv_removed) {
        w->rdv_removed = 1;
        rdv_push(w->ctx, RDV_REMOVE, w, 0);
    }
}

void mw_world_break(mw_world_t *w, int err, const char *fmt, ...)
{
    if (w->state != MW_WORLD_JOINING && w->state != MW_WORLD_READY)
        return;
    char cause[200], text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cause, sizeof(cause), fmt, ap);
    va_end(ap);
    snprintf(text, sizeof(text), "world %s epoch %lld (rank %d): %s", w->name, (long long)w->epoch,
             w->rank, cause);
    mw_log(MW_LOG_WARN, "world", "%s", text);
    queue_event(w, MW_WORLD_BROKEN, err, text);
    set_state(w, MW_WORLD_BROKEN, err, text);
    fail_everything(w, err);
}

void mw_world_on_peer_left(mw_world_t *w)
{
    if (w->state != MW_WORLD_JOINING && w->state != MW_WORLD_READY)
        return;
    for (int p = 0; p < w->size; p++)
        if (p != w->rank && mw_link_is_up(w->links[p]))
            return; /* others remain: only operations with the departed rank fail */
    char text[512];
    snprintf(text, sizeof(text), "world %s epoch %lld (rank %d): every other member left", w->name,
             (long long)w->epoch, w->rank);
    queue_event(w, MW_WORLD_CLOSED, MW_ECLOSED, text);
    set_state(w, MW_WORLD_CLOSED, MW_ECLOSED, text);
    fail_everything(w, MW_ECLOSED);
}

static void world_close(mw_worlds_t *ctx, mw_world_t *w)
{
    if (w->state == MW_WORLD_JOINING || w->state == MW_WORLD_READY) {
        char text[256];
        snprintf(text, sizeof(text), "world %s epoch %lld (rank %d): closed", w->name,
                 (long long)w->epoch, w->rank);
        if (w->state == MW_WORLD_READY && w->links != NULL)
            for (int p = 0; p < w->size; p++)
                if (w->links[p] != NULL)
                    mw_link_bye(w->links[p]);
        set_state(w, MW_WORLD_CLOSED, MW_ECLOSED, text);
        fail_everything(w, MW_ECLOSED);
    } else if (w->links != NULL) {
        for (int p = 0; p < w->size; p++)
            if (w->links[p] != NULL)
                mw_link_close(w->links[p], MW_ECLOSED);
    }
    if (!w->in_engine)
        return;
    w->in_engine = 0;
    for (mw_world_t **pp = &ctx->worlds; *pp != NULL; pp = &(*pp)->next_in_engine) {
        if (*pp == w) {
            *pp = w->next_in_engine;
            break;
        }
    }
    w->next_reap = ctx->reap;
    ctx->reap = w;
}

static int secret_equal(const uint8_t *a, const uint8_t *b, size_t n)
{
    uint8_t d = 0;
    for (size_t i = 0; i < n; i++)
        d |= a[i] ^ b[i];
    return d == 0;
}

mw_world_t *mw_world_admit(mw_worlds_t *ctx, const mw_frame_hello_t *h, char *why, size_t why_size)
{
    /* a process may hold several ranks of one world: the one that accepts
     * h->rank is one of a lower rank */
    mw_world_t *w = ctx->worlds;
    for (; w != NULL; w = w->next_in_engine)
        if (w->epoch == h->epoch && w->rank < (int)h->rank && strcmp(w->name, h->name) == 0 &&
            (w->state == MW_WORLD_JOINING || w->state == MW_WORLD_READY))
            break;
    if (w == NULL) {
        snprintf(why, why_size, "no such world here");
        return NULL;
    }
    /* the secret first, so that nothing else is revealed without it */
    if (w->join_phase < JOIN_CONNECT && w->rank != 0) {
        snprintf(why, why_size, "world has no secret yet");
        return NULL;
    }
    if (h->secret_len != MW_RDV_SECRET_BYTES ||
        !secret_equal(h->secret, w->rdv.secret, MW_RDV_SECRET_BYTES)) {
        snprintf(why, why_size, "wrong secret");
        return NULL;
    }
    if ((int)h->size != w->size) {
        snprintf(why, why_size, "size %u, the world has %d", h->size, w->size);
        return NULL;
    }
    if ((int)h->rank <= w->rank) {
        snprintf(why, why_size, "rank %u must connect out, not in, to rank %d", h->rank, w->rank);
        return NULL;
    }
    return w;
}

/* --- requests (engine side) ------------------------------------------------------- */

void mw_world_req_done(mw_world_t *w, mw_world_req_t *req, int rc, const char *errstr)
{
    if (req == NULL)
        return;
    pthread_mutex_lock(&w->lock);
    if (req->status == MW_EAGAIN && rc != MW_OK) {
        req->status = rc;
        snprintf(req->errstr, sizeof(req->errstr), "%s", errstr);
    }
    pthread_mutex_unlock(&w->lock);
}

void mw_world_op_done(mw_world_t *w, mw_op_t *op, int rc)
{
    if (op->owned) {
        if (op->hdr != op->hdr_inline)
            free(op->hdr);
        free(op);
        return;
    }
    mw_world_req_t *req = op->req;
    if (req == NULL)
        return;
    pthread_mutex_lock(&w->lock);
    if (rc != MW_OK && req->status == MW_EAGAIN) {
        req->status = rc;
        if (w->state == MW_WORLD_BROKEN || w->state == MW_WORLD_CLOSED)
            snprintf(req->errstr, sizeof(req->errstr), "%s", w->errstr);
        else
            snprintf(req->errstr, sizeof(req->errstr), "world %s epoch %lld: %s", w->name,
                     (long long)w->epoch, mw_strerror(rc));
    }
    int done = --req->pending_ops == 0;
    if (done) {
        if (req->status == MW_EAGAIN && req->kind != REQ_ALL_REDUCE)
            req->status = MW_OK;
        pthread_cond_broadcast(&w->cond);
    }
    pthread_mutex_unlock(&w->lock);
    if (done)
        done_ring(w->ctx);
}

/* Hands a posted request to the link (header frames) or to the backend
 * (tensors and collectives); holds it while the world joins. */
static void route_req(mw_world_t *w, mw_world_req_t *req)
{
    if (w->state == MW_WORLD_BROKEN || w->state == MW_WORLD_CLOSED) {
        req_fail_ops(w, req, w->err);
        return;
    }
    if (w->state == MW_WORLD_JOINING) {
        req->next = NULL;
        if (w->preready == NULL)
            w->preready = req;
        else
            w->preready_tail->next = req;
        w->preready_tail = req;
        return;
    }
    if (req->kind == REQ_SEND_HEADER || req->kind == REQ_RECV_HEADER) {
        mw_link_post(w->links[req->ops[0].peer], &req->ops[0]);
        return;
    }
    char err[256];
    int rc = w->ops->post(w, req, err, sizeof(err));
    if (rc != MW_OK) {
        mw_world_req_done(w, req, rc, err);
        req_fail_ops(w, req, rc);
    }
}

/* --- the join state machine (progress thread) -------------------------------------- */

static int all_links_up(mw_world_t *w)
{
    for (int p = 0; p < w->size; p++)
        if (p != w->rank && !mw_link_is_up(w->links[p]))
            return 0;
    return 1;
}

static void world_ready(mw_world_t *w)
{
    int64_t ms = mw_now_ms() - w->join_start_ms;
    w->join_phase = JOIN_DONE;
    queue_event(w, MW_WORLD_READY, 0, "");
    set_state(w, MW_WORLD_READY, 0, "");
    mw_log(MW_LOG_INFO, "world", "world %s epoch %lld ready: rank %d of %d, %s, joined in %lld ms",
           w->name, (long long)w->epoch, w->rank, w->size, w->ops->name, (long long)ms);
    if (w->rank == 0 && w->rdv_published && !w->rdv_removed) {
        w->rdv_removed = 1; /* the secret is single-use: take it out of Redis */
        rdv_push(w->ctx, RDV_REMOVE, w, 0);
    }
    mw_world_req_t *req = w->preready;
    w->preready = w->preready_tail = NULL;
    while (req != NULL) {
        mw_world_req_t *next = req->next;
        route_req(w, req); /* fails it when the world broke meanwhile */
        req = next;
    }
}

static void links_done(mw_world_t *w)
{
    if (w->ops->start == NULL) {
        world_ready(w);
        return;
    }
    char err[256];
    int rc = w->ops->start(w, w->rdv.nccl, w->rdv.nccl_len, err, sizeof(err));
    if (rc != MW_OK) {
        mw_world_break(w, rc, "%s backend start: %s", w->ops->name, err);
        return;
    }
    w->join_phase = JOIN_BACKEND;
    snprintf(w->join_note, sizeof(w->join_note), "%s communicator initialising", w->ops->name);
}

static void send_hello(mw_world_t *w, mw_link_t *l)
{
    mw_frame_hello_t h = {.epoch = w->epoch,
                          .size = (uint32_t)w->size,
                          .rank = (uint32_t)w->rank,
                          .keepalive_ms = (uint32_t)w->ctx->opts.keepalive_ms,
                          .secret_len = MW_RDV_SECRET_BYTES};
    memcpy(h.secret, w->rdv.secret, MW_RDV_SECRET_BYTES);
    snprintf(h.name, sizeof(h.name), "%s", w->name);
    snprintf(h.addr, sizeof(h.addr), "%s", w->ctx->address);
    uint8_t meta[MW_FRAME_META_MAX];
    int n = mw_frame_hello_encode(&h, meta, sizeof(meta));
    if (n < 0) {
        mw_world_break(w, MW_EINVAL, "cannot encode HELLO");
        return;
    }
    mw_link_send_control(l, MW_FRAME_HELLO, meta, (size_t)n);
}

static void connect_peer(mw_world_t *w, int peer, const char *addr)
{
    char err[256];
    mw_link_t *l = mw_link_connect(w, peer, addr, err, sizeof(err));
    if (l == NULL) {
        if (peer == 0)
            mw_world_on_connect_failed(w, w->links[0], err);
        else
            mw_world_break(w, MW_EBROKEN, "%s", err);
        return;
    }
    send_hello(w, l);
}

void mw_world_on_link_up(mw_world_t *w, mw_link_t *l)
{
    if (w->state != MW_WORLD_JOINING)
        return;
    if (w->rank != 0 && l->peer == 0) {
        w->join_phase = JOIN_MESH;
        snprintf(w->join_note, sizeof(w->join_note), "connected to rank 0, waiting for %s",
                 w->size > 2 ? "the other ranks" : "nothing");
    }
    if (!all_links_up(w))
        return;
    if (w->rank == 0 && w->size > 2) {
        const char *addrs[MW_WORLD_SIZE_MAX];
        for (int p = 0; p < w->size; p++)
            addrs[p] = p == 0 ? w->ctx->address : w->links[p]->addr;
        uint8_t meta[MW_FRAME_META_MAX];
        int n = mw_frame_peers_encode(addrs, w->size, meta, sizeof(meta));
        if (n < 0) {
            mw_world_break(w, MW_EINVAL, "cannot encode the peer list");
            return;
        }
        for (int p = 1; p < w->size; p++)
            mw_link_send_control(w->links[p], MW_FRAME_PEERS, meta, (size_t)n);
    }
    if (w->state == MW_WORLD_JOINING)
        links_done(w);
}

void mw_world_on_peers(mw_world_t *w, char (*addrs)[MW_FRAME_ADDR_MAX + 1], int count)
{
    (void)count;
    if (w->state != MW_WORLD_JOINING)
        return;
    for (int p = 1; p < w->rank && w->state == MW_WORLD_JOINING; p++)
        connect_peer(w, p, addrs[p]);
    if (w->state == MW_WORLD_JOINING && all_links_up(w))
        links_done(w);
}

void mw_world_on_connect_failed(mw_world_t *w, mw_link_t *l, const char *why)
{
    if (w->state != MW_WORLD_JOINING) {
        mw_world_break(w, MW_EBROKEN, "%s", why);
        return;
    }
    if (w->rank != 0 && l != NULL && l->peer == 0 && w->join_phase == JOIN_CONNECT) {
        /* a stale record, or rank 0 restarting: fetch the record again */
        mw_link_reset(l);
        w->join_phase = JOIN_FETCH;
        w->fetch_failures++;
        snprintf(w->join_note, sizeof(w->join_note), "%s", why);
        rdv_push(w->ctx, RDV_FETCH, w, 50);
        return;
    }
    mw_world_break(w, MW_EBROKEN, "%s", why);
}

static void join_start(mw_worlds_t *ctx, mw_world_t *w)
{
    w->in_engine = 1;
    w->next_in_engine = ctx->worlds;
    ctx->worlds = w;
    if (w->size == 1) {
        links_done(w);
        return;
    }
    if (w->rank == 0) {
        char err[256];
        snprintf(w->rdv.addr, sizeof(w->rdv.addr), "%s", ctx->address);
        if (w->ops->rendezvous_data != NULL &&
            w->ops->rendezvous_data(w, w->rdv.nccl, sizeof(w->rdv.nccl), &w->rdv.nccl_len, err,
                                    sizeof(err)) != MW_OK) {
            mw_world_break(w, MW_EIO, "%s rendezvous data: %s", w->ops->name, err);
            return;
        }
        w->join_phase = JOIN_PUBLISH;
        w->rdv_published = 1;
        snprintf(w->join_note, sizeof(w->join_note), "rank 0 listening at %s", ctx->address);
        rdv_push(ctx, RDV_PUBLISH, w, 0);
    } else {
        w->join_phase = JOIN_FETCH;
        snprintf(w->join_note, sizeof(w->join_note),
                 "rendezvous record not found in Redis (rank 0 has not published it)");
        rdv_push(ctx, RDV_FETCH, w, 0);
    }
}

static void rdv_result(mw_world_t *w, const char *text)
{
    char err[256];
    if (w->state != MW_WORLD_JOINING || w->join_phase != JOIN_FETCH)
        return;
    if (mw_rdv_record_parse(text, strlen(text), &w->rdv, err, sizeof(err)) != MW_OK) {
        snprintf(w->join_note, sizeof(w->join_note), "bad rendezvous record: %.120s", err);
        rdv_push(w->ctx, RDV_FETCH, w, 50);
        return;
    }
    w->join_phase = JOIN_CONNECT;
    snprintf(w->join_note, sizeof(w->join_note), "connecting to rank 0 at %s", w->rdv.addr);
    connect_peer(w, 0, w->rdv.addr);
}

static void join_timeout(mw_world_t *w, int64_t now)
{
    char missing[512];
    size_t len = 0;
    int n = 0;
    missing[0] = '\0';
    for (int p = 0; p < w->size && len + 16 < sizeof(missing); p++) {
        if (p == w->rank || mw_link_is_up(w->links[p]))
            continue;
        len += (size_t)snprintf(missing + len, sizeof(missing) - len, "%s%d", n++ ? "," : "", p);
    }
    int rc = __atomic_load_n(&w->rdv_last_rc, __ATOMIC_RELAXED);
    if (rc == MW_EUNAVAIL || rc == MW_EREDIS)
        snprintf(w->join_note, sizeof(w->join_note), "Redis unavailable for the rendezvous");
    mw_world_break(w, MW_ETIMEDOUT, "join timed out after %lld ms: missing rank%s %s (%s)",
                   (long long)(now - w->join_start_ms), n == 1 ? "" : "s", n ? missing : "none",
                   w->join_note);
}

/* --- the progress thread ------------------------------------------------------------ */

static void handle_cmd(mw_worlds_t *ctx, mw_cmd_t *cmd)
{
    mw_world_t *w = cmd->w;
    /* a posted request may be freed by its owner as soon as its last
     * operation completes: read what is needed first, touch it no more after */
    int heap = cmd->heap, sync = cmd->sync;
    switch (cmd->type) {
    case CMD_JOIN:
        join_start(ctx, w);
        break;
    case CMD_POST:
        route_req(w, cmd->req);
        break;
    case CMD_ABORT:
        mw_world_break(w, MW_EABORTED, "aborted: %s", cmd->text ? cmd->text : "by its owner");
        break;
    case CMD_CLOSE:
        world_close(ctx, w);
        break;
    case CMD_RDV_RESULT:
        rdv_result(w, cmd->text);
        world_unref(w);
        break;
    }
    if (heap) {
        free(cmd->text);
        free(cmd);
    } else if (sync) {
        pthread_mutex_lock(&ctx->lock);
        cmd->done = 1;
        pthread_cond_broadcast(&ctx->cond);
        pthread_mutex_unlock(&ctx->lock);
    }
}

static void drain_cmds(mw_worlds_t *ctx)
{
    for (;;) {
        pthread_mutex_lock(&ctx->lock);
        mw_cmd_t *cmd = ctx->cmds;
        ctx->cmds = ctx->cmds_tail = NULL;
        pthread_mutex_unlock(&ctx->lock);
        if (cmd == NULL)
            return;
        while (cmd != NULL) {
            mw_cmd_t *next = cmd->next;
            handle_cmd(ctx, cmd);
            cmd = next;
        }
    }
}

/* Completes backend (NCCL) operations between ticks. */
static void poll_backends(mw_worlds_t *ctx, int64_t now)
{
    for (mw_world_t *w = ctx->worlds; w != NULL; w = w->next_in_engine) {
        if (w->ops->poll == NULL || w->state != MW_WORLD_READY)
            continue;
        char err[256];
        int rc = w->ops->poll(w, now, err, sizeof(err));
        if (rc != MW_OK && rc != MW_EAGAIN)
            mw_world_break(w, rc, "%s", err);
    }
}

static void tick(mw_worlds_t *ctx, int64_t now)
{
    for (mw_world_t *w = ctx->worlds; w != NULL; w = w->next_in_engine) {
        if (w->state == MW_WORLD_JOINING && now > w->join_deadline_ms) {
            join_timeout(w, now);
            continue;
        }
        if (w->state != MW_WORLD_JOINING && w->state != MW_WORLD_READY)
            continue;
        if (w->ops->poll != NULL && (w->join_phase == JOIN_BACKEND || w->state == MW_WORLD_READY)) {
            char err[256];
            int rc = w->ops->poll(w, now, err, sizeof(err));
            if (rc == MW_OK && w->join_phase == JOIN_BACKEND)
                world_ready(w);
            else if (rc != MW_OK && rc != MW_EAGAIN)
                mw_world_break(w, rc, "%s", err);
        }
        for (int p = 0; p < w->size && w->links != NULL; p++)
            if (w->links[p] != NULL && (w->state == MW_WORLD_JOINING || w->state == MW_WORLD_READY))
                mw_link_tick(w->links[p], now);
    }
    mw_link_conns_tick(ctx, now);
}

static void deliver_callbacks(mw_worlds_t *ctx)
{
    while (ctx->callbacks != NULL) {
        struct cb_event *cb = ctx->callbacks;
        ctx->callbacks = cb->next;
        if (ctx->callbacks == NULL)
            ctx->callbacks_tail = NULL;
        if (cb->w->on_event != NULL)
            cb->w->on_event(&cb->ev, cb->ev.user);
        world_unref(cb->w);
        free(cb);
    }
}

static void reap(mw_worlds_t *ctx)
{
    mw_link_conns_free(ctx, 0);
    while (ctx->reap != NULL) {
        mw_world_t *w = ctx->reap;
        ctx->reap = w->next_reap;
        world_unref(w);
    }
}

static void *progress_main(void *arg)
{
    mw_worlds_t *ctx = arg;
    struct epoll_event evs[64];
    ctx->next_tick_ms = mw_now_ms() + ctx->tick_ms;
    for (;;) {
        int64_t now = mw_now_ms();
        int timeout = ctx->next_tick_ms > now ? (int)(ctx->next_tick_ms - now) : 0;
        if (ctx->backend_busy > 0 && timeout > 1)
            timeout = 1;
        int n = epoll_wait(ctx->epfd, evs, 64, timeout);
        for (int i = 0; i < n; i++) {
            int kind = *(int *)evs[i].data.ptr;
            if (kind == EV_WAKE) {
                uint64_t v;
                ssize_t r = read(ctx->wakefd, &v, sizeof(v));
                (void)r;
                __atomic_store_n(&ctx->wake_pending, 0, __ATOMIC_RELEASE);
            } else if (kind == EV_LISTEN) {
                mw_link_accept(ctx);
            } else if (kind == EV_CONN) {
                mw_link_conn_event(ctx, evs[i].data.ptr, evs[i].events);
            } else if (kind == EV_LINK) {
                mw_link_event(evs[i].data.ptr, evs[i].events);
            }
        }
        drain_cmds(ctx);
        now = mw_now_ms();
        if (ctx->backend_busy > 0 && now < ctx->next_tick_ms)
            poll_backends(ctx, now);
        if (now >= ctx->next_tick_ms) {
            tick(ctx, now);
            ctx->next_tick_ms = now + ctx->tick_ms;
        }
        deliver_callbacks(ctx);
        reap(ctx);
        pthread_mutex_lock(&ctx->lock);
        int stop = ctx->stop && ctx->cmds == NULL;
        pthread_mutex_unlock(&ctx->lock);
        if (stop)
            break;
    }
    while (ctx->worlds != NULL)
        world_close(ctx, ctx->worlds);
    deliver_callbacks(ctx);
    reap(ctx);
    mw_link_conns_free(ctx, 1);
    return NULL;
}

/* --- the context --------------------------------------------------------------------- */

void mw_world_options_from_config(const mw_config_t *cfg, mw_world_options_t *opts)
{
    *opts = (mw_world_options_t){.timeout_ms = cfg->world_timeout_ms,
                                 .keepalive_ms = cfg->world_keepalive_ms,
                                 .max_tensor_bytes = (uint64_t)cfg->world_max_tensor_bytes,
                                 .socket_buffer_bytes = (int)cfg->world_socket_buffer_bytes,
                                 .listen_port = (int)cfg->world_listen_port,
                                 .redis = cfg};
    snprintf(opts->listen_host, sizeof(opts->listen_host), "%s", cfg->world_listen_host);
    snprintf(opts->advertise_host, sizeof(opts->advertise_host), "%s", cfg->world_advertise_host);
}

mw_worlds_t *mw_worlds_new(const mw_world_options_t *opts, char *errstr, size_t errstr_size)
{
    mw_worlds_t *ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL) {
        mw_errf(MW_ENOMEM, errstr, errstr_size, "out of memory");
        return NULL;
    }
    if (mw_config_copy(&ctx->redis_cfg, opts->redis, errstr, errstr_size) != MW_OK) {
        free(ctx);
        return NULL;
    }
    ctx->opts = *opts;
    ctx->opts.redis = &ctx->redis_cfg;
    if (ctx->opts.keepalive_ms > ctx->opts.timeout_ms / 3)
        ctx->opts.keepalive_ms = ctx->opts.timeout_ms / 3;
    int64_t timeout_ms = ctx->opts.timeout_ms, keepalive_ms = ctx->opts.keepalive_ms;
    ctx->tick_ms = timeout_ms / 20 < keepalive_ms / 4 ? timeout_ms / 20 : keepalive_ms / 4;
    if (ctx->tick_ms < 2)
        ctx->tick_ms = 2;
    if (ctx->tick_ms > 50)
        ctx->tick_ms = 50;
    ctx->wake_kind = EV_WAKE;
    ctx->listen_kind = EV_LISTEN;
    ctx->listenfd = ctx->wakefd = ctx->donefd = -1;
    pthread_mutex_init(&ctx->lock, NULL);
    cond_init_monotonic(&ctx->cond);
    cond_init_monotonic(&ctx->rdv_cond);
    ctx->events = calloc(MW_EVENTS_MAX, sizeof(*ctx->events));
    ctx->epfd = epoll_create1(EPOLL_CLOEXEC);
    ctx->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    ctx->donefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (ctx->events == NULL || ctx->epfd < 0 || ctx->wakefd < 0 || ctx->donefd < 0) {
        mw_errf(MW_EIO, errstr, errstr_size, "worlds: %s", strerror(errno));
        goto out_free;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &ctx->wake_kind};
    epoll_ctl(ctx->epfd, EPOLL_CTL_ADD, ctx->wakefd, &ev);
    if (mw_link_listen(ctx, errstr, errstr_size) != MW_OK)
        goto out_free;
    if (pthread_create(&ctx->thread, NULL, progress_main, ctx) != 0) {
        mw_errf(MW_EIO, errstr, errstr_size, "cannot start the progress thread");
        goto out_free;
    }
    if (pthread_create(&ctx->rdv_thread, NULL, rdv_main, ctx) != 0) {
        mw_errf(MW_EIO, errstr, errstr_size, "cannot start the rendezvous thread");
        pthread_mutex_lock(&ctx->lock);
        ctx->stop = 1;
        pthread_mutex_unlock(&ctx->lock);
        wake(ctx);
        pthread_join(ctx->thread, NULL);
        goto out_free;
    }
    ctx->threads_started = 1;
    mw_log(MW_LOG_DEBUG, "world", "worlds listening at %s (timeout %lld ms, keepalive %lld ms)",
           ctx->address, (long long)ctx->opts.timeout_ms, (long long)ctx->opts.keepalive_ms);
    return ctx;
out_free:
    if (ctx->listenfd >= 0)
        close(ctx->listenfd);
    if (ctx->wakefd >= 0)
        close(ctx->wakefd);
    if (ctx->donefd >= 0)
        close(ctx->donefd);
    if (ctx->epfd >= 0)
        close(ctx->epfd);
    free(ctx->events);
    pthread_mutex_destroy(&ctx->lock);
    pthread_cond_destroy(&ctx->cond);
    pthread_cond_destroy(&ctx->rdv_cond);
    mw_config_fini(&ctx->redis_cfg);
    free(ctx);
    return NULL;
}

void mw_worlds_destroy(mw_worlds_t *ctx)
{
    if (ctx == NULL)
        return;
    pthread_mutex_lock(&ctx->lock);
    ctx->stop = 1;
    pthread_mutex_unlock(&ctx->lock);
    wake(ctx);
    pthread_join(ctx->thread, NULL);
    pthread_mutex_lock(&ctx->lock);
    pthread_cond_broadcast(&ctx->rdv_cond);
    pthread_mutex_unlock(&ctx->lock);
    pthread_join(ctx->rdv_thread, NULL);
    close(ctx->listenfd);
    close(ctx->wakefd);
    close(ctx->donefd);
    close(ctx->epfd);
    free(ctx->events);
    pthread_mutex_destroy(&ctx->lock);
    pthread_cond_destroy(&ctx->cond);
    pthread_cond_destroy(&ctx->rdv_cond);
    mw_config_fini(&ctx->redis_cfg);
    free(ctx);
}

const char *mw_worlds_address(const mw_worlds_t *ctx)
{
    return ctx->address;
}

int mw_worlds_next_event(mw_worlds_t *ctx, mw_world_event_t *ev, int64_t timeout_ms)
{
    int64_t deadline = timeout_ms < 0 ? -1 : mw_now_ms() + timeout_ms;
    int rc = MW_EAGAIN;
    pthread_mutex_lock(&ctx->lock);
    for (;;) {
        if (ctx->ev_count > 0) {
            *ev = ctx->events[ctx->ev_head];
            ctx->ev_head = (ctx->ev_head + 1) % MW_EVENTS_MAX;
            ctx->ev_count--;
            rc = MW_OK;
            break;
        }
        if (deadline >= 0 && mw_now_ms() >= deadline)
            break;
        cond_wait_until(&ctx->cond, &ctx->lock, deadline);
    }
    pthread_mutex_unlock(&ctx->lock);
    return rc;
}

/* --- worlds (API side) ------------------------------------------------------------------ */

static int valid_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > MW_WORLD_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '-'))
            return 0;
    }
    return 1;
}

int mw_world_join(mw_worlds_t *ctx, const mw_world_opts_t *opts, mw_world_t **out, char *errstr,
                  size_t errstr_size)
{
    *out = NULL;
    if (opts->name == NULL || !valid_name(opts->name))
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "world name must be 1..%d characters of [A-Za-z0-9._:-]", MW_WORLD_NAME_MAX);
    if (opts->size < 1 || opts->size > MW_WORLD_SIZE_MAX || opts->rank < 0 ||
        opts->rank >= opts->size)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "world %s: rank %d of size %d (size must be 1..%d)", opts->name, opts->rank,
                       opts->size, MW_WORLD_SIZE_MAX);
    char why[200];
    const mw_world_backend_ops_t *ops =
        mw_world_backend_find(opts->backend != NULL ? opts->backend : "tcp", why, sizeof(why));
    if (ops == NULL)
        return mw_errf(MW_EINVAL, errstr, errstr_size, "world %s: %s", opts->name, why);
    mw_world_t *w = calloc(1, sizeof(*w));
    mw_cmd_t *cmd = calloc(1, sizeof(*cmd));
    if (w == NULL || cmd == NULL ||
        (w->links = calloc((size_t)opts->size, sizeof(*w->links))) == NULL) {
        if (w != NULL)
            free(w->links);
        free(w);
        free(cmd);
        return mw_errf(MW_ENOMEM, errstr, errstr_size, "out of memory");
    }
    w->ctx = ctx;
    w->refs = 1;
    snprintf(w->name, sizeof(w->name), "%s", opts->name);
    w->epoch = opts->epoch;
    w->size = opts->size;
    w->rank = opts->rank;
    w->on_event = opts->on_event;
    w->user = opts->user;
    w->device = opts->device;
    pthread_mutex_init(&w->lock, NULL);
    cond_init_monotonic(&w->cond);
    w->state = MW_WORLD_JOINING;
    w->join_start_ms = mw_now_ms();
    w->join_deadline_ms =
        w->join_start_ms + (opts->timeout_ms > 0 ? opts->timeout_ms : ctx->opts.timeout_ms);
    if (w->rank == 0 && w->size > 1 &&
        getrandom(w->rdv.secret, MW_RDV_SECRET_BYTES, 0) != MW_RDV_SECRET_BYTES) {
        world_unref(w);
        free(cmd);
        return mw_errf(MW_EIO, errstr, errstr_size, "getrandom: %s", strerror(errno));
    }
    if (ops->create != NULL) {
        int rc = ops->create(w, errstr, errstr_size);
        if (rc != MW_OK) {
            world_unref(w); /* w->ops unset: nothing of the backend to destroy */
            free(cmd);
            return rc;
        }
    }
    w->ops = ops;
    world_ref(w); /* the engine's */
    cmd->type = CMD_JOIN;
    cmd->heap = 1;
    cmd->w = w;
    cmd_push(ctx, cmd);
    *out = w;
    return MW_OK;
}

int mw_world_wait_ready(mw_world_t *w, int64_t timeout_ms, char *errstr, size_t errstr_size)
{
    int64_t deadline = timeout_ms < 0 ? -1 : mw_now_ms() + timeout_ms;
    int rc;
    pthread_mutex_lock(&w->lock);
    for (;;) {
        if (w->state == MW_WORLD_READY) {
            rc = MW_OK;
            break;
        }
        if (w->state != MW_WORLD_JOINING) {
            rc = mw_errf(w->err ? w->err : MW_EBROKEN, errstr, errstr_size, "%s", w->errstr);
            break;
        }
        if (deadline >= 0 && mw_now_ms() >= deadline) {
            rc = mw_errf(MW_ETIMEDOUT, errstr, errstr_size, "world %s epoch %lld: still joining",
                         w->name, (long long)w->epoch);
            break;
        }
        cond_wait_until(&w->cond, &w->lock, deadline);
    }
    pthread_mutex_unlock(&w->lock);
    return rc;
}

mw_world_state_t mw_world_state(mw_world_t *w)
{
    pthread_mutex_lock(&w->lock);
    mw_world_state_t s = w->state;
    pthread_mutex_unlock(&w->lock);
    return s;
}

int mw_world_error(mw_world_t *w, char *errstr, size_t errstr_size)
{
    pthread_mutex_lock(&w->lock);
    int err = w->err;
    if (errstr != NULL && errstr_size > 0)
        snprintf(errstr, errstr_size, "%s", w->errstr);
    pthread_mutex_unlock(&w->lock);
    return err;
}

const char *mw_world_name(const mw_world_t *w)
{
    return w->name;
}
int64_t mw_world_epoch(const mw_world_t *w)
{
    return w->epoch;
}
int mw_world_rank(const mw_world_t *w)
{
    return w->rank;
}
int mw_world_size(const mw_world_t *w)
{
    return w->size;
}

void mw_world_stats(mw_world_t *w, mw_world_stats_t *stats)
{
    stats->bytes_sent = __atomic_load_n(&w->stats.bytes_sent, __ATOMIC_RELAXED);
    stats->bytes_received = __atomic_load_n(&w->stats.bytes_received, __ATOMIC_RELAXED);
    stats->frames_sent = __atomic_load_n(&w->stats.frames_sent, __ATOMIC_RELAXED);
    stats->frames_received = __atomic_load_n(&w->stats.frames_received, __ATOMIC_RELAXED);
    stats->pings_sent = __atomic_load_n(&w->stats.pings_sent, __ATOMIC_RELAXED);
}

void mw_world_abort(mw_world_t *w, const char *reason)
{
    mw_cmd_t cmd = {.type = CMD_ABORT, .w = w, .text = (char *)(reason ? reason : "by its owner")};
    cmd_run_sync(w->ctx, &cmd);
}

void mw_world_destroy(mw_world_t *w)
{
    if (w == NULL)
        return;
    mw_cmd_t cmd = {.type = CMD_CLOSE, .w = w};
    cmd_run_sync(w->ctx, &cmd);
    world_unref(w);
}

/* --- requests (API side) ------------------------------------------------------------------ */

int mw_world_req_ops(mw_world_req_t *req, int nops)
{
    if (nops > 0 && (req->ops = calloc((size_t)nops, sizeof(mw_op_t))) == NULL)
        return MW_ENOMEM;
    req->nops = nops;
    req->pending_ops = nops;
    for (int i = 0; i < nops; i++) {
        req->ops[i].req = req;
        req->ops[i].hdr = req->ops[i].hdr_inline;
    }
    return MW_OK;
}

/* A request of kind with nops operations (none: the backend lays them out). */
static mw_world_req_t *req_new(mw_world_t *w, int kind, int nops, size_t extra)
{
    mw_world_req_t *req = calloc(1, sizeof(*req) + extra);
    if (req == NULL)
        return NULL;
    if (mw_world_req_ops(req, nops) != MW_OK) {
        free(req);
        return NULL;
    }
    req->w = w;
    world_ref(w);
    req->kind = kind;
    req->status = MW_EAGAIN;
    return req;
}

static void req_release(mw_world_req_t *req)
{
    mw_world_t *w = req->w;
    free(req->ops);
    free(req->scratch);
    free(req);
    world_unref(w);
}

/* Hands req to the progress thread (or completes it at once). */
static int req_post(mw_world_t *w, mw_world_req_t *req, mw_world_req_t **out)
{
    *out = req;
    pthread_mutex_lock(&w->lock);
    int open = w->state == MW_WORLD_JOINING || w->state == MW_WORLD_READY;
    if (!open || req->nops == 0) {
        if (!open) {
            req->status = w->err ? w->err : MW_EBROKEN;
            snprintf(req->errstr, sizeof(req->errstr), "%s", w->errstr);
        } else if (req->kind != REQ_ALL_REDUCE) {
            req->status = MW_OK;
        }
        req->pending_ops = 0;
        pthread_mutex_unlock(&w->lock);
        return MW_OK;
    }
    pthread_mutex_unlock(&w->lock);
    req->cmd.type = CMD_POST;
    req->cmd.w = w;
    req->cmd.req = req;
    if (on_progress_thread(w->ctx))
        handle_cmd(w->ctx, &req->cmd);
    else
        cmd_push(w->ctx, &req->cmd);
    return MW_OK;
}

static int check_peer(mw_world_t *w, int peer)
{
    return peer >= 0 && peer < w->size && peer != w->rank;
}

/* Has the backend lay out a tensor or collective request, then posts it. */
static int req_submit(mw_world_t *w, mw_world_req_t *req, mw_world_req_t **out)
{
    int rc = w->ops->prepare(w, req);
    if (rc != MW_OK) {
        req_release(req);
        return rc;
    }
    return req_post(w, req, out);
}

/* A request of kind on the tensor desc at buf: MW_EINVAL for a bad tensor,
 * MW_ETOOBIG over the context's max_tensor_bytes. */
static int tensor_req_new(mw_world_t *w, int kind, const mw_tensor_desc_t *desc, void *buf,
                          mw_world_req_t **out)
{
    uint64_t nbytes;
    if (mw_tensor_nbytes(desc, &nbytes) != MW_OK || buf == NULL)
        return MW_EINVAL;
    if (nbytes > w->ctx->opts.max_tensor_bytes)
        return MW_ETOOBIG;
    mw_world_req_t *r = req_new(w, kind, 0, 0);
    if (r == NULL)
        return MW_ENOMEM;
    r->desc = *desc;
    r->bytes = nbytes;
    r->buf = buf;
    r->nbytes = nbytes;
    *out = r;
    return MW_OK;
}

int mw_world_isend(mw_world_t *w, int peer, const mw_tensor_desc_t *desc, const void *buf,
                   mw_world_req_t **req)
{
    mw_world_req_t *r;
    *req = NULL;
    if (!check_peer(w, peer))
        return MW_EINVAL;
    int rc = tensor_req_new(w, REQ_SEND, desc, (void *)buf /* read only */, &r);
    if (rc != MW_OK)
        return rc;
    r->peer = peer;
    return req_submit(w, r, req);
}

int mw_world_irecv(mw_world_t *w, int peer, void *buf, size_t capacity, mw_world_req_t **req)
{
    *req = NULL;
    if (!check_peer(w, peer) || (buf == NULL && capacity > 0))
        return MW_EINVAL;
    mw_world_req_t *r = req_new(w, REQ_RECV, 0, 0);
    if (r == NULL)
        return MW_ENOMEM;
    r->peer = peer;
    r->buf = buf;
    r->nbytes = capacity;
    return req_submit(w, r, req);
}

int mw_world_isend_header(mw_world_t *w, int peer, const void *data, size_t len,
                          mw_world_req_t **req)
{
    *req = NULL;
    if (!check_peer(w, peer) || (data == NULL && len > 0))
        return MW_EINVAL;
    if (len > MW_WORLD_HEADER_MAX)
        return MW_ETOOBIG;
    mw_world_req_t *r = req_new(w, REQ_SEND_HEADER, 1, len);
    if (r == NULL)
        return MW_ENOMEM;
    if (len > 0)
        memcpy(r->data, data, len);
    r->bytes = len;
    mw_link_op_send(&r->ops[0], peer, MW_FRAME_HEADER, NULL, 0, r->data, len);
    return req_post(w, r, req);
}

int mw_world_irecv_header(mw_world_t *w, int peer, void *buf, size_t capacity, mw_world_req_t **req)
{
    *req = NULL;
    if (!check_peer(w, peer) || (buf == NULL && capacity > 0))
        return MW_EINVAL;
    mw_world_req_t *r = req_new(w, REQ_RECV_HEADER, 1, 0);
    if (r == NULL)
        return MW_ENOMEM;
    mw_link_op_recv(&r->ops[0], peer, MW_FRAME_HEADER, buf, capacity);
    return req_post(w, r, req);
}

int mw_world_ibroadcast(mw_world_t *w, int root, const mw_tensor_desc_t *desc, void *buf,
                        mw_world_req_t **req)
{
    mw_world_req_t *r;
    *req = NULL;
    if (root < 0 || root >= w->size)
        return MW_EINVAL;
    int rc = tensor_req_new(w, REQ_BROADCAST, desc, buf, &r);
    if (rc != MW_OK)
        return rc;
    r->root = root;
    return req_submit(w, r, req);
}

int mw_world_iall_reduce(mw_world_t *w, mw_reduce_op_t op, const mw_tensor_desc_t *desc, void *buf,
                         mw_world_req_t **req)
{
    mw_world_req_t *r;
    *req = NULL;
    if ((op != MW_REDUCE_SUM && op != MW_REDUCE_MAX) || desc->dtype != MW_DTYPE_F32)
        return MW_EINVAL;
    int rc = tensor_req_new(w, REQ_ALL_REDUCE, desc, buf, &r);
    if (rc != MW_OK)
        return rc;
    r->redop = op;
    return req_submit(w, r, req);
}

int mw_world_ibarrier(mw_world_t *w, mw_world_req_t **req)
{
    *req = NULL;
    mw_world_req_t *r = req_new(w, REQ_BARRIER, 0, 0);
    if (r == NULL)
        return MW_ENOMEM;
    return req_submit(w, r, req);
}

/* With w->lock held: the request's result or MW_EAGAIN; runs the all-reduce
 * reduction (dropping the lock) once every part has arrived. */
static int req_poll_locked(mw_world_req_t *req)
{
    mw_world_t *w = req->w;
    if (req->pending_ops > 0)
        return MW_EAGAIN;
    if (req->status == MW_EAGAIN && req->kind == REQ_ALL_REDUCE) {
        if (req->finalizing != 0 || req->scratch == NULL) {
            if (req->finalizing > 0)
                return MW_EAGAIN; /* another thread is reducing */
            req->status = MW_OK;
            return MW_OK;
        }
        req->finalizing = 1;
        pthread_mutex_unlock(&w->lock);
        w->ops->reduce(req);
        pthread_mutex_lock(&w->lock);
        req->finalizing = -1;
        req->status = MW_OK;
        pthread_cond_broadcast(&w->cond);
    }
    return req->status;
}

int mw_world_test(mw_world_req_t *req)
{
    pthread_mutex_lock(&req->w->lock);
    int rc = req_poll_locked(req);
    pthread_mutex_unlock(&req->w->lock);
    return rc;
}

int mw_world_wait(mw_world_req_t *req, int64_t timeout_ms, char *errstr, size_t errstr_size)
{
    if (req == NULL)
        return mw_errf(MW_EINVAL, errstr, errstr_size, "waiting on no request");
    mw_world_t *w = req->w;
    int64_t deadline = timeout_ms < 0 ? -1 : mw_now_ms() + timeout_ms;
    int rc;
    pthread_mutex_lock(&w->lock);
    while ((rc = req_poll_locked(req)) == MW_EAGAIN) {
        if (deadline >= 0 && mw_now_ms() >= deadline) {
            rc = MW_ETIMEDOUT;
            break;
        }
        cond_wait_until(&w->cond, &w->lock, deadline);
    }
    if (rc == MW_ETIMEDOUT)
        mw_errf(rc, errstr, errstr_size,
                "world %s epoch %lld: operation still pending after %lld ms", w->name,
                (long long)w->epoch, (long long)timeout_ms);
    else if (rc != MW_OK)
        mw_errf(rc, errstr, errstr_size, "%s", req->errstr);
    pthread_mutex_unlock(&w->lock);
    return rc;
}

uint64_t mw_world_req_bytes(mw_world_req_t *req)
{
    pthread_mutex_lock(&req->w->lock);
    uint64_t b = req->bytes;
    pthread_mutex_unlock(&req->w->lock);
    return b;
}

const mw_tensor_desc_t *mw_world_req_desc(mw_world_req_t *req)
{
    return &req->desc;
}

void mw_world_req_free(mw_world_req_t *req)
{
    if (req == NULL)
        return;
    mw_world_t *w = req->w;
    pthread_mutex_lock(&w->lock);
    int pending = req->pending_ops > 0;
    pthread_mutex_unlock(&w->lock);
    if (pending) {
        /* the engine may be writing into the buffer: the stream cannot continue */
        mw_world_abort(w, "a pending request was freed");
        pthread_mutex_lock(&w->lock);
        while (req->pending_ops > 0)
            pthread_cond_wait(&w->cond, &w->lock);
        pthread_mutex_unlock(&w->lock);
    }
    req_release(req);
}

/* --- blocking forms ----------------------------------------------------------------------------
 */

/* Waits for a posted request (rc is the post's result), copies out what the
 * caller asked for (desc of a received tensor, length of a received header),
 * aborts the world when the caller's deadline passes first, frees req. */
static int finish(mw_world_t *w, int rc, mw_world_req_t *req, mw_tensor_desc_t *desc, size_t *len,
                  int64_t timeout_ms, char *errstr, size_t errstr_size)
{
    if (rc != MW_OK)
        return mw_errf(rc, errstr, errstr_size, "world %s epoch %lld: %s", w->name,
                       (long long)w->epoch, mw_strerror(rc));
    rc = mw_world_wait(req, timeout_ms, errstr, errstr_size);
    if (rc == MW_OK && desc != NULL)
        *desc = req->desc;
    if (rc == MW_OK && len != NULL)
        *len = (size_t)req->bytes;
    if (rc == MW_ETIMEDOUT)
        mw_world_abort(w, "a blocking operation passed its caller's deadline");
    mw_world_req_free(req);
    return rc;
}

int mw_world_send(mw_world_t *w, int peer, const mw_tensor_desc_t *desc, const void *buf,
                  int64_t timeout_ms, char *errstr, size_t errstr_size)
{
    mw_world_req_t *req = NULL;
    int rc = mw_world_isend(w, peer, desc, buf, &req);
    return finish(w, rc, req, NULL, NULL, timeout_ms, errstr, errstr_size);
}

int mw_world_recv(mw_world_t *w, int peer, void *buf, size_t capacity, mw_tensor_desc_t *desc,
                  int64_t timeout_ms, char *errstr, size_t errstr_size)
{
    mw_world_req_t *req = NULL;
    int rc = mw_world_irecv(w, peer, buf, capacity, &req);
    return finish(w, rc, req, desc, NULL, timeout_ms, errstr, errstr_size);
}

int mw_world_send_header(mw_world_t *w, int peer, const void *data, size_t len, int64_t timeout_ms,
                         char *errstr, size_t errstr_size)
{
    mw_world_req_t *req = NULL;
    int rc = mw_world_isend_header(w, peer, data, len, &req);
    return finish(w, rc, req, NULL, NULL, timeout_ms, errstr, errstr_size);
}

int mw_world_recv_header(mw_world_t *w, int peer, void *buf, size_t capacity, size_t *len,
                         int64_t timeout_ms, char *errstr, size_t errstr_size)
{
    mw_world_req_t *req = NULL;
    int rc = mw_world_irecv_header(w, peer, buf, capacity, &req);
    return finish(w, rc, req, NULL, len, timeout_ms, errstr, errstr_size);
}

int mw_world_broadcast(mw_world_t *w, int root, const mw_tensor_desc_t *desc, void *buf,
                       int64_t timeout_ms, char *errstr, size_t errstr_size)
{
    mw_world_req_t *req = NULL;
    int rc = mw_world_ibroadcast(w, root, desc, buf, &req);
    return finish(w, rc, req, NULL, NULL, timeout_ms, errstr, errstr_size);
}

int mw_world_all_reduce(mw_world_t *w, mw_reduce_op_t op, const mw_tensor_desc_t *desc, void *buf,
                        int64_t timeout_ms, char *errstr, size_t errstr_size)
{
    mw_world_req_t *req = NULL;
    int rc = mw_world_iall_reduce(w, op, desc, buf, &req);
    return finish(w, rc, req, NULL, NULL, timeout_ms, errstr, errstr_size);
}

int mw_world_barrier(mw_world_t *w, int64_t timeout_ms, char *errstr, size_t errstr_size)
{
    mw_world_req_t *req = NULL;
    int rc = mw_world_ibarrier(w, &req);
    return finish(w, rc, req, NULL, NULL, timeout_ms, errstr, errstr_size);
}
