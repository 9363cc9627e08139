/*  monitor.h - the monitor role: one live, merged tail of a cluster's logs.

    Every process started with --log-endpoint publishes its log lines on a
    PUB socket that connects to this endpoint (see qms_log.h); the monitor
    binds a SUB socket there, so any number of processes feed one monitor,
    in any start order.  It prints each line with its time, level, actor and
    sender, in colour on a terminal, and also the ZeroMQ events of its own
    socket (zmonitor: listening, accepted, handshake failures, disconnects)
    as lines of the actor "monitor".  Filters: one actor, and a level (that
    level and more severe).
*/
#ifndef MONITOR_H_INCLUDED
#define MONITOR_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    const char *endpoint;       /* to bind (already in bind form) */
    const char *filter_actor;   /* NULL or "" = every actor */
    int filter_level;           /* QMS_LOG_*: show this and more severe */
    bool colour;                /* ANSI colours (a terminal) */
} monitor_options_t;

typedef struct _monitor_t monitor_t;

/*  Bind and start watching the socket.  NULL with a reason in err when the
    endpoint cannot be bound. */
monitor_t *monitor_new (const monitor_options_t *options, FILE *out, char *err, size_t err_size);
void monitor_destroy (monitor_t **self_p);

/*  The endpoint actually bound (a tcp port given as '*' resolved). */
const char *monitor_endpoint (monitor_t *self);

/*  Print what arrives for up to timeout_ms (returning early once something
    was printed); returns 1 if stop_fd (>= 0) became readable, else 0. */
int monitor_poll (monitor_t *self, int timeout_ms, int stop_fd);

/*  Print until stop_fd (a signalfd) becomes readable. */
void monitor_run (monitor_t *self, int stop_fd);

/*  Format one published message (topic "<actor>.<level>", the line, the
    sender, which may be NULL) for display, without the newline.  Control
    characters a peer may have sent are escaped, so a line cannot drive the
    terminal.  Returns false if the filters leave it out. */
bool monitor_format (const monitor_options_t *options, const char *topic, const char *line,
                     const char *source, char *out, size_t size);

void monitor_test (bool verbose);

#ifdef __cplusplus
}
#endif

#endif
