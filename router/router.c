/*  router.c - the router actor: sessions in memory, who is online on which
    connection, delivery and user lists (docs/ARCHITECTURE.md, "How each
    client request flows").

    One thread.  Gateways talk to a ROUTER socket and are known by their
    ZeroMQ routing identity, each given a small index on first contact; a
    connection is keyed by (gateway index, connection handle).  Sessions are
    found by token hash, user id and connection key through hash maps, and
    sit on three intrusive lists: by last activity (LRU, for expiry), by the
    time they came online (user lists go out in that order), and "dirty"
    (activity not yet written to the store).  Nothing on the message path
    scans sessions.

    Everything one pass of the loop produces is appended to one buffer per
    gateway and one for the store, and each buffer leaves as one ZeroMQ
    message at the end of the pass.  A user list that changed in the pass is
    put in once per gateway, ahead of the first GW_BOUND that gateway gets
    in the pass (the gateway answers a login with the list it last heard).

    The store is asked (ST_SESSION_GET) only for sessions not in memory, for
    instance after a restart; such requests wait in a pending table keyed by
    request id and are answered "unavailable" (QMS_REASON_UNAVAILABLE) if the
    store has not replied within a few seconds.

    An administration command (admin/, common/qms_admin.h) ends a user's session with
    QMS_RT_KICK_USER, on the same socket or on the admin socket in the
    data directory; it is answered at once and never counted as a gateway.

    A message for a recipient online leaves from message_from () here;
    whatever is stored, held or drained is router_sf.c's (store-and-forward),
    and what both files share is in router_internal.h.
*/
#include "router_internal.h"
#include "qms_admin.h"

#include "qms_actor.h"
#include "qms_config.h"
#include "qms_inbox.h"
#include "qms_curve.h"
#include "qms_log.h"
#include "qms_metrics.h"

#include <errno.h>
#include <stdio.h>
#include <sys/random.h>
#include <unistd.h>

#define MAX_PENDING         65536       /* store requests in flight */
#define DRAIN_MAX           64          /* ZeroMQ messages per socket per pass */
#define CLOSE_REPLACED      4001        /* WebSocket close code for a kick */
#define FINAL_LINGER_MS     500
/*  A gateway sends RT_HELLO every second; after this long without a word
    from it, its users go offline (it died, or the network between us did). */
static _Atomic uint64_t s_gateway_timeout_ms = 6000;     /* the selftest changes it while running */
/*  After telling a gateway we hold none of its connections, this long for
    its announcements to arrive before an unknown connection is invalid. */
static uint64_t s_fresh_grace_ms = 5000;

/*  Timings the selftest shortens; read once by each actor during set-up. */
static uint64_t s_store_timeout_ms = 5000;
static uint64_t s_touch_period_ms = 5000;
static uint64_t s_tick_ms = 1000;

/*  Router-internal: set the store timeout, the period of activity writes
    and the expiry tick for routers started afterwards (0 keeps a value). */
static void
router_set_timing (uint64_t store_timeout_ms, uint64_t touch_period_ms, uint64_t tick_ms)
{
    if (store_timeout_ms)
        s_store_timeout_ms = store_timeout_ms;
    if (touch_period_ms)
        s_touch_period_ms = touch_period_ms;
    if (tick_ms)
        s_tick_ms = tick_ms;
}

/* ------------------------------------------------------------------------
    State (the rest is in router_internal.h): requests waiting for the store
    to find a session not in memory */

typedef enum { PENDING_AUTHORIZE, PENDING_MESSAGE } pending_kind_t;

/*  A request that waits for the store to say whether a token exists. */
typedef struct {
    link_t link;                /* in order of creation: oldest times out first */
    uint64_t req, req_h;
    uint64_t created;           /* monotonic ms */
    pending_kind_t kind;
    uint32_t gw;                /* NO_GATEWAY once the connection is gone */
    uint64_t conn;
    bool deleted;               /* the token was deleted meanwhile */
    char hash [QMS_HASH_HEX + 1];
    uint64_t flags;             /* QMS_SESSION_* of an authorize */
    qms_str_t target, message, client_id;  /* views into data [] (messages only) */
    char data [];
} pending_t;

#define NO_GATEWAY UINT32_MAX

static bool
match_req (const void *item, const void *key)
{
    return ((const pending_t *) item)->req == *(const uint64_t *) key;
}

/* ------------------------------------------------------------------------
    Output: appended during a pass, sent by flush_output () */

static void
send_kick (router_t *self, const session_t *s, const char *reason)
{
    qms_rec_t rec = { .type = QMS_GW_KICK, .conn = s->conn, .num = CLOSE_REPLACED };
    rec.s [QMS_KICK_REASON] = qms_str (reason);
    gw_emit (self, s->gw, &rec);
}

/*  GW_BOUND follows the GW_JOIN of the user (sent when the session bound),
    so the gateway answers a login with a list that holds the user. */
static void
send_bound (router_t *self, uint32_t gw, uint64_t conn, uint64_t kind, const session_t *s)
{
    qms_rec_t rec = { .type = QMS_GW_BOUND, .conn = conn, .num = kind };
    rec.s [QMS_BOUND_ID] = s->id;
    rec.s [QMS_BOUND_NAME] = s->name;
    gw_emit (self, gw, &rec);
}

static void
store_del (router_t *self, qms_str_t id, const char *hash)
{
    qms_rec_t rec = { .type = QMS_ST_SESSION_DEL, .req = 0 };
    rec.s [QMS_SESSION_DEL_ID] = id;
    rec.s [QMS_SESSION_DEL_HASH] = qms_strn (hash, QMS_HASH_HEX);
    store_emit (self, &rec);
}

static int
build_users (router_t *self)
{
    qms_buf_reset (&self->users);
    qms_rec_t head = { .type = QMS_GW_USERS, .num = self->online_count };
    if (qms_rec_encode (&self->users, &head))
        return -1;
    for (link_t *l = self->online.next; l != &self->online; l = l->next) {
        session_t *s = CONTAINER (l, session_t, online);
        qms_rec_t rec = { .type = QMS_GW_USER };
        rec.s [QMS_PRESENCE_ID] = s->id;
        rec.s [QMS_PRESENCE_NAME] = s->name;
        rec.s [QMS_PRESENCE_PUBKEY] = s->pubkey;
        if (qms_rec_encode (&self->users, &rec))
            return -1;
    }
    return 0;
}

/*  A new gateway (or one we had given up) gets the whole list once; from
    then on only changes (GW_JOIN, GW_LEAVE), so a change costs O(gateways),
    not O(users). */
static void
send_snapshot (router_t *self, gateway_t *g)
{
    if (build_users (self) || qms_buf_append (&g->out, self->users.data, self->users.len))
        qms_warn (LOG, "event=encode_failed type=GW_USERS");
}

static void
presence_emit (router_t *self, const qms_rec_t *rec)
{
    for (uint32_t i = 0; i < self->gateway_count; i++)
        gw_emit (self, i, rec);
}

static void
flush_output (router_t *self)
{
    for (uint32_t i = 0; i < self->gateway_count; i++) {
        gateway_t *g = gateway_live (self, i);
        if (!g)
            continue;
        if (g->out.len
        &&  qms_batch_send (self->frontend_raw, g->identity, g->identity_len, &g->out))
            qms_warn (LOG, "event=send_failed to=gateway gateway=%u bytes=%zu", i, g->out.len);
        qms_buf_reset (&g->out);
    }
    if (self->backend_out.len) {
        if (qms_batch_send (self->backend_raw, NULL, 0, &self->backend_out))
            qms_warn (LOG, "event=send_failed to=store bytes=%zu", self->backend_out.len);
        qms_buf_reset (&self->backend_out);
    }
}

/* ------------------------------------------------------------------------
    Sessions */

static session_t *
session_new (router_t *self, qms_str_t id, qms_str_t name, qms_str_t pubkey,
             qms_str_t hash, uint64_t now)
{
    assert (hash.len == QMS_HASH_HEX);
    size_t extra = (size_t) id.len + name.len + pubkey.len + 3;
    session_t *s = (session_t *) calloc (1, sizeof *s + extra);
    if (!s)
        return NULL;
    char *p = s->data;
    qms_str_t *views [3] = { &s->id, &s->name, &s->pubkey };
    qms_str_t values [3] = { id, name, pubkey };
    for (int i = 0; i < 3; i++) {
        memcpy (p, values [i].ptr, values [i].len);
        p [values [i].len] = 0;
        *views [i] = qms_strn (p, values [i].len);
        p += values [i].len + 1;
    }
    memcpy (s->hash, hash.ptr, QMS_HASH_HEX);
    s->id_h = qms_map_hash_bytes (self->seed, id.ptr, id.len);
    s->hash_h = qms_map_hash_bytes (self->seed, hash.ptr, hash.len);
    if (qms_map_insert (&self->by_id, s->id_h, s)) {
        free (s);
        return NULL;
    }
    if (qms_map_insert (&self->by_hash, s->hash_h, s)) {
        qms_map_remove (&self->by_id, s->id_h, s);
        free (s);
        return NULL;
    }
    s->last_active = now;
    list_append (&self->lru, &s->lru);
    self->session_count++;
    return s;
}

/*  Bind to (gw, conn), which the caller has freed.  0, or -1 on no memory. */
static int
session_bind (router_t *self, session_t *s, uint32_t gw, uint64_t conn)
{
    assert (!s->bound);
    s->conn_key = conn_key (gw, conn);
    s->conn_h = qms_map_hash_u64 (self->seed, s->conn_key);
    if (qms_map_insert (&self->by_conn, s->conn_h, s))
        return -1;
    s->gw = gw;
    s->conn = conn;
    s->bound = true;
    list_append (&self->online, &s->online);
    self->online_count++;
    qms_rec_t join = { .type = QMS_GW_JOIN };
    join.s [QMS_PRESENCE_ID] = s->id;
    join.s [QMS_PRESENCE_NAME] = s->name;
    join.s [QMS_PRESENCE_PUBKEY] = s->pubkey;
    presence_emit (self, &join);
    return 0;
}

/*  The session keeps its token; only the connection is forgotten. */
static void
session_offline (router_t *self, session_t *s)
{
    /*  A drain stops with the connection; the next bind starts it again
        and what was not confirmed is still in the store. */
    s->draining = false;
    s->fetch_req = s->sync_req = 0;
    if (s->bound) {
        qms_map_remove (&self->by_conn, s->conn_h, s);
        list_remove (&s->online);
        self->online_count--;
        s->bound = false;
        qms_rec_t leave = { .type = QMS_GW_LEAVE };
        leave.s [QMS_PRESENCE_ID] = s->id;
        presence_emit (self, &leave);
    }
    router_sf_held_release (self, s);     /* unbound now: held messages are stored */
    router_group_session_end (self, s);
}

static void
session_destroy (router_t *self, session_t *s)
{
    session_offline (self, s);
    free (s->recent);
    qms_map_remove (&self->by_id, s->id_h, s);
    qms_map_remove (&self->by_hash, s->hash_h, s);
    list_remove (&s->lru);
    list_remove (&s->dirty);
    self->session_count--;
    free (s);
}

/*  Activity: O(1) move to the LRU tail, written to the store later. */
static void
session_touch (router_t *self, session_t *s, uint64_t now)
{
    s->last_active = now;
    list_remove (&s->lru);
    list_append (&self->lru, &s->lru);
    if (!list_linked (&s->dirty))
        list_append (&self->dirty, &s->dirty);
}

static bool
session_expired (const router_t *self, const session_t *s, uint64_t now)
{
    return s->last_active + self->timeout_ms <= now;
}

/*  A store lookup already on its way must not bring a deleted token back. */
static void
pending_mark_deleted (router_t *self, const char *hash)
{
    for (link_t *l = self->pending.next; l != &self->pending; l = l->next) {
        pending_t *p = CONTAINER (l, pending_t, link);
        if (memcmp (p->hash, hash, QMS_HASH_HEX) == 0)
            p->deleted = true;
    }
}

/*  End an expired session: the connection that held it hears GW_INVALID
    with unbind, the store forgets it. */
static void
session_expire (router_t *self, session_t *s)
{
    if (s->bound)
        send_invalid (self, s->gw, s->conn, 1);
    store_del (self, s->id, s->hash);
    pending_mark_deleted (self, s->hash);
    qms_info (LOG, "event=session_expired user=%.*s", (int) s->id.len, s->id.ptr);
    self->m.expired++;
    session_destroy (self, s);
}

/*  A request found its session expired: expire it, and tell the requester
    once (with unbind if it is the connection that held the session). */
static void
expire_for_request (router_t *self, session_t *s, uint32_t gw, uint64_t conn)
{
    bool held = s->bound && s->gw == gw && s->conn_key == conn_key (gw, conn);
    session_expire (self, s);
    if (!held)
        send_invalid (self, gw, conn, 0);
}

/*  The user logged in again: the older session ends.  key is the new
    connection, which is not kicked if it held the old session. */
static void
session_replace (router_t *self, session_t *s, uint64_t key)
{
    if (s->bound && s->conn_key != key)
        send_kick (self, s, "Logged in elsewhere");
    pending_mark_deleted (self, s->hash);
    self->m.kicks++;
    qms_info (LOG, "event=session_replaced user=%.*s", (int) s->id.len, s->id.ptr);
    session_destroy (self, s);
}

/* ------------------------------------------------------------------------
    Requests */

