/*  gw_ops.c - the gateway's operations endpoints: /healthz, /readyz and
    /metrics (docs/OPERATIONS.md).

    /healthz and /readyz answer at once from what the gateway knows (its
    connections, and whether it hears from each actor); /metrics renders
    the gateway's own figures as Prometheus text, asks every actor for its
    own (STATS_GET) and answers once they have, or after STATS_TIMEOUT_MS.
*/
#define _GNU_SOURCE
#include "gw_internal.h"
#include "qms_ops.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>

/*  Our own figures, as Prometheus text. */
static void
gateway_metrics (gateway_t *self, qms_buf_t *out)
{
    char labels [96];
    qms_metrics_head (out, "qms_build_info", "gauge", "Version of the server.");
    qms_metrics_value (out, "qms_build_info", "version=\"" QMS_VERSION "\"", 1);
    qms_metrics_head (out, "qms_connections_open", "gauge", "Open WebSocket connections.");
    qms_metrics_value (out, "qms_connections_open", "actor=\"gateway\"", (double) self->open_count);
    qms_metrics_head (out, "qms_connections_opened_total", "counter", "WebSocket connections accepted.");
    qms_metrics_value (out, "qms_connections_opened_total", "actor=\"gateway\"", (double) self->m.opened);
    qms_metrics_head (out, "qms_requests_total", "counter", "Client requests, by action.");
    for (int i = 0; qms_request_names [i].name; i++) {
        snprintf (labels, sizeof labels, "actor=\"gateway\",action=\"%s\"", qms_request_names [i].name);
        qms_metrics_value (out, "qms_requests_total", labels, (double) self->m.requests [qms_request_names [i].value]);
    }
    qms_metrics_head (out, "qms_request_errors_total", "counter", "Requests answered with an error, by kind.");
    qms_metrics_value (out, "qms_request_errors_total", "actor=\"gateway\",kind=\"malformed\"", (double) self->m.malformed);
    qms_metrics_value (out, "qms_request_errors_total", "actor=\"gateway\",kind=\"invalid_user\"", (double) self->m.invalid_user);
    qms_metrics_head (out, "qms_bad_batches_total", "counter", "Batches from the actors dropped whole (malformed, or records not for a gateway).");
    qms_metrics_value (out, "qms_bad_batches_total", "actor=\"gateway\"", (double) self->m.bad_batches);
    qms_metrics_head (out, "qms_rate_limited_total", "counter", "Requests refused by the per-connection rate limit.");
    qms_metrics_value (out, "qms_rate_limited_total", "actor=\"gateway\"", (double) self->m.rate_limited);
    qms_metrics_head (out, "qms_proxy_headers_refused_total", "counter", "Connections from a --trusted-proxy closed for a bad or missing PROXY header (--proxy-protocol).");
    qms_metrics_value (out, "qms_proxy_headers_refused_total", "actor=\"gateway\"", (double) self->m.proxy_bad);
    qms_metrics_head (out, "qms_pings_sent_total", "counter", "Pings sent to silent WebSocket connections (--ping-interval).");
    qms_metrics_value (out, "qms_pings_sent_total", "actor=\"gateway\"", (double) self->m.pings);
    qms_metrics_head (out, "qms_idle_closed_total", "counter", "WebSocket connections dropped for answering no ping.");
    qms_metrics_value (out, "qms_idle_closed_total", "actor=\"gateway\"", (double) self->m.idle_closed);
    qms_metrics_head (out, "qms_logins_total", "counter", "Logins and registrations, by result.");
    qms_metrics_value (out, "qms_logins_total", "actor=\"gateway\",result=\"ok\"", (double) self->m.logins_ok);
    qms_metrics_value (out, "qms_logins_total", "actor=\"gateway\",result=\"failed\"", (double) self->m.logins_failed);
    qms_metrics_head (out, "qms_events_total", "counter", "Events written to clients, by kind.");
    qms_metrics_value (out, "qms_events_total", "actor=\"gateway\",kind=\"message\"", (double) self->m.events_message);
    qms_metrics_value (out, "qms_events_total", "actor=\"gateway\",kind=\"stored_message\"", (double) self->m.events_stored);
    qms_metrics_value (out, "qms_events_total", "actor=\"gateway\",kind=\"group_message\"", (double) self->m.events_group);
    qms_metrics_value (out, "qms_events_total", "actor=\"gateway\",kind=\"ack\"", (double) self->m.acks);
    qms_metrics_head (out, "qms_bytes_received_total", "counter", "WebSocket payload bytes received.");
    qms_metrics_value (out, "qms_bytes_received_total", "actor=\"gateway\"", (double) self->m.bytes_in);
    qms_metrics_head (out, "qms_bytes_sent_total", "counter", "WebSocket bytes written (frames included).");
    qms_metrics_value (out, "qms_bytes_sent_total", "actor=\"gateway\"", (double) self->m.bytes_out);
    static const char *codes [6] = { "1001", "1007", "1008", "1009", "4001", "other" };
    qms_metrics_head (out, "qms_closes_total", "counter", "WebSocket connections closed, by close code (other: by the peer or the network).");
    for (int i = 0; i < 6; i++) {
        snprintf (labels, sizeof labels, "actor=\"gateway\",code=\"%s\"", codes [i]);
        qms_metrics_value (out, "qms_closes_total", labels, (double) self->m.closes [i]);
    }
    /*  Queues: the largest walked at scrape time only. */
    size_t queued_max = 0;
    for (size_t slot = 0; slot < self->max_slots; slot++) {
        conn_t *conn = self->slots [slot];
        size_t q = conn ? outq_pending (&conn->out) : 0;
        if (q > queued_max)
            queued_max = q;
    }
    qms_metrics_head (out, "qms_queue_bytes", "gauge",
                      "Output waiting for clients: our own bytes in all, shared user lists (counted once), "
                      "the most one connection waits for, the most one connection ever had queued "
                      "(shared lists aside), and the --output-budget.");
    qms_metrics_value (out, "qms_queue_bytes", "actor=\"gateway\",of=\"all\"", (double) self->out_acct.owned);
    qms_metrics_value (out, "qms_queue_bytes", "actor=\"gateway\",of=\"shared\"", (double) self->out_acct.shared);
    qms_metrics_value (out, "qms_queue_bytes", "actor=\"gateway\",of=\"max\"", (double) queued_max);
    qms_metrics_value (out, "qms_queue_bytes", "actor=\"gateway\",of=\"peak\"", (double) self->m.out_peak);
    qms_metrics_value (out, "qms_queue_bytes", "actor=\"gateway\",of=\"budget\"",
                       (double) self->cfg->output_budget_bytes);
    qms_metrics_head (out, "qms_shared_buffers", "gauge", "Encoded user lists and changes still referenced by a queue.");
    qms_metrics_value (out, "qms_shared_buffers", "actor=\"gateway\"", (double) self->out_acct.shared_count);
    qms_metrics_head (out, "qms_slow_consumers_closed_total", "counter",
                      "Connections closed 1008 \"Slow consumer\", by the limit they hit.");
    for (int i = 0; i < 3; i++) {
        snprintf (labels, sizeof labels, "actor=\"gateway\",reason=\"%s\"", gw_slow_names [i]);
        qms_metrics_value (out, "qms_slow_consumers_closed_total", labels, (double) self->m.slow_closed [i]);
    }
    qms_metrics_head (out, "qms_input_paused_total", "counter",
                      "Times a peer was not read until its input budget refilled (reads a second, --rate-limit-bytes).");
    qms_metrics_value (out, "qms_input_paused_total", "actor=\"gateway\"", (double) self->m.shaped);
    qms_metrics_head (out, "qms_user_list_pushes_total", "counter",
                      "Whole user lists pushed on a change: queued, replacing a newer one's unsent predecessor, "
                      "or deferred until the one on its way has been written.");
    static const char *how [3] = { "queued", "replaced", "deferred" };
    for (int i = 0; i < 3; i++) {
        snprintf (labels, sizeof labels, "actor=\"gateway\",how=\"%s\"", how [i]);
        qms_metrics_value (out, "qms_user_list_pushes_total", labels, (double) self->m.lists [i]);
    }
    qms_metrics_head (out, "qms_loop_pass_seconds", "histogram",
                      "How long each pass of the gateway's event loop worked (from its first callback).");
    qms_metrics_hist (out, "qms_loop_pass_seconds", "actor=\"gateway\"", &self->pass_ms);
    qms_metrics_head (out, "qms_loop_pass_last_seconds", "gauge", "The last pass of the gateway's event loop.");
    qms_metrics_value (out, "qms_loop_pass_last_seconds", "actor=\"gateway\"", (double) self->pass_last_us / 1e6);
    qms_metrics_head (out, "qms_loop_pass_longest_seconds", "gauge",
                      "The longest pass of the gateway's event loop since it started (waiting included).");
    qms_metrics_value (out, "qms_loop_pass_longest_seconds", "actor=\"gateway\"",
                       (double) atomic_load (&self->loop.longest_ms) / 1e3);
    qms_metrics_head (out, "qms_loop_stalls_total", "counter",
                      "Passes of the gateway's event loop that ran over 2 s (the watchdog logs each while it lasts).");
    qms_metrics_value (out, "qms_loop_stalls_total", "actor=\"gateway\"", (double) atomic_load (&self->loop.stalls));
    qms_metrics_head (out, "qms_request_duration_seconds", "histogram", "Login and authorize, from the gateway through the actors and back.");
    qms_metrics_hist (out, "qms_request_duration_seconds", "actor=\"gateway\",op=\"login\"", &self->m.login_ms);
    qms_metrics_hist (out, "qms_request_duration_seconds", "actor=\"gateway\",op=\"authorize\"", &self->m.authorize_ms);
    qms_metrics_head (out, "qms_http_responses_total", "counter", "HTTP responses, by status class.");
    for (int i = 1; i <= 5; i++) {
        snprintf (labels, sizeof labels, "actor=\"gateway\",status=\"%dxx\"", i);
        qms_metrics_value (out, "qms_http_responses_total", labels, (double) self->m.http [i]);
    }
    qms_metrics_head (out, "qms_actor_up", "gauge", "Whether this gateway hears from each actor.");
    qms_metrics_value (out, "qms_actor_up", "actor=\"router\"", gw_router_alive (self));
    qms_metrics_value (out, "qms_actor_up", "actor=\"auth\"", gw_auth_alive (self));
    qms_metrics_value (out, "qms_actor_up", "actor=\"store\"", gw_store_alive (self));
}

