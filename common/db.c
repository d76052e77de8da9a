/* db.c - a Postgres connection with lazy (re)connect, capped backoff and
 * per-connection prepared statements; and a blocking pool of them.
 * Owns the PGconn and the translation of libpq statuses into enum err;
 * not the SQL (callers pass statement tables) nor logging. */
#include "db.h"
#include "failpoint.h"
#include "util.h"

#include <errno.h> /* program_invocation_short_name */
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 2000
#define CONNECT_TIMEOUT "3"    /* seconds, libpq's own bound on a connection attempt */
#define CONNECT_MS 3000        /* ours (libpq's applies to blocking connects only) */
#define CLIENT_GRACE_MS 2000   /* past the server's statement_timeout: the server is gone */
#define POLL_SLICE_MS 100
#define CHECK_INTERVAL_MS 1000 /* the server notices a client gone away mid-query */
#define SETTLE_POLL_MS 100
#define SETTLE_GRACE_MS 1500   /* at shutdown: settle a commit in doubt, still within 10 s */

static struct db_limits limits = {
    .request_ms = 3000, .work_ms = 30000, .idle_tx_ms = 60000, .tcp_ms = 10000,
};
/* Shutdown: every wait ends by then (0 = no cut). */
static _Atomic int64_t cut_at_ms;

struct db {
    PGconn *conn;
    enum db_kind kind;
    int wait_as_request;     /* the client's deadlines as DB_REQUEST's (db_wait_as_request) */
    char txid[32];           /* of the open transaction (db_begin), for an in-doubt commit */
    char state[6];           /* SQLSTATE of the last error, "" if none */
    int64_t cut_grace_ms;    /* settling an in-doubt commit may outlast the shutdown cut */
    char *url;
    char app_name[64]; /* "<program>/<role>": NAMEDATALEN - 1 at most */
    const struct db_stmt *stmts;
    size_t nstmts;
    int64_t failed_at_ms;
    int64_t retry_at_ms;
    int64_t backoff_ms;
    char err[512];
};

/* When any connection (or db_ping) of this process last reached a server:
 * a handle waiting out its backoff tries again at once once the server is
 * seen back, instead of answering 503 for up to BACKOFF_MAX_MS more. */
static _Atomic int64_t seen_up_ms;

void db_new(const char *url, const char *role, const struct db_stmt *stmts, size_t nstmts,
            struct db **out)
{
    struct db *db = xcalloc(1, sizeof *db);
    db->url = xstrdup(url);
    snprintf(db->app_name, sizeof db->app_name, "%s/%s", program_invocation_short_name, role);
    db->stmts = stmts;
    db->nstmts = nstmts;
    *out = db;
}

void db_configure(const struct db_limits *l)
{
    limits = *l;
}

void db_set_kind(struct db *db, enum db_kind kind)
{
    db->kind = kind;
}

void db_wait_as_request(struct db *db, int on)
{
    db->wait_as_request = on;
}

void db_cut_at(int64_t at_ms)
{
    atomic_store(&cut_at_ms, at_ms);
}

static void db_drop(struct db *db)
{
    PQfinish(db->conn);
    db->conn = NULL;
}

struct db_stmt *db_stmts_join(const struct db_stmt *const lists[], const size_t counts[],
                              size_t nlists, size_t spare, size_t *n)
{
    *n = spare;
    for (size_t i = 0; i < nlists; i++)
        *n += counts[i];
    struct db_stmt *all = xcalloc(*n ? *n : 1, sizeof *all), *at = all;
    for (size_t i = 0; i < nlists; i++, at += counts[i - 1])
        memcpy(at, lists[i], counts[i] * sizeof *all);
    return all;
}

void db_free(struct db *db)
{
    if (!db)
        return;
    db_drop(db);
    free(db->url);
    free(db);
}

static void set_err(struct db *db, const char *what, const char *detail)
{
    snprintf(db->err, sizeof db->err, "%s: %s", what, detail ? detail : "");
    size_t n = strlen(db->err);
    while (n > 0 && (db->err[n - 1] == '\n' || db->err[n - 1] == ' '))
        db->err[--n] = '\0'; /* libpq messages end in a newline */
}

