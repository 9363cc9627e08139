/*  store.h - the store actor: the only code that opens the database.

    It binds a ROUTER socket on cfg->store_endpoint and answers the QMS_ST_*
    requests of qms_msg.h, each with the request's req.  SQLite file:
    <data_dir>/users.db, WAL mode, prepared statements only.
*/
#ifndef STORE_H_INCLUDED
#define STORE_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/*  zactor body; args is a const qms_config_t * (read during set-up only). */
void store_actor (zsock_t *pipe, void *args);

void store_test (bool verbose);

#ifdef __cplusplus
}
#endif

#endif
