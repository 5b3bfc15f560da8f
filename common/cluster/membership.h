/* Worker membership in Redis (DESIGN §5): the `workers` sorted set (score = last
 * heartbeat, Redis server time) and the `worker:{id}` hash. Writers: the worker
 * (register, heartbeat, leave); readers: the coordinator and mwctl. */
#ifndef MW_MEMBERSHIP_H
#define MW_MEMBERSHIP_H

#include "plan_doc.h"
#include "redis.h"

#include <stddef.h>
#include <stdint.h>

typedef enum {
    MW_MEMBER_JOINING = 0,  /* registered, worlds not up yet */
    MW_MEMBER_READY = 1,    /* in the plan, its worlds up */
    MW_MEMBER_DRAINING = 2, /* SIGTERM: no new work, finishing in-flight requests */
    MW_MEMBER_GONE = 3,     /* left (only in events: its keys are removed) */
} mw_member_state_t;

const char *mw_member_state_name(mw_member_state_t s);

/* What a worker announces; the dynamic part changes with each heartbeat. */
typedef struct mw_member_info {
    char id[MW_PLAN_ID_MAX];
    char host[64];
    int64_t pid;
    char pipeline[MW_PIPELINE_NAME_MAX];
    int stage; /* requested: >= 0 or MW_PLAN_STAGE_AUTO */
    char device[MW_PLAN_DEVICE_MAX];
    char backends[32]; /* world backends its data plane hands tensors to: "tcp", "tcp nccl" */
    int64_t capacity;
    mw_member_state_t state;
    int assigned_stage;               /* stage of the current plan, -1 when not in a plan */
    int64_t plan_epoch, plan_version; /* last plan applied */
    int64_t worlds_up, worlds_total;
    int64_t inflight, processed, errors;
    int64_t latency_p50_us, latency_p99_us; /* origins: ok results of the last 10 s; 0: none */
    char last_error[160];
    char broken[MW_PLAN_BROKEN_MAX]; /* worlds broken while planned: "name@gen ..." */
} mw_member_info_t;

/* A worker as read from Redis. */
typedef struct mw_member_record {
    mw_member_info_t info;
    int64_t heartbeat_ms; /* server time of the last heartbeat */
    int64_t started_ms;
    int has_hash;      /* 0: in `workers` but its hash is missing */
    char invalid[160]; /* why the hash cannot be planned, "" when it can */
} mw_member_record_t;

/* Generates "host.pid.xxxxxx" into buf (size >= MW_PLAN_ID_MAX). */
void mw_member_default_id(char *buf, size_t size);

/* Parses "auto" or a stage number; MW_EINVAL otherwise. */
int mw_member_parse_stage(const char *text, int *stage);

/* Heartbeat: in one Lua script, reads Redis TIME, sets the worker's score and every
 * field of its hash; the first one (or the first after the hash was lost or swept)
 * also records `started` and a `join` event. *server_ms gets the server time and
 * *registered 1 when this call created the hash (either may be NULL). */
int mw_member_heartbeat(mw_redis_t *r, const mw_member_info_t *info, int64_t events_maxlen,
                        int64_t *server_ms, int *registered);

/* Removes the worker's keys and records a `leave` event with reason. */
int mw_member_leave(mw_redis_t *r, const char *id, const char *reason, int64_t events_maxlen);

/* Reads every worker (one Lua script: server time, the sorted set and each hash).
 * *out (caller frees) holds *n records sorted by id; *server_ms the server time. */
int mw_member_read_all(mw_redis_t *r, mw_member_record_t **out, size_t *n, int64_t *server_ms);

/* The planner's view of a valid record (rec->invalid is ""). */
void mw_member_to_plan(const mw_member_record_t *rec, mw_plan_member_t *m);

#endif
