/* The `make run` path end to end: ops/run-local.sh brings up its own Redis,
 * Kafka, model, topics, coordinator and workers in a temporary state
 * directory, runs a small scoring job whose every output is verified against
 * the reference runner, and `ops/run-local.sh stop` leaves no process behind. */
#include "clock.h"
#include "harness.h"
#include "mwt_pipeline.h"

#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <cmocka.h>

#define MAX_PIDS 32

static char state_dir[1024];

static const char *root_dir(void)
{
    const char *r = getenv("MWTEST_ROOT");
    return r != NULL ? r : ".";
}

/* Runs ops/run-local.sh ARGS --state <state_dir>, its output into log; returns its status. */
static int run_local(const char *args, const char *log)
{
    char cmd[4096];
    snprintf(cmd, sizeof(cmd), "%s/ops/run-local.sh %s --state '%s' >'%s/%s' 2>&1", root_dir(),
             args, state_dir, state_dir, log);
    return mwt_run(cmd, NULL, 0);
}

/* The whole of a file (static buffer), "" when unreadable. */
static const char *slurp(const char *name)
{
    static char buf[1 << 16];
    char path[1200];
    snprintf(path, sizeof(path), "%s/%s", state_dir, name);
    buf[0] = '\0';
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return buf;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static pid_t read_pid(const char *path)
{
    FILE *f = fopen(path, "r");
    long pid = 0;
    if (f == NULL)
        return 0;
    if (fscanf(f, "%ld", &pid) != 1)
        pid = 0;
    fclose(f);
    return (pid_t)pid;
}

/* The pids of every process the script tracks: procs/NAME.pid, Redis and Kafka. */
static int tracked_pids(pid_t *pids, int max)
{
    char path[1400];
    int n = 0;
    snprintf(path, sizeof(path), "%s/procs", state_dir);
    DIR *d = opendir(path);
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL && n < max) {
        size_t len = strlen(e->d_name);
        if (len > 4 && strcmp(e->d_name + len - 4, ".pid") == 0) {
            snprintf(path, sizeof(path), "%s/procs/%s", state_dir, e->d_name);
            if ((pids[n] = read_pid(path)) > 0)
                n++;
        }
    }
    if (d != NULL)
        closedir(d);
    const char *svc[] = {"redis/redis.pid", "kafka/kafka.pid"};
    for (int i = 0; i < 2 && n < max; i++) {
        snprintf(path, sizeof(path), "%s/%s", state_dir, svc[i]);
        if ((pids[n] = read_pid(path)) > 0)
            n++;
    }
    return n;
}

static int alive(pid_t pid)
{
    return kill(pid, 0) == 0 || errno != ESRCH;
}

static int any_alive(const pid_t *pids, int n)
{
    for (int i = 0; i < n; i++)
        if (alive(pids[i]))
            return 1;
    return 0;
}

static int64_t mtime_of(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec : -1;
}

