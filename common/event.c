/* event.c - JSON codecs and field rules for the contract's events.
 * Pure functions over jansson; owns no state and does no I/O. */
#include "event.h"
#include "json_fast.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static enum err fail(struct field_error *fe, const char *field, const char *message)
{
    if (fe) {
        snprintf(fe->field, sizeof fe->field, "%s", field);
        snprintf(fe->message, sizeof fe->message, "%s", message);
    }
    return ERR_VALIDATION;
}

static int sku_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == '-';
}

int event_sku_valid(const char *sku)
{
    size_t n = 0;
    for (; sku[n]; n++)
        if (n == SKU_MAX || !sku_char(sku[n]))
            return 0;
    return n > 0;
}

/* Bytes of the UTF-8 sequence that starts with b0, b1 (0 if invalid):
 * rejects overlong forms, surrogates and code points past U+10FFFF. */
static int utf8_seq_len(unsigned char b0, unsigned char b1)
{
    if (b0 < 0x80)
        return 1;
    if (b0 >= 0xC2 && b0 <= 0xDF)
        return 2;
    if (b0 == 0xE0)
        return b1 >= 0xA0 ? 3 : 0;
    if (b0 == 0xED)
        return b1 < 0xA0 ? 3 : 0;
    if (b0 >= 0xE1 && b0 <= 0xEF)
        return 3;
    if (b0 == 0xF0)
        return b1 >= 0x90 ? 4 : 0;
    if (b0 == 0xF4)
        return b1 < 0x90 ? 4 : 0;
    if (b0 >= 0xF1 && b0 <= 0xF3)
        return 4;
    return 0;
}

long event_utf8_len(const char *s)
{
    long n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; n++) {
        int len = utf8_seq_len(p[0], p[1]);
        if (len == 0)
            return -1;
        for (int i = 1; i < len; i++)
            if ((p[i] & 0xC0) != 0x80)
                return -1;
        p += len;
    }
    return n;
}

static enum err item_fail(struct field_error *fe, size_t i, const char *what, const char *msg)
{
    char field[64];
    snprintf(field, sizeof field, "items[%zu]%s", i, what);
    return fail(fe, field, msg);
}

/* A JSON object or array the decoders read: a node of jansson's tree, or
 * the members or elements json_fast found in plain text (the same values,
 * no tree built). One set of field rules reads both. */
struct node {
    const json_t *tree;               /* NULL: it[0..n) */
    const struct json_fast_item *it;
    size_t n;                         /* an array's length */
};

static const struct json_fast_item *member(const struct node *o, const char *key)
{
    size_t len = strlen(key);
    for (size_t i = 0; i < o->n; i++)
        if (o->it[i].keylen == len && memcmp(o->it[i].key, key, len) == 0)
            return &o->it[i];
    return NULL;
}

/* The string at key (not NUL-terminated: use *len), or NULL. */
static const char *str_at(const struct node *o, const char *key, size_t *len)
{
    if (o->tree) {
        const json_t *v = json_object_get(o->tree, key);
        *len = json_string_length(v);
        return json_string_value(v); /* NULL for a non-string */
    }
    const struct json_fast_item *it = member(o, key);
    *len = it && it->kind == JF_STRING ? it->vallen : 0;
    return it && it->kind == JF_STRING ? it->val : NULL;
}

/* The integer at key into *v; 0 if it is not an integer. */
static int int_at(const struct node *o, const char *key, json_int_t *v)
{
    if (o->tree) {
        const json_t *j = json_object_get(o->tree, key);
        *v = json_integer_value(j);
        return json_is_integer(j);
    }
    const struct json_fast_item *it = member(o, key);
    if (!it || it->kind != JF_INTEGER)
        return 0;
    *v = json_fast_int(it);
    return 1;
}

/* The array at key into *l, its elements (fast) into e[0..max); 0 if it
 * is not an array, or (fast) has more elements than max. */
static int array_at(const struct node *o, const char *key, struct node *l,
                    struct json_fast_item *e, int max)
{
    if (o->tree) {
        const json_t *a = json_object_get(o->tree, key);
        *l = (struct node){.tree = a, .n = json_array_size(a)};
        return json_is_array(a);
    }
    const struct json_fast_item *it = member(o, key);
    int n = it && it->kind == JF_ARRAY ? json_fast_elements(it->val, it->vallen, e, max) : -1;
    *l = (struct node){.it = e, .n = n < 0 ? 0 : (size_t)n};
    return n >= 0;
}

