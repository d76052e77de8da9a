/* suites.h - the integration suites (real Postgres and nats-server). */
#ifndef TESTS_INTEGRATION_SUITES_H
#define TESTS_INTEGRATION_SUITES_H

#include <check.h>

Suite *migrate_suite(void);
Suite *service_suite(void);
Suite *orders_suite(void);
Suite *relay_suite(void);
Suite *inventory_suite(void);
Suite *status_suite(void);
Suite *bounds_suite(void);
Suite *recovery_suite(void);
Suite *admin_suite(void);
Suite *liveness_suite(void);

#endif
