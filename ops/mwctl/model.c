/* mwctl model: write a deterministic reference model, run it in one process
 * (the oracle of the pipeline tests), describe it and its stage split. */
#include "clock.h"
#include "mwctl.h"

#include "err.h"
#include "model/model.h"
#include "model/mw_stage_abi.h"
#include "model/stage_plugin.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_STAGES 4096

static const char usage_text[] =
    "usage: mwctl model init [--layers L] [--hidden H] [--inputs D] [--outputs C] [--seed S]\n"
    "                        [--activation gelu|relu|none] [--layernorm] [--residual] -o FILE\n"
    "       mwctl model run --model FILE --input X.bin --output Y.bin [--batch N]\n"
    "                       [--stages K | --layers A:B[,B:C...]]\n"
    "       mwctl model info --model FILE [--stages K]\n"
    "       mwctl model plugin --plugin LIB.so [--config JSON] [--stage I] [--input X.bin\n"
    "                          --shape D1,D2.. --output Y.bin]\n"
    "\n"
    "init  writes a reference model: L blocks D -> H -> ... -> H -> C, the same bytes for the\n"
    "      same options (defaults: 4 layers, hidden 64, inputs and outputs = hidden, seed 0,\n"
    "      gelu)\n"
    "run   computes the model on X.bin (raw little-endian f32, rows of D values) into Y.bin\n"
    "      (rows of C values), N rows per batch (default: all rows in one batch); --stages K\n"
    "      cuts it into K stages of near-equal FLOPs and --layers into the given ranges (one\n"
    "      range may be a part of the model), run one after the other: the output is\n"
    "      bit-identical to the whole model's at any batch size.\n"
    "info  prints the layers, their FLOPs and the automatic split into K stages\n"
    "plugin loads a stage plug-in, calls its init (stage I, default 0, on the CPU) and,\n"
    "      with --input, its forward on an f32 tensor of the given shape\n";

struct opt {
    const char *name;  /* "--layers" */
    const char *alias; /* "-o" or NULL */
    int takes_value;
    const char *value; /* the value, or "1" for a flag that is present */
};

/* Accepts `--name value`, `--name=value` and flags; 0, or 2 after printing the problem. */
static int parse_opts(int argc, char **argv, struct opt *opts, size_t n)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *eq = strchr(a, '=');
        size_t len = eq && strncmp(a, "--", 2) == 0 ? (size_t)(eq - a) : strlen(a);
        struct opt *o = NULL;
        for (size_t j = 0; j < n && o == NULL; j++)
            if ((strlen(opts[j].name) == len && strncmp(a, opts[j].name, len) == 0) ||
                (opts[j].alias && strcmp(a, opts[j].alias) == 0))
                o = &opts[j];
        if (o == NULL) {
            fprintf(stderr, "mwctl model %s: unknown option '%s'\n", argv[0], a);
            return 2;
        }
        if (!o->takes_value) {
            if (eq && a[len] == '=') {
                fprintf(stderr, "mwctl model %s: %s takes no value\n", argv[0], o->name);
                return 2;
            }
            o->value = "1";
        } else if (a[len] == '=') {
            o->value = a + len + 1;
        } else if (i + 1 < argc) {
            o->value = argv[++i];
        } else {
            fprintf(stderr, "mwctl model %s: %s needs a value\n", argv[0], o->name);
            return 2;
        }
    }
    return 0;
}

/* opts[i].value as an integer in [lo, hi] (def when absent); 0, or 2 after printing. */
static int opt_int(const struct opt *o, long long def, long long lo, long long hi, long long *out)
{
    *out = def;
    if (o->value == NULL)
        return 0;
    char *end;
    errno = 0;
    long long v = strtoll(o->value, &end, 10);
    if (errno != 0 || end == o->value || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "mwctl model: %s must be an integer in [%lld, %lld], not '%s'\n", o->name,
                lo, hi, o->value);
        return 2;
    }
    *out = v;
    return 0;
}

static double now_ms(void)
{
    return (double)mw_now_us() / 1e3;
}

