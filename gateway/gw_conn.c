/*  gw_conn.c - the gateway's WebSocket connections: slots and handles,
    output queues and writes, input shaping, the limits that close a slow
    consumer, idle pings, and the count of connections per address.

    The relay path's own helpers (gw_conn_lookup, gw_conn_queue and
    gw_conn_queued) are static inline in gw_internal.h.
*/
#define _GNU_SOURCE
#include "gw_internal.h"

#include <assert.h>
#include <strings.h>
#include <arpa/inet.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/ssl.h>

/* ------------------------------------------------------------------------ */
/*  Connection slots and handles. */


bool
gw_conn_attach (gateway_t *self, conn_t *conn)
{
    if (self->free_count == 0)
        return false;
    uint32_t slot = self->free_slots [--self->free_count];
    self->gens [slot] = (self->gens [slot] + 1) & SLOT_MASK;
    if (self->gens [slot] == 0)
        self->gens [slot] = 1;          /* handle 0 means "none" */
    conn->handle = ((uint64_t) self->gens [slot] << SLOT_BITS) | slot;
    self->slots [slot] = conn;
    self->open_count++;
    conn->listed = 0;
    conn->heard_ms = self->tick_ms;
    gw_list_tail (self, GW_QUIET, conn);
    return true;
}

void
gw_conn_detach (gateway_t *self, conn_t *conn)
{
    if (!conn->handle)
        return;
    for (int list = 0; list < GW_LISTS; list++)
        gw_list_remove (self, list, conn);
    uint32_t slot = (uint32_t) (conn->handle & SLOT_MASK);
    self->slots [slot] = NULL;
    self->free_slots [self->free_count++] = slot;
    self->open_count--;
    conn->handle = 0;
}

void
gw_conn_release (conn_t *conn)
{
    free (conn->rx);
    conn->rx = NULL;
    conn->rx_len = conn->rx_cap = 0;
    outq_clear (&conn->out);
    if (conn->resp) {
        http_response_free (conn->resp);
        free (conn->resp);
        conn->resp = NULL;
    }
    OPENSSL_cleanse (conn->token, sizeof conn->token);
    OPENSSL_cleanse (conn->pending, sizeof conn->pending);
    free (conn->close_reason);
    conn->close_reason = NULL;
}

/* ------------------------------------------------------------------------ */
/*  Output.  Each connection's output is an outq (outq.h): our frames and
    shared user lists, written by us when lws says the socket is writeable.
    Three limits keep a reader that does not read from costing the others:
    --max-queue per connection, --write-timeout for output that never
    drains, and --output-budget over every connection, past which the
    largest queues go first.  A connection whose output waits is not read
    either (lws_rx_flow_control): a peer that sends without reading is
    slowed by TCP, and lws never reads a peer's end of stream while only our
    queue could still deliver what is owed to it (docs/ROBUSTNESS.md). */

const char *const gw_slow_names [3] = { "queue_full", "write_timeout", "output_budget" };

int
gw_close_index (uint16_t code)
{
    switch (code) {
        case 1001: return 0;
        case 1007: return 1;
        case 1008: return 2;
        case 1009: return 3;
        case 4001: return 4;
        default:   return 5;
    }
}

void
gw_conn_close (conn_t *conn, uint16_t code, const char *reason)
{
    if (conn->close_code)
        return;
    conn->close_code = code;
    /*  On the heap: a connection closes once, and most never with a
        reason, so the connection does not carry room for one. */
    conn->close_reason = strndup (reason, CLOSE_REASON_MAX);   /* NULL: the frame has none */
    conn->write_asked = true;
    lws_callback_on_writable (conn->wsi);
}

/*  A reader that cannot keep up: what waits for it is given back at once
    (all but a frame already under way), it gets 1008 "Slow consumer", and
    if it does not take even that within SLOW_CLOSE_GRACE_S it is dropped. */
void
gw_slow_consumer (gateway_t *self, conn_t *conn, slow_reason_t reason)
{
    if (conn->close_code)
        return;
    qms_warn (ACTOR, "event=slow_consumer handle=%llu reason=%s owned=%zu shared=%zu",
              (unsigned long long) conn->handle, gw_slow_names [reason], conn->out.owned,
              outq_pending (&conn->out) - conn->out.owned);
    self->m.slow_closed [reason]++;
    outq_drop_unstarted (&conn->out);
    gw_conn_close (conn, LWS_CLOSE_STATUS_POLICY_VIOLATION, "Slow consumer");
    lws_set_timeout (conn->wsi, PENDING_TIMEOUT_USER_OK, SLOW_CLOSE_GRACE_S);
}


/*  Whether a's queue goes before b's when the budget is short: the larger
    first, and among equals the one waiting longest. */
