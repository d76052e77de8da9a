/* test_bounds.c - every wait is bounded, as a user sees it: a lock held on
 * orders, Postgres frozen with SIGSTOP, a commit whose connection is cut,
 * a flood of idle connections and a client sending a byte a second.
 * Real processes, real Postgres, a private nats-server. */
#include "support/harness.h"
#include "db.h"
#include "suites.h"
#include "util.h"

#include <ctype.h>
#include <dirent.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define ORDER_JSON "{\"customer_id\":\"c-1\",\"items\":[{\"sku\":\"SKU-1\",\"qty\":1}]}"
#define HEALTHZ_MAX_MS 500

static struct natsd nats;
static pid_t postmaster;

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

#define ADMIN_TOKEN "bounds-admin-token-0123456789"
#define ADMIN_AUTH "Authorization: Bearer " ADMIN_TOKEN "\r\n"

/* GET path from 127.0.0.1 with header lines `headers` ("" or lines ending in
 * CRLF) within timeout_ms; returns the status (-1 none), *ms the time. */
static int timed_get_with(int port, const char *path, const char *headers, int timeout_ms,
                          int64_t *ms)
{
    char raw[512];
    int n = snprintf(raw, sizeof raw, "GET %s HTTP/1.1\r\nHost: x\r\n%sConnection: close\r\n\r\n",
                     path, headers);
    struct http_result r;
    int64_t t0 = mono_ms();
    int st = http_raw("127.0.0.1", port, raw, (size_t)n, timeout_ms, &r) == 0 ? r.status : -1;
    *ms = mono_ms() - t0;
    http_result_free(&r);
    return st;
}

static int timed_get(int port, const char *path, int timeout_ms, int64_t *ms)
{
    return timed_get_with(port, path, "", timeout_ms, ms);
}

static int timed_post(int port, const char *json, int timeout_ms, int64_t *ms, char id[64])
{
    char *raw = xasprintf("POST /orders HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                          "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                          strlen(json), json);
    struct http_result r;
    int64_t t0 = mono_ms();
    int st = http_raw("127.0.0.1", port, raw, strlen(raw), timeout_ms, &r) == 0 ? r.status : -1;
    *ms = mono_ms() - t0;
    if (id)
        snprintf(id, 64, "%s", st == 201 ? json_field(r.body, "id") : "");
    http_result_free(&r);
    free(raw);
    return st;
}

/* /healthz polled for for_ms: every answer 200 within 2 s, and at most one
 * in 20 slower than HEALTHZ_MAX_MS (a /healthz waiting for the database
 * would be slow every time; a noisy machine stalls one now and then). */
static void assert_healthz_stays_fast(int port, int64_t for_ms)
{
    int64_t worst = 0, ms;
    int n = 0, slow = 0;
    for (int64_t end = mono_ms() + for_ms; mono_ms() < end; sleep_ms(100), n++) {
        ck_assert_int_eq(timed_get(port, "/healthz", 2000, &ms), 200);
        slow += ms >= HEALTHZ_MAX_MS;
        worst = ms > worst ? ms : worst;
    }
    ck_assert_msg(slow * 20 <= n, "/healthz took %d ms or more %d times of %d (worst %lld ms)",
                  HEALTHZ_MAX_MS, slow, n, (long long)worst);
}

struct poster {
    int port;
    int64_t until_ms;
    int n, worst_ms, bad;
};

/* Posts one order after another until until_ms: each must answer 201 or 503 in time. */
static void *post_loop(void *arg)
{
    struct poster *p = arg;
    while (mono_ms() < p->until_ms) {
        int64_t ms;
        int st = timed_post(p->port, ORDER_JSON, 15000, &ms, NULL);
        if (st != 201 && st != 503)
            p->bad++, fprintf(stderr, "POST: %d after %lld ms\n", st, (long long)ms);
        p->worst_ms = ms > p->worst_ms ? (int)ms : p->worst_ms;
        p->n++;
    }
    return NULL;
}

static void put_stock(struct svc *inv)
{
    static const char *const h[] = {"Content-Type: application/json", NULL};
    struct http_result r;
    ck_assert_int_eq(http_do(inv->port, "PUT", "/inventory/SKU-1", h, "{\"available\":1000}", 18, &r), 0);
    ck_assert_int_eq(r.status, 200);
    http_result_free(&r);
}

