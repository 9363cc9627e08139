/*  qms_config.c - settings and command line (see qms_config.h). */
#include "qms_config.h"
#include "qms_log.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <netdb.h>
#include <sys/stat.h>
#include <unistd.h>

typedef enum { OPT_PORT, OPT_INT, OPT_SIZE, OPT_STRING, OPT_FILE, OPT_DIR,
               OPT_FLAG, OPT_LEVEL, OPT_ORIGIN, OPT_HELP } opt_kind_t;

typedef struct {
    const char *names [4];      /* without dashes */
    opt_kind_t kind;
    size_t offset;              /* into qms_config_t */
    size_t size;                /* for strings */
    long min, max;              /* for numbers */
    const char *arg;            /* for usage */
    const char *help;
} opt_t;

#define OFF(f) offsetof (qms_config_t, f)
#define SZ(f) sizeof (((qms_config_t *) 0)->f)

static const opt_t s_options [] = {
    { { "chatServerPort", "csp", "cp" }, OPT_PORT, OFF (chat_port), 0, 1, 65535, "PORT",
      "WebSocket chat port (default 12345)" },
    { { "httpServerPort", "httpPort", "hp" }, OPT_PORT, OFF (http_port), 0, 1, 65535, "PORT",
      "HTTP port for the web UI (default 8080)" },
    { { "httpsServerPort", "httpsPort", "hsp" }, OPT_PORT, OFF (https_port), 0, 1, 65535, "PORT",
      "HTTPS port, when a certificate and key are given (default 8443)" },
    { { "serverIp", "ip" }, OPT_STRING, OFF (server_ip), SZ (server_ip), 0, 0, "HOST",
      "address written into the UI's placeholders (default localhost)" },
    { { "sslCertificate", "sslcert" }, OPT_FILE, OFF (ssl_cert), SZ (ssl_cert), 0, 0, "FILE",
      "PEM certificate: turns on HTTPS and WSS" },
    { { "sslPrivateKey", "sslprvkey" }, OPT_FILE, OFF (ssl_key), SZ (ssl_key), 0, 0, "FILE",
      "PEM private key of that certificate" },
    { { "disableHttps" }, OPT_FLAG, OFF (disable_https), 0, 0, 0, NULL,
      "no HTTPS even with a certificate" },
    { { "disableWss" }, OPT_FLAG, OFF (disable_wss), 0, 0, 0, NULL,
      "plain ws:// on the chat port even with a certificate" },
    { { "self-signed" }, OPT_FLAG, OFF (self_signed), 0, 0, 0, NULL,
      "HTTPS and WSS with a certificate made once in the data directory (development)" },
    { { "reuse-port" }, OPT_FLAG, OFF (reuse_port), 0, 0, 0, NULL,
      "let several gateways on this host listen on the same ports (SO_REUSEPORT; the kernel spreads connections)" },
    { { "help", "h" }, OPT_HELP, 0, 0, 0, 0, NULL, "this text" },

    { { "bind" }, OPT_STRING, OFF (bind_address), SZ (bind_address), 0, 0, "ADDR",
      "listen on this IPv4 address only (default: every interface)" },
    { { "data-dir" }, OPT_DIR, OFF (data_dir), SZ (data_dir), 0, 0, "DIR",
      "where users.db lives (default: the working directory)" },
    { { "html-dir" }, OPT_DIR, OFF (html_dir), SZ (html_dir), 0, 0, "DIR",
      "the web UI's files (default ./html)" },
    { { "session-timeout" }, OPT_INT, OFF (session_timeout), 0, 1, 31536000, "SECONDS",
      "a session ends after this long without activity (default 600)" },
    { { "log-level" }, OPT_LEVEL, OFF (log_level), 0, 0, 0, "LEVEL",
      "error, warn, info or debug (default info)" },
    { { "argon2-memory" }, OPT_INT, OFF (argon2_memory_kib), 0, 8, 4194304, "KIB",
      "Argon2id memory per hash in KiB (default 19456; lower only for benchmarks)" },
    { { "argon2-iterations" }, OPT_INT, OFF (argon2_iterations), 0, 1, 100, "N",
      "Argon2id passes (default 2)" },
    { { "auth-workers" }, OPT_INT, OFF (auth_workers), 0, 1, 64, "N",
      "threads that hash passwords (default 2)" },
    { { "max-connections" }, OPT_INT, OFF (max_connections), 0, 1, 1000000, "N",
      "open WebSocket connections per gateway (default 10000)" },
    { { "rate-limit" }, OPT_INT, OFF (rate_messages), 0, 1, 10000000, "N",
      "requests per second per connection (default 2000)" },
    { { "rate-burst" }, OPT_INT, OFF (rate_burst), 0, 1, 10000000, "N",
      "requests a connection may send at once above the rate (default 4000)" },
    { { "max-queue" }, OPT_SIZE, OFF (max_queue_bytes), 0, 65536, 1073741824, "BYTES",
      "bytes queued to one slow reader before it is closed (default 8388608)" },
    { { "login-fail-limit" }, OPT_INT, OFF (login_fail_limit), 0, 1, 1000000, "N",
      "failed logins per name or address before a pause (default 5)" },
    { { "login-fail-window" }, OPT_INT, OFF (login_fail_window), 0, 1, 86400, "SECONDS",
      "how long failed logins count (default 300)" },
    { { "message-quota" }, OPT_INT, OFF (message_quota), 0, 1, 10000000, "N",
      "messages stored for one offline recipient (default 10000)" },
    { { "message-max-age" }, OPT_INT, OFF (message_max_age), 0, 1, 3650, "DAYS",
      "days a stored message waits for its recipient (default 30)" },
    { { "presence-interval" }, OPT_INT, OFF (presence_interval_ms), 0, 0, 60000, "MS",
      "at most one user-list push per connection per this many ms (default 250)" },
    { { "ping-interval" }, OPT_INT, OFF (ping_interval), 0, 0, 3600, "SECONDS",
      "ping a silent WebSocket after this long, close it if still silent as long again (default 30, 0 = never)" },
    { { "max-connections-per-address" }, OPT_INT, OFF (max_per_address), 0, 1, 1000000, "N",
      "WebSocket connections from one IP address (default 1000)" },
    { { "allow-origin" }, OPT_ORIGIN, 0, 0, 0, 0, "ORIGIN",
      "also accept WebSocket handshakes from this browser origin (repeatable)" },
    { { "store-endpoint" }, OPT_STRING, OFF (store_endpoint), SZ (store_endpoint), 0, 0, "URL",
      "ZeroMQ endpoint of the store actor" },
    { { "auth-endpoint" }, OPT_STRING, OFF (auth_endpoint), SZ (auth_endpoint), 0, 0, "URL",
      "ZeroMQ endpoint of the auth actor" },
    { { "router-endpoint" }, OPT_STRING, OFF (router_endpoint), SZ (router_endpoint), 0, 0, "URL",
      "ZeroMQ endpoint of the router actor" },
    { { "log-endpoint" }, OPT_STRING, OFF (log_endpoint), SZ (log_endpoint), 0, 0, "URL",
      "publish log lines to the monitor bound there (the monitor role binds it)" },
    { { "filter-actor" }, OPT_STRING, OFF (filter_actor), SZ (filter_actor), 0, 0, "NAME",
      "monitor: show only this actor's lines (store, auth, router, gateway, main, monitor)" },
    { { "filter-level" }, OPT_LEVEL, OFF (filter_level), 0, 0, 0, "LEVEL",
      "monitor: show only lines of this level or more severe (default debug: all)" },
};

