/* test_backoff.c - the retry schedule of the relay and the consumers:
 * exponential growth, the cap, equal jitter, and no overflow. */
#include <limits.h>
#include <stdint.h>

#include "backoff.h"
#include "suites.h"

/* rand01 = 0 gives the low edge d/2; rand01 just below 1 gives ~d. */
#define LOW 0.0
#define HIGH 0.9999999

START_TEST(delay_doubles_with_each_attempt)
{
    /* the upper edge of the jitter is the undelayed schedule: 100, 200, 400, 800 */
    ck_assert_int_eq(backoff_delay_ms(1, 100, 60000, HIGH), 99);
    ck_assert_int_eq(backoff_delay_ms(2, 100, 60000, HIGH), 199);
    ck_assert_int_eq(backoff_delay_ms(3, 100, 60000, HIGH), 399);
    ck_assert_int_eq(backoff_delay_ms(4, 100, 60000, HIGH), 799);
    ck_assert_int_eq(backoff_delay_ms(1, 100, 60000, LOW), 50);
    ck_assert_int_eq(backoff_delay_ms(4, 100, 60000, LOW), 400);
}
END_TEST

START_TEST(delay_is_capped)
{
    /* 100 * 2^9 = 51200, 2^10 = 102400 > cap */
    ck_assert_int_eq(backoff_delay_ms(11, 100, 30000, LOW), 15000);
    ck_assert_int_le(backoff_delay_ms(11, 100, 30000, HIGH), 30000);
    ck_assert_int_ge(backoff_delay_ms(11, 100, 30000, HIGH), 29990);
    ck_assert_int_eq(backoff_delay_ms(50, 100, 30000, LOW), 15000);
}
END_TEST

START_TEST(base_above_cap_is_capped)
{
    ck_assert_int_le(backoff_delay_ms(1, 5000, 1000, HIGH), 1000);
    ck_assert_int_eq(backoff_delay_ms(1, 5000, 1000, LOW), 500);
}
END_TEST

START_TEST(jitter_stays_within_half_and_full_delay)
{
    for (int attempt = 1; attempt <= 20; attempt++) {
        int64_t d = 250;
        for (int i = 1; i < attempt && d < 20000; i++)
            d *= 2;
        if (d > 20000)
            d = 20000;
        for (double r = 0; r < 1; r += 0.0625) {
            int64_t got = backoff_delay_ms(attempt, 250, 20000, r);
            ck_assert_int_ge(got, d / 2);
            ck_assert_int_le(got, d);
        }
    }
}
END_TEST

START_TEST(jitter_grows_with_rand)
{
    int64_t prev = -1;
    for (double r = 0; r < 1; r += 0.125) {
        int64_t got = backoff_delay_ms(5, 100, 60000, r);
        ck_assert_int_ge(got, prev);
        prev = got;
    }
    ck_assert_int_gt(prev, backoff_delay_ms(5, 100, 60000, 0));
}
END_TEST

START_TEST(rand_out_of_range_is_clamped)
{
    ck_assert_int_eq(backoff_delay_ms(3, 100, 60000, -1.0), 200);
    ck_assert_int_le(backoff_delay_ms(3, 100, 60000, 1.0), 400);
    ck_assert_int_le(backoff_delay_ms(3, 100, 60000, 7.5), 400);
}
END_TEST

START_TEST(huge_attempt_never_exceeds_cap)
{
    int attempts[] = {64, 65, 1000, 1 << 20, INT_MAX};
    for (size_t i = 0; i < sizeof attempts / sizeof attempts[0]; i++) {
        int64_t got = backoff_delay_ms(attempts[i], 100, 30000, HIGH);
        ck_assert_int_ge(got, 15000);
        ck_assert_int_le(got, 30000);
    }
}
END_TEST

/* A cap near the top of int64_t must not make the doubling overflow
 * (signed overflow aborts this UBSan build). */
START_TEST(huge_cap_does_not_overflow)
{
    int64_t got = backoff_delay_ms(INT_MAX, 1, INT64_MAX, LOW);
    ck_assert_int_ge(got, 0);
    ck_assert_int_le(got, INT64_MAX);
    got = backoff_delay_ms(200, 3, INT64_MAX - 1, HIGH);
    ck_assert_int_gt(got, 0);
}
END_TEST

START_TEST(rand01_is_in_unit_interval)
{
    double min = 1, max = 0;
    for (int i = 0; i < 10000; i++) {
        double r = backoff_rand01();
        ck_assert(r >= 0.0 && r < 1.0);
        min = r < min ? r : min;
        max = r > max ? r : max;
    }
    /* not stuck on one value: 10000 draws cover most of [0,1) */
    ck_assert_double_lt(min, 0.01);
    ck_assert_double_gt(max, 0.99);
}
END_TEST

Suite *backoff_suite(void)
{
    Suite *s = suite_create("backoff");
    TCase *tc = tcase_create("delay");
    tcase_add_test(tc, delay_doubles_with_each_attempt);
    tcase_add_test(tc, delay_is_capped);
    tcase_add_test(tc, base_above_cap_is_capped);
    tcase_add_test(tc, jitter_stays_within_half_and_full_delay);
    tcase_add_test(tc, jitter_grows_with_rand);
    tcase_add_test(tc, rand_out_of_range_is_clamped);
    tcase_add_test(tc, huge_attempt_never_exceeds_cap);
    tcase_add_test(tc, huge_cap_does_not_overflow);
    suite_add_tcase(s, tc);
    tc = tcase_create("rand01");
    tcase_add_test(tc, rand01_is_in_unit_interval);
    suite_add_tcase(s, tc);
    return s;
}