/* Element i of l as an object into *o, its members (fast) into m; 0 if it
 * is not an object. */
static int object_at(const struct node *l, size_t i, struct node *o, struct json_fast_item *m)
{
    if (l->tree) {
        *o = (struct node){.tree = json_array_get(l->tree, i)};
        return json_is_object(o->tree);
    }
    const struct json_fast_item *e = &l->it[i];
    /* its members were checked (at most JSON_FAST_MAX_MEMBERS) with the whole text */
    int n = e->kind == JF_OBJECT ? json_fast_members(e->val, e->vallen, m, JSON_FAST_MAX_MEMBERS) : -1;
    *o = (struct node){.it = m, .n = n < 0 ? 0 : (size_t)n};
    return n >= 0;
}

/* The string at key into dst (dstlen bytes with its NUL), if ok() takes
 * it. (jansson refuses \u0000, so a string has no NUL inside.) */
static int copy_str(const struct node *o, const char *key, char *dst, size_t dstlen,
                    int (*ok)(const char *))
{
    size_t n;
    const char *v = str_at(o, key, &n);
    if (!v || n >= dstlen)
        return 0;
    memcpy(dst, v, n);
    dst[n] = '\0';
    if (ok(dst))
        return 1;
    memset(dst, 0, n); /* what a failed decode leaves: the field as it was, zeroed */
    return 0;
}

/* qty must be a JSON integer (not 1.5, not "2") in range. */
static enum err item_parse(const struct node *l, size_t i, struct order_item *out,
                           struct field_error *fe)
{
    struct json_fast_item m[JSON_FAST_MAX_MEMBERS];
    struct node it;
    json_int_t qty;
    if (!object_at(l, i, &it, m))
        return item_fail(fe, i, "", "must be an object with sku and qty");
    if (!copy_str(&it, "sku", out->sku, sizeof out->sku, event_sku_valid))
        return item_fail(fe, i, ".sku", "must be 1-64 characters of A-Z a-z 0-9 . _ -");
    if (!int_at(&it, "qty", &qty) || qty < 1 || qty > QTY_MAX)
        return item_fail(fe, i, ".qty", "must be an integer from 1 to 10000");
    out->qty = (int)qty;
    return ERR_OK;
}

/* is_array: l is an array (else l->n is 0). */
static enum err items_parse(const struct node *l, int is_array, struct order_item **out,
                            size_t *n, struct field_error *fe)
{
    size_t count = l->n;
    if (!is_array || count < 1 || count > ITEMS_MAX)
        return fail(fe, "items", "must be an array of 1 to 100 items");
    struct order_item *v = xcalloc(count, sizeof *v);
    for (size_t i = 0; i < count; i++) {
        if (item_parse(l, i, &v[i], fe) != ERR_OK)
            goto bad;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(v[j].sku, v[i].sku) == 0) {
                item_fail(fe, i, ".sku", "duplicate sku within the order");
                goto bad;
            }
        }
    }
    *out = v;
    *n = count;
    return ERR_OK;
bad:
    free(v);
    return ERR_VALIDATION;
}

enum err event_items_parse(const json_t *items, struct order_item **out, size_t *n,
                           struct field_error *fe)
{
    struct node l = {.tree = items, .n = json_array_size(items)};
    return items_parse(&l, json_is_array(items), out, n, fe);
}

void event_items_append(struct buf *b, const struct order_item *items, size_t n)
{
    buf_append(b, "[", 1);
    for (size_t i = 0; i < n; i++) {
        buf_json_field(b, i ? ",{\"sku\":" : "{\"sku\":", items[i].sku);
        buf_append(b, ",\"qty\":", 7);
        buf_int(b, items[i].qty);
        buf_append(b, "}", 1);
    }
    buf_append(b, "]", 1);
}

