/* NCCL backend of worlds (built when CUDA and NCCL are found): tensors and
 * collectives on a non-blocking NCCL communicator with one CUDA stream per
 * world. The ncclUniqueId travels in the Redis rendezvous record; links,
 * header frames, keepalives and the secret are the link layer's (link.c).
 * Nothing here blocks the progress thread: communicator init and enqueues are
 * polled with ncclCommGetAsyncError, completions with cudaEventQuery, and a
 * failure or a stuck operation ends in ncclCommAbort. */
#include "clock.h"
#include "world_int.h"

#include "err.h"
#include "log.h"

#include <cuda_runtime.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct nreq {
    struct nreq *next;
    mw_world_req_t *req;
    cudaEvent_t ev;
    int64_t posted_ms;
};

struct nccl_world {
    ncclComm_t comm;
    cudaStream_t stream;
    float *scratch; /* device float for barriers */
    int comm_ready;
    struct nreq *waiting, *waiting_tail; /* not yet enqueued */
    struct nreq *issuing;                /* enqueue returned ncclInProgress */
    struct nreq *inflight, *inflight_tail;
};

#define NB(w) ((struct nccl_world *)(w)->be)

static int cuda_err(cudaError_t e, const char *what, char *errstr, size_t errstr_size)
{
    return mw_errf(MW_EIO, errstr, errstr_size, "%s: %s", what, cudaGetErrorString(e));
}

static int nccl_err(struct nccl_world *nw, ncclResult_t r, const char *what, char *errstr,
                    size_t errstr_size)
{
    const char *last = nw != NULL && nw->comm != NULL ? ncclGetLastError(nw->comm) : "";
    return mw_errf(MW_EBROKEN, errstr, errstr_size, "%s: %s%s%s", what, ncclGetErrorString(r),
                   last && *last ? ": " : "", last ? last : "");
}

static int nccl_create(mw_world_t *w, char *errstr, size_t errstr_size)
{
    struct nccl_world *nw = calloc(1, sizeof(*nw));
    cudaError_t e;
    int prev = 0;
    if (nw == NULL)
        return mw_errf(MW_ENOMEM, errstr, errstr_size, "out of memory");
    cudaGetDevice(&prev); /* this is the caller's thread: leave its device as it was */
    if ((e = cudaSetDevice(w->device)) != cudaSuccess ||
        (e = cudaStreamCreateWithFlags(&nw->stream, cudaStreamNonBlocking)) != cudaSuccess ||
        (e = cudaMalloc((void **)&nw->scratch, sizeof(float))) != cudaSuccess) {
        if (nw->stream != NULL)
            cudaStreamDestroy(nw->stream);
        free(nw);
        cudaSetDevice(prev);
        return cuda_err(e, "NCCL world setup", errstr, errstr_size);
    }
    cudaSetDevice(prev);
    w->be = nw;
    return MW_OK;
}

static int nccl_rendezvous_data(mw_world_t *w, uint8_t *out, size_t cap, size_t *len, char *errstr,
                                size_t errstr_size)
{
    ncclUniqueId id;
    cudaSetDevice(w->device);
    ncclResult_t r = ncclGetUniqueId(&id);
    if (r != ncclSuccess)
        return nccl_err(NULL, r, "ncclGetUniqueId", errstr, errstr_size);
    if (sizeof(id) > cap)
        return mw_errf(MW_ETOOBIG, errstr, errstr_size, "ncclUniqueId too large");
    memcpy(out, &id, sizeof(id));
    *len = sizeof(id);
    return MW_OK;
}

static int nccl_start(mw_world_t *w, const uint8_t *data, size_t len, char *errstr,
                      size_t errstr_size)
{
    struct nccl_world *nw = NB(w);
    ncclUniqueId id;
    if (w->size == 1 && len == 0) { /* no rendezvous for a world of one */
        if (nccl_rendezvous_data(w, (uint8_t *)&id, sizeof(id), &len, errstr, errstr_size) != 0)
            return MW_EIO;
        data = (const uint8_t *)&id;
    }
    if (len != sizeof(id))
        return mw_errf(MW_EPROTO, errstr, errstr_size,
                       "rendezvous record has no NCCL unique id (%zu bytes)", len);
    memcpy(&id, data, sizeof(id));
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0; /* so that ncclCommAbort is always safe */
    cudaSetDevice(w->device);
    ncclResult_t r = ncclCommInitRankConfig(&nw->comm, w->size, id, w->rank, &config);
    if (r != ncclSuccess && r != ncclInProgress)
        return nccl_err(nw, r, "ncclCommInitRankConfig", errstr, errstr_size);
    return MW_OK;
}

