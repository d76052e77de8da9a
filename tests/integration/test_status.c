/* test_status.c - both services together: a posted order becomes CONFIRMED
 * or REJECTED with the right reason, and a duplicated or contradicting
 * reply has no effect on the order. */
#include "support/harness.h"
#include "suites.h"
#include "util.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct natsd nats;
static struct svc orders, inv;

static void setup(void)
{
    pg_reset("orders");
    pg_reset("inventory");
    natsd_start(&nats);
    svc_start(&orders, "order-service", nats.url, NULL);
    svc_start(&inv, "inventory-service", nats.url, NULL);
    static const char *const h[] = {"Content-Type: application/json", NULL};
    struct http_result r;
    ck_assert_int_eq(http_do(inv.port, "PUT", "/inventory/SKU-1", h, "{\"available\":5}", 15, &r), 0);
    ck_assert_int_eq(r.status, 200);
    http_result_free(&r);
}

static void teardown(void)
{
    svc_stop(&orders, SIGKILL);
    svc_stop(&inv, SIGKILL);
    natsd_cleanup(&nats);
}

/* Waits until the order at path leaves PENDING; returns its final body. */
static char *wait_settled(const char *path)
{
    struct http_result r;
    for (int i = 0; i < 300; i++, sleep_ms(100)) {
        ck_assert_int_eq(http_get(orders.port, path, &r), 200);
        if (strcmp(json_field(r.body, "status"), "PENDING") != 0) {
            free(r.head);
            return r.body;
        }
        http_result_free(&r);
    }
    ck_abort_msg("order %s never settled", path);
    return NULL;
}

/* Posts an order and waits until it leaves PENDING; returns the final body. */
static char *settle(const char *items, char id[64])
{
    char *req = xasprintf("{\"customer_id\":\"c-9\",\"items\":%s}", items);
    struct http_result r;
    ck_assert_int_eq(http_post_json(orders.port, "/orders", req, &r), 201);
    snprintf(id, 64, "%s", json_field(r.body, "id"));
    http_result_free(&r);
    free(req);
    char path[128];
    snprintf(path, sizeof path, "/orders/%s", id);
    return wait_settled(path);
}

START_TEST(order_in_stock_becomes_confirmed)
{
    char id[64];
    char *body = settle("[{\"sku\":\"SKU-1\",\"qty\":2}]", id);
    ck_assert_str_eq(json_field(body, "status"), "CONFIRMED");
    ck_assert_ptr_null(strstr(body, "\"reason\""));
    char created[64];
    snprintf(created, sizeof created, "%s", json_field(body, "created_at"));
    ck_assert_str_ne(json_field(body, "updated_at"), created);
    free(body);
    ck_assert_int_eq(pg_long("inventory", "SELECT reserved FROM stock WHERE sku = 'SKU-1'"), 2);
}
END_TEST

#define TRACE_ID "0af7651916cd43dd8448eb211c80319c"
#define TRACEPARENT "00-" TRACE_ID "-b7ad6b7169203331-01"

struct log_wait {
    const char *path;
    const char *needles[6];
};

static int logged(void *arg)
{
    struct log_wait *w = arg;
    return file_lines_with(w->path, w->needles) >= 1;
}

