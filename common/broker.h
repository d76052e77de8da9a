/* broker.h - the NATS JetStream connection: the stream this process writes,
 * its durable consumer on the stream it reads, batch async publish with
 * per-message acks, pull fetch with ack / term / nak, and liveness.
 *
 * nats.c is used only in broker.c. The connection reconnects forever in the
 * background and pings the server every ping_interval_ms: max_pings_out
 * unanswered pings drop it for another server. broker_probe() (called about
 * every second) makes one JetStream round trip; when JetStream keeps timing
 * out on a connection that looks alive, the connection is replaced by one
 * to another server of the list. Streams and consumers are created or
 * updated once at start, then only when the server says they are missing:
 * publishing never waits for the meta leader in steady state. */
#ifndef COMMON_BROKER_H
#define COMMON_BROKER_H

#include <stddef.h>
#include <stdint.h>
#include "err.h"
#include "util.h"

struct broker_settings {
    const char *urls;          /* comma-separated */
    const char *name;          /* the connection's name, seen in the server's /connz */
    const char *stream;        /* the stream this process writes: "ORDERS" or "INVENTORY" */
    int replicas;
    int64_t max_age_ms;        /* stream MaxAge */
    int64_t dup_window_ms;     /* stream Duplicates (0: 2 minutes) */
    int64_t ping_interval_ms;  /* 0: 2 s */
    int max_pings_out;         /* 0: 3 */
    const char *tls_ca;        /* CA file: TLS with it, required, when a url is tls:// */
    int64_t processed_retention_ms; /* 0: none; else a stream read keeping messages as long
                                     * or longer is warned of (its writer's max age) */
};

/* One outbox row to publish, and what became of it. */
struct broker_out {
    const char *subject, *event_id, *event_type, *traceparent; /* traceparent may be NULL */
    const char *payload;
    size_t len;
    int acked;               /* 1 when JetStream acknowledged (duplicate or not) */
    int duplicate;           /* the ack said JetStream already had this id */
    uint64_t seq;            /* stream sequence from the ack */
    int permanent;           /* the server refused it (retrying cannot help) */
    char err[160];
};

/* One fetched message. */
struct broker_in {
    const char *subject, *data;
    const char *traceparent; /* the header as sent (unchecked), or NULL */
    int len;
    void *handle;
};

struct broker;
struct broker_sub;

/* Starts connecting (returns at once even if no server answers yet).
 * ERR_INVALID when settings name an unknown stream. */
enum err broker_new(const struct broker_settings *s, struct broker **out,
                    char *msg, size_t msglen);
void broker_free(struct broker *b);
int broker_connected(struct broker *b);

/* Ensures the stream this process writes: created (or updated to these
 * settings) the first time, afterwards only looked up again when the server
 * said it is missing, and created if it really is. ERR_OK at once in steady
 * state; ERR_UNAVAILABLE when not connected or JetStream did not answer;
 * ERR_BROKER when the server refused (e.g. no suitable peers). */
enum err broker_ensure_stream(struct broker *b, char *msg, size_t msglen);

/* One JetStream round trip on the current connection: the written stream's
 * info (and broker_ensure_stream() when it is missing). ERR_OK when it
 * answered and the stream is there. Counts timeouts, with publish batches
 * that got no ack at all; after BROKER_RECYCLE_AFTER in a row, replaces the
 * connection by one that tries the other servers first (*recycled =
 * BROKER_LEFT_SILENT). A connection nats.c gave up on is replaced too
 * (*recycled = BROKER_REOPENED): see broker.c, given_up(). */
#define BROKER_RECYCLE_AFTER 3
enum { BROKER_KEPT = 0, BROKER_LEFT_SILENT, BROKER_REOPENED };
enum err broker_probe(struct broker *b, int *recycled, char *msg, size_t msglen);

/* Sends n messages asynchronously; their acks fill each one's result
 * fields as they come, until broker_wait_acks(). One batch in flight per
 * broker, from one thread at a time; msgs must outlive the flight. Returns
 * ERR_UNAVAILABLE (nothing sent, each message's err says so) when
 * disconnected. */
enum err broker_send(struct broker *b, struct broker_out *msgs, size_t n);
/* Waits up to timeout_ms for the acks of the batch in flight, then ends
 * the flight (what got no ack says so in its err). At once when nothing is
 * in flight. */
