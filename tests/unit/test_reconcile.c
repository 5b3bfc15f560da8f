/* Reconciliation diff: create new worlds, destroy removed or changed ones, keep the
 * rest untouched; never apply a plan of an older epoch. */
#include "err.h"
#include "cluster/plan_doc.h"
#include "worker/reconcile.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

static mw_plan_t *plan_of(const char *json)
{
    char err[256];
    mw_plan_t *p = NULL;
    if (mw_plan_decode(json, strlen(json), &p, err, sizeof(err)) != MW_OK)
        fail_msg("plan: %s", err);
    return p;
}

#define HEAD                                                                                       \
    "{\"epoch\": 2, \"version\": 5, \"pipelines\": [{\"name\": \"P\", \"complete\": true, "        \
    "\"stages\": [{\"need\": 1}, {\"need\": 1}]}], \"workers\": ["                                 \
    "{\"id\": \"a\", \"pipeline\": \"P\", \"stage\": 0, \"device\": \"cpu\", \"state\": "          \
    "\"active\"},"                                                                                 \
    "{\"id\": \"b\", \"pipeline\": \"P\", \"stage\": 1, \"device\": \"cpu\", \"state\": "          \
    "\"active\"},"                                                                                 \
    "{\"id\": \"c\", \"pipeline\": \"P\", \"stage\": 1, \"device\": \"cpu\", \"state\": "          \
    "\"active\"}],"

static void diff_creates_new_destroys_removed_and_keeps_the_rest(void **state)
{
    (void)state;
    mw_plan_t *p = plan_of(HEAD "\"worlds\": ["
                                "{\"name\": \"w-ab\", \"pipeline\": \"P\", \"backend\": \"tcp\", "
                                "\"members\": [\"a\", \"b\"]},"
                                "{\"name\": \"w-ac\", \"pipeline\": \"P\", \"backend\": \"tcp\", "
                                "\"members\": [\"a\", \"c\"]}]}");
    mw_plan_world_t cur[3];
    memset(cur, 0, sizeof(cur));
    cur[0] = *mw_plan_find_world(p, "w-ab");
    snprintf(cur[1].name, sizeof(cur[1].name), "w-old");
    cur[1].nmembers = 2;
    snprintf(cur[1].members[0], sizeof(cur[1].members[0]), "a");
    snprintf(cur[1].members[1], sizeof(cur[1].members[1]), "gone");
    mw_reconcile_t d;
    assert_int_equal(mw_reconcile_diff(p, "a", cur, 2, &d), MW_OK);
    assert_int_equal(d.nkeep, 1);
    assert_string_equal(d.keep[0].name, "w-ab");
    assert_int_equal(d.ndestroy, 1);
    assert_string_equal(d.destroy[0].name, "w-old");
    assert_int_equal(d.ncreate, 1);
    assert_string_equal(d.create[0].name, "w-ac");
    mw_reconcile_fini(&d);

    /* b is only in w-ab */
    assert_int_equal(mw_reconcile_diff(p, "b", NULL, 0, &d), MW_OK);
    assert_int_equal(d.ncreate, 1);
    assert_string_equal(d.create[0].name, "w-ab");
    mw_reconcile_fini(&d);
    mw_plan_destroy(p);
}

static void same_name_with_other_backend_is_recreated(void **state)
{
    (void)state;
    mw_plan_t *p = plan_of(HEAD "\"worlds\": ["
                                "{\"name\": \"w-ab\", \"pipeline\": \"P\", \"backend\": \"nccl\", "
                                "\"members\": [\"a\", \"b\"]}]}");
    mw_plan_world_t cur = *mw_plan_find_world(p, "w-ab");
    snprintf(cur.backend, sizeof(cur.backend), "tcp");
    mw_reconcile_t d;
    assert_int_equal(mw_reconcile_diff(p, "a", &cur, 1, &d), MW_OK);
    assert_int_equal(d.nkeep, 0);
    assert_int_equal(d.ndestroy, 1);
    assert_int_equal(d.ncreate, 1);
    mw_reconcile_fini(&d);
    /* without a plan everything goes */
    assert_int_equal(mw_reconcile_diff(NULL, "a", &cur, 1, &d), MW_OK);
    assert_int_equal(d.ndestroy, 1);
    assert_int_equal(d.ncreate + d.nkeep, 0);
    mw_reconcile_fini(&d);
    mw_plan_destroy(p);
}

static void a_world_issued_again_is_recreated(void **state)
{
    (void)state;
    mw_plan_t *p = plan_of(HEAD "\"worlds\": ["
                                "{\"name\": \"w-ab\", \"pipeline\": \"P\", \"backend\": \"tcp\", "
                                "\"gen\": 9, \"members\": [\"a\", \"b\"]}]}");
    mw_plan_world_t cur = *mw_plan_find_world(p, "w-ab");
    assert_int_equal(cur.gen, 9);
    mw_reconcile_t d;
    assert_int_equal(mw_reconcile_diff(p, "a", &cur, 1, &d), MW_OK);
    assert_int_equal(d.nkeep, 1);
    mw_reconcile_fini(&d);
    cur.gen = 4; /* the incarnation we hold is older */
    assert_int_equal(mw_reconcile_diff(p, "a", &cur, 1, &d), MW_OK);
    assert_int_equal(d.nkeep, 0);
    assert_int_equal(d.ndestroy, 1);
    assert_int_equal(d.ncreate, 1);
    assert_int_equal(d.create[0].gen, 9);
    mw_reconcile_fini(&d);
    mw_plan_destroy(p);
}

static void plans_of_an_older_epoch_are_never_applied(void **state)
{
    (void)state;
    assert_true(mw_reconcile_should_apply(0, 0, 1, 1));
    assert_true(mw_reconcile_should_apply(3, 9, 3, 10));
    assert_true(mw_reconcile_should_apply(3, 9, 4, 1)); /* new leader, versions continue or not */
    assert_false(mw_reconcile_should_apply(3, 9, 3, 9));
    assert_false(mw_reconcile_should_apply(3, 9, 3, 8));
    assert_false(mw_reconcile_should_apply(4, 1, 3, 50)); /* deposed leader's plan */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(diff_creates_new_destroys_removed_and_keeps_the_rest),
        cmocka_unit_test(same_name_with_other_backend_is_recreated),
        cmocka_unit_test(a_world_issued_again_is_recreated),
        cmocka_unit_test(plans_of_an_older_epoch_are_never_applied),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
