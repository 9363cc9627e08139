/*  router_sf.c - the router's store-and-forward (docs/ARCHITECTURE.md,
    "Messages to offline users"): what router.c's message_from () does not
    deliver at once.

    A message for a recipient who is offline goes to the store
    (ST_MSG_STORE) and its sender hears "stored" once it is on disk.  When
    the recipient comes online, its stored messages are drained to it page
    by page (ST_MSG_FETCH, then GW_SYNC until the gateway says RT_SYNCED);
    live messages that arrive meanwhile are held in memory and follow the
    drain, so order is kept.  A client with receipts confirms what it got
    (RT_RECEIPT): the sender hears "received", and a stored copy is deleted
    (ST_MSG_DEL); a client without receipts has each page deleted once it
    was written to its connection.

    Every store request about messages waits in one table (msgreq_t, by
    request id, oldest first for the timeout); user lookups (RT_LOOKUP,
    ST_USER_FIND) ride on it too.  The message ids, acks, recent client ids
    and awaited receipts of the hot path are in router_internal.h.
*/
#include "router_internal.h"

/*  Bytes of messages on their way to the store at once, at most: past it a
    message for an offline recipient is refused ("Service temporarily
    unavailable.") rather than queued, so a flood towards offline users
    cannot fill memory while SQLite writes (docs/ROBUSTNESS.md). */
#define STORE_INFLIGHT_MAX  (32u * 1024 * 1024)
#define FETCH_PAGE          256         /* stored messages per page of a drain */

/* ------------------------------------------------------------------------
    Store requests about messages */

static msgreq_t *
msgreq_new (router_t *self, msgreq_kind_t kind, qms_str_t user)
{
    msgreq_t *m = (msgreq_t *) calloc (1, sizeof *m);
    if (!m)
        return NULL;
    m->req = self->next_req++;
    m->req_h = qms_map_hash_u64 (self->seed, m->req);
    if (qms_map_insert (&self->msgreq_by_req, m->req_h, m)) {
        free (m);
        return NULL;
    }
    m->kind = kind;
    m->created = qms_mono_ms ();
    qms_str_copy (user, m->user, sizeof m->user);
    list_append (&self->msgreqs, &m->link);
    return m;
}

void
router_sf_msgreq_destroy (router_t *self, msgreq_t *m)
{
    if (m->gsend)               /* never answered (the router is stopping) */
        router_group_stored (self, m, QMS_ST_ERROR);
    self->store_inflight -= m->bytes;
    qms_map_remove (&self->msgreq_by_req, m->req_h, m);
    list_remove (&m->link);
    free (m);
}

msgreq_t *
router_sf_msgreq_store (router_t *self, qms_str_t sender, qms_str_t recipient, size_t bytes)
{
    if (self->store_inflight + bytes > STORE_INFLIGHT_MAX) {
        self->m.store_busy++;
        return NULL;
    }
    msgreq_t *m = msgreq_new (self, MSGREQ_STORE, sender);
    if (m) {
        m->bytes = bytes;
        self->store_inflight += bytes;
        qms_str_copy (recipient, m->recipient, sizeof m->recipient);
    }
    return m;
}

/* ------------------------------------------------------------------------
    Messages that cannot go straight through: stored, or held */

/*  The recipient is offline (or still receiving what was stored for it):
    the store keeps the message, ciphertext and all, with the sender's name
    and key as they are now; the sender hears "stored" once it is on disk. */
void
router_sf_store_message (router_t *self, session_t *s, uint32_t gw, uint64_t conn,
                         qms_str_t target, qms_str_t message, qms_str_t client_id,
                         const char *msg_id, uint64_t now)
{
    msgreq_t *m = router_sf_msgreq_store (self, s->id, target, message.len + target.len + client_id.len);
    if (!m) {
        send_rejected (self, gw, conn, client_id, k_unavailable);
        return;
    }
    m->gw = gw;
    m->conn = conn;
    m->time = now;
    qms_str_copy (client_id, m->client_id, sizeof m->client_id);
    snprintf (m->msg_id, sizeof m->msg_id, "%s", msg_id);
    qms_rec_t rec = { .type = QMS_ST_MSG_STORE, .req = m->req, .time = now };
    rec.s [QMS_STORE_MSG_ID] = qms_str (msg_id);
    rec.s [QMS_STORE_RECIPIENT] = target;
    rec.s [QMS_STORE_SENDER] = s->id;
    rec.s [QMS_STORE_SENDER_NAME] = s->name;
    rec.s [QMS_STORE_SENDER_KEY] = s->pubkey;
    rec.s [QMS_STORE_TEXT] = message;
    rec.s [QMS_STORE_CLIENT_ID] = client_id;
    store_emit (self, &rec);
}

/*  A live message for a recipient whose drain is running waits at the end
    of its held queue. */
bool
router_sf_held_add (session_t *t, const session_t *s, uint32_t gw, uint64_t conn,
                    qms_str_t message, qms_str_t client_id, const char *msg_id, qms_str_t group,
                    uint64_t now)
{
    qms_str_t parts [6] = { s->id, s->name, s->pubkey, message, client_id, group };
    size_t extra = 0;
    for (int i = 0; i < 6; i++)
        extra += parts [i].len + 1;
    held_t *h = (held_t *) calloc (1, sizeof *h + extra);
    if (!h)
        return false;
    h->sender_gw = gw;
    h->sender_conn = conn;
    h->time = now;
    snprintf (h->msg_id, sizeof h->msg_id, "%s", msg_id);
    qms_str_t *views [6] = { &h->sender, &h->sender_name, &h->sender_key, &h->message, &h->client_id,
                             &h->group };
    char *p = h->data;
    for (int i = 0; i < 6; i++) {
        memcpy (p, parts [i].ptr, parts [i].len);
        *views [i] = qms_strn (p, parts [i].len);
        p += parts [i].len + 1;
    }
    if (!t->held)
        t->held_tail = &t->held;
    *t->held_tail = h;
    t->held_tail = &h->next;
    t->held_count++;
    return true;
}

/*  The drain ended: held messages go out now, in the order they came.  If
    the recipient went offline instead, they go to the store. */
