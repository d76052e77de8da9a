/* retention.c - the pruning thread: expired processed ids, refusal counts
 * and published outbox rows, by bounded chunks on its own connection; and
 * the outbox's vacuum. Owns the deletes, their pace and their counters
 * (rows deleted, seconds spent deleting); not what the rows mean. */
#include "retention.h"
#include "db.h"
#include "metrics.h"
#include "util.h"
#include "waker.h"

#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>

#define EVERY_MS 1000
#define CHUNK 50000          /* rows per DELETE: one short transaction (~0.3 s) */
#define CHUNKS_PER_PASS 10   /* per table: a pass ends soon after a stop */
#define CHUNK_SQL "50000"
/* The outbox is a queue: every row acknowledged is deleted, and until a
 * vacuum removes it, each claim that starts from the head of the pending
 * index steps over it (a bitmap scan, which marks nothing dead: every
 * claim pays again). Autovacuum looks at a database once a minute
 * (autovacuum_naptime), which at 2,000 events a second leaves up to
 * 120,000 such rows; over 20,000 a claim cost Postgres 0.95 ms instead of
 * 0.08. So every pass that finds this many dead rows vacuums the outbox
 * (a few ms), if they are at least as many as the live ones: at most about
 * a second's worth stay, and no vacuum reads more than twice the rows it
 * removes (a backlog being drained, whose claims do not start from the
 * head, is left to autovacuum: vacuumed every second, a 100,000-row drain
 * lost 5-10 %). INDEX_CLEANUP ON: for a table this small, Postgres would
 * otherwise leave the index entries. TRUNCATE false: shrinking the file
 * takes the table's strongest lock, which every insert and claim (and a
 * migration) would queue behind, and leaves a plan made for an empty
 * table. Rows an old snapshot still sees (a long transaction, a backup)
 * stay dead and counted: each vacuum that leaves the count where it was
 * doubles the passes before the next, up to VACUUM_BACKOFF_MAX. */
#define VACUUM_AFTER_DEAD "1000"
#define VACUUM_BACKOFF_MAX 64 /* passes: about a minute, autovacuum's own pace */

/* ctid = ANY(...) deletes by tuple address: no second index lookup per row.
 * A row updated meanwhile has a new address and is not deleted (a refusal
 * counted again). Each table is found by an index on its age column. */
#define PRUNE(table, where)                                                             \
    "DELETE FROM " table " WHERE ctid = ANY(ARRAY(SELECT ctid FROM " table " WHERE "     \
    where " < now() - $1::bigint * interval '1 millisecond' LIMIT " CHUNK_SQL "))"

static const struct db_stmt retention_stmts[] = {
    {"prune_processed", PRUNE("processed_messages", "processed_at")},
    {"prune_refusals", PRUNE("inbox_refusals", "updated_at")},
    {"prune_outbox", PRUNE("outbox_published", "published_at")},
    /* rows marked published in place by an instance from before migration 010 */
    {"prune_outbox_in_place", PRUNE("outbox", "status = 'published' AND published_at")},
};
/* Each statement's metric label and the setting that is its age, in the
 * same order. */
static const struct {
    const char *label;
    size_t age; /* offsetof(struct config, the retention in ms) */
} prunes[] = {
    {"table=\"processed_messages\"", offsetof(struct config, processed_retention_ms)},
    {"table=\"inbox_refusals\"", offsetof(struct config, processed_retention_ms)},
    {"table=\"outbox_published\"", offsetof(struct config, outbox_retention_ms)},
    {"table=\"outbox\"", offsetof(struct config, outbox_retention_ms)},
};
_Static_assert(ARRAY_LEN(prunes) == ARRAY_LEN(retention_stmts), "one label and age per statement");

/* Rows deleted and the time the deletes took: their quotient is the
 * capacity, and the busy share of wall time says how close it runs to it. */
static struct metric *m_deleted, *m_busy;

