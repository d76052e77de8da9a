/* test_orders.c - order intake against the real Postgres: one transaction
 * for order + items + outbox row, rejections that write nothing, concurrency
 * and the Idempotency-Key race, and 503 while Postgres is away; the group
 * commit's own bound on an order that no committer takes. */
#include "order.h"
#include "order_batcher.h"
#include "support/harness.h"
#include "suites.h"
#include "util.h"

#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ORDER "{\"customer_id\":\"c-1\",\"items\":[{\"sku\":\"SKU-1\",\"qty\":2}]}"

static struct natsd nats;
static struct svc orders;

static void setup(void)
{
    pg_reset("orders");
    natsd_start(&nats);
    svc_start(&orders, "order-service", nats.url, NULL);
}

static void teardown(void)
{
    svc_stop(&orders, SIGKILL);
    natsd_cleanup(&nats);
}

static long count(const char *table)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", table);
    return pg_long("orders", sql);
}

static void assert_nothing_written(void)
{
    ck_assert_int_eq(count("orders"), 0);
    ck_assert_int_eq(count("order_items"), 0);
    ck_assert_int_eq(count("outbox_events"), 0);
}

START_TEST(post_creates_order_items_and_event_then_get_shows_it)
{
    struct http_result r, g;
    ck_assert_int_eq(http_post_json(orders.port, "/orders", ORDER, &r), 201);
    char id[64];
    snprintf(id, sizeof id, "%s", json_field(r.body, "id"));
    char want_loc[128];
    snprintf(want_loc, sizeof want_loc, "/orders/%s", id);
    ck_assert_str_eq(r.location, want_loc);
    ck_assert_str_eq(json_field(r.body, "status"), "PENDING");
    ck_assert_str_eq(json_field(r.body, "customer_id"), "c-1");
    ck_assert_ptr_nonnull(strstr(r.body, "\"items\":[{\"sku\":\"SKU-1\",\"qty\":2}]"));
    ck_assert_int_eq(http_get(orders.port, want_loc, &g), 200);
    ck_assert_str_eq(json_field(g.body, "id"), id);
    ck_assert_str_eq(json_field(g.body, "created_at"), json_field(r.body, "created_at"));
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM outbox_events WHERE subject = 'orders.created' "
             "AND event_type = 'OrderCreated' AND payload::json->>'order_id' = '%s' "
             "AND payload::json->>'event_id' = event_id::text", id);
    ck_assert_int_eq(pg_long("orders", sql), 1);
    http_result_free(&r);
    http_result_free(&g);
}
END_TEST

struct bad { const char *body; const char *code; };

START_TEST(rejections_answer_400_and_write_nothing)
{
    static const struct bad cases[] = {
        {"{\"customer_id\":\"c-1\",\"items\":[", "invalid_json"},
        {"not json", "invalid_json"},
        {"{\"customer_id\":\"c-1\",\"items\":[]}", "validation_failed"},
        {"{\"customer_id\":\"\",\"items\":[{\"sku\":\"A\",\"qty\":1}]}", "validation_failed"},
        {"{\"items\":[{\"sku\":\"A\",\"qty\":1}]}", "validation_failed"},
        {"{\"customer_id\":\"c\",\"items\":[{\"sku\":\"A\",\"qty\":0}]}", "validation_failed"},
        {"{\"customer_id\":\"c\",\"items\":[{\"sku\":\"A\",\"qty\":\"2\"}]}", "validation_failed"},
        {"{\"customer_id\":\"c\",\"items\":[{\"sku\":\"A B\",\"qty\":1}]}", "validation_failed"},
        {"{\"customer_id\":\"c\",\"items\":[{\"sku\":\"A\",\"qty\":1},{\"sku\":\"A\",\"qty\":1}]}",
         "validation_failed"},
        {"[]", "validation_failed"},
        /* JSON, but beyond a 64-bit integer, a double, a Postgres text */
        {"{\"customer_id\":\"c\",\"items\":[{\"sku\":\"A\",\"qty\":99999999999999999999999}]}",
         "\"field\":\"items[0].qty\""},
        {"{\"customer_id\":\"c\",\"items\":[{\"sku\":\"A\",\"qty\":1e400}]}",
         "\"field\":\"items[0].qty\""},
        {"{\"customer_id\":\"c\\u0000d\",\"items\":[{\"sku\":\"A\",\"qty\":1}]}",
         "\"field\":\"customer_id\""},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct http_result r;
        ck_assert_int_eq(http_post_json(orders.port, "/orders", cases[i].body, &r), 400);
        ck_assert_msg(strstr(r.body, cases[i].code) != NULL, "%s -> %s", cases[i].body, r.body);
        ck_assert_ptr_nonnull(strstr(r.body, "\"message\""));
        if (cases[i].body[0] == '[') /* no one field is at fault: none named */
            ck_assert_msg(strstr(r.body, "\"field\"") == NULL, "%s", r.body);
        http_result_free(&r);
    }
    assert_nothing_written();
}
END_TEST

