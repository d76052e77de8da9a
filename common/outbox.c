/* outbox.c - the relay loop: wait, claim, publish, mark; gauges. Pruning
 * published rows is retention.c's, on its own thread.
 * Owns the relay and marker threads, their three Postgres connections and the
 * outbox rows' life (pending -> published, i.e. moved to outbox_published |
 * dead); not the rows' content. Three batches overlap, each on its own
 * connection: while the marker marks and commits batch N, batch N+1's acks
 * come in and the relay claims batch N+2. The gauges read from the table
 * have their own thread and connection: a relay waiting for acks (a broker
 * that hangs, up to PUBLISH_TIMEOUT_MS a batch) must not leave them stale
 * while the rows pile up. */
#include "outbox.h"
#include "backoff.h"
#include "db.h"
#include "failpoint.h"
#include "log.h"
#include "metrics.h"
#include "trace.h"
#include "util.h"
#include "waker.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PUBLISH_TIMEOUT_MS 5000
#define RETRY_BASE_MS 100
#define RETRY_CAP_MS 60000   /* at most half the duplicate window: a re-send is deduplicated */
/* A failure that passes with time (no server, no JetStream answer, a leader
 * election) is the broker's, not the row's: such rows are tried again at
 * least this often, so that publishing resumes within it once the broker is
 * back, however long the outage lasted. Permanent refusals back off to
 * RETRY_CAP_MS on their way to dead. */
#define OUTAGE_RETRY_CAP_MS 2000
#define STATS_EVERY_MS 1000
#define DRAIN_MAX_PASSES 1000 /* bounds one wake-up's work so stop stays prompt */
#define HEAD_EVERY 16         /* passes of a drain between claims from the head */
#define MARKERS 2             /* batches marked at once: a mark costs more than a claim and a send */
#define FROM_HEAD "-9223372036854775808" /* below every id */
#define REFILED_MAX 1024 /* events stored by a publish whose filing was undone, remembered */
/* A pass starts at least this long after the one before ended, and the
 * notifies that came meanwhile are forgotten: that pass covers their rows.
 * Under a steady flow of commits, each notifying, a pass otherwise starts
 * at once for the one or two rows committed during the last (or for none:
 * rows the pass under way took), and its round trips and wake-ups, not its
 * rows, are its cost: the relays kept the cores busy and every other part
 * waited for one. 1.5 ms is about what a pass takes at 2,000 orders/s (a
 * claim and the acks); end to end there, p99 27-30 -> 21 ms (ARCHITECTURE,
 * "A relay pass starts..."). Commits further apart wait for none. */
#define PASS_GAP_US 1500

