/* order_replies.c - applies a batch of InventoryReserved / InventoryRejected
 * replies to their orders, inside the inbox's transaction. Owns decoding the
 * replies; the SQL is order_store_settle(). */
#include "order_replies.h"
#include "event.h"
#include "order_store.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static enum err apply_replies(struct db *db, struct inbox_item *items, size_t n, void *ctx)
{
    (void)ctx;
    struct inventory_reply *rep = xcalloc(n, sizeof *rep);
    const struct inventory_reply **valid = xcalloc(n, sizeof *valid);
    struct settle_outcome *out = xcalloc(n, sizeof *out);
    size_t *at = xcalloc(n, sizeof *at);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        struct field_error fe = {"", ""};
        enum err d = event_reply_decode(items[i].msg->data, (size_t)items[i].msg->len, &rep[i], &fe);
        if (d == ERR_OK && strcmp(items[i].msg->subject, event_reply_subject(rep[i].kind)) != 0) {
            /* which one is right, the subject or the body, only a person can tell */
            d = ERR_POISON;
            snprintf(fe.field, sizeof fe.field, "type");
            snprintf(fe.message, sizeof fe.message, "%s is not sent on this subject",
                     event_reply_type(rep[i].kind));
        }
        if (d == ERR_OK) {
            memcpy(items[i].order_id, rep[i].order_id, sizeof items[i].order_id);
            valid[k] = &rep[i];
            at[k++] = i;
        } else {
            items[i].poison = 1;
            snprintf(items[i].why, sizeof items[i].why, "invalid reply: %.60s %.170s", fe.field,
                     fe.message);
        }
    }
    enum err e = k ? order_store_settle(db, valid, k, out) : ERR_OK;
    for (size_t j = 0; e == ERR_OK && j < k; j++) {
        items[at[j]].result = out[j].result;
        items[at[j]].poison = out[j].poison;
        snprintf(items[at[j]].why, sizeof items[at[j]].why, "%s", out[j].why);
    }
    free(at);
    free(out);
    free(valid);
    free(rep);
    return e;
}

static const char *const reply_results[] = {"confirmed", "rejected", NULL};

const struct inbox_handler order_replies_handler = {
    .stream = "INVENTORY",
    .durable = "order-service",
    .filter = "inventory.>",
    .metric = "order_replies_total",
    .metric_help = "Inventory replies consumed, by result.",
    .results = reply_results,
    .apply = apply_replies,
};
