/* mwctl submit: produces requests to P.requests from generated data, a raw
 * tensor file, JSON lines, a directory or stdin; optionally waits for results. */
#include "clock.h"
#include "mwctl.h"

#include "err.h"
#include "kafka.h"
#include "log.h"
#include "topics/record.h"
#include "topics/topics.h"
#include "verify.h"

#include <dirent.h>
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
        "usage: mwctl submit --pipeline P [INPUT] [OPTIONS]\n"
        "\n"
        "INPUT (one of; default: stdin as with --file -):\n"
        "  --generate N        N requests of deterministic pseudo-random data (needs --shape);\n"
        "                      request n depends only on (--seed, n)\n"
        "  --file FILE         with --shape: a raw little-endian tensor file split into rows of\n"
        "                      that shape; without: one JSON request per line\n"
        "                      {\"dtype\":..,\"shape\":[..],\"data\":[..]}; FILE - is stdin\n"
        "  --dir DIR           one request per file, in name order (raw with --shape, else JSON)\n"
        "OPTIONS:\n"
        "  --shape S           tensor shape of each request, e.g. 1,64\n"
        "  --dtype D           f32 (default), f16, bf16, i32, i64 or u8\n"
        "  --seed S            seed for --generate (default 1)\n"
        "  --json              send the JSON form (content-type: application/json) instead of\n"
        "                      binary\n"
        "  --id-prefix S       request ids are S0, S1, ... (default submit-<unix time>-)\n"
        "  --deadline-ms MS    set mw-deadline-ms to now + MS on each request\n"
        "  --wait              then read P.results (read_committed) until every request has a\n"
        "                      result; print latency percentiles and the error count\n"
        "  --verify            with --wait: check every ok result against the reference runner\n"
        "                      (the unsplit model of --model at batch 1, bit for bit); the\n"
        "                      inputs are kept in memory until their result arrives\n"
        "  --model FILE        the model the pipeline serves (safetensors), for --verify\n"
        "  --tolerance REL     with --verify: accept each value within REL * (1 + |reference|)\n"
        "                      instead of bit-identical (GPU workers: e.g. 1e-4)\n"
        "  --timeout-s S       give up waiting for acknowledgements/results after S s (300)\n"
        "  --no-progress       no progress output\n"
        "exit status: 0 all produced and acknowledged (with --wait: all results ok; with\n"
        "--verify: and all outputs equal to the reference), 1 not, 2 usage errors\n");
}

/* ---- request sources ------------------------------------------------------ */

enum source_kind { SRC_GENERATE, SRC_RAW, SRC_JSONL, SRC_DIR };

struct source {
    enum source_kind kind;
    mw_tensor_desc_t desc; /* generate/raw: the shape of every request */
    size_t row_bytes;
    uint64_t seed;
    int64_t total; /* requests expected, -1 when unknown */
    int64_t next;  /* index of the next request */
    uint64_t max_tensor_bytes;
    FILE *f;
    int close_f;
    const char *path;
    struct dirent **entries;
    int nentries, entry;
    unsigned char *buf; /* the current request's data */
    size_t buf_cap;
    char *line;
    size_t line_cap;
    int64_t lineno;
};

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static int buf_reserve(struct source *s, size_t n)
{
    if (n <= s->buf_cap)
        return MW_OK;
    unsigned char *b = realloc(s->buf, n);
    if (b == NULL)
        return MW_ENOMEM;
    s->buf = b;
    s->buf_cap = n;
    return MW_OK;
}

