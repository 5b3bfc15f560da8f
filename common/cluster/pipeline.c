/* Pipeline spec parsing and validation (inline JSON, a JSON file, or "name:N"). */
#include "pipeline.h"

#include "err.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SPEC_FILE_MAX (1 << 20)

int mw_pipeline_name_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= MW_PIPELINE_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '-' && s[i] != '.')
            return 0;
    return 1;
}

void mw_pipelines_fini(mw_pipelines_t *p)
{
    if (p == NULL)
        return;
    free(p->items);
    p->items = NULL;
    p->count = 0;
}

const mw_pipeline_spec_t *mw_pipelines_find(const mw_pipelines_t *p, const char *name)
{
    for (size_t i = 0; p != NULL && i < p->count; i++)
        if (strcmp(p->items[i].name, name) == 0)
            return &p->items[i];
    return NULL;
}

static int add_pipeline(mw_pipelines_t *p, mw_pipeline_spec_t **out, char *errstr,
                        size_t errstr_size)
{
    mw_pipeline_spec_t *items = realloc(p->items, (p->count + 1) * sizeof(*items));
    if (items == NULL)
        return mw_errf(MW_ENOMEM, errstr, errstr_size, "out of memory");
    p->items = items;
    *out = &items[p->count++];
    memset(*out, 0, sizeof(**out));
    return MW_OK;
}

static void default_stages(mw_pipeline_spec_t *ps, int n)
{
    ps->nstages = n;
    for (int s = 0; s < n; s++) {
        ps->stages[s].need = 1.0;
        ps->stages[s].layer_begin = -1;
        ps->stages[s].layer_end = -1;
        ps->stages[s].min = 1;
        ps->stages[s].max = 0;
    }
}

static int is_int(const cJSON *j)
{
    return cJSON_IsNumber(j) && j->valuedouble == floor(j->valuedouble) &&
           fabs(j->valuedouble) < 9e15;
}

static int parse_stage(const cJSON *js, mw_stage_spec_t *st, const char *where, char *errstr,
                       size_t errstr_size)
{
    if (!cJSON_IsObject(js))
        return mw_errf(MW_EINVAL, errstr, errstr_size, "%s: a stage must be an object", where);
    for (const cJSON *f = js->child; f != NULL; f = f->next) {
        if (strcmp(f->string, "need") == 0) {
            if (!cJSON_IsNumber(f) || !(f->valuedouble > 0) || !isfinite(f->valuedouble))
                return mw_errf(MW_EINVAL, errstr, errstr_size, "%s: \"need\" must be a number > 0",
                               where);
            st->need = f->valuedouble;
        } else if (strcmp(f->string, "layers") == 0) {
            const cJSON *b = cJSON_GetArrayItem(f, 0), *e = cJSON_GetArrayItem(f, 1);
            if (!cJSON_IsArray(f) || cJSON_GetArraySize(f) != 2 || !is_int(b) || !is_int(e) ||
                b->valuedouble < 0 || e->valuedouble <= b->valuedouble)
                return mw_errf(MW_EINVAL, errstr, errstr_size,
                               "%s: \"layers\" must be [first, end] with 0 <= first < end", where);
            st->layer_begin = (int64_t)b->valuedouble;
            st->layer_end = (int64_t)e->valuedouble;
        } else if (strcmp(f->string, "min") == 0 || strcmp(f->string, "max") == 0) {
            if (!is_int(f) || f->valuedouble < 1 || f->valuedouble > MW_STAGE_WORKERS_MAX)
                return mw_errf(MW_EINVAL, errstr, errstr_size,
                               "%s: \"%s\" must be a whole number of workers, 1..%d", where,
                               f->string, MW_STAGE_WORKERS_MAX);
            *(f->string[1] == 'i' ? &st->min : &st->max) = (int)f->valuedouble;
        } else {
            return mw_errf(MW_EINVAL, errstr, errstr_size,
                           "%s: unknown field \"%s\" (known: need, layers, min, max)", where,
                           f->string);
        }
    }
    if (st->max != 0 && st->max < st->min)
        return mw_errf(MW_EINVAL, errstr, errstr_size, "%s: \"max\" %d is below \"min\" %d", where,
                       st->max, st->min);
    return MW_OK;
}

