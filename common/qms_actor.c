/*  qms_actor.c - actor start-up handshake (see qms_actor.h). */
#include "qms_actor.h"
#include "qms_log.h"

#include <openssl/crypto.h>

typedef struct {
    zactor_fn *fn;
    void *args;
} actor_start_t;

/*  Runs the actor, then frees the thread's OpenSSL state (random-number
    generator, error queue) before the thread reports that it has ended:
    CZMQ's actor threads are detached, so without this a process that exits
    right after zactor_destroy may leave that state behind, and
    LeakSanitizer rightly reports it. */
static void
actor_shim (zsock_t *pipe, void *arg)
{
    actor_start_t start = *(actor_start_t *) arg;
    free (arg);
    start.fn (pipe, start.args);
    OPENSSL_thread_stop ();
}

zactor_t *
qms_actor_start (zactor_fn *fn, void *args, const char *name)
{
    actor_start_t *start = malloc (sizeof *start);
    if (!start)
        return NULL;
    start->fn = fn;
    start->args = args;
    zactor_t *actor = zactor_new (actor_shim, start);
    if (!actor) {
        free (start);
        qms_error (name, "event=start_failed reason=\"cannot create thread\"");
        return NULL;
    }
    char *status = zstr_recv (actor);
    if (status && streq (status, "READY")) {
        zstr_free (&status);
        return actor;
    }
    qms_error (name, "event=start_failed reason=\"%s\"",
               status && strlen (status) > 6 ? status + 6 : "no answer");
    zstr_free (&status);
    zactor_destroy (&actor);
    return NULL;
}

void
qms_actor_ready (zsock_t *pipe, const char *error)
{
    if (error)
        zstr_sendf (pipe, "ERROR %s", error);
    else
        zstr_send (pipe, "READY");
}

void
qms_socket_tune (zsock_t *sock)
{
    zsock_set_linger (sock, 0);
    zsock_set_sndhwm (sock, 100000);
    zsock_set_rcvhwm (sock, 100000);
}
