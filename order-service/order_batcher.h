/* order_batcher.h - application-level group commit for new orders.
 *
 * Request handlers hand their order to the batcher and return; committer
 * threads take every order queued meanwhile (up to a bound) and write them
 * with ONE statement and ONE commit (order_store_create). Every answer is
 * still given after its own order is durable. The committers write one
 * batch at a time (another one starts beside it only when the queue holds a
 * full batch or the write has taken 20 ms). A batch the database refuses
 * is retried order by order, so one bad order never fails the others.
 * Each batch is one transaction whose id is read first: a commit whose
 * connection is lost is settled (db_commit), never guessed. Deadlocks and
 * serialization failures are retried a few times after a short jittered
 * pause; batches are sorted by Idempotency-Key so two cannot cross. */
#ifndef ORDER_BATCHER_H
#define ORDER_BATCHER_H

#include "order_store.h"

#include <stdint.h>

struct batcher;

/* Starts `workers` committer threads, each with its own connection to url.
 * An order that no committer took within wait_ms is answered unavailable. */
void batcher_start(const char *url, int workers, int64_t wait_ms, struct batcher **out);
/* Writes what is queued, stops the threads, frees. NULL is a no-op. */
void batcher_stop(struct batcher *b);

/* Called once per order, on a committer's (or the janitor's) thread, after
 * it was committed or refused; res as order_store_create's (its doc is the
 * callee's). */
typedef void (*batcher_done_fn)(void *arg, struct order_result *res);

/* Queues o (which must live until done is called) and returns at once. */
void batcher_submit(struct batcher *b, const struct order_new *o, batcher_done_fn done,
                    void *arg);

#endif