void broker_wait_acks(struct broker *b, int timeout_ms);
/* The process is stopping: from grace_ms on, no wait for acks goes on (what
 * has none yet stays pending, to be sent again), and no connection is
 * replaced (a new one may wait seconds on a hung server). */
void broker_stopping(struct broker *b, int grace_ms);
/* broker_send(), then broker_wait_acks() when something was sent. */
enum err broker_publish(struct broker *b, struct broker_out *msgs, size_t n, int timeout_ms);

/* Ensures that `stream` exists (created from this service's settings if
 * missing; an existing one is left as its writer set it), ensures the
 * durable pull consumer `durable` on it with filter, and binds a
 * subscription. */
enum err broker_subscribe(struct broker *b, const char *stream, const char *durable,
                          const char *filter, struct broker_sub **out, char *msg, size_t msglen);
void broker_sub_free(struct broker_sub *sub);
/* True when the server said the consumer (or its stream) is missing, or the
 * connection was replaced since it was bound: call broker_sub_refresh(). */
int broker_sub_stale(struct broker_sub *sub);
/* Ensures the durable consumer again if it was missing, and binds the
 * subscription to the current connection if that changed. */
enum err broker_sub_refresh(struct broker_sub *sub, char *msg, size_t msglen);
/* Asks the server whether the durable consumer still exists: ERR_BROKER if
 * it (or its stream) is gone, ERR_UNAVAILABLE if it cannot tell. */
enum err broker_sub_check(struct broker_sub *sub);

/* How far the durable consumer is behind: messages not yet delivered plus
 * delivered ones not yet acknowledged. ERR_UNAVAILABLE if the server cannot
 * tell now. */
enum err broker_sub_pending(struct broker_sub *sub, uint64_t *pending);

/* The Nats-Msg-Id of the message stored at seq in stream (msg get API),
 * "" if it has none. ERR_NOT_FOUND when the stream holds no message there
 * (deleted, or never written); ERR_UNAVAILABLE when the server cannot tell. */
enum err broker_stream_msg_id(struct broker *b, const char *stream, uint64_t seq,
                              char *id, size_t idlen);
/* When the stream stored the message at seq (ns since the epoch, the
 * server's clock); errors as above. */
enum err broker_stream_msg_time(struct broker *b, const char *stream, uint64_t seq, int64_t *ns);
/* The first message the stream holds: its sequence, and when it was stored
 * (ns since the epoch); ERR_NOT_FOUND when the stream (or what it holds) is
 * not there, ERR_UNAVAILABLE when NATS did not answer. */
enum err broker_stream_first(struct broker *b, const char *stream, uint64_t *seq, int64_t *ns);
/* The message stored at seq, as a delivery's (subject, body, traceparent:
 * no ack), and when it was stored if stored_ns is not NULL; errors as
 * above. *out is freed with broker_in_free() (only if ERR_OK). */
enum err broker_stream_msg(struct broker *b, const char *stream, uint64_t seq,
                           struct broker_in *out, int64_t *stored_ns);
void broker_in_free(struct broker_in *m);
/* A durable consumer's state: its ack floor (every message of the stream up
 * to it is acknowledged), how many messages it has not acknowledged yet
 * (not delivered, or delivered and awaiting their ack), and whether a pull
 * request waits on it (someone fetches). ERR_UNAVAILABLE when the server
 * cannot tell (no connection, no such consumer). */
struct broker_consumer {
    uint64_t ack_floor, unacked;
    int fetching;
};
enum err broker_consumer_state(struct broker *b, const char *stream, const char *durable,
                               struct broker_consumer *out);

/* Fetches up to max messages, waiting up to timeout_ms. ERR_TIMEOUT when
 * none came; ERR_BROKER when the consumer must be subscribed again.
 * *msgs is freed with broker_fetch_free() after every message was settled. */
enum err broker_fetch(struct broker_sub *sub, int max, int timeout_ms,
                      struct broker_in **msgs, int *n);
void broker_fetch_free(struct broker_in *msgs, int n);

/* Where and when the stream stored the message (the delivery's metadata:
 * the same on every delivery of it); 0 when it has none (not a JetStream
 * delivery). */
int broker_in_stored(const struct broker_in *m, uint64_t *seq, int64_t *stored_ns);
/* Appends the message's NATS headers as "Key: value\r\n" lines (raw bytes). */
void broker_in_headers(const struct broker_in *m, struct buf *out);

void broker_ack(struct broker_in *m);
void broker_term(struct broker_in *m);
void broker_nak(struct broker_in *m, int64_t delay_ms);

#endif
