/* Unit tests of the record codecs: every malformed request is rejected with a
 * message naming the problem, and requests, results and DLQ records round-trip. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "err.h"
#include "topics/record.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIMIT (1u << 20)

#define H(n, v) ((mw_header_t){.name = (n), .value = (v), .size = strlen(v)})

static void desc_set(mw_tensor_desc_t *d, mw_dtype_t dtype, int ndim, const int64_t *shape)
{
    memset(d, 0, sizeof(*d));
    d->dtype = dtype;
    d->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        d->shape[i] = shape[i];
}

/* Parses and expects failure rc with errstr containing want. */
static void expect_reject(const char *key, const void *value, size_t value_len,
                          const mw_header_t *h, size_t n, uint64_t limit, int want_rc,
                          const char *want)
{
    mw_request_t req;
    char err[512] = "";
    int rc = mw_request_parse(&req, key, key ? strlen(key) : 0, value, value_len, h, n, limit, err,
                              sizeof(err));
    if (rc != want_rc || strstr(err, want) == NULL)
        fail_msg("expected rc %d with '%s', got rc %d: '%s'", want_rc, want, rc, err);
    assert_null(req.owned);
    assert_null(req.data);
}

static void expect_json_reject(const char *json, const char *want)
{
    mw_header_t h[] = {H("content-type", "application/json")};
    expect_reject("r1", json, strlen(json), h, 1, LIMIT, MW_EINVAL, want);
}

static void binary_request_missing_or_bad_headers_are_rejected_with_reason(void **state)
{
    (void)state;
    float v[4] = {1, 2, 3, 4};
    mw_header_t ok[] = {H("mw-dtype", "f32"), H("mw-shape", "1,4")};
    mw_header_t shape_only[] = {H("mw-shape", "1,4")};
    mw_header_t dtype_only[] = {H("mw-dtype", "f32")};
    mw_header_t f64[] = {H("mw-dtype", "f64"), H("mw-shape", "1,4")};
    mw_header_t empty_dtype[] = {H("mw-dtype", ""), H("mw-shape", "1,4")};
    mw_header_t null_dtype[] = {{.name = "mw-dtype", .value = NULL, .size = 0},
                                H("mw-shape", "1,4")};
    mw_header_t shape_gap[] = {H("mw-dtype", "f32"), H("mw-shape", "1,,4")};
    mw_header_t shape_zero[] = {H("mw-dtype", "f32"), H("mw-shape", "0,4")};
    mw_header_t shape_neg[] = {H("mw-dtype", "f32"), H("mw-shape", "-1,4")};
    mw_header_t shape_space[] = {H("mw-dtype", "f32"), H("mw-shape", "1, 4")};
    mw_header_t shape_ctl[] = {H("mw-dtype", "f32"), H("mw-shape", "1,\n4")};
    mw_header_t shape_9d[] = {H("mw-dtype", "f32"), H("mw-shape", "1,1,1,1,1,1,1,1,4")};
    mw_header_t shape_huge[] = {H("mw-dtype", "f32"),
                                H("mw-shape", "99999999999,99999999999,99999999999")};
    mw_header_t ctype[] = {H("mw-dtype", "f32"), H("mw-shape", "1,4"),
                           H("content-type", "text/plain")};
    mw_header_t deadline[] = {H("mw-dtype", "f32"), H("mw-shape", "1,4"),
                              H("mw-deadline-ms", "soon")};

    expect_reject("", v, 16, ok, 2, LIMIT, MW_EINVAL, "missing request id");
    expect_reject(NULL, v, 16, ok, 2, LIMIT, MW_EINVAL, "missing request id");
    char longkey[300];
    memset(longkey, 'k', sizeof(longkey) - 1);
    longkey[299] = '\0';
    expect_reject(longkey, v, 16, ok, 2, LIMIT, MW_EINVAL, "299 bytes, at most 255");
    expect_reject("r1", v, 16, shape_only, 1, LIMIT, MW_EINVAL, "missing header mw-dtype");
    expect_reject("r1", v, 16, NULL, 0, LIMIT, MW_EINVAL, "missing header mw-dtype");
    expect_reject("r1", v, 16, dtype_only, 1, LIMIT, MW_EINVAL, "missing header mw-shape");
    expect_reject("r1", v, 16, f64, 2, LIMIT, MW_EINVAL, "unknown dtype 'f64' in header mw-dtype");
    expect_reject("r1", v, 16, empty_dtype, 2, LIMIT, MW_EINVAL, "unknown dtype ''");
    expect_reject("r1", v, 16, null_dtype, 2, LIMIT, MW_EINVAL, "unknown dtype ''");
    expect_reject("r1", v, 16, shape_gap, 2, LIMIT, MW_EINVAL, "bad header mw-shape");
    expect_reject("r1", v, 16, shape_zero, 2, LIMIT, MW_EINVAL, "dimension 0 is zero");
    expect_reject("r1", v, 16, shape_neg, 2, LIMIT, MW_EINVAL, "bad header mw-shape");
    expect_reject("r1", v, 16, shape_space, 2, LIMIT, MW_EINVAL, "bad header mw-shape");
    expect_reject("r1", v, 16, shape_ctl, 2, LIMIT, MW_EINVAL, "bad header mw-shape '1,\\x0a4'");
    expect_reject("r1", v, 16, shape_9d, 2, LIMIT, MW_EINVAL, "more than 8 dimensions");
    expect_reject("r1", v, 16, shape_huge, 2, LIMIT, MW_EINVAL, "too many elements");
    expect_reject("r1", v, 16, ctype, 3, LIMIT, MW_EINVAL, "unsupported content-type 'text/plain'");
    expect_reject("r1", v, 16, deadline, 3, LIMIT, MW_EINVAL, "mw-deadline-ms 'soon'");
}