/* Issues one request on the stream; ncclInProgress leaves it in nw->issuing. */
static int issue(mw_world_t *w, struct nreq *n, char *errstr, size_t errstr_size)
{
    struct nccl_world *nw = NB(w);
    mw_world_req_t *req = n->req;
    ncclResult_t r;
    switch (req->kind) {
    case REQ_SEND:
        r = ncclSend(req->buf, req->nbytes, ncclUint8, req->peer, nw->comm, nw->stream);
        break;
    case REQ_RECV:
        /* NCCL needs the exact size: capacity must equal the sent tensor's bytes */
        r = ncclRecv(req->buf, req->nbytes, ncclUint8, req->peer, nw->comm, nw->stream);
        req->bytes = req->nbytes;
        req->desc =
            (mw_tensor_desc_t){.dtype = MW_DTYPE_U8, .ndim = 1, .shape = {(int64_t)req->nbytes}};
        break;
    case REQ_BROADCAST:
        r = ncclBroadcast(req->buf, req->buf, req->nbytes, ncclUint8, req->root, nw->comm,
                          nw->stream);
        break;
    case REQ_ALL_REDUCE:
        r = ncclAllReduce(req->buf, req->buf, req->nbytes / sizeof(float), ncclFloat32,
                          req->redop == MW_REDUCE_SUM ? ncclSum : ncclMax, nw->comm, nw->stream);
        break;
    default: /* barrier */
        r = ncclAllReduce(nw->scratch, nw->scratch, 1, ncclFloat32, ncclSum, nw->comm, nw->stream);
        break;
    }
    if (r == ncclInProgress) {
        nw->issuing = n;
        return MW_OK;
    }
    if (r != ncclSuccess)
        return nccl_err(nw, r, "enqueue", errstr, errstr_size);
    cudaError_t e = cudaEventRecord(n->ev, nw->stream);
    if (e != cudaSuccess)
        return cuda_err(e, "cudaEventRecord", errstr, errstr_size);
    n->next = NULL;
    if (nw->inflight == NULL)
        nw->inflight = n;
    else
        nw->inflight_tail->next = n;
    nw->inflight_tail = n;
    return MW_OK;
}

/* One operation stands for the whole request: the stream completes it. */
static int nccl_prepare(mw_world_t *w, mw_world_req_t *req)
{
    return mw_world_req_ops(req, w->size == 1 ? 0 : 1);
}

static int nccl_post(mw_world_t *w, mw_world_req_t *req, char *errstr, size_t errstr_size)
{
    struct nccl_world *nw = NB(w);
    struct nreq *n = calloc(1, sizeof(*n));
    if (n == NULL)
        return mw_errf(MW_ENOMEM, errstr, errstr_size, "out of memory");
    cudaSetDevice(w->device);
    cudaError_t e = cudaEventCreateWithFlags(&n->ev, cudaEventDisableTiming);
    if (e != cudaSuccess) {
        free(n);
        return cuda_err(e, "cudaEventCreate", errstr, errstr_size);
    }
    n->req = req;
    n->posted_ms = mw_now_ms();
    w->ctx->backend_busy++;
    if (nw->issuing != NULL || nw->waiting != NULL) {
        if (nw->waiting == NULL)
            nw->waiting = n;
        else
            nw->waiting_tail->next = n;
        nw->waiting_tail = n;
        return MW_OK;
    }
    int rc = issue(w, n, errstr, errstr_size);
    if (rc != MW_OK) {
        /* the communicator is unusable now: the caller fails the request, the
         * next poll breaks the world */
        w->ctx->backend_busy--;
        cudaEventDestroy(n->ev);
        free(n);
    }
    return rc;
}

static void finish(mw_world_t *w, struct nreq *n, int rc)
{
    w->ctx->backend_busy--;
    cudaEventDestroy(n->ev);
    mw_world_op_done(w, &n->req->ops[0], rc);
    free(n);
}

