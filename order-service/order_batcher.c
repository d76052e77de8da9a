/* order_batcher.c - the queue between request threads and the committer
 * threads. Owns the queue, the committers and their connections; the SQL
 * is order_store.c. */
#include "order_batcher.h"
#include "util.h"

#include <pthread.h>
#include <stdlib.h>

#define BATCH_MAX 128 /* orders per statement: bounds one statement's size and time */

struct job {
    const struct order_new *order;
    struct order_result res;
    int done;
    struct job *next;
};

struct batcher {
    pthread_mutex_t mu;
    pthread_cond_t work;     /* a job was queued, or stop */
    pthread_cond_t done;     /* some jobs are done */
    struct job *head, *tail;
    int stopping;
    int nworkers;
    pthread_t *threads;
    struct db **dbs;
};

struct worker_arg {
    struct batcher *b;
    struct db *db;
};

/* Takes up to BATCH_MAX queued jobs; caller holds mu. */
static size_t take(struct batcher *b, struct job **jobs)
{
    size_t n = 0;
    while (b->head && n < BATCH_MAX) {
        jobs[n++] = b->head;
        b->head = b->head->next;
    }
    if (!b->head)
        b->tail = NULL;
    return n;
}

/* One statement for the batch; if the database refuses it (not for want of
 * time or connection), each order alone, so that only the bad one fails. */
static void commit_jobs(struct db *db, struct job **jobs, size_t n)
{
    const struct order_new **orders = xcalloc(n, sizeof *orders);
    struct order_result *res = xcalloc(n, sizeof *res);
    for (size_t i = 0; i < n; i++)
        orders[i] = jobs[i]->order;
    enum err e = order_store_create(db, orders, n, res);
    int refused = e != ERR_OK && e != ERR_UNAVAILABLE && e != ERR_RETRY;
    for (size_t i = 0; i < n; i++) {
        enum err ei = e;
        if (refused && n > 1)
            ei = order_store_create(db, &orders[i], 1, &res[i]);
        jobs[i]->res = ei == ERR_OK ? res[i] : (struct order_result){ei, NULL, 0};
    }
    free(res);
    free(orders);
}

static void *worker_main(void *arg)
{
    struct worker_arg *w = arg;
    struct batcher *b = w->b;
    struct job *jobs[BATCH_MAX];
    pthread_mutex_lock(&b->mu);
    for (;;) {
        while (!b->head && !b->stopping)
            pthread_cond_wait(&b->work, &b->mu);
        if (!b->head)
            break; /* stopping, and nothing left to write */
        size_t n = take(b, jobs);
        pthread_mutex_unlock(&b->mu);
        commit_jobs(w->db, jobs, n);
        pthread_mutex_lock(&b->mu);
        for (size_t i = 0; i < n; i++)
            jobs[i]->done = 1;
        pthread_cond_broadcast(&b->done);
    }
    pthread_mutex_unlock(&b->mu);
    free(w);
    return NULL;
}

void batcher_start(const char *url, int workers, struct batcher **out)
{
    struct batcher *b = xcalloc(1, sizeof *b);
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->work, NULL);
    pthread_cond_init(&b->done, NULL);
    b->nworkers = workers;
    b->threads = xcalloc((size_t)workers, sizeof *b->threads);
    b->dbs = xcalloc((size_t)workers, sizeof *b->dbs);
    for (int i = 0; i < workers; i++) {
        struct worker_arg *w = xcalloc(1, sizeof *w);
        db_new(url, order_store_stmts, order_store_nstmts, &b->dbs[i]);
        db_set_kind(b->dbs[i], DB_REQUEST); /* a request waits for it: bounded, then 503 */
        *w = (struct worker_arg){b, b->dbs[i]};
        if (pthread_create(&b->threads[i], NULL, worker_main, w) != 0)
            abort(); /* cannot take orders without committers: nothing to unwind */
    }
    *out = b;
}

void batcher_stop(struct batcher *b)
{
    if (!b)
        return;
    pthread_mutex_lock(&b->mu);
    b->stopping = 1;
    pthread_cond_broadcast(&b->work);
    pthread_mutex_unlock(&b->mu);
    for (int i = 0; i < b->nworkers; i++) {
        pthread_join(b->threads[i], NULL);
        db_free(b->dbs[i]);
    }
    pthread_cond_destroy(&b->work);
    pthread_cond_destroy(&b->done);
    pthread_mutex_destroy(&b->mu);
    free(b->threads);
    free(b->dbs);
    free(b);
}

void batcher_create(struct batcher *b, const struct order_new *o, struct order_result *res)
{
    struct job job = {.order = o};
    pthread_mutex_lock(&b->mu);
    if (b->tail)
        b->tail->next = &job;
    else
        b->head = &job;
    b->tail = &job;
    pthread_cond_signal(&b->work);
    while (!job.done)
        pthread_cond_wait(&b->done, &b->mu);
    pthread_mutex_unlock(&b->mu);
    *res = job.res;
}
