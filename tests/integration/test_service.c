/* test_service.c - a service process as a user sees it: configuration
 * errors, SIGTERM, /healthz, /readyz following NATS, /metrics, and starting
 * while NATS is down. Real processes, real Postgres, a private nats-server. */
#include "support/harness.h"
#include "suites.h"
#include "util.h"

#include <glob.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static struct natsd nats;

static void setup(void)
{
    pg_reset("orders");
    pg_reset("inventory");
    natsd_start(&nats);
}

static void teardown(void)
{
    natsd_cleanup(&nats);
}

static char *read_log(const struct proc *p)
{
    FILE *f = fopen(p->log, "r");
    struct buf b;
    buf_init(&b);
    char chunk[4096];
    size_t n;
    while (f && (n = fread(chunk, 1, sizeof chunk, f)) > 0)
        buf_append(&b, chunk, n);
    if (f)
        fclose(f);
    return b.data;
}

/* Runs the binary with one bad variable; it must exit 2 with one line naming it. */
static void assert_bad_env(const char *name, const char *assignment)
{
    struct proc p;
    char bin[512];
    ck_assert_ptr_nonnull(realpath("build/asan/bin/order-service", bin));
    const char *argv[] = {bin, NULL};
    const char *env[] = {assignment, NULL};
    proc_start(&p, argv, env);
    ck_assert_int_eq(proc_wait(&p, 10000), 2);
    char *log = read_log(&p);
    ck_assert_msg(strstr(log, name) != NULL, "log does not name %s: %s", name, log);
    ck_assert_msg(strchr(log, '\n') == log + strlen(log) - 1, "more than one line: %s", log);
    free(log);
}

START_TEST(malformed_environment_stops_the_start)
{
    assert_bad_env("PORT", "PORT=abc");
    assert_bad_env("PORT", "PORT=70000");
    assert_bad_env("LOG_LEVEL", "LOG_LEVEL=loud");
    assert_bad_env("DATABASE_URL", "DATABASE_URL=mysql://x/y");
    assert_bad_env("DATABASE_URL", "DATABASE_URL=postgresql://127.0.0.1:port/orders");
    assert_bad_env("NATS_URL", "NATS_URL=http://127.0.0.1:4222");
    assert_bad_env("JS_REPLICAS", "JS_REPLICAS=zero");
    assert_bad_env("MIGRATIONS_DIR", "MIGRATIONS_DIR=/nonexistent/migrations");
    /* a folder with no migrations (no tables: 500 to everything), one with
     * a folder named as one (read as empty, failed, tried for ever), and one
     * with two files of one number (one of them would never run) */
    char empty[] = "/tmp/migs-XXXXXX", twice[] = "/tmp/migs-XXXXXX", nested[] = "/tmp/migs-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(empty));
    ck_assert_ptr_nonnull(mkdtemp(twice));
    ck_assert_ptr_nonnull(mkdtemp(nested));
    char *bad_dir = xasprintf("MIGRATIONS_DIR=%s", empty);
    assert_bad_env("MIGRATIONS_DIR", bad_dir);
    free(bad_dir);
    char *sub_dir = xasprintf("%s/001_a.sql", nested);
    ck_assert_int_eq(mkdir(sub_dir, 0755), 0);
    bad_dir = xasprintf("MIGRATIONS_DIR=%s", nested);
    assert_bad_env("MIGRATIONS_DIR", bad_dir);
    free(bad_dir);
    rmdir(sub_dir);
    free(sub_dir);
    rmdir(nested);
    const char *const files[] = {"001_a.sql", "002_b.sql", "002_c.sql"};
    for (size_t i = 0; i < 3; i++) {
        char *path = xasprintf("%s/%s", twice, files[i]);
        FILE *f = fopen(path, "w");
        ck_assert_ptr_nonnull(f);
        fputs("SELECT 1;\n", f);
        fclose(f);
        free(path);
    }
    bad_dir = xasprintf("MIGRATIONS_DIR=%s", twice);
    assert_bad_env("MIGRATIONS_DIR", bad_dir);
    free(bad_dir);
    for (size_t i = 0; i < 3; i++) {
        char *path = xasprintf("%s/%s", twice, files[i]);
        unlink(path);
        free(path);
    }
    rmdir(twice);
    rmdir(empty);
    /* settings that would break recovery */
    assert_bad_env("STREAM_MAX_AGE", "STREAM_MAX_AGE=1m"); /* below the 2 min duplicate window */
    assert_bad_env("STREAM_DUPLICATE_WINDOW", "STREAM_DUPLICATE_WINDOW=100ms");
    assert_bad_env("PROCESSED_RETENTION", "PROCESSED_RETENTION=1d"); /* below the 3 d max age */
}
END_TEST

