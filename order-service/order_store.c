/* order_store.c - SQL of the orders, order_items and (for new orders)
 * outbox tables. Owns the statements and reading their results; not the
 * validation (order.c) nor the HTTP replies (order_http.c). */
#include "order_store.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RFC3339(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
#define ORDER_COLS "o.id, o.customer_id, o.status, o.reason, " RFC3339("o.created_at") ", " \
                   RFC3339("o.updated_at")
#define ITEMS_OF_O "(SELECT json_agg(json_build_object('sku', sku, 'qty', qty) ORDER BY line) " \
                   "FROM order_items WHERE order_id = o.id)::text"

const struct db_stmt order_store_stmts[] = {
    /* $1 id, $2 customer, $3 key, $4 fingerprint, $5 items json,
     * $6 event id, $7 event payload, $8 traceparent */
    {"order_create",
     "WITH o AS (INSERT INTO orders (id, customer_id, idempotency_key, request_hash) "
     "  VALUES ($1::uuid, $2, $3, md5($4)) ON CONFLICT (idempotency_key) DO NOTHING "
     "  RETURNING *), "
     "i AS (INSERT INTO order_items (order_id, line, sku, qty) "
     "  SELECT o.id, x.line, x.sku, x.qty FROM o, ROWS FROM "
     "  (jsonb_to_recordset($5::jsonb) AS (sku text, qty int)) WITH ORDINALITY AS x(sku, qty, line)), "
     "e AS (INSERT INTO outbox (event_id, subject, event_type, payload, traceparent) "
     "  SELECT $6::uuid, 'orders.created', 'OrderCreated', $7, $8 FROM o) "
     "SELECT " ORDER_COLS " FROM o"},
    {"order_by_key",
     "SELECT " ORDER_COLS ", " ITEMS_OF_O ", o.request_hash = md5($2) "
     "FROM orders o WHERE o.idempotency_key = $1"},
    {"order_get", "SELECT " ORDER_COLS ", " ITEMS_OF_O " FROM orders o WHERE o.id = $1::uuid"},
    {"order_settle",
     "UPDATE orders SET status = $2, reason = $3, updated_at = now() "
     "WHERE id = $1::uuid AND status = 'PENDING'"},
    {"order_status", "SELECT status FROM orders WHERE id = $1::uuid"},
};
const size_t order_store_nstmts = ARRAY_LEN(order_store_stmts);

/* items: the items array text, or NULL to read it from column 6. */
static json_t *row_doc(PGresult *r, int row, const char *items)
{
    return order_document(PQgetvalue(r, row, 0), PQgetvalue(r, row, 1), PQgetvalue(r, row, 2),
                          PQgetvalue(r, row, 3), items ? items : PQgetvalue(r, row, 6),
                          PQgetvalue(r, row, 4), PQgetvalue(r, row, 5));
}

/* The order first created with this key, and whether it asked the same. */
static enum err by_key(struct db *db, const char *key, const char *fingerprint, json_t **doc,
                       int *same)
{
    PGresult *r = NULL;
    const char *params[] = {key, fingerprint};
    enum err e = db_exec(db, "order_by_key", 2, params, &r);
    if (e == ERR_OK && PQntuples(r) == 0)
        e = ERR_NOT_FOUND; /* cannot happen: keys are never deleted */
    if (e == ERR_OK) {
        *same = PQgetvalue(r, 0, 7)[0] == 't';
        *doc = *same ? row_doc(r, 0, NULL) : NULL;
        e = ERR_CONFLICT;
    }
    PQclear(r);
    return e;
}

enum err order_store_create(struct db *db, const struct order_new *o, json_t **doc, int *same)
{
    char id[UUID_STR_LEN];
    struct order_created ev = {.items = o->req->items, .nitems = o->req->nitems};
    uuid_v4(id);
    uuid_v4(ev.event_id);
    memcpy(ev.order_id, id, sizeof id);
    snprintf(ev.customer_id, sizeof ev.customer_id, "%s", o->req->customer_id);
    time_rfc3339(ev.occurred_at);
    char *payload = event_order_created_encode(&ev);
    char *items = order_items_json(o->req);
    char *fingerprint = order_request_fingerprint(o->req);
    const char *params[] = {id, o->req->customer_id, o->idempotency_key, fingerprint, items,
                            ev.event_id, payload, o->traceparent};
    PGresult *r = NULL;
    *doc = NULL;
    *same = 0;
    enum err e = db_exec(db, "order_create", 8, params, &r);
    if (e == ERR_OK && PQntuples(r) == 1)
        *doc = row_doc(r, 0, items); /* the request's items: as stored, in its order */
    else if (e == ERR_OK) /* the key was taken, by now committed */
        e = by_key(db, o->idempotency_key, fingerprint, doc, same);
    PQclear(r);
    free(payload);
    free(items);
    free(fingerprint);
    return e;
}

enum err order_store_get(struct db *db, const char *id, json_t **doc)
{
    PGresult *r = NULL;
    const char *params[] = {id};
    enum err e = db_exec(db, "order_get", 1, params, &r);
    if (e == ERR_OK && PQntuples(r) == 0)
        e = ERR_NOT_FOUND;
    if (e == ERR_OK)
        *doc = row_doc(r, 0, NULL);
    PQclear(r);
    return e;
}

/* The reply did not move a PENDING order: same state again, or poison. */
static enum err settle_conflict(struct db *db, const struct inventory_reply *rep,
                                const char *target, const char **result, char *why, size_t n)
{
    PGresult *r = NULL;
    const char *params[] = {rep->order_id};
    enum err e = db_exec(db, "order_status", 1, params, &r);
    if (e == ERR_OK && PQntuples(r) == 0) {
        snprintf(why, n, "reply for unknown order %s", rep->order_id);
        e = ERR_POISON;
    } else if (e == ERR_OK && strcmp(PQgetvalue(r, 0, 0), target) != 0) {
        snprintf(why, n, "reply would move order %s from %s to %s", rep->order_id,
                 PQgetvalue(r, 0, 0), target);
        e = ERR_POISON;
    } else if (e == ERR_OK) {
        *result = "duplicate";
    }
    PQclear(r);
    return e;
}

enum err order_store_settle(struct db *db, const struct inventory_reply *rep,
                            const char **result, char *why, size_t whylen)
{
    int ok = rep->kind == REPLY_RESERVED;
    const char *target = ok ? "CONFIRMED" : "REJECTED";
    const char *params[] = {rep->order_id, target, ok ? NULL : rep->reason};
    PGresult *r = NULL;
    enum err e = db_exec(db, "order_settle", 3, params, &r);
    int moved = e == ERR_OK && strcmp(PQcmdTuples(r), "1") == 0;
    PQclear(r);
    if (e != ERR_OK)
        return e;
    if (moved) {
        *result = ok ? "confirmed" : "rejected";
        return ERR_OK;
    }
    return settle_conflict(db, rep, target, result, why, whylen);
}
