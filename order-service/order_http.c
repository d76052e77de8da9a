/* order_http.c - HTTP handlers of the order service. Owns the mapping of
 * validation and storage outcomes to status codes and error bodies; the
 * rules live in order.c and the SQL in order_store.c. */
#include "order_http.h"
#include "log.h"
#include "metrics.h"
#include "order.h"
#include "order_batcher.h"
#include "order_redrive.h"
#include "order_store.h"
#include "service.h"
#include "trace.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct metric *m_created;

void order_http_register_metrics(void)
{
    m_created = metrics_register("orders_created_total", "Orders accepted (201).",
                                 METRIC_COUNTER, NULL, 0);
    metric_add(m_created, "", 0);
}

static int parse_request(const struct http_req *req, struct http_resp *resp,
                         struct order_request *out, const char **key)
{
    struct field_error fe;
    enum err e = order_request_parse(req->body, req->body_len, out, &fe);
    if (e != ERR_OK) {
        http_resp_bad_body(resp, e, fe.message, fe.field);
        return 0;
    }
    *key = http_req_header(req, "Idempotency-Key");
    if (*key && !order_idempotency_key_valid(*key)) {
        http_resp_error(resp, 400, "validation_failed",
                        "Idempotency-Key must be 1 to 128 printable characters", "Idempotency-Key");
        order_request_cleanup(out);
        return 0;
    }
    return 1;
}

#define COMMITTERS 2 /* committer threads: one writes while the other answers its batch */

struct order_app {
    struct batcher *batcher;
    struct redrive *redrive;
};

/* The intake needs Postgres alone: orders are taken before NATS answers. */
void order_app_start(struct service *svc)
{
    struct order_app *app = xcalloc(1, sizeof *app);
    batcher_start(svc->cfg.database_url, COMMITTERS, svc->cfg.db_request_timeout_ms, &app->batcher);
    svc->app = app;
}

/* The re-drive publishes: it starts with the broker. */
void order_app_connected(struct service *svc)
{
    struct order_app *app = svc->app;
    redrive_start(&svc->cfg, svc->relay, svc->broker, &app->redrive);
}

void order_app_stop(struct service *svc)
{
    struct order_app *app = svc->app;
    batcher_stop(app->batcher);
    redrive_stop(app->redrive);
    free(app);
    svc->app = NULL;
}

/* The order's first line: its ids and its trace (info when sampled). */
static void log_created(const struct order_result *res, const char *traceparent, int sampled)
{
    enum log_level lvl = sampled ? LOG_INFO : LOG_DEBUG;
    if (!log_enabled(lvl))
        return;
    log_with(lvl, json_pack("{s:s, s:s, s:s%}", "order_id",
                            order_result_id(res), "event_id",
                            res->event_id, "trace_id", traceparent + 3, (size_t)32),
             "order accepted");
}

static void reply_created(struct service *svc, json_t *doc, struct http_resp *resp)
{
    resp->location = xasprintf("/orders/%s", json_string_value(json_object_get(doc, "id")));
    http_resp_json(resp, 201, doc);
    metric_add(m_created, "", 1);
    service_relay_notify(svc); /* the OrderCreated row is committed: publish it now */
}

/* An order handed to the batcher, with what its answer needs: from the
 * handler (on the HTTP server's thread) to the batcher's callback. */
struct pending {
    struct service *svc;
    struct http_resp *resp;
    struct http_deferred *deferred;
    struct order_request r;
    char *key;
    char tp[TRACEPARENT_LEN + 1];
    int sampled;
    struct order_new o;
};

/* The COMMIT went out and no answer came in time (a frozen backend, a
 * partition): the order may yet be written, so the 503 says so and where
 * to look, not "cannot be reached", which a client reads as "not written"
 * (a helper's probe: 23 orders so answered, then committed and confirmed). */
