/* CUDA IPC backend of worlds (built with the CUDA runtime): point-to-point
 * tensors in device memory between members on the same GPU of one host, which
 * NCCL refuses ("Duplicate GPU detected"). The sender copies the tensor into
 * a buffer of its pool (device memory exported once with cudaIpcGetMemHandle)
 * and sends a small TENSOR frame over the link naming that buffer; the
 * receiver opens the handle once (imports are cached), copies into the
 * caller's device buffer and hands the buffer back with an empty COLL frame,
 * numbered per direction; the sender reuses the buffer after that. Headers,
 * keepalives, the secret and failure detection are the link's, so a dead or
 * hung peer breaks the world as for tcp, within world.timeout_ms; abort fails
 * what is in flight, destroy frees the pool and closes the imports. Frames
 * carry host structs: both members are on one host by construction.
 * Collectives are refused (MW_EINVAL): pipeline edges use none. */
#include "world_int.h"

#include "err.h"

#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IPC_MAGIC   0x4d574950u /* "MWIP" */
#define POOL_MAX    64          /* tensors in flight per world */
#define IMPORTS_MAX 64          /* peer buffers kept open */

/* What a TENSOR frame of this backend carries. */
struct ipc_msg {
    uint32_t magic;
    uint32_t slot;
    uint64_t id; /* the exporter's buffer, one id per allocation */
    uint64_t nbytes;
    mw_tensor_desc_t desc;
    cudaIpcMemHandle_t handle;
};

/* A pool buffer, and the acknowledgement that gives it back. */
struct slot {
    void *dev;
    uint64_t cap, id;
    cudaIpcMemHandle_t handle;
    int busy;            /* under ipc_world.lock */
    int armed;           /* progress thread: the ack is posted */
    mw_world_req_t *ack; /* a request of the backend's own: one COLL receive */
};

struct import {
    uint64_t id;
    void *ptr;
};

struct pending {
    struct pending *next;
    mw_world_req_t *req;
};

struct ipc_world {
    cudaStream_t stream;
    pthread_mutex_t lock; /* slots' busy flags and the pool's growth: API threads vs poll */
    struct slot slots[POOL_MAX];
    int nslots;
    uint64_t next_id;
    /* progress thread only */
    uint32_t acks_expected, acks_sent;
    struct pending *recvs, *recvs_tail; /* receives waiting for their frame, in order */
    struct import imports[IMPORTS_MAX];
    int nimports, next_evict;
    int busy; /* what this world adds to ctx->backend_busy */
};

#define IB(w) ((struct ipc_world *)(w)->be)

static int cuda_fail(cudaError_t e, const char *what, char *errstr, size_t errstr_size)
{
    return mw_errf(MW_EIO, errstr, errstr_size, "%s: %s", what, cudaGetErrorString(e));
}

static int ipc_create(mw_world_t *w, char *errstr, size_t errstr_size)
{
    struct ipc_world *iw = calloc(1, sizeof(*iw));
    int prev = 0;
    cudaError_t e;
    if (iw == NULL)
        return mw_errf(MW_ENOMEM, errstr, errstr_size, "out of memory");
    cudaGetDevice(&prev); /* the caller's thread: leave its device as it was */
    if ((e = cudaSetDevice(w->device)) != cudaSuccess ||
        (e = cudaStreamCreateWithFlags(&iw->stream, cudaStreamNonBlocking)) != cudaSuccess) {
        cudaSetDevice(prev);
        free(iw);
        return cuda_fail(e, "CUDA IPC world setup", errstr, errstr_size);
    }
    cudaSetDevice(prev);
    pthread_mutex_init(&iw->lock, NULL);
    w->be = iw;
    return MW_OK;
}

/* API thread: a free pool buffer of at least nbytes (grown or added when
 * needed), marked busy; its index, or a negative MW_E*. */