static int none_pending(void *arg)
{
    (void)arg;
    return pg_long("orders", "SELECT count(*) FROM orders WHERE status = 'PENDING'") == 0;
}

START_TEST(lock_on_orders_is_bounded)
{
    struct svc orders, inv;
    svc_start(&orders, "order-service", nats.url, NULL);
    svc_start(&inv, "inventory-service", nats.url, NULL);
    put_stock(&inv);
    PGconn *c = pg_hold("orders", "LOCK TABLE orders IN ACCESS EXCLUSIVE MODE");
    ck_assert_ptr_nonnull(c);
    /* Three clients post all along; a request's bound is 3 s, plus the batch ahead of it. */
    struct poster p[3];
    pthread_t t[3];
    for (int i = 0; i < 3; i++) {
        p[i] = (struct poster){.port = orders.port, .until_ms = mono_ms() + 17000};
        ck_assert_int_eq(pthread_create(&t[i], NULL, post_loop, &p[i]), 0);
    }
    assert_healthz_stays_fast(orders.port, 20000);
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
        ck_assert_int_gt(p[i].n, 0);
        ck_assert_int_eq(p[i].bad, 0);
        ck_assert_msg(p[i].worst_ms < 8000, "a POST took %d ms under the lock", p[i].worst_ms);
    }
    ck_assert(pg_release(c, "COMMIT"));
    for (int i = 0; i < 5; i++) {
        int64_t ms;
        ck_assert_int_eq(timed_post(orders.port, ORDER_JSON, 10000, &ms, NULL), 201);
    }
    ck_assert_msg(wait_until(none_pending, NULL, 30000), "orders stayed PENDING");
    ck_assert_int_eq(svc_stop(&orders, SIGTERM), 0);
    ck_assert_int_eq(svc_stop(&inv, SIGTERM), 0);
}
END_TEST

/* ---- Postgres frozen with SIGSTOP ---- */

static pid_t ppid_of(pid_t pid)
{
    char path[64], line[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char *ok = fgets(line, sizeof line, f);
    fclose(f);
    char *close_paren = ok ? strrchr(line, ')') : NULL;
    int ppid = -1;
    if (close_paren)
        sscanf(close_paren + 2, "%*c %d", &ppid);
    return ppid;
}

/* SIGSTOP or SIGCONT the whole cluster: the postmaster first on stop (no
 * new backend meanwhile), last on continue. */
static void pg_signal_all(int sig)
{
    if (postmaster <= 0)
        return;
    if (sig == SIGSTOP)
        kill(postmaster, sig);
    DIR *d = opendir("/proc");
    for (struct dirent *e; d && (e = readdir(d));)
        if (isdigit((unsigned char)e->d_name[0]) && ppid_of(atoi(e->d_name)) == postmaster)
            kill(atoi(e->d_name), sig);
    if (d)
        closedir(d);
    if (sig != SIGSTOP)
        kill(postmaster, sig);
}

static void find_postmaster(void)
{
    long cp = pg_long("orders", "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'");
    postmaster = cp > 0 ? ppid_of((pid_t)cp) : -1;
}

static void thaw(void)
{
    pg_signal_all(SIGCONT); /* harmless when nothing is stopped */
}

START_TEST(frozen_postgres_then_sigterm)
{
    ck_assert_int_gt(postmaster, 1);
    struct svc orders;
    svc_start(&orders, "order-service", nats.url, NULL);
    int64_t ms;
    ck_assert_int_eq(timed_post(orders.port, ORDER_JSON, 10000, &ms, NULL), 201);
    pg_signal_all(SIGSTOP);
    int64_t frozen_at = mono_ms();
    struct poster p = {.port = orders.port, .until_ms = mono_ms() + 1};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, post_loop, &p), 0); /* one POST in flight when SIGTERM comes */
    assert_healthz_stays_fast(orders.port, 4000);
    int st = timed_get(orders.port, "/readyz", 5000, &ms);
    ck_assert_msg(st == 503 && ms < 1000, "/readyz: %d in %lld ms", st, (long long)ms);
    int64_t t0 = mono_ms();
    int code = svc_stop(&orders, SIGTERM);
    int64_t took = mono_ms() - t0;
    pthread_join(t, NULL);
    ck_assert_int_eq(p.bad, 0);
    sleep_ms(15000 - (mono_ms() - frozen_at));
    thaw();
    ck_assert_int_eq(code, 0);
    ck_assert_msg(took < 10000, "SIGTERM took %lld ms", (long long)took);
    svc_start(&orders, "order-service", nats.url, NULL);
    ck_assert_int_eq(timed_post(orders.port, ORDER_JSON, 10000, &ms, NULL), 201);
    ck_assert_int_eq(svc_stop(&orders, SIGTERM), 0);
}
END_TEST

