/* Pipeline specs: which pipelines exist, their stages, per-stage need and layer
 * ranges. Parsed from inline JSON, a JSON file or the "name:stages" shorthand. */
#ifndef MW_PIPELINE_H
#define MW_PIPELINE_H

#include <stddef.h>
#include <stdint.h>

#define MW_PIPELINE_NAME_MAX   48 /* with the terminating NUL */
#define MW_PIPELINE_MAX_STAGES 64
#define MW_PIPELINE_MODEL_MAX  256
#define MW_STAGE_WORKERS_MAX   4096 /* the largest per-stage "min" or "max" */

typedef struct mw_stage_spec {
    double need; /* relative compute need (> 0); auto workers go where capacity/need is least */
    int64_t layer_begin; /* first layer of the stage, -1 when not given */
    int64_t layer_end;   /* one past its last layer, -1 when not given */
    int min;             /* autoscaling: fewest workers wanted (>= 1, default 1) */
    int max;             /* autoscaling: most workers wanted (>= min; 0: no bound) */
} mw_stage_spec_t;

typedef struct mw_pipeline_spec {
    char name[MW_PIPELINE_NAME_MAX];
    int nstages;
    char model[MW_PIPELINE_MODEL_MAX]; /* model path, "" when not given */
    int64_t slo_ms;                    /* end-to-end latency target (p99), 0 when not given */
    mw_stage_spec_t stages[MW_PIPELINE_MAX_STAGES];
} mw_pipeline_spec_t;

typedef struct mw_pipelines {
    mw_pipeline_spec_t *items;
    size_t count;
} mw_pipelines_t;

/* Parses a spec: text starting with '{' or '[' is JSON, "name:N[,name:N...]" is the
 * shorthand (N stages of need 1), anything else is the path of a JSON file. JSON is
 * {"pipelines": [P...]}, [P...] or one P, where P is
 *   {"name": "mnist", "stages": 2 | [{"need": 1, "layers": [0, 2], "min": 1, "max": 4}, ...],
 *    "model": "path", "slo_ms": 200}.
 * On success out owns its items (mw_pipelines_fini); on failure out is empty and
 * errstr says what is wrong and where. */
int mw_pipelines_parse(const char *spec, mw_pipelines_t *out, char *errstr, size_t errstr_size);

/* Frees what mw_pipelines_parse allocated; accepts an empty or zeroed struct. */
void mw_pipelines_fini(mw_pipelines_t *p);

/* The pipeline named name, or NULL. Borrowed from p. */
const mw_pipeline_spec_t *mw_pipelines_find(const mw_pipelines_t *p, const char *name);

/* 1 when s is a valid pipeline name: 1..47 characters of [A-Za-z0-9_.-]. */
int mw_pipeline_name_valid(const char *s);

#endif