START_TEST(one_trace_id_in_both_services_logs_for_both_hops)
{
    static const char *const h[] = {"Content-Type: application/json",
                                    "traceparent: " TRACEPARENT, NULL};
    const char *req = "{\"customer_id\":\"c-9\",\"items\":[{\"sku\":\"SKU-1\",\"qty\":1}]}";
    struct http_result r;
    ck_assert_int_eq(http_do(orders.port, "POST", "/orders", h, req, strlen(req), &r), 0);
    ck_assert_int_eq(r.status, 201);
    char oid[128], path[128];
    snprintf(oid, sizeof oid, "\"order_id\":\"%s\"", json_field(r.body, "id"));
    snprintf(path, sizeof path, "/orders/%s", json_field(r.body, "id"));
    http_result_free(&r);
    free(wait_settled(path));
    const char *tid = "\"trace_id\":\"" TRACE_ID "\"";
    /* hop 1: accepted and published by order-service, consumed by inventory-service;
     * hop 2: the reply published by inventory-service, consumed by order-service */
    struct log_wait waits[] = {
        {orders.proc.log, {tid, oid, "\"event_id\":", "order accepted", NULL}},
        {orders.proc.log, {tid, oid, "\"event_id\":", "published OrderCreated", NULL}},
        {inv.proc.log, {tid, oid, "\"event_id\":", "\"result\":\"reserved\"", NULL}},
        {inv.proc.log, {tid, oid, "\"event_id\":", "published InventoryReserved", NULL}},
        {orders.proc.log, {tid, oid, "\"event_id\":", "\"result\":\"confirmed\"", NULL}},
    };
    for (size_t i = 0; i < sizeof waits / sizeof waits[0]; i++)
        ck_assert_msg(wait_until(logged, &waits[i], 10000), "no line with %s %s in %s",
                      waits[i].needles[2], waits[i].needles[3], waits[i].path);
    /* the reply carries a child of the trace: same trace id, another span */
    char *tp = pg_text("inventory", "SELECT traceparent FROM outbox_events");
    ck_assert_ptr_nonnull(tp);
    ck_assert(strncmp(tp, "00-" TRACE_ID "-", 36) == 0);
    ck_assert_str_ne(tp, TRACEPARENT);
    free(tp);
}
END_TEST

START_TEST(insufficient_stock_becomes_rejected)
{
    char id[64];
    char *body = settle("[{\"sku\":\"SKU-1\",\"qty\":6}]", id);
    ck_assert_str_eq(json_field(body, "status"), "REJECTED");
    ck_assert_str_eq(json_field(body, "reason"), "insufficient_stock");
    free(body);
}
END_TEST

START_TEST(unknown_sku_becomes_rejected)
{
    char id[64];
    char *body = settle("[{\"sku\":\"SKU-1\",\"qty\":1},{\"sku\":\"NO-SUCH\",\"qty\":1}]", id);
    ck_assert_str_eq(json_field(body, "status"), "REJECTED");
    ck_assert_str_eq(json_field(body, "reason"), "unknown_sku");
    free(body);
    ck_assert_int_eq(pg_long("inventory", "SELECT reserved FROM stock WHERE sku = 'SKU-1'"), 0);
}
END_TEST

static double metric(const char *series)
{
    return svc_metric(&orders, series);
}

static double want_metric;
static const char *want_series;
static int metric_reaches(void *arg)
{
    (void)arg;
    return metric(want_series) >= want_metric;
}

static void publish_reply(const char *subject, const char *body)
{
    char msg_id[UUID_STR_LEN];
    uuid_v4(msg_id); /* a new transport id: only the body's event_id can dedupe */
    ck_assert_int_eq(natsd_publish(&nats, subject, msg_id, body), 0);
}

static void wait_metric(const char *series, double v)
{
    want_series = series;
    want_metric = v;
    ck_assert_msg(wait_until(metric_reaches, NULL, 10000), "%s never reached %g", series, v);
}

START_TEST(duplicated_or_contradicting_reply_changes_nothing)
{
    char id[64];
    char *first = settle("[{\"sku\":\"SKU-1\",\"qty\":1}]", id);
    char *sql = xasprintf("SELECT payload FROM outbox_events WHERE payload::json->>'order_id' = '%s'", id);
    char *reply = pg_text("inventory", sql);
    ck_assert_ptr_nonnull(reply);

    publish_reply("inventory.reserved", reply);
    wait_metric("order_replies_total{result=\"duplicate\"}", 1);

    char other[UUID_STR_LEN], unknown[UUID_STR_LEN];
    uuid_v4(other);
    uuid_v4(unknown);
    char *contra = xasprintf("{\"event_id\":\"%s\",\"type\":\"InventoryRejected\",\"order_id\":\"%s\","
                             "\"reason\":\"insufficient_stock\",\"occurred_at\":\"2026-01-01T00:00:00Z\"}",
                             other, id);
    publish_reply("inventory.rejected", contra);
    wait_metric("order_replies_total{result=\"poison\"}", 1);
    char *stray = xasprintf("{\"event_id\":\"%s\",\"type\":\"InventoryReserved\",\"order_id\":\"%s\","
                            "\"occurred_at\":\"2026-01-01T00:00:00Z\"}", unknown, unknown);
    publish_reply("inventory.reserved", stray);
    wait_metric("order_replies_total{result=\"poison\"}", 2);

    struct http_result r;
    char path[128];
    snprintf(path, sizeof path, "/orders/%s", id);
    ck_assert_int_eq(http_get(orders.port, path, &r), 200);
    ck_assert_str_eq(json_field(r.body, "status"), "CONFIRMED");
    ck_assert_str_eq(json_field(r.body, "updated_at"), json_field(first, "updated_at"));
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM dead_letters"), 2);
    ck_assert_double_eq(metric("order_replies_total{result=\"confirmed\"}"), 1);
    http_result_free(&r);
    free(stray);
    free(contra);
    free(reply);
    free(sql);
    free(first);
}
END_TEST

