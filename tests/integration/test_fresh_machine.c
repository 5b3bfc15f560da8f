/* The first make on a fresh machine: in a copy of the tracked tree, a fake
 * pkg-config finds no library until ops/deps.sh has written .cache/deps.done,
 * as on a machine whose -dev packages `make deps` has yet to install. Nothing
 * is uninstalled; the Kafka download is shared through a .cache/kafka link. */
#include "harness.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define MAKE_TIMEOUT_S 240

static char work_dir[1024];

static const char *root_dir(void)
{
    const char *r = getenv("MWTEST_ROOT");
    return r != NULL ? r : ".";
}

/* Runs cmd through the shell, failing the test when it exits non-zero. */
static void must_run(const char *cmd)
{
    int rc = mwt_run(cmd, NULL, 0);
    if (rc != 0)
        fail_msg("exited %d: %s", rc, cmd);
}

/* A new <work_dir>/NAME holding the tracked tree, .cache/kafka linked to the
 * real download and no deps marker; <work_dir>/NAME.bin/pkg-config answers
 * nothing until the copy's marker exists, then is the real pkg-config. */
static void fresh_copy(const char *name)
{
    char real_pc[512], cmd[8192];
    if (mwt_run("command -v pkg-config", real_pc, sizeof(real_pc)) != 0 || real_pc[0] == '\0')
        fail_msg("no pkg-config on PATH");
    real_pc[strcspn(real_pc, "\n")] = '\0';
    snprintf(cmd, sizeof(cmd),
             "set -e; c='%s/%s'; mkdir -p \"$c/.cache\" \"$c.bin\"; "
             "git -C '%s' ls-files -z | tar -C '%s' --null -T - -cf - | tar -C \"$c\" -xf -; "
             "ln -s \"$(readlink -f '%s/.cache/kafka')\" \"$c/.cache/kafka\"; "
             "printf '#!/bin/sh\\n[ -e \"%%s/.cache/deps.done\" ] || exit 1\\nexec %%s \"$@\"\\n' "
             "\"$c\" '%s' >\"$c.bin/pkg-config\"; chmod +x \"$c.bin/pkg-config\"",
             work_dir, name, root_dir(), root_dir(), root_dir(), real_pc);
    must_run(cmd);
}

/* Runs make GOALS in the copy NAME with its fake pkg-config first on PATH, the
 * output into <work_dir>/NAME.log (returned, static buffer); *rc its status. */
static const char *make_in(const char *name, const char *goals, int *rc)
{
    static char out[1 << 16];
    char cmd[4096], path[1200];
    snprintf(cmd, sizeof(cmd),
             "c='%s/%s'; PATH=\"$c.bin:$PATH\" CFLAGS=-O0 timeout %d make --no-print-directory "
             "-C \"$c\" -j2 BUILD=\"$c/build\" %s >\"$c.log\" 2>&1",
             work_dir, name, MAKE_TIMEOUT_S, goals);
    *rc = mwt_run(cmd, NULL, 0);
    snprintf(path, sizeof(path), "%s/%s.log", work_dir, name);
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (f != NULL) {
        out[fread(out, 1, sizeof(out) - 1, f)] = '\0';
        fclose(f);
    }
    return out;
}

static void fresh_machine_make_deps_then_build_links_first_try(void **state)
{
    (void)state;
    int rc;
    fresh_copy("deps-all");
    const char *out = make_in("deps-all", "deps all", &rc);
    if (rc != 0)
        fail_msg("make deps all exited %d on the first try:\n%s", rc, out);
    char cmd[2048];
    snprintf(cmd, sizeof(cmd),
             "cd '%s/deps-all/build/bin' && test -x mw-worker && "
             "test -x mw-coordinator && test -x mwctl && ./mwctl --help >/dev/null",
             work_dir);
    must_run(cmd);
}

static void missing_library_names_the_package_and_make_deps(void **state)
{
    (void)state;
    int rc;
    fresh_copy("no-deps");
    const char *out = make_in("no-deps", "all", &rc);
    const char *nl = strchr(out, '\n');
    if (rc == 0 || strstr(out, "librdkafka-dev") == NULL || strstr(out, "libhiredis-dev") == NULL ||
        strstr(out, "libcjson-dev") == NULL || strstr(out, "`make deps` installs") == NULL ||
        nl == NULL || nl[1] != '\0')
        fail_msg("make without deps exited %d; want one line naming the packages:\n%s", rc, out);
    /* Goals that build nothing do not need the libraries. */
    out = make_in("no-deps", "help clean", &rc);
    if (rc != 0)
        fail_msg("make help clean exited %d without the libraries:\n%s", rc, out);
}

static int remove_work_dir(void **state)
{
    (void)state;
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", work_dir);
    return mwt_run(cmd, NULL, 0) == 0 ? 0 : -1;
}

int main(void)
{
    const char *dir = getenv("MWTEST_DIR") ? getenv("MWTEST_DIR") : "/tmp";
    snprintf(work_dir, sizeof(work_dir), "%s/%s.fresh-machine", dir, mwt_prefix());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fresh_machine_make_deps_then_build_links_first_try),
        cmocka_unit_test(missing_library_names_the_package_and_make_deps),
    };
    return cmocka_run_group_tests(tests, NULL, remove_work_dir);
}
