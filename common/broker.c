/* broker.c - nats.c behind the broker.h interface.
 * Owns the natsConnection, the JetStream contexts, the stream/consumer
 * settings of the contract and the translation of natsStatus into enum err;
 * not what is published or what a message means. */
#include "broker.h"
#include "util.h"

#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_PER_MS 1000000LL
#define DUPLICATE_WINDOW_MS (2 * 60 * 1000)
#define ACK_WAIT_MS 10000 /* a delivery lost with a broker crash comes back after this */

struct stream_def {
    const char *name, *subjects;
};

static const struct stream_def streams[] = {
    {"ORDERS", "orders.>"},
    {"INVENTORY", "inventory.>"},
};

/* Results of the batch being published; written by nats.c's ack thread. */
struct pub_batch {
    pthread_mutex_t mu;
    struct broker_out *msgs;
    natsMsg **sent;          /* sent[i] is msgs[i]'s natsMsg while in flight */
    size_t n;
};

struct broker {
    natsConnection *nc;
    jsCtx *js;               /* publishing, with our ack handler */
    jsCtx *js_admin;         /* stream/consumer management and pull subscriptions */
    struct broker_settings set;
    char *urls;
    atomic_int generation;   /* + 1 at every (re)connect */
    atomic_int ensured;      /* the generation the streams were last ensured at */
    struct pub_batch batch;
};

struct broker_sub {
    natsSubscription *sub;
    struct broker *b;
    int generation;          /* the connection generation it was last ensured at */
    char *stream, *durable, *filter;
};

static void set_msg(char *msg, size_t msglen, const char *what, natsStatus s, jsErrCode jerr)
{
    if (msg)
        snprintf(msg, msglen, "%s: %s (jetstream error %d)", what, natsStatus_GetText(s),
                 (int)jerr);
}

/* With a connected callback, natsConnection_Connect returns at once when no
 * server answers yet and keeps trying in the background (without one it
 * would block until the first connection). */
static void on_connected(natsConnection *nc, void *closure)
{
    (void)nc;
    struct broker *b = closure;
    atomic_fetch_add(&b->generation, 1);
}

/* The server may have restarted on an empty store: streams and consumers
 * are ensured again (the generation no longer matches). */
static void on_reconnected(natsConnection *nc, void *closure)
{
    on_connected(nc, closure);
}

/* Forget that the streams exist (one was reported missing). */
static void forget_streams(struct broker *b)
{
    atomic_store(&b->ensured, -1);
}

/* Only refusals that no retry can change are permanent; everything else
 * (limits, a missing stream, a leader election) passes with time. */
static int is_permanent(natsStatus s, jsErrCode code)
{
    return s == NATS_MAX_PAYLOAD || code == JSStreamMessageExceedsMaximumErr;
}

/* Finds which message of the batch a natsMsg pointer is. */
static struct broker_out *batch_find(struct pub_batch *pb, natsMsg *m)
{
    for (size_t i = 0; i < pb->n; i++)
        if (pb->sent[i] == m)
            return &pb->msgs[i];
    return NULL;
}

static void on_ack(jsCtx *js, natsMsg *m, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    (void)js;
    struct broker *b = closure;
    struct pub_batch *pb = &b->batch;
    pthread_mutex_lock(&pb->mu);
    struct broker_out *o = batch_find(pb, m);
    if (o) /* m is freed below: its address may come back for a later message */
        pb->sent[o - pb->msgs] = NULL;
    if (o && pa) {
        o->acked = 1;
        o->seq = pa->Sequence;
        o->duplicate = pa->Duplicate;
    } else if (o && pae) {
        o->permanent = is_permanent(pae->Err, pae->ErrCode);
        snprintf(o->err, sizeof o->err, "%s", pae->ErrText ? pae->ErrText
                                                       : natsStatus_GetText(pae->Err));
    }
    if (pae && (pae->Err == NATS_NO_RESPONDERS || pae->ErrCode == JSStreamNotFoundErr))
        forget_streams(b);
    pthread_mutex_unlock(&pb->mu);
    natsMsg_Destroy(m);
}