/* Request n of --generate: floats uniform in [-1, 1), integers in [-1000, 1000], u8 any. */
static void generate(struct source *s, int64_t n)
{
    uint64_t st = s->seed * UINT64_C(0x9E3779B97F4A7C15) + (uint64_t)n;
    size_t elem = mw_dtype_size(s->desc.dtype);
    size_t count = s->row_bytes / elem;
    for (size_t i = 0; i < count; i++) {
        uint64_t r = splitmix64(&st);
        unsigned char *p = s->buf + i * elem;
        float f = (float)((double)(r >> 11) / 9007199254740992.0 * 2.0 - 1.0);
        switch (s->desc.dtype) {
        case MW_DTYPE_F32:
            memcpy(p, &f, 4);
            break;
        case MW_DTYPE_F16: {
            uint16_t h = mw_f32_to_f16(f);
            memcpy(p, &h, 2);
            break;
        }
        case MW_DTYPE_BF16: {
            uint16_t h = mw_f32_to_bf16(f);
            memcpy(p, &h, 2);
            break;
        }
        case MW_DTYPE_I32: {
            int32_t v = (int32_t)(r % 2001) - 1000;
            memcpy(p, &v, 4);
            break;
        }
        case MW_DTYPE_I64: {
            int64_t v = (int64_t)(r % 2001) - 1000;
            memcpy(p, &v, 8);
            break;
        }
        default:
            *p = (unsigned char)r;
        }
    }
}

/* Parses a JSON request text into s->buf and *desc. */
static int parse_json(struct source *s, const char *text, size_t len, mw_tensor_desc_t *desc,
                      size_t *nbytes, char *errstr, size_t errstr_size)
{
    mw_header_t h = {.name = MW_HDR_CONTENT_TYPE,
                     .value = MW_CONTENT_TYPE_JSON,
                     .size = strlen(MW_CONTENT_TYPE_JSON)};
    mw_request_t req;
    int rc =
        mw_request_parse(&req, "x", 1, text, len, &h, 1, s->max_tensor_bytes, errstr, errstr_size);
    if (rc != MW_OK)
        return rc;
    rc = buf_reserve(s, req.nbytes);
    if (rc == MW_OK) {
        memcpy(s->buf, req.data, req.nbytes);
        *desc = req.desc;
        *nbytes = req.nbytes;
    }
    mw_request_fini(&req);
    return rc;
}

