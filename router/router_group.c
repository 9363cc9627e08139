/*  router_group.c - groups in the router (docs/PROTOCOL.md, "Groups"):
    who is in which group, the changes, and the fan-out of group messages.

    The router is the one writer of group state.  It loads every membership
    from the store when it starts (ST_GROUP_LOAD, page by page) and answers
    group requests "unavailable" until that is done; from then on its copy
    in memory is the truth it checks rights and limits against.  A change is
    written first (ST_GROUP_WRITE, one transaction in the store) and applied
    to the copy only when the store says OK, so the copy never holds what
    the disk does not; while a group's change is being written, another
    change of the same group is refused ("try again"), messages still flow.

    A group message goes out in one GW_GROUP_DELIVER per gateway, carrying
    the message once and the list of that gateway's recipients (targets),
    not one record per member.  A member still receiving what was stored
    for it gets the message held (router_sf.c), one offline gets it stored
    (ST_GROUP_MSG_STORE, all of a message's copies in the same batch, so
    one commit).  The sender's one ack waits for the store's answers
    (gsend_t).
*/
#include "router_internal.h"
#include "qms_metrics.h"

#define GROUP_LOAD_PAGE     4096        /* memberships per ST_GROUP_LOAD page */
#define GROUP_LOAD_RETRY_MS 5000        /* ask again when the store is silent */

/* ------------------------------------------------------------------------
    State */

typedef struct group_s group_t;

/*  A user who is in at least one group: its name and key as the store and
    its last login had them, and its groups. */
typedef struct {
    uint64_t h;
    char *id, *name, *pubkey;
    group_t **groups;
    uint32_t ngroups, cap;
} guser_t;

typedef struct {
    guser_t *u;
    uint8_t role;               /* QMS_GROUP_ROLE_* */
    uint64_t seq;               /* the order members came in (the store's) */
} gmember_t;

struct group_s {
    uint64_t h;
    char id [MSG_ID_CHARS + 1];
    char *name;
    uint64_t epoch;
    gmember_t *m;               /* in the order they came in */
    uint32_t n, cap;
    bool busy;                  /* a change is being written */
};

/*  A change being written, until the store answers. */
typedef struct {
    link_t link;                /* oldest first, for the timeout */
    uint64_t req, req_h, created;
    uint32_t op;
    char gid [MSG_ID_CHARS + 1];
    uint32_t gw;                /* the requester */
    uint64_t conn;
    char client_id [MAX_CLIENT_ID + 1];
    char by [MAX_ID_BYTES + 1];
    char *name;                 /* create, rename: the new name */
    char owner [MAX_ID_BYTES + 1];  /* the owner after the change */
    uint64_t epoch;             /* after the change */
    char *lines;                /* "id TAB role" lines written */
    char *named;                /* the members the change names, lines */
    struct grow_s { char *id, *name, *key; uint64_t seq; uint8_t role; } *rows;
    uint32_t nrows, caprows;
} gwrite_t;

struct rgroups_s {
    qms_map_t by_id, users, writes;
    link_t write_list;
    bool loaded;
    uint64_t load_req, load_after, load_sent, load_rows;
    size_t count;
    int max_members, max_per_user;
    uint64_t messages, changes;     /* /metrics */
};

static void groups_reload (router_t *self);

static bool
match_group (const void *item, const void *key)
{
    const qms_str_t *k = (const qms_str_t *) key;
    const group_t *g = (const group_t *) item;
    return k->len == MSG_ID_CHARS && memcmp (g->id, k->ptr, MSG_ID_CHARS) == 0;
}

static bool
match_guser (const void *item, const void *key)
{
    const qms_str_t *k = (const qms_str_t *) key;
    const guser_t *u = (const guser_t *) item;
    return strlen (u->id) == k->len && memcmp (u->id, k->ptr, k->len) == 0;
}

static bool
match_gwrite (const void *item, const void *key)
{
    return ((const gwrite_t *) item)->req == *(const uint64_t *) key;
}

static char *
dup_str (qms_str_t s)
{
    return qms_str_dup (s);
}

static group_t *
group_find (router_t *self, qms_str_t id)
{
    if (id.len != MSG_ID_CHARS)
        return NULL;
    return (group_t *) qms_map_find (&self->groups->by_id, qms_map_hash_bytes (self->seed, id.ptr, id.len), &id);
}

static guser_t *
guser_find (router_t *self, qms_str_t id)
{
    return (guser_t *) qms_map_find (&self->groups->users, qms_map_hash_bytes (self->seed, id.ptr, id.len), &id);
}

/*  The user, made if it is new to the groups (NULL: out of memory). */
static guser_t *
guser_get (router_t *self, qms_str_t id, qms_str_t name, qms_str_t pubkey)
{
    guser_t *u = guser_find (self, id);
    if (u)
        return u;
    u = (guser_t *) calloc (1, sizeof *u);
    if (!u || !(u->id = dup_str (id)) || !(u->name = dup_str (name)) || !(u->pubkey = dup_str (pubkey))) {
        if (u) {
            free (u->id);
            free (u->name);
            free (u);
        }
        return NULL;
    }
    u->h = qms_map_hash_bytes (self->seed, id.ptr, id.len);
    if (qms_map_insert (&self->groups->users, u->h, u)) {
        free (u->id);
        free (u->name);
        free (u->pubkey);
        free (u);
        return NULL;
    }
    return u;
}

static void
guser_free (guser_t *u)
{
    free (u->id);
    free (u->name);
    free (u->pubkey);
    free (u->groups);
    free (u);
}

static void
guser_drop_group (router_t *self, guser_t *u, group_t *g)
{
    for (uint32_t i = 0; i < u->ngroups; i++)
        if (u->groups [i] == g) {
            u->groups [i] = u->groups [--u->ngroups];
            break;
        }
    if (u->ngroups == 0) {
        qms_map_remove (&self->groups->users, u->h, u);
        guser_free (u);
    }
}

static int
member_index (const group_t *g, qms_str_t id)
{
    for (uint32_t i = 0; i < g->n; i++)
        if (strlen (g->m [i].u->id) == id.len && memcmp (g->m [i].u->id, id.ptr, id.len) == 0)
            return (int) i;
    return -1;
}

static int
member_add (group_t *g, guser_t *u, uint8_t role, uint64_t seq)
{
    if (g->n == g->cap) {
        uint32_t cap = g->cap ? g->cap * 2 : 8;
        gmember_t *m = (gmember_t *) realloc (g->m, cap * sizeof *m);
        if (!m)
            return -1;
        g->m = m;
        g->cap = cap;
    }
    if (u->ngroups == u->cap) {
        uint32_t cap = u->cap ? u->cap * 2 : 4;
        group_t **gs = (group_t **) realloc (u->groups, cap * sizeof *gs);
        if (!gs)
            return -1;
        u->groups = gs;
        u->cap = cap;
    }
    /*  In the order they came in: loads and writes give rising seqs, but a
        page may interleave groups, so insert in place. */
    uint32_t at = g->n;
    while (at > 0 && g->m [at - 1].seq > seq)
        at--;
    memmove (g->m + at + 1, g->m + at, (g->n - at) * sizeof *g->m);
    g->m [at] = (gmember_t) { u, role, seq };
    g->n++;
    u->groups [u->ngroups++] = g;
    return 0;
}

static void
member_remove (router_t *self, group_t *g, uint32_t i)
{
    guser_t *u = g->m [i].u;
    memmove (g->m + i, g->m + i + 1, (g->n - i - 1) * sizeof *g->m);
    g->n--;
    guser_drop_group (self, u, g);
}

static group_t *
group_new (router_t *self, qms_str_t id, qms_str_t name, uint64_t epoch)
{
    group_t *g = (group_t *) calloc (1, sizeof *g);
    if (!g || id.len != MSG_ID_CHARS || !(g->name = dup_str (name))) {
        free (g);
        return NULL;
    }
    memcpy (g->id, id.ptr, MSG_ID_CHARS);
    g->epoch = epoch;
    g->h = qms_map_hash_bytes (self->seed, id.ptr, id.len);
    if (qms_map_insert (&self->groups->by_id, g->h, g)) {
        free (g->name);
        free (g);
        return NULL;
    }
    self->groups->count++;
    return g;
}

static void
group_destroy (router_t *self, group_t *g)
{
    while (g->n)
        member_remove (self, g, g->n - 1);
    qms_map_remove (&self->groups->by_id, g->h, g);
    self->groups->count--;
    free (g->m);
    free (g->name);
    free (g);
}

static const guser_t *
group_owner (const group_t *g)
{
    for (uint32_t i = 0; i < g->n; i++)
        if (g->m [i].role == QMS_GROUP_ROLE_OWNER)
            return g->m [i].u;
    return NULL;
}

/* ------------------------------------------------------------------------
    Lines: member lists travel as one id per line */

/*  The next line of *text (a view of it), advancing; false at the end. */
static bool
line_next (qms_str_t *text, qms_str_t *line)
{
    while (text->len && text->ptr [0] == '\n') {
        text->ptr++;
        text->len--;
    }
    if (!text->len)
        return false;
    const char *nl = memchr (text->ptr, '\n', text->len);
    uint32_t n = nl ? (uint32_t) (nl - text->ptr) : text->len;
    *line = qms_strn (text->ptr, n);
    text->ptr += n;
    text->len -= n;
    return true;
}

/*  The role the "id TAB role" lines give id (member when it is not there). */
static uint8_t
line_role (const char *lines, const char *id)
{
    qms_str_t text = qms_str (lines), line;
    size_t n = strlen (id);
    while (line_next (&text, &line))
        if (line.len == n + 2 && memcmp (line.ptr, id, n) == 0 && line.ptr [n] == '\t'
        &&  line.ptr [n + 1] >= '0' && line.ptr [n + 1] <= (char) ('0' + QMS_GROUP_ROLE_OWNER))
            return (uint8_t) (line.ptr [n + 1] - '0');
    return QMS_GROUP_ROLE_MEMBER;
}