static int model_init(int argc, char **argv)
{
    enum { LAYERS, HIDDEN, INPUTS, OUTPUTS, SEED, ACT, LN, RESID, OUT, NOPT };
    struct opt opts[NOPT] = {
        [LAYERS] = {"--layers", NULL, 1, NULL}, [HIDDEN] = {"--hidden", NULL, 1, NULL},
        [INPUTS] = {"--inputs", NULL, 1, NULL}, [OUTPUTS] = {"--outputs", NULL, 1, NULL},
        [SEED] = {"--seed", NULL, 1, NULL},     [ACT] = {"--activation", NULL, 1, NULL},
        [LN] = {"--layernorm", NULL, 0, NULL},  [RESID] = {"--residual", NULL, 0, NULL},
        [OUT] = {"--output", "-o", 1, NULL},
    };
    if (parse_opts(argc, argv, opts, NOPT) != 0)
        return 2;
    if (opts[OUT].value == NULL) {
        fprintf(stderr, "mwctl model init: -o FILE is required\n\n%s", usage_text);
        return 2;
    }
    long long layers, hidden, inputs, outputs;
    if (opt_int(&opts[LAYERS], 4, 1, 100000, &layers) ||
        opt_int(&opts[HIDDEN], 64, 1, 1 << 20, &hidden) ||
        opt_int(&opts[INPUTS], hidden, 1, 1 << 20, &inputs) ||
        opt_int(&opts[OUTPUTS], hidden, 1, 1 << 20, &outputs))
        return 2;
    mw_model_spec_t spec = {
        .layers = (int)layers,
        .inputs = (int)inputs,
        .hidden = (int)hidden,
        .outputs = (int)outputs,
        .activation = MW_ACT_GELU,
        .layernorm = opts[LN].value != NULL,
        .residual = opts[RESID].value != NULL,
    };
    if (opts[SEED].value != NULL) {
        char *end;
        errno = 0;
        spec.seed = strtoull(opts[SEED].value, &end, 0);
        if (errno != 0 || end == opts[SEED].value || *end != '\0' || opts[SEED].value[0] == '-') {
            fprintf(stderr, "mwctl model init: --seed must be an unsigned 64-bit integer\n");
            return 2;
        }
    }
    if (opts[ACT].value != NULL && mw_activation_parse(opts[ACT].value, &spec.activation) != 0) {
        fprintf(stderr, "mwctl model init: --activation must be gelu, relu or none, not '%s'\n",
                opts[ACT].value);
        return 2;
    }
    char err[512];
    if (mw_model_generate(&spec, opts[OUT].value, err, sizeof(err)) != MW_OK) {
        fprintf(stderr, "mwctl model init: %s\n", err);
        return 1;
    }
    uint64_t flops = 0;
    for (int i = 0; i < spec.layers; i++)
        flops += 2 * (uint64_t)(i == 0 ? spec.inputs : spec.hidden) *
                 (uint64_t)(i == spec.layers - 1 ? spec.outputs : spec.hidden);
    printf("wrote %s: %d layers, %d -> %d features (hidden %d, %s%s%s), %.3f MFLOP per row, "
           "seed %" PRIu64 "\n",
           opts[OUT].value, spec.layers, spec.inputs, spec.outputs, spec.hidden,
           mw_activation_name(spec.activation), spec.layernorm ? ", layernorm" : "",
           spec.residual ? ", residual" : "", (double)flops / 1e6, spec.seed);
    return 0;
}

/* Reads a whole raw tensor file; rows of row_floats f32 values. */
static int read_rows(const char *path, int row_floats, float **data, size_t *rows)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "mwctl model: %s: %s\n", path, strerror(errno));
        return 1;
    }
    int rc = 1;
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0)
        size = ftell(f);
    const size_t row_bytes = (size_t)row_floats * sizeof(float);
    if (size < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fprintf(stderr, "mwctl model: %s: cannot read its size\n", path);
        goto out_close;
    }
    if (size == 0 || (size_t)size % row_bytes != 0) {
        fprintf(stderr,
                "mwctl model: %s is %ld bytes, not a positive multiple of one row (%d f32 = "
                "%zu bytes)\n",
                path, size, row_floats, row_bytes);
        goto out_close;
    }
    *data = malloc((size_t)size);
    if (*data == NULL || fread(*data, 1, (size_t)size, f) != (size_t)size) {
        fprintf(stderr, "mwctl model: %s: read failed\n", path);
        free(*data);
        *data = NULL;
        goto out_close;
    }
    *rows = (size_t)size / row_bytes;
    rc = 0;
out_close:
    fclose(f);
    return rc;
}

