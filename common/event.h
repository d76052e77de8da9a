/* event.h - the events of the contract and their JSON codecs (pure).
 *
 * OrderCreated (orders.created), InventoryReserved (inventory.reserved) and
 * InventoryRejected (inventory.rejected). Encoders return a heap string the
 * caller frees; decoders return ERR_POISON with a reason for any body that
 * can never be processed; field rules return ERR_VALIDATION. A decoder reads
 * a plain body (json_fast's) without building a JSON tree, any other with
 * jansson's; one set of field rules reads both, so the verdict and the
 * reason are the same. */
#ifndef COMMON_EVENT_H
#define COMMON_EVENT_H

#include <jansson.h>
#include <stddef.h>
#include "err.h"
#include "util.h"

#define SKU_MAX 64
#define CUSTOMER_ID_MAX 64
#define ITEMS_MAX 100
#define OCCURRED_AT_MAX 63 /* bytes of an event's occurred_at (a date-time, time_stamp_valid) */
#define QTY_MAX 10000

#define SUBJECT_ORDER_CREATED "orders.created"
#define SUBJECT_RESERVED "inventory.reserved"
#define SUBJECT_REJECTED "inventory.rejected"

struct order_item {
    char sku[SKU_MAX + 1];
    int qty;
};

struct order_created {
    char event_id[UUID_STR_LEN];
    char order_id[UUID_STR_LEN];
    char customer_id[CUSTOMER_ID_MAX * 4 + 1]; /* up to 64 UTF-8 characters */
    struct order_item *items;                   /* owned; free with event_order_created_cleanup */
    size_t nitems;
    char occurred_at[OCCURRED_AT_MAX + 1]; /* a date-time */
};

enum reply_kind { REPLY_RESERVED, REPLY_REJECTED };

struct inventory_reply {
    char event_id[UUID_STR_LEN];
    char order_id[UUID_STR_LEN];
    enum reply_kind kind;
    char reason[32];                            /* insufficient_stock | unknown_sku */
    char occurred_at[OCCURRED_AT_MAX + 1]; /* a date-time */
};

/* A field-level validation failure: which field (JSON path) and why. */
struct field_error {
    char field[64];
    char message[256];
};

/* Parses body as a JSON object (duplicate keys rejected) into *out, for the
 * caller to json_decref(). ERR_INVALID when it is not JSON (fe: "body is
 * not valid JSON: " and the parser's reason, as valid UTF-8), ERR_VALIDATION
 * when it is JSON of another kind; *out is NULL then. What every HTTP body
 * and every message is read with, so that all say the same. */
enum err event_load_object(const char *body, size_t len, json_t **out, struct field_error *fe);
/* 1..64 UTF-8 characters. */
int event_customer_id_valid(const char *s);
/* 1..64 characters of [A-Za-z0-9._-]. */
int event_sku_valid(const char *sku);
/* Length in UTF-8 characters, or -1 if s is not valid UTF-8. */
long event_utf8_len(const char *s);
/* Validates an items array (1..100 entries, unique valid skus, integer qty
 * 1..10000) into *out (heap, caller frees). */
enum err event_items_parse(const json_t *items, struct order_item **out, size_t *n,
                           struct field_error *fe);

/* Appends [{"sku":..,"qty":..},...]: compact JSON, in this key order. */
void event_items_append(struct buf *b, const struct order_item *items, size_t n);

/* The OrderCreated body: compact JSON, in the contract's key order. */
void event_order_created_append(struct buf *b, const struct order_created *e);
char *event_order_created_encode(const struct order_created *e);
enum err event_order_created_decode(const char *body, size_t len, struct order_created *out,
                                    struct field_error *fe);
/* The same from a parsed body (see event_load_object); o stays the caller's:
 * the tree path alone. */
enum err event_order_created_from(const json_t *o, struct order_created *out,
                                  struct field_error *fe);
void event_order_created_cleanup(struct order_created *e);

char *event_reply_encode(const struct inventory_reply *r);
/* The same text (the JSON of the contract, compact, in this key order)
 * appended to b. */
void event_reply_append(struct buf *b, const struct inventory_reply *r);
enum err event_reply_decode(const char *body, size_t len, struct inventory_reply *out,
                            struct field_error *fe);
enum err event_reply_from(const json_t *o, struct inventory_reply *out, struct field_error *fe);
/* "inventory.reserved" or "inventory.rejected", and the Event-Type names. */
const char *event_reply_subject(enum reply_kind k);
const char *event_reply_type(enum reply_kind k);

/* The event_id of any contract event body, for the inbox: ERR_POISON if the
 * body is not a JSON object with a UUID event_id. */
enum err event_peek_id(const char *body, size_t len, char out[UUID_STR_LEN]);

#endif