static void
authorize_session (router_t *self, session_t *s, uint32_t gw, uint64_t conn, uint64_t now,
                   uint64_t flags)
{
    if (session_expired (self, s, now)) {
        expire_for_request (self, s, gw, conn);
        return;
    }
    uint64_t key = conn_key (gw, conn);
    if (s->bound && s->conn_key != key) {
        send_kick (self, s, "Session resumed elsewhere");
        session_offline (self, s);
    }
    session_t *holder = find_by_conn (self, key);
    if (holder && holder != s)
        session_offline (self, holder);
    if (!s->bound && session_bind (self, s, gw, conn)) {
        qms_warn (LOG, "event=out_of_memory what=bind");
        send_error (self, gw, conn, QMS_RT_AUTHORIZE, k_unavailable);
        return;
    }
    session_touch (self, s, now);
    s->receipts = flags & QMS_SESSION_RECEIPTS;
    bool silent = flags & QMS_SESSION_SILENT;
    qms_info (LOG, "event=%s user=%.*s gateway=%u", silent ? "session_restored" : "session_resumed",
              (int) s->id.len, s->id.ptr, gw);
    send_bound (self, gw, conn, silent ? QMS_BOUND_SILENT : QMS_BOUND_AUTHORIZE, s);
    router_sf_drain_start (self, s);
}

/* ------------------------------------------------------------------------
    Messages: live delivery here; held, stored and drained in router_sf.c */

static void
message_from (router_t *self, session_t *s, uint32_t gw, uint64_t conn,
              qms_str_t target, qms_str_t message, qms_str_t client_id, uint64_t now)
{
    if (session_expired (self, s, now)) {
        expire_for_request (self, s, gw, conn);
        return;
    }
    session_touch (self, s, now);
    if (target.len == 0 || target.len > MAX_ID_BYTES || client_id.len > MAX_CLIENT_ID) {
        send_rejected (self, gw, conn, client_id, k_unknown_recipient);
        return;
    }
    /*  A retry of a message already handled: the same answer again. */
    recent_entry_t *seen = recent_find (s, client_id);
    if (seen) {
        send_ack (self, gw, conn, seen->status, client_id, qms_str (seen->msg_id), seen->time, NULL);
        return;
    }
    char msg_id [MSG_ID_CHARS + 1];
    new_msg_id (self, msg_id);
    session_t *t = find_by_id (self, target);
    if (t && t->bound && !t->draining) {
        /*  The hot path: straight to the recipient's connection; the store
            is not touched. */
        qms_rec_t rec = { .type = QMS_GW_DELIVER, .conn = t->conn, .time = now };
        rec.s [QMS_DELIVER_SENDER] = s->id;
        rec.s [QMS_DELIVER_TEXT] = message;
        rec.s [QMS_DELIVER_MSG_ID] = qms_strn (msg_id, MSG_ID_CHARS);
        rec.s [QMS_DELIVER_RECIPIENT] = t->id;
        gw_emit (self, t->gw, &rec);
        self->m.delivered++;
        if (client_id.len) {
            send_ack (self, gw, conn, QMS_ACK_DELIVERED, client_id, qms_strn (msg_id, MSG_ID_CHARS), now, NULL);
            recent_remember (s, client_id, msg_id, QMS_ACK_DELIVERED, now);
            if (t->receipts)
                live_receipt_add (self, s, t, client_id, msg_id);
        }
        return;
    }
    if (t && t->draining && t->held_count < MAX_HELD
    &&  router_sf_held_add (t, s, gw, conn, message, client_id, msg_id, qms_str (NULL), now)) {
        self->m.held++;
        return;
    }
    if (t && t->draining)
        t->stored_gen++;        /* the drain fetches once more before it ends */
    router_sf_store_message (self, s, gw, conn, target, message, client_id, msg_id, now);
}

/*  Ask the store about a token not in memory; false if that cannot be. */
static bool
pending_new (router_t *self, pending_kind_t kind, uint32_t gw, uint64_t conn,
             qms_str_t hash, qms_str_t target, qms_str_t message, qms_str_t client_id,
             uint64_t flags)
{
    if (self->pending_count >= MAX_PENDING)
        return false;
    size_t extra = kind == PENDING_MESSAGE ? (size_t) target.len + message.len + client_id.len + 3 : 0;
    pending_t *p = (pending_t *) calloc (1, sizeof *p + extra);
    if (!p)
        return false;
    p->req = self->next_req++;
    p->req_h = qms_map_hash_u64 (self->seed, p->req);
    if (qms_map_insert (&self->pending_by_req, p->req_h, p)) {
        free (p);
        return false;
    }
    p->kind = kind;
    p->gw = gw;
    p->conn = conn;
    p->created = qms_mono_ms ();
    memcpy (p->hash, hash.ptr, QMS_HASH_HEX);
    if (kind == PENDING_MESSAGE) {
        memcpy (p->data, target.ptr, target.len);
        p->target = qms_strn (p->data, target.len);
        memcpy (p->data + target.len + 1, message.ptr, message.len);
        p->message = qms_strn (p->data + target.len + 1, message.len);
        char *cid = p->data + target.len + 1 + message.len + 1;
        memcpy (cid, client_id.ptr, client_id.len);
        p->client_id = qms_strn (cid, client_id.len);
    }
    p->flags = flags;
    list_append (&self->pending, &p->link);
    self->pending_count++;

    qms_rec_t rec = { .type = QMS_ST_SESSION_GET, .req = p->req };
    rec.s [QMS_SESSION_GET_HASH] = hash;
    store_emit (self, &rec);
    return true;
}

static void
pending_destroy (router_t *self, pending_t *p)
{
    qms_map_remove (&self->pending_by_req, p->req_h, p);
    list_remove (&p->link);
    self->pending_count--;
    free (p);
}

static void
on_online (router_t *self, uint32_t gw, const qms_rec_t *rec, uint64_t now)
{
    qms_str_t id = rec->s [QMS_ONLINE_ID], hash = rec->s [QMS_ONLINE_HASH];
    if (id.len == 0 || id.len > MAX_ID_BYTES || hash.len != QMS_HASH_HEX) {
        qms_warn (LOG, "event=bad_record type=RT_ONLINE gateway=%u", gw);
        send_error (self, gw, rec->conn, QMS_RT_ONLINE, k_unavailable);
        return;
    }
    uint64_t key = conn_key (gw, rec->conn);
    session_t *old = find_by_id (self, id);
    if (old)
        session_replace (self, old, key);
    old = find_by_hash (self, hash);    /* only if a token were reused */
    if (old)
        session_replace (self, old, key);
    session_t *holder = find_by_conn (self, key);
    if (holder)
        session_offline (self, holder);

    session_t *s = session_new (self, id, rec->s [QMS_ONLINE_NAME], rec->s [QMS_ONLINE_PUBKEY], hash, now);
    if (!s || session_bind (self, s, gw, rec->conn)) {
        if (s)
            session_destroy (self, s);
        qms_warn (LOG, "event=out_of_memory what=session");
        send_error (self, gw, rec->conn, QMS_RT_ONLINE, k_unavailable);
        return;
    }
    s->receipts = rec->num & QMS_SESSION_RECEIPTS;
    router_group_user_seen (self, id, rec->s [QMS_ONLINE_NAME], rec->s [QMS_ONLINE_PUBKEY]);
    qms_info (LOG, "event=session_started user=%.*s gateway=%u", (int) id.len, id.ptr, gw);
    send_bound (self, gw, rec->conn, QMS_BOUND_LOGIN, s);
    router_sf_drain_start (self, s);
}

static void
on_authorize (router_t *self, uint32_t gw, const qms_rec_t *rec, uint64_t now)
{
    qms_str_t hash = rec->s [QMS_AUTHORIZE_HASH];
    if (hash.len != QMS_HASH_HEX) {
        send_invalid (self, gw, rec->conn, 0);
        return;
    }
    session_t *s = find_by_hash (self, hash);
    if (s)
        authorize_session (self, s, gw, rec->conn, now, rec->num);
    else
    if (!pending_new (self, PENDING_AUTHORIZE, gw, rec->conn, hash, qms_str (NULL), qms_str (NULL),
                      qms_str (NULL), rec->num))
        send_error (self, gw, rec->conn, QMS_RT_AUTHORIZE, k_unavailable);
}

static void
on_message (router_t *self, uint32_t gw, const qms_rec_t *rec, uint64_t now)
{
    qms_str_t hash = rec->s [QMS_MESSAGE_HASH];
    session_t *s;
    if (hash.len == 0) {
        /*  The fast path: the gateway vouched that the token is the one
            bound to this connection. */
        s = find_by_conn (self, conn_key (gw, rec->conn));
        if (!s) {
            /*  A gateway still announcing its connections to us (we
                restarted) may have sent this before announcing this one:
                not a bad session, just not known yet. */
            gateway_t *g = self->gateways [gw];
            if (g->fresh_until > qms_mono_ms ())
                send_error (self, gw, rec->conn, QMS_RT_MESSAGE, k_unavailable);
            else
                send_invalid (self, gw, rec->conn, 1);
            return;
        }
    }
    else {
        if (hash.len != QMS_HASH_HEX) {
            send_invalid (self, gw, rec->conn, 0);
            return;
        }
        s = find_by_hash (self, hash);
        if (!s) {
            if (!pending_new (self, PENDING_MESSAGE, gw, rec->conn, hash, rec->s [QMS_MESSAGE_TARGET], rec->s [QMS_MESSAGE_TEXT],
                              rec->s [QMS_MESSAGE_CLIENT_ID], 0))
                send_error (self, gw, rec->conn, QMS_RT_MESSAGE, k_unavailable);
            return;
        }
    }
    message_from (self, s, gw, rec->conn, rec->s [QMS_MESSAGE_TARGET], rec->s [QMS_MESSAGE_TEXT],
                  rec->s [QMS_MESSAGE_CLIENT_ID], now);
}

/*  RT_GROUP and RT_GROUP_MESSAGE: the session as on_message finds it (a
    token not bound to the connection must be in memory: a group request
    does not wait for the store), touched, then router_group.c. */
static void
on_group (router_t *self, uint32_t gw, const qms_rec_t *rec, uint64_t now)
{
    bool message = rec->type == QMS_RT_GROUP_MESSAGE;
    qms_str_t hash = rec->s [message ? QMS_GMSG_HASH : QMS_GROUP_HASH];
    session_t *s = hash.len ? find_by_hash (self, hash) : find_by_conn (self, conn_key (gw, rec->conn));
    if (!s) {
        gateway_t *g = self->gateways [gw];
        if (!hash.len && g->fresh_until > qms_mono_ms ()) {
            qms_rec_t err = { .type = QMS_GW_GROUP_ERROR, .conn = rec->conn,
                              .num = message ? QMS_GROUP_OP_MESSAGE : rec->num };
            err.s [QMS_GERR_REASON] = qms_str (k_unavailable);
            err.s [QMS_GERR_CLIENT_ID] = rec->s [message ? QMS_GMSG_CLIENT_ID : QMS_GROUP_CLIENT_ID];
            gw_emit (self, gw, &err);
        }
        else
            send_invalid (self, gw, rec->conn, hash.len ? 0 : 1);
        return;
    }
    if (session_expired (self, s, now)) {
        expire_for_request (self, s, gw, rec->conn);
        return;
    }
    session_touch (self, s, now);
    if (message)
        router_group_on_message (self, s, gw, rec, now);
    else
        router_group_on_request (self, s, gw, rec);
}

static void
on_logout (router_t *self, const qms_rec_t *rec)
{
    qms_str_t hash = rec->s [QMS_LOGOUT_HASH];
    if (hash.len != QMS_HASH_HEX)
        return;
    pending_mark_deleted (self, hash.ptr);
    session_t *s = find_by_hash (self, hash);
    if (!s) {
        /*  Perhaps in the store only (after a restart): delete it there. */
        store_del (self, qms_str (NULL), hash.ptr);
        return;
    }
    if (s->bound) {
        qms_rec_t unbind = { .type = QMS_GW_UNBIND, .conn = s->conn };
        gw_emit (self, s->gw, &unbind);
    }
    store_del (self, s->id, s->hash);
    qms_info (LOG, "event=session_ended user=%.*s", (int) s->id.len, s->id.ptr);
    session_destroy (self, s);
}

/*  A lookup still on its way for a connection that is gone has nobody to
    answer (and must not bind a dead connection). */
static void
pending_forget_conn (router_t *self, uint32_t gw, uint64_t key, bool whole_gateway)
{
    for (link_t *l = self->pending.next; l != &self->pending; l = l->next) {
        pending_t *p = CONTAINER (l, pending_t, link);
        if (p->gw == gw && (whole_gateway || conn_key (gw, p->conn) == key))
            p->gw = NO_GATEWAY;
    }
}

static void
on_closed (router_t *self, uint32_t gw, const qms_rec_t *rec)
{
    uint64_t key = conn_key (gw, rec->conn);
    session_t *s = find_by_conn (self, key);
    if (s) {
        qms_debug (LOG, "event=offline user=%.*s", (int) s->id.len, s->id.ptr);
        session_offline (self, s);
    }
    if (self->pending_count)
        pending_forget_conn (self, gw, key, false);
}

/* ------------------------------------------------------------------------
    Gateways */

/*  Every connection of gateway gw is gone (it restarted or was replaced).
    Rare, so walking the online list is fine. */
static void
gateway_drop_connections (router_t *self, uint32_t gw)
{
    link_t *l = self->online.next;
    while (l != &self->online) {
        link_t *next = l->next;
        session_t *s = CONTAINER (l, session_t, online);
        if (s->gw == gw)
            session_offline (self, s);
        l = next;
    }
    if (self->pending_count)
        pending_forget_conn (self, gw, 0, true);
}

