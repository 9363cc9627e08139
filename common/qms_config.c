/*  qms_config.c - settings and command line (see qms_config.h). */
#include "qms_config.h"
#include "qms_log.h"

#include <assert.h>
#include <ctype.h>
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
               OPT_FLAG, OPT_LEVEL, OPT_FORMAT, OPT_ORIGIN, OPT_CIDR, OPT_HELP } opt_kind_t;

/*  opt_t.flags */
#define OPT_SECRET   1      /* --print-config masks its value */
#define OPT_CLI      2      /* only on the command line (no variable, no key) */
#define OPT_NO_FILE  4      /* not a key in the configuration file */

typedef struct {
    const char *names [4];      /* without dashes; the first is the long name */
    opt_kind_t kind;
    size_t offset;              /* into qms_config_t */
    size_t size;                /* for strings */
    long min, max;              /* for numbers */
    const char *arg;            /* for usage */
    const char *help;
    int flags;
} opt_t;

#define OFF(f) offsetof (qms_config_t, f)
#define SZ(f) sizeof (((qms_config_t *) 0)->f)

static const opt_t s_options [] = {
    { { "chatServerPort", "csp", "cp" }, OPT_PORT, OFF (chat_port), 0, 1, 65535, "PORT",
      "WebSocket chat port (default 12345)", 0 },
    { { "httpServerPort", "httpPort", "hp" }, OPT_PORT, OFF (http_port), 0, 1, 65535, "PORT",
      "HTTP port for the web UI (default 8080)", 0 },
    { { "httpsServerPort", "httpsPort", "hsp" }, OPT_PORT, OFF (https_port), 0, 1, 65535, "PORT",
      "HTTPS port, when a certificate and key are given (default 8443)", 0 },
    { { "serverIp", "ip" }, OPT_STRING, OFF (server_ip), SZ (server_ip), 0, 0, "HOST",
      "address written into the UI's placeholders (default localhost)", 0 },
    { { "sslCertificate", "sslcert" }, OPT_FILE, OFF (ssl_cert), SZ (ssl_cert), 0, 0, "FILE",
      "PEM certificate: turns on HTTPS and WSS", 0 },
    { { "sslPrivateKey", "sslprvkey" }, OPT_FILE, OFF (ssl_key), SZ (ssl_key), 0, 0, "FILE",
      "PEM private key of that certificate", 0 },
    { { "disableHttps" }, OPT_FLAG, OFF (disable_https), 0, 0, 0, NULL,
      "no HTTPS even with a certificate", 0 },
    { { "disableWss" }, OPT_FLAG, OFF (disable_wss), 0, 0, 0, NULL,
      "plain ws:// on the chat port even with a certificate", 0 },
    { { "self-signed" }, OPT_FLAG, OFF (self_signed), 0, 0, 0, NULL,
      "HTTPS and WSS with a certificate made once in the data directory (development)", 0 },
    { { "reuse-port" }, OPT_FLAG, OFF (reuse_port), 0, 0, 0, NULL,
      "let several gateways on this host listen on the same ports (SO_REUSEPORT; the kernel spreads connections)", 0 },
    { { "poll-loop" }, OPT_FLAG, OFF (poll_loop), 0, 0, 0, NULL,
      "run the gateway on libwebsockets' own poll() loop instead of libuv's epoll (costs CPU per open "
      "connection on every wake-up; for comparison)", 0 },
    { { "help", "h" }, OPT_HELP, 0, 0, 0, 0, NULL, "this text", OPT_CLI },
    { { "config" }, OPT_FILE, OFF (config_file), SZ (config_file), 0, 0, "FILE",
      "read settings from this file first (key = value lines; flags and QMS_* variables win)",
      OPT_NO_FILE },
    { { "print-config" }, OPT_FLAG, OFF (print_config), 0, 0, 0, NULL,
      "print every setting, its value and where it came from, then exit", OPT_CLI },

    { { "bind" }, OPT_STRING, OFF (bind_address), SZ (bind_address), 0, 0, "ADDR",
      "listen on this IPv4 address only (default: every interface)", 0 },
    { { "data-dir" }, OPT_DIR, OFF (data_dir), SZ (data_dir), 0, 0, "DIR",
      "where users.db lives (default: the working directory)", 0 },
    { { "html-dir" }, OPT_DIR, OFF (html_dir), SZ (html_dir), 0, 0, "DIR",
      "the web UI's files (default ./html)", 0 },
    { { "allow-inline-scripts" }, OPT_FLAG, OFF (allow_inline_scripts), 0, 0, 0, NULL,
      "let the web UI's pages run inline scripts and on...= handlers (a UI written that way, such as the "
      "original QMessageServer page; the built-in UI needs none)", 0 },
    { { "session-timeout" }, OPT_INT, OFF (session_timeout), 0, 1, 31536000, "SECONDS",
      "a session ends after this long without activity (default 600)", 0 },
    { { "log-level" }, OPT_LEVEL, OFF (log_level), 0, 0, 0, "LEVEL",
      "error, warn, info or debug (default info)", 0 },
    { { "log-format" }, OPT_FORMAT, OFF (log_format), 0, 0, 0, "FORMAT",
      "text (logfmt) or json (one JSON object per line) on stderr (default text)", 0 },
    { { "argon2-memory" }, OPT_INT, OFF (argon2_memory_kib), 0, 8, 4194304, "KIB",
      "Argon2id memory per hash in KiB (default 19456; lower only for benchmarks)", 0 },
    { { "argon2-iterations" }, OPT_INT, OFF (argon2_iterations), 0, 1, 100, "N",
      "Argon2id passes (default 2)", 0 },
    { { "auth-workers" }, OPT_INT, OFF (auth_workers), 0, 1, 64, "N",
      "threads that hash passwords (default 2)", 0 },
    { { "max-connections" }, OPT_INT, OFF (max_connections), 0, 1, 1000000, "N",
      "open WebSocket connections per gateway (default 10000)", 0 },
    { { "rate-limit" }, OPT_INT, OFF (rate_messages), 0, 1, 10000000, "N",
      "requests per second per connection (default 2000)", 0 },
    { { "rate-burst" }, OPT_INT, OFF (rate_burst), 0, 1, 10000000, "N",
      "requests a connection may send at once above the rate (default 4000)", 0 },
    { { "rate-limit-bytes" }, OPT_SIZE, OFF (rate_bytes), 0, 1024, (long) 1 << 40, "BYTES",
      "bytes per second read from one connection (four seconds' worth at once); a peer past it is "
      "read again as its budget refills (default 1048576)", 0 },
    { { "max-queue" }, OPT_SIZE, OFF (max_queue_bytes), 0, 65536, 1073741824, "BYTES",
      "bytes queued to one slow reader before it is closed 1008 (default 1048576)", 0 },
    { { "rx-buffer" }, OPT_SIZE, OFF (rx_buffer_bytes), 0, 512, 65536, "BYTES",
      "what the gateway reads from one WebSocket at a time, allocated for every connection: 4096 carries "
      "the most at full speed, 1024 takes 3 KiB less per idle connection (default 4096)", 0 },
    { { "write-timeout" }, OPT_INT, OFF (write_timeout), 0, 0, 3600, "SECONDS",
      "close a connection whose queued output has not drained for this long (default 30, 0 = never)", 0 },
    { { "output-budget" }, OPT_SIZE, OFF (output_budget_bytes), 0, 1048576, (long) 1 << 40, "BYTES",
      "output queued for all connections of a gateway; past it the largest queues are closed 1008 "
      "(default 268435456)", 0 },
    { { "drain-timeout" }, OPT_INT, OFF (drain_timeout), 0, 1, 3600, "SECONDS",
      "on SIGTERM, the time connections get to drain; the process ends by then even if a thread is "
      "stuck (default 10)", 0 },
    { { "login-fail-limit" }, OPT_INT, OFF (login_fail_limit), 0, 1, 1000000, "N",
      "failed logins per name or address before a pause (default 5)", 0 },
    { { "login-fail-window" }, OPT_INT, OFF (login_fail_window), 0, 1, 86400, "SECONDS",
      "how long failed logins count (default 300)", 0 },
    { { "message-quota" }, OPT_INT, OFF (message_quota), 0, 1, 10000000, "N",
      "messages stored for one offline recipient (default 10000)", 0 },
    { { "message-max-age" }, OPT_INT, OFF (message_max_age), 0, 1, 3650, "DAYS",
      "days a stored message waits for its recipient (default 30)", 0 },
    { { "group-max-members" }, OPT_INT, OFF (group_max_members), 0, 2, 100000, "N",
      "members of one group at most, the owner included (default 1024)", 0 },
    { { "group-max-per-user" }, OPT_INT, OFF (group_max_per_user), 0, 1, 100000, "N",
      "groups one user may be in (default 256)", 0 },
    { { "group-name-max" }, OPT_INT, OFF (group_name_max), 0, 1, 1024, "CHARACTERS",
      "characters of a group's name at most (default 64)", 0 },
    { { "presence-interval" }, OPT_INT, OFF (presence_interval_ms), 0, 0, 60000, "MS",
      "at most one user-list push per connection per this many ms (default 250)", 0 },
    { { "metrics-port" }, OPT_INT, OFF (metrics_port), 0, 0, 65535, "PORT",
      "serve /metrics, /healthz and /readyz on this port, and /metrics only here (default 0: on the HTTP port); "
      "a store, auth or router process serves its own only here (default 0: none)", 0 },
    { { "ping-interval" }, OPT_INT, OFF (ping_interval), 0, 0, 3600, "SECONDS",
      "ping a silent WebSocket after this long; close it after twice this + 10 s without a frame (default 30, 0 = never)", 0 },
    { { "max-connections-per-address" }, OPT_INT, OFF (max_per_address), 0, 1, 1000000, "N",
      "WebSocket connections from one IP address (default 1000)", 0 },
    { { "allow-origin" }, OPT_ORIGIN, 0, 0, 0, 0, "ORIGIN",
      "also accept WebSocket handshakes from this browser origin (repeatable)", 0 },
    { { "trusted-proxy" }, OPT_CIDR, 0, 0, 0, 0, "CIDR",
      "a load balancer at these addresses names the client in X-Forwarded-For (repeatable; default none)", 0 },
    { { "proxy-protocol" }, OPT_FLAG, OFF (proxy_protocol), 0, 0, 0, NULL,
      "a --trusted-proxy connecting to the chat port starts with a PROXY protocol v2 header naming the client", 0 },
    { { "store-endpoint" }, OPT_STRING, OFF (store_endpoint), SZ (store_endpoint), 0, 0, "URL",
      "ZeroMQ endpoint of the store actor", 0 },
    { { "auth-endpoint" }, OPT_STRING, OFF (auth_endpoint), SZ (auth_endpoint), 0, 0, "URL",
      "ZeroMQ endpoint of the auth actor", 0 },
    { { "router-endpoint" }, OPT_STRING, OFF (router_endpoint), SZ (router_endpoint), 0, 0, "URL",
      "ZeroMQ endpoint of the router actor", 0 },
    { { "curve-keys" }, OPT_STRING, OFF (curve_keys), SZ (curve_keys), 0, 0, "DIR",
      "authenticate and encrypt every tcp:// link between roles with these CURVE keys (qmessageserver keys DIR)", 0 },
    { { "log-endpoint" }, OPT_STRING, OFF (log_endpoint), SZ (log_endpoint), 0, 0, "URL",
      "publish log lines to the monitor bound there (the monitor role binds it)", 0 },
    { { "filter-actor" }, OPT_STRING, OFF (filter_actor), SZ (filter_actor), 0, 0, "NAME",
      "monitor: show only this actor's lines (store, auth, router, gateway, main, monitor)", 0 },
    { { "filter-level" }, OPT_LEVEL, OFF (filter_level), 0, 0, 0, "LEVEL",
      "monitor: show only lines of this level or more severe (default debug: all)", 0 },
};

