/* test_admin.c - the admin API against real servers: the token guard, a
 * dead outbox row listed, requeued and published once, a poison message
 * listed and re-applied once its cause is fixed, one order's event (and
 * the inventory's reply to it) sent again with its own id. */
#include "support/harness.h"
#include "suites.h"
#include "util.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOKEN "s3cret-admin-token-0123456789"
#define ORDER "{\"customer_id\":\"c-1\",\"items\":[{\"sku\":\"SKU-1\",\"qty\":1}]}"

static struct natsd nats;

static void setup(void)
{
    pg_reset("orders");
    pg_reset("inventory");
}

static void teardown(void)
{
    natsd_cleanup(&nats);
}

/* An admin request with the given Authorization value (NULL: none). */
static int admin_do(int port, const char *method, const char *path, const char *auth,
                    const char *body, struct http_result *out)
{
    char hauth[256];
    snprintf(hauth, sizeof hauth, "Authorization: %s", auth ? auth : "");
    const char *h[] = {"Content-Type: application/json", "X-Admin-Actor: test-operator",
                       auth ? hauth : NULL, NULL};
    struct http_result local;
    struct http_result *r = out ? out : &local;
    if (http_do(port, method, path, h, body, body ? strlen(body) : 0, r) != 0)
        return -1;
    int st = r->status;
    if (!out)
        http_result_free(r);
    return st;
}

/* A request with no header at all: no token, no Content-Type. */
static int bare_do(int port, const char *method, const char *path, const char *body,
                   struct http_result *out)
{
    const char *h[] = {NULL};
    if (http_do(port, method, path, h, body, body ? strlen(body) : 0, out) != 0)
        return -1;
    return out->status;
}

static int admin(struct svc *s, const char *method, const char *path, const char *body,
                 struct http_result *out)
{
    return admin_do(s->port, method, path, "Bearer " TOKEN, body, out);
}

static const char *error_code(const char *body)
{
    static char code[64];
    json_t *o = json_loads(body, 0, NULL);
    snprintf(code, sizeof code, "%s",
             json_string_value(json_object_get(json_object_get(o, "error"), "code")) ?: "");
    json_decref(o);
    return code;
}

static int file_contains(const char *path, const char *needle)
{
    char *cmd = xasprintf("grep -qF -- '%s' '%s'", needle, path);
    int found = system(cmd) == 0;
    free(cmd);
    return found;
}

/* A broker, and the service with the admin API enabled. */
static void start_with_token(struct svc *s, const char *name)
{
    static const char *const env[] = {"ADMIN_TOKEN=" TOKEN, NULL};
    natsd_start(&nats);
    svc_start(s, name, nats.url, env);
}

/* The same with a duplicate window of 3 s on the stream it writes: short,
 * and long enough for the checks made before a re-send is due. */
static void start_with_short_window(struct svc *s, const char *name)
{
    static const char *const env[] = {"ADMIN_TOKEN=" TOKEN, "STREAM_DUPLICATE_WINDOW=3s", NULL};
    natsd_start(&nats);
    svc_start(s, name, nats.url, env);
}

START_TEST(token_guard_401_403_200_and_never_logged)
{
    struct svc s;
    start_with_token(&s, "order-service");
    struct http_result r;
    ck_assert_int_eq(admin_do(s.port, "GET", "/admin/outbox", NULL, NULL, &r), 401);
    ck_assert_str_eq(error_code(r.body), "unauthorized");
    ck_assert_msg(strstr(r.head, "\r\nWWW-Authenticate: Bearer\r\n") != NULL, "%s", r.head);
    http_result_free(&r);
    ck_assert_int_eq(admin_do(s.port, "GET", "/admin/outbox", "Bearer wrong-token-wrong-token",
                              NULL, &r), 403);
    ck_assert_str_eq(error_code(r.body), "forbidden");
    http_result_free(&r);
    ck_assert_int_eq(admin(&s, "GET", "/admin/outbox", NULL, &r), 200);
    ck_assert_ptr_nonnull(strstr(r.body, "\"rows\":[]"));
    http_result_free(&r);
    /* numbers are their digits alone, within range (not clamped, no blanks) */
    static const char *const bad[] = {"/admin/outbox?limit=0", "/admin/outbox?limit=%205",
                                      "/admin/outbox?after=99999999999999999999",
                                      "/admin/outbox?after=9223372036854775808"};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        ck_assert_msg(admin(&s, "GET", bad[i], NULL, &r) == 400, "%s", bad[i]);
        ck_assert_str_eq(error_code(r.body), "validation_failed");
        http_result_free(&r);
    }
    ck_assert_int_eq(admin(&s, "POST", "/admin/outbox/requeue", "not json", NULL), 400);
    ck_assert_int_eq(admin_do(s.port, "GET", "/admin/outbox", "Bearer ", NULL, NULL), 401);
    ck_assert_double_eq(svc_metric(&s, "admin_denied_total{reason=\"wrong\"}"), 1);
    /* the token is asked for before anything else about the request */
    ck_assert_int_eq(bare_do(s.port, "POST", "/admin/outbox/requeue", "x", &r), 401);
    ck_assert_str_eq(error_code(r.body), "unauthorized");
    http_result_free(&r);
    ck_assert_int_eq(admin_do(s.port, "PUT", "/admin/outbox", NULL, "{}", NULL), 401);
    ck_assert_int_eq(admin_do(s.port, "PUT", "/admin/outbox", "Bearer " TOKEN, "{}", NULL), 405);
    /* an operator's GET may be work (a reconciliation run): HEAD starts none */
    ck_assert_int_eq(admin_do(s.port, "HEAD", "/admin/reconcile", "Bearer " TOKEN, NULL, &r), 405);
    ck_assert_msg(strstr(r.head, "\r\nAllow: GET\r\n") != NULL, "%s", r.head);
    http_result_free(&r);
    /* event_id and all at once: which was meant? (it requeued every dead row) */
    ck_assert_int_eq(admin(&s, "POST", "/admin/outbox/requeue",
                           "{\"all\":true,\"event_id\":\"6f1c1f1e-0000-4000-8000-000000000000\"}",
                           &r), 400);
    ck_assert_str_eq(error_code(r.body), "validation_failed");
    http_result_free(&r);
    /* a client that sends the token as its name does not get it logged */
    static const char *const leak[] = {"Authorization: Bearer " TOKEN, "X-Admin-Actor: " TOKEN,
                                       NULL};
    ck_assert_int_eq(http_do(s.port, "GET", "/admin/outbox", leak, NULL, 0, &r), 0);
    ck_assert_int_eq(r.status, 200);
    http_result_free(&r);
    /* the whole of /admin/ asks for the token: which paths exist is not told */
    ck_assert_int_eq(admin_do(s.port, "GET", "/admin/no-such-thing", NULL, NULL, NULL), 401);
    ck_assert_int_eq(admin(&s, "GET", "/admin/no-such-thing", NULL, NULL), 404);
    ck_assert_int_eq(svc_stop(&s, SIGTERM), 0);
    ck_assert(!file_contains(s.proc.log, TOKEN));
    ck_assert(!file_contains(s.proc.log, "wrong-token"));
    ck_assert(file_contains(s.proc.log, "test-operator"));
}
END_TEST

