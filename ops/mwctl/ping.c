/* mwctl ping: checks that the configured Redis and Kafka answer, and how fast. */
#include "mwctl.h"

#include "clock.h"
#include "err.h"
#include "kafka.h"
#include "redis.h"

#include <stdio.h>
#include <string.h>

/* Milliseconds since t0_us (from mw_now_us). */
static double elapsed_ms(int64_t t0_us)
{
    return (double)(mw_now_us() - t0_us) / 1e3;
}

static int ping_redis(const mw_config_t *cfg)
{
    char err[512];
    int64_t t0 = mw_now_us();
    mw_redis_t *r = mw_redis_new(cfg, 0, err, sizeof(err));
    if (r == NULL) {
        printf("redis  %s:%lld  DOWN  %s\n", cfg->redis_host, (long long)cfg->redis_port, err);
        return 1;
    }
    redisReply *reply = NULL;
    int rc = mw_redis_cmd(r, &reply, "INFO server");
    if (rc != MW_OK) {
        printf("redis  %s:%lld  DOWN  %s\n", cfg->redis_host, (long long)cfg->redis_port,
               mw_redis_errstr(r));
    } else {
        const char *v = strstr(reply->str, "redis_version:");
        printf("redis  %s:%lld  up    %.1f ms, version %.*s\n", cfg->redis_host,
               (long long)cfg->redis_port, elapsed_ms(t0), v ? (int)strcspn(v + 14, "\r\n") : 1,
               v ? v + 14 : "?");
        freeReplyObject(reply);
    }
    mw_redis_destroy(r);
    return rc == MW_OK ? 0 : 1;
}

static int ping_kafka(const mw_config_t *cfg)
{
    char err[512];
    const char *servers = mw_config_kafka_get(cfg, "bootstrap.servers");
    if (servers == NULL)
        servers = MW_KAFKA_DEFAULT_BOOTSTRAP;
    int64_t t0 = mw_now_us();
    rd_kafka_conf_t *conf = mw_kafka_conf_new(cfg, err, sizeof(err));
    rd_kafka_t *rk = conf ? rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err)) : NULL;
    if (rk == NULL) {
        if (conf != NULL)
            rd_kafka_conf_destroy(conf);
        printf("kafka  %s  DOWN  %s\n", servers, err);
        return 1;
    }
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t kerr = rd_kafka_metadata(rk, 0, NULL, &md, 5000);
    int rc = 0;
    if (kerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
        printf("kafka  %s  DOWN  %s\n", servers, rd_kafka_err2str(kerr));
        rc = 1;
    } else {
        printf("kafka  %s  up    %.1f ms, %d broker(s), %d topic(s)\n", servers, elapsed_ms(t0),
               md->broker_cnt, md->topic_cnt);
        rd_kafka_metadata_destroy(md);
    }
    rd_kafka_destroy(rk);
    return rc;
}

int mwctl_ping(int argc, char **argv, const mw_config_t *cfg)
{
    if (argc > 1) {
        fprintf(stderr, "usage: mwctl ping\n  checks that Redis (redis.*) and Kafka "
                        "(kafka.bootstrap.servers) answer; exit 1 if either does not\n");
        return strcmp(argv[1], "--help") == 0 ? 0 : 2;
    }
    int rc = ping_redis(cfg);
    rc |= ping_kafka(cfg);
    return rc;
}
