/*  qms_log.c - structured log lines (see qms_log.h). */
#include "qms_log.h"

#include <assert.h>
#include <czmq.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static atomic_int s_level = QMS_LOG_INFO;
static qms_log_sink_fn *_Atomic s_sink;
static void *_Atomic s_sink_arg;
static atomic_bool s_stderr = true;

/*  The log publisher: one XPUB socket per process, used from whichever
    thread logs, so only ever under s_pub_lock (a ZeroMQ socket is not
    thread-safe; the lock is also the memory barrier ZeroMQ asks for when a
    socket changes threads).  s_pub_on spares the lock when it is off.
    XPUB rather than PUB: it hears a monitor's subscription, so start-up can
    wait a moment for it and the first lines are not lost. */
static pthread_mutex_t s_pub_lock = PTHREAD_MUTEX_INITIALIZER;
static zsock_t *s_pub;
static char s_pub_source [128];
static atomic_bool s_pub_on;
#define PUBLISH_WAIT_MS 300

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

void
qms_log_set_stderr (bool on)
{
    atomic_store (&s_stderr, on);
}

int
qms_log_publish_start (const char *endpoint, const char *source)
{
    qms_log_publish_stop ();
    zsock_t *pub = zsock_new (ZMQ_XPUB);
    if (!pub)
        return -1;
    /*  A moment for the last lines (the process's "stopped") to leave; a
        monitor that is not there costs nothing, as PUB drops unsubscribed
        messages at once. */
    zsock_set_linger (pub, 200);
    zsock_set_sndhwm (pub, 10000);
    if (zsock_connect (pub, "%s", endpoint)) {
        zsock_destroy (&pub);
        return -1;
    }
    /*  A monitor that is up subscribes within a few milliseconds; without
        this wait the process's first lines would go out before that. */
    zmq_pollitem_t item = { zsock_resolve (pub), 0, ZMQ_POLLIN, 0 };
    zmq_poll (&item, 1, PUBLISH_WAIT_MS);
    pthread_mutex_lock (&s_pub_lock);
    s_pub = pub;
    snprintf (s_pub_source, sizeof s_pub_source, "%s", source ? source : "");
    atomic_store (&s_pub_on, true);
    pthread_mutex_unlock (&s_pub_lock);
    return 0;
}

void
qms_log_publish_stop (void)
{
    pthread_mutex_lock (&s_pub_lock);
    atomic_store (&s_pub_on, false);
    zsock_destroy (&s_pub);
    pthread_mutex_unlock (&s_pub_lock);
}

/*  One message: topic, line, source.  Never blocks: PUB drops what a slow
    or absent subscriber cannot take. */
