/* Fault isolation across real processes: a killed or stopped peer breaks only
 * its own world, within world.timeout_ms, while the process's other worlds
 * keep moving verified bytes; a new world joins while another is saturated. */
#include "clock.h"
#include "test_world_util.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#define TIMEOUT_MS mwt_scaled(1500)
#define SLACK_MS   mwt_scaled(300) /* the watchdog's tick plus scheduling noise */
#define JOIN_MS    mwt_scaled(30000)
#define OP_MS      mwt_scaled(60000)
#define AB_BYTES   (256u << 10)
#define AC_BYTES   (16u << 20)
#define MAX_ACKS   200000

struct msg {
    uint64_t seq;
    uint64_t size; /* 0: stop */
};

struct child_args {
    const char *name;
    uint64_t world_id;
};

/* Rank 1 of a world: receives header + tensor, verifies every byte, acks. */
static int acker_child(void *arg)
{
    struct child_args *a = arg;
    char err[512];
    mw_worlds_t *ctx = wt_ctx(TIMEOUT_MS);
    mw_world_t *w = wt_join(ctx, a->name, 1, 2, 1, JOIN_MS);
    if (w == NULL)
        return 1;
    uint8_t *buf = malloc(AC_BYTES);
    for (;;) {
        struct msg m;
        size_t len;
        if (mw_world_recv_header(w, 0, &m, sizeof(m), &len, OP_MS, err, sizeof(err)) != 0)
            WT_FAIL("recv_header: %s", err);
        if (m.size == 0)
            break;
        if (mw_world_recv(w, 0, buf, AC_BYTES, NULL, OP_MS, err, sizeof(err)) != 0)
            WT_FAIL("recv: %s", err);
        int64_t bad = wt_check(buf, m.size, a->world_id, m.seq);
        if (bad >= 0)
            WT_FAIL("%s seq %llu: byte %lld differs", a->name, (unsigned long long)m.seq,
                    (long long)bad);
        if (mw_world_send_header(w, 0, &m, sizeof(m), OP_MS, err, sizeof(err)) != 0)
            WT_FAIL("ack: %s", err);
    }
    if (mw_world_barrier(w, OP_MS, err, sizeof(err)) != 0)
        WT_FAIL("final barrier: %s", err);
    free(buf);
    mw_world_destroy(w);
    mw_worlds_destroy(ctx);
    return 0;
}

/* Rank 1 of the victim world: receives and verifies tensors until it dies. */
static int sink_child(void *arg)
{
    struct child_args *a = arg;
    char err[512];
    mw_worlds_t *ctx = wt_ctx(TIMEOUT_MS);
    mw_world_t *w = wt_join(ctx, a->name, 1, 2, 1, JOIN_MS);
    if (w == NULL)
        return 1;
    uint8_t *buf = malloc(AC_BYTES);
    for (uint64_t seq = 0;; seq++) {
        if (mw_world_recv(w, 0, buf, AC_BYTES, NULL, OP_MS, err, sizeof(err)) != 0)
            break;
        if (wt_check(buf, AC_BYTES, a->world_id, seq) >= 0)
            WT_FAIL("%s seq %llu: contents", a->name, (unsigned long long)seq);
    }
    free(buf);
    mw_world_destroy(w);
    mw_worlds_destroy(ctx);
    return 0;
}

/* A's side of an acked stream: records when each verified ack came back. */
struct stream {
    mw_world_t *w;
    uint64_t world_id;
    int stop;      /* atomic */
    int64_t *acks; /* times of acks */
    int nacks;     /* atomic */
    int rc;
    char err[512];
};

static void *stream_main(void *arg)
{
    struct stream *s = arg;
    uint8_t *buf = malloc(AB_BYTES);
    mw_tensor_desc_t d = wt_bytes(AB_BYTES);
    for (uint64_t seq = 0; !__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE); seq++) {
        struct msg m = {seq, AB_BYTES}, ack;
        size_t len;
        wt_fill(buf, AB_BYTES, s->world_id, seq);
        if ((s->rc = mw_world_send_header(s->w, 1, &m, sizeof(m), OP_MS, s->err, sizeof(s->err))) !=
                0 ||
            (s->rc = mw_world_send(s->w, 1, &d, buf, OP_MS, s->err, sizeof(s->err))) != 0 ||
            (s->rc = mw_world_recv_header(s->w, 1, &ack, sizeof(ack), &len, OP_MS, s->err,
                                          sizeof(s->err))) != 0)
            break;
        if (ack.seq != seq) {
            s->rc = -100;
            snprintf(s->err, sizeof(s->err), "ack %llu for %llu", (unsigned long long)ack.seq,
                     (unsigned long long)seq);
            break;
        }
        int n = __atomic_load_n(&s->nacks, __ATOMIC_RELAXED);
        if (n < MAX_ACKS) {
            s->acks[n] = mw_now_ms();
            __atomic_store_n(&s->nacks, n + 1, __ATOMIC_RELEASE);
        }
    }
    free(buf);
    return NULL;
}

