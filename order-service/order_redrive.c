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

/* $1: REDRIVE_AFTER in ms; ($2, $3): the cursor; $4: page size; $5 (NULL:
 * none): when the stream stored the last OrderCreated inventory-service
 * acknowledged, in epoch seconds. `due`: not re-driven within REDRIVE_AFTER
 * (at most one re-send per order per period, whatever the retention of its
 * outbox row), and neither created nor published after $5: its OrderCreated
 * waits in the stream, past the consumer's floor, and is not lost (the
 * order's own time still tells once its published row is pruned). */
static const struct db_stmt redrive_stmts[] = {
    {"redrive_page",
     "SELECT o.id, o.created_at::text, o.event_id, o.customer_id, "
     "to_char(o.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "
     "(SELECT json_agg(json_build_object('sku', sku, 'qty', qty) ORDER BY line) "
     " FROM order_items WHERE order_id = o.id)::text, "
     "(o.redriven_at IS NULL OR o.redriven_at < now() - $1::bigint * interval '1 millisecond') "
     "AND ($5::float8 IS NULL OR NOT (o.created_at > to_timestamp($5::float8) OR EXISTS ("
     "  SELECT 1 FROM outbox_published p WHERE p.event_id = o.event_id "
     "  AND p.published_at > to_timestamp($5::float8)))), "
     "o.traceparent "
     "FROM orders o WHERE o.status = 'PENDING' "
     "AND o.created_at < now() - $1::bigint * interval '1 millisecond' "
     "AND (o.created_at, o.id) > ($2::timestamptz, $3::uuid) "
     "ORDER BY o.created_at, o.id LIMIT $4"},
    {"redrive_mark", "UPDATE orders SET redriven_at = now() WHERE id = ANY($1::uuid[])"},
    {"resend", OUTBOX_RESEND_SQL},
};

/* The consumers an order's events wait in: its OrderCreated in
 * inventory-service's, its reply in order-service's (the contract's). */
enum { EVENTS, REPLIES, NCONSUMERS };
static const struct { const char *stream, *durable; } consumers[NCONSUMERS] = {
    [EVENTS] = {"ORDERS", "inventory-service"},
    [REPLIES] = {"INVENTORY", "order-service"},
};

struct redrive {
    const struct config *cfg;
    struct relay *relay;
    struct broker *broker;
    int waiting;             /* the last pass waited for a consumer (logged once) */
    uint64_t floor[NCONSUMERS]; /* each one's ack floor at the last pass (UINT64_MAX: none) */
    char floor_at[32];       /* $5 of this pass: "" for none */
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
    const char *params[] = {after, r->cursor_at, r->cursor_id, size,
                            r->floor_at[0] ? r->floor_at : NULL};
    PGresult *res = NULL;
    if (db_exec(r->db, "redrive_page", 5, params, &res) != ERR_OK)
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

/* Whether messages wait in consumer k for a reader that will take them: it
 * has some it has not acknowledged, and either nobody fetches (the reader
 * is down, or its database is: it fetches nothing then) or its floor moved
 * since the last pass (the reader is catching up). What waits so is not
 * lost: re-sent past the duplicate window, it would only be stored again,
 * a copy per order per REDRIVE_AFTER while the reader is down (a helper's
 * probe: inventory-service stopped 165 s, all 201 orders twice in ORDERS).
 * A floor that stays put while someone fetches is stuck on what will never
 * come (nats-server 2.9.10 keeps an entry awaiting its ack for a message
 * its stream lost, and a review held 5 lost orders back so), and holds
 * nothing back: the re-drive fills what was lost. Nor does a consumer the
 * server cannot tell of (no connection; lost with the broker's store). */
static int waits_in(struct redrive *r, int k, struct broker_consumer *cs)
{
    if (broker_consumer_state(r->broker, consumers[k].stream, consumers[k].durable, cs) != ERR_OK) {
        r->floor[k] = UINT64_MAX;
        return 0;
    }
    int moved = cs->ack_floor != r->floor[k]; /* UINT64_MAX: not seen yet, taken as moved */
    r->floor[k] = cs->ack_floor;
    return cs->unacked > 0 && (!cs->fetching || moved);
}

/* When the stream stored what waits past a consumer's ack floor (ns): the
 * floor's own message, or, once that one is gone (past the stream's max
 * age: a reader down after a quiet spell longer than it), the first
 * message the stream still holds, when that is past the floor. Without
 * it, every order waiting for a stopped reader was sent again each
 * REDRIVE_AFTER (a helper's probe: 10 orders became 60 messages in 48 s).
 * 0 when there is no such time (a floor in the middle of deleted
 * messages): no bound, every due order is sent again. */
static int floor_time(struct redrive *r, uint64_t ack_floor, int64_t *ns)
{
    const char *stream = consumers[EVENTS].stream;
    uint64_t first = 0;
    *ns = 0;
    if (!ack_floor)
        return 1;
    enum err e = broker_stream_msg_time(r->broker, stream, ack_floor, ns);
    if (e != ERR_NOT_FOUND || waker_stopping(&r->waker)) /* no answer: no third ask */
        return e == ERR_OK;
    return broker_stream_first(r->broker, stream, &first, ns) == ERR_OK && first > ack_floor;
}

/* Before a pass: whether it waits (the replies wait for their reader: no
 * order is re-driven meanwhile), and else the bound of what it re-sends
 * (r->floor_at): while OrderCreated events wait for their reader, one
 * created or published after the message at its floor is among them. */
static int wait_for_consumers(struct redrive *r)
{
    struct broker_consumer cs = {0};
    int64_t ns = 0;
    r->floor_at[0] = '\0';
    int wait = waits_in(r, REPLIES, &cs);
    if (waker_stopping(&r->waker)) /* each ask may take API_WAIT_MS: no more of them */
        return 1;
    if (!wait && waits_in(r, EVENTS, &cs) && floor_time(r, cs.ack_floor, &ns))
        snprintf(r->floor_at, sizeof r->floor_at, "%.6f", (double)ns / 1e9);
    if (wait != r->waiting)
        log_info(wait ? "re-drive waits: the orders' replies wait for order-service's consumer "
                        "on INVENTORY"
                      : "re-drive goes on: the replies' consumer has caught up");
    r->waiting = wait;
    return wait;
}

static void *redrive_main(void *arg)
{
    struct redrive *r = arg;
    while (waker_wait(&r->waker, period_ms(r))) {
        if (wait_for_consumers(r))
            continue;
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

void redrive_start(const struct config *cfg, struct relay *relay, struct broker *b,
                   struct redrive **out)
{
    struct redrive *r = xcalloc(1, sizeof *r);
    r->cfg = cfg;
    r->relay = relay;
    r->broker = b;
    r->floor[EVENTS] = r->floor[REPLIES] = UINT64_MAX;
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
