/*  =========================================================================
    qb_traffic - the senders and receivers of qmsbench

    Client i sends to its target with at most --window messages in flight,
    within the thread's share of --rate; the receiving client (same
    process) checks each message, measures its one-way latency, drops
    duplicates and credits the sender, waking it on its own thread.
    ========================================================================= */

#define _GNU_SOURCE
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "qmsbench.h"

/* ------------------------------------------------------------------------ */
/*  Senders and receivers */

/*  The message text, the same for every protocol: "qmsb:<sender>:<seq>:<ns>:"
    padded with 'x' to --size bytes (longer when the header needs it). The
    receiver is this same process, so CLOCK_MONOTONIC ns are comparable. */
size_t
bench_payload_max (void)
{
    size_t hdr = sizeof QB_MAGIC - 1 + 3 * 21;
    return O.size > hdr? O.size: hdr;
}

size_t
bench_payload (uint8_t *dst, uint32_t sender, uint64_t seq, uint64_t ts)
{
    uint8_t *p = dst;
    memcpy (p, QB_MAGIC, sizeof QB_MAGIC - 1);
    p += sizeof QB_MAGIC - 1;
    p += u64_dec ((char *) p, sender);
    *p++ = ':';
    p += u64_dec ((char *) p, seq);
    *p++ = ':';
    p += u64_dec ((char *) p, ts);
    *p++ = ':';
    size_t used = (size_t) (p - dst);
    if (used < O.size) {
        memset (p, 'x', O.size - used);
        used = O.size;
    }
    return used;
}

static uint32_t client_local (const client_t *c) { return c->idx / O.threads; }

void
ready_push (worker_t *w, client_t *c)
{
    if (c->in_ready)
        return;
    c->in_ready = true;
    w->ring [w->rtail] = c->idx;
    w->rtail = (w->rtail + 1) & (w->rcap - 1);
}

static client_t *
ready_pop (worker_t *w)
{
    if (w->rhead == w->rtail)
        return NULL;
    client_t *c = &G_cl [w->ring [w->rhead]];
    w->rhead = (w->rhead + 1) & (w->rcap - 1);
    c->in_ready = false;
    return c;
}

/*  Credit returned to a blocked sender: only the one that clears the
    blocked flag wakes it, directly on our thread or through the owner's
    mark bits (and its eventfd if it is asleep). */
void
sender_wake (worker_t *me, client_t *s)
{
    if (!__atomic_exchange_n (&s->blocked, 0, __ATOMIC_SEQ_CST))
        return;
    worker_t *o = &G_w [s->thread];
    if (o == me) {
        ready_push (me, s);
        return;
    }
    uint32_t l = client_local (s);
    __atomic_fetch_or (&o->marks [l / 64], 1ull << (l % 64), __ATOMIC_RELEASE);
    __atomic_store_n (&o->mark_pending, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n (&o->sleeping, __ATOMIC_SEQ_CST)) {
        uint64_t one = 1;
        if (write (o->efd, &one, sizeof one) < 0) {
            /*  The counter cannot overflow in practice; the loop wakes
                within 100 ms anyway. */
        }
    }
}

void
defer_push (worker_t *w, client_t *c)
{
    if (c->in_defer)
        return;
    c->in_defer = true;
    w->defer [w->ndefer++] = c->idx;
    if (!w->defer_next || c->resume_at < w->defer_next)
        w->defer_next = c->resume_at;
}

/*  Senders whose back-off is over go back to the ready ring. */
void
defer_take (worker_t *w, uint64_t now)
{
    if (!w->ndefer || now < w->defer_next)
        return;
    uint32_t keep = 0;
    uint64_t next = 0;
    for (uint32_t i = 0; i < w->ndefer; i++) {
        client_t *c = &G_cl [w->defer [i]];
        if (c->resume_at <= now) {
            c->in_defer = false;
            if (c->state == CS_LOGIN)
                qms_retry_login (w, c);
            else
                ready_push (w, c);
        }
        else {
            w->defer [keep++] = c->idx;
            if (!next || c->resume_at < next)
                next = c->resume_at;
        }
    }
    w->ndefer = keep;
    w->defer_next = next;
}

