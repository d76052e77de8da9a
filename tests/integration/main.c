/* main.c - runs the integration suites; needs the stack from scripts/stack
 * (STACK_PG_URL_*) and nats-server on PATH. ITEST_SUITES="relay admin ..."
 * runs those suites, ITEST_SKIP_SUITES="..." every other (scripts/test
 * runs the two shards one list makes at once, each on its own stack);
 * Check's CK_RUN_SUITE=<name> runs a single one. Exit status: non-zero on
 * any failure, or on a listed name that is no suite. */
#include "suites.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name;
    Suite *(*make)(void);
} all[] = {
    {"migrate", migrate_suite},     {"service", service_suite},   {"orders", orders_suite},
    {"relay", relay_suite},         {"inventory", inventory_suite}, {"status", status_suite},
    {"bounds", bounds_suite},       {"recovery", recovery_suite}, {"admin", admin_suite},
    {"liveness", liveness_suite},
};

/* Whether `name` is a word of the space-separated list (NULL: every name). */
static int listed(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; p && (p = strstr(p, name)); p += n)
        if ((p == list || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
            return 1;
    return list == NULL;
}

/* Each word of the list (NULL: none) names a suite: a misspelt one would
 * run nothing, or run twice. */
static int all_known(const char *var)
{
    const char *list = getenv(var);
    if (!list)
        return 1;
    char *copy = strdup(list), *save = NULL;
    int ok = 1;
    for (char *w = strtok_r(copy, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
        size_t i = 0;
        while (i < ARRAY_LEN(all) && strcmp(all[i].name, w) != 0)
            i++;
        if (i == ARRAY_LEN(all)) {
            fprintf(stderr, "%s: no suite named %s\n", var, w);
            ok = 0;
        }
    }
    free(copy);
    return ok;
}

int main(void)
{
    if (!all_known("ITEST_SUITES") || !all_known("ITEST_SKIP_SUITES"))
        return EXIT_FAILURE;
    const char *only = getenv("ITEST_SUITES"), *skip = getenv("ITEST_SKIP_SUITES");
    SRunner *sr = srunner_create(NULL);
    int n = 0;
    for (size_t i = 0; i < ARRAY_LEN(all); i++)
        if (listed(only, all[i].name) && !(skip && listed(skip, all[i].name))) {
            srunner_add_suite(sr, all[i].make());
            n++;
        }
    if (n == 0) { /* a run of nothing would pass */
        fprintf(stderr, "ITEST_SUITES: no suite left to run (ITEST_SKIP_SUITES skips the rest)\n");
        srunner_free(sr);
        return EXIT_FAILURE;
    }
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
