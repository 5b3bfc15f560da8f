/* The Kafka-free driver (see mwt_driver.h). */
#include "mwt_driver.h"

#include "clock.h"
#include "config.h"
#include "err.h"
#include "harness.h"
#include "cluster/membership.h"
#include "cluster/planstore.h"
#include "redis.h"
#include "worker/hop.h"
#include "world/world.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DRIVER_ID  "src"
#define MAX_STAGES 8
#define MAX_WORLDS (2 * MAX_STAGES)

struct mwt_driver {
    char dir[512], model_path[600], pipeline[MW_PIPELINE_NAME_MAX];
    int nstages, max_rows;
    mw_config_t cfg;
    mw_model_t *model;
    mw_stage_t *stage0;
    pid_t coordinator, workers[MAX_STAGES];
    /* membership: a heartbeat thread with a connection of its own */
    mw_member_info_t info;
    pthread_t heartbeat;
    int heartbeat_started;
    volatile sig_atomic_t stop;
    /* the worlds the plan gives stage 0 */
    mw_worlds_t *ctx;
    mw_world_t *worlds[MAX_WORLDS];
    int nworlds;
    mw_world_t *down, *back; /* to the stage-1 worker, from the last stage's */
    int down_peer, back_peer;
    /* frames stage 1 sends upstream (aborts), with 3 stages or more: posted
     * across runs, since freeing a pending receive would break the world */
    mw_world_req_t *ah;
    uint8_t aframe[MW_WORLD_HEADER_MAX];
    uint64_t incarnation;
};

static int shell(const mwt_driver_t *d, const char *what, char *out, size_t out_size, char *errstr,
                 size_t errstr_size)
{
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "'%s/ops/mwlocal' redis %s --dir '%s/redis'",
             getenv("MWTEST_ROOT") ? getenv("MWTEST_ROOT") : ".", what, d->dir);
    if (mwt_run(cmd, out, out_size) != 0)
        return mw_errf(MW_EUNAVAIL, errstr, errstr_size, "%s failed", cmd);
    return MW_OK;
}

static pid_t spawn(const mwt_driver_t *d, const char *prog, const char *const *extra)
{
    char args[24][1024];
    char *argv[26];
    int n = 0;
#define ARG(...) (snprintf(args[n], sizeof(args[0]), __VA_ARGS__), argv[n] = args[n], n++)
    ARG("%s", mwt_bin(prog));
    ARG("--redis.port=%lld", (long long)d->cfg.redis_port);
    ARG("--cluster.name=%s", d->cfg.cluster);
    /* No Kafka: only the coordinator's lag reader looks for one; never a real broker. */
    ARG("--kafka.bootstrap.servers=127.0.0.1:1");
    ARG("--heartbeat.interval_ms=100");
    ARG("--heartbeat.ttl_ms=%lld", (long long)mwt_scaled(1500));
    ARG("--world.timeout_ms=%lld", (long long)d->cfg.world_timeout_ms);
    ARG("--log.level=%s", mwt_log_level());
    for (int i = 0; extra[i] != NULL && n < 24; i++)
        ARG("%s", extra[i]);
#undef ARG
    argv[n] = NULL;
    return mwt_spawn(argv);
}

static void *heartbeat_main(void *arg)
{
    mwt_driver_t *d = arg;
    char err[256];
    mw_redis_t *r = mw_redis_new(&d->cfg, 1, err, sizeof(err));
    while (!d->stop) {
        if (r != NULL)
            mw_member_heartbeat(r, &d->info, d->cfg.events_maxlen, NULL, NULL);
        mwt_sleep_ms(100);
    }
    mw_redis_destroy(r);
    return NULL;
}

/* Joins the plan's worlds of stage 0 until one leads to stage 1 and one comes
 * from the last stage, then waits for them to be ready. */
