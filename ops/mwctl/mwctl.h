/* mwctl subcommands: each is `int mwctl_<name>(int argc, char **argv, const mw_config_t *cfg)`,
 * called with argv[0] = the subcommand name and config flags already removed.
 * Returns the process exit code. */
#ifndef MW_MWCTL_H
#define MW_MWCTL_H

#include "config.h"

int mwctl_config(int argc, char **argv, const mw_config_t *cfg);
int mwctl_ping(int argc, char **argv, const mw_config_t *cfg);
int mwctl_topics(int argc, char **argv, const mw_config_t *cfg);
int mwctl_submit(int argc, char **argv, const mw_config_t *cfg);
int mwctl_results(int argc, char **argv, const mw_config_t *cfg);
int mwctl_score(int argc, char **argv, const mw_config_t *cfg);
int mwctl_model(int argc, char **argv, const mw_config_t *cfg);
int mwctl_status(int argc, char **argv, const mw_config_t *cfg);
int mwctl_events(int argc, char **argv, const mw_config_t *cfg);
int mwctl_dashboard(int argc, char **argv, const mw_config_t *cfg);

/* After getopt_long: fails (message, returns 2) when an argument is left over
 * at optind or --pipeline was not given; 0 otherwise. */
int mwctl_args_done(const char *command, int argc, char **argv, const char *pipeline);

#endif
