/*  =========================================================================
    qb_conn - the transport of qmsbench: TCP connections on each worker's
    epoll, output through the thread's scratch, and the client side of
    RFC 6455 (upgrade, masked frames, fragments, control frames)

    What arrives goes to the protocol layer through the proto_t table (or,
    for a text frame, straight to qms_on_text / nats_on_bytes).
    ========================================================================= */

#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "qmsbench.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#   define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define WS_GUID         "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* ------------------------------------------------------------------------ */
/*  Output: frames go to the thread's scratch while the client has nothing
    queued; client_flush sends them, keeping only the unsent tail in c->out. */

static int
buf_reserve (uint8_t **buf, uint32_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t ncap = *cap? *cap: 1024;
    while (ncap < need)
        ncap *= 2;
    if (ncap > UINT32_MAX)
        return -1;
    uint8_t *nb = realloc (*buf, ncap);
    if (!nb)
        return -1;
    *buf = nb;
    *cap = (uint32_t) ncap;
    return 0;
}

uint8_t *
out_reserve (worker_t *w, client_t *c, size_t need)
{
    if (c->out_len == 0) {
        if (w->oown != c) {
            if (w->oown)
                client_flush (w, (client_t *) w->oown);
            w->oown = c;
            w->olen = 0;
        }
        if (w->olen + need <= QB_SCRATCH)
            return w->oscr + w->olen;
        client_flush (w, c);
        if (c->state == CS_DEAD)
            return NULL;
        if (c->out_len == 0 && need <= QB_SCRATCH) {
            w->oown = c;
            w->olen = 0;
            return w->oscr;
        }
    }
    if (buf_reserve (&c->out, &c->out_cap, (size_t) c->out_len + need))
        return NULL;
    return c->out + c->out_len;
}

static void
client_want (worker_t *w, client_t *c, uint32_t ev)
{
    if (c->epev == ev || c->fd < 0)
        return;
    struct epoll_event e = { .events = ev, .data.u64 = c->idx };
    if (epoll_ctl (w->ep, EPOLL_CTL_MOD, c->fd, &e) == 0)
        c->epev = ev;
}

/*  Sends what is in the scratch (if it is ours), then the queue. A short
    write queues the rest and asks for EPOLLOUT. */
void
client_flush (worker_t *w, client_t *c)
{
    if (w->oown == c) {
        uint32_t n = w->olen;
        w->oown = NULL;
        w->olen = 0;
        if (n) {
            ssize_t k = 0;
            if (c->out_len == 0 && c->state != CS_CONNECTING) {
                k = send (c->fd, w->oscr, n, MSG_NOSIGNAL);
                if (k < 0) {
                    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                        client_die (w, c, NULL, -1);
                        return;
                    }
                    k = 0;
                }
                INC (w->st.bytes_out, (uint64_t) k);
            }
            if ((uint32_t) k < n) {
                if (buf_reserve (&c->out, &c->out_cap, (size_t) c->out_len + (n - (uint32_t) k))) {
                    client_die (w, c, "out of memory", -2);
                    return;
                }
                memcpy (c->out + c->out_len, w->oscr + k, n - (uint32_t) k);
                c->out_len += n - (uint32_t) k;
            }
        }
    }
    if (c->state == CS_CONNECTING)
        return;             /* the connect completion (EPOLLOUT) flushes */
    while (c->out_len > c->out_off) {
        ssize_t k = send (c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                client_die (w, c, NULL, -1);
                return;
            }
            break;
        }
        INC (w->st.bytes_out, (uint64_t) k);
        c->out_off += (uint32_t) k;
    }
    if (c->out_off == c->out_len) {
        c->out_off = c->out_len = 0;
        /*  Buffers that a one-off burst made big are given back. */
        if (c->out_cap > 4u * 1024 * 1024) {
            free (c->out);
            c->out = NULL;
            c->out_cap = 0;
        }
    }
    client_want (w, c, EPOLLIN | (c->out_len? EPOLLOUT: 0));
}

/* ------------------------------------------------------------------------ */
/*  WebSocket framing (client side: every frame is masked) */

void
ws_mask (uint8_t *d, size_t n, const uint8_t key [4])
{
    uint32_t k4;
    memcpy (&k4, key, 4);
    uint64_t k8 = (uint64_t) k4 | ((uint64_t) k4 << 32);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy (&v, d + i, 8);
        v ^= k8;
        memcpy (d + i, &v, 8);
    }
    for (; i < n; i++)
        d [i] ^= key [i & 3];
}