static void binary_request_size_mismatch_and_limit_are_rejected(void **state)
{
    (void)state;
    float v[4] = {1, 2, 3, 4};
    mw_header_t ok[] = {H("mw-dtype", "f32"), H("mw-shape", "1,4")};
    expect_reject("r1", v, 15, ok, 2, LIMIT, MW_EINVAL,
                  "value is 15 bytes but shape 1,4 of f32 needs 16 bytes");
    expect_reject("r1", NULL, 0, ok, 2, LIMIT, MW_EINVAL, "value is 0 bytes");
    expect_reject("r1", v, 16, ok, 2, 15, MW_ETOOBIG,
                  "tensor of 16 bytes is over the limit of 15 bytes (records.max_tensor_bytes)");
}

static void json_malformed_requests_are_rejected_with_reason(void **state)
{
    (void)state;
    expect_json_reject("", "the value is empty");
    expect_json_reject("{\"dtype\":", "malformed JSON at byte");
    expect_json_reject("{\"dtype\":\"f32\",\"shape\":[1],\"data\":[1]} x",
                       "unexpected data after the object");
    expect_json_reject("[1,2]", "not an object");
    expect_json_reject("{\"shape\":[1],\"data\":[1]}", "\"dtype\" is missing");
    expect_json_reject("{\"dtype\":7,\"shape\":[1],\"data\":[1]}", "\"dtype\" is missing");
    expect_json_reject("{\"dtype\":\"f64\",\"shape\":[1],\"data\":[1]}", "unknown dtype 'f64'");
    expect_json_reject("{\"dtype\":\"f32\",\"data\":[1]}", "\"shape\" must be an array");
    expect_json_reject("{\"dtype\":\"f32\",\"shape\":[],\"data\":[1]}", "\"shape\" must be");
    expect_json_reject("{\"dtype\":\"f32\",\"shape\":[1,0],\"data\":[1]}",
                       "shape dimension 1 is not a positive integer");
    expect_json_reject("{\"dtype\":\"f32\",\"shape\":[-2],\"data\":[1]}", "not a positive");
    expect_json_reject("{\"dtype\":\"f32\",\"shape\":[1.5],\"data\":[1]}", "not a positive");
    expect_json_reject("{\"dtype\":\"f32\",\"shape\":[\"2\"],\"data\":[1]}", "not a positive");
    expect_json_reject("{\"dtype\":\"f32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data\":[1]}",
                       "1 to 8 positive integers");
    expect_json_reject("{\"dtype\":\"f32\",\"shape\":[1,4]}", "\"data\" is missing");
    expect_json_reject("{\"dtype\":\"f32\",\"shape\":[1,4],\"data\":{}}", "\"data\" is missing");
    expect_json_reject("{\"dtype\":\"f32\",\"shape\":[1,4],\"data\":[1,2,3]}",
                       "JSON data has 3 elements but shape 1,4 needs 4");
    expect_json_reject("{\"dtype\":\"f32\",\"shape\":[2],\"data\":[1,\"x\"]}",
                       "element 1 is not a number");
    expect_json_reject("{\"dtype\":\"f32\",\"shape\":[2],\"data\":[1,null]}",
                       "element 1 is not a number");
    expect_json_reject("{\"dtype\":\"u8\",\"shape\":[2],\"data\":[1,300]}",
                       "element 1 = 300 is out of range for u8");
    expect_json_reject("{\"dtype\":\"u8\",\"shape\":[1],\"data\":[-1]}", "out of range for u8");
    expect_json_reject("{\"dtype\":\"i32\",\"shape\":[1],\"data\":[1.5]}",
                       "element 0 = 1.5 is not an integer (dtype i32)");
    expect_json_reject("{\"dtype\":\"i32\",\"shape\":[1],\"data\":[3000000000]}",
                       "out of range for i32");
    expect_json_reject("{\"dtype\":\"i64\",\"shape\":[1],\"data\":[1e17]}", "beyond +-2^53");
    expect_json_reject("{\"dtype\":\"f16\",\"shape\":[1],\"data\":[70000]}",
                       "out of range for f16");
    expect_json_reject("{\"dtype\":\"bf16\",\"shape\":[1],\"data\":[1e39]}",
                       "out of range for bf16");
    expect_json_reject("{\"dtype\":\"f32\",\"shape\":[1],\"data\":[1e39]}", "out of range for f32");
    expect_json_reject("{\"dtype\":\"f32\",\"shape\":[1],\"data\":[1e999]}", "not a finite number");
    expect_json_reject("{\"dtype\":\"f32\",\"shape\":[2,3],\"data\":[[1,2,3],[4,5]]}",
                       "an array at depth 1 has 2 elements, shape says 3");
    expect_json_reject("{\"dtype\":\"f32\",\"shape\":[2,2],\"data\":[[1,2],3]}",
                       "expected an array at depth 1");
    expect_json_reject("{\"dtype\":\"f32\",\"shape\":[2],\"data\":[[1],[2]]}",
                       "element 0 is not a number");

    mw_header_t disagree_dtype[] = {H("content-type", "application/json"), H("mw-dtype", "i32")};
    const char *j = "{\"dtype\":\"f32\",\"shape\":[1,2],\"data\":[1,2]}";
    expect_reject("r1", j, strlen(j), disagree_dtype, 2, LIMIT, MW_EINVAL,
                  "header mw-dtype 'i32' disagrees with the JSON dtype 'f32'");
    mw_header_t disagree_shape[] = {H("content-type", "application/json"), H("mw-shape", "2")};
    expect_reject("r1", j, strlen(j), disagree_shape, 2, LIMIT, MW_EINVAL,
                  "header mw-shape '2' disagrees with the JSON shape '1,2'");
    mw_header_t json[] = {H("content-type", "application/json")};
    expect_reject("r1", j, strlen(j), json, 1, 4, MW_ETOOBIG, "over the limit of 4 bytes");
    /* Text far larger than any tensor the limit allows is refused before parsing. */
    size_t big = 16 * 4 + 4096 + 1;
    char *text = malloc(big);
    memset(text, ' ', big);
    text[0] = '{';
    text[big - 1] = '}';
    expect_reject("r1", text, big, json, 1, 4, MW_ETOOBIG, "JSON value of 4161 bytes");
    free(text);
}

