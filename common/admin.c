/* admin.c - the /admin/ routes: token guard, input checks, one mutex-held
 * connection for operator actions, the audit log line and metric of each.
 * Owns authorization and the mapping of outcomes to replies; the SQL is
 * admin_store.c, re-applying a message is the inbox's own path. */
#include "admin.h"
#include "admin_store.h"
#include "event.h"
#include "inbox.h"
#include "log.h"
#include "metrics.h"
#include "service.h"
#include "util.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PAGE_DEFAULT 50
#define PAGE_MAX 500
#define ACTOR_MAX 64

struct admin {
    pthread_mutex_t mu;       /* one operator action at a time on db */
    int64_t wait_ms;          /* for mu, at most (DB_REQUEST_TIMEOUT) */
    struct db *db;
    struct db_stmt *stmts;
    char *resend_sql;         /* the statement "admin_resend", for this service */
};

static struct metric *m_actions, *m_denied;

void admin_new(const struct config *c, const struct admin_def *def,
               const struct db_stmt *svc_stmts, size_t nsvc, struct admin **out)
{
    struct admin *a = xcalloc(1, sizeof *a);
    const struct db_stmt *lists[] = {admin_store_stmts, inbox_stmts, svc_stmts};
    const size_t counts[] = {admin_store_nstmts, inbox_nstmts, nsvc};
    size_t n = 0;
    a->stmts = db_stmts_join(lists, counts, 3, 1, &n);
    a->resend_sql = admin_store_resend_sql(def->order_events_sql, c->stream_duplicate_window_ms);
    a->stmts[n - 1] = (struct db_stmt){"admin_resend", a->resend_sql};
    db_new(c->database_url, "admin", a->stmts, n, &a->db);
    db_set_kind(a->db, DB_REQUEST); /* an operator waits for it, as a client does */
    a->wait_ms = c->db_request_timeout_ms;
    pthread_mutex_init(&a->mu, NULL);
    m_actions = metrics_register("admin_actions_total", "Admin API actions, by action and result.",
                                 METRIC_COUNTER, NULL, 0);
    m_denied = metrics_register("admin_denied_total",
                                "Admin API requests refused: no token (401) or a wrong one (403).",
                                METRIC_COUNTER, NULL, 0);
    metric_add(m_denied, "reason=\"missing\"", 0);
    metric_add(m_denied, "reason=\"wrong\"", 0);
    *out = a;
}

void admin_free(struct admin *a)
{
    if (!a)
        return;
    db_free(a->db);
    free(a->stmts);
    free(a->resend_sql);
    pthread_mutex_destroy(&a->mu);
    free(a);
}

int admin_token_equal(const char *given, const char *expected)
{
    size_t lg = strlen(given), le = strlen(expected);
    volatile unsigned char diff = lg != le;
    for (size_t i = 0; i < le; i++) /* every byte of the secret, whatever matched */
        diff |= (unsigned char)((i < lg ? given[i] : 0) ^ expected[i]);
    return diff == 0;
}

/* Who asked: the client's address and an optional X-Admin-Actor name. */
static json_t *who(const struct http_req *req)
{
    char peer[64], actor[ACTOR_MAX + 1] = "";
    http_req_peer(req, peer, sizeof peer);
    const char *a = http_req_header(req, "X-Admin-Actor");
    const struct service *svc = req->ctx;
    if (a && svc && svc->cfg.admin_token && admin_token_equal(a, svc->cfg.admin_token))
        a = "(the token: not logged)"; /* a client that sent it there */
    size_t n = 0;
    for (; a && a[n] && n < ACTOR_MAX; n++)
        actor[n] = a[n] > 0x20 && a[n] < 0x7f ? a[n] : '_';
    actor[n] = '\0';
    return json_pack("{s:s, s:s}", "remote", peer, "actor", n ? actor : "-");
}

