/* Serving across hosts: test hosts are network namespaces on one bridge
 * (mwt_netns), `infra` runs Redis and Kafka, h1 and h2 run the coordinator and
 * workers, which listen on and advertise their host's address. Every request
 * must get exactly one committed result, equal to the unsplit reference
 * model's, with stages on different hosts and under faults between them. */
#include "clock.h"
#include "harness.h"
#include "mwt_netns.h"
#include "mwt_pipeline.h"
#include "redis.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

/* Kafka calls that wait on a killed broker or a cut-off host give up after
 * 5 s (30 s by default) and are tried again, so that recovering from several
 * faults in a row fits the tests' deadlines. */
static const char *const flags[] = {"--request.max_attempts=20", "--kafka_client.timeout_ms=5000",
                                    NULL};

typedef struct fixture {
    mwt_net_t *net;
    mwt_pipeline_t *p;
} fixture_t;

/* Two hosts and infra with `brokers` Kafka brokers (0: one, not a cluster). */
static int setup_hosts(void **state, int brokers)
{
    const char *why = mwt_net_unavailable();
    if (why != NULL) {
        /* Skipped by the test itself: cmocka counts a skip in a setup as an error. */
        print_message("skipped: %s\n", why);
        *state = NULL;
        return 0;
    }
    fixture_t *f = calloc(1, sizeof(*f));
    *state = f;
    f->net = mwt_net_new(2, brokers);
    return 0;
}

static int setup(void **state)
{
    return setup_hosts(state, 0);
}

static int setup_kafka_cluster(void **state)
{
    return setup_hosts(state, 3);
}

/* The test's hosts; skips the test where they cannot be built. */
static fixture_t *hosts(void **state)
{
    if (*state == NULL)
        skip();
    return *state;
}

/* Kills the pipeline's processes, then the hosts, whether the test passed or not. */
static int teardown(void **state)
{
    fixture_t *f = *state;
    if (f == NULL)
        return 0;
    mwt_pipeline_destroy(f->p);
    mwt_net_destroy(f->net);
    free(f);
    *state = NULL;
    return 0;
}

/* A pipeline of `stages` stages whose coordinator runs on host `at`. */
static mwt_pipeline_t *pipeline_on_hosts(fixture_t *f, const char *suffix, int stages, int at)
{
    return f->p = mwt_net_pipeline(f->net, suffix, stages, flags, at);
}

static int worker_on(fixture_t *f, int h, int stage, const char *id)
{
    return mwt_net_worker(f->net, f->p, h, stage, id);
}

/* make run's shape on pipeline p: 2 stages x 2 workers, one of each stage per
 * host; waits until both origins have partitions. Returns the reference
 * outputs of n requests (the caller frees them). */
static float *make_run_shape_on_hosts(fixture_t *f, mwt_pipeline_t *p, int n)
{
    worker_on(f, 0, 0, "w0-h1");
    worker_on(f, 1, 0, "w0-h2");
    worker_on(f, 0, 1, "w1-h1");
    worker_on(f, 1, 1, "w1-h2");
    float *expected = mwt_pipeline_reference(p, n);
    assert_true(mwt_wait_for(mwt_pipeline_origins_assigned(p) == 2, mwt_scaled(60000)));
    return expected;
}

/* Established TCP connections in host h's namespace whose peer matches `peer`
 * (an address or "127.0.0.1"). */
static int connections(fixture_t *f, int h, const char *peer)
{
    char cmd[256], out[64];
    snprintf(cmd, sizeof(cmd), "ip netns exec %s ss -Htn state established dst %s | wc -l",
             f->net->hosts[h], peer);
    return mwt_run(cmd, out, sizeof(out)) == 0 ? atoi(out) : -1;
}

static void stages_on_two_hosts_answer_a_burst_exactly_once(void **state)
{
    fixture_t *f = hosts(state);
    const int n = 2000;
    mwt_pipeline_t *p = pipeline_on_hosts(f, "mh", 2, 0);
    float *expected = make_run_shape_on_hosts(f, p, n);

    int64_t t0 = mw_now_ms();
    mwt_pipeline_submit(p, 0, n, NULL);
    mwt_tally_t t = {0};
    assert_int_equal(mwt_pipeline_read(p, "results", &t, n, expected, n, mwt_scaled(60000)), n);
    print_message("%d requests across 2 hosts answered in %lld ms\n", n,
                  (long long)(mw_now_ms() - t0));
    /* The worlds between the hosts are up, and nothing talks over loopback. */
    assert_true(connections(f, 0, "10.77.0.12") > 0);
    assert_int_equal(connections(f, 0, "127.0.0.1"), 0);
    assert_int_equal(connections(f, 1, "127.0.0.1"), 0);

    assert_int_equal(mwt_pipeline_stop_workers(p, mwt_scaled(20000)), 0);
    mwt_pipeline_check_exactly_once(p, &t, n, expected, NULL, NULL);
    mwt_tally_fini(&t);
    free(expected);
}

