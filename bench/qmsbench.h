/*  =========================================================================
    qmsbench.h - what the parts of qmsbench share

    qmsbench is one program in several files, cut along the layout that
    bench/qmsbench.c describes at its top; this header holds the constants,
    the options, the client, worker and statistics structures, the protocol
    table, the few small helpers that the hot path inlines, and the
    functions that one part calls in another. It is not a library
    interface: everything else stays static in its own file.
    ========================================================================= */

#ifndef QMSBENCH_H_INCLUDED
#define QMSBENCH_H_INCLUDED

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define QB_VERSION      QMS_VERSION         /* project() in CMakeLists.txt */
#define QB_SCRATCH      (256u * 1024)       /* per-thread read and write scratch */
#define QB_MAX_FRAME    (64u * 1024 * 1024) /* larger server frames are an error */
#define QB_HTTP_MAX     8192                /* upgrade response limit */
#define QB_IDMAX        128                 /* raw JSON bytes of a user id */
#define QB_TOKMAX       512                 /* raw JSON bytes of a token */
#define QB_MAX_EVENTS   512
#define QB_ERRTAB       48
#define QB_CLOSETAB     16
#define QB_MAX_PIDS     32
#define QB_MAX_SRC      256
#define QB_MAX_THREADS  64
#define QB_MAX_PORTS    64
#define QB_PATHMAX      512     /* --ready-file, --go-file, --done-file */
#define QB_LOOKUP_BATCH 64                  /* names per UserLookupRequest (the server's maximum) */
#define QB_LOOKUP_DEPTH 4                   /* lookup requests in flight per thread */
#define QB_MAX_SIZE     (16u * 1024 * 1024)
#define QB_MAGIC        "qmsb:"

#define MS      1000000ull
#define SEC     1000000000ull

/* ------------------------------------------------------------------------ */
/*  Options */

typedef struct {
    char host [64];                 /* as given, for the Host header */
    struct sockaddr_storage dst;
    socklen_t dst_len;
    int family;
    int port;
    char path [512];
    uint32_t clients;
    uint64_t messages;              /* per client; 0 = by duration */
    double duration;                /* seconds; run length or idle hold */
    uint32_t window;
    double rate;                    /* total msg/s; 0 = window-limited */
    uint32_t size;
    char prefix [48];
    struct sockaddr_storage src [QB_MAX_SRC];
    int nsrc;
    bool idle;
    int pids [QB_MAX_PIDS];
    int npids;
    double connect_rate;            /* new connections/s; 0 = unlimited */
    uint32_t max_pending;           /* handshakes + logins in flight */
    uint32_t max_auth;              /* register/login requests in flight */
    bool json_only;
    bool quiet;
    uint32_t threads;
    double timeout;                 /* global wall-clock bound */
    double ready_timeout;           /* give up waiting after this long without progress */
    double drain;                   /* wait for stragglers after sending stops */
    double stall;                   /* a full window without progress: presume lost */
    double handshake_timeout;       /* connect + upgrade + login per client */
    double backoff;                 /* pause of a sender after an error reply */
    int debug;                      /* error frames to print verbatim */
    const char *proto;
    int presence;                   /* PRES_FULL, PRES_DELTA, PRES_NONE */
    int ports [QB_MAX_PORTS];       /* client i connects to ports [i % nports] */
    int nports;
    bool ids;                       /* MessageRequests carry an id; acks counted */
    char to_prefix [48];            /* send to TO_PREFIX<i> (not ours): credit from acks */
    uint64_t expect;                /* receive only: each client waits for this many messages */
    bool resume;                    /* after the logins: reconnect everyone with Authorize */
    /*  Several processes measuring one window (empty: not used): created
        when every client is settled; the run starts once go_file exists;
        created when the run is measured, the connections then held until
        go_file is removed. */
    char ready_file [QB_PATHMAX], go_file [QB_PATHMAX], done_file [QB_PATHMAX];
    /*  --group-size N (0: off): clients k*N .. k*N+N-1 form group k; each
        sends to its group, every other member receives (fan-out). */
    uint32_t group;
    uint32_t group_senders;         /* the first S members of each group send (default all) */
} opts_t;

