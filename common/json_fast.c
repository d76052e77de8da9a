/* json_fast.c - a fast path in front of jansson's parser for the plain JSON
 * that services write: ASCII strings without escapes, integers of up to 18
 * digits, true/false/null, objects and arrays up to JSON_FAST_MAX_DEPTH.
 * Anything else (an escape, a fraction, a non-ASCII byte, a duplicate key,
 * an error of any kind) is not decided here: the caller parses the text with
 * jansson, so what is accepted and every error message stay jansson's. */
#include "json_fast.h"

#include <string.h>

#define JSON_FAST_MAX_DEPTH 32
#define INT_DIGITS_MAX 18 /* always fits in json_int_t (64 bits) */

struct cursor {
    const char *s, *end;
    int depth;
};

static json_t *value(struct cursor *c);

static void skip_ws(struct cursor *c)
{
    while (c->s < c->end && (*c->s == ' ' || *c->s == '\t' || *c->s == '\n' || *c->s == '\r'))
        c->s++;
}

static int next_is(struct cursor *c, char ch)
{
    return c->s < c->end && *c->s == ch;
}

/* At '"': the string's bytes, printable ASCII without '"' or '\\'. */
static int plain_string(struct cursor *c, const char **start, size_t *len)
{
    const char *p = ++c->s;
    while (p < c->end && *p != '"') {
        unsigned char ch = (unsigned char)*p;
        if (ch < 0x20 || ch > 0x7e || ch == '\\')
            return 0;
        p++;
    }
    if (p == c->end)
        return 0;
    *start = c->s;
    *len = (size_t)(p - c->s);
    c->s = p + 1;
    return 1;
}

/* -?(0|[1-9][0-9]*) with no fraction or exponent after it. */
static json_t *integer(struct cursor *c)
{
    int neg = next_is(c, '-');
    const char *p = c->s + neg, *digits = p;
    json_int_t v = 0;
    while (p < c->end && *p >= '0' && *p <= '9' && p - digits < INT_DIGITS_MAX)
        v = v * 10 + (*p++ - '0');
    size_t n = (size_t)(p - digits);
    if (n == 0 || (digits[0] == '0' && n > 1))
        return NULL;
    if (p < c->end && (*p == '.' || *p == 'e' || *p == 'E' || (*p >= '0' && *p <= '9')))
        return NULL; /* a fraction, an exponent, or more digits than we take */
    c->s = p;
    return json_integer(neg ? -v : v);
}

static json_t *literal(struct cursor *c, const char *word, size_t n, json_t *v)
{
    if ((size_t)(c->end - c->s) < n || memcmp(c->s, word, n) != 0)
        return NULL;
    c->s += n;
    return v;
}

/* Past the opening bracket: 1 if the container closes at once. */
static int opens_empty(struct cursor *c, char close)
{
    c->s++;
    skip_ws(c);
    if (!next_is(c, close))
        return 0;
    c->s++;
    return 1;
}

/* After a member or element: 1 closed, 0 a comma (another follows), -1 neither. */
static int closes(struct cursor *c, char close)
{
    skip_ws(c);
    if (next_is(c, close) || next_is(c, ',')) {
        int closed = *c->s++ == close;
        skip_ws(c);
        return closed;
    }
    return -1;
}

/* "key": value, into o; 0 for anything we leave to jansson. */
static int member(struct cursor *c, json_t *o)
{
    const char *key;
    size_t keylen;
    if (!next_is(c, '"') || !plain_string(c, &key, &keylen) ||
        json_object_getn(o, key, keylen)) /* a duplicate: jansson says how it refuses */
        return 0;
    skip_ws(c);
    if (!next_is(c, ':'))
        return 0;
    c->s++;
    skip_ws(c);
    json_t *v = value(c);
    if (v)
        json_object_setn_new_nocheck(o, key, keylen, v);
    return v != NULL;
}

static json_t *object(struct cursor *c)
{
    json_t *o = json_object();
    int state = opens_empty(c, '}');
    while (state == 0)
        state = member(c, o) ? closes(c, '}') : -1;
    if (state < 0) {
        json_decref(o);
        o = NULL;
    }
    return o;
}

static json_t *array(struct cursor *c)
{
    json_t *a = json_array();
    int state = opens_empty(c, ']');
    while (state == 0) {
        json_t *v = value(c);
        state = v && json_array_append_new(a, v) == 0 ? closes(c, ']') : -1;
    }
    if (state < 0) {
        json_decref(a);
        a = NULL;
    }
    return a;
}

static json_t *value(struct cursor *c)
{
    if (c->s == c->end)
        return NULL;
    const char *str;
    size_t len;
    json_t *v = NULL;
    switch (*c->s) {
    case '{':
    case '[':
        if (++c->depth > JSON_FAST_MAX_DEPTH)
            return NULL;
        v = *c->s == '{' ? object(c) : array(c);
        c->depth--;
        return v;
    case '"':
        return plain_string(c, &str, &len) ? json_stringn_nocheck(str, len) : NULL;
    case 't':
        return literal(c, "true", 4, json_true());
    case 'f':
        return literal(c, "false", 5, json_false());
    case 'n':
        return literal(c, "null", 4, json_null());
    default:
        return integer(c);
    }
}

json_t *json_fast_load(const char *text, size_t len)
{
    struct cursor c = {.s = text, .end = text + len};
    skip_ws(&c);
    if (!next_is(&c, '{')) /* jansson's top level: an object or array; we take objects */
        return NULL;
    json_t *o = value(&c);
    skip_ws(&c);
    if (o && c.s != c.end) { /* something after the object */
        json_decref(o);
        o = NULL;
    }
    return o;
}

json_t *json_load_body(const char *text, size_t len, json_error_t *err)
{
    json_t *o = json_fast_load(text, len);
    return o ? o : json_loadb(text, len, JSON_REJECT_DUPLICATES, err);
}
