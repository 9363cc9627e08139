/*  main.c - qmessageserver: parse the command line, start the actors, serve.

        qmessageserver [all|gateway|auth|router|store|monitor] [options]
        qmessageserver --health [ROLE] [options]
        qmessageserver users|db COMMAND [ARG] [options]   (admin/admin.h)

    The embedded default (all) runs every actor in this one process: store,
    auth and router as threads on inproc:// endpoints, the gateway's
    libwebsockets loop in the main thread.  Nothing else to install or
    start.  Any other role runs one actor per process on tcp:// or ipc://
    endpoints, so the same binary makes a cluster (docs/CLUSTER.md); the
    monitor role tails every process's log lines, and --health asks one
    role whether it answers (for container health checks).
*/
#include "admin.h"
#include "auth.h"
#include "gateway.h"
#include "monitor.h"
#include "qms_actor.h"
#include "qms_config.h"
#include "qms_curve.h"
#include "qms_log.h"
#include "qms_msg.h"
#include "qms_ops.h"
#include "ops_port.h"
#include "qms_util.h"
#include "qms_watchdog.h"
#include "router.h"
#include "store.h"
#include "tls.h"

#include <arpa/inet.h>
#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define EXIT_BAD_USAGE 2
#define EXIT_CANNOT_START 1
#define EXIT_UNHEALTHY 1
#define HEALTH_TIMEOUT_MS 2000

typedef enum {
    ROLE_ALL, ROLE_GATEWAY, ROLE_AUTH, ROLE_ROUTER, ROLE_STORE, ROLE_MONITOR, ROLE_HEALTH,
    ROLE_COUNT
} role_t;

static const char *s_roles [ROLE_COUNT] = {
    "all", "gateway", "auth", "router", "store", "monitor", "health"
};

static int
role_of (const char *word)
{
    for (int i = 0; i < ROLE_COUNT; i++)
        if (streq (word, s_roles [i]))
            return i;
    return -1;
}

/*  The role is an optional first word ("--health" counts as one, and may
    be followed by the role to ask); take those words off argv so that the
    rest parses as options. */
static void
take_role (int *argc, char **argv, role_t *role, role_t *probe)
{
    *role = ROLE_ALL;
    *probe = ROLE_ALL;
    int used = 0;
    if (*argc > 1) {
        int r = role_of (argv [1]);
        if (streq (argv [1], "--health") || streq (argv [1], "-health"))
            r = ROLE_HEALTH;
        if (r >= 0) {
            *role = (role_t) r;
            used = 1;
        }
    }
    if (*role == ROLE_HEALTH && *argc > 1 + used) {
        int r = role_of (argv [1 + used]);
        if (r >= 0 && r != ROLE_HEALTH) {
            *probe = (role_t) r;
            used++;
        }
    }
    /*  Move the rest down, with the NULL that ends argv. */
    memmove (argv + 1, argv + 1 + used, (size_t) (*argc - used) * sizeof *argv);
    *argc -= used;
}

/* ------------------------------------------------------------------------ */
/*  Endpoints: which a role binds and connects, and their checks.            */

typedef struct {
    const char *option;
    char *endpoint;
    bool binds;
    bool connects;
} endpoint_use_t;

/*  The endpoints a role uses; returns how many. */
static int
endpoints_of (role_t role, role_t probe, qms_config_t *cfg, endpoint_use_t *uses)
{
    endpoint_use_t store = { "--store-endpoint", cfg->store_endpoint, false, false };
    endpoint_use_t auth = { "--auth-endpoint", cfg->auth_endpoint, false, false };
    endpoint_use_t router = { "--router-endpoint", cfg->router_endpoint, false, false };
    endpoint_use_t log = { "--log-endpoint", cfg->log_endpoint, false, true };
    int n = 0;
    switch (role) {
        case ROLE_ALL:
            store.binds = auth.binds = router.binds = true;
            store.connects = auth.connects = router.connects = true;
            uses [n++] = store; uses [n++] = auth; uses [n++] = router;
            break;
        case ROLE_GATEWAY:
            auth.connects = router.connects = true;
            uses [n++] = auth; uses [n++] = router;
            break;
        case ROLE_AUTH:
            auth.binds = store.connects = true;
            uses [n++] = auth; uses [n++] = store;
            break;
        case ROLE_ROUTER:
            router.binds = store.connects = true;
            uses [n++] = router; uses [n++] = store;
            break;
        case ROLE_STORE:
            store.binds = true;
            uses [n++] = store;
            break;
        case ROLE_MONITOR:
            log.binds = true;
            log.connects = false;
            break;
        case ROLE_HEALTH:
            /*  The endpoint of the role asked, and nothing else. */
            if (probe == ROLE_STORE) { store.connects = true; uses [n++] = store; }
            if (probe == ROLE_AUTH) { auth.connects = true; uses [n++] = auth; }
            if (probe == ROLE_ROUTER) { router.connects = true; uses [n++] = router; }
            if (probe == ROLE_MONITOR) uses [n++] = log;
            return n;
        default:
            break;
    }
    if (role == ROLE_MONITOR || cfg->log_endpoint [0])
        uses [n++] = log;
    return n;
}

