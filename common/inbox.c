/* inbox.c - the consumer loop: fetch, one transaction per batch (ids
 * recorded set-wise, the handler's effect set-wise), commit, then settle
 * each message with JetStream. A fetcher thread fetches the next batch
 * while CONSUMER_WORKERS worker threads, each on its own connection, apply
 * and commit the batches before it.
 * Owns processed_messages and dead_letters and the threads; the effect of a
 * message belongs to the handler. */
#include "inbox.h"
#include "backoff.h"
#include "event.h"
#include "failpoint.h"
#include "log.h"
#include "metrics.h"
#include "trace.h"
#include "util.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FETCH_WAIT_MS 1000
#define NAK_DELAY_MS 1000
#define RESUBSCRIBE_MS 500
#define BIND_RETRY_CAP_MS 2000 /* as the relay retries a broker outage */
#define DB_REFUSALS_MAX 10 /* an event the database refused this often becomes poison */
#define GAUGES_EVERY_MS 5000
#define CHECK_AFTER_EMPTY 10      /* empty fetches (~10 s) before asking if the consumer exists */

const struct db_stmt inbox_stmts[] = {
    /* Duplicates within one batch are fine too: DO NOTHING skips the second.
     * The ids come sorted: two workers inserting the same ids (a
     * redelivery) wait for each other in one order, never in a cycle. */
    {"inbox_record",
     "INSERT INTO processed_messages (event_id, subject) "
     "SELECT * FROM unnest($1::uuid[], $2::text[]) ON CONFLICT DO NOTHING RETURNING event_id"},
    /* Counts refusals, not deliveries: a redelivery after an ack timeout or
     * an outage does not bring an event closer to the dead letters. */
    {"inbox_refused",
     "INSERT INTO inbox_refusals (event_id, refusals, last_error) VALUES ($1::uuid, 1, $2) "
     "ON CONFLICT (event_id) DO UPDATE SET refusals = inbox_refusals.refusals + 1, "
     "last_error = EXCLUDED.last_error, updated_at = now() RETURNING refusals"},
    /* No row back: this message was kept already (delivered again). */
    {"inbox_dead",
     "INSERT INTO dead_letters (subject, event_id, body, error, subject_raw, headers, stream_seq, "
     "  stored_ns) VALUES ($1, $2::uuid, $3::bytea, $4, $5::bytea, $6::bytea, $7::bigint, $8::bigint) "
     "ON CONFLICT (stream_seq, stored_ns) WHERE stream_seq IS NOT NULL DO NOTHING RETURNING id"},
    {"inbox_dead_open", "SELECT count(*) FROM dead_letters WHERE reapplied_at IS NULL"},
    /* ids this transaction recorded (fresh) for messages found poison */
    {"inbox_unrecord", "DELETE FROM processed_messages WHERE event_id = ANY($1::uuid[])"},
};

const size_t inbox_nstmts = ARRAY_LEN(inbox_stmts);

enum settle { SETTLE_ACK, SETTLE_TERM, SETTLE_NAK };

/* A worker thread: applies the batches it takes on its own connection. */
struct worker {
    struct inbox *in;
    struct db *db;
    pthread_t thread;
    int up;                 /* its connection counted in in->dbs_up */
    struct slot *slots;     /* for each batch (kept: freeing it each time costs more) */
    int nslots;
};

struct inbox {
    const struct config *cfg;
    struct broker *broker;
    const struct inbox_handler *h;
    struct db_stmt *stmts;
    size_t nstmts;
    struct broker_sub *sub;
    struct metric *m_results, *m_dead_open, *m_lag;
    pthread_t fetcher;
    struct worker *workers;
    int nworkers;
    atomic_int stopping;
    atomic_int dbs_up;      /* workers whose connection is up: fetching makes sense */
    _Atomic int64_t next_gauges_ms; /* taken by whichever worker finds it due */
    int64_t next_lag_ms;    /* fetcher's */
    int empty_fetches;      /* in a row: a deleted consumer also looks like this (fetcher) */
    int bind_failures;      /* refusals in a row to bind the consumer (fetcher) */
    char bind_error[256];   /* the last one logged (fetcher) */
    /* The next batch, handed from the fetcher to a worker. */
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* on the monotonic clock */
    struct broker_in *next;
    int nnext, has_next;
};