static void deny(const struct http_req *req, struct http_resp *resp, int status)
{
    const char *reason = status == 401 ? "missing" : "wrong";
    char lbl[32];
    snprintf(lbl, sizeof lbl, "reason=\"%s\"", reason);
    metric_add(m_denied, lbl, 1);
    json_t *f = who(req);
    json_object_set_new(f, "path", json_string(req->path));
    log_with(LOG_WARN, f, "admin: request refused (%s token)", reason); /* never the token */
    if (status == 401)
        http_resp_error(resp, 401, "unauthorized", "Authorization: Bearer <token> required", NULL);
    else
        http_resp_error(resp, 403, "forbidden", "the token is not valid", NULL);
}

/* Every admin route's gate, before anything else about the request is
 * looked at: disabled (no ADMIN_TOKEN) → 404, no token → 401, a wrong one
 * → 403. */
static int admin_gate(const struct http_req *req, struct http_resp *resp, void *ctx)
{
    const struct service *svc = ctx;
    const char *token = svc->cfg.admin_token;
    if (!token || !token[0]) {
        http_resp_error(resp, 404, "not_found", "no such resource", NULL);
        return 0;
    }
    const char *auth = http_req_header(req, "Authorization");
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0 || !auth[7]) {
        deny(req, resp, 401);
        return 0;
    }
    if (!admin_token_equal(auth + 7, token)) {
        deny(req, resp, 403);
        return 0;
    }
    return 1;
}

/* The admin state when the request may proceed (its gate let it in); else
 * the reply is set. */
static struct admin *guard(struct http_resp *resp, struct service *svc)
{
    if (!atomic_load(&svc->serving) || !svc->admin) {
        http_resp_error(resp, 503, "unavailable", "the service is starting; retry later", NULL);
        return NULL;
    }
    return svc->admin;
}

/* The audit trail: one line and one count per action. details is stolen. */
static void audit(const struct http_req *req, const char *action, const char *result,
                  json_t *details)
{
    char lbl[96];
    snprintf(lbl, sizeof lbl, "action=\"%s\",result=\"%s\"", action, result);
    metric_add(m_actions, lbl, 1);
    json_t *f = who(req);
    json_object_set_new(f, "action", json_string(action));
    json_object_set_new(f, "result", json_string(result));
    if (details)
        json_object_update(f, details);
    json_decref(details);
    log_with(LOG_INFO, f, "admin: %s: %s", action, result);
}

/* Locks the admin connection; NULL with a 503 set when Postgres is away,
 * or when another action held the connection for as long as a statement
 * may take (Postgres hanging: a queue of operators would wait in turn). */
static struct db *db_take(struct admin *a, struct http_resp *resp)
{
    if (mutex_lock_within(&a->mu, a->wait_ms) != 0) {
        http_resp_error(resp, 503, "unavailable",
                        "another admin action is still waiting for the database; retry later", NULL);
        return NULL;
    }
    if (db_connect(a->db) == ERR_OK)
        return a->db;
    pthread_mutex_unlock(&a->mu);
    http_resp_error(resp, 503, "unavailable", "the database cannot be reached; retry later", NULL);
    return NULL;
}

static void db_give(struct admin *a)
{
    db_rollback(a->db); /* whatever a failed action left open */
    pthread_mutex_unlock(&a->mu);
}

/* Maps a storage failure to the reply; returns the audit result label. */
static const char *fail(struct service *svc, struct admin *a, enum err e, struct http_resp *resp)
{
    service_db_error(svc, a->db, e, resp);
    return e == ERR_UNAVAILABLE || e == ERR_RETRY ? "unavailable" : "error";
}

/* ---- input ---- */

/* A query argument as an integer in [min, max] (absent: def). 0 on success,
 * else the 400 reply is set. */