#define OPTION_COUNT (sizeof s_options / sizeof s_options [0])
_Static_assert (OPTION_COUNT <= QMS_CONFIG_MAX_OPTIONS, "qms_config_t.source is too small");

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
    cfg->log_format = QMS_LOG_FORMAT_TEXT;
    cfg->argon2_memory_kib = 19456;
    cfg->argon2_iterations = 2;
    cfg->auth_workers = 2;
    cfg->max_connections = 10000;
    cfg->rate_messages = 2000;
    cfg->rate_burst = 4000;
    cfg->rate_bytes = 1024u * 1024;
    cfg->max_queue_bytes = 1024u * 1024;
    cfg->rx_buffer_bytes = 4096;
    cfg->write_timeout = 30;
    cfg->output_budget_bytes = 256u * 1024 * 1024;
    cfg->drain_timeout = 10;
    cfg->login_fail_limit = 5;
    cfg->login_fail_window = 300;
    cfg->message_quota = 10000;
    cfg->message_max_age = 30;
    cfg->group_max_members = 1024;
    cfg->group_max_per_user = 256;
    cfg->group_name_max = 64;
    cfg->presence_interval_ms = 250;
    cfg->ping_interval = 30;
    cfg->max_per_address = 1000;
    strcpy (cfg->store_endpoint, "inproc://qms-store");
    strcpy (cfg->auth_endpoint, "inproc://qms-auth");
    strcpy (cfg->router_endpoint, "inproc://qms-router");
    cfg->filter_level = QMS_LOG_DEBUG;
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
        "Every option can also come from the environment, QMS_<NAME> (QMS_CHAT_PORT,\n"
        "QMS_DATA_DIR, QMS_STORE_ENDPOINT, ...), or from a file given with --config FILE\n"
        "(key = value lines, keys are the option names without dashes).  Flags win over\n"
        "the environment, which wins over the file.  See docs/CONFIG.md.\n\n");
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

/* ------------------------------------------------------------------------ */
/*  One table, three sources: names, origins, values.                        */

static size_t
option_index (const opt_t *o)
{
    return (size_t) (o - s_options);
}

/*  QMS_ and the long name in upper case, words split at '-' and where a
    capital follows a small letter or digit; the original's "...ServerPort"
    names end in _PORT (QMS_CHAT_PORT).  "" for options only on the
    command line. */
static void
env_name (const opt_t *o, char *out, size_t size)
{
    out [0] = 0;
    if (o->flags & OPT_CLI || size < 8)
        return;
    const char *name = o->names [0];
    size_t n = (size_t) snprintf (out, size, "QMS_");
    for (const char *p = name; *p && n + 2 < size; p++) {
        bool hump = *p >= 'A' && *p <= 'Z' && p > name
                 && ((p [-1] >= 'a' && p [-1] <= 'z') || (p [-1] >= '0' && p [-1] <= '9'));
        if (hump)
            out [n++] = '_';
        out [n++] = *p == '-' ? '_' : (char) toupper ((unsigned char) *p);
    }
    out [n] = 0;
    const char *suffix = "_SERVER_PORT";
    size_t len = strlen (out), suffix_len = strlen (suffix);
    if (len > suffix_len && strcmp (out + len - suffix_len, suffix) == 0)
        strcpy (out + len - suffix_len, "_PORT");
}

/*  Where a value came from, for errors. */
typedef struct {
    qms_config_source_t source;
    const char *what;           /* the flag as given, the variable, or the file's path */
    int line;                   /* in the file */
    const char *key;            /* the key as written in the file */
} origin_t;

