/* test_config.c - configuration from the environment: the contract's
 * defaults per service, every variable overriding its default, bad values
 * stopping the start with a message naming the variable, and durations.
 *
 * A checked fixture saves and unsets every variable before each test and
 * restores them after, so the tests neither see nor leave any setting. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "util.h"
#include "suites.h"

static const char *const vars[] = {
    "PORT", "DATABASE_URL", "NATS_URL", "MIGRATIONS_DIR", "LOG_LEVEL", "JS_REPLICAS",
    "HTTP_THREADS", "RELAY_SWEEP_MS", "RELAY_BATCH", "RELAY_MAX_ATTEMPTS", "OUTBOX_RETENTION",
    "PROCESSED_RETENTION", "STREAM_MAX_AGE", "CONSUMER_BATCH", "CONSUMER_WORKERS", "FAILPOINTS",
    "DB_REQUEST_TIMEOUT", "DB_WORK_TIMEOUT", "DB_IDLE_TX_TIMEOUT", "DB_TCP_TIMEOUT",
    "HTTP_MAX_CONNECTIONS", "HTTP_MAX_CONNECTIONS_PER_IP", "HTTP_REQUEST_TIMEOUT",
    "STREAM_DUPLICATE_WINDOW", "REDRIVE_AFTER",
    "ADMIN_TOKEN", "ADMIN_PORT", "RECONCILE_EVERY", "RECONCILE_WINDOW", "RECONCILE_SCAN",
    "NATS_PING_INTERVAL", "NATS_MAX_PINGS_OUT", "NATS_TLS_CA",
};
#define NVARS (sizeof vars / sizeof vars[0])
static char *saved[NVARS];

static void env_clear(void)
{
    for (size_t i = 0; i < NVARS; i++) {
        const char *v = getenv(vars[i]);
        saved[i] = v ? strdup(v) : NULL;
        unsetenv(vars[i]);
    }
}

static void env_restore(void)
{
    for (size_t i = 0; i < NVARS; i++) {
        if (saved[i])
            setenv(vars[i], saved[i], 1);
        else
            unsetenv(vars[i]);
        free(saved[i]);
        saved[i] = NULL;
    }
}

/* The contract's per-service defaults (the services pass these). */
static const struct config_defaults order_defaults = {
    "8080", "postgresql://postgres@127.0.0.1:5432/orders", "migrations/order"};
static const struct config_defaults inventory_defaults = {
    "8081", "postgresql://postgres@127.0.0.1:5432/inventory", "migrations/inventory"};

#define DAY_MS INT64_C(86400000)

static void assert_shared_defaults(const struct config *c)
{
    ck_assert_str_eq(c->nats_url, "nats://127.0.0.1:4222");
    ck_assert_int_eq(c->log_level, LOG_INFO);
    ck_assert_int_eq(c->js_replicas, 1);
    ck_assert_int_eq(c->nats_ping_interval_ms, 2000);
    ck_assert_int_eq(c->nats_max_pings_out, 3);
    ck_assert_int_eq(c->http_threads, 16);
    ck_assert_int_eq(c->relay_sweep_ms, 200);
    ck_assert_int_eq(c->relay_batch, 1024);
    ck_assert_int_eq(c->relay_max_attempts, 10);
    ck_assert_int_eq(c->outbox_retention_ms, 3600000);
    ck_assert_int_eq(c->processed_retention_ms, 7 * DAY_MS);
    ck_assert_int_eq(c->stream_max_age_ms, 3 * DAY_MS);
    ck_assert_int_eq(c->consumer_batch, 512);
    ck_assert_int_eq(c->consumer_workers, 3);
    ck_assert_str_eq(c->failpoints, "");
    ck_assert_int_eq(c->db_request_timeout_ms, 3000);
    ck_assert_int_eq(c->db_work_timeout_ms, 30000);
    ck_assert_int_eq(c->db_idle_tx_timeout_ms, 15000);
    ck_assert_int_eq(c->db_tcp_timeout_ms, 10000);
    ck_assert_int_eq(c->http_max_connections, 1000);
    ck_assert_int_eq(c->http_max_per_ip, 256);
    ck_assert_int_eq(c->http_request_timeout_ms, 10000);
    ck_assert_int_eq(c->redrive_after_ms, 5 * 60000);
}

