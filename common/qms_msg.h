/*  qms_msg.h - the messages the actors exchange, defined once.

    Every ZeroMQ message between actors carries, after the routing identity
    a ROUTER socket adds, exactly one body frame.  The body is a *batch*: one
    or more records laid end to end, so that a busy sender can put many
    requests into one ZeroMQ message (see docs/ARCHITECTURE.md, "batching").

    A record is

        u8  type
        u32 length of what follows (so a reader can skip a type it does not
            know: actors of different releases can share a cluster)
        then the fields the type's schema names, in this fixed order:
            conn  u64   gateway connection handle
            req   u64   request id, for correlating replies
            num   u64   small integer: flags, status, count, close code
            time  u64   milliseconds since the Unix epoch
            seq   u64   a stored message's sequence number
            s[0..n-1]   strings: u32 length, then the bytes (no NUL)

    All integers are little-endian.  Strings are views into the received
    buffer: they are not NUL-terminated and live as long as that buffer.

    The schema of each type is the table qms_schema[] in qms_msg.c; the
    meaning of each field is documented beside the type below and in
    docs/ARCHITECTURE.md; the strings are named by the enums that follow
    the types (rec->s [QMS_LOGIN_NAME]).
*/
#ifndef QMS_MSG_H_INCLUDED
#define QMS_MSG_H_INCLUDED

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/*  Largest string field and largest batch we accept from a peer.  A chat
    message is at most 64 KiB of JSON string, which may grow when escaped. */
#define QMS_MSG_MAX_STRING   (1024u * 1024u)
#define QMS_MSG_MAX_BATCH    (64u * 1024u * 1024u)
#define QMS_MSG_MAX_STRINGS  8

/*  A page of stored messages holds at most this much message text (plus the
    message that crossed it): what a drain puts in a connection's queue at
    once stays far below the gateway's --max-queue. */
#define QMS_FETCH_PAGE_BYTES (256u * 1024)