#define OPTION_COUNT (sizeof s_options / sizeof s_options [0])

void
qms_config_defaults (qms_config_t *cfg)
{
    memset (cfg, 0, sizeof *cfg);
    cfg->chat_port = 12345;
    cfg->http_port = 8080;
    cfg->https_port = 8443;
    strcpy (cfg->server_ip, "localhost");
    strcpy (cfg->data_dir, ".");
    strcpy (cfg->html_dir, "html");
    cfg->session_timeout = 600;
    cfg->log_level = QMS_LOG_INFO;
    cfg->argon2_memory_kib = 19456;
    cfg->argon2_iterations = 2;
    cfg->auth_workers = 2;
    cfg->max_connections = 10000;
    cfg->rate_messages = 2000;
    cfg->rate_burst = 4000;
    cfg->max_queue_bytes = 8u * 1024 * 1024;
    cfg->login_fail_limit = 5;
    cfg->login_fail_window = 300;
    cfg->message_quota = 10000;
    cfg->message_max_age = 30;
    cfg->presence_interval_ms = 250;
    cfg->ping_interval = 30;
    cfg->max_per_address = 1000;
    strcpy (cfg->store_endpoint, "inproc://qms-store");
    strcpy (cfg->auth_endpoint, "inproc://qms-auth");
    strcpy (cfg->router_endpoint, "inproc://qms-router");
    cfg->filter_level = QMS_LOG_DEBUG;
}

