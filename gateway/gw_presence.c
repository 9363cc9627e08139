/*  gw_presence.c - who is online, as the gateway tells its clients.

    The router sends each change once (GW_USERS, GW_JOIN, GW_LEAVE); we
    keep the list in the order users came online, encode it once per change
    into a frame every reader shares, answer a login with that frame
    patched (newcomers added, the users gone since cut out) instead of a
    list encoded per login, and push to connections at most once per
    presence interval.
*/
#define _GNU_SOURCE
#include "gw_internal.h"

#include <assert.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/*  Presence.  The router sends each change once; we keep the list, encode it
    once per change when someone needs it, and push to connections at most
    once per presence interval: "full" connections get the whole list (the
    original behaviour, coalesced), "delta" connections the changes, "none"
    connections nothing. */

bool
gw_match_user (const void *item, const void *key)
{
    const user_t *u = (const user_t *) item;
    const qms_str_t *k = (const qms_str_t *) key;
    return u->id_len == k->len && memcmp (u->data, k->ptr, k->len) == 0;
}

user_t *
gw_user_find (gateway_t *self, qms_str_t id)
{
    return (user_t *) qms_map_find (&self->users_by_id,
                                    qms_map_hash_bytes (self->users_seed, id.ptr, id.len), &id);
}

void
gw_user_remove (gateway_t *self, user_t *u)
{
    if (u->frame_id && u->frame_id == self->list_frame_id) {
        uint32_t gone [2] = { u->frame_off, u->frame_len };
        qms_buf_append (&self->list_gone, gone, sizeof gone);
    }
    qms_map_remove (&self->users_by_id, qms_map_hash_bytes (self->users_seed, u->data, u->id_len), u);
    if (u->prev) u->prev->next = u->next; else self->users_head = u->next;
    if (u->next) u->next->prev = u->prev; else self->users_tail = u->prev;
    self->user_count--;
    free (u);
}

void
gw_user_add (gateway_t *self, qms_str_t id, qms_str_t name, qms_str_t pubkey)
{
    if (id.len > UINT16_MAX || name.len > UINT16_MAX || pubkey.len > UINT16_MAX) {
        /*  Not from our router, whose limits are far below. */
        qms_warn (ACTOR, "event=user_skipped reason=too_long id_bytes=%zu", (size_t) id.len);
        return;
    }
    user_t *old = gw_user_find (self, id);
    if (old)
        gw_user_remove (self, old);
    user_t *u = calloc (1, sizeof *u + id.len + name.len + pubkey.len + 3);
    if (!u)
        return;
    char *p = u->data;
    qms_str_t parts [3] = { id, name, pubkey };
    uint16_t *lens [3] = { &u->id_len, &u->name_len, &u->pubkey_len };
    for (int i = 0; i < 3; i++) {
        memcpy (p, parts [i].ptr, parts [i].len);
        *lens [i] = (uint16_t) parts [i].len;
        p += parts [i].len + 1;
    }
    u->epoch = ++self->user_epoch;
    if (qms_map_insert (&self->users_by_id, qms_map_hash_bytes (self->users_seed, id.ptr, id.len), u)) {
        free (u);
        return;
    }
    u->prev = self->users_tail;
    if (self->users_tail) self->users_tail->next = u; else self->users_head = u;
    self->users_tail = u;
    self->user_count++;
}

void
gw_users_clear (gateway_t *self)
{
    while (self->users_head)
        gw_user_remove (self, self->users_head);
}

/*  The user list event, framed, encoded once per change into a buffer that
    every connection getting it shares; login answers share the users array
    inside it.  NULL when out of memory. */
