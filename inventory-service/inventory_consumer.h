/* inventory_consumer.h - the inbox handler that reserves stock for each
 * OrderCreated and replies through the outbox. */
#ifndef INVENTORY_CONSUMER_H
#define INVENTORY_CONSUMER_H

#include "inbox.h"

extern const struct inbox_handler inventory_orders_handler;
/* Registers inventory_replies_resent_total (shown at 0 from the start). */
void inventory_consumer_register_metrics(void);

#endif
