/*  lws_fd.c - descriptors of our own in a libwebsockets loop (lws_fd.h). */
#include "lws_fd.h"

#include <assert.h>
#include <czmq.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

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

/*  On lws's own poll() loop, or (uv) on a libuv loop of ours as the
    gateway runs it. */
static void
t_loop (bool uv)
{
    static const struct lws_protocols protocols [] = {
        { "t-raw", t_callback, 0, 0, 0, NULL, 0 }, { NULL, NULL, 0, 0, 0, NULL, 0 }
    };
    uv_loop_t loop;
    void *foreign [1] = { &loop };
    struct lws_context_creation_info info;
    memset (&info, 0, sizeof info);
    info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
    info.gid = info.uid = -1;
    struct lws_context *ctx;
    info.pcontext = &ctx;
    if (uv) {
        assert (uv_loop_init (&loop) == 0);
        info.options |= LWS_SERVER_OPTION_LIBUV;
        info.foreign_loops = foreign;
    }
    lws_set_log_level (LLL_ERR, NULL);
    ctx = lws_create_context (&info);
    assert (ctx);
    memset (&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN_SERVER;
    info.protocols = protocols;
    struct lws_vhost *vh = lws_create_vhost (ctx, &info);
    assert (vh);

    /*  One endpoint per loop: libzmq's reaper thread unbinds a closed
        socket's inproc endpoint later, so the first loop's may still be
        bound when the second binds. */
    char endpoint [32];
    snprintf (endpoint, sizeof endpoint, "inproc://lws-fd-test-%d", (int) uv);
    zsock_t *a = zsock_new (ZMQ_PAIR);
    zsock_t *b = zsock_new (ZMQ_PAIR);
    assert (a && b);
    assert (zsock_bind (a, "%s", endpoint) == 0);
    assert (zsock_connect (b, "%s", endpoint) == 0);
    struct lws *wsi = lws_fd_adopt_zmq (vh, zsock_resolve (b), "t-raw");
    assert (wsi);
    assert (lws_fd_adopt_zmq (vh, NULL, "t-raw") == NULL);     /* not a socket */
    /*  The descriptor only tells of what comes after the socket was found
        empty: an owner drains before it waits (here: nothing to take). */
    assert (zmq_recv (zsock_resolve (b), NULL, 0, ZMQ_DONTWAIT) == -1 && zmq_errno () == EAGAIN);
    /*  Each message wakes the loop: a round of five, each sent only after
        the last one was taken. */
    s_fired = 0;
    for (int round = 0; round < 5; round++) {
        int fired = s_fired;
        zstr_sendf (a, "hello %d", round);
        for (int i = 0; i < 1000 && s_fired == fired; i++) {
            if (uv)
                uv_run (&loop, UV_RUN_ONCE);
            else
                lws_service (ctx, 0);
        }
        assert (s_fired > fired);
        char *got = zstr_recv (b);
        char want [16];
        snprintf (want, sizeof want, "hello %d", round);
        assert (got && streq (got, want));
        zstr_free (&got);
        assert (zmq_recv (zsock_resolve (b), NULL, 0, ZMQ_DONTWAIT) == -1);      /* drained */
    }

    lws_context_destroy (ctx);      /* closes the duplicate, not libzmq's own */
    if (uv) {
        /*  On a foreign loop lws finishes through it, and when told again. */
        for (int i = 0; i < 1000 && uv_run (&loop, UV_RUN_NOWAIT); i++)
            ;
        if (ctx)
            lws_context_destroy (ctx);
        for (int i = 0; i < 1000 && uv_run (&loop, UV_RUN_NOWAIT); i++)
            ;
        assert (uv_loop_close (&loop) == 0);
    }
    zstr_send (a, "still");
    char *got = zstr_recv (b);
    assert (got && streq (got, "still"));
    zstr_free (&got);
    zsock_destroy (&b);
    zsock_destroy (&a);
}

void
lws_fd_test (bool verbose)
{
    if (verbose)
        printf (" * lws_fd: ");
    t_loop (false);
    t_loop (true);
    if (verbose)
        printf ("OK\n");
}