static int ready_status(struct svc *s, const char *want)
{
    struct http_result r;
    int st = http_get(s->port, "/readyz", &r);
    int has = r.body && strstr(r.body, want) != NULL;
    http_result_free(&r);
    return has ? st : -1;
}

static int nats_ok(void *arg)
{
    return ready_status(arg, "\"nats\":\"ok\"") == 200;
}

/* tls:// in NATS_URL is TLS, the server verified with NATS_TLS_CA, or no
 * connection at all: nats.c alone took the scheme and connected in the
 * clear (a helper's probe). A CA and a certificate for 127.0.0.1 are made
 * here. */
START_TEST(a_tls_url_is_tls_or_nothing)
{
    char dir[] = "/tmp/tls-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char *make = xasprintf(
        "cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
        "-keyout ca.key -out ca.pem -days 1 -subj /CN=test-ca && openssl req -newkey ec "
        "-pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout srv.key -out srv.csr "
        "-subj /CN=127.0.0.1 && echo subjectAltName=IP:127.0.0.1 > ext && openssl x509 -req "
        "-in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem -days 1 -extfile ext",
        dir);
    char *quiet = xasprintf("(%s) >/dev/null 2>&1", make);
    ck_assert_int_eq(system(quiet), 0);
    char *conf = xasprintf("tls {\n  cert_file: \"%s/srv.pem\"\n  key_file: \"%s/srv.key\"\n}", dir,
                           dir);
    struct natsd tls;
    natsd_start_conf(&tls, conf);
    char url[96], plain[96];
    snprintf(url, sizeof url, "tls://127.0.0.1:%d", tls.port);
    snprintf(plain, sizeof plain, "tls://127.0.0.1:%d", nats.port);
    char *ca = xasprintf("NATS_TLS_CA=%s/ca.pem", dir);
    const char *env[] = {ca, NULL};
    struct svc s;
    svc_start(&s, "order-service", url, env);
    ck_assert_msg(wait_until(nats_ok, &s, 15000), "never connected over TLS");
    ck_assert_int_eq(svc_stop(&s, SIGTERM), 0);
    /* a server that speaks no TLS is never used */
    svc_start(&s, "order-service", plain, env);
    sleep_ms(2000);
    ck_assert_int_eq(ready_status(&s, "\"nats\":\"down\""), 503);
    ck_assert_int_eq(svc_stop(&s, SIGTERM), 0);
    natsd_cleanup(&tls);
    char *rm = xasprintf("rm -rf %s", dir);
    ck_assert_int_eq(system(rm), 0);
    free(rm);
    free(ca);
    free(conf);
    free(quiet);
    free(make);
}
END_TEST

START_TEST(sigterm_exits_zero)
{
    struct svc s;
    svc_start(&s, "order-service", nats.url, NULL);
    ck_assert_int_eq(http_get(s.port, "/healthz", NULL), 200);
    int64_t t0 = mono_ms();
    ck_assert_int_eq(svc_stop(&s, SIGTERM), 0);
    ck_assert_int_lt(mono_ms() - t0, 10000);
    /* SIGHUP (a closed terminal) stops it as cleanly: it had killed it */
    svc_start(&s, "order-service", nats.url, NULL);
    ck_assert_int_eq(svc_stop(&s, SIGHUP), 0);
    ck_assert(proc_log_has(&s.proc, "stopped"));
}
END_TEST

/* Frozen (SIGSTOP) and thawed (SIGCONT), a service carries on: on Linux a
 * stop and continue ends its wait for SIGTERM early (EINTR), which it once
 * took for a stop signal and shut down. */
