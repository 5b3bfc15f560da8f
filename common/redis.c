/* Redis client helper: timeouts, reconnection with backoff, scripts by SHA. */
#include "clock.h"
#include "redis.h"

#include "err.h"
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#define BACKOFF_START_MS 50

struct mw_redis {
    char host[MW_CFG_STR_MAX];
    int port;
    char password[MW_CFG_STR_MAX];
    int db;
    int64_t connect_timeout_ms;
    int64_t command_timeout_ms;
    int64_t retry_max_ms;
    char prefix[96];

    redisContext *ctx;
    int64_t backoff_ms;      /* 0 while connected or before the first failure */
    int64_t next_attempt_ms; /* monotonic time of the next connection attempt */
    int was_connected;       /* for logging transitions once, not every retry */
    char errstr[512];
};

static struct timeval tv_ms(int64_t ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    return tv;
}

static void drop_connection(mw_redis_t *r)
{
    if (r->ctx != NULL) {
        redisFree(r->ctx);
        r->ctx = NULL;
    }
}

static void schedule_retry(mw_redis_t *r)
{
    r->backoff_ms = r->backoff_ms == 0 ? BACKOFF_START_MS : r->backoff_ms * 2;
    if (r->backoff_ms > r->retry_max_ms)
        r->backoff_ms = r->retry_max_ms;
    r->next_attempt_ms = mw_now_ms() + r->backoff_ms;
}

/* Sends one preformatted command on the current connection; NULL reply means
 * the connection failed (r->ctx->errstr says why). */
static redisReply *roundtrip(mw_redis_t *r, const char *cmd, size_t len)
{
    redisReply *reply = NULL;
    if (redisAppendFormattedCommand(r->ctx, cmd, len) != REDIS_OK)
        return NULL;
    if (redisGetReply(r->ctx, (void **)&reply) != REDIS_OK)
        return NULL;
    return reply;
}

static int setup_session(mw_redis_t *r)
{
    char *cmd = NULL;
    int len;
    if (r->password[0] != '\0') {
        len = redisFormatCommand(&cmd, "AUTH %s", r->password);
        redisReply *reply = len > 0 ? roundtrip(r, cmd, (size_t)len) : NULL;
        free(cmd);
        if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
            snprintf(r->errstr, sizeof(r->errstr), "Redis AUTH failed: %s",
                     reply ? reply->str : r->ctx->errstr);
            freeReplyObject(reply);
            return MW_EREDIS;
        }
        freeReplyObject(reply);
    }
    if (r->db != 0) {
        len = redisFormatCommand(&cmd, "SELECT %d", r->db);
        redisReply *reply = len > 0 ? roundtrip(r, cmd, (size_t)len) : NULL;
        free(cmd);
        if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
            snprintf(r->errstr, sizeof(r->errstr), "Redis SELECT %d failed: %s", r->db,
                     reply ? reply->str : r->ctx->errstr);
            freeReplyObject(reply);
            return MW_EREDIS;
        }
        freeReplyObject(reply);
    }
    return MW_OK;
}

static int try_connect(mw_redis_t *r)
{
    if (mw_now_ms() < r->next_attempt_ms) {
        snprintf(r->errstr, sizeof(r->errstr),
                 "Redis %.200s:%d unreachable; next reconnection attempt in %lld ms", r->host,
                 r->port, (long long)(r->next_attempt_ms - mw_now_ms()));
        return MW_EUNAVAIL;
    }
    r->ctx = redisConnectWithTimeout(r->host, r->port, tv_ms(r->connect_timeout_ms));
    if (r->ctx == NULL || r->ctx->err) {
        snprintf(r->errstr, sizeof(r->errstr), "cannot connect to Redis %.200s:%d: %.200s", r->host,
                 r->port, r->ctx ? r->ctx->errstr : "out of memory");
        drop_connection(r);
        if (r->was_connected || r->backoff_ms == 0)
            mw_log(MW_LOG_WARN, "redis", "%s; retrying with backoff up to %lld ms", r->errstr,
                   (long long)r->retry_max_ms);
        r->was_connected = 0;
        schedule_retry(r);
        return MW_EUNAVAIL;
    }
    redisSetTimeout(r->ctx, tv_ms(r->command_timeout_ms));
    redisEnableKeepAlive(r->ctx);
    int rc = setup_session(r);
    if (rc != MW_OK) {
        mw_log(MW_LOG_ERROR, "redis", "%s", r->errstr);
        drop_connection(r);
        schedule_retry(r);
        return rc;
    }
    if (r->backoff_ms != 0)
        mw_log(MW_LOG_INFO, "redis", "reconnected to Redis %s:%d", r->host, r->port);
    r->was_connected = 1;
    r->backoff_ms = 0;
    r->next_attempt_ms = 0;
    return MW_OK;
}