static const struct db_stmt relay_stmts[] = {
    /* $2: past the rows this drain claimed already (FROM_HEAD at its start, and
     * every HEAD_EVERY passes). The scan then starts after them, not at the
     * head of the index, where it would step over the batches in flight
     * (locked) and the ones just moved out (dead until vacuumed): a fifth
     * less Postgres CPU per event in a drain. A row committed late under a
     * lower id is claimed when a pass starts from the head again. */
    {"claim",
     "SELECT id, event_id, subject, event_type, payload, traceparent, "
     "extract(epoch FROM created_at), attempts, aggregate_id FROM outbox "
     "WHERE status = 'pending' AND next_attempt_at <= now() AND id > $2::bigint "
     "ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"},
    /* Acknowledged rows leave the outbox, filed in outbox_published (see
     * migration 010: a delete touches no index of the outbox, where an
     * in-place mark rewrote the row into all of them). published_at is when
     * the mark began, with every ack of the batch in hand. A plain INSERT,
     * not an upsert: an upsert's speculative insertion cost a sixth of the
     * relay's Postgres time, on every row, for the rare event filed already
     * (see unfile). */
    {"mark_published",
     "WITH d AS (DELETE FROM outbox o USING unnest($1::bigint[], $2::bigint[]) AS v(id, seq) "
     "  WHERE o.id = v.id RETURNING o.*, v.seq) "
     "INSERT INTO outbox_published (id, event_id, subject, event_type, payload, traceparent, "
     "  aggregate_id, attempts, created_at, published_at, stream_seq) "
     "SELECT id, event_id, subject, event_type, payload, traceparent, aggregate_id, attempts, "
     "  created_at, statement_timestamp(), seq FROM d"},
    /* An event sent again (an operator's re-send, the recovery's) while its
     * earlier publish is still filed: that earlier row goes, so that the
     * batch, published again, files the new one. One row per event. */
    {"unfile",
     "DELETE FROM outbox_published p USING outbox o "
     "WHERE o.id = ANY($1::bigint[]) AND p.event_id = o.event_id"},
    /* OUTBOX_RETENTION=0: nothing is kept, so nothing is filed. */
    {"mark_published_unkept",
     "DELETE FROM outbox WHERE id = ANY($1::bigint[])"},
    {"mark_failed",
     "UPDATE outbox SET attempts = attempts + 1, last_error = v.err, "
     "next_attempt_at = now() + v.delay_ms * interval '1 millisecond', "
     "status = CASE WHEN v.permanent AND attempts + 1 >= $5::int THEN 'dead' ELSE 'pending' END "
     "FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bool[]) "
     "AS v(id, err, delay_ms, permanent) WHERE outbox.id = v.id "
     "RETURNING outbox.event_id, outbox.status = 'dead', outbox.aggregate_id"},
    /* Not yet acknowledged = pending, and dead (given up on; counted apart
     * too). Each part reads one partial index; the oldest row is the lowest
     * id, close enough to the oldest commit for an age gauge. */
    {"stats",
     "SELECT (SELECT count(*) FROM outbox WHERE status = 'pending'), "
     "(SELECT count(*) FROM outbox WHERE status = 'dead'), "
     "coalesce(extract(epoch FROM now() - least("
     "(SELECT created_at FROM outbox WHERE status = 'pending' ORDER BY id LIMIT 1), "
     "(SELECT created_at FROM outbox WHERE status = 'dead' ORDER BY id LIMIT 1))), 0)"},
};

/* One claimed batch: its connection holds the rows' locks until the
 * transaction that marks them commits. */
struct batch {
    struct db *db;
    PGresult *res;
    struct broker_out *msgs;
    int claimed, acked;
};

/* A marker thread: marks and commits the batches handed to it, one at a time. */
struct marker {
    struct relay *r;
    pthread_t thread;
    struct db *db;           /* the last batch handed to it is on it (relay thread's) */
    struct batch *to_mark;   /* handed to it; NULL when it is idle (under r->mu) */
    enum err err;            /* how the last batch it marked ended (under r->mu) */
};

/* An event stored by a publish whose filing was undone (note_stored). */
struct refiled {
    char event_id[UUID_STR_LEN]; /* "" once its next ack came, or it expired */
    int64_t until_ms;            /* past the duplicate window: not a duplicate then */
};

struct relay {
    const struct config *cfg;
    struct broker *broker;
    struct db *db[MARKERS + 2]; /* one per batch: claimed, sent, one per marker */
    struct marker markers[MARKERS];
    int next_marker;         /* the one the next sent batch goes to (relay thread's) */
    pthread_t thread;
    struct waker waker;
    pthread_t gauges_thread;  /* the gauges read from the table, every STATS_EVERY_MS */
    struct waker gauges_waker;
    struct db *gauges_db;
    int last_failed; /* log state changes once, not every pass (marker threads, under mu) */
    struct refiled *refiled; /* see note_stored (under mu) */
    int refiled_live, refiled_next;
    pthread_mutex_t mu;      /* guards the hand-overs */
    pthread_cond_t cv;
    int marker_stop;
};

static struct metric *m_published, *m_duplicates, *m_failures, *m_dead, *m_pending, *m_oldest,
    *m_dead_rows, *m_latency;

