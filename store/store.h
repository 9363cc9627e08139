/*  store.h - the store actor: the only code that opens the database.

    It binds a ROUTER socket on cfg->store_endpoint and answers the QMS_ST_*
    requests of qms_msg.h, each with the request's req.  SQLite file:
    <data_dir>/users.db, WAL mode, prepared statements only.
*/
#ifndef STORE_H_INCLUDED
#define STORE_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include "qms_config.h"

#ifdef __cplusplus
extern "C" {
#endif

/*  zactor body; args is a const qms_config_t * (read during set-up only).
    Besides cfg->store_endpoint it binds the admin socket
    ipc://<data_dir>/.qms-admin-store (admin/admin.h), and it holds an
    exclusive lock on <data_dir>/.qms-store.lock while it runs: a second
    store on the same database refuses to start. */
void store_actor (zsock_t *pipe, void *args);

/*  The store an administration command runs in its own process while no
    server does: store_actor without the admin socket and without the
    background expiry of stored messages (whose age limit is the server's
    setting, not the command's).  On failure the reason is left in
    reason. */
typedef struct {
    const qms_config_t *cfg;
    char reason [1600];
} store_local_t;

/*  In the reason when another store holds the database. */
#define STORE_BUSY_TEXT "the database is in use by another store"

/*  zactor body; args is a store_local_t *. */
void store_local_actor (zsock_t *pipe, void *args);

void store_test (bool verbose);

#ifdef __cplusplus
}
#endif

#endif