/* One admin GET, on a thread of its own. */
struct admin_call {
    int port;
    const char *path;
    pthread_t thread;
    int status;
    int64_t ms;
};

static void *admin_call_main(void *arg)
{
    struct admin_call *c = arg;
    c->status = timed_get_with(c->port, c->path, ADMIN_AUTH, 60000, &c->ms);
    return NULL;
}

static int reconcile_answers(void *arg)
{
    int64_t ms;
    return timed_get_with(*(int *)arg, "/admin/reconcile", ADMIN_AUTH, 10000, &ms) == 200;
}

/* Operators asking at once while Postgres hangs are each answered within
 * DB_REQUEST_TIMEOUT and its grace, as a client is: one waits out its
 * statement, the others their turn at the admin connection (or the
 * reconciliation under way). Before, the admin connection waited as
 * background work does (30 s a statement) and the operators in turn. */
START_TEST(admin_requests_while_postgres_hangs_are_answered_in_seconds)
{
    ck_assert_int_gt(postmaster, 1);
    const char *const extra[] = {"ADMIN_TOKEN=" ADMIN_TOKEN, "DB_REQUEST_TIMEOUT=1s", NULL};
    struct svc orders;
    svc_start(&orders, "order-service", nats.url, extra);
    /* both connections up: the statements, not the connects, are waited for */
    ck_assert_msg(wait_until(reconcile_answers, &orders.port, 15000), "no reconciliation");
    int64_t ms;
    ck_assert_int_eq(timed_get_with(orders.port, "/admin/outbox", ADMIN_AUTH, 5000, &ms), 200);
    struct admin_call calls[] = {
        {.path = "/admin/outbox"}, {.path = "/admin/outbox?state=dead"},
        {.path = "/admin/dead-letters"}, {.path = "/admin/reconcile"}, {.path = "/admin/reconcile"},
    };
    pg_signal_all(SIGSTOP);
    for (size_t i = 0; i < ARRAY_LEN(calls); i++) {
        calls[i].port = orders.port;
        ck_assert_int_eq(pthread_create(&calls[i].thread, NULL, admin_call_main, &calls[i]), 0);
    }
    for (size_t i = 0; i < ARRAY_LEN(calls); i++)
        pthread_join(calls[i].thread, NULL);
    thaw();
    for (size_t i = 0; i < ARRAY_LEN(calls); i++) /* 1 s + the 2 s grace, 1 s queued: 3 s */
        ck_assert_msg(calls[i].status == 503 && calls[i].ms < 6000, "%s: %d after %lld ms",
                      calls[i].path, calls[i].status, (long long)calls[i].ms);
    ck_assert_msg(wait_until(reconcile_answers, &orders.port, 15000), "no reconciliation after");
    ck_assert_int_eq(svc_stop(&orders, SIGTERM), 0);
}
END_TEST

struct readyz_want {
    const struct svc *s;
    const char *body;
};

static int readyz_says(void *arg)
{
    const struct readyz_want *w = arg;
    struct http_result r;
    int st = http_get(w->s->port, "/readyz", &r);
    int says = r.body && strcmp(r.body, w->body) == 0;
    http_result_free(&r);
    return says && st == (strstr(w->body, "down") ? 503 : 200);
}

/* A service started while Postgres hangs waits for it (its migrations),
 * and /readyz tells NATS as it is meanwhile: it said "down" for NATS too
 * until Postgres came back (a helper's probe). */
