/*  qms_curve.c - CURVE on the links between roles (qms_curve.h). */
#include "qms_curve.h"
#include "qms_log.h"

#include <assert.h>
#include <dirent.h>
#include <pthread.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LOG             "curve"
#define MAX_CLIENTS     64
#define ZAP_ENDPOINT    "inproc://zeromq.zap.01"

/*  Set once by qms_curve_init, before any actor starts; read-only after. */
static zcert_t *s_server, *s_client;
static char s_server_public [41];
static uint8_t s_allowed [MAX_CLIENTS][32];
static int s_allowed_count;
static zactor_t *s_zap, *s_watch;
static int s_watches;       /* monitor endpoints made so far */
static pthread_mutex_t s_watch_lock = PTHREAD_MUTEX_INITIALIZER;   /* actors share s_watch's pipe */

static bool
is_tcp (const char *endpoint)
{
    return strncmp (endpoint, "tcp://", 6) == 0;
}

bool
qms_curve_on (void)
{
    return s_server != NULL;
}

/* ------------------------------------------------------------------------ */
/*  Keys */

static int
save_pair (zcert_t *cert, const char *path, char *err, size_t err_size)
{
    char secret [PATH_MAX + 16];
    snprintf (secret, sizeof secret, "%s_secret", path);
    mode_t old = umask (077);
    int rc = zcert_save (cert, path);
    umask (old);
    if (rc || chmod (secret, 0600)) {
        snprintf (err, err_size, "cannot write %s: %s", path, strerror (errno));
        return -1;
    }
    return 0;
}

int
qms_curve_generate (const char *dir, char *err, size_t err_size)
{
    char path [PATH_MAX];
    snprintf (path, sizeof path, "%s/server.cert", dir);
    if (access (path, F_OK) == 0) {
        snprintf (err, err_size, "%s holds keys already (delete them first to make new ones)", dir);
        return -1;
    }
    char clients [PATH_MAX];
    snprintf (clients, sizeof clients, "%s/clients", dir);
    if ((mkdir (dir, 0700) && errno != EEXIST) || (mkdir (clients, 0700) && errno != EEXIST)) {
        snprintf (err, err_size, "cannot make %s: %s", clients, strerror (errno));
        return -1;
    }
    zcert_t *server = zcert_new (), *client = zcert_new ();
    int rc = -1;
    if (server && client) {
        zcert_set_meta (server, "role", "server");
        zcert_set_meta (client, "role", "client");
        char public_copy [PATH_MAX + 32];
        snprintf (public_copy, sizeof public_copy, "%s/client.cert", clients);
        rc = save_pair (server, path, err, err_size);
        snprintf (path, sizeof path, "%s/client.cert", dir);
        if (rc == 0)
            rc = save_pair (client, path, err, err_size);
        if (rc == 0 && zcert_save_public (client, public_copy)) {
            snprintf (err, err_size, "cannot write %s: %s", public_copy, strerror (errno));
            rc = -1;
        }
    }
    else
        snprintf (err, err_size, "cannot make keys (is libzmq built with CURVE?)");
    zcert_destroy (&server);
    zcert_destroy (&client);
    return rc;
}

/* ------------------------------------------------------------------------ */
/*  The ZAP handler (RFC 27): a CURVE client is let in when its public key
    is one of DIR/clients/; everything else is refused and logged. */

