/* test_metrics.c - the registry as Prometheus scrapes it: TYPE lines,
 * labelled series, cumulative histogram buckets, _sum and _count.
 *
 * The registry is process-wide and never emptied, so every test registers
 * families under its own name (prefix ut_<test>_). */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "suites.h"

/* The registry as text; the caller frees. */
static char *render(void)
{
    struct buf b;
    buf_init(&b);
    metrics_render(&b);
    return b.data;
}

/* True when text has a line that is exactly `line`. */
static int has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
        if ((p == text || p[-1] == '\n') && (p[n] == '\n' || p[n] == '\0'))
            return 1;
    return 0;
}

/* The value of the sample line `series value`, or NAN when it is absent. */
static double sample(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; (p = strstr(p, series)) != NULL; p++) {
        if ((p == text || p[-1] == '\n') && p[n] == ' ') {
            char *end = NULL;
            double v = strtod(p + n + 1, &end);
            if (end != p + n + 1 && (*end == '\n' || *end == '\0'))
                return v;
        }
    }
    return NAN;
}

/* The lines of text that start with series' name (up to any '{'), to show
 * what was rendered instead when a sample is wrong. */
static const char *family_lines(const char *text, const char *series)
{
    static char out[4096];
    size_t n = strcspn(series, "{"), len = 0;
    out[0] = '\0';
    for (const char *p = text; *p;) {
        size_t line = strcspn(p, "\n");
        if (strncmp(p, series, n) == 0 && len + line + 2 < sizeof out) {
            memcpy(out + len, p, line);
            len += line;
            out[len++] = '\n';
            out[len] = '\0';
        }
        p += line + (p[line] == '\n');
    }
    return out;
}

#define ck_assert_sample(text, series, want)                                         \
    do {                                                                              \
        double got_ = sample((text), (series));                                      \
        ck_assert_msg(fabs(got_ - (want)) < 1e-9, "%s = %g, want %g; rendered:\n%s",  \
                      (series), got_, (double)(want), family_lines((text), (series))); \
    } while (0)

START_TEST(counter_renders_help_type_and_total)
{
    struct metric *m = metrics_register("ut_counter_total", "Things counted.", METRIC_COUNTER,
                                        NULL, 0);
    metric_add(m, "", 1);
    metric_add(m, "", 2);
    char *text = render();
    ck_assert_msg(has_line(text, "# HELP ut_counter_total Things counted."), "%s", text);
    ck_assert_msg(has_line(text, "# TYPE ut_counter_total counter"), "%s", text);
    ck_assert_sample(text, "ut_counter_total", 3);
    ck_assert_double_eq(metric_value(m, ""), 3);
    free(text);
}
END_TEST

START_TEST(declared_series_renders_zero_and_undeclared_none)
{
    struct metric *m = metrics_register("ut_unused_total", "Never incremented.", METRIC_COUNTER,
                                        NULL, 0);
    metric_add(m, "", 0); /* how modules declare a series before its first event */
    metrics_register("ut_labelled_total", "No series yet.", METRIC_COUNTER, NULL, 0);
    char *text = render();
    ck_assert_msg(has_line(text, "# TYPE ut_unused_total counter"), "%s", text);
    ck_assert_sample(text, "ut_unused_total", 0);
    ck_assert_msg(has_line(text, "# TYPE ut_labelled_total counter"), "%s", text);
    ck_assert_msg(!has_line(text, "ut_labelled_total 0"), "no unlabelled sample: %s", text);
    free(text);
}
END_TEST

START_TEST(labelled_series_render_separately)
{
    struct metric *m = metrics_register("ut_requests_total", "Requests.", METRIC_COUNTER,
                                        NULL, 0);
    metric_add(m, "route=\"/orders\",code=\"201\"", 1);
    metric_add(m, "route=\"/orders\",code=\"201\"", 1);
    metric_add(m, "route=\"/orders\",code=\"400\"", 1);
    char *text = render();
    ck_assert_sample(text, "ut_requests_total{route=\"/orders\",code=\"201\"}", 2);
    ck_assert_sample(text, "ut_requests_total{route=\"/orders\",code=\"400\"}", 1);
    ck_assert_double_eq(metric_value(m, "route=\"/orders\",code=\"201\""), 2);
    free(text);
}
END_TEST

