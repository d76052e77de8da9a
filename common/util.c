/* util.c - allocation wrappers, UUIDs, clocks and the growable buffer.
 *
 * Owns nothing global except the OOM policy: print one line and abort. */
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

/* The last line before an abort, in the logs' shape; written here, not by
 * the log module: it must not need memory, nor the log module at all. */
_Noreturn static void die_line(const char *msg, const char *arg)
{
    char ts[32];
    time_rfc3339(ts);
    fprintf(stderr, "{\"ts\":\"%s\",\"level\":\"error\",\"msg\":\"%s%s\"}\n", ts, msg, arg);
    abort();
}

_Noreturn static void oom(size_t n)
{
    char bytes[32];
    snprintf(bytes, sizeof bytes, "%zu bytes", n);
    die_line("out of memory allocating ", bytes);
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *xcalloc(size_t count, size_t n)
{
    void *p = calloc(count ? count : 1, n ? n : 1);
    if (!p)
        oom(count * n);
    return p;
}

struct named_start {
    void *(*fn)(void *);
    void *arg;
    char name[16];
};

/* The new thread names itself before anything else runs on it. */
static void *named_main(void *p)
{
    struct named_start s = *(struct named_start *)p;
    free(p);
    pthread_setname_np(pthread_self(), s.name); /* only a label: a failure changes nothing */
    return s.fn(s.arg);
}

void thread_start(pthread_t *t, const char *name, void *(*fn)(void *), void *arg)
{
    struct named_start *s = xmalloc(sizeof *s);
    *s = (struct named_start){fn, arg, ""};
    snprintf(s->name, sizeof s->name, "%s", name);
    if (pthread_create(t, NULL, named_main, s) != 0)
        die_line("cannot start thread ", name);
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(n);
    return q;
}

char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(xmalloc(n), s, n);
}

char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0)
        oom(0);
    return s;
}

/* The kernel's CSPRNG, read 256 bytes at a time into a per-thread pool:
 * one getrandom() per ~16 ids instead of one each. */
#define RANDOM_POOL 256
static _Thread_local unsigned char pool[RANDOM_POOL];
static _Thread_local size_t pool_left;

static void getrandom_all(unsigned char *b, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = getrandom(b + got, len - got, 0);
        if (n > 0)
            got += (size_t)n;
        else if (errno != EINTR)
            abort(); /* the kernel's CSPRNG cannot fail on Linux >= 3.17 */
    }
}

void random_bytes(void *p, size_t len)
{
    unsigned char *b = p;
    while (len) {
        if (!pool_left) {
            getrandom_all(pool, sizeof pool);
            pool_left = sizeof pool;
        }
        size_t k = len < pool_left ? len : pool_left;
        memcpy(b, pool + sizeof pool - pool_left, k);
        memset(pool + sizeof pool - pool_left, 0, k); /* handed out once, not kept */
        pool_left -= k;
        b += k;
        len -= k;
    }
}

void hex_encode(const void *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = '\0';
}

/* 16 bytes as 8-4-4-4-12 lower-case hex digits. */
static void uuid_format(const unsigned char b[16], char out[UUID_STR_LEN])
{
    static const unsigned char groups[] = {4, 2, 2, 2, 6};
    char *o = out;
    const unsigned char *q = b;
    for (size_t g = 0; g < sizeof groups; g++) {
        if (g)
            *o++ = '-';
        hex_encode(q, groups[g], o);
        o += 2 * groups[g];
        q += groups[g];
    }
}

void uuid_v4(char out[UUID_STR_LEN])
{
    unsigned char b[16];
    random_bytes(b, sizeof b);
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    uuid_format(b, out);
}

uint64_t uuid_v7_tick_after(uint64_t last, uint64_t now)
{
    return now > last ? now : last + 1;
}

