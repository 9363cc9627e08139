/*  qms_metrics.c - Prometheus text exposition (see qms_metrics.h). */
#include "qms_metrics.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

static const double s_bounds_ms [QMS_HIST_BUCKETS - 1] = {
    0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 1000
};

void
qms_hist_observe (qms_hist_t *hist, double ms)
{
    int i = 0;
    while (i < QMS_HIST_BUCKETS - 1 && ms > s_bounds_ms [i])
        i++;
    hist->buckets [i]++;
    hist->count++;
    hist->sum_ms += ms;
}

static void
appendf (qms_buf_t *out, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));

#include <stdarg.h>
static void
appendf (qms_buf_t *out, const char *fmt, ...)
{
    char line [512];
    va_list args;
    va_start (args, fmt);
    int n = vsnprintf (line, sizeof line, fmt, args);
    va_end (args);
    if (n > 0)
        qms_buf_append (out, line, (size_t) n < sizeof line ? (size_t) n : sizeof line - 1);
}

void
qms_metrics_head (qms_buf_t *out, const char *name, const char *type, const char *help)
{
    appendf (out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void
qms_metrics_value (qms_buf_t *out, const char *name, const char *labels, double value)
{
    if (labels && *labels)
        appendf (out, "%s{%s} %.17g\n", name, labels, value);
    else
        appendf (out, "%s %.17g\n", name, value);
}

void
qms_metrics_hist (qms_buf_t *out, const char *name, const char *labels, const qms_hist_t *hist)
{
    const char *sep = labels && *labels ? "," : "";
    uint64_t cumulative = 0;
    for (int i = 0; i < QMS_HIST_BUCKETS; i++) {
        cumulative += hist->buckets [i];
        if (i < QMS_HIST_BUCKETS - 1)
            appendf (out, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels ? labels : "", sep,
                     s_bounds_ms [i] / 1000.0, (unsigned long long) cumulative);
        else
            appendf (out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels ? labels : "", sep,
                     (unsigned long long) cumulative);
    }
    if (labels && *labels) {
        appendf (out, "%s_sum{%s} %.9g\n", name, labels, hist->sum_ms / 1000.0);
        appendf (out, "%s_count{%s} %llu\n", name, labels, (unsigned long long) hist->count);
    }
    else {
        appendf (out, "%s_sum %.9g\n", name, hist->sum_ms / 1000.0);
        appendf (out, "%s_count %llu\n", name, (unsigned long long) hist->count);
    }
}

void
qms_metrics_test (bool verbose)
{
    if (verbose)
        printf (" * qms_metrics: ");
    qms_hist_t hist = { 0 };
    qms_hist_observe (&hist, 0.05);     /* <= 0.1 ms */
    qms_hist_observe (&hist, 3);        /* <= 5 ms */
    qms_hist_observe (&hist, 5000);     /* +Inf */
    assert (hist.count == 3 && hist.buckets [0] == 1 && hist.buckets [5] == 1);
    assert (hist.buckets [QMS_HIST_BUCKETS - 1] == 1);

    qms_buf_t out;
    qms_buf_init (&out);
    qms_metrics_head (&out, "qms_x_total", "counter", "Things.");
    qms_metrics_value (&out, "qms_x_total", "actor=\"gateway\"", 42);
    qms_metrics_value (&out, "qms_y", "", 1.5);
    qms_metrics_hist (&out, "qms_lat_seconds", "op=\"login\"", &hist);
    qms_buf_append (&out, "", 1);
    const char *text = (const char *) out.data;
    assert (strstr (text, "# HELP qms_x_total Things.\n# TYPE qms_x_total counter\n"));
    assert (strstr (text, "qms_x_total{actor=\"gateway\"} 42\n"));
    assert (strstr (text, "qms_y 1.5\n"));
    assert (strstr (text, "qms_lat_seconds_bucket{op=\"login\",le=\"0.0001\"} 1\n"));
    assert (strstr (text, "qms_lat_seconds_bucket{op=\"login\",le=\"0.005\"} 2\n"));
    assert (strstr (text, "qms_lat_seconds_bucket{op=\"login\",le=\"+Inf\"} 3\n"));
    assert (strstr (text, "qms_lat_seconds_count{op=\"login\"} 3\n"));
    qms_buf_free (&out);
    if (verbose)
        printf ("OK\n");
}
