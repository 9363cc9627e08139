/*  router_internal.h - what router.c and router_sf.c share: the router's
    state (router_t, session_t and the store-and-forward records), its
    constants, the small helpers both call, and the functions router_sf.c
    offers router.c.  Private to router/; router.h is the actor's face.

    The helpers are static inline so that the message hot path (router.c's
    message_from () delivering to a recipient online) makes no call across
    the file boundary: each file gets its own copy, as when both were
    static functions in one file.
*/
#ifndef ROUTER_INTERNAL_H_INCLUDED
#define ROUTER_INTERNAL_H_INCLUDED

#include "router.h"
#include "qms_log.h"
#include "qms_map.h"
#include "qms_msg.h"
#include "qms_util.h"

#include <assert.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define LOG                 "router"
#define MAX_GATEWAYS        4096        /* fits the 16 bits of a conn key */
#define CONN_BITS           48
#define CONN_MASK           ((UINT64_C (1) << CONN_BITS) - 1)
#define MAX_ID_BYTES        255         /* user ids are 36-char UUIDs */
#define MAX_GATEWAY_NAME    127

/*  Why a request failed: keys, the gateway says it in the client's words. */
static const char *const k_unavailable = QMS_REASON_UNAVAILABLE;
static const char *const k_unknown_recipient = QMS_REASON_UNKNOWN_RECIPIENT;
static const char *const k_quota_full = QMS_REASON_MAILBOX_FULL;

/*  Store-and-forward (docs/ARCHITECTURE.md, "Messages to offline users"). */
#define RECENT_IDS          64          /* client ids a sender's retries are matched against */
#define MAX_LIVE_RECEIPTS   100000      /* delivered messages awaiting a receipt */
#define MAX_CLIENT_ID       64
#define MSG_ID_CHARS        16

/* ------------------------------------------------------------------------
    Intrusive circular lists with a sentinel head */

typedef struct link_s {
    struct link_s *prev, *next;     /* both NULL when not on a list */
} link_t;

#define CONTAINER(ptr, type, member) \
    ((type *) (void *) ((char *) (ptr) - offsetof (type, member)))

static inline void
list_init (link_t *head)
{
    head->prev = head->next = head;
}

static inline bool
list_empty (const link_t *head)
{
    return head->next == head;
}

static inline bool
list_linked (const link_t *node)
{
    return node->next != NULL;
}

static inline void
list_append (link_t *head, link_t *node)
{
    node->prev = head->prev;
    node->next = head;
    head->prev->next = node;
    head->prev = node;
}

static inline void
list_remove (link_t *node)
{
    if (!node->next)
        return;
    node->prev->next = node->next;
    node->next->prev = node->prev;
    node->prev = node->next = NULL;
}

/* ------------------------------------------------------------------------
    State */

typedef struct {
    link_t lru;                 /* by last activity, oldest first */
    link_t online;              /* bound sessions, in the order they bound */
    link_t dirty;               /* activity not yet written to the store */
    uint64_t id_h, hash_h, conn_h;
    uint64_t conn_key;          /* valid while bound */
    uint64_t conn;              /* the gateway's handle, as it sent it */
    uint32_t gw;
    bool bound;
    uint64_t last_active;       /* ms since the epoch */
    bool receipts;              /* the client confirms what it receives */
    bool draining;              /* stored messages are on their way to it */
    bool page_full;             /* the last page of the drain was full */
    size_t page_text;           /* message bytes of the page coming in */
    uint64_t fetch_req;         /* the drain's store request in flight, or 0 */
    uint64_t sync_req;          /* the drain's GW_SYNC in flight, or 0 */
    uint64_t drain_seq;         /* the last stored message sent */
    uint32_t stored_gen;        /* messages stored for it while draining */
    uint32_t fetch_gen;         /* stored_gen when the last page was asked for */
    struct recent_s *recent;    /* its last client ids, for idempotent retries */
    struct held_s *held;        /* live messages waiting for the drain to end */
    struct held_s **held_tail;
    size_t held_count;
    struct glisting_s *listing; /* router_group.c: a group list going out in parts */
    char hash [QMS_HASH_HEX + 1];
    qms_str_t id, name, pubkey; /* views into data [] */
    char data [];
} session_t;