static void binary_request_round_trips_for_every_dtype(void **state)
{
    (void)state;
    for (int dt = 0; dt < MW_DTYPE_COUNT; dt++) {
        mw_tensor_desc_t d;
        desc_set(&d, (mw_dtype_t)dt, 2, (int64_t[]){3, 5});
        size_t nbytes = 15 * mw_dtype_size(d.dtype);
        unsigned char data[15 * 8];
        for (size_t i = 0; i < nbytes; i++)
            data[i] = (unsigned char)(i * 7 + 1);
        mw_record_t rec;
        mw_record_init(&rec);
        char err[256];
        assert_int_equal(mw_request_encode(&rec, "id-7", 4, &d, data, nbytes, 1700000000123, 0, err,
                                           sizeof(err)),
                         MW_OK);
        assert_ptr_equal(rec.value, data); /* binary values are not copied */
        mw_request_t req;
        assert_int_equal(mw_request_parse(&req, rec.key, rec.key_len, rec.value, rec.value_len,
                                          rec.headers, rec.nheaders, LIMIT, err, sizeof(err)),
                         MW_OK);
        assert_int_equal(req.desc.dtype, dt);
        assert_int_equal(req.desc.ndim, 2);
        assert_int_equal(req.desc.shape[0], 3);
        assert_int_equal(req.desc.shape[1], 5);
        assert_int_equal(req.nbytes, nbytes);
        assert_ptr_equal(req.data, data); /* zero copy: points into the value */
        assert_null(req.owned);
        assert_int_equal(req.json, 0);
        assert_int_equal(req.deadline_ms, 1700000000123);
        assert_memory_equal(req.id, "id-7", 4);
        mw_request_fini(&req);
        mw_record_fini(&rec);
    }
}

