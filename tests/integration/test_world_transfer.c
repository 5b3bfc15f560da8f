/* Worlds across processes over real Redis: tensors of every size, header
 * frames, collectives on four members, the secret, join deadlines. */
#include "clock.h"
#include "test_world_util.h"

#include "world/frame.h"
#include "redis.h"
#include "world/rendezvous.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/socket.h>

#include <cmocka.h>

#define JOIN_MS mwt_scaled(30000)
#define OP_MS   mwt_scaled(60000)

static const size_t sizes[] = {1, 3, 64, 1000, 4096, 65537, 1u << 20, (8u << 20) + 5, 64u << 20};
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))

struct hdr {
    uint64_t seq;
    uint64_t size;
};

/* Rank 1: receives every size, verifies it, echoes it back. */
static int echo_child(void *arg)
{
    const char *name = arg;
    char err[512];
    mw_worlds_t *ctx = wt_ctx(5000);
    mw_world_t *w = wt_join(ctx, name, 1, 2, 1, JOIN_MS);
    if (w == NULL)
        return 1;
    uint8_t *buf = malloc(64u << 20);
    for (;;) {
        struct hdr h;
        size_t len;
        if (mw_world_recv_header(w, 0, &h, sizeof(h), &len, OP_MS, err, sizeof(err)) != 0)
            WT_FAIL("recv_header: %s", err);
        if (len != sizeof(h))
            WT_FAIL("header of %zu bytes", len);
        if (h.size == 0)
            break;
        mw_tensor_desc_t d;
        if (mw_world_recv(w, 0, buf, 64u << 20, &d, OP_MS, err, sizeof(err)) != 0)
            WT_FAIL("recv %llu: %s", (unsigned long long)h.size, err);
        if (d.dtype != MW_DTYPE_U8 || d.ndim != 1 || (uint64_t)d.shape[0] != h.size)
            WT_FAIL("desc mismatch for size %llu", (unsigned long long)h.size);
        int64_t bad = wt_check(buf, h.size, 1, h.seq);
        if (bad >= 0)
            WT_FAIL("size %llu: byte %lld differs", (unsigned long long)h.size, (long long)bad);
        if (mw_world_send(w, 0, &d, buf, OP_MS, err, sizeof(err)) != 0)
            WT_FAIL("echo: %s", err);
    }
    /* a 2-D f32 tensor keeps its description */
    float f[15];
    mw_tensor_desc_t d;
    if (mw_world_recv(w, 0, f, sizeof(f), &d, OP_MS, err, sizeof(err)) != 0)
        WT_FAIL("recv f32: %s", err);
    if (d.dtype != MW_DTYPE_F32 || d.ndim != 2 || d.shape[0] != 3 || d.shape[1] != 5 ||
        f[14] != 14.0f)
        WT_FAIL("f32 tensor description or contents wrong");
    if (mw_world_barrier(w, OP_MS, err, sizeof(err)) != 0)
        WT_FAIL("barrier: %s", err);
    free(buf);
    mw_world_destroy(w);
    mw_worlds_destroy(ctx);
    return 0;
}

