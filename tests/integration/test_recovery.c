/* test_recovery.c - what nothing may break, past every window: orders whose
 * events JetStream lost settle even after their outbox rows were pruned,
 * in both directions, and the stock books stay exact; a Postgres crash
 * (kill -9) loses no answered order and no applied effect.
 *
 * Timers are short here (REDRIVE_AFTER 1 s, OUTBOX_RETENTION 1 s, a 1 s
 * duplicate window) so that the whole story runs in seconds. */
#include "broker.h"
#include "support/harness.h"
#include "suites.h"
#include "util.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STOCK 1000

static struct natsd nats;
static struct svc orders, inv;

/* Re-drive held back (phase 1: the loss happens first), or at once. */
static const char *const order_quiet[] = {"REDRIVE_AFTER=1h", "OUTBOX_RETENTION=1s",
                                          "STREAM_DUPLICATE_WINDOW=1s", NULL};
static const char *const order_redrive[] = {"REDRIVE_AFTER=1s", "OUTBOX_RETENTION=1s",
                                            "STREAM_DUPLICATE_WINDOW=1s", NULL};
static const char *const inv_env[] = {"OUTBOX_RETENTION=1s", "STREAM_DUPLICATE_WINDOW=1s", NULL};

static void setup(void)
{
    pg_reset("orders");
    pg_reset("inventory");
    natsd_start(&nats);
    svc_start(&inv, "inventory-service", nats.url, inv_env);
    static const char *const h[] = {"Content-Type: application/json", NULL};
    char body[64];
    snprintf(body, sizeof body, "{\"available\":%d}", STOCK);
    struct http_result r;
    ck_assert_int_eq(http_do(inv.port, "PUT", "/inventory/SKU-1", h, body, strlen(body), &r), 0);
    ck_assert_int_eq(r.status, 200);
    http_result_free(&r);
}

static void teardown(void)
{
    svc_stop(&orders, SIGKILL);
    svc_stop(&inv, SIGKILL);
    natsd_cleanup(&nats);
}

static void post_orders(int n)
{
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(http_post_json(orders.port, "/orders",
                         "{\"customer_id\":\"c-1\",\"items\":[{\"sku\":\"SKU-1\",\"qty\":1}]}",
                         NULL), 201);
}

static const char *want_db, *want_sql;
static long want;
static int sql_reaches(void *arg)
{
    (void)arg;
    return pg_long(want_db, want_sql) == want;
}

static void wait_sql(const char *db, const char *sql, long v, int timeout_ms)
{
    want_db = db, want_sql = sql, want = v;
    ck_assert_msg(wait_until(sql_reaches, NULL, timeout_ms), "%s: %s never reached %ld (is %ld)",
                  db, sql, v, pg_long(db, sql));
}

/* Every order settled; the books match the orders exactly. */
static void assert_books(long n)
{
    long reserved = n < STOCK ? n : STOCK;
    wait_sql("orders", "SELECT count(*) FROM orders WHERE status <> 'PENDING'", n, 120000);
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM orders WHERE status = 'CONFIRMED'"),
                     reserved);
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM orders WHERE status = 'REJECTED' "
                             "AND reason = 'insufficient_stock'"), n - reserved);
    ck_assert_int_eq(pg_long("inventory", "SELECT reserved FROM stock WHERE sku = 'SKU-1'"),
                     reserved);
    ck_assert_int_eq(pg_long("inventory", "SELECT available FROM stock WHERE sku = 'SKU-1'"),
                     STOCK - reserved);
    ck_assert_int_eq(pg_long("inventory", "SELECT count(*) FROM reservations"), reserved);
    ck_assert_int_eq(pg_long("inventory", "SELECT count(*) FROM order_decisions"), n);
}