static void
origin_text (const origin_t *origin, char *out, size_t size)
{
    if (origin->source == QMS_SOURCE_FLAG)
        snprintf (out, size, "option '%s'", origin->what);
    else
    if (origin->source == QMS_SOURCE_ENV)
        snprintf (out, size, "environment variable %s", origin->what);
    else
    if (origin->source == QMS_SOURCE_FILE)
        snprintf (out, size, "%s:%d: %s", origin->what, origin->line, origin->key);
    else
        snprintf (out, size, "default");
}

/*  Where the current value of option o (at index in its table) came
    from, for --print-config and for the checks of settings that go
    together. */
static void
source_text (const qms_config_t *cfg, const opt_t *o, size_t index, char *out, size_t size)
{
    char name [64];
    switch (cfg->source [index]) {
        case QMS_SOURCE_FLAG:
            snprintf (out, size, "flag");
            break;
        case QMS_SOURCE_ENV:
            env_name (o, name, sizeof name);
            snprintf (out, size, "env %s", name);
            break;
        case QMS_SOURCE_FILE:
            /*  Origins may come from several lines: no one line is right. */
            if (o->kind == OPT_ORIGIN || o->kind == OPT_CIDR)
                snprintf (out, size, "file %s", cfg->config_file);
            else
                snprintf (out, size, "file %s:%d", cfg->config_file, cfg->source_line [index]);
            break;
        default:
            snprintf (out, size, "default");
    }
}

/*  Numbers live in int, uint32_t or size_t fields. */
static bool
is_u32 (const opt_t *o)
{
    return o->offset == OFF (argon2_memory_kib) || o->offset == OFF (argon2_iterations);
}

static void
number_store (qms_config_t *cfg, const opt_t *o, long number)
{
    char *field = (char *) cfg + o->offset;
    if (o->kind == OPT_SIZE)
        *(size_t *) field = (size_t) number;
    else
    if (is_u32 (o))
        *(uint32_t *) field = (uint32_t) number;
    else
        *(int *) field = (int) number;
}

static long
number_load (const qms_config_t *cfg, const opt_t *o)
{
    const char *field = (const char *) cfg + o->offset;
    if (o->kind == OPT_SIZE)
        return (long) *(const size_t *) field;
    if (is_u32 (o))
        return (long) *(const uint32_t *) field;
    return *(const int *) field;
}

/*  The item of a comma-separated list at p, without the blanks around it
    (its length in *len; the next item is past the comma at p + strcspn). */
static const char *
list_item (const char *p, size_t *len)
{
    *len = strcspn (p, ",");
    while (*len && (*p == ' ' || *p == '\t')) {
        p++;
        (*len)--;
    }
    while (*len && (p [*len - 1] == ' ' || p [*len - 1] == '\t'))
        (*len)--;
    return p;
}

/*  --allow-origin: a comma-separated list (one origin per flag or line
    is the usual case); a source of higher precedence replaces the whole
    list of a lower one, the same source adds to it. */
static int
set_origins (qms_config_t *cfg, const opt_t *o, const char *value, const origin_t *origin,
             const char *where, char *err, size_t err_size)
{
    if (cfg->source [option_index (o)] != origin->source)
        qms_config_free (cfg);
    const char *p = value;
    do {
        size_t len;
        const char *start = list_item (p, &len);
        if (!len || cfg->origin_count >= QMS_MAX_ORIGINS) {
            set_err (err, err_size, "%s: %s", where,
                     len ? "too many origins (at most 16)" : "empty origin");
            return -1;
        }
        cfg->origins [cfg->origin_count++] = strndup (start, len);
        p += strcspn (p, ",");
    } while (*p++);
    return 0;
}

/*  --trusted-proxy: a comma-separated list of ranges, replaced and added
    to as --allow-origin's is. */
static int
set_cidrs (qms_config_t *cfg, const opt_t *o, const char *value, const origin_t *origin,
           const char *where, char *err, size_t err_size)
{
    if (cfg->source [option_index (o)] != origin->source)
        cfg->trusted_count = 0;
    const char *p = value;
    do {
        size_t len;
        const char *start = list_item (p, &len);
        char text [64];
        if (!len || len >= sizeof text || cfg->trusted_count >= QMS_MAX_TRUSTED) {
            set_err (err, err_size, "%s: %s", where,
                     !len ? "empty address range" : len >= sizeof text ? "address range too long"
                          : "too many address ranges (at most 16)");
            return -1;
        }
        memcpy (text, start, len);
        text [len] = 0;
        if (qms_cidr_parse (text, &cfg->trusted [cfg->trusted_count])) {
            set_err (err, err_size, "%s: '%s' is not an address or a range like 10.0.0.0/8 "
                     "(with no host bits set)", where, text);
            return -1;
        }
        cfg->trusted_count++;
        p += strcspn (p, ",");
    } while (*p++);
    return 0;
}

/*  Check value for option o and store it; errors name the origin. */
static int
set_value (qms_config_t *cfg, const opt_t *o, const char *value, const origin_t *origin,
           char *err, size_t err_size)
{
    char where [1200];
    origin_text (origin, where, sizeof where);
    char *field = (char *) cfg + o->offset;
    long number;
    struct stat st;
    int choice;
    switch (o->kind) {
        case OPT_PORT:
        case OPT_INT:
        case OPT_SIZE:
            if (parse_long (value, &number) || number < o->min || number > o->max) {
                set_err (err, err_size, "%s: '%s' is not %s from %ld to %ld", where, value,
                         o->kind == OPT_PORT ? "a port" : "a whole number", o->min, o->max);
                return -1;
            }
            number_store (cfg, o, number);
            break;
        case OPT_STRING:
        case OPT_FILE:
        case OPT_DIR:
            if (!*value && o->kind != OPT_STRING) {
                set_err (err, err_size, "%s needs a non-empty %s", where, o->arg);
                return -1;
            }
            if (strlen (value) >= o->size) {
                set_err (err, err_size, "%s: value is too long (at most %zu bytes)", where, o->size - 1);
                return -1;
            }
            if (o->kind == OPT_FILE
            && (stat (value, &st) || !S_ISREG (st.st_mode) || access (value, R_OK))) {
                set_err (err, err_size, "%s: cannot read file '%s'", where, value);
                return -1;
            }
            if (o->kind == OPT_DIR && (stat (value, &st) || !S_ISDIR (st.st_mode))) {
                set_err (err, err_size, "%s: '%s' is not a directory", where, value);
                return -1;
            }
            strcpy (field, value);
            break;
        case OPT_FLAG:
            if (strcmp (value, "true") && strcmp (value, "false")) {
                set_err (err, err_size, "%s: '%s' is not true or false", where, value);
                return -1;
            }
            *(bool *) field = strcmp (value, "true") == 0;
            break;
        case OPT_LEVEL:
        case OPT_FORMAT:
            choice = o->kind == OPT_LEVEL ? qms_log_level_parse (value) : qms_log_format_parse (value);
            if (choice < 0) {
                set_err (err, err_size, "%s: '%s' is not %s", where, value,
                         o->kind == OPT_LEVEL ? "error, warn, info or debug" : "text or json");
                return -1;
            }
            *(int *) field = choice;
            break;
        case OPT_ORIGIN:
            if (set_origins (cfg, o, value, origin, where, err, err_size))
                return -1;
            break;
        case OPT_CIDR:
            if (set_cidrs (cfg, o, value, origin, where, err, err_size))
                return -1;
            break;
        default:
            break;
    }
    cfg->source [option_index (o)] = (unsigned char) origin->source;
    cfg->source_line [option_index (o)] = origin->line;
    return 0;
}

/* ------------------------------------------------------------------------ */
/*  The command line.                                                        */

