/* Consumer lag of group mw.P on P.requests (lag.h): committed offsets with
 * rd_kafka_committed, high watermarks with rd_kafka_query_watermark_offsets
 * (both in librdkafka 2.0.2), from one consumer handle per pipeline that never
 * subscribes, so the group's members are not disturbed. */
#include "lag.h"

#include "clock.h"
#include "err.h"
#include "kafka.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LAG_TIMEOUT_MS 2000

typedef struct lag_entry {
    char pipeline[64];
    rd_kafka_t *rk;
    int64_t read_ms; /* when Kafka was last asked; 0: never */
    int rc;
    char err[256];
    mw_partition_lag_t *parts;
    size_t nparts;
} lag_entry_t;

struct mw_lag {
    const mw_config_t *cfg;
    lag_entry_t *entries;
    size_t n;
};

mw_lag_t *mw_lag_new(const mw_config_t *cfg)
{
    mw_lag_t *lag = calloc(1, sizeof(*lag));
    if (lag != NULL)
        lag->cfg = cfg;
    return lag;
}

void mw_lag_destroy(mw_lag_t *lag)
{
    if (lag == NULL)
        return;
    for (size_t i = 0; i < lag->n; i++) {
        if (lag->entries[i].rk != NULL)
            rd_kafka_destroy(lag->entries[i].rk); /* never subscribed: nothing to close */
        free(lag->entries[i].parts);
    }
    free(lag->entries);
    free(lag);
}

static lag_entry_t *entry_of(mw_lag_t *lag, const char *pipeline)
{
    for (size_t i = 0; i < lag->n; i++)
        if (strcmp(lag->entries[i].pipeline, pipeline) == 0)
            return &lag->entries[i];
    lag_entry_t *e = realloc(lag->entries, (lag->n + 1) * sizeof(*e));
    if (e == NULL)
        return NULL;
    lag->entries = e;
    e = &lag->entries[lag->n++];
    memset(e, 0, sizeof(*e));
    snprintf(e->pipeline, sizeof(e->pipeline), "%s", pipeline);
    return e;
}

/* Asks Kafka for the partitions of the topic, the group's committed offsets
 * and each partition's watermarks into e. */
static int query(const mw_config_t *cfg, lag_entry_t *e)
{
    char topic[128], group[128];
    snprintf(topic, sizeof(topic), "%s.requests", e->pipeline);
    snprintf(group, sizeof(group), "mw.%s", e->pipeline);
    if (e->rk == NULL) {
        e->rk = mw_kafka_consumer_new(cfg, group, NULL, e->err, sizeof(e->err));
        if (e->rk == NULL)
            return MW_EKAFKA;
    }
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(e->rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t kerr =
        rkt ? rd_kafka_metadata(e->rk, 0, rkt, &md, LAG_TIMEOUT_MS) : RD_KAFKA_RESP_ERR__FAIL;
    if (rkt != NULL)
        rd_kafka_topic_destroy(rkt);
    if (kerr == RD_KAFKA_RESP_ERR_NO_ERROR && (md->topic_cnt != 1 || md->topics[0].err))
        kerr = md->topic_cnt != 1 ? RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC : md->topics[0].err;
    if (kerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(e->err, sizeof(e->err), "metadata of %s: %s", topic, rd_kafka_err2str(kerr));
        if (md != NULL)
            rd_kafka_metadata_destroy(md);
        return MW_EKAFKA;
    }
    int np = md->topics[0].partition_cnt;
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(np);
    for (int i = 0; i < np; i++)
        rd_kafka_topic_partition_list_add(list, topic, md->topics[0].partitions[i].id);
    rd_kafka_metadata_destroy(md);
    int rc = MW_OK;
    mw_partition_lag_t *parts = calloc((size_t)np + 1, sizeof(*parts));
    kerr = rd_kafka_committed(e->rk, list, LAG_TIMEOUT_MS);
    if (parts == NULL || kerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(e->err, sizeof(e->err), "committed offsets of group %s: %s", group,
                 parts ? rd_kafka_err2str(kerr) : "out of memory");
        rc = parts ? MW_EKAFKA : MW_ENOMEM;
        goto out_list;
    }
    for (int i = 0; i < list->cnt; i++) {
        mw_partition_lag_t *p = &parts[i];
        p->partition = list->elems[i].partition;
        p->committed = list->elems[i].offset >= 0 ? list->elems[i].offset : -1;
        kerr = rd_kafka_query_watermark_offsets(e->rk, topic, p->partition, &p->low, &p->high,
                                                LAG_TIMEOUT_MS);
        if (kerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
            snprintf(e->err, sizeof(e->err), "watermarks of %s [%d]: %s", topic, p->partition,
                     rd_kafka_err2str(kerr));
            rc = MW_EKAFKA;
            goto out_list;
        }
        p->lag = p->high - (p->committed >= 0 ? p->committed : p->low);
        if (p->lag < 0)
            p->lag = 0;
    }
    free(e->parts);
    e->parts = parts;
    e->nparts = (size_t)list->cnt;
    parts = NULL;
out_list:
    free(parts);
    rd_kafka_topic_partition_list_destroy(list);
    return rc;
}

int mw_lag_read(mw_lag_t *lag, const char *pipeline, int64_t max_age_ms, mw_partition_lag_t **out,
                size_t *n, char *errstr, size_t errstr_size)
{
    *out = NULL;
    *n = 0;
    lag_entry_t *e = entry_of(lag, pipeline);
    if (e == NULL)
        return MW_ENOMEM;
    /* After a failure Kafka is asked ten times less often: each try can block
     * its caller for up to LAG_TIMEOUT_MS per request. */
    int64_t now = mw_now_ms(), age = e->rc == MW_OK ? max_age_ms : 10 * max_age_ms;
    if (e->read_ms == 0 || now - e->read_ms >= age) {
        e->rc = query(lag->cfg, e);
        e->read_ms = now;
    }
    if (e->rc != MW_OK) {
        snprintf(errstr, errstr_size, "%s", e->err);
        return e->rc;
    }
    *out = calloc(e->nparts + 1, sizeof(**out));
    if (*out == NULL)
        return MW_ENOMEM;
    memcpy(*out, e->parts, e->nparts * sizeof(**out));
    *n = e->nparts;
    return MW_OK;
}
