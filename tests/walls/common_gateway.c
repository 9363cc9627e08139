/*  Compiled as common/: common/ includes no room. */
#include "proto.h"

int wall_common_gateway (void);
int wall_common_gateway (void) { return 0; }
