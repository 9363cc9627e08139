/*  qms_map.c - open-addressing hash map (see qms_map.h). */
#include "qms_map.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIN_CAPACITY 64

int
qms_map_init (qms_map_t *map, qms_map_match_fn *match)
{
    map->slots = calloc (MIN_CAPACITY, sizeof *map->slots);
    map->mask = MIN_CAPACITY - 1;
    map->count = 0;
    map->match = match;
    return map->slots ? 0 : -1;
}

void
qms_map_free (qms_map_t *map)
{
    free (map->slots);
    map->slots = NULL;
    map->mask = 0;
    map->count = 0;
}

void *
qms_map_find (const qms_map_t *map, uint64_t hash, const void *key)
{
    for (size_t i = hash & map->mask; map->slots [i].item; i = (i + 1) & map->mask) {
        if (map->slots [i].hash == hash && map->match (map->slots [i].item, key))
            return map->slots [i].item;
    }
    return NULL;
}

static void
place (qms_map_slot_t *slots, size_t mask, uint64_t hash, void *item)
{
    size_t i = hash & mask;
    while (slots [i].item)
        i = (i + 1) & mask;
    slots [i].hash = hash;
    slots [i].item = item;
}

/*  Double the table; rehashing is cheap because hashes are stored. */
static int
grow (qms_map_t *map)
{
    size_t capacity = (map->mask + 1) * 2;
    qms_map_slot_t *slots = calloc (capacity, sizeof *slots);
    if (!slots)
        return -1;
    for (size_t i = 0; i <= map->mask; i++)
        if (map->slots [i].item)
            place (slots, capacity - 1, map->slots [i].hash, map->slots [i].item);
    free (map->slots);
    map->slots = slots;
    map->mask = capacity - 1;
    return 0;
}

int
qms_map_insert (qms_map_t *map, uint64_t hash, void *item)
{
    /*  Linear probing stays short only while at least half is free. */
    if ((map->count + 1) * 2 > map->mask + 1 && grow (map))
        return -1;
    place (map->slots, map->mask, hash, item);
    map->count++;
    return 0;
}

bool
qms_map_remove (qms_map_t *map, uint64_t hash, const void *item)
{
    size_t mask = map->mask;
    size_t i = hash & mask;
    while (map->slots [i].item && map->slots [i].item != item)
        i = (i + 1) & mask;
    if (!map->slots [i].item)
        return false;

    /*  Backward shift: pull later members of the probe run into the hole
        when their home slot does not lie (cyclically) after the hole. */
    size_t hole = i;
    for (size_t j = (i + 1) & mask; map->slots [j].item; j = (j + 1) & mask) {
        size_t home = map->slots [j].hash & mask;
        bool movable = hole <= j ? (home <= hole || home > j)
                                 : (home <= hole && home > j);
        if (movable) {
            map->slots [hole] = map->slots [j];
            hole = j;
        }
    }
    map->slots [hole].item = NULL;
    map->slots [hole].hash = 0;
    map->count--;
    return true;
}

/*  splitmix64's finaliser: every input bit reaches every output bit. */
static uint64_t
mix (uint64_t h)
{
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    h ^= h >> 31;
    return h;
}

uint64_t
qms_map_hash_bytes (uint64_t seed, const void *data, size_t len)
{
    const uint8_t *p = (const uint8_t *) data;
    uint64_t h = seed ^ (len * 0x9e3779b97f4a7c15ull);
    while (len >= 8) {
        uint64_t chunk;
        memcpy (&chunk, p, 8);
        h = (h ^ mix (chunk)) * 0x9e3779b97f4a7c15ull;
        h ^= h >> 29;
        p += 8;
        len -= 8;
    }
    uint64_t tail = 0;
    for (size_t i = 0; i < len; i++)
        tail |= (uint64_t) p [i] << (8 * i);
    return mix (h ^ mix (tail ^ 0xa0761d6478bd642full));
}