typedef enum {
    QMS_NONE = 0,

    /* gateway -> auth */
    QMS_AUTH_LOGIN,         /* conn, num=flags (QMS_LOGIN_REGISTER),
                               s0=name s1=password s2=pubkey s3=peer address */
    /* auth -> gateway */
    QMS_AUTH_OK,            /* conn, s0=user id s1=name as registered
                               s2=token (raw, only ever sent to the gateway)
                               s3=pubkey */
    QMS_AUTH_FAIL,          /* conn, s0=error text for the client */

    /* auth / router -> store (every request carries req; the store
       answers with the same req) */
    QMS_ST_USER_GET,        /* req, s0=name key (case-folded name) */
    QMS_ST_USER,            /* req, num=1 found / 0 not found,
                               s0=user id s1=name s2=password PHC s3=pubkey */
    QMS_ST_USER_CREATE,     /* req, s0=user id s1=name s2=name key
                               s3=password PHC */
    QMS_ST_USER_REHASH,     /* req, s0=user id s1=new password PHC */
    QMS_ST_SESSION_START,   /* req, time=now, s0=user id s1=token hash
                               s2=pubkey.  Replaces the user's session (one
                               per user) and records the pubkey. */
    QMS_ST_SESSION_GET,     /* req, s0=token hash */
    QMS_ST_SESSION,         /* req, num=1 found / 0 not found,
                               time=last activity, s0=user id s1=name
                               s2=pubkey */
    QMS_ST_SESSION_DEL,     /* req, s0=user id, s1=token hash (delete only
                               if it still matches; empty = any) */
    QMS_ST_SESSION_TOUCH,   /* req, time=last activity, s0=user id */
    QMS_ST_RESULT,          /* req, num=QMS_ST_OK/QMS_ST_EXISTS/QMS_ST_ERROR
                               (or QMS_ST_SIMILAR for a user create),
                               s0=detail for the log */

    /* gateway -> router */
    QMS_RT_HELLO,           /* num=gateway instance nonce, s0=gateway name */
    QMS_RT_ONLINE,          /* conn, num=QMS_SESSION_* flags, s0=user id
                               s1=name s2=pubkey s3=token hash.  Sent after
                               QMS_AUTH_OK. */
    QMS_RT_AUTHORIZE,       /* conn, num=QMS_SESSION_* flags, s0=token hash */
    QMS_RT_LOGOUT,          /* conn, s0=token hash */
    QMS_RT_MESSAGE,         /* conn, s0=target user id s1=message
                               s2=token hash, empty when the token equals
                               the one bound to conn (the fast path)
                               s3=client's message id, empty for none */
    QMS_RT_CLOSED,          /* conn: the connection is gone */

    /* router -> gateway */
    QMS_GW_BOUND,           /* conn, num=QMS_BOUND_LOGIN/QMS_BOUND_AUTHORIZE,
                               s0=user id s1=name: conn now belongs to the
                               user; answer the request that asked */
    QMS_GW_INVALID,         /* conn, num=1 if conn's binding is gone too:
                               send InvalidUserEvent */
    QMS_GW_KICK,            /* conn, num=WebSocket close code, s0=reason */
    QMS_GW_UNBIND,          /* conn: the session ended (logout) */
    QMS_GW_DELIVER,         /* conn (the target), time=sent, s0=sender
                               user id s1=message s2=message id
                               s3=recipient user id */
    QMS_GW_USERS,           /* num=count: a user list follows as count
                               QMS_GW_USER records in the same batch */
    QMS_GW_USER,            /* s0=user id s1=name s2=pubkey */
    QMS_GW_ERROR,           /* conn, num=the type of the request that
                               failed (QMS_RT_ONLINE, QMS_RT_AUTHORIZE,
                               QMS_RT_MESSAGE), s0=why (a QMS_REASON_*);
                               the gateway chooses event and text */

    /* store-and-forward (appended) */
    QMS_RT_RECEIPT,         /* conn, s0=token hash or empty (fast path)
                               s1=message id the client confirms */
    QMS_RT_SYNCED,          /* conn, req: everything queued to conn before
                               the QMS_GW_SYNC with this req was written */
    QMS_GW_DELIVER_STORED,  /* conn, time=sent, s0=sender id s1=message
                               s2=message id s3=sender name s4=sender key */
    QMS_GW_ACK,             /* conn (the sender), num=QMS_ACK_*, time,
                               s0=client's message id s1=message id
                               s2=why it was rejected (a QMS_REASON_*) */
    QMS_GW_SYNC,            /* conn, req: answer QMS_RT_SYNCED once what is
                               queued for conn so far has been written */
    QMS_ST_MSG_STORE,       /* req, time=sent, s0=message id s1=recipient id
                               s2=sender id s3=sender name s4=sender key
                               s5=message s6=client's id (may be empty).
                               ST_RESULT: OK, EXISTS (s0=the stored id of
                               the same sender and client id), QUOTA,
                               NO_USER */
    QMS_ST_MSG_FETCH,       /* req, num=limit, seq=after this, s0=recipient (a page also
                               ends after the message that brings its text to
                               QMS_FETCH_PAGE_BYTES) */
    QMS_ST_MSG,             /* req, seq, time=sent, s0=message id s1=sender
                               id s2=sender name s3=sender key s4=message
                               s5=client's id */
    QMS_ST_MSG_END,         /* req, num=count sent, seq=last one sent */
    QMS_ST_MSG_DEL,         /* req, s0=recipient id s1=message id;
                               answered (req != 0) with QMS_ST_MSG_DELETED */
    QMS_ST_MSG_DELETED,     /* req, num=1 found, s0=message id s1=sender id
                               s2=client's id s3=group id (empty: direct) */
    QMS_ST_MSG_DEL_UPTO,    /* req, seq, s0=recipient: delete every stored
                               message of recipient with seq <= seq */

    /* liveness (appended) */
    QMS_GW_WELCOME,         /* router -> gateway, the answer to every
                               QMS_RT_HELLO: num=router instance nonce,
                               req=1 when the router holds none of this
                               gateway's connections (a new router, or it
                               had given the gateway up): bound connections
                               are then announced again */
    QMS_AUTH_PING,          /* gateway -> auth, every second */
    QMS_AUTH_PONG,          /* auth -> gateway: num=auth instance nonce */

    /* presence that scales (appended) */
    QMS_GW_JOIN,            /* s0=user id s1=name s2=pubkey: came online
                               (gateways keep the list; QMS_GW_USERS is a
                               whole snapshot, sent to a new gateway) */
    QMS_GW_LEAVE,           /* s0=user id: went offline */
    QMS_RT_LOOKUP,          /* conn, s0=token hash or empty, s1=name */
    QMS_GW_LOOKUP,          /* conn, num=1 found, req=1 when online,
                               s0=id s1=name s2=pubkey s3=the name asked */
    QMS_ST_USER_FIND,       /* req, s0=name key: ST_USER without the PHC */

    /* operations (appended) */
    QMS_ST_ADMIN,           /* admin -> store: req, num=QMS_ADMIN_* op,
                               s0, s1 = the op's arguments (docs/ADMIN.md) */
    QMS_ST_ADMIN_ROW,       /* store -> admin: req, num, time, s0..s3: one
                               row of the answer; QMS_ADMIN_DONE ends it */
    QMS_ADMIN_DONE,         /* -> admin: req, num=QMS_ST_* status, s0=detail */
    QMS_RT_KICK_USER,       /* admin -> router: req, s0=user id, s1=reason:
                               end the user's session in memory and close its
                               connection; answered with QMS_ADMIN_DONE */
    QMS_STATS_GET,          /* -> any actor: req; a req with QMS_STATS_BRIEF
                               set asks only what readiness needs (the
                               store: whether the database takes writes) */
    QMS_STATS,              /* actor ->: req, s0=its metrics, Prometheus
                               text exposition lines */

    /* partitions (appended) */
    QMS_RT_UNDELIVERED,     /* gateway -> router: time=sent, s0=recipient
                               id s1=sender id s2=message s3=message id: a
                               GW_DELIVER whose connection had closed when
                               it arrived; the router delivers it again or
                               stores it */

    /* groups (appended; docs/PROTOCOL.md, "Groups") */
    QMS_RT_GROUP,           /* gateway -> router: conn, num=QMS_GROUP_OP_*,
                               s0=token hash or empty s1=group id (empty
                               for create and list) s2=name (create,
                               rename) s3=member user ids, one per line
                               (create, add, remove, promote, demote)
                               s4=client's request id (may be empty) */
    QMS_RT_GROUP_MESSAGE,   /* gateway -> router: conn, s0=group id
                               s1=message s2=token hash or empty
                               s3=client's message id (may be empty) */
    QMS_GW_GROUP,           /* router -> gateway: a group and what
                               changed, for every connection in s6 (and
                               for conn, the requester, when not 0):
                               conn, num=QMS_GROUP_OP_* | QMS_GROUP_GONE
                               (the recipients are no longer members),
                               seq=epoch, time=when, s0=group id s1=name
                               s2=owner id s3=members (qms_members_*:
                               id, name, pubkey, role; empty with
                               QMS_GROUP_GONE) s4=who made the
                               change s5=the members it named, one per
                               line s6=targets (qms_targets_*) s7=the
                               requester's client id */
    QMS_GW_GROUPS,          /* router -> gateway: conn, num=count (|
                               QMS_GROUPS_MORE when another part follows),
                               s0=the client's request id: a GroupListEvent
                               of the count QMS_GW_GROUP records that follow
                               in the same batch (their s6 empty, conn 0) */
    QMS_GW_GROUP_DELIVER,   /* router -> gateway: time=sent, s0=group id
                               s1=sender id s2=message s3=message id
                               s4=targets (qms_targets_*): one
                               GroupMessageEvent, written to each target;
                               a target whose connection is gone comes back
                               as QMS_RT_GROUP_UNDELIVERED */
    QMS_GW_GROUP_STORED,    /* router -> gateway: conn, time=sent, s0=group
                               id s1=sender id s2=message s3=message id
                               s4=sender name s5=sender key: a group
                               message that waited in the store */
    QMS_GW_GROUP_ACK,       /* router -> gateway: conn (the sender),
                               num=QMS_ACK_*, time, seq=members it went to
                               (delivered/stored), s0=client's message id
                               s1=message id s2=why (a QMS_REASON_*)
                               s3=group id s4=the member who confirmed
                               (received) s5=members it could not reach
                               (stored: mailbox full), as decimal text */
    QMS_GW_GROUP_ERROR,     /* router -> gateway: conn, num=the
                               QMS_GROUP_OP_* (or QMS_GROUP_OP_MESSAGE)
                               that failed, s0=why (a QMS_REASON_*)
                               s1=client's id s2=detail (a user id or a
                               limit, as text; may be empty) s3=group id */
    QMS_RT_GROUP_UNDELIVERED, /* gateway -> router: time=sent, s0=group id
                               s1=recipient id s2=sender id s3=message
                               s4=message id: a group target whose
                               connection had closed */
    QMS_ST_GROUP_MSG_STORE, /* router -> store: ST_MSG_STORE's fields and
                               s7=group id: a group message for one offline
                               member; the same ST_RESULT answers */
    QMS_ST_GROUP_MSG,       /* store -> router: ST_MSG's fields and
                               s6=group id: a group message of a page */
    QMS_ST_GROUP_LOAD,      /* router -> store: req, num=limit, seq=after
                               this cursor: a page of every group's
                               members, then ST_MSG_END (num=count,
                               seq=last cursor) */
    QMS_ST_GROUP_ROW,       /* store -> router: req, num=role, time=epoch,
                               seq=cursor, s0=group id s1=group name
                               s2=owner id s3=member id s4=member name
                               s5=member pubkey: one membership (a page of
                               ST_GROUP_LOAD, or a member named by
                               ST_GROUP_WRITE) */
    QMS_ST_GROUP_WRITE,     /* router -> store: req, num=QMS_GROUP_OP_*,
                               time=now, seq=the group's new epoch,
                               s0=group id s1=name s2=owner id
                               s3=members with roles (id TAB role lines:
                               to insert for create/add, to delete for
                               remove/leave, to update for promote/demote)
                               s4=who made the change.  One transaction.
                               Create and add answer one ST_GROUP_ROW per
                               member inserted (its name and key), then
                               ST_RESULT: OK, NO_USER (s0=the unknown id),
                               EXISTS (create: the id is taken) or ERROR.
                               A group left with no member is deleted. */

    QMS_TYPE_COUNT
} qms_type_t;

