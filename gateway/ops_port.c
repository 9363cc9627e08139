/*  ops_port.c - the operations port of a store, auth or router process
    (see ops_port.h).

    One libwebsockets context with one vhost, served by a thread of its
    own.  Three kinds of descriptor sit in its loop: our listening socket
    (lws is handed each connection we accept, as the gateway does, so the
    port and address rules are the same as --bind's everywhere), the HTTP
    connections lws parses, and the notification descriptor of the DEALER
    socket to the actor (ZMQ_FD).  ZMQ_FD signals edges only, so the
    DEALER is drained after every send and on a timer as well as when the
    descriptor fires.  A request that needs the actor waits in one of
    MAX_WAIT slots until QMS_STATS comes back with its number, or until
    the timeout answers it with 503.
*/
#define _GNU_SOURCE
#include "ops_port.h"
#include "gateway.h"
#include "lws_fd.h"
#include "qms_actor.h"
#include "qms_curve.h"
#include "qms_log.h"
#include "qms_metrics.h"
#include "qms_msg.h"
#include "qms_ops.h"
#include "qms_util.h"

#include <arpa/inet.h>
#include <assert.h>
#include <czmq.h>
#include <errno.h>
#include <libwebsockets.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define ACTOR           "ops"
#define MAX_WAIT        16      /* requests waiting for the actor at once */
#define TICK_US         (50 * LWS_US_PER_MS)

typedef enum { ASK_NONE, ASK_HEALTHZ, ASK_READYZ, ASK_METRICS } ask_t;

/*  One HTTP transaction (lws gives each one zeroed memory). */
typedef struct {
    ask_t ask;
    bool head_only;
    uint64_t req;               /* the STATS_GET it waits for, or 0 */
    uint64_t deadline;          /* monotonic ms */
    int status;                 /* 0 until answered */
    const char *content_type;
    bool allow;                 /* 405: say which methods are */
    uint8_t *out;               /* LWS_PRE, then the body */
    size_t len;
    bool head_sent;
} txn_t;

struct _ops_port_t {
    char role [16];
    char endpoint [300];
    char database [1200];
    char version [32];
    int timeout_ms;
    int port;
    int listen_fd;
    struct lws_context *ctx;
    struct lws_vhost *vh;
    pthread_t thread;
    bool started;
    atomic_bool stop;
    /*  the thread's own from here */
    struct lws *listen_wsi;
    zsock_t *dealer;
    uint64_t next_req;
    struct lws *waiting [MAX_WAIT];
    lws_sorted_usec_list_t sul;
};

static ops_port_t *
port_of (struct lws *wsi)
{
    return (ops_port_t *) lws_context_user (lws_get_context (wsi));
}

/* ------------------------------------------------------------------------ */
/*  Answers. */

/*  What txn answers with; written when lws says the socket is writeable. */
static void
respond (struct lws *wsi, txn_t *txn, int status, const char *type, const char *body, size_t len)
{
    txn->out = (uint8_t *) malloc (LWS_PRE + len + 1);
    if (txn->out)
        memcpy (txn->out + LWS_PRE, body, len);
    txn->len = txn->out ? len : 0;
    txn->status = status;
    txn->content_type = type;
    lws_callback_on_writable (wsi);
}

static void
respond_text (struct lws *wsi, txn_t *txn, int status, const char *text)
{
    respond (wsi, txn, status, "text/plain; charset=utf-8", text, strlen (text));
}

