/*  gateway.c - the libwebsockets gateway (see gateway.h): the actor.

    The context and its loop, start and stop, the 100 ms tick, and the lws
    protocol callbacks that hand each event to the file that deals with it
    (gw_internal.h lists them).  One protocol callback serves every vhost:
    HTTP requests go to gw_http.c, WebSocket frames to gw_dispatch.c (and
    proto), and what needs an actor becomes a record in a per-destination
    batch that is flushed once per service pass.  Answers come back as
    records on the ZeroMQ sockets, whose file descriptors live in this same
    loop.

    Writes: each chat connection has one output queue of WebSocket frames
    that we frame ourselves (outq.h, gw_conn.c); on
    LWS_CALLBACK_SERVER_WRITEABLE what it holds leaves in one write, so a
    connection that receives many events costs one syscall per pass, not
    one per event: measured on this machine kind, a relay that wrote each
    frame with its own lws_write carried a third to a quarter of what one
    write of all queued frames per pass carries (docs/BENCHMARKS.md).
    permessage-deflate is therefore never offered (our frames carry no
    RSV1).
*/
#define _GNU_SOURCE
#include "gw_internal.h"
#include "lws_fd.h"
#include "qms_curve.h"

#include <assert.h>
#include <malloc.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>
#include <zmq.h>

/* ------------------------------------------------------------------------ */
/*  Logging from lws: errors are worth a line; the rest only when debugging. */

static void
lws_log_emit (int level, const char *line)
{
    size_t len = strlen (line);
    while (len && (line [len - 1] == '\n' || line [len - 1] == ' '))
        len--;
    if (level & LLL_ERR)
        qms_warn ("lws", "msg=\"%.*s\"", (int) len, line);
    else
        qms_debug ("lws", "msg=\"%.*s\"", (int) len, line);
}

void
gateway_lws_logging (void)
{
    lws_set_log_level (LLL_ERR | LLL_WARN | (qms_log_get_level () >= QMS_LOG_DEBUG ? LLL_NOTICE : 0),
                       lws_log_emit);
}

static void
sul_tick_cb (lws_sorted_usec_list_t *sul)
{
    gateway_t *self = lws_container_of (sul, gateway_t, sul_tick);
    PASS_BEGIN (self);
    /*  A safety net under the ZMQ_FD edge signalling: cheap when idle. */
    gw_drain_zmq (self);
    uint64_t mono = qms_mono_ms ();
    self->tick_ms = mono;
    if (self->cfg->ping_interval > 0 || self->cfg->write_timeout > 0) {
        bool waiting = mono >= self->next_wait_scan;
        gw_conn_scan (self, mono, waiting);
        if (waiting)
            self->next_wait_scan = mono + 1000;
    }
    if (mono >= self->next_heartbeat && !self->stopping) {
        gw_heartbeat (self);
        self->next_heartbeat = mono + HEARTBEAT_MS;
    }
    gw_wait_expire (self);
    gw_stats_expire (self);
    if (self->shaped.len)
        gw_input_resume (self);
    if (self->stopping && self->open_count == 0)
        self->interrupted = true;       /* everyone has gone: no need to wait */
    if (mono >= self->next_trim) {
        /*  Output buffers of busy connections come and go; give the memory
            they leave behind back to the system now and then, so the
            process shrinks after a burst instead of keeping its peak. */
        malloc_trim (0);
        self->next_trim = mono + 30000;
    }
    if (self->to_router.len || self->to_auth.len)
        gw_schedule_flush (self);
    lws_sul_schedule (self->ctx, 0, &self->sul_tick, sul_tick_cb, 100 * LWS_US_PER_MS);
}

static void
sul_stop_cb (lws_sorted_usec_list_t *sul)
{
    gateway_t *self = lws_container_of (sul, gateway_t, sul_stop);
    self->interrupted = true;
}