static void answer_in_doubt(struct order_result *res, struct http_resp *resp)
{
    const char *id = order_result_id(res);
    log_with(LOG_WARN, json_pack("{s:s?}", "order_id", id),
             "order %s: commit sent, outcome unknown in time: answered 503 with its Location",
             id ? id : "?");
    if (id)
        resp->location = xasprintf("/orders/%s", id);
    http_resp_error(resp, 503, "unavailable",
                    "the database did not confirm the order in time, and it may still be "
                    "written: look it up at Location, or send the request again with the "
                    "same Idempotency-Key", NULL);
    json_decref(res->doc);
    res->doc = NULL;
}

static void answer_created(struct pending *p, struct order_result *res)
{
    struct http_resp *resp = p->resp;
    if (res->e == ERR_OK) {
        log_created(res, p->tp, p->sampled);
        reply_created(p->svc, res->doc, resp);
    }
    else if (res->e == ERR_CONFLICT && res->same)
        http_resp_json(resp, 200, res->doc);
    else if (res->e == ERR_CONFLICT)
        http_resp_error(resp, 409, "idempotency_key_reused",
                        "this Idempotency-Key was used with a different request", NULL);
    else if (res->e == ERR_IN_DOUBT)
        answer_in_doubt(res, resp);
    else if (res->e == ERR_UNAVAILABLE || res->e == ERR_RETRY)
        http_resp_error(resp, 503, "unavailable", "the database cannot be reached; retry later", NULL);
    else {
        log_error("order not written: %s", err_str(res->e));
        http_resp_error(resp, 500, "internal", "internal error", NULL);
    }
}

static void pending_free(struct pending *p)
{
    order_request_cleanup(&p->r);
    free(p->key);
    free(p);
}

/* The batcher's callback: the answer, then the connection resumes. */
static void created(void *arg, struct order_result *res)
{
    struct pending *p = arg;
    struct http_deferred *d = p->deferred;
    answer_created(p, res);
    pending_free(p);
    http_resume(d);
}

/* A quick route: validates on the server's thread, hands the order to the
 * batcher and returns; the batcher's committer answers after the commit. */
static void post_orders(const struct http_req *req, struct http_resp *resp, void *ctx)
{
    struct service *svc = ctx;
    struct pending *p = xcalloc(1, sizeof *p);
    const char *key = NULL;
    if (service_starting(svc, resp) || !parse_request(req, resp, &p->r, &key)) {
        free(p);
        return;
    }
    p->svc = svc;
    p->resp = resp;
    p->key = key ? xstrdup(key) : NULL;
    /* the order's span: a child of the caller's, or the root of a new trace
     * (an invalid header is ignored, never an error) */
    p->sampled = trace_continue(http_req_header(req, "traceparent"), p->tp);
    p->o = (struct order_new){&p->r, p->key, p->tp};
    p->deferred = http_defer(req);
    if (p->deferred) {
        batcher_submit(((struct order_app *)svc->app)->batcher, &p->o, created, p);
        return;
    }
    http_resp_error(resp, 503, "unavailable", "the service is stopping; retry later", NULL);
    pending_free(p);
}

static void get_order(const struct http_req *req, struct http_resp *resp, void *ctx)
{
    struct service *svc = ctx;
    if (!uuid_valid(req->param)) {
        http_resp_error(resp, 400, "invalid_id", "order id must be a UUID", "id");
        return;
    }
    struct db *db = service_db_acquire(svc, resp);
    if (!db)
        return;
    json_t *doc = NULL;
    enum err e = order_store_get(db, req->param, &doc);
    if (e == ERR_OK)
        http_resp_json(resp, 200, doc);
    else if (e == ERR_NOT_FOUND)
        http_resp_error(resp, 404, "not_found", "no order with this id", NULL);
    else
        service_db_error(svc, db, e, resp);
    service_db_release(svc, db);
}

const struct http_route order_routes[] = {
    {"POST", "/orders", "/orders", post_orders, 1, NULL},
    {"GET", "/orders/", "/orders/{id}", get_order, 0, NULL},
};
const size_t order_nroutes = ARRAY_LEN(order_routes);
