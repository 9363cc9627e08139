/*  qms_msg.c - encoding and decoding of the actor messages (see qms_msg.h).

    One schema table drives one encoder and one decoder, so adding a message
    type is one line here and, in the header, one enum value and the names of
    its strings; the selftest round-trips every type.
*/
#include "qms_msg.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

enum { F_CONN = 1, F_REQ = 2, F_NUM = 4, F_TIME = 8, F_SEQ = 16 };
#define INT_FIELDS 5

typedef struct {
    const char *name;
    uint8_t fields;         /* F_* bits */
    uint8_t strings;        /* how many of s[] are carried */
    uint8_t from, to;       /* QMS_ROLE_* bits: who sends it, who accepts it */
    const char *layout;     /* the fields, for docs/ARCHITECTURE.md */
    const char *meaning;
} schema_t;

/*  The table every encoder, decoder, validator and document reads.  Its
    rows become the record table of docs/ARCHITECTURE.md (qms_msg_print_table;
    ctest "architecture_doc" fails when the document is stale). */
static const schema_t qms_schema [QMS_TYPE_COUNT] = {
    [QMS_NONE] = { "NONE", 0, 0, 0, 0, "", "" },
    [QMS_AUTH_LOGIN] = { "AUTH_LOGIN", F_CONN | F_NUM, 4,
        QMS_ROLE_GATEWAY, QMS_ROLE_AUTH,
        "conn, num flags (1 = register), s0 name, s1 password, s2 pubkey, s3 peer address",
        "register or log in" },
    [QMS_AUTH_OK] = { "AUTH_OK", F_CONN, 4,
        QMS_ROLE_AUTH, QMS_ROLE_GATEWAY,
        "conn, s0 user id, s1 name as registered, s2 token, s3 pubkey",
        "credentials good, session stored" },
    [QMS_AUTH_FAIL] = { "AUTH_FAIL", F_CONN, 1,
        QMS_ROLE_AUTH, QMS_ROLE_GATEWAY,
        "conn, s0 error text",
        "answer the client with LoginEvent valid:false" },
    [QMS_ST_USER_GET] = { "ST_USER_GET", F_REQ, 1,
        QMS_ROLE_AUTH, QMS_ROLE_STORE,
        "req, s0 name key",
        "look a user up by case-folded name" },
    [QMS_ST_USER] = { "ST_USER", F_REQ | F_NUM, 4,
        QMS_ROLE_STORE, QMS_ROLE_AUTH | QMS_ROLE_ROUTER,
        "req, num found, s0 id, s1 name, s2 password PHC (empty for ST_USER_FIND), s3 pubkey",
        "the answer to ST_USER_GET and ST_USER_FIND" },
    [QMS_ST_USER_CREATE] = { "ST_USER_CREATE", F_REQ, 4,
        QMS_ROLE_AUTH, QMS_ROLE_STORE,
        "req, s0 id, s1 name, s2 name key, s3 PHC",
        "create; ST_RESULT EXISTS if the key is taken, SIMILAR if the name looks like a taken one" },
    [QMS_ST_USER_REHASH] = { "ST_USER_REHASH", F_REQ, 2,
        QMS_ROLE_AUTH, QMS_ROLE_STORE,
        "req, s0 id, s1 PHC",
        "store a stronger hash after a login" },
    [QMS_ST_SESSION_START] = { "ST_SESSION_START", F_REQ | F_TIME, 3,
        QMS_ROLE_AUTH, QMS_ROLE_STORE,
        "req, time now, s0 user id, s1 token hash, s2 pubkey",
        "replace the user's one session; record the pubkey" },
    [QMS_ST_SESSION_GET] = { "ST_SESSION_GET", F_REQ, 1,
        QMS_ROLE_ROUTER, QMS_ROLE_STORE,
        "req, s0 token hash",
        "find a session not in memory" },
    [QMS_ST_SESSION] = { "ST_SESSION", F_REQ | F_NUM | F_TIME, 3,
        QMS_ROLE_STORE, QMS_ROLE_ROUTER,
        "req, num found, time last activity, s0 user id, s1 name, s2 pubkey",
        "the answer" },
    [QMS_ST_SESSION_DEL] = { "ST_SESSION_DEL", F_REQ, 2,
        QMS_ROLE_ROUTER, QMS_ROLE_STORE,
        "req, s0 user id, s1 token hash (empty = any)",
        "logout or expiry" },
    [QMS_ST_SESSION_TOUCH] = { "ST_SESSION_TOUCH", F_REQ | F_TIME, 1,
        QMS_ROLE_ROUTER, QMS_ROLE_STORE,
        "req, time last activity, s0 user id",
        "persist activity (batched, not per message)" },
    [QMS_ST_RESULT] = { "ST_RESULT", F_REQ | F_NUM, 1,
        QMS_ROLE_STORE, QMS_ROLE_AUTH | QMS_ROLE_ROUTER,
        "req, num status (QMS_ST_*), s0 detail",
        "the answer to a write" },
    [QMS_RT_HELLO] = { "RT_HELLO", F_NUM, 1,
        QMS_ROLE_GATEWAY, QMS_ROLE_ROUTER,
        "num instance nonce, s0 gateway name",
        "heartbeat every second; a gateway (re)appears" },
    [QMS_RT_ONLINE] = { "RT_ONLINE", F_CONN | F_NUM, 4,
        QMS_ROLE_GATEWAY, QMS_ROLE_ROUTER,
        "conn, num session flags, s0 user id, s1 name, s2 pubkey, s3 token hash",
        "after AUTH_OK: bind conn to the new session" },
    [QMS_RT_AUTHORIZE] = { "RT_AUTHORIZE", F_CONN | F_NUM, 1,
        QMS_ROLE_GATEWAY, QMS_ROLE_ROUTER,
        "conn, num session flags, s0 token hash",
        "resume a session on this connection (silent flag: re-announced after a router restart)" },
    [QMS_RT_LOGOUT] = { "RT_LOGOUT", F_CONN, 1,
        QMS_ROLE_GATEWAY, QMS_ROLE_ROUTER,
        "conn, s0 token hash",
        "end the session" },
    [QMS_RT_MESSAGE] = { "RT_MESSAGE", F_CONN, 4,
        QMS_ROLE_GATEWAY, QMS_ROLE_ROUTER,
        "conn, s0 target id, s1 message, s2 token hash or empty, s3 client's message id",
        "a direct message; empty s2: the token bound to conn (fast path)" },
    [QMS_RT_CLOSED] = { "RT_CLOSED", F_CONN, 0,
        QMS_ROLE_GATEWAY, QMS_ROLE_ROUTER,
        "conn",
        "the connection is gone" },
    [QMS_GW_BOUND] = { "GW_BOUND", F_CONN | F_NUM, 2,
        QMS_ROLE_ROUTER, QMS_ROLE_GATEWAY,
        "conn, num kind (0 login, 1 authorize, 2 silent), s0 user id, s1 name",
        "conn now belongs to the user: answer the request" },
    [QMS_GW_INVALID] = { "GW_INVALID", F_CONN | F_NUM, 0,
        QMS_ROLE_ROUTER, QMS_ROLE_GATEWAY,
        "conn, num 1 = also drop conn's binding",
        "send InvalidUserEvent" },
    [QMS_GW_KICK] = { "GW_KICK", F_CONN | F_NUM, 1,
        QMS_ROLE_ROUTER, QMS_ROLE_GATEWAY,
        "conn, num close code, s0 reason",
        "close the connection" },
    [QMS_GW_UNBIND] = { "GW_UNBIND", F_CONN, 0,
        QMS_ROLE_ROUTER, QMS_ROLE_GATEWAY,
        "conn",
        "the session ended (logout)" },
    [QMS_GW_DELIVER] = { "GW_DELIVER", F_CONN | F_TIME, 4,
        QMS_ROLE_ROUTER, QMS_ROLE_GATEWAY,
        "conn (target), time sent, s0 sender id, s1 message, s2 message id, s3 recipient id",
        "write a MessageEvent (connection closed: RT_UNDELIVERED)" },
    [QMS_GW_USERS] = { "GW_USERS", F_NUM, 0,
        QMS_ROLE_ROUTER, QMS_ROLE_GATEWAY,
        "num count; count GW_USER records follow in the same batch",
        "the whole online list, to a gateway new to the router" },
    [QMS_GW_USER] = { "GW_USER", 0, 3,
        QMS_ROLE_ROUTER, QMS_ROLE_GATEWAY,
        "s0 id, s1 name, s2 pubkey",
        "one user of GW_USERS" },
    [QMS_GW_ERROR] = { "GW_ERROR", F_CONN | F_NUM, 1,
        QMS_ROLE_ROUTER, QMS_ROLE_GATEWAY,
        "conn, num the type of the request that failed (RT_ONLINE, RT_AUTHORIZE, RT_MESSAGE), s0 reason key (QMS_REASON_*)",
        "an error for the client; the gateway chooses event and text" },
    [QMS_RT_RECEIPT] = { "RT_RECEIPT", F_CONN, 2,
        QMS_ROLE_GATEWAY, QMS_ROLE_ROUTER,
        "conn, s0 token hash or empty, s1 message id",
        "the client confirms a message" },
    [QMS_RT_SYNCED] = { "RT_SYNCED", F_CONN | F_REQ, 0,
        QMS_ROLE_GATEWAY, QMS_ROLE_ROUTER,
        "conn, req",
        "what was queued before GW_SYNC req has been written" },
    [QMS_GW_DELIVER_STORED] = { "GW_DELIVER_STORED", F_CONN | F_TIME, 5,
        QMS_ROLE_ROUTER, QMS_ROLE_GATEWAY,
        "conn, time, s0 sender id, s1 message, s2 message id, s3 sender name, s4 sender key",
        "a message that waited in the store" },
    [QMS_GW_ACK] = { "GW_ACK", F_CONN | F_NUM | F_TIME, 3,
        QMS_ROLE_ROUTER, QMS_ROLE_GATEWAY,
        "conn (sender), num status (QMS_ACK_*), time, s0 client id, s1 message id, s2 reason code",
        "MessageAckEvent" },
    [QMS_GW_SYNC] = { "GW_SYNC", F_CONN | F_REQ, 0,
        QMS_ROLE_ROUTER, QMS_ROLE_GATEWAY,
        "conn, req",
        "answer RT_SYNCED once conn's queue is written" },
    [QMS_ST_MSG_STORE] = { "ST_MSG_STORE", F_REQ | F_TIME, 7,
        QMS_ROLE_ROUTER, QMS_ROLE_STORE,
        "req, time, s0 id, s1 recipient, s2 sender id, s3 sender name, s4 sender key, s5 message, s6 client id",
        "store for an offline recipient; ST_RESULT OK, EXISTS (s0 the id stored before), QUOTA or NO_USER" },
    [QMS_ST_MSG_FETCH] = { "ST_MSG_FETCH", F_REQ | F_NUM | F_SEQ, 1,
        QMS_ROLE_ROUTER, QMS_ROLE_STORE,
        "req, num limit, seq after, s0 recipient",
        "a page of stored messages (it also ends past QMS_FETCH_PAGE_BYTES of text)" },
    [QMS_ST_MSG] = { "ST_MSG", F_REQ | F_TIME | F_SEQ, 6,
        QMS_ROLE_STORE, QMS_ROLE_ROUTER,
        "req, seq, time, s0 id, s1 sender id, s2 sender name, s3 sender key, s4 message, s5 client id",
        "one message of the page" },
    [QMS_ST_MSG_END] = { "ST_MSG_END", F_REQ | F_NUM | F_SEQ, 0,
        QMS_ROLE_STORE, QMS_ROLE_ROUTER,
        "req, num count, seq last",
        "the page ends" },
    [QMS_ST_MSG_DEL] = { "ST_MSG_DEL", F_REQ, 2,
        QMS_ROLE_ROUTER, QMS_ROLE_STORE,
        "req, s0 recipient, s1 id",
        "a receipt for a stored message; answered with ST_MSG_DELETED" },
    [QMS_ST_MSG_DELETED] = { "ST_MSG_DELETED", F_REQ | F_NUM, 4,
        QMS_ROLE_STORE, QMS_ROLE_ROUTER,
        "req, num found, s0 id, s1 sender id, s2 client id, s3 group id (empty: a direct message)",
        "the answer" },
    [QMS_ST_MSG_DEL_UPTO] = { "ST_MSG_DEL_UPTO", F_REQ | F_SEQ, 1,
        QMS_ROLE_ROUTER, QMS_ROLE_STORE,
        "req 0, seq, s0 recipient",
        "a page written to a client without receipts" },
    [QMS_GW_WELCOME] = { "GW_WELCOME", F_REQ | F_NUM, 0,
        QMS_ROLE_ROUTER, QMS_ROLE_GATEWAY,
        "num router nonce, req 1 = the router holds none of the gateway's connections",
        "the answer to every RT_HELLO; req 1 makes the gateway announce its bound connections again" },
    [QMS_AUTH_PING] = { "AUTH_PING", 0, 0,
        QMS_ROLE_GATEWAY, QMS_ROLE_AUTH,
        "(none)",
        "heartbeat every second" },
    [QMS_AUTH_PONG] = { "AUTH_PONG", F_NUM, 0,
        QMS_ROLE_AUTH, QMS_ROLE_GATEWAY,
        "num auth nonce",
        "while auth is silent, logins are answered \"Service temporarily unavailable.\" at once" },
    [QMS_GW_JOIN] = { "GW_JOIN", 0, 3,
        QMS_ROLE_ROUTER, QMS_ROLE_GATEWAY,
        "s0 id, s1 name, s2 pubkey",
        "a user came online (every gateway keeps the list)" },
    [QMS_GW_LEAVE] = { "GW_LEAVE", 0, 1,
        QMS_ROLE_ROUTER, QMS_ROLE_GATEWAY,
        "s0 id",
        "a user went offline" },
    [QMS_RT_LOOKUP] = { "RT_LOOKUP", F_CONN, 2,
        QMS_ROLE_GATEWAY, QMS_ROLE_ROUTER,
        "conn, s0 token hash or empty, s1 name",
        "UserLookupRequest" },
    [QMS_GW_LOOKUP] = { "GW_LOOKUP", F_CONN | F_REQ | F_NUM, 4,
        QMS_ROLE_ROUTER, QMS_ROLE_GATEWAY,
        "conn, num found, req 1 = online, s0 id, s1 name, s2 pubkey, s3 the name asked",
        "the answer" },
    [QMS_ST_USER_FIND] = { "ST_USER_FIND", F_REQ, 1,
        QMS_ROLE_ROUTER, QMS_ROLE_STORE,
        "req, s0 name key",
        "a user by name without the password hash (answered with ST_USER)" },
    [QMS_ST_ADMIN] = { "ST_ADMIN", F_REQ | F_NUM, 2,
        QMS_ROLE_ADMIN, QMS_ROLE_STORE,
        "req, num op (QMS_ADMIN_*), s0, s1 the op's arguments",
        "an administration command (docs/ADMIN.md)" },
    [QMS_ST_ADMIN_ROW] = { "ST_ADMIN_ROW", F_REQ | F_NUM | F_TIME, 4,
        QMS_ROLE_STORE, QMS_ROLE_ADMIN,
        "req, num, time, s0..s3",
        "one row of the answer" },
    [QMS_ADMIN_DONE] = { "ADMIN_DONE", F_REQ | F_NUM, 1,
        QMS_ROLE_STORE | QMS_ROLE_ROUTER, QMS_ROLE_ADMIN,
        "req, num status (QMS_ST_*), s0 detail",
        "the end of an administration answer" },
    [QMS_RT_KICK_USER] = { "RT_KICK_USER", F_REQ, 2,
        QMS_ROLE_ADMIN, QMS_ROLE_ROUTER,
        "req, s0 user id, s1 reason",
        "end a session in memory and close its connection (4001)" },
    [QMS_STATS_GET] = { "STATS_GET", F_REQ, 0,
        QMS_ROLE_GATEWAY | QMS_ROLE_OPS, QMS_ROLE_AUTH | QMS_ROLE_ROUTER | QMS_ROLE_STORE,
        "req (QMS_STATS_BRIEF: readiness only)",
        "figures for /metrics, or a readiness probe" },
    [QMS_STATS] = { "STATS", F_REQ, 1,
        QMS_ROLE_AUTH | QMS_ROLE_ROUTER | QMS_ROLE_STORE, QMS_ROLE_GATEWAY | QMS_ROLE_OPS,
        "req, s0 Prometheus text",
        "the answer" },
    [QMS_RT_UNDELIVERED] = { "RT_UNDELIVERED", F_TIME, 4,
        QMS_ROLE_GATEWAY, QMS_ROLE_ROUTER,
        "time sent, s0 recipient id, s1 sender id, s2 message, s3 message id",
        "a GW_DELIVER that found its connection closed: delivered again or stored" },
    [QMS_RT_GROUP] = { "RT_GROUP", F_CONN | F_NUM, 5,
        QMS_ROLE_GATEWAY, QMS_ROLE_ROUTER,
        "conn, num op (QMS_GROUP_OP_*), s0 token hash or empty, s1 group id, s2 name, s3 member ids (lines), s4 client's request id",
        "create, change, leave or list groups" },
    [QMS_RT_GROUP_MESSAGE] = { "RT_GROUP_MESSAGE", F_CONN, 4,
        QMS_ROLE_GATEWAY, QMS_ROLE_ROUTER,
        "conn, s0 group id, s1 message, s2 token hash or empty, s3 client's message id",
        "a message to a group" },
    [QMS_GW_GROUP] = { "GW_GROUP", F_CONN | F_NUM | F_TIME | F_SEQ, 8,
        QMS_ROLE_ROUTER, QMS_ROLE_GATEWAY,
        "conn (requester or 0), num op (plus QMS_GROUP_GONE), seq epoch, time, s0 group id, s1 name, s2 owner, s3 members (qms_members_*), s4 by, s5 members named (lines), s6 targets, s7 client's id",
        "GroupEvent to the requester and every target (one record per gateway)" },
    [QMS_GW_GROUPS] = { "GW_GROUPS", F_CONN | F_NUM, 1,
        QMS_ROLE_ROUTER, QMS_ROLE_GATEWAY,
        "conn, num count (plus QMS_GROUPS_MORE: a part, more follow), s0 client's id; count GW_GROUP records follow in the same batch",
        "GroupListEvent" },
    [QMS_GW_GROUP_DELIVER] = { "GW_GROUP_DELIVER", F_TIME, 5,
        QMS_ROLE_ROUTER, QMS_ROLE_GATEWAY,
        "time sent, s0 group id, s1 sender id, s2 message, s3 message id, s4 targets",
        "one GroupMessageEvent to every target (one record per gateway; closed: RT_GROUP_UNDELIVERED)" },
    [QMS_GW_GROUP_STORED] = { "GW_GROUP_STORED", F_CONN | F_TIME, 6,
        QMS_ROLE_ROUTER, QMS_ROLE_GATEWAY,
        "conn, time, s0 group id, s1 sender id, s2 message, s3 message id, s4 sender name, s5 sender key",
        "a group message that waited in the store" },
    [QMS_GW_GROUP_ACK] = { "GW_GROUP_ACK", F_CONN | F_NUM | F_TIME | F_SEQ, 6,
        QMS_ROLE_ROUTER, QMS_ROLE_GATEWAY,
        "conn (sender), num status (QMS_ACK_*), time, seq members, s0 client id, s1 message id, s2 reason, s3 group id, s4 member who confirmed, s5 members unreached",
        "MessageAckEvent for a group message" },
    [QMS_GW_GROUP_ERROR] = { "GW_GROUP_ERROR", F_CONN | F_NUM, 4,
        QMS_ROLE_ROUTER, QMS_ROLE_GATEWAY,
        "conn, num op, s0 reason key (QMS_REASON_*), s1 client's id, s2 detail, s3 group id",
        "a group request failed; the gateway chooses the text" },
    [QMS_RT_GROUP_UNDELIVERED] = { "RT_GROUP_UNDELIVERED", F_TIME, 5,
        QMS_ROLE_GATEWAY, QMS_ROLE_ROUTER,
        "time sent, s0 group id, s1 recipient id, s2 sender id, s3 message, s4 message id",
        "a GW_GROUP_DELIVER target whose connection had closed: delivered again or stored" },
    [QMS_ST_GROUP_MSG_STORE] = { "ST_GROUP_MSG_STORE", F_REQ | F_TIME, 8,
        QMS_ROLE_ROUTER, QMS_ROLE_STORE,
        "ST_MSG_STORE's fields, s7 group id",
        "store a group message for one offline member; answered as ST_MSG_STORE" },
    [QMS_ST_GROUP_MSG] = { "ST_GROUP_MSG", F_REQ | F_TIME | F_SEQ, 7,
        QMS_ROLE_STORE, QMS_ROLE_ROUTER,
        "ST_MSG's fields, s6 group id",
        "one group message of a page" },
    [QMS_ST_GROUP_LOAD] = { "ST_GROUP_LOAD", F_REQ | F_NUM | F_SEQ, 0,
        QMS_ROLE_ROUTER, QMS_ROLE_STORE,
        "req, num limit, seq after",
        "a page of every group's memberships (ST_GROUP_ROW records, then ST_MSG_END)" },
    [QMS_ST_GROUP_ROW] = { "ST_GROUP_ROW", F_REQ | F_NUM | F_TIME | F_SEQ, 6,
        QMS_ROLE_STORE, QMS_ROLE_ROUTER,
        "req, num role, time epoch, seq cursor, s0 group id, s1 group name, s2 owner, s3 member id, s4 member name, s5 member key",
        "one membership" },
    [QMS_ST_GROUP_WRITE] = { "ST_GROUP_WRITE", F_REQ | F_NUM | F_TIME | F_SEQ, 5,
        QMS_ROLE_ROUTER, QMS_ROLE_STORE,
        "req, num op, time, seq new epoch, s0 group id, s1 name, s2 owner, s3 members (id TAB role lines), s4 by",
        "a change of a group, one transaction; ST_GROUP_ROW per member added, then ST_RESULT" },
};