/*  A sender's recent client ids and what became of each: a retry after a
    reconnect is answered again, not delivered twice. */
typedef struct {
    char client_id [MAX_CLIENT_ID + 1];
    char msg_id [MSG_ID_CHARS + 1];
    char group [MSG_ID_CHARS + 1];  /* a group message: its group, else "" */
    uint8_t status;
    uint32_t members, unreached;    /* a group message: what its ack said */
    uint64_t time;
} recent_entry_t;

typedef struct recent_s {
    recent_entry_t entries [RECENT_IDS];
    unsigned next;
} recent_t;

/*  A live message that arrived while its recipient was still receiving
    what was stored for it: it waits in memory (a drain takes milliseconds)
    so that it arrives after the stored ones, not before. */
typedef struct held_s {
    struct held_s *next;
    uint32_t sender_gw;
    uint64_t sender_conn;
    uint64_t time;
    char msg_id [MSG_ID_CHARS + 1];
    qms_str_t sender, sender_name, sender_key, message, client_id;  /* views into data [] */
    qms_str_t group;            /* a group message: its group id, else empty */
    char data [];
} held_t;

#define MAX_HELD            1024        /* beyond this, held messages go to the store */

typedef enum { MSGREQ_STORE, MSGREQ_FETCH, MSGREQ_DEL, MSGREQ_LOOKUP } msgreq_kind_t;

/*  A group message whose copies for offline members are being stored: the
    sender's one ack waits for every answer (router_group.c). */
typedef struct gsend_s {
    uint32_t waiting;           /* store answers still to come (+1 while sending) */
    uint32_t gw;                /* the sender's connection */
    uint64_t conn;
    uint64_t time;
    uint32_t members, stored, unreached;
    char client_id [MAX_CLIENT_ID + 1];
    char msg_id [MSG_ID_CHARS + 1];
    char group [MSG_ID_CHARS + 1];
    char sender [MAX_ID_BYTES + 1];
} gsend_t;

typedef struct rgroups_s rgroups_t;

/*  A store request about messages, waiting for its answer. */
typedef struct {
    link_t link;                /* oldest first, for the timeout */
    uint64_t req, req_h;
    uint64_t created;           /* monotonic ms */
    msgreq_kind_t kind;
    uint32_t gw;                /* STORE: the sender's connection */
    uint64_t conn;
    uint64_t time;              /* STORE: when it was sent */
    char user [MAX_ID_BYTES + 1];   /* STORE: sender; FETCH, DEL: recipient;
                                       LOOKUP: the name asked for */
    char recipient [MAX_ID_BYTES + 1];  /* STORE: to whom */
    char client_id [MAX_CLIENT_ID + 1];
    char msg_id [MSG_ID_CHARS + 1];
    size_t bytes;               /* STORE: counted in store_inflight */
    gsend_t *gsend;             /* STORE: a group message's copy: its ack */
} msgreq_t;

/*  A message delivered live to a client that sends receipts: who to tell
    when the receipt comes. */
typedef struct {
    link_t link;                /* oldest first: the table is bounded */
    uint64_t id_h;
    char msg_id [MSG_ID_CHARS + 1];
    char recipient [MAX_ID_BYTES + 1];
    char sender [MAX_ID_BYTES + 1];
    char client_id [MAX_CLIENT_ID + 1];
    char group [MSG_ID_CHARS + 1];  /* a group message: its group, else "" */
} live_receipt_t;

/*  The key of the receipts awaited: a group message awaits one per member,
    so a receipt is found by message id and recipient together. */
typedef struct {
    qms_str_t msg_id, recipient;
} receipt_key_t;

typedef struct {
    uint8_t identity [255];
    size_t identity_len;
    bool live;
    bool hello;                 /* name and nonce are known */
    uint64_t last_seen;         /* monotonic ms of its last batch */
    bool welcomed;              /* told it is new to us before its hello */
    uint64_t fresh_until;       /* monotonic ms: it may still be announcing its
                                   connections (we told it we hold none) */
    uint64_t nonce;
    char name [MAX_GATEWAY_NAME + 1];
    qms_buf_t out;              /* this pass's records for the gateway */
} gateway_t;

