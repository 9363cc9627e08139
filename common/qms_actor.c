/*  qms_actor.c - actor start-up handshake (see qms_actor.h). */
#include "qms_actor.h"
#include "qms_log.h"

zactor_t *
qms_actor_start (zactor_fn *fn, void *args, const char *name)
{
    zactor_t *actor = zactor_new (fn, args);
    if (!actor) {
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