void
router_sf_held_release (router_t *self, session_t *t)
{
    while (t->held) {
        held_t *h = t->held;
        t->held = h->next;
        t->held_count--;
        qms_str_t msg_id = qms_strn (h->msg_id, MSG_ID_CHARS);
        if (h->group.len) {
            /*  A group message: its ack went when it was sent. */
            session_t *sender = find_by_id (self, h->sender);
            qms_buf_t one;
            qms_buf_init (&one);
            if (t->bound && qms_targets_add (&one, t->conn, t->id.ptr, t->id.len) == 0) {
                qms_rec_t rec = { .type = QMS_GW_GROUP_DELIVER, .time = h->time };
                rec.s [QMS_GDELIVER_GROUP] = h->group;
                rec.s [QMS_GDELIVER_SENDER] = h->sender;
                rec.s [QMS_GDELIVER_TEXT] = h->message;
                rec.s [QMS_GDELIVER_MSG_ID] = msg_id;
                rec.s [QMS_GDELIVER_TARGETS] = qms_strn ((const char *) one.data, one.len);
                gw_emit (self, t->gw, &rec);
                self->m.delivered++;
                if (sender && h->client_id.len && t->receipts) {
                    char gid [MSG_ID_CHARS + 1];
                    qms_str_copy (h->group, gid, sizeof gid);
                    live_receipt_add_group (self, sender, t, h->client_id, h->msg_id, gid);
                }
            }
            else
            if (!router_group_store_copy (self, h->group, t->id, h->sender, h->sender_name, h->sender_key,
                                          h->message, h->client_id, msg_id, h->time))
                qms_warn (LOG, "event=held_lost user=%.*s reason=store_busy", (int) t->id.len, t->id.ptr);
            qms_buf_free (&one);
        }
        else
        if (t->bound) {
            qms_rec_t rec = { .type = QMS_GW_DELIVER, .conn = t->conn, .time = h->time };
            rec.s [QMS_DELIVER_SENDER] = h->sender;
            rec.s [QMS_DELIVER_TEXT] = h->message;
            rec.s [QMS_DELIVER_MSG_ID] = msg_id;
            rec.s [QMS_DELIVER_RECIPIENT] = t->id;
            gw_emit (self, t->gw, &rec);
            self->m.delivered++;
            session_t *sender = find_by_id (self, h->sender);
            if (h->client_id.len) {
                send_ack (self, h->sender_gw, h->sender_conn, QMS_ACK_DELIVERED, h->client_id, msg_id, h->time, NULL);
                if (sender)
                    recent_remember (sender, h->client_id, h->msg_id, QMS_ACK_DELIVERED, h->time);
                if (sender && t->receipts)
                    live_receipt_add (self, sender, t, h->client_id, h->msg_id);
            }
        }
        else {
            msgreq_t *m = router_sf_msgreq_store (self, h->sender, t->id, h->message.len + t->id.len + h->client_id.len);
            if (m) {
                m->gw = h->sender_gw;
                m->conn = h->sender_conn;
                m->time = h->time;
                qms_str_copy (h->client_id, m->client_id, sizeof m->client_id);
                snprintf (m->msg_id, sizeof m->msg_id, "%s", h->msg_id);
                qms_rec_t rec = { .type = QMS_ST_MSG_STORE, .req = m->req, .time = h->time };
                rec.s [QMS_STORE_MSG_ID] = msg_id;
                rec.s [QMS_STORE_RECIPIENT] = t->id;
                rec.s [QMS_STORE_SENDER] = h->sender;
                rec.s [QMS_STORE_SENDER_NAME] = h->sender_name;
                rec.s [QMS_STORE_SENDER_KEY] = h->sender_key;
                rec.s [QMS_STORE_TEXT] = h->message;
                rec.s [QMS_STORE_CLIENT_ID] = h->client_id;
                store_emit (self, &rec);
            }
            else
                send_rejected (self, h->sender_gw, h->sender_conn, h->client_id, k_unavailable);
        }
        free (h);
    }
    t->held_tail = &t->held;
}

/*  The store's answer to QMS_ST_MSG_STORE. */
static void
on_stored (router_t *self, msgreq_t *m, const qms_rec_t *rec)
{
    if (m->gsend) {
        router_group_stored (self, m, rec->num);
        return;
    }
    qms_str_t client_id = qms_str (m->client_id);
    session_t *sender = find_by_id (self, qms_str (m->user));
    /*  Answer on the connection the message came from (a message may come
        with a token on a connection that is not the sender's own); if that
        connection closed meanwhile, its gateway drops the answer: handles
        carry a generation and are never reused for another connection. */
    bool answer = true;
    switch (rec->num) {
        case QMS_ST_OK:
        case QMS_ST_EXISTS: {
            self->m.stored += rec->num == QMS_ST_OK;
            const char *id = rec->num == QMS_ST_EXISTS && rec->s [QMS_RESULT_STORED_ID].len ? NULL : m->msg_id;
            char existing [MSG_ID_CHARS + 1];
            if (!id) {
                qms_str_copy (rec->s [QMS_RESULT_STORED_ID], existing, sizeof existing);
                id = existing;
            }
            if (sender)
                recent_remember (sender, client_id, id, QMS_ACK_STORED, m->time);
            if (answer)
                send_ack (self, m->gw, m->conn, QMS_ACK_STORED, client_id, qms_str (id), m->time, NULL);
            break;
        }
        case QMS_ST_QUOTA:
            self->m.rejected++;
            if (answer)
                send_rejected (self, m->gw, m->conn, client_id, k_quota_full);
            break;
        case QMS_ST_NO_USER:
            self->m.rejected++;
            if (answer)
                send_rejected (self, m->gw, m->conn, client_id, k_unknown_recipient);
            break;
        default:
            qms_warn (LOG, "event=store_message_failed detail=\"%.*s\"", (int) rec->s [QMS_RESULT_DETAIL].len,
                      rec->s [QMS_RESULT_DETAIL].ptr);
            if (answer)
                send_rejected (self, m->gw, m->conn, client_id, k_unavailable);
    }
}

/* ------------------------------------------------------------------------
    Drains: what was stored, to a client that came online */

/*  Stored messages go to a client that just came online, page by page, in
    the order they were sent; each page is confirmed written (GW_SYNC) before
    the next is fetched, so a slow client never makes its queue overflow. */
static void
drain_fetch (router_t *self, session_t *s)
{
    msgreq_t *m = msgreq_new (self, MSGREQ_FETCH, s->id);
    if (!m) {
        s->draining = false;
        return;
    }
    s->fetch_req = m->req;
    s->fetch_gen = s->stored_gen;
    s->page_text = 0;
    qms_rec_t rec = { .type = QMS_ST_MSG_FETCH, .req = m->req, .num = FETCH_PAGE, .seq = s->drain_seq };
    rec.s [QMS_FETCH_RECIPIENT] = s->id;
    store_emit (self, &rec);
}

void
router_sf_drain_start (router_t *self, session_t *s)
{
    s->draining = true;
    s->drain_seq = 0;
    s->sync_req = 0;
    drain_fetch (self, s);
}

static void
drain_next (router_t *self, session_t *s)
{
    if (s->page_full || s->stored_gen != s->fetch_gen)
        drain_fetch (self, s);
    else {
        s->draining = false;    /* what comes now goes straight through */
        router_sf_held_release (self, s);
    }
}

static session_t *
drain_session (router_t *self, msgreq_t *m)
{
    session_t *s = find_by_id (self, qms_str (m->user));
    return s && s->bound && s->draining && s->fetch_req == m->req ? s : NULL;
}

