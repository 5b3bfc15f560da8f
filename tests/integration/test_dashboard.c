/* `mwctl dashboard` against a real pipeline: /metrics parsed by Prometheus's
 * own parser (tests/support/check_metrics.py, Debian's python3-prometheus-client,
 * interpreter $MWTEST_PYTHON, default /usr/bin/python3), bad and slow requests,
 * the live page in headless chromium, Kafka lag against what Kafka reports (and
 * in the coordinator's history samples), and a Redis outage. One pipeline and one dashboard serve
 * every test, in order. */
#include "cjson/cJSON.h"
#include "cluster/keys.h"
#include "err.h"
#include "harness.h"
#include "mwt_pipeline.h"
#include "redis.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#define CONN_TIMEOUT_MS 10000 /* the dashboard's connection timeout (dashboard.c) */

static mwt_pipeline_t *pipe_;
static pid_t dash_pid, load_pid;
static int dash_port;
static char dash_url[64];

static const char *python(void)
{
    return getenv("MWTEST_PYTHON") ? getenv("MWTEST_PYTHON") : "/usr/bin/python3";
}

/* A connection to the dashboard with receive timeout_ms; -1 on failure. */
static int dial(int64_t timeout_ms)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)dash_port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
        connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* Sends req (len bytes; a send the server cuts short is not an error) and reads
 * the reply until the server closes, into out (NUL-terminated). Returns the
 * HTTP status, 0 when the server closed without a status line, -1 on a timeout. */
static int exchange(const char *req, size_t len, char *out, size_t size)
{
    int fd = dial(mwt_scaled(15000));
    assert_true(fd >= 0);
    for (size_t off = 0; off < len;) {
        ssize_t n = send(fd, req + off, len - off, MSG_NOSIGNAL);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    size_t got = 0;
    for (;;) {
        ssize_t n = recv(fd, out + got, size - 1 - got, 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            break;
        if (n < 0) {
            close(fd);
            return -1;
        }
        got += (size_t)n;
        if (got == size - 1)
            break;
    }
    close(fd);
    out[got] = '\0';
    int status = 0;
    return sscanf(out, "HTTP/1.%*d %d", &status) == 1 ? status : 0;
}

static int get(const char *path, char *out, size_t size)
{
    char req[512];
    int n =
        snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path);
    return exchange(req, (size_t)n, out, size);
}

static char body_[1 << 20];

/* 1 when /metrics reports mwserve_redis_up value. */
static int redis_up_is(int value)
{
    char want[160];
    snprintf(want, sizeof(want), "mwserve_redis_up{cluster=\"%s\"} %d\n", pipe_->cfg.cluster,
             value);
    return get("/metrics", body_, sizeof(body_)) == 200 && strstr(body_, want) != NULL;
}

/* The pipeline (2 stages x 2 workers) and the dashboard, with the cluster's
 * flags; the dashboard picks a free port and prints its URL, read from a pipe. */
static int setup(void **state)
{
    (void)state;
    pipe_ = mwt_pipeline_new("dash", 2, 4, 4, NULL);
    const char *ids[] = {"w0-0", "w0-1", "w1-0", "w1-1"};
    for (int i = 0; i < 4; i++)
        mwt_pipeline_worker(pipe_, i / 2, ids[i]);
    char a[5][600];
    snprintf(a[0], sizeof(a[0]), "--redis.port=%lld", (long long)pipe_->cfg.redis_port);
    snprintf(a[1], sizeof(a[1]), "--cluster.name=%s", pipe_->cfg.cluster);
    snprintf(a[2], sizeof(a[2]), "--kafka.bootstrap.servers=%s",
             mw_config_kafka_get(&pipe_->cfg, "bootstrap.servers"));
    snprintf(a[3], sizeof(a[3]), "--heartbeat.ttl_ms=%lld", (long long)mwt_scaled(1500));
    snprintf(a[4], sizeof(a[4]), "%s", mwt_bin("mwctl"));
    char *argv[] = {a[4], a[0], a[1], a[2], a[3], "dashboard", "--listen", "127.0.0.1:0", NULL};
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    dash_pid = fork();
    if (dash_pid == 0) {
        setpgid(0, 0);
        dup2(fds[1], STDOUT_FILENO);
        execv(argv[0], argv);
        _exit(127);
    }
    close(fds[1]);
    FILE *f = fdopen(fds[0], "r");
    char line[256] = "";
    if (f == NULL || fgets(line, sizeof(line), f) == NULL ||
        sscanf(line, "mwctl dashboard: http://127.0.0.1:%d/", &dash_port) != 1) {
        fprintf(stderr, "the dashboard printed no URL: '%s'\n", line);
        return -1;
    }
    fclose(f);
    snprintf(dash_url, sizeof(dash_url), "http://127.0.0.1:%d/", dash_port);
    return mwt_wait_for(mwt_pipeline_origins_assigned(pipe_) == 2, mwt_scaled(30000)) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    const pid_t pids[] = {dash_pid, load_pid};
    for (size_t i = 0; i < sizeof(pids) / sizeof(pids[0]); i++) {
        if (pids[i] > 0) {
            kill(-pids[i], SIGKILL);
            mwt_wait_exit(pids[i], 5000);
        }
    }
    mwt_pipeline_destroy(pipe_);
    return 0;
}

static void metrics_parse_with_the_prometheus_parser_and_counters_never_go_down(void **state)
{
    (void)state;
    mwt_pipeline_submit(pipe_, 0, 2000, NULL);
    char cmd[1024], out[8192];
    snprintf(cmd, sizeof(cmd), "%s %s/tests/support/check_metrics.py scrapes %s 2000 %lld 2>&1",
             python(), getenv("MWTEST_ROOT"), dash_url, (long long)mwt_scaled(60000) / 1000);
    int rc = mwt_run(cmd, out, sizeof(out));
    print_message("%s", out);
    assert_int_equal(rc, 0);

    /* /api/status is JSON with every worker and the pipeline's lag. */
    assert_int_equal(get("/api/status", body_, sizeof(body_)), 200);
    cJSON *j = cJSON_Parse(strstr(body_, "\r\n\r\n") + 4);
    assert_non_null(j);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "redis_up")));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "workers")), 4);
    cJSON *p0 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "pipelines"), 0);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(p0, "lag")), 4);
    cJSON_Delete(j);
}