/* ------------------------------------------------------------------------ */

void
qms_buf_init (qms_buf_t *buf)
{
    buf->data = NULL;
    buf->len = buf->cap = 0;
}

void
qms_buf_free (qms_buf_t *buf)
{
    free (buf->data);
    qms_buf_init (buf);
}

void
qms_buf_reset (qms_buf_t *buf)
{
    buf->len = 0;
}

int
qms_buf_reserve (qms_buf_t *buf, size_t n)
{
    if (buf->cap - buf->len >= n)
        return 0;
    size_t cap = buf->cap ? buf->cap : 256;
    while (cap - buf->len < n) {
        if (cap > SIZE_MAX / 2)
            return -1;
        cap *= 2;
    }
    uint8_t *data = realloc (buf->data, cap);
    if (!data)
        return -1;
    buf->data = data;
    buf->cap = cap;
    return 0;
}

int
qms_buf_append (qms_buf_t *buf, const void *data, size_t n)
{
    if (qms_buf_reserve (buf, n))
        return -1;
    if (n)
        memcpy (buf->data + buf->len, data, n);
    buf->len += n;
    return 0;
}

qms_str_t
qms_str (const char *cstr)
{
    qms_str_t s = { cstr ? cstr : "", cstr ? (uint32_t) strlen (cstr) : 0 };
    return s;
}

