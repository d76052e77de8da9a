/* test_event.c - the contract's event bodies: OrderCreated and the two
 * inventory replies round-trip through their codecs, and every body that
 * can never be processed decodes to ERR_POISON (it goes to the dead-letter
 * table instead of blocking the stream). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "json_fast.h"
#include "suites.h"

#define EVENT_ID "0b6c7a52-3f7e-4c3e-9d2a-5b1e8f0a1c11"
#define ORDER_ID "6f1d2c3b-4a59-4e8f-8c7d-2a1b0c9d8e7f"
#define OCCURRED "2026-01-02T03:04:05.123456Z"

/* An items array of n entries with distinct valid skus, qty 1. */
static json_t *items_of(size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        char sku[32];
        snprintf(sku, sizeof sku, "SKU-%zu", i);
        json_array_append_new(a, json_pack("{s:s, s:i}", "sku", sku, "qty", 1));
    }
    return a;
}

/* A valid OrderCreated body as a JSON object, for tests to break. */
static json_t *order_created_json(void)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:[{s:s, s:i}, {s:s, s:i}], s:s}",
                     "event_id", EVENT_ID, "type", "OrderCreated", "order_id", ORDER_ID,
                     "customer_id", "c-1", "items", "sku", "SKU-1", "qty", 2, "sku", "SKU-2",
                     "qty", 1, "occurred_at", OCCURRED);
}

/* Decodes the text of o (consumed) as OrderCreated; fills fe. */
static enum err decode_json(json_t *o, struct field_error *fe)
{
    char *body = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    struct order_created ev;
    memset(fe, 0, sizeof *fe);
    enum err e = event_order_created_decode(body, strlen(body), &ev, fe);
    if (e != ERR_OK)
        ck_assert_ptr_null(ev.items);
    event_order_created_cleanup(&ev);
    free(body);
    return e;
}

static enum err decode_text(const char *body)
{
    struct order_created ev;
    struct field_error fe;
    enum err e = event_order_created_decode(body, strlen(body), &ev, &fe);
    event_order_created_cleanup(&ev);
    return e;
}

/* The valid body with field `key` replaced by v (NULL: removed). */
static enum err decode_with(const char *key, json_t *v, struct field_error *fe)
{
    json_t *o = order_created_json();
    if (v)
        json_object_set_new(o, key, v);
    else
        json_object_del(o, key);
    return decode_json(o, fe);
}

/* The valid body with items[i].key replaced by v. */
static enum err decode_with_item(size_t i, const char *key, json_t *v, struct field_error *fe)
{
    json_t *o = order_created_json();
    json_object_set_new(json_array_get(json_object_get(o, "items"), i), key, v);
    return decode_json(o, fe);
}

static const char *sku_of_len(char *out, size_t n)
{
    memset(out, 'A', n);
    out[n] = '\0';
    return out;
}

/* --- OrderCreated round trip ------------------------------------------ */

START_TEST(order_created_round_trips_every_field)
{
    struct order_item items[] = {{"SKU-1", 2}, {"a.b_c-9", 10000}, {"Z", 1}};
    struct order_created in = {.items = items, .nitems = 3};
    snprintf(in.event_id, sizeof in.event_id, "%s", EVENT_ID);
    snprintf(in.order_id, sizeof in.order_id, "%s", ORDER_ID);
    snprintf(in.customer_id, sizeof in.customer_id, "%s", "cliënt-€-1");
    snprintf(in.occurred_at, sizeof in.occurred_at, "%s", OCCURRED);
    char *body = event_order_created_encode(&in);
    ck_assert_ptr_nonnull(body);

    struct order_created out;
    struct field_error fe = {{0}, {0}};
    ck_assert_int_eq(event_order_created_decode(body, strlen(body), &out, &fe), ERR_OK);
    ck_assert_str_eq(out.event_id, EVENT_ID);
    ck_assert_str_eq(out.order_id, ORDER_ID);
    ck_assert_str_eq(out.customer_id, "cliënt-€-1");
    ck_assert_str_eq(out.occurred_at, OCCURRED);
    ck_assert_uint_eq(out.nitems, 3);
    for (size_t i = 0; i < 3; i++) {
        ck_assert_str_eq(out.items[i].sku, items[i].sku);
        ck_assert_int_eq(out.items[i].qty, items[i].qty);
    }
    event_order_created_cleanup(&out);
    ck_assert_ptr_null(out.items);
    free(body);
}
END_TEST

