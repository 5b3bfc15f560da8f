/* cuda-ipc vs host staging (JSON line): two processes on one GPU move 4 MiB
 * device tensors from rank 0 to rank 1, 4 in flight: over a cuda-ipc world
 * (device to device), and over a tcp world with the host staging a data plane
 * does without it (device -> pinned host, TCP, pinned host -> device). The
 * value is cuda-ipc's MiB/s, the baseline tcp's. GPU machines only: where no
 * CUDA device answers (or the backend is not built) it says so and prints
 * nothing. Each rank is a child: CUDA IPC cannot open a handle in the process
 * that exported it. MW_BENCH_ROUNDS sets the tensors per backend (200). */
#include "clock.h"
#include "err.h"
#include "harness.h"
#include "world/world.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define NBYTES         (4u << 20)
#define WINDOW         4
#define EXIT_NO_DEVICE 77

#ifdef MW_HAVE_CUDA_IPC
#include <cuda_runtime.h>

static int fail(const char *what, const char *err)
{
    fprintf(stderr, "bench_world_cuda_ipc[%d]: %s: %s\n", (int)getpid(), what, err);
    return 1;
}

/* One rank of one backend; rank 0 writes the MiB/s it measured to fd. */
static int rank_main(const char *backend, const char *name, int rank, int rounds, int fd)
{
    char err[512];
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0)
        return EXIT_NO_DEVICE;
    mw_config_t cfg;
    mwt_config(&cfg);
    mw_world_options_t wo;
    mw_world_options_from_config(&cfg, &wo);
    mw_worlds_t *ctx = mw_worlds_new(&wo, err, sizeof(err));
    mw_config_fini(&cfg);
    mw_world_t *w = NULL;
    mw_world_opts_t o = {
        .name = name, .epoch = 1, .size = 2, .rank = rank, .backend = backend, .timeout_ms = 30000};
    if (ctx == NULL || mw_world_join(ctx, &o, &w, err, sizeof(err)) != 0 ||
        mw_world_wait_ready(w, 30000, err, sizeof(err)) != 0)
        return fail("join", err);
    int staged = strcmp(backend, "tcp") == 0;
    void *dev[WINDOW], *host[WINDOW];
    for (int i = 0; i < WINDOW; i++)
        if (cudaMalloc(&dev[i], NBYTES) != cudaSuccess ||
            cudaMallocHost(&host[i], NBYTES) != cudaSuccess)
            return fail("alloc", "cuda");
    mw_tensor_desc_t d = {.dtype = MW_DTYPE_U8, .ndim = 1, .shape = {NBYTES}};
    mw_world_req_t *reqs[WINDOW] = {NULL};
    int64_t t0 = mw_now_us();
    for (int i = 0; i < rounds + WINDOW; i++) {
        int s = i % WINDOW;
        if (reqs[s] != NULL) { /* the tensor of round i - WINDOW */
            if (mw_world_wait(reqs[s], 30000, err, sizeof(err)) != 0)
                return fail("transfer", err);
            mw_world_req_free(reqs[s]);
            reqs[s] = NULL;
            if (rank == 1 && staged)
                cudaMemcpy(dev[s], host[s], NBYTES, cudaMemcpyHostToDevice);
        }
        if (i >= rounds)
            continue;
        int rc;
        if (rank == 0) {
            if (staged)
                cudaMemcpy(host[s], dev[s], NBYTES, cudaMemcpyDeviceToHost);
            rc = mw_world_isend(w, 1, &d, staged ? host[s] : dev[s], &reqs[s]);
        } else {
            rc = mw_world_irecv(w, 0, staged ? host[s] : dev[s], NBYTES, &reqs[s]);
        }
        if (rc != 0)
            return fail("post", mw_strerror(rc));
    }
    /* rank 1 says it has everything: the time covers the last copy too */
    size_t len = 0;
    char b = 1;
    if (rank == 1)
        mw_world_send_header(w, 0, &b, 1, 30000, err, sizeof(err));
    else if (mw_world_recv_header(w, 1, &b, 1, &len, 30000, err, sizeof(err)) != 0)
        return fail("done", err);
    double mib_s = (double)rounds * NBYTES / (1 << 20) / ((double)(mw_now_us() - t0) / 1e6);
    if (rank == 0 && write(fd, &mib_s, sizeof(mib_s)) != (ssize_t)sizeof(mib_s))
        return fail("write", "pipe");
    mw_world_destroy(w);
    mw_worlds_destroy(ctx);
    return 0;
}

/* Both ranks of one backend as children; MiB/s, 0 without a device, < 0 on failure. */
static double run(const char *backend, int rounds)
{
    int fds[2];
    double mib_s = -1;
    if (pipe(fds) != 0)
        return -1;
    const char *name = mwt_name(backend);
    pid_t pids[2];
    for (int r = 0; r < 2; r++) {
        fflush(NULL);
        if ((pids[r] = fork()) == 0)
            _exit(rank_main(backend, name, r, rounds, fds[1]));
    }
    int codes[2];
    for (int r = 0; r < 2; r++) {
        int st = mwt_wait_exit(pids[r], 300000);
        if (st == -1) {
            kill(pids[r], SIGKILL);
            waitpid(pids[r], &st, 0);
        }
        codes[r] = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    }
    if (codes[0] == EXIT_NO_DEVICE || codes[1] == EXIT_NO_DEVICE)
        mib_s = 0;
    else if (codes[0] == 0 && codes[1] == 0 &&
             read(fds[0], &mib_s, sizeof(mib_s)) != (ssize_t)sizeof(mib_s))
        mib_s = -1;
    close(fds[0]);
    close(fds[1]);
    return mib_s;
}

int main(void)
{
    int rounds = getenv("MW_BENCH_ROUNDS") ? atoi(getenv("MW_BENCH_ROUNDS")) : 200;
    double ipc = run("cuda-ipc", rounds);
    double tcp = ipc > 0 ? run("tcp", rounds) : ipc;
    if (ipc == 0 || tcp == 0) {
        fprintf(stderr, "bench_world_cuda_ipc: no CUDA device: nothing measured\n");
        return 0;
    }
    if (ipc < 0 || tcp < 0)
        return 1;
    printf(
        "{\"bench\": \"world_cuda_ipc\", \"metric\": \"mib_per_s_4mib_tensors\", \"value\": %.0f, "
        "\"unit\": \"MiB/s\", \"baseline\": %.0f, \"baseline_name\": \"tcp with host staging\", "
        "\"ratio\": %.2f}\n",
        ipc, tcp, ipc / tcp);
    return 0;
}
#else
int main(void)
{
    fprintf(stderr, "bench_world_cuda_ipc: built without the CUDA runtime: nothing measured\n");
    return 0;
}
#endif
