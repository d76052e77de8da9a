/* order_store.c - SQL of the orders, order_items and (for new orders)
 * outbox tables. Owns the statements and reading their results; not the
 * validation (order.c) nor the HTTP replies (order_http.c). */
#include "order_store.h"
#include "db_array.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ORDER_COLS "o.id, o.customer_id, o.status, o.reason, " DB_RFC3339("o.created_at") ", " \
                   DB_RFC3339("o.updated_at")
#define ITEMS_OF_O "(SELECT json_agg(json_build_object('sku', sku, 'qty', qty) ORDER BY line) " \
                   "FROM order_items WHERE order_id = o.id)::text"

const struct db_stmt order_store_stmts[] = {
    /* Many orders, one statement, one transaction: $1..$7 the orders (id,
     * customer_id, idempotency_key, fingerprint, event_id, payload,
     * traceparent), $8..$11 their items (order id, line, sku, qty), one
     * binary array per column (order_create_elems). A key already taken
     * (even by an earlier order of the same batch) inserts nothing for that
     * order. */
    {"order_create",
     "WITH x AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], "
     "  $5::uuid[], $6::text[], $7::text[]) AS x(id, customer_id, idempotency_key, fingerprint, "
     "  event_id, payload, traceparent)), "
     "o AS (INSERT INTO orders (id, customer_id, idempotency_key, request_hash, event_id, "
     "  traceparent) "
     "  SELECT id, customer_id, idempotency_key, md5(fingerprint), event_id, traceparent FROM x "
     "  ON CONFLICT (idempotency_key) DO NOTHING RETURNING *), "
     "i AS (INSERT INTO order_items (order_id, line, sku, qty) "
     "  SELECT it.order_id, it.line, it.sku, it.qty FROM unnest($8::uuid[], $9::int[], "
     "  $10::text[], $11::int[]) AS it(order_id, line, sku, qty) JOIN o ON o.id = it.order_id), "
     "e AS (INSERT INTO outbox (event_id, subject, event_type, payload, aggregate_id, traceparent) "
     "  SELECT x.event_id, 'orders.created', 'OrderCreated', x.payload, x.id, x.traceparent "
     "  FROM o JOIN x ON x.id = o.id) "
     "SELECT " ORDER_COLS " FROM o"},
    {"order_by_key",
     "SELECT " ORDER_COLS ", " ITEMS_OF_O ", o.request_hash = md5($2) "
     "FROM orders o WHERE o.idempotency_key = $1"},
    {"order_get", "SELECT " ORDER_COLS ", " ITEMS_OF_O " FROM orders o WHERE o.id = $1::uuid"},
    /* $1..$3: id, status, reason (binary arrays); each PENDING order moves once. The orders
     * are found by the batch's ids, whatever the statistics say: "(...) IS
     * TRUE" keeps the planner off the partial index of pending orders
     * (orders_pending_page), and "id = ANY" off a scan of every order. With
     * the statistics of a vacuum that found none pending, the plan read
     * every pending order's entry, dead ones included, for each batch of
     * replies (2-15 ms under load, against 0.05 by id); with those of a
     * young table, it hashed a scan of all orders against each batch. */
    {"order_settle",
     "WITH v AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[]) AS v(id, status, reason)) "
     "UPDATE orders o SET status = v.status, reason = v.reason, updated_at = now() FROM v "
     "WHERE o.id = ANY(ARRAY(SELECT id FROM v)) AND o.id = v.id AND (o.status = 'PENDING') IS TRUE "
     "RETURNING o.id, o.status"},
    {"order_status", "SELECT id, status FROM orders WHERE id = ANY($1::uuid[])"},
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

/* What one order of a batch sends to the database, and needs again for
 * the answer (id, event id, items) or a key's check (fingerprint). */
struct order_row {
    char id[UUID_STR_LEN];
    char event_id[UUID_STR_LEN];
    char *items, *fingerprint;
};

/* The columns of "order_create": the orders', then their items'. */
static const enum db_elem order_create_elems[] = {
    DB_UUID, DB_TEXT, DB_TEXT, DB_TEXT, DB_UUID, DB_TEXT, DB_TEXT, /* orders */
    DB_UUID, DB_INT4, DB_TEXT, DB_INT4};                           /* items */

/* Adds the order and its items to the statement's columns (the row's
 * event body is built in payload, scratch space). */
static void order_row_init(struct order_row *r, const struct order_new *o, struct db_columns *c,
                           struct buf *payload)
{
    struct order_created ev = {.items = o->req->items, .nitems = o->req->nitems};
    uuid_v7(r->id);
    uuid_v7(ev.event_id);
    memcpy(ev.order_id, r->id, sizeof r->id);
    memcpy(r->event_id, ev.event_id, sizeof r->event_id);
    snprintf(ev.customer_id, sizeof ev.customer_id, "%s", o->req->customer_id);
    time_rfc3339(ev.occurred_at);
    buf_reset(payload);
    event_order_created_append(payload, &ev);
    r->items = order_items_json(o->req);
    r->fingerprint = order_request_fingerprint(o->req);
    db_array_uuid(&c->col[0], r->id);
    db_array_text(&c->col[1], o->req->customer_id);
    db_array_text(&c->col[2], o->idempotency_key);
    db_array_text(&c->col[3], r->fingerprint);
    db_array_uuid(&c->col[4], r->event_id);
    db_array_text(&c->col[5], payload->data);
    db_array_text(&c->col[6], o->traceparent);
    for (size_t k = 0; k < o->req->nitems; k++) {
        db_array_uuid(&c->col[7], r->id);
        db_array_int4(&c->col[8], (int32_t)k + 1);
        db_array_text(&c->col[9], o->req->items[k].sku);
        db_array_int4(&c->col[10], o->req->items[k].qty);
    }
}

static void order_row_cleanup(struct order_row *r)
{
    free(r->items);
    free(r->fingerprint);
}

/* Orders the statement did not insert: their key was taken (by an earlier
 * order, maybe of this very batch). A lookup that failed otherwise than by
 * finding the key taken fails the batch: the transaction is aborted, or its
 * connection gone, and nothing of it will be written (the review: the batch
 * was committed "successfully" anyway, with nothing in it). */
static enum err resolve_keys(struct db *db, const struct order_new *const *o,
                             struct order_row *rows, size_t n, struct order_result *out)
{
    for (size_t i = 0; i < n; i++) {
        if (out[i].doc)
            continue;
        out[i].e = o[i]->idempotency_key
                       ? by_key(db, o[i]->idempotency_key, rows[i].fingerprint, &out[i].doc,
                                &out[i].same)
                       : ERR_DB; /* without a key every order is inserted */
        if (out[i].e != ERR_CONFLICT && out[i].e != ERR_NOT_FOUND && o[i]->idempotency_key)
            return out[i].e;
    }
    return ERR_OK;
}

enum err order_store_create(struct db *db, const struct order_new *const *o, size_t n,
                            struct order_result *out)
{
    struct order_row *rows = xcalloc(n, sizeof *rows);
    struct db_columns cols;
    struct buf payload;
    db_columns_open(&cols, ARRAY_LEN(order_create_elems), order_create_elems);
    buf_init(&payload);
    for (size_t i = 0; i < n; i++) {
        order_row_init(&rows[i], o[i], &cols, &payload);
        out[i] = (struct order_result){.e = ERR_OK};
    }
    buf_cleanup(&payload);
    PGresult *r = NULL;
    enum err e = db_columns_exec(db, "order_create", &cols, NULL, &r);
    for (int k = 0; e == ERR_OK && k < PQntuples(r); k++)
        for (size_t i = 0; i < n; i++)
            if (strcmp(PQgetvalue(r, k, 0), rows[i].id) == 0) {
                out[i].doc = row_doc(r, k, rows[i].items); /* the request's items, in its order */
                memcpy(out[i].event_id, rows[i].event_id, sizeof out[i].event_id);
            }
    PQclear(r);
    if (e == ERR_OK)
        e = resolve_keys(db, o, rows, n, out);
    for (size_t i = 0; i < n; i++)
        order_row_cleanup(&rows[i]);
    free(rows);
    db_columns_cleanup(&cols);
    return e;
}

const char *order_result_id(const struct order_result *r)
{
    return json_string_value(json_object_get(r->doc, "id"));
}

int order_store_created_check(const struct order_result *out, size_t n, struct db_check *check)
{
    for (size_t i = 0; i < n; i++) {
        const char *id = out[i].event_id[0] ? order_result_id(&out[i]) : NULL;
        if (id) {
            *check = (struct db_check){"SELECT EXISTS (SELECT 1 FROM orders WHERE id = $1::uuid)", id};
            return 1;
        }
    }
    return 0;
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

static const char *target_of(const struct inventory_reply *r)
{
    return r->kind == REPLY_RESERVED ? "CONFIRMED" : "REJECTED";
}

/* Row index in res whose column 0 is id and column 1 is status (or NULL),
 * skipping rows already taken (if taken is given), or -1. */
static int find_row(PGresult *res, const char *id, const char *status, const char *taken)
{
    for (int r = 0; r < PQntuples(res); r++)
        if ((!taken || !taken[r]) && strcmp(PQgetvalue(res, r, 0), id) == 0 &&
            (!status || strcmp(PQgetvalue(res, r, 1), status) == 0))
            return r;
    return -1;
}

/* Moves every PENDING order; marks the replies that moved one. */
static enum err move_pending(struct db *db, const struct inventory_reply *const *rep, size_t n,
                             struct settle_outcome *out)
{
    static const enum db_elem elems[] = {DB_UUID, DB_TEXT, DB_TEXT}; /* id, status, reason */
    struct db_columns c;
    db_columns_open(&c, ARRAY_LEN(elems), elems);
    for (size_t i = 0; i < n; i++) {
        db_array_uuid(&c.col[0], rep[i]->order_id);
        db_array_text(&c.col[1], target_of(rep[i]));
        db_array_text(&c.col[2], rep[i]->kind == REPLY_REJECTED ? rep[i]->reason : NULL);
    }
    PGresult *res = NULL;
    enum err e = db_columns_exec(db, "order_settle", &c, NULL, &res);
    db_columns_cleanup(&c);
    char *taken = e == ERR_OK ? xcalloc((size_t)PQntuples(res) + 1, 1) : NULL;
    for (size_t i = 0; e == ERR_OK && i < n; i++) {
        int row = find_row(res, rep[i]->order_id, target_of(rep[i]), taken);
        if (row < 0)
            continue;
        out[i].result = rep[i]->kind == REPLY_RESERVED ? "confirmed" : "rejected";
        taken[row] = 1; /* a second reply for that order is not the one that moved it */
    }
    free(taken);
    PQclear(res);
    return e;
}

/* Replies that moved nothing: the same state again (duplicate) or poison. */
static enum err classify_rest(struct db *db, const struct inventory_reply *const *rep, size_t n,
                              struct settle_outcome *out)
{
    struct buf ids;
    buf_pg_array_open(&ids);
    for (size_t i = 0; i < n; i++)
        if (!out[i].result)
            buf_pg_array_elem(&ids, rep[i]->order_id);
    buf_pg_array_close(&ids);
    const char *params[] = {ids.data};
    PGresult *res = NULL;
    enum err e = db_exec(db, "order_status", 1, params, &res);
    for (size_t i = 0; e == ERR_OK && i < n; i++) {
        if (out[i].result)
            continue;
        int row = find_row(res, rep[i]->order_id, NULL, NULL);
        const char *now = row < 0 ? NULL : PQgetvalue(res, row, 1);
        if (now && strcmp(now, target_of(rep[i])) == 0) {
            out[i].result = "duplicate";
            continue;
        }
        out[i].poison = 1;
        if (now)
            snprintf(out[i].why, sizeof out[i].why, "reply would move order %s from %s to %s",
                     rep[i]->order_id, now, target_of(rep[i]));
        else
            snprintf(out[i].why, sizeof out[i].why, "reply for unknown order %s", rep[i]->order_id);
    }
    PQclear(res);
    buf_cleanup(&ids);
    return e;
}

enum err order_store_settle(struct db *db, const struct inventory_reply *const *replies,
                            size_t n, struct settle_outcome *out)
{
    enum err e = move_pending(db, replies, n, out);
    for (size_t i = 0; e == ERR_OK && i < n; i++)
        if (!out[i].result)
            return classify_rest(db, replies, n, out);
    return e;
}
