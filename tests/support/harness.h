/* Integration-test support: the services tests/run.sh started, unique names,
 * deadlines instead of sleeps, and real child processes. */
#ifndef MW_TEST_HARNESS_H
#define MW_TEST_HARNESS_H

#include "clock.h"
#include "config.h"

#include <stdint.h>
#include <sys/types.h>

void mwt_sleep_ms(int64_t ms);

/* ms stretched for slow builds: times MW_TEST_TIMEOUT_SCALE (tests/run.sh sets it),
 * or, when that is unset, times 3 for sanitizer builds (MW_BUILD containing "san"). */
int64_t mwt_scaled(int64_t ms);

/* Evaluates cond until it is true or timeout_ms passes; yields 1 or 0. */
#define mwt_wait_for(cond, timeout_ms)                                                             \
    __extension__({                                                                                \
        int64_t mwt_deadline_ = mw_now_ms() + (timeout_ms);                                        \
        int mwt_ok_;                                                                               \
        while (!(mwt_ok_ = !!(cond)) && mw_now_ms() < mwt_deadline_)                               \
            mwt_sleep_ms(5);                                                                       \
        mwt_ok_;                                                                                   \
    })

/* The unique prefix of this test run (MWTEST_PREFIX), e.g. "t1234.test_kafka". */
const char *mwt_prefix(void);

/* "<prefix>.<suffix>" in a static rotating buffer (valid for the next 15 calls). */
const char *mwt_name(const char *suffix);

/* A config pointing at the run's Redis and Kafka (MWTEST_REDIS_HOST, default
 * 127.0.0.1, MWTEST_REDIS_PORT, MWTEST_KAFKA_BOOTSTRAP), with cluster.name = prefix.
 * Caller calls mw_config_fini. Aborts the test when the services are not set. */
void mwt_config(mw_config_t *cfg);

/* Runs `ops/mwlocal SERVICE ACTION --dir <its dir>` (redis|kafka, start|stop|kill|restart);
 * returns its exit status. */
int mwt_service(const char *service, const char *action);

/* The same, in the background: returns mwlocal's pid for mwt_wait_exit. */
pid_t mwt_service_spawn(const char *service, const char *action);

/* Path of a built program: mwt_bin("mwctl") -> "<build>/bin/mwctl". Static buffer. */
const char *mwt_bin(const char *name);

/* Starts argv[0] with argv in its own process group; stdout/stderr go to the
 * test's output. Returns the pid, or -1. */
pid_t mwt_spawn(char *const argv[]);

/* CPU time (user + system, clock ticks) of a process; 0 when it is gone. */
double mwt_cpu_ticks(pid_t pid);

/* CPU time of the whole machine (/proc/stat, clock ticks summed over every
 * CPU): busy (all but idle and iowait) and total, into *busy and *total. */
void mwt_machine_ticks(double *busy, double *total);

/* Waits for pid to exit within timeout_ms; returns its wait status or -1 on timeout. */
int mwt_wait_exit(pid_t pid, int64_t timeout_ms);

/* Runs a shell command, returns its exit status (or -1), capturing up to
 * out_size-1 bytes of its stdout into out when out is not NULL. */
int mwt_run(const char *cmd, char *out, size_t out_size);

/* The log level of the processes a test starts: MWT_LOG_LEVEL, or warn. */
const char *mwt_log_level(void);

/* Call before cmocka_run_group_tests: with MWT_FILTER set (a cmocka glob,
 * e.g. MWT_FILTER='*coordinator*'), only the tests it names run. */
void mwt_test_filter(void);

#endif
