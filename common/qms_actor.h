/*  qms_actor.h - starting an actor thread and knowing it really started.

    zactor_new() waits for the actor's first signal but cannot say whether
    the actor's set-up worked.  Our actors therefore signal, then send one
    string on the pipe: "READY", or "ERROR <reason>" followed by returning.
    qms_actor_start() waits for that string, so a store that cannot open its
    database stops the process before anything listens.

    Inside an actor:
        zsock_signal (pipe, 0);
        qms_actor_ready (pipe, NULL);              // or the reason it failed
*/
#ifndef QMS_ACTOR_H_INCLUDED
#define QMS_ACTOR_H_INCLUDED

#include <czmq.h>

#ifdef __cplusplus
extern "C" {
#endif

/*  Start fn(pipe, args) as a thread.  Returns the actor once it said READY,
    or NULL after logging the reason it gave (the thread has then ended). */
zactor_t *qms_actor_start (zactor_fn *fn, void *args, const char *name);

/*  Called by an actor after zsock_signal: error NULL means ready. */
void qms_actor_ready (zsock_t *pipe, const char *error);

/*  Set a socket's linger to 0 and its send high-water mark: actors never
    block on a peer that has gone away. */
void qms_socket_tune (zsock_t *sock);

#ifdef __cplusplus
}
#endif

#endif