static int join_planned_worlds(mwt_driver_t *d, int64_t deadline, char *errstr, size_t errstr_size)
{
    mw_redis_t *r = mw_redis_new(&d->cfg, 0, errstr, errstr_size);
    if (r == NULL)
        return MW_EUNAVAIL;
    int rc = MW_ETIMEDOUT;
    while (mw_now_ms() < deadline && (d->down == NULL || d->back == NULL)) {
        mw_plan_t *plan = NULL;
        if (mw_planstore_read(r, &plan, errstr, errstr_size) != MW_OK || plan == NULL ||
            plan->npipelines != 1 || !plan->pipelines[0].complete) {
            mw_plan_destroy(plan);
            mwt_sleep_ms(20);
            continue;
        }
        for (size_t i = 0; i < plan->nworlds && d->nworlds < MAX_WORLDS; i++) {
            const mw_plan_world_t *pw = &plan->worlds[i];
            int rank;
            if (!mw_plan_world_has(pw, DRIVER_ID, &rank) || pw->nmembers != 2)
                continue;
            const mw_plan_worker_t *peer = mw_plan_find_worker(plan, pw->members[1 - rank]);
            if (peer == NULL)
                continue;
            int is_down = peer->stage == 1, is_back = peer->stage == d->nstages - 1;
            if ((!is_down || d->down != NULL) && (!is_back || d->back != NULL))
                continue;
            mw_world_opts_t o = {.name = pw->name,
                                 .epoch = pw->gen != 0 ? pw->gen : plan->epoch,
                                 .size = 2,
                                 .rank = rank,
                                 .backend = pw->backend};
            mw_world_t *w;
            if (mw_world_join(d->ctx, &o, &w, errstr, errstr_size) != MW_OK)
                continue;
            d->worlds[d->nworlds++] = w;
            if (is_down && d->down == NULL) {
                d->down = w;
                d->down_peer = 1 - rank;
            }
            if (is_back && d->back == NULL) {
                d->back = w;
                d->back_peer = 1 - rank;
            }
        }
        mw_plan_destroy(plan);
    }
    if (d->down != NULL && d->back != NULL) {
        rc = mw_world_wait_ready(d->down, deadline - mw_now_ms(), errstr, errstr_size);
        if (rc == MW_OK)
            rc = mw_world_wait_ready(d->back, deadline - mw_now_ms(), errstr, errstr_size);
    } else {
        mw_errf(rc, errstr, errstr_size, "no plan put stage 0 on a cycle through %d stages in time",
                d->nstages);
    }
    mw_redis_destroy(r);
    return rc;
}

