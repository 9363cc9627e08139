/*  gw_internal.h - what the gateway's files share (private to gateway/).

    The gateway is one actor spread over a few files, one concern each:
      gateway.c      the actor: context, loop, start and stop, the lws
                     protocol callbacks
      gw_listen.c    listeners, vhosts, TLS checks and reload (SIGHUP)
      gw_conn.c      connection slots and handles, output queues, writes,
                     input shaping, slow consumers, idle pings
      gw_dispatch.c  client requests to records, records from the actors
                     to client events, request deadlines, actor liveness
      gw_presence.c  who is online, user list frames, coalesced pushes
      gw_ops.c       /healthz, /readyz, /metrics
      gw_http.c      HTTP requests and responses, WebSocket handshake checks
    They share the gateway_t and conn_t below, the constants, and the
    functions declared here; everything else in them is static.  What every
    relayed message goes through (the slot lookup, queueing a frame) is
    static inline here, so it costs no call between files.
*/
#ifndef GW_INTERNAL_H_INCLUDED
#define GW_INTERNAL_H_INCLUDED

#include "gateway.h"
#include "http.h"
#include "outq.h"
#include "proto.h"
#include "qms_actor.h"
#include "qms_log.h"
#include "qms_map.h"
#include "qms_metrics.h"
#include "qms_msg.h"
#include "enums.h"
#include "qms_util.h"
#include "qms_watchdog.h"

#include <czmq.h>
#include <libwebsockets.h>
#include <uv.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define ACTOR "gateway"

/*  A WebSocket message larger than this closes the connection with 1009. */
#define MAX_WS_MESSAGE      (1024u * 1024u)
/*  Close code when an older session is replaced, and on shutdown. */
#define CLOSE_GOING_AWAY    1001
/*  Handle layout: slot in the low 24 bits, generation in the next 24. */
#define SLOT_BITS           24
#define SLOT_MASK           ((1u << SLOT_BITS) - 1)
/*  At most this much leaves for one connection per writeable callback, so
    that one busy reader cannot hold up everyone else's writes. */
#define WRITE_MAX           (64u * 1024)
/*  What libwebsockets reads for a connection at once (--rx-buffer, 4,096
    by default), allocated for every connection (messages longer than this
    arrive in pieces that handle_receive joins).  It is half of an idle
    connection's memory (7.1 KiB at 4,096, 4.1 KiB at 1,024), but
    libwebsockets 4.1 reads at most this much per connection per loop pass,
    so a smaller one costs passes: at 1,000 clients with 16 messages in
    flight each, 1,024 carried 230-250k msg/s against 490-530k at 4,096, on
    epoll as on poll() (docs/BENCHMARKS.md, "Memory per connection"). */
#define RX_BUFFER_BYTES     4096
/*  A buffer for a message in pieces that grew past this is given back once
    the message is whole. */
#define RX_KEEP_BYTES       16384
/*  On SIGTERM, connections get this long (at most) to take what is queued
    for them and their close frame (1001). */
#define STOP_GRACE_MS       2000
/*  A list sent "now" (a login answer, a newcomer's first list) is the last
    encoded one patched with the newcomers since (at most this many bytes of
    them) and without the users gone since (at most this many), else it is
    encoded again. */
#define LIST_PATCH_MAX      8192
#define LIST_GONE_MAX       64
/*  Whole user lists (the original protocol's) cost O(users^2) bytes a round:
    pushes are spaced so that they queue at most this many bytes a second
    (and at least --presence-interval apart; at most PRESENCE_GAP_MAX_MS). */
#define PRESENCE_BYTES_PER_S (256ull * 1024 * 1024)
#define PRESENCE_GAP_MAX_MS  30000
/*  Input shaping: each piece of input lws hands us (a WebSocket frame, or
    up to RX_BUFFER_BYTES of one, or a pong) costs one of twice --rate-limit
    tokens a second (twice --rate-burst at once), whatever it holds, and
    each byte one of --rate-limit-bytes (four seconds' worth at once); a
    peer that has spent its budget is not read until it refills (TCP holds
    the rest).  A peer that sends one-byte fragments thus costs at most so
    many callbacks, and a flooder at most so many bytes, of the loop's
    time; a client within the request rate limit, sending whole frames,
    never meets it. */