static void
zap_actor (zsock_t *pipe, void *args)
{
    zsock_t *handler = zsock_new (ZMQ_REP);
    if (!handler || zsock_bind (handler, ZAP_ENDPOINT)) {
        zsock_destroy (&handler);
        zsock_signal (pipe, 1);
        return;
    }
    zsock_signal (pipe, 0);
    zpoller_t *poller = zpoller_new (pipe, handler, NULL);
    while (poller) {
        void *which = zpoller_wait (poller, -1);
        if (which != handler)
            break;                                  /* $TERM, or interrupted */
        zmsg_t *request = zmsg_recv (handler);
        if (!request)
            break;
        char *version = zmsg_popstr (request), *id = zmsg_popstr (request);
        char *domain = zmsg_popstr (request), *address = zmsg_popstr (request);
        char *identity = zmsg_popstr (request), *mechanism = zmsg_popstr (request);
        zframe_t *key = zmsg_pop (request);
        bool ok = false;
        if (mechanism && streq (mechanism, "CURVE") && key && zframe_size (key) == 32)
            for (int i = 0; i < s_allowed_count && !ok; i++)
                ok = memcmp (zframe_data (key), s_allowed [i], 32) == 0;
        if (!ok) {
            char shown [41] = "none";
            if (key && zframe_size (key) == 32)
                zmq_z85_encode (shown, zframe_data (key), 32);
            qms_warn (LOG, "event=peer_refused address=%s mechanism=%s key=%s reason=\"%s\"",
                      address ? address : "?", mechanism ? mechanism : "?", shown,
                      mechanism && streq (mechanism, "CURVE") ? "not a key of this deployment"
                                                              : "no CURVE key");
        }
        zmsg_t *reply = zmsg_new ();
        zmsg_addstr (reply, "1.0");
        zmsg_addstr (reply, id ? id : "");
        zmsg_addstr (reply, ok ? "200" : "400");
        zmsg_addstr (reply, ok ? "OK" : "not a key of this deployment");
        zmsg_addstr (reply, "");
        zmsg_addmem (reply, NULL, 0);
        zmsg_send (&reply, handler);
        zframe_destroy (&key);
        zstr_free (&version); zstr_free (&id); zstr_free (&domain);
        zstr_free (&address); zstr_free (&identity); zstr_free (&mechanism);
        zmsg_destroy (&request);
    }
    zpoller_destroy (&poller);
    zsock_destroy (&handler);
}

/* ------------------------------------------------------------------------ */
/*  A peer that fails the handshake before ZAP is asked (no CURVE at all, or
    another deployment's server key) is seen only by libzmq's socket
    monitor: one thread watches every CURVE server socket and logs it. */

static const char *
failure_name (uint16_t event)
{
    switch (event) {
        case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL: return "handshake failed";
        case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:  return "not a CURVE peer, or not of this deployment";
        default:                                   return "refused";
    }
}

static void
watch_actor (zsock_t *pipe, void *args)
{
    zpoller_t *poller = zpoller_new (pipe, NULL);
    zlist_t *monitors = zlist_new ();
    zsock_signal (pipe, 0);
    while (poller && monitors) {
        void *which = zpoller_wait (poller, -1);
        if (which == pipe) {
            zmsg_t *msg = zmsg_recv (pipe);
            char *command = msg ? zmsg_popstr (msg) : NULL;
            char *endpoint = msg ? zmsg_popstr (msg) : NULL;
            bool stop = !command || streq (command, "$TERM");
            if (!stop && endpoint && streq (command, "WATCH")) {
                zsock_t *monitor = zsock_new (ZMQ_PAIR);
                if (monitor && zsock_connect (monitor, "%s", endpoint) == 0) {
                    zpoller_add (poller, monitor);
                    zlist_append (monitors, monitor);
                }
                else
                    zsock_destroy (&monitor);
                zsock_signal (pipe, 0);
            }
            zstr_free (&command);
            zstr_free (&endpoint);
            zmsg_destroy (&msg);
            if (stop)
                break;
        }
        else
        if (which) {
            zmsg_t *event = zmsg_recv (which);
            zframe_t *head = event ? zmsg_first (event) : NULL;
            zframe_t *where = event ? zmsg_next (event) : NULL;
            if (head && zframe_size (head) >= 6) {
                uint16_t id;
                memcpy (&id, zframe_data (head), 2);
                char *endpoint = where ? zframe_strdup (where) : NULL;
                qms_warn (LOG, "event=peer_refused endpoint=%s reason=\"%s\"",
                          endpoint ? endpoint : "?", failure_name (id));
                free (endpoint);
            }
            zmsg_destroy (&event);
        }
        else
            break;                                  /* interrupted */
    }
    for (zsock_t *m = monitors ? (zsock_t *) zlist_first (monitors) : NULL; m;
         m = (zsock_t *) zlist_next (monitors))
        zsock_destroy (&m);
    zlist_destroy (&monitors);
    zpoller_destroy (&poller);
}

/* ------------------------------------------------------------------------ */

