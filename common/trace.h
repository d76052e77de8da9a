/* trace.h - W3C trace context (traceparent) for one trace across both hops:
 * parse (the one validator), new, child, format (pure but for randomness).
 *
 * "00-<32 hex trace id>-<16 hex span id>-<2 hex flags>"; a later version
 * is read by its first four fields, as the recommendation says. */
#ifndef COMMON_TRACE_H
#define COMMON_TRACE_H

#define TRACEPARENT_LEN 55

struct trace {
    char trace_id[33];
    char span_id[17];
    unsigned flags;          /* bit 0: sampled */
};

/* 1 with *out set when s is a valid traceparent, else 0 (then *out is
 * untouched). Accepts any bytes, NULL included. */
int trace_parse(const char *s, struct trace *out);
/* A new trace with a random id, not sampled. */
void trace_new(struct trace *out);
/* The same trace, a new random span id, the same flags. */
void trace_child(const struct trace *parent, struct trace *out);
/* The traceparent text of t. */
void trace_format(const struct trace *t, char out[TRACEPARENT_LEN + 1]);
/* A child of the traceparent text s if valid, else a new trace; formatted
 * into out. Returns 1 when the caller asked to record it (sampled). */
int trace_continue(const char *s, char out[TRACEPARENT_LEN + 1]);

#endif