START_TEST(a_frozen_and_thawed_service_carries_on)
{
    static const char order[] = "{\"customer_id\":\"c-1\",\"items\":[{\"sku\":\"SKU-1\",\"qty\":1}]}";
    struct svc s;
    svc_start(&s, "order-service", nats.url, NULL);
    /* serving orders: past its start-up, waiting for a stop signal */
    ck_assert_int_eq(http_post_json(s.port, "/orders", order, NULL), 201);
    for (int i = 0; i < 3; i++) {
        svc_freeze(&s);
        sleep_ms(300);
        svc_thaw(&s);
    }
    sleep_ms(1000); /* a service that took it for SIGTERM is gone by now */
    ck_assert_int_eq(http_post_json(s.port, "/orders", order, NULL), 201);
    ck_assert_int_eq(http_get(s.port, "/healthz", NULL), 200);
    ck_assert(!proc_log_has(&s.proc, "stopping"));
    ck_assert_int_eq(svc_stop(&s, SIGTERM), 0);
}
END_TEST

static int ready_is(struct svc *s, int want)
{
    return http_get(s->port, "/readyz", NULL) == want;
}
static int ready_503(void *arg) { return ready_is(arg, 503); }
static int ready_200(void *arg) { return ready_is(arg, 200); }

START_TEST(readyz_follows_nats_without_restart)
{
    struct svc s;
    svc_start(&s, "inventory-service", nats.url, NULL);
    ck_assert(wait_until(ready_200, &s, 10000));
    natsd_kill(&nats);
    ck_assert(wait_until(ready_503, &s, 10000));
    struct http_result r;
    http_get(s.port, "/readyz", &r);
    ck_assert_str_eq(r.body, "{\"checks\":{\"postgres\":\"ok\",\"nats\":\"down\"}}");
    http_result_free(&r);
    natsd_restart(&nats);
    ck_assert(wait_until(ready_200, &s, 15000));
    ck_assert_int_eq(http_get(s.port, "/healthz", NULL), 200);
    ck_assert_int_eq(svc_stop(&s, SIGTERM), 0);
}
END_TEST

START_TEST(starts_and_serves_while_nats_is_down)
{
    struct svc s;
    char url[64];
    snprintf(url, sizeof url, "nats://127.0.0.1:%d", free_port());
    svc_start(&s, "order-service", url, NULL);
    ck_assert_int_eq(http_get(s.port, "/healthz", NULL), 200);
    ck_assert_int_eq(http_get(s.port, "/readyz", NULL), 503);
    ck_assert_int_eq(http_post_json(s.port, "/orders",
                     "{\"customer_id\":\"c-1\",\"items\":[{\"sku\":\"A\",\"qty\":1}]}", NULL), 201);
    /* the log says why it is not ready, not only /readyz */
    ck_assert(proc_log_wait(&s.proc, "readiness: nats has not answered for", 10000));
    ck_assert(!proc_log_has(&s.proc, "readiness: postgres"));
    ck_assert_int_eq(svc_stop(&s, SIGTERM), 0);
}
END_TEST

START_TEST(metrics_expose_the_contract_names)
{
    struct svc s;
    struct http_result r;
    svc_start(&s, "order-service", nats.url, NULL);
    http_get(s.port, "/healthz", NULL);
    ck_assert_int_eq(http_get(s.port, "/metrics", &r), 200);
    const char *names[] = {"orders_created_total", "http_requests_total{route=\"/healthz\",code=\"200\"}",
                           "http_request_duration_seconds_count{route=\"/healthz\"}",
                           "outbox_published_total", "outbox_publish_failures_total",
                           "outbox_pending", "outbox_oldest_pending_age_seconds",
                           "order_replies_total{result=\"poison\"}"};
    for (size_t i = 0; i < ARRAY_LEN(names); i++)
        ck_assert_msg(metric_in(r.body, names[i]) >= 0, "missing %s", names[i]);
    ck_assert_double_ge(metric_in(r.body, "http_requests_total{route=\"/healthz\",code=\"200\"}"), 1);
    http_result_free(&r);
    ck_assert_int_eq(svc_stop(&s, SIGTERM), 0);
}
END_TEST

/* A dashboard's first scrape of a new process finds both HTTP families with
 * samples (each route's at 0), not their names alone. /metrics is the only
 * thing asked here, and a request is counted once answered. */
