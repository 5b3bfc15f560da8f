/* The configuration table and its loaders: defaults, JSON file, MW_* env, flags. */
#include "config.h"

#include "err.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum cfg_type { CFG_STR, CFG_INT, CFG_BOOL, CFG_ENUM };

struct cfg_key {
    const char *key;
    enum cfg_type type;
    size_t offset;
    size_t size;         /* strings: capacity of the char array */
    const char *def;     /* default, as text */
    int64_t min, max;    /* integers */
    const char *choices; /* enums: "a|b|c" */
    int secret;          /* masked when printed */
    const char *doc;
};

#define FIELD(f) offsetof(mw_config_t, f), sizeof(((mw_config_t *)0)->f)
#define CFG_S(k, f, d, doc)                                                                        \
    {                                                                                              \
        k, CFG_STR, FIELD(f), d, 0, 0, NULL, 0, doc                                                \
    }
#define CFG_SECRET(k, f, d, doc)                                                                   \
    {                                                                                              \
        k, CFG_STR, FIELD(f), d, 0, 0, NULL, 1, doc                                                \
    }
#define CFG_I(k, f, d, lo, hi, doc)                                                                \
    {                                                                                              \
        k, CFG_INT, FIELD(f), d, lo, hi, NULL, 0, doc                                              \
    }
#define CFG_B(k, f, d, doc)                                                                        \
    {                                                                                              \
        k, CFG_BOOL, FIELD(f), d, 0, 1, NULL, 0, doc                                               \
    }
#define CFG_E(k, f, d, choices, doc)                                                               \
    {                                                                                              \
        k, CFG_ENUM, FIELD(f), d, 0, 0, choices, 0, doc                                            \
    }

