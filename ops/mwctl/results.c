/* mwctl results: reads P.results (read_committed) and prints or saves each result. */
#include "client.h"
#include "mwctl.h"

#include "err.h"
#include "kafka.h"
#include "log.h"
#include "topics/record.h"
#include "topics/topics.h"
#include "verify.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: mwctl results --pipeline P [--from-beginning] [--count N] [--idle-s S]\n"
        "                     [--follow] [--output DIR | --print]\n"
        "                     [--verify --model FILE [--tolerance REL]]\n"
        "\n"
        "Reads P.results with isolation.level=read_committed (only results of committed\n"
        "transactions) and prints one line per result: id, status, dtype, shape,\n"
        "attempts, latency and error. Commits no offsets.\n"
        "  --from-beginning  start at the oldest result (default: only new results)\n"
        "  --count N         stop after N results (exit 1 if fewer arrive in time)\n"
        "  --idle-s S        stop when nothing arrived for S seconds (default 5; with\n"
        "                    --count: 60)\n"
        "  --follow          never stop on idleness (Ctrl-C stops)\n"
        "  --print           also print each output tensor's values\n"
        "  --output DIR      also write DIR/<id>.bin (raw output tensor, little-endian)\n"
        "                    or DIR/<id>.error; ids are escaped as %%XX outside [A-Za-z0-9._-]\n"
        "  --verify          check each ok result against the reference runner: its request's\n"
        "                    input, read from P.requests by id, through the unsplit model at\n"
        "                    batch 1, compared bit for bit (lines end in 'verified' or\n"
        "                    'NOT VERIFIED: why'); exit 1 unless every ok result is verified\n"
        "  --model FILE      the model the pipeline serves (safetensors), for --verify\n"
        "  --tolerance REL   with --verify: accept each value within REL * (1 + |reference|)\n"
        "                    instead of bit-identical (GPU workers: e.g. 1e-4)\n");
}

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* Escapes an id for a file name or a terminal: [A-Za-z0-9._-] kept, others %XX. */
static void escape_id(char *out, size_t size, const uint8_t *id, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o + 4 < size; i++) {
        uint8_t c = id[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '.' || c == '_' || c == '-')
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, size - o, "%%%02X", c);
    }
    out[o] = '\0';
    if (o == 0 && size > 2)
        snprintf(out, size, "%%"); /* an empty id */
}

static int write_file(const char *dir, const char *name, const char *ext, const void *data,
                      size_t len)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s.%s", dir, name, ext);
    FILE *f = fopen(path, "wb");
    if (f == NULL || (len > 0 && fwrite(data, 1, len, f) != len)) {
        fprintf(stderr, "mwctl results: %s: %s\n", path, strerror(errno));
        if (f != NULL)
            fclose(f);
        return MW_EIO;
    }
    return fclose(f) == 0 ? MW_OK : MW_EIO;
}

static void print_values(const mw_result_t *res)
{
    size_t n = res->nbytes / mw_dtype_size(res->desc.dtype);
    printf("  [");
    for (size_t i = 0; i < n; i++) {
        double v = mw_tensor_elem(res->desc.dtype, res->data, i);
        if (res->desc.dtype == MW_DTYPE_I64) {
            int64_t x;
            memcpy(&x, (const char *)res->data + 8 * i, 8);
            printf("%s%" PRId64, i ? ", " : "", x);
        } else {
            printf("%s%.9g", i ? ", " : "", v);
        }
    }
    printf("]\n");
}

/* --verify: P.requests read from the beginning into the verifier, on demand. */
struct requests_reader {
    rd_kafka_t *rk;
    char topic[MW_TOPIC_NAME_MAX + 1];
    rd_kafka_topic_partition_list_t *parts; /* every partition; offsets = read positions */
    int64_t *end;                           /* per partition: the end last caught up to */
    uint64_t max_tensor_bytes;
    int timeout_ms;
    int64_t kept, malformed;
};