static int setup(mwt_driver_t *d, const mwt_driver_opts_t *o, int64_t deadline, char *errstr,
                 size_t errstr_size)
{
    char out[600], v[64];
    const char *tmp = getenv("MWTEST_DIR") ? getenv("MWTEST_DIR") : "/tmp";
    snprintf(d->pipeline, sizeof(d->pipeline), "%s", "drv");
    snprintf(d->dir, sizeof(d->dir), "%s/%s", tmp, mwt_name("driver"));
    snprintf(d->model_path, sizeof(d->model_path), "%s/model.safetensors", d->dir);
    snprintf(out, sizeof(out), "mkdir -p '%s'", d->dir);
    if (mwt_run(out, NULL, 0) != 0)
        return mw_errf(MW_EIO, errstr, errstr_size, "cannot create %s", d->dir);
    int rc = shell(d, "start", out, sizeof(out), errstr, errstr_size);
    if (rc != MW_OK)
        return rc;
    out[strcspn(out, "\n")] = '\0';
    const char *colon = strrchr(out, ':');
    snprintf(v, sizeof(v), "%lld", (long long)o->world_timeout_ms);
    if (colon == NULL ||
        mw_config_set(&d->cfg, "redis.port", colon + 1, "driver", errstr, errstr_size) != 0 ||
        mw_config_set(&d->cfg, "redis.host", "127.0.0.1", "driver", errstr, errstr_size) != 0 ||
        mw_config_set(&d->cfg, "cluster.name", mwt_prefix(), "driver", errstr, errstr_size) != 0 ||
        mw_config_set(&d->cfg, "world.timeout_ms", v, "driver", errstr, errstr_size) != 0)
        return mw_errf(MW_EINVAL, errstr, errstr_size, "redis address '%s'", out);

    mw_layer_range_t ranges[MAX_STAGES];
    if ((rc = mw_model_generate(&o->model, d->model_path, errstr, errstr_size)) != MW_OK ||
        (rc = mw_model_open(d->model_path, &d->model, errstr, errstr_size)) != MW_OK ||
        (rc = mw_model_split(d->model, o->nstages, ranges, errstr, errstr_size)) != MW_OK ||
        (rc = mw_stage_new(d->model, ranges[0].first, ranges[0].last, o->max_rows,
                           strncmp(o->device, "cuda:", 5) == 0 ? atoi(o->device + 5) : -1,
                           &d->stage0, errstr, errstr_size)) != MW_OK)
        return rc;

    char spec[900], id[64], stage[32], pipeline[128], device[64], rows[64];
    snprintf(spec, sizeof(spec), "--pipeline.spec={\"name\":\"%s\",\"stages\":%d,\"model\":\"%s\"}",
             d->pipeline, o->nstages, d->model_path);
    const char *cargs[] = {spec, "--coordinator.interval_ms=50", "--coordinator.lease_ms=1000",
                           NULL};
    d->coordinator = spawn(d, "mw-coordinator", cargs);
    snprintf(pipeline, sizeof(pipeline), "--pipeline=%s", d->pipeline);
    snprintf(device, sizeof(device), "--device=%s", o->device);
    snprintf(rows, sizeof(rows), "--batch.max_rows=%d", o->max_rows);
    for (int k = 1; k < o->nstages; k++) {
        snprintf(id, sizeof(id), "--id=s%d", k);
        snprintf(stage, sizeof(stage), "--stage=%d", k);
        const char *wargs[] = {id, stage, pipeline, device, rows, NULL};
        d->workers[k] = spawn(d, "mw-worker", wargs);
    }
    if (d->coordinator <= 0)
        return mw_errf(MW_EIO, errstr, errstr_size, "cannot start mw-coordinator");

    mw_world_options_t wo;
    mw_world_options_from_config(&d->cfg, &wo);
    d->ctx = mw_worlds_new(&wo, errstr, errstr_size);
    if (d->ctx == NULL)
        return MW_EIO;
    snprintf(d->info.id, sizeof(d->info.id), DRIVER_ID);
    gethostname(d->info.host, sizeof(d->info.host) - 1);
    d->info.pid = getpid();
    snprintf(d->info.pipeline, sizeof(d->info.pipeline), "%s", d->pipeline);
    d->info.stage = 0;
    snprintf(d->info.device, sizeof(d->info.device), "cpu");
    d->info.capacity = 1;
    d->info.state = MW_MEMBER_READY;
    d->info.assigned_stage = -1;
    if (pthread_create(&d->heartbeat, NULL, heartbeat_main, d) != 0)
        return mw_errf(MW_ENOMEM, errstr, errstr_size, "cannot start the heartbeat thread");
    d->heartbeat_started = 1;
    d->incarnation = ((uint64_t)getpid() << 32) ^ (uint64_t)mw_now_ms();
    return join_planned_worlds(d, deadline, errstr, errstr_size);
}

mwt_driver_t *mwt_driver_new(const mwt_driver_opts_t *opts, int64_t timeout_ms, char *errstr,
                             size_t errstr_size)
{
    if (opts->nstages < 2 || opts->nstages > MAX_STAGES || opts->max_rows < 1) {
        mw_errf(MW_EINVAL, errstr, errstr_size, "driver: 2..%d stages and max_rows >= 1",
                MAX_STAGES);
        return NULL;
    }
    mwt_driver_t *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return NULL;
    d->nstages = opts->nstages;
    d->max_rows = opts->max_rows;
    mw_config_init(&d->cfg);
    if (setup(d, opts, mw_now_ms() + timeout_ms, errstr, errstr_size) != MW_OK) {
        mwt_driver_destroy(d);
        return NULL;
    }
    return d;
}

void mwt_driver_destroy(mwt_driver_t *d)
{
    if (d == NULL)
        return;
    d->stop = 1;
    if (d->heartbeat_started)
        pthread_join(d->heartbeat, NULL);
    for (int i = 0; i < d->nworlds; i++)
        mw_world_destroy(d->worlds[i]);
    mw_world_req_free(d->ah); /* failed with MW_ECLOSED by now */
    mw_worlds_destroy(d->ctx);
    for (int k = 1; k < d->nstages; k++)
        if (d->workers[k] > 0) {
            kill(-d->workers[k], SIGKILL);
            mwt_wait_exit(d->workers[k], 10000);
        }
    if (d->coordinator > 0) {
        kill(-d->coordinator, SIGKILL);
        mwt_wait_exit(d->coordinator, 10000);
    }
    char cmd[700];
    if (d->dir[0] != '\0') {
        shell(d, "kill", NULL, 0, cmd, sizeof(cmd));
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d->dir);
        mwt_run(cmd, NULL, 0);
    }
    mw_stage_destroy(d->stage0);
    mw_model_destroy(d->model);
    mw_config_fini(&d->cfg);
    free(d);
}