void event_order_created_append(struct buf *b, const struct order_created *e)
{
    buf_json_field(b, "{\"event_id\":", e->event_id);
    buf_json_field(b, ",\"type\":", "OrderCreated");
    buf_json_field(b, ",\"order_id\":", e->order_id);
    buf_json_field(b, ",\"customer_id\":", e->customer_id);
    buf_append(b, ",\"items\":", 9);
    event_items_append(b, e->items, e->nitems);
    buf_json_field(b, ",\"occurred_at\":", e->occurred_at);
    buf_append(b, "}", 1);
}

char *event_order_created_encode(const struct order_created *e)
{
    struct buf b;
    buf_init(&b);
    event_order_created_append(&b, e);
    return b.data;
}

/* Copies a required string field that must satisfy ok(), into dst. */
static enum err take_str(const struct node *o, const char *key, char *dst, size_t dstlen,
                         int (*ok)(const char *), struct field_error *fe)
{
    if (!copy_str(o, key, dst, dstlen, ok))
        return fail(fe, key, "missing or invalid");
    if (ok == uuid_valid) /* one spelling per id: Postgres prints uuids in lower case */
        for (char *p = dst; *p; p++)
            *p = (char)tolower((unsigned char)*p);
    return ERR_OK;
}

int event_customer_id_valid(const char *s)
{
    long n = event_utf8_len(s);
    return n >= 1 && n <= CUSTOMER_ID_MAX;
}

enum err event_load_object(const char *body, size_t len, json_t **out, struct field_error *fe)
{
    json_error_t jerr;
    json_t *o = json_load_body(body, len, &jerr);
    *out = NULL;
    if (!o) {
        /* the parser quotes the text near the fault, which may be any bytes */
        struct buf why;
        buf_init(&why);
        buf_printf(&why, "body is not valid JSON: ");
        buf_utf8_preview(&why, jerr.text, strlen(jerr.text), sizeof fe->message / 2);
        fail(fe, "", why.data);
        buf_cleanup(&why);
        return ERR_INVALID;
    }
    if (!json_is_object(o)) {
        json_decref(o);
        return fail(fe, "", "body must be a JSON object");
    }
    *out = o;
    return ERR_OK;
}

/* body for a decoder, after zeroing out (what a failed decode leaves): the
 * members of a plain body into m (no tree built), else jansson's tree into
 * *tree (the caller json_decref()s it). 0 if it is not a JSON object (fe
 * says why). */
static int load(const char *body, size_t len, void *out, size_t outlen, struct node *o,
                struct json_fast_item *m, json_t **tree, struct field_error *fe)
{
    memset(out, 0, outlen);
    int n = json_fast_members(body, len, m, JSON_FAST_MAX_MEMBERS);
    *tree = NULL;
    if (n < 0)
        event_load_object(body, len, tree, fe);
    *o = (struct node){.tree = *tree, .it = m, .n = n < 0 ? 0 : (size_t)n};
    return n >= 0 || *tree;
}

static int type_is(const struct node *o, const char *type)
{
    size_t n;
    const char *t = str_at(o, "type", &n);
    return t && n == strlen(type) && memcmp(t, type, n) == 0;
}

static enum err order_created_of(const struct node *o, struct order_created *out,
                                 struct field_error *fe)
{
    struct json_fast_item el[ITEMS_MAX];
    struct node items;
    enum err e = ERR_OK;
    if (!type_is(o, "OrderCreated"))
        e = fail(fe, "type", "must be OrderCreated");
    if (e == ERR_OK) e = take_str(o, "event_id", out->event_id, sizeof out->event_id, uuid_valid, fe);
    if (e == ERR_OK) e = take_str(o, "order_id", out->order_id, sizeof out->order_id, uuid_valid, fe);
    if (e == ERR_OK) e = take_str(o, "customer_id", out->customer_id, sizeof out->customer_id, event_customer_id_valid, fe);
    if (e == ERR_OK) e = take_str(o, "occurred_at", out->occurred_at, sizeof out->occurred_at, time_stamp_valid, fe);
    if (e == ERR_OK) {
        int is_array = array_at(o, "items", &items, el, ITEMS_MAX);
        e = items_parse(&items, is_array, &out->items, &out->nitems, fe);
    }
    return e == ERR_OK ? ERR_OK : ERR_POISON;
}

enum err event_order_created_from(const json_t *o, struct order_created *out,
                                  struct field_error *fe)
{
    memset(out, 0, sizeof *out);
    return order_created_of(&(struct node){.tree = o}, out, fe);
}