/* The one table of configuration keys. `--help` and the README come from it. */
static const struct cfg_key keys[] = {
    CFG_S("cluster.name", cluster, "local",
          "name of this mwserve cluster; every Redis key starts with mw:{cluster.name}:"),
    CFG_E("log.level", log_level, "info", "debug|info|warn|error", "least severe level logged"),
    CFG_S("redis.host", redis_host, "127.0.0.1", "Redis server host"),
    CFG_I("redis.port", redis_port, "6379", 1, 65535, "Redis server port"),
    CFG_SECRET("redis.password", redis_password, "", "Redis AUTH password (empty: none)"),
    CFG_I("redis.db", redis_db, "0", 0, 1023, "Redis database number"),
    CFG_I("redis.connect_timeout_ms", redis_connect_timeout_ms, "2000", 10, 600000,
          "timeout of one connection attempt to Redis"),
    CFG_I("redis.command_timeout_ms", redis_command_timeout_ms, "5000", 10, 600000,
          "timeout of one Redis command"),
    CFG_I("redis.retry_max_ms", redis_retry_max_ms, "5000", 10, 600000,
          "longest wait between reconnection attempts (exponential backoff from 50 ms)"),
    CFG_I("kafka_client.timeout_ms", kafka_timeout_ms, "30000", 100, 600000,
          "timeout of Kafka admin calls and transaction initialisation"),
    CFG_I("records.max_tensor_bytes", records_max_tensor_bytes, "67108864", 1, INT64_C(1) << 40,
          "largest request tensor accepted, in bytes (larger requests are rejected)"),
    CFG_I("world.timeout_ms", world_timeout_ms, "5000", 50, 3600000,
          "failure-detection bound: a send without progress or a silent peer breaks its world"),
    CFG_I("world.keepalive_ms", world_keepalive_ms, "1000", 10, 600000,
          "keepalive interval on idle world connections (capped at world.timeout_ms/3)"),
    CFG_I("world.max_tensor_bytes", world_max_tensor_bytes, "1073741824", 1, INT64_C(1) << 40,
          "largest tensor frame a world accepts; a larger one breaks the world"),
    CFG_S("world.listen_host", world_listen_host, "127.0.0.1",
          "address the world listener binds (0.0.0.0: every interface)"),
    CFG_I("world.listen_port", world_listen_port, "0", 0, 65535,
          "port of the world listener (0: any free port)"),
    CFG_S("world.advertise_host", world_advertise_host, "",
          "host that peers connect to (empty: world.listen_host, or the hostname for 0.0.0.0)"),
    CFG_I("world.socket_buffer_bytes", world_socket_buffer_bytes, "4194304", 0, INT64_C(1) << 30,
          "SO_SNDBUF/SO_RCVBUF of world sockets (0: kernel autotuning)"),
    CFG_S("pipeline.spec", pipeline_spec, "",
          "pipelines the coordinator plans: \"name:stages[,...]\", inline JSON, or a JSON file"),
    CFG_I("heartbeat.interval_ms", heartbeat_interval_ms, "500", 10, 600000,
          "how often a worker refreshes its heartbeat (Redis server time)"),
    CFG_I("heartbeat.ttl_ms", heartbeat_ttl_ms, "2000", 30, 3600000,
          "the coordinator removes a worker whose last heartbeat is older than this"),
    CFG_I("coordinator.lease_ms", coordinator_lease_ms, "3000", 30, 3600000,
          "leader lease; a standby takes over this long after the leader stops renewing"),
    CFG_I("coordinator.interval_ms", coordinator_interval_ms, "200", 5, 600000,
          "coordinator loop period: lease renewal, sweep, planning (keep under lease_ms/3)"),
    CFG_I("plan.max_fanout", plan_max_fanout, "4", 1, 4096,
          "worlds a worker opens toward each adjacent stage (exceeded only to keep routes)"),
    CFG_I("events.maxlen", events_maxlen, "10000", 10, 100000000,
          "approximate length cap of the events stream"),
    CFG_I("autoscale.interval_ms", autoscale_interval_ms, "3000", 50, 3600000,
          "how often the leading coordinator measures load and decides desired worker counts"),
    CFG_I("autoscale.window_ms", autoscale_window_ms, "10000", 100, 3600000,
          "window over which busy fractions and the backlog trend are measured"),
    CFG_I("autoscale.busy_high_pct", autoscale_busy_high_pct, "85", 1, 100,
          "a stage this busy (compute over wall time, %) is a bottleneck that may be scaled out"),
    CFG_I("autoscale.busy_low_pct", autoscale_busy_low_pct, "50", 0, 100,
          "scale-in needs every stage under this busy % (and under busy_high_pct with one "
          "worker less)"),
    CFG_I("autoscale.lag_min", autoscale_lag_min, "100", 0, INT64_C(1) << 40,
          "a backlog (Kafka lag of P.requests) under this many requests never scales out"),
    CFG_I("autoscale.cooldown_ms", autoscale_cooldown_ms, "30000", 0, 86400000,
          "no new decision for a pipeline this long after its last one"),
    CFG_I("autoscale.scale_in_after_ms", autoscale_scale_in_after_ms, "120000", 0, 86400000,
          "every stage must have spare capacity this long before a moved --stage auto worker "
          "goes back or one worker is removed"),
    CFG_S("agent.id", agent_id, "", "host agent identity (empty: the host name)"),
    CFG_S("agent.slots", agent_slots, "cpu:1",
          "what the host agent may run workers on: \"cpu:N\" (N cpu workers) or "
          "\"cuda:0,1,...\" (one worker per GPU)"),
    CFG_S("agent.worker_command", agent_worker_command, "",
          "shell command (sh -c) that starts one mw-worker; the agent sets MW_WORKER_PIPELINE, "
          "MW_WORKER_STAGE and MW_WORKER_DEVICE in its environment"),
    CFG_I("agent.interval_ms", agent_interval_ms, "1000", 10, 600000,
          "how often the host agent reads desired counts and reports its capacity"),
    CFG_I("agent.backoff_ms", agent_backoff_ms, "1000", 1, 3600000,
          "first wait before restarting a worker that exited early; doubles per early exit"),
    CFG_I("agent.backoff_max_ms", agent_backoff_max_ms, "60000", 1, 86400000,
          "longest wait before restarting a crash-looping worker"),
    CFG_S("worker.id", worker_id, "", "worker identity (empty: host.pid.random)"),
    CFG_S("worker.pipeline", worker_pipeline, "", "pipeline this worker serves"),
    CFG_S("worker.stage", worker_stage, "auto",
          "stage this worker runs: a number, or auto to let the coordinator choose"),
    CFG_S("worker.device", worker_device, "cpu", "device of this worker: cpu or cuda:N"),
    CFG_I("worker.capacity", worker_capacity, "1", 1, 1000000,
          "relative capacity of this worker (placement of --stage auto workers)"),
    CFG_I("worker.drain_timeout_ms", worker_drain_timeout_ms, "30000", 0, 3600000,
          "on SIGTERM, longest wait for in-flight requests before leaving"),
    CFG_S("model.path", model_path, "",
          "reference model file (safetensors) when the pipeline spec names none"),
    CFG_I("worker.max_inflight", worker_max_inflight, "4096", 1, 1000000,
          "requests an origin holds at once; when full it pauses its Kafka partitions"),
    CFG_I("worker.max_inflight_bytes", worker_max_inflight_bytes, "268435456", 1, INT64_C(1) << 40,
          "bytes of request records an origin holds at once (the window is full at either "
          "limit)"),
    CFG_I("worker.queue_depth", worker_queue_depth, "64", 1, 1000000,
          "unfinished sends per world; a full world makes the router pick another"),
    CFG_I("batch.max_rows", batch_max_rows, "256", 1, 65536,
          "rows a stage computes in one call; a request with more gets an error result"),
    CFG_I("batch.max_delay_us", batch_max_delay_us, "0", 0, 1000000,
          "an origin waits at most this long for more requests to fill a batch (0: takes what "
          "is there)"),
    CFG_I("worker.compute_delay_us", worker_compute_delay_us, "0", 0, 1000000,
          "testing: extra time each stage computation takes (simulates a slower device)"),
    CFG_I("worker.compute_delay_stage", worker_compute_delay_stage, "-1", -1, 63,
          "testing: the only stage worker.compute_delay_us slows (-1: every stage), so that a "
          "worker moved between stages is slow at one of them only"),
    CFG_E("results.delivery", results_delivery, "exactly-once", "exactly-once|at-least-once",
          "exactly-once: results and input offsets in one Kafka transaction; at-least-once: "
          "produce, then commit offsets"),
    CFG_I("results.commit_interval_ms", results_commit_interval_ms, "100", 1, 600000,
          "longest a released result waits for its results transaction to start"),
    CFG_I("results.commit_min_gap_ms", results_commit_min_gap_ms, "10", 0, 600000,
          "group commit: results that became ready while a results transaction committed wait "
          "this long after it ended for more to join them (at most "
          "results.commit_interval_ms); with none waiting then, the next result commits at once"),
    CFG_S("results.reply_topics", results_reply_topics, "",
          "comma-separated fnmatch globs of the topics a request may name as its reply topic "
          "(mw-reply-topic, kafka_replyTopic); empty: reply routing off (such a request gets an "
          "error result on P.results)"),
    CFG_I("request.max_attempts", request_max_attempts, "3", 1, 1000,
          "dispatches of one request before it fails with an error result and a DLQ copy"),
    CFG_I("request.timeout_ms", request_timeout_ms, "30000", 1, 86400000,
          "deadline of a request without mw-deadline-ms, from when the origin consumed it"),
    CFG_I("request.attempt_timeout_ms", request_attempt_timeout_ms, "5000", 1, 86400000,
          "an attempt unanswered this long is abandoned and the request dispatched again; "
          "origins send a world to stage 1 only what it answered over a quarter of this"),
};

