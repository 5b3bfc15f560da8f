/* The data plane engine: worlds handed over by the control plane, stage
 * compute, forwarding to the next stage, abort propagation (DESIGN §2, §3). */
#include "clock.h"
#include "dataplane_int.h"

#include "err.h"
#include "log.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define FAC "dataplane"
/* The engine sleeps at most this long with nothing to do: routes expire and
 * stats are published between wake-ups. */
#define ENGINE_WAIT_MS 10

void mw_dp_fatal(mw_dataplane_t *dp, int err, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    mw_log(MW_LOG_ERROR, FAC, "fatal: %s", msg);
    pthread_mutex_lock(&dp->lock);
    if (dp->fatal == 0) {
        dp->fatal = err;
        snprintf(dp->fatal_errstr, sizeof(dp->fatal_errstr), "%s", msg);
    }
    pthread_mutex_unlock(&dp->lock);
}

static uint64_t random_u64(void)
{
    uint64_t v = 0;
    FILE *f = fopen("/dev/urandom", "rb");
    if (f != NULL) {
        if (fread(&v, sizeof(v), 1, f) != 1)
            v = 0;
        fclose(f);
    }
    if (v == 0)
        v = (uint64_t)mw_unix_ms() * 2654435761u ^ (uint64_t)getpid();
    return v;
}

/* ------------------------------------------------------------- compute */

int mw_dp_compute(mw_dataplane_t *dp, const mw_tensor_desc_t *desc, const void *data,
                  mw_tensor_desc_t *out_desc, const void **out, char *errstr, size_t errstr_size)
{
    int64_t t0 = mw_now_us();
    int rc = mw_stage_run(dp->st, desc, data, out_desc, out, errstr, errstr_size);
    uint64_t numel;
    if (dp->cfg.worker_compute_delay_us > 0 && /* a slower device, for tests */
        (dp->cfg.worker_compute_delay_stage < 0 ||
         dp->cfg.worker_compute_delay_stage == dp->stage)) {
        struct timespec ts = {.tv_sec = dp->cfg.worker_compute_delay_us / 1000000,
                              .tv_nsec = (dp->cfg.worker_compute_delay_us % 1000000) * 1000};
        nanosleep(&ts, NULL);
    }
    dp->counters.compute_us += mw_now_us() - t0;
    if (rc == MW_OK) {
        dp->counters.processed++;
        if (mw_tensor_numel(out_desc, &numel) == MW_OK && out_desc->shape[out_desc->ndim - 1] > 0)
            dp->counters.rows += (int64_t)(numel / (uint64_t)out_desc->shape[out_desc->ndim - 1]);
    }
    return rc;
}

/* --------------------------------------------------------------- links */

static void xfer_free(dp_xfer_t *x)
{
    if (x == NULL)
        return;
    mw_world_req_free(x->hreq);
    mw_world_req_free(x->treq);
    free(x->buf);
    free(x);
}

int mw_dp_link_send(mw_dataplane_t *dp, dp_link_t *l, const mw_hop_t *hop, void *buf)
{
    (void)dp;
    uint8_t frame[MW_WORLD_HEADER_MAX];
    dp_xfer_t *x = NULL;
    int len = mw_hop_encode(hop, frame, sizeof(frame));
    if (len < 0 || l->dead) {
        free(buf);
        return len < 0 ? len : MW_EBROKEN;
    }
    x = calloc(1, sizeof(*x));
    if (x == NULL) {
        free(buf);
        return MW_ENOMEM;
    }
    x->buf = buf;
    x->hop = *hop;
    int rc = mw_world_isend_header(l->w, l->peer_rank, frame, (size_t)len, &x->hreq);
    if (rc == MW_OK && hop->type == MW_HOP_TENSOR)
        rc = mw_world_isend(l->w, l->peer_rank, &hop->desc, buf, &x->treq);
    if (rc != MW_OK) {
        /* A half-posted pair would desynchronise the peer: the world must go. */
        if (x->hreq != NULL)
            mw_world_abort(l->w, "data plane: could not post a tensor after its header");
        xfer_free(x);
        return MW_EBROKEN;
    }
    x->next = l->tx;
    l->tx = x;
    l->nsends++;
    return MW_OK;
}

static int post_header_recv(dp_link_t *l)
{
    return mw_world_irecv_header(l->w, l->peer_rank, l->hdr_buf, sizeof(l->hdr_buf), &l->hdr_req);
}

static void link_down(mw_dataplane_t *dp, dp_link_t *l, const char *why);

/* ------------------------------------------------------------- routes */

static size_t route_bucket(const char *origin, uint64_t inc, uint64_t batch)
{
    uint64_t h = 1469598103934665603u ^ inc ^ (batch * 0x9e3779b97f4a7c15u);
    for (const char *p = origin; *p; p++)
        h = (h ^ (uint8_t)*p) * 1099511628211u;
    return (size_t)(h % DP_ROUTE_BUCKETS);
}

