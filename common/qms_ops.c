/*  qms_ops.c - what the operations endpoints of every role share (see
    qms_ops.h): the /healthz and /readyz bodies, and the endpoint a
    process's own ops port connects to.
*/
#define _GNU_SOURCE             /* memmem */
#include "qms_ops.h"
#include "qms_json.h"
#include "qms_util.h"

#include <arpa/inet.h>
#include <assert.h>
#include <czmq.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/*  Responses. */

#define APPEND_LIT(out, lit) qms_buf_append (out, lit, sizeof (lit) - 1)

static void
json_bool (qms_buf_t *out, const char *key, bool value)
{
    APPEND_LIT (out, ",");
    qms_json_string (out, key, strlen (key), 0);
    if (value)
        APPEND_LIT (out, ":true");
    else
        APPEND_LIT (out, ":false");
}

static void
json_reason (qms_buf_t *out, const char *reason)
{
    if (reason) {
        APPEND_LIT (out, ",\"reason\":");
        qms_json_string (out, reason, strlen (reason), 0);
    }
}

int
qms_ops_health_json (qms_buf_t *out, const char *role, bool ok, long connections, const char *reason)
{
    if (ok)
        APPEND_LIT (out, "{\"status\":\"ok\",\"role\":");
    else
        APPEND_LIT (out, "{\"status\":\"unresponsive\",\"role\":");
    qms_json_string (out, role, strlen (role), 0);
    if (connections >= 0) {
        char n [32];
        qms_buf_append (out, n, (size_t) snprintf (n, sizeof n, ",\"connections\":%ld", connections));
    }
    json_reason (out, ok ? NULL : reason);
    APPEND_LIT (out, "}");
    return ok ? 200 : 503;
}

int
qms_ops_ready_json (qms_buf_t *out, const qms_ops_check_t *checks, int count,
                    int database_writable, const char *database, const char *reason)
{
    bool ready = !reason && database_writable != 0;
    for (int i = 0; i < count; i++)
        ready = ready && checks [i].ok;
    if (ready)
        APPEND_LIT (out, "{\"ready\":true");
    else
        APPEND_LIT (out, "{\"ready\":false");
    for (int i = 0; i < count; i++)
        json_bool (out, checks [i].name, checks [i].ok);
    if (database_writable >= 0)
        json_bool (out, "database_writable", database_writable == 1);
    if (database) {
        APPEND_LIT (out, ",\"database\":");
        qms_json_string (out, database, strlen (database), 0);
    }
    json_reason (out, reason);
    APPEND_LIT (out, "}");
    return ready ? 200 : 503;
}

/* ------------------------------------------------------------------------ */
/*  Endpoints. */

int
qms_ops_local_endpoint (const char *bound, char *out, size_t out_size)
{
    if (strncmp (bound, "tcp://", 6)) {
        snprintf (out, out_size, "%s", bound);
        return strlen (bound) < out_size ? 0 : -1;
    }
    const char *host = bound + 6;
    const char *colon = strrchr (host, ':');
    if (!colon || strcmp (colon + 1, "*") == 0)
        return -1;
    char name [IF_NAMESIZE + 1];
    size_t host_len = (size_t) (colon - host);
    struct in_addr ipv4;
    char literal [64];
    if (host_len < sizeof literal) {
        memcpy (literal, host, host_len);
        literal [host_len] = 0;
        if (inet_pton (AF_INET, literal, &ipv4) == 1 || literal [0] == '[') {
            snprintf (out, out_size, "%s", bound);
            return strlen (bound) < out_size ? 0 : -1;
        }
    }
    if (host_len == 1 && host [0] == '*')
        return snprintf (out, out_size, "tcp://127.0.0.1%s", colon) < (int) out_size ? 0 : -1;
    if (host_len >= sizeof name)
        return -1;
    memcpy (name, host, host_len);
    name [host_len] = 0;
    /*  An interface: its IPv4 address. */
    struct ifaddrs *list = NULL, *i;
    int rc = -1;
    if (getifaddrs (&list))
        return -1;
    for (i = list; i; i = i->ifa_next)
        if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET && strcmp (i->ifa_name, name) == 0) {
            char address [INET_ADDRSTRLEN];
            inet_ntop (AF_INET, &((struct sockaddr_in *) i->ifa_addr)->sin_addr, address, sizeof address);
            rc = snprintf (out, out_size, "tcp://%s%s", address, colon) < (int) out_size ? 0 : -1;
            break;
        }
    freeifaddrs (list);
    return rc;
}