static void stream_start(struct stream *s, pthread_t *t, mw_world_t *w, uint64_t id)
{
    memset(s, 0, sizeof(*s));
    s->w = w;
    s->world_id = id;
    s->acks = calloc(MAX_ACKS, sizeof(int64_t));
    assert_int_equal(pthread_create(t, NULL, stream_main, s), 0);
}

/* Stops the stream, tells the acker to finish, checks its exit. */
static void stream_finish(struct stream *s, pthread_t t, pid_t acker)
{
    char err[512];
    __atomic_store_n(&s->stop, 1, __ATOMIC_RELEASE);
    pthread_join(t, NULL);
    if (s->rc != 0)
        fail_msg("stream on %s: %s", mw_world_name(s->w), s->err);
    struct msg stop = {0, 0};
    assert_int_equal(mw_world_send_header(s->w, 1, &stop, sizeof(stop), OP_MS, err, sizeof(err)),
                     0);
    assert_int_equal(mw_world_barrier(s->w, OP_MS, err, sizeof(err)), 0);
    assert_int_equal(wt_reap(acker, OP_MS), 0);
    free(s->acks);
}

static int acks_between(struct stream *s, int64_t from, int64_t to)
{
    int n = __atomic_load_n(&s->nacks, __ATOMIC_ACQUIRE), c = 0;
    for (int i = 0; i < n; i++)
        c += s->acks[i] >= from && s->acks[i] <= to;
    return c;
}

/* The longest time without an ack around [from, to]. */
static int64_t max_gap(struct stream *s, int64_t from, int64_t to)
{
    int n = __atomic_load_n(&s->nacks, __ATOMIC_ACQUIRE);
    int64_t gap = 0, prev = from;
    for (int i = 0; i < n; i++) {
        if (s->acks[i] < from)
            continue;
        if (s->acks[i] - prev > gap)
            gap = s->acks[i] - prev;
        prev = s->acks[i];
        if (prev > to)
            break;
    }
    return gap;
}

/* A's side of the victim world: sends until the world breaks. */
struct victim {
    mw_world_t *w;
    int sends; /* atomic */
    int64_t failed_ms;
    int rc;
    char err[512];
};

static void *victim_main(void *arg)
{
    struct victim *v = arg;
    uint8_t *buf = malloc(AC_BYTES);
    mw_tensor_desc_t d = wt_bytes(AC_BYTES);
    for (uint64_t seq = 0;; seq++) {
        wt_fill(buf, AC_BYTES, 2, seq);
        v->rc = mw_world_send(v->w, 1, &d, buf, -1, v->err, sizeof(v->err));
        if (v->rc != 0)
            break;
        __atomic_fetch_add(&v->sends, 1, __ATOMIC_RELEASE);
    }
    v->failed_ms = mw_now_ms();
    free(buf);
    return NULL;
}

