/* Program start-up shared by mw-worker and mw-coordinator (see program.h). */
#include "program.h"

#include "err.h"
#include "log.h"

#include <signal.h>
#include <string.h>

int mw_program_start(const char *ident, int *argc, char **argv, mw_config_t *cfg,
                     void (*usage)(FILE *out))
{
    char err[512];
    for (int i = 1; i < *argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
    }
    if (mw_config_load(cfg, argc, argv, err, sizeof(err)) != MW_OK) {
        fprintf(stderr, "%s: %s\n", ident, err);
        return 2;
    }
    mw_log_level_t level = MW_LOG_INFO;
    mw_log_level_parse(cfg->log_level, &level);
    mw_log_init(ident, level);
    return -1;
}

void mw_program_on_stop(void (*on_stop)(int sig))
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}
