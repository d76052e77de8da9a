/* http.c - libmicrohttpd glue: body accumulation with a size cap, routing,
 * content-type checks, JSON replies and request metrics.
 * Owns the MHD daemon and per-connection state; not what routes do. */
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

#include <microhttpd.h>
#include <pthread.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

/* A client socket, from accept to close: when it began receiving the
 * request it is on (0: not receiving, e.g. suspended while answered). */
struct sock {
    int fd;
    int64_t recv_since_ms;
    int eof_looked;         /* idle since recv_since_ms, and looked at by the reaper */
    struct sock *prev, *next;
};

/* A header value without its trailing blanks, kept for the request. */
struct header_copy {
    struct header_copy *next;
    char value[];
};

struct conn_state {
    struct http_server *server;
    struct header_copy *headers; /* values http_req_header() trimmed */
    struct buf body;
    int too_big;
    int ambiguous;           /* its end cannot be told for sure: answered 400, then closed */
    size_t body_seen;       /* bytes of body received, kept or not */
    int sent;               /* its response is queued */
    double t0;
    int answered;           /* set by the worker before it resumes the connection */
    int deferred;           /* its quick handler will answer later (http_defer) */
    int settled;            /* the whole request was in at an earlier call (see on_request) */
    const struct http_route *route;
    const char *label;      /* route label in metrics */
    struct http_req req;
    struct http_resp resp;
    int64_t queued_ms;
    char peer[64];          /* the client's address, numeric */
    struct conn_state *next; /* in the work queue */
};

struct http_server {
    struct MHD_Daemon *daemon;
    const struct http_route *routes;
    size_t nroutes;
    void *ctx;
    struct http_limits lim;
    atomic_int inflight;    /* requests begun and not yet completed */
    atomic_int deferred;    /* suspended by http_defer(), not resumed yet */
    atomic_int closing;     /* http_stop began: no new deferral, connections close */
    /* the workers: handlers that may block run here, never on MHD's threads */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct conn_state *qhead, *qtail;
    int stopping, nworkers;
    pthread_t *workers;
    struct conn_state **serving; /* one slot per worker: what it serves now, or NULL */
    /* the receive deadline of every socket, enforced by the reaper */
    pthread_mutex_t smu;
    struct sock *socks;
    pthread_t reaper;
    atomic_int reaper_stop;
};

#define STOP_GRACE_MS 5000 /* past the database cut (service.c): the last replies go out */
#define SEND_GRACE_MS 300   /* for replies resumed at the very end to be written */
#define MHD_THREADS 2       /* never block: they only read, route and write */
#define REAP_EVERY_MS 200
#define IDLE_EOF_MS 500     /* see idle_and_ended */
#define FD_RESERVE 256      /* for Postgres, NATS, files */
/* A body without a length (chunked) that passes HTTP_MAX_BODY is read on,
 * unkept, to its end for the 413 (libmicrohttpd 0.9.75 sends no answer
 * queued before the body ends), but this far at most: past it the
 * connection is closed unanswered (a client sent 11 GB in 10 s, all of it
 * read until the request timeout: a helper's probe). 16 MiB, read in tens
 * of milliseconds: at 1 MiB, a chunked body of 1.5 MB was reset, its 413
 * lost (another probe). */
#define DISCARD_MAX (16 * 1024 * 1024)

static struct metric *m_requests, *m_duration;

static struct conn_state *state_of(const struct http_req *req)
{
    return (struct conn_state *)((char *)req - offsetof(struct conn_state, req));
}

/* n without the blanks (spaces, tabs) that end s[0..n). */
static size_t trimmed_len(const char *s, size_t n)
{
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    return n;
}

/* A field's value has no blanks around it (RFC 9110, 5.5): libmicrohttpd
 * drops those before it, not those after, and "Idempotency-Key: k " must be
 * the key "k". A value that ends in blanks is copied without them, kept
 * until the request ends. */
const char *http_req_header(const struct http_req *req, const char *name)
{
    const char *v = NULL;
    size_t n = 0;
    if (MHD_lookup_connection_value_n(req->conn, MHD_HEADER_KIND, name, strlen(name), &v, &n) !=
            MHD_YES || !v)
        return NULL;
    size_t len = trimmed_len(v, n);
    if (len == n)
        return v;
    n = len;
    struct conn_state *st = state_of(req);
    struct header_copy *h = xmalloc(sizeof *h + n + 1);
    memcpy(h->value, v, n);
    h->value[n] = '\0';
    h->next = st->headers;
    st->headers = h;
    return h->value;
}

