/* trace.c - W3C traceparent: validation, new and child spans, text form.
 * Owns nothing but the format; who logs or sends a trace decides the rest. */
#include "trace.h"
#include "util.h"

#include <string.h>

/* n lower-case hex digits, not all zero. */
static int hex_field(const char *s, size_t n, char *out)
{
    int nonzero = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return 0;
        nonzero |= c != '0';
    }
    if (out) {
        memcpy(out, s, n);
        out[n] = '\0';
    }
    return nonzero;
}

static unsigned hex2(const char *s)
{
    unsigned v = 0;
    for (int i = 0; i < 2; i++)
        v = v * 16 + (unsigned)(s[i] <= '9' ? s[i] - '0' : s[i] - 'a' + 10);
    return v;
}

int trace_parse(const char *s, struct trace *out)
{
    if (!s)
        return 0;
    size_t n = strnlen(s, TRACEPARENT_LEN + 1);
    char ver[3] = "", flags[3] = "";
    struct trace t;
    if (n < TRACEPARENT_LEN || s[2] != '-' || s[35] != '-' || s[52] != '-')
        return 0;
    /* version: 2 hex digits, not "ff"; "00" is exactly 55 characters; a
     * later one may go on after a '-' */
    if (!(hex_field(s, 2, ver) || strcmp(ver, "00") == 0) || strcmp(ver, "ff") == 0)
        return 0;
    if (n > TRACEPARENT_LEN && (strcmp(ver, "00") == 0 || s[TRACEPARENT_LEN] != '-'))
        return 0;
    if (!hex_field(s + 3, 32, t.trace_id) || !hex_field(s + 36, 16, t.span_id))
        return 0;
    if (!hex_field(s + 53, 2, flags) && strcmp(flags, "00") != 0)
        return 0;
    t.flags = hex2(flags);
    *out = t;
    return 1;
}

static void random_hex(char *out, size_t n)
{
    unsigned char b[16];
    do {
        random_bytes(b, n / 2);
        hex_encode(b, n / 2, out);
    } while (!hex_field(out, n, NULL)); /* all zeros is invalid */
}

void trace_new(struct trace *out)
{
    random_hex(out->trace_id, 32);
    random_hex(out->span_id, 16);
    out->flags = 0;
}

void trace_child(const struct trace *parent, struct trace *out)
{
    memcpy(out->trace_id, parent->trace_id, sizeof out->trace_id);
    random_hex(out->span_id, 16);
    out->flags = parent->flags;
}

void trace_format(const struct trace *t, char out[TRACEPARENT_LEN + 1])
{
    unsigned char flags = (unsigned char)(t->flags & 0xff);
    memcpy(out, "00-", 3);
    memcpy(out + 3, t->trace_id, 32);
    out[35] = '-';
    memcpy(out + 36, t->span_id, 16);
    out[52] = '-';
    hex_encode(&flags, 1, out + 53);
}

int trace_continue(const char *s, char out[TRACEPARENT_LEN + 1])
{
    struct trace parent, t;
    if (trace_parse(s, &parent))
        trace_child(&parent, &t);
    else
        trace_new(&t);
    trace_format(&t, out);
    return t.flags & 1;
}
