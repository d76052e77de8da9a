/* http.h - a small JSON HTTP server on libmicrohttpd: a routing table,
 * bodies capped at 64 KiB, the contract's error shape, request metrics.
 *
 * Handlers run on worker threads and may block (on Postgres): the pool size
 * is the number of requests served at once. Routes marked quick run on the
 * server's own threads, which never block: /healthz answers whatever the
 * workers are waiting for, and a quick handler may hand its request on and
 * answer it later (http_defer). Connections are bounded in total and per client
 * address, and each request must arrive whole within a timeout. */
#ifndef COMMON_HTTP_H
#define COMMON_HTTP_H

#include <jansson.h>
#include <stddef.h>
#include "err.h"

#define HTTP_MAX_BODY (64 * 1024)

struct http_req {
    const char *method;
    const char *path;
    const char *param;     /* the path after a prefix route, e.g. the id */
    const char *body;      /* NUL-terminated; may contain NULs within body_len */
    size_t body_len;
    void *conn;            /* opaque, for http_req_header() */
    void *ctx;             /* the server's context, as handlers are given it */
};

struct http_resp {
    int status;
    json_t *body;          /* owned by the response once set */
    char *location;        /* optional Location header (heap) */
    char *text_owned;      /* plain-text body instead of JSON (heap; freed by the server) */
    char allow[64];        /* a 405's Allow header: the path's methods (set by the server) */
};

typedef void (*http_handler_fn)(const struct http_req *req, struct http_resp *resp, void *ctx);

struct http_route {
    const char *method;    /* a GET route without a gate answers HEAD too (no body) */
    const char *path;      /* exact path, or prefix if it ends with '/' */
    const char *name;      /* the `route` label in metrics */
    http_handler_fn fn;
    int quick;             /* never blocks: answered without a worker */
    /* optional: who may ask, checked before anything else about the request
     * (method, size, Content-Type), so that a refused client learns nothing
     * else; 0 with resp set refuses it. */
    int (*gate)(const struct http_req *req, struct http_resp *resp, void *ctx);
};

struct http_limits {
    int workers;               /* handlers running at once */
    int max_connections;       /* in total (also kept well below the fd limit) */
    int max_per_ip;            /* per client address */
    int64_t request_timeout_ms; /* to receive a whole request; and to wait for a worker */
};

struct http_server;

/* Starts serving on port (all interfaces) within lim. Raises the soft
 * RLIMIT_NOFILE to the hard limit. routes must outlive the server. ERR_IO
 * if the port cannot be bound. */
enum err http_start(int port, const struct http_limits *lim, const struct http_route *routes,
                    size_t nroutes, void *ctx, struct http_server **out);
/* Stops the n servers at once: no new connections, the requests in flight
 * finished within one shared grace, then freed. NULL entries are skipped.
 * (One after the other, each client still sending a request held its own
 * grace: 10.5 s for a stop with a slow client on PORT and ADMIN_PORT.) */
void http_stop(struct http_server *const servers[], size_t n);

/* Value of a request header (case-insensitive) without blanks around it, or
 * NULL. Valid until the request is answered. */
const char *http_req_header(const struct http_req *req, const char *name);

/* Value of a query-string argument, or NULL. */
const char *http_req_query(const struct http_req *req, const char *name);
/* The client's address as numeric text (e.g. "127.0.0.1"), "?" if unknown. */
void http_req_peer(const struct http_req *req, char *out, size_t n);

/* A quick route's handler may answer later, from another thread, without
 * holding a thread meanwhile: it calls http_defer(req) and returns; the
 * connection waits (suspended) until whoever finishes the work has filled
 * the resp the handler was given and called http_resume() with what
 * http_defer() returned. Every deferred request must be resumed: the
 * server's stop waits for it. NULL once the server is stopping: the
 * handler then answers at once. */
struct http_deferred;
struct http_deferred *http_defer(const struct http_req *req);
void http_resume(struct http_deferred *d);

/* Sets a JSON body (stolen) and status. */
void http_resp_json(struct http_resp *resp, int status, json_t *body);
/* Sets the contract's error body {"error":{"code","message"[,"field"]}}. */
void http_resp_error(struct http_resp *resp, int status, const char *code,
                     const char *message, const char *field);
/* A body refused: 400 invalid_json when it could not be read (e is
 * ERR_INVALID: not JSON), else 400 validation_failed (field if one is at
 * fault). */
void http_resp_bad_body(struct http_resp *resp, enum err e, const char *message,
                        const char *field);

#endif
