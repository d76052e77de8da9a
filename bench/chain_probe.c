/* chain_probe.c - the end to end's baseline in `make bench`: an order's path
 * through the same parts (Postgres, JetStream) by the shortest design the
 * pattern allows, one order at a time, nothing batched; paced beside the
 * flow. What the parts take for it under the flow's load is a floor for
 * any design of the flow on the same machine.
 *
 * Three threads, each with its own Postgres connection, as the flow's
 * three writers:
 *   orders     the order's durable commit (one INSERT, autocommit), then
 *              its event published at once from memory (no claim from a
 *              table) and the ack awaited                <- timed from the commit
 *   inventory  a pull request always waiting (a long poll): the event,
 *              the reservation's durable commit, the ack sent, the reply
 *              published and its ack awaited
 *   replies    the same long poll: the reply, the settle's durable commit,
 *              the ack sent                              <- to that commit
 * One JetStream stream on file storage; each publish carries a Nats-Msg-Id.
 * Prints one line: n=N p50_ms=X p99_ms=Y (of the orders that arrived);
 * exits 0 if any arrived. The stages overlap when an order takes longer
 * than the pacing's interval: a late order may wait behind the one before.
 *
 *   chain_probe -d PG_URL -u NATS_URL -r RATE -t SECS
 *
 * Writes rows into bench_probe (made by scripts/bench), and its own stream
 * BENCH_CHAIN (subjects bench-chain.>), deleted at the end. Built by
 * scripts/bench with cc + pkg-config libnats libpq, with common/util.c. */
#include "util.h"

#include <libpq-fe.h>
#include <nats/nats.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STREAM "BENCH_CHAIN"
#define EVENTS "bench-chain.events"
#define REPLIES "bench-chain.replies"
#define POLL_MS 500        /* a long poll's length; then it is sent again */
#define FINISH_MS 10000    /* bound for the last orders to arrive after the paced ones */
#define MAX_ORDERS 1000000

static jsCtx *js;
static double *t0, *ms;   /* per order: its commit (mono s), its time through (ms) */
static long norders;
static atomic_long arrived;
static atomic_int stopping;

static void die(const char *what, const char *why)
{
    fprintf(stderr, "chain_probe: %s: %s\n", what, why);
    exit(1);
}

static void nats_check(const char *what, natsStatus s, jsErrCode jerr)
{
    if (s != NATS_OK) {
        char why[160];
        snprintf(why, sizeof why, "%s (jetstream error %d)", natsStatus_GetText(s), (int)jerr);
        die(what, why);
    }
}

static PGconn *pg_open(const char *url)
{
    PGconn *pg = PQconnectdb(url);
    if (PQstatus(pg) != CONNECTION_OK)
        die("postgres", PQerrorMessage(pg));
    return pg;
}

/* A durable one-row commit: one round trip. */
static void commit_one(PGconn *pg)
{
    PGresult *r = PQexec(pg, "INSERT INTO bench_probe DEFAULT VALUES");
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        die("insert", PQerrorMessage(pg));
    PQclear(r);
}

/* Publishes order i's message on subject and waits for JetStream's ack. */
static void publish(const char *subject, long i)
{
    char body[32], id[64];
    int len = snprintf(body, sizeof body, "%ld", i);
    snprintf(id, sizeof id, "%s-%d-%ld", subject, (int)getpid(), i);
    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, subject, NULL, body, len);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, "Nats-Msg-Id", id);
    jsPubAck *pa = NULL;
    jsErrCode jerr = 0;
    if (s == NATS_OK)
        s = js_PublishMsg(&pa, js, m, NULL, &jerr);
    nats_check("publish", s, jerr);
    jsPubAck_Destroy(pa);
    natsMsg_Destroy(m);
}

struct stage {
    const char *filter, *durable, *pg_url;
    int last; /* the replies' stage: the order is through */
    natsSubscription *sub;
    pthread_t thread;
};