static void
on_hello (router_t *self, uint32_t gw, const qms_rec_t *rec)
{
    gateway_t *g = self->gateways [gw];
    char name [MAX_GATEWAY_NAME + 1];
    size_t len = rec->s [QMS_HELLO_NAME].len > MAX_GATEWAY_NAME ? MAX_GATEWAY_NAME : rec->s [QMS_HELLO_NAME].len;
    memcpy (name, rec->s [QMS_HELLO_NAME].ptr, len);
    name [len] = 0;

    if (g->hello && g->nonce != rec->num) {
        qms_info (LOG, "event=gateway_restarted gateway=%u name=\"%s\"", gw, name);
        gateway_drop_connections (self, gw);
    }
    /*  The same gateway (by name) under a new instance nonce: the old
        instance and its connections are gone. */
    for (uint32_t i = 0; *name && i < self->gateway_count; i++) {
        gateway_t *other = gateway_live (self, i);
        if (i == gw || !other || !other->hello || other->nonce == rec->num
        ||  strcmp (other->name, name))
            continue;
        qms_info (LOG, "event=gateway_replaced gateway=%u by=%u name=\"%s\"", i, gw, name);
        gateway_drop_connections (self, i);
        other->live = false;
        qms_buf_reset (&other->out);
    }
    if (!g->hello || g->nonce != rec->num)
        qms_info (LOG, "event=gateway_hello gateway=%u name=\"%s\" nonce=%llu",
                  gw, name, (unsigned long long) rec->num);
    /*  Fresh: we hold none of this gateway's connections (we are new, or we
        had given it up, or it restarted), so it announces its bound ones
        again and we rebuild who is online from them. */
    bool fresh = g->hello ? g->nonce != rec->num : !g->welcomed;
    qms_rec_t welcome = { .type = QMS_GW_WELCOME, .num = self->nonce, .req = fresh ? 1 : 0 };
    gw_emit (self, gw, &welcome);
    if (fresh) {
        send_snapshot (self, g);
        g->fresh_until = qms_mono_ms () + s_fresh_grace_ms;
    }
    g->hello = true;
    g->nonce = rec->num;
    memcpy (g->name, name, len + 1);
}

/*  The index of the gateway with this identity, given one on first
    contact; -1 if the table is full. */
static int
gateway_lookup (router_t *self, const uint8_t *identity, size_t len)
{
    gateway_t *g = gateway_live (self, self->last_gw);
    if (g && g->identity_len == len && memcmp (g->identity, identity, len) == 0)
        return (int) self->last_gw;
    uint32_t free_slot = self->gateway_count;
    for (uint32_t i = 0; i < self->gateway_count; i++) {
        g = self->gateways [i];
        if (g->live && g->identity_len == len && memcmp (g->identity, identity, len) == 0) {
            self->last_gw = i;
            return (int) i;
        }
        if (!g->live && free_slot == self->gateway_count)
            free_slot = i;
    }
    if (free_slot == MAX_GATEWAYS)
        return -1;
    if (free_slot == self->gateway_count) {
        g = (gateway_t *) calloc (1, sizeof *g);
        if (!g)
            return -1;
        qms_buf_init (&g->out);
        self->gateways [self->gateway_count++] = g;
    }
    g = self->gateways [free_slot];
    qms_buf_reset (&g->out);
    g->live = true;
    g->hello = false;
    g->welcomed = false;
    g->nonce = 0;
    g->name [0] = 0;
    memcpy (g->identity, identity, len);
    g->identity_len = len;
    self->last_gw = free_slot;
    qms_info (LOG, "event=gateway_new gateway=%u", free_slot);
    return (int) free_slot;
}

/* ------------------------------------------------------------------------
    Incoming batches */

/*  Our figures, as Prometheus text. */
static void
stats_text (router_t *self, qms_buf_t *out)
{
    qms_metrics_head (out, "qms_sessions", "gauge", "Sessions in the router's memory, and how many are online.");
    qms_metrics_value (out, "qms_sessions", "actor=\"router\",state=\"all\"", (double) self->session_count);
    qms_metrics_value (out, "qms_sessions", "actor=\"router\",state=\"online\"", (double) self->online_count);
    qms_metrics_head (out, "qms_messages_total", "counter", "Chat messages, by what became of them.");
    qms_metrics_value (out, "qms_messages_total", "actor=\"router\",result=\"delivered\"", (double) self->m.delivered);
    qms_metrics_value (out, "qms_messages_total", "actor=\"router\",result=\"held_during_drain\"", (double) self->m.held);
    qms_metrics_value (out, "qms_messages_total", "actor=\"router\",result=\"stored\"", (double) self->m.stored);
    qms_metrics_value (out, "qms_messages_total", "actor=\"router\",result=\"rejected\"", (double) self->m.rejected);
    qms_metrics_value (out, "qms_messages_total", "actor=\"router\",result=\"received\"", (double) self->m.received);
    qms_metrics_value (out, "qms_messages_total", "actor=\"router\",result=\"refused_store_busy\"",
                       (double) self->m.store_busy);
    qms_metrics_value (out, "qms_messages_total", "actor=\"router\",result=\"refused_store_timeout\"",
                       (double) self->m.store_cancelled);
    qms_metrics_head (out, "qms_store_inflight_bytes", "gauge", "Message bytes on their way to the store.");
    qms_metrics_value (out, "qms_store_inflight_bytes", "actor=\"router\"", (double) self->store_inflight);
    qms_metrics_head (out, "qms_session_ends_total", "counter", "Sessions ended by the router.");
    qms_metrics_value (out, "qms_session_ends_total", "actor=\"router\",why=\"replaced\"", (double) self->m.kicks);
    qms_metrics_value (out, "qms_session_ends_total", "actor=\"router\",why=\"expired\"", (double) self->m.expired);
    uint32_t live = 0;
    for (uint32_t i = 0; i < self->gateway_count; i++)
        live += gateway_live (self, i) != NULL;
    qms_metrics_head (out, "qms_gateways", "gauge", "Gateways the router hears from.");
    qms_metrics_value (out, "qms_gateways", "actor=\"router\"", live);
    qms_metrics_head (out, "qms_router_pending", "gauge", "Work waiting in the router.");
    qms_metrics_value (out, "qms_router_pending", "actor=\"router\",of=\"store_lookups\"", (double) self->pending_count);
    size_t msgreqs = 0;
    for (link_t *l = self->msgreqs.next; l != &self->msgreqs; l = l->next)
        msgreqs++;
    qms_metrics_value (out, "qms_router_pending", "actor=\"router\",of=\"store_message_requests\"", (double) msgreqs);
    qms_metrics_value (out, "qms_router_pending", "actor=\"router\",of=\"receipts_awaited\"", (double) self->live_receipt_count);
    router_group_stats (self, out);
}

/*  QMS_STATS: our figures for a gateway's /metrics. */
static void
on_stats (router_t *self, uint32_t gw, const qms_rec_t *rec)
{
    qms_buf_t text;
    qms_buf_init (&text);
    stats_text (self, &text);
    qms_rec_t answer = { .type = QMS_STATS, .req = rec->req };
    answer.s [QMS_STATS_TEXT] = qms_strn ((const char *) text.data, text.len);
    gw_emit (self, gw, &answer);
    qms_buf_free (&text);
}

/*  A batch of nothing but QMS_STATS_GET from a peer that is not a gateway
    we know (the role's own /metrics and /readyz, qms_ops.h): answered to
    its sender without giving it a gateway slot, so it is not counted in
    qms_gateways and gets no user lists. */
static bool
stats_only (const uint8_t *data, size_t size)
{
    size_t offset = 0;
    qms_rec_t rec;
    int count = 0;
    while (qms_rec_next (data, size, &offset, &rec) == 1) {
        if (rec.type != QMS_STATS_GET)
            return false;
        count++;
    }
    return count > 0;
}

static bool
gateway_known (router_t *self, const uint8_t *identity, size_t len)
{
    for (uint32_t i = 0; i < self->gateway_count; i++) {
        gateway_t *g = self->gateways [i];
        if (g->live && g->identity_len == len && memcmp (g->identity, identity, len) == 0)
            return true;
    }
    return false;
}

static void
stats_batch (router_t *self, const uint8_t *identity, size_t identity_len,
             const uint8_t *data, size_t size)
{
    qms_buf_t text, answers;
    qms_buf_init (&text);
    qms_buf_init (&answers);
    stats_text (self, &text);
    size_t offset = 0;
    qms_rec_t rec;
    while (qms_rec_next (data, size, &offset, &rec) == 1) {
        qms_rec_t answer = { .type = QMS_STATS, .req = rec.req };
        answer.s [QMS_STATS_TEXT] = qms_strn ((const char *) text.data, text.len);
        if (qms_rec_encode (&answers, &answer))
            qms_warn (LOG, "event=encode_failed type=STATS");
    }
    if (answers.len && qms_batch_send (self->frontend_raw, identity, identity_len, &answers))
        qms_warn (LOG, "event=send_failed to=stats bytes=%zu", answers.len);
    qms_buf_free (&text);
    qms_buf_free (&answers);
}

/*  An administrator deleted the user, reset its password or logged it
    out (the store has already forgotten the session): end the session as a
    logout does, and close its connection as a replaced session's. */
static void
on_kick_user (router_t *self, const qms_rec_t *rec, qms_rec_t *done)
{
    qms_str_t id = rec->s [QMS_KICK_USER_ID];
    if (id.len == 0 || id.len > MAX_ID_BYTES) {
        done->num = QMS_ST_ERROR;
        done->s [QMS_RESULT_DETAIL] = qms_str ("no user id");
        return;
    }
    router_group_user_changed (self, id);
    session_t *s = find_by_id (self, id);
    if (!s) {
        done->num = QMS_ST_NO_USER;
        done->s [QMS_RESULT_DETAIL] = qms_str ("no session in memory");
        return;
    }
    bool online = s->bound;
    if (online) {
        char reason [64] = "Removed by an administrator";
        if (rec->s [QMS_KICK_USER_REASON].len && !qms_str_copy (rec->s [QMS_KICK_USER_REASON], reason, sizeof reason))
            snprintf (reason, sizeof reason, "Removed by an administrator");
        send_kick (self, s, reason);
    }
    store_del (self, s->id, s->hash);
    pending_mark_deleted (self, s->hash);
    qms_info (LOG, "event=session_removed user=%.*s by=admin online=%s", (int) s->id.len, s->id.ptr,
              online ? "yes" : "no");
    session_destroy (self, s);
    done->num = QMS_ST_OK;
    done->s [QMS_RESULT_DETAIL] = qms_str (online ? "session ended, connection closed" : "session ended");
}

/*  A batch from an administration command: answered to its sender, who is
    not a gateway (no hello, no user lists, no slot in the table). */
static void
admin_batch (router_t *self, const uint8_t *identity, size_t identity_len,
             const uint8_t *data, size_t size)
{
    qms_buf_t answers;
    qms_buf_init (&answers);
    size_t offset = 0;
    qms_rec_t rec;
    while (qms_rec_next (data, size, &offset, &rec) == 1) {
        if (rec.type != QMS_RT_KICK_USER) {
            qms_warn (LOG, "event=unexpected type=%s from=admin", qms_type_name (rec.type));
            continue;
        }
        qms_rec_t done = { .type = QMS_ADMIN_DONE, .req = rec.req };
        on_kick_user (self, &rec, &done);
        if (qms_rec_encode (&answers, &done))
            qms_warn (LOG, "event=encode_failed type=ADMIN_DONE");
    }
    /*  The kick leaves before the answer: "done" means the connection is
        being closed. */
    flush_output (self);
    if (answers.len && qms_batch_send (self->frontend_raw, identity, identity_len, &answers))
        qms_warn (LOG, "event=send_failed to=admin bytes=%zu", answers.len);
    qms_buf_free (&answers);
}

static void
gateway_batch (router_t *self, const uint8_t *identity, size_t identity_len,
               const uint8_t *data, size_t size)
{
    /*  Checked whole first, so a malformed batch has no effect at all. */
    if (!qms_inbox_accept (LOG, "gateway", QMS_ROLE_ROUTER, data, size))
        return;
    if (size > 0 && data [0] == QMS_RT_KICK_USER) {
        admin_batch (self, identity, identity_len, data, size);
        return;
    }
    if (stats_only (data, size) && !gateway_known (self, identity, identity_len)) {
        stats_batch (self, identity, identity_len, data, size);
        return;
    }
    int gw = gateway_lookup (self, identity, identity_len);
    if (gw < 0) {
        qms_warn (LOG, "event=too_many_gateways max=%d", MAX_GATEWAYS);
        return;
    }
    gateway_t *g = self->gateways [gw];
    g->last_seen = qms_mono_ms ();
    if (!g->hello && !g->welcomed && !(size > 0 && data [0] == QMS_RT_HELLO)) {
        /*  Requests from a gateway we do not know yet (we restarted, or had
            given it up): tell it at once, so it announces its connections
            without waiting for its next hello. */
        qms_rec_t welcome = { .type = QMS_GW_WELCOME, .num = self->nonce, .req = 1 };
        gw_emit (self, (uint32_t) gw, &welcome);
        send_snapshot (self, g);
        g->welcomed = true;
        g->fresh_until = qms_mono_ms () + s_fresh_grace_ms;
    }
    uint64_t now = qms_now_ms ();
    size_t offset = 0;
    qms_rec_t rec;
    while (qms_rec_next (data, size, &offset, &rec) == 1) {
        switch (rec.type) {
            case QMS_RT_HELLO:     on_hello (self, (uint32_t) gw, &rec); break;
            case QMS_RT_ONLINE:    on_online (self, (uint32_t) gw, &rec, now); break;
            case QMS_RT_AUTHORIZE: on_authorize (self, (uint32_t) gw, &rec, now); break;
            case QMS_RT_MESSAGE:   on_message (self, (uint32_t) gw, &rec, now); break;
            case QMS_RT_LOGOUT:    on_logout (self, &rec); break;
            case QMS_RT_CLOSED:    on_closed (self, (uint32_t) gw, &rec); break;
            case QMS_RT_RECEIPT:   router_sf_on_receipt (self, (uint32_t) gw, &rec); break;
            case QMS_RT_SYNCED:    router_sf_on_synced (self, (uint32_t) gw, &rec); break;
            case QMS_RT_LOOKUP:    router_sf_on_lookup (self, (uint32_t) gw, &rec); break;
            case QMS_RT_UNDELIVERED: router_sf_on_undelivered (self, &rec); break;
            case QMS_RT_GROUP:
            case QMS_RT_GROUP_MESSAGE: on_group (self, (uint32_t) gw, &rec, now); break;
            case QMS_RT_GROUP_UNDELIVERED: router_group_on_undelivered (self, &rec); break;
            case QMS_STATS_GET:    on_stats (self, (uint32_t) gw, &rec); break;
            case QMS_NONE:         break;      /* a newer type: skipped */
            default:
                qms_warn (LOG, "event=unexpected type=%s from=gateway", qms_type_name (rec.type));
        }
    }
}

