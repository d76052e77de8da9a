/* inventory_store.c - SQL of the stock, order_decisions (with what each
 * order reserved) and (for replies) outbox tables. Owns the statements, the lock order and the
 * one-decision-per-order rule; the decision itself is inventory_decide(). */
#include "inventory_store.h"
#include "db_array.h"
#include "inventory.h"
#include "log.h"
#include "outbox.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RFC3339(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

/* The batch's stock rows ($1) locked in one statement, in sku order:
 * concurrent batches cannot deadlock. */
#define STOCK_LOCK "SELECT sku, available FROM stock WHERE sku = ANY($1::text[]) ORDER BY sku FOR UPDATE"
/* What a take does to a stock row s, v.qty being what is taken. */
#define STOCK_TAKE_SET \
    "SET available = s.available - v.qty, reserved = s.reserved + v.qty, updated_at = now() "

const struct db_stmt inventory_store_stmts[] = {
    {"stock_put",
     "INSERT INTO stock (sku, available) VALUES ($1, $2::bigint) ON CONFLICT (sku) DO UPDATE "
     "SET available = EXCLUDED.available, updated_at = now() RETURNING sku, available, reserved"},
    {"stock_get", "SELECT sku, available, reserved FROM stock WHERE sku = $1"},
    /* The levels as committed now, read without a lock (decisions are taken
     * on these, then again on the locked ones). */
    {"stock_read", "SELECT sku, available FROM stock WHERE sku = ANY($1::text[]) ORDER BY sku"},
    {"stock_lock", STOCK_LOCK},
    /* Takes back decisions written in this transaction ($1: their orders,
     * $2: their replies' event ids), to decide them again. */
    {"decisions_undo",
     "WITH d AS (DELETE FROM order_decisions WHERE order_id = ANY($1::uuid[])) "
     "DELETE FROM outbox WHERE event_id = ANY($2::uuid[])"},
    /* stock_lock and stock_take in one round trip, for a batch whose every
     * order was reserved on the unlocked levels: the rows of $1 locked in
     * sku order; the takes ($2, $3: each sku, how much in all) made only if
     * every one still fits the locked level. Then deciding again under the
     * lock gives the same decisions (each order in turn fits, as all of
     * them together do), and the stock is what stock_take would leave. The
     * locked levels, and whether the takes were made, come back. */
    {"stock_lock_take",
     "WITH l AS (" STOCK_LOCK "), "
     "v AS (SELECT * FROM unnest($2::text[], $3::bigint[]) AS v(sku, qty)), "
     "ok AS (SELECT count(*) = (SELECT count(*) FROM v) AND bool_and(l.available >= v.qty) AS fits "
     "  FROM v JOIN l USING (sku)), "
     "u AS (UPDATE stock s " STOCK_TAKE_SET "FROM v, ok WHERE ok.fits AND s.sku = v.sku) "
     "SELECT sku, available, (SELECT fits FROM ok) FROM l ORDER BY sku"},
    /* ($1, $2): each sku the batch took from, and how much in all */
    {"stock_take",
     "UPDATE stock s " STOCK_TAKE_SET
     "FROM unnest($1::text[], $2::bigint[]) AS v(sku, qty) WHERE s.sku = v.sku"},
    /* The orders of $1 (uuid[]) decided already, with what was decided. */
    {"decisions_of",
     "SELECT order_id, outcome, coalesce(reason, ''), reply_event_id, " RFC3339("decided_at")
     " FROM order_decisions WHERE order_id = ANY($1::uuid[])"},
    /* The same, with where each order stands in $1 (from 1), for re-sends:
     * a join, slower than ANY, so off the consumer's usual path. */
    {"decisions_at",
     "SELECT d.order_id, d.outcome, coalesce(d.reason, ''), d.reply_event_id, "
     RFC3339("d.decided_at") ", a.at FROM unnest($1::uuid[]) WITH ORDINALITY AS a(id, at) "
     "JOIN order_decisions d ON d.order_id = a.id"},
    /* $1..$6: one outbox row per order; $7..$10 its decision: outcome,
     * reason, occurred_at and the items reserved (decide_elems). The
     * decision and its reply, together. A decision
     * taken meanwhile by another consumer for one of these orders makes this
     * fail (primary key): the batch is retried and then finds it. */
    {"decide",
     "WITH x AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], "
     "  $5::uuid[], $6::text[], $7::text[], $8::text[], $9::text[], $10::json[]) AS x(event_id, "
     "  subject, event_type, payload, aggregate_id, traceparent, outcome, reason, occurred_at, "
     "  reserved)), "
     "d AS (INSERT INTO order_decisions (order_id, outcome, reason, reply_event_id, decided_at, "
     "  reserved) SELECT aggregate_id, outcome, reason, event_id, occurred_at::timestamptz, "
     "  reserved FROM x) "
     "INSERT INTO outbox (event_id, subject, event_type, payload, aggregate_id, traceparent) "
     "SELECT event_id, subject, event_type, payload, aggregate_id, traceparent FROM x"},
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

enum err inventory_store_put(struct db *db, const char *sku, int64_t available, json_t **doc)
{
    char n[32];
    snprintf(n, sizeof n, "%lld", (long long)available);
    const char *params[] = {sku, n};
    return one_row(db, "stock_put", 2, params, doc);
}

enum err inventory_store_get(struct db *db, const char *sku, json_t **doc)
{
    const char *params[] = {sku};
    return one_row(db, "stock_get", 1, params, doc);
}

/* Every sku of the batch, as a Postgres array (repeats are harmless). */
static void batch_skus(const struct order_created *const *orders, size_t n, struct buf *skus)
{
    buf_pg_array_open(skus);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < orders[i]->nitems; j++)
            buf_pg_array_elem(skus, orders[i]->items[j].sku);
    buf_pg_array_close(skus);
}

