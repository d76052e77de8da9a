/* db.c - a Postgres connection with lazy (re)connect, capped backoff and
 * per-connection prepared statements; and a blocking pool of them.
 * Owns the PGconn and the translation of libpq statuses into enum err;
 * not the SQL (callers pass statement tables) nor logging. */
#include "db.h"
#include "util.h"

#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 2000

struct db {
    PGconn *conn;
    char *url;
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

void db_new(const char *url, const struct db_stmt *stmts, size_t nstmts, struct db **out)
{
    struct db *db = xcalloc(1, sizeof *db);
    db->url = xstrdup(url);
    db->stmts = stmts;
    db->nstmts = nstmts;
    *out = db;
}

static void db_drop(struct db *db)
{
    PQfinish(db->conn);
    db->conn = NULL;
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

static PGconn *open_conn(const char *url)
{
    const char *keys[] = {"dbname", "connect_timeout", "application_name", NULL};
    const char *vals[] = {url, "3", "outbox-service", NULL};
    return PQconnectdbParams(keys, vals, 1);
}

/* Server notices (e.g. WARNING) are not ours to print on stderr: logs are JSON. */
static void ignore_notice(void *arg, const char *message)
{
    (void)arg, (void)message;
}

static enum err prepare_all(struct db *db)
{
    for (size_t i = 0; i < db->nstmts; i++) {
        PGresult *r = PQprepare(db->conn, db->stmts[i].name, db->stmts[i].sql, 0, NULL);
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!ok)
            set_err(db, db->stmts[i].name, PQresultErrorMessage(r));
        PQclear(r);
        if (!ok)
            return PQstatus(db->conn) == CONNECTION_OK ? ERR_DB : ERR_UNAVAILABLE;
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

enum err db_connect(struct db *db)
{
    if (db->conn && PQstatus(db->conn) == CONNECTION_OK && !idle_conn_dead(db->conn))
        return ERR_OK;
    db_drop(db);
    int64_t now = mono_ms();
    if (now < db->retry_at_ms && atomic_load(&seen_up_ms) <= db->failed_at_ms)
        return ERR_UNAVAILABLE;
    db->conn = open_conn(db->url);
    enum err e = ERR_UNAVAILABLE;
    if (PQstatus(db->conn) != CONNECTION_OK)
        set_err(db, "connect", PQerrorMessage(db->conn));
    else {
        PQsetNoticeProcessor(db->conn, ignore_notice, NULL);
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

/* Classifies a finished result; keeps it in *res on success. */
static enum err check_result(struct db *db, PGresult *r, const char *what, PGresult **res)
{
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        if (res)
            *res = r;
        else
            PQclear(r);
        return ERR_OK;
    }
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    set_err(db, what, r ? PQresultErrorMessage(r) : PQerrorMessage(db->conn));
    enum err e = classify(db->conn, state);
    PQclear(r);
    if (e == ERR_UNAVAILABLE)
        db_drop(db);
    return e;
}

enum err db_exec(struct db *db, const char *name, int nparams,
                 const char *const *params, PGresult **res)
{
    enum err e = db_connect(db);
    if (e != ERR_OK)
        return e;
    PGresult *r = PQexecPrepared(db->conn, name, nparams, params, NULL, NULL, 0);
    return check_result(db, r, name, res);
}

enum err db_query(struct db *db, const char *sql, int nparams,
                  const char *const *params, PGresult **res)
{
    enum err e = db_connect(db);
    if (e != ERR_OK)
        return e;
    PGresult *r = PQexecParams(db->conn, sql, nparams, NULL, params, NULL, NULL, 0);
    return check_result(db, r, "query", res);
}

enum err db_exec_sql(struct db *db, const char *sql)
{
    enum err e = db_connect(db);
    if (e != ERR_OK)
        return e;
    return check_result(db, PQexec(db->conn, sql), sql, NULL);
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
        PQclear(PQexec(db->conn, "ROLLBACK"));
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

void db_pool_new(const char *url, const struct db_stmt *stmts, size_t nstmts,
                 int n, struct db_pool **out)
{
    struct db_pool *p = xcalloc(1, sizeof *p);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->free_list = xcalloc((size_t)n, sizeof *p->free_list);
    for (int i = 0; i < n; i++)
        db_new(url, stmts, nstmts, &p->free_list[i]);
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