START_TEST(readyz_tells_nats_while_postgres_holds_the_start)
{
    ck_assert_int_gt(postmaster, 1);
    pg_signal_all(SIGSTOP);
    struct svc orders;
    svc_spawn(&orders, "order-service", nats.url, NULL);
    struct readyz_want w = {&orders, "{\"checks\":{\"postgres\":\"down\",\"nats\":\"ok\"}}"};
    int told = wait_until(readyz_says, &w, 10000);
    thaw();
    ck_assert_msg(told, "/readyz did not say postgres down, nats ok");
    w.body = "{\"checks\":{\"postgres\":\"ok\",\"nats\":\"ok\"}}";
    ck_assert_msg(wait_until(readyz_says, &w, 30000), "not ready after the thaw");
    ck_assert_int_eq(svc_stop(&orders, SIGTERM), 0);
}
END_TEST

/* ---- a commit whose connection is cut ---- */

/* With the failpoint armed, the first order's commit loses its connection;
 * the answer must be what the database did, and nothing twice. */
static void commit_with_failpoint(const char *failpoint)
{
    char env[64], id[64], sql[160];
    snprintf(env, sizeof env, "FAILPOINTS=%s", failpoint);
    const char *const extra[] = {env, NULL};
    struct svc orders;
    svc_start(&orders, "order-service", nats.url, extra);
    int64_t ms;
    ck_assert_int_eq(timed_post(orders.port, ORDER_JSON, 10000, &ms, id), 201);
    ck_assert_msg(proc_log_has(&orders.proc, failpoint), "failpoint %s did not fire", failpoint);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM orders WHERE id = '%s'", id);
    ck_assert_int_eq(pg_long("orders", sql), 1);
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM orders"), 1);
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM outbox_events"), 1);
    ck_assert_int_eq(timed_post(orders.port, ORDER_JSON, 10000, &ms, NULL), 201);
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM orders"), 2);
    ck_assert_int_eq(svc_stop(&orders, SIGTERM), 0);
}

START_TEST(commit_cut_after_commit_is_settled_committed)
{
    commit_with_failpoint("db_commit_cut"); /* committed: 201 with that very order */
}
END_TEST

START_TEST(commit_cut_before_commit_is_written_again)
{
    commit_with_failpoint("db_commit_lost"); /* aborted: written again, once */
}
END_TEST

/* ---- connection limits ---- */

static int raise_nofile(void)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    return (int)rl.rlim_cur;
}

/* `flood` idle connections from 127.0.0.1; another address is served at
 * once meanwhile, an order and GETs. */