START_TEST(disabled_without_token_and_on_its_own_port)
{
    natsd_start(&nats);
    struct svc s, inv;
    svc_start(&s, "order-service", nats.url, NULL);
    ck_assert_int_eq(admin(&s, "GET", "/admin/outbox", NULL, NULL), 404);
    struct http_result r; /* disabled: 404 whatever the method or body */
    ck_assert_int_eq(bare_do(s.port, "POST", "/admin/outbox/requeue", "x", &r), 404);
    http_result_free(&r);
    ck_assert_int_eq(bare_do(s.port, "GET", "/admin/outbox/requeue", NULL, &r), 404);
    http_result_free(&r);
    ck_assert_int_eq(bare_do(s.port, "GET", "/admin/no-such-thing", NULL, &r), 404);
    http_result_free(&r);
    ck_assert_int_eq(svc_stop(&s, SIGTERM), 0);
    char port_env[32];
    int aport = free_port();
    snprintf(port_env, sizeof port_env, "ADMIN_PORT=%d", aport);
    const char *env[] = {"ADMIN_TOKEN=" TOKEN, port_env, NULL};
    svc_start(&inv, "inventory-service", nats.url, env);
    ck_assert_int_eq(admin(&inv, "GET", "/admin/dead-letters", NULL, NULL), 404);
    ck_assert_int_eq(admin_do(aport, "GET", "/admin/dead-letters", "Bearer " TOKEN, NULL, NULL), 200);
    ck_assert_int_eq(admin_do(aport, "GET", "/admin/dead-letters", NULL, NULL, NULL), 401);
    ck_assert_int_eq(svc_stop(&inv, SIGTERM), 0);
}
END_TEST

/* Any token without blanks is taken; a short one is warned of at start. */
START_TEST(a_short_token_works_with_a_warning)
{
    natsd_start(&nats);
    struct svc s;
    static const char *const env[] = {"ADMIN_TOKEN=s3cret", NULL};
    svc_start(&s, "order-service", nats.url, env);
    ck_assert_int_eq(admin_do(s.port, "GET", "/admin/outbox", "Bearer s3cret", NULL, NULL), 200);
    ck_assert_int_eq(admin_do(s.port, "GET", "/admin/outbox", "Bearer s3cre", NULL, NULL), 403);
    ck_assert_int_eq(svc_stop(&s, SIGTERM), 0);
    ck_assert(file_contains(s.proc.log, "shorter than 16 characters"));
    ck_assert(!file_contains(s.proc.log, "s3cret"));
}
END_TEST

/* The admin API answers from the end of the migrations, as orders are
 * taken: an operator can list and requeue while the first NATS connection
 * is still being made (here three servers that never speak: nats.c waits
 * 2 s on each). Only the reconciliation, which reads the streams, waits for
 * the connection. It all answered 503 "starting" until connected, and a
 * request just after /readyz said postgres ok could meet that too. */
START_TEST(admin_answers_before_the_first_nats_connection)
{
    int port[3], fd[3];
    for (int i = 0; i < 3; i++)
        fd[i] = mute_listener(&port[i]);
    char url[128];
    snprintf(url, sizeof url, "nats://127.0.0.1:%d,nats://127.0.0.1:%d,nats://127.0.0.1:%d",
             port[0], port[1], port[2]);
    static const char *const env[] = {"ADMIN_TOKEN=" TOKEN, NULL};
    struct svc s;
    svc_start(&s, "order-service", url, env); /* about 1 s of the 6 s round */
    struct http_result r;
    ck_assert_int_eq(admin(&s, "GET", "/admin/reconcile", NULL, &r), 503);
    ck_assert_msg(strstr(r.body, "connecting to NATS") != NULL, "%s", r.body);
    http_result_free(&r);
    ck_assert_int_eq(admin(&s, "GET", "/admin/outbox", NULL, NULL), 200);
    ck_assert_int_eq(admin(&s, "GET", "/admin/dead-letters", NULL, NULL), 200);
    ck_assert_int_eq(admin(&s, "POST", "/admin/outbox/requeue", "{\"all\":true}", NULL), 200);
    ck_assert_int_eq(svc_stop(&s, SIGTERM), 0);
    for (int i = 0; i < 3; i++)
        close(fd[i]);
}
END_TEST

static int row_dead(void *arg)
{
    (void)arg;
    return pg_long("orders", "SELECT count(*) FROM outbox WHERE status = 'dead'") == 1;
}

static int all_published(void *arg)
{
    (void)arg;
    return pg_long("orders", "SELECT count(*) FROM outbox WHERE status <> 'published'") == 0;
}