typedef struct {
    zsock_t *pipe, *frontend, *backend;
    void *frontend_raw, *backend_raw;
    uint64_t timeout_ms, store_timeout_ms, touch_period_ms, tick_ms;
    uint64_t seed;
    qms_map_t by_hash, by_id, by_conn, pending_by_req, msgreq_by_req, receipt_by_id;
    link_t lru, online, dirty, pending, msgreqs, live_receipts;
    size_t live_receipt_count;
    uint64_t id_state;          /* for message ids (splitmix64) */
    uint64_t nonce;             /* this instance, told to gateways */
    struct {                    /* figures for /metrics */
        uint64_t delivered, held, store_requests, stored, rejected, received, kicks, expired;
        uint64_t store_busy;
        uint64_t store_cancelled;   /* timed-out store requests taken back */
    } m;
    size_t online_count, session_count, pending_count;
    size_t store_inflight;      /* bytes of MSGREQ_STORE not answered yet */
    gateway_t *gateways [MAX_GATEWAYS];
    uint32_t gateway_count;     /* slots in use, live or dead */
    uint32_t last_gw;           /* most batches come from the same gateway */
    qms_buf_t backend_out, users;
    uint64_t next_req;
    uint64_t next_tick, next_touch;     /* monotonic ms */
    char admin_path [128];      /* the admin socket's file, when bound */
    rgroups_t *groups;          /* router_group.c */
} router_t;

/* ------------------------------------------------------------------------
    Map keys */

static inline bool
match_hash (const void *item, const void *key)
{
    const qms_str_t *k = (const qms_str_t *) key;
    return k->len == QMS_HASH_HEX
        && memcmp (((const session_t *) item)->hash, k->ptr, QMS_HASH_HEX) == 0;
}

static inline bool
match_id (const void *item, const void *key)
{
    const qms_str_t *k = (const qms_str_t *) key;
    const session_t *s = (const session_t *) item;
    return s->id.len == k->len && memcmp (s->id.ptr, k->ptr, k->len) == 0;
}

static inline bool
match_conn (const void *item, const void *key)
{
    return ((const session_t *) item)->conn_key == *(const uint64_t *) key;
}

static inline bool
match_msgreq (const void *item, const void *key)
{
    return ((const msgreq_t *) item)->req == *(const uint64_t *) key;
}

static inline bool
match_receipt (const void *item, const void *key)
{
    const receipt_key_t *k = (const receipt_key_t *) key;
    const live_receipt_t *r = (const live_receipt_t *) item;
    return strlen (r->msg_id) == k->msg_id.len && memcmp (r->msg_id, k->msg_id.ptr, k->msg_id.len) == 0
        && strlen (r->recipient) == k->recipient.len
        && memcmp (r->recipient, k->recipient.ptr, k->recipient.len) == 0;
}

static inline uint64_t
receipt_hash (uint64_t seed, qms_str_t msg_id, qms_str_t recipient)
{
    return qms_map_hash_bytes (seed, msg_id.ptr, msg_id.len)
         ^ qms_map_hash_bytes (seed ^ UINT64_C (0x9e3779b97f4a7c15), recipient.ptr, recipient.len);
}

static inline uint64_t
conn_key (uint32_t gw, uint64_t conn)
{
    return (uint64_t) gw << CONN_BITS | (conn & CONN_MASK);
}

static inline session_t *
find_by_hash (router_t *self, qms_str_t hash)
{
    if (hash.len != QMS_HASH_HEX)
        return NULL;
    uint64_t h = qms_map_hash_bytes (self->seed, hash.ptr, hash.len);
    return (session_t *) qms_map_find (&self->by_hash, h, &hash);
}

static inline session_t *
find_by_id (router_t *self, qms_str_t id)
{
    uint64_t h = qms_map_hash_bytes (self->seed, id.ptr, id.len);
    return (session_t *) qms_map_find (&self->by_id, h, &id);
}