static void
begin_stop (gateway_t *self, int signo)
{
    if (self->stopping)
        return;
    self->stopping = true;
    qms_info (ACTOR, "event=stopping signal=%d connections=%zu", signo, self->open_count);
    for (size_t slot = 0; slot < self->max_slots; slot++)
        if (self->slots [slot])
            gw_conn_close (self->slots [slot], CLOSE_GOING_AWAY, "Server shutting down");
    /*  Queues flush and close frames leave; the loop ends when every
        connection has closed, or after STOP_GRACE_MS (at most half the
        drain timeout: the rest is the actors' to stop in, and the watchdog
        ends the process at the drain timeout whatever happens). */
    lws_usec_t grace = (lws_usec_t) self->cfg->drain_timeout * LWS_US_PER_SEC / 2;
    if (grace > STOP_GRACE_MS * LWS_US_PER_MS)
        grace = STOP_GRACE_MS * LWS_US_PER_MS;
    lws_sul_schedule (self->ctx, 0, &self->sul_stop, sul_stop_cb, grace);
}

/* ------------------------------------------------------------------------ */

static int
callback_qms (struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    gateway_t *self = (gateway_t *) lws_context_user (lws_get_context (wsi));
    conn_t *conn = (conn_t *) user;
    PASS_BEGIN (self);

    switch (reason) {
        case LWS_CALLBACK_EVENT_WAIT_CANCELLED: {
            /*  gateway_stop, from another thread (sent to every vhost's
                protocols: begin_stop runs once). */
            int signo = atomic_load (&self->stop_signal);
            if (signo)
                begin_stop (self, signo > 0 ? signo : 0);
            break;
        }
        case LWS_CALLBACK_HTTP:
            conn->wsi = wsi;
            return gw_handle_http (self, wsi, conn, (const char *) in);
        case LWS_CALLBACK_HTTP_WRITEABLE:
            return gw_http_writeable (self, wsi, conn);
        case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
        case LWS_CALLBACK_CLOSED_HTTP:
            if (conn && conn->stats_slot) {
                self->stats [conn->stats_slot - 1].conn = NULL;     /* gone before its answer */
                conn->stats_slot = 0;
            }
            if (conn && conn->resp) {
                http_response_free (conn->resp);
                free (conn->resp);
                conn->resp = NULL;
            }
            if (conn)
                outq_clear (&conn->out);
            break;

        case LWS_CALLBACK_WSI_DESTROY:
            gw_listen_forget (wsi);
            break;
        case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
            return gw_filter_handshake (self, wsi);
        case LWS_CALLBACK_ESTABLISHED:
            memset (conn, 0, sizeof *conn);
            conn->wsi = wsi;
            outq_init (&conn->out, &self->out_acct);
            if (!gw_peer_enter (self, conn)) {
                const char *why = "Too many connections from your address";
                lws_close_reason (wsi, LWS_CLOSE_STATUS_POLICY_VIOLATION, (unsigned char *) why, strlen (why));
                return -1;
            }
            if (!gw_conn_attach (self, conn)) {
                gw_peer_leave (self, conn);
                return -1;
            }
            self->m.opened++;
            qms_debug (ACTOR, "event=open handle=%llu", (unsigned long long) conn->handle);
            break;
        case LWS_CALLBACK_RECEIVE:
            if (!conn->handle)
                return -1;
            gw_conn_heard (self, conn);
            gw_input_spend (self, conn, len);
            return gw_handle_receive (self, conn, (const uint8_t *) in, len);
        case LWS_CALLBACK_RECEIVE_PONG:
            gw_conn_heard (self, conn);
            gw_input_spend (self, conn, len);
            break;
        case LWS_CALLBACK_SERVER_WRITEABLE:
            if (!conn->handle)
                return 0;
            return gw_conn_writeable (self, conn);
        case LWS_CALLBACK_CLOSED:
            if (conn->handle)
                self->m.closes [conn->close_code ? gw_close_index (conn->close_code) : 5]++;
            if (conn->handle) {
                qms_rec_t rec = { .type = QMS_RT_CLOSED, .conn = conn->handle };
                gw_to_router (self, &rec);
                qms_debug (ACTOR, "event=close handle=%llu", (unsigned long long) conn->handle);
                gw_conn_detach (self, conn);
            }
            gw_peer_leave (self, conn);
            gw_conn_release (conn);
            break;
        default:
            break;
    }
    return 0;
}