START_TEST(first_scrape_has_the_http_families)
{
    struct svc s;
    struct http_result r = {0};
    svc_spawn(&s, "order-service", nats.url, NULL);
    int st = -1;
    for (int i = 0; i < 200 && st < 0; i++) /* until it listens */
        if ((st = http_get(s.port, "/metrics", &r)) < 0) {
            http_result_free(&r);
            sleep_ms(50);
        }
    ck_assert_int_eq(st, 200);
    ck_assert_double_eq(metric_in(r.body, "http_requests_total{route=\"/metrics\",code=\"200\"}"), 0);
    ck_assert_double_eq(metric_in(r.body, "http_request_duration_seconds_count{route=\"/orders\"}"), 0);
    ck_assert_double_eq(metric_in(r.body, "http_request_duration_seconds_bucket{route=\"/orders\",le=\"+Inf\"}"), 0);
    http_result_free(&r);
    ck_assert_int_eq(svc_stop(&s, SIGTERM), 0);
}
END_TEST

/* What each of a service's connections does shows in pg_stat_activity. */
static int named_connections_seen(void *arg)
{
    (void)arg;
    return pg_long("orders", "SELECT count(DISTINCT application_name) FROM pg_stat_activity "
                             "WHERE application_name IN ('order-service/intake', "
                             "'order-service/relay', 'order-service/inbox')") == 3;
}

START_TEST(connections_are_named_for_their_role)
{
    struct svc s;
    svc_start(&s, "order-service", nats.url, NULL);
    ck_assert_int_eq(http_post_json(s.port, "/orders",
                                    "{\"customer_id\":\"c-1\",\"items\":[{\"sku\":\"SKU-1\",\"qty\":1}]}",
                                    NULL), 201);
    ck_assert_msg(wait_until(named_connections_seen, NULL, 10000), "names seen: %s",
                  pg_text("orders", "SELECT string_agg(DISTINCT application_name, ' ') "
                                    "FROM pg_stat_activity"));
    ck_assert_int_eq(svc_stop(&s, SIGTERM), 0);
}
END_TEST

START_TEST(migrate_only_applies_and_exits)
{
    struct proc p;
    char bin[512];
    ck_assert_ptr_nonnull(realpath("build/asan/bin/inventory-service", bin));
    const char *argv[] = {bin, "--migrate-only", NULL};
    char *db = xasprintf("DATABASE_URL=%s", pg_url("inventory"));
    const char *env[] = {db, NULL};
    proc_start(&p, argv, env);
    ck_assert_int_eq(proc_wait(&p, 30000), 0);
    ck_assert(!proc_log_has(&p, "STREAM_DUPLICATE_WINDOW")); /* the default: 2 minutes */
    glob_t g;
    ck_assert_int_eq(glob("migrations/inventory/[0-9]*.sql", 0, NULL, &g), 0);
    ck_assert_int_eq(pg_long("inventory", "SELECT count(*) FROM schema_migrations"), (long)g.gl_pathc);
    globfree(&g);
    /* anything after it is not ignored */
    const char *more[] = {bin, "--migrate-only", "--bogus", NULL};
    proc_start(&p, more, env);
    ck_assert_int_eq(proc_wait(&p, 10000), 2);
    /* a duplicate window under the contract's 2 minutes starts, and says so */
    const char *short_window[] = {db, "STREAM_DUPLICATE_WINDOW=1m", NULL};
    proc_start(&p, argv, short_window);
    ck_assert_int_eq(proc_wait(&p, 30000), 0);
    ck_assert(proc_log_has(&p, "STREAM_DUPLICATE_WINDOW: 60s, under the 2 minutes"));
    free(db);
}
END_TEST

struct late_post {
    int port;
    int status;
};

static void *post_once(void *arg)
{
    struct late_post *lp = arg;
    lp->status = http_post_json(lp->port, "/orders",
                                "{\"customer_id\":\"c-1\",\"items\":[{\"sku\":\"A\",\"qty\":1}]}",
                                NULL);
    return NULL;
}