static bool
victim_before (const conn_t *a, const conn_t *b)
{
    size_t sa = outq_pending (&a->out), sb = outq_pending (&b->out);
    return sa > sb || (sa == sb && a->out_since < b->out_since);
}

#define BUDGET_VICTIMS 64

/*  The connection on slot number plus one n. */
static inline conn_t *
listed_conn (gateway_t *self, uint32_t n)
{
    return self->slots [n - 1];
}

/*  Over --output-budget: close the largest queues (the oldest first among
    equals) until the total is back under nine tenths of it.  One pass over
    the connections whose output waits (the GW_WAITING list: a queue joins
    it when it stops being empty, gw_conn_queued, and leaves it when it is
    empty again) picks up to BUDGET_VICTIMS candidates, kept in order; the
    connections with nothing queued, most of them, cost it nothing. */
size_t
gw_enforce_budget (gateway_t *self)
{
    size_t target = self->cfg->output_budget_bytes / 10 * 9;
    conn_t *victims [BUDGET_VICTIMS];
    size_t count = 0, looked = 0;
    for (uint32_t n = self->lists [GW_WAITING].head; n; n = listed_conn (self, n)->links [GW_WAITING].next) {
        conn_t *conn = listed_conn (self, n);
        looked++;
        if (conn->close_code || outq_empty (&conn->out))
            continue;
        if (count == BUDGET_VICTIMS && !victim_before (conn, victims [count - 1]))
            continue;
        size_t at = count < BUDGET_VICTIMS ? count++ : count - 1;
        while (at > 0 && victim_before (conn, victims [at - 1])) {
            victims [at] = victims [at - 1];
            at--;
        }
        victims [at] = conn;
    }
    for (size_t i = 0; i < count && gw_output_total (self) > target; i++)
        gw_slow_consumer (self, victims [i], SLOW_BUDGET);
    return looked;
}

/*  An event framed once into a buffer that every connection getting it
    shares (a user list's changes, a group event): NULL when out of memory. */
outq_shared_t *
gw_shared_frame (gateway_t *self, const void *json, size_t len)
{
    uint8_t head [10];
    size_t head_len = outq_ws_header (head, len);
    outq_shared_t *frame = outq_shared_new (head_len + len, &self->out_acct);
    if (frame) {
        memcpy (outq_shared_data (frame), head, head_len);
        memcpy (outq_shared_data (frame) + head_len, json, len);
    }
    return frame;
}

/*  A shared frame, as is, by reference. */
void
gw_conn_share (gateway_t *self, conn_t *conn, outq_shared_t *frame)
{
    if (conn->close_code || !frame)
        return;
    bool was_empty = outq_empty (&conn->out);
    if (outq_share (&conn->out, frame, 0, outq_shared_len (frame), OUTQ_PLAIN)) {
        gw_slow_consumer (self, conn, SLOW_QUEUE);
        return;
    }
    gw_conn_queued (self, conn, was_empty);
}

void
gw_conn_send_error (gateway_t *self, conn_t *conn, int event, const char *text)
{
    proto_error (&self->scratch, event, text, strlen (text));
    gw_conn_queue_scratch (self, conn);
}

/*  Everything queued before the router's GW_SYNC has left our buffer. */
void
gw_answer_sync (gateway_t *self, conn_t *conn)
{
    qms_rec_t rec = { .type = QMS_RT_SYNCED, .conn = conn->handle, .req = conn->sync_req };
    conn->sync_req = 0;
    gw_to_router (self, &rec);
}

