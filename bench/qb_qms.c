/*  =========================================================================
    qb_qms - protocol layer "qms" of qmsbench: QMessageServer JSON over
    WebSocket (docs: PROTOCOL.md)

    Register or log in (or resume a session), learn ids from user lists or
    by UserLookupRequest, build MessageRequests, and read every event the
    server sends: messages, acks, errors. The core reaches it through
    qb_proto_qms and the few functions that qmsbench.h declares.
    ========================================================================= */

#define _GNU_SOURCE
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "qmsbench.h"

/* ------------------------------------------------------------------------ */
/*  Protocol layer "qms": QMessageServer JSON over WebSocket (RFC 6455 above,
    ws_*). qms_on_open runs after the upgrade, qms_on_text parses one event;
    the table at the end of this section is what the core sees. */

const char *
prefix_name (uint32_t idx, char *buf, size_t cap)
{
    snprintf (buf, cap, "%s%u", O.prefix, idx);
    return buf;
}

/*  Password: SHA-256 hex of "bench-" + name, like the web client hashes. */
static void
bench_password (const char *name, char hex [65])
{
    char in [128];
    unsigned char md [EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    int l = snprintf (in, sizeof in, "bench-%s", name);
    EVP_Digest (in, (size_t) l, md, &n, EVP_sha256 (), NULL);
    for (unsigned i = 0; i < n && i < 32; i++)
        snprintf (hex + 2 * i, 3, "%02x", md [i]);
    hex [64] = 0;
}

/*  ,"presence":"..." for the modes that are not the default (and none at
    all for "full", so that the original server gets the original request). */
static const char *
qms_presence_field (void)
{
    return O.presence == PRES_NONE? ",\"presence\":\"none\"":
           O.presence == PRES_DELTA? ",\"presence\":\"delta\"": "";
}

static void
qms_send_auth (worker_t *w, client_t *c, int action)
{
    char name [96], pw [65], req [512];
    prefix_name (c->idx, name, sizeof name);
    bench_password (name, pw);
    int n = snprintf (req, sizeof req,
        "{\"action\":%d,\"name\":\"%s\",\"password\":\"%s\",\"pubKey\":\"\"%s}",
        action, name, pw, qms_presence_field ());
    ws_send (w, c, 0x1, req, (size_t) n);
    client_flush (w, c);
}

/*  --resume: the session of the login before, on a new connection. */
static void
qms_send_authorize (worker_t *w, client_t *c)
{
    char req [QB_TOKMAX + 96];
    int n = snprintf (req, sizeof req, "{\"action\":4,\"token\":\"%.*s\"%s}",
                      (int) c->token_len, c->token, qms_presence_field ());
    ws_send (w, c, 0x1, req, (size_t) n);
    client_flush (w, c);
}

void
qms_retry_login (worker_t *w, client_t *c)
{
    qms_send_auth (w, c, c->tried_login? 0: 1);
}

/*  Register/login requests in flight are capped (--max-auth): the server
    hashes passwords on a small pool and throttles concurrent logins per
    address, and a benchmark should measure logins, not its own retries. */
static void
qms_on_open (worker_t *w, client_t *c)
{
    if (c->resuming) {
        qms_send_authorize (w, c);      /* no password hashing: not capped */
        return;
    }
    if (w->auth >= w->max_auth) {
        c->auth_waiting = true;
        w->authq [w->aq_tail] = c->idx;
        w->aq_tail = (w->aq_tail + 1) % w->aq_cap;
        return;
    }
    w->auth++;
    c->auth_slot = true;
    qms_send_auth (w, c, 1);            /* RegisterRequest; LoginRequest if it exists */
}

void
qms_auth_release (worker_t *w, client_t *c)
{
    if (!c->auth_slot)
        return;
    c->auth_slot = false;
    w->auth--;
    while (w->aq_head != w->aq_tail && w->auth < w->max_auth) {
        client_t *n = &G_cl [w->authq [w->aq_head]];
        w->aq_head = (w->aq_head + 1) % w->aq_cap;
        n->auth_waiting = false;
        if (n->state == CS_LOGIN)
            qms_on_open (w, n);
    }
}

/*  The longest MessageRequest: template, payload, closing quote and brace,
    and the widest frame header (14 bytes). */
static size_t
qms_message_max (const client_t *c)
{
    return 14 + c->tmpl_len + (O.ids? 40: 0) + bench_payload_max () + 2;
}

/*  One masked text frame holding a MessageRequest. The payload length is
    known only once it is written, so it is built at the widest header
    offset and moved down when the header is shorter. */
static size_t
qms_put_message (worker_t *w, client_t *c, uint8_t *dst, uint64_t seq, uint64_t ts)
{
    uint8_t *body = dst + 14, *p = body;
    memcpy (p, c->tmpl, c->tmpl_len);
    p += c->tmpl_len;
    if (O.ids) {
        /*  ,"id":"<seq>","message":" -- the ack names the sequence number */
        memcpy (p, "\"id\":\"", 6);
        p += 6;
        p += u64_dec ((char *) p, seq);
        memcpy (p, "\",", 2);
        p += 2;
        if (c->sent_ts)
            c->sent_ts [seq & (G_tsring - 1)] = ts;
    }
    memcpy (p, "\"message\":\"", 11);
    p += 11;
    p += bench_payload (p, c->idx, seq, ts);
    *p++ = '"';
    *p++ = '}';
    size_t len = (size_t) (p - body);
    size_t h = ws_header (w, dst, 0x1, len);
    if (h != 14)
        memmove (dst + h, body, len);
    ws_mask (dst + h, len, dst + h - 4);
    return h + len;
}

void
qms_goodbye (worker_t *w, client_t *c)
{
    static const uint8_t bye [2] = { 0x03, 0xE8 };      /* 1000, normal closure */
    if (c->upgraded && c->out_len == 0) {
        ws_send (w, c, 0x8, bye, 2);
        client_flush (w, c);
    }
}

/*  The MessageRequest up to the message string, once per sender. */
static int
qms_make_template (client_t *c)
{
    if (c->tmpl)
        return 0;
    size_t cap = 64 + c->token_len + c->tgt_len;
    c->tmpl = malloc (cap);
    if (!c->tmpl)
        return -1;
    int n = snprintf (c->tmpl, cap, O.group? "{\"action\":10,\"token\":\"%.*s\",\"group\":\"%.*s\",":
                                             "{\"action\":3,\"token\":\"%.*s\",\"target\":\"%.*s\",",
                      (int) c->token_len, c->token, (int) c->tgt_len, c->tgt_id);
    c->tmpl_len = (uint32_t) n;
    if (O.ids && !c->sent_ts) {
        c->sent_ts = calloc (G_tsring, sizeof (uint64_t));
        if (!c->sent_ts)
            return -1;
    }
    return 0;
}

/*  Index of a PREFIX<k> name, or -1. */
static long
prefix_index (const char *prefix, span_t name)
{
    size_t pl = strlen (prefix);
    if (name.n <= pl || name.n > pl + 10 || memcmp (name.p, prefix, pl) != 0)
        return -1;
    uint64_t v = 0;
    for (size_t i = pl; i < name.n; i++) {
        if (name.p [i] < '0' || name.p [i] > '9')
            return -1;
        v = v * 10 + (uint64_t) (name.p [i] - '0');
    }
    if (name.p [pl] == '0' && name.n > pl + 1)
        return -1;
    return v < O.clients? (long) v: -1;
}

static long bench_index (span_t name) { return prefix_index (O.prefix, name); }

static void
set_id (char *dst, uint16_t *len, span_t id, int *flag)
{
    if (id.n == 0 || id.n >= QB_IDMAX)
        return;
    memcpy (dst, id.p, id.n);
    *len = (uint16_t) id.n;
    if (flag)
        __atomic_store_n (flag, 1, __ATOMIC_RELEASE);
}

/*  Learns our own, our target's and our source's ids from a user list. */
static void
qms_scan_users (client_t *c, const char *p, const char *e)
{
    if (c->got_ids || !p)
        return;
    p++;                                /* past '[' */
    const char *vs, *ve;
    while (j_element (&p, e, &vs, &ve) == 1) {
        if (*vs != '{')
            continue;
        const char *q = vs + 1;
        span_t k, id = { NULL, 0 }, name = { NULL, 0 };
        const char *mvs, *mve;
        while (j_member (&q, ve, &k, &mvs, &mve) == 1) {
            if (span_is (k, "id"))
                id = j_strval (mvs, mve);
            else
            if (span_is (k, "name"))
                name = j_strval (mvs, mve);
        }
        long i = bench_index (name);
        if (i < 0)
            continue;
        if ((uint32_t) i == c->idx && !c->self_len)
            set_id (c->self_id, &c->self_len, id, O.group? &c->has_self: NULL);
        if (O.to_prefix [0] || O.group)
            continue;                   /* our target is not one of us, or is our group */
        if ((uint32_t) i == c->tgt && !c->has_tgt)
            set_id (c->tgt_id, &c->tgt_len, id, &c->has_tgt);
        if ((uint32_t) i == c->src && !c->has_src)
            set_id (c->src_id, &c->src_len, id, &c->has_src);
    }
    c->got_ids = O.group? c->self_len > 0: c->self_len && c->has_tgt && c->has_src;
}

/* ------------------------------------------------------------------------ */
/*  User lookups (--presence none, --to-prefix): ids by name, in batches.
    The names are PREFIX<k> (our ring: client k-1 sends to k, k+1 receives
    from k) or TO_PREFIX<k> (client k sends there). */

static bool owned (const worker_t *w, uint32_t idx) { return idx % O.threads == (uint32_t) w->id; }

static void
lookup_push (worker_t *w, uint32_t k)
{
    if (w->lk_state [k])
        return;
    w->lk_state [k] = 1;
    w->lkq [w->lkq_tail] = k;
    w->lkq_tail = (w->lkq_tail + 1) % w->lkq_cap;
}

/*  A client that is online asks for the ids it lacks; the first one
    online on the thread becomes the agent that sends the requests. */
static void
lookup_want (worker_t *w, client_t *c)
{
    if (O.to_prefix [0]) {
        if (!c->has_tgt)
            lookup_push (w, c->idx);
    }
    else {
        if (!c->has_tgt)
            lookup_push (w, c->tgt);
        if (!c->has_src)
            lookup_push (w, c->src);
    }
    if (w->lk_agent < 0)
        w->lk_agent = c->idx;
}

/*  The agent died: its questions go back to the queue, another online
    client of the thread takes over. */
void
lookup_agent_lost (worker_t *w, client_t *c)
{
    if (!w->lk_state || w->lk_agent != (int64_t) c->idx)
        return;
    w->lk_agent = -1;
    for (uint32_t i = 0; i < w->lk_fly_n; i++) {
        uint32_t k = w->lk_fly [(w->lk_fly_head + i) % (QB_LOOKUP_BATCH * QB_LOOKUP_DEPTH)];
        w->lkq [w->lkq_tail] = k;
        w->lkq_tail = (w->lkq_tail + 1) % w->lkq_cap;
    }
    w->lk_fly_n = 0;
    w->lk_fly_head = 0;
    for (uint32_t j = 0; j < w->nmine; j++) {
        client_t *o = &G_cl [(uint64_t) j * O.threads + (uint64_t) w->id];
        if (o != c && o->state == CS_ONLINE) {
            w->lk_agent = o->idx;
            break;
        }
    }
}

void
lookup_pump (worker_t *w, uint64_t now)
{
    if (!w->lk_state)
        return;
    if (w->lk_nretry && now >= w->lk_retry_at) {
        for (uint32_t i = 0; i < w->lk_nretry; i++) {
            w->lkq [w->lkq_tail] = w->lk_retry [i];
            w->lkq_tail = (w->lkq_tail + 1) % w->lkq_cap;
        }
        w->lk_nretry = 0;
    }
    if (w->lk_agent < 0 || w->lkq_head == w->lkq_tail)
        return;
    client_t *a = &G_cl [w->lk_agent];
    if (a->state != CS_ONLINE)
        return;
    const char *pfx = O.to_prefix [0]? O.to_prefix: O.prefix;
    const uint32_t fcap = QB_LOOKUP_BATCH * QB_LOOKUP_DEPTH;
    char req [QB_TOKMAX + QB_LOOKUP_BATCH * 64 + 64];
    bool sent = false;
    while (w->lkq_head != w->lkq_tail && w->lk_fly_n + QB_LOOKUP_BATCH <= fcap) {
        int n = snprintf (req, sizeof req, "{\"action\":6,\"token\":\"%.*s\",\"names\":[",
                          (int) a->token_len, a->token);
        uint32_t k = 0;
        while (k < QB_LOOKUP_BATCH && w->lkq_head != w->lkq_tail) {
            uint32_t name = w->lkq [w->lkq_head];
            w->lkq_head = (w->lkq_head + 1) % w->lkq_cap;
            n += snprintf (req + n, sizeof req - (size_t) n, "%s\"%s%u\"", k? ",": "", pfx, name);
            w->lk_fly [(w->lk_fly_head + w->lk_fly_n) % fcap] = name;
            w->lk_fly_n++;
            k++;
        }
        n += snprintf (req + n, sizeof req - (size_t) n, "]}");
        ws_send (w, a, 0x1, req, (size_t) n);
        INC (w->st.lookups, 1);
        INC (w->st.lookup_names, k);
        sent = true;
        if (a->state == CS_DEAD)
            return;
    }
    if (sent)
        client_flush (w, a);
}

static void
lookup_resolved (worker_t *w, uint32_t k, span_t id, uint64_t now)
{
    client_t *need [2] = { NULL, NULL };
    if (O.to_prefix [0]) {
        if (owned (w, k) && !G_cl [k].has_tgt)
            set_id (G_cl [k].tgt_id, &G_cl [k].tgt_len, id, &G_cl [k].has_tgt);
        need [0] = &G_cl [k];
    }
    else {
        uint32_t before = (k + O.clients - 1) % O.clients, after = (k + 1) % O.clients;
        client_t *b = &G_cl [before], *a = &G_cl [after];
        if (owned (w, before) && !b->has_tgt)
            set_id (b->tgt_id, &b->tgt_len, id, &b->has_tgt);
        if (owned (w, after) && !a->has_src)
            set_id (a->src_id, &a->src_len, id, &a->has_src);
        need [0] = b;
        need [1] = a;
    }
    for (int i = 0; i < 2; i++) {
        client_t *c = need [i];
        if (!c || !owned (w, c->idx))
            continue;
        c->got_ids = c->self_len && c->has_tgt && c->has_src;
        if (phase () == PH_RUN && sender_eligible (c))
            sender_activate (w, c, now);
    }
}

/*  One UserLookupEvent on the agent's connection: the answer to the oldest
    name in flight. */
static void
lookup_on_event (worker_t *w, const jtop_t *t, uint64_t now)
{
    if (!w->lk_state || !w->lk_fly_n) {
        errtab_add (&w->st.srv_err, "unexpected UserLookupEvent", 26, 1);
        return;
    }
    const uint32_t fcap = QB_LOOKUP_BATCH * QB_LOOKUP_DEPTH;
    uint32_t k = w->lk_fly [w->lk_fly_head];
    w->lk_fly_head = (w->lk_fly_head + 1) % fcap;
    w->lk_fly_n--;
    long named = prefix_index (O.to_prefix [0]? O.to_prefix: O.prefix, t->name);
    span_t id = { NULL, 0 };
    if (t->valid == 1 && t->user) {
        const char *q = t->user + 1, *mvs, *mve;
        span_t key;
        while (j_member (&q, t->user_end, &key, &mvs, &mve) == 1)
            if (span_is (key, "id"))
                id = j_strval (mvs, mve);
    }
    if (named == (long) k && id.n) {
        w->lk_state [k] = 0;
        lookup_resolved (w, k, id, now);
        return;
    }
    /*  Not registered yet (a fresh database: it registers in a moment), or
        an answer we cannot use: ask again in 200 ms. */
    if (t->error.n && !span_has (t->error, "No such user"))
        errtab_add (&w->st.srv_err, t->error.p, t->error.n, 1);
    INC (w->st.lookup_retries, 1);
    if (!w->lk_nretry)
        w->lk_retry_at = now + 200 * MS;
    w->lk_retry [w->lk_nretry++] = k;
}

/* ------------------------------------------------------------------------ */
/*  Acknowledgements (--ids) and receive-only clients (--expect-stored) */

static void
qms_on_ack (worker_t *w, client_t *c, const jtop_t *t, uint64_t now)
{
    uint64_t seq = 0;
    bool has_seq = t->id.n > 0 && t->id.n <= 20;
    for (size_t i = 0; has_seq && i < t->id.n; i++) {
        if (t->id.p [i] < '0' || t->id.p [i] > '9')
            has_seq = false;
        else
            seq = seq * 10 + (uint64_t) (t->id.p [i] - '0');
    }
    if (t->valid != 1) {
        INC (w->st.ack_rejected, 1);
        INC (w->st.srv_errors, 1);
        errtab_add (&w->st.srv_err, t->error.n? t->error.p: "rejected ack", t->error.n? t->error.n: 12, 1);
        if (c->sender != 0 && c->rejected < c->sent) {
            c->rejected++;
            INC (w->st.rejected, 1);
            c->resume_at = now + (uint64_t) (O.backoff * 1e9);
            if (__atomic_exchange_n (&c->blocked, 0, __ATOMIC_SEQ_CST))
                defer_push (w, c);
        }
        return;
    }
    if (span_is (t->status, "stored"))
        INC (w->st.ack_stored, 1);
    else
    if (span_is (t->status, "delivered"))
        INC (w->st.ack_delivered, 1);
    else {
        INC (*(span_is (t->status, "received")? &w->st.ack_received: &w->st.ack_unknown), 1);
        return;
    }
    if (!O.to_prefix [0])
        return;                         /* the receiver (ours) credits the window */
    /*  The recipients are not ours: the ack is the delivery, and the
        latency histogram holds send -> ack (a "stored" ack follows the fsync). */
    if (has_seq && seq < c->sent && c->sent_ts)
        hist_add (&w->st.lat, now - c->sent_ts [seq & (G_tsring - 1)]);
    INC (w->st.delivered, 1);
    w->st.last_delivery = now;
    c->acks++;
    __atomic_fetch_add (&c->delivered, 1, __ATOMIC_SEQ_CST);
    if (has_seq && seq + 1 > __atomic_load_n (&c->acked, __ATOMIC_SEQ_CST))
        __atomic_store_n (&c->acked, seq + 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n (&c->blocked, __ATOMIC_SEQ_CST))
        sender_wake (w, c);
}

/*  --expect-stored: count what arrives; the drain time of a client runs
    from its login answer to its M-th message. */
static void
qms_on_expected (worker_t *w, client_t *c, const jtop_t *t, uint64_t now)
{
    c->rx_unique++;
    INC (w->st.delivered, 1);
    if (t->stored)
        INC (w->st.stored_rx, 1);
    if (!w->st.first_rx)
        w->st.first_rx = now;
    w->st.last_delivery = now;
    if (c->rx_unique == O.expect)
        hist_add (&w->st.drain, now - c->t_online);
}

static void
qms_on_authorized (worker_t *w, client_t *c, uint64_t now)
{
    SET_STATE (c, CS_ONLINE);
    c->t_online = now;
    w->pending--;
    INC (w->st.resume_ok, 1);
    hist_add (&w->st.resume, now - c->t_start);
    if (now > w->st.last_resume)
        w->st.last_resume = now;
    __atomic_store_n (&c->online, 1, __ATOMIC_RELEASE);
}

static void
qms_on_login_ok (worker_t *w, client_t *c, const jtop_t *t, uint64_t now)
{
    if (t->token.n == 0 || t->token.n >= QB_TOKMAX) {
        client_die (w, c, "login: no usable token in LoginEvent", -2);
        return;
    }
    memcpy (c->token, t->token.p, t->token.n);
    c->token_len = (uint16_t) t->token.n;
    SET_STATE (c, CS_ONLINE);
    c->t_online = now;
    w->pending--;
    qms_auth_release (w, c);
    INC (w->st.login_ok, 1);
    INC (*(c->tried_login? &w->st.existing: &w->st.registered), 1);
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
    __atomic_store_n (&c->online, 1, __ATOMIC_RELEASE);
}

/*  Answers that say "try again" are retried: a full hashing queue or a
    slow actor after a jittered, growing pause; the failed-login throttle
    (which also counts logins in flight per address) after the seconds it
    names. The handshake time-out still bounds every client. */
static bool
qms_login_retry (worker_t *w, client_t *c, span_t error, uint64_t now)
{
    uint64_t pause;
    if (span_has (error, "busy") || span_has (error, "temporarily unavailable")) {
        unsigned shift = c->login_tries < 5? c->login_tries: 5;
        pause = (50 * MS << shift) + xorshift (&w->rng) % (100 * MS);
    }
    else
    if (span_has (error, "Try again in ")) {
        const char *p = error.p, *e = error.p + error.n;
        while (p < e && (*p < '0' || *p > '9'))
            p++;
        uint64_t secs = 0;
        while (p < e && *p >= '0' && *p <= '9')
            secs = secs * 10 + (uint64_t) (*p++ - '0');
        if (secs < 1)
            secs = 1;
        pause = secs * SEC + xorshift (&w->rng) % (500 * MS);
    }
    else
        return false;
    if (now + pause - c->t_start > (uint64_t) (O.handshake_timeout * 1e9))
        return false;           /* would time out anyway: fail with the server's text */
    c->login_tries++;
    INC (w->st.login_retries, 1);
    c->resume_at = now + pause;
    defer_push (w, c);
    return true;
}

static void
qms_on_error (worker_t *w, client_t *c, const jtop_t *t, uint64_t now)
{
    /*  "Username already exists." to our first register is the expected
        way to learn that we must log in: counted as "existing", not an error. */
    if (t->event == 1 && c->state == CS_LOGIN && !c->tried_login
        && t->error.n && span_has (t->error, "already exists")) {
        c->tried_login = true;
        qms_send_auth (w, c, 0);
        return;
    }
    INC (w->st.srv_errors, 1);
    if (t->error.n)
        errtab_add (&w->st.srv_err, t->error.p, t->error.n, 1);
    else {
        char buf [48];
        int n = snprintf (buf, sizeof buf, "(no error text) event %ld", t->event);
        errtab_add (&w->st.srv_err, buf, (size_t) n, 1);
    }
    if (t->event == 1 && c->state == CS_LOGIN && qms_login_retry (w, c, t->error, now))
        return;
    if (t->event == 1 && c->state == CS_LOGIN) {
        char why [160];
        snprintf (why, sizeof why, "login: %.*s", (int) (t->error.n > 120? 120: t->error.n), t->error.p);
        client_die (w, c, why, -2);
        return;
    }
    if (t->event == 3 && c->state == CS_LOGIN && c->resuming) {
        INC (w->st.resume_fail, 1);
        client_die (w, c, "authorize: session not valid", -2);
        return;
    }
    if (t->event == 0 && c->state == CS_LOGIN && c->resuming) {
        char why [160];
        INC (w->st.resume_fail, 1);
        snprintf (why, sizeof why, "authorize: %.*s", (int) (t->error.n > 120? 120: t->error.n), t->error.p);
        client_die (w, c, why, -2);
        return;
    }
    if (t->event == 3) {
        /*  Our session is not valid (any more): the original client logs out. */
        INC (w->st.invalid_user, 1);
        c->stop_sending = true;
    }
    /*  While we send, any other error answers one of our MessageRequests
        (the server handles a connection's requests in order): that message
        will not be delivered, so its window credit comes back, after a
        pause (a rate limit says: slow down; flooding it measures nothing). */
    if (c->sender != 0 && t->event != 0 && t->event != 1 && c->rejected < c->sent) {
        c->rejected++;
        INC (w->st.rejected, 1);
        c->resume_at = now + (uint64_t) (O.backoff * 1e9);
        if (__atomic_exchange_n (&c->blocked, 0, __ATOMIC_SEQ_CST))
            defer_push (w, c);
    }
}

/* ------------------------------------------------------------------------ */
/*  Groups (--group-size N): the first client of each run of N creates the
    group with the N-1 others (GroupCreateRequest, action 7) once every
    member's id is known; each member is ready when its GroupEvent (8) comes,
    so the run starts with every membership complete. */

void
group_pump (worker_t *w, uint64_t now)
{
    (void) now;
    if (!O.group || g_nats || w->grp_done || !__atomic_load_n (&g_groups_go, __ATOMIC_ACQUIRE))
        return;
    bool all = true;
    for (uint32_t k = 0; k < O.clients; k += O.group) {
        client_t *o = &G_cl [k];
        if (o->thread != (uint16_t) w->id || o->grp_asked)
            continue;
        if (o->state != CS_ONLINE || !o->self_len) {
            if (o->state == CS_DEAD)
                o->grp_asked = true;    /* its group never forms: its members are reported missing */
            else
                all = false;
            continue;
        }
        /*  Every member's id, or its death. */
        bool known = true;
        size_t need = 128 + o->token_len;
        for (uint32_t m = k + 1; m < k + O.group; m++) {
            client_t *c = &G_cl [m];
            if (__atomic_load_n (&c->dead, __ATOMIC_ACQUIRE))
                continue;
            if (!__atomic_load_n (&c->has_self, __ATOMIC_ACQUIRE)) {
                known = false;
                break;
            }
            need += (size_t) c->self_len + 3;
        }
        if (!known) {
            all = false;
            continue;
        }
        char *req = malloc (need);
        if (!req) {
            client_die (w, o, "out of memory", -2);
            continue;
        }
        int n = snprintf (req, need, "{\"action\":7,\"token\":\"%.*s\",\"name\":\"qb-%s-%u\",\"id\":\"g%u\",\"members\":[",
                          (int) o->token_len, o->token, O.prefix, group_of (k), group_of (k));
        size_t len = n > 0? (size_t) n: 0;
        bool first = true;
        for (uint32_t m = k + 1; m < k + O.group; m++) {
            client_t *c = &G_cl [m];
            if (__atomic_load_n (&c->dead, __ATOMIC_ACQUIRE))
                continue;
            if (!first)
                req [len++] = ',';
            first = false;
            req [len++] = '"';
            memcpy (req + len, c->self_id, c->self_len);
            len += c->self_len;
            req [len++] = '"';
        }
        req [len++] = ']';
        req [len++] = '}';
        o->grp_asked = true;
        ws_send (w, o, 0x1, req, len);
        free (req);
        client_flush (w, o);
    }
    if (all)
        w->grp_done = 1;
}

/*  A GroupEvent: the create of our group (its id in group.id). */
static void
qms_on_group_event (worker_t *w, client_t *c, const jtop_t *t, uint64_t now)
{
    if (c->has_tgt || !t->group || *t->group != '{')
        return;
    const char *q = t->group + 1, *vs, *ve;
    span_t key, id = { NULL, 0 };
    while (j_member (&q, t->group_end, &key, &vs, &ve) == 1)
        if (span_is (key, "id"))
            id = j_strval (vs, ve);
    if (id.n == 0 || id.n >= QB_IDMAX) {
        errtab_add (&w->st.srv_err, "GroupEvent without a usable group id", 36, 1);
        return;
    }
    set_id (c->tgt_id, &c->tgt_len, id, NULL);
    __atomic_store_n (&c->has_src, 1, __ATOMIC_RELEASE);
    __atomic_store_n (&c->has_tgt, 1, __ATOMIC_RELEASE);
    if (phase () == PH_RUN && sender_eligible (c))
        sender_activate (w, c, now);
}

/*  --debug: the first few error frames, verbatim, for diagnosis. */
static void
debug_frame (const client_t *c, const char *s, size_t n)
{
    static int printed;
    if (__atomic_fetch_add (&printed, 1, __ATOMIC_RELAXED) >= O.debug)
        return;
    char name [96];
    fprintf (stderr, "qmsbench: debug: %s (%s) got: %.*s\n", prefix_name (c->idx, name, sizeof name),
             qb_state_name [c->state], (int) (n > 300? 300: n), s);
}

/*  A user-list event that a client which knows its ids can drop unread:
    with n logins they add up to O(n^3) bytes, so not scanning them keeps the
    bench cheap. Both key orders seen in practice (ours; Qt's sorted keys). */
static bool
qms_userlist_skippable (const client_t *c, const char *s, size_t n)
{
    static const char a [] = "{\"valid\":true,\"event\":4,";
    static const char b [] = "{\"event\":4,";
    static const char d [] = "{\"valid\":true,\"event\":6,";
    if (!c->got_ids || c->state != CS_ONLINE || n < 4096)
        return false;
    return memcmp (s, a, sizeof a - 1) == 0 || memcmp (s, b, sizeof b - 1) == 0
        || memcmp (s, d, sizeof d - 1) == 0;
}

/*  --presence full: how many users a whole list (event 4, or the login
    answer) holds; the report says how many clients' last list was complete.
    Every user object has one "id" member, and nothing else in them does. */
static void
qms_count_list (client_t *c, const char *s, size_t n)
{
    static const char a [] = "{\"valid\":true,\"event\":4,";
    static const char b [] = "{\"event\":4,";
    static const char l [] = "{\"valid\":true,\"event\":1,";
    if (n < sizeof l || (memcmp (s, a, sizeof a - 1) && memcmp (s, b, sizeof b - 1) && memcmp (s, l, sizeof l - 1)))
        return;
    uint32_t count = 0;
    const char *p = s, *e = s + n;
    while ((p = memmem (p, (size_t) (e - p), "\"id\":", 5)) != NULL) {
        count++;
        p += 5;
    }
    c->last_list = count;
}

void
qms_on_text (worker_t *w, client_t *c, const char *s, size_t n, uint64_t now)
{
    jtop_t t;
    if (O.presence == PRES_FULL)
        qms_count_list (c, s, n);
    if (qms_userlist_skippable (c, s, n)) {
        INC (w->st.userlists_skipped, 1);
        return;
    }
    if (O.debug && (j_top (s, n, &t) < 0 || (t.valid != 1 && !span_has (t.error, "already exists"))))
        debug_frame (c, s, n);
    if (j_top (s, n, &t) < 0) {
        errtab_add (&w->st.srv_err, "(frame is not a JSON object)", 28, 1);
        INC (w->st.srv_errors, 1);
        return;
    }
    if (t.valid == 1 && t.event == 2) {
        if (O.expect)
            qms_on_expected (w, c, &t, now);
        else
            on_chat_message (w, c, t.sender, t.message, now);
        return;
    }
    if (O.group && t.valid == 1 && t.event == 10) {
        on_group_message (w, c, t.message, now);
        return;
    }
    if (O.group && t.valid == 1 && t.event == 8) {
        qms_on_group_event (w, c, &t, now);
        return;
    }
    if (t.event == 7) {
        lookup_on_event (w, &t, now);
        return;
    }
    if (t.event == 5) {
        qms_on_ack (w, c, &t, now);
        return;
    }
    if (t.valid != 1) {
        qms_on_error (w, c, &t, now);
        return;
    }
    bool came_online = false;
    if (t.event == 1 && c->state == CS_LOGIN) {
        qms_on_login_ok (w, c, &t, now);
        if (c->state == CS_DEAD)
            return;
        came_online = true;
    }
    if (t.event == 0 && c->state == CS_LOGIN && c->resuming) {
        qms_on_authorized (w, c, now);
        return;
    }
    if (t.users && (t.event == 1 || t.event == 4 || t.event == 6) && c->state == CS_ONLINE)
        qms_scan_users (c, t.users, t.users_end);
    if (came_online && O.to_prefix [0])
        __atomic_store_n (&c->has_src, 1, __ATOMIC_RELEASE);   /* nobody sends to us */
    if (came_online && w->lk_state && !c->got_ids && !O.idle)
        lookup_want (w, c);
    /*  A client that becomes able to send after the run started joins it. */
    if (phase () == PH_RUN && sender_eligible (c))
        sender_activate (w, c, now);
}

const proto_t qb_proto_qms = {
    .name = "qms",
    .start = ws_send_upgrade,
    .on_open = qms_on_open,
    .consume = ws_consume,
    .prepare_sender = qms_make_template,
    .message_max = qms_message_max,
    .put_message = qms_put_message,
    .goodbye = qms_goodbye,
};
