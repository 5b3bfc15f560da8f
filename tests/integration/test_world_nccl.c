/* The NCCL backend on a GPU machine (skipped where NCCL is not built or no
 * CUDA device answers): a world of one member on device memory, and two ranks
 * sharing one GPU either work or fail their join cleanly within the deadline
 * (never hang). */
#include "test_world_util.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#ifdef MW_HAVE_NCCL
#include <cuda_runtime.h>

/* 0, saying why, where no CUDA device answers (a build against NCCL's and the
 * CUDA runtime's libraries on a machine without a GPU or driver). */
static int have_device(void)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e == cudaSuccess && n > 0)
        return 1;
    printf("# no CUDA device: %s\n", e != cudaSuccess ? cudaGetErrorString(e) : "none found");
    return 0;
}

static mw_world_t *nccl_join(mw_worlds_t *ctx, const char *name, int size, int rank)
{
    char err[512];
    mw_world_t *w = NULL;
    mw_world_opts_t o = {.name = name,
                         .epoch = 1,
                         .size = size,
                         .rank = rank,
                         .backend = "nccl",
                         .timeout_ms = mwt_scaled(20000)};
    if (mw_world_join(ctx, &o, &w, err, sizeof(err)) != 0)
        fail_msg("join %s rank %d of %d: %s", name, rank, size, err);
    return w;
}

static void nccl_world_of_one_reduces_and_broadcasts_device_memory(void **state)
{
    (void)state;
    char err[512];
    if (!have_device())
        skip();
    mw_worlds_t *ctx = wt_ctx(5000);
    mw_world_t *w = nccl_join(ctx, mwt_name("nccl.solo"), 1, 0);
    if (mw_world_wait_ready(w, 30000, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    enum { N = 1 << 20 };
    float *host = malloc(N * sizeof(float)), *dev;
    for (int i = 0; i < N; i++)
        host[i] = (float)(i % 1000);
    assert_int_equal(cudaMalloc((void **)&dev, N * sizeof(float)), cudaSuccess);
    cudaMemcpy(dev, host, N * sizeof(float), cudaMemcpyHostToDevice);
    mw_tensor_desc_t d = {.dtype = MW_DTYPE_F32, .ndim = 1, .shape = {N}};
    assert_int_equal(mw_world_all_reduce(w, MW_REDUCE_SUM, &d, dev, 30000, err, sizeof(err)), 0);
    assert_int_equal(mw_world_broadcast(w, 0, &d, dev, 30000, err, sizeof(err)), 0);
    assert_int_equal(mw_world_barrier(w, 30000, err, sizeof(err)), 0);
    memset(host, 0, N * sizeof(float));
    cudaMemcpy(host, dev, N * sizeof(float), cudaMemcpyDeviceToHost);
    for (int i = 0; i < N; i++)
        assert_true(host[i] == (float)(i % 1000));
    cudaFree(dev);
    free(host);
    mw_world_destroy(w);
    mw_worlds_destroy(ctx);
}

static void nccl_two_ranks_on_one_gpu_work_or_fail_cleanly(void **state)
{
    (void)state;
    char err[512];
    if (!have_device())
        skip();
    mw_worlds_t *ctx = wt_ctx(5000);
    const char *name = mwt_name("nccl.pair");
    mw_world_t *w0 = nccl_join(ctx, name, 2, 0), *w1 = nccl_join(ctx, name, 2, 1);
    int r0 = mw_world_wait_ready(w0, 60000, err, sizeof(err));
    printf("# rank 0: %s\n", r0 == 0 ? "ready" : err);
    int r1 = mw_world_wait_ready(w1, 60000, err, sizeof(err));
    printf("# rank 1: %s\n", r1 == 0 ? "ready" : err);
    assert_int_not_equal(mw_world_state(w0), MW_WORLD_JOINING);
    assert_int_not_equal(mw_world_state(w1), MW_WORLD_JOINING);
    if (r0 == 0 && r1 == 0) {
        /* headers still travel over the TCP side channel */
        size_t len;
        char b[8];
        assert_int_equal(mw_world_send_header(w0, 1, "hi", 2, 30000, err, sizeof(err)), 0);
        assert_int_equal(mw_world_recv_header(w1, 0, b, sizeof(b), &len, 30000, err, sizeof(err)),
                         0);
        assert_int_equal(len, 2);
    }
    mw_world_destroy(w1);
    mw_world_destroy(w0);
    mw_worlds_destroy(ctx);
}
#else
static void nccl_backend_is_not_built_here(void **state)
{
    (void)state;
    skip();
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
#ifdef MW_HAVE_NCCL
        cmocka_unit_test(nccl_world_of_one_reduces_and_broadcasts_device_memory),
        cmocka_unit_test(nccl_two_ranks_on_one_gpu_work_or_fail_cleanly),
#else
        cmocka_unit_test(nccl_backend_is_not_built_here),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
