/*  inproc_rtt.c - what one hop between two threads of a process costs in
    time: a round trip over a ZeroMQ inproc PAIR between two threads that
    each wait as the gateway's and the router's do (in poll() on the
    socket's ZMQ_FD, after asking ZMQ_EVENTS), one round trip at a time with
    a pause between them, so that both threads are asleep when it starts,
    as at a modest message rate.

        inproc_rtt [PAUSE-US [ROUND-TRIPS]]     (defaults: 1000, 20000)

    Prints the round trip's p50, p90 and p99 in microseconds.  A message in
    the all-in-one server crosses such a hop twice (gateway thread to
    router thread and back), where a server that answers in the thread
    that read the message does not: docs/BENCHMARKS.md uses this to say
    what the hop adds to the median latency.
*/
#define _POSIX_C_SOURCE 200809L
#include <zmq.h>

#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static void *s_ctx;
static long s_rounds = 20000;

static uint64_t
now_ns (void)
{
    struct timespec t;
    clock_gettime (CLOCK_MONOTONIC, &t);
    return (uint64_t) t.tv_sec * 1000000000u + (uint64_t) t.tv_nsec;
}

/*  One message from s, waiting as the server's actors wait. */
static int
wait_recv (void *s, char *buf, size_t size)
{
    for (;;) {
        int got = zmq_recv (s, buf, size, ZMQ_DONTWAIT);
        if (got >= 0 || zmq_errno () != EAGAIN)
            return got;
        int fd;
        uint32_t events;
        size_t len = sizeof fd;
        if (zmq_getsockopt (s, ZMQ_FD, &fd, &len))
            return -1;
        len = sizeof events;
        if (zmq_getsockopt (s, ZMQ_EVENTS, &events, &len))
            return -1;
        if (events & ZMQ_POLLIN)
            continue;
        struct pollfd p = { .fd = fd, .events = POLLIN };
        poll (&p, 1, -1);
    }
}

static void *
echo (void *arg)
{
    (void) arg;
    void *s = zmq_socket (s_ctx, ZMQ_PAIR);
    if (!s || zmq_connect (s, "inproc://inproc-rtt"))
        return NULL;
    char buf [8];
    for (long i = 0; i < s_rounds; i++) {
        int got = wait_recv (s, buf, sizeof buf);
        if (got < 0 || zmq_send (s, buf, (size_t) got, 0) < 0)
            break;
    }
    zmq_close (s);
    return NULL;
}

static int
cmp_u64 (const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
    return x < y ? -1 : x > y;
}

/*  text as a whole decimal number in [lo, hi] into *value; false if not. */
static bool
parse_long (const char *text, long lo, long hi, long *value)
{
    char *end;
    long v = strtol (text, &end, 10);
    if (end == text || *end || v < lo || v > hi)
        return false;
    *value = v;
    return true;
}

int
main (int argc, char **argv)
{
    long pause_us = 1000;
    if (argc > 3 || (argc > 1 && !parse_long (argv [1], 0, 1000000, &pause_us))
    ||  (argc > 2 && !parse_long (argv [2], 100, 10000000, &s_rounds))) {
        fprintf (stderr, "usage: inproc_rtt [PAUSE-US (0-1000000) [ROUND-TRIPS (100-10000000)]]\n");
        return 2;
    }
    s_ctx = zmq_ctx_new ();
    void *s = s_ctx ? zmq_socket (s_ctx, ZMQ_PAIR) : NULL;
    uint64_t *rt = malloc ((size_t) s_rounds * sizeof *rt);
    pthread_t thread;
    if (!s || !rt || zmq_bind (s, "inproc://inproc-rtt") || pthread_create (&thread, NULL, echo, NULL)) {
        fprintf (stderr, "inproc_rtt: cannot set up: %s\n", zmq_strerror (zmq_errno ()));
        return 1;
    }
    char buf [8] = "x";
    struct timespec pause = { .tv_sec = pause_us / 1000000, .tv_nsec = (pause_us % 1000000) * 1000 };
    for (long i = 0; i < s_rounds; i++) {
        uint64_t t0 = now_ns ();
        if (zmq_send (s, buf, 1, 0) < 0 || wait_recv (s, buf, sizeof buf) < 0) {
            fprintf (stderr, "inproc_rtt: %s\n", zmq_strerror (zmq_errno ()));
            return 1;
        }
        rt [i] = now_ns () - t0;
        if (pause_us)
            nanosleep (&pause, NULL);
    }
    pthread_join (thread, NULL);
    qsort (rt, (size_t) s_rounds, sizeof *rt, cmp_u64);
    printf ("pause %ld us: round trip p50 %.1f us, p90 %.1f us, p99 %.1f us (%ld round trips)\n", pause_us,
            (double) rt [s_rounds / 2] / 1e3, (double) rt [s_rounds * 9 / 10] / 1e3,
            (double) rt [s_rounds * 99 / 100] / 1e3, s_rounds);
    free (rt);
    zmq_close (s);
    zmq_ctx_term (s_ctx);
    return 0;
}