uint64_t
qms_map_hash_u64 (uint64_t seed, uint64_t value)
{
    return mix (value ^ seed);
}

/* ------------------------------------------------------------------------ */

typedef struct {
    uint64_t key;
} test_item_t;

static bool
test_match (const void *item, const void *key)
{
    return ((const test_item_t *) item)->key == *(const uint64_t *) key;
}

void
qms_map_test (bool verbose)
{
    if (verbose)
        printf (" * router_map: ");

    qms_map_t map;
    assert (qms_map_init (&map, test_match) == 0);
    enum { N = 2000 };
    test_item_t *items = calloc (N, sizeof *items);
    assert (items);

    /*  A deliberately bad hash (many equal low bits) makes long probe runs,
        which is what exercises the backward-shift deletion. */
    #define BAD_HASH(k) ((k) % 7 * 1024 + (k) % 3)
    for (uint64_t k = 0; k < N; k++) {
        items [k].key = k;
        assert (qms_map_find (&map, BAD_HASH (k), &k) == NULL);
        assert (qms_map_insert (&map, BAD_HASH (k), &items [k]) == 0);
    }
    assert (map.count == N);
    assert ((map.mask + 1) >= 2 * N);
    for (uint64_t k = 0; k < N; k++)
        assert (qms_map_find (&map, BAD_HASH (k), &k) == &items [k]);

    /*  Remove every other one; the rest must all still be found. */
    for (uint64_t k = 0; k < N; k += 2)
        assert (qms_map_remove (&map, BAD_HASH (k), &items [k]));
    assert (!qms_map_remove (&map, BAD_HASH (0), &items [0]));
    assert (map.count == N / 2);
    for (uint64_t k = 0; k < N; k++)
        assert (qms_map_find (&map, BAD_HASH (k), &k) == (k % 2 ? &items [k] : NULL));
    for (uint64_t k = 1; k < N; k += 2)
        assert (qms_map_remove (&map, BAD_HASH (k), &items [k]));
    assert (map.count == 0);
    for (size_t i = 0; i <= map.mask; i++)
        assert (map.slots [i].item == NULL);

    /*  Wrap-around runs at the end of the table, with the real hash. */
    uint64_t seed = 12345;
    for (uint64_t k = 0; k < 40; k++) {
        uint64_t h = (map.mask - 2) + (k % 5) * (map.mask + 1);
        assert (qms_map_insert (&map, h, &items [k]) == 0);
    }
    for (uint64_t k = 0; k < 40; k += 3) {
        uint64_t h = (map.mask - 2) + (k % 5) * (map.mask + 1);
        assert (qms_map_remove (&map, h, &items [k]));
    }
    for (uint64_t k = 0; k < 40; k++) {
        uint64_t h = (map.mask - 2) + (k % 5) * (map.mask + 1);
        assert (qms_map_find (&map, h, &k) == (k % 3 ? &items [k] : NULL));
    }

    /*  Hashes: deterministic per seed, sensitive to every byte and length. */
    const char *a = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    assert (qms_map_hash_bytes (seed, a, 64) == qms_map_hash_bytes (seed, a, 64));
    assert (qms_map_hash_bytes (seed, a, 64) != qms_map_hash_bytes (seed + 1, a, 64));
    assert (qms_map_hash_bytes (seed, a, 63) != qms_map_hash_bytes (seed, a, 64));
    assert (qms_map_hash_bytes (seed, "", 0) != qms_map_hash_bytes (seed, "\0", 1));
    char b [65];
    memcpy (b, a, 65);
    b [63] = 'e';
    assert (qms_map_hash_bytes (seed, a, 64) != qms_map_hash_bytes (seed, b, 64));
    assert (qms_map_hash_u64 (seed, 1) != qms_map_hash_u64 (seed, 2));

    qms_map_free (&map);
    free (items);
    if (verbose)
        printf ("OK\n");
}
