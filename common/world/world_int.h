/* Worlds, internal. Three layers: the engine (world.c: API, join state
 * machine, threads, requests), the link layer under every backend (link.c:
 * sockets, HELLO, frames, watchdog) and the backends (tcp.c, nccl.c, cuda_ipc.c: ops
 * tables, found through backend.c). This header holds their shared
 * structures, the backend ops table, the link layer's functions and the
 * engine's side of the seam, the only calls back up.
 *
 * Locking. ctx->lock guards the command queue, the event queue and the
 * rendezvous jobs; w->lock guards a world's state/error and its requests'
 * completion fields. Everything else about links and queued operations is
 * touched by the progress thread only: API threads hand operations over as
 * commands, so sockets never need a lock. */
#ifndef MW_WORLD_INT_H
#define MW_WORLD_INT_H

#include "frame.h"
#include "rendezvous.h"
#include "world.h"

#include <pthread.h>
#include <stdint.h>

typedef struct mw_op mw_op_t;
typedef struct mw_link mw_link_t;
typedef struct mw_cmd mw_cmd_t;

/* What an epoll_event's data.ptr points at: the first member of each. */
enum { EV_WAKE = 1, EV_LISTEN, EV_CONN, EV_LINK };

enum op_kind { OP_SEND = 1, OP_RECV };

/* One frame to send or receive on one link. */
struct mw_op {
    mw_op_t *next;
    mw_world_req_t *req; /* NULL for keepalives and control frames */
    int peer;
    uint8_t kind;  /* OP_SEND / OP_RECV */
    uint8_t ftype; /* frame type */
    uint8_t owned; /* freed by the engine when done (control frames) */
    uint8_t queued;
    /* send: encoded header + metadata, then the payload */
    uint8_t hdr_inline[MW_FRAME_HDR_SIZE + 8 + MW_FRAME_TENSOR_META];
    uint8_t *hdr;
    size_t hdr_len;
    const uint8_t *payload;
    uint64_t payload_len;
    uint64_t off; /* bytes of hdr + payload written, or payload bytes received */
    /* recv */
    uint8_t *buf;
    uint64_t cap;
    uint32_t coll_seq;    /* COLL: the collective this receive belongs to */
    uint8_t coll_kind;    /* COLL: expected kind */
    uint64_t coll_expect; /* COLL: expected payload bytes */
};

/* Commands from API threads to the progress thread. */
enum cmd_type { CMD_JOIN = 1, CMD_POST, CMD_ABORT, CMD_CLOSE, CMD_RDV_RESULT };

struct mw_cmd {
    mw_cmd_t *next;
    int type;
    mw_world_t *w;
    mw_world_req_t *req;
    int heap; /* freed by the progress thread */
    int sync; /* the poster waits for done */
    int done;
    char *text; /* heap: abort reason, rendezvous record */
};

enum req_kind {
    REQ_SEND = 1,
    REQ_RECV,
    REQ_SEND_HEADER,
    REQ_RECV_HEADER,
    REQ_BROADCAST,
    REQ_ALL_REDUCE,
    REQ_BARRIER
};

struct mw_world_req {
    mw_world_t *w;        /* holds a reference */
    mw_world_req_t *next; /* progress thread: in w->preready */
    int kind;
    /* under w->lock */
    int status;      /* MW_EAGAIN while pending */
    int pending_ops; /* ops the engine still holds */
    int finalizing;  /* the all-reduce reduction is running in some caller */
    char errstr[512];
    uint64_t bytes;
    mw_tensor_desc_t desc;
    /* what a tensor or collective request asks of the backend */
    int peer;             /* send, recv */
    void *buf;            /* the caller's buffer (read only for sends) */
    uint64_t nbytes;      /* the tensor's bytes; a receive's capacity */
    int root;             /* broadcast */
    mw_reduce_op_t redop; /* all-reduce */
    uint8_t *scratch;     /* all-reduce over links: (size-1) slots of nbytes, by peer order */
    mw_cmd_t cmd;         /* how it is posted */
    int nops;
    mw_op_t *ops;
    uint8_t data[]; /* send_header's copy */
};

