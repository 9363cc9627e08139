/*  main.c - qmessageserver: parse the command line, start the actors, serve.

    The embedded default runs every actor in this one process: store, auth
    and router as threads on inproc:// endpoints, the gateway's
    libwebsockets loop in the main thread.  Nothing else to install or start.
*/
#include "auth.h"
#include "gateway.h"
#include "qms_actor.h"
#include "qms_config.h"
#include "qms_log.h"
#include "router.h"
#include "store.h"
#include "tls.h"

#include <czmq.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#define EXIT_BAD_USAGE 2
#define EXIT_CANNOT_START 1

int
main (int argc, char **argv)
{
    /*  CZMQ must not install its own signal handlers: the gateway reads
        SIGINT and SIGTERM from a signalfd.  Block them before any thread
        starts, so every thread inherits the mask. */
    zsys_handler_set (NULL);
    static const int stop_signals [] = { SIGINT, SIGTERM, 0 };
    sigset_t set;
    sigemptyset (&set);
    for (const int *s = stop_signals; *s; s++)
        sigaddset (&set, *s);
    pthread_sigmask (SIG_BLOCK, &set, NULL);
    signal (SIGPIPE, SIG_IGN);

    qms_config_t cfg;
    qms_config_defaults (&cfg);
    char err [1024];
    int rc = qms_config_parse (&cfg, argc, argv, err, sizeof err, stdout);
    if (rc == 1)
        return 0;
    if (rc < 0) {
        fprintf (stderr, "qmessageserver: %s\n", err);
        return EXIT_BAD_USAGE;
    }
    if (cfg.self_signed
    &&  tls_self_signed_ensure (cfg.data_dir, cfg.server_ip, cfg.ssl_cert, cfg.ssl_key,
                                sizeof cfg.ssl_cert, err, sizeof err)) {
        fprintf (stderr, "qmessageserver: %s\n", err);
        qms_config_free (&cfg);
        return EXIT_CANNOT_START;
    }
    if ((qms_config_https (&cfg) || qms_config_wss (&cfg)) && gateway_check_tls (&cfg, err, sizeof err)) {
        fprintf (stderr, "qmessageserver: %s\n", err);
        qms_config_free (&cfg);
        return EXIT_BAD_USAGE;
    }
    qms_log_set_level (cfg.log_level);
    qms_info ("main", "event=starting version=%s chat_port=%d http_port=%d https=%s wss=%s data_dir=\"%s\"",
              "0.1.0", cfg.chat_port, cfg.http_port, qms_config_https (&cfg) ? "on" : "off",
              qms_config_wss (&cfg) ? "on" : "off", cfg.data_dir);

    zactor_t *store = NULL, *auth = NULL, *router = NULL;
    gateway_t *gateway = NULL;
    rc = EXIT_CANNOT_START;
    store = qms_actor_start (store_actor, &cfg, "store");
    if (store)
        auth = qms_actor_start (auth_actor, &cfg, "auth");
    if (auth)
        router = qms_actor_start (router_actor, &cfg, "router");
    if (router)
        gateway = gateway_new (&cfg, stop_signals);
    if (gateway) {
        qms_info ("main", "event=ready chat=%s://%s:%d/ web=http://%s:%d/",
                  qms_config_wss (&cfg) ? "wss" : "ws", cfg.server_ip, cfg.chat_port,
                  cfg.server_ip, cfg.http_port);
        rc = gateway_run (gateway);
    }
    /*  Stop in the reverse order of the data flow: the store goes last, so
        that what the router and auth still send reaches the database. */
    gateway_destroy (&gateway);
    zactor_destroy (&router);
    zactor_destroy (&auth);
    zactor_destroy (&store);
    qms_config_free (&cfg);
    if (rc == 0)
        qms_info ("main", "event=exit status=0");
    return rc;
}
