/* mwctl config: the effective configuration, or the key table as markdown. */
#include "mwctl.h"

#include <stdio.h>
#include <string.h>

int mwctl_config(int argc, char **argv, const mw_config_t *cfg)
{
    if (argc == 2 && strcmp(argv[1], "--markdown") == 0) {
        mw_config_print_help(stdout, 1);
        return 0;
    }
    if (argc != 1) {
        fprintf(stderr, "usage: mwctl config [--markdown]\n"
                        "  prints every key's effective value (file, MW_* env, flags applied),\n"
                        "  or with --markdown the table of keys for the README\n");
        return strcmp(argv[argc - 1], "--help") == 0 ? 0 : 2;
    }
    mw_config_print(cfg, stdout);
    return 0;
}
