/* inventory_store.h - the inventory service's SQL: stock records, and the
 * reservation of a batch of orders (with their replies in the outbox) inside
 * the caller's transaction. */
#ifndef INVENTORY_STORE_H
#define INVENTORY_STORE_H

#include <jansson.h>
#include "db.h"
#include "event.h"

extern const struct db_stmt inventory_store_stmts[];
extern const size_t inventory_store_nstmts;

/* Sets available (creating the sku). *doc = {"sku","available","reserved"}. */
enum err inventory_store_put(struct db *db, const char *sku, int64_t available, json_t **doc);
/* ERR_OK with *doc, or ERR_NOT_FOUND. */
enum err inventory_store_get(struct db *db, const char *sku, json_t **doc);

/* What became of one OrderCreated. */
enum decision {
    DECISION_NEW,    /* decided now: kinds[i] says reserved or rejected */
    DECISION_BEFORE, /* the order was decided already: its stored reply is sent
                      * again, nothing else changes */
};

/* Applies n OrderCreated in the caller's transaction, one decision per
 * order for ever: orders decided already (order_decisions, or an earlier
 * copy in the batch) get their stored reply again; the others are decided
 * together: their stock rows locked at once in sku order (so concurrent
 * batches cannot deadlock), each order decided in turn (all items or
 * none), the reservations applied, and each decision written with its
 * InventoryReserved/Rejected reply to the outbox, carrying traceparents[i]
 * (may be NULL): the reply continues the order's trace. *resent: the
 * stored replies queued again (inventory_store_resend_replies). */
enum err inventory_store_apply(struct db *db, const struct order_created *const *orders,
                               const char *const *traceparents, size_t n, enum decision *out,
                               enum reply_kind *kinds, long *resent);

/* An order asked about again (its OrderCreated came back after the sender's
 * re-drive): its reply, published at least this long ago, may never have
 * arrived. Younger ones are a plain redelivery: the broker deduplicates. */
#define REPLY_RESEND_MIN_AGE_MS 60000

/* Queues the stored replies of these orders to be published again, rebuilt
 * from their decisions (same event ids: the order service ignores one it
 * already applied), each carrying traceparents[i] (may be NULL): the reply
 * continues the trace of the message that asked again. A reply row still
 * there is re-queued only if published at least min_age_ms ago (it keeps
 * its own trace). Orders never decided are skipped. *resent gets how many
 * replies were queued again. */
enum err inventory_store_resend_replies(struct db *db, const char *const *order_ids,
                                        const char *const *traceparents, size_t n,
                                        int64_t min_age_ms, long *resent);

#endif
