/* Data plane, internal: the engine's structures shared by dataplane.c (worlds,
 * stage compute, forwarding, aborts) and origin.c (Kafka in and out). Every
 * field is touched by the engine thread only, except those marked "lock". */
#ifndef MW_DATAPLANE_INT_H
#define MW_DATAPLANE_INT_H

#include "dataplane.h"
#include "hop.h"
#include "model/model.h"

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdint.h>

typedef struct dp_link dp_link_t;
typedef struct dp_xfer dp_xfer_t;
typedef struct dp_route dp_route_t;
typedef struct dp_held dp_held_t;
typedef struct dp_origin dp_origin_t;

/* One operation pair in flight on a link: a header, and a tensor after it. */
struct dp_xfer {
    dp_xfer_t *next;
    mw_world_req_t *hreq;
    mw_world_req_t *treq;
    mw_hop_t hop; /* receives: the announced tensor */
    void *buf;    /* tensor bytes: sent from / received into; owned */
};

/* A world handed over by the control plane. */
struct dp_link {
    dp_link_t *next;
    mw_world_t *w; /* borrowed */
    char peer[MW_HOP_ORIGIN_MAX];
    int peer_stage;
    int peer_rank;
    int dead;                /* broken or removed: nothing new is posted */
    int outstanding;         /* origin: requests whose current batch went here */
    int nsends;              /* sends not yet complete */
    uint64_t picked;         /* when the router last chose it (ties go to the least recent) */
    mw_world_req_t *hdr_req; /* the posted header receive */
    uint8_t hdr_buf[MW_WORLD_HEADER_MAX];
    dp_xfer_t *rx_head, *rx_tail; /* tensor receives, in the order of their headers */
    dp_xfer_t *tx;                /* sends in flight */
    /* origin: requests answered through this world in the previous and the
     * current half of the queueing window, the current half's start */
    int64_t answered_prev, answered_cur, answered_since_ms;
};

/* Mid and last stages: where a batch came from and went to (metadata). */
struct dp_route {
    dp_route_t *next;
    char origin[MW_HOP_ORIGIN_MAX];
    uint64_t incarnation, batch;
    uint32_t nrequests;
    dp_link_t *up, *down;
    int64_t expires_ms;
};

/* A computed activation waiting for a downstream world with room. */
struct dp_held {
    dp_held_t *next;
    mw_hop_t hop; /* as it will be sent */
    void *buf;
    dp_link_t *up;
    int64_t expires_ms;
};

/* Reachability from the plan: for each worker, which origins it can reach. */
typedef struct dp_reach {
    size_t nworkers, norigins;
    char (*workers)[MW_HOP_ORIGIN_MAX];
    char (*origins)[MW_HOP_ORIGIN_MAX];
    uint8_t *bits; /* nworkers x norigins */
} dp_reach_t;

enum dp_cmd_kind { CMD_ADD = 1, CMD_REMOVE, CMD_ROUTES };

typedef struct dp_cmd {
    struct dp_cmd *next;
    int kind;
    mw_world_t *w;
    char peer[MW_HOP_ORIGIN_MAX];
    int peer_stage, my_rank;
    dp_reach_t *reach;
    int waited; /* CMD_REMOVE on the caller's stack: the caller waits for done */
    int done;
} dp_cmd_t;

#define DP_ROUTE_BUCKETS 1024
#define DP_LATENCY_MAX   4096 /* latency samples kept (the newest) */

/* One committed result's latency, for the stats' percentiles. */
typedef struct dp_latency {
    int64_t at_ms; /* monotonic, when committed */
    int64_t us;
} dp_latency_t;

struct mw_dataplane {
    mw_config_t cfg;
    char worker_id[MW_HOP_ORIGIN_MAX];
    char pipeline[64];
    int stage, nstages;
    uint64_t incarnation;
    mw_model_t *model;
    mw_stage_t *st;

    mw_worlds_t *worlds; /* borrowed; NULL in tests that hand over worlds of their own */
    int wakefd;          /* eventfd: commands, stop, drain and Kafka messages wake the engine */
    pthread_t thread;
    int started;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int stop;                             /* lock */
    int draining;                         /* lock */
    dp_cmd_t *cmds;                       /* lock */
    int fatal;                            /* lock */
    char fatal_errstr[256];               /* lock */
    mw_dataplane_stats_t stats;           /* lock (snapshot of the engine's counters) */
    dp_latency_t latency[DP_LATENCY_MAX]; /* lock: ring of the newest samples */
    int latency_next, latency_count;      /* lock */