START_TEST(sigterm_answers_requests_in_flight)
{
    struct svc s;
    svc_start(&s, "order-service", nats.url, NULL);
    /* hold the request inside its transaction with a lock, then ask to stop */
    PGconn *c = pg_hold("orders", "LOCK TABLE orders IN ACCESS EXCLUSIVE MODE");
    ck_assert_ptr_nonnull(c);
    struct late_post lp = {s.port, 0};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, post_once, &lp), 0);
    sleep_ms(500);
    kill(s.proc.pid, SIGTERM);
    sleep_ms(1000);
    ck_assert(pg_release(c, "COMMIT"));
    pthread_join(t, NULL);
    ck_assert_int_eq(lp.status, 201); /* answered, not cut off */
    ck_assert_int_eq(proc_wait(&s.proc, 10000), 0);
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM orders"), 1);
}
END_TEST

START_TEST(request_paths_never_become_metric_labels)
{
    struct svc s;
    struct http_result r;
    svc_start(&s, "order-service", nats.url, NULL);
    ck_assert_int_eq(http_do(s.port, "DELETE", "/orders/x%22%7D%201%0Aevil_metric%7Ba%3D%22",
                             NULL, NULL, 0, &r), 0);
    ck_assert_int_eq(r.status, 405);
    http_result_free(&r);
    http_get(s.port, "/no/such/path/1", NULL);
    ck_assert_int_eq(http_get(s.port, "/metrics", &r), 200);
    ck_assert_ptr_null(strstr(r.body, "evil_metric"));
    ck_assert_ptr_null(strstr(r.body, "/no/such/path"));
    ck_assert_double_eq(metric_in(r.body, "http_requests_total{route=\"/orders/{id}\",code=\"405\"}"), 1);
    http_result_free(&r);
    ck_assert_int_eq(svc_stop(&s, SIGTERM), 0);
}
END_TEST

/* migrate.c's advisory lock, held here until pg_release(): a starting
 * service waits for it in its migrations. */
static PGconn *hold_migrations(void)
{
    PGconn *c = pg_hold("orders", "SELECT pg_advisory_lock(7306620031)");
    ck_assert_ptr_nonnull(c);
    return c;
}

static int healthz_200(void *arg)
{
    return http_get(((struct svc *)arg)->port, "/healthz", NULL) == 200;
}

/* Migrations wait for their lock, held here: requests are told the service
 * is starting, not that the database cannot be reached. */
START_TEST(requests_before_migrations_get_a_clear_503)
{
    PGconn *c = hold_migrations();
    struct svc s;
    struct http_result r;
    svc_spawn(&s, "order-service", nats.url, NULL);
    ck_assert(wait_until(healthz_200, &s, 10000));
    ck_assert_int_eq(http_post_json(s.port, "/orders",
                     "{\"customer_id\":\"c-1\",\"items\":[{\"sku\":\"A\",\"qty\":1}]}", &r), 503);
    ck_assert_ptr_nonnull(strstr(r.body, "\"code\":\"unavailable\""));
    ck_assert_ptr_nonnull(strstr(r.body, "starting"));
    http_result_free(&r);
    ck_assert_int_eq(http_get(s.port, "/orders/7d3c2a51-8a8e-4f7e-9d1c-0a2b3c4d5e6f", &r), 503);
    ck_assert_ptr_nonnull(strstr(r.body, "starting"));
    http_result_free(&r);
    ck_assert_int_eq(http_get(s.port, "/readyz", NULL), 503);
    ck_assert_int_eq(http_get(s.port, "/metrics", &r), 200); /* every series there from the start */
    const char *names[] = {"outbox_pending", "outbox_published_total", "inbox_dead_letters",
                           "order_replies_total{result=\"confirmed\"}"};
    for (size_t i = 0; i < ARRAY_LEN(names); i++)
        ck_assert_msg(metric_in(r.body, names[i]) == 0, "%s not at 0 before migrations", names[i]);
    http_result_free(&r);
    ck_assert(pg_release(c, "ROLLBACK")); /* its session ends: the lock is free, migrations run */
    ck_assert(wait_until(ready_200, &s, 15000));
    ck_assert_int_eq(svc_stop(&s, SIGTERM), 0);
}
END_TEST

/* A stop while migrations wait (here for their lock; as well for a frozen
 * server) ends the wait: the service exits 0 within the 10 s svc_stop allows. */
