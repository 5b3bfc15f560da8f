/* Serving across hosts: test hosts are network namespaces on one bridge
 * (mwt_netns), `infra` runs Redis and Kafka, h1 and h2 run the coordinator and
 * workers, which listen on and advertise their host's address. Every request
 * must get exactly one committed result, equal to the unsplit reference
 * model's, with stages on different hosts and under faults between them. */
#include "clock.h"
#include "harness.h"
#include "mwt_netns.h"
#include "mwt_pipeline.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static const char *const flags[] = {"--request.max_attempts=20", NULL};

typedef struct fixture {
    mwt_net_t *net;
    mwt_pipeline_t *p;
} fixture_t;

static int setup(void **state)
{
    const char *why = mwt_net_unavailable();
    if (why != NULL) {
        print_message("skipped: %s\n", why);
        skip();
    }
    fixture_t *f = calloc(1, sizeof(*f));
    *state = f;
    f->net = mwt_net_new(2);
    return 0;
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

/* The processes started next run on host h. */
static void on_host(fixture_t *f, int h)
{
    f->p->netns = f->net->hosts[h];
    f->p->host_addr = mwt_net_addr(f->net, h);
}

/* A pipeline of `stages` stages whose coordinator runs on host 0. */
static mwt_pipeline_t *pipeline_on_hosts(fixture_t *f, const char *suffix, int stages)
{
    f->p = mwt_pipeline_new(suffix, stages, 6, 4, flags);
    /* mwt_pipeline_new starts the coordinator here; it is moved to h1. */
    kill(-f->p->coordinator, SIGKILL);
    mwt_wait_exit(f->p->coordinator, 5000);
    f->p->coordinator = 0;
    on_host(f, 0);
    f->p->coordinator = mwt_pipeline_coordinator(f->p);
    return f->p;
}

static int worker_on(fixture_t *f, int h, int stage, const char *id)
{
    on_host(f, h);
    return mwt_pipeline_worker(f->p, stage, id);
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
    fixture_t *f = *state;
    const int n = 2000;
    /* make run's shape: 2 stages x 2 workers, here one of each stage per host. */
    mwt_pipeline_t *p = pipeline_on_hosts(f, "mh", 2);
    worker_on(f, 0, 0, "w0-h1");
    worker_on(f, 1, 0, "w0-h2");
    worker_on(f, 0, 1, "w1-h1");
    worker_on(f, 1, 1, "w1-h2");
    float *expected = mwt_pipeline_reference(p, n);
    assert_true(mwt_wait_for(mwt_pipeline_origins_assigned(p) == 2, mwt_scaled(60000)));

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(stages_on_two_hosts_answer_a_burst_exactly_once, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
