/* reconcile.h - does the broker really hold what the outbox says it
 * published, and did the consumer record what it acknowledged?
 *
 * A periodic check (RECONCILE_EVERY) over a recent window (RECONCILE_WINDOW,
 * never longer than OUTBOX_RETENTION keeps rows), also run on demand by
 * GET /admin/reconcile. Two sides, each bounded to RECONCILE_SCAN stream
 * sequences:
 *   - produced: outbox rows marked published (with their stream sequence)
 *     against the stream this service writes, read by sequence (msg get):
 *     missing (not at its sequence, nor at another of those read),
 *     duplicated (one event id at several sequences), orphaned (in the
 *     stream, no outbox row has its id);
 *   - consumed: the stream this service reads, up to its durable consumer's
 *     ack floor, against processed_messages and dead_letters: unprocessed
 *     (acknowledged, never recorded). The periodic run applies those
 *     itself, through the inbox's path (poison becomes a dead letter), when
 *     the stream stored them within PROCESSED_RETENTION less 10 minutes:
 *     the broker's consumer skipped them, or the database lost their
 *     commit.
 * Results: gauges reconcile_{missing,duplicated,orphaned,unprocessed}_events
 * {stream} (unprocessed: those still not applied), the counter
 * reconcile_repaired_events_total{stream}, warn lines naming the events,
 * and the report. */
#ifndef COMMON_RECONCILE_H
#define COMMON_RECONCILE_H

#include <jansson.h>
#include "broker.h"
#include "config.h"
#include "inbox.h"

struct reconcile;

struct reconcile_streams {
    const char *produced;               /* the stream the outbox relay writes */
    const struct inbox_handler *inbox;  /* the consumer: its stream, durable and filter,
                                           and the path that applies what it skipped */
};

/* Starts the periodic check on its own Postgres connection. cfg, broker,
 * the handler and the strings of s must outlive it. */
void reconcile_start(const struct config *cfg, struct broker *b,
                     const struct reconcile_streams *s, struct reconcile **out);
/* Runs the check now (one at a time with the periodic one); *report is the
 * JSON report (caller decrefs). ERR_UNAVAILABLE when Postgres or JetStream
 * cannot answer (the gauges keep their last values). `asked`: an operator
 * waits for it (GET /admin/reconcile): its wait for a run under way
 * (ERR_RETRY past it) and for each answer of Postgres are bounded by
 * DB_REQUEST_TIMEOUT, as a request's are, and it only reports; else (the
 * periodic run) as background work, and it applies what it finds
 * unprocessed. */
enum err reconcile_run(struct reconcile *rc, int asked, json_t **report);
/* Stops the thread and frees. NULL is a no-op. */
void reconcile_stop(struct reconcile *rc);

#endif
