/* failpoint.c - parses FAILPOINTS and fires them. Owns the armed list. */
#include "failpoint.h"
#include "log.h"
#include "util.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FAILPOINTS 8

static struct {
    char name[48];
    atomic_int left;
} armed[MAX_FAILPOINTS];
static int narmed;

void failpoint_init(const char *spec)
{
    char *copy = xstrdup(spec ? spec : ""), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t && narmed < MAX_FAILPOINTS;
         t = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(t, ':');
        int n = colon ? atoi(colon + 1) : 1;
        if (colon)
            *colon = '\0';
        snprintf(armed[narmed].name, sizeof armed[narmed].name, "%s", t);
        atomic_store(&armed[narmed++].left, n > 0 ? n : 1);
    }
    free(copy);
}

int failpoint_on(const char *name)
{
    for (int i = 0; i < narmed; i++)
        if (strcmp(armed[i].name, name) == 0 && atomic_fetch_sub(&armed[i].left, 1) == 1) {
            log_warn("failpoint %s: firing", name);
            return 1;
        }
    return 0;
}

void failpoint_hit(const char *name)
{
    for (int i = 0; i < narmed; i++) {
        if (strcmp(armed[i].name, name) == 0 && atomic_fetch_sub(&armed[i].left, 1) == 1) {
            log_warn("failpoint %s: killing the process", name);
            raise(SIGKILL);
        }
    }
}