qms_str_t
qms_strn (const char *ptr, size_t len)
{
    qms_str_t s = { ptr ? ptr : "", ptr ? (uint32_t) len : 0 };
    return s;
}

bool
qms_str_eq (qms_str_t s, const char *cstr)
{
    size_t n = strlen (cstr);
    return s.len == n && memcmp (s.ptr, cstr, n) == 0;
}

bool
qms_str_copy (qms_str_t s, char *dst, size_t size)
{
    if (s.len >= size) {
        dst [0] = 0;
        return false;
    }
    memcpy (dst, s.ptr, s.len);
    dst [s.len] = 0;
    return true;
}

char *
qms_str_dup (qms_str_t s)
{
    char *copy = malloc ((size_t) s.len + 1);
    if (copy) {
        memcpy (copy, s.ptr, s.len);
        copy [s.len] = 0;
    }
    return copy;
}

const char *
qms_type_name (int type)
{
    if (type <= QMS_NONE || type >= QMS_TYPE_COUNT)
        return "?";
    return qms_schema [type].name;
}

/* ------------------------------------------------------------------------ */

static void
put_u32 (uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p [i] = (uint8_t) (v >> (8 * i));
}

static void
put_u64 (uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p [i] = (uint8_t) (v >> (8 * i));
}

static uint32_t
get_u32 (const uint8_t *p)
{
    return (uint32_t) p [0] | (uint32_t) p [1] << 8
         | (uint32_t) p [2] << 16 | (uint32_t) p [3] << 24;
}

