/* main.c - runs every integration suite; needs the stack from scripts/stack
 * (STACK_PG_URL_*) and nats-server on PATH. Check's CK_RUN_SUITE=<name>
 * runs a single suite. Exit status: non-zero on any failure. */
#include "suites.h"

#include <stdlib.h>

int main(void)
{
    SRunner *sr = srunner_create(migrate_suite());
    srunner_add_suite(sr, service_suite());
    srunner_add_suite(sr, orders_suite());
    srunner_add_suite(sr, relay_suite());
    srunner_add_suite(sr, inventory_suite());
    srunner_add_suite(sr, status_suite());
    srunner_add_suite(sr, bounds_suite());
    srunner_add_suite(sr, recovery_suite());
    srunner_add_suite(sr, admin_suite());
    srunner_add_suite(sr, liveness_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
