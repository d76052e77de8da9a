/* inbox.h - the idempotent consumer, one thread per process.
 *
 * Pulls batches from a durable JetStream consumer and, in ONE Postgres
 * transaction per batch: records every body's event_id in
 * processed_messages in one statement (already there: a duplicate, no
 * effect), lets the handler apply the fresh ones set-wise, commits, then
 * acks. Unparseable or invalid messages are stored in dead_letters and
 * terminated. If the database refuses the batch, each message is retried
 * alone, so one bad message never undoes or blocks the others; a lost
 * database naks the batch for later. */
#ifndef COMMON_INBOX_H
#define COMMON_INBOX_H

#include "broker.h"
#include "config.h"
#include "db.h"
#include "util.h"

/* One fresh message handed to a handler. */
struct inbox_item {
    const struct broker_in *msg; /* its body: a JSON object with a UUID event_id */
    const char *event_id;
    const char *traceparent; /* a child span of the message's trace: for what the handler writes */
    char order_id[UUID_STR_LEN]; /* set by the handler when it knows it (for the log line) */
    const char *result;     /* set by the handler */
    int poison;             /* set by the handler, with why */
    char why[256];
};

struct inbox_handler {
    const char *stream, *durable, *filter;
    const char *metric;                /* e.g. inventory_messages_total{result} */
    const char *metric_help;
    const char *const *results;        /* the handler's result labels, NULL-terminated */
    const struct db_stmt *stmts;       /* the handler's prepared statements (service.c */
    size_t nstmts;                     /* sets them to the service's own) */
    /* Applies the fresh messages of a batch inside the open transaction.
     * For each item it sets `result` (a static metric label), or `poison`
     * with a reason in `why` (then it must have written nothing for that
     * item: it becomes a dead letter). Returns ERR_UNAVAILABLE or ERR_DB
     * when the database failed: the whole transaction is then undone. */
    enum err (*apply)(struct db *db, struct inbox_item *items, size_t n, void *ctx);
    /* Optional: told, in the same transaction, of the messages that were
     * duplicates (a redelivery, or a sender that never got our answer and
     * asks again). Sets nothing; errors as for apply. */
    enum err (*on_duplicates)(struct db *db, struct inbox_item *items, size_t n, void *ctx);
    /* Set when apply or on_duplicates writes outbox rows: service.c then
     * wakes the relay after each commit (a wake with nothing to send is a
     * relay pass for nothing: three round trips to Postgres). A handler
     * that writes them without it still has them sent, by the relay's
     * sweep, up to RELAY_SWEEP_MS later. */
    int writes_outbox;
    /* Called after each commit (e.g. wake the relay). */
    void (*after_commit)(void *ctx);
    void *ctx;
};

struct inbox;

/* The inbox's own statements (for a connection that runs inbox_apply_one). */
extern const struct db_stmt inbox_stmts[];
extern const size_t inbox_nstmts;

/* Runs one message through the path of a fetched one, inside the caller's
 * open transaction on db (prepared with inbox_stmts and h's statements):
 * its event id is recorded (already there: "duplicate", no effect), then the
 * handler applies it. Sets *result to the metric label, or "poison" with the
 * reason in why (the caller then rolls back). ERR_UNAVAILABLE / ERR_DB as
 * for the handler. For re-applying a dead letter. */
enum err inbox_apply_one(struct db *db, const struct inbox_handler *h, const char *subject,
                         const char *body, size_t len, const char **result,
                         char *why, size_t whylen);

/* One message through a fetched one's path (a batch of one), in a
 * transaction of its own on db (prepared as for inbox_apply_one), without
 * settling it: for a message the consumer never delivered. Its result as
 * inbox_apply_one's; "poison" is kept in dead_letters, as a delivery's.
 * After a commit, the handler's after_commit. ERR_UNAVAILABLE / ERR_DB:
 * rolled back, nothing changed. */
enum err inbox_apply_tx(struct db *db, const struct inbox_handler *h, const struct broker_in *m,
                        const char **result, char *why, size_t whylen);

/* The consumer's metrics, at 0, in /metrics from the service's start (before
 * the migrations let it run); inbox_start calls it too. */
void inbox_register_metrics(const struct inbox_handler *h);
/* Starts the consumer thread. cfg, broker and handler must outlive it. */
void inbox_start(const struct config *cfg, struct broker *b, const struct inbox_handler *h,
                 struct inbox **out);
/* Asks the thread to stop after its batch in flight, without waiting. */
void inbox_request_stop(struct inbox *in);
/* Finishes the batch in flight, stops, frees. NULL is a no-op. */
void inbox_stop(struct inbox *in);

#endif