/* Keepalive probes: the first after half the TCP bound, then 3 more within it. */
static long long keepalive_idle_s(void)
{
    return limits.tcp_ms / 2000 > 0 ? limits.tcp_ms / 2000 : 1;
}

static long long keepalive_interval_s(void)
{
    return limits.tcp_ms / 6000 > 0 ? limits.tcp_ms / 6000 : 1;
}

/* A kind's statement and lock timeout; 0: none. */
static int64_t kind_ms(enum db_kind kind)
{
    return kind == DB_REQUEST ? limits.request_ms : kind == DB_WORK ? limits.work_ms : 0;
}

/* The server-side bounds of a session of this kind, as libpq `options`.
 *
 * Background work runs the same prepared statements for the life of the
 * process against queue tables whose size swings: the outbox, drained, is
 * recorded as empty by the vacuum that truncates it, and a generic plan
 * made then (a service starting on a drained outbox, or any plan made
 * again after that vacuum) scans the whole heap for every batch until the
 * next vacuum: 2,800 pages, 20 ms a claim, under load in `make bench`.
 * Every statement of background work has an index to follow, so its
 * sessions do not plan sequential scans at all.
 *
 * No session compiles its plans (jit=off). A disabled sequential scan,
 * where a statement has no index to follow (the reconciliation's look
 * into dead_letters), costs the plan 10^10, far past jit_above_cost: the
 * reconciliation's check of 2,000 ids against 300,000 processed ids took
 * 100, 37 and 35 ms, 70 of the first in compiling, against 6 ms without.
 * What these sessions run is short; compiling never pays for itself. */
void db_session_options(enum db_kind kind, char *out, size_t n)
{
    long long stmt = (long long)kind_ms(kind);
    /* the server's side of the socket too: a partitioned client's locks go soon */
    snprintf(out, n, "-c statement_timeout=%lld -c lock_timeout=%lld "
             "-c idle_in_transaction_session_timeout=%lld -c client_connection_check_interval=%d "
             "-c tcp_keepalives_idle=%lld -c tcp_keepalives_interval=%lld "
             "-c tcp_keepalives_count=3 -c tcp_user_timeout=%lld -c jit=off%s",
             stmt, stmt, (long long)limits.idle_tx_ms, CHECK_INTERVAL_MS, keepalive_idle_s(),
             keepalive_interval_s(), (long long)limits.tcp_ms,
             kind == DB_WORK ? " -c enable_seqscan=off" : "");
}

struct kv {
    const char *keys[64];
    const char *vals[64];
    int n;
};

static void kv_default(struct kv *kv, const char *key, const char *val)
{
    for (int i = 0; i < kv->n; i++)
        if (strcmp(kv->keys[i], key) == 0)
            return; /* what the user set in DATABASE_URL wins */
    kv->keys[kv->n] = key;
    kv->vals[kv->n++] = val;
}

/* DATABASE_URL merged with our bounds: keepalives and tcp_user_timeout so a
 * dead peer is noticed in seconds, and the session's timeouts prepended to
 * the user's own `options` (a later -c of the same name wins). */