START_TEST(dead_row_listed_requeued_published_once)
{
    natsd_start_conf(&nats, "max_payload: 1024"); /* the cause: too small a limit */
    struct svc s;
    const char *env[] = {"ADMIN_TOKEN=" TOKEN, "RELAY_MAX_ATTEMPTS=2", NULL};
    svc_start(&s, "order-service", nats.url, env);
    ck_assert_int_eq(pg_exec("orders",
        "INSERT INTO outbox (event_id, subject, event_type, payload) VALUES "
        "('11111111-2222-4333-8444-555555555555', 'orders.created', 'OrderCreated', "
        "repeat('x', 2000))"), 0);
    ck_assert(wait_until(row_dead, NULL, 20000));
    struct http_result r;
    ck_assert_int_eq(admin(&s, "GET", "/admin/outbox?state=dead", NULL, &r), 200);
    ck_assert_ptr_nonnull(strstr(r.body, "11111111-2222-4333-8444-555555555555"));
    ck_assert_ptr_nonnull(strstr(r.body, "\"attempts\":2"));
    ck_assert_ptr_nonnull(strstr(r.body, "\"last_error\":\""));
    /* an age in microseconds, as Postgres gave it: 4.012294, not 4.0122939999999998 */
    const char *age = strstr(r.body, "\"age_seconds\":");
    ck_assert_ptr_nonnull(age);
    age += strlen("\"age_seconds\":");
    ck_assert_msg(strspn(age, "0123456789.") <= 14, "age_seconds %.24s", age);
    http_result_free(&r);
    /* the one row, on a page of one: no page after it (one was announced) */
    ck_assert_int_eq(admin(&s, "GET", "/admin/outbox?state=dead&limit=1", NULL, &r), 200);
    ck_assert_ptr_nonnull(strstr(r.body, "\"next_after\":null"));
    http_result_free(&r);
    /* the cause is fixed: the default limit again */
    natsd_kill(&nats);
    nats.conf[0] = '\0';
    natsd_restart(&nats);
    ck_assert_int_eq(admin(&s, "POST", "/admin/outbox/requeue",
                           "{\"event_id\":\"11111111-2222-4333-8444-555555555555\"}", &r), 200);
    ck_assert_ptr_nonnull(strstr(r.body, "\"requeued\":1"));
    http_result_free(&r);
    ck_assert(wait_until(all_published, NULL, 20000));
    ck_assert_int_eq(natsd_stream_msgs(&nats, "ORDERS"), 1);
    ck_assert_int_eq(admin(&s, "POST", "/admin/outbox/requeue",
                           "{\"event_id\":\"11111111-2222-4333-8444-555555555555\"}", &r), 409);
    ck_assert_str_eq(error_code(r.body), "already_published");
    http_result_free(&r);
    ck_assert_int_eq(admin(&s, "POST", "/admin/outbox/requeue",
                           "{\"event_id\":\"00000000-2222-4333-8444-555555555555\"}", NULL), 404);
    ck_assert_int_eq(admin(&s, "POST", "/admin/outbox/requeue", "{\"event_id\":\"x\"}", NULL), 400);
    /* neither: the answer names both ways (it spoke of event_id alone) */
    ck_assert_int_eq(admin(&s, "POST", "/admin/outbox/requeue", "{\"all\":false}", &r), 400);
    ck_assert_ptr_nonnull(strstr(r.body, "\\\"all\\\": true"));
    http_result_free(&r);
    /* "all" not a boolean: the answer names it (it named event_id) */
    ck_assert_int_eq(admin(&s, "POST", "/admin/outbox/requeue", "{\"all\":\"true\"}", &r), 400);
    ck_assert_ptr_nonnull(strstr(r.body, "\"field\":\"all\""));
    http_result_free(&r);
    ck_assert_int_eq(admin(&s, "POST", "/admin/outbox/requeue", "{\"all\":true}", &r), 200);
    ck_assert_ptr_nonnull(strstr(r.body, "\"requeued\":0"));
    http_result_free(&r);
    ck_assert_double_eq(svc_metric(&s, "admin_actions_total{action=\"requeue\",result=\"ok\"}"), 1);
    ck_assert_int_eq(svc_stop(&s, SIGTERM), 0);
}
END_TEST

#define GHOST "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
#define REPLY_ID "12345678-1234-4234-8234-123456789abc"
#define EVENT_ID "0e0e0e0e-1111-4222-8333-444444444444" /* an OrderCreated of GHOST */

static int dead_letters(void *arg)
{
    return pg_long("orders", "SELECT count(*) FROM dead_letters") == *(long *)arg;
}

/* The id of the dead letter with that event id (or of the one without). */
static long dead_letter_id(const char *event_id)
{
    char *sql = event_id ? xasprintf("SELECT id FROM dead_letters WHERE event_id = '%s'", event_id)
                         : xasprintf("SELECT id FROM dead_letters WHERE event_id IS NULL");
    long id = pg_long("orders", sql);
    free(sql);
    return id;
}

/* POST /admin/dead-letters/<action> {"id":id} */
static int on_dead_letter(struct svc *s, const char *action, long id, struct http_result *r)
{
    char body[64], path[64];
    snprintf(body, sizeof body, "{\"id\":%ld}", id);
    snprintf(path, sizeof path, "/admin/dead-letters/%s", action);
    return admin(s, "POST", path, body, r);
}

static int reapply(struct svc *s, long id, struct http_result *r)
{
    return on_dead_letter(s, "reapply", id, r);
}

/* GETs an admin listing of `rows` rows; its next_after, 0 when null. */
static json_int_t page_rows(struct svc *s, const char *path, size_t rows)
{
    struct http_result r;
    ck_assert_int_eq(admin(s, "GET", path, NULL, &r), 200);
    json_t *page = json_loads(r.body, 0, NULL);
    http_result_free(&r);
    ck_assert_int_eq(json_array_size(json_object_get(page, "rows")), rows);
    json_int_t next = json_integer_value(json_object_get(page, "next_after"));
    json_decref(page);
    return next;
}