static bool
line_in (qms_str_t text, qms_str_t id)
{
    qms_str_t line;
    while (line_next (&text, &line))
        if (line.len == id.len && memcmp (line.ptr, id.ptr, id.len) == 0)
            return true;
    return false;
}

/* ------------------------------------------------------------------------
    Answers to the gateways */

static void
send_group_error (router_t *self, uint32_t gw, uint64_t conn, uint32_t op, const char *reason,
                  qms_str_t client_id, qms_str_t detail, qms_str_t group)
{
    qms_rec_t rec = { .type = QMS_GW_GROUP_ERROR, .conn = conn, .num = op };
    rec.s [QMS_GERR_REASON] = qms_str (reason);
    rec.s [QMS_GERR_CLIENT_ID] = client_id;
    rec.s [QMS_GERR_DETAIL] = detail;
    rec.s [QMS_GERR_GROUP] = group;
    gw_emit (self, gw, &rec);
}

/*  The members as GW_GROUP carries them (qms_members_add). */
static int
members_text (const group_t *g, qms_buf_t *out)
{
    for (uint32_t i = 0; i < g->n; i++) {
        const guser_t *u = g->m [i].u;
        if (qms_members_add (out, g->m [i].role, qms_str (u->id), qms_str (u->name), qms_str (u->pubkey)))
            return -1;
    }
    return 0;
}

/*  Fan-out targets, per gateway, built during one call: the gateways
    touched are listed so that emitting costs what was touched. */
typedef struct {
    qms_buf_t *bufs;            /* per gateway index, allocated on demand */
    uint32_t *touched;
    uint32_t ntouched;
    bool *has_requester;
} fanout_t;

static int
fanout_init (router_t *self, fanout_t *f)
{
    memset (f, 0, sizeof *f);
    uint32_t n = self->gateway_count ? self->gateway_count : 1;
    f->bufs = (qms_buf_t *) calloc (n, sizeof *f->bufs);
    f->touched = (uint32_t *) calloc (n, sizeof *f->touched);
    f->has_requester = (bool *) calloc (n, sizeof *f->has_requester);
    if (!f->bufs || !f->touched || !f->has_requester) {
        free (f->bufs);
        free (f->touched);
        free (f->has_requester);
        return -1;
    }
    return 0;
}

static void
fanout_touch (fanout_t *f, uint32_t gw)
{
    for (uint32_t i = 0; i < f->ntouched; i++)
        if (f->touched [i] == gw)
            return;
    f->touched [f->ntouched++] = gw;
}

static void
fanout_add (fanout_t *f, uint32_t gw, uint64_t conn, qms_str_t id)
{
    fanout_touch (f, gw);
    qms_targets_add (&f->bufs [gw], conn, id.ptr, id.len);
}

static void
fanout_free (router_t *self, fanout_t *f)
{
    uint32_t n = self->gateway_count ? self->gateway_count : 1;
    for (uint32_t i = 0; i < n; i++)
        qms_buf_free (&f->bufs [i]);
    free (f->bufs);
    free (f->touched);
    free (f->has_requester);
}

/*  GW_GROUP to every online session of users (and to the requester, with
    its client id, unless it is one of them on the same connection: then
    its copy is the requester's).  gone: the recipients are no longer
    members (the record carries no member list). */
static void
emit_group_event (router_t *self, const group_t *g, const char *gid, const char *name, uint32_t op,
                  bool gone, guser_t *const *users, uint32_t nusers, const gwrite_t *w,
                  bool to_requester)
{
    fanout_t f;
    if (fanout_init (self, &f)) {
        qms_warn (LOG, "event=out_of_memory what=group_event");
        return;
    }
    for (uint32_t i = 0; i < nusers; i++) {
        session_t *s = find_by_id (self, qms_str (users [i]->id));
        if (!s || !s->bound || !gateway_live (self, s->gw))
            continue;
        if (to_requester && s->gw == w->gw && s->conn == w->conn) {
            f.has_requester [s->gw] = true;
            fanout_touch (&f, s->gw);
            continue;
        }
        fanout_add (&f, s->gw, s->conn, s->id);
    }
    if (to_requester && gateway_live (self, w->gw) && !f.has_requester [w->gw]) {
        f.has_requester [w->gw] = true;
        fanout_touch (&f, w->gw);
    }
    qms_buf_t members;
    qms_buf_init (&members);
    if (!gone && g)
        members_text (g, &members);
    const guser_t *owner = g ? group_owner (g) : NULL;
    for (uint32_t i = 0; i < f.ntouched; i++) {
        uint32_t gw = f.touched [i];
        qms_rec_t rec = { .type = QMS_GW_GROUP, .num = op | (gone ? QMS_GROUP_GONE : 0),
                          .seq = g ? g->epoch : w->epoch, .time = qms_now_ms () };
        if (f.has_requester [gw]) {
            rec.conn = w->conn;
            rec.s [QMS_GINFO_CLIENT_ID] = qms_str (w->client_id);
        }
        rec.s [QMS_GINFO_ID] = qms_str (gid);
        rec.s [QMS_GINFO_NAME] = qms_str (name);
        rec.s [QMS_GINFO_OWNER] = qms_str (owner ? owner->id : NULL);
        rec.s [QMS_GINFO_MEMBERS] = qms_strn ((const char *) members.data, members.len);
        rec.s [QMS_GINFO_BY] = qms_str (w->by);
        rec.s [QMS_GINFO_CHANGED] = qms_str (w->named);
        rec.s [QMS_GINFO_TARGETS] = qms_strn ((const char *) f.bufs [gw].data, f.bufs [gw].len);
        gw_emit (self, gw, &rec);
    }
    qms_buf_free (&members);
    fanout_free (self, &f);
}

/* ------------------------------------------------------------------------
    Loading what the store holds */

static void
load_ask (router_t *self)
{
    rgroups_t *G = self->groups;
    G->load_req = self->next_req++;
    G->load_sent = qms_mono_ms ();
    qms_rec_t rec = { .type = QMS_ST_GROUP_LOAD, .req = G->load_req, .num = GROUP_LOAD_PAGE,
                      .seq = G->load_after };
    store_emit (self, &rec);
}

static void
load_row (router_t *self, const qms_rec_t *rec)
{
    rgroups_t *G = self->groups;
    qms_str_t gid = rec->s [QMS_GROW_GROUP], uid = rec->s [QMS_GROW_MEMBER];
    if (gid.len != MSG_ID_CHARS || uid.len == 0 || uid.len > MAX_ID_BYTES || rec->num > QMS_GROUP_ROLE_OWNER) {
        qms_warn (LOG, "event=bad_record type=ST_GROUP_ROW");
        return;
    }
    if (rec->seq > G->load_after)
        G->load_after = rec->seq;
    G->load_rows++;
    group_t *g = group_find (self, gid);
    if (!g && !(g = group_new (self, gid, rec->s [QMS_GROW_NAME], rec->time)))
        goto oom;
    if (member_index (g, uid) >= 0)
        return;                 /* a page asked again after a timeout */
    guser_t *u = guser_get (self, uid, rec->s [QMS_GROW_MEMBER_NAME], rec->s [QMS_GROW_MEMBER_KEY]);
    if (!u || member_add (g, u, (uint8_t) rec->num, rec->seq))
        goto oom;
    return;
oom:
    qms_warn (LOG, "event=out_of_memory what=group_load");
}

/* ------------------------------------------------------------------------
    Changes */

static void
gwrite_destroy (router_t *self, gwrite_t *w)
{
    qms_map_remove (&self->groups->writes, w->req_h, w);
    list_remove (&w->link);
    for (uint32_t i = 0; i < w->nrows; i++) {
        free (w->rows [i].id);
        free (w->rows [i].name);
        free (w->rows [i].key);
    }
    free (w->rows);
    free (w->name);
    free (w->lines);
    free (w->named);
    free (w);
}

/*  Write the change; the group (if any) is busy until the answer. */
static void
gwrite_send (router_t *self, gwrite_t *w, group_t *g)
{
    w->req = self->next_req++;
    w->req_h = qms_map_hash_u64 (self->seed, w->req);
    w->created = qms_mono_ms ();
    if (qms_map_insert (&self->groups->writes, w->req_h, w)) {
        send_group_error (self, w->gw, w->conn, w->op, k_unavailable, qms_str (w->client_id), qms_str (NULL),
                          qms_str (w->gid));
        free (w->name);
        free (w->lines);
        free (w->named);
        free (w);
        return;
    }
    list_append (&self->groups->write_list, &w->link);
    if (g)
        g->busy = true;
    qms_rec_t rec = { .type = QMS_ST_GROUP_WRITE, .req = w->req, .num = w->op, .time = qms_now_ms (),
                      .seq = w->epoch };
    rec.s [QMS_GWRITE_GROUP] = qms_str (w->gid);
    rec.s [QMS_GWRITE_NAME] = qms_str (w->name);
    rec.s [QMS_GWRITE_OWNER] = qms_str (w->owner);
    rec.s [QMS_GWRITE_MEMBERS] = qms_str (w->lines);
    rec.s [QMS_GWRITE_BY] = qms_str (w->by);
    store_emit (self, &rec);
}

static void
row_keep (gwrite_t *w, const qms_rec_t *rec)
{
    if (w->nrows == w->caprows) {
        uint32_t cap = w->caprows ? w->caprows * 2 : 8;
        struct grow_s *rows = (struct grow_s *) realloc (w->rows, cap * sizeof *rows);
        if (!rows)
            return;
        w->rows = rows;
        w->caprows = cap;
    }
    struct grow_s *r = &w->rows [w->nrows];
    r->id = qms_str_dup (rec->s [QMS_GROW_MEMBER]);
    r->name = qms_str_dup (rec->s [QMS_GROW_MEMBER_NAME]);
    r->key = qms_str_dup (rec->s [QMS_GROW_MEMBER_KEY]);
    r->seq = rec->seq;
    r->role = (uint8_t) (rec->num <= QMS_GROUP_ROLE_OWNER ? rec->num : QMS_GROUP_ROLE_MEMBER);
    if (r->id && r->name && r->key)
        w->nrows++;
    else {
        free (r->id);
        free (r->name);
        free (r->key);
    }
}

