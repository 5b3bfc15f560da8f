/* The plan document: what the coordinator publishes and every worker and mwctl
 * reads (DESIGN §5), its lookups and its JSON codec. */
#include "plan_doc.h"

#include "err.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ helpers */

int mw_plan_id_valid(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n >= MW_PLAN_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)id[i]) && id[i] != '_' && id[i] != '-' && id[i] != '.' &&
            id[i] != ':')
            return 0;
    return 1;
}

unsigned mw_plan_carries_parse(const char *list)
{
    unsigned carries = 0;
    for (const char *t = list; *t;) {
        size_t n = strcspn(t, " ,");
        if (n == 4 && strncmp(t, "nccl", 4) == 0)
            carries |= MW_PLAN_CARRIES_NCCL;
        else if (n == 8 && strncmp(t, "cuda-ipc", 8) == 0)
            carries |= MW_PLAN_CARRIES_CUDA_IPC;
        t += n;
        t += strspn(t, " ,");
    }
    return carries;
}

uint64_t mw_plan_fnv1a(uint64_t h, const char *s)
{
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    h ^= 0xff; /* separator, so that ("ab","c") and ("a","bc") differ */
    h *= 1099511628211ULL;
    return h;
}

void mw_plan_world_name(char *buf, size_t size, const char *p, int sa, const char *a, int sb,
                        const char *b)
{
    int n = snprintf(buf, size, "%s.s%d-%s--s%d-%s", p, sa, a, sb, b);
    if (n < 0 || (size_t)n >= size) {
        char stages[32];
        snprintf(stages, sizeof(stages), "%d/%d", sa, sb);
        uint64_t h = mw_plan_fnv1a(mw_plan_fnv1a(mw_plan_fnv1a(MW_PLAN_FNV_SEED, p), stages), a);
        h = mw_plan_fnv1a(h, b);
        snprintf(buf, size, "%.*s.s%d-s%d-%016llx", MW_PIPELINE_NAME_MAX - 1, p, sa, sb,
                 (unsigned long long)h);
    }
}

