/* World rendezvous through Redis (DESIGN §4): rank 0 of a world publishes, at
 * mw:{cluster}:world:{name}:{epoch}, the record a joiner needs: its listen
 * address, the world's one-time secret and backend data (the NCCL unique id).
 * The record is text: "v1 addr=HOST:PORT secret=HEX [nccl=HEX]". */
#ifndef MW_RENDEZVOUS_H
#define MW_RENDEZVOUS_H

#include "redis.h"

#include <stddef.h>
#include <stdint.h>

#define MW_RDV_SECRET_BYTES 32
#define MW_RDV_EXTRA_MAX    512 /* bytes of backend data */
#define MW_RDV_RECORD_MAX   (256 + 2 * MW_RDV_EXTRA_MAX)

typedef struct mw_rdv_record {
    char addr[129];
    uint8_t secret[MW_RDV_SECRET_BYTES];
    uint8_t nccl[MW_RDV_EXTRA_MAX]; /* backend data (binary), nccl_len bytes */
    size_t nccl_len;
} mw_rdv_record_t;

/* Formats rec as the record text into buf; returns its length or MW_ETOOBIG. */
int mw_rdv_record_format(const mw_rdv_record_t *rec, char *buf, size_t size);

/* Parses record text; MW_EPROTO with errstr for anything malformed. */
int mw_rdv_record_parse(const char *text, size_t len, mw_rdv_record_t *rec, char *errstr,
                        size_t errstr_size);

/* The key "mw:{cluster}:world:{name}:{epoch}" into buf. */
void mw_rdv_key(const mw_redis_t *r, const char *name, int64_t epoch, char *buf, size_t size);

/* SET key record PX ttl_ms. */
int mw_rdv_publish(mw_redis_t *r, const char *name, int64_t epoch, const char *record,
                   int64_t ttl_ms);

/* GET key into buf (NUL-terminated); MW_ENOTFOUND when the key is absent,
 * MW_ETOOBIG when it does not fit, else mw_redis_argv's errors. */
int mw_rdv_fetch(mw_redis_t *r, const char *name, int64_t epoch, char *buf, size_t size);

/* DEL key. */
int mw_rdv_remove(mw_redis_t *r, const char *name, int64_t epoch);

#endif
