/* test_trace.c - W3C traceparent: what is accepted, what is refused, and
 * that a child keeps the trace and flags with a new span. */
#include "suites.h"
#include "trace.h"

#include <string.h>

#define GOOD "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

START_TEST(parse_reads_the_four_fields)
{
    struct trace t;
    ck_assert(trace_parse(GOOD, &t));
    ck_assert_str_eq(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    ck_assert_str_eq(t.span_id, "00f067aa0ba902b7");
    ck_assert_uint_eq(t.flags, 1);
    /* a later version may carry more after a dash */
    ck_assert(trace_parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-xyz", &t));
    ck_assert_uint_eq(t.flags, 0);
}
END_TEST

static const char *const bad[] = {
    "", "00", GOOD "x", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
    "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e47\xff\xfe-00f067aa0ba902b7-01",
    "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
};

START_TEST(parse_refuses_what_the_spec_refuses)
{
    struct trace t = {.flags = 7};
    ck_assert_msg(!trace_parse(bad[_i], &t), "accepted \"%s\"", bad[_i]);
    ck_assert_uint_eq(t.flags, 7); /* untouched */
    ck_assert(!trace_parse(NULL, &t));
}
END_TEST

START_TEST(child_keeps_trace_and_flags_with_a_new_span)
{
    struct trace p, c;
    char text[TRACEPARENT_LEN + 1];
    ck_assert(trace_parse(GOOD, &p));
    trace_child(&p, &c);
    ck_assert_str_eq(c.trace_id, p.trace_id);
    ck_assert_str_ne(c.span_id, p.span_id);
    trace_format(&c, text);
    ck_assert_uint_eq(strlen(text), TRACEPARENT_LEN);
    ck_assert(strncmp(text, "00-4bf92f3577b34da6a3ce929d0e0e4736-", 36) == 0);
    ck_assert(strcmp(text + 52, "-01") == 0);
    ck_assert(trace_parse(text, &c));
}
END_TEST

START_TEST(continue_starts_a_new_unsampled_trace_from_garbage)
{
    char a[TRACEPARENT_LEN + 1], b[TRACEPARENT_LEN + 1];
    struct trace t;
    ck_assert_int_eq(trace_continue("garbage", a), 0);
    ck_assert_int_eq(trace_continue(NULL, b), 0);
    ck_assert(trace_parse(a, &t) && trace_parse(b, &t));
    ck_assert(strncmp(a, b, 35) != 0);     /* two new traces */
    ck_assert_int_eq(trace_continue(GOOD, a), 1); /* sampled: asked to record */
    ck_assert(strncmp(a, GOOD, 36) == 0);
}
END_TEST

Suite *trace_suite(void)
{
    Suite *s = suite_create("trace");
    TCase *tc = tcase_create("traceparent");
    tcase_add_test(tc, parse_reads_the_four_fields);
    tcase_add_loop_test(tc, parse_refuses_what_the_spec_refuses, 0, (int)(sizeof bad / sizeof bad[0]));
    tcase_add_test(tc, child_keeps_trace_and_flags_with_a_new_span);
    tcase_add_test(tc, continue_starts_a_new_unsampled_trace_from_garbage);
    suite_add_tcase(s, tc);
    return s;
}
