/*  qms_inbox.c - an actor's inbox loop (qms_inbox.h). */
#include "qms_inbox.h"
#include "qms_log.h"
#include "qms_msg.h"

#include <assert.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define INBOX_MAX_SOCKETS    72          /* auth: gateways, store and up to 64 workers */

typedef struct {
    void *socket;
    bool routed;
    int max;
    const char *peer;
    qms_inbox_batch_fn *on_batch;
    qms_inbox_socket_fn *on_socket;
} reader_t;

struct _qms_inbox_t {
    zsock_t *pipe;
    const char *actor;
    void *self;
    qms_inbox_pass_fn *on_pass;
    reader_t readers [INBOX_MAX_SOCKETS];
    int count;
};

qms_inbox_t *
qms_inbox_new (zsock_t *pipe, const char *actor, void *self)
{
    qms_inbox_t *loop = (qms_inbox_t *) calloc (1, sizeof *loop);
    if (loop) {
        loop->pipe = pipe;
        loop->actor = actor;
        loop->self = self;
    }
    return loop;
}

void
qms_inbox_destroy (qms_inbox_t **self_p)
{
    if (self_p && *self_p) {
        free (*self_p);
        *self_p = NULL;
    }
}

static reader_t *
reader_add (qms_inbox_t *self, void *socket)
{
    if (self->count == INBOX_MAX_SOCKETS)
        return NULL;
    reader_t *r = &self->readers [self->count++];
    memset (r, 0, sizeof *r);
    r->socket = socket;
    return r;
}

int
qms_inbox_batches (qms_inbox_t *self, void *socket, bool routed, int max, const char *peer,
                  qms_inbox_batch_fn *fn)
{
    reader_t *r = reader_add (self, socket);
    if (!r)
        return -1;
    r->routed = routed;
    r->max = max > 0 ? max : 1;
    r->peer = peer;
    r->on_batch = fn;
    return 0;
}

int
qms_inbox_socket (qms_inbox_t *self, void *socket, qms_inbox_socket_fn *fn)
{
    reader_t *r = reader_add (self, socket);
    if (!r)
        return -1;
    r->on_socket = fn;
    return 0;
}

void
qms_inbox_set_pass (qms_inbox_t *self, qms_inbox_pass_fn *fn)
{
    self->on_pass = fn;
}

/*  Up to max batches from r; how many were read (malformed ones count). */
static int
read_batches (qms_inbox_t *self, reader_t *r, int max)
{
    int read = 0;
    for (; read < max; read++) {
        uint8_t identity [256];
        size_t identity_len = 0;
        zmq_msg_t body;
        zmq_msg_init (&body);
        int rc = qms_batch_recv (r->socket, r->routed ? identity : NULL, &identity_len, &body);
        int err = errno;
        if (rc == 1)
            r->on_batch (self->self, r->routed ? identity : NULL, identity_len,
                         (const uint8_t *) zmq_msg_data (&body), zmq_msg_size (&body));
        zmq_msg_close (&body);
        if (rc == 0 || (rc < 0 && err == ETERM))
            break;
        if (rc < 0)
            qms_warn (self->actor, "event=malformed_message from=%s action=dropped", r->peer);
    }
    return read;
}

bool
qms_inbox_accept (const char *actor, const char *from, qms_role_t role,
                  const uint8_t *data, size_t size)
{
    qms_batch_fault_t fault;
    if (qms_batch_valid (data, size, role, &fault))
        return true;
    char why [128];
    qms_warn (actor, "event=bad_batch from=%s bytes=%zu %s action=dropped", from, size,
              qms_batch_fault_text (&fault, why, sizeof why));
    return false;
}

/*  True when the pipe says $TERM (or is gone). */
static bool
pipe_says_term (qms_inbox_t *self)
{
    char *command = zstr_recv (self->pipe);
    bool term = !command || streq (command, "$TERM");
    if (!term)
        qms_warn (self->actor, "event=unknown_command command=\"%.40s\"", command);
    zstr_free (&command);
    return term;
}

static long
end_pass (qms_inbox_t *self)
{
    return self->on_pass ? self->on_pass (self->self) : -1;
}

/*  1: input waits on socket, 0: none, -1: the socket is gone (ETERM). */
static int
has_input (void *socket)
{
    uint32_t events = 0;
    size_t size = sizeof events;
    if (zmq_getsockopt (socket, ZMQ_EVENTS, &events, &size))
        return -1;
    return (events & ZMQ_POLLIN) ? 1 : 0;
}