/*  A session the store knows, made resident; NULL if it is not usable. */
static session_t *
session_from_store (router_t *self, const pending_t *p, const qms_rec_t *rec, uint64_t now)
{
    qms_str_t id = rec->s [QMS_SESSION_ID];
    if (id.len == 0 || id.len > MAX_ID_BYTES) {
        qms_warn (LOG, "event=bad_record type=ST_SESSION");
        return NULL;
    }
    if (rec->time + self->timeout_ms <= now) {
        store_del (self, id, p->hash);
        qms_info (LOG, "event=session_expired user=%.*s", (int) id.len, id.ptr);
        return NULL;
    }
    /*  Memory is never older than the store: a user with another session
        here logged in again after the store answered. */
    if (find_by_id (self, id)) {
        qms_debug (LOG, "event=stale_session user=%.*s", (int) id.len, id.ptr);
        return NULL;
    }
    qms_str_t hash = qms_strn (p->hash, QMS_HASH_HEX);
    session_t *s = session_new (self, id, rec->s [QMS_SESSION_NAME], rec->s [QMS_SESSION_PUBKEY], hash, now);
    if (!s)
        qms_warn (LOG, "event=out_of_memory what=session");
    return s;
}

static void
on_session_reply (router_t *self, const qms_rec_t *rec)
{
    uint64_t req_h = qms_map_hash_u64 (self->seed, rec->req);
    pending_t *p = (pending_t *) qms_map_find (&self->pending_by_req, req_h, &rec->req);
    if (!p) {
        qms_debug (LOG, "event=late_reply req=%llu", (unsigned long long) rec->req);
        return;
    }
    uint64_t now = qms_now_ms ();
    bool answer = p->gw != NO_GATEWAY;
    /*  Another request may have brought the session in meanwhile. */
    session_t *s = find_by_hash (self, qms_strn (p->hash, QMS_HASH_HEX));
    if (!s && rec->num == 1 && !p->deleted && (answer || p->kind == PENDING_MESSAGE))
        s = session_from_store (self, p, rec, now);

    if (!s) {
        if (answer)
            send_invalid (self, p->gw, p->conn, 0);
    }
    else
    if (p->kind == PENDING_AUTHORIZE) {
        if (answer)
            authorize_session (self, s, p->gw, p->conn, now, p->flags);
    }
    else
        message_from (self, s, p->gw, p->conn, p->target, p->message, p->client_id, now);
    pending_destroy (self, p);
}

static void
store_batch (router_t *self, const uint8_t *data, size_t size)
{
    if (!qms_inbox_accept (LOG, "store", QMS_ROLE_ROUTER, data, size))
        return;
    size_t offset = 0;
    qms_rec_t rec;
    while (qms_rec_next (data, size, &offset, &rec) == 1) {
        if (rec.req && router_group_store_reply (self, &rec))
            continue;
        if (rec.req && (rec.type == QMS_ST_RESULT || rec.type == QMS_ST_MSG || rec.type == QMS_ST_USER
                     || rec.type == QMS_ST_MSG_END || rec.type == QMS_ST_MSG_DELETED || rec.type == QMS_ST_GROUP_MSG)
        &&  router_sf_msgreq_reply (self, &rec))
            continue;
        if (rec.type == QMS_ST_SESSION)
            on_session_reply (self, &rec);
        else
        if (rec.type == QMS_ST_RESULT) {
            if (rec.num != QMS_ST_OK)
                qms_warn (LOG, "event=store_write_failed status=%llu detail=\"%.*s\"",
                          (unsigned long long) rec.num, (int) rec.s [QMS_RESULT_DETAIL].len, rec.s [QMS_RESULT_DETAIL].ptr);
        }
        else
        if (rec.type != QMS_NONE)
            qms_warn (LOG, "event=unexpected type=%s from=store", qms_type_name (rec.type));
    }
}

/*  qms_inbox batch handlers: the frontend (gateways, the admin command, an
    ops responder) and the backend (the store). */
static void
on_frontend_batch (void *self, const uint8_t *identity, size_t identity_len,
                   const uint8_t *data, size_t size)
{
    gateway_batch ((router_t *) self, identity, identity_len, data, size);
}

static void
on_backend_batch (void *self, const uint8_t *identity, size_t identity_len,
                  const uint8_t *data, size_t size)
{
    store_batch ((router_t *) self, data, size);
}

/* ------------------------------------------------------------------------
    Timers */

static void
expire_sessions (router_t *self)
{
    uint64_t now = qms_now_ms ();
    while (!list_empty (&self->lru)) {
        session_t *s = CONTAINER (self->lru.next, session_t, lru);
        if (!session_expired (self, s, now))
            break;
        session_expire (self, s);
    }
}

/*  The store did not answer in time: say so rather than keep anyone
    waiting. */
static void
expire_pending (router_t *self, uint64_t mono)
{
    size_t count = 0;
    while (!list_empty (&self->pending)) {
        pending_t *p = CONTAINER (self->pending.next, pending_t, link);
        if (p->created + self->store_timeout_ms > mono)
            break;
        if (p->gw != NO_GATEWAY)
            send_error (self, p->gw, p->conn,
                        p->kind == PENDING_AUTHORIZE ? QMS_RT_AUTHORIZE : QMS_RT_MESSAGE,
                        k_unavailable);
        pending_destroy (self, p);
        count++;
    }
    if (count)
        qms_warn (LOG, "event=store_timeout requests=%zu", count);
}

static void
flush_touches (router_t *self)
{
    while (!list_empty (&self->dirty)) {
        session_t *s = CONTAINER (self->dirty.next, session_t, dirty);
        qms_rec_t rec = { .type = QMS_ST_SESSION_TOUCH, .req = 0, .time = s->last_active };
        rec.s [QMS_TOUCH_ID] = s->id;
        store_emit (self, &rec);
        list_remove (&s->dirty);
    }
}

/*  Gateways that stopped saying hello are gone: their users go offline. */
static void
expire_gateways (router_t *self, uint64_t mono)
{
    for (uint32_t i = 0; i < self->gateway_count; i++) {
        gateway_t *g = gateway_live (self, i);
        if (!g || g->last_seen + s_gateway_timeout_ms > mono)
            continue;           /* (a peer that never said hello, e.g. a health probe, goes too) */
        qms_warn (LOG, "event=gateway_lost gateway=%u name=\"%s\" silent_ms=%llu", i, g->name,
                  (unsigned long long) (mono - g->last_seen));
        gateway_drop_connections (self, i);
        g->live = false;
        qms_buf_reset (&g->out);
    }
}

static void
run_timers (router_t *self)
{
    uint64_t mono = qms_mono_ms ();
    if (mono >= self->next_tick) {
        expire_gateways (self, mono);
        expire_sessions (self);
        self->next_tick = mono + self->tick_ms;
    }
    expire_pending (self, mono);
    router_sf_expire_msgreqs (self, mono);
    router_group_tick (self, mono);
    if (mono >= self->next_touch) {
        flush_touches (self);
        self->next_touch = mono + self->touch_period_ms;
    }
}

static long
wait_ms (const router_t *self)
{
    uint64_t due = self->next_tick < self->next_touch ? self->next_tick : self->next_touch;
    if (!list_empty (&self->pending)) {
        const pending_t *p = CONTAINER (self->pending.next, pending_t, link);
        if (p->created + self->store_timeout_ms < due)
            due = p->created + self->store_timeout_ms;
    }
    if (!list_empty (&self->msgreqs)) {
        const msgreq_t *m = CONTAINER (self->msgreqs.next, msgreq_t, link);
        if (m->created + self->store_timeout_ms < due)
            due = m->created + self->store_timeout_ms;
    }
    uint64_t mono = qms_mono_ms ();
    return due <= mono ? 0 : (long) (due - mono);
}

/* ------------------------------------------------------------------------
    Set-up, loop, tear-down */

static void
router_destroy (router_t **self_p)
{
    router_t *self = *self_p;
    if (!self)
        return;
    while (!list_empty (&self->lru))
        session_destroy (self, CONTAINER (self->lru.next, session_t, lru));
    while (!list_empty (&self->pending))
        pending_destroy (self, CONTAINER (self->pending.next, pending_t, link));
    while (!list_empty (&self->msgreqs))
        router_sf_msgreq_destroy (self, CONTAINER (self->msgreqs.next, msgreq_t, link));
    while (!list_empty (&self->live_receipts))
        live_receipt_destroy (self, CONTAINER (self->live_receipts.next, live_receipt_t, link));
    router_group_free (self);
    for (uint32_t i = 0; i < self->gateway_count; i++) {
        qms_buf_free (&self->gateways [i]->out);
        free (self->gateways [i]);
    }
    qms_map_free (&self->by_hash);
    qms_map_free (&self->by_id);
    qms_map_free (&self->by_conn);
    qms_map_free (&self->pending_by_req);
    qms_map_free (&self->msgreq_by_req);
    qms_map_free (&self->receipt_by_id);
    qms_buf_free (&self->backend_out);
    qms_buf_free (&self->users);
    zsock_destroy (&self->frontend);
    zsock_destroy (&self->backend);
    qms_admin_unbind (self->admin_path);
    free (self);
    *self_p = NULL;
}

/*  NULL with *error set when set-up failed. */
static router_t *
router_new (zsock_t *pipe, const qms_config_t *cfg, const char **error)
{
    router_t *self = (router_t *) calloc (1, sizeof *self);
    if (!self) {
        *error = "out of memory";
        return NULL;
    }
    self->pipe = pipe;
    self->timeout_ms = (uint64_t) (cfg->session_timeout > 0 ? cfg->session_timeout : 600) * 1000;
    self->store_timeout_ms = s_store_timeout_ms;
    self->touch_period_ms = s_touch_period_ms;
    self->tick_ms = s_tick_ms;
    self->next_req = 1;         /* req 0 is "no answer wanted" */
    list_init (&self->lru);
    list_init (&self->online);
    list_init (&self->dirty);
    list_init (&self->pending);
    list_init (&self->msgreqs);
    list_init (&self->live_receipts);
    qms_buf_init (&self->backend_out);
    qms_buf_init (&self->users);
    if (qms_map_init (&self->by_hash, match_hash)
    ||  qms_map_init (&self->by_id, match_id)
    ||  qms_map_init (&self->by_conn, match_conn)
    ||  qms_map_init (&self->pending_by_req, match_req)
    ||  qms_map_init (&self->msgreq_by_req, match_msgreq)
    ||  qms_map_init (&self->receipt_by_id, match_receipt)
    ||  router_group_init (self, cfg->group_max_members, cfg->group_max_per_user)) {
        *error = "out of memory";
        router_destroy (&self);
        return NULL;
    }
    /*  getrandom, not OpenSSL: OpenSSL keeps per-thread state that a
        detached actor thread may not free before the process exits. */
    if (getrandom (&self->seed, sizeof self->seed, GRND_NONBLOCK) != (ssize_t) sizeof self->seed)
        self->seed = qms_now_ms () ^ qms_mono_ms () << 20 ^ (uint64_t) (uintptr_t) self;
    if (getrandom (&self->nonce, sizeof self->nonce, GRND_NONBLOCK) != (ssize_t) sizeof self->nonce)
        self->nonce = self->seed ^ UINT64_C (0x5bd1e9955bd1e995);
    if (getrandom (&self->id_state, sizeof self->id_state, GRND_NONBLOCK) != (ssize_t) sizeof self->id_state)
        self->id_state = self->seed * UINT64_C (0x9e3779b97f4a7c15) ^ qms_now_ms ();

    self->frontend = zsock_new (ZMQ_ROUTER);
    self->backend = zsock_new (ZMQ_DEALER);
    if (!self->frontend || !self->backend) {
        *error = "cannot create sockets";
        router_destroy (&self);
        return NULL;
    }
    qms_socket_tune (self->frontend);
    qms_socket_tune (self->backend);
    if (qms_curve_bind (self->frontend, cfg->router_endpoint) == -1) {
        *error = "cannot bind the router endpoint";
        router_destroy (&self);
        return NULL;
    }
    /*  Beside the database the admin commands are pointed at: in the all
        role the store has made it by now; a router role whose data
        directory holds none (the default, its working directory) binds
        nothing there.  Not fatal: only the admin commands lose the router. */
    char db [sizeof cfg->data_dir + 16];
    snprintf (db, sizeof db, "%s/users.db", cfg->data_dir);
    if (cfg->data_dir [0] && access (db, F_OK) == 0)
        qms_admin_bind (self->frontend, cfg->data_dir, QMS_ADMIN_ROUTER_SOCKET, LOG,
                    self->admin_path, sizeof self->admin_path);
    if (qms_curve_connect (self->backend, cfg->store_endpoint) == -1) {
        *error = "cannot connect to the store endpoint";
        router_destroy (&self);
        return NULL;
    }
    self->frontend_raw = zsock_resolve (self->frontend);
    self->backend_raw = zsock_resolve (self->backend);
    uint64_t mono = qms_mono_ms ();
    self->next_tick = mono + self->tick_ms;
    self->next_touch = mono + self->touch_period_ms;
    router_group_start (self);
    return self;
}

