/*  qms_ops.h - what the operations endpoints of every role share.

    A gateway answers /metrics, /healthz and /readyz on its own ports
    (gateway/gw_ops.c); a process that runs only the store, auth or the
    router answers them on --metrics-port (gateway/ops_port.c, served by
    the same libwebsockets).  Both write the bodies below, so a probe reads
    one shape whichever role it asks.
*/
#ifndef QMS_OPS_H_INCLUDED
#define QMS_OPS_H_INCLUDED

#include "qms_msg.h"

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

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