#define NKEYS (sizeof(keys) / sizeof(keys[0]))

static const struct cfg_key *find_key(const char *key)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].key, key) == 0)
            return &keys[i];
    return NULL;
}

static const char *type_name(const struct cfg_key *k)
{
    switch (k->type) {
    case CFG_INT:
        return "integer";
    case CFG_BOOL:
        return "boolean";
    case CFG_ENUM:
        return k->choices;
    default:
        return "string";
    }
}

static int set_kafka(mw_config_t *cfg, const char *property, const char *value, char *errstr,
                     size_t errstr_size)
{
    for (size_t i = 0; i < cfg->kafka_count; i++) {
        if (strcmp(cfg->kafka[i].key, property) == 0) {
            char *v = strdup(value);
            if (v == NULL)
                return mw_errf(MW_ENOMEM, errstr, errstr_size, "out of memory");
            free(cfg->kafka[i].value);
            cfg->kafka[i].value = v;
            return MW_OK;
        }
    }
    mw_kv_t *kv = realloc(cfg->kafka, (cfg->kafka_count + 1) * sizeof(*kv));
    if (kv == NULL)
        return mw_errf(MW_ENOMEM, errstr, errstr_size, "out of memory");
    cfg->kafka = kv;
    kv[cfg->kafka_count].key = strdup(property);
    kv[cfg->kafka_count].value = strdup(value);
    if (kv[cfg->kafka_count].key == NULL || kv[cfg->kafka_count].value == NULL) {
        free(kv[cfg->kafka_count].key);
        free(kv[cfg->kafka_count].value);
        return mw_errf(MW_ENOMEM, errstr, errstr_size, "out of memory");
    }
    cfg->kafka_count++;
    return MW_OK;
}