static void route_add(mw_dataplane_t *dp, const mw_hop_t *hop, dp_link_t *up, dp_link_t *down)
{
    dp_route_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return; /* the origin's attempt timeout still covers this request */
    snprintf(r->origin, sizeof(r->origin), "%s", hop->origin);
    r->incarnation = hop->incarnation;
    r->batch = hop->batch;
    r->nrequests = hop->nrequests;
    r->up = up;
    r->down = down;
    r->expires_ms = mw_now_ms() + 2 * dp->cfg.request_attempt_timeout_ms;
    size_t b = route_bucket(r->origin, r->incarnation, r->batch);
    r->next = dp->routes[b];
    dp->routes[b] = r;
    dp->nroutes++;
}

static void send_abort(mw_dataplane_t *dp, dp_link_t *up, const mw_hop_t *about, const char *why)
{
    if (up == NULL || up->dead)
        return;
    mw_hop_t a = *about;
    a.type = MW_HOP_ABORT;
    a.stage = dp->stage;
    memset(&a.desc, 0, sizeof(a.desc));
    a.nbytes = 0;
    mw_log(MW_LOG_DEBUG, FAC, "abort of batch %s#%llu upstream to %s: %s", a.origin,
           (unsigned long long)a.batch, up->peer, why);
    if (mw_dp_link_send(dp, up, &a, NULL) == MW_OK)
        dp->counters.aborts++;
}

/* An abort arriving from downstream: pass it to where the batch came from. */
static void route_abort(mw_dataplane_t *dp, const mw_hop_t *hop)
{
    size_t b = route_bucket(hop->origin, hop->incarnation, hop->batch);
    for (dp_route_t **pp = &dp->routes[b]; *pp != NULL; pp = &(*pp)->next) {
        dp_route_t *r = *pp;
        if (r->batch == hop->batch && r->incarnation == hop->incarnation &&
            strcmp(r->origin, hop->origin) == 0) {
            send_abort(dp, r->up, hop, "aborted downstream");
            *pp = r->next;
            free(r);
            dp->nroutes--;
            return;
        }
    }
}

/* Every batch routed through l (as its downstream) is aborted upstream;
 * batches that came from l forget it. Expired entries are dropped too. */
static void routes_sweep(mw_dataplane_t *dp, dp_link_t *down_gone, int64_t now)
{
    for (size_t b = 0; b < DP_ROUTE_BUCKETS; b++) {
        for (dp_route_t **pp = &dp->routes[b]; *pp != NULL;) {
            dp_route_t *r = *pp;
            int drop = r->expires_ms <= now;
            if (down_gone != NULL && r->down == down_gone) {
                mw_hop_t h = {.type = MW_HOP_ABORT,
                              .incarnation = r->incarnation,
                              .batch = r->batch,
                              .nrequests = r->nrequests};
                snprintf(h.origin, sizeof(h.origin), "%s", r->origin);
                send_abort(dp, r->up, &h, "downstream world lost");
                drop = 1;
            }
            if (down_gone != NULL && r->up == down_gone)
                r->up = NULL;
            if (drop) {
                *pp = r->next;
                free(r);
                dp->nroutes--;
            } else {
                pp = &r->next;
            }
        }
    }
}

static void held_free(dp_held_t *h)
{
    if (h != NULL) {
        free(h->buf);
        free(h);
    }
}

/* ------------------------------------------------------------ reach */

static void reach_free(dp_reach_t *r)
{
    if (r == NULL)
        return;
    free(r->workers);
    free(r->origins);
    free(r->bits);
    free(r);
}

static long reach_index(char (*names)[MW_HOP_ORIGIN_MAX], size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], id) == 0)
            return (long)i;
    return -1;
}

int mw_dp_reaches(const mw_dataplane_t *dp, const dp_link_t *l, const char *origin)
{
    const dp_reach_t *r = dp->reach;
    if (r == NULL)
        return 1;
    long wi = reach_index(r->workers, r->nworkers, l->peer);
    long oi = reach_index(r->origins, r->norigins, origin);
    if (wi < 0 || oi < 0)
        return 1; /* newer than the plan we know: let the attempt try */
    return r->bits[(size_t)wi * r->norigins + (size_t)oi];
}

/* Stage of worker id in plan, or -1. */
static int plan_stage(const mw_plan_t *plan, const char *pipeline, const char *id)
{
    const mw_plan_worker_t *w = mw_plan_find_worker(plan, id);
    return w != NULL && strcmp(w->pipeline, pipeline) == 0 ? w->stage : -1;
}

