/* inventory_consumer.c - applies OrderCreated inside the inbox's
 * transaction. Owns decoding the event; the SQL is inventory_store.c. */
#include "inventory_consumer.h"
#include "event.h"
#include "inventory_store.h"

#include <stdio.h>

static enum err apply_order(struct db *db, const struct broker_in *m, void *ctx,
                            const char **result, char *why, size_t whylen)
{
    (void)ctx;
    struct order_created ev;
    struct field_error fe = {"", ""};
    if (event_order_created_decode(m->data, (size_t)m->len, &ev, &fe) != ERR_OK) {
        snprintf(why, whylen, "invalid OrderCreated: %s %s", fe.field, fe.message);
        event_order_created_cleanup(&ev);
        return ERR_POISON;
    }
    enum reply_kind kind = REPLY_REJECTED;
    enum err e = inventory_store_reserve(db, &ev, &kind);
    *result = kind == REPLY_RESERVED ? "reserved" : "rejected";
    event_order_created_cleanup(&ev);
    return e;
}

static const char *const order_results[] = {"reserved", "rejected", NULL};

const struct inbox_handler inventory_orders_handler = {
    .stream = "ORDERS",
    .durable = "inventory-service",
    .filter = "orders.created",
    .metric = "inventory_messages_total",
    .metric_help = "OrderCreated events consumed, by result.",
    .results = order_results,
    .apply = apply_order,
};