static void json_request_round_trips_for_every_dtype(void **state)
{
    (void)state;
    for (int dt = 0; dt < MW_DTYPE_COUNT; dt++) {
        mw_tensor_desc_t d;
        desc_set(&d, (mw_dtype_t)dt, 3, (int64_t[]){2, 1, 3});
        unsigned char data[6 * 8];
        for (int i = 0; i < 6; i++) {
            double v = i * 1.5 - 3; /* exact in every float type */
            switch (d.dtype) {
            case MW_DTYPE_F32: {
                float f = (float)v;
                memcpy(data + 4 * i, &f, 4);
                break;
            }
            case MW_DTYPE_F16: {
                uint16_t h = mw_f32_to_f16((float)v);
                memcpy(data + 2 * i, &h, 2);
                break;
            }
            case MW_DTYPE_BF16: {
                uint16_t h = mw_f32_to_bf16((float)v);
                memcpy(data + 2 * i, &h, 2);
                break;
            }
            case MW_DTYPE_I32: {
                int32_t x = i * 1000000 - 2000000;
                memcpy(data + 4 * i, &x, 4);
                break;
            }
            case MW_DTYPE_I64: {
                int64_t x = (int64_t)i * 1000000000000 - 9007199254740992;
                memcpy(data + 8 * i, &x, 8);
                break;
            }
            default:
                data[i] = (unsigned char)(i * 50);
            }
        }
        size_t nbytes = 6 * mw_dtype_size(d.dtype);
        mw_record_t rec;
        mw_record_init(&rec);
        char err[256];
        assert_int_equal(mw_request_encode(&rec, "j", 1, &d, data, nbytes, 0, 1, err, sizeof(err)),
                         MW_OK);
        const void *ct;
        size_t cts;
        assert_int_equal(mw_header_find(rec.headers, rec.nheaders, "content-type", &ct, &cts),
                         MW_OK);
        assert_int_equal(mw_header_find(rec.headers, rec.nheaders, "mw-deadline-ms", NULL, NULL),
                         MW_ENOTFOUND);
        mw_request_t req;
        int rc = mw_request_parse(&req, rec.key, rec.key_len, rec.value, rec.value_len, rec.headers,
                                  rec.nheaders, LIMIT, err, sizeof(err));
        if (rc != MW_OK)
            fail_msg("%s: %s (%.*s)", mw_dtype_name(d.dtype), err, (int)rec.value_len,
                     (const char *)rec.value);
        assert_int_equal(req.json, 1);
        assert_non_null(req.owned);
        assert_int_equal(req.desc.dtype, dt);
        assert_int_equal(req.desc.ndim, 3);
        assert_int_equal(req.nbytes, nbytes);
        assert_memory_equal(req.data, data, nbytes);
        mw_request_fini(&req);
        assert_null(req.owned);
        mw_record_fini(&rec);
    }
}

static void json_request_accepts_nested_data_charset_and_matching_headers(void **state)
{
    (void)state;
    const char *j = " {\"shape\":[2,3],\"dtype\":\"i32\",\"data\":[[1,2,3],[4,5,-6]]}\n";
    mw_header_t h[] = {H("mw-dtype", "i32"), H("mw-shape", "2,3"),
                       H("content-type", " Application/JSON; charset=utf-8"),
                       H("mw-deadline-ms", "42")};
    mw_request_t req;
    char err[256];
    assert_int_equal(mw_request_parse(&req, "n", 1, j, strlen(j), h, 4, LIMIT, err, sizeof(err)),
                     MW_OK);
    int32_t want[6] = {1, 2, 3, 4, 5, -6};
    assert_int_equal(req.nbytes, sizeof(want));
    assert_memory_equal(req.data, want, sizeof(want));
    assert_int_equal(req.deadline_ms, 42);
    mw_request_fini(&req);
    mw_request_fini(NULL);
}

