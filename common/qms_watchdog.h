/*  qms_watchdog.h - the thread that takes the stop signals, and makes sure
    a stop always ends the process.

    One per process, started by main before the role runs.  It is the only
    thread that receives SIGINT and SIGTERM (they are blocked everywhere and
    read here with sigtimedwait).  On the first it calls the role's stop
    function (which must be thread-safe: for the gateway, a flag and
    lws_cancel_service) and starts the clock: if the process has not ended
    --drain-timeout seconds later, because a thread is stuck in a loop or
    a call that never returns, it logs which loop was busy and for how long,
    and exits with QMS_EXIT_STUCK.  A second stop signal exits at once, the
    same way.

    It also watches event loops that report when each pass starts and
    ends (qms_loop_t): a pass that runs longer than QMS_LOOP_STALL_MS is
    logged as a stall while it lasts, and once more when it ends, so a
    monitor sees a stuck loop even when that loop cannot answer /metrics.
*/
#ifndef QMS_WATCHDOG_H_INCLUDED
#define QMS_WATCHDOG_H_INCLUDED

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*  The exit code of a process that had to be ended because a thread did
    not stop. */
#define QMS_EXIT_STUCK      3
/*  A pass of a watched loop that runs longer than this is a stall. */
#define QMS_LOOP_STALL_MS   2000

/*  An event loop's pass clock, written by the loop, read by the watchdog. */
typedef struct {
    const char *name;
    _Atomic uint64_t busy_since_ms;     /* monotonic ms the running pass began; 0 = waiting */
    _Atomic uint64_t stalls;            /* passes that ran over QMS_LOOP_STALL_MS */
    _Atomic uint64_t longest_ms;        /* the longest pass so far */
} qms_loop_t;

/*  The loop's side: around each pass (both cheap: one clock read). */
void qms_loop_enter (qms_loop_t *loop);
/*  Ends the pass; returns its length in ms. */
uint64_t qms_loop_leave (qms_loop_t *loop);

typedef void (qms_stop_fn) (int signo, void *arg);

/*  Start the watchdog.  stop: the signals that stop the process (blocked in
    every thread already).  0, or -1 if the thread could not start. */
int qms_watchdog_start (const sigset_t *stop, int drain_timeout_s);
/*  Who stops the role: called once, from the watchdog thread, on the first
    stop signal (before that, a signal only records that it came).  */
void qms_watchdog_on_stop (qms_stop_fn *fn, void *arg);
/*  Watch this loop for stalls (at most 8; the loop outlives the process's
    stop, or is unwatched first). */
void qms_watchdog_watch (qms_loop_t *loop);
void qms_watchdog_unwatch (qms_loop_t *loop);
/*  For a stop that did not come from a signal (a role that ends by
    itself): start the drain clock now. */
void qms_watchdog_stopping (void);

void qms_watchdog_test (bool verbose);

#ifdef __cplusplus
}
#endif

#endif
