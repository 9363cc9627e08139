/*  gw_http.c - the gateway's HTTP glue: requests from lws to the http
    module (http.h) or the ops endpoints, responses queued and written by
    us, and the checks a WebSocket handshake passes (path, Origin, room).
*/
#define _GNU_SOURCE
#include "gw_internal.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <strings.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

/* ------------------------------------------------------------------------ */
/*  HTTP. */

static char *
header_dup (struct lws *wsi, enum lws_token_indexes token)
{
    int len = lws_hdr_total_length (wsi, token);
    if (len <= 0)
        return NULL;
    char *value = malloc ((size_t) len + 1);
    if (value && lws_hdr_copy (wsi, value, len + 1, token) < 0) {
        free (value);
        return NULL;
    }
    return value;
}

static const char *
http_method (struct lws *wsi)
{
    static const struct { enum lws_token_indexes token; const char *name; } methods [] = {
        { WSI_TOKEN_GET_URI, "GET" }, { WSI_TOKEN_HEAD_URI, "HEAD" },
        { WSI_TOKEN_POST_URI, "POST" }, { WSI_TOKEN_PUT_URI, "PUT" },
        { WSI_TOKEN_PATCH_URI, "PATCH" }, { WSI_TOKEN_DELETE_URI, "DELETE" },
        { WSI_TOKEN_OPTIONS_URI, "OPTIONS" }, { WSI_TOKEN_CONNECT, "CONNECT" },
    };
    for (size_t i = 0; i < sizeof methods / sizeof methods [0]; i++)
        if (lws_hdr_total_length (wsi, methods [i].token) > 0)
            return methods [i].name;
    return "UNKNOWN";
}

/*  lws hands us the path already percent-decoded; the http module decodes
    once itself, so every '%' is escaped back to keep the meaning exact.
    args: the query string, or NULL. */
static char *
uri_rebuild (const char *path, const char *args)
{
    size_t len = strlen (path), extra = 0;
    for (const char *p = path; *p; p++)
        if (*p == '%')
            extra += 2;
    char *uri = malloc (len + extra + (args ? strlen (args) + 2 : 1));
    if (uri) {
        char *o = uri;
        for (const char *p = path; *p; p++) {
            *o++ = *p;
            if (*p == '%') { *o++ = '2'; *o++ = '5'; }
        }
        if (args) {
            *o++ = '?';
            strcpy (o, args);
        }
        else
            *o = 0;
    }
    return uri;
}

static char *
rebuild_uri (struct lws *wsi, const char *path)
{
    char *args = header_dup (wsi, WSI_TOKEN_HTTP_URI_ARGS);
    char *uri = uri_rebuild (path, args);
    free (args);
    return uri;
}

/*  The response's head, formatted by lws's helpers but written by us with
    the body: lws writes nothing of ours, so it never holds a response it
    alone could flush (see gw_conn.c, "Output"). */
static int
http_queue_head (struct lws *wsi, conn_t *conn)
{
    http_response_t *resp = conn->resp;
    uint8_t buffer [4096];
    uint8_t *start = buffer, *p = start, *end = buffer + sizeof buffer - 1;
    if (lws_add_http_common_headers (wsi, (unsigned int) resp->status, resp->content_type,
                                     resp->body_len, &p, end))
        return -1;
    /*  resp->headers is "Name: value\r\n" lines. */
    for (char *line = resp->headers; *line; ) {
        char *eol = strstr (line, "\r\n");
        char *colon = strchr (line, ':');
        if (!eol || !colon || colon > eol)
            break;
        char name [64];
        size_t name_len = (size_t) (colon - line) + 1;
        if (name_len >= sizeof name)
            break;
        memcpy (name, line, name_len);
        name [name_len] = 0;
        const char *value = colon + 1;
        while (*value == ' ')
            value++;
        if (lws_add_http_header_by_name (wsi, (const unsigned char *) name,
                                         (const unsigned char *) value, (int) (eol - value), &p, end))
            return -1;
        line = eol + 2;
    }
    if (lws_add_http_header_by_name (wsi, (const unsigned char *) "referrer-policy:",
                                     (const unsigned char *) "no-referrer", 11, &p, end)
    ||  lws_finalize_http_header (wsi, &p, end))
        return -1;
    return outq_append (&conn->out, start, (size_t) (p - start));
}

