/* ready.c - the readiness probers and their cached outcome. Owns the
 * prober threads; what a probe does belongs to the service. */
#include "ready.h"
#include "util.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#define READY_EVERY_MS 1000
#define READY_FRESH_MS 3500   /* a success older than this (a hung probe) counts as down */
#define STOP_SLICE_MS 50

struct prober {
    struct ready *r;
    const struct ready_check *check;
    _Atomic int64_t ok_at_ms;      /* last success, 0 never */
    pthread_t thread;
};

struct ready {
    void *ctx;
    size_t n;
    struct prober *p;
    atomic_int stopping;
    atomic_uint rechecks;  /* ready_recheck() calls so far */
};

static void *prober_main(void *arg)
{
    struct prober *p = arg;
    while (!atomic_load(&p->r->stopping)) {
        unsigned seen = atomic_load(&p->r->rechecks);
        if (p->check->probe(p->r->ctx))
            atomic_store(&p->ok_at_ms, mono_ms());
        else
            atomic_store(&p->ok_at_ms, 0);
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
        if (pthread_create(&r->p[i].thread, NULL, prober_main, &r->p[i]) != 0)
            abort(); /* no readiness without its probers: nothing to unwind */
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