/* Unknown fields are ignored whatever JSON they hold, even values no
 * field of ours could (a number beyond 64 bits or a double, \u0000). */
START_TEST(unknown_fields_are_ignored_whatever_they_hold)
{
    static const char body[] =
        "{\"customer_id\":\"c-u\",\"big\":18446744073709551616,\"huge\":-1e400,"
        "\"nul\":\"a\\u0000b\",\"k\\u0000\":{\"deep\":[1,{\"x\":null}]},"
        "\"items\":[{\"sku\":\"SKU-1\",\"qty\":2,\"note\":99999999999999999999999}]}";
    struct http_result r;
    ck_assert_int_eq(http_post_json(orders.port, "/orders", body, &r), 201);
    ck_assert_str_eq(json_field(r.body, "customer_id"), "c-u");
    ck_assert_ptr_nonnull(strstr(r.body, "\"items\":[{\"sku\":\"SKU-1\",\"qty\":2}]"));
    http_result_free(&r);
}
END_TEST

START_TEST(wrong_type_size_path_and_method)
{
    struct http_result r;
    static const char *const text[] = {"Content-Type: text/plain", NULL};
    ck_assert_int_eq(http_do(orders.port, "POST", "/orders", text, ORDER, strlen(ORDER), &r), 0);
    ck_assert_int_eq(r.status, 415);
    http_result_free(&r);

    size_t big = 64 * 1024 + 1;
    char *body = xmalloc(big);
    memset(body, ' ', big);
    memcpy(body, ORDER, strlen(ORDER));
    static const char *const json[] = {"Content-Type: application/json", NULL};
    ck_assert_int_eq(http_do(orders.port, "POST", "/orders", json, body, big, &r), 0);
    ck_assert_int_eq(r.status, 413);
    http_result_free(&r);
    free(body);

    ck_assert_int_eq(http_get(orders.port, "/orders/not-a-uuid", &r), 400);
    http_result_free(&r);
    ck_assert_int_eq(http_get(orders.port, "/orders/", &r), 400); /* an empty id is malformed */
    ck_assert_ptr_nonnull(strstr(r.body, "\"code\":\"invalid_id\""));
    http_result_free(&r);
    ck_assert_int_eq(http_get(orders.port, "/orders/6f1c1f1e-0000-4000-8000-000000000000", &r), 404);
    ck_assert_ptr_nonnull(strstr(r.body, "\"code\":\"not_found\""));
    http_result_free(&r);
    ck_assert_int_eq(http_do(orders.port, "DELETE", "/orders", NULL, NULL, 0, &r), 0);
    ck_assert_int_eq(r.status, 405);
    http_result_free(&r);
    assert_nothing_written();
}
END_TEST