/* A link to one peer of a world: a non-blocking TCP connection. */
enum link_state { LINK_NONE = 0, LINK_CONNECTING, LINK_HELLO_SENT, LINK_UP, LINK_CLOSED };
enum rx_phase { RX_HDR = 0, RX_META, RX_WAIT, RX_PAYLOAD };

struct mw_link {
    int ev_kind; /* EV_LINK */
    mw_world_t *w;
    int peer;
    int fd;
    int state;
    uint32_t events; /* registered epoll events */
    char addr[MW_FRAME_ADDR_MAX + 1];
    /* tx */
    mw_op_t *txq, *txq_tail;
    uint32_t tx_seq;
    int64_t last_tx_ms;     /* any byte written */
    int64_t tx_progress_ms; /* last progress of the queue (or when it became non-empty) */
    int64_t ping_ms;        /* keepalive interval: ours, or shorter when the peer asks */
    mw_op_t ping;
    /* rx */
    int phase;
    int peer_closed; /* EOF seen behind a complete frame nobody has received yet */
    uint8_t rx_hdr_buf[MW_FRAME_HDR_SIZE];
    size_t rx_got;
    mw_frame_hdr_t rx_hdr;
    uint8_t *rx_meta;
    mw_tensor_desc_t rx_desc;
    mw_frame_coll_t rx_coll;
    uint64_t rx_nbytes;
    mw_op_t *rx_op;    /* receive being filled */
    uint8_t *rx_unexp; /* header frame being buffered (no receive posted) */
    uint32_t rx_seq;
    int64_t last_rx_ms;
    mw_op_t *recv_hdr_q, *recv_hdr_tail;
    mw_op_t *recv_tensor_q, *recv_tensor_tail;
    mw_op_t *recv_coll_q, *recv_coll_tail;
    /* buffered header frames: [u32 len][bytes], in arrival order */
    struct unexp {
        struct unexp *next;
        uint32_t len;
        uint8_t data[];
    } * unexp, *unexp_tail;
    int unexp_count;
};

/* Backend operations, one const table per backend, found by name. The engine
 * runs links, rendezvous and header frames for every backend; the backend
 * moves tensors and collectives. Hooks run on the progress thread unless
 * noted; optional ones may be NULL. */
typedef struct mw_world_backend_ops {
    const char *name;
    /* optional; API thread, at join: allocate w->be. */
    int (*create)(mw_world_t *w, char *errstr, size_t errstr_size);
    /* optional; rank 0, before publishing: backend data for the rendezvous record. */
    int (*rendezvous_data)(mw_world_t *w, uint8_t *out, size_t cap, size_t *len, char *errstr,
                           size_t errstr_size);
    /* optional (NULL: ready once the links are up); every rank, once all links
     * are up: start the backend's communicator; data is rank 0's rendezvous data. */
    int (*start)(mw_world_t *w, const uint8_t *data, size_t len, char *errstr, size_t errstr_size);
    /* optional; every tick while joining after start, and while ready: 0
     * ready/fine, MW_EAGAIN still starting, else an error that breaks the world. */
    int (*poll)(mw_world_t *w, int64_t now_ms, char *errstr, size_t errstr_size);
    /* API thread: lays out a tensor or collective request (kind, peer, desc,
     * buf, nbytes, root, redop) as operations with mw_world_req_ops; none
     * completes the request at once. */
    int (*prepare)(mw_world_t *w, mw_world_req_t *req);
    /* world READY: starts a prepared request; each operation completes through
     * mw_world_op_done. An error fails the whole request (nothing was taken). */
    int (*post)(mw_world_t *w, mw_world_req_t *req, char *errstr, size_t errstr_size);
    /* API thread, no lock held, every operation done: reduces an all-reduce
     * whose parts prepare gathered in req->scratch (needed when it does). */
    void (*reduce)(mw_world_req_t *req);
    /* optional; the world broke or closed: abort the communicator, fail its requests. */
    void (*abort)(mw_world_t *w);
    /* optional; API thread, last reference gone: free w->be. */
    void (*destroy)(mw_world_t *w);
} mw_world_backend_ops_t;

