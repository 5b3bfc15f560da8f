/* The data plane's header frame: what travels in front of every batch's
 * activation and every abort between two workers (DESIGN §2). A pure codec, no I/O. */
#ifndef MW_HOP_H
#define MW_HOP_H

#include "model/tensor.h"

#include <stddef.h>
#include <stdint.h>

#define MW_HOP_ORIGIN_MAX 64 /* origin worker id, with the NUL */

typedef enum {
    MW_HOP_TENSOR = 1, /* a tensor frame of `nbytes` follows on the same world */
    MW_HOP_ABORT = 2,  /* the batch failed downstream; no tensor follows */
} mw_hop_type_t;

/* One batch's identity and its tensor's description. A batch is one dispatch
 * of some of an origin's requests, their rows stacked in one tensor; it is
 * named by (origin, incarnation, batch) and never dispatched twice: a request
 * whose batch failed goes out again in a new batch. Which requests a batch
 * holds, at which rows and attempts, only the origin needs to know. */
typedef struct mw_hop {
    mw_hop_type_t type;
    int stage;                      /* stage that produced the tensor / sent the abort */
    char origin[MW_HOP_ORIGIN_MAX]; /* worker id of the origin */
    uint64_t incarnation;           /* the origin process's random start id */
    uint64_t batch;                 /* origin-local batch number */
    uint32_t nrequests;             /* requests in the batch (>= 1; for logs and checks) */
    mw_tensor_desc_t desc;          /* TENSOR: the tensor that follows */
    uint64_t nbytes;                /* TENSOR: its size in bytes */
} mw_hop_t;

/* Encodes hop into buf (capacity size); returns the length, or a negative
 * MW_E* (MW_ETOOBIG when it does not fit, MW_EINVAL for a bad field). */
int mw_hop_encode(const mw_hop_t *hop, uint8_t *buf, size_t size);

/* Decodes and validates a frame: MW_EPROTO with errstr for anything malformed
 * (bad magic or version, unknown type, no requests, bad dtype or shape, nbytes
 * not matching the shape, trailing bytes). */
int mw_hop_decode(mw_hop_t *hop, const uint8_t *buf, size_t len, char *errstr, size_t errstr_size);

#endif