static void idle_flood_then_another_client(struct svc *orders, int flood)
{
    int *fds = xcalloc((size_t)flood, sizeof *fds);
    for (int i = 0; i < flood; i++)
        fds[i] = http_connect_from("127.0.0.1", orders->port);
    static const char get[] = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    char *post = xasprintf("POST /orders HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                           "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                           strlen(ORDER_JSON), ORDER_JSON);
    for (int i = 0; i < 5; i++) {
        struct http_result r;
        int64_t t0 = mono_ms();
        ck_assert_int_eq(http_raw("127.0.0.2", orders->port, i ? get : post, strlen(i ? get : post),
                                  1000, &r), 0);
        ck_assert_int_eq(r.status, i ? 200 : 201);
        ck_assert_int_lt(mono_ms() - t0, 1000);
        http_result_free(&r);
    }
    for (int i = 0; i < flood; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    free(fds);
    free(post);
}

START_TEST(idle_flood_does_not_stop_another_client)
{
    enum { FLOOD = 1100 };
    ck_assert_int_gt(raise_nofile(), FLOOD + 100);
    const char *const extra[] = {"HTTP_REQUEST_TIMEOUT=4s", NULL};
    struct svc orders;
    svc_start(&orders, "order-service", nats.url, extra);
    idle_flood_then_another_client(&orders, FLOOD);
    ck_assert_int_eq(svc_stop(&orders, SIGTERM), 0);
}
END_TEST

/* With few open files allowed (ulimit -n 512: 128 connections in all), a
 * client address gets at most half of them: at 256 per address, as many as
 * the total, one client's idle connections stopped every other (a
 * helper's probe). The service says what it allows. */
START_TEST(with_few_open_files_one_client_still_cannot_stop_another)
{
    struct rlimit was, rl = {512, 512}; /* the service inherits it */
    getrlimit(RLIMIT_NOFILE, &was);
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    const char *const extra[] = {"HTTP_REQUEST_TIMEOUT=4s", NULL};
    struct svc orders;
    svc_start(&orders, "order-service", nats.url, extra);
    setrlimit(RLIMIT_NOFILE, &was); /* as root: the tests after it (CK_FORK=no) keep theirs */
    ck_assert(proc_log_has(&orders.proc, "HTTP connections: 128 in all, 64 per client address"));
    idle_flood_then_another_client(&orders, 300);
    ck_assert_int_eq(svc_stop(&orders, SIGTERM), 0);
}
END_TEST

struct slow_get {
    int port;
    const char *src;
    int64_t ms;
    int status;
};

static void *slow_get(void *arg)
{
    struct slow_get *g = arg;
    static const char get[] = "GET /orders/6f1c1f1e-0000-4000-8000-000000000000 HTTP/1.1\r\n"
                              "Host: x\r\nConnection: close\r\n\r\n";
    struct http_result r = {0};
    int64_t t0 = mono_ms();
    g->status = http_raw(g->src, g->port, get, strlen(get), 30000, &r) == 0 ? r.status : -1;
    g->ms = mono_ms() - t0;
    http_result_free(&r);
    return NULL;
}

/* One client's flood of requests that wait on Postgres (here a lock, 0.5 s
 * each, on 2 workers) waits behind itself, not in front of another client:
 * that one's request is served by the next free worker. It waited behind
 * the flood in the order they came (5 s here; with 120 of them, until
 * the request timeout and a 503). */
START_TEST(a_flood_of_slow_requests_does_not_hold_up_another_client)
{
    enum { FLOOD = 20 };
    const char *const extra[] = {"HTTP_THREADS=2", "DB_REQUEST_TIMEOUT=500ms", NULL};
    struct svc orders;
    svc_start(&orders, "order-service", nats.url, extra);
    PGconn *c = pg_hold("orders", "LOCK TABLE orders IN ACCESS EXCLUSIVE MODE");
    ck_assert_ptr_nonnull(c);
    struct slow_get g[FLOOD + 1];
    pthread_t t[FLOOD + 1];
    for (int i = 0; i <= FLOOD; i++) {
        if (i == FLOOD)
            sleep_ms(300); /* the flood is queued */
        g[i] = (struct slow_get){.port = orders.port, .src = i < FLOOD ? "127.0.0.2" : "127.0.0.3"};
        ck_assert_int_eq(pthread_create(&t[i], NULL, slow_get, &g[i]), 0);
    }
    int64_t flood_ms = 0; /* the flood's last answer: about 20 x 0.5 s / 2 workers */
    for (int i = 0; i <= FLOOD; i++) {
        pthread_join(t[i], NULL);
        flood_ms = i < FLOOD && g[i].ms > flood_ms ? g[i].ms : flood_ms;
    }
    ck_assert(pg_release(c, "COMMIT"));
    /* behind the flood it would wait nearly as long as the flood's last
     * (less the 0.3 s it came later); served next, a request or two of it */
    ck_assert_int_eq(g[FLOOD].status, 503); /* answered: the lock outlasts its 0.5 s */
    ck_assert_msg(g[FLOOD].ms * 2 < flood_ms, "the other client waited %lld ms, the flood %lld ms",
                  (long long)g[FLOOD].ms, (long long)flood_ms);
    ck_assert_int_eq(svc_stop(&orders, SIGTERM), 0);
}
END_TEST

/* A COMMIT is a commit only of the transaction that began: not of one a
 * failed statement aborted (COMMIT then answers ROLLBACK, with success),
 * nor on a fresh connection after the first one went (the transaction went
 * with it; COMMIT there answers success with nothing written). Both said
 * "committed" (the review): ERR_RETRY, write again. */
START_TEST(a_commit_of_a_failed_or_lost_transaction_is_not_a_commit)
{
    ck_assert_int_eq(pg_exec("orders", "CREATE TABLE written (x int)"), 0);
    struct db *db = NULL;
    db_new(pg_url("orders"), "test", NULL, 0, &db);
    ck_assert_int_eq(db_begin(db), ERR_OK);
    ck_assert_int_eq(db_exec_sql(db, "INSERT INTO written VALUES (1)"), ERR_OK);
    ck_assert_int_ne(db_exec_sql(db, "SELECT 1 / 0"), ERR_OK);
    ck_assert_int_eq(db_commit(db, NULL), ERR_RETRY);
    ck_assert_int_eq(db_begin(db), ERR_OK);
    ck_assert_int_eq(db_exec_sql(db, "INSERT INTO written VALUES (2)"), ERR_OK);
    ck_assert_int_eq(pg_exec("orders", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                       "WHERE application_name LIKE '%test'"), 0);
    ck_assert_int_ne(db_exec_sql(db, "INSERT INTO written VALUES (3)"), ERR_OK);
    ck_assert_int_eq(db_commit(db, NULL), ERR_RETRY);
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM written"), 0);
    db_free(db);
}
END_TEST

struct in_doubt {
    int port, status;
    struct http_result r;
};

#define SLOW_ORDER "{\"customer_id\":\"slow-commit\",\"items\":[{\"sku\":\"SKU-1\",\"qty\":1}]}"

static int post_keyed(int port, struct http_result *r)
{
    static const char *const h[] = {"Content-Type: application/json", "Idempotency-Key: doubt-1",
                                    NULL};
    return http_do(port, "POST", "/orders", h, SLOW_ORDER, strlen(SLOW_ORDER), r) == 0 ? r->status
                                                                                       : -1;
}

static void *post_slow_commit(void *arg)
{
    struct in_doubt *d = arg;
    d->status = post_keyed(d->port, &d->r);
    return NULL;
}

static int intake_committing(void *arg)
{
    long *pid = arg;
    *pid = pg_long("orders", "SELECT pid FROM pg_stat_activity WHERE application_name = "
                             "'order-service/intake' AND state = 'active' AND query = 'COMMIT'");
    return *pid > 0;
}

/* The backend running an order's COMMIT is frozen past every bound: the
 * order may yet be written, so its 503 says so and gives its Location (it
 * said "cannot be reached", and the order was then committed and
 * confirmed: a helper's probe). Thawed, the request sent again with its
 * Idempotency-Key, as the answer says, ends with one order: the one at
 * that Location if the commit went through (here the statement timeout
 * may cancel it first, as the frozen COMMIT was in a trigger). */
START_TEST(a_commit_unanswered_in_time_is_answered_as_in_doubt)
{
    const char *const extra[] = {"DB_REQUEST_TIMEOUT=1s", NULL};
    struct svc orders;
    svc_start(&orders, "order-service", nats.url, extra);
    ck_assert_int_eq(pg_exec("orders", "CREATE FUNCTION slow_commit() RETURNS trigger "
                             "LANGUAGE plpgsql AS $$BEGIN PERFORM pg_sleep(0.5); RETURN NULL; END$$"), 0);
    ck_assert_int_eq(pg_exec("orders", "CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON orders "
                             "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
                             "WHEN (NEW.customer_id = 'slow-commit') EXECUTE FUNCTION slow_commit()"), 0);
    struct in_doubt d = {.port = orders.port};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, post_slow_commit, &d), 0);
    long pid = 0;
    ck_assert(wait_until(intake_committing, &pid, 5000));
    ck_assert_int_eq(kill((pid_t)pid, SIGSTOP), 0);
    pthread_join(t, NULL);
    ck_assert_int_eq(kill((pid_t)pid, SIGCONT), 0);
    ck_assert_int_eq(d.status, 503);
    ck_assert_ptr_nonnull(strstr(d.r.body, "may still be written"));
    ck_assert_int_eq(strncmp(d.r.location, "/orders/", 8), 0);
    struct http_result again;
    int st = -1;
    for (int i = 0; i < 50 && (st = post_keyed(orders.port, &again)) == 503; i++) {
        http_result_free(&again); /* its key is locked until the old transaction ends */
        sleep_ms(200);
    }
    ck_assert_msg(st == 200 || st == 201, "sent again: %d", st);
    if (st == 200) /* the order in doubt was written: it is the one */
        ck_assert_str_eq(json_field(again.body, "id"), d.r.location + 8);
    http_result_free(&again);
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM orders WHERE customer_id = 'slow-commit'"), 1);
    http_result_free(&d.r);
    ck_assert_int_eq(svc_stop(&orders, SIGTERM), 0);
}
END_TEST

