/* mw-agent: one per host. Keeps as many mw-worker processes on this host's
 * device slots as the pool needs to reach its share of desired:{P} (README,
 * Autoscaling; the share leaves out the --stage auto workers of auto:{P}, which
 * the coordinator moves between stages itself): claims a free slot and starts a
 * worker when the pool is short at a stage, stops one with SIGTERM (the worker
 * drains, then leaves) when the pool holds more than its share, backs off from workers that exit
 * early, and reports the host's capacity in agent:{id}. Its workers run in their own process groups
 * and outlive it: a restarted agent adopts them from the `slots` hash. */
#include "clock.h"
#include "cluster/events.h"
#include "cluster/keys.h"
#include "cluster/pipeline.h"
#include "cluster/pool.h"
#include "config.h"
#include "err.h"
#include "log.h"
#include "program.h"
#include "redis.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* A worker that exits sooner than this after its start counts as a crash. */
#define EARLY_EXIT_MS 10000
/* A draining worker still there this long after worker.drain_timeout_ms gets
 * SIGKILL: it ignores SIGTERM (hung, stopped) and would hold its slot forever. */
#define DRAIN_KILL_MARGIN_MS 5000
#define SLOTS_MAX            256

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

typedef struct slot {
    char name[160];  /* "host/cpu#0", "host/cuda:1": the key in `slots` */
    char device[32]; /* worker.device of its workers */
    pid_t pid;       /* its worker, 0 when free */
    int child;       /* the worker is our child (else adopted: polled with kill 0) */
    int draining;    /* SIGTERM sent */
    int64_t term_ms; /* when */
    int killed;      /* SIGKILL sent */
    size_t pipeline; /* index in the spec */
    int stage;
    int64_t started_ms;
    char value[MW_POOL_VALUE_MAX]; /* its value in `slots`, for mw_pool_release */
} slot_t;

/* Restart backoff of one pipeline stage. */
typedef struct backoff {
    int early_exits; /* consecutive early exits */
    int64_t next_start_ms;
} backoff_t;

typedef struct agent {
    mw_config_t *cfg;
    mw_redis_t *r;
    mw_pipelines_t spec;
    char id[64], host[64];
    slot_t slots[SLOTS_MAX];
    int nslots;
    backoff_t *backoff; /* [pipeline * MW_PIPELINE_MAX_STAGES + stage] */
    int64_t exits;      /* early exits seen */
    char last_exit[512];
} agent_t;

/* "cpu:N" or "cuda:0,1,...": the slots of this host. */
static int parse_slots(agent_t *a, const char *text, char *err, size_t errsize)
{
    char *end;
    if (strncmp(text, "cpu:", 4) == 0) {
        errno = 0;
        long n = strtol(text + 4, &end, 10);
        if (errno != 0 || end == text + 4 || *end != '\0' || n < 1 || n > SLOTS_MAX)
            return mw_errf(MW_EINVAL, err, errsize, "agent.slots '%s': cpu:N needs N in 1..%d",
                           text, SLOTS_MAX);
        for (int i = 0; i < n; i++) {
            snprintf(a->slots[i].name, sizeof(a->slots[i].name), "%s/cpu#%d", a->host, i);
            snprintf(a->slots[i].device, sizeof(a->slots[i].device), "cpu");
        }
        a->nslots = (int)n;
        return MW_OK;
    }
    if (strncmp(text, "cuda:", 5) != 0)
        return mw_errf(MW_EINVAL, err, errsize, "agent.slots '%s': expected cpu:N or cuda:0,1,...",
                       text);
    const char *p = text + 5;
    for (;;) {
        errno = 0;
        long dev = strtol(p, &end, 10);
        if (errno != 0 || end == p || dev < 0 || dev > 1023 || (*end != ',' && *end != '\0'))
            return mw_errf(MW_EINVAL, err, errsize,
                           "agent.slots '%s': cuda: needs a list of device numbers 0..1023", text);
        if (a->nslots == SLOTS_MAX)
            return mw_errf(MW_EINVAL, err, errsize, "agent.slots '%s': over %d slots", text,
                           SLOTS_MAX);
        for (int i = 0; i < a->nslots; i++)
            if (atoi(a->slots[i].device + 5) == dev)
                return mw_errf(MW_EINVAL, err, errsize, "agent.slots '%s': cuda:%ld listed twice",
                               text, dev);
        slot_t *s = &a->slots[a->nslots++];
        snprintf(s->device, sizeof(s->device), "cuda:%ld", dev);
        snprintf(s->name, sizeof(s->name), "%s/cuda:%ld", a->host, dev);
        if (*end == '\0')
            return MW_OK;
        p = end + 1;
    }
}

