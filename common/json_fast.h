/* json_fast.h - a fast path in front of jansson's parser (see json_fast.c). */
#ifndef COMMON_JSON_FAST_H
#define COMMON_JSON_FAST_H

#include <jansson.h>
#include <stddef.h>

/* An object with more members than this, at any depth, is left to jansson. */
#define JSON_FAST_MAX_MEMBERS 32

enum json_fast_kind { JF_STRING, JF_INTEGER, JF_OBJECT, JF_ARRAY, JF_TRUE, JF_FALSE, JF_NULL };

/* A member of a plain object (key set) or an element of a plain array (key
 * NULL): its value's text (a string's without its quotes: no escapes, so it
 * is the value itself) and kind. Points into the text scanned. */
struct json_fast_item {
    const char *key, *val;
    size_t keylen, vallen;
    enum json_fast_kind kind;
};

/* The members of text[0..len) when it is a JSON object in the plain form
 * services write (no escapes, ASCII, integers only, shallow; every value
 * nested in it checked, no duplicate key at any depth): how many, with at
 * most max of them in out (room for max: the duplicate check reads it). -1 when the text is anything else, valid or
 * not, or has more members than max: then ask jansson, which decides and
 * explains. What it takes, jansson takes too, as the same values. */
int json_fast_members(const char *text, size_t len, struct json_fast_item *out, int max);
/* The same for a plain JSON array's elements (out may be NULL: then they
 * are only counted). */
int json_fast_elements(const char *text, size_t len, struct json_fast_item *out, int max);
/* A JF_INTEGER item's value (at most 18 digits: it fits). */
json_int_t json_fast_int(const struct json_fast_item *it);

/* Parses text[0..len) when it is a plain JSON object (as json_fast_members
 * takes it): the same value json_loadb(text, len, JSON_REJECT_DUPLICATES)
 * returns, new, for the caller to json_decref(). NULL when the text is
 * anything else: then ask jansson. */
json_t *json_fast_load(const char *text, size_t len);
/* json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, err), the
 * fast path first: what every parser of outside bodies calls. Any JSON value
 * loads, so that a body that is JSON but not an object is told apart. A
 * value that is JSON but beyond jansson (a number out of its range, a
 * string holding \u0000) loads as null: ignored in an unknown field, the
 * wrong kind in a known one. */
json_t *json_load_body(const char *text, size_t len, json_error_t *err);

#endif
