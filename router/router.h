/*  router.h - the router actor: who is online where, sessions, delivery.

    It binds a ROUTER socket on cfg->router_endpoint for gateways and talks
    to the store over a DEALER on cfg->store_endpoint for sessions that are
    not in memory.  Everything on the message path is found in O(1).
*/
#ifndef ROUTER_H_INCLUDED
#define ROUTER_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/*  zactor body; args is a const qms_config_t * (read during set-up only). */
void router_actor (zsock_t *pipe, void *args);

void router_test (bool verbose);

/*  The parts of router_sf.c (store-and-forward) testable without the actor. */
void router_sf_test (bool verbose);
/*  Selftest of the groups (router_group.c). */
void router_group_test (bool verbose);

#ifdef __cplusplus
}
#endif

#endif