/* Writes path atomically (temporary file, then rename). */
static int write_file(const char *path, const void *data, size_t len)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    int ok = f != NULL && fwrite(data, 1, len, f) == len;
    if (f != NULL && fclose(f) != 0)
        ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        fprintf(stderr, "mwctl model: cannot write %s: %s\n", path, strerror(errno));
        unlink(tmp);
        return 1;
    }
    return 0;
}

/* The ranges of --layers, --stages, or the whole model. */
static int pick_ranges(const mw_model_t *m, const struct opt *layers, const struct opt *stages,
                       mw_layer_range_t *ranges, int *count)
{
    char err[512];
    const int n = mw_model_num_layers(m);
    if (layers->value != NULL && stages->value != NULL) {
        fprintf(stderr, "mwctl model: give --stages or --layers, not both\n");
        return 2;
    }
    if (layers->value != NULL) {
        if (mw_layer_ranges_parse(layers->value, n, 0, ranges, MAX_STAGES, count, err,
                                  sizeof(err)) != MW_OK) {
            fprintf(stderr, "mwctl model: %s\n", err);
            return 2;
        }
        return 0;
    }
    long long k;
    if (opt_int(stages, 1, 1, n < MAX_STAGES ? n : MAX_STAGES, &k) != 0)
        return 2;
    if (mw_model_split(m, (int)k, ranges, err, sizeof(err)) != MW_OK) {
        fprintf(stderr, "mwctl model: %s\n", err);
        return 2;
    }
    *count = (int)k;
    return 0;
}

static int model_run(int argc, char **argv)
{
    enum { MODEL, INPUT, OUTPUT, BATCH, STAGES, LAYERS, NOPT };
    struct opt opts[NOPT] = {
        [MODEL] = {"--model", NULL, 1, NULL},   [INPUT] = {"--input", "-i", 1, NULL},
        [OUTPUT] = {"--output", "-o", 1, NULL}, [BATCH] = {"--batch", NULL, 1, NULL},
        [STAGES] = {"--stages", NULL, 1, NULL}, [LAYERS] = {"--layers", NULL, 1, NULL},
    };
    if (parse_opts(argc, argv, opts, NOPT) != 0)
        return 2;
    if (!opts[MODEL].value || !opts[INPUT].value || !opts[OUTPUT].value) {
        fprintf(stderr, "mwctl model run: --model, --input and --output are required\n\n%s",
                usage_text);
        return 2;
    }
    long long batch_opt;
    if (opt_int(&opts[BATCH], 0, 0, 1 << 20, &batch_opt) != 0)
        return 2;

    char err[512];
    int rc = 1, count = 0;
    mw_model_t *m = NULL;
    mw_stage_t **stages = NULL;
    float *in = NULL, *out = NULL, *tmp[2] = {NULL, NULL};
    mw_layer_range_t *ranges = calloc(MAX_STAGES, sizeof(*ranges));
    if (ranges == NULL)
        goto out_free;
    if (mw_model_open(opts[MODEL].value, &m, err, sizeof(err)) != MW_OK) {
        fprintf(stderr, "mwctl model run: %s\n", err);
        goto out_free;
    }
    if ((rc = pick_ranges(m, &opts[LAYERS], &opts[STAGES], ranges, &count)) != 0)
        goto out_free;
    rc = 1;
    const int in_f = mw_model_layer(m, ranges[0].first)->in;
    const int out_f = mw_model_layer(m, ranges[count - 1].last - 1)->out;
    size_t rows;
    if (read_rows(opts[INPUT].value, in_f, &in, &rows) != 0)
        goto out_free;
    /* Default: every row in one batch, as when the file is one request. */
    size_t b = batch_opt == 0 || (size_t)batch_opt > rows ? rows : (size_t)batch_opt;
    const int batch = b > 1 << 20 ? 1 << 20 : (int)b;
    size_t width = 1;
    for (int s = 0; s + 1 < count; s++)
        if ((size_t)mw_model_layer(m, ranges[s].last - 1)->out > width)
            width = (size_t)mw_model_layer(m, ranges[s].last - 1)->out;
    stages = calloc((size_t)count, sizeof(*stages));
    out = malloc(rows * (size_t)out_f * sizeof(float));
    tmp[0] = malloc((size_t)batch * width * sizeof(float));
    tmp[1] = malloc((size_t)batch * width * sizeof(float));
    if (!stages || !out || !tmp[0] || !tmp[1]) {
        fprintf(stderr, "mwctl model run: out of memory\n");
        goto out_free;
    }
    for (int s = 0; s < count; s++) {
        if (mw_stage_new(m, ranges[s].first, ranges[s].last, batch, -1, &stages[s], err,
                         sizeof(err)) != MW_OK) {
            fprintf(stderr, "mwctl model run: %s\n", err);
            goto out_free;
        }
    }
    double t0 = now_ms();
    for (size_t r = 0; r < rows; r += (size_t)batch) {
        const int n = rows - r < (size_t)batch ? (int)(rows - r) : batch;
        const float *x = in + r * (size_t)in_f;
        for (int s = 0; s < count; s++) {
            float *y = s == count - 1 ? out + r * (size_t)out_f : tmp[s & 1];
            if (mw_stage_forward(stages[s], x, n, y) != MW_OK) {
                fprintf(stderr, "mwctl model run: stage %d failed\n", s);
                goto out_free;
            }
            x = y;
        }
    }
    double ms = now_ms() - t0;
    if (write_file(opts[OUTPUT].value, out, rows * (size_t)out_f * sizeof(float)) != 0)
        goto out_free;
    char split[256];
    mw_layer_ranges_format(ranges, count, split, sizeof(split));
    printf("wrote %s: %zu rows x %d f32 (batch %d, layers %s, %.3f ms)\n", opts[OUTPUT].value, rows,
           out_f, batch, split, ms);
    rc = 0;
out_free:
    for (int s = 0; stages != NULL && s < count; s++)
        mw_stage_destroy(stages[s]);
    free(stages);
    free(tmp[0]);
    free(tmp[1]);
    free(out);
    free(in);
    mw_model_destroy(m);
    free(ranges);
    return rc;
}