static outq_shared_t *
list_frame (gateway_t *self)
{
    if (self->list_frame && self->list_frame_gen == self->users_gen)
        return self->list_frame;
    qms_buf_t event;
    qms_buf_init (&event);
    proto_userlist_head (&event);
    size_t array_off = event.len;
    proto_users_begin (&event);
    uint64_t id = self->list_frame_id + 1;
    for (user_t *u = self->users_head; u; u = u->next) {
        size_t at = event.len + (u == self->users_head ? 0 : 1);     /* past the comma */
        proto_users_add (&event, gw_user_id (u), gw_user_name (u), gw_user_pubkey (u));
        u->frame_id = id;
        u->frame_off = (uint32_t) at;       /* made absolute below */
        u->frame_len = (uint32_t) (event.len - at);
    }
    proto_users_end (&event);
    size_t array_len = event.len - array_off;
    int rc = proto_event_tail (&event);
    uint8_t head [10];
    size_t head_len = outq_ws_header (head, event.len);
    outq_shared_t *frame = rc ? NULL : outq_shared_new (head_len + event.len, &self->out_acct);
    if (!frame)
        for (user_t *u = self->users_head; u; u = u->next)
            u->frame_id = 0;
    if (frame) {
        for (user_t *u = self->users_head; u; u = u->next)
            u->frame_off += (uint32_t) head_len;
        self->list_frame_id = id;
        qms_buf_reset (&self->list_gone);
        memcpy (outq_shared_data (frame), head, head_len);
        memcpy (outq_shared_data (frame) + head_len, event.data, event.len);
        outq_shared_unref (&self->list_frame);     /* readers keep their own references */
        self->list_frame = frame;
        self->list_frame_gen = self->users_gen;
        self->list_frame_epoch = self->user_epoch;
        self->list_array_off = head_len + array_off;
        self->list_array_len = array_len;
    }
    qms_buf_free (&event);
    return frame;
}

/*  A "full" connection's list, by reference.  At most one list waits per
    connection: a newer one replaces it while none of it has left, and once
    one is on its way the next waits for it (gw_conn_writeable), so the pushes
    go at the pace the client reads.  New lists are encoded only by the
    coalesced push (build): memory is one list per push still referenced by
    some connection, however many connections there are and however fast
    they come online. */
static void
conn_push_list (gateway_t *self, conn_t *conn, bool build)
{
    conn->list_stale = false;
    if (conn->close_code)
        return;
    outq_shared_t *frame = build ? list_frame (self) : self->list_frame;
    if (!frame || (!build && self->list_frame_gen == conn->list_gen))
        return;                         /* nothing newer yet: the next push brings it */
    size_t len = outq_shared_len (frame);
    if (outq_has_list (&conn->out)) {
        if (outq_list_replace (&conn->out, frame, 0, len)) {
            conn->list_gen = self->list_frame_gen;
            self->m.lists [1]++;
        }
        else {
            conn->list_stale = true;    /* one is on its way: the newest follows it */
            self->m.lists [2]++;
        }
        return;
    }
    bool was_empty = outq_empty (&conn->out);
    if (outq_share (&conn->out, frame, 0, len, OUTQ_LIST)) {
        gw_slow_consumer (self, conn, SLOW_QUEUE);
        return;
    }
    conn->list_gen = self->list_frame_gen;
    self->m.lists [0]++;
    gw_conn_queued (self, conn, was_empty);
}

static int
cmp_gone (const void *a, const void *b)
{
    uint32_t x = ((const uint32_t *) a) [0], y = ((const uint32_t *) b) [0];
    return x < y ? -1 : x > y;
}

/*  An event that lists everyone online now (a LoginEvent when username
    is given, else a UserlistChangeEvent), mostly by reference to the last
    encoded list: our head and "[", the stretches of that list's users who
    are still online (commas between them ours), the users who came online
    since, appended, then "]" and our tail.  A login storm thus encodes no
    whole list per login. */