/*  The string fields of each type, by name: code reads rec->s [QMS_LOGIN_NAME],
    never rec->s [0].  One enum per type, or per types that share a layout
    and whose names are true for each; the values are the positions above. */

/*  QMS_AUTH_LOGIN */
enum { QMS_LOGIN_NAME, QMS_LOGIN_PASSWORD, QMS_LOGIN_PUBKEY, QMS_LOGIN_ADDRESS };
/*  QMS_AUTH_OK: the token is the raw token */
enum { QMS_AUTH_OK_ID, QMS_AUTH_OK_NAME, QMS_AUTH_OK_TOKEN, QMS_AUTH_OK_PUBKEY };
/*  QMS_AUTH_FAIL: the error text for the client */
enum { QMS_AUTH_FAIL_TEXT };
/*  QMS_ST_USER_GET and QMS_ST_USER_FIND: the name key looked up */
enum { QMS_FIND_KEY };
/*  QMS_ST_USER: the PHC is empty in the answer to QMS_ST_USER_FIND */
enum { QMS_USER_ID, QMS_USER_NAME, QMS_USER_PHC, QMS_USER_PUBKEY };
/*  QMS_ST_USER_CREATE */
enum { QMS_CREATE_ID, QMS_CREATE_NAME, QMS_CREATE_KEY, QMS_CREATE_PHC };
/*  QMS_ST_USER_REHASH: the user id and the new PHC */
enum { QMS_REHASH_ID, QMS_REHASH_PHC };
/*  QMS_ST_SESSION_START: the user id, the token hash, the pubkey */
enum { QMS_START_ID, QMS_START_HASH, QMS_START_PUBKEY };
/*  QMS_ST_SESSION_GET: the token hash */
enum { QMS_SESSION_GET_HASH };
/*  QMS_ST_SESSION: the session's user */
enum { QMS_SESSION_ID, QMS_SESSION_NAME, QMS_SESSION_PUBKEY };
/*  QMS_ST_SESSION_DEL: the user id, the token hash (empty = any) */
enum { QMS_SESSION_DEL_ID, QMS_SESSION_DEL_HASH };
/*  QMS_ST_SESSION_TOUCH: the user id */
enum { QMS_TOUCH_ID };
/*  QMS_ST_RESULT and QMS_ADMIN_DONE: the detail.  After QMS_ST_MSG_STORE,
    an EXISTS result carries there the id stored before instead. */