struct retention {
    const struct config *cfg;
    struct db *db;
    pthread_t thread;
    struct waker waker;
    int vacuum_backoff;      /* passes between vacuums while they remove too little */
    int vacuum_skip;         /* passes left before the next may run */
};

/* One pass over every table. Returns 1 if rows were left behind. */
static int pass(struct retention *r)
{
    int more = 0;
    for (size_t i = 0; i < ARRAY_LEN(retention_stmts) && !waker_stopping(&r->waker); i++) {
        double t0 = mono_s();
        int64_t age = *(const int64_t *)((const char *)r->cfg + prunes[i].age);
        long n = db_delete_older(r->db, retention_stmts[i].name, age, CHUNK, CHUNKS_PER_PASS);
        metric_add(m_busy, "", mono_s() - t0);
        metric_add(m_deleted, prunes[i].label, (double)n);
        more |= n >= (long)CHUNK * CHUNKS_PER_PASS;
    }
    return more;
}

/* Whether the outbox holds VACUUM_AFTER_DEAD dead rows and no more live
 * ones, as counted by the statistics: a busy connection reports its
 * counts every second, one that goes idle within 10 s. */
static int outbox_needs_vacuum(struct retention *r)
{
    PGresult *res = NULL;
    int needs = db_query(r->db, "SELECT n_dead_tup >= " VACUUM_AFTER_DEAD " AND n_dead_tup >= n_live_tup"
                         " FROM pg_stat_user_tables WHERE relid = 'outbox'::regclass", 0, NULL,
                         &res) == ERR_OK &&
                PQntuples(res) == 1 && PQgetvalue(res, 0, 0)[0] == 't';
    PQclear(res);
    return needs;
}

/* SKIP_LOCKED: another instance's vacuum, or autovacuum, is at it already. */
static void vacuum_outbox(struct retention *r)
{
    if (r->vacuum_skip > 0) {
        r->vacuum_skip--;
        return;
    }
    if (!outbox_needs_vacuum(r))
        return;
    db_exec_sql(r->db, "VACUUM (SKIP_LOCKED, INDEX_CLEANUP ON, TRUNCATE false) outbox");
    int stuck = outbox_needs_vacuum(r);
    int doubled = r->vacuum_backoff ? 2 * r->vacuum_backoff : 1;
    r->vacuum_backoff = !stuck ? 0 : doubled < VACUUM_BACKOFF_MAX ? doubled : VACUUM_BACKOFF_MAX;
    r->vacuum_skip = r->vacuum_backoff;
}

static void *retention_main(void *arg)
{
    struct retention *r = arg;
    int more = 0;
    while (waker_wait(&r->waker, more ? 0 : EVERY_MS)) {
        if (db_connect(r->db) != ERR_OK) {
            more = 0;
            continue; /* Postgres is away: try again next period */
        }
        more = pass(r);
        vacuum_outbox(r);
    }
    return NULL;
}

static void register_metrics(void)
{
    m_deleted = metrics_register("retention_deleted_total", "Expired rows deleted, by table.",
                                 METRIC_COUNTER, NULL, 0);
    m_busy = metrics_register("retention_busy_seconds_total",
                              "Time spent deleting expired rows (close to wall time: it is behind).",
                              METRIC_COUNTER, NULL, 0);
    metric_add(m_busy, "", 0); /* shown as 0 from the start */
    for (size_t i = 0; i < ARRAY_LEN(prunes); i++)
        metric_add(m_deleted, prunes[i].label, 0);
}

void retention_start(const struct config *cfg, struct retention **out)
{
    register_metrics();
    struct retention *r = xcalloc(1, sizeof *r);
    r->cfg = cfg;
    db_new(cfg->database_url, "retention", retention_stmts, ARRAY_LEN(retention_stmts), &r->db);
    waker_thread_start(&r->waker, &r->thread, "retention", retention_main, r);
    *out = r;
}

void retention_stop(struct retention *r)
{
    if (!r)
        return;
    waker_thread_stop(&r->waker, r->thread);
    db_free(r->db);
    free(r);
}
