/*  qms_log.c - structured log lines (see qms_log.h). */
#include "qms_log.h"

#include <assert.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static atomic_int s_level = QMS_LOG_INFO;
static qms_log_sink_fn *_Atomic s_sink;
static void *_Atomic s_sink_arg;

static const char *s_names [] = { "error", "warn", "info", "debug" };

void qms_log_set_level (int level) { atomic_store (&s_level, level); }
int  qms_log_get_level (void) { return atomic_load (&s_level); }

int
qms_log_level_parse (const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcmp (name, s_names [i]) == 0)
            return i;
    if (strcmp (name, "warning") == 0)
        return QMS_LOG_WARN;
    return -1;
}

const char *
qms_log_level_name (int level)
{
    return level >= 0 && level < 4 ? s_names [level] : "?";
}

void
qms_log_set_sink (qms_log_sink_fn *sink, void *arg)
{
    atomic_store (&s_sink_arg, arg);
    atomic_store (&s_sink, sink);
}

static size_t
format_va (char *buf, size_t size, int level, const char *actor, const char *fmt, va_list args)
{
    struct timeval tv;
    gettimeofday (&tv, NULL);
    struct tm tm;
    gmtime_r (&tv.tv_sec, &tm);
    char body [4096];
    vsnprintf (body, sizeof body, fmt, args);

    int n = snprintf (buf, size, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03dZ level=%s actor=%s ",
                      tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                      tm.tm_min, tm.tm_sec, (int) (tv.tv_usec / 1000),
                      qms_log_level_name (level), actor);
    size_t o = n < 0 ? 0 : (size_t) n;
    if (o >= size)
        o = size - 1;
    /*  Escape control characters so that one event is always one line. */
    for (const unsigned char *p = (const unsigned char *) body; *p && o + 5 < size; p++) {
        if (*p == '\n')      { buf [o++] = '\\'; buf [o++] = 'n'; }
        else if (*p == '\r') { buf [o++] = '\\'; buf [o++] = 'r'; }
        else if (*p < 0x20 || *p == 0x7f) o += (size_t) snprintf (buf + o, size - o, "\\x%02x", *p);
        else buf [o++] = (char) *p;
    }
    buf [o] = 0;
    return o;
}

size_t
qms_log_format (char *buf, size_t size, int level, const char *actor, const char *fmt, ...)
{
    va_list args;
    va_start (args, fmt);
    size_t n = format_va (buf, size, level, actor, fmt, args);
    va_end (args);
    return n;
}

void
qms_log (int level, const char *actor, const char *fmt, ...)
{
    if (level > atomic_load (&s_level))
        return;
    char line [4608];
    va_list args;
    va_start (args, fmt);
    size_t n = format_va (line, sizeof line - 1, level, actor, fmt, args);
    va_end (args);
    qms_log_sink_fn *sink = atomic_load (&s_sink);
    if (sink)
        sink (level, actor, line, atomic_load (&s_sink_arg));
    line [n++] = '\n';
    /*  One fwrite per line: stdio's lock keeps lines whole across threads. */
    fwrite (line, 1, n, stderr);
}

void
qms_log_test (bool verbose)
{
    if (verbose)
        printf (" * qms_log: ");
    char line [512];
    qms_log_format (line, sizeof line, QMS_LOG_WARN, "store", "event=open path=%s", "a\nb");
    assert (strncmp (line, "ts=", 3) == 0);
    assert (strstr (line, " level=warn actor=store event=open path=a\\nb"));
    assert (!strchr (line, '\n'));
    qms_log_format (line, sizeof line, QMS_LOG_INFO, "gw", "x=%s", "\x01");
    assert (strstr (line, "x=\\x01"));

    /*  A line longer than the buffer is cut, never overrun. */
    char tiny [40];
    qms_log_format (tiny, sizeof tiny, QMS_LOG_INFO, "gw", "event=%s", "0123456789012345678901234567890123456789");
    assert (strlen (tiny) < sizeof tiny);

    assert (qms_log_level_parse ("debug") == QMS_LOG_DEBUG);
    assert (qms_log_level_parse ("warning") == QMS_LOG_WARN);
    assert (qms_log_level_parse ("loud") == -1);
    int saved = qms_log_get_level ();
    qms_log_set_level (QMS_LOG_ERROR);
    assert (qms_log_get_level () == QMS_LOG_ERROR);
    qms_log_set_level (saved);
    if (verbose)
        printf ("OK\n");
}