/*  Whether the socket keeps room for what lws itself may write on this
    connection (an error answer to a bad next request, a 101): a keep-alive
    connection whose reader has fallen behind is closed after its response
    instead (its data still leaves). */
static bool
http_room_left (struct lws *wsi)
{
    int fd = lws_get_socket_fd (wsi), queued = 0, sndbuf = 0;
    socklen_t size = sizeof sndbuf;
    if (fd < 0 || ioctl (fd, SIOCOUTQ, &queued) || getsockopt (fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, &size))
        return false;
    return queued <= sndbuf / 4;
}

static int
http_finish (struct lws *wsi, conn_t *conn)
{
    bool close_after = conn->resp_close;
    http_response_free (conn->resp);
    free (conn->resp);
    conn->resp = NULL;
    if (close_after || !http_room_left (wsi))
        return -1;
    return lws_http_transaction_completed (wsi) ? -1 : 0;
}

/*  Write what the socket takes of the response; finish once it has all. */
static int
http_flush (gateway_t *self, struct lws *wsi, conn_t *conn)
{
    int flags;
    if (gw_conn_flush (self, conn, &flags))
        return -1;
    if (!outq_empty (&conn->out)) {
        lws_callback_on_writable (wsi);
        return 0;
    }
    return http_finish (wsi, conn);
}

/*  The response in conn->resp: head and body queued, then written. */
static int
http_respond (gateway_t *self, struct lws *wsi, conn_t *conn)
{
    http_response_t *resp = conn->resp;
    self->m.http [resp->status / 100 % 6]++;
    if (http_queue_head (wsi, conn))
        return -1;
    if (!resp->head_only && resp->body_len) {
        int rc = outq_adopt (&conn->out, resp->body, resp->body_len);
        resp->body = NULL;          /* the queue frees it */
        if (rc)
            return -1;
    }
    return http_flush (self, wsi, conn);
}

/*  lws decodes %00 into the path it hands us, which would end the C
    string early: compare with the length lws parsed.  (A %00 at the very
    end is dropped by lws's parser itself, so "/%00" reaches us as "/".) */
static bool
path_has_nul (struct lws *wsi, const char *path)
{
    static const enum lws_token_indexes uris [] = {
        WSI_TOKEN_GET_URI, WSI_TOKEN_HEAD_URI, WSI_TOKEN_POST_URI, WSI_TOKEN_PUT_URI,
        WSI_TOKEN_PATCH_URI, WSI_TOKEN_DELETE_URI, WSI_TOKEN_OPTIONS_URI
    };
    if (!path)
        return false;
    for (size_t i = 0; i < sizeof uris / sizeof uris [0]; i++) {
        int len = lws_hdr_total_length (wsi, uris [i]);
        if (len > 0)
            return (size_t) len != strlen (path);
    }
    return false;
}

