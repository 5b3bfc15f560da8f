/* Redis client helper: connect with a timeout, reconnect with backoff,
 * binary-safe argv commands, Lua scripts by SHA with reload on NOSCRIPT.
 * Works with hiredis 0.14 and 1.x. A mw_redis_t is used by one thread at a time. */
#ifndef MW_REDIS_H
#define MW_REDIS_H

#include "config.h"

#include <hiredis/hiredis.h>
#include <stddef.h>

typedef struct mw_redis mw_redis_t;

/* A Lua script; sha is filled on first use. Define as a static. */
typedef struct mw_redis_script {
    const char *name; /* for logs */
    const char *source;
    char sha[41];
} mw_redis_script_t;

/* Creates a client for cfg's redis.* keys and connects. When the server does not
 * answer, returns NULL with errstr set unless lazy is 1, in which case the
 * handle is returned and the first command connects. Caller frees with
 * mw_redis_destroy. cfg is copied. */
mw_redis_t *mw_redis_new(const mw_config_t *cfg, int lazy, char *errstr, size_t errstr_size);
void mw_redis_destroy(mw_redis_t *r);

/* The key prefix "mw:{cluster}:" for cfg. */
const char *mw_redis_prefix(const mw_redis_t *r);

/* Runs one command. On success *reply (if reply is not NULL) holds the reply,
 * which the caller frees with freeReplyObject; an error reply returns MW_EREDIS
 * with its text in mw_redis_errstr() and no reply. A broken connection is
 * reconnected once at once and the command retried; when Redis stays
 * unreachable the call returns MW_EUNAVAIL and later calls wait out an
 * exponential backoff (up to redis.retry_max_ms) before trying again. A server
 * that answers but cannot serve yet (LOADING after a restart, BUSY, MASTERDOWN)
 * also yields MW_EUNAVAIL, with its reply in mw_redis_errstr(). */
int mw_redis_argv(mw_redis_t *r, redisReply **reply, int argc, const char **argv,
                  const size_t *argvlen);

/* printf-like form of mw_redis_argv using hiredis's format (%s, %b, %d ...). */
int mw_redis_cmd(mw_redis_t *r, redisReply **reply, const char *fmt, ...);

/* EVALSHA with a reload (SCRIPT LOAD) when the server answers NOSCRIPT.
 * keys and args are binary-safe (lengths given, or NULL lens for C strings). */
int mw_redis_eval(mw_redis_t *r, mw_redis_script_t *script, redisReply **reply, int nkeys,
                  const char **keys, int nargs, const char **args, const size_t *arglens);

/* Last error text of this handle (never NULL). */
const char *mw_redis_errstr(const mw_redis_t *r);

/* 1 when the last command reached Redis. */
int mw_redis_connected(const mw_redis_t *r);

#endif