static void
on_stored_message (router_t *self, msgreq_t *m, const qms_rec_t *rec)
{
    session_t *s = drain_session (self, m);
    if (!s)
        return;                 /* gone offline or restarted meanwhile */
    if (rec->type == QMS_ST_GROUP_MSG) {
        qms_rec_t out = { .type = QMS_GW_GROUP_STORED, .conn = s->conn, .time = rec->time };
        out.s [QMS_GDELIVER_GROUP] = rec->s [QMS_MSG_GROUP];
        out.s [QMS_GDELIVER_SENDER] = rec->s [QMS_MSG_SENDER];
        out.s [QMS_GDELIVER_TEXT] = rec->s [QMS_MSG_TEXT];
        out.s [QMS_GDELIVER_MSG_ID] = rec->s [QMS_MSG_ID];
        out.s [QMS_GSTORED_SENDER_NAME] = rec->s [QMS_MSG_SENDER_NAME];
        out.s [QMS_GSTORED_SENDER_KEY] = rec->s [QMS_MSG_SENDER_KEY];
        gw_emit (self, s->gw, &out);
        s->drain_seq = rec->seq;
        s->page_text += rec->s [QMS_MSG_TEXT].len;
        return;
    }
    qms_rec_t out = { .type = QMS_GW_DELIVER_STORED, .conn = s->conn, .time = rec->time };
    out.s [QMS_STORED_SENDER] = rec->s [QMS_MSG_SENDER];
    out.s [QMS_STORED_TEXT] = rec->s [QMS_MSG_TEXT];
    out.s [QMS_STORED_MSG_ID] = rec->s [QMS_MSG_ID];
    out.s [QMS_STORED_SENDER_NAME] = rec->s [QMS_MSG_SENDER_NAME];
    out.s [QMS_STORED_SENDER_KEY] = rec->s [QMS_MSG_SENDER_KEY];
    gw_emit (self, s->gw, &out);
    s->drain_seq = rec->seq;
    s->page_text += rec->s [QMS_MSG_TEXT].len;
}

static void
on_fetch_end (router_t *self, msgreq_t *m, const qms_rec_t *rec)
{
    session_t *s = drain_session (self, m);
    if (!s)
        return;
    s->fetch_req = 0;
    s->page_full = rec->num >= FETCH_PAGE || s->page_text >= QMS_FETCH_PAGE_BYTES;
    s->page_text = 0;
    if (rec->num == 0) {
        drain_next (self, s);
        return;
    }
    s->sync_req = send_sync (self, s->gw, s->conn);
}

/*  The page reached the client's connection. */
void
router_sf_on_synced (router_t *self, uint32_t gw, const qms_rec_t *rec)
{
    session_t *s = find_by_conn (self, conn_key (gw, rec->conn));
    if (s && router_group_on_synced (self, s, rec->req))
        return;
    if (!s || !s->draining || s->sync_req == 0 || s->sync_req != rec->req)
        return;
    s->sync_req = 0;
    if (!s->receipts) {
        /*  A client that sends no receipts: what was written to its
            connection is the best we can know, so it leaves the store. */
        qms_rec_t del = { .type = QMS_ST_MSG_DEL_UPTO, .req = 0, .seq = s->drain_seq };
        del.s [QMS_UPTO_RECIPIENT] = s->id;
        store_emit (self, &del);
    }
    drain_next (self, s);
}

/* ------------------------------------------------------------------------
    Receipts */

static void
ack_received (router_t *self, qms_str_t sender_id, qms_str_t client_id, qms_str_t msg_id, qms_str_t group,
              qms_str_t by)
{
    self->m.received++;
    session_t *sender = find_by_id (self, sender_id);
    if (!sender || !sender->bound || !client_id.len)
        return;
    if (group.len == 0) {
        send_ack (self, sender->gw, sender->conn, QMS_ACK_RECEIVED, client_id, msg_id, qms_now_ms (), NULL);
        return;
    }
    qms_rec_t rec = { .type = QMS_GW_GROUP_ACK, .conn = sender->conn, .num = QMS_ACK_RECEIVED,
                      .time = qms_now_ms () };
    rec.s [QMS_GACK_CLIENT_ID] = client_id;
    rec.s [QMS_GACK_MSG_ID] = msg_id;
    rec.s [QMS_GACK_GROUP] = group;
    rec.s [QMS_GACK_BY] = by;
    gw_emit (self, sender->gw, &rec);
}

/*  A client confirms a message: the sender hears "received", and a stored
    copy is deleted now (and only now, for clients with receipts). */
void
router_sf_on_receipt (router_t *self, uint32_t gw, const qms_rec_t *rec)
{
    session_t *s = rec->s [QMS_ASK_HASH].len ? find_by_hash (self, rec->s [QMS_ASK_HASH])
                                  : find_by_conn (self, conn_key (gw, rec->conn));
    qms_str_t msg_id = rec->s [QMS_RECEIPT_MSG_ID];
    if (!s) {
        send_invalid (self, gw, rec->conn, rec->s [QMS_ASK_HASH].len ? 0 : 1);
        return;
    }
    if (msg_id.len == 0 || msg_id.len > MSG_ID_CHARS)
        return;
    receipt_key_t key = { msg_id, s->id };
    live_receipt_t *r = (live_receipt_t *) qms_map_find (&self->receipt_by_id,
                                                         receipt_hash (self->seed, msg_id, s->id), &key);
    if (r) {
        ack_received (self, qms_str (r->sender), qms_str (r->client_id), msg_id, qms_str (r->group), s->id);
        live_receipt_destroy (self, r);
        return;
    }
    msgreq_t *m = msgreq_new (self, MSGREQ_DEL, s->id);
    if (!m)
        return;
    qms_rec_t del = { .type = QMS_ST_MSG_DEL, .req = m->req };
    del.s [QMS_DEL_RECIPIENT] = s->id;
    del.s [QMS_DEL_MSG_ID] = msg_id;
    store_emit (self, &del);
}

/* ------------------------------------------------------------------------
    Live messages a gateway could not write */

/*  A GW_DELIVER reached its gateway after the recipient's connection had
    closed: the recipient moved to another gateway while the link to this
    one was down (its queued deliveries arrive when the link comes back),
    or it left just then.  The sender was already told "delivered", so the
    message is not dropped: it goes to the recipient's connection if it has
    one now, else to the store as for a recipient offline.  No ack follows
    (the sender has had its answer), and there is no client id to dedupe
    on: the message id stays the same, so a client can drop a copy it got
    twice. */
void
router_sf_on_undelivered (router_t *self, const qms_rec_t *rec)
{
    qms_str_t target = rec->s [QMS_UNDELIVERED_RECIPIENT], sender_id = rec->s [QMS_UNDELIVERED_SENDER],
              message = rec->s [QMS_UNDELIVERED_TEXT], msg_id = rec->s [QMS_UNDELIVERED_MSG_ID];
    if (target.len == 0 || target.len > MAX_ID_BYTES || sender_id.len == 0
    ||  sender_id.len > MAX_ID_BYTES || msg_id.len != MSG_ID_CHARS) {
        qms_warn (LOG, "event=bad_record type=RT_UNDELIVERED");
        return;
    }
    session_t *t = find_by_id (self, target);
    if (t && t->bound && !t->draining) {
        qms_rec_t out = { .type = QMS_GW_DELIVER, .conn = t->conn, .time = rec->time };
        out.s [QMS_DELIVER_SENDER] = sender_id;
        out.s [QMS_DELIVER_TEXT] = message;
        out.s [QMS_DELIVER_MSG_ID] = msg_id;
        out.s [QMS_DELIVER_RECIPIENT] = t->id;
        gw_emit (self, t->gw, &out);
        self->m.delivered++;
        qms_info (LOG, "event=undelivered_resent user=%.*s gateway=%u", (int) target.len, target.ptr, t->gw);
        return;
    }
    /*  Stored: ST_MSG_STORE needs the sender's name (and key) as they are
        now, which only its session in memory has. */
    session_t *sender = find_by_id (self, sender_id);
    msgreq_t *m = sender ? router_sf_msgreq_store (self, sender_id, target, message.len + target.len) : NULL;
    if (!m) {
        qms_warn (LOG, "event=undelivered_lost user=%.*s reason=%s", (int) target.len, target.ptr,
                  sender ? "store_busy" : "sender_unknown");
        return;
    }
    if (t && t->draining)
        t->stored_gen++;        /* the drain fetches once more before it ends */
    m->gw = UINT32_MAX;         /* no gateway: nobody is answered */
    m->conn = 0;
    m->time = rec->time;
    qms_str_copy (msg_id, m->msg_id, sizeof m->msg_id);
    qms_rec_t out = { .type = QMS_ST_MSG_STORE, .req = m->req, .time = rec->time };
    out.s [QMS_STORE_MSG_ID] = msg_id;
    out.s [QMS_STORE_RECIPIENT] = target;
    out.s [QMS_STORE_SENDER] = sender_id;
    out.s [QMS_STORE_SENDER_NAME] = sender->name;
    out.s [QMS_STORE_SENDER_KEY] = sender->pubkey;
    out.s [QMS_STORE_TEXT] = message;
    out.s [QMS_STORE_CLIENT_ID] = qms_str (NULL);
    store_emit (self, &out);
    qms_info (LOG, "event=undelivered_stored user=%.*s", (int) target.len, target.ptr);
}