/*  A slow consumer closed with 1008 gets this long to take its close frame
    before the connection is dropped. */
#define SLOW_CLOSE_GRACE_S  5
/*  Liveness: we say hello to the router and ping auth this often, and take
    an actor for gone when it has not answered for PEER_TIMEOUT_MS; requests
    that need it are then answered at once instead of waiting. */
#define HEARTBEAT_MS        1000
#define PEER_TIMEOUT_MS     3000
/*  A login or authorize that got no answer within this is answered
    "Service temporarily unavailable." (its actor died with it in hand). */
#define REQUEST_TIMEOUT_MS  10000


typedef enum { WAIT_NONE = 0, WAIT_LOGIN, WAIT_AUTHORIZE } wait_kind_t;

/*  A /metrics request waiting for the actors' own figures. */
#define MAX_STATS_WAIT      8
#define STATS_TIMEOUT_MS    1000

typedef struct {
    void *conn;                 /* the HTTP connection (conn_t), NULL = free */
    uint64_t req;
    uint64_t deadline;          /* monotonic ms */
    int waiting;                /* answers still to come */
    qms_buf_t body;
} stats_wait_t;

/*  Open WebSocket connections from one address (--max-connections-per-address). */
typedef struct {
    uint64_t h;
    uint32_t count;
    char address [64];
} peer_t;

/*  An online user, as the router told us (GW_USERS, GW_JOIN, GW_LEAVE). */
typedef struct user_s {
    struct user_s *prev, *next;     /* in the order they came online */
    uint64_t epoch;                 /* gateway_t.user_epoch when added */
    uint64_t frame_id;              /* the list_frame it is in (0: none) */
    uint32_t frame_off, frame_len;  /* where its "{...}" is in that frame */
    /*  Every gateway keeps every user online in the cluster, so an entry is
        kept small (48 bytes and its strings): lengths, not views, and no
        stored hash (gw_user_remove hashes the id again). */
    uint16_t id_len, name_len, pubkey_len;
    char data [];                   /* id, name, pubkey, each ended by a NUL */
} user_t;

static inline qms_str_t
gw_user_id (const user_t *u)
{
    return qms_strn (u->data, u->id_len);
}

static inline qms_str_t
gw_user_name (const user_t *u)
{
    return qms_strn (u->data + u->id_len + 1, u->name_len);
}

static inline qms_str_t
gw_user_pubkey (const user_t *u)
{
    return qms_strn (u->data + u->id_len + u->name_len + 2, u->pubkey_len);
}

/*  A request in flight, in a FIFO by deadline. */
typedef struct {
    uint64_t handle;
    uint32_t seq;
    uint64_t deadline;          /* monotonic ms */
} waiting_t;

typedef enum { VH_CHAT, VH_HTTP, VH_HTTPS, VH_METRICS } vhost_kind_t;

/*  What a connection we accepted ourselves carries (lws's opaque user
    data): the port it came in on and, when a trusted proxy's PROXY header
    named one, the client's address (then it is ours to free). */
typedef struct {
    vhost_kind_t kind;
    bool owned;
    char address [48];
} accepted_t;

/*  A connection from a --trusted-proxy on the chat port, its PROXY
    protocol header not yet whole (--proxy-protocol). */
#define PROXY_HEAD_MAX  (16 + 512)
#define PROXY_WAITS     256
#define PROXY_WAIT_MS   5000
typedef struct {
    int fd;
    int listener;
    uint64_t deadline;          /* monotonic ms */
    size_t have;
    uint8_t head [PROXY_HEAD_MAX];
    char peer [48];
} proxy_wait_t;

/*  The two lists gw_conn_scan walks instead of every slot, linked through
    slot numbers plus one (0: none, so a zeroed connection is on no list):
    GW_QUIET holds every attached connection, the longest silent first
    (heard_ms only rises, and a frame moves its connection to the tail);
    GW_WAITING those whose output waits (out_since set). */