static dp_reach_t *reach_compute(const mw_plan_t *plan, const char *pipeline, int nstages)
{
    dp_reach_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->workers = calloc(plan->nworkers + 1, sizeof(*r->workers));
    r->origins = calloc(plan->nworkers + 1, sizeof(*r->origins));
    if (r->workers == NULL || r->origins == NULL)
        goto out_free;
    for (size_t i = 0; i < plan->nworkers; i++) {
        const mw_plan_worker_t *w = &plan->workers[i];
        if (strcmp(w->pipeline, pipeline) != 0)
            continue;
        snprintf(r->workers[r->nworkers++], MW_HOP_ORIGIN_MAX, "%s", w->id);
        if (w->stage == 0)
            snprintf(r->origins[r->norigins++], MW_HOP_ORIGIN_MAX, "%s", w->id);
    }
    r->bits = calloc(r->nworkers * r->norigins + 1, 1);
    if (r->bits == NULL)
        goto out_free;
    /* From the last stage back to stage 1: the last stage reaches the origins it
     * has a world with; stage k reaches what its stage k+1 peers reach. A
     * draining worker reaches nothing, so that no one routes new work to it (it
     * still forwards what it holds, and a draining origin still gets its results). */
    for (int k = nstages - 1; k >= 1; k--) {
        for (size_t wi = 0; wi < r->nworkers; wi++) {
            const mw_plan_worker_t *self = mw_plan_find_worker(plan, r->workers[wi]);
            if (plan_stage(plan, pipeline, r->workers[wi]) != k || self == NULL || self->draining)
                continue;
            for (size_t j = 0; j < plan->nworlds; j++) {
                const mw_plan_world_t *pw = &plan->worlds[j];
                int me;
                if (pw->nmembers != 2 || !mw_plan_world_has(pw, r->workers[wi], &me))
                    continue;
                const char *peer = pw->members[1 - me];
                int ps = plan_stage(plan, pipeline, peer);
                if (ps != (k + 1) % nstages)
                    continue;
                if (k == nstages - 1) {
                    long oi = reach_index(r->origins, r->norigins, peer);
                    if (oi >= 0)
                        r->bits[wi * r->norigins + (size_t)oi] = 1;
                } else {
                    long pi = reach_index(r->workers, r->nworkers, peer);
                    for (size_t o = 0; pi >= 0 && o < r->norigins; o++)
                        r->bits[wi * r->norigins + o] |= r->bits[(size_t)pi * r->norigins + o];
                }
            }
        }
    }
    return r;
out_free:
    reach_free(r);
    return NULL;
}

/* ------------------------------------------------------------ forward */

dp_link_t *mw_dp_pick_downstream(mw_dataplane_t *dp, const char *origin, int *full)
{
    dp_link_t *best = NULL;
    int next = (dp->stage + 1) % dp->nstages;
    *full = 0;
    for (dp_link_t *l = dp->links; l != NULL; l = l->next) {
        if (l->dead || l->peer_stage != next)
            continue;
        if (next == 0 ? strcmp(l->peer, origin) != 0 : !mw_dp_reaches(dp, l, origin))
            continue;
        mw_world_state_t st = mw_world_state(l->w);
        if (st == MW_WORLD_JOINING) {
            *full = 1; /* a route is coming (a new worker, a world issued again): hold */
            continue;
        }
        if (st != MW_WORLD_READY)
            continue;
        if (l->nsends >= dp->cfg.worker_queue_depth ||
            (dp->origin != NULL && next != 0 && !mw_dp_origin_link_room(dp, l))) {
            *full = 1;
            continue;
        }
        int load = l->outstanding + l->nsends;
        if (best == NULL || load < best->outstanding + best->nsends ||
            (load == best->outstanding + best->nsends && l->picked < best->picked))
            best = l;
    }
    if (best != NULL)
        best->picked = ++dp->picks;
    return best;
}

/* Sends or holds one computed activation (buf taken over). */
static void forward(mw_dataplane_t *dp, const mw_hop_t *hop, void *buf, dp_link_t *up,
                    int64_t expires_ms)
{
    int full;
    dp_link_t *down = mw_dp_pick_downstream(dp, hop->origin, &full);
    if (down != NULL && mw_dp_link_send(dp, down, hop, buf) == MW_OK) {
        route_add(dp, hop, up, down);
        return;
    }
    if (down != NULL) {
        send_abort(dp, up, hop, "send failed");
        return;
    }
    if (full || dp->held_head != NULL) {
        dp_held_t *h = calloc(1, sizeof(*h));
        if (h != NULL) {
            h->hop = *hop;
            h->buf = buf;
            h->up = up;
            h->expires_ms = expires_ms;
            if (dp->held_tail != NULL)
                dp->held_tail->next = h;
            else
                dp->held_head = h;
            dp->held_tail = h;
            return;
        }
    }
    free(buf);
    send_abort(dp, up, hop, "no route to the origin");
}

/* Retries held activations in order; returns how many left the queue. */
static int flush_held(mw_dataplane_t *dp, int64_t now)
{
    int n = 0;
    while (dp->held_head != NULL) {
        dp_held_t *h = dp->held_head;
        int full;
        dp_link_t *down = NULL;
        if (h->expires_ms > now && (h->up == NULL || !h->up->dead)) {
            down = mw_dp_pick_downstream(dp, h->hop.origin, &full);
            if (down == NULL && full)
                break;
        }
        dp->held_head = h->next;
        if (dp->held_head == NULL)
            dp->held_tail = NULL;
        if (down != NULL) {
            void *buf = h->buf;
            h->buf = NULL;
            if (mw_dp_link_send(dp, down, &h->hop, buf) == MW_OK)
                route_add(dp, &h->hop, h->up, down);
            else
                send_abort(dp, h->up, &h->hop, "send failed");
        } else {
            send_abort(dp, h->up, &h->hop, "no route to the origin");
        }
        held_free(h);
        n++;
    }
    return n;
}

