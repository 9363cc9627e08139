/*  qms_config.h - the server's settings: command line, environment and
    configuration file.

    The original server's options keep their names and aliases (Qt style,
    one dash; two dashes are accepted too).  Our own options use two dashes
    and also accept one.  One table drives all three sources (see
    docs/CONFIG.md): every option can also be set by the environment
    variable QMS_<NAME> (the long name in upper case, words split at '-'
    and at camelCase humps, "ServerPort" shortened to "Port":
    QMS_CHAT_PORT, QMS_DATA_DIR) and by a `key = value` line in the file
    named by --config (or QMS_CONFIG); keys are the option names without
    dashes.  Flags win over the environment, which wins over the file,
    which wins over the defaults.  Parsing only checks what it can see
    (numbers, ranges, that files exist and can be read), and every error
    says where the value came from (the flag, the variable, FILE:LINE);
    what needs a library (that a key matches its certificate) is checked
    by the caller before anything listens.
*/
#ifndef QMS_CONFIG_H_INCLUDED
#define QMS_CONFIG_H_INCLUDED

#include "qms_util.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define QMS_MAX_ORIGINS 16
#define QMS_MAX_TRUSTED 16
#define QMS_CONFIG_MAX_OPTIONS 64   /* entries in the option table, at most */

/*  Where a setting came from, lowest precedence first. */
typedef enum {
    QMS_SOURCE_DEFAULT = 0,
    QMS_SOURCE_FILE,
    QMS_SOURCE_ENV,
    QMS_SOURCE_FLAG
} qms_config_source_t;

typedef struct {
    /* the original's options */
    int chat_port;              /* -chatServerPort 12345 */
    int http_port;              /* -httpServerPort 8080 */
    int https_port;             /* -httpsServerPort 8443 */
    char server_ip [256];       /* -serverIp localhost: written into the UI */
    char ssl_cert [1024];       /* -sslCertificate (PEM) */
    char ssl_key [1024];        /* -sslPrivateKey (PEM) */
    bool disable_https;
    bool disable_wss;
    bool self_signed;           /* --self-signed: make (once) and use a development certificate */
    bool reuse_port;            /* --reuse-port: gateways on one host share their ports */
    bool poll_loop;             /* --poll-loop: lws's poll() loop, not libuv */

    /* ours */
    char bind_address [256];    /* --bind: "" = every interface */
    char data_dir [1024];       /* --data-dir . : users.db lives here */
    char html_dir [1024];       /* --html-dir ./html */
    bool allow_inline_scripts;  /* --allow-inline-scripts: a UI with inline code (the original's) */
    int session_timeout;        /* --session-timeout 600 (seconds) */
    int log_level;              /* --log-level info */
    int log_format;             /* --log-format text (qms_log_format_t) */

    /* password hashing (Argon2id) */
    uint32_t argon2_memory_kib; /* --argon2-memory 19456 */
    uint32_t argon2_iterations; /* --argon2-iterations 2 */
    int auth_workers;           /* --auth-workers 2 */

    /* limits */
    int max_connections;        /* --max-connections 10000 per gateway */
    int rate_messages;          /* --rate-limit 2000 requests/s per connection */
    int rate_burst;             /* --rate-burst 4000 */
    size_t rate_bytes;          /* --rate-limit-bytes 1 MiB/s read from one connection */
    size_t max_queue_bytes;     /* --max-queue 1 MiB queued to one slow reader */
    size_t rx_buffer_bytes;     /* --rx-buffer 4096 read from one WebSocket at a time */
    int write_timeout;          /* --write-timeout 30 s with output that does not drain */
    size_t output_budget_bytes; /* --output-budget 256 MiB queued for all connections */
    int drain_timeout;          /* --drain-timeout 10 s from SIGTERM to exit, at most */
    int login_fail_limit;       /* --login-fail-limit 5 per name or address */
    int login_fail_window;      /* --login-fail-window 300 seconds */
    int message_quota;          /* --message-quota 10000 stored messages per recipient */
    int message_max_age;        /* --message-max-age 30 days a stored message is kept */
    int group_max_members;      /* --group-max-members 1024, the owner included */
    int group_max_per_user;     /* --group-max-per-user 256 groups one user may be in */
    int group_name_max;         /* --group-name-max 64 characters */
    int presence_interval_ms;   /* --presence-interval 250: user-list pushes are coalesced */
    int ping_interval;          /* --ping-interval 30 s of silence before a WebSocket ping */
    int metrics_port;           /* --metrics-port: /metrics there only (0 = on the HTTP port) */
    int max_per_address;        /* --max-connections-per-address 1000 */
    char *origins [QMS_MAX_ORIGINS]; /* --allow-origin, repeatable */
    int origin_count;
    qms_cidr_t trusted [QMS_MAX_TRUSTED]; /* --trusted-proxy, repeatable: whose
                                           X-Forwarded-For names the client */
    int trusted_count;
    bool proxy_protocol;        /* --proxy-protocol: a trusted peer on the chat
                                   port sends a PROXY v2 header first */

    /* actor endpoints (inproc:// in the embedded default; environment
       QMS_STORE_ENDPOINT etc. give defaults, see qms_config_env) */
    char store_endpoint [256];
    char auth_endpoint [256];
    char router_endpoint [256];
    char curve_keys [1024];     /* --curve-keys DIR: CURVE on tcp:// links (qms_curve.h) */
    char log_endpoint [256];    /* --log-endpoint: "" = logs not published */

    /* the monitor role */
    char filter_actor [64];     /* --filter-actor: "" = every actor */
    int filter_level;           /* --filter-level debug: show this level and more severe */

    /*  Where the settings came from. */
    char config_file [1024];    /* --config FILE (or QMS_CONFIG): "" = none */
    bool print_config;          /* --print-config: print them all and exit */
    int argc;                   /* the command line it was loaded from, for a */
    char **argv;                /* reload on SIGHUP (qms_config_load sets them) */
    unsigned char source [QMS_CONFIG_MAX_OPTIONS];  /* per option: qms_config_source_t */
    int source_line [QMS_CONFIG_MAX_OPTIONS];       /* per option: its line in config_file */
} qms_config_t;

