/* inventory_store.c - SQL of the stock, reservations and (for replies)
 * outbox tables. Owns the statements and the lock order; the decision
 * itself is inventory_decide(). */
#include "inventory_store.h"
#include "inventory.h"
#include "outbox.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const struct db_stmt inventory_store_stmts[] = {
    {"stock_put",
     "INSERT INTO stock (sku, available) VALUES ($1, $2::int) ON CONFLICT (sku) DO UPDATE "
     "SET available = EXCLUDED.available, updated_at = now() RETURNING sku, available, reserved"},
    {"stock_get", "SELECT sku, available, reserved FROM stock WHERE sku = $1"},
    /* One statement, rows locked in sku order: concurrent batches cannot deadlock. */
    {"stock_lock",
     "SELECT sku, available FROM stock WHERE sku = ANY($1::text[]) ORDER BY sku FOR UPDATE"},
    /* $1: [{order_id, sku, qty}] of every reserved item of the batch */
    {"stock_take",
     "WITH x AS (SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(order_id uuid, sku text, qty int)), "
     "t AS (UPDATE stock s SET available = s.available - d.qty, reserved = s.reserved + d.qty, "
     "  updated_at = now() FROM (SELECT sku, sum(qty)::int AS qty FROM x GROUP BY sku) d "
     "  WHERE s.sku = d.sku) "
     "INSERT INTO reservations (order_id, sku, qty) SELECT order_id, sku, qty FROM x"},
    {"outbox_add", OUTBOX_INSERT_MANY_SQL},
    {"outbox_resend", OUTBOX_RESEND_SQL},
};
const size_t inventory_store_nstmts = ARRAY_LEN(inventory_store_stmts);

static json_t *stock_doc(PGresult *r)
{
    return json_pack("{s:s, s:I, s:I}", "sku", PQgetvalue(r, 0, 0), "available",
                     (json_int_t)strtoll(PQgetvalue(r, 0, 1), NULL, 10), "reserved",
                     (json_int_t)strtoll(PQgetvalue(r, 0, 2), NULL, 10));
}

static enum err one_row(struct db *db, const char *stmt, int n, const char *const *params,
                        json_t **doc)
{
    PGresult *r = NULL;
    enum err e = db_exec(db, stmt, n, params, &r);
    if (e == ERR_OK && PQntuples(r) == 0)
        e = ERR_NOT_FOUND;
    if (e == ERR_OK)
        *doc = stock_doc(r);
    PQclear(r);
    return e;
}

enum err inventory_store_put(struct db *db, const char *sku, long available, json_t **doc)
{
    char n[32];
    snprintf(n, sizeof n, "%ld", available);
    const char *params[] = {sku, n};
    return one_row(db, "stock_put", 2, params, doc);
}

enum err inventory_store_get(struct db *db, const char *sku, json_t **doc)
{
    const char *params[] = {sku};
    return one_row(db, "stock_get", 1, params, doc);
}

/* Locks every sku of the batch; *res holds the rows (sku, available). */
static enum err lock_skus(struct db *db, const struct order_created *const *orders, size_t n,
                          PGresult **res)
{
    struct buf skus;
    buf_init(&skus);
    buf_append(&skus, "{", 1);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < orders[i]->nitems; j++)
            buf_pg_array_elem(&skus, orders[i]->items[j].sku);
    buf_append(&skus, "}", 1);
    const char *params[] = {skus.data};
    enum err e = db_exec(db, "stock_lock", 1, params, res);
    buf_cleanup(&skus);
    return e;
}

/* Decides each order in turn against the locked levels (pure C). */
static void decide_all(PGresult *locked, const struct order_created *const *orders, size_t n,
                       enum reply_kind *kinds, const char **reasons)
{
    size_t nlv = (size_t)PQntuples(locked);
    struct stock_level *lv = xcalloc(nlv, sizeof *lv);
    for (size_t i = 0; i < nlv; i++)
        lv[i] = (struct stock_level){PQgetvalue(locked, (int)i, 0),
                                     strtol(PQgetvalue(locked, (int)i, 1), NULL, 10)};
    for (size_t i = 0; i < n; i++) {
        kinds[i] = inventory_decide(orders[i]->items, orders[i]->nitems, lv, nlv, &reasons[i]);
        if (kinds[i] == REPLY_RESERVED)
            inventory_take(lv, nlv, orders[i]->items, orders[i]->nitems);
    }
    free(lv);
}

static json_t *reply_row(const struct order_created *o, enum reply_kind kind, const char *reason)
{
    struct inventory_reply rep = {.kind = kind};
    uuid_v4(rep.event_id);
    memcpy(rep.order_id, o->order_id, sizeof rep.order_id);
    snprintf(rep.reason, sizeof rep.reason, "%s", reason ? reason : "");
    time_rfc3339(rep.occurred_at);
    char *payload = event_reply_encode(&rep);
    json_t *row = json_pack("{s:s, s:s, s:s, s:s, s:s}", "event_id", rep.event_id, "subject",
                            event_reply_subject(kind), "event_type", event_reply_type(kind),
                            "payload", payload, "aggregate_id", o->order_id);
    free(payload);
    return row;
}

static enum err exec_json(struct db *db, const char *stmt, json_t *rows)
{
    char *text = json_dumps(rows, JSON_COMPACT);
    const char *params[] = {text};
    enum err e = json_array_size(rows) ? db_exec(db, stmt, 1, params, NULL) : ERR_OK;
    free(text);
    json_decref(rows);
    return e;
}

enum err inventory_store_reserve(struct db *db, const struct order_created *const *orders,
                                 size_t n, enum reply_kind *kinds)
{
    PGresult *locked = NULL;
    const char **reasons = xcalloc(n, sizeof *reasons);
    enum err e = lock_skus(db, orders, n, &locked);
    if (e != ERR_OK)
        goto out;
    decide_all(locked, orders, n, kinds, reasons);
    json_t *taken = json_array(), *replies = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(replies, reply_row(orders[i], kinds[i], reasons[i]));
        for (size_t j = 0; kinds[i] == REPLY_RESERVED && j < orders[i]->nitems; j++)
            json_array_append_new(taken, json_pack("{s:s, s:s, s:i}", "order_id",
                                                   orders[i]->order_id, "sku",
                                                   orders[i]->items[j].sku, "qty",
                                                   orders[i]->items[j].qty));
    }
    e = exec_json(db, "stock_take", taken);
    if (e == ERR_OK)
        e = exec_json(db, "outbox_add", replies);
    else
        json_decref(replies);
out:
    PQclear(locked);
    free(reasons);
    return e;
}

enum err inventory_store_resend_replies(struct db *db, const char *const *order_ids, size_t n)
{
    struct buf ids;
    buf_init(&ids);
    buf_append(&ids, "{", 1);
    for (size_t i = 0; i < n; i++)
        buf_pg_array_elem(&ids, order_ids[i]);
    buf_append(&ids, "}", 1);
    char min_age[32];
    snprintf(min_age, sizeof min_age, "%d", REPLY_RESEND_MIN_AGE_MS);
    const char *params[] = {ids.data, "{InventoryReserved,InventoryRejected}", min_age};
    enum err e = db_exec(db, "outbox_resend", 3, params, NULL);
    buf_cleanup(&ids);
    return e;
}
