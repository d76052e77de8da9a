/* inventory_http.h - the inventory service's routes: PUT/GET /inventory/<sku>. */
#ifndef INVENTORY_HTTP_H
#define INVENTORY_HTTP_H

#include "http.h"

extern const struct http_route inventory_routes[];
extern const size_t inventory_nroutes;

#endif