/*  The loop waits in poll() on the sockets' ZMQ_FD descriptors, not in
    zmq_poll: zmq_poll asks every socket for ZMQ_EVENTS before and after
    each wait (two system calls each), which at a modest message rate cost
    more than the messages.  ZMQ_FD tells only of arrivals after a socket
    was last found empty; what else can hide an arrival is checked before
    each wait: a socket read up to its limit, the pipe after a command, and
    every socket the pass sent on (qms_sent_take). */
int
qms_inbox_run (qms_inbox_t *self)
{
    int n = 1 + self->count;
    struct pollfd fds [1 + INBOX_MAX_SOCKETS];
    void *sockets [1 + INBOX_MAX_SOCKETS];
    bool check [1 + INBOX_MAX_SOCKETS], ready [1 + INBOX_MAX_SOCKETS];
    for (int i = 0; i < n; i++) {
        sockets [i] = i ? self->readers [i - 1].socket : zsock_resolve (self->pipe);
        size_t size = sizeof fds [i].fd;
        if (zmq_getsockopt (sockets [i], ZMQ_FD, &fds [i].fd, &size)) {
            qms_error (self->actor, "event=poll_failed reason=\"%s\"", zmq_strerror (errno));
            return -1;
        }
        fds [i].events = POLLIN;
        check [i] = true;               /* what came before the loop */
    }
    long wait = end_pass (self);
    for (;;) {
        void *sent [INBOX_MAX_SOCKETS];
        int sent_count = qms_sent_take (sent, INBOX_MAX_SOCKETS);
        for (int i = 1; i < n; i++)
            for (int k = 0; !check [i] && (sent_count < 0 || k < sent_count); k++)
                if (sent_count < 0 || sent [k] == sockets [i])
                    check [i] = true;
        bool any = false;
        for (int i = 0; i < n; i++) {
            ready [i] = false;
            if (!check [i])
                continue;
            check [i] = false;
            int in = has_input (sockets [i]);
            if (in < 0) {
                qms_error (self->actor, "event=poll_failed reason=\"%s\"", zmq_strerror (errno));
                return -1;
            }
            ready [i] = in;
            any |= ready [i];
        }
        if (!any) {
            int rc = poll (fds, (nfds_t) n, wait < 0 ? -1 : wait > INT32_MAX ? INT32_MAX : (int) wait);
            if (rc < 0) {
                if (errno == EINTR)
                    continue;
                qms_error (self->actor, "event=poll_failed reason=\"%s\"", strerror (errno));
                return -1;
            }
            if (rc == 0) {
                wait = end_pass (self);
                continue;
            }
            for (int i = 0; i < n; i++)
                ready [i] = fds [i].revents != 0;
        }
        if (ready [0]) {
            int in = has_input (sockets [0]);
            if (in != 0 && (in < 0 || pipe_says_term (self)))
                return 0;
            check [0] = true;           /* more commands may wait */
        }
        for (int i = 0; i < self->count; i++) {
            if (!ready [1 + i])
                continue;
            reader_t *r = &self->readers [i];
            if (r->on_batch) {
                if (read_batches (self, r, r->max) >= r->max)
                    check [1 + i] = true;   /* the rest, next pass */
            }
            else {
                r->on_socket (self->self, r->socket);
                check [1 + i] = true;
            }
        }
        wait = end_pass (self);
    }
}

int
qms_inbox_drain (qms_inbox_t *self, int max)
{
    int read = 0;
    for (int i = 0; i < self->count; i++)
        if (self->readers [i].on_batch)
            read += read_batches (self, &self->readers [i], max);
    end_pass (self);
    return read;
}

/* ------------------------------------------------------------------------ */
/*  Selftest: a small actor on the loop, driven through its pipe and two
    sockets. */

typedef struct {
    int batches [2];            /* per peer */
    int records;
    int passes;
    int socket_calls;
    bool saw_identity;
    long wait;                  /* what the pass hook returns */
    int pass_records;           /* records seen when the last pass ran */
    bool flushed_once;          /* each pass saw the batches of its pass */
} t_state_t;

static void
t_on_routed (void *self, const uint8_t *identity, size_t identity_len, const uint8_t *data, size_t size)
{
    t_state_t *t = (t_state_t *) self;
    t->batches [0]++;
    t->saw_identity = identity && identity_len == 2 && memcmp (identity, "p1", 2) == 0;
    size_t offset = 0;
    qms_rec_t rec;
    while (qms_rec_next (data, size, &offset, &rec) == 1)
        t->records++;
}

static void
t_on_dealer (void *self, const uint8_t *identity, size_t identity_len, const uint8_t *data, size_t size)
{
    t_state_t *t = (t_state_t *) self;
    assert (identity == NULL && identity_len == 0);
    t->batches [1]++;
}