/* What became of one message of a batch. */
struct slot {
    char id[UUID_STR_LEN];  /* "" when the body has no valid event_id */
    enum settle settle;
    const char *result;     /* metric label, or NULL */
    int fresh;              /* first time this event id is recorded */
    char why[256];          /* poison reason */
    char trace[TRACEPARENT_LEN + 1]; /* child of the message's traceparent (or a new trace) */
    int sampled;            /* the sender asked to record this trace: log at info */
    char order_id[UUID_STR_LEN];
};

static void label(char *out, size_t n, const char *result)
{
    snprintf(out, n, "result=\"%s\"", result);
}

static void mark_poison(struct slot *sl, const char *why)
{
    sl->settle = SETTLE_TERM;
    sl->result = "poison";
    utf8_copy(sl->why, sizeof sl->why, why); /* a text column: a cut character would fail it */
}

/* bytea hex input: any bytes, valid UTF-8 or not. */
static void bytea_hex(struct buf *b, const char *data, size_t n)
{
    buf_append(b, "\\x", 2);
    for (size_t i = 0; i < n; i++)
        buf_printf(b, "%02x", (unsigned char)data[i]);
}

/* The log fields of one message: event_id, order_id, trace_id, result. */
static json_t *msg_fields(const struct slot *sl)
{
    json_t *f = json_object();
    if (sl->trace[0])
        json_object_set_new(f, "trace_id", json_stringn(sl->trace + 3, 32));
    if (sl->id[0])
        json_object_set_new(f, "event_id", json_string(sl->id));
    if (sl->order_id[0])
        json_object_set_new(f, "order_id", json_string(sl->order_id));
    if (sl->result)
        json_object_set_new(f, "result", json_string(sl->result));
    return f;
}

/* Keeps the message as it came: body, exact subject and headers as bytes,
 * and the subject as text (escaped where it is not UTF-8), under the
 * body's event_id when it has one, even if the message was not recorded
 * (its subject is not UTF-8): the reconciliation looks it up by that id. A
 * message kept already (delivered again) is not kept twice: its result is
 * then "duplicate". */
static enum err dead_letter(struct worker *w, const struct broker_in *m, struct slot *sl)
{
    char body_id[UUID_STR_LEN] = "";
    if (!sl->id[0] && utf8_valid(m->data, (size_t)m->len) &&
        event_peek_id(m->data, (size_t)m->len, body_id) != ERR_OK)
        body_id[0] = '\0';
    const char *id = sl->id[0] ? sl->id : body_id[0] ? body_id : NULL;
    char seq[24] = "", stored[24] = "";
    uint64_t stream_seq = 0;
    int64_t stored_ns = 0;
    if (broker_in_stored(m, &stream_seq, &stored_ns)) {
        snprintf(seq, sizeof seq, "%llu", (unsigned long long)stream_seq);
        snprintf(stored, sizeof stored, "%lld", (long long)stored_ns);
    }
    struct buf body, subject, raw_subject, headers, raw_headers;
    buf_init(&body);
    buf_init(&subject);
    buf_init(&raw_subject);
    buf_init(&headers);
    buf_init(&raw_headers);
    bytea_hex(&body, m->data, (size_t)m->len);
    buf_escape_bytes(&subject, m->subject, strlen(m->subject));
    bytea_hex(&raw_subject, m->subject, strlen(m->subject));
    broker_in_headers(m, &raw_headers);
    bytea_hex(&headers, raw_headers.data ? raw_headers.data : "", raw_headers.len);
    const char *params[] = {subject.data, id, body.data, sl->why, raw_subject.data, headers.data,
                            seq[0] ? seq : NULL, stored[0] ? stored : NULL};
    PGresult *res = NULL;
    enum err e = db_exec(w->db, "inbox_dead", 8, params, &res);
    if (e == ERR_OK && PQntuples(res) == 0) {
        sl->result = "duplicate";
        log_info("poison message on %s, stream sequence %s, delivered again: kept in "
                 "dead_letters already", subject.data, seq);
    } else if (e == ERR_OK) {
        log_with(LOG_WARN, msg_fields(sl), "poison message on %s (event %s) kept in "
                 "dead_letters: %s", subject.data, id ? id : "?", sl->why);
    }
    PQclear(res);
    buf_cleanup(&body);
    buf_cleanup(&subject);
    buf_cleanup(&raw_subject);
    buf_cleanup(&headers);
    buf_cleanup(&raw_headers);
    return e;
}

