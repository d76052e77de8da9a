/* service.c - the process skeleton shared by both services: start-up order,
 * the common routes, migrations with retry, and an orderly shutdown.
 * Owns the process lifecycle; not any route's or message's meaning. */
#include "service.h"
#include "failpoint.h"
#include "log.h"
#include "metrics.h"
#include "migrate.h"
#include "ready.h"
#include "retention.h"
#include "util.h"
#include "waker.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MIGRATE_ONLY_DEADLINE_MS 60000
#define MIGRATE_RETRY_MS 1000
#define STOP_DB_CUT_MS 4000 /* SIGTERM: database waits end by then, replies go out, exit < 10 s */
#define STOP_ACK_GRACE_MS 1000 /* SIGTERM: acks of a batch in flight are waited for this long */
#define STOP_SLOW_MS 7000 /* a stop still going then says where it is (the bound: 10 s) */
/* A stop still going then ends the process where it is: the contract's
 * 10 s, less a second for a busy machine to end it. nats.c 3.4.1 holds a
 * connection's lock while it tries each server in turn, 2 s each, and a
 * stop that needs the lock (an unsubscribe, a close) waits for it: with
 * every node of a cluster frozen, inventory-service took 10.8 and 11.3 s
 * (a helper's probe). Ending there is as safe as a kill -9, which nothing
 * may break: what the stop had not finished is done again after a restart. */
#define STOP_FORCE_MS 9000
#define CONTRACT_DUPLICATE_WINDOW_MS 120000 /* the streams' floor in the contract; shorter is for tests */

static void on_healthz(const struct http_req *req, struct http_resp *resp, void *ctx)
{
    (void)req, (void)ctx;
    http_resp_json(resp, 200, json_pack("{s:s}", "status", "ok"));
}

/* A real round trip on the prober's own connection, within the request bounds. */
static int probe_postgres(void *ctx, char *why, size_t n)
{
    struct service *svc = ctx;
    if (!atomic_load(&svc->serving)) {
        snprintf(why, n, "the migrations have not run yet");
        return 0;
    }
    if (!svc->ready_db) {
        db_new(svc->cfg.database_url, "ready", NULL, 0, &svc->ready_db);
        db_set_kind(svc->ready_db, DB_REQUEST);
    }
    if (db_exec_sql(svc->ready_db, "SELECT 1") == ERR_OK)
        return 1;
    snprintf(why, n, "%s", db_errmsg(svc->ready_db));
    return 0;
}

/* The first NATS connection, made on a thread of its own: nats.c tries
 * each server once before it goes on in the background, up to its connect
 * timeout each when a server takes the socket and says nothing. Static,
 * with its own copies of the settings' strings: one abandoned at a stop
 * stays valid (and reachable, not a leak) while its thread ends. */
static struct connecting {
    struct broker_settings set;
    char *urls, *tls_ca;
    pthread_t thread;
    int started;             /* thread running, not joined (main thread's) */
    struct broker *broker;
    enum err e;
    char msg[256];
    atomic_int done;
} connecting;

/* The broker the readiness probe asks: the service's once started, else the
 * first connection's once it is made. The migrations wait for Postgres
 * meanwhile, and /readyz then tells NATS as it is: it said "down" for as
 * long as Postgres held the start (a helper's probe). NULL: none yet. */
static struct broker *probed_broker(const struct service *svc)
{
    if (atomic_load(&svc->started)) /* svc->broker is set before it */
        return svc->broker;
    return atomic_load(&connecting.done) && connecting.e == ERR_OK ? connecting.broker : NULL;
}

/* One JetStream round trip on the stream this service writes; also what
 * moves the broker off a node where JetStream stopped answering. */
static int probe_nats(void *ctx, char *why, size_t n)
{
    struct service *svc = ctx;
    struct broker *b = probed_broker(svc);
    if (!b) {
        snprintf(why, n, "no connection made yet");
        return 0;
    }
    int recycled = BROKER_KEPT;
    enum err e = broker_probe(b, &recycled, why, n);
    if (recycled == BROKER_LEFT_SILENT)
        log_warn("nats: JetStream did not answer %d times in a row: connecting to another "
                 "server (%s)", BROKER_RECYCLE_AFTER, why);
    else if (recycled == BROKER_REOPENED && !svc->nats_reopening)
        log_warn("nats: the client library gave the connection up (closed before the server "
                 "spoke, or credentials refused): connecting again, about every second");
    svc->nats_reopening = recycled == BROKER_REOPENED;
    return e == ERR_OK;
}

