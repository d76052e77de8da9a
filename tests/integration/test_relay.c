/* test_relay.c - the outbox relay against real nats-server and Postgres:
 * a broker outage loses nothing, a crash between ack and mark publishes
 * nothing twice, two relays share one table, a message that can never be
 * sent turns dead without blocking the rows behind it, and the rows it
 * deletes do not pile up in the outbox. */
#include "support/harness.h"
#include "suites.h"
#include "util.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ORDER "{\"customer_id\":\"c-1\",\"items\":[{\"sku\":\"SKU-1\",\"qty\":1}]}"

static struct natsd nats;

static void setup(void)
{
    pg_reset("orders");
    natsd_start(&nats);
}

static void teardown(void)
{
    natsd_cleanup(&nats);
}

static long pending(void)
{
    return pg_long("orders", "SELECT count(*) FROM outbox WHERE status = 'pending'");
}

static int drained(void *arg)
{
    (void)arg;
    return pending() == 0;
}


static void post_orders(struct svc *s, int n)
{
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(http_post_json(s->port, "/orders", ORDER, NULL), 201);
}

START_TEST(broker_outage_loses_nothing_and_publishes_once)
{
    struct svc s;
    svc_start(&s, "order-service", nats.url, NULL);
    post_orders(&s, 5);
    ck_assert(wait_until(drained, NULL, 10000));
    natsd_kill(&nats);
    post_orders(&s, 20);
    int seen = 0;
    for (int i = 0; i < 100 && !seen; i++, sleep_ms(50))
        seen = svc_metric(&s, "outbox_pending") == 20;
    ck_assert(seen);
    ck_assert_int_eq(pending(), 20);
    ck_assert_double_gt(svc_metric(&s, "outbox_publish_failures_total"), 0);
    ck_assert_int_eq(http_get(s.port, "/readyz", NULL), 503);
    ck_assert_int_gt(pg_long("orders", "SELECT max(attempts) FROM outbox"), 0);
    natsd_restart(&nats);
    ck_assert(wait_until(drained, NULL, 30000));
    ck_assert_int_eq(natsd_stream_msgs(&nats, "ORDERS"), 25);
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM outbox_published WHERE stream_seq > 0"), 25);
    ck_assert_int_eq(svc_stop(&s, SIGTERM), 0);
}
END_TEST

static int tried_often(void *arg)
{
    (void)arg;
    return pg_long("orders", "SELECT coalesce(min(attempts), 0) FROM outbox") >= 8;
}

/* However long the broker was away, its rows are tried again every 2 s at
 * most: publishing resumes within seconds of its return, not after the 60 s
 * a row's own exponential backoff would reach. */
START_TEST(a_long_outage_is_over_within_seconds_of_the_brokers_return)
{
    struct svc s;
    svc_start(&s, "order-service", nats.url, NULL);
    natsd_kill(&nats);
    post_orders(&s, 10);
    /* 8 tries: a plain exponential backoff from 100 ms would now wait 12.8 s */
    ck_assert(wait_until(tried_often, NULL, 30000));
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM outbox WHERE "
                             "next_attempt_at > now() + interval '2100 ms'"), 0);
    natsd_restart(&nats);
    int64_t t0 = mono_ms();
    ck_assert(wait_until(drained, NULL, 30000));
    ck_assert_int_lt(mono_ms() - t0, 6000);
    ck_assert_int_eq(natsd_stream_msgs(&nats, "ORDERS"), 10);
    ck_assert_int_eq(svc_stop(&s, SIGTERM), 0);
}
END_TEST

