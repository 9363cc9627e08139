/*  qms_admin.c - the admin sockets (qms_admin.h). */
#include "qms_admin.h"
#include "qms_log.h"
#include "qms_util.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define LOG                 "admin"
#define SUN_PATH_MAX        (sizeof ((struct sockaddr_un *) 0)->sun_path)

/* ------------------------------------------------------------------------ */
/*  Admin sockets */

int
qms_admin_socket_path (const char *data_dir, const char *socket_name, char *path, size_t size)
{
    char dir [PATH_MAX];
    if (!data_dir || !*data_dir || !realpath (data_dir, dir))
        return -1;
    int n = snprintf (path, size, "%s/%s", dir, socket_name);
    if (n < 0 || (size_t) n >= size || (size_t) n >= SUN_PATH_MAX)
        return -1;
    return 0;
}

bool
qms_admin_socket_live (const char *path)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    if (strlen (path) >= sizeof addr.sun_path)
        return false;
    memcpy (addr.sun_path, path, strlen (path) + 1);
    /*  Non-blocking: a listener whose backlog is full (EAGAIN) is alive too,
        and a frozen one must not hang the command. */
    int fd = socket (AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    bool live = connect (fd, (struct sockaddr *) &addr, sizeof addr) == 0 || errno == EAGAIN;
    close (fd);
    return live;
}

int
qms_admin_bind (zsock_t *sock, const char *data_dir, const char *socket_name,
                const char *actor, char *path, size_t size)
{
    if (size)
        path [0] = 0;
    if (!data_dir || !*data_dir)
        return -1;
    char file [SUN_PATH_MAX];
    if (qms_admin_socket_path (data_dir, socket_name, file, sizeof file)) {
        qms_warn (actor, "event=admin_socket_unusable dir=\"%s\" reason=\"the directory cannot be "
                  "resolved or the path is longer than a Unix socket allows\" hint=\"admin commands "
                  "then need --store-endpoint and --router-endpoint\"", data_dir);
        return -1;
    }
    /*  libzmq would silently take the file over from a live server. */
    if (qms_admin_socket_live (file)) {
        qms_warn (actor, "event=admin_socket_busy path=\"%s\" reason=\"another process listens there\"",
                  file);
        return -1;
    }
    if (zsock_bind (sock, "ipc://%s", file) < 0) {
        qms_warn (actor, "event=admin_socket_unusable path=\"%s\" reason=\"%s\"", file,
                  zmq_strerror (errno));
        return -1;
    }
    /*  Connecting needs write permission on the file: the server's user only. */
    if (chmod (file, 0600)) {
        qms_warn (actor, "event=admin_socket_unusable path=\"%s\" reason=\"chmod: %s\"", file,
                  strerror (errno));
        zsock_unbind (sock, "ipc://%s", file);
        unlink (file);
        return -1;
    }
    if (size)
        snprintf (path, size, "%s", file);
    qms_info (actor, "event=admin_socket path=\"%s\"", file);
    return 0;
}

void
qms_admin_unbind (const char *path)
{
    if (path && *path)
        unlink (path);
}

static void
t_sockets (const char *dir)
{
    char path [SUN_PATH_MAX], longdir [300];
    assert (qms_admin_socket_path (dir, QMS_ADMIN_STORE_SOCKET, path, sizeof path) == 0);
    assert (path [0] == '/' && strstr (path, QMS_ADMIN_STORE_SOCKET));
    assert (qms_admin_socket_path ("", QMS_ADMIN_STORE_SOCKET, path, sizeof path) == -1);
    assert (qms_admin_socket_path ("/nonexistent-qms-dir", QMS_ADMIN_STORE_SOCKET, path, sizeof path) == -1);
    /*  Too long for a Unix socket: refused, and nothing is bound. */
    snprintf (longdir, sizeof longdir, "%s/%0120d", dir, 0);
    assert (mkdir (longdir, 0700) == 0);
    assert (qms_admin_socket_path (longdir, QMS_ADMIN_STORE_SOCKET, path, sizeof path) == -1);
    zsock_t *sock = zsock_new (ZMQ_ROUTER);
    assert (sock);
    char bound [SUN_PATH_MAX];
    assert (qms_admin_bind (sock, longdir, QMS_ADMIN_STORE_SOCKET, LOG, bound, sizeof bound) == -1);
    assert (bound [0] == 0);
    assert (rmdir (longdir) == 0);
    assert (qms_admin_bind (sock, "", QMS_ADMIN_STORE_SOCKET, LOG, bound, sizeof bound) == -1);

    /*  Bound: live, private; a second bind is refused while it lives. */
    assert (qms_admin_socket_path (dir, QMS_ADMIN_ROUTER_SOCKET, path, sizeof path) == 0);
    assert (!qms_admin_socket_live (path));
    assert (qms_admin_bind (sock, dir, QMS_ADMIN_ROUTER_SOCKET, LOG, bound, sizeof bound) == 0);
    assert (streq (bound, path));
    struct stat info;
    assert (stat (path, &info) == 0 && S_ISSOCK (info.st_mode) && (info.st_mode & 0777) == 0600);
    assert (qms_admin_socket_live (path));
    zsock_t *other = zsock_new (ZMQ_ROUTER);
    assert (other);
    char taken [SUN_PATH_MAX];
    assert (qms_admin_bind (other, dir, QMS_ADMIN_ROUTER_SOCKET, LOG, taken, sizeof taken) == -1);
    zsock_destroy (&other);
    assert (qms_admin_socket_live (path));

    /*  The file outlives its socket (libzmq leaves it): dead, not live; a
        new bind takes it over; qms_admin_unbind removes it. */
    zsock_destroy (&sock);
    zclock_sleep (50);
    assert (stat (path, &info) == 0 && !qms_admin_socket_live (path));
    sock = zsock_new (ZMQ_ROUTER);
    assert (sock && qms_admin_bind (sock, dir, QMS_ADMIN_ROUTER_SOCKET, LOG, bound, sizeof bound) == 0);
    assert (qms_admin_socket_live (path));
    zsock_destroy (&sock);
    qms_admin_unbind (bound);
    assert (stat (path, &info) == -1 && errno == ENOENT);
}

void
qms_admin_test (bool verbose)
{
    if (verbose)
        printf (" * qms_admin: ");
    char dir [] = "/tmp/qms-admin-sock-test-XXXXXX";
    assert (mkdtemp (dir));
    t_sockets (dir);
    assert (rmdir (dir) == 0);
    if (verbose)
        printf ("OK\n");
}
