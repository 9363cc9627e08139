/*  qms_watchdog.c - stop signals, the drain deadline, stalled loops (see
    qms_watchdog.h).

    The thread wakes on a signal or every WAKE_MS to look at the clock: a
    stall is seen within WAKE_MS of its threshold, and the deadline is kept
    to within WAKE_MS.
*/
#define _GNU_SOURCE
#include "qms_watchdog.h"
#include "qms_log.h"
#include "qms_util.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ACTOR       "main"
#define WAKE_MS     250
#define MAX_LOOPS   8

static struct {
    pthread_mutex_t lock;
    sigset_t stop;
    uint64_t drain_ms;
    uint64_t stall_ms;
    qms_stop_fn *fn;
    void *arg;
    int pending;                    /* a stop signal that came before fn */
    uint64_t deadline;              /* monotonic ms; 0 = not stopping */
    qms_loop_t *loops [MAX_LOOPS];
    uint64_t reported [MAX_LOOPS];  /* busy_since of the stall we logged */
    int loop_count;
    bool started;
} s_dog = { .lock = PTHREAD_MUTEX_INITIALIZER, .stall_ms = QMS_LOOP_STALL_MS };

void
qms_loop_enter (qms_loop_t *loop)
{
    atomic_store_explicit (&loop->busy_since_ms, qms_mono_ms (), memory_order_relaxed);
}

uint64_t
qms_loop_leave (qms_loop_t *loop)
{
    uint64_t began = atomic_exchange_explicit (&loop->busy_since_ms, 0, memory_order_relaxed);
    uint64_t took = began ? qms_mono_ms () - began : 0;
    if (took > atomic_load_explicit (&loop->longest_ms, memory_order_relaxed))
        atomic_store_explicit (&loop->longest_ms, took, memory_order_relaxed);
    if (took >= s_dog.stall_ms)
        atomic_fetch_add_explicit (&loop->stalls, 1, memory_order_relaxed);
    return took;
}

/*  Every watched loop that is in a pass now, and for how long. */
static void
log_busy_loops (uint64_t now)
{
    for (int i = 0; i < s_dog.loop_count; i++) {
        uint64_t since = atomic_load_explicit (&s_dog.loops [i]->busy_since_ms, memory_order_relaxed);
        if (since)
            qms_error (ACTOR, "event=loop_busy loop=%s busy_ms=%llu", s_dog.loops [i]->name,
                       (unsigned long long) (now - since));
    }
}

static void
check_loops (uint64_t now)
{
    for (int i = 0; i < s_dog.loop_count; i++) {
        qms_loop_t *loop = s_dog.loops [i];
        uint64_t since = atomic_load_explicit (&loop->busy_since_ms, memory_order_relaxed);
        if (s_dog.reported [i] && since != s_dog.reported [i]) {
            qms_warn (ACTOR, "event=loop_recovered loop=%s stalled_ms_at_least=%llu", loop->name,
                      (unsigned long long) (now - s_dog.reported [i] - WAKE_MS));
            s_dog.reported [i] = 0;
        }
        if (since && !s_dog.reported [i] && now - since >= s_dog.stall_ms) {
            qms_error (ACTOR, "event=loop_stalled loop=%s busy_ms=%llu", loop->name,
                       (unsigned long long) (now - since));
            s_dog.reported [i] = since;
        }
    }
}

static void *
watchdog_thread (void *unused)
{
    (void) unused;
    struct timespec wake = { 0, WAKE_MS * 1000000L };
    for (;;) {
        siginfo_t info;
        int signo = sigtimedwait (&s_dog.stop, &info, &wake);
        uint64_t now = qms_mono_ms ();
        qms_stop_fn *fn = NULL;
        void *arg = NULL;
        pthread_mutex_lock (&s_dog.lock);
        if (signo > 0) {
            if (s_dog.deadline) {
                qms_error (ACTOR, "event=stop_forced signal=%d reason=\"a second stop signal\"", signo);
                log_busy_loops (now);
                _exit (QMS_EXIT_STUCK);
            }
            s_dog.deadline = now + s_dog.drain_ms;
            if (s_dog.fn) {
                fn = s_dog.fn;
                arg = s_dog.arg;
            }
            else
                s_dog.pending = signo;
        }
        check_loops (now);
        if (s_dog.deadline && now >= s_dog.deadline) {
            qms_error (ACTOR, "event=stop_timeout drain_timeout_ms=%llu reason=\"the process did not end in "
                       "time: a thread is stuck\" exit=%d", (unsigned long long) s_dog.drain_ms, QMS_EXIT_STUCK);
            log_busy_loops (now);
            _exit (QMS_EXIT_STUCK);
        }
        pthread_mutex_unlock (&s_dog.lock);
        if (fn)
            fn (signo, arg);
    }
    return NULL;
}

int
qms_watchdog_start (const sigset_t *stop, int drain_timeout_s)
{
    pthread_mutex_lock (&s_dog.lock);
    if (s_dog.started) {
        pthread_mutex_unlock (&s_dog.lock);
        return 0;
    }
    s_dog.stop = *stop;
    s_dog.drain_ms = (uint64_t) drain_timeout_s * 1000;
    pthread_attr_t attr;
    pthread_attr_init (&attr);
    pthread_attr_setdetachstate (&attr, PTHREAD_CREATE_DETACHED);
    pthread_t thread;
    int rc = pthread_create (&thread, &attr, watchdog_thread, NULL);
    pthread_attr_destroy (&attr);
    s_dog.started = rc == 0;
    pthread_mutex_unlock (&s_dog.lock);
    return rc == 0 ? 0 : -1;
}

