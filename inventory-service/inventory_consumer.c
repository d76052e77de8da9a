/* inventory_consumer.c - applies a batch of OrderCreated inside the inbox's
 * transaction. Owns decoding the events; the SQL is inventory_store.c. */
#include "inventory_consumer.h"
#include "event.h"
#include "inventory_store.h"
#include "metrics.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct metric *m_resent;

void inventory_consumer_register_metrics(void)
{
    m_resent = metrics_register("inventory_replies_resent_total",
                                "Replies published again because the order service asked again "
                                "(its re-drive): the broker lost the reply, or it is very late.",
                                METRIC_COUNTER, NULL, 0);
    metric_add(m_resent, "", 0);
}

static enum err apply_orders(struct db *db, struct inbox_item *items, size_t n, void *ctx)
{
    (void)ctx;
    struct order_created *ev = xcalloc(n, sizeof *ev);
    const struct order_created **valid = xcalloc(n, sizeof *valid);
    size_t *at = xcalloc(n, sizeof *at);
    enum reply_kind *kinds = xcalloc(n, sizeof *kinds);
    enum decision *dec = xcalloc(n, sizeof *dec);
    const char **traces = xcalloc(n, sizeof *traces);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        struct field_error fe = {"", ""};
        if (event_order_created_decode(items[i].msg->data, (size_t)items[i].msg->len, &ev[i], &fe) == ERR_OK) {
            memcpy(items[i].order_id, ev[i].order_id, sizeof items[i].order_id);
            valid[k] = &ev[i];
            traces[k] = items[i].traceparent; /* the reply continues the order's trace */
            at[k++] = i;
        } else {
            items[i].poison = 1;
            snprintf(items[i].why, sizeof items[i].why, "invalid OrderCreated: %.60s %.170s",
                     fe.field, fe.message);
        }
    }
    long resent = 0; /* orders decided before, their processed ids pruned: asked again */
    enum err e = k ? inventory_store_apply(db, valid, traces, k, dec, kinds, &resent) : ERR_OK;
    if (e == ERR_OK)
        metric_add_on_commit(m_resent, "", (double)resent);
    for (size_t j = 0; j < k; j++)
        items[at[j]].result = dec[j] == DECISION_BEFORE ? "duplicate"
                              : kinds[j] == REPLY_RESERVED ? "reserved" : "rejected";
    for (size_t i = 0; i < n; i++)
        event_order_created_cleanup(&ev[i]);
    free(dec);
    free(traces);
    free(kinds);
    free(at);
    free(valid);
    free(ev);
    return e;
}

/* An OrderCreated seen before: the order service may be asking again because
 * our reply never reached it. Send the stored reply again. */
static enum err resend_replies(struct db *db, struct inbox_item *items, size_t n, void *ctx)
{
    (void)ctx;
    struct order_created *ev = xcalloc(n, sizeof *ev);
    const char **ids = xcalloc(n, sizeof *ids);
    const char **traces = xcalloc(n, sizeof *traces);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (event_order_created_decode(items[i].msg->data, (size_t)items[i].msg->len, &ev[i],
                                       NULL) == ERR_OK) {
            memcpy(items[i].order_id, ev[i].order_id, sizeof items[i].order_id);
            traces[k] = items[i].traceparent; /* the reply continues the asking message's trace */
            ids[k++] = ev[i].order_id;
        }
    }
    long resent = 0;
    enum err e = k ? inventory_store_resend_replies(db, ids, traces, k, REPLY_RESEND_MIN_AGE_MS,
                                                    &resent)
                   : ERR_OK;
    if (e == ERR_OK)
        metric_add_on_commit(m_resent, "", (double)resent);
    for (size_t i = 0; i < n; i++)
        event_order_created_cleanup(&ev[i]);
    free(traces);
    free(ids);
    free(ev);
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
    .apply = apply_orders,
    .on_duplicates = resend_replies,
    .writes_outbox = 1, /* the replies */
};
