/* json_fast.c - a fast path in front of jansson's parser for the plain JSON
 * that services write: ASCII strings without escapes, integers of up to 18
 * digits, true/false/null, objects (of up to JSON_FAST_MAX_MEMBERS members)
 * and arrays up to JSON_FAST_MAX_DEPTH.
 * Anything else (an escape, a fraction, a non-ASCII byte, a duplicate key,
 * an error of any kind) is not decided here: the caller parses the text with
 * jansson, so what is accepted and every error message stay jansson's.
 * One scanner checks the text and finds a container's members or elements
 * without building anything; the event decoders read those directly, and
 * json_fast_load builds jansson's tree from them. */
#include "json_fast.h"

#include "util.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define JSON_FAST_MAX_DEPTH 32
#define INT_DIGITS_MAX 18 /* always fits in json_int_t (64 bits) */

struct cursor {
    const char *s, *end;
    int depth;
};

static int scan_value(struct cursor *c, struct json_fast_item *it);

static int is_ws(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

static int is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

static void skip_ws(struct cursor *c)
{
    while (c->s < c->end && is_ws(*c->s))
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
static int integer(struct cursor *c)
{
    const char *p = c->s + next_is(c, '-'), *digits = p;
    while (p < c->end && is_digit(*p) && p - digits < INT_DIGITS_MAX)
        p++;
    size_t n = (size_t)(p - digits);
    if (n == 0 || (digits[0] == '0' && n > 1))
        return 0;
    if (p < c->end && (*p == '.' || *p == 'e' || *p == 'E' || is_digit(*p)))
        return 0; /* a fraction, an exponent, or more digits than we take */
    c->s = p;
    return 1;
}

json_int_t json_fast_int(const struct json_fast_item *it)
{
    const char *p = it->val, *end = it->val + it->vallen;
    int neg = *p == '-';
    json_int_t v = 0;
    for (p += neg; p < end; p++)
        v = v * 10 + (*p - '0');
    return neg ? -v : v;
}

static int literal(struct cursor *c, const char *word, size_t n)
{
    if ((size_t)(c->end - c->s) < n || memcmp(c->s, word, n) != 0)
        return 0;
    c->s += n;
    return 1;
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

/* `"key":` into m[n], a key none of m[0..n) has: jansson refuses
 * duplicates, and says how. */
static int key(struct cursor *c, struct json_fast_item *m, int n)
{
    struct json_fast_item *it = &m[n];
    if (!next_is(c, '"') || !plain_string(c, &it->key, &it->keylen))
        return 0;
    for (int i = 0; i < n; i++)
        if (m[i].keylen == it->keylen && memcmp(m[i].key, it->key, it->keylen) == 0)
            return 0;
    skip_ws(c);
    if (!next_is(c, ':'))
        return 0;
    c->s++;
    skip_ws(c);
    return 1;
}

/* At '{' or '[': checks the container and steps past it. Its members (an
 * object's: out is needed for the duplicate check) or elements (when out is
 * not NULL) go into out, at most max. Returns how many, or -1. */
static int container(struct cursor *c, struct json_fast_item *out, int max)
{
    char close = *c->s == '{' ? '}' : ']';
    struct json_fast_item skipped;
    if (++c->depth > JSON_FAST_MAX_DEPTH)
        return -1;
    int n = 0, state = opens_empty(c, close);
    while (state == 0) {
        if (out && n == max)
            return -1;
        struct json_fast_item *it = out ? &out[n] : &skipped;
        *it = (struct json_fast_item){.key = NULL};
        if ((close == '}' && !key(c, out, n)) || !scan_value(c, it))
            return -1;
        n++;
        state = closes(c, close);
    }
    c->depth--;
    return state < 0 ? -1 : n;
}

/* A nested object, its members kept here only for the duplicate check (an
 * array needs no such room: nested ones are scanned without it). */
static int nested_object(struct cursor *c)
{
    struct json_fast_item own[JSON_FAST_MAX_MEMBERS];
    return container(c, own, JSON_FAST_MAX_MEMBERS) >= 0;
}

/* Checks the value at c and steps past it, into *it. */
static int scan_value(struct cursor *c, struct json_fast_item *it)
{
    if (c->s == c->end)
        return 0;
    const char *start = c->s;
    int ok;
    switch (*c->s) {
    case '{':
        it->kind = JF_OBJECT;
        ok = nested_object(c);
        break;
    case '[':
        it->kind = JF_ARRAY;
        ok = container(c, NULL, 0) >= 0;
        break;
    case '"':
        it->kind = JF_STRING;
        return plain_string(c, &it->val, &it->vallen);
    case 't':
        it->kind = JF_TRUE;
        ok = literal(c, "true", 4);
        break;
    case 'f':
        it->kind = JF_FALSE;
        ok = literal(c, "false", 5);
        break;
    case 'n':
        it->kind = JF_NULL;
        ok = literal(c, "null", 4);
        break;
    default:
        it->kind = JF_INTEGER;
        ok = integer(c);
    }
    it->val = start;
    it->vallen = (size_t)(c->s - start);
    return ok;
}

/* The whole text: one container opened by `open`, white space around it. */
static int scan_text(const char *text, size_t len, char open, struct json_fast_item *out, int max)
{
    struct cursor c = {.s = text, .end = text + len};
    skip_ws(&c);
    if (!next_is(&c, open))
        return -1;
    int n = container(&c, out, max);
    skip_ws(&c);
    return c.s == c.end ? n : -1;
}

int json_fast_members(const char *text, size_t len, struct json_fast_item *out, int max)
{
    return scan_text(text, len, '{', out, max);
}

int json_fast_elements(const char *text, size_t len, struct json_fast_item *out, int max)
{
    return scan_text(text, len, '[', out, max);
}

static json_t *build(const struct json_fast_item *it);

/* NULL when text is not a plain object (only at the top: a nested one was
 * checked with the whole text). */
static json_t *build_object(const char *text, size_t len)
{
    struct json_fast_item m[JSON_FAST_MAX_MEMBERS];
    int n = json_fast_members(text, len, m, JSON_FAST_MAX_MEMBERS);
    if (n < 0)
        return NULL;
    json_t *o = json_object();
    for (int i = 0; i < n; i++)
        json_object_setn_new_nocheck(o, m[i].key, m[i].keylen, build(&m[i]));
    return o;
}

/* Its elements into a buffer on the stack; a longer array is counted first,
 * then scanned into one of its size. */
static json_t *build_array(const struct json_fast_item *it)
{
    struct json_fast_item few[JSON_FAST_MAX_MEMBERS], *e = few;
    json_t *a = json_array();
    int n = json_fast_elements(it->val, it->vallen, few, JSON_FAST_MAX_MEMBERS);
    if (n < 0) {
        n = json_fast_elements(it->val, it->vallen, NULL, 0);
        e = xcalloc((size_t)n, sizeof *e);
        json_fast_elements(it->val, it->vallen, e, n);
    }
    for (int i = 0; i < n; i++)
        json_array_append_new(a, build(&e[i]));
    if (e != few)
        free(e);
    return a;
}

/* The value of an item json_fast_members or _elements returned (checked). */
static json_t *build(const struct json_fast_item *it)
{
    switch (it->kind) {
    case JF_STRING:
        return json_stringn_nocheck(it->val, it->vallen);
    case JF_INTEGER:
        return json_integer(json_fast_int(it));
    case JF_OBJECT:
        return build_object(it->val, it->vallen);
    case JF_ARRAY:
        return build_array(it);
    case JF_TRUE:
        return json_true();
    case JF_FALSE:
        return json_false();
    default:
        return json_null();
    }
}

json_t *json_fast_load(const char *text, size_t len)
{
    return build_object(text, len);
}

/* ------------------------------------------------------------------ values beyond jansson */

static int in_number(char ch)
{
    return is_digit(ch) || ch == '-' || ch == '+' || ch == '.' || ch == 'e' || ch == 'E';
}

static const char *digits(const char *p, const char *q)
{
    while (p < q && is_digit(*p))
        p++;
    return p;
}

/* Whether p..q is a JSON number, all of it (RFC 8259 6):
 * -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static int json_number(const char *p, const char *q)
{
    p += p < q && *p == '-';
    if (p == q || !is_digit(*p))
        return 0;
    p = *p == '0' ? p + 1 : digits(p, q);
    if (p < q && *p == '.') {
        const char *d = ++p;
        if ((p = digits(p, q)) == d)
            return 0;
    }
    if (p < q && (*p == 'e' || *p == 'E')) {
        p++;
        p += p < q && (*p == '+' || *p == '-');
        const char *d = p;
        if ((p = digits(p, q)) == d)
            return 0;
    }
    return p == q;
}

/* Whether the token p..q is a JSON number jansson refuses: an integer
 * beyond 64 bits, a real beyond a double's range. Anything that is not a
 * number, all of it, is left for jansson to refuse. */
static int number_beyond(const char *p, const char *q)
{
    if (!json_number(p, q))
        return 0;
    size_t n = (size_t)(q - p);
    char *tok = xmalloc(n + 1);
    memcpy(tok, p, n);
    tok[n] = '\0';
    errno = 0;
    int beyond;
    if (strpbrk(tok, ".eE")) {
        double d = strtod(tok, NULL);
        beyond = errno == ERANGE && (d == HUGE_VAL || d == -HUGE_VAL);
    } else {
        (void)strtoll(tok, NULL, 10);
        beyond = errno == ERANGE;
    }
    free(tok);
    return beyond;
}

/* Whether the escape \u0000 starts at p (a backslash), before end. */
static int nul_escape_at(const char *p, const char *end)
{
    return end - p >= 6 && memcmp(p + 1, "u0000", 5) == 0;
}

/* At '"': past the string's closing quote (or the end); *nul when it holds
 * the escape \u0000. */
static const char *string_end(const char *p, const char *end, int *nul)
{
    *nul = 0;
    for (p++; p < end && *p != '"'; p++)
        if (*p == '\\' && p + 1 < end) {
            *nul |= nul_escape_at(p, end);
            p++;
        }
    return p < end ? p + 1 : p;
}

/* A key's text p..q with each \u0000 as \uFFFF\uFFFE (two noncharacters
 * no field of ours has): the member stays unknown, its name one no
 * client sends beside it. */
static void key_without_nul(struct buf *out, const char *p, const char *q)
{
    while (p < q) {
        size_t n = *p == '\\' && q - p >= 2 ? 2 : 1;
        if (n == 2 && nul_escape_at(p, q)) {
            buf_append(out, "\\uFFFF\\uFFFE", 12);
            n = 6;
        } else {
            buf_append(out, p, n);
        }
        p += n;
    }
}

/* text with each number jansson cannot hold as null, and \u0000 in a key
 * as above; strings are left to jansson (with JSON_ALLOW_NUL, then
 * nul_strings_to_null), so each of them is checked whole. Only a token
 * that is JSON is changed: what is not JSON stays so. */
static void tame(const char *text, size_t len, struct buf *out)
{
    const char *p = text, *end = text + len;
    buf_init(out);
    while (p < end) {
        const char *q = p + 1;
        int nul = 0;
        if (*p == '"') {
            q = string_end(p, end, &nul);
            const char *after = q;
            while (after < end && is_ws(*after))
                after++;
            if (nul && after < end && *after == ':')
                key_without_nul(out, p, q);
            else
                buf_append(out, p, (size_t)(q - p));
        } else if (*p == '-' || is_digit(*p)) {
            while (q < end && in_number(*q))
                q++;
            if (number_beyond(p, q))
                buf_append(out, "null", 4);
            else
                buf_append(out, p, (size_t)(q - p));
        } else {
            buf_append(out, p, 1);
        }
        p = q;
    }
}

static int holds_nul(const json_t *v)
{
    return json_is_string(v) && strlen(json_string_value(v)) != json_string_length(v);
}

/* Every string value holding a NUL (JSON_ALLOW_NUL let it in) becomes null:
 * Postgres's text cannot hold it, and no field of ours takes it. */
static void nul_strings_to_null(json_t *j)
{
    const char *k;
    json_t *v;
    json_object_foreach(j, k, v) {
        if (holds_nul(v))
            json_object_set_new(j, k, json_null()); /* in place: the walk goes on */
        else
            nul_strings_to_null(v);
    }
    for (size_t i = 0; json_is_array(j) && i < json_array_size(j); i++) {
        if (holds_nul(json_array_get(j, i)))
            json_array_set_new(j, i, json_null());
        else
            nul_strings_to_null(json_array_get(j, i));
    }
}

#define LOAD_FLAGS (JSON_REJECT_DUPLICATES | JSON_DECODE_ANY)

json_t *json_load_body(const char *text, size_t len, json_error_t *err)
{
    json_t *o = json_fast_load(text, len);
    if (o)
        return o;
    o = json_loadb(text, len, LOAD_FLAGS, err);
    enum json_error_code code = o ? json_error_unknown : json_error_code(err);
    if (code != json_error_numeric_overflow && code != json_error_null_character &&
        code != json_error_null_byte_in_key)
        return o;
    struct buf tamed;
    tame(text, len, &tamed);
    o = json_loadb(tamed.data, tamed.len, LOAD_FLAGS | JSON_ALLOW_NUL, err);
    buf_cleanup(&tamed);
    nul_strings_to_null(o);
    return o;
}
