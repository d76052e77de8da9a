/* order_redrive.h - the re-drive sweep: orders still PENDING long after
 * they were created get their OrderCreated published again, rebuilt from
 * the order (same event id) whether or not its outbox row is still there.
 * Every PENDING order is reached: the sweep pages through them all.
 *
 * JetStream may lose what it had acknowledged (a server restarted on an
 * empty store, a message past the stream's max age while a consumer was
 * down). Re-sending keeps the event id, so a receiver that has it already
 * ignores it — and answers again with its own stored reply. */
#ifndef ORDER_REDRIVE_H
#define ORDER_REDRIVE_H

#include "broker.h"
#include "config.h"
#include "outbox.h"

struct redrive;

/* Starts the sweep thread (every REDRIVE_AFTER / 2, at most every 30 s,
 * at most 5,000 orders looked at per pass; an order is re-sent at most once
 * per REDRIVE_AFTER). Not an order whose events wait in a consumer that is
 * behind (down, or catching up): asked of the broker b before each pass. */
void redrive_start(const struct config *cfg, struct relay *relay, struct broker *b,
                   struct redrive **out);
/* Stops and frees. NULL is a no-op. */
void redrive_stop(struct redrive *r);

#endif
