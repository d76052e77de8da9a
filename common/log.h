/* log.h - JSON-lines logging to stderr: {"ts","level","msg",...}.
 *
 * Only outer layers (HTTP handlers, relay and consumer loops, main) log.
 * Lower modules return an enum err and fill a caller's message buffer. */
#ifndef COMMON_LOG_H
#define COMMON_LOG_H

#include <jansson.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Sets the minimum level written and the "service" field of every line. */
void log_init(enum log_level min, const char *service);
/* Parses "debug|info|warn|error"; returns 0 and sets *out, or -1. */
int log_level_parse(const char *s, enum log_level *out);

void log_msg(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* As log_msg, with extra fields on the line (e.g. order_id, event_id,
 * trace_id). fields is a JSON object (stolen; NULL for none); its keys never
 * replace ts, level, service or msg. */
void log_with(enum log_level lvl, json_t *fields, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* True when a line at lvl would be written (to skip building fields). */
int log_enabled(enum log_level lvl);
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
