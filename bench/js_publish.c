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
 *         (version 7) like order-service's, to the millisecond
 *
 * Built by scripts/bench with cc + pkg-config libnats. */
#define _GNU_SOURCE
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

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* xorshift64*: fast, and random enough for ids that only must not repeat. */
static uint64_t rng_state;
static uint64_t rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

static void seed_rng(void)
{
    FILE *f = fopen("/dev/urandom", "rb");
    if (!f || fread(&rng_state, sizeof rng_state, 1, f) != 1)
        rng_state = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    if (f)
        fclose(f);
    rng_state |= 1; /* xorshift must not start at 0 */
}

/* An id like order-service's: version 7 (RFC 9562), the unix time in ms,
 * then random bits (order-service orders them within the ms too); or, with
 * -4, a version-4 UUID (the services accept any well-formed one). */
static void uuid_make(char out[37])
{
    uint64_t hi = rng(), lo = rng();
    if (ids_v4) {
        hi = (hi & ~0xF000ULL) | 0x4000ULL; /* version 4 */
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
        hi = (ms << 16) | 0x7000ULL | (hi & 0x0FFFULL); /* unix_ts_ms, version 7, rand_a */
    }
    lo = (lo & 0x3FFFFFFFFFFFFFFFULL) | 0x8000000000000000ULL; /* variant 10 */
    snprintf(out, 37, "%08x-%04x-%04x-%04x-%012llx", (unsigned)(hi >> 32),
             (unsigned)(hi >> 16) & 0xFFFF, (unsigned)hi & 0xFFFF, (unsigned)(lo >> 48),
             (unsigned long long)(lo & 0xFFFFFFFFFFFFULL));
}

static void rfc3339_now(char out[32])
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%06ldZ", ts.tv_nsec / 1000);
}

/* The i-th OrderCreated body: 4 distinct SKUs out of 5, qty 1-3. The same
 * shape as bench/drain_rows.sql and bench/order.lua, so all three measure
 * bodies of the same size. Returns its length. */
static int order_body(char *buf, size_t cap, long i, const char *event_id)
{
    char order_id[37], at[32], items[256];
    uuid_make(order_id);
    rfc3339_now(at);
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
    char id[37], body[512];
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
    seed_rng();

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
    double t0 = now_s();
    for (long i = 0; i < o.count; i++)
        publish_one(js, &o, i, &bytes);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = COMPLETE_WAIT_MS;
    s = js_PublishAsyncComplete(js, &po);
    double secs = now_s() - t0;
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