static int query_int(const struct http_req *req, struct http_resp *resp, const char *name,
                     long long min, long long max, long long def, long long *out)
{
    const char *v = http_req_query(req, name);
    *out = def;
    if (!v)
        return 0;
    long long n;
    if (decimal_parse(v, min < 0, &n) == 0 && n >= min && n <= max) {
        *out = n;
        return 0;
    }
    char msg[128];
    snprintf(msg, sizeof msg, "%s must be an integer from %lld to %lld", name, min, max);
    http_resp_error(resp, 400, "validation_failed", msg, name);
    return -1;
}

static int query_page(const struct http_req *req, struct http_resp *resp, struct admin_page *pg)
{
    long long limit = 0;
    if (query_int(req, resp, "limit", 1, PAGE_MAX, PAGE_DEFAULT, &limit) < 0 ||
        query_int(req, resp, "after", 0, INT64_MAX, 0, &pg->after) < 0)
        return -1;
    pg->limit = (int)limit;
    return 0;
}

/* The body as a JSON object, or NULL with the 400 set (invalid_json: not
 * JSON; validation_failed: JSON of another kind), as every body is read. */
static json_t *body_object(const struct http_req *req, struct http_resp *resp)
{
    struct field_error fe;
    json_t *o = NULL;
    enum err e = event_load_object(req->body ? req->body : "", req->body_len, &o, &fe);
    if (e != ERR_OK)
        http_resp_bad_body(resp, e, fe.message, NULL);
    return o;
}

/* A UUID member of o, or NULL with a 400 set. */
static const char *body_uuid(json_t *o, const char *name, struct http_resp *resp)
{
    const char *v = json_string_value(json_object_get(o, name));
    if (v && uuid_valid(v))
        return v;
    char msg[96];
    snprintf(msg, sizeof msg, "%s must be a UUID", name);
    http_resp_error(resp, 400, "validation_failed", msg, name);
    return NULL;
}

/* ---- listings ---- */

typedef enum err (*list_fn)(struct db *db, const char *state, const struct admin_page *pg,
                            json_t **doc);

/* A paged listing whose optional ?state= is one of two words. */
static void list(const struct http_req *req, struct http_resp *resp, struct service *svc,
                 const char *const states[2], list_fn fetch)
{
    struct admin *a = guard(resp, svc);
    struct admin_page pg;
    if (!a || query_page(req, resp, &pg) < 0)
        return;
    const char *state = http_req_query(req, "state");
    if (state && strcmp(state, states[0]) != 0 && strcmp(state, states[1]) != 0) {
        char msg[96];
        snprintf(msg, sizeof msg, "state must be %s or %s", states[0], states[1]);
        http_resp_error(resp, 400, "validation_failed", msg, "state");
        return;
    }
    struct db *db = db_take(a, resp);
    if (!db)
        return;
    json_t *doc = NULL;
    enum err e = fetch(db, state ? state : "", &pg, &doc);
    if (e == ERR_OK)
        http_resp_json(resp, 200, doc);
    else
        fail(svc, a, e, resp);
    db_give(a);
}

static void get_outbox(const struct http_req *req, struct http_resp *resp, void *ctx)
{
    static const char *const states[] = {"dead", "failing"};
    list(req, resp, ctx, states, admin_store_outbox);
}

static void get_dead_letters(const struct http_req *req, struct http_resp *resp, void *ctx)
{
    static const char *const states[] = {"open", "all"};
    list(req, resp, ctx, states, admin_store_dead_letters);
}

/* ---- outbox ---- */

static const char *requeue(struct service *svc, struct admin *a, const char *event_id,
                           struct http_resp *resp, long *n)
{
    struct db *db = db_take(a, resp);
    if (!db)
        return "unavailable";
    const char *result = "ok";
    enum err e = admin_store_requeue(db, event_id, n);
    if (e == ERR_OK) {
        http_resp_json(resp, 200, json_pack("{s:i}", "requeued", (int)*n));
        service_relay_notify(svc);
    } else if (e == ERR_NOT_FOUND) {
        http_resp_error(resp, 404, "not_found", "no outbox event with this id", NULL);
        result = "not_found";
    } else if (e == ERR_CONFLICT) {
        http_resp_error(resp, 409, "already_published",
                        "this event was published; POST /admin/orders/resend sends it again", NULL);
        result = "conflict";
    } else {
        result = fail(svc, a, e, resp);
    }
    db_give(a);
    return result;
}

