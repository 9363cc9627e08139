/*  router_map.h - a small open-addressing hash map for the router.

    The router finds sessions by token hash, by user id and by connection
    key, and pending store requests by request id, on every message: these
    maps make each of those one hash and (almost always) one probe.

    The map stores (hash, item) pairs; it does not own the items or their
    keys.  Keys live inside the items, so a lookup passes the hash and a key
    and the map asks the caller's match function whether an item holds that
    key.  Linear probing, load kept at or below one half, deletion by
    backward shift (no tombstones, so lookups never slow down with churn).
*/
#ifndef ROUTER_MAP_H_INCLUDED
#define ROUTER_MAP_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*  True if item holds key. */
typedef bool (router_map_match_fn) (const void *item, const void *key);

typedef struct {
    uint64_t hash;
    void *item;             /* NULL: free slot */
} router_map_slot_t;

typedef struct {
    router_map_slot_t *slots;
    size_t mask;            /* capacity - 1; capacity is a power of two */
    size_t count;
    router_map_match_fn *match;
} router_map_t;

/*  Returns 0, or -1 when out of memory. */
int  router_map_init (router_map_t *map, router_map_match_fn *match);
void router_map_free (router_map_t *map);

/*  The item holding key, or NULL. */
void *router_map_find (const router_map_t *map, uint64_t hash, const void *key);

/*  Add an item (the caller knows its key is not in the map yet).
    Returns 0, or -1 when out of memory (the map is unchanged). */
int router_map_insert (router_map_t *map, uint64_t hash, void *item);

/*  Remove exactly this item, filed under hash; false if it was not there. */
bool router_map_remove (router_map_t *map, uint64_t hash, const void *item);

/*  Hashes: seeded, so the layout of one process cannot be predicted from
    another's. */
uint64_t router_map_hash_bytes (uint64_t seed, const void *data, size_t len);
uint64_t router_map_hash_u64 (uint64_t seed, uint64_t value);

void router_map_test (bool verbose);

#ifdef __cplusplus
}
#endif

#endif