int
qms_config_env (qms_config_t *cfg, char *err, size_t err_size)
{
    struct { const char *name; char *field; size_t size; } vars [] = {
        { "QMS_STORE_ENDPOINT", cfg->store_endpoint, sizeof cfg->store_endpoint },
        { "QMS_AUTH_ENDPOINT", cfg->auth_endpoint, sizeof cfg->auth_endpoint },
        { "QMS_ROUTER_ENDPOINT", cfg->router_endpoint, sizeof cfg->router_endpoint },
        { "QMS_LOG_ENDPOINT", cfg->log_endpoint, sizeof cfg->log_endpoint },
    };
    for (size_t i = 0; i < sizeof vars / sizeof vars [0]; i++) {
        const char *value = getenv (vars [i].name);
        if (!value || !*value)
            continue;           /* unset or empty: the default stands */
        if (strlen (value) >= vars [i].size) {
            snprintf (err, err_size, "environment variable %s: value is too long", vars [i].name);
            return -1;
        }
        strcpy (vars [i].field, value);
    }
    return 0;
}

static int parse_long (const char *text, long *value);

/*  Split tcp://HOST:PORT (HOST may be [v6]); false if it is not that. */
static bool
split_tcp (const char *endpoint, char *host, size_t host_size, const char **port)
{
    if (strncmp (endpoint, "tcp://", 6))
        return false;
    const char *h = endpoint + 6;
    const char *colon = strrchr (h, ':');
    if (!colon || colon == h || !colon [1] || (size_t) (colon - h) >= host_size)
        return false;
    memcpy (host, h, (size_t) (colon - h));
    host [colon - h] = 0;
    *port = colon + 1;
    return true;
}

static bool
port_valid (const char *port, bool wildcard_ok)
{
    if (wildcard_ok && strcmp (port, "*") == 0)
        return true;
    long number;
    return parse_long (port, &number) == 0 && number >= 1 && number <= 65535;
}

int
qms_endpoint_check (const char *option, const char *endpoint, bool inproc_ok,
                    bool connects, char *err, size_t err_size)
{
    if (strncmp (endpoint, "inproc://", 9) == 0) {
        if (endpoint [9] && inproc_ok)
            return 0;
        snprintf (err, err_size, endpoint [9]
                  ? "%s %s: inproc:// only works between the threads of one process; give a tcp:// or ipc:// endpoint"
                  : "%s '%s' names no endpoint", option, endpoint);
        return -1;
    }
    if (strncmp (endpoint, "ipc://", 6) == 0) {
        if (endpoint [6] && !(connects && strcmp (endpoint + 6, "*") == 0))
            return 0;
        snprintf (err, err_size, "%s '%s': give the socket file's path", option, endpoint);
        return -1;
    }
    char host [256];
    const char *port;
    if (!split_tcp (endpoint, host, sizeof host, &port) || !port_valid (port, !connects)) {
        snprintf (err, err_size, "%s '%s' is not tcp://HOST:PORT, ipc://PATH%s",
                  option, endpoint, inproc_ok ? " or inproc://NAME" : "");
        return -1;
    }
    if (connects && strcmp (host, "*") == 0) {
        snprintf (err, err_size, "%s '%s': '*' can be bound but not connected to; give the "
                  "host name or address the others reach it at (the side that binds listens there)",
                  option, endpoint);
        return -1;
    }
    return 0;
}