START_TEST(poison_listed_and_reapplied_once_its_cause_is_fixed)
{
    struct svc s;
    start_with_token(&s, "order-service");
    /* a reply for an order this database does not have, and bytes that are no JSON */
    ck_assert_int_eq(natsd_publish(&nats, "inventory.reserved", REPLY_ID,
        "{\"event_id\":\"" REPLY_ID "\",\"type\":\"InventoryReserved\",\"order_id\":\"" GHOST
        "\",\"occurred_at\":\"2026-01-01T00:00:00Z\"}"), 0);
    ck_assert_int_eq(natsd_publish(&nats, "inventory.reserved", "junk-1", "\xff\xfe{junk"), 0);
    long two = 2;
    ck_assert(wait_until(dead_letters, &two, 15000));
    struct http_result r;
    ck_assert_int_eq(admin(&s, "GET", "/admin/dead-letters", NULL, &r), 200);
    ck_assert_ptr_nonnull(strstr(r.body, "\"event_id\":\"" REPLY_ID "\""));
    ck_assert_ptr_nonnull(strstr(r.body, "unknown order"));
    ck_assert_ptr_nonnull(strstr(r.body, "\"body_base64\":\"//57anVuaw==\""));
    ck_assert_ptr_nonnull(strstr(r.body, "\"body_preview\":\"\xef\xbf\xbd\xef\xbf\xbd{junk\""));
    http_result_free(&r);
    long junk = dead_letter_id(NULL), ghost = dead_letter_id(REPLY_ID);
    ck_assert_int_eq(reapply(&s, junk, &r), 409); /* nothing can fix bytes like these */
    ck_assert_str_eq(error_code(r.body), "still_poison");
    http_result_free(&r);
    /* the cause is fixed: the order exists (restored, say) */
    ck_assert_int_eq(pg_exec("orders", "INSERT INTO orders (id, customer_id, event_id) VALUES ('" GHOST
                             "', 'c-1', gen_random_uuid())"), 0);
    /* while the database still refuses it (a trigger here): 409 with its
     * words, nothing changed (it was a 500) */
    ck_assert_int_eq(pg_exec("orders", "CREATE FUNCTION no_update() RETURNS trigger LANGUAGE "
                             "plpgsql AS $$BEGIN RAISE EXCEPTION 'no updates today'; END$$"), 0);
    ck_assert_int_eq(pg_exec("orders", "CREATE TRIGGER no_update BEFORE UPDATE ON orders "
                             "FOR EACH ROW EXECUTE FUNCTION no_update()"), 0);
    ck_assert_int_eq(reapply(&s, ghost, &r), 409);
    ck_assert_str_eq(error_code(r.body), "still_poison");
    ck_assert_ptr_nonnull(strstr(r.body, "no updates today"));
    http_result_free(&r);
    /* discarded meanwhile, then re-applied after all: the record says what
     * the re-apply did (it kept "discarded", checked below: a review) */
    ck_assert_int_eq(on_dead_letter(&s, "discard", ghost, NULL), 200);
    ck_assert_int_eq(pg_exec("orders", "DROP TRIGGER no_update ON orders; DROP FUNCTION no_update()"), 0);
    ck_assert_int_eq(reapply(&s, ghost, &r), 200);
    ck_assert_ptr_nonnull(strstr(r.body, "\"result\":\"confirmed\""));
    http_result_free(&r);
    char *updated = pg_text("orders", "SELECT updated_at FROM orders WHERE id = '" GHOST "'");
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM orders WHERE status = 'CONFIRMED'"), 1);
    /* again: the same event id, a duplicate, nothing changes */
    ck_assert_int_eq(reapply(&s, ghost, &r), 200);
    ck_assert_ptr_nonnull(strstr(r.body, "\"result\":\"duplicate\""));
    http_result_free(&r);
    char *after = pg_text("orders", "SELECT updated_at FROM orders WHERE id = '" GHOST "'");
    ck_assert_str_eq(updated, after);
    /* the record keeps what the first reapply did (it was overwritten) */
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT reapply_result FROM dead_letters WHERE id = %ld", ghost);
    char *kept = pg_text("orders", sql);
    ck_assert_str_eq(kept, "confirmed");
    free(kept);
    free(updated);
    free(after);
    ck_assert_int_eq(reapply(&s, 999999, NULL), 404);
    ck_assert_int_eq(admin(&s, "POST", "/admin/dead-letters/reapply", "{\"id\":\"1\"}", NULL), 400);
    int gauge = 0; /* the alert's gauge counts the open ones (updated every 5 s) */
    for (int i = 0; i < 150 && !gauge; i++, sleep_ms(100))
        gauge = svc_metric(&s, "inbox_dead_letters") == 1;
    ck_assert(gauge);
    /* the open ones: only the junk is left */
    ck_assert_int_eq(admin(&s, "GET", "/admin/dead-letters?state=open", NULL, &r), 200);
    ck_assert_ptr_null(strstr(r.body, REPLY_ID));
    http_result_free(&r);
    /* what nothing will fix is closed by hand: no longer open, kept as
     * discarded (there was no way to close it: a helper's probe); one
     * closed before keeps what it had */
    ck_assert_int_eq(on_dead_letter(&s, "discard", junk, &r), 200);
    ck_assert_ptr_nonnull(strstr(r.body, "\"result\":\"discarded\""));
    http_result_free(&r);
    ck_assert_int_eq(admin(&s, "GET", "/admin/dead-letters", NULL, &r), 200);
    ck_assert_ptr_nonnull(strstr(r.body, "\"rows\":[]"));
    http_result_free(&r);
    for (int i = 0; i < 150 && gauge; i++, sleep_ms(100))
        gauge = svc_metric(&s, "inbox_dead_letters") != 0;
    ck_assert(!gauge);
    ck_assert_int_eq(on_dead_letter(&s, "discard", ghost, &r), 200);
    ck_assert_ptr_nonnull(strstr(r.body, "\"result\":\"confirmed\""));
    http_result_free(&r);
    ck_assert_int_eq(on_dead_letter(&s, "discard", 999999, NULL), 404);
    /* large bodies: a page ends once its bodies reach 4 MiB, and says where
     * the next starts (two small ones and three of 3 MiB: the small ones and
     * two large on the first page, the third after) */
    ck_assert_int_eq(pg_exec("orders", "INSERT INTO dead_letters (subject, body, error) SELECT "
                             "'inventory.reserved', convert_to(repeat('x', 3145728), 'UTF8'), 'big' "
                             "FROM generate_series(1, 3)"), 0);
    json_int_t next = page_rows(&s, "/admin/dead-letters?state=all", 4);
    ck_assert_int_gt(next, 0);
    char path[64];
    snprintf(path, sizeof path, "/admin/dead-letters?state=all&after=%lld", (long long)next);
    ck_assert_int_eq(page_rows(&s, path, 1), 0);
    /* a page holding exactly the rows left says so (it said to ask again,
     * for an empty page) */
    snprintf(path, sizeof path, "/admin/dead-letters?state=all&after=%lld&limit=1", (long long)next);
    ck_assert_int_eq(page_rows(&s, path, 1), 0);
    ck_assert_int_eq(svc_stop(&s, SIGTERM), 0);
}
END_TEST

static int stream_has_one(void *arg)
{
    (void)arg;
    return all_published(NULL) && natsd_stream_msgs(&nats, "ORDERS") == 1;
}

static const char *resent_stream; /* for stream_has_two */

static int stream_has_two(void *arg)
{
    (void)arg;
    return natsd_stream_msgs(&nats, resent_stream) == 2;
}

/* POST /admin/orders/resend for the order in body, published just now
 * (the service's duplicate window: 3 s): answered with event_id and when it
 * is sent, which is once JetStream would store it, not before. The stream
 * then holds the copy too. It was sent at once and dropped as a duplicate
 * (the same Nats-Msg-Id inside the window), answered 200 all the same: an
 * operator's re-send of a lost message did nothing (a helper's probe). */
static void assert_resent_past_the_window(struct svc *s, const char *db, const char *body,
                                          const char *event_id, const char *stream)
{
    struct http_result r;
    ck_assert_int_eq(admin(s, "POST", "/admin/orders/resend", body, &r), 200);
    ck_assert_ptr_nonnull(strstr(r.body, event_id));
    ck_assert_ptr_nonnull(strstr(r.body, "\"send_at\":\"20"));
    http_result_free(&r);
    /* due 3 s (the window) + 1 s after its publish, whenever it was asked;
     * a requeue of that row keeps its time (it sent it at once: a review) */
    static const char *const due_sql = "SELECT count(*) FROM outbox o JOIN outbox_published p "
                                       "USING (event_id) WHERE o.next_attempt_at >= "
                                       "p.published_at + interval '4 s'";
    ck_assert_int_eq(pg_long(db, due_sql), 1);
    char *requeue = xasprintf("{\"event_id\":\"%s\"}", event_id);
    ck_assert_int_eq(admin(s, "POST", "/admin/outbox/requeue", requeue, NULL), 200);
    free(requeue);
    ck_assert_int_eq(pg_long(db, due_sql), 1);
    resent_stream = stream;
    ck_assert(wait_until(stream_has_two, NULL, 10000));
}

