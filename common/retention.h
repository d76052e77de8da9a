/* retention.h - the pruning thread, one per process, on its own Postgres
 * connection: never the consumer's nor the relay's, so a large backlog of
 * expired rows neither blocks consumption nor delays a publish.
 *
 * It deletes processed ids older than PROCESSED_RETENTION, refusal counts
 * as old, and published outbox rows older than OUTBOX_RETENTION. Nothing
 * that recovery needs is among them: a re-sent event is rebuilt from the
 * order or from the inventory's decision, never read from a retained row.
 * Deletes go by chunks of 50,000 rows (short transactions) and are sized to
 * the backlog: while a pass leaves rows behind, the next one starts at once. */
#ifndef COMMON_RETENTION_H
#define COMMON_RETENTION_H

#include "config.h"

struct retention;

/* Starts the thread; its first pass runs one period (1 s) after start.
 * cfg must outlive it. */
void retention_start(const struct config *cfg, struct retention **out);
/* Stops after the chunk in flight and frees. NULL is a no-op. */
void retention_stop(struct retention *r);

#endif