void relay_register_metrics(void)
{
    m_published = metrics_register("outbox_published_total",
                                   "Outbox events acknowledged by JetStream.", METRIC_COUNTER, NULL, 0);
    m_duplicates = metrics_register("outbox_duplicates_total",
                                    "Acks saying JetStream already had the event (a re-send).",
                                    METRIC_COUNTER, NULL, 0);
    m_failures = metrics_register("outbox_publish_failures_total",
                                  "Outbox publish attempts that failed.", METRIC_COUNTER, NULL, 0);
    m_dead = metrics_register("outbox_dead_total",
                              "Outbox events given up after permanent rejections.", METRIC_COUNTER, NULL, 0);
    m_pending = metrics_register("outbox_pending", "Outbox rows not yet acknowledged by JetStream.",
                                 METRIC_GAUGE, NULL, 0);
    m_dead_rows = metrics_register("outbox_dead", "Outbox rows given up on (kept, with their error).",
                                   METRIC_GAUGE, NULL, 0);
    m_oldest = metrics_register("outbox_oldest_pending_age_seconds",
                                "Age of the oldest unacknowledged outbox row.", METRIC_GAUGE, NULL, 0);
    m_latency = metrics_register("relay_publish_seconds", "From commit to JetStream ack.",
                                 METRIC_HISTOGRAM, metrics_latency_buckets, metrics_latency_nbuckets);
    struct metric *zero[] = {m_published, m_duplicates, m_failures, m_dead, m_pending, m_oldest,
                             m_dead_rows};
    for (size_t i = 0; i < ARRAY_LEN(zero); i++)
        metric_add(zero[i], "", 0); /* shown as 0 from the start */
}

void outbox_row_add(struct db_columns *c, const char *event_id, const char *subject,
                    const char *event_type, const char *payload, const char *aggregate_id,
                    const char *traceparent)
{
    db_array_uuid(&c->col[0], event_id);
    db_array_text(&c->col[1], subject);
    db_array_text(&c->col[2], event_type);
    db_array_text(&c->col[3], payload);
    db_array_uuid(&c->col[4], aggregate_id);
    db_array_text(&c->col[5], traceparent);
}

/* Rows of one claim, as messages for the broker. Pointers into res. */
static struct broker_out *rows_to_msgs(PGresult *res, int n)
{
    struct broker_out *m = xcalloc((size_t)n, sizeof *m);
    for (int i = 0; i < n; i++) {
        m[i].event_id = PQgetvalue(res, i, 1);
        m[i].subject = PQgetvalue(res, i, 2);
        m[i].event_type = PQgetvalue(res, i, 3);
        m[i].payload = PQgetvalue(res, i, 4);
        m[i].len = (size_t)PQgetlength(res, i, 4);
        m[i].traceparent = PQgetisnull(res, i, 5) ? NULL : PQgetvalue(res, i, 5);
    }
    return m;
}

/* A batch whose filing was undone (unfile) is published again, and
 * JetStream calls the second ack of each event the first one stored a
 * duplicate: an operator's re-send past the window, or each re-drive after
 * a lost store, was counted in outbox_duplicates_total as dropped though it
 * was stored (a helper's probe: 300 re-driven, 302 "duplicates"). The
 * events stored so are remembered here (the last REFILED_MAX, for one
 * duplicate window), and their next ack counts as their publish. Another
 * instance's relay may take the batch instead, and count it a duplicate. */
static void note_stored(struct relay *r, const struct batch *b)
{
    int64_t until = mono_ms() + r->cfg->stream_duplicate_window_ms;
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < b->claimed; i++) {
        if (!b->msgs[i].acked || b->msgs[i].duplicate)
            continue;
        struct refiled *f = &r->refiled[r->refiled_next];
        r->refiled_live += !f->event_id[0];
        snprintf(f->event_id, sizeof f->event_id, "%s", b->msgs[i].event_id);
        f->until_ms = until;
        r->refiled_next = (r->refiled_next + 1) % REFILED_MAX;
    }
    pthread_mutex_unlock(&r->mu);
}

/* Forgets event_id if an undone publish of this relay stored it (1), and
 * the remembered events past their window. Caller holds mu. */