START_TEST(order_service_defaults)
{
    struct config c;
    char msg[256] = "";
    ck_assert_int_eq(config_load(&order_defaults, &c, msg, sizeof msg), ERR_OK);
    ck_assert_int_eq(c.port, 8080);
    ck_assert_str_eq(c.database_url, "postgresql://postgres@127.0.0.1:5432/orders");
    ck_assert_str_eq(c.migrations_dir, "migrations/order");
    assert_shared_defaults(&c);
    config_cleanup(&c);
}
END_TEST

START_TEST(inventory_service_defaults)
{
    struct config c;
    char msg[256] = "";
    ck_assert_int_eq(config_load(&inventory_defaults, &c, msg, sizeof msg), ERR_OK);
    ck_assert_int_eq(c.port, 8081);
    ck_assert_str_eq(c.database_url, "postgresql://postgres@127.0.0.1:5432/inventory");
    ck_assert_str_eq(c.migrations_dir, "migrations/inventory");
    assert_shared_defaults(&c);
    config_cleanup(&c);
}
END_TEST

/* One variable set to a non-default value, and where it must land. */
enum kind { K_INT, K_I64, K_STR, K_LEVEL };
static const struct override {
    const char *name, *value;
    enum kind kind;
    size_t offset;
    long long want_int;
    const char *want_str;
} overrides[] = {
    {"PORT", "9090", K_INT, offsetof(struct config, port), 9090, NULL},
    {"DATABASE_URL", "postgres://u:p@db:5433/x", K_STR, offsetof(struct config, database_url), 0,
     "postgres://u:p@db:5433/x"},
    {"NATS_URL", "tls://nats.example:4443", K_STR, offsetof(struct config, nats_url), 0,
     "tls://nats.example:4443"},
    {"MIGRATIONS_DIR", "/srv/sql", K_STR, offsetof(struct config, migrations_dir), 0, "/srv/sql"},
    {"LOG_LEVEL", "debug", K_LEVEL, offsetof(struct config, log_level), LOG_DEBUG, NULL},
    {"JS_REPLICAS", "3", K_INT, offsetof(struct config, js_replicas), 3, NULL},
    {"NATS_PING_INTERVAL", "500ms", K_I64, offsetof(struct config, nats_ping_interval_ms), 500,
     NULL},
    {"NATS_MAX_PINGS_OUT", "2", K_INT, offsetof(struct config, nats_max_pings_out), 2, NULL},
    {"HTTP_THREADS", "16", K_INT, offsetof(struct config, http_threads), 16, NULL},
    {"RELAY_SWEEP_MS", "1000", K_INT, offsetof(struct config, relay_sweep_ms), 1000, NULL},
    {"RELAY_BATCH", "50", K_INT, offsetof(struct config, relay_batch), 50, NULL},
    {"RELAY_MAX_ATTEMPTS", "3", K_INT, offsetof(struct config, relay_max_attempts), 3, NULL},
    {"OUTBOX_RETENTION", "30m", K_I64, offsetof(struct config, outbox_retention_ms), 1800000, NULL},
    {"PROCESSED_RETENTION", "30d", K_I64, offsetof(struct config, processed_retention_ms),
     30 * DAY_MS, NULL},
    {"STREAM_MAX_AGE", "1d", K_I64, offsetof(struct config, stream_max_age_ms), DAY_MS, NULL},
    {"STREAM_DUPLICATE_WINDOW", "90s", K_I64, offsetof(struct config, stream_duplicate_window_ms),
     90000, NULL},
    {"CONSUMER_BATCH", "10", K_INT, offsetof(struct config, consumer_batch), 10, NULL},
    {"CONSUMER_WORKERS", "5", K_INT, offsetof(struct config, consumer_workers), 5, NULL},
    {"DB_REQUEST_TIMEOUT", "500ms", K_I64, offsetof(struct config, db_request_timeout_ms), 500, NULL},
    {"DB_WORK_TIMEOUT", "2m", K_I64, offsetof(struct config, db_work_timeout_ms), 120000, NULL},
    {"DB_IDLE_TX_TIMEOUT", "5m", K_I64, offsetof(struct config, db_idle_tx_timeout_ms), 300000, NULL},
    {"DB_TCP_TIMEOUT", "4s", K_I64, offsetof(struct config, db_tcp_timeout_ms), 4000, NULL},
    {"HTTP_MAX_CONNECTIONS", "50", K_INT, offsetof(struct config, http_max_connections), 50, NULL},
    {"HTTP_MAX_CONNECTIONS_PER_IP", "8", K_INT, offsetof(struct config, http_max_per_ip), 8, NULL},
    {"HTTP_REQUEST_TIMEOUT", "30s", K_I64, offsetof(struct config, http_request_timeout_ms), 30000,
     NULL},
    {"ADMIN_PORT", "9091", K_INT, offsetof(struct config, admin_port), 9091, NULL},
    {"ADMIN_PORT", "", K_INT, offsetof(struct config, admin_port), 0, NULL}, /* unset */
    {"FAILPOINTS", "relay_after_ack:3,db_commit_cut", K_STR, offsetof(struct config, failpoints),
     0, "relay_after_ack:3,db_commit_cut"},
};
#define NOVERRIDES ((int)(sizeof overrides / sizeof overrides[0]))

