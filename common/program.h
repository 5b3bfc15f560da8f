/* The start that every long-running mwserve program (mw-worker, mw-coordinator) shares. */
#ifndef MW_PROGRAM_H
#define MW_PROGRAM_H

#include "config.h"

#include <stdio.h>

/* Handles --help/-h (usage() to stdout), loads the configuration (file, MW_*
 * environment, --key=value flags, removed from argv) and starts logging as
 * ident at log.level. Returns -1 when the program goes on, with cfg loaded
 * (the caller calls mw_config_fini); otherwise the exit code: 0 after --help,
 * 2 after a configuration error, which it printed. */
int mw_program_start(const char *ident, int *argc, char **argv, mw_config_t *cfg,
                     void (*usage)(FILE *out));

/* SIGTERM and SIGINT call on_stop (which should only set a flag); SIGPIPE is
 * ignored, since a vanished peer is an error on its socket, not a signal. */
void mw_program_on_stop(void (*on_stop)(int sig));

#endif
