/*  auth_throttle.c - failed-login counting per key (see auth_throttle.h).

    Each entry keeps the times of its last `limit` failures in a ring, so
    "the oldest counted failure" is exact and an entry never grows.  Entries
    also sit in a list ordered by when they were last touched; as clocks only
    move forward, the head is always the first entry to expire and the one
    to drop when the table is full.
*/
#include "auth_throttle.h"

#include <assert.h>
#include <czmq.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *key;
    void *handle;           /* in self->order */
    uint64_t touched;       /* last begin, end or failure */
    int inflight;           /* attempts begun and not yet ended */
    int count;              /* failures held in stamps, at most limit */
    int head;               /* index of the oldest held failure */
    uint64_t stamps [];     /* ring of failure times */
} entry_t;

struct auth_throttle_t {
    int limit;
    uint64_t window;
    size_t max_entries;
    zhashx_t *entries;      /* key -> entry_t */
    zlistx_t *order;        /* entries, least recently touched first */
};

auth_throttle_t *
auth_throttle_new (int limit, uint64_t window_ms, size_t max_entries)
{
    auth_throttle_t *self = (auth_throttle_t *) calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->limit = limit > 0 ? limit : 0;
    self->window = window_ms;
    self->max_entries = max_entries ? max_entries : 1;
    self->entries = zhashx_new ();
    self->order = zlistx_new ();
    if (!self->entries || !self->order)
        auth_throttle_destroy (&self);
    return self;
}

static void
entry_remove (auth_throttle_t *self, entry_t *entry)
{
    zlistx_delete (self->order, entry->handle);
    zhashx_delete (self->entries, entry->key);
    free (entry->key);
    free (entry);
}

void
auth_throttle_destroy (auth_throttle_t **self_p)
{
    auth_throttle_t *self = *self_p;
    if (!self)
        return;
    if (self->order && self->entries) {
        entry_t *entry;
        while ((entry = (entry_t *) zlistx_first (self->order)))
            entry_remove (self, entry);
    }
    zhashx_destroy (&self->entries);
    zlistx_destroy (&self->order);
    free (self);
    *self_p = NULL;
}

/*  Drop the failures that have left the window. */
static void
entry_prune (auth_throttle_t *self, entry_t *entry, uint64_t now)
{
    while (entry->count && entry->stamps [entry->head] + self->window <= now) {
        entry->head = (entry->head + 1) % self->limit;
        entry->count--;
    }
}

static void
entry_touch (auth_throttle_t *self, entry_t *entry, uint64_t now)
{
    entry->touched = now;
    zlistx_move_end (self->order, entry->handle);
}

/*  Remove entries that have nothing left in the window.  An entry with an
    attempt in flight stops the sweep; attempts last seconds at most. */
static void
sweep (auth_throttle_t *self, uint64_t now)
{
    entry_t *entry;
    while ((entry = (entry_t *) zlistx_first (self->order))
       &&  entry->inflight == 0 && entry->touched + self->window <= now)
        entry_remove (self, entry);
}

static entry_t *
entry_get (auth_throttle_t *self, const char *key, uint64_t now)
{
    entry_t *entry = (entry_t *) zhashx_lookup (self->entries, key);
    if (entry)
        return entry;
    sweep (self, now);
    if (zhashx_size (self->entries) >= self->max_entries) {
        entry_t *oldest = (entry_t *) zlistx_first (self->order);
        if (oldest)
            entry_remove (self, oldest);
    }
    entry = (entry_t *) calloc (1, sizeof *entry + (size_t) self->limit * sizeof (uint64_t));
    if (!entry)
        return NULL;
    entry->key = strdup (key);
    entry->touched = now;
    entry->handle = entry->key ? zlistx_add_end (self->order, entry) : NULL;
    if (!entry->handle || zhashx_insert (self->entries, key, entry) != 0) {
        if (entry->handle)
            zlistx_delete (self->order, entry->handle);
        free (entry->key);
        free (entry);
        return NULL;
    }
    return entry;
}

static bool
disabled (auth_throttle_t *self, const char *key)
{
    return self->limit == 0 || !key || !*key;
}

int
auth_throttle_check (auth_throttle_t *self, const char *key, uint64_t now)
{
    if (disabled (self, key))
        return 0;
    entry_t *entry = (entry_t *) zhashx_lookup (self->entries, key);
    if (!entry)
        return 0;
    entry_prune (self, entry, now);
    if (entry->count + entry->inflight < self->limit)
        return 0;
    if (entry->count < self->limit)
        return 1;           /* blocked by attempts in flight: they end soon */
    uint64_t wait_ms = entry->stamps [entry->head] + self->window - now;
    uint64_t seconds = (wait_ms + 999) / 1000;
    return seconds < 1 ? 1 : seconds > INT32_MAX ? INT32_MAX : (int) seconds;
}

void
auth_throttle_fail (auth_throttle_t *self, const char *key, uint64_t now)
{
    if (disabled (self, key))
        return;
    entry_t *entry = entry_get (self, key, now);
    if (!entry)
        return;
    entry_prune (self, entry, now);
    if (entry->count == self->limit) {
        entry->stamps [entry->head] = now;      /* the ring is full: overwrite the oldest */
        entry->head = (entry->head + 1) % self->limit;
    }
    else {
        entry->stamps [(entry->head + entry->count) % self->limit] = now;
        entry->count++;
    }
    entry_touch (self, entry, now);
}