/*  The store wrote the change: the copy in memory follows, and everyone
    concerned hears of it. */
static void
gwrite_apply (router_t *self, gwrite_t *w)
{
    rgroups_t *G = self->groups;
    qms_str_t gid = qms_str (w->gid);
    group_t *g = group_find (self, gid);
    guser_t **gone = NULL;
    uint32_t ngone = 0;
    G->changes++;
    if (w->op == QMS_GROUP_OP_CREATE || w->op == QMS_GROUP_OP_ADD) {
        if (!g && w->op == QMS_GROUP_OP_CREATE)
            g = group_new (self, gid, qms_str (w->name), w->epoch);
        if (!g)
            goto oom;
        for (uint32_t i = 0; i < w->nrows; i++) {
            struct grow_s *r = &w->rows [i];
            guser_t *u = guser_get (self, qms_str (r->id), qms_str (r->name), qms_str (r->key));
            /*  The role asked for, whatever the row says. */
            uint8_t role = line_role (w->lines, r->id);
            if (!u || (member_index (g, qms_str (r->id)) < 0 && member_add (g, u, role, r->seq)))
                goto oom;
        }
        g->epoch = w->epoch;
    }
    else
    if (!g)
        return;                 /* gone meanwhile (it cannot: it was busy) */
    else
    if (w->op == QMS_GROUP_OP_REMOVE || w->op == QMS_GROUP_OP_LEAVE) {
        gone = (guser_t **) calloc (g->n ? g->n : 1, sizeof *gone);
        qms_str_t text = qms_str (w->named), line;
        while (line_next (&text, &line)) {
            int i = member_index (g, line);
            if (i < 0)
                continue;
            /*  Kept alive for the event: copied, the member entry goes. */
            guser_t *u = g->m [i].u;
            guser_t *copy = (guser_t *) calloc (1, sizeof *copy);
            if (gone && copy && (copy->id = strdup (u->id)) && (copy->name = strdup (u->name))
            &&  (copy->pubkey = strdup (u->pubkey)))
                gone [ngone++] = copy;
            else
            if (copy)
                guser_free (copy);
            member_remove (self, g, (uint32_t) i);
        }
        g->epoch = w->epoch;
        /*  The owner left: the one the change names takes over. */
        int o = member_index (g, qms_str (w->owner));
        if (o >= 0)
            g->m [o].role = QMS_GROUP_ROLE_OWNER;
    }
    else
    if (w->op == QMS_GROUP_OP_RENAME) {
        char *name = strdup (w->name ? w->name : "");
        if (!name)
            goto oom;
        free (g->name);
        g->name = name;
    }
    else {                      /* promote, demote */
        qms_str_t text = qms_str (w->named), line;
        while (line_next (&text, &line)) {
            int i = member_index (g, line);
            if (i >= 0 && g->m [i].role != QMS_GROUP_ROLE_OWNER)
                g->m [i].role = w->op == QMS_GROUP_OP_PROMOTE ? QMS_GROUP_ROLE_ADMIN : QMS_GROUP_ROLE_MEMBER;
        }
    }
    g->busy = false;
    char name [1024];
    snprintf (name, sizeof name, "%s", g->name);
    qms_info (LOG, "event=group_changed group=%s op=%u epoch=%llu members=%u by=%s", w->gid, w->op,
              (unsigned long long) g->epoch, g->n, w->by);
    /*  The members who left hear it first, then the members. */
    bool requester_gone = false;
    for (uint32_t i = 0; i < ngone; i++)
        requester_gone |= strcmp (gone [i]->id, w->by) == 0;
    if (ngone)
        emit_group_event (self, g, w->gid, name, w->op, true, gone, ngone, w, requester_gone);
    guser_t **users = (guser_t **) calloc (g->n ? g->n : 1, sizeof *users);
    if (users) {
        for (uint32_t i = 0; i < g->n; i++)
            users [i] = g->m [i].u;
        emit_group_event (self, g, w->gid, name, w->op, false, users, g->n, w, !requester_gone);
        free (users);
    }
    for (uint32_t i = 0; i < ngone; i++)
        guser_free (gone [i]);
    free (gone);
    if (g->n == 0)
        group_destroy (self, g);
    return;
oom:
    qms_warn (LOG, "event=out_of_memory what=group_apply group=%s", w->gid);
    if (g)
        g->busy = false;
}

static void
gwrite_failed (router_t *self, gwrite_t *w, const char *reason, qms_str_t detail)
{
    group_t *g = group_find (self, qms_str (w->gid));
    if (g)
        g->busy = false;
    send_group_error (self, w->gw, w->conn, w->op, reason, qms_str (w->client_id), detail, qms_str (w->gid));
}

/* ------------------------------------------------------------------------
    Requests */

static gwrite_t *
gwrite_new (const session_t *s, uint32_t gw, const qms_rec_t *rec, uint32_t op)
{
    gwrite_t *w = (gwrite_t *) calloc (1, sizeof *w);
    if (!w)
        return NULL;
    w->op = op;
    w->gw = gw;
    w->conn = rec->conn;
    qms_str_copy (rec->s [QMS_GROUP_CLIENT_ID], w->client_id, sizeof w->client_id);
    qms_str_copy (s->id, w->by, sizeof w->by);
    return w;
}

static void
gwrite_drop (gwrite_t *w)
{
    free (w->name);
    free (w->lines);
    free (w->named);
    free (w);
}

/*  Would user u be in too many groups with one more? */
static bool
too_many (const rgroups_t *G, const guser_t *u)
{
    return u && (int) u->ngroups >= G->max_per_user;
}

static void
too_many_error (router_t *self, gwrite_t *w, const char *id, qms_str_t group)
{
    char detail [MAX_ID_BYTES + 32];
    snprintf (detail, sizeof detail, "%s\t%d", id, self->groups->max_per_user);
    send_group_error (self, w->gw, w->conn, w->op, QMS_REASON_TOO_MANY_GROUPS, qms_str (w->client_id),
                      qms_str (detail), group);
}

static void
group_full_error (router_t *self, gwrite_t *w, qms_str_t group)
{
    char detail [32];
    snprintf (detail, sizeof detail, "%d", self->groups->max_members);
    send_group_error (self, w->gw, w->conn, w->op, QMS_REASON_GROUP_FULL, qms_str (w->client_id),
                      qms_str (detail), group);
}

/*  A group list goes out in parts of about s_list_part_bytes of records,
    each written before the next is sent (GW_SYNC, as a drain's pages), so
    that a user in many large groups never has more queued than its
    connection allows.  The groups are those the user was in when it asked;
    one it has left by the time its part goes is skipped. */
static size_t s_list_part_bytes = 256u * 1024;     /* the selftest makes it small */

typedef struct glisting_s {
    uint32_t gw;
    uint64_t conn, sync_req;
    char client_id [MAX_CLIENT_ID + 1];
    char (*ids) [MSG_ID_CHARS + 1];
    uint32_t n, at;
} glisting_t;

void
router_group_session_end (router_t *self, session_t *s)
{
    if (s->listing) {
        free (s->listing->ids);
        free (s->listing);
        s->listing = NULL;
    }
}

static void
list_part (router_t *self, session_t *s)
{
    glisting_t *L = s->listing;
    qms_buf_t rows, members;
    qms_buf_init (&rows);
    qms_buf_init (&members);
    uint32_t count = 0;
    while (L->at < L->n && (count == 0 || rows.len < s_list_part_bytes)) {
        group_t *g = group_find (self, qms_strn (L->ids [L->at], MSG_ID_CHARS));
        L->at++;
        if (!g || member_index (g, s->id) < 0)
            continue;           /* left meanwhile */
        qms_buf_reset (&members);
        const guser_t *owner = group_owner (g);
        qms_rec_t row = { .type = QMS_GW_GROUP, .num = QMS_GROUP_OP_LIST, .seq = g->epoch, .time = qms_now_ms () };
        if (members_text (g, &members)) {
            qms_warn (LOG, "event=out_of_memory what=group_list");
            continue;
        }
        row.s [QMS_GINFO_ID] = qms_strn (g->id, MSG_ID_CHARS);
        row.s [QMS_GINFO_NAME] = qms_str (g->name);
        row.s [QMS_GINFO_OWNER] = qms_str (owner ? owner->id : NULL);
        row.s [QMS_GINFO_MEMBERS] = qms_strn ((const char *) members.data, members.len);
        if (qms_rec_encode (&rows, &row) == 0)
            count++;
    }
    bool more = L->at < L->n;
    qms_rec_t head = { .type = QMS_GW_GROUPS, .conn = L->conn, .num = count | (more ? QMS_GROUPS_MORE : 0) };
    head.s [QMS_GLIST_CLIENT_ID] = qms_str (L->client_id);
    gw_emit (self, L->gw, &head);
    gateway_t *g = gateway_live (self, L->gw);
    if (g && rows.len && qms_buf_append (&g->out, rows.data, rows.len))
        qms_warn (LOG, "event=encode_failed type=GW_GROUP gateway=%u", L->gw);
    qms_buf_free (&rows);
    qms_buf_free (&members);
    if (!more) {
        router_group_session_end (self, s);
        return;
    }
    L->sync_req = send_sync (self, L->gw, L->conn);
}

bool
router_group_on_synced (router_t *self, session_t *s, uint64_t req)
{
    if (!s->listing || s->listing->sync_req != req)
        return false;
    s->listing->sync_req = 0;
    list_part (self, s);
    return true;
}

