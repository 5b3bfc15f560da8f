/* mwctl results: reads P.results (read_committed) and prints or saves each result. */
#include "mwctl.h"

#include "err.h"
#include "kafka.h"
#include "log.h"
#include "record.h"
#include "topics.h"

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
        "                    or DIR/<id>.error; ids are escaped as %%XX outside [A-Za-z0-9._-]\n");
}

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
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

static int show_result(const rd_kafka_message_t *msg, int print, const char *outdir)
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
        printf("%s ok %s %s attempts=%" PRId64 " latency=%s\n", id, mw_dtype_name(res.desc.dtype),
               shape, res.attempts, lat);
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
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *pipeline = NULL, *outdir = NULL;
    int from_beginning = 0, follow = 0, print = 0, c;
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
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "mwctl results: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (pipeline == NULL) {
        fprintf(stderr, "mwctl results: --pipeline is required\n");
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

    char group[128];
    snprintf(group, sizeof(group), "mwctl-results-%ld-%ld", (long)getpid(), (long)time(NULL));
    rd_kafka_t *rk = mw_kafka_consumer_new(cfg, group, NULL, err, sizeof(err));
    if (rk == NULL) {
        fprintf(stderr, "mwctl results: %s\n", err);
        return 1;
    }
    int status = 1;
    mw_topic_info_t info;
    if (mw_topic_describe(rk, topic, (int)cfg->kafka_timeout_ms, &info, err, sizeof(err)) !=
        MW_OK) {
        fprintf(stderr, "mwctl results: %s\n", err);
        goto out_consumer;
    }
    if (!info.exists) {
        fprintf(stderr, "mwctl results: topic %s does not exist (mwctl topics create)\n", topic);
        goto out_consumer;
    }
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(info.partitions);
    for (int p = 0; p < info.partitions; p++)
        rd_kafka_topic_partition_list_add(parts, topic, p)->offset =
            from_beginning ? RD_KAFKA_OFFSET_BEGINNING : RD_KAFKA_OFFSET_END;
    rd_kafka_resp_err_t kerr = rd_kafka_assign(rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    if (kerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "mwctl results: assigning %s: %s\n", topic, rd_kafka_err2str(kerr));
        goto out_consumer;
    }

    struct sigaction sa = {.sa_handler = on_signal};
    struct sigaction old_int, old_term;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    int64_t seen = 0, errors = 0, bad = 0;
    double last = now_s();
    while (!interrupted && (count < 0 || seen < count) &&
           (follow || now_s() - last < (double)idle_s)) {
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, 200);
        if (msg == NULL)
            continue;
        if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            last = now_s();
            int rc = show_result(msg, print, outdir);
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
out_consumer:
    mw_kafka_destroy(rk);
    return status;
}