static void
t_on_socket (void *self, void *socket)
{
    t_state_t *t = (t_state_t *) self;
    char buf [16];
    while (zmq_recv (socket, buf, sizeof buf, ZMQ_DONTWAIT) >= 0)
        t->socket_calls++;
}

static long
t_on_pass (void *self)
{
    t_state_t *t = (t_state_t *) self;
    t->passes++;
    t->pass_records = t->records;
    return t->wait;
}

typedef struct {
    void *routed, *dealer, *plain;
    t_state_t state;
    int max;
} t_args_t;

static void
t_actor (zsock_t *pipe, void *args)
{
    t_args_t *a = (t_args_t *) args;
    qms_inbox_t *loop = qms_inbox_new (pipe, "loop-test", &a->state);
    assert (loop);
    assert (qms_inbox_batches (loop, a->routed, true, a->max, "p", t_on_routed) == 0);
    assert (qms_inbox_batches (loop, a->dealer, false, a->max, "q", t_on_dealer) == 0);
    assert (qms_inbox_socket (loop, a->plain, t_on_socket) == 0);
    qms_inbox_set_pass (loop, t_on_pass);
    zsock_signal (pipe, 0);
    assert (qms_inbox_run (loop) == 0);
    a->state.records += 1000 * qms_inbox_drain (loop, 100);
    qms_inbox_destroy (&loop);
}

static void
t_send (void *socket, int records)
{
    qms_buf_t buf;
    qms_buf_init (&buf);
    for (int i = 0; i < records; i++) {
        qms_rec_t rec = { .type = QMS_RT_CLOSED, .conn = (uint64_t) i };
        assert (qms_rec_encode (&buf, &rec) == 0);
    }
    assert (qms_batch_send (socket, NULL, 0, &buf) == 0);
    qms_buf_free (&buf);
}

/*  The echo actor: what a pass received goes back at the end of the pass,
    as the router's replies do.  Those sends can take in the news of the
    next requests; nothing else would wake the loop for them (it waits
    without a timer). */
typedef struct {
    void *socket;
    qms_buf_t out;
    uint8_t identity [16];
    size_t identity_len;
    int echoed;
} t_echo_t;

static void
t_echo_batch (void *self, const uint8_t *identity, size_t identity_len, const uint8_t *data, size_t size)
{
    t_echo_t *e = (t_echo_t *) self;
    assert (identity_len <= sizeof e->identity);
    memcpy (e->identity, identity, identity_len);
    e->identity_len = identity_len;
    qms_buf_append (&e->out, data, size);
    e->echoed++;
}

static long
t_echo_pass (void *self)
{
    t_echo_t *e = (t_echo_t *) self;
    if (e->out.len) {
        /*  Busy for a moment, as an actor is: the next requests arrive
            meanwhile, and the send below may take in their news. */
        int64_t until = zclock_usecs () + 20;
        while (zclock_usecs () < until)
            ;
        assert (qms_batch_send (e->socket, e->identity, e->identity_len, &e->out) == 0);
        qms_buf_reset (&e->out);
        /*  What libzmq's send may do (it processes the socket's commands,
            at most once a millisecond), done here after every send, so that
            the test does not depend on when: the news of the requests that
            arrived meanwhile is taken in, and ZMQ_FD will not tell of them. */
        uint32_t events;
        size_t size = sizeof events;
        assert (zmq_getsockopt (e->socket, ZMQ_EVENTS, &events, &size) == 0);
    }
    return -1;
}

static void
t_echo_actor (zsock_t *pipe, void *args)
{
    t_echo_t *e = (t_echo_t *) args;
    qms_inbox_t *loop = qms_inbox_new (pipe, "test", e);
    assert (loop);
    assert (qms_inbox_batches (loop, e->socket, true, 64, "peer", t_echo_batch) == 0);
    qms_inbox_set_pass (loop, t_echo_pass);
    zsock_signal (pipe, 0);
    qms_inbox_run (loop);
    qms_inbox_destroy (&loop);
}

/*  Requests kept in flight against the echo actor; every one must come
    back.  A loop that waited on ZMQ_FD after its own sends without
    checking the sockets sent on stalls here within a few thousand. */