static void last_header_of_a_name_wins(void **state)
{
    (void)state;
    uint8_t v[4] = {1, 2, 3, 4};
    mw_header_t h[] = {H("mw-dtype", "f32"), H("mw-shape", "1"), H("mw-dtype", "u8"),
                       H("mw-shape", "2,2"), H("x-other", "whatever")};
    mw_request_t req;
    char err[256];
    assert_int_equal(mw_request_parse(&req, "a", 1, v, 4, h, 5, LIMIT, err, sizeof(err)), MW_OK);
    assert_int_equal(req.desc.dtype, MW_DTYPE_U8);
    assert_int_equal(req.desc.ndim, 2);
    mw_request_fini(&req);
}

static void result_ok_and_error_round_trip(void **state)
{
    (void)state;
    float out[2] = {0.5f, -1.25f};
    mw_result_t res = {.id = (const uint8_t *)"rq",
                       .id_len = 2,
                       .ok = 1,
                       .data = out,
                       .nbytes = 8,
                       .attempts = 2,
                       .latency_us = 1234};
    desc_set(&res.desc, MW_DTYPE_F32, 2, (int64_t[]){1, 2});
    mw_record_t rec;
    mw_record_init(&rec);
    char err[256];
    assert_int_equal(mw_result_encode(&rec, &res, err, sizeof(err)), MW_OK);
    mw_result_t got;
    assert_int_equal(mw_result_parse(&got, rec.key, rec.key_len, rec.value, rec.value_len,
                                     rec.headers, rec.nheaders, err, sizeof(err)),
                     MW_OK);
    assert_int_equal(got.ok, 1);
    assert_int_equal(got.id_len, 2);
    assert_int_equal(got.attempts, 2);
    assert_int_equal(got.latency_us, 1234);
    assert_int_equal(got.desc.ndim, 2);
    assert_memory_equal(got.data, out, 8);
    assert_null(got.error);
    mw_record_fini(&rec);

    mw_result_t bad = {.id = (const uint8_t *)"rq",
                       .id_len = 2,
                       .ok = 0,
                       .error = "value is 15 bytes",
                       .attempts = 1,
                       .latency_us = -1};
    assert_int_equal(mw_result_encode(&rec, &bad, err, sizeof(err)), MW_OK);
    assert_int_equal(rec.value_len, 0);
    assert_int_equal(mw_result_parse(&got, rec.key, rec.key_len, rec.value, rec.value_len,
                                     rec.headers, rec.nheaders, err, sizeof(err)),
                     MW_OK);
    assert_int_equal(got.ok, 0);
    assert_int_equal(got.error_len, strlen("value is 15 bytes"));
    assert_memory_equal(got.error, "value is 15 bytes", got.error_len);
    assert_int_equal(got.latency_us, -1);
    assert_int_equal(got.desc.ndim, 0);
    mw_record_fini(&rec);

    /* A result whose tensor does not match its shape cannot be encoded. */
    res.nbytes = 7;
    assert_int_equal(mw_result_encode(&rec, &res, err, sizeof(err)), MW_EINVAL);
    mw_record_fini(&rec);
}

static void result_parse_rejects_malformed_results(void **state)
{
    (void)state;
    char err[256];
    mw_result_t r;
    float v[2] = {0};
    mw_header_t none[] = {H("mw-dtype", "f32")};
    assert_int_equal(mw_result_parse(&r, "k", 1, v, 8, none, 1, err, sizeof(err)), MW_EINVAL);
    assert_non_null(strstr(err, "missing header mw-status"));
    mw_header_t status[] = {H("mw-status", "maybe")};
    assert_int_equal(mw_result_parse(&r, "k", 1, v, 8, status, 1, err, sizeof(err)), MW_EINVAL);
    assert_non_null(strstr(err, "neither ok nor error"));
    mw_header_t noshape[] = {H("mw-status", "ok"), H("mw-dtype", "f32")};
    assert_int_equal(mw_result_parse(&r, "k", 1, v, 8, noshape, 2, err, sizeof(err)), MW_EINVAL);
    mw_header_t size[] = {H("mw-status", "ok"), H("mw-dtype", "f32"), H("mw-shape", "3")};
    assert_int_equal(mw_result_parse(&r, "k", 1, v, 8, size, 3, err, sizeof(err)), MW_EINVAL);
    assert_non_null(strstr(err, "value is 8 bytes, its shape needs 12"));
    mw_header_t att[] = {H("mw-status", "error"), H("mw-attempts", "two")};
    assert_int_equal(mw_result_parse(&r, "k", 1, NULL, 0, att, 2, err, sizeof(err)), MW_EINVAL);
    assert_non_null(strstr(err, "bad mw-attempts 'two'"));
}