static void
stats_finish (gateway_t *self, int i)
{
    stats_wait_t *w = &self->stats [i];
    conn_t *conn = (conn_t *) w->conn;
    w->conn = NULL;
    if (!conn)
        return;
    conn->stats_slot = 0;
    http_response_t *resp = conn->resp;
    resp->status = 200;
    strcpy (resp->content_type, "text/plain; version=0.0.4; charset=utf-8");
    strcpy (resp->headers, "Cache-Control: no-store\r\n");
    resp->body = malloc (w->body.len ? w->body.len : 1);
    if (resp->body) {
        memcpy (resp->body, w->body.data, w->body.len);
        resp->body_len = w->body.len;
    }
    conn->resp_deferred = true;
    lws_callback_on_writable (conn->wsi);
}

void
gw_stats_answer (gateway_t *self, peer_kind_t from, const qms_rec_t *rec)
{
    if (rec->req == 0) {
        if (from == PEER_STORE) {
            self->store_seen = qms_mono_ms ();
            self->store_writable = memmem (rec->s [QMS_STATS_TEXT].ptr, rec->s [QMS_STATS_TEXT].len,
                                           "qms_store_writable 1", 20) != NULL;
        }
        return;
    }
    for (int i = 0; i < MAX_STATS_WAIT; i++) {
        stats_wait_t *w = &self->stats [i];
        if (w->conn && w->req == rec->req) {
            qms_buf_append (&w->body, rec->s [QMS_STATS_TEXT].ptr, rec->s [QMS_STATS_TEXT].len);
            if (--w->waiting == 0)
                stats_finish (self, i);
            return;
        }
    }
}