const mw_plan_worker_t *mw_plan_find_worker(const mw_plan_t *plan, const char *id)
{
    size_t lo = 0, hi = plan ? plan->nworkers : 0;
    while (lo < hi) { /* workers are sorted by id */
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(plan->workers[mid].id, id);
        if (c == 0)
            return &plan->workers[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const mw_plan_world_t *mw_plan_find_world(const mw_plan_t *plan, const char *name)
{
    size_t lo = 0, hi = plan ? plan->nworlds : 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(plan->worlds[mid].name, name);
        if (c == 0)
            return &plan->worlds[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

int mw_plan_world_has(const mw_plan_world_t *w, const char *id, int *rank)
{
    for (int i = 0; i < w->nmembers; i++) {
        if (strcmp(w->members[i], id) == 0) {
            if (rank != NULL)
                *rank = i;
            return 1;
        }
    }
    return 0;
}

void mw_plan_destroy(mw_plan_t *plan)
{
    if (plan == NULL)
        return;
    free(plan->pipelines);
    free(plan->workers);
    free(plan->worlds);
    free(plan->rejected);
    free(plan);
}

static int cmp_worker(const void *a, const void *b)
{
    return strcmp(((const mw_plan_worker_t *)a)->id, ((const mw_plan_worker_t *)b)->id);
}

static int cmp_world(const void *a, const void *b)
{
    return strcmp(((const mw_plan_world_t *)a)->name, ((const mw_plan_world_t *)b)->name);
}

static int cmp_pipeline(const void *a, const void *b)
{
    return strcmp(((const mw_plan_pipeline_t *)a)->spec.name,
                  ((const mw_plan_pipeline_t *)b)->spec.name);
}

void mw_plan_sort(mw_plan_t *plan)
{
    if (plan->npipelines > 0)
        qsort(plan->pipelines, plan->npipelines, sizeof(*plan->pipelines), cmp_pipeline);
    if (plan->nworkers > 0)
        qsort(plan->workers, plan->nworkers, sizeof(*plan->workers), cmp_worker);
    if (plan->nworlds > 0)
        qsort(plan->worlds, plan->nworlds, sizeof(*plan->worlds), cmp_world);
}

int mw_plan_same(const mw_plan_t *a, const mw_plan_t *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    if (a->npipelines != b->npipelines || a->nworkers != b->nworkers || a->nworlds != b->nworlds)
        return 0;
    for (size_t i = 0; i < a->npipelines; i++) {
        const mw_plan_pipeline_t *x = &a->pipelines[i], *y = &b->pipelines[i];
        if (strcmp(x->spec.name, y->spec.name) != 0 || x->spec.nstages != y->spec.nstages ||
            strcmp(x->spec.model, y->spec.model) != 0 || x->complete != y->complete)
            return 0;
        for (int s = 0; s < x->spec.nstages; s++)
            if (x->spec.stages[s].need != y->spec.stages[s].need ||
                x->spec.stages[s].layer_begin != y->spec.stages[s].layer_begin ||
                x->spec.stages[s].layer_end != y->spec.stages[s].layer_end)
                return 0;
    }
    for (size_t i = 0; i < a->nworkers; i++) {
        const mw_plan_worker_t *x = &a->workers[i], *y = &b->workers[i];
        if (strcmp(x->id, y->id) != 0 || strcmp(x->pipeline, y->pipeline) != 0 ||
            x->stage != y->stage || x->auto_stage != y->auto_stage ||
            strcmp(x->device, y->device) != 0 || x->draining != y->draining)
            return 0;
    }
    for (size_t i = 0; i < a->nworlds; i++) {
        const mw_plan_world_t *x = &a->worlds[i], *y = &b->worlds[i];
        if (strcmp(x->name, y->name) != 0 || strcmp(x->pipeline, y->pipeline) != 0 ||
            strcmp(x->backend, y->backend) != 0 || x->nmembers != y->nmembers || x->gen != y->gen)
            return 0;
        for (int m = 0; m < x->nmembers; m++)
            if (strcmp(x->members[m], y->members[m]) != 0)
                return 0;
    }
    return 1;
}

/* ------------------------------------------------------------------ JSON */

char *mw_plan_encode(const mw_plan_t *plan)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *pipes = cJSON_AddArrayToObject(root, "pipelines");
    cJSON *workers = cJSON_AddArrayToObject(root, "workers");
    cJSON *worlds = cJSON_AddArrayToObject(root, "worlds");
    char *out = NULL;
    if (root == NULL || pipes == NULL || workers == NULL || worlds == NULL)
        goto out_free;
    cJSON_AddNumberToObject(root, "epoch", (double)plan->epoch);
    cJSON_AddNumberToObject(root, "version", (double)plan->version);
    for (size_t i = 0; i < plan->npipelines; i++) {
        const mw_plan_pipeline_t *pp = &plan->pipelines[i];
        cJSON *jp = cJSON_CreateObject();
        cJSON_AddItemToArray(pipes, jp);
        cJSON_AddStringToObject(jp, "name", pp->spec.name);
        cJSON_AddStringToObject(jp, "model", pp->spec.model);
        cJSON_AddBoolToObject(jp, "complete", pp->complete);
        cJSON *stages = cJSON_AddArrayToObject(jp, "stages");
        for (int s = 0; s < pp->spec.nstages; s++) {
            cJSON *js = cJSON_CreateObject();
            cJSON_AddItemToArray(stages, js);
            cJSON_AddNumberToObject(js, "need", pp->spec.stages[s].need);
            if (pp->spec.stages[s].layer_begin >= 0) {
                cJSON *l = cJSON_AddArrayToObject(js, "layers");
                cJSON_AddItemToArray(l, cJSON_CreateNumber((double)pp->spec.stages[s].layer_begin));
                cJSON_AddItemToArray(l, cJSON_CreateNumber((double)pp->spec.stages[s].layer_end));
            }
        }
    }
    for (size_t i = 0; i < plan->nworkers; i++) {
        const mw_plan_worker_t *pw = &plan->workers[i];
        cJSON *jw = cJSON_CreateObject();
        cJSON_AddItemToArray(workers, jw);
        cJSON_AddStringToObject(jw, "id", pw->id);
        cJSON_AddStringToObject(jw, "pipeline", pw->pipeline);
        cJSON_AddNumberToObject(jw, "stage", pw->stage);
        cJSON_AddBoolToObject(jw, "auto", pw->auto_stage);
        cJSON_AddStringToObject(jw, "device", pw->device);
        cJSON_AddStringToObject(jw, "state", pw->draining ? "draining" : "active");
    }
    for (size_t i = 0; i < plan->nworlds; i++) {
        const mw_plan_world_t *w = &plan->worlds[i];
        cJSON *jw = cJSON_CreateObject();
        cJSON_AddItemToArray(worlds, jw);
        cJSON_AddStringToObject(jw, "name", w->name);
        cJSON_AddStringToObject(jw, "pipeline", w->pipeline);
        cJSON_AddStringToObject(jw, "backend", w->backend);
        if (w->gen != 0)
            cJSON_AddNumberToObject(jw, "gen", (double)w->gen);
        cJSON *m = cJSON_AddArrayToObject(jw, "members");
        for (int r = 0; r < w->nmembers; r++)
            cJSON_AddItemToArray(m, cJSON_CreateString(w->members[r]));
    }
    out = cJSON_PrintUnformatted(root);
out_free:
    cJSON_Delete(root);
    return out;
}

static const cJSON *field(const cJSON *obj, const char *name)
{
    return cJSON_GetObjectItemCaseSensitive(obj, name);
}

static int get_int(const cJSON *obj, const char *name, int64_t lo, int64_t hi, int64_t *v)
{
    const cJSON *j = field(obj, name);
    if (!cJSON_IsNumber(j) || j->valuedouble != floor(j->valuedouble) ||
        j->valuedouble < (double)lo || j->valuedouble > (double)hi)
        return MW_EINVAL;
    *v = (int64_t)j->valuedouble;
    return MW_OK;
}

static int get_str(const cJSON *obj, const char *name, char *buf, size_t size)
{
    const cJSON *j = field(obj, name);
    if (!cJSON_IsString(j) || strlen(j->valuestring) >= size)
        return MW_EINVAL;
    snprintf(buf, size, "%s", j->valuestring);
    return MW_OK;
}

static int decode_pipeline(const cJSON *jp, mw_plan_pipeline_t *pp, char *errstr,
                           size_t errstr_size)
{
    if (!cJSON_IsObject(jp) || get_str(jp, "name", pp->spec.name, sizeof(pp->spec.name)) != 0 ||
        !mw_pipeline_name_valid(pp->spec.name))
        return mw_errf(MW_EINVAL, errstr, errstr_size, "a pipeline has no valid \"name\"");
    const cJSON *model = field(jp, "model"), *complete = field(jp, "complete");
    const cJSON *stages = field(jp, "stages");
    if (model != NULL && get_str(jp, "model", pp->spec.model, sizeof(pp->spec.model)) != 0)
        return mw_errf(MW_EINVAL, errstr, errstr_size, "pipeline '%s': bad \"model\"",
                       pp->spec.name);
    if (!cJSON_IsBool(complete))
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "pipeline '%s': \"complete\" must be a boolean", pp->spec.name);
    pp->complete = cJSON_IsTrue(complete);
    int n = cJSON_GetArraySize(stages);
    if (!cJSON_IsArray(stages) || n < 1 || n > MW_PIPELINE_MAX_STAGES)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "pipeline '%s': \"stages\" must list 1..%d stages", pp->spec.name,
                       MW_PIPELINE_MAX_STAGES);
    pp->spec.nstages = n;
    int s = 0;
    for (const cJSON *js = stages->child; js != NULL; js = js->next, s++) {
        mw_stage_spec_t *st = &pp->spec.stages[s];
        const cJSON *need = field(js, "need"), *layers = field(js, "layers");
        if (!cJSON_IsNumber(need) || !(need->valuedouble > 0) || !isfinite(need->valuedouble))
            return mw_errf(MW_EINVAL, errstr, errstr_size,
                           "pipeline '%s' stage %d: \"need\" must be a number > 0", pp->spec.name,
                           s);
        st->need = need->valuedouble;
        st->layer_begin = st->layer_end = -1;
        if (layers != NULL) {
            const cJSON *b = cJSON_GetArrayItem(layers, 0), *e = cJSON_GetArrayItem(layers, 1);
            if (cJSON_GetArraySize(layers) != 2 || !cJSON_IsNumber(b) || !cJSON_IsNumber(e) ||
                b->valuedouble < 0 || e->valuedouble <= b->valuedouble || e->valuedouble > 9e15)
                return mw_errf(MW_EINVAL, errstr, errstr_size,
                               "pipeline '%s' stage %d: bad \"layers\"", pp->spec.name, s);
            st->layer_begin = (int64_t)b->valuedouble;
            st->layer_end = (int64_t)e->valuedouble;
        }
    }
    return MW_OK;
}

static int find_pipeline(const mw_plan_t *plan, const char *name)
{
    for (size_t i = 0; i < plan->npipelines; i++)
        if (strcmp(plan->pipelines[i].spec.name, name) == 0)
            return (int)i;
    return -1;
}

static int decode_worker(const cJSON *jw, const mw_plan_t *plan, mw_plan_worker_t *pw, char *errstr,
                         size_t errstr_size)
{
    int64_t stage;
    if (!cJSON_IsObject(jw) || get_str(jw, "id", pw->id, sizeof(pw->id)) != 0 ||
        !mw_plan_id_valid(pw->id))
        return mw_errf(MW_EINVAL, errstr, errstr_size, "a worker has no valid \"id\"");
    if (get_str(jw, "pipeline", pw->pipeline, sizeof(pw->pipeline)) != 0)
        return mw_errf(MW_EINVAL, errstr, errstr_size, "worker '%s': bad \"pipeline\"", pw->id);
    int p = find_pipeline(plan, pw->pipeline);
    if (p < 0)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "worker '%s': pipeline '%s' is not in the plan", pw->id, pw->pipeline);
    if (get_int(jw, "stage", 0, plan->pipelines[p].spec.nstages - 1, &stage) != 0)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "worker '%s': \"stage\" must be an integer 0..%d", pw->id,
                       plan->pipelines[p].spec.nstages - 1);
    pw->stage = (int)stage;
    const cJSON *au = field(jw, "auto");
    pw->auto_stage = cJSON_IsTrue(au);
    if (au != NULL && !cJSON_IsBool(au))
        return mw_errf(MW_EINVAL, errstr, errstr_size, "worker '%s': \"auto\" must be a boolean",
                       pw->id);
    if (get_str(jw, "device", pw->device, sizeof(pw->device)) != 0 || pw->device[0] == '\0')
        return mw_errf(MW_EINVAL, errstr, errstr_size, "worker '%s': bad \"device\"", pw->id);
    char state[16];
    if (get_str(jw, "state", state, sizeof(state)) != 0 ||
        (strcmp(state, "active") != 0 && strcmp(state, "draining") != 0))
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "worker '%s': \"state\" must be \"active\" or \"draining\"", pw->id);
    pw->draining = strcmp(state, "draining") == 0;
    return MW_OK;
}

