/* test_migrate.c - the migration runner against the real Postgres:
 * concurrent starters apply each file once; a failing file keeps nothing. */
#include "support/harness.h"
#include "suites.h"
#include "migrate.h"
#include "util.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[256];

static void write_file(const char *name, const char *sql)
{
    char *path = xasprintf("%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(sql, f);
    fclose(f);
    free(path);
}

static void setup(void)
{
    pg_reset("orders");
    snprintf(dir, sizeof dir, "%s/mig-XXXXXX", itest_tmp());
    ck_assert_ptr_nonnull(mkdtemp(dir));
    /* 002 is not idempotent: applied twice, the table would hold two rows */
    write_file("001_create.sql", "CREATE TABLE applied_once (x int);");
    write_file("002_insert.sql", "INSERT INTO applied_once VALUES (1);");
    write_file("README.txt", "not a migration");
}

START_TEST(concurrent_starters_apply_each_file_once)
{
    enum { N = 6 };
    pid_t pids[N];
    int64_t start_at = mono_ms() + 300; /* all children start their run together */
    for (int i = 0; i < N; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            char msg[256];
            while (mono_ms() < start_at)
                ;
            /* a run that waited LOCK_WAIT_MS for the others is tried again,
             * as the service does (six runs on a slow machine may take it) */
            enum err e = ERR_RETRY;
            for (int tries = 0; e == ERR_RETRY && tries < 10; tries++)
                e = migrate_run(pg_url("orders"), dir, NULL, msg, sizeof msg);
            _exit(e == ERR_OK ? 0 : 1);
        }
    }
    for (int i = 0; i < N; i++) {
        int st = 0;
        waitpid(pids[i], &st, 0);
        ck_assert_int_eq(WEXITSTATUS(st), 0);
    }
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM applied_once"), 1);
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM schema_migrations"), 2);
}
END_TEST

/* A session that holds the migration lock (stuck, or a long migration):
 * a run waits 2 s, then says who holds it, and the caller tries again (a
 * start waited in silence, for ever). */
START_TEST(a_held_lock_is_waited_for_a_bounded_time_and_named)
{
    PGconn *holder = PQconnectdb(pg_url("orders"));
    ck_assert_int_eq(PQstatus(holder), CONNECTION_OK);
    PQclear(PQexec(holder, "SET application_name = 'stuck-holder'"));
    PGresult *r = PQexec(holder, "SELECT pg_advisory_lock(7306620031)");
    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    PQclear(r);
    char msg[256] = "";
    int64_t t0 = mono_ms();
    ck_assert_int_eq(migrate_run(pg_url("orders"), dir, NULL, msg, sizeof msg), ERR_RETRY);
    ck_assert_int_lt(mono_ms() - t0, 5000);
    ck_assert_msg(strstr(msg, "stuck-holder") != NULL, "msg: %s", msg);
    PQfinish(holder); /* the lock goes with its session */
    ck_assert_int_eq(migrate_run(pg_url("orders"), dir, NULL, msg, sizeof msg), ERR_OK);
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM applied_once"), 1);
}
END_TEST

START_TEST(second_run_applies_nothing)
{
    char msg[256];
    int applied = -1;
    ck_assert_int_eq(migrate_run(pg_url("orders"), dir, &applied, msg, sizeof msg), ERR_OK);
    ck_assert_int_eq(applied, 2);
    ck_assert_int_eq(migrate_run(pg_url("orders"), dir, &applied, msg, sizeof msg), ERR_OK);
    ck_assert_int_eq(applied, 0);
    write_file("003_more.sql", "INSERT INTO applied_once VALUES (2);");
    ck_assert_int_eq(migrate_run(pg_url("orders"), dir, &applied, msg, sizeof msg), ERR_OK);
    ck_assert_int_eq(applied, 1);
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM applied_once"), 2);
    /* a file of comments alone is applied, as nothing: it was taken for a
     * server away (no SQLSTATE), and tried again for ever (a review) */
    write_file("004_note.sql", "-- nothing to change here\n");
    ck_assert_int_eq(migrate_run(pg_url("orders"), dir, &applied, msg, sizeof msg), ERR_OK);
    ck_assert_int_eq(applied, 1);
}
END_TEST