static void event(agent_t *a, const char *type, const char *msg)
{
    mw_events_add(a->r, a->cfg->events_maxlen, type, "agent", a->id, "msg", msg,
                  (const char *)NULL);
}

/* The worker keeps 0-2 only: the agent's Redis socket and the rest are not its. */
static void close_inherited_fds(void)
{
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    closefrom(3);
#else
    long max = sysconf(_SC_OPEN_MAX);
    for (long fd = 3; fd < (max > 0 ? max : 1024); fd++)
        close((int)fd);
#endif
}

/* Whether process pid is the worker an agent started on slot: alive, and its
 * environment names the slot (MW_AGENT_SLOT). A pid is reused once its process
 * is gone (after a reboot, at once): `slots` alone must not make an agent
 * adopt, signal or keep a slot for a process that is not its worker. */
static int is_slot_worker(pid_t pid, const char *slot)
{
    char path[64], want[MW_POOL_VALUE_MAX + 16], env[65536];
    snprintf(path, sizeof(path), "/proc/%lld/environ", (long long)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0; /* gone, or not ours to read */
    size_t n = fread(env, 1, sizeof(env) - 1, f);
    fclose(f);
    env[n] = '\0';
    int len = snprintf(want, sizeof(want), "MW_AGENT_SLOT=%s", slot);
    for (size_t i = 0; i < n; i += strlen(env + i) + 1)
        if (strncmp(env + i, want, (size_t)len + 1) == 0)
            return 1;
    return 0;
}

/* sig to the worker on s: its group (sh -c without exec too), else the worker
 * alone (a group that is gone); 0 or -1 with errno. An adopted worker is
 * checked to be the slot's first: its pid may have been reused. */
static int signal_worker(const slot_t *s, int sig)
{
    if (!s->child && !is_slot_worker(s->pid, s->name)) {
        errno = ESRCH;
        return -1;
    }
    if (kill(-s->pid, sig) == 0)
        return 0;
    return errno == ESRCH ? kill(s->pid, sig) : -1;
}

/* Claims s and starts a worker there: mw_pool_claim's answer. */
static int start_worker(agent_t *a, slot_t *s, size_t p, int stage)
{
    const char *pipeline = a->spec.items[p].name;
    int rc = mw_pool_claim(a->r, pipeline, stage, a->id, s->name);
    if (rc != 1)
        return rc;
    mw_pool_slot_value(s->value, sizeof(s->value), a->id, 0, pipeline, stage);
    char stage_text[16];
    snprintf(stage_text, sizeof(stage_text), "%d", stage);
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0); /* outlives the agent; a signal to the agent's group spares it */
        close_inherited_fds();
        setenv("MW_WORKER_PIPELINE", pipeline, 1);
        setenv("MW_WORKER_STAGE", stage_text, 1);
        setenv("MW_WORKER_DEVICE", s->device, 1);
        setenv("MW_AGENT_SLOT", s->name, 1);
        execl("/bin/sh", "sh", "-c", a->cfg->agent_worker_command, (char *)NULL);
        _exit(127);
    }
    if (pid < 0) {
        mw_log(MW_LOG_ERROR, "agent", "fork: %s", strerror(errno));
        mw_pool_release(a->r, pipeline, stage, a->id, s->name, s->value);
        return MW_ENOMEM;
    }
    /* Also here, so that the group exists before the child gets to it: a
     * kill(-pid) soon after must not miss it (EACCES: it exec'd already). */
    setpgid(pid, pid);
    s->pid = pid;
    s->child = 1;
    s->draining = 0;
    s->killed = 0;
    s->pipeline = p;
    s->stage = stage;
    s->started_ms = mw_now_ms();
    if (mw_pool_started(a->r, pipeline, stage, a->id, s->name, pid) == MW_OK)
        mw_pool_slot_value(s->value, sizeof(s->value), a->id, pid, pipeline, stage);
    char msg[512];
    snprintf(msg, sizeof(msg), "started worker pid %lld for %s stage %d on %s", (long long)pid,
             pipeline, stage, s->name);
    mw_log(MW_LOG_INFO, "agent", "%s", msg);
    event(a, "agent_start", msg);
    return rc;
}

