/* The cuda-ipc world backend on a GPU machine (skipped, saying why, where it is
 * not built or no CUDA device answers): two processes on one GPU move 4 MiB
 * device tensors both ways, many in flight, with header frames alongside;
 * a peer killed with SIGKILL mid-stream breaks the survivor's world within
 * world.timeout_ms, and the survivor's device memory is back to what it was
 * once the world is destroyed. CUDA IPC cannot open a handle in the process
 * that exported it, so every rank is a child; the parent touches no CUDA. */
#include "test_world_util.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#ifdef MW_HAVE_CUDA_IPC
#include <cuda_runtime.h>

#define NBYTES           (4u << 20)
#define ROUNDS           16
#define EXIT_NO_DEVICE   77
#define WORLD_TIMEOUT_MS 2000

typedef struct child_arg {
    const char *name;
    int rank;
    int fd;    /* kill test: the victim writes the time it dies, the survivor reads it */
    int fd_go; /* kill test: the survivor says when it has measured its free memory */
} child_arg_t;

static int no_device(void)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e == cudaSuccess && n > 0)
        return 0;
    fprintf(stderr, "# no CUDA device: %s\n",
            e != cudaSuccess ? cudaGetErrorString(e) : "none found");
    return 1;
}

static mw_world_t *ipc_join(mw_worlds_t *ctx, const char *name, int rank)
{
    char err[512];
    mw_world_t *w = NULL;
    mw_world_opts_t o = {.name = name,
                         .epoch = 1,
                         .size = 2,
                         .rank = rank,
                         .backend = "cuda-ipc",
                         .timeout_ms = mwt_scaled(30000)};
    if (mw_world_join(ctx, &o, &w, err, sizeof(err)) != 0 ||
        mw_world_wait_ready(w, mwt_scaled(30000), err, sizeof(err)) != 0) {
        fprintf(stderr, "join %s rank %d: %s\n", name, rank, err);
        mw_world_destroy(w);
        return NULL;
    }
    return w;
}

/* Rank 0 posts ROUNDS sends at once (the pool grows to hold them), rank 1
 * receives each into its own device buffer; then one tensor goes back. */
static int transfer_child(void *arg)
{
    const child_arg_t *a = arg;
    char err[512];
    if (no_device())
        return EXIT_NO_DEVICE;
    mw_worlds_t *ctx = wt_ctx(WORLD_TIMEOUT_MS);
    mw_world_t *w = ipc_join(ctx, a->name, a->rank);
    if (w == NULL)
        WT_FAIL("join failed");
    uint8_t *host = malloc(NBYTES);
    void *dev[ROUNDS] = {NULL};
    mw_world_req_t *reqs[ROUNDS] = {NULL};
    mw_tensor_desc_t d = wt_bytes(NBYTES);
    for (int i = 0; i < ROUNDS; i++)
        if (cudaMalloc(&dev[i], NBYTES) != cudaSuccess)
            WT_FAIL("cudaMalloc");
    for (int i = 0; i < ROUNDS; i++) {
        if (a->rank == 0) {
            wt_fill(host, NBYTES, 1, (uint64_t)i);
            cudaMemcpy(dev[i], host, NBYTES, cudaMemcpyHostToDevice);
            if (mw_world_isend(w, 1, &d, dev[i], &reqs[i]) != 0)
                WT_FAIL("isend %d", i);
        } else if (mw_world_irecv(w, 0, dev[i], NBYTES, &reqs[i]) != 0) {
            WT_FAIL("irecv %d", i);
        }
    }
    for (int i = 0; i < ROUNDS; i++) {
        if (mw_world_wait(reqs[i], mwt_scaled(30000), err, sizeof(err)) != 0)
            WT_FAIL("transfer %d: %s", i, err);
        if (a->rank == 1) {
            if (mw_world_req_bytes(reqs[i]) != NBYTES)
                WT_FAIL("transfer %d: %llu bytes", i,
                        (unsigned long long)mw_world_req_bytes(reqs[i]));
            cudaMemcpy(host, dev[i], NBYTES, cudaMemcpyDeviceToHost);
            int64_t off = wt_check(host, NBYTES, 1, (uint64_t)i);
            if (off >= 0)
                WT_FAIL("transfer %d differs at byte %lld", i, (long long)off);
        }
        mw_world_req_free(reqs[i]);
    }
    size_t len = 0;
    char hdr[8];
    if (a->rank == 1) {
        wt_fill(host, NBYTES, 2, 0);
        cudaMemcpy(dev[0], host, NBYTES, cudaMemcpyHostToDevice);
        if (mw_world_send(w, 0, &d, dev[0], mwt_scaled(30000), err, sizeof(err)) != 0 ||
            mw_world_send_header(w, 0, "hi", 2, mwt_scaled(30000), err, sizeof(err)) != 0)
            WT_FAIL("send back: %s", err);
    } else {
        mw_tensor_desc_t got;
        if (mw_world_recv(w, 1, dev[0], NBYTES, &got, mwt_scaled(30000), err, sizeof(err)) != 0 ||
            mw_world_recv_header(w, 1, hdr, sizeof(hdr), &len, mwt_scaled(30000), err,
                                 sizeof(err)) != 0)
            WT_FAIL("receive back: %s", err);
        cudaMemcpy(host, dev[0], NBYTES, cudaMemcpyDeviceToHost);
        if (wt_check(host, NBYTES, 2, 0) >= 0 || got.shape[0] != NBYTES || len != 2)
            WT_FAIL("tensor or header sent back differs");
    }
    if (mw_world_barrier(w, 0, err, sizeof(err)) != MW_EINVAL)
        WT_FAIL("a collective on a cuda-ipc world was not refused");
    mw_world_destroy(w);
    mw_worlds_destroy(ctx);
    for (int i = 0; i < ROUNDS; i++)
        cudaFree(dev[i]);
    free(host);
    return 0;
}

