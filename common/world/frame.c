/* World wire format: encoding and strict, bounds-checked decoding (see frame.h). */
#include "frame.h"

#include "bytes.h"
#include "err.h"

#include <string.h>

const char *mw_frame_type_name(int type)
{
    switch (type) {
    case MW_FRAME_HELLO:
        return "HELLO";
    case MW_FRAME_HELLO_ACK:
        return "HELLO_ACK";
    case MW_FRAME_PEERS:
        return "PEERS";
    case MW_FRAME_PING:
        return "PING";
    case MW_FRAME_HEADER:
        return "HEADER";
    case MW_FRAME_TENSOR:
        return "TENSOR";
    case MW_FRAME_COLL:
        return "COLL";
    case MW_FRAME_BYE:
        return "BYE";
    default:
        return "unknown";
    }
}

void mw_frame_hdr_encode(const mw_frame_hdr_t *h, uint8_t *out)
{
    mw_le32_put(out, MW_FRAME_MAGIC);
    out[4] = h->version;
    out[5] = h->type;
    mw_le16_put(out + 6, h->flags);
    mw_le32_put(out + 8, h->meta_len);
    mw_le32_put(out + 12, h->seq);
    mw_le64_put(out + 16, h->payload_len);
}

int mw_frame_hdr_decode(const uint8_t *buf, size_t len, uint64_t max_payload, mw_frame_hdr_t *h,
                        char *errstr, size_t errstr_size)
{
    if (len < MW_FRAME_HDR_SIZE)
        return mw_errf(MW_EPROTO, errstr, errstr_size, "truncated frame header (%zu bytes)", len);
    uint32_t magic = mw_le32_get(buf);
    if (magic != MW_FRAME_MAGIC)
        return mw_errf(MW_EPROTO, errstr, errstr_size, "bad frame magic 0x%08x", magic);
    h->version = buf[4];
    h->type = buf[5];
    h->flags = mw_le16_get(buf + 6);
    h->meta_len = mw_le32_get(buf + 8);
    h->seq = mw_le32_get(buf + 12);
    h->payload_len = mw_le64_get(buf + 16);
    if (h->version != MW_FRAME_VERSION)
        return mw_errf(MW_EPROTO, errstr, errstr_size, "unsupported frame version %u (want %u)",
                       h->version, MW_FRAME_VERSION);
    if (h->type < 1 || h->type > MW_FRAME_TYPE_MAX)
        return mw_errf(MW_EPROTO, errstr, errstr_size, "unknown frame type %u", h->type);
    if (h->flags != 0)
        return mw_errf(MW_EPROTO, errstr, errstr_size, "%s frame with unknown flags 0x%x",
                       mw_frame_type_name(h->type), h->flags);
    uint32_t meta_min = 0, meta_max = 0;
    uint64_t payload_max = 0;
    switch (h->type) {
    case MW_FRAME_HELLO:
        meta_min = 24;
        meta_max = MW_FRAME_META_MAX;
        break;
    case MW_FRAME_HELLO_ACK:
        meta_min = meta_max = 4;
        break;
    case MW_FRAME_PEERS:
        meta_min = 2;
        meta_max = MW_FRAME_META_MAX;
        break;
    case MW_FRAME_HEADER:
        payload_max = MW_FRAME_HEADER_MAX;
        break;
    case MW_FRAME_TENSOR:
        meta_min = 4;
        meta_max = MW_FRAME_TENSOR_META;
        payload_max = max_payload;
        break;
    case MW_FRAME_COLL:
        meta_min = 8 + 4;
        meta_max = 8 + MW_FRAME_TENSOR_META;
        payload_max = max_payload;
        break;
    default: /* PING, BYE */
        break;
    }
    if (h->meta_len < meta_min || h->meta_len > meta_max)
        return mw_errf(MW_EPROTO, errstr, errstr_size,
                       "%s frame with metadata length %u (allowed %u..%u)",
                       mw_frame_type_name(h->type), h->meta_len, meta_min, meta_max);
    if (h->payload_len > payload_max)
        return mw_errf(payload_max > 0 ? MW_ETOOBIG : MW_EPROTO, errstr, errstr_size,
                       "%s frame payload of %llu bytes exceeds the limit of %llu bytes",
                       mw_frame_type_name(h->type), (unsigned long long)h->payload_len,
                       (unsigned long long)payload_max);
    return MW_OK;
}