/* The worker on s is gone (status from waitpid, -1 when adopted and unknown). */
static void worker_gone(agent_t *a, slot_t *s, int status)
{
    const char *pipeline = a->spec.items[s->pipeline].name;
    int64_t ran_ms = mw_now_ms() - s->started_ms;
    char how[64], msg[512];
    if (status == -1)
        snprintf(how, sizeof(how), "exited");
    else if (WIFSIGNALED(status))
        snprintf(how, sizeof(how), "was killed by signal %d", WTERMSIG(status));
    else
        snprintf(how, sizeof(how), "exited with status %d", WEXITSTATUS(status));
    mw_pool_release(a->r, pipeline, s->stage, a->id, s->name, s->value);
    backoff_t *b = &a->backoff[s->pipeline * MW_PIPELINE_MAX_STAGES + (size_t)s->stage];
    if (s->draining) {
        snprintf(msg, sizeof(msg), "worker pid %lld of %s stage %d on %s stopped (%s)",
                 (long long)s->pid, pipeline, s->stage, s->name, how);
        mw_log(MW_LOG_INFO, "agent", "%s", msg);
        event(a, "agent_stop", msg);
    } else if (ran_ms < EARLY_EXIT_MS && s->started_ms > 0) {
        b->early_exits++;
        int64_t wait = a->cfg->agent_backoff_ms;
        for (int i = 1; i < b->early_exits && wait < a->cfg->agent_backoff_max_ms; i++)
            wait *= 2;
        if (wait > a->cfg->agent_backoff_max_ms)
            wait = a->cfg->agent_backoff_max_ms;
        b->next_start_ms = mw_now_ms() + wait;
        a->exits++;
        snprintf(msg, sizeof(msg),
                 "worker pid %lld of %s stage %d on %s %s after %lld ms (early exit %d in a row): "
                 "next start in %lld ms",
                 (long long)s->pid, pipeline, s->stage, s->name, how, (long long)ran_ms,
                 b->early_exits, (long long)wait);
        snprintf(a->last_exit, sizeof(a->last_exit), "%s", msg);
        mw_log(MW_LOG_WARN, "agent", "%s", msg);
        event(a, "worker_crash", msg);
    } else {
        b->early_exits = 0;
        snprintf(msg, sizeof(msg), "worker pid %lld of %s stage %d on %s %s after %lld ms",
                 (long long)s->pid, pipeline, s->stage, s->name, how, (long long)ran_ms);
        snprintf(a->last_exit, sizeof(a->last_exit), "%s", msg);
        mw_log(MW_LOG_WARN, "agent", "%s", msg);
        event(a, "worker_exit", msg);
    }
    s->pid = 0;
    s->draining = 0;
    s->killed = 0;
}

static void reap(agent_t *a)
{
    for (int i = 0; i < a->nslots; i++) {
        slot_t *s = &a->slots[i];
        if (s->pid == 0)
            continue;
        int status = 0;
        if (s->child) {
            if (waitpid(s->pid, &status, WNOHANG) == s->pid)
                worker_gone(a, s, status);
        } else if (!is_slot_worker(s->pid, s->name)) {
            worker_gone(a, s, -1);
        }
    }
}

/* Slot s in use according to `slots` but not by this agent (not since it
 * started): its worker is freed when it is gone, whichever agent claimed it
 * (a slot on which a worker is still being started, pid 0, is left alone), or,
 * with adopt_mine, adopted when it is this agent's (it was restarted). */
static void take_over(agent_t *a, slot_t *s, int adopt_mine)
{
    char key[MW_KEY_MAX];
    redisReply *reply = NULL;
    if (mw_redis_cmd(a->r, &reply, "HGET %s %s", mw_key(a->r, MW_KEY_SLOTS, key, sizeof(key)),
                     s->name) != MW_OK)
        return;
    char owner[64] = "", pipeline[MW_PIPELINE_NAME_MAX] = "", value[MW_POOL_VALUE_MAX] = "";
    long long pid = 0;
    int stage = -1;
    if (reply->type == REDIS_REPLY_STRING) {
        snprintf(value, sizeof(value), "%s", reply->str);
        sscanf(value, "%63s %lld %47s %d", owner, &pid, pipeline, &stage);
    }
    freeReplyObject(reply);
    if (owner[0] == '\0' || pid <= 0)
        return;
    /* A slot of this agent's from before its restart must name its worker;
     * another agent's may name a child between fork and exec (its environment
     * not yet the worker's): only a pid that is gone frees it. */
    int mine = adopt_mine && strcmp(owner, a->id) == 0;
    if (mine ? !is_slot_worker((pid_t)pid, s->name) : kill((pid_t)pid, 0) != 0 && errno == ESRCH) {
        mw_log(MW_LOG_INFO, "agent", "freeing %s: its worker pid %lld (agent %s) is gone", s->name,
               pid, owner);
        /* Only if it still holds what was read: its agent may have freed and
         * claimed it again meanwhile. */
        mw_pool_release(a->r, pipeline, stage, owner, s->name, value);
        return;
    }
    const mw_pipeline_spec_t *ps = mw_pipelines_find(&a->spec, pipeline);
    if (!mine || ps == NULL || stage < 0 || stage >= ps->nstages)
        return; /* another agent's, or a pipeline this one does not serve */
    s->pid = (pid_t)pid;
    s->pipeline = (size_t)(ps - a->spec.items);
    s->stage = stage;
    s->child = 0;
    s->started_ms = 0; /* unknown: its end is no early exit */
    snprintf(s->value, sizeof(s->value), "%s", value);
    mw_log(MW_LOG_INFO, "agent", "adopted worker pid %lld of %s stage %d on %s", pid, pipeline,
           stage, s->name);
}

