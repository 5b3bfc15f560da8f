/* Kafka-free pipeline benchmark (JSON lines): the driver (mwt_driver.h) feeds
 * batches of 1,024 rows to two mw-worker processes (stages 1 and 2 of a model
 * 16 -> 1024 -> 1024 -> 1024 -> 8), so each batch crosses the stage 1 -> 2 world
 * as a 4 MiB activation. MWT_DRIVER_DEVICE sets the device (default cpu;
 * tests/gpu/run.sh runs it with cuda:0), MW_BENCH_BATCHES the batches (20). */
#include "mwt_driver.h"

#include "clock.h"
#include "err.h"
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROWS   1024
#define HIDDEN 1024

static void fill(int batch, int rows, float *x, void *user)
{
    (void)user;
    for (int i = 0; i < rows * 16; i++)
        x[i] = (float)(((batch * 31 + i * 17) % 201) - 100) / 100.0f;
}

static int check(int batch, int rows, const float *y, void *user)
{
    (void)batch;
    (void)rows;
    (void)y;
    (*(int *)user)++;
    return MW_OK;
}

int main(void)
{
    char err[512];
    const char *device = getenv("MWT_DRIVER_DEVICE") ? getenv("MWT_DRIVER_DEVICE") : "cpu";
    int batches = getenv("MW_BENCH_BATCHES") ? atoi(getenv("MW_BENCH_BATCHES")) : 20;
    const mwt_driver_opts_t o = {.nstages = 3,
                                 .model = {.layers = 4,
                                           .inputs = 16,
                                           .hidden = HIDDEN,
                                           .outputs = 8,
                                           .seed = 3,
                                           .activation = MW_ACT_RELU},
                                 .max_rows = ROWS,
                                 .device = device,
                                 .world_timeout_ms = mwt_scaled(10000)};
    mwt_driver_t *d = mwt_driver_new(&o, mwt_scaled(60000), err, sizeof(err));
    if (d == NULL) {
        fprintf(stderr, "bench_pipeline_kafka_free: %s\n", err);
        return 1;
    }
    int got = 0, rc = MW_OK;
    /* One warm-up batch (first touches of the weights, cuBLAS handles), then the run. */
    rc = mwt_driver_run(d, 1, ROWS, 1, fill, check, &got, mwt_scaled(60000), err, sizeof(err));
    int64_t t0 = mw_now_us();
    if (rc == MW_OK)
        rc = mwt_driver_run(d, batches, ROWS, 2, fill, check, &got, mwt_scaled(60000), err,
                            sizeof(err));
    double s = (double)(mw_now_us() - t0) / 1e6;
    mwt_driver_destroy(d);
    if (rc != MW_OK) {
        fprintf(stderr, "bench_pipeline_kafka_free: %s\n", err);
        return 1;
    }
    printf(
        "{\"bench\": \"pipeline_kafka_free\", \"metric\": \"batches_per_s\", \"device\": \"%s\", "
        "\"backend\": \"tcp\", \"activation_bytes\": %d, \"batches\": %d, \"value\": %.2f, "
        "\"unit\": \"batches/s\"}\n",
        device, ROWS * HIDDEN * 4, batches, batches / s);
    return 0;
}
