/* TCP backend of worlds (always built): tensors and collectives as frames
 * over the world's links, in host memory. A collective is one COLL frame to
 * and/or from each peer, numbered so that members that disagree on the order
 * of their collectives break the world instead of mixing data; an all-reduce
 * gathers every peer's tensor and reduces in rank order, so every member gets
 * bit-identical results. */
#include "world_int.h"

#include "err.h"

#include <stdlib.h>

static uint32_t next_coll_seq(mw_world_t *w)
{
    pthread_mutex_lock(&w->lock);
    uint32_t seq = w->coll_seq++;
    pthread_mutex_unlock(&w->lock);
    return seq;
}

static void op_coll_send(mw_op_t *op, int peer, const mw_frame_coll_t *c, const void *buf,
                         uint64_t nbytes)
{
    uint8_t meta[8 + MW_FRAME_TENSOR_META];
    int mlen = mw_frame_coll_meta_encode(c, meta);
    mw_link_op_send(op, peer, MW_FRAME_COLL, meta, (size_t)mlen, buf, nbytes);
}

static void op_coll_recv(mw_op_t *op, int peer, const mw_frame_coll_t *c, void *buf,
                         uint64_t nbytes)
{
    mw_link_op_recv(op, peer, MW_FRAME_COLL, buf, nbytes);
    op->coll_seq = c->seq;
    op->coll_kind = c->kind;
    op->coll_expect = nbytes;
}

static int prepare_broadcast(mw_world_t *w, mw_world_req_t *req)
{
    int nops = w->size == 1 ? 0 : w->rank == req->root ? w->size - 1 : 1;
    int rc = mw_world_req_ops(req, nops);
    if (rc != MW_OK)
        return rc;
    mw_frame_coll_t c = {.seq = next_coll_seq(w), .kind = MW_COLL_BROADCAST, .desc = req->desc};
    if (nops == 0)
        return MW_OK;
    if (w->rank == req->root) {
        int i = 0;
        for (int p = 0; p < w->size; p++)
            if (p != req->root)
                op_coll_send(&req->ops[i++], p, &c, req->buf, req->nbytes);
    } else {
        op_coll_recv(&req->ops[0], req->root, &c, req->buf, req->nbytes);
    }
    return MW_OK;
}

/* An exchange with every peer: all-reduce (peers' tensors into scratch slots,
 * by peer order) and barrier (empty frames). */
static int prepare_exchange(mw_world_t *w, mw_world_req_t *req, mw_frame_coll_t *c)
{
    if (w->size == 1)
        return mw_world_req_ops(req, 0);
    if (req->kind == REQ_ALL_REDUCE &&
        (req->scratch = malloc((size_t)(w->size - 1) * req->nbytes)) == NULL)
        return MW_ENOMEM;
    int rc = mw_world_req_ops(req, 2 * (w->size - 1));
    if (rc != MW_OK)
        return rc;
    c->seq = next_coll_seq(w);
    int i = 0;
    for (int p = 0; p < w->size; p++) {
        if (p == w->rank)
            continue;
        int slot = p < w->rank ? p : p - 1;
        op_coll_send(&req->ops[i++], p, c, req->buf, req->nbytes);
        op_coll_recv(&req->ops[i++], p, c,
                     req->scratch != NULL ? req->scratch + (size_t)slot * req->nbytes : NULL,
                     req->nbytes);
    }
    return MW_OK;
}

static int tcp_prepare(mw_world_t *w, mw_world_req_t *req)
{
    int rc;
    switch (req->kind) {
    case REQ_SEND: {
        uint8_t meta[MW_FRAME_TENSOR_META];
        int mlen = mw_frame_tensor_meta_encode(&req->desc, meta);
        if ((rc = mw_world_req_ops(req, 1)) == MW_OK)
            mw_link_op_send(&req->ops[0], req->peer, MW_FRAME_TENSOR, meta, (size_t)mlen, req->buf,
                            req->nbytes);
        return rc;
    }
    case REQ_RECV:
        if ((rc = mw_world_req_ops(req, 1)) == MW_OK)
            mw_link_op_recv(&req->ops[0], req->peer, MW_FRAME_TENSOR, req->buf, req->nbytes);
        return rc;
    case REQ_BROADCAST:
        return prepare_broadcast(w, req);
    case REQ_ALL_REDUCE: {
        mw_frame_coll_t c = {
            .kind = MW_COLL_ALL_REDUCE, .redop = (uint8_t)req->redop, .desc = req->desc};
        return prepare_exchange(w, req, &c);
    }
    default: {
        mw_frame_coll_t c = {.kind = MW_COLL_BARRIER, .desc = {.dtype = MW_DTYPE_U8, .ndim = 0}};
        return prepare_exchange(w, req, &c);
    }
    }
}

static int tcp_post(mw_world_t *w, mw_world_req_t *req, char *errstr, size_t errstr_size)
{
    (void)errstr;
    (void)errstr_size;
    /* the owner may free req once its last frame completes: touch it no more then */
    mw_op_t *ops = req->ops;
    int nops = req->nops;
    for (int i = 0; i < nops; i++) {
        if (w->state == MW_WORLD_READY)
            mw_link_post(w->links[ops[i].peer], &ops[i]);
        else
            mw_world_op_done(w, &ops[i], w->err); /* the world broke while posting */
    }
    return MW_OK;
}

/* The rank-ordered reduction of a finished all-reduce: identical on every member. */
static void tcp_reduce(mw_world_req_t *req)
{
    mw_world_t *w = req->w;
    size_t n = (size_t)(req->nbytes / sizeof(float));
    float *out = req->buf;
    const float *src[MW_WORLD_SIZE_MAX] = {NULL};
    for (int p = 0; p < w->size; p++) {
        int slot = p < w->rank ? p : p - 1;
        /* scratch is malloc'd (aligned for float) and holds peers' f32 tensors. */
        /* cppcheck-suppress invalidPointerCast */
        src[p] = p == w->rank ? NULL : (const float *)(req->scratch + (size_t)slot * req->nbytes);
    }
    for (size_t i = 0; i < n; i++) {
        float acc = src[0] ? src[0][i] : out[i];
        for (int p = 1; p < w->size; p++) {
            float v = src[p] ? src[p][i] : out[i];
            if (req->redop == MW_REDUCE_SUM)
                acc = acc + v;
            else if (v > acc || acc != acc)
                acc = v;
        }
        out[i] = acc;
    }
}

const mw_world_backend_ops_t mw_world_tcp_ops = {
    .name = "tcp",
    .prepare = tcp_prepare,
    .post = tcp_post,
    .reduce = tcp_reduce,
};
