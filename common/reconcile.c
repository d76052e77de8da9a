/* reconcile.c - compares the outbox, the streams and the processed ids over
 * a recent window, periodically and on demand; sets the gauges and logs
 * what it finds; applies what the consumer acknowledged and never recorded.
 * Owns its thread and Postgres connection; reads the streams through
 * broker.c (msg get by sequence, consumer ack floor), and applies through
 * inbox.c. */
#include "reconcile.h"
#include "db.h"
#include "event.h"
#include "log.h"
#include "metrics.h"
#include "util.h"
#include "waker.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIST_MAX 100   /* event ids named in a report list */
#define LOG_MAX 20     /* warn lines per finding per run */
/* A skipped message is applied only if the stream stored it at least this
 * much less than PROCESSED_RETENTION ago: its id, had it been applied, is
 * still among the processed ids, whatever the two servers' clocks say. */
#define REPAIR_MARGIN_MS (10 * 60 * 1000)

/* Published rows of the window ($1 ms back) that carry a sequence. */
#define RC_WINDOW                                                                                  \
    "SELECT event_id, stream_seq, aggregate_id FROM outbox_published WHERE stream_seq IS NOT NULL " \
    "AND published_at > now() - $1::bigint * interval '1 millisecond' "

static const struct db_stmt rc_stmts[] = {
    /* The last $2 rows published within the window, by the time of their
     * mark (its index, read backwards), then by sequence: what a run reads
     * is RECONCILE_SCAN rows, not the window's. Picked by sequence, every
     * row of the window was read and sorted: after a burst of 250,000
     * orders, 350 ms of Postgres CPU a run, and at 2,000 events a second
     * a 15-minute window holds 1.8 million. */
    {"rc_published",
     "SELECT * FROM (" RC_WINDOW "ORDER BY published_at DESC LIMIT $2::int) p ORDER BY stream_seq DESC"},
    /* The $2 highest sequences of the window, whatever their age: only
     * after the sequences went back (see published_rows), since it reads
     * the whole window. */
    {"rc_published_by_seq", RC_WINDOW "ORDER BY stream_seq DESC LIMIT $2::int"},
    /* ids of the stream that no outbox row has (a non-UUID id never matches) */
    {"rc_orphans",
     "SELECT x FROM unnest($1::uuid[]) x "
     "WHERE NOT EXISTS (SELECT 1 FROM outbox_published p WHERE p.event_id = x) "
     "AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.event_id = x)"},
    {"rc_unprocessed",
     "SELECT DISTINCT x FROM unnest($1::uuid[]) x "
     "WHERE NOT EXISTS (SELECT 1 FROM processed_messages p WHERE p.event_id = x) "
     "AND NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.event_id = x)"},
};

struct reconcile {
    const struct config *cfg;
    struct broker *b;
    struct reconcile_streams s;
    struct db *db;
    struct db_stmt *stmts;    /* rc_stmts, then the inbox's and its handler's */
    pthread_mutex_t mu;       /* one run at a time */
    pthread_t thread;
    struct waker waker;
    struct metric *m_missing, *m_dup, *m_orphan, *m_unprocessed, *m_repaired, *m_runs;
    uint64_t last_hi;         /* the highest sequence the last run checked (under mu) */
};

/* The message ids of a stream from lo to hi: ids[i] is lo + i's ("" if
 * there is no message there; NO_ID for a produced stream's message that
 * carries no id, which no event of ours can be). */
#define NO_ID "(none)"
struct scan {
    uint64_t lo, hi;
    char (*ids)[80];
};

/* Whether subject is one the consumer takes: filter exact, or "x.>". */
static int filter_takes(const char *filter, const char *subject)
{
    size_t n = strlen(filter);
    if (n >= 2 && strcmp(filter + n - 2, ".>") == 0)
        return strncmp(subject, filter, n - 1) == 0 && subject[n - 1] != '\0';
    return strcmp(subject, filter) == 0;
}

