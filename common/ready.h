/* ready.h - /readyz without waiting: each dependency is probed by its own
 * background thread (a real round trip, bounded by the probe), and /readyz
 * reads the cached outcome, so it answers at once whatever hangs. A check
 * failing for 5 s is logged once (warn), and its return (info).
 *
 * A check is a row {name, probe}; add one to the service's table. */
#ifndef COMMON_READY_H
#define COMMON_READY_H

#include <jansson.h>
#include <stddef.h>

struct ready_check {
    const char *name;               /* the key under "checks" */
    /* 1 when the dependency answered; may block (bounded). On a failure it
     * may say why in why[0..n) (the log line says it: a refusal is not
     * silence). */
    int (*probe)(void *ctx, char *why, size_t n);
};

struct ready;

/* Starts one prober per check (every READY_EVERY_MS); checks and ctx must
 * outlive it. */
void ready_start(const struct ready_check *checks, size_t n, void *ctx, struct ready **out);
/* Has every prober probe again now (within STOP_SLICE_MS) rather than at
 * its next period: start-up calls it once a check can pass. NULL is a no-op. */
void ready_recheck(struct ready *r);
/* Stops and joins the probers (each finishes its probe first). NULL is a no-op. */
void ready_stop(struct ready *r);
/* 1 when every check succeeded recently; *body = {"checks":{name:"ok|down"}} (new ref). */
int ready_report(struct ready *r, json_t **body);

#endif