/* A holds A-B (acked stream) and A-C (victim); sig hits C mid-transfer. */
static void fault_while_other_world_streams(int sig)
{
    const char *ab = mwt_name(sig == SIGKILL ? "kill.ab" : "stop.ab");
    const char *ac = mwt_name(sig == SIGKILL ? "kill.ac" : "stop.ac");
    struct child_args bargs = {ab, 1}, cargs = {ac, 2};
    pid_t b = wt_fork(acker_child, &bargs);
    pid_t c = wt_fork(sink_child, &cargs);
    mw_worlds_t *ctx = wt_ctx(TIMEOUT_MS);
    mw_world_t *wab = wt_join(ctx, ab, 1, 2, 0, JOIN_MS);
    mw_world_t *wac = wt_join(ctx, ac, 1, 2, 0, JOIN_MS);
    assert_non_null(wab);
    assert_non_null(wac);

    struct stream s;
    struct victim v = {.w = wac};
    pthread_t ts, tv;
    stream_start(&s, &ts, wab, 1);
    assert_int_equal(pthread_create(&tv, NULL, victim_main, &v), 0);
    assert_true(mwt_wait_for(__atomic_load_n(&v.sends, __ATOMIC_ACQUIRE) >= 3 &&
                                 __atomic_load_n(&s.nacks, __ATOMIC_ACQUIRE) >= 10,
                             OP_MS));
    /* the victim's next transfer is in flight: 16 MiB take a while */
    mw_world_stats_t st0, st1;
    mw_world_stats(wac, &st0);
    assert_true(mwt_wait_for(({
                                 mw_world_stats(wac, &st1);
                                 st1.bytes_sent > st0.bytes_sent;
                             }),
                             OP_MS));
    int64_t t_fault = mw_now_ms();
    kill(c, sig);
    pthread_join(tv, NULL);
    int64_t detect = v.failed_ms - t_fault;
    printf("# %s: A-C failed after %lld ms (world.timeout_ms %lld): %s\n",
           sig == SIGKILL ? "SIGKILL" : "SIGSTOP", (long long)detect, (long long)TIMEOUT_MS, v.err);
    assert_int_equal(v.rc, MW_EBROKEN);
    assert_non_null(strstr(v.err, ac));
    assert_true(detect <= TIMEOUT_MS + (sig == SIGKILL ? 0 : SLACK_MS));
    assert_int_equal(mw_world_state(wac), MW_WORLD_BROKEN);

    /* A-B moved verified bytes inside the failure window, and goes on after it */
    int64_t window_end = sig == SIGKILL ? t_fault + TIMEOUT_MS : v.failed_ms;
    if (sig == SIGKILL)
        assert_true(mwt_wait_for(mw_now_ms() > window_end, OP_MS));
    int inside = acks_between(&s, t_fault, window_end);
    int64_t t_after = mw_now_ms();
    assert_true(mwt_wait_for(acks_between(&s, t_after, INT64_MAX) >= 10, OP_MS));
    printf("# A-B: %d verified transfers inside the failure window, longest gap %lld ms\n", inside,
           (long long)max_gap(&s, t_fault, window_end));
    assert_true(inside >= 1);
    assert_int_equal(mw_world_state(wab), MW_WORLD_READY);
    stream_finish(&s, ts, b);

    if (sig == SIGSTOP)
        kill(c, SIGKILL);
    assert_int_equal(wt_reap(c, OP_MS), 128 + SIGKILL);
    mw_world_destroy(wac);
    mw_world_destroy(wab);
    mw_worlds_destroy(ctx);
}

static void killed_peer_breaks_only_its_world_while_other_world_keeps_going(void **state)
{
    (void)state;
    fault_while_other_world_streams(SIGKILL);
}

static void stopped_peer_is_detected_on_a_busy_world(void **state)
{
    (void)state;
    fault_while_other_world_streams(SIGSTOP);
}

struct seen {
    int64_t at; /* atomic */
    int state;
    char errstr[512];
};

static void on_event(const mw_world_event_t *ev, void *user)
{
    struct seen *s = user;
    if (ev->state == MW_WORLD_BROKEN && __atomic_load_n(&s->at, __ATOMIC_ACQUIRE) == 0) {
        snprintf(s->errstr, sizeof(s->errstr), "%s", ev->errstr);
        s->state = ev->state;
        __atomic_store_n(&s->at, mw_now_ms(), __ATOMIC_RELEASE);
    }
}

static void stopped_peer_is_detected_on_an_idle_world(void **state)
{
    (void)state;
    char err[512];
    const char *name = mwt_name("idle");
    struct child_args bargs = {name, 5};
    pid_t b = wt_fork(acker_child, &bargs);
    mw_worlds_t *ctx = wt_ctx(TIMEOUT_MS);
    struct seen seen = {0};
    mw_world_t *w = NULL;
    mw_world_opts_t o = {.name = name,
                         .epoch = 1,
                         .size = 2,
                         .rank = 0,
                         .timeout_ms = JOIN_MS,
                         .on_event = on_event,
                         .user = &seen};
    assert_int_equal(mw_world_join(ctx, &o, &w, err, sizeof(err)), 0);
    assert_int_equal(mw_world_wait_ready(w, JOIN_MS, err, sizeof(err)), 0);
    /* idle for twice the timeout: keepalives keep it up */
    int64_t t0 = mw_now_ms();
    while (mw_now_ms() - t0 < 2 * TIMEOUT_MS) {
        mwt_sleep_ms(50);
        assert_int_equal(mw_world_state(w), MW_WORLD_READY);
    }
    mw_world_stats_t st;
    mw_world_stats(w, &st);
    assert_true(st.pings_sent >= 2);

    int64_t t_stop = mw_now_ms();
    kill(b, SIGSTOP);
    assert_true(mwt_wait_for(__atomic_load_n(&seen.at, __ATOMIC_ACQUIRE) != 0,
                             TIMEOUT_MS + SLACK_MS + 5000));
    int64_t detect = __atomic_load_n(&seen.at, __ATOMIC_ACQUIRE) - t_stop;
    printf("# idle world: SIGSTOP detected after %lld ms (world.timeout_ms %lld): %s\n",
           (long long)detect, (long long)TIMEOUT_MS, seen.errstr);
    assert_true(detect <= TIMEOUT_MS + SLACK_MS);
    assert_non_null(strstr(seen.errstr, name));
    assert_non_null(strstr(seen.errstr, "nothing received from rank 1"));
    assert_int_equal(mw_world_state(w), MW_WORLD_BROKEN);
    /* a receive posted now fails at once with the cause */
    uint8_t x;
    assert_int_equal(mw_world_recv(w, 1, &x, 1, NULL, 1000, err, sizeof(err)), MW_EBROKEN);
    assert_non_null(strstr(err, "nothing received"));
    kill(b, SIGKILL);
    assert_int_equal(wt_reap(b, OP_MS), 128 + SIGKILL);
    mw_world_destroy(w);
    mw_worlds_destroy(ctx);
}

