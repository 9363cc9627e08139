/*  monitor.c - the monitor role: a merged live tail of every process's log
    lines, and the socket events of the monitor's own subscriber (see
    monitor.h and docs/CLUSTER.md). */
#include "monitor.h"
#include "qms_log.h"
#include "qms_curve.h"

#include <arpa/inet.h>
#include <assert.h>
#include <czmq.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define ACTOR        "monitor"
#define MAX_TOPIC    96
#define MAX_LINE     8192
#define MAX_SOURCE   128
#define MAX_OUT      (MAX_LINE * 4 + 512)
#define DRAIN_MAX    1000       /* messages per pass, so events get a turn */

struct _monitor_t {
    monitor_options_t options;
    char filter_actor [64];
    FILE *out;
    zsock_t *sub;
    zactor_t *watch;            /* zmonitor on sub */
    char endpoint [256];
    char *text;                 /* MAX_OUT: one formatted line */
};

/* ------------------------------------------------------------------------ */
/*  Formatting.                                                              */

/*  Append src (len bytes) to out at *o, escaping what could drive a
    terminal: C0 controls, DEL, and the C1 controls (U+0080..U+009F, which
    in UTF-8 are 0xC2 0x80..0x9F).  Other UTF-8 passes through. */
static void
append_clean (char *out, size_t size, size_t *o, const char *src, size_t len)
{
    const unsigned char *p = (const unsigned char *) src;
    for (size_t i = 0; i < len && *o + 5 < size; i++) {
        if (p [i] < 0x20 || p [i] == 0x7f)
            *o += (size_t) snprintf (out + *o, size - *o, "\\x%02x", p [i]);
        else
        if (p [i] == 0xc2 && i + 1 < len && p [i + 1] >= 0x80 && p [i + 1] <= 0x9f) {
            *o += (size_t) snprintf (out + *o, size - *o, "\\u%04x", p [i + 1]);
            i++;
        }
        else
            out [(*o)++] = (char) p [i];
    }
    out [*o] = 0;
}

static void
append_text (char *out, size_t size, size_t *o, const char *text)
{
    size_t len = strlen (text);
    if (*o + len + 1 < size) {
        memcpy (out + *o, text, len + 1);
        *o += len;
    }
}

static const char *
level_colour (int level)
{
    switch (level) {
        case QMS_LOG_ERROR: return "\033[1;31m";
        case QMS_LOG_WARN:  return "\033[33m";
        case QMS_LOG_INFO:  return "\033[32m";
        default:            return "\033[90m";
    }
}

/*  "HH:MM:SS.mmm" from a line's "ts=2026-11-26T14:20:00.123Z", or now. */
static void
line_time (const char *line, char *hms, size_t size)
{
    if (strncmp (line, "ts=", 3) == 0 && strlen (line) >= 3 + 23 && line [3 + 10] == 'T') {
        snprintf (hms, size, "%.12s", line + 3 + 11);
        return;
    }
    struct timeval tv;
    gettimeofday (&tv, NULL);
    struct tm tm;
    gmtime_r (&tv.tv_sec, &tm);
    snprintf (hms, size, "%02d:%02d:%02d.%03d", tm.tm_hour, tm.tm_min, tm.tm_sec,
              (int) (tv.tv_usec / 1000));
}

/*  Skip "key=value " at *p if the key matches (the fields the display
    shows in columns already). */
static const char *
skip_field (const char *p, const char *key)
{
    size_t len = strlen (key);
    if (strncmp (p, key, len) || p [len] != '=')
        return p;
    const char *space = strchr (p, ' ');
    return space ? space + 1 : p + strlen (p);
}

