/* db.h - one Postgres connection that reconnects with capped backoff, and a
 * pool of them for request threads.
 *
 * libpq stays inside db.c, migrate.c and the *_store.c modules that read
 * results. Statements are prepared by name on every (re)connection from a
 * table the caller supplies. */
#ifndef COMMON_DB_H
#define COMMON_DB_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>
#include "err.h"

/* SQL text of a timestamptz column as RFC 3339 UTC with microseconds. */
#define DB_RFC3339(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

struct db_stmt {
    const char *name;
    const char *sql;
};

struct db;

/* What a connection is for: its server-side statement and lock timeouts
 * (and the client's own wait, a little longer) follow from it. */
enum db_kind {
    DB_WORK = 0,     /* relay, consumer, retention: limits.work_ms (the default) */
    DB_REQUEST,      /* serving an HTTP request: limits.request_ms */
    DB_UNBOUNDED,    /* migrations: no statement timeout */
};

struct db_limits {
    int64_t request_ms;   /* statement + lock timeout of request connections */
    int64_t work_ms;      /* the same for background work */
    int64_t idle_tx_ms;   /* idle_in_transaction_session_timeout, every connection */
    int64_t tcp_ms;       /* tcp_user_timeout; keepalives notice a dead peer within it */
};

/* Process-wide bounds, set once at start before any connection. Settings
 * the user gave in DATABASE_URL (options, keepalives_*, ...) win. */
void db_configure(const struct db_limits *l);
/* The server settings a session of this kind starts with, as libpq's
 * `options` (-c name=value ...; the URL's own options come after), from
 * db_configure()'s bounds. */
void db_session_options(enum db_kind kind, char *out, size_t n);
/* From now on every wait on any connection ends by at_ms (mono_ms clock):
 * the query is abandoned and its connection dropped. For shutdown. */
void db_cut_at(int64_t at_ms);

/* Creates a handle for url (copied); connects lazily. stmts must outlive it.
 * role names what the connection does, for the server's pg_stat_activity:
 * its application_name is "<program>/<role>" unless DATABASE_URL sets one. */
void db_new(const char *url, const char *role, const struct db_stmt *stmts, size_t nstmts,
            struct db **out);
/* One list of the nlists lists of statements, one after the other, and
 * `spare` zeroed entries at its end (for statements made at run time); *n
 * counts them all. For a connection that runs several modules' statements.
 * Caller frees. */
struct db_stmt *db_stmts_join(const struct db_stmt *const lists[], const size_t counts[],
                              size_t nlists, size_t spare, size_t *n);
void db_free(struct db *db);
/* Sets the kind before the first use (DB_WORK by default). */
void db_set_kind(struct db *db, enum db_kind kind);
/* From now on the client waits for each answer (a connection's prepares
 * too) as for a request's, whatever the session's kind: for work a person
 * waits for on a background session (0: as its kind says again). The
 * server's own statement_timeout stays the session's. */
void db_wait_as_request(struct db *db, int on);

/* Connects if needed. ERR_UNAVAILABLE while the server cannot be reached
 * (retried no sooner than the backoff allows, capped at 2 s). */
enum err db_connect(struct db *db);

/* Runs the prepared statement `name` with text params (NULL = SQL NULL).
 * On ERR_OK *res (if res is non-NULL) is a result the caller PQclear()s.
 * ERR_UNAVAILABLE when the connection is lost (it is dropped and retried
 * later), ERR_RETRY on a transient refusal (deadlock, serialization,
 * lock or statement timeout: retry the transaction), ERR_CONFLICT on a
 * unique violation, ERR_DB otherwise. */
enum err db_exec(struct db *db, const char *name, int nparams,
                 const char *const *params, PGresult **res);
/* A parameter of db_exec_params: text (len < 0; data NULL = SQL NULL) or
 * len bytes in binary form (a db_array.h array). */
struct db_param {
    const char *data;
    int len;
};
#define DB_PARAM_TEXT(s) ((struct db_param){(s), -1})
#define DB_PARAM_BINARY(buf) ((struct db_param){(buf).data, (int)(buf).len})
/* db_exec with params of either form (at most DB_MAX_PARAMS). */
#define DB_MAX_PARAMS 16
enum err db_exec_params(struct db *db, const char *name, int nparams,
                        const struct db_param *params, PGresult **res);
/* Runs an unprepared statement with text params; same contract as db_exec. */
enum err db_query(struct db *db, const char *sql, int nparams,
                  const char *const *params, PGresult **res);
/* Deletes in bounded chunks: runs the prepared statement `name` (one
 * millisecond-age param, deleting at most `chunk` rows per run) again while
 * it deletes a full chunk, at most `rounds` times, so that no run holds
 * locks for long. Returns how many rows it deleted. */
long db_delete_older(struct db *db, const char *name, int64_t age_ms, long chunk, int rounds);
/* Runs literal SQL text, possibly several statements (BEGIN, a migration). */
enum err db_exec_sql(struct db *db, const char *sql);
/* BEGIN, and remember the transaction's id (txid_current()) for db_commit. */
enum err db_begin(struct db *db);
/* How a writer finds its own writes: sql, with param as $1, returns one
 * row with one boolean, true when they are there. */
struct db_check {
    const char *sql, *param;
};
/* COMMIT. If the connection is lost meanwhile, the outcome is settled on a
 * fresh connection: ERR_OK committed, ERR_RETRY aborted (nothing was
 * written: write again), ERR_IN_DOUBT still unknown after the bound (the
 * transaction may commit later: a backend frozen in its COMMIT, a
 * partition after it was sent).
 * pg_xact_status says when the transaction is over; whether it committed,
 * `check` says when given (see db.c, settle), else that status.
 * Failpoints: db_commit_cut cuts the socket right after COMMIT is sent
 * (committed, the answer lost); db_commit_lost just before it (aborted). */
enum err db_commit(struct db *db, const struct db_check *check);
/* SQLSTATE of the last error ("" if none), e.g. "40P01" deadlock. */
const char *db_sqlstate(const struct db *db);
/* Rolls back whatever transaction is open; harmless when none is. */
void db_rollback(struct db *db);

/* The last error's text (static storage in db; valid until the next call). */
const char *db_errmsg(const struct db *db);
/* True when the handle currently has a live connection. */
int db_is_connected(const struct db *db);

/* Pool of n handles for worker threads: acquire blocks until one is free. */
struct db_pool;
void db_pool_new(const char *url, const char *role, const struct db_stmt *stmts, size_t nstmts,
                 int n, struct db_pool **out);
void db_pool_free(struct db_pool *p);
struct db *db_pool_acquire(struct db_pool *p);
void db_pool_release(struct db_pool *p, struct db *db);

/* Quick reachability check of the server at url (no query, no pool). */
int db_ping(const char *url);

#endif
