/* mwctl score on `make run`'s pipeline shape (2 stages x 2 CPU workers, make
 * run's model, 4 partitions) with real processes on the Redis and Kafka of
 * tests/run.sh: a job of 1,000,000 rows of 64 f32 from a .npy file, against
 * the same rows sent with mwctl submit --wait (requests of 256 rows, the
 * baseline, same run); rows/s of each (wall time of the command) and the peak
 * RSS of mwctl score. JSON lines on stdout. */
#include "harness.h"
#include "model/model.h"
#include "mwt_batch.h"
#include "mwt_load.h"
#include "mwt_pipeline.h"
#include "ops/mwctl/npy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define SETUP_MS   60000
#define PARTITIONS 4
#define WIDTH      64
#define ROWS       1000000
#define PER        256 /* batch.max_rows's default, mwctl score's default N */

static mwt_pipeline_t *live;

static void kill_live(void)
{
    if (live != NULL)
        mwt_pipeline_destroy(live);
}

/* Runs cmd through sh; its wall seconds, its peak RSS in kB, its exit status. */
static int run_timed(const char *cmd, double *wall_s, long *rss_kb)
{
    double t0 = (double)mw_now_us() / 1e6;
    pid_t pid = fork();
    if (pid < 0)
        mwt_die("fork", "failed");
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) != pid)
        mwt_die("wait4", "failed");
    *wall_s = (double)mw_now_us() / 1e6 - t0;
    *rss_kb = ru.ru_maxrss;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void write_input(const char *path)
{
    char hdr[MWCTL_NPY_HEADER_MAX];
    int64_t shape[2] = {ROWS, WIDTH};
    size_t n = mwctl_npy_header(hdr, sizeof(hdr), MW_DTYPE_F32, 2, shape);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(hdr, 1, n, f) != n)
        mwt_die(path, "cannot write");
    uint64_t x = 7;
    float row[WIDTH];
    for (int r = 0; r < ROWS; r++) {
        for (int k = 0; k < WIDTH; k++) {
            x = x * UINT64_C(6364136223846793005) + UINT64_C(1442695040888963407);
            row[k] = (float)((double)(x >> 11) / 9007199254740992.0 * 2.0 - 1.0);
        }
        if (fwrite(row, sizeof(row), 1, f) != 1)
            mwt_die(path, "cannot write");
    }
    if (fclose(f) != 0)
        mwt_die(path, "cannot write");
}

int main(void)
{
    mwt_pipeline_t *p =
        mwt_pipeline_new_model("score", 2, &mwt_make_run_model, PARTITIONS, mwt_load_elastic_flags);
    live = p;
    if (atexit(kill_live) != 0)
        mwt_die("atexit", "refused");
    for (int s = 0; s < 2; s++)
        for (int k = 0; k < 2; k++) {
            char id[32];
            snprintf(id, sizeof(id), "s%d-%d", s, k);
            mwt_pipeline_worker(p, s, id);
        }
    if (!mwt_wait_for(mwt_pipeline_origins_assigned(p) == 2, SETUP_MS))
        mwt_die("pipeline", "the origins did not both get partitions");

    char in[512], out[512], cmd[2048];
    snprintf(in, sizeof(in), "%s/bench-score-x.npy", getenv("MWTEST_DIR"));
    snprintf(out, sizeof(out), "%s/bench-score-y.npy", getenv("MWTEST_DIR"));
    write_input(in);
    const char *kafka = getenv("MWTEST_KAFKA_BOOTSTRAP");
    double wall;
    long rss;
    snprintf(cmd, sizeof(cmd),
             "%s --kafka.bootstrap.servers=%s submit --pipeline %s --generate 100 --shape 1,64 "
             "--wait --no-progress >/dev/null",
             mwt_bin("mwctl"), kafka, p->name);
    if (run_timed(cmd, &wall, &rss) != 0)
        mwt_die("warm-up", "mwctl submit failed");

    snprintf(cmd, sizeof(cmd),
             "%s --kafka.bootstrap.servers=%s score --pipeline %s --input %s --output %s "
             "--no-progress >&2",
             mwt_bin("mwctl"), kafka, p->name, in, out);
    if (run_timed(cmd, &wall, &rss) != 0)
        mwt_die("score", "mwctl score failed");
    double score_rows_s = ROWS / wall, score_wall = wall;
    long score_rss = rss;

    int nreq = (ROWS + PER - 1) / PER;
    snprintf(cmd, sizeof(cmd),
             "%s --kafka.bootstrap.servers=%s submit --pipeline %s --generate %d --shape %d,%d "
             "--wait --no-progress >&2",
             mwt_bin("mwctl"), kafka, p->name, nreq, PER, WIDTH);
    if (run_timed(cmd, &wall, &rss) != 0)
        mwt_die("baseline", "mwctl submit failed");
    double submit_rows_s = (double)nreq * PER / wall;

    printf("{\"bench\": \"score\", \"metric\": \"rows_per_s\", \"value\": %.0f, \"unit\": "
           "\"rows/s\", \"baseline\": %.0f, \"ratio\": %.3f, \"rows\": %d, \"features\": %d, "
           "\"rows_per_request\": %d, \"seconds\": %.2f, \"baseline_seconds\": %.2f, "
           "\"note\": \"mwctl score of a %d x %d f32 .npy; baseline: mwctl submit --wait of the "
           "same rows in requests of %d; 2 stages x 2 CPU workers, make run's model; wall time "
           "of each command\"}\n",
           score_rows_s, submit_rows_s, score_rows_s / submit_rows_s, ROWS, WIDTH, PER, score_wall,
           wall, ROWS, WIDTH, PER);
    printf("{\"bench\": \"score\", \"metric\": \"peak_rss_mb\", \"value\": %.1f, \"unit\": "
           "\"MB\", \"note\": \"mwctl score's peak RSS for the %d x %d job (input %.0f MB)\"}\n",
           (double)score_rss / 1024.0, ROWS, WIDTH, (double)ROWS * WIDTH * 4 / 1e6);
    fflush(stdout);
    unlink(in);
    unlink(out);
    return 0;
}
