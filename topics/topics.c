/* Topic admin: names, metadata, creation of a pipeline's topics (see topics.h). */
#include "clock.h"
#include "topics.h"

#include "err.h"
#include "kafka.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static const char *const suffixes[MW_TOPIC_COUNT] = {
    [MW_TOPIC_REQUESTS] = "requests",
    [MW_TOPIC_RESULTS] = "results",
    [MW_TOPIC_DLQ] = "dlq",
};

const char *mw_topic_suffix(mw_topic_kind_t kind)
{
    return (unsigned)kind < MW_TOPIC_COUNT ? suffixes[kind] : "invalid";
}

int mw_topic_name(char *buf, size_t size, const char *pipeline, mw_topic_kind_t kind, char *errstr,
                  size_t errstr_size)
{
    size_t len = pipeline != NULL ? strlen(pipeline) : 0;
    if (len == 0)
        return mw_errf(MW_EINVAL, errstr, errstr_size, "pipeline name is empty");
    for (size_t i = 0; i < len; i++) {
        char c = pipeline[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return mw_errf(MW_EINVAL, errstr, errstr_size,
                           "pipeline name '%s': only letters, digits, '.', '_' and '-' are "
                           "allowed in Kafka topic names",
                           pipeline);
    }
    if (len + 1 + strlen("requests") > MW_TOPIC_NAME_MAX)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "pipeline name is %zu characters, at most %zu fit in a topic name", len,
                       (size_t)MW_TOPIC_NAME_MAX - 1 - strlen("requests"));
    if ((unsigned)kind >= MW_TOPIC_COUNT)
        return mw_errf(MW_EINVAL, errstr, errstr_size, "invalid topic kind");
    int n = snprintf(buf, size, "%s.%s", pipeline, suffixes[kind]);
    if (n < 0 || (size_t)n >= size)
        return mw_errf(MW_EINVAL, errstr, errstr_size, "topic name buffer too small");
    return MW_OK;
}

rd_kafka_t *mw_topics_admin_new(const mw_config_t *cfg, char *errstr, size_t errstr_size)
{
    rd_kafka_conf_t *conf = mw_kafka_conf_new(cfg, errstr, errstr_size);
    if (conf == NULL)
        return NULL;
    char kerr[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, kerr, sizeof(kerr));
    if (rk == NULL) {
        rd_kafka_conf_destroy(conf);
        mw_errf(MW_EKAFKA, errstr, errstr_size, "creating Kafka admin client: %s", kerr);
    }
    return rk;
}

static void fill_info(const struct rd_kafka_metadata *md, const char *topic, mw_topic_info_t *info)
{
    info->exists = 0;
    info->partitions = 0;
    for (int i = 0; i < md->topic_cnt; i++) {
        const rd_kafka_metadata_topic_t *t = &md->topics[i];
        if (strcmp(t->topic, topic) != 0)
            continue;
        if (t->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
            return;
        info->exists = 1;
        info->partitions = t->partition_cnt;
    }
}

/* Fetches metadata of every topic: asking for one topic by name could make a
 * broker with auto.create.topics.enable create it. */
static int metadata_all(rd_kafka_t *rk, int timeout_ms, const struct rd_kafka_metadata **md,
                        char *errstr, size_t errstr_size)
{
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 1, NULL, md, timeout_ms);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
        return mw_errf(err == RD_KAFKA_RESP_ERR__TIMED_OUT ? MW_ETIMEDOUT : MW_EKAFKA, errstr,
                       errstr_size, "fetching Kafka metadata: %s", rd_kafka_err2str(err));
    return MW_OK;
}

int mw_topic_describe(rd_kafka_t *rk, const char *topic, int timeout_ms, mw_topic_info_t *info,
                      char *errstr, size_t errstr_size)
{
    const struct rd_kafka_metadata *md;
    memset(info, 0, sizeof(*info));
    snprintf(info->name, sizeof(info->name), "%s", topic);
    int rc = metadata_all(rk, timeout_ms, &md, errstr, errstr_size);
    if (rc != MW_OK)
        return rc;
    fill_info(md, topic, info);
    rd_kafka_metadata_destroy(md);
    return MW_OK;
}

int mw_topics_describe(rd_kafka_t *rk, const char *pipeline, int timeout_ms,
                       mw_topic_info_t info[MW_TOPIC_COUNT], char *errstr, size_t errstr_size)
{
    const struct rd_kafka_metadata *md;
    memset(info, 0, sizeof(*info) * MW_TOPIC_COUNT);
    for (int k = 0; k < MW_TOPIC_COUNT; k++) {
        int rc = mw_topic_name(info[k].name, sizeof(info[k].name), pipeline, (mw_topic_kind_t)k,
                               errstr, errstr_size);
        if (rc != MW_OK)
            return rc;
    }
    int rc = metadata_all(rk, timeout_ms, &md, errstr, errstr_size);
    if (rc != MW_OK)
        return rc;
    for (int k = 0; k < MW_TOPIC_COUNT; k++)
        fill_info(md, info[k].name, &info[k]);
    rd_kafka_metadata_destroy(md);
    return MW_OK;
}

int mw_topics_create(rd_kafka_t *rk, const char *pipeline, int partitions, int results_partitions,
                     int dlq_partitions, int timeout_ms, mw_topic_info_t info[MW_TOPIC_COUNT],
                     char *errstr, size_t errstr_size)
{
    const int want[MW_TOPIC_COUNT] = {partitions, results_partitions, dlq_partitions};
    for (int k = 0; k < MW_TOPIC_COUNT; k++)
        if (want[k] < 1 || want[k] > 100000)
            return mw_errf(MW_EINVAL, errstr, errstr_size,
                           "%s: partition count %d is not between 1 and 100000",
                           mw_topic_suffix((mw_topic_kind_t)k), want[k]);
    int rc = mw_topics_describe(rk, pipeline, timeout_ms, info, errstr, errstr_size);
    if (rc != MW_OK)
        return rc;
    for (int k = 0; k < MW_TOPIC_COUNT; k++) {
        if (info[k].exists)
            continue;
        rc = mw_kafka_create_topic(rk, info[k].name, want[k], timeout_ms, errstr, errstr_size);
        if (rc != MW_OK)
            return rc;
        info[k].created = 1;
    }
    /* Metadata lags creation a little: wait until every topic shows up. */
    int64_t deadline = mw_now_ms() + timeout_ms;
    for (;;) {
        mw_topic_info_t now[MW_TOPIC_COUNT];
        rc = mw_topics_describe(rk, pipeline, timeout_ms, now, errstr, errstr_size);
        if (rc != MW_OK)
            return rc;
        int all = 1;
        for (int k = 0; k < MW_TOPIC_COUNT; k++) {
            info[k].exists = now[k].exists;
            info[k].partitions = now[k].partitions;
            all &= now[k].exists && now[k].partitions > 0;
        }
        if (all)
            return MW_OK;
        if (mw_now_ms() >= deadline)
            return mw_errf(MW_ETIMEDOUT, errstr, errstr_size,
                           "topics of pipeline %s created but not visible in metadata after %d "
                           "ms",
                           pipeline, timeout_ms);
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 100 * 1000000};
        nanosleep(&ts, NULL);
    }
}