static int by_event_id(const void *a, const void *b, void *slots)
{
    const struct slot *sl = slots;
    int i = *(const int *)a, j = *(const int *)b;
    int c = strcmp(sl[i].id, sl[j].id);
    return c ? c : (i > j) - (i < j); /* copies of one id in batch order */
}

/* Records every valid event id in one statement, in id order; marks which
 * are fresh. */
static enum err record_ids(struct worker *w, const struct broker_in *msgs, struct slot *sl, int n)
{
    int *idx = xcalloc((size_t)n, sizeof *idx), m = 0;
    for (int i = 0; i < n; i++)
        if (sl[i].id[0])
            idx[m++] = i;
    qsort_r(idx, (size_t)m, sizeof *idx, by_event_id, sl);
    struct buf ids, subjects;
    buf_pg_array_open(&ids);
    buf_pg_array_open(&subjects);
    for (int k = 0; k < m; k++) {
        buf_pg_array_elem(&ids, sl[idx[k]].id);
        buf_pg_array_elem(&subjects, msgs[idx[k]].subject);
    }
    buf_pg_array_close(&ids);
    buf_pg_array_close(&subjects);
    const char *params[] = {ids.data, subjects.data};
    PGresult *res = NULL;
    enum err e = db_exec(w->db, "inbox_record", 2, params, &res);
    /* The ids come back in the order sent: each search starts after the
     * last match, so a batch costs m comparisons, not m * m. */
    for (int r = 0, at = 0; e == ERR_OK && r < PQntuples(res); r++) {
        for (int k = 0; k < m; k++) {
            int i = idx[(at + k) % m];
            if (!sl[i].fresh && strcmp(sl[i].id, PQgetvalue(res, r, 0)) == 0) {
                sl[i].fresh = 1; /* one copy of an id repeated in the batch; the others are duplicates */
                at = (at + k + 1) % m;
                break;
            }
        }
    }
    PQclear(res);
    buf_cleanup(&ids);
    buf_cleanup(&subjects);
    free(idx);
    return e;
}

/* Tells the handler (if it wants to know) of the batch's duplicates. */
static enum err tell_duplicates(struct worker *w, const struct broker_in *msgs, struct slot *sl,
                                int n)
{
    int ndups = 0;
    for (int i = 0; i < n; i++)
        ndups += !sl[i].fresh && sl[i].id[0];
    if (!ndups) /* the usual batch: no allocation (batch-sized ones are costly) */
        return ERR_OK;
    struct inbox_item *dups = xcalloc((size_t)ndups, sizeof *dups);
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        if (sl[i].fresh || !sl[i].id[0])
            continue;
        sl[i].result = "duplicate";
        dups[k++] = (struct inbox_item){.msg = &msgs[i], .event_id = sl[i].id,
                                        .traceparent = sl[i].trace};
    }
    const struct inbox_handler *h = w->in->h;
    enum err e = k && h->on_duplicates ? h->on_duplicates(w->db, dups, k, h->ctx) : ERR_OK;
    free(dups);
    return e;
}

/* Hands the fresh messages to the handler and copies its verdicts back. */
static enum err apply_fresh(struct worker *w, const struct broker_in *msgs, struct slot *sl, int n)
{
    struct inbox_item *items = xcalloc((size_t)n, sizeof *items);
    int *at = xcalloc((size_t)n, sizeof *at);
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        if (sl[i].fresh) {
            items[k] = (struct inbox_item){.msg = &msgs[i], .event_id = sl[i].id,
                                           .traceparent = sl[i].trace};
            at[k++] = i;
        }
    }
    enum err e = tell_duplicates(w, msgs, sl, n);
    if (e == ERR_OK && k)
        e = w->in->h->apply(w->db, items, k, w->in->h->ctx);
    for (size_t j = 0; e == ERR_OK && j < k; j++) {
        memcpy(sl[at[j]].order_id, items[j].order_id, sizeof sl[at[j]].order_id);
        if (items[j].poison)
            mark_poison(&sl[at[j]], items[j].why);
        else
            sl[at[j]].result = items[j].result;
    }
    free(items);
    free(at);
    return e;
}