START_TEST(a_byte_a_second_is_cut_off)
{
    const char *const extra[] = {"HTTP_REQUEST_TIMEOUT=3s", NULL};
    struct svc orders;
    svc_start(&orders, "order-service", nats.url, extra);
    int fd = http_connect_from("127.0.0.3", orders.port);
    ck_assert_int_ge(fd, 0);
    static const char slow[] = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaa\r\n\r\n";
    int64_t t0 = mono_ms(), cut_after = -1;
    for (size_t i = 0; i < sizeof slow - 1 && cut_after < 0; i++) {
        if (send(fd, slow + i, 1, MSG_NOSIGNAL) != 1) {
            cut_after = mono_ms() - t0;
            break;
        }
        char c;
        if (recv(fd, &c, 1, MSG_DONTWAIT) == 0)
            cut_after = mono_ms() - t0; /* the server closed it */
        sleep_ms(500);
    }
    close(fd);
    ck_assert_msg(cut_after > 0 && cut_after < 6000, "slow client not cut off (%lld ms)",
                  (long long)cut_after);
    ck_assert_int_eq(http_get(orders.port, "/healthz", NULL), 200);
    ck_assert_int_eq(svc_stop(&orders, SIGTERM), 0);
}
END_TEST

/* ---- bad bytes ---- */