START_TEST(order_created_encodes_contract_shape)
{
    struct order_item items[] = {{"SKU-1", 2}};
    struct order_created in = {.items = items, .nitems = 1};
    snprintf(in.event_id, sizeof in.event_id, "%s", EVENT_ID);
    snprintf(in.order_id, sizeof in.order_id, "%s", ORDER_ID);
    snprintf(in.customer_id, sizeof in.customer_id, "%s", "c-1");
    snprintf(in.occurred_at, sizeof in.occurred_at, "%s", OCCURRED);
    char *body = event_order_created_encode(&in);
    json_t *o = json_loads(body, 0, NULL);
    ck_assert_ptr_nonnull(o);
    ck_assert_str_eq(json_string_value(json_object_get(o, "type")), "OrderCreated");
    ck_assert_str_eq(json_string_value(json_object_get(o, "event_id")), EVENT_ID);
    json_t *item = json_array_get(json_object_get(o, "items"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(item, "sku")), "SKU-1");
    ck_assert_int_eq(json_integer_value(json_object_get(item, "qty")), 2);
    ck_assert_uint_eq(json_object_size(o), 6);
    json_decref(o);
    free(body);
}
END_TEST

START_TEST(order_created_accepts_100_items)
{
    struct field_error fe;
    ck_assert_int_eq(decode_with("items", items_of(100), &fe), ERR_OK);
}
END_TEST

START_TEST(order_created_ignores_unknown_fields)
{
    struct field_error fe;
    ck_assert_int_eq(decode_with("trace", json_string("x"), &fe), ERR_OK);
}
END_TEST

/* --- OrderCreated poison ---------------------------------------------- */

START_TEST(decode_rejects_not_json)
{
    ck_assert_int_eq(decode_text("hello"), ERR_POISON);
    ck_assert_int_eq(decode_text(""), ERR_POISON);
}
END_TEST

START_TEST(decode_rejects_truncated_json)
{
    json_t *o = order_created_json();
    char *body = json_dumps(o, JSON_COMPACT);
    body[strlen(body) / 2] = '\0';
    ck_assert_int_eq(decode_text(body), ERR_POISON);
    free(body);
    json_decref(o);
}
END_TEST

START_TEST(decode_rejects_non_object)
{
    ck_assert_int_eq(decode_text("[1,2]"), ERR_POISON);
    ck_assert_int_eq(decode_text("\"" EVENT_ID "\""), ERR_POISON);
    ck_assert_int_eq(decode_text("null"), ERR_POISON);
}
END_TEST

/* Which order_id would win is undefined: the body is poison. */
START_TEST(decode_rejects_duplicate_keys)
{
    json_t *o = order_created_json();
    char *valid = json_dumps(o, JSON_COMPACT);
    char *body = xasprintf("{\"order_id\":\"%s\",%s", EVENT_ID, valid + 1);
    ck_assert_int_eq(decode_text(valid), ERR_OK);
    ck_assert_int_eq(decode_text(body), ERR_POISON);
    free(body);
    free(valid);
    json_decref(o);
}
END_TEST

START_TEST(decode_rejects_wrong_type)
{
    struct field_error fe;
    ck_assert_int_eq(decode_with("type", json_string("InventoryReserved"), &fe), ERR_POISON);
    ck_assert_str_eq(fe.field, "type");
    ck_assert_int_eq(decode_with("type", NULL, &fe), ERR_POISON);
    ck_assert_int_eq(decode_with("type", json_integer(1), &fe), ERR_POISON);
}
END_TEST

START_TEST(decode_rejects_bad_event_id)
{
    struct field_error fe;
    ck_assert_int_eq(decode_with("event_id", NULL, &fe), ERR_POISON);
    ck_assert_str_eq(fe.field, "event_id");
    ck_assert_int_eq(decode_with("event_id", json_string("not-a-uuid"), &fe), ERR_POISON);
    ck_assert_int_eq(decode_with("event_id", json_string(""), &fe), ERR_POISON);
    ck_assert_int_eq(decode_with("event_id", json_integer(42), &fe), ERR_POISON);
}
END_TEST

START_TEST(decode_rejects_bad_order_id)
{
    struct field_error fe;
    ck_assert_int_eq(decode_with("order_id", NULL, &fe), ERR_POISON);
    ck_assert_str_eq(fe.field, "order_id");
    ck_assert_int_eq(decode_with("order_id", json_string(ORDER_ID "0"), &fe), ERR_POISON);
    ck_assert_int_eq(decode_with("order_id", json_null(), &fe), ERR_POISON);
}
END_TEST

START_TEST(decode_rejects_bad_customer_id)
{
    struct field_error fe;
    char long_id[66];
    ck_assert_int_eq(decode_with("customer_id", NULL, &fe), ERR_POISON);
    ck_assert_str_eq(fe.field, "customer_id");
    ck_assert_int_eq(decode_with("customer_id", json_string(""), &fe), ERR_POISON);
    ck_assert_int_eq(decode_with("customer_id", json_string(sku_of_len(long_id, 65)), &fe),
                     ERR_POISON);
}
END_TEST

