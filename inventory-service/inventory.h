/* inventory.h - the reservation decision (pure): all items or none. */
#ifndef INVENTORY_INVENTORY_H
#define INVENTORY_INVENTORY_H

#include <stddef.h>
#include <stdint.h>
#include "event.h"

struct stock_level {
    const char *sku;
    int64_t available;
    int64_t taken; /* by the orders reserved so far (inventory_take) */
};

/* Several orders are decided in one transaction: decide each in turn against
 * the locked levels, and inventory_take() the ones reserved. */

/* Decides an order against the locked stock rows found for its skus.
 * Returns REPLY_RESERVED, or REPLY_REJECTED with *reason "unknown_sku" (a
 * sku has no stock row; checked first) or "insufficient_stock". */
enum reply_kind inventory_decide(const struct order_item *items, size_t nitems,
                                 const struct stock_level *stock, size_t nstock,
                                 const char **reason);

/* Takes a reserved order's quantities off the local stock levels, so that
 * the next order of the same batch is decided against what is left, and
 * counts them in each level's `taken`. */
void inventory_take(struct stock_level *stock, size_t nstock, const struct order_item *items,
                    size_t nitems);

#endif