const char *http_req_query(const struct http_req *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

void http_req_peer(const struct http_req *req, char *out, size_t n)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    socklen_t len = sa && sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                    : sizeof(struct sockaddr_in);
    if (!sa || getnameinfo(sa, len, out, (socklen_t)n, NULL, 0, NI_NUMERICHOST) != 0)
        snprintf(out, n, "?");
}

void http_resp_json(struct http_resp *resp, int status, json_t *body)
{
    json_decref(resp->body);
    resp->status = status;
    resp->body = body;
}

void http_resp_error(struct http_resp *resp, int status, const char *code,
                     const char *message, const char *field)
{
    struct buf text; /* a message quoting the request may hold any bytes */
    buf_init(&text);
    buf_utf8_preview(&text, message, strlen(message), strlen(message));
    json_t *e = json_pack("{s:s, s:s}", "code", code, "message", text.data);
    buf_cleanup(&text);
    if (field && field[0]) /* only where one named field is at fault */
        json_object_set_new(e, "field", json_string(field));
    http_resp_json(resp, status, json_pack("{s:o}", "error", e));
}

void http_resp_bad_body(struct http_resp *resp, enum err e, const char *message,
                        const char *field)
{
    if (e == ERR_INVALID)
        http_resp_error(resp, 400, "invalid_json", message, NULL);
    else
        http_resp_error(resp, 400, "validation_failed", message, field);
}

/* Whether route r answers HEAD: a GET route, but not a gated one (an
 * operator's GET may be work, as the admin API's reconciliation run, that a
 * checker sending HEAD should not start). */
static int heads(const struct http_route *r)
{
    return strcmp(r->method, "GET") == 0 && !r->gate;
}

/* Whether route r takes method: its own, and HEAD where it heads(). */
static int takes(const struct http_route *r, const char *method)
{
    return strcmp(method, r->method) == 0 || (strcmp(method, "HEAD") == 0 && heads(r));
}

/* Appends method to a 405's Allow list (", "-separated). */
static void allow_add(char *allow, size_t n, const char *method)
{
    size_t len = strlen(allow);
    snprintf(allow + len, n - len, "%s%s", len ? ", " : "", method);
}

/* Finds the route for path and method; *same_path (if any route matches the
 * path with another method) tells a 405 from a 404, and allow (allow_len
 * bytes) gets the methods the path takes. */
static const struct http_route *route_find(const struct http_server *s, const char *method,
                                           const char *path, const struct http_route **same_path,
                                           char *allow, size_t allow_len)
{
    *same_path = NULL;
    allow[0] = '\0';
    const struct http_route *found = NULL;
    for (size_t i = 0; i < s->nroutes; i++) {
        const struct http_route *r = &s->routes[i];
        size_t n = strlen(r->path);
        int prefix = r->path[n - 1] == '/';
        /* an empty parameter is the handler's to refuse (a malformed id: 400) */
        int match = prefix ? strncmp(path, r->path, n) == 0 : strcmp(path, r->path) == 0;
        if (!match)
            continue;
        *same_path = r;
        allow_add(allow, allow_len, r->method);
        if (heads(r))
            allow_add(allow, allow_len, "HEAD");
        if (!found && takes(r, method))
            found = r;
    }
    return found;
}

/* A gated route under the path's first segment ("/admin/..."), if any: its
 * gate answers for the whole segment, paths no route has included. */
static const struct http_route *gate_of_segment(const struct http_server *s, const char *path)
{
    if (path[0] != '/')
        return NULL;
    const char *end = strchr(path + 1, '/');
    size_t n = end ? (size_t)(end - path) + 1 : strlen(path);
    for (size_t i = 0; i < s->nroutes; i++) {
        const struct http_route *r = &s->routes[i];
        if (r->gate && strncmp(r->path, path, n) == 0 && (r->path[n] == '\0' || end))
            return r;
    }
    return NULL;
}

/* A charset the body may be read in as UTF-8: UTF-8 (also written utf8),
 * or ASCII, which is UTF-8. value: up to the parameter's end. */
