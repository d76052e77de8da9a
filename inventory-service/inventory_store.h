/* inventory_store.h - the inventory service's SQL: stock records and the
 * reservation of one order (with its reply in the outbox), inside the
 * caller's transaction. */
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

/* Locks the order's stock rows in sku order, reserves all items or none,
 * and writes the InventoryReserved/Rejected reply to the outbox. Runs in
 * the caller's transaction. *kind says which reply was written. */
enum err inventory_store_reserve(struct db *db, const struct order_created *ev,
                                 enum reply_kind *kind);

#endif