START_TEST(orders_lost_with_their_outbox_rows_pruned_all_settle)
{
    const long n = 1500;
    svc_stop(&inv, SIGTERM); /* inventory is down while the orders come in */
    svc_start(&orders, "order-service", nats.url, order_quiet);
    post_orders((int)n);
    /* published, then pruned after 1 s: no row is left to re-send */
    wait_sql("orders", "SELECT count(*) FROM outbox_events", 0, 60000);
    svc_stop(&orders, SIGTERM);
    ck_assert_int_eq(natsd_purge(&nats, "ORDERS"), 0);
    ck_assert_int_eq(natsd_stream_msgs(&nats, "ORDERS"), 0);
    svc_start(&orders, "order-service", nats.url, order_redrive);
    svc_start(&inv, "inventory-service", nats.url, inv_env);
    assert_books(n);
    ck_assert_double_ge(svc_metric(&orders, "orders_redriven_total"), (double)n);
}
END_TEST

START_TEST(replies_lost_with_their_outbox_rows_pruned_all_settle)
{
    const long n = 300;
    svc_stop(&inv, SIGTERM);
    svc_start(&orders, "order-service", nats.url, order_quiet);
    post_orders((int)n);
    wait_sql("orders", "SELECT count(*) FROM outbox WHERE status <> 'published'", 0, 60000);
    svc_stop(&orders, SIGTERM); /* order-service is down while inventory decides */
    svc_start(&inv, "inventory-service", nats.url, inv_env);
    wait_sql("inventory", "SELECT count(*) FROM order_decisions", n, 60000);
    wait_sql("inventory", "SELECT count(*) FROM outbox_events", 0, 60000); /* replies pruned */
    ck_assert_int_eq(natsd_purge(&nats, "INVENTORY"), 0);
    ck_assert_int_eq(natsd_stream_msgs(&nats, "INVENTORY"), 0);
    svc_start(&orders, "order-service", nats.url, order_redrive);
    assert_books(n);
}
END_TEST

/* An OrderCreated rebuilt from its order (the outbox row pruned) continues
 * the trace the order was created in: the client's trace id, from the
 * order's own row. */
START_TEST(a_rebuilt_order_created_keeps_the_orders_trace)
{
    static const char *const keep[] = {"REDRIVE_AFTER=1s", "OUTBOX_RETENTION=1h",
                                       "STREAM_DUPLICATE_WINDOW=1s", NULL};
    static const char *const h[] = {
        "Content-Type: application/json",
        "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", NULL};
    static const char body[] = "{\"customer_id\":\"c-1\",\"items\":[{\"sku\":\"SKU-1\",\"qty\":1}]}";
    svc_stop(&inv, SIGTERM); /* the order stays PENDING */
    svc_start(&orders, "order-service", nats.url, order_quiet);
    struct http_result r;
    ck_assert_int_eq(http_do(orders.port, "POST", "/orders", h, body, strlen(body), &r), 0);
    ck_assert_int_eq(r.status, 201);
    http_result_free(&r);
    wait_sql("orders", "SELECT count(*) FROM outbox_published", 1, 10000);
    svc_stop(&orders, SIGTERM);
    ck_assert_int_eq(pg_exec("orders", "DELETE FROM outbox_published"), 0); /* as if pruned */
    ck_assert_int_eq(natsd_purge(&nats, "ORDERS"), 0); /* and lost: the re-drive sends it again */
    svc_start(&orders, "order-service", nats.url, keep);
    wait_sql("orders", "SELECT count(*) FROM outbox_events", 1, 20000);
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM outbox_events o JOIN orders d "
                             "ON d.event_id = o.event_id WHERE o.traceparent LIKE "
                             "'00-4bf92f3577b34da6a3ce929d0e0e4736-%'"), 1);
}
END_TEST

/* inventory-service down for 6 s (a pass every 0.5 s, each order due
 * every 1 s, the window 1 s): ORDERS holds `waiting` messages, one per
 * order, none re-driven; then it is started and all `orders` settle. */
static void waited_for_then_settled(long waiting, long orders_in_all)
{
    sleep_ms(6000);
    ck_assert_int_eq(natsd_stream_msgs(&nats, "ORDERS"), waiting);
    ck_assert_double_eq(svc_metric(&orders, "orders_redriven_total"), 0);
    svc_start(&inv, "inventory-service", nats.url, inv_env);
    assert_books(orders_in_all);
}