static natsStatus make_opts(struct broker *b, natsOptions **out)
{
    natsOptions *o = NULL;
    const char *list[16];
    int n = 0;
    char *save = NULL;
    for (char *t = strtok_r(b->urls, ",", &save); t && n < 16; t = strtok_r(NULL, ",", &save))
        list[n++] = t;
    natsStatus s = natsOptions_Create(&o);
    if (s == NATS_OK) s = natsOptions_SetServers(o, list, n);
    if (s == NATS_OK) s = natsOptions_SetMaxReconnect(o, -1);
    if (s == NATS_OK) s = natsOptions_SetReconnectWait(o, 250);
    if (s == NATS_OK) s = natsOptions_SetRetryOnFailedConnect(o, true, on_connected, b);
    if (s == NATS_OK) s = natsOptions_SetReconnectedCB(o, on_reconnected, b);
    if (s == NATS_OK) s = natsOptions_SetTimeout(o, 2000);
    if (s == NATS_OK) s = natsOptions_SetName(o, "outbox-service");
    if (s != NATS_OK)
        natsOptions_Destroy(o);
    else
        *out = o;
    return s;
}

static natsStatus make_contexts(struct broker *b)
{
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.PublishAsync.AckHandler = on_ack;
    jo.PublishAsync.AckHandlerClosure = b;
    jo.Wait = 5000;
    natsStatus s = natsConnection_JetStream(&b->js, b->nc, &jo);
    jsOptions_Init(&jo);
    jo.Wait = 2000; /* API calls: short, so that a stop is never held up long */
    if (s == NATS_OK)
        s = natsConnection_JetStream(&b->js_admin, b->nc, &jo);
    return s;
}

enum err broker_new(const struct broker_settings *set, struct broker **out,
                    char *msg, size_t msglen)
{
    struct broker *b = xcalloc(1, sizeof *b);
    natsOptions *opts = NULL;
    b->set = *set;
    b->urls = xstrdup(set->urls);
    atomic_store(&b->ensured, -1);
    pthread_mutex_init(&b->batch.mu, NULL);
    natsStatus s = make_opts(b, &opts);
    if (s == NATS_OK) {
        s = natsConnection_Connect(&b->nc, opts);
        if (s == NATS_NOT_YET_CONNECTED)
            s = NATS_OK; /* retried in the background */
    }
    if (s == NATS_OK)
        s = make_contexts(b);
    natsOptions_Destroy(opts);
    if (s != NATS_OK) {
        set_msg(msg, msglen, "nats connect", s, 0);
        broker_free(b);
        return ERR_BROKER;
    }
    *out = b;
    return ERR_OK;
}

void broker_free(struct broker *b)
{
    if (!b)
        return;
    jsCtx_Destroy(b->js);
    jsCtx_Destroy(b->js_admin);
    natsConnection_Destroy(b->nc);
    pthread_mutex_destroy(&b->batch.mu);
    free(b->urls);
    free(b);
}

int broker_connected(struct broker *b)
{
    return b->nc && natsConnection_Status(b->nc) == NATS_CONN_STATUS_CONNECTED;
}

static natsStatus ensure_stream(struct broker *b, const struct stream_def *d, jsErrCode *jerr)
{
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    const char *subjects[] = {d->subjects};
    cfg.Name = d->name;
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    cfg.Replicas = (int64_t)b->set.replicas;
    cfg.Duplicates = (b->set.dup_window_ms ? b->set.dup_window_ms : DUPLICATE_WINDOW_MS) * NS_PER_MS;
    cfg.MaxAge = b->set.max_age_ms * NS_PER_MS;
    jsStreamInfo *si = NULL;
    natsStatus s = js_AddStream(&si, b->js_admin, &cfg, NULL, jerr);
    if (s != NATS_OK && *jerr == JSStreamNameExistErr)
        s = js_UpdateStream(&si, b->js_admin, &cfg, NULL, jerr); /* converge the settings */
    jsStreamInfo_Destroy(si);
    return s;
}