/* The id a consumed message is processed under: its body's event_id (the
 * contract's key, whatever the header says), for a subject the consumer
 * takes; "" for any other message (another subject, never delivered; a body
 * with no event id, dead-lettered under none), which no id can account for. */
static void taken_id(const struct reconcile *rc, const struct broker_in *m,
                     char id[UUID_STR_LEN])
{
    if (!filter_takes(rc->s.inbox->filter, m->subject) ||
        event_peek_id(m->data, (size_t)m->len, id) != ERR_OK)
        id[0] = '\0';
}

static enum err consumed_id(struct reconcile *rc, uint64_t seq, char id[UUID_STR_LEN])
{
    struct broker_in m;
    enum err e = broker_stream_msg(rc->b, rc->s.inbox->stream, seq, &m, NULL);
    id[0] = '\0';
    if (e == ERR_OK) {
        taken_id(rc, &m, id);
        broker_in_free(&m);
    }
    return e;
}

/* The produced stream's ids as the relay sent them (Nats-Msg-Id), or
 * (consumed) the consumed stream's as the consumer keys them. */
static enum err scan_stream(struct reconcile *rc, int consumed, uint64_t lo, uint64_t hi,
                            struct scan *sc)
{
    size_t n = hi - lo + 1;
    *sc = (struct scan){lo, hi, xcalloc(n, sizeof *sc->ids)};
    for (size_t i = 0; i < n; i++) {
        enum err e = consumed ? consumed_id(rc, lo + i, sc->ids[i])
                              : broker_stream_msg_id(rc->b, rc->s.produced, lo + i, sc->ids[i],
                                                     sizeof sc->ids[i]);
        if (e == ERR_NOT_FOUND)
            sc->ids[i][0] = '\0';
        else if (e != ERR_OK)
            return e;
        else if (!consumed && !sc->ids[i][0]) /* was taken for no message: not orphaned */
            snprintf(sc->ids[i], sizeof sc->ids[i], "%s", NO_ID);
    }
    return ERR_OK;
}

/* The scanned ids that are UUIDs, as a Postgres array; *others counts the
 * messages whose id is not one (no event of ours can have it). */
static char *id_array(const struct scan *sc, long *others)
{
    struct buf a;
    buf_pg_array_open(&a);
    *others = 0;
    for (uint64_t i = 0; i + sc->lo <= sc->hi; i++) {
        if (uuid_valid(sc->ids[i]))
            buf_pg_array_elem(&a, sc->ids[i]);
        else
            *others += sc->ids[i][0] != '\0';
    }
    buf_pg_array_close(&a);
    return a.data;
}

static void stream_label(char *lbl, size_t n, const char *stream)
{
    snprintf(lbl, n, "stream=\"%s\"", stream);
}

static void set_gauge(struct metric *m, const char *stream, double v)
{
    char lbl[96];
    stream_label(lbl, sizeof lbl, stream);
    metric_set(m, lbl, v);
}

/* Runs a one-array statement and lists its first column's values; *all
 * (if not NULL) gets the result (caller clears). */
static enum err ids_from(struct reconcile *rc, const char *stmt, const char *arr, json_t *list,
                         long *count, PGresult **all)
{
    const char *params[] = {arr};
    PGresult *r = NULL;
    enum err e = db_exec(rc->db, stmt, 1, params, &r);
    *count = e == ERR_OK ? PQntuples(r) : 0;
    for (long i = 0; i < *count && i < LIST_MAX; i++)
        json_array_append_new(list, json_string(PQgetvalue(r, (int)i, 0)));
    if (all && e == ERR_OK)
        *all = r;
    else
        PQclear(r);
    return e;
}

static int cmp_id(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The scanned ids that are events' (NO_ID is many messages'), sorted; *k
 * of them. Caller frees. */
