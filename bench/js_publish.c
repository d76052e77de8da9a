/* js_publish.c - the raw JetStream baseline of `make bench`, and the loader
 * of the consumer benchmark.
 *
 * Publishes COUNT OrderCreated events in the contract's format (the same
 * ~300-byte bodies the relay sends) with js_PublishMsgAsync, each with a
 * unique Nats-Msg-Id and an Event-Type header, then waits for every ack with
 * js_PublishAsyncComplete. Prints one line:
 *     published=N errors=N bytes=N seconds=S rate=R
 * where seconds runs from the first publish to the last ack (connecting and
 * creating the stream are not timed), so the figure is what JetStream itself
 * can take from one publisher.
 *
 *   js_publish -u URL -s STREAM -t SUBJECT -n COUNT [-c] [-p] [-m MAX_PENDING] [-4]
 *     -c  create STREAM (file storage, 2-minute duplicate window, subjects
 *         SUBJECT's first token + ".>") if it does not exist
 *     -p  purge STREAM first (a durable consumer's floor moves past the purge)
 *     -m  most publishes in flight at once (0 = no limit; default 0)
 *     -4  random (version-4) event and order ids, as a producer other than
 *         order-service may send; by default they are time-ordered
 *         (version 7), made by the services' own uuid_v7
 *
 * Built by scripts/bench with cc + pkg-config libnats, with the services'
 * common/util.c (ids, clocks). */
#include "util.h"

#include <nats/nats.h>

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_MS 1000000LL
#define DUPLICATE_WINDOW_MS (2 * 60 * 1000)
#define COMPLETE_WAIT_MS 120000 /* bound for the final wait on acks */
#define NSKUS 5                 /* SKU-1..SKU-5, seeded by scripts/bench */
#define ITEMS_PER_ORDER 4

struct opts {
    const char *url, *stream, *subject;
    long count;
    int create, purge;
    int64_t max_pending;
};

static int ids_v4; /* -4 */

static atomic_long acks, errors;

static void die(const char *what, natsStatus s, jsErrCode jerr)
{
    fprintf(stderr, "js_publish: %s: %s (jetstream error %d)\n", what, natsStatus_GetText(s),
            (int)jerr);
    exit(1);
}

/* An event or order id: as order-service makes them, or with -4 random. */
static void uuid_make(char out[UUID_STR_LEN])
{
    if (ids_v4)
        uuid_v4(out);
    else
        uuid_v7(out);
}

/* The i-th OrderCreated body: 4 distinct SKUs out of 5, qty 1-3. The same
 * shape as bench/drain_rows.sql and bench/order.lua, so all three measure
 * bodies of the same size. Returns its length. */
static int order_body(char *buf, size_t cap, long i, const char *event_id)
{
    char order_id[UUID_STR_LEN], at[32], items[256];
    uuid_make(order_id);
    time_rfc3339(at);
    size_t n = 0;
    for (int k = 0; k < ITEMS_PER_ORDER; k++)
        n += (size_t)snprintf(items + n, sizeof items - n, "%s{\"sku\":\"SKU-%ld\",\"qty\":%ld}",
                              k ? "," : "", (i + k) % NSKUS + 1, (i + k) % 3 + 1);
    return snprintf(buf, cap,
                    "{\"event_id\":\"%s\",\"type\":\"OrderCreated\",\"order_id\":\"%s\","
                    "\"customer_id\":\"customer-%06ld\",\"items\":[%s],\"occurred_at\":\"%s\"}",
                    event_id, order_id, i % 1000000, items, at);
}

static void on_ack(jsCtx *js, natsMsg *m, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    (void)js;
    (void)closure;
    if (pa)
        atomic_fetch_add(&acks, 1);
    else if (pae)
        atomic_fetch_add(&errors, 1);
    natsMsg_Destroy(m);
}