enum { PRES_FULL, PRES_DELTA, PRES_NONE };

extern opts_t O;

/* ------------------------------------------------------------------------ */
/*  Small helpers: clock, PRNG, decimal digits, histogram, count tables */

static inline uint64_t
now_ns (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * SEC + (uint64_t) ts.tv_nsec;
}

static inline uint64_t
xorshift (uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/*  Writes v in decimal; returns the length. */
static inline int
u64_dec (char *dst, uint64_t v)
{
    char tmp [24];
    int n = 0;
    do { tmp [n++] = (char) ('0' + v % 10); v /= 10; } while (v);
    for (int i = 0; i < n; i++)
        dst [i] = tmp [n - 1 - i];
    return n;
}

/*  Log-linear latency histogram: 64 sub-buckets per power of two (about 1.6%
    resolution), exact below 64 ns, fixed size so recording never allocates. */
#define H_SUB       64
#define H_BUCKETS   ((64 - 6 + 1) * H_SUB)

typedef struct {
    uint64_t b [H_BUCKETS];
    uint64_t count, sum, max;
} hist_t;

static inline unsigned
hist_index (uint64_t v)
{
    if (v < H_SUB)
        return (unsigned) v;
    unsigned e = 63u - (unsigned) __builtin_clzll (v);       /* >= 6 */
    return (e - 5) * H_SUB + (unsigned) ((v >> (e - 6)) & (H_SUB - 1));
}

static inline void
hist_add (hist_t *h, uint64_t v)
{
    h->b [hist_index (v)]++;
    h->count++;
    h->sum += v;
    if (v > h->max)
        h->max = v;
}

/*  Counts by text (server errors, connection failures), fixed size. */
typedef struct {
    char text [120];
    uint64_t count;
} errent_t;

typedef struct {
    errent_t e [QB_ERRTAB];
    uint64_t other;
} errtab_t;

/*  Close codes sent by the server (RFC 6455 7.4); 0 stands for a connection
    that ended without a close frame (EOF), -1 for a reset or socket error. */
typedef struct {
    int code [QB_CLOSETAB];
    uint64_t count [QB_CLOSETAB];
    uint64_t other;
} closetab_t;

/*  Adds k to the count of text s (n bytes) / of close code code (qb_stats.c). */
void errtab_add (errtab_t *t, const char *s, size_t n, uint64_t k);
void closetab_add (closetab_t *t, int code, uint64_t k);

/* ------------------------------------------------------------------------ */
/*  Clients and workers */

/*  PH_RESUME (with --resume) comes between the logins and the run: every
    client reconnects and resumes its session with an AuthorizeRequest. */
enum { PH_CONNECT, PH_RESUME, PH_RUN, PH_DRAIN, PH_STOP };
enum { CS_NEW, CS_CONNECTING, CS_UPGRADING, CS_LOGIN, CS_ONLINE, CS_DEAD };
extern const char *qb_state_name [];

typedef struct {
    /*  Owned by the client's thread */
    int fd;
    uint32_t idx, tgt, src;         /* self, the one we send to, the one we receive from */
    uint16_t thread;
    uint8_t state;
    uint8_t frag_op;                /* opcode of a fragmented message in progress */
    uint8_t sender;                 /* 0 not started, 1 active, 2 done */
    bool in_ready;                  /* in the thread's ready ring */
    bool tried_login;               /* register said "exists": we logged in */
    bool upgraded;
    bool got_ids;                   /* no need to scan user lists any more */
    bool stop_sending;              /* the server said our session is invalid */
    bool in_defer;                  /* in the thread's deferred list (backing off) */
    uint8_t login_tries;            /* answers "busy" so far */
    bool auth_slot;                 /* holds one of the thread's auth slots */
    bool auth_waiting;              /* queued for an auth slot */
    bool resuming;                  /* reconnected for --resume: Authorize, not login */
    uint32_t epev;                  /* current epoll interest */
    uint64_t t_start, t_online;
    uint8_t *in;                    /* partial frames only */
    uint32_t in_len, in_cap, need;
    uint8_t *out;                   /* unsent bytes only */
    uint32_t out_len, out_off, out_cap;
    uint8_t *frag;
    uint32_t frag_len, frag_cap;
    char *tmpl;                     /* a MessageRequest up to the message string */
    uint32_t tmpl_len;
    char wskey [32];
    uint64_t sent, reclaim_mark, reclaimed, rejected, ack_snap, ack_time, resume_at;
    uint64_t rx_base, rx_unique, rx_dup, rx_late, rx_ooo, rx_next;
    uint64_t *rx_bits;
    uint64_t *sent_ts;              /* --ids: send time by sequence (ring), for ack latency */
    uint64_t acks;                  /* --ids: acks stored/delivered so far (in order) */
    uint16_t self_len, tgt_len, src_len, token_len;
    uint32_t last_list;             /* --presence full: users in the last whole list we got */
    char self_id [QB_IDMAX], tgt_id [QB_IDMAX], src_id [QB_IDMAX];
    char token [QB_TOKMAX];
    /*  Shared: written by other threads or read by the main thread (atomics).
        Our receiver publishes two acknowledgements: acked, cumulative (the
        highest sequence number it got, plus one), and delivered, a count.
        The window uses the tighter of the two bounds on what is in flight:
        the cumulative one is exact across silent gaps, the count (plus the
        server's error replies to our sends) is exact across rejections at
        the tail. A tail lost silently holds credit until --stall. */
    uint64_t acked __attribute__ ((aligned (64)));
    uint64_t delivered;
    int blocked;
    int dead, online, has_tgt, has_src;
    /*  --group-size: has_self says self_id is known (other threads read it
        for the GroupCreateRequest); the group id is kept in tgt_id (has_tgt:
        our GroupEvent came, membership is complete for us). grp_next: per
        member of our group, the next sequence number we expect from it. */
    int has_self;
    bool grp_asked;                 /* the owner sent the GroupCreateRequest */
    uint32_t *grp_next;
} client_t;

typedef struct {
    uint64_t conn_ok, conn_fail, login_ok, login_fail, registered, existing;
    uint64_t sent, delivered, dup, late, ooo, misrouted, foreign, sender_mismatch;
    uint64_t stalls, reclaimed, rejected, login_retries, userlists_skipped;
    uint64_t bytes_in, bytes_out, pings, srv_errors, invalid_user;
    uint64_t first_start, last_online, last_delivery, last_send;
    uint64_t ack_stored, ack_delivered, ack_received, ack_rejected, ack_unknown;
    uint64_t lookups, lookup_names, lookup_retries, stored_rx;
    uint64_t resume_ok, resume_fail, first_resume, last_resume, first_rx;
    hist_t lat, login, resume, drain;
    errtab_t srv_err, conn_err;
    closetab_t closes;
} stats_t;

typedef struct {
    int id;
    pthread_t th;
    int ep, efd;
    uint32_t nmine, next_start;     /* local client j is global j * T + id */
    uint64_t *marks;                /* senders credited by other threads */
    uint32_t nmarkw;
    int mark_pending, sleeping;
    uint32_t *ring;                 /* senders with credit, FIFO of global indexes */
    uint32_t rcap, rhead, rtail;
    uint32_t *defer;                /* senders backing off until their resume_at */
    uint32_t ndefer;
    uint64_t defer_next;            /* earliest resume_at in defer */
    double tokens, trate;           /* message rate bucket (this thread's share) */
    uint64_t tlast;
    double ctokens, crate;          /* connection rate bucket */
    uint64_t clast;
    uint32_t pending, max_pending;
    uint32_t auth, max_auth;        /* auth requests in flight and the cap */
    uint32_t *authq;                /* upgraded clients waiting for an auth slot */
    uint32_t aq_head, aq_tail, aq_cap;
    uint8_t *iscr, *oscr;
    void *oown;                     /* client whose frames are in oscr */
    uint32_t olen;
    uint64_t rng;
    int seen_phase;
    /*  UserLookupRequests (--presence none, --to-prefix): names wanted by
        this thread's clients, asked in batches by one online client of the
        thread (the agent); the answers come one per name, in order. */
    uint8_t *lk_state;              /* per name index: 1 queued or in flight */
    uint32_t *lkq;                  /* queued names (ring of clients + 1) */
    uint32_t lkq_head, lkq_tail, lkq_cap;
    uint32_t *lk_fly;               /* names in flight, in request order */
    uint32_t lk_fly_head, lk_fly_n;
    uint32_t *lk_retry;             /* "No such user." yet: asked again later */
    uint32_t lk_nretry;
    uint64_t lk_retry_at;
    int64_t lk_agent;               /* global index of the agent, -1 none */
    int grp_done;                   /* --group-size: our owners asked for their groups */
    uint64_t senders_active;        /* read by main */
    int run_ack;                    /* read by main */
    stats_t st;
} worker_t;

extern client_t *G_cl;
extern worker_t *G_w;
extern uint64_t G_rxbits;           /* dedup window in sequence numbers (power of two) */
extern uint64_t G_tsring;           /* --ids: send times kept per sender (power of two) */
extern int g_phase;
extern bool g_nats;                 /* --proto nats */

#define LD(x)       __atomic_load_n (&(x), __ATOMIC_RELAXED)
#define ST(x, v)    __atomic_store_n (&(x), (v), __ATOMIC_RELAXED)
/*  Owner-only counters that the main thread reads for progress: plain
    increments published with a relaxed store (no lock prefix). */
#define INC(x, n)   ST (x, (x) + (n))

static inline int phase (void) { return __atomic_load_n (&g_phase, __ATOMIC_ACQUIRE); }
/*  The main thread reads states for its readiness report. */
#define SET_STATE(c, s)  __atomic_store_n (&(c)->state, (uint8_t) (s), __ATOMIC_RELAXED)

/*  The protocol layer: everything that knows the wire format goes through
    this table, so another protocol (--proto nats, reserved) is one more
    table. The core (connections, windows, accounting, report) calls only
    these; a protocol calls back into the core with on_chat_message() for a
    delivered message, and sets state/online/has_tgt/has_src as it learns. */
typedef struct {
    const char *name;
    /*  TCP is connected: queue the first bytes (HTTP upgrade, CONNECT...). */
    void (*start) (worker_t *w, client_t *c);
    /*  The WebSocket is open: log in (or CONNECT and SUB). */
    void (*on_open) (worker_t *w, client_t *c);
    /*  Bytes from the socket: consume whole units, return bytes used or -1
        when the client died. */
    long (*consume) (worker_t *w, client_t *c, uint8_t *buf, size_t len, uint64_t now);
    /*  Once per sender, when it knows its target: precompute what it can. */
    int (*prepare_sender) (client_t *c);
    /*  Upper bound of one message on the wire, and writing one at dst. */
    size_t (*message_max) (const client_t *c);
    size_t (*put_message) (worker_t *w, client_t *c, uint8_t *dst, uint64_t seq, uint64_t ts);
    /*  Polite goodbye before the socket closes at the end. */
    void (*goodbye) (worker_t *w, client_t *c);
} proto_t;

extern const proto_t *P;

/* ------------------------------------------------------------------------ */
/*  JSON scanning (qb_json.c). Spans point into the frame and keep the raw
    JSON string bytes (escapes included). */

typedef struct { const char *p; size_t n; } span_t;

static inline bool
span_is (span_t s, const char *lit)
{
    size_t n = strlen (lit);
    return s.n == n && memcmp (s.p, lit, n) == 0;
}

/*  Inner bytes of a JSON string value, or an empty span for other values. */
static inline span_t
j_strval (const char *vs, const char *ve)
{
    span_t s = { NULL, 0 };
    if (ve - vs >= 2 && *vs == '"') {
        s.p = vs + 1;
        s.n = (size_t) (ve - vs - 2);
    }
    return s;
}

typedef struct {
    int valid;                      /* -1 absent, 0, 1 */
    long event;                     /* -1 absent */
    bool stored;                    /* "stored":true (a message that waited) */
    span_t error, sender, message, token, name, id, status;
    const char *group, *group_end;  /* the group member: an id string or an object */
    const char *users, *users_end;  /* users (event 1, 4) or changes (event 6) */
    const char *user, *user_end;    /* the user object of a lookup answer */
} jtop_t;

/*  Next member of an object whose '{' was consumed: 1 and the spans, 0 at
    the closing brace, -1 on malformed input. */
int j_member (const char **pp, const char *e, span_t *key, const char **vs, const char **ve);
/*  Next element of an array whose '[' was consumed, as for j_member. */
int j_element (const char **pp, const char *e, const char **vs, const char **ve);
/*  Whether lit occurs in s. */
bool span_has (span_t s, const char *lit);
/*  The members of a top-level event object that the protocol layer reads;
    -1 when s is not a JSON object. */
int j_top (const char *s, size_t n, jtop_t *t);

/* ------------------------------------------------------------------------ */
/*  The transport (qb_conn.c) */

/*  Room for need bytes of output: the thread's scratch while the client has
    nothing queued, else the client's own queue; NULL when out of memory (or
    the client died flushing). out_commit counts the bytes written there. */
uint8_t *out_reserve (worker_t *w, client_t *c, size_t need);

static inline void
out_commit (worker_t *w, client_t *c, size_t n)
{
    if (w->oown == c && c->out_len == 0)
        w->olen += (uint32_t) n;
    else
        c->out_len += (uint32_t) n;
}

/*  Sends what is in the scratch (if it is ours), then the queue. */
void client_flush (worker_t *w, client_t *c);
/*  Masks n bytes in place with a 4-byte key. */
void ws_mask (uint8_t *d, size_t n, const uint8_t key [4]);
/*  Writes a masked frame header for a payload of len bytes; returns the
    header length (2..14). The mask key is at dst + header - 4. */
size_t ws_header (worker_t *w, uint8_t *dst, int opcode, size_t len);
/*  Queues one masked frame. */
void ws_send (worker_t *w, client_t *c, int opcode, const void *data, size_t len);
/*  proto_t.start and proto_t.consume of both protocols: the HTTP upgrade,
    then whole frames. */
void ws_send_upgrade (worker_t *w, client_t *c);
long ws_consume (worker_t *w, client_t *c, uint8_t *buf, size_t len, uint64_t now);
/*  Appends to the fragment buffer (the client dies if it grows too large). */
void frag_append (worker_t *w, client_t *c, const uint8_t *d, size_t n);
/*  Ends a client. why (a failure text) goes to the connection-failure table
    before login, close_code: >0 a server close frame, 0 EOF, -1 socket
    error (errno), -2 a local decision described by why. */
void client_die (worker_t *w, client_t *c, const char *why, int close_code);
/*  Opens the client's connection (non-blocking) and queues P->start. */
void client_start (worker_t *w, client_t *c, uint64_t now);
/*  What epoll said about the client's socket. */
void client_event (worker_t *w, client_t *c, uint32_t ev);

/* ------------------------------------------------------------------------ */
/*  Senders and receivers (qb_traffic.c) */

/*  The message text, the same for every protocol, at dst (at most
    bench_payload_max bytes); returns its length. */
size_t bench_payload_max (void);
size_t bench_payload (uint8_t *dst, uint32_t sender, uint64_t seq, uint64_t ts);
/*  A sender with credit joins the thread's ready ring (once). */
void ready_push (worker_t *w, client_t *c);
/*  Credit came back to sender s, which may be another thread's. */
void sender_wake (worker_t *me, client_t *s);
/*  A sender (or a login) that backs off until c->resume_at. */
void defer_push (worker_t *w, client_t *c);
/*  Those whose back-off is over, and senders credited by other threads, go
    back to the ready ring. */
void defer_take (worker_t *w, uint64_t now);
void marks_take (worker_t *w);
/*  Whether c can start sending, and making it a sender. */
bool sender_eligible (const client_t *c);
void sender_activate (worker_t *w, client_t *c, uint64_t now);
/*  A sender that stops: done, died, or its target did. */
void sender_done (worker_t *w, client_t *c);
/*  Messages of c in flight, given what its receiver acknowledged. */
uint64_t sender_inflight (const client_t *c, uint64_t acked);
/*  A token bucket: rate per second, at most 50 ms worth. */
void tokens_refill (double *tokens, double rate, uint64_t *last, uint64_t now);
/*  Runs the ready ring; returns ms until the rate allows more, or -1. */
int pump_all (worker_t *w, uint64_t now);
/*  A delivered message for receiver r: check, count, credit the sender. */
void on_chat_message (worker_t *w, client_t *r, span_t sender, span_t msg, uint64_t now);
/*  --group-size: a group message delivered to member r, the same. */
void on_group_message (worker_t *w, client_t *r, span_t msg, uint64_t now);
/*  --group-size: group k, its first member (the owner), and whether the
    groups may be created (every client is online, or the wait gave up). */
static inline uint32_t group_of (uint32_t idx) { return idx / O.group; }
static inline uint32_t group_first (uint32_t idx) { return idx - idx % O.group; }
extern int g_groups_go;

/* ------------------------------------------------------------------------ */
/*  Protocol layer "qms" (qb_qms.c) */

extern const proto_t qb_proto_qms;
/*  PREFIX<idx> into buf; returns buf. */
const char *prefix_name (uint32_t idx, char *buf, size_t cap);
/*  One text frame: an event of the server. */
void qms_on_text (worker_t *w, client_t *c, const char *s, size_t n, uint64_t now);
/*  Gives back the client's register/login slot, if it holds one (the next
    waiting client logs in). */
void qms_auth_release (worker_t *w, client_t *c);
/*  Sends the register (or login) request again, after a back-off. */
void qms_retry_login (worker_t *w, client_t *c);
/*  The lookup agent died: another online client of the thread takes over. */
void lookup_agent_lost (worker_t *w, client_t *c);
/*  Sends the UserLookupRequests that the thread's queue of names allows. */
void lookup_pump (worker_t *w, uint64_t now);
/*  --group-size: the owners of this thread create their groups (once every
    member's id is known and g_groups_go is set). */
void group_pump (worker_t *w, uint64_t now);
/*  A close frame (1000) if the WebSocket is open and nothing is queued:
    proto_t.goodbye of both protocols. */
void qms_goodbye (worker_t *w, client_t *c);

/* ------------------------------------------------------------------------ */
/*  Protocol layer "nats" (qb_nats.c) */

extern const proto_t qb_proto_nats;
/*  WebSocket payload bytes (NATS is a byte stream: frames mean nothing). */
void nats_on_bytes (worker_t *w, client_t *c, const uint8_t *d, size_t n, uint64_t now);

/* ------------------------------------------------------------------------ */
/*  The worker loop (qb_worker.c) */

/*  A worker thread (arg: its worker_t), until the phase is PH_STOP. */
void *worker_main (void *arg);

/* ------------------------------------------------------------------------ */
/*  The main thread's record of a run, and the report (qb_stats.c) */

/*  Server processes (--pid): RSS and CPU summed over them. */
typedef struct { long rss; double cpu; bool ok; } procs_t;

/*  Readiness from the flags every client publishes: a client is settled
    when it is dead, or online with whatever its pair needs. */
typedef struct {
    uint32_t settled, ready, online, dead, no_target, no_source, not_started, in_login;
    uint32_t senders;               /* online, knows its target, target alive */
} readiness_t;

typedef struct {
    uint64_t t0, t_run, t_send_end, t_end, t_resume;
    uint64_t t_ready;               /* --go-file: settled, waiting since */
    double go_wait_s, close_wait_s; /* --go-file: waited for it; --done-file: held after */
    uint32_t resume_from;
    procs_t p_start, p_run, p_end;
    double cpu_start, cpu_run, cpu_end;
    uint32_t held;
    readiness_t ready_at_run;
    bool timed_out, interrupted, ran;
} timeline_t;

typedef struct {
    stats_t s;
    uint64_t lost, per_sender_min, per_sender_max, senders;
    uint64_t expected;              /* deliveries expected (--group-size: N-1 per message) */
} totals_t;

/*  Adds up the workers' figures (after they were joined). */
void merge_totals (totals_t *T);
/*  The table (unless --json-only) and the RESULT line, on stdout. */
void report (const timeline_t *tl, const totals_t *T);

#endif
