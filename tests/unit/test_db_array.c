/* test_db_array.c - the binary array form of a statement parameter, byte by
 * byte as Postgres's array_recv reads it. (Postgres itself reads them in the
 * integration tests: every batch of orders, decisions and replies.) */
#include "db_array.h"
#include "suites.h"

#include <string.h>

/* The 32-bit big-endian word at byte `at`. */
static long word(const struct buf *b, size_t at)
{
    const unsigned char *u = (const unsigned char *)b->data + at;
    return (long)((unsigned long)u[0] << 24 | (unsigned long)u[1] << 16 |
                  (unsigned long)u[2] << 8 | u[3]);
}

START_TEST(empty_array_has_its_header_only)
{
    struct buf b;
    db_array_open(&b, DB_TEXT);
    ck_assert_uint_eq(b.len, 20);
    ck_assert_int_eq(word(&b, 0), 1);  /* dimensions */
    ck_assert_int_eq(word(&b, 8), 25); /* text */
    ck_assert_int_eq(word(&b, 12), 0); /* elements */
    ck_assert_int_eq(word(&b, 16), 1); /* lower bound */
    ck_assert_int_eq(db_array_count(&b), 0);
    buf_cleanup(&b);
}
END_TEST

START_TEST(text_goes_as_it_is_and_null_as_minus_one)
{
    struct buf b;
    db_array_open(&b, DB_TEXT);
    /* quotes and backslashes: no escaping */
    const char *payload = "{\"a\":\"x\\\"y\",\"b\":[1,2]}";
    db_array_text(&b, payload);
    db_array_text(&b, NULL);
    db_array_text(&b, "");
    ck_assert_int_eq(db_array_count(&b), 3);
    size_t n = strlen(payload);
    ck_assert_int_eq(word(&b, 20), (long)n);
    ck_assert_mem_eq(b.data + 24, payload, n);
    ck_assert_int_eq(word(&b, 24 + n), 0xFFFFFFFFL); /* -1: NULL, no bytes */
    ck_assert_int_eq(word(&b, 28 + n), 0);           /* "": a length of 0 */
    ck_assert_uint_eq(b.len, 32 + n);
    buf_cleanup(&b);
}
END_TEST

START_TEST(uuid_is_its_sixteen_bytes)
{
    struct buf b;
    db_array_open(&b, DB_UUID);
    db_array_uuid(&b, "0190a3f4-7b2c-7d1e-8f00-aBcDeF012345");
    const unsigned char want[16] = {0x01, 0x90, 0xa3, 0xf4, 0x7b, 0x2c, 0x7d, 0x1e,
                                    0x8f, 0x00, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45};
    ck_assert_int_eq(word(&b, 8), 2950);
    ck_assert_int_eq(word(&b, 20), 16);
    ck_assert_mem_eq(b.data + 24, want, 16);
    buf_cleanup(&b);
}
END_TEST

START_TEST(what_is_not_a_uuid_goes_as_null)
{
    const char *bad[] = {NULL, "", "0190a3f4-7b2c-7d1e-8f00-abcdef01234",
                         "0190a3f47b2c7d1e8f00abcdef012345",
                         "0190a3f4-7b2c-7d1e-8f00-abcdef01234g"};
    struct buf b;
    db_array_open(&b, DB_UUID);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        db_array_uuid(&b, bad[i]);
    ck_assert_int_eq(db_array_count(&b), 5);
    for (size_t i = 0; i < 5; i++)
        ck_assert_int_eq(word(&b, 20 + 4 * i), 0xFFFFFFFFL);
    ck_assert_uint_eq(b.len, 40);
    buf_cleanup(&b);
}
END_TEST

START_TEST(int4_is_big_endian_and_signed)
{
    struct buf b;
    db_array_open(&b, DB_INT4);
    db_array_int4(&b, 10000);
    db_array_int4(&b, -2);
    ck_assert_int_eq(word(&b, 8), 23);
    ck_assert_int_eq(word(&b, 20), 4);
    ck_assert_int_eq(word(&b, 24), 10000);
    ck_assert_int_eq(word(&b, 28), 4);
    ck_assert_int_eq(word(&b, 32), 0xFFFFFFFEL);
    ck_assert_int_eq(db_array_count(&b), 2);
    buf_cleanup(&b);
}
END_TEST

START_TEST(count_holds_past_a_buffer_growth)
{
    struct buf b;
    db_array_open(&b, DB_TEXT);
    for (int i = 0; i < 5000; i++)
        db_array_text(&b, "sku-0001");
    ck_assert_int_eq(db_array_count(&b), 5000);
    ck_assert_uint_eq(b.len, 20 + 5000 * (4 + 8));
    buf_cleanup(&b);
}
END_TEST

START_TEST(columns_have_their_types_and_count_rows_by_the_first)
{
    static const enum db_elem elems[] = {DB_UUID, DB_TEXT, DB_INT4};
    struct db_columns c;
    db_columns_open(&c, 3, elems);
    ck_assert_int_eq(c.n, 3);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(word(&c.col[i], 8), (long)elems[i]);
    ck_assert_int_eq(db_columns_rows(&c), 0);
    db_array_uuid(&c.col[0], "0190a3f4-7b2c-7d1e-8f00-abcdef012345");
    db_array_text(&c.col[1], NULL);
    db_array_int4(&c.col[2], 7);
    ck_assert_int_eq(db_columns_rows(&c), 1);
    db_columns_cleanup(&c);
}
END_TEST

Suite *db_array_suite(void)
{
    Suite *s = suite_create("db_array");
    TCase *tc = tcase_create("binary");
    tcase_add_test(tc, empty_array_has_its_header_only);
    tcase_add_test(tc, text_goes_as_it_is_and_null_as_minus_one);
    tcase_add_test(tc, uuid_is_its_sixteen_bytes);
    tcase_add_test(tc, what_is_not_a_uuid_goes_as_null);
    tcase_add_test(tc, int4_is_big_endian_and_signed);
    tcase_add_test(tc, count_holds_past_a_buffer_growth);
    tcase_add_test(tc, columns_have_their_types_and_count_rows_by_the_first);
    suite_add_tcase(s, tc);
    return s;
}
