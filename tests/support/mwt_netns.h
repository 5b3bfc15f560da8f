/* Integration-test support for tests across hosts: test hosts built as Linux
 * network namespaces on one bridge (10.77.0.0/24), an `infra` host running its
 * own Redis and Kafka, and faults between hosts (nftables drops). Needs root
 * and iproute2; nftables for the faults. */
#ifndef MWT_NETNS_H
#define MWT_NETNS_H

#include "mwt_pipeline.h"

#include <stddef.h>
#include <stdint.h>

#define MWT_NET_HOSTS 3

typedef struct mwt_net {
    char tag[24];                  /* "mwn<pid>": prefix of every namespace and link */
    char infra[40];                /* the infra namespace: Redis and Kafka */
    char infra_addr[16];           /* 10.77.0.1 */
    char hosts[MWT_NET_HOSTS][40]; /* namespaces h1.. */
    char addrs[MWT_NET_HOSTS][24]; /* their addresses, 10.77.0.11.. */
    int nhosts;
    char dir[256]; /* the services' directories (redis/, kafka/) */
    int redis_port;
    char kafka[256]; /* bootstrap servers: one broker, or every broker of the cluster */
    int brokers;     /* 0: one broker; else a KRaft cluster of that many (ops/mwlocal --brokers) */
} mwt_net_t;

/* NULL when this process can build test hosts; else why not (for skip()). */
const char *mwt_net_unavailable(void);

/* Removes what crashed earlier runs left (namespaces and links of a tag whose
 * process is gone, and the processes still in them), then builds `infra` and
 * nhosts hosts on a new bridge and starts Redis and Kafka on infra: one broker
 * (brokers 0) or a cluster of `brokers`. Points the harness at them
 * (MWTEST_REDIS_HOST/PORT, MWTEST_KAFKA_BOOTSTRAP), so that mwt_config and
 * mwt_pipeline use them. Fails the test on error; the caller frees with
 * mwt_net_destroy (also on failure: a teardown). */
mwt_net_t *mwt_net_new(int nhosts, int brokers);

/* `ops/mwlocal kafka ACTION --broker K` (kill|start|status) for broker k of
 * infra's cluster; returns its exit status. */
int mwt_net_broker(mwt_net_t *n, const char *action, int k);

/* Kills every process in the namespaces, deletes them and the bridge. NULL is fine. */
void mwt_net_destroy(mwt_net_t *n);

/* A cmocka teardown for a mwt_net_t in *state. */
int mwt_net_teardown(void **state);

/* Drops every packet between hosts a and b (indexes; -1 is infra) in both
 * directions, or only traffic to and from port `port` of b when port > 0
 * (e.g. Redis). Returns 0, or -1 when nft failed. */
int mwt_net_cut(mwt_net_t *n, int a, int b, int port);

/* Removes every cut of host a. Returns 0, or -1. */
int mwt_net_heal(mwt_net_t *n, int a);

/* Adds ms of delay (tc netem) to everything leaving every host, infra
 * included; 0 removes it. Returns 0, or -1 when tc failed (a kernel without
 * sch_netem). */
int mwt_net_delay(mwt_net_t *n, int ms);

/* The address of host i (-1: infra). */
const char *mwt_net_addr(const mwt_net_t *n, int i);

/* The processes p starts next run on host h: in its namespace, workers
 * listening on and advertising its address. */
void mwt_net_on_host(mwt_net_t *n, mwt_pipeline_t *p, int h);

/* mwt_pipeline_new(suffix, stages, 6 layers, 4 partitions, flags) with its
 * coordinator on host `at`. */
mwt_pipeline_t *mwt_net_pipeline(mwt_net_t *n, const char *suffix, int stages,
                                 const char *const *flags, int at);

/* A worker of p on host h; returns its index. */
int mwt_net_worker(mwt_net_t *n, mwt_pipeline_t *p, int h, int stage, const char *id);

/* The broker (node id) leading partition of topic <p>.<suffix>; -1 when unknown. */
int mwt_net_leader(mwt_pipeline_t *p, const char *suffix, int partition);

/* Reads p's results into t until all n are answered or timeout_ms passes;
 * returns the longest pause between new results from `since` on (how long
 * results stopped after a fault), *last_ms gets when the last one came. */
int64_t mwt_net_read_pause(mwt_pipeline_t *p, mwt_tally_t *t, int n, const float *expected,
                           int64_t since, int64_t timeout_ms, int64_t *last_ms);

#endif