/*  Writes a masked frame header for a payload of len bytes; returns the
    header length (2..14). The mask key is at dst + header - 4. */
size_t
ws_header (worker_t *w, uint8_t *dst, int opcode, size_t len)
{
    size_t h;
    dst [0] = (uint8_t) (0x80 | opcode);
    if (len < 126) {
        dst [1] = (uint8_t) (0x80 | len);
        h = 2;
    }
    else
    if (len < 65536) {
        dst [1] = 0x80 | 126;
        dst [2] = (uint8_t) (len >> 8);
        dst [3] = (uint8_t) len;
        h = 4;
    }
    else {
        dst [1] = 0x80 | 127;
        for (int i = 0; i < 8; i++)
            dst [2 + i] = (uint8_t) ((uint64_t) len >> (56 - 8 * i));
        h = 10;
    }
    uint32_t key = (uint32_t) xorshift (&w->rng);
    memcpy (dst + h, &key, 4);
    return h + 4;
}

void
ws_send (worker_t *w, client_t *c, int opcode, const void *data, size_t len)
{
    uint8_t *p = out_reserve (w, c, len + 14);
    if (!p) {
        if (c->state != CS_DEAD)
            client_die (w, c, "out of memory", -2);
        return;
    }
    size_t h = ws_header (w, p, opcode, len);
    memcpy (p + h, data, len);
    ws_mask (p + h, len, p + h - 4);
    out_commit (w, c, h + len);
}

static void
ws_key_and_accept (const char *key, char accept [32])
{
    char buf [64];
    unsigned char md [EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    int n = snprintf (buf, sizeof buf, "%s%s", key, WS_GUID);
    EVP_Digest (buf, (size_t) n, md, &mdlen, EVP_sha1 (), NULL);
    EVP_EncodeBlock ((unsigned char *) accept, md, (int) mdlen);
}

static int client_port (const client_t *c) { return O.ports [c->idx % (uint32_t) O.nports]; }

void
ws_send_upgrade (worker_t *w, client_t *c)
{
    unsigned char raw [16];
    if (RAND_bytes (raw, sizeof raw) != 1)
        for (int i = 0; i < 16; i++)
            raw [i] = (unsigned char) xorshift (&w->rng);
    EVP_EncodeBlock ((unsigned char *) c->wskey, raw, 16);
    char req [1024];
    char hostport [96];
    if (O.family == AF_INET6)
        snprintf (hostport, sizeof hostport, "[%s]:%d", O.host, client_port (c));
    else
        snprintf (hostport, sizeof hostport, "%s:%d", O.host, client_port (c));
    int n = snprintf (req, sizeof req,
        "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nUser-Agent: qmsbench/" QB_VERSION "\r\n\r\n",
        O.path, hostport, c->wskey);
    uint8_t *p = out_reserve (w, c, (size_t) n);
    if (!p)
        return;
    memcpy (p, req, (size_t) n);
    out_commit (w, c, (size_t) n);
}

/*  Finds a header value (case-insensitive name) in an HTTP response head. */
static bool
http_header (const char *head, size_t n, const char *name, span_t *val)
{
    size_t nl = strlen (name);
    const char *p = head, *e = head + n;
    while (p < e) {
        const char *eol = memchr (p, '\n', (size_t) (e - p));
        if (!eol)
            eol = e;
        if ((size_t) (eol - p) > nl && strncasecmp (p, name, nl) == 0 && p [nl] == ':') {
            const char *v = p + nl + 1, *ve = eol;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve [-1] == '\r' || ve [-1] == ' ' || ve [-1] == '\t'))
                ve--;
            val->p = v;
            val->n = (size_t) (ve - v);
            return true;
        }
        p = eol + 1;
    }
    return false;
}