/* Worker id's numeric field, through a connection of its own. */
static long long field(mwt_pipeline_t *p, const char *id, const char *name)
{
    char err[256];
    mw_redis_t *r = mw_redis_new(&p->cfg, 0, err, sizeof(err));
    long long v = r != NULL ? mwt_worker_field(r, id, name) : -1;
    mw_redis_destroy(r);
    return v;
}

static void partition_between_hosts_reroutes_and_the_healed_world_is_used_again(void **state)
{
    fixture_t *f = hosts(state);
    const int burst = 1500, n = 2 * burst;
    /* h1: the origin and a stage-1 worker; h2: a second stage-1 worker, reached
     * only over the world between the hosts. */
    mwt_pipeline_t *p = pipeline_on_hosts(f, "mhcut", 2, 0);
    worker_on(f, 0, 0, "origin-h1");
    worker_on(f, 0, 1, "s1-h1");
    worker_on(f, 1, 1, "s1-h2");
    float *expected = mwt_pipeline_reference(p, n);
    assert_true(mwt_wait_for(mwt_pipeline_origins_assigned(p) == 1, mwt_scaled(60000)));
    assert_true(mwt_wait_for(field(p, "origin-h1", "worlds_up") == 2, mwt_scaled(30000)));

    /* Requests in flight on both routes when h1 and h2 stop hearing each other. */
    mwt_tally_t t = {0};
    mwt_pipeline_submit(p, 0, burst, NULL);
    assert_int_equal(mwt_net_cut(f->net, 0, 1, 0), 0);
    int64_t cut = mw_now_ms();
    assert_true(mwt_wait_for(field(p, "origin-h1", "worlds_up") == 1, mwt_scaled(10000)));
    int64_t broke_ms = mw_now_ms() - cut;
    assert_int_equal(mwt_pipeline_read(p, "results", &t, n, expected, burst, mwt_scaled(60000)),
                     burst);
    int64_t answered_ms = mw_now_ms() - cut;
    print_message("partition: world broken (reported) after %lld ms, all %d answered after %lld ms"
                  " (world.timeout_ms %lld)\n",
                  (long long)broke_ms, burst, (long long)answered_ms, (long long)mwt_scaled(2000));
    /* The watchdog's deadline plus a heartbeat to report it. */
    assert_true(broke_ms <= mwt_scaled(2000) + 1000);

    /* Healed: the coordinator issues the world again, the origin joins it and uses it. */
    assert_int_equal(mwt_net_heal(f->net, 0), 0);
    int64_t healed = mw_now_ms();
    assert_true(mwt_wait_for(field(p, "origin-h1", "worlds_up") == 2, mwt_scaled(30000)));
    print_message("healed: world up again after %lld ms\n", (long long)(mw_now_ms() - healed));
    long long before = field(p, "s1-h2", "processed");
    mwt_pipeline_submit(p, burst, burst, NULL);
    assert_int_equal(mwt_pipeline_read(p, "results", &t, n, expected, n, mwt_scaled(60000)), n);
    assert_true(mwt_wait_for(field(p, "s1-h2", "processed") > before, mwt_scaled(5000)));

    assert_int_equal(mwt_pipeline_stop_workers(p, mwt_scaled(20000)), 0);
    int replayed = mwt_pipeline_check_exactly_once(p, &t, n, expected, NULL, NULL);
    print_message("%d requests answered by a later attempt\n", replayed);
    mwt_tally_fini(&t);
    free(expected);
}

/* When h1's origin (worker *i, id *id) has exited fenced (status 1), forgets
 * it and, with restart, starts a fresh origin on h1 (*i and *id then its);
 * any other exit fails the test. */