static void bad_requests_get_an_error_or_are_cut_off_and_serving_goes_on(void **state)
{
    (void)state;
    assert_int_equal(get("/nope", body_, sizeof(body_)), 404);
    assert_int_equal(get("/metrics/../etc/passwd", body_, sizeof(body_)), 404);
    const char *post = "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                       "Connection: close\r\n\r\nabc";
    assert_int_equal(exchange(post, strlen(post), body_, sizeof(body_)), 405);
    /* A huge body is not read: the answer comes at once, before the body would. */
    const char *huge = "POST /api/status HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n"
                       "\r\nabc";
    int64_t t = mw_now_ms();
    assert_int_equal(exchange(huge, strlen(huge), body_, sizeof(body_)), 405);
    assert_true(mw_now_ms() - t < mwt_scaled(5000));
    const char *garbage = "GARBAGE\r\n\r\n";
    int rc = exchange(garbage, strlen(garbage), body_, sizeof(body_));
    assert_true(rc == 400 || rc == 0);

    /* A 1 MB header: refused (431) or the connection is closed. */
    size_t big = 1 << 20;
    char *req = malloc(big + 128);
    assert_non_null(req);
    int n = snprintf(req, 128, "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ");
    memset(req + n, 'a', big);
    memcpy(req + n + big, "\r\n\r\n", 4);
    rc = exchange(req, (size_t)n + big + 4, body_, sizeof(body_));
    free(req);
    print_message("1 MB header: %d\n", rc);
    assert_true(rc == 431 || rc == 413 || rc == 0);

    /* Slowloris: a request that never ends holds no one up and is cut off. */
    int slow = dial(mwt_scaled(CONN_TIMEOUT_MS + 10000));
    assert_true(slow >= 0);
    const char *part = "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    assert_int_equal(send(slow, part, strlen(part), MSG_NOSIGNAL), (ssize_t)strlen(part));
    int64_t t0 = mw_now_ms();
    assert_int_equal(get("/metrics", body_, sizeof(body_)), 200);
    char c;
    ssize_t r = recv(slow, &c, 1, 0);
    int64_t held = mw_now_ms() - t0;
    close(slow);
    print_message("slow request cut off after %lld ms\n", (long long)held);
    assert_true(r == 0 || (r < 0 && errno == ECONNRESET));
    assert_true(held < mwt_scaled(CONN_TIMEOUT_MS + 5000));
    assert_true(redis_up_is(1));
}