START_TEST(resend_sends_one_orders_event_again_with_its_id)
{
    struct svc s;
    start_with_short_window(&s, "order-service");
    struct http_result r;
    ck_assert_int_eq(http_post_json(s.port, "/orders", ORDER, &r), 201);
    char *body = xasprintf("{\"order_id\":\"%s\"}", json_field(r.body, "id"));
    http_result_free(&r);
    ck_assert(wait_until(stream_has_one, NULL, 10000));
    char *event_id = pg_text("orders", "SELECT event_id FROM outbox_events");
    assert_resent_past_the_window(&s, "orders", body, event_id, "ORDERS");
    ck_assert_int_eq(admin(&s, "POST", "/admin/orders/resend",
                           "{\"order_id\":\"" GHOST "\"}", NULL), 404);
    free(event_id);
    free(body);
    ck_assert_int_eq(svc_stop(&s, SIGTERM), 0);
}
END_TEST

/* An order whose OrderCreated is still in the outbox (dead: too large for
 * the broker's limit, fixed since): the resend queues that very row again. */
START_TEST(resend_queues_an_orders_dead_event_again)
{
    natsd_start_conf(&nats, "max_payload: 1024");
    struct svc s;
    const char *env[] = {"ADMIN_TOKEN=" TOKEN, "RELAY_MAX_ATTEMPTS=2", NULL};
    svc_start(&s, "order-service", nats.url, env);
    struct buf order; /* 60 items: an OrderCreated over 1,024 bytes */
    buf_init(&order);
    buf_printf(&order, "{\"customer_id\":\"c-1\",\"items\":[");
    for (int i = 1; i <= 60; i++)
        buf_printf(&order, "%s{\"sku\":\"SKU-%d\",\"qty\":1}", i > 1 ? "," : "", i);
    buf_printf(&order, "]}");
    struct http_result r;
    ck_assert_int_eq(http_post_json(s.port, "/orders", order.data, &r), 201);
    char *body = xasprintf("{\"order_id\":\"%s\"}", json_field(r.body, "id"));
    http_result_free(&r);
    ck_assert(wait_until(row_dead, NULL, 20000));
    natsd_kill(&nats); /* the cause is fixed: the default limit again */
    nats.conf[0] = '\0';
    natsd_restart(&nats);
    char *event_id = pg_text("orders", "SELECT event_id FROM orders");
    ck_assert_int_eq(admin(&s, "POST", "/admin/orders/resend", body, &r), 200);
    ck_assert_ptr_nonnull(strstr(r.body, event_id));
    http_result_free(&r);
    ck_assert(wait_until(all_published, NULL, 20000));
    ck_assert_int_eq(natsd_stream_msgs(&nats, "ORDERS"), 1);
    free(event_id);
    free(body);
    buf_cleanup(&order);
    ck_assert_int_eq(svc_stop(&s, SIGTERM), 0);
}
END_TEST

static int reply_published(void *arg)
{
    (void)arg;
    return pg_long("inventory", "SELECT count(*) FROM outbox_published") == 1 &&
           natsd_stream_msgs(&nats, "INVENTORY") == 1;
}

/* PUT /inventory/SKU-1 {"available":5}, answered 200. */
static void stock_sku1_5(struct svc *s)
{
    struct http_result r;
    ck_assert_int_eq(http_do(s->port, "PUT", "/inventory/SKU-1",
                             (const char *const[]){"Content-Type: application/json", NULL},
                             "{\"available\":5}", 15, &r), 0);
    ck_assert_int_eq(r.status, 200);
    http_result_free(&r);
}

/* GHOST's OrderCreated (EVENT_ID): 2 of SKU-1. */
static void publish_ghost_created(void)
{
    ck_assert_int_eq(natsd_publish(&nats, "orders.created", EVENT_ID,
        "{\"event_id\":\"" EVENT_ID "\",\"type\":\"OrderCreated\",\"order_id\":\"" GHOST "\","
        "\"customer_id\":\"c-1\",\"items\":[{\"sku\":\"SKU-1\",\"qty\":2}],"
        "\"occurred_at\":\"2026-01-01T00:00:00Z\"}"), 0);
}

/* The inventory's side: the order's reply, found by the decision's id. */
START_TEST(resend_sends_one_orders_reply_again_with_its_id)
{
    struct svc s;
    start_with_short_window(&s, "inventory-service");
    stock_sku1_5(&s);
    publish_ghost_created();
    ck_assert(wait_until(reply_published, NULL, 10000));
    char *reply_id = pg_text("inventory", "SELECT reply_event_id FROM order_decisions");
    assert_resent_past_the_window(&s, "inventory", "{\"order_id\":\"" GHOST "\"}", reply_id,
                                  "INVENTORY");
    /* the stock was reserved once: a re-send is not a second decision */
    ck_assert_int_eq(pg_long("inventory", "SELECT reserved FROM stock WHERE sku = 'SKU-1'"), 2);
    ck_assert_int_eq(admin(&s, "POST", "/admin/orders/resend",
                           "{\"order_id\":\"" EVENT_ID "\"}", NULL), 404);
    free(reply_id);
    ck_assert_int_eq(svc_stop(&s, SIGTERM), 0);
}
END_TEST

/* A member of the report's side ("produced" or "consumed") as an integer. */
static long long report_int(const char *body, const char *side, const char *name)
{
    json_t *o = json_loads(body, 0, NULL);
    json_t *v = json_object_get(json_object_get(o, side), name);
    long long n = json_is_integer(v) ? json_integer_value(v) : -1;
    json_decref(o);
    return n;
}

static void assert_clean(struct svc *s, const char *side, int rows)
{
    struct http_result r;
    ck_assert_int_eq(admin(s, "GET", "/admin/reconcile", NULL, &r), 200);
    ck_assert_int_eq(report_int(r.body, "produced", "missing_count"), 0);
    ck_assert_int_eq(report_int(r.body, "produced", "duplicated_count"), 0);
    ck_assert_int_eq(report_int(r.body, "produced", "orphaned_count"), 0);
    ck_assert_int_eq(report_int(r.body, "consumed", "unprocessed_count"), 0);
    if (rows >= 0)
        ck_assert_int_eq(report_int(r.body, side, "rows_checked"), rows);
    http_result_free(&r);
}

static int settled(void *arg)
{
    (void)arg;
    return pg_long("orders", "SELECT count(*) FROM orders WHERE status = 'CONFIRMED'") == 5 &&
           pg_long("inventory", "SELECT count(*) FROM outbox WHERE status <> 'published'") == 0;
}

static int published_6(void *arg)
{
    (void)arg;
    return pg_long("orders", "SELECT count(*) FROM outbox_published WHERE stream_seq IS NOT NULL") == 6;
}

static int one_published(void *arg)
{
    (void)arg;
    return pg_long("orders", "SELECT count(*) FROM outbox_published") == 1;
}

static int orders_stream_holds_the_newest(void *arg)
{
    return natsd_stream_msgs(arg, "ORDERS") == 1 &&
           pg_long("orders", "SELECT count(*) FROM outbox_published") == 2;
}