static uint64_t
get_u64 (const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p [i];
    return v;
}

int
qms_rec_encode (qms_buf_t *buf, const qms_rec_t *rec)
{
    if (rec->type <= QMS_NONE || rec->type >= QMS_TYPE_COUNT)
        return -1;
    const schema_t *schema = &qms_schema [rec->type];

    size_t body = 0;
    for (int bit = 0; bit < INT_FIELDS; bit++)
        if (schema->fields & (1 << bit))
            body += 8;
    for (int i = 0; i < schema->strings; i++) {
        if (rec->s [i].len > QMS_MSG_MAX_STRING)
            return -1;
        body += 4 + rec->s [i].len;
    }
    if (qms_buf_reserve (buf, 5 + body))
        return -1;

    uint8_t *p = buf->data + buf->len;
    *p++ = rec->type;
    put_u32 (p, (uint32_t) body);
    p += 4;
    if (schema->fields & F_CONN) { put_u64 (p, rec->conn); p += 8; }
    if (schema->fields & F_REQ)  { put_u64 (p, rec->req);  p += 8; }
    if (schema->fields & F_NUM)  { put_u64 (p, rec->num);  p += 8; }
    if (schema->fields & F_TIME) { put_u64 (p, rec->time); p += 8; }
    if (schema->fields & F_SEQ)  { put_u64 (p, rec->seq);  p += 8; }
    for (int i = 0; i < schema->strings; i++) {
        put_u32 (p, rec->s [i].len);
        p += 4;
        if (rec->s [i].len)
            memcpy (p, rec->s [i].ptr, rec->s [i].len);
        p += rec->s [i].len;
    }
    buf->len = (size_t) (p - buf->data);
    return 0;
}