static int slot_take(mw_world_t *w, uint64_t nbytes)
{
    struct ipc_world *iw = IB(w);
    int pick = -1, rc = MW_OK;
    pthread_mutex_lock(&iw->lock);
    for (int i = 0; i < iw->nslots && pick < 0; i++)
        if (!iw->slots[i].busy && iw->slots[i].cap >= nbytes)
            pick = i;
    for (int i = 0; i < iw->nslots && pick < 0; i++)
        if (!iw->slots[i].busy)
            pick = i;
    if (pick < 0 && iw->nslots < POOL_MAX)
        pick = iw->nslots++;
    if (pick < 0) {
        pthread_mutex_unlock(&iw->lock);
        return MW_ETOOBIG; /* POOL_MAX tensors in flight */
    }
    struct slot *s = &iw->slots[pick];
    s->busy = 1;
    if (s->ack == NULL &&
        ((s->ack = calloc(1, sizeof(*s->ack))) == NULL || mw_world_req_ops(s->ack, 1) != MW_OK))
        rc = MW_ENOMEM;
    if (rc == MW_OK && s->cap < nbytes) {
        /* the old allocation's id is never named again: the peer's import of it
         * is closed when evicted or at destroy */
        cudaFree(s->dev);
        s->dev = NULL;
        s->cap = 0;
        if (cudaMalloc(&s->dev, nbytes) != cudaSuccess ||
            cudaIpcGetMemHandle(&s->handle, s->dev) != cudaSuccess)
            rc = MW_EIO;
        else {
            s->cap = nbytes;
            s->id = ++iw->next_id;
        }
    }
    if (rc != MW_OK)
        s->busy = 0;
    pthread_mutex_unlock(&iw->lock);
    return rc == MW_OK ? pick : rc;
}

static void slot_give_back(struct ipc_world *iw, int i)
{
    pthread_mutex_lock(&iw->lock);
    iw->slots[i].busy = 0;
    pthread_mutex_unlock(&iw->lock);
}

static int prepare_send(mw_world_t *w, mw_world_req_t *req)
{
    struct ipc_world *iw = IB(w);
    int prev = 0;
    cudaGetDevice(&prev); /* the caller's thread: leave its device as it was */
    cudaSetDevice(w->device);
    int i = slot_take(w, req->nbytes);
    if (i < 0) {
        cudaSetDevice(prev);
        return i;
    }
    struct slot *s = &iw->slots[i];
    struct ipc_msg *m = calloc(1, sizeof(*m));
    int rc = m != NULL ? mw_world_req_ops(req, 1) : MW_ENOMEM;
    if (rc == MW_OK && req->nbytes > 0 &&
        (cudaMemcpyAsync(s->dev, req->buf, req->nbytes, cudaMemcpyDeviceToDevice, iw->stream) !=
             cudaSuccess ||
         cudaStreamSynchronize(iw->stream) != cudaSuccess))
        rc = MW_EIO;
    cudaSetDevice(prev);
    if (rc != MW_OK) {
        free(m);
        slot_give_back(iw, i);
        return rc;
    }
    *m = (struct ipc_msg){.magic = IPC_MAGIC,
                          .slot = (uint32_t)i,
                          .id = s->id,
                          .nbytes = req->nbytes,
                          .desc = req->desc,
                          .handle = s->handle};
    req->scratch = (uint8_t *)m; /* freed with the request */
    mw_tensor_desc_t d = {.dtype = MW_DTYPE_U8, .ndim = 1, .shape = {(int64_t)sizeof(*m)}};
    uint8_t meta[MW_FRAME_TENSOR_META];
    int mlen = mw_frame_tensor_meta_encode(&d, meta);
    mw_link_op_send(&req->ops[0], req->peer, MW_FRAME_TENSOR, meta, (size_t)mlen, m, sizeof(*m));
    return MW_OK;
}

/* ops[0] receives the frame; ops[1] is completed by poll once the copy is done. */
static int prepare_recv(mw_world_req_t *req)
{
    struct ipc_msg *m = calloc(1, sizeof(*m));
    int rc = m != NULL ? mw_world_req_ops(req, 2) : MW_ENOMEM;
    if (rc != MW_OK) {
        free(m);
        return rc;
    }
    req->scratch = (uint8_t *)m;
    mw_link_op_recv(&req->ops[0], req->peer, MW_FRAME_TENSOR, m, sizeof(*m));
    return MW_OK;
}

static int ipc_prepare(mw_world_t *w, mw_world_req_t *req)
{
    switch (req->kind) {
    case REQ_SEND:
        return prepare_send(w, req);
    case REQ_RECV:
        return prepare_recv(req);
    default:
        return MW_EINVAL; /* collectives: use tcp or nccl worlds */
    }
}