static int utf8_charset(const char *value, size_t n)
{
    static const char *const ok[] = {"utf-8", "utf8", "us-ascii"};
    if (n >= 2 && value[0] == '"' && value[n - 1] == '"') {
        value++;
        n -= 2;
    }
    for (size_t i = 0; i < ARRAY_LEN(ok); i++)
        if (n == strlen(ok[i]) && strncasecmp(value, ok[i], n) == 0)
            return 1;
    return 0;
}

/* application/json and its parameters (RFC 9110, 8.3.1: "; name=value",
 * blanks around the ';'): a charset the body cannot be read in as UTF-8 is
 * refused. */
static int is_json(const char *ctype)
{
    size_t n = strlen("application/json");
    if (!ctype || strncasecmp(ctype, "application/json", n) != 0)
        return 0;
    for (const char *p = ctype + n;;) {
        p += strspn(p, " \t");
        if (*p == '\0')
            return 1;
        if (*p++ != ';')
            return 0;
        p += strspn(p, " \t");
        size_t len = strcspn(p, ";"), end = trimmed_len(p, len);
        if (end > 8 && strncasecmp(p, "charset=", 8) == 0 && !utf8_charset(p + 8, end - 8))
            return 0;
        p += len;
    }
}

/* A body sent compressed (Content-Encoding other than identity) is not read. */
static int plain_body(const struct http_req *req)
{
    const char *enc = http_req_header(req, "Content-Encoding");
    return !enc || !*enc || strcasecmp(enc, "identity") == 0;
}

static int has_body(const char *method)
{
    return strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
           strcmp(method, "PATCH") == 0;
}

/* The route for the request, or NULL with resp set (the route's gate's
 * refusal, 404, 405, 413, 415).
 * *name is the metrics label: from the table, never from the request. */
static const struct http_route *pick(struct http_server *s, struct http_req *req,
                                     struct conn_state *st, struct http_resp *resp,
                                     const char **name)
{
    const struct http_route *known = NULL;
    const struct http_route *r =
        route_find(s, req->method, req->path, &known, resp->allow, sizeof resp->allow);
    *name = r ? r->name : known ? known->name : "unmatched";
    if (st->ambiguous) { /* nothing about it is to be trusted, not even who asks */
        http_resp_error(resp, 400, "bad_request",
                        "where the request ends is ambiguous: Content-Length twice, or with "
                        "Transfer-Encoding, a coding other than chunked, or a blank before a "
                        "header's colon", NULL);
        return NULL;
    }
    const struct http_route *gated = gate_of_segment(s, req->path);
    if (gated && !gated->gate(req, resp, s->ctx))
        return NULL;
    if (!r && known)
        http_resp_error(resp, 405, "method_not_allowed", "method not allowed on this path", NULL);
    else if (!r)
        http_resp_error(resp, 404, "not_found", "no such resource", NULL);
    else if (st->too_big)
        http_resp_error(resp, 413, "payload_too_large", "body exceeds 65536 bytes", NULL);
    else if (has_body(req->method) && !is_json(http_req_header(req, "Content-Type")))
        http_resp_error(resp, 415, "unsupported_media_type",
                        "Content-Type must be application/json (charset UTF-8)", NULL);
    else if (has_body(req->method) && !plain_body(req))
        http_resp_error(resp, 415, "unsupported_media_type",
                        "Content-Encoding is not supported: send the body uncompressed", NULL);
    else {
        req->param = req->path + strlen(r->path);
        return r;
    }
    return NULL;
}

static enum MHD_Result send_resp(struct http_server *s, struct MHD_Connection *conn,
                                 struct http_resp *resp, int close)
{
    char *text = resp->text_owned;
    const char *ctype = "text/plain; version=0.0.4; charset=utf-8";
    if (!text) {
        /* 15 digits, all a double holds of a decimal: jansson's 17 wrote an
         * age of 4.012294 s as 4.0122939999999998 */
        text = resp->body ? json_dumps(resp->body, JSON_COMPACT | JSON_REAL_PRECISION(15))
                          : xstrdup("{}");
        ctype = "application/json";
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), text,
                                                             MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(r, "Content-Type", ctype);
    if (close || atomic_load(&s->closing)) /* the client moves on: the server is stopping */
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    if (resp->location)
        MHD_add_response_header(r, "Location", resp->location);
    if (resp->status == 405 && resp->allow[0])
        MHD_add_response_header(r, "Allow", resp->allow);
    if (resp->status == 401) /* the one credential any route here asks for */
        MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)resp->status, r);
    MHD_destroy_response(r);
    return ret;
}