/* A poison message never uses its event id up: the record this batch made
 * of it goes, so that a valid message under that id (the real event after
 * malformed copies, the re-drive's copy rebuilt from the order) is still
 * applied. Copies later in this batch, taken for duplicates, come back
 * (nak). Before, a malformed copy stored ahead of the real event left its
 * order PENDING for good, the real one a "duplicate" (a helper's probe);
 * then two copies still did (an id with a dead letter stayed recorded, to
 * keep a poison sent again and again twice, not once per copy: another
 * probe). Each copy is kept: a dead letter is kept once per message (its
 * stream sequence), and a re-drive sends an order's event again at most
 * once per REDRIVE_AFTER. */
static enum err unrecord_poison(struct worker *w, struct slot *sl, int n)
{
    struct buf ids;
    buf_pg_array_open(&ids);
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (!sl[i].fresh || sl[i].settle != SETTLE_TERM)
            continue;
        buf_pg_array_elem(&ids, sl[i].id);
        k++;
        for (int j = 0; j < n; j++)
            if (!sl[j].fresh && strcmp(sl[j].id, sl[i].id) == 0) {
                sl[j].settle = SETTLE_NAK;
                sl[j].result = NULL;
            }
    }
    buf_pg_array_close(&ids);
    const char *params[] = {ids.data};
    enum err e = k ? db_exec(w->db, "inbox_unrecord", 1, params, NULL) : ERR_OK;
    buf_cleanup(&ids);
    return e;
}

/* The whole batch inside the caller's transaction. */
static enum err apply_batch(struct worker *w, const struct broker_in *msgs, struct slot *sl, int n)
{
    for (int i = 0; i < n; i++)
        sl[i].sampled = trace_continue(msgs[i].traceparent, sl[i].trace);
    for (int i = 0; i < n; i++) {
        /* text columns refuse such bytes: poison at once, never recorded or retried */
        if (!utf8_valid(msgs[i].subject, strlen(msgs[i].subject)))
            mark_poison(&sl[i], "subject is not valid UTF-8 without NUL bytes");
        else if (!utf8_valid(msgs[i].data, (size_t)msgs[i].len))
            mark_poison(&sl[i], "body is not valid UTF-8 without NUL bytes");
        else if (event_peek_id(msgs[i].data, (size_t)msgs[i].len, sl[i].id) == ERR_OK)
            continue;
        else
            mark_poison(&sl[i], "body is not a JSON object with a UUID event_id");
        sl[i].id[0] = '\0';
    }
    enum err e = record_ids(w, msgs, sl, n);
    if (e == ERR_OK)
        e = apply_fresh(w, msgs, sl, n);
    if (e == ERR_OK)
        e = unrecord_poison(w, sl, n);
    for (int i = 0; e == ERR_OK && i < n; i++)
        if (sl[i].settle == SETTLE_TERM)
            e = dead_letter(w, &msgs[i], &sl[i]);
    return e;
}

enum err inbox_apply_one(struct db *db, const struct inbox_handler *h, const char *subject,
                         const char *body, size_t len, const char **result,
                         char *why, size_t whylen)
{
    /* a stack worker lends the batch path its connection and handler */
    struct inbox in = {.h = h};
    struct worker w = {.in = &in, .db = db};
    struct broker_in m = {.subject = subject, .data = body, .len = (int)len};
    struct slot sl = {.settle = SETTLE_ACK};
    trace_continue(NULL, sl.trace);
    if (event_peek_id(body, len, sl.id) != ERR_OK) {
        sl.id[0] = '\0';
        mark_poison(&sl, "body is not a JSON object with a UUID event_id");
    }
    enum err e = sl.id[0] ? record_ids(&w, &m, &sl, 1) : ERR_OK;
    if (e == ERR_OK && sl.id[0])
        e = apply_fresh(&w, &m, &sl, 1);
    *result = sl.result ? sl.result : "duplicate";
    snprintf(why, whylen, "%s", sl.why);
    return e;
}

enum err inbox_apply_tx(struct db *db, const struct inbox_handler *h, const struct broker_in *m,
                        const char **result, char *why, size_t whylen)
{
    struct inbox in = {.h = h};
    struct worker w = {.in = &in, .db = db};
    struct slot sl = {.settle = SETTLE_ACK};
    metrics_tx_end(0); /* as the batches: nothing held from before */
    enum err e = db_exec_sql(db, "BEGIN");
    if (e == ERR_OK)
        e = apply_batch(&w, m, &sl, 1);
    if (e == ERR_OK)
        e = db_exec_sql(db, "COMMIT");
    metrics_tx_end(e == ERR_OK);
    if (e != ERR_OK)
        db_rollback(db);
    else if (h->after_commit)
        h->after_commit(h->ctx);
    *result = sl.result ? sl.result : "duplicate";
    snprintf(why, whylen, "%s", sl.why);
    return e;
}

