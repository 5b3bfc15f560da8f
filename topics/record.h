/* Request, result and DLQ records on Kafka (DESIGN §6): a pure codec over
 * (key, value, headers) that needs no librdkafka object, plus thin adapters
 * from and to rd_kafka_message_t / rd_kafka_headers_t.
 *
 * Request: key = request id (1..MW_REQUEST_ID_MAX bytes, any bytes; an empty
 * key is rejected), headers mw-dtype, mw-shape, optional mw-deadline-ms
 * (absolute Unix time in milliseconds), content-type, and the reply route:
 * mw-reply-topic (or Spring Kafka's kafka_replyTopic), mw-reply-partition
 * (decimal; or kafka_replyPartition, a 4-byte big-endian int) and
 * kafka_correlationId (bytes, echoed on the result); value = the tensor,
 * little-endian, C order, or with content-type application/json the object
 * {"dtype":"f32","shape":[1,4],"data":[...]} (data flat or nested by shape).
 * Result: key = request id; headers mw-status (ok|error), mw-error, mw-dtype,
 * mw-shape, mw-attempts, mw-latency-us, kafka_correlationId when the request
 * had one; value = output tensor, empty on error.
 * DLQ: the original key, value and headers plus mw-error and mw-attempts. */
#ifndef MW_RECORD_H
#define MW_RECORD_H

#include "model/tensor.h"

#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <stdint.h>

#define MW_HDR_DTYPE        "mw-dtype"
#define MW_HDR_SHAPE        "mw-shape"
#define MW_HDR_DEADLINE     "mw-deadline-ms"
#define MW_HDR_CONTENT_TYPE "content-type"
#define MW_HDR_STATUS       "mw-status"
#define MW_HDR_ERROR        "mw-error"
#define MW_HDR_ATTEMPTS     "mw-attempts"
#define MW_HDR_LATENCY      "mw-latency-us"
#define MW_HDR_REPLY_TOPIC  "mw-reply-topic"
#define MW_HDR_REPLY_PART   "mw-reply-partition"
/* Spring Kafka's names (KafkaHeaders.REPLY_TOPIC, REPLY_PARTITION, CORRELATION_ID). */
#define MW_HDR_SPRING_REPLY_TOPIC "kafka_replyTopic"
#define MW_HDR_SPRING_REPLY_PART  "kafka_replyPartition"
#define MW_HDR_CORRELATION_ID     "kafka_correlationId"

#define MW_CONTENT_TYPE_JSON   "application/json"
#define MW_CONTENT_TYPE_BINARY "application/octet-stream"

/* Longest request id (record key) accepted, in bytes. */
#define MW_REQUEST_ID_MAX 255
/* Longest Kafka topic name, and longest kafka_correlationId accepted. */
#define MW_TOPIC_NAME_MAX     249
#define MW_CORRELATION_ID_MAX 255
/* Longest mw-error text written into results and DLQ records. */
#define MW_RECORD_ERROR_MAX 1024

/* One record header. name is NUL-terminated; value is not (it may be NULL
 * for a null header). Both are borrowed from whoever built the list. */
typedef struct mw_header {
    const char *name;
    const void *value;
    size_t size;
} mw_header_t;

/* A decoded request. Every pointer borrows from the parsed key/value (for a
 * librdkafka message: from the message, valid until rd_kafka_message_destroy),
 * except data of a JSON request, which points into a buffer the request owns.
 * data has no alignment guarantee: copy it (memcpy) before using it as an
 * array of dtype. */
typedef struct mw_request {
    const uint8_t *id; /* the record key; not NUL-terminated */
    size_t id_len;
    mw_tensor_desc_t desc;
    const void *data; /* nbytes of tensor, little-endian, C order */
    size_t nbytes;
    int64_t deadline_ms;     /* absolute Unix ms from mw-deadline-ms; 0 when absent */
    int json;                /* 1 when the value was the JSON form */
    const char *reply_topic; /* a valid topic name, not NUL-terminated; NULL: none */
    size_t reply_topic_len;
    int32_t reply_partition;    /* -1: none given (only with a reply topic) */
    const void *correlation_id; /* kafka_correlationId; NULL when absent */
    size_t correlation_id_len;
    void *owned; /* converted JSON data; freed by mw_request_fini */
} mw_request_t;

/* A result, decoded (pointers borrow from the message) or to be encoded
 * (pointers borrowed from the caller for the duration of the call). */
typedef struct mw_result {
    const uint8_t *id;
    size_t id_len;
    int ok;                /* mw-status: 1 = ok, 0 = error */
    const char *error;     /* mw-error (not NUL-terminated when decoded); NULL when none */
    size_t error_len;      /* when encoding, 0 means strlen(error) */
    mw_tensor_desc_t desc; /* mw-dtype/mw-shape; ndim = 0 when absent (error results) */
    const void *data;      /* output tensor (ok results) */
    size_t nbytes;
    int64_t attempts;           /* mw-attempts; 0 when absent */
    int64_t latency_us;         /* mw-latency-us; -1 when absent */
    const void *correlation_id; /* kafka_correlationId; NULL when absent (none encoded) */
    size_t correlation_id_len;
} mw_result_t;

/* A record being built for producing: key, value and headers, each either
 * borrowed (key, value passed to the encoders) or owned by the record (header
 * values, JSON text). Not thread-safe; fini frees what it owns. */
typedef struct mw_record {
    const void *key;
    size_t key_len;
    const void *value;
    size_t value_len;
    mw_header_t *headers;
    size_t nheaders;
    size_t cap;
    char **owned; /* header copies and the JSON value, freed by fini */
    size_t nowned;
} mw_record_t;