static inline session_t *
find_by_conn (router_t *self, uint64_t key)
{
    uint64_t h = qms_map_hash_u64 (self->seed, key);
    return (session_t *) qms_map_find (&self->by_conn, h, &key);
}

/* ------------------------------------------------------------------------
    Output: appended during a pass, sent by flush_output () (router.c) */

static inline gateway_t *
gateway_live (router_t *self, uint32_t gw)
{
    if (gw >= self->gateway_count || !self->gateways [gw] || !self->gateways [gw]->live)
        return NULL;
    return self->gateways [gw];
}

static inline void
gw_emit (router_t *self, uint32_t gw, const qms_rec_t *rec)
{
    gateway_t *g = gateway_live (self, gw);
    if (g && qms_rec_encode (&g->out, rec))
        qms_warn (LOG, "event=encode_failed type=%s gateway=%u", qms_type_name (rec->type), gw);
}

static inline void
store_emit (router_t *self, const qms_rec_t *rec)
{
    if (qms_rec_encode (&self->backend_out, rec))
        qms_warn (LOG, "event=encode_failed type=%s", qms_type_name (rec->type));
}

static inline void
send_invalid (router_t *self, uint32_t gw, uint64_t conn, uint64_t unbind)
{
    qms_rec_t rec = { .type = QMS_GW_INVALID, .conn = conn, .num = unbind };
    gw_emit (self, gw, &rec);
}

/*  Ask conn's gateway to say when what was queued for conn so far has
    been written (GW_SYNC); returns the request number it will answer. */
static inline uint64_t
send_sync (router_t *self, uint32_t gw, uint64_t conn)
{
    qms_rec_t rec = { .type = QMS_GW_SYNC, .conn = conn, .req = self->next_req++ };
    gw_emit (self, gw, &rec);
    return rec.req;
}

static inline void
send_error (router_t *self, uint32_t gw, uint64_t conn, int request, const char *reason)
{
    qms_rec_t rec = { .type = QMS_GW_ERROR, .conn = conn, .num = (uint64_t) request };
    rec.s [QMS_ERROR_REASON] = qms_str (reason);
    gw_emit (self, gw, &rec);
}

/* ------------------------------------------------------------------------
    Messages: the helpers of the hot path (message ids, acks, the recent
    client ids of a sender, the receipts awaited for live messages) */

/*  A message id: 16 base64url characters (96 bits) from a generator seeded
    from the kernel; unique enough that the store's UNIQUE index never
    trips in practice, and it does not need OpenSSL on this thread. */
static inline void
new_msg_id (router_t *self, char *id)
{
    static const char alphabet [] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    uint64_t bits [2];
    for (int i = 0; i < 2; i++) {
        uint64_t z = (self->id_state += UINT64_C (0x9e3779b97f4a7c15));
        z = (z ^ (z >> 30)) * UINT64_C (0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)) * UINT64_C (0x94d049bb133111eb);
        bits [i] = z ^ (z >> 31);
    }
    for (int i = 0; i < MSG_ID_CHARS; i++)
        id [i] = alphabet [(bits [i / 8] >> (6 * (i % 8))) & 63];
    id [MSG_ID_CHARS] = 0;
}

static inline void
send_ack (router_t *self, uint32_t gw, uint64_t conn, uint64_t status, qms_str_t client_id,
          qms_str_t msg_id, uint64_t time, const char *reason)
{
    if (client_id.len == 0)
        return;                 /* no id, no ack: the original behaviour */
    qms_rec_t rec = { .type = QMS_GW_ACK, .conn = conn, .num = status, .time = time };
    rec.s [QMS_ACK_CLIENT_ID] = client_id;
    rec.s [QMS_ACK_MSG_ID] = msg_id;
    rec.s [QMS_ACK_REASON] = qms_str (reason);
    gw_emit (self, gw, &rec);
}

/*  Refuse a message: an ack when the client gave an id, else the error
    clients without ids have always seen. */
static inline void
send_rejected (router_t *self, uint32_t gw, uint64_t conn, qms_str_t client_id, const char *reason)
{
    if (client_id.len)
        send_ack (self, gw, conn, QMS_ACK_REJECTED, client_id, qms_str (NULL), qms_now_ms (), reason);
    else
        send_error (self, gw, conn, QMS_RT_MESSAGE, reason);
}

