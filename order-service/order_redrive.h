/* order_redrive.h - the re-drive sweep: orders still PENDING long after
 * their OrderCreated was published get it published again.
 *
 * JetStream may lose what it had acknowledged (a server restarted on an
 * empty store, a message past the stream's max age while a consumer was
 * down). Re-sending keeps the event id, so a receiver that has it already
 * ignores it — and answers again with its own stored reply. */
#ifndef ORDER_REDRIVE_H
#define ORDER_REDRIVE_H

#include "config.h"
#include "outbox.h"

struct redrive;

/* Starts the sweep thread (every REDRIVE_AFTER / 2, at most every 30 s). */
void redrive_start(const struct config *cfg, struct relay *relay, struct redrive **out);
/* Stops and frees. NULL is a no-op. */
void redrive_stop(struct redrive *r);

#endif