/* ---- the pure core ------------------------------------------------------ */

/* Finds the last header called name (as rd_kafka_header_get_last would);
 * 0 with *value and *size set, or MW_ENOTFOUND. value/size may be NULL. */
int mw_header_find(const mw_header_t *headers, size_t nheaders, const char *name,
                   const void **value, size_t *size);

/* Parses and validates a request. On success req borrows key and value (see
 * mw_request_t) and must be released with mw_request_fini; on failure req
 * holds nothing and errstr names the problem (missing header, unknown dtype,
 * bad shape, size mismatch, too large, malformed JSON, a reply header that is
 * not a topic name or partition, or two that disagree...). Returns MW_EINVAL
 * for malformed requests, MW_ETOOBIG over max_tensor_bytes, MW_ENOMEM.
 * Thread-safe (no shared state). */
int mw_request_parse(mw_request_t *req, const void *key, size_t key_len, const void *value,
                     size_t value_len, const mw_header_t *headers, size_t nheaders,
                     uint64_t max_tensor_bytes, char *errstr, size_t errstr_size);

/* Frees what a parsed request owns (JSON data); accepts a zeroed request. */
void mw_request_fini(mw_request_t *req);

/* 1 when topic matches one of patterns, comma-separated fnmatch(3) globs
 * (blanks around each ignored), as results.reply_topics lists them; an empty
 * list allows nothing. */
int mw_reply_topic_allowed(const char *patterns, const char *topic);

/* Parses a result record (key, value, headers); res borrows from them.
 * MW_EINVAL with errstr on a malformed result. */
int mw_result_parse(mw_result_t *res, const void *key, size_t key_len, const void *value,
                    size_t value_len, const mw_header_t *headers, size_t nheaders, char *errstr,
                    size_t errstr_size);

/* Empty record; fini frees what it owns and leaves it empty (reusable). */
void mw_record_init(mw_record_t *rec);
void mw_record_fini(mw_record_t *rec);

/* Appends a header, copying name and value into the record. */
int mw_record_add_header(mw_record_t *rec, const char *name, const void *value, size_t size);

/* Builds a request record in rec (which must be empty): key = id, headers
 * mw-dtype and mw-shape, mw-deadline-ms when deadline_ms > 0; value = data
 * (borrowed, nbytes must equal the shape's size) or, with json = 1, the JSON
 * form (owned by rec, with content-type: application/json). */
int mw_request_encode(mw_record_t *rec, const void *id, size_t id_len, const mw_tensor_desc_t *desc,
                      const void *data, size_t nbytes, int64_t deadline_ms, int json, char *errstr,
                      size_t errstr_size);

/* Builds a result record in rec (which must be empty) from res: ok results
 * carry dtype, shape and the output tensor (borrowed), error results the error
 * (truncated to MW_RECORD_ERROR_MAX) and an empty value; both carry
 * kafka_correlationId when res has one. */
int mw_result_encode(mw_record_t *rec, const mw_result_t *res, char *errstr, size_t errstr_size);

/* Builds a DLQ record in rec (which must be empty): the original key and value
 * (borrowed) and headers (copied, except earlier mw-error/mw-attempts), plus
 * mw-error and mw-attempts. */
int mw_dlq_encode(mw_record_t *rec, const void *key, size_t key_len, const void *value,
                  size_t value_len, const mw_header_t *headers, size_t nheaders, const char *error,
                  int64_t attempts);

/* Appends the JSON form of a tensor to a malloc'ed string: *out must be NULL
 * or from an earlier call; the caller frees it. Used by the encoders, mwctl
 * results --print and tests. */
int mw_tensor_json(char **out, const mw_tensor_desc_t *desc, const void *data, size_t nbytes);

/* The value of element i of a little-endian tensor as a double. */
double mw_tensor_elem(mw_dtype_t dtype, const void *data, size_t i);

/* IEEE half and bfloat16 conversions (round to nearest even). */
uint16_t mw_f32_to_f16(float f);
float mw_f16_to_f32(uint16_t h);
uint16_t mw_f32_to_bf16(float f);
float mw_bf16_to_f32(uint16_t h);

/* ---- librdkafka adapters ------------------------------------------------- */

/* mw_request_parse over a consumed message; req borrows from msg, which must
 * outlive it. An absent key or value counts as empty. */
int mw_request_from_message(mw_request_t *req, const rd_kafka_message_t *msg,
                            uint64_t max_tensor_bytes, char *errstr, size_t errstr_size);

/* mw_result_parse over a consumed message; res borrows from msg. */
int mw_result_from_message(mw_result_t *res, const rd_kafka_message_t *msg, char *errstr,
                           size_t errstr_size);

/* mw_dlq_encode from the original consumed message (key, value, every header). */
int mw_dlq_encode_message(mw_record_t *rec, const rd_kafka_message_t *msg, const char *error,
                          int64_t attempts);

/* A new rd_kafka_headers_t holding rec's headers; the caller owns it (until
 * rd_kafka_producev takes it over). */
rd_kafka_headers_t *mw_record_kafka_headers(const mw_record_t *rec);

/* Produces rec to topic/partition (RD_KAFKA_PARTITION_UA: by key) with
 * RD_KAFKA_MSG_F_COPY, so rec may be finalized right after. msg_opaque goes
 * to the delivery report. Works inside a transaction. Thread-safe as
 * rd_kafka_producev is. MW_EKAFKA with errstr on failure (e.g. queue full). */
int mw_record_produce(rd_kafka_t *rk, const char *topic, int32_t partition, const mw_record_t *rec,
                      void *msg_opaque, char *errstr, size_t errstr_size);

#endif
