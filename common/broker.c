/* broker.c - nats.c behind the broker.h interface.
 * Owns the natsConnection (replaced as a whole when JetStream stops
 * answering on it), the JetStream contexts, the stream/consumer settings of
 * the contract, liveness, and the translation of natsStatus into enum err;
 * not what is published or what a message means. */
#include "broker.h"
#include "log.h"
#include "backoff.h"
#include "util.h"

#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_PER_MS 1000000LL
#define NS_PER_S (1000 * NS_PER_MS)
#define DUPLICATE_WINDOW_MS (2 * 60 * 1000)
#define ACK_WAIT_MS 10000 /* a delivery lost with a broker crash comes back after this */
#define API_WAIT_MS 2000  /* stream/consumer management: short, so a stop is never held up long */
#define PROBE_WAIT_MS 1000
#define ACK_SLICE_MS 100
#define MAX_SERVERS 16

struct stream_def {
    const char *name, *subjects;
};

static const struct stream_def streams[] = {
    {"ORDERS", "orders.>"},
    {"INVENTORY", "inventory.>"},
};

/* What is known of the written stream. */
enum stream_state { STREAM_UNKNOWN, STREAM_OK, STREAM_MISSING };

/* Results of the batch being published; written by nats.c's ack thread.
 * c and moves belong to the publishing thread alone (no lock): the
 * connection it was sent on (a reference), NULL when nothing is in flight. */
struct pub_batch {
    pthread_mutex_t mu;
    struct broker_out *msgs;
    natsMsg **sent;          /* sent[i] is msgs[i]'s natsMsg while in flight */
    size_t n;
    size_t hint;             /* where the next ack is looked for first */
    struct conn *c;
    int moves;
};

/* One connection and its contexts. Users hold a reference for the length
 * of a call; a replaced connection is closed at once (which wakes its
 * waiters) and freed by whoever lets go of it last. */
struct conn {
    natsConnection *nc;
    jsCtx *js;               /* publishing, with our ack handler */
    jsCtx *js_admin;         /* stream/consumer management and pull subscriptions */
    int refs;                /* under broker.mu */
};

struct broker {
    pthread_mutex_t mu;      /* cur and every conn's refs */
    struct conn *cur;
    struct broker_settings set;
    const struct stream_def *own;
    char *urls;              /* set.urls, cut into servers[] */
    const char *servers[MAX_SERVERS];
    int nservers;
    pthread_mutex_t ensure_mu;
    atomic_int stream_state;
    _Atomic int64_t own_created; /* creation time of the written stream as last set up here */
    atomic_int timeouts;     /* JetStream timeouts in a row on the current connection */
    atomic_int moves;        /* + 1 at every reconnect or replacement of the connection */
    _Atomic int64_t stop_by; /* broker_stopping(): no wait for acks past it (mono ms), 0 */
    struct pub_batch batch;
};

struct broker_sub {
    struct broker *b;
    struct conn *c;          /* the connection it is bound on (a reference) */
    natsSubscription *sub;
    atomic_int missing;      /* the server said the consumer or its stream is gone */
    char *stream, *durable, *filter;
};

static void set_msg(char *msg, size_t msglen, const char *what, natsStatus s, jsErrCode jerr)
{
    /* refusals that name the setting at fault: JS_REPLICAS=3 against one
     * server said only that NATS did not answer (a helper's probe) */
    const char *hint = jerr == JSStreamReplicasNotSupportedErr || jerr == JSClusterNoPeersErr
                           ? "; JS_REPLICAS asks for more replicas than the servers up now can hold"
                           : "";
    if (msg)
        snprintf(msg, msglen, "%s: %s (jetstream error %d%s)", what, natsStatus_GetText(s),
                 (int)jerr, hint);
}

/* With a connected callback, natsConnection_Connect returns at once when no
 * server answers yet and keeps trying in the background (without one it
 * would block until the first connection). */
static void on_connected(natsConnection *nc, void *closure)
{
    (void)nc, (void)closure;
}

/* Acks of what was sent before a reconnect never come (the server that
 * would send them is gone): publishing stops waiting for them. */
static void on_reconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    struct broker *b = closure;
    atomic_fetch_add(&b->moves, 1);
}

static struct conn *conn_get(struct broker *b)
{
    pthread_mutex_lock(&b->mu);
    struct conn *c = b->cur;
    c->refs++;
    pthread_mutex_unlock(&b->mu);
    return c;
}

static void conn_put(struct broker *b, struct conn *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&b->mu);
    int last = --c->refs == 0;
    pthread_mutex_unlock(&b->mu);
    if (!last)
        return;
    jsCtx_Destroy(c->js);
    jsCtx_Destroy(c->js_admin);
    natsConnection_Destroy(c->nc);
    free(c);
}

static int conn_up(const struct conn *c)
{
    return c->nc && natsConnection_Status(c->nc) == NATS_CONN_STATUS_CONNECTED;
}

/* The server may have lost the stream: look it up again before the next
 * publish (created only if it really is missing). */
static void forget_stream(struct broker *b)
{
    int ok = STREAM_OK;
    atomic_compare_exchange_strong(&b->stream_state, &ok, STREAM_MISSING);
}

/* A JetStream request on a connection that looked alive got no answer. */
static void note_timeout(struct broker *b, natsStatus s)
{
    if (s == NATS_TIMEOUT)
        atomic_fetch_add(&b->timeouts, 1);
}

static void note_answer(struct broker *b)
{
    atomic_store(&b->timeouts, 0);
}

/* Only refusals that no retry can change are permanent; everything else
 * (limits, a missing stream, a leader election) passes with time. */
static int is_permanent(natsStatus s, jsErrCode code)
{
    return s == NATS_MAX_PAYLOAD || code == JSStreamMessageExceedsMaximumErr;
}

/* Finds which message of the batch a natsMsg pointer is. Acks come back
 * mostly in the order sent, so the search starts after the last one found:
 * one comparison each, where a search from the start made a batch's acks
 * cost its size squared. */
static struct broker_out *batch_find(struct pub_batch *pb, natsMsg *m)
{
    for (size_t k = 0; k < pb->n; k++) {
        size_t i = (pb->hint + k) % pb->n;
        if (pb->sent[i] == m) {
            pb->hint = i + 1;
            return &pb->msgs[i];
        }
    }
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
        forget_stream(b);
    pthread_mutex_unlock(&pb->mu);
    natsMsg_Destroy(m);
}

