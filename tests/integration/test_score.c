/* mwctl score against real pipelines: a .npy job scored while workers are
 * killed equals the reference runner bit for bit; a job whose mwctl is killed
 * half-way ends, run again, with the same Y.npy and at most one window of
 * requests produced twice; bad inputs are refused by name, nothing produced. */
#include "err.h"
#include "harness.h"
#include "model/model.h"
#include "mwt_pipeline.h"
#include "ops/mwctl/npy.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#define FEATURES 16
#define PER      64 /* --rows-per-request */
#define WINDOW   16 /* --window */

static char *path_in(const char *name)
{
    static char buf[4][512];
    static int next;
    char *b = buf[next++ % 4];
    snprintf(b, sizeof(buf[0]), "%s/score-%d-%s", getenv("MWTEST_DIR"), (int)getpid(), name);
    return b;
}

/* Writes rows x FEATURES f32 rows as .npy: row r is mwt_request_input(r). */
static void write_input(const char *path, int rows)
{
    char hdr[MWCTL_NPY_HEADER_MAX];
    int64_t shape[2] = {rows, FEATURES};
    size_t n = mwctl_npy_header(hdr, sizeof(hdr), MW_DTYPE_F32, 2, shape);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(hdr, 1, n, f), n);
    for (int r = 0; r < rows; r++) {
        float x[FEATURES];
        mwt_request_input(r, x);
        assert_int_equal(fwrite(x, sizeof(x), 1, f), 1);
    }
    fclose(f);
}

/* What an uninterrupted job writes: the .npy of the unsplit model's outputs. */
static unsigned char *expected_output(const mwt_pipeline_t *p, int rows, size_t *len)
{
    char err[256], hdr[MWCTL_NPY_HEADER_MAX];
    int64_t shape[2] = {rows, p->out_features};
    size_t n = mwctl_npy_header(hdr, sizeof(hdr), MW_DTYPE_F32, 2, shape);
    *len = n + (size_t)rows * (size_t)p->out_features * 4;
    unsigned char *out = malloc(*len);
    assert_non_null(out);
    memcpy(out, hdr, n);
    mw_model_t *m = NULL;
    mw_stage_t *st = NULL;
    assert_int_equal(mw_model_open(p->model_path, &m, err, sizeof(err)), MW_OK);
    assert_int_equal(mw_stage_new(m, 0, mw_model_num_layers(m), PER, -1, &st, err, sizeof(err)),
                     MW_OK);
    float x[PER * FEATURES];
    for (int r = 0; r < rows; r += PER) {
        int k = rows - r < PER ? rows - r : PER;
        for (int j = 0; j < k; j++)
            mwt_request_input(r + j, x + j * FEATURES);
        assert_int_equal(
            mw_stage_forward(st, x, k,
                             (float *)(void *)(out + n + (size_t)r * p->out_features * 4)),
            MW_OK);
    }
    mw_stage_destroy(st);
    mw_model_destroy(m);
    return out;
}

static unsigned char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    struct stat sb;
    assert_int_equal(fstat(fileno(f), &sb), 0);
    *len = (size_t)sb.st_size;
    unsigned char *b = malloc(*len + 1);
    assert_int_equal(fread(b, 1, *len, f), *len);
    fclose(f);
    return b;
}

static void assert_same_file(const char *path, const unsigned char *want, size_t want_len)
{
    size_t len = 0;
    unsigned char *got = read_all(path, &len);
    if (got == NULL)
        fail_msg("%s was not written", path);
    if (len != want_len)
        fail_msg("%s has %zu bytes, the reference %zu", path, len, want_len);
    for (size_t i = 0; i < len; i++)
        if (got[i] != want[i])
            fail_msg("%s differs from the reference at byte %zu", path, i);
    free(got);
}

/* The `mwctl score` command line for p, with more options. */
static void score_cmd(char *cmd, size_t size, const mwt_pipeline_t *p, const char *in,
                      const char *out, const char *more, const char *log)
{
    snprintf(cmd, size,
             "%s --kafka.bootstrap.servers=%s score --pipeline %s --input %s --output %s "
             "--rows-per-request %d --window %d --timeout-s %lld %s >%s 2>&1",
             mwt_bin("mwctl"), getenv("MWTEST_KAFKA_BOOTSTRAP"), p->name, in, out, PER, WINDOW,
             (long long)mwt_scaled(60000) / 1000, more, log);
}

static pid_t spawn_sh(const char *cmd)
{
    char *argv[] = {"/bin/sh", "-c", (char *)cmd, NULL};
    pid_t pid = mwt_spawn(argv);
    assert_true(pid > 0);
    return pid;
}

/* Records in <name>.requests: every request produced so far. */
static int64_t requests_produced(mwt_pipeline_t *p)
{
    char topic[256];
    snprintf(topic, sizeof(topic), "%s.requests", p->name);
    int64_t total = 0;
    for (int part = 0; part < p->partitions; part++) {
        int64_t lo, hi;
        assert_int_equal(
            rd_kafka_query_watermark_offsets(p->producer, topic, part, &lo, &hi, 10000),
            RD_KAFKA_RESP_ERR_NO_ERROR);
        total += hi;
    }
    return total;
}