static PGconn *open_conn(const struct db *db)
{
    PQconninfoOption *opts = PQconninfoParse(db->url, NULL);
    if (!opts) /* let libpq say what is wrong with it */
        return PQconnectStartParams((const char *[]){"dbname", NULL},
                                    (const char *[]){db->url, NULL}, 1);
    struct kv kv = {.n = 0};
    char options[1024], idle[24], intvl[24], tcp[24];
    db_session_options(db->kind, options, sizeof options);
    size_t used = strlen(options);
    for (PQconninfoOption *o = opts; o->keyword && kv.n < 48; o++) {
        if (!o->val)
            continue;
        if (strcmp(o->keyword, "options") == 0) {
            snprintf(options + used, sizeof options - used, " %s", o->val);
            continue;
        }
        kv.keys[kv.n] = o->keyword;
        kv.vals[kv.n++] = o->val;
    }
    snprintf(idle, sizeof idle, "%lld", keepalive_idle_s());
    snprintf(intvl, sizeof intvl, "%lld", keepalive_interval_s());
    snprintf(tcp, sizeof tcp, "%lld", (long long)limits.tcp_ms);
    kv_default(&kv, "options", options);
    kv_default(&kv, "connect_timeout", CONNECT_TIMEOUT);
    kv_default(&kv, "application_name", db->app_name);
    kv_default(&kv, "keepalives", "1");
    kv_default(&kv, "keepalives_idle", idle);
    kv_default(&kv, "keepalives_interval", intvl);
    kv_default(&kv, "keepalives_count", "3");
    kv_default(&kv, "tcp_user_timeout", tcp);
    kv.keys[kv.n] = NULL;
    kv.vals[kv.n] = NULL;
    PGconn *c = PQconnectStartParams(kv.keys, kv.vals, 0);
    PQconninfoFree(opts);
    return c;
}

/* Server notices (e.g. WARNING) are not ours to print on stderr: logs are JSON. */
static void ignore_notice(void *arg, const char *message)
{
    (void)arg, (void)message;
}

/* When the client stops waiting: the server's own bound plus a grace (past
 * it the server is frozen or unreachable), and never past the shutdown cut. */
static int64_t cut_of(const struct db *db)
{
    int64_t cut = atomic_load(&cut_at_ms);
    return cut ? cut + db->cut_grace_ms : 0;
}

static int64_t deadline_of(const struct db *db)
{
    int64_t ms = kind_ms(db->wait_as_request ? DB_REQUEST : db->kind), cut = cut_of(db);
    int64_t d = ms ? mono_ms() + ms + CLIENT_GRACE_MS : INT64_MAX;
    return cut && cut < d ? cut : d;
}

/* Waits until the socket is ready for `events` or the deadline passed (0). */
static int wait_sock(const struct db *db, short events, int64_t deadline)
{
    PGconn *c = db->conn;
    int64_t cut = cut_of(db);
    if (cut && cut < deadline)
        deadline = cut; /* a shutdown began during the wait */
    int64_t left = deadline - mono_ms();
    if (left <= 0)
        return 0;
    struct pollfd p = {.fd = PQsocket(c), .events = events};
    poll(&p, 1, (int)(left < POLL_SLICE_MS ? left : POLL_SLICE_MS));
    return 1;
}

/* Collects the results of what was sent, keeping the first error or else
 * the last result (as PQexec does). NULL on a lost connection or when the
 * deadline passed: then the connection is dropped, which also ends the
 * query on the server (client_connection_check_interval). PQcancel is not
 * used: it blocks on a frozen server. */
static PGresult *await(struct db *db, int64_t deadline)
{
    PGconn *c = db->conn;
    int f;
    while ((f = PQflush(c)) == 1)
        if (!wait_sock(db, POLLOUT | POLLIN, deadline) || !PQconsumeInput(c))
            goto lost;
    if (f < 0)
        goto lost;
    PGresult *keep = NULL;
    for (;;) {
        while (!PQisBusy(c)) {
            PGresult *r = PQgetResult(c);
            if (!r)
                return keep;
            ExecStatusType st = PQresultStatus(r);
            if (keep && PQresultStatus(keep) != PGRES_COMMAND_OK && PQresultStatus(keep) != PGRES_TUPLES_OK)
                PQclear(r);
            else {
                PQclear(keep);
                keep = r;
            }
            if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT)
                return keep; /* not used by us */
        }
        if (!wait_sock(db, POLLIN, deadline) || !PQconsumeInput(c)) {
            PQclear(keep);
            goto lost;
        }
    }
lost:
    if (mono_ms() >= deadline || (cut_of(db) && mono_ms() >= cut_of(db)))
        set_err(db, "no answer in time", "the database did not answer within its bound");
    else
        set_err(db, "connection lost", PQerrorMessage(c));
    return NULL;
}

static enum err classify(PGconn *conn, const char *state);

