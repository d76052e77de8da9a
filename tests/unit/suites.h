/* suites.h - one Check suite per module under unit test.
 *
 * Each tests/unit/test_<module>.c defines its X_suite(); main.c runs them
 * all. Unit tests cover pure code only: no servers, no network. */
#ifndef TESTS_UNIT_SUITES_H
#define TESTS_UNIT_SUITES_H

#include <check.h>

Suite *admin_suite(void);
Suite *backoff_suite(void);
Suite *config_suite(void);
Suite *db_suite(void);
Suite *db_array_suite(void);
Suite *event_suite(void);
Suite *inventory_suite(void);
Suite *json_fast_suite(void);
Suite *metrics_suite(void);
Suite *order_suite(void);
Suite *ready_suite(void);
Suite *trace_suite(void);
Suite *util_suite(void);
Suite *waker_suite(void);

#endif