void
gw_conn_queue_list_now (gateway_t *self, conn_t *conn, const qms_str_t *username)
{
    /*  Too much has changed since the last list (more than LIST_PATCH_MAX
        bytes of newcomers, or many gone): encode the list now instead. */
    size_t newer_bytes = 0;
    for (user_t *u = self->users_tail; u && u->epoch > self->list_frame_epoch; u = u->prev)
        newer_bytes += (size_t) u->id_len + u->name_len + u->pubkey_len + 40;
    if (!self->list_frame || newer_bytes > LIST_PATCH_MAX
    ||  self->list_gone.len > LIST_GONE_MAX * 2 * sizeof (uint32_t))
        list_frame (self);
    outq_shared_t *frame = self->list_frame;
    qms_buf_t head, newer, tail;
    qms_buf_init (&head);
    qms_buf_init (&newer);
    qms_buf_init (&tail);
    int rc = !frame
          || (username ? proto_login_ok_head (&head, qms_strn (conn->token, conn->token_len), *username)
                       : proto_userlist_head (&head))
          || proto_users_begin (&head) || proto_users_end (&tail) || proto_event_tail (&tail);
    /*  Who came online since the list was encoded: the tail of the users
        list (it is in the order they came). */
    user_t *first_new = self->users_tail;
    while (first_new && first_new->prev && first_new->prev->epoch > self->list_frame_epoch)
        first_new = first_new->prev;
    if (first_new && first_new->epoch <= self->list_frame_epoch)
        first_new = NULL;
    if (!rc && first_new) {
        rc = proto_users_begin (&newer);
        for (user_t *u = first_new; u && !rc; u = u->next)
            rc = proto_users_add (&newer, gw_user_id (u), gw_user_name (u), gw_user_pubkey (u));
    }
    /*  The still-online stretches of the list: between the users gone. */
    size_t gone_count = self->list_gone.len / (2 * sizeof (uint32_t));
    uint32_t *gone = (uint32_t *) self->list_gone.data;
    if (gone_count > 1)
        qsort (gone, gone_count, 2 * sizeof (uint32_t), cmp_gone);
    size_t items_start = self->list_array_off + 1;
    size_t items_end = self->list_array_off + self->list_array_len - 1;
    size_t payload = head.len + (newer.len ? newer.len - 1 : 0) + tail.len;
    size_t stretches = 0, from = items_start;
    for (size_t i = 0; i <= gone_count; i++) {
        size_t to = i < gone_count ? gone [2 * i] : items_end;
        if (to > from && i < gone_count)
            to--;                                       /* the comma before a gone user */
        if (to > from) {
            payload += (stretches ? 1 : 0) + (to - from);
            stretches++;
        }
        if (i < gone_count)
            from = gone [2 * i] + gone [2 * i + 1] + 1; /* past it and its comma */
        if (from > items_end)
            from = items_end;
    }
    if (newer.len > 1 && stretches)
        payload++;                                      /* the comma before the newcomers */
    bool was_empty = outq_empty (&conn->out);
    if (!rc && !conn->close_code)
        rc = outq_frame_header (&conn->out, payload) || outq_append (&conn->out, head.data, head.len);
    stretches = 0, from = items_start;
    for (size_t i = 0; i <= gone_count && !rc && !conn->close_code; i++) {
        size_t to = i < gone_count ? gone [2 * i] : items_end;
        if (to > from && i < gone_count)
            to--;
        if (to > from) {
            rc = (stretches && outq_append (&conn->out, ",", 1))
              || outq_share (&conn->out, frame, from, to - from, OUTQ_PLAIN);
            stretches++;
        }
        if (i < gone_count)
            from = gone [2 * i] + gone [2 * i + 1] + 1;
        if (from > items_end)
            from = items_end;
    }
    if (!rc && !conn->close_code && newer.len > 1)
        rc = (stretches && outq_append (&conn->out, ",", 1))
          || outq_append (&conn->out, newer.data + 1, newer.len - 1);
    if (!rc && !conn->close_code)
        rc = outq_append (&conn->out, tail.data, tail.len);
    if (rc) {
        /*  Out of memory (part way through a frame: the stream is broken). */
        qms_error (ACTOR, "event=out_of_memory handle=%llu what=login_answer", (unsigned long long) conn->handle);
        lws_set_timeout (conn->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
    }
    qms_buf_free (&head);
    qms_buf_free (&newer);
    qms_buf_free (&tail);
    if (!rc && !conn->close_code)
        gw_conn_queued (self, conn, was_empty);
}

static void
presence_push (gateway_t *self)
{
    self->presence_scheduled = false;
    self->presence_last = qms_mono_ms ();
    uint64_t lists_before = self->m.lists [0] + self->m.lists [1];
    outq_shared_t *changes = NULL;      /* the changes event, framed once */
    for (size_t slot = 0; slot < self->max_slots; slot++) {
        conn_t *conn = self->slots [slot];
        if (!conn || !conn->bound)
            continue;
        if (conn->presence == PROTO_PRESENCE_FULL && conn->list_gen != self->users_gen)
            conn_push_list (self, conn, true);
        else
        if (conn->presence == PROTO_PRESENCE_DELTA && self->changes.len) {
            if (!changes) {
                qms_buf_reset (&self->scratch);
                proto_changes_event (&self->scratch, (const char *) self->changes.data, self->changes.len);
                changes = gw_shared_frame (self, self->scratch.data, self->scratch.len);
                qms_buf_reset (&self->scratch);
            }
            gw_conn_share (self, conn, changes);
        }
    }
    outq_shared_unref (&changes);
    qms_buf_reset (&self->changes);
    uint64_t lists = self->m.lists [0] + self->m.lists [1] - lists_before;
    self->presence_round = self->list_frame ? lists * outq_shared_len (self->list_frame) : 0;
}

static void
sul_presence_cb (lws_sorted_usec_list_t *sul)
{
    gateway_t *self = lws_container_of (sul, gateway_t, sul_presence);
    PASS_BEGIN (self);
    presence_push (self);
}

/*  A push at the next allowed time (at most one scheduled). */
void
gw_presence_schedule (gateway_t *self)
{
    if (self->presence_scheduled)
        return;
    self->presence_scheduled = true;
    uint64_t gap = (uint64_t) self->cfg->presence_interval_ms;
    uint64_t paced = self->presence_round * 1000 / PRESENCE_BYTES_PER_S;
    if (paced > gap)
        gap = paced < PRESENCE_GAP_MAX_MS ? paced : PRESENCE_GAP_MAX_MS;
    uint64_t now = qms_mono_ms (), due = self->presence_last + gap;
    lws_usec_t delay = due > now ? (lws_usec_t) (due - now) * LWS_US_PER_MS : 1;
    lws_sul_schedule (self->ctx, 0, &self->sul_presence, sul_presence_cb, delay);
}

void
gw_users_changed (gateway_t *self)
{
    self->users_gen++;
    gw_presence_schedule (self);
}

/* ------------------------------------------------------------------------ */

/*  The test's connections need a wsi that lws can be asked to write: a raw
    descriptor in a context of its own. */
static int
t_callback (struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    return 0;
}

/*  The one frame in q: its payload in out (the header checked). */
static void
t_frame_payload (outq_t *q, qms_buf_t *out)
{
    int pipefd [2];
    assert (socketpair (AF_UNIX, SOCK_STREAM, 0, pipefd) == 0);   /* outq writes with sendmsg */
    int flags;
    ssize_t n = 0;
    while (!outq_empty (q)) {
        ssize_t part = outq_write (q, pipefd [1], NULL, 1 << 20, &flags);
        assert (part > 0);
        n += part;
    }
    uint8_t frame [65536];
    assert (n < (ssize_t) sizeof frame && read (pipefd [0], frame, sizeof frame) == n);
    close (pipefd [0]);
    close (pipefd [1]);
    assert (frame [0] == 0x81);                     /* FIN, text */
    size_t len = frame [1], head = 2;
    if (len == 126) {
        len = (size_t) frame [2] << 8 | frame [3];
        head = 4;
    }
    assert (head + len == (size_t) n);
    qms_buf_reset (out);
    qms_buf_append (out, frame + head, len);
}

/*  The event as encoded from scratch for the users online now. */
static void
t_expected (gateway_t *self, const qms_str_t *username, const char *token, qms_buf_t *out)
{
    qms_buf_reset (out);
    if (username)
        proto_login_ok_head (out, qms_str (token), *username);
    else
        proto_userlist_head (out);
    proto_users_begin (out);
    for (user_t *u = self->users_head; u; u = u->next)
        proto_users_add (out, gw_user_id (u), gw_user_name (u), gw_user_pubkey (u));
    proto_users_end (out);
    proto_event_tail (out);
}

void
gw_presence_test (bool verbose)
{
    if (verbose)
        printf (" * gw_presence: ");
    lws_set_log_level (LLL_ERR, NULL);
    static const struct lws_protocols protocols [] = {
        { "t", t_callback, 0, 0, 0, NULL, 0 }, { NULL, NULL, 0, 0, 0, NULL, 0 }
    };
    struct lws_context_creation_info info;
    memset (&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = protocols;
    info.gid = -1;
    info.uid = -1;
    struct lws_context *ctx = lws_create_context (&info);
    assert (ctx);
    int sv [2];
    assert (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    lws_sock_file_fd_type desc;
    desc.filefd = sv [0];
    struct lws *wsi = lws_adopt_descriptor_vhost (lws_get_vhost_by_name (ctx, "default"),
                                                  LWS_ADOPT_RAW_FILE_DESC, desc, "t", NULL);
    assert (wsi);

    qms_config_t cfg;
    qms_config_defaults (&cfg);
    const char *token = "tok";
    qms_str_t me = qms_str ("me");
    /*  Each round: five users online, the list encoded, then some gone
        (bit i of gone: user i) and some come; the list sent "now" (patched
        from the encoded one) must equal the list encoded afresh. */
    static const struct { unsigned gone; int newcomers; } rounds [] = {
        { 0, 0 }, { 1, 0 }, { 16, 0 }, { 2 | 4, 0 }, { 1 | 4 | 16, 1 }, { 31, 0 }, { 31, 2 },
        { 0, 3 }, { 8, 1 }, { 1 | 2, 2 },
    };
    qms_buf_t got, want;
    qms_buf_init (&got);
    qms_buf_init (&want);
    for (size_t r = 0; r < sizeof rounds / sizeof rounds [0]; r++)
    for (int login = 0; login < 2; login++) {
        gateway_t self;
        memset (&self, 0, sizeof self);
        self.cfg = &cfg;
        assert (qms_map_init (&self.users_by_id, gw_match_user) == 0);
        char id [16], name [16];
        for (int i = 0; i < 5; i++) {
            snprintf (id, sizeof id, "id%d", i);
            snprintf (name, sizeof name, "name \"%d\"", i);     /* escaped in the JSON */
            gw_user_add (&self, qms_str (id), qms_str (name), qms_str ("key"));
        }
        assert (self.user_count == 5);
        outq_shared_t *frame = list_frame (&self);
        assert (frame && frame == self.list_frame && list_frame (&self) == frame);
        /*  Each user's "{...}" is where the frame says. */
        const uint8_t *data = outq_shared_data (frame);
        assert (data [self.list_array_off] == '[');
        assert (data [self.list_array_off + self.list_array_len - 1] == ']');
        for (user_t *u = self.users_head; u; u = u->next) {
            assert (u->frame_id == self.list_frame_id);
            assert (data [u->frame_off] == '{' && data [u->frame_off + u->frame_len - 1] == '}');
            assert (memmem (data + u->frame_off, u->frame_len, u->data, u->id_len));
        }
        for (int i = 0; i < 5; i++)
            if (rounds [r].gone & (1u << i)) {
                snprintf (id, sizeof id, "id%d", i);
                user_t *u = gw_user_find (&self, qms_str (id));
                assert (u);
                gw_user_remove (&self, u);
                assert (!gw_user_find (&self, qms_str (id)));
            }
        assert (self.list_gone.len == 2 * sizeof (uint32_t) * (size_t) __builtin_popcount (rounds [r].gone));
        for (int i = 0; i < rounds [r].newcomers; i++) {
            snprintf (id, sizeof id, "new%d", i);
            gw_user_add (&self, qms_str (id), qms_str (id), qms_str (""));
        }
        self.users_gen++;
        conn_t conn;
        memset (&conn, 0, sizeof conn);
        conn.wsi = wsi;
        memcpy (conn.token, token, 3);
        conn.token_len = 3;
        outq_init (&conn.out, &self.out_acct);
        gw_conn_queue_list_now (&self, &conn, login ? &me : NULL);
        assert (self.list_frame == frame);          /* patched, not encoded again */
        t_frame_payload (&conn.out, &got);
        t_expected (&self, login ? &me : NULL, token, &want);
        assert (got.len == want.len && memcmp (got.data, want.data, got.len) == 0);

        /*  A user who comes back replaces the old entry. */
        gw_user_add (&self, qms_str ("new0"), qms_str ("again"), qms_str (""));
        user_t *again = gw_user_find (&self, qms_str ("new0"));
        assert (again && again == self.users_tail && qms_str_eq (gw_user_name (again), "again"));
        /*  An entry is 48 bytes and its strings (lengths up to 65,535):
            longer is refused whole, and the list stays as it was. */
        assert (sizeof (user_t) == 48);
        size_t before = self.user_count;
        static char huge [UINT16_MAX + 2];
        memset (huge, 'k', sizeof huge);
        gw_user_add (&self, qms_str ("big"), qms_str ("big"), qms_strn (huge, UINT16_MAX + 1));
        assert (self.user_count == before && !gw_user_find (&self, qms_str ("big")));
        gw_user_add (&self, qms_str ("big"), qms_str ("big"), qms_strn (huge, UINT16_MAX));
        user_t *big = gw_user_find (&self, qms_str ("big"));
        assert (big && gw_user_pubkey (big).len == UINT16_MAX && gw_user_pubkey (big).ptr [0] == 'k');
        assert (qms_str_eq (gw_user_id (big), "big") && qms_str_eq (gw_user_name (big), "big"));
        outq_clear (&conn.out);
        gw_users_clear (&self);
        assert (self.user_count == 0 && !self.users_head && !self.users_tail);
        outq_shared_unref (&self.list_frame);
        assert (self.out_acct.shared == 0 && self.out_acct.owned == 0);
        qms_buf_free (&self.list_gone);
        qms_buf_free (&self.to_write);
        qms_map_free (&self.users_by_id);
    }
    qms_buf_free (&got);
    qms_buf_free (&want);
    lws_context_destroy (ctx);
    close (sv [1]);
    if (verbose)
        printf ("OK\n");
}