static const char **sorted_ids(const struct scan *sc, size_t *k)
{
    size_t n = (size_t)(sc->hi - sc->lo + 1);
    const char **v = xcalloc(n, sizeof *v);
    *k = 0;
    for (size_t i = 0; i < n; i++)
        if (uuid_valid(sc->ids[i]))
            v[(*k)++] = sc->ids[i];
    qsort(v, *k, sizeof *v, cmp_id);
    return v;
}

/* Event ids found at more than one sequence: each extra copy counts. */
static long duplicated(const char **v, size_t k, json_t *list)
{
    long dups = 0;
    for (size_t i = 1; i < k; i++) {
        if (strcmp(v[i], v[i - 1]) != 0)
            continue;
        if (dups++ < LIST_MAX)
            json_array_append_new(list, json_string(v[i]));
    }
    return dups;
}

/* The stream sequence of row i of an rc_published* result. */
static uint64_t row_seq(const PGresult *rows, int i)
{
    return strtoull(PQgetvalue(rows, i, 1), NULL, 10);
}

/* Rows marked published whose event the stream does not hold: not at
 * their sequence, nor at any other of the range (sorted: its ids, k of
 * them). One at another sequence is there for its consumer: after a
 * cluster's failover the ack's sequence can differ from where the stream
 * keeps the event (an HA freeze run: 20 "missing" events, every one of
 * them applied). */
static long missing(const struct reconcile *rc, PGresult *rows, const struct scan *sc,
                    const char **sorted, size_t k, json_t *list)
{
    long n = 0;
    for (int i = 0; i < PQntuples(rows); i++) {
        uint64_t seq = row_seq(rows, i);
        const char *id = PQgetvalue(rows, i, 0);
        if (seq < sc->lo || strcmp(sc->ids[seq - sc->lo], id) == 0 ||
            bsearch(&id, sorted, k, sizeof *sorted, cmp_id))
            continue;
        const char *order = PQgetisnull(rows, i, 2) ? NULL : PQgetvalue(rows, i, 2);
        if (n < LIST_MAX)
            json_array_append_new(list, json_pack("{s:s, s:s?, s:I}", "event_id", id,
                                                  "order_id", order, "stream_seq", (json_int_t)seq));
        if (n++ < LOG_MAX)
            log_with(LOG_WARN, json_pack("{s:s, s:s?, s:I}", "event_id", id, "order_id", order,
                                         "stream_seq", (json_int_t)seq),
                     "reconcile: event %s is marked published but stream %s does not hold it "
                     "at sequence %llu", id, rc->s.produced, (unsigned long long)seq);
    }
    return n;
}

/* The rows of the window to check against the stream, highest sequence
 * first. Normally the newest. If their sequences are lower than the last
 * run's, the stream started its sequences again (deleted and created,
 * restored, a broker that lost its store): rows published before still
 * hold the higher ones and are checked instead, found missing, for as long
 * as they stay in the window. */
static enum err published_rows(struct reconcile *rc, const char *const *params, PGresult **rows)
{
    enum err e = db_exec(rc->db, "rc_published", 2, params, rows);
    if (e != ERR_OK || PQntuples(*rows) == 0)
        return e;
    uint64_t hi = row_seq(*rows, 0);
    if (hi < rc->last_hi) {
        log_warn("reconcile: stream %s's newest sequence %llu is below the %llu checked before: "
                 "checking the highest sequences of the window instead", rc->s.produced,
                 (unsigned long long)hi, (unsigned long long)rc->last_hi);
        PQclear(*rows);
        *rows = NULL;
        e = db_exec(rc->db, "rc_published_by_seq", 2, params, rows);
        if (e != ERR_OK || PQntuples(*rows) == 0)
            return e;
        hi = row_seq(*rows, 0);
    }
    rc->last_hi = hi;
    return e;
}