int
qms_curve_init (const char *dir, char *err, size_t err_size)
{
    if (!dir || !*dir)
        return 0;
    if (!zsys_has_curve ()) {
        snprintf (err, err_size, "--curve-keys: this libzmq has no CURVE");
        return -1;
    }
    char path [PATH_MAX];
    snprintf (path, sizeof path, "%s/server.cert", dir);
    s_server = zcert_load (path);
    snprintf (path, sizeof path, "%s/client.cert", dir);
    s_client = zcert_load (path);
    if (!s_server || !s_client) {
        qms_curve_shutdown ();
        snprintf (err, err_size, "--curve-keys %s: no key set there (make one with "
                  "`qmessageserver keys %s`)", dir, dir);
        return -1;
    }
    snprintf (s_server_public, sizeof s_server_public, "%s", zcert_public_txt (s_server));
    char clients [PATH_MAX];
    snprintf (clients, sizeof clients, "%s/clients", dir);
    s_allowed_count = 0;
    DIR *listing = opendir (clients);
    for (struct dirent *e = listing ? readdir (listing) : NULL; e && s_allowed_count < MAX_CLIENTS;
         e = readdir (listing)) {
        size_t len = strlen (e->d_name);
        if (e->d_name [0] == '.' || (len > 7 && streq (e->d_name + len - 7, "_secret")))
            continue;
        char file [PATH_MAX + 300];
        snprintf (file, sizeof file, "%s/%s", clients, e->d_name);
        zcert_t *cert = zcert_load (file);
        if (cert)
            memcpy (s_allowed [s_allowed_count++], zcert_public_key (cert), 32);
        zcert_destroy (&cert);
    }
    if (listing)
        closedir (listing);
    if (s_allowed_count == 0) {
        qms_curve_shutdown ();
        snprintf (err, err_size, "--curve-keys %s: no client keys in %s", dir, clients);
        return -1;
    }
    s_zap = zactor_new (zap_actor, NULL);
    s_watch = zactor_new (watch_actor, NULL);
    if (!s_zap || !s_watch) {
        qms_curve_shutdown ();
        snprintf (err, err_size, "--curve-keys: cannot start the ZAP handler");
        return -1;
    }
    qms_info (LOG, "event=on keys=\"%s\" clients=%d", dir, s_allowed_count);
    return 0;
}

void
qms_curve_shutdown (void)
{
    zactor_destroy (&s_watch);
    zactor_destroy (&s_zap);
    zcert_destroy (&s_server);
    zcert_destroy (&s_client);
    s_allowed_count = 0;
}

int
qms_curve_server (zsock_t *sock, const char *endpoint)
{
    if (!s_server || !is_tcp (endpoint))
        return 0;
    zcert_apply (s_server, sock);
    zsock_set_curve_server (sock, 1);
    zsock_set_zap_domain (sock, "qms");
    if (zsock_curve_server (sock) != 1)
        return -1;
    /*  Refusals before ZAP (ZAP logs its own) go to the watch thread. */
    char monitor [64];
    pthread_mutex_lock (&s_watch_lock);
    snprintf (monitor, sizeof monitor, "inproc://qms-curve-watch-%d", s_watches++);
    if (zmq_socket_monitor (zsock_resolve (sock), monitor,
                            ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) == 0) {
        zstr_sendx (s_watch, "WATCH", monitor, NULL);
        zsock_wait (s_watch);
    }
    pthread_mutex_unlock (&s_watch_lock);
    return 0;
}

int
qms_curve_client (zsock_t *sock, const char *endpoint)
{
    if (!s_client || !is_tcp (endpoint))
        return 0;
    zcert_apply (s_client, sock);
    zsock_set_curve_serverkey (sock, s_server_public);
    return 0;
}

int
qms_curve_bind (zsock_t *sock, const char *endpoint)
{
    if (qms_curve_server (sock, endpoint))
        return -1;
    return zsock_bind (sock, "%s", endpoint);
}

int
qms_curve_connect (zsock_t *sock, const char *endpoint)
{
    if (qms_curve_client (sock, endpoint))
        return -1;
    return zsock_connect (sock, "%s", endpoint);
}

/* ------------------------------------------------------------------------ */
/*  Selftest: a deployment's server and client talk; a client with another
    deployment's key, or none, gets nothing through. */

/*  Whether a DEALER keyed as given reaches the server at endpoint: it
    sends "ping" and the server answers within timeout. */
