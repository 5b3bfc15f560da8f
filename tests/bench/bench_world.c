/* Worlds benchmark (JSON lines): TCP-backend bandwidth and latency against a
 * plain blocking socket pair doing the same transfers in the same run, the
 * overhead of the full machinery, aggregate throughput of concurrent worlds
 * and join latency through Redis. Two processes: this one and a forked peer. */
#include "clock.h"
#include "err.h"
#include "harness.h"
#include "world/world.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define BUF_BYTES  (64u << 20)
#define REPS       3
#define NIDLE      64
#define JOINS      20
#define AGG_BYTES  (256u << 20)
#define OVH_BYTES  (256u << 20)
#define TIMEOUT_MS 120000

static const size_t sizes[] = {64, 1024, 16384, 65536, 1u << 20, 4u << 20, 16u << 20, 64u << 20};
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))

static void die(const char *what, const char *err)
{
    fprintf(stderr, "bench_world[%d]: %s: %s\n", (int)getpid(), what, err);
    exit(1);
}

static int lat_iters(size_t s)
{
    return s <= 65536 ? 200 : s <= (1u << 20) ? 20 : 4;
}
static int bw_msgs(size_t s)
{
    size_t k = (256u << 20) / s;
    return (int)(k > 20000 ? 20000 : k < 4 ? 4 : k);
}
static int window(size_t s)
{
    size_t w = BUF_BYTES / s;
    return (int)(w > 32 ? 32 : w);
}

static double median(double *v, int n)
{
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && v[j] < v[j - 1]; j--) {
            double t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static mw_worlds_t *ctx_new(int64_t timeout_ms, int64_t keepalive_ms)
{
    mw_config_t cfg;
    char err[256], v[32];
    mwt_config(&cfg);
    snprintf(v, sizeof(v), "%lld", (long long)timeout_ms);
    mw_config_set(&cfg, "world.timeout_ms", v, "bench", err, sizeof(err));
    snprintf(v, sizeof(v), "%lld", (long long)keepalive_ms);
    mw_config_set(&cfg, "world.keepalive_ms", v, "bench", err, sizeof(err));
    mw_world_options_t wo;
    mw_world_options_from_config(&cfg, &wo);
    mw_worlds_t *ctx = mw_worlds_new(&wo, err, sizeof(err));
    mw_config_fini(&cfg);
    if (ctx == NULL)
        die("mw_worlds_new", err);
    return ctx;
}

static mw_world_t *join(mw_worlds_t *ctx, const char *suffix, int rank)
{
    char err[512];
    mw_world_t *w;
    mw_world_opts_t o = {
        .name = mwt_name(suffix), .epoch = 1, .size = 2, .rank = rank, .timeout_ms = 60000};
    if (mw_world_join(ctx, &o, &w, err, sizeof(err)) != 0)
        die("join", err);
    return w;
}

static void ready(mw_world_t *w)
{
    char err[512];
    if (mw_world_wait_ready(w, -1, err, sizeof(err)) != 0)
        die("ready", err);
}

static void wait_req(mw_world_req_t *r)
{
    char err[512];
    if (mw_world_wait(r, TIMEOUT_MS, err, sizeof(err)) != 0)
        die("wait", err);
    mw_world_req_free(r);
}

/* k messages of s bytes from the sending side, window requests in flight,
 * then a one-byte header back once the receiver has them all. The sender
 * posts that receive before it streams: the peer may leave the world as soon
 * as it has acknowledged, and a frame still waiting for a receive when its
 * sender leaves is dropped with the link. */
static void stream(mw_world_t *w, int sending, uint8_t *buf, size_t s, int k)
{
    char err[512], b = 1;
    int win = window(s);
    mw_world_req_t *reqs[32] = {0}, *ack = NULL;
    mw_tensor_desc_t d = {.dtype = MW_DTYPE_U8, .ndim = 1, .shape = {(int64_t)s}};
    int peer = 1 - mw_world_rank(w);
    if (sending && mw_world_irecv_header(w, peer, &b, 1, &ack) != 0)
        die("ack", "cannot post its receive");
    for (int i = 0; i < k; i++) {
        int slot = i % win;
        if (reqs[slot] != NULL)
            wait_req(reqs[slot]);
        uint8_t *p = buf + (size_t)slot * s;
        int rc = sending ? mw_world_isend(w, peer, &d, p, &reqs[slot])
                         : mw_world_irecv(w, peer, p, s, &reqs[slot]);
        if (rc != 0)
            die("post", mw_strerror(rc));
    }
    for (int i = 0; i < win; i++)
        if (reqs[i] != NULL)
            wait_req(reqs[i]);
    if (sending)
        wait_req(ack);
    else if (mw_world_send_header(w, peer, &b, 1, TIMEOUT_MS, err, sizeof(err)) != 0)
        die("ack", err);
}

static void pingpong(mw_world_t *w, int first, uint8_t *buf, size_t s)
{
    char err[512];
    mw_tensor_desc_t d = {.dtype = MW_DTYPE_U8, .ndim = 1, .shape = {(int64_t)s}};
    int peer = 1 - mw_world_rank(w);
    if (first && mw_world_send(w, peer, &d, buf, TIMEOUT_MS, err, sizeof(err)) != 0)
        die("ping", err);
    if (mw_world_recv(w, peer, buf, s, NULL, TIMEOUT_MS, err, sizeof(err)) != 0)
        die("pong", err);
    if (!first && mw_world_send(w, peer, &d, buf, TIMEOUT_MS, err, sizeof(err)) != 0)
        die("pong", err);
}

/* --- the raw blocking socket baseline ----------------------------------------- */

static void full_write(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t r = write(fd, p, n);
        if (r <= 0)
            die("write", "raw socket");
        p += r;
        n -= (size_t)r;
    }
}