/*  Apply argv to cfg; *help when -help came (nothing after it is read). */
static int
apply_args (qms_config_t *cfg, int argc, char **argv, char *err, size_t err_size, bool *help)
{
    *help = false;
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
            *help = true;
            return 0;
        }
        char given [128];
        snprintf (given, sizeof given, "%.*s", (int) (name - arg + (ptrdiff_t) name_len), arg);
        origin_t origin = { QMS_SOURCE_FLAG, given, 0, NULL };
        const char *value;
        if (o->kind == OPT_FLAG) {
            /*  Present means true; =false can undo a file or variable. */
            value = equals ? equals + 1 : "true";
            if (strcmp (value, "true") && strcmp (value, "false")) {
                set_err (err, err_size, "option '%s' takes no value (or =true, =false)", given);
                return -1;
            }
        }
        else
        if (equals)
            value = equals + 1;
        else
        if (i + 1 < argc)
            value = argv [++i];
        else {
            set_err (err, err_size, "option '%s' needs a value (%s)", given, o->arg);
            return -1;
        }
        if (set_value (cfg, o, value, &origin, err, err_size))
            return -1;
    }
    return 0;
}

/*  The option at a field, for messages about settings that go together. */
static const opt_t *
option_at (size_t offset)
{
    for (size_t i = 0; i < OPTION_COUNT; i++)
        if (s_options [i].offset == offset && s_options [i].kind != OPT_HELP)
            return &s_options [i];
    assert (false);
    return NULL;
}

/*  "name VALUE (source)" of the option at a field. */
static void
describe (const qms_config_t *cfg, size_t offset, char *out, size_t size)
{
    const opt_t *o = option_at (offset);
    char source [1200];
    source_text (cfg, o, option_index (o), source, sizeof source);
    if (o->kind == OPT_PORT)
        snprintf (out, size, "%s %ld from %s", o->names [0], number_load (cfg, o), source);
    else
        snprintf (out, size, "%s from %s", o->names [0], source);
}

/*  Settings that only make sense together, once every source is in. */
static int
finish (qms_config_t *cfg, char *err, size_t err_size)
{
    char a [1400], b [1400], c [1400];
    if (cfg->self_signed && cfg->ssl_cert [0]) {
        describe (cfg, OFF (self_signed), a, sizeof a);
        describe (cfg, OFF (ssl_cert), b, sizeof b);
        set_err (err, err_size, "--self-signed makes its own certificate: leave out -sslCertificate "
                 "and -sslPrivateKey (%s; %s)", a, b);
        return -1;
    }
    if (!!cfg->ssl_cert [0] != !!cfg->ssl_key [0]) {
        describe (cfg, cfg->ssl_cert [0] ? OFF (ssl_cert) : OFF (ssl_key), a, sizeof a);
        set_err (err, err_size, "-sslCertificate and -sslPrivateKey go together: give both or "
                 "neither (only %s)", a);
        return -1;
    }
    bool https = qms_config_https (cfg);
    if (cfg->chat_port == cfg->http_port
    || (https && (cfg->https_port == cfg->chat_port || cfg->https_port == cfg->http_port))) {
        describe (cfg, OFF (chat_port), a, sizeof a);
        describe (cfg, OFF (http_port), b, sizeof b);
        describe (cfg, OFF (https_port), c, sizeof c);
        set_err (err, err_size, "the chat, HTTP and HTTPS ports must differ: %s, %s%s%s",
                 a, b, https ? ", " : "", https ? c : "");
        return -1;
    }
    if (cfg->proxy_protocol && !cfg->trusted_count) {
        describe (cfg, OFF (proxy_protocol), a, sizeof a);
        set_err (err, err_size, "--proxy-protocol takes the header only from a --trusted-proxy: "
                 "give the load balancer's addresses (%s)", a);
        return -1;
    }
    if (cfg->rate_burst < cfg->rate_messages / 10)
        cfg->rate_burst = cfg->rate_messages;
    return 0;
}

int
qms_config_parse (qms_config_t *cfg, int argc, char **argv,
                  char *err, size_t err_size, FILE *out)
{
    bool help;
    if (apply_args (cfg, argc, argv, err, err_size, &help))
        return -1;
    if (help) {
        qms_config_usage (out);
        return 1;
    }
    return finish (cfg, err, err_size);
}

/* ------------------------------------------------------------------------ */
/*  The environment.                                                         */

extern char **environ;

/*  QMS_* variables that are not settings but belong to the project's own
    scripts and tests (tests/qmslib.py, scripts/, compose.yml): no warning
    for these. */
static const char *s_env_tools [] = {
    "QMS_BINARY", "QMS_SOURCE_DIR", "QMS_KEEP_TMP", "QMS_SCREENSHOT", "QMS_PUBLIC_HOST",
    "QMS_CHROMIUM", "QMS_VALGRIND_BINARY", "QMS_WERROR", "QMS_FUZZ", "QMS_FUZZ_SECONDS",
    "QMS_FUZZ_SKIP", NULL
};

/*  Edit distance of two short names (for "did you mean"). */
static size_t
distance (const char *a, size_t a_len, const char *b)
{
    size_t b_len = strlen (b);
    if (a_len > 63 || b_len > 63)
        return SIZE_MAX;
    size_t row [64];
    for (size_t j = 0; j <= b_len; j++)
        row [j] = j;
    for (size_t i = 1; i <= a_len; i++) {
        size_t diagonal = row [0];
        row [0] = i;
        for (size_t j = 1; j <= b_len; j++) {
            size_t above = row [j];
            size_t best = diagonal + (a [i - 1] != b [j - 1]);
            if (above + 1 < best)
                best = above + 1;
            if (row [j - 1] + 1 < best)
                best = row [j - 1] + 1;
            row [j] = best;
            diagonal = above;
        }
    }
    return row [b_len];
}

/*  A QMS_* variable we do not know: a warning, with the nearest name. */
static void
env_unknown (const char *name, size_t len, FILE *warn)
{
    char known [64], nearest [64] = "";
    size_t best = 3;        /* at most two edits away */
    for (size_t i = 0; i < OPTION_COUNT; i++) {
        env_name (&s_options [i], known, sizeof known);
        if (!known [0])
            continue;
        if (strlen (known) == len && strncmp (known, name, len) == 0)
            return;
        size_t d = distance (name, len, known);
        if (d < best) {
            best = d;
            strcpy (nearest, known);
        }
    }
    for (const char **tool = s_env_tools; *tool; tool++)
        if (strlen (*tool) == len && strncmp (*tool, name, len) == 0)
            return;
    fprintf (warn, "qmessageserver: warning: environment variable %.*s is not a setting%s%s%s; "
             "ignored (see docs/CONFIG.md)\n", (int) len, name, *nearest ? " (did you mean " : "",
             nearest, *nearest ? "?)" : "");
}

static int
apply_env (qms_config_t *cfg, FILE *warn, char *err, size_t err_size)
{
    for (size_t i = 0; i < OPTION_COUNT; i++) {
        char name [64];
        env_name (&s_options [i], name, sizeof name);
        const char *value = name [0] ? getenv (name) : NULL;
        if (!value || !*value)
            continue;           /* unset or empty: the lower sources stand */
        origin_t origin = { QMS_SOURCE_ENV, name, 0, NULL };
        if (set_value (cfg, &s_options [i], value, &origin, err, err_size))
            return -1;
    }
    for (char **variable = environ; variable && *variable; variable++)
        if (strncmp (*variable, "QMS_", 4) == 0)
            env_unknown (*variable, strcspn (*variable, "="), warn);
    return 0;
}

int
qms_config_env (qms_config_t *cfg, char *err, size_t err_size)
{
    return apply_env (cfg, stderr, err, err_size);
}

/* ------------------------------------------------------------------------ */
/*  The configuration file.                                                  */

static char *
trim (char *text)
{
    while (*text == ' ' || *text == '\t')
        text++;
    size_t len = strlen (text);
    while (len && strchr (" \t\r\n", text [len - 1]))
        text [--len] = 0;
    return text;
}

/*  The value part of a line, trimmed: "in quotes" up to the first quote
    that ends the line or comes before a comment, or else up to a comment
    ('#' at the start or after a space or tab).  NULL when a quote is
    not closed that way. */