static int parse_one(const cJSON *jp, size_t index, mw_pipelines_t *out, char *errstr,
                     size_t errstr_size)
{
    char where[96];
    snprintf(where, sizeof(where), "pipeline #%zu", index);
    if (!cJSON_IsObject(jp))
        return mw_errf(MW_EINVAL, errstr, errstr_size, "%s: must be an object", where);
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(jp, "name");
    if (!cJSON_IsString(name) || !mw_pipeline_name_valid(name->valuestring))
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "%s: \"name\" must be 1-%d characters of [A-Za-z0-9_.-]", where,
                       MW_PIPELINE_NAME_MAX - 1);
    snprintf(where, sizeof(where), "pipeline '%s'", name->valuestring);
    if (mw_pipelines_find(out, name->valuestring) != NULL)
        return mw_errf(MW_EINVAL, errstr, errstr_size, "%s: declared twice", where);

    mw_pipeline_spec_t *ps;
    int rc = add_pipeline(out, &ps, errstr, errstr_size);
    if (rc != MW_OK)
        return rc;
    snprintf(ps->name, sizeof(ps->name), "%s", name->valuestring);

    int have_stages = 0;
    for (const cJSON *f = jp->child; f != NULL; f = f->next) {
        if (strcmp(f->string, "name") == 0)
            continue;
        if (strcmp(f->string, "model") == 0) {
            if (!cJSON_IsString(f) || strlen(f->valuestring) >= sizeof(ps->model))
                return mw_errf(MW_EINVAL, errstr, errstr_size,
                               "%s: \"model\" must be a path shorter than %zu bytes", where,
                               sizeof(ps->model));
            snprintf(ps->model, sizeof(ps->model), "%s", f->valuestring);
        } else if (strcmp(f->string, "slo_ms") == 0) {
            if (!is_int(f) || f->valuedouble < 1 || f->valuedouble > 86400000)
                return mw_errf(MW_EINVAL, errstr, errstr_size,
                               "%s: \"slo_ms\" must be a whole number of ms, 1..86400000", where);
            ps->slo_ms = (int64_t)f->valuedouble;
        } else if (strcmp(f->string, "stages") == 0) {
            have_stages = 1;
            if (is_int(f)) {
                if (f->valuedouble < 1 || f->valuedouble > MW_PIPELINE_MAX_STAGES)
                    return mw_errf(MW_EINVAL, errstr, errstr_size, "%s: \"stages\" must be 1..%d",
                                   where, MW_PIPELINE_MAX_STAGES);
                default_stages(ps, (int)f->valuedouble);
            } else if (cJSON_IsArray(f)) {
                int n = cJSON_GetArraySize(f);
                if (n < 1 || n > MW_PIPELINE_MAX_STAGES)
                    return mw_errf(MW_EINVAL, errstr, errstr_size,
                                   "%s: \"stages\" must list 1..%d stages", where,
                                   MW_PIPELINE_MAX_STAGES);
                default_stages(ps, n);
                int s = 0;
                for (const cJSON *js = f->child; js != NULL; js = js->next, s++) {
                    char swhere[128];
                    snprintf(swhere, sizeof(swhere), "%s stage %d", where, s);
                    rc = parse_stage(js, &ps->stages[s], swhere, errstr, errstr_size);
                    if (rc != MW_OK)
                        return rc;
                    if (s > 0 && ps->stages[s].layer_begin >= 0 &&
                        ps->stages[s - 1].layer_end >= 0 &&
                        ps->stages[s].layer_begin != ps->stages[s - 1].layer_end)
                        return mw_errf(MW_EINVAL, errstr, errstr_size,
                                       "%s: layers must be contiguous (stage %d ends at %lld, "
                                       "stage %d begins at %lld)",
                                       where, s - 1, (long long)ps->stages[s - 1].layer_end, s,
                                       (long long)ps->stages[s].layer_begin);
                }
            } else {
                return mw_errf(MW_EINVAL, errstr, errstr_size,
                               "%s: \"stages\" must be a count or an array of stages", where);
            }
        } else {
            return mw_errf(MW_EINVAL, errstr, errstr_size,
                           "%s: unknown field \"%s\" (known: name, stages, model, slo_ms)", where,
                           f->string);
        }
    }
    if (!have_stages)
        return mw_errf(MW_EINVAL, errstr, errstr_size, "%s: \"stages\" is missing", where);
    return MW_OK;
}

static int parse_json(const char *text, mw_pipelines_t *out, char *errstr, size_t errstr_size)
{
    cJSON *root = cJSON_Parse(text);
    if (root == NULL) {
        const char *at = cJSON_GetErrorPtr();
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "pipeline spec is not valid JSON near '%.20s'", at ? at : "?");
    }
    int rc = MW_OK;
    const cJSON *list = root;
    if (cJSON_IsObject(root) && cJSON_GetObjectItemCaseSensitive(root, "pipelines") != NULL) {
        list = cJSON_GetObjectItemCaseSensitive(root, "pipelines");
        if (!cJSON_IsArray(list)) {
            rc = mw_errf(MW_EINVAL, errstr, errstr_size, "\"pipelines\" must be an array");
            goto out_free;
        }
    }
    if (cJSON_IsArray(list)) {
        size_t i = 0;
        for (const cJSON *jp = list->child; jp != NULL && rc == MW_OK; jp = jp->next)
            rc = parse_one(jp, i++, out, errstr, errstr_size);
    } else {
        rc = parse_one(list, 0, out, errstr, errstr_size);
    }
    if (rc == MW_OK && out->count == 0)
        rc = mw_errf(MW_EINVAL, errstr, errstr_size, "pipeline spec declares no pipeline");