enum err event_order_created_decode(const char *body, size_t len, struct order_created *out,
                                    struct field_error *fe)
{
    struct json_fast_item m[JSON_FAST_MAX_MEMBERS];
    struct node o;
    json_t *tree;
    enum err e = load(body, len, out, sizeof *out, &o, m, &tree, fe)
                     ? order_created_of(&o, out, fe) : ERR_POISON;
    json_decref(tree);
    return e;
}

void event_order_created_cleanup(struct order_created *e)
{
    free(e->items);
    e->items = NULL;
    e->nitems = 0;
}

static const char *const reply_subjects[] = {SUBJECT_RESERVED, SUBJECT_REJECTED};
static const char *const reply_types[] = {"InventoryReserved", "InventoryRejected"};
static const char *const reject_reasons[] = {"insufficient_stock", "unknown_sku"};

const char *event_reply_subject(enum reply_kind k) { return reply_subjects[k]; }
const char *event_reply_type(enum reply_kind k) { return reply_types[k]; }

void event_reply_append(struct buf *b, const struct inventory_reply *r)
{
    buf_json_field(b, "{\"event_id\":", r->event_id);
    buf_json_field(b, ",\"type\":", reply_types[r->kind]);
    buf_json_field(b, ",\"order_id\":", r->order_id);
    buf_json_field(b, ",\"occurred_at\":", r->occurred_at);
    if (r->kind == REPLY_REJECTED)
        buf_json_field(b, ",\"reason\":", r->reason);
    buf_append(b, "}", 1);
}

char *event_reply_encode(const struct inventory_reply *r)
{
    struct buf b;
    buf_init(&b);
    event_reply_append(&b, r);
    return b.data;
}

static int reason_ok(const char *s)
{
    for (size_t i = 0; i < ARRAY_LEN(reject_reasons); i++)
        if (strcmp(s, reject_reasons[i]) == 0)
            return 1;
    return 0;
}

static enum err reply_of(const struct node *o, struct inventory_reply *out,
                         struct field_error *fe)
{
    enum err e = ERR_OK;
    if (type_is(o, reply_types[REPLY_RESERVED]))
        out->kind = REPLY_RESERVED;
    else if (type_is(o, reply_types[REPLY_REJECTED]))
        out->kind = REPLY_REJECTED;
    else
        e = fail(fe, "type", "must be InventoryReserved or InventoryRejected");
    if (e == ERR_OK) e = take_str(o, "event_id", out->event_id, sizeof out->event_id, uuid_valid, fe);
    if (e == ERR_OK) e = take_str(o, "order_id", out->order_id, sizeof out->order_id, uuid_valid, fe);
    if (e == ERR_OK) e = take_str(o, "occurred_at", out->occurred_at, sizeof out->occurred_at, time_stamp_valid, fe);
    if (e == ERR_OK && out->kind == REPLY_REJECTED)
        e = take_str(o, "reason", out->reason, sizeof out->reason, reason_ok, fe);
    return e == ERR_OK ? ERR_OK : ERR_POISON;
}

enum err event_reply_from(const json_t *o, struct inventory_reply *out, struct field_error *fe)
{
    memset(out, 0, sizeof *out);
    return reply_of(&(struct node){.tree = o}, out, fe);
}

enum err event_reply_decode(const char *body, size_t len, struct inventory_reply *out,
                            struct field_error *fe)
{
    struct json_fast_item m[JSON_FAST_MAX_MEMBERS];
    struct node o;
    json_t *tree;
    enum err e = load(body, len, out, sizeof *out, &o, m, &tree, fe) ? reply_of(&o, out, fe)
                                                                     : ERR_POISON;
    json_decref(tree);
    return e;
}

enum err event_peek_id(const char *body, size_t len, char out[UUID_STR_LEN])
{
    struct json_fast_item m[JSON_FAST_MAX_MEMBERS];
    struct node o;
    json_t *tree;
    enum err e = load(body, len, out, UUID_STR_LEN, &o, m, &tree, NULL) &&
                         take_str(&o, "event_id", out, UUID_STR_LEN, uuid_valid, NULL) == ERR_OK
                     ? ERR_OK
                     : ERR_POISON;
    json_decref(tree);
    return e;
}
