/* waker.c - the timed, notifiable, stoppable wait of the background loops
 * (relay, re-drive, retention, reconciliation), and their threads. Owns its mutex and condition variable. */
#include "waker.h"
#include "util.h"

#include <stdlib.h>
#include <time.h>

void waker_init(struct waker *w)
{
    pthread_mutex_init(&w->mu, NULL);
    cond_init_monotonic(&w->cv);
    w->notified = w->stopping = 0;
}

void waker_cleanup(struct waker *w)
{
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
}

/* Waits until `until`, a stop, or (if notify_ends) a notify, then forgets
 * the notifies so far. 0 once stopped. */
static int wait_until(struct waker *w, const struct timespec *until, int notify_ends)
{
    pthread_mutex_lock(&w->mu);
    while (!w->stopping && !(notify_ends && w->notified))
        if (pthread_cond_timedwait(&w->cv, &w->mu, until) != 0)
            break;
    w->notified = 0;
    int go_on = !w->stopping;
    pthread_mutex_unlock(&w->mu);
    return go_on;
}

int waker_wait(struct waker *w, int64_t ms)
{
    struct timespec until = mono_deadline(ms);
    return wait_until(w, &until, 1);
}

int waker_hold(struct waker *w, const struct timespec *until)
{
    return wait_until(w, until, 0);
}

static void set_flag(struct waker *w, int *flag)
{
    pthread_mutex_lock(&w->mu);
    *flag = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

void waker_notify(struct waker *w)
{
    set_flag(w, &w->notified);
}

void waker_stop(struct waker *w)
{
    set_flag(w, &w->stopping);
}

int waker_stopping(struct waker *w)
{
    pthread_mutex_lock(&w->mu);
    int s = w->stopping;
    pthread_mutex_unlock(&w->mu);
    return s;
}

void waker_thread_start(struct waker *w, pthread_t *t, const char *name, void *(*fn)(void *),
                       void *arg)
{
    waker_init(w);
    thread_start(t, name, fn, arg);
}

void waker_thread_stop(struct waker *w, pthread_t t)
{
    waker_stop(w);
    pthread_join(t, NULL);
    waker_cleanup(w);
}