/* {"event_id":"<uuid>"} requeues that row; {"all":true} every dead row;
 * both at once is refused (it requeued every dead row). */
static void post_requeue(const struct http_req *req, struct http_resp *resp, void *ctx)
{
    struct service *svc = ctx;
    struct admin *a = guard(resp, svc);
    json_t *o = a ? body_object(req, resp) : NULL;
    if (!o)
        return;
    json_t *all_v = json_object_get(o, "all");
    if (all_v && !json_is_boolean(all_v)) { /* "true", 1: the answer named event_id */
        http_resp_error(resp, 400, "validation_failed", "all must be true or false", "all");
        json_decref(o);
        return;
    }
    int all = json_is_true(all_v);
    int both = all && json_object_get(o, "event_id"); /* which was meant? */
    int neither = !all && !json_object_get(o, "event_id"); /* {} or {"all":false} */
    const char *id = all || neither ? NULL : body_uuid(o, "event_id", resp);
    if (both || neither)
        http_resp_error(resp, 400, "validation_failed",
                        both ? "give either event_id or all, not both"
                             : "give event_id (a UUID) or \"all\": true", "event_id");
    else if (all || id) {
        long n = 0;
        const char *result = requeue(svc, a, id, resp, &n);
        audit(req, all ? "requeue_all_dead" : "requeue", result,
              json_pack("{s:s?, s:i}", "event_id", id, "requeued", (int)n));
    }
    json_decref(o);
}

/* ---- dead letters ---- */

/* The body's {"id": <a dead letter's id>}, or 0 with the reply set. */
static long long body_dead_letter_id(const struct http_req *req, struct http_resp *resp)
{
    json_t *o = body_object(req, resp);
    if (!o)
        return 0;
    json_t *jid = json_object_get(o, "id");
    long long id = json_is_integer(jid) ? json_integer_value(jid) : 0;
    if (id < 1) {
        http_resp_error(resp, 400, "validation_failed", "id must be a positive integer", "id");
        id = 0;
    }
    json_decref(o);
    return id;
}

/* Whether the database refused the data (a constraint, a check, a
 * trigger's exception: SQLSTATE classes 22, 23, P0), not the statement (a
 * missing table, a permission: a 500 as before). */
static int refused_data(struct db *db, enum err e)
{
    const char *st = db_sqlstate(db);
    return (e == ERR_DB || e == ERR_CONFLICT) &&
           (strncmp(st, "22", 2) == 0 || strncmp(st, "23", 2) == 0 || strncmp(st, "P0", 2) == 0);
}

/* In one transaction: the dead letter, its poisoned id forgotten, the
 * inbox's path, the bookkeeping. "poison" rolls everything back; so does a
 * database that still refuses the event (a constraint, a trigger: how
 * dead letters "refused 10 times" come about), which is "poison" too, with
 * the database's words (it was a 500: a helper's probe). */
static enum err reapply_tx(struct service *svc, struct db *db, long long id, const char **result,
                           char *why, size_t whylen)
{
    struct dead_letter d;
    metrics_tx_end(0); /* as the inbox's batches: nothing held from before */
    enum err e = db_exec_sql(db, "BEGIN");
    if (e == ERR_OK)
        e = admin_store_dead_letter(db, id, &d);
    if (e != ERR_OK)
        return e;
    e = admin_store_forget_poisoned(db, id);
    if (e == ERR_OK) {
        e = inbox_apply_one(db, &svc->inbox_handler, d.subject, (const char *)d.body, d.len,
                            result, why, whylen);
        if (refused_data(db, e)) {
            char *msg = xasprintf("the database refused it: %s", db_errmsg(db));
            utf8_copy(why, whylen, msg); /* cut whole characters: it goes into JSON */
            free(msg);
            log_warn("admin: dead letter %lld still refused: %s", id, why);
            *result = "poison";
            e = ERR_OK;
        }
    }
    int keep = e == ERR_OK && strcmp(*result, "poison") != 0; /* else the caller rolls back */
    if (keep)
        e = admin_store_dead_letter_done(db, id, *result, NULL, 0);
    if (keep && e == ERR_OK)
        e = db_exec_sql(db, "COMMIT");
    metrics_tx_end(keep && e == ERR_OK);
    admin_dead_letter_cleanup(&d);
    return e;
}