/* The levels of the batch's skus (batch_skus), by stmt ("stock_read" or
 * "stock_lock"); *res holds the rows (sku, available). */
static enum err stock_levels(struct db *db, const char *stmt, const char *skus, PGresult **res)
{
    const char *params[] = {skus};
    return db_exec(db, stmt, 1, params, res);
}

/* Decides each order in turn against the locked levels (pure C); returns
 * the levels after, with what was taken from each (caller frees). */
static struct stock_level *decide_all(PGresult *locked, const struct order_created *const *orders,
                                      size_t n, enum reply_kind *kinds, const char **reasons)
{
    size_t nlv = (size_t)PQntuples(locked);
    struct stock_level *lv = xcalloc(nlv ? nlv : 1, sizeof *lv);
    for (size_t i = 0; i < nlv; i++)
        lv[i] = (struct stock_level){PQgetvalue(locked, (int)i, 0),
                                     strtoll(PQgetvalue(locked, (int)i, 1), NULL, 10), 0};
    for (size_t i = 0; i < n; i++) {
        kinds[i] = inventory_decide(orders[i]->items, orders[i]->nitems, lv, nlv, &reasons[i]);
        if (kinds[i] == REPLY_RESERVED)
            inventory_take(lv, nlv, orders[i]->items, orders[i]->nitems);
    }
    return lv;
}

/* What a batch takes from each sku (levels lv, see decide_all): one
 * element per sku it took from, as two Postgres arrays. */
static void takes(const struct stock_level *lv, size_t nlv, struct buf *skus, struct buf *qtys)
{
    buf_pg_array_open(skus);
    buf_pg_array_open(qtys);
    for (size_t i = 0; i < nlv; i++) {
        if (!lv[i].taken)
            continue;
        buf_pg_array_elem(skus, lv[i].sku);
        buf_pg_array_sep(qtys);
        buf_int(qtys, lv[i].taken);
    }
    buf_pg_array_close(skus);
    buf_pg_array_close(qtys);
}