static char *log_text(const char *path)
{
    size_t len = 0;
    char *t = (char *)read_all(path, &len);
    if (t == NULL)
        return strdup("");
    t[len] = '\0';
    return t;
}

static void score_equals_reference_while_workers_are_killed(void **state)
{
    const int rows = 50000;
    /* As in the chaos test: a request may meet several killed workers. */
    static const char *const flags[] = {"--request.max_attempts=20", NULL};
    mwt_pipeline_t *p = mwt_pipeline_new("kill", 2, 4, 2, flags);
    *state = p;
    /* Two workers per stage; every 2 s one of them is killed (an origin, then
     * a stage-1 worker, in turn) and a new one started in its place. */
    int victims[2] = {mwt_pipeline_worker(p, 0, "kill-s0a"), mwt_pipeline_worker(p, 1, "kill-s1a")};
    mwt_pipeline_worker(p, 0, "kill-s0b");
    mwt_pipeline_worker(p, 1, "kill-s1b");
    const char *in = path_in("kill-x.npy"), *out = path_in("kill-y.npy"),
               *log = path_in("kill.log");
    write_input(in, rows);
    size_t want_len;
    unsigned char *want = expected_output(p, rows, &want_len);

    char cmd[2048], more[600];
    snprintf(more, sizeof(more), "--model %s --verify", p->model_path);
    score_cmd(cmd, sizeof(cmd), p, in, out, more, log);
    pid_t pid = spawn_sh(cmd);
    int status = -1, kills = 0;
    int64_t deadline = mw_now_ms() + mwt_scaled(120000);
    while ((status = mwt_wait_exit(pid, 2000)) == -1 && mw_now_ms() < deadline) {
        int stage = kills % 2;
        mwt_pipeline_signal(p, victims[stage], SIGKILL);
        char id[32];
        snprintf(id, sizeof(id), "kill-s%d-%d", stage, ++kills);
        victims[stage] = mwt_pipeline_worker(p, stage, id);
    }
    char *text = log_text(log);
    if (status != 0)
        fail_msg("mwctl score exited with %d after %d kills:\n%s", status, kills, text);
    char line[128];
    snprintf(line, sizeof(line), "scored %d/%d rows", rows, rows);
    if (strstr(text, line) == NULL || strstr(text, " 0 rows failed") == NULL)
        fail_msg("summary: %s", text);
    snprintf(line, sizeof(line), "%d/%d ok rows bit-identical to the reference runner", rows, rows);
    if (strstr(text, line) == NULL)
        fail_msg("no '%s' in: %s", line, text);
    assert_same_file(out, want, want_len);
    print_message("%d worker kills; %s", kills, strstr(text, "scored"));
    free(text);
    free(want);
    unlink(in);
    unlink(out);
    unlink(log);
}

static void score_killed_half_way_resumes_to_the_same_output(void **state)
{
    const int rows = 20000, nreq = (rows + PER - 1) / PER;
    mwt_pipeline_t *p = mwt_pipeline_new("resume", 2, 4, 2, NULL);
    *state = p;
    mwt_pipeline_worker(p, 0, "resume-s0");
    mwt_pipeline_worker(p, 1, "resume-s1");
    const char *in = path_in("resume-x.npy"), *out = path_in("resume-y.npy"),
               *log = path_in("resume.log");
    write_input(in, rows);
    size_t want_len;
    unsigned char *want = expected_output(p, rows, &want_len);

    char cmd[2048];
    score_cmd(cmd, sizeof(cmd), p, in, out, "", log);
    pid_t pid = spawn_sh(cmd);
    if (!mwt_wait_for(requests_produced(p) >= nreq / 2, mwt_scaled(60000)))
        fail_msg("mwctl score did not get half-way: %s", log_text(log));
    kill(-pid, SIGKILL);
    mwt_wait_exit(pid, 10000);
    int64_t first = requests_produced(p);
    assert_true(first < nreq);

    int rc = mwt_run(cmd, NULL, 0);
    char *text = log_text(log);
    if (rc != 0)
        fail_msg("the resumed mwctl score exited with %d:\n%s", rc, text);
    if (strstr(text, "rows were already done") == NULL)
        fail_msg("the second run did not resume: %s", text);
    assert_same_file(out, want, want_len);
    int64_t total = requests_produced(p);
    print_message("requests produced: %lld before the kill, %lld in all (%d needed, window %d); "
                  "%s",
                  (long long)first, (long long)total, nreq, WINDOW, text);
    assert_true(total >= nreq);
    assert_true(total <= nreq + WINDOW);

    /* Once more: everything is done, nothing is produced. */
    assert_int_equal(mwt_run(cmd, NULL, 0), 0);
    assert_int_equal(requests_produced(p), total);
    assert_same_file(out, want, want_len);
    free(text);
    free(want);
    unlink(in);
    unlink(out);
    unlink(log);
}

