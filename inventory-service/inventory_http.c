/* inventory_http.c - HTTP handlers of the inventory service. Owns request
 * checks and status codes; the SQL is inventory_store.c. */
#include "inventory_http.h"
#include "event.h"
#include "inventory_store.h"
#include "service.h"
#include "util.h"

#include <limits.h>

static int sku_ok(const struct http_req *req, struct http_resp *resp)
{
    if (event_sku_valid(req->param))
        return 1;
    http_resp_error(resp, 400, "validation_failed",
                    "sku must be 1-64 characters of A-Z a-z 0-9 . _ -", "sku");
    return 0;
}

/* {"available": N}, N an integer from 0 to INT_MAX. */
static int parse_available(const struct http_req *req, struct http_resp *resp, long *out)
{
    struct field_error fe = {"", ""};
    json_t *o = event_load_object(req->body, req->body_len, &fe);
    if (!o) {
        http_resp_error(resp, 400, "invalid_json", fe.message, NULL);
        return 0;
    }
    const json_t *a = json_object_get(o, "available");
    int ok = json_is_integer(a) && json_integer_value(a) >= 0 && json_integer_value(a) <= INT_MAX;
    if (ok)
        *out = (long)json_integer_value(a);
    else
        http_resp_error(resp, 400, "validation_failed",
                        "available must be an integer from 0 to 2147483647", "available");
    json_decref(o);
    return ok;
}

static void reply(struct service *svc, struct db *db, enum err e, json_t *doc,
                  struct http_resp *resp)
{
    if (e == ERR_OK)
        http_resp_json(resp, 200, doc);
    else if (e == ERR_NOT_FOUND)
        http_resp_error(resp, 404, "not_found", "no stock record for this sku", NULL);
    else
        service_db_error(svc, db, e, resp);
}

static void put_stock(const struct http_req *req, struct http_resp *resp, void *ctx)
{
    struct service *svc = ctx;
    long available = 0;
    if (!sku_ok(req, resp) || !parse_available(req, resp, &available))
        return;
    struct db *db = service_db_acquire(svc, resp);
    if (!db)
        return;
    json_t *doc = NULL;
    enum err e = inventory_store_put(db, req->param, available, &doc);
    reply(svc, db, e, doc, resp);
    service_db_release(svc, db);
}

static void get_stock(const struct http_req *req, struct http_resp *resp, void *ctx)
{
    struct service *svc = ctx;
    if (!sku_ok(req, resp))
        return;
    struct db *db = service_db_acquire(svc, resp);
    if (!db)
        return;
    json_t *doc = NULL;
    enum err e = inventory_store_get(db, req->param, &doc);
    reply(svc, db, e, doc, resp);
    service_db_release(svc, db);
}

const struct http_route inventory_routes[] = {
    {"PUT", "/inventory/", "/inventory/{sku}", put_stock, 0},
    {"GET", "/inventory/", "/inventory/{sku}", get_stock, 0},
};
const size_t inventory_nroutes = ARRAY_LEN(inventory_routes);