enum { QMS_RESULT_DETAIL, QMS_RESULT_STORED_ID = QMS_RESULT_DETAIL };
/*  QMS_RT_HELLO: the gateway's name */
enum { QMS_HELLO_NAME };
/*  QMS_RT_ONLINE: the user, then the token hash */
enum { QMS_ONLINE_ID, QMS_ONLINE_NAME, QMS_ONLINE_PUBKEY, QMS_ONLINE_HASH };
/*  QMS_RT_AUTHORIZE: the token hash */
enum { QMS_AUTHORIZE_HASH };
/*  QMS_RT_LOGOUT: the token hash */
enum { QMS_LOGOUT_HASH };
/*  QMS_RT_MESSAGE: the target user id, the message, the token hash (empty:
    the one bound to conn), the client's message id (empty: none) */
enum { QMS_MESSAGE_TARGET, QMS_MESSAGE_TEXT, QMS_MESSAGE_HASH, QMS_MESSAGE_CLIENT_ID };
/*  QMS_GW_BOUND: the user conn now belongs to */
enum { QMS_BOUND_ID, QMS_BOUND_NAME };
/*  QMS_GW_KICK: the close reason */
enum { QMS_KICK_REASON };
/*  QMS_GW_DELIVER: the sender's user id, the message, the message id, the
    recipient's user id */
enum { QMS_DELIVER_SENDER, QMS_DELIVER_TEXT, QMS_DELIVER_MSG_ID, QMS_DELIVER_RECIPIENT };
/*  QMS_GW_USER, QMS_GW_JOIN and QMS_GW_LEAVE (the id only): a user online */
enum { QMS_PRESENCE_ID, QMS_PRESENCE_NAME, QMS_PRESENCE_PUBKEY };
/*  QMS_GW_ERROR: why (a QMS_REASON_*) */
enum { QMS_ERROR_REASON };
/*  QMS_RT_RECEIPT and QMS_RT_LOOKUP, one layout (the gateway fills both in
    one place): the token hash or empty (the one bound to conn), then what
    is asked about: the message id confirmed, or the name looked up. */