static int model_info(int argc, char **argv)
{
    enum { MODEL, STAGES, NOPT };
    struct opt opts[NOPT] = {
        [MODEL] = {"--model", NULL, 1, NULL},
        [STAGES] = {"--stages", NULL, 1, NULL},
    };
    if (parse_opts(argc, argv, opts, NOPT) != 0)
        return 2;
    if (opts[MODEL].value == NULL) {
        fprintf(stderr, "mwctl model info: --model is required\n");
        return 2;
    }
    char err[512];
    mw_model_t *m;
    if (mw_model_open(opts[MODEL].value, &m, err, sizeof(err)) != MW_OK) {
        fprintf(stderr, "mwctl model info: %s\n", err);
        return 1;
    }
    const int n = mw_model_num_layers(m);
    printf("%s: %d layers, %d -> %d features, %.3f MFLOP per row, %.3f MiB of weights\n",
           opts[MODEL].value, n, mw_model_inputs(m), mw_model_outputs(m),
           (double)mw_model_flops(m, 0, n) / 1e6,
           (double)mw_model_weight_bytes(m, 0, n) / (1024.0 * 1024.0));
    printf("%-6s %8s %8s %-10s %-9s %-8s %12s\n", "layer", "in", "out", "activation", "layernorm",
           "residual", "MFLOP/row");
    for (int i = 0; i < n; i++) {
        const mw_layer_t *l = mw_model_layer(m, i);
        printf("%-6d %8d %8d %-10s %-9s %-8s %12.3f\n", i, l->in, l->out,
               mw_activation_name(l->activation), l->ln_gamma ? "yes" : "no",
               l->residual ? "yes" : "no", (double)mw_model_flops(m, i, i + 1) / 1e6);
    }
    int rc = 0;
    if (opts[STAGES].value != NULL) {
        mw_layer_range_t *ranges = calloc(MAX_STAGES, sizeof(*ranges));
        struct opt none = {"--layers", NULL, 1, NULL};
        int count = 0;
        rc = ranges == NULL ? 1 : pick_ranges(m, &none, &opts[STAGES], ranges, &count);
        for (int s = 0; rc == 0 && s < count; s++)
            printf("stage %d: layers %d:%d, %.3f MFLOP per row, %.3f MiB of weights\n", s,
                   ranges[s].first, ranges[s].last,
                   (double)mw_model_flops(m, ranges[s].first, ranges[s].last) / 1e6,
                   (double)mw_model_weight_bytes(m, ranges[s].first, ranges[s].last) /
                       (1024.0 * 1024.0));
        free(ranges);
    }
    mw_model_destroy(m);
    return rc;
}

