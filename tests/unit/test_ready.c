/* test_ready.c - the readiness probers: a check is reported ok once its
 * probe passes, and ready_recheck() has it probed again at once, not a
 * probe period (1 s) later: start-up is ready as soon as it can be. */
#include "ready.h"
#include "suites.h"
#include "util.h"

#include <stdatomic.h>

static atomic_int can_pass, probes;

static int probe_flag(void *ctx, char *why, size_t n)
{
    (void)ctx, (void)why, (void)n;
    atomic_fetch_add(&probes, 1);
    return atomic_load(&can_pass);
}

static const struct ready_check checks[] = {{"flag", probe_flag}};

static int report(struct ready *r)
{
    json_t *body = NULL;
    int ok = ready_report(r, &body);
    json_decref(body);
    return ok;
}

/* Probers started on a check that fails until can_pass is set; returns
 * once the first probe has failed (the next is due a period, 1 s, later). */
static struct ready *start_failing(void)
{
    atomic_store(&can_pass, 0);
    atomic_store(&probes, 0);
    struct ready *r = NULL;
    ready_start(checks, 1, NULL, &r);
    for (int64_t end = mono_ms() + 3000; atomic_load(&probes) < 1 && mono_ms() < end;)
        sleep_ms(5);
    ck_assert_int_ge(atomic_load(&probes), 1);
    return r;
}

START_TEST(recheck_probes_again_at_once)
{
    struct ready *r = start_failing();
    int64_t first = mono_ms();
    ck_assert_int_eq(report(r), 0);
    atomic_store(&can_pass, 1);
    ready_recheck(r);
    while (!report(r) && mono_ms() - first < 3000) /* ok once the probe's outcome is stored */
        sleep_ms(5);
    ck_assert_int_eq(report(r), 1);
    ck_assert_int_lt(mono_ms() - first, 700); /* not the period's 1,000 ms */
    ready_stop(r);
}
END_TEST

START_TEST(a_failing_probe_reports_down_with_its_name)
{
    struct ready *r = start_failing();
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
