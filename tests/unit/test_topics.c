/* Unit tests of topic naming: a pipeline's three topic names and the names refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "err.h"
#include "topics/topics.h"

#include <string.h>

static void pipeline_topics_are_named_with_their_suffixes(void **state)
{
    (void)state;
    char name[MW_TOPIC_NAME_MAX + 1], err[256];
    assert_int_equal(
        mw_topic_name(name, sizeof(name), "mnist-v1.2_a", MW_TOPIC_REQUESTS, err, sizeof(err)),
        MW_OK);
    assert_string_equal(name, "mnist-v1.2_a.requests");
    assert_int_equal(mw_topic_name(name, sizeof(name), "p", MW_TOPIC_RESULTS, err, sizeof(err)),
                     MW_OK);
    assert_string_equal(name, "p.results");
    assert_int_equal(mw_topic_name(name, sizeof(name), "p", MW_TOPIC_DLQ, err, sizeof(err)), MW_OK);
    assert_string_equal(name, "p.dlq");
}

static void pipeline_names_outside_the_kafka_alphabet_are_refused(void **state)
{
    (void)state;
    char name[MW_TOPIC_NAME_MAX + 1], err[256];
    assert_int_equal(mw_topic_name(name, sizeof(name), "", MW_TOPIC_REQUESTS, err, sizeof(err)),
                     MW_EINVAL);
    assert_non_null(strstr(err, "empty"));
    assert_int_equal(mw_topic_name(name, sizeof(name), "a/b", MW_TOPIC_REQUESTS, err, sizeof(err)),
                     MW_EINVAL);
    assert_non_null(strstr(err, "only letters, digits"));
    assert_int_equal(mw_topic_name(name, sizeof(name), "a b", MW_TOPIC_REQUESTS, err, sizeof(err)),
                     MW_EINVAL);
    char longname[300];
    memset(longname, 'x', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    assert_int_equal(mw_topic_name(name, sizeof(name), longname, MW_TOPIC_DLQ, err, sizeof(err)),
                     MW_EINVAL);
    assert_non_null(strstr(err, "at most 240"));
    char small[8];
    assert_int_equal(
        mw_topic_name(small, sizeof(small), "pipeline", MW_TOPIC_DLQ, err, sizeof(err)), MW_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(pipeline_topics_are_named_with_their_suffixes),
        cmocka_unit_test(pipeline_names_outside_the_kafka_alphabet_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