/* A tensor arrived on l. */
static void on_tensor(mw_dataplane_t *dp, dp_link_t *l, dp_xfer_t *x)
{
    char err[256];
    mw_hop_t *hop = &x->hop;
    if (dp->stage == 0 && hop->stage == dp->nstages - 1) {
        mw_dp_origin_on_result(dp, hop, x->buf);
        return;
    }
    if (hop->stage != dp->stage - 1) {
        mw_log(MW_LOG_WARN, FAC, "tensor from %s at stage %d, not for stage %d: dropped", l->peer,
               hop->stage, dp->stage);
        send_abort(dp, l, hop, "wrong stage");
        return;
    }
    mw_tensor_desc_t out_desc;
    const void *out;
    if (mw_dp_compute(dp, &hop->desc, x->buf, &out_desc, &out, err, sizeof(err)) != MW_OK) {
        mw_log(MW_LOG_WARN, FAC, "stage %d failed on batch %s#%llu: %s", dp->stage, hop->origin,
               (unsigned long long)hop->batch, err);
        send_abort(dp, l, hop, err);
        return;
    }
    mw_hop_t next = *hop;
    next.stage = dp->stage;
    next.desc = out_desc;
    if (mw_tensor_nbytes(&out_desc, &next.nbytes) != MW_OK)
        return;
    void *buf = malloc(next.nbytes ? next.nbytes : 1);
    if (buf == NULL) {
        send_abort(dp, l, hop, "out of memory");
        return;
    }
    memcpy(buf, out, next.nbytes);
    forward(dp, &next, buf, l, mw_now_ms() + dp->cfg.request_attempt_timeout_ms);
}

/* A header arrived on l: an abort is handled at once, a tensor's receive posted. */
static void on_header(mw_dataplane_t *dp, dp_link_t *l, size_t len)
{
    char err[256];
    mw_hop_t hop;
    if (mw_hop_decode(&hop, l->hdr_buf, len, err, sizeof(err)) != MW_OK) {
        mw_world_abort(l->w, err); /* the tensor stream cannot be resynchronised */
        link_down(dp, l, err);
        return;
    }
    if (hop.type == MW_HOP_ABORT) {
        if (dp->stage == 0)
            mw_dp_origin_on_abort(dp, &hop, "aborted downstream");
        else
            route_abort(dp, &hop);
        return;
    }
    if (hop.nbytes > (uint64_t)dp->cfg.world_max_tensor_bytes) {
        mw_world_abort(l->w, "data plane: announced tensor too large");
        link_down(dp, l, "announced tensor too large");
        return;
    }
    dp_xfer_t *x = calloc(1, sizeof(*x));
    if (x != NULL) {
        x->hop = hop;
        x->buf = malloc(hop.nbytes ? hop.nbytes : 1);
    }
    if (x == NULL || x->buf == NULL ||
        mw_world_irecv(l->w, l->peer_rank, x->buf, hop.nbytes, &x->treq) != MW_OK) {
        xfer_free(x);
        mw_world_abort(l->w, "data plane: could not post a tensor receive");
        link_down(dp, l, "could not post a tensor receive");
        return;
    }
    if (l->rx_tail != NULL)
        l->rx_tail->next = x;
    else
        l->rx_head = x;
    l->rx_tail = x;
}

/* Stops using l: frees its operations (a pending one aborts the world, which
 * is broken or going anyway) and aborts every attempt routed through it. */
static void link_down(mw_dataplane_t *dp, dp_link_t *l, const char *why)
{
    if (l->dead)
        return;
    l->dead = 1;
    mw_log(MW_LOG_INFO, FAC, "world %s to %s (stage %d) is down: %s", mw_world_name(l->w), l->peer,
           l->peer_stage, why);
    mw_world_req_free(l->hdr_req);
    l->hdr_req = NULL;
    while (l->rx_head != NULL) {
        dp_xfer_t *x = l->rx_head;
        l->rx_head = x->next;
        xfer_free(x);
    }
    l->rx_tail = NULL;
    while (l->tx != NULL) {
        dp_xfer_t *x = l->tx;
        l->tx = x->next;
        xfer_free(x);
    }
    l->nsends = 0;
    if (dp->stage == 0)
        mw_dp_origin_link_down(dp, l);
    routes_sweep(dp, l, mw_now_ms());
    for (dp_held_t *h = dp->held_head; h != NULL; h = h->next)
        if (h->up == l)
            h->up = NULL;
}