/* The stream kind of the contract: file storage, 2-minute duplicate window. */
static void ensure_stream(jsCtx *js, const struct opts *o)
{
    jsErrCode jerr = 0;
    jsStreamInfo *si = NULL;
    natsStatus s = js_GetStreamInfo(&si, js, o->stream, NULL, &jerr);
    jsStreamInfo_Destroy(si);
    if (s == NATS_OK)
        return;
    if (!o->create)
        die(o->stream, s, jerr);
    char subjects[256];
    snprintf(subjects, sizeof subjects, "%.*s.>", (int)strcspn(o->subject, "."), o->subject);
    const char *list[] = {subjects};
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = o->stream;
    cfg.Subjects = list;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    cfg.Duplicates = DUPLICATE_WINDOW_MS * NS_PER_MS;
    jerr = 0;
    s = js_AddStream(&si, js, &cfg, NULL, &jerr);
    jsStreamInfo_Destroy(si);
    if (s != NATS_OK)
        die("create stream", s, jerr);
}

static void publish_one(jsCtx *js, const struct opts *o, long i, size_t *bytes)
{
    char id[UUID_STR_LEN], body[512];
    uuid_make(id);
    int len = order_body(body, sizeof body, i, id);
    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, o->subject, NULL, body, len);
    if (s == NATS_OK) s = natsMsgHeader_Set(m, "Nats-Msg-Id", id);
    if (s == NATS_OK) s = natsMsgHeader_Set(m, "Event-Type", "OrderCreated");
    if (s == NATS_OK) s = js_PublishMsgAsync(js, &m, NULL);
    if (s != NATS_OK)
        die("publish", s, 0);
    *bytes += (size_t)len;
}

static void usage(void)
{
    fprintf(stderr, "usage: js_publish -u URL -s STREAM -t SUBJECT -n COUNT [-c] [-p] [-m MAX_PENDING] [-4]\n");
    exit(2);
}

static void parse(int argc, char **argv, struct opts *o)
{
    int c;
    while ((c = getopt(argc, argv, "u:s:t:n:cpm:4")) != -1) {
        switch (c) {
        case 'u': o->url = optarg; break;
        case 's': o->stream = optarg; break;
        case 't': o->subject = optarg; break;
        case 'n': o->count = atol(optarg); break;
        case 'c': o->create = 1; break;
        case 'p': o->purge = 1; break;
        case '4': ids_v4 = 1; break;
        case 'm': o->max_pending = atoll(optarg); break;
        default: usage();
        }
    }
    if (!o->url || !o->stream || !o->subject || o->count < 0)
        usage();
}

int main(int argc, char **argv)
{
    struct opts o = {0};
    parse(argc, argv, &o);

    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    natsStatus s = natsConnection_ConnectTo(&nc, o.url);
    if (s != NATS_OK)
        die("connect", s, 0);
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.PublishAsync.AckHandler = on_ack;
    jo.PublishAsync.MaxPending = o.max_pending;
    jo.PublishAsync.StallWait = 5000;
    if ((s = natsConnection_JetStream(&js, nc, &jo)) != NATS_OK)
        die("jetstream", s, 0);
    ensure_stream(js, &o);
    jsErrCode jerr = 0;
    if (o.purge && (s = js_PurgeStream(js, o.stream, NULL, &jerr)) != NATS_OK)
        die("purge", s, jerr);

    size_t bytes = 0;
    double t0 = mono_s();
    for (long i = 0; i < o.count; i++)
        publish_one(js, &o, i, &bytes);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = COMPLETE_WAIT_MS;
    s = js_PublishAsyncComplete(js, &po);
    double secs = mono_s() - t0;
    if (s != NATS_OK)
        die("waiting for acks", s, 0);

    long ok = atomic_load(&acks), bad = atomic_load(&errors);
    printf("published=%ld errors=%ld bytes=%zu seconds=%.3f rate=%.0f\n", ok, bad,
           o.count ? bytes / (size_t)o.count : 0, secs, secs > 0 ? (double)ok / secs : 0);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    nats_Close();
    return bad == 0 && ok == o.count ? 0 : 1;
}
