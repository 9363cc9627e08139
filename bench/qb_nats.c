/*  =========================================================================
    qb_nats - protocol layer "nats" of qmsbench (--proto nats): the NATS
    client protocol over nats-server's WebSocket listener, for a
    side-by-side comparison with the same payload, window and report
    ========================================================================= */

#define _GNU_SOURCE
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qmsbench.h"

/* ------------------------------------------------------------------------ */
/*  Protocol layer "nats": the NATS client protocol (text lines) in masked
    binary WebSocket frames, against nats-server's websocket listener. Client
    i subscribes to PREFIX.<i> and publishes to PREFIX.<i+1> (--group-size N:
    every member of group k subscribes to PREFIX.g<k> and publishes there,
    with echo off); it is ready
    when the PONG to its first PING says that CONNECT and SUB were done.
    The payload and all the accounting are the same as for "qms". */

static void
nats_send (worker_t *w, client_t *c, const char *s, size_t n)
{
    ws_send (w, c, 0x2, s, n);
}

static void
nats_on_open (worker_t *w, client_t *c)
{
    char buf [256];
    int n;
    if (O.group)
        /*  A group is a subject that its members subscribe to; echo:false,
            so that the server does not send a member its own messages. */
        n = snprintf (buf, sizeof buf,
            "CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false}\r\nSUB %s.g%u 1\r\nPING\r\n",
            O.prefix, group_of (c->idx));
    else
        n = snprintf (buf, sizeof buf,
            "CONNECT {\"verbose\":false,\"pedantic\":false}\r\nSUB %s.%u 1\r\nPING\r\n", O.prefix, c->idx);
    nats_send (w, c, buf, (size_t) n);
    client_flush (w, c);
}

static void
nats_on_ready (worker_t *w, client_t *c, uint64_t now)
{
    SET_STATE (c, CS_ONLINE);
    c->t_online = now;
    w->pending--;
    INC (w->st.login_ok, 1);
    hist_add (&w->st.login, now - c->t_start);
    if (now > w->st.last_online)
        w->st.last_online = now;
    if (!O.idle && !c->rx_bits) {
        c->rx_bits = calloc (G_rxbits / 64, sizeof (uint64_t));
        if (!c->rx_bits) {
            client_die (w, c, "out of memory", -2);
            return;
        }
    }
    /*  Subjects are names: nothing to learn, and no sender id to check. */
    c->self_len = c->tgt_len = c->src_len = 0;
    c->got_ids = true;
    __atomic_store_n (&c->has_tgt, 1, __ATOMIC_RELEASE);
    __atomic_store_n (&c->has_src, 1, __ATOMIC_RELEASE);
    __atomic_store_n (&c->online, 1, __ATOMIC_RELEASE);
    if (phase () == PH_RUN && sender_eligible (c))
        sender_activate (w, c, now);
}

static bool
line_is (const uint8_t *p, size_t n, const char *lit)
{
    size_t l = strlen (lit);
    return n >= l && memcmp (p, lit, l) == 0;
}

/*  Whole protocol units of buf: returns the bytes used, or -1 when the
    client died. */