static int reader_open(struct requests_reader *r, const mw_config_t *cfg, const char *pipeline,
                       char *errstr, size_t errstr_size)
{
    int rc =
        mw_topic_name(r->topic, sizeof(r->topic), pipeline, MW_TOPIC_REQUESTS, errstr, errstr_size);
    if (rc != MW_OK)
        return rc;
    r->max_tensor_bytes = (uint64_t)cfg->records_max_tensor_bytes;
    r->timeout_ms = (int)cfg->kafka_timeout_ms;
    int nparts;
    int64_t *ends;
    r->rk = mwctl_consumer_open(cfg, "verify", r->topic, 1, &ends, &nparts, errstr, errstr_size);
    if (r->rk == NULL)
        return MW_EKAFKA;
    free(ends); /* r->end: what was read to, not what was there */
    r->parts = rd_kafka_topic_partition_list_new(nparts);
    r->end = calloc((size_t)nparts, sizeof(*r->end));
    if (r->end == NULL)
        return mw_errf(MW_ENOMEM, errstr, errstr_size, "out of memory");
    for (int p = 0; p < nparts; p++)
        rd_kafka_topic_partition_list_add(r->parts, r->topic, p)->offset = 0;
    return MW_OK;
}

static void reader_close(struct requests_reader *r)
{
    mw_kafka_destroy(r->rk);
    if (r->parts != NULL)
        rd_kafka_topic_partition_list_destroy(r->parts);
    free(r->end);
}

static int reader_caught_up(const struct requests_reader *r)
{
    for (int p = 0; p < r->parts->cnt; p++)
        if (r->parts->elems[p].offset < r->end[p])
            return 0;
    return 1;
}

/* Reads P.requests up to its current end (every request produced so far),
 * keeping each well-formed request's input in v. A result's request was
 * produced before the result, so after this its input is known unless the
 * topic no longer holds it (retention) or it was malformed. */
static int reader_catch_up(struct requests_reader *r, mwctl_verifier_t *v, char *errstr,
                           size_t errstr_size)
{
    int moved = 0;
    for (int p = 0; p < r->parts->cnt; p++) {
        int64_t lo, hi;
        rd_kafka_resp_err_t kerr =
            rd_kafka_query_watermark_offsets(r->rk, r->topic, p, &lo, &hi, r->timeout_ms);
        if (kerr != RD_KAFKA_RESP_ERR_NO_ERROR)
            return mw_errf(MW_EKAFKA, errstr, errstr_size, "%s [%d]: querying offsets: %s",
                           r->topic, p, rd_kafka_err2str(kerr));
        moved |= hi != r->end[p];
        r->end[p] = hi;
        if (r->parts->elems[p].offset < lo)
            r->parts->elems[p].offset = lo; /* older requests were deleted (retention) */
    }
    if (!moved && reader_caught_up(r))
        return MW_OK;
    double deadline = mwctl_now_s() + r->timeout_ms / 1000.0;
    while (!reader_caught_up(r)) {
        if (mwctl_now_s() > deadline || interrupted)
            return mw_errf(MW_ETIMEDOUT, errstr, errstr_size,
                           "reading %s did not reach its end within %d ms", r->topic,
                           r->timeout_ms);
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(r->rk, 100);
        if (msg == NULL) {
            /* Positions also move past transaction markers, which are not delivered. */
            rd_kafka_topic_partition_list_t *pos = rd_kafka_topic_partition_list_copy(r->parts);
            if (rd_kafka_position(r->rk, pos) == RD_KAFKA_RESP_ERR_NO_ERROR)
                for (int p = 0; p < pos->cnt; p++)
                    if (pos->elems[p].offset > r->parts->elems[p].offset)
                        r->parts->elems[p].offset = pos->elems[p].offset;
            rd_kafka_topic_partition_list_destroy(pos);
            continue;
        }
        if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR && msg->partition >= 0 &&
            msg->partition < r->parts->cnt) {
            if (msg->offset + 1 > r->parts->elems[msg->partition].offset)
                r->parts->elems[msg->partition].offset = msg->offset + 1;
            mw_request_t req;
            char e[256];
            if (mw_request_from_message(&req, msg, r->max_tensor_bytes, e, sizeof(e)) == MW_OK) {
                int rc = mwctl_verifier_put(v, req.id, req.id_len, &req.desc, req.data, req.nbytes);
                mw_request_fini(&req);
                if (rc != MW_OK) {
                    rd_kafka_message_destroy(msg);
                    return mw_errf(rc, errstr, errstr_size, "keeping request inputs: %s",
                                   mw_strerror(rc));
                }
                r->kept++;
            } else {
                r->malformed++; /* answered with an error result: nothing to verify */
            }
        } else if (msg->err != RD_KAFKA_RESP_ERR_NO_ERROR &&
                   msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            mw_log(MW_LOG_WARN, "results", "consuming %s: %s", r->topic,
                   rd_kafka_message_errstr(msg));
        }
        rd_kafka_message_destroy(msg);
    }
    return MW_OK;
}

