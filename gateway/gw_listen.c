/*  gw_listen.c - the gateway's listeners: one lws vhost per port (chat,
    HTTP, HTTPS, metrics), our own SO_REUSEPORT sockets when several
    gateways share a port, which port a connection came in on, the TLS
    settings and their check, and SIGHUP (settings and certificate
    reload).
*/
#define _GNU_SOURCE
#include "gw_internal.h"
#include "lws_fd.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <limits.h>
#include <sys/stat.h>
#include "tls.h"

/* ------------------------------------------------------------------------ */
/*  TLS and vhosts. */

/*  Modern suites only; TLS 1.3 suites are OpenSSL's defaults. */
#define TLS12_CIPHERS "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" \
                      "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" \
                      "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

int
gateway_check_tls (const qms_config_t *cfg, char *err, size_t err_size)
{
    SSL_CTX *ctx = SSL_CTX_new (TLS_server_method ());
    int rc = -1;
    if (!ctx) {
        snprintf (err, err_size, "cannot create a TLS context");
        return -1;
    }
    ERR_clear_error ();
    if (SSL_CTX_use_certificate_chain_file (ctx, cfg->ssl_cert) != 1)
        snprintf (err, err_size, "-sslCertificate '%s' is not a usable PEM certificate", cfg->ssl_cert);
    else
    if (SSL_CTX_use_PrivateKey_file (ctx, cfg->ssl_key, SSL_FILETYPE_PEM) != 1)
        snprintf (err, err_size, "-sslPrivateKey '%s' is not a usable PEM private key", cfg->ssl_key);
    else
    if (SSL_CTX_check_private_key (ctx) != 1)
        snprintf (err, err_size, "-sslPrivateKey '%s' does not match -sslCertificate '%s'",
                  cfg->ssl_key, cfg->ssl_cert);
    else
        rc = 0;
    ERR_clear_error ();
    SSL_CTX_free (ctx);
    return rc;
}

/*  A listening socket of our own, for two things lws 4.1 cannot do:
    SO_REUSEPORT (Debian's lws sets it only with more than one service
    thread, and is built with one), so that several gateway processes on
    one host bind the same port and the kernel spreads new connections
    between them; and reading a PROXY header before lws sees a byte. */
