/*  lws_fd.h - descriptors of our own in a libwebsockets loop.

    lws polls what it adopts as a "raw file" and calls the protocol named
    here with LWS_CALLBACK_RAW_RX_FILE when it is readable: our listening
    sockets, a signalfd, and the notification descriptor of a ZeroMQ
    socket (ZMQ_FD).  ZMQ_FD signals edges only: whoever owns the socket
    drains it after every send as well as when it fires.
*/
#ifndef LWS_FD_H_INCLUDED
#define LWS_FD_H_INCLUDED

#include <libwebsockets.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/*  fd, in vh's loop under protocol; lws closes it with the wsi.  NULL
    (fd still ours) when lws will not take it. */
struct lws *lws_fd_adopt (struct lws_vhost *vh, int fd, const char *protocol);

/*  A ZeroMQ socket's ZMQ_FD, in vh's loop under protocol.  That
    descriptor belongs to libzmq and lws closes what it adopts, so lws is
    given a duplicate.  NULL when it cannot be done. */
struct lws *lws_fd_adopt_zmq (struct lws_vhost *vh, void *zmq_socket, const char *protocol);

void lws_fd_test (bool verbose);

#ifdef __cplusplus
}
#endif

#endif