int
qms_rec_next (const uint8_t *data, size_t size, size_t *offset, qms_rec_t *rec)
{
    /*  Field by field, not memset: this runs once per record on the hot
        path, and a block clear of the whole record (rep stos) was 40% of
        this function's time. */
    rec->type = QMS_NONE;
    rec->conn = rec->req = rec->num = rec->time = rec->seq = 0;
    for (int i = 0; i < QMS_MSG_MAX_STRINGS; i++) {
        rec->s [i].ptr = "";
        rec->s [i].len = 0;
    }
    size_t at = *offset;
    if (at == size)
        return 0;
    if (at > size || size - at < 5)
        return -1;
    uint8_t type = data [at];
    uint32_t body = get_u32 (data + at + 1);
    at += 5;
    if (body > size - at)
        return -1;
    const uint8_t *p = data + at;
    const uint8_t *end = p + body;
    *offset = at + body;

    if (type <= QMS_NONE || type >= QMS_TYPE_COUNT)
        return 1;       /* unknown to this build: skipped, rec->type is NONE */

    const schema_t *schema = &qms_schema [type];
    uint64_t *ints [INT_FIELDS] = { &rec->conn, &rec->req, &rec->num, &rec->time, &rec->seq };
    for (int bit = 0; bit < INT_FIELDS; bit++) {
        if (!(schema->fields & (1 << bit)))
            continue;
        if (end - p < 8)
            return -1;
        *ints [bit] = get_u64 (p);
        p += 8;
    }
    for (int i = 0; i < schema->strings; i++) {
        if (end - p < 4)
            return -1;
        uint32_t len = get_u32 (p);
        p += 4;
        if (len > QMS_MSG_MAX_STRING || (size_t) (end - p) < len)
            return -1;
        rec->s [i].ptr = (const char *) p;
        rec->s [i].len = len;
        p += len;
    }
    /*  A newer release may append fields: what is left is ignored, but a
        record shorter than its schema is malformed (checked above). */
    rec->type = type;
    return 1;
}

int
qms_targets_add (qms_buf_t *buf, uint64_t conn, const char *id, size_t id_len)
{
    if (id_len > 255 || qms_buf_reserve (buf, 9 + id_len) != 0)
        return -1;
    uint8_t *p = buf->data + buf->len;
    put_u64 (p, conn);
    p [8] = (uint8_t) id_len;
    if (id_len)
        memcpy (p + 9, id, id_len);
    buf->len += 9 + id_len;
    return 0;
}

int
qms_targets_next (qms_str_t targets, size_t *offset, uint64_t *conn, qms_str_t *id)
{
    size_t at = *offset;
    if (at == targets.len)
        return 0;
    if (at > targets.len || targets.len - at < 9)
        return -1;
    const uint8_t *p = (const uint8_t *) targets.ptr + at;
    size_t len = p [8];
    if (targets.len - at - 9 < len)
        return -1;
    *conn = get_u64 (p);
    id->ptr = (const char *) p + 9;
    id->len = (uint32_t) len;
    *offset = at + 9 + len;
    return 1;
}

int
qms_members_add (qms_buf_t *buf, unsigned role, qms_str_t id, qms_str_t name, qms_str_t key)
{
    if (role > 255 || id.len > 255 || name.len > 65535 || qms_buf_reserve (buf, 8 + id.len + name.len + key.len))
        return -1;
    uint8_t *p = buf->data + buf->len;
    p [0] = (uint8_t) role;
    p [1] = (uint8_t) id.len;
    p [2] = (uint8_t) (name.len & 0xff);
    p [3] = (uint8_t) (name.len >> 8);
    put_u32 (p + 4, key.len);
    p += 8;
    const qms_str_t parts [3] = { id, name, key };
    for (int i = 0; i < 3; i++) {
        if (parts [i].len)
            memcpy (p, parts [i].ptr, parts [i].len);
        p += parts [i].len;
    }
    buf->len = (size_t) (p - buf->data);
    return 0;
}

int
qms_members_next (qms_str_t members, size_t *offset, qms_member_t *member)
{
    size_t at = *offset;
    if (at == members.len)
        return 0;
    if (at > members.len || members.len - at < 8)
        return -1;
    const uint8_t *p = (const uint8_t *) members.ptr + at;
    size_t id_len = p [1], name_len = (size_t) p [2] | (size_t) p [3] << 8, key_len = get_u32 (p + 4);
    size_t left = members.len - at - 8;
    if (id_len > left || name_len > left - id_len || key_len > left - id_len - name_len)
        return -1;
    member->role = p [0];
    member->id = qms_strn ((const char *) p + 8, id_len);
    member->name = qms_strn ((const char *) p + 8 + id_len, name_len);
    member->key = qms_strn ((const char *) p + 8 + id_len + name_len, key_len);
    *offset = at + 8 + id_len + name_len + key_len;
    return 1;
}

bool
qms_batch_valid (const uint8_t *data, size_t size, qms_role_t role, qms_batch_fault_t *fault)
{
    qms_batch_fault_t spare;
    if (!fault)
        fault = &spare;
    *fault = (qms_batch_fault_t) { 0 };
    /*  The checks of qms_rec_next, without filling a record: the actors
        check each batch whole before acting on any of it, and then read it
        with qms_rec_next. */
    size_t at = 0;
    for (; at < size; fault->records++) {
        fault->offset = at;
        fault->type = QMS_NONE;
        if (size - at < 5)
            return false;
        uint8_t type = data [at];
        uint32_t body = get_u32 (data + at + 1);
        at += 5;
        if (body > size - at)
            return false;
        const uint8_t *p = data + at, *end = p + body;
        at += body;
        if (type <= QMS_NONE || type >= QMS_TYPE_COUNT)
            continue;
        const schema_t *schema = &qms_schema [type];
        fault->type = type;
        size_t ints = 0;
        for (int bit = 0; bit < INT_FIELDS; bit++)
            ints += (schema->fields & (1 << bit)) ? 8 : 0;
        if ((size_t) (end - p) < ints)
            return false;
        p += ints;
        for (int i = 0; i < schema->strings; i++) {
            if (end - p < 4)
                return false;
            uint32_t len = get_u32 (p);
            p += 4;
            if (len > QMS_MSG_MAX_STRING || (size_t) (end - p) < len)
                return false;
            p += len;
        }
        if (!(schema->to & role)) {
            fault->wrong_role = true;
            return false;
        }
    }
    return true;
}