START_TEST(failure_after_order_insert_leaves_nothing)
{
    /* a real failure inside the one statement, after the orders row is in */
    ck_assert_int_eq(pg_exec("orders",
        "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS "
        "$$BEGIN RAISE EXCEPTION 'injected failure'; END$$;"
        "CREATE TRIGGER boom BEFORE INSERT ON order_items FOR EACH ROW EXECUTE FUNCTION boom();"), 0);
    ck_assert_int_eq(http_post_json(orders.port, "/orders", ORDER, NULL), 500);
    assert_nothing_written();
    ck_assert_int_eq(pg_exec("orders", "DROP TRIGGER boom ON order_items"), 0);
    ck_assert_int_eq(http_post_json(orders.port, "/orders", ORDER, NULL), 201);
    ck_assert_int_eq(count("outbox_events"), 1);
}
END_TEST

struct shot {
    const char *key, *body;
    int status;
    char id[64];
};

static void *fire(void *arg)
{
    struct shot *s = arg;
    char hdr[200];
    snprintf(hdr, sizeof hdr, "Idempotency-Key: %s", s->key ? s->key : "");
    const char *h[] = {"Content-Type: application/json", s->key ? hdr : NULL, NULL};
    struct http_result r;
    if (http_do(orders.port, "POST", "/orders", h, s->body, strlen(s->body), &r) == 0) {
        s->status = r.status;
        snprintf(s->id, sizeof s->id, "%s", json_field(r.body, "id"));
        http_result_free(&r);
    }
    return NULL;
}

static void fire_all(struct shot *shots, int n)
{
    pthread_t *t = xcalloc((size_t)n, sizeof *t);
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, fire, &shots[i]), 0);
    for (int i = 0; i < n; i++)
        pthread_join(t[i], NULL);
    free(t);
}

START_TEST(parallel_posts_give_distinct_orders_and_events)
{
    enum { N = 64 };
    struct shot shots[N] = {{0}};
    for (int i = 0; i < N; i++)
        shots[i].body = ORDER;
    fire_all(shots, N);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(shots[i].status, 201);
    ck_assert_int_eq(count("orders"), N);
    ck_assert_int_eq(count("outbox_events"), N);
    ck_assert_int_eq(pg_long("orders", "SELECT count(DISTINCT event_id) FROM outbox_events"), N);
    ck_assert_int_eq(pg_long("orders", "SELECT count(DISTINCT payload::json->>'order_id') FROM outbox_events"), N);
}
END_TEST

START_TEST(idempotency_race_creates_one_order)
{
    enum { N = 16 };
    struct shot shots[N] = {{0}};
    for (int i = 0; i < N; i++)
        shots[i] = (struct shot){.key = "race-key-1", .body = ORDER};
    fire_all(shots, N);
    int created = 0;
    for (int i = 0; i < N; i++) {
        ck_assert_msg(shots[i].status == 201 || shots[i].status == 200, "status %d", shots[i].status);
        created += shots[i].status == 201;
        ck_assert_str_eq(shots[i].id, shots[0].id);
    }
    ck_assert_int_eq(created, 1);
    ck_assert_int_eq(count("orders"), 1);
    ck_assert_int_eq(count("outbox_events"), 1);
}
END_TEST

/* Request `kind`'s framing, whose end is ambiguous, with `next` (another
 * request) where one reading of it ends: two lengths; a length beside
 * chunked; a blank before a colon, which makes another field of the
 * length a review put first (the next request inside); a coding other
 * than chunked (read to the end of the stream: unanswered); two codings. */
