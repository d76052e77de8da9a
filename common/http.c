/* http.c - libmicrohttpd glue: body accumulation with a size cap, routing,
 * content-type checks, JSON replies and request metrics.
 * Owns the MHD daemon and per-connection state; not what routes do. */
#include "http.h"
#include "metrics.h"
#include "util.h"

#include <microhttpd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

struct http_server {
    struct MHD_Daemon *daemon;
    const struct http_route *routes;
    size_t nroutes;
    void *ctx;
    atomic_int inflight;    /* requests begun and not yet completed */
};

struct conn_state {
    struct buf body;
    int too_big;
    double t0;
};

#define STOP_GRACE_MS 6000

static struct metric *m_requests, *m_duration;

const char *http_req_header(const struct http_req *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
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
    json_t *e = json_pack("{s:s, s:s}", "code", code, "message", message);
    if (field)
        json_object_set_new(e, "field", json_string(field));
    http_resp_json(resp, status, json_pack("{s:o}", "error", e));
}

/* Finds the route for path and method; *same_path (if any route matches the
 * path with another method) tells a 405 from a 404. */
static const struct http_route *route_find(const struct http_server *s, const char *method,
                                           const char *path, const struct http_route **same_path)
{
    *same_path = NULL;
    for (size_t i = 0; i < s->nroutes; i++) {
        const struct http_route *r = &s->routes[i];
        size_t n = strlen(r->path);
        int prefix = r->path[n - 1] == '/';
        int match = prefix ? strncmp(path, r->path, n) == 0 && path[n] != '\0'
                           : strcmp(path, r->path) == 0;
        if (!match)
            continue;
        *same_path = r;
        if (strcmp(method, r->method) == 0)
            return r;
    }
    return NULL;
}

static int is_json(const char *ctype)
{
    if (!ctype)
        return 0;
    size_t n = strlen("application/json");
    return strncasecmp(ctype, "application/json", n) == 0 &&
           (ctype[n] == '\0' || ctype[n] == ';' || ctype[n] == ' ');
}

static int has_body(const char *method)
{
    return strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
           strcmp(method, "PATCH") == 0;
}

/* Runs the checks every route shares, then the route's handler. */
static const char *dispatch(struct http_server *s, struct http_req *req,
                            struct conn_state *st, struct http_resp *resp)
{
    const struct http_route *known = NULL;
    const struct http_route *r = route_find(s, req->method, req->path, &known);
    if (!r) { /* labels come from the table, never from the request: bounded and safe */
        if (known)
            http_resp_error(resp, 405, "method_not_allowed", "method not allowed on this path", NULL);
        else
            http_resp_error(resp, 404, "not_found", "no such resource", NULL);
        return known ? known->name : "unmatched";
    }
    if (st->too_big)
        http_resp_error(resp, 413, "payload_too_large", "body exceeds 65536 bytes", NULL);
    else if (has_body(req->method) && !is_json(http_req_header(req, "Content-Type")))
        http_resp_error(resp, 415, "unsupported_media_type",
                        "Content-Type must be application/json", NULL);
    else {
        req->param = req->path + strlen(r->path);
        r->fn(req, resp, s->ctx);
    }
    return r->name;
}

static enum MHD_Result send_resp(struct MHD_Connection *conn, struct http_resp *resp)
{
    char *text = resp->text_owned;
    const char *ctype = "text/plain; version=0.0.4; charset=utf-8";
    if (!text) {
        text = resp->body ? json_dumps(resp->body, JSON_COMPACT) : xstrdup("{}");
        ctype = "application/json";
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), text,
                                                             MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(r, "Content-Type", ctype);
    if (resp->location)
        MHD_add_response_header(r, "Location", resp->location);
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)resp->status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result finish(struct http_server *s, struct MHD_Connection *conn,
                              const char *url, const char *method, struct conn_state *st)
{
    struct http_req req = {.method = method, .path = url, .body = st->body.data,
                           .body_len = st->body.len, .conn = conn};
    struct http_resp resp = {.status = 500};
    const char *route = dispatch(s, &req, st, &resp);
    enum MHD_Result ret = send_resp(conn, &resp);
    char labels[256];
    snprintf(labels, sizeof labels, "route=\"%s\",code=\"%d\"", route, resp.status);
    metric_add(m_requests, labels, 1);
    snprintf(labels, sizeof labels, "route=\"%s\"", route);
    metric_observe(m_duration, labels, mono_s() - st->t0);
    json_decref(resp.body);
    free(resp.location);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **con_cls)
{
    (void)version;
    struct conn_state *st = *con_cls;
    if (!st) {
        atomic_fetch_add(&((struct http_server *)cls)->inflight, 1);
        st = xcalloc(1, sizeof *st);
        buf_init(&st->body);
        st->t0 = mono_s();
        const char *clen = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        st->too_big = clen && strtoull(clen, NULL, 10) > HTTP_MAX_BODY;
        *con_cls = st;
        return MHD_YES;
    }
    if (*upload_size) {
        if (st->body.len + *upload_size > HTTP_MAX_BODY)
            st->too_big = 1;
        else if (!st->too_big)
            buf_append(&st->body, upload_data, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }
    return finish(cls, conn, url, method, st);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode code)
{
    (void)conn, (void)code;
    struct conn_state *st = *con_cls;
    if (st) {
        buf_cleanup(&st->body);
        free(st);
        *con_cls = NULL;
        atomic_fetch_sub(&((struct http_server *)cls)->inflight, 1);
    }
}

enum err http_start(int port, int threads, const struct http_route *routes, size_t nroutes,
                    void *ctx, struct http_server **out)
{
    m_requests = metrics_register("http_requests_total", "HTTP requests by route and status code.",
                                  METRIC_COUNTER, NULL, 0);
    m_duration = metrics_register("http_request_duration_seconds", "HTTP request latency.",
                                  METRIC_HISTOGRAM, metrics_latency_buckets,
                                  metrics_latency_nbuckets);
    struct http_server *s = xcalloc(1, sizeof *s);
    s->routes = routes;
    s->nroutes = nroutes;
    s->ctx = ctx;
    s->daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC | MHD_USE_TURBO, (uint16_t)port, NULL,
        NULL, on_request, s, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)threads,
        MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u, MHD_OPTION_END);
    if (!s->daemon) {
        free(s);
        return ERR_IO;
    }
    *out = s;
    return ERR_OK;
}

void http_stop(struct http_server *s)
{
    if (!s)
        return;
    MHD_socket lsock = MHD_quiesce_daemon(s->daemon); /* no new connections */
    if (lsock != MHD_INVALID_SOCKET)
        close(lsock);
    /* MHD_stop_daemon closes connections without sending queued replies:
     * first let the requests in flight be answered (bounded, within the
     * 10 s a stop may take). */
    for (int64_t end = mono_ms() + STOP_GRACE_MS; atomic_load(&s->inflight) > 0 && mono_ms() < end;)
        sleep_ms(10);
    MHD_stop_daemon(s->daemon);
    free(s);
}