START_TEST(variable_overrides_default)
{
    const struct override *o = &overrides[_i];
    struct config c;
    char msg[256] = "";
    setenv(o->name, o->value, 1);
    ck_assert_msg(config_load(&order_defaults, &c, msg, sizeof msg) == ERR_OK, "%s: %s", o->name,
                  msg);
    const char *field = (const char *)&c + o->offset;
    switch (o->kind) {
    case K_INT:   ck_assert_int_eq(*(const int *)field, o->want_int); break;
    case K_I64:   ck_assert_int_eq(*(const int64_t *)field, o->want_int); break;
    case K_LEVEL: ck_assert_int_eq(*(const enum log_level *)field, o->want_int); break;
    case K_STR:   ck_assert_str_eq(*(char *const *)field, o->want_str); break;
    }
    config_cleanup(&c);
}
END_TEST

/* On a replicated cluster the broker itself may lose what it acknowledged:
 * the re-drive comes sooner unless told otherwise. */
START_TEST(redrive_after_is_shorter_with_replicas)
{
    struct config c;
    char msg[256] = "";
    setenv("JS_REPLICAS", "3", 1);
    ck_assert_int_eq(config_load(&order_defaults, &c, msg, sizeof msg), ERR_OK);
    ck_assert_int_eq(c.redrive_after_ms, 30000);
    config_cleanup(&c);
    setenv("REDRIVE_AFTER", "2m", 1);
    ck_assert_int_eq(config_load(&order_defaults, &c, msg, sizeof msg), ERR_OK);
    ck_assert_int_eq(c.redrive_after_ms, 120000);
    config_cleanup(&c);
}
END_TEST

START_TEST(log_level_accepts_each_contract_level)
{
    static const struct { const char *v; enum log_level want; } levels[] = {
        {"debug", LOG_DEBUG}, {"info", LOG_INFO}, {"warn", LOG_WARN}, {"error", LOG_ERROR}};
    for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++) {
        struct config c;
        char msg[256];
        setenv("LOG_LEVEL", levels[i].v, 1);
        ck_assert_int_eq(config_load(&order_defaults, &c, msg, sizeof msg), ERR_OK);
        ck_assert_int_eq(c.log_level, levels[i].want);
        config_cleanup(&c);
    }
}
END_TEST

START_TEST(nats_url_accepts_comma_separated_cluster)
{
    const char *urls = "nats://n1:4222,nats://n2:4222,tls://n3:4222";
    struct config c;
    char msg[256] = "";
    setenv("NATS_URL", urls, 1);
    ck_assert_msg(config_load(&order_defaults, &c, msg, sizeof msg) == ERR_OK, "%s", msg);
    ck_assert_str_eq(c.nats_url, urls);
    config_cleanup(&c);
}
END_TEST

/* libpq's multi-host URI (failover / HA Postgres) is a valid DATABASE_URL. */
START_TEST(database_url_accepts_libpq_multi_host)
{
    const char *url = "postgresql://db1:5432,db2:5432/orders?target_session_attrs=read-write";
    struct config c;
    char msg[256] = "";
    setenv("DATABASE_URL", url, 1);
    ck_assert_msg(config_load(&order_defaults, &c, msg, sizeof msg) == ERR_OK, "%s", msg);
    ck_assert_str_eq(c.database_url, url);
    config_cleanup(&c);
    /* every value libpq 15 takes for the options it knows the values of */
    const char *const ok[] = {"sslmode=verify-full", "sslmode=disable", "gssencmode=prefer",
                              "channel_binding=require", "target_session_attrs=prefer-standby",
                              "connect_timeout=5", "keepalives=0", "keepalives_idle=30%20",
                              "keepalives_interval=32767", "keepalives_count=127",
                              "tcp_user_timeout=10000"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char *u = xasprintf("postgresql://db/orders?%s", ok[i]);
        setenv("DATABASE_URL", u, 1);
        ck_assert_msg(config_load(&order_defaults, &c, msg, sizeof msg) == ERR_OK, "%s: %s", u, msg);
        config_cleanup(&c);
        free(u);
    }
}
END_TEST