/* chromium, or skip when it is neither installed nor installable here. */
static int have_chromium(void)
{
    if (mwt_run("command -v chromium >/dev/null", NULL, 0) == 0)
        return 1;
    if (mwt_run("apt-cache show chromium >/dev/null 2>&1", NULL, 0) == 0)
        fail_msg("chromium is missing but installable: run `make deps` (ops/deps.sh installs it)");
    print_message("SKIPPED: chromium is not installed and apt cannot install it here\n");
    return 0;
}

/* The page's DOM after it rendered, from headless chromium; with a png path
 * also a screenshot. Returns the DOM (static buffer). */
static const char *browse(const char *png)
{
    static char dom[1 << 20];
    char cmd[2048];
    snprintf(cmd, sizeof(cmd),
             "d=$(mktemp -d) && chromium --headless --no-sandbox --disable-gpu --no-first-run "
             "--disable-background-networking --disable-component-update --disable-sync "
             "--user-data-dir=\"$d\" --virtual-time-budget=1200 --window-size=1400,1000 "
             "--hide-scrollbars %s%s %s 2>/dev/null; rc=$?; rm -rf \"$d\"; exit $rc",
             png ? "--screenshot=" : "--dump-dom", png ? png : "", dash_url);
    assert_int_equal(mwt_run(cmd, dom, sizeof(dom)), 0);
    return dom;
}

static int chart_points(const char *dom)
{
    const char *at = strstr(dom, "id=\"throughput-");
    const char *tag = at;
    while (tag != NULL && tag > dom && strncmp(tag, "<svg", 4) != 0)
        tag--;
    const char *pts = tag ? strstr(tag, "data-points=\"") : NULL;
    return pts != NULL && pts < at + 64 ? atoi(pts + 13) : 0;
}

static const char *worker_state(const char *dom, const char *id, char *buf, size_t size)
{
    char want[128];
    snprintf(want, sizeof(want), "data-worker=\"%s\" data-state=\"", id);
    const char *at = strstr(dom, want);
    if (at == NULL)
        return "gone";
    snprintf(buf, size, "%.*s", (int)strcspn(at + strlen(want), "\""), at + strlen(want));
    return buf;
}

static void page_shows_workers_and_throughput_and_a_killed_worker_expires(void **state)
{
    (void)state;
    if (!have_chromium())
        skip();
    /* Load for the rest of the test: requests keep coming. */
    char a[4][600];
    snprintf(a[0], sizeof(a[0]), "--redis.port=%lld", (long long)pipe_->cfg.redis_port);
    snprintf(a[1], sizeof(a[1]), "--cluster.name=%s", pipe_->cfg.cluster);
    snprintf(a[2], sizeof(a[2]), "--kafka.bootstrap.servers=%s",
             mw_config_kafka_get(&pipe_->cfg, "bootstrap.servers"));
    snprintf(a[3], sizeof(a[3]), "%s", mwt_bin("mwctl"));
    char *argv[] = {a[3],        a[0],      a[1],   a[2],         "submit", "--pipeline",
                    pipe_->name, "--shape", "1,16", "--generate", "100000", "--no-progress",
                    NULL};
    load_pid = mwt_spawn(argv);
    assert_true(load_pid > 0);

    const char *dom = NULL;
    int points = 0;
    assert_true(
        mwt_wait_for((dom = browse(NULL), (points = chart_points(dom)) >= 2), mwt_scaled(30000)));
    char st[32];
    const char *ids[] = {"w0-0", "w0-1", "w1-0", "w1-1"};
    for (int i = 0; i < 4; i++)
        assert_string_equal(worker_state(dom, ids[i], st, sizeof(st)), "ready");
    char png[1024];
    snprintf(png, sizeof(png), "%s/dashboard.png", getenv("MWTEST_DIR"));
    browse(png);
    print_message("throughput chart: %d points; screenshot %s\n", points, png);

    mwt_pipeline_signal(pipe_, 3, SIGKILL); /* w1-1 */
    int64_t t0 = mw_now_ms(), limit = mwt_scaled(1500) + 2000;
    const char *now = "ready";
    while (mw_now_ms() - t0 <= limit + 5000) {
        now = worker_state(browse(NULL), "w1-1", st, sizeof(st));
        if (strcmp(now, "expired") == 0 || strcmp(now, "gone") == 0)
            break;
    }
    int64_t took = mw_now_ms() - t0;
    print_message("killed worker shown %s %lld ms after kill -9 (limit %lld)\n", now,
                  (long long)took, (long long)limit);
    assert_true(strcmp(now, "expired") == 0 || strcmp(now, "gone") == 0);
    assert_true(took <= limit);
    kill(-load_pid, SIGKILL);
    mwt_wait_exit(load_pid, 5000);
    load_pid = 0;
}