static void
on_list (router_t *self, session_t *s, uint32_t gw, const qms_rec_t *rec)
{
    router_group_session_end (self, s);         /* a list asked again replaces the one going out */
    guser_t *u = guser_find (self, s->id);
    glisting_t *L = (glisting_t *) calloc (1, sizeof *L);
    uint32_t n = u ? u->ngroups : 0;
    if (!L || (n && !(L->ids = calloc (n, sizeof *L->ids)))) {
        free (L);
        send_group_error (self, gw, rec->conn, QMS_GROUP_OP_LIST, k_unavailable, rec->s [QMS_GROUP_CLIENT_ID],
                          qms_str (NULL), qms_str (NULL));
        return;
    }
    L->gw = gw;
    L->conn = rec->conn;
    qms_str_copy (rec->s [QMS_GROUP_CLIENT_ID], L->client_id, sizeof L->client_id);
    for (uint32_t i = 0; i < n; i++)
        memcpy (L->ids [i], u->groups [i]->id, MSG_ID_CHARS + 1);
    L->n = n;
    s->listing = L;
    list_part (self, s);
}

/*  Append "id TAB role" to lines and "id" to named. */
static int
lines_add (qms_buf_t *lines, qms_buf_t *named, qms_str_t id, uint8_t role)
{
    char r [4] = { '\t', (char) ('0' + role), '\n', 0 };
    if (qms_buf_append (lines, id.ptr, id.len) || qms_buf_append (lines, r, 3)
    ||  qms_buf_append (named, id.ptr, id.len) || qms_buf_append (named, "\n", 1))
        return -1;
    return 0;
}

static char *
buf_cstr (qms_buf_t *b)
{
    char *s = (char *) malloc (b->len + 1);
    if (s) {
        if (b->len)
            memcpy (s, b->data, b->len);
        s [b->len] = 0;
    }
    qms_buf_free (b);
    return s;
}

void
router_group_on_request (router_t *self, session_t *s, uint32_t gw, const qms_rec_t *rec)
{
    rgroups_t *G = self->groups;
    uint32_t op = (uint32_t) rec->num;
    qms_str_t gid = rec->s [QMS_GROUP_ID], cid = rec->s [QMS_GROUP_CLIENT_ID];
    if (op < QMS_GROUP_OP_CREATE || op > QMS_GROUP_OP_LIST || cid.len > MAX_CLIENT_ID) {
        qms_warn (LOG, "event=bad_record type=RT_GROUP gateway=%u", gw);
        return;
    }
    if (!G->loaded) {
        send_group_error (self, gw, rec->conn, op, k_unavailable, cid, qms_str (NULL), gid);
        return;
    }
    if (op == QMS_GROUP_OP_LIST) {
        on_list (self, s, gw, rec);
        return;
    }
    gwrite_t *w = gwrite_new (s, gw, rec, op);
    if (!w) {
        send_group_error (self, gw, rec->conn, op, k_unavailable, cid, qms_str (NULL), gid);
        return;
    }
    guser_t *me = guser_find (self, s->id);
    qms_buf_t lines, named;
    qms_buf_init (&lines);
    qms_buf_init (&named);
    qms_str_t members = rec->s [QMS_GROUP_MEMBERS], line;
    group_t *g = NULL;
    if (op == QMS_GROUP_OP_CREATE) {
        char id [MSG_ID_CHARS + 1];
        do new_msg_id (self, id); while (group_find (self, qms_str (id)));
        snprintf (w->gid, sizeof w->gid, "%s", id);
        if (too_many (G, me)) {
            too_many_error (self, w, w->by, qms_str (NULL));
            goto done;
        }
        int count = 1;
        if (lines_add (&lines, &named, s->id, QMS_GROUP_ROLE_OWNER))
            goto oom;
        qms_str_t text = members;
        while (line_next (&text, &line)) {
            if (line.len > MAX_ID_BYTES || (line.len == s->id.len && memcmp (line.ptr, s->id.ptr, line.len) == 0)
            ||  line_in (qms_strn ((const char *) named.data, named.len), line))
                continue;
            if (++count > G->max_members) {
                group_full_error (self, w, qms_str (NULL));
                goto done;
            }
            guser_t *u = guser_find (self, line);
            if (too_many (G, u)) {
                char id2 [MAX_ID_BYTES + 1];
                qms_str_copy (line, id2, sizeof id2);
                too_many_error (self, w, id2, qms_str (NULL));
                goto done;
            }
            if (lines_add (&lines, &named, line, QMS_GROUP_ROLE_MEMBER))
                goto oom;
        }
        w->name = qms_str_dup (rec->s [QMS_GROUP_NAME]);
        snprintf (w->owner, sizeof w->owner, "%s", w->by);
        w->epoch = 1;
    }
    else {
        g = group_find (self, gid);
        int mi = g ? member_index (g, s->id) : -1;
        if (mi < 0) {
            send_group_error (self, gw, rec->conn, op, QMS_REASON_UNKNOWN_GROUP, cid, qms_str (NULL), gid);
            goto done;
        }
        snprintf (w->gid, sizeof w->gid, "%s", g->id);
        uint8_t my_role = g->m [mi].role;
        if (g->busy) {
            send_group_error (self, gw, rec->conn, op, QMS_REASON_GROUP_BUSY, cid, qms_str (NULL), gid);
            goto done;
        }
        const guser_t *owner = group_owner (g);
        snprintf (w->owner, sizeof w->owner, "%s", owner ? owner->id : "");
        w->epoch = g->epoch;
        bool admin_right = op == QMS_GROUP_OP_ADD || op == QMS_GROUP_OP_REMOVE || op == QMS_GROUP_OP_RENAME;
        bool owner_right = op == QMS_GROUP_OP_PROMOTE || op == QMS_GROUP_OP_DEMOTE;
        if ((admin_right && my_role == QMS_GROUP_ROLE_MEMBER)) {
            send_group_error (self, gw, rec->conn, op, QMS_REASON_NOT_ALLOWED, cid, qms_str (NULL), gid);
            goto done;
        }
        if (owner_right && my_role != QMS_GROUP_ROLE_OWNER) {
            send_group_error (self, gw, rec->conn, op,
                              my_role == QMS_GROUP_ROLE_ADMIN ? QMS_REASON_OWNER_ONLY : QMS_REASON_NOT_ALLOWED,
                              cid, qms_str (NULL), gid);
            goto done;
        }
        if (op == QMS_GROUP_OP_RENAME) {
            w->name = qms_str_dup (rec->s [QMS_GROUP_NAME]);
            if (!w->name)
                goto oom;
        }
        else
        if (op == QMS_GROUP_OP_LEAVE) {
            if (lines_add (&lines, &named, s->id, my_role))
                goto oom;
            w->epoch = g->epoch + 1;
            if (my_role == QMS_GROUP_ROLE_OWNER) {
                /*  The longest-standing admin takes over, or else the
                    longest-standing member (members are kept in order). */
                int heir = -1;
                for (uint32_t i = 0; i < g->n && heir < 0; i++)
                    if ((int) i != mi && g->m [i].role == QMS_GROUP_ROLE_ADMIN)
                        heir = (int) i;
                for (uint32_t i = 0; i < g->n && heir < 0; i++)
                    if ((int) i != mi)
                        heir = (int) i;
                snprintf (w->owner, sizeof w->owner, "%s", heir >= 0 ? g->m [heir].u->id : "");
            }
        }
        else {
            int count = (int) g->n;
            qms_str_t text = members;
            while (line_next (&text, &line)) {
                if (line.len > MAX_ID_BYTES || line_in (qms_strn ((const char *) named.data, named.len), line))
                    continue;
                int i = member_index (g, line);
                char id2 [MAX_ID_BYTES + 1];
                qms_str_copy (line, id2, sizeof id2);
                if (op == QMS_GROUP_OP_ADD) {
                    if (i >= 0)
                        continue;               /* already in */
                    if (++count > G->max_members) {
                        group_full_error (self, w, gid);
                        goto done;
                    }
                    if (too_many (G, guser_find (self, line))) {
                        too_many_error (self, w, id2, gid);
                        goto done;
                    }
                    if (lines_add (&lines, &named, line, QMS_GROUP_ROLE_MEMBER))
                        goto oom;
                    continue;
                }
                if (i < 0) {
                    send_group_error (self, gw, rec->conn, op, QMS_REASON_NOT_MEMBER, cid, qms_str (id2), gid);
                    goto done;
                }
                uint8_t role = g->m [i].role;
                if (op == QMS_GROUP_OP_REMOVE) {
                    if (role == QMS_GROUP_ROLE_OWNER
                    ||  (role == QMS_GROUP_ROLE_ADMIN && my_role != QMS_GROUP_ROLE_OWNER)) {
                        send_group_error (self, gw, rec->conn, op, QMS_REASON_OWNER_ONLY, cid, qms_str (NULL), gid);
                        goto done;
                    }
                }
                else {
                    uint8_t want = op == QMS_GROUP_OP_PROMOTE ? QMS_GROUP_ROLE_ADMIN : QMS_GROUP_ROLE_MEMBER;
                    if (role == want || role == QMS_GROUP_ROLE_OWNER)
                        continue;
                    role = want;
                }
                if (lines_add (&lines, &named, line, role))
                    goto oom;
            }
            if (named.len == 0) {
                send_group_error (self, gw, rec->conn, op, QMS_REASON_NO_CHANGE, cid, qms_str (NULL), gid);
                goto done;
            }
            if (op == QMS_GROUP_OP_ADD || op == QMS_GROUP_OP_REMOVE)
                w->epoch = g->epoch + 1;
        }
    }
    w->lines = buf_cstr (&lines);
    w->named = buf_cstr (&named);
    if (!w->lines || !w->named)
        goto oom;
    gwrite_send (self, w, g);
    return;
oom:
    qms_warn (LOG, "event=out_of_memory what=group_request");
    send_group_error (self, gw, rec->conn, op, k_unavailable, cid, qms_str (NULL), gid);
done:
    qms_buf_free (&lines);
    qms_buf_free (&named);
    gwrite_drop (w);
}

/* ------------------------------------------------------------------------
    Group messages */

