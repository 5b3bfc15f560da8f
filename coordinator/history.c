/* Per-second history samples of each pipeline (history.h). */
#include "history.h"

#include "clock.h"
#include "cluster/keys.h"
#include "err.h"
#include "log.h"
#include "topics/lag.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#define LAG_EVERY_MS 1000

struct mw_history {
    const mw_config_t *cfg;
    const mw_pipelines_t *spec;
    pthread_t thread;
    int started;
    pthread_mutex_t lock;
    int stop;       /* lock */
    int64_t *total; /* lock: the last total lag of each pipeline, -1 while unknown */
};

/* The lag thread: every pipeline's total lag once per LAG_EVERY_MS. */
static void *lag_main(void *arg)
{
    mw_history_t *h = arg;
    char err[256];
    mw_lag_t *lag = mw_lag_new(h->cfg);
    for (;;) {
        int64_t t0 = mw_now_ms();
        for (size_t p = 0; lag != NULL && p < h->spec->count; p++) {
            mw_partition_lag_t *parts = NULL;
            size_t n = 0;
            int64_t total = -1;
            if (mw_lag_read(lag, h->spec->items[p].name, LAG_EVERY_MS, &parts, &n, err,
                            sizeof(err)) == MW_OK) {
                total = 0;
                for (size_t i = 0; i < n; i++)
                    total += parts[i].lag;
            }
            free(parts);
            pthread_mutex_lock(&h->lock);
            h->total[p] = total;
            pthread_mutex_unlock(&h->lock);
        }
        for (;;) {
            pthread_mutex_lock(&h->lock);
            int stop = h->stop;
            pthread_mutex_unlock(&h->lock);
            if (stop) {
                mw_lag_destroy(lag);
                return NULL;
            }
            if (mw_now_ms() >= t0 + LAG_EVERY_MS)
                break;
            struct timespec ts = {.tv_sec = 0, .tv_nsec = 50 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
}

mw_history_t *mw_history_new(const mw_config_t *cfg, const mw_pipelines_t *spec)
{
    mw_history_t *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return NULL;
    h->total = malloc((spec->count + 1) * sizeof(*h->total));
    if (h->total == NULL) {
        free(h);
        return NULL;
    }
    for (size_t p = 0; p < spec->count; p++)
        h->total[p] = -1;
    h->cfg = cfg;
    h->spec = spec;
    pthread_mutex_init(&h->lock, NULL);
    return h;
}

void mw_history_sample(mw_history_t *h, mw_redis_t *r)
{
    if (!h->started) {
        h->started = pthread_create(&h->thread, NULL, lag_main, h) == 0;
        if (!h->started)
            mw_log(MW_LOG_WARN, "coordinator", "no thread for the lag samples: lag stays -1");
    }
    for (size_t p = 0; p < h->spec->count; p++) {
        char stats[MW_KEY_MAX], history[MW_KEY_MAX];
        const char *name = h->spec->items[p].name;
        redisReply *reply = NULL;
        if (mw_redis_cmd(r, &reply, "HMGET %s results errors replays",
                         mw_key_stats(r, name, stats, sizeof(stats))) != MW_OK)
            return;
        long long v[3] = {0, 0, 0};
        for (size_t i = 0; reply->type == REDIS_REPLY_ARRAY && i < reply->elements && i < 3; i++)
            if (reply->element[i]->type == REDIS_REPLY_STRING)
                v[i] = atoll(reply->element[i]->str);
        freeReplyObject(reply);
        long long lag = (long long)mw_history_lag(h, p);
        if (mw_redis_cmd(r, &reply,
                         "XADD %s MAXLEN ~ %d * results %lld errors %lld replays %lld lag %lld",
                         mw_key_history(r, name, history, sizeof(history)), MW_HISTORY_MAXLEN, v[0],
                         v[1], v[2], lag) == MW_OK)
            freeReplyObject(reply);
    }
}

int64_t mw_history_lag(mw_history_t *h, size_t p)
{
    pthread_mutex_lock(&h->lock);
    int64_t lag = h->total[p];
    pthread_mutex_unlock(&h->lock);
    return lag;
}

void mw_history_destroy(mw_history_t *h)
{
    if (h == NULL)
        return;
    if (h->started) {
        pthread_mutex_lock(&h->lock);
        h->stop = 1;
        pthread_mutex_unlock(&h->lock);
        pthread_join(h->thread, NULL);
    }
    pthread_mutex_destroy(&h->lock);
    free(h->total);
    free(h);
}
