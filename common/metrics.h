/* metrics.h - Prometheus counters, gauges and histograms, rendered in text
 * exposition format 0.0.4.
 *
 * One process-wide registry. Families are registered once at start and
 * return a handle; series are keyed by a preformatted label string such as
 * `route="/orders",code="201"` ("" for none). All calls are thread-safe. */
#ifndef COMMON_METRICS_H
#define COMMON_METRICS_H

#include "util.h"

enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

struct metric;

/* Registers (or finds, if already registered) a family. For histograms,
 * buckets is an ascending list of upper bounds (copied); else NULL, 0. */
struct metric *metrics_register(const char *name, const char *help, enum metric_type type,
                                const double *buckets, size_t nbuckets);

void metric_add(struct metric *m, const char *labels, double v);  /* counter, gauge */
void metric_set(struct metric *m, const char *labels, double v);  /* gauge */
void metric_observe(struct metric *m, const char *labels, double v); /* histogram */

/* A counter's increment that stands only if the transaction open on this
 * thread commits: held until metrics_tx_end (up to 8 series at once; past
 * that, added at once). For inbox handlers (apply, on_duplicates): the
 * inbox and the admin re-apply end their transactions with
 * metrics_tx_end; anywhere else the increment would stay held. A COMMIT
 * whose answer is lost counts as not committed. */
void metric_add_on_commit(struct metric *m, const char *labels, double v);
/* The end of this thread's transaction: adds what it held, or forgets it. */
void metrics_tx_end(int committed);

/* Current value of a counter/gauge series, or a histogram's count (tests). */
double metric_value(struct metric *m, const char *labels);

/* Appends the whole registry in exposition format to out. */
void metrics_render(struct buf *out);

/* Default latency buckets in seconds (100 us .. 10 s). */
extern const double metrics_latency_buckets[];
extern const size_t metrics_latency_nbuckets;

#endif