static int read_file(const char *path, char **out, size_t *len, char *errstr, size_t errstr_size)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return mw_errf(MW_EIO, errstr, errstr_size, "%s: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *b = malloc(cap + 1);
    size_t got;
    while (b != NULL && (got = fread(b + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            char *nb = realloc(b, cap * 2 + 1);
            if (nb == NULL) {
                free(b);
                b = NULL;
                break;
            }
            b = nb;
            cap *= 2;
        }
    }
    int err = ferror(f);
    fclose(f);
    if (b == NULL || err) {
        free(b);
        return mw_errf(b == NULL ? MW_ENOMEM : MW_EIO, errstr, errstr_size, "%s: read failed",
                       path);
    }
    b[n] = '\0';
    *out = b;
    *len = n;
    return MW_OK;
}

/* The next request's dtype/shape/data (in s->buf); 1 when there is one, 0 at
 * the end, negative with errstr on bad input. */
static int source_next(struct source *s, mw_tensor_desc_t *desc, size_t *nbytes, char *errstr,
                       size_t errstr_size)
{
    switch (s->kind) {
    case SRC_GENERATE:
        if (s->next >= s->total)
            return 0;
        generate(s, s->next);
        *desc = s->desc;
        *nbytes = s->row_bytes;
        break;
    case SRC_RAW: {
        size_t got = fread(s->buf, 1, s->row_bytes, s->f);
        if (got == 0 && !ferror(s->f))
            return 0;
        if (got != s->row_bytes)
            return mw_errf(MW_EINVAL, errstr, errstr_size,
                           "%s: ends with a partial row of %zu bytes (rows are %zu bytes)", s->path,
                           got, s->row_bytes);
        *desc = s->desc;
        *nbytes = s->row_bytes;
        break;
    }
    case SRC_JSONL:
        for (;;) {
            ssize_t len = getline(&s->line, &s->line_cap, s->f);
            if (len < 0)
                return 0;
            s->lineno++;
            size_t i = 0;
            while (i < (size_t)len && (s->line[i] == ' ' || s->line[i] == '\t' ||
                                       s->line[i] == '\r' || s->line[i] == '\n'))
                i++;
            if (i == (size_t)len)
                continue; /* blank line */
            char e[400];
            int rc = parse_json(s, s->line, (size_t)len, desc, nbytes, e, sizeof(e));
            if (rc != MW_OK)
                return mw_errf(rc, errstr, errstr_size, "%s:%" PRId64 ": %s", s->path, s->lineno,
                               e);
            break;
        }
        break;
    case SRC_DIR: {
        if (s->entry >= s->nentries)
            return 0;
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", s->path, s->entries[s->entry++]->d_name);
        char *text = NULL;
        size_t len = 0;
        int rc = read_file(path, &text, &len, errstr, errstr_size);
        if (rc != MW_OK)
            return rc;
        if (s->row_bytes > 0) {
            if (len != s->row_bytes) {
                free(text);
                return mw_errf(MW_EINVAL, errstr, errstr_size,
                               "%s is %zu bytes, the shape needs %zu", path, len, s->row_bytes);
            }
            memcpy(s->buf, text, len);
            *desc = s->desc;
            *nbytes = len;
        } else {
            char e[400];
            rc = parse_json(s, text, len, desc, nbytes, e, sizeof(e));
            if (rc != MW_OK) {
                free(text);
                return mw_errf(rc, errstr, errstr_size, "%s: %s", path, e);
            }
        }
        free(text);
        break;
    }
    }
    s->next++;
    return 1;
}

static int regular_file(const struct dirent *d)
{
    return d->d_name[0] != '.';
}

static void source_fini(struct source *s)
{
    if (s->close_f && s->f != NULL)
        fclose(s->f);
    for (int i = 0; i < s->nentries; i++)
        free(s->entries[i]);
    free(s->entries);
    free(s->buf);
    free(s->line);
}

/* ---- producing and waiting -------------------------------------------------- */

struct submit {
    int64_t produced, acked, failed;
    char first_error[512];
    const char *prefix;
    size_t prefix_len;
    /* --wait */
    int64_t results, errors, duplicates, n_expected;
    unsigned char *seen;
    int64_t *latencies;
    int64_t nlat;
    double last_result_s;       /* when the last expected result arrived */
    mwctl_verifier_t *verifier; /* --verify */
    int64_t verify_shown;
};

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    (void)rk;
    struct submit *st = opaque;
    if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        st->acked++;
    } else {
        if (st->failed++ == 0)
            snprintf(st->first_error, sizeof(st->first_error), "%s", rd_kafka_err2str(msg->err));
    }
}