enum { GW_QUIET, GW_WAITING, GW_LISTS };
typedef struct {
    uint32_t prev, next;
} gw_link_t;
typedef struct {
    uint32_t head, tail;
} gw_list_t;

/*  Per-connection state, sized once by lws (protocol per_session_data).
    Every connection held pays for each byte here: the fields go by size,
    widest first, so that the compiler pads nothing between them, and what
    only a closing connection needs (its close reason) is on the heap. */
#define CLOSE_REASON_MAX    63          /* bytes of a close frame's reason we send */
typedef struct {
    struct lws *wsi;
    uint64_t handle;            /* 0 until the WebSocket is established */
    uint64_t list_gen;          /* the user list generation it last got whole */
    /* input shaping: read tokens and bytes it may still spend (see input_spend) */
    int64_t in_bytes;
    uint64_t in_ms;             /* tick ms of the last refill, 0 = never */
    /* rx: only for messages that arrive in pieces */
    uint8_t *rx;
    size_t rx_len;
    size_t rx_cap;
    /* output: frames we framed and shared lists, written by us (outq.h) */
    outq_t out;
    uint64_t out_since;         /* tick ms its output stopped being empty, 0 = empty */
    /* rate limit: token bucket */
    double bucket;
    uint64_t bucket_ms;
    peer_t *peer;               /* its address's count, while established */
    /* the router waits to hear that what was queued has been written */
    uint64_t sync_req;
    /* a login or authorize in flight, for its timeout (with waiting, wait_seq) */
    uint64_t wait_started;      /* monotonic ms, for the latency figures */
    /* idle pings (--ping-interval): monotonic ms, to the gateway tick */
    uint64_t heard_ms;          /* the last frame of any kind from the peer */
    uint64_t pinged_ms;         /* our last ping to it */
    char *close_reason;         /* of a close we asked for (gw_conn_close), or NULL */
    http_response_t *resp;      /* HTTP */
    gw_link_t links [GW_LISTS]; /* its places on the scan's lists */
    int32_t in_reads;           /* input shaping, with in_bytes */
    uint32_t wait_seq;
    int stats_slot;             /* HTTP: 1 + index of a /metrics request waiting, or 0 */
    uint16_t close_code;        /* a close we asked for */
    bool bound;                 /* a session owns this connection */
    bool receipts;              /* ext: it asked for the receipt protocol */
    uint8_t presence;           /* ext: PROTO_PRESENCE_*, from its login/authorize */
    bool list_stale;            /* a newer list waited for the one on its way */
    bool write_asked;           /* a writeable callback is on its way: ask lws once (on
                                   libuv each ask re-registers the descriptor) */
    bool write_listed;          /* in the gateway's to_write */
    bool rx_held;               /* we stopped reading it while its output waits */
    bool rx_shaped;             /* ... or while its input budget refills */
    bool rx_off;                /* what lws was told last (rx flow control) */
    uint8_t waiting;            /* a login or authorize in flight */
    uint8_t listed;             /* bit per list it is on */
    bool close_queued;          /* its close frame is in out */
    bool resp_deferred;         /* HTTP: the response's headers are still to be sent */
    bool resp_close;
    uint8_t token_len;
    uint8_t pending_len;
    uint8_t user_len;           /* the user the session is of (GW_BOUND), 0 = unknown */
    char token [QMS_TOKEN_CHARS + 1];       /* the bound session's token */
    char pending [QMS_TOKEN_CHARS + 1];     /* token of a login/authorize in flight */
    char user_id [PROTO_MAX_USER_ID];
} conn_t;

struct _gateway_t {
    const qms_config_t *cfg;
    struct lws_context *ctx;
    struct lws_vhost *vh_chat, *vh_http, *vh_https, *vh_metrics;
    http_site_t *site;              /* the UI */
    http_site_t *site_redirect;     /* plain HTTP when HTTPS is on */

    zsock_t *router;
    zsock_t *auth;
    void *router_raw, *auth_raw;
    struct lws *router_wsi, *auth_wsi, *signal_wsi;
    int signal_fd;