bool
monitor_format (const monitor_options_t *options, const char *topic, const char *line,
                const char *source, char *out, size_t size)
{
    /*  The topic is "<actor>.<level>"; an actor name may hold dots. */
    char actor [MAX_TOPIC];
    snprintf (actor, sizeof actor, "%s", topic);
    char *dot = strrchr (actor, '.');
    int level = QMS_LOG_INFO;
    if (dot) {
        *dot = 0;
        level = qms_log_level_parse (dot + 1);
        if (level < 0)
            level = QMS_LOG_INFO;
    }
    if (options->filter_actor && *options->filter_actor && strcmp (actor, options->filter_actor))
        return false;
    if (level > options->filter_level)
        return false;

    char hms [16];
    line_time (line, hms, sizeof hms);
    const char *rest = line;
    if (strncmp (rest, "ts=", 3) == 0) {
        rest = skip_field (rest, "ts");
        rest = skip_field (rest, "level");
        rest = skip_field (rest, "actor");
    }
    char level_text [8];
    snprintf (level_text, sizeof level_text, "%-5s", qms_log_level_name (level));
    for (char *c = level_text; *c; c++)
        *c = (char) (*c >= 'a' && *c <= 'z' ? *c - 32 : *c);

    bool colour = options->colour;
    size_t o = 0;
    out [0] = 0;
    if (colour) append_text (out, size, &o, "\033[2m");
    append_text (out, size, &o, hms);
    if (colour) append_text (out, size, &o, "\033[0m");
    append_text (out, size, &o, " ");
    if (colour) append_text (out, size, &o, level_colour (level));
    append_text (out, size, &o, level_text);
    if (colour) append_text (out, size, &o, "\033[0m");
    append_text (out, size, &o, " ");
    if (colour) append_text (out, size, &o, "\033[36m");
    char padded [MAX_TOPIC + 8];
    snprintf (padded, sizeof padded, "%-8s", actor);
    append_clean (out, size, &o, padded, strlen (padded));
    if (colour) append_text (out, size, &o, "\033[0m");
    append_text (out, size, &o, " ");
    append_clean (out, size, &o, rest, strlen (rest));
    if (source && *source) {
        append_text (out, size, &o, colour ? "  \033[2m[" : "  [");
        append_clean (out, size, &o, source, strlen (source));
        append_text (out, size, &o, colour ? "]\033[0m" : "]");
    }
    return true;
}

/* ------------------------------------------------------------------------ */
/*  Set-up.                                                                  */

/*  With an actor filter the publishers filter for us (subscriptions travel
    upstream); the level filter is applied here as well. */
static void
subscribe (monitor_t *self)
{
    if (!*self->filter_actor) {
        zsock_set_subscribe (self->sub, "");
        return;
    }
    for (int level = QMS_LOG_ERROR; level <= self->options.filter_level && level <= QMS_LOG_DEBUG; level++) {
        char topic [MAX_TOPIC];
        snprintf (topic, sizeof topic, "%s.%s", self->filter_actor, qms_log_level_name (level));
        zsock_set_subscribe (self->sub, topic);
    }
}

monitor_t *
monitor_new (const monitor_options_t *options, FILE *out, char *err, size_t err_size)
{
    monitor_t *self = (monitor_t *) calloc (1, sizeof *self);
    if (!self || !(self->text = (char *) malloc (MAX_OUT))) {
        snprintf (err, err_size, "out of memory");
        free (self);
        return NULL;
    }
    self->options = *options;
    snprintf (self->filter_actor, sizeof self->filter_actor, "%s",
              options->filter_actor ? options->filter_actor : "");
    self->options.filter_actor = self->filter_actor;
    self->options.endpoint = self->endpoint;
    self->out = out;
    self->sub = zsock_new (ZMQ_SUB);
    if (!self->sub) {
        snprintf (err, err_size, "cannot create a ZeroMQ socket");
        monitor_destroy (&self);
        return NULL;
    }
    zsock_set_linger (self->sub, 0);
    zsock_set_rcvhwm (self->sub, 100000);
    subscribe (self);
    /*  Watch before binding, so that LISTENING (or BIND_FAILED) shows. */
    self->watch = zactor_new (zmonitor, self->sub);
    if (self->watch) {
        zstr_sendx (self->watch, "LISTEN", "ALL", NULL);
        zstr_send (self->watch, "START");
        zsock_wait (self->watch);
    }
    if (qms_curve_bind (self->sub, options->endpoint) < 0) {
        snprintf (err, err_size, "cannot bind %s: %s", options->endpoint, zmq_strerror (zmq_errno ()));
        monitor_destroy (&self);
        return NULL;
    }
    const char *bound = zsock_endpoint (self->sub);
    snprintf (self->endpoint, sizeof self->endpoint, "%s", bound ? bound : options->endpoint);
    return self;
}

