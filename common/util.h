/* util.h - allocation that never returns NULL, ids, clocks, small strings.
 *
 * Out-of-memory aborts in one place (xmalloc and friends) so that callers
 * never check for NULL. */
#ifndef COMMON_UTIL_H
#define COMMON_UTIL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define UUID_STR_LEN 37  /* 36 characters and the NUL */

void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t n);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
/* printf into a fresh heap string; caller frees. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Fills out with a random version-4 UUID in canonical lower-case form. */
void uuid_v4(char out[UUID_STR_LEN]);
/* Fills out with a time-ordered version-7 UUID (RFC 9562): the ids this
 * system makes (orders, events). The ids one thread makes sort in the
 * order it made them (the ids of several threads, to within the clock), so
 * each Postgres index on them grows at its right edge instead of at a
 * random leaf; 62 bits stay random. */
void uuid_v7(char out[UUID_STR_LEN]);
/* uuid_v7's clock: the (ms << 12 | fraction of the ms) of its next id,
 * given its last one's and the clock's now: now, or last + 1 when now is
 * not later (the same tick, or a clock stepped back). */
uint64_t uuid_v7_tick_after(uint64_t last, uint64_t now);
/* True when s is a canonical UUID (36 chars, hex and dashes, any case). */
int uuid_valid(const char *s);

/* Wall clock as RFC 3339 UTC with microseconds, e.g. 2026-01-02T03:04:05.123456Z. */
void time_rfc3339(char out[32]);
/* True when s is a date-time as RFC 3339 writes it, and as ISO 8601's
 * common writers do: a real date, T, t or a blank, hh:mm:ss (60: a leap
 * second; or hh:mm, as Java writes a time whose seconds are 0), any
 * fraction (after . or ,), then Z, z, an offset (+hh, +hhmm, +hh:mm, at
 * most 23:59) or none (a local time, as Python's isoformat() of a naive
 * datetime). */
int time_stamp_valid(const char *s);
/* Wall clock in seconds since the epoch. */
double wall_s(void);
/* Monotonic clock in milliseconds / seconds (double). */
int64_t mono_ms(void);
double mono_s(void);
/* Sleeps ms milliseconds (restarts on EINTR). */
void sleep_ms(int64_t ms);
/* A condition variable whose timed waits run on the monotonic clock (a
 * wall-clock step can neither stall nor hurry them), and the deadline ms
 * (or us) from now for pthread_cond_timedwait on it. */
void cond_init_monotonic(pthread_cond_t *cv);
struct timespec mono_deadline(int64_t ms);
struct timespec mono_deadline_us(int64_t us);
/* Locks mu, waiting at most ms (monotonic clock): 0 when locked, else not
 * locked (someone held it all that time). */
int mutex_lock_within(pthread_mutex_t *mu, int64_t ms);
/* Starts a thread named name (at most 15 characters: what `top -H`, `ps -L`,
 * perf and gdb show) or aborts: no part of a service can run without the
 * threads it was built with, and there is nothing to unwind at start. */
void thread_start(pthread_t *t, const char *name, void *(*fn)(void *), void *arg);

/* Growable byte buffer, always NUL-terminated. */
struct buf {
    char *data;
    size_t len, cap;
};
void buf_init(struct buf *b);
void buf_cleanup(struct buf *b);
void buf_append(struct buf *b, const void *data, size_t n);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_reset(struct buf *b);
/* The decimal integer at the start of v in *out, *end where it ends: its
 * digits alone, a '-' before them only when minus_ok (strtoll's leading
 * blanks and '+' are refused). 0, or -1 when v starts otherwise or the
 * number overflows. decimal_parse: the same for all of v. */
int decimal_prefix(const char *v, int minus_ok, long long *out, const char **end);
int decimal_parse(const char *v, int minus_ok, long long *out);
/* 1 when s[0..n) is well-formed UTF-8 (no overlongs, surrogates or NULs). */
int utf8_valid(const char *s, size_t n);
/* Appends s[0..n) as valid UTF-8 text: well-formed sequences as they are,
 * any other byte (and NUL, and backslash) as \xNN. */
void buf_escape_bytes(struct buf *b, const char *s, size_t n);
/* Appends s (UTF-8) as a JSON string: quoted, with " \\ and control
 * characters escaped as jansson's json_dumps() writes them. */
void buf_json_str(struct buf *b, const char *s);
/* Appends v in decimal. */
void buf_int(struct buf *b, int64_t v);
/* Appends prefix as it is (e.g. ",\"key\":"), then value as a JSON string,
 * or null when value is NULL. */
void buf_json_field(struct buf *b, const char *prefix, const char *value);
/* A Postgres array literal: buf_pg_array_open() starts one in b (a new
 * buffer, as buf_init() makes), buf_pg_array_elem() appends a text element
 * (quoted, escaped), buf_pg_array_sep() the comma before any other element
 * but the first (a number, appended as it is), buf_pg_array_close() ends it. */
void buf_pg_array_open(struct buf *b);
void buf_pg_array_sep(struct buf *b);
void buf_pg_array_elem(struct buf *b, const char *s);
void buf_pg_array_close(struct buf *b);

/* Fills p with n random bytes from the kernel's CSPRNG (read ahead in a
 * small per-thread pool). */
void random_bytes(void *p, size_t n);
/* Writes the lower-case hex of p[0..n) and a NUL to out (2n + 1 bytes). */
void hex_encode(const void *p, size_t n, char *out);
/* Appends the standard base64 (with padding) of n bytes. */
void buf_base64(struct buf *b, const void *p, size_t n);
/* Appends at most max_chars characters of n bytes as valid UTF-8 whatever
 * the bytes are: invalid sequences and NULs become U+FFFD, and "..." marks a
 * cut. The result is always safe to put in a JSON string. */
void buf_utf8_preview(struct buf *b, const void *p, size_t n, size_t max_chars);
/* Copies src into dst (cap bytes) as valid UTF-8 text: bytes that are not
 * (a sequence cut by an earlier %.*s, say) become U+FFFD, and the copy ends
 * on a character's boundary where dst is full. For text a column of type
 * text must take. */
void utf8_copy(char *dst, size_t cap, const char *src);
/* The value of one hex digit (either case), or -1. */
int hex_val(char c);
/* Decodes hex text (as Postgres encode(x, 'hex') gives) into a heap buffer
 * (NUL-terminated, caller frees). Returns 0, or -1 on a bad digit. */
int hex_decode(const char *hex, unsigned char **out, size_t *n);

#endif