static int
listen_own (gateway_t *self, struct lws_vhost *vh, int port, vhost_kind_t kind, bool reuse)
{
    const char *bind_to = self->cfg->bind_address;
    bool v6 = !bind_to [0] || strchr (bind_to, ':');
    int fd = socket (v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1, zero = 0;
    setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuse)
        setsockopt (fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    int rc;
    if (v6) {
        struct sockaddr_in6 sa = { .sin6_family = AF_INET6, .sin6_port = htons ((uint16_t) port) };
        setsockopt (fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
        sa.sin6_addr = in6addr_any;
        if (bind_to [0] && inet_pton (AF_INET6, bind_to, &sa.sin6_addr) != 1) {
            close (fd);
            return -1;
        }
        rc = bind (fd, (struct sockaddr *) &sa, sizeof sa);
    }
    else {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons ((uint16_t) port) };
        if (inet_pton (AF_INET, bind_to, &sa.sin_addr) != 1) {
            close (fd);
            return -1;
        }
        rc = bind (fd, (struct sockaddr *) &sa, sizeof sa);
    }
    if (rc || listen (fd, 4096) || self->listener_count >= 4) {
        close (fd);
        return -1;
    }
    struct lws *wsi = lws_fd_adopt (vh, fd, "qms-raw");
    if (!wsi) {
        close (fd);
        return -1;
    }
    self->listeners [self->listener_count].wsi = wsi;
    self->listeners [self->listener_count].fd = fd;
    self->listeners [self->listener_count].vh = vh;
    self->listeners [self->listener_count].kind = kind;
    self->listener_count++;
    return 0;
}

struct lws_vhost *
gw_create_vhost (gateway_t *self, const char *name, int port, bool tls, vhost_kind_t kind)
{
    const qms_config_t *cfg = self->cfg;
    struct lws_context_creation_info info;
    memset (&info, 0, sizeof info);
    info.vhost_name = name;
    bool own = cfg->reuse_port || (kind == VH_CHAT && cfg->proxy_protocol);
    info.port = own ? CONTEXT_PORT_NO_LISTEN_SERVER : port;
    info.protocols = self->protocols;
    info.options = LWS_SERVER_OPTION_VALIDATE_UTF8;
    if (cfg->bind_address [0]) {
        info.iface = cfg->bind_address;
        /*  lws 4.1 ignores iface while IPv6 is on (the listener binds [::]). */
        if (!strchr (cfg->bind_address, ':'))
            info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
    }
    /*  No lws validity timers: idle pings are ours (gw_conn_scan).  Without a
        policy of its own a vhost takes the context's default (a ping after
        300 s, hang-up after 310 s), and that is a timer per connection in
        the one sorted list every other timeout is inserted into: a storm of
        handshakes then walked past every established connection
        (docs/ROBUSTNESS.md). */
    static const lws_retry_bo_t no_validity = { .secs_since_valid_ping = 0, .secs_since_valid_hangup = 0 };
    info.retry_and_idle_policy = &no_validity;
    if (tls) {
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        info.ssl_cert_filepath = cfg->ssl_cert;
        info.ssl_private_key_filepath = cfg->ssl_key;
        info.ssl_cipher_list = TLS12_CIPHERS;
        info.ssl_options_set = SSL_OP_NO_SSLv3 | SSL_OP_NO_TLSv1 | SSL_OP_NO_TLSv1_1
                             | SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION;
        /*  HTTP/1.1 only: we write every byte of our responses and frames
            ourselves, which HTTP/2's framing would not allow, and a web UI
            of a few files loses nothing by it. */
        info.alpn = "http/1.1";
    }
    struct lws_vhost *vh = lws_create_vhost (self->ctx, &info);
    if (vh && own && listen_own (self, vh, port, kind, cfg->reuse_port))
        vh = NULL;              /* lws frees its vhosts with the context */
    if (!vh)
        qms_error (ACTOR, "event=listen_failed vhost=%s port=%d reason=\"cannot bind (port in use or address not available)\"",
                   name, port);
    else
        qms_info (ACTOR, "event=listening vhost=%s port=%d tls=%s bind=%s shared=%s%s", name, port,
                  tls ? "yes" : "no", cfg->bind_address [0] ? cfg->bind_address : "*",
                  cfg->reuse_port ? "yes" : "no",
                  kind == VH_CHAT && cfg->proxy_protocol ? " proxy_protocol=v2" : "");
    return vh;
}

/* ------------------------------------------------------------------------ */
/*  Our own listening sockets (--reuse-port), and which port a connection
    came in on. */

static const accepted_t s_accepted [4] = {
    { VH_CHAT, false, "" }, { VH_HTTP, false, "" }, { VH_HTTPS, false, "" }, { VH_METRICS, false, "" }
};

static const accepted_t *
accepted_of (struct lws *wsi)
{
    for (struct lws *w = wsi; w; w = lws_get_parent (w)) {
        const accepted_t *accepted = (const accepted_t *) lws_get_opaque_user_data (w);
        if (accepted)
            return accepted;
    }
    return NULL;
}

/*  Which port a connection came in on.  Connections we accepted ourselves
    (--reuse-port, --proxy-protocol) carry it, because lws may move them to
    another of our vhosts: all of them "listen" on no port of lws's, and lws
    picks a vhost by Host header and port.  An HTTP/2 stream asks its
    connection. */
vhost_kind_t
gw_vhost_kind (gateway_t *self, struct lws *wsi)
{
    const accepted_t *accepted = accepted_of (wsi);
    if (accepted)
        return accepted->kind;
    struct lws_vhost *vh = lws_get_vhost (wsi);
    return vh == self->vh_chat ? VH_CHAT : vh == self->vh_https ? VH_HTTPS
         : vh && vh == self->vh_metrics ? VH_METRICS : VH_HTTP;
}

const char *
gw_proxied_address (struct lws *wsi)
{
    const accepted_t *accepted = accepted_of (wsi);
    return accepted && accepted->owned ? accepted->address : NULL;
}

void
gw_listen_forget (struct lws *wsi)
{
    accepted_t *accepted = (accepted_t *) lws_get_opaque_user_data (wsi);
    if (accepted && accepted->owned) {
        lws_set_opaque_user_data (wsi, NULL);
        free (accepted);
    }
}

/* ------------------------------------------------------------------------ */
/*  The PROXY protocol (HAProxy's specification, "The PROXY protocol"),
    read with --proxy-protocol from a --trusted-proxy on the chat port
    before lws sees any byte; every other peer speaks to lws directly, so a
    PROXY header from anyone else is only a bad request.  Both versions,
    told apart by their first bytes as the specification says a receiver
    does: version 1 is one text line, "PROXY TCP4 <src> <dst> <sport>
    <dport>\r\n" (TCP6, or UNKNOWN), at most 107 bytes, which nginx's
    stream module sends; version 2 is a 12-byte signature, a version and
    command byte, an address family and transport byte, the length of what
    follows (big-endian), then the addresses and ports and optional TLVs
    (skipped), which HAProxy sends with send-proxy-v2. */

static const uint8_t s_proxy_sig [12] = {
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A
};
#define PROXY_V1_MAX    107

/*  "PROXY TCP4 198.51.100.7 10.0.0.1 40000 12345\r\n" */
static int
proxy_parse_v1 (const uint8_t *head, size_t len, const char *peer, char *out, size_t size)
{
    char line [PROXY_V1_MAX + 1];
    if (len < 8 || len > PROXY_V1_MAX || head [len - 2] != '\r' || head [len - 1] != '\n')
        return -1;
    memcpy (line, head, len - 2);
    line [len - 2] = 0;
    if (strlen (line) != len - 2)
        return -1;              /* a NUL inside */
    char proto [8], src [48], dst [48];
    unsigned sport, dport;
    char extra;
    if (strncmp (line, "PROXY UNKNOWN", 13) == 0 && (line [13] == 0 || line [13] == ' ')) {
        snprintf (out, size, "%s", peer);
        return 0;
    }
    if (sscanf (line, "PROXY %7s %47s %47s %u %u%c", proto, src, dst, &sport, &dport, &extra) != 5
    ||  sport > 65535 || dport > 65535)
        return -1;
    int family = streq (proto, "TCP4") ? AF_INET : streq (proto, "TCP6") ? AF_INET6 : -1;
    uint8_t from [16], to [16];
    if (family < 0 || inet_pton (family, src, from) != 1 || inet_pton (family, dst, to) != 1)
        return -1;
    return inet_ntop (family, from, out, (socklen_t) size) ? 0 : -1;
}

int
gw_proxy_parse (const uint8_t *head, size_t len, const char *peer, char *out, size_t size)
{
    if (len >= 6 && memcmp (head, "PROXY ", 6) == 0)
        return proxy_parse_v1 (head, len, peer, out, size);
    if (len < 16 || memcmp (head, s_proxy_sig, 12) || (head [12] >> 4) != 2)
        return -1;
    size_t body = (size_t) head [14] << 8 | head [15];
    if (len != 16 + body)
        return -1;
    int command = head [12] & 0x0F;
    if (command > 1)
        return -1;
    snprintf (out, size, "%s", peer);
    if (command == 0)
        return 0;               /* LOCAL: the proxy's own (a health check) */
    int family = head [13] >> 4;
    if (family == 1 && body >= 12)
        return inet_ntop (AF_INET, head + 16, out, (socklen_t) size) ? 0 : -1;
    if (family == 2 && body >= 36)
        return inet_ntop (AF_INET6, head + 16, out, (socklen_t) size) ? 0 : -1;
    if (family == 1 || family == 2)
        return -1;              /* too short for its family */
    return 0;                   /* UNSPEC or UNIX: the connection is the proxy's */
}

/*  How long w's header is, from what has arrived (looked at, not taken:
    what follows the header is lws's).  >0: its length, and that much has
    arrived; 0: more to come; -1: not a header; -2: closed before a byte. */
static int
proxy_peek (proxy_wait_t *w)
{
    ssize_t n = recv (w->fd, w->head, sizeof w->head, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0)
        return -2;
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
    size_t got = (size_t) n;
    w->have = got;
    if (w->head [0] == 'P') {                           /* version 1 */
        if (memcmp (w->head, "PROXY ", got < 6 ? got : 6))
            return -1;
        for (size_t i = 1; i < got && i < PROXY_V1_MAX; i++)
            if (w->head [i - 1] == '\r' && w->head [i] == '\n')
                return (int) i + 1;
        return got >= PROXY_V1_MAX ? -1 : 0;
    }
    if (memcmp (w->head, s_proxy_sig, got < 12 ? got : 12))
        return -1;                                      /* version 2 */
    if (got < 16)
        return 0;
    size_t need = 16 + ((size_t) w->head [14] << 8 | w->head [15]);
    if ((w->head [12] >> 4) != 2 || need > PROXY_HEAD_MAX)
        return -1;
    return got >= need ? (int) need : 0;
}

/*  Take w's header off the socket, once all of it has arrived.  1: whole
    (in w->head, w->have long), 0: more to come, -1: not a header or gone,
    -2: closed before a byte. */
static int
proxy_read (proxy_wait_t *w)
{
    int len = proxy_peek (w);
    if (len <= 0)
        return len;
    if (recv (w->fd, w->head, (size_t) len, MSG_DONTWAIT) != len)
        return -1;
    w->have = (size_t) len;
    return 1;
}

/*  Hand a connection to lws, marked with the port it came in on and, when
    a PROXY header named one, the client's address. */
static bool
adopt_accepted (gateway_t *self, int listener, int fd, const char *address)
{
    vhost_kind_t kind = self->listeners [listener].kind;
    accepted_t *accepted = (accepted_t *) &s_accepted [kind];
    if (address) {
        accepted = calloc (1, sizeof *accepted);
        if (!accepted)
            return false;
        accepted->kind = kind;
        accepted->owned = true;
        snprintf (accepted->address, sizeof accepted->address, "%s", address);
    }
    struct lws *conn = self->stopping ? NULL : lws_adopt_socket_vhost (self->listeners [listener].vh, fd);
    if (!conn) {
        if (address)
            free (accepted);
        return false;
    }
    lws_set_opaque_user_data (conn, accepted);
    return true;
}

static void
proxy_wait_drop (gateway_t *self, int i, const char *why)
{
    proxy_wait_t *w = self->proxy_waits [i];
    if (why) {
        self->m.proxy_bad++;
        qms_warn (ACTOR, "event=proxy_header_refused peer=%s reason=\"%s\"", w->peer, why);
    }
    close (w->fd);
    free (w);
    self->proxy_waits [i] = self->proxy_waits [--self->proxy_count];
}

/*  Every waiting connection: read; a whole header hands it to lws. */
static void
proxy_service (gateway_t *self)
{
    uint64_t now = qms_mono_ms ();
    for (int i = 0; i < self->proxy_count; ) {
        proxy_wait_t *w = self->proxy_waits [i];
        int rc = proxy_read (w);
        char address [48];
        if (rc == 1 && gw_proxy_parse (w->head, w->have, w->peer, address, sizeof address) == 0) {
            self->proxy_waits [i] = self->proxy_waits [--self->proxy_count];
            if (!adopt_accepted (self, w->listener, w->fd, address))
                close (w->fd);
            free (w);
            continue;
        }
        if (rc == -2)
            proxy_wait_drop (self, i, NULL);    /* a connect-only probe */
        else
        if (rc != 0)
            proxy_wait_drop (self, i, "not a PROXY protocol header");
        else
        if (now >= w->deadline)
            proxy_wait_drop (self, i, "no whole PROXY header within 5 s");
        else
            i++;
    }
}

static void
sul_proxy_cb (lws_sorted_usec_list_t *sul)
{
    gateway_t *self = lws_container_of (sul, gateway_t, sul_proxy);
    proxy_service (self);
    /*  A proxy sends its header at once; what is still missing is looked
        for every 2 ms while anything waits. */
    if (self->proxy_count)
        lws_sul_schedule (self->ctx, 0, &self->sul_proxy, sul_proxy_cb, 2 * LWS_US_PER_MS);
}

void
gw_proxy_waits_close (gateway_t *self)
{
    while (self->proxy_count)
        proxy_wait_drop (self, self->proxy_count - 1, NULL);
}

/*  A connection from a trusted proxy waits for its header, read by us. */
static void
proxy_wait (gateway_t *self, int listener, int fd, const char *peer)
{
    proxy_wait_t *w = self->proxy_count < PROXY_WAITS ? calloc (1, sizeof *w) : NULL;
    if (!w) {
        qms_warn (ACTOR, "event=proxy_header_refused peer=%s reason=\"%d connections already wait for theirs\"",
                  peer, PROXY_WAITS);
        self->m.proxy_bad++;
        close (fd);
        return;
    }
    w->fd = fd;
    w->listener = listener;
    w->deadline = qms_mono_ms () + PROXY_WAIT_MS;
    snprintf (w->peer, sizeof w->peer, "%s", peer);
    self->proxy_waits [self->proxy_count++] = w;
    proxy_service (self);       /* usually there already */
    if (self->proxy_count)
        lws_sul_schedule (self->ctx, 0, &self->sul_proxy, sul_proxy_cb, 2 * LWS_US_PER_MS);
}

/*  The peer's address as text ("" when unknown). */
static void
peer_text (int fd, char *out, size_t size)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    out [0] = 0;
    if (getpeername (fd, (struct sockaddr *) &ss, &len))
        return;
    if (ss.ss_family == AF_INET)
        inet_ntop (AF_INET, &((struct sockaddr_in *) &ss)->sin_addr, out, (socklen_t) size);
    else
    if (ss.ss_family == AF_INET6) {
        const struct in6_addr *a = &((struct sockaddr_in6 *) &ss)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED (a))
            inet_ntop (AF_INET, a->s6_addr + 12, out, (socklen_t) size);
        else
            inet_ntop (AF_INET6, a, out, (socklen_t) size);
    }
}