/*  Every endpoint the role uses must suit it; in any role but all, none
    may be inproc:// (another process cannot reach it). */
static int
check_endpoints (role_t role, role_t probe, qms_config_t *cfg, char *err, size_t size)
{
    if ((role == ROLE_MONITOR || (role == ROLE_HEALTH && probe == ROLE_MONITOR))
    &&  !cfg->log_endpoint [0]) {
        snprintf (err, size, "the monitor needs --log-endpoint (or QMS_LOG_ENDPOINT), "
                  "e.g. tcp://127.0.0.1:5558");
        return -1;
    }
    endpoint_use_t uses [4];
    int count = endpoints_of (role, probe, cfg, uses);
    for (int i = 0; i < count; i++) {
        if (role != ROLE_ALL && strncmp (uses [i].endpoint, "inproc://", 9) == 0) {
            snprintf (err, size, "%s %s cannot be used %s the %s role: inproc:// works only "
                      "between the threads of one process; give a tcp:// or ipc:// endpoint "
                      "(docs/CLUSTER.md)", uses [i].option, uses [i].endpoint,
                      role == ROLE_HEALTH ? "to check" : "by",
                      s_roles [role == ROLE_HEALTH ? probe : role]);
            return -1;
        }
        if (qms_endpoint_check (uses [i].option, uses [i].endpoint, role == ROLE_ALL,
                                uses [i].connects, err, size))
            return -1;
    }
    return 0;
}

/*  A copy of cfg in which field (one of its endpoints) is in bind form:
    the actor that binds it gets this copy. */
static int
bind_copy (const qms_config_t *cfg, qms_config_t *copy, char *field_in_copy, size_t field_size,
           char *err, size_t err_size)
{
    *copy = *cfg;           /* shares the origins; only cfg frees them */
    char bound [256];
    if (qms_endpoint_bind_address (field_in_copy, bound, sizeof bound, err, err_size))
        return -1;
    snprintf (field_in_copy, field_size, "%s", bound);
    return 0;
}

/* ------------------------------------------------------------------------ */
/*  --health                                                                  */

/*  Any HTTP answer on the gateway's HTTP port within the deadline. */
static int
health_http (const qms_config_t *cfg, char *detail, size_t size)
{
    const char *host = cfg->bind_address [0] && !streq (cfg->bind_address, "0.0.0.0")
                     ? cfg->bind_address : "127.0.0.1";
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons ((uint16_t) cfg->http_port) };
    if (inet_pton (AF_INET, host, &addr.sin_addr) != 1) {
        snprintf (detail, size, "'%s' is not an IPv4 address", host);
        return -1;
    }
    int fd = socket (AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf (detail, size, "no socket: %s", strerror (errno));
        return -1;
    }
    int64_t deadline = zclock_mono () + HEALTH_TIMEOUT_MS;
    int rc = -1;
    struct pollfd pfd = { .fd = fd, .events = POLLOUT };
    if (connect (fd, (struct sockaddr *) &addr, sizeof addr) && errno != EINPROGRESS)
        snprintf (detail, size, "cannot connect to %s:%d: %s", host, cfg->http_port, strerror (errno));
    else
    if (poll (&pfd, 1, (int) (deadline - zclock_mono ())) != 1)
        snprintf (detail, size, "no connection to %s:%d within 2 s", host, cfg->http_port);
    else {
        int error = 0;
        socklen_t len = sizeof error;
        getsockopt (fd, SOL_SOCKET, SO_ERROR, &error, &len);
        char request [256];
        int n = snprintf (request, sizeof request, "GET / HTTP/1.0\r\nHost: %s:%d\r\n"
                          "User-Agent: qmessageserver-health\r\n\r\n", host, cfg->http_port);
        if (error)
            snprintf (detail, size, "cannot connect to %s:%d: %s", host, cfg->http_port, strerror (error));
        else
        if (send (fd, request, (size_t) n, MSG_NOSIGNAL) != n)
            snprintf (detail, size, "cannot send to %s:%d", host, cfg->http_port);
        else {
            char answer [64];
            size_t got = 0;
            pfd.events = POLLIN;
            while (got < 12) {
                int wait = (int) (deadline - zclock_mono ());
                if (wait <= 0 || poll (&pfd, 1, wait) != 1)
                    break;
                ssize_t r = recv (fd, answer + got, sizeof answer - 1 - got, 0);
                if (r <= 0)
                    break;
                got += (size_t) r;
            }
            answer [got] = 0;
            /*  "HTTP/1.1 200" or any other status: the loop answers. */
            if (got >= 12 && strncmp (answer, "HTTP/1.", 7) == 0 && answer [8] == ' ') {
                snprintf (detail, size, "HTTP %.3s from %s:%d", answer + 9, host, cfg->http_port);
                rc = 0;
            }
            else
                snprintf (detail, size, "no HTTP answer from %s:%d within 2 s", host, cfg->http_port);
        }
    }
    close (fd);
    return rc;
}