static void ambiguous_framing(struct buf *raw, int kind, const struct buf *next)
{
    size_t n = next->len + 2;
    if (kind == 0)
        buf_printf(raw, "Content-Length: 2\r\nContent-Length: %zu\r\n\r\n{}%s", n, next->data);
    else if (kind == 1)
        buf_printf(raw, "Content-Length: %zu\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "2\r\n{}\r\n0\r\n\r\n%s", n, next->data);
    else if (kind == 2)
        buf_printf(raw, "Content-Length : %zu\r\nContent-Length: 2\r\n\r\n{}%s", n, next->data);
    else if (kind == 3)
        buf_printf(raw, "Content-Length: 2\r\nTransfer-Encoding: gzip\r\n\r\n{}%s", next->data);
    else
        buf_printf(raw, "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "2\r\n{}\r\n0\r\n\r\n%s", next->data);
}

/* The edges of HTTP, each answered in the contract's shape, and nothing
 * written by what is refused. Each case was answered otherwise before. */
START_TEST(http_edges_answer_in_the_contracts_shape)
{
    static const char *const json[] = {"Content-Type: application/json", NULL};
    struct http_result r;
    /* a bad escape before a two-byte character: the parser's reason quoted
     * half of it, not UTF-8, and the answer's body was {} */
    const char *esc = "{\"customer_id\":\"\\\xc3\xa9\"}";
    ck_assert_int_eq(http_do(orders.port, "POST", "/orders", json, esc, strlen(esc), &r), 0);
    ck_assert_msg(r.status == 400 && strstr(r.body, "\"code\":\"invalid_json\""), "%d %s",
                  r.status, r.body);
    http_result_free(&r);
    /* JSON, but not an object: as [] is (it was invalid_json) */
    ck_assert_int_eq(http_post_json(orders.port, "/orders", "\"x\"", &r), 400);
    ck_assert_ptr_nonnull(strstr(r.body, "\"code\":\"validation_failed\""));
    http_result_free(&r);
    /* %00 ended the path there: the id before it was looked up (404) */
    ck_assert_int_eq(http_get(orders.port, "/orders/6f1c1f1e-0000-4000-8000-000000000000%00x", &r),
                     400);
    ck_assert_ptr_nonnull(strstr(r.body, "\"code\":\"invalid_id\""));
    http_result_free(&r);
    /* a 405 says what the path takes */
    ck_assert_int_eq(http_do(orders.port, "DELETE", "/orders", NULL, NULL, 0, &r), 0);
    ck_assert_int_eq(r.status, 405);
    ck_assert_msg(strstr(r.head, "\r\nAllow: POST\r\n") != NULL, "%s", r.head);
    http_result_free(&r);
    /* HEAD where GET is: the answer without its body (it was 405) */
    ck_assert_int_eq(http_do(orders.port, "HEAD", "/orders/6f1c1f1e-0000-4000-8000-000000000000",
                             NULL, NULL, 0, &r), 0);
    ck_assert_int_eq(r.status, 404);
    ck_assert_str_eq(r.body, "");
    http_result_free(&r);
    /* a target in absolute form is its path (RFC 9112 3.2.2; it was 404) */
    const char *absolute = "GET http://127.0.0.1/healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           "Connection: close\r\n\r\n";
    ck_assert_int_eq(http_raw("127.0.0.1", orders.port, absolute, strlen(absolute), 3000, &r), 0);
    ck_assert_int_eq(r.status, 200);
    http_result_free(&r);
    /* a body announced too big is refused before it is sent (it was cut,
     * unanswered, at the request timeout) */
    const char *big = "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      "Content-Length: 100000000\r\nExpect: 100-continue\r\n\r\n";
    ck_assert_int_eq(http_raw("127.0.0.1", orders.port, big, strlen(big), 3000, &r), 0);
    ck_assert_int_eq(r.status, 413);
    ck_assert_ptr_nonnull(strstr(r.body, "\"code\":\"payload_too_large\""));
    http_result_free(&r);
    assert_nothing_written();
    /* where a request ends, ambiguous: two lengths, or a length beside
     * chunked. The second request inside (an order) was read and created,
     * after a 400 for the first; now a 400, the connection closed. */
    for (int kind = 0; kind < 5; kind++) {
        struct buf next, raw;
        buf_init(&next);
        buf_printf(&next, "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          "Content-Length: %zu\r\nConnection: close\r\n\r\n%s", strlen(ORDER), ORDER);
        buf_init(&raw);
        buf_printf(&raw, "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n");
        ambiguous_framing(&raw, kind, &next);
        ck_assert_int_eq(http_raw("127.0.0.1", orders.port, raw.data, raw.len, 3000, &r), 0);
        ck_assert_msg(r.status == 400 && strstr(r.body, "\"code\":\"bad_request\"") &&
                          !strstr(r.body, "HTTP/1.1"), "case %d: %d %s", kind, r.status, r.body);
        ck_assert_ptr_nonnull(strstr(r.head, "Connection: close"));
        http_result_free(&r);
        buf_cleanup(&next);
        buf_cleanup(&raw);
    }
    assert_nothing_written();
    /* one without a length (chunked): 413 once it ends (96 KiB, and 4 MiB:
     * reset unanswered before), and one that goes on far past the bound
     * (17 MiB, no last chunk) is cut off at once, unanswered; it was read
     * until the request timeout */
    for (int kind = 0; kind < 3; kind++) {
        struct buf chunked;
        buf_init(&chunked);
        buf_printf(&chunked, "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
        static const int chunks[] = {3, 128, 544}; /* of 32 KiB */
        static char blanks[0x8000];
        memset(blanks, ' ', sizeof blanks);
        for (int i = 0; i < chunks[kind]; i++) {
            buf_printf(&chunked, "8000\r\n");
            buf_append(&chunked, blanks, sizeof blanks);
            buf_printf(&chunked, "\r\n");
        }
        if (kind < 2) /* the third has no last chunk */
            buf_printf(&chunked, "0\r\n\r\n");
        int64_t t0 = mono_ms();
        int rc = http_raw("127.0.0.1", orders.port, chunked.data, chunked.len, 8000, &r);
        if (kind < 2) {
            ck_assert_int_eq(rc, 0);
            ck_assert_int_eq(r.status, 413);
            ck_assert_ptr_nonnull(strstr(r.body, "\"code\":\"payload_too_large\""));
            http_result_free(&r);
        }
        ck_assert_int_lt(mono_ms() - t0, 3000);
        buf_cleanup(&chunked);
    }
    assert_nothing_written();
    /* blanks after a header's value are not part of it (RFC 9110): the
     * same key, not a second order */
    struct shot a = {.key = "k-ws  ", .body = ORDER}, b = {.key = "k-ws", .body = ORDER};
    fire(&a);
    fire(&b);
    ck_assert_int_eq(a.status, 201);
    ck_assert_int_eq(b.status, 200);
    ck_assert_str_eq(b.id, a.id);
    ck_assert_int_eq(count("orders"), 1);
    /* the body is read as UTF-8, uncompressed: another charset or a coding
     * is refused (both were read as UTF-8 JSON), UTF-8 however written is not */
    static const struct { const char *h[3]; int status; } ctypes[] = {
        {{"Content-Type: application/json; charset=utf-16", NULL}, 415},
        {{"Content-Type: application/json; charset=iso-8859-1", NULL}, 415},
        {{"Content-Type: application/json", "Content-Encoding: gzip", NULL}, 415},
        {{"Content-Type: application/json\t; charset=\"UTF-8\"", NULL}, 201},
        {{"Content-Type: application/json;charset=utf8", NULL}, 201},
        {{"Content-Type: APPLICATION/JSON; charset=us-ascii", "Content-Encoding: identity", NULL},
         201},
    };
    long created = 1;
    for (size_t i = 0; i < ARRAY_LEN(ctypes); i++) {
        ck_assert_int_eq(http_do(orders.port, "POST", "/orders", ctypes[i].h, ORDER, strlen(ORDER),
                                 &r), 0);
        ck_assert_msg(r.status == ctypes[i].status, "%s: %d %s", ctypes[i].h[0], r.status, r.body);
        created += r.status == 201;
        http_result_free(&r);
    }
    ck_assert_int_eq(count("orders"), created);
}
END_TEST

/* Clients that shut their sending side once the request is out: each
 * answered. Four at a time, 25 each: libmicrohttpd 0.9.75 closed a
 * connection that read the end of the stream once resumed, before its
 * answer was queued (a helper's probe: 66 of 200 unanswered, every order
 * created). */
static void *post_then_eof(void *arg)
{
    int *answered = arg;
    char raw[512];
    int n = snprintf(raw, sizeof raw, "POST /orders HTTP/1.1\r\nHost: x\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     strlen(ORDER), ORDER);
    for (int i = 0; i < 25; i++) {
        struct http_result r;
        if (http_raw_then_eof("127.0.0.1", orders.port, raw, (size_t)n, 5000, &r) == 0) {
            *answered += r.status == 201;
            http_result_free(&r);
        }
    }
    return NULL;
}

START_TEST(a_client_that_shuts_its_sending_side_is_answered)
{
    pthread_t t[4];
    int answered[4] = {0};
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, post_then_eof, &answered[i]);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    int total = answered[0] + answered[1] + answered[2] + answered[3];
    ck_assert_msg(total == 100, "%d of 100 answered 201 (%ld orders created)", total,
                  count("orders"));
    ck_assert_int_eq(count("orders"), 100);
    /* answered on the server's own thread, then closed within a second, and
     * so after three requests pipelined: a client reading to the close
     * waited for the request timeout (10 s), and a fix that closed after
     * the first answer (Connection: close) dropped the other two */
    const char *get = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    struct buf three;
    buf_init(&three);
    for (int i = 0; i < 3; i++)
        buf_printf(&three, "%s", get);
    for (int i = 0; i < 6; i++) {
        struct http_result r;
        const char *raw = i % 2 ? three.data : get;
        int64_t t0 = mono_ms();
        ck_assert_int_eq(http_raw_then_eof("127.0.0.1", orders.port, raw, strlen(raw), 5000, &r), 0);
        int64_t took = mono_ms() - t0;
        ck_assert_int_eq(r.status, 200);
        int answers = 1 + count_of(r.body, "HTTP/1.1 200"); /* the first is r.head */
        http_result_free(&r);
        ck_assert_msg(answers == (i % 2 ? 3 : 1), "exchange %d: %d answers", i, answers);
        ck_assert_msg(took < 2000, "exchange %d: closed %lld ms after it was sent", i,
                      (long long)took);
    }
    buf_cleanup(&three);
}
END_TEST

START_TEST(idempotency_key_with_other_body_is_409)
{
    struct shot a = {.key = "k-2", .body = ORDER};
    struct shot b = {.key = "k-2", .body = "{\"customer_id\":\"c-1\",\"items\":[{\"sku\":\"SKU-1\",\"qty\":3}]}"};
    struct shot c = {.key = "k-2", .body = "{ \"items\":[{\"qty\":2,\"sku\":\"SKU-1\"}], \"customer_id\":\"c-1\", \"x\":1}"};
    fire(&a);
    fire(&b);
    fire(&c);
    ck_assert_int_eq(a.status, 201);
    ck_assert_int_eq(b.status, 409);
    ck_assert_int_eq(c.status, 200); /* the same order, written differently */
    ck_assert_str_eq(c.id, a.id);
    ck_assert_int_eq(count("orders"), 1);
}
END_TEST

/* The committers write one batch at a time, but a write that is stuck (here
 * on an Idempotency-Key that an open transaction holds) does not hold back
 * the orders behind it: another committer writes them beside it. */
START_TEST(a_stuck_write_does_not_hold_back_the_orders_behind_it)
{
    PGconn *hold = pg_hold("orders", "INSERT INTO orders (id, customer_id, idempotency_key, event_id) "
                                     "VALUES (gen_random_uuid(), 'holder', 'held-key', gen_random_uuid())");
    ck_assert_ptr_nonnull(hold);
    struct shot stuck = {.key = "held-key", .body = ORDER};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, fire, &stuck), 0);
    sleep_ms(300); /* a committer has taken it and waits for the holder */
    for (int i = 0; i < 5; i++) {
        struct shot next = {.body = ORDER};
        int64_t t0 = mono_ms();
        fire(&next);
        ck_assert_int_eq(next.status, 201);
        ck_assert_msg(mono_ms() - t0 < 2000, "answered after %lld ms", (long long)(mono_ms() - t0));
    }
    ck_assert_int_eq(count("orders"), 5); /* the held one not written yet */
    ck_assert(pg_release(hold, "ROLLBACK"));
    pthread_join(t, NULL);
    ck_assert_int_eq(stuck.status, 201);
    ck_assert_int_eq(count("orders"), 6);
}
END_TEST

START_TEST(one_bad_order_in_a_group_commit_fails_alone)
{
    ck_assert_int_eq(pg_exec("orders",
        "CREATE FUNCTION picky() RETURNS trigger LANGUAGE plpgsql AS "
        "$$BEGIN IF NEW.customer_id = 'bad' THEN RAISE EXCEPTION 'refused'; END IF; "
        "RETURN NEW; END$$;"
        "CREATE TRIGGER picky BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION picky();"), 0);
    enum { N = 48 };
    struct shot shots[N] = {{0}};
    for (int i = 0; i < N; i++)
        shots[i].body = i == N / 2 ? "{\"customer_id\":\"bad\",\"items\":[{\"sku\":\"A\",\"qty\":1}]}"
                                   : ORDER;
    fire_all(shots, N); /* concurrent: they share commits */
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(shots[i].status, i == N / 2 ? 500 : 201);
    ck_assert_int_eq(count("orders"), N - 1);
    ck_assert_int_eq(count("outbox_events"), N - 1);
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM orders WHERE customer_id = 'bad'"), 0);
}
END_TEST

START_TEST(postgres_down_answers_503_then_recovers)
{
    ck_assert_int_eq(http_post_json(orders.port, "/orders", ORDER, NULL), 201);
    stack_cmd("pg-stop");
    struct http_result r;
    int st = http_post_json(orders.port, "/orders", ORDER, &r);
    int st2 = http_get(orders.port, "/orders/6f1c1f1e-0000-4000-8000-000000000000", NULL);
    stack_cmd("pg-start");
    ck_assert_int_eq(st, 503);
    ck_assert_ptr_nonnull(strstr(r.body, "\"code\":\"unavailable\""));
    ck_assert_int_eq(st2, 503);
    http_result_free(&r);
    int ok = 0;
    for (int i = 0; i < 100 && !ok; i++, sleep_ms(100))
        ok = http_post_json(orders.port, "/orders", ORDER, NULL) == 201;
    ck_assert(ok);
    ck_assert_int_eq(count("orders"), 2);
    ck_assert_int_eq(count("outbox_events"), 2);
}
END_TEST

START_TEST(traceparent_travels_with_the_event)
{
    const char *tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    char hdr[128];
    snprintf(hdr, sizeof hdr, "traceparent: %s", tp);
    const char *h[] = {"Content-Type: application/json", hdr, NULL};
    struct http_result r;
    ck_assert_int_eq(http_do(orders.port, "POST", "/orders", h, ORDER, strlen(ORDER), &r), 0);
    ck_assert_int_eq(r.status, 201);
    http_result_free(&r);
    /* the event continues the caller's trace with the order's own span */
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM outbox_events WHERE traceparent "
                     "~ '^00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01$' "
                     "AND traceparent <> '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'"),
                     1);
}
END_TEST