/* The desired count of every stage of pipeline p; 0 when not published. */
static int read_desired(agent_t *a, size_t p, int *desired)
{
    const mw_pipeline_spec_t *ps = &a->spec.items[p];
    char key[MW_KEY_MAX];
    redisReply *reply = NULL;
    if (mw_redis_cmd(a->r, &reply, "HGETALL %s",
                     mw_key_desired(a->r, ps->name, key, sizeof(key))) != MW_OK)
        return 0;
    int found = 0;
    for (size_t i = 0; reply->type == REDIS_REPLY_ARRAY && i + 1 < reply->elements; i += 2) {
        int s = atoi(reply->element[i]->str);
        if (s >= 0 && s < ps->nstages) {
            desired[s] = atoi(reply->element[i + 1]->str);
            found = 1;
        }
    }
    freeReplyObject(reply);
    return found;
}

/* One pass: for each stage, one worker started where the pool is short, one
 * stopped where it holds more than desired. */
static void act(agent_t *a)
{
    int64_t now = mw_now_ms();
    for (size_t p = 0; p < a->spec.count; p++) {
        int desired[MW_PIPELINE_MAX_STAGES] = {0};
        if (!read_desired(a, p, desired))
            continue;
        for (int st = 0; st < a->spec.items[p].nstages; st++) {
            slot_t *mine = NULL;
            for (int i = 0; i < a->nslots; i++) {
                slot_t *s = &a->slots[i];
                if (s->pid != 0 && !s->draining && s->pipeline == p && s->stage == st &&
                    (mine == NULL || s->started_ms > mine->started_ms))
                    mine = s; /* the newest: the one to stop first */
            }
            backoff_t *b = &a->backoff[p * MW_PIPELINE_MAX_STAGES + (size_t)st];
            /* The first free slot, or the next when another agent holds one. */
            for (int i = 0; i < a->nslots && now >= b->next_start_ms; i++) {
                if (a->slots[i].pid != 0)
                    continue;
                if (start_worker(a, &a->slots[i], p, st) != MW_POOL_SLOT_TAKEN)
                    break;
                take_over(a, &a->slots[i], 0);
            }
            if (mine != NULL &&
                mw_pool_shrink(a->r, a->spec.items[p].name, st, a->id, mine->name) == 1) {
                if (signal_worker(mine, SIGTERM) != 0)
                    mw_log(MW_LOG_WARN, "agent", "SIGTERM to worker pid %lld: %s",
                           (long long)mine->pid, strerror(errno));
                mine->draining = 1;
                mine->term_ms = mw_now_ms();
                mine->killed = 0;
                char msg[512];
                snprintf(msg, sizeof(msg), "draining worker pid %lld of %s stage %d on %s",
                         (long long)mine->pid, a->spec.items[p].name, st, mine->name);
                mw_log(MW_LOG_INFO, "agent", "%s", msg);
            }
        }
    }
}

/* SIGKILL for each worker that still drains well past worker.drain_timeout_ms. */
static void kill_hung(agent_t *a)
{
    int64_t now = mw_now_ms();
    for (int i = 0; i < a->nslots; i++) {
        slot_t *s = &a->slots[i];
        if (s->pid == 0 || !s->draining || s->killed ||
            now - s->term_ms < a->cfg->worker_drain_timeout_ms + DRAIN_KILL_MARGIN_MS)
            continue;
        s->killed = 1; /* once: reap frees the slot when it is gone */
        char msg[512];
        if (signal_worker(s, SIGKILL) != 0) {
            mw_log(MW_LOG_WARN, "agent", "SIGKILL to worker pid %lld: %s", (long long)s->pid,
                   strerror(errno));
            continue;
        }
        snprintf(msg, sizeof(msg),
                 "killed worker pid %lld on %s: still draining %lld ms after SIGTERM",
                 (long long)s->pid, s->name, (long long)(now - s->term_ms));
        mw_log(MW_LOG_WARN, "agent", "%s", msg);
        event(a, "agent_kill", msg);
    }
}

