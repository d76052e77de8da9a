/* json_fast.h - a fast path in front of jansson's parser (see json_fast.c). */
#ifndef COMMON_JSON_FAST_H
#define COMMON_JSON_FAST_H

#include <jansson.h>
#include <stddef.h>

/* Parses text[0..len) when it is a JSON object in the plain form services
 * write (no escapes, ASCII, integers only, shallow): the same value
 * json_loadb(text, len, JSON_REJECT_DUPLICATES) returns, new, for the
 * caller to json_decref(). NULL when the text is anything else, valid or
 * not: then ask jansson, which decides and explains. */
json_t *json_fast_load(const char *text, size_t len);
/* json_loadb(text, len, JSON_REJECT_DUPLICATES, err), the fast path first:
 * what every parser of outside bodies calls. */
json_t *json_load_body(const char *text, size_t len, json_error_t *err);

#endif