enum err broker_ensure_streams(struct broker *b, char *msg, size_t msglen)
{
    int gen = atomic_load(&b->generation); /* read first: a reconnect meanwhile wins */
    if (atomic_load(&b->ensured) == gen)
        return ERR_OK;
    if (!broker_connected(b)) {
        set_msg(msg, msglen, "nats", NATS_CONNECTION_DISCONNECTED, 0);
        return ERR_UNAVAILABLE;
    }
    for (size_t i = 0; i < ARRAY_LEN(streams); i++) {
        jsErrCode jerr = 0;
        natsStatus s = ensure_stream(b, &streams[i], &jerr);
        if (s != NATS_OK) {
            set_msg(msg, msglen, streams[i].name, s, jerr);
            return broker_connected(b) && jerr ? ERR_BROKER : ERR_UNAVAILABLE;
        }
    }
    atomic_store(&b->ensured, gen);
    return ERR_OK;
}

static natsStatus build_msg(const struct broker_out *o, natsMsg **out)
{
    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, o->subject, NULL, o->payload, (int)o->len);
    if (s == NATS_OK) s = natsMsgHeader_Set(m, "Nats-Msg-Id", o->event_id);
    if (s == NATS_OK) s = natsMsgHeader_Set(m, "Event-Type", o->event_type);
    if (s == NATS_OK && o->traceparent && o->traceparent[0])
        s = natsMsgHeader_Set(m, "traceparent", o->traceparent);
    if (s != NATS_OK)
        natsMsg_Destroy(m);
    else
        *out = m;
    return s;
}

/* Messages still without an ack at the deadline: take them back, mark them. */
static void reclaim_pending(struct broker *b, const char *why)
{
    natsMsgList pending = {0};
    if (js_PublishAsyncGetPendingList(&pending, b->js) == NATS_OK) {
        pthread_mutex_lock(&b->batch.mu);
        for (int i = 0; i < pending.Count; i++) {
            struct broker_out *o = batch_find(&b->batch, pending.Msgs[i]);
            if (o && !o->acked && !o->err[0])
                snprintf(o->err, sizeof o->err, "no ack: %s", why);
        }
        pthread_mutex_unlock(&b->batch.mu);
        natsMsgList_Destroy(&pending);
    }
}

static void send_all(struct broker *b, struct broker_out *msgs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        natsMsg *m = NULL;
        natsStatus s = build_msg(&msgs[i], &m);
        pthread_mutex_lock(&b->batch.mu);
        b->batch.sent[i] = m;
        pthread_mutex_unlock(&b->batch.mu);
        if (s == NATS_OK)
            s = js_PublishMsgAsync(b->js, &m, NULL);
        if (s != NATS_OK) {
            pthread_mutex_lock(&b->batch.mu);
            b->batch.sent[i] = NULL;
            snprintf(msgs[i].err, sizeof msgs[i].err, "publish: %s", natsStatus_GetText(s));
            msgs[i].permanent = is_permanent(s, 0);
            pthread_mutex_unlock(&b->batch.mu);
            natsMsg_Destroy(m); /* NULL (a no-op) once the library took it */
        }
    }
}

enum err broker_publish(struct broker *b, struct broker_out *msgs, size_t n, int timeout_ms)
{
    if (!broker_connected(b)) {
        for (size_t i = 0; i < n; i++)
            snprintf(msgs[i].err, sizeof msgs[i].err, "nats: not connected");
        return ERR_UNAVAILABLE;
    }
    pthread_mutex_lock(&b->batch.mu);
    b->batch.msgs = msgs;
    b->batch.n = n;
    b->batch.sent = xcalloc(n, sizeof *b->batch.sent);
    pthread_mutex_unlock(&b->batch.mu);

    send_all(b, msgs, n);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = timeout_ms;
    natsStatus s = js_PublishAsyncComplete(b->js, &po);
    if (s != NATS_OK)
        reclaim_pending(b, natsStatus_GetText(s));

    pthread_mutex_lock(&b->batch.mu);
    free(b->batch.sent);
    b->batch.sent = NULL;
    b->batch.msgs = NULL;
    b->batch.n = 0;
    pthread_mutex_unlock(&b->batch.mu);
    return ERR_OK;
}