static void dlq_record_keeps_the_original_and_adds_error_and_attempts(void **state)
{
    (void)state;
    const char *value = "not a tensor";
    mw_header_t orig[] = {H("mw-dtype", "f64"),
                          H("x-trace", "abc"),
                          H("mw-error", "old"),
                          {.name = "x-null", .value = NULL, .size = 0}};
    mw_record_t rec;
    mw_record_init(&rec);
    assert_int_equal(
        mw_dlq_encode(&rec, "key1", 4, value, strlen(value), orig, 4, "unknown dtype 'f64'", 3),
        MW_OK);
    assert_ptr_equal(rec.value, value);
    assert_int_equal(rec.key_len, 4);
    assert_int_equal(rec.nheaders, 5); /* the old mw-error is replaced */
    assert_string_equal(rec.headers[0].name, "mw-dtype");
    assert_string_equal(rec.headers[1].name, "x-trace");
    assert_string_equal(rec.headers[2].name, "x-null");
    assert_null(rec.headers[2].value);
    const void *hv;
    size_t hs;
    assert_int_equal(mw_header_find(rec.headers, rec.nheaders, "mw-error", &hv, &hs), MW_OK);
    assert_int_equal(hs, strlen("unknown dtype 'f64'"));
    assert_memory_equal(hv, "unknown dtype 'f64'", hs);
    assert_int_equal(mw_header_find(rec.headers, rec.nheaders, "mw-attempts", &hv, &hs), MW_OK);
    assert_memory_equal(hv, "3", 1);
    mw_record_fini(&rec);
    mw_record_fini(&rec); /* fini leaves it empty */
}

static void half_and_bfloat16_conversions_round_to_nearest_even(void **state)
{
    (void)state;
    assert_int_equal(mw_f32_to_f16(1.0f), 0x3c00);
    assert_int_equal(mw_f32_to_f16(-2.0f), 0xc000);
    assert_int_equal(mw_f32_to_f16(65504.0f), 0x7bff);
    assert_int_equal(mw_f32_to_f16(65520.0f), 0x7c00);      /* rounds to infinity */
    assert_int_equal(mw_f32_to_f16(5.9604645e-8f), 0x0001); /* smallest subnormal */
    assert_int_equal(mw_f32_to_f16(2.9802322e-8f), 0x0000); /* half of it: ties to even */
    assert_int_equal(mw_f32_to_f16(1.0009765625f), 0x3c01);
    assert_int_equal(mw_f32_to_f16(1.00048828125f), 0x3c00); /* tie to even */
    assert_int_equal(mw_f32_to_f16(1.00146484375f), 0x3c02); /* tie to even, up */
    assert_true(isnan(mw_f16_to_f32(mw_f32_to_f16(NAN))));
    assert_int_equal(mw_f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(mw_f32_to_bf16(1.00390625f), 0x3f80); /* tie to even */
    assert_true(isnan(mw_bf16_to_f32(mw_f32_to_bf16(NAN))));
    /* Every non-NaN value survives a round trip through f32. */
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0)
            continue;
        if (mw_f32_to_f16(mw_f16_to_f32((uint16_t)h)) != h)
            fail_msg("f16 0x%04x does not round-trip", h);
        if ((h & 0x7f80) == 0x7f80 && (h & 0x7f) != 0)
            continue;
        if (mw_f32_to_bf16(mw_bf16_to_f32((uint16_t)h)) != h)
            fail_msg("bf16 0x%04x does not round-trip", h);
    }
}

#define HB(n, v) ((mw_header_t){.name = (n), .value = (v), .size = sizeof(v) - 1})