/* The server list for a new connection. The first one lets nats.c pick at
 * random; a replacement tries the others first, in a random rotation, and
 * the server it leaves last (nats.c then keeps that order). */
static void server_order(const struct broker *b, const char *leaving, const char **list)
{
    int n = 0, start = (int)(backoff_rand01() * b->nservers) % b->nservers;
    for (int i = 0; i < b->nservers; i++) {
        const char *u = b->servers[(start + i) % b->nservers];
        if (!leaving || strcmp(u, leaving) != 0)
            list[n++] = u;
    }
    for (int i = 0; leaving && i < b->nservers; i++)
        if (strcmp(b->servers[i], leaving) == 0)
            list[n++] = b->servers[i];
}

/* nats.c's wait before it goes through the server list again, after a round
 * in which every server refused: capped exponential backoff with jitter
 * (the contract's "retries NATS with capped backoff": 125-250 ms, then
 * 250-500, then 500-1000 from the third on). Within a round each
 * server is tried at once, so a failover to another node waits for none. */
#define RECONNECT_BASE_MS 250
#define RECONNECT_CAP_MS 1000

static int64_t reconnect_delay(natsConnection *nc, int attempts, void *closure)
{
    (void)nc;
    (void)closure;
    return backoff_delay_ms(attempts, RECONNECT_BASE_MS, RECONNECT_CAP_MS, backoff_rand01());
}

static natsStatus make_opts(struct broker *b, const char *leaving, natsOptions **out)
{
    natsOptions *o = NULL;
    const char *list[MAX_SERVERS];
    server_order(b, leaving, list);
    natsStatus s = natsOptions_Create(&o);
    if (s == NATS_OK) s = natsOptions_SetServers(o, list, b->nservers);
    if (s == NATS_OK && leaving) s = natsOptions_SetNoRandomize(o, true);
    if (s == NATS_OK) s = natsOptions_SetMaxReconnect(o, -1);
    if (s == NATS_OK) s = natsOptions_SetCustomReconnectDelay(o, reconnect_delay, NULL);
    if (s == NATS_OK) s = natsOptions_SetRetryOnFailedConnect(o, true, on_connected, b);
    if (s == NATS_OK) s = natsOptions_SetReconnectedCB(o, on_reconnected, b);
    if (s == NATS_OK) s = natsOptions_SetTimeout(o, 2000);
    if (s == NATS_OK) s = natsOptions_SetPingInterval(o, b->set.ping_interval_ms);
    if (s == NATS_OK) s = natsOptions_SetMaxPingsOut(o, b->set.max_pings_out);
    if (s == NATS_OK) s = natsOptions_SetName(o, b->set.name ? b->set.name : "outbox-service");
    /* tls:// asks for TLS: required, the server verified with the CA file.
     * nats.c alone took the scheme and connected in the clear. */
    if (s == NATS_OK && strstr(b->set.urls, "tls://")) {
        s = natsOptions_SetSecure(o, true);
        if (s == NATS_OK && b->set.tls_ca)
            s = natsOptions_LoadCATrustedCertificates(o, b->set.tls_ca);
    }
    if (s != NATS_OK)
        natsOptions_Destroy(o);
    else
        *out = o;
    return s;
}

static natsStatus make_contexts(struct broker *b, struct conn *c)
{
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.PublishAsync.AckHandler = on_ack;
    jo.PublishAsync.AckHandlerClosure = b;
    jo.Wait = 5000;
    natsStatus s = natsConnection_JetStream(&c->js, c->nc, &jo);
    jsOptions_Init(&jo);
    jo.Wait = API_WAIT_MS;
    if (s == NATS_OK)
        s = natsConnection_JetStream(&c->js_admin, c->nc, &jo);
    return s;
}

/* A new connection (retried in the background if no server answers yet),
 * preferring servers other than `leaving` (may be NULL). */
static natsStatus conn_open(struct broker *b, const char *leaving, struct conn **out)
{
    struct conn *c = xcalloc(1, sizeof *c);
    natsOptions *opts = NULL;
    c->refs = 1;
    natsStatus s = make_opts(b, leaving, &opts);
    if (s == NATS_OK) {
        s = natsConnection_Connect(&c->nc, opts);
        if (s == NATS_NOT_YET_CONNECTED)
            s = NATS_OK;
    }
    if (s == NATS_OK)
        s = make_contexts(b, c);
    natsOptions_Destroy(opts);
    if (s != NATS_OK)
        conn_put(b, c);
    else
        *out = c;
    return s;
}

static const struct stream_def *find_stream(const char *name)
{
    for (size_t i = 0; name && i < ARRAY_LEN(streams); i++)
        if (strcmp(streams[i].name, name) == 0)
            return &streams[i];
    return NULL;
}

static void split_servers(struct broker *b)
{
    char *save = NULL;
    for (char *t = strtok_r(b->urls, ",", &save); t && b->nservers < MAX_SERVERS;
         t = strtok_r(NULL, ",", &save))
        b->servers[b->nservers++] = t;
}

enum err broker_new(const struct broker_settings *set, struct broker **out,
                    char *msg, size_t msglen)
{
    if (!find_stream(set->stream)) {
        snprintf(msg, msglen, "unknown stream %s", set->stream ? set->stream : "(none)");
        return ERR_INVALID;
    }
    struct broker *b = xcalloc(1, sizeof *b);
    b->set = *set;
    b->own = find_stream(set->stream);
    if (!b->set.ping_interval_ms)
        b->set.ping_interval_ms = 2000;
    if (!b->set.max_pings_out)
        b->set.max_pings_out = 3;
    b->urls = xstrdup(set->urls);
    split_servers(b);
    pthread_mutex_init(&b->mu, NULL);
    pthread_mutex_init(&b->ensure_mu, NULL);
    pthread_mutex_init(&b->batch.mu, NULL);
    natsStatus s = b->nservers ? conn_open(b, NULL, &b->cur) : NATS_INVALID_ARG;
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
    conn_put(b, b->cur);
    pthread_mutex_destroy(&b->batch.mu);
    pthread_mutex_destroy(&b->ensure_mu);
    pthread_mutex_destroy(&b->mu);
    free(b->urls);
    free(b);
}