/*  Send one record and wait for the answer of the given type that carries
    the same conn and req. */
static int
health_zmq (const char *endpoint, const char *identity, const qms_rec_t *ask, int answer_type,
            char *detail, size_t size)
{
    zsock_t *dealer = zsock_new (ZMQ_DEALER);
    if (!dealer) {
        snprintf (detail, size, "cannot create a ZeroMQ socket");
        return -1;
    }
    qms_socket_tune (dealer);
    if (identity)
        zsock_set_identity (dealer, identity);
    int rc = -1;
    void *sock = zsock_resolve (dealer);
    if (qms_curve_connect (dealer, endpoint) || qms_rec_send (sock, NULL, 0, ask)) {
        snprintf (detail, size, "cannot connect to %s", endpoint);
        zsock_destroy (&dealer);
        return -1;
    }
    int64_t deadline = zclock_mono () + HEALTH_TIMEOUT_MS;
    while (rc != 0) {
        int64_t wait = deadline - zclock_mono ();
        zmq_pollitem_t item = { sock, 0, ZMQ_POLLIN, 0 };
        if (wait <= 0 || zmq_poll (&item, 1, (long) wait) <= 0)
            break;
        zmq_msg_t body;
        zmq_msg_init (&body);
        if (qms_batch_recv (sock, NULL, NULL, &body) == 1) {
            const uint8_t *data = (const uint8_t *) zmq_msg_data (&body);
            size_t offset = 0;
            qms_rec_t rec;
            while (qms_rec_next (data, zmq_msg_size (&body), &offset, &rec) == 1)
                if (rec.type == answer_type && rec.conn == ask->conn && rec.req == ask->req)
                    rc = 0;
        }
        zmq_msg_close (&body);
    }
    if (rc)
        snprintf (detail, size, "no answer from %s within 2 s", endpoint);
    else
        snprintf (detail, size, "%s answered", endpoint);
    zsock_destroy (&dealer);
    return rc;
}

/*  A monitor has no socket that answers: a completed ZeroMQ handshake with
    its SUB socket shows that it is up. */
static int
health_monitor (const char *endpoint, char *detail, size_t size)
{
    zsock_t *pub = zsock_new (ZMQ_PUB);
    zactor_t *watch = pub ? zactor_new (zmonitor, pub) : NULL;
    int rc = -1;
    snprintf (detail, size, "no ZeroMQ handshake with %s within 2 s", endpoint);
    if (watch) {
        zsock_set_linger (pub, 0);
        zstr_sendx (watch, "LISTEN", "HANDSHAKE_SUCCEEDED", NULL);
        zstr_send (watch, "START");
        zsock_wait (watch);
        if (qms_curve_connect (pub, endpoint) == 0) {
            int64_t deadline = zclock_mono () + HEALTH_TIMEOUT_MS;
            zsock_t *events = zactor_sock (watch);
            while (rc && zclock_mono () < deadline) {
                zsock_set_rcvtimeo (events, (int) (deadline - zclock_mono ()));
                char *name = NULL;
                if (zstr_recvx (events, &name, NULL) < 0)
                    break;
                if (name && streq (name, "HANDSHAKE_SUCCEEDED")) {
                    rc = 0;
                    snprintf (detail, size, "%s completed a ZeroMQ handshake", endpoint);
                }
                zstr_free (&name);
            }
        }
    }
    zactor_destroy (&watch);
    zsock_destroy (&pub);
    return rc;
}

