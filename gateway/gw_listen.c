/*  gw_listen.c - the gateway's listeners: one lws vhost per port (chat,
    HTTP, HTTPS, metrics), our own SO_REUSEPORT sockets when several
    gateways share a port, which port a connection came in on, the TLS
    settings and their check, and SIGHUP (settings and certificate
    reload).
*/
#define _GNU_SOURCE
#include "gw_internal.h"

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

/*  A listening socket with SO_REUSEPORT, which Debian's lws 4.1 cannot
    make (it sets the option only with more than one service thread, and
    is built with one): several gateway processes on one host bind the
    same port and the kernel spreads new connections between them. */
static int
listen_shared (gateway_t *self, struct lws_vhost *vh, int port, vhost_kind_t kind)
{
    const char *bind_to = self->cfg->bind_address;
    bool v6 = !bind_to [0] || strchr (bind_to, ':');
    int fd = socket (v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1, zero = 0;
    setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
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
    lws_sock_file_fd_type desc;
    desc.filefd = fd;
    struct lws *wsi = lws_adopt_descriptor_vhost (vh, LWS_ADOPT_RAW_FILE_DESC, desc, "qms-raw", NULL);
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
    info.port = cfg->reuse_port ? CONTEXT_PORT_NO_LISTEN_SERVER : port;
    info.protocols = gw_protocols;
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
    if (vh && cfg->reuse_port && listen_shared (self, vh, port, kind))
        vh = NULL;              /* lws frees its vhosts with the context */
    if (!vh)
        qms_error (ACTOR, "event=listen_failed vhost=%s port=%d reason=\"cannot bind (port in use or address not available)\"",
                   name, port);
    else
        qms_info (ACTOR, "event=listening vhost=%s port=%d tls=%s bind=%s shared=%s", name, port,
                  tls ? "yes" : "no", cfg->bind_address [0] ? cfg->bind_address : "*",
                  cfg->reuse_port ? "yes" : "no");
    return vh;
}

/* ------------------------------------------------------------------------ */
/*  Our own listening sockets (--reuse-port), and which port a connection
    came in on. */

static const vhost_kind_t s_kinds [4] = { VH_CHAT, VH_HTTP, VH_HTTPS, VH_METRICS };

/*  Which port a connection came in on.  Connections we accepted ourselves
    (--reuse-port) carry it, because lws may move them to another of our
    vhosts: all of them "listen" on no port of lws's, and lws picks a vhost
    by Host header and port.  An HTTP/2 stream asks its connection. */
vhost_kind_t
gw_vhost_kind (gateway_t *self, struct lws *wsi)
{
    for (struct lws *w = wsi; w; w = lws_get_parent (w)) {
        const vhost_kind_t *kind = (const vhost_kind_t *) lws_get_opaque_user_data (w);
        if (kind)
            return *kind;
    }
    struct lws_vhost *vh = lws_get_vhost (wsi);
    return vh == self->vh_chat ? VH_CHAT : vh == self->vh_https ? VH_HTTPS
         : vh && vh == self->vh_metrics ? VH_METRICS : VH_HTTP;
}

bool
gw_listen_accept (gateway_t *self, struct lws *wsi)
{
    for (int i = 0; i < self->listener_count; i++)
        if (wsi == self->listeners [i].wsi) {
            /*  Our own listening socket: hand every new connection to lws
                as if lws had accepted it. */
            int fd;
            while ((fd = accept4 (self->listeners [i].fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0)
            {
                struct lws *conn = self->stopping ? NULL : lws_adopt_socket_vhost (self->listeners [i].vh, fd);
                if (!conn)
                    close (fd);
                else
                    lws_set_opaque_user_data (conn, (void *) &s_kinds [self->listeners [i].kind]);
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
