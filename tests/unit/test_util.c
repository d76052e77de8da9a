/* test_util.c - UUIDs, the RFC 3339 clock and the growable buffer,
 * including the Postgres array-literal escaping the stores rely on. */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "suites.h"
#include "util.h"

#include <jansson.h>

/* 'd' = digit, 'x' = lower-case hex, anything else literal. */
static int shape_is(const char *s, const char *shape)
{
    if (strlen(s) != strlen(shape))
        return 0;
    for (; *shape; s++, shape++) {
        unsigned char c = (unsigned char)*s;
        int ok = *shape == 'd' ? isdigit(c) != 0
               : *shape == 'x' ? (isdigit(c) || (c >= 'a' && c <= 'f'))
               : c == (unsigned char)*shape;
        if (!ok)
            return 0;
    }
    return 1;
}

START_TEST(uuid_v4_is_canonical_lower_case)
{
    char id[UUID_STR_LEN];
    uuid_v4(id);
    ck_assert_msg(shape_is(id, "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"), "bad uuid %s", id);
    ck_assert(uuid_valid(id));
}
END_TEST

START_TEST(uuid_v4_has_version_and_variant)
{
    for (int i = 0; i < 100; i++) {
        char id[UUID_STR_LEN];
        uuid_v4(id);
        ck_assert_int_eq(id[14], '4');
        ck_assert_msg(strchr("89ab", id[19]) != NULL, "variant nibble %c in %s", id[19], id);
    }
}
END_TEST

START_TEST(uuid_v4_calls_differ)
{
    char a[UUID_STR_LEN], b[UUID_STR_LEN];
    uuid_v4(a);
    uuid_v4(b);
    ck_assert_str_ne(a, b);
}
END_TEST

START_TEST(uuid_v7_has_version_variant_and_the_time)
{
    for (int i = 0; i < 100; i++) {
        char id[UUID_STR_LEN];
        long long before = (long long)(wall_s() * 1000) - 1;
        uuid_v7(id);
        long long after = (long long)(wall_s() * 1000) + 1;
        ck_assert_msg(shape_is(id, "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"), "bad uuid %s", id);
        ck_assert_int_eq(id[14], '7');
        ck_assert_msg(strchr("89ab", id[19]) != NULL, "variant nibble %c in %s", id[19], id);
        char ms_hex[13];
        memcpy(ms_hex, id, 8);
        memcpy(ms_hex + 8, id + 9, 4);
        ms_hex[12] = '\0';
        long long ms = strtoll(ms_hex, NULL, 16);
        ck_assert_msg(ms >= before && ms <= after, "%s: %lld ms, not in [%lld, %lld]", id, ms,
                      before, after);
    }
}
END_TEST

/* What the indexes gain: the ids a thread makes sort in the order it made
 * them, even many within one tick of the sub-millisecond field (244 ns). */
START_TEST(uuid_v7_ids_made_in_turn_sort_in_turn)
{
    char prev[UUID_STR_LEN], id[UUID_STR_LEN];
    uuid_v7(prev);
    for (int i = 0; i < 10000; i++) {
        uuid_v7(id);
        ck_assert_msg(strncmp(prev, id, 18) < 0, "%s made after %s does not sort after it", id, prev);
        memcpy(prev, id, sizeof id);
    }
}
END_TEST

/* The same tick twice, or a clock stepped back: the id still sorts after. */
START_TEST(uuid_v7_tick_never_goes_back)
{
    ck_assert_uint_eq(uuid_v7_tick_after(5000, 9000), 9000);
    ck_assert_uint_eq(uuid_v7_tick_after(5000, 5000), 5001);
    ck_assert_uint_eq(uuid_v7_tick_after(5000, 3000), 5001);
    ck_assert_uint_eq(uuid_v7_tick_after(0xfff, 0x5), 0x1000); /* carries into the ms */
}
END_TEST

START_TEST(uuid_valid_accepts_canonical_any_case)
{
    ck_assert(uuid_valid("123e4567-e89b-42d3-a456-426614174000"));
    ck_assert(uuid_valid("123E4567-E89B-42D3-A456-426614174000"));
    ck_assert(uuid_valid("00000000-0000-0000-0000-000000000000"));
}
END_TEST