/* Takes what the batch reserved off the locked stock rows: one row per sku. */
static enum err take_stock(struct db *db, const struct stock_level *lv, size_t nlv)
{
    struct buf skus, qtys;
    takes(lv, nlv, &skus, &qtys);
    const char *params[] = {skus.data, qtys.data};
    enum err e = qtys.len > 2 ? db_exec(db, "stock_take", 2, params, NULL) : ERR_OK;
    buf_cleanup(&skus);
    buf_cleanup(&qtys);
    return e;
}

/* stock_lock_take: the stock rows of `all` (batch_skus) locked (*locked:
 * sku, available, as stock_lock gives them) and, if they all still fit,
 * the takes of lv (levels decided on before the lock) made (*taken = 1). */
static enum err lock_and_take(struct db *db, const char *all, const struct stock_level *lv,
                              size_t nlv, PGresult **locked, int *taken)
{
    struct buf skus, qtys;
    takes(lv, nlv, &skus, &qtys);
    const char *params[] = {all, skus.data, qtys.data};
    enum err e = db_exec(db, "stock_lock_take", 3, params, locked);
    *taken = e == ERR_OK && PQntuples(*locked) > 0 && PQgetvalue(*locked, 0, 2)[0] == 't';
    buf_cleanup(&skus);
    buf_cleanup(&qtys);
    return e;
}

static int all_reserved(const enum reply_kind *kinds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (kinds[i] != REPLY_RESERVED)
            return 0;
    return n > 0;
}

/* The reply's outbox row; traceparent may be NULL. payload is scratch
 * space for the body. */
static void reply_row(struct db_columns *rows, struct buf *payload,
                      const struct inventory_reply *rep, const char *traceparent)
{
    buf_reset(payload);
    event_reply_append(payload, rep);
    outbox_row_add(rows, rep->event_id, event_reply_subject(rep->kind),
                   event_reply_type(rep->kind), payload->data, rep->order_id, traceparent);
}

/* The columns of "decide": each reply's outbox row, then its decision's
 * outcome, reason, occurred_at and the items reserved (JSON). */
static const enum db_elem decide_elems[] = {OUTBOX_ROW_ELEMS, DB_TEXT, DB_TEXT, DB_TEXT, DB_JSON};
enum { DECISION_AT = 6 }; /* the decision's first column */

/* A decision and its reply; reserved: the order, when its items were
 * reserved, else NULL. scratch: space for the reply's body, then the items. */
static void decision_row(struct db_columns *c, struct buf *scratch,
                         const struct inventory_reply *rep, const char *traceparent,
                         const struct order_created *reserved)
{
    struct buf *d = &c->col[DECISION_AT];
    reply_row(c, scratch, rep, traceparent);
    db_array_text(&d[0], rep->kind == REPLY_RESERVED ? "reserved" : "rejected");
    db_array_text(&d[1], rep->kind == REPLY_REJECTED ? rep->reason : NULL);
    db_array_text(&d[2], rep->occurred_at);
    buf_reset(scratch);
    if (reserved)
        event_items_append(scratch, reserved->items, reserved->nitems);
    db_array_text(&d[3], reserved ? scratch->data : NULL);
}

/* What write_decisions() wrote, as Postgres arrays: the orders and their
 * replies' event ids (to take them back). */
struct written {
    struct buf orders, replies;
};

static void written_cleanup(struct written *w)
{
    buf_cleanup(&w->orders);
    buf_cleanup(&w->replies);
}

/* A new decision's reply: a fresh event id (noted in w), now, in the
 * order's trace. */