START_TEST(failing_file_keeps_nothing_of_itself)
{
    write_file("003_broken.sql", "CREATE TABLE half (x int); SELEC oops;");
    char msg[256] = "";
    int applied = 0;
    ck_assert_int_eq(migrate_run(pg_url("orders"), dir, &applied, msg, sizeof msg), ERR_DB);
    ck_assert_ptr_nonnull(strstr(msg, "003_broken.sql"));
    ck_assert_int_eq(applied, 2); /* the good files before it are applied */
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM pg_tables WHERE tablename = 'half'"), 0);
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM schema_migrations WHERE version = 3"), 0);
}
END_TEST

START_TEST(unreachable_server_is_unavailable)
{
    char msg[256];
    char *url = xasprintf("postgresql://postgres@127.0.0.1:%d/orders", free_port());
    ck_assert_int_eq(migrate_run(url, dir, NULL, msg, sizeof msg), ERR_UNAVAILABLE);
    free(url);
}
END_TEST

START_TEST(project_migrations_apply_cleanly)
{
    char msg[512];
    pg_reset("inventory");
    ck_assert_int_eq(migrate_run(pg_url("orders"), "migrations/order", NULL, msg, sizeof msg), ERR_OK);
    ck_assert_int_eq(migrate_run(pg_url("inventory"), "migrations/inventory", NULL, msg, sizeof msg),
                     ERR_OK);
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM outbox"), 0);
    ck_assert_int_eq(pg_long("inventory", "SELECT count(*) FROM stock"), 0);
}
END_TEST

/* An event sent again while its earlier publish is still filed: listed
 * once, by where it stands now (pending). */
START_TEST(outbox_events_lists_an_event_sent_again_once)
{
    char msg[512];
    static const char *const dbs[] = {"orders", "inventory"};
    static const char *const dirs[] = {"migrations/order", "migrations/inventory"};
    for (int i = 0; i < 2; i++) {
        if (i)
            pg_reset(dbs[i]);
        ck_assert_int_eq(migrate_run(pg_url(dbs[i]), dirs[i], NULL, msg, sizeof msg), ERR_OK);
        ck_assert_int_eq(pg_exec(dbs[i],
            "INSERT INTO outbox_published (id, event_id, subject, event_type, payload, attempts, "
            "created_at, published_at) SELECT 1, e, 's', 't', '{}', 0, now(), now() FROM "
            "(VALUES ('0e0e0e0e-1111-4222-8333-444444444444'::uuid), "
            "('0e0e0e0e-1111-4222-8333-555555555555'::uuid)) v(e)"), 0);
        ck_assert_int_eq(pg_exec(dbs[i],
            "INSERT INTO outbox (event_id, subject, event_type, payload) "
            "VALUES ('0e0e0e0e-1111-4222-8333-444444444444', 's', 't', '{}')"), 0);
        ck_assert_int_eq(pg_long(dbs[i], "SELECT count(*) FROM outbox_events"), 2);
        ck_assert_int_eq(pg_long(dbs[i], "SELECT count(*) FROM outbox_events WHERE event_id = "
                                         "'0e0e0e0e-1111-4222-8333-444444444444' AND status = 'pending'"), 1);
    }
}
END_TEST

Suite *migrate_suite(void)
{
    Suite *s = suite_create("migrate");
    TCase *tc = tcase_create("runner");
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, concurrent_starters_apply_each_file_once);
    tcase_add_test(tc, second_run_applies_nothing);
    tcase_add_test(tc, a_held_lock_is_waited_for_a_bounded_time_and_named);
    tcase_add_test(tc, failing_file_keeps_nothing_of_itself);
    tcase_add_test(tc, unreachable_server_is_unavailable);
    tcase_add_test(tc, project_migrations_apply_cleanly);
    tcase_add_test(tc, outbox_events_lists_an_event_sent_again_once);
    suite_add_tcase(s, tc);
    return s;
}