START_TEST(invalid_traceparent_is_ignored_and_a_trace_started)
{
    const char *h[] = {"Content-Type: application/json",
                       "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x\xff",
                       NULL};
    struct http_result r;
    ck_assert_int_eq(http_do(orders.port, "POST", "/orders", h, ORDER, strlen(ORDER), &r), 0);
    ck_assert_int_eq(r.status, 201);
    http_result_free(&r);
    ck_assert_int_eq(pg_long("orders", "SELECT count(*) FROM outbox_events WHERE traceparent "
                     "~ '^00-[0-9a-f]{32}-[0-9a-f]{16}-00$' AND traceparent NOT LIKE '%4bf92f35%'"),
                     1);
}
END_TEST

/* ---- the batcher alone, its database not answering ---- */

struct outcome {
    atomic_int done;
    enum err e;
    int64_t at_ms;
};

static void record(void *arg, struct order_result *res)
{
    struct outcome *o = arg;
    o->e = res->e;
    json_decref(res->doc);
    o->at_ms = mono_ms();
    atomic_store(&o->done, 1);
}

/* The one committer is stuck connecting (2 s) with the first order: the
 * second, which nobody takes, is answered unavailable at its own bound
 * (300 ms), not after the first one's wait. */
START_TEST(an_order_no_committer_takes_in_time_is_answered_unavailable)
{
    int port, fd = mute_listener(&port); /* a Postgres that never answers */
    char url[128];
    snprintf(url, sizeof url, "postgresql://x@127.0.0.1:%d/x?connect_timeout=2", port);
    struct order_request req;
    struct field_error fe;
    ck_assert_int_eq(order_request_parse(ORDER, strlen(ORDER), &req, &fe), ERR_OK);
    struct order_new o = {&req, NULL, NULL};
    struct outcome first = {0}, second = {0};
    struct batcher *b;
    batcher_start(url, 1, 300, &b);
    batcher_submit(b, &o, record, &first);
    sleep_ms(200); /* the committer has taken it */
    int64_t t0 = mono_ms();
    batcher_submit(b, &o, record, &second);
    while (!atomic_load(&second.done) && mono_ms() - t0 < 5000)
        sleep_ms(10);
    ck_assert_msg(atomic_load(&second.done), "the second order was never answered");
    ck_assert_int_eq(second.e, ERR_UNAVAILABLE);
    ck_assert_msg(second.at_ms - t0 < 1000, "answered after %lld ms",
                  (long long)(second.at_ms - t0));
    ck_assert(!atomic_load(&first.done)); /* still connecting */
    batcher_stop(b); /* the committer gives up, answers the first, stops */
    ck_assert(atomic_load(&first.done));
    ck_assert_int_ne(first.e, ERR_OK);
    order_request_cleanup(&req);
    close(fd);
}
END_TEST

