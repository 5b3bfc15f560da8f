/* Kafka helper: producers, transactional producers and consumers built from the
 * config (kafka.* keys), with librdkafka's logs routed into mw_log. */
#ifndef MW_KAFKA_H
#define MW_KAFKA_H

#include "config.h"

#include <librdkafka/rdkafka.h>

/* Used when kafka.bootstrap.servers is not configured. */
#define MW_KAFKA_DEFAULT_BOOTSTRAP "127.0.0.1:9092"

/* A conf with every kafka.* key applied and the log callback installed.
 * Caller owns it (librdkafka's rd_kafka_new takes it over on success). */
rd_kafka_conf_t *mw_kafka_conf_new(const mw_config_t *cfg, char *errstr, size_t errstr_size);

/* Optional callbacks for the clients below, all with the same opaque. One
 * hooks value may serve both: producers take dr_msg_cb, consumers rebalance_cb. */
typedef struct mw_kafka_hooks {
    void (*dr_msg_cb)(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque);
    void (*rebalance_cb)(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *partitions, void *opaque);
    void *opaque;
} mw_kafka_hooks_t;

/* An idempotent producer (enable.idempotence=true, linger.ms=5 unless
 * configured). With a transactional_id it is also transactional and
 * init_transactions has run (fencing any earlier producer with that id).
 * hooks may be NULL. Caller frees with mw_kafka_destroy. */
rd_kafka_t *mw_kafka_producer_new(const mw_config_t *cfg, const char *transactional_id,
                                  const mw_kafka_hooks_t *hooks, char *errstr, size_t errstr_size);

/* A consumer in group_id, unless configured otherwise: manual offsets
 * (enable.auto.commit=false, enable.auto.offset.store=false),
 * isolation.level=read_committed, auto.offset.reset=earliest,
 * partition.assignment.strategy=cooperative-sticky. hooks may be NULL. */
rd_kafka_t *mw_kafka_consumer_new(const mw_config_t *cfg, const char *group_id,
                                  const mw_kafka_hooks_t *hooks, char *errstr, size_t errstr_size);

/* Creates topics (partitions, replication factor -1 = broker default); a topic
 * that already exists is not an error. */
int mw_kafka_create_topic(rd_kafka_t *rk, const char *topic, int partitions, int timeout_ms,
                          char *errstr, size_t errstr_size);

/* Flushes (producers) / closes (consumers) and destroys; accepts NULL. */
void mw_kafka_destroy(rd_kafka_t *rk);

#endif