/* An event the stream let go at its max age, as it was told to, is not
 * "missing": a run looks back less far than STREAM_MAX_AGE (a helper's
 * probe with a 40 s max age had 258 of 350 events missing, and the
 * critical alert firing for events never lost). */
START_TEST(reconcile_does_not_call_what_aged_out_of_the_stream_missing)
{
    natsd_start(&nats);
    struct svc s;
    const char *env[] = {"ADMIN_TOKEN=" TOKEN, "STREAM_DUPLICATE_WINDOW=2s", "STREAM_MAX_AGE=10s",
                         NULL};
    svc_start(&s, "order-service", nats.url, env);
    ck_assert_int_eq(http_post_json(s.port, "/orders", ORDER, NULL), 201);
    ck_assert(wait_until(one_published, NULL, 10000));
    ck_assert(natsd_stream_wait(&nats, "ORDERS", 1, 5000));
    ck_assert_msg(natsd_stream_wait(&nats, "ORDERS", 0, 20000), "ORDERS holds %ld",
                  natsd_stream_msgs(&nats, "ORDERS"));
    /* one more, still in the stream: the first one's sequence is below it */
    ck_assert_int_eq(http_post_json(s.port, "/orders", ORDER, NULL), 201);
    ck_assert_msg(wait_until(orders_stream_holds_the_newest, &nats, 5000), "ORDERS holds %ld",
                  natsd_stream_msgs(&nats, "ORDERS"));
    struct http_result r;
    ck_assert_int_eq(admin(&s, "GET", "/admin/reconcile", NULL, &r), 200);
    ck_assert_int_eq(report_int(r.body, "produced", "missing_count"), 0);
    ck_assert_int_eq(report_int(r.body, "produced", "rows_checked"), 1); /* the one still held */
    ck_assert_ptr_nonnull(strstr(r.body, "\"window_seconds\":9.5"));
    http_result_free(&r);
    ck_assert_int_eq(svc_stop(&s, SIGTERM), 0);
}
END_TEST

START_TEST(reconcile_reports_nothing_then_exactly_the_deleted_message)
{
    natsd_start(&nats);
    struct svc s, inv;
    const char *env[] = {"ADMIN_TOKEN=" TOKEN, NULL};
    svc_start(&s, "order-service", nats.url, env);
    svc_start(&inv, "inventory-service", nats.url, env);
    static const char *const h[] = {"Content-Type: application/json", NULL};
    struct http_result r;
    ck_assert_int_eq(http_do(inv.port, "PUT", "/inventory/SKU-1", h, "{\"available\":50}", 16, &r), 0);
    http_result_free(&r);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(http_post_json(s.port, "/orders", ORDER, NULL), 201);
    ck_assert(wait_until(settled, NULL, 20000));
    assert_clean(&s, "produced", 5);
    assert_clean(&inv, "produced", 5);
    /* Messages the consumer accounts for otherwise are not "unprocessed"
     * (each was, before): a subject outside its filter (never delivered),
     * a body with no event id (dead-lettered under none), and a replay of a
     * processed event under another message id (the body's event_id is the
     * key, by the contract). */
    char *body = pg_text("orders", "SELECT payload FROM outbox_events WHERE stream_seq = 1");
    char id[UUID_STR_LEN];
    uuid_v4(id);
    ck_assert_int_eq(natsd_publish(&nats, "orders.cancelled", id, "{\"note\":1}"), 0);
    uuid_v4(id);
    ck_assert_int_eq(natsd_publish(&nats, "orders.created", id, "not json"), 0);
    uuid_v4(id);
    ck_assert_int_eq(natsd_publish(&nats, "orders.created", id, body), 0);
    free(body);
    for (int i = 0; i < 100 && svc_metric(&inv, "inventory_messages_total{result=\"duplicate\"}") < 1;
         i++)
        sleep_ms(100);
    ck_assert_double_eq(svc_metric(&inv, "inventory_messages_total{result=\"poison\"}"), 1);
    assert_clean(&inv, "consumed", -1);
    /* a reply with an event id, on a subject that is not UTF-8: dead-lettered
     * (a text column refuses that subject) under its body's event id, which
     * the reconciliation then finds */
    char stray_id[UUID_STR_LEN];
    uuid_v4(stray_id);
    char *stray = xasprintf("{\"event_id\":\"%s\",\"type\":\"InventoryReserved\",\"order_id\":\"%s\","
                            "\"occurred_at\":\"2026-01-01T00:00:00Z\"}", stray_id, stray_id);
    uuid_v4(id);
    ck_assert_int_eq(natsd_publish(&nats, "inventory.\xff", id, stray), 0);
    free(stray);
    for (int i = 0; i < 100 && svc_metric(&s, "order_replies_total{result=\"poison\"}") < 1; i++)
        sleep_ms(100);
    ck_assert_double_eq(svc_metric(&s, "order_replies_total{result=\"poison\"}"), 1);
    assert_clean(&s, "consumed", -1);
    /* the rows of the first two say each other's sequence (an ack's sequence
     * is not always where a cluster keeps the event): both are still in the
     * stream, neither is missing */
    const char *swap = "UPDATE outbox_published SET stream_seq = 3 - stream_seq "
                       "WHERE stream_seq IN (1, 2)";
    ck_assert_int_eq(pg_exec("orders", swap), 0);
    assert_clean(&s, "produced", 5);
    ck_assert_int_eq(pg_exec("orders", swap), 0);
    /* by hand: the third OrderCreated disappears from the stream */
    ck_assert_int_eq(natsd_stream_msg_delete(&nats, "ORDERS", 3), 0);
    char *lost = pg_text("orders", "SELECT event_id FROM outbox_events WHERE stream_seq = 3");
    ck_assert_int_eq(admin(&s, "GET", "/admin/reconcile", NULL, &r), 200);
    ck_assert_int_eq(report_int(r.body, "produced", "missing_count"), 1);
    ck_assert_ptr_nonnull(strstr(r.body, lost));
    ck_assert_int_eq(report_int(r.body, "produced", "duplicated_count"), 0);
    ck_assert_int_eq(report_int(r.body, "produced", "orphaned_count"), 0);
    http_result_free(&r);
    ck_assert_double_eq(svc_metric(&s, "reconcile_missing_events{stream=\"ORDERS\"}"), 1);
    assert_clean(&inv, "consumed", -1); /* what it consumed is all recorded */
    /* a message with no Nats-Msg-Id (a tool's) is orphaned too; it was taken
     * for no message (a helper's probe). Once an order is published after
     * it, the range holds it and the three above (ids no outbox row has). */
    ck_assert_int_eq(natsd_publish_bare(&nats, "orders.cancelled", "{\"note\":2}"), 0);
    ck_assert_int_eq(http_post_json(s.port, "/orders", ORDER, NULL), 201);
    ck_assert(wait_until(published_6, NULL, 10000));
    ck_assert_int_eq(admin(&s, "GET", "/admin/reconcile", NULL, &r), 200);
    ck_assert_int_eq(report_int(r.body, "produced", "orphaned_count"), 4);
    ck_assert_int_eq(report_int(r.body, "produced", "duplicated_count"), 0);
    http_result_free(&r);
    free(lost);
    ck_assert_int_eq(svc_stop(&s, SIGTERM), 0);
    ck_assert_int_eq(svc_stop(&inv, SIGTERM), 0);
}
END_TEST