int
qms_endpoint_bind_address (const char *endpoint, char *out, size_t out_size,
                           char *err, size_t err_size)
{
    char host [256];
    const char *port;
    struct in_addr ipv4;
    if (!split_tcp (endpoint, host, sizeof host, &port)
    ||  strcmp (host, "*") == 0 || host [0] == '['
    ||  inet_pton (AF_INET, host, &ipv4) == 1 || if_nametoindex (host)) {
        if (strlen (endpoint) >= out_size) {
            snprintf (err, err_size, "endpoint '%s' is too long", endpoint);
            return -1;
        }
        strcpy (out, endpoint);
        return 0;
    }
    struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM };
    struct addrinfo *found = NULL;
    int rc = getaddrinfo (host, NULL, &hints, &found);
    if (rc || !found) {
        snprintf (err, err_size, "cannot bind %s: host name '%s' does not resolve here (%s)",
                  endpoint, host, rc ? gai_strerror (rc) : "no IPv4 address");
        if (found)
            freeaddrinfo (found);
        return -1;
    }
    char address [INET_ADDRSTRLEN];
    inet_ntop (AF_INET, &((struct sockaddr_in *) found->ai_addr)->sin_addr, address, sizeof address);
    freeaddrinfo (found);
    if ((size_t) snprintf (out, out_size, "tcp://%s:%s", address, port) >= out_size) {
        snprintf (err, err_size, "endpoint '%s' is too long", endpoint);
        return -1;
    }
    return 0;
}

void
qms_config_free (qms_config_t *cfg)
{
    for (int i = 0; i < cfg->origin_count; i++)
        free (cfg->origins [i]);
    cfg->origin_count = 0;
}

bool
qms_config_https (const qms_config_t *cfg)
{
    return cfg->ssl_cert [0] && cfg->ssl_key [0] && !cfg->disable_https;
}

bool
qms_config_wss (const qms_config_t *cfg)
{
    return cfg->ssl_cert [0] && cfg->ssl_key [0] && !cfg->disable_wss;
}

void
qms_config_usage (FILE *out)
{
    fprintf (out,
        "Usage: qmessageserver [ROLE] [options]\n"
        "       qmessageserver --health [ROLE] [options]\n"
        "A self-hosted chat server: WebSocket chat, a web UI over HTTP(S), users in SQLite.\n"
        "ROLE is all (the default: every actor in this process), gateway, auth, router,\n"
        "store or monitor (one per process, on tcp:// or ipc:// endpoints; see docs/CLUSTER.md).\n"
        "--health ROLE exits 0 when that role answers within 2 s, 1 when it does not.\n"
        "Options take one or two dashes; a value follows as the next argument or after '='.\n"
        "QMS_STORE_ENDPOINT, QMS_AUTH_ENDPOINT, QMS_ROUTER_ENDPOINT and QMS_LOG_ENDPOINT in\n"
        "the environment set the endpoints' defaults.\n\n");
    for (size_t i = 0; i < OPTION_COUNT; i++) {
        const opt_t *o = &s_options [i];
        char names [128] = "";
        for (int n = 0; n < 4 && o->names [n]; n++) {
            if (n)
                strcat (names, "|");
            strcat (names, "-");
            strcat (names, o->names [n]);
        }
        if (o->arg) {
            strcat (names, " ");
            strcat (names, o->arg);
        }
        fprintf (out, "  %-44s %s\n", names, o->help);
    }
    fprintf (out, "\nExit codes: 0 after a clean shutdown, 2 for a bad option or value,\n"
                  "1 when the server cannot start (a port in use, an unusable data directory).\n");
}

static void
set_err (char *err, size_t size, const char *fmt, ...)
{
    va_list args;
    va_start (args, fmt);
    vsnprintf (err, size, fmt, args);
    va_end (args);
}

static const opt_t *
find_option (const char *name, size_t len)
{
    for (size_t i = 0; i < OPTION_COUNT; i++)
        for (int n = 0; n < 4 && s_options [i].names [n]; n++)
            if (strlen (s_options [i].names [n]) == len
            &&  strncmp (s_options [i].names [n], name, len) == 0)
                return &s_options [i];
    return NULL;
}