static natsStatus ensure_consumer(struct broker *b, const char *stream, const char *durable,
                                  const char *filter, jsErrCode *jerr)
{
    jsConsumerConfig cc;
    jsConsumerConfig_Init(&cc);
    cc.Durable = durable;
    cc.FilterSubject = filter;
    cc.AckPolicy = js_AckExplicit;
    cc.DeliverPolicy = js_DeliverAll;
    cc.AckWait = ACK_WAIT_MS * NS_PER_MS;
    cc.MaxDeliver = -1;
    cc.MaxAckPending = 20000;
    jsConsumerInfo *ci = NULL;
    natsStatus s = js_AddConsumer(&ci, b->js_admin, stream, &cc, NULL, jerr);
    if (s != NATS_OK && *jerr != 0 && *jerr != JSStreamNotFoundErr)
        s = js_UpdateConsumer(&ci, b->js_admin, stream, &cc, NULL, jerr);
    jsConsumerInfo_Destroy(ci);
    return s;
}

enum err broker_subscribe(struct broker *b, const char *stream, const char *durable,
                          const char *filter, struct broker_sub **out, char *msg, size_t msglen)
{
    int gen = atomic_load(&b->generation);
    enum err e = broker_ensure_streams(b, msg, msglen);
    if (e != ERR_OK)
        return e;
    jsErrCode jerr = 0;
    natsStatus s = ensure_consumer(b, stream, durable, filter, &jerr);
    natsSubscription *sub = NULL;
    if (s == NATS_OK) {
        jsSubOptions so;
        jsSubOptions_Init(&so);
        so.Stream = stream;
        so.Consumer = durable;
        s = js_PullSubscribe(&sub, b->js_admin, filter, durable, NULL, &so, &jerr);
    }
    if (s != NATS_OK) {
        set_msg(msg, msglen, durable, s, jerr);
        forget_streams(b); /* the stream may be gone: ensure it again */
        return broker_connected(b) ? ERR_BROKER : ERR_UNAVAILABLE;
    }
    struct broker_sub *bs = xcalloc(1, sizeof *bs);
    *bs = (struct broker_sub){sub, b, gen, xstrdup(stream), xstrdup(durable), xstrdup(filter)};
    *out = bs;
    return ERR_OK;
}

void broker_sub_free(struct broker_sub *sub)
{
    if (!sub)
        return;
    /* nats.c 3.4.1's reader thread may still be handing this subscription a
     * message (nats.c issue #637): unsubscribe, let the connection flush so
     * the reader is past it, then destroy. */
    natsSubscription_Unsubscribe(sub->sub);
    if (broker_connected(sub->b))
        natsConnection_FlushTimeout(sub->b->nc, 1000);
    natsSubscription_Destroy(sub->sub);
    free(sub->stream);
    free(sub->durable);
    free(sub->filter);
    free(sub);
}

int broker_sub_stale(struct broker_sub *sub)
{
    return atomic_load(&sub->b->generation) != sub->generation;
}

enum err broker_sub_refresh(struct broker_sub *sub, char *msg, size_t msglen)
{
    struct broker *b = sub->b;
    int gen = atomic_load(&b->generation);
    enum err e = broker_ensure_streams(b, msg, msglen);
    if (e != ERR_OK)
        return e;
    jsErrCode jerr = 0;
    natsStatus s = ensure_consumer(b, sub->stream, sub->durable, sub->filter, &jerr);
    if (s != NATS_OK) {
        set_msg(msg, msglen, sub->durable, s, jerr);
        forget_streams(b);
        return broker_connected(b) ? ERR_BROKER : ERR_UNAVAILABLE;
    }
    sub->generation = gen;
    return ERR_OK;
}

enum err broker_sub_check(struct broker_sub *sub)
{
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetConsumerInfo(&ci, sub->b->js_admin, sub->stream, sub->durable, NULL,
                                      &jerr);
    jsConsumerInfo_Destroy(ci);
    if (s == NATS_NOT_FOUND || jerr == JSConsumerNotFoundErr || jerr == JSStreamNotFoundErr) {
        forget_streams(sub->b);
        sub->generation = -1; /* stale: the next use ensures it again */
        return ERR_BROKER;
    }
    return s == NATS_OK ? ERR_OK : ERR_UNAVAILABLE;
}

enum err broker_sub_pending(struct broker_sub *sub, uint64_t *pending)
{
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetConsumerInfo(&ci, sub->b->js_admin, sub->stream, sub->durable, NULL,
                                      &jerr);
    if (s == NATS_OK)
        *pending = ci->NumPending + (uint64_t)ci->NumAckPending;
    jsConsumerInfo_Destroy(ci);
    return s == NATS_OK ? ERR_OK : ERR_UNAVAILABLE;
}