static int decode_world(const cJSON *jw, const mw_plan_t *plan, mw_plan_world_t *w, char *errstr,
                        size_t errstr_size)
{
    if (!cJSON_IsObject(jw) || get_str(jw, "name", w->name, sizeof(w->name)) != 0 ||
        w->name[0] == '\0')
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "a world has no valid \"name\" (1..%d characters)",
                       MW_PLAN_WORLD_NAME_MAX - 1);
    for (const char *c = w->name; *c; c++)
        if (!isgraph((unsigned char)*c))
            return mw_errf(MW_EINVAL, errstr, errstr_size,
                           "world name '%s' has a space or control character", w->name);
    if (get_str(jw, "pipeline", w->pipeline, sizeof(w->pipeline)) != 0 ||
        find_pipeline(plan, w->pipeline) < 0)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "world '%s': \"pipeline\" is not a pipeline of the plan", w->name);
    if (get_str(jw, "backend", w->backend, sizeof(w->backend)) != 0 ||
        (strcmp(w->backend, "tcp") != 0 && strcmp(w->backend, "nccl") != 0 &&
         strcmp(w->backend, "cuda-ipc") != 0))
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "world '%s': \"backend\" must be \"tcp\", \"nccl\" or \"cuda-ipc\"",
                       w->name);
    w->gen = 0;
    if (field(jw, "gen") != NULL && get_int(jw, "gen", 0, INT64_C(1) << 53, &w->gen) != 0)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "world '%s': \"gen\" must be an integer >= 0", w->name);
    const cJSON *m = field(jw, "members");
    int n = cJSON_GetArraySize(m);
    if (!cJSON_IsArray(m) || n < 2 || n > MW_PLAN_WORLD_MAX_MEMBERS)
        return mw_errf(MW_EINVAL, errstr, errstr_size,
                       "world '%s': \"members\" must list 2..%d worker ids (rank order)", w->name,
                       MW_PLAN_WORLD_MAX_MEMBERS);
    w->nmembers = 0;
    for (const cJSON *jm = m->child; jm != NULL; jm = jm->next) {
        const mw_plan_worker_t *pw =
            cJSON_IsString(jm) ? mw_plan_find_worker(plan, jm->valuestring) : NULL;
        if (pw == NULL || strcmp(pw->pipeline, w->pipeline) != 0)
            return mw_errf(MW_EINVAL, errstr, errstr_size,
                           "world '%s': rank %d is not a worker of pipeline '%s'", w->name,
                           w->nmembers, w->pipeline);
        if (mw_plan_world_has(w, pw->id, NULL))
            return mw_errf(MW_EINVAL, errstr, errstr_size, "world '%s': '%s' is listed twice",
                           w->name, pw->id);
        snprintf(w->members[w->nmembers++], MW_PLAN_ID_MAX, "%s", pw->id);
    }
    return MW_OK;
}