int
gw_handle_http (gateway_t *self, struct lws *wsi, conn_t *conn, const char *path)
{
    vhost_kind_t kind = gw_vhost_kind (self, wsi);
    outq_init (&conn->out, &self->out_acct);    /* lws gives each transaction fresh, zeroed memory */
    conn->resp = calloc (1, sizeof *conn->resp);
    if (!conn->resp)
        return -1;
    const char *method = http_method (wsi);
    conn->resp_close = strcmp (method, "GET") != 0 && strcmp (method, "HEAD") != 0;

    if (kind == VH_CHAT) {
        /*  The chat port speaks WebSocket only. */
        static const char text [] = "426 Upgrade Required: this port speaks WebSocket (the web UI is on the HTTP port)\n";
        conn->resp->status = 426;
        strcpy (conn->resp->content_type, "text/plain; charset=utf-8");
        conn->resp->body = strdup (text);
        conn->resp->body_len = conn->resp->body ? strlen (text) : 0;
        /*  No "Upgrade:" header: HTTP/2 forbids it (browsers speak h2 here over TLS). */
        conn->resp->head_only = strcmp (method, "HEAD") == 0;
    }
    else
    if (path && gw_serve_ops (self, conn, path, method)) {
        if (conn->resp_deferred)
            return 0;           /* answered once the actors have */
    }
    else
    if (kind == VH_METRICS) {
        conn->resp->status = 404;
        strcpy (conn->resp->content_type, "text/plain; charset=utf-8");
        conn->resp->body = strdup ("404 Not Found: this port serves /metrics, /healthz and /readyz\n");
        conn->resp->body_len = conn->resp->body ? strlen (conn->resp->body) : 0;
    }
    else {
        /*  A NUL lws decoded is passed on encoded, for the http module to refuse. */
        char *uri = path_has_nul (wsi, path) ? strdup ("/%00") : rebuild_uri (wsi, path ? path : "/");
        char *accept = header_dup (wsi, WSI_TOKEN_HTTP_ACCEPT);
        char *host = header_dup (wsi, WSI_TOKEN_HOST);
        char fetch_dest [32] = "";
        int have_dest = lws_hdr_custom_copy (wsi, fetch_dest, sizeof fetch_dest, "sec-fetch-dest:", 15);
        http_request_t req = { .method = method, .uri = uri ? uri : "/", .accept = accept,
                               .sec_fetch_dest = have_dest > 0 ? fetch_dest : NULL, .host = host };
        http_site_t *site = kind == VH_HTTP && self->site_redirect ? self->site_redirect : self->site;
        http_handle (site, &req, conn->resp);
        qms_debug (ACTOR, "event=http method=%s status=%d", method, conn->resp->status);
        free (uri);
        free (accept);
        free (host);
    }
    return http_respond (self, wsi, conn);
}

int
gw_http_writeable (gateway_t *self, struct lws *wsi, conn_t *conn)
{
    if (!conn->resp || conn->stats_slot)
        return 0;
    if (conn->resp_deferred) {
        /*  A response that waited for the actors. */
        conn->resp_deferred = false;
        return http_respond (self, wsi, conn);
    }
    return http_flush (self, wsi, conn);
}

/* ------------------------------------------------------------------------ */
/*  WebSocket handshakes: path on the HTTP ports, Origin, capacity. */

static bool
host_matches (const char *host, size_t host_len, const char *name)
{
    return name && strlen (name) == host_len && strncasecmp (host, name, host_len) == 0;
}

/*  An Origin is "scheme://host[:port]".  Browsers always send it; other
    clients usually do not, and those are allowed.  A browser page may open
    a chat connection only if it was served under one of our own names (the
    -serverIp value, localhost, the loopback addresses, or the Host this
    handshake was sent to), on any port, or it is on the allow-list.
    request_host: the Host header ("" if none), its port stripped here. */
static bool
origin_matches (const qms_config_t *cfg, const char *origin, char *request_host)
{
    for (int i = 0; i < cfg->origin_count; i++)
        if (strcasecmp (origin, cfg->origins [i]) == 0)
            return true;
    const char *host = NULL;
    if (strncasecmp (origin, "http://", 7) == 0)
        host = origin + 7;
    else
    if (strncasecmp (origin, "https://", 8) == 0)
        host = origin + 8;
    if (!host)
        return false;
    size_t host_len;
    if (*host == '[') {
        const char *close = strchr (host, ']');
        if (!close)
            return false;
        host_len = (size_t) (close - host) + 1;
    }
    else
        host_len = strcspn (host, ":/");
    if (host [host_len] && host [host_len] != ':')
        return false;                   /* an origin has no path */

    if (request_host [0]) {
        char *colon = request_host [0] == '[' ? strchr (request_host, ']') : request_host;
        colon = colon ? strchr (colon, ':') : NULL;
        if (colon)
            *colon = 0;
    }
    return host_matches (host, host_len, cfg->server_ip)
        || host_matches (host, host_len, "localhost")
        || host_matches (host, host_len, "127.0.0.1")
        || host_matches (host, host_len, "[::1]")
        || (request_host [0] && host_matches (host, host_len, request_host));
}