static void
gsend_ack (router_t *self, gsend_t *a)
{
    if (!a->client_id [0])
        return;
    uint64_t status = a->stored ? QMS_ACK_STORED : QMS_ACK_DELIVERED;
    qms_rec_t rec = { .type = QMS_GW_GROUP_ACK, .conn = a->conn, .num = status, .time = a->time,
                      .seq = a->members };
    char unreached [16];
    snprintf (unreached, sizeof unreached, "%u", a->unreached);
    rec.s [QMS_GACK_CLIENT_ID] = qms_str (a->client_id);
    rec.s [QMS_GACK_MSG_ID] = qms_str (a->msg_id);
    rec.s [QMS_GACK_GROUP] = qms_str (a->group);
    rec.s [QMS_GACK_UNREACHED] = qms_str (a->unreached ? unreached : NULL);
    gw_emit (self, a->gw, &rec);
    session_t *sender = find_by_id (self, qms_str (a->sender));
    if (sender)
        recent_remember_group (sender, qms_str (a->client_id), a->msg_id, (uint8_t) status, a->time,
                               a->members, a->unreached, a->group);
}

/*  A store answer for one member's copy (m->gsend set). */
void
router_group_stored (router_t *self, msgreq_t *m, uint64_t status)
{
    gsend_t *a = m->gsend;
    m->gsend = NULL;
    if (!a)
        return;
    if (status == QMS_ST_OK || status == QMS_ST_EXISTS)
        a->stored++;
    else
        a->unreached++;
    if (status == QMS_ST_OK)
        self->m.stored++;
    if (--a->waiting == 0) {
        gsend_ack (self, a);
        free (a);
    }
}

/*  Store one member's copy; false if the store cannot take it now. */
static bool
store_copy (router_t *self, qms_str_t group, qms_str_t recipient, qms_str_t sender, qms_str_t sender_name,
            qms_str_t sender_key, qms_str_t message, qms_str_t client_id, qms_str_t msg_id, uint64_t time,
            gsend_t *a)
{
    msgreq_t *m = router_sf_msgreq_store (self, sender, recipient, message.len + recipient.len + client_id.len);
    if (!m)
        return false;
    m->gw = a ? a->gw : UINT32_MAX;
    m->conn = a ? a->conn : 0;
    m->time = time;
    m->gsend = a;
    qms_str_copy (client_id, m->client_id, sizeof m->client_id);
    qms_str_copy (msg_id, m->msg_id, sizeof m->msg_id);
    qms_rec_t rec = { .type = QMS_ST_GROUP_MSG_STORE, .req = m->req, .time = time };
    rec.s [QMS_STORE_MSG_ID] = msg_id;
    rec.s [QMS_STORE_RECIPIENT] = recipient;
    rec.s [QMS_STORE_SENDER] = sender;
    rec.s [QMS_STORE_SENDER_NAME] = sender_name;
    rec.s [QMS_STORE_SENDER_KEY] = sender_key;
    rec.s [QMS_STORE_TEXT] = message;
    rec.s [QMS_STORE_CLIENT_ID] = client_id;
    rec.s [QMS_STORE_GROUP] = group;
    store_emit (self, &rec);
    return true;
}

bool
router_group_store_copy (router_t *self, qms_str_t group, qms_str_t recipient, qms_str_t sender,
                         qms_str_t sender_name, qms_str_t sender_key, qms_str_t message, qms_str_t client_id,
                         qms_str_t msg_id, uint64_t time)
{
    return store_copy (self, group, recipient, sender, sender_name, sender_key, message, client_id, msg_id,
                       time, NULL);
}

void
router_group_on_message (router_t *self, session_t *s, uint32_t gw, const qms_rec_t *rec, uint64_t now)
{
    rgroups_t *G = self->groups;
    qms_str_t gid = rec->s [QMS_GMSG_GROUP], message = rec->s [QMS_GMSG_TEXT],
              client_id = rec->s [QMS_GMSG_CLIENT_ID];
    if (client_id.len > MAX_CLIENT_ID) {
        qms_warn (LOG, "event=bad_record type=RT_GROUP_MESSAGE gateway=%u", gw);
        return;
    }
    if (!G->loaded) {
        send_group_error (self, gw, rec->conn, QMS_GROUP_OP_MESSAGE, k_unavailable, client_id, qms_str (NULL), gid);
        return;
    }
    group_t *g = group_find (self, gid);
    if (!g || member_index (g, s->id) < 0) {
        send_group_error (self, gw, rec->conn, QMS_GROUP_OP_MESSAGE, QMS_REASON_UNKNOWN_GROUP, client_id,
                          qms_str (NULL), gid);
        return;
    }
    recent_entry_t *seen = recent_find (s, client_id);
    if (seen && seen->group [0]) {
        gsend_t again = { .gw = gw, .conn = rec->conn, .time = seen->time, .members = seen->members,
                          .unreached = seen->unreached, .stored = seen->status == QMS_ACK_STORED };
        qms_str_copy (client_id, again.client_id, sizeof again.client_id);
        snprintf (again.msg_id, sizeof again.msg_id, "%s", seen->msg_id);
        snprintf (again.group, sizeof again.group, "%s", seen->group);
        qms_rec_t ack = { .type = QMS_GW_GROUP_ACK, .conn = rec->conn, .num = seen->status, .time = seen->time,
                          .seq = seen->members };
        char unreached [16];
        snprintf (unreached, sizeof unreached, "%u", seen->unreached);
        ack.s [QMS_GACK_CLIENT_ID] = client_id;
        ack.s [QMS_GACK_MSG_ID] = qms_str (seen->msg_id);
        ack.s [QMS_GACK_GROUP] = qms_str (seen->group);
        ack.s [QMS_GACK_UNREACHED] = qms_str (seen->unreached ? unreached : NULL);
        gw_emit (self, gw, &ack);
        return;
    }
    G->messages++;
    char msg_id [MSG_ID_CHARS + 1];
    new_msg_id (self, msg_id);
    qms_str_t mid = qms_strn (msg_id, MSG_ID_CHARS);
    gsend_t *a = (gsend_t *) calloc (1, sizeof *a);
    if (!a) {
        send_group_error (self, gw, rec->conn, QMS_GROUP_OP_MESSAGE, k_unavailable, client_id, qms_str (NULL), gid);
        return;
    }
    a->gw = gw;
    a->conn = rec->conn;
    a->time = now;
    a->waiting = 1;             /* this function's own hold, released below */
    qms_str_copy (client_id, a->client_id, sizeof a->client_id);
    snprintf (a->msg_id, sizeof a->msg_id, "%s", msg_id);
    snprintf (a->group, sizeof a->group, "%s", g->id);
    qms_str_copy (s->id, a->sender, sizeof a->sender);
    fanout_t f;
    if (fanout_init (self, &f)) {
        free (a);
        send_group_error (self, gw, rec->conn, QMS_GROUP_OP_MESSAGE, k_unavailable, client_id, qms_str (NULL), gid);
        return;
    }
    for (uint32_t i = 0; i < g->n; i++) {
        guser_t *u = g->m [i].u;
        qms_str_t uid = qms_str (u->id);
        if (uid.len == s->id.len && memcmp (uid.ptr, s->id.ptr, uid.len) == 0)
            continue;
        a->members++;
        session_t *t = find_by_id (self, uid);
        if (t && t->bound && !t->draining && gateway_live (self, t->gw)) {
            fanout_add (&f, t->gw, t->conn, t->id);
            self->m.delivered++;
            if (client_id.len && t->receipts)
                live_receipt_add_group (self, s, t, client_id, msg_id, g->id);
            continue;
        }
        if (t && t->draining && t->held_count < MAX_HELD
        &&  router_sf_held_add (t, s, gw, rec->conn, message, client_id, msg_id, qms_strn (g->id, MSG_ID_CHARS), now)) {
            self->m.held++;
            continue;
        }
        if (t && t->draining)
            t->stored_gen++;    /* the drain fetches once more before it ends */
        if (store_copy (self, qms_strn (g->id, MSG_ID_CHARS), uid, s->id, s->name, s->pubkey, message, client_id,
                        mid, now, a))
            a->waiting++;
        else
            a->unreached++;
    }
    for (uint32_t i = 0; i < f.ntouched; i++) {
        uint32_t tg = f.touched [i];
        qms_rec_t out = { .type = QMS_GW_GROUP_DELIVER, .time = now };
        out.s [QMS_GDELIVER_GROUP] = qms_strn (g->id, MSG_ID_CHARS);
        out.s [QMS_GDELIVER_SENDER] = s->id;
        out.s [QMS_GDELIVER_TEXT] = message;
        out.s [QMS_GDELIVER_MSG_ID] = mid;
        out.s [QMS_GDELIVER_TARGETS] = qms_strn ((const char *) f.bufs [tg].data, f.bufs [tg].len);
        gw_emit (self, tg, &out);
    }
    fanout_free (self, &f);
    if (--a->waiting == 0) {
        gsend_ack (self, a);
        free (a);
    }
}

/*  A target's connection had closed when its gateway got the message: to
    the member's connection now, or to the store.  No ack follows. */
void
router_group_on_undelivered (router_t *self, const qms_rec_t *rec)
{
    qms_str_t gid = rec->s [QMS_GUNDELIVERED_GROUP], target = rec->s [QMS_GUNDELIVERED_RECIPIENT],
              sender_id = rec->s [QMS_GUNDELIVERED_SENDER], message = rec->s [QMS_GUNDELIVERED_TEXT],
              msg_id = rec->s [QMS_GUNDELIVERED_MSG_ID];
    if (gid.len != MSG_ID_CHARS || target.len == 0 || target.len > MAX_ID_BYTES || sender_id.len == 0
    ||  sender_id.len > MAX_ID_BYTES || msg_id.len != MSG_ID_CHARS) {
        qms_warn (LOG, "event=bad_record type=RT_GROUP_UNDELIVERED");
        return;
    }
    session_t *t = find_by_id (self, target);
    if (t && t->bound && !t->draining) {
        qms_buf_t one;
        qms_buf_init (&one);
        if (qms_targets_add (&one, t->conn, t->id.ptr, t->id.len) == 0) {
            qms_rec_t out = { .type = QMS_GW_GROUP_DELIVER, .time = rec->time };
            out.s [QMS_GDELIVER_GROUP] = gid;
            out.s [QMS_GDELIVER_SENDER] = sender_id;
            out.s [QMS_GDELIVER_TEXT] = message;
            out.s [QMS_GDELIVER_MSG_ID] = msg_id;
            out.s [QMS_GDELIVER_TARGETS] = qms_strn ((const char *) one.data, one.len);
            gw_emit (self, t->gw, &out);
            self->m.delivered++;
        }
        qms_buf_free (&one);
        return;
    }
    /*  The sender's name and key as they are now: its session, or the
        groups' copy of it. */
    session_t *sender = find_by_id (self, sender_id);
    guser_t *su = sender ? NULL : guser_find (self, sender_id);
    qms_str_t name = sender ? sender->name : su ? qms_str (su->name) : qms_str (NULL),
              key = sender ? sender->pubkey : su ? qms_str (su->pubkey) : qms_str (NULL);
    if (t && t->draining)
        t->stored_gen++;
    if (!router_group_store_copy (self, gid, target, sender_id, name, key, message, qms_str (NULL), msg_id,
                                  rec->time))
        qms_warn (LOG, "event=undelivered_lost user=%.*s reason=store_busy", (int) target.len, target.ptr);
}

