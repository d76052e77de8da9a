/* order_batcher.c - the queue between request threads and the committer
 * threads. Owns the queue, the committers and their connections; the SQL
 * is order_store.c. */
#include "order_batcher.h"
#include "util.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BATCH_MAX 128 /* orders per statement: bounds one statement's size and time */
/* Committers write one batch at a time: the orders that queue meanwhile go
 * out together in the next, and while one committer answers its batch the
 * other writes. Two batches written side by side were each half the size
 * and cost the whole flow more Postgres CPU per order, and every commit
 * took longer. A second write starts beside the first only if the queue
 * holds a full batch, or the first has been writing this long (a slow
 * disk, a lock wait, a batch retried order by order): a stuck write never
 * holds the others back for longer. */
#define SOLO_MS 20
#define CONFLICT_RETRIES 3    /* deadlock or serialization failure: the batch again */
#define JITTER_MIN_MS 5
#define JITTER_SPAN_MS 45

struct job {
    const struct order_new *order;
    struct order_result res;
    batcher_done_fn done;
    void *arg;
    int64_t deadline_ms;     /* not taken by then: answered unavailable */
    struct job *next;
};

struct batcher {
    pthread_mutex_t mu;
    pthread_cond_t work;     /* a job was queued, or stop */
    pthread_cond_t expiry;   /* stop (the janitor's timed waits; monotonic clock) */
    struct job *head, *tail; /* oldest first: deadlines in order */
    size_t queued;           /* jobs from head to tail */
    int writing;             /* committers between take and commit */
    int64_t writing_since_ms; /* when the oldest of them took its batch (roughly) */
    int stopping;
    int64_t wait_ms;         /* a job not taken by then is answered unavailable */
    int nworkers;
    pthread_t *threads;
    pthread_t janitor;
    struct db **dbs;
};

struct worker_arg {
    struct batcher *b;
    struct db *db;
};

/* Unlinks the oldest queued job; caller holds mu and has checked head. */
static struct job *pop(struct batcher *b)
{
    struct job *j = b->head;
    b->head = j->next;
    if (!b->head)
        b->tail = NULL;
    b->queued--;
    return j;
}

/* Takes up to BATCH_MAX queued jobs; caller holds mu. */
static size_t take(struct batcher *b, struct job **jobs)
{
    size_t n = 0;
    while (b->head && n < BATCH_MAX)
        jobs[n++] = pop(b);
    return n;
}

/* 0 when a committer may take a batch now, else how long to wait before
 * asking again (-1: until woken). Caller holds mu. */
static int64_t turn_wait(const struct batcher *b)
{
    if (!b->head)
        return b->stopping ? 0 : -1;
    if (!b->writing || b->stopping || b->queued >= BATCH_MAX)
        return 0;
    int64_t left = b->writing_since_ms + SOLO_MS - mono_ms();
    return left > 0 ? left : 0;
}

/* Keys in one order (keyless first): two batches then take the unique
 * index's locks in the same order and cannot deadlock on each other. */
static int by_key(const void *a, const void *b)
{
    const char *ka = (*(struct job *const *)a)->order->idempotency_key;
    const char *kb = (*(struct job *const *)b)->order->idempotency_key;
    if (!ka || !kb)
        return (ka != NULL) - (kb != NULL);
    return strcmp(ka, kb);
}

static void clear_results(struct order_result *res, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        json_decref(res[i].doc);
        res[i] = (struct order_result){.e = ERR_OK};
    }
}

/* A commit in doubt. The orders the batch created may yet be written: they
 * keep their ids, for their Location. So may an order that another request
 * of the batch was answered with (the same Idempotency-Key, found in the
 * batch's own rows: it was answered 200 for an order that might never be
 * written, the review found). Any other answer (a replay of an earlier
 * order, a key reused) waits for a known outcome: 503, sent again. */