static void new_decision(struct db_columns *c, struct buf *scratch, struct written *w,
                         const struct order_created *o, enum reply_kind kind, const char *reason,
                         const char *traceparent)
{
    struct inventory_reply rep = {.kind = kind};
    uuid_v7(rep.event_id);
    buf_pg_array_elem(&w->replies, rep.event_id);
    buf_pg_array_elem(&w->orders, o->order_id);
    memcpy(rep.order_id, o->order_id, sizeof rep.order_id);
    snprintf(rep.reason, sizeof rep.reason, "%s", reason ? reason : "");
    time_rfc3339(rep.occurred_at);
    decision_row(c, scratch, &rep, traceparent, kind == REPLY_RESERVED ? o : NULL);
}

/* Writes the decisions of orders[0..n) with their replies; w notes what
 * was written (caller cleans up). */
static enum err write_decisions(struct db *db, const struct order_created *const *orders,
                                const char *const *traceparents, size_t n,
                                const enum reply_kind *kinds, const char **reasons,
                                struct written *w)
{
    struct db_columns c;
    struct buf scratch;
    db_columns_open(&c, ARRAY_LEN(decide_elems), decide_elems);
    buf_init(&scratch);
    buf_pg_array_open(&w->orders);
    buf_pg_array_open(&w->replies);
    for (size_t i = 0; i < n; i++)
        new_decision(&c, &scratch, w, orders[i], kinds[i], reasons[i], traceparents[i]);
    buf_pg_array_close(&w->orders);
    buf_pg_array_close(&w->replies);
    enum err e = db_columns_exec(db, "decide", &c, NULL, NULL);
    db_columns_cleanup(&c);
    buf_cleanup(&scratch);
    return e;
}

/* Whether two passes of decide_all() decided every order alike (a reason
 * is one of inventory_decide()'s literals, or NULL). */
static int same_decisions(const enum reply_kind *a, const char *const *ra, const enum reply_kind *b,
                          const char *const *rb, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i] || ra[i] != rb[i])
            return 0;
    return 1;
}

/* Takes back the decisions just written, to take them again. */
static enum err undo_decisions(struct db *db, const struct written *w)
{
    const char *params[] = {w->orders.data, w->replies.data};
    return db_exec(db, "decisions_undo", 2, params, NULL);
}

/* Decides orders[0..n) (none decided before), writes each decision with its
 * reply, and takes their stock. Optimistic: the decisions are taken and
 * written on levels read without a lock, so that a batch holds its stock
 * rows only from the lock to its commit (a hot sku is in every batch; the
 * next worker waits for nothing else). When every order was reserved, one
 * statement locks the rows and makes the takes if they still fit (the
 * usual case: the lock is then held for that statement and the commit).
 * Otherwise the decisions are taken again on the locked levels (pure C);
 * if any differs (stock went, came or was created meanwhile), the written
 * ones are taken back and these written instead: the result is always
 * what deciding under the lock gives. */
static enum err reserve(struct db *db, const struct order_created *const *orders,
                        const char *const *traceparents, size_t n, enum reply_kind *kinds)
{
    PGresult *seen = NULL, *locked = NULL;
    const char **reasons = xcalloc(n, sizeof *reasons), **now = xcalloc(n, sizeof *now);
    enum reply_kind *again = xcalloc(n, sizeof *again);
    struct stock_level *lv = NULL;
    struct written w = {.orders = {.data = NULL}};
    int taken = 0;
    struct buf skus;
    batch_skus(orders, n, &skus); /* read, locked: the same rows */
    enum err e = stock_levels(db, "stock_read", skus.data, &seen);
    if (e == ERR_OK) {
        lv = decide_all(seen, orders, n, kinds, reasons);
        e = write_decisions(db, orders, traceparents, n, kinds, reasons, &w);
        if (e == ERR_OK && all_reserved(kinds, n))
            e = lock_and_take(db, skus.data, lv, (size_t)PQntuples(seen), &locked, &taken);
        free(lv);
        lv = NULL;
    }
    if (e == ERR_OK && !locked)
        e = stock_levels(db, "stock_lock", skus.data, &locked);
    if (e == ERR_OK && !taken) {
        lv = decide_all(locked, orders, n, again, now);
        if (!same_decisions(kinds, reasons, again, now, n)) {
            log_debug("stock changed meanwhile: the batch's %zu decisions are taken again "
                      "under the lock", n);
            memcpy(kinds, again, n * sizeof *kinds);
            e = undo_decisions(db, &w);
            written_cleanup(&w);
            if (e == ERR_OK)
                e = write_decisions(db, orders, traceparents, n, kinds, now, &w);
        }
        if (e == ERR_OK)
            e = take_stock(db, lv, (size_t)PQntuples(locked));
    }
    written_cleanup(&w);
    buf_cleanup(&skus);
    free(lv);
    free(again);
    free(now);
    PQclear(seen);
    PQclear(locked);
    free(reasons);
    return e;
}