/* Runs one child per rank; skips when they find no device. */
static void run_pair(int (*fn)(void *), child_arg_t *args)
{
    pid_t p0 = wt_fork(fn, &args[0]), p1 = wt_fork(fn, &args[1]);
    int r0 = wt_reap(p0, mwt_scaled(120000)), r1 = wt_reap(p1, mwt_scaled(120000));
    if (r0 == EXIT_NO_DEVICE || r1 == EXIT_NO_DEVICE)
        skip();
    if (r0 != 0 || r1 != 0)
        fail_msg("rank 0 exited %d, rank 1 exited %d", r0, r1);
}

static void cuda_ipc_pair_on_one_gpu_moves_device_tensors_both_ways(void **state)
{
    (void)state;
    const char *name = mwt_name("ipc.pair");
    child_arg_t args[2] = {{.name = name, .rank = 0}, {.name = name, .rank = 1}};
    run_pair(transfer_child, args);
}

/* Rank 1 receives one tensor, writes the time and kills itself; rank 0 keeps
 * sending until its world breaks, then checks how long that took and that
 * its device memory is back. */
static int kill_child(void *arg)
{
    const child_arg_t *a = arg;
    char err[512], go = 1;
    /* the victim starts CUDA only once the survivor has measured its free memory */
    if (a->rank == 1 && read(a->fd_go, &go, 1) != 1)
        WT_FAIL("read go");
    if (no_device()) {
        if (a->rank == 0 && write(a->fd_go, &go, 1) != 1)
            WT_FAIL("write go");
        return EXIT_NO_DEVICE;
    }
    size_t free_before = 0, free_after = 0, total = 0;
    cudaFree(0);
    mw_worlds_t *ctx = wt_ctx(WORLD_TIMEOUT_MS);
    void *dev = NULL;
    if (cudaMalloc(&dev, NBYTES) != cudaSuccess)
        WT_FAIL("cudaMalloc");
    cudaMemGetInfo(&free_before, &total);
    if (a->rank == 0 && write(a->fd_go, &go, 1) != 1)
        WT_FAIL("write go");
    mw_world_t *w = ipc_join(ctx, a->name, a->rank);
    if (w == NULL)
        WT_FAIL("join failed");
    mw_tensor_desc_t d = wt_bytes(NBYTES);
    if (a->rank == 1) {
        mw_tensor_desc_t got;
        if (mw_world_recv(w, 0, dev, NBYTES, &got, mwt_scaled(30000), err, sizeof(err)) != 0)
            WT_FAIL("recv: %s", err);
        int64_t now = mw_now_ms();
        if (write(a->fd, &now, sizeof(now)) != (ssize_t)sizeof(now))
            WT_FAIL("write");
        kill(getpid(), SIGKILL);
    }
    /* sends until the world breaks (a full pool refuses more: the dead peer acks nothing) */
    while (mw_world_state(w) == MW_WORLD_READY)
        if (mw_world_send(w, 1, &d, dev, mwt_scaled(30000), err, sizeof(err)) != 0)
            mwt_sleep_ms(1);
    int64_t broke = mw_now_ms(), died = 0;
    mw_world_error(w, err, sizeof(err));
    if (read(a->fd, &died, sizeof(died)) != (ssize_t)sizeof(died))
        WT_FAIL("read");
    fprintf(stderr, "# broke %lld ms after the peer died: %s\n", (long long)(broke - died), err);
    if (broke - died > mwt_scaled(WORLD_TIMEOUT_MS) + mwt_scaled(500))
        WT_FAIL("took %lld ms, world.timeout_ms is %d", (long long)(broke - died),
                WORLD_TIMEOUT_MS);
    mw_world_destroy(w);
    mw_worlds_destroy(ctx);
    /* the pool is freed and the import closed: the GPU's free memory is back
     * (the dead peer's memory is reclaimed by the driver, not at once) */
    int64_t deadline = mw_now_ms() + mwt_scaled(10000);
    do {
        cudaMemGetInfo(&free_after, &total);
    } while (free_after < free_before && mw_now_ms() < deadline && (mwt_sleep_ms(50), 1));
    if (free_after < free_before)
        WT_FAIL("device memory leaked: %zu bytes free before, %zu after", free_before, free_after);
    cudaFree(dev);
    return 0;
}