static void run_local_serves_verifies_every_output_and_stop_leaves_nothing_running(void **state)
{
    (void)state;
    char user_config[1200];
    snprintf(user_config, sizeof(user_config), "%s/.cache/local/mwserve.json", root_dir());
    int64_t user_mtime = mtime_of(user_config);

    int64_t t0 = mw_now_ms();
    int rc = run_local("--requests 300 --timeout-s 60", "start.log");
    const char *out = slurp("start.log");
    print_message("run-local.sh took %lld ms\n", (long long)(mw_now_ms() - t0));
    if (rc != 0 || strstr(out, "ALL 300 OUTPUTS VERIFIED") == NULL ||
        strstr(out, "verify: 300/300 ok outputs bit-identical") == NULL ||
        strstr(out, "results: 300/300 received, 0 errors") == NULL)
        fail_msg("ops/run-local.sh exited %d; its output:\n%s", rc, out);
    /* The dashboard runs and its URL is printed; it answers with the cluster's metrics. */
    int port = 0;
    const char *url = strstr(out, "Dashboard: http://127.0.0.1:");
    if (url == NULL || sscanf(url, "Dashboard: http://127.0.0.1:%d/", &port) != 1)
        fail_msg("ops/run-local.sh printed no dashboard URL:\n%s", out);
    char probe[512], metrics[1 << 16];
    snprintf(probe, sizeof(probe),
             "%s -c \"import urllib.request as u; "
             "print(u.urlopen('http://127.0.0.1:%d/metrics', timeout=10).read().decode())\"",
             getenv("MWTEST_PYTHON") ? getenv("MWTEST_PYTHON") : "/usr/bin/python3", port);
    assert_int_equal(mwt_run(probe, metrics, sizeof(metrics)), 0);
    assert_non_null(strstr(metrics, "mwserve_redis_up{cluster=\"local\"} 1"));

    /* mwctl results --verify finds each input in P.requests and agrees, and
     * says NOT VERIFIED against another model. */
    char cmd[16384];
    snprintf(cmd, sizeof(cmd),
             "%s --config='%s/mwserve.json' results --pipeline demo --from-beginning --count 300 "
             "--verify --model '%s/model.safetensors' >'%s/results.log' 2>&1",
             mwt_bin("mwctl"), state_dir, state_dir, state_dir);
    rc = mwt_run(cmd, NULL, 0);
    out = slurp("results.log");
    if (rc != 0 || strstr(out, "verify: 300/300 ok results bit-identical") == NULL)
        fail_msg("mwctl results --verify exited %d:\n%s", rc, out);
    snprintf(cmd, sizeof(cmd),
             "%s model init --layers 6 --hidden 256 --inputs 64 --outputs 10 --seed 8 -o "
             "'%s/other.safetensors' >/dev/null && "
             "%s --config='%s/mwserve.json' results --pipeline demo --from-beginning --count 5 "
             "--verify --model '%s/other.safetensors' >'%s/other.log' 2>&1",
             mwt_bin("mwctl"), state_dir, mwt_bin("mwctl"), state_dir, state_dir, state_dir);
    rc = mwt_run(cmd, NULL, 0);
    out = slurp("other.log");
    if (rc != 1 || strstr(out, "NOT VERIFIED: element") == NULL ||
        strstr(out, "verify: 0/5 ok results") == NULL)
        fail_msg("mwctl results --verify with another model exited %d:\n%s", rc, out);

    /* Idempotent: a second start reuses every running process. */
    pid_t before[MAX_PIDS], after[MAX_PIDS];
    int nbefore = tracked_pids(before, MAX_PIDS);
    assert_int_equal(nbefore, 8); /* coordinator, dashboard, 4 workers, Redis, Kafka */
    rc = run_local("--requests 0 --timeout-s 60", "again.log");
    out = slurp("again.log");
    if (rc != 0 || strstr(out, "started") != NULL)
        fail_msg("a second ops/run-local.sh exited %d or started something:\n%s", rc, out);
    assert_int_equal(tracked_pids(after, MAX_PIDS), nbefore);
    for (int i = 0; i < nbefore; i++)
        assert_int_equal(before[i], after[i]);

    rc = run_local("stop", "stop.log");
    if (rc != 0)
        fail_msg("ops/run-local.sh stop exited %d:\n%s", rc, slurp("stop.log"));
    /* Reaped by init once they exit: allow a moment for that. */
    if (!mwt_wait_for(!any_alive(before, nbefore), mwt_scaled(5000)))
        fail_msg("processes still running after stop:\n%s", slurp("stop.log"));

    assert_int_equal(mtime_of(user_config), user_mtime); /* .cache/local untouched */
}

/* Whatever happened, nothing of the test keeps running. */
static int stop_everything(void **state)
{
    (void)state;
    run_local("stop", "teardown.log");
    return 0;
}

int main(void)
{
    const char *dir = getenv("MWTEST_DIR") ? getenv("MWTEST_DIR") : "/tmp";
    snprintf(state_dir, sizeof(state_dir), "%s/%s.run-local", dir, mwt_prefix());
    mkdir(state_dir, 0777);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(
            run_local_serves_verifies_every_output_and_stop_leaves_nothing_running,
            stop_everything),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