static int forget_refiled(struct relay *r, const char *event_id, int64_t now)
{
    int found = 0;
    for (int k = 0; k < REFILED_MAX && r->refiled_live; k++) {
        struct refiled *f = &r->refiled[k];
        int match = f->event_id[0] && strcmp(f->event_id, event_id) == 0;
        if (f->event_id[0] && (match || f->until_ms < now)) {
            f->event_id[0] = '\0';
            r->refiled_live--;
        }
        found |= match;
    }
    return found;
}

/* How many of the batch's duplicate acks are the publish of an event an
 * undone publish of this relay stored: not duplicates. One lock a batch;
 * nothing read while none is remembered (the steady state). */
static int refiled_acks(struct relay *r, const struct batch *b)
{
    int n = 0;
    pthread_mutex_lock(&r->mu);
    int64_t now = r->refiled_live ? mono_ms() : 0;
    for (int i = 0; i < b->claimed && r->refiled_live; i++)
        if (b->msgs[i].acked)
            n += forget_refiled(r, b->msgs[i].event_id, now) && b->msgs[i].duplicate;
    pthread_mutex_unlock(&r->mu);
    return n;
}

/* The metrics of a batch's acked rows, once their mark committed (a mark
 * that did not commit is made again): how many, commit-to-ack latency as
 * of acked_at, and the acks that said JetStream had the event already. */
static void count_acked(struct relay *r, const struct batch *b, double acked_at)
{
    metric_add(m_published, "", b->acked);
    int duplicates = 0;
    for (int i = 0; i < b->claimed; i++) {
        if (!b->msgs[i].acked)
            continue;
        metric_observe(m_latency, "", acked_at - strtod(PQgetvalue(b->res, i, 6), NULL));
        duplicates += b->msgs[i].duplicate;
    }
    metric_add(m_duplicates, "", duplicates - refiled_acks(r, b));
}

/* The batch's acknowledged rows: out of the outbox, into outbox_published
 * when kept. */
static enum err mark_published(const struct batch *b, int keep)
{
    if (!b->acked)
        return ERR_OK;
    struct buf ids, seqs;
    buf_pg_array_open(&ids);
    buf_pg_array_open(&seqs);
    for (int i = 0; i < b->claimed; i++) {
        if (!b->msgs[i].acked)
            continue;
        buf_pg_array_sep(&ids);
        buf_pg_array_sep(&seqs);
        buf_append(&ids, PQgetvalue(b->res, i, 0), (size_t)PQgetlength(b->res, i, 0));
        buf_int(&seqs, (int64_t)b->msgs[i].seq); /* JetStream sequences stay below 2^63 */
    }
    buf_pg_array_close(&ids);
    buf_pg_array_close(&seqs);
    const char *params[] = {ids.data, seqs.data};
    enum err e = keep ? db_exec(b->db, "mark_published", 2, params, NULL)
                      : db_exec(b->db, "mark_published_unkept", 1, params, NULL);
    buf_cleanup(&ids);
    buf_cleanup(&seqs);
    return e;
}

static int64_t retry_cap_ms(const struct config *c, int permanent)
{
    int64_t half = c->stream_duplicate_window_ms / 2;
    int64_t cap = permanent ? RETRY_CAP_MS : OUTAGE_RETRY_CAP_MS;
    return half < cap ? half : cap;
}

/* The batch's failed rows: attempts + 1, error, backoff; permanent ones may
 * turn dead. *first_err: the first one's error. *dead: the rows marked
 * (event id, dead?, order id), for log_dead() once the transaction
 * committed. */