START_TEST(sigterm_while_migrations_wait_exits_in_time)
{
    PGconn *c = hold_migrations();
    struct svc s;
    svc_spawn(&s, "order-service", nats.url, NULL);
    ck_assert(wait_until(healthz_200, &s, 10000));
    sleep_ms(500); /* in the lock's wait by now */
    int64_t t0 = mono_ms();
    ck_assert_int_eq(svc_stop(&s, SIGTERM), 0);
    ck_assert_int_lt(mono_ms() - t0, 10000);
    ck_assert(pg_release(c, "ROLLBACK"));
}
END_TEST

static const char *max_age_stream;
static long max_age_is;
static int stream_max_age(void *arg)
{
    return natsd_stream_max_age_s(arg, max_age_stream) == max_age_is;
}

static void wait_max_age(const char *stream, long seconds)
{
    max_age_stream = stream, max_age_is = seconds;
    ck_assert_msg(wait_until(stream_max_age, &nats, 10000), "%s: max age never %ld s (is %ld)",
                  stream, seconds, natsd_stream_max_age_s(&nats, stream));
}

/* Each service creates both streams if missing (the one it reads too, so
 * that events published before its writer ever ran are kept), but only the
 * writer sets a stream's settings: at its start it converges the stream to
 * its own, and whoever starts later changes nothing of the other's stream
 * (a reader that updated it used to win, defeating the writer's checks). */
START_TEST(each_stream_is_created_by_either_and_configured_by_its_writer)
{
    static const char *const order_env[] = {"STREAM_MAX_AGE=2d", NULL};
    static const char *const inv_env[] = {"STREAM_MAX_AGE=4d", NULL};
    struct svc o, i;
    svc_start(&o, "order-service", nats.url, order_env);
    ck_assert(wait_until(ready_200, &o, 10000));
    wait_max_age("ORDERS", 2 * 86400);
    wait_max_age("INVENTORY", 2 * 86400); /* made by its reader, from the reader's settings */
    svc_start(&i, "inventory-service", nats.url, inv_env);
    ck_assert(wait_until(ready_200, &i, 10000));
    wait_max_age("INVENTORY", 4 * 86400); /* its writer's settings */
    ck_assert_int_eq(svc_stop(&o, SIGTERM), 0);
    svc_start(&o, "order-service", nats.url, order_env); /* the last one to start */
    ck_assert(wait_until(ready_200, &o, 10000));
    sleep_ms(1000); /* its consumer bound to INVENTORY meanwhile */
    ck_assert_int_eq(natsd_stream_max_age_s(&nats, "ORDERS"), 2 * 86400);
    ck_assert_int_eq(natsd_stream_max_age_s(&nats, "INVENTORY"), 4 * 86400);
    /* an instance with other settings sets its stream to them, and says so */
    static const char *const other_env[] = {"STREAM_MAX_AGE=3d", NULL};
    struct svc o2;
    svc_start(&o2, "order-service", nats.url, other_env);
    wait_max_age("ORDERS", 3 * 86400);
    ck_assert(proc_log_has(&o2.proc, "max age 172800s -> 259200s (STREAM_MAX_AGE)"));
    ck_assert(!proc_log_has(&o.proc, "(STREAM_MAX_AGE)"));
    /* a reader whose processed ids go before the stream it reads lets its
     * messages go (its own STREAM_MAX_AGE is below them, so its start-up
     * check passed): said at its bind; the defaults say nothing */
    static const char *const short_ids[] = {"STREAM_MAX_AGE=1d", "PROCESSED_RETENTION=2d", NULL};
    struct svc i2;
    svc_start(&i2, "inventory-service", nats.url, short_ids);
    ck_assert(wait_until(ready_200, &i2, 10000));
    ck_assert(proc_log_wait(&i2.proc, "stream ORDERS keeps messages for 259200s (its writer's "
                                      "STREAM_MAX_AGE), and PROCESSED_RETENTION is 172800s",
                            10000)); /* said when its consumer binds to ORDERS */
    ck_assert(!proc_log_has(&i.proc, "PROCESSED_RETENTION is"));
    ck_assert(!proc_log_has(&o.proc, "PROCESSED_RETENTION is"));
    ck_assert_int_eq(svc_stop(&i2, SIGTERM), 0);
    ck_assert_int_eq(svc_stop(&o2, SIGTERM), 0);
    ck_assert_int_eq(svc_stop(&o, SIGTERM), 0);
    ck_assert_int_eq(svc_stop(&i, SIGTERM), 0);
}
END_TEST

