/* ready.c - the readiness probers and their cached outcome. Owns the
 * prober threads; what a probe does belongs to the service. */
#include "ready.h"
#include "log.h"
#include "util.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#define READY_EVERY_MS 1000
#define READY_FRESH_MS 3500   /* a success older than this (a hung probe) counts as down */
#define STOP_SLICE_MS 50
#define WARN_AFTER_MS 5000    /* a dependency down this long is logged, once, and its return */

struct prober {
    struct ready *r;
    const struct ready_check *check;
    _Atomic int64_t ok_at_ms;      /* last success, 0 never */
    int64_t down_since_ms;         /* first failure of the current run of them, 0 none */
    int warned;                    /* that run was logged */
    char why[256];                 /* the last probe's failure, as it said it ("" none) */
    pthread_t thread;
};

struct ready {
    void *ctx;
    size_t n;
    struct prober *p;
    atomic_int stopping;
    atomic_uint rechecks;  /* ready_recheck() calls so far */
};

/* An operator reads in the log what /readyz says: a dependency that has not
 * answered for WARN_AFTER_MS (from the start on, too), and when it is back.
 * Shorter blips (a connection still being made at start) say nothing. */
static void note_outcome(struct prober *p, int ok)
{
    int64_t now = mono_ms();
    if (ok) {
        if (p->warned)
            log_info("readiness: %s answers again", p->check->name);
        p->down_since_ms = 0;
        p->warned = 0;
    } else if (!p->down_since_ms) {
        p->down_since_ms = now;
    } else if (!p->warned && now - p->down_since_ms >= WARN_AFTER_MS) {
        log_warn("readiness: %s has not answered for %lld s: /readyz answers 503%s%s",
                 p->check->name, (long long)(now - p->down_since_ms) / 1000,
                 p->why[0] ? "; last: " : "", p->why);
        p->warned = 1;
    }
}

static void *prober_main(void *arg)
{
    struct prober *p = arg;
    while (!atomic_load(&p->r->stopping)) {
        unsigned seen = atomic_load(&p->r->rechecks);
        p->why[0] = '\0';
        int ok = p->check->probe(p->r->ctx, p->why, sizeof p->why);
        atomic_store(&p->ok_at_ms, ok ? mono_ms() : 0);
        note_outcome(p, ok);
        for (int64_t end = mono_ms() + READY_EVERY_MS; mono_ms() < end &&
             !atomic_load(&p->r->stopping) && atomic_load(&p->r->rechecks) == seen;)
            sleep_ms(STOP_SLICE_MS);
    }
    return NULL;
}

void ready_start(const struct ready_check *checks, size_t n, void *ctx, struct ready **out)
{
    struct ready *r = xcalloc(1, sizeof *r);
    r->ctx = ctx;
    r->n = n;
    r->p = xcalloc(n, sizeof *r->p);
    for (size_t i = 0; i < n; i++) {
        r->p[i].r = r;
        r->p[i].check = &checks[i];
        thread_start(&r->p[i].thread, "ready-probe", prober_main, &r->p[i]);
    }
    *out = r;
}

void ready_recheck(struct ready *r)
{
    if (r)
        atomic_fetch_add(&r->rechecks, 1);
}

void ready_stop(struct ready *r)
{
    if (!r)
        return;
    atomic_store(&r->stopping, 1);
    for (size_t i = 0; i < r->n; i++)
        pthread_join(r->p[i].thread, NULL);
    free(r->p);
    free(r);
}

int ready_report(struct ready *r, json_t **body)
{
    json_t *checks = json_object();
    int all = 1;
    int64_t now = mono_ms();
    for (size_t i = 0; r && i < r->n; i++) {
        int64_t at = atomic_load(&r->p[i].ok_at_ms);
        int ok = at && now - at < READY_FRESH_MS;
        all &= ok;
        json_object_set_new(checks, r->p[i].check->name, json_string(ok ? "ok" : "down"));
    }
    *body = json_pack("{s:o}", "checks", checks);
    return all && r;
}