const char *
qms_batch_fault_text (const qms_batch_fault_t *fault, char *buf, size_t size)
{
    snprintf (buf, size, "reason=%s at=%zu records=%d type=%s",
              fault->wrong_role ? "wrong_role" : "malformed", fault->offset, fault->records,
              fault->type == QMS_NONE ? "unreadable" : qms_type_name (fault->type));
    return buf;
}

unsigned
qms_type_senders (int type)
{
    return type > QMS_NONE && type < QMS_TYPE_COUNT ? qms_schema [type].from : 0;
}

unsigned
qms_type_receivers (int type)
{
    return type > QMS_NONE && type < QMS_TYPE_COUNT ? qms_schema [type].to : 0;
}

const char *
qms_role_name (qms_role_t role)
{
    switch (role) {
        case QMS_ROLE_GATEWAY: return "gateway";
        case QMS_ROLE_AUTH:    return "auth";
        case QMS_ROLE_ROUTER:  return "router";
        case QMS_ROLE_STORE:   return "store";
        case QMS_ROLE_ADMIN:   return "admin";
        case QMS_ROLE_OPS:     return "ops";
    }
    return "?";
}

static void
print_roles (FILE *out, unsigned roles)
{
    const char *sep = "";
    for (unsigned bit = 1; bit <= QMS_ROLE_OPS; bit <<= 1)
        if (roles & bit) {
            fprintf (out, "%s%s", sep, qms_role_name ((qms_role_t) bit));
            sep = ", ";
        }
}

void
qms_msg_print_table (FILE *out)
{
    fprintf (out, "| # | type | from → to | fields | meaning |\n|---|---|---|---|---|\n");
    for (int type = QMS_NONE + 1; type < QMS_TYPE_COUNT; type++) {
        const schema_t *schema = &qms_schema [type];
        fprintf (out, "| %d | `%s` | ", type, schema->name);
        print_roles (out, schema->from);
        fprintf (out, " → ");
        print_roles (out, schema->to);
        fprintf (out, " | %s | %s |\n", schema->layout, schema->meaning);
    }
}

/* ------------------------------------------------------------------------ */

#define SENT_MARKS 8

static _Thread_local void *s_sent [SENT_MARKS];
static _Thread_local int s_sent_count;      /* SENT_MARKS + 1: more than that */

void
qms_sent_mark (void *socket)
{
    for (int i = 0; i < s_sent_count && i < SENT_MARKS; i++)
        if (s_sent [i] == socket)
            return;
    if (s_sent_count < SENT_MARKS)
        s_sent [s_sent_count++] = socket;
    else
        s_sent_count = SENT_MARKS + 1;
}

int
qms_sent_take (void **out, int max)
{
    int count = s_sent_count;
    s_sent_count = 0;
    if (count > SENT_MARKS || count > max)
        return -1;
    memcpy (out, s_sent, (size_t) count * sizeof *out);
    return count;
}

