/* test_waker.c - the background loops' wait: a notify ends it early (even
 * one sent before the wait), a stop ends it for good, otherwise it lasts;
 * a hold outlasts notifies until its time and then forgets them. */
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

/* Calls fn(w) 20 ms after it starts, on a thread of its own. */
struct later {
    struct waker *w;
    void (*fn)(struct waker *);
};

static void *call_later(void *arg)
{
    const struct later *l = arg;
    sleep_ms(20);
    l->fn(l->w);
    return NULL;
}

START_TEST(stop_ends_the_wait_for_good)
{
    struct waker w;
    waker_init(&w);
    pthread_t t;
    struct later stop = {&w, waker_stop};
    ck_assert_int_eq(pthread_create(&t, NULL, call_later, &stop), 0);
    int64_t t0 = mono_ms();
    ck_assert_int_eq(waker_wait(&w, 10000), 0);
    ck_assert_int_lt(mono_ms() - t0, 5000);
    pthread_join(t, NULL);
    ck_assert_int_eq(waker_stopping(&w), 1);
    ck_assert_int_eq(waker_wait(&w, 10000), 0); /* at once */
    waker_cleanup(&w);
}
END_TEST

START_TEST(hold_outlasts_notifies_and_then_forgets_them)
{
    struct waker w;
    waker_init(&w);
    waker_notify(&w);
    pthread_t t;
    struct later notify = {&w, waker_notify};
    ck_assert_int_eq(pthread_create(&t, NULL, call_later, &notify), 0);
    int64_t t0 = mono_ms();
    struct timespec until = mono_deadline_us(500 * 1000); /* the notify at 20 ms comes well within */
    ck_assert_int_eq(waker_hold(&w, &until), 1);
    ck_assert_int_ge(mono_ms() - t0, 490); /* neither notify ended it */
    pthread_join(t, NULL);
    t0 = mono_ms();
    ck_assert_int_eq(waker_wait(&w, 120), 1); /* both forgotten: it lasts */
    ck_assert_int_ge(mono_ms() - t0, 100);
    waker_cleanup(&w);
}
END_TEST

START_TEST(hold_past_its_time_returns_at_once_and_a_stop_ends_it)
{
    struct waker w;
    waker_init(&w);
    struct timespec past = mono_deadline_us(0);
    int64_t t0 = mono_ms();
    ck_assert_int_eq(waker_hold(&w, &past), 1);
    ck_assert_int_lt(mono_ms() - t0, 1000);
    pthread_t t;
    struct later stop = {&w, waker_stop};
    ck_assert_int_eq(pthread_create(&t, NULL, call_later, &stop), 0);
    struct timespec later = mono_deadline_us(10 * 1000 * 1000);
    ck_assert_int_eq(waker_hold(&w, &later), 0);
    ck_assert_int_lt(mono_ms() - t0, 5000);
    pthread_join(t, NULL);
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
    tcase_add_test(tc, hold_outlasts_notifies_and_then_forgets_them);
    tcase_add_test(tc, hold_past_its_time_returns_at_once_and_a_stop_ends_it);
    suite_add_tcase(s, tc);
    return s;
}