/* What /readyz reports; a new dependency is one more row. */
static const struct ready_check ready_checks[] = {
    {"postgres", probe_postgres},
    {"nats", probe_nats},
};

static void on_readyz(const struct http_req *req, struct http_resp *resp, void *ctx)
{
    (void)req;
    struct service *svc = ctx;
    json_t *body = NULL;
    int ok = ready_report(svc->ready, &body); /* started before the server */
    http_resp_json(resp, ok ? 200 : 503, body);
}

static void on_metrics(const struct http_req *req, struct http_resp *resp, void *ctx)
{
    (void)req, (void)ctx;
    struct buf b;
    buf_init(&b);
    metrics_render(&b);
    resp->status = 200;
    resp->text_owned = b.data; /* the server frees it */
}

static const struct http_route common_routes[] = {
    /* quick: answered on the server's own threads, never behind a blocked worker */
    {"GET", "/healthz", "/healthz", on_healthz, 1, NULL},
    {"GET", "/readyz", "/readyz", on_readyz, 1, NULL},
    {"GET", "/metrics", "/metrics", on_metrics, 1, NULL},
};

int service_starting(struct service *svc, struct http_resp *resp)
{
    if (atomic_load(&svc->serving))
        return 0;
    http_resp_error(resp, 503, "unavailable",
                    "the service is starting: its database schema is not ready yet; retry later",
                    NULL);
    return 1;
}

void service_relay_notify(struct service *svc)
{
    if (atomic_load(&svc->started)) /* svc->relay is set before it */
        relay_notify(svc->relay);
}

struct db *service_db_acquire(struct service *svc, struct http_resp *resp)
{
    if (service_starting(svc, resp))
        return NULL;
    struct db *db = db_pool_acquire(svc->pool);
    if (db && db_connect(db) == ERR_OK)
        return db;
    if (db)
        db_pool_release(svc->pool, db);
    http_resp_error(resp, 503, "unavailable", "the database cannot be reached; retry later", NULL);
    return NULL;
}

void service_db_release(struct service *svc, struct db *db)
{
    if (db)
        db_pool_release(svc->pool, db);
}

void service_db_error(struct service *svc, struct db *db, enum err e, struct http_resp *resp)
{
    (void)svc;
    if (e == ERR_UNAVAILABLE || e == ERR_RETRY) {
        http_resp_error(resp, 503, "unavailable", "the database cannot be reached; retry later", NULL);
        return;
    }
    log_error("database: %s", db_errmsg(db));
    http_resp_error(resp, 500, "internal", "internal error", NULL);
}

/* SIGTERM, SIGINT and SIGHUP (a closed terminal: the configuration is read
 * at start only, there is nothing to reload) are taken by a thread of their
 * own from the start, so
 * that a stop ends whatever the process is waiting for at that moment: from
 * then on no wait on Postgres outlasts STOP_DB_CUT_MS (migrations on a frozen
 * server included), and the waits below return. */
static struct waker stopper;

static void *signal_main(void *arg)
{
    sigset_t *set = arg;
    int sig = 0;
    while (sigwait(set, &sig) != 0)
        ;
    db_cut_at(mono_ms() + STOP_DB_CUT_MS); /* whatever Postgres does, no wait outlasts this */
    waker_stop(&stopper);
    return NULL;
}

static void catch_stop_signals(void)
{
    static sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* inherited by every thread started later */
    signal(SIGPIPE, SIG_IGN);
    pthread_t t;
    waker_thread_start(&stopper, &t, "signals", signal_main, &set);
    pthread_detach(t);
}

/* Waits up to ms (forever if < 0); 1 if a stop signal came. */
static int wait_signal(int64_t ms)
{
    if (ms >= 0)
        return !waker_wait(&stopper, ms); /* 0 once stopped */
    while (waker_wait(&stopper, 60000))
        ;
    return 1;
}

/* Applies migrations, retrying while Postgres is unreachable. 0 on success,
 * 1 on a bad migration, 2 when stopped or out of time. */