START_TEST(uuid_valid_rejects_malformed)
{
    const char *bad[] = {
        "",
        "123e4567-e89b-42d3-a456-42661417400",   /* 35 */
        "123e4567-e89b-42d3-a456-4266141740000", /* 37 */
        "123e4567e89b-42d3-a456-4266141740000",  /* dash missing */
        "123e4567-e89b-42d3-a456_426614174000",  /* wrong separator */
        "123e4567-e89b-42d3-a456-42661417400g",  /* not hex */
        "{23e4567-e89b-42d3-a456-426614174000",
        "123e4567-e89b-42d3-a456-426614174000 ",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(!uuid_valid(bad[i]), "accepted \"%s\"", bad[i]);
    ck_assert(!uuid_valid(NULL));
}
END_TEST

START_TEST(time_rfc3339_is_utc_with_microseconds)
{
    char ts[32];
    time_rfc3339(ts);
    ck_assert_msg(shape_is(ts, "dddd-dd-ddTdd:dd:dd.ddddddZ"), "bad timestamp %s", ts);
}
END_TEST

START_TEST(time_rfc3339_is_now)
{
    char ts[32];
    struct tm tm = {0};
    time_t before = time(NULL);
    time_rfc3339(ts);
    ck_assert_ptr_nonnull(strptime(ts, "%Y-%m-%dT%H:%M:%S", &tm));
    time_t t = timegm(&tm);
    /* time() reads the kernel's coarse clock, up to a tick behind the
     * precise one time_rfc3339 uses: a second's slack either way */
    ck_assert_int_ge(t, before - 1);
    ck_assert_int_le(t, time(NULL) + 1);
}
END_TEST

START_TEST(time_stamp_valid_accepts_rfc3339_and_common_iso8601)
{
    static const char *const ok[] = {
        "2026-01-02T03:04:05Z",
        "2026-01-02T03:04:05.123456Z",
        "2026-01-02t03:04:05z",
        "2026-01-02 03:04:05+01:00",
        "2026-12-07T16:10:00.123456+00:00",  /* Python, an aware datetime */
        "2026-12-07T16:10:00.123456",        /* Python, a naive one: no offset */
        "2026-12-07T16:10:00,5+0100",        /* ISO 8601's comma, strftime's %z */
        "2026-12-07T16:10:00-05",
        "2026-01-02T03:04Z",                 /* Java's toString(), seconds 0 */
        "2026-01-02T03:04",
        "2026-02-28T23:59:60-23:59",         /* a leap second */
        "2024-02-29T00:00:00Z",              /* leap years */
        "2000-02-29T00:00:00Z",
        "2026-01-02T03:04:05.123456789012345678901234Z", /* any fraction */
        "0000-01-01T00:00:00Z",
    };
    for (size_t i = 0; i < ARRAY_LEN(ok); i++)
        ck_assert_msg(time_stamp_valid(ok[i]), "refused %s", ok[i]);
    char now[32];
    time_rfc3339(now);
    ck_assert(time_stamp_valid(now));
}
END_TEST

START_TEST(time_stamp_valid_refuses_what_is_no_date_time)
{
    static const char *const bad[] = {
        "", "garbage!", "2026-13-45T99:99:99Z", "2026-01-02", "2026-01-02T03Z", "2026-01-02T03:04:Z",
        "2026-01-02T03:04.5Z",
        "2026-01-02X03:04:05Z", "2026-1-02T03:04:05Z", "2026-01-02T03:04:05.Z",
        "2026-01-02T03:04:05Zjunk", "2026-01-02T03:04:05+1", "2026-01-02T03:04:05+24:00",
        "2026-01-02T03:04:05+01:60", "2026-01-02T03:04:05+01:0", "2026-02-29T00:00:00Z",
        "1900-02-29T00:00:00Z", "2026-04-31T00:00:00Z", "2026-00-10T00:00:00Z",
        "2026-01-00T00:00:00Z", "2026-01-02T24:00:00Z", "2026-01-02T03:60:00Z",
        "2026-01-02T03:04:61Z", "+2026-01-02T03:04:05Z", " 2026-01-02T03:04:05Z",
        "2026-01-02T03:04:05Z ", "1767322800",
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++)
        ck_assert_msg(!time_stamp_valid(bad[i]), "accepted %s", bad[i]);
}
END_TEST

START_TEST(buf_grows_and_stays_terminated)
{
    struct buf b;
    buf_init(&b);
    ck_assert_str_eq(b.data, "");
    for (int i = 0; i < 1000; i++)
        buf_append(&b, "0123456789", 10);
    ck_assert_uint_eq(b.len, 10000);
    ck_assert_uint_eq(strlen(b.data), 10000);
    ck_assert_uint_gt(b.cap, b.len);
    ck_assert_int_eq(memcmp(b.data + 9990, "0123456789", 10), 0);
    buf_cleanup(&b);
}
END_TEST

START_TEST(buf_printf_appends_formatted)
{
    struct buf b;
    buf_init(&b);
    buf_printf(&b, "%s=%d", "a", 1);
    buf_printf(&b, ",%s=%d", "b", 22);
    ck_assert_str_eq(b.data, "a=1,b=22");
    ck_assert_uint_eq(b.len, 8);
    char big[1000];
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    buf_printf(&b, "%s", big); /* past the initial capacity */
    ck_assert_uint_eq(b.len, 8 + 999);
    ck_assert_str_eq(b.data + 8, big);
    buf_cleanup(&b);
}
END_TEST

START_TEST(buf_reset_empties_and_reuses)
{
    struct buf b;
    buf_init(&b);
    buf_append(&b, "abc", 3);
    buf_reset(&b);
    ck_assert_uint_eq(b.len, 0);
    ck_assert_str_eq(b.data, "");
    buf_append(&b, "de", 2);
    ck_assert_str_eq(b.data, "de");
    buf_cleanup(&b);
    ck_assert_ptr_null(b.data);
}
END_TEST

START_TEST(buf_pg_array_elem_quotes_and_separates)
{
    struct buf b;
    buf_pg_array_open(&b);
    buf_pg_array_elem(&b, "SKU-1");
    buf_pg_array_elem(&b, "a,b c");
    buf_pg_array_elem(&b, "");
    buf_pg_array_close(&b);
    ck_assert_str_eq(b.data, "{\"SKU-1\",\"a,b c\",\"\"}");
    buf_cleanup(&b);
}
END_TEST

START_TEST(buf_pg_array_sep_separates_numbers_and_empty_arrays_stay_empty)
{
    struct buf b;
    buf_pg_array_open(&b);
    buf_pg_array_close(&b);
    ck_assert_str_eq(b.data, "{}");
    buf_cleanup(&b);
    buf_pg_array_open(&b);
    for (int64_t v = 7; v < 10; v++) {
        buf_pg_array_sep(&b);
        buf_int(&b, v);
    }
    buf_pg_array_close(&b);
    ck_assert_str_eq(b.data, "{7,8,9}");
    buf_cleanup(&b);
}
END_TEST

START_TEST(buf_pg_array_elem_escapes_quotes_and_backslashes)
{
    struct buf b;
    buf_pg_array_open(&b);
    buf_pg_array_elem(&b, "say \"hi\"");
    buf_pg_array_elem(&b, "C:\\dir\\");
    buf_pg_array_close(&b);
    ck_assert_str_eq(b.data, "{\"say \\\"hi\\\"\",\"C:\\\\dir\\\\\"}");
    buf_cleanup(&b);
}
END_TEST

START_TEST(utf8_valid_accepts_well_formed)
{
    ck_assert(utf8_valid("", 0));
    ck_assert(utf8_valid("ascii", 5));
    ck_assert(utf8_valid("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9)); /* é € 😀 */
}
END_TEST

START_TEST(utf8_valid_rejects_malformed)
{
    ck_assert(!utf8_valid("\xff", 1));
    ck_assert(!utf8_valid("\xc3", 1));                 /* truncated */
    ck_assert(!utf8_valid("\xc0\xaf", 2));            /* overlong */
    ck_assert(!utf8_valid("\xed\xa0\x80", 3));        /* surrogate */
    ck_assert(!utf8_valid("\xf4\x90\x80\x80", 4));    /* above U+10FFFF */
    ck_assert(!utf8_valid("a\0b", 3));                 /* NUL: text columns refuse it */
}
END_TEST

START_TEST(buf_escape_bytes_keeps_utf8_and_escapes_the_rest)
{
    struct buf b;
    buf_init(&b);
    buf_escape_bytes(&b, "inventory.\xff\xc3\xa9\\", 14);
    ck_assert_str_eq(b.data, "inventory.\\xff\xc3\xa9\\x5c");
    ck_assert(utf8_valid(b.data, b.len));
    buf_cleanup(&b);
}
END_TEST

START_TEST(base64_pads_and_encodes_any_bytes)
{
    static const struct { const char *in; size_t n; const char *out; } cases[] = {
        {"", 0, ""}, {"f", 1, "Zg=="}, {"fo", 2, "Zm8="}, {"foo", 3, "Zm9v"},
        {"\xff\xfe{junk", 7, "//57anVuaw=="}, {"a\0b", 3, "YQBi"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct buf b;
        buf_init(&b);
        buf_base64(&b, cases[i].in, cases[i].n);
        ck_assert_str_eq(b.data, cases[i].out);
        buf_cleanup(&b);
    }
}
END_TEST

START_TEST(utf8_preview_keeps_valid_text_and_replaces_the_rest)
{
    static const struct { const char *in; size_t n, max; const char *out; } cases[] = {
        {"plain", 5, 100, "plain"},
        {"caf\xc3\xa9 \xe2\x82\xac", 9, 100, "caf\xc3\xa9 \xe2\x82\xac"},
        {"\xff{", 2, 100, "\xef\xbf\xbd{"},
        {"a\0b", 3, 100, "a\xef\xbf\xbd" "b"},
        {"\xc0\xaf", 2, 100, "\xef\xbf\xbd\xef\xbf\xbd"},           /* overlong '/' */
        {"\xed\xa0\x80", 3, 100, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* surrogate */
        {"\xe2\x82", 2, 100, "\xef\xbf\xbd\xef\xbf\xbd"},           /* cut sequence */
        {"abcdef", 6, 3, "abc..."},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct buf b;
        buf_init(&b);
        buf_utf8_preview(&b, cases[i].in, cases[i].n, cases[i].max);
        ck_assert_msg(strcmp(b.data, cases[i].out) == 0, "case %zu: %s", i, b.data);
        json_t *j = json_string(b.data); /* what the admin API does with it */
        ck_assert_ptr_nonnull(j);
        json_decref(j);
        buf_cleanup(&b);
    }
}
END_TEST

/* A poison reason goes to a text column: whatever cut it, it is valid UTF-8
 * (a %.170s can end inside a character) and fits, ending on a boundary. */
START_TEST(utf8_copy_is_valid_text_that_fits)
{
    static const struct { const char *in; size_t cap; const char *out; } cases[] = {
        {"plain", 16, "plain"},
        {"caf\xc3", 16, "caf\xef\xbf\xbd"},          /* a character cut at its end */
        {"a\xff" "b", 16, "a\xef\xbf\xbd" "b"},        /* a byte no UTF-8 has */
        {"ab\xc3\xa9", 4, "ab"},                     /* é does not fit: left out whole */
        {"ab\xc3\xa9", 5, "ab\xc3\xa9"},
        {"\xe2\x82\xac\xe2\x82\xac", 6, "\xe2\x82\xac"}, /* a second euro sign would not */
        {"", 4, ""},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        char out[16];
        memset(out, 'x', sizeof out);
        utf8_copy(out, cases[i].cap, cases[i].in);
        ck_assert_msg(strcmp(out, cases[i].out) == 0, "case %zu: %s", i, out);
        ck_assert(utf8_valid(out, strlen(out)));
        ck_assert_uint_lt(strlen(out), cases[i].cap);
    }
}
END_TEST

START_TEST(hex_decode_round_trips_and_rejects_bad_digits)
{
    unsigned char *p = NULL;
    size_t n = 0;
    ck_assert_int_eq(hex_decode("ff00Ab", &p, &n), 0);
    ck_assert_uint_eq(n, 3);
    ck_assert(p[0] == 0xff && p[1] == 0 && p[2] == 0xab);
    free(p);
    ck_assert_int_eq(hex_decode("abc", &p, &n), -1);
    ck_assert_int_eq(hex_decode("zz", &p, &n), -1);
}
END_TEST

/* The JSON rows the consumer sends Postgres must read back as the same
 * strings; written as jansson writes them, byte for byte. */
START_TEST(buf_json_str_writes_what_jansson_writes)
{
    const char *cases[] = {"", "plain", "q\"uote", "back\\slash", "a/b", "tab\tnl\ncr\r",
                           "\b\f", "\x01\x1f\x7f", "caf\xc3\xa9", "{\"k\":\"v\"}"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct buf b;
        buf_init(&b);
        buf_json_str(&b, cases[i]);
        json_t *j = json_string(cases[i]);
        char *want = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
        ck_assert_str_eq(b.data, want);
        free(want);
        json_decref(j);
        buf_cleanup(&b);
    }
}
END_TEST

START_TEST(buf_json_field_writes_null_for_no_value)
{
    struct buf b;
    buf_init(&b);
    buf_json_field(&b, "{\"a\":", "x");
    buf_json_field(&b, ",\"b\":", NULL);
    buf_append(&b, "}", 1);
    ck_assert_str_eq(b.data, "{\"a\":\"x\",\"b\":null}");
    buf_cleanup(&b);
}
END_TEST

static void *report_own_name(void *arg)
{
    pthread_getname_np(pthread_self(), arg, 16);
    return NULL;
}

START_TEST(thread_start_names_the_thread)
{
    char seen[16] = "";
    pthread_t t;
    thread_start(&t, "relay-mark", report_own_name, seen);
    pthread_join(t, NULL);
    ck_assert_str_eq(seen, "relay-mark");
}
END_TEST

START_TEST(buf_int_writes_decimal)
{
    struct buf b;
    buf_init(&b);
    buf_int(&b, 0);
    buf_append(&b, " ", 1);
    buf_int(&b, 10000);
    buf_append(&b, " ", 1);
    buf_int(&b, -42);
    buf_append(&b, " ", 1);
    buf_int(&b, INT64_MIN);
    ck_assert_str_eq(b.data, "0 10000 -42 -9223372036854775808");
    buf_cleanup(&b);
}
END_TEST

Suite *util_suite(void)
{
    Suite *s = suite_create("util");
    TCase *tc = tcase_create("uuid");
    tcase_add_test(tc, uuid_v4_is_canonical_lower_case);
    tcase_add_test(tc, time_stamp_valid_accepts_rfc3339_and_common_iso8601);
    tcase_add_test(tc, time_stamp_valid_refuses_what_is_no_date_time);
    tcase_add_test(tc, uuid_v4_has_version_and_variant);
    tcase_add_test(tc, uuid_v4_calls_differ);
    tcase_add_test(tc, uuid_v7_has_version_variant_and_the_time);
    tcase_add_test(tc, uuid_v7_ids_made_in_turn_sort_in_turn);
    tcase_add_test(tc, uuid_v7_tick_never_goes_back);
    tcase_add_test(tc, uuid_valid_accepts_canonical_any_case);
    tcase_add_test(tc, uuid_valid_rejects_malformed);
    suite_add_tcase(s, tc);
    tc = tcase_create("time");
    tcase_add_test(tc, time_rfc3339_is_utc_with_microseconds);
    tcase_add_test(tc, time_rfc3339_is_now);
    suite_add_tcase(s, tc);
    tc = tcase_create("buf");
    tcase_add_test(tc, buf_grows_and_stays_terminated);
    tcase_add_test(tc, buf_printf_appends_formatted);
    tcase_add_test(tc, buf_reset_empties_and_reuses);
    tcase_add_test(tc, buf_pg_array_elem_quotes_and_separates);
    tcase_add_test(tc, buf_pg_array_elem_escapes_quotes_and_backslashes);
    tcase_add_test(tc, buf_pg_array_sep_separates_numbers_and_empty_arrays_stay_empty);
    tcase_add_test(tc, utf8_valid_accepts_well_formed);
    tcase_add_test(tc, utf8_valid_rejects_malformed);
    tcase_add_test(tc, buf_escape_bytes_keeps_utf8_and_escapes_the_rest);
    tcase_add_test(tc, buf_json_str_writes_what_jansson_writes);
    tcase_add_test(tc, buf_json_field_writes_null_for_no_value);
    tcase_add_test(tc, buf_int_writes_decimal);
    suite_add_tcase(s, tc);
    tc = tcase_create("bytes");
    tcase_add_test(tc, base64_pads_and_encodes_any_bytes);
    tcase_add_test(tc, utf8_preview_keeps_valid_text_and_replaces_the_rest);
    tcase_add_test(tc, utf8_copy_is_valid_text_that_fits);
    tcase_add_test(tc, hex_decode_round_trips_and_rejects_bad_digits);
    tcase_add_test(tc, thread_start_names_the_thread);
    suite_add_tcase(s, tc);
    return s;
}
