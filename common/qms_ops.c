/*  qms_ops.c - the operations port of a store, auth or router process
    (see qms_ops.h).

    One thread, one zmq_poll over the DEALER socket to the actor, a pipe
    that says stop, the listening socket and at most MAX_CLIENTS
    connections.  A connection is read (at most REQUEST_MAX bytes, within
    IO_TIMEOUT_MS), answered (after the actor's QMS_STATS, or its
    timeout), written, and closed.
*/
#define _GNU_SOURCE             /* memmem, accept4, pipe2 */
#include "qms_ops.h"
#include "qms_actor.h"
#include "qms_json.h"
#include "qms_curve.h"
#include "qms_log.h"
#include "qms_metrics.h"
#include "qms_msg.h"
#include "qms_util.h"

#include <arpa/inet.h>
#include <assert.h>
#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define ACTOR           "ops"
#define MAX_CLIENTS     16
#define REQUEST_MAX     8192
#define IO_TIMEOUT_MS   5000

typedef enum { C_FREE = 0, C_READ, C_WAIT, C_WRITE } client_state_t;
typedef enum { ASK_HEALTHZ, ASK_READYZ, ASK_METRICS } ask_t;

typedef struct {
    int fd;
    client_state_t state;
    uint64_t deadline;          /* monotonic ms: of the state it is in */
    char in [REQUEST_MAX + 1];
    size_t in_len;
    ask_t ask;
    bool head_only;
    uint64_t req;
    qms_buf_t out;
    size_t sent;
} client_t;

struct _qms_ops_t {
    char role [16];
    char endpoint [300];
    char database [1200];
    char version [32];
    int timeout_ms;
    int port;
    int listen_fd;
    int wake [2];               /* a byte on wake [1] stops the thread */
    pthread_t thread;
    bool started;
    /* the thread's own */
    zsock_t *dealer;
    uint64_t next_req;
    client_t clients [MAX_CLIENTS];
};

/* ------------------------------------------------------------------------ */
/*  Responses. */

#define APPEND_LIT(out, lit) qms_buf_append (out, lit, sizeof (lit) - 1)

static void
json_bool (qms_buf_t *out, const char *key, bool value)
{
    APPEND_LIT (out, ",");
    qms_json_string (out, key, strlen (key), 0);
    if (value)
        APPEND_LIT (out, ":true");
    else
        APPEND_LIT (out, ":false");
}

static void
json_reason (qms_buf_t *out, const char *reason)
{
    if (reason) {
        APPEND_LIT (out, ",\"reason\":");
        qms_json_string (out, reason, strlen (reason), 0);
    }
}

int
qms_ops_health_json (qms_buf_t *out, const char *role, bool ok, long connections, const char *reason)
{
    if (ok)
        APPEND_LIT (out, "{\"status\":\"ok\",\"role\":");
    else
        APPEND_LIT (out, "{\"status\":\"unresponsive\",\"role\":");
    qms_json_string (out, role, strlen (role), 0);
    if (connections >= 0) {
        char n [32];
        qms_buf_append (out, n, (size_t) snprintf (n, sizeof n, ",\"connections\":%ld", connections));
    }
    json_reason (out, ok ? NULL : reason);
    APPEND_LIT (out, "}");
    return ok ? 200 : 503;
}

int
qms_ops_ready_json (qms_buf_t *out, const qms_ops_check_t *checks, int count,
                    int database_writable, const char *database, const char *reason)
{
    bool ready = !reason && database_writable != 0;
    for (int i = 0; i < count; i++)
        ready = ready && checks [i].ok;
    if (ready)
        APPEND_LIT (out, "{\"ready\":true");
    else
        APPEND_LIT (out, "{\"ready\":false");
    for (int i = 0; i < count; i++)
        json_bool (out, checks [i].name, checks [i].ok);
    if (database_writable >= 0)
        json_bool (out, "database_writable", database_writable == 1);
    if (database) {
        APPEND_LIT (out, ",\"database\":");
        qms_json_string (out, database, strlen (database), 0);
    }
    json_reason (out, reason);
    APPEND_LIT (out, "}");
    return ready ? 200 : 503;
}