static void full_read(int fd, uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r <= 0)
            die("read", "raw socket");
        p += r;
        n -= (size_t)r;
    }
}

static void raw_session(int fd, int parent, uint8_t *buf, double *lat, double *bw)
{
    for (size_t i = 0; i < NSIZES; i++) {
        size_t s = sizes[i];
        for (int rep = 0; rep < REPS; rep++) {
            int64_t t0 = mw_now_us();
            for (int k = 0; k < lat_iters(s); k++) {
                if (parent) {
                    full_write(fd, buf, s);
                    full_read(fd, buf, s);
                } else {
                    full_read(fd, buf, s);
                    full_write(fd, buf, s);
                }
            }
            if (parent)
                lat[i * REPS + rep] = (double)(mw_now_us() - t0) / lat_iters(s) / 2;
            t0 = mw_now_us();
            uint8_t b = 1;
            for (int k = 0; k < bw_msgs(s); k++) {
                if (parent)
                    full_write(fd, buf, s);
                else
                    full_read(fd, buf, s);
            }
            if (parent)
                full_read(fd, &b, 1);
            else
                full_write(fd, &b, 1);
            if (parent)
                bw[i * REPS + rep] = (double)s * bw_msgs(s) / (double)(mw_now_us() - t0);
        }
    }
}

static void world_session(mw_world_t *w, int parent, uint8_t *buf, double *lat, double *bw)
{
    for (size_t i = 0; i < NSIZES; i++) {
        size_t s = sizes[i];
        for (int rep = 0; rep < REPS; rep++) {
            int64_t t0 = mw_now_us();
            for (int k = 0; k < lat_iters(s); k++)
                pingpong(w, parent, buf, s);
            if (parent)
                lat[i * REPS + rep] = (double)(mw_now_us() - t0) / lat_iters(s) / 2;
            t0 = mw_now_us();
            stream(w, parent, buf, s, bw_msgs(s));
            if (parent)
                bw[i * REPS + rep] = (double)s * bw_msgs(s) / (double)(mw_now_us() - t0);
        }
    }
}

/* --- aggregate throughput of n concurrent worlds ------------------------------- */

struct agg {
    mw_world_t *w;
    int sending;
    uint8_t *buf;
    int msgs;
};

static void *agg_main(void *arg)
{
    struct agg *a = arg;
    stream(a->w, a->sending, a->buf, 1u << 20, a->msgs);
    return NULL;
}

static double aggregate(mw_worlds_t *ctx, int n, int parent, uint8_t *buf)
{
    mw_world_t *w[8];
    struct agg a[8];
    pthread_t t[8];
    for (int i = 0; i < n; i++) {
        char suffix[32];
        snprintf(suffix, sizeof(suffix), "agg.%d.%d", n, i);
        w[i] = join(ctx, suffix, parent ? 0 : 1);
    }
    for (int i = 0; i < n; i++)
        ready(w[i]);
    int64_t t0 = mw_now_us();
    for (int i = 0; i < n; i++) {
        a[i] = (struct agg){w[i], parent, buf + (size_t)i * (8u << 20), AGG_BYTES / n / (1u << 20)};
        pthread_create(&t[i], NULL, agg_main, &a[i]);
    }
    for (int i = 0; i < n; i++)
        pthread_join(t[i], NULL);
    double mbps = (double)AGG_BYTES / (double)(mw_now_us() - t0);
    for (int i = 0; i < n; i++)
        mw_world_destroy(w[i]);
    return mbps;
}

static void print(const char *metric, double value, const char *unit, double baseline)
{
    if (baseline > 0)
        printf("{\"bench\":\"world_tcp\",\"metric\":\"%s\",\"value\":%.2f,\"unit\":\"%s\","
               "\"baseline\":%.2f,\"ratio\":%.3f}\n",
               metric, value, unit, baseline, value / baseline);
    else
        printf("{\"bench\":\"world_tcp\",\"metric\":\"%s\",\"value\":%.2f,\"unit\":\"%s\"}\n",
               metric, value, unit);
    fflush(stdout);
}

static const char *size_name(size_t s)
{
    static char b[32];
    if (s >= (1u << 20))
        snprintf(b, sizeof(b), "%zuMiB", s >> 20);
    else if (s >= 1024)
        snprintf(b, sizeof(b), "%zuKiB", s >> 10);
    else
        snprintf(b, sizeof(b), "%zuB", s);
    return b;
}