START_TEST(decode_rejects_missing_occurred_at)
{
    struct field_error fe;
    ck_assert_int_eq(decode_with("occurred_at", NULL, &fe), ERR_POISON);
    ck_assert_str_eq(fe.field, "occurred_at");
}
END_TEST


START_TEST(decode_rejects_missing_or_empty_items)
{
    struct field_error fe;
    ck_assert_int_eq(decode_with("items", NULL, &fe), ERR_POISON);
    ck_assert_str_eq(fe.field, "items");
    ck_assert_int_eq(decode_with("items", json_array(), &fe), ERR_POISON);
    ck_assert_str_eq(fe.field, "items");
    ck_assert_int_eq(decode_with("items", json_object(), &fe), ERR_POISON);
}
END_TEST

START_TEST(decode_rejects_101_items)
{
    struct field_error fe;
    ck_assert_int_eq(decode_with("items", items_of(101), &fe), ERR_POISON);
    ck_assert_str_eq(fe.field, "items");
}
END_TEST

START_TEST(decode_rejects_bad_qty)
{
    json_t *bad[] = {json_integer(0), json_integer(-1), json_integer(10001), json_real(1.5),
                     json_string("2"), json_null()};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct field_error fe;
        ck_assert_int_eq(decode_with_item(1, "qty", bad[i], &fe), ERR_POISON);
        ck_assert_str_eq(fe.field, "items[1].qty");
    }
}
END_TEST

START_TEST(decode_rejects_bad_sku)
{
    char sku65[66];
    json_t *bad[] = {json_string("SKU 1"), json_string("SKU/1"), json_string(""),
                     json_string(sku_of_len(sku65, 65)), json_integer(1)};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct field_error fe;
        ck_assert_int_eq(decode_with_item(0, "sku", bad[i], &fe), ERR_POISON);
        ck_assert_str_eq(fe.field, "items[0].sku");
    }
}
END_TEST

START_TEST(decode_rejects_duplicate_skus)
{
    struct field_error fe;
    ck_assert_int_eq(decode_with_item(1, "sku", json_string("SKU-1"), &fe), ERR_POISON);
    ck_assert_str_eq(fe.field, "items[1].sku");
}
END_TEST

/* --- replies ------------------------------------------------------------ */

static struct inventory_reply reply(enum reply_kind kind, const char *reason)
{
    struct inventory_reply r = {.kind = kind};
    snprintf(r.event_id, sizeof r.event_id, "%s", EVENT_ID);
    snprintf(r.order_id, sizeof r.order_id, "%s", ORDER_ID);
    snprintf(r.reason, sizeof r.reason, "%s", reason);
    snprintf(r.occurred_at, sizeof r.occurred_at, "%s", OCCURRED);
    return r;
}

static enum err reply_decode_text(const char *body, struct inventory_reply *out)
{
    struct field_error fe;
    return event_reply_decode(body, strlen(body), out, &fe);
}

START_TEST(reserved_round_trips_without_reason)
{
    struct inventory_reply in = reply(REPLY_RESERVED, ""), out;
    char *body = event_reply_encode(&in);
    json_t *o = json_loads(body, 0, NULL);
    ck_assert_str_eq(json_string_value(json_object_get(o, "type")), "InventoryReserved");
    ck_assert_ptr_null(json_object_get(o, "reason"));
    json_decref(o);
    ck_assert_int_eq(reply_decode_text(body, &out), ERR_OK);
    ck_assert_int_eq(out.kind, REPLY_RESERVED);
    ck_assert_str_eq(out.event_id, EVENT_ID);
    ck_assert_str_eq(out.order_id, ORDER_ID);
    ck_assert_str_eq(out.occurred_at, OCCURRED);
    free(body);
}
END_TEST

/* The body as the jansson encoder wrote it before: same keys, same order. */
START_TEST(reply_body_is_compact_in_contract_order)
{
    struct inventory_reply in = reply(REPLY_REJECTED, "unknown_sku");
    char *body = event_reply_encode(&in);
    ck_assert_str_eq(body, "{\"event_id\":\"" EVENT_ID "\",\"type\":\"InventoryRejected\","
                           "\"order_id\":\"" ORDER_ID "\",\"occurred_at\":\"" OCCURRED "\","
                           "\"reason\":\"unknown_sku\"}");
    free(body);
}
END_TEST

