/*  gw_dispatch.c - the gateway's traffic with the actors: client requests
    become records (batched per destination, flushed once per loop pass),
    and records from the router and auth become client events.  Also what
    keeps a request from waiting forever: the actors' heartbeats, their
    liveness, and a deadline for every login and authorize in flight.
*/
#define _GNU_SOURCE
#include "gw_internal.h"
#include "qms_inbox.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zmq.h>

/* ------------------------------------------------------------------------ */
/*  Records to the actors: batched per pass, flushed from a zero-delay timer. */


static void
flush_batches (gateway_t *self)
{
    /*  A send can take the news ZMQ_FD would have given of an arrival on
        that socket: each socket sent on is drained after. */
    if (self->to_auth.len) {
        if (qms_batch_send (self->auth_raw, NULL, 0, &self->to_auth))
            qms_warn (ACTOR, "event=send_failed peer=auth bytes=%zu error=\"%s\"",
                      self->to_auth.len, zmq_strerror (errno));
        qms_buf_reset (&self->to_auth);
        gw_drain_peer (self, PEER_AUTH);
    }
    if (self->to_store.len) {
        qms_batch_send (self->store_raw, NULL, 0, &self->to_store);    /* figures only: may be lost */
        qms_buf_reset (&self->to_store);
        gw_drain_peer (self, PEER_STORE);
    }
    if (self->to_router.len) {
        if (qms_batch_send (self->router_raw, NULL, 0, &self->to_router))
            qms_warn (ACTOR, "event=send_failed peer=router bytes=%zu error=\"%s\"",
                      self->to_router.len, zmq_strerror (errno));
        qms_buf_reset (&self->to_router);
        gw_drain_peer (self, PEER_ROUTER);
    }
}

static void
sul_flush_cb (lws_sorted_usec_list_t *sul)
{
    gateway_t *self = lws_container_of (sul, gateway_t, sul_flush);
    PASS_BEGIN (self);
    self->flush_scheduled = false;
    flush_batches (self);
}

void
gw_schedule_flush (gateway_t *self)
{
    if (!self->flush_scheduled) {
        self->flush_scheduled = true;
        lws_sul_schedule (self->ctx, 0, &self->sul_flush, sul_flush_cb, 1);
    }
}

void
gw_to_router (gateway_t *self, const qms_rec_t *rec)
{
    if (qms_rec_encode (&self->to_router, rec))
        qms_error (ACTOR, "event=encode_failed type=%s", qms_type_name (rec->type));
    gw_schedule_flush (self);
}

void
gw_to_store (gateway_t *self, const qms_rec_t *rec)
{
    if (self->store_raw && qms_rec_encode (&self->to_store, rec) == 0)
        gw_schedule_flush (self);
}

void
gw_to_auth (gateway_t *self, const qms_rec_t *rec)
{
    if (qms_rec_encode (&self->to_auth, rec))
        qms_error (ACTOR, "event=encode_failed type=%s", qms_type_name (rec->type));
    gw_schedule_flush (self);
}

static const char *k_unavailable = "Service temporarily unavailable.";

/* ------------------------------------------------------------------------ */
/*  Liveness of the actors, and requests waiting on them. */

bool
gw_router_alive (gateway_t *self)
{
    return qms_mono_ms () - self->router_seen < PEER_TIMEOUT_MS;
}

bool
gw_auth_alive (gateway_t *self)
{
    return qms_mono_ms () - self->auth_seen < PEER_TIMEOUT_MS;
}

bool
gw_store_alive (gateway_t *self)
{
    return self->store_seen && qms_mono_ms () - self->store_seen < PEER_TIMEOUT_MS;
}

static void
wait_begin (gateway_t *self, conn_t *conn, wait_kind_t kind)
{
    conn->waiting = (uint8_t) kind;
    conn->wait_seq = ++self->wait_seq;
    conn->wait_started = qms_mono_ms ();
    if (self->wait_count == self->wait_cap) {
        size_t cap = self->wait_cap ? self->wait_cap * 2 : 64;
        waiting_t *waits = malloc (cap * sizeof *waits);
        if (!waits)
            return;                     /* no timeout for this one: still answered by the actor */
        for (size_t i = 0; i < self->wait_count; i++)
            waits [i] = self->waits [(self->wait_head + i) % self->wait_cap];
        free (self->waits);
        self->waits = waits;
        self->wait_cap = cap;
        self->wait_head = 0;
    }
    waiting_t *w = &self->waits [(self->wait_head + self->wait_count++) % self->wait_cap];
    w->handle = conn->handle;
    w->seq = conn->wait_seq;
    w->deadline = qms_mono_ms () + REQUEST_TIMEOUT_MS;
}

static void
wait_end (conn_t *conn)
{
    conn->waiting = WAIT_NONE;
}


/*  Requests whose actor never answered get an answer now. */
void
gw_wait_expire (gateway_t *self)
{
    uint64_t now = qms_mono_ms ();
    while (self->wait_count) {
        waiting_t *w = &self->waits [self->wait_head];
        if (w->deadline > now)
            break;
        conn_t *conn = gw_conn_lookup (self, w->handle);
        if (conn && conn->waiting && conn->wait_seq == w->seq) {
            qms_warn (ACTOR, "event=request_timeout handle=%llu kind=%s", (unsigned long long) conn->handle,
                      conn->waiting == WAIT_LOGIN ? "login" : "authorize");
            gw_conn_send_error (self, conn, conn->waiting == WAIT_LOGIN ? QMS_EV_LOGIN : QMS_EV_AUTHORIZATION,
                             k_unavailable);
            wait_end (conn);
        }
        self->wait_head = (self->wait_head + 1) % self->wait_cap;
        self->wait_count--;
    }
}

/*  The router holds none of our connections (it restarted, or had given us
    up): announce every bound one again, so it rebuilds who is online.  The
    router binds them without a word to the clients. */
static void
reannounce (gateway_t *self)
{
    size_t count = 0;
    for (size_t slot = 0; slot < self->max_slots; slot++) {
        conn_t *conn = self->slots [slot];
        if (!conn || !conn->bound)
            continue;
        char hash [QMS_HASH_HEX + 1];
        qms_sha256_hex (conn->token, conn->token_len, hash);
        qms_rec_t rec = { .type = QMS_RT_AUTHORIZE, .conn = conn->handle,
                          .num = QMS_SESSION_SILENT | (conn->receipts ? QMS_SESSION_RECEIPTS : 0) };
        rec.s [QMS_AUTHORIZE_HASH] = qms_str (hash);
        gw_to_router (self, &rec);
        count++;
    }
    if (count)
        qms_info (ACTOR, "event=reannounced connections=%zu", count);
}

void
gw_heartbeat (gateway_t *self)
{
    qms_rec_t hello = { .type = QMS_RT_HELLO, .num = self->nonce, .s = { [QMS_HELLO_NAME] = qms_str (self->name) } };
    gw_to_router (self, &hello);
    qms_rec_t ping = { .type = QMS_AUTH_PING };
    gw_to_auth (self, &ping);
    /*  The store's figures, req 0: its liveness and writability for /readyz. */
    qms_rec_t stats = { .type = QMS_STATS_GET, .req = 0 };
    gw_to_store (self, &stats);
}

/* ------------------------------------------------------------------------ */
/*  Client requests. */


static void
handle_login (gateway_t *self, conn_t *conn, const proto_request_t *req)
{
    conn->receipts = req->receipts;
    conn->presence = (uint8_t) req->presence;
    /*  The client's address as its connection was counted (a proxy's
        client, when the peer is a --trusted-proxy). */
    const char *peer = conn->peer ? conn->peer->address : "";
    qms_rec_t rec = { .type = QMS_AUTH_LOGIN, .conn = conn->handle,
                      .num = req->action == QMS_REQ_REGISTER ? QMS_LOGIN_REGISTER : 0 };
    rec.s [QMS_LOGIN_NAME] = req->name;
    rec.s [QMS_LOGIN_PASSWORD] = req->password;
    rec.s [QMS_LOGIN_PUBKEY] = req->pubkey;
    rec.s [QMS_LOGIN_ADDRESS] = qms_str (peer);
    gw_to_auth (self, &rec);
}

/*  A request's token as the router takes it.  The fast path: the token this
    connection is bound to needs no hashing and no lookup by token in the
    router, so it goes as an empty string; any other goes as its SHA-256. */
static qms_str_t
token_ref (conn_t *conn, qms_str_t token, char *hash)
{
    if (conn->bound && qms_ct_equal (token.ptr, token.len, conn->token, conn->token_len))
        return qms_str ("");
    qms_sha256_hex (token.ptr, token.len, hash);
    return qms_str (hash);
}

/*  Tokens we issue are always QMS_TOKEN_CHARS long; anything else can be
    answered at once without asking anyone. */
static bool
token_plausible (qms_str_t token)
{
    return token.len == QMS_TOKEN_CHARS;
}

static bool
is_group_action (int action)
{
    return action >= QMS_REQ_GROUP_CREATE && action <= QMS_REQ_GROUP_MESSAGE;
}

/*  A group request's answer when it fails before it reaches the router. */
static void
group_request_error (gateway_t *self, conn_t *conn, const proto_request_t *req, const char *text)
{
    proto_group_error (&self->scratch, req->action, req->client_id, req->group, text, strlen (text));
    gw_conn_queue_scratch (self, conn);
}

/*  A group request as the router takes it: RT_GROUP (create, update, list)
    or RT_GROUP_MESSAGE, with the token as for a MessageRequest. */
