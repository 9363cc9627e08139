/*  lws_sorted.c - libwebsockets' sorted-list insertion, found from the tail.

    libwebsockets 4.1 keeps every pending timeout (a handshake's 10 s, a
    close's grace, ...) in one list sorted by deadline, and inserts with
    lws_dll2_add_sorted(), which walks from the head to the first later
    entry.  Nearly every new deadline is the latest (the same timeout, set
    later), so each insertion walks the whole list: a storm of 10,000
    handshakes cost O(n^2), a third of the gateway's time in the
    connection-storm attack (docs/ROBUSTNESS.md), and the honest clients'
    p99 rose to 270 ms.

    This file defines the same function, with the same result, walking from
    the tail instead: the list is sorted, so the entries at or after the
    new one's place are a suffix, and its start is found from the end in
    the steps the new deadline is early, usually none.  The library calls
    its own function through the PLT (Debian's libwebsockets.so.17 has a
    JUMP_SLOT relocation for it), so this definition in the executable is
    the one every caller gets.  If a build of the library bound the call
    internally, nothing would change but the speed.  The selftest checks the
    result against the head-first walk on random lists.
*/
#include "gateway.h"

#include <assert.h>
#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>

/*  Calls so far: the gateway checks at start that the library's own calls
    come here (gateway_new logs it). */
unsigned long lws_sorted_calls;

void
lws_dll2_add_sorted (lws_dll2_t *d, lws_dll2_owner_t *own,
                     int (*compare) (const lws_dll2_t *d, const lws_dll2_t *i))
{
    lws_sorted_calls++;
    /*  The first entry p with compare (p, d) >= 0 counting from the head is
        the last one met, walking back from the tail, before one that is
        earlier than d. */
    lws_dll2_t *before = NULL;
    for (lws_dll2_t *p = own->tail; p && compare (p, d) >= 0; p = p->prev)
        before = p;
    if (before)
        lws_dll2_add_before (d, before);
    else
        lws_dll2_add_tail (d, own);
}

/* ------------------------------------------------------------------------ */

typedef struct {
    lws_dll2_t list;
    int key;
    int seq;                    /* insertion order, to check ties */
} t_item_t;

static int
t_compare (const lws_dll2_t *a, const lws_dll2_t *b)
{
    const t_item_t *x = lws_container_of (a, t_item_t, list);
    const t_item_t *y = lws_container_of (b, t_item_t, list);
    return x->key < y->key ? -1 : x->key > y->key;
}

/*  libwebsockets' own walk, from the head, as the reference. */
static void
t_add_from_head (lws_dll2_t *d, lws_dll2_owner_t *own)
{
    for (lws_dll2_t *p = own->head; p; p = p->next)
        if (t_compare (p, d) >= 0) {
            lws_dll2_add_before (d, p);
            return;
        }
    lws_dll2_add_tail (d, own);
}

void
lws_sorted_test (bool verbose)
{
    if (verbose)
        printf (" * lws_sorted: ");
    enum { N = 2000 };
    static t_item_t a [N], b [N];
    srand (7);
    for (int round = 0; round < 20; round++) {
        lws_dll2_owner_t own_a = { 0 }, own_b = { 0 };
        int spread = round % 2 ? 50 : 100000;       /* many ties, or few */
        for (int i = 0; i < N; i++) {
            /*  Mostly later and later, as timeouts are; now and then early. */
            int key = rand () % 10 == 0 ? rand () % spread : i * spread / N + rand () % 3;
            a [i] = (t_item_t) { .key = key, .seq = i };
            b [i] = a [i];
            lws_dll2_add_sorted (&a [i].list, &own_a, t_compare);
            t_add_from_head (&b [i].list, &own_b);
        }
        assert (own_a.count == N && own_b.count == N);
        lws_dll2_t *p = own_a.head, *q = own_b.head;
        int last = -1;
        for (; p && q; p = p->next, q = q->next) {
            const t_item_t *x = lws_container_of (p, t_item_t, list);
            const t_item_t *y = lws_container_of (q, t_item_t, list);
            assert (x->seq == y->seq);              /* the same order, ties too */
            assert (x->key >= last);
            last = x->key;
        }
        assert (!p && !q);
    }
    if (verbose)
        printf ("OK\n");
}