/* A consumer that is down is waited for: its events are not lost, and each
 * re-send past the duplicate window was stored again (a helper's probe:
 * inventory-service down 165 s, every OrderCreated twice in ORDERS, one
 * more copy per order per REDRIVE_AFTER). Here a pass every 0.5 s, each
 * order due every 1 s, the window 1 s: 6 s stored about 5 copies of each. */
START_TEST(a_consumer_down_is_waited_for_not_redriven)
{
    const long n = 50;
    svc_stop(&inv, SIGTERM); /* its consumer is there (setup), and falls behind */
    svc_start(&orders, "order-service", nats.url, order_redrive);
    post_orders((int)n);
    waited_for_then_settled(n, n);
}
END_TEST

/* The same after a quiet spell longer than the stream's max age: the
 * message at the consumer's floor is gone from the stream (deleted here,
 * as the max age would), and the re-drive, which bounded what it sends by
 * that message's time, sent every waiting order again each REDRIVE_AFTER
 * (a helper's probe: 10 orders, 60 messages in ORDERS after 48 s). The
 * first message the stream holds bounds it now. */
START_TEST(a_consumer_down_is_waited_for_when_its_floor_message_is_gone)
{
    /* published rows kept (as by default): an order created before the
     * first message the stream holds, and published after it, is known
     * to wait by its published row */
    static const char *const env[] = {"REDRIVE_AFTER=1s", "OUTBOX_RETENTION=1h",
                                      "STREAM_DUPLICATE_WINDOW=1s", NULL};
    const long n = 10;
    svc_start(&orders, "order-service", nats.url, env);
    post_orders(1);
    wait_sql("orders", "SELECT count(*) FROM orders WHERE status <> 'PENDING'", 1, 20000);
    ck_assert_int_eq(natsd_stream_msg_delete(&nats, "ORDERS", 1), 0); /* the floor's message */
    svc_stop(&inv, SIGTERM);
    post_orders((int)n);
    waited_for_then_settled(n, n + 1);
}
END_TEST

static int broker_is_up(void *b)
{
    return broker_connected(b);
}

/* A reader that fetches and never acknowledges: its floor never moves while
 * it fetches. It stands in for what nats-server 2.9.10 does after a replica
 * lost messages it had acknowledged: it keeps their entries awaiting an ack
 * for good, and nothing it still has moves the floor past them. A review
 * held 5 lost orders back so, for ever, with the first gating of the
 * re-drive (a consumer with messages unacknowledged); the re-drive must not
 * wait for a reader that fetches and gets nowhere. */
START_TEST(a_reader_that_gets_nowhere_holds_nothing_back)
{
    const long n = 5;
    svc_stop(&inv, SIGTERM);
    svc_start(&orders, "order-service", nats.url, order_redrive);
    post_orders((int)n);
    struct broker_settings set = {nats.url, "stuck-reader", "INVENTORY", 1, 3LL * 24 * 3600 * 1000,
                                  0, 0, 0, NULL, 0};
    struct broker *b = NULL;
    struct broker_sub *sub = NULL;
    char msg[256];
    ck_assert_int_eq(broker_new(&set, &b, msg, sizeof msg), ERR_OK);
    ck_assert(wait_until(broker_is_up, b, 10000));
    ck_assert_int_eq(broker_subscribe(b, "ORDERS", "inventory-service", "orders.created", &sub, msg,
                                      sizeof msg), ERR_OK);
    int64_t until = mono_ms() + 8000;
    while (mono_ms() < until && svc_metric(&orders, "orders_redriven_total") < (double)n) {
        struct broker_in *got = NULL;
        int k = 0;
        if (broker_fetch(sub, 10, 500, &got, &k) == ERR_OK)
            broker_fetch_free(got, k); /* never acknowledged */
    }
    ck_assert_double_ge(svc_metric(&orders, "orders_redriven_total"), (double)n);
    broker_sub_free(sub);
    broker_free(b);
    svc_start(&inv, "inventory-service", nats.url, inv_env);
    assert_books(n);
}
END_TEST