static int
parse_long (const char *text, long *value)
{
    if (!*text)
        return -1;
    errno = 0;
    char *end;
    *value = strtol (text, &end, 10);
    if (errno || *end)
        return -1;
    return 0;
}

int
qms_config_parse (qms_config_t *cfg, int argc, char **argv,
                  char *err, size_t err_size, FILE *out)
{
    for (int i = 1; i < argc; i++) {
        const char *arg = argv [i];
        if (arg [0] != '-' || arg [1] == 0) {
            set_err (err, err_size, "unexpected argument '%s' (see -help)", arg);
            return -1;
        }
        const char *name = arg + 1;
        if (*name == '-')
            name++;
        const char *equals = strchr (name, '=');
        size_t name_len = equals ? (size_t) (equals - name) : strlen (name);
        const opt_t *o = find_option (name, name_len);
        if (!o) {
            set_err (err, err_size, "unknown option '%s' (see -help)", arg);
            return -1;
        }
        if (o->kind == OPT_HELP) {
            qms_config_usage (out);
            return 1;
        }
        if (o->kind == OPT_FLAG) {
            if (equals) {
                set_err (err, err_size, "option '-%s' takes no value", o->names [0]);
                return -1;
            }
            *(bool *) ((char *) cfg + o->offset) = true;
            continue;
        }
        const char *value;
        if (equals)
            value = equals + 1;
        else
        if (i + 1 < argc)
            value = argv [++i];
        else {
            set_err (err, err_size, "option '-%s' needs a value (%s)", o->names [0], o->arg);
            return -1;
        }
        long number;
        struct stat st;
        switch (o->kind) {
            case OPT_PORT:
            case OPT_INT:
            case OPT_SIZE:
                if (parse_long (value, &number) || number < o->min || number > o->max) {
                    set_err (err, err_size, "option '-%s': '%s' is not %s from %ld to %ld",
                             o->names [0], value, o->kind == OPT_PORT ? "a port" : "a whole number",
                             o->min, o->max);
                    return -1;
                }
                if (o->kind == OPT_SIZE)
                    *(size_t *) ((char *) cfg + o->offset) = (size_t) number;
                else
                if (o->offset == OFF (argon2_memory_kib) || o->offset == OFF (argon2_iterations))
                    *(uint32_t *) ((char *) cfg + o->offset) = (uint32_t) number;
                else
                    *(int *) ((char *) cfg + o->offset) = (int) number;
                break;
            case OPT_STRING:
            case OPT_FILE:
            case OPT_DIR:
                if (!*value && o->kind != OPT_STRING) {
                    set_err (err, err_size, "option '-%s' needs a non-empty %s", o->names [0], o->arg);
                    return -1;
                }
                if (strlen (value) >= o->size) {
                    set_err (err, err_size, "option '-%s': value is too long", o->names [0]);
                    return -1;
                }
                if (o->kind == OPT_FILE
                && (stat (value, &st) || !S_ISREG (st.st_mode) || access (value, R_OK))) {
                    set_err (err, err_size, "option '-%s': cannot read file '%s'", o->names [0], value);
                    return -1;
                }
                if (o->kind == OPT_DIR && (stat (value, &st) || !S_ISDIR (st.st_mode))) {
                    set_err (err, err_size, "option '-%s': '%s' is not a directory", o->names [0], value);
                    return -1;
                }
                strcpy ((char *) cfg + o->offset, value);
                break;
            case OPT_LEVEL:
                *(int *) ((char *) cfg + o->offset) = qms_log_level_parse (value);
                if (*(int *) ((char *) cfg + o->offset) < 0) {
                    set_err (err, err_size, "option '-%s': '%s' is not error, warn, info or debug",
                             o->names [0], value);
                    return -1;
                }
                break;
            case OPT_ORIGIN:
                if (cfg->origin_count >= QMS_MAX_ORIGINS || !*value) {
                    set_err (err, err_size, "option '-allow-origin': %s",
                             *value ? "too many origins (at most 16)" : "empty origin");
                    return -1;
                }
                cfg->origins [cfg->origin_count++] = strdup (value);
                break;
            default:
                break;
        }
    }
    /*  Settings that only make sense together. */
    if (cfg->self_signed && cfg->ssl_cert [0]) {
        set_err (err, err_size, "--self-signed makes its own certificate: leave out -sslCertificate and -sslPrivateKey");
        return -1;
    }
    if (!!cfg->ssl_cert [0] != !!cfg->ssl_key [0]) {
        set_err (err, err_size, "-sslCertificate and -sslPrivateKey go together: give both or neither");
        return -1;
    }
    if (cfg->chat_port == cfg->http_port
    || (qms_config_https (cfg) && (cfg->https_port == cfg->chat_port || cfg->https_port == cfg->http_port))) {
        set_err (err, err_size, "the chat, HTTP and HTTPS ports must differ");
        return -1;
    }
    if (cfg->rate_burst < cfg->rate_messages / 10)
        cfg->rate_burst = cfg->rate_messages;
    return 0;
}