static enum err mark_failed(struct relay *r, const struct batch *b, const char **first_err,
                            PGresult **dead)
{
    if (b->acked == b->claimed)
        return ERR_OK;
    const struct broker_out *m = b->msgs;
    struct buf ids, errs, delays, perm;
    struct buf *all[] = {&ids, &errs, &delays, &perm};
    for (size_t k = 0; k < ARRAY_LEN(all); k++)
        buf_pg_array_open(all[k]);
    for (int i = 0; i < b->claimed; i++) {
        if (m[i].acked)
            continue;
        int attempt = atoi(PQgetvalue(b->res, i, 7)) + 1;
        buf_pg_array_sep(&ids);
        buf_append(&ids, PQgetvalue(b->res, i, 0), (size_t)PQgetlength(b->res, i, 0));
        buf_pg_array_elem(&errs, m[i].err[0] ? m[i].err : "unknown publish failure");
        buf_pg_array_sep(&delays);
        buf_int(&delays, backoff_delay_ms(attempt, RETRY_BASE_MS, retry_cap_ms(r->cfg, m[i].permanent),
                                          backoff_rand01()));
        buf_pg_array_sep(&perm);
        buf_append(&perm, m[i].permanent ? "t" : "f", 1);
        if (!*first_err)
            *first_err = m[i].err;
    }
    for (size_t k = 0; k < ARRAY_LEN(all); k++)
        buf_pg_array_close(all[k]);
    char max[16];
    snprintf(max, sizeof max, "%d", r->cfg->relay_max_attempts);
    const char *params[] = {ids.data, errs.data, delays.data, perm.data, max};
    enum err e = db_exec(b->db, "mark_failed", 5, params, dead);
    for (size_t k = 0; k < ARRAY_LEN(all); k++)
        buf_cleanup(all[k]);
    return e;
}

/* Counts and logs the events mark_failed() turned dead, once committed: a
 * transaction that did not commit turned none. (A commit whose outcome is
 * unknown, the connection lost on the way, is counted as not made: the
 * counter may miss such an event, never count one twice; the outbox_dead
 * gauge, read from the table, has it either way.) */
static void log_dead(PGresult *dead)
{
    for (int i = 0; dead && i < PQntuples(dead); i++)
        if (PQgetvalue(dead, i, 1)[0] == 't') {
            metric_add(m_dead, "", 1);
            log_with(LOG_ERROR, json_pack("{s:s, s:s?}", "event_id", PQgetvalue(dead, i, 0),
                                          "order_id", PQgetisnull(dead, i, 2) ? NULL
                                                                             : PQgetvalue(dead, i, 2)),
                     "outbox event %s is dead after permanent rejections", PQgetvalue(dead, i, 0));
        }
}

/* One line per published event, with its order and trace: at info when the
 * trace is sampled (the client asked to record it), else debug. */
static void log_published(PGresult *res, const struct broker_out *m, int n)
{
    for (int i = 0; i < n && log_enabled(LOG_DEBUG); i++) {
        struct trace t = {.flags = 0};
        int traced = trace_parse(m[i].traceparent, &t);
        enum log_level lvl = t.flags & 1 ? LOG_INFO : LOG_DEBUG;
        if (!m[i].acked || !log_enabled(lvl))
            continue;
        json_t *f = json_pack("{s:s, s:s, s:I}", "event_id", m[i].event_id, "event_type",
                              m[i].event_type, "stream_seq", (json_int_t)m[i].seq);
        if (!PQgetisnull(res, i, 8))
            json_object_set_new(f, "order_id", json_string(PQgetvalue(res, i, 8)));
        if (traced)
            json_object_set_new(f, "trace_id", json_string(t.trace_id));
        log_with(lvl, f, "published %s to %s%s", m[i].event_type, m[i].subject,
                 m[i].duplicate ? " (JetStream had it already)" : "");
    }
}

/* Logs a change between failing and publishing once, not every batch. The
 * markers share the state: it changes under r->mu, the line is logged after. */
static void note_outcome(struct relay *r, int failed, const char *err)
{
    pthread_mutex_lock(&r->mu);
    int changed = failed != r->last_failed;
    r->last_failed = failed;
    pthread_mutex_unlock(&r->mu);
    if (changed && failed)
        log_warn("relay: publishing failed, will retry with backoff: %s", err);
    else if (changed)
        log_info("relay: publishing recovered");
}

static void batch_free(struct batch *b)
{
    db_rollback(b->db); /* no-op after COMMIT */
    free(b->msgs);
    PQclear(b->res);
    free(b);
}