/* ------------------------------------------------------------------------
    User lookups (they ride on the table of store requests) */

/*  UserLookupRequest (ext): one name, found in the store whether or not the
    user is online (clients with "none" presence find their contacts so). */
void
router_sf_on_lookup (router_t *self, uint32_t gw, const qms_rec_t *rec)
{
    session_t *s = rec->s [QMS_ASK_HASH].len ? find_by_hash (self, rec->s [QMS_ASK_HASH])
                                  : find_by_conn (self, conn_key (gw, rec->conn));
    if (!s) {
        send_invalid (self, gw, rec->conn, rec->s [QMS_ASK_HASH].len ? 0 : 1);
        return;
    }
    char key [QMS_NAME_MAX_BYTES + 1];
    msgreq_t *m = NULL;
    if (rec->s [QMS_LOOKUP_NAME].len <= QMS_NAME_MAX_BYTES
    &&  qms_name_check (rec->s [QMS_LOOKUP_NAME].ptr, rec->s [QMS_LOOKUP_NAME].len) == NULL
    &&  qms_name_key (rec->s [QMS_LOOKUP_NAME].ptr, rec->s [QMS_LOOKUP_NAME].len, key) == 0)
        m = msgreq_new (self, MSGREQ_LOOKUP, rec->s [QMS_LOOKUP_NAME]);
    if (!m) {
        qms_rec_t none = { .type = QMS_GW_LOOKUP, .conn = rec->conn };
        none.s [QMS_FOUND_ASKED] = rec->s [QMS_LOOKUP_NAME];
        gw_emit (self, gw, &none);
        return;
    }
    m->gw = gw;
    m->conn = rec->conn;
    qms_rec_t find = { .type = QMS_ST_USER_FIND, .req = m->req };
    find.s [QMS_FIND_KEY] = qms_str (key);
    store_emit (self, &find);
}

static void
on_lookup_reply (router_t *self, msgreq_t *m, const qms_rec_t *rec)
{
    qms_rec_t out = { .type = QMS_GW_LOOKUP, .conn = m->conn, .num = rec->num == 1 };
    if (rec->num == 1) {
        out.s [QMS_FOUND_ID] = rec->s [QMS_USER_ID];
        out.s [QMS_FOUND_NAME] = rec->s [QMS_USER_NAME];
        out.s [QMS_FOUND_PUBKEY] = rec->s [QMS_USER_PUBKEY];
        session_t *t = find_by_id (self, rec->s [QMS_USER_ID]);
        out.req = t && t->bound;
    }
    out.s [QMS_FOUND_ASKED] = qms_str (m->user);
    gw_emit (self, m->gw, &out);
}

static void
on_deleted (router_t *self, const msgreq_t *m, const qms_rec_t *rec)
{
    if (rec->num == 1)
        ack_received (self, rec->s [QMS_DELETED_SENDER], rec->s [QMS_DELETED_CLIENT_ID], rec->s [QMS_DELETED_MSG_ID],
                      rec->s [QMS_DELETED_GROUP], qms_str (m->user));
}

/* ------------------------------------------------------------------------
    Store answers and timeouts */

/*  A store answer about messages; false if req is not one of ours. */
bool
router_sf_msgreq_reply (router_t *self, const qms_rec_t *rec)
{
    uint64_t h = qms_map_hash_u64 (self->seed, rec->req);
    msgreq_t *m = (msgreq_t *) qms_map_find (&self->msgreq_by_req, h, &rec->req);
    if (!m)
        return false;
    if (m->kind == MSGREQ_STORE && rec->type == QMS_ST_RESULT)
        on_stored (self, m, rec);
    else
    if (m->kind == MSGREQ_FETCH && (rec->type == QMS_ST_MSG || rec->type == QMS_ST_GROUP_MSG)) {
        on_stored_message (self, m, rec);
        return true;            /* more of the same page follows */
    }
    else
    if (m->kind == MSGREQ_FETCH && rec->type == QMS_ST_MSG_END)
        on_fetch_end (self, m, rec);
    else
    if (m->kind == MSGREQ_DEL && rec->type == QMS_ST_MSG_DELETED)
        on_deleted (self, m, rec);
    else
    if (m->kind == MSGREQ_LOOKUP && rec->type == QMS_ST_USER)
        on_lookup_reply (self, m, rec);
    else
        qms_warn (LOG, "event=unexpected_reply type=%s", qms_type_name (rec->type));
    router_sf_msgreq_destroy (self, m);
    return true;
}

/*  The store did not answer in time. */
void
router_sf_expire_msgreqs (router_t *self, uint64_t mono)
{
    while (!list_empty (&self->msgreqs)) {
        msgreq_t *m = CONTAINER (self->msgreqs.next, msgreq_t, link);
        if (m->created + self->store_timeout_ms > mono)
            break;
        if (m->kind == MSGREQ_LOOKUP) {
            qms_rec_t none = { .type = QMS_GW_LOOKUP, .conn = m->conn };
            none.s [QMS_FOUND_ASKED] = qms_str (m->user);
            gw_emit (self, m->gw, &none);
        }
        else
        if (m->kind == MSGREQ_STORE) {
            if (m->gsend)
                router_group_stored (self, m, QMS_ST_ERROR);
            else
                send_rejected (self, m->gw, m->conn, qms_str (m->client_id), k_unavailable);
            /*  The sender is told the message was not kept, so the store
                must not keep it when the request reaches it after all (a
                cut link delivers what it held once it heals): a delete
                follows it on the same link, unanswered (req 0).  A message
                that came back undelivered had been acknowledged already:
                that one is not taken back. */
            if (m->gw != UINT32_MAX) {
                qms_rec_t cancel = { .type = QMS_ST_MSG_DEL };
                cancel.s [QMS_DEL_RECIPIENT] = qms_str (m->recipient);
                cancel.s [QMS_DEL_MSG_ID] = qms_str (m->msg_id);
                store_emit (self, &cancel);
                self->m.store_cancelled++;
            }
        }
        else
        if (m->kind == MSGREQ_FETCH) {
            session_t *s = drain_session (self, m);
            if (s) {
                s->draining = false;    /* the rest waits for the next login */
                router_sf_held_release (self, s);
            }
        }
        qms_warn (LOG, "event=store_timeout kind=%d", (int) m->kind);
        router_sf_msgreq_destroy (self, m);
    }
}