const char *mwt_driver_model_path(const mwt_driver_t *d)
{
    return d->model_path;
}

const mw_model_t *mwt_driver_model(const mwt_driver_t *d)
{
    return d->model;
}

const mw_config_t *mwt_driver_config(const mwt_driver_t *d)
{
    return &d->cfg;
}

int mwt_driver_worker_pid(const mwt_driver_t *d, int stage)
{
    return stage > 0 && stage < d->nstages ? d->workers[stage] : -1;
}

/* One run's state: a send (header + tensor) and a receive (header, then
 * tensor) in flight at a time, up to window batches between them. */
typedef struct run {
    mw_world_req_t *sh, *st, *rh, *rt;
    uint8_t sframe[MW_WORLD_HEADER_MAX], rframe[MW_WORLD_HEADER_MAX];
    mw_hop_t rhop;
    float *x, *h, *y;
} run_t;

/* 1 when req completed (freed), 0 while pending; a failure goes to *rc. */
static int done(mw_world_req_t **req, int *rc, char *errstr, size_t errstr_size)
{
    if (*req == NULL || mw_world_test(*req) == MW_EAGAIN)
        return 0;
    int r = mw_world_wait(*req, 0, errstr, errstr_size);
    if (r != MW_OK && *rc == MW_OK)
        *rc = r;
    return 1;
}