/* The contract pairs each reply subject with one type: a body of the other
 * type, or on a subject of none, cannot tell which of the two is right. */
START_TEST(a_reply_on_a_subject_not_its_types_is_poison)
{
    svc_stop(&inv, SIGKILL); /* the order stays PENDING meanwhile */
    struct http_result r;
    ck_assert_int_eq(http_post_json(orders.port, "/orders",
                     "{\"customer_id\":\"c-9\",\"items\":[{\"sku\":\"SKU-1\",\"qty\":1}]}", &r), 201);
    char id[64], path[128], e1[UUID_STR_LEN], e2[UUID_STR_LEN];
    snprintf(id, sizeof id, "%s", json_field(r.body, "id"));
    snprintf(path, sizeof path, "/orders/%s", id);
    http_result_free(&r);
    uuid_v4(e1);
    uuid_v4(e2);
    char *rejected = xasprintf("{\"event_id\":\"%s\",\"type\":\"InventoryRejected\",\"order_id\":\"%s\","
                               "\"reason\":\"insufficient_stock\",\"occurred_at\":\"2026-01-01T00:00:00Z\"}",
                               e1, id);
    char *reserved = xasprintf("{\"event_id\":\"%s\",\"type\":\"InventoryReserved\",\"order_id\":\"%s\","
                               "\"occurred_at\":\"2026-01-01T00:00:00Z\"}", e2, id);
    publish_reply("inventory.reserved", rejected);
    publish_reply("inventory.other", reserved);
    wait_metric("order_replies_total{result=\"poison\"}", 2);
    ck_assert_int_eq(http_get(orders.port, path, &r), 200);
    ck_assert_str_eq(json_field(r.body, "status"), "PENDING");
    http_result_free(&r);
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM dead_letters WHERE error LIKE "
                                       "'%is not sent on this subject%'"), 2);
    svc_start(&inv, "inventory-service", nats.url, NULL);
    char *body = wait_settled(path);
    ck_assert_str_eq(json_field(body, "status"), "CONFIRMED");
    free(body);
    free(reserved);
    free(rejected);
}
END_TEST

START_TEST(broker_restarted_on_an_empty_store_is_set_up_again)
{
    char id[64];
    char *body = settle("[{\"sku\":\"SKU-1\",\"qty\":1}]", id);
    ck_assert_str_eq(json_field(body, "status"), "CONFIRMED");
    free(body);
    natsd_restart_empty(&nats); /* streams and durable consumers are gone */
    body = settle("[{\"sku\":\"SKU-1\",\"qty\":1}]", id);
    ck_assert_str_eq(json_field(body, "status"), "CONFIRMED");
    free(body);
    ck_assert_int_eq(pg_long("inventory", "SELECT reserved FROM stock WHERE sku = 'SKU-1'"), 2);
    /* the consumer made again is said at warn: its stream comes again from the start */
    ck_assert(proc_log_has(&inv.proc, "or its stream is gone"));
}
END_TEST

static int order_event_published(void *arg)
{
    (void)arg;
    return pg_long("orders", "SELECT count(*) FROM outbox_published") == 1;
}