static int
run_health (role_t probe, const qms_config_t *cfg)
{
    char detail [600] = "";
    uint64_t nonce = 0;
    qms_random (&nonce, sizeof nonce);
    nonce = (nonce & 0xFFFFFFFFFFFFull) | 1;        /* non-zero, inside a conn handle */
    int64_t began = zclock_mono ();
    int rc;
    if (probe == ROLE_STORE) {
        /*  A user lookup: the store runs a query and always answers. */
        qms_rec_t ask = { .type = QMS_ST_USER_GET, .req = nonce };
        rc = health_zmq (cfg->store_endpoint, NULL, &ask, QMS_ST_USER, detail, sizeof detail);
    }
    else
    if (probe == ROLE_AUTH) {
        /*  The gateways' heartbeat: auth answers it at once, and logs nothing. */
        qms_rec_t ask = { .type = QMS_AUTH_PING };
        rc = health_zmq (cfg->auth_endpoint, NULL, &ask, QMS_AUTH_PONG, detail, sizeof detail);
    }
    else
    if (probe == ROLE_ROUTER) {
        /*  Its figures, briefly: the router answers a peer that asks only
            for them without taking it for a gateway (no gateway slot, no
            gateway_new and gateway_lost lines for every probe). */
        qms_rec_t ask = { .type = QMS_STATS_GET, .req = nonce | QMS_STATS_BRIEF };
        rc = health_zmq (cfg->router_endpoint, NULL, &ask, QMS_STATS, detail, sizeof detail);
    }
    else
    if (probe == ROLE_MONITOR)
        rc = health_monitor (cfg->log_endpoint, detail, sizeof detail);
    else
        rc = health_http (cfg, detail, sizeof detail);
    if (rc == 0) {
        printf ("qmessageserver: %s is healthy: %s in %d ms\n", s_roles [probe], detail,
                (int) (zclock_mono () - began));
        return 0;
    }
    fprintf (stderr, "qmessageserver: %s is not healthy: %s\n", s_roles [probe], detail);
    return EXIT_UNHEALTHY;
}

/* ------------------------------------------------------------------------ */
/*  Running a role.                                                           */

/*  With --metrics-port, the role's own /metrics, /healthz and /readyz
    (qms_ops.h), asking its actor at the endpoint it bound. */
static ops_port_t *
start_ops (const qms_config_t *cfg, const char *name, const char *endpoint, bool store)
{
    char local [300], database [1100], err [512];
    if (qms_ops_local_endpoint (endpoint, local, sizeof local)) {
        qms_error ("main", "event=start_failed reason=\"--metrics-port: cannot reach %s from this "
                   "process (give a fixed port, and an interface with an IPv4 address)\"", endpoint);
        return NULL;
    }
    snprintf (database, sizeof database, "%s/users.db", cfg->data_dir [0] ? cfg->data_dir : ".");
    ops_port_options_t options = {
        .role = name, .endpoint = local, .bind_address = cfg->bind_address,
        .port = cfg->metrics_port, .database = store ? database : NULL, .version = QMS_VERSION
    };
    ops_port_t *ops = ops_port_new (&options, err, sizeof err);
    if (!ops)
        qms_error ("main", "event=start_failed reason=\"--metrics-port %d: %s\"", cfg->metrics_port, err);
    return ops;
}

/*  The watchdog thread takes the stop signals (qms_watchdog.h); a role
    that waits in the main thread hears of them through this pipe. */
static int s_stop_pipe [2] = { -1, -1 };

static void
stop_by_pipe (int signo, void *arg)
{
    (void) arg;
    ssize_t rc = write (s_stop_pipe [1], &signo, sizeof signo);
    (void) rc;
}

static int
wait_for_stop (void)
{
    int signo = 0;
    if (pipe (s_stop_pipe))
        return 0;
    qms_watchdog_on_stop (stop_by_pipe, NULL);
    while (read (s_stop_pipe [0], &signo, sizeof signo) < 0 && errno == EINTR)
        ;
    return signo;
}