int mw_plan_decode(const char *json, size_t len, mw_plan_t **out, char *errstr, size_t errstr_size)
{
    *out = NULL;
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (root == NULL)
        return mw_errf(MW_EINVAL, errstr, errstr_size, "plan is not valid JSON");
    mw_plan_t *plan = calloc(1, sizeof(*plan));
    int rc = MW_ENOMEM;
    if (plan == NULL) {
        mw_errf(rc, errstr, errstr_size, "out of memory");
        goto out_fail;
    }
    rc = MW_EINVAL;
    const cJSON *pipes = field(root, "pipelines"), *workers = field(root, "workers");
    const cJSON *worlds = field(root, "worlds");
    if (!cJSON_IsObject(root) || get_int(root, "epoch", 0, INT64_C(1) << 53, &plan->epoch) != 0 ||
        get_int(root, "version", 0, INT64_C(1) << 53, &plan->version) != 0) {
        mw_errf(rc, errstr, errstr_size, "plan: \"epoch\" and \"version\" must be integers >= 0");
        goto out_fail;
    }
    if (!cJSON_IsArray(pipes) || !cJSON_IsArray(workers) || !cJSON_IsArray(worlds)) {
        mw_errf(rc, errstr, errstr_size,
                "plan: \"pipelines\", \"workers\" and \"worlds\" must be arrays");
        goto out_fail;
    }
    size_t np = (size_t)cJSON_GetArraySize(pipes), nw = (size_t)cJSON_GetArraySize(workers);
    size_t nv = (size_t)cJSON_GetArraySize(worlds);
    plan->pipelines = calloc(np + 1, sizeof(*plan->pipelines));
    plan->workers = calloc(nw + 1, sizeof(*plan->workers));
    plan->worlds = calloc(nv + 1, sizeof(*plan->worlds));
    if (plan->pipelines == NULL || plan->workers == NULL || plan->worlds == NULL) {
        rc = mw_errf(MW_ENOMEM, errstr, errstr_size, "out of memory");
        goto out_fail;
    }
    for (const cJSON *j = pipes->child; j != NULL; j = j->next) {
        mw_plan_pipeline_t *pp = &plan->pipelines[plan->npipelines];
        if ((rc = decode_pipeline(j, pp, errstr, errstr_size)) != MW_OK)
            goto out_fail;
        if (find_pipeline(plan, pp->spec.name) >= 0) {
            rc = mw_errf(MW_EINVAL, errstr, errstr_size, "plan: pipeline '%s' listed twice",
                         pp->spec.name);
            goto out_fail;
        }
        plan->npipelines++;
    }
    qsort(plan->pipelines, plan->npipelines, sizeof(*plan->pipelines), cmp_pipeline);
    for (const cJSON *j = workers->child; j != NULL; j = j->next)
        if ((rc = decode_worker(j, plan, &plan->workers[plan->nworkers++], errstr, errstr_size)) !=
            MW_OK)
            goto out_fail;
    qsort(plan->workers, plan->nworkers, sizeof(*plan->workers), cmp_worker);
    for (size_t i = 1; i < plan->nworkers; i++) {
        if (strcmp(plan->workers[i - 1].id, plan->workers[i].id) == 0) {
            rc = mw_errf(MW_EINVAL, errstr, errstr_size, "plan: worker '%s' listed twice",
                         plan->workers[i].id);
            goto out_fail;
        }
    }
    for (const cJSON *j = worlds->child; j != NULL; j = j->next)
        if ((rc = decode_world(j, plan, &plan->worlds[plan->nworlds++], errstr, errstr_size)) !=
            MW_OK)
            goto out_fail;
    qsort(plan->worlds, plan->nworlds, sizeof(*plan->worlds), cmp_world);
    for (size_t i = 1; i < plan->nworlds; i++) {
        if (strcmp(plan->worlds[i - 1].name, plan->worlds[i].name) == 0) {
            rc = mw_errf(MW_EINVAL, errstr, errstr_size, "plan: world '%s' listed twice",
                         plan->worlds[i].name);
            goto out_fail;
        }
    }
    cJSON_Delete(root);
    *out = plan;
    return MW_OK;

out_fail:
    cJSON_Delete(root);
    mw_plan_destroy(plan);
    return rc;
}