/* ------------------------------------------------------------------------ */

static int
parse_words (qms_config_t *cfg, char *err, size_t size, const char *first, ...)
{
    char *argv [32] = { "qmessageserver" };
    int argc = 1;
    va_list args;
    va_start (args, first);
    for (const char *word = first; word && argc < 32; word = va_arg (args, const char *))
        argv [argc++] = (char *) word;
    va_end (args);
    qms_config_defaults (cfg);
    FILE *devnull = fopen ("/dev/null", "w");
    int rc = qms_config_parse (cfg, argc, argv, err, size, devnull);
    fclose (devnull);
    return rc;
}

/*  Endpoints from the environment (flags win), their checks, the bind
    form, and the monitor's options. */
static void
test_cluster_options (void)
{
    qms_config_t cfg;
    char err [512];
    assert (parse_words (&cfg, err, sizeof err, NULL) == 0);
    assert (cfg.log_endpoint [0] == 0 && cfg.filter_actor [0] == 0 && cfg.filter_level == QMS_LOG_DEBUG);
    assert (strcmp (cfg.store_endpoint, "inproc://qms-store") == 0);

    setenv ("QMS_STORE_ENDPOINT", "tcp://store:5555", 1);
    setenv ("QMS_LOG_ENDPOINT", "tcp://mon:5558", 1);
    setenv ("QMS_AUTH_ENDPOINT", "", 1);            /* empty: the default stands */
    qms_config_defaults (&cfg);
    assert (qms_config_env (&cfg, err, sizeof err) == 0);
    assert (strcmp (cfg.store_endpoint, "tcp://store:5555") == 0);
    assert (strcmp (cfg.log_endpoint, "tcp://mon:5558") == 0);
    assert (strcmp (cfg.auth_endpoint, "inproc://qms-auth") == 0);
    char *argv [] = { "qmessageserver", "--store-endpoint", "ipc:///tmp/s", NULL };
    FILE *devnull = fopen ("/dev/null", "w");
    assert (qms_config_parse (&cfg, 3, argv, err, sizeof err, devnull) == 0);
    fclose (devnull);
    assert (strcmp (cfg.store_endpoint, "ipc:///tmp/s") == 0);      /* the flag wins */
    char long_value [400];
    memset (long_value, 'x', sizeof long_value - 1);
    long_value [sizeof long_value - 1] = 0;
    setenv ("QMS_ROUTER_ENDPOINT", long_value, 1);
    assert (qms_config_env (&cfg, err, sizeof err) == -1 && strstr (err, "QMS_ROUTER_ENDPOINT"));
    unsetenv ("QMS_STORE_ENDPOINT");
    unsetenv ("QMS_LOG_ENDPOINT");
    unsetenv ("QMS_AUTH_ENDPOINT");
    unsetenv ("QMS_ROUTER_ENDPOINT");

    assert (parse_words (&cfg, err, sizeof err, "--log-endpoint", "tcp://127.0.0.1:9",
                         "--filter-actor", "store", "--filter-level", "warn", NULL) == 0);
    assert (strcmp (cfg.log_endpoint, "tcp://127.0.0.1:9") == 0);
    assert (strcmp (cfg.filter_actor, "store") == 0 && cfg.filter_level == QMS_LOG_WARN);
    assert (cfg.log_level == QMS_LOG_INFO);         /* a different field than --log-level */
    assert (parse_words (&cfg, err, sizeof err, "--filter-level", "loud", NULL) == -1);

    /*  Endpoint checks. */
    const char *o = "--store-endpoint";
    assert (qms_endpoint_check (o, "inproc://qms-store", true, true, err, sizeof err) == 0);
    assert (qms_endpoint_check (o, "inproc://qms-store", false, true, err, sizeof err) == -1
            && strstr (err, "tcp://") && strstr (err, "--store-endpoint"));
    assert (qms_endpoint_check (o, "inproc://", true, true, err, sizeof err) == -1);
    assert (qms_endpoint_check (o, "tcp://127.0.0.1:5555", false, true, err, sizeof err) == 0);
    assert (qms_endpoint_check (o, "tcp://store:5555", false, true, err, sizeof err) == 0);
    assert (qms_endpoint_check (o, "tcp://*:5555", false, false, err, sizeof err) == 0);
    assert (qms_endpoint_check (o, "tcp://*:5555", false, true, err, sizeof err) == -1
            && strstr (err, "connected"));
    assert (qms_endpoint_check (o, "tcp://127.0.0.1:*", false, true, err, sizeof err) == -1);
    assert (qms_endpoint_check (o, "tcp://127.0.0.1:*", false, false, err, sizeof err) == 0);
    assert (qms_endpoint_check (o, "tcp://127.0.0.1", false, true, err, sizeof err) == -1);
    assert (qms_endpoint_check (o, "tcp://127.0.0.1:0", false, true, err, sizeof err) == -1);
    assert (qms_endpoint_check (o, "tcp://127.0.0.1:70000", false, true, err, sizeof err) == -1);
    assert (qms_endpoint_check (o, "tcp://:5555", false, true, err, sizeof err) == -1);
    assert (qms_endpoint_check (o, "ipc:///run/qms/store", false, true, err, sizeof err) == 0);
    assert (qms_endpoint_check (o, "ipc://", false, false, err, sizeof err) == -1);
    assert (qms_endpoint_check (o, "udp://x:1", true, true, err, sizeof err) == -1);
    assert (qms_endpoint_check (o, "store:5555", true, true, err, sizeof err) == -1);

    /*  Bind forms. */
    char out [256];
    assert (qms_endpoint_bind_address ("tcp://localhost:5555", out, sizeof out, err, sizeof err) == 0);
    assert (strcmp (out, "tcp://127.0.0.1:5555") == 0);
    assert (qms_endpoint_bind_address ("tcp://10.1.2.3:7", out, sizeof out, err, sizeof err) == 0);
    assert (strcmp (out, "tcp://10.1.2.3:7") == 0);
    assert (qms_endpoint_bind_address ("tcp://*:7", out, sizeof out, err, sizeof err) == 0);
    assert (strcmp (out, "tcp://*:7") == 0);
    assert (qms_endpoint_bind_address ("tcp://lo:7", out, sizeof out, err, sizeof err) == 0);
    assert (strcmp (out, "tcp://lo:7") == 0);
    assert (qms_endpoint_bind_address ("ipc:///tmp/x", out, sizeof out, err, sizeof err) == 0);
    assert (strcmp (out, "ipc:///tmp/x") == 0);
    assert (qms_endpoint_bind_address ("inproc://a", out, sizeof out, err, sizeof err) == 0);
    assert (strcmp (out, "inproc://a") == 0);
    assert (qms_endpoint_bind_address ("tcp://no-such-host.invalid:7", out, sizeof out,
                                       err, sizeof err) == -1 && strstr (err, "does not resolve"));
    assert (qms_endpoint_bind_address ("tcp://localhost:5555", out, 10, err, sizeof err) == -1);
}