void
monitor_destroy (monitor_t **self_p)
{
    monitor_t *self = *self_p;
    if (!self)
        return;
    zactor_destroy (&self->watch);     /* before the socket it watches */
    zsock_destroy (&self->sub);
    free (self->text);
    free (self);
    *self_p = NULL;
}

const char *
monitor_endpoint (monitor_t *self)
{
    return self->endpoint;
}

/* ------------------------------------------------------------------------ */
/*  Running.                                                                 */

static void
show (monitor_t *self, const char *topic, const char *line, const char *source)
{
    if (monitor_format (&self->options, topic, line, source, self->text, MAX_OUT)) {
        fputs (self->text, self->out);
        fputc ('\n', self->out);
    }
}

/*  A frame as a NUL-terminated string, cut to size. */
static void
frame_text (zmq_msg_t *frame, char *dst, size_t size)
{
    size_t len = zmq_msg_size (frame);
    if (len >= size)
        len = size - 1;
    memcpy (dst, zmq_msg_data (frame), len);
    dst [len] = 0;
    /*  A NUL inside would hide the rest; make it visible instead. */
    for (size_t i = 0; i < len; i++)
        if (!dst [i])
            dst [i] = '?';
}

/*  One published message: topic, line, and (from us) the sender.  Returns
    false when nothing was waiting. */
static bool
receive_line (monitor_t *self)
{
    void *sock = zsock_resolve (self->sub);
    char topic [MAX_TOPIC], line [MAX_LINE], source [MAX_SOURCE];
    char *parts [3] = { topic, line, source };
    size_t sizes [3] = { sizeof topic, sizeof line, sizeof source };
    topic [0] = line [0] = source [0] = 0;
    int count = 0;
    bool more = true;
    while (more) {
        zmq_msg_t frame;
        zmq_msg_init (&frame);
        if (zmq_msg_recv (&frame, sock, count ? 0 : ZMQ_DONTWAIT) < 0) {
            zmq_msg_close (&frame);
            return count > 0;
        }
        if (count < 3)
            frame_text (&frame, parts [count], sizes [count]);
        count++;
        more = zmq_msg_more (&frame);
        zmq_msg_close (&frame);
    }
    if (count >= 2)
        show (self, topic, line, source);
    else
        qms_debug (ACTOR, "event=bad_message frames=%d", count);
    return true;
}

/*  Best effort: the peer of a socket zmonitor reported by number.  The
    descriptor belongs to ZeroMQ's I/O thread; reading its peer address
    is harmless even if it closed meanwhile (then nothing is shown). */
static void
peer_of (int fd, char *out, size_t size)
{
    struct sockaddr_storage addr;
    socklen_t len = sizeof addr;
    out [0] = 0;
    if (fd < 0 || getpeername (fd, (struct sockaddr *) &addr, &len))
        return;
    char host [INET6_ADDRSTRLEN] = "";
    if (addr.ss_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *) &addr;
        inet_ntop (AF_INET, &in->sin_addr, host, sizeof host);
        snprintf (out, size, " peer=%s:%d", host, ntohs (in->sin_port));
    }
    else
    if (addr.ss_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) &addr;
        inet_ntop (AF_INET6, &in6->sin6_addr, host, sizeof host);
        snprintf (out, size, " peer=[%s]:%d", host, ntohs (in6->sin6_port));
    }
}

static int
event_level (const char *name)
{
    if (strstr (name, "FAILED"))
        return QMS_LOG_WARN;
    if (streq (name, "LISTENING") || streq (name, "ACCEPTED")
    ||  streq (name, "HANDSHAKE_SUCCEEDED") || streq (name, "DISCONNECTED"))
        return QMS_LOG_INFO;
    /*  CLOSED, CONNECT_DELAYED, CONNECT_RETRIED... repeat while a peer is
        down: kept for --filter-level debug. */
    return QMS_LOG_DEBUG;
}

/*  One zmonitor event (name, value, endpoint) shown as a line of the
    monitor itself. */