/* A route's labels in the HTTP metrics: with its status code, or (code 0)
 * the route alone, for the duration histogram. */
static void route_labels(char *out, size_t n, const char *route, int code)
{
    if (code)
        snprintf(out, n, "route=\"%s\",code=\"%d\"", route, code);
    else
        snprintf(out, n, "route=\"%s\"", route);
}

static enum MHD_Result answer(struct MHD_Connection *conn, struct conn_state *st)
{
    if (st->sent)
        return MHD_YES;
    st->sent = 1;
    enum MHD_Result ret = send_resp(st->server, conn, &st->resp, st->ambiguous);
    char labels[256];
    route_labels(labels, sizeof labels, st->label, st->resp.status);
    metric_add(m_requests, labels, 1);
    route_labels(labels, sizeof labels, st->label, 0);
    metric_observe(m_duration, labels, mono_s() - st->t0);
    return ret;
}

static struct sock *sock_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* Marks when the socket began receiving a request (0: it is not). */
static void sock_receiving(struct http_server *s, struct MHD_Connection *conn, int64_t since)
{
    struct sock *k = sock_of(conn);
    if (!k)
        return;
    pthread_mutex_lock(&s->smu);
    k->recv_since_ms = since;
    k->eof_looked = 0;
    pthread_mutex_unlock(&s->smu);
}

/* The path of a request target in absolute form ("http://host/orders"),
 * which a server must take as well as the path alone (RFC 9112 3.2.2):
 * what follows the authority, or "/" when nothing does. */
static const char *origin_form(const char *url)
{
    size_t scheme = strncasecmp(url, "http://", 7) == 0    ? 7
                    : strncasecmp(url, "https://", 8) == 0 ? 8
                                                           : 0;
    if (!scheme)
        return url;
    const char *path = strchr(url + scheme, '/');
    return path ? path : "/";
}

/* The whole request is in: answer it here if the route is quick (or the
 * shared checks refused it), else hand it to a worker and suspend. */
static enum MHD_Result received(struct http_server *s, struct MHD_Connection *conn,
                                const char *url, const char *method, struct conn_state *st)
{
    sock_receiving(s, conn, 0);
    st->req = (struct http_req){.method = method, .path = origin_form(url), .body = st->body.data,
                                .body_len = st->body.len, .conn = conn, .ctx = s->ctx};
    st->resp.status = 500;
    st->route = pick(s, &st->req, st, &st->resp, &st->label);
    if (!st->route || st->route->quick) {
        if (st->route)
            st->route->fn(&st->req, &st->resp, s->ctx);
        if (st->deferred)
            return MHD_YES; /* http_resume() brings it back, answered */
        st->answered = 1;
        return answer(conn, st);
    }
    pthread_mutex_lock(&s->mu);
    if (s->stopping) { /* no worker will take it: answered here, never left suspended */
        pthread_mutex_unlock(&s->mu);
        http_resp_error(&st->resp, 503, "unavailable", "the server is stopping; retry later", NULL);
        st->answered = 1;
        return answer(conn, st);
    }
    MHD_suspend_connection(conn); /* under mu: the workers drain the queue before they end */
    st->queued_ms = mono_ms();
    http_req_peer(&st->req, st->peer, sizeof st->peer);
    if (s->qtail)
        s->qtail->next = st;
    else
        s->qhead = st;
    s->qtail = st;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return MHD_YES;
}

struct http_deferred *http_defer(const struct http_req *req)
{
    struct conn_state *st = state_of(req);
    struct http_server *s = st->server;
    atomic_fetch_add(&s->deferred, 1); /* before the check: http_stop checks in reverse */
    if (atomic_load(&s->closing)) {
        atomic_fetch_sub(&s->deferred, 1);
        return NULL;
    }
    st->deferred = 1;
    MHD_suspend_connection(req->conn);
    return (struct http_deferred *)st;
}