/* ------------------------------------------------------------------------ */
/*  Selftest. */

/*  b holds exactly expected; b is emptied. */
static bool
t_body_is (qms_buf_t *b, const char *expected)
{
    bool same = b->len == strlen (expected) && memcmp (b->data, expected, b->len) == 0;
    if (!same)
        fprintf (stderr, "\nexpected %s\n     got %.*s\n", expected, (int) b->len, b->data);
    qms_buf_reset (b);
    return same;
}

void
qms_ops_test (bool verbose)
{
    if (verbose)
        printf (" * qms_ops: ");
    char endpoint [256];

    /*  The bodies, exactly (the gateway answers with the same). */
    qms_buf_t b;
    qms_buf_init (&b);
    assert (qms_ops_health_json (&b, "gateway", true, 3, "unused") == 200);
    assert (t_body_is (&b, "{\"status\":\"ok\",\"role\":\"gateway\",\"connections\":3}"));
    assert (qms_ops_health_json (&b, "auth", false, -1, "the \"auth\" actor is slow") == 503);
    assert (t_body_is (&b, "{\"status\":\"unresponsive\",\"role\":\"auth\",\"reason\":\"the \\\"auth\\\" actor is slow\"}"));
    qms_ops_check_t checks [] = { { "router", true }, { "store", true } };
    assert (qms_ops_ready_json (&b, checks, 2, -1, NULL, NULL) == 200);
    assert (t_body_is (&b, "{\"ready\":true,\"router\":true,\"store\":true}"));
    assert (qms_ops_ready_json (&b, checks, 2, 0, "/d/users.db", "database is read-only") == 503);
    assert (t_body_is (&b, "{\"ready\":false,\"router\":true,\"store\":true,\"database_writable\":false,"
                           "\"database\":\"/d/users.db\",\"reason\":\"database is read-only\"}"));
    checks [1].ok = false;                          /* one check down: not ready */
    assert (qms_ops_ready_json (&b, checks, 2, 1, NULL, NULL) == 503);
    assert (t_body_is (&b, "{\"ready\":false,\"router\":true,\"store\":false,\"database_writable\":true}"));
    qms_buf_free (&b);

    /*  Endpoints for a socket in the same process. */
    assert (qms_ops_local_endpoint ("tcp://*:5555", endpoint, sizeof endpoint) == 0);
    assert (streq (endpoint, "tcp://127.0.0.1:5555"));
    assert (qms_ops_local_endpoint ("tcp://lo:5555", endpoint, sizeof endpoint) == 0);
    assert (streq (endpoint, "tcp://127.0.0.1:5555"));
    assert (qms_ops_local_endpoint ("tcp://10.1.2.3:7", endpoint, sizeof endpoint) == 0);
    assert (streq (endpoint, "tcp://10.1.2.3:7"));
    assert (qms_ops_local_endpoint ("ipc:///tmp/x", endpoint, sizeof endpoint) == 0);
    assert (streq (endpoint, "ipc:///tmp/x"));
    assert (qms_ops_local_endpoint ("tcp://127.0.0.1:*", endpoint, sizeof endpoint) == -1);
    assert (qms_ops_local_endpoint ("tcp://no-such-if0:7", endpoint, sizeof endpoint) == -1);

    if (verbose)
        printf ("OK\n");
}
