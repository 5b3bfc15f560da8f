/* The data plane's header frame codec: round trips and malformed frames. */
#include "err.h"
#include "worker/hop.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

static mw_hop_t sample(void)
{
    mw_hop_t h = {.type = MW_HOP_TENSOR,
                  .stage = 2,
                  .incarnation = 0x1122334455667788u,
                  .batch = 42,
                  .nrequests = 3,
                  .desc = {.dtype = MW_DTYPE_F32, .ndim = 2, .shape = {5, 16}},
                  .nbytes = 320};
    strcpy(h.origin, "host.1.abc");
    return h;
}

static void hop_batch_tensor_round_trips(void **state)
{
    (void)state;
    uint8_t buf[512];
    mw_hop_t in = sample(), out;
    int len = mw_hop_encode(&in, buf, sizeof(buf));
    assert_true(len > 0);
    assert_int_equal(mw_hop_decode(&out, buf, (size_t)len, NULL, 0), MW_OK);
    assert_int_equal(out.type, MW_HOP_TENSOR);
    assert_int_equal(out.stage, 2);
    assert_string_equal(out.origin, "host.1.abc");
    assert_true(out.incarnation == in.incarnation && out.batch == 42 && out.nrequests == 3);
    assert_int_equal(out.desc.ndim, 2);
    assert_int_equal(out.desc.shape[0], 5);
    assert_int_equal(out.desc.shape[1], 16);
    assert_int_equal(out.nbytes, 320);
}

static void hop_abort_carries_no_tensor(void **state)
{
    (void)state;
    uint8_t buf[512];
    mw_hop_t in = sample(), out;
    in.type = MW_HOP_ABORT;
    int len = mw_hop_encode(&in, buf, sizeof(buf));
    assert_true(len > 0);
    assert_int_equal(mw_hop_decode(&out, buf, (size_t)len, NULL, 0), MW_OK);
    assert_int_equal(out.type, MW_HOP_ABORT);
    assert_int_equal(out.desc.ndim, 0);
    assert_int_equal(out.nbytes, 0);
    assert_int_equal(out.batch, 42);
    assert_int_equal(out.nrequests, 3);
}

static void hop_rejects_malformed_frames(void **state)
{
    (void)state;
    uint8_t buf[512], bad[512];
    char err[256];
    mw_hop_t in = sample(), out;
    int len = mw_hop_encode(&in, buf, sizeof(buf));
    /* Every truncation, and one byte too many. */
    for (int n = 0; n < len; n++)
        assert_int_equal(mw_hop_decode(&out, buf, (size_t)n, err, sizeof(err)), MW_EPROTO);
    memcpy(bad, buf, (size_t)len);
    bad[len] = 0;
    assert_int_equal(mw_hop_decode(&out, bad, (size_t)len + 1, err, sizeof(err)), MW_EPROTO);
    /* Magic, type, dtype, size that does not match the shape, no requests. */
    const struct {
        size_t off;
        uint8_t v;
    } flips[] = {{0, 'X'}, {4, 9}, {7, 200}, {28, 65}, {8, 0}};
    for (size_t i = 0; i < sizeof(flips) / sizeof(flips[0]); i++) {
        memcpy(bad, buf, (size_t)len);
        bad[flips[i].off] = flips[i].v;
        if (flips[i].off == 8)
            memset(bad + 8, 0, 4);
        assert_int_equal(mw_hop_decode(&out, bad, (size_t)len, err, sizeof(err)), MW_EPROTO);
    }
    /* Encoding checks its input too. */
    in.origin[0] = '\0';
    assert_int_equal(mw_hop_encode(&in, buf, sizeof(buf)), MW_EINVAL);
    in = sample();
    in.nrequests = 0;
    assert_int_equal(mw_hop_encode(&in, buf, sizeof(buf)), MW_EINVAL);
    in = sample();
    assert_int_equal(mw_hop_encode(&in, buf, 10), MW_ETOOBIG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hop_batch_tensor_round_trips),
        cmocka_unit_test(hop_abort_carries_no_tensor),
        cmocka_unit_test(hop_rejects_malformed_frames),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