/* ------------------------------------------------------------------------
    Selftest: the parts above on a router_t with no sockets; what a batch
    leaves in a gateway's or the store's buffer is read back and checked.
    router_test () drives the whole actor.  The helpers (router_t_*) serve
    router_group.c's selftest too. */

router_t *
router_t_router_new (void)
{
    router_t *self = (router_t *) calloc (1, sizeof *self);
    assert (self);
    self->seed = 0x5eed;
    self->id_state = 7;
    self->next_req = 1;
    self->store_timeout_ms = 5000;
    list_init (&self->lru);
    list_init (&self->online);
    list_init (&self->dirty);
    list_init (&self->pending);
    list_init (&self->msgreqs);
    list_init (&self->live_receipts);
    qms_buf_init (&self->backend_out);
    qms_buf_init (&self->users);
    assert (qms_map_init (&self->by_hash, match_hash) == 0);
    assert (qms_map_init (&self->by_id, match_id) == 0);
    assert (qms_map_init (&self->by_conn, match_conn) == 0);
    assert (qms_map_init (&self->msgreq_by_req, match_msgreq) == 0);
    assert (qms_map_init (&self->receipt_by_id, match_receipt) == 0);
    for (int i = 0; i < 2; i++) {
        gateway_t *g = (gateway_t *) calloc (1, sizeof *g);
        assert (g);
        g->live = true;
        qms_buf_init (&g->out);
        self->gateways [self->gateway_count++] = g;
    }
    return self;
}

/*  A session with only what store-and-forward reads; bound to (gw, conn)
    unless conn is 0. */
session_t *
router_t_session (router_t *self, const char *id, uint32_t gw, uint64_t conn)
{
    size_t len = strlen (id);
    session_t *s = (session_t *) calloc (1, sizeof *s + len + 1);
    assert (s);
    memcpy (s->data, id, len + 1);
    s->id = qms_strn (s->data, len);
    s->name = s->id;
    s->pubkey = qms_str ("key");
    s->id_h = qms_map_hash_bytes (self->seed, id, len);
    assert (qms_map_insert (&self->by_id, s->id_h, s) == 0);
    if (conn) {
        s->gw = gw;
        s->conn = conn;
        s->conn_key = conn_key (gw, conn);
        s->conn_h = qms_map_hash_u64 (self->seed, s->conn_key);
        assert (qms_map_insert (&self->by_conn, s->conn_h, s) == 0);
        s->bound = true;
    }
    return s;
}

void
router_t_unbind (router_t *self, session_t *s)
{
    if (s->bound)
        qms_map_remove (&self->by_conn, s->conn_h, s);
    s->bound = false;
}

void
router_t_router_destroy (router_t *self, session_t **sessions, int count)
{
    for (int i = 0; i < count; i++) {
        session_t *s = sessions [i];
        assert (s->held == NULL);
        router_t_unbind (self, s);
        qms_map_remove (&self->by_id, s->id_h, s);
        router_group_session_end (self, s);
        free (s->recent);
        free (s);
    }
    while (!list_empty (&self->msgreqs))
        router_sf_msgreq_destroy (self, CONTAINER (self->msgreqs.next, msgreq_t, link));
    while (!list_empty (&self->live_receipts))
        live_receipt_destroy (self, CONTAINER (self->live_receipts.next, live_receipt_t, link));
    router_group_free (self);
    assert (self->store_inflight == 0);
    for (uint32_t i = 0; i < self->gateway_count; i++) {
        qms_buf_free (&self->gateways [i]->out);
        free (self->gateways [i]);
    }
    qms_map_free (&self->by_hash);
    qms_map_free (&self->by_id);
    qms_map_free (&self->by_conn);
    qms_map_free (&self->msgreq_by_req);
    qms_map_free (&self->receipt_by_id);
    qms_buf_free (&self->backend_out);
    qms_buf_free (&self->users);
    free (self);
}

/*  The records in buf (views into it, valid until it is reset). */
size_t
router_t_records (const qms_buf_t *buf, qms_rec_t *recs, size_t max)
{
    size_t offset = 0, count = 0;
    qms_rec_t rec;
    while (qms_rec_next (buf->data, buf->len, &offset, &rec) == 1) {
        assert (count < max);
        recs [count++] = rec;
    }
    return count;
}

void
router_t_reset (router_t *self)
{
    for (uint32_t i = 0; i < self->gateway_count; i++)
        qms_buf_reset (&self->gateways [i]->out);
    qms_buf_reset (&self->backend_out);
}

bool
router_t_str_is (qms_str_t str, const char *text)
{
    return str.len == strlen (text) && qms_str_eq (str, text);
}

static void
t_msg_ids (router_t *self)
{
    static const char alphabet [] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char a [MSG_ID_CHARS + 1], b [MSG_ID_CHARS + 1], c [MSG_ID_CHARS + 1];
    uint64_t state = self->id_state;
    new_msg_id (self, a);
    new_msg_id (self, b);
    assert (strlen (a) == MSG_ID_CHARS && strlen (b) == MSG_ID_CHARS);
    assert (strspn (a, alphabet) == MSG_ID_CHARS && strspn (b, alphabet) == MSG_ID_CHARS);
    assert (strcmp (a, b) != 0);
    self->id_state = state;     /* the same state gives the same id */
    new_msg_id (self, c);
    assert (strcmp (a, c) == 0);
    router_t_router_destroy (self, NULL, 0);
}

static void
t_recent (router_t *self)
{
    session_t *s = router_t_session (self, "id-recent", 0, 0);
    assert (recent_find (s, qms_str ("c1")) == NULL);
    recent_remember (s, qms_str (NULL), "m0", QMS_ACK_DELIVERED, 1);
    assert (s->recent == NULL);                 /* no client id, nothing kept */
    char long_id [MAX_CLIENT_ID + 2];
    memset (long_id, 'x', sizeof long_id - 1);
    long_id [sizeof long_id - 1] = 0;
    recent_remember (s, qms_str (long_id), "m0", QMS_ACK_DELIVERED, 1);
    assert (s->recent == NULL);                 /* too long for the table */

    recent_remember (s, qms_str ("c1"), "msg-one", QMS_ACK_DELIVERED, 100);
    recent_entry_t *e = recent_find (s, qms_str ("c1"));
    assert (e && streq (e->msg_id, "msg-one") && e->status == QMS_ACK_DELIVERED && e->time == 100);
    assert (recent_find (s, qms_str ("c")) == NULL);    /* a prefix is another id */
    assert (recent_find (s, qms_str ("c10")) == NULL);
    assert (recent_find (s, qms_str (NULL)) == NULL);
    /*  A later answer for the same id updates its entry in place. */
    recent_remember (s, qms_str ("c1"), "msg-two", QMS_ACK_STORED, 200);
    assert (recent_find (s, qms_str ("c1")) == e);
    assert (streq (e->msg_id, "msg-two") && e->status == QMS_ACK_STORED && e->time == 200);
    assert (s->recent->next == 1);

    /*  The table keeps the last RECENT_IDS ids: the oldest goes first. */
    for (int i = 0; i < RECENT_IDS; i++) {
        char cid [16];
        snprintf (cid, sizeof cid, "id-%d", i);
        recent_remember (s, qms_str (cid), cid, QMS_ACK_DELIVERED, (uint64_t) i);
    }
    assert (recent_find (s, qms_str ("c1")) == NULL);
    for (int i = 0; i < RECENT_IDS; i++) {
        char cid [16];
        snprintf (cid, sizeof cid, "id-%d", i);
        e = recent_find (s, qms_str (cid));
        assert (e && streq (e->msg_id, cid) && e->time == (uint64_t) i);
    }
    recent_remember (s, qms_str ("id-new"), "m", QMS_ACK_DELIVERED, 0);
    assert (recent_find (s, qms_str ("id-0")) == NULL);
    assert (recent_find (s, qms_str ("id-1")) && recent_find (s, qms_str ("id-new")));
    router_t_router_destroy (self, &s, 1);
}

