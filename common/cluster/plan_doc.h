/* The plan document: the workers, pipelines and worlds the leading coordinator
 * publishes in Redis (DESIGN §5) and every worker and mwctl reads; its lookups and
 * its JSON codec. The planner that computes it lives in coordinator/plan.h. */
#ifndef MW_PLAN_DOC_H
#define MW_PLAN_DOC_H

#include "pipeline.h"

#include <stddef.h>
#include <stdint.h>

#define MW_PLAN_ID_MAX            64  /* worker id, with the NUL */
#define MW_PLAN_DEVICE_MAX        32  /* "cpu", "cuda:0" */
#define MW_PLAN_WORLD_NAME_MAX    160 /* world name, with the NUL */
#define MW_PLAN_WORLD_MAX_MEMBERS 8
#define MW_PLAN_STAGE_AUTO        (-1)
#define MW_PLAN_BROKEN_MAX        1024 /* a member's broken-world report, with the NUL */

/* One live worker as registered in Redis: the planner's input. */
typedef struct mw_plan_member {
    char id[MW_PLAN_ID_MAX];
    char pipeline[MW_PIPELINE_NAME_MAX];
    int stage; /* requested stage, or MW_PLAN_STAGE_AUTO */
    char device[MW_PLAN_DEVICE_MAX];
    int64_t capacity; /* relative capacity (>= 1) */
    int draining;     /* keeps its worlds, gets no new ones, is not relied on for routes */
    int64_t inflight; /* requests it holds, as last reported (a moved auto worker drains first) */
    char broken[MW_PLAN_BROKEN_MAX]; /* worlds it reports broken: "name@gen name@gen ..." */
    char host[64];                   /* where it runs: with device, picks a world's backend */
    unsigned carries;                /* MW_PLAN_CARRIES_*: device backends its data plane uses */
} mw_plan_member_t;

/* World backends beyond tcp that a worker's data plane can hand tensors to
 * (tcp, with host staging, every data plane does). */
#define MW_PLAN_CARRIES_NCCL     1u
#define MW_PLAN_CARRIES_CUDA_IPC 2u

/* The MW_PLAN_CARRIES_* of a list of backend names ("tcp nccl cuda-ipc",
 * separated by spaces or commas); names it does not know are left out, so
 * that a newer worker's list still plans. */
unsigned mw_plan_carries_parse(const char *list);

/* A worker in the plan: its resolved stage. */
typedef struct mw_plan_worker {
    char id[MW_PLAN_ID_MAX];
    char pipeline[MW_PIPELINE_NAME_MAX];
    int stage;
    int auto_stage; /* 1 when the planner chose the stage */
    char device[MW_PLAN_DEVICE_MAX];
    int draining;
} mw_plan_worker_t;

/* A world: members in rank order (rank i = members[i]). */
typedef struct mw_plan_world {
    char name[MW_PLAN_WORLD_NAME_MAX];
    char pipeline[MW_PIPELINE_NAME_MAX];
    char backend[16]; /* "tcp", "nccl" or "cuda-ipc" */
    int64_t gen;      /* join epoch of this incarnation (the plan version that issued it);
                         0 in a plan without one: the members join under the plan's epoch */
    int nmembers;
    char members[MW_PLAN_WORLD_MAX_MEMBERS][MW_PLAN_ID_MAX];
} mw_plan_world_t;

/* A pipeline as the plan carries it, so that workers with --stage auto learn their layers. */
typedef struct mw_plan_pipeline {
    mw_pipeline_spec_t spec;
    int complete; /* every stage has a live, non-draining worker */
} mw_plan_pipeline_t;

/* A member the planner left out, and why (not part of the JSON). */
typedef struct mw_plan_reject {
    char id[MW_PLAN_ID_MAX];
    char reason[160];
} mw_plan_reject_t;

typedef struct mw_plan {
    int64_t epoch;                 /* fencing epoch of the coordinator that published it */
    int64_t version;               /* increases by one with each published change */
    mw_plan_pipeline_t *pipelines; /* sorted by name */
    size_t npipelines;
    mw_plan_worker_t *workers; /* sorted by id */
    size_t nworkers;
    mw_plan_world_t *worlds; /* sorted by name */
    size_t nworlds;
    mw_plan_reject_t *rejected;
    size_t nrejected;
} mw_plan_t;

void mw_plan_destroy(mw_plan_t *plan);

/* 1 when a and b have the same pipelines, workers and worlds (epoch and version
 * aside); NULL equals only NULL. */
int mw_plan_same(const mw_plan_t *a, const mw_plan_t *b);

/* The plan as JSON (malloc'd, caller frees), or NULL when out of memory. */
char *mw_plan_encode(const mw_plan_t *plan);

/* Parses and validates a plan: unknown or missing fields, bad types, duplicate or
 * invalid ids and names, world members that are not workers of the world's
 * pipeline, bad ranks and backends fail with MW_EINVAL and a message. *out is the
 * caller's. */
int mw_plan_decode(const char *json, size_t len, mw_plan_t **out, char *errstr, size_t errstr_size);

/* Lookups, borrowed from plan; NULL when absent. */
const mw_plan_worker_t *mw_plan_find_worker(const mw_plan_t *plan, const char *id);
const mw_plan_world_t *mw_plan_find_world(const mw_plan_t *plan, const char *name);

/* 1 when the world has id as a member; its rank in *rank when rank is not NULL. */
int mw_plan_world_has(const mw_plan_world_t *w, const char *id, int *rank);

/* 1 when id is a valid worker id: 1..63 characters of [A-Za-z0-9_.:-]. */
int mw_plan_id_valid(const char *id);

/* The world name of the pair (a at stage sa) -> (b at stage sb) of pipeline p:
 * "p.s<sa>-<a>--s<sb>-<b>", or "p.s<sa>-s<sb>-<16 hex digits>" when that is too long. */
void mw_plan_world_name(char *buf, size_t size, const char *p, int sa, const char *a, int sb,
                        const char *b);

/* FNV-1a of s folded into h, then a separator byte, so that ("ab","c") and ("a","bc")
 * hash apart; start from MW_PLAN_FNV_SEED. */
#define MW_PLAN_FNV_SEED 14695981039346656037ULL
uint64_t mw_plan_fnv1a(uint64_t h, const char *s);

/* Sorts pipelines, workers and worlds by name, the order the lookups rely on. */
void mw_plan_sort(mw_plan_t *plan);

#endif