static char *
file_value (char *text)
{
    text = trim (text);
    if (*text == '"') {
        for (char *close = strchr (text + 1, '"'); close; close = strchr (close + 1, '"')) {
            char *rest = close + 1;
            while (*rest == ' ' || *rest == '\t')
                rest++;
            if (*rest == 0 || (*rest == '#' && rest > close + 1)) {
                *close = 0;
                return text + 1;
            }
        }
        return NULL;
    }
    for (char *p = text; *p; p++)
        if (*p == '#' && (p == text || p [-1] == ' ' || p [-1] == '\t')) {
            *p = 0;
            break;
        }
    return trim (text);
}

/*  One line: blank, a comment, or key = value.  seen: the line each
    option was set on (a key may come once, but for allow-origin). */
static int
file_line (qms_config_t *cfg, const char *path, int number, char *line, int *seen,
           char *err, size_t err_size)
{
    char *text = trim (line);
    if (!*text || *text == '#')
        return 0;
    char *equals = strchr (text, '=');
    if (!equals) {
        set_err (err, err_size, "%s:%d: expected 'key = value', not '%.60s'", path, number, text);
        return -1;
    }
    *equals = 0;
    char *key = trim (text);
    const opt_t *o = find_option (key, strlen (key));
    if (!o) {
        set_err (err, err_size, "%s:%d: unknown key '%.60s' (keys are the option names without "
                 "dashes; see -help and docs/CONFIG.md)", path, number, key);
        return -1;
    }
    if (o->flags & (OPT_CLI | OPT_NO_FILE)) {
        set_err (err, err_size, "%s:%d: '%s' cannot be set in a configuration file", path, number, key);
        return -1;
    }
    char *value = file_value (equals + 1);
    if (!value) {
        set_err (err, err_size, "%s:%d: %s: a quoted value must end with a quote (and maybe a "
                 "# comment)", path, number, key);
        return -1;
    }
    size_t index = option_index (o);
    if (seen [index] && o->kind != OPT_ORIGIN && o->kind != OPT_CIDR) {
        set_err (err, err_size, "%s:%d: %s is already set on line %d", path, number, key, seen [index]);
        return -1;
    }
    seen [index] = number;
    origin_t origin = { QMS_SOURCE_FILE, path, number, key };
    return set_value (cfg, o, value, &origin, err, err_size);
}

int
qms_config_file (qms_config_t *cfg, const char *path, char *err, size_t err_size)
{
    FILE *file = fopen (path, "r");
    if (!file) {
        set_err (err, err_size, "configuration file '%s': %s", path, strerror (errno));
        return -1;
    }
    /*  The sources name it (--print-config, errors of settings that go
        together). */
    if (strcmp (cfg->config_file, path))
        snprintf (cfg->config_file, sizeof cfg->config_file, "%s", path);
    int seen [OPTION_COUNT] = { 0 };
    char *line = NULL;
    size_t capacity = 0;
    int number = 0, rc = 0;
    while (rc == 0 && getline (&line, &capacity, file) >= 0)
        rc = file_line (cfg, path, ++number, line, seen, err, err_size);
    if (rc == 0 && ferror (file)) {
        set_err (err, err_size, "configuration file '%s': cannot read it", path);
        rc = -1;
    }
    free (line);
    fclose (file);
    return rc;
}

/* ------------------------------------------------------------------------ */
/*  --print-config                                                           */

static void
value_text (const qms_config_t *cfg, const opt_t *o, char *out, size_t size)
{
    const char *field = (const char *) cfg + o->offset;
    switch (o->kind) {
        case OPT_PORT:
        case OPT_INT:
        case OPT_SIZE:
            snprintf (out, size, "%ld", number_load (cfg, o));
            break;
        case OPT_STRING:
        case OPT_FILE:
        case OPT_DIR:
            snprintf (out, size, "%s", field);
            break;
        case OPT_FLAG:
            snprintf (out, size, "%s", *(const bool *) field ? "true" : "false");
            break;
        case OPT_LEVEL:
            snprintf (out, size, "%s", qms_log_level_name (*(const int *) field));
            break;
        case OPT_FORMAT:
            snprintf (out, size, "%s", qms_log_format_name (*(const int *) field));
            break;
        default:
            out [0] = 0;
    }
}

/*  A value as the file reads it back: in quotes when empty, when it
    holds '#' or '"', or spaces at either end.  Control characters are
    shown as \xNN, so the output stays one line per setting (such a value
    cannot be read back as it was). */
static void
quote_value (const char *value, char *out, size_t size)
{
    size_t len = strlen (value);
    bool quote = !len || strpbrk (value, "#\"") || strchr (" \t", value [0])
              || strchr (" \t", value [len - 1]);
    size_t o = 0;
    if (quote)
        out [o++] = '"';
    for (const unsigned char *p = (const unsigned char *) value; *p && o + 6 < size; p++)
        if (*p < 0x20 || *p == 0x7f)
            o += (size_t) snprintf (out + o, size - o, "\\x%02x", *p);
        else
            out [o++] = (char) *p;
    if (quote)
        out [o++] = '"';
    out [o] = 0;
}

#define PRINT_VALUE_WIDTH 24

/*  One setting: key = value  # source.  A secret value prints as ****. */
static void
print_line (FILE *out, int key_width, bool commented, const char *key, const char *value,
            bool secret, const char *source)
{
    char shown [2400];
    if (secret && *value)
        snprintf (shown, sizeof shown, "****");
    else
        quote_value (value, shown, sizeof shown);
    /*  "# " eats into the key's column, so that the values line up. */
    fprintf (out, "%s%-*s = %-*s  # %s%s\n", commented ? "# " : "", key_width - (commented ? 2 : 0),
             key, PRINT_VALUE_WIDTH, shown, source, secret ? ", secret" : "");
}

/*  Every option of a table (the real one, or a test's). */
static void
print_table (const qms_config_t *cfg, FILE *out, const opt_t *table, size_t count)
{
    int width = 0;
    for (size_t i = 0; i < count; i++)
        if ((int) strlen (table [i].names [0]) > width)
            width = (int) strlen (table [i].names [0]);
    for (size_t i = 0; i < count; i++) {
        const opt_t *o = &table [i];
        if (o->flags & OPT_CLI)
            continue;
        char source [1200], value [1100];
        source_text (cfg, o, i, source, sizeof source);
        bool secret = o->flags & OPT_SECRET;
        value_text (cfg, o, value, sizeof value);
        /*  As comments, so that the text reads back as the same
            settings: defaults (not checked until set: ./html need not
            exist here), --config (not a key of the file), and a file or
            folder not given (a file cannot say "none"). */
        bool commented = cfg->source [i] == QMS_SOURCE_DEFAULT || (o->flags & OPT_NO_FILE)
                      || ((o->kind == OPT_FILE || o->kind == OPT_DIR) && !*value);
        if (o->kind == OPT_ORIGIN || o->kind == OPT_CIDR) {
            int items = o->kind == OPT_ORIGIN ? cfg->origin_count : cfg->trusted_count;
            for (int n = 0; n < items; n++) {
                char range [64];
                if (o->kind == OPT_CIDR)
                    qms_cidr_format (&cfg->trusted [n], range, sizeof range);
                print_line (out, width, false, o->names [0],
                            o->kind == OPT_ORIGIN ? cfg->origins [n] : range, secret, source);
            }
            if (items == 0)
                fprintf (out, "# %-*s   (none)%*s  # %s\n", width - 2, o->names [0],
                         PRINT_VALUE_WIDTH - 6, "", source);
            continue;
        }
        print_line (out, width, commented, o->names [0], value, secret, source);
    }
}