int mwt_driver_run(mwt_driver_t *d, int nbatches, int rows, int window,
                   void (*fill)(int batch, int rows, float *x, void *user),
                   int (*check)(int batch, int rows, const float *y, void *user), void *user,
                   int64_t timeout_ms, char *errstr, size_t errstr_size)
{
    mw_stage_info_t si;
    mw_stage_get_info(d->stage0, &si);
    int inputs = mw_model_inputs(d->model), outputs = mw_model_outputs(d->model);
    if (rows < 1 || rows > d->max_rows || window < 1)
        return mw_errf(MW_EINVAL, errstr, errstr_size, "rows 1..%d, window >= 1", d->max_rows);
    run_t r = {0};
    r.x = malloc((size_t)rows * (size_t)inputs * sizeof(float));
    r.h = malloc((size_t)rows * (size_t)si.out_features * sizeof(float));
    r.y = malloc((size_t)rows * (size_t)outputs * sizeof(float));
    int rc = r.x && r.h && r.y ? MW_OK : MW_ENOMEM;
    int sent = 0, received = 0;
    int64_t progress_ms = mw_now_ms();
    while (rc == MW_OK && received < nbatches) {
        int moved = 0;
        if (r.sh == NULL && sent < nbatches && sent - received < window) {
            fill(sent, rows, r.x, user);
            rc = mw_stage_forward(d->stage0, r.x, rows, r.h);
            mw_hop_t hop = {
                .type = MW_HOP_TENSOR,
                .stage = 0,
                .incarnation = d->incarnation,
                .batch = (uint64_t)sent,
                .nrequests = (uint32_t)rows,
                .desc = {.dtype = MW_DTYPE_F32, .ndim = 2, .shape = {rows, si.out_features}},
                .nbytes = (uint64_t)rows * (uint64_t)si.out_features * sizeof(float)};
            snprintf(hop.origin, sizeof(hop.origin), DRIVER_ID);
            int len = rc == MW_OK ? mw_hop_encode(&hop, r.sframe, sizeof(r.sframe)) : rc;
            if (len < 0 ||
                (rc = mw_world_isend_header(d->down, d->down_peer, r.sframe, (size_t)len, &r.sh)) !=
                    MW_OK ||
                (rc = mw_world_isend(d->down, d->down_peer, &hop.desc, r.h, &r.st)) != MW_OK) {
                rc = rc != MW_OK ? rc : len;
                mw_errf(rc, errstr, errstr_size, "cannot send batch %d", sent);
                break;
            }
            sent++;
            moved = 1;
        }
        if (r.sh != NULL && mw_world_test(r.st) != MW_EAGAIN &&
            done(&r.sh, &rc, errstr, errstr_size) && done(&r.st, &rc, errstr, errstr_size)) {
            mw_world_req_free(r.sh);
            mw_world_req_free(r.st);
            r.sh = r.st = NULL;
            moved = 1;
        }
        if (d->ah == NULL && d->down != d->back && rc == MW_OK)
            rc = mw_world_irecv_header(d->down, d->down_peer, d->aframe, sizeof(d->aframe), &d->ah);
        if (done(&d->ah, &rc, errstr, errstr_size)) {
            mw_hop_t a;
            size_t len = (size_t)mw_world_req_bytes(d->ah);
            mw_world_req_free(d->ah);
            d->ah = NULL;
            if (rc == MW_OK &&
                (rc = mw_hop_decode(&a, d->aframe, len, errstr, errstr_size)) == MW_OK)
                rc = mw_errf(MW_EABORTED, errstr, errstr_size, "batch %llu aborted by stage %d",
                             (unsigned long long)a.batch, a.stage);
            break;
        }
        if (r.rh == NULL && r.rt == NULL && received < sent)
            rc = mw_world_irecv_header(d->back, d->back_peer, r.rframe, sizeof(r.rframe), &r.rh);
        if (done(&r.rh, &rc, errstr, errstr_size)) {
            size_t len = (size_t)mw_world_req_bytes(r.rh);
            mw_world_req_free(r.rh);
            r.rh = NULL;
            if (rc == MW_OK &&
                (rc = mw_hop_decode(&r.rhop, r.rframe, len, errstr, errstr_size)) == MW_OK) {
                if (r.rhop.type != MW_HOP_TENSOR)
                    rc = mw_errf(MW_EABORTED, errstr, errstr_size, "batch %llu aborted by stage %d",
                                 (unsigned long long)r.rhop.batch, r.rhop.stage);
                else if (r.rhop.nbytes != (uint64_t)rows * (uint64_t)outputs * sizeof(float))
                    rc = mw_errf(MW_EPROTO, errstr, errstr_size, "batch %llu: %llu bytes back",
                                 (unsigned long long)r.rhop.batch,
                                 (unsigned long long)r.rhop.nbytes);
                else
                    rc = mw_world_irecv(d->back, d->back_peer, r.y, r.rhop.nbytes, &r.rt);
            }
            moved = 1;
        }
        if (done(&r.rt, &rc, errstr, errstr_size)) {
            mw_world_req_free(r.rt);
            r.rt = NULL;
            if (rc == MW_OK)
                rc = check((int)r.rhop.batch, rows, r.y, user);
            received++;
            moved = 1;
        }
        if (moved) {
            progress_ms = mw_now_ms();
            continue;
        }
        mw_world_t *broken = mw_world_state(d->down) == MW_WORLD_BROKEN   ? d->down
                             : mw_world_state(d->back) == MW_WORLD_BROKEN ? d->back
                                                                          : NULL;
        if (broken != NULL) {
            rc = mw_world_error(broken, errstr, errstr_size);
            rc = rc != MW_OK ? rc : MW_EBROKEN;
            break;
        }
        if (mw_now_ms() - progress_ms > timeout_ms) {
            rc = mw_errf(MW_ETIMEDOUT, errstr, errstr_size,
                         "no progress for %lld ms: %d batches sent, %d back", (long long)timeout_ms,
                         sent, received);
            break;
        }
        struct pollfd pfd = {.fd = mw_worlds_done_fd(d->ctx), .events = POLLIN};
        poll(&pfd, 1, 10);
        mw_worlds_done_clear(d->ctx);
    }
    /* A request still pending breaks its world when freed: the run is over then. */
    mw_world_req_free(r.sh);
    mw_world_req_free(r.st);
    mw_world_req_free(r.rh);
    mw_world_req_free(r.rt);
    free(r.x);
    free(r.h);
    free(r.y);
    return rc;
}