void
auth_throttle_begin (auth_throttle_t *self, const char *key, uint64_t now)
{
    if (disabled (self, key))
        return;
    entry_t *entry = entry_get (self, key, now);
    if (entry) {
        entry->inflight++;
        entry_touch (self, entry, now);
    }
}

void
auth_throttle_end (auth_throttle_t *self, const char *key, bool failed, uint64_t now)
{
    if (disabled (self, key))
        return;
    /*  The entry may have been dropped to bound the table meanwhile. */
    entry_t *entry = (entry_t *) zhashx_lookup (self->entries, key);
    if (entry && entry->inflight > 0) {
        entry->inflight--;
        entry_touch (self, entry, now);
    }
    if (failed)
        auth_throttle_fail (self, key, now);
}

void
auth_throttle_clear (auth_throttle_t *self, const char *key)
{
    if (disabled (self, key))
        return;
    entry_t *entry = (entry_t *) zhashx_lookup (self->entries, key);
    if (!entry)
        return;
    if (entry->inflight)
        entry->count = 0;   /* other attempts still need their counter */
    else
        entry_remove (self, entry);
}

size_t
auth_throttle_size (auth_throttle_t *self)
{
    return zhashx_size (self->entries);
}

/* ------------------------------------------------------------------------ */

void
auth_throttle_test (bool verbose)
{
    if (verbose)
        printf (" * auth_throttle: ");

    auth_throttle_t *t = auth_throttle_new (3, 10000, 4);
    assert (t);
    assert (auth_throttle_check (t, "alice", 0) == 0);

    /*  Three failures block; the wait runs to when the first leaves. */
    auth_throttle_fail (t, "alice", 1000);
    auth_throttle_fail (t, "alice", 2000);
    assert (auth_throttle_check (t, "alice", 2500) == 0);
    auth_throttle_fail (t, "alice", 3000);
    assert (auth_throttle_check (t, "alice", 3000) == 8);
    assert (auth_throttle_check (t, "alice", 10500) == 1);
    assert (auth_throttle_check (t, "alice", 10999) == 1);
    assert (auth_throttle_check (t, "alice", 11000) == 0);
    assert (auth_throttle_check (t, "bob", 3000) == 0);

    /*  A fourth failure in the window moves the wait on. */
    auth_throttle_fail (t, "alice", 11500);
    assert (auth_throttle_check (t, "alice", 11500) == 1);
    assert (auth_throttle_check (t, "alice", 12000) == 0);

    /*  Success clears; attempts in flight count until they end. */
    auth_throttle_clear (t, "alice");
    assert (auth_throttle_check (t, "alice", 12000) == 0);
    for (int i = 0; i < 3; i++)
        auth_throttle_begin (t, "carol", 12000);
    assert (auth_throttle_check (t, "carol", 12000) == 1);
    auth_throttle_end (t, "carol", false, 12100);
    assert (auth_throttle_check (t, "carol", 12100) == 0);
    auth_throttle_end (t, "carol", true, 12200);
    auth_throttle_end (t, "carol", true, 12300);
    auth_throttle_fail (t, "carol", 12400);
    assert (auth_throttle_check (t, "carol", 12400) == 10);
    /*  Clearing with an attempt in flight keeps the in-flight count. */
    auth_throttle_begin (t, "carol", 12500);
    auth_throttle_clear (t, "carol");
    auth_throttle_begin (t, "carol", 12500);
    auth_throttle_begin (t, "carol", 12500);
    assert (auth_throttle_check (t, "carol", 12500) == 1);
    for (int i = 0; i < 3; i++)
        auth_throttle_end (t, "carol", false, 12600);
    assert (auth_throttle_check (t, "carol", 12600) == 0);

    /*  The table stays bounded; the least recently touched goes first. */
    char key [16];
    for (int i = 0; i < 10; i++) {
        snprintf (key, sizeof key, "k%d", i);
        auth_throttle_fail (t, key, 20000 + (uint64_t) i);
        auth_throttle_fail (t, key, 20000 + (uint64_t) i);
        auth_throttle_fail (t, key, 20000 + (uint64_t) i);
        assert (auth_throttle_size (t) <= 4);
    }
    assert (auth_throttle_check (t, "k9", 20010) == 10);
    assert (auth_throttle_check (t, "k0", 20010) == 0);
    /*  Expired entries are swept when a new key arrives. */
    auth_throttle_fail (t, "late", 40000);
    assert (auth_throttle_size (t) == 1);
    auth_throttle_destroy (&t);
    assert (t == NULL);

    /*  Limit 0 disables; empty keys are never counted. */
    t = auth_throttle_new (0, 1000, 10);
    auth_throttle_fail (t, "x", 1);
    assert (auth_throttle_check (t, "x", 1) == 0);
    assert (auth_throttle_size (t) == 0);
    auth_throttle_destroy (&t);
    t = auth_throttle_new (1, 1000, 10);
    auth_throttle_fail (t, "", 1);
    assert (auth_throttle_check (t, "", 1) == 0);
    auth_throttle_fail (t, "y", 1);
    assert (auth_throttle_check (t, "y", 1) == 1);
    auth_throttle_destroy (&t);

    if (verbose)
        printf ("OK\n");
}