/* A consumer stage: long polls; each message committed, acked, passed on. */
static void *stage_main(void *arg)
{
    struct stage *st = arg;
    PGconn *pg = pg_open(st->pg_url);
    while (!atomic_load(&stopping)) {
        natsMsgList list = {0};
        jsErrCode jerr = 0;
        natsStatus s = natsSubscription_Fetch(&list, st->sub, 1, POLL_MS, &jerr);
        if (s == NATS_TIMEOUT)
            continue;
        nats_check("fetch", s, jerr);
        for (int k = 0; k < list.Count; k++) {
            long i = atol(natsMsg_GetData(list.Msgs[k]));
            commit_one(pg);
            natsMsg_Ack(list.Msgs[k], NULL);
            if (i < 0 || i >= norders)
                continue;
            if (st->last) {
                if (ms[i] == 0) /* a redelivered reply counts once */
                    atomic_fetch_add(&arrived, 1);
                ms[i] = (mono_s() - t0[i]) * 1000;
            } else
                publish(REPLIES, i);
        }
        natsMsgList_Destroy(&list);
    }
    PQfinish(pg);
    return NULL;
}

static void make_stream(void)
{
    const char *subjects[] = {"bench-chain.>"};
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = STREAM;
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    jsErrCode jerr = 0;
    jsStreamInfo *si = NULL;
    nats_check("create stream", js_AddStream(&si, js, &cfg, NULL, &jerr), jerr);
    jsStreamInfo_Destroy(si);
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The paced orders: commit, publish; then until all arrived (bounded). */
static void run_orders(const char *pg_url, double rate)
{
    PGconn *pg = pg_open(pg_url);
    double start = mono_s();
    for (long i = 0; i < norders; i++) {
        double wait = start + (double)i / rate - mono_s(); /* paced; late: at once */
        if (wait > 0)
            usleep((useconds_t)(wait * 1e6));
        commit_one(pg);
        t0[i] = mono_s();
        publish(EVENTS, i);
    }
    for (int64_t end = mono_ms() + FINISH_MS; atomic_load(&arrived) < norders && mono_ms() < end;)
        usleep(10000);
    PQfinish(pg);
}

int main(int argc, char **argv)
{
    const char *pg_url = NULL, *nats_url = NULL;
    double rate = 0, secs = 0;
    int opt;
    while ((opt = getopt(argc, argv, "d:u:r:t:")) != -1) {
        switch (opt) {
        case 'd': pg_url = optarg; break;
        case 'u': nats_url = optarg; break;
        case 'r': rate = atof(optarg); break;
        case 't': secs = atof(optarg); break;
        default: pg_url = NULL;
        }
    }
    norders = (long)(rate * secs);
    if (!pg_url || !nats_url || norders < 1 || norders > MAX_ORDERS) {
        fprintf(stderr, "usage: chain_probe -d PG_URL -u NATS_URL -r RATE -t SECS (1 <= RATE x SECS <= %d)\n",
                MAX_ORDERS);
        return 2;
    }
    natsConnection *nc = NULL;
    nats_check("connect", natsConnection_ConnectTo(&nc, nats_url), 0);
    nats_check("jetstream", natsConnection_JetStream(&js, nc, NULL), 0);
    make_stream();
    struct stage stages[] = {{EVENTS, "chain-inventory", pg_url, 0, NULL, 0},
                             {REPLIES, "chain-replies", pg_url, 1, NULL, 0}};
    t0 = calloc((size_t)norders, sizeof *t0);
    ms = calloc((size_t)norders, sizeof *ms);
    if (!t0 || !ms)
        die("memory", "calloc");
    for (int k = 0; k < 2; k++) {
        jsErrCode jerr = 0;
        nats_check("pull subscribe",
                   js_PullSubscribe(&stages[k].sub, js, stages[k].filter, stages[k].durable, NULL,
                                    NULL, &jerr), jerr);
        if (pthread_create(&stages[k].thread, NULL, stage_main, &stages[k]) != 0)
            die("thread", "pthread_create");
    }
    run_orders(pg_url, rate);
    atomic_store(&stopping, 1);
    for (int k = 0; k < 2; k++) {
        pthread_join(stages[k].thread, NULL);
        natsSubscription_Destroy(stages[k].sub);
    }
    long n = 0;
    for (long i = 0; i < norders; i++)
        if (ms[i] > 0)
            ms[n++] = ms[i];
    qsort(ms, (size_t)n, sizeof *ms, by_value);
    if (n)
        printf("n=%ld p50_ms=%.3f p99_ms=%.3f\n", n, ms[(n - 1) / 2], ms[(long)((double)(n - 1) * 0.99)]);
    js_DeleteStream(js, STREAM, NULL, NULL);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    nats_Close();
    free(t0);
    free(ms);
    return n > 0 ? 0 : 1;
}