/* The produced side: published outbox rows of the window against the stream. */
static enum err check_produced(struct reconcile *rc, int64_t window_ms, json_t *rep)
{
    char win[32], lim[16];
    snprintf(win, sizeof win, "%lld", (long long)window_ms);
    snprintf(lim, sizeof lim, "%d", rc->cfg->reconcile_scan);
    const char *params[] = {win, lim};
    PGresult *rows = NULL;
    struct scan sc = {0};
    char *arr = NULL;
    json_t *miss = json_array(), *dup = json_array(), *orph = json_array();
    long nmiss = 0, ndup = 0, norph = 0, others = 0;
    enum err e = published_rows(rc, params, &rows);
    int n = e == ERR_OK ? PQntuples(rows) : 0;
    if (n > 0) {
        uint64_t hi = row_seq(rows, 0), lo = row_seq(rows, n - 1);
        if (hi - lo >= (uint64_t)rc->cfg->reconcile_scan) /* re-sends spread the range */
            lo = hi - (uint64_t)rc->cfg->reconcile_scan + 1;
        e = scan_stream(rc, 0, lo, hi, &sc);
    }
    if (e == ERR_OK && n > 0) {
        size_t k = 0;
        const char **sorted = sorted_ids(&sc, &k);
        nmiss = missing(rc, rows, &sc, sorted, k, miss);
        ndup = duplicated(sorted, k, dup);
        free(sorted);
        arr = id_array(&sc, &others);
        e = ids_from(rc, "rc_orphans", arr, orph, &norph, NULL);
        norph += others;
    }
    if (e == ERR_OK) {
        set_gauge(rc->m_missing, rc->s.produced, (double)nmiss);
        set_gauge(rc->m_dup, rc->s.produced, (double)ndup);
        set_gauge(rc->m_orphan, rc->s.produced, (double)norph);
        if (norph || ndup)
            log_warn("reconcile: stream %s holds %ld events no outbox row has and %ld extra "
                     "copies", rc->s.produced, norph, ndup);
    }
    json_object_set_new(rep, "produced", json_pack(
        "{s:s, s:i, s:I, s:I, s:i, s:o, s:i, s:o, s:i, s:o}", "stream", rc->s.produced,
        "rows_checked", n, "first_seq", (json_int_t)sc.lo, "last_seq", (json_int_t)sc.hi,
        "missing_count", (int)nmiss, "missing", miss, "duplicated_count", (int)ndup,
        "duplicated", dup, "orphaned_count", (int)norph, "orphaned", orph));
    free(arr);
    free(sc.ids);
    PQclear(rows);
    return e;
}

/* Whether a message the stream stored at stored_ns is young enough to be
 * applied now: see REPAIR_MARGIN_MS. */
static int repairable(const struct reconcile *rc, int64_t stored_ns)
{
    double age_ms = (wall_s() - (double)stored_ns / 1e9) * 1000.0;
    return age_ms < (double)(rc->cfg->processed_retention_ms - REPAIR_MARGIN_MS);
}

/* What became of one unprocessed message. */
enum repair_outcome {
    REPAIR_APPLIED,     /* its effect is there now */
    REPAIR_SETTLED,     /* recorded meanwhile (a duplicate), or poison: a dead letter now */
    REPAIR_LEFT,        /* too old to apply safely, or the sequence holds another now */
    REPAIR_FAILED,      /* the database refused it: tried again next run */
    REPAIR_UNAVAILABLE, /* JetStream or Postgres did not answer: the run stops repairing */
};

/* Applies the message at seq (scanned as event id) through the inbox's path
 * (a batch of one, in a transaction of its own), and logs what came of it
 * if `logs`. */