/* The answer is in st->resp: marks it so, under mu as a worker does, and
 * resumes the connection (MHD calls on_request again: answered). */
static void resume_answered(struct http_server *s, struct conn_state *st)
{
    struct MHD_Connection *conn = st->req.conn;
    pthread_mutex_lock(&s->mu);
    st->answered = 1;
    pthread_mutex_unlock(&s->mu);
    MHD_resume_connection(conn);
}

void http_resume(struct http_deferred *d)
{
    struct conn_state *st = (struct conn_state *)d;
    struct http_server *s = st->server;
    resume_answered(s, st);
    atomic_fetch_sub(&s->deferred, 1);
}

/* Whether a worker serves a request of that client now. Under mu. */
static int served(const struct http_server *s, const char *peer)
{
    for (int k = 0; k < s->nworkers; k++)
        if (s->serving[k] && strcmp(s->serving[k]->peer, peer) == 0)
            return 1;
    return 0;
}

/* The next request to serve: the oldest of a client that no worker serves
 * now, else the oldest. A client's flood then waits behind itself, not in
 * front of every other client (with Postgres slow, another client's request
 * waited behind 120 of one client's until the request timeout: a helper's
 * probe). Under mu; the queue is not empty. */
static struct conn_state *take_next(struct http_server *s)
{
    struct conn_state **pick = &s->qhead;
    for (struct conn_state **p = &s->qhead; *p; p = &(*p)->next)
        if (!served(s, (*p)->peer)) {
            pick = p;
            break;
        }
    struct conn_state *st = *pick;
    *pick = st->next;
    if (s->qtail == st) /* it was the last: the one before it is */
        for (s->qtail = s->qhead; s->qtail && s->qtail->next; s->qtail = s->qtail->next)
            ;
    return st;
}

/* Puts st in a worker's slot (-1: a free one; there is one per worker), or
 * empties the slot (st NULL); returns the slot. Under mu. */
static int serve_slot(struct http_server *s, int slot, struct conn_state *st)
{
    if (slot < 0)
        for (slot = 0; s->serving[slot]; slot++)
            ;
    s->serving[slot] = st;
    return slot;
}

static void *worker_main(void *arg)
{
    struct http_server *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->qhead && !s->stopping)
            pthread_cond_wait(&s->cv, &s->mu);
        if (!s->qhead)
            break; /* stopping, and the queue is drained */
        struct conn_state *st = take_next(s);
        int slot = serve_slot(s, -1, st);
        pthread_mutex_unlock(&s->mu);
        if (mono_ms() - st->queued_ms > s->lim.request_timeout_ms)
            http_resp_error(&st->resp, 503, "unavailable", "the server is busy; retry later", NULL);
        else
            st->route->fn(&st->req, &st->resp, s->ctx);
        pthread_mutex_lock(&s->mu);
        serve_slot(s, slot, NULL);
        pthread_mutex_unlock(&s->mu);
        resume_answered(s, st);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* Percent-decodes the path and each query argument in place, as
 * libmicrohttpd would, except %00: a NUL would end the string there, and
 * "/inventory/Q%00x" would be read as "/inventory/Q". It stays the three
 * characters, which no id, sku or number takes. */
static size_t unescape(void *cls, struct MHD_Connection *conn, char *s)
{
    (void)cls;
    (void)conn;
    char *w = s;
    for (const char *r = s; *r;) {
        int hi = r[0] == '%' ? hex_val(r[1]) : -1, lo = hi >= 0 ? hex_val(r[2]) : -1;
        if (lo >= 0 && (hi | lo)) {
            *w++ = (char)(hi << 4 | lo);
            r += 3;
        } else {
            *w++ = *r++;
        }
    }
    *w = '\0';
    return (size_t)(w - s);
}

struct framing {
    int lengths, codings, not_chunked, blank_before_colon;
};

static enum MHD_Result note_framing(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value)
{
    (void)kind;
    struct framing *f = cls;
    size_t n = strlen(key);
    f->blank_before_colon |= trimmed_len(key, n) != n;
    f->lengths += strcasecmp(key, "Content-Length") == 0;
    if (strcasecmp(key, "Transfer-Encoding") == 0) {
        f->codings++;
        f->not_chunked |= trimmed_len(value, strlen(value)) != 7 || strncasecmp(value, "chunked", 7);
    }
    return MHD_YES;
}