/* The lag field of the newest history:{P} sample; -2 when there is none. */
static long long history_lag(mw_redis_t *r)
{
    char key[MW_KEY_MAX];
    redisReply *reply = NULL;
    long long lag = -2;
    if (mw_redis_cmd(r, &reply, "XREVRANGE %s + - COUNT 1",
                     mw_key_history(r, pipe_->name, key, sizeof(key))) != MW_OK)
        return lag;
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 1 &&
        reply->element[0]->elements == 2) {
        const redisReply *f = reply->element[0]->element[1];
        for (size_t i = 0; i + 1 < f->elements; i += 2)
            if (strcmp(f->element[i]->str, "lag") == 0)
                lag = atoll(f->element[i + 1]->str);
    }
    freeReplyObject(reply);
    return lag;
}

static void kafka_lag_per_partition_equals_what_kafka_reports(void **state)
{
    (void)state;
    /* Origins stopped: nothing is consumed, so the backlog stays put. */
    mwt_pipeline_signal(pipe_, 0, SIGSTOP);
    mwt_pipeline_signal(pipe_, 1, SIGSTOP);
    mwt_pipeline_submit(pipe_, 100000, 50, NULL);
    char cmd[1024], out[8192];
    snprintf(cmd, sizeof(cmd), "%s %s/tests/support/check_metrics.py lag %s %s %s %lld 2>&1",
             python(), getenv("MWTEST_ROOT"), dash_url, getenv("MWTEST_KAFKA_BOOTSTRAP"),
             pipe_->name, (long long)mwt_scaled(20000) / 1000);
    int rc = mwt_run(cmd, out, sizeof(out));
    /* The coordinator's history samples carry the backlog too. */
    char err[256];
    mw_redis_t *r = mw_redis_new(&pipe_->cfg, 0, err, sizeof(err));
    int sampled = r != NULL && mwt_wait_for(history_lag(r) >= 50, mwt_scaled(10000));
    long long sampled_lag = r != NULL ? history_lag(r) : -2;
    mw_redis_destroy(r);
    mwt_pipeline_signal(pipe_, 0, SIGCONT);
    mwt_pipeline_signal(pipe_, 1, SIGCONT);
    print_message("%shistory:{P} lag %lld\n", out, sampled_lag);
    assert_int_equal(rc, 0);
    assert_true(sampled);
}

static void redis_down_reports_redis_up_0_and_recovers(void **state)
{
    (void)state;
    assert_int_equal(mwt_service("redis", "stop"), 0);
    int down = mwt_wait_for(redis_up_is(0), mwt_scaled(10000));
    int status = get("/api/status", body_, sizeof(body_));
    int said = strstr(body_, "\"redis_up\":false") != NULL;
    /* The page says so (where there is a browser; the page test covers its absence). */
    int page_said = mwt_run("command -v chromium >/dev/null", NULL, 0) != 0 ||
                    strstr(browse(NULL), "Redis is unreachable") != NULL;
    assert_int_equal(mwt_service("redis", "start"), 0);
    assert_true(down);
    assert_int_equal(status, 503);
    assert_true(said);
    assert_true(page_said);
    assert_true(mwt_wait_for(redis_up_is(1), mwt_scaled(30000)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(metrics_parse_with_the_prometheus_parser_and_counters_never_go_down),
        cmocka_unit_test(bad_requests_get_an_error_or_are_cut_off_and_serving_goes_on),
        cmocka_unit_test(page_shows_workers_and_throughput_and_a_killed_worker_expires),
        cmocka_unit_test(kafka_lag_per_partition_equals_what_kafka_reports),
        cmocka_unit_test(redis_down_reports_redis_up_0_and_recovers),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