static void
respond (client_t *c, int status, const char *type, const char *body, size_t len)
{
    char head [512];
    int n = snprintf (head, sizeof head, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                      "Cache-Control: no-store\r\nConnection: close\r\n%s\r\n", status,
                      qms_http_reason (status), type, len,
                      status == 405 ? "Allow: GET, HEAD\r\n" : "");
    qms_buf_reset (&c->out);
    qms_buf_append (&c->out, head, (size_t) n);
    if (!c->head_only)
        qms_buf_append (&c->out, body, len);
    c->sent = 0;
    c->state = C_WRITE;
    c->deadline = qms_mono_ms () + IO_TIMEOUT_MS;
}

static void
respond_text (client_t *c, int status, const char *text)
{
    respond (c, status, "text/plain; charset=utf-8", text, strlen (text));
}

/*  The actor answered (text) or not (NULL). */
static void
answer (qms_ops_t *self, client_t *c, const char *text, size_t len)
{
    char json [200];
    bool up = text != NULL;
    if (c->ask == ASK_METRICS) {
        if (!up) {
            snprintf (json, sizeof json, "# the %s actor did not answer within %d ms\n",
                      self->role, self->timeout_ms);
            respond_text (c, 503, json);
            return;
        }
        qms_buf_t body;
        qms_buf_init (&body);
        char labels [64];
        snprintf (labels, sizeof labels, "version=\"%s\"", self->version);
        qms_metrics_head (&body, "qms_build_info", "gauge", "Version of the server.");
        qms_metrics_value (&body, "qms_build_info", labels, 1);
        qms_buf_append (&body, text, len);
        respond (c, 200, "text/plain; version=0.0.4; charset=utf-8", (const char *) body.data, body.len);
        qms_buf_free (&body);
        return;
    }
    char reason [160];
    snprintf (reason, sizeof reason, "the %s actor did not answer within %d ms", self->role,
              self->timeout_ms);
    qms_buf_t body;
    qms_buf_init (&body);
    int status;
    if (c->ask == ASK_HEALTHZ)
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
    respond (c, status, "application/json", (const char *) body.data, body.len);
    qms_buf_free (&body);
}

/* ------------------------------------------------------------------------ */
/*  Requests. */

/*  A whole request head is in: what does it ask? */
static void
on_request (qms_ops_t *self, client_t *c)
{
    char method [16], target [256];
    char *line_end = strpbrk (c->in, "\r\n");
    *line_end = 0;
    char *sp1 = strchr (c->in, ' ');
    char *sp2 = sp1 ? strchr (sp1 + 1, ' ') : NULL;
    if (!sp1 || !sp2 || sp1 == c->in || (size_t) (sp1 - c->in) >= sizeof method
    ||  (size_t) (sp2 - sp1 - 1) >= sizeof target || sp2 == sp1 + 1
    ||  strncmp (sp2 + 1, "HTTP/1.", 7) != 0) {
        respond_text (c, 400, "400 Bad Request\n");
        return;
    }
    memcpy (method, c->in, (size_t) (sp1 - c->in));
    method [sp1 - c->in] = 0;
    memcpy (target, sp1 + 1, (size_t) (sp2 - sp1 - 1));
    target [sp2 - sp1 - 1] = 0;
    target [strcspn (target, "?")] = 0;
    c->head_only = strcmp (method, "HEAD") == 0;
    if (strcmp (method, "GET") && !c->head_only) {
        respond_text (c, 405, "405 Method Not Allowed: this port answers GET\n");
        return;
    }
    if (strcmp (target, "/metrics") == 0)
        c->ask = ASK_METRICS;
    else
    if (strcmp (target, "/healthz") == 0)
        c->ask = ASK_HEALTHZ;
    else
    if (strcmp (target, "/readyz") == 0)
        c->ask = ASK_READYZ;
    else {
        respond_text (c, 404, "404 Not Found: this port serves /metrics, /healthz and /readyz\n");
        return;
    }
    c->req = ++self->next_req | (c->ask == ASK_METRICS ? 0 : QMS_STATS_BRIEF);
    qms_rec_t ask = { .type = QMS_STATS_GET, .req = c->req };
    c->state = C_WAIT;
    c->deadline = qms_mono_ms () + (uint64_t) self->timeout_ms;
    if (qms_rec_send (zsock_resolve (self->dealer), NULL, 0, &ask))
        answer (self, c, NULL, 0);
}

