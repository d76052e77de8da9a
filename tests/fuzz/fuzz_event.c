/* fuzz_event.c - libFuzzer harness: the contract's event decoders
 * (OrderCreated, InventoryReserved, InventoryRejected) and the inbox's id
 * peek. A body a decoder accepts must encode and decode again to the same
 * event, and a decoder gives the same verdict, reason and event whether it
 * read the body through json_fast or through jansson's tree. Pure code, no
 * I/O. */
#include "event.h"
#include "json_fast.h"
#include "util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void order_created(const char *body, size_t size)
{
    struct order_created e, again;
    struct field_error fe;
    if (event_order_created_decode(body, size, &e, &fe) != ERR_OK)
        return;
    char *text = event_order_created_encode(&e);
    if (event_order_created_decode(text, strlen(text), &again, &fe) != ERR_OK ||
        strcmp(e.event_id, again.event_id) != 0 || strcmp(e.order_id, again.order_id) != 0 ||
        strcmp(e.customer_id, again.customer_id) != 0 || e.nitems != again.nitems)
        abort();
    for (size_t i = 0; i < e.nitems; i++)
        if (strcmp(e.items[i].sku, again.items[i].sku) != 0 || e.items[i].qty != again.items[i].qty)
            abort();
    event_order_created_cleanup(&again);
    event_order_created_cleanup(&e);
    free(text);
}

static void reply(const char *body, size_t size)
{
    struct inventory_reply r, again;
    struct field_error fe;
    if (event_reply_decode(body, size, &r, &fe) != ERR_OK)
        return;
    char *text = event_reply_encode(&r);
    if (event_reply_decode(text, strlen(text), &again, &fe) != ERR_OK || r.kind != again.kind ||
        strcmp(r.event_id, again.event_id) != 0 || strcmp(r.order_id, again.order_id) != 0 ||
        strcmp(r.reason, again.reason) != 0)
        abort();
    free(text);
}

/* What the fast path takes, jansson takes too, as the same value. */
static void fast_path(const char *body, size_t size)
{
    json_t *f = json_fast_load(body, size);
    if (!f)
        return;
    json_t *j = json_loadb(body, size, JSON_REJECT_DUPLICATES, NULL);
    char *a = json_dumps(f, JSON_COMPACT), *b = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (!b || strcmp(a, b) != 0)
        abort();
    free(a);
    free(b);
    json_decref(j);
    json_decref(f);
}

static int same_error(const struct field_error *a, const struct field_error *b)
{
    return strcmp(a->field, b->field) == 0 && strcmp(a->message, b->message) == 0;
}

/* Both paths of the decoders, on a body jansson takes as an object. */
static void both_paths(const char *body, size_t size)
{
    json_t *o = json_loadb(body, size, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(o)) {
        json_decref(o);
        return;
    }
    struct order_created a, b;
    struct field_error fa = {"", ""}, fb = {"", ""};
    enum err ea = event_order_created_decode(body, size, &a, &fa);
    if (ea != event_order_created_from(o, &b, &fb) || !same_error(&fa, &fb))
        abort();
    char *ta = ea == ERR_OK ? event_order_created_encode(&a) : NULL;
    char *tb = ea == ERR_OK ? event_order_created_encode(&b) : NULL;
    if (ta && strcmp(ta, tb) != 0)
        abort();
    free(ta);
    free(tb);
    event_order_created_cleanup(&a);
    event_order_created_cleanup(&b);
    struct inventory_reply ra, rb;
    struct field_error ga = {"", ""}, gb = {"", ""};
    ea = event_reply_decode(body, size, &ra, &ga);
    if (ea != event_reply_from(o, &rb, &gb) || !same_error(&ga, &gb) ||
        (ea == ERR_OK && memcmp(&ra, &rb, sizeof ra) != 0))
        abort();
    json_decref(o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* exactly size bytes, no NUL after them: a read past the body is caught */
    char *body = xmalloc(size ? size : 1);
    memcpy(body, data, size);
    fast_path(body, size);
    both_paths(body, size);
    char id[UUID_STR_LEN];
    if (event_peek_id(body, size, id) == ERR_OK && !uuid_valid(id))
        abort();
    order_created(body, size);
    reply(body, size);
    free(body);
    return 0;
}
