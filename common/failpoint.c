/* failpoint.c - parses FAILPOINTS and fires them. Owns the armed list. */
#include "failpoint.h"
#include "log.h"
#include "util.h"

#include <ctype.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every name the code passes. */
static const char *const known[] = {FP_RELAY_AFTER_ACK, FP_INBOX_AFTER_COMMIT, FP_DB_COMMIT_CUT,
                                    FP_DB_COMMIT_LOST};

static struct {
    char name[48];
    atomic_int left;
} armed[FAILPOINTS_MAX];
static int narmed;

static int is_known(const char *name, size_t len)
{
    for (size_t i = 0; i < ARRAY_LEN(known); i++)
        if (strlen(known[i]) == len && strncmp(known[i], name, len) == 0)
            return 1;
    return 0;
}

/* ":n" after a name: n from 1 to 999,999,999, its digits alone. */
static int count_valid(const char *c, size_t len)
{
    if (len < 2 || len > 10 || c[0] != ':' || c[1] == '0')
        return 0;
    for (size_t i = 1; i < len; i++)
        if (!isdigit((unsigned char)c[i]))
            return 0;
    return 1;
}

int failpoint_spec_valid(const char *spec)
{
    if (*spec == '\0')
        return 1;
    int n = 0;
    for (const char *t = spec;; t++) {
        size_t len = strcspn(t, ","), name = strcspn(t, ",:");
        if (++n > FAILPOINTS_MAX || !is_known(t, name) ||
            (name < len && !count_valid(t + name, len - name)))
            return 0;
        t += len;
        if (*t == '\0')
            return 1;
    }
}

void failpoint_init(const char *spec)
{
    char *copy = xstrdup(spec ? spec : ""), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t && narmed < FAILPOINTS_MAX;
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