/*  Consumes the 101 response: >0 bytes of head consumed, 0 need more, -1 dead. */
static long
ws_upgrade_response (worker_t *w, client_t *c, const uint8_t *buf, size_t len, uint64_t now)
{
    const char *s = (const char *) buf;
    const char *end = NULL;
    for (size_t i = 3; i < len; i++)
        if (s [i] == '\n' && s [i - 1] == '\r' && s [i - 2] == '\n' && s [i - 3] == '\r') {
            end = s + i + 1;
            break;
        }
    if (!end) {
        if (len > QB_HTTP_MAX) {
            client_die (w, c, "upgrade: response head too large", -2);
            return -1;
        }
        return 0;
    }
    size_t hn = (size_t) (end - s);
    char why [96];
    if (hn < 12 || memcmp (s, "HTTP/1.1 101", 12) != 0) {
        snprintf (why, sizeof why, "upgrade: status %.3s", hn >= 12? s + 9: "???");
        client_die (w, c, why, -2);
        return -1;
    }
    char accept [32] = "";
    ws_key_and_accept (c->wskey, accept);
    span_t v;
    if (!http_header (s, hn, "sec-websocket-accept", &v)
        || v.n != strlen (accept) || memcmp (v.p, accept, v.n) != 0) {
        client_die (w, c, "upgrade: bad Sec-WebSocket-Accept", -2);
        return -1;
    }
    c->upgraded = true;
    SET_STATE (c, CS_LOGIN);
    INC (w->st.conn_ok, 1);
    (void) now;
    P->on_open (w, c);
    return (long) hn;
}

void
frag_append (worker_t *w, client_t *c, const uint8_t *d, size_t n)
{
    if ((size_t) c->frag_len + n > QB_MAX_FRAME
        || buf_reserve (&c->frag, &c->frag_cap, (size_t) c->frag_len + n)) {
        client_die (w, c, "fragmented message too large", -2);
        return;
    }
    memcpy (c->frag + c->frag_len, d, n);
    c->frag_len += (uint32_t) n;
}

/*  One complete frame from the server. */
static void
ws_on_frame (worker_t *w, client_t *c, int fin, int op, uint8_t *d, size_t n, uint64_t now)
{
    if (g_nats && op <= 0x2) {
        /*  NATS is a byte stream: frame boundaries mean nothing to it. */
        nats_on_bytes (w, c, d, n, now);
        return;
    }
    switch (op) {
        case 0x1:
        case 0x2:
            if (c->frag_op) {
                client_die (w, c, "protocol: new message inside a fragmented one", 1002);
                return;
            }
            if (fin) {
                if (op == 0x1)
                    qms_on_text (w, c, (const char *) d, n, now);
                else
                    errtab_add (&w->st.srv_err, "binary frame", 12, 1);
                return;
            }
            c->frag_op = (uint8_t) op;
            c->frag_len = 0;
            frag_append (w, c, d, n);
            return;
        case 0x0:
            if (!c->frag_op) {
                client_die (w, c, "protocol: stray continuation frame", 1002);
                return;
            }
            frag_append (w, c, d, n);
            if (fin && c->state != CS_DEAD) {
                int fop = c->frag_op;
                c->frag_op = 0;
                if (fop == 0x1)
                    qms_on_text (w, c, (const char *) c->frag, c->frag_len, now);
                else
                    errtab_add (&w->st.srv_err, "binary frame", 12, 1);
                c->frag_len = 0;
            }
            return;
        case 0x8: {
            int code = n >= 2? (d [0] << 8 | d [1]): 1005;
            uint8_t reply [2] = { (uint8_t) (code >> 8), (uint8_t) code };
            if (code != 1005)
                ws_send (w, c, 0x8, reply, 2);
            client_flush (w, c);
            if (c->state != CS_DEAD)
                client_die (w, c, NULL, code);
            return;
        }
        case 0x9:
            INC (w->st.pings, 1);
            ws_send (w, c, 0xA, d, n);
            client_flush (w, c);
            return;
        case 0xA:
            return;
        default:
            client_die (w, c, "protocol: unknown opcode", 1002);
    }
}

/*  Consumes whole frames (or the upgrade response) from buf; returns the
    bytes consumed, or -1 when the client died. c->need is set to the size
    of an incomplete frame so the reader can size the buffer once. */