void
gw_stats_expire (gateway_t *self)
{
    uint64_t now = qms_mono_ms ();
    for (int i = 0; i < MAX_STATS_WAIT; i++)
        if (self->stats [i].conn && self->stats [i].deadline <= now) {
            char note [96];
            int n = snprintf (note, sizeof note, "# %d actor(s) did not answer within %d ms\n",
                              self->stats [i].waiting, STATS_TIMEOUT_MS);
            qms_buf_append (&self->stats [i].body, note, (size_t) n);
            stats_finish (self, i);
        }
}

/*  /metrics: our figures now, the actors' when they answer (or a second). */
static bool
stats_start (gateway_t *self, conn_t *conn)
{
    for (int i = 0; i < MAX_STATS_WAIT; i++) {
        stats_wait_t *w = &self->stats [i];
        if (w->conn)
            continue;
        w->conn = conn;
        w->req = ++self->stats_next_req;
        w->deadline = qms_mono_ms () + STATS_TIMEOUT_MS;
        w->waiting = 3;
        qms_buf_reset (&w->body);
        gateway_metrics (self, &w->body);
        conn->stats_slot = i + 1;
        qms_rec_t ask = { .type = QMS_STATS_GET, .req = w->req };
        gw_to_router (self, &ask);
        gw_to_auth (self, &ask);
        gw_to_store (self, &ask);
        return true;
    }
    return false;
}