static int migrate(const struct config *cfg, int64_t deadline_ms)
{
    char msg[512];
    for (enum err said = ERR_OK;;) { /* the kind of wait last logged */
        int applied = 0;
        enum err e = migrate_run(cfg->database_url, cfg->migrations_dir, &applied, msg, sizeof msg);
        if (e == ERR_OK) {
            log_info("migrations: %d applied, schema up to date", applied);
            return 0;
        }
        if (e != ERR_UNAVAILABLE && e != ERR_RETRY) { /* RETRY: e.g. a lock timeout */
            log_error("migrations: %s", msg);
            return 1;
        }
        if (e != said && e == ERR_RETRY) /* logged again when the kind changes */
            log_warn("migrations: waiting: %s", msg);
        else if (e != said)
            log_warn("migrations: postgres unreachable, retrying: %s", msg);
        said = e;
        if (deadline_ms && mono_ms() > deadline_ms)
            return 2;
        if (wait_signal(MIGRATE_RETRY_MS))
            return 2;
    }
}

static void after_commit(void *ctx)
{
    struct service *svc = ctx;
    service_relay_notify(svc);
}

/* The HTTP servers: PORT, and ADMIN_PORT for /admin/ when it is set. */
static enum err start_http(struct service *svc, const struct http_route *routes, size_t nroutes,
                           struct http_server **http, struct http_server **admin_http)
{
    const struct config *c = &svc->cfg;
    struct http_limits lim = {c->http_threads, c->http_max_connections, c->http_max_per_ip,
                              c->http_request_timeout_ms};
    /* before the server's threads exist: /readyz reads svc->ready unlocked */
    ready_start(ready_checks, ARRAY_LEN(ready_checks), svc, &svc->ready);
    if (http_start(c->port, &lim, routes, nroutes, svc, http) != ERR_OK) {
        log_error("PORT: cannot listen on port %d", c->port);
        return ERR_IO;
    }
    log_info("listening on port %d", c->port);
    if (c->admin_port == 0)
        return ERR_OK;
    struct http_limits alim = {2, 64, 16, c->http_request_timeout_ms};
    if (http_start(c->admin_port, &alim, admin_routes, admin_nroutes, svc, admin_http) != ERR_OK) {
        log_error("ADMIN_PORT: cannot listen on port %d", c->admin_port);
        return ERR_IO;
    }
    log_info("admin API listening on port %d", c->admin_port);
    return ERR_OK;
}

static void *connect_main(void *arg)
{
    struct connecting *c = arg;
    c->e = broker_new(&c->set, &c->broker, c->msg, sizeof c->msg);
    atomic_store(&c->done, 1);
    waker_notify(&stopper); /* the main thread waits there for this or a signal */
    return NULL;
}

/* Starts making the first connection (connect_wait takes it). */
static void connect_start(struct service *svc)
{
    const struct config *c = &svc->cfg;
    connecting.urls = xstrdup(c->nats_url);
    connecting.tls_ca = xstrdup(config_tls_ca(c));
    connecting.set = (struct broker_settings){connecting.urls, svc->def->name, svc->def->stream,
                                              c->js_replicas, c->stream_max_age_ms,
                                              c->stream_duplicate_window_ms,
                                              c->nats_ping_interval_ms, c->nats_max_pings_out,
                                              connecting.tls_ca, c->processed_retention_ms};
    thread_start(&connecting.thread, "nats-connect", connect_main, &connecting);
    connecting.started = 1;
}

/* svc->broker, once the first connection is made or goes on retrying in the
 * background. ERR_STOPPED when a stop signal came first: that connection is
 * left to its thread, not waited for (a helper's probe: with three servers
 * frozen, /healthz was not served for 6 s and SIGTERM took 12 s). */
static enum err connect_wait(struct service *svc)
{
    while (!atomic_load(&connecting.done))
        if (wait_signal(1000))
            return ERR_STOPPED; /* connect_leave() lets the thread go */
    pthread_join(connecting.thread, NULL);
    connecting.started = 0;
    if (connecting.e != ERR_OK) {
        log_error("NATS_URL: %s", connecting.msg);
        return ERR_BROKER;
    }
    svc->broker = connecting.broker;
    return ERR_OK;
}

/* At a stop before connect_wait took the connection: not waited for. */
static void connect_leave(void)
{
    if (connecting.started)
        pthread_detach(connecting.thread);
    connecting.started = 0;
}

/* HTTP first, so that /healthz answers from the start whatever NATS does;
 * the first NATS connection is made meanwhile (connect_wait). */
