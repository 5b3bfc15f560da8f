/* mwctl topics: create and list a pipeline's Kafka topics (P.requests, P.results, P.dlq). */
#include "mwctl.h"

#include "err.h"
#include "kafka.h"
#include "topics/topics.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out)
{
    fprintf(out,
            "usage: mwctl topics create --pipeline P [--partitions N] [--results-partitions N]\n"
            "                           [--dlq-partitions N]\n"
            "       mwctl topics list --pipeline P\n"
            "\n"
            "create  creates whichever of P.requests (--partitions, default 3), P.results\n"
            "        (--results-partitions, default: as --partitions) and P.dlq\n"
            "        (--dlq-partitions, default 1) do not exist, then shows all three\n"
            "list    shows the three topics, their partition counts and which exist\n"
            "exit status: 0 when all three exist afterwards, 1 otherwise, 2 on usage errors\n");
}

static int parse_count(const char *opt, const char *text, int *out)
{
    char *end;
    long v = strtol(text, &end, 10);
    if (*text == '\0' || *end != '\0' || v < 1 || v > 100000) {
        fprintf(stderr, "mwctl topics: %s '%s' is not a partition count (1..100000)\n", opt, text);
        return MW_EINVAL;
    }
    *out = (int)v;
    return MW_OK;
}

static int print_topics(const mw_topic_info_t info[MW_TOPIC_COUNT])
{
    int all = 1;
    printf("%-40s %10s  %s\n", "topic", "partitions", "state");
    for (int k = 0; k < MW_TOPIC_COUNT; k++) {
        const char *state = info[k].created ? "created" : info[k].exists ? "exists" : "missing";
        if (info[k].exists)
            printf("%-40s %10d  %s\n", info[k].name, info[k].partitions, state);
        else
            printf("%-40s %10s  %s\n", info[k].name, "-", state);
        all &= info[k].exists;
    }
    return all ? 0 : 1;
}

int mwctl_topics(int argc, char **argv, const mw_config_t *cfg)
{
    static const struct option opts[] = {
        {"pipeline", required_argument, NULL, 'p'},
        {"partitions", required_argument, NULL, 'n'},
        {"results-partitions", required_argument, NULL, 'r'},
        {"dlq-partitions", required_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *pipeline = NULL;
    int partitions = 3, results_partitions = 0, dlq_partitions = 1;
    char err[512];
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *action = argv[1];
    if (strcmp(action, "create") != 0 && strcmp(action, "list") != 0) {
        fprintf(stderr, "mwctl topics: unknown action '%s' (create or list)\n", action);
        return 2;
    }
    optind = 1;
    opterr = 1;
    int c;
    while ((c = getopt_long(argc - 1, argv + 1, "p:n:r:d:h", opts, NULL)) != -1) {
        switch (c) {
        case 'p':
            pipeline = optarg;
            break;
        case 'n':
            if (parse_count("--partitions", optarg, &partitions) != MW_OK)
                return 2;
            break;
        case 'r':
            if (parse_count("--results-partitions", optarg, &results_partitions) != MW_OK)
                return 2;
            break;
        case 'd':
            if (parse_count("--dlq-partitions", optarg, &dlq_partitions) != MW_OK)
                return 2;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc - 1) {
        fprintf(stderr, "mwctl topics: unexpected argument '%s'\n", argv[optind + 1]);
        return 2;
    }
    if (pipeline == NULL) {
        fprintf(stderr, "mwctl topics %s: --pipeline is required\n", action);
        return 2;
    }
    char name[MW_TOPIC_NAME_MAX + 1];
    if (mw_topic_name(name, sizeof(name), pipeline, MW_TOPIC_REQUESTS, err, sizeof(err)) != MW_OK) {
        fprintf(stderr, "mwctl topics: %s\n", err);
        return 2;
    }
    if (results_partitions == 0)
        results_partitions = partitions;

    rd_kafka_t *rk = mw_topics_admin_new(cfg, err, sizeof(err));
    if (rk == NULL) {
        fprintf(stderr, "mwctl topics: %s\n", err);
        return 1;
    }
    mw_topic_info_t info[MW_TOPIC_COUNT];
    int timeout_ms = (int)cfg->kafka_timeout_ms;
    int rc = strcmp(action, "create") == 0
                 ? mw_topics_create(rk, pipeline, partitions, results_partitions, dlq_partitions,
                                    timeout_ms, info, err, sizeof(err))
                 : mw_topics_describe(rk, pipeline, timeout_ms, info, err, sizeof(err));
    int status;
    if (rc != MW_OK) {
        fprintf(stderr, "mwctl topics %s: %s\n", action, err);
        status = 1;
    } else {
        status = print_topics(info);
        if (strcmp(action, "create") == 0) {
            const int want[MW_TOPIC_COUNT] = {partitions, results_partitions, dlq_partitions};
            for (int k = 0; k < MW_TOPIC_COUNT; k++)
                if (!info[k].created && info[k].exists && info[k].partitions != want[k])
                    fprintf(stderr,
                            "mwctl topics: note: %s already existed with %d partitions (asked "
                            "for %d); left as it is\n",
                            info[k].name, info[k].partitions, want[k]);
        }
    }
    mw_kafka_destroy(rk);
    return status;
}