static int
callback_raw (struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    gateway_t *self = (gateway_t *) lws_context_user (lws_get_context (wsi));
    if (reason != LWS_CALLBACK_RAW_RX_FILE)
        return 0;
    PASS_BEGIN (self);
    if (gw_listen_accept (self, wsi))
        return 0;
    if (wsi == self->signal_wsi) {
        struct signalfd_siginfo info;
        while (read (self->signal_fd, &info, sizeof info) == (ssize_t) sizeof info) {
            if (info.ssi_signo == SIGHUP)
                gw_reload (self);
        }
        return 0;
    }
    gw_drain_peer (self, wsi == self->router_wsi ? PEER_ROUTER : wsi == self->auth_wsi ? PEER_AUTH : PEER_STORE);
    return 0;
}

/*  Before the loop waits: what the pass queued leaves; and the loop stops
    here when told to, so that a stop set by a timer does not wait for the
    next wake-up. */
static void
uv_before_sleep_cb (uv_prepare_t *handle)
{
    gateway_t *self = (gateway_t *) handle->data;
    if (self->to_write.len)
        gw_write_pending (self);
    if (self->interrupted)
        uv_stop (&self->uv);
}

const struct lws_protocols gw_protocols [] = {
    /*  rx_buffer_size is allocated per connection (RX_BUFFER_BYTES, or
        --rx-buffer in the gateway's copy): longer messages arrive in pieces
        that handle_receive joins. */
    { "qms", callback_qms, sizeof (conn_t), RX_BUFFER_BYTES, 0, NULL, 0 },
    { "qms-raw", callback_raw, 0, 0, 0, NULL, 0 },
    { NULL, NULL, 0, 0, 0, NULL, 0 }
};

_Static_assert (sizeof gw_protocols == sizeof ((gateway_t *) 0)->protocols, "gateway_t.protocols holds gw_protocols");