static void tensors_from_1_byte_to_64_mib_arrive_intact(void **state)
{
    (void)state;
    char err[512];
    const char *name = mwt_name("sizes");
    pid_t pid = wt_fork(echo_child, (void *)name);
    mw_worlds_t *ctx = wt_ctx(5000);
    mw_world_t *w = wt_join(ctx, name, 1, 2, 0, JOIN_MS);
    assert_non_null(w);
    uint8_t *out = malloc(64u << 20), *back = malloc(64u << 20);
    for (size_t i = 0; i < NSIZES; i++) {
        size_t n = sizes[i];
        struct hdr h = {.seq = i, .size = n};
        wt_fill(out, n, 1, i);
        memset(back, 0, n);
        mw_tensor_desc_t d = wt_bytes(n);
        mw_world_req_t *rr;
        /* the echo's receive is posted before the send: no ordering assumption */
        assert_int_equal(mw_world_irecv(w, 1, back, n, &rr), 0);
        assert_int_equal(mw_world_send_header(w, 1, &h, sizeof(h), OP_MS, err, sizeof(err)), 0);
        assert_int_equal(mw_world_send(w, 1, &d, out, OP_MS, err, sizeof(err)), 0);
        int rc = mw_world_wait(rr, OP_MS, err, sizeof(err));
        if (rc != 0)
            fail_msg("echo of %zu bytes: %s", n, err);
        assert_int_equal(mw_world_req_bytes(rr), n);
        mw_world_req_free(rr);
        assert_int_equal(wt_check(back, n, 1, i), -1);
    }
    struct hdr end = {0, 0};
    assert_int_equal(mw_world_send_header(w, 1, &end, sizeof(end), OP_MS, err, sizeof(err)), 0);
    float f[15];
    for (int i = 0; i < 15; i++)
        f[i] = (float)i;
    mw_tensor_desc_t fd = {.dtype = MW_DTYPE_F32, .ndim = 2, .shape = {3, 5}};
    assert_int_equal(mw_world_send(w, 1, &fd, f, OP_MS, err, sizeof(err)), 0);
    assert_int_equal(mw_world_barrier(w, OP_MS, err, sizeof(err)), 0);
    mw_world_stats_t st;
    mw_world_stats(w, &st);
    assert_true(st.bytes_sent > (64u << 20));
    assert_int_equal(wt_reap(pid, OP_MS), 0);
    free(out);
    free(back);
    mw_world_destroy(w);
    mw_worlds_destroy(ctx);
}

/* Rank 1 sends three headers at once, then one too large for A's buffer, then 1 more. */
static int header_child(void *arg)
{
    const char *name = arg;
    char err[512];
    mw_worlds_t *ctx = wt_ctx(5000);
    mw_world_t *w = wt_join(ctx, name, 1, 2, 1, JOIN_MS);
    if (w == NULL)
        return 1;
    char big[MW_WORLD_HEADER_MAX];
    memset(big, 'x', sizeof(big));
    for (int i = 0; i < 3; i++) {
        char msg[32];
        int n = snprintf(msg, sizeof(msg), "header %d", i);
        if (mw_world_send_header(w, 0, msg, (size_t)n, OP_MS, err, sizeof(err)) != 0)
            WT_FAIL("send_header: %s", err);
    }
    if (mw_world_send_header(w, 0, big, sizeof(big), OP_MS, err, sizeof(err)) != 0)
        WT_FAIL("send big header: %s", err);
    if (mw_world_send_header(w, 0, "", 0, OP_MS, err, sizeof(err)) != 0)
        WT_FAIL("send empty header: %s", err);
    mw_world_req_t *r;
    if (mw_world_isend_header(w, 0, big, sizeof(big) + 1, &r) != MW_ETOOBIG)
        WT_FAIL("a header over MW_WORLD_HEADER_MAX was accepted");
    if (mw_world_barrier(w, OP_MS, err, sizeof(err)) != 0)
        WT_FAIL("barrier: %s", err);
    mw_world_destroy(w);
    mw_worlds_destroy(ctx);
    return 0;
}

static void header_frames_are_buffered_in_order_and_oversize_is_refused(void **state)
{
    (void)state;
    char err[512], buf[64];
    size_t len;
    const char *name = mwt_name("headers");
    pid_t pid = wt_fork(header_child, (void *)name);
    mw_worlds_t *ctx = wt_ctx(5000);
    mw_world_t *w = wt_join(ctx, name, 1, 2, 0, JOIN_MS);
    assert_non_null(w);
    /* let all of them arrive before any receive is posted */
    assert_true(mwt_wait_for(({
                                 mw_world_stats_t st;
                                 mw_world_stats(w, &st);
                                 st.frames_received >= 5;
                             }),
                             OP_MS));
    for (int i = 0; i < 3; i++) {
        char want[32];
        snprintf(want, sizeof(want), "header %d", i);
        assert_int_equal(
            mw_world_recv_header(w, 1, buf, sizeof(buf), &len, OP_MS, err, sizeof(err)), 0);
        assert_int_equal(len, strlen(want));
        assert_memory_equal(buf, want, len);
    }
    int rc = mw_world_recv_header(w, 1, buf, sizeof(buf), &len, OP_MS, err, sizeof(err));
    assert_int_equal(rc, MW_ETOOBIG);
    assert_non_null(strstr(err, name));
    assert_int_equal(mw_world_state(w), MW_WORLD_READY);
    assert_int_equal(mw_world_recv_header(w, 1, buf, sizeof(buf), &len, OP_MS, err, sizeof(err)),
                     0);
    assert_int_equal(len, 0);
    assert_int_equal(mw_world_barrier(w, OP_MS, err, sizeof(err)), 0);
    assert_int_equal(wt_reap(pid, OP_MS), 0);
    mw_world_destroy(w);
    mw_worlds_destroy(ctx);
}

