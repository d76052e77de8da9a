/* service.h - what both services share around their own routes and
 * handlers: configuration, logging, migrations, the HTTP server with
 * /healthz /readyz /metrics, the Postgres pool, the broker, the outbox
 * relay, the inbox consumer, the retention thread, and SIGTERM handling.
 *
 * A service is a `struct service_def`; main() is one service_main() call. */
#ifndef COMMON_SERVICE_H
#define COMMON_SERVICE_H

#include <stdatomic.h>
#include "admin.h"
#include "broker.h"
#include "config.h"
#include "db.h"
#include "http.h"
#include "inbox.h"
#include "outbox.h"
#include "reconcile.h"
#include "retention.h"
#include "ready.h"

struct service;

struct service_def {
    const char *name;
    const char *stream;                /* the JetStream stream its relay writes */
    struct config_defaults defaults;
    const struct http_route *routes;   /* the service's own routes */
    size_t nroutes;
    const struct db_stmt *stmts;       /* prepared on every pool connection */
    size_t nstmts;
    const struct inbox_handler *inbox; /* ctx and after_commit are set by service.c */
    struct admin_def admin;            /* the per-service part of /admin/ */
    void (*register_metrics)(void);
    /* The service's own parts. app_start: once the schema is there, before
     * NATS answers (requests are served from then on); app_connected: once
     * the first NATS connection is made and the relay runs; app_stop: after
     * the last request was answered (whichever of the two had run). May be
     * NULL. */
    void (*app_start)(struct service *svc);
    void (*app_connected)(struct service *svc);
    void (*app_stop)(struct service *svc);
};

/* Handed to every route handler and inbox apply() as ctx. */
struct service {
    const struct service_def *def;
    struct config cfg;
    struct db_pool *pool;
    struct broker *broker;
    struct relay *relay;
    struct inbox *inbox;
    struct retention *retention;       /* pruning, on its own thread */
    struct inbox_handler inbox_handler; /* def->inbox with ctx and statements set */
    struct admin *admin;
    struct reconcile *reconcile;
    atomic_int serving;                /* migrated, app_start done: requests are served */
    atomic_int started;                /* serving, connected (svc->broker set), every part started */
    struct ready *ready;               /* /readyz probers */
    struct db *ready_db;               /* the Postgres prober's connection */
    int nats_reopening;                /* the NATS prober's: reopening a closed connection */
    void *app;                         /* the service's own state (app_start) */
};

/* Parses argv (--migrate-only), runs the service until SIGTERM/SIGINT and
 * returns the process exit code. */
int service_main(const struct service_def *def, int argc, char **argv);

/* For handlers: 1, with a 503 `unavailable` reply set, while migrations
 * have not run yet (nothing can be served before). NATS is not waited for:
 * orders are taken while it is down or silent, as the outbox is for. */
int service_starting(struct service *svc, struct http_resp *resp);
/* Wakes the relay for outbox rows just committed. Before the relay runs (NATS
 * not reached yet) it does nothing: the relay's first pass takes them. */
void service_relay_notify(struct service *svc);
/* For handlers: a pooled connection, or NULL with a 503 `unavailable` reply
 * already set when Postgres cannot be reached. Release with service_db_release. */
struct db *service_db_acquire(struct service *svc, struct http_resp *resp);
void service_db_release(struct service *svc, struct db *db);
/* Sets the reply for a database failure: 503 unavailable or 500 internal. */
void service_db_error(struct service *svc, struct db *db, enum err e, struct http_resp *resp);

#endif