/* What an action on one dead letter did: outcome ("poison": it still cannot
 * be processed, with why), or an error (ERR_NOT_FOUND: no such id). */
typedef enum err (*dead_letter_act)(struct service *svc, struct db *db, long long id,
                                    char *outcome, size_t outcome_len, char *why, size_t whylen);

static enum err reapply_act(struct service *svc, struct db *db, long long id, char *outcome,
                            size_t outcome_len, char *why, size_t whylen)
{
    const char *result = "";
    enum err e = reapply_tx(svc, db, id, &result, why, whylen);
    snprintf(outcome, outcome_len, "%s", result);
    return e;
}

/* Closes a dead letter that nothing will fix (its bytes, a test message):
 * out of the open ones, the inbox_dead_letters gauge and its alert, kept
 * with "discarded". One closed before (re-applied, or discarded) keeps
 * what it had, which the answer gives. */
static enum err discard_act(struct service *svc, struct db *db, long long id, char *outcome,
                            size_t outcome_len, char *why, size_t whylen)
{
    (void)svc;
    (void)why;
    (void)whylen;
    return admin_store_dead_letter_done(db, id, "discarded", outcome, outcome_len);
}

/* {"id":<dead letter id>}: the action, its answer and its audit line. */
static void on_dead_letter(const struct http_req *req, struct http_resp *resp,
                           struct service *svc, const char *action, dead_letter_act act)
{
    struct admin *a = guard(resp, svc);
    long long id = a ? body_dead_letter_id(req, resp) : 0;
    struct db *db = id ? db_take(a, resp) : NULL;
    if (!db) {
        if (id)
            audit(req, action, "unavailable", json_pack("{s:I}", "dead_letter_id", (json_int_t)id));
        return;
    }
    char outcome[64] = "", why[256] = "";
    const char *result = "ok";
    enum err e = act(svc, db, id, outcome, sizeof outcome, why, sizeof why);
    if (e == ERR_OK && strcmp(outcome, "poison") == 0) {
        http_resp_error(resp, 409, "still_poison", why, NULL);
        result = "still_poison";
    } else if (e == ERR_OK) {
        http_resp_json(resp, 200, json_pack("{s:I, s:s}", "id", (json_int_t)id, "result", outcome));
        service_relay_notify(svc); /* a re-applied one may have written a reply */
    } else if (e == ERR_NOT_FOUND) {
        http_resp_error(resp, 404, "not_found", "no dead letter with this id", NULL);
        result = "not_found";
    } else {
        result = fail(svc, a, e, resp);
    }
    db_give(a);
    audit(req, action, result,
          json_pack("{s:I, s:s}", "dead_letter_id", (json_int_t)id, "outcome", outcome));
}

/* Through the normal idempotent path, same event id. */
static void post_reapply(const struct http_req *req, struct http_resp *resp, void *ctx)
{
    on_dead_letter(req, resp, ctx, "reapply_dead_letter", reapply_act);
}

static void post_discard(const struct http_req *req, struct http_resp *resp, void *ctx)
{
    on_dead_letter(req, resp, ctx, "discard_dead_letter", discard_act);
}

/* ---- one order's events ---- */