extern const mw_world_backend_ops_t mw_world_tcp_ops;      /* tcp.c */
extern const mw_world_backend_ops_t mw_world_nccl_ops;     /* nccl.c, when built */
extern const mw_world_backend_ops_t mw_world_cuda_ipc_ops; /* cuda_ipc.c, when built */

/* backend.c: the backend called name, or NULL with errstr saying why (unknown,
 * or not built into this binary). */
const mw_world_backend_ops_t *mw_world_backend_find(const char *name, char *errstr,
                                                    size_t errstr_size);

enum join_phase { JOIN_PUBLISH = 1, JOIN_FETCH, JOIN_CONNECT, JOIN_MESH, JOIN_BACKEND, JOIN_DONE };

struct mw_world {
    mw_worlds_t *ctx;
    int refs; /* atomic */
    char name[MW_WORLD_NAME_MAX + 1];
    int64_t epoch;
    int size, rank;
    const mw_world_backend_ops_t *ops;
    void *be;
    mw_world_event_fn on_event;
    void *user;
    int device;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    /* under lock */
    mw_world_state_t state;
    int err;
    char errstr[512];
    uint32_t coll_seq;
    mw_world_stats_t stats;

    /* progress thread only */
    int in_engine; /* in ctx->worlds */
    int join_phase;
    int64_t join_start_ms, join_deadline_ms;
    int64_t next_fetch_ms;
    int fetch_failures;
    int rdv_last_rc;     /* atomic: the rendezvous thread's last result for this world */
    char join_note[160]; /* why the join is waiting, for the deadline error */
    mw_rdv_record_t rdv;
    int rdv_published, rdv_removed;
    mw_link_t **links;                        /* [size], NULL for self */
    mw_world_req_t *preready, *preready_tail; /* posted before READY */
    char (*peer_addrs)[MW_FRAME_ADDR_MAX + 1];
    mw_world_t *next_in_engine;
    mw_world_t *next_reap;
};

/* Rendezvous jobs, run by the rendezvous thread. */
enum rdv_job_type { RDV_PUBLISH = 1, RDV_FETCH, RDV_REMOVE };

typedef struct mw_rdv_job {
    struct mw_rdv_job *next;
    int type;
    mw_world_t *w; /* holds a reference */
    char name[MW_WORLD_NAME_MAX + 1];
    int64_t epoch;
    int64_t ttl_ms;
    int64_t not_before_ms;
    char record[MW_RDV_RECORD_MAX];
} mw_rdv_job_t;

struct mw_worlds {
    mw_world_options_t opts; /* keepalive_ms capped; redis points at redis_cfg */
    mw_config_t redis_cfg;
    int64_t tick_ms;
    char address[MW_FRAME_ADDR_MAX + 1];

    int epfd;
    int wakefd;
    int wake_kind;   /* EV_WAKE: epoll data for wakefd */
    int listen_kind; /* EV_LISTEN */
    int listenfd;
    int wake_pending; /* atomic: a wakeup is already in flight */
    int donefd;       /* eventfd: an operation completed or a world changed state */
    int done_pending; /* atomic: donefd was written since the last mw_worlds_done_clear */
    pthread_t thread;
    pthread_t rdv_thread;
    int threads_started;

    pthread_mutex_t lock;
    pthread_cond_t cond; /* sync commands done; events queued; rendezvous jobs */
    pthread_cond_t rdv_cond;
    int stop;
    mw_cmd_t *cmds, *cmds_tail;
    mw_rdv_job_t *jobs, *jobs_tail;
    mw_world_event_t *events; /* ring of MW_EVENTS_MAX */
    unsigned ev_head, ev_count;
    int64_t events_dropped;

    /* progress thread only */
    int backend_busy; /* backend operations in flight: poll them every millisecond */
    mw_world_t *worlds;
    struct mw_conn *conns;
    int64_t next_tick_ms;
    mw_world_t *reap;           /* worlds whose engine reference goes at the end of an iteration */
    struct cb_event *callbacks; /* owner callbacks to run at the end of an iteration */
    struct cb_event *callbacks_tail;
};