static int post_with_traceparent(int port, const char *tp)
{
    char *raw = xasprintf("POST /orders HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                          "Content-Type: application/json\r\ntraceparent: %s\r\n"
                          "Content-Length: %zu\r\n\r\n%s", tp, strlen(ORDER_JSON), ORDER_JSON);
    struct http_result r;
    int st = http_raw("127.0.0.1", port, raw, strlen(raw), 10000, &r) == 0 ? r.status : -1;
    http_result_free(&r);
    free(raw);
    return st;
}

START_TEST(bad_traceparent_never_fails_the_order)
{
    static const char good[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    struct svc orders;
    svc_start(&orders, "order-service", nats.url, NULL);
    int st = post_with_traceparent(orders.port, "00-\xff\xfe\xc3(-not-utf8");
    ck_assert_msg(st == 201 || st == 400, "non-UTF-8 traceparent: %d", st);
    ck_assert_int_eq(post_with_traceparent(orders.port, "00-zz-not-hex-01"), 201);
    ck_assert_int_eq(post_with_traceparent(orders.port, good), 201);
    /* the invalid ones are ignored (each order starts a new trace), the valid
     * one is continued: its trace id, a child span of its own */
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM outbox_events WHERE traceparent IS NULL"), 0);
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM outbox_events WHERE traceparent LIKE "
                                       "'00-4bf92f3577b34da6a3ce929d0e0e4736-%'"), 1);
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM outbox_events WHERE traceparent = "
                                       "'00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'"), 0);
    ck_assert_int_eq(svc_stop(&orders, SIGTERM), 0);
}
END_TEST

/* The durable consumer's ack-pending and redelivered counts, from monitoring. */
static void consumer_counts(struct natsd *n, const char *durable, long *pending, long *redelivered)
{
    struct http_result r;
    *pending = *redelivered = -1;
    static const char req[] = "GET /jsz?consumers=true HTTP/1.0\r\nHost: x\r\n\r\n"; /* no chunks */
    if (http_raw("127.0.0.1", n->monitor_port, req, sizeof req - 1, 5000, &r) != 0)
        return;
    json_t *o = json_loads(r.body, JSON_DECODE_INT_AS_REAL, NULL);
    json_t *accts = json_object_get(o, "account_details");
    for (size_t i = 0; i < json_array_size(accts); i++) {
        json_t *sd = json_object_get(json_array_get(accts, i), "stream_detail");
        for (size_t j = 0; j < json_array_size(sd); j++) {
            json_t *cd = json_object_get(json_array_get(sd, j), "consumer_detail");
            for (size_t k = 0; k < json_array_size(cd); k++) {
                json_t *c = json_array_get(cd, k);
                if (strcmp(json_string_value(json_object_get(c, "name")) ?: "", durable) != 0)
                    continue;
                *pending = (long)json_number_value(json_object_get(c, "num_ack_pending"));
                *redelivered = (long)json_number_value(json_object_get(c, "num_redelivered"));
            }
        }
    }
    if (*pending < 0)
        fprintf(stderr, "consumer %s not found in: %.400s\n", durable, r.body);
    json_decref(o);
    http_result_free(&r);
}

