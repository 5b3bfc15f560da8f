/* Kafka helper: clients built from the config, librdkafka logs routed to mw_log. */
#include "kafka.h"

#include "err.h"
#include "log.h"

#include <stdio.h>
#include <string.h>

/* One set of kafka.* properties configures producers and consumers alike, so
 * librdkafka's note that a consumer property is ignored by a producer (or the
 * reverse) is expected, not a misconfiguration. */
static int is_scope_note(const char *fac, const char *buf)
{
    return strcmp(fac, "CONFWARN") == 0 &&
           strstr(buf, " property and will be ignored by this ") != NULL;
}

/* librdkafka uses syslog levels: 0..3 error, 4 warning, 5..6 info, 7 debug. */
static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    mw_log_level_t l = is_scope_note(fac, buf) ? MW_LOG_DEBUG
                       : level <= 3            ? MW_LOG_ERROR
                       : level == 4            ? MW_LOG_WARN
                       : level <= 6            ? MW_LOG_INFO
                                               : MW_LOG_DEBUG;
    mw_log(l, "kafka", "%s %s: %s", rk ? rd_kafka_name(rk) : "-", fac, buf);
}

static int conf_default(rd_kafka_conf_t *conf, const mw_config_t *cfg, const char *key,
                        const char *value, char *errstr, size_t errstr_size);

static int conf_set(rd_kafka_conf_t *conf, const char *key, const char *value, char *errstr,
                    size_t errstr_size)
{
    char kerr[256];
    if (rd_kafka_conf_set(conf, key, value, kerr, sizeof(kerr)) != RD_KAFKA_CONF_OK)
        return mw_errf(MW_EINVAL, errstr, errstr_size, "kafka.%s=%s: %s", key, value, kerr);
    return MW_OK;
}

rd_kafka_conf_t *mw_kafka_conf_new(const mw_config_t *cfg, char *errstr, size_t errstr_size)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, log_cb);
    if (conf_default(conf, cfg, "bootstrap.servers", MW_KAFKA_DEFAULT_BOOTSTRAP, errstr,
                     errstr_size) != MW_OK) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    for (size_t i = 0; i < cfg->kafka_count; i++) {
        if (conf_set(conf, cfg->kafka[i].key, cfg->kafka[i].value, errstr, errstr_size) != MW_OK) {
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    }
    return conf;
}

/* Sets key to value unless the user configured it. */
static int conf_default(rd_kafka_conf_t *conf, const mw_config_t *cfg, const char *key,
                        const char *value, char *errstr, size_t errstr_size)
{
    if (mw_config_kafka_get(cfg, key) != NULL)
        return MW_OK;
    return conf_set(conf, key, value, errstr, errstr_size);
}

/* Applies the hooks that a client of this type uses to conf (the opaque goes
 * with them). */
static void set_hooks(rd_kafka_conf_t *conf, rd_kafka_type_t type, const mw_kafka_hooks_t *hooks)
{
    if (hooks == NULL)
        return;
    if (type == RD_KAFKA_PRODUCER && hooks->dr_msg_cb != NULL)
        rd_kafka_conf_set_dr_msg_cb(conf, hooks->dr_msg_cb);
    if (type == RD_KAFKA_CONSUMER && hooks->rebalance_cb != NULL)
        rd_kafka_conf_set_rebalance_cb(conf, hooks->rebalance_cb);
    rd_kafka_conf_set_opaque(conf, hooks->opaque);
}

/* Applies each {key, value} default that the config does not set. */
static int conf_defaults(rd_kafka_conf_t *conf, const mw_config_t *cfg,
                         const char *const (*defaults)[2], size_t n, char *errstr,
                         size_t errstr_size)
{
    for (size_t i = 0; i < n; i++) {
        int rc = conf_default(conf, cfg, defaults[i][0], defaults[i][1], errstr, errstr_size);
        if (rc != MW_OK)
            return rc;
    }
    return MW_OK;
}