    conn_t **slots;                 /* handle slot -> connection */
    uint32_t *gens;
    uint32_t *free_slots;
    size_t free_count;
    size_t max_slots;
    size_t open_count;

    qms_buf_t to_router, to_auth, to_store;   /* batches being built this pass */
    qms_buf_t scratch;              /* one event's JSON */
    /* presence: who is online, as the router says, and what changed since
       the last push (pushes are coalesced: one per presence interval) */
    qms_map_t peers;                /* address -> peer_t */
    struct {                        /* our own listening sockets (--reuse-port) */
        struct lws *wsi;
        int fd;
        struct lws_vhost *vh;
        vhost_kind_t kind;
    } listeners [4];
    int listener_count;
    proxy_wait_t *proxy_waits [PROXY_WAITS];
    int proxy_count;
    lws_sorted_usec_list_t sul_proxy;
    uint64_t tick_ms;               /* monotonic ms of the last tick (100 ms) */
    uint64_t next_wait_scan;
    gw_list_t lists [GW_LISTS];     /* gw_conn_scan's: see gw_link_t */
    /* the store, asked only for its figures and as a liveness check */
    zsock_t *store;
    void *store_raw;
    struct lws *store_wsi;
    uint64_t store_seen;
    bool store_writable;
    stats_wait_t stats [MAX_STATS_WAIT];
    uint64_t stats_next_req;
    /* our own figures (docs/OPERATIONS.md lists them) */
    struct {
        uint64_t opened, requests [QMS_REQ_COUNT], malformed, invalid_user, rate_limited;
        uint64_t proxy_bad;         /* connections closed for a bad or missing PROXY header */
        uint64_t bad_batches;           /* from the actors, dropped whole */
        uint64_t bytes_in, bytes_out, closes [6], logins_ok, logins_failed;
        uint64_t events_message, events_stored, events_group, acks, http [6], pings, idle_closed;
        uint64_t slow_closed [3];       /* by slow_reason_t */
        uint64_t shaped;                /* times a peer's input was paused */
        size_t out_peak;                /* the most one connection had queued */
        uint64_t lists [3];             /* full-list pushes: queued, replaced, deferred */
        qms_hist_t login_ms, authorize_ms;
    } m;
    outq_acct_t out_acct;           /* every connection's queued output */
    qms_buf_t shaped;               /* handles (uint64_t) of connections whose input is paused */
    qms_buf_t to_write;             /* handles (uint64_t) of connections with output queued this pass */
    qms_map_t users_by_id;
    user_t *users_head, *users_tail;
    size_t user_count;
    uint64_t users_seed;
    uint64_t users_gen;             /* bumped on every change */
    /*  The user list event, framed once per change and shared by every
        connection that gets it (and its array by every login answer). */
    outq_shared_t *list_frame;
    uint64_t list_frame_gen;
    uint64_t list_frame_epoch;      /* the users added before it was built are in it */
    uint64_t list_frame_id;         /* counts list frames built */
    uint64_t user_epoch;            /* counts user_add */
    qms_buf_t list_gone;            /* (off, len) pairs of users of list_frame gone since */
    size_t list_array_off, list_array_len;
    qms_buf_t changes;              /* JSON objects of the changes not yet pushed */
    /*  ext: groups.  The limits requests are checked against (from cfg), and
        a GroupListEvent being built from GW_GROUPS and the GW_GROUP records
        that follow it in the same batch. */
    proto_limits_t group_limits;
    struct {
        bool active;
        bool failed;                /* a row could not be encoded */
        bool more;                  /* a part: more parts follow ("more":true) */
        uint64_t conn;
        uint64_t left;              /* rows still to come */
        uint8_t id_len;
        char id [PROTO_MAX_CLIENT_ID];
        qms_buf_t json;
    } glist;
    bool presence_scheduled;
    uint64_t presence_last;         /* monotonic ms of the last push */
    uint64_t presence_round;        /* bytes of whole lists the last push queued */
    lws_sorted_usec_list_t sul_presence;