/* RFC 9562: unix_ts_ms (48 bits), ver 7, rand_a (12 bits: the fraction
 * of the millisecond, its "method 3"), var 10, rand_b (62 bits, random).
 * Per thread, (ms, fraction) only ever grows: an id not later than the
 * thread's last one (the same 244 ns tick, or a clock stepped back) takes
 * the last one's plus one tick (its §6.2 monotonic counter). */
void uuid_v7(char out[UUID_STR_LEN])
{
    static _Thread_local uint64_t last; /* ms << 12 | fraction, of this thread's last id */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    uint64_t frac = ((uint64_t)(ts.tv_nsec % 1000000) << 12) / 1000000u; /* < 4096 */
    uint64_t t = uuid_v7_tick_after(last, (ms << 12) | frac);
    last = t;
    ms = t >> 12;
    frac = t & 0xfff;
    unsigned char b[16];
    random_bytes(b + 8, 8);
    for (int i = 0; i < 6; i++)
        b[i] = (unsigned char)(ms >> (8 * (5 - i)));
    b[6] = (unsigned char)(0x70 | (frac >> 8));
    b[7] = (unsigned char)(frac & 0xff);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    uuid_format(b, out);
}

int uuid_valid(const char *s)
{
    if (!s || strlen(s) != 36)
        return 0;
    for (int i = 0; i < 36; i++) {
        int dash = (i == 8 || i == 13 || i == 18 || i == 23);
        char c = s[i];
        int hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
        if (dash ? c != '-' : !hex)
            return 0;
    }
    return 1;
}

void time_rfc3339(char out[32])
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%06ldZ", ts.tv_nsec / 1000);
}

/* n digits at *p as a number within [lo, hi], *p moved past them; -1 if not. */
static int digits_in(const char **p, int n, int lo, int hi)
{
    int v = 0;
    for (int i = 0; i < n; i++, (*p)++) {
        if (**p < '0' || **p > '9')
            return -1;
        v = v * 10 + (**p - '0');
    }
    return v >= lo && v <= hi ? v : -1;
}

static int expect_char(const char **p, const char *any)
{
    if (!**p || !strchr(any, **p))
        return 0;
    (*p)++;
    return 1;
}

static int days_in_month(int year, int month)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    return days[month - 1] + (month == 2 && leap);
}

/* The offset after a time: Z or z, or +/- hh, hhmm or hh:mm (at most
 * 23:59); none at all is a local time. */
static int offset_valid(const char *p)
{
    if (*p == '\0')
        return 1;
    if (expect_char(&p, "Zz"))
        return *p == '\0';
    if (!expect_char(&p, "+-") || digits_in(&p, 2, 0, 23) < 0)
        return 0;
    if (*p == '\0')
        return 1;
    expect_char(&p, ":");
    return digits_in(&p, 2, 0, 59) >= 0 && *p == '\0';
}