long
ws_consume (worker_t *w, client_t *c, uint8_t *buf, size_t len, uint64_t now)
{
    size_t off = 0;
    if (c->state == CS_UPGRADING) {
        long r = ws_upgrade_response (w, c, buf, len, now);
        if (r <= 0)
            return r;
        off = (size_t) r;
    }
    c->need = 0;
    while (off < len) {
        uint8_t *f = buf + off;
        size_t avail = len - off, h = 2;
        if (avail < 2)
            break;
        int fin = f [0] & 0x80, op = f [0] & 0x0f;
        uint64_t pl = f [1] & 0x7f;
        if (pl == 126) {
            if (avail < 4)
                break;
            pl = (uint64_t) f [2] << 8 | f [3];
            h = 4;
        }
        else
        if (pl == 127) {
            if (avail < 10)
                break;
            pl = 0;
            for (int i = 0; i < 8; i++)
                pl = pl << 8 | f [2 + i];
            h = 10;
        }
        const uint8_t *key = NULL;
        if (f [1] & 0x80) {
            if (avail < h + 4)
                break;
            key = f + h;
            h += 4;
        }
        if (pl > QB_MAX_FRAME) {
            client_die (w, c, "protocol: frame too large", 1009);
            return -1;
        }
        if (avail < h + pl) {
            c->need = (uint32_t) (h + pl);
            break;
        }
        uint8_t *d = f + h;
        if (key) {
            uint8_t k [4];
            memcpy (k, key, 4);
            ws_mask (d, (size_t) pl, k);
        }
        ws_on_frame (w, c, fin, op, d, (size_t) pl, now);
        if (c->state == CS_DEAD)
            return -1;
        off += h + (size_t) pl;
    }
    return (long) off;
}

/* ------------------------------------------------------------------------ */
/*  Connections */

static void
conn_fail_reason (worker_t *w, const char *what, int err)
{
    char buf [120];
    int n = snprintf (buf, sizeof buf, "%s: %s", what, strerror (err));
    errtab_add (&w->st.conn_err, buf, (size_t) n, 1);
}

/*  Ends a client. why (a failure text) goes to the connection-failure table
    before login, close_code: >0 a server close frame, 0 EOF, -1 socket
    error (errno), -2 a local decision described by why. */
void
client_die (worker_t *w, client_t *c, const char *why, int close_code)
{
    if (c->state == CS_DEAD)
        return;
    int err = errno;
    bool stopping = phase () == PH_STOP;
    if (!stopping) {
        if (close_code >= 0 || close_code == -1)
            closetab_add (&w->st.closes, close_code, 1);
        char buf [120];
        if (!why) {
            if (close_code > 0)
                snprintf (buf, sizeof buf, "closed by server (code %d)", close_code);
            else
            if (close_code == 0)
                snprintf (buf, sizeof buf, "connection closed (EOF)");
            else
                snprintf (buf, sizeof buf, "socket: %s", strerror (err));
            why = buf;
        }
        if (!c->upgraded) {
            INC (w->st.conn_fail, 1);
            errtab_add (&w->st.conn_err, why, strlen (why), 1);
        }
        else
        if (c->state == CS_LOGIN) {
            INC (w->st.login_fail, 1);
            errtab_add (&w->st.conn_err, why, strlen (why), 1);
        }
    }
    if (c->state >= CS_CONNECTING && c->state <= CS_LOGIN)
        w->pending--;
    if (w->oown == c) {
        w->oown = NULL;
        w->olen = 0;
    }
    if (c->fd >= 0)
        close (c->fd);
    c->fd = -1;
    SET_STATE (c, CS_DEAD);
    c->out_len = c->out_off = 0;
    c->in_len = 0;
    sender_done (w, c);
    __atomic_store_n (&c->dead, 1, __ATOMIC_RELEASE);
    lookup_agent_lost (w, c);
    qms_auth_release (w, c);            /* may start the next waiting login */
}

