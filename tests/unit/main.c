/* main.c - the unit test runner: every suite of suites.h in one SRunner.
 *
 * Prints Check's summary line and exits non-zero on any failure. Check's
 * own variables select a subset: CK_RUN_SUITE=event, CK_RUN_CASE=decode,
 * CK_FORK=no (run in one process, e.g. under a debugger). */
#include <stdlib.h>

#include "suites.h"

int main(void)
{
    Suite *(*const suites[])(void) = {
        admin_suite, backoff_suite, config_suite, db_suite, db_array_suite, event_suite, inventory_suite,
        json_fast_suite,
        metrics_suite, order_suite, ready_suite, trace_suite, util_suite, waker_suite,
    };
    SRunner *sr = srunner_create(NULL);
    for (size_t i = 0; i < sizeof suites / sizeof suites[0]; i++)
        srunner_add_suite(sr, suites[i]());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