/* One line per message about an order: its ids and its trace. At info when
 * the sender asked to record the trace (sampled), else debug. */
static void log_consumed(const struct broker_in *m, const struct slot *sl)
{
    enum log_level lvl = sl->sampled ? LOG_INFO : LOG_DEBUG;
    if (log_enabled(lvl))
        log_with(lvl, msg_fields(sl), "consumed a message from %.200s: %s", m->subject,
                 sl->result);
}

static void settle_all(struct inbox *in, struct broker_in *msgs, const struct slot *sl,
                       int n, int committed)
{
    char lbl[64];
    for (int i = 0; i < n; i++) {
        enum settle s = committed ? sl[i].settle : SETTLE_NAK;
        if (s == SETTLE_ACK)
            broker_ack(&msgs[i]);
        else if (s == SETTLE_TERM)
            broker_term(&msgs[i]);
        else
            broker_nak(&msgs[i], NAK_DELAY_MS);
        if (committed && sl[i].result) {
            label(lbl, sizeof lbl, sl[i].result);
            metric_add(in->m_results, lbl, 1);
            log_consumed(&msgs[i], &sl[i]);
        }
    }
}

/* Counts one more refusal of the message's event; returns the count so
 * far, or 0 if it could not be counted (no event id, database away). */
static int count_refusal(struct worker *w, const char *id, const char *why)
{
    const char *params[] = {id, why};
    PGresult *res = NULL;
    int n = 0;
    if (id[0] && db_exec(w->db, "inbox_refused", 2, params, &res) == ERR_OK)
        n = atoi(PQgetvalue(res, 0, 0));
    PQclear(res);
    return n;
}

/* A message the database refuses on its own, again and again, is poison:
 * keep it as a dead letter so it stops coming back. */
static int give_up(struct worker *w, struct broker_in *m)
{
    struct slot sl = {.settle = SETTLE_TERM, .result = "poison"};
    char err[256];
    snprintf(err, sizeof err, "%s", db_errmsg(w->db));
    if (event_peek_id(m->data, (size_t)m->len, sl.id) != ERR_OK)
        sl.id[0] = '\0';
    if (count_refusal(w, sl.id, err) < DB_REFUSALS_MAX)
        return 0;
    snprintf(sl.why, sizeof sl.why, "the database refused it %d times: %.200s",
             DB_REFUSALS_MAX, err);
    if (dead_letter(w, m, &sl) != ERR_OK)
        return 0;
    settle_all(w->in, m, &sl, 1, 1);
    return 1;
}

/* sl: room for n slots (the caller's: a batch's array is kept from one
 * batch to the next, freeing it each time costs more than the batch). */
static void process_batch(struct worker *w, struct broker_in *msgs, int n, struct slot *sl)
{
    struct inbox *in = w->in;
    memset(sl, 0, (size_t)n * sizeof *sl);
    metrics_tx_end(0); /* nothing held from before: a path that missed its end loses, never leaks */
    enum err e = db_exec_sql(w->db, "BEGIN");
    if (e == ERR_OK)
        e = apply_batch(w, msgs, sl, n);
    if (e == ERR_OK)
        e = db_exec_sql(w->db, "COMMIT");
    metrics_tx_end(e == ERR_OK); /* before any retry's transaction */
    if (e == ERR_OK) {
        failpoint_hit(FP_INBOX_AFTER_COMMIT);
        if (in->h->after_commit)
            in->h->after_commit(in->h->ctx);
        settle_all(in, msgs, sl, n, 1);
    } else {
        db_rollback(w->db);
        log_warn("consumer: batch of %d not applied: %s", n, db_errmsg(w->db));
        /* the server answered no, not for want of time: something in the data */
        int refused = e != ERR_UNAVAILABLE && e != ERR_RETRY;
        if (refused && n > 1) /* one bad message must not hold back the others */
            for (int i = 0; i < n; i++)
                process_batch(w, &msgs[i], 1, &(struct slot){.settle = SETTLE_ACK});
        else if (!(refused && give_up(w, &msgs[0])))
            settle_all(in, msgs, sl, n, 0); /* nak: redelivered after NAK_DELAY_MS */
    }
}