static double now_s(void)
{
    return (double)mw_now_us() / 1e6;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct progress {
    int enabled, tty;
    double start, last;
    const char *what;
};

/* One progress report: a bar with rate and ETA redrawn on a terminal, a plain
 * line every 2 s otherwise. acked < 0 leaves the acknowledged count out. */
static void progress_show(struct progress *p, int64_t done, int64_t total, int64_t acked, int force)
{
    if (!p->enabled)
        return;
    double t = now_s();
    if (!force && t - p->last < (p->tty ? 0.2 : 2.0))
        return;
    p->last = t;
    double el = t - p->start;
    double rate = el > 0 ? (double)done / el : 0;
    char of[32] = "", ack[40] = "", eta[32] = "";
    if (total > 0)
        snprintf(of, sizeof(of), "/%" PRId64 " (%d%%)", total, (int)(100 * done / total));
    if (acked >= 0)
        snprintf(ack, sizeof(ack), ", %" PRId64 " acked", acked);
    if (total > 0 && rate > 0 && done < total) {
        int s = (int)((double)(total - done) / rate + 0.5);
        snprintf(eta, sizeof(eta), ", ETA %d:%02d", s / 60, s % 60);
    }
    if (p->tty) {
        char bar[33] = "";
        if (total > 0) {
            int fill = (int)(30 * done / total);
            bar[0] = '[';
            for (int i = 0; i < 30; i++)
                bar[i + 1] = i < fill ? '#' : '.';
            bar[31] = ']';
            bar[32] = '\0';
        }
        fprintf(stderr, "\r%s %s %" PRId64 "%s%s, %.0f/s%s\033[K", p->what, bar, done, of, ack,
                rate, eta);
    } else {
        fprintf(stderr, "%s: %" PRId64 "%s%s, %.0f/s%s\n", p->what, done, of, ack, rate, eta);
    }
}

static void progress_end(struct progress *p)
{
    if (p->enabled && p->tty)
        fputc('\n', stderr);
}

/* Index of a submitted id (prefix + decimal), or -1. */
static int64_t id_index(const struct submit *st, const void *key, size_t len)
{
    const char *k = key;
    if (key == NULL || len <= st->prefix_len || len - st->prefix_len > 18 ||
        memcmp(k, st->prefix, st->prefix_len) != 0)
        return -1;
    int64_t v = 0;
    for (size_t i = st->prefix_len; i < len; i++) {
        if (k[i] < '0' || k[i] > '9')
            return -1;
        v = v * 10 + (k[i] - '0');
    }
    return v < st->n_expected ? v : -1;
}

/* A read_committed consumer assigned to every partition of results at their
 * current end, so it sees every result produced from now on. */
static rd_kafka_t *results_consumer(const mw_config_t *cfg, const char *topic, char *errstr,
                                    size_t errstr_size)
{
    char group[128];
    snprintf(group, sizeof(group), "mwctl-submit-%ld-%" PRId64, (long)getpid(), wall_ms());
    rd_kafka_t *rk = mw_kafka_consumer_new(cfg, group, NULL, errstr, errstr_size);
    if (rk == NULL)
        return NULL;
    mw_topic_info_t info;
    int timeout_ms = (int)cfg->kafka_timeout_ms;
    if (mw_topic_describe(rk, topic, timeout_ms, &info, errstr, errstr_size) != MW_OK)
        goto out_destroy;
    if (!info.exists) {
        mw_errf(MW_ENOTFOUND, errstr, errstr_size, "topic %s does not exist (mwctl topics create)",
                topic);
        goto out_destroy;
    }
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(info.partitions);
    for (int p = 0; p < info.partitions; p++) {
        int64_t lo, hi;
        rd_kafka_resp_err_t err =
            rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, timeout_ms);
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            mw_errf(MW_EKAFKA, errstr, errstr_size, "%s [%d]: querying offsets: %s", topic, p,
                    rd_kafka_err2str(err));
            rd_kafka_topic_partition_list_destroy(parts);
            goto out_destroy;
        }
        rd_kafka_topic_partition_list_add(parts, topic, p)->offset = hi;
    }
    rd_kafka_resp_err_t err = rd_kafka_assign(rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        mw_errf(MW_EKAFKA, errstr, errstr_size, "assigning %s: %s", topic, rd_kafka_err2str(err));
        goto out_destroy;
    }
    return rk;
out_destroy:
    mw_kafka_destroy(rk);
    return NULL;
}