/*  The actor answered (text) or not (NULL). */
static void
answer (ops_port_t *self, struct lws *wsi, txn_t *txn, const char *text, size_t len)
{
    bool up = text != NULL;
    qms_buf_t body;
    qms_buf_init (&body);
    if (txn->ask == ASK_METRICS) {
        if (!up) {
            char note [128];
            snprintf (note, sizeof note, "# the %s actor did not answer within %d ms\n",
                      self->role, self->timeout_ms);
            respond_text (wsi, txn, 503, note);
            return;
        }
        char labels [64];
        snprintf (labels, sizeof labels, "version=\"%s\"", self->version);
        qms_metrics_head (&body, "qms_build_info", "gauge", "Version of the server.");
        qms_metrics_value (&body, "qms_build_info", labels, 1);
        qms_buf_append (&body, text, len);
        respond (wsi, txn, 200, "text/plain; version=0.0.4; charset=utf-8",
                 (const char *) body.data, body.len);
        qms_buf_free (&body);
        return;
    }
    char reason [160];
    snprintf (reason, sizeof reason, "the %s actor did not answer within %d ms", self->role,
              self->timeout_ms);
    int status;
    if (txn->ask == ASK_HEALTHZ)
        status = qms_ops_health_json (&body, self->role, up, -1, reason);
    else {
        /*  /readyz: the same keys as a gateway's, for what this process has. */
        qms_ops_check_t check = { self->role, up };
        bool store = self->database [0] != 0;
        bool writable = up && store && memmem (text, len, "qms_store_writable 1", 20) != NULL;
        status = qms_ops_ready_json (&body, &check, 1, store ? (up ? writable : 0) : -1,
                                     store ? self->database : NULL,
                                     !up ? reason : store && !writable ? "database is read-only" : NULL);
    }
    respond (wsi, txn, status, "application/json", (const char *) body.data, body.len);
    qms_buf_free (&body);
}

/*  Head, then body (a second writeable callback), then the next request
    on the same connection, or the close.  -1: close now. */
static int
write_answer (struct lws *wsi, txn_t *txn)
{
    if (!txn->head_sent) {
        uint8_t head [LWS_PRE + 1024];
        uint8_t *start = head + LWS_PRE, *p = start, *end = head + sizeof head - 1;
        if (lws_add_http_common_headers (wsi, (unsigned int) txn->status, txn->content_type,
                                         txn->len, &p, end)
        ||  lws_add_http_header_by_name (wsi, (const unsigned char *) "cache-control:",
                                         (const unsigned char *) "no-store", 8, &p, end)
        ||  (txn->allow && lws_add_http_header_by_name (wsi, (const unsigned char *) "allow:",
                                                        (const unsigned char *) "GET, HEAD", 9, &p, end))
        ||  lws_finalize_http_header (wsi, &p, end))
            return -1;
        bool body = !txn->head_only && txn->len;
        if (lws_write (wsi, start, (size_t) (p - start), body ? LWS_WRITE_HTTP_HEADERS
                                                              : LWS_WRITE_HTTP_HEADERS | LWS_WRITE_H2_STREAM_END) < 0)
            return -1;
        txn->head_sent = true;
        if (body) {
            lws_callback_on_writable (wsi);
            return 0;
        }
    }
    else
    if (lws_write (wsi, txn->out + LWS_PRE, txn->len, LWS_WRITE_HTTP_FINAL) < 0)
        return -1;
    free (txn->out);
    txn->out = NULL;
    return lws_http_transaction_completed (wsi) ? -1 : 0;
}

/* ------------------------------------------------------------------------ */
/*  The actor. */

static void
unwait (ops_port_t *self, struct lws *wsi)
{
    for (int i = 0; i < MAX_WAIT; i++)
        if (self->waiting [i] == wsi)
            self->waiting [i] = NULL;
}

/*  Every batch the DEALER holds; QMS_STATS answers the request whose
    number it carries.  Batches that are not well-formed answers for this
    role are dropped whole. */
static void
drain_actor (ops_port_t *self)
{
    void *sock = zsock_resolve (self->dealer);
    for (;;) {
        zmq_msg_t body;
        zmq_msg_init (&body);
        int rc = qms_batch_recv (sock, NULL, NULL, &body);
        if (rc == 1) {
            const uint8_t *data = (const uint8_t *) zmq_msg_data (&body);
            size_t size = zmq_msg_size (&body), offset = 0;
            qms_rec_t rec;
            if (!qms_batch_valid (data, size, QMS_ROLE_OPS, NULL))
                size = 0;
            while (qms_rec_next (data, size, &offset, &rec) == 1) {
                if (rec.type != QMS_STATS || rec.req == 0)
                    continue;
                for (int i = 0; i < MAX_WAIT; i++) {
                    struct lws *wsi = self->waiting [i];
                    txn_t *txn = wsi ? (txn_t *) lws_wsi_user (wsi) : NULL;
                    if (txn && txn->req == rec.req) {
                        self->waiting [i] = NULL;
                        answer (self, wsi, txn, rec.s [QMS_STATS_TEXT].ptr ? rec.s [QMS_STATS_TEXT].ptr : "",
                                rec.s [QMS_STATS_TEXT].len);
                    }
                }
            }
        }
        zmq_msg_close (&body);
        if (rc != 1)
            break;
    }
}