/* Progress on one link; returns the amount of work done. */
static int link_step(mw_dataplane_t *dp, dp_link_t *l)
{
    char err[256];
    int n = 0;
    if (l->dead)
        return 0;
    if (mw_world_state(l->w) == MW_WORLD_BROKEN) {
        mw_world_error(l->w, err, sizeof(err));
        link_down(dp, l, err);
        return 1;
    }
    for (dp_xfer_t **pp = &l->tx; *pp != NULL;) {
        dp_xfer_t *x = *pp;
        int hr = mw_world_test(x->hreq);
        int tr = x->treq != NULL ? mw_world_test(x->treq) : MW_OK;
        if ((hr != MW_OK && hr != MW_EAGAIN) || (tr != MW_OK && tr != MW_EAGAIN)) {
            mw_world_error(l->w, err, sizeof(err));
            link_down(dp, l, err);
            return n + 1;
        }
        if (hr == MW_OK && tr == MW_OK) {
            *pp = x->next;
            xfer_free(x);
            l->nsends--;
            n++;
        } else {
            pp = &x->next;
        }
    }
    /* Headers first: each TENSOR header posts its tensor's receive in order. */
    for (int i = 0; i < 64 && l->hdr_req != NULL; i++) {
        int rc = mw_world_test(l->hdr_req);
        if (rc == MW_EAGAIN)
            break;
        size_t len = (size_t)mw_world_req_bytes(l->hdr_req);
        mw_world_req_free(l->hdr_req);
        l->hdr_req = NULL;
        if (rc != MW_OK) {
            mw_world_error(l->w, err, sizeof(err));
            link_down(dp, l, err);
            return n + 1;
        }
        on_header(dp, l, len);
        n++;
        if (l->dead)
            return n;
        if (post_header_recv(l) != MW_OK) {
            link_down(dp, l, "could not post a header receive");
            return n;
        }
    }
    while (l->rx_head != NULL) {
        dp_xfer_t *x = l->rx_head;
        int rc = mw_world_test(x->treq);
        if (rc == MW_EAGAIN)
            break;
        if (rc != MW_OK) {
            mw_world_error(l->w, err, sizeof(err));
            link_down(dp, l, err);
            return n + 1;
        }
        l->rx_head = x->next;
        if (l->rx_head == NULL)
            l->rx_tail = NULL;
        on_tensor(dp, l, x);
        xfer_free(x);
        n++;
        if (l->dead)
            return n;
    }
    return n;
}

static void link_free(dp_link_t *l)
{
    if (l == NULL)
        return;
    mw_world_req_free(l->hdr_req);
    while (l->rx_head != NULL) {
        dp_xfer_t *x = l->rx_head;
        l->rx_head = x->next;
        xfer_free(x);
    }
    while (l->tx != NULL) {
        dp_xfer_t *x = l->tx;
        l->tx = x->next;
        xfer_free(x);
    }
    free(l);
}

/* ------------------------------------------------------------ commands */

static void apply_cmd(mw_dataplane_t *dp, dp_cmd_t *c)
{
    if (c->kind == CMD_ADD) {
        dp_link_t *l = calloc(1, sizeof(*l));
        if (l == NULL) {
            mw_log(MW_LOG_ERROR, FAC, "out of memory adding world %s", mw_world_name(c->w));
            return;
        }
        l->w = c->w;
        snprintf(l->peer, sizeof(l->peer), "%s", c->peer);
        l->peer_stage = c->peer_stage;
        l->peer_rank = 1 - c->my_rank;
        if (mw_world_size(c->w) != 2 || c->my_rank < 0 || c->my_rank > 1) {
            mw_log(MW_LOG_WARN, FAC, "world %s: the data plane uses pair worlds only",
                   mw_world_name(c->w));
            l->dead = 1;
        } else if (post_header_recv(l) != MW_OK) {
            l->dead = 1;
        }
        l->next = dp->links;
        dp->links = l;
        mw_log(MW_LOG_INFO, FAC, "world %s to %s (stage %d) added", mw_world_name(c->w), c->peer,
               c->peer_stage);
    } else if (c->kind == CMD_REMOVE) {
        for (dp_link_t **pp = &dp->links; *pp != NULL; pp = &(*pp)->next) {
            if ((*pp)->w == c->w) {
                dp_link_t *l = *pp;
                link_down(dp, l, "removed from the plan");
                *pp = l->next;
                link_free(l);
                break;
            }
        }
        mw_world_destroy(c->w);
    } else if (c->kind == CMD_ROUTES) {
        reach_free(dp->reach);
        dp->reach = c->reach;
        c->reach = NULL;
    }
}

/* Takes queued commands; a REMOVE caller that waits is woken. Returns the number applied. */
static int drain_cmds(mw_dataplane_t *dp)
{
    pthread_mutex_lock(&dp->lock);
    dp_cmd_t *list = dp->cmds;
    dp->cmds = NULL;
    pthread_mutex_unlock(&dp->lock);
    /* The queue is LIFO; apply in arrival order. */
    dp_cmd_t *rev = NULL;
    while (list != NULL) {
        dp_cmd_t *c = list;
        list = c->next;
        c->next = rev;
        rev = c;
    }
    int n = 0;
    while (rev != NULL) {
        dp_cmd_t *c = rev;
        rev = c->next;
        apply_cmd(dp, c);
        n++;
        if (c->kind == CMD_REMOVE && c->waited) {
            pthread_mutex_lock(&dp->lock);
            c->done = 1; /* the caller owns c */
            pthread_cond_broadcast(&dp->cond);
            pthread_mutex_unlock(&dp->lock);
        } else {
            reach_free(c->reach);
            free(c);
        }
    }
    return n;
}

