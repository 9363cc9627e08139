/*  qms_log.c - structured log lines (see qms_log.h). */
#include "qms_log.h"
#include "qms_json.h"
#include "qms_curve.h"

#include <assert.h>
#include <cJSON.h>
#include <czmq.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static atomic_int s_level = QMS_LOG_INFO;
static qms_log_sink_fn *_Atomic s_sink;
static void *_Atomic s_sink_arg;
static atomic_bool s_stderr = true;
static atomic_int s_format = QMS_LOG_FORMAT_TEXT;

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

static const char *s_formats [] = { "text", "json" };

void qms_log_set_format (int format) { atomic_store (&s_format, format); }
int  qms_log_get_format (void) { return atomic_load (&s_format); }

int
qms_log_format_parse (const char *name)
{
    for (int i = 0; i < 2; i++)
        if (strcmp (name, s_formats [i]) == 0)
            return i;
    return -1;
}

const char *
qms_log_format_name (int format)
{
    return format >= 0 && format < 2 ? s_formats [format] : "?";
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
    if (qms_curve_connect (pub, endpoint)) {
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

/*  The pieces every form of a line is built from: its time, and the
    caller's text as written (escaping is each form's own business). */
typedef struct {
    char ts [96];           /* 24 used; room for what the compiler fears */
    char body [4096];
} pieces_t;

static void
pieces_make (pieces_t *pieces, const char *fmt, va_list args)
{
    struct timeval tv;
    gettimeofday (&tv, NULL);
    struct tm tm;
    gmtime_r (&tv.tv_sec, &tm);
    snprintf (pieces->ts, sizeof pieces->ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
              tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
              tm.tm_min, tm.tm_sec, (int) (tv.tv_usec / 1000));
    vsnprintf (pieces->body, sizeof pieces->body, fmt, args);
}

/*  The logfmt line. */
static size_t
text_line (char *buf, size_t size, int level, const char *actor, const pieces_t *pieces)
{
    int n = snprintf (buf, size, "ts=%s level=%s actor=%s ", pieces->ts,
                      qms_log_level_name (level), actor);
    size_t o = n < 0 ? 0 : (size_t) n;
    if (o >= size)
        o = size - 1;
    /*  Escape control characters so that one event is always one line. */
    for (const unsigned char *p = (const unsigned char *) pieces->body; *p && o + 5 < size; p++) {
        if (*p == '\n')      { buf [o++] = '\\'; buf [o++] = 'n'; }
        else if (*p == '\r') { buf [o++] = '\\'; buf [o++] = 'r'; }
        else if (*p < 0x20 || *p == 0x7f) o += (size_t) snprintf (buf + o, size - o, "\\x%02x", *p);
        else buf [o++] = (char) *p;
    }
    buf [o] = 0;
    return o;
}

/* ------------------------------------------------------------------------ */
/*  The JSON line.                                                           */

/*  Room kept at the end of the buffer for the closing quote of a value
    cut short, ,"truncated":true, the closing brace and the NUL: so a
    line cut for length is still one valid object. */
#define JSON_RESERVE 24
#define JSON_MIN_SIZE 64
#define JSON_MAX_FIELDS 64
#define JSON_MAX_KEY 48

typedef struct {
    char *buf;
    size_t limit;           /* what the fields may fill: size - JSON_RESERVE */
    size_t o;
    bool cut;               /* something did not fit */
    int fields;
} json_writer_t;

/*  One field, ,"key":"value".  Keys are plain ([A-Za-z0-9_.-]), values
    are escaped; what does not fit is cut at a character boundary, and the
    closing quote always fits (it is part of the reserve). */
static void
json_field (json_writer_t *w, const char *key, const char *value, size_t value_len, bool whole)
{
    size_t key_len = strlen (key);
    /*  The fixed fields are short and plain: whole or not at all. */
    if (w->cut || w->o + key_len + 6 + (whole ? value_len : 0) > w->limit) {
        w->cut = true;
        return;
    }
    w->o += (size_t) sprintf (w->buf + w->o, "%s\"%s\":\"", w->fields++ ? "," : "", key);
    const unsigned char *p = (const unsigned char *) value;
    size_t i = 0;
    while (i < value_len) {
        char esc [8];
        size_t esc_len;
        size_t used = qms_json_char (p + i, value_len - i, QMS_JSON_CLEAN, esc, &esc_len);
        if (w->o + esc_len > w->limit) {
            w->cut = true;
            break;
        }
        memcpy (w->buf + w->o, esc, esc_len);
        w->o += esc_len;
        i += used;
    }
    w->buf [w->o++] = '"';
}

typedef struct {
    char key [JSON_MAX_KEY + 16];   /* with a suffix _N */
    const char *value;
    size_t value_len;
} json_pair_t;

static bool
key_char (char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
        || c == '_' || c == '.' || c == '-';
}

/*  A quoted value at p (just after the opening quote), unescaped in
    place (\" and \\); it ends at a quote followed by a space or the end.
    Returns where parsing goes on. */
static char *
quoted_value (char *p, json_pair_t *pair)
{
    char *d = p;
    pair->value = p;
    while (*p) {
        if (*p == '\\' && (p [1] == '"' || p [1] == '\\')) {
            *d++ = p [1];
            p += 2;
        }
        else
        if (*p == '"' && (p [1] == ' ' || p [1] == 0)) {
            p++;
            break;
        }
        else
            *d++ = *p++;
    }
    pair->value_len = (size_t) (d - pair->value);
    return p;
}

/*  Split the caller's text (modified in place) into key=value pairs;
    words that are not pairs are joined into msg.  Returns the number of
    pairs; *dropped when there were more than max. */
static int
split_pairs (char *body, json_pair_t *pairs, int max, char *msg, size_t msg_size, bool *dropped)
{
    int count = 0;
    size_t msg_len = 0;
    msg [0] = 0;
    char *p = body;
    while (*p) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        char *key = p;
        while (key_char (*p))
            p++;
        size_t key_len = (size_t) (p - key);
        if (*p == '=' && key_len > 0 && key_len <= JSON_MAX_KEY && count < max) {
            json_pair_t *pair = &pairs [count++];
            memcpy (pair->key, key, key_len);
            pair->key [key_len] = 0;
            p++;
            if (*p == '"')
                p = quoted_value (p + 1, pair);
            else {
                pair->value = p;
                while (*p && *p != ' ')
                    p++;
                pair->value_len = (size_t) (p - pair->value);
            }
            continue;
        }
        /*  A word that is not a pair (or a pair past the last field). */
        while (*p && *p != ' ')
            p++;
        size_t len = (size_t) (p - key);
        if (msg_len + len + 2 < msg_size) {
            if (msg_len)
                msg [msg_len++] = ' ';
            memcpy (msg + msg_len, key, len);
            msg_len += len;
            msg [msg_len] = 0;
        }
        else
            *dropped = true;
    }
    return count;
}

/*  Give pairs [index] a key that neither the fixed fields nor an earlier
    pair has: key, key_2, key_3, ... */
static void
unique_key (json_pair_t *pairs, int index)
{
    static const char *fixed [] = { "ts", "level", "actor", "truncated" };
    char base [sizeof pairs [index].key];
    memcpy (base, pairs [index].key, sizeof base);
    for (int suffix = 1; ; suffix++) {
        if (suffix > 1)
            snprintf (pairs [index].key, sizeof pairs [index].key, "%.*s_%d", JSON_MAX_KEY, base, suffix);
        bool taken = false;
        for (size_t f = 0; f < sizeof fixed / sizeof fixed [0] && !taken; f++)
            taken = strcmp (pairs [index].key, fixed [f]) == 0;
        for (int i = 0; i < index && !taken; i++)
            taken = strcmp (pairs [index].key, pairs [i].key) == 0;
        if (!taken)
            return;
    }
}

static size_t
json_line (char *buf, size_t size, int level, const char *actor, pieces_t *pieces)
{
    if (size < JSON_MIN_SIZE) {
        /*  No room for any field: still an object. */
        if (size >= 3)
            memcpy (buf, "{}", 3);
        else
        if (size > 0)
            buf [0] = 0;
        return size >= 3 ? 2 : 0;
    }
    json_writer_t w = { buf, size - JSON_RESERVE, 1, false, 0 };
    buf [0] = '{';
    json_field (&w, "ts", pieces->ts, strlen (pieces->ts), true);
    json_field (&w, "level", qms_log_level_name (level), strlen (qms_log_level_name (level)), true);
    json_field (&w, "actor", actor, strlen (actor), true);

    json_pair_t pairs [JSON_MAX_FIELDS + 1];
    static_assert (sizeof pieces->body <= 4096, "msg below is as large as the body");
    char msg [4096];
    bool dropped = false;
    int count = split_pairs (pieces->body, pairs, JSON_MAX_FIELDS, msg, sizeof msg, &dropped);
    if (msg [0]) {
        snprintf (pairs [count].key, sizeof pairs [count].key, "msg");
        pairs [count].value = msg;
        pairs [count].value_len = strlen (msg);
        count++;
    }
    for (int i = 0; i < count; i++) {
        unique_key (pairs, i);
        json_field (&w, pairs [i].key, pairs [i].value, pairs [i].value_len, false);
    }
    if (w.cut || dropped)
        w.o += (size_t) sprintf (buf + w.o, ",\"truncated\":true");
    buf [w.o++] = '}';
    buf [w.o] = 0;
    return w.o;
}

/* ------------------------------------------------------------------------ */

size_t
qms_log_format (char *buf, size_t size, int level, const char *actor, const char *fmt, ...)
{
    pieces_t pieces;
    va_list args;
    va_start (args, fmt);
    pieces_make (&pieces, fmt, args);
    va_end (args);
    return text_line (buf, size, level, actor, &pieces);
}

size_t
qms_log_format_json (char *buf, size_t size, int level, const char *actor, const char *fmt, ...)
{
    pieces_t pieces;
    va_list args;
    va_start (args, fmt);
    pieces_make (&pieces, fmt, args);
    va_end (args);
    return json_line (buf, size, level, actor, &pieces);
}

/*  One fwrite per line: stdio's lock keeps lines whole across threads. */
static void
write_stderr (char *line, size_t len)
{
    line [len++] = '\n';
    fwrite (line, 1, len, stderr);
}

void
qms_log (int level, const char *actor, const char *fmt, ...)
{
    if (level > atomic_load (&s_level))
        return;
    pieces_t pieces;
    va_list args;
    va_start (args, fmt);
    pieces_make (&pieces, fmt, args);
    va_end (args);
    char line [4608];
    size_t n = text_line (line, sizeof line - 1, level, actor, &pieces);
    qms_log_sink_fn *sink = atomic_load (&s_sink);
    if (sink)
        sink (level, actor, line, atomic_load (&s_sink_arg));
    if (atomic_load (&s_pub_on))
        publish (level, actor, line, n);
    if (!atomic_load (&s_stderr))
        return;
    if (atomic_load (&s_format) == QMS_LOG_FORMAT_JSON) {
        /*  Escaping can make a byte six: room for the whole body, usually. */
        char json [8192];
        write_stderr (json, json_line (json, sizeof json - 1, level, actor, &pieces));
    }
    else
        write_stderr (line, n);
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
    /*  The monitor parses logfmt: published lines stay logfmt whatever
        stderr gets. */
    qms_log_set_format (QMS_LOG_FORMAT_JSON);
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
    assert (strncmp (line, "ts=", 3) == 0);
    qms_log_set_format (QMS_LOG_FORMAT_TEXT);
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

/*  The line parses as one JSON object with unique keys, is valid UTF-8
    and holds no raw control character; returns it (to be deleted). */
static cJSON *
t_json_parse (const char *line)
{
    size_t len = strlen (line);
    for (size_t i = 0; i < len; ) {
        uint32_t cp;
        size_t used = qms_utf8_sequence ((const uint8_t *) line + i, len - i, &cp);
        assert (used > 0);
        assert (cp >= 0x20 && (cp < 0x7f || cp > 0x9f));
        i += used;
    }
    const char *end = NULL;
    cJSON *json = cJSON_ParseWithOpts (line, &end, 1);
    assert (json && cJSON_IsObject (json));
    for (cJSON *a = json->child; a; a = a->next)
        for (cJSON *b = a->next; b; b = b->next)
            assert (strcmp (a->string, b->string) != 0);
    return json;
}

static const char *
t_field (cJSON *json, const char *key)
{
    cJSON *item = cJSON_GetObjectItemCaseSensitive (json, key);
    return cJSON_IsString (item) ? item->valuestring : NULL;
}

static void
test_json (void)
{
    assert (qms_log_format_parse ("json") == QMS_LOG_FORMAT_JSON);
    assert (qms_log_format_parse ("text") == QMS_LOG_FORMAT_TEXT);
    assert (qms_log_format_parse ("JSON") == -1 && qms_log_format_parse ("") == -1);
    assert (streq (qms_log_format_name (QMS_LOG_FORMAT_JSON), "json"));

    /*  Fields from the pairs, strings all; a quoted value loses its quotes. */
    char line [1024];
    qms_log_format_json (line, sizeof line, QMS_LOG_WARN, "store",
                         "event=open path=%s n=%d reason=\"%s\" empty= tail=\"x\\\"y\\\\z\"",
                         "users.db", 3, "disk is full");
    cJSON *json = t_json_parse (line);
    const char *ts = t_field (json, "ts");
    assert (ts && strlen (ts) == 24 && ts [10] == 'T' && ts [23] == 'Z');
    assert (streq (t_field (json, "level"), "warn"));
    assert (streq (t_field (json, "actor"), "store"));
    assert (streq (t_field (json, "event"), "open"));
    assert (streq (t_field (json, "path"), "users.db"));
    assert (streq (t_field (json, "n"), "3"));
    assert (streq (t_field (json, "reason"), "disk is full"));
    assert (streq (t_field (json, "empty"), ""));
    assert (streq (t_field (json, "tail"), "x\"y\\z"));
    assert (!t_field (json, "msg") && !cJSON_GetObjectItem (json, "truncated"));
    assert (strncmp (line, "{\"ts\":", 6) == 0);        /* ts, level, actor first */
    cJSON_Delete (json);

    /*  Control characters, C1 controls and bytes that are not UTF-8 are
        escaped; the value decodes back to what was logged (but for the
        replacement character). */
    qms_log_format_json (line, sizeof line, QMS_LOG_INFO, "gw", "name=%s bad=%s ok=%s",
                         "a\nb\r\t\x01\x7f" "c", "\xc2\x85\xff", "\xc3\xa9\xe2\x82\xac");
    assert (!strchr (line, '\n') && strstr (line, "\\u0001") && strstr (line, "\\u007f"));
    assert (strstr (line, "\\u0085") && strstr (line, "\\ufffd"));
    json = t_json_parse (line);
    assert (streq (t_field (json, "name"), "a\nb\r\t\x01\x7f" "c"));
    assert (streq (t_field (json, "bad"), "\xc2\x85\xef\xbf\xbd"));
    assert (streq (t_field (json, "ok"), "\xc3\xa9\xe2\x82\xac"));
    cJSON_Delete (json);

    /*  Words that are not pairs go to msg; the fixed keys and repeated keys
        cannot be overwritten. */
    qms_log_format_json (line, sizeof line, QMS_LOG_INFO, "router",
                         "hello event=x world level=error actor=evil ts=0 a=1 a=2 msg=m truncated=no");
    json = t_json_parse (line);
    assert (streq (t_field (json, "level"), "info") && streq (t_field (json, "level_2"), "error"));
    assert (streq (t_field (json, "actor"), "router") && streq (t_field (json, "actor_2"), "evil"));
    assert (streq (t_field (json, "ts_2"), "0"));
    assert (streq (t_field (json, "a"), "1") && streq (t_field (json, "a_2"), "2"));
    assert (streq (t_field (json, "msg"), "m") && streq (t_field (json, "msg_2"), "hello world"));
    assert (streq (t_field (json, "truncated_2"), "no"));
    assert (!cJSON_GetObjectItem (json, "truncated"));
    cJSON_Delete (json);

    /*  Cut anywhere, still one object that says so; never past the buffer. */
    char long_value [3000];
    for (size_t i = 0; i < sizeof long_value - 1; i++)
        long_value [i] = "ab\n\"\x01\xc3\xa9"[i % 7];
    long_value [sizeof long_value - 1] = 0;
    char *cut = malloc (2048);
    assert (cut);
    for (size_t size = 0; size < 2048; size += size < 200 ? 1 : 37) {
        memset (cut, 'X', 2048);
        size_t n = qms_log_format_json (cut, size, QMS_LOG_ERROR, "gw", "event=long v=%s", long_value);
        if (size == 0) {
            assert (n == 0 && cut [0] == 'X');
            continue;
        }
        assert (n < size && cut [n] == 0 && strlen (cut) == n && cut [size] == 'X');
        if (size < 3) {
            assert (n == 0);        /* no room for even {} */
            continue;
        }
        json = t_json_parse (cut);
        if (size >= JSON_MIN_SIZE)
            assert (cJSON_IsTrue (cJSON_GetObjectItem (json, "truncated")));
        cJSON_Delete (json);
    }
    free (cut);

    /*  More pairs than fields: the rest go to msg, nothing is lost. */
    char many [2048] = "";
    for (int i = 0; i < JSON_MAX_FIELDS + 5; i++)
        snprintf (many + strlen (many), sizeof many - strlen (many), "k%d=%d ", i, i);
    char big [8192];
    qms_log_format_json (big, sizeof big, QMS_LOG_INFO, "gw", "%s", many);
    json = t_json_parse (big);
    assert (streq (t_field (json, "k0"), "0"));
    assert (t_field (json, "msg") && strstr (t_field (json, "msg"), "k68=68"));
    cJSON_Delete (json);
}

/*  What qms_log writes to stderr in each format, from the same pieces;
    the sink gets logfmt either way. */
static char t_sink_line [4608];

static void
t_sink (int level, const char *actor, const char *line, void *arg)
{
    (void) level, (void) actor, (void) arg;
    snprintf (t_sink_line, sizeof t_sink_line, "%s", line);
}

static void
test_stderr_formats (void)
{
    FILE *capture = tmpfile ();
    assert (capture);
    fflush (stderr);
    int saved_fd = dup (STDERR_FILENO);
    assert (saved_fd >= 0 && dup2 (fileno (capture), STDERR_FILENO) >= 0);
    qms_log_set_sink (t_sink, NULL);
    qms_log_set_format (QMS_LOG_FORMAT_JSON);
    assert (qms_log_get_format () == QMS_LOG_FORMAT_JSON);
    qms_warn ("fmt", "event=first name=\"%s\"", "two\nlines");
    assert (strncmp (t_sink_line, "ts=", 3) == 0 && strstr (t_sink_line, "event=first"));
    qms_log_set_format (QMS_LOG_FORMAT_TEXT);
    qms_warn ("fmt", "event=second");
    qms_log_set_sink (NULL, NULL);
    fflush (stderr);
    assert (dup2 (saved_fd, STDERR_FILENO) >= 0);
    close (saved_fd);

    rewind (capture);
    char first [8192], second [8192];
    assert (fgets (first, sizeof first, capture) && fgets (second, sizeof second, capture));
    assert (!fgets (second + 4000, 100, capture));          /* one line per event */
    first [strcspn (first, "\n")] = 0;
    cJSON *json = t_json_parse (first);
    assert (streq (t_field (json, "event"), "first") && streq (t_field (json, "name"), "two\nlines"));
    assert (streq (t_field (json, "actor"), "fmt") && streq (t_field (json, "level"), "warn"));
    cJSON_Delete (json);
    assert (strncmp (second, "ts=", 3) == 0 && strstr (second, " level=warn actor=fmt event=second\n"));
    fclose (capture);
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

    test_json ();
    test_stderr_formats ();
    test_publish ();
    if (verbose)
        printf ("OK\n");
}