int broker_connected(struct broker *b)
{
    struct conn *c = conn_get(b);
    int up = conn_up(c);
    conn_put(b, c);
    return up;
}

/* A stream's settings, from this service's own (both services are set
 * alike: the contract's "identical settings on both sides"). */
static void stream_config(const struct broker *b, const struct stream_def *def,
                          jsStreamConfig *cfg, const char **subjects)
{
    jsStreamConfig_Init(cfg);
    subjects[0] = def->subjects;
    cfg->Name = def->name;
    cfg->Subjects = subjects;
    cfg->SubjectsLen = 1;
    cfg->Storage = js_FileStorage;
    cfg->Replicas = (int64_t)b->set.replicas;
    cfg->Duplicates = (b->set.dup_window_ms ? b->set.dup_window_ms : DUPLICATE_WINDOW_MS) * NS_PER_MS;
    cfg->MaxAge = b->set.max_age_ms * NS_PER_MS;
}

/* Looks the stream up (cheap: the stream leader answers); *si (may be
 * NULL: not wanted) is the caller's to destroy. */
static natsStatus stream_lookup(jsCtx *js, const char *name, int wait_ms, jsStreamInfo **si,
                                jsErrCode *jerr)
{
    jsOptions o;
    jsOptions_Init(&o);
    o.Wait = wait_ms;
    jsStreamInfo *got = NULL;
    natsStatus s = js_GetStreamInfo(&got, js, name, &o, jerr);
    if (si)
        *si = got;
    else
        jsStreamInfo_Destroy(got);
    if (s == NATS_NOT_FOUND || *jerr == JSStreamNotFoundErr)
        s = NATS_NOT_FOUND;
    return s;
}

/* Whether a stream's settings differ from ours in what stream_config()
 * sets from the service's settings (and a reader's may differ in). */
static int settings_differ(const jsStreamConfig *got, const jsStreamConfig *want)
{
    return got->Replicas != want->Replicas || got->MaxAge != want->MaxAge ||
           got->Duplicates != want->Duplicates || got->Storage != want->Storage;
}

static const char *storage_name(jsStorageType t)
{
    return t == js_FileStorage ? "file" : "memory";
}

/* True when the written stream was made again since this service set it up
 * (another creation time), by a reader, with other settings. A stream this
 * service set up and someone changed since (another instance with other
 * settings, an operator) is left alone: no tug of war. */
static int made_by_a_reader(const struct broker *b, const jsStreamInfo *si)
{
    jsStreamConfig want;
    const char *subjects[1];
    stream_config(b, b->own, &want, subjects);
    const jsStreamConfig *got = si ? si->Config : NULL;
    return got && si->Created != atomic_load(&b->own_created) && settings_differ(got, &want);
}

/* Describes the stream's settings that differ from `want` into out
 * ("" when none does). */
static void describe_changes(const jsStreamConfig *got, const jsStreamConfig *want, char *out,
                             size_t outlen)
{
    out[0] = '\0';
    if (!settings_differ(got, want))
        return;
    snprintf(out, outlen,
             "storage %s -> %s, replicas %lld -> %lld (JS_REPLICAS), max age %.15gs -> %.15gs "
             "(STREAM_MAX_AGE), duplicate window %.15gs -> %.15gs (STREAM_DUPLICATE_WINDOW)",
             storage_name(got->Storage), storage_name(want->Storage), (long long)got->Replicas,
             (long long)want->Replicas, (double)got->MaxAge / NS_PER_S,
             (double)want->MaxAge / NS_PER_S, (double)got->Duplicates / NS_PER_S,
             (double)want->Duplicates / NS_PER_S); /* 1.5 s is not 1 s */
}

/* nats.c's text of its last error, without where in nats.c it was raised
 * ("(jsm.c:1033): "). */
static const char *last_error_text(void)
{
    const char *t = nats_GetLastError(NULL);
    const char *after = t && t[0] == '(' ? strstr(t, "): ") : NULL;
    return after ? after + 3 : t ? t : "";
}

/* Sets an existing stream to `want`, saying what that changed: another
 * instance (or an operator) set it otherwise, and the instances' settings
 * differ, so each start of one flips them (JS_REPLICAS=1 beside =3 left a
 * stream of one replica in silence: a helper's probe). A stream of another
 * storage, which JetStream does not change in place (10052), stays as it
 * is and is used so, said once in an error line: refusing it stopped all
 * publishing, with a line each second that claimed the settings were set
 * (a helper's probe). Then NATS_OK, with *jerr still 10052 and *si the
 * stream as it is. */
static natsStatus update_stream(jsCtx *js, jsStreamConfig *want, jsStreamInfo **si,
                                jsErrCode *jerr)
{
    jsStreamInfo *now = NULL;
    jsErrCode e = 0;
    char changes[320] = "";
    if (stream_lookup(js, want->Name, API_WAIT_MS, &now, &e) == NATS_OK && now && now->Config)
        describe_changes(now->Config, want, changes, sizeof changes);
    *jerr = 0;
    natsStatus s = js_UpdateStream(si, js, want, NULL, jerr);
    if (s == NATS_OK && changes[0]) {
        log_warn("stream %s was set to this service's settings: %s; an instance started with "
                 "other ones sets them back", want->Name, changes);
    } else if (s != NATS_OK && *jerr == JSStreamInvalidConfig && now && now->Config &&
               now->Config->Storage != want->Storage) {
        log_error("stream %s cannot be set to this service's settings (%s) in place (%s): it is "
                  "used as it is, its messages kept only as its storage keeps them. To give it "
                  "them, delete it once its consumers have caught up; this service then creates "
                  "it again", want->Name, changes, last_error_text());
        s = NATS_OK;
        *si = now; /* as it is: its creation time is the one set up */
        now = NULL;
    }
    jsStreamInfo_Destroy(now);
    return s;
}

/* Creates a stream from this service's settings; one that exists already
 * is updated to them when update is set, else left as it is. *created (may
 * be NULL): the stream's creation time, when known. */