void
marks_take (worker_t *w)
{
    if (!__atomic_exchange_n (&w->mark_pending, 0, __ATOMIC_SEQ_CST))
        return;
    for (uint32_t i = 0; i < w->nmarkw; i++) {
        uint64_t bits = __atomic_exchange_n (&w->marks [i], 0, __ATOMIC_ACQUIRE);
        while (bits) {
            unsigned b = (unsigned) __builtin_ctzll (bits);
            bits &= bits - 1;
            uint64_t l = (uint64_t) i * 64 + b;
            ready_push (w, &G_cl [l * O.threads + (uint64_t) w->id]);
        }
    }
}

void
sender_done (worker_t *w, client_t *c)
{
    if (c->sender == 1) {
        c->sender = 2;
        ST (w->senders_active, w->senders_active - 1);
    }
}

bool
sender_eligible (const client_t *c)
{
    return !O.idle && c->sender == 0 && c->state == CS_ONLINE && c->has_tgt && !c->stop_sending
        && (!O.group || c->idx % O.group < O.group_senders)
        && !__atomic_load_n (&G_cl [c->tgt].dead, __ATOMIC_ACQUIRE);
}

void
sender_activate (worker_t *w, client_t *c, uint64_t now)
{
    if (P->prepare_sender (c)) {
        client_die (w, c, "out of memory", -2);
        return;
    }
    c->sender = 1;
    c->ack_snap = __atomic_load_n (&c->acked, __ATOMIC_SEQ_CST);
    c->ack_time = now;
    ST (w->senders_active, w->senders_active + 1);
    ready_push (w, c);
}

uint64_t
sender_inflight (const client_t *c, uint64_t acked)
{
    if (O.group) {
        /*  A group message is in flight until its fan-out is complete,
            counted in deliveries: sent - deliveries / (N - 1). */
        uint64_t whole = __atomic_load_n (&c->delivered, __ATOMIC_SEQ_CST) / (O.group - 1);
        uint64_t gdone = whole + c->rejected + c->reclaimed;
        return c->sent > gdone? c->sent - gdone: 0;
    }
    uint64_t base = acked > c->reclaim_mark? acked: c->reclaim_mark;
    uint64_t by_seq = c->sent > base? c->sent - base: 0;
    uint64_t done = __atomic_load_n (&c->delivered, __ATOMIC_SEQ_CST) + c->rejected + c->reclaimed;
    uint64_t by_count = c->sent > done? c->sent - done: 0;
    return by_seq < by_count? by_seq: by_count;
}


/*  Sends what the window, the rate and --messages allow, in one write.
    Returns 0 when blocked on the window, 1 when the rate budget ran out,
    2 when this sender is done, 3 when credit came back meanwhile, 4 when
    it backs off after an error reply. */
static int
sender_pump (worker_t *w, client_t *c, uint64_t now, double *tokens)
{
    if (c->state != CS_ONLINE || c->stop_sending
        || __atomic_load_n (&G_cl [c->tgt].dead, __ATOMIC_ACQUIRE)
        || (O.messages && c->sent >= O.messages)) {
        sender_done (w, c);
        return 2;
    }
    if (c->resume_at > now) {
        defer_push (w, c);
        return 4;
    }
    uint64_t acked = __atomic_load_n (&c->acked, __ATOMIC_SEQ_CST);
    if (acked != c->ack_snap) {
        c->ack_snap = acked;
        c->ack_time = now;
    }
    uint64_t infl = sender_inflight (c, acked);
    uint64_t credit = O.window > infl? O.window - infl: 0;
    if (O.messages && credit > O.messages - c->sent)
        credit = O.messages - c->sent;
    bool rate_limited = false;
    if (tokens && (double) credit > *tokens) {
        credit = (uint64_t) *tokens;
        rate_limited = true;
    }
    size_t fmax = P->message_max (c);
    for (uint64_t i = 0; i < credit; i++) {
        uint8_t *p = out_reserve (w, c, fmax);
        if (!p) {
            if (c->state != CS_DEAD)
                client_die (w, c, "out of memory", -2);
            return 2;
        }
        out_commit (w, c, P->put_message (w, c, p, c->sent, now));
        c->sent++;
    }
    if (credit) {
        INC (w->st.sent, credit);
        w->st.last_send = now;
        if (tokens)
            *tokens -= (double) credit;
        client_flush (w, c);
        if (c->state == CS_DEAD)
            return 2;
    }
    if (O.messages && c->sent >= O.messages) {
        sender_done (w, c);
        return 2;
    }
    if (rate_limited)
        return 1;
    __atomic_store_n (&c->blocked, 1, __ATOMIC_SEQ_CST);
    acked = __atomic_load_n (&c->acked, __ATOMIC_SEQ_CST);
    if (sender_inflight (c, acked) < O.window
        && __atomic_exchange_n (&c->blocked, 0, __ATOMIC_SEQ_CST))
        return 3;
    return 0;
}