START_TEST(crash_between_ack_and_mark_publishes_each_event_once)
{
    struct svc s;
    /* The second acked pass kills the process: its orders were posted after
     * the first order's 201 came back. At the first, the kill could beat
     * that 201 (the relay is woken as the answer is queued), and no order
     * was accepted (seen once, 2026-12-08). */
    const char *env[] = {"FAILPOINTS=relay_after_ack:2", NULL};
    svc_start(&s, "order-service", nats.url, env);
    int accepted = 0;
    for (int i = 0; i < 10; i++)
        accepted += http_post_json(s.port, "/orders", ORDER, NULL) == 201;
    ck_assert_int_eq(proc_wait(&s.proc, 10000), 128 + SIGKILL);
    ck_assert_int_ge(accepted, 1);
    long left = pending();
    ck_assert_int_gt(left, 0);                     /* acked by JetStream, never marked */
    ck_assert_int_gt(natsd_stream_msgs(&nats, "ORDERS"), 0);
    svc_start(&s, "order-service", nats.url, NULL);
    ck_assert(wait_until(drained, NULL, 15000));
    /* an order committed just before the kill may never have got its 201 */
    long committed = pg_long("orders", "SELECT count(*) FROM orders");
    ck_assert_int_ge(committed, accepted);
    ck_assert_int_eq(natsd_stream_msgs(&nats, "ORDERS"), committed);
    ck_assert_double_ge(svc_metric(&s, "outbox_duplicates_total"), 1); /* the re-send was dropped */
    ck_assert_int_eq(svc_stop(&s, SIGTERM), 0);
}
END_TEST

START_TEST(two_relays_publish_each_event_once)
{
    struct svc a, b;
    svc_start(&a, "order-service", nats.url, NULL);
    svc_start(&b, "order-service", nats.url, NULL);
    /* rows committed behind the relays' backs: only the sweeps find them */
    ck_assert_int_eq(pg_exec("orders",
        "INSERT INTO outbox (event_id, subject, event_type, payload) "
        "SELECT gen_random_uuid(), 'orders.created', 'OrderCreated', '{\"n\":' || g || '}' "
        "FROM generate_series(1, 3000) g"), 0);
    ck_assert(wait_until(drained, NULL, 30000));
    ck_assert_int_eq(natsd_stream_msgs(&nats, "ORDERS"), 3000);
    double pa = svc_metric(&a, "outbox_published_total"), pb = svc_metric(&b, "outbox_published_total");
    ck_assert_double_eq(pa + pb, 3000);
    ck_assert_double_eq(svc_metric(&a, "outbox_duplicates_total") + svc_metric(&b, "outbox_duplicates_total"), 0);
    ck_assert_int_eq(svc_stop(&a, SIGTERM), 0);
    ck_assert_int_eq(svc_stop(&b, SIGTERM), 0);
}
END_TEST

START_TEST(unsendable_row_turns_dead_and_blocks_nothing)
{
    struct svc s;
    const char *env[] = {"RELAY_MAX_ATTEMPTS=2", NULL};
    /* larger than the server's max_payload (1 MB): it can never be sent */
    svc_start(&s, "order-service", nats.url, env);
    ck_assert_int_eq(pg_exec("orders",
        "INSERT INTO outbox (event_id, subject, event_type, payload) "
        "VALUES (gen_random_uuid(), 'orders.created', 'OrderCreated', repeat('x', 2000000))"), 0);
    post_orders(&s, 3);
    ck_assert(wait_until(drained, NULL, 20000));
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM outbox WHERE status = 'dead' "
                     "AND attempts = 2 AND last_error <> ''"), 1);
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM outbox_published"), 3);
    ck_assert_double_eq(svc_metric(&s, "outbox_dead_total"), 1);
    ck_assert_int_eq(svc_stop(&s, SIGTERM), 0);
}
END_TEST

START_TEST(published_rows_are_pruned_after_retention)
{
    struct svc s;
    const char *env[] = {"OUTBOX_RETENTION=1s", NULL};
    svc_start(&s, "order-service", nats.url, env);
    post_orders(&s, 3);
    ck_assert(wait_until(drained, NULL, 10000));
    int gone = 0;
    for (int i = 0; i < 150 && !gone; i++, sleep_ms(100))
        gone = pg_long("orders", "SELECT count(*) FROM outbox_events") == 0;
    ck_assert(gone);
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM orders"), 3);
    ck_assert_int_eq(svc_stop(&s, SIGTERM), 0);
}
END_TEST

/* BACKLOG events of 300 bytes committed at once: many relay batches. */
#define BACKLOG 20000
static void insert_events(int n)
{
    char sql[256];
    snprintf(sql, sizeof sql, "INSERT INTO outbox (event_id, subject, event_type, payload) "
             "SELECT gen_random_uuid(), 'orders.created', 'OrderCreated', repeat('x', 300) "
             "FROM generate_series(1, %d)", n);
    ck_assert_int_eq(pg_exec("orders", sql), 0);
}