Suite *orders_suite(void)
{
    Suite *s = suite_create("orders");
    TCase *tc = tcase_create("intake");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, post_creates_order_items_and_event_then_get_shows_it);
    tcase_add_test(tc, rejections_answer_400_and_write_nothing);
    tcase_add_test(tc, wrong_type_size_path_and_method);
    tcase_add_test(tc, http_edges_answer_in_the_contracts_shape);
    tcase_add_test(tc, a_client_that_shuts_its_sending_side_is_answered);
    tcase_add_test(tc, failure_after_order_insert_leaves_nothing);
    tcase_add_test(tc, parallel_posts_give_distinct_orders_and_events);
    tcase_add_test(tc, idempotency_race_creates_one_order);
    tcase_add_test(tc, idempotency_key_with_other_body_is_409);
    tcase_add_test(tc, one_bad_order_in_a_group_commit_fails_alone);
    tcase_add_test(tc, a_stuck_write_does_not_hold_back_the_orders_behind_it);
    tcase_add_test(tc, postgres_down_answers_503_then_recovers);
    tcase_add_test(tc, traceparent_travels_with_the_event);
    tcase_add_test(tc, invalid_traceparent_is_ignored_and_a_trace_started);
    tcase_add_test(tc, unknown_fields_are_ignored_whatever_they_hold);
    suite_add_tcase(s, tc);
    tc = tcase_create("batcher");
    tcase_add_test(tc, an_order_no_committer_takes_in_time_is_answered_unavailable);
    suite_add_tcase(s, tc);
    return s;
}