/*  One actor as the whole process: the main thread waits for a stop
    signal. */
static int
run_actor (zactor_fn *fn, qms_config_t *actor_cfg, const char *name, const char *endpoint)
{
    zactor_t *actor = qms_actor_start (fn, actor_cfg, name);
    if (!actor)
        return EXIT_CANNOT_START;
    ops_port_t *ops = NULL;
    if (actor_cfg->metrics_port) {
        ops = start_ops (actor_cfg, name, endpoint, fn == store_actor);
        if (!ops) {
            zactor_destroy (&actor);
            return EXIT_CANNOT_START;
        }
    }
    if (ops)
        qms_info ("main", "event=ready role=%s endpoint=%s metrics_port=%d", name, endpoint,
                  ops_port_port (ops));
    else
        qms_info ("main", "event=ready role=%s endpoint=%s", name, endpoint);
    int signo = wait_for_stop ();
    qms_info ("main", "event=stopping signal=%d", signo);
    ops_port_destroy (&ops);
    zactor_destroy (&actor);
    return 0;
}

static void
stop_gateway (int signo, void *gateway)
{
    gateway_stop ((gateway_t *) gateway, signo);
}

static int
run_gateway (qms_config_t *cfg)
{
    gateway_t *gateway = gateway_new (cfg, true);
    if (!gateway)
        return EXIT_CANNOT_START;
    qms_watchdog_on_stop (stop_gateway, gateway);
    qms_info ("main", "event=ready chat=%s://%s:%d/ web=http://%s:%d/",
              qms_config_wss (cfg) ? "wss" : "ws", cfg->server_ip, cfg->chat_port,
              cfg->server_ip, cfg->http_port);
    int rc = gateway_run (gateway);
    qms_watchdog_on_stop (NULL, NULL);
    gateway_destroy (&gateway);
    return rc;
}

/*  Every actor in this process: each binding actor gets a copy of the
    settings with its own endpoint in bind form. */
static int
run_all (qms_config_t *cfg)
{
    static qms_config_t store_cfg, auth_cfg, router_cfg;
    char err [512];
    if (bind_copy (cfg, &store_cfg, store_cfg.store_endpoint, sizeof store_cfg.store_endpoint, err, sizeof err)
    ||  bind_copy (cfg, &auth_cfg, auth_cfg.auth_endpoint, sizeof auth_cfg.auth_endpoint, err, sizeof err)
    ||  bind_copy (cfg, &router_cfg, router_cfg.router_endpoint, sizeof router_cfg.router_endpoint,
                   err, sizeof err)) {
        qms_error ("main", "event=start_failed reason=\"%s\"", err);
        return EXIT_CANNOT_START;
    }
    zactor_t *store = NULL, *auth = NULL, *router = NULL;
    int rc = EXIT_CANNOT_START;
    store = qms_actor_start (store_actor, &store_cfg, "store");
    if (store)
        auth = qms_actor_start (auth_actor, &auth_cfg, "auth");
    if (auth)
        router = qms_actor_start (router_actor, &router_cfg, "router");
    if (router)
        rc = run_gateway (cfg);
    /*  Stop in the reverse order of the data flow: the store goes last, so
        that what the router and auth still send reaches the database. */
    zactor_destroy (&router);
    zactor_destroy (&auth);
    zactor_destroy (&store);
    return rc;
}

/*  The actor of a single-actor role, with its endpoint in bind form. */
static int
run_one (role_t role, qms_config_t *cfg)
{
    static qms_config_t copy;
    char err [512];
    char *field = role == ROLE_STORE ? copy.store_endpoint
                : role == ROLE_AUTH ? copy.auth_endpoint : copy.router_endpoint;
    if (bind_copy (cfg, &copy, field, sizeof copy.store_endpoint, err, sizeof err)) {
        qms_error ("main", "event=start_failed reason=\"%s\"", err);
        return EXIT_CANNOT_START;
    }
    zactor_fn *fn = role == ROLE_STORE ? store_actor : role == ROLE_AUTH ? auth_actor : router_actor;
    return run_actor (fn, &copy, s_roles [role], field);
}

