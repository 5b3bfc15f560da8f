/* mwctl: the operator CLI. Dispatches to one subcommand per file in ops/mwctl/. */
#include "mwctl.h"

#include "config.h"
#include "err.h"
#include "log.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    int (*run)(int argc, char **argv, const mw_config_t *cfg);
    const char *summary;
} commands[] = {
    {"config", mwctl_config, "print the effective configuration (--markdown: the key table)"},
    {"ping", mwctl_ping, "check that Redis and Kafka answer"},
    {"topics", mwctl_topics, "create or list a pipeline's topics (P.requests, P.results, P.dlq)"},
    {"submit", mwctl_submit, "produce requests to P.requests (--wait: and await their results)"},
    {"results", mwctl_results, "read results from P.results (read_committed)"},
    {"score", mwctl_score, "score a .npy file into a .npy file, in order, resumable"},
    {"model", mwctl_model, "reference model: init, run (the test oracle), info"},
    {"status", mwctl_status, "leader, epoch, pipelines, workers, worlds, recent events (--json)"},
    {"events", mwctl_events, "the cluster's event stream (--follow: keep printing)"},
    {"dashboard", mwctl_dashboard, "serve /metrics (Prometheus), /api/status and a live page"},
};

int mwctl_args_done(const char *command, int argc, char **argv, const char *pipeline)
{
    if (optind < argc) {
        fprintf(stderr, "mwctl %s: unexpected argument '%s'\n", command, argv[optind]);
        return 2;
    }
    if (pipeline == NULL) {
        fprintf(stderr, "mwctl %s: --pipeline is required\n", command);
        return 2;
    }
    return 0;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: mwctl [--config=FILE] [--key=value ...] COMMAND [ARGS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n`mwctl COMMAND --help` for a command's options; configuration keys:\n\n");
    mw_config_print_help(out, 0);
}

int main(int argc, char **argv)
{
    char err[512];
    mw_config_t cfg;
    if (mw_config_load(&cfg, &argc, argv, err, sizeof(err)) != MW_OK) {
        fprintf(stderr, "mwctl: %s\n", err);
        return 2;
    }
    mw_log_level_t level = MW_LOG_WARN;
    mw_log_level_parse(cfg.log_level, &level);
    mw_log_init("mwctl", level < MW_LOG_WARN ? level : MW_LOG_WARN);

    int rc = 2;
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        rc = argc < 2 ? 2 : 0;
        goto out;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(argv[1], commands[i].name) == 0) {
            rc = commands[i].run(argc - 1, argv + 1, &cfg);
            goto out;
        }
    }
    fprintf(stderr, "mwctl: unknown command '%s' (mwctl --help lists them)\n", argv[1]);
out:
    mw_config_fini(&cfg);
    return rc;
}
