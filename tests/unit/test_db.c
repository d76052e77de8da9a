/* test_db.c - what every session of the services asks of the server. */
#include "db.h"
#include "suites.h"

#include <string.h>

static const struct db_limits lim = {.request_ms = 5000, .work_ms = 30000, .idle_tx_ms = 60000,
                                     .tcp_ms = 12000};

static int has(const char *opts, const char *setting)
{
    return strstr(opts, setting) != NULL;
}

/* No session compiles plans: a disabled sequential scan costs a plan 10^10,
 * which made the reconciliation compile (70 of its 100 ms). */
START_TEST(no_session_compiles_its_plans)
{
    enum db_kind kinds[] = {DB_WORK, DB_REQUEST, DB_UNBOUNDED};
    char opts[1024];
    db_configure(&lim);
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        db_session_options(kinds[i], opts, sizeof opts);
        ck_assert_msg(has(opts, "-c jit=off"), "kind %d: %s", (int)kinds[i], opts);
    }
}
END_TEST

/* Each kind's bounds: background work never plans a sequential scan; a
 * request gets its own timeout; a migration none. */
START_TEST(each_kind_has_its_bounds)
{
    char opts[1024];
    db_configure(&lim);
    db_session_options(DB_WORK, opts, sizeof opts);
    ck_assert(has(opts, "-c statement_timeout=30000 "));
    ck_assert(has(opts, "-c enable_seqscan=off"));
    db_session_options(DB_REQUEST, opts, sizeof opts);
    ck_assert(has(opts, "-c statement_timeout=5000 "));
    ck_assert(!has(opts, "enable_seqscan"));
    db_session_options(DB_UNBOUNDED, opts, sizeof opts);
    ck_assert(has(opts, "-c statement_timeout=0 "));
    ck_assert(has(opts, "-c idle_in_transaction_session_timeout=60000 "));
}
END_TEST

Suite *db_suite(void)
{
    Suite *s = suite_create("db");
    TCase *tc = tcase_create("session");
    tcase_add_test(tc, no_session_compiles_its_plans);
    tcase_add_test(tc, each_kind_has_its_bounds);
    suite_add_tcase(s, tc);
    return s;
}
