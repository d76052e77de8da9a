/* order_http.h - the order service's routes: POST /orders, GET /orders/<id>. */
#ifndef ORDER_HTTP_H
#define ORDER_HTTP_H

#include "http.h"

extern const struct http_route order_routes[];
extern const size_t order_nroutes;

struct service;

/* Registers orders_created_total. */
void order_http_register_metrics(void);
/* Starts / stops the service's own parts (svc->app): the group-commit
 * batcher behind POST /orders and the re-drive sweep. */
void order_app_start(struct service *svc);
void order_app_stop(struct service *svc);

#endif
