/* inbox.c - the consumer loop: fetch, one transaction per batch with a
 * savepoint per message, commit, then settle each message with JetStream.
 * Owns processed_messages and dead_letters and the consumer thread; the
 * effect of a message belongs to the handler. */
#include "inbox.h"
#include "event.h"
#include "failpoint.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FETCH_WAIT_MS 1000
#define NAK_DELAY_MS 1000
#define RESUBSCRIBE_MS 500
#define PRUNE_EVERY_MS 60000
#define DB_FAILURE_DELIVERIES 10 /* a message the database keeps refusing becomes poison */

static const struct db_stmt inbox_stmts[] = {
    {"inbox_record",
     "INSERT INTO processed_messages (event_id, subject) VALUES ($1::uuid, $2) "
     "ON CONFLICT DO NOTHING"},
    {"inbox_dead",
     "INSERT INTO dead_letters (subject, event_id, body, error) "
     "VALUES ($1, $2::uuid, $3::bytea, $4)"},
    {"inbox_prune",
     "DELETE FROM processed_messages WHERE event_id IN (SELECT event_id FROM processed_messages "
     "WHERE processed_at < now() - $1::bigint * interval '1 millisecond' LIMIT 1000)"},
};

enum settle { SETTLE_ACK, SETTLE_TERM, SETTLE_NAK };

struct inbox {
    const struct config *cfg;
    struct broker *broker;
    const struct inbox_handler *h;
    struct db *db;
    struct db_stmt *stmts;
    struct broker_sub *sub;
    struct metric *m_results;
    pthread_t thread;
    atomic_int stopping;
    int64_t next_prune_ms;
};

/* What happened to one message of a batch. */
struct outcome {
    enum settle settle;
    const char *result; /* metric label, or NULL */
};

static void label(char *out, size_t n, const char *result)
{
    snprintf(out, n, "result=\"%s\"", result);
}

static void hex_body(struct buf *b, const struct broker_in *m)
{
    buf_append(b, "\\x", 2);
    for (int i = 0; i < m->len; i++)
        buf_printf(b, "%02x", (unsigned char)m->data[i]);
}

static enum err dead_letter(struct inbox *in, const struct broker_in *m, const char *id,
                            const char *why)
{
    struct buf body;
    buf_init(&body);
    hex_body(&body, m);
    const char *params[] = {m->subject, id && id[0] ? id : NULL, body.data, why};
    enum err e = db_exec(in->db, "inbox_dead", 4, params, NULL);
    if (e == ERR_OK)
        log_warn("poison message on %s (event %s) kept in dead_letters: %s", m->subject,
                 id && id[0] ? id : "?", why);
    buf_cleanup(&body);
    return e;
}

static enum err savepoint(struct inbox *in, const char *sql)
{
    return db_exec_sql(in->db, sql);
}

/* Records the id, then applies the effect. ERR_UNAVAILABLE aborts the batch. */
static enum err apply_one(struct inbox *in, const struct broker_in *m, const char *id,
                          struct outcome *out, char *why, size_t whylen)
{
    PGresult *res = NULL;
    const char *params[] = {id, m->subject};
    enum err e = db_exec(in->db, "inbox_record", 2, params, &res);
    int fresh = e == ERR_OK && strcmp(PQcmdTuples(res), "1") == 0;
    PQclear(res);
    if (e != ERR_OK)
        return e;
    if (!fresh) {
        out->result = "duplicate";
        return ERR_OK;
    }
    e = in->h->apply(in->db, m, in->h->ctx, &out->result, why, whylen);
    if (e == ERR_DB && m->delivered >= DB_FAILURE_DELIVERIES) {
        snprintf(why, whylen, "database refused it %d times: %s", DB_FAILURE_DELIVERIES,
                 db_errmsg(in->db));
        e = ERR_POISON;
    }
    return e;
}

static enum err poison(struct inbox *in, const struct broker_in *m, const char *id,
                       const char *why, struct outcome *out)
{
    out->settle = SETTLE_TERM;
    out->result = "poison";
    return dead_letter(in, m, id, why);
}

/* One message under its own savepoint. */
static enum err process_one(struct inbox *in, const struct broker_in *m, struct outcome *out)
{
    char id[UUID_STR_LEN] = "", why[256] = "";
    out->settle = SETTLE_ACK;
    out->result = NULL;
    if (event_peek_id(m->data, (size_t)m->len, id) != ERR_OK)
        return poison(in, m, NULL, "body is not a JSON object with a UUID event_id", out);
    enum err e = savepoint(in, "SAVEPOINT msg");
    if (e == ERR_OK)
        e = apply_one(in, m, id, out, why, sizeof why);
    if (e == ERR_OK)
        return savepoint(in, "RELEASE SAVEPOINT msg");
    if (e == ERR_UNAVAILABLE)
        return e;
    enum err undo = savepoint(in, "ROLLBACK TO SAVEPOINT msg");
    if (undo != ERR_OK)
        return undo;
    if (e == ERR_POISON)
        return poison(in, m, id, why, out);
    log_warn("consumer: event %s failed, redelivering later: %s", id, db_errmsg(in->db));
    out->settle = SETTLE_NAK;
    out->result = NULL;
    return ERR_OK;
}