/* Where the request ends cannot be told for sure: two Content-Lengths, one
 * beside Transfer-Encoding, a coding other than chunked alone, or a blank
 * before a field's colon ("Content-Length : 9" is another field to
 * libmicrohttpd). It reads the body by one reading, and what the sender
 * meant by another would be read as the next request (a helper smuggled an
 * admin request, and then an order, past the order route so). RFC 9112
 * 5.1 and 6.3: refuse it, and close. */
static int ambiguous_framing(struct MHD_Connection *conn)
{
    struct framing f = {0};
    MHD_get_connection_values(conn, MHD_HEADER_KIND, note_framing, &f);
    return f.blank_before_colon || f.lengths > 1 || (f.lengths && f.codings) || f.codings > 1 ||
           f.not_chunked;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **con_cls)
{
    (void)version;
    struct http_server *s = cls;
    struct conn_state *st = *con_cls;
    if (!st) {
        atomic_fetch_add(&s->inflight, 1);
        st = xcalloc(1, sizeof *st);
        st->server = s;
        buf_init(&st->body);
        st->t0 = mono_s();
        const char *clen = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        st->too_big = clen && strtoull(clen, NULL, 10) > HTTP_MAX_BODY;
        st->ambiguous = ambiguous_framing(conn);
        *con_cls = st;
        /* refused before the body comes: no "100 Continue", nothing read (a
         * body of another coding than chunked would be read to the end of
         * the stream) */
        return st->too_big || st->ambiguous ? received(s, conn, url, method, st) : MHD_YES;
    }
    if (*upload_size) {
        if (st->body.len + *upload_size > HTTP_MAX_BODY)
            st->too_big = 1;
        else if (!st->too_big)
            buf_append(&st->body, upload_data, *upload_size);
        st->body_seen += *upload_size;
        *upload_size = 0;
        return st->body_seen > HTTP_MAX_BODY + DISCARD_MAX ? MHD_NO : MHD_YES;
    }
    if (!st->settled) {
        /* The whole request is in. Answered at libmicrohttpd's next turn, an
         * instant later: by then it has noted that this connection reads no
         * more. A connection suspended now would be read again once
         * resumed, and 0.9.75 closes one that reads the end of the stream
         * before its answer is queued: a client that shuts its sending side
         * once the request is out (shutdown(SHUT_WR), `nc -N`) got no answer,
         * its order created all the same (a helper's probe: 66 of 200). */
        st->settled = 1;
        return MHD_YES;
    }
    pthread_mutex_lock(&s->mu);
    int answered = st->answered, queued = st->route && !answered;
    pthread_mutex_unlock(&s->mu);
    if (answered)
        return answer(conn, st); /* resumed by its worker */
    if (queued)
        return MHD_YES;
    return received(s, conn, url, method, st);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode code)
{
    (void)code;
    struct http_server *s = cls;
    struct conn_state *st = *con_cls;
    if (st) {
        for (struct header_copy *h = st->headers, *next; h; h = next) {
            next = h->next;
            free(h);
        }
        buf_cleanup(&st->body);
        json_decref(st->resp.body);
        free(st->resp.location);
        free(st);
        *con_cls = NULL;
        atomic_fetch_sub(&s->inflight, 1);
    }
    sock_receiving(s, conn, mono_ms()); /* kept alive: the next request's clock starts */
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct http_server *s = cls;
    struct sock *k = *socket_context;
    pthread_mutex_lock(&s->smu);
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        k = xcalloc(1, sizeof *k);
        k->fd = ci ? ci->connect_fd : -1;
        k->recv_since_ms = mono_ms();
        k->next = s->socks;
        if (s->socks)
            s->socks->prev = k;
        s->socks = k;
        *socket_context = k;
    } else if (k) {
        if (k->prev)
            k->prev->next = k->next;
        else
            s->socks = k->next;
        if (k->next)
            k->next->prev = k->prev;
        free(k);
        *socket_context = NULL;
    }
    pthread_mutex_unlock(&s->smu);
}