gateway_t *
gateway_new (const qms_config_t *cfg, bool watch_hup)
{
    gateway_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->cfg = cfg;
    self->signal_fd = -1;

    if (qms_map_init (&self->users_by_id, gw_match_user)) {
        free (self);
        return NULL;
    }
    if (qms_map_init (&self->peers, gw_match_peer)) {
        qms_map_free (&self->users_by_id);
        free (self);
        return NULL;
    }
    qms_random (&self->users_seed, sizeof self->users_seed);
    self->max_slots = (size_t) cfg->max_connections;
    self->slots = calloc (self->max_slots, sizeof *self->slots);
    self->gens = calloc (self->max_slots, sizeof *self->gens);
    self->free_slots = malloc (self->max_slots * sizeof *self->free_slots);
    if (!self->slots || !self->gens || !self->free_slots)
        goto fail;
    /*  Hand out low slots first: the free list is a stack. */
    for (size_t i = 0; i < self->max_slots; i++)
        self->free_slots [i] = (uint32_t) (self->max_slots - 1 - i);
    self->free_count = self->max_slots;

    http_options_t options = {
        .html_dir = cfg->html_dir, .server_address = cfg->server_ip, .chat_port = cfg->chat_port,
        .chat_secure = qms_config_wss (cfg), .redirect_to_https = false, .https_port = cfg->https_port,
        .hsts = qms_config_https (cfg), .allow_inline = cfg->allow_inline_scripts
    };
    self->site = http_site_new (&options);
    if (!self->site)
        qms_warn (ACTOR, "event=no_web_ui html_dir=\"%s\" reason=\"not a readable folder: HTTP answers 404\"",
                  cfg->html_dir);
    if (qms_config_https (cfg)) {
        options.redirect_to_https = true;
        self->site_redirect = http_site_new (&options);
    }

    memcpy (self->protocols, gw_protocols, sizeof self->protocols);
    self->protocols [0].rx_buffer_size = cfg->rx_buffer_bytes ? cfg->rx_buffer_bytes : RX_BUFFER_BYTES;
    gateway_lws_logging ();
    struct lws_context_creation_info info;
    memset (&info, 0, sizeof info);
    info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS | LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info.user = self;
    info.timeout_secs = 10;             /* handshakes that stall (slowloris) */
    info.max_http_header_data = 4096;
    info.fd_limit_per_thread = 0;
    info.gid = -1;
    info.uid = -1;
    info.pcontext = &self->ctx;         /* NULL again once lws has let go of it */
    /*  lws's own loop calls poll() over every open descriptor at each
        wake-up; on libuv (epoll) a wake-up costs what is ready.  lws
        drives a loop of ours through its libuv plugin (Debian:
        libwebsockets-evlib-uv); without it, poll() it is. */
    void *foreign [1] = { &self->uv };
    if (!cfg->poll_loop && uv_loop_init (&self->uv) == 0) {
        self->uv_on = true;
        info.options |= LWS_SERVER_OPTION_LIBUV;
        info.foreign_loops = foreign;
    }
    self->ctx = lws_create_context (&info);
    if (!self->ctx && self->uv_on) {
        qms_warn (ACTOR, "event=event_loop loop=poll reason=\"libwebsockets could not load its libuv plugin "
                  "(package libwebsockets-evlib-uv)\"");
        uv_loop_close (&self->uv);
        self->uv_on = false;
        info.options &= ~(uint64_t) LWS_SERVER_OPTION_LIBUV;
        info.foreign_loops = NULL;
        self->ctx = lws_create_context (&info);
    }
    if (!self->ctx) {
        qms_error (ACTOR, "event=start_failed reason=\"cannot create the libwebsockets context\"");
        goto fail;
    }
    self->vh_chat = gw_create_vhost (self, "chat", cfg->chat_port, qms_config_wss (cfg), VH_CHAT);
    if (!self->vh_chat)
        goto fail;
    self->vh_http = gw_create_vhost (self, "http", cfg->http_port, false, VH_HTTP);
    if (!self->vh_http)
        goto fail;
    if (qms_config_https (cfg)) {
        self->vh_https = gw_create_vhost (self, "https", cfg->https_port, true, VH_HTTPS);
        if (!self->vh_https)
            goto fail;
    }
    if (cfg->metrics_port) {
        self->vh_metrics = gw_create_vhost (self, "metrics", cfg->metrics_port, false, VH_METRICS);
        if (!self->vh_metrics)
            goto fail;
    }

    /*  Our ZeroMQ sockets, inside the lws loop. */
    self->router = zsock_new (ZMQ_DEALER);
    self->auth = zsock_new (ZMQ_DEALER);
    if (!self->router || !self->auth)
        goto fail;
    qms_socket_tune (self->router);
    qms_socket_tune (self->auth);
    if (qms_curve_connect (self->router, cfg->router_endpoint)
    ||  qms_curve_connect (self->auth, cfg->auth_endpoint)) {
        qms_error (ACTOR, "event=start_failed reason=\"cannot connect to the actors\"");
        goto fail;
    }
    self->router_raw = zsock_resolve (self->router);
    self->auth_raw = zsock_resolve (self->auth);
    /*  The store is asked only for its figures (and so, its liveness). */
    self->store = zsock_new (ZMQ_DEALER);
    if (self->store) {
        qms_socket_tune (self->store);
        zsock_set_sndhwm (self->store, 100);
        if (qms_curve_connect (self->store, cfg->store_endpoint) == 0) {
            self->store_raw = zsock_resolve (self->store);
            self->store_wsi = lws_fd_adopt_zmq (self->vh_chat, self->store_raw, "qms-raw");
        }
    }
    self->router_wsi = lws_fd_adopt_zmq (self->vh_chat, self->router_raw, "qms-raw");
    self->auth_wsi = lws_fd_adopt_zmq (self->vh_chat, self->auth_raw, "qms-raw");
    if (!self->router_wsi || !self->auth_wsi) {
        qms_error (ACTOR, "event=start_failed reason=\"cannot watch the ZeroMQ sockets\"");
        goto fail;
    }
    /*  Unique in a cluster, also in containers where every gateway is pid 1. */
    char host [40] = "";
    gethostname (host, sizeof host - 1);
    snprintf (self->name, sizeof self->name, "gateway@%s/%d", host, (int) getpid ());
    qms_random (&self->nonce, sizeof self->nonce);
    /*  Optimistic at start: the actors get PEER_TIMEOUT_MS to answer. */
    self->router_seen = self->auth_seen = qms_mono_ms ();
    gw_heartbeat (self);
    self->next_heartbeat = qms_mono_ms () + HEARTBEAT_MS;

    if (watch_hup) {
        sigset_t set;
        sigemptyset (&set);
        sigaddset (&set, SIGHUP);       /* reload (blocked by main, read here) */
        self->signal_fd = signalfd (-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
        if (self->signal_fd < 0 || !(self->signal_wsi = lws_fd_adopt (self->vh_chat, self->signal_fd, "qms-raw"))) {
            qms_error (ACTOR, "event=start_failed reason=\"cannot watch signals\"");
            goto fail;
        }
    }
    if (self->uv_on) {
        uv_prepare_init (&self->uv, &self->uv_before_sleep);
        self->uv_before_sleep.data = self;
        uv_prepare_start (&self->uv_before_sleep, uv_before_sleep_cb);
    }
    qms_info (ACTOR, "event=event_loop loop=%s", self->uv_on ? "libuv" : "poll");
    self->loop.name = "gateway";
    self->tick_ms = qms_mono_ms ();    /* the clock of out_since and heard_ms, until the first tick */
    unsigned long calls = lws_sorted_calls;
    lws_sul_schedule (self->ctx, 0, &self->sul_tick, sul_tick_cb, 100 * LWS_US_PER_MS);
    /*  Timeouts are inserted from the tail (lws_sorted.c), unless this
        libwebsockets binds its own calls internally. */
    qms_info (ACTOR, "event=lws_timers insertion=%s", lws_sorted_calls > calls ? "tail_first" : "library");
    return self;

fail:
    gateway_destroy (&self);
    return NULL;
}

void
gateway_stop (gateway_t *self, int signo)
{
    atomic_store (&self->stop_signal, signo ? signo : -1);
    lws_cancel_service (self->ctx);
}

int
gateway_run (gateway_t *self)
{
    qms_watchdog_watch (&self->loop);
    while (!self->interrupted) {
        self->pass_began_us = 0;
        qms_loop_enter (&self->loop);
        /*  One pass: timers, what is ready, then a wait (libuv: the
            before-sleep check first; it stops the loop when told to). */
        int rc = self->uv_on ? (uv_run (&self->uv, UV_RUN_ONCE), 0) : lws_service (self->ctx, 0);
        if (!self->uv_on && self->to_write.len)
            gw_write_pending (self);
        qms_loop_leave (&self->loop);
        if (self->pass_began_us) {
            self->pass_last_us = qms_mono_us () - self->pass_began_us;
            qms_hist_observe (&self->pass_ms, (double) self->pass_last_us / 1000.0);
        }
        if (rc < 0)
            break;
    }
    qms_watchdog_unwatch (&self->loop);
    qms_info (ACTOR, "event=stopped");
    return 0;
}

void
gateway_destroy (gateway_t **self_p)
{
    gateway_t *self = *self_p;
    if (!self)
        return;
    if (self->ctx) {
        lws_sul_cancel (&self->sul_tick);
        lws_sul_cancel (&self->sul_flush);
        lws_sul_cancel (&self->sul_stop);
        lws_sul_cancel (&self->sul_presence);
        gw_proxy_waits_close (self);
        lws_context_destroy (self->ctx);    /* closes connections and adopted fds */
        if (self->uv_on) {
            /*  On a loop of ours, lws closes its handles through it, and
                finishes when told again after they have closed. */
            if (uv_is_active ((uv_handle_t *) &self->uv_before_sleep))
                uv_prepare_stop (&self->uv_before_sleep);
            for (int i = 0; i < 1000 && uv_run (&self->uv, UV_RUN_NOWAIT); i++)
                ;
            if (self->ctx)
                lws_context_destroy (self->ctx);
            for (int i = 0; i < 1000 && self->ctx && uv_run (&self->uv, UV_RUN_NOWAIT); i++)
                ;
            if (self->ctx)
                lws_context_destroy (self->ctx);
        }
        self->ctx = NULL;
    }
    else
    if (self->signal_fd >= 0)
        close (self->signal_fd);
    if (self->uv_on) {
        if (self->uv_before_sleep.data)
            uv_close ((uv_handle_t *) &self->uv_before_sleep, NULL);
        for (int i = 0; i < 1000 && uv_run (&self->uv, UV_RUN_NOWAIT); i++)
            ;
        if (uv_loop_close (&self->uv))
            qms_warn (ACTOR, "event=event_loop_left reason=\"handles still open at exit\"");
    }
    if (self->router_raw && self->to_router.len)
        qms_batch_send (self->router_raw, NULL, 0, &self->to_router);
    zsock_destroy (&self->router);
    zsock_destroy (&self->auth);
    zsock_destroy (&self->store);
    for (int i = 0; i < MAX_STATS_WAIT; i++)
        qms_buf_free (&self->stats [i].body);
    qms_buf_free (&self->to_store);
    http_site_destroy (&self->site);
    http_site_destroy (&self->site_redirect);
    qms_buf_free (&self->to_router);
    qms_buf_free (&self->to_auth);
    qms_buf_free (&self->scratch);
    gw_users_clear (self);
    outq_shared_unref (&self->list_frame);
    qms_buf_free (&self->list_gone);
    qms_buf_free (&self->shaped);
    qms_buf_free (&self->to_write);
    qms_map_free (&self->users_by_id);
    qms_map_free (&self->peers);       /* every connection has left it by now */
    qms_buf_free (&self->changes);
    qms_buf_free (&self->glist.json);
    free (self->slots);
    free (self->gens);
    free (self->free_slots);
    free (self->waits);
    free (self);
    *self_p = NULL;
}

/* ------------------------------------------------------------------------ */

void
gateway_test (bool verbose)
{
    proto_test (verbose);
    if (verbose)
        printf (" * gateway: ");
    /*  Every vhost serves these: the chat protocol sized for a conn_t,
        and the raw one for our own descriptors. */
    assert (strcmp (gw_protocols [0].name, "qms") == 0 && gw_protocols [0].callback);
    assert (gw_protocols [0].per_session_data_size == sizeof (conn_t));
    assert (gw_protocols [0].rx_buffer_size == RX_BUFFER_BYTES && RX_BUFFER_BYTES >= 128);
    assert (strcmp (gw_protocols [1].name, "qms-raw") == 0 && gw_protocols [1].callback);
    assert (gw_protocols [1].per_session_data_size == 0);
    assert (gw_protocols [2].name == NULL);
    if (verbose)
        printf ("OK\n");
}