static void
receive_event (monitor_t *self)
{
    zmsg_t *msg = zmsg_recv (zactor_sock (self->watch));
    if (!msg)
        return;
    char *name = zmsg_popstr (msg);
    char *value = zmsg_popstr (msg);
    char *endpoint = zmsg_popstr (msg);
    if (name) {
        char lower [64];
        snprintf (lower, sizeof lower, "%s", name);
        for (char *c = lower; *c; c++)
            *c = (char) (*c >= 'A' && *c <= 'Z' ? *c + 32 : *c);
        char peer [128] = "";
        if (value && (streq (name, "ACCEPTED") || streq (name, "HANDSHAKE_SUCCEEDED")))
            peer_of (atoi (value), peer, sizeof peer);
        int level = event_level (name);
        char line [1024], topic [MAX_TOPIC];
        qms_log_format (line, sizeof line, level, ACTOR, "event=socket_%s endpoint=%s value=%s%s",
                        lower, endpoint ? endpoint : "", value ? value : "", peer);
        snprintf (topic, sizeof topic, "%s.%s", ACTOR, qms_log_level_name (level));
        show (self, topic, line, NULL);
    }
    zstr_free (&name);
    zstr_free (&value);
    zstr_free (&endpoint);
    zmsg_destroy (&msg);
}

int
monitor_poll (monitor_t *self, int timeout_ms, int stop_fd)
{
    zmq_pollitem_t items [3] = {
        { zsock_resolve (self->sub), 0, ZMQ_POLLIN, 0 },
        { self->watch ? zsock_resolve (zactor_sock (self->watch)) : NULL, 0, ZMQ_POLLIN, 0 },
        { NULL, stop_fd, ZMQ_POLLIN, 0 },
    };
    int count = stop_fd >= 0 ? 3 : 2;
    if (!self->watch) {
        items [1] = items [2];
        count--;
    }
    if (zmq_poll (items, count, timeout_ms) <= 0)
        return 0;
    for (int i = 0; i < DRAIN_MAX && receive_line (self); i++)
        ;
    if (self->watch && (items [1].revents & ZMQ_POLLIN))
        receive_event (self);
    fflush (self->out);
    return stop_fd >= 0 && (items [count - 1].revents & ZMQ_POLLIN) ? 1 : 0;
}

void
monitor_run (monitor_t *self, int stop_fd)
{
    while (monitor_poll (self, 1000, stop_fd) == 0)
        ;
}

/* ------------------------------------------------------------------------ */
/*  Selftest.                                                                */

static void
test_format (void)
{
    char out [MAX_OUT];
    monitor_options_t all = { .filter_level = QMS_LOG_DEBUG };
    const char *line = "ts=2026-11-26T14:20:00.123Z level=warn actor=store event=open path=x";
    assert (monitor_format (&all, "store.warn", line, "store@box/12", out, sizeof out));
    assert (streq (out, "14:20:00.123 WARN  store    event=open path=x  [store@box/12]"));
    assert (monitor_format (&all, "auth.info", "not a log line", NULL, out, sizeof out));
    assert (strstr (out, " INFO  auth     not a log line") && !strchr (out, '['));

    /*  What a peer sends cannot drive the terminal. */
    assert (monitor_format (&all, "x\033[2J.error", "a\033[31mb\r\xc2\x9b" "c \xc3\xa9", "s\n",
                            out, sizeof out));
    assert (!strchr (out, '\033') && !strchr (out, '\r') && !strchr (out, '\n'));
    assert (strstr (out, "ERROR x\\x1b[2J") && strstr (out, "a\\x1b[31mb\\x0d\\u009bc \xc3\xa9"));

    /*  Filters: one actor; a level and more severe. */
    monitor_options_t some = { .filter_actor = "store", .filter_level = QMS_LOG_WARN };
    assert (monitor_format (&some, "store.error", line, NULL, out, sizeof out));
    assert (monitor_format (&some, "store.warn", line, NULL, out, sizeof out));
    assert (!monitor_format (&some, "store.info", line, NULL, out, sizeof out));
    assert (!monitor_format (&some, "auth.error", line, NULL, out, sizeof out));
    assert (!monitor_format (&some, "storex.error", line, NULL, out, sizeof out));

    /*  Colour only when asked. */
    monitor_options_t colour = { .filter_level = QMS_LOG_DEBUG, .colour = true };
    assert (monitor_format (&colour, "store.error", line, "s", out, sizeof out));
    assert (strstr (out, "\033[1;31mERROR\033[0m") && strstr (out, "\033[36mstore"));
    assert (!strchr (line, '\033'));
}

/*  Poll until the output holds want (or the deadline passes), logging one
    line through actor each pass so that a late subscription still sees
    some. */