    lws_sorted_usec_list_t sul_flush, sul_tick, sul_stop;
    uint64_t nonce;                 /* this instance, told to the router */
    char name [64];
    uint64_t router_seen, auth_seen;    /* monotonic ms of their last answer */
    uint64_t next_heartbeat;
    uint64_t next_trim;
    waiting_t *waits;               /* a ring of requests in flight */
    size_t wait_head, wait_count, wait_cap;
    uint32_t wait_seq;
    bool flush_scheduled;
    bool stopping;
    bool interrupted;
    _Atomic int stop_signal;        /* gateway_stop: set from another thread */
    /*  The event loop: libuv's (epoll: a wake-up costs what is ready, not
        what is open), libwebsockets on it as on a foreign loop; or, with
        --poll-loop or without lws's libuv plugin, lws's own poll() loop. */
    bool uv_on;
    uv_loop_t uv;
    uv_prepare_t uv_before_sleep;   /* runs each time the loop is about to wait */
    /*  gw_protocols with the chat protocol's rx_buffer_size from --rx-buffer
        (lws keeps a pointer to it for as long as the context lives). */
    struct lws_protocols protocols [3];
    /*  The loop's passes (the watchdog reads loop; the rest is ours). */
    qms_loop_t loop;
    uint64_t pass_began_us;         /* the first callback of this pass, 0 = none yet */
    uint64_t pass_last_us;
    qms_hist_t pass_ms;
};

/*  The first callback of a loop pass starts its clock (gateway_run ends it). */
#define PASS_BEGIN(self) \
    do { if (!(self)->pass_began_us) (self)->pass_began_us = qms_mono_us (); } while (0)


/*  Why a slow consumer was closed (gw_slow_names, for logs and /metrics). */
typedef enum { SLOW_QUEUE = 0, SLOW_STALLED, SLOW_BUDGET } slow_reason_t;
extern const char *const gw_slow_names [3];

/*  Which actor a batch came from. */
typedef enum { PEER_ROUTER, PEER_AUTH, PEER_STORE } peer_kind_t;

/* ------------------------------------------------------------------------ */
/*  gateway.c */

/*  The protocols every vhost serves (callback_qms, callback_raw). */
extern const struct lws_protocols gw_protocols [];

/* ------------------------------------------------------------------------ */
/*  gw_listen.c */

/*  Create a vhost listening on port (or on a socket of our own with
    --reuse-port); NULL, logged, if the port cannot be bound. */
struct lws_vhost *gw_create_vhost (gateway_t *self, const char *name, int port, bool tls, vhost_kind_t kind);
/*  Which kind of port a connection came in on. */
vhost_kind_t gw_vhost_kind (gateway_t *self, struct lws *wsi);
/*  If wsi is one of our own listening sockets, accept what waits on it
    and return true. */
bool gw_listen_accept (gateway_t *self, struct lws *wsi);
/*  The client address a PROXY header named for wsi's connection, or NULL. */
const char *gw_proxied_address (struct lws *wsi);
/*  wsi is going: free what gw_listen_accept gave it. */
void gw_listen_forget (struct lws *wsi);
/*  Close the connections still waiting for their PROXY header. */
void gw_proxy_waits_close (gateway_t *self);
/*  Parse a whole PROXY protocol header (version 1's line with its CRLF,
    or version 2's 16 bytes and what they say follows): 0 with the
    client's address in out (the peer's own for LOCAL, UNKNOWN and an
    address family we do not read), -1 when it is not one. */
int gw_proxy_parse (const uint8_t *head, size_t len, const char *peer, char *out, size_t size);
/*  SIGHUP: reload the settings that may change, and the certificate. */
void gw_reload (gateway_t *self);

/* ------------------------------------------------------------------------ */
/*  gw_conn.c */

bool gw_conn_attach (gateway_t *self, conn_t *conn);
void gw_conn_detach (gateway_t *self, conn_t *conn);
void gw_conn_release (conn_t *conn);
/*  Index of a close code in m.closes (5: other). */
int gw_close_index (uint16_t code);
void gw_conn_close (conn_t *conn, uint16_t code, const char *reason);
void gw_slow_consumer (gateway_t *self, conn_t *conn, slow_reason_t reason);
/*  Over --output-budget: the largest waiting queues go; returns how many
    connections it looked at (those whose output waits). */
