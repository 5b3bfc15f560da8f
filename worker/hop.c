/* The data plane's header frame codec (see hop.h). Layout, little-endian:
 *   "MWH2" u8 type, u8 stage, u8 ndim, u8 dtype, u32 nrequests, u64 incarnation,
 *   u64 batch, u64 nbytes, u8 origin_len, i64 shape[ndim], origin */
#include "hop.h"

#include "bytes.h"
#include "err.h"

#include <string.h>

#define HOP_MAGIC "MWH2"
#define HOP_FIXED (4 + 4 + 4 + 8 + 8 + 8 + 1)

int mw_hop_encode(const mw_hop_t *hop, uint8_t *buf, size_t size)
{
    size_t olen = strnlen(hop->origin, MW_HOP_ORIGIN_MAX);
    int ndim = hop->type == MW_HOP_TENSOR ? hop->desc.ndim : 0;
    if (olen == 0 || olen >= MW_HOP_ORIGIN_MAX || hop->nrequests == 0 || ndim < 0 ||
        ndim > MW_TENSOR_MAX_DIMS || hop->stage < 0 || hop->stage > 255 ||
        (hop->type != MW_HOP_TENSOR && hop->type != MW_HOP_ABORT))
        return MW_EINVAL;
    size_t len = HOP_FIXED + 8 * (size_t)ndim + olen;
    if (len > size)
        return MW_ETOOBIG;
    uint8_t *p = buf;
    memcpy(p, HOP_MAGIC, 4);
    p[4] = (uint8_t)hop->type;
    p[5] = (uint8_t)hop->stage;
    p[6] = (uint8_t)ndim;
    p[7] = (uint8_t)(hop->type == MW_HOP_TENSOR ? hop->desc.dtype : 0);
    mw_le32_put(p + 8, hop->nrequests);
    mw_le64_put(p + 12, hop->incarnation);
    mw_le64_put(p + 20, hop->batch);
    mw_le64_put(p + 28, hop->type == MW_HOP_TENSOR ? hop->nbytes : 0);
    p[36] = (uint8_t)olen;
    p += HOP_FIXED;
    for (int i = 0; i < ndim; i++, p += 8)
        mw_le64_put(p, (uint64_t)hop->desc.shape[i]);
    memcpy(p, hop->origin, olen);
    return (int)len;
}

int mw_hop_decode(mw_hop_t *hop, const uint8_t *buf, size_t len, char *errstr, size_t errstr_size)
{
    memset(hop, 0, sizeof(*hop));
    if (len < HOP_FIXED || memcmp(buf, HOP_MAGIC, 4) != 0)
        return mw_errf(MW_EPROTO, errstr, errstr_size, "hop frame: bad magic or too short (%zu)",
                       len);
    hop->type = (mw_hop_type_t)buf[4];
    hop->stage = buf[5];
    int ndim = buf[6];
    hop->nrequests = mw_le32_get(buf + 8);
    hop->incarnation = mw_le64_get(buf + 12);
    hop->batch = mw_le64_get(buf + 20);
    hop->nbytes = mw_le64_get(buf + 28);
    size_t olen = buf[36];
    if (hop->type != MW_HOP_TENSOR && hop->type != MW_HOP_ABORT)
        return mw_errf(MW_EPROTO, errstr, errstr_size, "hop frame: unknown type %d", buf[4]);
    if (ndim > MW_TENSOR_MAX_DIMS || (hop->type == MW_HOP_TENSOR && ndim == 0) ||
        (hop->type == MW_HOP_ABORT && ndim != 0))
        return mw_errf(MW_EPROTO, errstr, errstr_size, "hop frame: bad ndim %d", ndim);
    if (olen == 0 || olen >= MW_HOP_ORIGIN_MAX)
        return mw_errf(MW_EPROTO, errstr, errstr_size, "hop frame: bad origin length %zu", olen);
    if (HOP_FIXED + 8 * (size_t)ndim + olen != len)
        return mw_errf(MW_EPROTO, errstr, errstr_size, "hop frame: length %zu does not match", len);
    if (hop->nrequests == 0)
        return mw_errf(MW_EPROTO, errstr, errstr_size, "hop frame: a batch of no requests");
    if (hop->type == MW_HOP_ABORT && (buf[7] != 0 || hop->nbytes != 0))
        return mw_errf(MW_EPROTO, errstr, errstr_size, "hop frame: an abort with a tensor");
    const uint8_t *p = buf + HOP_FIXED;
    hop->desc.ndim = ndim;
    for (int i = 0; i < ndim; i++, p += 8) {
        uint64_t d = mw_le64_get(p);
        if (d == 0 || d > (UINT64_C(1) << 40))
            return mw_errf(MW_EPROTO, errstr, errstr_size, "hop frame: bad dimension %d", i);
        hop->desc.shape[i] = (int64_t)d;
    }
    if (memchr(p, '\0', olen) != NULL)
        return mw_errf(MW_EPROTO, errstr, errstr_size, "hop frame: NUL in the origin id");
    memcpy(hop->origin, p, olen);
    hop->origin[olen] = '\0';
    if (hop->type == MW_HOP_TENSOR) {
        uint64_t want;
        if (buf[7] >= MW_DTYPE_COUNT)
            return mw_errf(MW_EPROTO, errstr, errstr_size, "hop frame: bad dtype %d", buf[7]);
        hop->desc.dtype = (mw_dtype_t)buf[7];
        if (mw_tensor_nbytes(&hop->desc, &want) != MW_OK || want != hop->nbytes)
            return mw_errf(MW_EPROTO, errstr, errstr_size,
                           "hop frame: %llu bytes do not match the shape",
                           (unsigned long long)hop->nbytes);
    }
    return MW_OK;
}