/* Where no device answers (a CPU machine building against the CUDA runtime),
 * the join fails at once with the runtime's reason instead of hanging. */
static int no_device_child(void *arg)
{
    const child_arg_t *a = arg;
    char err[512];
    if (!no_device())
        return EXIT_NO_DEVICE; /* nothing to check where a device answers */
    mw_worlds_t *ctx = wt_ctx(WORLD_TIMEOUT_MS);
    mw_world_t *w = NULL;
    mw_world_opts_t o = {.name = a->name, .epoch = 1, .size = 2, .backend = "cuda-ipc"};
    int rc = mw_world_join(ctx, &o, &w, err, sizeof(err));
    mw_worlds_destroy(ctx);
    if (rc == 0 || strstr(err, "CUDA IPC world setup") == NULL)
        WT_FAIL("join without a device: rc %d, '%s'", rc, err);
    fprintf(stderr, "# %s\n", err);
    return 0;
}

static void cuda_ipc_join_without_a_device_fails_at_once_naming_the_cause(void **state)
{
    (void)state;
    child_arg_t a = {.name = mwt_name("ipc.nodevice")};
    int rc = wt_reap(wt_fork(no_device_child, &a), mwt_scaled(30000));
    if (rc == EXIT_NO_DEVICE)
        skip();
    assert_int_equal(rc, 0);
}

static void killed_peer_breaks_cuda_ipc_world_in_time_and_leaks_no_device_memory(void **state)
{
    (void)state;
    int fds[2], go[2];
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(pipe(go), 0);
    const char *name = mwt_name("ipc.kill");
    child_arg_t args[2] = {{.name = name, .rank = 0, .fd = fds[0], .fd_go = go[1]},
                           {.name = name, .rank = 1, .fd = fds[1], .fd_go = go[0]}};
    pid_t p0 = wt_fork(kill_child, &args[0]), p1 = wt_fork(kill_child, &args[1]);
    int r1 = wt_reap(p1, mwt_scaled(120000)), r0 = wt_reap(p0, mwt_scaled(120000));
    close(fds[0]);
    close(fds[1]);
    close(go[0]);
    close(go[1]);
    if (r0 == EXIT_NO_DEVICE || r1 == EXIT_NO_DEVICE)
        skip();
    if (r0 != 0 || r1 != 128 + SIGKILL)
        fail_msg("survivor exited %d, victim %d (want 0 and killed)", r0, r1);
}
#else
static void cuda_ipc_backend_is_not_built_here(void **state)
{
    (void)state;
    fprintf(stderr, "# the cuda-ipc backend needs the CUDA runtime at build time\n");
    skip();
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
#ifdef MW_HAVE_CUDA_IPC
        cmocka_unit_test(cuda_ipc_join_without_a_device_fails_at_once_naming_the_cause),
        cmocka_unit_test(cuda_ipc_pair_on_one_gpu_moves_device_tensors_both_ways),
        cmocka_unit_test(killed_peer_breaks_cuda_ipc_world_in_time_and_leaks_no_device_memory),
#else
        cmocka_unit_test(cuda_ipc_backend_is_not_built_here),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
