/* order_store.h - the order service's SQL: create an order with its items
 * and OrderCreated outbox row in ONE statement (one round trip, one
 * transaction), read it back, and settle it from an inventory reply. */
#ifndef ORDER_STORE_H
#define ORDER_STORE_H

#include <jansson.h>
#include "db.h"
#include "event.h"
#include "order.h"

/* Prepared on every connection of the request pool. */
extern const struct db_stmt order_store_stmts[];
extern const size_t order_store_nstmts;

struct order_new {
    const struct order_request *req;
    const char *idempotency_key; /* or NULL */
    const char *traceparent;     /* or NULL */
};

/* What became of one order: ERR_OK with *doc the new order; ERR_CONFLICT
 * when its idempotency key was taken: doc is that first order if the request
 * is the same (same = 1), else NULL (same = 0). */
struct order_result {
    enum err e;
    json_t *doc;
    int same;
    char event_id[UUID_STR_LEN]; /* the OrderCreated event's id, when created */
};

/* Creates n orders, each with its items and OrderCreated outbox row, in ONE
 * statement (one round trip, one transaction, one commit). On ERR_OK, out[i]
 * says what became of o[i]; any other return (from db_exec) means nothing
 * of the batch was written. */
enum err order_store_create(struct db *db, const struct order_new *const *o, size_t n,
                            struct order_result *out);

/* The id of the order a result carries (NULL: none). */
const char *order_result_id(const struct order_result *r);

/* How to find, after a commit in doubt, whether the batch that
 * order_store_create() wrote (results out) is there: by one of the orders
 * it created. 0 when it created none (it wrote nothing). */
int order_store_created_check(const struct order_result *out, size_t n, struct db_check *check);

/* The order with that id: ERR_OK with *doc, or ERR_NOT_FOUND. */
enum err order_store_get(struct db *db, const char *id, json_t **doc);

/* What settling one reply did. */
struct settle_outcome {
    const char *result; /* "confirmed" | "rejected" | "duplicate" (already in that state) */
    int poison;         /* unknown order, or a reply contradicting its settled state */
    char why[200];
};

/* Settles PENDING orders from n replies in the caller's transaction, with
 * two statements whatever n is. out[i] says what became of replies[i]. */
enum err order_store_settle(struct db *db, const struct inventory_reply *const *replies,
                            size_t n, struct settle_outcome *out);

#endif