/*  TLS: our writes may leave in parts (see outq_write). */
static void *
conn_tls (struct lws *wsi)
{
    SSL *ssl = lws_get_ssl (wsi);
    if (ssl)
        SSL_set_mode (ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    return ssl;
}

/*  Write what the socket takes.  -1: the connection is broken. */
int
gw_conn_flush (gateway_t *self, conn_t *conn, int *flags)
{
    *flags = 0;
    if (outq_empty (&conn->out))
        return 0;
    ssize_t n = outq_write (&conn->out, lws_get_socket_fd (conn->wsi), conn_tls (conn->wsi),
                            WRITE_MAX, flags);
    if (n < 0)
        return -1;
    self->m.bytes_out += (uint64_t) n;
    return 0;
}

/*  Read this peer or not: not while its output waits, nor while its input
    budget refills. */
static void
conn_rx_update (conn_t *conn)
{
    bool off = conn->rx_held || conn->rx_shaped;
    if (off != conn->rx_off) {
        conn->rx_off = off;
        lws_rx_flow_control (conn->wsi, off ? 0 : 1);
    }
}

static void
input_refill (gateway_t *self, conn_t *conn)
{
    int64_t bytes_burst = (int64_t) self->cfg->rate_bytes * 4;
    int64_t reads_burst = 2 * (int64_t) self->cfg->rate_burst;
    uint64_t now = self->tick_ms;
    if (conn->in_ms == 0) {
        conn->in_reads = reads_burst > INT32_MAX ? INT32_MAX : (int32_t) reads_burst;
        conn->in_bytes = bytes_burst;
        conn->in_ms = now;
        return;
    }
    uint64_t elapsed = now - conn->in_ms;
    if (elapsed == 0)
        return;
    conn->in_ms = now;
    int64_t reads = conn->in_reads + (int64_t) (elapsed * 2 * (uint64_t) self->cfg->rate_messages / 1000);
    if (reads > reads_burst)
        reads = reads_burst;
    conn->in_reads = reads > INT32_MAX ? INT32_MAX : (int32_t) reads;
    conn->in_bytes += (int64_t) (elapsed * (uint64_t) self->cfg->rate_bytes / 1000);
    if (conn->in_bytes > bytes_burst)
        conn->in_bytes = bytes_burst;
}

/*  A read of len bytes from conn has been taken: spend its budget, and
    stop reading it if that is gone (the tick resumes it, gw_input_resume). */
void
gw_input_spend (gateway_t *self, conn_t *conn, size_t len)
{
    input_refill (self, conn);
    conn->in_reads--;
    conn->in_bytes -= (int64_t) len;
    if ((conn->in_reads < 0 || conn->in_bytes < 0) && !conn->rx_shaped) {
        conn->rx_shaped = true;
        self->m.shaped++;
        qms_buf_append (&self->shaped, &conn->handle, sizeof conn->handle);
        conn_rx_update (conn);
    }
}

/*  Every tick: read again the peers whose budget has refilled. */
void
gw_input_resume (gateway_t *self)
{
    size_t count = self->shaped.len / sizeof (uint64_t), kept = 0;
    uint64_t *handles = (uint64_t *) self->shaped.data;
    for (size_t i = 0; i < count; i++) {
        conn_t *conn = gw_conn_lookup (self, handles [i]);
        if (!conn || !conn->rx_shaped)
            continue;                   /* closed meanwhile */
        input_refill (self, conn);
        if (conn->in_reads >= 0 && conn->in_bytes >= 0) {
            conn->rx_shaped = false;
            conn_rx_update (conn);
        }
        else
            handles [kept++] = handles [i];
    }
    self->shaped.len = kept * sizeof (uint64_t);
}

/*  The close frame (RFC 6455 5.5.1: code, then reason) goes out as our
    other frames do, behind what was queued before it; the connection ends
    once it has left.  (Left to lws through lws_close_reason, the frame was
    not sent when lws ran on libuv.) */
static void
queue_close_frame (conn_t *conn)
{
    size_t reason_len = conn->close_reason ? strlen (conn->close_reason) : 0;
    uint8_t frame [4 + CLOSE_REASON_MAX];
    frame [0] = 0x88;                   /* FIN, close */
    frame [1] = (uint8_t) (2 + reason_len);
    frame [2] = (uint8_t) (conn->close_code >> 8);
    frame [3] = (uint8_t) conn->close_code;
    if (reason_len)
        memcpy (frame + 4, conn->close_reason, reason_len);
    if (outq_append (&conn->out, frame, 4 + reason_len) == 0)
        conn->close_queued = true;
}

/*  Write what conn's socket takes.  -1: the connection is broken; 0: all
    of it left; 1: the rest waits for a writeable callback (asked). */
static int
conn_write (gateway_t *self, conn_t *conn)
{
    int flags;
    if (gw_conn_flush (self, conn, &flags))
        return -1;
    if ((flags & OUTQ_LIST_DONE) && conn->list_stale) {
        conn->list_stale = false;
        gw_presence_schedule (self);       /* the newest list, with the next push */
    }
    if (!outq_empty (&conn->out)) {
        /*  The rest waits for the next writeable callback.  Until then
            nothing is read from this peer: lws writes only whole control
            frames of its own (a pong, a close), and must not put one in
            the middle of ours; and a peer that does not read gets no more
            of our attention than its reading earns. */
        conn->rx_held = true;
        conn_rx_update (conn);
        conn->write_asked = true;
        lws_callback_on_writable (conn->wsi);
        return 1;
    }
    conn->out_since = 0;
    gw_list_remove (self, GW_WAITING, conn);
    if (conn->sync_req)
        gw_answer_sync (self, conn);
    return 0;
}

int
gw_conn_writeable (gateway_t *self, conn_t *conn)
{
    conn->write_asked = false;
    if (conn->close_code && !conn->close_queued) {
        queue_close_frame (conn);
        if (!conn->close_queued)
            return -1;                  /* no memory even for that: just go */
    }
    if (conn->rx_held) {
        /*  lws calls us only once it holds nothing of its own. */
        conn->rx_held = false;
        conn_rx_update (conn);
    }
    int rc = conn_write (self, conn);
    if (rc < 0 || (rc == 0 && conn->close_code))
        return -1;                      /* broken, or the close frame has left */
    return 0;
}

/*  Output queued during a pass leaves at its end, in one write per
    connection, straight to the socket: the same non-blocking write the
    writeable callback makes, without asking for the callback first (on
    epoll each ask and its answer re-register the descriptor: four system
    calls per delivered message).  What the socket does not take waits for
    a writeable callback, as before.  The callback stays the way out for a
    close, for TLS (OpenSSL's state is lws's to drive), and while lws has a
    control frame of its own half-written. */
void
gw_write_pending (gateway_t *self)
{
    for (size_t i = 0; i < self->to_write.len / sizeof (uint64_t); i++) {
        uint64_t handle;
        memcpy (&handle, self->to_write.data + i * sizeof handle, sizeof handle);   /* it may grow meanwhile */
        conn_t *conn = gw_conn_lookup (self, handle);
        if (!conn)
            continue;                   /* closed since */
        conn->write_listed = false;
        if (conn->close_code || conn->write_asked || outq_empty (&conn->out))
            continue;
        if (conn_tls (conn->wsi) || lws_partial_buffered (conn->wsi) || conn_write (self, conn) < 0) {
            /*  lws's way: the callback writes, or finds it broken and closes. */
            conn->write_asked = true;
            lws_callback_on_writable (conn->wsi);
        }
    }
    qms_buf_reset (&self->to_write);
}

/* ------------------------------------------------------------------------ */
/*  Open connections per address (--max-connections-per-address). */

bool
gw_match_peer (const void *item, const void *key)
{
    return strcmp (((const peer_t *) item)->address, (const char *) key) == 0;
}

bool
gw_trusted (const qms_config_t *cfg, const char *address)
{
    for (int i = 0; i < cfg->trusted_count; i++)
        if (qms_cidr_contains (&cfg->trusted [i], address))
            return true;
    return false;
}

/*  One hop of a forwarding header into out, without quotes, brackets or
    port ("[2001:db8::1]:4711" -> "2001:db8::1", "192.0.2.1:80" ->
    "192.0.2.1"); false when it is not an address. */
static bool
hop_address (const char *start, size_t len, char *out, size_t size)
{
    while (len && (*start == ' ' || *start == '\t' || *start == '"')) {
        start++;
        len--;
    }
    while (len && (start [len - 1] == ' ' || start [len - 1] == '\t' || start [len - 1] == '"'))
        len--;
    if (len && *start == '[') {
        const char *close = memchr (start, ']', len);
        if (!close)
            return false;
        len = (size_t) (close - start - 1);
        start++;
    }
    else {
        const char *colon = memchr (start, ':', len);
        if (colon && !memchr (colon + 1, ':', len - (size_t) (colon - start) - 1))
            len = (size_t) (colon - start);         /* IPv4 with a port */
    }
    if (len == 0 || len >= size)
        return false;
    memcpy (out, start, len);
    out [len] = 0;
    uint8_t probe [16];
    return inet_pton (AF_INET, out, probe) == 1 || inet_pton (AF_INET6, out, probe) == 1;
}

void
gw_client_address (const qms_config_t *cfg, const char *peer, const char *xff,
                   const char *forwarded, char *out, size_t size)
{
    snprintf (out, size, "%s", peer);
    if (!gw_trusted (cfg, peer))
        return;                     /* only a trusted proxy may name someone else */
    /*  Right to left: each hop was appended by the one after it; the
        first that is not a trusted proxy is the client.  A hop that is no
        address ends the walk at the last good one. */
    const char *list = xff && *xff ? xff : forwarded;
    if (!list)
        return;
    bool fwd = list == forwarded;
    size_t end = strlen (list);
    while (end > 0) {
        size_t start = end;
        while (start > 0 && list [start - 1] != ',')
            start--;
        const char *hop = list + start;
        size_t len = end - start;
        if (fwd) {                  /* for=... among ;-separated pairs */
            const char *for_ = NULL;
            for (size_t i = 0; i + 4 <= len; i++)
                if (strncasecmp (hop + i, "for=", 4) == 0 && (i == 0 || strchr (" ;\t", hop [i - 1]))) {
                    for_ = hop + i + 4;
                    break;
                }
            if (!for_)
                return;
            len = strcspn (for_, ";,");
            hop = for_;
        }
        char address [64];
        if (!hop_address (hop, len, address, sizeof address))
            return;
        snprintf (out, size, "%s", address);
        if (!gw_trusted (cfg, address))
            return;
        end = start ? start - 1 : 0;
    }
}

/*  The client address of a WebSocket handshake or HTTP request on wsi. */
static void
wsi_client_address (gateway_t *self, struct lws *wsi, char *out, size_t size)
{
    char peer [64] = "";
    const char *proxied = gw_proxied_address (wsi);
    if (proxied)
        snprintf (peer, sizeof peer, "%s", proxied);    /* the PROXY header's */
    else
        lws_get_peer_simple (wsi, peer, sizeof peer);
    if (!self->cfg->trusted_count || !gw_trusted (self->cfg, peer)) {
        snprintf (out, size, "%s", peer);
        return;
    }
    char xff [1024] = "", forwarded [1024] = "";
    if (lws_hdr_total_length (wsi, WSI_TOKEN_X_FORWARDED_FOR) < (int) sizeof xff)
        lws_hdr_copy (wsi, xff, sizeof xff, WSI_TOKEN_X_FORWARDED_FOR);
    if (lws_hdr_custom_length (wsi, "forwarded:", 10) < (int) sizeof forwarded)
        lws_hdr_custom_copy (wsi, forwarded, sizeof forwarded, "forwarded:", 10);
    gw_client_address (self->cfg, peer, xff, forwarded [0] ? forwarded : NULL, out, size);
}

/*  Count an established connection against its address; false (and
    nothing counted) when the address is at its limit. */
bool
gw_peer_enter (gateway_t *self, conn_t *conn)
{
    char address [64] = "";
    wsi_client_address (self, conn->wsi, address, sizeof address);
    uint64_t h = qms_map_hash_bytes (self->users_seed, address, strlen (address));
    peer_t *peer = (peer_t *) qms_map_find (&self->peers, h, address);
    if (!peer) {
        peer = calloc (1, sizeof *peer);
        if (!peer)
            return false;
        peer->h = h;
        snprintf (peer->address, sizeof peer->address, "%s", address);
        if (qms_map_insert (&self->peers, h, peer)) {
            free (peer);
            return false;
        }
    }
    if (peer->count >= (uint32_t) self->cfg->max_per_address) {
        qms_warn (ACTOR, "event=connection_refused reason=max_per_address address=%s limit=%d",
                  address, self->cfg->max_per_address);
        return false;
    }
    peer->count++;
    conn->peer = peer;
    return true;
}

void
gw_peer_leave (gateway_t *self, conn_t *conn)
{
    peer_t *peer = conn->peer;
    conn->peer = NULL;
    if (peer && --peer->count == 0) {
        qms_map_remove (&self->peers, peer->h, peer);
        free (peer);
    }
}

/* ------------------------------------------------------------------------ */
/*  The scan at each tick: stalled output, idle peers.

    Over the connections on two lists (not every slot), and nothing per
    frame but a store of the tick's time and a move to a list's tail:
    - --write-timeout, once a second: output that has not drained for that
      long belongs to a reader that is gone or stalled (closed 1008, slow
      consumer);
    - idle pings, every tick: one that has sent nothing for --ping-interval
      seconds gets a ping (framed by us, like everything we write), and one
      that stays silent for twice that plus 10 seconds is dropped, so that
      dead peers do not hold memory forever. */

void
gw_list_remove (gateway_t *self, int list, conn_t *conn)
{
    if (!(conn->listed & (1u << list)))
        return;
    gw_list_t *l = &self->lists [list];
    gw_link_t *k = &conn->links [list];
    if (k->prev)
        listed_conn (self, k->prev)->links [list].next = k->next;
    else
        l->head = k->next;
    if (k->next)
        listed_conn (self, k->next)->links [list].prev = k->prev;
    else
        l->tail = k->prev;
    k->prev = k->next = 0;
    conn->listed &= (uint8_t) ~(1u << list);
}

void
gw_list_tail (gateway_t *self, int list, conn_t *conn)
{
    if (!conn->handle)
        return;
    gw_list_remove (self, list, conn);
    gw_list_t *l = &self->lists [list];
    uint32_t n = (uint32_t) (conn->handle & SLOT_MASK) + 1;
    conn->links [list].prev = l->tail;
    conn->links [list].next = 0;
    if (l->tail)
        listed_conn (self, l->tail)->links [list].next = n;
    else
        l->head = n;
    l->tail = n;
    conn->listed |= (uint8_t) (1u << list);
}

size_t
gw_conn_scan (gateway_t *self, uint64_t now, bool waiting)
{
    /*  FIN + ping, 3 bytes of payload: lws 4.1 passes a pong up to us only
        when it carries a payload, and a pong echoes the ping's. */
    static const uint8_t ping_frame [5] = { 0x89, 0x03, 'q', 'm', 's' };
    uint64_t interval = (uint64_t) self->cfg->ping_interval * 1000;
    uint64_t hangup = 2 * interval + 10000;
    uint64_t stall = (uint64_t) self->cfg->write_timeout * 1000;
    size_t looked = 0;
    /*  Output that waits: stalled for --write-timeout, or a writeable
        callback asked for long ago. */
    for (uint32_t n = waiting ? self->lists [GW_WAITING].head : 0, next; n; n = next) {
        conn_t *conn = listed_conn (self, n);
        next = conn->links [GW_WAITING].next;
        looked++;
        if (conn->close_code || !conn->out_since)
            continue;
        if (stall && now - conn->out_since >= stall) {
            gw_slow_consumer (self, conn, SLOW_STALLED);
            continue;
        }
        /*  Asked once per wait (gw_conn_queued); should lws ever let an ask
            go unanswered, output that has waited a second asks again. */
        if (conn->write_asked && now - conn->out_since >= 1000)
            lws_callback_on_writable (conn->wsi);
    }
    if (!interval)
        return looked;
    /*  The silent, from the longest silent on, up to the first that is not:
        the rest were heard later.  A connection pinged and still silent
        stays at the head until it answers or is closed. */
    for (uint32_t n = self->lists [GW_QUIET].head, next; n; n = next) {
        conn_t *conn = listed_conn (self, n);
        next = conn->links [GW_QUIET].next;
        uint64_t silent = now - conn->heard_ms;
        if (silent < interval)
            break;
        looked++;
        if (conn->close_code)
            continue;
        if (silent >= hangup) {
            qms_info (ACTOR, "event=idle_close handle=%llu silent_ms=%llu",
                      (unsigned long long) conn->handle, (unsigned long long) silent);
            self->m.idle_closed++;
            gw_list_remove (self, GW_QUIET, conn);     /* it is closing */
            lws_set_timeout (conn->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
            continue;
        }
        if (now - conn->pinged_ms >= interval) {
            bool was_empty = outq_empty (&conn->out);
            if (outq_append (&conn->out, ping_frame, sizeof ping_frame) == 0) {
                conn->pinged_ms = now;
                self->m.pings++;
                gw_conn_queued (self, conn, was_empty);
            }
        }
    }
    return looked;
}

/* ------------------------------------------------------------------------ */

void
gw_conn_test (bool verbose)
{
    if (verbose)
        printf (" * gw_conn: ");
    {
        /*  The client's address behind trusted proxies. */
        qms_config_t tc;
        qms_config_defaults (&tc);
        char got [64];
        const char *none [][4] = {
            /*  peer, X-Forwarded-For, Forwarded, expected */
            { "192.0.2.9", "198.51.100.1", NULL, "192.0.2.9" },         /* nobody is trusted */
        };
        gw_client_address (&tc, none [0][0], none [0][1], none [0][2], got, sizeof got);
        assert (strcmp (got, none [0][3]) == 0);
        assert (qms_cidr_parse ("10.0.0.0/8", &tc.trusted [0]) == 0);
        assert (qms_cidr_parse ("::1", &tc.trusted [1]) == 0);
        tc.trusted_count = 2;
        const char *cases [][4] = {
            { "192.0.2.9", "198.51.100.1", NULL, "192.0.2.9" },         /* not a trusted peer */
            { "10.0.0.5", "198.51.100.1", NULL, "198.51.100.1" },
            { "10.0.0.5", "6.6.6.6, 198.51.100.1", NULL, "198.51.100.1" },  /* a forged hop on the left */
            { "10.0.0.5", "198.51.100.1, 10.1.1.1", NULL, "198.51.100.1" }, /* two proxies */
            { "::ffff:10.0.0.5", "198.51.100.1", NULL, "198.51.100.1" },
            { "::1", " 2001:db8::7 ", NULL, "2001:db8::7" },
            { "10.0.0.5", "", NULL, "10.0.0.5" },                         /* no header: the proxy */
            { "10.0.0.5", "198.51.100.1, garbage", NULL, "10.0.0.5" },    /* ends at the last good hop */
            { "10.0.0.5", "10.2.2.2, 10.3.3.3", NULL, "10.2.2.2" },       /* all proxies: the farthest */
            { "10.0.0.5", "198.51.100.1:4711", NULL, "198.51.100.1" },
            { "10.0.0.5", NULL, "for=192.0.2.60;proto=http;by=10.0.0.5", "192.0.2.60" },
            { "10.0.0.5", NULL, "for=\"[2001:db8:cafe::17]:4711\", for=10.9.9.9", "2001:db8:cafe::17" },
            { "10.0.0.5", NULL, "proto=https", "10.0.0.5" },
        };
        for (size_t i = 0; i < sizeof cases / sizeof cases [0]; i++) {
            gw_client_address (&tc, cases [i][0], cases [i][1], cases [i][2], got, sizeof got);
            if (strcmp (got, cases [i][3]) != 0) {
                fprintf (stderr, "\ncase %zu: got %s, expected %s\n", i, got, cases [i][3]);
                assert (false);
            }
        }
    }
    /*  Slot handles: reuse of a slot never revives an old handle. */
    qms_config_t cfg;
    qms_config_defaults (&cfg);
    cfg.max_connections = 2;
    gateway_t self;
    memset (&self, 0, sizeof self);
    self.cfg = &cfg;
    self.max_slots = 2;
    conn_t *slots [2] = { 0 };
    uint32_t gens [2] = { 0 }, free_slots [2] = { 1, 0 };
    self.slots = slots;
    self.gens = gens;
    self.free_slots = free_slots;
    self.free_count = 2;
    conn_t a = { 0 }, b = { 0 }, c = { 0 };
    assert (gw_conn_attach (&self, &a) && gw_conn_attach (&self, &b));
    assert (!gw_conn_attach (&self, &c));              /* full */
    assert (a.handle && b.handle && a.handle != b.handle);
    assert (gw_conn_lookup (&self, a.handle) == &a && gw_conn_lookup (&self, b.handle) == &b);
    uint64_t old = a.handle;
    gw_conn_detach (&self, &a);
    assert (gw_conn_lookup (&self, old) == NULL && a.handle == 0);
    assert (gw_conn_attach (&self, &c));
    assert (c.handle != old && (c.handle & SLOT_MASK) == (old & SLOT_MASK));
    assert (gw_conn_lookup (&self, old) == NULL && gw_conn_lookup (&self, c.handle) == &c);
    assert (gw_conn_lookup (&self, 12345678) == NULL);
    assert (self.open_count == 2);

    /*  The scan looks at the connections silent for the ping interval,
        longest silent first, and at output that waits: not at the others. */
    {
        enum { N = 4 };
        qms_config_t scfg;
        qms_config_defaults (&scfg);
        scfg.ping_interval = 30;
        scfg.write_timeout = 0;
        gateway_t g;
        memset (&g, 0, sizeof g);
        g.cfg = &scfg;
        conn_t *gslots [N] = { 0 };
        uint32_t ggens [N] = { 0 }, gfree [N] = { 3, 2, 1, 0 };
        g.slots = gslots;
        g.gens = ggens;
        g.free_slots = gfree;
        g.free_count = g.max_slots = N;
        conn_t sc [N];
        memset (sc, 0, sizeof sc);
        g.tick_ms = 1000;
        for (int i = 0; i < N; i++) {
            outq_init (&sc [i].out, &g.out_acct);
            assert (gw_conn_attach (&g, &sc [i]));
        }
#define SCAN_SLOT(i) ((uint32_t) (sc [i].handle & SLOT_MASK) + 1)
        assert (g.lists [GW_QUIET].head == SCAN_SLOT (0) && g.lists [GW_QUIET].tail == SCAN_SLOT (3));
        assert (gw_conn_scan (&g, 30999, true) == 0);            /* nobody silent for 30 s */
        g.tick_ms = 20000;
        gw_conn_heard (&g, &sc [1]);                         /* to the tail */
        gw_conn_heard (&g, &sc [1]);                         /* already there */
        gw_conn_detach (&g, &sc [3]);                        /* off every list */
        assert (g.lists [GW_QUIET].head == SCAN_SLOT (0) && g.lists [GW_QUIET].tail == SCAN_SLOT (1));
        assert (sc [0].links [GW_QUIET].next == SCAN_SLOT (2) && sc [2].links [GW_QUIET].next == SCAN_SLOT (1));
        assert (sc [3].listed == 0);
        /*  At 31 s: c0 and c2 have been silent 30 s and get a ping; c1 is
            not looked at. */
        assert (gw_conn_scan (&g, 31000, true) == 2);
        assert (sc [0].pinged_ms == 31000 && sc [2].pinged_ms == 31000 && sc [1].pinged_ms == 0);
        assert (g.m.pings == 2);
        assert (g.lists [GW_WAITING].head == SCAN_SLOT (0) && g.lists [GW_WAITING].tail == SCAN_SLOT (2));
        /*  A second later: their pings still wait (2), they are still
            silent (2), and are not pinged again within the interval. */
        assert (gw_conn_scan (&g, 32000, true) == 4 && g.m.pings == 2);
        /*  A tick between the seconds looks at the silent only. */
        assert (gw_conn_scan (&g, 32100, false) == 2 && g.m.pings == 2);
        /*  c0 answers: it goes to the tail, and its output is written. */
        g.tick_ms = 32500;
        gw_conn_heard (&g, &sc [0]);
        gw_list_remove (&g, GW_WAITING, &sc [0]);
        gw_list_remove (&g, GW_WAITING, &sc [0]);            /* not on it: nothing */
        assert (g.lists [GW_WAITING].head == SCAN_SLOT (2) && g.lists [GW_WAITING].tail == SCAN_SLOT (2));
        assert (g.lists [GW_QUIET].head == SCAN_SLOT (2) && g.lists [GW_QUIET].tail == SCAN_SLOT (0));
        /*  At 61 s: c2 is pinged again; c1 (silent 41 s) too; c0 (28.5 s) not. */
        assert (gw_conn_scan (&g, 61000, true) == 1 + 2 && g.m.pings == 4);
        assert (sc [1].pinged_ms == 61000 && sc [2].pinged_ms == 61000 && sc [0].pinged_ms == 31000);
        /*  The budget's walk looks at the output that waits (c2, c1), not
            at c0 (off the list: taken as written) or c3; under nine tenths
            of the budget it closes nobody. */
        assert (!outq_empty (&sc [0].out) && outq_empty (&sc [3].out));
        assert (gw_output_total (&g) < scfg.output_budget_bytes / 10 * 9);
        assert (gw_enforce_budget (&g) == 2 && !sc [1].close_code && !sc [2].close_code);
        for (int i = 0; i < N; i++) {
            gw_conn_detach (&g, &sc [i]);
            outq_clear (&sc [i].out);
        }
        assert (!g.lists [GW_QUIET].head && !g.lists [GW_QUIET].tail);
        assert (!g.lists [GW_WAITING].head && !g.lists [GW_WAITING].tail);
        qms_buf_free (&g.to_write);
#undef SCAN_SLOT
    }

    /*  Rate limit: a burst, then refused, then refilled over time. */
    cfg.rate_messages = 1000;
    cfg.rate_burst = 5;
    conn_t r = { 0 };
    int allowed = 0;
    for (int i = 0; i < 20; i++)
        allowed += gw_rate_allowed (&self, &r, 1000);
    assert (allowed == 5);
    allowed = 0;                                    /* 2 ms later: 2 more */
    for (int i = 0; i < 20; i++)
        allowed += gw_rate_allowed (&self, &r, 1002);
    assert (allowed == 2);
    allowed = 0;                                    /* 10 ms later: 10 more, capped at 5 */
    for (int i = 0; i < 20; i++)
        allowed += gw_rate_allowed (&self, &r, 1012);
    assert (allowed == 5);

    /*  Input shaping: a new peer starts with twice --rate-burst reads and
        four seconds of --rate-limit-bytes; both refill with time, capped. */
    cfg.rate_messages = 100;
    cfg.rate_burst = 10;
    cfg.rate_bytes = 1000;
    conn_t s = { 0 };
    self.tick_ms = 5000;
    input_refill (&self, &s);
    assert (s.in_reads == 20 && s.in_bytes == 4000 && s.in_ms == 5000);
    s.in_reads = -3;
    s.in_bytes = -500;
    input_refill (&self, &s);                       /* no time passed: nothing */
    assert (s.in_reads == -3 && s.in_bytes == -500);
    self.tick_ms = 5100;                            /* 100 ms: 20 reads, 100 bytes */
    input_refill (&self, &s);
    assert (s.in_reads == 17 && s.in_bytes == -400 && s.in_ms == 5100);
    self.tick_ms = 65100;                           /* a minute: capped */
    input_refill (&self, &s);
    assert (s.in_reads == 20 && s.in_bytes == 4000);

    /*  Close codes as /metrics counts them. */
    assert (gw_close_index (1001) == 0 && gw_close_index (1007) == 1 && gw_close_index (1008) == 2);
    assert (gw_close_index (1009) == 3 && gw_close_index (4001) == 4);
    assert (gw_close_index (1000) == 5 && gw_close_index (0) == 5);
    assert (strcmp (gw_slow_names [SLOW_QUEUE], "queue_full") == 0);
    assert (strcmp (gw_slow_names [SLOW_BUDGET], "output_budget") == 0);

    /*  Over the budget, the larger queue goes first, then the older. */
    outq_acct_t acct = { 0 };
    conn_t big = { 0 }, small = { 0 }, older = { 0 };
    outq_init (&big.out, &acct);
    outq_init (&small.out, &acct);
    outq_init (&older.out, &acct);
    char bytes [100] = { 0 };
    assert (outq_append (&big.out, bytes, 100) == 0);
    assert (outq_append (&small.out, bytes, 10) == 0);
    assert (outq_append (&older.out, bytes, 10) == 0);
    small.out_since = 20;
    older.out_since = 10;
    assert (victim_before (&big, &small) && !victim_before (&small, &big));
    assert (victim_before (&older, &small) && !victim_before (&small, &older));
    assert (!victim_before (&small, &small));
    assert (acct.owned == 120);
    outq_clear (&big.out);
    outq_clear (&small.out);
    outq_clear (&older.out);
    assert (acct.owned == 0);
    if (verbose)
        printf ("OK\n");
}
