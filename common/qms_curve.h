/*  qms_curve.h - the links between roles, authenticated and encrypted.

    Over tcp:// any process that reaches an actor's port could send it
    records (a fake gateway's hello, a delivery, an admin request).  With
    --curve-keys DIR every tcp:// link between roles uses ZeroMQ's CURVE
    (libzmq's own; RFC 26, CurveZMQ): the side that binds is a CURVE server
    with the deployment's server key, the side that connects a CURVE client
    with the deployment's client key, and a ZAP handler (CZMQ's zauth) in
    each process lets in only clients whose public key is in DIR/clients/.
    A peer with a wrong or missing key gets nothing through, and is logged.

    DIR, made once per deployment by `qmessageserver keys DIR`:

        server.cert, server.cert_secret     the binders' key pair
        client.cert, client.cert_secret     the connectors' key pair
        clients/client.cert                 who may connect (public keys)

    inproc:// (one process) and ipc:// (the admin sockets, mode 0600) are
    left as they are: nothing on the network reaches them.
*/
#ifndef QMS_CURVE_H_INCLUDED
#define QMS_CURVE_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/*  Write a new key set into dir (created, mode 0700; files with secrets
    0600).  0, or -1 with the reason in err (dir holds keys already, or
    cannot be written). */
int qms_curve_generate (const char *dir, char *err, size_t err_size);

/*  Load the key set of dir for this process and start its ZAP handler;
    an empty dir turns CURVE off.  0, or -1 with the reason in err. */
int qms_curve_init (const char *dir, char *err, size_t err_size);
/*  Stop the ZAP handler, forget the keys (the end of the process). */
void qms_curve_shutdown (void);
bool qms_curve_on (void);

/*  Before sock binds (or connects to) endpoint: on a tcp:// endpoint with
    CURVE on, make it a CURVE server (client).  0, or -1 when the keys
    cannot be applied. */
int qms_curve_server (zsock_t *sock, const char *endpoint);
int qms_curve_client (zsock_t *sock, const char *endpoint);

/*  zsock_bind / zsock_connect with the above first: 0, or -1. */
int qms_curve_bind (zsock_t *sock, const char *endpoint);
int qms_curve_connect (zsock_t *sock, const char *endpoint);

void qms_curve_test (bool verbose);

#ifdef __cplusplus
}
#endif

#endif
