/* A pipeline of real mw-worker processes and a real coordinator, fed without
 * Kafka by the driver (tests/support/mwt_driver.h), which starts its own Redis.
 * MWT_DRIVER_DEVICE picks the workers' device (default "cpu"; tests/gpu/run.sh
 * sets "cuda:0"): CPU outputs must equal the unsplit model's bit for bit, CUDA
 * ones within 1e-5 relative. */
#include "mwt_driver.h"

#include "clock.h"
#include "err.h"
#include "harness.h"
#include "redis.h"
#include "cluster/membership.h"

#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#define INPUTS  16
#define OUTPUTS 8
#define ROWS    4

typedef struct check_state {
    mw_stage_t *reference; /* the whole model, one row at a time */
    int exact;
    int checked;
    int kill_at; /* batch after which the stage-1 worker is killed (-1: never) */
    pid_t victim;
    int64_t killed_ms;
} check_state_t;

static const char *device(void)
{
    const char *d = getenv("MWT_DRIVER_DEVICE");
    return d != NULL && *d != '\0' ? d : "cpu";
}

static void fill(int batch, int rows, float *x, void *user)
{
    (void)user;
    for (int i = 0; i < rows * INPUTS; i++)
        x[i] = (float)(((batch * 7919 + i * 104729) % 2001) - 1000) / 1000.0f;
}

static int check(int batch, int rows, const float *y, void *user)
{
    check_state_t *c = user;
    float x[ROWS * INPUTS], want[OUTPUTS];
    fill(batch, rows, x, NULL);
    for (int r = 0; r < rows; r++) {
        if (mw_stage_forward(c->reference, x + r * INPUTS, 1, want) != MW_OK)
            return MW_EINVAL;
        for (int j = 0; j < OUTPUTS; j++) {
            float got = y[r * OUTPUTS + j], w = want[j];
            int ok = c->exact ? memcmp(&got, &w, sizeof(w)) == 0
                              : fabsf(got - w) <= 1e-5f * fmaxf(1.0f, fabsf(w));
            if (!ok) {
                fprintf(stderr, "batch %d row %d output %d: %.9g, want %.9g\n", batch, r, j,
                        (double)got, (double)w);
                return MW_EPROTO;
            }
        }
    }
    c->checked++;
    if (c->kill_at >= 0 && batch == c->kill_at) {
        kill(-c->victim, SIGKILL);
        c->killed_ms = mw_now_ms();
    }
    return MW_OK;
}

static mwt_driver_t *driver(check_state_t *c, int64_t world_timeout_ms)
{
    char err[512];
    const mwt_driver_opts_t o = {.nstages = 3,
                                 .model = {.layers = 6,
                                           .inputs = INPUTS,
                                           .hidden = 32,
                                           .outputs = OUTPUTS,
                                           .seed = 5,
                                           .activation = MW_ACT_GELU,
                                           .layernorm = 1,
                                           .residual = 1},
                                 .max_rows = ROWS,
                                 .device = device(),
                                 .world_timeout_ms = world_timeout_ms};
    mwt_driver_t *d = mwt_driver_new(&o, mwt_scaled(30000), err, sizeof(err));
    if (d == NULL)
        fail_msg("driver: %s", err);
    memset(c, 0, sizeof(*c));
    c->exact = strcmp(device(), "cpu") == 0;
    c->kill_at = -1;
    if (mw_stage_new(mwt_driver_model(d), 0, 6, 1, -1, &c->reference, err, sizeof(err)) != MW_OK)
        fail_msg("reference: %s", err);
    return d;
}

static void pipeline_without_kafka_answers_every_batch_as_the_unsplit_model(void **state)
{
    (void)state;
    char err[512];
    check_state_t c;
    mwt_driver_t *d = driver(&c, mwt_scaled(2000));
    const int batches = 2500; /* 10,000 requests of one row */
    int rc =
        mwt_driver_run(d, batches, ROWS, 8, fill, check, &c, mwt_scaled(10000), err, sizeof(err));
    mw_stage_destroy(c.reference);
    mwt_driver_destroy(d);
    if (rc != MW_OK)
        fail_msg("run: %s (%d batches checked)", err, c.checked);
    assert_int_equal(c.checked, batches);
}

/* What the planner picks a world's backend from: every worker's device, host
 * and the backends its data plane carries (tcp only, host buffers). */
static void workers_report_device_host_and_the_backends_they_carry(void **state)
{
    (void)state;
    char err[512], host[64] = "";
    check_state_t c;
    mwt_driver_t *d = driver(&c, mwt_scaled(2000));
    mw_stage_destroy(c.reference);
    gethostname(host, sizeof(host) - 1);
    mw_redis_t *r = mw_redis_new(mwt_driver_config(d), 0, err, sizeof(err));
    mw_member_record_t *recs = NULL;
    size_t n = 0;
    int64_t now;
    int rc = r != NULL ? mw_member_read_all(r, &recs, &n, &now) : MW_EUNAVAIL;
    int workers = 0;
    for (size_t i = 0; rc == MW_OK && i < n; i++) {
        if (strcmp(recs[i].info.id, "src") == 0)
            continue;
        mw_plan_member_t m;
        mw_member_to_plan(&recs[i], &m);
        if (strcmp(m.device, device()) != 0 || strcmp(m.host, host) != 0 ||
            strcmp(recs[i].info.backends, "tcp") != 0 || m.carries != 0)
            fail_msg("worker %s: device %s, host %s, backends %s", m.id, m.device, m.host,
                     recs[i].info.backends);
        workers++;
    }
    free(recs);
    mw_redis_destroy(r);
    mwt_driver_destroy(d);
    assert_int_equal(rc, MW_OK);
    assert_int_equal(workers, 2);
}

static void killed_worker_breaks_the_drivers_world_within_the_world_timeout(void **state)
{
    (void)state;
    char err[512];
    check_state_t c;
    const int64_t world_timeout_ms = mwt_scaled(1000);
    mwt_driver_t *d = driver(&c, world_timeout_ms);
    c.kill_at = 100;
    c.victim = mwt_driver_worker_pid(d, 1);
    int rc =
        mwt_driver_run(d, 100000, ROWS, 8, fill, check, &c, mwt_scaled(30000), err, sizeof(err));
    int64_t noticed_ms = mw_now_ms() - c.killed_ms;
    mw_stage_destroy(c.reference);
    mwt_driver_destroy(d);
    if (rc == MW_OK || c.killed_ms == 0)
        fail_msg("the run went on after the kill (rc %d, %d batches)", rc, c.checked);
    fprintf(stderr, "# noticed in %lld ms: %s\n", (long long)noticed_ms, err);
    assert_true(noticed_ms <= world_timeout_ms + mwt_scaled(500));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(pipeline_without_kafka_answers_every_batch_as_the_unsplit_model),
        cmocka_unit_test(workers_report_device_host_and_the_backends_they_carry),
        cmocka_unit_test(killed_worker_breaks_the_drivers_world_within_the_world_timeout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