static enum err prepare_all(struct db *db)
{
    for (size_t i = 0; i < db->nstmts; i++) {
        PGresult *r = PQsendPrepare(db->conn, db->stmts[i].name, db->stmts[i].sql, 0, NULL)
                          ? await(db, deadline_of(db)) : NULL;
        enum err e = ERR_OK;
        if (!r)
            e = ERR_UNAVAILABLE;
        else if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            set_err(db, db->stmts[i].name, PQresultErrorMessage(r));
            e = classify(db->conn, PQresultErrorField(r, PG_DIAG_SQLSTATE)); /* e.g. a lock timeout */
        }
        PQclear(r);
        if (e != ERR_OK)
            return e;
    }
    return ERR_OK;
}

/* An idle connection has nothing to read unless the server is telling it
 * something: in practice that it is going away (shutdown, restart: a FATAL,
 * then EOF). Using it would fail the next request although the server may
 * be back; reconnect instead. */
static int idle_conn_dead(PGconn *c)
{
    if (PQtransactionStatus(c) != PQTRANS_IDLE)
        return 0;
    struct pollfd p = {.fd = PQsocket(c), .events = POLLIN};
    return poll(&p, 1, 0) != 0;
}

/* Drives the non-blocking connection attempt to its end, within CONNECT_MS
 * and the shutdown cut: a frozen server cannot hold a connect longer. */
static int connect_wait(struct db *db)
{
    int64_t deadline = mono_ms() + CONNECT_MS;
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    while (db->conn && PQstatus(db->conn) != CONNECTION_BAD) {
        if (st == PGRES_POLLING_OK)
            return 1;
        if (st == PGRES_POLLING_FAILED)
            break;
        if (!wait_sock(db, st == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline)) {
            set_err(db, "connect", "timed out");
            return 0;
        }
        st = PQconnectPoll(db->conn);
    }
    set_err(db, "connect", db->conn ? PQerrorMessage(db->conn) : "out of memory");
    return 0;
}

enum err db_connect(struct db *db)
{
    if (db->conn && PQstatus(db->conn) == CONNECTION_OK && !idle_conn_dead(db->conn))
        return ERR_OK;
    db_drop(db);
    int64_t now = mono_ms();
    if (now < db->retry_at_ms && atomic_load(&seen_up_ms) <= db->failed_at_ms)
        return ERR_UNAVAILABLE;
    int64_t cut = cut_of(db);
    if (cut && now >= cut) {
        set_err(db, "connect", "stopping");
        return ERR_UNAVAILABLE;
    }
    db->conn = open_conn(db);
    enum err e = ERR_UNAVAILABLE;
    if (connect_wait(db)) {
        PQsetNoticeProcessor(db->conn, ignore_notice, NULL);
        PQsetnonblocking(db->conn, 1); /* every wait is ours, with a deadline */
        e = prepare_all(db);
    }
    if (e == ERR_OK) {
        db->backoff_ms = 0;
        atomic_store(&seen_up_ms, now);
        return ERR_OK;
    }
    db_drop(db);
    db->failed_at_ms = now;
    db->backoff_ms = db->backoff_ms ? db->backoff_ms * 2 : BACKOFF_MIN_MS;
    if (db->backoff_ms > BACKOFF_MAX_MS)
        db->backoff_ms = BACKOFF_MAX_MS;
    db->retry_at_ms = now + db->backoff_ms;
    return e;
}

/* SQLSTATE classes that pass with time: serialization failure, deadlock
 * (40), insufficient resources (53), system error (58), lock not available
 * (55P03), statement cancelled or timed out (57014). */
static int transient(const char *state)
{
    static const char *const prefixes[] = {"40", "53", "58", "55P03", "57014"};
    for (size_t i = 0; i < ARRAY_LEN(prefixes); i++)
        if (strncmp(state, prefixes[i], strlen(prefixes[i])) == 0)
            return 1;
    return 0;
}

