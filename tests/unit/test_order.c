/* test_order.c - POST /orders under the contract's rules: what is
 * invalid_json (ERR_INVALID), what is validation_failed (ERR_VALIDATION and
 * the field at fault), the Idempotency-Key rule, the idempotency
 * fingerprint and the order document the API returns. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "order.h"
#include "suites.h"

#define ORDER_ID "6f1d2c3b-4a59-4e8f-8c7d-2a1b0c9d8e7f"
#define TS "2026-01-02T03:04:05.123456Z"

struct parsed {
    enum err err;
    struct field_error fe;
};

static struct parsed parse(const char *body)
{
    struct parsed p;
    struct order_request r;
    p.err = order_request_parse(body, strlen(body), &r, &p.fe);
    order_request_cleanup(&r);
    return p;
}

/* Asserts that body fails validation on `field`. */
#define ck_assert_invalid_field(body, want_field)                                       \
    do {                                                                                 \
        struct parsed p_ = parse(body);                                                  \
        ck_assert_msg(p_.err == ERR_VALIDATION, "%s: err %d", (body), (int)p_.err);      \
        ck_assert_str_eq(p_.fe.field, (want_field));                                     \
        ck_assert_str_ne(p_.fe.message, "");                                             \
    } while (0)

/* A body {"customer_id":"c-1","items":[...n distinct skus...]}; caller frees. */
static char *body_with_items(size_t n)
{
    json_t *items = json_array();
    for (size_t i = 0; i < n; i++) {
        char sku[32];
        snprintf(sku, sizeof sku, "SKU-%zu", i);
        json_array_append_new(items, json_pack("{s:s, s:i}", "sku", sku, "qty", 1));
    }
    json_t *o = json_pack("{s:s, s:o}", "customer_id", "c-1", "items", items);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

static const char *str_of_len(char *out, char c, size_t n)
{
    memset(out, c, n);
    out[n] = '\0';
    return out;
}

/* --- accepted --------------------------------------------------------- */

START_TEST(parse_accepts_contract_example)
{
    const char *body = "{\"customer_id\":\"c-1\",\"items\":[{\"sku\":\"SKU-1\",\"qty\":2}]}";
    struct order_request r;
    struct field_error fe;
    ck_assert_int_eq(order_request_parse(body, strlen(body), &r, &fe), ERR_OK);
    ck_assert_str_eq(r.customer_id, "c-1");
    ck_assert_uint_eq(r.nitems, 1);
    ck_assert_str_eq(r.items[0].sku, "SKU-1");
    ck_assert_int_eq(r.items[0].qty, 2);
    order_request_cleanup(&r);
    ck_assert_ptr_null(r.items);
}
END_TEST

START_TEST(parse_ignores_unknown_fields)
{
    struct parsed p = parse("{\"note\":\"x\",\"customer_id\":\"c-1\",\"coupon\":{\"a\":1},"
                            "\"items\":[{\"sku\":\"S\",\"qty\":1,\"color\":\"red\"}]}");
    ck_assert_int_eq(p.err, ERR_OK);
}
END_TEST

START_TEST(parse_accepts_100_items)
{
    char *body = body_with_items(100);
    ck_assert_int_eq(parse(body).err, ERR_OK);
    free(body);
}
END_TEST

START_TEST(parse_accepts_64_char_sku_and_customer)
{
    char s64[65], c64[65], body[512];
    snprintf(body, sizeof body,
             "{\"customer_id\":\"%s\",\"items\":[{\"sku\":\"%s\",\"qty\":10000}]}",
             str_of_len(c64, 'c', 64), str_of_len(s64, 'S', 64));
    ck_assert_int_eq(parse(body).err, ERR_OK);
}
END_TEST

START_TEST(parse_accepts_64_multibyte_customer_characters)
{
    char body[1024] = "{\"customer_id\":\"";
    for (int i = 0; i < 64; i++)
        strcat(body, "\xc3\xa9");
    strcat(body, "\",\"items\":[{\"sku\":\"S\",\"qty\":1}]}");
    ck_assert_int_eq(parse(body).err, ERR_OK);
}
END_TEST

/* --- invalid_json ----------------------------------------------------- */

START_TEST(parse_rejects_malformed_json_as_invalid)
{
    const char *bad[] = {"", "hello", "{customer_id:\"c-1\"}", "{\"customer_id\":\"c-1\",}",
                         "{\"customer_id\":\"c-1\",\"items\":[]} trailing"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct parsed p = parse(bad[i]);
        ck_assert_msg(p.err == ERR_INVALID, "%s: err %d", bad[i], (int)p.err);
        ck_assert_str_ne(p.fe.message, "");
    }
}
END_TEST

/* Which customer_id would win is undefined: reject rather than guess. */
START_TEST(parse_rejects_duplicate_keys_as_invalid)
{
    struct parsed p = parse("{\"customer_id\":\"c-1\",\"customer_id\":\"c-2\","
                            "\"items\":[{\"sku\":\"S\",\"qty\":1}]}");
    ck_assert_int_eq(p.err, ERR_INVALID);
}
END_TEST

START_TEST(parse_rejects_truncated_json_as_invalid)
{
    const char *full = "{\"customer_id\":\"c-1\",\"items\":[{\"sku\":\"SKU-1\",\"qty\":2}]}";
    for (size_t n = 1; n < strlen(full); n += 7) {
        struct order_request r;
        struct field_error fe;
        ck_assert_int_eq(order_request_parse(full, n, &r, &fe), ERR_INVALID);
        order_request_cleanup(&r);
    }
}
END_TEST

/* --- validation_failed ------------------------------------------------ */

START_TEST(parse_rejects_non_object_body)
{
    ck_assert_invalid_field("[{\"customer_id\":\"c-1\"}]", "");
}
END_TEST

START_TEST(parse_rejects_bad_customer_id)
{
    char c65[66], body[256];
    ck_assert_invalid_field("{\"items\":[{\"sku\":\"S\",\"qty\":1}]}", "customer_id");
    ck_assert_invalid_field("{\"customer_id\":\"\",\"items\":[{\"sku\":\"S\",\"qty\":1}]}",
                            "customer_id");
    ck_assert_invalid_field("{\"customer_id\":7,\"items\":[{\"sku\":\"S\",\"qty\":1}]}",
                            "customer_id");
    ck_assert_invalid_field("{\"customer_id\":null,\"items\":[{\"sku\":\"S\",\"qty\":1}]}",
                            "customer_id");
    snprintf(body, sizeof body, "{\"customer_id\":\"%s\",\"items\":[{\"sku\":\"S\",\"qty\":1}]}",
             str_of_len(c65, 'c', 65));
    ck_assert_invalid_field(body, "customer_id");
}
END_TEST

START_TEST(parse_rejects_missing_or_wrong_items)
{
    ck_assert_invalid_field("{\"customer_id\":\"c-1\"}", "items");
    ck_assert_invalid_field("{\"customer_id\":\"c-1\",\"items\":[]}", "items");
    ck_assert_invalid_field("{\"customer_id\":\"c-1\",\"items\":{\"sku\":\"S\",\"qty\":1}}",
                            "items");
    ck_assert_invalid_field("{\"customer_id\":\"c-1\",\"items\":\"S\"}", "items");
    ck_assert_invalid_field("{\"customer_id\":\"c-1\",\"items\":[\"S\"]}", "items[0]");
}
END_TEST

START_TEST(parse_rejects_101_items)
{
    char *body = body_with_items(101);
    ck_assert_invalid_field(body, "items");
    free(body);
}
END_TEST

START_TEST(parse_rejects_bad_qty)
{
    const char *qty[] = {"0", "-1", "10001", "1.5", "\"2\"", "null", "true"};
    for (size_t i = 0; i < sizeof qty / sizeof qty[0]; i++) {
        char body[256];
        snprintf(body, sizeof body, "{\"customer_id\":\"c-1\",\"items\":[{\"sku\":\"A\",\"qty\":1},"
                 "{\"sku\":\"B\",\"qty\":%s}]}", qty[i]);
        ck_assert_invalid_field(body, "items[1].qty");
    }
    ck_assert_invalid_field("{\"customer_id\":\"c-1\",\"items\":[{\"sku\":\"A\"}]}",
                            "items[0].qty");
}
END_TEST

START_TEST(parse_rejects_bad_sku)
{
    char s65[66], body[256];
    const char *sku[] = {"\"SKU 1\"", "\"SKU/1\"", "\"\"", "\"sk\xc3\xbc\"", "1", "null"};
    for (size_t i = 0; i < sizeof sku / sizeof sku[0]; i++) {
        snprintf(body, sizeof body, "{\"customer_id\":\"c-1\",\"items\":[{\"sku\":%s,\"qty\":1}]}",
                 sku[i]);
        ck_assert_invalid_field(body, "items[0].sku");
    }
    snprintf(body, sizeof body, "{\"customer_id\":\"c-1\",\"items\":[{\"sku\":\"%s\",\"qty\":1}]}",
             str_of_len(s65, 'S', 65));
    ck_assert_invalid_field(body, "items[0].sku");
    ck_assert_invalid_field("{\"customer_id\":\"c-1\",\"items\":[{\"qty\":1}]}", "items[0].sku");
}
END_TEST

START_TEST(parse_rejects_duplicate_skus)
{
    ck_assert_invalid_field("{\"customer_id\":\"c-1\",\"items\":[{\"sku\":\"A\",\"qty\":1},"
                            "{\"sku\":\"B\",\"qty\":1},{\"sku\":\"A\",\"qty\":2}]}",
                            "items[2].sku");
}
END_TEST

/* --- Idempotency-Key -------------------------------------------------- */

START_TEST(idempotency_key_accepts_1_to_128_printable)
{
    char k128[129];
    ck_assert(order_idempotency_key_valid("k"));
    ck_assert(order_idempotency_key_valid("2f1c-retry #1 ~!@"));
    ck_assert(order_idempotency_key_valid(str_of_len(k128, 'k', 128)));
}
END_TEST

START_TEST(idempotency_key_rejects_length_and_control_chars)
{
    char k129[130];
    ck_assert(!order_idempotency_key_valid(""));
    ck_assert(!order_idempotency_key_valid(str_of_len(k129, 'k', 129)));
    ck_assert(!order_idempotency_key_valid("a\tb"));
    ck_assert(!order_idempotency_key_valid("a\nb"));
    ck_assert(!order_idempotency_key_valid("a\x7f"));
    ck_assert(!order_idempotency_key_valid("\x1b[0m"));
    ck_assert(!order_idempotency_key_valid("cl\xc3\xa9"));
}
END_TEST

/* --- traceparent ------------------------------------------------------ */

#define TP_OK "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

START_TEST(traceparent_accepts_w3c_forms)
{
    ck_assert(order_traceparent_valid(TP_OK));
    ck_assert(order_traceparent_valid("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"));
    /* a later version may append fields after a dash */
    ck_assert(order_traceparent_valid("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x"));
}
END_TEST

START_TEST(traceparent_rejects_malformed_and_not_utf8)
{
    ck_assert(!order_traceparent_valid(NULL));
    ck_assert(!order_traceparent_valid(""));
    ck_assert(!order_traceparent_valid(TP_OK "-x"));         /* version 00 has exactly 4 fields */
    ck_assert(!order_traceparent_valid("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
    ck_assert(!order_traceparent_valid("00-00000000000000000000000000000000-00f067aa0ba902b7-01"));
    ck_assert(!order_traceparent_valid("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"));
    ck_assert(!order_traceparent_valid("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"));
    ck_assert(!order_traceparent_valid("00-4bf92f3577b34da6a3ce929d0e0e473\xff-00f067aa0ba902b7-01"));
    ck_assert(!order_traceparent_valid("00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
}
END_TEST

/* --- fingerprint ------------------------------------------------------ */

static char *fingerprint_of(const char *body)
{
    struct order_request r;
    struct field_error fe;
    ck_assert_int_eq(order_request_parse(body, strlen(body), &r, &fe), ERR_OK);
    char *fp = order_request_fingerprint(&r);
    order_request_cleanup(&r);
    ck_assert_ptr_nonnull(fp);
    return fp;
}

START_TEST(fingerprint_ignores_formatting_key_order_and_unknown_fields)
{
    char *a = fingerprint_of("{\"customer_id\":\"c-1\",\"items\":[{\"sku\":\"S\",\"qty\":2}]}");
    char *b = fingerprint_of("{ \"items\" : [ { \"qty\" : 2 , \"sku\" : \"S\" } ] ,\n"
                             "  \"customer_id\" : \"c-1\", \"note\": \"retry\" }");
    ck_assert_str_eq(a, b);
    free(a);
    free(b);
}
END_TEST

START_TEST(fingerprint_differs_when_qty_differs)
{
    char *a = fingerprint_of("{\"customer_id\":\"c-1\",\"items\":[{\"sku\":\"S\",\"qty\":2}]}");
    char *b = fingerprint_of("{\"customer_id\":\"c-1\",\"items\":[{\"sku\":\"S\",\"qty\":3}]}");
    ck_assert_str_ne(a, b);
    free(a);
    free(b);
}
END_TEST

START_TEST(fingerprint_differs_when_customer_differs)
{
    char *a = fingerprint_of("{\"customer_id\":\"c-1\",\"items\":[{\"sku\":\"S\",\"qty\":2}]}");
    char *b = fingerprint_of("{\"customer_id\":\"c-2\",\"items\":[{\"sku\":\"S\",\"qty\":2}]}");
    ck_assert_str_ne(a, b);
    free(a);
    free(b);
}
END_TEST

START_TEST(fingerprint_differs_when_sku_differs)
{
    char *a = fingerprint_of("{\"customer_id\":\"c-1\",\"items\":[{\"sku\":\"S\",\"qty\":2}]}");
    char *b = fingerprint_of("{\"customer_id\":\"c-1\",\"items\":[{\"sku\":\"T\",\"qty\":2}]}");
    ck_assert_str_ne(a, b);
    free(a);
    free(b);
}
END_TEST

/* Orders store md5(fingerprint) to recognise a retried key for ever: the
 * text must stay byte for byte what earlier versions wrote with jansson
 * (compact, keys sorted), whatever the customer id holds. */
START_TEST(fingerprint_is_the_text_earlier_versions_stored)
{
    const char *body = "{\"items\":[{\"sku\":\"B.x-9\",\"qty\":10000},{\"qty\":1,\"sku\":\"A\"}],"
                       "\"customer_id\":\"c\\\"\\\\/\\u0001\\u001f\\n\\t\\u007f é€\\ud83d\\ude00\"}";
    char *fp = fingerprint_of(body);
    json_t *o = json_loads(body, 0, NULL);
    ck_assert_ptr_nonnull(o);
    char *want = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    ck_assert_str_eq(fp, want);
    free(want);
    json_decref(o);
    free(fp);
}
END_TEST

/* --- items_json and the order document --------------------------------- */

START_TEST(items_json_lists_items_in_request_order)
{
    const char *body = "{\"customer_id\":\"c-1\",\"items\":[{\"sku\":\"B\",\"qty\":2},"
                       "{\"sku\":\"A\",\"qty\":1}]}";
    struct order_request r;
    struct field_error fe;
    ck_assert_int_eq(order_request_parse(body, strlen(body), &r, &fe), ERR_OK);
    char *items = order_items_json(&r);
    json_t *a = json_loads(items, 0, NULL);
    ck_assert_uint_eq(json_array_size(a), 2);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(a, 0), "sku")), "B");
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(a, 0), "qty")), 2);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(a, 1), "sku")), "A");
    json_decref(a);
    free(items);
    order_request_cleanup(&r);
}
END_TEST