/* A socket waiting IDLE_EOF_MS for a request, whose client has shut its
 * sending side (the end of the stream is all there is to read): nothing
 * more can come. libmicrohttpd 0.9.75 may not look again when a request
 * and that end came in one wake-up: answered, such a connection stayed
 * open until the request timeout (10 s) for a client reading to the close
 * (a review). Looked at once per idle spell, after the requests
 * libmicrohttpd holds (pipelined behind the last answer) have begun. */
static int receiving_too_long(const struct sock *k, int64_t too_old)
{
    return k->recv_since_ms && k->recv_since_ms < too_old && k->fd >= 0;
}

static int idle_and_ended(struct sock *k, int64_t now)
{
    if (!k->recv_since_ms || k->eof_looked || now - k->recv_since_ms < IDLE_EOF_MS || k->fd < 0)
        return 0;
    k->eof_looked = 1;
    char c;
    return recv(k->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

/* Cuts every socket that has been receiving one request for longer than the
 * request timeout (MHD's own timeout restarts on each byte, so a client
 * sending a byte a second would never be cut by it), and those idle whose
 * client is done. Under smu, so the fd cannot be closed and reused
 * meanwhile: MHD notifies before closing. */
static void *reaper_main(void *arg)
{
    struct http_server *s = arg;
    while (!atomic_load(&s->reaper_stop)) {
        sleep_ms(REAP_EVERY_MS);
        int64_t now = mono_ms(), too_old = now - s->lim.request_timeout_ms;
        pthread_mutex_lock(&s->smu);
        for (struct sock *k = s->socks; k; k = k->next)
            if (receiving_too_long(k, too_old) || idle_and_ended(k, now)) {
                shutdown(k->fd, SHUT_RDWR); /* MHD sees the end and closes it */
                k->recv_since_ms = 0;
            }
        pthread_mutex_unlock(&s->smu);
    }
    return NULL;
}

/* Raises the soft fd limit to the hard one; the connection limit stays
 * well below it, so Postgres and NATS can always reconnect. A client
 * address gets at most half of the total: with the per-address limit as
 * high as the total, one client's idle connections stopped every other
 * (ulimit -n 512: 128 in all, 256 per address; a helper's probe; or
 * HTTP_MAX_CONNECTIONS=200 alone: a review). Said once, when lowered. */
static void conn_limits(const struct http_limits *lim, unsigned *total, unsigned *per_ip)
{
    static atomic_int said;
    *total = (unsigned)lim->max_connections;
    *per_ip = (unsigned)lim->max_per_ip;
    struct rlimit rl = {0, 0};
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    rlim_t cap = rl.rlim_cur > 2 * FD_RESERVE ? (rl.rlim_cur - FD_RESERVE) / 2 : rl.rlim_cur / 4;
    int by_files = rl.rlim_cur > 0 && (rlim_t)*total > cap;
    if (by_files)
        *total = cap > 2 ? (unsigned)cap : 2;
    if (*per_ip > *total / 2)
        *per_ip = *total / 2;
    if ((by_files || *per_ip < (unsigned)lim->max_per_ip) && !atomic_exchange(&said, 1))
        log_warn("HTTP connections: %u in all, %u per client address, at most half of them "
                 "(HTTP_MAX_CONNECTIONS=%d, HTTP_MAX_CONNECTIONS_PER_IP=%d, open-files limit %llu)",
                 *total, *per_ip, lim->max_connections, lim->max_per_ip,
                 (unsigned long long)rl.rlim_cur);
}

static void start_threads(struct http_server *s, int workers)
{
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_mutex_init(&s->smu, NULL);
    s->nworkers = workers;
    s->workers = xcalloc((size_t)workers, sizeof *s->workers);
    s->serving = xcalloc((size_t)workers, sizeof *s->serving);
    for (int i = 0; i < workers; i++)
        thread_start(&s->workers[i], "http", worker_main, s);
    thread_start(&s->reaper, "http-reaper", reaper_main, s);
}

static void stop_threads(struct http_server *s)
{
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < s->nworkers; i++)
        pthread_join(s->workers[i], NULL);
    atomic_store(&s->reaper_stop, 1);
    pthread_join(s->reaper, NULL);
    free(s->workers);
    free(s->serving);
}

/* After MHD has stopped: its threads lock mu and smu until then. */
static void free_server(struct http_server *s)
{
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->smu);
    free(s);
}