static int two_dead_letters(void *arg)
{
    (void)arg;
    return pg_long("orders", "SELECT count(*) FROM dead_letters") == 2;
}

START_TEST(not_utf8_messages_are_dead_lettered_once)
{
    struct svc orders;
    svc_start(&orders, "order-service", nats.url, NULL);
    char id1[UUID_STR_LEN], id2[UUID_STR_LEN], order[UUID_STR_LEN];
    uuid_v4(id1);
    uuid_v4(id2);
    uuid_v4(order);
    char *reply = xasprintf("{\"event_id\":\"%s\",\"type\":\"InventoryReserved\","
                            "\"order_id\":\"%s\",\"occurred_at\":\"2026-01-01T00:00:00Z\"}", id1, order);
    char *bad_body = xasprintf("{\"event_id\":\"%s\",\"type\":\"\xff\xfe\"}", id2);
    ck_assert_int_eq(natsd_publish(&nats, "inventory.\xff\xfe", id1, reply), 0);
    ck_assert_int_eq(natsd_publish(&nats, "inventory.reserved", id2, bad_body), 0);
    ck_assert_msg(wait_until(two_dead_letters, NULL, 15000), "not dead-lettered");
    sleep_ms(2500); /* a redelivery would come within NAK_DELAY (1 s) */
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM dead_letters"), 2);
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM dead_letters "
                                       "WHERE encode(subject_raw, 'hex') = '696e76656e746f72792efffe' "
                                       "AND subject = 'inventory.\\xff\\xfe'"), 1);
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM dead_letters WHERE position("
                                       "'Nats-Msg-Id'::bytea in headers) > 0"), 2);
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM processed_messages"), 0);
    ck_assert_int_eq((long)svc_metric(&orders, "order_replies_total{result=\"poison\"}"), 2);
    long pending, redelivered;
    consumer_counts(&nats, "order-service", &pending, &redelivered);
    ck_assert_int_eq(pending, 0);
    ck_assert_int_eq(redelivered, 0);
    free(reply);
    free(bad_body);
    ck_assert_int_eq(svc_stop(&orders, SIGTERM), 0);
}
END_TEST

Suite *bounds_suite(void)
{
    Suite *s = suite_create("bounds");
    TCase *tc = tcase_create("bounds");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, lock_on_orders_is_bounded);
    tcase_add_test(tc, commit_cut_after_commit_is_settled_committed);
    tcase_add_test(tc, commit_cut_before_commit_is_written_again);
    tcase_add_test(tc, idle_flood_does_not_stop_another_client);
    tcase_add_test(tc, with_few_open_files_one_client_still_cannot_stop_another);
    tcase_add_test(tc, a_flood_of_slow_requests_does_not_hold_up_another_client);
    tcase_add_test(tc, a_commit_unanswered_in_time_is_answered_as_in_doubt);
    tcase_add_test(tc, a_commit_of_a_failed_or_lost_transaction_is_not_a_commit);
    tcase_add_test(tc, a_byte_a_second_is_cut_off);
    tcase_add_test(tc, bad_traceparent_never_fails_the_order);
    tcase_add_test(tc, not_utf8_messages_are_dead_lettered_once);
    suite_add_tcase(s, tc);
    TCase *frozen = tcase_create("frozen");
    tcase_add_unchecked_fixture(frozen, find_postmaster, thaw);
    tcase_add_checked_fixture(frozen, setup, teardown);
    tcase_set_timeout(frozen, 120);
    tcase_add_test(frozen, frozen_postgres_then_sigterm);
    tcase_add_test(frozen, admin_requests_while_postgres_hangs_are_answered_in_seconds);
    tcase_add_test(frozen, readyz_tells_nats_while_postgres_holds_the_start);
    suite_add_tcase(s, frozen);
    return s;
}
