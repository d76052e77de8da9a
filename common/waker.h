/* waker.h - a background loop's sleep: a timed wait that a notify ends
 * early and a stop ends for good. On the monotonic clock, so a wall-clock
 * step can neither stall nor hurry it. Embedded: waker_init / waker_cleanup. */
#ifndef COMMON_WAKER_H
#define COMMON_WAKER_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

struct waker {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int notified, stopping;
};

void waker_init(struct waker *w);
void waker_cleanup(struct waker *w);
/* Sleeps up to ms, less if notified meanwhile (or before). 0 once stopped. */
int waker_wait(struct waker *w, int64_t ms);
/* After a wait that a notify ended: lets more notifies come until `until`
 * (CLOCK_MONOTONIC; returns at once if past), then forgets them all, for
 * the pass that follows covers what they announced. A stop ends it early:
 * 0 once stopped. */
int waker_hold(struct waker *w, const struct timespec *until);
/* Ends the current or next wait early. */
void waker_notify(struct waker *w);
/* Ends every wait from now on. */
void waker_stop(struct waker *w);
int waker_stopping(struct waker *w);

/* A background loop on its own thread: inits w, then runs fn(arg) on *t
 * (aborts if no thread can be made: nothing could run without it). */
void waker_thread_start(struct waker *w, pthread_t *t, const char *name, void *(*fn)(void *),
                       void *arg);
/* Stops w's waits, joins t, cleans w up. */
void waker_thread_stop(struct waker *w, pthread_t t);

#endif