static void ids_array(struct buf *b, const char *const *ids, size_t n)
{
    buf_pg_array_open(b);
    for (size_t i = 0; i < n; i++)
        buf_pg_array_elem(b, ids[i]);
    buf_pg_array_close(b);
}

/* The decisions taken for these orders, by stmt ("decisions_of" or
 * "decisions_at": see their columns). */
static enum err decisions_of(struct db *db, const char *stmt, const char *const *order_ids,
                             size_t n, PGresult **res)
{
    struct buf ids;
    ids_array(&ids, order_ids, n);
    const char *params[] = {ids.data};
    enum err e = db_exec(db, stmt, 1, params, res);
    buf_cleanup(&ids);
    return e;
}

/* The reply stored for each decided order, rebuilt: same event id, same
 * body as when it was decided; in the trace of the message that asked again
 * (traceparents[i] for the i-th order id given to "decisions_at"; NULL: none). */
static void stored_replies(PGresult *res, const char *const *traceparents, size_t n,
                           struct db_columns *rows)
{
    static const enum db_elem elems[] = {OUTBOX_ROW_ELEMS};
    struct buf payload;
    buf_init(&payload);
    db_columns_open(rows, ARRAY_LEN(elems), elems);
    for (int r = 0; r < PQntuples(res); r++) {
        struct inventory_reply rep = {
            .kind = strcmp(PQgetvalue(res, r, 1), "reserved") == 0 ? REPLY_RESERVED
                                                                   : REPLY_REJECTED};
        snprintf(rep.order_id, sizeof rep.order_id, "%s", PQgetvalue(res, r, 0));
        snprintf(rep.reason, sizeof rep.reason, "%s", PQgetvalue(res, r, 2));
        snprintf(rep.event_id, sizeof rep.event_id, "%s", PQgetvalue(res, r, 3));
        snprintf(rep.occurred_at, sizeof rep.occurred_at, "%s", PQgetvalue(res, r, 4));
        size_t at = (size_t)strtoul(PQgetvalue(res, r, 5), NULL, 10);
        reply_row(rows, &payload, &rep, at >= 1 && at <= n ? traceparents[at - 1] : NULL);
    }
    buf_cleanup(&payload);
}

enum err inventory_store_resend_replies(struct db *db, const char *const *order_ids,
                                        const char *const *traceparents, size_t n,
                                        int64_t min_age_ms, long *resent)
{
    PGresult *res = NULL;
    *resent = 0;
    enum err e = decisions_of(db, "decisions_at", order_ids, n, &res);
    if (e == ERR_OK) {
        char age[32];
        snprintf(age, sizeof age, "%lld", (long long)min_age_ms);
        struct db_columns rows;
        PGresult *sent = NULL;
        stored_replies(res, traceparents, n, &rows);
        e = db_columns_exec(db, "outbox_resend", &rows, age, &sent);
        *resent = e == ERR_OK && sent ? PQntuples(sent) : 0;
        PQclear(sent);
        db_columns_cleanup(&rows);
    }
    PQclear(res);
    return e;
}