static void
json_response (http_response_t *resp, int status, const char *json)
{
    resp->status = status;
    strcpy (resp->content_type, "application/json");
    strcpy (resp->headers, "Cache-Control: no-store\r\n");
    resp->body = strdup (json);
    resp->body_len = resp->body ? strlen (json) : 0;
}

/*  A body built in out (the role-wide shapes of qms_ops.h), handed over. */
static void
buf_response (http_response_t *resp, int status, qms_buf_t *out)
{
    qms_buf_append (out, "", 1);
    json_response (resp, status, out->data ? (const char *) out->data : "{}");
    qms_buf_free (out);
}

/*  The operator's paths; false if path is not one of them. */
bool
gw_serve_ops (gateway_t *self, conn_t *conn, const char *path, const char *method)
{
    if (strcmp (method, "GET") && strcmp (method, "HEAD"))
        return false;
    conn->resp->head_only = strcmp (method, "HEAD") == 0;
    qms_buf_t out;
    qms_buf_init (&out);
    if (strcmp (path, "/healthz") == 0) {
        int status = qms_ops_health_json (&out, "gateway", true, (long) self->open_count, NULL);
        buf_response (conn->resp, status, &out);
        return true;
    }
    if (strcmp (path, "/readyz") == 0) {
        qms_ops_check_t checks [] = {
            { "router", gw_router_alive (self) }, { "auth", gw_auth_alive (self) },
            { "store", gw_store_alive (self) }
        };
        const char *reason = self->stopping ? "stopping" : NULL;
        for (int i = 0; !reason && i < 3; i++)
            if (!checks [i].ok)
                reason = i == 0 ? "the router does not answer" : i == 1 ? "auth does not answer"
                                : "the store does not answer";
        if (!reason && !self->store_writable)
            reason = "database is read-only";
        int status = qms_ops_ready_json (&out, checks, 3, self->store_writable ? 1 : 0, NULL, reason);
        buf_response (conn->resp, status, &out);
        return true;
    }
    if (strcmp (path, "/metrics") == 0) {
        if (self->cfg->metrics_port && gw_vhost_kind (self, conn->wsi) != VH_METRICS)
            return false;       /* only on the metrics port, which need not be public */
        if (!stats_start (self, conn)) {
            json_response (conn->resp, 503, "{\"error\":\"too many /metrics requests at once\"}");
            return true;
        }
        conn->resp_deferred = true;
        return true;
    }
    return false;
}

/* ------------------------------------------------------------------------ */