void
qms_config_test (bool verbose)
{
    if (verbose)
        printf (" * qms_config: ");
    qms_config_t cfg;
    char err [256];

    assert (parse_words (&cfg, err, sizeof err, NULL) == 0);
    assert (cfg.chat_port == 12345 && cfg.http_port == 8080 && cfg.https_port == 8443);
    assert (strcmp (cfg.server_ip, "localhost") == 0);
    assert (!qms_config_https (&cfg) && !qms_config_wss (&cfg));

    /*  Every alias, with one and two dashes and with '='. */
    assert (parse_words (&cfg, err, sizeof err, "-csp", "1", "--hp=2", "-hsp", "3", NULL) == 0);
    assert (cfg.chat_port == 1 && cfg.http_port == 2 && cfg.https_port == 3);
    assert (parse_words (&cfg, err, sizeof err, "-cp", "11", "-httpPort", "12", "--httpsPort", "13",
                         "-ip", "chat.example", NULL) == 0);
    assert (cfg.chat_port == 11 && cfg.http_port == 12 && cfg.https_port == 13);
    assert (strcmp (cfg.server_ip, "chat.example") == 0);
    assert (parse_words (&cfg, err, sizeof err, "--chatServerPort", "21", "-httpServerPort", "22",
                         "-httpsServerPort", "23", "--serverIp", "x", "-disableHttps",
                         "--disableWss", "--session-timeout", "5", "--log-level", "debug", NULL) == 0);
    assert (cfg.disable_https && cfg.disable_wss && cfg.session_timeout == 5);
    assert (cfg.log_level == QMS_LOG_DEBUG);

    /*  Bad values are errors with a reason. */
    assert (parse_words (&cfg, err, sizeof err, "-cp", "0", NULL) == -1 && strstr (err, "port"));
    assert (parse_words (&cfg, err, sizeof err, "-cp", "65536", NULL) == -1);
    assert (parse_words (&cfg, err, sizeof err, "-cp", "12x", NULL) == -1);
    assert (parse_words (&cfg, err, sizeof err, "-cp", NULL) == -1 && strstr (err, "needs a value"));
    assert (parse_words (&cfg, err, sizeof err, "-bogus", NULL) == -1 && strstr (err, "unknown option"));
    assert (parse_words (&cfg, err, sizeof err, "stray", NULL) == -1);
    assert (parse_words (&cfg, err, sizeof err, "-disableWss=1", NULL) == -1);
    assert (parse_words (&cfg, err, sizeof err, "-sslcert", "/nonexistent.pem", NULL) == -1
            && strstr (err, "cannot read"));
    assert (parse_words (&cfg, err, sizeof err, "--data-dir", "/nonexistent-dir", NULL) == -1);
    assert (parse_words (&cfg, err, sizeof err, "--log-level", "loud", NULL) == -1);
    assert (parse_words (&cfg, err, sizeof err, "-cp", "8080", NULL) == -1 && strstr (err, "differ"));
    assert (parse_words (&cfg, err, sizeof err, "-sslcert", "/etc/hostname", NULL) == -1
            && strstr (err, "together"));
    assert (parse_words (&cfg, err, sizeof err, "-help", NULL) == 1);
    assert (parse_words (&cfg, err, sizeof err, "--self-signed", NULL) == 0 && cfg.self_signed);
    assert (parse_words (&cfg, err, sizeof err, "--self-signed", "-sslcert", "/etc/hostname",
                         "-sslprvkey", "/etc/hostname", NULL) == -1);

    /*  A readable pair turns TLS on unless disabled. */
    assert (parse_words (&cfg, err, sizeof err, "-sslcert", "/etc/hostname",
                         "-sslprvkey", "/etc/hostname", NULL) == 0);
    assert (qms_config_https (&cfg) && qms_config_wss (&cfg));
    assert (parse_words (&cfg, err, sizeof err, "-sslcert", "/etc/hostname",
                         "-sslprvkey", "/etc/hostname", "-disableWss", NULL) == 0);
    assert (qms_config_https (&cfg) && !qms_config_wss (&cfg));

    assert (parse_words (&cfg, err, sizeof err, "--allow-origin", "https://a.example",
                         "--allow-origin", "https://b.example", NULL) == 0);
    assert (cfg.origin_count == 2 && strcmp (cfg.origins [1], "https://b.example") == 0);
    qms_config_free (&cfg);

    test_cluster_options ();
    if (verbose)
        printf ("OK\n");
}