int mw_frame_tensor_meta_encode(const mw_tensor_desc_t *desc, uint8_t *out)
{
    uint64_t nbytes;
    if (mw_tensor_nbytes(desc, &nbytes) != MW_OK)
        return MW_EINVAL;
    out[0] = (uint8_t)desc->dtype;
    out[1] = (uint8_t)desc->ndim;
    out[2] = out[3] = 0;
    for (int i = 0; i < desc->ndim; i++)
        mw_le64_put(out + 4 + 8 * i, (uint64_t)desc->shape[i]);
    return 4 + 8 * desc->ndim;
}

int mw_frame_tensor_meta_decode(const uint8_t *meta, size_t len, mw_tensor_desc_t *desc,
                                uint64_t *nbytes, char *errstr, size_t errstr_size)
{
    if (len < 4)
        return mw_errf(MW_EPROTO, errstr, errstr_size, "truncated tensor metadata");
    if (meta[0] >= MW_DTYPE_COUNT)
        return mw_errf(MW_EPROTO, errstr, errstr_size, "unknown tensor dtype %u", meta[0]);
    if (meta[1] > MW_TENSOR_MAX_DIMS)
        return mw_errf(MW_EPROTO, errstr, errstr_size, "tensor with %u dimensions (max %d)",
                       meta[1], MW_TENSOR_MAX_DIMS);
    if (meta[2] != 0 || meta[3] != 0)
        return mw_errf(MW_EPROTO, errstr, errstr_size, "tensor metadata reserved bytes set");
    if (len != 4 + 8 * (size_t)meta[1])
        return mw_errf(MW_EPROTO, errstr, errstr_size,
                       "tensor metadata of %zu bytes for %u dimensions", len, meta[1]);
    memset(desc, 0, sizeof(*desc));
    desc->dtype = (mw_dtype_t)meta[0];
    desc->ndim = meta[1];
    for (int i = 0; i < desc->ndim; i++) {
        uint64_t d = mw_le64_get(meta + 4 + 8 * i);
        if (d == 0 || d > (uint64_t)INT64_MAX)
            return mw_errf(MW_EPROTO, errstr, errstr_size, "tensor dimension %d is %llu", i,
                           (unsigned long long)d);
        desc->shape[i] = (int64_t)d;
    }
    if (mw_tensor_nbytes(desc, nbytes) != MW_OK)
        return mw_errf(MW_EPROTO, errstr, errstr_size, "tensor shape overflows");
    return MW_OK;
}

int mw_frame_coll_meta_encode(const mw_frame_coll_t *c, uint8_t *out)
{
    mw_le32_put(out, c->seq);
    out[4] = c->kind;
    out[5] = c->redop;
    out[6] = out[7] = 0;
    int n = mw_frame_tensor_meta_encode(&c->desc, out + 8);
    return n < 0 ? n : 8 + n;
}

int mw_frame_coll_meta_decode(const uint8_t *meta, size_t len, mw_frame_coll_t *c, uint64_t *nbytes,
                              char *errstr, size_t errstr_size)
{
    if (len < 8)
        return mw_errf(MW_EPROTO, errstr, errstr_size, "truncated collective metadata");
    c->seq = mw_le32_get(meta);
    c->kind = meta[4];
    c->redop = meta[5];
    if (c->kind < MW_COLL_BROADCAST || c->kind > MW_COLL_BARRIER)
        return mw_errf(MW_EPROTO, errstr, errstr_size, "unknown collective kind %u", c->kind);
    if (c->redop > 1 || (c->redop != 0 && c->kind != MW_COLL_ALL_REDUCE))
        return mw_errf(MW_EPROTO, errstr, errstr_size, "bad reduction %u", c->redop);
    if (meta[6] != 0 || meta[7] != 0)
        return mw_errf(MW_EPROTO, errstr, errstr_size, "collective metadata reserved bytes set");
    return mw_frame_tensor_meta_decode(meta + 8, len - 8, &c->desc, nbytes, errstr, errstr_size);
}