struct verify_ctx {
    mwctl_verifier_t *v;
    struct requests_reader reader;
    int64_t failed; /* ok results not verified */
};

static int show_result(const rd_kafka_message_t *msg, int print, const char *outdir,
                       struct verify_ctx *vc)
{
    char err[512], id[MW_REQUEST_ID_MAX * 3 + 8];
    mw_result_t res;
    if (mw_result_from_message(&res, msg, err, sizeof(err)) != MW_OK) {
        fprintf(stderr, "mwctl results: [%d] offset %" PRId64 ": malformed result: %s\n",
                (int)msg->partition, msg->offset, err);
        return MW_EINVAL;
    }
    escape_id(id, sizeof(id), res.id, res.id_len);
    char lat[32] = "-";
    if (res.latency_us >= 0)
        snprintf(lat, sizeof(lat), "%.3f ms", (double)res.latency_us / 1000.0);
    if (res.ok) {
        char shape[MW_TENSOR_MAX_DIMS * 21];
        mw_shape_format(&res.desc, shape, sizeof(shape));
        char verdict[700] = "";
        if (vc != NULL) {
            char e[600];
            int rc = MW_OK;
            if (!mwctl_verifier_has(vc->v, res.id, res.id_len))
                rc = reader_catch_up(&vc->reader, vc->v, e, sizeof(e));
            if (rc == MW_OK)
                rc = mwctl_verifier_check(vc->v, &res, e, sizeof(e));
            if (rc == MW_OK)
                snprintf(verdict, sizeof(verdict), " verified");
            else
                snprintf(verdict, sizeof(verdict), " NOT VERIFIED: %s", e);
            vc->failed += rc != MW_OK;
        }
        printf("%s ok %s %s attempts=%" PRId64 " latency=%s%s\n", id, mw_dtype_name(res.desc.dtype),
               shape, res.attempts, lat, verdict);
        if (print)
            print_values(&res);
    } else {
        printf("%s error attempts=%" PRId64 " latency=%s: %.*s\n", id, res.attempts, lat,
               (int)res.error_len, res.error != NULL ? res.error : "");
    }
    if (outdir != NULL) {
        int rc = res.ok ? write_file(outdir, id, "bin", res.data, res.nbytes)
                        : write_file(outdir, id, "error", res.error, res.error_len);
        if (rc != MW_OK)
            return rc;
    }
    return res.ok ? MW_OK : MW_EABORTED;
}

