/* Integration-test support (see harness.h). */
#include "clock.h"
#include "harness.h"

#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

void mwt_sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

int64_t mwt_scaled(int64_t ms)
{
    const char *s = getenv("MW_TEST_TIMEOUT_SCALE");
    if (s != NULL && atoll(s) > 0)
        return ms * atoll(s);
    const char *b = getenv("MW_BUILD");
    return ms * (b != NULL && strstr(b, "san") != NULL ? 3 : 1);
}

static const char *env_or_die(const char *name)
{
    const char *v = getenv(name);
    if (v == NULL || *v == '\0') {
        fprintf(stderr, "%s is not set: run integration tests through tests/run.sh\n", name);
        exit(2);
    }
    return v;
}

const char *mwt_prefix(void)
{
    return env_or_die("MWTEST_PREFIX");
}

const char *mwt_name(const char *suffix)
{
    static char bufs[16][256];
    static unsigned next;
    char *b = bufs[next++ % 16];
    snprintf(b, sizeof(bufs[0]), "%s.%s", mwt_prefix(), suffix);
    return b;
}

void mwt_config(mw_config_t *cfg)
{
    char err[256];
    mw_config_init(cfg);
    /* MWTEST_REDIS_HOST: a test host's Redis (mwt_netns); else tests/run.sh's. */
    const char *redis_host =
        getenv("MWTEST_REDIS_HOST") ? getenv("MWTEST_REDIS_HOST") : "127.0.0.1";
    if (mw_config_set(cfg, "redis.host", redis_host, "test", err, sizeof(err)) != 0 ||
        mw_config_set(cfg, "redis.port", env_or_die("MWTEST_REDIS_PORT"), "test", err,
                      sizeof(err)) != 0 ||
        mw_config_set(cfg, "cluster.name", mwt_prefix(), "test", err, sizeof(err)) != 0 ||
        mw_config_set(cfg, "kafka.bootstrap.servers", env_or_die("MWTEST_KAFKA_BOOTSTRAP"), "test",
                      err, sizeof(err)) != 0) {
        fprintf(stderr, "test config: %s\n", err);
        exit(2);
    }
}

pid_t mwt_service_spawn(const char *service, const char *action)
{
    char mwlocal[1024];
    snprintf(mwlocal, sizeof(mwlocal), "%s/ops/mwlocal", env_or_die("MWTEST_ROOT"));
    const char *dir = strcmp(service, "redis") == 0 ? env_or_die("MWTEST_REDIS_DIR")
                                                    : env_or_die("MWTEST_KAFKA_DIR");
    char *argv[] = {mwlocal, (char *)service, (char *)action, "--dir", (char *)dir, NULL};
    return mwt_spawn(argv);
}

int mwt_service(const char *service, const char *action)
{
    pid_t pid = mwt_service_spawn(service, action);
    if (pid < 0)
        return -1;
    /* mwlocal bounds its own waits (stop 10 s, then start 90 s). */
    int status = mwt_wait_exit(pid, 150000);
    if (status < 0)
        kill(-pid, SIGKILL);
    return status >= 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

const char *mwt_bin(const char *name)
{
    static char path[1024];
    snprintf(path, sizeof(path), "%s/%s/bin/%s", env_or_die("MWTEST_ROOT"), env_or_die("MW_BUILD"),
             name);
    return path;
}

pid_t mwt_spawn(char *const argv[])
{
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        execv(argv[0], argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    /* In the parent too, so that a kill(-pid) right after this finds the group;
     * EACCES (it exec'd already) and ESRCH (it is gone) lose no race. */
    if (pid > 0)
        setpgid(pid, pid);
    return pid;
}

int mwt_wait_exit(pid_t pid, int64_t timeout_ms)
{
    int64_t deadline = mw_now_ms() + timeout_ms;
    for (;;) {
        int status;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return status;
        if (r < 0 || mw_now_ms() >= deadline)
            return -1;
        mwt_sleep_ms(5);
    }
}

int mwt_run(const char *cmd, char *out, size_t out_size)
{
    FILE *p = popen(cmd, "r");
    if (p == NULL)
        return -1;
    size_t len = 0;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), p)) > 0) {
        if (out != NULL && len + 1 < out_size) {
            size_t take = n < out_size - 1 - len ? n : out_size - 1 - len;
            memcpy(out + len, buf, take);
            len += take;
        }
    }
    if (out != NULL && out_size > 0)
        out[len] = '\0';
    int status = pclose(p);
    return status == -1 ? -1 : (WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}

double mwt_cpu_ticks(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    /* fields after ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt
     * cmajflt utime stime */
    if (p == NULL ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st);
}

void mwt_machine_ticks(double *busy, double *total)
{
    *busy = *total = 0;
    FILE *f = fopen("/proc/stat", "r");
    if (f == NULL)
        return;
    unsigned long long v[8] = {0};
    /* cpu  user nice system idle iowait irq softirq steal */
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n != 8)
        return;
    for (int i = 0; i < 8; i++)
        *total += (double)v[i];
    *busy = *total - (double)(v[3] + v[4]);
}

const char *mwt_log_level(void)
{
    const char *level = getenv("MWT_LOG_LEVEL");
    return level != NULL ? level : "warn";
}

void mwt_test_filter(void)
{
    const char *filter = getenv("MWT_FILTER");
    if (filter != NULL)
        cmocka_set_test_filter(filter);
}