static bool
t_wait_for (monitor_t *m, char **text, FILE *out, const char *want, const char *actor)
{
    int64_t deadline = zclock_mono () + 5000;
    for (int n = 0; zclock_mono () < deadline; n++) {
        if (actor) {
            qms_info (actor, "event=hello n=%d", n);
            qms_warn (actor, "event=warned n=%d", n);
        }
        monitor_poll (m, 20, -1);
        fflush (out);
        if (*text && strstr (*text, want))
            return true;
    }
    return false;
}

static void
test_live (void)
{
    char *text = NULL;
    size_t text_len = 0;
    FILE *out = open_memstream (&text, &text_len);
    assert (out);
    char err [256];
    monitor_options_t options = { .endpoint = "tcp://127.0.0.1:*", .filter_level = QMS_LOG_DEBUG };
    monitor_t *m = monitor_new (&options, out, err, sizeof err);
    assert (m);
    assert (strncmp (monitor_endpoint (m), "tcp://127.0.0.1:", 16) == 0);
    assert (!strchr (monitor_endpoint (m), '*'));

    /*  A second monitor cannot bind the same endpoint. */
    monitor_options_t again = { .endpoint = monitor_endpoint (m), .filter_level = QMS_LOG_DEBUG };
    assert (!monitor_new (&again, out, err, sizeof err) && strstr (err, "cannot bind"));

    assert (qms_log_publish_start (monitor_endpoint (m), "tester@box/7") == 0);
    assert (t_wait_for (m, &text, out, " INFO  store    event=hello n=", "store"));
    assert (t_wait_for (m, &text, out, " WARN  auth     event=warned n=", "auth"));
    assert (strstr (text, "  [tester@box/7]"));
    /*  Our own socket's events, as lines of the monitor. */
    assert (t_wait_for (m, &text, out, "monitor  event=socket_accepted", NULL));
    assert (t_wait_for (m, &text, out, "event=socket_handshake_succeeded", NULL));
    assert (strstr (text, "peer=127.0.0.1:"));
    qms_log_publish_stop ();
    assert (t_wait_for (m, &text, out, "event=socket_disconnected", NULL));

    /*  A signal (here: a pipe) ends the wait. */
    int fds [2];
    assert (pipe (fds) == 0);
    assert (monitor_poll (m, 10, fds [0]) == 0);
    assert (write (fds [1], "x", 1) == 1);
    assert (monitor_poll (m, 5000, fds [0]) == 1);
    close (fds [0]);
    close (fds [1]);
    monitor_destroy (&m);
    assert (m == NULL);
    fclose (out);
    free (text);
}

static void
test_filtered (void)
{
    char *text = NULL;
    size_t text_len = 0;
    FILE *out = open_memstream (&text, &text_len);
    assert (out);
    char err [256];
    monitor_options_t options = { .endpoint = "tcp://127.0.0.1:*", .filter_actor = "router",
                                  .filter_level = QMS_LOG_WARN };
    monitor_t *m = monitor_new (&options, out, err, sizeof err);
    assert (m);
    assert (qms_log_publish_start (monitor_endpoint (m), "tester@box/8") == 0);
    int64_t deadline = zclock_mono () + 5000;
    bool seen = false;
    for (int n = 0; !seen && zclock_mono () < deadline; n++) {
        qms_info ("router", "event=unwanted_info n=%d", n);
        qms_warn ("store", "event=unwanted_actor n=%d", n);
        qms_error ("router", "event=wanted n=%d", n);
        monitor_poll (m, 20, -1);
        fflush (out);
        seen = text && strstr (text, "event=wanted");
    }
    assert (seen);
    assert (!strstr (text, "unwanted") && !strstr (text, "socket_"));
    assert (strstr (text, " ERROR router   event=wanted"));
    qms_log_publish_stop ();
    monitor_destroy (&m);
    fclose (out);
    free (text);
}

void
monitor_test (bool verbose)
{
    if (verbose)
        printf (" * monitor: ");
    test_format ();
    qms_log_set_stderr (false);
    int saved = qms_log_get_level ();
    qms_log_set_level (QMS_LOG_INFO);
    test_live ();
    test_filtered ();
    qms_log_set_level (saved);
    qms_log_set_stderr (true);
    if (verbose)
        printf ("OK\n");
}