/* A stop held up where it cannot be cut short (nats.c holding a
 * connection's lock while it tries frozen servers in turn: a helper saw
 * 10.8 and 11.3 s) still ends within the contract's 10 s, exit 0, and says
 * where it was held. */
START_TEST(a_stop_held_up_still_ends_within_ten_seconds)
{
    static const char *const env[] = {"FAILPOINTS=stop_hang", NULL};
    struct svc s;
    svc_start(&s, "order-service", nats.url, env);
    ck_assert(wait_until(ready_200, &s, 10000));
    int64_t t0 = mono_ms();
    ck_assert_int_eq(svc_stop(&s, SIGTERM), 0);
    int64_t took = mono_ms() - t0;
    ck_assert_msg(took >= 8500 && took < 10000, "stop took %lld ms", (long long)took);
    ck_assert(proc_log_has(&s.proc, "stopping: still in inbox_stop after 7 s"));
    ck_assert(proc_log_has(&s.proc, "stopping: still in inbox_stop after 9 s: exiting now"));
}
END_TEST

/* A stream someone made with memory storage: JetStream changes no stream's
 * storage in place (10052). The writer used to refuse it, stop publishing
 * and log each second that it had set the stream to its settings. Now the
 * stream is used as it is, and one error line says why and what to do. */
START_TEST(a_stream_that_cannot_be_set_in_place_is_used_as_it_is_and_said_once)
{
    ck_assert_int_eq(natsd_request(&nats, "$JS.API.STREAM.CREATE.ORDERS",
                                   "{\"name\":\"ORDERS\",\"subjects\":[\"orders.>\"],"
                                   "\"storage\":\"memory\",\"duplicate_window\":5000000000}",
                                   "\"storage\":\"memory\""),
                     0);
    struct svc o;
    svc_start(&o, "order-service", nats.url, NULL);
    ck_assert(wait_until(ready_200, &o, 10000));
    ck_assert_int_eq(http_post_json(o.port, "/orders",
                                    "{\"customer_id\":\"c-1\",\"items\":[{\"sku\":\"SKU-1\",\"qty\":1}]}",
                                    NULL),
                     201);
    ck_assert_msg(natsd_stream_wait(&nats, "ORDERS", 1, 10000), "ORDERS holds %ld",
                  natsd_stream_msgs(&nats, "ORDERS"));
    sleep_ms(2000); /* long enough for a line each second, as before */
    char *log = read_log(&o.proc);
    ck_assert_int_eq(count_of(log, "storage memory -> file"), 1);
    ck_assert_int_eq(count_of(log, "(stream configuration update can not change storage type): "
                                   "it is used as it is"), 1);
    ck_assert(!strstr(log, "set to this service's settings:")); /* it was not */
    free(log);
    ck_assert_int_eq(svc_stop(&o, SIGTERM), 0);
}
END_TEST

Suite *service_suite(void)
{
    Suite *s = suite_create("service");
    TCase *tc = tcase_create("process");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, malformed_environment_stops_the_start);
    tcase_add_test(tc, sigterm_exits_zero);
    tcase_add_test(tc, a_stop_held_up_still_ends_within_ten_seconds);
    tcase_add_test(tc, a_frozen_and_thawed_service_carries_on);
    tcase_add_test(tc, readyz_follows_nats_without_restart);
    tcase_add_test(tc, a_tls_url_is_tls_or_nothing);
    tcase_add_test(tc, each_stream_is_created_by_either_and_configured_by_its_writer);
    tcase_add_test(tc, a_stream_that_cannot_be_set_in_place_is_used_as_it_is_and_said_once);
    tcase_add_test(tc, starts_and_serves_while_nats_is_down);
    tcase_add_test(tc, metrics_expose_the_contract_names);
    tcase_add_test(tc, first_scrape_has_the_http_families);
    tcase_add_test(tc, connections_are_named_for_their_role);
    tcase_add_test(tc, migrate_only_applies_and_exits);
    tcase_add_test(tc, sigterm_answers_requests_in_flight);
    tcase_add_test(tc, request_paths_never_become_metric_labels);
    tcase_add_test(tc, requests_before_migrations_get_a_clear_503);
    tcase_add_test(tc, sigterm_while_migrations_wait_exits_in_time);
    suite_add_tcase(s, tc);
    return s;
}
