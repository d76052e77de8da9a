/* config.h - the service configuration, read once from the environment.
 *
 * One table of {variable, parser, default} drives it (config.c). A bad value
 * stops the start: config_load() fills a one-line message naming the variable. */
#ifndef COMMON_CONFIG_H
#define COMMON_CONFIG_H

#include <stdint.h>
#include <stddef.h>
#include "err.h"
#include "log.h"

struct config {
    int port;
    char *database_url;
    char *nats_url;            /* comma-separated list allowed */
    char *migrations_dir;
    enum log_level log_level;
    int js_replicas;
    int64_t nats_ping_interval_ms; /* unanswered pings drop a connection for another server */
    int nats_max_pings_out;
    int http_threads;          /* HTTP worker threads = Postgres pool size */
    int relay_sweep_ms;        /* compensator period */
    int relay_batch;
    int relay_max_attempts;    /* permanent rejections before a row is dead */
    int64_t outbox_retention_ms;
    int64_t processed_retention_ms;
    int64_t stream_max_age_ms; /* must stay below processed retention */
    int64_t stream_duplicate_window_ms; /* JetStream's Nats-Msg-Id window; <= max age */
    int consumer_batch;
    int consumer_workers; /* batches applied at once, each on its own connection */
    int64_t redrive_after_ms;  /* order-service: re-send OrderCreated of orders PENDING this long */
    int64_t db_request_timeout_ms; /* statement + lock timeout serving a request (then 503) */
    int64_t db_work_timeout_ms;    /* the same for relay, consumer, retention */
    int64_t db_idle_tx_timeout_ms; /* idle_in_transaction_session_timeout */
    int64_t db_tcp_timeout_ms;     /* tcp_user_timeout; keepalives within it */
    int http_max_connections;      /* in total (also bounded by the fd limit) */
    int http_max_per_ip;           /* per client address */
    int64_t http_request_timeout_ms; /* to receive a whole request, and to answer it */
    char *failpoints;          /* test-only crash points, see failpoint.h */
    char *admin_token;         /* "" = the admin API is disabled (404) */
    int admin_port;            /* 0 = the admin API is on PORT */
    int64_t reconcile_every_ms;  /* period of the reconciliation check */
    int64_t reconcile_window_ms; /* how far back it looks (capped by OUTBOX_RETENTION) */
    int reconcile_scan;          /* stream sequences it reads per side, at most */
    char *nats_tls_ca;           /* CA file for tls:// servers; "" = the system's (config_tls_ca) */
};

/* The CA file a tls:// NATS server is verified with: NATS_TLS_CA, else the
 * system's bundle. */
const char *config_tls_ca(const struct config *c);

/* Per-service defaults for the variables whose default differs. */
struct config_defaults {
    const char *port;
    const char *database_url;
    const char *migrations_dir;
};

/* Reads every variable into *out (strings are heap copies owned by *out).
 * Returns ERR_OK, or ERR_CONFIG with a one-line message in msg. */
enum err config_load(const struct config_defaults *d, struct config *out,
                     char *msg, size_t msglen);
void config_cleanup(struct config *c);

/* Duration: "250ms", "30s", "5m", "1h", "7d" or bare seconds. Returns 0 or -1. */
int config_parse_duration_ms(const char *s, int64_t *out);

#endif