static void replace_if_fenced(fixture_t *f, int *i, const char **id, int restart)
{
    mwt_pipeline_t *p = f->p;
    int status;
    if (p->pids[*i] <= 0 || waitpid(p->pids[*i], &status, WNOHANG) != p->pids[*i])
        return;
    p->pids[*i] = 0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 1)
        fail_msg("h1's origin ended with status %d, not the fenced exit", status);
    print_message("h1's origin exited fenced%s\n", restart ? "; a fresh one takes its place" : "");
    if (restart) {
        *i = p->nworkers;
        *id = "origin-h1b";
        worker_on(f, 0, 0, *id);
    }
}

/* h1 loses Redis (redis_only) or Redis and Kafka mid-run, but still reaches h2. */
static void cut_off_host(fixture_t *f, const char *suffix, int redis_only)
{
    const int burst = 3000, n = 2 * burst;
    /* An origin and a stage-1 worker on each host; the coordinator on h2. */
    mwt_pipeline_t *p = pipeline_on_hosts(f, suffix, 2, 1);
    worker_on(f, 0, 0, "origin-h1");
    worker_on(f, 0, 1, "s1-h1");
    worker_on(f, 1, 0, "origin-h2");
    worker_on(f, 1, 1, "s1-h2");
    float *expected = mwt_pipeline_reference(p, n);
    assert_true(mwt_wait_for(mwt_pipeline_origins_assigned(p) == 2, mwt_scaled(60000)));

    mwt_tally_t t = {0};
    mwt_pipeline_submit(p, 0, burst, NULL);
    assert_true(mwt_pipeline_read(p, "results", &t, n, expected, burst / 5, mwt_scaled(60000)) >=
                burst / 5);
    assert_int_equal(mwt_net_cut(f->net, 0, -1, redis_only ? f->net->redis_port : 0), 0);
    int64_t cut = mw_now_ms();
    /* The coordinator expires h1's workers (their hashes are swept) ... */
    assert_true(mwt_wait_for(field(p, "origin-h1", "pid") < 0 && field(p, "s1-h1", "pid") < 0,
                             mwt_scaled(15000)));
    int64_t expired_ms = mw_now_ms() - cut;
    /* ... and, when h1 lost Kafka too, Kafka moves its partitions to the other
     * origin, which answers the requests h1 had taken: h1's open transaction can
     * no longer commit. With Kafka, h1's origin keeps its partitions and serves
     * them over the worlds it still has (its stage-1 worker on h1). */
    if (!redis_only)
        assert_true(mwt_wait_for(mwt_pipeline_origins_assigned(p) == 1, mwt_scaled(30000)));
    int64_t moved_ms = mw_now_ms() - cut;
    assert_int_equal(mwt_pipeline_read(p, "results", &t, n, expected, burst, mwt_scaled(60000)),
                     burst);
    print_message("h1 cut off from %s: expired after %lld ms, all %d answered after %lld ms\n",
                  redis_only ? "Redis" : "Redis and Kafka", (long long)expired_ms, burst,
                  (long long)(mw_now_ms() - cut));
    if (!redis_only)
        print_message("h1's partitions moved after %lld ms\n", (long long)moved_ms);

    /* Healed: h1's workers come back and serving goes on with both hosts.
     * h1's origin rejoins the group, or, when its transaction ended fenced
     * (its abort or commit once Kafka answered again), exits as a fenced
     * worker must, and a fresh one takes its place, as its supervisor would
     * start it. */
    assert_int_equal(mwt_net_heal(f->net, 0), 0);
    int origin_h1 = 0; /* its index in p->pids */
    const char *origin_h1_id = "origin-h1";
    assert_true(mwt_wait_for(
        (replace_if_fenced(f, &origin_h1, &origin_h1_id, 1), mwt_pipeline_origins_assigned(p) == 2),
        mwt_scaled(60000)));
    assert_true(mwt_wait_for(field(p, origin_h1_id, "pid") > 0, mwt_scaled(10000)));
    mwt_pipeline_submit(p, burst, burst, NULL);
    assert_int_equal(mwt_pipeline_read(p, "results", &t, n, expected, n, mwt_scaled(60000)), n);
    replace_if_fenced(f, &origin_h1, &origin_h1_id, 0);

    assert_int_equal(mwt_pipeline_stop_workers(p, mwt_scaled(20000)), 0);
    int replayed = mwt_pipeline_check_exactly_once(p, &t, n, expected, NULL, NULL);
    print_message("%d requests answered by a later attempt\n", replayed);
    mwt_tally_fini(&t);
    free(expected);
}