/*  Ask the actor for its figures on behalf of txn. */
static void
ask_actor (ops_port_t *self, struct lws *wsi, txn_t *txn)
{
    int slot = -1;
    for (int i = 0; i < MAX_WAIT && slot < 0; i++)
        if (!self->waiting [i])
            slot = i;
    if (slot < 0) {
        respond_text (wsi, txn, 503, "503 Service Unavailable: too many requests at once\n");
        return;
    }
    txn->req = ++self->next_req | (txn->ask == ASK_METRICS ? 0 : QMS_STATS_BRIEF);
    txn->deadline = qms_mono_ms () + (uint64_t) self->timeout_ms;
    qms_rec_t ask = { .type = QMS_STATS_GET, .req = txn->req };
    if (qms_rec_send (zsock_resolve (self->dealer), NULL, 0, &ask)) {
        answer (self, wsi, txn, NULL, 0);
        return;
    }
    self->waiting [slot] = wsi;
    drain_actor (self);         /* a send can take the edge ZMQ_FD would have signalled */
}

static void
on_tick (lws_sorted_usec_list_t *sul)
{
    ops_port_t *self = lws_container_of (sul, ops_port_t, sul);
    drain_actor (self);
    uint64_t now = qms_mono_ms ();
    for (int i = 0; i < MAX_WAIT; i++) {
        struct lws *wsi = self->waiting [i];
        txn_t *txn = wsi ? (txn_t *) lws_wsi_user (wsi) : NULL;
        if (txn && txn->deadline <= now) {
            self->waiting [i] = NULL;
            answer (self, wsi, txn, NULL, 0);
        }
    }
    lws_sul_schedule (self->ctx, 0, &self->sul, on_tick, TICK_US);
}

/* ------------------------------------------------------------------------ */
/*  lws callbacks. */

static int
callback_http (struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    ops_port_t *self = port_of (wsi);
    txn_t *txn = (txn_t *) user;
    (void) len;
    switch (reason) {
        case LWS_CALLBACK_HTTP: {
            /*  A new request, maybe on a kept-alive connection: nothing of
                the last one's answer carries over. */
            free (txn->out);
            memset (txn, 0, sizeof *txn);
            const char *path = (const char *) in;
            bool get = lws_hdr_total_length (wsi, WSI_TOKEN_GET_URI) > 0;
            txn->head_only = lws_hdr_total_length (wsi, WSI_TOKEN_HEAD_URI) > 0;
            if (!get && !txn->head_only) {
                txn->allow = true;
                respond_text (wsi, txn, 405, "405 Method Not Allowed: this port answers GET\n");
                return 0;
            }
            txn->ask = !path ? ASK_NONE
                     : streq (path, "/metrics") ? ASK_METRICS
                     : streq (path, "/healthz") ? ASK_HEALTHZ
                     : streq (path, "/readyz") ? ASK_READYZ : ASK_NONE;
            if (txn->ask == ASK_NONE)
                respond_text (wsi, txn, 404, "404 Not Found: this port serves /metrics, /healthz and /readyz\n");
            else
                ask_actor (self, wsi, txn);
            return 0;
        }
        case LWS_CALLBACK_HTTP_BODY:
            return 0;           /* a body we do not want (the answer is 405) */
        case LWS_CALLBACK_HTTP_BODY_COMPLETION:
            /*  lws writes nothing while a body is coming in: the answer
                waits until it is all read. */
            if (txn && txn->status)
                lws_callback_on_writable (wsi);
            return 0;
        case LWS_CALLBACK_HTTP_WRITEABLE:
            if (!txn || !txn->status)
                return 0;
            return write_answer (wsi, txn);
        case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
        case LWS_CALLBACK_CLOSED_HTTP:
            if (txn) {
                unwait (self, wsi);
                free (txn->out);
                txn->out = NULL;
            }
            return 0;
        case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
            return 0;           /* the loop looks at stop after each pass */
        default:
            return lws_callback_http_dummy (wsi, reason, user, in, len);
    }
}