START_TEST(rejected_round_trips_each_reason)
{
    const char *reasons[] = {"insufficient_stock", "unknown_sku"};
    for (size_t i = 0; i < 2; i++) {
        struct inventory_reply in = reply(REPLY_REJECTED, reasons[i]), out;
        char *body = event_reply_encode(&in);
        json_t *o = json_loads(body, 0, NULL);
        ck_assert_str_eq(json_string_value(json_object_get(o, "type")), "InventoryRejected");
        json_decref(o);
        ck_assert_int_eq(reply_decode_text(body, &out), ERR_OK);
        ck_assert_int_eq(out.kind, REPLY_REJECTED);
        ck_assert_str_eq(out.reason, reasons[i]);
        ck_assert_str_eq(out.order_id, ORDER_ID);
        free(body);
    }
}
END_TEST

/* A reply body from a valid InventoryRejected with `key` replaced by v
 * (NULL: removed), decoded. */
static enum err reply_decode_with(const char *key, json_t *v)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s}", "event_id", EVENT_ID, "type",
                          "InventoryRejected", "order_id", ORDER_ID, "reason", "unknown_sku",
                          "occurred_at", OCCURRED);
    if (v)
        json_object_set_new(o, key, v);
    else
        json_object_del(o, key);
    char *body = json_dumps(o, JSON_COMPACT);
    struct inventory_reply out;
    enum err e = reply_decode_text(body, &out);
    free(body);
    json_decref(o);
    return e;
}

START_TEST(rejected_requires_a_known_reason)
{
    ck_assert_int_eq(reply_decode_with("reason", json_string("unknown_sku")), ERR_OK);
    ck_assert_int_eq(reply_decode_with("reason", NULL), ERR_POISON);
    ck_assert_int_eq(reply_decode_with("reason", json_string("out_of_stock")), ERR_POISON);
    ck_assert_int_eq(reply_decode_with("reason", json_string("")), ERR_POISON);
    ck_assert_int_eq(reply_decode_with("reason", json_integer(1)), ERR_POISON);
}
END_TEST

START_TEST(reply_decode_rejects_other_types_and_bad_ids)
{
    struct inventory_reply out;
    ck_assert_int_eq(reply_decode_with("type", json_string("OrderCreated")), ERR_POISON);
    ck_assert_int_eq(reply_decode_with("type", NULL), ERR_POISON);
    ck_assert_int_eq(reply_decode_with("event_id", json_string("x")), ERR_POISON);
    ck_assert_int_eq(reply_decode_with("event_id", NULL), ERR_POISON);
    ck_assert_int_eq(reply_decode_with("order_id", NULL), ERR_POISON);
    ck_assert_int_eq(reply_decode_with("order_id", json_string(EVENT_ID "1")), ERR_POISON);
    ck_assert_int_eq(reply_decode_with("occurred_at", NULL), ERR_POISON);
    ck_assert_int_eq(reply_decode_text("{\"event_id\":\"" EVENT_ID "\"", &out), ERR_POISON);
    ck_assert_int_eq(reply_decode_text("[]", &out), ERR_POISON);
}
END_TEST

/* occurred_at is a date-time (time_stamp_valid), of any precision (up to
 * OCCURRED_AT_MAX bytes); anything else is poison naming it. */
START_TEST(occurred_at_is_a_date_time)
{
    struct field_error fe;
    const char *garbage[] = {"garbage!", "2026-13-45T99:99:99Z", "1767322800", "2026-01-02"};
    for (size_t i = 0; i < ARRAY_LEN(garbage); i++) {
        ck_assert_int_eq(decode_with("occurred_at", json_string(garbage[i]), &fe), ERR_POISON);
        ck_assert_str_eq(fe.field, "occurred_at");
        ck_assert_int_eq(reply_decode_with("occurred_at", json_string(garbage[i])), ERR_POISON);
    }
    ck_assert_int_eq(decode_with("occurred_at", json_integer(1767322800), &fe), ERR_POISON);
    /* 15 fraction digits (42 bytes) was refused for its length */
    const char *precise = "2026-01-02T03:04:05.123456789012345+01:00";
    ck_assert_int_eq(decode_with("occurred_at", json_string(precise), &fe), ERR_OK);
    ck_assert_int_eq(reply_decode_with("occurred_at", json_string(precise)), ERR_OK);
    ck_assert_int_eq(decode_with("occurred_at", json_string("2026-01-02 03:04:05z"), &fe), ERR_OK);
    ck_assert_int_eq(decode_with("occurred_at", json_string("2026-12-07T16:10:00.123456"), &fe),
                     ERR_OK); /* Python's isoformat() of a naive datetime */
}
END_TEST