static inline recent_entry_t *
recent_find (session_t *s, qms_str_t client_id)
{
    if (!s->recent || client_id.len == 0)
        return NULL;
    for (int i = 0; i < RECENT_IDS; i++) {
        recent_entry_t *e = &s->recent->entries [i];
        if (strlen (e->client_id) == client_id.len && memcmp (e->client_id, client_id.ptr, client_id.len) == 0)
            return e;
    }
    return NULL;
}

static inline void
recent_remember (session_t *s, qms_str_t client_id, const char *msg_id, uint8_t status, uint64_t time)
{
    if (client_id.len == 0 || client_id.len > MAX_CLIENT_ID)
        return;
    recent_entry_t *e = recent_find (s, client_id);
    if (!e) {
        if (!s->recent && !(s->recent = (recent_t *) calloc (1, sizeof *s->recent)))
            return;
        e = &s->recent->entries [s->recent->next];
        s->recent->next = (s->recent->next + 1) % RECENT_IDS;
        qms_str_copy (client_id, e->client_id, sizeof e->client_id);
    }
    snprintf (e->msg_id, sizeof e->msg_id, "%s", msg_id);
    e->group [0] = 0;
    e->members = e->unreached = 0;
    e->status = status;
    e->time = time;
}

static inline void
live_receipt_destroy (router_t *self, live_receipt_t *r)
{
    qms_map_remove (&self->receipt_by_id, r->id_h, r);
    list_remove (&r->link);
    self->live_receipt_count--;
    free (r);
}

/*  Remember who to tell when the receipt for a live message comes (group:
    the group id of a group message, or NULL). */
static inline void
live_receipt_add_group (router_t *self, const session_t *sender, const session_t *target,
                        qms_str_t client_id, const char *msg_id, const char *group)
{
    if (self->live_receipt_count >= MAX_LIVE_RECEIPTS)
        live_receipt_destroy (self, CONTAINER (self->live_receipts.next, live_receipt_t, link));
    live_receipt_t *r = (live_receipt_t *) calloc (1, sizeof *r);
    if (!r)
        return;
    snprintf (r->msg_id, sizeof r->msg_id, "%s", msg_id);
    qms_str_copy (target->id, r->recipient, sizeof r->recipient);
    qms_str_copy (sender->id, r->sender, sizeof r->sender);
    qms_str_copy (client_id, r->client_id, sizeof r->client_id);
    if (group)
        snprintf (r->group, sizeof r->group, "%s", group);
    r->id_h = receipt_hash (self->seed, qms_strn (msg_id, MSG_ID_CHARS), target->id);
    if (qms_map_insert (&self->receipt_by_id, r->id_h, r)) {
        free (r);
        return;
    }
    list_append (&self->live_receipts, &r->link);
    self->live_receipt_count++;
}

static inline void
live_receipt_add (router_t *self, const session_t *sender, const session_t *target,
                  qms_str_t client_id, const char *msg_id)
{
    live_receipt_add_group (self, sender, target, client_id, msg_id, NULL);
}

/*  A group message's answer, kept for a retry of its client id. */
static inline void
recent_remember_group (session_t *s, qms_str_t client_id, const char *msg_id, uint8_t status, uint64_t time,
                       uint32_t members, uint32_t unreached, const char *group)
{
    recent_remember (s, client_id, msg_id, status, time);
    recent_entry_t *e = recent_find (s, client_id);
    if (e) {
        snprintf (e->group, sizeof e->group, "%s", group);
        e->members = members;
        e->unreached = unreached;
    }
}


/* ------------------------------------------------------------------------
    router_sf.c: store-and-forward, for router.c */

/*  A message router.c could not deliver at once goes to the store
    (recipient offline) or waits in memory (recipient draining); held_add
    is false when it could not be held. */
void router_sf_store_message (router_t *self, session_t *s, uint32_t gw, uint64_t conn,
                              qms_str_t target, qms_str_t message, qms_str_t client_id,
                              const char *msg_id, uint64_t now);