static enum repair_outcome repair_one(struct reconcile *rc, uint64_t seq, const char *id, int logs)
{
    struct broker_in m;
    int64_t ns = 0;
    char got[UUID_STR_LEN] = "", why[256] = "";
    const char *result = "", *left = NULL;
    enum err e = broker_stream_msg(rc->b, rc->s.inbox->stream, seq, &m, &ns);
    int asked_db = 0;
    if (e == ERR_OK) {
        taken_id(rc, &m, got);
        if (strcmp(got, id) != 0)
            left = "its sequence holds another message now";
        else if (!repairable(rc, ns))
            left = "its message is older than PROCESSED_RETENTION allows to apply safely: left "
                   "to an operator";
        else {
            e = inbox_apply_tx(rc->db, rc->s.inbox, &m, &result, why, sizeof why);
            asked_db = 1;
        }
        broker_in_free(&m);
    }
    enum repair_outcome o =
        e == ERR_UNAVAILABLE || (e != ERR_OK && !asked_db) ? REPAIR_UNAVAILABLE
        : e != ERR_OK                                      ? REPAIR_FAILED
        : left                                             ? REPAIR_LEFT
        : strcmp(result, "duplicate") == 0 || strcmp(result, "poison") == 0 ? REPAIR_SETTLED
                                                                            : REPAIR_APPLIED;
    if (!logs)
        return o;
    char what[400];
    if (o == REPAIR_UNAVAILABLE || o == REPAIR_FAILED)
        snprintf(what, sizeof what, "not applied, tried again next run: %s",
                 asked_db ? db_errmsg(rc->db) : "JetStream did not answer");
    else if (left)
        snprintf(what, sizeof what, "%s", left);
    else if (o == REPAIR_APPLIED)
        snprintf(what, sizeof what, "applied now: %s", result);
    else if (strcmp(result, "poison") == 0)
        snprintf(what, sizeof what, "poison, a dead letter now: %s", why);
    else
        snprintf(what, sizeof what, "recorded meanwhile (a delivery, or another instance)");
    log_with(LOG_WARN, json_pack("{s:s, s:s, s:I}", "event_id", id, "stream",
                                 rc->s.inbox->stream, "stream_seq", (json_int_t)seq),
             "reconcile: event %s was acknowledged by consumer %s and never recorded as "
             "processed: %s", id, rc->s.inbox->durable, what);
    return o;
}

/* Applies, in sequence order, the scanned messages whose ids are in
 * unproc (rc_unprocessed's result); *applied and *settled count those it
 * applied and those it found recorded or dead-lettered. */
static void repair(struct reconcile *rc, const struct scan *sc, PGresult *unproc, long *applied,
                   long *settled)
{
    size_t n = (size_t)PQntuples(unproc);
    const char **ids = xcalloc(n ? n : 1, sizeof *ids);
    for (size_t i = 0; i < n; i++)
        ids[i] = PQgetvalue(unproc, (int)i, 0);
    qsort(ids, n, sizeof *ids, cmp_id);
    char *done = xcalloc(n ? n : 1, 1); /* an id at two sequences is applied once */
    long tried = 0;
    *applied = *settled = 0;
    for (uint64_t seq = sc->lo; seq <= sc->hi && !waker_stopping(&rc->waker); seq++) {
        const char *id = sc->ids[seq - sc->lo];
        const char **hit = uuid_valid(id) ? bsearch(&id, ids, n, sizeof *ids, cmp_id) : NULL;
        if (!hit || done[hit - ids])
            continue;
        enum repair_outcome o = repair_one(rc, seq, id, tried++ < LOG_MAX);
        *applied += o == REPAIR_APPLIED;
        *settled += o == REPAIR_SETTLED;
        done[hit - ids] = o == REPAIR_APPLIED || o == REPAIR_SETTLED;
        if (o == REPAIR_UNAVAILABLE)
            break;
    }
    free(done);
    free(ids);
    if (tried > LOG_MAX)
        log_warn("reconcile: %ld events of stream %s were acknowledged by consumer %s and never "
                 "recorded as processed: %ld applied now (the first %d named above)", tried,
                 rc->s.inbox->stream, rc->s.inbox->durable, *applied, LOG_MAX);
}

/* The consumed side: the stream up to the consumer's ack floor against the
 * processed ids (and dead letters: given up on is not lost); `repairs`:
 * applies those it finds (the periodic run). */