static void busy_add(mw_world_t *w, int n)
{
    IB(w)->busy += n;
    w->ctx->backend_busy += n;
}

static int ipc_post(mw_world_t *w, mw_world_req_t *req, char *errstr, size_t errstr_size)
{
    struct ipc_world *iw = IB(w);
    mw_link_t *l = w->links[req->peer];
    if (req->kind == REQ_SEND) {
        /* the buffer comes back with the peer's next acknowledgement */
        struct slot *s = &iw->slots[((struct ipc_msg *)req->scratch)->slot];
        mw_op_t *ack = &s->ack->ops[0];
        memset(ack, 0, sizeof(*ack));
        ack->req = s->ack;
        ack->hdr = ack->hdr_inline;
        mw_link_op_recv(ack, req->peer, MW_FRAME_COLL, NULL, 0);
        ack->coll_seq = iw->acks_expected++;
        ack->coll_kind = MW_COLL_BARRIER;
        s->ack->w = w;
        s->ack->pending_ops = 1;
        s->ack->status = MW_EAGAIN;
        s->armed = 1;
        busy_add(w, 1);
        mw_link_post(l, ack);
        mw_link_post(l, &req->ops[0]);
        return MW_OK;
    }
    struct pending *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return mw_errf(MW_ENOMEM, errstr, errstr_size, "out of memory");
    p->req = req;
    if (iw->recvs == NULL)
        iw->recvs = p;
    else
        iw->recvs_tail->next = p;
    iw->recvs_tail = p;
    busy_add(w, 1);
    mw_link_post(l, &req->ops[0]);
    return MW_OK;
}

/* The peer's buffer id, opened once. */
static void *import_open(mw_world_t *w, const struct ipc_msg *m, char *errstr, size_t errstr_size)
{
    struct ipc_world *iw = IB(w);
    for (int i = 0; i < iw->nimports; i++)
        if (iw->imports[i].id == m->id)
            return iw->imports[i].ptr;
    void *ptr = NULL;
    cudaError_t e = cudaIpcOpenMemHandle(&ptr, m->handle, cudaIpcMemLazyEnablePeerAccess);
    if (e != cudaSuccess) {
        mw_errf(MW_EIO, errstr, errstr_size,
                "cudaIpcOpenMemHandle: %s (is the peer on this host and GPU?)",
                cudaGetErrorString(e));
        return NULL;
    }
    int i = iw->nimports < IMPORTS_MAX ? iw->nimports++ : iw->next_evict++ % IMPORTS_MAX;
    if (iw->imports[i].ptr != NULL)
        cudaIpcCloseMemHandle(iw->imports[i].ptr);
    iw->imports[i] = (struct import){.id = m->id, .ptr = ptr};
    return ptr;
}

/* The oldest receive whose frame has arrived: copy out of the peer's buffer,
 * hand the buffer back, complete. 1 when one was finished, 0 when none is
 * ready, or an error that breaks the world. */
