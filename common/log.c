/* log.c - one JSON object per line on stderr, written with a single
 * write(2) so that lines from different threads never interleave.
 * Owns the minimum level and the service name; not the message text. */
#include "log.h"
#include "util.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static enum log_level log_min = LOG_INFO;
static const char *log_service = "";
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_init(enum log_level min, const char *service)
{
    log_min = min;
    log_service = service ? service : "";
}

int log_level_parse(const char *s, enum log_level *out)
{
    for (size_t i = 0; i < ARRAY_LEN(level_names); i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

int log_enabled(enum log_level lvl)
{
    return lvl >= log_min;
}

static void log_write(enum log_level lvl, json_t *fields, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

static void log_write(enum log_level lvl, json_t *fields, const char *fmt, va_list ap)
{
    char *msg = NULL;
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    char ts[32];
    time_rfc3339(ts);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "ts", ts, "level", level_names[lvl],
                          "service", log_service, "msg", msg ? msg : fmt);
    const char *k;
    json_t *v;
    json_object_foreach(fields, k, v)
        if (o && !json_object_get(o, k))
            json_object_set(o, k, v);
    char *line = o ? json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
    if (line) {
        size_t n = strlen(line);
        line[n] = '\n'; /* json_dumps allocates n + 1: reuse the NUL for the newline */
        ssize_t w = write(STDERR_FILENO, line, n + 1);
        (void)w;
    }
    free(line);
    json_decref(o);
    free(msg);
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
    if (lvl < log_min)
        return;
    va_list ap;
    va_start(ap, fmt);
    log_write(lvl, NULL, fmt, ap);
    va_end(ap);
}

void log_with(enum log_level lvl, json_t *fields, const char *fmt, ...)
{
    if (lvl >= log_min) {
        va_list ap;
        va_start(ap, fmt);
        log_write(lvl, fields, fmt, ap);
        va_end(ap);
    }
    json_decref(fields);
}
