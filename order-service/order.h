/* order.h - the order request: validation and the shapes it takes (pure).
 *
 * Parses POST /orders bodies under the contract's rules, builds the
 * OrderCreated event, the idempotency fingerprint, and the order document
 * returned by the API. No I/O. */
#ifndef ORDER_ORDER_H
#define ORDER_ORDER_H

#include <jansson.h>
#include "err.h"
#include "event.h"

#define IDEMPOTENCY_KEY_MAX 128

struct order_request {
    char customer_id[CUSTOMER_ID_MAX * 4 + 1];
    struct order_item *items; /* owned */
    size_t nitems;
};

/* ERR_OK; ERR_INVALID when the body is not JSON (fe says why);
 * ERR_VALIDATION when a field breaks a rule (fe names it). */
enum err order_request_parse(const char *body, size_t len, struct order_request *out,
                             struct field_error *fe);
void order_request_cleanup(struct order_request *r);

/* 1..128 printable ASCII characters. */
int order_idempotency_key_valid(const char *key);

/* A W3C trace context `traceparent` value we may pass on: version 00 form
 * (or a later version's prefix), lower-case hex, ids not all zero. An
 * invalid one is ignored, never an error (W3C: restart the trace). */
int order_traceparent_valid(const char *tp);

/* Canonical text of what the request asks for: the same order body gives
 * the same text whatever its formatting or unknown fields. Caller frees. */
char *order_request_fingerprint(const struct order_request *r);
/* The items as a JSON array text [{"sku","qty"},...]. Caller frees. */
char *order_items_json(const struct order_request *r);

/* A stored order as the API shows it. Strings are as stored; items_json is
 * the items array text; reason may be NULL or "". Returns a new reference. */
json_t *order_document(const char *id, const char *customer_id, const char *status,
                       const char *reason, const char *items_json, const char *created_at,
                       const char *updated_at);

#endif
