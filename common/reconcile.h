/* reconcile.h - does the broker really hold what the outbox says it
 * published, and did the consumer record what it acknowledged?
 *
 * A periodic check (RECONCILE_EVERY) over a recent window (RECONCILE_WINDOW,
 * never longer than OUTBOX_RETENTION keeps rows), also run on demand by
 * POST /admin/reconcile. Two sides, each bounded to RECONCILE_SCAN stream
 * sequences:
 *   - produced: outbox rows marked published (with their stream sequence)
 *     against the stream this service writes, read by sequence (msg get):
 *     missing (not at its sequence), duplicated (one event id at several
 *     sequences), orphaned (in the stream, no outbox row has its id);
 *   - consumed: the stream this service reads, up to its durable consumer's
 *     ack floor, against processed_messages and dead_letters: unprocessed
 *     (acknowledged, never recorded).
 * Results: gauges reconcile_{missing,duplicated,orphaned,unprocessed}_events
 * {stream}, warn lines naming the events, and the report. */
#ifndef COMMON_RECONCILE_H
#define COMMON_RECONCILE_H

#include <jansson.h>
#include "broker.h"
#include "config.h"

struct reconcile;

struct reconcile_streams {
    const char *produced;                 /* the stream the outbox relay writes */
    const char *consumed, *durable;       /* the stream and consumer the inbox reads */
    const char *filter;                   /* the consumer's subjects ("x.y" or "x.>") */
};

/* Starts the periodic check on its own Postgres connection. cfg, broker and
 * the strings of s must outlive it. */
void reconcile_start(const struct config *cfg, struct broker *b,
                     const struct reconcile_streams *s, struct reconcile **out);
/* Runs the check now (one at a time with the periodic one); *report is the
 * JSON report (caller decrefs). ERR_UNAVAILABLE when Postgres or JetStream
 * cannot answer (the gauges keep their last values). `asked`: an operator
 * waits for it (GET /admin/reconcile): its wait for a run under way
 * (ERR_RETRY past it) and for each answer of Postgres are bounded by
 * DB_REQUEST_TIMEOUT, as a request's are; else (the periodic run) as
 * background work. */
enum err reconcile_run(struct reconcile *rc, int asked, json_t **report);
/* Stops the thread and frees. NULL is a no-op. */
void reconcile_stop(struct reconcile *rc);

#endif