    mw_dataplane_stats_t counters; /* engine */
    dp_link_t *links;
    dp_reach_t *reach;
    dp_route_t *routes[DP_ROUTE_BUCKETS];
    int64_t nroutes;
    dp_held_t *held_head, *held_tail;
    int64_t next_sweep_ms;
    uint64_t picks;      /* router choices so far */
    dp_origin_t *origin; /* stage 0 only */
};

/* Records a fatal error: the engine stops serving and mw_dataplane_error reports it. */
void mw_dp_fatal(mw_dataplane_t *dp, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Runs the stage on a tensor; on success *out (stage-owned, valid until the
 * next run) holds the result. */
int mw_dp_compute(mw_dataplane_t *dp, const mw_tensor_desc_t *desc, const void *data,
                  mw_tensor_desc_t *out_desc, const void **out, char *errstr, size_t errstr_size);

/* Posts a header and, for TENSOR hops, the tensor buf (taken over, freed when
 * sent). MW_EBROKEN when the link cannot take it (buf is freed then too). */
int mw_dp_link_send(mw_dataplane_t *dp, dp_link_t *l, const mw_hop_t *hop, void *buf);

/* 1 when a downstream world to the peer of l can still reach origin. */
int mw_dp_reaches(const mw_dataplane_t *dp, const dp_link_t *l, const char *origin);

/* The router of the origin and of every stage: the world for a batch of
 * stage dp->stage on its way to origin. After the last stage that is a world
 * to the origin itself, else the least loaded (outstanding requests plus
 * unfinished sends; ties: the one chosen least recently) READY world to stage
 * + 1 with room in its send queue (and, from the origin, room in its queueing
 * window: mw_dp_origin_link_room) whose peer can still reach origin. NULL when
 * there is none; *full is then set when such a world exists but is full or
 * still joining (hold the batch rather than abort it: the abort would only
 * come back here). */
dp_link_t *mw_dp_pick_downstream(mw_dataplane_t *dp, const char *origin, int *full);

/* Records the latency of a committed ok result (engine thread). */
void mw_dp_latency_add(mw_dataplane_t *dp, int64_t us);

/* Wakes the engine from its wait (any thread). */
void mw_dp_wake(mw_dataplane_t *dp);

/* Serves commands and world traffic (not Kafka) once; for long waits inside
 * the origin's Kafka code, so that the worlds keep moving. Returns the work done. */
int mw_dp_pump(mw_dataplane_t *dp);

/* origin.c: the stage-0 side. */
int mw_dp_origin_new(mw_dataplane_t *dp, char *errstr, size_t errstr_size);
/* How long the engine may sleep, at most max_ms, before the origin's next
 * commit or request check is due. */
int mw_dp_origin_wait_ms(mw_dataplane_t *dp, int max_ms);
/* Engine thread, first thing: creates the Kafka clients and subscribes. */
int mw_dp_origin_connect(mw_dataplane_t *dp, char *errstr, size_t errstr_size);
/* Pauses consumption for good (draining). */
void mw_dp_origin_drain(mw_dataplane_t *dp);
void mw_dp_origin_destroy(mw_dataplane_t *dp);
/* One engine pass: consume, dispatch, timeouts, release and commit; returns
 * the amount of work done (0: idle). */
int mw_dp_origin_step(mw_dataplane_t *dp);
void mw_dp_origin_on_result(mw_dataplane_t *dp, const mw_hop_t *hop, const void *buf);
void mw_dp_origin_on_abort(mw_dataplane_t *dp, const mw_hop_t *hop, const char *why);
void mw_dp_origin_link_down(mw_dataplane_t *dp, dp_link_t *l);
/* 1 when the origin may send another batch over l: the requests outstanding
 * there are fewer than it answered over the last queueing window (a quarter
 * of request.attempt_timeout_ms), or than a batch's rows. */
int mw_dp_origin_link_room(const mw_dataplane_t *dp, dp_link_t *l);
/* Final commit and consumer close, before the links go. */
void mw_dp_origin_close(mw_dataplane_t *dp);

#endif