size_t gw_enforce_budget (gateway_t *self);
void gw_conn_send_error (gateway_t *self, conn_t *conn, int event, const char *text);
outq_shared_t *gw_shared_frame (gateway_t *self, const void *json, size_t len);
void gw_conn_share (gateway_t *self, conn_t *conn, outq_shared_t *frame);
void gw_answer_sync (gateway_t *self, conn_t *conn);
int gw_conn_flush (gateway_t *self, conn_t *conn, int *flags);
void gw_input_spend (gateway_t *self, conn_t *conn, size_t len);
void gw_input_resume (gateway_t *self);
int gw_conn_writeable (gateway_t *self, conn_t *conn);
/*  The end of a pass: what was queued leaves (gw_conn.c says how). */
void gw_write_pending (gateway_t *self);
/*  At every tick (100 ms): pings to the connections silent for
    --ping-interval and closes of those silent for twice that and 10 s; with
    waiting (once a second), the --write-timeout of output that waits too.
    It walks the lists above, not the slots, so the connections it does not
    act on cost it nothing, and a tick pings only those that fell silent
    since the last: pings leave spread out, not in a burst a second that
    delays the messages behind it.  Returns how many connections it looked
    at. */
size_t gw_conn_scan (gateway_t *self, uint64_t now, bool waiting);
/*  The scan's lists: conn to the tail of list (moved there if it is on
    it), or off it.  Connections without a slot are on none. */
void gw_list_tail (gateway_t *self, int list, conn_t *conn);
void gw_list_remove (gateway_t *self, int list, conn_t *conn);
/*  A frame of any kind came from conn. */
static inline void
gw_conn_heard (gateway_t *self, conn_t *conn)
{
    conn->heard_ms = self->tick_ms;
    if (self->lists [GW_QUIET].tail != (uint32_t) (conn->handle & SLOT_MASK) + 1)
        gw_list_tail (self, GW_QUIET, conn);
}
bool gw_match_peer (const void *item, const void *key);
bool gw_peer_enter (gateway_t *self, conn_t *conn);
/*  Whether address is in a --trusted-proxy range. */
bool gw_trusted (const qms_config_t *cfg, const char *address);
/*  The client's address: the peer's, or, when the peer is a --trusted-proxy,
    the nearest address in X-Forwarded-For (else Forwarded: for=) that is
    not one; pure, for the selftest. */
void gw_client_address (const qms_config_t *cfg, const char *peer, const char *xff,
                        const char *forwarded, char *out, size_t size);
void gw_peer_leave (gateway_t *self, conn_t *conn);

/* ------------------------------------------------------------------------ */
/*  gw_dispatch.c */

void gw_schedule_flush (gateway_t *self);
void gw_to_router (gateway_t *self, const qms_rec_t *rec);
void gw_to_auth (gateway_t *self, const qms_rec_t *rec);
void gw_to_store (gateway_t *self, const qms_rec_t *rec);
/*  Takes every batch the actors sent (ZMQ_FD tells only of new arrivals
    after the socket was found empty: whoever sends or receives on a socket
    drains it before the loop sleeps).  Returns how many there were. */
size_t gw_drain_zmq (gateway_t *self);
/*  The same for one actor's socket (the one whose descriptor fired, or
    that was just sent on). */
size_t gw_drain_peer (gateway_t *self, peer_kind_t peer);
bool gw_router_alive (gateway_t *self);
bool gw_auth_alive (gateway_t *self);
bool gw_store_alive (gateway_t *self);
void gw_heartbeat (gateway_t *self);
void gw_wait_expire (gateway_t *self);
int gw_handle_receive (gateway_t *self, conn_t *conn, const uint8_t *in, size_t len);

/* ------------------------------------------------------------------------ */
/*  gw_presence.c */

