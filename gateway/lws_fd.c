/*  lws_fd.c - descriptors of our own in a libwebsockets loop (lws_fd.h). */
#include "lws_fd.h"

#include <assert.h>
#include <czmq.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

struct lws *
lws_fd_adopt (struct lws_vhost *vh, int fd, const char *protocol)
{
    lws_sock_file_fd_type desc;
    desc.filefd = fd;
    return lws_adopt_descriptor_vhost (vh, LWS_ADOPT_RAW_FILE_DESC, desc, protocol, NULL);
}

struct lws *
lws_fd_adopt_zmq (struct lws_vhost *vh, void *zmq_socket, const char *protocol)
{
    int fd;
    size_t size = sizeof fd;
    if (zmq_getsockopt (zmq_socket, ZMQ_FD, &fd, &size))
        return NULL;
    int copy = dup (fd);
    if (copy < 0)
        return NULL;
    struct lws *wsi = lws_fd_adopt (vh, copy, protocol);
    if (!wsi)
        close (copy);
    return wsi;
}

/* ------------------------------------------------------------------------ */
/*  Selftest: a PAIR socket's descriptor in a loop fires for a message. */

static int s_fired;

static int
t_callback (struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    (void) wsi; (void) user; (void) in; (void) len;
    if (reason == LWS_CALLBACK_RAW_RX_FILE)
        s_fired++;
    return 0;
}

void
lws_fd_test (bool verbose)
{
    if (verbose)
        printf (" * lws_fd: ");
    static const struct lws_protocols protocols [] = {
        { "t-raw", t_callback, 0, 0, 0, NULL, 0 }, { NULL, NULL, 0, 0, 0, NULL, 0 }
    };
    struct lws_context_creation_info info;
    memset (&info, 0, sizeof info);
    info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
    info.gid = info.uid = -1;
    lws_set_log_level (LLL_ERR, NULL);
    struct lws_context *ctx = lws_create_context (&info);
    assert (ctx);
    memset (&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN_SERVER;
    info.protocols = protocols;
    struct lws_vhost *vh = lws_create_vhost (ctx, &info);
    assert (vh);

    zsock_t *a = zsock_new_pair ("@inproc://lws-fd-test");
    zsock_t *b = zsock_new_pair (">inproc://lws-fd-test");
    assert (a && b);
    struct lws *wsi = lws_fd_adopt_zmq (vh, zsock_resolve (b), "t-raw");
    assert (wsi);
    assert (lws_fd_adopt_zmq (vh, NULL, "t-raw") == NULL);     /* not a socket */
    /*  The descriptor only tells of what comes after the socket was found
        empty: an owner drains before it waits (here: nothing to take). */
    assert (zmq_recv (zsock_resolve (b), NULL, 0, ZMQ_DONTWAIT) == -1 && zmq_errno () == EAGAIN);
    zstr_send (a, "hello");
    for (int i = 0; i < 100 && !s_fired; i++)
        lws_service (ctx, 0);
    assert (s_fired > 0);
    char *got = zstr_recv (b);
    assert (got && streq (got, "hello"));
    zstr_free (&got);

    lws_context_destroy (ctx);      /* closes the duplicate, not libzmq's own */
    zstr_send (a, "still");
    got = zstr_recv (b);
    assert (got && streq (got, "still"));
    zstr_free (&got);
    zsock_destroy (&b);
    zsock_destroy (&a);
    if (verbose)
        printf ("OK\n");
}