enum { QMS_ASK_HASH, QMS_ASK_ITEM,
       QMS_RECEIPT_MSG_ID = QMS_ASK_ITEM, QMS_LOOKUP_NAME = QMS_ASK_ITEM };
/*  QMS_GW_DELIVER_STORED: the sender's user id, the message, the message
    id, the sender's name and key */
enum { QMS_STORED_SENDER, QMS_STORED_TEXT, QMS_STORED_MSG_ID,
       QMS_STORED_SENDER_NAME, QMS_STORED_SENDER_KEY };
/*  QMS_GW_ACK: the client's message id, the message id, why it was
    rejected (a QMS_REASON_*) */
enum { QMS_ACK_CLIENT_ID, QMS_ACK_MSG_ID, QMS_ACK_REASON };
/*  QMS_ST_MSG_STORE: the message id, the recipient's user id, the sender's
    user id, name and key, the message, the client's message id */
enum { QMS_STORE_MSG_ID, QMS_STORE_RECIPIENT, QMS_STORE_SENDER, QMS_STORE_SENDER_NAME,
       QMS_STORE_SENDER_KEY, QMS_STORE_TEXT, QMS_STORE_CLIENT_ID };
/*  QMS_ST_MSG_FETCH: the recipient's user id */
enum { QMS_FETCH_RECIPIENT };
/*  QMS_ST_MSG: the message id, the sender's user id, name and key, the
    message, the client's message id */
enum { QMS_MSG_ID, QMS_MSG_SENDER, QMS_MSG_SENDER_NAME, QMS_MSG_SENDER_KEY,
       QMS_MSG_TEXT, QMS_MSG_CLIENT_ID };
/*  QMS_ST_MSG_DEL: the recipient's user id, the message id */
enum { QMS_DEL_RECIPIENT, QMS_DEL_MSG_ID };
/*  QMS_ST_MSG_DELETED: the message id, the sender's user id, the client's
    message id */
enum { QMS_DELETED_MSG_ID, QMS_DELETED_SENDER, QMS_DELETED_CLIENT_ID, QMS_DELETED_GROUP };
/*  QMS_ST_MSG_DEL_UPTO: the recipient's user id */
enum { QMS_UPTO_RECIPIENT };
/*  QMS_GW_LOOKUP: the user found, then the name asked */
enum { QMS_FOUND_ID, QMS_FOUND_NAME, QMS_FOUND_PUBKEY, QMS_FOUND_ASKED };
/*  QMS_ST_ADMIN: the arguments (common/qms_admin.h): a name key and, for
    QMS_ADMIN_USER_PASSWORD, the new PHC; or, for QMS_ADMIN_DB_BACKUP, the
    backup file's path */
enum { QMS_ADMIN_ARG_KEY, QMS_ADMIN_ARG_PHC, QMS_ADMIN_ARG_FILE = QMS_ADMIN_ARG_KEY };
/*  QMS_ST_ADMIN_ROW (common/qms_admin.h): a user row is the user's id,
    name and public key and the session's last activity (ms as decimal
    text, "" for none); a session row has the user id and the token hash;
    a QMS_ADMIN_DB_CHECK row has the problem's text. */
enum { QMS_ROW_ID, QMS_ROW_NAME, QMS_ROW_PUBKEY, QMS_ROW_ACTIVE,
       QMS_ROW_HASH = QMS_ROW_PUBKEY, QMS_ROW_PROBLEM = QMS_ROW_ID };
/*  QMS_RT_KICK_USER: the user id, the close reason */
enum { QMS_KICK_USER_ID, QMS_KICK_USER_REASON };
/*  QMS_STATS: the metrics, Prometheus text exposition lines */
enum { QMS_STATS_TEXT };
/*  QMS_RT_UNDELIVERED: the recipient's user id, the sender's user id, the
    message, the message id */
enum { QMS_UNDELIVERED_RECIPIENT, QMS_UNDELIVERED_SENDER, QMS_UNDELIVERED_TEXT,
       QMS_UNDELIVERED_MSG_ID };

/*  QMS_RT_GROUP */
enum { QMS_GROUP_HASH, QMS_GROUP_ID, QMS_GROUP_NAME, QMS_GROUP_MEMBERS, QMS_GROUP_CLIENT_ID };
/*  QMS_RT_GROUP_MESSAGE */
enum { QMS_GMSG_GROUP, QMS_GMSG_TEXT, QMS_GMSG_HASH, QMS_GMSG_CLIENT_ID };
/*  QMS_GW_GROUP (and the rows of QMS_GW_GROUPS) */
enum { QMS_GINFO_ID, QMS_GINFO_NAME, QMS_GINFO_OWNER, QMS_GINFO_MEMBERS, QMS_GINFO_BY,
       QMS_GINFO_CHANGED, QMS_GINFO_TARGETS, QMS_GINFO_CLIENT_ID };