bool gw_match_user (const void *item, const void *key);
user_t *gw_user_find (gateway_t *self, qms_str_t id);
void gw_user_add (gateway_t *self, qms_str_t id, qms_str_t name, qms_str_t pubkey);
void gw_user_remove (gateway_t *self, user_t *u);
void gw_users_clear (gateway_t *self);
void gw_users_changed (gateway_t *self);
void gw_conn_queue_list_now (gateway_t *self, conn_t *conn, const qms_str_t *username);
void gw_presence_schedule (gateway_t *self);

/* ------------------------------------------------------------------------ */
/*  gw_ops.c */

void gw_stats_answer (gateway_t *self, peer_kind_t from, const qms_rec_t *rec);
void gw_stats_expire (gateway_t *self);
bool gw_serve_ops (gateway_t *self, conn_t *conn, const char *path, const char *method);

/* ------------------------------------------------------------------------ */
/*  gw_http.c */

int gw_handle_http (gateway_t *self, struct lws *wsi, conn_t *conn, const char *path);
int gw_http_writeable (gateway_t *self, struct lws *wsi, conn_t *conn);
int gw_filter_handshake (gateway_t *self, struct lws *wsi);

/* ------------------------------------------------------------------------ */
/*  The relay path, inline: a record from the router becomes a frame in a
    connection's queue without a call between files. */

static inline conn_t *
gw_conn_lookup (gateway_t *self, uint64_t handle)
{
    uint32_t slot = (uint32_t) (handle & SLOT_MASK);
    if (slot >= self->max_slots)
        return NULL;
    conn_t *conn = self->slots [slot];
    return conn && conn->handle == handle ? conn : NULL;
}

static inline size_t
gw_output_total (const gateway_t *self)
{
    return self->out_acct.owned + self->out_acct.shared;
}

/*  Something was queued for conn: check its limits, and ask to write. */
static inline void
gw_conn_queued (gateway_t *self, conn_t *conn, bool was_empty)
{
    if (was_empty) {
        conn->out_since = self->tick_ms;
        gw_list_tail (self, GW_WAITING, conn);
    }
    /*  Shared lists are not this connection's memory: they count once, in
        the budget (and a list that never drains, in --write-timeout). */
    size_t queued = conn->out.owned;
    if (queued > self->m.out_peak)
        self->m.out_peak = queued;
    if (queued > self->cfg->max_queue_bytes) {
        gw_slow_consumer (self, conn, SLOW_QUEUE);
        return;
    }
    if (gw_output_total (self) > self->cfg->output_budget_bytes)
        gw_enforce_budget (self);
    if (!conn->close_code && !conn->write_asked && !conn->write_listed) {
        conn->write_listed = true;
        qms_buf_append (&self->to_write, &conn->handle, sizeof conn->handle);
    }
}

static inline void
gw_conn_queue (gateway_t *self, conn_t *conn, const void *json, size_t len)
{
    if (conn->close_code)
        return;                         /* closing: nothing more goes out */
    bool was_empty = outq_empty (&conn->out);
    if (outq_frame (&conn->out, json, len)) {
        gw_slow_consumer (self, conn, SLOW_QUEUE);     /* out of memory for it */
        return;
    }
    gw_conn_queued (self, conn, was_empty);
}

/*  Queue the JSON currently in self->scratch, then clear it. */
static inline void
gw_conn_queue_scratch (gateway_t *self, conn_t *conn)
{
    gw_conn_queue (self, conn, self->scratch.data, self->scratch.len);
    qms_buf_reset (&self->scratch);
}

static inline bool
gw_rate_allowed (gateway_t *self, conn_t *conn, uint64_t now)
{
    double rate = self->cfg->rate_messages, burst = self->cfg->rate_burst;
    if (conn->bucket_ms == 0)
        conn->bucket = burst;
    else
        conn->bucket += (double) (now - conn->bucket_ms) * rate / 1000.0;
    if (conn->bucket > burst)
        conn->bucket = burst;
    conn->bucket_ms = now;
    if (conn->bucket < 1.0)
        return false;
    conn->bucket -= 1.0;
    return true;
}

#endif
