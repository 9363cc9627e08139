/*  qms_inbox.h - an actor's inbox loop, written once.

    Every actor runs the same loop: poll its pipe and its sockets, waiting
    no longer than its next timer; read each readable socket up to a limit,
    so that one busy peer cannot starve the others or the timers; then end
    the pass with the actor's own hook, which runs its timers and flushes
    what the pass produced, once.  "$TERM" on the pipe ends the loop (the
    zactor convention); any other command is logged and ignored.

        qms_inbox_t *loop = qms_inbox_new (pipe, "router", self);
        qms_inbox_batches (loop, frontend, true, 256, "gateway", on_gateway_batch);
        qms_inbox_batches (loop, backend, false, 256, "store", on_store_batch);
        qms_inbox_set_pass (loop, end_of_pass);
        qms_inbox_run (loop);            // until $TERM
        qms_inbox_drain (loop, 1000);    // what peers sent before it
        qms_inbox_destroy (&loop);

    A batch handler gets each message's body (one qms_msg batch) and, on a
    ROUTER socket, the sender's identity; a message that is not one body
    frame is logged and dropped here.  A socket that does not carry batches
    (auth's hashing workers) gets a socket handler that reads it itself.
*/
#ifndef QMS_INBOX_H_INCLUDED
#define QMS_INBOX_H_INCLUDED

#include "qms_msg.h"

#include <czmq.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct _qms_inbox_t qms_inbox_t;

/*  One batch from a peer; identity is NULL (length 0) on a DEALER. */
typedef void (qms_inbox_batch_fn) (void *self, const uint8_t *identity, size_t identity_len,
                                  const uint8_t *data, size_t size);
/*  A readable socket the handler reads itself. */
typedef void (qms_inbox_socket_fn) (void *self, void *socket);
/*  The end of every pass (and once before the first): timers, flush.
    Returns how long the next poll may wait, in ms (-1: until something
    comes). */
typedef long (qms_inbox_pass_fn) (void *self);

/*  A loop for the actor whose state is self, on its zactor pipe; actor
    names it in logs.  NULL when out of memory. */
qms_inbox_t *qms_inbox_new (zsock_t *pipe, const char *actor, void *self);
void qms_inbox_destroy (qms_inbox_t **self_p);

/*  Read socket (a raw libzmq handle) for batches, at most max messages per
    pass, each to fn; routed when it is a ROUTER (identity frame first);
    peer names the sender in logs.  0, or -1 when the loop is full. */
int qms_inbox_batches (qms_inbox_t *self, void *socket, bool routed, int max, const char *peer,
                      qms_inbox_batch_fn *fn);
/*  Hand socket to fn whenever it is readable.  0, or -1 when full. */
int qms_inbox_socket (qms_inbox_t *self, void *socket, qms_inbox_socket_fn *fn);
void qms_inbox_set_pass (qms_inbox_t *self, qms_inbox_pass_fn *fn);

/*  Run until "$TERM" on the pipe (0) or a failed poll (-1). */
int qms_inbox_run (qms_inbox_t *self);

/*  Without waiting, read up to max more messages from every batch socket
    (what peers sent before $TERM), then run the pass hook once.  Returns
    how many messages were read. */
int qms_inbox_drain (qms_inbox_t *self, int max);

/*  The check every receiver runs on a batch before acting on any of it:
    qms_batch_valid for role, and when it fails one warn line under actor
    (event=bad_batch from=FROM bytes=N reason=... action=dropped). */
bool qms_inbox_accept (const char *actor, const char *from, qms_role_t role,
                       const uint8_t *data, size_t size);

void qms_inbox_test (bool verbose);

#ifdef __cplusplus
}
#endif

#endif