static void take_result(struct submit *st, const rd_kafka_message_t *msg)
{
    char err[256];
    mw_result_t res;
    if (mw_result_from_message(&res, msg, err, sizeof(err)) != MW_OK) {
        mw_log(MW_LOG_WARN, "submit", "ignoring a malformed result at offset %" PRId64 ": %s",
               msg->offset, err);
        return;
    }
    int64_t i = id_index(st, res.id, res.id_len);
    if (i < 0)
        return; /* someone else's request */
    if (st->seen[i]) {
        st->duplicates++;
        return;
    }
    st->seen[i] = 1;
    st->results++;
    if (!res.ok) {
        if (st->errors++ < 5)
            fprintf(stderr, "mwctl submit: %.*s: error: %.*s\n", (int)res.id_len,
                    (const char *)res.id, (int)res.error_len, res.error ? res.error : "");
    }
    if (res.latency_us >= 0)
        st->latencies[st->nlat++] = res.latency_us;
    st->last_result_s = now_s();
    if (st->verifier != NULL && res.ok) {
        char e[600];
        if (mwctl_verifier_check(st->verifier, &res, e, sizeof(e)) != MW_OK &&
            st->verify_shown++ < 5)
            fprintf(stderr, "mwctl submit: %.*s: NOT VERIFIED: %s\n", (int)res.id_len,
                    (const char *)res.id, e);
    }
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static double percentile_ms(const int64_t *sorted, int64_t n, double q)
{
    if (n == 0)
        return 0;
    int64_t rank = (int64_t)(q * (double)n + 0.999999); /* nearest rank */
    if (rank < 1)
        rank = 1;
    return (double)sorted[rank - 1] / 1000.0;
}

int mwctl_submit(int argc, char **argv, const mw_config_t *cfg)
{
    static const struct option opts[] = {
        {"pipeline", required_argument, NULL, 'p'},
        {"generate", required_argument, NULL, 'g'},
        {"file", required_argument, NULL, 'f'},
        {"dir", required_argument, NULL, 'D'},
        {"shape", required_argument, NULL, 's'},
        {"dtype", required_argument, NULL, 't'},
        {"seed", required_argument, NULL, 'S'},
        {"json", no_argument, NULL, 'j'},
        {"id-prefix", required_argument, NULL, 'i'},
        {"deadline-ms", required_argument, NULL, 'd'},
        {"wait", no_argument, NULL, 'w'},
        {"timeout-s", required_argument, NULL, 'T'},
        {"verify", no_argument, NULL, 'V'},
        {"model", required_argument, NULL, 'm'},
        {"tolerance", required_argument, NULL, 'R'},
        {"no-progress", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *pipeline = NULL, *file = NULL, *dir = NULL, *shape = NULL, *dtype = "f32";
    const char *prefix = NULL, *model = NULL;
    int64_t generate_n = -1, deadline_rel = 0, timeout_s = 300;
    double tolerance = 0;
    uint64_t seed = 1;
    int json = 0, wait = 0, verify = 0, no_progress = 0, c;
    char err[1024];
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        char *end = NULL;
        switch (c) {
        case 'p':
            pipeline = optarg;
            break;
        case 'g':
            generate_n = strtoll(optarg, &end, 10);
            if (*end != '\0' || generate_n < 0) {
                fprintf(stderr, "mwctl submit: --generate '%s' is not a count\n", optarg);
                return 2;
            }
            break;
        case 'f':
            file = optarg;
            break;
        case 'D':
            dir = optarg;
            break;
        case 's':
            shape = optarg;
            break;
        case 't':
            dtype = optarg;
            break;
        case 'S':
            seed = strtoull(optarg, &end, 10);
            if (*end != '\0') {
                fprintf(stderr, "mwctl submit: --seed '%s' is not a number\n", optarg);
                return 2;
            }
            break;
        case 'j':
            json = 1;
            break;
        case 'i':
            prefix = optarg;
            break;
        case 'd':
            deadline_rel = strtoll(optarg, &end, 10);
            if (*end != '\0' || deadline_rel <= 0) {
                fprintf(stderr, "mwctl submit: --deadline-ms '%s' is not a positive number\n",
                        optarg);
                return 2;
            }
            break;
        case 'w':
            wait = 1;
            break;
        case 'T':
            timeout_s = strtoll(optarg, &end, 10);
            if (*end != '\0' || timeout_s <= 0) {
                fprintf(stderr, "mwctl submit: --timeout-s '%s' is not a positive number\n",
                        optarg);
                return 2;
            }
            break;
        case 'q':
            no_progress = 1;
            break;
        case 'V':
            verify = 1;
            break;
        case 'm':
            model = optarg;
            break;
        case 'R':
            if (mwctl_parse_tolerance("submit", optarg, &tolerance) != 0)
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
    if (mwctl_args_done("submit", argc, argv, pipeline) != 0)
        return 2;
    if ((generate_n >= 0) + (file != NULL) + (dir != NULL) > 1) {
        fprintf(stderr, "mwctl submit: give one of --generate, --file and --dir\n");
        return 2;
    }
    if (verify && (!wait || model == NULL)) {
        fprintf(stderr, "mwctl submit: --verify needs --wait and --model\n");
        return 2;
    }
    if (tolerance > 0 && !verify) {
        fprintf(stderr, "mwctl submit: --tolerance goes with --verify\n");
        return 2;
    }
    char topic[MW_TOPIC_NAME_MAX + 1], results_topic[MW_TOPIC_NAME_MAX + 1];
    if (mw_topic_name(topic, sizeof(topic), pipeline, MW_TOPIC_REQUESTS, err, sizeof(err)) !=
            MW_OK ||
        mw_topic_name(results_topic, sizeof(results_topic), pipeline, MW_TOPIC_RESULTS, err,
                      sizeof(err)) != MW_OK) {
        fprintf(stderr, "mwctl submit: %s\n", err);
        return 2;
    }
    char default_prefix[64];
    if (prefix == NULL) {
        snprintf(default_prefix, sizeof(default_prefix), "submit-%" PRId64 "-", wall_ms() / 1000);
        prefix = default_prefix;
    }
    if (strlen(prefix) > MW_REQUEST_ID_MAX - 19) {
        fprintf(stderr, "mwctl submit: --id-prefix is longer than %d bytes\n",
                MW_REQUEST_ID_MAX - 19);
        return 2;
    }

    struct submit st = {.prefix = prefix, .prefix_len = strlen(prefix)};
    /* The input. */
    struct source src = {
        .total = -1, .seed = seed, .max_tensor_bytes = (uint64_t)cfg->records_max_tensor_bytes};
    int status = 1;
    if (shape != NULL) {
        char e[256];
        if (mw_dtype_parse(dtype, strlen(dtype), &src.desc.dtype) != MW_OK) {
            fprintf(stderr, "mwctl submit: unknown --dtype '%s' (f32, f16, bf16, i32, i64, u8)\n",
                    dtype);
            return 2;
        }
        uint64_t nb;
        if (mw_shape_parse(shape, strlen(shape), &src.desc, e, sizeof(e)) != MW_OK ||
            mw_tensor_nbytes(&src.desc, &nb) != MW_OK) {
            fprintf(stderr, "mwctl submit: --shape: %s\n", e);
            return 2;
        }
        if (nb > src.max_tensor_bytes) {
            fprintf(stderr,
                    "mwctl submit: a %s tensor of shape %s is %" PRIu64
                    " bytes, over records.max_tensor_bytes = %" PRIu64 "\n",
                    dtype, shape, nb, src.max_tensor_bytes);
            return 2;
        }
        src.row_bytes = (size_t)nb;
        if (buf_reserve(&src, src.row_bytes) != MW_OK) {
            fprintf(stderr, "mwctl submit: out of memory\n");
            return 1;
        }
    }
    if (generate_n >= 0) {
        if (shape == NULL) {
            fprintf(stderr, "mwctl submit: --generate needs --shape\n");
            status = 2;
            goto out_source;
        }
        src.kind = SRC_GENERATE;
        src.total = generate_n;
    } else if (dir != NULL) {
        src.kind = SRC_DIR;
        src.path = dir;
        src.nentries = scandir(dir, &src.entries, regular_file, alphasort);
        if (src.nentries < 0) {
            src.nentries = 0;
            fprintf(stderr, "mwctl submit: %s: %s\n", dir, strerror(errno));
            goto out_source;
        }
        src.total = src.nentries;
    } else {
        src.kind = shape != NULL ? SRC_RAW : SRC_JSONL;
        src.path = file != NULL ? file : "-";
        if (strcmp(src.path, "-") == 0) {
            src.f = stdin;
            src.path = "stdin";
        } else {
            src.f = fopen(src.path, "rb");
            if (src.f == NULL) {
                fprintf(stderr, "mwctl submit: %s: %s\n", src.path, strerror(errno));
                goto out_source;
            }
            src.close_f = 1;
            struct stat sb;
            if (src.kind == SRC_RAW && fstat(fileno(src.f), &sb) == 0 && S_ISREG(sb.st_mode))
                src.total = (int64_t)((uint64_t)sb.st_size / src.row_bytes);
        }
    }

    rd_kafka_t *consumer = NULL;
    if (verify && mwctl_verifier_new(model, (int)cfg->model_threads, &st.verifier, err,
                                     sizeof(err)) != MW_OK) {
        fprintf(stderr, "mwctl submit: --verify: %s\n", err);
        goto out_source;
    }
    if (st.verifier != NULL)
        mwctl_verifier_set_tolerance(st.verifier, tolerance);
    if (wait) {
        /* Assigned at the current end before producing, so no result is missed. */
        consumer = results_consumer(cfg, results_topic, err, sizeof(err));
        if (consumer == NULL) {
            fprintf(stderr, "mwctl submit: --wait: %s\n", err);
            goto out_source;
        }
    }
    const mw_kafka_hooks_t hooks = {.dr_msg_cb = dr_cb, .opaque = &st};
    rd_kafka_t *rk = mw_kafka_producer_new(cfg, NULL, &hooks, err, sizeof(err));
    if (rk == NULL) {
        fprintf(stderr, "mwctl submit: %s\n", err);
        goto out_consumer;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    struct sigaction old_int, old_term;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);

    struct progress prog = {.enabled = !no_progress,
                            .tty = isatty(STDERR_FILENO),
                            .start = now_s(),
                            .last = now_s(),
                            .what = "submit"};
    int input_error = 0;
    while (!interrupted) {
        mw_tensor_desc_t desc = {0};
        size_t nbytes = 0;
        int rc = source_next(&src, &desc, &nbytes, err, sizeof(err));
        if (rc == 0)
            break;
        if (rc < 0) {
            progress_end(&prog);
            fprintf(stderr, "mwctl submit: %s\n", err);
            input_error = 1;
            break;
        }
        char id[MW_REQUEST_ID_MAX + 1];
        int idlen = snprintf(id, sizeof(id), "%s%" PRId64, prefix, st.produced);
        mw_record_t rec;
        mw_record_init(&rec);
        rc = mw_request_encode(&rec, id, (size_t)idlen, &desc, src.buf, nbytes,
                               deadline_rel > 0 ? wall_ms() + deadline_rel : 0, json, err,
                               sizeof(err));
        while (rc == MW_OK) {
            rc = mw_record_produce(rk, topic, RD_KAFKA_PARTITION_UA, &rec, NULL, err, sizeof(err));
            if (rc != MW_EAGAIN)
                break;
            rd_kafka_poll(rk, 50); /* queue full: let deliveries drain */
        }
        mw_record_fini(&rec);
        if (rc == MW_OK && st.verifier != NULL &&
            mwctl_verifier_put(st.verifier, id, (size_t)idlen, &desc, src.buf, nbytes) != MW_OK)
            rc = mw_errf(MW_ENOMEM, err, sizeof(err), "out of memory keeping inputs for --verify");
        if (rc != MW_OK) {
            progress_end(&prog);
            fprintf(stderr, "mwctl submit: request %s: %s\n", id, err);
            input_error = 1;
            break;
        }
        st.produced++;
        rd_kafka_poll(rk, 0);
        progress_show(&prog, st.produced, src.total, st.acked, 0);
    }
    /* Wait for every delivery report. */
    double deadline = now_s() + (double)timeout_s;
    while (rd_kafka_outq_len(rk) > 0 && now_s() < deadline && !interrupted) {
        rd_kafka_poll(rk, 100);
        progress_show(&prog, st.produced, src.total > 0 ? src.total : st.produced, st.acked, 0);
    }
    progress_show(&prog, st.produced, src.total > 0 ? src.total : st.produced, st.acked, 1);
    progress_end(&prog);
    double took = now_s() - prog.start;
    printf("produced %" PRId64 " requests to %s: %" PRId64 " acknowledged, %" PRId64
           " failed%s%s, in %.2f s (%.0f/s)\n",
           st.produced, topic, st.acked, st.failed, st.failed ? ": " : "", st.first_error, took,
           took > 0 ? (double)st.acked / took : 0.0);
    status = !input_error && !interrupted && st.acked == st.produced ? 0 : 1;

    if (wait && st.acked > 0) {
        st.n_expected = st.produced;
        st.seen = calloc((size_t)st.produced, 1);
        st.latencies = calloc((size_t)st.produced, sizeof(int64_t));
        if (st.seen == NULL || st.latencies == NULL) {
            fprintf(stderr, "mwctl submit: out of memory\n");
            status = 1;
            goto out_wait;
        }
        struct progress wp = {.enabled = !no_progress,
                              .tty = prog.tty,
                              .start = now_s(),
                              .last = now_s(),
                              .what = "results"};
        deadline = now_s() + (double)timeout_s;
        while (st.results < st.acked && now_s() < deadline && !interrupted) {
            rd_kafka_message_t *msg = rd_kafka_consumer_poll(consumer, 100);
            if (msg != NULL) {
                if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR)
                    take_result(&st, msg);
                else if (msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                    mw_log(MW_LOG_WARN, "submit", "consuming %s: %s", results_topic,
                           rd_kafka_message_errstr(msg));
                rd_kafka_message_destroy(msg);
            }
            progress_show(&wp, st.results, st.acked, -1, 0);
        }
        progress_end(&wp);
        qsort(st.latencies, (size_t)st.nlat, sizeof(int64_t), cmp_i64);
        printf("results: %" PRId64 "/%" PRId64 " received, %" PRId64 " errors%s", st.results,
               st.acked, st.errors, st.results < st.acked ? " (gave up waiting)" : "");
        if (st.duplicates > 0)
            printf(", %" PRId64 " DUPLICATES", st.duplicates);
        if (st.nlat > 0)
            printf("; latency p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms",
                   percentile_ms(st.latencies, st.nlat, 0.50),
                   percentile_ms(st.latencies, st.nlat, 0.90),
                   percentile_ms(st.latencies, st.nlat, 0.99),
                   (double)st.latencies[st.nlat - 1] / 1000.0);
        double span = st.last_result_s - prog.start;
        if (st.results > 0 && span > 0)
            printf("; throughput %.0f results/s (%.2f s from the first request to the last "
                   "result)",
                   (double)st.results / span, span);
        printf("\n");
        if (st.results < st.acked || st.errors > 0 || st.duplicates > 0)
            status = 1;
        if (st.verifier != NULL) {
            mwctl_verify_stats_t vs;
            mwctl_verifier_stats(st.verifier, &vs);
            int64_t ok = st.results - st.errors;
            printf("verify: %" PRId64 "/%" PRId64 " ok outputs %s the reference runner (%s)",
                   vs.verified, ok, mwctl_verifier_criterion(st.verifier), model);
            if (vs.differ > 0 || vs.no_input > 0)
                printf("; %" PRId64 " DIFFER, %" PRId64 " without a known input", vs.differ,
                       vs.no_input);
            printf("\n");
            if (vs.verified != ok || ok == 0)
                status = 1;
        }
    }
out_wait:
    free(st.seen);
    free(st.latencies);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    mw_kafka_destroy(rk);
out_consumer:
    mw_kafka_destroy(consumer);
out_source:
    mwctl_verifier_destroy(st.verifier);
    source_fini(&src);
    return status;
}