/* Both processes run the same schedule; parent measures and prints. */
static void run(int parent, int raw_fd)
{
    uint8_t *buf = malloc(BUF_BYTES);
    memset(buf, 0x5a, BUF_BYTES);
    double rlat[NSIZES * REPS], rbw[NSIZES * REPS], wlat[NSIZES * REPS], wbw[NSIZES * REPS];
    int rank = parent ? 0 : 1;

    /* 1. bandwidth and latency versus a blocking socket pair */
    raw_session(raw_fd, parent, buf, rlat, rbw);
    mw_worlds_t *ctx = ctx_new(5000, 1000);
    mw_world_t *w = join(ctx, "bw", rank);
    ready(w);
    world_session(w, parent, buf, wlat, wbw);
    mw_world_destroy(w);
    if (parent) {
        for (size_t i = 0; i < NSIZES; i++) {
            char m[64];
            snprintf(m, sizeof(m), "bandwidth_%s", size_name(sizes[i]));
            print(m, median(&wbw[i * REPS], REPS), "MB/s", median(&rbw[i * REPS], REPS));
        }
        for (size_t i = 0; i < NSIZES; i++) {
            char m[64];
            snprintf(m, sizeof(m), "latency_%s", size_name(sizes[i]));
            print(m, median(&wlat[i * REPS], REPS), "us", median(&rlat[i * REPS], REPS));
        }
    }

    /* 2. overhead: one world alone (no watchdog, no keepalive) versus the full
     * machinery (64 more worlds, 1 s watchdog, keepalives) */
    mw_worlds_t *base = parent ? ctx_new(3600000, 600000) : ctx;
    mw_worlds_t *full = parent ? ctx_new(1000, 300) : ctx;
    mw_world_t *wb = join(base, "ovh.base", rank), *wf = join(full, "ovh.full", rank);
    mw_world_t *idle[NIDLE];
    for (int i = 0; i < NIDLE; i++) {
        char suffix[32];
        snprintf(suffix, sizeof(suffix), "ovh.idle.%d", i);
        idle[i] = join(full, suffix, rank);
    }
    ready(wb);
    ready(wf);
    for (int i = 0; i < NIDLE; i++)
        ready(idle[i]);
    static const size_t osizes[] = {65536, 1u << 20};
    for (int i = 0; i < 2; i++) {
        double vb[5], vf[5];
        size_t s = osizes[i];
        int k = (int)(OVH_BYTES / s);
        for (int rep = 0; rep < 5; rep++) {
            /* the peer sends, this process receives */
            int64_t t0 = mw_now_us();
            stream(wb, !parent, buf, s, k);
            vb[rep] = (double)OVH_BYTES / (double)(mw_now_us() - t0);
            t0 = mw_now_us();
            stream(wf, !parent, buf, s, k);
            vf[rep] = (double)OVH_BYTES / (double)(mw_now_us() - t0);
        }
        if (parent) {
            char m[64];
            snprintf(m, sizeof(m), "overhead_recv_%s_full_vs_one_world", size_name(s));
            print(m, median(vf, 5), "MB/s", median(vb, 5));
        }
    }
    mw_world_destroy(wb);
    mw_world_destroy(wf);
    for (int i = 0; i < NIDLE; i++)
        mw_world_destroy(idle[i]);
    if (parent) {
        mw_worlds_destroy(base);
        mw_worlds_destroy(full);
    }

    /* 3. aggregate throughput of concurrent worlds */
    double one = 0;
    for (int n = 1; n <= 8; n *= 2) {
        double v = aggregate(ctx, n, parent, buf);
        if (n == 1)
            one = v;
        if (parent) {
            char m[64];
            snprintf(m, sizeof(m), "aggregate_%d_worlds", n);
            print(m, v, "MB/s", n == 1 ? 0 : one);
        }
    }

    /* 4. join latency through the Redis rendezvous */
    double lat[JOINS];
    for (int i = 0; i < JOINS; i++) {
        char suffix[32];
        snprintf(suffix, sizeof(suffix), "join.%d", i);
        int64_t t0 = mw_now_us();
        mw_world_t *j = join(ctx, suffix, rank);
        ready(j);
        lat[i] = (double)(mw_now_us() - t0) / 1000.0;
        char err[512];
        if (mw_world_barrier(j, TIMEOUT_MS, err, sizeof(err)) != 0)
            die("barrier", err);
        mw_world_destroy(j);
    }
    if (parent)
        print("join_latency_median", median(lat, JOINS), "ms", 0);
    mw_worlds_destroy(ctx);
    free(buf);
}

int main(void)
{
    int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(lfd, 1) != 0)
        die("listen", "raw socket");
    getsockname(lfd, (struct sockaddr *)&sa, &len);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(lfd);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
            die("connect", "raw socket");
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        run(0, fd);
        close(fd);
        _exit(0);
    }
    int fd = accept(lfd, NULL, NULL);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    close(lfd);
    run(1, fd);
    close(fd);
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1;
}