int mw_frame_hello_encode(const mw_frame_hello_t *hello, uint8_t *out, size_t cap)
{
    size_t name_len = strnlen(hello->name, sizeof(hello->name));
    size_t addr_len = strnlen(hello->addr, sizeof(hello->addr));
    if (name_len == 0 || name_len > MW_FRAME_NAME_MAX || addr_len > MW_FRAME_ADDR_MAX ||
        hello->secret_len > MW_FRAME_SECRET_MAX)
        return MW_EINVAL;
    size_t need = 8 + 4 + 4 + 4 + 1 + hello->secret_len + 2 + name_len + 1 + addr_len;
    if (need > cap)
        return MW_ETOOBIG;
    uint8_t *p = out;
    mw_le64_put(p, (uint64_t)hello->epoch);
    mw_le32_put(p + 8, hello->size);
    mw_le32_put(p + 12, hello->rank);
    mw_le32_put(p + 16, hello->keepalive_ms);
    p += 20;
    *p++ = hello->secret_len;
    memcpy(p, hello->secret, hello->secret_len);
    p += hello->secret_len;
    mw_le16_put(p, (uint16_t)name_len);
    p += 2;
    memcpy(p, hello->name, name_len);
    p += name_len;
    *p++ = (uint8_t)addr_len;
    memcpy(p, hello->addr, addr_len);
    p += addr_len;
    return (int)(p - out);
}

int mw_frame_hello_decode(const uint8_t *meta, size_t len, mw_frame_hello_t *hello, char *errstr,
                          size_t errstr_size)
{
    const uint8_t *p = meta, *end = meta + len;
    memset(hello, 0, sizeof(*hello));
    if (end - p < 21)
        goto truncated;
    hello->epoch = (int64_t)mw_le64_get(p);
    hello->size = mw_le32_get(p + 8);
    hello->rank = mw_le32_get(p + 12);
    hello->keepalive_ms = mw_le32_get(p + 16);
    p += 20;
    hello->secret_len = *p++;
    if (hello->secret_len > MW_FRAME_SECRET_MAX)
        return mw_errf(MW_EPROTO, errstr, errstr_size, "hello secret of %u bytes",
                       hello->secret_len);
    if (end - p < hello->secret_len + 2)
        goto truncated;
    memcpy(hello->secret, p, hello->secret_len);
    p += hello->secret_len;
    size_t name_len = mw_le16_get(p);
    p += 2;
    if (name_len == 0 || name_len > MW_FRAME_NAME_MAX)
        return mw_errf(MW_EPROTO, errstr, errstr_size, "hello world name of %zu bytes", name_len);
    if ((size_t)(end - p) < name_len + 1)
        goto truncated;
    memcpy(hello->name, p, name_len);
    p += name_len;
    size_t addr_len = *p++;
    if (addr_len > MW_FRAME_ADDR_MAX)
        return mw_errf(MW_EPROTO, errstr, errstr_size, "hello address of %zu bytes", addr_len);
    if ((size_t)(end - p) != addr_len)
        return mw_errf(MW_EPROTO, errstr, errstr_size, "hello metadata length mismatch");
    memcpy(hello->addr, p, addr_len);
    if (memchr(hello->name, '\0', name_len) != NULL || memchr(hello->addr, '\0', addr_len) != NULL)
        return mw_errf(MW_EPROTO, errstr, errstr_size, "hello strings contain NUL bytes");
    if (hello->size == 0 || hello->size > MW_FRAME_PEERS_MAX || hello->rank >= hello->size)
        return mw_errf(MW_EPROTO, errstr, errstr_size, "hello with rank %u of size %u", hello->rank,
                       hello->size);
    return MW_OK;
truncated:
    return mw_errf(MW_EPROTO, errstr, errstr_size, "truncated hello metadata");
}

