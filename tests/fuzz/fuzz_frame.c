/* libFuzzer target: a byte stream parsed as world frames exactly as a link
 * receives it (header, metadata, payload), plus re-encoding round trips. */
#include "world/frame.h"
#include "world/rendezvous.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    size_t off = 0;
    /* a small limit so that the fuzzer reaches the oversize paths */
    const uint64_t max_payload = 1 << 16;
    while (size - off >= MW_FRAME_HDR_SIZE) {
        mw_frame_hdr_t h;
        if (mw_frame_hdr_decode(data + off, size - off, max_payload, &h, err, sizeof(err)) != 0)
            break;
        off += MW_FRAME_HDR_SIZE;
        if (h.meta_len > size - off)
            break;
        /* the link reads metadata into its own buffer: give the checker an exact copy */
        uint8_t *meta = malloc(h.meta_len ? h.meta_len : 1);
        memcpy(meta, data + off, h.meta_len);
        int rc = mw_frame_check(&h, meta, err, sizeof(err));
        if (rc == 0 && h.type == MW_FRAME_HELLO) {
            mw_frame_hello_t a, b;
            uint8_t again[MW_FRAME_META_MAX];
            mw_frame_hello_decode(meta, h.meta_len, &a, NULL, 0);
            int n = mw_frame_hello_encode(&a, again, sizeof(again));
            if (n < 0 || mw_frame_hello_decode(again, (size_t)n, &b, NULL, 0) != 0 ||
                memcmp(&a, &b, sizeof(a)) != 0)
                abort();
        }
        if (rc == 0 && h.type == MW_FRAME_TENSOR) {
            mw_tensor_desc_t d, d2;
            uint64_t nb, nb2;
            uint8_t again[MW_FRAME_TENSOR_META];
            mw_frame_tensor_meta_decode(meta, h.meta_len, &d, &nb, NULL, 0);
            int n = mw_frame_tensor_meta_encode(&d, again);
            if (n != (int)h.meta_len ||
                mw_frame_tensor_meta_decode(again, (size_t)n, &d2, &nb2, NULL, 0) != 0 ||
                nb != nb2 || memcmp(again, meta, (size_t)n) != 0)
                abort();
        }
        free(meta);
        off += h.meta_len;
        if (rc != 0 || h.payload_len > size - off)
            break;
        off += (size_t)h.payload_len;
    }
    /* the same bytes as a rendezvous record */
    mw_rdv_record_t rec;
    mw_rdv_record_parse((const char *)data, size, &rec, err, sizeof(err));
    return 0;
}