/*  The end of a loop pass: timers, then what the pass produced leaves. */
static long
end_of_pass (void *self_)
{
    router_t *self = (router_t *) self_;
    run_timers (self);
    flush_output (self);
    return wait_ms (self);
}

void
router_actor (zsock_t *pipe, void *args)
{
    const qms_config_t *cfg = (const qms_config_t *) args;
    const char *error = NULL;
    router_t *self = router_new (pipe, cfg, &error);
    zsock_signal (pipe, 0);
    if (!self) {
        qms_error (LOG, "event=start_failed reason=\"%s\" endpoint=%s", error, cfg->router_endpoint);
        qms_actor_ready (pipe, error);
        return;
    }
    qms_info (LOG, "event=started endpoint=%s store=%s session_timeout=%llu",
              cfg->router_endpoint, cfg->store_endpoint,
              (unsigned long long) self->timeout_ms / 1000);
    qms_actor_ready (pipe, NULL);

    qms_inbox_t *loop = qms_inbox_new (pipe, LOG, self);
    if (loop
    &&  qms_inbox_batches (loop, self->frontend_raw, true, DRAIN_MAX, "gateway", on_frontend_batch) == 0
    &&  qms_inbox_batches (loop, self->backend_raw, false, DRAIN_MAX, "store", on_backend_batch) == 0) {
        qms_inbox_set_pass (loop, end_of_pass);
        qms_inbox_run (loop);
    }
    else
        qms_error (LOG, "event=loop_failed reason=\"out of memory\"");
    qms_inbox_destroy (&loop);
    /*  Activity not yet written would be lost: write it now, and give the
        socket a moment to deliver it. */
    flush_touches (self);
    flush_output (self);
    zsock_set_linger (self->backend, FINAL_LINGER_MS);
    qms_info (LOG, "event=stopped sessions=%zu online=%zu", self->session_count, self->online_count);
    router_destroy (&self);
}

/* ------------------------------------------------------------------------
    Selftest */


#define T_WAIT   5000   /* ms allowed for something that must come */
#define T_QUIET  100    /* ms of silence that shows nothing came */
#define T_IDS(...) ((const char *const []) { __VA_ARGS__, NULL })
#define T_NO_IDS   ((const char *const []) { NULL })

typedef struct {
    zmq_msg_t body;
    uint8_t identity [255];
    size_t identity_len;
    qms_rec_t rec [64];
    size_t count;
} t_batch_t;

typedef struct {
    qms_config_t cfg;
    zactor_t *router, *store_proxy;
    zsock_t *store, *gw_a, *gw_b;
    uint8_t store_peer [255];       /* the router's DEALER, as the store sees it */
    size_t store_peer_len;
} t_env_t;

/*  One batch from sock within timeout ms; its records point into b->body
    until t_done. */
/*  GW_WELCOME answers every hello; the tests count them here and look at
    the rest of each batch. */
static int s_t_welcomes, s_t_fresh_welcomes;

/*  The router tells gateways what changed (GW_JOIN, GW_LEAVE) after one
    whole list (GW_USERS).  The tests keep, per gateway socket, the list
    those records build, as a gateway does, and see each run of changes as
    the whole list it results in: so every check of a list below is a check
    that the changes were right. */
#define T_MAX_USERS 16
typedef struct {
    zsock_t *sock;
    char ids [T_MAX_USERS][64];
    char names [T_MAX_USERS][64];
    char keys [T_MAX_USERS][64];
    size_t count;
} t_mirror_t;
static t_mirror_t s_t_mirrors [8];

static t_mirror_t *
t_mirror (zsock_t *sock)
{
    for (int i = 0; i < 8; i++)
        if (s_t_mirrors [i].sock == sock)
            return &s_t_mirrors [i];
    for (int i = 0; i < 8; i++)
        if (!s_t_mirrors [i].sock) {
            s_t_mirrors [i].sock = sock;
            s_t_mirrors [i].count = 0;
            return &s_t_mirrors [i];
        }
    assert (false);
    return NULL;
}

static void
t_mirror_forget (zsock_t *sock)
{
    for (int i = 0; i < 8; i++)
        if (s_t_mirrors [i].sock == sock)
            s_t_mirrors [i].sock = NULL;
}

static void
t_mirror_apply (t_mirror_t *m, const qms_rec_t *rec)
{
    for (size_t i = 0; i < m->count; i++)
        if (qms_str_eq (rec->s [QMS_PRESENCE_ID], m->ids [i])) {
            assert (rec->type == QMS_GW_LEAVE);     /* never joins twice */
            memmove (m->ids [i], m->ids [i + 1], (m->count - i - 1) * sizeof m->ids [0]);
            memmove (m->names [i], m->names [i + 1], (m->count - i - 1) * sizeof m->names [0]);
            memmove (m->keys [i], m->keys [i + 1], (m->count - i - 1) * sizeof m->keys [0]);
            m->count--;
            return;
        }
    if (rec->type == QMS_GW_LEAVE)
        return;     /* a gateway that has not had its first list yet: ignored */
    assert (m->count < T_MAX_USERS);
    assert (qms_str_copy (rec->s [QMS_PRESENCE_NAME], m->names [m->count], sizeof m->names [0]));
    assert (qms_str_copy (rec->s [QMS_PRESENCE_PUBKEY], m->keys [m->count], sizeof m->keys [0]));
    assert (qms_str_copy (rec->s [QMS_PRESENCE_ID], m->ids [m->count++], sizeof m->ids [0]));
}

static bool
t_recv (zsock_t *sock, bool router, t_batch_t *b, int timeout)
{
    uint64_t deadline = qms_mono_ms () + (uint64_t) timeout;
    while (true) {
        uint64_t now = qms_mono_ms ();
        zmq_pollitem_t item = { zsock_resolve (sock), 0, ZMQ_POLLIN, 0 };
        if (now >= deadline || zmq_poll (&item, 1, (long) (deadline - now)) <= 0)
            return false;
        zmq_msg_init (&b->body);
        int rc = qms_batch_recv (zsock_resolve (sock), router ? b->identity : NULL,
                                 &b->identity_len, &b->body);
        assert (rc == 1);
        const uint8_t *data = (const uint8_t *) zmq_msg_data (&b->body);
        size_t size = zmq_msg_size (&b->body), offset = 0;
        b->count = 0;
        t_mirror_t *mirror = router ? NULL : t_mirror (sock);
        bool in_run = false;
        while (true) {
            qms_rec_t rec;
            int r = qms_rec_next (data, size, &offset, &rec);
            assert (r >= 0);
            bool delta = r == 1 && (rec.type == QMS_GW_JOIN || rec.type == QMS_GW_LEAVE);
            if (in_run && !delta) {
                /*  A run of changes ended: the list it made. */
                qms_rec_t head = { .type = QMS_GW_USERS, .num = mirror->count };
                b->rec [b->count++] = head;
                for (size_t i = 0; i < mirror->count; i++) {
                    qms_rec_t user = { .type = QMS_GW_USER, .s = { [QMS_PRESENCE_ID] = qms_str (mirror->ids [i]),
                                       [QMS_PRESENCE_NAME] = qms_str (mirror->names [i]),
                                       [QMS_PRESENCE_PUBKEY] = qms_str (mirror->keys [i]) } };
                    assert (b->count < 64);
                    b->rec [b->count++] = user;
                }
                in_run = false;
            }
            if (r == 0)
                break;
            if (rec.type == QMS_GW_WELCOME) {
                s_t_welcomes++;
                s_t_fresh_welcomes += rec.req == 1;
                continue;
            }
            if (delta) {
                t_mirror_apply (mirror, &rec);
                in_run = true;
                continue;
            }
            if (mirror && rec.type == QMS_GW_USERS)
                mirror->count = 0;
            if (mirror && rec.type == QMS_GW_USER) {
                assert (mirror->count < T_MAX_USERS);
                qms_str_copy (rec.s [QMS_PRESENCE_NAME], mirror->names [mirror->count], sizeof mirror->names [0]);
                qms_str_copy (rec.s [QMS_PRESENCE_PUBKEY], mirror->keys [mirror->count], sizeof mirror->keys [0]);
                qms_str_copy (rec.s [QMS_PRESENCE_ID], mirror->ids [mirror->count++], sizeof mirror->ids [0]);
            }
            assert (b->count < 64);
            b->rec [b->count++] = rec;
        }
        if (b->count)
            return true;
        zmq_msg_close (&b->body);
    }
}

/*  The fake store sits behind a proxy thread that answers what these tests
    do not look at, at once: the stored-message requests every login makes
    (ST_MSG_FETCH: nothing stored), messages to offline users
    (ST_MSG_STORE: no such user, this store has no users) and the groups a
    starting router loads (ST_GROUP_LOAD: none).  Everything else
    reaches the test through the actor pipe as [identity][batch], and what
    the test sends there goes to the router as it is. */
static void
t_store_proxy (zsock_t *pipe, void *args)
{
    zsock_t *store = zsock_new (ZMQ_ROUTER);
    assert (store);
    qms_socket_tune (store);
    assert (zsock_bind (store, "%s", (const char *) args) == 0);
    zsock_signal (pipe, 0);
    void *raw = zsock_resolve (store), *pipe_raw = zsock_resolve (pipe);
    while (true) {
        zmq_pollitem_t items [] = { { pipe_raw, 0, ZMQ_POLLIN, 0 }, { raw, 0, ZMQ_POLLIN, 0 } };
        if (zmq_poll (items, 2, -1) < 0)
            break;
        if (items [0].revents & ZMQ_POLLIN) {
            uint8_t identity [256];
            int n = zmq_recv (pipe_raw, identity, sizeof identity, 0);
            int more = 0;
            size_t more_size = sizeof more;
            zmq_getsockopt (pipe_raw, ZMQ_RCVMORE, &more, &more_size);
            if (!more)
                break;              /* $TERM */
            zmq_msg_t body;
            zmq_msg_init (&body);
            zmq_msg_recv (&body, pipe_raw, 0);
            zmq_send (raw, identity, (size_t) n, ZMQ_SNDMORE);
            zmq_msg_send (&body, raw, 0);
            zmq_msg_close (&body);
        }
        if (items [1].revents & ZMQ_POLLIN) {
            uint8_t identity [255];
            size_t identity_len = 0;
            zmq_msg_t body;
            zmq_msg_init (&body);
            if (qms_batch_recv (raw, identity, &identity_len, &body) == 1) {
                qms_buf_t keep, answers;
                qms_buf_init (&keep);
                qms_buf_init (&answers);
                const uint8_t *data = zmq_msg_data (&body);
                size_t size = zmq_msg_size (&body), offset = 0;
                qms_rec_t rec;
                while (qms_rec_next (data, size, &offset, &rec) == 1) {
                    if (rec.type == QMS_ST_MSG_FETCH || rec.type == QMS_ST_GROUP_LOAD) {
                        qms_rec_t end = { .type = QMS_ST_MSG_END, .req = rec.req, .seq = rec.seq };
                        qms_rec_encode (&answers, &end);
                    }
                    else
                    if (rec.type == QMS_ST_MSG_STORE) {
                        qms_rec_t result = { .type = QMS_ST_RESULT, .req = rec.req, .num = QMS_ST_NO_USER };
                        qms_rec_encode (&answers, &result);
                    }
                    else
                        qms_rec_encode (&keep, &rec);
                }
                if (answers.len)
                    qms_batch_send (raw, identity, identity_len, &answers);
                if (keep.len)
                    qms_batch_send (pipe_raw, identity, identity_len, &keep);
                qms_buf_free (&keep);
                qms_buf_free (&answers);
            }
            zmq_msg_close (&body);
        }
    }
    zsock_destroy (&store);
}

static void
t_get (zsock_t *sock, bool router, t_batch_t *b)
{
    bool got = t_recv (sock, router, b, T_WAIT);
    assert (got);
}

static void
t_done (t_batch_t *b)
{
    zmq_msg_close (&b->body);
}

static void
t_quiet (zsock_t *sock, bool router)
{
    t_batch_t b;
    bool got = t_recv (sock, router, &b, T_QUIET);
    if (got) {
        fprintf (stderr, "\nunexpected %s\n", qms_type_name (b.count ? b.rec [0].type : 0));
        t_done (&b);
    }
    assert (!got);
}

static void
t_is (const qms_rec_t *r, int type, uint64_t conn, uint64_t num, const char *s0, const char *s1)
{
    if (r->type != type)
        fprintf (stderr, "\nexpected %s, got %s\n", qms_type_name (type), qms_type_name (r->type));
    assert (r->type == type);
    assert (r->conn == conn);
    assert (r->num == num);
    assert (!s0 || qms_str_eq (r->s [0], s0));
    assert (!s1 || qms_str_eq (r->s [1], s1));
}

/*  A user list at rec [at] with exactly these ids in this order; returns
    the index after it. */
static size_t
t_users (const t_batch_t *b, size_t at, const char *const *ids)
{
    size_t n = 0;
    while (ids [n])
        n++;
    assert (at + n < b->count);
    t_is (&b->rec [at], QMS_GW_USERS, 0, n, NULL, NULL);
    for (size_t i = 0; i < n; i++)
        t_is (&b->rec [at + 1 + i], QMS_GW_USER, 0, 0, ids [i], NULL);
    return at + 1 + n;
}

/*  The next batch on sock is only this user list. */
static void
t_get_users (zsock_t *sock, const char *const *ids)
{
    t_batch_t b;
    t_get (sock, false, &b);
    assert (t_users (&b, 0, ids) == b.count);
    t_done (&b);
}

/*  The next batch on sock is exactly one record. */
static void
t_get_one (zsock_t *sock, int type, uint64_t conn, uint64_t num, const char *s0, const char *s1)
{
    t_batch_t b;
    t_get (sock, false, &b);
    assert (b.count == 1);
    t_is (&b.rec [0], type, conn, num, s0, s1);
    t_done (&b);
}