static int model_plugin(int argc, char **argv)
{
    enum { PLUGIN, CONFIG, STAGE, INPUT, SHAPE, OUTPUT, NOPT };
    struct opt opts[NOPT] = {
        [PLUGIN] = {"--plugin", NULL, 1, NULL}, [CONFIG] = {"--config", NULL, 1, NULL},
        [STAGE] = {"--stage", NULL, 1, NULL},   [INPUT] = {"--input", "-i", 1, NULL},
        [SHAPE] = {"--shape", NULL, 1, NULL},   [OUTPUT] = {"--output", "-o", 1, NULL},
    };
    if (parse_opts(argc, argv, opts, NOPT) != 0)
        return 2;
    long long stage;
    if (opts[PLUGIN].value == NULL || opt_int(&opts[STAGE], 0, 0, 1 << 20, &stage) != 0 ||
        (opts[INPUT].value != NULL) != (opts[SHAPE].value != NULL) ||
        (opts[INPUT].value != NULL) != (opts[OUTPUT].value != NULL)) {
        fprintf(stderr, "mwctl model plugin: --plugin is required; --input, --shape and "
                        "--output go together\n");
        return 2;
    }
    char err[1024];
    mw_tensor_desc_t in_desc = {.dtype = MW_DTYPE_F32};
    if (opts[SHAPE].value != NULL && mw_shape_parse(opts[SHAPE].value, strlen(opts[SHAPE].value),
                                                    &in_desc, err, sizeof(err)) != MW_OK) {
        fprintf(stderr, "mwctl model plugin: --shape: %s\n", err);
        return 2;
    }
    mw_stage_t *st;
    if (mw_stage_plugin_new(opts[PLUGIN].value, opts[CONFIG].value, (int)stage, -1, &st, err,
                            sizeof(err)) != MW_OK) {
        fprintf(stderr, "mwctl model plugin: %s\n", err);
        return 1;
    }
    int rc = 0;
    if (opts[INPUT].value != NULL) {
        float *in = NULL;
        size_t rows;
        const int last = (int)in_desc.shape[in_desc.ndim - 1];
        uint64_t numel = 0;
        mw_tensor_numel(&in_desc, &numel);
        rc = read_rows(opts[INPUT].value, last, &in, &rows);
        if (rc == 0 && rows * (uint64_t)last != numel) {
            fprintf(stderr, "mwctl model plugin: %s holds %zu values, --shape %s needs %llu\n",
                    opts[INPUT].value, rows * (size_t)last, opts[SHAPE].value,
                    (unsigned long long)numel);
            rc = 1;
        }
        mw_tensor_desc_t out_desc;
        const void *out;
        uint64_t nbytes;
        if (rc == 0 && mw_stage_run(st, &in_desc, in, &out_desc, &out, err, sizeof(err)) != MW_OK) {
            fprintf(stderr, "mwctl model plugin: %s\n", err);
            rc = 1;
        }
        if (rc == 0 && mw_tensor_nbytes(&out_desc, &nbytes) == MW_OK) {
            char shape[128];
            mw_shape_format(&out_desc, shape, sizeof(shape));
            rc = write_file(opts[OUTPUT].value, out, (size_t)nbytes);
            if (rc == 0)
                printf("wrote %s: %s [%s]\n", opts[OUTPUT].value, mw_dtype_name(out_desc.dtype),
                       shape);
        }
        free(in);
    } else {
        printf("%s: loaded, ABI version %u, init(stage %lld) succeeded\n", opts[PLUGIN].value,
               MW_PLUGIN_ABI_VERSION, stage);
    }
    mw_stage_destroy(st);
    return rc;
}

int mwctl_model(int argc, char **argv, const mw_config_t *cfg)
{
    (void)cfg; /* models need no configuration */
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(usage_text, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage_text, stdout);
            return 0;
        }
    }
    if (strcmp(argv[1], "init") == 0)
        return model_init(argc - 1, argv + 1);
    if (strcmp(argv[1], "run") == 0)
        return model_run(argc - 1, argv + 1);
    if (strcmp(argv[1], "info") == 0)
        return model_info(argc - 1, argv + 1);
    if (strcmp(argv[1], "plugin") == 0)
        return model_plugin(argc - 1, argv + 1);
    fprintf(stderr, "mwctl model: unknown subcommand '%s'\n\n%s", argv[1], usage_text);
    return 2;
}
