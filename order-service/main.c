/* main.c - order-service: takes orders over HTTP, writes each with its
 * OrderCreated event in one transaction, relays the outbox to JetStream, and
 * settles orders from inventory replies. The wiring is common/service.c. */
#include "order_http.h"
#include "order_replies.h"
#include "order_store.h"
#include "service.h"

/* /admin/orders/resend sends the order's OrderCreated again */
#define ORDER_EVENTS_SQL "SELECT event_id FROM orders WHERE id = $1::uuid"

int main(int argc, char **argv)
{
    const struct service_def def = {
        .name = "order-service",
        .stream = "ORDERS",
        .defaults = {"8080", "postgresql://postgres@127.0.0.1:5432/orders", "migrations/order"},
        .routes = order_routes,
        .nroutes = order_nroutes,
        .stmts = order_store_stmts,
        .nstmts = order_store_nstmts,
        .inbox = &order_replies_handler,
        .admin = {ORDER_EVENTS_SQL, "ORDERS"},
        .register_metrics = order_http_register_metrics,
        .app_start = order_app_start,
        .app_connected = order_app_connected,
        .app_stop = order_app_stop,
    };
    return service_main(&def, argc, argv);
}