static void mark_in_doubt(struct order_result *res, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int ours = res[i].event_id[0] != '\0';
        const char *id = order_result_id(&res[i]);
        for (size_t k = 0; !ours && id && k < n; k++)
            ours = res[k].event_id[0] && strcmp(id, order_result_id(&res[k])) == 0;
        if (ours) {
            res[i].e = ERR_IN_DOUBT;
        } else {
            json_decref(res[i].doc);
            res[i] = (struct order_result){.e = ERR_UNAVAILABLE};
        }
    }
}

/* One transaction. ERR_RETRY with *again set: nothing was written and
 * writing again may succeed (a deadlock, a serialization failure, or a
 * commit whose connection was lost and that turned out aborted). */
static enum err write_once(struct db *db, const struct order_new **orders, size_t n,
                           struct order_result *res, int *again)
{
    *again = 0;
    enum err e = db_begin(db);
    if (e == ERR_OK)
        e = order_store_create(db, orders, n, res);
    if (e == ERR_OK) {
        struct db_check check;
        e = db_commit(db, order_store_created_check(res, n, &check) ? &check : NULL);
        *again = e == ERR_RETRY; /* in doubt, then found aborted */
    } else {
        *again = e == ERR_RETRY && strncmp(db_sqlstate(db), "40", 2) == 0;
        db_rollback(db);
    }
    if (e == ERR_IN_DOUBT)
        mark_in_doubt(res, n);
    else if (e != ERR_OK)
        clear_results(res, n);
    return e;
}

static void jitter_sleep(int attempt)
{
    static _Thread_local unsigned seed;
    if (!seed)
        seed = (unsigned)mono_ms() ^ (unsigned)(uintptr_t)&seed;
    sleep_ms((JITTER_MIN_MS + rand_r(&seed) % JITTER_SPAN_MS) * attempt);
}

/* The write, retried a bounded number of times when that can help. */
static enum err write_orders(struct db *db, const struct order_new **orders, size_t n,
                             struct order_result *res)
{
    int again = 0;
    enum err e = write_once(db, orders, n, res, &again);
    for (int attempt = 1; again && attempt <= CONFLICT_RETRIES; attempt++) {
        jitter_sleep(attempt);
        e = write_once(db, orders, n, res, &again);
    }
    return e;
}

/* One transaction for the batch; if the database refuses it (not for want
 * of time or connection), each order alone, so that only the bad one fails. */
static void commit_jobs(struct db *db, struct job **jobs, size_t n)
{
    qsort(jobs, n, sizeof *jobs, by_key);
    const struct order_new **orders = xcalloc(n, sizeof *orders);
    struct order_result *res = xcalloc(n, sizeof *res);
    for (size_t i = 0; i < n; i++)
        orders[i] = jobs[i]->order;
    enum err e = write_orders(db, orders, n, res);
    int refused = e != ERR_OK && e != ERR_UNAVAILABLE && e != ERR_RETRY && e != ERR_IN_DOUBT;
    for (size_t i = 0; i < n; i++) {
        enum err ei = e;
        if (refused && n > 1)
            ei = write_orders(db, &orders[i], 1, &res[i]);
        jobs[i]->res = ei == ERR_OK || ei == ERR_IN_DOUBT ? res[i] : (struct order_result){.e = ei};
    }
    free(res);
    free(orders);
}

/* Hands each job its outcome (outside mu: the callback may take its time). */
static void finish(struct job **jobs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        jobs[i]->done(jobs[i]->arg, &jobs[i]->res);
        free(jobs[i]);
    }
}

static void *worker_main(void *arg)
{
    struct worker_arg *w = arg;
    struct batcher *b = w->b;
    struct job *jobs[BATCH_MAX];
    pthread_mutex_lock(&b->mu);
    for (;;) {
        int64_t wait;
        while ((wait = turn_wait(b)) != 0) {
            if (wait < 0) {
                pthread_cond_wait(&b->work, &b->mu);
            } else {
                struct timespec until = mono_deadline(wait);
                pthread_cond_timedwait(&b->work, &b->mu, &until);
            }
        }
        if (!b->head)
            break; /* stopping, and nothing left to write */
        size_t n = take(b, jobs);
        if (!b->writing++)
            b->writing_since_ms = mono_ms();
        pthread_mutex_unlock(&b->mu);
        commit_jobs(w->db, jobs, n);
        pthread_mutex_lock(&b->mu);
        if (--b->writing)
            b->writing_since_ms = mono_ms(); /* the other's write: timed from now */
        pthread_cond_signal(&b->work); /* a committer waiting for its turn writes while this one answers */
        pthread_mutex_unlock(&b->mu);
        finish(jobs, n);
        pthread_mutex_lock(&b->mu);
    }
    pthread_mutex_unlock(&b->mu);
    free(w);
    return NULL;
}

