/*  qms_log.h - one structured line per event.

    Lines are logfmt, so both people and tools read them:

        ts=2026-11-26T14:20:00.123Z level=info actor=store event=open path=users.db

    The caller writes the part after actor= with printf-style formatting.
    Control characters in the final line are escaped, so a user name with a
    newline in it cannot forge a log line.  Lines go to stderr; a sink can
    be added with qms_log_set_sink, and qms_log_publish_start also sends
    every line to a monitor over ZeroMQ (see docs/CLUSTER.md).

    With qms_log_set_format (QMS_LOG_FORMAT_JSON) (--log-format json) the
    lines on stderr are JSON instead, one object per line, built from the
    same pieces:

        {"ts":"2026-11-26T14:20:00.123Z","level":"info","actor":"store","event":"open","path":"users.db"}

    Every key=value pair of the caller's text becomes a string field (a
    quoted value loses its quotes); words that are not key=value are
    joined into "msg"; a key met twice, or one of ts, level, actor, gets
    a suffix (_2, _3, ...) so it can never hide the real one; a line cut
    for length ends with "truncated":true.  Control characters, C1
    controls and invalid UTF-8 are escaped (\uXXXX, U+FFFD), so every line
    parses as JSON.  The sink and the monitor always get the logfmt line:
    the monitor parses it.
*/
#ifndef QMS_LOG_H_INCLUDED
#define QMS_LOG_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    QMS_LOG_ERROR = 0,
    QMS_LOG_WARN,
    QMS_LOG_INFO,
    QMS_LOG_DEBUG
} qms_log_level_t;

/*  Lines above this level are not written.  Thread-safe. */
void qms_log_set_level (int level);
int  qms_log_get_level (void);

/*  "error", "warn", "info", "debug" to a level; -1 if unknown. */
int qms_log_level_parse (const char *name);
const char *qms_log_level_name (int level);

/*  A sink also receives every line written (without the newline).  It is
    called from whichever thread logs, so it must be thread-safe. */
typedef void (qms_log_sink_fn) (int level, const char *actor, const char *line, void *arg);
void qms_log_set_sink (qms_log_sink_fn *sink, void *arg);

/*  Also publish every line on one ZeroMQ (X)PUB socket per process that
    *connects* to endpoint, where a monitor binds a SUB socket: so many
    processes can publish to one monitor, and a monitor started later gets
    lines from the moment it is up.  Each line is one message of three
    frames: the topic "<actor>.<level>" (a subscriber filters on it), the
    line, and source (who sent it, e.g. "store@host/1234").  Start waits up
    to 300 ms for a monitor's subscription, so that one already running
    gets the first lines too.  Lines are dropped, never queued without
    bound, while no monitor listens.  Thread-safe: the socket is used
    under a mutex, and logging is rare next to the hot path.  Returns 0,
    or -1 when the endpoint is not valid. */
int  qms_log_publish_start (const char *endpoint, const char *source);
/*  Close the socket (lines still queued get a moment to leave). */
void qms_log_publish_stop (void);

/*  What stderr gets: logfmt text (the default) or one JSON object per
    line.  Thread-safe. */
typedef enum {
    QMS_LOG_FORMAT_TEXT = 0,
    QMS_LOG_FORMAT_JSON
} qms_log_format_t;
void qms_log_set_format (int format);
int  qms_log_get_format (void);
/*  "text", "json" to a format; -1 if unknown. */
int qms_log_format_parse (const char *name);
const char *qms_log_format_name (int format);

/*  Whether lines are also written to stderr (default true; tests turn it
    off to keep their output readable). */
void qms_log_set_stderr (bool on);

void qms_log (int level, const char *actor, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));

#define qms_error(actor, ...) qms_log (QMS_LOG_ERROR, actor, __VA_ARGS__)
#define qms_warn(actor, ...)  qms_log (QMS_LOG_WARN, actor, __VA_ARGS__)
#define qms_info(actor, ...)  qms_log (QMS_LOG_INFO, actor, __VA_ARGS__)
#define qms_debug(actor, ...) \
    do { if (qms_log_get_level () >= QMS_LOG_DEBUG) qms_log (QMS_LOG_DEBUG, actor, __VA_ARGS__); } while (0)

/*  Format the line into buf without writing it (for tests); returns its
    length. */
size_t qms_log_format (char *buf, size_t size, int level, const char *actor,
                       const char *fmt, ...) __attribute__ ((format (printf, 5, 6)));
/*  The same as one JSON object (without the newline); always valid JSON
    when size is at least 64. */
size_t qms_log_format_json (char *buf, size_t size, int level, const char *actor,
                            const char *fmt, ...) __attribute__ ((format (printf, 5, 6)));

void qms_log_test (bool verbose);

#ifdef __cplusplus
}
#endif

#endif