void
tokens_refill (double *tokens, double rate, uint64_t *last, uint64_t now)
{
    /*  50 ms worth: enough to make up for a thread that the scheduler let
        sleep long on a busy machine, small enough not to be a flood. */
    double burst = rate / 20.0 < 1.0? 1.0: rate / 20.0;
    *tokens += rate * (double) (now - *last) / 1e9;
    if (*tokens > burst)
        *tokens = burst;
    *last = now;
}

/*  Runs the ready ring; returns ms until the rate allows more, or -1. */
int
pump_all (worker_t *w, uint64_t now)
{
    if (phase () != PH_RUN) {
        while (ready_pop (w))
            ;
        return -1;
    }
    double *tokens = NULL;
    if (w->trate > 0) {
        tokens_refill (&w->tokens, w->trate, &w->tlast, now);
        tokens = &w->tokens;
    }
    client_t *c;
    while (w->rhead != w->rtail) {
        if (tokens && *tokens < 1.0)
            return (int) ceil ((1.0 - *tokens) / w->trate * 1000.0);
        c = ready_pop (w);
        int r = sender_pump (w, c, now, tokens);
        if (r == 1 || r == 3)
            ready_push (w, c);
        if (r == 1)
            return (int) ceil ((1.0 - *tokens) / w->trate * 1000.0);
    }
    return -1;
}

/*  Receiver-side dedup over a sliding bitmap of sequence numbers:
    0 new, 1 duplicate, 2 older than the window (late; counted, not deduped). */
static int
rx_mark (client_t *r, uint64_t seq)
{
    uint64_t B = G_rxbits;
    if (seq < r->rx_base)
        return 2;
    if (seq >= r->rx_base + B) {
        uint64_t nb = seq - B + 1;
        if (nb - r->rx_base >= B)
            memset (r->rx_bits, 0, B / 8);
        else
            for (uint64_t s = r->rx_base; s < nb; s++)
                r->rx_bits [(s & (B - 1)) / 64] &= ~(1ull << (s & 63));
        r->rx_base = nb;
    }
    uint64_t i = seq & (B - 1);
    uint64_t bit = 1ull << (i & 63);
    if (r->rx_bits [i / 64] & bit)
        return 1;
    r->rx_bits [i / 64] |= bit;
    return 0;
}

/*  A bench payload, QB_MAGIC then "sender:seq:timestamp:": the three
    numbers into v, or false (counted as foreign) for anything else. */
static bool
parse_payload (worker_t *w, span_t msg, uint64_t v [3])
{
    const char *p = msg.p, *e = msg.p + msg.n;
    size_t ml = sizeof QB_MAGIC - 1;
    if (msg.n < ml || memcmp (p, QB_MAGIC, ml) != 0) {
        INC (w->st.foreign, 1);
        return false;
    }
    p += ml;
    for (int k = 0; k < 3; k++) {
        const char *s = p;
        v [k] = 0;
        while (p < e && *p >= '0' && *p <= '9')
            v [k] = v [k] * 10 + (uint64_t) (*p++ - '0');
        if (p == s || p >= e || *p != ':') {
            INC (w->st.foreign, 1);
            return false;
        }
        p++;
    }
    return true;
}