static void new_world_joins_while_another_is_saturated(void **state)
{
    (void)state;
    char err[512];
    const char *ab = mwt_name("sat.ab"), *ad = mwt_name("sat.ad");
    struct child_args bargs = {ab, 1}, dargs = {ad, 4};
    pid_t b = wt_fork(acker_child, &bargs);
    pid_t d = wt_fork(acker_child, &dargs);
    mw_worlds_t *ctx = wt_ctx(TIMEOUT_MS);
    mw_world_t *wab = wt_join(ctx, ab, 1, 2, 0, JOIN_MS);
    assert_non_null(wab);
    struct stream s;
    pthread_t ts;
    stream_start(&s, &ts, wab, 1);
    assert_true(mwt_wait_for(__atomic_load_n(&s.nacks, __ATOMIC_ACQUIRE) >= 20, OP_MS));

    int64_t t0 = mw_now_ms();
    mw_world_t *wad = wt_join(ctx, ad, 1, 2, 0, JOIN_MS);
    assert_non_null(wad);
    int64_t t_ready = mw_now_ms();
    uint8_t *buf = malloc(1u << 20);
    mw_tensor_desc_t desc = wt_bytes(1u << 20);
    for (uint64_t seq = 0; seq < 10; seq++) {
        struct msg m = {seq, 1u << 20}, ack;
        size_t len;
        wt_fill(buf, 1u << 20, 4, seq);
        assert_int_equal(mw_world_send_header(wad, 1, &m, sizeof(m), OP_MS, err, sizeof(err)), 0);
        assert_int_equal(mw_world_send(wad, 1, &desc, buf, OP_MS, err, sizeof(err)), 0);
        assert_int_equal(
            mw_world_recv_header(wad, 1, &ack, sizeof(ack), &len, OP_MS, err, sizeof(err)), 0);
        assert_int_equal(ack.seq, seq);
    }
    int64_t t1 = mw_now_ms();
    assert_true(mwt_wait_for(acks_between(&s, t1, INT64_MAX) >= 1, OP_MS));
    int inside = acks_between(&s, t0, t1);
    int64_t gap = max_gap(&s, t0, t1);
    printf("# A-D joined in %lld ms and moved 10 MiB in %lld ms; A-B: %d transfers meanwhile, "
           "longest gap %lld ms\n",
           (long long)(t_ready - t0), (long long)(t1 - t_ready), inside, (long long)gap);
    assert_true(inside >= 1);
    assert_true(gap < mwt_scaled(500));
    free(buf);
    stream_finish(&s, ts, b);
    struct msg stop = {0, 0};
    assert_int_equal(mw_world_send_header(wad, 1, &stop, sizeof(stop), OP_MS, err, sizeof(err)), 0);
    assert_int_equal(mw_world_barrier(wad, OP_MS, err, sizeof(err)), 0);
    assert_int_equal(wt_reap(d, OP_MS), 0);
    mw_world_destroy(wad);
    mw_world_destroy(wab);
    mw_worlds_destroy(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(killed_peer_breaks_only_its_world_while_other_world_keeps_going),
        cmocka_unit_test(stopped_peer_is_detected_on_a_busy_world),
        cmocka_unit_test(stopped_peer_is_detected_on_an_idle_world),
        cmocka_unit_test(new_world_joins_while_another_is_saturated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
