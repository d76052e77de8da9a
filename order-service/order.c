/* order.c - POST /orders validation and the order's JSON shapes.
 * Pure functions; the field rules of items are shared with the event codec. */
#include "order.h"
#include "json_fast.h"
#include "trace.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static enum err field_fail(struct field_error *fe, const char *field, const char *msg)
{
    snprintf(fe->field, sizeof fe->field, "%s", field);
    snprintf(fe->message, sizeof fe->message, "%s", msg);
    return ERR_VALIDATION;
}

enum err order_request_parse(const char *body, size_t len, struct order_request *out,
                             struct field_error *fe)
{
    memset(out, 0, sizeof *out);
    memset(fe, 0, sizeof *fe);
    json_t *o = NULL;
    enum err e = event_load_object(body, len, &o, fe);
    if (e != ERR_OK)
        return e;
    const json_t *cid = json_object_get(o, "customer_id");
    if (!json_is_string(cid) || !event_customer_id_valid(json_string_value(cid)))
        e = field_fail(fe, "customer_id", "must be a string of 1 to 64 characters");
    else
        e = event_items_parse(json_object_get(o, "items"), &out->items, &out->nitems, fe);
    if (e == ERR_OK)
        snprintf(out->customer_id, sizeof out->customer_id, "%s", json_string_value(cid));
    json_decref(o);
    return e;
}

void order_request_cleanup(struct order_request *r)
{
    free(r->items);
    r->items = NULL;
    r->nitems = 0;
}

int order_idempotency_key_valid(const char *key)
{
    size_t n = strlen(key);
    if (n < 1 || n > IDEMPOTENCY_KEY_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (key[i] < 0x20 || key[i] > 0x7e)
            return 0;
    return 1;
}

int order_traceparent_valid(const char *tp)
{
    struct trace t;
    return trace_parse(tp, &t); /* the one validator: common/trace.c */
}

static void fingerprint_append(struct buf *b, const struct order_request *r)
{
    buf_json_field(b, "{\"customer_id\":", r->customer_id);
    buf_append(b, ",\"items\":[", 10);
    for (size_t i = 0; i < r->nitems; i++) {
        if (i)
            buf_append(b, ",", 1);
        buf_append(b, "{\"qty\":", 7);
        buf_int(b, r->items[i].qty);
        buf_json_field(b, ",\"sku\":", r->items[i].sku);
        buf_append(b, "}", 1);
    }
    buf_append(b, "]}", 2);
}

char *order_request_fingerprint(const struct order_request *r)
{
    struct buf b;
    buf_init(&b);
    fingerprint_append(&b, r);
    return b.data;
}

char *order_items_json(const struct order_request *r)
{
    struct buf b;
    buf_init(&b);
    event_items_append(&b, r->items, r->nitems);
    return b.data;
}

json_t *order_document(const char *id, const char *customer_id, const char *status,
                       const char *reason, const char *items_json, const char *created_at,
                       const char *updated_at)
{
    json_t *items = json_loads(items_json ? items_json : "[]", 0, NULL);
    json_t *o = json_pack("{s:s, s:s, s:s, s:o, s:s, s:s}", "id", id, "customer_id", customer_id,
                          "status", status, "items", items ? items : json_array(), "created_at",
                          created_at, "updated_at", updated_at);
    if (reason && reason[0])
        json_object_set_new(o, "reason", json_string(reason));
    return o;
}
