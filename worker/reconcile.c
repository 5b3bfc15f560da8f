/* Desired-versus-current diff of a worker's worlds (pure). */
#include "reconcile.h"

#include "err.h"

#include <stdlib.h>
#include <string.h>

int mw_reconcile_should_apply(int64_t seen_epoch, int64_t seen_version, int64_t epoch,
                              int64_t version)
{
    return epoch > seen_epoch || (epoch == seen_epoch && version > seen_version);
}

static int same_world(const mw_plan_world_t *a, const mw_plan_world_t *b)
{
    if (strcmp(a->name, b->name) != 0 || strcmp(a->backend, b->backend) != 0 ||
        a->nmembers != b->nmembers || a->gen != b->gen)
        return 0;
    for (int i = 0; i < a->nmembers; i++)
        if (strcmp(a->members[i], b->members[i]) != 0)
            return 0;
    return 1;
}

void mw_reconcile_fini(mw_reconcile_t *r)
{
    if (r == NULL)
        return;
    free(r->create);
    free(r->destroy);
    free(r->keep);
    memset(r, 0, sizeof(*r));
}

int mw_reconcile_diff(const mw_plan_t *plan, const char *self, const mw_plan_world_t *current,
                      size_t ncurrent, mw_reconcile_t *out)
{
    memset(out, 0, sizeof(*out));
    size_t nplan = plan ? plan->nworlds : 0;
    out->create = calloc(nplan + 1, sizeof(*out->create));
    out->destroy = calloc(ncurrent + 1, sizeof(*out->destroy));
    out->keep = calloc(ncurrent + 1, sizeof(*out->keep));
    if (out->create == NULL || out->destroy == NULL || out->keep == NULL) {
        mw_reconcile_fini(out);
        return MW_ENOMEM;
    }
    for (size_t i = 0; i < ncurrent; i++) {
        const mw_plan_world_t *want = mw_plan_find_world(plan, current[i].name);
        if (want != NULL && mw_plan_world_has(want, self, NULL) && same_world(want, &current[i]))
            out->keep[out->nkeep++] = current[i];
        else
            out->destroy[out->ndestroy++] = current[i];
    }
    for (size_t i = 0; i < nplan; i++) {
        const mw_plan_world_t *w = &plan->worlds[i];
        if (!mw_plan_world_has(w, self, NULL))
            continue;
        int kept = 0;
        for (size_t k = 0; k < out->nkeep && !kept; k++)
            kept = strcmp(out->keep[k].name, w->name) == 0;
        if (!kept)
            out->create[out->ncreate++] = *w;
    }
    return MW_OK;
}