static enum err check_consumed(struct reconcile *rc, int repairs, json_t *rep)
{
    struct broker_consumer cs = {0};
    struct scan sc = {0};
    char *arr = NULL;
    json_t *unproc = json_array();
    PGresult *found = NULL;
    long nun = 0, others = 0, fixed = 0, settled = 0;
    enum err e = broker_consumer_state(rc->b, rc->s.inbox->stream, rc->s.inbox->durable, &cs);
    uint64_t floor = cs.ack_floor;
    if (e == ERR_OK && floor > 0) {
        uint64_t lo = floor > (uint64_t)rc->cfg->reconcile_scan
                          ? floor - (uint64_t)rc->cfg->reconcile_scan + 1 : 1;
        e = scan_stream(rc, 1, lo, floor, &sc);
        if (e == ERR_OK) {
            arr = id_array(&sc, &others);
            e = ids_from(rc, "rc_unprocessed", arr, unproc, &nun, &found);
        }
    }
    if (e == ERR_OK && nun && repairs)
        repair(rc, &sc, found, &fixed, &settled);
    if (e == ERR_OK) {
        char lbl[96];
        stream_label(lbl, sizeof lbl, rc->s.inbox->stream);
        set_gauge(rc->m_unprocessed, rc->s.inbox->stream, (double)(nun - fixed - settled));
        metric_add(rc->m_repaired, lbl, (double)fixed);
        for (size_t i = 0; !repairs && i < json_array_size(unproc) && i < LOG_MAX; i++)
            log_with(LOG_WARN, json_pack("{s:O}", "event_id", json_array_get(unproc, i)),
                     "reconcile: an event of stream %s was acknowledged by consumer %s but "
                     "never recorded as processed", rc->s.inbox->stream, rc->s.inbox->durable);
    }
    json_object_set_new(rep, "consumed", json_pack(
        "{s:s, s:s, s:I, s:I, s:i, s:o, s:i}", "stream", rc->s.inbox->stream, "consumer",
        rc->s.inbox->durable,
        "ack_floor", (json_int_t)floor, "first_seq", (json_int_t)sc.lo,
        "unprocessed_count", (int)nun, "unprocessed", unproc, "repaired_count", (int)fixed));
    PQclear(found);
    free(arr);
    free(sc.ids);
    return e;
}

#define AGE_MARGIN_MAX_MS 60000 /* the two servers' clocks, at most */

/* How far back a run looks: RECONCILE_WINDOW, at most OUTBOX_RETENTION
 * (only kept rows can be checked), and short of the stream's max age by a
 * twentieth of it (60 s at most): an event published longer ago than that
 * may have aged out of the stream, as the stream was told to let it. A
 * helper's probe with STREAM_MAX_AGE=40s reported 258 of 350 events
 * "missing", and the critical alert fired for events never lost. */
static int64_t window_ms(const struct config *c)
{
    int64_t w = c->reconcile_window_ms;
    if (c->outbox_retention_ms > 0 && c->outbox_retention_ms < w)
        w = c->outbox_retention_ms;
    int64_t margin = c->stream_max_age_ms / 20;
    int64_t kept = c->stream_max_age_ms - (margin < AGE_MARGIN_MAX_MS ? margin : AGE_MARGIN_MAX_MS);
    return c->stream_max_age_ms > 0 && kept < w ? kept : w;
}

enum err reconcile_run(struct reconcile *rc, int asked, json_t **report)
{
    if (!asked)
        pthread_mutex_lock(&rc->mu);
    else if (mutex_lock_within(&rc->mu, rc->cfg->db_request_timeout_ms) != 0)
        return ERR_RETRY; /* a run under way (the periodic one, or another operator's) */
    int64_t w = window_ms(rc->cfg);
    json_t *rep = json_pack("{s:f}", "window_seconds", (double)w / 1000.0);
    db_wait_as_request(rc->db, asked); /* its connect, prepares and statements */
    enum err e = db_connect(rc->db);
    if (e == ERR_OK)
        e = check_produced(rc, w, rep);
    if (e == ERR_OK && rc->s.inbox)
        e = check_consumed(rc, !asked, rep);
    db_wait_as_request(rc->db, 0);
    metric_add(rc->m_runs, e == ERR_OK ? "result=\"ok\"" : "result=\"failed\"", 1);
    pthread_mutex_unlock(&rc->mu);
    if (e == ERR_OK)
        *report = rep;
    else
        json_decref(rep);
    return e;
}