static int nccl_poll(mw_world_t *w, int64_t now, char *errstr, size_t errstr_size)
{
    struct nccl_world *nw = NB(w);
    ncclResult_t st;
    if (nw->comm == NULL)
        return mw_errf(MW_EBROKEN, errstr, errstr_size, "NCCL communicator gone");
    cudaSetDevice(w->device);
    ncclResult_t r = ncclCommGetAsyncError(nw->comm, &st);
    if (r != ncclSuccess)
        return nccl_err(nw, r, "ncclCommGetAsyncError", errstr, errstr_size);
    if (st == ncclInProgress)
        return MW_EAGAIN; /* init or an enqueue still running in the background */
    if (st != ncclSuccess)
        return nccl_err(nw, st, "NCCL asynchronous error", errstr, errstr_size);
    if (!nw->comm_ready) {
        nw->comm_ready = 1;
        return MW_OK;
    }
    if (nw->issuing != NULL) { /* its enqueue has finished */
        struct nreq *n = nw->issuing;
        nw->issuing = NULL;
        cudaEventRecord(n->ev, nw->stream);
        n->next = NULL;
        if (nw->inflight == NULL)
            nw->inflight = n;
        else
            nw->inflight_tail->next = n;
        nw->inflight_tail = n;
    }
    while (nw->issuing == NULL && nw->waiting != NULL) {
        struct nreq *n = nw->waiting;
        nw->waiting = n->next;
        if (nw->waiting == NULL)
            nw->waiting_tail = NULL;
        n->posted_ms = now;
        int rc = issue(w, n, errstr, errstr_size);
        if (rc != MW_OK) {
            finish(w, n, rc);
            return rc;
        }
    }
    /* the stream completes in order: only the oldest can be late */
    while (nw->inflight != NULL) {
        struct nreq *n = nw->inflight;
        cudaError_t e = cudaEventQuery(n->ev);
        if (e == cudaErrorNotReady) {
            if (now - n->posted_ms > w->ctx->opts.timeout_ms)
                return mw_errf(MW_EBROKEN, errstr, errstr_size,
                               "NCCL operation made no progress for %lld ms (a peer is dead, "
                               "stopped or not taking part)",
                               (long long)(now - n->posted_ms));
            break;
        }
        nw->inflight = n->next;
        if (nw->inflight == NULL)
            nw->inflight_tail = NULL;
        else
            nw->inflight->posted_ms = now; /* its clock starts when it reaches the head */
        if (e != cudaSuccess) {
            finish(w, n, MW_EIO);
            return cuda_err(e, "NCCL operation", errstr, errstr_size);
        }
        finish(w, n, MW_OK);
    }
    return MW_OK;
}

static void fail_list(mw_world_t *w, struct nreq *n)
{
    while (n != NULL) {
        struct nreq *next = n->next;
        finish(w, n, w->err ? w->err : MW_EBROKEN);
        n = next;
    }
}

static void nccl_abort(mw_world_t *w)
{
    struct nccl_world *nw = NB(w);
    if (nw == NULL)
        return;
    cudaSetDevice(w->device);
    if (nw->comm != NULL) {
        ncclCommAbort(nw->comm); /* non-blocking communicator: returns */
        nw->comm = NULL;
    }
    if (nw->issuing != NULL) {
        nw->issuing->next = NULL;
        fail_list(w, nw->issuing);
        nw->issuing = NULL;
    }
    fail_list(w, nw->waiting);
    fail_list(w, nw->inflight);
    nw->waiting = nw->waiting_tail = nw->inflight = nw->inflight_tail = NULL;
}

static void nccl_destroy(mw_world_t *w)
{
    struct nccl_world *nw = NB(w);
    if (nw == NULL)
        return;
    cudaSetDevice(w->device);
    if (nw->comm != NULL)
        ncclCommAbort(nw->comm);
    cudaFree(nw->scratch);
    cudaStreamDestroy(nw->stream);
    free(nw);
    w->be = NULL;
}

const mw_world_backend_ops_t mw_world_nccl_ops = {
    .name = "nccl",
    .create = nccl_create,
    .rendezvous_data = nccl_rendezvous_data,
    .start = nccl_start,
    .poll = nccl_poll,
    .prepare = nccl_prepare,
    .post = nccl_post,
    .abort = nccl_abort,
    .destroy = nccl_destroy,
};