/* A relay transaction's commit does not wait for the WAL to reach the disk.
 * All it records is that JetStream has the rows (or that sending failed);
 * if Postgres crashes before that reaches the disk, the rows are pending
 * again and are published again. JetStream drops the copy within the
 * duplicate window, and consumers drop it past the window: the same loss
 * as a relay killed between ack and mark. Every other commit (intake,
 * inbox) stays synchronous. */
#define RELAY_BEGIN "BEGIN; SET LOCAL synchronous_commit = off"

static int marked_on(const struct relay *r, const struct db *db)
{
    for (int k = 0; k < MARKERS; k++)
        if (r->markers[k].db == db)
            return 1;
    return 0;
}

/* The connection that no marker's batch nor `busy` (may be NULL) is on. */
static struct db *free_db(const struct relay *r, const struct db *busy)
{
    size_t i = 0;
    while (marked_on(r, r->db[i]) || r->db[i] == busy)
        i++;
    return r->db[i];
}

/* A new batch on a free connection (`sent`, may be NULL, holds another): a
 * transaction opened there, and at most RELAY_BATCH due rows claimed with
 * ids above `after`, which stay locked until it ends. b->claimed is 0 when
 * nothing is due or Postgres failed (logged). */
static struct batch *claim(struct relay *r, const struct batch *sent, const char *after)
{
    struct batch *b = xcalloc(1, sizeof *b);
    b->db = free_db(r, sent ? sent->db : NULL);
    char limit[16];
    snprintf(limit, sizeof limit, "%d", r->cfg->relay_batch);
    const char *params[] = {limit, after};
    enum err e = db_exec_sql(b->db, RELAY_BEGIN);
    if (e == ERR_OK)
        e = db_exec(b->db, "claim", 2, params, &b->res);
    if (e == ERR_OK)
        b->claimed = PQntuples(b->res);
    else if (e != ERR_UNAVAILABLE || db_is_connected(b->db))
        log_warn("relay: %s", db_errmsg(b->db));
    return b; /* nothing claimed: batch_free's rollback ends the transaction */
}

/* Sends a claimed batch; its acks come in while the relay claims the next
 * one. Rows that cannot be sent (no stream, no connection) say why. */
static void send_batch(struct relay *r, struct batch *b)
{
    b->msgs = rows_to_msgs(b->res, b->claimed);
    char why[160];
    if (broker_ensure_stream(r->broker, why, sizeof why) == ERR_OK)
        broker_send(r->broker, b->msgs, (size_t)b->claimed);
    else
        for (int i = 0; i < b->claimed; i++)
            snprintf(b->msgs[i].err, sizeof b->msgs[i].err, "%s", why);
}

/* The batch could not be filed: one of its events was sent again while its
 * earlier publish is still filed. Its transaction is rolled back (its rows
 * pending again), and those earlier rows go: the next pass publishes the
 * batch again (JetStream drops the copies) and files it. */
static void unfile(struct relay *r, struct batch *b)
{
    db_rollback(b->db);
    note_stored(r, b);
    struct buf ids;
    buf_pg_array_open(&ids);
    for (int i = 0; i < b->claimed; i++)
        buf_pg_array_elem(&ids, PQgetvalue(b->res, i, 0));
    buf_pg_array_close(&ids);
    const char *params[] = {ids.data};
    PGresult *res = NULL;
    if (db_exec(b->db, "unfile", 1, params, &res) == ERR_OK)
        log_info("relay: %s event(s) sent again replace their earlier publish in outbox_published",
                 PQcmdTuples(res));
    else
        log_warn("relay: %s", db_errmsg(b->db));
    PQclear(res);
    buf_cleanup(&ids);
}

/* Marks a published batch (acked: published; the rest: backoff or dead)
 * and commits, releasing its rows. Runs on the marker thread. */
