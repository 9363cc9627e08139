/*  gateway.h - the libwebsockets gateway: WebSocket and HTTP in, records out.

    The gateway is the only code that knows WebSocket, HTTP and JSON.  It
    runs one libwebsockets loop in the calling thread; its ZeroMQ sockets to
    auth and router sit inside that loop (through ZMQ_FD), so it never
    blocks on them and needs no hand-off thread.
*/
#ifndef GATEWAY_H_INCLUDED
#define GATEWAY_H_INCLUDED

#include "qms_config.h"

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct _gateway_t gateway_t;

/*  Check that the configured certificate and key load and match, and that
    TLS 1.2+ can be set up with them.  Returns 0, or -1 with a reason. */
int gateway_check_tls (const qms_config_t *cfg, char *err, size_t err_size);

/*  Create the listeners and connect to auth and router.  With watch_hup,
    SIGHUP (a reload) must already be blocked in every thread: the gateway
    reads it from a signalfd.  NULL (after logging why) if a port cannot be
    bound. */
gateway_t *gateway_new (const qms_config_t *cfg, bool watch_hup);

/*  Serve until gateway_stop; returns 0 after a clean stop. */
int gateway_run (gateway_t *self);

/*  Stop gracefully: connections get 1001 and up to half the drain timeout
    to take what is queued for them.  Safe from any thread (the watchdog's
    stop function calls it). */
void gateway_stop (gateway_t *self, int signo);

void gateway_destroy (gateway_t **self_p);

/*  libwebsockets' own log lines into ours: errors as warnings, the rest
    only at debug level (every lws context of the process shares this). */
void gateway_lws_logging (void);

void gateway_test (bool verbose);

/*  The selftests of the gateway's parts (gw_internal.h lists the files). */
void gw_listen_test (bool verbose);
void gw_conn_test (bool verbose);
void gw_dispatch_test (bool verbose);
void gw_presence_test (bool verbose);
void gw_ops_test (bool verbose);
void gw_http_test (bool verbose);

/*  lws_sorted.c: libwebsockets' sorted-list insertion found from the tail
    (the library's own calls come to it); how many calls it has had. */
extern unsigned long lws_sorted_calls;
void lws_sorted_test (bool verbose);

#ifdef __cplusplus
}
#endif

#endif