/*  QMS_GW_GROUPS */
enum { QMS_GLIST_CLIENT_ID };
/*  QMS_GW_GROUP_DELIVER and QMS_GW_GROUP_STORED (the sender's name and key:
    stored only; the targets: deliver only, in the same place) */
enum { QMS_GDELIVER_GROUP, QMS_GDELIVER_SENDER, QMS_GDELIVER_TEXT, QMS_GDELIVER_MSG_ID,
       QMS_GDELIVER_TARGETS, QMS_GSTORED_SENDER_NAME = QMS_GDELIVER_TARGETS,
       QMS_GSTORED_SENDER_KEY };
/*  QMS_GW_GROUP_ACK */
enum { QMS_GACK_CLIENT_ID, QMS_GACK_MSG_ID, QMS_GACK_REASON, QMS_GACK_GROUP, QMS_GACK_BY,
       QMS_GACK_UNREACHED };
/*  QMS_GW_GROUP_ERROR */
enum { QMS_GERR_REASON, QMS_GERR_CLIENT_ID, QMS_GERR_DETAIL, QMS_GERR_GROUP };
/*  QMS_RT_GROUP_UNDELIVERED */
enum { QMS_GUNDELIVERED_GROUP, QMS_GUNDELIVERED_RECIPIENT, QMS_GUNDELIVERED_SENDER,
       QMS_GUNDELIVERED_TEXT, QMS_GUNDELIVERED_MSG_ID };
/*  QMS_ST_GROUP_MSG_STORE: QMS_STORE_* then the group id */
enum { QMS_STORE_GROUP = QMS_STORE_CLIENT_ID + 1 };
/*  QMS_ST_GROUP_MSG: QMS_MSG_* then the group id */
enum { QMS_MSG_GROUP = QMS_MSG_CLIENT_ID + 1 };
/*  QMS_ST_GROUP_ROW */
enum { QMS_GROW_GROUP, QMS_GROW_NAME, QMS_GROW_OWNER, QMS_GROW_MEMBER, QMS_GROW_MEMBER_NAME,
       QMS_GROW_MEMBER_KEY };
/*  QMS_ST_GROUP_WRITE */
enum { QMS_GWRITE_GROUP, QMS_GWRITE_NAME, QMS_GWRITE_OWNER, QMS_GWRITE_MEMBERS, QMS_GWRITE_BY };

/* QMS_RT_GROUP, QMS_GW_GROUP, QMS_ST_GROUP_WRITE: what is done */
#define QMS_GROUP_OP_CREATE   1u
#define QMS_GROUP_OP_ADD      2u
#define QMS_GROUP_OP_REMOVE   3u
#define QMS_GROUP_OP_LEAVE    4u
#define QMS_GROUP_OP_RENAME   5u
#define QMS_GROUP_OP_PROMOTE  6u     /* make members admins (the owner only) */
#define QMS_GROUP_OP_DEMOTE   7u     /* make admins plain members (the owner only) */
#define QMS_GROUP_OP_LIST     8u     /* RT_GROUP only: the caller's groups */
#define QMS_GROUP_OP_MESSAGE  9u     /* GW_GROUP_ERROR only: a GroupMessageRequest */
#define QMS_GROUP_OP_MASK     0xffu
#define QMS_GROUP_GONE        0x100u /* GW_GROUP: its targets are no longer members */
#define QMS_GROUPS_MORE       (1ull << 32)  /* GW_GROUPS: more parts of the list follow */
#define QMS_GROUPS_COUNT      0xffffffffull /* GW_GROUPS: the rows of this part */
/* Roles of a member (QMS_ST_GROUP_ROW num, the role of a member line) */
#define QMS_GROUP_ROLE_MEMBER 0u
#define QMS_GROUP_ROLE_ADMIN  1u
#define QMS_GROUP_ROLE_OWNER  2u

/*  Targets of a fan-out (GW_GROUP s6, GW_GROUP_DELIVER s4): one string of
    entries laid end to end, each u64 conn (little-endian), u8 length, the
    recipient's user id.  qms_targets_add appends one (returns 0, or -1 when
    out of memory or the id is over 255 bytes); qms_targets_next reads the
    one at *offset (returns 1, 0 at the end, -1 when malformed); declared
    below, after qms_buf_t. */

/* QMS_AUTH_LOGIN flags */
#define QMS_LOGIN_REGISTER   1u