static void
client_close (client_t *c)
{
    /*  Whatever the client still sent (a body we did not want) is read
        first, so that closing does not reset the connection under the
        answer. */
    char junk [1024];
    while (read (c->fd, junk, sizeof junk) > 0)
        ;
    close (c->fd);
    c->fd = -1;
    c->state = C_FREE;
}

static void
on_readable (qms_ops_t *self, client_t *c)
{
    ssize_t r = read (c->fd, c->in + c->in_len, REQUEST_MAX - c->in_len);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
        client_close (c);
        return;
    }
    if (r < 0)
        return;
    c->in_len += (size_t) r;
    c->in [c->in_len] = 0;
    if (strstr (c->in, "\r\n\r\n") || strstr (c->in, "\n\n"))
        on_request (self, c);
    else
    if (c->in_len == REQUEST_MAX)
        respond_text (c, 431, "431 Request Header Fields Too Large\n");
}

static void
on_writable (client_t *c)
{
    ssize_t w = send (c->fd, c->out.data + c->sent, c->out.len - c->sent, MSG_NOSIGNAL);
    if (w < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (w < 0) {
        client_close (c);
        return;
    }
    c->sent += (size_t) w;
    if (c->sent == c->out.len) {
        shutdown (c->fd, SHUT_WR);
        client_close (c);
    }
}

static void
on_accept (qms_ops_t *self)
{
    int fd = accept4 (self->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
        return;
    for (int i = 0; i < MAX_CLIENTS; i++) {
        client_t *c = &self->clients [i];
        if (c->state == C_FREE) {
            c->fd = fd;
            c->state = C_READ;
            c->in_len = 0;
            c->in [0] = 0;
            c->head_only = false;
            c->deadline = qms_mono_ms () + IO_TIMEOUT_MS;
            return;
        }
    }
    close (fd);                 /* not polled for while every slot is taken */
}

static void
on_actor (qms_ops_t *self)
{
    void *sock = zsock_resolve (self->dealer);
    for (int i = 0; i < 64; i++) {
        zmq_msg_t body;
        zmq_msg_init (&body);
        int rc = qms_batch_recv (sock, NULL, NULL, &body);
        if (rc == 1) {
            const uint8_t *data = (const uint8_t *) zmq_msg_data (&body);
            size_t size = zmq_msg_size (&body), offset = 0;
            qms_rec_t rec;
            if (!qms_batch_valid (data, size, QMS_ROLE_OPS, NULL))
                size = 0;               /* malformed, or not for us: ignored whole */
            while (qms_rec_next (data, size, &offset, &rec) == 1) {
                if (rec.type != QMS_STATS || rec.req == 0)
                    continue;
                for (int k = 0; k < MAX_CLIENTS; k++) {
                    client_t *c = &self->clients [k];
                    if (c->state == C_WAIT && c->req == rec.req)
                        answer (self, c, rec.s [0].ptr ? rec.s [0].ptr : "", rec.s [0].len);
                }
            }
        }
        zmq_msg_close (&body);
        if (rc == 0)
            break;
    }
}

static void
expire (qms_ops_t *self)
{
    uint64_t now = qms_mono_ms ();
    for (int i = 0; i < MAX_CLIENTS; i++) {
        client_t *c = &self->clients [i];
        if (c->state == C_FREE || c->deadline > now)
            continue;
        if (c->state == C_WAIT)
            answer (self, c, NULL, 0);
        else
        if (c->state == C_READ && c->in_len) {
            c->head_only = false;
            respond_text (c, 408, "408 Request Timeout\n");
        }
        else
            client_close (c);
    }
}

static void *
run (void *arg)
{
    qms_ops_t *self = (qms_ops_t *) arg;
    void *sock = zsock_resolve (self->dealer);
    while (true) {
        zmq_pollitem_t items [3 + MAX_CLIENTS];
        client_t *owners [3 + MAX_CLIENTS];
        int n = 0, busy = 0;
        items [n++] = (zmq_pollitem_t) { sock, 0, ZMQ_POLLIN, 0 };
        items [n++] = (zmq_pollitem_t) { NULL, self->wake [0], ZMQ_POLLIN, 0 };
        uint64_t now = qms_mono_ms (), next = now + 1000;
        for (int i = 0; i < MAX_CLIENTS; i++) {
            client_t *c = &self->clients [i];
            if (c->state == C_FREE)
                continue;
            busy++;
            if (c->deadline < next)
                next = c->deadline;
            if (c->state == C_WAIT)
                continue;
            owners [n] = c;
            items [n++] = (zmq_pollitem_t) { NULL, c->fd, c->state == C_READ ? ZMQ_POLLIN : ZMQ_POLLOUT, 0 };
        }
        int listen_at = -1;
        if (busy < MAX_CLIENTS) {
            listen_at = n;
            items [n++] = (zmq_pollitem_t) { NULL, self->listen_fd, ZMQ_POLLIN, 0 };
        }
        long wait = next > now ? (long) (next - now) : 0;
        if (zmq_poll (items, n, wait) < 0 && errno != EINTR)
            break;
        if (items [1].revents)
            break;
        if (items [0].revents & ZMQ_POLLIN)
            on_actor (self);
        for (int i = 2; i < n; i++) {
            if (!items [i].revents)
                continue;
            if (i == listen_at)
                on_accept (self);
            else
            if (owners [i]->state == C_READ)
                on_readable (self, owners [i]);
            else
            if (owners [i]->state == C_WRITE)
                on_writable (owners [i]);
        }
        expire (self);
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/*  Set-up. */

static int
listen_on (const char *address, int port, int *bound_port, char *err, size_t err_size)
{
    struct sockaddr_storage ss;
    memset (&ss, 0, sizeof ss);
    socklen_t len;
    int family;
    bool any = !address || !address [0];
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *) &ss;
    struct sockaddr_in *v4 = (struct sockaddr_in *) &ss;
    if (any || strchr (address, ':')) {
        family = AF_INET6;
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons ((uint16_t) port);
        v6->sin6_addr = in6addr_any;
        len = sizeof *v6;
        if (!any && inet_pton (AF_INET6, address, &v6->sin6_addr) != 1) {
            snprintf (err, err_size, "--bind '%s' is not an IP address", address);
            return -1;
        }
    }
    else {
        family = AF_INET;
        v4->sin_family = AF_INET;
        v4->sin_port = htons ((uint16_t) port);
        len = sizeof *v4;
        if (inet_pton (AF_INET, address, &v4->sin_addr) != 1) {
            snprintf (err, err_size, "--bind '%s' is not an IP address", address);
            return -1;
        }
    }
    int fd = socket (family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 && any && errno == EAFNOSUPPORT) {
        /*  No IPv6 here: every IPv4 interface then. */
        family = AF_INET;
        memset (&ss, 0, sizeof ss);
        v4->sin_family = AF_INET;
        v4->sin_port = htons ((uint16_t) port);
        v4->sin_addr.s_addr = htonl (INADDR_ANY);
        len = sizeof *v4;
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

int
qms_ops_local_endpoint (const char *bound, char *out, size_t out_size)
{
    if (strncmp (bound, "tcp://", 6)) {
        snprintf (out, out_size, "%s", bound);
        return strlen (bound) < out_size ? 0 : -1;
    }
    const char *host = bound + 6;
    const char *colon = strrchr (host, ':');
    if (!colon || strcmp (colon + 1, "*") == 0)
        return -1;
    char name [IF_NAMESIZE + 1];
    size_t host_len = (size_t) (colon - host);
    struct in_addr ipv4;
    char literal [64];
    if (host_len < sizeof literal) {
        memcpy (literal, host, host_len);
        literal [host_len] = 0;
        if (inet_pton (AF_INET, literal, &ipv4) == 1 || literal [0] == '[') {
            snprintf (out, out_size, "%s", bound);
            return strlen (bound) < out_size ? 0 : -1;
        }
    }
    if (host_len == 1 && host [0] == '*')
        return snprintf (out, out_size, "tcp://127.0.0.1%s", colon) < (int) out_size ? 0 : -1;
    if (host_len >= sizeof name)
        return -1;
    memcpy (name, host, host_len);
    name [host_len] = 0;
    /*  An interface: its IPv4 address. */
    struct ifaddrs *list = NULL, *i;
    int rc = -1;
    if (getifaddrs (&list))
        return -1;
    for (i = list; i; i = i->ifa_next)
        if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET && strcmp (i->ifa_name, name) == 0) {
            char address [INET_ADDRSTRLEN];
            inet_ntop (AF_INET, &((struct sockaddr_in *) i->ifa_addr)->sin_addr, address, sizeof address);
            rc = snprintf (out, out_size, "tcp://%s%s", address, colon) < (int) out_size ? 0 : -1;
            break;
        }
    freeifaddrs (list);
    return rc;
}

qms_ops_t *
qms_ops_new (const qms_ops_options_t *options, char *err, size_t err_size)
{
    qms_ops_t *self = (qms_ops_t *) calloc (1, sizeof *self);
    if (!self) {
        snprintf (err, err_size, "out of memory");
        return NULL;
    }
    self->listen_fd = self->wake [0] = self->wake [1] = -1;
    for (int i = 0; i < MAX_CLIENTS; i++) {
        self->clients [i].fd = -1;
        qms_buf_init (&self->clients [i].out);
    }
    snprintf (self->role, sizeof self->role, "%s", options->role);
    snprintf (self->endpoint, sizeof self->endpoint, "%s", options->endpoint);
    snprintf (self->database, sizeof self->database, "%s", options->database ? options->database : "");
    snprintf (self->version, sizeof self->version, "%s", options->version ? options->version : "");
    self->timeout_ms = options->timeout_ms > 0 ? options->timeout_ms : 2000;
    self->listen_fd = listen_on (options->bind_address, options->port, &self->port, err, err_size);
    if (self->listen_fd < 0) {
        qms_ops_destroy (&self);
        return NULL;
    }
    if (pipe2 (self->wake, O_CLOEXEC | O_NONBLOCK)) {
        snprintf (err, err_size, "no pipe: %s", strerror (errno));
        qms_ops_destroy (&self);
        return NULL;
    }
    /*  The socket is made here and used only by the thread from now on
        (a ZeroMQ socket may move to another thread with a full barrier,
        which pthread_create is). */
    self->dealer = zsock_new (ZMQ_DEALER);
    if (!self->dealer || (qms_socket_tune (self->dealer),
                          qms_curve_connect (self->dealer, self->endpoint))) {
        snprintf (err, err_size, "cannot connect to %s", self->endpoint);
        qms_ops_destroy (&self);
        return NULL;
    }
    if (pthread_create (&self->thread, NULL, run, self)) {
        snprintf (err, err_size, "cannot start a thread");
        qms_ops_destroy (&self);
        return NULL;
    }
    self->started = true;
    qms_info (ACTOR, "event=listening role=%s port=%d bind=%s actor=%s", self->role, self->port,
              options->bind_address && options->bind_address [0] ? options->bind_address : "*",
              self->endpoint);
    return self;
}

void
qms_ops_destroy (qms_ops_t **self_p)
{
    qms_ops_t *self = *self_p;
    if (!self)
        return;
    *self_p = NULL;
    if (self->started) {
        if (write (self->wake [1], "x", 1) != 1)
            qms_warn (ACTOR, "event=stop_failed");
        pthread_join (self->thread, NULL);
    }
    for (int i = 0; i < MAX_CLIENTS; i++) {
        if (self->clients [i].state != C_FREE)
            close (self->clients [i].fd);
        qms_buf_free (&self->clients [i].out);
    }
    zsock_destroy (&self->dealer);
    if (self->listen_fd >= 0)
        close (self->listen_fd);
    if (self->wake [0] >= 0) {
        close (self->wake [0]);
        close (self->wake [1]);
    }
    free (self);
}

int
qms_ops_port (const qms_ops_t *self)
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

/*  The whole answer, up to the server's close. */
static void
t_read_all (int fd, char *out, size_t size)
{
    size_t got = 0;
    ssize_t r;
    while (got + 1 < size && (r = read (fd, out + got, size - 1 - got)) > 0)
        got += (size_t) r;
    out [got] = 0;
    close (fd);
}

/*  Send a request; the fake actor answers the STATS_GET it causes with
    text (NULL: it stays silent); returns the HTTP answer. */
static void
t_request (zsock_t *actor, int port, const char *request, const char *text, uint64_t want_brief,
           char *out, size_t size)
{
    int fd = t_connect (port);
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
        qms_rec_t reply = { .type = QMS_STATS, .req = rec.req, .s = { qms_str (text) } };
        assert (qms_rec_send (sock, id, id_len, &reply) == 0);
        zmq_msg_close (&body);
    }
    t_read_all (fd, out, size);
    /*  What a silent actor was asked is dropped, so the next request's
        ask is the first in the queue. */
    zmq_msg_t junk;
    zmq_msg_init (&junk);
    while (zmq_msg_recv (&junk, zsock_resolve (actor), ZMQ_DONTWAIT) >= 0)
        ;
    zmq_msg_close (&junk);
}

/*  b holds exactly expected; b is emptied. */
static bool
t_body_is (qms_buf_t *b, const char *expected)
{
    bool same = b->len == strlen (expected) && memcmp (b->data, expected, b->len) == 0;
    if (!same)
        fprintf (stderr, "\nexpected %s\n     got %.*s\n", expected, (int) b->len, b->data);
    qms_buf_reset (b);
    return same;
}

void
qms_ops_test (bool verbose)
{
    if (verbose)
        printf (" * qms_ops: ");
    char err [256], out [8192], endpoint [256];

    /*  The bodies, exactly (the gateway answers with the same). */
    qms_buf_t b;
    qms_buf_init (&b);
    assert (qms_ops_health_json (&b, "gateway", true, 3, "unused") == 200);
    assert (t_body_is (&b, "{\"status\":\"ok\",\"role\":\"gateway\",\"connections\":3}"));
    assert (qms_ops_health_json (&b, "auth", false, -1, "the \"auth\" actor is slow") == 503);
    assert (t_body_is (&b, "{\"status\":\"unresponsive\",\"role\":\"auth\",\"reason\":\"the \\\"auth\\\" actor is slow\"}"));
    qms_ops_check_t checks [] = { { "router", true }, { "store", true } };
    assert (qms_ops_ready_json (&b, checks, 2, -1, NULL, NULL) == 200);
    assert (t_body_is (&b, "{\"ready\":true,\"router\":true,\"store\":true}"));
    assert (qms_ops_ready_json (&b, checks, 2, 0, "/d/users.db", "database is read-only") == 503);
    assert (t_body_is (&b, "{\"ready\":false,\"router\":true,\"store\":true,\"database_writable\":false,"
                           "\"database\":\"/d/users.db\",\"reason\":\"database is read-only\"}"));
    checks [1].ok = false;                          /* one check down: not ready */
    assert (qms_ops_ready_json (&b, checks, 2, 1, NULL, NULL) == 503);
    assert (t_body_is (&b, "{\"ready\":false,\"router\":true,\"store\":false,\"database_writable\":true}"));
    qms_buf_free (&b);

    /*  Endpoints for a socket in the same process. */
    assert (qms_ops_local_endpoint ("tcp://*:5555", endpoint, sizeof endpoint) == 0);
    assert (streq (endpoint, "tcp://127.0.0.1:5555"));
    assert (qms_ops_local_endpoint ("tcp://lo:5555", endpoint, sizeof endpoint) == 0);
    assert (streq (endpoint, "tcp://127.0.0.1:5555"));
    assert (qms_ops_local_endpoint ("tcp://10.1.2.3:7", endpoint, sizeof endpoint) == 0);
    assert (streq (endpoint, "tcp://10.1.2.3:7"));
    assert (qms_ops_local_endpoint ("ipc:///tmp/x", endpoint, sizeof endpoint) == 0);
    assert (streq (endpoint, "ipc:///tmp/x"));
    assert (qms_ops_local_endpoint ("tcp://127.0.0.1:*", endpoint, sizeof endpoint) == -1);
    assert (qms_ops_local_endpoint ("tcp://no-such-if0:7", endpoint, sizeof endpoint) == -1);

    /*  A bind address that is none. */
    qms_ops_options_t bad = { .role = "auth", .endpoint = "inproc://qms-ops-test",
                              .bind_address = "not-an-address", .port = 0 };
    assert (qms_ops_new (&bad, err, sizeof err) == NULL && strstr (err, "not an IP address"));

    zsock_t *actor = zsock_new (ZMQ_ROUTER);
    assert (actor && zsock_bind (actor, "inproc://qms-ops-test") == 0);
    qms_ops_options_t options = { .role = "store", .endpoint = "inproc://qms-ops-test",
                                  .bind_address = "127.0.0.1", .port = 0,
                                  .database = "/data/users\"x.db", .version = "9.9",
                                  .timeout_ms = 300 };
    qms_ops_t *ops = qms_ops_new (&options, err, sizeof err);
    assert (ops && qms_ops_port (ops) > 0);
    int port = qms_ops_port (ops);

    /*  The port is taken now. */
    qms_ops_options_t twice = options;
    twice.port = port;
    assert (qms_ops_new (&twice, err, sizeof err) == NULL && strstr (err, "cannot listen"));

    /*  /metrics: the build line, then the actor's figures. */
    t_request (actor, port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
               "# TYPE qms_store_writable gauge\nqms_store_writable 1\n", 0, out, sizeof out);
    assert (strncmp (out, "HTTP/1.1 200 OK\r\n", 17) == 0);
    assert (strstr (out, "Content-Type: text/plain; version=0.0.4"));
    assert (strstr (out, "\r\n\r\n# HELP qms_build_info"));
    assert (strstr (out, "qms_build_info{version=\"9.9\"} 1\n# TYPE qms_store_writable gauge\nqms_store_writable 1\n"));

    /*  /readyz: writable, then read-only; a probe asks for the brief figures. */
    t_request (actor, port, "GET /readyz HTTP/1.1\r\n\r\n", "qms_store_writable 1\n",
               QMS_STATS_BRIEF, out, sizeof out);
    assert (strncmp (out, "HTTP/1.1 200 OK\r\n", 17) == 0);
    assert (strstr (out, "{\"ready\":true,\"store\":true,\"database_writable\":true,"
                         "\"database\":\"/data/users\\\"x.db\"}"));
    t_request (actor, port, "GET /readyz?verbose HTTP/1.0\r\n\r\n", "qms_store_writable 0\n",
               QMS_STATS_BRIEF, out, sizeof out);
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
    /*  HEAD: the head only. */
    t_request (actor, port, "HEAD /healthz HTTP/1.1\r\n\r\n", "x 1\n", QMS_STATS_BRIEF, out, sizeof out);
    assert (strncmp (out, "HTTP/1.1 200", 12) == 0 && strstr (out, "\r\n\r\n") [4] == 0);

    /*  Without asking the actor: 404, 405, 400, 431. */
    t_request (actor, port, "GET / HTTP/1.1\r\n\r\n", NULL, 0, out, sizeof out);
    assert (strncmp (out, "HTTP/1.1 404 Not Found\r\n", 24) == 0);
    t_request (actor, port, "POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", NULL, 0, out, sizeof out);
    assert (strncmp (out, "HTTP/1.1 405", 12) == 0 && strstr (out, "Allow: GET, HEAD\r\n"));
    t_request (actor, port, "BREW\r\n\r\n", NULL, 0, out, sizeof out);
    assert (strncmp (out, "HTTP/1.1 400", 12) == 0);
    char *big = (char *) malloc (REQUEST_MAX + 100);
    assert (big);
    memcpy (big, "GET /metrics HTTP/1.1\r\nX: ", 26);
    memset (big + 26, 'a', REQUEST_MAX + 100 - 27);
    big [REQUEST_MAX + 99] = 0;
    t_request (actor, port, big, NULL, 0, out, sizeof out);
    free (big);
    assert (strncmp (out, "HTTP/1.1 431", 12) == 0);

    /*  Another role's /readyz, and a silent actor's /metrics. */
    qms_ops_destroy (&ops);
    assert (ops == NULL);
    options.role = "router";
    options.database = NULL;
    ops = qms_ops_new (&options, err, sizeof err);
    assert (ops);
    port = qms_ops_port (ops);
    t_request (actor, port, "GET /readyz HTTP/1.1\r\n\r\n", "qms_sessions 0\n", QMS_STATS_BRIEF, out, sizeof out);
    assert (strncmp (out, "HTTP/1.1 200", 12) == 0 && strstr (out, "\r\n\r\n{\"ready\":true,\"router\":true}"));
    t_request (actor, port, "GET /readyz HTTP/1.1\r\n\r\n", NULL, 0, out, sizeof out);
    assert (strncmp (out, "HTTP/1.1 503", 12) == 0 && strstr (out, "{\"ready\":false,\"router\":false,"));
    t_request (actor, port, "GET /metrics HTTP/1.1\r\n\r\n", NULL, 0, out, sizeof out);
    assert (strncmp (out, "HTTP/1.1 503", 12) == 0 && strstr (out, "# the router actor did not answer"));
    qms_ops_destroy (&ops);
    zsock_destroy (&actor);
    if (verbose)
        printf ("OK\n");
}