static void *reconcile_main(void *arg)
{
    struct reconcile *rc = arg;
    while (waker_wait(&rc->waker, rc->cfg->reconcile_every_ms)) {
        json_t *rep = NULL;
        if (reconcile_run(rc, 0, &rep) != ERR_OK)
            log_debug("reconcile: postgres or jetstream did not answer; next run in %lld ms",
                      (long long)rc->cfg->reconcile_every_ms);
        json_decref(rep);
    }
    return NULL;
}

static void register_metrics(struct reconcile *rc)
{
    rc->m_missing = metrics_register("reconcile_missing_events",
        "Events the outbox marked published that the stream does not hold (last check).",
        METRIC_GAUGE, NULL, 0);
    rc->m_dup = metrics_register("reconcile_duplicated_events",
        "Extra copies of one event id in the stream (last check).", METRIC_GAUGE, NULL, 0);
    rc->m_orphan = metrics_register("reconcile_orphaned_events",
        "Events in the stream that no outbox row has (last check).", METRIC_GAUGE, NULL, 0);
    rc->m_unprocessed = metrics_register("reconcile_unprocessed_events",
        "Events the consumer acknowledged but never recorded as processed (last check).",
        METRIC_GAUGE, NULL, 0);
    rc->m_repaired = metrics_register("reconcile_repaired_events_total",
        "Events the consumer acknowledged and never recorded, applied by the reconciliation.",
        METRIC_COUNTER, NULL, 0);
    rc->m_runs = metrics_register("reconcile_runs_total", "Reconciliation checks, by result.",
                                  METRIC_COUNTER, NULL, 0);
    set_gauge(rc->m_missing, rc->s.produced, 0);
    set_gauge(rc->m_dup, rc->s.produced, 0);
    set_gauge(rc->m_orphan, rc->s.produced, 0);
    if (rc->s.inbox) {
        char lbl[96];
        stream_label(lbl, sizeof lbl, rc->s.inbox->stream);
        set_gauge(rc->m_unprocessed, rc->s.inbox->stream, 0);
        metric_add(rc->m_repaired, lbl, 0);
    }
    metric_add(rc->m_runs, "result=\"ok\"", 0);
    metric_add(rc->m_runs, "result=\"failed\"", 0);
}

void reconcile_start(const struct config *cfg, struct broker *b,
                     const struct reconcile_streams *s, struct reconcile **out)
{
    struct reconcile *rc = xcalloc(1, sizeof *rc);
    rc->cfg = cfg;
    rc->b = b;
    rc->s = *s;
    const struct db_stmt *lists[] = {rc_stmts, inbox_stmts, s->inbox ? s->inbox->stmts : NULL};
    const size_t counts[] = {ARRAY_LEN(rc_stmts), inbox_nstmts, s->inbox ? s->inbox->nstmts : 0};
    size_t n = 0;
    rc->stmts = db_stmts_join(lists, counts, s->inbox ? 3 : 1, 0, &n);
    register_metrics(rc);
    db_new(cfg->database_url, "reconcile", rc->stmts, n, &rc->db);
    pthread_mutex_init(&rc->mu, NULL);
    waker_thread_start(&rc->waker, &rc->thread, "reconcile", reconcile_main, rc);
    *out = rc;
}

void reconcile_stop(struct reconcile *rc)
{
    if (!rc)
        return;
    waker_thread_stop(&rc->waker, rc->thread);
    db_free(rc->db);
    free(rc->stmts);
    pthread_mutex_destroy(&rc->mu);
    free(rc);
}
