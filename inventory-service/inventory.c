/* inventory.c - the all-or-nothing reservation rule. Pure: the caller has
 * locked the stock rows; this only decides. */
#include "inventory.h"

#include <string.h>

static const struct stock_level *find(const struct stock_level *stock, size_t n, const char *sku)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(stock[i].sku, sku) == 0)
            return &stock[i];
    return NULL;
}

enum reply_kind inventory_decide(const struct order_item *items, size_t nitems,
                                 const struct stock_level *stock, size_t nstock,
                                 const char **reason)
{
    int short_item = 0;
    for (size_t i = 0; i < nitems; i++) {
        const struct stock_level *s = find(stock, nstock, items[i].sku);
        if (!s) {
            *reason = "unknown_sku";
            return REPLY_REJECTED;
        }
        short_item |= s->available < items[i].qty;
    }
    *reason = short_item ? "insufficient_stock" : NULL;
    return short_item ? REPLY_REJECTED : REPLY_RESERVED;
}

void inventory_take(struct stock_level *stock, size_t nstock, const struct order_item *items,
                    size_t nitems)
{
    for (size_t i = 0; i < nitems; i++)
        for (size_t j = 0; j < nstock; j++)
            if (strcmp(stock[j].sku, items[i].sku) == 0) {
                stock[j].available -= items[i].qty;
                stock[j].taken += items[i].qty;
            }
}
