/* Configuration: one table of keys (config.c) with type, default, bounds and doc.
 * Sources, later ones winning: the table's defaults, a JSON config file
 * (--config=FILE or MW_CONFIG), MW_* environment variables, --key=value flags.
 * kafka.* keys go unchanged to librdkafka (validated against it at load). */
#ifndef MW_CONFIG_H
#define MW_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define MW_CFG_STR_MAX 256

typedef struct mw_kv {
    char *key;
    char *value;
} mw_kv_t;

typedef struct mw_config {
    char cluster[64];   /* cluster.name: the mw:{cluster}: Redis key prefix */
    char log_level[16]; /* log.level */

    char redis_host[MW_CFG_STR_MAX];
    int64_t redis_port;
    char redis_password[MW_CFG_STR_MAX];
    int64_t redis_db;
    int64_t redis_connect_timeout_ms;
    int64_t redis_command_timeout_ms;
    int64_t redis_retry_max_ms;

    int64_t kafka_timeout_ms; /* kafka_client.timeout_ms: admin and transaction calls */

    int64_t records_max_tensor_bytes; /* records.max_tensor_bytes: largest request tensor */

    int64_t world_timeout_ms;                  /* world.timeout_ms: failure-detection bound */
    int64_t world_keepalive_ms;                /* world.keepalive_ms: ping interval on idle links */
    int64_t world_max_tensor_bytes;            /* world.max_tensor_bytes: largest tensor frame */
    char world_listen_host[MW_CFG_STR_MAX];    /* world.listen_host */
    int64_t world_listen_port;                 /* world.listen_port (0: any) */
    char world_advertise_host[MW_CFG_STR_MAX]; /* world.advertise_host ("": listen host) */
    int64_t world_socket_buffer_bytes;         /* world.socket_buffer_bytes (0: kernel) */

    /* control plane (coordinator/, worker/membership.c) */
    char pipeline_spec[4096];        /* pipeline.spec: "name:N", JSON, or a JSON file */
    int64_t heartbeat_interval_ms;   /* heartbeat.interval_ms */
    int64_t heartbeat_ttl_ms;        /* heartbeat.ttl_ms: sweep removes older workers */
    int64_t coordinator_lease_ms;    /* coordinator.lease_ms */
    int64_t coordinator_interval_ms; /* coordinator.interval_ms: loop period */
    int64_t plan_max_fanout;         /* plan.max_fanout */
    int64_t events_maxlen;           /* events.maxlen: cap of the events stream */
    char worker_id[64];              /* worker.id ("": host.pid.random) */
    char worker_pipeline[48];        /* worker.pipeline */
    char worker_stage[16];           /* worker.stage: "auto" or a number */
    char worker_device[32];          /* worker.device: cpu, cuda:N */
    int64_t worker_capacity;         /* worker.capacity */
    int64_t worker_drain_timeout_ms; /* worker.drain_timeout_ms */

    /* autoscaling (coordinator/autoscale.c) and the host agent (ops/agent/) */
    int64_t autoscale_interval_ms;       /* autoscale.interval_ms: decision period */
    int64_t autoscale_window_ms;         /* autoscale.window_ms: measurement window */
    int64_t autoscale_busy_high_pct;     /* autoscale.busy_high_pct: bottleneck threshold */
    int64_t autoscale_busy_low_pct;      /* autoscale.busy_low_pct: spare-capacity threshold */
    int64_t autoscale_lag_min;           /* autoscale.lag_min: backlog that can scale out */
    int64_t autoscale_cooldown_ms;       /* autoscale.cooldown_ms: between two decisions */
    int64_t autoscale_scale_in_after_ms; /* autoscale.scale_in_after_ms: sustained spare */
    char agent_id[64];                   /* agent.id ("": host name) */
    char agent_slots[256];               /* agent.slots: cpu:N | cuda:0,1,... */
    char agent_worker_command[1024];     /* agent.worker_command: sh -c, starts a worker */
    int64_t agent_interval_ms;           /* agent.interval_ms: agent loop period */
    int64_t agent_backoff_ms;            /* agent.backoff_ms: first restart backoff */
    int64_t agent_backoff_max_ms;        /* agent.backoff_max_ms: longest restart backoff */

    /* data plane (worker/dataplane.c, worker/origin.c) */
    char model_path[MW_CFG_STR_MAX];    /* model.path: used when the pipeline names no model */
    int64_t worker_max_inflight;        /* worker.max_inflight: origin window (pauses input) */
    int64_t worker_max_inflight_bytes;  /* worker.max_inflight_bytes: its size in bytes */
    int64_t worker_queue_depth;         /* worker.queue_depth: unfinished sends per world */
    int64_t batch_max_rows;             /* batch.max_rows: rows per stage call, per request */
    int64_t batch_max_delay_us;         /* batch.max_delay_us: origin waits to fill a batch */
    int64_t worker_compute_delay_us;    /* worker.compute_delay_us: testing, slower stage */
    int64_t worker_compute_delay_stage; /* worker.compute_delay_stage: -1 every stage */
    char results_delivery[16];          /* results.delivery: exactly-once | at-least-once */
    int64_t results_commit_interval_ms; /* results.commit_interval_ms: longest wait to commit */
    int64_t results_commit_min_gap_ms;  /* results.commit_min_gap_ms: between two commits */
    char results_reply_topics[1024];    /* results.reply_topics: allowed reply topic globs */
    int64_t request_max_attempts;       /* request.max_attempts */
    int64_t request_timeout_ms;         /* request.timeout_ms: default deadline */
    int64_t request_attempt_timeout_ms; /* request.attempt_timeout_ms: retry unanswered */

    /* kafka.<property>=value, in the order they were set (later ones win). */
    mw_kv_t *kafka;
    size_t kafka_count;
} mw_config_t;

