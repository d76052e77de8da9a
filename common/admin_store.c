/* admin_store.c - SQL of the admin API over outbox, dead_letters and
 * processed_messages. Owns the statements and reading their results; not
 * authorization, logging or HTTP replies (admin.c). */
#include "admin_store.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PREVIEW_CHARS 200
/* A page of dead letters ends once its bodies reach this many bytes (its
 * first row whatever its size): a body may be 1 MiB, and 500 of them, read
 * at once and sent as base64, took a service from 0.2 to 1.7 GB (a helper's
 * probe). */
#define PAGE_BODY_BYTES "4194304"

const struct db_stmt admin_store_stmts[] = {
    {"admin_outbox",
     "SELECT id, event_id, subject, event_type, status, attempts, last_error, "
     "extract(epoch FROM now() - created_at)::float8, aggregate_id, "
     DB_RFC3339("created_at") ", " DB_RFC3339("next_attempt_at") " FROM outbox "
     "WHERE id > $1::bigint AND ((status = 'dead' AND $2 IN ('', 'dead')) OR "
     "(status = 'pending' AND attempts > 0 AND $2 IN ('', 'failing'))) ORDER BY id LIMIT $3::int"},
    /* a row in the outbox is queued again; one only in outbox_published
     * (or marked published in place by an instance of a version before
     * migration 010) says 'published' (refused: /admin/orders/resend sends
     * it again) */
    {"admin_requeue_one",
     "WITH r AS (SELECT id, status FROM outbox WHERE event_id = $1::uuid FOR UPDATE), "
     "u AS (UPDATE outbox o SET status = 'pending', attempts = 0, next_attempt_at = "
     /* a re-send waiting for the duplicate window (admin_resend) keeps its time */
     "  CASE WHEN r.status = 'pending' AND EXISTS (SELECT 1 FROM outbox_published p "
     "  WHERE p.event_id = o.event_id) THEN greatest(now(), o.next_attempt_at) ELSE now() END "
     "  FROM r WHERE o.id = r.id AND r.status <> 'published' RETURNING o.id) "
     "SELECT r.status, (SELECT count(*) FROM u) FROM r UNION ALL "
     "(SELECT 'published', 0 FROM outbox_published p WHERE p.event_id = $1::uuid "
     "  AND NOT EXISTS (SELECT 1 FROM r) LIMIT 1)"},
    {"admin_requeue_dead",
     "WITH u AS (UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = now() "
     "  WHERE id IN (SELECT id FROM outbox WHERE status = 'dead' ORDER BY id LIMIT 100000) "
     "  RETURNING 1) SELECT count(*) FROM u"},
    /* the page's rows up to $4 body bytes (a body's size is read without
     * the body), and how many rows the page would have had without that
     * bound: the next page starts after the last row sent */
    {"admin_dead_letters",
     "WITH s AS (SELECT id, sum(octet_length(body)) OVER (ORDER BY id) - octet_length(body) "
     "  AS before FROM dead_letters WHERE id > $1::bigint AND ($2::bool OR reapplied_at IS NULL) "
     "  ORDER BY id LIMIT $3::int) "
     "SELECT d.id, d.subject, d.event_id, d.error, " DB_RFC3339("d.created_at") ", "
     "extract(epoch FROM now() - d.created_at)::float8, encode(d.body, 'hex'), "
     DB_RFC3339("d.reapplied_at") ", d.reapply_result, (SELECT count(*) FROM s) "
     "FROM s JOIN dead_letters d USING (id) WHERE s.before < $4::bigint ORDER BY d.id"},
    {"admin_dead_letter",
     "SELECT subject, encode(body, 'hex') FROM dead_letters WHERE id = $1::bigint FOR UPDATE"},
    /* one transaction recorded both: same now() */
    {"admin_forget_poisoned",
     "DELETE FROM processed_messages p USING dead_letters d WHERE d.id = $1::bigint "
     "AND p.event_id = d.event_id AND p.processed_at = d.created_at"},
    /* the first reapply's record stays: a later one finds the event applied
     * already ("duplicate") and must not hide what the first did; but a
     * discarded one that is re-applied after all says what the re-apply did
     * (it kept "discarded": a review) */
    {"admin_dead_letter_done",
     "UPDATE dead_letters SET reapplied_at = CASE WHEN reapply_result = 'discarded' "
     "  AND $2 <> 'discarded' THEN now() ELSE coalesce(reapplied_at, now()) END, "
     "reapply_result = CASE WHEN reapply_result = 'discarded' THEN $2 "
     "  ELSE coalesce(reapply_result, $2) END WHERE id = $1::bigint RETURNING reapply_result"},
};
const size_t admin_store_nstmts = ARRAY_LEN(admin_store_stmts);