mw_redis_t *mw_redis_new(const mw_config_t *cfg, int lazy, char *errstr, size_t errstr_size)
{
    mw_redis_t *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        mw_errf(MW_ENOMEM, errstr, errstr_size, "out of memory");
        return NULL;
    }
    snprintf(r->host, sizeof(r->host), "%s", cfg->redis_host);
    snprintf(r->password, sizeof(r->password), "%s", cfg->redis_password);
    snprintf(r->prefix, sizeof(r->prefix), "mw:%.63s:", cfg->cluster);
    r->port = (int)cfg->redis_port;
    r->db = (int)cfg->redis_db;
    r->connect_timeout_ms = cfg->redis_connect_timeout_ms;
    r->command_timeout_ms = cfg->redis_command_timeout_ms;
    r->retry_max_ms = cfg->redis_retry_max_ms;
    if (try_connect(r) != MW_OK && !lazy) {
        mw_errf(MW_EUNAVAIL, errstr, errstr_size, "%s", r->errstr);
        mw_redis_destroy(r);
        return NULL;
    }
    return r;
}

void mw_redis_destroy(mw_redis_t *r)
{
    if (r == NULL)
        return;
    drop_connection(r);
    free(r);
}

const char *mw_redis_prefix(const mw_redis_t *r)
{
    return r->prefix;
}
const char *mw_redis_errstr(const mw_redis_t *r)
{
    return r->errstr;
}
int mw_redis_connected(const mw_redis_t *r)
{
    return r->ctx != NULL;
}

/* Error replies of a server that is up but cannot serve yet: still loading its
 * data after a restart, running a script past its time limit, or a replica
 * that lost its master. The caller sees them as an outage, not as a failure
 * of its command. */
static int server_not_ready(const char *err)
{
    static const char *const prefixes[] = {"LOADING ", "BUSY ", "MASTERDOWN "};
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
        if (strncmp(err, prefixes[i], strlen(prefixes[i])) == 0)
            return 1;
    return 0;
}

/* Runs a preformatted command, reconnecting once at once when the connection
 * turns out to be broken (e.g. the server restarted since the last command). */
static int run_formatted(mw_redis_t *r, const char *cmd, size_t len, redisReply **out)
{
    redisReply *reply = NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (r->ctx == NULL) {
            int rc = try_connect(r);
            if (rc != MW_OK)
                return rc;
        }
        reply = roundtrip(r, cmd, len);
        if (reply != NULL)
            break;
        snprintf(r->errstr, sizeof(r->errstr), "Redis %.200s:%d connection lost: %.200s", r->host,
                 r->port, r->ctx->errstr);
        mw_log(MW_LOG_WARN, "redis", "%s", r->errstr);
        drop_connection(r);
    }
    if (reply == NULL) {
        schedule_retry(r);
        return MW_EUNAVAIL;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        int transient = server_not_ready(reply->str);
        snprintf(r->errstr, sizeof(r->errstr), "%s%.400s", transient ? "Redis not ready: " : "",
                 reply->str);
        freeReplyObject(reply);
        return transient ? MW_EUNAVAIL : MW_EREDIS;
    }
    if (out != NULL)
        *out = reply;
    else
        freeReplyObject(reply);
    return MW_OK;
}