static int order_confirmed(void *arg)
{
    (void)arg;
    return pg_long("orders", "SELECT count(*) FROM orders WHERE customer_id = 'c-1' "
                   "AND status = 'CONFIRMED'") == 1;
}

/* More orders stuck for good than one re-drive pass reads (10 pages of 500):
 * orders without items, whose OrderCreated cannot be rebuilt. The lost order
 * behind them is still reached, on a later pass, from where the last one
 * stopped (a sweep that always began at the oldest, or took the oldest 1,000,
 * would never get to it). */
START_TEST(stuck_orders_never_starve_a_newer_one)
{
    svc_stop(&inv, SIGTERM);
    svc_start(&orders, "order-service", nats.url, order_quiet);
    post_orders(1);
    wait_sql("orders", "SELECT count(*) FROM outbox_events", 0, 60000); /* published, pruned */
    svc_stop(&orders, SIGTERM);
    ck_assert_int_eq(natsd_purge(&nats, "ORDERS"), 0);
    ck_assert_int_eq(pg_exec("orders", "INSERT INTO orders (id, customer_id, created_at, event_id) "
                             "SELECT gen_random_uuid(), 'stuck', now() - interval '1 hour', "
                             "gen_random_uuid() FROM generate_series(1, 6000)"), 0);
    svc_start(&orders, "order-service", nats.url, order_redrive);
    svc_start(&inv, "inventory-service", nats.url, inv_env);
    ck_assert_msg(wait_until(order_confirmed, NULL, 60000), "the lost order was never re-driven");
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM orders WHERE status = 'PENDING'"),
                     6000);
    ck_assert_double_ge(svc_metric(&orders, "orders_redriven_total"), 1);
}
END_TEST

/* Freezes Postgres's background writers: a commit that does not wait for
 * its WAL then stays in memory until the crash, where it is lost. One that
 * waits flushes it itself. */
static void freeze_wal_writers(void)
{
    ck_assert_int_eq(pg_signal_writers(SIGSTOP), 3);
}

static void crash_postgres(void)
{
    stack_cmd("pg-crash"); /* kill -9 of every Postgres process, the frozen ones too */
    stack_cmd("pg-start"); /* crash recovery */
}

/* kill -9 of Postgres right after orders were answered, and again right
 * after inventory decided them: every answered order and every applied
 * effect survives (their commits wait for the WAL); a relay mark lost with
 * the crash (the relay's commits do not wait) only publishes its events
 * again, and each stream keeps one message per event. Before each crash
 * the other service is frozen: a commit of its would flush the WAL before
 * it, and hide a commit under test that did not wait. */
START_TEST(a_postgres_crash_loses_no_answered_order_and_no_effect)
{
    static const char *const keep[] = {"OUTBOX_RETENTION=1h", NULL};
    const long n = 300;
    svc_stop(&inv, SIGTERM); /* nothing downstream commits meanwhile */
    svc_start(&orders, "order-service", nats.url, keep);
    freeze_wal_writers();
    post_orders((int)n);
    svc_freeze(&orders); /* the last ones answered a moment ago */
    crash_postgres();
    svc_thaw(&orders);
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM orders"), n);
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM order_items"), n);
    wait_sql("orders", "SELECT count(*) FROM outbox_published", n, 60000);
    wait_sql("orders", "SELECT count(*) FROM outbox", 0, 60000);
    ck_assert_int_eq(natsd_stream_msgs(&nats, "ORDERS"), n);
    svc_freeze(&orders); /* applies no reply meanwhile */
    freeze_wal_writers();
    svc_start(&inv, "inventory-service", nats.url, keep);
    wait_sql("inventory", "SELECT count(*) FROM order_decisions", n, 60000);
    svc_freeze(&inv);
    crash_postgres();
    svc_thaw(&inv);
    svc_thaw(&orders);
    ck_assert_int_eq(pg_long("inventory", "SELECT count(*) FROM order_decisions"), n);
    assert_books(n);
    ck_assert_int_eq(pg_long("inventory", "SELECT count(*) FROM processed_messages"), n);
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM processed_messages"), n);
    wait_sql("inventory", "SELECT count(*) FROM outbox", 0, 60000);
    ck_assert_int_eq(natsd_stream_msgs(&nats, "INVENTORY"), n);
}
END_TEST

