/*  qms_metrics.h - counters and histograms, written as Prometheus text.

    Each actor keeps its own counters (nothing is shared between actors) and
    answers QMS_STATS_GET with its lines; a gateway serves them all at
    /metrics, each line labelled with the actor it came from.
*/
#ifndef QMS_METRICS_H_INCLUDED
#define QMS_METRICS_H_INCLUDED

#include "qms_msg.h"

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*  Latency buckets in milliseconds (the last is +Inf). */
#define QMS_HIST_BUCKETS 13

typedef struct {
    uint64_t buckets [QMS_HIST_BUCKETS];    /* not cumulative: one per range */
    uint64_t count;
    double sum_ms;
} qms_hist_t;

void qms_hist_observe (qms_hist_t *hist, double ms);

/*  # HELP and # TYPE lines for a metric (type: counter, gauge, histogram). */
void qms_metrics_head (qms_buf_t *out, const char *name, const char *type, const char *help);
/*  One sample; labels is "" or like "actor=\"router\",code=\"1001\"". */
void qms_metrics_value (qms_buf_t *out, const char *name, const char *labels, double value);
/*  The _bucket, _sum and _count lines of a histogram (in seconds, as
    Prometheus expects). */
void qms_metrics_hist (qms_buf_t *out, const char *name, const char *labels, const qms_hist_t *hist);

void qms_metrics_test (bool verbose);

#ifdef __cplusplus
}
#endif

#endif
