/* order_replies.c - applies InventoryReserved / InventoryRejected to the
 * order, inside the inbox's transaction. Owns decoding the reply; the SQL
 * is order_store_settle(). */
#include "order_replies.h"
#include "event.h"
#include "order_store.h"

#include <stdio.h>

static enum err apply_reply(struct db *db, const struct broker_in *m, void *ctx,
                            const char **result, char *why, size_t whylen)
{
    (void)ctx;
    struct inventory_reply rep;
    struct field_error fe = {"", ""};
    if (event_reply_decode(m->data, (size_t)m->len, &rep, &fe) != ERR_OK) {
        snprintf(why, whylen, "invalid reply: %s %s", fe.field, fe.message);
        return ERR_POISON;
    }
    return order_store_settle(db, &rep, result, why, whylen);
}

static const char *const reply_results[] = {"confirmed", "rejected", NULL};

const struct inbox_handler order_replies_handler = {
    .stream = "INVENTORY",
    .durable = "order-service",
    .filter = "inventory.>",
    .metric = "order_replies_total",
    .metric_help = "Inventory replies consumed, by result.",
    .results = reply_results,
    .apply = apply_reply,
};