/* Writes a file of n bytes (header text dict, numpy-style) plus data bytes. */
static void write_raw(const char *path, const char *dict, size_t data)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    size_t len = strlen(dict), total = (10 + len + 1 + 63) / 64 * 64;
    unsigned char pre[10] = {0x93,
                             'N',
                             'U',
                             'M',
                             'P',
                             'Y',
                             1,
                             0,
                             (unsigned char)(total - 10),
                             (unsigned char)((total - 10) >> 8)};
    fwrite(pre, 1, 10, f);
    fputs(dict, f);
    for (size_t i = 10 + len; i < total - 1; i++)
        fputc(' ', f);
    fputc('\n', f);
    for (size_t i = 0; i < data; i++)
        fputc(0, f);
    fclose(f);
}

static void score_refuses_bad_input_by_name_and_produces_nothing(void **state)
{
    mwt_pipeline_t *p = mwt_pipeline_new("bad", 2, 4, 1, NULL);
    *state = p;
    const char *in = path_in("bad-x.npy"), *out = path_in("bad-y.npy"), *log = path_in("bad.log");
    static const struct {
        const char *dict; /* NULL: not a .npy file */
        size_t data;
        const char *message;
    } cases[] = {
        {NULL, 0, "not a .npy file"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (10, 16), }", 600,
         "truncated data: the shape needs 640 bytes"},
        {"{'descr': '<f4', 'fortran_order': True, 'shape': (10, 16), }", 640,
         "the array is in Fortran order"},
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (10, 16), }", 1280,
         "dtype '<f8' (float64) is not supported"},
        {"{'descr': '<i4', 'fortran_order': False, 'shape': (10, 16), }", 640,
         "the rows are i32; the model stages take f32"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (10, 4, 4), }", 640,
         "shape (10, 4, 4); a job needs rows of features"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (10, 15), }", 600,
         "rows of 15 features; the model"},
    };
    char cmd[2048], more[600];
    snprintf(more, sizeof(more), "--model %s", p->model_path);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (cases[i].dict == NULL) {
            FILE *f = fopen(in, "w");
            fputs("rows,features\n1,2\n", f);
            fclose(f);
        } else {
            write_raw(in, cases[i].dict, cases[i].data);
        }
        score_cmd(cmd, sizeof(cmd), p, in, out, more, log);
        int rc = mwt_run(cmd, NULL, 0);
        char *text = log_text(log);
        if (rc != 2 || strstr(text, cases[i].message) == NULL)
            fail_msg("case %zu: exit %d, want 2 and '%s'; said: %s", i, rc, cases[i].message, text);
        free(text);
    }
    /* A truncated header, and an output path that cannot be written. */
    write_input(in, 10);
    assert_int_equal(truncate(in, 40), 0);
    score_cmd(cmd, sizeof(cmd), p, in, out, "", log);
    assert_int_equal(mwt_run(cmd, NULL, 0), 2);
    char *text = log_text(log);
    assert_non_null(strstr(text, "truncated header"));
    free(text);
    write_input(in, 10);
    score_cmd(cmd, sizeof(cmd), p, in, "/nonexistent/dir/y.npy", "", log);
    assert_int_equal(mwt_run(cmd, NULL, 0), 2);
    text = log_text(log);
    assert_non_null(strstr(text, "/nonexistent/dir/y.npy: No such file or directory"));
    free(text);
    assert_int_equal(requests_produced(p), 0);

    /* Without --model a width the model does not take shows in the first
     * request's error result: it goes to the errors file, nothing more is produced. */
    mwt_pipeline_worker(p, 0, "bad-s0");
    mwt_pipeline_worker(p, 1, "bad-s1");
    write_raw(in, "{'descr': '<f4', 'fortran_order': False, 'shape': (200, 15), }", 200 * 60);
    score_cmd(cmd, sizeof(cmd), p, in, out, "", log);
    assert_int_equal(mwt_run(cmd, NULL, 0), 1);
    text = log_text(log);
    if (strstr(text, "the first request failed, so nothing more was produced") == NULL ||
        strstr(text, "64 rows failed") == NULL)
        fail_msg("said: %s", text);
    free(text);
    assert_int_equal(requests_produced(p), 1);
    char errors[600];
    snprintf(errors, sizeof(errors), "%s.errors.jsonl", out);
    text = log_text(errors);
    if (strncmp(text, "{\"rows\":[0,64],\"error\":\"", 24) != 0)
        fail_msg("%s: %s", errors, text);
    free(text);
    unlink(errors);
    unlink(in);
    unlink(out);
    unlink(log);
}

static int stop_pipeline(void **state)
{
    mwt_pipeline_destroy(*state);
    *state = NULL;
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(score_refuses_bad_input_by_name_and_produces_nothing,
                                  stop_pipeline),
        cmocka_unit_test_teardown(score_equals_reference_while_workers_are_killed, stop_pipeline),
        cmocka_unit_test_teardown(score_killed_half_way_resumes_to_the_same_output, stop_pipeline),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