/* QMS_RT_ONLINE / QMS_RT_AUTHORIZE flags */
#define QMS_SESSION_RECEIPTS 1u     /* the client confirms what it receives */
#define QMS_SESSION_SILENT   2u     /* re-announced after a router restart:
                                       bind without answering the client */

/* QMS_STATS_GET: a flag in req (the answer carries the same req) */
#define QMS_STATS_BRIEF      (1ull << 63)   /* a readiness probe: the store skips its row counts */

/* QMS_GW_ACK status */
#define QMS_ACK_DELIVERED    0u
#define QMS_ACK_STORED       1u
#define QMS_ACK_RECEIVED     2u
#define QMS_ACK_REJECTED     3u

/* QMS_GW_BOUND kinds */
#define QMS_BOUND_LOGIN      0u
#define QMS_BOUND_AUTHORIZE  1u
#define QMS_BOUND_SILENT     2u

/* QMS_ST_RESULT status */
#define QMS_ST_OK            0u
#define QMS_ST_EXISTS        1u
#define QMS_ST_ERROR         2u
#define QMS_ST_QUOTA         3u
#define QMS_ST_NO_USER       4u
#define QMS_ST_SIMILAR       5u     /* user create: the name looks like a taken one */

/* QMS_GW_ERROR and QMS_GW_ACK (rejected): why, as a key the gateway turns
   into the client's text (gateway/proto.c) */
#define QMS_REASON_UNAVAILABLE       "unavailable"          /* an actor or the store cannot take it now */
#define QMS_REASON_UNKNOWN_RECIPIENT "unknown_recipient"
#define QMS_REASON_MAILBOX_FULL      "mailbox_full"         /* the recipient's stored messages are at quota */
#define QMS_REASON_UNKNOWN_GROUP     "unknown_group"        /* no such group, or the caller is not in it */
#define QMS_REASON_NOT_ALLOWED       "not_allowed"          /* the owner's or an admin's right */
#define QMS_REASON_OWNER_ONLY        "owner_only"           /* the owner's right */
#define QMS_REASON_GROUP_FULL        "group_full"           /* detail: the limit */
#define QMS_REASON_TOO_MANY_GROUPS   "too_many_groups"      /* detail: the user id, TAB, the limit */
#define QMS_REASON_UNKNOWN_USER      "unknown_user"         /* detail: the user id */
#define QMS_REASON_NOT_MEMBER        "not_member"           /* detail: the user id */
#define QMS_REASON_NO_CHANGE         "no_change"            /* every member named is already as asked */
#define QMS_REASON_GROUP_BUSY        "group_busy"           /* a change of the group is being stored */

/*  The roles that exchange records: each type has senders and receivers
    (the schema), and a receiver checks every batch against its own role. */
typedef enum {
    QMS_ROLE_GATEWAY = 1,
    QMS_ROLE_AUTH    = 2,
    QMS_ROLE_ROUTER  = 4,
    QMS_ROLE_STORE   = 8,
    QMS_ROLE_ADMIN   = 16,      /* the administration command */
    QMS_ROLE_OPS     = 32       /* an actor process's /metrics responder */
} qms_role_t;

typedef struct {
    const char *ptr;
    uint32_t len;
} qms_str_t;

typedef struct {
    uint8_t type;
    uint64_t conn;
    uint64_t req;
    uint64_t num;
    uint64_t time;
    uint64_t seq;
    qms_str_t s[QMS_MSG_MAX_STRINGS];
} qms_rec_t;

/*  A growable byte buffer that batches are built in. */
typedef struct {
    uint8_t *data;
    size_t len;
    size_t cap;
} qms_buf_t;

void qms_buf_init (qms_buf_t *buf);
void qms_buf_free (qms_buf_t *buf);
void qms_buf_reset (qms_buf_t *buf);
/*  Make room for n more bytes; returns 0, or -1 when out of memory. */
int  qms_buf_reserve (qms_buf_t *buf, size_t n);
int  qms_buf_append (qms_buf_t *buf, const void *data, size_t n);

/*  Helpers to fill string fields. */
qms_str_t qms_str (const char *cstr);          /* NULL gives an empty string */
qms_str_t qms_strn (const char *ptr, size_t len);
bool qms_str_eq (qms_str_t s, const char *cstr);
/*  Copy into dst (size > 0) with a NUL; returns false if it did not fit. */
bool qms_str_copy (qms_str_t s, char *dst, size_t size);
/*  A malloc'd NUL-terminated copy (caller frees). */
char *qms_str_dup (qms_str_t s);

/*  Name of a type, for logs ("AUTH_LOGIN"); "?" if unknown. */
const char *qms_type_name (int type);

/*  Append one record to a batch.  Returns 0, or -1 if the type is unknown, a
    string is longer than QMS_MSG_MAX_STRING, or memory ran out. */