START_TEST(a_backlog_drains_without_a_single_resend)
{
    struct svc s;
    svc_start(&s, "order-service", nats.url, NULL);
    insert_events(BACKLOG);
    ck_assert(wait_until(drained, NULL, 60000));
    ck_assert_int_eq(natsd_stream_msgs(&nats, "ORDERS"), BACKLOG);
    /* every ack credited to its own message: nothing failed, nothing sent twice */
    ck_assert_double_eq(svc_metric(&s, "outbox_publish_failures_total"), 0);
    ck_assert_double_eq(svc_metric(&s, "outbox_duplicates_total"), 0);
    ck_assert_double_eq(svc_metric(&s, "outbox_published_total"), BACKLOG);
    ck_assert_int_eq(svc_stop(&s, SIGTERM), 0);
}
END_TEST

/* The service counted at least `want` events acknowledged. */
struct published {
    struct svc *s;
    int want;
};

static int published_all(void *arg)
{
    struct published *p = arg;
    return svc_metric(p->s, "outbox_published_total") >= p->want;
}

static int low_id_published(void *arg)
{
    (void)arg;
    return pg_long("orders", "SELECT count(*) FROM outbox_published WHERE id = -1") == 1;
}

/* A re-send (an operator's, the recovery's) writes an event to the outbox
 * again while its earlier publish is still filed in outbox_published. The
 * filing INSERT of its batch fails on the event's unique id: the batch goes
 * back, the earlier row is unfiled, and the batch is published and filed
 * again, the fresh rows in it too. One row per event, no message twice. */
START_TEST(an_event_sent_again_replaces_its_earlier_publish_with_its_batch)
{
    struct svc s;
    svc_start(&s, "order-service", nats.url, NULL);
    post_orders(&s, 3);
    ck_assert(wait_until(drained, NULL, 10000));
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM outbox_published"), 3);
    char *ev = pg_text("orders", "SELECT event_id FROM outbox_published ORDER BY id LIMIT 1");
    ck_assert_ptr_nonnull(ev);
    long earlier = pg_long("orders", "SELECT max(id) FROM outbox_published");
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO outbox (event_id, subject, event_type, payload) "
             "SELECT event_id, subject, event_type, payload FROM outbox_published "
             "WHERE event_id = '%s' UNION ALL "
             "SELECT gen_random_uuid(), 'orders.created', 'OrderCreated', 'fresh' "
             "FROM generate_series(1, 5)", ev);
    ck_assert_int_eq(pg_exec("orders", sql), 0);
    ck_assert(wait_until(drained, NULL, 10000));
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM outbox"), 0);
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM outbox_published"), 8);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM outbox_published WHERE event_id = '%s' "
             "AND id > %ld", ev, earlier); /* the new row, filed with its batch */
    ck_assert_int_eq(pg_long("orders", sql), 1);
    ck_assert_int_eq(natsd_stream_msgs(&nats, "ORDERS"), 8); /* the event once */
    /* counted once the mark commits, and only what JetStream had before the
     * batch: the event sent again, not the five fresh rows the undone
     * publish stored (they were counted duplicates when published again) */
    ck_assert_double_eq(svc_metric(&s, "outbox_duplicates_total"), 1);
    ck_assert_double_eq(svc_metric(&s, "outbox_published_total"), 9);
    free(ev);
    ck_assert_int_eq(svc_stop(&s, SIGTERM), 0);
}
END_TEST

/* A long drain claims each batch past the last one's ids; a row committed
 * meanwhile under a lower id (another committer's, committed late) must not
 * wait for the whole backlog: it is published while the drain goes on. */