/* The gauge behind the dead-letter alert, on the connection of the first
 * worker to find it due (any connected worker: one whose database is away,
 * or that is busy with a long batch, does not leave it stale). */
static void update_dead_gauge(struct worker *w)
{
    struct inbox *in = w->in;
    int64_t now = mono_ms();
    int64_t due = atomic_load(&in->next_gauges_ms);
    if (now < due || !atomic_compare_exchange_strong(&in->next_gauges_ms, &due, now + GAUGES_EVERY_MS))
        return;
    PGresult *res = NULL;
    if (db_exec(w->db, "inbox_dead_open", 0, NULL, &res) == ERR_OK)
        metric_set(in->m_dead_open, "", strtod(PQgetvalue(res, 0, 0), NULL));
    PQclear(res);
}

/* The gauge behind the consumer-lag alert (fetcher thread: its subscription). */
static void update_lag_gauge(struct inbox *in)
{
    int64_t now = mono_ms();
    if (now < in->next_lag_ms)
        return;
    in->next_lag_ms = now + GAUGES_EVERY_MS;
    uint64_t pending = 0;
    if (broker_sub_pending(in->sub, &pending) == ERR_OK)
        metric_set(in->m_lag, "", (double)pending);
}

/* Subscribes once; after a reconnect, or when the server said the consumer
 * is missing, ensures stream and consumer again (the subscription is kept).
 * Returns 0 while the broker is not there. */
static int ensure_sub(struct inbox *in)
{
    char msg[256];
    const struct inbox_handler *h = in->h;
    enum err e = ERR_OK;
    if (!in->sub)
        e = broker_subscribe(in->broker, h->stream, h->durable, h->filter, &in->sub, msg,
                             sizeof msg);
    else if (broker_sub_stale(in->sub))
        e = broker_sub_refresh(in->sub, msg, sizeof msg);
    else
        return 1;
    if (e == ERR_OK || e == ERR_UNAVAILABLE) { /* bound, or no connection: a refusal */
        in->bind_failures = 0;                 /* after it is news again */
        in->bind_error[0] = '\0';
    }
    if (e == ERR_OK) {
        in->empty_fetches = 0;
        log_info("consumer %s bound to stream %s", h->durable, h->stream);
        return 1;
    }
    if (e == ERR_UNAVAILABLE) { /* the reconnect is what to wait for */
        sleep_ms(RESUBSCRIBE_MS);
        return 0;
    }
    /* JetStream answered no (none there, no stream yet, a leader being
     * elected): asked again with capped backoff, logged when the answer
     * changes (it was every 0.5 s, 7,200 lines an hour: a helper's audit). */
    if (strcmp(msg, in->bind_error) != 0) {
        log_warn("consumer %s: %s (asking again with backoff)", h->durable, msg);
        snprintf(in->bind_error, sizeof in->bind_error, "%s", msg);
    }
    if (in->bind_failures < 30)
        in->bind_failures++;
    sleep_ms(backoff_delay_ms(in->bind_failures, RESUBSCRIBE_MS, BIND_RETRY_CAP_MS, backoff_rand01()));
    return 0;
}

/* Whether the durable consumer is still there; one found gone (deleted by
 * hand, or a server that lost its store) is made again on the next round,
 * which a warn line says: its stream is then delivered again from the
 * start, every event a duplicate (a helper's probe: 178 messages replayed
 * after an info line). */
static void check_consumer(struct inbox *in)
{
    if (broker_sub_check(in->sub) == ERR_BROKER)
        log_warn("consumer %s (stream %s) or its stream is gone (deleted, or the server lost "
                 "its store): it is made again on the next fetch, which delivers the stream "
                 "again from its start; what was applied already counts as duplicate",
                 in->h->durable, in->h->stream);
}

/* After a while of empty fetches, asks whether the consumer still exists
 * (if not, the subscription turns stale and the next round ensures it). */
static void note_empty(struct inbox *in)
{
    if (++in->empty_fetches < CHECK_AFTER_EMPTY)
        return;
    in->empty_fetches = 0;
    check_consumer(in);
}

