/* inventory_store.c - SQL of the stock, reservations and (for replies)
 * outbox tables. Owns the statements and lock order; the decision itself
 * is inventory_decide(). */
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
    /* A fixed lock order (by sku) keeps concurrent orders from deadlocking. */
    {"stock_lock",
     "SELECT sku, available FROM stock WHERE sku = ANY($1::text[]) ORDER BY sku FOR UPDATE"},
    /* $1 order id, $2 items json */
    {"stock_take",
     "WITH t AS (UPDATE stock s SET available = s.available - x.qty, "
     "  reserved = s.reserved + x.qty, updated_at = now() "
     "  FROM jsonb_to_recordset($2::jsonb) AS x(sku text, qty int) WHERE s.sku = x.sku "
     "  RETURNING s.sku, x.qty) "
     "INSERT INTO reservations (order_id, sku, qty) SELECT $1::uuid, sku, qty FROM t"},
    {"outbox_add", OUTBOX_INSERT_SQL},
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

static enum err decide(struct db *db, const struct order_created *ev, enum reply_kind *kind,
                       const char **reason)
{
    struct buf skus;
    buf_init(&skus);
    buf_append(&skus, "{", 1);
    for (size_t i = 0; i < ev->nitems; i++)
        buf_pg_array_elem(&skus, ev->items[i].sku);
    buf_append(&skus, "}", 1);
    const char *params[] = {skus.data};
    PGresult *r = NULL;
    enum err e = db_exec(db, "stock_lock", 1, params, &r);
    if (e == ERR_OK) {
        int n = PQntuples(r);
        struct stock_level *lv = xcalloc((size_t)n, sizeof *lv);
        for (int i = 0; i < n; i++)
            lv[i] = (struct stock_level){PQgetvalue(r, i, 0), strtol(PQgetvalue(r, i, 1), NULL, 10)};
        *kind = inventory_decide(ev->items, ev->nitems, lv, (size_t)n, reason);
        free(lv);
    }
    PQclear(r);
    buf_cleanup(&skus);
    return e;
}

static enum err take(struct db *db, const struct order_created *ev)
{
    json_t *items = event_items_to_json(ev->items, ev->nitems);
    char *text = json_dumps(items, JSON_COMPACT);
    const char *params[] = {ev->order_id, text};
    enum err e = db_exec(db, "stock_take", 2, params, NULL);
    free(text);
    json_decref(items);
    return e;
}

static enum err write_reply(struct db *db, const struct order_created *ev, enum reply_kind kind,
                            const char *reason)
{
    struct inventory_reply rep = {.kind = kind};
    uuid_v4(rep.event_id);
    memcpy(rep.order_id, ev->order_id, sizeof rep.order_id);
    snprintf(rep.reason, sizeof rep.reason, "%s", reason ? reason : "");
    time_rfc3339(rep.occurred_at);
    char *payload = event_reply_encode(&rep);
    const char *params[] = {rep.event_id, event_reply_subject(kind), event_reply_type(kind),
                            payload, NULL};
    enum err e = db_exec(db, "outbox_add", 5, params, NULL);
    free(payload);
    return e;
}

enum err inventory_store_reserve(struct db *db, const struct order_created *ev,
                                 enum reply_kind *kind)
{
    const char *reason = NULL;
    enum err e = decide(db, ev, kind, &reason);
    if (e == ERR_OK && *kind == REPLY_RESERVED)
        e = take(db, ev);
    if (e == ERR_OK)
        e = write_reply(db, ev, *kind, reason);
    return e;
}