static enum err classify(PGconn *conn, const char *state)
{
    if (PQstatus(conn) != CONNECTION_OK || !state || strncmp(state, "08", 2) == 0 ||
        strncmp(state, "57P", 3) == 0)
        return ERR_UNAVAILABLE; /* the connection is gone or the server is going */
    if (transient(state))
        return ERR_RETRY;
    if (strcmp(state, "23505") == 0)
        return ERR_CONFLICT;
    return ERR_DB;
}

/* Classifies a finished result (NULL: lost or no answer in time); keeps it
 * in *res on success. */
static enum err check_result(struct db *db, PGresult *r, const char *what, PGresult **res)
{
    ExecStatusType st = PQresultStatus(r);
    db->state[0] = '\0';
    /* an empty query (a migration of comments alone) did nothing, well: it
     * carries no SQLSTATE and was taken for a lost server, for ever */
    if (r && (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY)) {
        if (res)
            *res = r;
        else
            PQclear(r);
        return ERR_OK;
    }
    if (!r) {
        if (db->conn && PQstatus(db->conn) == CONNECTION_OK && mono_ms() < deadline_of(db))
            set_err(db, what, PQerrorMessage(db->conn)); /* nothing was sent */
        db_drop(db);
        return ERR_UNAVAILABLE;
    }
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    snprintf(db->state, sizeof db->state, "%s", state ? state : "");
    set_err(db, what, PQresultErrorMessage(r));
    enum err e = classify(db->conn, state);
    PQclear(r);
    if (e == ERR_UNAVAILABLE)
        db_drop(db);
    return e;
}

static enum err exec_prepared(struct db *db, const char *name, int nparams,
                              const char *const *values, const int *lengths, const int *formats,
                              PGresult **res)
{
    enum err e = db_connect(db);
    if (e != ERR_OK)
        return e;
    int sent = PQsendQueryPrepared(db->conn, name, nparams, values, lengths, formats, 0);
    return check_result(db, sent ? await(db, deadline_of(db)) : NULL, name, res);
}

enum err db_exec(struct db *db, const char *name, int nparams,
                 const char *const *params, PGresult **res)
{
    return exec_prepared(db, name, nparams, params, NULL, NULL, res);
}

enum err db_exec_params(struct db *db, const char *name, int nparams,
                        const struct db_param *params, PGresult **res)
{
    const char *values[DB_MAX_PARAMS];
    int lengths[DB_MAX_PARAMS], formats[DB_MAX_PARAMS];
    if (nparams > DB_MAX_PARAMS) {
        db->state[0] = '\0';
        set_err(db, name, "more parameters than DB_MAX_PARAMS");
        return ERR_DB;
    }
    for (int i = 0; i < nparams; i++) {
        values[i] = params[i].data;
        lengths[i] = params[i].len < 0 ? 0 : params[i].len;
        formats[i] = params[i].len >= 0;
    }
    return exec_prepared(db, name, nparams, values, lengths, formats, res);
}

enum err db_query(struct db *db, const char *sql, int nparams,
                  const char *const *params, PGresult **res)
{
    enum err e = db_connect(db);
    if (e != ERR_OK)
        return e;
    int sent = PQsendQueryParams(db->conn, sql, nparams, NULL, params, NULL, NULL, 0);
    return check_result(db, sent ? await(db, deadline_of(db)) : NULL, "query", res);
}

enum err db_exec_sql(struct db *db, const char *sql)
{
    enum err e = db_connect(db);
    if (e != ERR_OK)
        return e;
    int sent = PQsendQuery(db->conn, sql);
    return check_result(db, sent ? await(db, deadline_of(db)) : NULL, sql, NULL);
}

const char *db_sqlstate(const struct db *db)
{
    return db->state;
}

