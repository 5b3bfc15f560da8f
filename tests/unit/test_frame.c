/* World wire format: round trips and rejection of malformed frames. */
#include "err.h"
#include "world/frame.h"
#include "world/rendezvous.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

static void header_round_trips(void **state)
{
    (void)state;
    uint8_t buf[MW_FRAME_HDR_SIZE];
    mw_frame_hdr_t in = {.version = MW_FRAME_VERSION,
                         .type = MW_FRAME_TENSOR,
                         .meta_len = 12,
                         .seq = 0xdeadbeef,
                         .payload_len = 4},
                   out;
    mw_frame_hdr_encode(&in, buf);
    assert_memory_equal(buf, "MWF1", 4);
    assert_int_equal(mw_frame_hdr_decode(buf, sizeof(buf), 1 << 20, &out, NULL, 0), MW_OK);
    assert_int_equal(out.type, MW_FRAME_TENSOR);
    assert_int_equal(out.meta_len, 12);
    assert_int_equal(out.seq, 0xdeadbeef);
    assert_int_equal(out.payload_len, 4);
}

static void malformed_headers_are_rejected_with_a_reason(void **state)
{
    (void)state;
    char err[256];
    uint8_t buf[MW_FRAME_HDR_SIZE];
    mw_frame_hdr_t h = {.version = MW_FRAME_VERSION, .type = MW_FRAME_PING}, out;
    mw_frame_hdr_encode(&h, buf);
    assert_int_equal(mw_frame_hdr_decode(buf, 10, 0, &out, err, sizeof(err)), MW_EPROTO);
    assert_non_null(strstr(err, "truncated"));
    buf[0] = 'X';
    assert_int_equal(mw_frame_hdr_decode(buf, sizeof(buf), 0, &out, err, sizeof(err)), MW_EPROTO);
    assert_non_null(strstr(err, "magic"));
    mw_frame_hdr_encode(&h, buf);
    buf[4] = 9;
    assert_int_equal(mw_frame_hdr_decode(buf, sizeof(buf), 0, &out, err, sizeof(err)), MW_EPROTO);
    assert_non_null(strstr(err, "version"));
    mw_frame_hdr_encode(&h, buf);
    buf[5] = 99;
    assert_int_equal(mw_frame_hdr_decode(buf, sizeof(buf), 0, &out, err, sizeof(err)), MW_EPROTO);
    assert_non_null(strstr(err, "type"));
    /* a PING with a payload, a HEADER over 4 KiB, a tensor over the limit */
    h.payload_len = 1;
    mw_frame_hdr_encode(&h, buf);
    assert_int_equal(mw_frame_hdr_decode(buf, sizeof(buf), 0, &out, err, sizeof(err)), MW_EPROTO);
    h.type = MW_FRAME_HEADER;
    h.payload_len = MW_FRAME_HEADER_MAX + 1;
    mw_frame_hdr_encode(&h, buf);
    assert_int_equal(mw_frame_hdr_decode(buf, sizeof(buf), 0, &out, err, sizeof(err)), MW_ETOOBIG);
    h.type = MW_FRAME_TENSOR;
    h.meta_len = 12;
    h.payload_len = 1001;
    mw_frame_hdr_encode(&h, buf);
    assert_int_equal(mw_frame_hdr_decode(buf, sizeof(buf), 1000, &out, err, sizeof(err)),
                     MW_ETOOBIG);
    assert_non_null(strstr(err, "1001"));
    h.meta_len = MW_FRAME_META_MAX + 1;
    mw_frame_hdr_encode(&h, buf);
    assert_int_equal(mw_frame_hdr_decode(buf, sizeof(buf), 1 << 20, &out, err, sizeof(err)),
                     MW_EPROTO);
}

static void tensor_meta_round_trips_and_must_match_the_payload(void **state)
{
    (void)state;
    char err[256];
    uint8_t meta[MW_FRAME_TENSOR_META];
    mw_tensor_desc_t d = {.dtype = MW_DTYPE_F32, .ndim = 2, .shape = {3, 5}}, out;
    int n = mw_frame_tensor_meta_encode(&d, meta);
    assert_int_equal(n, 4 + 16);
    uint64_t nbytes;
    assert_int_equal(mw_frame_tensor_meta_decode(meta, (size_t)n, &out, &nbytes, err, sizeof(err)),
                     MW_OK);
    assert_int_equal(nbytes, 60);
    assert_int_equal(out.shape[1], 5);
    mw_frame_hdr_t h = {
        .version = 1, .type = MW_FRAME_TENSOR, .meta_len = (uint32_t)n, .payload_len = 60};
    assert_int_equal(mw_frame_check(&h, meta, err, sizeof(err)), MW_OK);
    h.payload_len = 59;
    assert_int_equal(mw_frame_check(&h, meta, err, sizeof(err)), MW_EPROTO);
    meta[0] = 42; /* dtype */
    assert_int_equal(mw_frame_tensor_meta_decode(meta, (size_t)n, &out, &nbytes, err, sizeof(err)),
                     MW_EPROTO);
    meta[0] = MW_DTYPE_F32;
    memset(meta + 4, 0, 8); /* a zero dimension */
    assert_int_equal(mw_frame_tensor_meta_decode(meta, (size_t)n, &out, &nbytes, err, sizeof(err)),
                     MW_EPROTO);
    memset(meta + 4, 0xff, 16); /* overflowing dims */
    meta[11] = 0x7f;
    meta[19] = 0x7f;
    assert_int_equal(mw_frame_tensor_meta_decode(meta, (size_t)n, &out, &nbytes, err, sizeof(err)),
                     MW_EPROTO);
    assert_int_equal(mw_frame_tensor_meta_decode(meta, 3, &out, &nbytes, err, sizeof(err)),
                     MW_EPROTO);
}