static int parse_bool(const char *v, int64_t *out)
{
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = 1;
            return MW_OK;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = 0;
            return MW_OK;
        }
    }
    return MW_EINVAL;
}

static int enum_has(const char *choices, const char *v)
{
    size_t n = strlen(v);
    for (const char *p = choices; *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, v, n) == 0)
            return 1;
        p += len + (bar != NULL);
    }
    return 0;
}

int mw_config_set(mw_config_t *cfg, const char *key, const char *value, const char *origin,
                  char *errstr, size_t errstr_size)
{
    if (strncmp(key, "kafka.", 6) == 0) {
        if (key[6] == '\0')
            return mw_errf(MW_EINVAL, errstr, errstr_size, "%s: empty Kafka property name", origin);
        return set_kafka(cfg, key + 6, value, errstr, errstr_size);
    }
    const struct cfg_key *k = find_key(key);
    if (k == NULL)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "%s: unknown configuration key '%s' (mwctl --help lists the keys)", origin,
                       key);
    char *field = (char *)cfg + k->offset;
    switch (k->type) {
    case CFG_ENUM:
        if (!enum_has(k->choices, value))
            return mw_errf(MW_EINVAL, errstr, errstr_size, "%s: %s must be one of %s, not '%s'",
                           origin, key, k->choices, value);
        /* fall through */
    case CFG_STR:
        if (strlen(value) >= k->size)
            return mw_errf(MW_EINVAL, errstr, errstr_size,
                           "%s: %s is too long (%zu bytes, at most %zu)", origin, key,
                           strlen(value), k->size - 1);
        memcpy(field, value, strlen(value) + 1);
        return MW_OK;
    case CFG_BOOL: {
        int64_t b;
        if (parse_bool(value, &b) != MW_OK)
            return mw_errf(MW_EINVAL, errstr, errstr_size,
                           "%s: %s must be a boolean (true/false), not '%s'", origin, key, value);
        memcpy(field, &b, sizeof(b));
        return MW_OK;
    }
    case CFG_INT: {
        char *end;
        errno = 0;
        long long n = strtoll(value, &end, 10);
        if (errno != 0 || end == value || *end != '\0')
            return mw_errf(MW_EINVAL, errstr, errstr_size, "%s: %s must be an integer, not '%s'",
                           origin, key, value);
        if (n < k->min || n > k->max)
            return mw_errf(MW_EINVAL, errstr, errstr_size,
                           "%s: %s = %lld is out of range [%lld, %lld]", origin, key, n,
                           (long long)k->min, (long long)k->max);
        int64_t v = n;
        memcpy(field, &v, sizeof(v));
        return MW_OK;
    }
    }
    return MW_EINVAL;
}

void mw_config_init(mw_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < NKEYS; i++) {
        int rc = mw_config_set(cfg, keys[i].key, keys[i].def, "default", NULL, 0);
        (void)rc; /* the defaults are checked by test_config */
    }
}