void
qms_watchdog_on_stop (qms_stop_fn *fn, void *arg)
{
    pthread_mutex_lock (&s_dog.lock);
    s_dog.fn = fn;
    s_dog.arg = arg;
    int pending = s_dog.pending;
    s_dog.pending = 0;
    pthread_mutex_unlock (&s_dog.lock);
    if (fn && pending)
        fn (pending, arg);
}

void
qms_watchdog_watch (qms_loop_t *loop)
{
    pthread_mutex_lock (&s_dog.lock);
    if (s_dog.loop_count < MAX_LOOPS) {
        s_dog.reported [s_dog.loop_count] = 0;
        s_dog.loops [s_dog.loop_count++] = loop;
    }
    pthread_mutex_unlock (&s_dog.lock);
}

void
qms_watchdog_unwatch (qms_loop_t *loop)
{
    pthread_mutex_lock (&s_dog.lock);
    for (int i = 0; i < s_dog.loop_count; i++)
        if (s_dog.loops [i] == loop) {
            s_dog.loops [i] = s_dog.loops [--s_dog.loop_count];
            s_dog.reported [i] = s_dog.reported [s_dog.loop_count];
            break;
        }
    pthread_mutex_unlock (&s_dog.lock);
}

void
qms_watchdog_stopping (void)
{
    pthread_mutex_lock (&s_dog.lock);
    if (!s_dog.deadline)
        s_dog.deadline = qms_mono_ms () + s_dog.drain_ms;
    pthread_mutex_unlock (&s_dog.lock);
}

/* ------------------------------------------------------------------------ */
/*  Selftest: in child processes, since the watchdog is one per process and
    ends it. */

#include <sys/wait.h>

static void
test_stop_fn (int signo, void *arg)
{
    (void) signo;
    atomic_store ((_Atomic int *) arg, 1);
}

/*  A child whose main thread never stops, as a stuck loop would not. */
static pid_t
stuck_child (int drain_s, int log_fd)
{
    pid_t pid = fork ();
    assert (pid >= 0);
    if (pid)
        return pid;
    dup2 (log_fd, STDERR_FILENO);
    sigset_t stop;
    sigemptyset (&stop);
    sigaddset (&stop, SIGTERM);
    pthread_sigmask (SIG_BLOCK, &stop, NULL);
    static qms_loop_t loop = { .name = "test" };
    static _Atomic int asked = 0;
    s_dog.stall_ms = 300;
    assert (qms_watchdog_start (&stop, drain_s) == 0);
    qms_watchdog_watch (&loop);
    qms_watchdog_on_stop (test_stop_fn, &asked);
    qms_loop_enter (&loop);             /* and never leaves */
    for (;;)
        pause ();
}

static int
wait_exit (pid_t pid, int timeout_ms, int *took_ms)
{
    uint64_t start = qms_mono_ms ();
    int status = 0;
    while (waitpid (pid, &status, WNOHANG) == 0) {
        if ((int) (qms_mono_ms () - start) > timeout_ms) {
            kill (pid, SIGKILL);
            waitpid (pid, &status, 0);
            return -1;
        }
        usleep (10000);
    }
    *took_ms = (int) (qms_mono_ms () - start);
    return WIFEXITED (status) ? WEXITSTATUS (status) : -1;
}

static void
read_log (FILE *file, char *text, size_t size)
{
    fflush (file);
    rewind (file);
    size_t n = fread (text, 1, size - 1, file);
    text [n] = 0;
}

void
qms_watchdog_test (bool verbose)
{
    if (verbose)
        printf (" * qms_watchdog: ");
    /*  A stop signal ends a process whose loop is stuck, at the deadline. */
    FILE *log = tmpfile ();
    assert (log);
    pid_t pid = stuck_child (1, fileno (log));
    usleep (600 * 1000);                /* past the stall threshold */
    kill (pid, SIGTERM);
    int took = 0;
    int code = wait_exit (pid, 5000, &took);
    assert (code == QMS_EXIT_STUCK);
    assert (took >= 900 && took < 2500);
    char text [8192];
    read_log (log, text, sizeof text);
    assert (strstr (text, "event=loop_stalled loop=test"));
    assert (strstr (text, "event=stop_timeout"));
    assert (strstr (text, "event=loop_busy loop=test"));
    fclose (log);

    /*  A second stop signal does not wait for the deadline. */
    log = tmpfile ();
    pid = stuck_child (60, fileno (log));
    usleep (100 * 1000);
    kill (pid, SIGTERM);
    usleep (100 * 1000);
    kill (pid, SIGTERM);
    code = wait_exit (pid, 5000, &took);
    assert (code == QMS_EXIT_STUCK && took < 1500);
    read_log (log, text, sizeof text);
    assert (strstr (text, "event=stop_forced"));
    fclose (log);

    /*  The loop's clock. */
    qms_loop_t loop = { .name = "t" };
    qms_loop_enter (&loop);
    assert (atomic_load (&loop.busy_since_ms) != 0);
    usleep (20 * 1000);
    uint64_t ms = qms_loop_leave (&loop);
    assert (ms >= 15 && atomic_load (&loop.busy_since_ms) == 0);
    assert (atomic_load (&loop.longest_ms) == ms);
    if (verbose)
        printf ("OK\n");
}