static void settle_all(struct inbox *in, struct broker_in *msgs, const struct outcome *o,
                       int n, int committed)
{
    char lbl[64];
    for (int i = 0; i < n; i++) {
        enum settle s = committed ? o[i].settle : SETTLE_NAK;
        if (s == SETTLE_ACK)
            broker_ack(&msgs[i]);
        else if (s == SETTLE_TERM)
            broker_term(&msgs[i]);
        else
            broker_nak(&msgs[i], NAK_DELAY_MS);
        if (committed && o[i].result) {
            label(lbl, sizeof lbl, o[i].result);
            metric_add(in->m_results, lbl, 1);
        }
    }
}

static void process_batch(struct inbox *in, struct broker_in *msgs, int n)
{
    struct outcome *o = xcalloc((size_t)n, sizeof *o);
    enum err e = db_exec_sql(in->db, "BEGIN");
    for (int i = 0; i < n && e == ERR_OK; i++)
        e = process_one(in, &msgs[i], &o[i]);
    if (e == ERR_OK)
        e = db_exec_sql(in->db, "COMMIT");
    if (e != ERR_OK) {
        db_rollback(in->db);
        log_warn("consumer: batch of %d not applied, redelivering later: %s", n,
                 db_errmsg(in->db));
    } else {
        failpoint_hit("inbox_after_commit");
        if (in->h->after_commit)
            in->h->after_commit(in->h->ctx);
    }
    settle_all(in, msgs, o, n, e == ERR_OK);
    free(o);
}

static void prune(struct inbox *in)
{
    int64_t now = mono_ms();
    if (now < in->next_prune_ms)
        return;
    in->next_prune_ms = now + PRUNE_EVERY_MS;
    char ms[32];
    snprintf(ms, sizeof ms, "%lld", (long long)in->cfg->processed_retention_ms);
    const char *params[] = {ms};
    for (int i = 0; i < 100; i++) {
        PGresult *res = NULL;
        enum err e = db_exec(in->db, "inbox_prune", 1, params, &res);
        int more = e == ERR_OK && strtol(PQcmdTuples(res), NULL, 10) >= 1000;
        PQclear(res);
        if (!more)
            break;
    }
}

/* Subscribes when needed; returns 0 while the broker is not there. */
static int ensure_sub(struct inbox *in)
{
    if (in->sub)
        return 1;
    char msg[256];
    const struct inbox_handler *h = in->h;
    enum err e = broker_subscribe(in->broker, h->stream, h->durable, h->filter, &in->sub,
                                  msg, sizeof msg);
    if (e == ERR_OK) {
        log_info("consumer %s bound to stream %s", h->durable, h->stream);
        return 1;
    }
    if (e != ERR_UNAVAILABLE)
        log_warn("consumer %s: %s", h->durable, msg);
    sleep_ms(RESUBSCRIBE_MS);
    return 0;
}

static void *inbox_main(void *arg)
{
    struct inbox *in = arg;
    while (!atomic_load(&in->stopping)) {
        prune(in);
        if (!ensure_sub(in))
            continue;
        struct broker_in *msgs = NULL;
        int n = 0;
        enum err e = broker_fetch(in->sub, in->cfg->consumer_batch, FETCH_WAIT_MS, &msgs, &n);
        if (e == ERR_OK)
            process_batch(in, msgs, n);
        else if (e == ERR_BROKER) {
            broker_sub_free(in->sub); /* consumer or stream gone: ensure them again */
            in->sub = NULL;
        } else if (e == ERR_UNAVAILABLE)
            sleep_ms(RESUBSCRIBE_MS);
        broker_fetch_free(msgs, n);
    }
    return NULL;
}

static void merge_stmts(struct inbox *in)
{
    size_t n = ARRAY_LEN(inbox_stmts) + in->h->nstmts;
    in->stmts = xcalloc(n, sizeof *in->stmts);
    memcpy(in->stmts, inbox_stmts, sizeof inbox_stmts);
    memcpy(in->stmts + ARRAY_LEN(inbox_stmts), in->h->stmts, in->h->nstmts * sizeof *in->stmts);
    db_new(in->cfg->database_url, in->stmts, n, &in->db);
}

void inbox_start(const struct config *cfg, struct broker *b, const struct inbox_handler *h,
                 struct inbox **out)
{
    struct inbox *in = xcalloc(1, sizeof *in);
    in->cfg = cfg;
    in->broker = b;
    in->h = h;
    merge_stmts(in);
    in->m_results = metrics_register(h->metric, h->metric_help, METRIC_COUNTER, NULL, 0);
    char lbl[64];
    static const char *const common_results[] = {"duplicate", "poison", NULL};
    for (const char *const *r = h->results; *r; r++)
        label(lbl, sizeof lbl, *r), metric_add(in->m_results, lbl, 0);
    for (const char *const *r = common_results; *r; r++)
        label(lbl, sizeof lbl, *r), metric_add(in->m_results, lbl, 0);
    pthread_create(&in->thread, NULL, inbox_main, in);
    *out = in;
}

void inbox_stop(struct inbox *in)
{
    if (!in)
        return;
    atomic_store(&in->stopping, 1);
    pthread_join(in->thread, NULL);
    broker_sub_free(in->sub);
    db_free(in->db);
    free(in->stmts);
    free(in);
}