/* Answers unavailable what no committer took in time (all of them stuck on
 * the database): the head of the queue is always the next to expire. It
 * needs no wake-up: with the queue empty it looks again after wait_ms, by
 * when no job queued meanwhile can have expired. */
static void *janitor_main(void *arg)
{
    struct batcher *b = arg;
    struct job *late[BATCH_MAX];
    pthread_mutex_lock(&b->mu);
    while (!b->stopping) {
        int64_t now = mono_ms();
        if (!b->head || b->head->deadline_ms > now) {
            struct timespec until = mono_deadline(b->head ? b->head->deadline_ms - now : b->wait_ms);
            pthread_cond_timedwait(&b->expiry, &b->mu, &until);
            continue;
        }
        size_t n = 0;
        while (b->head && b->head->deadline_ms <= now && n < BATCH_MAX)
            late[n++] = pop(b);
        pthread_mutex_unlock(&b->mu);
        finish(late, n); /* each job's res is still ERR_UNAVAILABLE */
        pthread_mutex_lock(&b->mu);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

void batcher_start(const char *url, int workers, int64_t wait_ms, struct batcher **out)
{
    struct batcher *b = xcalloc(1, sizeof *b);
    b->wait_ms = wait_ms;
    pthread_mutex_init(&b->mu, NULL);
    cond_init_monotonic(&b->work);
    cond_init_monotonic(&b->expiry);
    b->nworkers = workers;
    b->threads = xcalloc((size_t)workers, sizeof *b->threads);
    b->dbs = xcalloc((size_t)workers, sizeof *b->dbs);
    for (int i = 0; i < workers; i++) {
        struct worker_arg *w = xcalloc(1, sizeof *w);
        db_new(url, "intake", order_store_stmts, order_store_nstmts, &b->dbs[i]);
        db_set_kind(b->dbs[i], DB_REQUEST); /* a request waits for it: bounded, then 503 */
        *w = (struct worker_arg){b, b->dbs[i]};
        thread_start(&b->threads[i], "intake-commit", worker_main, w);
    }
    thread_start(&b->janitor, "intake-janitor", janitor_main, b);
    *out = b;
}

void batcher_stop(struct batcher *b)
{
    if (!b)
        return;
    pthread_mutex_lock(&b->mu);
    b->stopping = 1;
    pthread_cond_broadcast(&b->work);
    pthread_cond_broadcast(&b->expiry);
    pthread_mutex_unlock(&b->mu);
    pthread_join(b->janitor, NULL);
    for (int i = 0; i < b->nworkers; i++) {
        pthread_join(b->threads[i], NULL); /* each answered what it took, then the rest */
        db_free(b->dbs[i]);
    }
    pthread_cond_destroy(&b->work);
    pthread_cond_destroy(&b->expiry);
    pthread_mutex_destroy(&b->mu);
    free(b->threads);
    free(b->dbs);
    free(b);
}

void batcher_submit(struct batcher *b, const struct order_new *o, batcher_done_fn done,
                    void *arg)
{
    struct job *job = xcalloc(1, sizeof *job);
    *job = (struct job){.order = o, .res = {ERR_UNAVAILABLE, NULL, 0, ""}, .done = done,
                        .arg = arg};
    pthread_mutex_lock(&b->mu);
    job->deadline_ms = mono_ms() + b->wait_ms; /* under mu: the queue stays in deadline order */
    if (b->tail)
        b->tail->next = job;
    else
        b->head = job;
    b->tail = job;
    b->queued++;
    pthread_cond_signal(&b->work);
    pthread_mutex_unlock(&b->mu);
}