static int by_order_id(const void *a, const void *b, void *orders_arg)
{
    const struct order_created *const *orders = orders_arg;
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    int c = strcmp(orders[i]->order_id, orders[j]->order_id);
    return c ? c : (i > j) - (i < j); /* the batch's first copy first */
}

/* orders' indexes sorted by order id (copies in batch order); caller frees. */
static size_t *sorted_by_id(const struct order_created *const *orders, size_t n)
{
    size_t *idx = xcalloc(n, sizeof *idx);
    for (size_t i = 0; i < n; i++)
        idx[i] = i;
    qsort_r(idx, n, sizeof *idx, by_order_id, (void *)orders);
    return idx;
}

/* The first position in idx (sorted) whose order id is not below id. */
static size_t lower_bound(const struct order_created *const *orders, const size_t *idx, size_t n,
                          const char *id)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(orders[idx[mid]]->order_id, id) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Marks DECISION_BEFORE the orders decided already, and the second copy of
 * an order within the batch. Returns how many are left to decide. */
static size_t mark_decided(PGresult *res, const struct order_created *const *orders, size_t n,
                           enum decision *out)
{
    size_t *idx = sorted_by_id(orders, n), left = 0;
    for (size_t k = 0; k < n; k++) /* a copy after the first: decided with the first */
        out[idx[k]] = k && strcmp(orders[idx[k]]->order_id, orders[idx[k - 1]]->order_id) == 0
                          ? DECISION_BEFORE : DECISION_NEW;
    for (int r = 0; r < PQntuples(res); r++) {
        const char *id = PQgetvalue(res, r, 0);
        for (size_t k = lower_bound(orders, idx, n, id);
             k < n && strcmp(orders[idx[k]]->order_id, id) == 0; k++)
            out[idx[k]] = DECISION_BEFORE;
    }
    for (size_t i = 0; i < n; i++)
        left += out[i] == DECISION_NEW;
    free(idx);
    return left;
}

/* Decides the orders marked DECISION_NEW; sets each one's reply kind. */
static enum err decide_new(struct db *db, const struct order_created *const *orders,
                           const char *const *traceparents, size_t n, enum decision *out,
                           enum reply_kind *kinds)
{
    const struct order_created **todo = xcalloc(n, sizeof *todo);
    const char **traces = xcalloc(n, sizeof *traces);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (out[i] == DECISION_NEW) {
            traces[k] = traceparents[i];
            todo[k++] = orders[i];
        }
    enum reply_kind *got = xcalloc(k ? k : 1, sizeof *got);
    enum err e = k ? reserve(db, todo, traces, k, got) : ERR_OK;
    for (size_t i = 0, j = 0; i < n; i++)
        if (out[i] == DECISION_NEW)
            kinds[i] = got[j++];
    free(got);
    free(traces);
    free(todo);
    return e;
}

enum err inventory_store_apply(struct db *db, const struct order_created *const *orders,
                               const char *const *traceparents, size_t n, enum decision *out,
                               enum reply_kind *kinds, long *resent)
{
    *resent = 0;
    const char **ids = xcalloc(n, sizeof *ids);
    for (size_t i = 0; i < n; i++)
        ids[i] = orders[i]->order_id;
    PGresult *res = NULL;
    enum err e = decisions_of(db, "decisions_of", ids, n, &res);
    size_t fresh = e == ERR_OK ? mark_decided(res, orders, n, out) : 0;
    if (e == ERR_OK)
        e = decide_new(db, orders, traceparents, n, out, kinds);
    if (e == ERR_OK && fresh < n) {
        const char **traces = xcalloc(n, sizeof *traces);
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (out[i] == DECISION_BEFORE) {
                traces[k] = traceparents[i];
                ids[k++] = orders[i]->order_id;
            }
        e = inventory_store_resend_replies(db, ids, traces, k, REPLY_RESEND_MIN_AGE_MS, resent);
        free(traces);
    }
    PQclear(res);
    free(ids);
    return e;
}