int qms_rec_encode (qms_buf_t *buf, const qms_rec_t *rec);

/*  Read the next record of a batch at *offset, advancing it.  Returns 1 and
    fills rec, 0 at the end of the batch, -1 if the batch is malformed
    (truncated, lengths that disagree).  A record of a type this build does
    not know is skipped (rec->type is then QMS_NONE and 1 is returned). */
int qms_rec_next (const uint8_t *data, size_t size, size_t *offset, qms_rec_t *rec);

/*  The members of a group as GW_GROUP carries them (s3): entries laid end
    to end, each u8 role (QMS_GROUP_ROLE_*), u8 id length, u16 name length,
    u32 key length (little-endian), then the id, name and key bytes, so that
    a key may hold any byte (a PEM key holds newlines).  qms_members_add
    appends one (0, or -1: out of memory, or a part too long for its
    length); qms_members_next reads the one at *offset (1, 0 at the end, -1
    when malformed). */
typedef struct {
    unsigned role;
    qms_str_t id, name, key;
} qms_member_t;
int qms_members_add (qms_buf_t *buf, unsigned role, qms_str_t id, qms_str_t name, qms_str_t key);
int qms_members_next (qms_str_t members, size_t *offset, qms_member_t *member);

/*  The targets of a fan-out (GW_GROUP, GW_GROUP_DELIVER): see above. */
int qms_targets_add (qms_buf_t *buf, uint64_t conn, const char *id, size_t id_len);
int qms_targets_next (qms_str_t targets, size_t *offset, uint64_t *conn, qms_str_t *id);
/*  Why qms_batch_valid refused a batch. */
typedef struct {
    size_t offset;              /* where the record that failed starts */
    int records;                /* records read before it */
    int type;                   /* its type (QMS_NONE when unreadable) */
    bool wrong_role;            /* well formed, but not for this role */
} qms_batch_fault_t;

/*  The one validator every receiver runs before acting on any record of a
    batch, so that a bad batch is refused whole, never half applied: true
    when every record is well formed (what reading it all with qms_rec_next
    would end in 0, not -1) and every record of a known type is one role
    receives (a type from a newer release is skipped, as qms_rec_next
    does).  fault (may be NULL) says what failed. */
bool qms_batch_valid (const uint8_t *data, size_t size, qms_role_t role,
                      qms_batch_fault_t *fault);

/*  The fault as log fields: reason=malformed|wrong_role at=N records=N
    type=NAME.  Returns buf. */
const char *qms_batch_fault_text (const qms_batch_fault_t *fault, char *buf, size_t size);

/*  Senders and receivers of a type (QMS_ROLE_* bits; 0 when unknown). */
unsigned qms_type_senders (int type);
unsigned qms_type_receivers (int type);
/*  "gateway", "auth", ...; "?" for anything else. */
const char *qms_role_name (qms_role_t role);

/*  The record table of docs/ARCHITECTURE.md, as Markdown, from the schema. */
void qms_msg_print_table (FILE *out);

/*  Send a batch as one ZeroMQ message on a raw libzmq socket handle (use
    zsock_resolve() for a zsock_t).  With identity (ROUTER sockets) the
    identity frame goes first.  Never blocks: returns 0, or -1 when the
    message could not be queued (peer gone, high-water mark). */
int qms_batch_send (void *socket, const void *identity, size_t identity_len,
                    const qms_buf_t *batch);

/*  The sockets this thread has sent on since it last asked.  A send may
    take in the news that ZMQ_FD would have given of an arrival on the same
    socket (ZMQ_FD tells only of what comes after the socket was last found
    empty), so a loop that waits on ZMQ_FD checks these before it waits.
    qms_batch_send marks what it sends on; other sends call qms_sent_mark.
    qms_sent_take copies up to max marked sockets into out and clears the
    marks: how many, or -1 when more were marked than it keeps (then check
    every socket). */
void qms_sent_mark (void *socket);
int qms_sent_take (void **out, int max);

/*  Encode one record and send it as a batch of one.  Cold paths only. */
int qms_rec_send (void *socket, const void *identity, size_t identity_len,
                  const qms_rec_t *rec);

/*  Receive one ZeroMQ message without blocking.  For a ROUTER socket pass
    identity (it receives the identity frame, at most 255 bytes); for a
    DEALER pass NULL.  The body frame lands in body (initialised by the
    caller with zmq_msg_init, closed by the caller).  Returns 1 when a
    message was read, 0 when none was waiting, -1 on a malformed message
    (which has been fully consumed). */
int qms_batch_recv (void *socket, uint8_t *identity, size_t *identity_len,
                    void *body_zmq_msg);

void qms_msg_test (bool verbose);

#ifdef __cplusplus
}
#endif

#endif
