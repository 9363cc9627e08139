/*  qms_admin.h - what the administration command and the actors share:
    the QMS_ST_ADMIN operations and the admin sockets.

    The command (admin/) talks QMS_ST_ADMIN records to a store actor and
    QMS_RT_KICK_USER to a router; the actors answer.  Neither side includes
    the other: both include this.

    Admin sockets: every store also binds its ROUTER socket on
    ipc://<data dir>/.qms-admin-store, and every router whose data
    directory holds users.db on ipc://<data dir>/.qms-admin-router, mode
    0600, so only the server's own user can ask.  --store-endpoint and
    --router-endpoint, when given as tcp:// or ipc://, are used instead (a
    cluster whose processes have no common data directory).

    The QMS_ST_ADMIN operations (num), their arguments and answers.  Every
    operation ends with QMS_ADMIN_DONE (num = QMS_ST_* status, s0 = a
    detail); QMS_ST_ADMIN_ROW records come before it.  Names are sent as
    their key (qms_name_key), as the store looks users up by it.

    A *user row* is: time = created (ms), num = stored messages waiting for
    the user, s0 = id, s1 = name, s2 = public key, s3 = the session's last
    activity in ms as decimal text ("" when the user has no session).
*/
#ifndef QMS_ADMIN_H_INCLUDED
#define QMS_ADMIN_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/*  Is anyone there?  DONE OK, s0 = the database file's path. */
#define QMS_ADMIN_PING          1
/*  Every user, by name key: user rows (in several ZeroMQ messages when
    there are many), then DONE OK, s0 = the count. */
#define QMS_ADMIN_USER_LIST     2
/*  s0 = name key: one user row, DONE OK; or DONE NO_USER. */
#define QMS_ADMIN_USER_SHOW     3
/*  s0 = name key: the user row, then one row per stored session: time =
    created, num = last activity, s0 = user id, s2 = token hash (SHA-256
    hex, never the token); DONE OK; or DONE NO_USER. */
#define QMS_ADMIN_USER_SESSIONS 4
/*  s0 = name key: the user row as it was, then the user, its session and
    the messages waiting for it are deleted; DONE OK; or DONE NO_USER. */
#define QMS_ADMIN_USER_DELETE   5
/*  s0 = name key: the user row as it was, the session deleted; DONE OK. */
#define QMS_ADMIN_USER_LOGOUT   6
/*  s0 = name key, s1 = the new password's PHC (Argon2id): the user row,
    the hash replaced and the session deleted in one transaction; DONE. */
#define QMS_ADMIN_USER_PASSWORD 7
/*  s0 = absolute path of a file that must not exist: SQLite's online
    backup of the whole database into it (mode 0600); DONE OK, s0 = pages
    and bytes; DONE EXISTS when the file exists. */
#define QMS_ADMIN_DB_BACKUP     8
/*  PRAGMA integrity_check and foreign_key_check: one row per problem
    (s0 = the text); DONE OK ("ok") or ERROR (s0 = how many problems). */
#define QMS_ADMIN_DB_CHECK      9

/*  The admin sockets' file names in the data directory. */
#define QMS_ADMIN_STORE_SOCKET  ".qms-admin-store"
#define QMS_ADMIN_ROUTER_SOCKET ".qms-admin-router"

/*  The file path of an admin socket (absolute: the data directory is
    resolved).  0, or -1 when the directory cannot be resolved or the path
    is too long for a Unix socket. */
int qms_admin_socket_path (const char *data_dir, const char *socket_name, char *path, size_t size);

/*  True when a process accepts connections on the Unix socket at path (a
    file left by a process that died answers nothing). */
bool qms_admin_socket_live (const char *path);

/*  For the actors: also bind sock on the admin socket of data_dir, mode
    0600.  Not bound (a warning in the log, -1) when the path cannot be
    used or another live process holds it; an empty data_dir binds
    nothing (selftests).  On success path (size >= 108) holds the file,
    for qms_admin_unbind. */
int qms_admin_bind (zsock_t *sock, const char *data_dir, const char *socket_name,
                    const char *actor, char *path, size_t size);

/*  Remove the socket file left behind by qms_admin_bind (libzmq keeps it). */
void qms_admin_unbind (const char *path);

void qms_admin_test (bool verbose);

#ifdef __cplusplus
}
#endif

#endif
