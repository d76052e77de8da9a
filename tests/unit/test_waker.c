/* test_waker.c - the background loops' wait: a notify ends it early (even
 * one sent before the wait), a stop ends it for good, otherwise it lasts. */
#include "suites.h"
#include "util.h"
#include "waker.h"

#include <pthread.h>

START_TEST(wait_lasts_its_time)
{
    struct waker w;
    waker_init(&w);
    int64_t t0 = mono_ms();
    ck_assert_int_eq(waker_wait(&w, 120), 1);
    ck_assert_int_ge(mono_ms() - t0, 100);
    waker_cleanup(&w);
}
END_TEST

START_TEST(notify_before_the_wait_is_not_lost)
{
    struct waker w;
    waker_init(&w);
    waker_notify(&w);
    int64_t t0 = mono_ms();
    ck_assert_int_eq(waker_wait(&w, 10000), 1);
    ck_assert_int_lt(mono_ms() - t0, 1000);
    waker_cleanup(&w);
}
END_TEST

static void *stop_later(void *arg)
{
    sleep_ms(50);
    waker_stop(arg);
    return NULL;
}

START_TEST(stop_ends_the_wait_for_good)
{
    struct waker w;
    waker_init(&w);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, stop_later, &w), 0);
    int64_t t0 = mono_ms();
    ck_assert_int_eq(waker_wait(&w, 10000), 0);
    ck_assert_int_lt(mono_ms() - t0, 5000);
    pthread_join(t, NULL);
    ck_assert_int_eq(waker_stopping(&w), 1);
    ck_assert_int_eq(waker_wait(&w, 10000), 0); /* at once */
    waker_cleanup(&w);
}
END_TEST

Suite *waker_suite(void)
{
    Suite *s = suite_create("waker");
    TCase *tc = tcase_create("wait");
    tcase_add_test(tc, wait_lasts_its_time);
    tcase_add_test(tc, notify_before_the_wait_is_not_lost);
    tcase_add_test(tc, stop_ends_the_wait_for_good);
    suite_add_tcase(s, tc);
    return s;
}