static void
handle_group_request (gateway_t *self, conn_t *conn, const proto_request_t *req)
{
    char hash [QMS_HASH_HEX + 1];
    qms_rec_t rec = { .conn = conn->handle };
    if (req->action == QMS_REQ_GROUP_MESSAGE) {
        rec.type = QMS_RT_GROUP_MESSAGE;
        rec.s [QMS_GMSG_GROUP] = req->group;
        rec.s [QMS_GMSG_TEXT] = req->message;
        rec.s [QMS_GMSG_HASH] = token_ref (conn, req->token, hash);
        rec.s [QMS_GMSG_CLIENT_ID] = req->client_id;
        gw_to_router (self, &rec);
        return;
    }
    qms_buf_t members;
    qms_buf_init (&members);
    if (proto_members_lines (req, &members)) {
        qms_buf_free (&members);
        group_request_error (self, conn, req, k_unavailable);
        return;
    }
    rec.type = QMS_RT_GROUP;
    rec.num = req->group_op;
    rec.s [QMS_GROUP_HASH] = token_ref (conn, req->token, hash);
    rec.s [QMS_GROUP_ID] = req->group;
    rec.s [QMS_GROUP_NAME] = req->name;
    rec.s [QMS_GROUP_MEMBERS] = qms_strn ((const char *) members.data, members.len);
    rec.s [QMS_GROUP_CLIENT_ID] = req->client_id;
    gw_to_router (self, &rec);
    qms_buf_free (&members);
}

static void
handle_request (gateway_t *self, conn_t *conn, const char *data, size_t len)
{
    self->m.bytes_in += len;
    uint64_t now = qms_mono_ms ();     /* one clock read per request */
    if (!gw_rate_allowed (self, conn, now)) {
        self->m.rate_limited++;
        char text [96];
        snprintf (text, sizeof text, "Rate limit exceeded: at most %d requests per second.",
                  self->cfg->rate_messages);
        gw_conn_send_error (self, conn, -1, text);
        return;
    }
    const qms_config_t *cfg = self->cfg;
    if (self->group_limits.max_members != cfg->group_max_members
    ||  self->group_limits.name_max != cfg->group_name_max)
        proto_limits_init (&self->group_limits, cfg->group_max_members, cfg->group_name_max);
    proto_request_t req;
    proto_parse_limits (data, len, &self->group_limits, &req);
    char hash [QMS_HASH_HEX + 1];
    qms_rec_t rec = { .conn = conn->handle };
    bool login = req.action == QMS_REQ_LOGIN || req.action == QMS_REQ_REGISTER;

    if (req.action >= 0 && req.action < QMS_REQ_COUNT)
        self->m.requests [req.action]++;
    if (req.status == PROTO_ERROR && req.error_event < 0)
        self->m.malformed++;
    if (req.status == PROTO_OK && is_group_action (req.action) && now - self->router_seen >= PEER_TIMEOUT_MS)
        group_request_error (self, conn, &req, k_unavailable);
    else
    if (req.status == PROTO_OK
    &&  (now - self->router_seen >= PEER_TIMEOUT_MS || (login && !gw_auth_alive (self)))) {
        /*  An actor it needs is gone: say so now rather than let it wait. */
        int event = login ? QMS_EV_LOGIN : req.action == QMS_REQ_AUTHORIZE ? QMS_EV_AUTHORIZATION
                  : req.action == QMS_REQ_MESSAGE ? QMS_EV_MESSAGE : -1;
        gw_conn_send_error (self, conn, event, k_unavailable);
    }
    else
    if (req.status == PROTO_ERROR && is_group_action (req.action))
        group_request_error (self, conn, &req, req.error);
    else
    if (req.status == PROTO_ERROR)
        gw_conn_send_error (self, conn, req.error_event, req.error);
    else
    if (req.status == PROTO_INVALID_USER
    || (req.action != QMS_REQ_LOGIN && req.action != QMS_REQ_REGISTER && !token_plausible (req.token))) {
        if (req.action != QMS_REQ_LOGOUT) {
            proto_invalid_user (&self->scratch);
            gw_conn_queue_scratch (self, conn);
        }
    }
    else
    switch (req.action) {
        case QMS_REQ_LOGIN:
        case QMS_REQ_REGISTER:
            handle_login (self, conn, &req);
            wait_begin (self, conn, WAIT_LOGIN);
            break;
        case QMS_REQ_AUTHORIZE:
            memcpy (conn->pending, req.token.ptr, req.token.len);
            conn->pending_len = (uint8_t) req.token.len;
            conn->receipts = req.receipts;
            conn->presence = (uint8_t) req.presence;
            qms_sha256_hex (req.token.ptr, req.token.len, hash);
            rec.type = QMS_RT_AUTHORIZE;
            rec.num = req.receipts ? QMS_SESSION_RECEIPTS : 0;
            rec.s [QMS_AUTHORIZE_HASH] = qms_str (hash);
            gw_to_router (self, &rec);
            wait_begin (self, conn, WAIT_AUTHORIZE);
            break;
        case QMS_REQ_LOGOUT:
            qms_sha256_hex (req.token.ptr, req.token.len, hash);
            rec.type = QMS_RT_LOGOUT;
            rec.s [QMS_LOGOUT_HASH] = qms_str (hash);
            gw_to_router (self, &rec);
            break;
        case QMS_REQ_RECEIPT:
        case QMS_REQ_USER_LOOKUP:
            /*  One record per message id or name. */
            rec.type = req.action == QMS_REQ_RECEIPT ? QMS_RT_RECEIPT : QMS_RT_LOOKUP;
            rec.s [QMS_ASK_HASH] = token_ref (conn, req.token, hash);
            for (size_t i = 0; i < proto_receipt_count (&req); i++) {
                rec.s [QMS_ASK_ITEM] = proto_receipt_id (&req, i);
                gw_to_router (self, &rec);
            }
            break;
        case QMS_REQ_MESSAGE:
            rec.type = QMS_RT_MESSAGE;
            rec.s [QMS_MESSAGE_TARGET] = req.target;
            rec.s [QMS_MESSAGE_TEXT] = req.message;
            rec.s [QMS_MESSAGE_CLIENT_ID] = req.client_id;
            rec.s [QMS_MESSAGE_HASH] = token_ref (conn, req.token, hash);
            gw_to_router (self, &rec);
            break;
        case QMS_REQ_GROUP_CREATE:
        case QMS_REQ_GROUP_UPDATE:
        case QMS_REQ_GROUP_LIST:
        case QMS_REQ_GROUP_MESSAGE:
            handle_group_request (self, conn, &req);
            break;
    }
    proto_request_free (&req);
}

/*  RFC 6455: a text message that is not UTF-8 fails the connection (1007). */
static int
close_invalid_utf8 (conn_t *conn)
{
    const char *reason = "Text frames must be UTF-8";
    conn->close_code = LWS_CLOSE_STATUS_INVALID_PAYLOAD;
    lws_close_reason (conn->wsi, LWS_CLOSE_STATUS_INVALID_PAYLOAD,
                      (unsigned char *) reason, strlen (reason));
    return -1;
}