static long reserved_sku1(void)
{
    return pg_long("inventory", "SELECT reserved FROM stock WHERE sku = 'SKU-1'");
}

static int reconcile_ran(void *arg)
{
    return svc_metric(arg, "reconcile_runs_total{result=\"ok\"}") >= 1;
}

static int reply_applied(void *arg)
{
    (void)arg;
    return reserved_sku1() == 2 && reply_published(NULL);
}

/* STREAM_MAX_AGE 3m, so that PROCESSED_RETENTION (which must outlast it)
 * can be 5m: short of the repair's 10 minutes of margin. */
static void start_inventory(struct svc *s, const char *every, int short_retention)
{
    char *e1 = xasprintf("RECONCILE_EVERY=%s", every);
    const char *env[] = {"ADMIN_TOKEN=" TOKEN, e1, "STREAM_MAX_AGE=3m",
                         short_retention ? "PROCESSED_RETENTION=5m" : NULL, NULL};
    svc_start(s, "inventory-service", nats.url, env);
    free(e1);
}

/* The durable consumer acknowledged an OrderCreated that inventory-service
 * never got (as nats-server 2.9.10's consumers do after a frozen node: an
 * HA run's 40 orders stayed PENDING, the consumer with nothing pending).
 * GET /admin/reconcile reports it and changes nothing; a periodic run
 * applies it through the consumer's path, once, and the reply goes out;
 * not while the message is older than PROCESSED_RETENTION allows (its id
 * could have been pruned after it was applied). A skipped poison message
 * becomes a dead letter, as a delivered one would. */
START_TEST(a_periodic_reconcile_run_applies_what_the_consumer_skipped)
{
    natsd_start(&nats);
    struct svc inv;
    struct http_result r;
    start_inventory(&inv, "1h", 0);
    stock_sku1_5(&inv);
    ck_assert_int_eq(svc_stop(&inv, SIGTERM), 0);
    publish_ghost_created();
    ck_assert_int_eq(natsd_publish(&nats, "orders.created", REPLY_ID,
        "{\"event_id\":\"" REPLY_ID "\",\"type\":\"OrderCreated\",\"order_id\":\"" GHOST "\","
        "\"items\":\"none\"}"), 0);
    ck_assert_int_eq(natsd_take(&nats, "ORDERS", "inventory-service", "orders.created", 2), 2);
    /* asked: reported, not applied */
    start_inventory(&inv, "1h", 0);
    ck_assert_int_eq(admin(&inv, "GET", "/admin/reconcile", NULL, &r), 200);
    ck_assert_int_eq(report_int(r.body, "consumed", "unprocessed_count"), 2);
    ck_assert_int_eq(report_int(r.body, "consumed", "repaired_count"), 0);
    ck_assert_ptr_nonnull(strstr(r.body, EVENT_ID));
    http_result_free(&r);
    ck_assert_int_eq(reserved_sku1(), 0);
    ck_assert_int_eq(svc_stop(&inv, SIGTERM), 0);
    /* too old for PROCESSED_RETENTION (10 minutes of margin): left alone */
    start_inventory(&inv, "1s", 1);
    ck_assert(wait_until(reconcile_ran, &inv, 10000));
    ck_assert_double_eq(svc_metric(&inv, "reconcile_unprocessed_events{stream=\"ORDERS\"}"), 2);
    ck_assert_double_eq(svc_metric(&inv, "reconcile_repaired_events_total{stream=\"ORDERS\"}"), 0);
    ck_assert_int_eq(pg_long("inventory", "SELECT count(*) FROM dead_letters"), 0);
    ck_assert_int_eq(reserved_sku1(), 0);
    ck_assert(proc_log_has(&inv.proc, "older than PROCESSED_RETENTION"));
    ck_assert_int_eq(svc_stop(&inv, SIGTERM), 0);
    /* periodic: applied once, the reply published */
    start_inventory(&inv, "1s", 0);
    ck_assert(wait_until(reply_applied, NULL, 10000));
    ck_assert(wait_until(reconcile_ran, &inv, 10000));
    ck_assert_double_eq(svc_metric(&inv, "reconcile_repaired_events_total{stream=\"ORDERS\"}"), 1);
    ck_assert_double_eq(svc_metric(&inv, "reconcile_unprocessed_events{stream=\"ORDERS\"}"), 0);
    ck_assert_int_eq(pg_long("inventory", "SELECT count(*) FROM processed_messages "
                                          "WHERE event_id = '" EVENT_ID "'"), 1);
    ck_assert_int_eq(pg_long("inventory", "SELECT count(*) FROM dead_letters "
                                          "WHERE event_id = '" REPLY_ID "'"), 1);
    sleep_ms(2500); /* two more runs: nothing more to apply */
    ck_assert_double_eq(svc_metric(&inv, "reconcile_repaired_events_total{stream=\"ORDERS\"}"), 1);
    ck_assert_int_eq(reserved_sku1(), 2);
    ck_assert_int_eq(natsd_stream_msgs(&nats, "INVENTORY"), 1);
    ck_assert_int_eq(svc_stop(&inv, SIGTERM), 0);
}
END_TEST

static int published_n(void *n)
{
    return pg_long("orders", "SELECT count(*) FROM outbox_published WHERE stream_seq IS NOT NULL") ==
           *(int *)n;
}

static long published_time_reads(void)
{
    return pg_long("orders", "SELECT idx_tup_read FROM pg_stat_user_indexes "
                             "WHERE indexrelname = 'outbox_published_time'");
}

static int reads_counted(void *before)
{
    return published_time_reads() > *(long *)before;
}

/* nats-server and an order-service checking scan_env's RECONCILE_SCAN rows,
 * which publishes n orders; their rows are then dated 30 s ago, a
 * millisecond apart in the order of their sequences (a batch shares one
 * time). */
static void n_published(struct svc *s, const char *scan_env, int n)
{
    natsd_start(&nats);
    const char *env[] = {"ADMIN_TOKEN=" TOKEN, scan_env, NULL};
    svc_start(s, "order-service", nats.url, env);
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(http_post_json(s->port, "/orders", ORDER, NULL), 201);
    ck_assert(wait_until(published_n, &n, 20000));
    ck_assert_int_eq(pg_exec("orders", "UPDATE outbox_published SET published_at = "
                                       "now() - interval '30 seconds' + stream_seq * interval '1 ms'"), 0);
}

/* Files n rows that were never published, at `at`, with sequence `seq`
 * (SQL of g, 1..n). */