static void host_cut_off_from_redis_is_expired_and_its_requests_answered_once(void **state)
{
    cut_off_host(hosts(state), "mhredis", 1);
}

static void
host_cut_off_from_infra_is_expired_and_fenced_and_its_requests_answered_once(void **state)
{
    cut_off_host(hosts(state), "mhinfra", 0);
}

static void kafka_leader_killed_mid_run_loses_and_duplicates_nothing(void **state)
{
    fixture_t *f = hosts(state);
    const int n = 4000;
    mwt_pipeline_t *p = pipeline_on_hosts(f, "mhleader", 2, 0);
    float *expected = make_run_shape_on_hosts(f, p, n);

    mwt_tally_t t = {0};
    mwt_pipeline_submit(p, 0, n, NULL);
    assert_true(mwt_pipeline_read(p, "results", &t, n, expected, n / 5, mwt_scaled(60000)) >=
                n / 5);
    int victim = mwt_net_leader(p, "requests", 0);
    assert_true(victim >= 1 && victim <= 3);
    print_message("killing broker %d: leader of requests/0, and of results/0: %s\n", victim,
                  mwt_net_leader(p, "results", 0) == victim ? "yes" : "no");
    assert_int_equal(mwt_net_broker(f->net, "kill", victim), 0);
    int64_t killed = mw_now_ms(), last;
    int before = t.distinct;
    /* The longest pause in new results after the kill: how long until results
     * flow again (those read at once were committed before it). */
    int64_t pause = mwt_net_read_pause(p, &t, n, expected, killed, mwt_scaled(90000), &last);
    print_message("leader killed at %d/%d answered; longest pause in results %lld ms; all answered"
                  " after %lld ms\n",
                  before, n, (long long)pause, (long long)(last - killed));
    assert_int_equal(t.distinct, n);
    assert_int_equal(mwt_net_broker(f->net, "start", victim), 0);

    assert_int_equal(mwt_pipeline_stop_workers(p, mwt_scaled(20000)), 0);
    int replayed = mwt_pipeline_check_exactly_once(p, &t, n, expected, NULL, NULL);
    print_message("%d requests answered by a later attempt\n", replayed);
    mwt_tally_fini(&t);
    free(expected);
}

/* The consumer group's coordinator killed: the coordinator moves to another
 * broker, the killed one comes back, and then an origin dies, so that the
 * other asks for the committed offsets of its partitions. librdkafka 2.0 kept
 * asking the broker it had cached, which answered NOT_COORDINATOR to every
 * try: the partitions were never served again. */
static void group_coordinator_moved_then_an_origin_killed_its_partitions_are_served(void **state)
{
    fixture_t *f = hosts(state);
    const int n = 4000;
    mwt_pipeline_t *p = pipeline_on_hosts(f, "mhcoord", 2, 1);
    float *expected = make_run_shape_on_hosts(f, p, n);
    mwt_tally_t t = {0};
    mwt_pipeline_submit(p, 0, n / 2, NULL);
    assert_int_equal(mwt_pipeline_read(p, "results", &t, n, expected, n / 2, mwt_scaled(60000)),
                     n / 2);

    int victim = mwt_pipeline_group_coordinator(p);
    assert_true(victim >= 1 && victim <= 3);
    assert_int_equal(mwt_net_broker(f->net, "kill", victim), 0);
    int64_t killed = mw_now_ms();
    int moved = -1;
    assert_true(mwt_wait_for((moved = mwt_pipeline_group_coordinator(p)) >= 1 && moved != victim,
                             mwt_scaled(60000)));
    assert_int_equal(mwt_net_broker(f->net, "start", victim), 0);
    print_message("group coordinator %d killed, broker %d coordinates after %lld ms, %d back\n",
                  victim, moved, (long long)(mw_now_ms() - killed), victim);

    mwt_pipeline_signal(p, 1, SIGKILL); /* w0-h2 */
    mwt_pipeline_submit(p, n / 2, n / 2, NULL);
    if (mwt_pipeline_read(p, "results", &t, n, expected, n, mwt_scaled(90000)) != n)
        fail_msg("%d of %d requests answered after the coordinator moved and an origin died",
                 t.distinct, n);
    assert_int_equal(mwt_pipeline_stop_workers(p, mwt_scaled(20000)), 0);
    mwt_pipeline_check_exactly_once(p, &t, n, expected, NULL, NULL);
    mwt_tally_fini(&t);
    free(expected);
}