/* NATS server URLs as nats.c takes them: credentials, IPv6, no port, a list. */
START_TEST(nats_url_accepts_what_nats_c_takes)
{
    static const char *const good[] = {
        "nats://user:secret@nats-1:4222", "tls://[::1]:4443", "nats://nats-1",
        "nats://127.0.0.1:4222,nats://127.0.0.1:4223,tls://n3:4224", "nats://h:4222/"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        struct config c;
        char msg[256] = "";
        setenv("NATS_URL", good[i], 1);
        ck_assert_msg(config_load(&order_defaults, &c, msg, sizeof msg) == ERR_OK, "%s: %s", good[i],
                      msg);
        config_cleanup(&c);
    }
}
END_TEST

static const struct { const char *name, *value; } bad_values[] = {
    {"PORT", "abc"}, {"PORT", "0"}, {"PORT", "70000"}, {"PORT", "-1"}, {"PORT", "80x"},
    {"PORT", ""}, {"LOG_LEVEL", "verbose"}, {"LOG_LEVEL", ""},
    {"DATABASE_URL", "mysql://x"}, {"DATABASE_URL", ""}, {"DATABASE_URL", "postgresql://"},
    {"DATABASE_URL", "postgresql://db:abc/orders"}, {"DATABASE_URL", "postgresql://db:70000/x"},
    {"DATABASE_URL", "postgresql://a:5432,b:x/y"}, {"DATABASE_URL", "postgresql://db/x?nosuch=1"},
    {"DATABASE_URL", "postgresql://%zz@db/x"},
    {"NATS_URL", "http://x"}, {"NATS_URL", "nats://a,"}, {"NATS_URL", ""},
    {"NATS_URL", "nats://a, nats://b"}, {"NATS_URL", "nats://a b"},
    {"NATS_URL", "nats://127.0.0.1:abc"}, {"NATS_URL", "nats://127.0.0.1:99999"},
    {"NATS_URL", "nats://[::1"}, {"NATS_URL", "nats://a:4222,nats://b:0"}, {"NATS_URL", "nats://:4222"}, {"MIGRATIONS_DIR", ""},
    {"JS_REPLICAS", "0"}, {"JS_REPLICAS", "6"}, {"HTTP_THREADS", "0"}, {"RELAY_SWEEP_MS", "abc"},
    {"RELAY_BATCH", "0"}, {"RELAY_MAX_ATTEMPTS", "0"}, {"CONSUMER_BATCH", "0"},
    {"CONSUMER_WORKERS", "0"}, {"CONSUMER_WORKERS", "65"},
    {"OUTBOX_RETENTION", "1y"}, {"OUTBOX_RETENTION", "-1s"}, {"PROCESSED_RETENTION", "abc"},
    {"STREAM_MAX_AGE", "1w"}, {"DB_REQUEST_TIMEOUT", "0"}, {"DB_REQUEST_TIMEOUT", "30d"},
    {"DB_TCP_TIMEOUT", "1ms"}, {"HTTP_MAX_CONNECTIONS", "1"}, {"HTTP_MAX_CONNECTIONS_PER_IP", "0"},
    {"HTTP_REQUEST_TIMEOUT", "abc"},
    {"STREAM_DUPLICATE_WINDOW", "500ms"},
    {"ADMIN_TOKEN", "has a blank in it!!"},
    {"ADMIN_PORT", "-1"}, {"ADMIN_PORT", "65536"}, {"ADMIN_PORT", "0"},
    {"RECONCILE_EVERY", "10ms"}, {"RECONCILE_WINDOW", "x"}, {"RECONCILE_SCAN", "0"},
    {"NATS_PING_INTERVAL", "50ms"}, {"NATS_PING_INTERVAL", "2x"},
    {"NATS_MAX_PINGS_OUT", "0"}, {"NATS_MAX_PINGS_OUT", "101"},
    /* taken once, then broke the service: JetStream's nanoseconds, a
     * monotonic deadline, a Postgres interval, a TCP keepalive */
    {"STREAM_MAX_AGE", "106752d"}, {"STREAM_DUPLICATE_WINDOW", "36501d"},
    {"RECONCILE_EVERY", "106752d"}, {"RECONCILE_EVERY", "9223372036854775807ms"},
    {"OUTBOX_RETENTION", "10000000d"}, {"PROCESSED_RETENTION", "36501d"},
    {"REDRIVE_AFTER", "36501d"}, {"RECONCILE_WINDOW", "36501d"}, {"NATS_PING_INTERVAL", "36501d"},
    {"DB_TCP_TIMEOUT", "3601s"}, {"DB_TCP_TIMEOUT", "1d"},
    /* the port the service listens on already */
    {"ADMIN_PORT", "8080"},
    /* a server list with an empty entry or host, a libpq option value
     * libpq parses and then never connects with */
    {"NATS_URL", "nats://[]:4222"}, {"NATS_URL", "nats://a:1,,nats://b:2"},
    {"NATS_URL", ",nats://a:1"}, {"DATABASE_URL", "postgresql://h/db?sslmode=bogus"},
    {"DATABASE_URL", "postgresql://h/db?target_session_attrs=sometimes"},
    {"DATABASE_URL", "postgresql://h/db?gssencmode=prefer%7Crequire"},
    {"DATABASE_URL", "postgresql://h/db?keepalives_idle=xyz"},
    {"DATABASE_URL", "postgresql://h/db?connect_timeout=3s"},
    {"DATABASE_URL", "postgresql://h/db?tcp_user_timeout=99999999999"},
    {"DATABASE_URL", "postgresql://h/db?keepalives_idle=0"},
    {"DATABASE_URL", "postgresql://h/db?keepalives_interval=32768"},
    {"DATABASE_URL", "postgresql://h/db?keepalives_count=128"},
    {"DATABASE_URL", "postgresql://h/db?keepalives=1%20"},
    /* strtol's and strtoll's leniencies: blanks before, a sign */
    {"PORT", " 8080"}, {"PORT", "+8080"}, {"PORT", "\t8080"}, {"JS_REPLICAS", " 1"},
    {"RELAY_BATCH", "+5"}, {"RELAY_SWEEP_MS", " 100"}, {"OUTBOX_RETENTION", " 1s"},
    {"OUTBOX_RETENTION", "+1s"}, {"HTTP_REQUEST_TIMEOUT", "\n5s"},
    /* a failpoint the code never passes would test nothing */
    {"FAILPOINTS", "relay_after_publish"}, {"FAILPOINTS", "relay_after_ack:0"},
    {"FAILPOINTS", "relay_after_ack:"}, {"FAILPOINTS", "relay_after_ack:x"},
    {"FAILPOINTS", "relay_after_ack:+3"}, {"FAILPOINTS", "relay_after_ack:3:4"},
    {"FAILPOINTS", "relay_after_ack,"}, {"FAILPOINTS", ",relay_after_ack"},
    {"FAILPOINTS", "relay_after_ack:12345678901"}, {"FAILPOINTS", "Relay_after_ack"},
    {"FAILPOINTS", "relay_after_ack,relay_after_ack,relay_after_ack,relay_after_ack,"
                   "relay_after_ack,relay_after_ack,relay_after_ack,relay_after_ack,db_commit_cut"},
};
#define NBAD ((int)(sizeof bad_values / sizeof bad_values[0]))

