/* The .npy header parser and writer: numpy's files read, each malformed case
 * rejected with a message that names it, and written headers read back. */
#include "err.h"
#include "ops/mwctl/npy.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

/* A file of format major.0 with header text dict, padded to 64 as numpy does,
 * then data_len zero bytes; returns its length. */
static size_t make_file(unsigned char *buf, size_t size, int major, const char *dict,
                        size_t data_len)
{
    size_t pre = major == 1 ? 10 : 12, n = strlen(dict);
    size_t total = (pre + n + 1 + 63) / 64 * 64;
    assert_true(total + data_len <= size);
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (unsigned char)major;
    buf[7] = 0;
    size_t hlen = total - pre;
    buf[8] = (unsigned char)hlen;
    buf[9] = (unsigned char)(hlen >> 8);
    if (major > 1)
        buf[10] = buf[11] = 0;
    memcpy(buf + pre, dict, n);
    memset(buf + pre + n, ' ', hlen - n - 1);
    buf[total - 1] = '\n';
    memset(buf + total, 0, data_len);
    return total + data_len;
}

static unsigned char file[8192];

/* Parses a file of dict and data_len bytes; returns the code, the message in err. */
static int parse(int major, const char *dict, size_t data_len, mwctl_npy_t *npy, char *err,
                 size_t err_size)
{
    size_t len = make_file(file, sizeof(file), major, dict, data_len);
    err[0] = '\0';
    return mwctl_npy_parse(npy, file, len, err, err_size);
}

static void npy_parse_reads_numpy_headers_of_each_version_and_dtype(void **state)
{
    (void)state;
    static const struct {
        const char *descr;
        mw_dtype_t dtype;
        size_t size;
    } cases[] = {{"<f4", MW_DTYPE_F32, 4},
                 {"<f2", MW_DTYPE_F16, 2},
                 {"<i4", MW_DTYPE_I32, 4},
                 {"<i8", MW_DTYPE_I64, 8},
                 {"|u1", MW_DTYPE_U8, 1}};
    char dict[128], err[256];
    mwctl_npy_t npy;
    for (int major = 1; major <= 3; major++)
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            snprintf(dict, sizeof(dict),
                     "{'descr': '%s', 'fortran_order': False, 'shape': (3, 5), }", cases[i].descr);
            assert_int_equal(parse(major, dict, 15 * cases[i].size, &npy, err, sizeof(err)), MW_OK);
            assert_int_equal(npy.dtype, cases[i].dtype);
            assert_int_equal(npy.major, major);
            assert_int_equal(npy.ndim, 2);
            assert_int_equal(npy.shape[0], 3);
            assert_int_equal(npy.shape[1], 5);
            assert_int_equal(npy.data_offset % 64, 0);
            assert_int_equal(npy.data_bytes, 15 * cases[i].size);
        }
    /* 1-D, scalar, empty, Python 2's long integers, double quotes, any key order. */
    assert_int_equal(parse(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (7,), }", 28, &npy,
                           err, sizeof(err)),
                     MW_OK);
    assert_int_equal(npy.ndim, 1);
    assert_int_equal(parse(1, "{'descr': '<f4', 'fortran_order': False, 'shape': ()}", 4, &npy, err,
                           sizeof(err)),
                     MW_OK);
    assert_int_equal(npy.ndim, 0);
    assert_int_equal(parse(1, "{'shape': (0, 4), \"fortran_order\": False, 'descr': '<f4'}", 0,
                           &npy, err, sizeof(err)),
                     MW_OK);
    assert_int_equal(parse(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L), }", 24,
                           &npy, err, sizeof(err)),
                     MW_OK);
    assert_int_equal(npy.shape[1], 3);
}