/* agent:{id} (hash, expires after three missed reports) and `agents`. */
static void report(agent_t *a)
{
    int used = 0;
    for (int i = 0; i < a->nslots; i++)
        used += a->slots[i].pid != 0;
    char key[MW_KEY_MAX], agents[MW_KEY_MAX];
    mw_key_agent(a->r, a->id, key, sizeof(key));
    if (mw_redis_cmd(a->r, NULL,
                     "HSET %s host %s pid %lld slots %d used %d exits %lld last_exit %s "
                     "updated_ms %lld",
                     key, a->host, (long long)getpid(), a->nslots, used, (long long)a->exits,
                     a->last_exit, (long long)mw_unix_ms()) != MW_OK)
        return;
    mw_redis_cmd(a->r, NULL, "PEXPIRE %s %lld", key, (long long)(3 * a->cfg->agent_interval_ms));
    mw_redis_cmd(a->r, NULL, "ZADD %s %lld %s", mw_key(a->r, MW_KEY_AGENTS, agents, sizeof(agents)),
                 (long long)mw_unix_ms(), a->id);
}

static void usage(FILE *out)
{
    fprintf(out, "usage: mw-agent [--config=FILE] [--key=value ...]\n\n"
                 "One per host: starts and stops mw-worker processes on this host's slots\n"
                 "(agent.slots) so that the pool follows the desired worker counts that the\n"
                 "coordinator publishes (desired:{pipeline}).\n\n"
                 "configuration keys:\n\n");
    mw_config_print_help(out, 0);
}

int main(int argc, char **argv)
{
    char err[512];
    mw_config_t cfg;
    int rc = mw_program_start("mw-agent", &argc, argv, &cfg, usage);
    if (rc >= 0)
        return rc;
    rc = 2;
    agent_t a;
    memset(&a, 0, sizeof(a));
    a.cfg = &cfg;
    if (argc > 1) {
        fprintf(stderr, "mw-agent: unexpected argument '%s' (--help for usage)\n", argv[1]);
        goto out_config;
    }
    if (gethostname(a.host, sizeof(a.host) - 1) != 0)
        snprintf(a.host, sizeof(a.host), "localhost");
    snprintf(a.id, sizeof(a.id), "%s", cfg.agent_id[0] ? cfg.agent_id : a.host);
    if (cfg.agent_worker_command[0] == '\0') {
        fprintf(stderr, "mw-agent: agent.worker_command is empty: nothing to start workers with\n");
        goto out_config;
    }
    if (parse_slots(&a, cfg.agent_slots, err, sizeof(err)) != MW_OK ||
        mw_pipelines_parse(cfg.pipeline_spec, &a.spec, err, sizeof(err)) != MW_OK) {
        fprintf(stderr, "mw-agent: %s\n", err);
        goto out_config;
    }
    a.backoff = calloc(a.spec.count * MW_PIPELINE_MAX_STAGES, sizeof(*a.backoff));
    a.r = mw_redis_new(&cfg, 1, err, sizeof(err));
    if (a.backoff == NULL || a.r == NULL) {
        fprintf(stderr, "mw-agent: %s\n", a.r ? "out of memory" : err);
        goto out_spec;
    }
    mw_program_on_stop(on_signal);
    mw_log(MW_LOG_INFO, "agent", "%s starting on %s: %d slot(s) (%s), %zu pipeline(s)", a.id,
           a.host, a.nslots, cfg.agent_slots, a.spec.count);
    for (int i = 0; i < a.nslots; i++)
        take_over(&a, &a.slots[i], 1);
    while (!stop_requested) {
        int64_t t0 = mw_now_ms();
        reap(&a);
        kill_hung(&a);
        act(&a);
        report(&a);
        int64_t left = t0 + cfg.agent_interval_ms - mw_now_ms();
        if (left > 0) {
            struct timespec ts = {.tv_sec = left / 1000, .tv_nsec = (left % 1000) * 1000000};
            nanosleep(&ts, NULL); /* a signal ends it early */
        }
    }
    /* Its workers keep serving: a restarted agent adopts them (adopt). */
    mw_log(MW_LOG_INFO, "agent", "stopping; the workers it started keep running");
    rc = 0;
out_spec:
    mw_redis_destroy(a.r);
    free(a.backoff);
    mw_pipelines_fini(&a.spec);
out_config:
    mw_config_fini(&cfg);
    return rc;
}
