/* Fuzzes the request parser (binary and JSON forms) with a fuzzed header set,
 * key and value; accepted requests must re-encode and re-parse to the same tensor.
 *
 * Input: byte 0 = number of headers (low 3 bits); per header one selector byte
 * (low 4 bits: name, bit 7: null value) and one length byte (mod 64) then the
 * value; one key-length byte (mod 64) and the key; one limit byte (the tensor
 * limit is 2^(b mod 24)); the rest is the record value. */
#include "err.h"
#include "topics/record.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char *const names[16] = {"mw-dtype",
                                      "mw-shape",
                                      "content-type",
                                      "mw-deadline-ms",
                                      "mw-status",
                                      "mw-error",
                                      "x-other",
                                      "mw-dtype",
                                      "mw-reply-topic",
                                      "kafka_replyTopic",
                                      "mw-reply-partition",
                                      "kafka_replyPartition",
                                      "kafka_correlationId",
                                      "mw-reply-topic",
                                      "kafka_replyPartition",
                                      "x-other"};

/* The reply route of an accepted request is a valid topic name, and a
 * partition only comes with a topic. */
static void check_reply(const mw_request_t *req)
{
    if (req->reply_topic != NULL) {
        if (req->reply_topic_len == 0 || req->reply_topic_len > MW_TOPIC_NAME_MAX)
            abort();
        for (size_t i = 0; i < req->reply_topic_len; i++)
            if (strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-",
                       req->reply_topic[i]) == NULL)
                abort();
    } else if (req->reply_partition != -1) {
        abort();
    }
    if (req->reply_partition < -1 || req->correlation_id_len > MW_CORRELATION_ID_MAX)
        abort();
}

static void check_round_trips(const mw_request_t *req)
{
    char err[512];
    mw_record_t rec;
    mw_request_t again;
    mw_record_init(&rec);
    if (mw_request_encode(&rec, req->id, req->id_len, &req->desc, req->data, req->nbytes,
                          req->deadline_ms, 0, err, sizeof(err)) != MW_OK)
        abort();
    if (mw_request_parse(&again, rec.key, rec.key_len, rec.value, rec.value_len, rec.headers,
                         rec.nheaders, req->nbytes, err, sizeof(err)) != MW_OK ||
        again.nbytes != req->nbytes || memcmp(again.data, req->data, req->nbytes) != 0 ||
        again.deadline_ms != req->deadline_ms)
        abort();
    mw_request_fini(&again);
    mw_record_fini(&rec);

    /* JSON: NaN/inf cannot be encoded; i64 beyond 2^53 cannot be parsed back. */
    if (req->nbytes <= 4096 && mw_request_encode(&rec, req->id, req->id_len, &req->desc, req->data,
                                                 req->nbytes, 0, 1, err, sizeof(err)) == MW_OK) {
        int rc = mw_request_parse(&again, rec.key, rec.key_len, rec.value, rec.value_len,
                                  rec.headers, rec.nheaders, req->nbytes, err, sizeof(err));
        if (rc == MW_OK) {
            if (again.nbytes != req->nbytes)
                abort();
            /* -0.0 and +0.0 compare equal; anything else must be bit-exact. */
            for (size_t i = 0; i < req->nbytes / mw_dtype_size(req->desc.dtype); i++)
                if (mw_tensor_elem(req->desc.dtype, again.data, i) !=
                    mw_tensor_elem(req->desc.dtype, req->data, i))
                    abort();
            mw_request_fini(&again);
        } else if (req->desc.dtype != MW_DTYPE_I64) {
            abort();
        }
    }
    mw_record_fini(&rec);

    mw_result_t res = {.id = req->id,
                       .id_len = req->id_len,
                       .ok = 1,
                       .desc = req->desc,
                       .data = req->data,
                       .nbytes = req->nbytes,
                       .attempts = 1,
                       .latency_us = 5,
                       .correlation_id = req->correlation_id,
                       .correlation_id_len = req->correlation_id_len};
    mw_result_t got;
    if (mw_result_encode(&rec, &res, err, sizeof(err)) != MW_OK ||
        mw_result_parse(&got, rec.key, rec.key_len, rec.value, rec.value_len, rec.headers,
                        rec.nheaders, err, sizeof(err)) != MW_OK ||
        got.nbytes != req->nbytes || got.correlation_id_len != req->correlation_id_len ||
        (got.correlation_id_len > 0 &&
         memcmp(got.correlation_id, req->correlation_id, got.correlation_id_len) != 0))
        abort();
    mw_record_fini(&rec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mw_header_t headers[8];
    size_t pos = 0, nh = 0;
    if (size < 1)
        return 0;
    size_t want = data[pos++] & 7;
    while (nh < want && pos + 2 <= size) {
        uint8_t sel = data[pos++];
        size_t len = data[pos++] % 64;
        if (pos + len > size)
            len = size - pos;
        headers[nh].name = names[sel & 15];
        headers[nh].value = (sel & 0x80) ? NULL : data + pos;
        headers[nh].size = (sel & 0x80) ? 0 : len;
        pos += len;
        nh++;
    }
    if (pos >= size)
        return 0;
    size_t klen = data[pos++] % 64;
    if (pos + klen > size)
        klen = size - pos;
    const uint8_t *key = data + pos;
    pos += klen;
    uint64_t limit = pos < size ? UINT64_C(1) << (data[pos++] % 24) : 1024;

    /* The value in its own allocation so ASan sees reads past its end. */
    size_t vlen = size - pos;
    uint8_t *value = malloc(vlen ? vlen : 1);
    if (value == NULL)
        return 0;
    memcpy(value, data + pos, vlen);

    char err[512];
    mw_request_t req;
    int rc = mw_request_parse(&req, key, klen, value, vlen, headers, nh, limit, err, sizeof(err));
    if (rc == MW_OK) {
        uint64_t nbytes;
        if (mw_tensor_nbytes(&req.desc, &nbytes) != MW_OK || nbytes != req.nbytes ||
            nbytes > limit || req.id_len == 0)
            abort();
        check_reply(&req);
        check_round_trips(&req);
    } else if (err[0] == '\0' || (rc != MW_EINVAL && rc != MW_ETOOBIG && rc != MW_ENOMEM)) {
        abort(); /* every rejection names its reason */
    }
    mw_request_fini(&req);

    /* Results and DLQ copies of arbitrary records must not crash either. */
    mw_result_t res;
    mw_result_parse(&res, key, klen, value, vlen, headers, nh, err, sizeof(err));
    mw_record_t dlq;
    mw_record_init(&dlq);
    if (mw_dlq_encode(&dlq, key, klen, value, vlen, headers, nh, err, 2) != MW_OK)
        abort();
    mw_record_fini(&dlq);
    free(value);
    return 0;
}
