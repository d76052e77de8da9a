/* admin.h - the operator's API under /admin/ (CONTRACT.md, Operations):
 * bearer-token guard, outbox rows that are dead or failing and their
 * requeue, dead letters and their re-apply, re-sending one order's events.
 *
 * Disabled (404) while ADMIN_TOKEN is unset. Every action is logged with
 * who/what/when and counted in admin_actions_total{action,result}. The
 * routes' ctx is the struct service (service.h); they serve on PORT, or on
 * ADMIN_PORT when it is set. */
#ifndef COMMON_ADMIN_H
#define COMMON_ADMIN_H

#include <stddef.h>
#include "config.h"
#include "db.h"
#include "http.h"

struct admin;

/* What differs per service: which events /admin/orders/resend sends again. */
struct admin_def {
    const char *order_events_sql;      /* their ids (column event_id) for order $1::uuid */
    const char *stream;                /* the stream its outbox relay writes (reconcile) */
};

/* Creates the admin state: one Postgres connection (lazy) prepared with the
 * admin's (the resend's built from def), the inbox's and the service's
 * statements (svc_stmts must outlive it). An admin request is bounded as a
 * public one is: its statements by DB_REQUEST_TIMEOUT, and so is its wait
 * for the connection while another operator's action holds it. */
void admin_new(const struct config *c, const struct admin_def *def,
               const struct db_stmt *svc_stmts, size_t nsvc, struct admin **out);
/* NULL is a no-op. */
void admin_free(struct admin *a);

/* True when the token presented equals the expected one; the time taken
 * depends only on the expected token's length (pure; for tests). */
int admin_token_equal(const char *given, const char *expected);

extern const struct http_route admin_routes[];
extern const size_t admin_nroutes;

#endif
