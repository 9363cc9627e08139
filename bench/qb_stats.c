/*  =========================================================================
    qb_stats - the figures of a qmsbench run: histograms, count tables, the
    totals over all threads, and the report (a table and one RESULT line)

    Every worker counts into its own stats_t; once the workers are joined,
    merge_totals adds them up and report prints them.
    ========================================================================= */

#define _GNU_SOURCE
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <cJSON.h>

#include "qmsbench.h"

/* ------------------------------------------------------------------------ */
/*  Histograms and count tables */

static double
hist_bucket_mid (unsigned i)
{
    if (i < H_SUB)
        return (double) i;
    unsigned e = i / H_SUB + 5, sub = i % H_SUB;
    double low = (double) ((uint64_t) (H_SUB + sub) << (e - 6));
    return low + (double) (1ull << (e - 6)) / 2.0;
}

static void
hist_merge (hist_t *dst, const hist_t *src)
{
    for (unsigned i = 0; i < H_BUCKETS; i++)
        dst->b [i] += src->b [i];
    dst->count += src->count;
    dst->sum += src->sum;
    if (src->max > dst->max)
        dst->max = src->max;
}

/*  Value (ns) at quantile q; the exact max for q >= 1. */
static double
hist_quantile (const hist_t *h, double q)
{
    if (!h->count)
        return 0;
    if (q >= 1.0)
        return (double) h->max;
    uint64_t rank = (uint64_t) ceil (q * (double) h->count);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < H_BUCKETS; i++) {
        seen += h->b [i];
        if (seen >= rank) {
            double v = hist_bucket_mid (i);
            return v > (double) h->max? (double) h->max: v;
        }
    }
    return (double) h->max;
}

void
errtab_add (errtab_t *t, const char *s, size_t n, uint64_t k)
{
    if (n > sizeof t->e [0].text - 1)
        n = sizeof t->e [0].text - 1;
    for (int i = 0; i < QB_ERRTAB; i++) {
        errent_t *e = &t->e [i];
        if (!e->count) {
            memcpy (e->text, s, n);
            e->text [n] = 0;
            e->count = k;
            return;
        }
        if (strlen (e->text) == n && memcmp (e->text, s, n) == 0) {
            e->count += k;
            return;
        }
    }
    t->other += k;
}

static void
errtab_merge (errtab_t *dst, const errtab_t *src)
{
    for (int i = 0; i < QB_ERRTAB && src->e [i].count; i++)
        errtab_add (dst, src->e [i].text, strlen (src->e [i].text), src->e [i].count);
    dst->other += src->other;
}

static int
errent_cmp (const void *a, const void *b)
{
    const errent_t *x = a, *y = b;
    return x->count < y->count? 1: x->count > y->count? -1: 0;
}

static void
errtab_sort (errtab_t *t)
{
    int n = 0;
    while (n < QB_ERRTAB && t->e [n].count)
        n++;
    qsort (t->e, (size_t) n, sizeof t->e [0], errent_cmp);
}

static uint64_t
errtab_total (const errtab_t *t)
{
    uint64_t s = t->other;
    for (int i = 0; i < QB_ERRTAB && t->e [i].count; i++)
        s += t->e [i].count;
    return s;
}

void
closetab_add (closetab_t *t, int code, uint64_t k)
{
    for (int i = 0; i < QB_CLOSETAB; i++) {
        if (t->count [i] && t->code [i] == code) {
            t->count [i] += k;
            return;
        }
        if (!t->count [i]) {
            t->code [i] = code;
            t->count [i] = k;
            return;
        }
    }
    t->other += k;
}

/* ------------------------------------------------------------------------ */
/*  Totals and the report */

static const char *s_presence_name [] = { "full", "delta", "none" };

