/* order_http.h - the order service's routes: POST /orders, GET /orders/<id>. */
#ifndef ORDER_HTTP_H
#define ORDER_HTTP_H

#include "http.h"

extern const struct http_route order_routes[];
extern const size_t order_nroutes;

struct service;

/* Registers orders_created_total. */
void order_http_register_metrics(void);
/* The service's own parts (svc->app): the group-commit batcher behind
 * POST /orders starts with the schema, the re-drive sweep once NATS is
 * reached; order_app_stop stops whichever started. */
void order_app_start(struct service *svc);
void order_app_connected(struct service *svc);
void order_app_stop(struct service *svc);

#endif
