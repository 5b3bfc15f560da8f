/* Plan reads: GET plan:version for polling, GET plan + decode for the real thing. */
#include "planstore.h"

#include "err.h"
#include "keys.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int mw_planstore_version(mw_redis_t *r, int64_t *epoch, int64_t *version)
{
    char key[MW_KEY_MAX];
    redisReply *reply = NULL;
    *epoch = *version = 0;
    int rc = mw_redis_cmd(r, &reply, "GET %s", mw_key(r, MW_KEY_PLAN_VERSION, key, sizeof(key)));
    if (rc != MW_OK)
        return rc;
    if (reply->type == REDIS_REPLY_STRING) {
        long long e = 0, v = 0;
        if (sscanf(reply->str, "%lld:%lld", &e, &v) != 2)
            rc = MW_EPROTO;
        *epoch = e;
        *version = v;
    }
    freeReplyObject(reply);
    return rc;
}

int mw_planstore_read(mw_redis_t *r, mw_plan_t **out, char *errstr, size_t errstr_size)
{
    char key[MW_KEY_MAX];
    redisReply *reply = NULL;
    *out = NULL;
    int rc = mw_redis_cmd(r, &reply, "GET %s", mw_key(r, MW_KEY_PLAN, key, sizeof(key)));
    if (rc != MW_OK)
        return mw_errf(rc, errstr, errstr_size, "%s", mw_redis_errstr(r));
    if (reply->type == REDIS_REPLY_STRING)
        rc = mw_plan_decode(reply->str, reply->len, out, errstr, errstr_size);
    freeReplyObject(reply);
    return rc;
}