enum err db_begin(struct db *db)
{
    PGresult *r = NULL;
    db->txid[0] = '\0';
    enum err e = db_connect(db);
    if (e == ERR_OK) /* one round trip: the last result is the id's */
        e = check_result(db, PQsendQuery(db->conn, "BEGIN; SELECT txid_current()")
                                 ? await(db, deadline_of(db)) : NULL, "BEGIN", &r);
    if (e == ERR_OK)
        snprintf(db->txid, sizeof db->txid, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    if (e != ERR_OK)
        db_rollback(db);
    return e;
}

/* Whether the writes are there: ERR_OK yes, ERR_RETRY no, ERR_UNAVAILABLE
 * when the question got no answer. */
static enum err run_check(struct db *db, const struct db_check *check)
{
    const char *params[] = {check->param};
    PGresult *r = NULL;
    enum err e = db_query(db, check->sql, 1, params, &r);
    e = e != ERR_OK ? ERR_UNAVAILABLE : PQgetvalue(r, 0, 0)[0] == 't' ? ERR_OK : ERR_RETRY;
    PQclear(r);
    return e;
}

/* The fate of transaction txid, asked on a fresh connection until it is
 * known or the deadline passes: ERR_OK committed, ERR_RETRY aborted,
 * ERR_UNAVAILABLE unknown. A backend that was cut mid-commit may still be
 * finishing it ("in progress"): ask again.
 * The status of the id alone is not enough: a transaction whose WAL never
 * reached the disk before a crash leaves no trace of its id, and after the
 * restart Postgres hands the id out again, so "committed" may be said of
 * another transaction (a helper's probe had 201 for an order never
 * written). With a check, only the writes, seen, say it committed; and it
 * is found aborted only when the status says "aborted", or the id is one
 * the server has not handed out yet ("in the future": lost in a crash).
 * "committed" without the writes in sight is no verdict: Postgres 15 marks
 * a transaction committed before other sessions can see it (while it waits
 * for a synchronous standby, say), and a reused id is said committed too;
 * so it is asked again, and stays in doubt at the deadline. */
static enum err settle(struct db *db, const char *txid, const struct db_check *check,
                       int64_t deadline)
{
    const char *params[] = {txid};
    db->cut_grace_ms = SETTLE_GRACE_MS;
    int64_t cut = cut_of(db);
    if (cut && cut < deadline)
        deadline = cut;
    for (;;) {
        PGresult *r = NULL;
        enum err e = db_query(db, "SELECT pg_xact_status($1::xid8)", 1, params, &r);
        const char *st = e == ERR_OK ? PQgetvalue(r, 0, 0) : "";
        int lost = e == ERR_OK ? strcmp(st, "aborted") == 0
                               : strcmp(db->state, "22023") == 0; /* "in the future" */
        int over = lost || (e == ERR_OK && strcmp(st, "in progress") != 0);
        if (check) {
            e = over ? run_check(db, check) : ERR_UNAVAILABLE;
            if (e == ERR_RETRY && !lost)
                e = ERR_UNAVAILABLE; /* not in sight yet: see above */
        } else
            e = strcmp(st, "committed") == 0 ? ERR_OK : strcmp(st, "aborted") == 0 ? ERR_RETRY
                                                                                 : ERR_UNAVAILABLE;
        PQclear(r);
        if (e != ERR_UNAVAILABLE || mono_ms() + SETTLE_POLL_MS >= deadline) {
            db->cut_grace_ms = 0;
            return e;
        }
        sleep_ms(SETTLE_POLL_MS);
    }
}

enum err db_commit(struct db *db, const struct db_check *check)
{
    char txid[sizeof db->txid];
    snprintf(txid, sizeof txid, "%s", db->txid);
    db->txid[0] = '\0';
    int64_t deadline = deadline_of(db);
    /* The transaction must still be open on the connection it began on. One
     * whose connection was dropped meanwhile went with it (the server aborts
     * it: it can no longer commit), and a failed statement aborted it; a
     * COMMIT on a fresh connection, or on an aborted transaction, answers
     * "success" with nothing written (the review). */
    if (!db->conn || PQstatus(db->conn) != CONNECTION_OK ||
        PQtransactionStatus(db->conn) != PQTRANS_INTRANS) {
        set_err(db, "COMMIT", "the transaction was lost or had failed before its COMMIT");
        db_rollback(db);
        return ERR_RETRY;
    }
    enum err e = ERR_OK;
    if (failpoint_on(FP_DB_COMMIT_LOST))
        shutdown(PQsocket(db->conn), SHUT_RDWR); /* gone before COMMIT: the server aborts */
    if (!PQsendQuery(db->conn, "COMMIT")) {
        set_err(db, "COMMIT", PQerrorMessage(db->conn));
        db_drop(db);
        e = ERR_UNAVAILABLE;
    }
    if (e == ERR_OK && PQflush(db->conn) == 0 && failpoint_on(FP_DB_COMMIT_CUT))
        shutdown(PQsocket(db->conn), SHUT_RDWR); /* COMMIT is on its way, the answer is lost */
    PGresult *r = NULL;
    if (e == ERR_OK)
        e = check_result(db, await(db, deadline), "COMMIT", &r);
    if (e == ERR_OK && strcmp(PQcmdStatus(r), "COMMIT") != 0)
        e = ERR_RETRY; /* "ROLLBACK": the transaction had failed */
    PQclear(r);
    if (e != ERR_UNAVAILABLE || !txid[0])
        return e;
    /* In doubt: the server may have committed before the connection went. */
    char why[200];
    snprintf(why, sizeof why, "%.199s", db->err);
    e = settle(db, txid, check, deadline + kind_ms(db->kind));
    if (e == ERR_UNAVAILABLE) {
        snprintf(db->err, sizeof db->err, "commit in doubt (%s), still unknown", why);
        e = ERR_IN_DOUBT;
    }
    return e;
}

long db_delete_older(struct db *db, const char *name, int64_t age_ms, long chunk, int rounds)
{
    char ms[32];
    snprintf(ms, sizeof ms, "%lld", (long long)age_ms);
    const char *params[] = {ms};
    long total = 0, n = chunk;
    for (int i = 0; i < rounds && n >= chunk; i++) {
        PGresult *res = NULL;
        n = db_exec(db, name, 1, params, &res) == ERR_OK ? strtol(PQcmdTuples(res), NULL, 10) : 0;
        total += n;
        PQclear(res);
    }
    return total;
}

void db_rollback(struct db *db)
{
    if (db->conn && PQtransactionStatus(db->conn) != PQTRANS_IDLE)
        db_exec_sql(db, "ROLLBACK");
}

const char *db_errmsg(const struct db *db)
{
    return db->err;
}

int db_is_connected(const struct db *db)
{
    return db->conn && PQstatus(db->conn) == CONNECTION_OK;
}

int db_ping(const char *url)
{
    const char *keys[] = {"dbname", "connect_timeout", NULL};
    const char *vals[] = {url, "2", NULL};
    int up = PQpingParams(keys, vals, 1) == PQPING_OK;
    if (up)
        atomic_store(&seen_up_ms, mono_ms());
    return up;
}

struct db_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct db **free_list;
    int nfree, n;
};

void db_pool_new(const char *url, const char *role, const struct db_stmt *stmts, size_t nstmts,
                 int n, struct db_pool **out)
{
    struct db_pool *p = xcalloc(1, sizeof *p);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->free_list = xcalloc((size_t)n, sizeof *p->free_list);
    for (int i = 0; i < n; i++) {
        db_new(url, role, stmts, nstmts, &p->free_list[i]);
        db_set_kind(p->free_list[i], DB_REQUEST);
    }
    p->n = p->nfree = n;
    *out = p;
}

void db_pool_free(struct db_pool *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->nfree; i++)
        db_free(p->free_list[i]);
    free(p->free_list);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}

struct db *db_pool_acquire(struct db_pool *p)
{
    pthread_mutex_lock(&p->mu);
    while (p->nfree == 0)
        pthread_cond_wait(&p->cv, &p->mu);
    struct db *db = p->free_list[--p->nfree];
    pthread_mutex_unlock(&p->mu);
    return db;
}

void db_pool_release(struct db_pool *p, struct db *db)
{
    db_rollback(db); /* a handler that bailed out mid-transaction leaves none open */
    pthread_mutex_lock(&p->mu);
    p->free_list[p->nfree++] = db;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}
