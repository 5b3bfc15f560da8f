/* The Kafka-free driver: a pipeline of real mw-worker processes (stages
 * 1..S-1) and a real mw-coordinator, fed from this process, which stands in for
 * the origin at stage 0 through the same seam as the data plane's origin: it
 * registers in Redis as a stage-0 worker, joins the worlds the coordinator
 * plans for it, computes stage 0 itself, sends each batch as a hop header and
 * a tensor to stage 1 and receives the last stage's output back. Redis is a
 * redis-server the driver starts (ops/mwlocal) in a directory of its own; no
 * Kafka, no Java: it runs on a machine that has neither, such as a GPU box.
 * Needs MWTEST_ROOT, MW_BUILD and MWTEST_PREFIX (tests/run.sh sets them). */
#ifndef MWT_DRIVER_H
#define MWT_DRIVER_H

#include "config.h"
#include "model/model.h"

#include <stdint.h>

typedef struct mwt_driver mwt_driver_t;

typedef struct mwt_driver_opts {
    int nstages;           /* >= 2: stage 0 here, one mw-worker at each other stage */
    mw_model_spec_t model; /* the model, written into the driver's directory */
    int max_rows;          /* rows of the largest batch */
    const char *device;    /* the workers' --device ("cpu", "cuda:0"); stage 0's too */
    int64_t world_timeout_ms;
} mwt_driver_opts_t;

/* Starts Redis, the coordinator and the workers, registers stage 0 and waits
 * (up to timeout_ms) until the plan puts it on a cycle through every stage and
 * its worlds are up. Writes what failed into errstr and returns NULL. */
mwt_driver_t *mwt_driver_new(const mwt_driver_opts_t *opts, int64_t timeout_ms, char *errstr,
                             size_t errstr_size);

/* Kills the workers, the coordinator and Redis and removes the directory. Accepts NULL. */
void mwt_driver_destroy(mwt_driver_t *d);

/* Sends nbatches batches of rows x inputs f32 rows, at most window in flight; the
 * input of batch b is fill(b, x) (rows * inputs floats), and check(b, y, user) is
 * called with each batch's output (rows * outputs floats) as it comes back, in
 * any order; a non-zero return stops the run with that code. Returns MW_OK, a
 * world error (with errstr), MW_ETIMEDOUT when a batch took over timeout_ms, or
 * check's code. */
int mwt_driver_run(mwt_driver_t *d, int nbatches, int rows, int window,
                   void (*fill)(int batch, int rows, float *x, void *user),
                   int (*check)(int batch, int rows, const float *y, void *user), void *user,
                   int64_t timeout_ms, char *errstr, size_t errstr_size);

/* The model file and the unsplit model (borrowed, for reference outputs). */
const char *mwt_driver_model_path(const mwt_driver_t *d);
const mw_model_t *mwt_driver_model(const mwt_driver_t *d);

/* The config of the driver's Redis and cluster (borrowed). */
const mw_config_t *mwt_driver_config(const mwt_driver_t *d);

/* The pid of the worker at stage (1..nstages-1). */
int mwt_driver_worker_pid(const mwt_driver_t *d, int stage);

#endif