/* Waits until the active fault took effect (world broken, workers expired,
 * partitions moved), then removes it. */
static void heal(fixture_t *f, int fault, int victim)
{
    mwt_pipeline_t *p = f->p;
    switch (fault) {
    case 0: /* h1 and h2 apart */
        assert_true(mwt_wait_for(field(p, "w0-h1", "worlds_up") == 1, mwt_scaled(10000)));
        break;
    case 1: /* h1 without Redis */
        assert_true(mwt_wait_for(field(p, "w0-h1", "pid") < 0, mwt_scaled(10000)));
        break;
    case 2: /* h1 without Redis and Kafka */
        assert_true(mwt_wait_for(mwt_pipeline_origins_assigned(p) == 1, mwt_scaled(30000)));
        break;
    default: /* a broker killed */
        assert_int_equal(mwt_net_broker(f->net, "start", victim), 0);
        return;
    }
    assert_int_equal(mwt_net_heal(f->net, 0), 0);
}

/* The faults above in sequence under a steady load of 1000 requests a second,
 * each lasting until it took effect and healed before the next. */
static void chaos_across_hosts_answers_every_request_exactly_once(void **state)
{
    fixture_t *f = hosts(state);
    const int n = 20000, chunk = 1000;
    mwt_pipeline_t *p = pipeline_on_hosts(f, "mhchaos", 2, 1);
    float *expected = make_run_shape_on_hosts(f, p, n);
    assert_true(mwt_wait_for(field(p, "w0-h1", "worlds_up") == 2, mwt_scaled(30000)));

    mwt_tally_t t = {0};
    int fault = 0, victim = 0;
    int64_t t0 = mw_now_ms();
    for (int c = 0; c * chunk < n; c++) {
        int64_t next = mw_now_ms() + 1000;
        mwt_pipeline_submit(p, c * chunk, chunk, NULL);
        mwt_pipeline_read(p, "results", &t, n, expected, n, next - mw_now_ms());
        /* Chunks 2, 6, 10, 14 start a fault; the next chunk heals it. */
        if (c % 4 == 3 && fault < 4) {
            heal(f, fault++, victim);
            print_message("fault %d healed at %lld ms, %d answered\n", fault,
                          (long long)(mw_now_ms() - t0), t.distinct);
        }
        if (c % 4 != 2 || fault >= 4)
            continue;
        if (fault == 3) {
            victim = mwt_net_leader(p, "requests", 0);
            assert_int_equal(mwt_net_broker(f->net, "kill", victim), 0);
        } else {
            int port = fault == 1 ? f->net->redis_port : 0;
            assert_int_equal(mwt_net_cut(f->net, 0, fault == 0 ? 1 : -1, port), 0);
        }
    }
    assert_int_equal(fault, 4);
    assert_int_equal(mwt_pipeline_read(p, "results", &t, n, expected, n, mwt_scaled(120000)), n);
    print_message("%d requests through every fault answered in %lld ms\n", n,
                  (long long)(mw_now_ms() - t0));
    assert_int_equal(mwt_pipeline_stop_workers(p, mwt_scaled(20000)), 0);
    int replayed = mwt_pipeline_check_exactly_once(p, &t, n, expected, NULL, NULL);
    print_message("%d requests answered by a later attempt\n", replayed);
    mwt_tally_fini(&t);
    free(expected);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(stages_on_two_hosts_answer_a_burst_exactly_once, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            partition_between_hosts_reroutes_and_the_healed_world_is_used_again, setup, teardown),
        cmocka_unit_test_setup_teardown(
            host_cut_off_from_redis_is_expired_and_its_requests_answered_once, setup, teardown),
        cmocka_unit_test_setup_teardown(
            host_cut_off_from_infra_is_expired_and_fenced_and_its_requests_answered_once, setup,
            teardown),
        cmocka_unit_test_setup_teardown(kafka_leader_killed_mid_run_loses_and_duplicates_nothing,
                                        setup_kafka_cluster, teardown),
        cmocka_unit_test_setup_teardown(
            group_coordinator_moved_then_an_origin_killed_its_partitions_are_served,
            setup_kafka_cluster, teardown),
        cmocka_unit_test_setup_teardown(chaos_across_hosts_answers_every_request_exactly_once,
                                        setup_kafka_cluster, teardown),
    };
    mwt_test_filter();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