static bool
t_reaches (zsock_t *server, const char *endpoint, zcert_t *cert, const char *server_key)
{
    zsock_t *client = zsock_new (ZMQ_DEALER);
    assert (client);
    if (cert) {
        zcert_apply (cert, client);
        zsock_set_curve_serverkey (client, server_key);
    }
    assert (zsock_connect (client, "%s", endpoint) == 0);
    zstr_send (client, "ping");
    bool reached = false;
    zpoller_t *poller = zpoller_new (server, NULL);
    if (zpoller_wait (poller, 500) == server) {
        zmsg_t *msg = zmsg_recv (server);
        reached = msg != NULL;
        zmsg_destroy (&msg);
    }
    zpoller_destroy (&poller);
    zsock_set_linger (client, 0);
    zsock_destroy (&client);
    return reached;
}

void
qms_curve_test (bool verbose)
{
    if (verbose)
        printf (" * qms_curve: ");
    char dir [] = "/tmp/qms-curve-test-XXXXXX", other [] = "/tmp/qms-curve-other-XXXXXX", err [256];
    assert (mkdtemp (dir) && mkdtemp (other));
    char keys [PATH_MAX], keys2 [PATH_MAX];
    snprintf (keys, sizeof keys, "%s/keys", dir);
    snprintf (keys2, sizeof keys2, "%s/keys", other);
    assert (qms_curve_init ("", err, sizeof err) == 0 && !qms_curve_on ());
    assert (qms_curve_init (keys, err, sizeof err) == -1 && strstr (err, "no key set"));
    assert (qms_curve_generate (keys, err, sizeof err) == 0);
    assert (qms_curve_generate (keys, err, sizeof err) == -1 && strstr (err, "keys already"));
    assert (qms_curve_generate (keys2, err, sizeof err) == 0);
    struct stat info;
    char path [PATH_MAX + 32];
    snprintf (path, sizeof path, "%s/server.cert_secret", keys);
    assert (stat (path, &info) == 0 && (info.st_mode & 0777) == 0600);

    assert (qms_curve_init (keys, err, sizeof err) == 0 && qms_curve_on ());
    zsock_t *server = zsock_new (ZMQ_ROUTER);
    assert (server);
    int port = qms_curve_bind (server, "tcp://127.0.0.1:*");
    assert (port > 0);
    char endpoint [64];
    snprintf (endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", port);

    /*  The deployment's own client gets through (as qms_curve_connect keys it). */
    zsock_t *own = zsock_new (ZMQ_DEALER);
    assert (own && qms_curve_connect (own, endpoint) == 0);
    zstr_send (own, "hello");
    zpoller_t *poller = zpoller_new (server, NULL);
    assert (zpoller_wait (poller, 5000) == server);
    zmsg_t *msg = zmsg_recv (server);
    assert (msg && zmsg_size (msg) == 2);
    zmsg_destroy (&msg);
    zpoller_destroy (&poller);
    zsock_set_linger (own, 0);
    zsock_destroy (&own);

    /*  Another deployment's client key, even with our server's public key:
        refused by ZAP.  No key at all: no CURVE handshake, nothing. */
    snprintf (path, sizeof path, "%s/client.cert", keys2);
    zcert_t *stranger = zcert_load (path);
    assert (stranger);
    char server_key [41];
    snprintf (server_key, sizeof server_key, "%s", s_server_public);
    int level = qms_log_get_level ();
    qms_log_set_level (QMS_LOG_ERROR);              /* the refusals are logged at warn */
    assert (!t_reaches (server, endpoint, stranger, server_key));
    assert (!t_reaches (server, endpoint, NULL, NULL));
    qms_log_set_level (level);
    zcert_destroy (&stranger);
    /*  ... while a proper client still does (the test itself is sound). */
    snprintf (path, sizeof path, "%s/client.cert", keys);
    zcert_t *friend_ = zcert_load (path);
    assert (friend_ && t_reaches (server, endpoint, friend_, server_key));
    zcert_destroy (&friend_);

    /*  inproc:// is left alone. */
    zsock_t *local = zsock_new (ZMQ_ROUTER);
    assert (local && qms_curve_bind (local, "inproc://qms-curve-test") == 0);
    assert (zsock_curve_server (local) == 0);
    zsock_destroy (&local);

    zsock_set_linger (server, 0);
    zsock_destroy (&server);
    qms_curve_shutdown ();
    assert (!qms_curve_on ());
    char command [PATH_MAX * 2 + 16];
    snprintf (command, sizeof command, "rm -rf %s %s", dir, other);
    assert (system (command) == 0);
    if (verbose)
        printf ("OK\n");
}