/* --- collectives on four members -------------------------------------------------- */

#define NF (256 * 1024)

static int collective_member(const char *name, int rank, const pid_t *children, char *err,
                             size_t errsz)
{
    mw_worlds_t *ctx = wt_ctx(5000);
    mw_world_t *w = wt_join(ctx, name, 1, 4, rank, JOIN_MS);
    if (w == NULL)
        return mw_errf(1, err, errsz, "join failed");
    float *x = malloc(NF * sizeof(float));
    mw_tensor_desc_t d = {.dtype = MW_DTYPE_F32, .ndim = 2, .shape = {NF / 1024, 1024}};
    int rc = 1;
    /* broadcast from rank 2 */
    if (rank == 2)
        wt_fill(x, NF * sizeof(float), 7, 0);
    else
        memset(x, 0, NF * sizeof(float));
    if (mw_world_broadcast(w, 2, &d, x, OP_MS, err, errsz) != 0)
        goto out;
    if (wt_check(x, NF * sizeof(float), 7, 0) != -1) {
        mw_errf(1, err, errsz, "rank %d: broadcast contents wrong", rank);
        goto out;
    }
    /* all_reduce sum and max; exact in f32 */
    for (int i = 0; i < NF; i++)
        x[i] = (float)(rank * 1000 + (i % 4096));
    if (mw_world_all_reduce(w, MW_REDUCE_SUM, &d, x, OP_MS, err, errsz) != 0)
        goto out;
    for (int i = 0; i < NF; i++) {
        if (x[i] != (float)(6000 + 4 * (i % 4096))) {
            mw_errf(1, err, errsz, "rank %d: sum[%d] = %g", rank, i, (double)x[i]);
            goto out;
        }
    }
    for (int i = 0; i < NF; i++)
        x[i] = (float)((rank * 7 + i) % 5) - 2.5f;
    if (mw_world_all_reduce(w, MW_REDUCE_MAX, &d, x, OP_MS, err, errsz) != 0)
        goto out;
    for (int i = 0; i < NF; i++) {
        float m = -100;
        for (int r = 0; r < 4; r++)
            m = (float)((r * 7 + i) % 5) - 2.5f > m ? (float)((r * 7 + i) % 5) - 2.5f : m;
        if (x[i] != m) {
            mw_errf(1, err, errsz, "rank %d: max[%d] = %g, want %g", rank, i, (double)x[i],
                    (double)m);
            goto out;
        }
    }
    /* point to point between two non-zero ranks (full mesh) */
    mw_tensor_desc_t small = wt_bytes(1000);
    if (rank == 1 && mw_world_send(w, 3, &small, x, OP_MS, err, errsz) != 0)
        goto out;
    if (rank == 3) {
        float y[250];
        memcpy(y, x, sizeof(y));
        memset(x, 0, 1000);
        if (mw_world_recv(w, 1, x, 1000, NULL, OP_MS, err, errsz) != 0)
            goto out;
        if (memcmp(x, y, sizeof(y)) != 0) {
            mw_errf(1, err, errsz, "rank 3: mesh recv contents wrong");
            goto out;
        }
    }
    if (mw_world_barrier(w, OP_MS, err, errsz) != 0)
        goto out;
    rc = 0;
    /* rank 0 keeps its end open until everybody is done */
    for (int r = 1; children != NULL && r < 4; r++)
        if (wt_reap(children[r], OP_MS) != 0)
            rc = mw_errf(1, err, errsz, "rank %d failed", r);
out:
    free(x);
    mw_world_destroy(w);
    mw_worlds_destroy(ctx);
    return rc;
}

