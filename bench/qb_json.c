/*  =========================================================================
    qb_json - JSON scanning for qmsbench, without allocation

    Reads the server's events in place: j_top picks out the members that
    the protocol layer needs, j_member and j_element walk objects and
    arrays. Spans point into the frame (see qmsbench.h).
    ========================================================================= */

#define _GNU_SOURCE
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "qmsbench.h"

/* ------------------------------------------------------------------------ */
/*  JSON scanning without allocation. Spans point into the frame and keep
    the raw JSON string bytes (escapes included): ids and tokens are pasted
    back verbatim into our requests, which keeps them valid JSON. */

static const char *
j_ws (const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/*  p at an opening quote; returns the byte after the closing quote. */
static const char *
j_str (const char *p, const char *e)
{
    const char *start = ++p;
    while (p < e) {
        const char *q = memchr (p, '"', (size_t) (e - p));
        if (!q)
            return NULL;
        const char *b = q;
        while (b > start && b [-1] == '\\')
            b--;
        if (((q - b) & 1) == 0)
            return q + 1;
        p = q + 1;
    }
    return NULL;
}

static const char *
j_skip (const char *p, const char *e)
{
    if (p >= e)
        return NULL;
    if (*p == '"')
        return j_str (p, e);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (p < e) {
            char ch = *p;
            if (ch == '"') {
                p = j_str (p, e);
                if (!p)
                    return NULL;
                continue;
            }
            if (ch == '{' || ch == '[')
                depth++;
            else
            if ((ch == '}' || ch == ']') && --depth == 0)
                return p + 1;
            p++;
        }
        return NULL;
    }
    const char *s = p;
    while (p < e && *p != ',' && *p != '}' && *p != ']'
           && *p != ' ' && *p != '\n' && *p != '\r' && *p != '\t')
        p++;
    return p > s? p: NULL;
}

/*  Next member of an object whose '{' was consumed: 1 and the spans, 0 at
    the closing brace, -1 on malformed input. */
int
j_member (const char **pp, const char *e, span_t *key, const char **vs, const char **ve)
{
    const char *p = j_ws (*pp, e);
    if (p < e && *p == ',')
        p = j_ws (p + 1, e);
    if (p >= e)
        return -1;
    if (*p == '}') {
        *pp = p + 1;
        return 0;
    }
    if (*p != '"')
        return -1;
    const char *k = p;
    p = j_str (p, e);
    if (!p)
        return -1;
    key->p = k + 1;
    key->n = (size_t) (p - k - 2);
    p = j_ws (p, e);
    if (p >= e || *p != ':')
        return -1;
    p = j_ws (p + 1, e);
    *vs = p;
    p = j_skip (p, e);
    if (!p)
        return -1;
    *ve = p;
    *pp = p;
    return 1;
}

/*  Next element of an array whose '[' was consumed, as for j_member. */
int
j_element (const char **pp, const char *e, const char **vs, const char **ve)
{
    const char *p = j_ws (*pp, e);
    if (p < e && *p == ',')
        p = j_ws (p + 1, e);
    if (p >= e)
        return -1;
    if (*p == ']') {
        *pp = p + 1;
        return 0;
    }
    *vs = p;
    p = j_skip (p, e);
    if (!p)
        return -1;
    *ve = p;
    *pp = p;
    return 1;
}

bool
span_has (span_t s, const char *lit)
{
    size_t n = strlen (lit);
    for (size_t i = 0; i + n <= s.n; i++)
        if (memcmp (s.p + i, lit, n) == 0)
            return true;
    return false;
}

int
j_top (const char *s, size_t n, jtop_t *t)
{
    memset (t, 0, sizeof *t);
    t->valid = -1;
    t->event = -1;
    const char *e = s + n, *p = j_ws (s, e);
    if (p >= e || *p != '{')
        return -1;
    p++;
    span_t k;
    const char *vs, *ve;
    int rc;
    while ((rc = j_member (&p, e, &k, &vs, &ve)) == 1) {
        if (span_is (k, "event")) {
            long v = 0;
            const char *q = vs;
            while (q < ve && *q >= '0' && *q <= '9')
                v = v * 10 + (*q++ - '0');
            t->event = q > vs? v: -1;
        }
        else
        if (span_is (k, "valid"))
            t->valid = *vs == 't';
        else
        if (span_is (k, "sender"))
            t->sender = j_strval (vs, ve);
        else
        if (span_is (k, "message"))
            t->message = j_strval (vs, ve);
        else
        if (span_is (k, "error"))
            t->error = j_strval (vs, ve);
        else
        if (span_is (k, "token"))
            t->token = j_strval (vs, ve);
        else
        if ((span_is (k, "users") || span_is (k, "changes")) && *vs == '[') {
            t->users = vs;
            t->users_end = ve;
        }
        else
        if (span_is (k, "name"))
            t->name = j_strval (vs, ve);
        else
        if (span_is (k, "id"))
            t->id = j_strval (vs, ve);
        else
        if (span_is (k, "status"))
            t->status = j_strval (vs, ve);
        else
        if (span_is (k, "stored"))
            t->stored = *vs == 't';
        else
        if (span_is (k, "group")) {
            t->group = vs;
            t->group_end = ve;
        }
        else
        if (span_is (k, "user") && *vs == '{') {
            t->user = vs;
            t->user_end = ve;
        }
    }
    return rc;
}
