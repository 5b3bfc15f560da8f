/* mwctl submit: produces requests to P.requests from generated data, a raw
 * tensor file, JSON lines, a directory or stdin; optionally waits for results. */
#include "client.h"
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
        "                      (the unsplit model of --model, each request alone, bit for\n"
        "                      bit); the inputs are kept in memory until their result arrives\n"
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

/* ---- options -------------------------------------------------------------- */

struct options {
    const char *pipeline, *file, *dir, *shape, *dtype, *prefix, *model;
    int64_t generate_n, deadline_rel, timeout_s;
    double tolerance;
    uint64_t seed;
    int json, wait, verify, no_progress;
    char topic[MW_TOPIC_NAME_MAX + 1], results_topic[MW_TOPIC_NAME_MAX + 1];
    char default_prefix[64];
};

/* A positive count or number of opt's text into *v; 0, or 2 with a message. */
static int parse_count(const char *opt, const char *text, int64_t min, int64_t *v)
{
    char *end = NULL;
    *v = strtoll(text, &end, 10);
    if (*text == '\0' || *end != '\0' || *v < min) {
        fprintf(stderr, "mwctl submit: --%s '%s' is not a %s number\n", opt, text,
                min > 0 ? "positive" : "non-negative");
        return 2;
    }
    return 0;
}

/* The command line into o, checked: -1 to go on, else the exit status (0 after
 * --help, 2 on a usage error, said on stderr). */