int time_stamp_valid(const char *s)
{
    const char *p = s;
    int y = digits_in(&p, 4, 0, 9999);
    int m = y >= 0 && expect_char(&p, "-") ? digits_in(&p, 2, 1, 12) : -1;
    int d = m >= 0 && expect_char(&p, "-") ? digits_in(&p, 2, 1, 31) : -1;
    if (d < 0 || d > days_in_month(y, m) || !expect_char(&p, "Tt ") ||
        digits_in(&p, 2, 0, 23) < 0 || !expect_char(&p, ":") || digits_in(&p, 2, 0, 59) < 0)
        return 0;
    if (!expect_char(&p, ":"))
        return offset_valid(p); /* hh:mm, as Java writes a time whose seconds are 0 */
    if (digits_in(&p, 2, 0, 60) < 0)
        return 0;
    if (expect_char(&p, ".,")) {
        if (digits_in(&p, 1, 0, 9) < 0)
            return 0;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    return offset_valid(p);
}

double wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

void buf_init(struct buf *b)
{
    b->cap = 256;
    b->len = 0;
    b->data = xmalloc(b->cap);
    b->data[0] = '\0';
}

void buf_cleanup(struct buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

static void buf_reserve(struct buf *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap)
        return;
    while (b->len + extra + 1 > b->cap)
        b->cap *= 2;
    b->data = xrealloc(b->data, b->cap);
}

void buf_append(struct buf *b, const void *data, size_t n)
{
    buf_reserve(b, n);
    memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    buf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void buf_reset(struct buf *b)
{
    b->len = 0;
    b->data[0] = '\0';
}

void buf_pg_array_open(struct buf *b)
{
    buf_init(b);
    buf_append(b, "{", 1);
}

void buf_pg_array_sep(struct buf *b)
{
    if (b->len > 1) /* past the "{" */
        buf_append(b, ",", 1);
}

void buf_pg_array_close(struct buf *b)
{
    buf_append(b, "}", 1);
}

void buf_pg_array_elem(struct buf *b, const char *s)
{
    buf_pg_array_sep(b);
    buf_append(b, "\"", 1);
    for (size_t n; *s; s += n) {
        n = strcspn(s, "\"\\"); /* a run to copy as it is, then one to escape */
        buf_append(b, s, n);
        if (s[n]) {
            buf_append(b, "\\", 1);
            buf_append(b, s + n, 1);
            n++;
        }
    }
    buf_append(b, "\"", 1);
}

void buf_int(struct buf *b, int64_t v)
{
    char d[24];
    size_t i = sizeof d;
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do
        d[--i] = (char)('0' + u % 10);
    while (u /= 10);
    if (v < 0)
        d[--i] = '-';
    buf_append(b, d + i, sizeof d - i);
}

/* The bytes a JSON string cannot hold as they are (and the NUL that ends s). */
static const unsigned char json_special[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    ['"'] = 1, ['\\'] = 1,
};

void buf_json_str(struct buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    buf_append(b, "\"", 1);
    const char *run = s;
    for (; *s; s++) {
        while (!json_special[(unsigned char)*s])
            s++;
        if (!*s)
            break;
        unsigned char c = (unsigned char)*s;
        buf_append(b, run, (size_t)(s - run));
        run = s + 1;
        const char *short_form = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\b' ? "\\b"
                               : c == '\f' ? "\\f" : c == '\n' ? "\\n" : c == '\r' ? "\\r"
                               : c == '\t' ? "\\t" : NULL;
        if (short_form) {
            buf_append(b, short_form, 2);
        } else {
            char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            buf_append(b, u, sizeof u);
        }
    }
    buf_append(b, run, (size_t)(s - run));
    buf_append(b, "\"", 1);
}

void buf_json_field(struct buf *b, const char *prefix, const char *value)
{
    buf_append(b, prefix, strlen(prefix));
    if (value)
        buf_json_str(b, value);
    else
        buf_append(b, "null", 4);
}

void cond_init_monotonic(pthread_cond_t *cv)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &ca);
    pthread_condattr_destroy(&ca);
}

struct timespec mono_deadline_us(int64_t us)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    int64_t ns = t.tv_nsec + us * 1000;
    t.tv_sec += ns / 1000000000;
    t.tv_nsec = ns % 1000000000;
    return t;
}

struct timespec mono_deadline(int64_t ms)
{
    return mono_deadline_us(ms * 1000);
}

int mutex_lock_within(pthread_mutex_t *mu, int64_t ms)
{
    struct timespec until = mono_deadline(ms);
    return pthread_mutex_clocklock(mu, CLOCK_MONOTONIC, &until);
}