int mw_frame_peers_encode(const char *const *addrs, int count, uint8_t *out, size_t cap)
{
    if (count < 0 || count > MW_FRAME_PEERS_MAX || cap < 2)
        return MW_EINVAL;
    size_t off = 2;
    mw_le16_put(out, (uint16_t)count);
    for (int i = 0; i < count; i++) {
        size_t n = strlen(addrs[i]);
        if (n > MW_FRAME_ADDR_MAX)
            return MW_EINVAL;
        if (off + 1 + n > cap)
            return MW_ETOOBIG;
        out[off++] = (uint8_t)n;
        memcpy(out + off, addrs[i], n);
        off += n;
    }
    return (int)off;
}

int mw_frame_peers_decode(const uint8_t *meta, size_t len, char (*addrs)[MW_FRAME_ADDR_MAX + 1],
                          int max, char *errstr, size_t errstr_size)
{
    if (len < 2)
        return mw_errf(MW_EPROTO, errstr, errstr_size, "truncated peers metadata");
    int count = mw_le16_get(meta);
    if (count > max || count > MW_FRAME_PEERS_MAX)
        return mw_errf(MW_EPROTO, errstr, errstr_size, "peers frame lists %d ranks (max %d)", count,
                       max);
    size_t off = 2;
    for (int i = 0; i < count; i++) {
        if (off >= len)
            return mw_errf(MW_EPROTO, errstr, errstr_size, "truncated peers metadata");
        size_t n = meta[off++];
        if (n > MW_FRAME_ADDR_MAX || n > len - off)
            return mw_errf(MW_EPROTO, errstr, errstr_size, "peers entry %d out of bounds", i);
        memcpy(addrs[i], meta + off, n);
        addrs[i][n] = '\0';
        if (strlen(addrs[i]) != n)
            return mw_errf(MW_EPROTO, errstr, errstr_size, "peers entry %d contains NUL", i);
        off += n;
    }
    if (off != len)
        return mw_errf(MW_EPROTO, errstr, errstr_size, "peers metadata has %zu trailing bytes",
                       len - off);
    return count;
}

int mw_frame_check(const mw_frame_hdr_t *h, const uint8_t *meta, char *errstr, size_t errstr_size)
{
    uint64_t nbytes = 0;
    int rc = MW_OK;
    switch (h->type) {
    case MW_FRAME_HELLO: {
        mw_frame_hello_t hello;
        rc = mw_frame_hello_decode(meta, h->meta_len, &hello, errstr, errstr_size);
        break;
    }
    case MW_FRAME_PEERS: {
        char addrs[MW_FRAME_PEERS_MAX][MW_FRAME_ADDR_MAX + 1];
        rc = mw_frame_peers_decode(meta, h->meta_len, addrs, MW_FRAME_PEERS_MAX, errstr,
                                   errstr_size);
        rc = rc < 0 ? rc : MW_OK;
        break;
    }
    case MW_FRAME_TENSOR: {
        mw_tensor_desc_t desc;
        rc = mw_frame_tensor_meta_decode(meta, h->meta_len, &desc, &nbytes, errstr, errstr_size);
        break;
    }
    case MW_FRAME_COLL: {
        mw_frame_coll_t c;
        rc = mw_frame_coll_meta_decode(meta, h->meta_len, &c, &nbytes, errstr, errstr_size);
        if (rc == MW_OK && c.kind == MW_COLL_BARRIER)
            nbytes = 0; /* a barrier carries a placeholder desc and no payload */
        break;
    }
    default:
        break;
    }
    if (rc != MW_OK)
        return rc;
    if ((h->type == MW_FRAME_TENSOR || h->type == MW_FRAME_COLL) && nbytes != h->payload_len)
        return mw_errf(MW_EPROTO, errstr, errstr_size,
                       "%s frame payload of %llu bytes for a tensor of %llu bytes",
                       mw_frame_type_name(h->type), (unsigned long long)h->payload_len,
                       (unsigned long long)nbytes);
    return MW_OK;
}