void
qms_config_print (const qms_config_t *cfg, FILE *out)
{
    fprintf (out, "# qmessageserver settings: every option, its value and where it came from\n"
                  "# (default, file FILE:LINE, env VARIABLE or flag; flags win over the\n"
                  "# environment, which wins over the file).  Defaults are shown as comments;\n"
                  "# this text is a valid --config file for the same settings.\n");
    print_table (cfg, out, s_options, OPTION_COUNT);
}

/* ------------------------------------------------------------------------ */

int
qms_config_load (qms_config_t *cfg, int argc, char **argv,
                 char *err, size_t err_size, FILE *out)
{
    cfg->argc = argc;
    cfg->argv = argv;
    /*  The command line first, on a scratch copy: its mistakes and -help
        come before anything else, and it may name the file. */
    qms_config_t *scratch = (qms_config_t *) malloc (sizeof *scratch);
    if (!scratch) {
        set_err (err, err_size, "out of memory");
        return -1;
    }
    qms_config_defaults (scratch);
    bool help;
    int rc = apply_args (scratch, argc, argv, err, err_size, &help);
    char path [sizeof cfg->config_file];
    snprintf (path, sizeof path, "%s", scratch->config_file);
    qms_config_free (scratch);
    free (scratch);
    if (rc)
        return -1;
    if (help) {
        qms_config_usage (out);
        return 1;
    }
    /*  The file, named by the flag or else the environment. */
    const opt_t *config = option_at (OFF (config_file));
    origin_t origin = { QMS_SOURCE_FLAG, "--config", 0, NULL };
    const char *file = path;
    if (!*file) {
        file = getenv ("QMS_CONFIG");
        origin.source = QMS_SOURCE_ENV;
        origin.what = "QMS_CONFIG";
    }
    if (file && *file
    && (set_value (cfg, config, file, &origin, err, err_size)
    ||  qms_config_file (cfg, file, err, err_size)))
        return -1;
    if (apply_env (cfg, stderr, err, err_size)
    ||  apply_args (cfg, argc, argv, err, err_size, &help)
    ||  finish (cfg, err, err_size))
        return -1;
    if (cfg->print_config) {
        qms_config_print (cfg, out);
        return 1;
    }
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

#define T_EQ(a, b) (strcmp ((a), (b)) == 0)

/*  A temporary file holding text; its path in path (PATH_MAX). */
static void
t_write (char *path, const char *text)
{
    strcpy (path, "/tmp/qms-config-test-XXXXXX");
    int fd = mkstemp (path);
    assert (fd >= 0);
    size_t len = strlen (text);
    assert (write (fd, text, len) == (ssize_t) len);
    close (fd);
}

/*  Read a whole (small) stream back. */
static void
t_read (FILE *file, char *out, size_t size)
{
    fflush (file);
    rewind (file);
    size_t n = fread (out, 1, size - 1, file);
    out [n] = 0;
}

/*  qms_config_load on defaults with these words; out gets what it prints. */
static int
load_words (qms_config_t *cfg, char *err, size_t size, char *out, size_t out_size,
            const char *first, ...)
{
    char *argv [32] = { "qmessageserver" };
    int argc = 1;
    va_list args;
    va_start (args, first);
    for (const char *word = first; word && argc < 31; word = va_arg (args, const char *))
        argv [argc++] = (char *) word;
    va_end (args);
    argv [argc] = NULL;
    qms_config_defaults (cfg);
    FILE *capture = tmpfile ();
    assert (capture);
    int rc = qms_config_load (cfg, argc, argv, err, size, capture);
    if (rc == -1)
        qms_config_free (cfg);      /* as main does */
    if (out)
        t_read (capture, out, out_size);
    fclose (capture);
    return rc;
}

static const char *t_env_names [] = {
    "QMS_CONFIG", "QMS_CHAT_PORT", "QMS_HTTP_PORT", "QMS_HTTPS_PORT", "QMS_DISABLE_WSS",
    "QMS_LOG_LEVEL", "QMS_LOG_FORMAT", "QMS_ALLOW_ORIGIN", "QMS_MAX_QUEUE", "QMS_ARGON2_MEMORY",
    "QMS_CHAT_PROT", "QMS_TOTALLY_UNKNOWN_THING", "QMS_SERVER_IP", "QMS_DATA_DIR", NULL
};

static void
t_env_clear (void)
{
    for (const char **name = t_env_names; *name; name++)
        unsetenv (*name);
}

static const char *
t_env (const char *option)
{
    static char name [64];
    const opt_t *o = find_option (option, strlen (option));
    assert (o);
    env_name (o, name, sizeof name);
    return name;
}

/*  The rule for variable names, and that no two options share one. */
static void
test_env_names (void)
{
    assert (T_EQ (t_env ("chatServerPort"), "QMS_CHAT_PORT"));
    assert (T_EQ (t_env ("cp"), "QMS_CHAT_PORT"));
    assert (T_EQ (t_env ("httpServerPort"), "QMS_HTTP_PORT"));
    assert (T_EQ (t_env ("httpsServerPort"), "QMS_HTTPS_PORT"));
    assert (T_EQ (t_env ("serverIp"), "QMS_SERVER_IP"));
    assert (T_EQ (t_env ("sslCertificate"), "QMS_SSL_CERTIFICATE"));
    assert (T_EQ (t_env ("sslPrivateKey"), "QMS_SSL_PRIVATE_KEY"));
    assert (T_EQ (t_env ("disableHttps"), "QMS_DISABLE_HTTPS"));
    assert (T_EQ (t_env ("disableWss"), "QMS_DISABLE_WSS"));
    assert (T_EQ (t_env ("data-dir"), "QMS_DATA_DIR"));
    assert (T_EQ (t_env ("argon2-memory"), "QMS_ARGON2_MEMORY"));
    assert (T_EQ (t_env ("max-connections-per-address"), "QMS_MAX_CONNECTIONS_PER_ADDRESS"));
    assert (T_EQ (t_env ("store-endpoint"), "QMS_STORE_ENDPOINT"));
    assert (T_EQ (t_env ("log-format"), "QMS_LOG_FORMAT"));
    assert (T_EQ (t_env ("config"), "QMS_CONFIG"));
    assert (T_EQ (t_env ("help"), "") && T_EQ (t_env ("print-config"), ""));
    for (size_t i = 0; i < OPTION_COUNT; i++)
        for (size_t j = i + 1; j < OPTION_COUNT; j++) {
            char a [64], b [64];
            env_name (&s_options [i], a, sizeof a);
            env_name (&s_options [j], b, sizeof b);
            assert (!*a || strcmp (a, b));
        }
}

/*  Every kind of value from the environment; errors name the variable;
    unknown QMS_* names are warned about, never errors. */
static void
test_env (void)
{
    qms_config_t cfg;
    char err [1024], text [4096];
    t_env_clear ();
    setenv ("QMS_CHAT_PORT", "7000", 1);
    setenv ("QMS_DISABLE_WSS", "true", 1);
    setenv ("QMS_LOG_LEVEL", "debug", 1);
    setenv ("QMS_LOG_FORMAT", "json", 1);
    setenv ("QMS_ALLOW_ORIGIN", "https://a.example, https://b.example", 1);
    setenv ("QMS_MAX_QUEUE", "65536", 1);
    setenv ("QMS_ARGON2_MEMORY", "64", 1);
    setenv ("QMS_SERVER_IP", "", 1);           /* empty: unset */
    qms_config_defaults (&cfg);
    FILE *warn = tmpfile ();
    assert (warn);
    assert (apply_env (&cfg, warn, err, sizeof err) == 0);
    assert (cfg.chat_port == 7000 && cfg.disable_wss && cfg.log_level == QMS_LOG_DEBUG);
    assert (cfg.log_format == QMS_LOG_FORMAT_JSON && cfg.max_queue_bytes == 65536);
    assert (cfg.argon2_memory_kib == 64 && T_EQ (cfg.server_ip, "localhost"));
    assert (cfg.origin_count == 2 && T_EQ (cfg.origins [0], "https://a.example")
            && T_EQ (cfg.origins [1], "https://b.example"));
    assert (cfg.source [option_index (find_option ("cp", 2))] == QMS_SOURCE_ENV);
    assert (cfg.source [option_index (find_option ("hp", 2))] == QMS_SOURCE_DEFAULT);
    t_read (warn, text, sizeof text);
    assert (text [0] == 0);                     /* every name known */
    qms_config_free (&cfg);

    setenv ("QMS_CHAT_PROT", "1", 1);
    setenv ("QMS_TOTALLY_UNKNOWN_THING", "1", 1);
    setenv ("QMS_BINARY", "x", 1);              /* the tests' own: no warning */
    rewind (warn);
    qms_config_defaults (&cfg);
    assert (apply_env (&cfg, warn, err, sizeof err) == 0);
    t_read (warn, text, sizeof text);
    assert (strstr (text, "QMS_CHAT_PROT is not a setting (did you mean QMS_CHAT_PORT?)"));
    assert (strstr (text, "QMS_TOTALLY_UNKNOWN_THING is not a setting; ignored"));
    assert (!strstr (text, "QMS_BINARY"));
    fclose (warn);
    qms_config_free (&cfg);
    unsetenv ("QMS_BINARY");
    t_env_clear ();

    struct { const char *name, *value, *expect; } bad [] = {
        { "QMS_CHAT_PORT", "0", "environment variable QMS_CHAT_PORT: '0' is not a port" },
        { "QMS_CHAT_PORT", "12345 ", "QMS_CHAT_PORT: '12345 ' is not a port" },
        { "QMS_DISABLE_WSS", "yes", "environment variable QMS_DISABLE_WSS: 'yes' is not true or false" },
        { "QMS_LOG_FORMAT", "xml", "QMS_LOG_FORMAT: 'xml' is not text or json" },
        { "QMS_DATA_DIR", "/nonexistent-dir", "QMS_DATA_DIR: '/nonexistent-dir' is not a directory" },
        { "QMS_ALLOW_ORIGIN", "https://a.example,,x", "QMS_ALLOW_ORIGIN: empty origin" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++) {
        setenv (bad [i].name, bad [i].value, 1);
        assert (load_words (&cfg, err, sizeof err, NULL, 0, NULL) == -1);
        assert (strstr (err, bad [i].expect));
        qms_config_free (&cfg);
        unsetenv (bad [i].name);
    }
}

/*  The file's format, and its errors with FILE:LINE. */
static void
test_file (void)
{
    qms_config_t cfg;
    char err [1024], path [64];
    t_env_clear ();
    t_write (path, "# a comment\n"
                   "\n"
                   "   chatServerPort = 7000   # trailing comment\r\n"
                   "hp=7001\n"
                   "serverIp = \"chat # one\"  # quoted: '#' inside is kept\n"
                   "bind = \"\"\n"
                   "disableWss = true\n"
                   "disableHttps = false\n"
                   "allow-origin = https://a.example\n"
                   "allow-origin = https://b.example, https://c.example\n"
                   "log-level = warn\n"
                   "log-format = json\n"
                   "filter-actor = a#b\n"
                   "max-queue = 70000\n");
    qms_config_defaults (&cfg);
    assert (qms_config_file (&cfg, path, err, sizeof err) == 0);
    assert (cfg.chat_port == 7000 && cfg.http_port == 7001);
    assert (T_EQ (cfg.server_ip, "chat # one") && T_EQ (cfg.bind_address, ""));
    assert (cfg.disable_wss && !cfg.disable_https);
    assert (cfg.origin_count == 3 && T_EQ (cfg.origins [2], "https://c.example"));
    assert (cfg.log_level == QMS_LOG_WARN && cfg.log_format == QMS_LOG_FORMAT_JSON);
    assert (T_EQ (cfg.filter_actor, "a#b") && cfg.max_queue_bytes == 70000);
    size_t cp = option_index (find_option ("cp", 2));
    assert (cfg.source [cp] == QMS_SOURCE_FILE && cfg.source_line [cp] == 3);
    assert (T_EQ (cfg.config_file, path));
    qms_config_free (&cfg);
    unlink (path);

    struct { const char *text, *expect; } bad [] = {
        { "cp = 1\nbogus = 2\n", ":2: unknown key 'bogus'" },
        { "--data-dir = /tmp\n", ":1: unknown key '--data-dir'" },
        { "chatServerPort = 0\n", ":1: chatServerPort: '0' is not a port from 1 to 65535" },
        { "\n\ncp = 12x\n", ":3: cp: '12x' is not a port" },
        { "disableWss = yes\n", ":1: disableWss: 'yes' is not true or false" },
        { "disableWss\n", ":1: expected 'key = value', not 'disableWss'" },
        { "cp = 1\nchatServerPort = 2\n", ":2: chatServerPort is already set on line 1" },
        { "serverIp = \"open\n", ":1: serverIp: a quoted value must end" },
        { "serverIp = \"a\" b\n", ":1: serverIp: a quoted value must end" },
        { "config = /etc/hostname\n", ":1: 'config' cannot be set in a configuration file" },
        { "print-config = true\n", ":1: 'print-config' cannot be set" },
        { "help = true\n", ":1: 'help' cannot be set" },
        { "sslCertificate = /nonexistent.pem\n", ":1: sslCertificate: cannot read file '/nonexistent.pem'" },
        { "session-timeout =\n", ":1: session-timeout: '' is not a whole number" },
        { "log-format = JSON\n", ":1: log-format: 'JSON' is not text or json" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++) {
        t_write (path, bad [i].text);
        assert (load_words (&cfg, err, sizeof err, NULL, 0, "--config", path, NULL) == -1);
        assert (strncmp (err, path, strlen (path)) == 0 && strstr (err, bad [i].expect));
        qms_config_free (&cfg);
        unlink (path);
    }
    assert (load_words (&cfg, err, sizeof err, NULL, 0, "--config", "/nonexistent.conf", NULL) == -1);
    assert (strstr (err, "option '--config': cannot read file '/nonexistent.conf'"));
    setenv ("QMS_CONFIG", "/nonexistent.conf", 1);
    assert (load_words (&cfg, err, sizeof err, NULL, 0, NULL) == -1);
    assert (strstr (err, "environment variable QMS_CONFIG: cannot read file"));
    /*  A mistake on the command line comes first. */
    assert (load_words (&cfg, err, sizeof err, NULL, 0, "--bogus", NULL) == -1);
    assert (strstr (err, "unknown option '--bogus'"));
    unsetenv ("QMS_CONFIG");
}

/*  flags > environment > file > defaults, through qms_config_load. */
static void
test_precedence (void)
{
    qms_config_t cfg;
    char err [1024], path [64], other [64], out [8192];
    t_env_clear ();
    t_write (path, "chatServerPort = 7000\nhttpServerPort = 7001\nsession-timeout = 77\n"
                   "disableWss = true\nallow-origin = https://file.example\nlog-level = warn\n");
    t_write (other, "chatServerPort = 9000\n");
    setenv ("QMS_HTTP_PORT", "7101", 1);
    setenv ("QMS_SESSION_TIMEOUT", "88", 1);
    setenv ("QMS_ALLOW_ORIGIN", "https://env.example", 1);
    assert (load_words (&cfg, err, sizeof err, out, sizeof out, "--config", path,
                        "--session-timeout", "99", "--disableWss=false", NULL) == 0);
    assert (cfg.chat_port == 7000 && cfg.http_port == 7101 && cfg.session_timeout == 99);
    assert (!cfg.disable_wss && cfg.log_level == QMS_LOG_WARN && cfg.https_port == 8443);
    assert (cfg.origin_count == 1 && T_EQ (cfg.origins [0], "https://env.example"));
    assert (cfg.source [option_index (find_option ("cp", 2))] == QMS_SOURCE_FILE);
    assert (cfg.source [option_index (find_option ("hp", 2))] == QMS_SOURCE_ENV);
    assert (cfg.source [option_index (find_option ("session-timeout", 15))] == QMS_SOURCE_FLAG);
    assert (cfg.source [option_index (find_option ("hsp", 3))] == QMS_SOURCE_DEFAULT);
    assert (out [0] == 0 && !cfg.print_config);
    qms_config_free (&cfg);

    /*  Flags that repeat add to each other, and replace the environment's. */
    assert (load_words (&cfg, err, sizeof err, NULL, 0, "--allow-origin", "https://f1.example",
                        "--allow-origin", "https://f2.example", NULL) == 0);
    assert (cfg.origin_count == 2 && T_EQ (cfg.origins [1], "https://f2.example"));
    qms_config_free (&cfg);

    /*  QMS_CONFIG names the file; --config beats it. */
    setenv ("QMS_CONFIG", path, 1);
    assert (load_words (&cfg, err, sizeof err, NULL, 0, NULL) == 0 && cfg.chat_port == 7000);
    assert (cfg.source [option_index (find_option ("config", 6))] == QMS_SOURCE_ENV);
    qms_config_free (&cfg);
    assert (load_words (&cfg, err, sizeof err, NULL, 0, "--config", other, NULL) == 0);
    assert (cfg.chat_port == 9000 && T_EQ (cfg.config_file, other));
    qms_config_free (&cfg);
    unsetenv ("QMS_CONFIG");

    /*  Settings that go together say where each came from. */
    setenv ("QMS_CHAT_PORT", "7101", 1);
    assert (load_words (&cfg, err, sizeof err, NULL, 0, NULL) == -1);
    assert (strstr (err, "must differ: chatServerPort 7101 from env QMS_CHAT_PORT, "
                         "httpServerPort 7101 from env QMS_HTTP_PORT"));
    unsetenv ("QMS_CHAT_PORT");
    assert (load_words (&cfg, err, sizeof err, NULL, 0, "--config", path, "-hp", "7000", NULL) == -1);
    assert (strstr (err, "chatServerPort 7000 from file ") && strstr (err, "httpServerPort 7000 from flag"));
    /*  A file may set what a flag then makes consistent. */
    assert (load_words (&cfg, err, sizeof err, NULL, 0, "--config", path, "-cp", "7002", NULL) == 0);
    qms_config_free (&cfg);
    /*  A PROXY header is taken only from a trusted proxy: none, none taken. */
    assert (load_words (&cfg, err, sizeof err, NULL, 0, "--config", path, "-cp", "7002",
                        "--proxy-protocol", NULL) == -1);
    assert (strstr (err, "--proxy-protocol takes the header only from a --trusted-proxy"));
    assert (load_words (&cfg, err, sizeof err, NULL, 0, "--config", path, "-cp", "7002",
                        "--proxy-protocol", "--trusted-proxy", "10.0.0.0/8", NULL) == 0);
    assert (cfg.proxy_protocol && cfg.trusted_count == 1);
    qms_config_free (&cfg);
    t_env_clear ();
    unlink (path);
    unlink (other);
}

/*  --print-config: every option, its value and source; it reads back as
    the same settings; -help and --print-config both return 1. */
static void
test_print (void)
{
    qms_config_t cfg, again;
    char err [1024], path [64], printed [64], out [8192], out2 [8192];
    t_env_clear ();
    t_write (path, "chatServerPort = 7000\nserverIp = \" spaced # out \"\n"
                   "allow-origin = https://a.example\n");
    setenv ("QMS_HTTP_PORT", "7101", 1);
    assert (load_words (&cfg, err, sizeof err, out, sizeof out, "--config", path,
                        "--log-format", "json", "--print-config", NULL) == 1);
    char expect [256];
    snprintf (expect, sizeof expect, "\nchatServerPort              = 7000                      # file %s:1\n", path);
    assert (strstr (out, expect));
    assert (strstr (out, "\nhttpServerPort              = 7101                      # env QMS_HTTP_PORT\n"));
    assert (strstr (out, "\nlog-format                  = json                      # flag\n"));
    assert (strstr (out, "\n# httpsServerPort           = 8443                      # default\n"));
    assert (strstr (out, "\nserverIp                    = \" spaced # out \""));
    assert (strstr (out, "\nallow-origin                = https://a.example"));
    assert (strstr (out, "\n# config"));
    /*  Every option of the file and environment is there. */
    for (size_t i = 0; i < OPTION_COUNT; i++)
        if (!(s_options [i].flags & OPT_CLI)) {
            char key [80];
            snprintf (key, sizeof key, "\n%s%s ", s_options [i].flags & OPT_NO_FILE ? "# " : "",
                      s_options [i].names [0]);
            assert (strstr (out, key) || (snprintf (key, sizeof key, "\n# %s ",
                                                    s_options [i].names [0]), strstr (out, key)));
        }
    unsetenv ("QMS_HTTP_PORT");

    /*  Read back: the same values. */
    FILE *file = fopen ((t_write (printed, out), printed), "r");
    assert (file);
    fclose (file);
    assert (load_words (&again, err, sizeof err, out2, sizeof out2, "--config", printed, NULL) == 0);
    assert (again.chat_port == 7000 && again.http_port == 7101 && again.log_format == QMS_LOG_FORMAT_JSON);
    assert (T_EQ (again.server_ip, " spaced # out ") && again.origin_count == 1);
    assert (again.source [option_index (find_option ("hp", 2))] == QMS_SOURCE_FILE);
    qms_config_free (&again);
    qms_config_free (&cfg);
    unlink (printed);
    unlink (path);

    assert (load_words (&cfg, err, sizeof err, out, sizeof out, "-help", NULL) == 1);
    assert (strstr (out, "Usage") && strstr (out, "-print-config") && strstr (out, "QMS_CHAT_PORT"));
    assert (load_words (&cfg, err, sizeof err, out, sizeof out, "--print-config=true", NULL) == 1);
    assert (strstr (out, "# chatServerPort"));
    assert (load_words (&cfg, err, sizeof err, out, sizeof out, "--print-config=yes", NULL) == -1);

    /*  Options marked secret print as ****, whatever their source; the
        mechanism, on a table of our own (none of the real options is a
        secret today). */
    const opt_t table [] = {
        { { "token" }, OPT_STRING, OFF (server_ip), SZ (server_ip), 0, 0, "T", "", OPT_SECRET },
        { { "empty" }, OPT_STRING, OFF (filter_actor), SZ (filter_actor), 0, 0, "T", "", OPT_SECRET },
        { { "plain" }, OPT_STRING, OFF (bind_address), SZ (bind_address), 0, 0, "A", "", 0 },
    };
    qms_config_defaults (&cfg);
    strcpy (cfg.server_ip, "s3cret-value");
    strcpy (cfg.bind_address, "127.0.0.1");
    cfg.source [0] = QMS_SOURCE_ENV;
    cfg.source [2] = QMS_SOURCE_FLAG;
    FILE *capture = tmpfile ();
    assert (capture);
    print_table (&cfg, capture, table, 3);
    t_read (capture, out, sizeof out);
    fclose (capture);
    assert (!strstr (out, "s3cret"));
    assert (strstr (out, "token = ****                      # env QMS_TOKEN, secret\n"));
    assert (strstr (out, "# empty = \"\"  "));     /* nothing to hide */
    assert (strstr (out, "plain = 127.0.0.1                 # flag\n"));
    for (size_t i = 0; i < OPTION_COUNT; i++)
        assert (!(s_options [i].flags & OPT_SECRET));       /* update docs/CONFIG.md if one is */
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
    test_env_names ();
    test_env ();
    test_file ();
    test_precedence ();
    test_print ();
    if (verbose)
        printf ("OK\n");
}
