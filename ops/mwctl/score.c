/* mwctl score: a batch scoring job from one .npy file to another, in row
 * order and resumable. The input is memory-mapped and cut into requests of N
 * rows with ids "<job>:<first row>"; at most a window of them is in flight.
 * Every committed result of the job on P.results counts as done, so a job
 * killed at any point continues where it was when run again. */
#include "client.h"
#include "mwctl.h"
#include "npy.h"

#include "err.h"
#include "kafka.h"
#include "log.h"
#include "model/model.h"
#include "topics/record.h"
#include "topics/topics.h"
#include "verify.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static void usage(FILE *out)
{
    fprintf(out,
            "usage: mwctl score --pipeline P --input X.npy --output Y.npy [OPTIONS]\n"
            "\n"
            "Scores every row of X.npy (a C-order array of f32 rows, [rows, features]) through\n"
            "pipeline P and writes row i's output at row i of Y.npy. Run again with the same\n"
            "job id, it continues an interrupted job: rows whose result is committed on\n"
            "P.results are not produced again.\n"
            "  --rows-per-request N  rows per request (default batch.max_rows: one request\n"
            "                        fills one batch)\n"
            "  --job ID              the job id; request ids are ID:<first row> (default:\n"
            "                        <input name>-<hash of input path, content, pipeline and N>)\n"
            "  --window W            requests in flight at most (default 256)\n"
            "  --model FILE          the model the pipeline serves (safetensors): the row width\n"
            "                        is checked against it before anything is produced\n"
            "  --verify              with --model: check each output against the reference\n"
            "                        runner (bit for bit) and count the rows that are equal\n"
            "  --tolerance REL       with --verify: accept values within REL * (1 + |reference|)\n"
            "  --timeout-s S         give up when no result came for S s (default 300)\n"
            "  --no-progress         no progress output\n"
            "Failed requests leave zeros in Y.npy and a line {\"rows\":[first,end],\"error\":..}\n"
            "in Y.npy.errors.jsonl (rows first..end-1). Exit status: 0 every row scored (and\n"
            "verified), 1 failures, 2 usage errors and bad input (nothing produced).\n");
}

struct options {
    const char *pipeline, *input, *output, *job, *model;
    int64_t rows_per_request, window, timeout_s;
    int verify, no_progress;
    double tolerance;
};

enum { REQ_TODO, REQ_PRODUCED, REQ_DONE };

struct job {
    const struct options *o;
    char topic[MW_TOPIC_NAME_MAX + 1], results_topic[MW_TOPIC_NAME_MAX + 1];
    char id[MW_REQUEST_ID_MAX + 1]; /* the job id */
    size_t id_len;
    /* input */
    const unsigned char *map;
    size_t map_len;
    mwctl_npy_t in;
    int64_t rows, width, per, nreq;
    /* per request: REQ_*, and the error of a failed one */
    unsigned char *state;
    char **errors;
    int64_t next, released; /* next request to produce; input bytes given back below */
    int64_t in_flight, produced, done, done_rows, failed_rows, resumed_rows, verified_rows;
    int probing; /* no ok result yet: one request at a time until one comes */
    /* output */
    int out_fd;
    int out_created; /* by this run: removed again when no result filled it */
    int out_ready;
    mw_dtype_t out_dtype;
    int64_t out_width;
    uint64_t out_offset, out_row_bytes;
    rd_kafka_t *producer, *consumer;
    mwctl_verifier_t *verifier;
    int64_t verify_shown;
    double last_result_s;
    char fatal[1024]; /* why the job stopped; empty while it goes on */
};

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

static int parse_count(const char *name, const char *arg, int64_t min, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(arg, &end, 10);
    if (errno != 0 || end == arg || *end != '\0' || v < min) {
        fprintf(stderr, "mwctl score: --%s '%s' is not a number >= %" PRId64 "\n", name, arg, min);
        return 2;
    }
    *out = v;
    return 0;
}

