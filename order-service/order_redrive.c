/* order_redrive.c - the sweep thread that sends again the OrderCreated of
 * orders that stay PENDING. Pages through ALL of them by (created_at, id)
 * and comes back round; rebuilds each event from the order itself (its
 * stored event id), so no outbox row needs to be retained for it. Owns its
 * thread, connection and cursor; the relay does the publishing. */
#include "order_redrive.h"
#include "db.h"
#include "event.h"
#include "log.h"
#include "metrics.h"
#include "util.h"
#include "waker.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PERIOD_MAX_MS 30000
#define PERIOD_MIN_MS 500
#define PAGE_SIZE 500       /* orders read per statement */
#define PAGES_PER_PASS 10   /* bounds one wake-up's work */
#define CURSOR_START_AT "-infinity"
#define CURSOR_START_ID "00000000-0000-0000-0000-000000000000"

/* $1: REDRIVE_AFTER in ms; ($2, $3): the cursor; $4: page size. `due`: not
 * re-driven within REDRIVE_AFTER (at most one re-send per order per period,
 * whatever the retention of its outbox row). */
static const struct db_stmt redrive_stmts[] = {
    {"redrive_page",
     "SELECT o.id, o.created_at::text, o.event_id, o.customer_id, "
     "to_char(o.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "
     "(SELECT json_agg(json_build_object('sku', sku, 'qty', qty) ORDER BY line) "
     " FROM order_items WHERE order_id = o.id)::text, "
     "o.redriven_at IS NULL OR o.redriven_at < now() - $1::bigint * interval '1 millisecond', "
     "o.traceparent "
     "FROM orders o WHERE o.status = 'PENDING' "
     "AND o.created_at < now() - $1::bigint * interval '1 millisecond' "
     "AND (o.created_at, o.id) > ($2::timestamptz, $3::uuid) "
     "ORDER BY o.created_at, o.id LIMIT $4"},
    {"redrive_mark", "UPDATE orders SET redriven_at = now() WHERE id = ANY($1::uuid[])"},
    {"resend", OUTBOX_RESEND_SQL},
};

struct redrive {
    const struct config *cfg;
    struct relay *relay;
    struct db *db;
    struct metric *m_redriven;
    pthread_t thread;
    struct waker waker;
    char cursor_at[64], cursor_id[UUID_STR_LEN]; /* the last order looked at */
};

/* The OrderCreated of one page row, added to rows; 0 if unreadable. */
static int rebuild_event(PGresult *res, int row, struct db_columns *rows)
{
    struct order_created ev = {0};
    snprintf(ev.order_id, sizeof ev.order_id, "%s", PQgetvalue(res, row, 0));
    snprintf(ev.event_id, sizeof ev.event_id, "%s", PQgetvalue(res, row, 2));
    snprintf(ev.customer_id, sizeof ev.customer_id, "%s", PQgetvalue(res, row, 3));
    snprintf(ev.occurred_at, sizeof ev.occurred_at, "%s", PQgetvalue(res, row, 4));
    json_t *items = json_loads(PQgetvalue(res, row, 5), 0, NULL);
    int ok = event_items_parse(items, &ev.items, &ev.nitems, NULL) == ERR_OK;
    if (ok) {
        char *payload = event_order_created_encode(&ev);
        outbox_row_add(rows, ev.event_id, "orders.created", "OrderCreated", payload,
                       ev.order_id, PQgetisnull(res, row, 7) ? NULL : PQgetvalue(res, row, 7));
        free(payload);
    }
    event_order_created_cleanup(&ev);
    json_decref(items);
    return ok;
}

/* Queues the due orders of a page again; returns how many were queued. */
static long resend_due(struct redrive *r, PGresult *page, const char *after)
{
    static const enum db_elem elems[] = {OUTBOX_ROW_ELEMS};
    struct db_columns rows;
    struct buf ids;
    db_columns_open(&rows, ARRAY_LEN(elems), elems);
    buf_pg_array_open(&ids);
    for (int i = 0; i < PQntuples(page); i++)
        if (PQgetvalue(page, i, 6)[0] == 't' && rebuild_event(page, i, &rows))
            buf_pg_array_elem(&ids, PQgetvalue(page, i, 0));
    buf_pg_array_close(&ids);
    const char *p1[] = {ids.data};
    PGresult *sent = NULL;
    long n = 0;
    if (db_columns_rows(&rows) && db_columns_exec(r->db, "resend", &rows, after, &sent) == ERR_OK) {
        n = PQntuples(sent);
        db_exec(r->db, "redrive_mark", 1, p1, NULL);
    }
    PQclear(sent);
    buf_cleanup(&ids);
    db_columns_cleanup(&rows);
    return n;
}

/* One page from the cursor on. Returns the orders read (-1 on error) and
 * adds those queued again to *sent. */
static int page(struct redrive *r, long *sent)
{
    char after[32], size[16];
    snprintf(after, sizeof after, "%lld", (long long)r->cfg->redrive_after_ms);
    snprintf(size, sizeof size, "%d", PAGE_SIZE);
    const char *params[] = {after, r->cursor_at, r->cursor_id, size};
    PGresult *res = NULL;
    if (db_exec(r->db, "redrive_page", 4, params, &res) != ERR_OK)
        return -1;
    int n = PQntuples(res);
    if (n > 0) {
        *sent += resend_due(r, res, after);
        snprintf(r->cursor_at, sizeof r->cursor_at, "%s", PQgetvalue(res, n - 1, 1));
        snprintf(r->cursor_id, sizeof r->cursor_id, "%s", PQgetvalue(res, n - 1, 0));
    }
    PQclear(res);
    return n;
}

static void rewind_cursor(struct redrive *r)
{
    snprintf(r->cursor_at, sizeof r->cursor_at, "%s", CURSOR_START_AT);
    snprintf(r->cursor_id, sizeof r->cursor_id, "%s", CURSOR_START_ID);
}

/* One pass: at most PAGES_PER_PASS pages; a short page means the end was
 * reached, and the next page starts from the oldest again. */
static long sweep(struct redrive *r)
{
    long sent = 0;
    for (int i = 0; i < PAGES_PER_PASS && !waker_stopping(&r->waker); i++) {
        int n = page(r, &sent);
        if (n < 0)
            break; /* the cursor stays: the next pass goes on from there */
        if (n < PAGE_SIZE) {
            rewind_cursor(r);
            break;
        }
    }
    return sent;
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
    rewind_cursor(r);
    r->m_redriven = metrics_register("orders_redriven_total",
                                     "OrderCreated events published again for orders still PENDING.",
                                     METRIC_COUNTER, NULL, 0);
    metric_add(r->m_redriven, "", 0);
    db_new(cfg->database_url, "redrive", redrive_stmts, ARRAY_LEN(redrive_stmts), &r->db);
    waker_thread_start(&r->waker, &r->thread, "redrive", redrive_main, r);
    *out = r;
}

void redrive_stop(struct redrive *r)
{
    if (!r)
        return;
    waker_thread_stop(&r->waker, r->thread);
    db_free(r->db);
    free(r);
}