static enum err start_parts(struct service *svc, const struct http_route *routes, size_t nroutes,
                            struct http_server **http, struct http_server **admin_http)
{
    const struct config *c = &svc->cfg;
    db_pool_new(c->database_url, "http", svc->def->stmts, svc->def->nstmts, c->http_threads, &svc->pool);
    if (svc->def->inbox) {
        struct inbox_handler *ih = &svc->inbox_handler;
        *ih = *svc->def->inbox;
        ih->stmts = svc->def->stmts; /* the handler runs the service's own statements */
        ih->nstmts = svc->def->nstmts;
        ih->ctx = svc;
        ih->after_commit = ih->writes_outbox ? after_commit : NULL;
        inbox_register_metrics(ih);
    }
    relay_register_metrics();
    admin_new(c, &svc->def->admin, svc->def->stmts, svc->def->nstmts, &svc->admin);
    enum err e = start_http(svc, routes, nroutes, http, admin_http);
    if (e == ERR_OK)
        connect_start(svc);
    return e;
}

/* Common routes, the service's own, and /admin/ unless it has its own port. */
static struct http_route *route_table(const struct service *svc, size_t *n)
{
    size_t nadmin = svc->cfg.admin_port ? 0 : admin_nroutes;
    *n = ARRAY_LEN(common_routes) + svc->def->nroutes + nadmin;
    struct http_route *routes = xcalloc(*n, sizeof *routes);
    memcpy(routes, common_routes, sizeof common_routes);
    memcpy(routes + ARRAY_LEN(common_routes), svc->def->routes,
           svc->def->nroutes * sizeof *routes);
    memcpy(routes + ARRAY_LEN(common_routes) + svc->def->nroutes, admin_routes,
           nadmin * sizeof *routes);
    return routes;
}

/* A stop's watchdog: its own thread, and the step the stop is at. */
static struct {
    struct waker waker;
    pthread_t thread;
    _Atomic(const char *) step;
    atomic_int code; /* the exit code run() has decided on */
} stop_watch;

static void stop_at(const char *step)
{
    atomic_store(&stop_watch.step, step);
}

/* A stop that takes too long says at which step, once, and one that takes
 * longer still ends the process there, with the code the stop would have
 * ended with (0 after a signal; 1 after a start that failed). */
static void *stop_watch_main(void *arg)
{
    (void)arg;
    if (!waker_wait(&stop_watch.waker, STOP_SLOW_MS))
        return NULL; /* the stop ended first */
    log_warn("stopping: still in %s after %d s", atomic_load(&stop_watch.step),
             STOP_SLOW_MS / 1000);
    if (!waker_wait(&stop_watch.waker, STOP_FORCE_MS - STOP_SLOW_MS))
        return NULL;
    log_error("stopping: still in %s after %d s: exiting now, inside the 10 s a stop may take; "
              "what it had not finished is done again after a restart, as after a kill",
              atomic_load(&stop_watch.step), STOP_FORCE_MS / 1000);
    _exit(atomic_load(&stop_watch.code));
}

static void stop_watch_start(int code)
{
    atomic_store(&stop_watch.code, code);
    stop_at("the start of the stop");
    waker_thread_start(&stop_watch.waker, &stop_watch.thread, "stop-watch", stop_watch_main,
                       NULL);
}

