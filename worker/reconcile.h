/* Reconciliation of a worker's worlds against the plan: a pure diff (desired vs
 * current) that says which worlds to create, which to destroy and which to leave
 * alone, and which plans to accept at all (never one of an older epoch). */
#ifndef MW_RECONCILE_H
#define MW_RECONCILE_H

#include "cluster/plan_doc.h"

#include <stddef.h>
#include <stdint.h>

typedef struct mw_reconcile {
    mw_plan_world_t *create; /* in the plan, not current (or changed): join these */
    size_t ncreate;
    mw_plan_world_t *destroy; /* current, not in the plan (or changed): destroy these */
    size_t ndestroy;
    mw_plan_world_t *keep; /* identical in both: do not touch */
    size_t nkeep;
} mw_reconcile_t;

/* 1 when a plan (epoch, version) should replace the one applied (seen_epoch,
 * seen_version): a newer epoch, or the same epoch with a newer version. */
int mw_reconcile_should_apply(int64_t seen_epoch, int64_t seen_version, int64_t epoch,
                              int64_t version);

/* The worlds of plan that have self as a member versus current (n worlds). A world
 * whose name is in both but whose members or backend differ is destroyed and
 * created again, and so is one whose gen (incarnation) changed. plan may be NULL (everything is
 * destroyed). out owns three arrays freed by mw_reconcile_fini. Pure. */
int mw_reconcile_diff(const mw_plan_t *plan, const char *self, const mw_plan_world_t *current,
                      size_t ncurrent, mw_reconcile_t *out);

void mw_reconcile_fini(mw_reconcile_t *r);

#endif
