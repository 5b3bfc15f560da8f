/* Worlds: small independent communicators (MultiWorld, DESIGN §4). A process
 * holds one mw_worlds_t context and any number of worlds in it; an error, hang
 * or abort in one world never blocks or breaks another.
 *
 * Threads. The context owns one progress thread (epoll; every socket is
 * non-blocking, so a slow or dead peer never holds it) and one rendezvous
 * thread (its own Redis connection). Every function below may be called from
 * any thread except where noted; a world and its requests may be used from
 * several threads at once. Event callbacks run on the progress thread.
 *
 * Ordering. Between two members, HEADER frames are delivered in the order
 * they were sent, and so are tensors; receives of each kind are matched to
 * incoming frames in the order they were posted. A tensor frame waits in the
 * socket until its receive is posted (payload bytes land directly in the
 * receive's buffer), holding the frames behind it. Header frames that arrive
 * before their receive are buffered. Collectives must be called in the same
 * order by every member.
 *
 * Failure. A world is JOINING, READY, BROKEN or CLOSED. A peer's socket
 * closing or resetting breaks it at once; a send that makes no progress for
 * world.timeout_ms, or a peer silent (no data, no keepalive) for
 * world.timeout_ms, breaks it (watchdog); a malformed or oversized frame
 * breaks it. A broken world fails every pending and later operation with
 * MW_EBROKEN and an error string naming the world and the cause, and reports
 * the change to its owner (callback and event queue). Worlds are never
 * repaired: join a new epoch. mw_world_destroy leaves in order (a BYE frame
 * after the last one): the peers' operations with the departed member fail
 * with MW_ECLOSED, and a world whose other members all left becomes CLOSED. */
#ifndef MW_WORLD_H
#define MW_WORLD_H

#include "config.h"
#include "model/tensor.h"

#include <stddef.h>
#include <stdint.h>

typedef struct mw_worlds mw_worlds_t;
typedef struct mw_world mw_world_t;
typedef struct mw_world_req mw_world_req_t;

typedef enum {
    MW_WORLD_JOINING = 0,
    MW_WORLD_READY = 1,
    MW_WORLD_BROKEN = 2,
    MW_WORLD_CLOSED = 3,
} mw_world_state_t;

typedef enum {
    MW_REDUCE_SUM = 0,
    MW_REDUCE_MAX = 1,
} mw_reduce_op_t;

#define MW_WORLD_NAME_MAX   200
#define MW_WORLD_HEADER_MAX 4096 /* bytes in one header frame */
#define MW_WORLD_SIZE_MAX   256

/* A state change of a world, delivered to its callback and the event queue. */
typedef struct mw_world_event {
    mw_world_t *world; /* borrowed: valid until mw_world_destroy */
    char name[MW_WORLD_NAME_MAX + 1];
    int64_t epoch;
    mw_world_state_t state; /* READY or BROKEN (JOINING failures are BROKEN too) */
    int err;                /* 0, MW_EBROKEN, MW_ETIMEDOUT (join deadline), MW_EABORTED ... */
    char errstr[512];
    void *user;
} mw_world_event_t;

/* Runs on the progress thread with no lock held: it must not block. It may
 * read world state, post non-blocking operations and call mw_world_abort; it
 * must not wait on requests or destroy worlds. */
typedef void (*mw_world_event_fn)(const mw_world_event_t *ev, void *user);

typedef struct mw_world_opts {
    const char *name;           /* world name, 1..MW_WORLD_NAME_MAX bytes of [A-Za-z0-9._:-] */
    int64_t epoch;              /* with name, identifies one incarnation of the world */
    int size;                   /* members, 1..MW_WORLD_SIZE_MAX */
    int rank;                   /* 0..size-1; rank 0 publishes the rendezvous record */
    const char *backend;        /* "tcp" (NULL too), "nccl" or "cuda-ipc" (DESIGN §4) */
    int64_t timeout_ms;         /* the join must complete within this; <= 0: world.timeout_ms */
    mw_world_event_fn on_event; /* optional */
    void *user;                 /* passed to on_event and in events */
    int device;                 /* CUDA device for the nccl and cuda-ipc backends */
} mw_world_opts_t;

#define MW_WORLD_HOST_MAX 255

/* What a context needs from its application (mw_world_options_from_config
 * fills it from the world.* keys). */