bool router_sf_held_add (session_t *t, const session_t *s, uint32_t gw, uint64_t conn,
                         qms_str_t message, qms_str_t client_id, const char *msg_id, qms_str_t group,
                         uint64_t now);
/*  A store request for a message of this many bytes, if the store's
    backlog has room for it (NULL: it has not). */
msgreq_t *router_sf_msgreq_store (router_t *self, qms_str_t sender, qms_str_t recipient, size_t bytes);
/*  The drain ended or the recipient went offline: its held messages go. */
void router_sf_held_release (router_t *self, session_t *t);
/*  A session just bound: its stored messages start coming. */
void router_sf_drain_start (router_t *self, session_t *s);
/*  Gateway records: RT_SYNCED, RT_RECEIPT, RT_LOOKUP. */
void router_sf_on_synced (router_t *self, uint32_t gw, const qms_rec_t *rec);
void router_sf_on_receipt (router_t *self, uint32_t gw, const qms_rec_t *rec);
void router_sf_on_lookup (router_t *self, uint32_t gw, const qms_rec_t *rec);
void router_sf_on_undelivered (router_t *self, const qms_rec_t *rec);
/*  A store answer about messages; false if req is not one of ours. */
bool router_sf_msgreq_reply (router_t *self, const qms_rec_t *rec);
/*  The store did not answer in time (mono: monotonic ms now). */
void router_sf_expire_msgreqs (router_t *self, uint64_t mono);
void router_sf_msgreq_destroy (router_t *self, msgreq_t *m);

/* ------------------------------------------------------------------------
    router_group.c: groups, for router.c and router_sf.c */

int  router_group_init (router_t *self, int max_members, int max_per_user);
void router_group_start (router_t *self);
void router_group_free (router_t *self);
/*  RT_GROUP and RT_GROUP_MESSAGE from a session router.c found and touched. */
void router_group_on_request (router_t *self, session_t *s, uint32_t gw, const qms_rec_t *rec);
void router_group_on_message (router_t *self, session_t *s, uint32_t gw, const qms_rec_t *rec, uint64_t now);
void router_group_on_undelivered (router_t *self, const qms_rec_t *rec);
/*  The session's group list, going out in parts: RT_SYNCED for its part
    (true: it was), and the session's end. */
bool router_group_on_synced (router_t *self, session_t *s, uint64_t req);
void router_group_session_end (router_t *self, session_t *s);
/*  An administrator deleted the user (or reset its password, or logged it
    out: the router cannot tell which), and the store changed its groups
    in the same transaction: if it is in any, they are loaded anew. */
void router_group_user_changed (router_t *self, qms_str_t id);
/*  A user logged in with this name and key. */
void router_group_user_seen (router_t *self, qms_str_t id, qms_str_t name, qms_str_t pubkey);
/*  A store answer about groups; false if it is not one. */
bool router_group_store_reply (router_t *self, const qms_rec_t *rec);
/*  The store's answer (a QMS_ST_* status) for one copy of a group message. */
void router_group_stored (router_t *self, msgreq_t *m, uint64_t status);
/*  Store a group message for one member, nobody to answer. */
bool router_group_store_copy (router_t *self, qms_str_t group, qms_str_t recipient, qms_str_t sender,
                              qms_str_t sender_name, qms_str_t sender_key, qms_str_t message,
                              qms_str_t client_id, qms_str_t msg_id, uint64_t time);
void router_group_tick (router_t *self, uint64_t mono);
void router_group_stats (router_t *self, qms_buf_t *out);

/*  Selftest helpers (router_sf.c): a router_t with two live gateways and no
    sockets; a session bound to (gw, conn) unless conn is 0; the records a
    buffer holds; empty every output buffer. */
router_t *router_t_router_new (void);
session_t *router_t_session (router_t *self, const char *id, uint32_t gw, uint64_t conn);
void router_t_unbind (router_t *self, session_t *s);
void router_t_router_destroy (router_t *self, session_t **sessions, int count);
size_t router_t_records (const qms_buf_t *buf, qms_rec_t *recs, size_t max);
void router_t_reset (router_t *self);
bool router_t_str_is (qms_str_t str, const char *text);

#endif
