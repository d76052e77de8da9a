/* fuzz_order.c - libFuzzer harness: the POST /orders body parser and
 * validator, the shapes built from an accepted request, and the header
 * validators (Idempotency-Key, traceparent). Pure code, no I/O. */
#include "order.h"
#include "util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An accepted request must give the same fingerprint when its canonical
 * form is parsed again. */
static void check_accepted(struct order_request *r)
{
    char *fp = order_request_fingerprint(r);
    char *items = order_items_json(r);
    json_t *doc = order_document("00000000-0000-4000-8000-000000000000", r->customer_id,
                                 "PENDING", NULL, items, "t", "t");
    if (!doc)
        abort(); /* an accepted request always has a document */
    json_t *req = json_pack("{s:O, s:O}", "customer_id", json_object_get(doc, "customer_id"),
                            "items", json_object_get(doc, "items"));
    char *again = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!again)
        abort();
    struct order_request r2;
    struct field_error fe;
    if (order_request_parse(again, strlen(again), &r2, &fe) != ERR_OK)
        abort();
    char *fp2 = order_request_fingerprint(&r2);
    if (strcmp(fp, fp2) != 0)
        abort();
    free(fp2);
    order_request_cleanup(&r2);
    free(again);
    json_decref(doc);
    free(items);
    free(fp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *body = xmalloc(size + 1); /* the HTTP layer hands bodies NUL-terminated */
    memcpy(body, data, size);
    body[size] = '\0';
    struct order_request r;
    struct field_error fe;
    if (order_request_parse(body, size, &r, &fe) == ERR_OK) {
        check_accepted(&r);
        order_request_cleanup(&r);
    }
    order_idempotency_key_valid(body);
    order_traceparent_valid(body);
    free(body);
    return 0;
}