/*  Our listening socket and the DEALER's notification descriptor. */
static int
callback_raw (struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    (void) user; (void) in; (void) len;
    if (reason != LWS_CALLBACK_RAW_RX_FILE)
        return 0;
    ops_port_t *self = port_of (wsi);
    if (wsi != self->listen_wsi) {
        drain_actor (self);
        return 0;
    }
    int fd;
    while ((fd = accept4 (self->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0)
        if (!lws_adopt_socket_vhost (self->vh, fd))
            close (fd);
    return 0;
}

static const struct lws_protocols s_protocols [] = {
    { "ops-http", callback_http, sizeof (txn_t), 0, 0, NULL, 0 },
    { "ops-raw", callback_raw, 0, 0, 0, NULL, 0 },
    { NULL, NULL, 0, 0, 0, NULL, 0 }
};

static void *
run (void *arg)
{
    ops_port_t *self = (ops_port_t *) arg;
    lws_sul_schedule (self->ctx, 0, &self->sul, on_tick, TICK_US);
    while (!atomic_load (&self->stop))
        if (lws_service (self->ctx, 0) < 0)
            break;
    return NULL;
}

/* ------------------------------------------------------------------------ */
/*  Set-up. */

/*  Our own listening socket: an IPv4 or IPv6 address, or every interface
    (IPv6 with IPv4-mapped addresses where the kernel has IPv6). */
static int
listen_on (const char *address, int port, int *bound_port, char *err, size_t err_size)
{
    struct sockaddr_storage ss;
    memset (&ss, 0, sizeof ss);
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *) &ss;
    struct sockaddr_in *v4 = (struct sockaddr_in *) &ss;
    bool any = !address || !address [0];
    int family = any || strchr (address, ':') ? AF_INET6 : AF_INET;
    if (family == AF_INET6) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons ((uint16_t) port);
        if (!any && inet_pton (AF_INET6, address, &v6->sin6_addr) != 1)
            family = AF_UNSPEC;
    }
    else {
        v4->sin_family = AF_INET;
        v4->sin_port = htons ((uint16_t) port);
        if (inet_pton (AF_INET, address, &v4->sin_addr) != 1)
            family = AF_UNSPEC;
    }
    if (family == AF_UNSPEC) {
        snprintf (err, err_size, "--bind '%s' is not an IP address", address);
        return -1;
    }
    int fd = socket (family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 && any && errno == EAFNOSUPPORT) {
        family = AF_INET;       /* no IPv6 here: every IPv4 interface then */
        memset (&ss, 0, sizeof ss);
        v4->sin_family = AF_INET;
        v4->sin_port = htons ((uint16_t) port);
        v4->sin_addr.s_addr = htonl (INADDR_ANY);
        fd = socket (family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    }
    if (fd < 0) {
        snprintf (err, err_size, "no socket: %s", strerror (errno));
        return -1;
    }
    int one = 1, zero = 0;
    setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (family == AF_INET6)
        setsockopt (fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    socklen_t len = family == AF_INET6 ? sizeof *v6 : sizeof *v4;
    if (bind (fd, (struct sockaddr *) &ss, len) || listen (fd, 64)) {
        snprintf (err, err_size, "cannot listen on %s port %d: %s", any ? "every interface" : address,
                  port, strerror (errno));
        close (fd);
        return -1;
    }
    len = sizeof ss;
    getsockname (fd, (struct sockaddr *) &ss, &len);
    *bound_port = ntohs (family == AF_INET6 ? v6->sin6_port : v4->sin_port);
    return fd;
}

ops_port_t *
ops_port_new (const ops_port_options_t *options, char *err, size_t err_size)
{
    ops_port_t *self = (ops_port_t *) calloc (1, sizeof *self);
    if (!self) {
        snprintf (err, err_size, "out of memory");
        return NULL;
    }
    self->listen_fd = -1;
    snprintf (self->role, sizeof self->role, "%s", options->role);
    snprintf (self->endpoint, sizeof self->endpoint, "%s", options->endpoint);
    snprintf (self->database, sizeof self->database, "%s", options->database ? options->database : "");
    snprintf (self->version, sizeof self->version, "%s", options->version ? options->version : "");
    self->timeout_ms = options->timeout_ms > 0 ? options->timeout_ms : 2000;
    self->listen_fd = listen_on (options->bind_address, options->port, &self->port, err, err_size);
    if (self->listen_fd < 0)
        goto fail;

    gateway_lws_logging ();
    struct lws_context_creation_info info;
    memset (&info, 0, sizeof info);
    info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
    info.user = self;
    info.timeout_secs = 5;              /* a request head that stalls */
    info.keepalive_timeout = 5;
    info.max_http_header_data = 4096;
    info.gid = -1;
    info.uid = -1;
    self->ctx = lws_create_context (&info);
    if (!self->ctx) {
        snprintf (err, err_size, "cannot create a libwebsockets context");
        goto fail;
    }
    memset (&info, 0, sizeof info);
    info.vhost_name = "ops";
    info.port = CONTEXT_PORT_NO_LISTEN_SERVER;
    info.protocols = s_protocols;
    self->vh = lws_create_vhost (self->ctx, &info);
    if (!self->vh) {
        snprintf (err, err_size, "cannot create a libwebsockets vhost");
        goto fail;
    }
    self->listen_wsi = lws_fd_adopt (self->vh, self->listen_fd, "ops-raw");
    if (!self->listen_wsi) {
        snprintf (err, err_size, "cannot serve the listening socket");
        goto fail;
    }
    /*  The socket is made here and used only by the thread from now on
        (a ZeroMQ socket may move to another thread with a full barrier,
        which pthread_create is). */
    self->dealer = zsock_new (ZMQ_DEALER);
    if (!self->dealer || (qms_socket_tune (self->dealer), qms_curve_connect (self->dealer, self->endpoint))
    ||  !lws_fd_adopt_zmq (self->vh, zsock_resolve (self->dealer), "ops-raw")) {
        snprintf (err, err_size, "cannot connect to %s", self->endpoint);
        goto fail;
    }
    if (pthread_create (&self->thread, NULL, run, self)) {
        snprintf (err, err_size, "cannot start a thread");
        goto fail;
    }
    self->started = true;
    qms_info (ACTOR, "event=listening role=%s port=%d bind=%s actor=%s", self->role, self->port,
              options->bind_address && options->bind_address [0] ? options->bind_address : "*",
              self->endpoint);
    return self;
fail:
    ops_port_destroy (&self);
    return NULL;
}

void
ops_port_destroy (ops_port_t **self_p)
{
    ops_port_t *self = *self_p;
    if (!self)
        return;
    *self_p = NULL;
    if (self->started) {
        atomic_store (&self->stop, true);
        lws_cancel_service (self->ctx);
        pthread_join (self->thread, NULL);
    }
    /*  lws closes what it adopted: the listening socket with the rest. */
    if (self->ctx)
        lws_context_destroy (self->ctx);
    else
    if (self->listen_fd >= 0)
        close (self->listen_fd);
    zsock_destroy (&self->dealer);
    free (self);
}

int
ops_port_port (const ops_port_t *self)
{
    return self->port;
}

/* ------------------------------------------------------------------------ */
/*  Selftest: a fake actor (a ROUTER on inproc://) and HTTP by hand. */

static int
t_connect (int port)
{
    int fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons ((uint16_t) port) };
    sa.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    assert (fd >= 0 && connect (fd, (struct sockaddr *) &sa, sizeof sa) == 0);
    struct timeval tv = { .tv_sec = 5 };
    setsockopt (fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

/*  One whole answer: its head, and as many body bytes as it says. */
static void
t_read_answer (int fd, char *out, size_t size, bool head_only)
{
    size_t got = 0;
    ssize_t r;
    out [0] = 0;
    while (got + 1 < size && (r = read (fd, out + got, size - 1 - got)) > 0) {
        got += (size_t) r;
        out [got] = 0;
        char *end = strstr (out, "\r\n\r\n");
        char *length = strcasestr (out, "content-length:");
        if (end && (head_only || (length && length < end
                                  && got >= (size_t) (end + 4 - out) + strtoul (length + 15, NULL, 10))))
            break;
    }
}

/*  Send a request on fd; the fake actor answers the STATS_GET it causes
    with text (NULL: it stays silent); the HTTP answer in out. */
static void
t_exchange (zsock_t *actor, int fd, const char *request, const char *text, uint64_t want_brief,
            char *out, size_t size)
{
    assert (write (fd, request, strlen (request)) == (ssize_t) strlen (request));
    if (text) {
        void *sock = zsock_resolve (actor);
        zmq_pollitem_t item = { sock, 0, ZMQ_POLLIN, 0 };
        assert (zmq_poll (&item, 1, 5000) == 1);
        uint8_t id [256];
        size_t id_len = 0;
        zmq_msg_t body;
        zmq_msg_init (&body);
        assert (qms_batch_recv (sock, id, &id_len, &body) == 1);
        size_t offset = 0;
        qms_rec_t rec;
        assert (qms_rec_next (zmq_msg_data (&body), zmq_msg_size (&body), &offset, &rec) == 1);
        assert (rec.type == QMS_STATS_GET && rec.req != 0 && (rec.req & QMS_STATS_BRIEF) == want_brief);
        qms_rec_t reply = { .type = QMS_STATS, .req = rec.req, .s = { [QMS_STATS_TEXT] = qms_str (text) } };
        assert (qms_rec_send (sock, id, id_len, &reply) == 0);
        zmq_msg_close (&body);
    }
    t_read_answer (fd, out, size, strncmp (request, "HEAD ", 5) == 0);
    /*  What a silent actor was asked is dropped, so the next request's
        ask is the first in the queue. */
    zmq_msg_t junk;
    zmq_msg_init (&junk);
    while (zmq_msg_recv (&junk, zsock_resolve (actor), ZMQ_DONTWAIT) >= 0)
        ;
    zmq_msg_close (&junk);
}

static void
t_request (zsock_t *actor, int port, const char *request, const char *text, uint64_t want_brief,
           char *out, size_t size)
{
    int fd = t_connect (port);
    t_exchange (actor, fd, request, text, want_brief, out, size);
    close (fd);
}

void
ops_port_test (bool verbose)
{
    if (verbose)
        printf (" * ops_port: ");
    char err [256], out [8192];

    /*  A bind address that is none. */
    ops_port_options_t bad = { .role = "auth", .endpoint = "inproc://ops-port-test",
                               .bind_address = "not-an-address", .port = 0 };
    assert (ops_port_new (&bad, err, sizeof err) == NULL && strstr (err, "not an IP address"));

    zsock_t *actor = zsock_new (ZMQ_ROUTER);
    assert (actor && zsock_bind (actor, "inproc://ops-port-test") == 0);
    ops_port_options_t options = { .role = "store", .endpoint = "inproc://ops-port-test",
                                   .bind_address = "127.0.0.1", .port = 0,
                                   .database = "/data/users\"x.db", .version = "9.9",
                                   .timeout_ms = 300 };
    ops_port_t *ops = ops_port_new (&options, err, sizeof err);
    assert (ops && ops_port_port (ops) > 0);
    int port = ops_port_port (ops);

    /*  The port is taken now. */
    ops_port_options_t twice = options;
    twice.port = port;
    assert (ops_port_new (&twice, err, sizeof err) == NULL && strstr (err, "cannot listen"));

    /*  /metrics: the build line, then the actor's figures. */
    t_request (actor, port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
               "# TYPE qms_store_writable gauge\nqms_store_writable 1\n", 0, out, sizeof out);
    assert (strncmp (out, "HTTP/1.1 200 OK\r\n", 17) == 0);
    assert (strcasestr (out, "content-type: text/plain; version=0.0.4"));
    assert (strcasestr (out, "cache-control: no-store\r\n"));
    assert (strstr (out, "\r\n\r\n# HELP qms_build_info"));
    assert (strstr (out, "qms_build_info{version=\"9.9\"} 1\n# TYPE qms_store_writable gauge\nqms_store_writable 1\n"));

    /*  /readyz: writable, then read-only; a probe asks for the brief
        figures; both on one kept-alive connection. */
    int fd = t_connect (port);
    t_exchange (actor, fd, "GET /readyz HTTP/1.1\r\n\r\n", "qms_store_writable 1\n",
                QMS_STATS_BRIEF, out, sizeof out);
    assert (strncmp (out, "HTTP/1.1 200 OK\r\n", 17) == 0);
    assert (strstr (out, "{\"ready\":true,\"store\":true,\"database_writable\":true,"
                         "\"database\":\"/data/users\\\"x.db\"}"));
    t_exchange (actor, fd, "GET /readyz?verbose HTTP/1.1\r\n\r\n", "qms_store_writable 0\n",
                QMS_STATS_BRIEF, out, sizeof out);
    close (fd);
    assert (strncmp (out, "HTTP/1.1 503 Service Unavailable\r\n", 34) == 0);
    assert (strstr (out, "\"ready\":false,\"store\":true,\"database_writable\":false"));
    assert (strstr (out, "\"reason\":\"database is read-only\""));

    /*  /healthz while the actor says nothing: 503 after the timeout. */
    uint64_t began = qms_mono_ms ();
    t_request (actor, port, "GET /healthz HTTP/1.1\r\n\r\n", NULL, 0, out, sizeof out);
    assert (qms_mono_ms () - began >= 250);
    assert (strncmp (out, "HTTP/1.1 503", 12) == 0 && strstr (out, "\"status\":\"unresponsive\""));
    /*  ... and when it answers again, 200. */
    t_request (actor, port, "GET /healthz HTTP/1.1\r\n\r\n", "x 1\n", QMS_STATS_BRIEF, out, sizeof out);
    assert (strncmp (out, "HTTP/1.1 200", 12) == 0 && strstr (out, "{\"status\":\"ok\",\"role\":\"store\"}"));
    /*  HEAD: the head only, with the length the body would have. */
    t_request (actor, port, "HEAD /healthz HTTP/1.1\r\n\r\n", "x 1\n", QMS_STATS_BRIEF, out, sizeof out);
    assert (strncmp (out, "HTTP/1.1 200", 12) == 0 && strstr (out, "\r\n\r\n") [4] == 0);
    assert (strcasestr (out, "content-length: 30\r\n"));

    /*  Without asking the actor: 404, 405 (with Allow). */
    t_request (actor, port, "GET / HTTP/1.1\r\n\r\n", NULL, 0, out, sizeof out);
    assert (strncmp (out, "HTTP/1.1 404 Not Found\r\n", 24) == 0);
    t_request (actor, port, "POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", NULL, 0, out, sizeof out);
    assert (strncmp (out, "HTTP/1.1 405", 12) == 0 && strcasestr (out, "allow: GET, HEAD\r\n"));

    /*  Another role's /readyz, and a silent actor's /metrics. */
    ops_port_destroy (&ops);
    assert (ops == NULL);
    options.role = "router";
    options.database = NULL;
    ops = ops_port_new (&options, err, sizeof err);
    assert (ops);
    port = ops_port_port (ops);
    t_request (actor, port, "GET /readyz HTTP/1.1\r\n\r\n", "qms_sessions 0\n", QMS_STATS_BRIEF, out, sizeof out);
    assert (strncmp (out, "HTTP/1.1 200", 12) == 0 && strstr (out, "\r\n\r\n{\"ready\":true,\"router\":true}"));
    t_request (actor, port, "GET /readyz HTTP/1.1\r\n\r\n", NULL, 0, out, sizeof out);
    assert (strncmp (out, "HTTP/1.1 503", 12) == 0 && strstr (out, "{\"ready\":false,\"router\":false,"));
    t_request (actor, port, "GET /metrics HTTP/1.1\r\n\r\n", NULL, 0, out, sizeof out);
    assert (strncmp (out, "HTTP/1.1 503", 12) == 0 && strstr (out, "# the router actor did not answer"));
    ops_port_destroy (&ops);
    zsock_destroy (&actor);
    if (verbose)
        printf ("OK\n");
}