static void reply_headers_mw_and_spring_forms_are_parsed(void **state)
{
    (void)state;
    float v[4] = {1, 2, 3, 4};
    mw_request_t req;
    char err[512];
    mw_header_t none[] = {H("mw-dtype", "f32"), H("mw-shape", "1,4")};
    assert_int_equal(mw_request_parse(&req, "r1", 2, v, 16, none, 2, LIMIT, err, sizeof(err)),
                     MW_OK);
    assert_null(req.reply_topic);
    assert_int_equal(req.reply_partition, -1);
    assert_null(req.correlation_id);

    mw_header_t mw[] = {H("mw-dtype", "f32"), H("mw-shape", "1,4"), H("mw-reply-topic", "app.r-1"),
                        H("mw-reply-partition", "7")};
    assert_int_equal(mw_request_parse(&req, "r1", 2, v, 16, mw, 4, LIMIT, err, sizeof(err)), MW_OK);
    assert_int_equal(req.reply_topic_len, 7);
    assert_memory_equal(req.reply_topic, "app.r-1", 7);
    assert_int_equal(req.reply_partition, 7);

    /* Spring: the partition as a 4-byte big-endian int, the correlation id as bytes. */
    mw_header_t spring[] = {
        H("mw-dtype", "f32"), H("mw-shape", "1,4"), H("kafka_replyTopic", "replies"),
        HB("kafka_replyPartition", "\x00\x00\x01\x02"), HB("kafka_correlationId", "\x00\xffid")};
    assert_int_equal(mw_request_parse(&req, "r1", 2, v, 16, spring, 5, LIMIT, err, sizeof(err)),
                     MW_OK);
    assert_memory_equal(req.reply_topic, "replies", 7);
    assert_int_equal(req.reply_partition, 258);
    assert_int_equal(req.correlation_id_len, 4);
    assert_memory_equal(req.correlation_id, "\x00\xffid", 4);

    /* Both forms at once: accepted when they agree. */
    mw_header_t both[] = {
        H("mw-dtype", "f32"),         H("mw-shape", "1,4"),
        H("mw-reply-topic", "rt"),    H("kafka_replyTopic", "rt"),
        H("mw-reply-partition", "2"), HB("kafka_replyPartition", "\x00\x00\x00\x02")};
    assert_int_equal(mw_request_parse(&req, "r1", 2, v, 16, both, 6, LIMIT, err, sizeof(err)),
                     MW_OK);
    assert_int_equal(req.reply_partition, 2);
}

static void malformed_reply_headers_are_rejected_with_reason(void **state)
{
    (void)state;
    float v[4] = {1, 2, 3, 4};
    const struct {
        mw_header_t h;
        mw_header_t h2;
        const char *want;
    } cases[] = {
        {H("mw-reply-topic", ""), H("x", ""), "is not a Kafka topic name"},
        {H("mw-reply-topic", "a b"), H("x", ""), "'a b' is not a Kafka topic name"},
        {H("kafka_replyTopic", ".."), H("x", ""), "kafka_replyTopic '..' is not a Kafka topic"},
        {H("mw-reply-topic", "a"), H("kafka_replyTopic", "b"), "name different reply topics"},
        {H("mw-reply-topic", "a"), H("mw-reply-partition", "-1"), "is not a partition number"},
        {H("mw-reply-topic", "a"), H("mw-reply-partition", "2147483648"),
         "is not a partition number"},
        {H("mw-reply-topic", "a"), HB("kafka_replyPartition", "\x00\x01"), "4 bytes, big-endian"},
        {H("mw-reply-topic", "a"), HB("kafka_replyPartition", "\xff\xff\xff\xff"), "non-negative"},
        {H("mw-reply-partition", "1"), H("x", ""), "a reply partition without a reply topic"},
        {H("kafka_correlationId", ""), H("x", ""), "kafka_correlationId is 0 bytes"},
    };
    char topic[MW_TOPIC_NAME_MAX + 2];
    memset(topic, 'a', sizeof(topic) - 1);
    topic[sizeof(topic) - 1] = '\0';
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        mw_header_t h[] = {H("mw-dtype", "f32"), H("mw-shape", "1,4"), cases[i].h, cases[i].h2};
        expect_reject("r1", v, 16, h, 4, LIMIT, MW_EINVAL, cases[i].want);
    }
    mw_header_t long_topic[] = {H("mw-dtype", "f32"), H("mw-shape", "1,4"),
                                H("mw-reply-topic", topic)};
    expect_reject("r1", v, 16, long_topic, 3, LIMIT, MW_EINVAL, "is not a Kafka topic name");
    mw_header_t disagree[] = {H("mw-dtype", "f32"), H("mw-shape", "1,4"), H("mw-reply-topic", "a"),
                              H("mw-reply-partition", "1"),
                              HB("kafka_replyPartition", "\x00\x00\x00\x02")};
    expect_reject("r1", v, 16, disagree, 5, LIMIT, MW_EINVAL, "name different reply partitions");
}