static enum err mark_commit(struct relay *r, struct batch *b)
{
    int nfail = b->claimed - b->acked;
    const char *first_err = NULL;
    PGresult *dead = NULL;
    double acked_at = wall_s();
    enum err e = mark_published(b, r->cfg->outbox_retention_ms > 0);
    if (e == ERR_OK)
        e = mark_failed(r, b, &first_err, &dead);
    if (e == ERR_OK)
        e = db_exec_sql(b->db, "COMMIT");
    if (e == ERR_OK) {
        count_acked(r, b, acked_at);
        metric_add(m_failures, "", nfail);
        note_outcome(r, nfail > 0, first_err);
        log_published(b->res, b->msgs, b->claimed);
        log_dead(dead);
    } else if (e == ERR_CONFLICT) {
        unfile(r, b);
    } else if (e != ERR_UNAVAILABLE || db_is_connected(b->db)) {
        log_warn("relay: marking a batch: %s", db_errmsg(b->db)); /* rows pending again */
    }
    PQclear(dead);
    return e;
}

static void *marker_main(void *arg)
{
    struct marker *m = arg;
    struct relay *r = m->r;
    pthread_mutex_lock(&r->mu);
    for (;;) {
        while (!m->to_mark && !r->marker_stop)
            pthread_cond_wait(&r->cv, &r->mu);
        struct batch *b = m->to_mark;
        if (!b)
            break; /* stopping, and nothing left to mark */
        pthread_mutex_unlock(&r->mu);
        enum err e = mark_commit(r, b);
        batch_free(b);
        pthread_mutex_lock(&r->mu);
        m->to_mark = NULL;
        m->err = e;
        pthread_cond_broadcast(&r->cv);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* Waits until the marker has committed (or given up) what it was handed;
 * returns how that ended. */
static enum err marker_wait(struct relay *r, struct marker *m)
{
    pthread_mutex_lock(&r->mu);
    while (m->to_mark)
        pthread_cond_wait(&r->cv, &r->mu);
    enum err e = m->err;
    m->err = ERR_OK;
    pthread_mutex_unlock(&r->mu);
    return e;
}

/* Hands a published batch to an idle marker. */
static void marker_give(struct relay *r, struct marker *m, struct batch *b)
{
    m->db = b->db; /* the relay thread's alone: no lock */
    pthread_mutex_lock(&r->mu);
    m->to_mark = b;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void update_stats(struct relay *r)
{
    PGresult *res = NULL;
    if (db_exec(r->gauges_db, "stats", 0, NULL, &res) == ERR_OK) {
        double pending = strtod(PQgetvalue(res, 0, 0), NULL);
        double dead = strtod(PQgetvalue(res, 0, 1), NULL);
        metric_set(m_pending, "", pending + dead);
        metric_set(m_dead_rows, "", dead);
        metric_set(m_oldest, "", strtod(PQgetvalue(res, 0, 2), NULL));
    }
    PQclear(res);
}

static void *gauges_main(void *arg)
{
    struct relay *r = arg;
    do
        update_stats(r);
    while (waker_wait(&r->gauges_waker, STATS_EVERY_MS));
    return NULL;
}

/* Waits for the acks of the batch sent, then hands it to the next marker
 * in turn once that has committed its batch before. 0 when nothing was
 * acknowledged (the broker is away) or that batch could not be marked
 * (Postgres is): draining stops, the next sweep retries. */
static int land(struct relay *r, struct batch *b)
{
    struct marker *m = &r->markers[r->next_marker];
    r->next_marker = (r->next_marker + 1) % MARKERS;
    broker_wait_acks(r->broker, PUBLISH_TIMEOUT_MS);
    for (int i = 0; i < b->claimed; i++)
        b->acked += b->msgs[i].acked;
    if (b->acked)
        failpoint_hit(FP_RELAY_AFTER_ACK); /* JetStream has them; the rows say pending */
    enum err marked = marker_wait(r, m); /* the marker is idle after it */
    int go = b->acked > 0 && marked == ERR_OK;
    marker_give(r, m, b); /* b is the marker's now */
    return go;
}

/* Where pass n of a drain claims from: past the batch just sent (its ids
 * in order), or from the head at the drain's start and every HEAD_EVERY
 * passes. */
static const char *claim_from(const struct batch *sent, int n)
{
    return sent && n % HEAD_EVERY ? PQgetvalue(sent->res, sent->claimed - 1, 0) : FROM_HEAD;
}

/* Drains what is due: passes continue while they come back full. While the
 * acks of pass k come in, pass k+1 is claimed on another connection, and
 * the markers mark passes k-1 and k-2 on two more (SKIP LOCKED keeps them
 * apart). The last pass is left to a marker too: rows committed meanwhile
 * (a notify) are claimed at once, not after that mark's commit. */
static void drain(struct relay *r)
{
    struct batch *sent = NULL; /* its acks still coming */
    for (int n = 0; n < DRAIN_MAX_PASSES; n++) {
        struct batch *b = claim(r, sent, claim_from(sent, n));
        int go = !sent || land(r, sent);
        sent = NULL;
        if (!go || b->claimed == 0 || waker_stopping(&r->waker)) {
            batch_free(b); /* not sent: its rows are pending again */
            break; /* nothing (more) due, Postgres or NATS away, or stopping */
        }
        send_batch(r, b);
        sent = b;
        if (b->claimed < r->cfg->relay_batch)
            break; /* the rest came after this claim: a notify or the sweep brings it */
    }
    if (sent)
        land(r, sent);
}

static void *relay_main(void *arg)
{
    struct relay *r = arg;
    for (;;) {
        drain(r);
        struct timespec gap_end = mono_deadline_us(PASS_GAP_US);
        if (!waker_wait(&r->waker, r->cfg->relay_sweep_ms) || !waker_hold(&r->waker, &gap_end))
            break; /* stopping; else what commits until gap_end joins the next pass */
    }
    for (int k = 0; k < MARKERS; k++)
        marker_wait(r, &r->markers[k]); /* their last batches marked before the connections close */
    return NULL;
}

static struct relay *relay_new(const struct config *cfg, struct broker *b)
{
    relay_register_metrics();
    struct relay *r = xcalloc(1, sizeof *r);
    r->cfg = cfg;
    r->broker = b;
    r->refiled = xcalloc(REFILED_MAX, sizeof *r->refiled);
    for (size_t i = 0; i < ARRAY_LEN(r->db); i++)
        db_new(cfg->database_url, "relay", relay_stmts, ARRAY_LEN(relay_stmts), &r->db[i]);
    db_new(cfg->database_url, "relay", relay_stmts, ARRAY_LEN(relay_stmts), &r->gauges_db);
    waker_init(&r->waker);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    return r;
}

void relay_start(const struct config *cfg, struct broker *b, struct relay **out)
{
    struct relay *r = relay_new(cfg, b);
    for (int k = 0; k < MARKERS; k++) {
        r->markers[k].r = r;
        thread_start(&r->markers[k].thread, "relay-mark", marker_main, &r->markers[k]);
    }
    thread_start(&r->thread, "relay", relay_main, r);
    waker_thread_start(&r->gauges_waker, &r->gauges_thread, "relay-gauges", gauges_main, r);
    *out = r;
}

void relay_notify(struct relay *r)
{
    if (r)
        waker_notify(&r->waker);
}

void relay_request_stop(struct relay *r)
{
    if (r) {
        waker_stop(&r->waker);
        waker_stop(&r->gauges_waker);
    }
}

void relay_stop(struct relay *r)
{
    if (!r)
        return;
    relay_request_stop(r);
    pthread_join(r->thread, NULL); /* its last drain waited for the markers */
    pthread_mutex_lock(&r->mu);
    r->marker_stop = 1;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    for (int k = 0; k < MARKERS; k++)
        pthread_join(r->markers[k].thread, NULL);
    waker_thread_stop(&r->gauges_waker, r->gauges_thread);
    for (size_t i = 0; i < ARRAY_LEN(r->db); i++)
        db_free(r->db[i]);
    db_free(r->gauges_db);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    waker_cleanup(&r->waker);
    free(r->refiled);
    free(r);
}
