/*  auth.h - the auth actor: register, login, tokens.

    It binds a ROUTER socket on cfg->auth_endpoint for gateways, talks to
    the store over a DEALER on cfg->store_endpoint, and hashes passwords
    (Argon2id) on its own worker threads so that no event loop waits on
    the key derivation.
*/
#ifndef AUTH_H_INCLUDED
#define AUTH_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/*  zactor body; args is a const qms_config_t * (read during set-up only). */
void auth_actor (zsock_t *pipe, void *args);

void auth_test (bool verbose);

#ifdef __cplusplus
}
#endif

#endif