rd_kafka_t *mw_kafka_producer_new(const mw_config_t *cfg, const char *transactional_id,
                                  const mw_kafka_hooks_t *hooks, char *errstr, size_t errstr_size)
{
    static const char *const defaults[][2] = {
        {"enable.idempotence", "true"},
        {"linger.ms", "5"},
    };
    /* A transaction begun right after the previous commit is refused with
     * CONCURRENT_TRANSACTIONS until the broker has written that commit's
     * markers, and librdkafka retries after retry.backoff.ms (100 ms): a
     * back-to-back transaction waited 100 ms in send_offsets_to_transaction.
     * 20 ms is the Java producer's backoff for exactly this answer. */
    static const char *const txn_defaults[][2] = {
        {"retry.backoff.ms", "20"},
    };
    rd_kafka_conf_t *conf = mw_kafka_conf_new(cfg, errstr, errstr_size);
    if (conf == NULL)
        return NULL;
    if (conf_defaults(conf, cfg, defaults, sizeof(defaults) / sizeof(defaults[0]), errstr,
                      errstr_size) != MW_OK ||
        (transactional_id != NULL &&
         (conf_defaults(conf, cfg, txn_defaults, sizeof(txn_defaults) / sizeof(txn_defaults[0]),
                        errstr, errstr_size) != MW_OK ||
          conf_set(conf, "transactional.id", transactional_id, errstr, errstr_size) != MW_OK))) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    set_hooks(conf, RD_KAFKA_PRODUCER, hooks);
    char kerr[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, kerr, sizeof(kerr));
    if (rk == NULL) {
        rd_kafka_conf_destroy(conf);
        mw_errf(MW_EKAFKA, errstr, errstr_size, "creating Kafka producer: %s", kerr);
        return NULL;
    }
    if (transactional_id != NULL) {
        rd_kafka_error_t *error = rd_kafka_init_transactions(rk, (int)cfg->kafka_timeout_ms);
        if (error != NULL) {
            mw_errf(MW_EKAFKA, errstr, errstr_size, "initialising transactions for '%s': %s",
                    transactional_id, rd_kafka_error_string(error));
            rd_kafka_error_destroy(error);
            rd_kafka_destroy(rk);
            return NULL;
        }
    }
    return rk;
}

rd_kafka_t *mw_kafka_consumer_new(const mw_config_t *cfg, const char *group_id,
                                  const mw_kafka_hooks_t *hooks, char *errstr, size_t errstr_size)
{
    static const char *const defaults[][2] = {
        {"enable.auto.commit", "false"},
        {"enable.auto.offset.store", "false"},
        {"isolation.level", "read_committed"},
        {"auto.offset.reset", "earliest"}, /* a new group starts at the beginning */
        {"partition.assignment.strategy", "cooperative-sticky"},
    };
    rd_kafka_conf_t *conf = mw_kafka_conf_new(cfg, errstr, errstr_size);
    if (conf == NULL)
        return NULL;
    if (conf_set(conf, "group.id", group_id, errstr, errstr_size) != MW_OK ||
        conf_defaults(conf, cfg, defaults, sizeof(defaults) / sizeof(defaults[0]), errstr,
                      errstr_size) != MW_OK) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    set_hooks(conf, RD_KAFKA_CONSUMER, hooks);
    char kerr[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, kerr, sizeof(kerr));
    if (rk == NULL) {
        rd_kafka_conf_destroy(conf);
        mw_errf(MW_EKAFKA, errstr, errstr_size, "creating Kafka consumer: %s", kerr);
        return NULL;
    }
    rd_kafka_poll_set_consumer(rk);
    return rk;
}

int mw_kafka_create_topic(rd_kafka_t *rk, const char *topic, int partitions, int timeout_ms,
                          char *errstr, size_t errstr_size)
{
    int rc = MW_OK;
    char kerr[256];
    rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(topic, partitions, -1, kerr, sizeof(kerr));
    if (nt == NULL)
        return mw_errf(MW_EINVAL, errstr, errstr_size, "topic %s: %s", topic, kerr);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_operation_timeout(opts, timeout_ms, kerr, sizeof(kerr));
    rd_kafka_AdminOptions_set_request_timeout(opts, timeout_ms, kerr, sizeof(kerr));
    rd_kafka_CreateTopics(rk, &nt, 1, opts, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, timeout_ms + 1000);
    if (ev == NULL) {
        rc = mw_errf(MW_ETIMEDOUT, errstr, errstr_size, "creating topic %s: timed out", topic);
        goto out;
    }
    if (rd_kafka_event_error(ev) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rc = mw_errf(MW_EKAFKA, errstr, errstr_size, "creating topic %s: %s", topic,
                     rd_kafka_event_error_string(ev));
        goto out_event;
    }
    size_t n;
    const rd_kafka_topic_result_t **res =
        rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &n);
    for (size_t i = 0; i < n; i++) {
        rd_kafka_resp_err_t err = rd_kafka_topic_result_error(res[i]);
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR && err != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
            rc = mw_errf(MW_EKAFKA, errstr, errstr_size, "creating topic %s: %s", topic,
                         rd_kafka_topic_result_error_string(res[i]));
    }
out_event:
    rd_kafka_event_destroy(ev);
out:
    rd_kafka_AdminOptions_destroy(opts);
    rd_kafka_queue_destroy(q);
    rd_kafka_NewTopic_destroy(nt);
    return rc;
}

void mw_kafka_destroy(rd_kafka_t *rk)
{
    if (rk == NULL)
        return;
    if (rd_kafka_type(rk) == RD_KAFKA_PRODUCER) {
        rd_kafka_resp_err_t err = rd_kafka_flush(rk, 10000);
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
            mw_log(MW_LOG_WARN, "kafka", "%s: flush on close: %s", rd_kafka_name(rk),
                   rd_kafka_err2str(err));
    } else {
        rd_kafka_consumer_close(rk);
    }
    rd_kafka_destroy(rk);
}