void mw_dp_wake(mw_dataplane_t *dp)
{
    uint64_t one = 1;
    ssize_t n = write(dp->wakefd, &one, sizeof(one));
    (void)n;
}

static void push_cmd(mw_dataplane_t *dp, dp_cmd_t *c)
{
    pthread_mutex_lock(&dp->lock);
    c->next = dp->cmds;
    dp->cmds = c;
    pthread_mutex_unlock(&dp->lock);
    mw_dp_wake(dp);
}

void mw_dataplane_world_added(mw_dataplane_t *dp, mw_world_t *w, const char *peer_id,
                              int peer_stage, int my_rank)
{
    dp_cmd_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        mw_log(MW_LOG_ERROR, FAC, "out of memory adding world %s", mw_world_name(w));
        return;
    }
    c->kind = CMD_ADD;
    c->w = w;
    snprintf(c->peer, sizeof(c->peer), "%s", peer_id);
    c->peer_stage = peer_stage;
    c->my_rank = my_rank;
    push_cmd(dp, c);
}

void mw_dataplane_world_removed(mw_dataplane_t *dp, mw_world_t *w)
{
    /* Not waiting for the engine keeps the caller (the heartbeat loop) going
     * while the engine is in a long Kafka call; out of memory, it waits. */
    dp_cmd_t local = {0};
    dp_cmd_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        c = &local;
        c->waited = 1;
    }
    c->kind = CMD_REMOVE;
    c->w = w;
    push_cmd(dp, c);
    pthread_mutex_lock(&dp->lock);
    while (c == &local && !local.done)
        pthread_cond_wait(&dp->cond, &dp->lock);
    pthread_mutex_unlock(&dp->lock);
}

void mw_dataplane_set_routes(mw_dataplane_t *dp, const mw_plan_t *plan)
{
    dp_reach_t *r = reach_compute(plan, dp->pipeline, dp->nstages);
    dp_cmd_t *c = calloc(1, sizeof(*c));
    if (r == NULL || c == NULL) {
        reach_free(r);
        free(c);
        return;
    }
    c->kind = CMD_ROUTES;
    c->reach = r;
    push_cmd(dp, c);
}

/* -------------------------------------------------------------- engine */

static void publish_stats(mw_dataplane_t *dp)
{
    int64_t worlds = 0, busy = 0;
    for (dp_link_t *l = dp->links; l != NULL; l = l->next) {
        worlds += !l->dead;
        busy += l->nsends;
        for (dp_xfer_t *x = l->rx_head; x != NULL; x = x->next)
            busy++;
    }
    for (dp_held_t *h = dp->held_head; h != NULL; h = h->next)
        busy++;
    dp->counters.worlds = worlds;
    /* Mid stages: activations received, held or being sent (routes are metadata). */
    if (dp->stage != 0)
        dp->counters.inflight = busy;
    pthread_mutex_lock(&dp->lock);
    dp->stats = dp->counters;
    pthread_mutex_unlock(&dp->lock);
}

/* World progress only: sends, receives, compute, forwarding, aborts. */
static int pump_links(mw_dataplane_t *dp)
{
    int n = 0;
    for (dp_link_t *l = dp->links; l != NULL; l = l->next)
        n += link_step(dp, l);
    return n + flush_held(dp, mw_now_ms());
}

int mw_dp_pump(mw_dataplane_t *dp)
{
    int n = drain_cmds(dp) + pump_links(dp);
    publish_stats(dp);
    return n;
}

/* Sleeps until a world operation completes or fails, a command, stop, drain
 * or Kafka message arrives, or the next timer is due. Wake-ups that came
 * while the engine was working are consumed at the top of its next turn. */
static void engine_wait(mw_dataplane_t *dp)
{
    struct pollfd fds[2] = {
        {.fd = dp->wakefd, .events = POLLIN},
        {.fd = dp->worlds != NULL ? mw_worlds_done_fd(dp->worlds) : -1, .events = POLLIN}};
    int timeout = dp->origin != NULL ? mw_dp_origin_wait_ms(dp, ENGINE_WAIT_MS) : ENGINE_WAIT_MS;
    if (timeout > 0)
        poll(fds, 2, timeout);
}

static void engine_clear_wakeups(mw_dataplane_t *dp)
{
    uint64_t v;
    ssize_t n = read(dp->wakefd, &v, sizeof(v));
    (void)n;
    if (dp->worlds != NULL)
        mw_worlds_done_clear(dp->worlds);
}