out_free:
    cJSON_Delete(root);
    return rc;
}

/* "name:N[,name:N...]" */
static int parse_short(const char *spec, mw_pipelines_t *out, char *errstr, size_t errstr_size)
{
    const char *p = spec;
    while (*p) {
        const char *colon = strchr(p, ':');
        const char *comma = strchr(p, ',');
        if (comma == NULL)
            comma = p + strlen(p);
        if (colon == NULL || colon > comma)
            return mw_errf(MW_EINVAL, errstr, errstr_size,
                           "pipeline spec '%s': expected name:stages", spec);
        char name[MW_PIPELINE_NAME_MAX];
        size_t nlen = (size_t)(colon - p);
        if (nlen >= sizeof(name))
            return mw_errf(MW_EINVAL, errstr, errstr_size, "pipeline spec '%s': name too long",
                           spec);
        memcpy(name, p, nlen);
        name[nlen] = '\0';
        if (!mw_pipeline_name_valid(name))
            return mw_errf(MW_EINVAL, errstr, errstr_size,
                           "pipeline spec '%s': invalid name '%s' (use [A-Za-z0-9_.-])", spec,
                           name);
        if (mw_pipelines_find(out, name) != NULL)
            return mw_errf(MW_EINVAL, errstr, errstr_size, "pipeline '%s' declared twice", name);
        char *end;
        errno = 0;
        long n = strtol(colon + 1, &end, 10);
        if (end != comma || colon + 1 == end || errno != 0 || n < 1 || n > MW_PIPELINE_MAX_STAGES)
            return mw_errf(MW_EINVAL, errstr, errstr_size,
                           "pipeline spec '%s': stages of '%s' must be 1..%d", spec, name,
                           MW_PIPELINE_MAX_STAGES);
        mw_pipeline_spec_t *ps;
        int rc = add_pipeline(out, &ps, errstr, errstr_size);
        if (rc != MW_OK)
            return rc;
        snprintf(ps->name, sizeof(ps->name), "%s", name);
        default_stages(ps, (int)n);
        p = *comma ? comma + 1 : comma;
    }
    return MW_OK;
}

static int looks_short(const char *spec)
{
    for (const char *p = spec; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-' && *p != '.' && *p != ':' &&
            *p != ',')
            return 0;
    return strchr(spec, ':') != NULL;
}

static int parse_file(const char *path, mw_pipelines_t *out, char *errstr, size_t errstr_size)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return mw_errf(MW_EINVAL, errstr, errstr_size, "pipeline spec file '%s': %s", path,
                       strerror(errno));
    char *buf = malloc(SPEC_FILE_MAX + 1);
    int rc = MW_ENOMEM;
    if (buf == NULL) {
        mw_errf(rc, errstr, errstr_size, "out of memory");
        goto out_close;
    }
    size_t n = fread(buf, 1, SPEC_FILE_MAX + 1, f);
    if (n > SPEC_FILE_MAX) {
        rc = mw_errf(MW_EINVAL, errstr, errstr_size, "pipeline spec file '%s' is over %d bytes",
                     path, SPEC_FILE_MAX);
        goto out_free;
    }
    buf[n] = '\0';
    rc = parse_json(buf, out, errstr, errstr_size);
    if (rc != MW_OK && errstr != NULL && errstr_size > 0) {
        char inner[384];
        snprintf(inner, sizeof(inner), "%s", errstr);
        mw_errf(rc, errstr, errstr_size, "%s: %s", path, inner);
    }
out_free:
    free(buf);
out_close:
    fclose(f);
    return rc;
}

int mw_pipelines_parse(const char *spec, mw_pipelines_t *out, char *errstr, size_t errstr_size)
{
    memset(out, 0, sizeof(*out));
    const char *s = spec ? spec : "";
    while (isspace((unsigned char)*s))
        s++;
    int rc;
    if (*s == '\0')
        rc = mw_errf(MW_EINVAL, errstr, errstr_size,
                     "no pipeline spec: set pipeline.spec (\"name:stages\", JSON, or a file)");
    else if (*s == '{' || *s == '[')
        rc = parse_json(s, out, errstr, errstr_size);
    else if (looks_short(s))
        rc = parse_short(s, out, errstr, errstr_size);
    else
        rc = parse_file(s, out, errstr, errstr_size);
    if (rc != MW_OK)
        mw_pipelines_fini(out);
    return rc;
}