START_TEST(a_row_committed_late_under_a_low_id_is_not_left_behind_by_a_drain)
{
    struct svc s;
    const char *env[] = {"RELAY_BATCH=10", NULL};
    svc_start(&s, "order-service", nats.url, env);
    insert_events(BACKLOG);
    ck_assert(wait_until(published_all, &(struct published){&s, BACKLOG / 4}, 30000)); /* well into it */
    long before = pg_long("orders", "SELECT count(*) FROM outbox_published");
    ck_assert_int_eq(pg_exec("orders",
        "INSERT INTO outbox (id, event_id, subject, event_type, payload) "
        "VALUES (-1, gen_random_uuid(), 'orders.created', 'OrderCreated', 'late')"), 0);
    ck_assert(wait_until(low_id_published, NULL, 30000));
    /* claimed after a few batches (16 passes at most, the batches in flight),
     * not after the rest of a drain (up to 1,000 passes of 10) */
    long ahead = pg_long("orders", "SELECT count(*) FROM outbox_published WHERE published_at < "
                                   "(SELECT published_at FROM outbox_published WHERE id = -1)") - before;
    ck_assert_int_lt(ahead, 500);
    ck_assert_int_gt(pending(), 1000); /* the drain was still going */
    ck_assert(wait_until(drained, NULL, 120000));
    ck_assert_int_eq(natsd_stream_msgs(&nats, "ORDERS"), BACKLOG + 1);
    ck_assert_int_eq(svc_stop(&s, SIGTERM), 0);
}
END_TEST

/* The broker dies while a backlog drains: a batch is then sent and the next
 * one already claimed behind it. Nothing is lost or given up on, and once
 * the broker is back each event is in the stream once. */
START_TEST(a_broker_killed_in_mid_backlog_loses_nothing_and_duplicates_nothing)
{
    struct svc s;
    svc_start(&s, "order-service", nats.url, NULL);
    insert_events(BACKLOG);
    ck_assert(wait_until(published_all, &(struct published){&s, BACKLOG / 4}, 30000)); /* well into it */
    natsd_kill(&nats);
    ck_assert_int_lt(pg_long("orders", "SELECT count(*) FROM outbox_published"), BACKLOG);
    /* one statement, one snapshot: a batch being marked is in one or the other */
    ck_assert_int_eq(pg_long("orders", "SELECT (SELECT count(*) FROM outbox WHERE status = 'pending') "
                                       "+ (SELECT count(*) FROM outbox_published)"), BACKLOG);
    natsd_restart(&nats);
    ck_assert(wait_until(drained, NULL, 60000));
    ck_assert_int_eq(natsd_stream_msgs(&nats, "ORDERS"), BACKLOG);
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM outbox_published"), BACKLOG);
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM outbox"), 0);
    ck_assert_int_eq(svc_stop(&s, SIGTERM), 0);
}
END_TEST

/* While the marker is held up (a lock the test takes on outbox_published),
 * one-row batches keep coming: each new drain claims a batch, sends it, and
 * claims the next behind it. None of them may take the connection of the
 * batch still being marked: nothing fails, nothing is logged as wrong, and
 * each event is published once when the lock goes. */
START_TEST(a_claim_never_takes_the_connection_of_the_batch_being_marked)
{
    struct svc s;
    const char *env[] = {"RELAY_BATCH=1", NULL};
    svc_start(&s, "order-service", nats.url, env);
    post_orders(&s, 2); /* every relay connection has been used (and its statements prepared) */
    ck_assert(wait_until(drained, NULL, 10000));
    PGconn *c = pg_hold("orders", "LOCK TABLE outbox_published IN SHARE MODE");
    ck_assert_ptr_nonnull(c);
    for (int i = 0; i < 3; i++, sleep_ms(300))
        post_orders(&s, 1);
    ck_assert(pg_release(c, "ROLLBACK"));
    ck_assert(wait_until(drained, NULL, 10000));
    ck_assert_int_eq(natsd_stream_msgs(&nats, "ORDERS"), 5);
    ck_assert_double_eq(svc_metric(&s, "outbox_published_total"), 5);
    ck_assert_double_eq(svc_metric(&s, "outbox_duplicates_total"), 0);
    ck_assert(!proc_log_has(&s.proc, "\"level\":\"warn\""));
    ck_assert_int_eq(svc_stop(&s, SIGTERM), 0);
}
END_TEST

static long outbox_seq_scans(void)
{
    return pg_long("orders", "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'outbox'");
}