static void
publish (int level, const char *actor, const char *line, size_t len)
{
    char topic [96];
    int n = snprintf (topic, sizeof topic, "%s.%s", actor, qms_log_level_name (level));
    size_t topic_len = n < 0 ? 0 : (size_t) n >= sizeof topic ? sizeof topic - 1 : (size_t) n;
    pthread_mutex_lock (&s_pub_lock);
    if (s_pub) {
        void *sock = zsock_resolve (s_pub);
        /*  Subscriptions (one per monitor that connects) are not needed,
            just not left to pile up. */
        char sub [256];
        while (zmq_recv (sock, sub, sizeof sub, ZMQ_DONTWAIT) >= 0)
            ;
        if (zmq_send (sock, topic, topic_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0
        &&  zmq_send (sock, line, len, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0)
            zmq_send (sock, s_pub_source, strlen (s_pub_source), ZMQ_DONTWAIT);
    }
    pthread_mutex_unlock (&s_pub_lock);
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
    if (atomic_load (&s_pub_on))
        publish (level, actor, line, n);
    if (!atomic_load (&s_stderr))
        return;
    line [n++] = '\n';
    /*  One fwrite per line: stdio's lock keeps lines whole across threads. */
    fwrite (line, 1, n, stderr);
}

/* ------------------------------------------------------------------------ */

#define T_THREADS 4
#define T_LINES   200

static void *
t_logger (void *arg)
{
    int t = (int) (intptr_t) arg;
    char actor [16];
    snprintf (actor, sizeof actor, "thread%d", t);
    for (int i = 0; i < T_LINES; i++)
        qms_log (i % 2 ? QMS_LOG_WARN : QMS_LOG_INFO, actor, "event=count t=%d i=%d", t, i);
    return NULL;
}

/*  Receive one published line within the deadline: 3 frames, or false. */
static bool
t_recv_line (zsock_t *sub, int timeout_ms, char *topic, char *line, char *source, size_t size)
{
    zsock_set_rcvtimeo (sub, timeout_ms);
    zmsg_t *msg = zmsg_recv (sub);
    if (!msg)
        return false;
    assert (zmsg_size (msg) == 3);
    char *parts [3];
    for (int i = 0; i < 3; i++)
        parts [i] = zmsg_popstr (msg);
    snprintf (topic, size, "%s", parts [0]);
    snprintf (line, size, "%s", parts [1]);
    snprintf (source, size, "%s", parts [2]);
    for (int i = 0; i < 3; i++)
        zstr_free (&parts [i]);
    zmsg_destroy (&msg);
    return true;
}

/*  Lines reach a bound SUB whole, with their topic, from many threads at
    once; a subscription by topic filters them at the publisher. */
static void
test_publish (void)
{
    const char *endpoint = "inproc://qms-log-test";
    zsock_t *sub = zsock_new (ZMQ_SUB);
    assert (sub);
    zsock_set_rcvhwm (sub, 100000);
    assert (zsock_bind (sub, "%s", endpoint) == 0);
    zsock_set_subscribe (sub, "");
    qms_log_set_stderr (false);
    int saved = qms_log_get_level ();
    qms_log_set_level (QMS_LOG_INFO);
    assert (qms_log_publish_start ("nonsense://x", "t") == -1);
    assert (qms_log_publish_start (endpoint, "tester@here/1") == 0);

    /*  The subscription reaches the publisher a moment after it connects:
        log until a line arrives. */
    char topic [512], line [512], source [512];
    bool got = false;
    for (int i = 0; i < 500 && !got; i++) {
        qms_warn ("logtest", "event=probe n=%d note=%s", i, "a\nb");
        got = t_recv_line (sub, 10, topic, line, source, sizeof line);
    }
    assert (got);
    assert (streq (topic, "logtest.warn"));
    assert (strstr (line, " level=warn actor=logtest event=probe n=") && strstr (line, "note=a\\nb"));
    assert (streq (source, "tester@here/1"));
    while (t_recv_line (sub, 50, topic, line, source, sizeof line))
        ;       /* the other probes */

    /*  Below the level: not published either. */
    qms_debug ("logtest", "event=hidden");

    pthread_t threads [T_THREADS];
    for (int t = 0; t < T_THREADS; t++)
        assert (pthread_create (&threads [t], NULL, t_logger, (void *) (intptr_t) t) == 0);
    for (int t = 0; t < T_THREADS; t++)
        pthread_join (threads [t], NULL);
    int seen [T_THREADS] = { 0 };
    for (int n = 0; n < T_THREADS * T_LINES; n++) {
        assert (t_recv_line (sub, 2000, topic, line, source, sizeof line));
        int t = -1, i = -1;
        const char *at = strstr (line, "event=count t=");
        assert (at && sscanf (at, "event=count t=%d i=%d", &t, &i) == 2);
        assert (t >= 0 && t < T_THREADS && i == seen [t]);     /* each thread's lines in order */
        seen [t]++;
        char expect [64];
        snprintf (expect, sizeof expect, "thread%d.%s", t, i % 2 ? "warn" : "info");
        assert (streq (topic, expect));
        assert (streq (source, "tester@here/1"));
    }
    assert (!t_recv_line (sub, 100, topic, line, source, sizeof line));

    /*  A subscriber that wants one actor's warnings gets only those. */
    zsock_set_unsubscribe (sub, "");
    zsock_set_subscribe (sub, "pick.warn");
    got = false;
    for (int i = 0; i < 500 && !got; i++) {
        qms_warn ("pick", "event=wanted n=%d", i);
        /*  Until the change reaches the publisher, other lines still come. */
        while (!got && t_recv_line (sub, 10, topic, line, source, sizeof line))
            got = streq (topic, "pick.warn");
    }
    assert (got);
    while (t_recv_line (sub, 50, topic, line, source, sizeof line))
        ;
    qms_info ("pick", "event=info_line");
    qms_warn ("other", "event=warn_line");
    qms_warn ("pick", "event=wanted n=last");
    assert (t_recv_line (sub, 2000, topic, line, source, sizeof line));
    assert (streq (topic, "pick.warn") && strstr (line, "event=wanted n=last"));
    assert (!t_recv_line (sub, 100, topic, line, source, sizeof line));

    qms_log_publish_stop ();
    qms_log_publish_stop ();        /* twice is harmless */
    qms_warn ("logtest", "event=after_stop");
    while (t_recv_line (sub, 100, topic, line, source, sizeof line))
        assert (!strstr (line, "after_stop"));
    qms_log_set_level (saved);
    qms_log_set_stderr (true);
    zsock_destroy (&sub);
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

    test_publish ();
    if (verbose)
        printf ("OK\n");
}
