/* main.c - inventory-service: keeps stock, consumes OrderCreated events
 * idempotently, reserves all items or none, and replies through its own
 * outbox. The wiring is common/service.c. */
#include "inventory_consumer.h"
#include "inventory_http.h"
#include "inventory_store.h"
#include "service.h"

/* /admin/orders/resend sends the order's reply (InventoryReserved or
 * InventoryRejected) again */
#define ORDER_EVENTS_SQL \
    "SELECT reply_event_id AS event_id FROM order_decisions WHERE order_id = $1::uuid"

int main(int argc, char **argv)
{
    const struct service_def def = {
        .name = "inventory-service",
        .stream = "INVENTORY",
        .defaults = {"8081", "postgresql://postgres@127.0.0.1:5432/inventory",
                     "migrations/inventory"},
        .routes = inventory_routes,
        .nroutes = inventory_nroutes,
        .stmts = inventory_store_stmts,
        .nstmts = inventory_store_nstmts,
        .inbox = &inventory_orders_handler,
        .admin = {ORDER_EVENTS_SQL, "INVENTORY"},
        .register_metrics = inventory_consumer_register_metrics,
    };
    return service_main(&def, argc, argv);
}