/* Fetched, never applied: back to the server at once, for any consumer. */
static void give_back(struct broker_in *msgs, int n)
{
    for (int i = 0; i < n; i++)
        broker_nak(&msgs[i], 0);
    broker_fetch_free(msgs, n);
}

/* Fetcher thread: waits until a worker has taken the previous
 * batch, then hands it msgs. When stopping, the batch goes back to the
 * server at once (nak) for another consumer. */
static void hand_over(struct inbox *in, struct broker_in *msgs, int n)
{
    pthread_mutex_lock(&in->mu);
    while (in->has_next && !atomic_load(&in->stopping)) {
        struct timespec until = mono_deadline(GAUGES_EVERY_MS);
        if (pthread_cond_timedwait(&in->cv, &in->mu, &until) != 0 && in->has_next) {
            pthread_mutex_unlock(&in->mu); /* the workers are stuck (a lock, a slow disk): */
            update_lag_gauge(in);          /* the lag they leave still shows */
            pthread_mutex_lock(&in->mu);
        }
    }
    int give = !atomic_load(&in->stopping);
    if (give) {
        in->next = msgs;
        in->nnext = n;
        in->has_next = 1;
        pthread_cond_broadcast(&in->cv);
    }
    pthread_mutex_unlock(&in->mu);
    if (!give)
        give_back(msgs, n);
}

/* Worker thread: the next batch, waiting up to ms for it. 0 if none came. */
static int take_batch(struct inbox *in, int64_t ms, struct broker_in **msgs, int *n)
{
    struct timespec until = mono_deadline(ms);
    pthread_mutex_lock(&in->mu);
    while (!in->has_next && !atomic_load(&in->stopping))
        if (pthread_cond_timedwait(&in->cv, &in->mu, &until) != 0)
            break;
    int got = in->has_next;
    if (got) {
        *msgs = in->next;
        *n = in->nnext;
        in->has_next = 0;
        pthread_cond_broadcast(&in->cv); /* the fetcher may fetch the next one */
    }
    pthread_mutex_unlock(&in->mu);
    return got;
}

/* Fetcher thread: whether a worker's connection is up, waiting up to
 * RESUBSCRIBE_MS for one (note_db() wakes it: at start, the first batch is
 * fetched as soon as a worker has connected, not a period later). */
static int wait_for_db(struct inbox *in)
{
    struct timespec until = mono_deadline(RESUBSCRIBE_MS);
    pthread_mutex_lock(&in->mu);
    while (atomic_load(&in->dbs_up) == 0 && !atomic_load(&in->stopping))
        if (pthread_cond_timedwait(&in->cv, &in->mu, &until) != 0)
            break;
    int up = atomic_load(&in->dbs_up) > 0;
    pthread_mutex_unlock(&in->mu);
    return up;
}

static void *fetch_main(void *arg)
{
    struct inbox *in = arg;
    while (!atomic_load(&in->stopping)) {
        /* the lag shows even while Postgres is away (the alert names that case) */
        if (in->sub)
            update_lag_gauge(in);
        /* no fetch while Postgres is away: deliveries would be used up for nothing */
        if (!wait_for_db(in) || !ensure_sub(in))
            continue;
        struct broker_in *msgs = NULL;
        int n = 0;
        enum err e = broker_fetch(in->sub, in->cfg->consumer_batch, FETCH_WAIT_MS, &msgs, &n);
        if (e == ERR_OK) {
            in->empty_fetches = 0;
            hand_over(in, msgs, n);
            continue;
        }
        if (e == ERR_TIMEOUT) {
            note_empty(in);
        } else {
            if (e == ERR_BROKER) /* consumer or stream gone? then ensured next round */
                check_consumer(in);
            sleep_ms(RESUBSCRIBE_MS);
        }
    }
    return NULL;
}