void
client_start (worker_t *w, client_t *c, uint64_t now)
{
    c->t_start = now;
    if (!w->st.first_start)
        w->st.first_start = now;
    int fd = socket (O.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        INC (w->st.conn_fail, 1);
        conn_fail_reason (w, "socket", errno);
        SET_STATE (c, CS_DEAD);
        __atomic_store_n (&c->dead, 1, __ATOMIC_RELEASE);
        return;
    }
    int one = 1;
    setsockopt (fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (O.nsrc) {
        const struct sockaddr_storage *sa = &O.src [c->idx % (uint32_t) O.nsrc];
        socklen_t sl = sa->ss_family == AF_INET6? sizeof (struct sockaddr_in6): sizeof (struct sockaddr_in);
        if (sa->ss_family == AF_INET)
            setsockopt (fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind (fd, (const struct sockaddr *) sa, sl) < 0) {
            INC (w->st.conn_fail, 1);
            conn_fail_reason (w, "bind", errno);
            close (fd);
            SET_STATE (c, CS_DEAD);
            __atomic_store_n (&c->dead, 1, __ATOMIC_RELEASE);
            return;
        }
    }
    c->fd = fd;
    SET_STATE (c, CS_CONNECTING);
    w->pending++;
    struct sockaddr_storage dst = O.dst;
    if (O.family == AF_INET6)
        ((struct sockaddr_in6 *) &dst)->sin6_port = htons ((uint16_t) client_port (c));
    else
        ((struct sockaddr_in *) &dst)->sin_port = htons ((uint16_t) client_port (c));
    if (connect (fd, (const struct sockaddr *) &dst, O.dst_len) < 0 && errno != EINPROGRESS) {
        char why [120];
        snprintf (why, sizeof why, "connect: %s", strerror (errno));
        client_die (w, c, why, -2);
        return;
    }
    struct epoll_event e = { .events = EPOLLOUT | EPOLLIN, .data.u64 = c->idx };
    c->epev = e.events;
    if (epoll_ctl (w->ep, EPOLL_CTL_ADD, fd, &e) < 0) {
        char why [120];
        snprintf (why, sizeof why, "epoll_ctl: %s", strerror (errno));
        client_die (w, c, why, -2);
        return;
    }
    P->start (w, c);                    /* queued until the connect completes */
}

static void
client_connected (worker_t *w, client_t *c)
{
    int err = 0;
    socklen_t l = sizeof err;
    if (getsockopt (c->fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0)
        err = errno;
    if (err) {
        char buf [120];
        snprintf (buf, sizeof buf, "connect: %s", strerror (err));
        client_die (w, c, buf, -2);
        return;
    }
    SET_STATE (c, CS_UPGRADING);
    client_flush (w, c);
}

/*  Reads what the socket has: into the thread scratch (so idle connections
    hold no buffer), or straight into the client's buffer for a big frame. */
static void
client_read (worker_t *w, client_t *c)
{
    for (int round = 0; round < 4 && c->state != CS_DEAD; round++) {
        bool direct = c->in_len > 0 && (c->need > QB_SCRATCH / 2 || c->in_len > QB_SCRATCH / 2);
        uint8_t *buf;
        size_t len = c->in_len, cap;
        if (direct) {
            size_t want = (size_t) c->in_len + 65536;
            if (c->need > want)
                want = c->need;
            if (buf_reserve (&c->in, &c->in_cap, want)) {
                client_die (w, c, "out of memory", -2);
                return;
            }
            buf = c->in;
            cap = c->in_cap;
        }
        else {
            if (len)
                memcpy (w->iscr, c->in, len);
            buf = w->iscr;
            cap = QB_SCRATCH;
        }
        ssize_t n = recv (c->fd, buf + len, cap - len, 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                return;
            client_die (w, c, NULL, -1);
            return;
        }
        if (n == 0) {
            client_die (w, c, NULL, 0);
            return;
        }
        INC (w->st.bytes_in, (uint64_t) n);
        size_t room = cap - len;
        len += (size_t) n;
        long used = P->consume (w, c, buf, len, now_ns ());
        if (used < 0)
            return;
        size_t rest = len - (size_t) used;
        if (direct) {
            memmove (c->in, c->in + used, rest);
            c->in_len = (uint32_t) rest;
            if (rest == 0 && c->in_cap > 1024 * 1024) {
                free (c->in);
                c->in = NULL;
                c->in_cap = 0;
            }
        }
        else {
            if (rest && buf_reserve (&c->in, &c->in_cap, rest < 4096? 4096: rest)) {
                client_die (w, c, "out of memory", -2);
                return;
            }
            if (rest)
                memcpy (c->in, buf + used, rest);
            c->in_len = (uint32_t) rest;
        }
        if ((size_t) n < room)
            return;                     /* drained the socket */
    }
}

void
client_event (worker_t *w, client_t *c, uint32_t ev)
{
    if (c->state == CS_DEAD)
        return;
    if (c->state == CS_CONNECTING) {
        if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            client_connected (w, c);
        return;
    }
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP))
        client_read (w, c);
    if (c->state != CS_DEAD && (ev & EPOLLOUT))
        client_flush (w, c);
}