static int
run_monitor (const qms_config_t *cfg, const sigset_t *stop)
{
    char bound [256], err [512];
    if (qms_endpoint_bind_address (cfg->log_endpoint, bound, sizeof bound, err, sizeof err)) {
        fprintf (stderr, "qmessageserver: %s\n", err);
        return EXIT_CANNOT_START;
    }
    monitor_options_t options = {
        .endpoint = bound, .filter_actor = cfg->filter_actor, .filter_level = cfg->filter_level,
        .colour = isatty (STDOUT_FILENO) && !getenv ("NO_COLOR")
    };
    int sfd = signalfd (-1, stop, SFD_CLOEXEC | SFD_NONBLOCK);
    monitor_t *monitor = sfd >= 0 ? monitor_new (&options, stdout, err, sizeof err) : NULL;
    if (!monitor) {
        fprintf (stderr, "qmessageserver: %s\n", sfd >= 0 ? err : "cannot watch signals");
        if (sfd >= 0)
            close (sfd);
        return EXIT_CANNOT_START;
    }
    qms_info ("monitor", "event=ready endpoint=%s filter_actor=\"%s\" filter_level=%s",
              monitor_endpoint (monitor), cfg->filter_actor, qms_log_level_name (cfg->filter_level));
    monitor_run (monitor, sfd);
    struct signalfd_siginfo info = { 0 };
    if (read (sfd, &info, sizeof info) != (ssize_t) sizeof info)
        info.ssi_signo = 0;
    qms_info ("monitor", "event=stopping signal=%u", info.ssi_signo);
    monitor_destroy (&monitor);
    close (sfd);
    return 0;
}

/*  Who publishes, for the monitor: role, host and process. */
static void
log_source (role_t role, const qms_config_t *cfg, char *out, size_t size)
{
    char host [128] = "?";
    gethostname (host, sizeof host - 1);
    host [sizeof host - 1] = 0;
    if (role == ROLE_GATEWAY || role == ROLE_ALL)
        snprintf (out, size, "%s:%d@%s/%d", s_roles [role], cfg->chat_port, host, (int) getpid ());
    else
        snprintf (out, size, "%s@%s/%d", s_roles [role], host, (int) getpid ());
}

/*  TLS set-up for the roles that serve clients: 0, or an exit code. */
static int
prepare_tls (qms_config_t *cfg)
{
    char err [1024];
    if (cfg->self_signed
    &&  tls_self_signed_ensure (cfg->data_dir, cfg->server_ip, cfg->ssl_cert, cfg->ssl_key,
                                sizeof cfg->ssl_cert, err, sizeof err)) {
        fprintf (stderr, "qmessageserver: %s\n", err);
        return EXIT_CANNOT_START;
    }
    if ((qms_config_https (cfg) || qms_config_wss (cfg)) && gateway_check_tls (cfg, err, sizeof err)) {
        fprintf (stderr, "qmessageserver: %s\n", err);
        return EXIT_BAD_USAGE;
    }
    return 0;
}

static int
run_role (role_t role, qms_config_t *cfg, const sigset_t *stop)
{
    if (role == ROLE_ALL || role == ROLE_GATEWAY) {
        int rc = prepare_tls (cfg);
        if (rc)
            return rc;
    }
    qms_log_set_level (cfg->log_level);
    if (role == ROLE_MONITOR)
        return run_monitor (cfg, stop);

    if (cfg->log_endpoint [0]) {
        char source [300];
        log_source (role, cfg, source, sizeof source);
        if (qms_log_publish_start (cfg->log_endpoint, source)) {
            fprintf (stderr, "qmessageserver: --log-endpoint %s cannot be used\n", cfg->log_endpoint);
            return EXIT_BAD_USAGE;
        }
    }
    if (role == ROLE_ALL || role == ROLE_GATEWAY)
        qms_info ("main", "event=starting version=%s role=%s chat_port=%d http_port=%d https=%s wss=%s "
                  "data_dir=\"%s\"", QMS_VERSION, s_roles [role], cfg->chat_port, cfg->http_port,
                  qms_config_https (cfg) ? "on" : "off", qms_config_wss (cfg) ? "on" : "off", cfg->data_dir);
    else
        qms_info ("main", "event=starting version=%s role=%s", QMS_VERSION, s_roles [role]);

    /*  From here a stop signal always ends the process within
        --drain-timeout, even if a thread is stuck. */
    if (qms_watchdog_start (stop, cfg->drain_timeout)) {
        qms_error ("main", "event=start_failed reason=\"cannot start the watchdog thread\"");
        qms_log_publish_stop ();
        return EXIT_CANNOT_START;
    }
    int rc = role == ROLE_ALL ? run_all (cfg)
           : role == ROLE_GATEWAY ? run_gateway (cfg)
           : run_one (role, cfg);
    if (rc == 0)
        qms_info ("main", "event=exit status=0");
    qms_log_publish_stop ();
    return rc;
}