static qms_rec_t
t_rec (int type, uint64_t conn, const char *s0, const char *s1, const char *s2, const char *s3)
{
    qms_rec_t rec = { .type = (uint8_t) type, .conn = conn };
    rec.s [0] = qms_str (s0);
    rec.s [1] = qms_str (s1);
    rec.s [2] = qms_str (s2);
    rec.s [3] = qms_str (s3);
    return rec;
}

static void
t_send (zsock_t *sock, const uint8_t *identity, size_t identity_len,
        const qms_rec_t *recs, size_t count)
{
    qms_buf_t buf;
    qms_buf_init (&buf);
    for (size_t i = 0; i < count; i++)
        assert (qms_rec_encode (&buf, &recs [i]) == 0);
    assert (qms_batch_send (zsock_resolve (sock), identity, identity_len, &buf) == 0);
    qms_buf_free (&buf);
}

static void
t_send1 (zsock_t *sock, qms_rec_t rec)
{
    t_send (sock, NULL, 0, &rec, 1);
}

/*  A round trip through the router: everything sent before has been
    handled when this returns. */
static void
t_sync (zsock_t *gw)
{
    t_send1 (gw, t_rec (QMS_RT_MESSAGE, 0xFFFF, "nobody", "sync", "", NULL));
    /*  An unknown connection: invalid, or "unavailable" from a gateway that
        may still be announcing its connections (new to the router). */
    t_batch_t b;
    t_get (gw, false, &b);
    assert (b.count == 1 && b.rec [0].conn == 0xFFFF);
    assert ((b.rec [0].type == QMS_GW_INVALID && b.rec [0].num == 1)
         || (b.rec [0].type == QMS_GW_ERROR && qms_str_eq (b.rec [0].s [QMS_ERROR_REASON], k_unavailable)));
    t_done (&b);
}

static void
t_hello (zsock_t *gw, const char *name, uint64_t nonce)
{
    qms_rec_t hello = t_rec (QMS_RT_HELLO, 0, name, NULL, NULL, NULL);
    hello.num = nonce;
    int welcomes = s_t_welcomes;
    t_send1 (gw, hello);
    /*  A new gateway is told who is online, once, as a whole list. */
    t_batch_t b;
    t_get (gw, false, &b);
    assert (b.count >= 1 && b.rec [0].type == QMS_GW_USERS);
    t_done (&b);
    t_sync (gw);
    assert (s_t_welcomes == welcomes + 1);
}

/*  The next store batch: exactly one ST_SESSION_GET for hash; its req. */
static uint64_t
t_store_get (t_env_t *env, const char *hash)
{
    t_batch_t b;
    t_get (env->store, true, &b);
    assert (b.count == 1);
    t_is (&b.rec [0], QMS_ST_SESSION_GET, 0, 0, hash, NULL);
    assert (b.rec [0].req != 0);
    memcpy (env->store_peer, b.identity, b.identity_len);
    env->store_peer_len = b.identity_len;
    uint64_t req = b.rec [0].req;
    t_done (&b);
    return req;
}

static void
t_store_del (t_env_t *env, const char *id, const char *hash)
{
    t_batch_t b;
    t_get (env->store, true, &b);
    assert (b.count == 1);
    t_is (&b.rec [0], QMS_ST_SESSION_DEL, 0, 0, id, hash);
    assert (b.rec [0].req == 0);
    t_done (&b);
}

/*  The fake store answers one lookup. */
static void
t_store_answer (t_env_t *env, uint64_t req, bool found, uint64_t last_active,
                const char *id, const char *name)
{
    qms_rec_t rec = t_rec (QMS_ST_SESSION, 0, id, name, found ? "pk" : NULL, NULL);
    rec.req = req;
    rec.num = found ? 1 : 0;
    rec.time = last_active;
    t_send (env->store, env->store_peer, env->store_peer_len, &rec, 1);
}

static zsock_t *
t_gateway (const char *identity, const char *endpoint)
{
    zsock_t *gw = zsock_new (ZMQ_DEALER);
    assert (gw);
    qms_socket_tune (gw);
    zsock_set_identity (gw, identity);
    assert (zsock_connect (gw, "%s", endpoint) == 0);
    return gw;
}

static void
t_start (t_env_t *env, int session_timeout, const char *tag)
{
    memset (env, 0, sizeof *env);
    qms_config_defaults (&env->cfg);
    env->cfg.session_timeout = session_timeout;
    env->cfg.data_dir [0] = 0;          /* no admin socket in the working directory */
    snprintf (env->cfg.store_endpoint, sizeof env->cfg.store_endpoint,
              "inproc://router-test-%s-store", tag);
    snprintf (env->cfg.router_endpoint, sizeof env->cfg.router_endpoint,
              "inproc://router-test-%s-router", tag);
    env->store_proxy = zactor_new (t_store_proxy, env->cfg.store_endpoint);
    assert (env->store_proxy);
    env->store = zactor_sock (env->store_proxy);
    env->router = qms_actor_start (router_actor, &env->cfg, LOG);
    assert (env->router);
    env->gw_a = t_gateway ("gw-a", env->cfg.router_endpoint);
    env->gw_b = t_gateway ("gw-b", env->cfg.router_endpoint);
}

static void
t_stop (t_env_t *env)
{
    t_mirror_forget (env->gw_a);
    t_mirror_forget (env->gw_b);
    zactor_destroy (&env->router);
    zsock_destroy (&env->gw_a);
    zsock_destroy (&env->gw_b);
    zactor_destroy (&env->store_proxy);
    env->store = NULL;
    qms_config_free (&env->cfg);
}

static void
t_hash (const char *token, char *hash)
{
    qms_sha256_hex (token, strlen (token), hash);
}

/*  Login, user lists, delivery, kicks, closed connections, authorize. */
static void
t_sessions (t_env_t *env, const char *ha, const char *ha2, const char *hb)
{
    t_batch_t b;
    size_t at;

    /*  Login: every gateway gets the user list, and in the login's
        gateway it comes before GW_BOUND. */
    t_send1 (env->gw_a, t_rec (QMS_RT_ONLINE, 1, "id-alice", "alice", "pk-alice", ha));
    t_get (env->gw_a, false, &b);
    at = t_users (&b, 0, T_IDS ("id-alice"));
    assert (qms_str_eq (b.rec [1].s [QMS_PRESENCE_NAME], "alice") && qms_str_eq (b.rec [1].s [QMS_PRESENCE_PUBKEY], "pk-alice"));
    assert (at + 1 == b.count);
    t_is (&b.rec [at], QMS_GW_BOUND, 1, QMS_BOUND_LOGIN, "id-alice", "alice");
    t_done (&b);
    t_get_users (env->gw_b, T_IDS ("id-alice"));

    t_send1 (env->gw_b, t_rec (QMS_RT_ONLINE, 7, "id-bob", "bob", "pk-bob", hb));
    t_get (env->gw_b, false, &b);
    at = t_users (&b, 0, T_IDS ("id-alice", "id-bob"));
    assert (at + 1 == b.count);
    t_is (&b.rec [at], QMS_GW_BOUND, 7, QMS_BOUND_LOGIN, "id-bob", "bob");
    t_done (&b);
    t_get_users (env->gw_a, T_IDS ("id-alice", "id-bob"));

    /*  Messages: fast path across gateways, by hash from a connection
        that is not bound, to oneself, to nobody. */
    t_send1 (env->gw_a, t_rec (QMS_RT_MESSAGE, 1, "id-bob", "hi bob", "", NULL));
    t_get_one (env->gw_b, QMS_GW_DELIVER, 7, 0, "id-alice", "hi bob");
    t_quiet (env->gw_a, false);
    t_send1 (env->gw_b, t_rec (QMS_RT_MESSAGE, 99, "id-alice", "yo", hb, NULL));
    t_get_one (env->gw_a, QMS_GW_DELIVER, 1, 0, "id-bob", "yo");
    t_send1 (env->gw_a, t_rec (QMS_RT_MESSAGE, 1, "id-alice", "note to self", "", NULL));
    t_get_one (env->gw_a, QMS_GW_DELIVER, 1, 0, "id-alice", "note to self");
    t_send1 (env->gw_a, t_rec (QMS_RT_MESSAGE, 1, "id-nobody", "hello?", "", NULL));
    t_get_one (env->gw_a, QMS_GW_ERROR, 1, QMS_RT_MESSAGE, QMS_REASON_UNKNOWN_RECIPIENT, NULL);

    /*  One batch in, one batch out per gateway, in order. */
    qms_rec_t many [3] = {
        t_rec (QMS_RT_MESSAGE, 1, "id-bob", "m1", "", NULL),
        t_rec (QMS_RT_MESSAGE, 1, "id-nobody", "m2", "", NULL),
        t_rec (QMS_RT_MESSAGE, 1, "id-bob", "m3", "", NULL),
    };
    t_send (env->gw_a, NULL, 0, many, 3);
    t_get (env->gw_b, false, &b);
    assert (b.count == 2);
    t_is (&b.rec [0], QMS_GW_DELIVER, 7, 0, "id-alice", "m1");
    t_is (&b.rec [1], QMS_GW_DELIVER, 7, 0, "id-alice", "m3");
    t_done (&b);
    t_get_one (env->gw_a, QMS_GW_ERROR, 1, QMS_RT_MESSAGE, NULL, NULL);

    /*  A second login kicks the first connection; the old token dies. */
    t_send1 (env->gw_b, t_rec (QMS_RT_ONLINE, 8, "id-alice", "alice", "pk-alice2", ha2));
    t_get (env->gw_a, false, &b);
    t_is (&b.rec [0], QMS_GW_KICK, 1, 4001, "Logged in elsewhere", NULL);
    assert (t_users (&b, 1, T_IDS ("id-bob", "id-alice")) == b.count);
    t_done (&b);
    t_get (env->gw_b, false, &b);
    at = t_users (&b, 0, T_IDS ("id-bob", "id-alice"));
    assert (qms_str_eq (b.rec [2].s [QMS_PRESENCE_PUBKEY], "pk-alice2"));
    assert (at + 1 == b.count);
    t_is (&b.rec [at], QMS_GW_BOUND, 8, QMS_BOUND_LOGIN, "id-alice", "alice");
    t_done (&b);
    t_quiet (env->store, true);
    t_send1 (env->gw_a, t_rec (QMS_RT_MESSAGE, 1, "id-bob", "ghost", "", NULL));
    t_get_one (env->gw_a, QMS_GW_INVALID, 1, 1, NULL, NULL);
    t_send1 (env->gw_a, t_rec (QMS_RT_AUTHORIZE, 2, ha, NULL, NULL, NULL));
    t_store_answer (env, t_store_get (env, ha), false, 0, NULL, NULL);
    t_get_one (env->gw_a, QMS_GW_INVALID, 2, 0, NULL, NULL);

    /*  A closed connection: offline, but its token still authorizes, from
        memory (the store is not asked). */
    t_send1 (env->gw_b, t_rec (QMS_RT_CLOSED, 7, NULL, NULL, NULL, NULL));
    t_get_users (env->gw_a, T_IDS ("id-alice"));
    t_get_users (env->gw_b, T_IDS ("id-alice"));
    t_send1 (env->gw_b, t_rec (QMS_RT_MESSAGE, 8, "id-bob", "are you there", "", NULL));
    t_get_one (env->gw_b, QMS_GW_ERROR, 8, QMS_RT_MESSAGE, QMS_REASON_UNKNOWN_RECIPIENT, NULL);
    t_send1 (env->gw_a, t_rec (QMS_RT_AUTHORIZE, 3, hb, NULL, NULL, NULL));
    t_get (env->gw_a, false, &b);
    at = t_users (&b, 0, T_IDS ("id-alice", "id-bob"));
    assert (at + 1 == b.count);
    t_is (&b.rec [at], QMS_GW_BOUND, 3, QMS_BOUND_AUTHORIZE, "id-bob", "bob");
    t_done (&b);
    t_get_users (env->gw_b, T_IDS ("id-alice", "id-bob"));
    t_quiet (env->store, true);

    /*  Authorize elsewhere kicks the older connection. */
    t_send1 (env->gw_b, t_rec (QMS_RT_AUTHORIZE, 9, hb, NULL, NULL, NULL));
    t_get (env->gw_a, false, &b);
    t_is (&b.rec [0], QMS_GW_KICK, 3, 4001, "Session resumed elsewhere", NULL);
    assert (t_users (&b, 1, T_IDS ("id-alice", "id-bob")) == b.count);
    t_done (&b);
    t_get (env->gw_b, false, &b);
    at = t_users (&b, 0, T_IDS ("id-alice", "id-bob"));
    t_is (&b.rec [at], QMS_GW_BOUND, 9, QMS_BOUND_AUTHORIZE, "id-bob", "bob");
    t_done (&b);

    /*  A connection bound to alice authorizes as bob: alice goes offline
        (not ended), bob moves there; the list precedes GW_BOUND. */
    t_send1 (env->gw_b, t_rec (QMS_RT_AUTHORIZE, 8, hb, NULL, NULL, NULL));
    t_get (env->gw_b, false, &b);
    t_is (&b.rec [0], QMS_GW_KICK, 9, 4001, "Session resumed elsewhere", NULL);
    at = t_users (&b, 1, T_IDS ("id-bob"));
    assert (at + 1 == b.count);
    t_is (&b.rec [at], QMS_GW_BOUND, 8, QMS_BOUND_AUTHORIZE, "id-bob", "bob");
    t_done (&b);
    t_get_users (env->gw_a, T_IDS ("id-bob"));
    t_send1 (env->gw_a, t_rec (QMS_RT_AUTHORIZE, 1, ha2, NULL, NULL, NULL));
    t_get (env->gw_a, false, &b);
    at = t_users (&b, 0, T_IDS ("id-bob", "id-alice"));
    t_is (&b.rec [at], QMS_GW_BOUND, 1, QMS_BOUND_AUTHORIZE, "id-alice", "alice");
    t_done (&b);
    t_get_users (env->gw_b, T_IDS ("id-bob", "id-alice"));
    t_quiet (env->store, true);

    /*  Logging in again on the connection that holds the old session: no
        kick for it.  Then a connection bound to one user logs in as
        another: the first goes offline, keeping its token. */
    char ha3 [65], hr [65];
    t_hash ("token-a3", ha3);
    t_hash ("token-r", hr);
    t_send1 (env->gw_a, t_rec (QMS_RT_ONLINE, 1, "id-alice", "alice", "pk-alice3", ha3));
    t_get (env->gw_a, false, &b);
    at = t_users (&b, 0, T_IDS ("id-bob", "id-alice"));
    assert (at + 1 == b.count);
    t_is (&b.rec [at], QMS_GW_BOUND, 1, QMS_BOUND_LOGIN, "id-alice", "alice");
    t_done (&b);
    t_get_users (env->gw_b, T_IDS ("id-bob", "id-alice"));
    t_send1 (env->gw_b, t_rec (QMS_RT_ONLINE, 8, "id-erin", "erin", "pk-erin", hr));
    t_get (env->gw_b, false, &b);
    at = t_users (&b, 0, T_IDS ("id-alice", "id-erin"));
    assert (at + 1 == b.count);
    t_is (&b.rec [at], QMS_GW_BOUND, 8, QMS_BOUND_LOGIN, "id-erin", "erin");
    t_done (&b);
    t_get_users (env->gw_a, T_IDS ("id-alice", "id-erin"));
    t_send1 (env->gw_b, t_rec (QMS_RT_LOGOUT, 8, hr, NULL, NULL, NULL));
    t_get (env->gw_b, false, &b);
    t_is (&b.rec [0], QMS_GW_UNBIND, 8, 0, NULL, NULL);
    assert (t_users (&b, 1, T_IDS ("id-alice")) == b.count);
    t_done (&b);
    t_get_users (env->gw_a, T_IDS ("id-alice"));
    t_store_del (env, "id-erin", hr);
    t_send1 (env->gw_b, t_rec (QMS_RT_AUTHORIZE, 8, hb, NULL, NULL, NULL));
    t_get (env->gw_b, false, &b);
    at = t_users (&b, 0, T_IDS ("id-alice", "id-bob"));
    t_is (&b.rec [at], QMS_GW_BOUND, 8, QMS_BOUND_AUTHORIZE, "id-bob", "bob");
    t_done (&b);
    t_get_users (env->gw_a, T_IDS ("id-alice", "id-bob"));
    t_quiet (env->store, true);
}