int mwctl_results(int argc, char **argv, const mw_config_t *cfg)
{
    static const struct option opts[] = {
        {"pipeline", required_argument, NULL, 'p'},
        {"from-beginning", no_argument, NULL, 'b'},
        {"count", required_argument, NULL, 'n'},
        {"idle-s", required_argument, NULL, 'i'},
        {"follow", no_argument, NULL, 'f'},
        {"print", no_argument, NULL, 'P'},
        {"output", required_argument, NULL, 'o'},
        {"verify", no_argument, NULL, 'V'},
        {"model", required_argument, NULL, 'm'},
        {"tolerance", required_argument, NULL, 'T'}, /* with --verify */
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *pipeline = NULL, *outdir = NULL, *model = NULL;
    double tolerance = 0;
    int from_beginning = 0, follow = 0, print = 0, verify = 0, c;
    int64_t count = -1, idle_s = -1;
    char err[512];
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        char *end = NULL;
        switch (c) {
        case 'p':
            pipeline = optarg;
            break;
        case 'b':
            from_beginning = 1;
            break;
        case 'n':
            count = strtoll(optarg, &end, 10);
            if (*end != '\0' || count <= 0) {
                fprintf(stderr, "mwctl results: --count '%s' is not a positive number\n", optarg);
                return 2;
            }
            break;
        case 'i':
            idle_s = strtoll(optarg, &end, 10);
            if (*end != '\0' || idle_s <= 0) {
                fprintf(stderr, "mwctl results: --idle-s '%s' is not a positive number\n", optarg);
                return 2;
            }
            break;
        case 'f':
            follow = 1;
            break;
        case 'P':
            print = 1;
            break;
        case 'o':
            outdir = optarg;
            break;
        case 'V':
            verify = 1;
            break;
        case 'm':
            model = optarg;
            break;
        case 'T':
            if (mwctl_parse_tolerance("results", optarg, &tolerance) != 0)
                return 2;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (mwctl_args_done("results", argc, argv, pipeline) != 0)
        return 2;
    if (verify && model == NULL) {
        fprintf(stderr, "mwctl results: --verify needs --model FILE (the model the pipeline "
                        "serves)\n");
        return 2;
    }
    if (tolerance > 0 && !verify) {
        fprintf(stderr, "mwctl results: --tolerance goes with --verify\n");
        return 2;
    }
    if (outdir != NULL && mkdir(outdir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "mwctl results: %s: %s\n", outdir, strerror(errno));
        return 2;
    }
    if (idle_s < 0)
        idle_s = count > 0 ? 60 : 5;
    char topic[MW_TOPIC_NAME_MAX + 1];
    if (mw_topic_name(topic, sizeof(topic), pipeline, MW_TOPIC_RESULTS, err, sizeof(err)) !=
        MW_OK) {
        fprintf(stderr, "mwctl results: %s\n", err);
        return 2;
    }

    struct verify_ctx vctx = {0}, *vc = NULL;
    if (verify) {
        vc = &vctx;
        if (mwctl_verifier_new(model, (int)cfg->batch_max_rows, &vctx.v, err, sizeof(err)) !=
                MW_OK ||
            reader_open(&vctx.reader, cfg, pipeline, err, sizeof(err)) != MW_OK) {
            fprintf(stderr, "mwctl results: --verify: %s\n", err);
            reader_close(&vctx.reader);
            mwctl_verifier_destroy(vctx.v);
            return 1;
        }
        mwctl_verifier_set_tolerance(vctx.v, tolerance);
    }
    int status = 1;
    rd_kafka_t *rk =
        mwctl_consumer_open(cfg, "results", topic, from_beginning, NULL, NULL, err, sizeof(err));
    if (rk == NULL) {
        fprintf(stderr, "mwctl results: %s\n", err);
        goto out_verify;
    }

    struct sigaction sa = {.sa_handler = on_signal};
    struct sigaction old_int, old_term;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    int64_t seen = 0, errors = 0, bad = 0;
    double last = mwctl_now_s();
    while (!interrupted && (count < 0 || seen < count) &&
           (follow || mwctl_now_s() - last < (double)idle_s)) {
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, 200);
        if (msg == NULL)
            continue;
        if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            last = mwctl_now_s();
            int rc = show_result(msg, print, outdir, vc);
            last = mwctl_now_s(); /* reading P.requests for --verify is not idleness */
            seen += rc != MW_EINVAL && rc != MW_EIO;
            errors += rc == MW_EABORTED;
            bad += rc == MW_EINVAL;
            fflush(stdout);
        } else if (msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            mw_log(MW_LOG_WARN, "results", "consuming %s: %s", topic, rd_kafka_message_errstr(msg));
        }
        rd_kafka_message_destroy(msg);
    }
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    fprintf(stderr, "%" PRId64 " results (%" PRId64 " ok, %" PRId64 " errors)", seen, seen - errors,
            errors);
    if (bad > 0)
        fprintf(stderr, ", %" PRId64 " malformed records skipped", bad);
    fprintf(stderr, "\n");
    status = count > 0 && seen < count ? 1 : 0;
    if (vc != NULL) {
        mwctl_verify_stats_t vs;
        mwctl_verifier_stats(vc->v, &vs);
        fprintf(stderr, "verify: %" PRId64 "/%" PRId64 " ok results %s the reference runner (%s)",
                vs.verified, seen - errors, mwctl_verifier_criterion(vc->v), model);
        if (vs.differ > 0 || vs.no_input > 0 || vc->failed > vs.differ + vs.no_input)
            fprintf(stderr, "; %" PRId64 " DIFFER, %" PRId64 " without their request in %s",
                    vs.differ, vc->failed - vs.differ, vc->reader.topic);
        fprintf(stderr, "\n");
        if (vc->failed > 0 || vs.verified != seen - errors)
            status = 1;
    }
    mw_kafka_destroy(rk);
out_verify:
    if (vc != NULL) {
        reader_close(&vctx.reader);
        mwctl_verifier_destroy(vctx.v);
    }
    return status;
}