START_TEST(gauge_set_replaces_and_add_adjusts)
{
    struct metric *m = metrics_register("ut_pending", "Pending rows.", METRIC_GAUGE, NULL, 0);
    metric_set(m, "", 7);
    metric_set(m, "", 5);
    metric_add(m, "", -2);
    char *text = render();
    ck_assert_msg(has_line(text, "# TYPE ut_pending gauge"), "%s", text);
    ck_assert_sample(text, "ut_pending", 3);
    free(text);
}
END_TEST

/* Held for this thread's transaction: added if it commits, forgotten if
 * not; more series at once than it holds are added at once. */
START_TEST(adds_on_commit_stand_only_if_committed)
{
    struct metric *m = metrics_register("ut_tx_total", "Tx.", METRIC_COUNTER, NULL, 0);
    metric_add_on_commit(m, "", 2);
    ck_assert_double_eq(metric_value(m, ""), 0);
    metrics_tx_end(0);
    metrics_tx_end(1); /* nothing held any more */
    ck_assert_double_eq(metric_value(m, ""), 0);
    metric_add_on_commit(m, "", 2);
    metric_add_on_commit(m, "", 3);
    metrics_tx_end(1);
    ck_assert_double_eq(metric_value(m, ""), 5);
    char labels[16];
    for (int i = 0; i < 9; i++) {
        snprintf(labels, sizeof labels, "k=\"%d\"", i);
        metric_add_on_commit(m, labels, 1);
    }
    ck_assert_double_eq(metric_value(m, "k=\"7\""), 0);
    ck_assert_double_eq(metric_value(m, "k=\"8\""), 1); /* the ninth: added at once */
    metrics_tx_end(0);
    ck_assert_double_eq(metric_value(m, "k=\"0\""), 0);
    ck_assert_double_eq(metric_value(m, "k=\"8\""), 1);
}
END_TEST

START_TEST(register_twice_returns_the_same_family)
{
    struct metric *a = metrics_register("ut_twice_total", "Twice.", METRIC_COUNTER, NULL, 0);
    struct metric *b = metrics_register("ut_twice_total", "Twice.", METRIC_COUNTER, NULL, 0);
    ck_assert_ptr_eq(a, b);
    metric_add(a, "", 1);
    metric_add(b, "", 1);
    char *text = render();
    ck_assert_sample(text, "ut_twice_total", 2);
    /* one family: one TYPE line */
    const char *first = strstr(text, "# TYPE ut_twice_total");
    ck_assert_ptr_nonnull(first);
    ck_assert_ptr_null(strstr(first + 1, "# TYPE ut_twice_total"));
    free(text);
}
END_TEST

START_TEST(histogram_buckets_are_cumulative)
{
    static const double bounds[] = {0.25, 0.5, 1, 2.5};
    struct metric *m = metrics_register("ut_latency_seconds", "Latency.", METRIC_HISTOGRAM,
                                        bounds, 4);
    const double obs[] = {0.125, 0.25 /* on a bound: counts as le */, 0.75, 0.75, 3};
    for (size_t i = 0; i < sizeof obs / sizeof obs[0]; i++)
        metric_observe(m, "", obs[i]);
    char *text = render();
    ck_assert_msg(has_line(text, "# TYPE ut_latency_seconds histogram"), "%s", text);
    ck_assert_sample(text, "ut_latency_seconds_bucket{le=\"0.25\"}", 2);
    ck_assert_sample(text, "ut_latency_seconds_bucket{le=\"0.5\"}", 2);
    ck_assert_sample(text, "ut_latency_seconds_bucket{le=\"1\"}", 4);
    ck_assert_sample(text, "ut_latency_seconds_bucket{le=\"2.5\"}", 4);
    ck_assert_sample(text, "ut_latency_seconds_bucket{le=\"+Inf\"}", 5);
    ck_assert_sample(text, "ut_latency_seconds_sum", 4.875);
    ck_assert_sample(text, "ut_latency_seconds_count", 5);
    ck_assert_double_eq(metric_value(m, ""), 5);
    free(text);
}
END_TEST