static bool
origin_allowed (gateway_t *self, struct lws *wsi)
{
    int len = lws_hdr_total_length (wsi, WSI_TOKEN_ORIGIN);
    if (len <= 0)
        return true;
    char origin [512];
    if (len >= (int) sizeof origin || lws_hdr_copy (wsi, origin, sizeof origin, WSI_TOKEN_ORIGIN) < 0)
        return false;
    char request_host [256] = "";
    if (lws_hdr_copy (wsi, request_host, sizeof request_host, WSI_TOKEN_HOST) <= 0)
        request_host [0] = 0;
    return origin_matches (self->cfg, origin, request_host);
}

int
gw_filter_handshake (gateway_t *self, struct lws *wsi)
{
    if (self->stopping)
        return 1;
    if (gw_vhost_kind (self, wsi) == VH_METRICS)
        return 1;               /* no chat on the metrics port */
    if (gw_vhost_kind (self, wsi) != VH_CHAT) {
        char path [16] = "";
        if (lws_hdr_copy (wsi, path, sizeof path, WSI_TOKEN_GET_URI) < 0 || strcmp (path, "/ws") != 0)
            return 1;
    }
    if (!origin_allowed (self, wsi)) {
        char origin [128] = "";
        lws_hdr_copy (wsi, origin, sizeof origin, WSI_TOKEN_ORIGIN);
        qms_info (ACTOR, "event=origin_refused origin=\"%s\"", origin);
        return 1;
    }
    if (self->free_count == 0) {
        qms_warn (ACTOR, "event=connection_refused reason=max_connections limit=%zu", self->max_slots);
        return 1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */

void
gw_http_test (bool verbose)
{
    if (verbose)
        printf (" * gw_http: ");
    /*  Paths come back with every '%' escaped again, the query after '?'. */
    char *uri = uri_rebuild ("/a%b/%", "x=1&y=%41");
    assert (uri && strcmp (uri, "/a%25b/%25?x=1&y=%41") == 0);
    free (uri);
    uri = uri_rebuild ("/index.html", NULL);
    assert (uri && strcmp (uri, "/index.html") == 0);
    free (uri);
    uri = uri_rebuild ("", NULL);
    assert (uri && strcmp (uri, "") == 0);
    free (uri);

    /*  Origins: our own names on any port, the Host asked for, the allow-list. */
    qms_config_t cfg;
    qms_config_defaults (&cfg);
    snprintf (cfg.server_ip, sizeof cfg.server_ip, "chat.example");
    static char friend [] = "https://friend.example:8443";
    cfg.origins [0] = friend;
    cfg.origin_count = 1;
    static const struct { const char *origin, *host; bool ok; } cases [] = {
        { "http://localhost:8080", "", true },
        { "https://127.0.0.1", "", true },
        { "http://[::1]:3000", "", true },
        { "HTTP://LOCALHOST", "", true },
        { "https://chat.example:9443", "", true },
        { "https://friend.example:8443", "", true },        /* allow-list, exact */
        { "https://FRIEND.example:8443", "", true },        /* ... case aside */
        { "https://friend.example:8444", "", false },
        { "http://evil.example", "", false },
        { "http://evil.example", "other.example:80", false },
        { "http://evil.example:1234", "evil.example:80", true },   /* the Host it was sent to */
        { "http://[fe80::1]:1", "[fe80::1]:8080", true },
        { "http://[fe80::1]:1", "[fe80::2]:8080", false },
        { "http://localhost.evil.example", "", false },
        { "http://localhost/path", "", false },             /* an origin has no path */
        { "ftp://localhost", "", false },
        { "null", "", false },
        { "http://[::1", "", false },
        { "localhost", "localhost", false },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases [0]; i++) {
        char host [256];
        snprintf (host, sizeof host, "%s", cases [i].host);
        if (origin_matches (&cfg, cases [i].origin, host) != cases [i].ok) {
            fprintf (stderr, "origin %s host %s: expected %d\n", cases [i].origin, cases [i].host, cases [i].ok);
            assert (false);
        }
    }
    assert (host_matches ("abc", 3, "ABC") && !host_matches ("abc", 2, "abc") && !host_matches ("abc", 3, NULL));
    if (verbose)
        printf ("OK\n");
}