static void *engine_main(void *arg)
{
    mw_dataplane_t *dp = arg;
    char err[512];
    int drained = 0;
    if (dp->origin != NULL && mw_dp_origin_connect(dp, err, sizeof(err)) != MW_OK)
        mw_dp_fatal(dp, MW_EKAFKA, "%s", err);
    for (;;) {
        engine_clear_wakeups(dp);
        pthread_mutex_lock(&dp->lock);
        int stop = dp->stop, fatal = dp->fatal != 0, draining = dp->draining;
        pthread_mutex_unlock(&dp->lock);
        if (draining && !drained && dp->origin != NULL && !fatal) {
            mw_dp_origin_drain(dp);
            drained = 1;
        }
        int n = drain_cmds(dp);
        if (stop)
            break;
        if (!fatal) {
            n += pump_links(dp);
            int64_t now = mw_now_ms();
            if (now >= dp->next_sweep_ms) {
                routes_sweep(dp, NULL, now);
                dp->next_sweep_ms = now + 500;
            }
            if (dp->origin != NULL)
                n += mw_dp_origin_step(dp);
        }
        publish_stats(dp);
        if (n == 0)
            engine_wait(dp);
    }
    if (dp->origin != NULL)
        mw_dp_origin_close(dp);
    publish_stats(dp);
    return NULL;
}

/* ------------------------------------------------------------ lifecycle */

int mw_dataplane_opts_from_plan(const mw_plan_t *plan, const char *worker_id,
                                const char *model_default, mw_dataplane_opts_t *opts, char *errstr,
                                size_t errstr_size)
{
    const mw_plan_worker_t *w = mw_plan_find_worker(plan, worker_id);
    if (w == NULL)
        return mw_errf(MW_ENOTFOUND, errstr, errstr_size, "worker %s is not in the plan",
                       worker_id);
    const mw_plan_pipeline_t *p = NULL;
    for (size_t i = 0; i < plan->npipelines; i++)
        if (strcmp(plan->pipelines[i].spec.name, w->pipeline) == 0)
            p = &plan->pipelines[i];
    if (p == NULL || w->stage < 0 || w->stage >= p->spec.nstages)
        return mw_errf(MW_ENOTFOUND, errstr, errstr_size,
                       "pipeline %s of worker %s not in the plan", w->pipeline, worker_id);
    memset(opts, 0, sizeof(*opts));
    opts->worker_id = worker_id;
    opts->pipeline = p->spec.name;
    opts->stage = w->stage;
    opts->nstages = p->spec.nstages;
    opts->model_path = p->spec.model[0] != '\0' ? p->spec.model : model_default;
    const mw_stage_spec_t *s = &p->spec.stages[w->stage];
    opts->first_layer = s->layer_begin >= 0 ? (int)s->layer_begin : -1;
    opts->last_layer = s->layer_end >= 0 ? (int)s->layer_end : -1;
    opts->device = strncmp(w->device, "cuda:", 5) == 0 ? atoi(w->device + 5) : -1;
    return MW_OK;
}

static int open_stage(mw_dataplane_t *dp, const mw_dataplane_opts_t *o, char *errstr,
                      size_t errstr_size)
{
    if (o->model_path == NULL || *o->model_path == '\0')
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "pipeline %s names no model and model.path is not set", o->pipeline);
    int rc = mw_model_open(o->model_path, &dp->model, errstr, errstr_size);
    if (rc != MW_OK)
        return rc;
    int first = o->first_layer, last = o->last_layer;
    if (first < 0 || last < 0) {
        mw_layer_range_t *ranges = calloc((size_t)o->nstages, sizeof(*ranges));
        if (ranges == NULL)
            return mw_errf(MW_ENOMEM, errstr, errstr_size, "out of memory");
        rc = mw_model_split(dp->model, o->nstages, ranges, errstr, errstr_size);
        first = ranges[o->stage].first;
        last = ranges[o->stage].last;
        free(ranges);
        if (rc != MW_OK)
            return rc;
    }
    /* Every stage takes the origin's largest batch; each row's output is the
     * same whatever shares its batch (model.h), as the reference runner's. */
    rc = mw_stage_new(dp->model, first, last, (int)dp->cfg.batch_max_rows, o->device, &dp->st,
                      errstr, errstr_size);
    if (rc == MW_OK)
        mw_log(MW_LOG_INFO, FAC, "%s stage %d/%d: layers %d..%d of %s (%s)", o->pipeline, o->stage,
               o->nstages, first, last, o->model_path, mw_stage_kind(dp->st));
    return rc;
}