static natsStatus add_stream(const struct broker *b, const struct stream_def *def, jsCtx *js,
                             int update, int64_t *created, jsErrCode *jerr)
{
    *jerr = 0;
    jsStreamConfig cfg;
    const char *subjects[1];
    stream_config(b, def, &cfg, subjects);
    jsStreamInfo *si = NULL;
    natsStatus s = js_AddStream(&si, js, &cfg, NULL, jerr);
    if (s != NATS_OK && *jerr == JSStreamNameExistErr && update)
        s = update_stream(js, &cfg, &si, jerr); /* converge the settings */
    else if (s != NATS_OK && *jerr == JSStreamNameExistErr)
        s = NATS_OK; /* created meanwhile (another instance, or its writer) */
    if (created && si)
        *created = si->Created;
    jsStreamInfo_Destroy(si);
    return s;
}

/* Creates the written stream, or updates an existing one to these
 * settings. The first time (start-up) directly; later (it was reported
 * missing, or looked made by a reader) after a look-up, so that only a
 * stream really missing, or made again by a reader from its own settings,
 * costs a meta-leader call. Such a stream is usable as it is: when it cannot
 * be updated (say, more replicas than the nodes up), it is used meanwhile. */
static natsStatus ensure_own(struct broker *b, jsCtx *js, int first, jsErrCode *jerr)
{
    int64_t created = 0;
    natsStatus s;
    if (first) {
        s = add_stream(b, b->own, js, 1, &created, jerr);
    } else {
        jsStreamInfo *si = NULL;
        s = stream_lookup(js, b->own->name, API_WAIT_MS, &si, jerr);
        int foreign = s == NATS_OK && made_by_a_reader(b, si);
        if (s == NATS_OK && si)
            created = si->Created;
        jsStreamInfo_Destroy(si);
        if (s == NATS_NOT_FOUND) {
            s = add_stream(b, b->own, js, 1, &created, jerr);
        } else if (foreign) {
            natsStatus u = add_stream(b, b->own, js, 1, NULL, jerr);
            if (u != NATS_OK)
                log_warn("stream %s was made again by a reader, from other settings, and "
                         "cannot be set to this service's (%s): used as it is",
                         b->own->name, natsStatus_GetText(u));
            else if (*jerr != JSStreamInvalidConfig) /* else update_stream said why not */
                log_info("stream %s was made again by a reader, from other settings: set to "
                         "this service's", b->own->name);
        }
    }
    if (s == NATS_OK)
        atomic_store(&b->own_created, created);
    return s;
}

static enum err ensure_on(struct broker *b, struct conn *c, char *msg, size_t msglen)
{
    if (atomic_load(&b->stream_state) == STREAM_OK)
        return ERR_OK;
    if (!conn_up(c)) {
        set_msg(msg, msglen, "nats", NATS_CONNECTION_DISCONNECTED, 0);
        return ERR_UNAVAILABLE;
    }
    pthread_mutex_lock(&b->ensure_mu);
    int state = atomic_load(&b->stream_state);
    jsErrCode jerr = 0;
    natsStatus s = state == STREAM_OK ? NATS_OK
                                      : ensure_own(b, c->js_admin, state == STREAM_UNKNOWN, &jerr);
    if (s == NATS_OK)
        atomic_store(&b->stream_state, STREAM_OK);
    pthread_mutex_unlock(&b->ensure_mu);
    note_timeout(b, s);
    if (s == NATS_OK)
        return ERR_OK;
    set_msg(msg, msglen, b->own->name, s, jerr);
    return conn_up(c) && jerr ? ERR_BROKER : ERR_UNAVAILABLE;
}

enum err broker_ensure_stream(struct broker *b, char *msg, size_t msglen)
{
    if (atomic_load(&b->stream_state) == STREAM_OK)
        return ERR_OK; /* steady state: no request at all */
    struct conn *c = conn_get(b);
    enum err e = ensure_on(b, c, msg, msglen);
    conn_put(b, c);
    return e;
}

/* Replaces the connection by a new one that tries the other servers first.
 * Whoever still waits on the old one is woken by its close. */
static void recycle(struct broker *b)
{
    char leaving[256] = "";
    struct conn *old = conn_get(b), *fresh = NULL;
    natsConnection_GetConnectedUrl(old->nc, leaving, sizeof leaving);
    if (conn_open(b, leaving[0] ? leaving : NULL, &fresh) == NATS_OK) {
        pthread_mutex_lock(&b->mu);
        b->cur = fresh;
        pthread_mutex_unlock(&b->mu);
        atomic_fetch_add(&b->moves, 1);
        natsConnection_Close(old->nc);
        conn_put(b, old); /* the broker's reference */
    }
    conn_put(b, old);
    note_answer(b);
}

#define PEER_SILENT_NS (5 * 1000000000LL) /* a replica not heard from for this long is gone */

/* A replicated stream that cannot store: described with no leader (the node
 * left after two of three went down, or an election), or by a leader that
 * hears from too few replicas for a quorum (it was the node left). Its info
 * still comes back at once; publishing cannot. A replica that lags (not
 * "current") still counts: under load one may, and the stream still stores. */
static int cannot_store(const jsStreamInfo *si)
{
    if (!si || !si->Cluster || !si->Config || si->Config->Replicas <= 1)
        return 0;
    const jsClusterInfo *ci = si->Cluster;
    if (!ci->Leader || !ci->Leader[0])
        return 1;
    int heard = 1; /* the leader */
    for (int i = 0; i < ci->ReplicasLen; i++) {
        const jsPeerInfo *p = ci->Replicas[i];
        heard += p && !p->Offline && p->Active < PEER_SILENT_NS;
    }
    return heard < si->Config->Replicas / 2 + 1;
}

static enum err probe_on(struct broker *b, struct conn *c, char *msg, size_t msglen)
{
    if (!conn_up(c)) {
        note_answer(b); /* nats.c is already looking for a server */
        set_msg(msg, msglen, "nats", NATS_CONNECTION_DISCONNECTED, 0);
        return ERR_UNAVAILABLE;
    }
    if (atomic_load(&b->stream_state) != STREAM_OK)
        return ensure_on(b, c, msg, msglen);
    jsErrCode jerr = 0;
    jsStreamInfo *si = NULL;
    natsStatus s = stream_lookup(c->js_admin, b->own->name, PROBE_WAIT_MS, &si, &jerr);
    int foreign = s == NATS_OK && made_by_a_reader(b, si);
    int storeless = s == NATS_OK && cannot_store(si);
    jsStreamInfo_Destroy(si);
    if (storeless) { /* a node answers, but nothing can be stored: not ready */
        note_answer(b);
        snprintf(msg, msglen, "stream %s has no leader with a quorum (a cluster without its "
                 "quorum)", b->own->name);
        return ERR_UNAVAILABLE;
    }
    if (s == NATS_NOT_FOUND || foreign) {
        note_answer(b);
        forget_stream(b);
        return ensure_on(b, c, msg, msglen);
    }
    note_timeout(b, s);
    if (s == NATS_OK)
        note_answer(b);
    else
        set_msg(msg, msglen, b->own->name, s, jerr);
    return s == NATS_OK ? ERR_OK : ERR_UNAVAILABLE;
}