/*  Sessions only the store knows: authorize and message through it,
    logout, and lookups that race a logout or a close. */
static void
t_through_store (t_env_t *env)
{
    char hc [65], hd [65], he [65], hf [65], hx [65], hy [65], hz [65];
    t_hash ("token-c", hc);
    t_hash ("token-d", hd);
    t_hash ("token-e", he);
    t_hash ("token-f", hf);
    t_hash ("token-x", hx);
    t_hash ("token-y", hy);
    t_hash ("token-z", hz);
    t_batch_t b;
    uint64_t now = qms_now_ms ();

    /*  Three lookups in one batch; the store answers in its own order:
        not found, found but expired, found. */
    qms_rec_t three [3] = {
        t_rec (QMS_RT_AUTHORIZE, 4, hc, NULL, NULL, NULL),
        t_rec (QMS_RT_AUTHORIZE, 5, hd, NULL, NULL, NULL),
        t_rec (QMS_RT_AUTHORIZE, 6, he, NULL, NULL, NULL),
    };
    t_send (env->gw_a, NULL, 0, three, 3);
    t_get (env->store, true, &b);
    assert (b.count == 3);
    t_is (&b.rec [0], QMS_ST_SESSION_GET, 0, 0, hc, NULL);
    t_is (&b.rec [1], QMS_ST_SESSION_GET, 0, 0, hd, NULL);
    t_is (&b.rec [2], QMS_ST_SESSION_GET, 0, 0, he, NULL);
    uint64_t req_c = b.rec [0].req, req_d = b.rec [1].req, req_e = b.rec [2].req;
    assert (req_c && req_d && req_e && req_c != req_d && req_d != req_e);
    memcpy (env->store_peer, b.identity, b.identity_len);
    env->store_peer_len = b.identity_len;
    t_done (&b);

    t_store_answer (env, req_e, false, 0, NULL, NULL);
    t_get_one (env->gw_a, QMS_GW_INVALID, 6, 0, NULL, NULL);
    t_store_answer (env, req_d, true, now - 601 * 1000, "id-dave", "dave");
    t_get_one (env->gw_a, QMS_GW_INVALID, 5, 0, NULL, NULL);
    t_store_del (env, "id-dave", hd);
    t_store_answer (env, req_c, true, now - 5000, "id-carol", "carol");
    t_get (env->gw_a, false, &b);
    size_t at = t_users (&b, 0, T_IDS ("id-alice", "id-bob", "id-carol"));
    t_is (&b.rec [at], QMS_GW_BOUND, 4, QMS_BOUND_AUTHORIZE, "id-carol", "carol");
    t_done (&b);
    t_get_users (env->gw_b, T_IDS ("id-alice", "id-bob", "id-carol"));

    /*  A message by a token only the store knows waits for the answer. */
    t_send1 (env->gw_b, t_rec (QMS_RT_MESSAGE, 50, "id-alice", "from frank", hf, NULL));
    t_store_answer (env, t_store_get (env, hf), true, now - 1000, "id-frank", "frank");
    t_get_one (env->gw_a, QMS_GW_DELIVER, 1, 0, "id-frank", "from frank");
    t_quiet (env->gw_b, false);     /* frank is not online: no list */
    t_send1 (env->gw_b, t_rec (QMS_RT_MESSAGE, 50, "id-dave", "x", hf, NULL));
    t_get_one (env->gw_b, QMS_GW_ERROR, 50, QMS_RT_MESSAGE, QMS_REASON_UNKNOWN_RECIPIENT, NULL);
    t_quiet (env->store, true);     /* frank is in memory now */

    /*  The store finds a token of a user who has another session in
        memory: that answer is older than the login, so it is refused. */
    char hw [65];
    t_hash ("token-w", hw);
    t_send1 (env->gw_b, t_rec (QMS_RT_AUTHORIZE, 60, hw, NULL, NULL, NULL));
    t_store_answer (env, t_store_get (env, hw), true, now, "id-alice", "alice");
    t_get_one (env->gw_b, QMS_GW_INVALID, 60, 0, NULL, NULL);
    t_quiet (env->gw_a, false);

    /*  Logout, even from another connection: unbind, delete, lists. */
    t_send1 (env->gw_b, t_rec (QMS_RT_LOGOUT, 77, hc, NULL, NULL, NULL));
    t_get (env->gw_a, false, &b);
    t_is (&b.rec [0], QMS_GW_UNBIND, 4, 0, NULL, NULL);
    assert (t_users (&b, 1, T_IDS ("id-alice", "id-bob")) == b.count);
    t_done (&b);
    t_get_users (env->gw_b, T_IDS ("id-alice", "id-bob"));
    t_store_del (env, "id-carol", hc);
    t_send1 (env->gw_a, t_rec (QMS_RT_AUTHORIZE, 4, hc, NULL, NULL, NULL));
    t_store_answer (env, t_store_get (env, hc), false, 0, NULL, NULL);
    t_get_one (env->gw_a, QMS_GW_INVALID, 4, 0, NULL, NULL);

    /*  Logout of a token not in memory: deleted in the store, silence. */
    t_send1 (env->gw_a, t_rec (QMS_RT_LOGOUT, 4, hx, NULL, NULL, NULL));
    t_store_del (env, "", hx);
    t_quiet (env->gw_a, false);

    /*  A lookup on its way when its token is logged out does not bring
        the session back. */
    t_send1 (env->gw_a, t_rec (QMS_RT_AUTHORIZE, 10, hy, NULL, NULL, NULL));
    uint64_t req = t_store_get (env, hy);
    t_send1 (env->gw_b, t_rec (QMS_RT_LOGOUT, 11, hy, NULL, NULL, NULL));
    t_store_del (env, "", hy);
    t_store_answer (env, req, true, now, "id-gina", "gina");
    t_get_one (env->gw_a, QMS_GW_INVALID, 10, 0, NULL, NULL);
    t_quiet (env->gw_b, false);

    /*  A connection that closed while its lookup was on its way is not
        bound, and nobody hears of it. */
    t_send1 (env->gw_a, t_rec (QMS_RT_AUTHORIZE, 12, hz, NULL, NULL, NULL));
    req = t_store_get (env, hz);
    t_send1 (env->gw_a, t_rec (QMS_RT_CLOSED, 12, NULL, NULL, NULL, NULL));
    t_sync (env->gw_a);
    t_store_answer (env, req, true, now, "id-hank", "hank");
    t_quiet (env->gw_a, false);
    t_quiet (env->gw_b, false);
}

/*  Malformed input is dropped whole, and the router still answers. */
static void
t_malformed (t_env_t *env)
{
    void *gw = zsock_resolve (env->gw_a);
    const uint8_t junk [] = { 0x11, 0xff, 0xff, 0xff, 0x7f, 1, 2 };
    assert (zmq_send (gw, junk, sizeof junk, 0) == (int) sizeof junk);

    /*  A good record followed by a truncated one: neither is acted on. */
    qms_buf_t buf;
    qms_buf_init (&buf);
    qms_rec_t self_note = t_rec (QMS_RT_MESSAGE, 1, "id-alice", "lost", "", NULL);
    assert (qms_rec_encode (&buf, &self_note) == 0);
    const uint8_t cut [] = { QMS_RT_MESSAGE, 0x40, 0, 0, 0, 1 };
    assert (qms_buf_append (&buf, cut, sizeof cut) == 0);
    assert (qms_batch_send (gw, NULL, 0, &buf) == 0);
    qms_buf_free (&buf);

    /*  Too many frames, an empty batch, an unknown (newer) type. */
    assert (zmq_send (gw, "a", 1, ZMQ_SNDMORE) == 1);
    assert (zmq_send (gw, "b", 1, 0) == 1);
    assert (zmq_send (gw, "", 0, 0) == 0);
    const uint8_t newer [] = { 200, 2, 0, 0, 0, 9, 9 };
    assert (zmq_send (gw, newer, sizeof newer, 0) == (int) sizeof newer);
    t_quiet (env->gw_a, false);
    t_sync (env->gw_a);
    t_send1 (env->gw_a, self_note);
    t_get_one (env->gw_a, QMS_GW_DELIVER, 1, 0, "id-alice", "lost");
}

/*  The next batch holds one or more user lists (the changes, then a whole
    list for a gateway that is new to the router), all equal to ids. */
static void
t_get_lists (zsock_t *sock, const char *const *ids)
{
    t_batch_t b;
    t_get (sock, false, &b);
    size_t at = 0;
    while (at < b.count)
        at = t_users (&b, at, ids);
    assert (at == b.count && at > 0);
    t_done (&b);
}

/*  A gateway that restarts (same identity, new nonce), or comes back
    under a new identity with its old name, loses its connections. */
static void
t_gateway_restart (t_env_t *env)
{
    qms_rec_t hello = t_rec (QMS_RT_HELLO, 0, "edge-a", NULL, NULL, NULL);
    hello.num = 2;
    t_send1 (env->gw_a, hello);
    t_get_lists (env->gw_a, T_IDS ("id-bob"));
    t_get_users (env->gw_b, T_IDS ("id-bob"));

    zsock_t *gw_c = t_gateway ("gw-c", env->cfg.router_endpoint);
    hello = t_rec (QMS_RT_HELLO, 0, "edge-b", NULL, NULL, NULL);
    hello.num = 5;
    t_send1 (gw_c, hello);
    t_get_lists (gw_c, T_NO_IDS);
    t_get_users (env->gw_a, T_NO_IDS);
    t_quiet (env->gw_b, false);
    t_sync (gw_c);
    t_mirror_forget (gw_c);
    zsock_destroy (&gw_c);
}

static void t_get_lists (zsock_t *sock, const char *const *ids);

/*  A gateway that falls silent is given up: its users go offline for the
    others; when it speaks again it is told to announce its connections. */