struct answer {
    int status;
    char id[64];
};

static void *post_slow_order(void *arg)
{
    struct answer *a = arg;
    struct http_result r;
    a->status = http_post_json(orders.port, "/orders",
                               "{\"customer_id\":\"slow-commit\",\"items\":[{\"sku\":\"SKU-1\",\"qty\":1}]}",
                               &r);
    if (a->status == 201)
        snprintf(a->id, sizeof a->id, "%s", json_field(r.body, "id"));
    http_result_free(&r);
    return NULL;
}

/* A commit whose answer is lost in a crash, and whose WAL never reached the
 * disk: after the restart Postgres hands its transaction id out again, and
 * the status of that id then tells of another transaction, which commits
 * (here an order posted after the restart). The order in doubt is answered
 * 201 only if it was written, and is written at most once. */
START_TEST(a_commit_lost_in_a_crash_is_not_answered_as_made)
{
    svc_stop(&inv, SIGTERM);
    svc_start(&orders, "order-service", nats.url, NULL);
    /* its COMMIT takes 2.5 s, all of its WAL still in memory */
    ck_assert_int_eq(pg_exec("orders", "CREATE FUNCTION slow_commit() RETURNS trigger "
                             "LANGUAGE plpgsql AS $$BEGIN PERFORM pg_sleep(2.5); RETURN NULL; END$$"), 0);
    ck_assert_int_eq(pg_exec("orders", "CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON orders "
                             "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
                             "WHEN (NEW.customer_id = 'slow-commit') EXECUTE FUNCTION slow_commit()"), 0);
    freeze_wal_writers();
    struct answer a = {0};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, post_slow_order, &a), 0);
    sleep_ms(700);
    crash_postgres();
    post_orders(1); /* takes the lost transaction's id, and commits */
    pthread_join(t, NULL);
    long written = pg_long("orders", "SELECT count(*) FROM orders WHERE customer_id = 'slow-commit'");
    ck_assert_int_le(written, 1);
    if (a.status == 201) {
        char path[128];
        snprintf(path, sizeof path, "/orders/%s", a.id);
        struct http_result r;
        ck_assert_int_eq(http_get(orders.port, path, &r), 200);
        http_result_free(&r);
        ck_assert_int_eq(written, 1);
    } else {
        if (a.status != 503)
            proc_print_tail(&orders.proc, "order-service", 30);
        ck_assert_int_eq(a.status, 503);
    }
}
END_TEST

Suite *recovery_suite(void)
{
    Suite *s = suite_create("recovery");
    TCase *tc = tcase_create("lost_and_pruned");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, orders_lost_with_their_outbox_rows_pruned_all_settle);
    tcase_add_test(tc, replies_lost_with_their_outbox_rows_pruned_all_settle);
    tcase_add_test(tc, stuck_orders_never_starve_a_newer_one);
    tcase_add_test(tc, a_rebuilt_order_created_keeps_the_orders_trace);
    tcase_add_test(tc, a_consumer_down_is_waited_for_not_redriven);
    tcase_add_test(tc, a_consumer_down_is_waited_for_when_its_floor_message_is_gone);
    tcase_add_test(tc, a_reader_that_gets_nowhere_holds_nothing_back);
    suite_add_tcase(s, tc);
    tc = tcase_create("postgres_crash");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, a_postgres_crash_loses_no_answered_order_and_no_effect);
    tcase_add_test(tc, a_commit_lost_in_a_crash_is_not_answered_as_made);
    suite_add_tcase(s, tc);
    return s;
}
