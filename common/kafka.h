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

/* An idempotent producer (enable.idempotence=true, acks=all). With a
 * transactional_id it is also transactional and init_transactions has run.
 * Caller frees with mw_kafka_destroy. */
rd_kafka_t *mw_kafka_producer_new(const mw_config_t *cfg, const char *transactional_id,
                                  char *errstr, size_t errstr_size);

/* A consumer in group_id with manual offset commits (enable.auto.commit=false),
 * isolation.level=read_committed unless the config says otherwise. */
rd_kafka_t *mw_kafka_consumer_new(const mw_config_t *cfg, const char *group_id, char *errstr,
                                  size_t errstr_size);

/* Creates topics (partitions, replication factor -1 = broker default); a topic
 * that already exists is not an error. */
int mw_kafka_create_topic(rd_kafka_t *rk, const char *topic, int partitions, int timeout_ms,
                          char *errstr, size_t errstr_size);

/* Flushes (producers) / closes (consumers) and destroys; accepts NULL. */
void mw_kafka_destroy(rd_kafka_t *rk);

#endif
