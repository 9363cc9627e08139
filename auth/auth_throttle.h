/*  auth_throttle.h - counting failed logins, in memory, owned by auth.

    One table counts failures per key (a name key, or a peer address) over a
    sliding window.  A key is blocked while its failures in the window plus
    the attempts still in flight reach the limit, so pipelining many guesses
    at once does not slip past it.  The table is bounded: when full, expired
    entries go first, then the least recently touched one.

    Only the auth actor's thread uses a table; it is not thread-safe.
*/
#ifndef AUTH_THROTTLE_H_INCLUDED
#define AUTH_THROTTLE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct auth_throttle_t auth_throttle_t;

/*  limit <= 0 disables the table (nothing is ever blocked).  Times are
    milliseconds on any monotonic clock (qms_mono_ms). */
auth_throttle_t *auth_throttle_new (int limit, uint64_t window_ms, size_t max_entries);
void auth_throttle_destroy (auth_throttle_t **self_p);

/*  0 when key may try now, else the seconds to wait (at least 1): the time
    until the oldest counted failure leaves the window.  An empty key is
    never blocked. */
int auth_throttle_check (auth_throttle_t *self, const char *key, uint64_t now);

/*  An attempt for key starts; auth_throttle_end () must follow, with
    failed = true when the credentials were wrong. */
void auth_throttle_begin (auth_throttle_t *self, const char *key, uint64_t now);
void auth_throttle_end (auth_throttle_t *self, const char *key, bool failed, uint64_t now);

/*  Count one failure for key at once (no attempt in flight). */
void auth_throttle_fail (auth_throttle_t *self, const char *key, uint64_t now);

/*  Forget key's failures (a successful login). */
void auth_throttle_clear (auth_throttle_t *self, const char *key);

/*  How many keys the table holds. */
size_t auth_throttle_size (auth_throttle_t *self);

void auth_throttle_test (bool verbose);

#ifdef __cplusplus
}
#endif

#endif