bool
gw_listen_accept (gateway_t *self, struct lws *wsi)
{
    for (int i = 0; i < self->listener_count; i++)
        if (wsi == self->listeners [i].wsi) {
            /*  Our own listening socket: hand every new connection to lws
                as if lws had accepted it, or, from a trusted proxy that
                sends a PROXY header, once we have read the header. */
            bool proxy = self->cfg->proxy_protocol && self->listeners [i].kind == VH_CHAT;
            int fd;
            while ((fd = accept4 (self->listeners [i].fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                char peer [48];
                if (proxy && !self->stopping) {
                    peer_text (fd, peer, sizeof peer);
                    if (gw_trusted (self->cfg, peer)) {
                        proxy_wait (self, i, fd, peer);
                        continue;
                    }
                }
                if (!adopt_accepted (self, i, fd, NULL))
                    close (fd);
            }
            return true;
        }
    return false;
}

/* ------------------------------------------------------------------------ */
/*  SIGHUP: reload. */

static char *
read_whole (const char *path, size_t *len)
{
    FILE *file = fopen (path, "rb");
    if (!file)
        return NULL;
    char *data = NULL;
    if (fseek (file, 0, SEEK_END) == 0) {
        long size = ftell (file);
        if (size > 0 && size < 1024 * 1024 && fseek (file, 0, SEEK_SET) == 0
        &&  (data = malloc ((size_t) size + 1))) {
            if (fread (data, 1, (size_t) size, file) == (size_t) size) {
                data [size] = 0;
                *len = (size_t) size;
            }
            else {
                free (data);
                data = NULL;
            }
        }
    }
    fclose (file);
    return data;
}

/*  SIGHUP, first: settings that can change without a restart are read
    again from the same file, environment and command line (today the log
    level; docs/OPERATIONS.md). */
static void
reload_settings (gateway_t *self)
{
    if (!self->cfg->argv)
        return;
    qms_config_t *fresh = malloc (sizeof *fresh);
    if (!fresh)
        return;
    qms_config_defaults (fresh);
    char err [512];
    FILE *quiet = fopen ("/dev/null", "w");
    int rc = quiet ? qms_config_load (fresh, self->cfg->argc, self->cfg->argv, err, sizeof err, quiet) : -1;
    if (quiet)
        fclose (quiet);
    if (rc == 0) {
        if (fresh->log_level != qms_log_get_level ())
            qms_info (ACTOR, "event=reload what=log_level level=%s", qms_log_level_name (fresh->log_level));
        qms_log_set_level (fresh->log_level);
    }
    else
        qms_error (ACTOR, "event=reload what=settings result=refused reason=\"%s\"", rc < 0 ? err : "help");
    qms_config_free (fresh);
    free (fresh);
}

/*  SIGHUP: the certificate and key files were replaced (a renewal): check
    the new pair, then give it to every TLS vhost.  Connections keep going;
    new handshakes use the new certificate.  A bad pair is refused, the old
    one stays. */
static void
reload_tls (gateway_t *self)
{
    const qms_config_t *cfg = self->cfg;
    if (!qms_config_https (cfg) && !qms_config_wss (cfg)) {
        qms_info (ACTOR, "event=reload what=tls result=skipped reason=\"no certificate configured\"");
        return;
    }
    char err [512];
    if (gateway_check_tls (cfg, err, sizeof err)) {
        qms_error (ACTOR, "event=reload what=tls result=refused reason=\"%s\"", err);
        return;
    }
    size_t cert_len = 0, key_len = 0;
    char *cert = read_whole (cfg->ssl_cert, &cert_len);
    char *key = read_whole (cfg->ssl_key, &key_len);
    int rc = cert && key ? lws_tls_cert_updated (self->ctx, cfg->ssl_cert, cfg->ssl_key,
                                                 cert, cert_len, key, key_len) : -1;
    if (key)
        OPENSSL_cleanse (key, key_len);
    free (cert);
    free (key);
    if (rc)
        qms_error (ACTOR, "event=reload what=tls result=failed cert=\"%s\"", cfg->ssl_cert);
    else
        qms_info (ACTOR, "event=reload what=tls result=ok cert=\"%s\"", cfg->ssl_cert);
}

void
gw_reload (gateway_t *self)
{
    reload_settings (self);
    reload_tls (self);
}

/* ------------------------------------------------------------------------ */

void
gw_listen_test (bool verbose)
{
    if (verbose)
        printf (" * gw_listen: ");
    /*  PROXY v2 headers: what each names, and what is none. */
    uint8_t head [16 + 36];
    char got [48];
    memcpy (head, s_proxy_sig, 12);
    head [12] = 0x21;                               /* version 2, PROXY */
    head [13] = 0x11;                               /* TCP over IPv4 */
    head [14] = 0;
    head [15] = 12;
    memcpy (head + 16, (uint8_t []) { 198, 51, 100, 7, 10, 0, 0, 1, 0x30, 0x39, 0x30, 0x39 }, 12);
    assert (gw_proxy_parse (head, 28, "10.0.0.2", got, sizeof got) == 0 && streq (got, "198.51.100.7"));
    assert (gw_proxy_parse (head, 27, "10.0.0.2", got, sizeof got) == -1);     /* shorter than it says */
    head [15] = 8;                                  /* too short for IPv4 addresses */
    assert (gw_proxy_parse (head, 24, "10.0.0.2", got, sizeof got) == -1);
    head [12] = 0x20;                               /* LOCAL: the proxy itself */
    assert (gw_proxy_parse (head, 24, "10.0.0.2", got, sizeof got) == 0 && streq (got, "10.0.0.2"));
    head [12] = 0x22;                               /* no such command */
    assert (gw_proxy_parse (head, 24, "10.0.0.2", got, sizeof got) == -1);
    head [12] = 0x11;                               /* version 1 in binary form: none */
    assert (gw_proxy_parse (head, 24, "10.0.0.2", got, sizeof got) == -1);
    head [12] = 0x21;
    head [13] = 0x21;                               /* TCP over IPv6 */
    head [15] = 36;
    memset (head + 16, 0, 36);
    head [16] = 0x20; head [17] = 0x01; head [18] = 0x0d; head [19] = 0xb8; head [31] = 5;
    assert (gw_proxy_parse (head, 52, "10.0.0.2", got, sizeof got) == 0 && streq (got, "2001:db8::5"));
    head [13] = 0x00;                               /* UNSPEC: the connection is the proxy's */
    assert (gw_proxy_parse (head, 52, "10.0.0.2", got, sizeof got) == 0 && streq (got, "10.0.0.2"));
    head [0] = 'G';                                 /* not the signature */
    assert (gw_proxy_parse (head, 52, "10.0.0.2", got, sizeof got) == -1);
    /*  Version 1: one line. */
    static const struct { const char *line; const char *want; } v1 [] = {
        { "PROXY TCP4 198.51.100.7 10.0.0.1 40000 12345\r\n", "198.51.100.7" },
        { "PROXY TCP6 2001:db8::7 2001:db8::1 40000 12345\r\n", "2001:db8::7" },
        { "PROXY UNKNOWN\r\n", "10.0.0.2" },
        { "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", "10.0.0.2" },
        { "PROXY TCP4 2001:db8::7 10.0.0.1 40000 12345\r\n", NULL },     /* not its family */
        { "PROXY TCP4 198.51.100.7 10.0.0.1 40000\r\n", NULL },           /* a port short */
        { "PROXY TCP4 198.51.100.7 10.0.0.1 40000 99999\r\n", NULL },
        { "PROXY TCP4 198.51.100.7 10.0.0.1 1 2 3\r\n", NULL },
        { "PROXY UDP4 198.51.100.7 10.0.0.1 1 2\r\n", NULL },
        { "PROXY TCP4 198.51.100.7 10.0.0.1 40000 12345\n", NULL },        /* no CR */
    };
    for (size_t i = 0; i < sizeof v1 / sizeof v1 [0]; i++) {
        int rc = gw_proxy_parse ((const uint8_t *) v1 [i].line, strlen (v1 [i].line), "10.0.0.2",
                                 got, sizeof got);
        assert (v1 [i].want ? rc == 0 && streq (got, v1 [i].want) : rc == -1);
    }

    char dir [] = "/tmp/qms-gw-listen-XXXXXX";
    assert (mkdtemp (dir));
    char path [PATH_MAX];

    /*  read_whole: a file's bytes and length, NUL-terminated; nothing for a
        missing or empty file. */
    snprintf (path, sizeof path, "%s/file", dir);
    FILE *file = fopen (path, "wb");
    assert (file && fwrite ("abc\0def", 1, 7, file) == 7 && fclose (file) == 0);
    size_t len = 0;
    char *data = read_whole (path, &len);
    assert (data && len == 7 && memcmp (data, "abc\0def", 7) == 0 && data [7] == 0);
    free (data);
    file = fopen (path, "wb");
    assert (file && fclose (file) == 0);
    len = 99;
    assert (read_whole (path, &len) == NULL && len == 99);
    unlink (path);
    assert (read_whole (path, &len) == NULL);

    /*  The TLS check: a good pair passes; a missing file, or a key of
        another certificate, is refused with the reason. */
    qms_config_t cfg;
    qms_config_defaults (&cfg);
    char cert_a [256], key_a [256], cert_b [256], key_b [256], err [512];
    char dir_b [64];
    snprintf (dir_b, sizeof dir_b, "%s/b", dir);
    assert (mkdir (dir_b, 0700) == 0);
    assert (tls_self_signed_ensure (dir, "a.example", cert_a, key_a, sizeof cert_a, err, sizeof err) == 0);
    assert (tls_self_signed_ensure (dir_b, "b.example", cert_b, key_b, sizeof cert_b, err, sizeof err) == 0);
    snprintf (cfg.ssl_cert, sizeof cfg.ssl_cert, "%s", cert_a);
    snprintf (cfg.ssl_key, sizeof cfg.ssl_key, "%s", key_a);
    assert (gateway_check_tls (&cfg, err, sizeof err) == 0);
    snprintf (cfg.ssl_key, sizeof cfg.ssl_key, "%s", key_b);
    /*  (OpenSSL 3 refuses the key on loading it, older ones on the check.) */
    assert (gateway_check_tls (&cfg, err, sizeof err) == -1 && strstr (err, key_b));
    assert (strstr (err, "does not match") || strstr (err, "not a usable PEM private key"));
    snprintf (cfg.ssl_key, sizeof cfg.ssl_key, "%s/missing.pem", dir);
    assert (gateway_check_tls (&cfg, err, sizeof err) == -1 && strstr (err, "not a usable PEM private key"));
    snprintf (cfg.ssl_cert, sizeof cfg.ssl_cert, "%s", key_a);     /* a key is no certificate */
    assert (gateway_check_tls (&cfg, err, sizeof err) == -1 && strstr (err, "not a usable PEM certificate"));
    unlink (cert_a);
    unlink (key_a);
    unlink (cert_b);
    unlink (key_b);
    assert (rmdir (dir_b) == 0 && rmdir (dir) == 0);
    if (verbose)
        printf ("OK\n");
}
