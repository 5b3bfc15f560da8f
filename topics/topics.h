/* Topic admin for a pipeline's three topics: P.requests, P.results, P.dlq. */
#ifndef MW_TOPICS_H
#define MW_TOPICS_H

#include "config.h"

#include <librdkafka/rdkafka.h>
#include <stddef.h>

typedef enum {
    MW_TOPIC_REQUESTS = 0,
    MW_TOPIC_RESULTS,
    MW_TOPIC_DLQ,
    MW_TOPIC_COUNT,
} mw_topic_kind_t;

/* Longest topic name Kafka accepts. */
#define MW_TOPIC_NAME_MAX 249

/* What one topic looks like on the cluster. */
typedef struct mw_topic_info {
    char name[MW_TOPIC_NAME_MAX + 1];
    int exists;     /* 1 when the broker knows the topic */
    int created;    /* 1 when mw_topics_create created it just now */
    int partitions; /* partition count when it exists */
} mw_topic_info_t;

/* "requests", "results" or "dlq". */
const char *mw_topic_suffix(mw_topic_kind_t kind);

/* Writes "<pipeline>.<suffix>" into buf. A pipeline name is 1 or more of
 * [A-Za-z0-9._-] (Kafka's topic alphabet), short enough for every suffix;
 * MW_EINVAL with errstr otherwise. */
int mw_topic_name(char *buf, size_t size, const char *pipeline, mw_topic_kind_t kind, char *errstr,
                  size_t errstr_size);

/* A plain client (a producer handle, never producing) for admin and metadata
 * calls, built from the kafka.* config. Caller frees with mw_kafka_destroy. */
rd_kafka_t *mw_topics_admin_new(const mw_config_t *cfg, char *errstr, size_t errstr_size);

/* Describes one topic from cluster metadata: info->exists and partitions.
 * MW_EKAFKA/MW_ETIMEDOUT with errstr when the cluster does not answer. */
int mw_topic_describe(rd_kafka_t *rk, const char *topic, int timeout_ms, mw_topic_info_t *info,
                      char *errstr, size_t errstr_size);

/* Describes the pipeline's three topics into info[MW_TOPIC_COUNT]. */
int mw_topics_describe(rd_kafka_t *rk, const char *pipeline, int timeout_ms,
                       mw_topic_info_t info[MW_TOPIC_COUNT], char *errstr, size_t errstr_size);

/* Creates whichever of the pipeline's topics do not exist yet (requests with
 * partitions, results with results_partitions, dlq with dlq_partitions;
 * replication = broker default), waits until metadata shows all three, and
 * fills info[] (created = 1 for the new ones). Existing topics are left as
 * they are, whatever their partition count. */
int mw_topics_create(rd_kafka_t *rk, const char *pipeline, int partitions, int results_partitions,
                     int dlq_partitions, int timeout_ms, mw_topic_info_t info[MW_TOPIC_COUNT],
                     char *errstr, size_t errstr_size);

#endif