/* -1 to go on, else the exit status. */
static int parse_options(int argc, char **argv, const mw_config_t *cfg, struct options *o)
{
    static const struct option opts[] = {
        {"pipeline", required_argument, NULL, 'p'},
        {"input", required_argument, NULL, 'i'},
        {"output", required_argument, NULL, 'o'},
        {"rows-per-request", required_argument, NULL, 'n'},
        {"job", required_argument, NULL, 'j'},
        {"window", required_argument, NULL, 'w'},
        {"model", required_argument, NULL, 'm'},
        {"verify", no_argument, NULL, 'V'},
        {"tolerance", required_argument, NULL, 'R'},
        {"timeout-s", required_argument, NULL, 'T'},
        {"no-progress", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    *o = (struct options){.rows_per_request = cfg->batch_max_rows, .window = 256, .timeout_s = 300};
    int c, rc = 0;
    optind = 1;
    while (rc == 0 && (c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'p':
            o->pipeline = optarg;
            break;
        case 'i':
            o->input = optarg;
            break;
        case 'o':
            o->output = optarg;
            break;
        case 'n':
            rc = parse_count("rows-per-request", optarg, 1, &o->rows_per_request);
            break;
        case 'j':
            o->job = optarg;
            break;
        case 'w':
            rc = parse_count("window", optarg, 1, &o->window);
            break;
        case 'm':
            o->model = optarg;
            break;
        case 'V':
            o->verify = 1;
            break;
        case 'R':
            rc = mwctl_parse_tolerance("score", optarg, &o->tolerance) != 0 ? 2 : 0;
            break;
        case 'T':
            rc = parse_count("timeout-s", optarg, 1, &o->timeout_s);
            break;
        case 'q':
            o->no_progress = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (rc != 0 || mwctl_args_done("score", argc, argv, o->pipeline) != 0)
        return 2;
    if (o->input == NULL || o->output == NULL) {
        fprintf(stderr, "mwctl score: --input and --output are required\n");
        return 2;
    }
    if (o->verify && o->model == NULL) {
        fprintf(stderr, "mwctl score: --verify needs --model FILE (the model the pipeline "
                        "serves)\n");
        return 2;
    }
    if (o->tolerance > 0 && !o->verify) {
        fprintf(stderr, "mwctl score: --tolerance goes with --verify\n");
        return 2;
    }
    if (o->rows_per_request > cfg->batch_max_rows) {
        fprintf(stderr,
                "mwctl score: --rows-per-request %" PRId64 " is over batch.max_rows = %" PRId64
                " (the workers refuse such requests)\n",
                o->rows_per_request, (int64_t)cfg->batch_max_rows);
        return 2;
    }
    if (o->job != NULL && (o->job[0] == '\0' || strlen(o->job) > MW_REQUEST_ID_MAX - 21)) {
        fprintf(stderr, "mwctl score: --job must have 1 to %d bytes\n", MW_REQUEST_ID_MAX - 21);
        return 2;
    }
    return -1;
}

/* ---- input ------------------------------------------------------------------ */

/* Maps and checks the input: a .npy array of f32 rows [rows, features] that
 * a request of N rows may carry. 0, or 2 with the message printed. */
static int input_open(struct job *jb, const mw_config_t *cfg)
{
    const struct options *o = jb->o;
    char err[512];
    int fd = open(o->input, O_RDONLY);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        fprintf(stderr, "mwctl score: %s: %s\n", o->input, strerror(errno));
        if (fd >= 0)
            close(fd);
        return 2;
    }
    jb->map_len = (size_t)sb.st_size;
    if (!S_ISREG(sb.st_mode) || jb->map_len == 0) {
        fprintf(stderr, "mwctl score: %s: not a .npy file (%s)\n", o->input,
                S_ISREG(sb.st_mode) ? "it is empty" : "not a regular file");
        close(fd);
        return 2;
    }
    void *m = mmap(NULL, jb->map_len, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        fprintf(stderr, "mwctl score: %s: mmap: %s\n", o->input, strerror(errno));
        return 2;
    }
    jb->map = m;
    if (mwctl_npy_parse(&jb->in, jb->map, jb->map_len, err, sizeof(err)) != MW_OK) {
        fprintf(stderr, "mwctl score: %s: %s\n", o->input, err);
        return 2;
    }
    if (jb->in.ndim != 2 || jb->in.shape[0] == 0 || jb->in.shape[1] == 0) {
        char shape[MW_TENSOR_MAX_DIMS * 21] = "";
        for (int i = 0, n = 0; i < jb->in.ndim; i++)
            n += snprintf(shape + n, sizeof(shape) - (size_t)n, "%s%" PRId64, i ? ", " : "",
                          jb->in.shape[i]);
        fprintf(stderr,
                "mwctl score: %s: the array has shape (%s); a job needs rows of features, "
                "shape (rows, features), neither 0\n",
                o->input, shape);
        return 2;
    }
    if (jb->in.dtype != MW_DTYPE_F32) {
        fprintf(stderr,
                "mwctl score: %s: the rows are %s; the model stages take f32 "
                "(a.astype('<f4'))\n",
                o->input, mw_dtype_name(jb->in.dtype));
        return 2;
    }
    jb->rows = jb->in.shape[0];
    jb->width = jb->in.shape[1];
    jb->per = o->rows_per_request;
    jb->nreq = (jb->rows + jb->per - 1) / jb->per;
    uint64_t bytes = (uint64_t)jb->per * (uint64_t)jb->width * 4;
    if (bytes > (uint64_t)cfg->records_max_tensor_bytes) {
        fprintf(stderr,
                "mwctl score: a request of %" PRId64 " rows of %" PRId64 " f32 is %" PRIu64
                " bytes, over records.max_tensor_bytes = %" PRId64 " (lower --rows-per-request)\n",
                jb->per, jb->width, bytes, (int64_t)cfg->records_max_tensor_bytes);
        return 2;
    }
    return 0;
}

/* Hash of the input file's bytes (8 at a time), read with pread so that the
 * pages do not stay in this process. */
static int content_hash(const char *path, uint64_t *h)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return MW_EIO;
    enum { CHUNK = 1 << 20 };
    uint64_t *buf = malloc(CHUNK);
    uint64_t x = UINT64_C(14695981039346656037);
    ssize_t got = 0;
    while (buf != NULL && (got = read(fd, buf, CHUNK)) > 0) {
        if (got % 8 != 0)
            memset((char *)buf + got, 0, (size_t)(8 - got % 8));
        for (ssize_t i = 0; i < (got + 7) / 8; i++)
            x = (x ^ buf[i]) * UINT64_C(0x100000001b3) + (x >> 29);
    }
    close(fd);
    free(buf);
    *h = x;
    return buf == NULL || got < 0 ? MW_EIO : MW_OK;
}

/* The default job id: "<input file name without .npy>-<16 hex>" of the input's
 * absolute path, content, the pipeline and N. 0, or 2 with a message. */
static int default_job_id(struct job *jb)
{
    const struct options *o = jb->o;
    char abs[PATH_MAX];
    uint64_t h;
    if (realpath(o->input, abs) == NULL || content_hash(abs, &h) != MW_OK) {
        fprintf(stderr, "mwctl score: %s: %s\n", o->input, strerror(errno));
        return 2;
    }
    char key[PATH_MAX + 64 + MW_TOPIC_NAME_MAX];
    int n = snprintf(key, sizeof(key), "%s|%s|%" PRId64, abs, o->pipeline, jb->per);
    for (int i = 0; i < n; i++)
        h = (h ^ (unsigned char)key[i]) * UINT64_C(0x100000001b3);
    const char *base = strrchr(abs, '/') ? strrchr(abs, '/') + 1 : abs;
    size_t blen = strlen(base);
    if (blen > 4 && strcmp(base + blen - 4, ".npy") == 0)
        blen -= 4;
    if (blen > 64)
        blen = 64;
    size_t k = 0;
    for (size_t i = 0; i < blen; i++) {
        char c = base[i];
        int plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
        jb->id[k++] = plain ? c : '_';
    }
    snprintf(jb->id + k, sizeof(jb->id) - k, "-%016" PRIx64, h);
    jb->id_len = strlen(jb->id);
    return 0;
}

/* Rows of request i. */
static int64_t req_rows(const struct job *jb, int64_t i)
{
    int64_t first = i * jb->per;
    return jb->rows - first < jb->per ? jb->rows - first : jb->per;
}

static const float *req_input(const struct job *jb, int64_t i)
{
    return (const float *)(const void *)(jb->map + jb->in.data_offset +
                                         (uint64_t)(i * jb->per) * (uint64_t)jb->width * 4);
}

/* Gives back the mapped pages of requests already produced (the page cache
 * keeps them): the process's memory stays bounded by the window. */
static void release_input(struct job *jb)
{
    const int64_t step = 32 << 20;
    uint64_t upto = jb->in.data_offset + (uint64_t)(jb->next * jb->per) * (uint64_t)jb->width * 4;
    long page = sysconf(_SC_PAGESIZE);
    if ((int64_t)upto - jb->released < step)
        return;
    uint64_t end = upto / (uint64_t)page * (uint64_t)page;
    madvise((void *)(uintptr_t)(jb->map + jb->released), end - (uint64_t)jb->released,
            MADV_DONTNEED);
    jb->released = (int64_t)end;
}

/* ---- output ------------------------------------------------------------------ */

/* Opens (creates) the output now, so that an unwritable path fails before
 * anything is produced. 0, or 2 with a message. */
static int output_open(struct job *jb)
{
    jb->out_fd = open(jb->o->output, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    jb->out_created = jb->out_fd >= 0;
    if (jb->out_fd < 0 && errno == EEXIST)
        jb->out_fd = open(jb->o->output, O_RDWR | O_CLOEXEC);
    if (jb->out_fd < 0) {
        fprintf(stderr, "mwctl score: %s: %s\n", jb->o->output, strerror(errno));
        return 2;
    }
    return 0;
}

/* Sizes the output for [rows, width] of dtype from the first ok result: the
 * header, then zeros (a sparse file) that the results fill in place. Earlier
 * contents go: every result of the job is written again from P.results. */
static int output_create(struct job *jb, mw_dtype_t dtype, int64_t width)
{
    char hdr[MWCTL_NPY_HEADER_MAX];
    int64_t shape[2] = {jb->rows, width};
    size_t n = mwctl_npy_header(hdr, sizeof(hdr), dtype, 2, shape);
    if (n == 0)
        return mw_errf(MW_EINVAL, jb->fatal, sizeof(jb->fatal),
                       "the pipeline's outputs are %s, which a .npy file here cannot hold",
                       mw_dtype_name(dtype));
    jb->out_dtype = dtype;
    jb->out_width = width;
    jb->out_offset = n;
    jb->out_row_bytes = (uint64_t)width * mw_dtype_size(dtype);
    if (ftruncate(jb->out_fd, 0) != 0 || pwrite(jb->out_fd, hdr, n, 0) != (ssize_t)n ||
        ftruncate(jb->out_fd, (off_t)(n + (uint64_t)jb->rows * jb->out_row_bytes)) != 0)
        return mw_errf(MW_EIO, jb->fatal, sizeof(jb->fatal), "%s: %s", jb->o->output,
                       strerror(errno));
    jb->out_ready = 1;
    return MW_OK;
}

/* Y.npy.errors.jsonl: one line per failed request, in row order; removed
 * when none failed. */
static int write_errors(const struct job *jb)
{
    char path[PATH_MAX + 16];
    snprintf(path, sizeof(path), "%s.errors.jsonl", jb->o->output);
    if (jb->failed_rows == 0)
        return unlink(path) == 0 || errno == ENOENT ? 0 : -1;
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        fprintf(stderr, "mwctl score: %s: %s\n", path, strerror(errno));
        return -1;
    }
    for (int64_t i = 0; i < jb->nreq; i++) {
        if (jb->errors[i] == NULL)
            continue;
        cJSON *line = cJSON_CreateObject();
        cJSON *rows = cJSON_AddArrayToObject(line, "rows");
        cJSON_AddItemToArray(rows, cJSON_CreateNumber((double)(i * jb->per)));
        cJSON_AddItemToArray(rows, cJSON_CreateNumber((double)(i * jb->per + req_rows(jb, i))));
        cJSON_AddStringToObject(line, "error", jb->errors[i]);
        char *text = cJSON_PrintUnformatted(line);
        if (text != NULL)
            fprintf(f, "%s\n", text);
        free(text);
        cJSON_Delete(line);
    }
    return fclose(f) == 0 ? 0 : -1;
}

/* ---- results -------------------------------------------------------------------- */

/* Index of this job's request named by key ("<job>:<first row>"), or -1. */
static int64_t req_index(struct job *jb, const uint8_t *key, size_t len)
{
    if (key == NULL || len <= jb->id_len + 1 || len - jb->id_len > 20 ||
        memcmp(key, jb->id, jb->id_len) != 0 || key[jb->id_len] != ':')
        return -1;
    int64_t row = 0;
    for (size_t i = jb->id_len + 1; i < len; i++) {
        if (key[i] < '0' || key[i] > '9')
            return -1;
        row = row * 10 + (key[i] - '0');
    }
    if (row % jb->per != 0 || row >= jb->rows) {
        mw_errf(MW_EINVAL, jb->fatal, sizeof(jb->fatal),
                "P.results holds request %.*s, which this job (%" PRId64
                " rows, --rows-per-request %" PRId64 ") does not make: another input or N "
                "under the same --job",
                (int)len, (const char *)key, jb->rows, jb->per);
        return -1;
    }
    return row / jb->per;
}

static void check_output(struct job *jb, const mw_result_t *res, int64_t i, int64_t rows)
{
    char id[MW_REQUEST_ID_MAX + 1];
    snprintf(id, sizeof(id), "%.*s", (int)res->id_len, (const char *)res->id);
    mw_tensor_desc_t in = {.dtype = MW_DTYPE_F32, .ndim = 2, .shape = {rows, jb->width}};
    char e[600];
    int rc = mwctl_verifier_put(jb->verifier, res->id, res->id_len, &in, req_input(jb, i),
                                (size_t)(rows * jb->width * 4));
    if (rc == MW_OK)
        rc = mwctl_verifier_check(jb->verifier, res, e, sizeof(e));
    else
        snprintf(e, sizeof(e), "%s", mw_strerror(rc));
    if (rc == MW_OK)
        jb->verified_rows += rows;
    else if (jb->verify_shown++ < 5)
        fprintf(stderr, "mwctl score: %s: NOT VERIFIED: %s\n", id, e);
}

static void take_result(struct job *jb, const rd_kafka_message_t *msg)
{
    char err[256];
    mw_result_t res;
    if (mw_result_from_message(&res, msg, err, sizeof(err)) != MW_OK) {
        mw_log(MW_LOG_WARN, "score", "ignoring a malformed result at offset %" PRId64 ": %s",
               msg->offset, err);
        return;
    }
    int64_t i = req_index(jb, res.id, res.id_len);
    if (i < 0 || jb->state[i] == REQ_DONE)
        return; /* someone else's, or answered twice (produced again after a kill) */
    int64_t rows = req_rows(jb, i);
    if (res.ok) {
        if (res.desc.ndim != 2 || res.desc.shape[0] != rows ||
            (jb->out_ready &&
             (res.desc.dtype != jb->out_dtype || res.desc.shape[1] != jb->out_width))) {
            char shape[MW_TENSOR_MAX_DIMS * 21];
            mw_shape_format(&res.desc, shape, sizeof(shape));
            mw_errf(MW_EINVAL, jb->fatal, sizeof(jb->fatal),
                    "result %.*s is %s [%s], not %" PRId64 " rows like the others", (int)res.id_len,
                    (const char *)res.id, mw_dtype_name(res.desc.dtype), shape, rows);
            return;
        }
        if (!jb->out_ready && output_create(jb, res.desc.dtype, res.desc.shape[1]) != MW_OK)
            return;
        uint64_t off = jb->out_offset + (uint64_t)(i * jb->per) * jb->out_row_bytes;
        if (pwrite(jb->out_fd, res.data, res.nbytes, (off_t)off) != (ssize_t)res.nbytes) {
            mw_errf(MW_EIO, jb->fatal, sizeof(jb->fatal), "%s: %s", jb->o->output, strerror(errno));
            return;
        }
        if (jb->verifier != NULL)
            check_output(jb, &res, i, rows);
    } else {
        jb->errors[i] = strndup(res.error != NULL ? res.error : "", res.error_len);
        jb->failed_rows += rows;
        if (jb->probing)
            mw_errf(MW_EINVAL, jb->fatal, sizeof(jb->fatal),
                    "the first request failed, so nothing more was produced: %.*s",
                    (int)res.error_len, res.error != NULL ? res.error : "");
    }
    jb->probing = jb->probing && !res.ok;
    jb->in_flight -= jb->state[i] == REQ_PRODUCED;
    jb->state[i] = REQ_DONE;
    jb->done++;
    jb->done_rows += rows;
    jb->last_result_s = mwctl_now_s();
}

/* Takes every result already there, waiting up to timeout_ms for the first. */
static void poll_results(struct job *jb, int timeout_ms)
{
    rd_kafka_message_t *msg;
    while (jb->fatal[0] == '\0' && (msg = rd_kafka_consumer_poll(jb->consumer, timeout_ms))) {
        if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR)
            take_result(jb, msg);
        else if (msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
            mw_log(MW_LOG_WARN, "score", "consuming %s: %s", jb->results_topic,
                   rd_kafka_message_errstr(msg));
        rd_kafka_message_destroy(msg);
        timeout_ms = 0;
    }
}

/* Reads P.results from its beginning up to its end at the start (ends), so
 * that every result of the job committed before this run is done. Positions
 * also move past transaction markers and aborted records, never delivered. */
static int scan_results(struct job *jb, const int64_t *ends, int nparts, int timeout_ms)
{
    rd_kafka_topic_partition_list_t *pos = rd_kafka_topic_partition_list_new(nparts);
    for (int p = 0; p < nparts; p++)
        rd_kafka_topic_partition_list_add(pos, jb->results_topic, p);
    double deadline = mwctl_now_s() + timeout_ms / 1000.0;
    int rc = MW_OK;
    for (;;) {
        int behind = 0;
        if (rd_kafka_position(jb->consumer, pos) == RD_KAFKA_RESP_ERR_NO_ERROR)
            for (int p = 0; p < nparts; p++)
                behind |= ends[p] > 0 && pos->elems[p].offset < ends[p];
        else
            behind = 1;
        if (!behind || jb->fatal[0] != '\0' || interrupted)
            break;
        if (mwctl_now_s() > deadline) {
            rc = mw_errf(MW_ETIMEDOUT, jb->fatal, sizeof(jb->fatal),
                         "reading %s to its end took over %d ms", jb->results_topic, timeout_ms);
            break;
        }
        poll_results(jb, 100);
    }
    rd_kafka_topic_partition_list_destroy(pos);
    return rc;
}

/* ---- producing -------------------------------------------------------------------- */

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    (void)rk;
    struct job *jb = opaque;
    if (msg->err != RD_KAFKA_RESP_ERR_NO_ERROR && jb->fatal[0] == '\0')
        mw_errf(MW_EKAFKA, jb->fatal, sizeof(jb->fatal),
                "producing request %.*s failed: %s (run the same command again to resume)",
                (int)msg->key_len, (const char *)msg->key, rd_kafka_err2str(msg->err));
}

static int produce(struct job *jb, int64_t i)
{
    char id[MW_REQUEST_ID_MAX + 1];
    int idlen = snprintf(id, sizeof(id), "%s:%" PRId64, jb->id, i * jb->per);
    int64_t rows = req_rows(jb, i);
    mw_tensor_desc_t desc = {.dtype = MW_DTYPE_F32, .ndim = 2, .shape = {rows, jb->width}};
    mw_record_t rec;
    mw_record_init(&rec);
    int rc = mw_request_encode(&rec, id, (size_t)idlen, &desc, req_input(jb, i),
                               (size_t)(rows * jb->width * 4), 0, 0, jb->fatal, sizeof(jb->fatal));
    while (rc == MW_OK) {
        rc = mw_record_produce(jb->producer, jb->topic, RD_KAFKA_PARTITION_UA, &rec, NULL,
                               jb->fatal, sizeof(jb->fatal));
        if (rc != MW_EAGAIN)
            break;
        jb->fatal[0] = '\0';
        rd_kafka_poll(jb->producer, 50); /* queue full: let deliveries drain */
    }
    mw_record_fini(&rec);
    if (rc != MW_OK)
        return rc;
    jb->state[i] = REQ_PRODUCED;
    jb->in_flight++;
    jb->produced++;
    return MW_OK;
}

/* Produces what is missing, at most a window in flight, while taking results. */
static void run_job(struct job *jb, mwctl_progress_t *prog)
{
    jb->last_result_s = mwctl_now_s();
    while (jb->done < jb->nreq && jb->fatal[0] == '\0' && !interrupted) {
        int64_t window = jb->probing ? 1 : jb->o->window;
        while (jb->in_flight < window && jb->next < jb->nreq && jb->fatal[0] == '\0') {
            if (jb->state[jb->next] == REQ_TODO && produce(jb, jb->next) != MW_OK)
                break;
            jb->next++;
        }
        release_input(jb);
        rd_kafka_poll(jb->producer, 0);
        poll_results(jb, 20);
        mwctl_progress_show(prog, jb->done_rows, jb->rows, -1, 0);
        if (mwctl_now_s() - jb->last_result_s > (double)jb->o->timeout_s)
            mw_errf(MW_ETIMEDOUT, jb->fatal, sizeof(jb->fatal),
                    "no result for %" PRId64 " s (are workers serving %s?); run the same "
                    "command again to resume",
                    jb->o->timeout_s, jb->o->pipeline);
    }
    mwctl_progress_show(prog, jb->done_rows, jb->rows, -1, 1);
    mwctl_progress_end(prog);
}

/* The model's input width against the rows, when --model names it. 0, or 2/1
 * with a message. */
static int check_model(struct job *jb, const mw_config_t *cfg)
{
    char err[512];
    const struct options *o = jb->o;
    if (o->verify) {
        if (mwctl_verifier_new(o->model, (int)cfg->batch_max_rows, &jb->verifier, err,
                               sizeof(err)) != MW_OK) {
            fprintf(stderr, "mwctl score: --verify: %s\n", err);
            return 1;
        }
        mwctl_verifier_set_tolerance(jb->verifier, o->tolerance);
    }
    mw_model_t *m = NULL;
    if (mw_model_open(o->model, &m, err, sizeof(err)) != MW_OK) {
        fprintf(stderr, "mwctl score: --model: %s\n", err);
        return 1;
    }
    int inputs = mw_model_inputs(m);
    mw_model_destroy(m);
    if (inputs != jb->width) {
        fprintf(stderr, "mwctl score: %s: rows of %" PRId64 " features; the model %s takes %d\n",
                o->input, jb->width, o->model, inputs);
        return 2;
    }
    return 0;
}

static int clients_new(struct job *jb, const mw_config_t *cfg, mw_kv_t *kv, int64_t **ends,
                       int *nparts)
{
    static char fetch_wait[] = "fetch.wait.max.ms", five[] = "5";
    char err[1024];
    mw_config_t tuned;
    mwctl_with_kafka_default(cfg, &tuned, kv, fetch_wait, five);
    jb->consumer =
        mwctl_consumer_open(&tuned, "score", jb->results_topic, 1, ends, nparts, err, sizeof(err));
    if (jb->consumer == NULL) {
        fprintf(stderr, "mwctl score: %s\n", err);
        return 1;
    }
    const mw_kafka_hooks_t hooks = {.dr_msg_cb = dr_cb, .opaque = jb};
    jb->producer = mw_kafka_producer_new(cfg, NULL, &hooks, err, sizeof(err));
    if (jb->producer == NULL) {
        fprintf(stderr, "mwctl score: %s\n", err);
        return 1;
    }
    return 0;
}

static void print_summary(const struct job *jb, double took)
{
    int64_t new_rows = jb->done_rows - jb->resumed_rows;
    printf("scored %" PRId64 "/%" PRId64 " rows in %.2f s (%.0f rows/s), %" PRId64 " rows failed",
           jb->done_rows, jb->rows, took, took > 0 ? (double)new_rows / took : 0.0,
           jb->failed_rows);
    if (jb->resumed_rows > 0)
        printf("; %" PRId64 " rows were already done (job %s resumed)", jb->resumed_rows, jb->id);
    if (jb->verifier != NULL)
        printf("; %" PRId64 "/%" PRId64 " ok rows %s the reference runner", jb->verified_rows,
               jb->done_rows - jb->failed_rows, mwctl_verifier_criterion(jb->verifier));
    printf("; %" PRId64 " requests produced\n", jb->produced);
}

int mwctl_score(int argc, char **argv, const mw_config_t *cfg)
{
    struct options o;
    int status = parse_options(argc, argv, cfg, &o);
    if (status >= 0)
        return status;
    struct job jb = {.o = &o, .out_fd = -1, .released = 0};
    mw_kv_t *kv = calloc(cfg->kafka_count + 1, sizeof(*kv));
    int64_t *ends = NULL;
    int nparts = 0;
    char err[512];
    if (mw_topic_name(jb.topic, sizeof(jb.topic), o.pipeline, MW_TOPIC_REQUESTS, err,
                      sizeof(err)) != MW_OK ||
        mw_topic_name(jb.results_topic, sizeof(jb.results_topic), o.pipeline, MW_TOPIC_RESULTS, err,
                      sizeof(err)) != MW_OK) {
        fprintf(stderr, "mwctl score: %s\n", err);
        status = 2;
        goto out;
    }
    if ((status = input_open(&jb, cfg)) != 0 ||
        (o.model != NULL && (status = check_model(&jb, cfg)) != 0) ||
        (status = output_open(&jb)) != 0)
        goto out;
    if (o.job != NULL) {
        jb.id_len = (size_t)snprintf(jb.id, sizeof(jb.id), "%s", o.job);
    } else if ((status = default_job_id(&jb)) != 0) {
        goto out;
    }
    status = 1;
    jb.state = calloc((size_t)jb.nreq, 1);
    jb.errors = calloc((size_t)jb.nreq, sizeof(*jb.errors));
    if (kv == NULL || jb.state == NULL || jb.errors == NULL) {
        fprintf(stderr, "mwctl score: out of memory\n");
        goto out;
    }
    if (clients_new(&jb, cfg, kv, &ends, &nparts) != 0)
        goto out;
    struct sigaction sa = {.sa_handler = on_signal};
    struct sigaction old_int, old_term;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    double start = mwctl_now_s();
    scan_results(&jb, ends, nparts, (int)cfg->kafka_timeout_ms * 4);
    jb.resumed_rows = jb.done_rows;
    jb.probing = !jb.out_ready;
    mwctl_progress_t prog;
    mwctl_progress_init(&prog, "score", !o.no_progress);
    prog.base = jb.resumed_rows;
    run_job(&jb, &prog);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    if (jb.fatal[0] != '\0')
        fprintf(stderr, "mwctl score: %s\n", jb.fatal);
    else if (interrupted)
        fprintf(stderr, "mwctl score: interrupted; run the same command again to resume\n");
    if (!jb.out_ready && jb.fatal[0] == '\0' && !interrupted)
        fprintf(stderr, "mwctl score: no request succeeded: %s was not written\n", o.output);
    int errs = write_errors(&jb);
    print_summary(&jb, mwctl_now_s() - start);
    status = jb.done < jb.nreq || jb.failed_rows > 0 || jb.fatal[0] != '\0' || errs != 0 ||
             (jb.verifier != NULL && jb.verified_rows != jb.done_rows - jb.failed_rows);
out:
    mw_kafka_destroy(jb.producer);
    mw_kafka_destroy(jb.consumer);
    mwctl_verifier_destroy(jb.verifier);
    if (jb.out_fd >= 0)
        close(jb.out_fd);
    if (!jb.out_ready && jb.out_created)
        unlink(o.output); /* nothing scored: no empty file left behind */
    if (jb.map != NULL)
        munmap((void *)(uintptr_t)jb.map, jb.map_len);
    for (int64_t i = 0; jb.errors != NULL && i < jb.nreq; i++)
        free(jb.errors[i]);
    free(jb.errors);
    free(jb.state);
    free(ends);
    free(kv);
    return status;
}