START_TEST(reply_subjects_and_types_match_contract)
{
    ck_assert_str_eq(event_reply_subject(REPLY_RESERVED), "inventory.reserved");
    ck_assert_str_eq(event_reply_subject(REPLY_REJECTED), "inventory.rejected");
    ck_assert_str_eq(event_reply_type(REPLY_RESERVED), "InventoryReserved");
    ck_assert_str_eq(event_reply_type(REPLY_REJECTED), "InventoryRejected");
}
END_TEST

/* --- peek, field rules ------------------------------------------------ */

START_TEST(peek_id_reads_event_id_of_any_event)
{
    char id[UUID_STR_LEN] = "";
    const char *body = "{\"type\":\"SomethingElse\",\"items\":\"garbage\","
                       "\"event_id\":\"" EVENT_ID "\"}";
    ck_assert_int_eq(event_peek_id(body, strlen(body), id), ERR_OK);
    ck_assert_str_eq(id, EVENT_ID);
}
END_TEST

START_TEST(peek_id_rejects_bodies_without_uuid_event_id)
{
    char id[UUID_STR_LEN];
    const char *bad[] = {"", "not json", "[\"" EVENT_ID "\"]", "{\"order_id\":\"" ORDER_ID "\"}",
                         "{\"event_id\":\"abc\"}", "{\"event_id\":7}",
                         "{\"event_id\":\"" EVENT_ID "\""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(event_peek_id(bad[i], strlen(bad[i]), id) == ERR_POISON, "accepted %s",
                      bad[i]);
}
END_TEST

START_TEST(sku_valid_accepts_contract_alphabet)
{
    char sku[65];
    ck_assert(event_sku_valid("SKU-1"));
    ck_assert(event_sku_valid("a.b_c-D9"));
    ck_assert(event_sku_valid("x"));
    ck_assert(event_sku_valid(sku_of_len(sku, 64)));
}
END_TEST

START_TEST(sku_valid_rejects_length_and_characters)
{
    char sku[66];
    const char *bad[] = {"", "SKU 1", "SKU/1", "SKU,1", "SKU\"1", "sk\xc3\xbc", "SKU-1\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(!event_sku_valid(bad[i]), "accepted \"%s\"", bad[i]);
    ck_assert(!event_sku_valid(sku_of_len(sku, 65)));
}
END_TEST

/* n copies of the UTF-8 sequence ch, in a static buffer. */
static const char *repeat(const char *ch, size_t n)
{
    static char out[1024];
    out[0] = '\0';
    for (size_t i = 0; i < n; i++)
        strcat(out, ch);
    return out;
}

START_TEST(customer_id_counts_characters_not_bytes)
{
    ck_assert(event_customer_id_valid("c-1"));
    ck_assert(event_customer_id_valid(repeat("a", 64)));
    ck_assert(event_customer_id_valid(repeat("\xc3\xa9", 64)));          /* é, 128 bytes */
    ck_assert(event_customer_id_valid(repeat("\xe2\x82\xac", 64)));      /* €, 192 bytes */
    ck_assert(event_customer_id_valid(repeat("\xf0\x9f\x98\x80", 64)));  /* 😀, 256 bytes */
}
END_TEST

START_TEST(customer_id_rejects_empty_and_65_characters)
{
    ck_assert(!event_customer_id_valid(""));
    ck_assert(!event_customer_id_valid(repeat("a", 65)));
    ck_assert(!event_customer_id_valid(repeat("\xc3\xa9", 65)));
    ck_assert(!event_customer_id_valid(repeat("\xf0\x9f\x98\x80", 65)));
}
END_TEST

START_TEST(customer_id_rejects_invalid_utf8)
{
    const char *bad[] = {"\xff", "abc\x80", "\xc3", "ok\xe2\x82", "\xf0\x9f\x98", "\xc3\x28"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(!event_customer_id_valid(bad[i]), "accepted bad[%zu]", i);
    ck_assert_int_eq(event_utf8_len("\xff"), -1);
    ck_assert_int_eq(event_utf8_len("a\xc3\xa9\xe2\x82\xac"), 3);
}
END_TEST

static enum err items_parse_text(const char *text, struct field_error *fe)
{
    json_t *a = json_loads(text, JSON_DECODE_ANY, NULL);
    ck_assert_ptr_nonnull(a);
    struct order_item *items = NULL;
    size_t n = 0;
    memset(fe, 0, sizeof *fe);
    enum err e = event_items_parse(a, &items, &n, fe);
    free(items);
    json_decref(a);
    return e;
}

START_TEST(items_parse_names_the_failing_field)
{
    struct field_error fe;
    ck_assert_int_eq(items_parse_text("[{\"sku\":\"A\",\"qty\":1},{\"sku\":\"B\",\"qty\":0}]", &fe),
                     ERR_VALIDATION);
    ck_assert_str_eq(fe.field, "items[1].qty");
    ck_assert_str_ne(fe.message, "");
    ck_assert_int_eq(items_parse_text("[{\"sku\":\"A B\",\"qty\":1}]", &fe), ERR_VALIDATION);
    ck_assert_str_eq(fe.field, "items[0].sku");
    ck_assert_int_eq(items_parse_text("[{\"sku\":\"A\",\"qty\":1},{\"sku\":\"B\",\"qty\":1},"
                                      "{\"sku\":\"A\",\"qty\":1}]", &fe), ERR_VALIDATION);
    ck_assert_str_eq(fe.field, "items[2].sku");
    ck_assert_int_eq(items_parse_text("[{\"sku\":\"A\",\"qty\":1}, 5]", &fe), ERR_VALIDATION);
    ck_assert_str_eq(fe.field, "items[1]");
    ck_assert_int_eq(items_parse_text("[]", &fe), ERR_VALIDATION);
    ck_assert_str_eq(fe.field, "items");
    ck_assert_int_eq(items_parse_text("\"SKU-1\"", &fe), ERR_VALIDATION);
    ck_assert_str_eq(fe.field, "items");
}
END_TEST

START_TEST(items_parse_returns_items_in_order)
{
    json_t *a = json_loads("[{\"sku\":\"B\",\"qty\":3},{\"sku\":\"A\",\"qty\":10000,\"note\":1}]",
                           0, NULL);
    struct order_item *items = NULL;
    size_t n = 0;
    struct field_error fe;
    ck_assert_int_eq(event_items_parse(a, &items, &n, &fe), ERR_OK);
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(items[0].sku, "B");
    ck_assert_int_eq(items[0].qty, 3);
    ck_assert_str_eq(items[1].sku, "A");
    ck_assert_int_eq(items[1].qty, 10000);
    free(items);
    json_decref(a);
}
END_TEST

/* What each decoder says of a body (verdict, field, reason, values), for
 * comparing its two paths. */
struct verdict {
    enum err e;
    struct field_error fe;
    char text[8192]; /* the event read, encoded again (100 items fit); "" when refused */
};

static void order_verdict(struct verdict *v, enum err e, struct order_created *ev)
{
    v->e = e;
    if (e == ERR_OK) {
        char *t = event_order_created_encode(ev);
        snprintf(v->text, sizeof v->text, "%s", t);
        free(t);
    }
    event_order_created_cleanup(ev);
}

static void reply_verdict(struct verdict *v, enum err e, struct inventory_reply *r)
{
    v->e = e;
    if (e == ERR_OK) {
        char *t = event_reply_encode(r);
        snprintf(v->text, sizeof v->text, "%s", t);
        free(t);
    }
}

static void same_verdict(const struct verdict *fast, const struct verdict *tree, const char *body)
{
    ck_assert_msg(fast->e == tree->e, "%d against %d for: %s", fast->e, tree->e, body);
    ck_assert_msg(strcmp(fast->fe.field, tree->fe.field) == 0 &&
                      strcmp(fast->fe.message, tree->fe.message) == 0,
                  "%s %s against %s %s for: %s", fast->fe.field, fast->fe.message,
                  tree->fe.field, tree->fe.message, body);
    ck_assert_str_eq(fast->text, tree->text);
}

/* The decoders read a body through json_fast when it is plain and through
 * jansson's tree otherwise: the same body read either way gives the same
 * verdict, field, reason and event. Only a body jansson refuses is not
 * compared: then the decoder must refuse it too. */
static void both_paths(const char *body)
{
    size_t n = strlen(body);
    struct verdict fast = {0}, tree = {0};
    struct order_created ev;
    struct inventory_reply r;
    char id[UUID_STR_LEN], tid[UUID_STR_LEN];
    json_t *o = json_loadb(body, n, JSON_REJECT_DUPLICATES, NULL); /* jansson alone */
    enum err peek = event_peek_id(body, n, id);
    if (!json_is_object(o)) {
        json_decref(o);
        ck_assert_int_eq(peek, ERR_POISON);
        ck_assert_int_eq(event_order_created_decode(body, n, &ev, NULL), ERR_POISON);
        ck_assert_int_eq(event_reply_decode(body, n, &r, NULL), ERR_POISON);
        event_order_created_cleanup(&ev);
        return;
    }
    order_verdict(&fast, event_order_created_decode(body, n, &ev, &fast.fe), &ev);
    order_verdict(&tree, event_order_created_from(o, &ev, &tree.fe), &ev);
    same_verdict(&fast, &tree, body);
    memset(&fast, 0, sizeof fast);
    memset(&tree, 0, sizeof tree);
    reply_verdict(&fast, event_reply_decode(body, n, &r, &fast.fe), &r);
    reply_verdict(&tree, event_reply_from(o, &r, &tree.fe), &r);
    same_verdict(&fast, &tree, body);
    /* the id as the tree path reads it: the reply decoder's, checked first */
    const char *text = json_string_value(json_object_get(o, "event_id"));
    int tree_ok = text && strlen(text) < sizeof tid && uuid_valid(text);
    ck_assert_msg((peek == ERR_OK) == tree_ok, "peek %d for: %s", peek, body);
    if (tree_ok) {
        snprintf(tid, sizeof tid, "%s", text);
        for (char *p = tid; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        ck_assert_str_eq(id, tid);
    }
    json_decref(o);
}

/* A field refused is left as the decoder found it, zeroed: no caller reads
 * a rejected value by mistake. */
START_TEST(refused_fields_are_left_zeroed)
{
    char id[UUID_STR_LEN];
    memset(id, 'x', sizeof id);
    const char *body = "{\"event_id\":\"nope\"}";
    ck_assert_int_eq(event_peek_id(body, strlen(body), id), ERR_POISON);
    for (size_t i = 0; i < sizeof id; i++)
        ck_assert_int_eq(id[i], 0);
    struct inventory_reply r;
    const char *rejected = "{\"event_id\":\"" EVENT_ID "\",\"type\":\"InventoryRejected\","
                           "\"order_id\":\"" ORDER_ID "\",\"occurred_at\":\"" OCCURRED "\",\"reason\":\"bad\"}";
    ck_assert_int_eq(event_reply_decode(rejected, strlen(rejected), &r, NULL), ERR_POISON);
    ck_assert_str_eq(r.reason, "");
}
END_TEST

/* Every prefix and every one-byte change of each body, both paths. */
START_TEST(fast_and_tree_paths_agree_on_mutations)
{
    const char *bodies[] = {
        "{\"event_id\":\"" EVENT_ID "\",\"type\":\"OrderCreated\",\"order_id\":\"" ORDER_ID
        "\",\"customer_id\":\"c-1\",\"items\":[{\"sku\":\"SKU-1\",\"qty\":2},"
        "{\"sku\":\"S\",\"qty\":10000}],\"occurred_at\":\"" OCCURRED "\"}",
        "{\"event_id\":\"" EVENT_ID "\",\"type\":\"InventoryRejected\",\"order_id\":\""
        ORDER_ID "\",\"occurred_at\":\"" OCCURRED "\",\"reason\":\"unknown_sku\",\"x\":[{}]}",
        "{\"type\":\"InventoryReserved\",\"event_id\":\"0B6C7A52-3F7E-4C3E-9D2A-5B1E8F0A1C11\","
        "\"order_id\":\"" ORDER_ID "\",\"occurred_at\":\"" OCCURRED "\",\"n\":null}",
    };
    static const char subst[] = "{}[]\":,-019.e \\tfnu\x01\x7f\xc3" "AB";
    for (size_t b = 0; b < sizeof bodies / sizeof bodies[0]; b++) {
        size_t n = strlen(bodies[b]);
        char *t = malloc(n + 1);
        for (size_t cut = 0; cut <= n; cut++) {
            memcpy(t, bodies[b], cut);
            t[cut] = '\0';
            both_paths(t);
        }
        for (size_t i = 0; i < n; i++)
            for (size_t k = 0; k < sizeof subst - 1; k++) {
                memcpy(t, bodies[b], n + 1);
                t[i] = subst[k];
                both_paths(t);
            }
        free(t);
    }
}
END_TEST

/* Shapes the mutations do not reach: more items than allowed, items that
 * are not objects, nested duplicates, an object with more members than the
 * fast path takes. */
START_TEST(fast_and_tree_paths_agree_on_shapes)
{
    json_t *o = order_created_json();
    json_object_set_new(o, "items", items_of(ITEMS_MAX + 1));
    char *many = json_dumps(o, JSON_COMPACT);
    json_object_set_new(o, "items", items_of(ITEMS_MAX));
    char *most = json_dumps(o, JSON_COMPACT);
    for (int i = 0; i < JSON_FAST_MAX_MEMBERS - 6; i++) { /* 32 members: the fast path's most */
        char k[16];
        snprintf(k, sizeof k, "f%d", i);
        json_object_set_new(o, k, json_integer(i));
    }
    char *full = json_dumps(o, JSON_COMPACT);
    for (int i = 0; i < JSON_FAST_MAX_MEMBERS; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        json_object_set_new(o, k, json_integer(i));
    }
    char *wide = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    const char *shapes[] = {
        many, most, full, wide,
        "{\"type\":\"OrderCreated\",\"event_id\":\"" EVENT_ID "\",\"order_id\":\"" ORDER_ID
        "\",\"customer_id\":\"c\",\"occurred_at\":\"" OCCURRED "\",\"items\":[1,\"a\",[],null]}",
        "{\"type\":\"OrderCreated\",\"event_id\":\"" EVENT_ID "\",\"order_id\":\"" ORDER_ID
        "\",\"customer_id\":\"c\",\"occurred_at\":\"" OCCURRED "\",\"items\":[{\"sku\":\"A\",\"qty\":1,"
        "\"qty\":2}]}",
        "{\"type\":\"OrderCreated\",\"event_id\":\"" EVENT_ID "\",\"order_id\":\"" ORDER_ID
        "\",\"customer_id\":\"c\",\"occurred_at\":\"" OCCURRED "\",\"items\":[{\"sku\":\"A\",\"qty\":"
        "999999999999999999}]}",
        "{\"type\":\"OrderCreated\",\"event_id\":\"" EVENT_ID "\",\"order_id\":\"" ORDER_ID
        "\",\"customer_id\":\"caf\\u00e9\",\"occurred_at\":\"" OCCURRED "\",\"items\":[{\"sku\":\"A\",\"qty\":1}]}",
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        both_paths(shapes[i]);
    free(many);
    free(most);
    free(full);
    free(wide);
}
END_TEST

Suite *event_suite(void)
{
    Suite *s = suite_create("event");
    TCase *tc = tcase_create("order_created");
    tcase_add_test(tc, order_created_round_trips_every_field);
    tcase_add_test(tc, order_created_encodes_contract_shape);
    tcase_add_test(tc, order_created_accepts_100_items);
    tcase_add_test(tc, order_created_ignores_unknown_fields);
    suite_add_tcase(s, tc);

    tc = tcase_create("poison");
    tcase_add_test(tc, decode_rejects_not_json);
    tcase_add_test(tc, decode_rejects_truncated_json);
    tcase_add_test(tc, decode_rejects_non_object);
    tcase_add_test(tc, decode_rejects_duplicate_keys);
    tcase_add_test(tc, decode_rejects_wrong_type);
    tcase_add_test(tc, decode_rejects_bad_event_id);
    tcase_add_test(tc, decode_rejects_bad_order_id);
    tcase_add_test(tc, decode_rejects_bad_customer_id);
    tcase_add_test(tc, decode_rejects_missing_occurred_at);
    tcase_add_test(tc, occurred_at_is_a_date_time);
    tcase_add_test(tc, decode_rejects_missing_or_empty_items);
    tcase_add_test(tc, decode_rejects_101_items);
    tcase_add_test(tc, decode_rejects_bad_qty);
    tcase_add_test(tc, decode_rejects_bad_sku);
    tcase_add_test(tc, decode_rejects_duplicate_skus);
    suite_add_tcase(s, tc);

    tc = tcase_create("reply");
    tcase_add_test(tc, reserved_round_trips_without_reason);
    tcase_add_test(tc, rejected_round_trips_each_reason);
    tcase_add_test(tc, reply_body_is_compact_in_contract_order);
    tcase_add_test(tc, rejected_requires_a_known_reason);
    tcase_add_test(tc, reply_decode_rejects_other_types_and_bad_ids);
    tcase_add_test(tc, reply_subjects_and_types_match_contract);
    suite_add_tcase(s, tc);

    tc = tcase_create("rules");
    tcase_add_test(tc, peek_id_reads_event_id_of_any_event);
    tcase_add_test(tc, peek_id_rejects_bodies_without_uuid_event_id);
    tcase_add_test(tc, sku_valid_accepts_contract_alphabet);
    tcase_add_test(tc, sku_valid_rejects_length_and_characters);
    tcase_add_test(tc, customer_id_counts_characters_not_bytes);
    tcase_add_test(tc, customer_id_rejects_empty_and_65_characters);
    tcase_add_test(tc, customer_id_rejects_invalid_utf8);
    tcase_add_test(tc, items_parse_names_the_failing_field);
    tcase_add_test(tc, items_parse_returns_items_in_order);
    suite_add_tcase(s, tc);

    tc = tcase_create("paths");
    tcase_add_test(tc, fast_and_tree_paths_agree_on_mutations);
    tcase_add_test(tc, fast_and_tree_paths_agree_on_shapes);
    tcase_add_test(tc, refused_fields_are_left_zeroed);
    suite_add_tcase(s, tc);
    return s;
}