void
gw_ops_test (bool verbose)
{
    if (verbose)
        printf (" * gw_ops: ");
    qms_config_t cfg;
    qms_config_defaults (&cfg);
    gateway_t self;
    memset (&self, 0, sizeof self);
    self.cfg = &cfg;
    self.max_slots = 0;
    self.open_count = 3;
    self.m.opened = 7;
    self.m.closes [2] = 4;
    self.m.slow_closed [SLOW_BUDGET] = 2;
    self.m.http [2] = 11;
    self.out_acct.owned = 1234;
    uint64_t now = qms_mono_ms ();
    self.router_seen = now;
    self.auth_seen = now - PEER_TIMEOUT_MS - 1;     /* auth silent too long */

    /*  Our figures, as Prometheus text. */
    qms_buf_t text;
    qms_buf_init (&text);
    gateway_metrics (&self, &text);
    qms_buf_append (&text, "", 1);
    const char *s = (const char *) text.data;
    assert (strstr (s, "# TYPE qms_connections_open gauge\n"));
    assert (strstr (s, "qms_connections_open{actor=\"gateway\"} 3\n"));
    assert (strstr (s, "qms_connections_opened_total{actor=\"gateway\"} 7\n"));
    assert (strstr (s, "qms_closes_total{actor=\"gateway\",code=\"1008\"} 4\n"));
    assert (strstr (s, "qms_closes_total{actor=\"gateway\",code=\"1001\"} 0\n"));
    assert (strstr (s, "qms_slow_consumers_closed_total{actor=\"gateway\",reason=\"output_budget\"} 2\n"));
    assert (strstr (s, "qms_http_responses_total{actor=\"gateway\",status=\"2xx\"} 11\n"));
    assert (strstr (s, "qms_queue_bytes{actor=\"gateway\",of=\"all\"} 1234\n"));
    assert (strstr (s, "qms_actor_up{actor=\"router\"} 1\n"));
    assert (strstr (s, "qms_actor_up{actor=\"auth\"} 0\n"));
    assert (strstr (s, "qms_actor_up{actor=\"store\"} 0\n"));
    qms_buf_free (&text);

    /*  /healthz and /readyz. */
    conn_t conn;
    memset (&conn, 0, sizeof conn);
    http_response_t resp;
    memset (&resp, 0, sizeof resp);
    conn.resp = &resp;
    assert (!gw_serve_ops (&self, &conn, "/healthz", "POST"));
    assert (!gw_serve_ops (&self, &conn, "/index.html", "GET"));
    assert (gw_serve_ops (&self, &conn, "/healthz", "GET"));
    assert (resp.status == 200 && !resp.head_only);
    assert (strcmp (resp.content_type, "application/json") == 0);
    assert (strcmp (resp.body, "{\"status\":\"ok\",\"role\":\"gateway\",\"connections\":3}") == 0);
    assert (resp.body_len == strlen (resp.body));
    http_response_free (&resp);
    memset (&resp, 0, sizeof resp);
    assert (gw_serve_ops (&self, &conn, "/readyz", "HEAD"));
    assert (resp.status == 503 && resp.head_only);
    assert (strcmp (resp.body, "{\"ready\":false,\"router\":true,\"auth\":false,\"store\":false,"
                               "\"database_writable\":false,\"reason\":\"auth does not answer\"}") == 0);
    http_response_free (&resp);

    /*  The store's answer to req 0 is its liveness and writability. */
    qms_rec_t rec = { .type = QMS_STATS, .req = 0, .s = { [QMS_STATS_TEXT] = qms_str ("qms_store_writable 1\n") } };
    gw_stats_answer (&self, PEER_ROUTER, &rec);
    assert (!self.store_seen && !self.store_writable);
    gw_stats_answer (&self, PEER_STORE, &rec);
    assert (self.store_seen && self.store_writable && gw_store_alive (&self));
    self.auth_seen = qms_mono_ms ();
    memset (&resp, 0, sizeof resp);
    assert (gw_serve_ops (&self, &conn, "/readyz", "GET"));
    assert (resp.status == 200);
    assert (strcmp (resp.body, "{\"ready\":true,\"router\":true,\"auth\":true,\"store\":true,"
                               "\"database_writable\":true}") == 0);
    http_response_free (&resp);
    self.stopping = true;                           /* stopping: not ready */
    memset (&resp, 0, sizeof resp);
    assert (gw_serve_ops (&self, &conn, "/readyz", "GET") && resp.status == 503);
    assert (strstr (resp.body, "\"reason\":\"stopping\""));
    http_response_free (&resp);
    rec.s [QMS_STATS_TEXT] = qms_str ("qms_store_writable 0\n");
    gw_stats_answer (&self, PEER_STORE, &rec);
    assert (!self.store_writable);
    if (verbose)
        printf ("OK\n");
}