static int finish_recv(mw_world_t *w, char *errstr, size_t errstr_size)
{
    struct ipc_world *iw = IB(w);
    struct pending *p = iw->recvs;
    if (p == NULL)
        return 0;
    mw_world_req_t *req = p->req;
    pthread_mutex_lock(&w->lock);
    int waiting = req->pending_ops > 1, failed = req->status != MW_EAGAIN;
    pthread_mutex_unlock(&w->lock);
    if (waiting && !failed)
        return 0;
    iw->recvs = p->next;
    if (iw->recvs == NULL)
        iw->recvs_tail = NULL;
    free(p);
    busy_add(w, -1);
    int rc = MW_OK;
    const struct ipc_msg *m = (const struct ipc_msg *)req->scratch;
    if (failed) {
        rc = req->status;
    } else if (req->bytes != sizeof(*m) || m->magic != IPC_MAGIC) {
        rc = mw_errf(MW_EPROTO, errstr, errstr_size,
                     "rank %d sent a tensor frame that is not a CUDA IPC message", req->peer);
    } else if (m->nbytes > req->nbytes) {
        rc = mw_errf(MW_ETOOBIG, errstr, errstr_size,
                     "tensor of %llu bytes from rank %d exceeds the receive buffer of %llu bytes",
                     (unsigned long long)m->nbytes, req->peer, (unsigned long long)req->nbytes);
    } else if (m->nbytes > 0) { /* an empty tensor names no buffer */
        void *src = import_open(w, m, errstr, errstr_size);
        cudaError_t e = cudaSuccess;
        if (src == NULL)
            rc = MW_EIO;
        else if ((e = cudaMemcpyAsync(req->buf, src, m->nbytes, cudaMemcpyDeviceToDevice,
                                      iw->stream)) != cudaSuccess ||
                 (e = cudaStreamSynchronize(iw->stream)) != cudaSuccess)
            rc = cuda_fail(e, "copy from the peer's buffer", errstr, errstr_size);
    }
    if (rc == MW_OK) {
        req->desc = m->desc;
        __atomic_store_n(&req->bytes, m->nbytes, __ATOMIC_RELAXED);
        mw_frame_coll_t c = {.seq = iw->acks_sent++,
                             .kind = MW_COLL_BARRIER,
                             .desc = {.dtype = MW_DTYPE_U8, .ndim = 0}};
        uint8_t meta[8 + MW_FRAME_TENSOR_META];
        int mlen = mw_frame_coll_meta_encode(&c, meta);
        mw_link_send_control(w->links[req->peer], MW_FRAME_COLL, meta, (size_t)mlen);
    }
    mw_world_op_done(w, &req->ops[1], rc);
    return rc == MW_OK ? 1 : rc;
}

static int ipc_poll(mw_world_t *w, int64_t now, char *errstr, size_t errstr_size)
{
    (void)now; /* the link's watchdog bounds every wait */
    struct ipc_world *iw = IB(w);
    int rc;
    cudaSetDevice(w->device);
    while ((rc = finish_recv(w, errstr, errstr_size)) == 1)
        ;
    if (rc < 0)
        return rc;
    for (int i = 0; i < iw->nslots; i++) {
        struct slot *s = &iw->slots[i];
        if (!s->armed)
            continue;
        pthread_mutex_lock(&w->lock);
        int done = s->ack->pending_ops == 0, status = s->ack->status;
        pthread_mutex_unlock(&w->lock);
        if (!done)
            continue;
        s->armed = 0;
        busy_add(w, -1);
        if (status != MW_OK && status != MW_EAGAIN)
            return mw_errf(status, errstr, errstr_size, "acknowledgement of a CUDA IPC buffer: %s",
                           mw_strerror(status));
        slot_give_back(iw, i);
    }
    return MW_OK;
}

static void ipc_abort(mw_world_t *w)
{
    struct ipc_world *iw = IB(w);
    if (iw == NULL)
        return;
    while (iw->recvs != NULL) {
        struct pending *p = iw->recvs;
        iw->recvs = p->next;
        mw_world_op_done(w, &p->req->ops[1], w->err ? w->err : MW_EBROKEN);
        free(p);
    }
    iw->recvs_tail = NULL;
    for (int i = 0; i < iw->nslots; i++)
        iw->slots[i].armed = 0; /* the link fails the posted acknowledgements */
    w->ctx->backend_busy -= iw->busy;
    iw->busy = 0;
}

static void ipc_destroy(mw_world_t *w)
{
    struct ipc_world *iw = IB(w);
    if (iw == NULL)
        return;
    cudaSetDevice(w->device);
    for (int i = 0; i < iw->nimports; i++)
        cudaIpcCloseMemHandle(iw->imports[i].ptr);
    for (int i = 0; i < iw->nslots; i++) {
        cudaFree(iw->slots[i].dev);
        if (iw->slots[i].ack != NULL)
            free(iw->slots[i].ack->ops);
        free(iw->slots[i].ack);
    }
    cudaStreamDestroy(iw->stream);
    pthread_mutex_destroy(&iw->lock);
    free(iw);
    w->be = NULL;
}

const mw_world_backend_ops_t mw_world_cuda_ipc_ops = {
    .name = "cuda-ipc",
    .create = ipc_create,
    .poll = ipc_poll,
    .prepare = ipc_prepare,
    .post = ipc_post,
    .abort = ipc_abort,
    .destroy = ipc_destroy,
};