static int run(struct service *svc)
{
    size_t nroutes = 0;
    struct http_route *routes = route_table(svc, &nroutes);
    struct http_server *http = NULL, *admin_http = NULL;
    int code = 1;
    if (start_parts(svc, routes, nroutes, &http, &admin_http) != ERR_OK)
        goto out;
    code = migrate(&svc->cfg, 0); /* while the first NATS connection is made */
    if (code != 0) {
        code = code == 2 ? 0 : 1; /* stopped by a signal while waiting: a clean exit */
        goto out;
    }
    if (svc->def->app_start)
        svc->def->app_start(svc);
    atomic_store(&svc->serving, 1); /* publishes the app to request threads, and to the
                                       Postgres prober that the schema is there */
    enum err connected = connect_wait(svc);
    if (connected != ERR_OK) {
        code = connected == ERR_STOPPED ? 0 : 1; /* a stop signal while connecting: clean */
        goto out;
    }
    relay_start(&svc->cfg, svc->broker, &svc->relay);
    retention_start(&svc->cfg, &svc->retention);
    if (svc->def->inbox)
        inbox_start(&svc->cfg, svc->broker, &svc->inbox_handler, &svc->inbox);
    struct reconcile_streams rs = {svc->def->admin.stream,
                                   svc->def->inbox ? &svc->inbox_handler : NULL};
    reconcile_start(&svc->cfg, svc->broker, &rs, &svc->reconcile);
    if (svc->def->app_connected)
        svc->def->app_connected(svc);
    atomic_store(&svc->started, 1); /* publishes the relay and the rest to request threads */
    ready_recheck(svc->ready);            /* ready now, not a probe period later */
    wait_signal(-1);
    log_info("stopping: finishing in-flight requests and batches");
out:
    stop_watch_start(code);
    connect_leave();
    broker_stopping(svc->broker, STOP_ACK_GRACE_MS);
    inbox_request_stop(svc->inbox); /* both loops finish their batch meanwhile */
    relay_request_stop(svc->relay);
    struct http_server *const servers[] = {http, admin_http};
    stop_at("http_stop");
    http_stop(servers, ARRAY_LEN(servers)); /* no new requests; in-flight ones are answered */
    stop_at("app_stop");
    if (svc->def->app_stop && atomic_load(&svc->serving))
        svc->def->app_stop(svc);
    stop_at("inbox_stop");
    if (failpoint_on(FP_STOP_HANG))
        for (;;)
            sleep_ms(1000); /* the test of STOP_FORCE_MS */
    inbox_stop(svc->inbox);
    stop_at("reconcile_stop");
    reconcile_stop(svc->reconcile);
    stop_at("relay_stop");
    relay_stop(svc->relay);
    stop_at("ready_stop");
    ready_stop(svc->ready);
    db_free(svc->ready_db);
    stop_at("retention_stop");
    retention_stop(svc->retention);
    admin_free(svc->admin);
    stop_at("broker_free");
    broker_free(svc->broker);
    stop_at("db_pool_free");
    db_pool_free(svc->pool);
    free(routes);
    waker_thread_stop(&stop_watch.waker, stop_watch.thread); /* the stop is over */
    log_info("stopped");
    return code;
}

int service_main(const struct service_def *def, int argc, char **argv)
{
    static struct service svc;
    char msg[512];
    int migrate_only = argc == 2 && strcmp(argv[1], "--migrate-only") == 0;
    log_init(LOG_INFO, def->name);
    if (argc > 1 && !migrate_only) {
        log_error("unknown argument %s (only --migrate-only is accepted, alone)",
                  argv[argc > 2 && strcmp(argv[1], "--migrate-only") == 0 ? 2 : 1]);
        return 2;
    }
    if (config_load(&def->defaults, &svc.cfg, msg, sizeof msg) != ERR_OK) {
        log_error("%s", msg);
        return 2;
    }
    svc.def = def;
    log_init(svc.cfg.log_level, def->name);
    if (migrate_check_dir(svc.cfg.migrations_dir, msg, sizeof msg) != ERR_OK) {
        log_error("MIGRATIONS_DIR: %s", msg); /* a wrong one stops the start, named */
        config_cleanup(&svc.cfg);
        return 2;
    }
    if (svc.cfg.admin_token && svc.cfg.admin_token[0] && strlen(svc.cfg.admin_token) < 16)
        log_warn("ADMIN_TOKEN: shorter than 16 characters, easy to guess (the admin API can "
                 "requeue and re-send events)");
    if (svc.cfg.stream_duplicate_window_ms < CONTRACT_DUPLICATE_WINDOW_MS)
        log_warn("STREAM_DUPLICATE_WINDOW: %.15gs, under the 2 minutes the streams are meant "
                 "to keep: an event sent again more than that after JetStream stored it is "
                 "stored twice (the consumers still apply it once); for tests",
                 (double)svc.cfg.stream_duplicate_window_ms / 1000);
    struct db_limits dl = {svc.cfg.db_request_timeout_ms, svc.cfg.db_work_timeout_ms,
                           svc.cfg.db_idle_tx_timeout_ms, svc.cfg.db_tcp_timeout_ms};
    db_configure(&dl);
    failpoint_init(svc.cfg.failpoints);
    catch_stop_signals();
    if (def->register_metrics)
        def->register_metrics();
    int code = migrate_only ? migrate(&svc.cfg, mono_ms() + MIGRATE_ONLY_DEADLINE_MS) : run(&svc);
    if (migrate_only && code == 2)
        log_error(waker_stopping(&stopper)
                      ? "migrations: stopped by a signal; run again to apply what is left"
                      : "migrations: gave up waiting for postgres");
    config_cleanup(&svc.cfg);
    return code;
}
