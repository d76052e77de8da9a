/* failpoint.c - parses FAILPOINTS and fires them. Owns the armed list. */
#include "failpoint.h"
#include "log.h"
#include "util.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every name the code passes. */
static const char *const known[] = {FP_RELAY_AFTER_ACK, FP_INBOX_AFTER_COMMIT, FP_DB_COMMIT_CUT,
                                    FP_DB_COMMIT_LOST, FP_STOP_HANG};

static struct {
    const char *name; /* one of known[] */
    atomic_int left;
} armed[FAILPOINTS_MAX];
static int narmed;

static const char *known_name(const char *name, size_t len)
{
    for (size_t i = 0; i < ARRAY_LEN(known); i++)
        if (strlen(known[i]) == len && strncmp(known[i], name, len) == 0)
            return known[i];
    return NULL;
}

/* Reads spec ("name[:n],..."), arming each entry when arm is set. 1 when
 * every entry is a known name, alone or with ":n" (n from 1, its digits
 * alone, below 10^9), at most FAILPOINTS_MAX of them (none: spec empty). */
static int parse_spec(const char *spec, int arm)
{
    int n = 0;
    for (const char *t = spec; *spec;) {
        size_t len = strcspn(t, ","), nlen = strcspn(t, ",:");
        const char *name = known_name(t, nlen);
        long long count = 1;
        char num[16] = "";
        if (nlen < len) /* ":n" */
            snprintf(num, sizeof num, "%.*s", (int)(len - nlen - 1), t + nlen + 1);
        if (++n > FAILPOINTS_MAX || !name ||
            (nlen < len && (len - nlen - 1 >= sizeof num || decimal_parse(num, 0, &count) < 0 ||
                            count < 1 || count > 999999999)))
            return 0;
        if (arm) {
            armed[narmed].name = name;
            atomic_store(&armed[narmed++].left, (int)count);
        }
        t += len;
        if (*t++ == '\0')
            break;
    }
    return 1;
}

int failpoint_spec_valid(const char *spec)
{
    return parse_spec(spec, 0);
}

void failpoint_init(const char *spec)
{
    narmed = 0;
    if (spec && parse_spec(spec, 0))
        parse_spec(spec, 1);
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