void
merge_totals (totals_t *T)
{
    memset (T, 0, sizeof *T);
    stats_t *s = &T->s;
    for (uint32_t t = 0; t < O.threads; t++) {
        stats_t *x = &G_w [t].st;
        s->conn_ok += x->conn_ok; s->conn_fail += x->conn_fail;
        s->login_ok += x->login_ok; s->login_fail += x->login_fail;
        s->registered += x->registered; s->existing += x->existing;
        s->sent += x->sent; s->delivered += x->delivered; s->dup += x->dup; s->late += x->late;
        s->ooo += x->ooo; s->misrouted += x->misrouted; s->foreign += x->foreign;
        s->sender_mismatch += x->sender_mismatch; s->stalls += x->stalls; s->reclaimed += x->reclaimed;
        s->rejected += x->rejected; s->login_retries += x->login_retries;
        s->userlists_skipped += x->userlists_skipped;
        s->bytes_in += x->bytes_in; s->bytes_out += x->bytes_out; s->pings += x->pings;
        s->srv_errors += x->srv_errors; s->invalid_user += x->invalid_user;
        s->ack_stored += x->ack_stored; s->ack_delivered += x->ack_delivered;
        s->ack_received += x->ack_received; s->ack_rejected += x->ack_rejected;
        s->ack_unknown += x->ack_unknown; s->lookups += x->lookups;
        s->lookup_names += x->lookup_names; s->lookup_retries += x->lookup_retries;
        s->stored_rx += x->stored_rx; s->resume_ok += x->resume_ok; s->resume_fail += x->resume_fail;
        if (x->first_resume && (!s->first_resume || x->first_resume < s->first_resume))
            s->first_resume = x->first_resume;
        if (x->last_resume > s->last_resume)
            s->last_resume = x->last_resume;
        if (x->first_rx && (!s->first_rx || x->first_rx < s->first_rx))
            s->first_rx = x->first_rx;
        hist_merge (&s->resume, &x->resume);
        hist_merge (&s->drain, &x->drain);
        if (x->first_start && (!s->first_start || x->first_start < s->first_start))
            s->first_start = x->first_start;
        if (x->last_online > s->last_online)
            s->last_online = x->last_online;
        if (x->last_delivery > s->last_delivery)
            s->last_delivery = x->last_delivery;
        if (x->last_send > s->last_send)
            s->last_send = x->last_send;
        hist_merge (&s->lat, &x->lat);
        hist_merge (&s->login, &x->login);
        errtab_merge (&s->srv_err, &x->srv_err);
        errtab_merge (&s->conn_err, &x->conn_err);
        for (int i = 0; i < QB_CLOSETAB && x->closes.count [i]; i++)
            closetab_add (&s->closes, x->closes.code [i], x->closes.count [i]);
        s->closes.other += x->closes.other;
    }
    errtab_sort (&s->srv_err);
    errtab_sort (&s->conn_err);
    /*  Loss per sender: what it sent minus what its receiver got (new or late). */
    T->per_sender_min = UINT64_MAX;
    for (uint32_t i = 0; i < O.clients; i++) {
        client_t *c = &G_cl [i];
        if (!c->sent)
            continue;
        client_t *r = &G_cl [c->tgt];
        /*  --to-prefix: the receivers are elsewhere; the acks tell.
            --group-size: deliveries, N-1 expected per message sent. */
        uint64_t got = O.group? c->delivered: O.to_prefix [0]? c->acks: r->rx_unique + r->rx_late;
        uint64_t want = O.group? c->sent * (O.group - 1): c->sent;
        T->lost += want > got? want - got: 0;
        T->expected += want;
        T->senders++;
        if (got < T->per_sender_min) T->per_sender_min = got;
        if (got > T->per_sender_max) T->per_sender_max = got;
    }
    if (!T->senders)
        T->per_sender_min = 0;
}

static double ms (double ns) { return ns / 1e6; }

static cJSON *
errtab_json (const errtab_t *t, int top)
{
    cJSON *a = cJSON_CreateArray ();
    for (int i = 0; i < top && i < QB_ERRTAB && t->e [i].count; i++) {
        cJSON *o = cJSON_CreateObject ();
        cJSON_AddStringToObject (o, "text", t->e [i].text);
        cJSON_AddNumberToObject (o, "count", (double) t->e [i].count);
        cJSON_AddItemToArray (a, o);
    }
    uint64_t rest = errtab_total (t);
    for (int i = 0; i < top && i < QB_ERRTAB && t->e [i].count; i++)
        rest -= t->e [i].count;
    if (rest) {
        cJSON *o = cJSON_CreateObject ();
        cJSON_AddStringToObject (o, "text", "(others)");
        cJSON_AddNumberToObject (o, "count", (double) rest);
        cJSON_AddItemToArray (a, o);
    }
    return a;
}

