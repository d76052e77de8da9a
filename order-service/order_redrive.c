/* order_redrive.c - the sweep thread that re-queues OrderCreated events of
 * orders that stay PENDING. Owns its thread and connection; the relay does
 * the publishing. */
#include "order_redrive.h"
#include "db.h"
#include "log.h"
#include "metrics.h"
#include "util.h"
#include "waker.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define PERIOD_MAX_MS 30000
#define PERIOD_MIN_MS 500

static const struct db_stmt redrive_stmts[] = {
    {"stuck_orders",
     "SELECT id FROM orders WHERE status = 'PENDING' "
     "AND created_at < now() - $1::bigint * interval '1 millisecond' "
     "ORDER BY created_at LIMIT 1000"},
    {"resend", OUTBOX_RESEND_SQL},
};

struct redrive {
    const struct config *cfg;
    struct relay *relay;
    struct db *db;
    struct metric *m_redriven;
    pthread_t thread;
    struct waker waker;
};

/* One sweep: returns how many events were queued again. */
static long sweep(struct redrive *r)
{
    char after[32];
    snprintf(after, sizeof after, "%lld", (long long)r->cfg->redrive_after_ms);
    const char *p1[] = {after};
    PGresult *stuck = NULL, *sent = NULL;
    long n = 0;
    if (db_exec(r->db, "stuck_orders", 1, p1, &stuck) == ERR_OK && PQntuples(stuck) > 0) {
        struct buf ids;
        buf_init(&ids);
        buf_append(&ids, "{", 1);
        for (int i = 0; i < PQntuples(stuck); i++)
            buf_pg_array_elem(&ids, PQgetvalue(stuck, i, 0));
        buf_append(&ids, "}", 1);
        const char *p3[] = {ids.data, "{OrderCreated}", after};
        if (db_exec(r->db, "resend", 3, p3, &sent) == ERR_OK)
            n = PQntuples(sent);
        buf_cleanup(&ids);
    }
    PQclear(sent);
    PQclear(stuck);
    return n;
}

/* The sweep's period: half the re-drive delay, within bounds. */
static int64_t period_ms(const struct redrive *r)
{
    int64_t ms = r->cfg->redrive_after_ms / 2;
    return ms > PERIOD_MAX_MS ? PERIOD_MAX_MS : ms < PERIOD_MIN_MS ? PERIOD_MIN_MS : ms;
}

static void *redrive_main(void *arg)
{
    struct redrive *r = arg;
    while (waker_wait(&r->waker, period_ms(r))) {
        long n = sweep(r);
        if (n > 0) {
            log_warn("re-drive: %ld orders still PENDING after %lld ms: their OrderCreated "
                     "is published again", n, (long long)r->cfg->redrive_after_ms);
            metric_add(r->m_redriven, "", (double)n);
            relay_notify(r->relay);
        }
    }
    return NULL;
}

void redrive_start(const struct config *cfg, struct relay *relay, struct redrive **out)
{
    struct redrive *r = xcalloc(1, sizeof *r);
    r->cfg = cfg;
    r->relay = relay;
    r->m_redriven = metrics_register("orders_redriven_total",
                                     "OrderCreated events published again for orders still PENDING.",
                                     METRIC_COUNTER, NULL, 0);
    metric_add(r->m_redriven, "", 0);
    db_new(cfg->database_url, redrive_stmts, ARRAY_LEN(redrive_stmts), &r->db);
    waker_init(&r->waker);
    if (pthread_create(&r->thread, NULL, redrive_main, r) != 0)
        abort(); /* cannot run without it: nothing to unwind */
    *out = r;
}

void redrive_stop(struct redrive *r)
{
    if (!r)
        return;
    waker_stop(&r->waker);
    pthread_join(r->thread, NULL);
    db_free(r->db);
    waker_cleanup(&r->waker);
    free(r);
}