static void
t_gateway_loss (void)
{
    router_set_timing (2000, 3600 * 1000, 50);
    s_gateway_timeout_ms = 300;
    s_fresh_grace_ms = 5000;
    t_env_t env;
    t_start (&env, 600, "loss");
    char ha [65], hb [65];
    t_hash ("token-a", ha);
    t_hash ("token-b", hb);
    int fresh = s_t_fresh_welcomes;
    t_hello (env.gw_a, "edge-a", 1);
    t_hello (env.gw_b, "edge-b", 1);
    assert (s_t_fresh_welcomes == fresh + 2);
    t_send1 (env.gw_a, t_rec (QMS_RT_ONLINE, 1, "id-alice", "alice", "pk", ha));
    t_send1 (env.gw_b, t_rec (QMS_RT_ONLINE, 2, "id-bob", "bob", "pk", hb));
    t_batch_t b;
    /*  gw_b keeps saying hello; gw_a is silent. */
    bool alice_gone = false;
    uint64_t deadline = qms_mono_ms () + 3000;
    while (!alice_gone && qms_mono_ms () < deadline) {
        qms_rec_t hello = t_rec (QMS_RT_HELLO, 0, "edge-b", NULL, NULL, NULL);
        hello.num = 1;
        t_send1 (env.gw_b, hello);
        while (t_recv (env.gw_b, false, &b, 100)) {
            if (b.rec [0].type == QMS_GW_USERS && b.rec [0].num == 1
            &&  qms_str_eq (b.rec [1].s [QMS_PRESENCE_ID], "id-bob"))
                alice_gone = true;
            t_done (&b);
        }
    }
    assert (alice_gone);
    /*  gw_b stops saying hello now: it must not be given up too while gw_a
        comes back, however slow this machine is at the moment. */
    s_gateway_timeout_ms = 60000;
    /*  Back again: a fresh welcome, so it announces what it holds. */
    while (t_recv (env.gw_a, false, &b, 50))
        t_done (&b);            /* what it was sent before it fell silent */
    fresh = s_t_fresh_welcomes;
    qms_rec_t hello = t_rec (QMS_RT_HELLO, 0, "edge-a", NULL, NULL, NULL);
    hello.num = 1;
    t_send1 (env.gw_a, hello);
    t_get_lists (env.gw_a, T_IDS ("id-bob"));      /* the whole list, once */
    assert (s_t_fresh_welcomes == fresh + 1);
    /*  While it may still be announcing its connections, a message from one
        we do not know yet is "unavailable", not an invalid session. */
    t_send1 (env.gw_a, t_rec (QMS_RT_MESSAGE, 1, "id-bob", "early", "", NULL));
    t_get_one (env.gw_a, QMS_GW_ERROR, 1, QMS_RT_MESSAGE, k_unavailable, NULL);
    s_gateway_timeout_ms = 4000;
    t_stop (&env);
}

static void
t_main (void)
{
    s_fresh_grace_ms = 0;       /* these tests check what a known gateway gets */
    router_set_timing (2000, 3600 * 1000, 1000);
    t_env_t env;
    t_start (&env, 600, "main");
    char ha [65], ha2 [65], hb [65];
    t_hash ("token-a", ha);
    t_hash ("token-a2", ha2);
    t_hash ("token-b", hb);
    t_hello (env.gw_a, "edge-a", 1);
    t_hello (env.gw_b, "edge-b", 1);

    t_sessions (&env, ha, ha2, hb);
    t_through_store (&env);
    t_malformed (&env);
    t_gateway_restart (&env);

    /*  Activity not yet written goes to the store when the router stops:
        alice, bob and frank were touched, nobody else is in memory. */
    zactor_destroy (&env.router);
    t_batch_t b;
    t_get (env.store, true, &b);
    assert (b.count == 3);
    bool seen [3] = { false, false, false };
    const char *ids [3] = { "id-alice", "id-bob", "id-frank" };
    for (size_t i = 0; i < b.count; i++) {
        t_is (&b.rec [i], QMS_ST_SESSION_TOUCH, 0, 0, NULL, NULL);
        assert (b.rec [i].req == 0 && b.rec [i].time > 0);
        for (int k = 0; k < 3; k++)
            if (qms_str_eq (b.rec [i].s [QMS_TOUCH_ID], ids [k]))
                seen [k] = true;
    }
    assert (seen [0] && seen [1] && seen [2]);
    t_done (&b);
    t_stop (&env);
}

/*  Store timeouts, activity writes and expiry, with short timings. */
static void
t_timers (void)
{
    router_set_timing (300, 200, 50);
    t_env_t env;
    t_start (&env, 1, "timers");
    char ha [65], hx [65], hy [65];
    t_hash ("token-a", ha);
    t_hash ("token-x", hx);
    t_hash ("token-y", hy);
    t_hello (env.gw_a, "edge-a", 1);

    /*  The store does not answer: the requests are answered anyway. */
    uint64_t start = qms_mono_ms ();
    qms_rec_t two [2] = {
        t_rec (QMS_RT_AUTHORIZE, 1, hx, NULL, NULL, NULL),
        t_rec (QMS_RT_MESSAGE, 2, "id-alice", "anyone?", hy, NULL),
    };
    t_send (env.gw_a, NULL, 0, two, 2);
    t_batch_t b;
    t_get (env.store, true, &b);
    assert (b.count == 2);
    uint64_t late_req = b.rec [0].req;
    memcpy (env.store_peer, b.identity, b.identity_len);
    env.store_peer_len = b.identity_len;
    t_done (&b);
    bool seen_auth = false, seen_msg = false;
    while (!seen_auth || !seen_msg) {
        t_get (env.gw_a, false, &b);
        for (size_t i = 0; i < b.count; i++) {
            assert (b.rec [i].type == QMS_GW_ERROR);
            assert (qms_str_eq (b.rec [i].s [QMS_ERROR_REASON], QMS_REASON_UNAVAILABLE));
            if (b.rec [i].conn == 1 && b.rec [i].num == QMS_RT_AUTHORIZE)
                seen_auth = true;
            else
            if (b.rec [i].conn == 2 && b.rec [i].num == QMS_RT_MESSAGE)
                seen_msg = true;
            else
                assert (false);
        }
        t_done (&b);
    }
    assert (qms_mono_ms () - start >= 250);
    /*  Its late answer is ignored. */
    t_store_answer (&env, late_req, true, qms_now_ms (), "id-xavier", "xavier");
    t_quiet (env.gw_a, false);
    t_sync (env.gw_a);

    /*  Activity is written to the store within the touch period. */
    t_send1 (env.gw_a, t_rec (QMS_RT_ONLINE, 3, "id-alice", "alice", "pk", ha));
    t_get (env.gw_a, false, &b);
    t_is (&b.rec [t_users (&b, 0, T_IDS ("id-alice"))], QMS_GW_BOUND, 3, 0, "id-alice", NULL);
    t_done (&b);
    uint64_t before = qms_now_ms ();
    t_send1 (env.gw_a, t_rec (QMS_RT_MESSAGE, 3, "id-alice", "ping", "", NULL));
    t_get_one (env.gw_a, QMS_GW_DELIVER, 3, 0, "id-alice", "ping");
    uint64_t after = qms_now_ms ();
    t_get (env.store, true, &b);
    assert (b.count == 1);
    t_is (&b.rec [0], QMS_ST_SESSION_TOUCH, 0, 0, "id-alice", NULL);
    assert (b.rec [0].req == 0);
    assert (b.rec [0].time >= before && b.rec [0].time <= after);
    t_done (&b);

    /*  A second without activity: expired, unbound, deleted. */
    t_get (env.gw_a, false, &b);
    assert (qms_now_ms () - before >= 900);
    t_is (&b.rec [0], QMS_GW_INVALID, 3, 1, NULL, NULL);
    assert (t_users (&b, 1, T_NO_IDS) == b.count);
    t_done (&b);
    t_store_del (&env, "id-alice", ha);
    t_send1 (env.gw_a, t_rec (QMS_RT_MESSAGE, 3, "id-alice", "still there?", "", NULL));
    t_get_one (env.gw_a, QMS_GW_INVALID, 3, 1, NULL, NULL);
    t_quiet (env.store, true);
    t_stop (&env);
}

/*  A request that finds its session expired before the tick did. */
static void
t_expiry_on_request (void)
{
    router_set_timing (300, 3600 * 1000, 3600 * 1000);
    t_env_t env;
    t_start (&env, 1, "expiry");
    char ha [65], hb [65];
    t_hash ("token-a", ha);
    t_hash ("token-b", hb);
    t_hello (env.gw_a, "edge-a", 1);
    t_batch_t b;
    t_send1 (env.gw_a, t_rec (QMS_RT_ONLINE, 1, "id-alice", "alice", "pk", ha));
    t_get (env.gw_a, false, &b);
    t_done (&b);
    t_send1 (env.gw_a, t_rec (QMS_RT_ONLINE, 2, "id-bob", "bob", "pk", hb));
    t_get (env.gw_a, false, &b);
    t_done (&b);
    zclock_sleep (1100);

    /*  The fast path from the connection that held it: told once. */
    t_send1 (env.gw_a, t_rec (QMS_RT_MESSAGE, 1, "id-bob", "late", "", NULL));
    t_get (env.gw_a, false, &b);
    t_is (&b.rec [0], QMS_GW_INVALID, 1, 1, NULL, NULL);
    assert (t_users (&b, 1, T_IDS ("id-bob")) == b.count);
    t_done (&b);
    t_store_del (&env, "id-alice", ha);

    /*  Authorize from another connection: the holder is unbound, the
        requester hears InvalidUser. */
    t_send1 (env.gw_a, t_rec (QMS_RT_AUTHORIZE, 3, hb, NULL, NULL, NULL));
    t_get (env.gw_a, false, &b);
    t_is (&b.rec [0], QMS_GW_INVALID, 2, 1, NULL, NULL);
    size_t at = t_users (&b, 1, T_NO_IDS);     /* bob left as his session ended */
    t_is (&b.rec [at], QMS_GW_INVALID, 3, 0, NULL, NULL);
    assert (at + 1 == b.count);
    t_done (&b);
    t_store_del (&env, "id-bob", hb);
    t_quiet (env.store, true);
    t_stop (&env);
}

/*  An administration command ends a user's session: the connection is
    closed, everyone hears the user left, the store forgets the session,
    the command is answered; and it never becomes a gateway. */
static void
t_admin_kick (void)
{
    router_set_timing (2000, 3600 * 1000, 1000);
    t_env_t env;
    t_start (&env, 600, "kick");
    char ha [65], hb [65], hc [65];
    t_hash ("token-a", ha);
    t_hash ("token-b", hb);
    t_hash ("token-c", hc);
    t_hello (env.gw_a, "edge-a", 1);
    t_hello (env.gw_b, "edge-b", 1);
    t_batch_t b;
    t_send1 (env.gw_a, t_rec (QMS_RT_ONLINE, 1, "id-alice", "alice", "pk", ha));
    t_get (env.gw_a, false, &b);
    t_done (&b);
    t_get_users (env.gw_b, T_IDS ("id-alice"));
    t_send1 (env.gw_b, t_rec (QMS_RT_ONLINE, 2, "id-bob", "bob", "pk", hb));
    t_get (env.gw_b, false, &b);
    t_done (&b);
    t_get_users (env.gw_a, T_IDS ("id-alice", "id-bob"));
    /*  bob goes offline; his session stays in memory. */
    t_send1 (env.gw_b, t_rec (QMS_RT_CLOSED, 2, NULL, NULL, NULL, NULL));
    t_get_users (env.gw_a, T_IDS ("id-alice"));
    t_get_users (env.gw_b, T_IDS ("id-alice"));

    zsock_t *admin = zsock_new (ZMQ_DEALER);
    assert (admin);
    qms_socket_tune (admin);
    assert (zsock_connect (admin, "%s", env.cfg.router_endpoint) == 0);
    qms_rec_t kick = t_rec (QMS_RT_KICK_USER, 0, "id-alice", "Removed by an administrator", NULL, NULL);
    kick.req = 41;
    t_send1 (admin, kick);
    t_get (env.gw_a, false, &b);
    t_is (&b.rec [0], QMS_GW_KICK, 1, 4001, "Removed by an administrator", NULL);
    assert (t_users (&b, 1, T_NO_IDS) == b.count);
    t_done (&b);
    t_get_users (env.gw_b, T_NO_IDS);
    t_store_del (&env, "id-alice", ha);
    t_get (admin, false, &b);
    assert (b.count == 1 && b.rec [0].req == 41);
    t_is (&b.rec [0], QMS_ADMIN_DONE, 0, QMS_ST_OK, "session ended, connection closed", NULL);
    t_done (&b);
    /*  The token is dead: not in memory, so the store is asked (and has
        deleted it). */
    t_send1 (env.gw_a, t_rec (QMS_RT_AUTHORIZE, 3, ha, NULL, NULL, NULL));
    t_store_answer (&env, t_store_get (&env, ha), false, 0, NULL, NULL);
    t_get_one (env.gw_a, QMS_GW_INVALID, 3, 0, NULL, NULL);

    /*  An offline session ends without a kick; an unknown user, an empty
        id: one answer each, in order. */
    qms_rec_t many [3] = {
        t_rec (QMS_RT_KICK_USER, 0, "id-bob", NULL, NULL, NULL),
        t_rec (QMS_RT_KICK_USER, 0, "id-nobody", NULL, NULL, NULL),
        t_rec (QMS_RT_KICK_USER, 0, "", NULL, NULL, NULL),
    };
    for (int i = 0; i < 3; i++)
        many [i].req = 42 + (uint64_t) i;
    t_send (admin, NULL, 0, many, 3);
    t_get (admin, false, &b);
    assert (b.count == 3);
    t_is (&b.rec [0], QMS_ADMIN_DONE, 0, QMS_ST_OK, "session ended", NULL);
    t_is (&b.rec [1], QMS_ADMIN_DONE, 0, QMS_ST_NO_USER, NULL, NULL);
    t_is (&b.rec [2], QMS_ADMIN_DONE, 0, QMS_ST_ERROR, NULL, NULL);
    assert (b.rec [0].req == 42 && b.rec [1].req == 43 && b.rec [2].req == 44);
    t_done (&b);
    t_store_del (&env, "id-bob", hb);
    t_quiet (env.gw_a, false);
    t_quiet (env.gw_b, false);

    /*  Not a gateway: a login elsewhere sends it nothing. */
    t_send1 (env.gw_b, t_rec (QMS_RT_ONLINE, 4, "id-carol", "carol", "pk", hc));
    t_get (env.gw_b, false, &b);
    t_done (&b);
    t_get_users (env.gw_a, T_IDS ("id-carol"));
    t_quiet (admin, false);
    t_mirror_forget (admin);
    zsock_destroy (&admin);
    t_stop (&env);
}

void
router_test (bool verbose)
{
    if (verbose)
        printf (" * router: ");
    qms_map_test (false);
    t_main ();
    t_timers ();
    t_expiry_on_request ();
    t_gateway_loss ();
    t_admin_kick ();
    router_set_timing (5000, 5000, 1000);
    if (verbose)
        printf ("OK\n");
}