int mw_dataplane_new(const mw_config_t *cfg, const mw_dataplane_opts_t *opts, mw_dataplane_t **out,
                     char *errstr, size_t errstr_size)
{
    int rc;
    *out = NULL;
    if (opts->worker_id == NULL || opts->pipeline == NULL || opts->nstages < 1 || opts->stage < 0 ||
        opts->stage >= opts->nstages || strlen(opts->worker_id) >= MW_HOP_ORIGIN_MAX ||
        strlen(opts->pipeline) >= 64)
        return mw_errf(MW_EINVAL, errstr, errstr_size, "data plane: bad worker/pipeline/stage");
    mw_dataplane_t *dp = calloc(1, sizeof(*dp));
    if (dp == NULL)
        return mw_errf(MW_ENOMEM, errstr, errstr_size, "out of memory");
    pthread_mutex_init(&dp->lock, NULL);
    pthread_cond_init(&dp->cond, NULL);
    dp->worlds = opts->worlds;
    dp->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (dp->wakefd < 0) {
        rc = mw_errf(MW_EIO, errstr, errstr_size, "data plane: eventfd: %s", strerror(errno));
        goto out_free;
    }
    if ((rc = mw_config_copy(&dp->cfg, cfg, errstr, errstr_size)) != MW_OK)
        goto out_free;
    snprintf(dp->worker_id, sizeof(dp->worker_id), "%s", opts->worker_id);
    snprintf(dp->pipeline, sizeof(dp->pipeline), "%s", opts->pipeline);
    dp->stage = opts->stage;
    dp->nstages = opts->nstages;
    dp->incarnation = random_u64();
    if ((rc = open_stage(dp, opts, errstr, errstr_size)) != MW_OK)
        goto out_free;
    if (dp->stage == 0 && (rc = mw_dp_origin_new(dp, errstr, errstr_size)) != MW_OK)
        goto out_free;
    if (pthread_create(&dp->thread, NULL, engine_main, dp) != 0) {
        rc = mw_errf(MW_ENOMEM, errstr, errstr_size, "data plane: cannot start its thread");
        goto out_free;
    }
    dp->started = 1;
    *out = dp;
    return MW_OK;
out_free:
    mw_dataplane_destroy(dp);
    return rc;
}

void mw_dataplane_destroy(mw_dataplane_t *dp)
{
    if (dp == NULL)
        return;
    if (dp->started) {
        pthread_mutex_lock(&dp->lock);
        dp->stop = 1;
        pthread_mutex_unlock(&dp->lock);
        mw_dp_wake(dp);
        pthread_join(dp->thread, NULL);
    }
    drain_cmds(dp);
    mw_dp_origin_destroy(dp);
    while (dp->links != NULL) {
        dp_link_t *l = dp->links;
        dp->links = l->next;
        link_free(l);
    }
    for (size_t b = 0; b < DP_ROUTE_BUCKETS; b++) {
        while (dp->routes[b] != NULL) {
            dp_route_t *r = dp->routes[b];
            dp->routes[b] = r->next;
            free(r);
        }
    }
    while (dp->held_head != NULL) {
        dp_held_t *h = dp->held_head;
        dp->held_head = h->next;
        held_free(h);
    }
    reach_free(dp->reach);
    mw_stage_destroy(dp->st);
    mw_model_destroy(dp->model);
    mw_config_fini(&dp->cfg);
    if (dp->wakefd >= 0)
        close(dp->wakefd);
    pthread_mutex_destroy(&dp->lock);
    pthread_cond_destroy(&dp->cond);
    free(dp);
}

void mw_dataplane_drain(mw_dataplane_t *dp)
{
    pthread_mutex_lock(&dp->lock);
    dp->draining = 1;
    pthread_mutex_unlock(&dp->lock);
    mw_dp_wake(dp);
}

void mw_dp_latency_add(mw_dataplane_t *dp, int64_t us)
{
    int64_t now = mw_now_ms();
    pthread_mutex_lock(&dp->lock);
    dp->latency[dp->latency_next] = (dp_latency_t){.at_ms = now, .us = us};
    dp->latency_next = (dp->latency_next + 1) % DP_LATENCY_MAX;
    if (dp->latency_count < DP_LATENCY_MAX)
        dp->latency_count++;
    pthread_mutex_unlock(&dp->lock);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

void mw_dataplane_latency(mw_dataplane_t *dp, int64_t *p50_us, int64_t *p99_us)
{
    int64_t *recent = malloc(DP_LATENCY_MAX * sizeof(*recent));
    int n = 0;
    int64_t since = mw_now_ms() - MW_DATAPLANE_LATENCY_WINDOW_MS;
    pthread_mutex_lock(&dp->lock);
    for (int i = 0; recent != NULL && i < dp->latency_count; i++)
        if (dp->latency[i].at_ms >= since)
            recent[n++] = dp->latency[i].us;
    pthread_mutex_unlock(&dp->lock);
    if (n > 1)
        qsort(recent, (size_t)n, sizeof(*recent), cmp_i64);
    /* nearest rank */
    *p50_us = n > 0 ? recent[(n * 50 + 99) / 100 - 1] : 0;
    *p99_us = n > 0 ? recent[(n * 99 + 99) / 100 - 1] : 0;
    free(recent);
}

void mw_dataplane_stats(mw_dataplane_t *dp, mw_dataplane_stats_t *stats)
{
    pthread_mutex_lock(&dp->lock);
    *stats = dp->stats;
    pthread_mutex_unlock(&dp->lock);
}

int mw_dataplane_error(mw_dataplane_t *dp, char *errstr, size_t errstr_size)
{
    pthread_mutex_lock(&dp->lock);
    int rc = dp->fatal;
    if (rc != 0)
        mw_errf(rc, errstr, errstr_size, "%s", dp->fatal_errstr);
    pthread_mutex_unlock(&dp->lock);
    return rc;
}