static void
t_echo (void *ctx, bool verbose)
{
    t_echo_t echo = { .socket = zmq_socket (ctx, ZMQ_ROUTER) };
    qms_buf_init (&echo.out);
    assert (zmq_bind (echo.socket, "inproc://qms-loop-echo") == 0);
    void *peer = zmq_socket (ctx, ZMQ_DEALER);
    assert (zmq_connect (peer, "inproc://qms-loop-echo") == 0);
    zactor_t *actor = zactor_new (t_echo_actor, &echo);
    assert (actor);
    enum { ROUNDS = 30000, WINDOW = 4 };
    int sent = 0, back = 0;
    uint8_t request [1] = { 0 };
    while (back < ROUNDS) {
        while (sent < ROUNDS && sent - back < WINDOW) {
            assert (zmq_send (peer, request, sizeof request, 0) == (int) sizeof request);
            sent++;
        }
        zmq_pollitem_t item = { peer, 0, ZMQ_POLLIN, 0 };
        if (zmq_poll (&item, 1, 5000) != 1) {
            fprintf (stderr, "qms_inbox: the loop stalled with %d requests in flight after %d round trips\n",
                     sent - back, back);
            assert (!"the loop slept while requests waited");
        }
        uint8_t replies [WINDOW];
        int got;
        while ((got = zmq_recv (peer, replies, sizeof replies, ZMQ_DONTWAIT)) >= 0)
            back += got;                /* a pass echoes its requests in one batch */
    }
    zactor_destroy (&actor);
    assert (echo.echoed == ROUNDS);
    if (verbose)
        printf ("(%d echoed) ", ROUNDS);
    qms_buf_free (&echo.out);
    int linger = 0;
    zmq_setsockopt (peer, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close (peer);
    zmq_setsockopt (echo.socket, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close (echo.socket);
}

void
qms_inbox_test (bool verbose)
{
    if (verbose)
        printf (" * qms_inbox: ");
    void *ctx = zsys_init ();
    t_args_t args = { .max = 3 };
    args.state.wait = 10;
    args.routed = zmq_socket (ctx, ZMQ_ROUTER);
    args.dealer = zmq_socket (ctx, ZMQ_DEALER);
    args.plain = zmq_socket (ctx, ZMQ_PULL);
    assert (zmq_bind (args.routed, "inproc://qms-loop-r") == 0);
    assert (zmq_bind (args.dealer, "inproc://qms-loop-d") == 0);
    assert (zmq_bind (args.plain, "inproc://qms-loop-p") == 0);
    void *p1 = zmq_socket (ctx, ZMQ_DEALER);
    assert (zmq_setsockopt (p1, ZMQ_ROUTING_ID, "p1", 2) == 0);
    assert (zmq_connect (p1, "inproc://qms-loop-r") == 0);
    void *q = zmq_socket (ctx, ZMQ_DEALER);
    assert (zmq_connect (q, "inproc://qms-loop-d") == 0);
    void *push = zmq_socket (ctx, ZMQ_PUSH);
    assert (zmq_connect (push, "inproc://qms-loop-p") == 0);

    /*  Seven batches wait before the loop starts: read at most three per
        pass, so it takes three passes, each ending with the hook. */
    for (int i = 0; i < 7; i++)
        t_send (p1, 2);
    t_send (q, 1);
    zmq_send (push, "x", 1, 0);
    zmq_send (push, "y", 1, 0);
    /*  A message of two frames is dropped, not handed on. */
    zmq_send (p1, "a", 1, ZMQ_SNDMORE);
    zmq_send (p1, "b", 1, 0);
    zactor_t *actor = zactor_new (t_actor, &args);
    assert (actor);
    int64_t deadline = zclock_mono () + 5000;
    while (args.state.batches [0] < 7 && zclock_mono () < deadline)
        zclock_sleep (5);
    zclock_sleep (50);
    assert (args.state.batches [0] == 7 && args.state.records == 14);
    assert (args.state.saw_identity);
    assert (args.state.batches [1] == 1);
    assert (args.state.socket_calls == 2);
    assert (args.state.passes >= 4);            /* one before, three to drain */
    assert (args.state.pass_records == 14);     /* the pass hook ran after them */

    /*  An unknown command is ignored; the wait the hook asks for is kept
        (10 ms: passes keep coming without traffic). */
    zstr_send (actor, "BOGUS");
    int passes = args.state.passes;
    zclock_sleep (100);
    assert (args.state.passes > passes + 3);

    /*  After $TERM what was sent before it is drained (counted in
        thousands by the test actor), not lost. */
    args.state.wait = -1;
    zclock_sleep (30);
    t_send (q, 1);
    zclock_sleep (20);
    zactor_destroy (&actor);
    assert (args.state.batches [1] == 2);

    t_echo (ctx, verbose);

    int linger = 0;
    void *all [] = { args.routed, args.dealer, args.plain, p1, q, push };
    for (size_t i = 0; i < sizeof all / sizeof all [0]; i++) {
        zmq_setsockopt (all [i], ZMQ_LINGER, &linger, sizeof linger);
        zmq_close (all [i]);
    }
    if (verbose)
        printf ("OK\n");
}
