/*  selftest.c - runs one module's selftest, or all of them.

    ctest runs one process per module (see CMakeLists.txt), so a failing
    module names itself.  Usage: qms_selftest [module ...]
*/
#include "qms_msg.h"
#include "qms_util.h"
#include "qms_names.h"
#include "qms_log.h"
#include "qms_config.h"
#include "qms_metrics.h"
#include "qms_ops.h"
#include "ops_port.h"
#include "lws_fd.h"
#include "qms_watchdog.h"
#include "qms_password.h"
#include "qms_admin.h"
#include "qms_inbox.h"
#include "qms_json.h"
#include "qms_curve.h"
#include "qms_pid.h"
#include "store.h"
#include "auth.h"
#include "router.h"
#include "http.h"
#include "gateway.h"
#include "outq.h"
#include "tls.h"
#include "monitor.h"
#include "admin.h"

#include <czmq.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name;
    void (*test) (bool verbose);
} selftest_t;

static const selftest_t s_tests [] = {
    { "qms_msg", qms_msg_test },
    { "qms_util", qms_util_test },
    { "qms_names", qms_names_test },
    { "qms_log", qms_log_test },
    { "qms_config", qms_config_test },
    { "qms_metrics", qms_metrics_test },
    { "qms_ops", qms_ops_test },
    { "qms_watchdog", qms_watchdog_test },
    { "qms_password", qms_password_test },
    { "qms_admin", qms_admin_test },
    { "qms_inbox", qms_inbox_test },
    { "qms_json", qms_json_test },
    { "qms_curve", qms_curve_test },
    { "qms_pid", qms_pid_test },
    { "store", store_test },
    { "auth", auth_test },
    { "router", router_test },
    { "router_sf", router_sf_test },
    { "router_group", router_group_test },
    { "http", http_test },
    { "outq", outq_test },
    { "lws_sorted", lws_sorted_test },
    { "gateway", gateway_test },
    { "gw_listen", gw_listen_test },
    { "gw_conn", gw_conn_test },
    { "gw_dispatch", gw_dispatch_test },
    { "gw_presence", gw_presence_test },
    { "gw_ops", gw_ops_test },
    { "ops_port", ops_port_test },
    { "lws_fd", lws_fd_test },
    { "gw_http", gw_http_test },
    { "tls", tls_test },
    { "monitor", monitor_test },
    { "admin", admin_test },
};

int
main (int argc, char **argv)
{
    zsys_handler_set (NULL);
    if (argc == 2 && strcmp (argv [1], "--records-table") == 0) {
        qms_msg_print_table (stdout);     /* docs/ARCHITECTURE.md's table */
        return 0;
    }
    size_t count = sizeof s_tests / sizeof s_tests [0];
    printf ("Running QMessageServer selftests...\n");
    int ran = 0;
    for (size_t i = 0; i < count; i++) {
        bool wanted = argc < 2;
        for (int a = 1; a < argc; a++)
            if (strcmp (argv [a], s_tests [i].name) == 0)
                wanted = true;
        if (wanted) {
            s_tests [i].test (true);
            ran++;
        }
    }
    if (ran == 0 || (argc > 1 && ran != argc - 1)) {
        fprintf (stderr, "unknown module name; known:");
        for (size_t i = 0; i < count; i++)
            fprintf (stderr, " %s", s_tests [i].name);
        fprintf (stderr, "\n");
        return 1;
    }
    printf ("Tests passed OK\n");
    return 0;
}
