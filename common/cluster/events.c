/* Event stream: XADD with an approximate cap, XRANGE/XREVRANGE/XREAD to read back. */
#include "events.h"

#include "err.h"
#include "keys.h"
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FIELDS 16

int mw_events_add(mw_redis_t *r, int64_t maxlen, const char *type, ...)
{
    char key[MW_KEY_MAX], cap[24];
    const char *argv[8 + 2 * MAX_FIELDS];
    int argc = 0;
    mw_key(r, MW_KEY_EVENTS, key, sizeof(key));
    snprintf(cap, sizeof(cap), "%lld", (long long)maxlen);
    argv[argc++] = "XADD";
    argv[argc++] = key;
    argv[argc++] = "MAXLEN";
    argv[argc++] = "~";
    argv[argc++] = cap;
    argv[argc++] = "*";
    argv[argc++] = "type";
    argv[argc++] = type;
    va_list ap;
    va_start(ap, type);
    for (int i = 0; i < MAX_FIELDS; i++) {
        const char *k = va_arg(ap, const char *);
        if (k == NULL)
            break;
        const char *v = va_arg(ap, const char *);
        argv[argc++] = k;
        argv[argc++] = v ? v : "";
    }
    va_end(ap);
    int rc = mw_redis_argv(r, NULL, argc, argv, NULL);
    if (rc != MW_OK)
        mw_log(MW_LOG_DEBUG, "events", "event %s not recorded: %s", type, mw_redis_errstr(r));
    return rc;
}

static void parse_entry(const redisReply *e, mw_event_t *ev)
{
    memset(ev, 0, sizeof(*ev));
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2)
        return;
    snprintf(ev->id, sizeof(ev->id), "%s", e->element[0]->str ? e->element[0]->str : "");
    ev->ms = strtoll(ev->id, NULL, 10);
    const redisReply *f = e->element[1];
    size_t len = 0;
    for (size_t i = 0; f->type == REDIS_REPLY_ARRAY && i + 1 < f->elements; i += 2) {
        const char *k = f->element[i]->str, *v = f->element[i + 1]->str;
        if (k == NULL || v == NULL)
            continue;
        if (strcmp(k, "type") == 0)
            snprintf(ev->type, sizeof(ev->type), "%s", v);
        else if (strcmp(k, "worker") == 0)
            snprintf(ev->worker, sizeof(ev->worker), "%s", v);
        else if (len < sizeof(ev->text) - 1) {
            int n =
                snprintf(ev->text + len, sizeof(ev->text) - len, "%s%s=%s", len ? " " : "", k, v);
            len = n < 0 ? len : len + (size_t)n;
            if (len >= sizeof(ev->text))
                len = sizeof(ev->text) - 1;
        }
    }
}

int mw_events_read(mw_redis_t *r, const char *after_id, size_t count, int64_t block_ms,
                   mw_event_t **out, size_t *n, char *last_id, size_t last_id_size)
{
    char key[MW_KEY_MAX];
    mw_key(r, MW_KEY_EVENTS, key, sizeof(key));
    *out = NULL;
    *n = 0;
    redisReply *reply = NULL;
    int rc;
    const redisReply *entries = NULL;
    int reverse = 0;
    if (after_id == NULL || after_id[0] == '\0') {
        rc = mw_redis_cmd(r, &reply, "XREVRANGE %s + - COUNT %d", key, (int)count);
        entries = reply;
        reverse = 1;
    } else if (block_ms > 0) {
        rc = mw_redis_cmd(r, &reply, "XREAD COUNT %d BLOCK %lld STREAMS %s %s", (int)count,
                          (long long)block_ms, key, after_id);
        if (rc == MW_OK && reply->type == REDIS_REPLY_ARRAY && reply->elements == 1 &&
            reply->element[0]->elements == 2)
            entries = reply->element[0]->element[1];
    } else {
        char from[48];
        snprintf(from, sizeof(from), "(%s", after_id);
        rc = mw_redis_cmd(r, &reply, "XRANGE %s %s + COUNT %d", key, from, (int)count);
        entries = reply;
    }
    if (rc != MW_OK)
        return rc;
    if (entries != NULL && entries->type == REDIS_REPLY_ARRAY && entries->elements > 0) {
        *out = calloc(entries->elements, sizeof(**out));
        if (*out == NULL) {
            freeReplyObject(reply);
            return MW_ENOMEM;
        }
        for (size_t i = 0; i < entries->elements; i++)
            parse_entry(entries->element[reverse ? entries->elements - 1 - i : i], &(*out)[i]);
        *n = entries->elements;
        if (last_id != NULL)
            snprintf(last_id, last_id_size, "%s", (*out)[*n - 1].id);
    }
    freeReplyObject(reply);
    return MW_OK;
}