START_TEST(document_has_contract_shape)
{
    json_t *d = order_document(ORDER_ID, "c-1", "PENDING", NULL, "[{\"sku\":\"SKU-1\",\"qty\":2}]",
                               TS, TS);
    ck_assert_ptr_nonnull(d);
    ck_assert_str_eq(json_string_value(json_object_get(d, "id")), ORDER_ID);
    ck_assert_str_eq(json_string_value(json_object_get(d, "customer_id")), "c-1");
    ck_assert_str_eq(json_string_value(json_object_get(d, "status")), "PENDING");
    ck_assert_str_eq(json_string_value(json_object_get(d, "created_at")), TS);
    ck_assert_str_eq(json_string_value(json_object_get(d, "updated_at")), TS);
    json_t *item = json_array_get(json_object_get(d, "items"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(item, "sku")), "SKU-1");
    ck_assert_int_eq(json_integer_value(json_object_get(item, "qty")), 2);
    ck_assert_ptr_null(json_object_get(d, "reason"));
    ck_assert_uint_eq(json_object_size(d), 6);
    json_decref(d);
}
END_TEST

START_TEST(document_has_reason_only_when_set)
{
    json_t *d = order_document(ORDER_ID, "c-1", "CONFIRMED", "", "[]", TS, TS);
    ck_assert_ptr_null(json_object_get(d, "reason"));
    json_decref(d);
    d = order_document(ORDER_ID, "c-1", "REJECTED", "unknown_sku", "[]", TS, TS);
    ck_assert_str_eq(json_string_value(json_object_get(d, "reason")), "unknown_sku");
    ck_assert_str_eq(json_string_value(json_object_get(d, "status")), "REJECTED");
    json_decref(d);
}
END_TEST

