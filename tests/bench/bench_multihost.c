/* Serving across hosts (network namespaces, mwt_netns; needs root): `make run`'s
 * pipeline shape (2 stages x 2 CPU workers, one of each stage per host, 4
 * partitions) against a 3-broker Kafka cluster on a third host. Throughput of
 * a burst with no added delay and with 20 ms added on every host's link
 * (tc netem; reported as skipped where the kernel lacks netem), the time from
 * a partition between the hosts to the last re-routed result, and from kill -9
 * of the leader of P.requests/0 to results flowing again. JSON lines
 * {"bench": "multihost", ...} on stdout. */
#include "clock.h"
#include "harness.h"
#include "mwt_load.h"
#include "mwt_netns.h"
#include "mwt_pipeline.h"

#include <stdio.h>
#include <stdlib.h>

#define BURST    4000
#define DELAY_MS 20

static const char *const flags[] = {"--request.max_attempts=20", NULL};

static void emit(const char *metric, double value, const char *unit, const char *extra)
{
    printf("{\"bench\": \"multihost\", \"metric\": \"%s\", \"value\": %.1f, \"unit\": \"%s\"%s}\n",
           metric, value, unit, extra);
    fflush(stdout);
}

/* Requests [first, first + BURST) at once; returns results/s until the last is read. */
static double burst_rate(mwt_pipeline_t *p, mwt_tally_t *t, int first, const float *expected)
{
    int64_t t0 = mw_now_ms();
    mwt_pipeline_submit(p, first, BURST, NULL);
    if (mwt_pipeline_read(p, "results", t, 5 * BURST, expected, first + BURST, 120000) <
        first + BURST)
        mwt_die("burst", "not every request was answered within 120 s");
    return BURST * 1000.0 / (double)(mw_now_ms() - t0 > 0 ? mw_now_ms() - t0 : 1);
}

int main(void)
{
    const char *why = mwt_net_unavailable();
    if (why != NULL) {
        printf("{\"bench\": \"multihost\", \"skipped\": \"%s\"}\n", why);
        return 0;
    }
    const int n = 5 * BURST;
    char extra[512];
    mwt_net_t *net = mwt_net_new(2, 3);
    mwt_pipeline_t *p = mwt_net_pipeline(net, "bmh", 2, flags, 0);
    mwt_net_worker(net, p, 0, 0, "w0-h1");
    mwt_net_worker(net, p, 1, 0, "w0-h2");
    mwt_net_worker(net, p, 0, 1, "w1-h1");
    mwt_net_worker(net, p, 1, 1, "w1-h2");
    float *expected = mwt_pipeline_reference(p, n);
    if (!mwt_wait_for(mwt_pipeline_origins_assigned(p) == 2, 60000))
        mwt_die("origins", "not both assigned within 60 s");
    mwt_tally_t t = {0};
    burst_rate(p, &t, 0, expected); /* warm-up: worlds, transactions, caches */

    snprintf(extra, sizeof(extra),
             ", \"delay_ms\": 0, \"requests\": %d, \"note\": \"make run's shape (2 stages x 2 "
             "CPU workers, one of each stage on each of 2 hosts), 16-float requests, 3 Kafka "
             "brokers (replication factor 3) on a third host\"",
             BURST);
    emit("throughput", burst_rate(p, &t, BURST, expected), "req/s", extra);

    int delayed = mwt_net_delay(net, DELAY_MS);
    if (delayed == 0) {
        snprintf(extra, sizeof(extra),
                 ", \"delay_ms\": %d, \"requests\": %d, \"note\": \"tc netem delay on each "
                 "host's link (h1, h2 and infra), so a round trip between hosts takes %d ms more\"",
                 DELAY_MS, BURST, 2 * DELAY_MS);
        emit("throughput", burst_rate(p, &t, 2 * BURST, expected), "req/s", extra);
        mwt_net_delay(net, 0);
    } else {
        printf("{\"bench\": \"multihost\", \"metric\": \"throughput\", \"delay_ms\": %d, "
               "\"skipped\": \"tc netem is not available (no sch_netem in this kernel)\"}\n",
               DELAY_MS);
        burst_rate(p, &t, 2 * BURST, expected); /* keeps the request numbering */
    }

    /* A partition between the hosts with a burst in flight: every request whose
     * route crossed is re-routed over the worlds within a host. */
    int64_t t0 = mw_now_ms(), last;
    mwt_pipeline_submit(p, 3 * BURST, BURST, NULL);
    if (mwt_net_cut(net, 0, 1, 0) != 0)
        mwt_die("partition", "nft failed");
    int64_t cut = mw_now_ms();
    mwt_net_read_pause(p, &t, 4 * BURST, expected, cut, 120000, &last);
    snprintf(extra, sizeof(extra),
             ", \"world_timeout_ms\": 2000, \"burst_ms\": %lld, \"note\": \"nftables drop "
             "between h1 and h2 right after a burst of %d was produced; value: cut to the "
             "burst's last result\"",
             (long long)(last - t0), BURST);
    emit("partition_rerouted_ms", (double)(last - cut), "ms", extra);
    mwt_net_heal(net, 0);

    /* kill -9 of the broker leading P.requests/0 mid-burst. */
    mwt_pipeline_submit(p, 4 * BURST, BURST, NULL);
    mwt_pipeline_read(p, "results", &t, n, expected, 4 * BURST + BURST / 5, 60000);
    int victim = mwt_net_leader(p, "requests", 0);
    int leads_results = mwt_net_leader(p, "results", 0) == victim;
    if (victim < 1 || mwt_net_broker(net, "kill", victim) != 0)
        mwt_die("leader", "could not kill the leader of requests/0");
    int64_t killed = mw_now_ms();
    int64_t pause = mwt_net_read_pause(p, &t, n, expected, killed, 120000, &last);
    snprintf(extra, sizeof(extra),
             ", \"all_answered_ms\": %lld, \"leads_results_0\": %s, \"note\": \"kill -9 of the "
             "broker leading P.requests/0 (broker.session.timeout.ms 4000); value: the longest "
             "pause between new results after the kill\"",
             (long long)(last - killed), leads_results ? "true" : "false");
    emit("leader_kill_results_pause_ms", (double)pause, "ms", extra);
    if (t.distinct < n)
        mwt_die("leader", "not every request was answered after the kill");

    mwt_tally_fini(&t);
    free(expected);
    mwt_pipeline_destroy(p);
    mwt_net_destroy(net);
    return 0;
}