START_TEST(order_whose_event_the_broker_lost_is_redriven)
{
    const char *env[] = {"REDRIVE_AFTER=2s", NULL};
    svc_stop(&orders, SIGTERM);
    svc_start(&orders, "order-service", nats.url, env);
    svc_stop(&inv, SIGKILL); /* nobody consumes the event yet */
    struct http_result r;
    ck_assert_int_eq(http_post_json(orders.port, "/orders",
                     "{\"customer_id\":\"c-9\",\"items\":[{\"sku\":\"SKU-1\",\"qty\":1}]}", &r), 201);
    char path[128];
    snprintf(path, sizeof path, "/orders/%s", json_field(r.body, "id"));
    http_result_free(&r);
    ck_assert(wait_until(order_event_published, NULL, 10000));
    natsd_restart_empty(&nats); /* acknowledged, then lost with the store */
    svc_start(&inv, "inventory-service", nats.url, NULL);
    char *body = wait_settled(path);
    ck_assert_str_eq(json_field(body, "status"), "CONFIRMED");
    free(body);
    ck_assert_double_ge(svc_metric(&orders, "orders_redriven_total"), 1);
}
END_TEST

#define SETTLED_BEFORE 5000

/* What the sessions read of an index of orders, so far. */
static long index_reads(const char *index, const char *what)
{
    char *sql = xasprintf("SELECT %s FROM pg_stat_user_indexes WHERE indexrelname = '%s'",
                          what, index);
    long n = pg_long("orders", sql);
    free(sql);
    return n;
}

/* n settled orders, written behind the service's back. */
static void add_settled_orders(int n)
{
    char *sql = xasprintf("INSERT INTO orders (id, customer_id, status, event_id) "
                          "SELECT gen_random_uuid(), 'old', 'CONFIRMED', gen_random_uuid() "
                          "FROM generate_series(1, %d)", n);
    ck_assert_int_eq(pg_exec("orders", sql), 0);
    free(sql);
}

/* Replies settle their orders found by id, whatever the statistics say.
 * Two plans did otherwise: one followed the partial index of pending
 * orders, whose statistics are the last vacuum's (here it found none
 * pending), reading every pending order's entry, dead ones included, for
 * each batch; another, on statistics taken while the table was small (here
 * one order; autovacuum off so they stay), scanned every order for each
 * batch. Counted by Postgres itself once the service's sessions have ended
 * (its re-drive, the partial index's other reader, first looks after 30 s). */
START_TEST(replies_settle_orders_by_id_whatever_the_statistics_say)
{
    ck_assert_int_eq(svc_stop(&orders, SIGTERM), 0);
    add_settled_orders(1);
    ck_assert_int_eq(pg_exec("orders", "ALTER TABLE orders SET (autovacuum_enabled = false)"), 0);
    ck_assert_int_eq(pg_exec("orders", "VACUUM ANALYZE orders"), 0);
    add_settled_orders(SETTLED_BEFORE); /* the statistics still say one */
    long pending_scans = index_reads("orders_pending_page", "idx_scan");
    long by_id = index_reads("orders_pkey", "idx_tup_read");
    svc_start(&orders, "order-service", nats.url, NULL);
    char id[64];
    for (int i = 0; i < 8; i++) { /* more batches than a plan's first five */
        char *body = settle("[{\"sku\":\"SKU-NONE\",\"qty\":1}]", id);
        ck_assert_str_eq(json_field(body, "status"), "REJECTED");
        free(body);
    }
    ck_assert_int_eq(svc_stop(&orders, SIGTERM), 0);
    ck_assert_int_eq(index_reads("orders_pending_page", "idx_scan") - pending_scans, 0);
    /* the replies' lookups, the test's reads of each order and the items'
     * key checks: a few per order; one scan of every order is 5,000 */
    ck_assert_int_lt(index_reads("orders_pkey", "idx_tup_read") - by_id, SETTLED_BEFORE);
}
END_TEST

Suite *status_suite(void)
{
    Suite *s = suite_create("status");
    TCase *tc = tcase_create("replies");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, order_in_stock_becomes_confirmed);
    tcase_add_test(tc, one_trace_id_in_both_services_logs_for_both_hops);
    tcase_add_test(tc, insufficient_stock_becomes_rejected);
    tcase_add_test(tc, unknown_sku_becomes_rejected);
    tcase_add_test(tc, duplicated_or_contradicting_reply_changes_nothing);
    tcase_add_test(tc, a_reply_on_a_subject_not_its_types_is_poison);
    tcase_add_test(tc, broker_restarted_on_an_empty_store_is_set_up_again);
    tcase_add_test(tc, order_whose_event_the_broker_lost_is_redriven);
    tcase_add_test(tc, replies_settle_orders_by_id_whatever_the_statistics_say);
    suite_add_tcase(s, tc);
    return s;
}
