/* World rendezvous records in Redis (see rendezvous.h). */
#include "rendezvous.h"

#include "err.h"

#include <stdio.h>
#include <string.h>

static const char hexdig[] = "0123456789abcdef";

static size_t hex_encode(const uint8_t *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hexdig[in[i] >> 4];
        out[2 * i + 1] = hexdig[in[i] & 15];
    }
    out[2 * n] = '\0';
    return 2 * n;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes exactly n hex chars into n/2 bytes; -1 on a bad digit. */
static int hex_decode(const char *in, size_t n, uint8_t *out)
{
    for (size_t i = 0; i + 1 < n; i += 2) {
        int hi = hexval(in[i]), lo = hexval(in[i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i / 2] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

int mw_rdv_record_format(const mw_rdv_record_t *rec, char *buf, size_t size)
{
    char secret[2 * MW_RDV_SECRET_BYTES + 1];
    char nccl[2 * MW_RDV_EXTRA_MAX + 1];
    if (rec->nccl_len > MW_RDV_EXTRA_MAX)
        return MW_ETOOBIG;
    hex_encode(rec->secret, MW_RDV_SECRET_BYTES, secret);
    hex_encode(rec->nccl, rec->nccl_len, nccl);
    int n = snprintf(buf, size, "v1 addr=%s secret=%s%s%s", rec->addr, secret,
                     rec->nccl_len ? " nccl=" : "", nccl);
    return n < 0 || (size_t)n >= size ? MW_ETOOBIG : n;
}

int mw_rdv_record_parse(const char *text, size_t len, mw_rdv_record_t *rec, char *errstr,
                        size_t errstr_size)
{
    int have_addr = 0, have_secret = 0;
    memset(rec, 0, sizeof(*rec));
    if (len < 3 || memcmp(text, "v1 ", 3) != 0)
        return mw_errf(MW_EPROTO, errstr, errstr_size, "rendezvous record is not v1");
    size_t i = 3;
    while (i < len) {
        size_t start = i;
        while (i < len && text[i] != ' ')
            i++;
        const char *tok = text + start;
        size_t tlen = i - start;
        if (i < len)
            i++;
        const char *eq = memchr(tok, '=', tlen);
        if (eq == NULL)
            continue; /* tolerate unknown bare words from later versions */
        size_t klen = (size_t)(eq - tok), vlen = tlen - klen - 1;
        const char *val = eq + 1;
        if (klen == 4 && memcmp(tok, "addr", 4) == 0) {
            if (vlen == 0 || vlen >= sizeof(rec->addr))
                return mw_errf(MW_EPROTO, errstr, errstr_size, "rendezvous addr too long");
            memcpy(rec->addr, val, vlen);
            rec->addr[vlen] = '\0';
            have_addr = 1;
        } else if (klen == 6 && memcmp(tok, "secret", 6) == 0) {
            if (vlen != 2 * MW_RDV_SECRET_BYTES || hex_decode(val, vlen, rec->secret) != 0)
                return mw_errf(MW_EPROTO, errstr, errstr_size, "rendezvous secret malformed");
            have_secret = 1;
        } else if (klen == 4 && memcmp(tok, "nccl", 4) == 0) {
            if (vlen % 2 != 0 || vlen > 2 * MW_RDV_EXTRA_MAX ||
                hex_decode(val, vlen, rec->nccl) != 0)
                return mw_errf(MW_EPROTO, errstr, errstr_size, "rendezvous nccl id malformed");
            rec->nccl_len = vlen / 2;
        }
    }
    if (!have_addr || !have_secret)
        return mw_errf(MW_EPROTO, errstr, errstr_size, "rendezvous record lacks %s",
                       have_addr ? "secret" : "addr");
    return MW_OK;
}

void mw_rdv_key(const mw_redis_t *r, const char *name, int64_t epoch, char *buf, size_t size)
{
    snprintf(buf, size, "%sworld:%s:%lld", mw_redis_prefix(r), name, (long long)epoch);
}

int mw_rdv_publish(mw_redis_t *r, const char *name, int64_t epoch, const char *record,
                   int64_t ttl_ms)
{
    char key[512], ttl[32];
    mw_rdv_key(r, name, epoch, key, sizeof(key));
    snprintf(ttl, sizeof(ttl), "%lld", (long long)(ttl_ms > 0 ? ttl_ms : 1));
    const char *argv[] = {"SET", key, record, "PX", ttl};
    return mw_redis_argv(r, NULL, 5, argv, NULL);
}

int mw_rdv_fetch(mw_redis_t *r, const char *name, int64_t epoch, char *buf, size_t size)
{
    char key[512];
    redisReply *reply = NULL;
    mw_rdv_key(r, name, epoch, key, sizeof(key));
    const char *argv[] = {"GET", key};
    int rc = mw_redis_argv(r, &reply, 2, argv, NULL);
    if (rc != MW_OK)
        return rc;
    if (reply->type == REDIS_REPLY_NIL) {
        rc = MW_ENOTFOUND;
    } else if (reply->type != REDIS_REPLY_STRING) {
        rc = MW_EREDIS;
    } else if ((size_t)reply->len >= size) {
        rc = MW_ETOOBIG;
    } else {
        memcpy(buf, reply->str, (size_t)reply->len);
        buf[reply->len] = '\0';
    }
    freeReplyObject(reply);
    return rc;
}

int mw_rdv_remove(mw_redis_t *r, const char *name, int64_t epoch)
{
    char key[512];
    mw_rdv_key(r, name, epoch, key, sizeof(key));
    const char *argv[] = {"DEL", key};
    return mw_redis_argv(r, NULL, 2, argv, NULL);
}
