/* outbox.h - the outbox relay and its compensator, one thread per process.
 *
 * Rows are written by the services' own transactions (table `outbox`, see
 * migrations). The relay claims due rows with FOR UPDATE SKIP LOCKED,
 * publishes them with JetStream async publish, and moves each acknowledged
 * row to outbox_published (kept OUTBOX_RETENTION) or marks it failed
 * (attempts, error, next attempt time). A published row keeps the sequence
 * its ack reported (stream_seq), for debugging only: a broker that lost data
 * re-uses sequences, so it is not the event's position.
 * It wakes on relay_notify() after a local commit, and sweeps every
 * RELAY_SWEEP_MS for rows of other instances, crashed processes and retries. */
#ifndef COMMON_OUTBOX_H
#define COMMON_OUTBOX_H

#include "broker.h"
#include "config.h"
#include "db_array.h"

/* Outbox rows a service writes: the first six columns of its batch
 * (db_columns, of these element types), read back by OUTBOX_ROWS_UNNEST as
 * x(event_id, subject, event_type, payload, aggregate_id, traceparent). */
#define OUTBOX_ROW_ELEMS DB_UUID, DB_TEXT, DB_TEXT, DB_TEXT, DB_UUID, DB_TEXT
#define OUTBOX_ROWS_UNNEST                                                                    \
    "unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::uuid[], $6::text[]) "         \
    "AS x(event_id, subject, event_type, payload, aggregate_id, traceparent)"
/* One more row; aggregate_id and traceparent may be NULL. */
void outbox_row_add(struct db_columns *c, const char *event_id, const char *subject,
                    const char *event_type, const char *payload, const char *aggregate_id,
                    const char *traceparent);

/* Queues events to be sent again, rebuilt by the caller from its own
 * records ($1..$6: outbox rows), under their own ids. An event published
 * less than $7 ms ago (its outbox_published row says so) is left alone, and
 * so is one still in the outbox (pending or dead); any other is written to
 * the outbox again. The event keeps its id, so a receiver that has it
 * already ignores it. Returns the event ids queued. */
#define OUTBOX_RESEND_SQL                                                                     \
    "INSERT INTO outbox (event_id, subject, event_type, payload, aggregate_id, "              \
    "traceparent) SELECT DISTINCT ON (event_id) event_id, subject, event_type, payload, "     \
    "aggregate_id, traceparent FROM " OUTBOX_ROWS_UNNEST " "                                  \
    "WHERE NOT EXISTS (SELECT 1 FROM outbox_published p WHERE p.event_id = x.event_id "       \
    "AND p.published_at >= now() - $7::bigint * interval '1 millisecond') "                   \
    "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"

struct relay;

/* The relay's metrics, at 0, in /metrics from the service's start (before
 * the migrations let the relay run); relay_start calls it too. */
void relay_register_metrics(void);
/* Starts the relay thread on its own Postgres connection. The broker and
 * config must outlive it. */
void relay_start(const struct config *cfg, struct broker *b, struct relay **out);
/* Wakes the relay now (called after a commit that wrote outbox rows). */
void relay_notify(struct relay *r);
/* Asks the thread to stop after its batch in flight, without waiting. */
void relay_request_stop(struct relay *r);
/* Finishes the batch in flight, stops the thread, frees. NULL is a no-op. */
void relay_stop(struct relay *r);

#endif