/*  qmessageserver keys DIR: a deployment's CURVE keys (qms_curve.h). */
static int
make_keys (int argc, char **argv)
{
    if (argc != 3 || argv [2][0] == '-') {
        fprintf (stderr, "usage: qmessageserver keys DIR\n"
                 "  makes the CURVE keys every role of one deployment loads with --curve-keys DIR\n");
        return EXIT_BAD_USAGE;
    }
    char err [512];
    if (qms_curve_generate (argv [2], err, sizeof err)) {
        fprintf (stderr, "qmessageserver: %s\n", err);
        return 1;
    }
    printf ("qmessageserver: keys written to %s (give every role --curve-keys %s)\n", argv [2], argv [2]);
    return 0;
}

/*  Whether an endpoint the role uses is on the network. */
static bool
uses_tcp (const qms_config_t *cfg)
{
    const char *all [] = { cfg->store_endpoint, cfg->auth_endpoint, cfg->router_endpoint,
                           cfg->log_endpoint };
    for (size_t i = 0; i < sizeof all / sizeof all [0]; i++)
        if (strncmp (all [i], "tcp://", 6) == 0)
            return true;
    return false;
}

int
main (int argc, char **argv)
{
    /*  CZMQ must not install its own signal handlers: the watchdog thread
        takes SIGINT and SIGTERM (the monitor reads them from a signalfd).
        Block them before any thread starts, so every thread inherits the
        mask. */
    zsys_handler_set (NULL);
    /*  The administration commands are clients of a store, not a role:
        they keep the default signal handling (docs/ADMIN.md). */
    if (argc > 1 && admin_is_command (argv [1]))
        return admin_main (argc, argv);
    if (argc == 2 && (strcmp (argv [1], "--version") == 0 || strcmp (argv [1], "-V") == 0)) {
        printf ("qmessageserver %s\n", QMS_VERSION);
        return 0;
    }
    if (argc > 1 && strcmp (argv [1], "keys") == 0)
        return make_keys (argc, argv);
    static const int stop_signals [] = { SIGINT, SIGTERM, 0 };
    sigset_t set;
    sigemptyset (&set);
    for (const int *s = stop_signals; *s; s++)
        sigaddset (&set, *s);
    pthread_sigmask (SIG_BLOCK, &set, NULL);
    /*  SIGHUP asks a gateway to reload its TLS certificate (it reads it from
        its signalfd); other roles ignore it. */
    sigset_t hup;
    sigemptyset (&hup);
    sigaddset (&hup, SIGHUP);
    pthread_sigmask (SIG_BLOCK, &hup, NULL);
    signal (SIGPIPE, SIG_IGN);

    role_t role, probe;
    take_role (&argc, argv, &role, &probe);
    qms_config_t cfg;
    qms_config_defaults (&cfg);
    char err [1024];
    /*  The file (--config, QMS_CONFIG), the environment (QMS_*), then the
        flags; -help and --print-config answer 1 (docs/CONFIG.md). */
    int rc = qms_config_load (&cfg, argc, argv, err, sizeof err, stdout);
    if (rc == 0 && check_endpoints (role, probe, &cfg, err, sizeof err))
        rc = -1;
    if (rc == 1) {
        qms_config_free (&cfg);
        return 0;
    }
    if (rc < 0) {
        fprintf (stderr, "qmessageserver: %s\n", err);
        qms_config_free (&cfg);
        return EXIT_BAD_USAGE;
    }
    qms_log_set_format (cfg.log_format);
    if (qms_curve_init (cfg.curve_keys, err, sizeof err)) {
        fprintf (stderr, "qmessageserver: %s\n", err);
        qms_config_free (&cfg);
        return EXIT_BAD_USAGE;
    }
    if (role != ROLE_HEALTH && !qms_curve_on () && uses_tcp (&cfg))
        qms_warn ("main", "event=links_unauthenticated reason=\"tcp:// actor endpoints without "
                  "--curve-keys: any process that reaches these ports can send records\"");
    rc = role == ROLE_HEALTH ? run_health (probe, &cfg) : run_role (role, &cfg, &set);
    qms_curve_shutdown ();
    qms_config_free (&cfg);
    return rc;
}