void mw_config_fini(mw_config_t *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < cfg->kafka_count; i++) {
        free(cfg->kafka[i].key);
        free(cfg->kafka[i].value);
    }
    free(cfg->kafka);
    cfg->kafka = NULL;
    cfg->kafka_count = 0;
}

int mw_config_copy(mw_config_t *dst, const mw_config_t *src, char *errstr, size_t errstr_size)
{
    *dst = *src;
    dst->kafka = NULL;
    dst->kafka_count = 0;
    for (size_t i = 0; i < src->kafka_count; i++) {
        int rc = set_kafka(dst, src->kafka[i].key, src->kafka[i].value, errstr, errstr_size);
        if (rc != MW_OK) {
            mw_config_fini(dst);
            return rc;
        }
    }
    return MW_OK;
}

/* ------------------------------------------------------------------ file */

static void line_col(const char *text, const char *at, int *line, int *col)
{
    *line = 1;
    *col = 1;
    for (const char *p = text; p < at && *p; p++) {
        if (*p == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

static int load_object(mw_config_t *cfg, const cJSON *obj, const char *prefix, const char *path,
                       char *errstr, size_t errstr_size)
{
    for (const cJSON *it = obj->child; it != NULL; it = it->next) {
        char key[512], value[64], origin[640];
        snprintf(key, sizeof(key), "%s%s%s", prefix, *prefix ? "." : "", it->string);
        snprintf(origin, sizeof(origin), "%s: key '%s'", path, key);
        const char *text = value;
        if (cJSON_IsObject(it)) {
            int rc = load_object(cfg, it, key, path, errstr, errstr_size);
            if (rc != MW_OK)
                return rc;
            continue;
        } else if (cJSON_IsString(it)) {
            text = it->valuestring;
        } else if (cJSON_IsBool(it)) {
            snprintf(value, sizeof(value), "%s", cJSON_IsTrue(it) ? "true" : "false");
        } else if (cJSON_IsNumber(it)) {
            double d = it->valuedouble;
            if (d == (double)(long long)d)
                snprintf(value, sizeof(value), "%lld", (long long)d);
            else
                snprintf(value, sizeof(value), "%.17g", d);
        } else {
            return mw_errf(MW_EINVAL, errstr, errstr_size,
                           "%s: value must be a string, number, boolean or object", origin);
        }
        int rc = mw_config_set(cfg, key, text, origin, errstr, errstr_size);
        if (rc != MW_OK)
            return rc;
    }
    return MW_OK;
}

int mw_config_load_file(mw_config_t *cfg, const char *path, char *errstr, size_t errstr_size)
{
    int rc = MW_OK;
    char *text = NULL;
    cJSON *root = NULL;
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return mw_errf(MW_EINVAL, errstr, errstr_size, "config file %s: %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0 || ftell(f) < 0 || ftell(f) > (1 << 20)) {
        rc = mw_errf(MW_EINVAL, errstr, errstr_size,
                     "config file %s: unreadable or larger than 1 MiB", path);
        goto out_close;
    }
    long size = ftell(f);
    rewind(f);
    text = malloc((size_t)size + 1);
    if (text == NULL || fread(text, 1, (size_t)size, f) != (size_t)size) {
        rc = mw_errf(MW_EIO, errstr, errstr_size, "config file %s: read failed", path);
        goto out_free;
    }
    text[size] = '\0';
    if (memchr(text, '\0', (size_t)size) != NULL) {
        rc = mw_errf(MW_EINVAL, errstr, errstr_size, "config file %s: contains a NUL byte", path);
        goto out_free;
    }
    const char *end = NULL;
    root = cJSON_ParseWithOpts(text, &end, 1);
    if (root == NULL) {
        int line, col;
        line_col(text, end ? end : text, &line, &col);
        rc = mw_errf(MW_EINVAL, errstr, errstr_size,
                     "config file %s:%d:%d: malformed JSON near '%.20s'", path, line, col,
                     end ? end : "");
        goto out_free;
    }
    if (!cJSON_IsObject(root)) {
        rc = mw_errf(MW_EINVAL, errstr, errstr_size,
                     "config file %s: the top level must be a JSON object", path);
        goto out_free;
    }
    rc = load_object(cfg, root, "", path, errstr, errstr_size);
out_free:
    cJSON_Delete(root);
    free(text);
out_close:
    fclose(f);
    return rc;
}

/* ------------------------------------------------------------------- env */

static void env_name(const char *key, char *out, size_t size)
{
    size_t n = snprintf(out, size, "MW_");
    for (const char *p = key; *p && n + 1 < size; p++)
        out[n++] = *p == '.' ? '_' : (char)toupper((unsigned char)*p);
    out[n] = '\0';
}

extern char **environ;

int mw_config_load_env(mw_config_t *cfg, char *errstr, size_t errstr_size)
{
    char name[128];
    for (size_t i = 0; i < NKEYS; i++) {
        env_name(keys[i].key, name, sizeof(name));
        const char *v = getenv(name);
        if (v == NULL)
            continue;
        int rc = mw_config_set(cfg, keys[i].key, v, name, errstr, errstr_size);
        if (rc != MW_OK)
            return rc;
    }
    /* MW_KAFKA_SOCKET_TIMEOUT_MS=... -> kafka.socket.timeout.ms */
    for (char **e = environ; *e != NULL; e++) {
        if (strncmp(*e, "MW_KAFKA_", 9) != 0)
            continue;
        const char *eq = strchr(*e, '=');
        if (eq == NULL || eq - *e - 9 <= 0 || (size_t)(eq - *e) >= sizeof(name))
            continue;
        char key[sizeof(name) + 8] = "kafka.";
        size_t n = 6;
        for (const char *p = *e + 9; p < eq; p++)
            key[n++] = *p == '_' ? '.' : (char)tolower((unsigned char)*p);
        key[n] = '\0';
        snprintf(name, sizeof(name), "%.*s", (int)(eq - *e), *e);
        int rc = mw_config_set(cfg, key, eq + 1, name, errstr, errstr_size);
        if (rc != MW_OK)
            return rc;
    }
    return MW_OK;
}

/* ----------------------------------------------------------------- flags */

static int check_kafka(const mw_config_t *cfg, char *errstr, size_t errstr_size)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    int rc = MW_OK;
    for (size_t i = 0; i < cfg->kafka_count && rc == MW_OK; i++) {
        char kerr[256];
        if (rd_kafka_conf_set(conf, cfg->kafka[i].key, cfg->kafka[i].value, kerr, sizeof(kerr)) !=
            RD_KAFKA_CONF_OK)
            rc = mw_errf(MW_EINVAL, errstr, errstr_size, "kafka.%s: %s", cfg->kafka[i].key, kerr);
    }
    rd_kafka_conf_destroy(conf);
    return rc;
}

int mw_config_load(mw_config_t *cfg, int *argc, char **argv, char *errstr, size_t errstr_size)
{
    int rc = MW_OK;
    const char *file = getenv("MW_CONFIG");
    mw_config_init(cfg);

    /* The file comes first, so find --config before applying other flags. */
    for (int i = 1; i < *argc && strcmp(argv[i], "--") != 0; i++) {
        if (strncmp(argv[i], "--config=", 9) == 0) {
            file = argv[i] + 9;
        } else if (strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= *argc) {
                rc = mw_errf(MW_EINVAL, errstr, errstr_size, "--config needs a file name");
                goto out_fail;
            }
            file = argv[++i];
        }
    }
    if (file != NULL && *file != '\0' &&
        (rc = mw_config_load_file(cfg, file, errstr, errstr_size)) != MW_OK)
        goto out_fail;
    if ((rc = mw_config_load_env(cfg, errstr, errstr_size)) != MW_OK)
        goto out_fail;

    int out = 1;
    for (int i = 1; i < *argc; i++) {
        char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            while (i < *argc)
                argv[out++] = argv[i++];
            break;
        }
        if (strncmp(a, "--config=", 9) == 0)
            continue;
        if (strcmp(a, "--config") == 0) {
            i++;
            continue;
        }
        const char *eq = strchr(a, '=');
        const char *dot = strchr(a, '.');
        if (strncmp(a, "--", 2) != 0 || dot == NULL || (eq != NULL && dot > eq)) {
            argv[out++] = a;
            continue;
        }
        if (eq == NULL) {
            rc = mw_errf(MW_EINVAL, errstr, errstr_size, "flag %s needs a value: %s=VALUE", a, a);
            goto out_fail;
        }
        char key[256];
        snprintf(key, sizeof(key), "%.*s", (int)(eq - a - 2), a + 2);
        char origin[300];
        snprintf(origin, sizeof(origin), "flag --%s", key);
        if ((rc = mw_config_set(cfg, key, eq + 1, origin, errstr, errstr_size)) != MW_OK)
            goto out_fail;
    }
    *argc = out;
    argv[out] = NULL;
    if ((rc = check_kafka(cfg, errstr, errstr_size)) != MW_OK)
        goto out_fail;
    return MW_OK;

out_fail:
    mw_config_fini(cfg);
    return rc;
}

