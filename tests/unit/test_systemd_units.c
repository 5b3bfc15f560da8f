/* The systemd units under ops/systemd pass `systemd-analyze verify`: the worker
 * template instantiated, ExecStart pointed at this build's programs (the units
 * name /opt/mwserve/bin, where an installation puts them). Skipped where
 * systemd-analyze is missing. */
#include "harness.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* Copies the units into a temporary directory (worker as mw-worker@gpu0) with
 * `edit` (a sed expression) applied, verifies them; returns systemd-analyze's
 * exit status, and everything it printed in out (its log on the console: with
 * no terminal it would log to the journal or the kernel log instead). */
static int verify(const char *edit, char *out, size_t size)
{
    char bindir[1024], cmd[4096];
    snprintf(bindir, sizeof(bindir), "%s", mwt_bin("mw-worker"));
    *strrchr(bindir, '/') = '\0';
    snprintf(cmd, sizeof(cmd),
             "d=$(mktemp -d) && trap 'rm -rf \"$d\"' EXIT &&"
             " sed -e 's#/opt/mwserve/bin/#%s/#' -e '%s' ops/systemd/mw-coordinator.service"
             " >\"$d/mw-coordinator.service\" &&"
             " sed -e 's#/opt/mwserve/bin/#%s/#' -e '%s' ops/systemd/mw-worker@.service"
             " >\"$d/mw-worker@gpu0.service\" &&"
             " SYSTEMD_LOG_TARGET=console systemd-analyze verify \"$d/mw-coordinator.service\" "
             "\"$d/mw-worker@gpu0.service\""
             " 2>&1",
             bindir, edit, bindir, edit);
    return mwt_run(cmd, out, size);
}

/* Skips the test where systemd-analyze is missing (in the test: cmocka counts a
 * skip in a setup as an error). */
static void need_systemd_analyze(void)
{
    if (mwt_run("command -v systemd-analyze >/dev/null", NULL, 0) != 0) {
        print_message("skipped: systemd-analyze is not installed\n");
        skip();
    }
}

static void coordinator_and_worker_units_verify_cleanly(void **state)
{
    (void)state;
    need_systemd_analyze();
    char out[8192];
    int rc = verify("", out, sizeof(out));
    if (rc != 0 || out[0] != '\0')
        fail_msg("systemd-analyze verify (exit %d):\n%s", rc, out);
}

/* The check can fail: systemd-analyze only warns about a bad value (exit 0), so
 * any output counts as a failure above; here a bad value must show. */
static void a_bad_value_in_a_unit_is_reported(void **state)
{
    (void)state;
    need_systemd_analyze();
    char out[8192];
    int rc = verify("s/^RestartSec=1$/RestartSec=soon/", out, sizeof(out));
    if (strstr(out, "ignoring: soon") == NULL)
        fail_msg("a bad RestartSec went unnoticed (exit %d):\n%s", rc, out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(coordinator_and_worker_units_verify_cleanly),
        cmocka_unit_test(a_bad_value_in_a_unit_is_reported),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