/* Counts the worker's connection in or out of in->dbs_up. */
static void note_db(struct worker *w, int up)
{
    if (up != w->up && atomic_fetch_add(&w->in->dbs_up, up ? 1 : -1) == 0 && up) {
        pthread_mutex_lock(&w->in->mu); /* the first one up: wake the fetcher */
        pthread_cond_broadcast(&w->in->cv);
        pthread_mutex_unlock(&w->in->mu);
    }
    w->up = up;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct inbox *in = w->in;
    while (!atomic_load(&in->stopping)) {
        int up = db_connect(w->db) == ERR_OK;
        note_db(w, up);
        if (!up) {
            sleep_ms(RESUBSCRIBE_MS);
            continue;
        }
        update_dead_gauge(w);
        struct broker_in *msgs = NULL;
        int n = 0;
        if (!take_batch(in, FETCH_WAIT_MS, &msgs, &n))
            continue;
        if (n > w->nslots) {
            w->slots = xrealloc(w->slots, (size_t)n * sizeof *w->slots);
            w->nslots = n;
        }
        process_batch(w, msgs, n, w->slots);
        broker_fetch_free(msgs, n);
    }
    return NULL;
}

static void merge_stmts(struct inbox *in)
{
    const struct db_stmt *lists[] = {inbox_stmts, in->h->stmts};
    const size_t counts[] = {inbox_nstmts, in->h->nstmts};
    in->stmts = db_stmts_join(lists, counts, 2, 0, &in->nstmts);
}

/* Every result label shows in /metrics from the start, at 0. */
static void declare_results(struct metric *m, const char *const *results)
{
    char lbl[64];
    for (const char *const *r = results; *r; r++) {
        label(lbl, sizeof lbl, *r);
        metric_add(m, lbl, 0);
    }
}

/* The consumer's metrics (registered once: a second call finds them). */
static void register_metrics(const struct inbox_handler *h, struct metric **results,
                             struct metric **dead_open, struct metric **lag)
{
    *results = metrics_register(h->metric, h->metric_help, METRIC_COUNTER, NULL, 0);
    declare_results(*results, h->results);
    static const char *const common_results[] = {"duplicate", "poison", NULL};
    declare_results(*results, common_results);
    *dead_open = metrics_register("inbox_dead_letters",
                                  "Dead letters not yet re-applied (GET /admin/dead-letters).",
                                  METRIC_GAUGE, NULL, 0);
    *lag = metrics_register("inbox_consumer_pending",
                            "Messages the durable consumer has not yet acknowledged "
                            "(undelivered + unacknowledged).", METRIC_GAUGE, NULL, 0);
    metric_add(*dead_open, "", 0);
    metric_add(*lag, "", 0);
}

void inbox_register_metrics(const struct inbox_handler *h)
{
    struct metric *results, *dead_open, *lag;
    register_metrics(h, &results, &dead_open, &lag);
}

void inbox_start(const struct config *cfg, struct broker *b, const struct inbox_handler *h,
                 struct inbox **out)
{
    struct inbox *in = xcalloc(1, sizeof *in);
    in->cfg = cfg;
    in->broker = b;
    in->h = h;
    merge_stmts(in);
    in->nworkers = cfg->consumer_workers;
    in->workers = xcalloc((size_t)in->nworkers, sizeof *in->workers);
    for (int i = 0; i < in->nworkers; i++) {
        in->workers[i].in = in;
        db_new(cfg->database_url, "inbox", in->stmts, in->nstmts, &in->workers[i].db);
    }
    register_metrics(h, &in->m_results, &in->m_dead_open, &in->m_lag);
    pthread_mutex_init(&in->mu, NULL);
    cond_init_monotonic(&in->cv);
    for (int i = 0; i < in->nworkers; i++)
        thread_start(&in->workers[i].thread, "inbox-apply", worker_main, &in->workers[i]);
    thread_start(&in->fetcher, "inbox-fetch", fetch_main, in);
    *out = in;
}

void inbox_request_stop(struct inbox *in)
{
    if (!in)
        return;
    pthread_mutex_lock(&in->mu);
    atomic_store(&in->stopping, 1);
    pthread_cond_broadcast(&in->cv);
    pthread_mutex_unlock(&in->mu);
}

void inbox_stop(struct inbox *in)
{
    if (!in)
        return;
    inbox_request_stop(in);
    for (int i = 0; i < in->nworkers; i++)
        pthread_join(in->workers[i].thread, NULL);
    pthread_join(in->fetcher, NULL);
    if (in->has_next)
        give_back(in->next, in->nnext);
    broker_sub_free(in->sub);
    for (int i = 0; i < in->nworkers; i++) {
        db_free(in->workers[i].db);
        free(in->workers[i].slots);
    }
    free(in->workers);
    free(in->stmts);
    pthread_cond_destroy(&in->cv);
    pthread_mutex_destroy(&in->mu);
    free(in);
}
