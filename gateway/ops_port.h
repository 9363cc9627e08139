/*  ops_port.h - the operations port of a store, auth or router process.

    A gateway serves /metrics, /healthz and /readyz on its own ports
    (gw_ops.c).  A process that runs only the store, auth or the router
    has no web server of its own; with --metrics-port it starts this one:
    a libwebsockets context in a thread of its own, the same library and
    the same HTTP parser as the gateway's, that answers

        GET /metrics    the actor's own figures (Prometheus text)
        GET /healthz    200 when the actor answers, 503 when it does not
        GET /readyz     the same, and for the store: the database takes writes

    (HEAD too), 404 for any other path, 405 for any other method.  The
    figures come from the actor over ZeroMQ, exactly as a gateway gets
    them: a DEALER socket connected to the actor's endpoint sends
    QMS_STATS_GET and the answer is written once QMS_STATS comes back, or
    503 after the timeout.  Nothing is shared with the actor's thread, and
    the actor never waits for this one.  The bodies have the shapes every
    role answers with (qms_ops.h).

        ops_port_t *ops = ops_port_new (&options, err, sizeof err);
        ...
        ops_port_destroy (&ops);
*/
#ifndef OPS_PORT_H_INCLUDED
#define OPS_PORT_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    const char *role;           /* "store", "auth" or "router" */
    const char *endpoint;       /* the actor's endpoint, in connect form (qms_ops_local_endpoint) */
    const char *bind_address;   /* "" or NULL: every interface (as --bind) */
    int port;                   /* 0: any free port (ops_port_port says which) */
    const char *database;       /* the store's users.db, named by /readyz; or NULL */
    const char *version;        /* for qms_build_info */
    int timeout_ms;             /* how long the actor may take (0: 2000) */
} ops_port_options_t;

typedef struct _ops_port_t ops_port_t;

/*  Listens at once (so a port in use is an error here), then serves from
    its own thread.  NULL with the reason in err when it cannot. */
ops_port_t *ops_port_new (const ops_port_options_t *options, char *err, size_t err_size);

/*  Stops the thread, closes every socket. */
void ops_port_destroy (ops_port_t **self_p);

/*  The port it listens on. */
int ops_port_port (const ops_port_t *self);

void ops_port_test (bool verbose);

#ifdef __cplusplus
}
#endif

#endif