enum err broker_stream_msg_id(struct broker *b, const char *stream, uint64_t seq,
                              char *id, size_t idlen)
{
    natsMsg *m = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetMsg(&m, b->js_admin, stream, seq, NULL, &jerr);
    const char *v = NULL;
    if (s == NATS_OK && natsMsgHeader_Get(m, "Nats-Msg-Id", &v) != NATS_OK)
        v = NULL;
    if (s == NATS_OK)
        snprintf(id, idlen, "%s", v ? v : "");
    natsMsg_Destroy(m);
    if (s == NATS_NOT_FOUND || jerr == JSNoMessageFoundErr)
        return ERR_NOT_FOUND;
    return s == NATS_OK ? ERR_OK : ERR_UNAVAILABLE;
}

enum err broker_consumer_ack_floor(struct broker *b, const char *stream, const char *durable,
                                   uint64_t *seq)
{
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetConsumerInfo(&ci, b->js_admin, stream, durable, NULL, &jerr);
    if (s == NATS_OK)
        *seq = ci->AckFloor.Stream;
    jsConsumerInfo_Destroy(ci);
    return s == NATS_OK ? ERR_OK : ERR_UNAVAILABLE;
}

static void fill_in(struct broker_in *in, natsMsg *m)
{
    in->subject = natsMsg_GetSubject(m);
    in->data = natsMsg_GetData(m);
    in->len = natsMsg_GetDataLength(m);
    in->handle = m;
    if (natsMsgHeader_Get(m, "traceparent", &in->traceparent) != NATS_OK)
        in->traceparent = NULL;
    jsMsgMetaData *meta = NULL;
    in->delivered = natsMsg_GetMetaData(&meta, m) == NATS_OK ? meta->NumDelivered : 1;
    jsMsgMetaData_Destroy(meta);
}

enum err broker_fetch(struct broker_sub *sub, int max, int timeout_ms,
                      struct broker_in **msgs, int *n)
{
    natsMsgList list = {0};
    jsErrCode jerr = 0;
    *msgs = NULL;
    *n = 0;
    natsStatus s = natsSubscription_Fetch(&list, sub->sub, max, timeout_ms, &jerr);
    if (s == NATS_TIMEOUT && list.Count == 0)
        return ERR_TIMEOUT;
    if (s != NATS_OK && list.Count == 0) /* consumer deleted, no stream, ... : bind again */
        return (s == NATS_NOT_FOUND || s == NATS_ERR || s == NATS_NO_RESPONDERS || jerr)
                   ? ERR_BROKER : ERR_UNAVAILABLE;
    *msgs = xcalloc((size_t)list.Count, sizeof **msgs);
    for (int i = 0; i < list.Count; i++) {
        fill_in(&(*msgs)[i], list.Msgs[i]);
        list.Msgs[i] = NULL; /* ownership moves to *msgs */
    }
    *n = list.Count;
    natsMsgList_Destroy(&list);
    return ERR_OK;
}

void broker_fetch_free(struct broker_in *msgs, int n)
{
    for (int i = 0; i < n; i++)
        natsMsg_Destroy(msgs[i].handle);
    free(msgs);
}

void broker_ack(struct broker_in *m)
{
    natsMsg_Ack(m->handle, NULL);
}

void broker_term(struct broker_in *m)
{
    natsMsg_Term(m->handle, NULL);
}

void broker_nak(struct broker_in *m, int64_t delay_ms)
{
    natsMsg_NakWithDelay(m->handle, delay_ms, NULL);
}

void broker_in_headers(const struct broker_in *m, struct buf *out)
{
    const char **keys = NULL;
    int nkeys = 0;
    if (!m->handle || natsMsgHeader_Keys(m->handle, &keys, &nkeys) != NATS_OK)
        return;
    for (int i = 0; i < nkeys; i++) {
        const char **vals = NULL;
        int nvals = 0;
        if (natsMsgHeader_Values(m->handle, keys[i], &vals, &nvals) != NATS_OK)
            continue;
        for (int k = 0; k < nvals; k++)
            buf_printf(out, "%s: %s\r\n", keys[i], vals[k]);
        free((void *)vals);
    }
    free((void *)keys);
}
