/*  qms_config.h - the server's settings and the command line that sets them.

    The original server's options keep their names and aliases (Qt style,
    one dash; two dashes are accepted too).  Our own options use two dashes
    and also accept one.  Parsing only checks what it can see (numbers,
    ranges, that files exist and can be read); what needs a library (that a
    key matches its certificate) is checked by the caller before anything
    listens.
*/
#ifndef QMS_CONFIG_H_INCLUDED
#define QMS_CONFIG_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define QMS_MAX_ORIGINS 16

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

    /* ours */
    char bind_address [256];    /* --bind: "" = every interface */
    char data_dir [1024];       /* --data-dir . : users.db lives here */
    char html_dir [1024];       /* --html-dir ./html */
    int session_timeout;        /* --session-timeout 600 (seconds) */
    int log_level;              /* --log-level info */

    /* password hashing (Argon2id) */
    uint32_t argon2_memory_kib; /* --argon2-memory 19456 */
    uint32_t argon2_iterations; /* --argon2-iterations 2 */
    int auth_workers;           /* --auth-workers 2 */

    /* limits */
    int max_connections;        /* --max-connections 10000 per gateway */
    int rate_messages;          /* --rate-limit 2000 requests/s per connection */
    int rate_burst;             /* --rate-burst 4000 */
    size_t max_queue_bytes;     /* --max-queue 8 MiB queued to one slow reader */
    int login_fail_limit;       /* --login-fail-limit 5 per name or address */
    int login_fail_window;      /* --login-fail-window 300 seconds */
    int message_quota;          /* --message-quota 10000 stored messages per recipient */
    int message_max_age;        /* --message-max-age 30 days a stored message is kept */
    char *origins [QMS_MAX_ORIGINS]; /* --allow-origin, repeatable */
    int origin_count;

    /* actor endpoints (inproc:// in the embedded default) */
    char store_endpoint [256];
    char auth_endpoint [256];
    char router_endpoint [256];
} qms_config_t;

/*  Defaults, as documented in README.md. */
void qms_config_defaults (qms_config_t *cfg);

/*  Parse argv into cfg (which holds defaults).  Returns 0 to run, 1 when
    -help was asked for (usage written to out), or -1 with a one-line
    reason in err. */
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
