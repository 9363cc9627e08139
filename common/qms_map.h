/*  qms_map.h - a small open-addressing hash map for the router.

    The router finds sessions by token hash, by user id and by connection
    key, and pending store requests by request id, on every message: these
    maps make each of those one hash and (almost always) one probe.

    The map stores (hash, item) pairs; it does not own the items or their
    keys.  Keys live inside the items, so a lookup passes the hash and a key
    and the map asks the caller's match function whether an item holds that
    key.  Linear probing, load kept at or below one half, deletion by
    backward shift (no tombstones, so lookups never slow down with churn).
*/
#ifndef QMS_MAP_H_INCLUDED
#define QMS_MAP_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*  True if item holds key. */
typedef bool (qms_map_match_fn) (const void *item, const void *key);

typedef struct {
    uint64_t hash;
    void *item;             /* NULL: free slot */
} qms_map_slot_t;

typedef struct {
    qms_map_slot_t *slots;
    size_t mask;            /* capacity - 1; capacity is a power of two */
    size_t count;
    qms_map_match_fn *match;
} qms_map_t;

/*  Returns 0, or -1 when out of memory. */
int  qms_map_init (qms_map_t *map, qms_map_match_fn *match);
void qms_map_free (qms_map_t *map);

/*  The item holding key, or NULL. */
void *qms_map_find (const qms_map_t *map, uint64_t hash, const void *key);

/*  Add an item (the caller knows its key is not in the map yet).
    Returns 0, or -1 when out of memory (the map is unchanged). */
int qms_map_insert (qms_map_t *map, uint64_t hash, void *item);

/*  Remove exactly this item, filed under hash; false if it was not there. */
bool qms_map_remove (qms_map_t *map, uint64_t hash, const void *item);

/*  Hashes: seeded, so the layout of one process cannot be predicted from
    another's. */
uint64_t qms_map_hash_bytes (uint64_t seed, const void *data, size_t len);
uint64_t qms_map_hash_u64 (uint64_t seed, uint64_t value);

void qms_map_test (bool verbose);

#ifdef __cplusplus
}
#endif

#endif
