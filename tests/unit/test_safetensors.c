/* safetensors reader and writer: round trips, and every malformed file rejected with its reason. */
#include "err.h"
#include "mwt_files.h"
#include "model/safetensors.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

/* A file image: 8-byte length, the JSON header, then data_len bytes 0, 1, 2, ... */
static unsigned char *image(const char *json, size_t data_len, size_t *len)
{
    size_t hlen = strlen(json);
    *len = 8 + hlen + data_len;
    unsigned char *b = malloc(*len);
    assert_non_null(b);
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    memcpy(b + 8, json, hlen);
    for (size_t i = 0; i < data_len; i++)
        b[8 + hlen + i] = (unsigned char)i;
    return b;
}

static void write_bytes(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* Both from memory and from a file, buf must be rejected with every one of the
 * given substrings in the message. */
static void expect_rejected(const unsigned char *buf, size_t len, const char *sub1,
                            const char *sub2)
{
    char err[512] = "";
    mw_safetensors_t *st = (mw_safetensors_t *)1;
    assert_int_equal(mw_safetensors_parse(buf, len, &st, err, sizeof(err)), MW_EINVAL);
    assert_null(st);
    if (strstr(err, sub1) == NULL || (sub2 && strstr(err, sub2) == NULL))
        fail_msg("message '%s' lacks '%s' / '%s'", err, sub1, sub2 ? sub2 : "");
    const char *path = mwt_tmp_path("bad.safetensors");
    write_bytes(path, buf, len);
    err[0] = '\0';
    assert_int_equal(mw_safetensors_open(path, &st, err, sizeof(err)), MW_EINVAL);
    assert_null(st);
    if (strstr(err, path) == NULL || strstr(err, sub1) == NULL ||
        (sub2 && strstr(err, sub2) == NULL))
        fail_msg("file message '%s' lacks the path, '%s' or '%s'", err, sub1, sub2 ? sub2 : "");
}

static void expect_json_rejected(const char *json, size_t data_len, const char *sub1,
                                 const char *sub2)
{
    size_t len;
    unsigned char *b = image(json, data_len, &len);
    expect_rejected(b, len, sub1, sub2);
    free(b);
}

static void written_file_reads_back_with_data_metadata_and_alignment(void **state)
{
    (void)state;
    float w[6] = {1, 2, 3, 4, 5, 6};
    int64_t ids[3] = {-1, 0, INT64_MAX};
    unsigned char bytes[3] = {7, 8, 9};
    float scalar = 42.0f;
    mw_st_entry_t e[] = {
        {"w", {MW_DTYPE_F32, 2, {2, 3}}, w},        {"ids", {MW_DTYPE_I64, 1, {3}}, ids},
        {"b", {MW_DTYPE_U8, 1, {3}}, bytes},        {"scalar", {MW_DTYPE_F32, 0, {0}}, &scalar},
        {"empty", {MW_DTYPE_F32, 2, {0, 3}}, NULL},
    };
    const char *meta[] = {"format", "test", "quote\"key", "line\nbreak"};
    char err[256];
    const char *path = mwt_tmp_path("ok.safetensors");
    assert_int_equal(mw_safetensors_write(path, e, 5, meta, 2, err, sizeof(err)), MW_OK);

    mw_safetensors_t *st;
    assert_int_equal(mw_safetensors_open(path, &st, err, sizeof(err)), MW_OK);
    assert_int_equal(mw_safetensors_count(st), 5);
    assert_string_equal(mw_safetensors_tensor(st, 0)->name, "w");
    const mw_st_tensor_t *t = mw_safetensors_find(st, "w");
    assert_non_null(t);
    assert_int_equal(t->desc.dtype, MW_DTYPE_F32);
    assert_int_equal(t->desc.ndim, 2);
    assert_int_equal(t->desc.shape[1], 3);
    assert_int_equal(t->nbytes, sizeof(w));
    assert_int_equal((uintptr_t)t->data % 8, 0);
    assert_memory_equal(t->data, w, sizeof(w));
    t = mw_safetensors_find(st, "ids");
    assert_memory_equal(t->data, ids, sizeof(ids));
    t = mw_safetensors_find(st, "b");
    assert_memory_equal(t->data, bytes, 3);
    t = mw_safetensors_find(st, "scalar");
    assert_int_equal(t->desc.ndim, 0);
    assert_int_equal(t->numel, 1);
    assert_memory_equal(t->data, &scalar, 4);
    t = mw_safetensors_find(st, "empty");
    assert_int_equal(t->numel, 0);
    assert_null(mw_safetensors_find(st, "nope"));
    assert_string_equal(mw_safetensors_metadata(st, "format"), "test");
    assert_string_equal(mw_safetensors_metadata(st, "quote\"key"), "line\nbreak");
    assert_null(mw_safetensors_metadata(st, "missing"));
    mw_safetensors_destroy(st);
    mw_safetensors_destroy(NULL);
}

static void header_padded_with_spaces_and_huggingface_layout_is_accepted(void **state)
{
    (void)state;
    expect_json_rejected("", 0, "not valid JSON", NULL); /* empty header: sanity */
    size_t len;
    unsigned char *b = image("{\"__metadata__\":{\"format\":\"pt\"},"
                             "\"b\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[8,12]},"
                             "\"a\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[0,8]}}  "
                             "  ",
                             12, &len);
    char err[256];
    mw_safetensors_t *st;
    assert_int_equal(mw_safetensors_parse(b, len, &st, err, sizeof(err)), MW_OK);
    assert_int_equal(mw_safetensors_count(st), 2);
    assert_int_equal(mw_safetensors_find(st, "a")->desc.dtype, MW_DTYPE_F16);
    assert_int_equal(mw_safetensors_find(st, "b")->desc.dtype, MW_DTYPE_BF16);
    assert_string_equal(mw_safetensors_metadata(st, "format"), "pt");
    mw_safetensors_destroy(st);
    free(b);
}

static void truncated_files_are_rejected(void **state)
{
    (void)state;
    expect_rejected((const unsigned char *)"abc", 3, "truncated", "8-byte");
    expect_rejected((const unsigned char *)"", 0, "truncated", NULL);
    unsigned char hdr[10] = {100, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    expect_rejected(hdr, sizeof(hdr), "truncated", "100 bytes");
    unsigned char huge[10] = {0, 0, 0, 0, 0, 1, 0, 0, '{', '}'};
    expect_rejected(huge, sizeof(huge), "exceeds", NULL);

    /* A good file cut short on disk: its last tensor runs past the end. */
    float w[64] = {0};
    mw_st_entry_t e[] = {{"first", {MW_DTYPE_F32, 1, {64}}, w},
                         {"last", {MW_DTYPE_F32, 1, {64}}, w}};
    char err[512];
    const char *path = mwt_tmp_path("cut.safetensors");
    assert_int_equal(mw_safetensors_write(path, e, 2, NULL, 0, err, sizeof(err)), MW_OK);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(truncate(path, sb.st_size - 100), 0);
    mw_safetensors_t *st;
    assert_int_equal(mw_safetensors_open(path, &st, err, sizeof(err)), MW_EINVAL);
    assert_non_null(strstr(err, "'last'"));
    assert_non_null(strstr(err, "out of range"));
}

static void bad_json_is_rejected(void **state)
{
    (void)state;
    expect_json_rejected("{\"w\": {\"dtype\": \"F32\",", 0, "not valid JSON", NULL);
    expect_json_rejected("{} x", 0, "not valid JSON", "unexpected byte");
    expect_json_rejected("[1, 2]", 0, "not a JSON object", NULL);
    expect_json_rejected("{\"w\": 3}", 0, "'w'", "not an object");
    expect_json_rejected("{\"__metadata__\": {\"k\": 1}}", 0, "__metadata__ 'k'", "not a string");
    expect_json_rejected("{\"__metadata__\": []}", 0, "__metadata__", "not an object");
    expect_json_rejected("{\"\": {\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                         "empty name", NULL);
}

static void unknown_and_unsupported_dtypes_are_rejected(void **state)
{
    (void)state;
    expect_json_rejected("{\"w\":{\"dtype\":\"Q7\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                         "'w'", "unknown dtype 'Q7'");
    expect_json_rejected("{\"w\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8,
                         "'w'", "F64 is not supported");
    expect_json_rejected("{\"w\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                         "'w'", "unknown dtype");
    expect_json_rejected("{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "'w'",
                         "\"dtype\" is missing");
}

static void shape_and_size_mismatches_are_rejected(void **state)
{
    (void)state;
    expect_json_rejected("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 24,
                         "'w'", "shape/size mismatch");
    expect_json_rejected("{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4,
                         "'w'", "dimension 0");
    expect_json_rejected("{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4,
                         "'w'", "dimension 0");
    expect_json_rejected("{\"w\":{\"dtype\":\"F32\",\"shape\":\"2\",\"data_offsets\":[0,8]}}", 8,
                         "'w'", "\"shape\"");
    expect_json_rejected(
        "{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1, "'w'",
        "9 dimensions");
    expect_json_rejected("{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,"
                         "4294967296],\"data_offsets\":[0,4]}}",
                         4, "'w'", "shape/size mismatch");
}

static void bad_offsets_are_rejected(void **state)
{
    (void)state;
    expect_json_rejected("{\"w\":{\"dtype\":\"F32\",\"shape\":[6],\"data_offsets\":[0,24]}}", 16,
                         "'w'", "out of range");
    expect_json_rejected("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 16,
                         "'w'", "end before");
    expect_json_rejected("{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "'w'", "data_offsets");
    expect_json_rejected("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "'w'",
                         "data_offsets");
    expect_json_rejected("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0.5,4.5]}}", 8,
                         "'w'", "data_offsets");
    expect_json_rejected("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 8,
                         "'w'", "data_offsets");
    expect_json_rejected("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                         "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}",
                         24, "'a' and 'b' overlap", NULL);
    expect_json_rejected("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                         "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                         8, "'a' appears twice", NULL);
}

static void zero_size_tensors_never_overlap(void **state)
{
    (void)state;
    size_t len;
    unsigned char *b = image("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                             "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}",
                             8, &len);
    char err[256];
    mw_safetensors_t *st;
    assert_int_equal(mw_safetensors_parse(b, len, &st, err, sizeof(err)), MW_OK);
    mw_safetensors_destroy(st);
    free(b);
}

static void missing_file_names_the_path(void **state)
{
    (void)state;
    char err[512];
    mw_safetensors_t *st;
    const char *path = mwt_tmp_path("does-not-exist.safetensors");
    assert_int_equal(mw_safetensors_open(path, &st, err, sizeof(err)), MW_ENOTFOUND);
    assert_non_null(strstr(err, path));
    assert_int_equal(mw_safetensors_open(mwt_tmp_path("."), &st, err, sizeof(err)), MW_EINVAL);
    assert_non_null(strstr(err, "not a regular file"));
}

static void unfinished_writer_leaves_no_file(void **state)
{
    (void)state;
    float w[4] = {1, 2, 3, 4};
    mw_st_entry_t e[] = {{"w", {MW_DTYPE_F32, 1, {4}}, w}};
    char err[256];
    const char *path = mwt_tmp_path("partial.safetensors");
    mw_st_writer_t *wr;
    assert_int_equal(mw_st_writer_new(path, e, 1, NULL, 0, &wr, err, sizeof(err)), MW_OK);
    assert_int_equal(mw_st_writer_append(wr, w, 8, err, sizeof(err)), MW_OK);
    assert_int_equal(mw_st_writer_finish(wr, err, sizeof(err)), MW_EINVAL);
    assert_non_null(strstr(err, "8 data bytes written"));
    assert_int_equal(mw_st_writer_append(wr, w, 12, err, sizeof(err)), MW_EINVAL);
    mw_st_writer_destroy(wr);
    assert_int_equal(access(path, F_OK), -1);
    char tmp[600];
    snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
    assert_int_equal(access(tmp, F_OK), -1);

    mw_st_entry_t dup[] = {{"w", {MW_DTYPE_F32, 1, {4}}, w}, {"w", {MW_DTYPE_F32, 1, {4}}, w}};
    assert_int_equal(mw_safetensors_write(path, dup, 2, NULL, 0, err, sizeof(err)), MW_EINVAL);
    assert_non_null(strstr(err, "'w' is given twice"));
    mw_st_entry_t reserved[] = {{"__metadata__", {MW_DTYPE_F32, 1, {4}}, w}};
    assert_int_equal(mw_safetensors_write(path, reserved, 1, NULL, 0, err, sizeof(err)), MW_EINVAL);
    assert_int_equal(access(path, F_OK), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(written_file_reads_back_with_data_metadata_and_alignment),
        cmocka_unit_test(header_padded_with_spaces_and_huggingface_layout_is_accepted),
        cmocka_unit_test(truncated_files_are_rejected),
        cmocka_unit_test(bad_json_is_rejected),
        cmocka_unit_test(unknown_and_unsupported_dtypes_are_rejected),
        cmocka_unit_test(shape_and_size_mismatches_are_rejected),
        cmocka_unit_test(bad_offsets_are_rejected),
        cmocka_unit_test(zero_size_tensors_never_overlap),
        cmocka_unit_test(missing_file_names_the_path),
        cmocka_unit_test(unfinished_writer_leaves_no_file),
    };
    return cmocka_run_group_tests(tests, mwt_files_setup, mwt_files_teardown);
}