typedef struct mw_world_options {
    int64_t timeout_ms;        /* failure-detection bound: watchdog, join deadline, HELLO */
    int64_t keepalive_ms;      /* ping interval on idle links (at most timeout_ms / 3) */
    uint64_t max_tensor_bytes; /* largest tensor sent or accepted */
    int socket_buffer_bytes;   /* send and receive buffers of links (0: the kernel's) */
    char listen_host[MW_WORLD_HOST_MAX + 1];    /* numeric IP address to listen on */
    int listen_port;                            /* 0: any */
    char advertise_host[MW_WORLD_HOST_MAX + 1]; /* for peers ("": the listen host) */
    const mw_config_t *redis; /* the rendezvous's Redis: redis.* and cluster.name */
} mw_world_options_t;

/* The world.* keys of cfg as options; opts->redis points at cfg. */
void mw_world_options_from_config(const mw_config_t *cfg, mw_world_options_t *opts);

/* Creates a context and starts its threads; opts (and opts->redis) are
 * copied. Caller frees with mw_worlds_destroy. */
mw_worlds_t *mw_worlds_new(const mw_world_options_t *opts, char *errstr, size_t errstr_size);

/* Destroys every world still open (as mw_world_destroy), stops the threads,
 * frees the context. Accepts NULL. Not from an event callback. */
void mw_worlds_destroy(mw_worlds_t *ctx);

/* The listen address ("host:port") that peers connect to. */
const char *mw_worlds_address(const mw_worlds_t *ctx);

/* A descriptor (an eventfd) that becomes readable when an operation of any
 * world of ctx completes or fails, or a world changes state: a caller serving
 * many requests poll()s on it, with its other descriptors, instead of
 * spinning on mw_world_test. Owned by ctx. Call mw_worlds_done_clear before
 * testing the requests, so that no completion goes unnoticed. */
int mw_worlds_done_fd(const mw_worlds_t *ctx);
void mw_worlds_done_clear(mw_worlds_t *ctx);

/* Takes the oldest queued state-change event into *ev, waiting up to
 * timeout_ms (0: don't wait, < 0: forever). Returns 0 or MW_EAGAIN. The queue
 * keeps the latest 1024 events; older ones are dropped with a warning. */
int mw_worlds_next_event(mw_worlds_t *ctx, mw_world_event_t *ev, int64_t timeout_ms);

/* Starts joining a world; returns at once with *out in state JOINING (or an
 * error for invalid options). The join completes in the background: READY, or
 * BROKEN with MW_ETIMEDOUT and an error naming the world and the missing
 * ranks when opts->timeout_ms passes. The caller owns *out and frees it with
 * mw_world_destroy. Operations may be posted while joining; they start when
 * the world is ready. */
int mw_world_join(mw_worlds_t *ctx, const mw_world_opts_t *opts, mw_world_t **out, char *errstr,
                  size_t errstr_size);

/* Waits until the world leaves JOINING or timeout_ms passes (< 0: forever).
 * Returns 0 when READY, MW_ETIMEDOUT, or the world's error (with errstr). */
int mw_world_wait_ready(mw_world_t *w, int64_t timeout_ms, char *errstr, size_t errstr_size);

/* Current state; the last error (0 when none) with its text copied to errstr. */
mw_world_state_t mw_world_state(mw_world_t *w);
int mw_world_error(mw_world_t *w, char *errstr, size_t errstr_size);
const char *mw_world_state_name(mw_world_state_t state);

const char *mw_world_name(const mw_world_t *w);
int64_t mw_world_epoch(const mw_world_t *w);
int mw_world_rank(const mw_world_t *w);
int mw_world_size(const mw_world_t *w);

/* Breaks the world now (state BROKEN, MW_EABORTED, cause "aborted: reason"):
 * pending operations fail, sockets close, peers see the world break. */
void mw_world_abort(mw_world_t *w, const char *reason);

/* Aborts the world if it is still open, closes its sockets (they are closed
 * when this returns) and releases the caller's handle. Requests still held
 * stay valid until freed; pending ones fail with MW_ECLOSED. Accepts NULL. */
void mw_world_destroy(mw_world_t *w);

/* --- non-blocking operations ------------------------------------------------
 * Each posts an operation and returns a request in *req that the caller frees
 * with mw_world_req_free. Buffers are borrowed until the request completes.
 * Errors in arguments are returned at once (MW_EINVAL, MW_ETOOBIG); a broken
 * world completes the request with MW_EBROKEN. Host memory for TCP, device
 * memory for NCCL. */