void
router_group_user_changed (router_t *self, qms_str_t id)
{
    if (self->groups && self->groups->loaded && guser_find (self, id)) {
        qms_info (LOG, "event=groups_reload why=admin user=%.*s", (int) id.len, id.ptr);
        groups_reload (self);
    }
}

/*  A user logged in: its groups show the key it published now. */
void
router_group_user_seen (router_t *self, qms_str_t id, qms_str_t name, qms_str_t pubkey)
{
    guser_t *u = self->groups ? guser_find (self, id) : NULL;
    if (!u)
        return;
    if (strlen (u->pubkey) != pubkey.len || memcmp (u->pubkey, pubkey.ptr, pubkey.len) != 0) {
        char *k = qms_str_dup (pubkey);
        if (k) {
            free (u->pubkey);
            u->pubkey = k;
        }
    }
    if (strlen (u->name) != name.len || memcmp (u->name, name.ptr, name.len) != 0) {
        char *n = qms_str_dup (name);
        if (n) {
            free (u->name);
            u->name = n;
        }
    }
}

/* ------------------------------------------------------------------------
    Store answers, timers, figures, life */

bool
router_group_store_reply (router_t *self, const qms_rec_t *rec)
{
    rgroups_t *G = self->groups;
    if (!G)
        return false;
    if (rec->req == G->load_req && !G->loaded) {
        if (rec->type == QMS_ST_GROUP_ROW)
            load_row (self, rec);
        else
        if (rec->type == QMS_ST_MSG_END) {
            /*  A page may end early (the store bounds its bytes too): the
                load is done only when a page comes back empty. */
            if (rec->seq > G->load_after)
                G->load_after = rec->seq;
            if (rec->num > 0)
                load_ask (self);
            else {
                G->loaded = true;
                qms_info (LOG, "event=groups_loaded groups=%zu memberships=%llu", G->count,
                          (unsigned long long) G->load_rows);
            }
        }
        else
        if (rec->type == QMS_ST_RESULT) {
            qms_warn (LOG, "event=groups_load_failed detail=\"%.*s\"", (int) rec->s [QMS_RESULT_DETAIL].len,
                      rec->s [QMS_RESULT_DETAIL].ptr);
            G->load_sent = 0;   /* asked again at the next tick */
        }
        return true;
    }
    if (rec->type != QMS_ST_GROUP_ROW && rec->type != QMS_ST_RESULT)
        return false;
    gwrite_t *w = (gwrite_t *) qms_map_find (&G->writes, qms_map_hash_u64 (self->seed, rec->req), &rec->req);
    if (!w)
        return false;
    if (rec->type == QMS_ST_GROUP_ROW) {
        row_keep (w, rec);
        return true;
    }
    if (rec->num == QMS_ST_OK)
        gwrite_apply (self, w);
    else
    if (rec->num == QMS_ST_NO_USER)
        gwrite_failed (self, w, QMS_REASON_UNKNOWN_USER, rec->s [QMS_RESULT_DETAIL]);
    else {
        qms_warn (LOG, "event=group_write_failed group=%s status=%llu detail=\"%.*s\"", w->gid,
                  (unsigned long long) rec->num, (int) rec->s [QMS_RESULT_DETAIL].len,
                  rec->s [QMS_RESULT_DETAIL].ptr);
        gwrite_failed (self, w, k_unavailable, qms_str (NULL));
    }
    gwrite_destroy (self, w);
    return true;
}

/*  Forget every group (the writes in flight stay: their answers still
    come). */
static void
groups_clear (router_t *self)
{
    rgroups_t *G = self->groups;
    /*  Listed from the map's slots first, since destroying one moves the
        others in the map. */
    size_t n = 0;
    group_t **all = (group_t **) calloc (G->by_id.count ? G->by_id.count : 1, sizeof *all);
    for (size_t i = 0; all && G->by_id.slots && i <= G->by_id.mask; i++)
        if (G->by_id.slots [i].item)
            all [n++] = (group_t *) G->by_id.slots [i].item;
    for (size_t i = 0; i < n; i++)
        group_destroy (self, all [i]);
    free (all);
}

/*  Load every group again: until it is done, group requests and messages
    are answered "unavailable", as at start. */
static void
groups_reload (router_t *self)
{
    rgroups_t *G = self->groups;
    groups_clear (self);
    G->loaded = false;
    G->load_after = G->load_rows = 0;
    qms_warn (LOG, "event=groups_reload");
    load_ask (self);
}

void
router_group_tick (router_t *self, uint64_t mono)
{
    rgroups_t *G = self->groups;
    if (!G->loaded && mono >= G->load_sent + GROUP_LOAD_RETRY_MS)
        load_ask (self);        /* from where the last page ended */
    bool reload = false;
    while (!list_empty (&G->write_list)) {
        gwrite_t *w = CONTAINER (G->write_list.next, gwrite_t, link);
        if (w->created + self->store_timeout_ms > mono)
            break;
        /*  The store may still write it (a cut link delivers what it held
            once it heals), and then the copy in memory would be behind the
            disk: the requester is told to try again, and the copy is
            loaded anew from the store. */
        qms_warn (LOG, "event=group_write_timeout group=%s op=%u", w->gid, w->op);
        gwrite_failed (self, w, k_unavailable, qms_str (NULL));
        gwrite_destroy (self, w);
        reload = true;
    }
    if (reload)
        groups_reload (self);
}

void
router_group_stats (router_t *self, qms_buf_t *out)
{
    rgroups_t *G = self->groups;
    qms_metrics_head (out, "qms_groups", "gauge", "Groups the router holds.");
    qms_metrics_value (out, "qms_groups", "actor=\"router\"", (double) G->count);
    qms_metrics_head (out, "qms_group_events_total", "counter", "Group messages sent and group changes written.");
    qms_metrics_value (out, "qms_group_events_total", "actor=\"router\",of=\"messages\"", (double) G->messages);
    qms_metrics_value (out, "qms_group_events_total", "actor=\"router\",of=\"changes\"", (double) G->changes);
}

int
router_group_init (router_t *self, int max_members, int max_per_user)
{
    rgroups_t *G = (rgroups_t *) calloc (1, sizeof *G);
    if (!G)
        return -1;
    self->groups = G;
    G->max_members = max_members > 1 ? max_members : 1024;
    G->max_per_user = max_per_user > 0 ? max_per_user : 256;
    list_init (&G->write_list);
    if (qms_map_init (&G->by_id, match_group) || qms_map_init (&G->users, match_guser)
    ||  qms_map_init (&G->writes, match_gwrite))
        return -1;
    return 0;
}

/*  Ask the store for what it holds (after the sockets are up). */
void
router_group_start (router_t *self)
{
    load_ask (self);
}

void
router_group_free (router_t *self)
{
    rgroups_t *G = self->groups;
    if (!G)
        return;
    while (!list_empty (&G->write_list))
        gwrite_destroy (self, CONTAINER (G->write_list.next, gwrite_t, link));
    groups_clear (self);
    qms_map_free (&G->by_id);
    qms_map_free (&G->users);
    qms_map_free (&G->writes);
    free (G);
    self->groups = NULL;
}

/* ------------------------------------------------------------------------
    Selftest: groups on a router_t with no sockets (router_t_* helpers of
    router_sf.c); what the calls leave in the gateways' and the store's
    buffers is read back. */

#define T_MAX 64

static void
t_load (router_t *self, const char *gid, const char *name, uint64_t epoch, const char *member, uint8_t role,
        uint64_t seq)
{
    qms_rec_t row = { .type = QMS_ST_GROUP_ROW, .req = self->groups->load_req, .num = role, .time = epoch,
                      .seq = seq };
    row.s [QMS_GROW_GROUP] = qms_str (gid);
    row.s [QMS_GROW_NAME] = qms_str (name);
    row.s [QMS_GROW_MEMBER] = qms_str (member);
    row.s [QMS_GROW_MEMBER_NAME] = qms_str (member);
    row.s [QMS_GROW_MEMBER_KEY] = qms_str ("key");
    assert (router_group_store_reply (self, &row));
}

static qms_rec_t
t_request (uint64_t conn, uint32_t op, const char *gid, const char *name, const char *members, const char *cid)
{
    qms_rec_t rec = { .type = QMS_RT_GROUP, .conn = conn, .num = op };
    rec.s [QMS_GROUP_ID] = qms_str (gid);
    rec.s [QMS_GROUP_NAME] = qms_str (name);
    rec.s [QMS_GROUP_MEMBERS] = qms_str (members);
    rec.s [QMS_GROUP_CLIENT_ID] = qms_str (cid);
    return rec;
}

/*  The one record of type in gateway gw's buffer (asserted one). */
static qms_rec_t
t_one (router_t *self, uint32_t gw, int type, qms_rec_t *all)
{
    size_t n = router_t_records (&self->gateways [gw]->out, all, T_MAX), found = 0;
    qms_rec_t one = { 0 };
    for (size_t i = 0; i < n; i++)
        if (all [i].type == type) {
            one = all [i];
            found++;
        }
    assert (found == 1);
    return one;
}