static const char *resend(struct service *svc, struct admin *a, const char *order_id,
                          struct http_resp *resp, json_t **ids)
{
    struct db *db = db_take(a, resp);
    if (!db)
        return "unavailable";
    const char *result = "ok";
    char due[40];
    enum err e = admin_store_resend(db, order_id, ids, due, sizeof due);
    if (e == ERR_OK && json_array_size(*ids) == 0) {
        http_resp_error(resp, 404, "not_found",
                        "no event of this order is kept (published events are kept for "
                        "OUTBOX_RETENTION); a PENDING order's OrderCreated is sent again by "
                        "order-service's re-drive (REDRIVE_AFTER), and inventory-service then "
                        "sends its stored reply again", NULL);
        result = "not_found";
    } else if (e == ERR_OK) {
        http_resp_json(resp, 200, json_pack("{s:s, s:O, s:s}", "order_id", order_id, "event_ids",
                                            *ids, "send_at", due));
        service_relay_notify(svc);
    } else {
        result = fail(svc, a, e, resp);
    }
    db_give(a);
    return result;
}

/* {"order_id":"<uuid>"}: its events through the outbox again, same ids. */
static void post_resend(const struct http_req *req, struct http_resp *resp, void *ctx)
{
    struct service *svc = ctx;
    struct admin *a = guard(resp, svc);
    json_t *o = a ? body_object(req, resp) : NULL;
    const char *order_id = o ? body_uuid(o, "order_id", resp) : NULL;
    if (order_id) {
        json_t *ids = NULL;
        const char *result = resend(svc, a, order_id, resp, &ids);
        audit(req, "resend_order", result,
              json_pack("{s:s, s:o}", "order_id", order_id, "event_ids", ids ? ids : json_array()));
    }
    json_decref(o);
}

/* ---- reconciliation ---- */

/* Runs the check now; the report lists what it found. */
static void get_reconcile(const struct http_req *req, struct http_resp *resp, void *ctx)
{
    struct service *svc = ctx;
    if (!guard(resp, svc))
        return;
    if (!atomic_load(&svc->started)) { /* svc->reconcile is set before it */
        http_resp_error(resp, 503, "unavailable",
                        "the service is connecting to NATS: nothing to reconcile against yet; "
                        "retry later", NULL);
        return;
    }
    json_t *rep = NULL;
    enum err e = reconcile_run(svc->reconcile, 1, &rep);
    if (e == ERR_OK) {
        json_t *p = json_object_get(rep, "produced"), *c = json_object_get(rep, "consumed");
        audit(req, "reconcile", "ok", json_pack("{s:O?, s:O?, s:O?, s:O?}",
              "missing", json_object_get(p, "missing_count"),
              "duplicated", json_object_get(p, "duplicated_count"),
              "orphaned", json_object_get(p, "orphaned_count"),
              "unprocessed", json_object_get(c, "unprocessed_count")));
        http_resp_json(resp, 200, rep);
    } else {
        audit(req, "reconcile", "unavailable", NULL);
        http_resp_error(resp, 503, "unavailable",
                        e == ERR_RETRY ? "a reconciliation is under way; retry later"
                                       : "postgres or jetstream did not answer; retry later",
                        NULL);
    }
}

const struct http_route admin_routes[] = {
    {"GET", "/admin/outbox", "/admin/outbox", get_outbox, 0, admin_gate},
    {"POST", "/admin/outbox/requeue", "/admin/outbox/requeue", post_requeue, 0, admin_gate},
    {"GET", "/admin/dead-letters", "/admin/dead-letters", get_dead_letters, 0, admin_gate},
    {"POST", "/admin/dead-letters/reapply", "/admin/dead-letters/reapply", post_reapply, 0,
     admin_gate},
    {"POST", "/admin/dead-letters/discard", "/admin/dead-letters/discard", post_discard, 0,
     admin_gate},
    {"POST", "/admin/orders/resend", "/admin/orders/resend", post_resend, 0, admin_gate},
    {"GET", "/admin/reconcile", "/admin/reconcile", get_reconcile, 0, admin_gate},
};
const size_t admin_nroutes = ARRAY_LEN(admin_routes);