static void npy_parse_names_each_malformed_case(void **state)
{
    (void)state;
    static const struct {
        const char *dict;
        size_t data_len;
        const char *message;
    } cases[] = {
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", 16,
         "dtype '<f8' (float64) is not supported"},
        {"{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", 8,
         "dtype '>f4' is big-endian float32"},
        {"{'descr': '|b1', 'fortran_order': False, 'shape': (2,), }", 2,
         "dtype '|b1' (bool) is not supported"},
        {"{'descr': '<U3', 'fortran_order': False, 'shape': (2,), }", 24,
         "dtype '<U3' is not supported"},
        {"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", 8,
         "a structured dtype is not supported"},
        {"{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", 16,
         "the array is in Fortran order"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", 12,
         "truncated data: the shape needs 16 bytes, the file has 12 after the header"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", 20,
         "4 bytes follow the array's data"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2), }", 8,
         "the header's 'shape' (2) is not a tuple"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, -1), }", 8,
         "'shape' is not a tuple of integers"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }", 4,
         "more than 8 dimensions"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }", 4,
         "too large"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", 4,
         "the header's shape is too large"},
        {"{'descr': '<f4', 'shape': (2,), }", 8, "the header lacks 'fortran_order'"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}", 8,
         "unexpected or repeated key 'x'"},
        {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}", 8,
         "unexpected or repeated key 'descr'"},
        {"{'descr': '<f4', 'fortran_order': 0, 'shape': (2,), }", 8,
         "'fortran_order' is neither True nor False"},
        {"['descr', '<f4']", 8, "the header is not a dict"},
        {"{'descr': '<f4' 'fortran_order': False}", 8, "expected ',' or '}'"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), } x", 8,
         "text after the header dict"},
    };
    char err[256];
    mwctl_npy_t npy;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(parse(1, cases[i].dict, cases[i].data_len, &npy, err, sizeof(err)),
                         MW_EINVAL);
        if (strstr(err, cases[i].message) == NULL)
            fail_msg("%s: got '%s', want '%s'", cases[i].dict, err, cases[i].message);
    }
}

static void npy_parse_rejects_other_files_and_truncated_headers(void **state)
{
    (void)state;
    char err[256];
    mwctl_npy_t npy;
    assert_int_equal(mwctl_npy_parse(&npy, "PK\3\4 a zip file", 16, err, sizeof(err)), MW_EINVAL);
    assert_non_null(strstr(err, "not a .npy file"));
    assert_int_equal(mwctl_npy_parse(&npy, "", 0, err, sizeof(err)), MW_EINVAL);
    assert_non_null(strstr(err, "not a .npy file"));
    size_t len = make_file(file, sizeof(file), 1,
                           "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 8);
    assert_int_equal(mwctl_npy_parse(&npy, file, 9, err, sizeof(err)), MW_EINVAL);
    assert_non_null(strstr(err, "truncated header: the file ends after 9 bytes"));
    assert_int_equal(mwctl_npy_parse(&npy, file, 40, err, sizeof(err)), MW_EINVAL);
    assert_non_null(strstr(err, "truncated header: it says 128 bytes, the file has 40"));
    file[6] = 4;
    assert_int_equal(mwctl_npy_parse(&npy, file, len, err, sizeof(err)), MW_EINVAL);
    assert_non_null(strstr(err, "format version 4.0 is not supported"));
}

static void npy_header_writes_what_the_parser_reads_back(void **state)
{
    (void)state;
    char buf[MWCTL_NPY_HEADER_MAX + 64], err[256];
    int64_t shapes[3][2] = {{1000000, 8}, {3, 0}, {7, 1}};
    for (int i = 0; i < 3; i++) {
        size_t n = mwctl_npy_header(buf, sizeof(buf), MW_DTYPE_F32, 2, shapes[i]);
        assert_int_equal(n % 64, 0);
        uint64_t data = (uint64_t)shapes[i][0] * (uint64_t)shapes[i][1] * 4;
        mwctl_npy_t npy;
        /* The parser sees the header alone plus a claim of that much data. */
        static unsigned char whole[64 + 4 * 1000000 * 8];
        memcpy(whole, buf, n);
        assert_int_equal(mwctl_npy_parse(&npy, whole, n + data, err, sizeof(err)), MW_OK);
        assert_int_equal(npy.data_offset, n);
        assert_int_equal(npy.shape[0], shapes[i][0]);
        assert_int_equal(npy.shape[1], shapes[i][1]);
    }
    int64_t one = 5;
    assert_int_equal(mwctl_npy_header(buf, sizeof(buf), MW_DTYPE_U8, 1, &one), 128);
    assert_non_null(memmem(buf, 128, "'shape': (5,)", 13));
    assert_int_equal(mwctl_npy_header(buf, sizeof(buf), MW_DTYPE_BF16, 1, &one), 0);
    assert_int_equal(mwctl_npy_header(buf, 32, MW_DTYPE_F32, 1, &one), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(npy_parse_reads_numpy_headers_of_each_version_and_dtype),
        cmocka_unit_test(npy_parse_names_each_malformed_case),
        cmocka_unit_test(npy_parse_rejects_other_files_and_truncated_headers),
        cmocka_unit_test(npy_header_writes_what_the_parser_reads_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
