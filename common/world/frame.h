/* World wire format: a fixed 24-byte frame header, typed metadata, then an
 * opaque payload. Every integer is little-endian. Used by the TCP backend (and
 * the NCCL backend's side channel) and fuzzed by tests/fuzz/fuzz_frame.c.
 *
 *   off size field
 *     0    4 magic       "MWF1"
 *     4    1 version     MW_FRAME_VERSION
 *     5    1 type        mw_frame_type_t
 *     6    2 flags       0
 *     8    4 meta_len    bytes of metadata after the header (<= MW_FRAME_META_MAX)
 *    12    4 seq         frame number on this connection, from 0 (detects desync)
 *    16    8 payload_len bytes of payload after the metadata
 *
 * Metadata per type: HELLO (hello meta), HELLO_ACK (u32 keepalive_ms the
 * acceptor wants), PING (none), PEERS (peer
 * address list), HEADER (none; payload <= MW_FRAME_HEADER_MAX), TENSOR (tensor
 * meta; payload = the tensor's bytes), COLL (collective meta + tensor meta), BYE
 * (none). */
#ifndef MW_FRAME_H
#define MW_FRAME_H

#include "model/tensor.h"

#include <stddef.h>
#include <stdint.h>

#define MW_FRAME_MAGIC       0x3146574Du /* "MWF1" read as little-endian u32 */
#define MW_FRAME_VERSION     1
#define MW_FRAME_HDR_SIZE    24
#define MW_FRAME_META_MAX    16384
#define MW_FRAME_HEADER_MAX  4096 /* payload of a HEADER frame */
#define MW_FRAME_SECRET_MAX  64
#define MW_FRAME_NAME_MAX    200
#define MW_FRAME_ADDR_MAX    128
#define MW_FRAME_PEERS_MAX   256 /* ranks in a PEERS frame, hence in a world */
#define MW_FRAME_TENSOR_META (4 + 8 * MW_TENSOR_MAX_DIMS)

typedef enum {
    MW_FRAME_HELLO = 1,     /* joiner -> acceptor: world, epoch, rank, secret, address */
    MW_FRAME_HELLO_ACK = 2, /* acceptor -> joiner: connection accepted */
    MW_FRAME_PEERS = 3,     /* rank 0 -> others: every rank's listen address */
    MW_FRAME_PING = 4,      /* keepalive */
    MW_FRAME_HEADER = 5,    /* opaque small frame (request metadata) */
    MW_FRAME_TENSOR = 6,    /* point-to-point tensor */
    MW_FRAME_COLL = 7,      /* one member's part of a collective */
    MW_FRAME_BYE = 8,       /* the sender leaves the world in order (after its last frame) */
    MW_FRAME_TYPE_MAX = 8,
} mw_frame_type_t;

typedef enum {
    MW_COLL_BROADCAST = 1,
    MW_COLL_ALL_REDUCE = 2,
    MW_COLL_BARRIER = 3,
} mw_coll_kind_t;

typedef struct mw_frame_hdr {
    uint8_t version;
    uint8_t type;
    uint16_t flags;
    uint32_t meta_len;
    uint32_t seq;
    uint64_t payload_len;
} mw_frame_hdr_t;

typedef struct mw_frame_hello {
    int64_t epoch;
    uint32_t size;
    uint32_t rank;
    uint32_t keepalive_ms; /* the longest silence the sender tolerates / 3: ping it this often */
    uint8_t secret_len;
    uint8_t secret[MW_FRAME_SECRET_MAX];
    char name[MW_FRAME_NAME_MAX + 1];
    char addr[MW_FRAME_ADDR_MAX + 1]; /* the sender's listen address "host:port" */
} mw_frame_hello_t;

typedef struct mw_frame_coll {
    uint32_t seq;  /* the world's collective number, identical on every member */
    uint8_t kind;  /* mw_coll_kind_t */
    uint8_t redop; /* reduction for ALL_REDUCE (mw_reduce_op_t of world.h), else 0 */
    mw_tensor_desc_t desc;
} mw_frame_coll_t;

/* Writes h into out (MW_FRAME_HDR_SIZE bytes) with the magic. */
void mw_frame_hdr_encode(const mw_frame_hdr_t *h, uint8_t *out);

/* Decodes and checks a header: magic, version, known type, zero flags,
 * meta_len <= MW_FRAME_META_MAX and within the type's bounds, and payload_len
 * within the type's bounds (HEADER: MW_FRAME_HEADER_MAX; TENSOR and COLL:
 * max_payload; others: 0). len must be >= MW_FRAME_HDR_SIZE. Returns 0,
 * MW_EPROTO (malformed) or MW_ETOOBIG (payload over the limit), with errstr. */
int mw_frame_hdr_decode(const uint8_t *buf, size_t len, uint64_t max_payload, mw_frame_hdr_t *h,
                        char *errstr, size_t errstr_size);

/* Tensor metadata: dtype u8, ndim u8, 2 reserved bytes, ndim x i64 dims.
 * encode returns the length written (out needs MW_FRAME_TENSOR_META bytes), or
 * MW_EINVAL for an invalid desc. decode checks the dtype, dims and that the
 * whole meta was used, and returns the tensor's byte size in *nbytes. */
int mw_frame_tensor_meta_encode(const mw_tensor_desc_t *desc, uint8_t *out);
int mw_frame_tensor_meta_decode(const uint8_t *meta, size_t len, mw_tensor_desc_t *desc,
                                uint64_t *nbytes, char *errstr, size_t errstr_size);

/* Collective metadata: seq u32, kind u8, redop u8, 2 reserved, tensor meta. */
int mw_frame_coll_meta_encode(const mw_frame_coll_t *c, uint8_t *out);
int mw_frame_coll_meta_decode(const uint8_t *meta, size_t len, mw_frame_coll_t *c, uint64_t *nbytes,
                              char *errstr, size_t errstr_size);

/* Hello metadata. encode returns the length written, or MW_EINVAL / MW_ETOOBIG. */
int mw_frame_hello_encode(const mw_frame_hello_t *hello, uint8_t *out, size_t cap);
int mw_frame_hello_decode(const uint8_t *meta, size_t len, mw_frame_hello_t *hello, char *errstr,
                          size_t errstr_size);

/* Peers metadata: count u16, then per rank addr_len u8 + addr. addrs[i] are
 * NUL-terminated strings; decode fills up to max entries of
 * MW_FRAME_ADDR_MAX + 1 bytes each and returns the count. */
int mw_frame_peers_encode(const char *const *addrs, int count, uint8_t *out, size_t cap);
int mw_frame_peers_decode(const uint8_t *meta, size_t len, char (*addrs)[MW_FRAME_ADDR_MAX + 1],
                          int max, char *errstr, size_t errstr_size);

/* Checks the metadata of a decoded header against its type (and, for TENSOR
 * and COLL, that the tensor's size equals payload_len). The fuzzer's entry
 * point for "is this a well-formed frame". */
int mw_frame_check(const mw_frame_hdr_t *h, const uint8_t *meta, char *errstr, size_t errstr_size);

/* "HELLO", "TENSOR", ... or "unknown". */
const char *mw_frame_type_name(int type);

#endif