int
gw_handle_receive (gateway_t *self, conn_t *conn, const uint8_t *in, size_t len)
{
    bool binary = lws_frame_is_binary (conn->wsi);
    bool complete = lws_is_final_fragment (conn->wsi) && lws_remaining_packet_payload (conn->wsi) == 0;

    if (complete && conn->rx_len == 0) {
        /*  The common case: the whole message arrived at once. */
        if (binary)
            gw_conn_send_error (self, conn, -1, "Binary frames are not supported: send JSON text.");
        else
        if (!qms_utf8_valid ((const char *) in, len))
            return close_invalid_utf8 (conn);
        else
            handle_request (self, conn, (const char *) in, len);
        return 0;
    }
    if (conn->rx_len + len > MAX_WS_MESSAGE) {
        qms_info (ACTOR, "event=message_too_big handle=%llu", (unsigned long long) conn->handle);
        const char *reason = "Message too big (at most 1 MiB)";
        conn->close_code = LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE;
        lws_close_reason (conn->wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE,
                          (unsigned char *) reason, strlen (reason));
        return -1;
    }
    if (conn->rx_len + len > conn->rx_cap) {
        size_t cap = conn->rx_cap ? conn->rx_cap : 4096;
        while (cap < conn->rx_len + len)
            cap *= 2;
        uint8_t *rx = realloc (conn->rx, cap);
        if (!rx)
            return -1;
        conn->rx = rx;
        conn->rx_cap = cap;
    }
    memcpy (conn->rx + conn->rx_len, in, len);
    conn->rx_len += len;
    if (complete) {
        if (binary)
            gw_conn_send_error (self, conn, -1, "Binary frames are not supported: send JSON text.");
        else
        if (!qms_utf8_valid ((const char *) conn->rx, conn->rx_len))
            return close_invalid_utf8 (conn);
        else
            handle_request (self, conn, (const char *) conn->rx, conn->rx_len);
        conn->rx_len = 0;
        if (conn->rx_cap > RX_KEEP_BYTES) {
            free (conn->rx);
            conn->rx = NULL;
            conn->rx_cap = 0;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/*  Records from the actors. */

static void
handle_bound (gateway_t *self, conn_t *conn, const qms_rec_t *rec)
{
    /*  Whose connection it is: a group's fan-out names the user each
        target connection must still belong to. */
    qms_str_t user = rec->s [QMS_BOUND_ID];
    conn->user_len = user.len <= sizeof conn->user_id ? (uint8_t) user.len : 0;
    if (conn->user_len)
        memcpy (conn->user_id, user.ptr, user.len);
    if (rec->num == QMS_BOUND_SILENT) {
        conn->bound = conn->token_len > 0;  /* restored after a router restart */
        return;
    }
    if (conn->waiting)
        qms_hist_observe (rec->num == QMS_BOUND_LOGIN ? &self->m.login_ms : &self->m.authorize_ms,
                          (double) (qms_mono_ms () - conn->wait_started));
    if (rec->num == QMS_BOUND_LOGIN)
        self->m.logins_ok++;
    wait_end (conn);
    memcpy (conn->token, conn->pending, conn->pending_len);
    conn->token_len = conn->pending_len;
    conn->token [conn->token_len] = 0;
    conn->bound = true;
    bool login = rec->num == QMS_BOUND_LOGIN;
    if (login && conn->presence != PROTO_PRESENCE_NONE)
        gw_conn_queue_list_now (self, conn, &rec->s [QMS_BOUND_NAME]);
    else {
        if (login) {
            /*  No presence: the answer names only the caller. */
            qms_buf_t mine;
            qms_buf_init (&mine);
            user_t *me = gw_user_find (self, rec->s [QMS_BOUND_ID]);
            proto_users_begin (&mine);
            if (me)
                proto_users_add (&mine, gw_user_id (me), gw_user_name (me), gw_user_pubkey (me));
            proto_users_end (&mine);
            proto_login_ok (&self->scratch, qms_strn (conn->token, conn->token_len), rec->s [QMS_BOUND_NAME],
                            (const char *) mine.data, mine.len);
            qms_buf_free (&mine);
        }
        else
            proto_authorized (&self->scratch);
        gw_conn_queue_scratch (self, conn);
    }
    /*  Everyone online gets the list when it changes, this one included
        (at once: it has just come online); a delta client needs it whole
        once, unless its login answer carried it. */
    if (conn->presence == PROTO_PRESENCE_FULL || (conn->presence == PROTO_PRESENCE_DELTA && !login))
        gw_conn_queue_list_now (self, conn, NULL);
    conn->list_gen = self->users_gen;
}

/* ------------------------------------------------------------------------ */
/*  ext: groups, from the router.  A group event or a group message comes
    once per gateway with the connections it is for (qms_targets_*): it is
    encoded once and every target's queue holds the same bytes. */

/*  Whether conn still belongs to the user a fan-out names. */
static bool
conn_is_user (const conn_t *conn, qms_str_t id)
{
    return conn->bound && id.len && conn->user_len == id.len && memcmp (conn->user_id, id.ptr, id.len) == 0;
}

/*  GW_GROUP (not a row of a list): the GroupEvent to every target still
    its user's, and to the requester with its "id". */
static void
group_event (gateway_t *self, const qms_rec_t *rec)
{
    qms_buf_t event;
    qms_buf_init (&event);
    bool gone = (rec->num & QMS_GROUP_GONE) != 0;
    int rc = proto_group_event_head (&event, qms_str (NULL));
    size_t body_at = event.len;
    if (rc || proto_group_event_body (&event, rec->num, gone, rec->s [QMS_GINFO_ID], rec->s [QMS_GINFO_NAME],
                                      rec->s [QMS_GINFO_OWNER], rec->seq, rec->s [QMS_GINFO_MEMBERS],
                                      rec->s [QMS_GINFO_BY], rec->s [QMS_GINFO_CHANGED])) {
        qms_warn (ACTOR, "event=bad_group_event group=\"%.*s\" op=%llu", (int) (rec->s [QMS_GINFO_ID].len & 0xff),
                  rec->s [QMS_GINFO_ID].ptr ? rec->s [QMS_GINFO_ID].ptr : "", (unsigned long long) rec->num);
        qms_buf_free (&event);
        return;
    }
    outq_shared_t *frame = NULL;
    size_t offset = 0;
    uint64_t handle;
    qms_str_t user;
    int got;
    while ((got = qms_targets_next (rec->s [QMS_GINFO_TARGETS], &offset, &handle, &user)) == 1) {
        conn_t *conn = gw_conn_lookup (self, handle);
        /*  Gone or someone else's now: skipped (the state is fetched again
            with a GroupListRequest); the requester gets its own copy. */
        if (!conn || handle == rec->conn || !conn_is_user (conn, user))
            continue;
        if (!frame && !(frame = gw_shared_frame (self, event.data, event.len))) {
            qms_error (ACTOR, "event=out_of_memory what=group_event");
            break;
        }
        gw_conn_share (self, conn, frame);
    }
    if (got < 0)
        qms_warn (ACTOR, "event=bad_targets type=GW_GROUP");
    outq_shared_unref (&frame);
    conn_t *requester = rec->conn ? gw_conn_lookup (self, rec->conn) : NULL;
    qms_str_t client_id = rec->s [QMS_GINFO_CLIENT_ID];
    if (requester && !client_id.len)
        gw_conn_queue (self, requester, event.data, event.len);
    else
    if (requester) {
        /*  The same body after a head with the client's id. */
        qms_buf_t mine;
        qms_buf_init (&mine);
        if (proto_group_event_head (&mine, client_id) == 0
        &&  qms_buf_append (&mine, event.data + body_at, event.len - body_at) == 0)
            gw_conn_queue (self, requester, mine.data, mine.len);
        qms_buf_free (&mine);
    }
    qms_buf_free (&event);
}

/*  The GroupListEvent built from GW_GROUPS and its rows goes out (or, when
    a row could not be encoded or the rows were cut short, an error). */
static void
group_list_finish (gateway_t *self)
{
    self->glist.active = false;
    conn_t *conn = gw_conn_lookup (self, self->glist.conn);
    if (conn && !self->glist.failed && proto_group_list_end (&self->glist.json, self->glist.more) == 0)
        gw_conn_queue (self, conn, self->glist.json.data, self->glist.json.len);
    else
    if (conn) {
        const char *text = "Request failed.";
        proto_group_error (&self->scratch, QMS_REQ_GROUP_LIST, qms_strn (self->glist.id, self->glist.id_len),
                           qms_str (NULL), text, strlen (text));
        gw_conn_queue_scratch (self, conn);
    }
    if (self->glist.json.cap > RX_KEEP_BYTES)
        qms_buf_free (&self->glist.json);
    else
        qms_buf_reset (&self->glist.json);
}

static void
group_list_begin (gateway_t *self, const qms_rec_t *rec)
{
    if (self->glist.active) {
        qms_warn (ACTOR, "event=group_list_cut_short left=%llu", (unsigned long long) self->glist.left);
        self->glist.failed = true;
        group_list_finish (self);
    }
    qms_str_t client_id = rec->s [QMS_GLIST_CLIENT_ID];
    self->glist.active = true;
    self->glist.conn = rec->conn;
    self->glist.left = rec->num & QMS_GROUPS_COUNT;
    self->glist.more = (rec->num & QMS_GROUPS_MORE) != 0;
    self->glist.id_len = client_id.len <= sizeof self->glist.id ? (uint8_t) client_id.len : 0;
    if (self->glist.id_len)
        memcpy (self->glist.id, client_id.ptr, client_id.len);
    qms_buf_reset (&self->glist.json);
    self->glist.failed = proto_group_list_head (&self->glist.json, qms_strn (self->glist.id, self->glist.id_len)) != 0;
    if (self->glist.left == 0)
        group_list_finish (self);
}

static void
group_list_row (gateway_t *self, const qms_rec_t *rec)
{
    if (!self->glist.failed
    &&  proto_group_list_add (&self->glist.json, rec->s [QMS_GINFO_ID], rec->s [QMS_GINFO_NAME],
                              rec->s [QMS_GINFO_OWNER], rec->seq, rec->s [QMS_GINFO_MEMBERS])) {
        qms_warn (ACTOR, "event=bad_group_event group=\"%.*s\" in=list", (int) (rec->s [QMS_GINFO_ID].len & 0xff),
                  rec->s [QMS_GINFO_ID].ptr ? rec->s [QMS_GINFO_ID].ptr : "");
        self->glist.failed = true;
    }
    if (--self->glist.left == 0)
        group_list_finish (self);
}

/*  GW_GROUP_DELIVER: one GroupMessageEvent shared by every target; a target
    whose connection is gone or no longer its user's goes back to the router
    (RT_GROUP_UNDELIVERED), which delivers it again or stores it. */
static void
group_deliver (gateway_t *self, const qms_rec_t *rec)
{
    qms_buf_t event;
    qms_buf_init (&event);
    outq_shared_t *frame = NULL;
    if (proto_group_message_event (&event, rec->s [QMS_GDELIVER_GROUP], rec->s [QMS_GDELIVER_SENDER],
                                   rec->s [QMS_GDELIVER_TEXT], rec->s [QMS_GDELIVER_MSG_ID], rec->time) == 0)
        frame = gw_shared_frame (self, event.data, event.len);
    qms_buf_free (&event);
    if (!frame)
        qms_error (ACTOR, "event=out_of_memory what=group_message");
    size_t offset = 0;
    uint64_t handle;
    qms_str_t user;
    int got;
    while ((got = qms_targets_next (rec->s [QMS_GDELIVER_TARGETS], &offset, &handle, &user)) == 1) {
        conn_t *conn = gw_conn_lookup (self, handle);
        if (frame && conn && conn_is_user (conn, user)) {
            self->m.events_group++;
            gw_conn_share (self, conn, frame);
            continue;
        }
        qms_rec_t back = { .type = QMS_RT_GROUP_UNDELIVERED, .time = rec->time };
        back.s [QMS_GUNDELIVERED_GROUP] = rec->s [QMS_GDELIVER_GROUP];
        back.s [QMS_GUNDELIVERED_RECIPIENT] = user;
        back.s [QMS_GUNDELIVERED_SENDER] = rec->s [QMS_GDELIVER_SENDER];
        back.s [QMS_GUNDELIVERED_TEXT] = rec->s [QMS_GDELIVER_TEXT];
        back.s [QMS_GUNDELIVERED_MSG_ID] = rec->s [QMS_GDELIVER_MSG_ID];
        gw_to_router (self, &back);
    }
    if (got < 0)
        qms_warn (ACTOR, "event=bad_targets type=GW_GROUP_DELIVER");
    outq_shared_unref (&frame);
}

static void
handle_router_record (gateway_t *self, const qms_rec_t *rec)
{
    if (rec->type == QMS_GW_USERS) {
        /*  A whole list (we are new to the router): it replaces ours; the
            GW_USER records that follow fill it. */
        gw_users_clear (self);
        qms_buf_reset (&self->changes);
        gw_users_changed (self);
        return;
    }
    if (rec->type == QMS_GW_USER) {
        gw_user_add (self, rec->s [QMS_PRESENCE_ID], rec->s [QMS_PRESENCE_NAME], rec->s [QMS_PRESENCE_PUBKEY]);
        return;
    }
    if (rec->type == QMS_GW_JOIN) {
        gw_user_add (self, rec->s [QMS_PRESENCE_ID], rec->s [QMS_PRESENCE_NAME], rec->s [QMS_PRESENCE_PUBKEY]);
        proto_change_join (&self->changes, rec->s [QMS_PRESENCE_ID], rec->s [QMS_PRESENCE_NAME], rec->s [QMS_PRESENCE_PUBKEY]);
        gw_users_changed (self);
        return;
    }
    if (rec->type == QMS_GW_LEAVE) {
        user_t *u = gw_user_find (self, rec->s [QMS_PRESENCE_ID]);
        if (u) {
            gw_user_remove (self, u);
            proto_change_leave (&self->changes, rec->s [QMS_PRESENCE_ID]);
            gw_users_changed (self);
        }
        return;
    }
    if (rec->type == QMS_GW_WELCOME) {
        self->router_seen = qms_mono_ms ();
        if (rec->req == 1)
            reannounce (self);
        return;
    }
    if (rec->type == QMS_GW_GROUPS) {
        group_list_begin (self, rec);
        return;
    }
    if (rec->type == QMS_GW_GROUP) {
        if (self->glist.active)
            group_list_row (self, rec);
        else
            group_event (self, rec);
        return;
    }
    if (rec->type == QMS_GW_GROUP_DELIVER) {
        group_deliver (self, rec);
        return;
    }
    conn_t *conn = gw_conn_lookup (self, rec->conn);
    if (!conn) {
        /*  Closed meanwhile.  A live message was acknowledged "delivered"
            to its sender when the router sent it: it goes back to the
            router, which finds the recipient's connection now or stores
            it. */
        if (rec->type == QMS_GW_DELIVER) {
            qms_rec_t back = { .type = QMS_RT_UNDELIVERED, .time = rec->time };
            back.s [QMS_UNDELIVERED_RECIPIENT] = rec->s [QMS_DELIVER_RECIPIENT];
            back.s [QMS_UNDELIVERED_SENDER] = rec->s [QMS_DELIVER_SENDER];
            back.s [QMS_UNDELIVERED_TEXT] = rec->s [QMS_DELIVER_TEXT];
            back.s [QMS_UNDELIVERED_MSG_ID] = rec->s [QMS_DELIVER_MSG_ID];
            gw_to_router (self, &back);
        }
        return;
    }
    switch (rec->type) {
        case QMS_GW_BOUND:
            handle_bound (self, conn, rec);
            break;
        case QMS_GW_INVALID:
            self->m.invalid_user++;
            wait_end (conn);
            if (rec->num)
                conn->bound = false;
            proto_invalid_user (&self->scratch);
            gw_conn_queue_scratch (self, conn);
            break;
        case QMS_GW_KICK: {
            wait_end (conn);
            conn->bound = false;
            char reason [64];
            qms_str_copy (rec->s [QMS_KICK_REASON], reason, sizeof reason);
            gw_conn_close (conn, (uint16_t) rec->num, reason);
            break;
        }
        case QMS_GW_UNBIND:
            conn->bound = false;
            break;
        case QMS_GW_DELIVER:
            self->m.events_message++;
            proto_message_event (&self->scratch, rec->s [QMS_DELIVER_SENDER], rec->s [QMS_DELIVER_TEXT],
                                 rec->s [QMS_DELIVER_MSG_ID], rec->time);
            gw_conn_queue_scratch (self, conn);
            break;
        case QMS_GW_DELIVER_STORED:
            self->m.events_stored++;
            proto_stored_message_event (&self->scratch, rec->s [QMS_STORED_SENDER], rec->s [QMS_STORED_TEXT],
                                        rec->s [QMS_STORED_MSG_ID], rec->time,
                                        rec->s [QMS_STORED_SENDER_NAME], rec->s [QMS_STORED_SENDER_KEY]);
            gw_conn_queue_scratch (self, conn);
            break;
        case QMS_GW_ACK:
            self->m.acks++;
            proto_ack (&self->scratch, rec->num, rec->s [QMS_ACK_CLIENT_ID], rec->s [QMS_ACK_MSG_ID], rec->time,
                       rec->s [QMS_ACK_REASON]);
            gw_conn_queue_scratch (self, conn);
            break;
        case QMS_GW_LOOKUP:
            proto_lookup_event (&self->scratch, rec->num == 1, rec->req == 1, rec->s [QMS_FOUND_ASKED],
                                rec->s [QMS_FOUND_ID], rec->s [QMS_FOUND_NAME], rec->s [QMS_FOUND_PUBKEY]);
            gw_conn_queue_scratch (self, conn);
            break;
        case QMS_GW_SYNC:
            conn->sync_req = rec->req;
            if (outq_empty (&conn->out))
                gw_answer_sync (self, conn);   /* nothing waits to be written */
            break;
        case QMS_GW_ERROR:
            wait_end (conn);
            proto_actor_error (&self->scratch, rec->num, rec->s [QMS_ERROR_REASON]);
            gw_conn_queue_scratch (self, conn);
            break;
        case QMS_GW_GROUP_STORED:
            self->m.events_stored++;
            proto_group_stored_event (&self->scratch, rec->s [QMS_GDELIVER_GROUP], rec->s [QMS_GDELIVER_SENDER],
                                      rec->s [QMS_GDELIVER_TEXT], rec->s [QMS_GDELIVER_MSG_ID], rec->time,
                                      rec->s [QMS_GSTORED_SENDER_NAME], rec->s [QMS_GSTORED_SENDER_KEY]);
            gw_conn_queue_scratch (self, conn);
            break;
        case QMS_GW_GROUP_ACK: {
            self->m.acks++;
            char buf [400];
            const char *text = proto_group_reason_text (rec->s [QMS_GACK_REASON], qms_str (NULL),
                                                        self->cfg->group_max_members, buf, sizeof buf);
            proto_group_ack (&self->scratch, rec->num, rec->s [QMS_GACK_CLIENT_ID], rec->s [QMS_GACK_MSG_ID],
                             rec->time, rec->s [QMS_GACK_GROUP], rec->seq, rec->s [QMS_GACK_UNREACHED],
                             rec->s [QMS_GACK_BY], text);
            gw_conn_queue_scratch (self, conn);
            break;
        }
        case QMS_GW_GROUP_ERROR: {
            char buf [400];
            const char *text = proto_group_reason_text (rec->s [QMS_GERR_REASON], rec->s [QMS_GERR_DETAIL],
                                                        self->cfg->group_max_members, buf, sizeof buf);
            proto_group_error (&self->scratch, proto_group_op_action (rec->num), rec->s [QMS_GERR_CLIENT_ID],
                               rec->s [QMS_GERR_GROUP], text, strlen (text));
            gw_conn_queue_scratch (self, conn);
            break;
        }
        default:
            qms_warn (ACTOR, "event=unexpected_record peer=router type=%s", qms_type_name (rec->type));
    }
}

static void
handle_auth_record (gateway_t *self, const qms_rec_t *rec)
{
    if (rec->type == QMS_AUTH_PONG) {
        self->auth_seen = qms_mono_ms ();
        return;
    }
    conn_t *conn = gw_conn_lookup (self, rec->conn);
    if (!conn)
        return;
    if (rec->type == QMS_AUTH_FAIL) {
        if (conn->waiting)
            qms_hist_observe (&self->m.login_ms, (double) (qms_mono_ms () - conn->wait_started));
        self->m.logins_failed++;
        wait_end (conn);
        proto_error (&self->scratch, QMS_EV_LOGIN, rec->s [QMS_AUTH_FAIL_TEXT].ptr, rec->s [QMS_AUTH_FAIL_TEXT].len);
        gw_conn_queue_scratch (self, conn);
    }
    else
    if (rec->type == QMS_AUTH_OK && conn->waiting != WAIT_LOGIN) {
        /*  Too late: the client was told "Service temporarily unavailable."
            (auth was gone) and may have tried again; do not bind. */
        qms_warn (ACTOR, "event=late_login handle=%llu", (unsigned long long) conn->handle);
    }
    else
    if (rec->type == QMS_AUTH_OK && rec->s [QMS_AUTH_OK_TOKEN].len == QMS_TOKEN_CHARS) {
        /*  Keep the token until the router has bound the session. */
        memcpy (conn->pending, rec->s [QMS_AUTH_OK_TOKEN].ptr, QMS_TOKEN_CHARS);
        conn->pending_len = QMS_TOKEN_CHARS;
        char hash [QMS_HASH_HEX + 1];
        qms_sha256_hex (rec->s [QMS_AUTH_OK_TOKEN].ptr, rec->s [QMS_AUTH_OK_TOKEN].len, hash);
        qms_rec_t online = { .type = QMS_RT_ONLINE, .conn = conn->handle,
                             .num = conn->receipts ? QMS_SESSION_RECEIPTS : 0 };
        online.s [QMS_ONLINE_ID] = rec->s [QMS_AUTH_OK_ID];
        online.s [QMS_ONLINE_NAME] = rec->s [QMS_AUTH_OK_NAME];
        online.s [QMS_ONLINE_PUBKEY] = rec->s [QMS_AUTH_OK_PUBKEY];
        online.s [QMS_ONLINE_HASH] = qms_str (hash);
        gw_to_router (self, &online);
    }
    else
        qms_warn (ACTOR, "event=unexpected_record peer=auth type=%s", qms_type_name (rec->type));
}

static const char *s_peer_names [] = { "router", "auth", "store" };


/*  Every batch waiting on one socket; how many there were. */
static size_t
drain_socket (gateway_t *self, void *raw, peer_kind_t from)
{
    size_t batches = 0;
    zmq_msg_t body;
    zmq_msg_init (&body);
    for (;;) {
        uint32_t events = 0;
        size_t size = sizeof events;
        if (zmq_getsockopt (raw, ZMQ_EVENTS, &events, &size) || !(events & ZMQ_POLLIN))
            break;
        int rc = qms_batch_recv (raw, NULL, NULL, &body);
        if (rc == 0)
            break;
        batches++;
        if (rc < 0) {
            qms_warn (ACTOR, "event=bad_message peer=%s", s_peer_names [from]);
            continue;
        }
        const uint8_t *data = zmq_msg_data (&body);
        size_t len = zmq_msg_size (&body), offset = 0;
        /*  Checked whole first: a bad batch is dropped, never half applied. */
        if (!qms_inbox_accept (ACTOR, s_peer_names [from], QMS_ROLE_GATEWAY, data, len)) {
            self->m.bad_batches++;
            continue;
        }
        qms_rec_t rec;
        int got;
        while ((got = qms_rec_next (data, len, &offset, &rec)) == 1) {
            if (rec.type == QMS_NONE)
                continue;
            if (rec.type == QMS_STATS)
                gw_stats_answer (self, from, &rec);
            else
            if (from == PEER_ROUTER)
                handle_router_record (self, &rec);
            else
            if (from == PEER_AUTH)
                handle_auth_record (self, &rec);
        }
        assert (got == 0);
        if (self->glist.active) {
            /*  The rows of a group list come in the batch of its GW_GROUPS. */
            qms_warn (ACTOR, "event=group_list_cut_short left=%llu", (unsigned long long) self->glist.left);
            self->glist.failed = true;
            group_list_finish (self);
        }
    }
    zmq_msg_close (&body);
    return batches;
}

size_t
gw_drain_peer (gateway_t *self, peer_kind_t peer)
{
    switch (peer) {
        case PEER_ROUTER: return drain_socket (self, self->router_raw, PEER_ROUTER);
        case PEER_AUTH:   return drain_socket (self, self->auth_raw, PEER_AUTH);
        case PEER_STORE:  return self->store_raw ? drain_socket (self, self->store_raw, PEER_STORE) : 0;
    }
    return 0;
}

size_t
gw_drain_zmq (gateway_t *self)
{
    size_t batches = drain_socket (self, self->router_raw, PEER_ROUTER)
                   + drain_socket (self, self->auth_raw, PEER_AUTH);
    if (self->store_raw)
        batches += drain_socket (self, self->store_raw, PEER_STORE);
    return batches;
}

/* ------------------------------------------------------------------------ */
/*  Selftest helpers for groups: connections in slots, their output read
    back whole. */

/*  Every frame queued for conn, their payloads as lines (one per frame). */
static void
t_frames (conn_t *conn, qms_buf_t *out)
{
    qms_buf_reset (out);
    int sv [2];
    assert (socketpair (AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    qms_buf_t bytes;
    qms_buf_init (&bytes);
    while (!outq_empty (&conn->out)) {
        int flags;
        assert (outq_write (&conn->out, sv [1], NULL, 1 << 20, &flags) > 0);
        uint8_t chunk [65536];
        ssize_t n;
        while ((n = recv (sv [0], chunk, sizeof chunk, MSG_DONTWAIT)) > 0)
            qms_buf_append (&bytes, chunk, (size_t) n);
    }
    close (sv [0]);
    close (sv [1]);
    size_t at = 0;
    while (at < bytes.len) {
        assert (bytes.len - at >= 2 && bytes.data [at] == 0x81);
        size_t len = bytes.data [at + 1], head = 2;
        if (len == 126) {
            len = (size_t) bytes.data [at + 2] << 8 | bytes.data [at + 3];
            head = 4;
        }
        assert (len < 126 || head == 4);
        assert (at + head + len <= bytes.len);
        qms_buf_append (out, bytes.data + at + head, len);
        qms_buf_append (out, "\n", 1);
        at += head + len;
    }
    qms_buf_append (out, "", 1);
    out->len--;
    qms_buf_free (&bytes);
}

static void
t_expect_frames (conn_t *conn, const char *expected)
{
    qms_buf_t got;
    qms_buf_init (&got);
    t_frames (conn, &got);
    if (strcmp ((const char *) got.data, expected) != 0) {
        fprintf (stderr, "\nexpected: %s\n     got: %s\n", expected, (const char *) got.data);
        assert (false);
    }
    qms_buf_free (&got);
}

static void
t_group_test (gateway_t *self)
{
    enum { SLOTS = 4 };
    conn_t conns [SLOTS], *slots [SLOTS] = { NULL };
    self->slots = slots;
    self->max_slots = SLOTS;
    self->router_seen = qms_mono_ms ();
    static const char *users [SLOTS] = { "id-a", "id-b", "id-x", "id-d" };
    for (int i = 0; i < SLOTS; i++) {
        memset (&conns [i], 0, sizeof conns [i]);
        conns [i].handle = (uint64_t) i | (1ull << SLOT_BITS);
        outq_init (&conns [i].out, &self->out_acct);
        qms_rec_t bound = { .type = QMS_GW_BOUND, .conn = conns [i].handle, .num = QMS_BOUND_SILENT,
                            .s = { [QMS_BOUND_ID] = qms_str (users [i]), [QMS_BOUND_NAME] = qms_str ("n") } };
        conns [i].token_len = QMS_TOKEN_CHARS;
        memset (conns [i].token, 'a' + i, QMS_TOKEN_CHARS);
        if (i < 3) {
            slots [i] = &conns [i];
            handle_bound (self, &conns [i], &bound);
            assert (conns [i].bound && conns [i].user_len == strlen (users [i]));
        }
    }
    conn_t *a = &conns [0], *b = &conns [1], *x = &conns [2];
    qms_buf_reset (&self->to_router);

    /*  GW_GROUP_DELIVER to five targets: a and b get the same bytes, by
        reference to one buffer; "id-c" on x (now someone else's), a slot
        with no connection, and a handle of an older generation come back
        to the router as RT_GROUP_UNDELIVERED, each with its recipient. */
    qms_buf_t targets;
    qms_buf_init (&targets);
    assert (qms_targets_add (&targets, a->handle, "id-a", 4) == 0);
    assert (qms_targets_add (&targets, b->handle, "id-b", 4) == 0);
    assert (qms_targets_add (&targets, x->handle, "id-c", 4) == 0);
    assert (qms_targets_add (&targets, conns [3].handle, "id-d", 4) == 0);
    assert (qms_targets_add (&targets, b->handle + (1ull << SLOT_BITS), "id-e", 4) == 0);
    qms_rec_t deliver = { .type = QMS_GW_GROUP_DELIVER, .time = 5 };
    deliver.s [QMS_GDELIVER_GROUP] = qms_str ("G1");
    deliver.s [QMS_GDELIVER_SENDER] = qms_str ("id-s");
    deliver.s [QMS_GDELIVER_TEXT] = qms_str ("ct");
    deliver.s [QMS_GDELIVER_MSG_ID] = qms_str ("M1");
    deliver.s [QMS_GDELIVER_TARGETS] = qms_strn ((const char *) targets.data, targets.len);
    size_t owned = self->out_acct.owned;
    handle_router_record (self, &deliver);
    assert (self->out_acct.shared_count == 1 && self->out_acct.owned == owned);   /* one buffer, shared */
    assert (outq_pending (&a->out) == outq_pending (&b->out) && outq_empty (&x->out));
    assert (self->m.events_group == 2);
    const char *event = "{\"valid\":true,\"event\":10,\"group\":\"G1\",\"sender\":\"id-s\",\"message\":\"ct\","
                        "\"id\":\"M1\",\"timestamp\":5}\n";
    t_expect_frames (a, event);
    assert (self->out_acct.shared_count == 1);
    t_expect_frames (b, event);
    assert (self->out_acct.shared_count == 0 && self->out_acct.shared == 0);
    size_t offset = 0;
    qms_rec_t rec;
    static const char *back [] = { "id-c", "id-d", "id-e" };
    for (int i = 0; i < 3; i++) {
        assert (qms_rec_next (self->to_router.data, self->to_router.len, &offset, &rec) == 1);
        assert (rec.type == QMS_RT_GROUP_UNDELIVERED && rec.time == 5);
        assert (qms_str_eq (rec.s [QMS_GUNDELIVERED_RECIPIENT], back [i]));
        assert (qms_str_eq (rec.s [QMS_GUNDELIVERED_GROUP], "G1") && qms_str_eq (rec.s [QMS_GUNDELIVERED_SENDER], "id-s")
                && qms_str_eq (rec.s [QMS_GUNDELIVERED_TEXT], "ct") && qms_str_eq (rec.s [QMS_GUNDELIVERED_MSG_ID], "M1"));
    }
    assert (qms_rec_next (self->to_router.data, self->to_router.len, &offset, &rec) == 0);
    qms_buf_reset (&self->to_router);
    /*  Logged out: no longer bound, so it goes back too. */
    b->bound = false;
    qms_buf_reset (&targets);
    assert (qms_targets_add (&targets, b->handle, "id-b", 4) == 0);
    deliver.s [QMS_GDELIVER_TARGETS] = qms_strn ((const char *) targets.data, targets.len);
    handle_router_record (self, &deliver);
    assert (outq_empty (&b->out));
    offset = 0;
    assert (qms_rec_next (self->to_router.data, self->to_router.len, &offset, &rec) == 1
            && rec.type == QMS_RT_GROUP_UNDELIVERED && qms_str_eq (rec.s [QMS_GUNDELIVERED_RECIPIENT], "id-b"));
    qms_buf_reset (&self->to_router);
    b->bound = true;

    /*  GW_GROUP: the targets get the event once encoded; the requester (a
        target too) gets it once, with its id; x (someone else's now) and a
        gone connection nothing, and nothing goes back. */
    qms_buf_reset (&targets);
    assert (qms_targets_add (&targets, a->handle, "id-a", 4) == 0);
    assert (qms_targets_add (&targets, b->handle, "id-b", 4) == 0);
    assert (qms_targets_add (&targets, x->handle, "id-c", 4) == 0);
    assert (qms_targets_add (&targets, conns [3].handle, "id-d", 4) == 0);
    qms_rec_t group = { .type = QMS_GW_GROUP, .conn = a->handle, .num = QMS_GROUP_OP_CREATE, .seq = 1 };
    group.s [QMS_GINFO_ID] = qms_str ("G1");
    group.s [QMS_GINFO_NAME] = qms_str ("Climbing");
    group.s [QMS_GINFO_OWNER] = qms_str ("id-a");
    qms_buf_t members;
    qms_buf_init (&members);
    assert (qms_members_add (&members, QMS_GROUP_ROLE_OWNER, qms_str ("id-a"), qms_str ("alice"), qms_str ("KA")) == 0);
    assert (qms_members_add (&members, QMS_GROUP_ROLE_MEMBER, qms_str ("id-b"), qms_str ("bob"), qms_str ("KB")) == 0);
    group.s [QMS_GINFO_MEMBERS] = qms_strn ((const char *) members.data, members.len);
    group.s [QMS_GINFO_BY] = qms_str ("id-a");
    group.s [QMS_GINFO_CHANGED] = qms_str ("id-b");
    group.s [QMS_GINFO_TARGETS] = qms_strn ((const char *) targets.data, targets.len);
    group.s [QMS_GINFO_CLIENT_ID] = qms_str ("r1");
    handle_router_record (self, &group);
    const char *body = "\"group\":{\"id\":\"G1\",\"name\":\"Climbing\",\"owner\":\"id-a\",\"epoch\":1,\"members\":["
                       "{\"id\":\"id-a\",\"name\":\"alice\",\"publicKey\":\"KA\",\"role\":\"owner\"},"
                       "{\"id\":\"id-b\",\"name\":\"bob\",\"publicKey\":\"KB\",\"role\":\"member\"}]},"
                       "\"change\":{\"op\":\"create\",\"by\":\"id-a\",\"members\":[\"id-b\"]}}\n";
    char want [1024];
    snprintf (want, sizeof want, "{\"valid\":true,\"event\":8,\"id\":\"r1\",%s", body);
    t_expect_frames (a, want);
    snprintf (want, sizeof want, "{\"valid\":true,\"event\":8,%s", body);
    t_expect_frames (b, want);
    assert (outq_empty (&x->out) && self->to_router.len == 0);
    /*  Removed: the short form, "removed"; a record it cannot read, nothing. */
    group.num = QMS_GROUP_OP_REMOVE | QMS_GROUP_GONE;
    group.conn = 0;
    group.s [QMS_GINFO_MEMBERS] = qms_str (NULL);
    handle_router_record (self, &group);
    const char *removed = "{\"valid\":true,\"event\":8,\"group\":{\"id\":\"G1\",\"name\":\"Climbing\"},"
                          "\"change\":{\"op\":\"remove\",\"by\":\"id-a\",\"members\":[\"id-b\"]},\"removed\":true}\n";
    t_expect_frames (a, removed);
    t_expect_frames (b, removed);
    group.num = QMS_GROUP_OP_ADD;
    group.s [QMS_GINFO_MEMBERS] = qms_strn ((const char *) members.data, members.len - 1);     /* cut short */
    handle_router_record (self, &group);
    assert (outq_empty (&a->out) && outq_empty (&b->out));

    /*  GW_GROUPS and its rows: one GroupListEvent; an empty one; one cut
        short answered with an error. */
    qms_rec_t groups = { .type = QMS_GW_GROUPS, .conn = a->handle, .num = 2,
                         .s = { [QMS_GLIST_CLIENT_ID] = qms_str ("r2") } };
    qms_rec_t row = { .type = QMS_GW_GROUP, .seq = 3 };
    row.s [QMS_GINFO_ID] = qms_str ("G1");
    row.s [QMS_GINFO_NAME] = qms_str ("a");
    row.s [QMS_GINFO_OWNER] = qms_str ("o");
    qms_buf_t one;
    qms_buf_init (&one);
    assert (qms_members_add (&one, QMS_GROUP_ROLE_OWNER, qms_str ("o"), qms_str ("O"), qms_str ("k")) == 0);
    row.s [QMS_GINFO_MEMBERS] = qms_strn ((const char *) one.data, one.len);
    handle_router_record (self, &groups);
    handle_router_record (self, &row);
    assert (outq_empty (&a->out) && self->glist.active);
    row.s [QMS_GINFO_ID] = qms_str ("G2");
    handle_router_record (self, &row);
    assert (!self->glist.active);
    t_expect_frames (a, "{\"valid\":true,\"event\":9,\"id\":\"r2\",\"groups\":["
                        "{\"id\":\"G1\",\"name\":\"a\",\"owner\":\"o\",\"epoch\":3,\"members\":["
                        "{\"id\":\"o\",\"name\":\"O\",\"publicKey\":\"k\",\"role\":\"owner\"}]},"
                        "{\"id\":\"G2\",\"name\":\"a\",\"owner\":\"o\",\"epoch\":3,\"members\":["
                        "{\"id\":\"o\",\"name\":\"O\",\"publicKey\":\"k\",\"role\":\"owner\"}]}]}\n");
    groups.num = 0;
    groups.s [QMS_GLIST_CLIENT_ID] = qms_str (NULL);
    handle_router_record (self, &groups);
    t_expect_frames (a, "{\"valid\":true,\"event\":9,\"groups\":[]}\n");
    groups.num = 2;
    groups.s [QMS_GLIST_CLIENT_ID] = qms_str ("r3");
    handle_router_record (self, &groups);
    handle_router_record (self, &row);
    groups.num = 0;
    groups.s [QMS_GLIST_CLIENT_ID] = qms_str (NULL);
    handle_router_record (self, &groups);
    t_expect_frames (a, "{\"valid\":false,\"event\":9,\"error\":\"Request failed.\",\"id\":\"r3\"}\n"
                        "{\"valid\":true,\"event\":9,\"groups\":[]}\n");

    /*  GW_GROUP_ERROR, GW_GROUP_ACK, GW_GROUP_STORED. */
    qms_rec_t error = { .type = QMS_GW_GROUP_ERROR, .conn = a->handle, .num = QMS_GROUP_OP_ADD };
    error.s [QMS_GERR_REASON] = qms_str (QMS_REASON_TOO_MANY_GROUPS);
    error.s [QMS_GERR_CLIENT_ID] = qms_str ("r4");
    error.s [QMS_GERR_DETAIL] = qms_str ("id-b\t256");
    error.s [QMS_GERR_GROUP] = qms_str ("G1");
    handle_router_record (self, &error);
    error.num = QMS_GROUP_OP_MESSAGE;
    error.s [QMS_GERR_REASON] = qms_str (QMS_REASON_UNKNOWN_GROUP);
    handle_router_record (self, &error);
    error.s [QMS_GERR_CLIENT_ID] = qms_str (NULL);
    handle_router_record (self, &error);
    error.num = QMS_GROUP_OP_LIST;
    error.s [QMS_GERR_REASON] = qms_str (QMS_REASON_UNAVAILABLE);
    handle_router_record (self, &error);
    error.num = QMS_GROUP_OP_CREATE;
    error.s [QMS_GERR_REASON] = qms_str (QMS_REASON_GROUP_FULL);
    error.s [QMS_GERR_DETAIL] = qms_str (NULL);
    handle_router_record (self, &error);
    t_expect_frames (a, "{\"valid\":false,\"event\":8,\"error\":\"id-b is in too many groups (at most 256).\",\"id\":\"r4\"}\n"
                        "{\"valid\":false,\"event\":5,\"id\":\"r4\",\"status\":\"rejected\",\"error\":\"Unknown group.\","
                        "\"group\":\"G1\"}\n"
                        "{\"valid\":false,\"event\":10,\"error\":\"Unknown group.\"}\n"
                        "{\"valid\":false,\"event\":9,\"error\":\"Service temporarily unavailable.\"}\n"
                        "{\"valid\":false,\"event\":8,\"error\":\"A group has at most 1024 members.\"}\n");
    qms_rec_t ack = { .type = QMS_GW_GROUP_ACK, .conn = a->handle, .num = QMS_ACK_STORED, .time = 9, .seq = 3 };
    ack.s [QMS_GACK_CLIENT_ID] = qms_str ("c1");
    ack.s [QMS_GACK_MSG_ID] = qms_str ("M1");
    ack.s [QMS_GACK_GROUP] = qms_str ("G1");
    ack.s [QMS_GACK_UNREACHED] = qms_str ("1");
    handle_router_record (self, &ack);
    ack.num = QMS_ACK_REJECTED;
    ack.s [QMS_GACK_REASON] = qms_str (QMS_REASON_NOT_ALLOWED);
    handle_router_record (self, &ack);
    qms_rec_t stored = { .type = QMS_GW_GROUP_STORED, .conn = a->handle, .time = 4 };
    stored.s [QMS_GDELIVER_GROUP] = qms_str ("G1");
    stored.s [QMS_GDELIVER_SENDER] = qms_str ("id-b");
    stored.s [QMS_GDELIVER_TEXT] = qms_str ("ct");
    stored.s [QMS_GDELIVER_MSG_ID] = qms_str ("M2");
    stored.s [QMS_GSTORED_SENDER_NAME] = qms_str ("bob");
    stored.s [QMS_GSTORED_SENDER_KEY] = qms_str ("KB");
    handle_router_record (self, &stored);
    t_expect_frames (a, "{\"valid\":true,\"event\":5,\"id\":\"c1\",\"status\":\"stored\",\"messageId\":\"M1\","
                        "\"timestamp\":9,\"group\":\"G1\",\"members\":3,\"unreached\":1}\n"
                        "{\"valid\":false,\"event\":5,\"id\":\"c1\",\"status\":\"rejected\",\"error\":"
                        "\"Only the group's owner or an admin can do that.\",\"group\":\"G1\"}\n"
                        "{\"valid\":true,\"event\":10,\"group\":\"G1\",\"sender\":\"id-b\",\"message\":\"ct\","
                        "\"id\":\"M2\",\"timestamp\":4,\"senderName\":\"bob\",\"senderKey\":\"KB\",\"stored\":true}\n");

    /*  Requests: records to the router with the bound token as "" (another
        as its hash); a bad one answered at once; the limits as configured. */
    char json [512], token [QMS_TOKEN_CHARS + 1];
    memcpy (token, a->token, QMS_TOKEN_CHARS);
    token [QMS_TOKEN_CHARS] = 0;
    snprintf (json, sizeof json, "{\"action\":7,\"token\":\"%s\",\"name\":\"Climbing\",\"members\":"
              "[\"id-b\",\"id-c\",\"id-b\"],\"id\":\"r5\"}", token);
    handle_request (self, a, json, strlen (json));
    snprintf (json, sizeof json, "{\"action\":8,\"token\":\"%s\",\"group\":\"G1\",\"op\":\"rename\",\"name\":\"B\"}", token);
    handle_request (self, a, json, strlen (json));
    snprintf (json, sizeof json, "{\"action\":9,\"token\":\"%s\"}", token);
    handle_request (self, a, json, strlen (json));
    snprintf (json, sizeof json, "{\"action\":10,\"token\":\"%s\",\"group\":\"G1\",\"message\":\"m\",\"id\":\"c2\"}", token);
    handle_request (self, b, json, strlen (json));        /* not b's token: its hash */
    offset = 0;
    assert (qms_rec_next (self->to_router.data, self->to_router.len, &offset, &rec) == 1);
    assert (rec.type == QMS_RT_GROUP && rec.conn == a->handle && rec.num == QMS_GROUP_OP_CREATE);
    assert (rec.s [QMS_GROUP_HASH].len == 0 && rec.s [QMS_GROUP_ID].len == 0 && qms_str_eq (rec.s [QMS_GROUP_NAME], "Climbing"));
    assert (qms_str_eq (rec.s [QMS_GROUP_MEMBERS], "id-b\nid-c") && qms_str_eq (rec.s [QMS_GROUP_CLIENT_ID], "r5"));
    assert (qms_rec_next (self->to_router.data, self->to_router.len, &offset, &rec) == 1);
    assert (rec.type == QMS_RT_GROUP && rec.num == QMS_GROUP_OP_RENAME && qms_str_eq (rec.s [QMS_GROUP_ID], "G1")
            && qms_str_eq (rec.s [QMS_GROUP_NAME], "B") && rec.s [QMS_GROUP_MEMBERS].len == 0
            && rec.s [QMS_GROUP_CLIENT_ID].len == 0);
    assert (qms_rec_next (self->to_router.data, self->to_router.len, &offset, &rec) == 1);
    assert (rec.type == QMS_RT_GROUP && rec.num == QMS_GROUP_OP_LIST && rec.s [QMS_GROUP_HASH].len == 0);
    assert (qms_rec_next (self->to_router.data, self->to_router.len, &offset, &rec) == 1);
    char hash [QMS_HASH_HEX + 1];
    qms_sha256_hex (token, QMS_TOKEN_CHARS, hash);
    assert (rec.type == QMS_RT_GROUP_MESSAGE && rec.conn == b->handle && qms_str_eq (rec.s [QMS_GMSG_HASH], hash));
    assert (qms_str_eq (rec.s [QMS_GMSG_GROUP], "G1") && qms_str_eq (rec.s [QMS_GMSG_TEXT], "m")
            && qms_str_eq (rec.s [QMS_GMSG_CLIENT_ID], "c2"));
    assert (qms_rec_next (self->to_router.data, self->to_router.len, &offset, &rec) == 0);
    qms_buf_reset (&self->to_router);
    assert (self->m.requests [QMS_REQ_GROUP_CREATE] == 1 && self->m.requests [QMS_REQ_GROUP_MESSAGE] == 1);
    qms_config_t *cfg = (qms_config_t *) self->cfg;
    cfg->group_name_max = 3;
    cfg->group_max_members = 2;
    snprintf (json, sizeof json, "{\"action\":7,\"token\":\"%s\",\"name\":\"abcd\",\"id\":\"r6\"}", token);
    handle_request (self, a, json, strlen (json));
    snprintf (json, sizeof json, "{\"action\":8,\"token\":\"%s\",\"group\":\"G1\",\"op\":\"add\",\"members\":[\"a\",\"b\",\"c\"]}", token);
    handle_request (self, a, json, strlen (json));
    snprintf (json, sizeof json, "{\"action\":10,\"token\":\"%s\",\"group\":\"G1\",\"id\":\"c3\"}", token);
    handle_request (self, a, json, strlen (json));
    snprintf (json, sizeof json, "{\"action\":8,\"token\":\"%s\",\"group\":\"G1\",\"op\":\"leave\"}", "short");
    handle_request (self, a, json, strlen (json));
    /*  The router silent: unavailable, in the request's shape. */
    self->router_seen = qms_mono_ms () - PEER_TIMEOUT_MS - 1;
    snprintf (json, sizeof json, "{\"action\":9,\"token\":\"%s\",\"id\":\"r7\"}", token);
    handle_request (self, a, json, strlen (json));
    self->router_seen = qms_mono_ms ();
    assert (self->to_router.len == 0);
    t_expect_frames (a, "{\"valid\":false,\"event\":8,\"error\":\"Field 'name' must be a string of 1 to 3 characters "
                        "without control characters.\",\"id\":\"r6\"}\n"
                        "{\"valid\":false,\"event\":8,\"error\":\"Field 'members' must be an array of 1 to 2 user ids.\"}\n"
                        "{\"valid\":false,\"event\":5,\"id\":\"c3\",\"status\":\"rejected\",\"error\":"
                        "\"Field 'message' is missing.\",\"group\":\"G1\"}\n"
                        "{\"valid\":false,\"event\":3}\n"
                        "{\"valid\":false,\"event\":9,\"error\":\"Service temporarily unavailable.\",\"id\":\"r7\"}\n");
    qms_config_defaults (cfg);

    for (int i = 0; i < SLOTS; i++)
        outq_clear (&conns [i].out);
    assert (self->out_acct.shared_count == 0 && self->out_acct.owned == 0);
    qms_buf_free (&targets);
    qms_buf_free (&members);
    qms_buf_free (&one);
    qms_buf_free (&self->glist.json);
    self->slots = NULL;
    self->max_slots = 0;
}

void
gw_dispatch_test (bool verbose)
{
    if (verbose)
        printf (" * gw_dispatch: ");
    qms_config_t cfg;
    qms_config_defaults (&cfg);
    gateway_t self;
    memset (&self, 0, sizeof self);
    self.cfg = &cfg;
    assert (qms_map_init (&self.users_by_id, gw_match_user) == 0);
    self.flush_scheduled = true;            /* no loop here: batches are only built */
    self.presence_scheduled = true;
    self.router_seen = self.auth_seen = qms_mono_ms ();

    /*  Tokens: only ours are plausible; the bound one goes as "", any
        other as its SHA-256. */
    char token [QMS_TOKEN_CHARS + 1];
    memset (token, 'a', QMS_TOKEN_CHARS);
    token [QMS_TOKEN_CHARS] = 0;
    assert (token_plausible (qms_str (token)) && !token_plausible (qms_str ("short")));
    conn_t conn;
    memset (&conn, 0, sizeof conn);
    conn.handle = 77;
    memcpy (conn.token, token, QMS_TOKEN_CHARS);
    conn.token_len = QMS_TOKEN_CHARS;
    char hash [QMS_HASH_HEX + 1];
    assert (token_ref (&conn, qms_str (token), hash).len == QMS_HASH_HEX);     /* not bound yet */
    conn.bound = true;
    assert (token_ref (&conn, qms_str (token), hash).len == 0);
    token [0] = 'b';
    qms_str_t ref = token_ref (&conn, qms_str (token), hash);
    char expect [QMS_HASH_HEX + 1];
    qms_sha256_hex (token, QMS_TOKEN_CHARS, expect);
    assert (ref.len == QMS_HASH_HEX && memcmp (ref.ptr, expect, QMS_HASH_HEX) == 0);
    token [0] = 'a';

    /*  A MessageRequest becomes one RT_MESSAGE to the router; a logout, an
        RT_LOGOUT with the token's hash. */
    char json [256];
    snprintf (json, sizeof json, "{\"action\":3,\"token\":\"%s\",\"target\":\"bob\",\"message\":\"hi\"}", token);
    handle_request (&self, &conn, json, strlen (json));
    snprintf (json, sizeof json, "{\"action\":2,\"token\":\"%s\"}", token);
    handle_request (&self, &conn, json, strlen (json));
    size_t offset = 0;
    qms_rec_t rec;
    assert (qms_rec_next (self.to_router.data, self.to_router.len, &offset, &rec) == 1);
    assert (rec.type == QMS_RT_MESSAGE && rec.conn == 77);
    assert (qms_str_eq (rec.s [QMS_MESSAGE_TARGET], "bob") && qms_str_eq (rec.s [QMS_MESSAGE_TEXT], "hi")
            && rec.s [QMS_MESSAGE_HASH].len == 0);
    assert (qms_rec_next (self.to_router.data, self.to_router.len, &offset, &rec) == 1);
    qms_sha256_hex (token, QMS_TOKEN_CHARS, expect);
    assert (rec.type == QMS_RT_LOGOUT && rec.conn == 77 && qms_str_eq (rec.s [QMS_LOGOUT_HASH], expect));
    assert (qms_rec_next (self.to_router.data, self.to_router.len, &offset, &rec) == 0);
    assert (self.m.requests [QMS_REQ_MESSAGE] == 1 && self.m.requests [QMS_REQ_LOGOUT] == 1);
    assert (self.to_auth.len == 0);
    qms_buf_reset (&self.to_router);

    /*  Heartbeat: hello to the router, ping to auth (the store: none here). */
    gw_heartbeat (&self);
    offset = 0;
    assert (qms_rec_next (self.to_router.data, self.to_router.len, &offset, &rec) == 1 && rec.type == QMS_RT_HELLO);
    offset = 0;
    assert (qms_rec_next (self.to_auth.data, self.to_auth.len, &offset, &rec) == 1 && rec.type == QMS_AUTH_PING);
    assert (self.to_store.len == 0);

    /*  Liveness: an actor silent for PEER_TIMEOUT_MS is gone. */
    self.router_seen = qms_mono_ms () - PEER_TIMEOUT_MS - 1;
    assert (!gw_router_alive (&self) && gw_auth_alive (&self));
    qms_rec_t welcome = { .type = QMS_GW_WELCOME };
    handle_router_record (&self, &welcome);
    assert (gw_router_alive (&self));
    self.auth_seen = 0;
    qms_rec_t pong = { .type = QMS_AUTH_PONG };
    handle_auth_record (&self, &pong);
    assert (gw_auth_alive (&self));

    /*  Presence records keep the list and the changes for the next push. */
    uint64_t gen = self.users_gen;
    qms_rec_t join = { .type = QMS_GW_JOIN,
                       .s = { [QMS_PRESENCE_ID] = qms_str ("id1"), [QMS_PRESENCE_NAME] = qms_str ("ann"),
                              [QMS_PRESENCE_PUBKEY] = qms_str ("k") } };
    handle_router_record (&self, &join);
    assert (self.user_count == 1 && gw_user_find (&self, qms_str ("id1")) && self.users_gen == gen + 1);
    assert (memmem (self.changes.data, self.changes.len, "ann", 3));
    qms_rec_t leave = { .type = QMS_GW_LEAVE, .s = { [QMS_PRESENCE_ID] = qms_str ("id1") } };
    handle_router_record (&self, &leave);
    assert (self.user_count == 0 && self.users_gen == gen + 2);
    handle_router_record (&self, &leave);            /* unknown: no change */
    assert (self.users_gen == gen + 2);
    qms_rec_t users = { .type = QMS_GW_USERS, .num = 2 };
    qms_rec_t user = { .type = QMS_GW_USER,
                       .s = { [QMS_PRESENCE_ID] = qms_str ("id2"), [QMS_PRESENCE_NAME] = qms_str ("bo"),
                              [QMS_PRESENCE_PUBKEY] = qms_str ("") } };
    handle_router_record (&self, &users);
    assert (self.changes.len == 0);
    handle_router_record (&self, &user);
    user.s [QMS_PRESENCE_ID] = qms_str ("id3");
    handle_router_record (&self, &user);
    assert (self.user_count == 2 && self.changes.len == 0);

    /*  Requests in flight: a ring that grows, in deadline order. */
    for (int i = 0; i < 200; i++) {
        conn_t c;
        memset (&c, 0, sizeof c);
        c.handle = (uint64_t) i + 1;
        wait_begin (&self, &c, WAIT_LOGIN);
        assert (c.waiting == WAIT_LOGIN && c.wait_seq == self.wait_seq);
        if (i == 99) {                              /* the oldest leave, then more come */
            self.wait_head = 60;
            self.wait_count -= 60;
        }
    }
    assert (self.wait_count == 140 && self.wait_cap >= 140);
    for (size_t i = 0; i < self.wait_count; i++) {
        waiting_t *w = &self.waits [(self.wait_head + i) % self.wait_cap];
        assert (w->handle == 61 + i);
        assert (i == 0 || w->deadline >= self.waits [(self.wait_head + i - 1) % self.wait_cap].deadline);
    }
    gw_wait_expire (&self);                         /* none due yet */
    assert (self.wait_count == 140);

    /*  A batch from the router is applied whole or not at all: a join
        followed by a truncated record, or by a record the gateway does not
        receive, changes nothing; the same join alone is applied. */
    void *ctx = zsys_init ();
    void *ours = zmq_socket (ctx, ZMQ_PAIR), *router = zmq_socket (ctx, ZMQ_PAIR);
    assert (zmq_bind (ours, "inproc://gw-dispatch-test") == 0);
    assert (zmq_connect (router, "inproc://gw-dispatch-test") == 0);
    qms_rec_t join9 = { .type = QMS_GW_JOIN,
                        .s = { [QMS_PRESENCE_ID] = qms_str ("id9"), [QMS_PRESENCE_NAME] = qms_str ("nine"),
                               [QMS_PRESENCE_PUBKEY] = qms_str ("k") } };
    qms_rec_t login = { .type = QMS_AUTH_LOGIN, .conn = 1 };
    uint64_t bad = self.m.bad_batches;
    for (int round = 0; round < 3; round++) {
        qms_buf_t batch;
        qms_buf_init (&batch);
        assert (qms_rec_encode (&batch, &join9) == 0);
        if (round == 0) {
            assert (qms_rec_encode (&batch, &join9) == 0);
            batch.len -= 3;                         /* the second one cut short */
        }
        if (round == 1)
            assert (qms_rec_encode (&batch, &login) == 0);
        assert (qms_batch_send (router, NULL, 0, &batch) == 0);
        qms_buf_free (&batch);
        zclock_sleep (10);
        drain_socket (&self, ours, PEER_ROUTER);
        assert ((gw_user_find (&self, qms_str ("id9")) != NULL) == (round == 2));
    }
    assert (self.m.bad_batches == bad + 2);

    /*  A flush drains the socket it sent on: a send can take in the news
        ZMQ_FD would have given of what arrived (here nothing else reads it:
        without that drain the join below stays unread). */
    self.router_raw = ours;
    qms_rec_t join8 = join9;
    join8.s [QMS_PRESENCE_ID] = qms_str ("id8");
    join8.s [QMS_PRESENCE_NAME] = qms_str ("eight");
    qms_buf_t batch;
    qms_buf_init (&batch);
    assert (qms_rec_encode (&batch, &join8) == 0);
    assert (qms_batch_send (router, NULL, 0, &batch) == 0);
    qms_buf_free (&batch);
    zclock_sleep (10);
    qms_rec_t hello = { .type = QMS_RT_HELLO };
    gw_to_router (&self, &hello);
    flush_batches (&self);
    assert (gw_user_find (&self, qms_str ("id8")) != NULL);
    char sent [256];
    assert (zmq_recv (router, sent, sizeof sent, ZMQ_DONTWAIT) > 0);     /* the hello left */
    self.router_raw = NULL;

    int linger = 0;
    zmq_setsockopt (ours, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt (router, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close (ours);
    zmq_close (router);

    /*  ext: groups, both ways. */
    t_group_test (&self);

    gw_users_clear (&self);
    qms_map_free (&self.users_by_id);
    qms_buf_free (&self.to_router);
    qms_buf_free (&self.to_auth);
    qms_buf_free (&self.changes);
    qms_buf_free (&self.scratch);
    qms_buf_free (&self.to_write);
    free (self.waits);
    if (verbose)
        printf ("OK\n");
}