/*  Receipts: for a live message, the sender hears "received" from memory;
    for any other, the store deletes its copy and says whose it was. */
static void
t_receipts (router_t *self)
{
    session_t *alice = router_t_session (self, "id-alice", 0, 11);
    session_t *bob = router_t_session (self, "id-bob", 1, 22);
    qms_rec_t out [8];
    live_receipt_add (self, alice, bob, qms_str ("c1"), "AAAAAAAAAAAAAAAA");
    live_receipt_add (self, alice, bob, qms_str ("c2"), "BBBBBBBBBBBBBBBB");
    assert (self->live_receipt_count == 2);

    /*  Bob confirms the first, on his connection (no token). */
    qms_rec_t receipt = { .type = QMS_RT_RECEIPT, .conn = 22 };
    receipt.s [QMS_RECEIPT_MSG_ID] = qms_str ("AAAAAAAAAAAAAAAA");
    router_sf_on_receipt (self, 1, &receipt);
    assert (router_t_records (&self->gateways [0]->out, out, 8) == 1);
    assert (out [0].type == QMS_GW_ACK && out [0].conn == 11 && out [0].num == QMS_ACK_RECEIVED);
    assert (router_t_str_is (out [0].s [QMS_ACK_CLIENT_ID], "c1") && router_t_str_is (out [0].s [QMS_ACK_MSG_ID], "AAAAAAAAAAAAAAAA"));
    assert (self->live_receipt_count == 1 && self->m.received == 1);
    assert (self->backend_out.len == 0 && list_empty (&self->msgreqs));
    router_t_reset (self);

    /*  Again: no longer in memory, so it was a stored message. */
    router_sf_on_receipt (self, 1, &receipt);
    assert (self->gateways [0]->out.len == 0);
    assert (router_t_records (&self->backend_out, out, 8) == 1);
    assert (out [0].type == QMS_ST_MSG_DEL && out [0].req != 0);
    assert (router_t_str_is (out [0].s [QMS_DEL_RECIPIENT], "id-bob") && router_t_str_is (out [0].s [QMS_DEL_MSG_ID], "AAAAAAAAAAAAAAAA"));
    uint64_t req = out [0].req;
    router_t_reset (self);
    /*  The store deleted it: the sender it names hears "received". */
    qms_rec_t deleted = { .type = QMS_ST_MSG_DELETED, .req = req, .num = 1 };
    deleted.s [QMS_DELETED_MSG_ID] = qms_str ("AAAAAAAAAAAAAAAA");
    deleted.s [QMS_DELETED_SENDER] = qms_str ("id-alice");
    deleted.s [QMS_DELETED_CLIENT_ID] = qms_str ("c1");
    assert (router_sf_msgreq_reply (self, &deleted));
    assert (router_t_records (&self->gateways [0]->out, out, 8) == 1);
    assert (out [0].type == QMS_GW_ACK && out [0].conn == 11 && out [0].num == QMS_ACK_RECEIVED);
    assert (self->m.received == 2 && list_empty (&self->msgreqs));
    assert (!router_sf_msgreq_reply (self, &deleted));      /* answered once */
    router_t_reset (self);

    /*  A receipt from someone who is not the recipient does not count. */
    receipt.conn = 11;
    receipt.s [QMS_RECEIPT_MSG_ID] = qms_str ("BBBBBBBBBBBBBBBB");
    router_sf_on_receipt (self, 0, &receipt);
    assert (self->live_receipt_count == 1 && self->m.received == 2);
    assert (router_t_records (&self->backend_out, out, 8) == 1 && out [0].type == QMS_ST_MSG_DEL);
    assert (router_t_str_is (out [0].s [QMS_DEL_RECIPIENT], "id-alice"));
    router_t_reset (self);

    /*  An unknown connection is told it has no session; a bad id is ignored. */
    receipt.conn = 99;
    router_sf_on_receipt (self, 1, &receipt);
    assert (router_t_records (&self->gateways [1]->out, out, 8) == 1);
    assert (out [0].type == QMS_GW_INVALID && out [0].conn == 99 && out [0].num == 1);
    router_t_reset (self);
    receipt.conn = 22;
    receipt.s [QMS_RECEIPT_MSG_ID] = qms_str ("far-too-long-for-a-message-id");
    router_sf_on_receipt (self, 1, &receipt);
    assert (self->backend_out.len == 0 && self->gateways [0]->out.len == 0);

    session_t *sessions [] = { alice, bob };
    router_t_router_destroy (self, sessions, 2);
}

/*  The held queue: messages for a recipient whose drain runs wait in
    order, then go to it, or to the store if it went offline. */