START_TEST(bad_value_is_rejected_naming_the_variable)
{
    const char *name = bad_values[_i].name, *value = bad_values[_i].value;
    struct config c;
    char msg[256] = "";
    setenv(name, value, 1);
    ck_assert_msg(config_load(&order_defaults, &c, msg, sizeof msg) == ERR_CONFIG,
                  "%s=\"%s\" accepted", name, value);
    ck_assert_msg(strstr(msg, name) != NULL, "%s=\"%s\": message \"%s\"", name, value, msg);
    ck_assert_ptr_null(strchr(msg, '\n'));
    /* nothing left to free after a failed load */
    ck_assert_ptr_null(c.database_url);
    ck_assert_ptr_null(c.nats_url);
}
END_TEST

/* A value is echoed in the error line as printable text, cut short. */
START_TEST(bad_value_is_echoed_printable_and_short)
{
    struct config c;
    char msg[512] = "", big[300];
    setenv("LOG_LEVEL", "a\x1b[2J\tb\xff", 1);
    ck_assert_int_eq(config_load(&order_defaults, &c, msg, sizeof msg), ERR_CONFIG);
    ck_assert_str_eq(msg, "invalid value for LOG_LEVEL: \"a\\x1b[2J\\x09b\\xff\"; expected "
                          "debug, info, warn or error");
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    setenv("LOG_LEVEL", big, 1);
    ck_assert_int_eq(config_load(&order_defaults, &c, msg, sizeof msg), ERR_CONFIG);
    ck_assert_ptr_nonnull(strstr(msg, "xxx...\""));
    ck_assert_uint_lt(strlen(msg), 160);
}
END_TEST

