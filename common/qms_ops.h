/*  qms_ops.h - the operations port of a store, auth or router process.

    A gateway serves /metrics, /healthz and /readyz itself (gateway.c).  A
    process that runs only the store, auth or the router has no HTTP server;
    with --metrics-port it starts this one: a thread with one listening
    socket that answers

        GET /metrics    the actor's own figures (Prometheus text)
        GET /healthz    200 when the actor answers, 503 when it does not
        GET /readyz     the same, and for the store: the database takes writes

    (HEAD too), 404 for any other path, 405 for any other method, one
    request per connection.  The figures come from the actor over ZeroMQ,
    exactly as a gateway gets them: a DEALER socket connected to the actor's
    endpoint sends QMS_STATS_GET and waits for QMS_STATS.  Nothing is shared
    with the actor's thread, and the actor never waits for this one.

        qms_ops_t *ops = qms_ops_new (&options, err, sizeof err);
        ...
        qms_ops_destroy (&ops);
*/
#ifndef QMS_OPS_H_INCLUDED
#define QMS_OPS_H_INCLUDED

#include "qms_msg.h"

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    const char *role;           /* "store", "auth" or "router" */
    const char *endpoint;       /* the actor's endpoint, in connect form */
    const char *bind_address;   /* "" or NULL: every interface (as --bind) */
    int port;                   /* 0: any free port (qms_ops_port says which) */
    const char *database;       /* the store's users.db, named by /readyz; or NULL */
    const char *version;        /* for qms_build_info */
    int timeout_ms;             /* how long the actor may take (0: 2000) */
} qms_ops_options_t;

typedef struct _qms_ops_t qms_ops_t;

/*  Listens at once (so a port in use is an error here), then serves from
    its own thread.  NULL with the reason in err when it cannot. */
qms_ops_t *qms_ops_new (const qms_ops_options_t *options, char *err, size_t err_size);

/*  Stops the thread, closes every socket. */
void qms_ops_destroy (qms_ops_t **self_p);

/*  The port it listens on. */
int qms_ops_port (const qms_ops_t *self);

/*  A connect-form endpoint for a bind-form one, for a socket in the same
    process: a tcp endpoint on '*' or on an interface's name becomes one on
    that interface's IPv4 address (127.0.0.1 for '*'), the rest stays.  -1 when there is none (a
    wildcard port, an interface without an IPv4 address). */
int qms_ops_local_endpoint (const char *bound, char *out, size_t out_size);

/*  The bodies every role answers with, written once (the gateway's
    /healthz and /readyz use them too, so both have one shape):

        /healthz  {"status":"ok","role":R[,"connections":N]}
                  {"status":"unresponsive","role":R,"reason":"..."}
        /readyz   {"ready":B,"<check>":B...[,"database_writable":B]
                   [,"database":"path"][,"reason":"..."]}

    Each returns the HTTP status (200 or 503). */
typedef struct {
    const char *name;           /* "router", "store", ... */
    bool ok;
} qms_ops_check_t;

int qms_ops_health_json (qms_buf_t *out, const char *role, bool ok, long connections,
                         const char *reason);
/*  database_writable: 1, 0, or -1 when the role has no database to say
    about; database: its path, or NULL.  Ready when every check is ok, the
    database (if any) is writable and reason is NULL. */
int qms_ops_ready_json (qms_buf_t *out, const qms_ops_check_t *checks, int count,
                        int database_writable, const char *database, const char *reason);

void qms_ops_test (bool verbose);

#ifdef __cplusplus
}
#endif

#endif