/* Each route's series, at 0 from the start: the first scrape shows both
 * families with samples, not their names alone (a request is counted once
 * answered, so a scrape never counts itself). The code is 200 for GET
 * routes; other codes appear when first answered. */
static void show_routes(const struct http_route *routes, size_t nroutes)
{
    char labels[256];
    for (size_t i = 0; i < nroutes; i++) {
        route_labels(labels, sizeof labels, routes[i].name, 0);
        metric_add(m_duration, labels, 0);
        if (strcmp(routes[i].method, "GET") != 0)
            continue;
        route_labels(labels, sizeof labels, routes[i].name, 200);
        metric_add(m_requests, labels, 0);
    }
}

enum err http_start(int port, const struct http_limits *lim, const struct http_route *routes,
                    size_t nroutes, void *ctx, struct http_server **out)
{
    m_requests = metrics_register("http_requests_total", "HTTP requests by route and status code.",
                                  METRIC_COUNTER, NULL, 0);
    m_duration = metrics_register("http_request_duration_seconds", "HTTP request latency.",
                                  METRIC_HISTOGRAM, metrics_latency_buckets,
                                  metrics_latency_nbuckets);
    show_routes(routes, nroutes);
    struct http_server *s = xcalloc(1, sizeof *s);
    s->routes = routes;
    s->nroutes = nroutes;
    s->ctx = ctx;
    s->lim = *lim;
    start_threads(s, lim->workers);
    unsigned idle_s = (unsigned)((lim->request_timeout_ms + 999) / 1000), total, per_ip;
    conn_limits(lim, &total, &per_ip);
    s->daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC | MHD_USE_TURBO |
            MHD_ALLOW_SUSPEND_RESUME, (uint16_t)port, NULL, NULL, on_request, s,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)MHD_THREADS,
        MHD_OPTION_CONNECTION_LIMIT, total, MHD_OPTION_PER_IP_CONNECTION_LIMIT, per_ip,
        MHD_OPTION_CONNECTION_TIMEOUT, idle_s, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, s, MHD_OPTION_UNESCAPE_CALLBACK, unescape,
        NULL, MHD_OPTION_END);
    /* No SO_REUSEPORT: a port already taken must fail the start, not split
     * the connections silently between two processes. */
    if (!s->daemon) {
        stop_threads(s);
        free_server(s);
        return ERR_IO;
    }
    *out = s;
    return ERR_OK;
}

/* Until no request is in flight on any of the servers, or ms have passed. */
static void wait_idle(struct http_server *const servers[], size_t n, int64_t ms)
{
    for (int64_t end = mono_ms() + ms; mono_ms() < end; sleep_ms(10)) {
        int busy = 0;
        for (size_t i = 0; i < n; i++)
            busy |= servers[i] && atomic_load(&servers[i]->inflight) > 0;
        if (!busy)
            return;
    }
}

static void quiesce(struct http_server *s)
{
    MHD_socket lsock = MHD_quiesce_daemon(s->daemon); /* no new connections */
    if (lsock != MHD_INVALID_SOCKET)
        close(lsock);
    atomic_store(&s->closing, 1); /* no new deferral; each answer closes its connection */
}

void http_stop(struct http_server *const servers[], size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (servers[i])
            quiesce(servers[i]);
    /* MHD_stop_daemon closes connections without sending queued replies:
     * first let the requests in flight be answered (bounded, within the
     * 10 s a stop may take; every database wait ends before). */
    wait_idle(servers, n, STOP_GRACE_MS);
    for (size_t i = 0; i < n; i++) {
        struct http_server *s = servers[i];
        if (!s)
            continue;
        /* MHD must not stop with a connection suspended. Whoever holds a
         * deferred request answers it within its own bounded waits (the
         * order batcher: the database deadlines, which the stop has cut
         * short), and no new one is deferred now. */
        while (atomic_load(&s->deferred) > 0)
            sleep_ms(10);
        stop_threads(s); /* the workers answer what is queued; later requests get 503 */
    }
    wait_idle(servers, n, SEND_GRACE_MS); /* the last answers leave before MHD closes them */
    for (size_t i = 0; i < n; i++)
        if (servers[i]) {
            MHD_stop_daemon(servers[i]->daemon);
            free_server(servers[i]);
        }
}