/* A vacuum that finds the outbox drained records it as empty. The relay's
 * statements planned after it (here: a service starting on that outbox)
 * must still find rows through the index: a plan made for an empty table
 * scans the whole heap for every claim, which under load had grown to 2,800
 * pages, 20 ms a claim. Counted by Postgres itself, once the service's
 * sessions have ended and reported their statistics. */
START_TEST(claims_follow_the_index_after_a_vacuum_found_the_outbox_empty)
{
    struct svc s;
    svc_start(&s, "order-service", nats.url, NULL); /* migrated */
    ck_assert_int_eq(svc_stop(&s, SIGTERM), 0);
    ck_assert_int_eq(pg_exec("orders", "VACUUM outbox"), 0);
    ck_assert_int_eq(pg_long("orders", "SELECT relpages FROM pg_class WHERE relname = 'outbox'"), 0);
    long before = outbox_seq_scans();
    svc_start(&s, "order-service", nats.url, NULL);
    struct published p = {.s = &s};
    for (p.want = 3; p.want <= 36; p.want += 3) { /* more claims than a plan's first five */
        post_orders(&s, 3);
        ck_assert(wait_until(published_all, &p, 10000));
    }
    ck_assert_int_eq(svc_stop(&s, SIGTERM), 0);
    ck_assert_int_eq(natsd_stream_msgs(&nats, "ORDERS"), 36);
    ck_assert_int_eq(outbox_seq_scans() - before, 0);
}
END_TEST

static long outbox_vacuums(void)
{
    return pg_long("orders", "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'outbox'");
}

static int vacuumed_since(void *arg)
{
    return outbox_vacuums() > *(long *)arg;
}

/* Every event published is a row deleted, and each claim from the head of
 * the pending index steps over the dead ones until a vacuum: autovacuum's
 * once a minute leaves tens of thousands under load. The service vacuums
 * the outbox itself (not autovacuum: vacuum_count counts only those) once
 * it holds 1,000 dead rows, and leaves fewer behind. */
START_TEST(the_service_vacuums_the_outbox_once_it_holds_a_thousand_dead_rows)
{
    struct svc s;
    svc_start(&s, "order-service", nats.url, NULL);
    /* a fresh table: autovacuum could take these rows first */
    ck_assert_int_eq(pg_exec("orders", "ALTER TABLE outbox SET (autovacuum_enabled = false)"), 0);
    long before = outbox_vacuums();
    insert_events(1500);
    ck_assert(wait_until(drained, NULL, 30000));
    ck_assert_int_eq(natsd_stream_msgs(&nats, "ORDERS"), 1500);
    ck_assert(wait_until(vacuumed_since, &before, 30000)); /* statistics: up to 10 s late */
    ck_assert_int_lt(pg_long("orders", "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'outbox'"),
                     1000);
    ck_assert_int_eq(svc_stop(&s, SIGTERM), 0);
}
END_TEST

Suite *relay_suite(void)
{
    Suite *s = suite_create("relay");
    TCase *tc = tcase_create("outbox");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, broker_outage_loses_nothing_and_publishes_once);
    tcase_add_test(tc, a_long_outage_is_over_within_seconds_of_the_brokers_return);
    tcase_add_test(tc, crash_between_ack_and_mark_publishes_each_event_once);
    tcase_add_test(tc, two_relays_publish_each_event_once);
    tcase_add_test(tc, unsendable_row_turns_dead_and_blocks_nothing);
    tcase_add_test(tc, published_rows_are_pruned_after_retention);
    tcase_add_test(tc, a_backlog_drains_without_a_single_resend);
    tcase_add_test(tc, a_broker_killed_in_mid_backlog_loses_nothing_and_duplicates_nothing);
    tcase_add_test(tc, an_event_sent_again_replaces_its_earlier_publish_with_its_batch);
    tcase_add_test(tc, a_row_committed_late_under_a_low_id_is_not_left_behind_by_a_drain);
    tcase_add_test(tc, a_claim_never_takes_the_connection_of_the_batch_being_marked);
    tcase_add_test(tc, claims_follow_the_index_after_a_vacuum_found_the_outbox_empty);
    tcase_add_test(tc, the_service_vacuums_the_outbox_once_it_holds_a_thousand_dead_rows);
    suite_add_tcase(s, tc);
    return s;
}