/* Sends a tensor (desc and buf are read until completion) to rank peer. */
int mw_world_isend(mw_world_t *w, int peer, const mw_tensor_desc_t *desc, const void *buf,
                   mw_world_req_t **req);

/* Receives the next tensor from peer into buf (capacity bytes); its
 * description is available from mw_world_req_desc. A larger tensor fails the
 * request with MW_ETOOBIG and breaks the world (the stream cannot continue). */
int mw_world_irecv(mw_world_t *w, int peer, void *buf, size_t capacity, mw_world_req_t **req);

/* Sends up to MW_WORLD_HEADER_MAX opaque bytes (copied at once). */
int mw_world_isend_header(mw_world_t *w, int peer, const void *data, size_t len,
                          mw_world_req_t **req);

/* Receives the next header frame from peer into buf; its length is
 * mw_world_req_bytes. A frame longer than capacity fails with MW_ETOOBIG
 * (the frame is dropped, the world stays usable). */
int mw_world_irecv_header(mw_world_t *w, int peer, void *buf, size_t capacity,
                          mw_world_req_t **req);

/* Broadcasts root's buf (desc on every member) to every member. */
int mw_world_ibroadcast(mw_world_t *w, int root, const mw_tensor_desc_t *desc, void *buf,
                        mw_world_req_t **req);

/* In-place all-reduce of an f32 tensor. Every member gets bit-identical
 * results (reduction in rank order). */
int mw_world_iall_reduce(mw_world_t *w, mw_reduce_op_t op, const mw_tensor_desc_t *desc, void *buf,
                         mw_world_req_t **req);

int mw_world_ibarrier(mw_world_t *w, mw_world_req_t **req);

/* MW_EAGAIN while pending, else the request's result (0 or an error). */
int mw_world_test(mw_world_req_t *req);

/* Waits up to timeout_ms (< 0: until completion; the watchdog bounds it) and
 * returns as mw_world_test (MW_EAGAIN -> MW_ETIMEDOUT; the request stays
 * pending). errstr gets the error text, naming the world and cause. */
int mw_world_wait(mw_world_req_t *req, int64_t timeout_ms, char *errstr, size_t errstr_size);

/* Bytes transferred (received length for receives); the received tensor's
 * description. Valid after completion. */
uint64_t mw_world_req_bytes(mw_world_req_t *req);
const mw_tensor_desc_t *mw_world_req_desc(mw_world_req_t *req);

/* Frees a request. Freeing one that is still pending aborts its world (its
 * buffer may be in use mid-transfer). Accepts NULL. */
void mw_world_req_free(mw_world_req_t *req);

/* --- blocking forms ----------------------------------------------------------
 * Post, wait up to timeout_ms (< 0: no caller deadline), free. When the
 * caller's deadline passes first, the world is aborted (the operation cannot
 * be withdrawn from the stream) and MW_ETIMEDOUT returned. */
int mw_world_send(mw_world_t *w, int peer, const mw_tensor_desc_t *desc, const void *buf,
                  int64_t timeout_ms, char *errstr, size_t errstr_size);
int mw_world_recv(mw_world_t *w, int peer, void *buf, size_t capacity, mw_tensor_desc_t *desc,
                  int64_t timeout_ms, char *errstr, size_t errstr_size);
int mw_world_send_header(mw_world_t *w, int peer, const void *data, size_t len, int64_t timeout_ms,
                         char *errstr, size_t errstr_size);
/* *len receives the frame's length. */
int mw_world_recv_header(mw_world_t *w, int peer, void *buf, size_t capacity, size_t *len,
                         int64_t timeout_ms, char *errstr, size_t errstr_size);
int mw_world_broadcast(mw_world_t *w, int root, const mw_tensor_desc_t *desc, void *buf,
                       int64_t timeout_ms, char *errstr, size_t errstr_size);
int mw_world_all_reduce(mw_world_t *w, mw_reduce_op_t op, const mw_tensor_desc_t *desc, void *buf,
                        int64_t timeout_ms, char *errstr, size_t errstr_size);
int mw_world_barrier(mw_world_t *w, int64_t timeout_ms, char *errstr, size_t errstr_size);

/* Counters of a world (for stats and tests). */
typedef struct mw_world_stats {
    uint64_t bytes_sent, bytes_received;
    uint64_t frames_sent, frames_received;
    uint64_t pings_sent;
} mw_world_stats_t;
void mw_world_stats(mw_world_t *w, mw_world_stats_t *stats);

#endif