static void result_echoes_the_correlation_id(void **state)
{
    (void)state;
    mw_record_t rec;
    mw_result_t got;
    char err[256];
    mw_result_t res = {.id = (const uint8_t *)"r1",
                       .id_len = 2,
                       .error = "no",
                       .correlation_id = "\x00"
                                         "c1",
                       .correlation_id_len = 3,
                       .latency_us = -1};
    mw_record_init(&rec);
    assert_int_equal(mw_result_encode(&rec, &res, err, sizeof(err)), MW_OK);
    assert_int_equal(mw_result_parse(&got, rec.key, rec.key_len, rec.value, rec.value_len,
                                     rec.headers, rec.nheaders, err, sizeof(err)),
                     MW_OK);
    assert_int_equal(got.correlation_id_len, 3);
    assert_memory_equal(got.correlation_id,
                        "\x00"
                        "c1",
                        3);
    mw_record_fini(&rec);
    res.correlation_id = NULL;
    assert_int_equal(mw_result_encode(&rec, &res, err, sizeof(err)), MW_OK);
    assert_int_equal(mw_header_find(rec.headers, rec.nheaders, "kafka_correlationId", NULL, NULL),
                     MW_ENOTFOUND);
    mw_record_fini(&rec);
}

static void reply_topic_allow_list_matches_globs(void **state)
{
    (void)state;
    assert_false(mw_reply_topic_allowed("", "replies"));
    assert_true(mw_reply_topic_allowed("replies", "replies"));
    assert_false(mw_reply_topic_allowed("replies", "replies2"));
    assert_true(mw_reply_topic_allowed("a.*, replies-?", "replies-7"));
    assert_true(mw_reply_topic_allowed("a.*, replies-?", "a.x.y"));
    assert_false(mw_reply_topic_allowed("a.*, replies-?", "b.x"));
    assert_false(mw_reply_topic_allowed(" , ,", "x"));
    assert_true(mw_reply_topic_allowed("x,,client-[0-9]*", "client-42"));
}

static void tensor_json_refuses_nan_for_json_requests(void **state)
{
    (void)state;
    float v[2] = {1, NAN};
    mw_tensor_desc_t d;
    desc_set(&d, MW_DTYPE_F32, 1, (int64_t[]){2});
    mw_record_t rec;
    mw_record_init(&rec);
    char err[256];
    assert_int_equal(mw_request_encode(&rec, "a", 1, &d, v, 8, 0, 1, err, sizeof(err)), MW_EINVAL);
    assert_non_null(strstr(err, "NaN"));
    mw_record_fini(&rec);
    assert_int_equal(mw_request_encode(&rec, "", 0, &d, v, 8, 0, 0, err, sizeof(err)), MW_EINVAL);
    assert_int_equal(mw_request_encode(&rec, "a", 1, &d, v, 7, 0, 0, err, sizeof(err)), MW_EINVAL);
    mw_record_fini(&rec);
    char *text = NULL;
    assert_int_equal(mw_tensor_json(&text, &d, v, 8), MW_EINVAL);
    assert_null(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(binary_request_missing_or_bad_headers_are_rejected_with_reason),
        cmocka_unit_test(binary_request_size_mismatch_and_limit_are_rejected),
        cmocka_unit_test(json_malformed_requests_are_rejected_with_reason),
        cmocka_unit_test(binary_request_round_trips_for_every_dtype),
        cmocka_unit_test(json_request_round_trips_for_every_dtype),
        cmocka_unit_test(json_request_accepts_nested_data_charset_and_matching_headers),
        cmocka_unit_test(last_header_of_a_name_wins),
        cmocka_unit_test(result_ok_and_error_round_trip),
        cmocka_unit_test(result_parse_rejects_malformed_results),
        cmocka_unit_test(dlq_record_keeps_the_original_and_adds_error_and_attempts),
        cmocka_unit_test(half_and_bfloat16_conversions_round_to_nearest_even),
        cmocka_unit_test(tensor_json_refuses_nan_for_json_requests),
        cmocka_unit_test(reply_headers_mw_and_spring_forms_are_parsed),
        cmocka_unit_test(malformed_reply_headers_are_rejected_with_reason),
        cmocka_unit_test(result_echoes_the_correlation_id),
        cmocka_unit_test(reply_topic_allow_list_matches_globs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