START_TEST(histogram_series_keep_their_labels)
{
    static const double bounds[] = {1, 2};
    struct metric *m = metrics_register("ut_route_seconds", "Per route.", METRIC_HISTOGRAM,
                                        bounds, 2);
    metric_observe(m, "route=\"/a\"", 1.5);
    metric_observe(m, "route=\"/b\"", 0.5);
    char *text = render();
    ck_assert_sample(text, "ut_route_seconds_bucket{route=\"/a\",le=\"1\"}", 0);
    ck_assert_sample(text, "ut_route_seconds_bucket{route=\"/a\",le=\"2\"}", 1);
    ck_assert_sample(text, "ut_route_seconds_bucket{route=\"/a\",le=\"+Inf\"}", 1);
    ck_assert_sample(text, "ut_route_seconds_sum{route=\"/a\"}", 1.5);
    ck_assert_sample(text, "ut_route_seconds_count{route=\"/a\"}", 1);
    ck_assert_sample(text, "ut_route_seconds_bucket{route=\"/b\",le=\"1\"}", 1);
    ck_assert_sample(text, "ut_route_seconds_count{route=\"/b\"}", 1);
    free(text);
}
END_TEST

/* Dashboards and alerts select buckets by exact label text, e.g.
 * le="0.1"; the bound must print as written, not as 0.10000000000000001. */
START_TEST(histogram_le_labels_print_as_written)
{
    struct metric *m = metrics_register("ut_default_seconds", "Default buckets.",
                                        METRIC_HISTOGRAM, metrics_latency_buckets,
                                        metrics_latency_nbuckets);
    metric_observe(m, "", 0.003);
    char *text = render();
    ck_assert_sample(text, "ut_default_seconds_bucket{le=\"0.0001\"}", 0);
    ck_assert_sample(text, "ut_default_seconds_bucket{le=\"0.00025\"}", 0);
    ck_assert_sample(text, "ut_default_seconds_bucket{le=\"0.005\"}", 1);
    ck_assert_sample(text, "ut_default_seconds_bucket{le=\"0.1\"}", 1);
    ck_assert_sample(text, "ut_default_seconds_bucket{le=\"10\"}", 1);
    free(text);
}
END_TEST

START_TEST(default_latency_buckets_ascend_from_100us_to_10s)
{
    ck_assert_uint_gt(metrics_latency_nbuckets, 1);
    ck_assert_double_eq(metrics_latency_buckets[0], 0.0001);
    ck_assert_double_eq(metrics_latency_buckets[metrics_latency_nbuckets - 1], 10);
    for (size_t i = 1; i < metrics_latency_nbuckets; i++)
        ck_assert_double_gt(metrics_latency_buckets[i], metrics_latency_buckets[i - 1]);
}
END_TEST

static void *add_many(void *arg)
{
    for (int i = 0; i < 20000; i++)
        metric_add(arg, "", 1);
    return NULL;
}

START_TEST(concurrent_adds_are_not_lost)
{
    struct metric *m = metrics_register("ut_concurrent_total", "Concurrent.", METRIC_COUNTER,
                                        NULL, 0);
    pthread_t t[4];
    for (size_t i = 0; i < 4; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, add_many, m), 0);
    for (size_t i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    ck_assert_double_eq(metric_value(m, ""), 80000);
}
END_TEST

Suite *metrics_suite(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("counter_gauge");
    tcase_add_test(tc, counter_renders_help_type_and_total);
    tcase_add_test(tc, declared_series_renders_zero_and_undeclared_none);
    tcase_add_test(tc, labelled_series_render_separately);
    tcase_add_test(tc, gauge_set_replaces_and_add_adjusts);
    tcase_add_test(tc, register_twice_returns_the_same_family);
    tcase_add_test(tc, adds_on_commit_stand_only_if_committed);
    tcase_add_test(tc, concurrent_adds_are_not_lost);
    suite_add_tcase(s, tc);
    tc = tcase_create("histogram");
    tcase_add_test(tc, histogram_buckets_are_cumulative);
    tcase_add_test(tc, histogram_series_keep_their_labels);
    tcase_add_test(tc, histogram_le_labels_print_as_written);
    tcase_add_test(tc, default_latency_buckets_ascend_from_100us_to_10s);
    suite_add_tcase(s, tc);
    return s;
}