Suite *order_suite(void)
{
    Suite *s = suite_create("order");
    TCase *tc = tcase_create("parse");
    tcase_add_test(tc, parse_accepts_contract_example);
    tcase_add_test(tc, parse_ignores_unknown_fields);
    tcase_add_test(tc, parse_accepts_100_items);
    tcase_add_test(tc, parse_accepts_64_char_sku_and_customer);
    tcase_add_test(tc, parse_accepts_64_multibyte_customer_characters);
    tcase_add_test(tc, parse_rejects_malformed_json_as_invalid);
    tcase_add_test(tc, parse_rejects_truncated_json_as_invalid);
    tcase_add_test(tc, parse_rejects_duplicate_keys_as_invalid);
    tcase_add_test(tc, parse_rejects_non_object_body);
    tcase_add_test(tc, parse_rejects_bad_customer_id);
    tcase_add_test(tc, parse_rejects_missing_or_wrong_items);
    tcase_add_test(tc, parse_rejects_101_items);
    tcase_add_test(tc, parse_rejects_bad_qty);
    tcase_add_test(tc, parse_rejects_bad_sku);
    tcase_add_test(tc, parse_rejects_duplicate_skus);
    suite_add_tcase(s, tc);

    tc = tcase_create("idempotency");
    tcase_add_test(tc, idempotency_key_accepts_1_to_128_printable);
    tcase_add_test(tc, idempotency_key_rejects_length_and_control_chars);
    tcase_add_test(tc, traceparent_accepts_w3c_forms);
    tcase_add_test(tc, traceparent_rejects_malformed_and_not_utf8);
    tcase_add_test(tc, fingerprint_ignores_formatting_key_order_and_unknown_fields);
    tcase_add_test(tc, fingerprint_differs_when_qty_differs);
    tcase_add_test(tc, fingerprint_differs_when_customer_differs);
    tcase_add_test(tc, fingerprint_differs_when_sku_differs);
    tcase_add_test(tc, fingerprint_is_the_text_earlier_versions_stored);
    suite_add_tcase(s, tc);

    tc = tcase_create("document");
    tcase_add_test(tc, items_json_lists_items_in_request_order);
    tcase_add_test(tc, document_has_contract_shape);
    tcase_add_test(tc, document_has_reason_only_when_set);
    suite_add_tcase(s, tc);
    return s;
}
