/* inventory_consumer.h - the inbox handler that reserves stock for each
 * OrderCreated and replies through the outbox. */
#ifndef INVENTORY_CONSUMER_H
#define INVENTORY_CONSUMER_H

#include "inbox.h"

extern const struct inbox_handler inventory_orders_handler;

#endif