/* var=val stops the load with a line that holds want. */
static void refused_saying(const char *var, const char *val, const char *want)
{
    struct config c;
    char msg[512] = "";
    setenv(var, val, 1);
    ck_assert_int_eq(config_load(&order_defaults, &c, msg, sizeof msg), ERR_CONFIG);
    ck_assert_msg(strstr(msg, want), "%s=%s: %s", var, val, msg);
    unsetenv(var);
}

/* The line says what the variable takes, not only that it is wrong (a
 * helper had to read config.c for the ranges). */
START_TEST(bad_value_line_says_what_is_expected)
{
    refused_saying("CONSUMER_BATCH", "0",
                   "invalid value for CONSUMER_BATCH: \"0\"; expected an integer from 1 to 10000");
    refused_saying("DB_REQUEST_TIMEOUT", "25d", "from 100ms to 2147483647ms (24.9 days)");
    refused_saying("STREAM_MAX_AGE", "5q", "digits alone are seconds) from 1s to 36500d");
    refused_saying("ADMIN_PORT", "0", "from 1 to 65535, or empty for none");
}
END_TEST

START_TEST(admin_token_is_never_echoed)
{
    struct config c;
    char msg[256] = "";
    setenv("ADMIN_TOKEN", "tiny\tsecret", 1);
    ck_assert_int_eq(config_load(&order_defaults, &c, msg, sizeof msg), ERR_CONFIG);
    ck_assert_ptr_nonnull(strstr(msg, "ADMIN_TOKEN"));
    ck_assert_ptr_null(strstr(msg, "secret"));
}
END_TEST

/* The environment as set stops the load, with one line naming `name`. */
static void assert_refused(const char *name)
{
    struct config c;
    char msg[256] = "";
    ck_assert_int_eq(config_load(&order_defaults, &c, msg, sizeof msg), ERR_CONFIG);
    ck_assert_msg(strstr(msg, name) != NULL, "message \"%s\"", msg);
    ck_assert_ptr_null(strchr(msg, '\n'));
}

START_TEST(processed_retention_must_outlive_stream_max_age)
{
    struct config c;
    char msg[256] = "";
    setenv("PROCESSED_RETENTION", "1d", 1); /* STREAM_MAX_AGE defaults to 3d */
    assert_refused("PROCESSED_RETENTION");

    setenv("PROCESSED_RETENTION", "2h", 1);
    setenv("STREAM_MAX_AGE", "2h", 1);
    ck_assert_int_eq(config_load(&order_defaults, &c, msg, sizeof msg), ERR_CONFIG);

    setenv("STREAM_MAX_AGE", "1h", 1);
    ck_assert_int_eq(config_load(&order_defaults, &c, msg, sizeof msg), ERR_OK);
    config_cleanup(&c);

    setenv("PROCESSED_RETENTION", "36500d", 1); /* the longest a duration may be */
    setenv("STREAM_MAX_AGE", "36499d", 1);
    setenv("DB_TCP_TIMEOUT", "1h", 1);
    ck_assert_int_eq(config_load(&order_defaults, &c, msg, sizeof msg), ERR_OK);
    config_cleanup(&c);
}
END_TEST

/* tls:// needs a CA file to verify the server with: NATS_TLS_CA, or the
 * system's bundle. NATS_TLS_CA, when set, must be one whatever the URL. */