struct member {
    const char *name;
    int rank;
};

static int member_child(void *arg)
{
    struct member *m = arg;
    char err[512] = "";
    if (collective_member(m->name, m->rank, NULL, err, sizeof(err)) != 0)
        WT_FAIL("rank %d: %s", m->rank, err);
    return 0;
}

static void broadcast_and_all_reduce_on_four_members_are_correct(void **state)
{
    (void)state;
    char err[512] = "";
    const char *name = mwt_name("coll4");
    struct member m[4];
    pid_t pids[4];
    for (int r = 1; r < 4; r++) {
        m[r] = (struct member){name, r};
        pids[r] = wt_fork(member_child, &m[r]);
    }
    int rc = collective_member(name, 0, pids, err, sizeof(err));
    if (rc != 0)
        fail_msg("rank 0: %s", err);
}

/* --- the secret ------------------------------------------------------------------------ */

/* Connects to addr and sends a HELLO for (name, epoch) as rank 1 with secret;
 * returns 1 when the peer closes the connection (refused), 0 when it answers. */
static int try_hello(const char *addr, const char *name, int64_t epoch, const uint8_t *secret,
                     int garbage)
{
    char host[64];
    const char *colon = strrchr(addr, ':');
    snprintf(host, sizeof(host), "%.*s", (int)(colon - addr), addr);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    inet_pton(AF_INET, host, &sa.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    uint8_t frame[MW_FRAME_HDR_SIZE + 512];
    size_t len;
    if (garbage) {
        memset(frame, 0x41, 64);
        len = 64;
    } else {
        mw_frame_hello_t h = {.epoch = epoch, .size = 2, .rank = 1, .secret_len = 32};
        memcpy(h.secret, secret, 32);
        snprintf(h.name, sizeof(h.name), "%s", name);
        snprintf(h.addr, sizeof(h.addr), "127.0.0.1:1");
        int n = mw_frame_hello_encode(&h, frame + MW_FRAME_HDR_SIZE, 512);
        assert_true(n > 0);
        mw_frame_hdr_t fh = {
            .version = MW_FRAME_VERSION, .type = MW_FRAME_HELLO, .meta_len = (uint32_t)n};
        mw_frame_hdr_encode(&fh, frame);
        len = MW_FRAME_HDR_SIZE + (size_t)n;
    }
    assert_int_equal(send(fd, frame, len, MSG_NOSIGNAL), (ssize_t)len);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int refused = 0;
    if (poll(&p, 1, (int)mwt_scaled(5000)) == 1) {
        char b[64];
        ssize_t n = recv(fd, b, sizeof(b), 0);
        refused = n == 0 || (n < 0 && errno == ECONNRESET);
    }
    close(fd);
    return refused;
}

static int secret_child(void *arg)
{
    const char **args = arg;
    char err[512], go;
    /* wait until the attacker is done */
    if (read(atoi(args[1]), &go, 1) != 1)
        WT_FAIL("pipe");
    mw_worlds_t *ctx = wt_ctx(5000);
    mw_world_t *w = wt_join(ctx, args[0], 1, 2, 1, JOIN_MS);
    if (w == NULL)
        return 1;
    uint8_t buf[4096];
    if (mw_world_recv(w, 0, buf, sizeof(buf), NULL, OP_MS, err, sizeof(err)) != 0)
        WT_FAIL("recv: %s", err);
    if (wt_check(buf, sizeof(buf), 3, 0) != -1)
        WT_FAIL("contents");
    if (mw_world_barrier(w, OP_MS, err, sizeof(err)) != 0)
        WT_FAIL("barrier: %s", err);
    mw_world_destroy(w);
    mw_worlds_destroy(ctx);
    return 0;
}

static void wrong_secret_connection_is_refused_and_world_unaffected(void **state)
{
    (void)state;
    char err[512], fdtext[16];
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    const char *name = mwt_name("secret");
    snprintf(fdtext, sizeof(fdtext), "%d", pfd[0]);
    const char *args[] = {name, fdtext};
    pid_t pid = wt_fork(secret_child, args);
    close(pfd[0]);

    mw_worlds_t *ctx = wt_ctx(5000);
    mw_world_t *w = NULL;
    mw_world_opts_t o = {.name = name, .epoch = 1, .size = 2, .rank = 0, .timeout_ms = JOIN_MS};
    assert_int_equal(mw_world_join(ctx, &o, &w, err, sizeof(err)), 0);

    mw_config_t cfg;
    mwt_config(&cfg);
    mw_redis_t *r = mw_redis_new(&cfg, 0, err, sizeof(err));
    assert_non_null(r);
    char text[MW_RDV_RECORD_MAX];
    assert_true(mwt_wait_for(mw_rdv_fetch(r, name, 1, text, sizeof(text)) == 0, JOIN_MS));
    mw_rdv_record_t rec;
    assert_int_equal(mw_rdv_record_parse(text, strlen(text), &rec, err, sizeof(err)), 0);
    assert_string_equal(rec.addr, mw_worlds_address(ctx));

    uint8_t wrong[32];
    memcpy(wrong, rec.secret, 32);
    wrong[5] ^= 1;
    assert_true(try_hello(rec.addr, name, 1, wrong, 0));
    assert_true(try_hello(rec.addr, name, 1, wrong, 1));      /* not even a frame */
    assert_true(try_hello(rec.addr, name, 2, rec.secret, 0)); /* another epoch */
    assert_int_equal(mw_world_state(w), MW_WORLD_JOINING);

    assert_int_equal(write(pfd[1], "g", 1), 1);
    close(pfd[1]);
    assert_int_equal(mw_world_wait_ready(w, JOIN_MS, err, sizeof(err)), 0);
    /* the record is single-use: gone once the world is ready */
    assert_true(mwt_wait_for(mw_rdv_fetch(r, name, 1, text, sizeof(text)) == MW_ENOTFOUND,
                             mwt_scaled(5000)));
    /* the right secret for a rank already present is refused too */
    assert_true(try_hello(rec.addr, name, 1, rec.secret, 0));
    assert_int_equal(mw_world_state(w), MW_WORLD_READY);

    uint8_t buf[4096];
    wt_fill(buf, sizeof(buf), 3, 0);
    mw_tensor_desc_t d = wt_bytes(sizeof(buf));
    assert_int_equal(mw_world_send(w, 1, &d, buf, OP_MS, err, sizeof(err)), 0);
    assert_int_equal(mw_world_barrier(w, OP_MS, err, sizeof(err)), 0);
    assert_int_equal(wt_reap(pid, OP_MS), 0);
    mw_redis_destroy(r);
    mw_config_fini(&cfg);
    mw_world_destroy(w);
    mw_worlds_destroy(ctx);
}

/* --- deadlines and local worlds ------------------------------------------------------------ */

static void join_deadline_names_world_and_missing_ranks(void **state)
{
    (void)state;
    char err[512];
    mw_worlds_t *ctx = wt_ctx(5000);
    const char *name = mwt_name("lonely");
    mw_world_t *w;
    mw_world_opts_t o = {.name = name, .epoch = 3, .size = 3, .rank = 0, .timeout_ms = 300};
    int64_t t0 = mw_now_ms();
    assert_int_equal(mw_world_join(ctx, &o, &w, err, sizeof(err)), 0);
    assert_int_equal(mw_world_wait_ready(w, mwt_scaled(10000), err, sizeof(err)), MW_ETIMEDOUT);
    assert_true(mw_now_ms() - t0 >= 300);
    assert_non_null(strstr(err, name));
    assert_non_null(strstr(err, "missing ranks 1,2"));
    assert_int_equal(mw_world_state(w), MW_WORLD_BROKEN);
    /* operations on it fail with the same error */
    uint8_t b[4];
    mw_tensor_desc_t d = wt_bytes(4);
    assert_int_equal(mw_world_send(w, 1, &d, b, 1000, err, sizeof(err)), MW_ETIMEDOUT);
    assert_non_null(strstr(err, name));
    mw_world_destroy(w);

    /* a joiner whose rank 0 never publishes */
    const char *name2 = mwt_name("orphan");
    mw_world_opts_t o2 = {.name = name2, .epoch = 1, .size = 2, .rank = 1, .timeout_ms = 300};
    assert_int_equal(mw_world_join(ctx, &o2, &w, err, sizeof(err)), 0);
    assert_int_equal(mw_world_wait_ready(w, mwt_scaled(10000), err, sizeof(err)), MW_ETIMEDOUT);
    assert_non_null(strstr(err, name2));
    assert_non_null(strstr(err, "missing rank 0"));
    assert_non_null(strstr(err, "not published"));
    mw_world_event_t ev;
    int saw = 0;
    while (mw_worlds_next_event(ctx, &ev, 0) == 0)
        saw += ev.state == MW_WORLD_BROKEN && strcmp(ev.name, name2) == 0 && ev.err == MW_ETIMEDOUT;
    assert_int_equal(saw, 1);
    mw_world_destroy(w);

    /* invalid options fail at once */
    mw_world_opts_t bad = {.name = "bad name", .size = 2};
    assert_int_equal(mw_world_join(ctx, &bad, &w, err, sizeof(err)), MW_EINVAL);
    mw_world_opts_t nccl = {.name = "x", .size = 1, .backend = "nccl"};
#ifndef MW_HAVE_NCCL
    assert_int_equal(mw_world_join(ctx, &nccl, &w, err, sizeof(err)), MW_EINVAL);
    assert_non_null(strstr(err, "NCCL"));
#else
    (void)nccl;
#endif
    mw_worlds_destroy(ctx);
}

static void world_of_one_member_completes_collectives_locally(void **state)
{
    (void)state;
    char err[512];
    mw_worlds_t *ctx = wt_ctx(5000);
    mw_world_t *w = wt_join(ctx, mwt_name("solo"), 1, 1, 0, 5000);
    assert_non_null(w);
    float x[4] = {1, 2, 3, 4};
    mw_tensor_desc_t d = {.dtype = MW_DTYPE_F32, .ndim = 1, .shape = {4}};
    assert_int_equal(mw_world_all_reduce(w, MW_REDUCE_SUM, &d, x, 1000, err, sizeof(err)), 0);
    assert_true(x[3] == 4.0f);
    assert_int_equal(mw_world_broadcast(w, 0, &d, x, 1000, err, sizeof(err)), 0);
    assert_int_equal(mw_world_barrier(w, 1000, err, sizeof(err)), 0);
    mw_world_req_t *r;
    assert_int_equal(mw_world_isend(w, 0, &d, x, &r), MW_EINVAL); /* no self sends */
    mw_tensor_desc_t i32 = {.dtype = MW_DTYPE_I32, .ndim = 1, .shape = {4}};
    assert_int_equal(mw_world_iall_reduce(w, MW_REDUCE_SUM, &i32, x, &r), MW_EINVAL);
    mw_world_abort(w, "test");
    assert_int_equal(mw_world_state(w), MW_WORLD_BROKEN);
    assert_int_equal(mw_world_error(w, err, sizeof(err)), MW_EABORTED);
    assert_non_null(strstr(err, "aborted: test"));
    mw_world_destroy(w);
    mw_worlds_destroy(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(tensors_from_1_byte_to_64_mib_arrive_intact),
        cmocka_unit_test(header_frames_are_buffered_in_order_and_oversize_is_refused),
        cmocka_unit_test(broadcast_and_all_reduce_on_four_members_are_correct),
        cmocka_unit_test(wrong_secret_connection_is_refused_and_world_unaffected),
        cmocka_unit_test(join_deadline_names_world_and_missing_ranks),
        cmocka_unit_test(world_of_one_member_completes_collectives_locally),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
