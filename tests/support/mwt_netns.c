/* Integration-test support: test hosts as network namespaces (see mwt_netns.h). */
#include "mwt_netns.h"

#include "clock.h"
#include "harness.h"

#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#define SUBNET  "10.77.0"
#define TAG_FMT "mwn%ld"

/* Fails the test after removing n (cmocka runs no teardown when a setup fails). */
static void fail_with(mwt_net_t *n, const char *what, const char *detail)
{
    fprintf(stderr, "mwt_netns: %s: %s\n", what, detail);
    mwt_net_destroy(n);
    fail_msg("mwt_netns: %s", what);
}

/* Runs a shell command built from fmt; returns its exit status, its stdout in out. */
static int sh(char *out, size_t out_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int sh(char *out, size_t out_size, const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    return mwt_run(cmd, out, out_size);
}

const char *mwt_net_unavailable(void)
{
    if (geteuid() != 0)
        return "test hosts are network namespaces, which need root (run as root, as CI does)";
    if (sh(NULL, 0, "ip netns list >/dev/null 2>&1") != 0)
        return "'ip netns' does not work here (install iproute2: make deps)";
    return NULL;
}

/* Kills the processes in namespace ns (all started by this support) and waits
 * until they are gone; then deletes ns and its link on the bridge (at once, not
 * when the kernel frees the namespace, so that the next test can reuse the names). */
static void remove_host(const char *ns)
{
    char pids[4096];
    int64_t deadline = mw_now_ms() + 10000;
    while (sh(pids, sizeof(pids), "ip netns pids %s 2>/dev/null", ns) == 0 && pids[0] != '\0' &&
           mw_now_ms() < deadline) {
        char *save = NULL;
        for (char *tok = strtok_r(pids, " \n", &save); tok != NULL;
             tok = strtok_r(NULL, " \n", &save))
            if (atol(tok) > 1)
                kill((pid_t)atol(tok), SIGKILL);
        mwt_sleep_ms(20);
    }
    sh(NULL, 0, "ip link del %s 2>/dev/null; ip netns del %s 2>/dev/null", ns, ns);
}

/* Namespaces and bridges of tag mwn<pid> whose process is gone: a crashed or killed run. */
static void remove_stale(void)
{
    char list[8192];
    if (sh(list, sizeof(list),
           "{ ip netns list; ip -o link show type bridge | awk -F': ' '{print $2}'; } 2>/dev/null"
           " | awk '{print $1}' | grep '^mwn[0-9]' | sort -u") != 0)
        return;
    char *save = NULL;
    for (char *name = strtok_r(list, "\n", &save); name != NULL;
         name = strtok_r(NULL, "\n", &save)) {
        long pid = atol(name + 3);
        if (pid > 0 && (kill((pid_t)pid, 0) == 0 || errno != ESRCH))
            continue;
        fprintf(stderr, "mwt_netns: removing %s, left by a run (pid %ld) that is gone\n", name,
                pid);
        remove_host(name);
    }
}

/* A namespace on the bridge at address addr: veth <ns> (root side) to eth0 inside. */
static void add_host(mwt_net_t *n, const char *ns, const char *addr)
{
    char out[1024];
    if (sh(out, sizeof(out),
           "{ set -e; ip netns add %s; ip -n %s link set lo up;"
           " ip link add %s type veth peer name eth0 netns %s;"
           " ip link set %s master %sbr up;"
           " ip -n %s addr add %s/24 dev eth0; ip -n %s link set eth0 up; } 2>&1",
           ns, ns, ns, ns, ns, n->tag, ns, addr, ns) != 0)
        fail_with(n, "building a test host", out);
}

static const char *repo_root(void)
{
    return getenv("MWTEST_ROOT") ? getenv("MWTEST_ROOT") : ".";
}

/* Starts service (redis|kafka, with `more` arguments) on infra; its address
 * (host:port, or a bootstrap list) into addr. */
static void start_service(mwt_net_t *n, const char *service, const char *more, char *addr,
                          size_t size)
{
    char out[8192];
    if (sh(out, sizeof(out), "ip netns exec %s %s/ops/mwlocal %s start --dir %s/%s --host %s %s",
           n->infra, repo_root(), service, n->dir, service, n->infra_addr, more) != 0 ||
        strncmp(out, n->infra_addr, strlen(n->infra_addr)) != 0)
        fail_with(n, service, "could not start it (its log is above)");
    size_t len = strcspn(out, "\n");
    if (len >= size)
        fail_with(n, service, "its address is too long");
    memcpy(addr, out, len);
    addr[len] = '\0';
}

int mwt_net_broker(mwt_net_t *n, const char *action, int k)
{
    return sh(NULL, 0,
              "ip netns exec %s %s/ops/mwlocal kafka %s --dir %s/kafka --broker %d >/dev/null",
              n->infra, repo_root(), action, n->dir, k);
}

mwt_net_t *mwt_net_new(int nhosts, int brokers)
{
    char out[1024], value[64], redis[64], more[32] = "";
    assert_true(nhosts >= 1 && nhosts <= MWT_NET_HOSTS);
    remove_stale();
    mwt_net_t *n = calloc(1, sizeof(*n));
    assert_non_null(n);
    snprintf(n->tag, sizeof(n->tag), TAG_FMT, (long)getpid());
    snprintf(n->infra, sizeof(n->infra), "%sinfra", n->tag);
    snprintf(n->infra_addr, sizeof(n->infra_addr), SUBNET ".1");
    n->nhosts = nhosts;
    for (int i = 0; i < nhosts; i++) {
        snprintf(n->hosts[i], sizeof(n->hosts[i]), "%sh%d", n->tag, i + 1);
        snprintf(n->addrs[i], sizeof(n->addrs[i]), SUBNET ".%d", 11 + i);
    }
    const char *base = getenv("MWTEST_DIR") ? getenv("MWTEST_DIR") : "/tmp";
    snprintf(n->dir, sizeof(n->dir), "%s/%s", base, n->tag);

    /* The test process itself sits on the bridge (.254) to produce and read. */
    if (sh(out, sizeof(out),
           "{ set -e; ip link add %sbr type bridge; ip addr add " SUBNET
           ".254/24 dev %sbr; ip link set %sbr up; } 2>&1",
           n->tag, n->tag, n->tag) != 0)
        fail_with(n, "building the bridge (is " SUBNET ".0/24 taken?)", out);
    add_host(n, n->infra, n->infra_addr);
    for (int i = 0; i < nhosts; i++)
        add_host(n, n->hosts[i], n->addrs[i]);
    start_service(n, "redis", "", redis, sizeof(redis));
    n->redis_port = atoi(strrchr(redis, ':') + 1);
    n->brokers = brokers;
    if (brokers > 0)
        snprintf(more, sizeof(more), "--brokers %d", brokers);
    start_service(n, "kafka", more, n->kafka, sizeof(n->kafka));

    setenv("MWTEST_REDIS_HOST", n->infra_addr, 1);
    snprintf(value, sizeof(value), "%d", n->redis_port);
    setenv("MWTEST_REDIS_PORT", value, 1);
    setenv("MWTEST_KAFKA_BOOTSTRAP", n->kafka, 1);
    return n;
}

void mwt_net_destroy(mwt_net_t *n)
{
    if (n == NULL)
        return;
    for (int i = 0; i < n->nhosts; i++)
        remove_host(n->hosts[i]);
    remove_host(n->infra);
    sh(NULL, 0, "ip link del %sbr 2>/dev/null", n->tag);
    if (getenv("MW_TEST_KEEP") == NULL)
        sh(NULL, 0, "rm -rf %s", n->dir);
    free(n);
}

int mwt_net_teardown(void **state)
{
    mwt_net_destroy(*state);
    *state = NULL;
    return 0;
}

const char *mwt_net_addr(const mwt_net_t *n, int i)
{
    return i < 0 ? n->infra_addr : n->addrs[i];
}

static const char *ns_of(const mwt_net_t *n, int i)
{
    return i < 0 ? n->infra : n->hosts[i];
}

int mwt_net_cut(mwt_net_t *n, int a, int b, int port)
{
    char out[1024], to[64] = "", from[64] = "";
    if (port > 0) {
        snprintf(to, sizeof(to), "tcp dport %d", port);
        snprintf(from, sizeof(from), "tcp sport %d", port);
    }
    /* Both directions dropped on a's side: b neither hears from a nor reaches it. */
    int rc = sh(out, sizeof(out),
                "ip netns exec %s nft -f - 2>&1 <<'NFT'\n"
                "table inet mwcut {\n"
                "  chain out { type filter hook output priority 0; ip daddr %s %s drop; }\n"
                "  chain in { type filter hook input priority 0; ip saddr %s %s drop; }\n"
                "}\nNFT",
                ns_of(n, a), mwt_net_addr(n, b), to, mwt_net_addr(n, b), from);
    if (rc != 0)
        fprintf(stderr, "mwt_netns: nft: %s\n", out);
    return rc == 0 ? 0 : -1;
}

int mwt_net_heal(mwt_net_t *n, int a)
{
    return sh(NULL, 0, "ip netns exec %s nft delete table inet mwcut", ns_of(n, a)) == 0 ? 0 : -1;
}

int mwt_net_delay(mwt_net_t *n, int ms)
{
    int rc = 0;
    for (int i = -1; i < n->nhosts; i++) {
        if (ms > 0)
            rc |= sh(NULL, 0,
                     "ip netns exec %s tc qdisc replace dev eth0 root netem delay %dms 2>/dev/null",
                     ns_of(n, i), ms);
        else
            sh(NULL, 0, "ip netns exec %s tc qdisc del dev eth0 root 2>/dev/null", ns_of(n, i));
    }
    return rc == 0 ? 0 : -1;
}

void mwt_net_on_host(mwt_net_t *n, mwt_pipeline_t *p, int h)
{
    p->netns = n->hosts[h];
    p->host_addr = n->addrs[h];
}

mwt_pipeline_t *mwt_net_pipeline(mwt_net_t *n, const char *suffix, int stages,
                                 const char *const *flags, int at)
{
    mwt_pipeline_t *p = mwt_pipeline_new(suffix, stages, 6, 4, flags);
    /* mwt_pipeline_new starts the coordinator here; it is moved to its host.
     * Killed by pid: it may not have made its process group yet. */
    kill(p->coordinator, SIGKILL);
    mwt_wait_exit(p->coordinator, 5000);
    p->coordinator = 0;
    mwt_net_on_host(n, p, at);
    p->coordinator = mwt_pipeline_coordinator(p);
    return p;
}

int mwt_net_worker(mwt_net_t *n, mwt_pipeline_t *p, int h, int stage, const char *id)
{
    mwt_net_on_host(n, p, h);
    return mwt_pipeline_worker(p, stage, id);
}

int mwt_net_leader(mwt_pipeline_t *p, const char *suffix, int partition)
{
    char name[200];
    snprintf(name, sizeof(name), "%s.%s", p->name, suffix);
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(p->producer, name, NULL);
    const struct rd_kafka_metadata *md = NULL;
    int leader = -1;
    if (rd_kafka_metadata(p->producer, 0, rkt, &md, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR &&
        md->topic_cnt == 1 && partition < md->topics[0].partition_cnt)
        leader = md->topics[0].partitions[partition].leader;
    if (md != NULL)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    return leader;
}

int64_t mwt_net_read_pause(mwt_pipeline_t *p, mwt_tally_t *t, int n, const float *expected,
                           int64_t since, int64_t timeout_ms, int64_t *last_ms)
{
    int64_t last = since, pause = 0;
    while (t->distinct < n && mw_now_ms() - since < timeout_ms) {
        int seen = t->distinct;
        mwt_pipeline_read(p, "results", t, n, expected, seen + 1, 100);
        if (t->distinct > seen) {
            pause = mw_now_ms() - last > pause ? mw_now_ms() - last : pause;
            last = mw_now_ms();
        }
    }
    *last_ms = last;
    return pause;
}