START_TEST(a_tls_url_needs_a_readable_ca_file)
{
    struct config c;
    char msg[256] = "";
    setenv("NATS_URL", "tls://127.0.0.1:4222", 1);
    setenv("NATS_TLS_CA", "/nonexistent/ca.pem", 1);
    assert_refused("NATS_TLS_CA");
    setenv("NATS_TLS_CA", "/proc/self/status", 1); /* readable, no certificate in it */
    assert_refused("NATS_TLS_CA");
    char pem[] = "/tmp/ca-XXXXXX";
    int fd = mkstemp(pem);
    ck_assert_int_ge(fd, 0);
    static const char text[] = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    ck_assert_int_eq(write(fd, text, sizeof text - 1), (ssize_t)(sizeof text - 1));
    close(fd);
    setenv("NATS_TLS_CA", pem, 1);
    ck_assert_int_eq(config_load(&order_defaults, &c, msg, sizeof msg), ERR_OK);
    ck_assert_str_eq(config_tls_ca(&c), pem);
    config_cleanup(&c);
    unlink(pem);
    /* no TLS asked: a CA set is checked all the same (it was not read) */
    setenv("NATS_URL", "nats://127.0.0.1:4222", 1);
    setenv("NATS_TLS_CA", "/nonexistent/ca.pem", 1);
    assert_refused("NATS_TLS_CA");
    setenv("NATS_TLS_CA", "", 1); /* empty is unset */
    ck_assert_int_eq(config_load(&order_defaults, &c, msg, sizeof msg), ERR_OK);
    config_cleanup(&c);
}
END_TEST

START_TEST(stream_max_age_must_cover_the_duplicate_window)
{
    struct config c;
    char msg[256] = "";
    setenv("STREAM_MAX_AGE", "1m", 1); /* the window defaults to 2m: JetStream would refuse */
    assert_refused("STREAM_MAX_AGE");

    setenv("STREAM_DUPLICATE_WINDOW", "1m", 1);
    ck_assert_int_eq(config_load(&order_defaults, &c, msg, sizeof msg), ERR_OK);
    ck_assert_int_eq(c.stream_duplicate_window_ms, 60000);
    config_cleanup(&c);
}
END_TEST

/* --- durations -------------------------------------------------------- */

START_TEST(duration_units)
{
    static const struct { const char *s; int64_t ms; } ok[] = {
        {"250ms", 250}, {"30s", 30000}, {"5m", 300000}, {"1h", 3600000}, {"7d", 7 * DAY_MS},
        {"45", 45000}, {"0", 0}, {"0ms", 0},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        int64_t got = -1;
        ck_assert_msg(config_parse_duration_ms(ok[i].s, &got) == 0, "rejected %s", ok[i].s);
        ck_assert_int_eq(got, ok[i].ms);
    }
}
END_TEST

START_TEST(duration_rejects_malformed)
{
    const char *bad[] = {"", "s", "ms", "1y", "1w", "1.5h", "-1s", "5 m", "1hh", "1H",
                         "9999999999999999999d", "99999999999999999999",
                         " 1s", "+1s", "\t5", "-0"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t got = 42;
        ck_assert_msg(config_parse_duration_ms(bad[i], &got) == -1, "accepted \"%s\"", bad[i]);
        ck_assert_int_eq(got, 42);
    }
}
END_TEST

Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("load");
    tcase_add_checked_fixture(tc, env_clear, env_restore);
    tcase_add_test(tc, order_service_defaults);
    tcase_add_test(tc, inventory_service_defaults);
    tcase_add_loop_test(tc, variable_overrides_default, 0, NOVERRIDES);
    tcase_add_test(tc, log_level_accepts_each_contract_level);
    tcase_add_test(tc, redrive_after_is_shorter_with_replicas);
    tcase_add_test(tc, nats_url_accepts_comma_separated_cluster);
    tcase_add_test(tc, database_url_accepts_libpq_multi_host);
    tcase_add_test(tc, nats_url_accepts_what_nats_c_takes);
    tcase_add_loop_test(tc, bad_value_is_rejected_naming_the_variable, 0, NBAD);
    tcase_add_test(tc, processed_retention_must_outlive_stream_max_age);
    tcase_add_test(tc, stream_max_age_must_cover_the_duplicate_window);
    tcase_add_test(tc, a_tls_url_needs_a_readable_ca_file);
    tcase_add_test(tc, admin_token_is_never_echoed);
    tcase_add_test(tc, bad_value_is_echoed_printable_and_short);
    tcase_add_test(tc, bad_value_line_says_what_is_expected);
    suite_add_tcase(s, tc);
    tc = tcase_create("duration");
    tcase_add_test(tc, duration_units);
    tcase_add_test(tc, duration_rejects_malformed);
    suite_add_tcase(s, tc);
    return s;
}