static void hello_and_peers_round_trip(void **state)
{
    (void)state;
    char err[256];
    uint8_t meta[MW_FRAME_META_MAX];
    mw_frame_hello_t h = {.epoch = -7, .size = 4, .rank = 3, .secret_len = 32}, out;
    memset(h.secret, 0xab, 32);
    strcpy(h.name, "pipe.s0-s1");
    strcpy(h.addr, "10.0.0.1:5000");
    int n = mw_frame_hello_encode(&h, meta, sizeof(meta));
    assert_true(n > 0);
    assert_int_equal(mw_frame_hello_decode(meta, (size_t)n, &out, err, sizeof(err)), MW_OK);
    assert_int_equal(out.epoch, -7);
    assert_string_equal(out.name, "pipe.s0-s1");
    assert_string_equal(out.addr, "10.0.0.1:5000");
    assert_memory_equal(out.secret, h.secret, 32);
    for (int cut = 0; cut < n; cut++)
        assert_int_equal(mw_frame_hello_decode(meta, (size_t)cut, &out, err, sizeof(err)),
                         MW_EPROTO);
    h.rank = 4; /* rank >= size */
    n = mw_frame_hello_encode(&h, meta, sizeof(meta));
    assert_int_equal(mw_frame_hello_decode(meta, (size_t)n, &out, err, sizeof(err)), MW_EPROTO);

    const char *addrs[] = {"a:1", "bb:2", "ccc:3"};
    char got[3][MW_FRAME_ADDR_MAX + 1];
    n = mw_frame_peers_encode(addrs, 3, meta, sizeof(meta));
    assert_int_equal(mw_frame_peers_decode(meta, (size_t)n, got, 3, err, sizeof(err)), 3);
    assert_string_equal(got[2], "ccc:3");
    assert_int_equal(mw_frame_peers_decode(meta, (size_t)n - 1, got, 3, err, sizeof(err)),
                     MW_EPROTO);
    assert_int_equal(mw_frame_peers_decode(meta, (size_t)n, got, 2, err, sizeof(err)), MW_EPROTO);
}

static void coll_meta_checks_kind_and_reduction(void **state)
{
    (void)state;
    char err[256];
    uint8_t meta[8 + MW_FRAME_TENSOR_META];
    mw_frame_coll_t c = {.seq = 9,
                         .kind = MW_COLL_ALL_REDUCE,
                         .redop = 1,
                         .desc = {.dtype = MW_DTYPE_F32, .ndim = 1, .shape = {8}}},
                    out;
    uint64_t nbytes;
    int n = mw_frame_coll_meta_encode(&c, meta);
    assert_int_equal(mw_frame_coll_meta_decode(meta, (size_t)n, &out, &nbytes, err, sizeof(err)),
                     MW_OK);
    assert_int_equal(out.seq, 9);
    assert_int_equal(nbytes, 32);
    meta[4] = 77;
    assert_int_equal(mw_frame_coll_meta_decode(meta, (size_t)n, &out, &nbytes, err, sizeof(err)),
                     MW_EPROTO);
    meta[4] = MW_COLL_BROADCAST; /* a reduction on a broadcast */
    assert_int_equal(mw_frame_coll_meta_decode(meta, (size_t)n, &out, &nbytes, err, sizeof(err)),
                     MW_EPROTO);
}

static void rendezvous_record_round_trips(void **state)
{
    (void)state;
    char err[256], text[MW_RDV_RECORD_MAX];
    mw_rdv_record_t r = {.nccl_len = 3}, out;
    strcpy(r.addr, "127.0.0.1:4242");
    for (int i = 0; i < MW_RDV_SECRET_BYTES; i++)
        r.secret[i] = (uint8_t)i;
    memcpy(r.nccl, "\x01\xfe\x00", 3);
    int n = mw_rdv_record_format(&r, text, sizeof(text));
    assert_true(n > 0);
    assert_int_equal(mw_rdv_record_parse(text, (size_t)n, &out, err, sizeof(err)), MW_OK);
    assert_string_equal(out.addr, r.addr);
    assert_memory_equal(out.secret, r.secret, MW_RDV_SECRET_BYTES);
    assert_int_equal(out.nccl_len, 3);
    assert_memory_equal(out.nccl, r.nccl, 3);
    assert_int_equal(mw_rdv_record_parse("v1 addr=x:1", 11, &out, err, sizeof(err)), MW_EPROTO);
    assert_int_equal(mw_rdv_record_parse("v2 whatever", 11, &out, err, sizeof(err)), MW_EPROTO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(header_round_trips),
        cmocka_unit_test(malformed_headers_are_rejected_with_a_reason),
        cmocka_unit_test(tensor_meta_round_trips_and_must_match_the_payload),
        cmocka_unit_test(hello_and_peers_round_trip),
        cmocka_unit_test(coll_meta_checks_kind_and_reduction),
        cmocka_unit_test(rendezvous_record_round_trips),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