static int parse_options(int argc, char **argv, struct options *o)
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
    *o = (struct options){.dtype = "f32", .generate_n = -1, .timeout_s = 300, .seed = 1};
    int c, rc = 0;
    char *end = NULL;
    optind = 1;
    while (rc == 0 && (c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'p':
            o->pipeline = optarg;
            break;
        case 'g':
            rc = parse_count("generate", optarg, 0, &o->generate_n);
            break;
        case 'f':
            o->file = optarg;
            break;
        case 'D':
            o->dir = optarg;
            break;
        case 's':
            o->shape = optarg;
            break;
        case 't':
            o->dtype = optarg;
            break;
        case 'S':
            o->seed = strtoull(optarg, &end, 10);
            if (*end != '\0') {
                fprintf(stderr, "mwctl submit: --seed '%s' is not a number\n", optarg);
                rc = 2;
            }
            break;
        case 'j':
            o->json = 1;
            break;
        case 'i':
            o->prefix = optarg;
            break;
        case 'd':
            rc = parse_count("deadline-ms", optarg, 1, &o->deadline_rel);
            break;
        case 'w':
            o->wait = 1;
            break;
        case 'T':
            rc = parse_count("timeout-s", optarg, 1, &o->timeout_s);
            break;
        case 'q':
            o->no_progress = 1;
            break;
        case 'V':
            o->verify = 1;
            break;
        case 'm':
            o->model = optarg;
            break;
        case 'R':
            rc = mwctl_parse_tolerance("submit", optarg, &o->tolerance) != 0 ? 2 : 0;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (rc != 0 || mwctl_args_done("submit", argc, argv, o->pipeline) != 0)
        return 2;
    if ((o->generate_n >= 0) + (o->file != NULL) + (o->dir != NULL) > 1) {
        fprintf(stderr, "mwctl submit: give one of --generate, --file and --dir\n");
        return 2;
    }
    if (o->generate_n >= 0 && o->shape == NULL) {
        fprintf(stderr, "mwctl submit: --generate needs --shape\n");
        return 2;
    }
    if (o->verify && (!o->wait || o->model == NULL)) {
        fprintf(stderr, "mwctl submit: --verify needs --wait and --model\n");
        return 2;
    }
    if (o->tolerance > 0 && !o->verify) {
        fprintf(stderr, "mwctl submit: --tolerance goes with --verify\n");
        return 2;
    }
    char err[512];
    if (mw_topic_name(o->topic, sizeof(o->topic), o->pipeline, MW_TOPIC_REQUESTS, err,
                      sizeof(err)) != MW_OK ||
        mw_topic_name(o->results_topic, sizeof(o->results_topic), o->pipeline, MW_TOPIC_RESULTS,
                      err, sizeof(err)) != MW_OK) {
        fprintf(stderr, "mwctl submit: %s\n", err);
        return 2;
    }
    if (o->prefix == NULL) {
        snprintf(o->default_prefix, sizeof(o->default_prefix), "submit-%" PRId64 "-",
                 mwctl_wall_ms() / 1000);
        o->prefix = o->default_prefix;
    }
    if (strlen(o->prefix) > MW_REQUEST_ID_MAX - 19) {
        fprintf(stderr, "mwctl submit: --id-prefix is longer than %d bytes\n",
                MW_REQUEST_ID_MAX - 19);
        return 2;
    }
    return -1;
}

/* Opens the input o names into s (zeroed by the caller, source_fini after):
 * -1 to go on, else the exit status, said on stderr. */
static int source_open(struct source *s, const struct options *o, const mw_config_t *cfg)
{
    s->total = -1;
    s->seed = o->seed;
    s->max_tensor_bytes = (uint64_t)cfg->records_max_tensor_bytes;
    if (o->shape != NULL) {
        char e[256];
        if (mw_dtype_parse(o->dtype, strlen(o->dtype), &s->desc.dtype) != MW_OK) {
            fprintf(stderr, "mwctl submit: unknown --dtype '%s' (f32, f16, bf16, i32, i64, u8)\n",
                    o->dtype);
            return 2;
        }
        uint64_t nb;
        if (mw_shape_parse(o->shape, strlen(o->shape), &s->desc, e, sizeof(e)) != MW_OK ||
            mw_tensor_nbytes(&s->desc, &nb) != MW_OK) {
            fprintf(stderr, "mwctl submit: --shape: %s\n", e);
            return 2;
        }
        if (nb > s->max_tensor_bytes) {
            fprintf(stderr,
                    "mwctl submit: a %s tensor of shape %s is %" PRIu64
                    " bytes, over records.max_tensor_bytes = %" PRIu64 "\n",
                    o->dtype, o->shape, nb, s->max_tensor_bytes);
            return 2;
        }
        s->row_bytes = (size_t)nb;
        if (buf_reserve(s, s->row_bytes) != MW_OK) {
            fprintf(stderr, "mwctl submit: out of memory\n");
            return 1;
        }
    }
    if (o->generate_n >= 0) {
        s->kind = SRC_GENERATE;
        s->total = o->generate_n;
    } else if (o->dir != NULL) {
        s->kind = SRC_DIR;
        s->path = o->dir;
        s->nentries = scandir(o->dir, &s->entries, regular_file, alphasort);
        if (s->nentries < 0) {
            s->nentries = 0;
            fprintf(stderr, "mwctl submit: %s: %s\n", o->dir, strerror(errno));
            return 1;
        }
        s->total = s->nentries;
    } else {
        s->kind = o->shape != NULL ? SRC_RAW : SRC_JSONL;
        s->path = o->file != NULL ? o->file : "-";
        if (strcmp(s->path, "-") == 0) {
            s->f = stdin;
            s->path = "stdin";
            return -1;
        }
        s->f = fopen(s->path, "rb");
        if (s->f == NULL) {
            fprintf(stderr, "mwctl submit: %s: %s\n", s->path, strerror(errno));
            return 1;
        }
        s->close_f = 1;
        struct stat sb;
        if (s->kind == SRC_RAW && fstat(fileno(s->f), &sb) == 0 && S_ISREG(sb.st_mode))
            s->total = (int64_t)((uint64_t)sb.st_size / s->row_bytes);
    }
    return -1;
}

/* ---- producing and waiting -------------------------------------------------- */

/* One request of this run, by index: when it was produced, what came back. */
struct slot {
    int64_t produced_us; /* just before its produce call */
    int64_t client_us;   /* produce call -> its committed result read here */
    int64_t pipeline_us; /* its mw-latency-us, -1 when absent */
    int seen;
};

struct submit {
    const struct options *o;
    rd_kafka_t *producer;
    rd_kafka_t *consumer; /* --wait: P.results, read_committed */
    int64_t produced, acked, failed;
    char first_error[512];
    size_t prefix_len;
    /* --wait */
    struct slot *slots; /* [produced], room for slots_cap */
    int64_t slots_cap;
    int64_t results, errors, duplicates;
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

/* Room for one more slot; MW_ENOMEM when there is none. */
static int slot_reserve(struct submit *st)
{
    if (st->produced < st->slots_cap)
        return MW_OK;
    int64_t cap = st->slots_cap > 0 ? 2 * st->slots_cap : 1024;
    struct slot *s = realloc(st->slots, (size_t)cap * sizeof(*s));
    if (s == NULL)
        return MW_ENOMEM;
    st->slots = s;
    st->slots_cap = cap;
    return MW_OK;
}

/* Index of a request produced by this run (prefix + decimal), or -1. */
static int64_t id_index(const struct submit *st, const void *key, size_t len)
{
    const char *k = key;
    if (key == NULL || len <= st->prefix_len || len - st->prefix_len > 18 ||
        memcmp(k, st->o->prefix, st->prefix_len) != 0)
        return -1;
    int64_t v = 0;
    for (size_t i = st->prefix_len; i < len; i++) {
        if (k[i] < '0' || k[i] > '9')
            return -1;
        v = v * 10 + (k[i] - '0');
    }
    return v < st->produced ? v : -1;
}

static void take_result(struct submit *st, const rd_kafka_message_t *msg)
{
    int64_t read_us = mw_now_us();
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
    struct slot *s = &st->slots[i];
    if (s->seen) {
        st->duplicates++;
        return;
    }
    s->seen = 1;
    s->client_us = read_us - s->produced_us;
    s->pipeline_us = res.latency_us;
    st->results++;
    if (!res.ok) {
        if (st->errors++ < 5)
            fprintf(stderr, "mwctl submit: %.*s: error: %.*s\n", (int)res.id_len,
                    (const char *)res.id, (int)res.error_len, res.error ? res.error : "");
    }
    st->last_result_s = mwctl_now_s();
    if (st->verifier != NULL && res.ok) {
        char e[600];
        if (mwctl_verifier_check(st->verifier, &res, e, sizeof(e)) != MW_OK &&
            st->verify_shown++ < 5)
            fprintf(stderr, "mwctl submit: %.*s: NOT VERIFIED: %s\n", (int)res.id_len,
                    (const char *)res.id, e);
    }
}

/* Serves the producer's delivery reports and, with --wait, takes every result
 * already there; waits up to timeout_ms for the first one (or for a report). */
static void poll_clients(struct submit *st, int timeout_ms)
{
    if (st->consumer == NULL) {
        rd_kafka_poll(st->producer, timeout_ms);
        return;
    }
    rd_kafka_poll(st->producer, 0);
    rd_kafka_message_t *msg;
    while ((msg = rd_kafka_consumer_poll(st->consumer, timeout_ms)) != NULL) {
        if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR)
            take_result(st, msg);
        else if (msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
            mw_log(MW_LOG_WARN, "submit", "consuming %s: %s", st->o->results_topic,
                   rd_kafka_message_errstr(msg));
        rd_kafka_message_destroy(msg);
        timeout_ms = 0;
    }
}

/* Produces one request (in src->buf) under the next id; MW_OK or an error in err. */
static int produce_one(struct submit *st, const struct source *src, const mw_tensor_desc_t *desc,
                       size_t nbytes, char *err, size_t err_size)
{
    const struct options *o = st->o;
    char id[MW_REQUEST_ID_MAX + 1];
    int idlen = snprintf(id, sizeof(id), "%s%" PRId64, o->prefix, st->produced);
    if (st->consumer != NULL && slot_reserve(st) != MW_OK)
        return mw_errf(MW_ENOMEM, err, err_size, "out of memory");
    mw_record_t rec;
    mw_record_init(&rec);
    int rc = mw_request_encode(&rec, id, (size_t)idlen, desc, src->buf, nbytes,
                               o->deadline_rel > 0 ? mwctl_wall_ms() + o->deadline_rel : 0, o->json,
                               err, err_size);
    if (st->consumer != NULL)
        st->slots[st->produced] = (struct slot){.produced_us = mw_now_us(), .pipeline_us = -1};
    while (rc == MW_OK) {
        rc = mw_record_produce(st->producer, o->topic, RD_KAFKA_PARTITION_UA, &rec, NULL, err,
                               err_size);
        if (rc != MW_EAGAIN)
            break;
        poll_clients(st, 50); /* queue full: let deliveries drain */
    }
    mw_record_fini(&rec);
    if (rc == MW_OK && st->verifier != NULL &&
        mwctl_verifier_put(st->verifier, id, (size_t)idlen, desc, src->buf, nbytes) != MW_OK)
        rc = mw_errf(MW_ENOMEM, err, err_size, "out of memory keeping inputs for --verify");
    if (rc != MW_OK) {
        char why[1024];
        snprintf(why, sizeof(why), "%s", err);
        return mw_errf(rc, err, err_size, "request %s: %s", id, why);
    }
    st->produced++;
    return MW_OK;
}

/* Produces every request of src, then waits for their delivery reports and
 * prints the `produced` line; 0 when all were produced and acknowledged. */
static int produce_all(struct submit *st, struct source *src, mwctl_progress_t *prog)
{
    char err[1024];
    int input_error = 0;
    while (!interrupted) {
        mw_tensor_desc_t desc = {0};
        size_t nbytes = 0;
        int rc = source_next(src, &desc, &nbytes, err, sizeof(err));
        if (rc > 0)
            rc = produce_one(st, src, &desc, nbytes, err, sizeof(err));
        else if (rc == 0)
            break;
        if (rc < 0) {
            mwctl_progress_end(prog);
            fprintf(stderr, "mwctl submit: %s\n", err);
            input_error = 1;
            break;
        }
        poll_clients(st, 0);
        mwctl_progress_show(prog, st->produced, src->total, st->acked, 0);
    }
    int64_t total = src->total > 0 ? src->total : st->produced;
    double deadline = mwctl_now_s() + (double)st->o->timeout_s;
    while (rd_kafka_outq_len(st->producer) > 0 && mwctl_now_s() < deadline && !interrupted) {
        poll_clients(st, st->consumer != NULL ? 10 : 100);
        mwctl_progress_show(prog, st->produced, total, st->acked, 0);
    }
    mwctl_progress_show(prog, st->produced, total, st->acked, 1);
    mwctl_progress_end(prog);
    double took = mwctl_now_s() - prog->start;
    printf("produced %" PRId64 " requests to %s: %" PRId64 " acknowledged, %" PRId64
           " failed%s%s, in %.2f s (%.0f/s)\n",
           st->produced, st->o->topic, st->acked, st->failed, st->failed ? ": " : "",
           st->first_error, took, took > 0 ? (double)st->acked / took : 0.0);
    return !input_error && !interrupted && st->acked == st->produced ? 0 : 1;
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

/* Prints "LABEL p50 … ms, p90 …, p99 …, max …" of v[n] (sorted here); nothing when n is 0. */
static void print_percentiles(const char *label, int64_t *v, int64_t n)
{
    if (n == 0)
        return;
    qsort(v, (size_t)n, sizeof(int64_t), cmp_i64);
    printf("; %s p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms", label,
           percentile_ms(v, n, 0.50), percentile_ms(v, n, 0.90), percentile_ms(v, n, 0.99),
           (double)v[n - 1] / 1000.0);
}

/* Reads results until every acknowledged request has one (or the timeout), then
 * prints the `results` and `verify` lines; 0 when all arrived, ok and verified. */
static int wait_results(struct submit *st, mwctl_progress_t *prog, double start_s)
{
    mwctl_progress_t wp;
    mwctl_progress_init(&wp, "results", prog->enabled);
    double deadline = mwctl_now_s() + (double)st->o->timeout_s;
    while (st->results < st->acked && mwctl_now_s() < deadline && !interrupted) {
        poll_clients(st, 100);
        mwctl_progress_show(&wp, st->results, st->acked, -1, 0);
    }
    mwctl_progress_end(&wp);
    int status = st->results < st->acked || st->errors > 0 || st->duplicates > 0;
    printf("results: %" PRId64 "/%" PRId64 " received, %" PRId64 " errors%s", st->results,
           st->acked, st->errors, st->results < st->acked ? " (gave up waiting)" : "");
    if (st->duplicates > 0)
        printf(", %" PRId64 " DUPLICATES", st->duplicates);
    int64_t *client = calloc((size_t)st->results + 1, sizeof(int64_t));
    int64_t *pipeline = calloc((size_t)st->results + 1, sizeof(int64_t));
    int64_t nc = 0, np = 0;
    for (int64_t i = 0; client != NULL && pipeline != NULL && i < st->produced; i++) {
        if (!st->slots[i].seen)
            continue;
        client[nc++] = st->slots[i].client_us;
        if (st->slots[i].pipeline_us >= 0)
            pipeline[np++] = st->slots[i].pipeline_us;
    }
    print_percentiles("latency (produce to committed result read)", client, nc);
    print_percentiles("in-pipeline (mw-latency-us)", pipeline, np);
    free(client);
    free(pipeline);
    double span = st->last_result_s - start_s;
    if (st->results > 0 && span > 0)
        printf("; throughput %.0f results/s (%.2f s from the first request to the last "
               "result)",
               (double)st->results / span, span);
    printf("\n");
    if (st->verifier != NULL) {
        mwctl_verify_stats_t vs;
        mwctl_verifier_stats(st->verifier, &vs);
        int64_t ok = st->results - st->errors;
        printf("verify: %" PRId64 "/%" PRId64 " ok outputs %s the reference runner (%s)",
               vs.verified, ok, mwctl_verifier_criterion(st->verifier), st->o->model);
        if (vs.differ > 0 || vs.no_input > 0)
            printf("; %" PRId64 " DIFFER, %" PRId64 " without a known input", vs.differ,
                   vs.no_input);
        printf("\n");
        status |= vs.verified != ok || ok == 0;
    }
    return status;
}

/* The Kafka clients, tuned for latency unless configured (README, mwctl submit):
 * the producer sends each request at once, the results consumer's fetches
 * return within 5 ms. 0, or 1 with a message. */
static int clients_new(struct submit *st, const mw_config_t *cfg, mw_kv_t *kv)
{
    static char linger[] = "linger.ms", zero[] = "0", fetch_wait[] = "fetch.wait.max.ms",
                five[] = "5";
    char err[1024];
    mw_config_t tuned;
    if (st->o->wait) {
        /* Assigned at the current end before producing, so no result is missed. */
        mwctl_with_kafka_default(cfg, &tuned, kv, fetch_wait, five);
        st->consumer = mwctl_consumer_open(&tuned, "submit", st->o->results_topic, 0, NULL, NULL,
                                           err, sizeof(err));
        if (st->consumer == NULL) {
            fprintf(stderr, "mwctl submit: --wait: %s\n", err);
            return 1;
        }
    }
    const mw_kafka_hooks_t hooks = {.dr_msg_cb = dr_cb, .opaque = st};
    mwctl_with_kafka_default(cfg, &tuned, kv, linger, zero);
    st->producer = mw_kafka_producer_new(&tuned, NULL, &hooks, err, sizeof(err));
    if (st->producer == NULL) {
        fprintf(stderr, "mwctl submit: %s\n", err);
        return 1;
    }
    return 0;
}

int mwctl_submit(int argc, char **argv, const mw_config_t *cfg)
{
    struct options o;
    int status = parse_options(argc, argv, &o);
    if (status >= 0)
        return status;
    struct submit st = {.o = &o, .prefix_len = strlen(o.prefix)};
    struct source src = {0};
    mw_kv_t *kv = calloc(cfg->kafka_count + 1, sizeof(*kv));
    status = source_open(&src, &o, cfg);
    if (status >= 0)
        goto out;
    status = 1;
    char err[1024];
    if (kv == NULL) {
        fprintf(stderr, "mwctl submit: out of memory\n");
        goto out;
    }
    if (o.verify && mwctl_verifier_new(o.model, (int)cfg->batch_max_rows, &st.verifier, err,
                                       sizeof(err)) != MW_OK) {
        fprintf(stderr, "mwctl submit: --verify: %s\n", err);
        goto out;
    }
    if (st.verifier != NULL)
        mwctl_verifier_set_tolerance(st.verifier, o.tolerance);
    if (clients_new(&st, cfg, kv) != 0)
        goto out;
    struct sigaction sa = {.sa_handler = on_signal};
    struct sigaction old_int, old_term;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    mwctl_progress_t prog;
    mwctl_progress_init(&prog, "submit", !o.no_progress);
    status = produce_all(&st, &src, &prog);
    if (o.wait && st.acked > 0)
        status |= wait_results(&st, &prog, prog.start);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
out:
    mw_kafka_destroy(st.producer);
    mw_kafka_destroy(st.consumer);
    mwctl_verifier_destroy(st.verifier);
    free(st.slots);
    free(kv);
    source_fini(&src);
    return status;
}
