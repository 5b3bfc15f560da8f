/* Shared by mwctl's Kafka client commands (see client.h). */
#include "client.h"

#include "clock.h"
#include "err.h"
#include "kafka.h"
#include "topics/topics.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

double mwctl_now_s(void)
{
    return (double)mw_now_us() / 1e6;
}

int64_t mwctl_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void mwctl_progress_init(mwctl_progress_t *p, const char *what, int enabled)
{
    *p = (mwctl_progress_t){.enabled = enabled,
                            .tty = isatty(STDERR_FILENO),
                            .start = mwctl_now_s(),
                            .last = mwctl_now_s(),
                            .what = what};
}

void mwctl_progress_show(mwctl_progress_t *p, int64_t done, int64_t total, int64_t acked, int force)
{
    if (!p->enabled)
        return;
    double t = mwctl_now_s();
    if (!force && t - p->last < (p->tty ? 0.2 : 2.0))
        return;
    p->last = t;
    double el = t - p->start;
    double rate = el > 0 ? (double)(done - p->base) / el : 0;
    char of[32] = "", ack[40] = "", eta[32] = "";
    if (total > 0)
        snprintf(of, sizeof(of), "/%" PRId64 " (%d%%)", total, (int)(100 * done / total));
    if (acked >= 0)
        snprintf(ack, sizeof(ack), ", %" PRId64 " acked", acked);
    if (total > 0 && rate > 0 && done < total) {
        int s = (int)((double)(total - done) / rate + 0.5);
        snprintf(eta, sizeof(eta), ", ETA %d:%02d", s / 60, s % 60);
    }
    if (p->tty) {
        char bar[33] = "";
        if (total > 0) {
            int fill = (int)(30 * done / total);
            bar[0] = '[';
            for (int i = 0; i < 30; i++)
                bar[i + 1] = i < fill ? '#' : '.';
            bar[31] = ']';
            bar[32] = '\0';
        }
        fprintf(stderr, "\r%s %s %" PRId64 "%s%s, %.0f/s%s\033[K", p->what, bar, done, of, ack,
                rate, eta);
    } else {
        fprintf(stderr, "%s: %" PRId64 "%s%s, %.0f/s%s\n", p->what, done, of, ack, rate, eta);
    }
}

void mwctl_progress_end(mwctl_progress_t *p)
{
    if (p->enabled && p->tty)
        fputc('\n', stderr);
}

void mwctl_with_kafka_default(const mw_config_t *cfg, mw_config_t *out, mw_kv_t *kv, char *key,
                              char *value)
{
    *out = *cfg;
    kv[0] = (mw_kv_t){.key = key, .value = value};
    if (cfg->kafka_count > 0)
        memcpy(kv + 1, cfg->kafka, cfg->kafka_count * sizeof(*kv));
    out->kafka = kv;
    out->kafka_count = cfg->kafka_count + 1;
}

rd_kafka_t *mwctl_consumer_open(const mw_config_t *cfg, const char *what, const char *topic,
                                int from_beginning, int64_t **ends, int *nparts, char *errstr,
                                size_t errstr_size)
{
    char group[128];
    snprintf(group, sizeof(group), "mwctl-%s-%ld-%" PRId64, what, (long)getpid(), mwctl_wall_ms());
    rd_kafka_t *rk = mw_kafka_consumer_new(cfg, group, NULL, errstr, errstr_size);
    if (rk == NULL)
        return NULL;
    mw_topic_info_t info;
    int timeout_ms = (int)cfg->kafka_timeout_ms;
    if (mw_topic_describe(rk, topic, timeout_ms, &info, errstr, errstr_size) != MW_OK)
        goto out_destroy;
    if (!info.exists) {
        mw_errf(MW_ENOTFOUND, errstr, errstr_size, "topic %s does not exist (mwctl topics create)",
                topic);
        goto out_destroy;
    }
    int64_t *hi = calloc((size_t)info.partitions, sizeof(*hi));
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(info.partitions);
    for (int p = 0; hi != NULL && p < info.partitions; p++) {
        int64_t lo;
        rd_kafka_resp_err_t err =
            rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi[p], timeout_ms);
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            mw_errf(MW_EKAFKA, errstr, errstr_size, "%s [%d]: querying offsets: %s", topic, p,
                    rd_kafka_err2str(err));
            goto out_parts;
        }
        rd_kafka_topic_partition_list_add(parts, topic, p)->offset =
            from_beginning ? RD_KAFKA_OFFSET_BEGINNING : hi[p];
    }
    if (hi == NULL) {
        mw_errf(MW_ENOMEM, errstr, errstr_size, "out of memory");
        goto out_parts;
    }
    rd_kafka_resp_err_t err = rd_kafka_assign(rk, parts);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        mw_errf(MW_EKAFKA, errstr, errstr_size, "assigning %s: %s", topic, rd_kafka_err2str(err));
        goto out_parts;
    }
    rd_kafka_topic_partition_list_destroy(parts);
    if (ends != NULL) {
        *ends = hi;
        *nparts = info.partitions;
    } else {
        free(hi);
    }
    return rk;
out_parts:
    rd_kafka_topic_partition_list_destroy(parts);
    free(hi);
out_destroy:
    mw_kafka_destroy(rk);
    return NULL;
}