static size_t
t_count (const qms_buf_t *buf, int type)
{
    qms_rec_t all [T_MAX];
    size_t n = router_t_records (buf, all, T_MAX), found = 0;
    for (size_t i = 0; i < n; i++)
        found += all [i].type == type;
    return found;
}

static size_t
t_targets (qms_str_t targets, const char *const *ids, size_t max)
{
    size_t off = 0, n = 0;
    uint64_t conn;
    qms_str_t id;
    while (qms_targets_next (targets, &off, &conn, &id) == 1) {
        assert (n < max && router_t_str_is (id, ids [n]));
        n++;
    }
    return n;
}

/*  The error a group request got on gateway gw. */
static void
t_error (router_t *self, uint32_t gw, const char *reason)
{
    qms_rec_t all [T_MAX];
    qms_rec_t e = t_one (self, gw, QMS_GW_GROUP_ERROR, all);
    if (!router_t_str_is (e.s [QMS_GERR_REASON], reason))
        fprintf (stderr, "\nexpected %s, got %.*s\n", reason, (int) e.s [QMS_GERR_REASON].len, e.s [QMS_GERR_REASON].ptr);
    assert (router_t_str_is (e.s [QMS_GERR_REASON], reason));
    router_t_reset (self);
}

/*  The store's answer to the write in flight: rows for members named (create,
    add), then status. */
static void
t_answer_write (router_t *self, uint64_t status, const char *const *rows, int nrows, uint64_t first_seq)
{
    qms_rec_t all [T_MAX];
    size_t n = router_t_records (&self->backend_out, all, T_MAX);
    assert (n == 1 && all [0].type == QMS_ST_GROUP_WRITE);
    uint64_t req = all [0].req;
    char gid [MSG_ID_CHARS + 1];
    assert (qms_str_copy (all [0].s [QMS_GWRITE_GROUP], gid, sizeof gid));
    router_t_reset (self);
    for (int i = 0; i < nrows; i++) {
        qms_rec_t row = { .type = QMS_ST_GROUP_ROW, .req = req, .seq = first_seq + (uint64_t) i, .time = 1 };
        row.s [QMS_GROW_GROUP] = qms_str (gid);
        row.s [QMS_GROW_MEMBER] = qms_str (rows [i]);
        row.s [QMS_GROW_MEMBER_NAME] = qms_str (rows [i]);
        row.s [QMS_GROW_MEMBER_KEY] = qms_str ("key");
        assert (router_group_store_reply (self, &row));
    }
    qms_rec_t result = { .type = QMS_ST_RESULT, .req = req, .num = status };
    assert (router_group_store_reply (self, &result));
}

static void
t_message (router_t *self, session_t *s, const char *gid, const char *text, const char *cid)
{
    qms_rec_t rec = { .type = QMS_RT_GROUP_MESSAGE, .conn = s->conn };
    rec.s [QMS_GMSG_GROUP] = qms_str (gid);
    rec.s [QMS_GMSG_TEXT] = qms_str (text);
    rec.s [QMS_GMSG_CLIENT_ID] = qms_str (cid);
    router_group_on_message (self, s, s->gw, &rec, 1000);
}