/* The order's events (ids from events_sql): queued again if still in the
 * outbox, written to it again (same id and body) if published. Each is due
 * once JetStream would store it: now, or when the duplicate window since
 * its last publish has passed (a copy sent sooner is dropped, which left an
 * operator's re-send of a lost message with a 200 and no effect: a helper's
 * probe). The publish is filed after JetStream stored it, and a second is
 * added for the purge of its id: never early. */
char *admin_store_resend_sql(const char *events_sql, int64_t window_ms)
{
    return xasprintf(
        "WITH e AS (%s), "
        "w AS (SELECT e.event_id, greatest(now(), (SELECT max(p.published_at) "
        "  FROM outbox_published p WHERE p.event_id = e.event_id) "
        "  + %lld * interval '1 millisecond') AS due FROM e), "
        "u AS (UPDATE outbox o SET status = 'pending', attempts = 0, next_attempt_at = w.due "
        "  FROM w WHERE o.event_id = w.event_id RETURNING o.event_id, o.next_attempt_at), "
        "i AS (INSERT INTO outbox (event_id, subject, event_type, payload, aggregate_id, "
        "  traceparent, next_attempt_at) "
        "  SELECT p.event_id, p.subject, p.event_type, p.payload, p.aggregate_id, p.traceparent, "
        "  w.due FROM outbox_published p JOIN w ON w.event_id = p.event_id "
        "  WHERE NOT EXISTS (SELECT 1 FROM outbox o WHERE o.event_id = p.event_id) "
        "  ON CONFLICT (event_id) DO NOTHING RETURNING event_id, next_attempt_at), "
        "a AS (SELECT * FROM u UNION ALL SELECT * FROM i) "
        "SELECT event_id, " DB_RFC3339("max(next_attempt_at) OVER ()") " FROM a",
        events_sql, (long long)(window_ms + 1000));
}

/* Text whatever its bytes (a subject or error may come from the wire). */
static json_t *safe_text(const char *s)
{
    struct buf b;
    buf_init(&b);
    buf_utf8_preview(&b, s, strlen(s), 4096);
    json_t *v = json_string(b.data);
    buf_cleanup(&b);
    return v;
}

static json_t *text_or_null(PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? json_null() : safe_text(PQgetvalue(r, row, col));
}

static json_t *outbox_row(PGresult *r, int i)
{
    return json_pack("{s:I, s:s, s:s, s:s, s:s, s:i, s:o, s:f, s:o, s:s, s:s}",
                     "id", (json_int_t)strtoll(PQgetvalue(r, i, 0), NULL, 10),
                     "event_id", PQgetvalue(r, i, 1), "subject", PQgetvalue(r, i, 2),
                     "event_type", PQgetvalue(r, i, 3), "status", PQgetvalue(r, i, 4),
                     "attempts", atoi(PQgetvalue(r, i, 5)), "last_error", text_or_null(r, i, 6),
                     "age_seconds", strtod(PQgetvalue(r, i, 7), NULL),
                     "aggregate_id", text_or_null(r, i, 8), "created_at", PQgetvalue(r, i, 9),
                     "next_attempt_at", PQgetvalue(r, i, 10));
}

/* A body whatever its bytes: base64 of all of it, and a readable start. */
static void add_body(json_t *row, const char *hex)
{
    unsigned char *body = NULL;
    size_t n = 0;
    if (hex_decode(hex, &body, &n) != 0)
        return;
    struct buf b64, pre;
    buf_init(&b64);
    buf_init(&pre);
    buf_base64(&b64, body, n);
    buf_utf8_preview(&pre, body, n, PREVIEW_CHARS);
    json_object_set_new(row, "body_bytes", json_integer((json_int_t)n));
    json_object_set_new(row, "body_base64", json_string(b64.data));
    json_object_set_new(row, "body_preview", json_string(pre.data));
    buf_cleanup(&b64);
    buf_cleanup(&pre);
    free(body);
}

static json_t *dead_letter_row(PGresult *r, int i)
{
    json_t *row = json_pack("{s:I, s:o, s:o, s:o, s:s, s:f, s:o, s:o}",
                            "id", (json_int_t)strtoll(PQgetvalue(r, i, 0), NULL, 10),
                            "subject", safe_text(PQgetvalue(r, i, 1)),
                            "event_id", text_or_null(r, i, 2),
                            "error", safe_text(PQgetvalue(r, i, 3)), "created_at", PQgetvalue(r, i, 4),
                            "age_seconds", strtod(PQgetvalue(r, i, 5), NULL),
                            "reapplied_at", text_or_null(r, i, 7),
                            "reapply_result", text_or_null(r, i, 8));
    add_body(row, PQgetvalue(r, i, 6));
    return row;
}

/* Runs a paged listing and wraps its rows with the next page's key, null
 * when the page holds every row left: the statement is asked for one row
 * more than the page, which tells (a full last page was followed by an
 * empty one: a helper's audit). With a byte bound (may be NULL), the
 * statement's last column is how many rows it would have had without it. */