/*  Defaults, as documented in README.md. */
void qms_config_defaults (qms_config_t *cfg);

/*  Everything at once, in order of precedence: defaults already in cfg,
    then the file (--config or QMS_CONFIG), the environment, the flags,
    and the checks of settings that go together.  Returns 0 to run; 1
    when -help or --print-config was asked for (written to out: the
    caller exits 0); -1 with a one-line reason in err that names where
    the bad value came from (exit 2).  Unknown QMS_* variables are
    warned about on stderr, not errors. */
int qms_config_load (qms_config_t *cfg, int argc, char **argv,
                     char *err, size_t err_size, FILE *out);

/*  The parts of qms_config_load, each on top of what cfg holds.
    qms_config_file reads `key = value` lines from path (keys are option
    names without dashes, '#' starts a comment, booleans are true or
    false); an unknown key is an error.  qms_config_env reads every
    QMS_<NAME> (an empty variable counts as unset).  Both return 0, or -1
    with a reason. */
int qms_config_file (qms_config_t *cfg, const char *path, char *err, size_t err_size);
int qms_config_env (qms_config_t *cfg, char *err, size_t err_size);

/*  Every option with its effective value and where it came from, as a
    valid configuration file (the source in a comment).  Options marked
    secret in the table print as "****". */
void qms_config_print (const qms_config_t *cfg, FILE *out);

/*  Check an actor endpoint given as option: tcp://HOST:PORT, ipc://PATH,
    or inproc://NAME when inproc_ok (only threads of one process can use
    it).  connects: this process connects to it, so a wildcard ('*' for the
    host or port) that only a bind understands is refused.  Returns 0, or
    -1 with a reason naming the option. */
int qms_endpoint_check (const char *option, const char *endpoint, bool inproc_ok,
                        bool connects, char *err, size_t err_size);

/*  The address to bind for an endpoint that others connect to.  Everyone
    is given the same connect-style endpoint; the one that binds it turns
    a tcp:// host name into the IPv4 address that name has here ("store"
    in a container network, "localhost" is 127.0.0.1), so it listens
    exactly where the others will look and nowhere else.  IPv4 literals,
    '*', interface names (eth0), ipc:// and inproc:// are kept as they are.
    Returns 0, or -1 with a reason (the name does not resolve). */
int qms_endpoint_bind_address (const char *endpoint, char *out, size_t out_size,
                               char *err, size_t err_size);

/*  Parse argv into cfg (on top of what it holds), then check the
    settings that go together.  Returns 0 to run, 1 when -help was asked
    for (usage written to out), or -1 with a one-line reason in err.
    --config and --print-config are only recorded: qms_config_load acts
    on them. */
int qms_config_parse (qms_config_t *cfg, int argc, char **argv,
                      char *err, size_t err_size, FILE *out);

/*  True when HTTPS / WSS are on (a certificate and key were given and not
    disabled). */
bool qms_config_https (const qms_config_t *cfg);
bool qms_config_wss (const qms_config_t *cfg);

void qms_config_usage (FILE *out);
void qms_config_free (qms_config_t *cfg);

void qms_config_test (bool verbose);

#ifdef __cplusplus
}
#endif

#endif