static void
print_errtab (const char *label, const errtab_t *t)
{
    if (!errtab_total (t)) {
        printf ("%-14s none\n", label);
        return;
    }
    bool first = true;
    for (int i = 0; i < 5 && i < QB_ERRTAB && t->e [i].count; i++) {
        printf ("%-14s %10" PRIu64 "  %s\n", first? label: "", t->e [i].count, t->e [i].text);
        first = false;
    }
    uint64_t rest = errtab_total (t);
    for (int i = 0; i < 5 && i < QB_ERRTAB && t->e [i].count; i++)
        rest -= t->e [i].count;
    if (rest)
        printf ("%-14s %10" PRIu64 "  (others)\n", "", rest);
}

void
report (const timeline_t *tl, const totals_t *T)
{
    const stats_t *s = &T->s;
    const char *mode = O.expect? "expect-stored": O.resume? "resume": O.idle? "idle": O.messages? "messages": "duration";
    /*  --resume: reconnect + Authorize, from the first reconnect to the last answer. */
    double resume_s = s->last_resume > s->first_resume && s->first_resume? (double) (s->last_resume - s->first_resume) / 1e9: 0;
    double r50 = ms (hist_quantile (&s->resume, 0.5)), r99 = ms (hist_quantile (&s->resume, 0.99)),
           rmax = ms ((double) s->resume.max);
    /*  --expect-stored: from the first login attempt to the last message. */
    double drain_s = s->last_delivery > s->first_start && O.expect? (double) (s->last_delivery - s->first_start) / 1e9: 0;
    double rx_s = s->last_delivery > s->first_rx && s->first_rx? (double) (s->last_delivery - s->first_rx) / 1e9: 0;
    double d50 = ms (hist_quantile (&s->drain, 0.5)), d99 = ms (hist_quantile (&s->drain, 0.99)),
           dmax = ms ((double) s->drain.max);
    double total_s = (double) (tl->t_end - tl->t0) / 1e9;
    double login_s = s->last_online > s->first_start? (double) (s->last_online - s->first_start) / 1e9: 0;
    uint64_t t_last = s->last_delivery > tl->t_run? s->last_delivery: tl->t_send_end;
    double interval = tl->ran && !O.idle && t_last > tl->t_run? (double) (t_last - tl->t_run) / 1e9: 0;
    uint64_t t_send = s->last_send > tl->t_run? s->last_send: tl->t_send_end;
    double send_s = tl->ran && t_send > tl->t_run? (double) (t_send - tl->t_run) / 1e9: 0;
    /*  Rates over less than a millisecond mean nothing (e.g. one burst). */
    double rate = interval >= 1e-3? (double) s->delivered / interval: 0;
    double srate = send_s >= 1e-3? (double) s->sent / send_s: 0;
    const hist_t *h = &s->lat;
    double p50 = ms (hist_quantile (h, 0.50)), p90 = ms (hist_quantile (h, 0.90)),
           p99 = ms (hist_quantile (h, 0.99)), p999 = ms (hist_quantile (h, 0.999)),
           pmax = ms ((double) h->max), mean = h->count? ms ((double) h->sum / (double) h->count): 0;
    const hist_t *lh = &s->login;
    double l50 = ms (hist_quantile (lh, 0.5)), l99 = ms (hist_quantile (lh, 0.99)), lmax = ms ((double) lh->max);
    double run_s = tl->ran? (double) (tl->t_end - tl->t_run) / 1e9: 0;
    bool rss_ok = tl->p_end.ok;
    uint64_t conns = tl->held;
    double per_conn = rss_ok && conns? (double) tl->p_end.rss / (double) conns: 0;
    double delta_conn = rss_ok && tl->p_start.ok && conns? ((double) tl->p_end.rss - (double) tl->p_start.rss) / (double) conns: 0;
    double srv_cpu = rss_ok && tl->p_run.ok && tl->ran? tl->p_end.cpu - tl->p_run.cpu: 0;
    double my_cpu = tl->ran? tl->cpu_end - tl->cpu_run: 0;
    /*  The connect/login phase, up to the start of the run (or the end). */
    double conn_s = (double) ((tl->ran? tl->t_run: tl->t_end) - tl->t0) / 1e9;
    double my_conn_cpu = (tl->ran? tl->cpu_run: tl->cpu_end) - tl->cpu_start;
    const procs_t *pe = tl->ran? &tl->p_run: &tl->p_end;
    double srv_conn_cpu = pe->ok && tl->p_start.ok? pe->cpu - tl->p_start.cpu: 0;

    if (!O.json_only) {
        char rate_s [32];
        if (O.rate > 0)
            snprintf (rate_s, sizeof rate_s, "%.0f msg/s", O.rate);
        else
            snprintf (rate_s, sizeof rate_s, "unlimited");
        printf ("\nqmsbench %s  ws://%s%s%s:%d%s  %u clients, %u thread%s, mode %s",
                QB_VERSION, O.family == AF_INET6? "[": "", O.host, O.family == AF_INET6? "]": "",
                O.port, O.path, O.clients, O.threads, O.threads > 1? "s": "", mode);
        if (O.messages)
            printf (" (%" PRIu64 " per client)", O.messages);
        else
            printf (" (%.1f s)", O.duration);
        if (!O.idle)
            printf (", window %u, rate %s, size %u B", O.window, rate_s, O.size);
        printf ("\n");
        printf ("%-14s ok %" PRIu64 "  failed %" PRIu64 "  not started %u  held at end %u\n", "connections",
                s->conn_ok, s->conn_fail, tl->ready_at_run.not_started, tl->held);
        printf ("%-14s ok %" PRIu64 " (registered %" PRIu64 ", existing %" PRIu64 ")  failed %" PRIu64
                "  in %.3f s = %.1f logins/s  latency p50 %.1f p99 %.1f max %.1f ms\n", "logins",
                s->login_ok, s->registered, s->existing, s->login_fail, login_s,
                login_s > 0? (double) s->login_ok / login_s: 0, l50, l99, lmax);
        if (s->login_retries)
            printf ("%-14s %" PRIu64 " login retries after \"try again\" answers (see server errors)\n", "", s->login_retries);
        printf ("%-14s %u of %u%s\n", "ready", tl->ready_at_run.ready, O.clients,
                tl->ran? "": "  (did not start)");
        if (O.group)
            printf ("%-14s %u of %u members, %u sending in each; delivered and lost below count deliveries"
                    " (%u expected per message sent: %" PRIu64 ")\n", "groups",
                    O.clients / O.group, O.group, O.group_senders, O.group - 1, T->expected);
        if (!O.idle) {
            printf ("%-14s sent %" PRIu64 "  delivered %" PRIu64 "  lost %" PRIu64 "  duplicated %" PRIu64
                    "  late %" PRIu64 "  out-of-order %" PRIu64 "\n", "messages",
                    s->sent, s->delivered, T->lost, s->dup, s->late, s->ooo);
            printf ("%-14s of the lost: rejected by the server (error reply) %" PRIu64 ", silently dropped %" PRIu64 "%s\n", "",
                    s->rejected, T->lost > s->rejected? T->lost - s->rejected: 0,
                    tl->timed_out || tl->interrupted? " (no drain: includes messages still in flight)": "");
            printf ("%-14s misrouted %" PRIu64 "  foreign %" PRIu64 "  sender-id mismatch %" PRIu64
                    "  window stalls %" PRIu64 " (%" PRIu64 " presumed lost)\n", "",
                    s->misrouted, s->foreign, s->sender_mismatch, s->stalls, s->reclaimed);
            printf ("%-14s per sender delivered min %" PRIu64 " max %" PRIu64 " over %" PRIu64 " senders\n", "",
                    T->per_sender_min, T->per_sender_max, T->senders);
            printf ("%-14s %.0f msg/s delivered over %.3f s  (sent %.0f msg/s over %.3f s)\n", "throughput",
                    rate, interval, srate, send_s);
            printf ("%-14s p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f  mean %.3f\n", "latency ms",
                    p50, p90, p99, p999, pmax, mean);
        }
        if (s->lookups)
            printf ("%-14s %" PRIu64 " UserLookupRequests for %" PRIu64 " names (%" PRIu64 " asked again: not registered yet)\n",
                    "lookups", s->lookups, s->lookup_names, s->lookup_retries);
        if (O.ids)
            printf ("%-14s stored %" PRIu64 "  delivered %" PRIu64 "  received %" PRIu64 "  rejected %" PRIu64 "%s\n",
                    "acks", s->ack_stored, s->ack_delivered, s->ack_received, s->ack_rejected,
                    O.to_prefix [0]? "  (latency above: send -> ack)": "");
        if (O.resume)
            printf ("%-14s %" PRIu64 " of %u sessions resumed, %" PRIu64 " failed, in %.3f s = %.1f authorizations/s"
                    "  latency p50 %.1f p99 %.1f max %.1f ms (reconnect + Authorize)\n", "resume",
                    s->resume_ok, tl->resume_from, s->resume_fail, resume_s,
                    resume_s > 0? (double) s->resume_ok / resume_s: 0, r50, r99, rmax);
        if (O.expect)
            printf ("%-14s %" PRIu64 " of %" PRIu64 " expected messages (%" PRIu64 " marked stored) in %.3f s from the"
                    " first connect, %.0f msg/s while arriving;\n%-14s per client after its login answer: p50 %.1f p99 %.1f"
                    " max %.1f ms (%" PRIu64 " clients complete)\n", "stored drain",
                    s->delivered, O.expect * O.clients, s->stored_rx, drain_s,
                    rx_s > 0? (double) s->delivered / rx_s: 0, "", d50, d99, dmax, s->drain.count);
        if (O.npids) {
            if (rss_ok)
                printf ("%-14s %ld KiB total at end (%ld at start), %.1f KiB per connection (%.1f KiB growth per connection)\n",
                        "server RSS", tl->p_end.rss, tl->p_start.rss, per_conn, delta_conn);
            else
                printf ("%-14s could not read /proc for every --pid (server gone?)\n", "server RSS");
            if (rss_ok && run_s > 0)
                printf ("%-14s %.2f s over %.2f s (%.0f%% of one core)\n", "server CPU", srv_cpu, run_s, 100.0 * srv_cpu / run_s);
        }
        if (run_s > 0)
            printf ("%-14s %.2f s over %.2f s (%.0f%% of one core)\n", "bench CPU", my_cpu, run_s, 100.0 * my_cpu / run_s);
        if (conn_s > 0) {
            printf ("%-14s %.2f s: bench CPU %.2f s (%.0f%%)", "connect phase", conn_s, my_conn_cpu, 100.0 * my_conn_cpu / conn_s);
            if (O.npids && rss_ok)
                printf (", server CPU %.2f s (%.0f%%)", srv_conn_cpu, 100.0 * srv_conn_cpu / conn_s);
            printf ("\n");
        }
        print_errtab ("server errors", &s->srv_err);
        if (s->invalid_user)
            printf ("%-14s the server said %" PRIu64 " times that a sender's session is not valid (event 3):\n"
                    "%-14s those senders stopped, as the original client logs out\n", "hint", s->invalid_user, "");
        if (s->rejected > s->invalid_user)
            printf ("%-14s the server rejected %" PRIu64 " messages (see server errors); if it is a rate limit,\n"
                    "%-14s these figures measure it: raise it on the server, or send at most that with --rate\n",
                    "hint", s->rejected - s->invalid_user, "");
        print_errtab ("conn failures", &s->conn_err);
        if (s->closes.count [0]) {
            printf ("%-14s", "closes");
            for (int i = 0; i < QB_CLOSETAB && s->closes.count [i]; i++) {
                int c = s->closes.code [i];
                if (c > 0) printf (" code %d x%" PRIu64, c, s->closes.count [i]);
                else printf (" %s x%" PRIu64, c == 0? "eof": "reset/error", s->closes.count [i]);
            }
            printf ("\n");
        }
        else
            printf ("%-14s none\n", "closes");
        printf ("%-14s %.3f s%s%s  (bytes in %" PRIu64 ", out %" PRIu64 ")\n", "duration", total_s,
                tl->timed_out? "  TIMED OUT (--timeout)": "", tl->interrupted? "  INTERRUPTED": "",
                s->bytes_in, s->bytes_out);
    }

    cJSON *j = cJSON_CreateObject ();
    cJSON_AddStringToObject (j, "tool", "qmsbench");
    cJSON_AddStringToObject (j, "version", QB_VERSION);
    cJSON_AddStringToObject (j, "proto", O.proto);
    cJSON_AddStringToObject (j, "mode", mode);
    cJSON *cfg = cJSON_AddObjectToObject (j, "config");
    cJSON_AddStringToObject (cfg, "host", O.host);
    cJSON_AddNumberToObject (cfg, "port", O.port);
    cJSON_AddStringToObject (cfg, "path", O.path);
    cJSON_AddNumberToObject (cfg, "clients", O.clients);
    cJSON_AddNumberToObject (cfg, "threads", O.threads);
    cJSON_AddNumberToObject (cfg, "messages_per_client", (double) O.messages);
    cJSON_AddNumberToObject (cfg, "duration_s", O.duration);
    cJSON_AddNumberToObject (cfg, "window", O.window);
    cJSON_AddNumberToObject (cfg, "rate", O.rate);
    cJSON_AddNumberToObject (cfg, "size", O.size);
    cJSON_AddNumberToObject (cfg, "source_addrs", O.nsrc);
    cJSON *cn = cJSON_AddObjectToObject (j, "connections");
    cJSON_AddNumberToObject (cn, "ok", (double) s->conn_ok);
    cJSON_AddNumberToObject (cn, "failed", (double) s->conn_fail);
    cJSON_AddNumberToObject (cn, "not_started", tl->ready_at_run.not_started);
    cJSON_AddNumberToObject (cn, "held_at_end", tl->held);
    cJSON *lg = cJSON_AddObjectToObject (j, "login");
    cJSON_AddNumberToObject (lg, "ok", (double) s->login_ok);
    cJSON_AddNumberToObject (lg, "failed", (double) s->login_fail);
    cJSON_AddNumberToObject (lg, "registered", (double) s->registered);
    cJSON_AddNumberToObject (lg, "existing", (double) s->existing);
    cJSON_AddNumberToObject (lg, "retries", (double) s->login_retries);
    cJSON_AddNumberToObject (lg, "seconds", login_s);
    cJSON_AddNumberToObject (lg, "per_s", login_s > 0? (double) s->login_ok / login_s: 0);
    cJSON_AddNumberToObject (lg, "latency_p50_ms", l50);
    cJSON_AddNumberToObject (lg, "latency_p99_ms", l99);
    cJSON_AddNumberToObject (lg, "latency_max_ms", lmax);
    cJSON *rd = cJSON_AddObjectToObject (j, "ready");
    cJSON_AddNumberToObject (rd, "ready", tl->ready_at_run.ready);
    cJSON_AddNumberToObject (rd, "missing", O.clients - tl->ready_at_run.ready);
    cJSON_AddBoolToObject (rd, "started", tl->ran);
    if (!O.idle) {
        cJSON *m = cJSON_AddObjectToObject (j, "messages");
        cJSON_AddNumberToObject (m, "sent", (double) s->sent);
        cJSON_AddNumberToObject (m, "delivered", (double) s->delivered);
        /*  --group-size: delivered and lost count deliveries (a message
            sent is expected at the N-1 other members), sent counts messages. */
        cJSON_AddNumberToObject (m, "expected", (double) T->expected);
        cJSON_AddNumberToObject (m, "lost", (double) T->lost);
        cJSON_AddNumberToObject (m, "rejected", (double) s->rejected);
        cJSON_AddNumberToObject (m, "silently_lost", (double) (T->lost > s->rejected? T->lost - s->rejected: 0));
        cJSON_AddBoolToObject (m, "drained", !(tl->timed_out || tl->interrupted));
        cJSON_AddNumberToObject (m, "duplicated", (double) s->dup);
        cJSON_AddNumberToObject (m, "late", (double) s->late);
        cJSON_AddNumberToObject (m, "out_of_order", (double) s->ooo);
        cJSON_AddNumberToObject (m, "misrouted", (double) s->misrouted);
        cJSON_AddNumberToObject (m, "foreign", (double) s->foreign);
        cJSON_AddNumberToObject (m, "sender_mismatch", (double) s->sender_mismatch);
        cJSON_AddNumberToObject (m, "window_stalls", (double) s->stalls);
        cJSON_AddNumberToObject (m, "presumed_lost_on_stall", (double) s->reclaimed);
        cJSON_AddNumberToObject (m, "senders", (double) T->senders);
        cJSON_AddNumberToObject (m, "per_sender_delivered_min", (double) T->per_sender_min);
        cJSON_AddNumberToObject (m, "per_sender_delivered_max", (double) T->per_sender_max);
        cJSON *tp = cJSON_AddObjectToObject (j, "throughput");
        cJSON_AddNumberToObject (tp, "interval_s", interval);
        cJSON_AddNumberToObject (tp, "delivered_per_s", rate);
        cJSON_AddNumberToObject (tp, "send_interval_s", send_s);
        cJSON_AddNumberToObject (tp, "sent_per_s", srate);
        cJSON *lt = cJSON_AddObjectToObject (j, "latency_ms");
        cJSON_AddNumberToObject (lt, "p50", p50);
        cJSON_AddNumberToObject (lt, "p90", p90);
        cJSON_AddNumberToObject (lt, "p99", p99);
        cJSON_AddNumberToObject (lt, "p999", p999);
        cJSON_AddNumberToObject (lt, "max", pmax);
        cJSON_AddNumberToObject (lt, "mean", mean);
        cJSON_AddNumberToObject (lt, "count", (double) h->count);
        /*  The histogram itself, so that the runs of several processes
            merge into exact percentiles: [value ns, count] per non-empty
            bucket, the value being what the percentiles above report for
            it (capped at max_ns). */
        cJSON *hj = cJSON_AddObjectToObject (j, "latency_hist");
        cJSON_AddNumberToObject (hj, "max_ns", (double) h->max);
        cJSON_AddNumberToObject (hj, "sum_ns", (double) h->sum);
        cJSON *hb = cJSON_AddArrayToObject (hj, "buckets");
        for (unsigned i = 0; i < H_BUCKETS; i++)
            if (h->b [i]) {
                cJSON *e = cJSON_CreateArray ();
                cJSON_AddItemToArray (e, cJSON_CreateNumber (hist_bucket_mid (i)));
                cJSON_AddItemToArray (e, cJSON_CreateNumber ((double) h->b [i]));
                cJSON_AddItemToArray (hb, e);
            }
    }
    if (O.go_file [0] || O.ready_file [0]) {
        cJSON *sy = cJSON_AddObjectToObject (j, "sync");
        cJSON_AddNumberToObject (sy, "go_wait_s", tl->go_wait_s);
        cJSON_AddNumberToObject (sy, "held_after_run_s", tl->close_wait_s);
    }
    cJSON_AddStringToObject (cfg, "presence", g_nats? "n/a": s_presence_name [O.presence]);
    if (O.nports > 1) {
        cJSON *pa = cJSON_AddArrayToObject (cfg, "ports");
        for (int i = 0; i < O.nports; i++)
            cJSON_AddItemToArray (pa, cJSON_CreateNumber (O.ports [i]));
    }
    if (O.to_prefix [0])
        cJSON_AddStringToObject (cfg, "to_prefix", O.to_prefix);
    if (O.group) {
        cJSON_AddNumberToObject (cfg, "group_size", O.group);
        cJSON_AddNumberToObject (cfg, "groups", O.clients / O.group);
        cJSON_AddNumberToObject (cfg, "group_senders", O.group_senders);
    }
    cJSON_AddBoolToObject (cfg, "ids", O.ids);
    if (s->lookups) {
        cJSON *lk = cJSON_AddObjectToObject (j, "lookups");
        cJSON_AddNumberToObject (lk, "requests", (double) s->lookups);
        cJSON_AddNumberToObject (lk, "names", (double) s->lookup_names);
        cJSON_AddNumberToObject (lk, "retries", (double) s->lookup_retries);
    }
    if (O.ids) {
        cJSON *ak = cJSON_AddObjectToObject (j, "acks");
        cJSON_AddNumberToObject (ak, "stored", (double) s->ack_stored);
        cJSON_AddNumberToObject (ak, "delivered", (double) s->ack_delivered);
        cJSON_AddNumberToObject (ak, "received", (double) s->ack_received);
        cJSON_AddNumberToObject (ak, "rejected", (double) s->ack_rejected);
        cJSON_AddBoolToObject (ak, "latency_is_send_to_ack", O.to_prefix [0] != 0);
    }
    if (O.resume) {
        cJSON *rs = cJSON_AddObjectToObject (j, "resume");
        cJSON_AddNumberToObject (rs, "sessions", tl->resume_from);
        cJSON_AddNumberToObject (rs, "ok", (double) s->resume_ok);
        cJSON_AddNumberToObject (rs, "failed", (double) s->resume_fail);
        cJSON_AddNumberToObject (rs, "seconds", resume_s);
        cJSON_AddNumberToObject (rs, "per_s", resume_s > 0? (double) s->resume_ok / resume_s: 0);
        cJSON_AddNumberToObject (rs, "latency_p50_ms", r50);
        cJSON_AddNumberToObject (rs, "latency_p99_ms", r99);
        cJSON_AddNumberToObject (rs, "latency_max_ms", rmax);
    }
    if (O.expect) {
        cJSON *ex = cJSON_AddObjectToObject (j, "stored_drain");
        cJSON_AddNumberToObject (ex, "expected", (double) (O.expect * O.clients));
        cJSON_AddNumberToObject (ex, "received", (double) s->delivered);
        cJSON_AddNumberToObject (ex, "marked_stored", (double) s->stored_rx);
        cJSON_AddNumberToObject (ex, "seconds_from_first_connect", drain_s);
        cJSON_AddNumberToObject (ex, "per_s_while_arriving", rx_s > 0? (double) s->delivered / rx_s: 0);
        cJSON_AddNumberToObject (ex, "clients_complete", (double) s->drain.count);
        cJSON_AddNumberToObject (ex, "per_client_p50_ms", d50);
        cJSON_AddNumberToObject (ex, "per_client_p99_ms", d99);
        cJSON_AddNumberToObject (ex, "per_client_max_ms", dmax);
    }
    if (O.npids) {
        cJSON *sv = cJSON_AddObjectToObject (j, "server");
        cJSON *pa = cJSON_AddArrayToObject (sv, "pids");
        for (int i = 0; i < O.npids; i++)
            cJSON_AddItemToArray (pa, cJSON_CreateNumber (O.pids [i]));
        cJSON_AddBoolToObject (sv, "sampled", rss_ok);
        cJSON_AddNumberToObject (sv, "rss_kib", rss_ok? (double) tl->p_end.rss: 0);
        cJSON_AddNumberToObject (sv, "rss_start_kib", tl->p_start.ok? (double) tl->p_start.rss: 0);
        cJSON_AddNumberToObject (sv, "rss_per_connection_kib", per_conn);
        cJSON_AddNumberToObject (sv, "rss_growth_per_connection_kib", delta_conn);
        cJSON_AddNumberToObject (sv, "cpu_s", srv_cpu);
        cJSON_AddNumberToObject (sv, "connect_phase_cpu_s", srv_conn_cpu);
    }
    cJSON *bc = cJSON_AddObjectToObject (j, "bench");
    cJSON_AddNumberToObject (bc, "cpu_s", my_cpu);
    cJSON_AddNumberToObject (bc, "run_s", run_s);
    cJSON_AddNumberToObject (bc, "connect_phase_s", conn_s);
    cJSON_AddNumberToObject (bc, "connect_phase_cpu_s", my_conn_cpu);
    cJSON_AddNumberToObject (bc, "bytes_in", (double) s->bytes_in);
    cJSON_AddNumberToObject (bc, "bytes_out", (double) s->bytes_out);
    cJSON_AddNumberToObject (bc, "userlists_skipped", (double) s->userlists_skipped);
    if (O.presence == PRES_FULL && !g_nats) {
        /*  Whether every client's last list names everyone (all threads are done). */
        uint32_t complete = 0, least = UINT32_MAX;
        for (uint32_t i = 0; i < O.clients; i++) {
            uint32_t got = G_cl [i].last_list;
            complete += got == O.clients;
            if (got < least)
                least = got;
        }
        cJSON *ls = cJSON_AddObjectToObject (j, "user_lists");
        cJSON_AddNumberToObject (ls, "clients_with_complete_last_list", complete);
        cJSON_AddNumberToObject (ls, "fewest_users_in_a_last_list", O.clients ? least : 0);
        cJSON_AddNumberToObject (ls, "users_expected", O.clients);
    }
    cJSON_AddNumberToObject (j, "server_errors_total", (double) errtab_total (&s->srv_err));
    cJSON_AddNumberToObject (j, "invalid_session_events", (double) s->invalid_user);
    cJSON_AddItemToObject (j, "errors", errtab_json (&s->srv_err, 5));
    cJSON_AddItemToObject (j, "connection_failures", errtab_json (&s->conn_err, 5));
    cJSON *cl = cJSON_AddObjectToObject (j, "closes");
    for (int i = 0; i < QB_CLOSETAB && s->closes.count [i]; i++) {
        char k [16];
        int c = s->closes.code [i];
        if (c > 0) snprintf (k, sizeof k, "%d", c);
        else snprintf (k, sizeof k, "%s", c == 0? "eof": "error");
        cJSON_AddNumberToObject (cl, k, (double) s->closes.count [i]);
    }
    cJSON_AddNumberToObject (j, "duration_s", total_s);
    cJSON_AddBoolToObject (j, "timed_out", tl->timed_out);
    cJSON_AddBoolToObject (j, "interrupted", tl->interrupted);
    char *out = cJSON_PrintUnformatted (j);
    if (out)
        printf ("RESULT %s\n", out);
    fflush (stdout);
    free (out);
    cJSON_Delete (j);
}
