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
enum err inventory_store_put(struct db *db, const char *sku, long available, json_t **doc);
/* ERR_OK with *doc, or ERR_NOT_FOUND. */
enum err inventory_store_get(struct db *db, const char *sku, json_t **doc);

/* Locks the stock rows of all n orders at once, in sku order (so concurrent
 * batches cannot deadlock), decides each order in turn (all items or none),
 * applies the reservations, and writes one InventoryReserved/Rejected reply
 * per order to the outbox: four statements whatever n is. kinds[i] says
 * which reply orders[i] got. Runs in the caller's transaction. */
enum err inventory_store_reserve(struct db *db, const struct order_created *const *orders,
                                 size_t n, enum reply_kind *kinds);

/* An order asked about again (its OrderCreated came back after the sender's
 * re-drive): its reply, published at least this long ago, may never have
 * arrived. Younger ones are a plain redelivery: the broker deduplicates. */
#define REPLY_RESEND_MIN_AGE_MS 60000

/* Queues the replies of these orders to be published again (same event
 * ids: the order service ignores one it already applied). */
enum err inventory_store_resend_replies(struct db *db, const char *const *order_ids, size_t n);

#endif