#define MW_EVENTS_MAX 1024

/* --- the link layer (link.c) -------------------------------------------------
 * Under every backend: the listener, the HELLO handshake, and one link per
 * peer carrying frames. Called by the engine and by the tcp backend, on the
 * progress thread unless noted; it reports back only through the engine's
 * side of the seam below. */

/* Fills op as a frame of type for peer: header and metadata encoded into
 * op->hdr, the payload borrowed (any thread, before posting). */
void mw_link_op_send(mw_op_t *op, int peer, uint8_t type, const uint8_t *meta, size_t meta_len,
                     const void *payload, uint64_t payload_len);
/* Fills op as a receive of the next frame of type from peer into buf (any thread). */
void mw_link_op_recv(mw_op_t *op, int peer, uint8_t type, void *buf, uint64_t cap);

/* The context's listener (ctx->address) and the connections it accepted
 * that have not said HELLO yet. */
int mw_link_listen(mw_worlds_t *ctx, char *errstr, size_t errstr_size);
void mw_link_accept(mw_worlds_t *ctx);
void mw_link_conn_event(mw_worlds_t *ctx, struct mw_conn *c, uint32_t events);
void mw_link_conns_tick(mw_worlds_t *ctx, int64_t now);
void mw_link_conns_free(mw_worlds_t *ctx, int all);

/* Links: w->links[peer], created by mw_link_connect (outgoing, to a lower
 * rank) or by an admitted HELLO (incoming). */
mw_link_t *mw_link_connect(mw_world_t *w, int peer, const char *addr, char *errstr,
                           size_t errstr_size);
void mw_link_event(mw_link_t *l, uint32_t events);
void mw_link_post(mw_link_t *l, mw_op_t *op);
void mw_link_send_control(mw_link_t *l, uint8_t type, const uint8_t *meta, size_t meta_len);
void mw_link_tick(mw_link_t *l, int64_t now); /* watchdog and keepalive */
void mw_link_bye(mw_link_t *l);               /* best effort: the peer sees an orderly leave */
void mw_link_close(mw_link_t *l, int rc);     /* fails its operations with rc */
void mw_link_reset(mw_link_t *l);             /* closed, and may connect again */
int mw_link_is_up(const mw_link_t *l);        /* NULL: 0 */
void mw_link_free(mw_link_t *l);              /* accepts NULL */

/* --- the engine's side of the seam (world.c) ---------------------------------
 * All the link layer and the backends call back into: completions, failures,
 * and what a link learns during the join. Progress thread unless noted. */

/* Breaks w: state BROKEN, every operation fails, owner told (no-op unless open). */
void mw_world_break(mw_world_t *w, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* One operation of a request finished with rc (control frames are freed). */
void mw_world_op_done(mw_world_t *w, mw_op_t *op, int rc);
/* Sets a pending request's error text ahead of its operations' completion. */
void mw_world_req_done(mw_world_t *w, mw_world_req_t *req, int rc, const char *errstr);
/* API thread: gives req nops operations (prepare hooks). */
int mw_world_req_ops(mw_world_req_t *req, int nops);
/* The open world that accepts a HELLO, or NULL with why (no such world,
 * wrong secret, ...): the link layer refuses the connection then. */
mw_world_t *mw_world_admit(mw_worlds_t *ctx, const mw_frame_hello_t *h, char *why, size_t why_size);
/* A link finished its handshake. */
void mw_world_on_link_up(mw_world_t *w, mw_link_t *l);
/* Rank 0's list of every member's address arrived (ranks > 0). */
void mw_world_on_peers(mw_world_t *w, char (*addrs)[MW_FRAME_ADDR_MAX + 1], int count);
/* An outgoing link failed before its handshake completed. */
void mw_world_on_connect_failed(mw_world_t *w, mw_link_t *l, const char *why);
/* A peer left in order (BYE). */
void mw_world_on_peer_left(mw_world_t *w);

#endif