static void
t_held (router_t *self)
{
    session_t *alice = router_t_session (self, "id-alice", 0, 11);
    session_t *bob = router_t_session (self, "id-bob", 1, 22);
    bob->draining = true;
    bob->receipts = true;
    qms_rec_t out [8];
    const char *texts [3] = { "one", "two", "three" };
    const char *cids [3] = { "h1", "h2", "" };
    const char *ids [3] = { "1111111111111111", "2222222222222222", "3333333333333333" };
    for (int i = 0; i < 3; i++)
        assert (router_sf_held_add (bob, alice, 0, 11, qms_str (texts [i]), qms_str (cids [i]), ids [i], qms_str (NULL),
                                    1000 + (uint64_t) i));
    assert (bob->held_count == 3);
    assert (self->gateways [1]->out.len == 0 && self->backend_out.len == 0);

    /*  The drain ended: all three, in order; acks for those with ids. */
    bob->draining = false;
    router_sf_held_release (self, bob);
    assert (bob->held == NULL && bob->held_count == 0 && bob->held_tail == &bob->held);
    assert (router_t_records (&self->gateways [1]->out, out, 8) == 3);
    for (int i = 0; i < 3; i++) {
        assert (out [i].type == QMS_GW_DELIVER && out [i].conn == 22 && out [i].time == 1000 + (uint64_t) i);
        assert (router_t_str_is (out [i].s [QMS_DELIVER_SENDER], "id-alice") && router_t_str_is (out [i].s [QMS_DELIVER_TEXT], texts [i]));
        assert (router_t_str_is (out [i].s [QMS_DELIVER_MSG_ID], ids [i]));
    }
    assert (router_t_records (&self->gateways [0]->out, out, 8) == 2);
    for (int i = 0; i < 2; i++) {
        assert (out [i].type == QMS_GW_ACK && out [i].conn == 11 && out [i].num == QMS_ACK_DELIVERED);
        assert (router_t_str_is (out [i].s [QMS_ACK_CLIENT_ID], cids [i]) && router_t_str_is (out [i].s [QMS_ACK_MSG_ID], ids [i]));
    }
    recent_entry_t *e = recent_find (alice, qms_str ("h2"));
    assert (e && e->status == QMS_ACK_DELIVERED && streq (e->msg_id, ids [1]));
    assert (self->live_receipt_count == 2 && self->m.delivered == 3);
    router_t_reset (self);

    /*  Bob went offline instead: held messages are stored. */
    bob->draining = true;
    for (int i = 0; i < 2; i++)
        assert (router_sf_held_add (bob, alice, 0, 11, qms_str (texts [i]), qms_str (cids [i]), ids [i], qms_str (NULL),
                                    2000 + (uint64_t) i));
    router_t_unbind (self, bob);
    router_sf_held_release (self, bob);
    assert (bob->held == NULL && bob->held_count == 0);
    assert (self->gateways [1]->out.len == 0 && self->gateways [0]->out.len == 0);
    assert (router_t_records (&self->backend_out, out, 8) == 2);
    size_t bytes = 0;
    for (int i = 0; i < 2; i++) {
        assert (out [i].type == QMS_ST_MSG_STORE && out [i].req && out [i].time == 2000 + (uint64_t) i);
        assert (router_t_str_is (out [i].s [QMS_STORE_MSG_ID], ids [i]) && router_t_str_is (out [i].s [QMS_STORE_RECIPIENT], "id-bob"));
        assert (router_t_str_is (out [i].s [QMS_STORE_SENDER], "id-alice") && router_t_str_is (out [i].s [QMS_STORE_TEXT], texts [i]));
        assert (router_t_str_is (out [i].s [QMS_STORE_CLIENT_ID], cids [i]));
        bytes += strlen (texts [i]) + strlen ("id-bob") + strlen (cids [i]);
    }
    assert (self->store_inflight == bytes);
    qms_rec_t stored = { .type = QMS_ST_RESULT, .req = out [0].req, .num = QMS_ST_OK };
    qms_rec_t quota = { .type = QMS_ST_RESULT, .req = out [1].req, .num = QMS_ST_QUOTA };
    router_t_reset (self);
    assert (router_sf_msgreq_reply (self, &stored));
    assert (router_sf_msgreq_reply (self, &quota));
    assert (self->store_inflight == 0 && list_empty (&self->msgreqs));
    assert (router_t_records (&self->gateways [0]->out, out, 8) == 2);
    assert (out [0].type == QMS_GW_ACK && out [0].num == QMS_ACK_STORED && router_t_str_is (out [0].s [QMS_ACK_MSG_ID], ids [0]));
    assert (out [1].type == QMS_GW_ACK && out [1].num == QMS_ACK_REJECTED && router_t_str_is (out [1].s [QMS_ACK_REASON], k_quota_full));
    e = recent_find (alice, qms_str ("h1"));
    assert (e && e->status == QMS_ACK_STORED);
    assert (self->m.stored == 1 && self->m.rejected == 1);
    router_t_reset (self);

    /*  The store's backlog is full: refused at once, nothing queued. */
    assert (router_sf_held_add (bob, alice, 0, 11, qms_str ("full"), qms_str ("h9"), ids [2], qms_str (NULL), 3000));
    self->store_inflight = STORE_INFLIGHT_MAX;
    router_sf_held_release (self, bob);
    self->store_inflight = 0;
    assert (self->backend_out.len == 0 && list_empty (&self->msgreqs) && self->m.store_busy == 1);
    assert (router_t_records (&self->gateways [0]->out, out, 8) == 1);
    assert (out [0].num == QMS_ACK_REJECTED && router_t_str_is (out [0].s [QMS_ACK_REASON], k_unavailable));

    session_t *sessions [] = { alice, bob };
    router_t_router_destroy (self, sessions, 2);
}

/*  A drain: a page of stored messages, the gateway's RT_SYNCED, the page
    deleted (no receipts), then what was held meanwhile. */
static void
t_drain (router_t *self)
{
    session_t *alice = router_t_session (self, "id-alice", 0, 11);
    session_t *bob = router_t_session (self, "id-bob", 1, 22);
    qms_rec_t out [8];
    router_sf_drain_start (self, bob);
    assert (bob->draining && bob->fetch_req);
    assert (router_t_records (&self->backend_out, out, 8) == 1);
    assert (out [0].type == QMS_ST_MSG_FETCH && out [0].req == bob->fetch_req);
    assert (out [0].num == FETCH_PAGE && out [0].seq == 0 && router_t_str_is (out [0].s [QMS_FETCH_RECIPIENT], "id-bob"));
    uint64_t fetch = bob->fetch_req;
    router_t_reset (self);
    assert (router_sf_held_add (bob, alice, 0, 11, qms_str ("live"), qms_str ("c1"), "LLLLLLLLLLLLLLLL", qms_str (NULL), 5));

    qms_rec_t msg = { .type = QMS_ST_MSG, .req = fetch, .seq = 7, .time = 3 };
    msg.s [QMS_MSG_ID] = qms_str ("SSSSSSSSSSSSSSSS");
    msg.s [QMS_MSG_SENDER] = qms_str ("id-alice");
    msg.s [QMS_MSG_TEXT] = qms_str ("stored");
    assert (router_sf_msgreq_reply (self, &msg));
    qms_rec_t end = { .type = QMS_ST_MSG_END, .req = fetch, .num = 1 };
    assert (router_sf_msgreq_reply (self, &end));
    assert (list_empty (&self->msgreqs) && bob->fetch_req == 0 && !bob->page_full);
    assert (router_t_records (&self->gateways [1]->out, out, 8) == 2);
    assert (out [0].type == QMS_GW_DELIVER_STORED && out [0].conn == 22 && out [0].time == 3);
    assert (router_t_str_is (out [0].s [QMS_STORED_SENDER], "id-alice") && router_t_str_is (out [0].s [QMS_STORED_TEXT], "stored"));
    assert (router_t_str_is (out [0].s [QMS_STORED_MSG_ID], "SSSSSSSSSSSSSSSS"));
    assert (out [1].type == QMS_GW_SYNC && out [1].conn == 22 && out [1].req == bob->sync_req);
    qms_rec_t synced = { .type = QMS_RT_SYNCED, .conn = 22, .req = bob->sync_req + 1 };
    router_t_reset (self);

    router_sf_on_synced (self, 1, &synced);     /* not the one asked for */
    assert (bob->draining && self->backend_out.len == 0 && self->gateways [1]->out.len == 0);
    synced.req--;
    router_sf_on_synced (self, 1, &synced);
    assert (!bob->draining && bob->sync_req == 0 && bob->held == NULL);
    assert (router_t_records (&self->backend_out, out, 8) == 1);
    assert (out [0].type == QMS_ST_MSG_DEL_UPTO && out [0].seq == 7 && router_t_str_is (out [0].s [QMS_UPTO_RECIPIENT], "id-bob"));
    assert (router_t_records (&self->gateways [1]->out, out, 8) == 1);
    assert (out [0].type == QMS_GW_DELIVER && router_t_str_is (out [0].s [QMS_DELIVER_TEXT], "live"));
    router_t_reset (self);

    /*  The store does not answer: the drain stops, the rest waits for the
        next login. */
    router_sf_drain_start (self, bob);
    assert (bob->draining && !list_empty (&self->msgreqs));
    router_sf_expire_msgreqs (self, qms_mono_ms () + self->store_timeout_ms);
    assert (!bob->draining && list_empty (&self->msgreqs));

    session_t *sessions [] = { alice, bob };
    router_t_router_destroy (self, sessions, 2);
}