void
router_group_test (bool verbose)
{
    if (verbose)
        printf (" * router_group: ");
    router_t *self = router_t_router_new ();
    assert (router_group_init (self, 4, 2) == 0);
    rgroups_t *G = self->groups;
    /*  alice and bob on gateway 0, carol and dave on gateway 1, erin
        offline. */
    session_t *alice = router_t_session (self, "alice", 0, 1), *bob = router_t_session (self, "bob", 0, 2),
              *carol = router_t_session (self, "carol", 1, 3), *dave = router_t_session (self, "dave", 1, 4),
              *erin = router_t_session (self, "erin", 0, 0);
    session_t *all_s [] = { alice, bob, carol, dave, erin };
    qms_rec_t all [T_MAX], r;
    size_t n;
    const char *G1 = "GGGGGGGGGGGGGGG1";

    /*  Before the groups are loaded, every request is "unavailable". */
    router_group_start (self);
    assert (t_count (&self->backend_out, QMS_ST_GROUP_LOAD) == 1);
    router_t_reset (self);
    r = t_request (1, QMS_GROUP_OP_LIST, "", "", "", "l1");
    router_group_on_request (self, alice, 0, &r);
    t_error (self, 0, k_unavailable);
    t_message (self, alice, G1, "hi", "m0");
    t_error (self, 0, k_unavailable);

    /*  The load: one group, alice owner, carol admin, bob and erin members,
        given out of order across the page. */
    t_load (self, G1, "one", 3, "carol", QMS_GROUP_ROLE_ADMIN, 2);
    t_load (self, G1, "one", 3, "alice", QMS_GROUP_ROLE_OWNER, 1);
    t_load (self, G1, "one", 3, "erin", QMS_GROUP_ROLE_MEMBER, 4);
    t_load (self, G1, "one", 3, "bob", QMS_GROUP_ROLE_MEMBER, 3);
    qms_rec_t end = { .type = QMS_ST_MSG_END, .req = G->load_req, .num = 4, .seq = 4 };
    assert (router_group_store_reply (self, &end));
    assert (!G->loaded);                /* a page with rows: ask for the next */
    n = router_t_records (&self->backend_out, all, T_MAX);
    assert (n == 1 && all [0].type == QMS_ST_GROUP_LOAD && all [0].seq == 4);
    router_t_reset (self);
    end.req = G->load_req;
    end.num = 0;
    assert (router_group_store_reply (self, &end));
    assert (G->loaded && G->count == 1);
    group_t *g = group_find (self, qms_str (G1));
    assert (g && g->n == 4 && strcmp (g->m [0].u->id, "alice") == 0 && strcmp (g->m [3].u->id, "erin") == 0);

    /*  A message: one GW_GROUP_DELIVER per gateway with its targets (bob on
        0; carol on 1), erin's copy stored, one ack once it is. */
    t_message (self, alice, G1, "hello", "m1");
    qms_rec_t d0 = t_one (self, 0, QMS_GW_GROUP_DELIVER, all);
    const char *t0 [] = { "bob" };
    assert (t_targets (d0.s [QMS_GDELIVER_TARGETS], t0, 1) == 1);
    assert (router_t_str_is (d0.s [QMS_GDELIVER_TEXT], "hello") && router_t_str_is (d0.s [QMS_GDELIVER_GROUP], G1));
    assert (t_count (&self->gateways [0]->out, QMS_GW_GROUP_ACK) == 0);     /* waits for the store */
    qms_rec_t d1 = t_one (self, 1, QMS_GW_GROUP_DELIVER, all);
    const char *t1 [] = { "carol" };
    assert (t_targets (d1.s [QMS_GDELIVER_TARGETS], t1, 1) == 1);
    n = router_t_records (&self->backend_out, all, T_MAX);
    assert (n == 1 && all [0].type == QMS_ST_GROUP_MSG_STORE);
    assert (router_t_str_is (all [0].s [QMS_STORE_RECIPIENT], "erin") && router_t_str_is (all [0].s [QMS_STORE_GROUP], G1));
    qms_rec_t stored = { .type = QMS_ST_RESULT, .req = all [0].req, .num = QMS_ST_OK };
    router_t_reset (self);
    assert (router_sf_msgreq_reply (self, &stored));
    r = t_one (self, 0, QMS_GW_GROUP_ACK, all);
    assert (r.num == QMS_ACK_STORED && r.seq == 3 && r.conn == 1 && router_t_str_is (r.s [QMS_GACK_CLIENT_ID], "m1"));
    router_t_reset (self);

    /*  The retry of m1: the same answer, nothing sent again. */
    t_message (self, alice, G1, "hello", "m1");
    r = t_one (self, 0, QMS_GW_GROUP_ACK, all);
    assert (r.num == QMS_ACK_STORED && r.seq == 3);
    assert (t_count (&self->gateways [0]->out, QMS_GW_GROUP_DELIVER) == 0);
    assert (self->backend_out.len == 0 && self->gateways [1]->out.len == 0);
    router_t_reset (self);

    /*  Not a member: the group is unknown to dave, for requests and messages. */
    r = t_request (4, QMS_GROUP_OP_RENAME, G1, "x", "", "");
    router_group_on_request (self, dave, 1, &r);
    t_error (self, 1, QMS_REASON_UNKNOWN_GROUP);
    t_message (self, dave, G1, "let me in", "");
    t_error (self, 1, QMS_REASON_UNKNOWN_GROUP);
    /*  A member may not add; an admin may not remove the owner or promote. */
    r = t_request (2, QMS_GROUP_OP_ADD, G1, "", "dave", "");
    router_group_on_request (self, bob, 0, &r);
    t_error (self, 0, QMS_REASON_NOT_ALLOWED);
    r = t_request (3, QMS_GROUP_OP_REMOVE, G1, "", "alice", "");
    router_group_on_request (self, carol, 1, &r);
    t_error (self, 1, QMS_REASON_OWNER_ONLY);
    r = t_request (3, QMS_GROUP_OP_PROMOTE, G1, "", "bob", "");
    router_group_on_request (self, carol, 1, &r);
    t_error (self, 1, QMS_REASON_OWNER_ONLY);
    /*  Limits: 4 members at most, so dave cannot come in; nobody named is new. */
    r = t_request (1, QMS_GROUP_OP_ADD, G1, "", "dave", "");
    router_group_on_request (self, alice, 0, &r);
    t_error (self, 0, QMS_REASON_GROUP_FULL);
    r = t_request (1, QMS_GROUP_OP_ADD, G1, "", "bob\ncarol", "");
    router_group_on_request (self, alice, 0, &r);
    t_error (self, 0, QMS_REASON_NO_CHANGE);
    r = t_request (1, QMS_GROUP_OP_REMOVE, G1, "", "dave", "");
    router_group_on_request (self, alice, 0, &r);
    t_error (self, 0, QMS_REASON_NOT_MEMBER);

    /*  Remove bob: the write goes first, the group is busy meanwhile, and
        only the store's OK changes anything. */
    r = t_request (1, QMS_GROUP_OP_REMOVE, G1, "", "bob", "rm");
    router_group_on_request (self, alice, 0, &r);
    assert (self->gateways [0]->out.len == 0);
    n = router_t_records (&self->backend_out, all, T_MAX);
    assert (n == 1 && all [0].num == QMS_GROUP_OP_REMOVE && all [0].seq == 4
            && router_t_str_is (all [0].s [QMS_GWRITE_MEMBERS], "bob\t0\n"));
    qms_buf_t keep;
    qms_buf_init (&keep);
    assert (qms_buf_append (&keep, self->backend_out.data, self->backend_out.len) == 0);
    router_t_reset (self);
    r = t_request (3, QMS_GROUP_OP_RENAME, G1, "two", "", "");
    router_group_on_request (self, carol, 1, &r);
    t_error (self, 1, QMS_REASON_GROUP_BUSY);
    assert (g->n == 4);
    assert (qms_buf_append (&self->backend_out, keep.data, keep.len) == 0);
    qms_buf_free (&keep);
    t_answer_write (self, QMS_ST_OK, NULL, 0, 0);
    assert (g->n == 3 && g->epoch == 4 && !g->busy);
    /*  Gateway 0: bob's copy says he is gone; alice's (the requester's,
        with her id) lists the members.  Gateway 1: carol's. */
    n = router_t_records (&self->gateways [0]->out, all, T_MAX);
    assert (n == 2);
    assert (all [0].type == QMS_GW_GROUP && (all [0].num & QMS_GROUP_GONE) && all [0].conn == 0);
    const char *tb [] = { "bob" };
    assert (t_targets (all [0].s [QMS_GINFO_TARGETS], tb, 1) == 1 && all [0].s [QMS_GINFO_MEMBERS].len == 0);
    assert (all [1].type == QMS_GW_GROUP && !(all [1].num & QMS_GROUP_GONE) && all [1].conn == 1
            && router_t_str_is (all [1].s [QMS_GINFO_CLIENT_ID], "rm") && all [1].s [QMS_GINFO_TARGETS].len == 0);
    {
        const char *ids [] = { "alice", "carol", "erin" };
        const unsigned roles [] = { QMS_GROUP_ROLE_OWNER, QMS_GROUP_ROLE_ADMIN, QMS_GROUP_ROLE_MEMBER };
        size_t off = 0;
        qms_member_t m;
        for (int i = 0; i < 3; i++) {
            assert (qms_members_next (all [1].s [QMS_GINFO_MEMBERS], &off, &m) == 1);
            assert (router_t_str_is (m.id, ids [i]) && router_t_str_is (m.name, ids [i]) && m.role == roles [i]
                    && router_t_str_is (m.key, "key"));
        }
        assert (qms_members_next (all [1].s [QMS_GINFO_MEMBERS], &off, &m) == 0);
    }
    r = t_one (self, 1, QMS_GW_GROUP, all);
    assert (t_targets (r.s [QMS_GINFO_TARGETS], t1, 1) == 1 && r.seq == 4);
    router_t_reset (self);
    /*  Nothing sent after the removal reaches bob, live or stored. */
    t_message (self, carol, G1, "after", "");
    assert (t_count (&self->gateways [0]->out, QMS_GW_GROUP_DELIVER) == 1);
    r = t_one (self, 0, QMS_GW_GROUP_DELIVER, all);
    const char *ta [] = { "alice" };
    assert (t_targets (r.s [QMS_GDELIVER_TARGETS], ta, 1) == 1);
    n = router_t_records (&self->backend_out, all, T_MAX);
    assert (n == 1 && router_t_str_is (all [0].s [QMS_STORE_RECIPIENT], "erin"));
    stored.req = all [0].req;
    router_t_reset (self);
    assert (router_sf_msgreq_reply (self, &stored));
    assert (self->gateways [1]->out.len == 0);      /* no id, no ack */

    /*  A member who left with the owner: the longest-standing admin (carol)
        takes over, in the write and in memory. */
    r = t_request (1, QMS_GROUP_OP_LEAVE, G1, "", "", "bye");
    router_group_on_request (self, alice, 0, &r);
    n = router_t_records (&self->backend_out, all, T_MAX);
    assert (n == 1 && router_t_str_is (all [0].s [QMS_GWRITE_OWNER], "carol"));
    t_answer_write (self, QMS_ST_OK, NULL, 0, 0);
    assert (g->n == 2 && strcmp (group_owner (g)->id, "carol") == 0);
    r = t_one (self, 0, QMS_GW_GROUP, all);         /* alice: gone, with her id */
    assert ((r.num & QMS_GROUP_GONE) && r.conn == 1 && router_t_str_is (r.s [QMS_GINFO_CLIENT_ID], "bye"));
    router_t_reset (self);

    /*  Create: a new id, the creator the owner; the members' names come
        from the store.  Groups per user: 2 at most, so carol (in G1 and
        the new one) cannot be in a third. */
    r = t_request (4, QMS_GROUP_OP_CREATE, "", "new", "carol\ndave\ndave", "c1");
    router_group_on_request (self, dave, 1, &r);
    n = router_t_records (&self->backend_out, all, T_MAX);
    assert (n == 1 && all [0].num == QMS_GROUP_OP_CREATE && all [0].seq == 1
            && router_t_str_is (all [0].s [QMS_GWRITE_MEMBERS], "dave\t2\ncarol\t0\n"));
    const char *rows [] = { "dave", "carol" };
    t_answer_write (self, QMS_ST_OK, rows, 2, 10);
    assert (G->count == 2);
    r = t_one (self, 1, QMS_GW_GROUP, all);
    assert (r.conn == 4 && router_t_str_is (r.s [QMS_GINFO_CLIENT_ID], "c1") && r.seq == 1
            && router_t_str_is (r.s [QMS_GINFO_OWNER], "dave"));
    router_t_reset (self);
    r = t_request (1, QMS_GROUP_OP_CREATE, "", "third", "carol", "");
    router_group_on_request (self, alice, 0, &r);
    t_error (self, 0, QMS_REASON_TOO_MANY_GROUPS);
    /*  A create naming a user the store does not know: nothing in memory. */
    r = t_request (1, QMS_GROUP_OP_CREATE, "", "ghost", "nobody", "");
    router_group_on_request (self, alice, 0, &r);
    qms_rec_t nouser = { .type = QMS_ST_RESULT, .num = QMS_ST_NO_USER };
    nouser.s [QMS_RESULT_DETAIL] = qms_str ("nobody");
    n = router_t_records (&self->backend_out, all, T_MAX);
    nouser.req = all [0].req;
    router_t_reset (self);
    assert (router_group_store_reply (self, &nouser));
    t_error (self, 0, QMS_REASON_UNKNOWN_USER);
    assert (G->count == 2);

    /*  The list: dave's one group, with its members. */
    r = t_request (4, QMS_GROUP_OP_LIST, "", "", "", "l2");
    router_group_on_request (self, dave, 1, &r);
    n = router_t_records (&self->gateways [1]->out, all, T_MAX);
    assert (n == 2 && all [0].type == QMS_GW_GROUPS && all [0].num == 1 && all [1].type == QMS_GW_GROUP
            && router_t_str_is (all [1].s [QMS_GINFO_NAME], "new"));
    router_t_reset (self);

    /*  A list in parts: carol is in two groups; with parts of one group, the
        first part says more follow and waits for its GW_SYNC's answer. */
    s_list_part_bytes = 1;
    r = t_request (3, QMS_GROUP_OP_LIST, "", "", "", "lp");
    router_group_on_request (self, carol, 1, &r);
    n = router_t_records (&self->gateways [1]->out, all, T_MAX);
    assert (n == 3 && all [0].type == QMS_GW_GROUPS && all [0].num == (1 | QMS_GROUPS_MORE)
            && router_t_str_is (all [0].s [QMS_GLIST_CLIENT_ID], "lp") && all [1].type == QMS_GW_GROUP
            && all [2].type == QMS_GW_SYNC && all [2].conn == 3);
    uint64_t sync = all [2].req;
    router_t_reset (self);
    assert (!router_group_on_synced (self, carol, sync + 1000));
    assert (router_group_on_synced (self, carol, sync));
    n = router_t_records (&self->gateways [1]->out, all, T_MAX);
    assert (n == 2 && all [0].type == QMS_GW_GROUPS && all [0].num == 1 && all [1].type == QMS_GW_GROUP);
    assert (carol->listing == NULL);
    router_t_reset (self);
    /*  One left half-sent is freed with the session. */
    router_group_on_request (self, carol, 1, &r);
    assert (carol->listing != NULL);
    router_t_reset (self);
    s_list_part_bytes = 256u * 1024;

    /*  A write the store does not answer in time: the requester hears
        "unavailable", and every group is loaded anew (the store may write
        it yet), requests answered "unavailable" meanwhile. */
    r = t_request (4, QMS_GROUP_OP_RENAME, "", "renamed", "", "t1");
    {
        guser_t *du = guser_find (self, dave->id);
        assert (du && du->ngroups == 1);
        r.s [QMS_GROUP_ID] = qms_strn (du->groups [0]->id, MSG_ID_CHARS);
    }
    router_group_on_request (self, dave, 1, &r);
    assert (t_count (&self->backend_out, QMS_ST_GROUP_WRITE) == 1);
    router_t_reset (self);
    router_group_tick (self, qms_mono_ms () + self->store_timeout_ms + 1);
    n = router_t_records (&self->backend_out, all, T_MAX);
    assert (n == 1 && all [0].type == QMS_ST_GROUP_LOAD && all [0].seq == 0);
    t_error (self, 1, k_unavailable);
    assert (!G->loaded && G->count == 0);
    r = t_request (4, QMS_GROUP_OP_LIST, "", "", "", "l3");
    router_group_on_request (self, dave, 1, &r);
    t_error (self, 1, k_unavailable);

    router_t_router_destroy (self, all_s, 5);
    if (verbose)
        printf ("OK\n");
}
