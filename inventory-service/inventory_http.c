/* inventory_http.c - HTTP handlers of the inventory service. Owns request
 * checks and status codes; the SQL is inventory_store.c. */
#include "inventory_http.h"
#include "event.h"
#include "inventory_store.h"
#include "service.h"
#include "util.h"

#include <stdint.h>

static int sku_ok(const struct http_req *req, struct http_resp *resp)
{
    if (event_sku_valid(req->param))
        return 1;
    http_resp_error(resp, 400, "validation_failed",
                    "sku must be 1-64 characters of A-Z a-z 0-9 . _ -", "sku");
    return 0;
}

/* The largest integer a JSON client keeps exactly (2^53 - 1). */
#define AVAILABLE_MAX 9007199254740991LL

/* The value of "available" if it is an integer from 0 to AVAILABLE_MAX. */
static int available_of(const json_t *o, int64_t *out)
{
    const json_t *a = json_object_get(o, "available");
    if (!json_is_integer(a) || json_integer_value(a) < 0 || json_integer_value(a) > AVAILABLE_MAX)
        return 0;
    *out = (int64_t)json_integer_value(a);
    return 1;
}

/* {"available": N}, N an integer from 0 to AVAILABLE_MAX; a number beyond
 * 64 bits loads as null (json_load_body), so it is out of range too. */
static int parse_available(const struct http_req *req, struct http_resp *resp, int64_t *out)
{
    struct field_error fe = {"", ""};
    json_t *o = NULL;
    enum err e = event_load_object(req->body, req->body_len, &o, &fe);
    int ok = o && available_of(o, out);
    if (!ok && o)
        http_resp_bad_body(resp, ERR_VALIDATION,
                           "available must be an integer from 0 to 9007199254740991", "available");
    else if (!ok)
        http_resp_bad_body(resp, e, fe.message, NULL);
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
    int64_t available = 0;
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
    {"PUT", "/inventory/", "/inventory/{sku}", put_stock, 0, NULL},
    {"GET", "/inventory/", "/inventory/{sku}", get_stock, 0, NULL},
};
const size_t inventory_nroutes = ARRAY_LEN(inventory_routes);