static void file_unpublished(int n, const char *at, const char *seq)
{
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO outbox_published (id, event_id, subject, event_type, payload, attempts, "
             "created_at, published_at, stream_seq) SELECT -g, gen_random_uuid(), 'orders.created', "
             "'OrderCreated', '{}', 0, now(), %s, %s FROM generate_series(1, %d) g", at, seq, n);
    ck_assert_int_eq(pg_exec("orders", sql), 0);
}

/* The report of a run, and whether it found the produced side clean with
 * last_seq its highest sequence. */
static char *reconcile_clean_to(struct svc *s, long long last_seq)
{
    struct http_result r;
    ck_assert_int_eq(admin(s, "GET", "/admin/reconcile", NULL, &r), 200);
    ck_assert_int_eq(report_int(r.body, "produced", "last_seq"), last_seq);
    ck_assert_int_eq(report_int(r.body, "produced", "missing_count"), 0);
    free(r.head);
    return r.body;
}

/* A run reads the last RECONCILE_SCAN published rows of the window, not
 * every row the window holds: at 2,000 events a second a 15-minute window
 * holds 1.8 million. Counted by Postgres (index entries read), once the
 * reconciliation's session has reported them. */
START_TEST(a_reconcile_run_reads_its_scan_not_its_window)
{
    struct svc s;
    n_published(&s, "RECONCILE_SCAN=10", 12);
    file_unpublished(20000, "now() - interval '1 minute'", "NULL"); /* within the window */
    long before = published_time_reads();
    char *body = reconcile_clean_to(&s, 12);
    ck_assert_int_eq(report_int(body, "produced", "rows_checked"), 10);
    free(body);
    ck_assert(wait_until(reads_counted, &before, 20000)); /* statistics: up to 10 s late */
    ck_assert_int_lt(published_time_reads() - before, 100);
    ck_assert_int_eq(svc_stop(&s, SIGTERM), 0);
}
END_TEST

/* A stream that starts its sequences again (deleted and created, restored)
 * leaves the rows published before it at sequences it no longer holds. The
 * newest rows then carry lower sequences than a run checked before, and the
 * run checks the highest of the window instead. Here the "new" rows are five
 * rows filed at sequences 1-5 (which the stream holds under other ids), the
 * 12 real ones published before them: the run checks the real ones at 8-12
 * and finds them all (the newest five would be the five found missing). */
START_TEST(a_reconcile_run_after_the_sequences_went_back_checks_the_higher_ones)
{
    struct svc s;
    n_published(&s, "RECONCILE_SCAN=5", 12);
    free(reconcile_clean_to(&s, 12));
    file_unpublished(5, "now()", "g");
    free(reconcile_clean_to(&s, 12));
    ck_assert_int_eq(svc_stop(&s, SIGTERM), 0);
}
END_TEST

/* JetStream frozen for all but a moment of each second: each read of a
 * reconciliation run is answered, late (a few reads a second). */
struct freezer {
    pthread_t thread;
    atomic_int stop;
};

static void *freeze_cycle(void *arg)
{
    struct freezer *f = arg;
    while (!atomic_load(&f->stop)) {
        natsd_freeze(&nats);
        sleep_ms(1000);
        natsd_thaw(&nats);
        sleep_ms(2);
    }
    return NULL;
}

struct reconcile_call {
    int port;
    atomic_int done;
};

static void *reconcile_once(void *arg)
{
    struct reconcile_call *c = arg;
    admin_do(c->port, "GET", "/admin/reconcile", "Bearer " TOKEN, NULL, NULL);
    atomic_store(&c->done, 1);
    return NULL;
}

/* A stop ends a reconciliation run that JetStream answers slowly. A run
 * reads a stream one message at a time, each read bounded by its own wait
 * (2 s), and none by the stop: answered a few a second, a run of 100 reads
 * held SIGTERM up for as long (an HA chaos run had an instance killed at
 * the 10 s bound after the cluster's restart). It exits 0 within 10 s. */
START_TEST(a_stop_ends_a_reconcile_run_that_jetstream_answers_slowly)
{
    struct svc s;
    n_published(&s, "RECONCILE_SCAN=100", 100);
    struct freezer f = {0};
    struct reconcile_call call = {.port = s.port};
    pthread_t req;
    ck_assert_int_eq(pthread_create(&f.thread, NULL, freeze_cycle, &f), 0);
    int started = pthread_create(&req, NULL, reconcile_once, &call) == 0;
    if (started)
        sleep_ms(3000); /* the run is in its reads by now */
    int in_reads = !atomic_load(&call.done);
    int64_t t0 = mono_ms();
    int code = svc_stop(&s, SIGTERM); /* -1: still running after 10 s (killed) */
    int64_t took = mono_ms() - t0;
    atomic_store(&f.stop, 1);
    pthread_join(f.thread, NULL);
    natsd_thaw(&nats);
    if (started)
        pthread_join(req, NULL);
    ck_assert(started);
    ck_assert_msg(in_reads, "the run was over before the stop: nothing was tested");
    fprintf(stderr, "admin: SIGTERM during a slowly answered reconciliation: exit %d after %lld ms\n",
            code, (long long)took);
    if (code != 0)
        proc_print_tail(&s.proc, "order-service", 15);
    ck_assert_int_eq(code, 0);
    ck_assert_int_lt(took, 10000);
}
END_TEST

Suite *admin_suite(void)
{
    Suite *s = suite_create("admin");
    TCase *tc = tcase_create("admin");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, token_guard_401_403_200_and_never_logged);
    tcase_add_test(tc, disabled_without_token_and_on_its_own_port);
    tcase_add_test(tc, a_short_token_works_with_a_warning);
    tcase_add_test(tc, admin_answers_before_the_first_nats_connection);
    tcase_add_test(tc, dead_row_listed_requeued_published_once);
    tcase_add_test(tc, poison_listed_and_reapplied_once_its_cause_is_fixed);
    tcase_add_test(tc, resend_sends_one_orders_event_again_with_its_id);
    tcase_add_test(tc, resend_sends_one_orders_reply_again_with_its_id);
    tcase_add_test(tc, resend_queues_an_orders_dead_event_again);
    tcase_add_test(tc, reconcile_reports_nothing_then_exactly_the_deleted_message);
    tcase_add_test(tc, reconcile_does_not_call_what_aged_out_of_the_stream_missing);
    tcase_add_test(tc, a_reconcile_run_reads_its_scan_not_its_window);
    tcase_add_test(tc, a_reconcile_run_after_the_sequences_went_back_checks_the_higher_ones);
    tcase_add_test(tc, a_stop_ends_a_reconcile_run_that_jetstream_answers_slowly);
    tcase_add_test(tc, a_periodic_reconcile_run_applies_what_the_consumer_skipped);
    suite_add_tcase(s, tc);
    return s;
}
