/* One process holding 100 worlds at once: every world moves verified bytes,
 * and closing them leaks no file descriptor (and, under ASan, no memory). */
#include "test_world_util.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#define NWORLDS 100
#define NBYTES  4096
#define JOIN_MS mwt_scaled(30000)
#define OP_MS   mwt_scaled(60000)

static const char *world_name(int i)
{
    static char names[NWORLDS][128];
    char suffix[32];
    snprintf(suffix, sizeof(suffix), "many.%d", i);
    snprintf(names[i], sizeof(names[i]), "%s", mwt_name(suffix));
    return names[i];
}

/* Joins all worlds (even ones as rank 0, odd ones as rank 1), then on each:
 * rank 0 sends, rank 1 verifies and echoes, rank 0 verifies. */
static int run_side(int side, char *err, size_t errsz)
{
    mw_worlds_t *ctx = wt_ctx(5000);
    mw_world_t *w[NWORLDS];
    uint8_t(*buf)[NBYTES] = calloc(NWORLDS, NBYTES);
    mw_world_req_t *req[NWORLDS];
    int rc = 1;
    for (int i = 0; i < NWORLDS; i++) {
        mw_world_opts_t o = {.name = world_name(i),
                             .epoch = 1,
                             .size = 2,
                             .rank = (i + side) % 2,
                             .timeout_ms = JOIN_MS};
        if (mw_world_join(ctx, &o, &w[i], err, errsz) != 0)
            return 1;
    }
    for (int i = 0; i < NWORLDS; i++)
        if (mw_world_wait_ready(w[i], -1, err, errsz) != 0)
            goto out;
    mw_tensor_desc_t d = wt_bytes(NBYTES);
    /* first leg: rank 0 of each world sends, all at once */
    for (int i = 0; i < NWORLDS; i++) {
        int me = mw_world_rank(w[i]);
        if (me == 0) {
            wt_fill(buf[i], NBYTES, (uint64_t)i, 0);
            rc = mw_world_isend(w[i], 1, &d, buf[i], &req[i]);
        } else {
            rc = mw_world_irecv(w[i], 0, buf[i], NBYTES, &req[i]);
        }
        if (rc != 0) {
            mw_errf(rc, err, errsz, "post on world %d", i);
            goto out;
        }
    }
    rc = 1;
    for (int i = 0; i < NWORLDS; i++) {
        if (mw_world_wait(req[i], OP_MS, err, errsz) != 0)
            goto out;
        mw_world_req_free(req[i]);
        req[i] = NULL;
    }
    /* second leg: echo back */
    for (int i = 0; i < NWORLDS; i++) {
        if (mw_world_rank(w[i]) == 1) {
            if (wt_check(buf[i], NBYTES, (uint64_t)i, 0) != -1) {
                mw_errf(1, err, errsz, "world %d: contents", i);
                goto out;
            }
            mw_world_isend(w[i], 0, &d, buf[i], &req[i]);
        } else {
            memset(buf[i], 0, NBYTES);
            mw_world_irecv(w[i], 1, buf[i], NBYTES, &req[i]);
        }
    }
    for (int i = 0; i < NWORLDS; i++) {
        if (mw_world_wait(req[i], OP_MS, err, errsz) != 0)
            goto out;
        mw_world_req_free(req[i]);
        req[i] = NULL;
        if (mw_world_rank(w[i]) == 0 && wt_check(buf[i], NBYTES, (uint64_t)i, 0) != -1) {
            mw_errf(1, err, errsz, "world %d: echo contents", i);
            goto out;
        }
    }
    for (int i = 0; i < NWORLDS; i++)
        if (mw_world_barrier(w[i], OP_MS, err, errsz) != 0)
            goto out;
    rc = 0;
out:
    for (int i = 0; i < NWORLDS; i++)
        mw_world_destroy(w[i]);
    free(buf);
    mw_worlds_destroy(ctx);
    return rc;
}

static int other_side(void *arg)
{
    (void)arg;
    char err[512] = "";
    if (run_side(1, err, sizeof(err)) != 0)
        WT_FAIL("%s", err);
    return 0;
}

static void hundred_worlds_in_one_process_work_and_close_without_leaks(void **state)
{
    (void)state;
    char err[512] = "";
    pid_t pid = wt_fork(other_side, NULL);
    int fds_before = wt_count_fds();
    if (run_side(0, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    assert_int_equal(wt_reap(pid, OP_MS), 0);
    int fds_after = wt_count_fds();
    printf("# open fds: %d before, %d after 100 worlds\n", fds_before, fds_after);
    assert_int_equal(fds_after, fds_before);
}

static void destroyed_worlds_release_their_sockets_at_once(void **state)
{
    (void)state;
    char err[512];
    mw_worlds_t *ctx = wt_ctx(5000);
    /* a warm-up world (both ranks in this process) makes the rendezvous
     * thread open its Redis connection */
    mw_world_t *w0, *w1;
    mw_world_opts_t o0 = {.name = mwt_name("warm"), .epoch = 1, .size = 2, .rank = 0};
    mw_world_opts_t o1 = o0;
    o1.rank = 1;
    assert_int_equal(mw_world_join(ctx, &o0, &w0, err, sizeof(err)), 0);
    assert_int_equal(mw_world_join(ctx, &o1, &w1, err, sizeof(err)), 0);
    assert_int_equal(mw_world_wait_ready(w0, JOIN_MS, err, sizeof(err)), 0);
    assert_int_equal(mw_world_wait_ready(w1, JOIN_MS, err, sizeof(err)), 0);
    mw_world_destroy(w1);
    mw_world_destroy(w0);
    int base = wt_count_fds();
    mw_world_t *ws[20];
    for (int i = 0; i < 20; i++) {
        char suffix[32];
        snprintf(suffix, sizeof(suffix), "pending.%d", i);
        mw_world_opts_t o = {
            .name = mwt_name(suffix), .epoch = 1, .size = 2, .rank = i % 2, .timeout_ms = JOIN_MS};
        assert_int_equal(mw_world_join(ctx, &o, &ws[i], err, sizeof(err)), 0);
    }
    for (int i = 0; i < 20; i++)
        mw_world_destroy(ws[i]); /* still joining: nothing may be left behind */
    assert_int_equal(wt_count_fds(), base);
    mw_worlds_destroy(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hundred_worlds_in_one_process_work_and_close_without_leaks),
        cmocka_unit_test(destroyed_worlds_release_their_sockets_at_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
