/* metrics.c - the process-wide metrics registry and its text rendering.
 * Owns the families, series and one mutex; not what is measured. */
#include "metrics.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct series {
    char *labels;
    double value;     /* counter/gauge value, or histogram sum */
    uint64_t count;   /* histogram observations */
    uint64_t *bucket; /* histogram: per-bucket (non-cumulative) counts */
    struct series *next;
};

struct metric {
    char *name, *help;
    enum metric_type type;
    double *buckets;
    size_t nbuckets;
    struct series *series;
    struct metric *next;
};

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static struct metric *reg_head, *reg_tail;

const double metrics_latency_buckets[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                          0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
const size_t metrics_latency_nbuckets = ARRAY_LEN(metrics_latency_buckets);

static const char *const type_names[] = {"counter", "gauge", "histogram"};

struct metric *metrics_register(const char *name, const char *help, enum metric_type type,
                                const double *buckets, size_t nbuckets)
{
    pthread_mutex_lock(&reg_mu);
    struct metric *m = reg_head;
    while (m && strcmp(m->name, name) != 0)
        m = m->next;
    if (!m) {
        m = xcalloc(1, sizeof *m);
        m->name = xstrdup(name);
        m->help = xstrdup(help);
        m->type = type;
        if (nbuckets) {
            m->buckets = xmalloc(nbuckets * sizeof *buckets);
            memcpy(m->buckets, buckets, nbuckets * sizeof *buckets);
            m->nbuckets = nbuckets;
        }
        if (reg_tail)
            reg_tail->next = m;
        else
            reg_head = m;
        reg_tail = m;
    }
    pthread_mutex_unlock(&reg_mu);
    return m;
}

/* Caller holds reg_mu. */
static struct series *series_get(struct metric *m, const char *labels)
{
    struct series **link = &m->series;
    for (; *link; link = &(*link)->next)
        if (strcmp((*link)->labels, labels) == 0)
            return *link;
    struct series *s = xcalloc(1, sizeof *s);
    s->labels = xstrdup(labels);
    if (m->nbuckets)
        s->bucket = xcalloc(m->nbuckets, sizeof *s->bucket);
    *link = s;
    return s;
}

void metric_add(struct metric *m, const char *labels, double v)
{
    pthread_mutex_lock(&reg_mu);
    series_get(m, labels)->value += v;
    pthread_mutex_unlock(&reg_mu);
}

/* What this thread's open transaction would add (metric_add_on_commit). */
#define HELD_MAX 8
static _Thread_local struct held {
    struct series *s;
    double v;
} held[HELD_MAX];
static _Thread_local int nheld;

void metric_add_on_commit(struct metric *m, const char *labels, double v)
{
    pthread_mutex_lock(&reg_mu);
    struct series *s = series_get(m, labels); /* a series lives as long as the process */
    int i = 0;
    while (i < nheld && held[i].s != s)
        i++;
    if (i == HELD_MAX) {
        s->value += v;
    } else {
        if (i == nheld)
            held[nheld++] = (struct held){s, 0};
        held[i].v += v;
    }
    pthread_mutex_unlock(&reg_mu);
}

void metrics_tx_end(int committed)
{
    if (!nheld)
        return;
    pthread_mutex_lock(&reg_mu);
    for (int i = 0; committed && i < nheld; i++)
        held[i].s->value += held[i].v;
    pthread_mutex_unlock(&reg_mu);
    nheld = 0;
}

void metric_set(struct metric *m, const char *labels, double v)
{
    pthread_mutex_lock(&reg_mu);
    series_get(m, labels)->value = v;
    pthread_mutex_unlock(&reg_mu);
}

void metric_observe(struct metric *m, const char *labels, double v)
{
    pthread_mutex_lock(&reg_mu);
    struct series *s = series_get(m, labels);
    s->value += v;
    s->count++;
    for (size_t i = 0; i < m->nbuckets; i++) {
        if (v <= m->buckets[i]) {
            s->bucket[i]++;
            break;
        }
    }
    pthread_mutex_unlock(&reg_mu);
}

double metric_value(struct metric *m, const char *labels)
{
    pthread_mutex_lock(&reg_mu);
    struct series *s = series_get(m, labels);
    double v = m->type == METRIC_HISTOGRAM ? (double)s->count : s->value;
    pthread_mutex_unlock(&reg_mu);
    return v;
}

/* Shortest text that reads back as the same double (0.1, not 0.10000000000000001). */
static void fmt_double(char *out, size_t n, double v)
{
    snprintf(out, n, "%.15g", v);
    if (strtod(out, NULL) != v)
        snprintf(out, n, "%.17g", v);
}

/* name{labels[,extra]} value */
static void render_line(struct buf *out, const char *name, const char *suffix,
                        const char *labels, const char *extra, double v)
{
    int braces = labels[0] || extra;
    char num[32];
    fmt_double(num, sizeof num, v);
    buf_printf(out, "%s%s%s%s%s%s%s %s\n", name, suffix, braces ? "{" : "", labels,
               labels[0] && extra ? "," : "", extra ? extra : "", braces ? "}" : "", num);
}

static void render_histogram(struct buf *out, const struct metric *m, const struct series *s)
{
    uint64_t cum = 0;
    char le[64], num[32];
    for (size_t i = 0; i < m->nbuckets; i++) {
        cum += s->bucket[i];
        fmt_double(num, sizeof num, m->buckets[i]);
        snprintf(le, sizeof le, "le=\"%s\"", num);
        render_line(out, m->name, "_bucket", s->labels, le, (double)cum);
    }
    render_line(out, m->name, "_bucket", s->labels, "le=\"+Inf\"", (double)s->count);
    render_line(out, m->name, "_sum", s->labels, NULL, s->value);
    render_line(out, m->name, "_count", s->labels, NULL, (double)s->count);
}

void metrics_render(struct buf *out)
{
    pthread_mutex_lock(&reg_mu);
    for (const struct metric *m = reg_head; m; m = m->next) {
        buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", m->name, m->help, m->name,
                   type_names[m->type]);
        for (const struct series *s = m->series; s; s = s->next) {
            if (m->type == METRIC_HISTOGRAM)
                render_histogram(out, m, s);
            else
                render_line(out, m->name, "", s->labels, NULL, s->value);
        }
    }
    pthread_mutex_unlock(&reg_mu);
}