/*  A MessageEvent for receiver r: check, count, credit the sender. */
void
on_chat_message (worker_t *w, client_t *r, span_t sender, span_t msg, uint64_t now)
{
    uint64_t v [3];
    if (!parse_payload (w, msg, v))
        return;
    uint64_t sidx = v [0], seq = v [1], ts = v [2];
    if (sidx != r->src || !r->rx_bits) {
        INC (w->st.misrouted, 1);
        return;
    }
    client_t *s = &G_cl [sidx];
    if (r->has_src && (sender.n != r->src_len || memcmp (sender.p, r->src_id, sender.n) != 0))
        INC (w->st.sender_mismatch, 1);
    int k = rx_mark (r, seq);
    if (k == 1) {
        INC (w->st.dup, 1);
        r->rx_dup++;
        return;
    }
    if (k == 2) {
        INC (w->st.late, 1);
        r->rx_late++;
    }
    else
        r->rx_unique++;
    hist_add (&w->st.lat, now > ts? now - ts: 0);
    INC (w->st.delivered, 1);
    w->st.last_delivery = now;
    __atomic_fetch_add (&s->delivered, 1, __ATOMIC_SEQ_CST);
    if (seq < r->rx_next) {
        if (__atomic_load_n (&s->blocked, __ATOMIC_SEQ_CST))
            sender_wake (w, s);
        if (k == 0) {
            r->rx_ooo++;
            INC (w->st.ooo, 1);
        }
        return;
    }
    r->rx_next = seq + 1;
    /*  seq_cst store then load, against the sender's store of blocked then
        load of acked: one of the two sides always sees the other. */
    __atomic_store_n (&s->acked, r->rx_next, __ATOMIC_SEQ_CST);
    if (__atomic_load_n (&s->blocked, __ATOMIC_SEQ_CST))
        sender_wake (w, s);
}

/*  --group-size: a GroupMessageEvent (or a NATS message on the group's
    subject) for member r. Each member of the group has its own sequence
    numbers; a sequence number below the next expected one from that member
    is a duplicate (the server keeps one sender's messages in order per
    recipient), one above it skips messages (counted as out of order).
    Every delivery is a latency sample; the sender's count of deliveries is
    its window's credit (in whole fan-outs) and its progress for --stall. */
void
on_group_message (worker_t *w, client_t *r, span_t msg, uint64_t now)
{
    uint64_t v [3];
    if (!parse_payload (w, msg, v))
        return;
    uint64_t sidx = v [0], seq = v [1], ts = v [2];
    if (sidx >= O.clients || sidx == r->idx || group_of ((uint32_t) sidx) != group_of (r->idx) || !r->grp_next) {
        INC (w->st.misrouted, 1);             /* our own copy, or another group's */
        return;
    }
    uint32_t *next = &r->grp_next [sidx % O.group];
    if (seq < *next) {
        INC (w->st.dup, 1);
        r->rx_dup++;
        return;
    }
    if (seq > *next)
        INC (w->st.ooo, 1);
    *next = (uint32_t) seq + 1;
    r->rx_unique++;
    hist_add (&w->st.lat, now > ts? now - ts: 0);
    INC (w->st.delivered, 1);
    w->st.last_delivery = now;
    client_t *s = &G_cl [sidx];
    uint64_t d = __atomic_add_fetch (&s->delivered, 1, __ATOMIC_SEQ_CST);
    /*  acked is the sender's progress mark (periodic_scan's stall check);
        it wakes only when a whole fan-out's worth came back. */
    __atomic_store_n (&s->acked, d, __ATOMIC_SEQ_CST);
    if (d % (O.group - 1) == 0 && __atomic_load_n (&s->blocked, __ATOMIC_SEQ_CST))
        sender_wake (w, s);
}