int
qms_batch_send (void *socket, const void *identity, size_t identity_len,
                const qms_buf_t *batch)
{
    qms_sent_mark (socket);
    if (identity
    &&  zmq_send (socket, identity, identity_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return -1;
    if (zmq_send (socket, batch->data ? (const void *) batch->data : "",
                  batch->len, ZMQ_DONTWAIT) < 0)
        return -1;
    return 0;
}

int
qms_rec_send (void *socket, const void *identity, size_t identity_len,
              const qms_rec_t *rec)
{
    qms_buf_t buf;
    qms_buf_init (&buf);
    int rc = qms_rec_encode (&buf, rec);
    if (rc == 0)
        rc = qms_batch_send (socket, identity, identity_len, &buf);
    qms_buf_free (&buf);
    return rc;
}

/*  Throw away the rest of a multipart message. */
static void
drain_more (void *socket)
{
    int more = 1;
    size_t more_size = sizeof more;
    zmq_msg_t junk;
    zmq_msg_init (&junk);
    while (zmq_getsockopt (socket, ZMQ_RCVMORE, &more, &more_size) == 0 && more) {
        if (zmq_msg_recv (&junk, socket, 0) < 0)
            break;
    }
    zmq_msg_close (&junk);
}

int
qms_batch_recv (void *socket, uint8_t *identity, size_t *identity_len, void *body_zmq_msg)
{
    zmq_msg_t *body = (zmq_msg_t *) body_zmq_msg;
    int more = 0;
    size_t more_size = sizeof more;

    if (identity) {
        int rc = zmq_recv (socket, identity, 255, ZMQ_DONTWAIT);
        if (rc < 0)
            return errno == EAGAIN ? 0 : -1;
        *identity_len = rc > 255 ? 255 : (size_t) rc;
        zmq_getsockopt (socket, ZMQ_RCVMORE, &more, &more_size);
        if (!more)
            return -1;          /* identity with no body: ignore */
        if (zmq_msg_recv (body, socket, 0) < 0)
            return -1;
    }
    else
    if (zmq_msg_recv (body, socket, ZMQ_DONTWAIT) < 0)
        return errno == EAGAIN ? 0 : -1;

    zmq_getsockopt (socket, ZMQ_RCVMORE, &more, &more_size);
    if (more) {
        drain_more (socket);
        return -1;              /* more frames than a batch has */
    }
    return 1;
}

/* ------------------------------------------------------------------------ */

static bool
streq_role (qms_role_t role, const char *name)
{
    return strcmp (qms_role_name (role), name) == 0;
}

void
qms_msg_test (bool verbose)
{
    if (verbose)
        printf (" * qms_msg: ");

    /*  Members of a group: entries round-trip, any byte in a key; a cut one
        is malformed. */
    {
        qms_buf_t m;
        qms_buf_init (&m);
        assert (qms_members_add (&m, 2, qms_str ("id1"), qms_str ("alice"), qms_strn ("k\t2\n\0x", 6)) == 0);
        assert (qms_members_add (&m, 0, qms_str ("id2"), qms_str (""), qms_str ("")) == 0);
        assert (qms_members_add (&m, 256, qms_str ("x"), qms_str (""), qms_str ("")) == -1);
        qms_str_t all = qms_strn ((const char *) m.data, m.len);
        qms_member_t one;
        size_t off = 0;
        assert (qms_members_next (all, &off, &one) == 1 && one.role == 2 && qms_str_eq (one.id, "id1")
                && qms_str_eq (one.name, "alice") && one.key.len == 6 && memcmp (one.key.ptr, "k\t2\n\0x", 6) == 0);
        assert (qms_members_next (all, &off, &one) == 1 && one.role == 0 && qms_str_eq (one.id, "id2")
                && one.name.len == 0 && one.key.len == 0);
        assert (qms_members_next (all, &off, &one) == 0);
        size_t first = 8 + 3 + 5 + 6;
        for (size_t cut = 1; cut < first; cut++) {
            off = 0;
            assert (qms_members_next (qms_strn ((const char *) m.data, first - cut), &off, &one) == -1);
        }
        qms_buf_free (&m);
    }

    /*  Targets of a fan-out: entries round-trip; a cut one is malformed. */
    {
        qms_buf_t t;
        qms_buf_init (&t);
        assert (qms_targets_add (&t, 7, "alice", 5) == 0);
        assert (qms_targets_add (&t, UINT64_MAX, "", 0) == 0);
        char big [256];
        memset (big, 'x', sizeof big);
        assert (qms_targets_add (&t, 1, big, 256) == -1);
        assert (qms_targets_add (&t, 9, big, 255) == 0);
        qms_str_t all = qms_strn ((const char *) t.data, t.len), id;
        size_t off = 0;
        uint64_t conn;
        assert (qms_targets_next (all, &off, &conn, &id) == 1 && conn == 7 && qms_str_eq (id, "alice"));
        assert (qms_targets_next (all, &off, &conn, &id) == 1 && conn == UINT64_MAX && id.len == 0);
        assert (qms_targets_next (all, &off, &conn, &id) == 1 && conn == 9 && id.len == 255);
        assert (qms_targets_next (all, &off, &conn, &id) == 0);
        for (size_t cut = 1; cut < 14; cut++) {
            qms_str_t part = qms_strn ((const char *) t.data, 14 - cut);
            off = 0;
            assert (qms_targets_next (part, &off, &conn, &id) == -1);
        }
        qms_buf_free (&t);
    }

    /*  Round-trip every type with every field set; fields outside a type's
        schema must come back zero. */
    for (int type = QMS_NONE + 1; type < QMS_TYPE_COUNT; type++) {
        qms_rec_t in = { .type = (uint8_t) type, .conn = 0x0102030405060708ull,
                         .req = 42, .num = UINT64_MAX, .time = 1764000000000ull, .seq = 77 };
        in.s [0] = qms_str ("alpha");
        in.s [1] = qms_strn ("b\0c", 3);
        in.s [2] = qms_str ("");
        in.s [3] = qms_str ("delta");
        in.s [4] = qms_str ("epsilon");
        in.s [5] = qms_str ("zeta");
        in.s [6] = qms_str ("eta");
        in.s [7] = qms_str ("theta");
        qms_buf_t buf;
        qms_buf_init (&buf);
        assert (qms_rec_encode (&buf, &in) == 0);
        assert (qms_rec_encode (&buf, &in) == 0);   /* a batch of two */

        size_t offset = 0;
        for (int copy = 0; copy < 2; copy++) {
            qms_rec_t out;
            assert (qms_rec_next (buf.data, buf.len, &offset, &out) == 1);
            const schema_t *schema = &qms_schema [type];
            assert (out.type == type);
            assert (out.conn == ((schema->fields & F_CONN) ? in.conn : 0));
            assert (out.req == ((schema->fields & F_REQ) ? in.req : 0));
            assert (out.num == ((schema->fields & F_NUM) ? in.num : 0));
            assert (out.time == ((schema->fields & F_TIME) ? in.time : 0));
            assert (out.seq == ((schema->fields & F_SEQ) ? in.seq : 0));
            for (int i = 0; i < QMS_MSG_MAX_STRINGS; i++) {
                if (i < schema->strings) {
                    assert (out.s [i].len == in.s [i].len);
                    assert (memcmp (out.s [i].ptr, in.s [i].ptr, in.s [i].len) == 0);
                }
                else
                    assert (out.s [i].len == 0);
            }
        }
        qms_rec_t end;
        assert (qms_rec_next (buf.data, buf.len, &offset, &end) == 0);

        /*  Every truncation of a one-record batch is malformed, not a
            crash and not a record. */
        size_t one = buf.len / 2;
        for (size_t cut = 1; cut < one; cut++) {
            size_t at = 0;
            qms_rec_t out;
            assert (qms_rec_next (buf.data, cut, &at, &out) == -1);
        }
        /*  qms_batch_valid says what reading the whole batch says, for
            every prefix of the two-record batch and for every byte of it
            set to 0xff. */
        for (size_t cut = 0; cut <= buf.len; cut++) {
            size_t at = 0;
            qms_rec_t out;
            int rc;
            while ((rc = qms_rec_next (buf.data, cut, &at, &out)) == 1)
                ;
            assert (qms_batch_valid (buf.data, cut, (qms_role_t) qms_schema [type].to, NULL) == (rc == 0));
            assert (cut == 0 || cut == one || cut == buf.len || rc == -1);
        }
        for (size_t i = 0; i < buf.len; i++) {
            uint8_t saved = buf.data [i];
            buf.data [i] = 0xff;
            size_t at = 0;
            qms_rec_t out;
            int rc;
            while ((rc = qms_rec_next (buf.data, buf.len, &at, &out)) == 1)
                ;
            assert (qms_batch_valid (buf.data, buf.len, (qms_role_t) qms_schema [type].to, NULL) == (rc == 0));
            buf.data [i] = saved;
        }
        qms_buf_free (&buf);
    }

    /*  Every type has senders and receivers, and the validator refuses a
        well-formed batch whole when one record is not for the role. */
    for (int type = QMS_NONE + 1; type < QMS_TYPE_COUNT; type++)
        assert (qms_type_senders (type) && qms_type_receivers (type));
    assert (qms_type_receivers (QMS_TYPE_COUNT) == 0 && qms_type_senders (0) == 0);
    {
        qms_buf_t mixed;
        qms_buf_init (&mixed);
        qms_rec_t msg = { .type = QMS_RT_MESSAGE, .conn = 1 };
        qms_rec_t deliver = { .type = QMS_GW_DELIVER, .conn = 2 };
        assert (qms_rec_encode (&mixed, &msg) == 0);
        assert (qms_rec_encode (&mixed, &msg) == 0);
        qms_batch_fault_t fault;
        assert (qms_batch_valid (mixed.data, mixed.len, QMS_ROLE_ROUTER, &fault));
        assert (fault.records == 2);
        assert (!qms_batch_valid (mixed.data, mixed.len, QMS_ROLE_GATEWAY, &fault));
        assert (fault.wrong_role && fault.records == 0 && fault.type == QMS_RT_MESSAGE);
        size_t second = mixed.len;
        assert (qms_rec_encode (&mixed, &deliver) == 0);
        assert (!qms_batch_valid (mixed.data, mixed.len, QMS_ROLE_ROUTER, &fault));
        assert (fault.wrong_role && fault.records == 2 && fault.offset == second
                && fault.type == QMS_GW_DELIVER);
        mixed.len--;        /* now truncated as well: malformed, not wrong role */
        assert (!qms_batch_valid (mixed.data, mixed.len, QMS_ROLE_GATEWAY, &fault));
        assert (fault.wrong_role && fault.records == 0);
        assert (!qms_batch_valid (mixed.data, mixed.len, QMS_ROLE_ROUTER, &fault));
        assert (!fault.wrong_role && fault.records == 2 && fault.type == QMS_NONE);
        qms_buf_free (&mixed);
        assert (streq_role (QMS_ROLE_STORE, "store") && streq_role ((qms_role_t) 3, "?"));
    }

    /*  A record of an unknown type is skipped, and what follows is read. */
    qms_buf_t buf;
    qms_buf_init (&buf);
    uint8_t unknown [] = { 200, 3, 0, 0, 0, 'x', 'y', 'z' };
    assert (qms_buf_append (&buf, unknown, sizeof unknown) == 0);
    qms_rec_t closed = { .type = QMS_RT_CLOSED, .conn = 7 };
    assert (qms_rec_encode (&buf, &closed) == 0);
    size_t offset = 0;
    qms_rec_t out;
    assert (qms_rec_next (buf.data, buf.len, &offset, &out) == 1);
    assert (out.type == QMS_NONE);
    assert (qms_rec_next (buf.data, buf.len, &offset, &out) == 1);
    assert (out.type == QMS_RT_CLOSED && out.conn == 7);
    assert (qms_rec_next (buf.data, buf.len, &offset, &out) == 0);

    /*  A string length that points past the record is malformed. */
    qms_buf_reset (&buf);
    qms_rec_t fail = { .type = QMS_AUTH_FAIL, .conn = 1, .s = { qms_str ("nope") } };
    assert (qms_rec_encode (&buf, &fail) == 0);
    buf.data [5 + 8] = 0xff;       /* first byte of s0's length */
    offset = 0;
    assert (qms_rec_next (buf.data, buf.len, &offset, &out) == -1);

    /*  Unknown types and oversized strings are refused by the encoder. */
    qms_rec_t bad = { .type = QMS_TYPE_COUNT };
    assert (qms_rec_encode (&buf, &bad) == -1);
    qms_rec_t big = { .type = QMS_AUTH_FAIL };
    big.s [0].ptr = "";
    big.s [0].len = QMS_MSG_MAX_STRING + 1;
    assert (qms_rec_encode (&buf, &big) == -1);
    qms_buf_free (&buf);

    /*  String helpers. */
    char small [4];
    assert (!qms_str_copy (qms_str ("abcd"), small, sizeof small));
    assert (qms_str_copy (qms_str ("abc"), small, sizeof small));
    assert (strcmp (small, "abc") == 0);
    assert (qms_str_eq (qms_str ("abc"), "abc"));
    assert (!qms_str_eq (qms_str ("abc"), "ab"));
    char *dup = qms_str_dup (qms_strn ("hello", 4));
    assert (strcmp (dup, "hell") == 0);
    free (dup);
    assert (strcmp (qms_type_name (QMS_RT_MESSAGE), "RT_MESSAGE") == 0);
    assert (strcmp (qms_type_name (250), "?") == 0);

    /*  Over a real inproc ROUTER/DEALER pair: identity first, one body. */
    void *ctx = zmq_ctx_new ();
    void *router = zmq_socket (ctx, ZMQ_ROUTER);
    void *dealer = zmq_socket (ctx, ZMQ_DEALER);
    assert (zmq_bind (router, "inproc://qms-msg-test") == 0);
    assert (zmq_setsockopt (dealer, ZMQ_ROUTING_ID, "gw1", 3) == 0);
    assert (zmq_connect (dealer, "inproc://qms-msg-test") == 0);
    qms_rec_t hello = { .type = QMS_RT_HELLO, .num = 9, .s = { qms_str ("gw") } };
    assert (qms_rec_send (dealer, NULL, 0, &hello) == 0);
    zmq_pollitem_t item = { router, 0, ZMQ_POLLIN, 0 };
    assert (zmq_poll (&item, 1, 2000) == 1);
    uint8_t identity [256];
    size_t identity_len = 0;
    zmq_msg_t body;
    zmq_msg_init (&body);
    assert (qms_batch_recv (router, identity, &identity_len, &body) == 1);
    assert (identity_len == 3 && memcmp (identity, "gw1", 3) == 0);
    offset = 0;
    assert (qms_rec_next (zmq_msg_data (&body), zmq_msg_size (&body), &offset, &out) == 1);
    assert (out.type == QMS_RT_HELLO && out.num == 9 && qms_str_eq (out.s [0], "gw"));
    zmq_msg_close (&body);
    /*  Reply through the identity; nothing else is waiting afterwards. */
    assert (qms_rec_send (router, identity, identity_len, &closed) == 0);
    item.socket = dealer;
    assert (zmq_poll (&item, 1, 2000) == 1);
    zmq_msg_init (&body);
    assert (qms_batch_recv (dealer, NULL, NULL, &body) == 1);
    offset = 0;
    assert (qms_rec_next (zmq_msg_data (&body), zmq_msg_size (&body), &offset, &out) == 1);
    assert (out.type == QMS_RT_CLOSED && out.conn == 7);
    assert (qms_batch_recv (dealer, NULL, NULL, &body) == 0);
    zmq_msg_close (&body);
    /*  A three-frame message is refused whole. */
    zmq_send (dealer, "a", 1, ZMQ_SNDMORE);
    zmq_send (dealer, "b", 1, 0);
    item.socket = router;
    assert (zmq_poll (&item, 1, 2000) == 1);
    zmq_msg_init (&body);
    assert (qms_batch_recv (router, identity, &identity_len, &body) == -1);
    assert (qms_batch_recv (router, identity, &identity_len, &body) == 0);
    zmq_msg_close (&body);
    int linger = 0;
    zmq_setsockopt (dealer, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt (router, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close (dealer);
    zmq_close (router);
    zmq_ctx_term (ctx);

    if (verbose)
        printf ("OK\n");
}