const char *mw_config_kafka_get(const mw_config_t *cfg, const char *property)
{
    for (size_t i = cfg->kafka_count; i-- > 0;)
        if (strcmp(cfg->kafka[i].key, property) == 0)
            return cfg->kafka[i].value;
    return NULL;
}

/* ---------------------------------------------------------------- output */

static void format_range(const struct cfg_key *k, char *buf, size_t size)
{
    if (k->type == CFG_INT)
        snprintf(buf, size, "%lld..%lld", (long long)k->min, (long long)k->max);
    else
        snprintf(buf, size, "%s", "");
}

void mw_config_print_help(FILE *out, int markdown)
{
    char env[128], range[64];
    if (markdown) {
        fprintf(out, "| key | type | default | range | environment | description |\n");
        fprintf(out, "| --- | --- | --- | --- | --- | --- |\n");
    }
    for (size_t i = 0; i < NKEYS; i++) {
        const struct cfg_key *k = &keys[i];
        env_name(k->key, env, sizeof(env));
        format_range(k, range, sizeof(range));
        if (markdown)
            fprintf(out, "| `%s` | %s | `%s` | %s | `%s` | %s |\n", k->key, type_name(k), k->def,
                    range, env, k->doc);
        else
            fprintf(out, "  --%s=%s\n      %s (default '%s'%s%s; env %s)\n", k->key, type_name(k),
                    k->doc, k->def, *range ? ", range " : "", range, env);
    }
    if (markdown)
        fprintf(out, "| `kafka.*` | string | | | `MW_KAFKA_*` | passed unchanged to "
                     "librdkafka, e.g. `kafka.bootstrap.servers` |\n");
    else
        fprintf(out, "  --kafka.<property>=VALUE\n      any librdkafka property, passed "
                     "unchanged (env MW_KAFKA_<PROPERTY> with '.' as '_')\n");
}

void mw_config_print(const mw_config_t *cfg, FILE *out)
{
    for (size_t i = 0; i < NKEYS; i++) {
        const struct cfg_key *k = &keys[i];
        const char *field = (const char *)cfg + k->offset;
        int64_t n;
        switch (k->type) {
        case CFG_STR:
        case CFG_ENUM:
            fprintf(out, "%s=%s\n", k->key, k->secret && *field ? "********" : field);
            break;
        case CFG_INT:
            memcpy(&n, field, sizeof(n));
            fprintf(out, "%s=%lld\n", k->key, (long long)n);
            break;
        case CFG_BOOL:
            memcpy(&n, field, sizeof(n));
            fprintf(out, "%s=%s\n", k->key, n ? "true" : "false");
            break;
        }
    }
    for (size_t i = 0; i < cfg->kafka_count; i++) {
        int secret = strstr(cfg->kafka[i].key, "password") || strstr(cfg->kafka[i].key, "secret");
        fprintf(out, "kafka.%s=%s\n", cfg->kafka[i].key, secret ? "********" : cfg->kafka[i].value);
    }
}