/*  A delivery that found its connection closed comes back: to the
    recipient's connection if it has one now, else to the store, with no
    ack for anyone. */
static void
t_undelivered (router_t *self)
{
    session_t *alice = router_t_session (self, "id-alice", 0, 11);
    session_t *bob = router_t_session (self, "id-bob", 1, 22);
    qms_rec_t back = { .type = QMS_RT_UNDELIVERED, .time = 9 };
    back.s [QMS_UNDELIVERED_RECIPIENT] = qms_str ("id-bob");
    back.s [QMS_UNDELIVERED_SENDER] = qms_str ("id-alice");
    back.s [QMS_UNDELIVERED_TEXT] = qms_str ("late");
    back.s [QMS_UNDELIVERED_MSG_ID] = qms_str ("MMMMMMMMMMMMMMMM");
    qms_rec_t out [4];
    router_sf_on_undelivered (self, &back);     /* bob is online (again) */
    assert (router_t_records (&self->gateways [1]->out, out, 4) == 1);
    assert (out [0].type == QMS_GW_DELIVER && out [0].conn == 22 && out [0].time == 9);
    assert (router_t_str_is (out [0].s [QMS_DELIVER_SENDER], "id-alice") && router_t_str_is (out [0].s [QMS_DELIVER_TEXT], "late"));
    assert (router_t_str_is (out [0].s [QMS_DELIVER_MSG_ID], "MMMMMMMMMMMMMMMM")
            && router_t_str_is (out [0].s [QMS_DELIVER_RECIPIENT], "id-bob"));
    assert (self->gateways [0]->out.len == 0 && self->backend_out.len == 0);
    router_t_reset (self);

    router_t_unbind (self, bob);                       /* offline: stored */
    router_sf_on_undelivered (self, &back);
    assert (self->gateways [0]->out.len == 0 && self->gateways [1]->out.len == 0);
    assert (router_t_records (&self->backend_out, out, 4) == 1);
    assert (out [0].type == QMS_ST_MSG_STORE && out [0].time == 9);
    assert (router_t_str_is (out [0].s [QMS_STORE_MSG_ID], "MMMMMMMMMMMMMMMM") && router_t_str_is (out [0].s [QMS_STORE_RECIPIENT], "id-bob"));
    assert (router_t_str_is (out [0].s [QMS_STORE_SENDER], "id-alice") && router_t_str_is (out [0].s [QMS_STORE_SENDER_NAME], "id-alice"));
    assert (router_t_str_is (out [0].s [QMS_STORE_TEXT], "late") && out [0].s [QMS_STORE_CLIENT_ID].len == 0);
    qms_rec_t ok = { .type = QMS_ST_RESULT, .req = out [0].req, .num = QMS_ST_OK };
    router_t_reset (self);
    assert (router_sf_msgreq_reply (self, &ok));
    assert (self->gateways [0]->out.len == 0 && self->gateways [1]->out.len == 0);

    /*  One that the store does not answer in time is not taken back: its
        sender had "delivered". */
    router_sf_on_undelivered (self, &back);
    assert (router_t_records (&self->backend_out, out, 4) == 1 && out [0].type == QMS_ST_MSG_STORE);
    router_t_reset (self);
    router_sf_expire_msgreqs (self, qms_mono_ms () + self->store_timeout_ms);
    assert (list_empty (&self->msgreqs) && self->backend_out.len == 0 && self->m.store_cancelled == 0);

    back.s [QMS_UNDELIVERED_SENDER] = qms_str ("id-nobody");         /* the sender's session is gone */
    router_sf_on_undelivered (self, &back);
    back.s [QMS_UNDELIVERED_SENDER] = qms_str ("id-alice");
    back.s [QMS_UNDELIVERED_MSG_ID] = qms_str ("short");             /* not a message id */
    router_sf_on_undelivered (self, &back);
    assert (self->backend_out.len == 0 && list_empty (&self->msgreqs));

    session_t *sessions [] = { alice, bob };
    router_t_router_destroy (self, sessions, 2);
}

/*  A message for someone offline that the store does not take in time:
    the sender hears "unavailable", and a delete follows the store request
    on the same link, so a store that gets both (a cut that heals) keeps
    nothing the sender was told it did not. */
static void
t_store_timeout (router_t *self)
{
    session_t *alice = router_t_session (self, "id-alice", 0, 11);
    session_t *bob = router_t_session (self, "id-bob", 1, 22);
    router_t_unbind (self, bob);
    router_sf_store_message (self, alice, 0, 11, qms_str ("id-bob"), qms_str ("to keep"), qms_str ("c9"),
                             "SSSSSSSSSSSSSSSS", 77);
    qms_rec_t out [4];
    assert (router_t_records (&self->backend_out, out, 4) == 1 && out [0].type == QMS_ST_MSG_STORE);
    router_t_reset (self);
    router_sf_expire_msgreqs (self, qms_mono_ms () + self->store_timeout_ms);
    assert (list_empty (&self->msgreqs) && self->store_inflight == 0);
    assert (router_t_records (&self->gateways [0]->out, out, 4) == 1);
    assert (out [0].type == QMS_GW_ACK && out [0].conn == 11 && out [0].num == QMS_ACK_REJECTED);
    assert (router_t_str_is (out [0].s [QMS_ACK_CLIENT_ID], "c9") && router_t_str_is (out [0].s [QMS_ACK_REASON], k_unavailable));
    assert (router_t_records (&self->backend_out, out, 4) == 1);
    assert (out [0].type == QMS_ST_MSG_DEL && out [0].req == 0);
    assert (router_t_str_is (out [0].s [QMS_DEL_RECIPIENT], "id-bob") && router_t_str_is (out [0].s [QMS_DEL_MSG_ID], "SSSSSSSSSSSSSSSS"));
    assert (self->m.store_cancelled == 1);
    session_t *sessions [] = { alice, bob };
    router_t_router_destroy (self, sessions, 2);
}

void
router_sf_test (bool verbose)
{
    printf (" * router_sf: ");
    t_msg_ids (router_t_router_new ());
    t_recent (router_t_router_new ());
    t_receipts (router_t_router_new ());
    t_held (router_t_router_new ());
    t_drain (router_t_router_new ());
    t_undelivered (router_t_router_new ());
    t_store_timeout (router_t_router_new ());
    printf ("OK\n");
}
