/* test_ready.c - the readiness probers: a check is reported ok once its
 * probe passes, and ready_recheck() has it probed again at once, not a
 * probe period (1 s) later: start-up is ready as soon as it can be. */
#include "ready.h"
#include "suites.h"
#include "util.h"

#include <stdatomic.h>

static atomic_int can_pass;

static int probe_flag(void *ctx)
{
    (void)ctx;
    return atomic_load(&can_pass);
}

static const struct ready_check checks[] = {{"flag", probe_flag}};

/* Polls the report for up to ms; 1 once it says ready. */
static int ready_within(struct ready *r, int64_t ms)
{
    for (int64_t end = mono_ms() + ms; mono_ms() < end; sleep_ms(10)) {
        json_t *body = NULL;
        int ok = ready_report(r, &body);
        json_decref(body);
        if (ok)
            return 1;
    }
    return 0;
}

START_TEST(recheck_probes_again_at_once)
{
    atomic_store(&can_pass, 0);
    struct ready *r = NULL;
    ready_start(checks, 1, NULL, &r);
    sleep_ms(100); /* the first probe failed; the next is due 1 s after it */
    ck_assert_int_eq(ready_within(r, 1), 0);
    atomic_store(&can_pass, 1);
    ready_recheck(r);
    ck_assert_int_eq(ready_within(r, 600), 1);
    ready_stop(r);
}
END_TEST

START_TEST(a_failing_probe_reports_down_with_its_name)
{
    atomic_store(&can_pass, 0);
    struct ready *r = NULL;
    ready_start(checks, 1, NULL, &r);
    sleep_ms(50);
    json_t *body = NULL;
    ck_assert_int_eq(ready_report(r, &body), 0);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(body, "checks"), "flag")),
                     "down");
    json_decref(body);
    ready_stop(r);
}
END_TEST

Suite *ready_suite(void)
{
    Suite *s = suite_create("ready");
    TCase *tc = tcase_create("probe");
    tcase_add_test(tc, recheck_probes_again_at_once);
    tcase_add_test(tc, a_failing_probe_reports_down_with_its_name);
    suite_add_tcase(s, tc);
    return s;
}
