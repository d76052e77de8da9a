/* inbox.h - the idempotent consumer, one thread per process.
 *
 * Pulls batches from a durable JetStream consumer and, in ONE Postgres
 * transaction per batch, for each message: records the body's event_id in
 * processed_messages (already there: a duplicate, no effect) and applies the
 * handler's effect under a savepoint, so one bad message never undoes the
 * others. Commits, then acks. Unparseable or invalid messages are stored in
 * dead_letters and terminated; a lost database naks the batch for later. */
#ifndef COMMON_INBOX_H
#define COMMON_INBOX_H

#include "broker.h"
#include "config.h"
#include "db.h"

struct inbox_handler {
    const char *stream, *durable, *filter;
    const char *metric;                /* e.g. inventory_messages_total{result} */
    const char *metric_help;
    const char *const *results;        /* the handler's result labels, NULL-terminated */
    const struct db_stmt *stmts;       /* the handler's prepared statements (service.c */
    size_t nstmts;                     /* sets them to the service's own) */
    /* Applies one message inside the open transaction. Returns ERR_OK and a
     * static result label; ERR_POISON with a reason in why (dead letter);
     * ERR_UNAVAILABLE or ERR_DB when the database failed (retried later). */
    enum err (*apply)(struct db *db, const struct broker_in *m, void *ctx,
                      const char **result, char *why, size_t whylen);
    /* Called after each commit that applied something (e.g. wake the relay). */
    void (*after_commit)(void *ctx);
    void *ctx;
};

struct inbox;

/* Starts the consumer thread. cfg, broker and handler must outlive it. */
void inbox_start(const struct config *cfg, struct broker *b, const struct inbox_handler *h,
                 struct inbox **out);
/* Finishes the batch in flight, stops, frees. NULL is a no-op. */
void inbox_stop(struct inbox *in);

#endif