/* nats.c (3.4.1) closes a connection for good, whatever MaxReconnect says,
 * when the server it first reached accepted the socket and then closed it
 * before its INFO (a TCP proxy whose backend is down, a server at its
 * connection limit): measured, one attempt and then the status CLOSED. It
 * does the same after refused credentials, twice: tried again too, so that
 * credentials put right on the server are taken up. */
static int given_up(const struct conn *c)
{
    return c->nc && natsConnection_Status(c->nc) == NATS_CONN_STATUS_CLOSED;
}

enum err broker_probe(struct broker *b, int *recycled, char *msg, size_t msglen)
{
    struct conn *c = conn_get(b);
    enum err e = probe_on(b, c, msg, msglen);
    int closed = given_up(c);
    conn_put(b, c);
    *recycled = atomic_load(&b->stop_by) ? BROKER_KEPT /* a new connection may wait 2 s */
                : closed                 ? BROKER_REOPENED
                : atomic_load(&b->timeouts) >= BROKER_RECYCLE_AFTER ? BROKER_LEFT_SILENT
                                                                    : BROKER_KEPT;
    if (*recycled)
        recycle(b);
    return e;
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
static void reclaim_pending(struct broker *b, jsCtx *js, const char *why)
{
    natsMsgList pending = {0};
    if (js_PublishAsyncGetPendingList(&pending, js) == NATS_OK) {
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

static void send_all(struct broker *b, jsCtx *js, struct broker_out *msgs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        natsMsg *m = NULL;
        natsStatus s = build_msg(&msgs[i], &m);
        pthread_mutex_lock(&b->batch.mu);
        b->batch.sent[i] = m;
        pthread_mutex_unlock(&b->batch.mu);
        if (s == NATS_OK)
            s = js_PublishMsgAsync(js, &m, NULL);
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

/* A batch of which nothing was acknowledged in time counts as one JetStream
 * timeout; any ack shows JetStream answers. */
static void note_batch(struct broker *b, natsStatus s, const struct broker_out *msgs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (msgs[i].acked || (msgs[i].err[0] && strncmp(msgs[i].err, "no ack", 6) != 0)) {
            note_answer(b);
            return;
        }
    note_timeout(b, s);
}

/* ms left until `end`, or until the stop's limit when that comes first
 * (broker_stopping: what has no ack by then stays pending, sent again; a
 * read not answered by then is not waited for). */
static int64_t wait_ms_left(const struct broker *b, int64_t end)
{
    int64_t stop_by = atomic_load(&b->stop_by);
    return (stop_by && stop_by < end ? stop_by : end) - mono_ms();
}

/* Waits for the acks in slices, and no longer once the connection moved
 * (reconnected or replaced) or dropped: those acks will not come. */
static natsStatus wait_acks(struct broker *b, struct conn *c, int moves, int timeout_ms)
{
    jsPubOptions po;
    jsPubOptions_Init(&po);
    int64_t end = mono_ms() + timeout_ms;
    natsStatus s = NATS_TIMEOUT;
    for (int64_t left = wait_ms_left(b, end); left > 0; left = wait_ms_left(b, end)) {
        po.MaxWait = left < ACK_SLICE_MS ? left : ACK_SLICE_MS;
        s = js_PublishAsyncComplete(c->js, &po);
        if (s != NATS_TIMEOUT)
            return s;
        if (atomic_load(&b->moves) != moves || !conn_up(c))
            return NATS_CONNECTION_DISCONNECTED;
    }
    return s;
}

void broker_stopping(struct broker *b, int grace_ms)
{
    if (b)
        atomic_store(&b->stop_by, mono_ms() + grace_ms);
}

enum err broker_send(struct broker *b, struct broker_out *msgs, size_t n)
{
    struct conn *c = conn_get(b);
    if (!conn_up(c)) {
        conn_put(b, c);
        for (size_t i = 0; i < n; i++)
            snprintf(msgs[i].err, sizeof msgs[i].err, "nats: not connected");
        return ERR_UNAVAILABLE;
    }
    pthread_mutex_lock(&b->batch.mu);
    b->batch.msgs = msgs;
    b->batch.n = n;
    b->batch.hint = 0;
    b->batch.sent = xcalloc(n, sizeof *b->batch.sent);
    pthread_mutex_unlock(&b->batch.mu);
    b->batch.c = c;
    b->batch.moves = atomic_load(&b->moves);
    send_all(b, c->js, msgs, n);
    return ERR_OK;
}

void broker_wait_acks(struct broker *b, int timeout_ms)
{
    struct conn *c = b->batch.c;
    if (!c)
        return; /* nothing in flight */
    natsStatus s = wait_acks(b, c, b->batch.moves, timeout_ms);
    if (s != NATS_OK)
        reclaim_pending(b, c->js, natsStatus_GetText(s));

    pthread_mutex_lock(&b->batch.mu);
    struct broker_out *msgs = b->batch.msgs;
    size_t n = b->batch.n;
    free(b->batch.sent);
    b->batch.sent = NULL;
    b->batch.msgs = NULL;
    b->batch.n = 0;
    pthread_mutex_unlock(&b->batch.mu);
    note_batch(b, s, msgs, n);
    b->batch.c = NULL;
    conn_put(b, c);
}

enum err broker_publish(struct broker *b, struct broker_out *msgs, size_t n, int timeout_ms)
{
    enum err e = broker_send(b, msgs, n);
    if (e == ERR_OK)
        broker_wait_acks(b, timeout_ms);
    return e;
}

/* Whether an existing consumer has settings JetStream refuses to update to
 * ours: its ack or deliver policy, or push instead of pull (one made by
 * hand, or by another program under our name). */
static int cannot_become(const jsConsumerConfig *have, const jsConsumerConfig *want)
{
    return have->AckPolicy != want->AckPolicy || have->DeliverPolicy != want->DeliverPolicy ||
           (have->DeliverSubject && have->DeliverSubject[0]);
}

/* The update was refused: when the consumer there cannot become ours, it is
 * deleted and made again. Its deliveries start again from the stream's first
 * message, and the processed ids make duplicates of those already applied
 * (inventory-service sends the replies it still holds again for them: a
 * burst, once); left, it would deliver nothing we can apply (or nothing at
 * all) while every check said ready (a helper's probe: orders PENDING for
 * good). Two instances starting together may each replace it: a second
 * replay, no loss. */
static natsStatus replace_consumer(jsCtx *js, const char *stream, jsConsumerConfig *cc,
                                   natsStatus refused, jsErrCode *jerr)
{
    jsConsumerInfo *ci = NULL;
    jsErrCode e = 0;
    natsStatus s = js_GetConsumerInfo(&ci, js, stream, cc->Durable, NULL, &e);
    int replace = s == NATS_OK && ci->Config && cannot_become(ci->Config, cc);
    jsConsumerInfo_Destroy(ci);
    if (!replace)
        return refused; /* *jerr: its code */
    s = js_DeleteConsumer(js, stream, cc->Durable, NULL, jerr);
    if (s == NATS_OK || *jerr == JSConsumerNotFoundErr) {
        jsConsumerInfo *made = NULL;
        s = js_AddConsumer(&made, js, stream, cc, NULL, jerr);
        jsConsumerInfo_Destroy(made);
    }
    if (s == NATS_OK)
        log_warn("consumer %s on %s had settings JetStream cannot change to ours (ack or deliver "
                 "policy, or push): deleted and made again; the stream is delivered again from "
                 "its start, and events applied already are duplicates", cc->Durable, stream);
    return s;
}

static natsStatus ensure_consumer(jsCtx *js, const char *stream, const char *durable,
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
    natsStatus s = js_AddConsumer(&ci, js, stream, &cc, NULL, jerr);
    if (s != NATS_OK && *jerr != 0 && *jerr != JSStreamNotFoundErr)
        s = js_UpdateConsumer(&ci, js, stream, &cc, NULL, jerr);
    if (s != NATS_OK && *jerr == JSConsumerCreateErr)
        s = replace_consumer(js, stream, &cc, s, jerr);
    jsConsumerInfo_Destroy(ci);
    return s;
}

/* A stream read whose messages outlive this service's processed ids: its
 * writer set its max age (STREAM_MAX_AGE there), and this service's check
 * of PROCESSED_RETENTION against its own STREAM_MAX_AGE could not see it.
 * A message delivered again after its id was pruned is still applied once
 * (the decisions hold), but the reconciliation then reports applied events
 * as unprocessed (a helper's probe). Said at each bind; nothing refused. */
static void note_retention(const struct broker *b, const char *stream, const jsStreamInfo *si)
{
    int64_t keep = b->set.processed_retention_ms;
    if (!keep || !si || !si->Config)
        return;
    int64_t age_ms = si->Config->MaxAge / NS_PER_MS;
    char age[32] = "ever";
    if (age_ms)
        snprintf(age, sizeof age, "%.15gs", (double)age_ms / 1000);
    if (age_ms == 0 || age_ms >= keep)
        log_warn("stream %s keeps messages for %s (its writer's STREAM_MAX_AGE), and "
                 "PROCESSED_RETENTION is %.15gs: a message delivered after its processed id was "
                 "pruned is still applied once, but reconciliations report it unprocessed; set "
                 "PROCESSED_RETENTION above the writer's STREAM_MAX_AGE", stream, age,
                 (double)keep / 1000);
}

/* The stream read, created if missing because its writer has not run yet
 * (an existing one is never changed: its writer's settings stand, and its
 * writer sets the one made here to them, see ensure_own()), and said when
 * its messages outlive our processed ids; then our own durable consumer on
 * it. */
static natsStatus ensure_reader(const struct broker *b, struct conn *c, const char *stream,
                                const char *durable, const char *filter, jsErrCode *jerr)
{
    jsStreamInfo *si = NULL;
    natsStatus s = stream_lookup(c->js_admin, stream, API_WAIT_MS, &si, jerr);
    if (s == NATS_OK)
        note_retention(b, stream, si);
    jsStreamInfo_Destroy(si);
    const struct stream_def *def = find_stream(stream);
    if (s == NATS_NOT_FOUND && def)
        s = add_stream(b, def, c->js_admin, 0, NULL, jerr);
    if (s == NATS_OK)
        s = ensure_consumer(c->js_admin, stream, durable, filter, jerr);
    return s;
}

static natsStatus bind_sub(struct conn *c, const char *stream, const char *durable,
                           const char *filter, natsSubscription **out, jsErrCode *jerr)
{
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = stream;
    so.Consumer = durable;
    return js_PullSubscribe(out, c->js_admin, filter, durable, NULL, &so, jerr);
}

static enum err reader_error(struct broker *b, struct conn *c, const char *stream,
                             const char *durable, natsStatus s, jsErrCode jerr,
                             char *msg, size_t msglen)
{
    note_timeout(b, s);
    if (s == NATS_NOT_FOUND && msg)
        snprintf(msg, msglen, "stream %s does not exist and could not be created", stream);
    else
        set_msg(msg, msglen, durable, s, jerr);
    return conn_up(c) && s != NATS_NOT_FOUND && s != NATS_TIMEOUT ? ERR_BROKER : ERR_UNAVAILABLE;
}

enum err broker_subscribe(struct broker *b, const char *stream, const char *durable,
                          const char *filter, struct broker_sub **out, char *msg, size_t msglen)
{
    struct conn *c = conn_get(b);
    jsErrCode jerr = 0;
    natsSubscription *sub = NULL;
    natsStatus s = conn_up(c) ? ensure_reader(b, c, stream, durable, filter, &jerr)
                              : NATS_CONNECTION_DISCONNECTED;
    if (s == NATS_OK)
        s = bind_sub(c, stream, durable, filter, &sub, &jerr);
    if (s != NATS_OK) {
        enum err e = reader_error(b, c, stream, durable, s, jerr, msg, msglen);
        conn_put(b, c);
        return e;
    }
    struct broker_sub *bs = xcalloc(1, sizeof *bs);
    bs->b = b;
    bs->c = c; /* keeps the reference */
    bs->sub = sub;
    bs->stream = xstrdup(stream);
    bs->durable = xstrdup(durable);
    bs->filter = xstrdup(filter);
    *out = bs;
    return ERR_OK;
}

/* nats.c 3.4.1's reader thread may still be handing this subscription a
 * message (nats.c issue #637): unsubscribe, let the connection flush so the
 * reader is past it, then destroy. */
static void sub_destroy(natsSubscription *sub, struct conn *c)
{
    natsSubscription_Unsubscribe(sub);
    if (conn_up(c))
        natsConnection_FlushTimeout(c->nc, 1000);
    natsSubscription_Destroy(sub);
}

void broker_sub_free(struct broker_sub *sub)
{
    if (!sub)
        return;
    sub_destroy(sub->sub, sub->c);
    conn_put(sub->b, sub->c);
    free(sub->stream);
    free(sub->durable);
    free(sub->filter);
    free(sub);
}

static int sub_moved(struct broker_sub *sub)
{
    pthread_mutex_lock(&sub->b->mu);
    int moved = sub->c != sub->b->cur;
    pthread_mutex_unlock(&sub->b->mu);
    return moved;
}

int broker_sub_stale(struct broker_sub *sub)
{
    return atomic_load(&sub->missing) || sub_moved(sub);
}

/* Binds the subscription anew on the current connection. */
static natsStatus rebind(struct broker_sub *sub, struct conn *c, jsErrCode *jerr)
{
    natsSubscription *fresh = NULL;
    natsStatus s = bind_sub(c, sub->stream, sub->durable, sub->filter, &fresh, jerr);
    if (s != NATS_OK)
        return s;
    sub_destroy(sub->sub, sub->c);
    conn_put(sub->b, sub->c);
    sub->sub = fresh;
    sub->c = c; /* takes the caller's reference */
    return NATS_OK;
}

enum err broker_sub_refresh(struct broker_sub *sub, char *msg, size_t msglen)
{
    struct broker *b = sub->b;
    struct conn *c = conn_get(b);
    jsErrCode jerr = 0;
    natsStatus s = conn_up(c) ? NATS_OK : NATS_CONNECTION_DISCONNECTED;
    if (s == NATS_OK && atomic_load(&sub->missing))
        s = ensure_reader(b, c, sub->stream, sub->durable, sub->filter, &jerr);
    if (s == NATS_OK)
        atomic_store(&sub->missing, 0);
    if (s == NATS_OK && c != sub->c && (s = rebind(sub, c, &jerr)) == NATS_OK)
        c = NULL; /* our reference moved to the subscription */
    enum err e = s == NATS_OK ? ERR_OK
                              : reader_error(b, c, sub->stream, sub->durable, s, jerr, msg, msglen);
    conn_put(b, c);
    return e;
}

enum err broker_sub_check(struct broker_sub *sub)
{
    struct conn *c = conn_get(sub->b);
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetConsumerInfo(&ci, c->js_admin, sub->stream, sub->durable, NULL, &jerr);
    jsConsumerInfo_Destroy(ci);
    conn_put(sub->b, c);
    note_timeout(sub->b, s);
    if (s == NATS_NOT_FOUND || jerr == JSConsumerNotFoundErr || jerr == JSStreamNotFoundErr) {
        atomic_store(&sub->missing, 1); /* the next use ensures it again */
        return ERR_BROKER;
    }
    return s == NATS_OK ? ERR_OK : ERR_UNAVAILABLE;
}

enum err broker_sub_pending(struct broker_sub *sub, uint64_t *pending)
{
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetConsumerInfo(&ci, sub->c->js_admin, sub->stream, sub->durable, NULL,
                                      &jerr);
    if (s == NATS_OK)
        *pending = ci->NumPending + (uint64_t)ci->NumAckPending;
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
}

/* The message stored at seq (msg get API), for the caller to destroy. Its
 * wait ends at the stop's limit too: a reconciliation reads a stream one
 * message at a time, and reads that JetStream answers late, each within its
 * own bound, held a stop up for as long as they lasted. */
static enum err stored_msg(struct broker *b, const char *stream, uint64_t seq, natsMsg **m)
{
    int64_t left = wait_ms_left(b, mono_ms() + API_WAIT_MS);
    if (left <= 0)
        return ERR_UNAVAILABLE;
    jsOptions o;
    jsOptions_Init(&o);
    o.Wait = left;
    jsErrCode jerr = 0;
    struct conn *c = conn_get(b);
    natsStatus s = js_GetMsg(m, c->js_admin, stream, seq, &o, &jerr);
    conn_put(b, c);
    if (s == NATS_NOT_FOUND || jerr == JSNoMessageFoundErr)
        return ERR_NOT_FOUND;
    return s == NATS_OK ? ERR_OK : ERR_UNAVAILABLE;
}

enum err broker_stream_msg_id(struct broker *b, const char *stream, uint64_t seq,
                              char *id, size_t idlen)
{
    natsMsg *m = NULL;
    enum err e = stored_msg(b, stream, seq, &m);
    const char *v = NULL;
    if (e == ERR_OK && natsMsgHeader_Get(m, "Nats-Msg-Id", &v) != NATS_OK)
        v = NULL;
    if (e == ERR_OK)
        snprintf(id, idlen, "%s", v ? v : "");
    natsMsg_Destroy(m);
    return e;
}

enum err broker_stream_msg_time(struct broker *b, const char *stream, uint64_t seq, int64_t *ns)
{
    natsMsg *m = NULL;
    enum err e = stored_msg(b, stream, seq, &m);
    if (e == ERR_OK)
        *ns = natsMsg_GetTime(m);
    natsMsg_Destroy(m);
    return e;
}

enum err broker_stream_first(struct broker *b, const char *stream, uint64_t *seq, int64_t *ns)
{
    jsErrCode jerr = 0;
    jsStreamInfo *si = NULL;
    struct conn *c = conn_get(b);
    natsStatus s = stream_lookup(c->js_admin, stream, API_WAIT_MS, &si, &jerr);
    conn_put(b, c);
    enum err e = s == NATS_NOT_FOUND ? ERR_NOT_FOUND : s == NATS_OK ? ERR_OK : ERR_UNAVAILABLE;
    if (e == ERR_OK && si->State.Msgs == 0)
        e = ERR_NOT_FOUND;
    if (e == ERR_OK) {
        *seq = si->State.FirstSeq;
        *ns = si->State.FirstTime;
    }
    jsStreamInfo_Destroy(si);
    return e;
}

enum err broker_stream_msg(struct broker *b, const char *stream, uint64_t seq,
                           struct broker_in *out, int64_t *stored_ns)
{
    natsMsg *m = NULL;
    enum err e = stored_msg(b, stream, seq, &m);
    *out = (struct broker_in){0};
    if (e == ERR_OK) {
        fill_in(out, m);
        if (stored_ns)
            *stored_ns = natsMsg_GetTime(m);
    }
    return e;
}

void broker_in_free(struct broker_in *m)
{
    natsMsg_Destroy(m->handle);
    *m = (struct broker_in){0};
}

enum err broker_consumer_state(struct broker *b, const char *stream, const char *durable,
                               struct broker_consumer *out)
{
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    struct conn *c = conn_get(b);
    natsStatus s = js_GetConsumerInfo(&ci, c->js_admin, stream, durable, NULL, &jerr);
    conn_put(b, c);
    if (s == NATS_OK) {
        out->ack_floor = ci->AckFloor.Stream;
        out->unacked = ci->NumPending + (uint64_t)ci->NumAckPending;
        out->fetching = ci->NumWaiting > 0;
    }
    jsConsumerInfo_Destroy(ci);
    return s == NATS_OK ? ERR_OK : ERR_UNAVAILABLE;
}

/* The batch to fetch. nats.c before 3.9 (Debian's 3.4.1; fixed upstream
 * by 8099b5c, "Fix heap buffer overflow in _fetch") writes past the end of
 * its array of max messages when a fetch starts with more than half of max
 * already queued on the subscription and more come: it takes those, asks
 * the server for max less them, and then counts to that smaller number.
 * Messages are queued before a fetch when they came for an earlier one after
 * it gave up (around a reconnect, a server busy restoring its streams): a
 * service died of it (double free, SIGABRT) after nats-server restarts under
 * load. With anything queued the fetch takes one message: it finds it
 * queued (one is the whole batch, so it asks the server for nothing), or
 * it asks for one. The queue drains one message per fetch, rarely. Not
 * closed: nats.c counts the queue again inside the fetch, and messages that
 * land between the two counts are taken with the full batch; past half of
 * it they would have to arrive within those microseconds, faster than the
 * fetch takes them. A nats.c with the fix (3.9 and later) closes it. */
static int fetch_batch(struct broker_sub *sub, int max)
{
    int queued = 0;
    natsSubscription_GetPending(sub->sub, &queued, NULL);
    if (queued > 0 && max > 1)
        log_debug("fetch: %d message(s) queued before it, taken one at a time", queued);
    return queued > 0 ? 1 : max;
}

/* The bytes a fetch takes at most. A batch of large bodies was taken whole:
 * 512 messages of 1 MB of junk were held in memory at once (RSS 540 MB) and
 * outlasted the ack wait while they were dead-lettered, so they came again
 * (a helper's probe). Never below twice the server's largest message: one
 * larger than the bound would never be delivered. */
#define FETCH_MAX_BYTES (8LL << 20)

static int64_t fetch_max_bytes(const struct broker_sub *sub)
{
    int64_t fit = 2 * natsConnection_GetMaxPayload(sub->c->nc) + (64 << 10);
    return fit > FETCH_MAX_BYTES ? fit : FETCH_MAX_BYTES;
}

static natsStatus fetch_request(struct broker_sub *sub, int batch, int timeout_ms, int no_wait,
                                natsMsgList *list)
{
    jsFetchRequest req;
    jsFetchRequest_Init(&req);
    req.Batch = batch;
    req.MaxBytes = fetch_max_bytes(sub);
    req.Expires = (int64_t)timeout_ms * NS_PER_MS;
    req.NoWait = no_wait;
    return natsSubscription_FetchRequest(list, sub->sub, &req);
}

/* natsSubscription_Fetch's two steps, with the byte bound it cannot take:
 * what is there now (no wait; a batch of one skips it, as there), else one
 * request that waits up to timeout_ms for the batch. */
static natsStatus fetch_bounded(struct broker_sub *sub, int batch, int timeout_ms,
                                natsMsgList *list)
{
    natsStatus s = batch > 1 ? fetch_request(sub, batch, timeout_ms, 1, list) : NATS_NOT_FOUND;
    if (s == NATS_NOT_FOUND && list->Count == 0) /* nothing there now: wait for it */
        s = fetch_request(sub, batch, timeout_ms, 0, list);
    return s;
}

/* An empty fetch and a server that does not answer look the same here (both
 * NATS_TIMEOUT): liveness is judged by broker_probe() and the publishes. */
enum err broker_fetch(struct broker_sub *sub, int max, int timeout_ms,
                      struct broker_in **msgs, int *n)
{
    natsMsgList list = {0};
    *msgs = NULL;
    *n = 0;
    natsStatus s = fetch_bounded(sub, fetch_batch(sub, max), timeout_ms, &list);
    if (s == NATS_TIMEOUT && list.Count == 0)
        return ERR_TIMEOUT;
    if (s == NATS_CONNECTION_CLOSED || s == NATS_INVALID_SUBSCRIPTION)
        return ERR_UNAVAILABLE; /* the connection was replaced: bound again next round */
    if (s != NATS_OK && list.Count == 0) /* consumer deleted, no stream, ... : bind again */
        return (s == NATS_NOT_FOUND || s == NATS_ERR || s == NATS_NO_RESPONDERS)
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

int broker_in_stored(const struct broker_in *m, uint64_t *seq, int64_t *stored_ns)
{
    jsMsgMetaData *meta = NULL;
    if (!m->handle || natsMsg_GetMetaData(&meta, m->handle) != NATS_OK)
        return 0;
    *seq = meta->Sequence.Stream;
    *stored_ns = meta->Timestamp;
    jsMsgMetaData_Destroy(meta);
    return 1;
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
