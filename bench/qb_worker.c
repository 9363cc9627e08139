/*  =========================================================================
    qb_worker - the worker loop of qmsbench: one epoll loop per thread,
    owning every T-th client

    Starts connections within --max-pending and --connect-rate, follows the
    phases the main thread sets, times out handshakes, reopens windows that
    stalled, runs the senders and dispatches socket events.
    ========================================================================= */

#define _GNU_SOURCE
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "qmsbench.h"

/* ------------------------------------------------------------------------ */
/*  Worker loop */

static void
start_connections (worker_t *w, uint64_t now)
{
    while (w->next_start < w->nmine && w->pending < w->max_pending) {
        if (w->crate > 0) {
            tokens_refill (&w->ctokens, w->crate, &w->clast, now);
            if (w->ctokens < 1.0)
                return;
            w->ctokens -= 1.0;
        }
        client_t *c = &G_cl [(uint64_t) w->next_start * O.threads + (uint64_t) w->id];
        w->next_start++;
        if (c->state != CS_NEW)
            continue;                   /* --resume: one that did not log in */
        client_start (w, c, now);
    }
}

/*  Time-outs of handshakes and, while running, windows that stalled on a
    lost message: after --stall seconds without progress the outstanding
    messages are presumed lost and the window reopens (counted as a stall). */
static void
periodic_scan (worker_t *w, uint64_t now, int ph)
{
    uint64_t hto = (uint64_t) (O.handshake_timeout * 1e9), sto = (uint64_t) (O.stall * 1e9);
    for (uint32_t j = 0; j < w->next_start; j++) {
        client_t *c = &G_cl [(uint64_t) j * O.threads + (uint64_t) w->id];
        if (c->state >= CS_CONNECTING && c->state <= CS_LOGIN && now - c->t_start > hto) {
            char why [64];
            snprintf (why, sizeof why, "timeout in state %s", qb_state_name [c->state]);
            client_die (w, c, why, -2);
            continue;
        }
        if (ph != PH_RUN || c->sender != 1 || !__atomic_load_n (&c->blocked, __ATOMIC_SEQ_CST))
            continue;
        uint64_t acked = __atomic_load_n (&c->acked, __ATOMIC_SEQ_CST);
        if (acked != c->ack_snap) {
            c->ack_snap = acked;
            c->ack_time = now;
        }
        else
        if (now - c->ack_time > sto) {
            uint64_t infl = sender_inflight (c, acked);
            c->reclaim_mark = c->sent;
            c->reclaimed += infl;
            INC (w->st.stalls, 1);
            INC (w->st.reclaimed, infl);
            c->ack_time = now;
            if (__atomic_exchange_n (&c->blocked, 0, __ATOMIC_SEQ_CST))
                ready_push (w, c);
        }
    }
}

/*  --resume: the connection ends (close 1000), the session stays; the
    client starts again from a new TCP connection and sends Authorize. */
static void
client_reset_for_resume (worker_t *w, client_t *c)
{
    P->goodbye (w, c);
    if (c->state == CS_DEAD)
        return;
    if (w->oown == c) {
        w->oown = NULL;
        w->olen = 0;
    }
    if (c->fd >= 0)
        close (c->fd);
    c->fd = -1;
    c->in_len = c->out_len = c->out_off = c->need = 0;
    c->frag_len = 0;
    c->frag_op = 0;
    c->upgraded = false;
    c->resuming = true;
    __atomic_store_n (&c->online, 0, __ATOMIC_RELEASE);
    SET_STATE (c, CS_NEW);
}

static void
on_phase (worker_t *w, int ph, uint64_t now)
{
    if (ph == PH_RESUME) {
        for (uint32_t j = 0; j < w->nmine; j++) {
            client_t *c = &G_cl [(uint64_t) j * O.threads + (uint64_t) w->id];
            if (c->state == CS_ONLINE)
                client_reset_for_resume (w, c);
        }
        w->next_start = 0;
        w->st.first_resume = now;
    }
    if (ph == PH_RUN) {
        w->tlast = now;
        w->tokens = 0;
        for (uint32_t j = 0; j < w->nmine; j++) {
            client_t *c = &G_cl [(uint64_t) j * O.threads + (uint64_t) w->id];
            if (sender_eligible (c))
                sender_activate (w, c, now);
        }
        __atomic_store_n (&w->run_ack, 1, __ATOMIC_RELEASE);
    }
}

static void
close_all (worker_t *w)
{
    for (uint32_t j = 0; j < w->nmine; j++) {
        client_t *c = &G_cl [(uint64_t) j * O.threads + (uint64_t) w->id];
        if (c->state == CS_DEAD || c->fd < 0)
            continue;
        P->goodbye (w, c);
        if (c->state != CS_DEAD)
            client_die (w, c, NULL, -2);
    }
}

void *
worker_main (void *arg)
{
    worker_t *w = arg;
    struct epoll_event evs [QB_MAX_EVENTS];
    uint64_t next_scan = 0;
    for (;;) {
        int ph = phase ();
        uint64_t now = now_ns ();
        if (ph == PH_STOP)
            break;
        if (ph != w->seen_phase) {
            on_phase (w, ph, now);
            w->seen_phase = ph;
        }
        if (ph == PH_CONNECT || ph == PH_RESUME)
            start_connections (w, now);
        /*  Handshake time-outs and window stalls; an idle hold needs neither. */
        if (now >= next_scan && !(O.idle && ph != PH_CONNECT && ph != PH_RESUME)) {
            periodic_scan (w, now, ph);
            next_scan = now + 250 * MS;
        }
        marks_take (w);
        defer_take (w, now);
        lookup_pump (w, now);
        group_pump (w, now);
        int timeout = pump_all (w, now);
        if (timeout < 0 || timeout > 100)
            timeout = 100;
        if (w->lk_nretry) {
            int dt = w->lk_retry_at > now? (int) ((w->lk_retry_at - now + MS - 1) / MS): 0;
            if (dt < timeout)
                timeout = dt;
        }
        if (w->ndefer) {
            int dt = w->defer_next > now? (int) ((w->defer_next - now + MS - 1) / MS): 0;
            if (dt < timeout)
                timeout = dt;
        }
        if ((ph == PH_CONNECT || ph == PH_RESUME) && w->next_start < w->nmine
            && w->pending < w->max_pending && w->crate > 0) {
            int ct = (int) ceil ((1.0 - w->ctokens) / w->crate * 1000.0);
            if (ct < timeout)
                timeout = ct < 1? 1: ct;
        }
        __atomic_store_n (&w->sleeping, 1, __ATOMIC_SEQ_CST);
        if (__atomic_load_n (&w->mark_pending, __ATOMIC_SEQ_CST))
            timeout = 0;
        int n = epoll_wait (w->ep, evs, QB_MAX_EVENTS, timeout);
        __atomic_store_n (&w->sleeping, 0, __ATOMIC_SEQ_CST);
        for (int i = 0; i < n; i++) {
            if (evs [i].data.u64 == UINT64_MAX) {
                uint64_t v;
                if (read (w->efd, &v, sizeof v) < 0) {
                    /*  Spurious wake: nothing to drain. */
                }
                continue;
            }
            client_event (w, &G_cl [evs [i].data.u64], evs [i].events);
        }
        if (w->oown)
            client_flush (w, (client_t *) w->oown);
    }
    close_all (w);
    return NULL;
}
