/* outbox.h - the outbox relay and its compensator, one thread per process.
 *
 * Rows are written by the services' own transactions (table `outbox`, see
 * migrations). The relay claims due rows with FOR UPDATE SKIP LOCKED,
 * publishes them with JetStream async publish, and moves each acknowledged
 * row to outbox_published (kept OUTBOX_RETENTION) or marks it failed
 * (attempts, error, next attempt time). A published row keeps the sequence
 * its ack reported (stream_seq), for debugging only: a broker that lost data
 * re-uses sequences, so it is not the event's position.
 * A writer that can hands the rows it committed to relay_offer(), which
 * publishes them at once, without a claim (no round trip, no wait for a
 * pass in flight); they are written not due for OUTBOX_OFFER_GRACE, so
 * that no claim takes them meanwhile. Otherwise it wakes on relay_notify()
 * after a local commit, and sweeps every RELAY_SWEEP_MS for rows of other
 * instances, crashed processes (an offer lost with its process: after the
 * grace) and retries. */
#ifndef COMMON_OUTBOX_H
#define COMMON_OUTBOX_H

#include "broker.h"
#include "config.h"

/* Queues events to be sent again, rebuilt by the caller from its own
 * records ($1: a JSON array of {event_id, subject, event_type, payload (the
 * body as a JSON string: a rare path), aggregate_id, traceparent
 * (optional)}), under their own ids. An event published less than $2 ms ago
 * (its outbox_published row says so) is left alone, and so is one still in
 * the outbox (pending or dead); any other is written to the outbox again.
 * The event keeps its id, so a receiver that has it already ignores it.
 * Returns the event ids queued. */
#define OUTBOX_RESEND_SQL                                                                     \
    "INSERT INTO outbox (event_id, subject, event_type, payload, aggregate_id, "              \
    "traceparent) SELECT DISTINCT ON (event_id) event_id, subject, event_type, payload, "     \
    "aggregate_id, traceparent FROM json_to_recordset($1::json) AS x(event_id uuid, "         \
    "subject text, event_type text, payload text, aggregate_id uuid, traceparent text) "      \
    "WHERE NOT EXISTS (SELECT 1 FROM outbox_published p WHERE p.event_id = x.event_id "       \
    "AND p.published_at >= now() - $2::bigint * interval '1 millisecond') "                   \
    "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"

/* The columns the relay publishes a row from: what its claim reads, and
 * what a writer returns (INSERT ... RETURNING) for relay_offer(). */
#define OUTBOX_ROW_COLS                                                                      \
    "id, event_id, subject, event_type, payload, traceparent, extract(epoch FROM created_at), " \
    "attempts, aggregate_id"
#define OUTBOX_ROW_NCOLS 9
/* next_attempt_at of a row its writer offers: sweeps leave it to the offer
 * that long. Longer than an offer takes (ms), shorter than any retry of an
 * outage would wait anyway. An offer slower than that (the broker slow to
 * answer) may be claimed too: JetStream drops the second copy, and a row
 * locked by a claim is left to it. */
#define OUTBOX_OFFER_GRACE "now() + interval '1 second'"

struct relay;
struct db;

/* Starts the relay thread on its own Postgres connection. The broker and
 * config must outlive it. */
void relay_start(const struct config *cfg, struct broker *b, struct relay **out);
/* Wakes the relay now (called after a commit that wrote outbox rows). */
void relay_notify(struct relay *r);
/* Called after db's transaction committed: hands the relay the outbox rows
 * it wrote (db_keep()'d, columns OUTBOX_ROW_COLS) to publish now, without a
 * claim. A NULL relay drops them (a sweep publishes them after the grace).
 * Returns how many rows it was handed. */
int relay_offer(struct relay *r, struct db *db);
/* Asks the thread to stop after its batch in flight, without waiting. */
void relay_request_stop(struct relay *r);
/* Finishes the batch in flight, stops the thread, frees. NULL is a no-op. */
void relay_stop(struct relay *r);

#endif
