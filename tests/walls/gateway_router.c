/*  Compiled as gateway/: the gateway reaches the router by records only. */
#include "router.h"

int wall_gateway_router (void);
int wall_gateway_router (void) { return 0; }
