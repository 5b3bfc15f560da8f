/* Helpers shared by the world integration tests (header-only: each test binary
 * is one .c file): byte patterns, child processes, fd counting, config. */
#ifndef MW_TEST_WORLD_UTIL_H
#define MW_TEST_WORLD_UTIL_H

#include "err.h"
#include "harness.h"
#include "world/world.h"

#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static inline uint64_t wt_mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Fills buf with bytes derived from (world, seq, offset). */
static inline void wt_fill(void *buf, size_t n, uint64_t world, uint64_t seq)
{
    uint8_t *p = buf;
    uint64_t key = wt_mix(world * 1000003u + seq);
    size_t words = n / 8;
    for (size_t i = 0; i < words; i++) {
        uint64_t v = wt_mix(key + i);
        memcpy(p + 8 * i, &v, 8);
    }
    uint64_t v = wt_mix(key + words);
    memcpy(p + 8 * words, &v, n % 8);
}

/* Offset of the first byte that differs from wt_fill's, or -1 when all match. */
static inline int64_t wt_check(const void *buf, size_t n, uint64_t world, uint64_t seq)
{
    const uint8_t *p = buf;
    uint64_t key = wt_mix(world * 1000003u + seq);
    size_t words = n / 8;
    for (size_t i = 0; i <= words; i++) {
        uint64_t v = wt_mix(key + i);
        size_t len = i < words ? 8 : n % 8;
        if (memcmp(p + 8 * i, &v, len) != 0) {
            for (size_t j = 0; j < len; j++)
                if (p[8 * i + j] != ((uint8_t *)&v)[j])
                    return (int64_t)(8 * i + j);
        }
    }
    return -1;
}

static inline int wt_count_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return -1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory's own fd */
}

/* A test config (real Redis from tests/run.sh) with world.timeout_ms set. */
static inline void wt_config(mw_config_t *cfg, int64_t timeout_ms)
{
    char v[32], err[256];
    mwt_config(cfg);
    snprintf(v, sizeof(v), "%lld", (long long)timeout_ms);
    if (mw_config_set(cfg, "world.timeout_ms", v, "test", err, sizeof(err)) != 0) {
        fprintf(stderr, "config: %s\n", err);
        exit(2);
    }
}

static inline mw_worlds_t *wt_ctx(int64_t timeout_ms)
{
    mw_config_t cfg;
    char err[256];
    wt_config(&cfg, timeout_ms);
    mw_world_options_t wo;
    mw_world_options_from_config(&cfg, &wo);
    mw_worlds_t *ctx = mw_worlds_new(&wo, err, sizeof(err));
    mw_config_fini(&cfg);
    if (ctx == NULL) {
        fprintf(stderr, "mw_worlds_new: %s\n", err);
        exit(2);
    }
    return ctx;
}

/* Joins and waits until ready; NULL (with a message) on failure. */
static inline mw_world_t *wt_join(mw_worlds_t *ctx, const char *name, int64_t epoch, int size,
                                  int rank, int64_t timeout_ms)
{
    char err[512];
    mw_world_t *w = NULL;
    mw_world_opts_t o = {.name = name,
                         .epoch = epoch,
                         .size = size,
                         .rank = rank,
                         .backend = "tcp",
                         .timeout_ms = timeout_ms};
    if (mw_world_join(ctx, &o, &w, err, sizeof(err)) != 0) {
        fprintf(stderr, "join %s: %s\n", name, err);
        return NULL;
    }
    if (mw_world_wait_ready(w, -1, err, sizeof(err)) != 0) {
        fprintf(stderr, "join %s rank %d: %s\n", name, rank, err);
        mw_world_destroy(w);
        return NULL;
    }
    return w;
}

static inline mw_tensor_desc_t wt_bytes(size_t n)
{
    mw_tensor_desc_t d = {.dtype = MW_DTYPE_U8, .ndim = 1, .shape = {(int64_t)n}};
    return d;
}

/* Runs fn(arg) in a child process (fork before any thread exists). */
static inline pid_t wt_fork(int (*fn)(void *), void *arg)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        /* cmocka's handlers would resume the test runner inside the child */
        int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGSYS};
        for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
            signal(sigs[i], SIG_DFL);
        _exit(fn(arg));
    }
    return pid;
}

/* Waits for a child; returns its exit code, 128+signal, or -1 on timeout (then kills it). */
static inline int wt_reap(pid_t pid, int64_t timeout_ms)
{
    int st = mwt_wait_exit(pid, timeout_ms);
    if (st == -1) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        return -1;
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

#define WT_FAIL(...)                                                                               \
    do {                                                                                           \
        fprintf(stderr, "child %d: ", (int)getpid());                                              \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fprintf(stderr, "\n");                                                                     \
        return 1;                                                                                  \
    } while (0)

#endif