/* Fills cfg with the table's defaults. cfg owns its kafka pairs: mw_config_fini frees them. */
void mw_config_init(mw_config_t *cfg);
void mw_config_fini(mw_config_t *cfg);

/* Sets one key from text; origin names the source in errors ("flag", "MW_REDIS_PORT",
 * "config.json:12"). Unknown keys, wrong types and out-of-range values fail with
 * MW_EINVAL and a message naming the key. */
int mw_config_set(mw_config_t *cfg, const char *key, const char *value, const char *origin,
                  char *errstr, size_t errstr_size);

/* Loads a JSON config file: an object whose keys are config keys, either flat
 * ("redis.port": 6380) or nested ({"redis": {"port": 6380}}). */
int mw_config_load_file(mw_config_t *cfg, const char *path, char *errstr, size_t errstr_size);

/* Loads MW_* environment variables (MW_REDIS_PORT -> redis.port,
 * MW_KAFKA_BOOTSTRAP_SERVERS -> kafka.bootstrap.servers). */
int mw_config_load_env(mw_config_t *cfg, char *errstr, size_t errstr_size);

/* The whole sequence for a program: init, file, env, flags. Flags are
 * `--key=value` where key contains a dot, and `--config=FILE`/`--config FILE`;
 * they are removed from argv (argc is updated) and every other argument is
 * left, in order, for the program. On failure cfg is finalized. */
int mw_config_load(mw_config_t *cfg, int *argc, char **argv, char *errstr, size_t errstr_size);

/* Copies src into dst, its kafka pairs too (dst is finalized on failure). The
 * caller frees dst with mw_config_fini. */
int mw_config_copy(mw_config_t *dst, const mw_config_t *src, char *errstr, size_t errstr_size);

/* Value of a kafka.* property as configured, or NULL. */
const char *mw_config_kafka_get(const mw_config_t *cfg, const char *property);

/* Prints the key table: `--help` text (markdown = 0) or the README table (1). */
void mw_config_print_help(FILE *out, int markdown);

/* Prints every key with its current value (secrets masked). */
void mw_config_print(const mw_config_t *cfg, FILE *out);

#endif