static enum err page(struct db *db, const char *stmt, const char *filter, const char *bytes,
                     const struct admin_page *pg, json_t *(*row)(PGresult *, int), json_t **doc)
{
    char after[32], limit[16];
    snprintf(after, sizeof after, "%lld", pg->after);
    snprintf(limit, sizeof limit, "%d", pg->limit + 1);
    const char *params[] = {after, filter, limit, bytes};
    PGresult *r = NULL;
    enum err e = db_exec(db, stmt, bytes ? 4 : 3, params, &r);
    if (e == ERR_OK) {
        int got = PQntuples(r), n = got < pg->limit ? got : pg->limit;
        int left = bytes && got ? atoi(PQgetvalue(r, 0, PQnfields(r) - 1)) : got;
        json_t *rows = json_array();
        for (int i = 0; i < n; i++)
            json_array_append_new(rows, row(r, i));
        json_t *next = n && left > n ? json_integer(strtoll(PQgetvalue(r, n - 1, 0), NULL, 10))
                                     : json_null();
        *doc = json_pack("{s:o, s:o}", "rows", rows, "next_after", next);
    }
    PQclear(r);
    return e;
}

enum err admin_store_outbox(struct db *db, const char *state, const struct admin_page *pg,
                            json_t **doc)
{
    return page(db, "admin_outbox", state, NULL, pg, outbox_row, doc);
}

enum err admin_store_dead_letters(struct db *db, const char *state, const struct admin_page *pg,
                                  json_t **doc)
{
    return page(db, "admin_dead_letters", strcmp(state, "all") == 0 ? "t" : "f",
                PAGE_BODY_BYTES, pg, dead_letter_row, doc);
}

enum err admin_store_requeue(struct db *db, const char *event_id, long *n)
{
    PGresult *r = NULL;
    const char *params[] = {event_id};
    enum err e = event_id ? db_exec(db, "admin_requeue_one", 1, params, &r)
                          : db_exec(db, "admin_requeue_dead", 0, NULL, &r);
    *n = 0;
    if (e == ERR_OK && PQntuples(r) == 0)
        e = ERR_NOT_FOUND;
    else if (e == ERR_OK && event_id && strcmp(PQgetvalue(r, 0, 0), "published") == 0)
        e = ERR_CONFLICT;
    else if (e == ERR_OK)
        *n = strtol(PQgetvalue(r, 0, event_id ? 1 : 0), NULL, 10);
    PQclear(r);
    return e;
}

enum err admin_store_dead_letter(struct db *db, long long id, struct dead_letter *out)
{
    char sid[32];
    snprintf(sid, sizeof sid, "%lld", id);
    const char *params[] = {sid};
    PGresult *r = NULL;
    memset(out, 0, sizeof *out);
    enum err e = db_exec(db, "admin_dead_letter", 1, params, &r);
    if (e == ERR_OK && PQntuples(r) == 0)
        e = ERR_NOT_FOUND;
    if (e == ERR_OK && hex_decode(PQgetvalue(r, 0, 1), &out->body, &out->len) != 0)
        e = ERR_DB;
    if (e == ERR_OK)
        out->subject = xstrdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    return e;
}

void admin_dead_letter_cleanup(struct dead_letter *d)
{
    free(d->subject);
    free(d->body);
    memset(d, 0, sizeof *d);
}

static enum err by_id(struct db *db, const char *stmt, long long id, const char *arg,
                      PGresult **res)
{
    char sid[32];
    snprintf(sid, sizeof sid, "%lld", id);
    const char *params[] = {sid, arg};
    return db_exec(db, stmt, arg ? 2 : 1, params, res);
}

enum err admin_store_forget_poisoned(struct db *db, long long id)
{
    return by_id(db, "admin_forget_poisoned", id, NULL, NULL);
}

enum err admin_store_dead_letter_done(struct db *db, long long id, const char *result,
                                      char *kept, size_t kept_len)
{
    PGresult *r = NULL;
    enum err e = by_id(db, "admin_dead_letter_done", id, result, &r);
    if (e == ERR_OK && PQntuples(r) == 0)
        e = ERR_NOT_FOUND;
    if (e == ERR_OK && kept)
        snprintf(kept, kept_len, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return e;
}

enum err admin_store_resend(struct db *db, const char *order_id, json_t **ids, char *due,
                            size_t due_len)
{
    const char *params[] = {order_id};
    PGresult *r = NULL;
    enum err e = db_exec(db, "admin_resend", 1, params, &r);
    if (e == ERR_OK) {
        *ids = json_array();
        for (int i = 0; i < PQntuples(r); i++)
            json_array_append_new(*ids, json_string(PQgetvalue(r, i, 0)));
        snprintf(due, due_len, "%s", PQntuples(r) ? PQgetvalue(r, 0, 1) : "");
    }
    PQclear(r);
    return e;
}