/* Length of the well-formed UTF-8 sequence at s (n bytes left), 0 if none. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    static const struct { unsigned char lead_min, lead_max, len, lo, hi; } forms[] = {
        {0x01, 0x7f, 1, 0, 0},       {0xc2, 0xdf, 2, 0x80, 0xbf}, {0xe0, 0xe0, 3, 0xa0, 0xbf},
        {0xe1, 0xec, 3, 0x80, 0xbf}, {0xed, 0xed, 3, 0x80, 0x9f}, {0xee, 0xef, 3, 0x80, 0xbf},
        {0xf0, 0xf0, 4, 0x90, 0xbf}, {0xf1, 0xf3, 4, 0x80, 0xbf}, {0xf4, 0xf4, 4, 0x80, 0x8f},
    };
    for (size_t f = 0; f < ARRAY_LEN(forms); f++) {
        if (s[0] < forms[f].lead_min || s[0] > forms[f].lead_max)
            continue;
        size_t len = forms[f].len;
        if (len > n || (len > 1 && (s[1] < forms[f].lo || s[1] > forms[f].hi)))
            return 0;
        for (size_t i = 2; i < len; i++)
            if ((s[i] & 0xc0) != 0x80)
                return 0;
        return len;
    }
    return 0;
}

int decimal_prefix(const char *v, int minus_ok, long long *out, const char **end)
{
    if (!isdigit((unsigned char)v[v[0] == '-' && minus_ok]))
        return -1;
    char *e = NULL;
    errno = 0;
    long long n = strtoll(v, &e, 10);
    if (errno)
        return -1;
    *out = n;
    *end = e;
    return 0;
}

int decimal_parse(const char *v, int minus_ok, long long *out)
{
    const char *end = NULL;
    return decimal_prefix(v, minus_ok, out, &end) == 0 && *end == '\0' ? 0 : -1;
}

int utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        if (p[i] >= 0x01 && p[i] <= 0x7f) { /* ASCII, most of it, inline */
            i++;
            continue;
        }
        size_t k = utf8_seq(p + i, n - i);
        if (k == 0)
            return 0;
        i += k;
    }
    return 1;
}

void buf_escape_bytes(struct buf *b, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0, k; i < n; i += k) {
        k = utf8_seq(p + i, n - i);
        if (k == 0 || p[i] == '\\') {
            buf_printf(b, "\\x%02x", p[i]);
            k = 1;
        } else
            buf_append(b, p + i, k);
    }
}

void buf_base64(struct buf *b, const void *p, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16;
        if (i + 1 < n) v |= (uint32_t)s[i + 1] << 8;
        if (i + 2 < n) v |= s[i + 2];
        char q[4] = {tab[v >> 18], tab[(v >> 12) & 63], i + 1 < n ? tab[(v >> 6) & 63] : '=',
                     i + 2 < n ? tab[v & 63] : '='};
        buf_append(b, q, 4);
    }
}

void buf_utf8_preview(struct buf *b, const void *p, size_t n, size_t max_chars)
{
    const unsigned char *s = p;
    size_t i = 0, chars = 0;
    for (; i < n && chars < max_chars; chars++) {
        size_t len = utf8_seq(s + i, n - i);
        if (len)
            buf_append(b, s + i, len);
        else
            buf_append(b, "\xef\xbf\xbd", 3); /* U+FFFD */
        i += len ? len : 1;
    }
    if (i < n)
        buf_append(b, "...", 3);
}

void utf8_copy(char *dst, size_t cap, const char *src)
{
    struct buf b;
    buf_init(&b);
    size_t n = strlen(src);
    buf_utf8_preview(&b, src, n, n);
    size_t len = b.len < cap ? b.len : cap - 1;
    while (len > 0 && len < b.len && ((unsigned char)b.data[len] & 0xC0) == 0x80)
        len--; /* not inside a character */
    memcpy(dst, b.data, len);
    dst[len] = '\0';
    buf_cleanup(&b);
}

int hex_val(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

int hex_decode(const char *hex, unsigned char **out, size_t *n)
{
    size_t len = strlen(hex);
    if (len % 2)
        return -1;
    unsigned char *p = xmalloc(len / 2 + 1);
    for (size_t i = 0; i < len / 2; i++) {
        int hi = hex_val(hex[2 * i]), lo = hex_val(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            free(p);
            return -1;
        }
        p[i] = (unsigned char)(hi << 4 | lo);
    }
    p[len / 2] = '\0';
    *out = p;
    *n = len / 2;
    return 0;
}