int mw_redis_argv(mw_redis_t *r, redisReply **reply, int argc, const char **argv,
                  const size_t *argvlen)
{
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    if (len < 0) {
        snprintf(r->errstr, sizeof(r->errstr), "cannot format Redis command");
        return MW_ENOMEM;
    }
    int rc = run_formatted(r, cmd, (size_t)len, reply);
    free(cmd);
    return rc;
}

int mw_redis_cmd(mw_redis_t *r, redisReply **reply, const char *fmt, ...)
{
    char *cmd = NULL;
    va_list ap;
    va_start(ap, fmt);
    int len = redisvFormatCommand(&cmd, fmt, ap);
    va_end(ap);
    if (len < 0) {
        snprintf(r->errstr, sizeof(r->errstr), "cannot format Redis command '%s'", fmt);
        return MW_EINVAL;
    }
    int rc = run_formatted(r, cmd, (size_t)len, reply);
    free(cmd);
    return rc;
}

static int script_load(mw_redis_t *r, mw_redis_script_t *script)
{
    redisReply *reply = NULL;
    int rc = mw_redis_cmd(r, &reply, "SCRIPT LOAD %s", script->source);
    if (rc != MW_OK) {
        /* An unreachable server is logged once by the reconnection code, not per script. */
        mw_log(rc == MW_EUNAVAIL ? MW_LOG_DEBUG : MW_LOG_ERROR, "redis", "loading script %s: %s",
               script->name, r->errstr);
        return rc;
    }
    if (reply->type != REDIS_REPLY_STRING || reply->len != 40) {
        freeReplyObject(reply);
        snprintf(r->errstr, sizeof(r->errstr), "SCRIPT LOAD %s: unexpected reply", script->name);
        return MW_EPROTO;
    }
    memcpy(script->sha, reply->str, 40);
    script->sha[40] = '\0';
    freeReplyObject(reply);
    return MW_OK;
}

int mw_redis_eval(mw_redis_t *r, mw_redis_script_t *script, redisReply **reply, int nkeys,
                  const char **keys, int nargs, const char **args, const size_t *arglens)
{
    int argc = 3 + nkeys + nargs;
    const char **argv = calloc((size_t)argc, sizeof(*argv));
    size_t *lens = calloc((size_t)argc, sizeof(*lens));
    char numkeys[16];
    int rc = MW_ENOMEM;
    if (argv == NULL || lens == NULL)
        goto out_free;
    snprintf(numkeys, sizeof(numkeys), "%d", nkeys);
    argv[0] = "EVALSHA";
    argv[2] = numkeys;
    for (int i = 0; i < nkeys; i++)
        argv[3 + i] = keys[i];
    for (int i = 0; i < nargs; i++) {
        argv[3 + nkeys + i] = args[i];
        lens[3 + nkeys + i] = arglens ? arglens[i] : strlen(args[i]);
    }
    for (int i = 0; i < 3 + nkeys; i++)
        if (i != 1)
            lens[i] = strlen(argv[i]);

    for (int attempt = 0; attempt < 2; attempt++) {
        if (script->sha[0] == '\0' && (rc = script_load(r, script)) != MW_OK)
            goto out_free;
        argv[1] = script->sha;
        lens[1] = 40;
        rc = mw_redis_argv(r, reply, argc, argv, lens);
        if (rc != MW_EREDIS || strncmp(r->errstr, "NOSCRIPT", 8) != 0)
            break;
        /* The server lost its script cache (restart, SCRIPT FLUSH): load again. */
        mw_log(MW_LOG_INFO, "redis", "script %s not in the server's cache; reloading",
               script->name);
        script->sha[0] = '\0';
    }
out_free:
    free(argv);
    free(lens);
    return rc;
}