static long
nats_parse (worker_t *w, client_t *c, const uint8_t *buf, size_t len, uint64_t now)
{
    static const span_t nobody = { "", 0 };
    size_t off = 0;
    bool reply = false;
    while (off < len) {
        const uint8_t *p = buf + off;
        const uint8_t *nl = memchr (p, '\n', len - off);
        if (!nl) {
            if (len - off > 65536) {
                client_die (w, c, "nats: protocol line too long", -2);
                return -1;
            }
            break;
        }
        size_t ll = (size_t) (nl - p), le = ll && p [ll - 1] == '\r'? ll - 1: ll;
        if (line_is (p, le, "MSG ")) {
            /*  MSG <subject> <sid> [reply-to] <#bytes> */
            const uint8_t *e = p + le, *q = e;
            while (q > p && q [-1] != ' ')
                q--;
            uint64_t size = 0;
            if (q == e) {
                client_die (w, c, "nats: bad MSG line", -2);
                return -1;
            }
            for (const uint8_t *d = q; d < e; d++) {
                if (*d < '0' || *d > '9') {
                    client_die (w, c, "nats: bad MSG size", -2);
                    return -1;
                }
                size = size * 10 + (uint64_t) (*d - '0');
            }
            if (size > QB_MAX_FRAME) {
                client_die (w, c, "nats: message too large", -2);
                return -1;
            }
            size_t whole = ll + 1 + (size_t) size + 2;
            if (len - off < whole)
                break;
            span_t msg = { (const char *) nl + 1, (size_t) size };
            if (O.group)
                on_group_message (w, c, msg, now);
            else
                on_chat_message (w, c, nobody, msg, now);
            if (c->state == CS_DEAD)
                return -1;
            off += whole;
            continue;
        }
        if (line_is (p, le, "PING"))
            reply = true;
        else
        if (line_is (p, le, "PONG")) {
            if (c->state == CS_LOGIN) {
                nats_on_ready (w, c, now);
                if (c->state == CS_DEAD)
                    return -1;
            }
        }
        else
        if (line_is (p, le, "-ERR")) {
            INC (w->st.srv_errors, 1);
            errtab_add (&w->st.srv_err, (const char *) p, le, 1);
            if (c->state == CS_LOGIN) {
                char why [160];
                snprintf (why, sizeof why, "nats: %.*s", (int) (le > 120? 120: le), (const char *) p);
                client_die (w, c, why, -2);
                return -1;
            }
        }
        else
        if (!line_is (p, le, "+OK") && !line_is (p, le, "INFO ") && le > 0) {
            INC (w->st.srv_errors, 1);
            errtab_add (&w->st.srv_err, "nats: unknown protocol line", 27, 1);
        }
        off += ll + 1;
    }
    if (reply) {
        INC (w->st.pings, 1);
        nats_send (w, c, "PONG\r\n", 6);
        client_flush (w, c);
        if (c->state == CS_DEAD)
            return -1;
    }
    return (long) off;
}

/*  WebSocket payload bytes: parsed in place; only a partial unit at the end
    is kept (in c->frag) for the next frame. */
void
nats_on_bytes (worker_t *w, client_t *c, const uint8_t *d, size_t n, uint64_t now)
{
    if (c->frag_len) {
        frag_append (w, c, d, n);
        if (c->state == CS_DEAD)
            return;
        long used = nats_parse (w, c, c->frag, c->frag_len, now);
        if (used < 0)
            return;
        memmove (c->frag, c->frag + used, c->frag_len - (size_t) used);
        c->frag_len -= (uint32_t) used;
        return;
    }
    long used = nats_parse (w, c, d, n, now);
    if (used >= 0 && (size_t) used < n)
        frag_append (w, c, d + used, n - (size_t) used);
}

static int
nats_make_template (client_t *c)
{
    if (c->tmpl)
        return 0;
    c->tmpl = malloc (96);
    if (!c->tmpl)
        return -1;
    if (O.group)
        c->tmpl_len = (uint32_t) snprintf (c->tmpl, 96, "PUB %s.g%u ", O.prefix, group_of (c->idx));
    else
        c->tmpl_len = (uint32_t) snprintf (c->tmpl, 96, "PUB %s.%u ", O.prefix, c->tgt);
    return 0;
}

static size_t
nats_message_max (const client_t *c)
{
    return 14 + c->tmpl_len + 24 + bench_payload_max () + 2;
}

/*  PUB <subject> <#bytes>\r\n<payload>\r\n in one masked binary frame: the
    payload is written first (its length depends on the digits), then the
    line before it, then everything moves down behind the frame header. */
static size_t
nats_put_message (worker_t *w, client_t *c, uint8_t *dst, uint64_t seq, uint64_t ts)
{
    uint8_t *pay = dst + 14 + c->tmpl_len + 24;
    size_t pl = bench_payload (pay, c->idx, seq, ts);
    pay [pl] = '\r';
    pay [pl + 1] = '\n';
    char line [96];
    memcpy (line, c->tmpl, c->tmpl_len);
    size_t n = c->tmpl_len;
    n += (size_t) u64_dec (line + n, pl);
    line [n++] = '\r';
    line [n++] = '\n';
    uint8_t *body = pay - n;
    memcpy (body, line, n);
    size_t len = n + pl + 2;
    size_t h = ws_header (w, dst, 0x2, len);
    memmove (dst + h, body, len);
    ws_mask (dst + h, len, dst + h - 4);
    return h + len;
}

const proto_t qb_proto_nats = {
    .name = "nats",
    .start = ws_send_upgrade,
    .on_open = nats_on_open,
    .consume = ws_consume,
    .prepare_sender = nats_make_template,
    .message_max = nats_message_max,
    .put_message = nats_put_message,
    .goodbye = qms_goodbye,
};
