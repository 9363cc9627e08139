/*  store.c - the store actor: the only code that opens SQLite (users.db).

    It binds a ROUTER socket and answers the QMS_ST_* records of qms_msg.h.
    Every incoming ZeroMQ message is a batch of records; the whole batch runs
    in one transaction and all its replies leave as one batch to the sender.
    That is what makes the router's bulk activity touches cheap: a thousand
    touches cost one commit and one reply message (or none, with req 0).

    The schema is versioned: s_migrations[] is an ordered list of SQL steps,
    step i taking the database from version i to i + 1, each in its own
    transaction.  A later release appends steps; it never edits old ones.

    All SQL is fixed text prepared once at start; request strings are only
    ever bound as parameters.

    Administration (common/qms_admin.h): QMS_ST_ADMIN batches come from the
    qmessageserver users / db commands, on the same socket and also on the
    admin socket in the data directory.  They run outside the batch
    transaction, each write in its own.  While it runs, the store holds an
    exclusive lock on the data directory, so that a command never starts
    a second store on a database a server is using.
*/
#include "store.h"
#include "qms_admin.h"
#include "qms_actor.h"
#include "qms_config.h"
#include "qms_inbox.h"
#include "qms_curve.h"
#include "qms_log.h"
#include "qms_metrics.h"
#include "qms_msg.h"
#include "qms_names.h"
#include "qms_util.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#define ACTOR                   "store"
#define QMS_STRINGIFY2(x)       #x
#define QMS_STRINGIFY(x)        QMS_STRINGIFY2 (x)
#define STORE_DB_NAME           "users.db"
/*  Held (flock) while a store has the database open. */
#define STORE_LOCK_NAME         ".qms-store.lock"
/*  Rows of an admin answer per ZeroMQ message: a long user list streams. */
#define STORE_ADMIN_ROWS        500
#define MAX_ADMIN_ID            256
/*  How long a statement waits for a lock another process holds (an admin's
    sqlite3 shell, a backup) before it fails: bounded, never forever. */
#define STORE_BUSY_TIMEOUT_MS   5000
/*  Messages handled per wake-up before the pipe is looked at again. */
#define STORE_DRAIN_MAX         64
/*  On $TERM, messages already queued are still handled, up to this many. */
#define STORE_TERM_DRAIN_MAX    10000

/*  The schema, one step per version.  Never edit a released step: append. */
static const char *const s_migrations [] = {
    /* 0 -> 1 */
    "CREATE TABLE users ("
    "  id TEXT PRIMARY KEY,"
    "  name TEXT NOT NULL,"
    "  name_key TEXT NOT NULL UNIQUE,"
    "  password TEXT NOT NULL,"
    "  pubkey TEXT NOT NULL DEFAULT '',"
    "  created INTEGER NOT NULL);"
    "CREATE TABLE sessions ("
    "  user_id TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,"
    "  token_hash TEXT NOT NULL UNIQUE,"
    "  created INTEGER NOT NULL,"
    "  last_active INTEGER NOT NULL);",
    /* 1 -> 2: messages waiting for an offline recipient (ciphertext only:
       the server never sees plaintext).  seq orders them as they were
       stored; (sender_id, client_id) makes a retried send idempotent. */
    "CREATE TABLE messages ("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  id TEXT NOT NULL UNIQUE,"
    "  recipient_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,"
    "  sender_id TEXT NOT NULL,"
    "  sender_name TEXT NOT NULL,"
    "  sender_key TEXT NOT NULL,"
    "  client_id TEXT,"
    "  body TEXT NOT NULL,"
    "  created INTEGER NOT NULL);"
    "CREATE INDEX messages_by_recipient ON messages (recipient_id, seq);"
    "CREATE UNIQUE INDEX messages_by_client_id ON messages (sender_id, client_id)"
    "  WHERE client_id IS NOT NULL;"
    "CREATE INDEX messages_by_age ON messages (created);",
    /* 2 -> 3: the TR39 skeletons of each name in lower and upper case
       (common/qms_names.h), so that a new name that looks like a taken one
       is refused.  Rows of older versions get theirs when the store opens
       (store_fill_skeletons). */
    "ALTER TABLE users ADD COLUMN skeleton TEXT;"
    "ALTER TABLE users ADD COLUMN skeleton_upper TEXT;"
    "CREATE INDEX users_by_skeleton ON users (skeleton);"
    "CREATE INDEX users_by_skeleton_upper ON users (skeleton_upper);",
    /* 3 -> 4: groups (docs/PROTOCOL.md, "Groups").  A membership's seq is
       the cursor of ST_GROUP_LOAD and says who has been in longest; the
       owner is also a member row with the owner role.  A group message is
       stored once per offline member with one message id and one client
       id, so messages is rebuilt: ids unique per recipient, the client id
       index per (sender, client id, recipient), and a group id (NULL for a
       direct message; no foreign key: a member keeps what was sent while
       they were in, even once the group is gone).  The rows keep their seq
       and the AUTOINCREMENT counter its value, so a seq is never reused;
       a row whose recipient no longer exists (only possible when written
       without foreign keys) is dropped, as it could never be fetched. */
    "CREATE TABLE groups ("
    "  id TEXT PRIMARY KEY,"
    "  name TEXT NOT NULL,"
    "  owner_id TEXT NOT NULL,"
    "  epoch INTEGER NOT NULL,"
    "  created INTEGER NOT NULL);"
    "CREATE TABLE group_members ("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  group_id TEXT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,"
    "  user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,"
    "  role INTEGER NOT NULL,"
    "  joined INTEGER NOT NULL,"
    "  UNIQUE (group_id, user_id));"
    "CREATE INDEX group_members_by_user ON group_members (user_id);"
    "CREATE TABLE messages_new ("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  id TEXT NOT NULL,"
    "  recipient_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,"
    "  sender_id TEXT NOT NULL,"
    "  sender_name TEXT NOT NULL,"
    "  sender_key TEXT NOT NULL,"
    "  client_id TEXT,"
    "  body TEXT NOT NULL,"
    "  created INTEGER NOT NULL,"
    "  group_id TEXT,"
    "  UNIQUE (recipient_id, id));"
    "INSERT INTO messages_new (seq, id, recipient_id, sender_id, sender_name, sender_key,"
    "  client_id, body, created)"
    "  SELECT seq, id, recipient_id, sender_id, sender_name, sender_key, client_id, body, created"
    "  FROM messages WHERE recipient_id IN (SELECT id FROM users) ORDER BY seq;"
    "DELETE FROM sqlite_sequence WHERE name = 'messages_new';"
    "INSERT INTO sqlite_sequence (name, seq)"
    "  SELECT 'messages_new', seq FROM sqlite_sequence WHERE name = 'messages';"
    "DROP TABLE messages;"
    "ALTER TABLE messages_new RENAME TO messages;"
    "CREATE INDEX messages_by_recipient ON messages (recipient_id, seq);"
    "CREATE UNIQUE INDEX messages_by_client_id ON messages (sender_id, client_id, recipient_id)"
    "  WHERE client_id IS NOT NULL;"
    "CREATE INDEX messages_by_age ON messages (created);",
};
#define STORE_SCHEMA_VERSION ((int) (sizeof s_migrations / sizeof s_migrations [0]))

/*  QMS_GROUP_ROLE_OWNER as SQL text (the roles are stored as their numbers). */
#define OWNER_SQL "2"
static_assert (QMS_GROUP_ROLE_OWNER == 2, "OWNER_SQL");

/*  The statements requests use, prepared once. */
typedef enum {
    S_BEGIN, S_COMMIT, S_ROLLBACK, S_SAVEPOINT, S_RELEASE, S_ROLLBACK_TO,
    S_USER_GET, S_USER_CREATE, S_USER_REHASH, S_USER_PUBKEY, S_USER_SIMILAR,
    S_USER_NO_SKELETON, S_USER_SET_SKELETON,
    S_SESSION_PUT, S_SESSION_GET,
    S_SESSION_DEL_BOTH, S_SESSION_DEL_USER, S_SESSION_DEL_HASH,
    S_SESSION_TOUCH, S_COUNT_USERS, S_COUNT_SESSIONS,
    S_USER_EXISTS, S_MSG_BY_CLIENT, S_MSG_COUNT, S_MSG_INSERT, S_MSG_FETCH,
    S_MSG_GET, S_MSG_DEL, S_MSG_DEL_UPTO, S_MSG_EXPIRE, S_COUNT_MESSAGES,
    S_GMSG_BY_CLIENT,
    S_GROUP_GET, S_GROUP_INSERT, S_GROUP_USER, S_GROUP_MEMBER_INSERT, S_GROUP_MEMBER_DEL,
    S_GROUP_MEMBER_ROLE, S_GROUP_MEMBER_IS, S_GROUP_MEMBER_COUNT, S_GROUP_SET_EPOCH,
    S_GROUP_SET_NAME, S_GROUP_SET_OWNER, S_GROUP_DEL, S_GROUP_LOAD,
    S_GROUP_USER_EPOCH, S_GROUP_DROP_EMPTY, S_GROUP_NEW_OWNER, S_GROUP_OWNER_ROLE,
    S_COUNT_GROUPS, S_COUNT_GROUP_MEMBERS,
    S_ADMIN_USERS, S_ADMIN_USER, S_ADMIN_SESSIONS, S_ADMIN_USER_DEL,
    S_ADMIN_INTEGRITY, S_ADMIN_FOREIGN_KEYS, S_ADMIN_GROUP_CHECK,
    S_COUNT
} stmt_id_t;

/*  An admin user row (common/qms_admin.h): created, messages waiting, id, name,
    pubkey, the session's last activity (NULL: no session). */
#define ADMIN_USER_SQL "SELECT u.created,"                                          \
    " (SELECT count(*) FROM messages m WHERE m.recipient_id = u.id),"             \
    " u.id, u.name, u.pubkey, s.last_active"                                      \
    " FROM users u LEFT JOIN sessions s ON s.user_id = u.id"

static const char *const s_sql [S_COUNT] = {
    /*  IMMEDIATE takes the write lock at once, so a batch never fails half
        way on a lock upgrade; we are the only writer anyway. */
    [S_BEGIN]       = "BEGIN IMMEDIATE",
    [S_COMMIT]      = "COMMIT",
    [S_ROLLBACK]    = "ROLLBACK",
    /*  A record that writes more than one row runs inside a savepoint, so
        its failure undoes only its own writes, not the rest of the batch. */
    [S_SAVEPOINT]   = "SAVEPOINT rec",
    [S_RELEASE]     = "RELEASE rec",
    [S_ROLLBACK_TO] = "ROLLBACK TO rec",
    [S_USER_GET]    = "SELECT id, name, password, pubkey FROM users WHERE name_key = ?1",
    [S_USER_CREATE] = "INSERT INTO users (id, name, name_key, password, created, skeleton,"
                      " skeleton_upper) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    /*  Another user whose name looks like the new one (a skeleton ?1 or ?4
        in common): any, when the new name (?2 = 1) or the other one is not
        ASCII (GLOB: a character outside ' '..'~'); two ASCII names differ
        by more than letter case already, as ever.  The same name key is
        left to the UNIQUE index (EXISTS, not SIMILAR). */
    [S_USER_SIMILAR] = "SELECT 1 FROM users WHERE (skeleton IN (?1, ?4) OR skeleton_upper IN (?1, ?4))"
                       " AND name_key <> ?3 AND (?2 OR name GLOB '*[^ -~]*') LIMIT 1",
    [S_USER_NO_SKELETON]  = "SELECT id, name FROM users WHERE skeleton IS NULL OR skeleton_upper IS NULL",
    [S_USER_SET_SKELETON] = "UPDATE users SET skeleton = ?2, skeleton_upper = ?3 WHERE id = ?1",
    [S_USER_REHASH] = "UPDATE users SET password = ?2 WHERE id = ?1",
    [S_USER_PUBKEY] = "UPDATE users SET pubkey = ?2 WHERE id = ?1",
    /*  One session per user: a new login replaces the row in place.  A
        token hash already held by another user fails (UNIQUE), it does not
        silently delete that user's session as INSERT OR REPLACE would. */
    [S_SESSION_PUT] = "INSERT INTO sessions (user_id, token_hash, created, last_active)"
                      " VALUES (?1, ?2, ?3, ?3) ON CONFLICT (user_id) DO UPDATE SET"
                      " token_hash = excluded.token_hash, created = excluded.created,"
                      " last_active = excluded.last_active",
    [S_SESSION_GET] = "SELECT s.last_active, s.user_id, u.name, u.pubkey"
                      " FROM sessions s JOIN users u ON u.id = s.user_id"
                      " WHERE s.token_hash = ?1",
    [S_SESSION_DEL_BOTH] = "DELETE FROM sessions WHERE user_id = ?1 AND token_hash = ?2",
    [S_SESSION_DEL_USER] = "DELETE FROM sessions WHERE user_id = ?1",
    [S_SESSION_DEL_HASH] = "DELETE FROM sessions WHERE token_hash = ?1",
    /*  Touches arrive in batches and possibly out of order: never move
        activity backwards. */
    [S_SESSION_TOUCH] = "UPDATE sessions SET last_active = max (last_active, ?2)"
                        " WHERE user_id = ?1",
    [S_COUNT_USERS]    = "SELECT count(*) FROM users",
    [S_COUNT_SESSIONS] = "SELECT count(*) FROM sessions",
    [S_USER_EXISTS]    = "SELECT 1 FROM users WHERE id = ?1",
    /*  A direct message's retry: the same sender and client id (to any
        recipient, as before groups), or a group message's row that holds
        the same (sender, client id, recipient) in the unique index. */
    [S_MSG_BY_CLIENT]  = "SELECT id FROM messages WHERE sender_id = ?1 AND client_id = ?2"
                         " AND (group_id IS NULL OR recipient_id = ?3)"
                         " ORDER BY group_id IS NOT NULL LIMIT 1",
    /*  A group message's retry: per recipient, as it is stored per member. */
    [S_GMSG_BY_CLIENT] = "SELECT id FROM messages WHERE sender_id = ?1 AND client_id = ?2"
                         " AND recipient_id = ?3",
    /*  The quota check counts one recipient's rows through the index. */
    [S_MSG_COUNT]      = "SELECT count(*) FROM messages WHERE recipient_id = ?1",
    [S_MSG_INSERT]     = "INSERT INTO messages (id, recipient_id, sender_id, sender_name,"
                         " sender_key, client_id, body, created, group_id)"
                         " VALUES (?1, ?2, ?3, ?4, ?5, NULLIF (?6, ''), ?7, ?8, NULLIF (?9, ''))",
    [S_MSG_FETCH]      = "SELECT seq, created, id, sender_id, sender_name, sender_key, body,"
                         " coalesce (client_id, ''), group_id FROM messages"
                         " WHERE recipient_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
    [S_MSG_GET]        = "SELECT sender_id, coalesce (client_id, ''), coalesce (group_id, '') FROM messages"
                         " WHERE recipient_id = ?1 AND id = ?2",
    [S_MSG_DEL]        = "DELETE FROM messages WHERE recipient_id = ?1 AND id = ?2",
    [S_MSG_DEL_UPTO]   = "DELETE FROM messages WHERE recipient_id = ?1 AND seq <= ?2",
    [S_MSG_EXPIRE]     = "DELETE FROM messages WHERE created < ?1",
    [S_COUNT_MESSAGES] = "SELECT count(*) FROM messages",
    [S_GROUP_GET]      = "SELECT name, owner_id, epoch FROM groups WHERE id = ?1",
    [S_GROUP_INSERT]   = "INSERT INTO groups (id, name, owner_id, epoch, created) VALUES (?1, ?2, ?3, ?4, ?5)",
    [S_GROUP_USER]     = "SELECT name, pubkey FROM users WHERE id = ?1",
    [S_GROUP_MEMBER_INSERT] = "INSERT INTO group_members (group_id, user_id, role, joined)"
                              " VALUES (?1, ?2, ?3, ?4)",
    [S_GROUP_MEMBER_DEL]    = "DELETE FROM group_members WHERE group_id = ?1 AND user_id = ?2",
    [S_GROUP_MEMBER_ROLE]   = "UPDATE group_members SET role = ?3 WHERE group_id = ?1 AND user_id = ?2",
    [S_GROUP_MEMBER_IS]     = "SELECT role FROM group_members WHERE group_id = ?1 AND user_id = ?2",
    [S_GROUP_MEMBER_COUNT]  = "SELECT count(*) FROM group_members WHERE group_id = ?1",
    [S_GROUP_SET_EPOCH] = "UPDATE groups SET epoch = ?2 WHERE id = ?1",
    [S_GROUP_SET_NAME]  = "UPDATE groups SET name = ?2 WHERE id = ?1",
    [S_GROUP_SET_OWNER] = "UPDATE groups SET owner_id = ?2 WHERE id = ?1",
    [S_GROUP_DEL]       = "DELETE FROM groups WHERE id = ?1",
    /*  A page of memberships in cursor order, each with its group and user. */
    [S_GROUP_LOAD]      = "SELECT m.seq, m.role, g.epoch, g.id, g.name, g.owner_id, m.user_id,"
                          " u.name, u.pubkey FROM group_members m"
                          " JOIN groups g ON g.id = m.group_id JOIN users u ON u.id = m.user_id"
                          " WHERE m.seq > ?1 ORDER BY m.seq LIMIT ?2",
    /*  An admin's user delete (admin_user_write): the user's groups move to
        a new epoch before the user's memberships go (ON DELETE CASCADE);
        then a group left empty is deleted, and one left without its owner
        gets the longest-standing admin, else the longest-standing member. */
    [S_GROUP_USER_EPOCH] = "UPDATE groups SET epoch = epoch + 1"
                           " WHERE id IN (SELECT group_id FROM group_members WHERE user_id = ?1)",
    [S_GROUP_DROP_EMPTY] = "DELETE FROM groups WHERE NOT EXISTS"
                           " (SELECT 1 FROM group_members m WHERE m.group_id = groups.id)",
    [S_GROUP_NEW_OWNER]  = "UPDATE groups SET owner_id = (SELECT m.user_id FROM group_members m"
                           " WHERE m.group_id = groups.id ORDER BY m.role DESC, m.seq LIMIT 1)"
                           " WHERE owner_id = ?1",
    [S_GROUP_OWNER_ROLE] = "UPDATE group_members SET role = " OWNER_SQL
                           " WHERE role <> " OWNER_SQL " AND user_id ="
                           " (SELECT owner_id FROM groups g WHERE g.id = group_members.group_id)",
    [S_COUNT_GROUPS]        = "SELECT count(*) FROM groups",
    [S_COUNT_GROUP_MEMBERS] = "SELECT count(*) FROM group_members",
    [S_ADMIN_USERS]    = ADMIN_USER_SQL " ORDER BY u.name_key",
    [S_ADMIN_USER]     = ADMIN_USER_SQL " WHERE u.name_key = ?1",
    [S_ADMIN_SESSIONS] = "SELECT s.created, s.last_active, s.user_id, s.token_hash"
                         " FROM sessions s JOIN users u ON u.id = s.user_id"
                         " WHERE u.name_key = ?1",
    /*  The session and the messages waiting for the user go with it
        (ON DELETE CASCADE). */
    [S_ADMIN_USER_DEL] = "DELETE FROM users WHERE id = ?1",
    [S_ADMIN_INTEGRITY]    = "PRAGMA integrity_check",
    [S_ADMIN_FOREIGN_KEYS] = "PRAGMA foreign_key_check",
    /*  db check: what the groups must keep (one owner, who is a member). */
    [S_ADMIN_GROUP_CHECK]  = "SELECT 'group ' || g.id || ' has no members' FROM groups g"
                             " WHERE NOT EXISTS (SELECT 1 FROM group_members m WHERE m.group_id = g.id)"
                             " UNION ALL SELECT 'group ' || g.id || ' has an owner who is not its member'"
                             " || ' with the owner role' FROM groups g"
                             " WHERE EXISTS (SELECT 1 FROM group_members m WHERE m.group_id = g.id)"
                             " AND NOT EXISTS (SELECT 1 FROM group_members m WHERE m.group_id = g.id"
                             " AND m.user_id = g.owner_id AND m.role = " OWNER_SQL ")"
                             " UNION ALL SELECT 'group ' || group_id || ' has ' || count(*) || ' owners'"
                             " FROM group_members WHERE role = " OWNER_SQL
                             " GROUP BY group_id HAVING count(*) > 1",
};

/*  Stored messages are fetched in pages of at most this many. */
#define STORE_FETCH_MAX         1000
/*  How often expired messages are removed. */
#define STORE_EXPIRE_PERIOD_MS  60000

typedef struct {
    sqlite3 *db;
    sqlite3_stmt *stmt [S_COUNT];
    bool prepared;              /* every stmt [] is ready */
    zsock_t *router;
    void *router_raw;
    qms_buf_t out;              /* replies to the batch being handled */
    int64_t message_quota;      /* stored messages per recipient */
    uint64_t message_max_age_ms;
    uint64_t next_expire;       /* monotonic ms */
    qms_hist_t op_ms [QMS_TYPE_COUNT];  /* how long each kind of request took */
    bool in_batch;              /* records run inside one BEGIN..COMMIT */
    bool writable;              /* as the last stats probe found it */
    char path [1100];
    bool local;                 /* an admin command's own store (store_local_actor) */
    int lock_fd;                /* STORE_LOCK_NAME, locked; -1 before */
    char admin_path [128];      /* the admin socket's file, when bound */
    const uint8_t *peer;        /* the admin batch's sender, while it runs */
    size_t peer_len;
    char detail [400];          /* an outcome's detail that names something */
} store_t;

/*  What a write request came to: a QMS_ST_* status and a detail for logs. */
typedef struct {
    uint64_t status;
    const char *detail;
} outcome_t;

static const outcome_t s_ok = { QMS_ST_OK, "" };

/* ------------------------------------------------------------------------ */
/*  Small SQLite helpers */

static int
bind_str (sqlite3_stmt *stmt, int index, qms_str_t s)
{
    /*  Record strings are views into the received message, which outlives
        the statement's use of them: no copy needed. */
    return sqlite3_bind_text (stmt, index, s.ptr, (int) s.len, SQLITE_STATIC);
}

static sqlite3_int64
db_time (uint64_t ms)
{
    return ms > (uint64_t) INT64_MAX ? INT64_MAX : (sqlite3_int64) ms;
}

static qms_str_t
col_str (sqlite3_stmt *stmt, int col)
{
    const char *text = (const char *) sqlite3_column_text (stmt, col);
    int bytes = sqlite3_column_bytes (stmt, col);
    return text ? qms_strn (text, (size_t) bytes) : qms_str ("");
}

/*  Reset a statement after use and drop its bindings (they point into a
    message that is about to be freed). */
static void
stmt_done (sqlite3_stmt *stmt)
{
    sqlite3_reset (stmt);
    sqlite3_clear_bindings (stmt);
}

/*  Step a statement once and reset it.  Returns the (extended) result code;
    errors other than constraint violations are logged here. */
static int
step_once (store_t *self, stmt_id_t id)
{
    sqlite3_stmt *stmt = self->stmt [id];
    int rc = sqlite3_step (stmt);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW && (rc & 0xff) != SQLITE_CONSTRAINT)
        qms_warn (ACTOR, "event=sql_failed stmt=%d code=%d reason=\"%s\"",
                  (int) id, rc, sqlite3_errmsg (self->db));
    stmt_done (stmt);
    return rc;
}

static bool
exec_stmt (store_t *self, stmt_id_t id)
{
    return step_once (self, id) == SQLITE_DONE;
}

/*  One integer from a one-row query; -1 on failure. */
static sqlite3_int64
query_int (store_t *self, stmt_id_t id)
{
    sqlite3_stmt *stmt = self->stmt [id];
    sqlite3_int64 value = sqlite3_step (stmt) == SQLITE_ROW ? sqlite3_column_int64 (stmt, 0) : -1;
    stmt_done (stmt);
    return value;
}

/* ------------------------------------------------------------------------ */
/*  Requests.  Read requests encode their reply themselves (the row is only
    valid until the statement is reset); write requests return an outcome. */

static void
reply (store_t *self, const qms_rec_t *rec)
{
    if (qms_rec_encode (&self->out, rec))
        qms_error (ACTOR, "event=encode_failed type=%s req=%" PRIu64,
                   qms_type_name (rec->type), rec->req);
}

static void
user_get (store_t *self, const qms_rec_t *rec)
{
    if (!rec->req)
        return;                 /* a read nobody waits for */
    sqlite3_stmt *stmt = self->stmt [S_USER_GET];
    qms_rec_t answer = { .type = QMS_ST_USER, .req = rec->req };
    int rc = bind_str (stmt, 1, rec->s [QMS_FIND_KEY]);
    if (rc == SQLITE_OK)
        rc = sqlite3_step (stmt);
    if (rc == SQLITE_ROW) {
        answer.num = 1;
        for (int i = 0; i < 4; i++)
            answer.s [i] = col_str (stmt, i);
    }
    else
    if (rc != SQLITE_DONE)
        qms_warn (ACTOR, "event=sql_failed op=user_get reason=\"%s\"", sqlite3_errmsg (self->db));
    reply (self, &answer);
    stmt_done (stmt);
}

static void
session_get (store_t *self, const qms_rec_t *rec)
{
    if (!rec->req)
        return;
    sqlite3_stmt *stmt = self->stmt [S_SESSION_GET];
    qms_rec_t answer = { .type = QMS_ST_SESSION, .req = rec->req };
    int rc = bind_str (stmt, 1, rec->s [QMS_SESSION_GET_HASH]);
    if (rc == SQLITE_OK)
        rc = sqlite3_step (stmt);
    if (rc == SQLITE_ROW) {
        answer.num = 1;
        sqlite3_int64 last_active = sqlite3_column_int64 (stmt, 0);
        answer.time = last_active > 0 ? (uint64_t) last_active : 0;
        for (int i = 0; i < 3; i++)
            answer.s [i] = col_str (stmt, i + 1);
    }
    else
    if (rc != SQLITE_DONE)
        qms_warn (ACTOR, "event=sql_failed op=session_get reason=\"%s\"", sqlite3_errmsg (self->db));
    reply (self, &answer);
    stmt_done (stmt);
}

/*  A user by name for other users to see: never the password hash. */
static void
user_find (store_t *self, const qms_rec_t *rec)
{
    if (!rec->req)
        return;
    sqlite3_stmt *stmt = self->stmt [S_USER_GET];
    qms_rec_t answer = { .type = QMS_ST_USER, .req = rec->req };
    int rc = bind_str (stmt, 1, rec->s [QMS_FIND_KEY]);
    if (rc == SQLITE_OK)
        rc = sqlite3_step (stmt);
    if (rc == SQLITE_ROW) {
        answer.num = 1;
        answer.s [QMS_USER_ID] = col_str (stmt, 0);
        answer.s [QMS_USER_NAME] = col_str (stmt, 1);
        answer.s [QMS_USER_PUBKEY] = col_str (stmt, 3);
    }
    else
    if (rc != SQLITE_DONE)
        qms_warn (ACTOR, "event=sql_failed op=user_find reason=\"%s\"", sqlite3_errmsg (self->db));
    reply (self, &answer);
    stmt_done (stmt);
}

static outcome_t
user_create (store_t *self, const qms_rec_t *rec)
{
    for (int i = 0; i < 4; i++)
        if (rec->s [i].len == 0)
            return (outcome_t) { QMS_ST_ERROR, "missing field" };
    char skeleton [QMS_NAME_NORM_MAX], upper [QMS_NAME_NORM_MAX];
    if (qms_name_skeletons (rec->s [QMS_CREATE_NAME].ptr, rec->s [QMS_CREATE_NAME].len, skeleton, upper, sizeof skeleton))
        return (outcome_t) { QMS_ST_ERROR, "name without a skeleton" };
    /*  A name that looks like a taken one (common/qms_names.h). */
    sqlite3_stmt *similar = self->stmt [S_USER_SIMILAR];
    int rc = sqlite3_bind_text (similar, 1, skeleton, -1, SQLITE_TRANSIENT);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int (similar, 2, !qms_name_is_ascii (rec->s [QMS_CREATE_NAME].ptr, rec->s [QMS_CREATE_NAME].len));
    if (rc == SQLITE_OK)
        rc = bind_str (similar, 3, rec->s [QMS_CREATE_KEY]);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text (similar, 4, upper, -1, SQLITE_TRANSIENT);
    if (rc == SQLITE_OK)
        rc = sqlite3_step (similar);
    stmt_done (similar);
    if (rc == SQLITE_ROW)
        return (outcome_t) { QMS_ST_SIMILAR, "name looks like a taken one" };
    if (rc != SQLITE_DONE)
        return (outcome_t) { QMS_ST_ERROR, "lookup failed" };

    sqlite3_stmt *stmt = self->stmt [S_USER_CREATE];
    rc = SQLITE_OK;
    for (int i = 0; i < 4 && rc == SQLITE_OK; i++)
        rc = bind_str (stmt, i + 1, rec->s [i]);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64 (stmt, 5, db_time (qms_now_ms ()));
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text (stmt, 6, skeleton, -1, SQLITE_TRANSIENT);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text (stmt, 7, upper, -1, SQLITE_TRANSIENT);
    if (rc != SQLITE_OK) {
        stmt_done (stmt);
        return (outcome_t) { QMS_ST_ERROR, "bind failed" };
    }
    rc = step_once (self, S_USER_CREATE);
    if (rc == SQLITE_DONE)
        return s_ok;
    /*  The unique name key (or the primary key) settles register races. */
    if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY)
        return (outcome_t) { QMS_ST_EXISTS, "name or id taken" };
    return (outcome_t) { QMS_ST_ERROR, (rc & 0xff) == SQLITE_READONLY ? "database is read-only" : "insert failed" };
}

/*  Run an UPDATE/DELETE bound with s0 and (if given) s1 or a time; returns
    the SQLite code and sets *changes. */
static int
write_rows (store_t *self, stmt_id_t id, qms_str_t a, const qms_str_t *b,
            const sqlite3_int64 *time, int *changes)
{
    sqlite3_stmt *stmt = self->stmt [id];
    int rc = bind_str (stmt, 1, a);
    if (rc == SQLITE_OK && b)
        rc = bind_str (stmt, 2, *b);
    if (rc == SQLITE_OK && time)
        rc = sqlite3_bind_int64 (stmt, 2, *time);
    if (rc != SQLITE_OK) {
        stmt_done (stmt);
        return rc;
    }
    rc = step_once (self, id);
    *changes = rc == SQLITE_DONE ? sqlite3_changes (self->db) : 0;
    return rc;
}

static outcome_t
user_rehash (store_t *self, const qms_rec_t *rec)
{
    if (rec->s [QMS_REHASH_ID].len == 0 || rec->s [QMS_REHASH_PHC].len == 0)
        return (outcome_t) { QMS_ST_ERROR, "missing field" };
    int changes = 0;
    if (write_rows (self, S_USER_REHASH, rec->s [QMS_REHASH_ID], &rec->s [QMS_REHASH_PHC], NULL, &changes) != SQLITE_DONE)
        return (outcome_t) { QMS_ST_ERROR, "update failed" };
    return changes ? s_ok : (outcome_t) { QMS_ST_ERROR, "no such user" };
}

/*  The two writes of a session start; the caller wraps them in a savepoint. */
static outcome_t
session_put (store_t *self, const qms_rec_t *rec)
{
    int changes = 0;
    if (write_rows (self, S_USER_PUBKEY, rec->s [QMS_START_ID], &rec->s [QMS_START_PUBKEY], NULL, &changes) != SQLITE_DONE)
        return (outcome_t) { QMS_ST_ERROR, "update failed" };
    if (changes == 0)
        return (outcome_t) { QMS_ST_ERROR, "no such user" };

    sqlite3_stmt *stmt = self->stmt [S_SESSION_PUT];
    sqlite3_int64 now = db_time (rec->time ? rec->time : qms_now_ms ());
    int rc = bind_str (stmt, 1, rec->s [QMS_START_ID]);
    if (rc == SQLITE_OK)
        rc = bind_str (stmt, 2, rec->s [QMS_START_HASH]);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64 (stmt, 3, now);
    if (rc != SQLITE_OK) {
        stmt_done (stmt);
        return (outcome_t) { QMS_ST_ERROR, "bind failed" };
    }
    rc = step_once (self, S_SESSION_PUT);
    if (rc == SQLITE_DONE)
        return s_ok;
    return (outcome_t) { QMS_ST_ERROR, (rc & 0xff) == SQLITE_CONSTRAINT ? "token hash in use"
                                     : (rc & 0xff) == SQLITE_READONLY ? "database is read-only" : "insert failed" };
}

/*  Undo the current record's savepoint.  Outside a batch the savepoint was
    the transaction itself, so make sure nothing stays open. */
static void
record_rollback (store_t *self)
{
    if (sqlite3_get_autocommit (self->db))
        return;                 /* an error already ended the transaction */
    exec_stmt (self, S_ROLLBACK_TO);
    exec_stmt (self, S_RELEASE);
    if (!self->in_batch && !sqlite3_get_autocommit (self->db))
        exec_stmt (self, S_ROLLBACK);
}

static outcome_t
session_start (store_t *self, const qms_rec_t *rec)
{
    if (rec->s [QMS_START_ID].len == 0 || rec->s [QMS_START_HASH].len == 0)
        return (outcome_t) { QMS_ST_ERROR, "missing field" };
    if (!exec_stmt (self, S_SAVEPOINT))
        return (outcome_t) { QMS_ST_ERROR, "savepoint failed" };
    outcome_t outcome = session_put (self, rec);
    if (outcome.status == QMS_ST_OK && exec_stmt (self, S_RELEASE))
        return outcome;
    if (outcome.status == QMS_ST_OK)
        outcome = (outcome_t) { QMS_ST_ERROR, "commit failed" };
    record_rollback (self);
    return outcome;
}

static outcome_t
session_del (store_t *self, const qms_rec_t *rec)
{
    qms_str_t user = rec->s [QMS_SESSION_DEL_ID], hash = rec->s [QMS_SESSION_DEL_HASH];
    int changes = 0, rc;
    if (user.len && hash.len)
        rc = write_rows (self, S_SESSION_DEL_BOTH, user, &hash, NULL, &changes);
    else
    if (user.len)
        rc = write_rows (self, S_SESSION_DEL_USER, user, NULL, NULL, &changes);
    else
    if (hash.len)
        rc = write_rows (self, S_SESSION_DEL_HASH, hash, NULL, NULL, &changes);
    else
        return (outcome_t) { QMS_ST_ERROR, "neither user id nor token hash" };
    if (rc != SQLITE_DONE)
        return (outcome_t) { QMS_ST_ERROR, "delete failed" };
    /*  Deleting what is already gone is success: logout and expiry race. */
    return (outcome_t) { QMS_ST_OK, changes ? "deleted" : "no such session" };
}

static outcome_t
session_touch (store_t *self, const qms_rec_t *rec)
{
    if (rec->s [QMS_TOUCH_ID].len == 0)
        return (outcome_t) { QMS_ST_ERROR, "missing field" };
    sqlite3_int64 time = db_time (rec->time);
    int changes = 0;
    if (write_rows (self, S_SESSION_TOUCH, rec->s [QMS_TOUCH_ID], NULL, &time, &changes) != SQLITE_DONE)
        return (outcome_t) { QMS_ST_ERROR, "update failed" };
    /*  A touch racing the session's deletion is harmless. */
    return (outcome_t) { QMS_ST_OK, changes ? "" : "no such session" };
}

/* ------------------------------------------------------------------------ */
/*  Stored messages */

/*  Bind strings to ?1.. in order; SQLITE_OK or the first error. */
static int
bind_strs (sqlite3_stmt *stmt, const qms_str_t *values, int count)
{
    int rc = SQLITE_OK;
    for (int i = 0; i < count && rc == SQLITE_OK; i++)
        rc = bind_str (stmt, i + 1, values [i]);
    return rc;
}

/*  QMS_ST_MSG_STORE, and QMS_ST_GROUP_MSG_STORE (group not empty: the
    same message for one member; it differs only in the group id stored
    with it and in its retry being per recipient). */
static outcome_t
msg_store (store_t *self, const qms_rec_t *rec, qms_str_t group)
{
    for (int i = 0; i < 6; i++)
        if (i != QMS_STORE_SENDER_KEY && rec->s [i].len == 0)      /* the sender's key may be empty */
            return (outcome_t) { QMS_ST_ERROR, "missing field" };
    if (rec->type == QMS_ST_GROUP_MSG_STORE && group.len == 0)
        return (outcome_t) { QMS_ST_ERROR, "missing group id" };
    /*  The same sender and client id again: a retry, answered with the
        message already stored. */
    if (rec->s [QMS_STORE_CLIENT_ID].len) {
        sqlite3_stmt *stmt = self->stmt [group.len ? S_GMSG_BY_CLIENT : S_MSG_BY_CLIENT];
        qms_str_t key [3] = { rec->s [QMS_STORE_SENDER], rec->s [QMS_STORE_CLIENT_ID],
                              rec->s [QMS_STORE_RECIPIENT] };
        if (bind_strs (stmt, key, 3) == SQLITE_OK && sqlite3_step (stmt) == SQLITE_ROW) {
            qms_rec_t answer = { .type = QMS_ST_RESULT, .req = rec->req, .num = QMS_ST_EXISTS };
            answer.s [QMS_RESULT_STORED_ID] = col_str (stmt, 0);
            if (rec->req)
                reply (self, &answer);
            stmt_done (stmt);
            return (outcome_t) { QMS_ST_EXISTS, NULL };     /* answered */
        }
        stmt_done (stmt);
    }
    sqlite3_stmt *stmt = self->stmt [S_USER_EXISTS];
    bool known = bind_str (stmt, 1, rec->s [QMS_STORE_RECIPIENT]) == SQLITE_OK && sqlite3_step (stmt) == SQLITE_ROW;
    stmt_done (stmt);
    if (!known)
        return (outcome_t) { QMS_ST_NO_USER, "no such recipient" };

    stmt = self->stmt [S_MSG_COUNT];
    sqlite3_int64 count = bind_str (stmt, 1, rec->s [QMS_STORE_RECIPIENT]) == SQLITE_OK
                        && sqlite3_step (stmt) == SQLITE_ROW ? sqlite3_column_int64 (stmt, 0) : -1;
    stmt_done (stmt);
    if (count < 0)
        return (outcome_t) { QMS_ST_ERROR, "count failed" };
    if (count >= self->message_quota)
        return (outcome_t) { QMS_ST_QUOTA, "recipient's quota is full" };

    stmt = self->stmt [S_MSG_INSERT];
    qms_str_t values [7] = { rec->s [QMS_STORE_MSG_ID], rec->s [QMS_STORE_RECIPIENT], rec->s [QMS_STORE_SENDER],
                             rec->s [QMS_STORE_SENDER_NAME], rec->s [QMS_STORE_SENDER_KEY],
                             rec->s [QMS_STORE_CLIENT_ID], rec->s [QMS_STORE_TEXT] };
    int rc = bind_strs (stmt, values, 7);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64 (stmt, 8, db_time (rec->time ? rec->time : qms_now_ms ()));
    if (rc == SQLITE_OK)
        rc = bind_str (stmt, 9, group);
    if (rc != SQLITE_OK) {
        stmt_done (stmt);
        return (outcome_t) { QMS_ST_ERROR, "bind failed" };
    }
    rc = step_once (self, S_MSG_INSERT);
    if (rc == SQLITE_DONE)
        return s_ok;
    return (outcome_t) { QMS_ST_ERROR, (rc & 0xff) == SQLITE_CONSTRAINT
                                       ? "message id in use" : "insert failed" };
}

/*  A page of one recipient's messages, oldest first (a group message as
    ST_GROUP_MSG, a direct one as ST_MSG), then ST_MSG_END. */
static void
msg_fetch (store_t *self, const qms_rec_t *rec)
{
    if (!rec->req)
        return;
    sqlite3_stmt *stmt = self->stmt [S_MSG_FETCH];
    uint64_t limit = rec->num == 0 || rec->num > STORE_FETCH_MAX ? STORE_FETCH_MAX : rec->num;
    qms_rec_t end = { .type = QMS_ST_MSG_END, .req = rec->req, .seq = rec->seq };
    int rc = bind_str (stmt, 1, rec->s [QMS_FETCH_RECIPIENT]);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64 (stmt, 2, (sqlite3_int64) (rec->seq > INT64_MAX ? INT64_MAX : rec->seq));
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64 (stmt, 3, (sqlite3_int64) limit);
    size_t text = 0;
    while (rc == SQLITE_OK && text < QMS_FETCH_PAGE_BYTES && (rc = sqlite3_step (stmt)) == SQLITE_ROW) {
        qms_rec_t msg = { .type = QMS_ST_MSG, .req = rec->req };
        msg.seq = (uint64_t) sqlite3_column_int64 (stmt, 0);
        msg.time = (uint64_t) sqlite3_column_int64 (stmt, 1);
        for (int i = 0; i < 6; i++)
            msg.s [i] = col_str (stmt, i + 2);
        if (sqlite3_column_type (stmt, 8) != SQLITE_NULL) {
            msg.type = QMS_ST_GROUP_MSG;
            msg.s [QMS_MSG_GROUP] = col_str (stmt, 8);
        }
        reply (self, &msg);
        text += msg.s [QMS_MSG_TEXT].len;
        end.num++;
        end.seq = msg.seq;
        rc = SQLITE_OK;
    }
    if (rc != SQLITE_DONE && rc != SQLITE_OK)
        qms_warn (ACTOR, "event=sql_failed op=msg_fetch reason=\"%s\"", sqlite3_errmsg (self->db));
    stmt_done (stmt);
    reply (self, &end);
}

/*  A receipt: forget one message, telling who sent it and to which group,
    if any (for their ack). */
static void
msg_del (store_t *self, const qms_rec_t *rec)
{
    qms_rec_t answer = { .type = QMS_ST_MSG_DELETED, .req = rec->req, .s = { [QMS_DELETED_MSG_ID] = rec->s [QMS_DEL_MSG_ID] } };
    char sender [256] = "", client [256] = "", group [256] = "";
    sqlite3_stmt *stmt = self->stmt [S_MSG_GET];
    if (bind_strs (stmt, rec->s, 2) == SQLITE_OK && sqlite3_step (stmt) == SQLITE_ROW) {
        qms_str_copy (col_str (stmt, 0), sender, sizeof sender);
        qms_str_copy (col_str (stmt, 1), client, sizeof client);
        qms_str_copy (col_str (stmt, 2), group, sizeof group);
        answer.num = 1;
    }
    stmt_done (stmt);
    if (answer.num) {
        stmt = self->stmt [S_MSG_DEL];
        if (bind_strs (stmt, rec->s, 2) != SQLITE_OK) {
            stmt_done (stmt);
            answer.num = 0;
        }
        else
        if (step_once (self, S_MSG_DEL) != SQLITE_DONE)
            answer.num = 0;
    }
    answer.s [QMS_DELETED_SENDER] = qms_str (sender);
    answer.s [QMS_DELETED_CLIENT_ID] = qms_str (client);
    answer.s [QMS_DELETED_GROUP] = qms_str (group);
    if (rec->req)
        reply (self, &answer);
}

static outcome_t
msg_del_upto (store_t *self, const qms_rec_t *rec)
{
    sqlite3_stmt *stmt = self->stmt [S_MSG_DEL_UPTO];
    int rc = bind_str (stmt, 1, rec->s [QMS_UPTO_RECIPIENT]);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64 (stmt, 2, (sqlite3_int64) (rec->seq > INT64_MAX ? INT64_MAX : rec->seq));
    if (rc != SQLITE_OK) {
        stmt_done (stmt);
        return (outcome_t) { QMS_ST_ERROR, "bind failed" };
    }
    return step_once (self, S_MSG_DEL_UPTO) == SQLITE_DONE ? s_ok
         : (outcome_t) { QMS_ST_ERROR, "delete failed" };
}

/*  Messages older than the age limit are removed, in the background. */
static void
msg_expire (store_t *self)
{
    sqlite3_stmt *stmt = self->stmt [S_MSG_EXPIRE];
    uint64_t now = qms_now_ms ();
    uint64_t cutoff = now > self->message_max_age_ms ? now - self->message_max_age_ms : 0;
    if (sqlite3_bind_int64 (stmt, 1, db_time (cutoff)) != SQLITE_OK) {
        stmt_done (stmt);
        return;
    }
    if (step_once (self, S_MSG_EXPIRE) == SQLITE_DONE) {
        int removed = sqlite3_changes (self->db);
        if (removed)
            qms_info (ACTOR, "event=messages_expired count=%d max_age_days=%llu", removed,
                      (unsigned long long) (self->message_max_age_ms / 86400000u));
    }
}

/* ------------------------------------------------------------------------ */
/*  Groups (docs/PROTOCOL.md, "Groups").  The router is their single writer:
    it holds every group in memory and enforces who may do what and the
    limits.  The store keeps what it decided, each change whole or not at
    all, keeps the tables consistent (foreign keys, one owner who is a
    member) and reads them back when a router starts (ST_GROUP_LOAD). */

/*  Memberships per ST_GROUP_LOAD page at most. */
#define STORE_GROUP_LOAD_MAX    4096
/*  The longest user or group id a member line or a write may name (the
    fan-out targets hold ids of up to 255 bytes). */
#define STORE_GROUP_ID_MAX      255

static bool
str_same (qms_str_t a, qms_str_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp (a.ptr, b.ptr, a.len) == 0);
}

/*  A page of every group's memberships in cursor order, then ST_MSG_END.
    A page also ends after the row that brings its strings to
    QMS_FETCH_PAGE_BYTES, as a page of messages does. */
static void
group_load (store_t *self, const qms_rec_t *rec)
{
    if (!rec->req)
        return;
    sqlite3_stmt *stmt = self->stmt [S_GROUP_LOAD];
    uint64_t limit = rec->num == 0 || rec->num > STORE_GROUP_LOAD_MAX ? STORE_GROUP_LOAD_MAX : rec->num;
    qms_rec_t end = { .type = QMS_ST_MSG_END, .req = rec->req, .seq = rec->seq };
    int rc = sqlite3_bind_int64 (stmt, 1, (sqlite3_int64) (rec->seq > INT64_MAX ? INT64_MAX : rec->seq));
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64 (stmt, 2, (sqlite3_int64) limit);
    size_t bytes = 0;
    while (rc == SQLITE_OK && bytes < QMS_FETCH_PAGE_BYTES && (rc = sqlite3_step (stmt)) == SQLITE_ROW) {
        qms_rec_t row = { .type = QMS_ST_GROUP_ROW, .req = rec->req };
        row.seq = (uint64_t) sqlite3_column_int64 (stmt, 0);
        row.num = (uint64_t) sqlite3_column_int64 (stmt, 1);
        row.time = (uint64_t) sqlite3_column_int64 (stmt, 2);
        for (int i = 0; i < 6; i++) {
            row.s [i] = col_str (stmt, i + 3);
            bytes += row.s [i].len;
        }
        reply (self, &row);
        end.num++;
        end.seq = row.seq;
        rc = SQLITE_OK;
    }
    if (rc != SQLITE_DONE && rc != SQLITE_OK)
        qms_warn (ACTOR, "event=sql_failed op=group_load reason=\"%s\"", sqlite3_errmsg (self->db));
    stmt_done (stmt);
    reply (self, &end);
}

/*  One line of ST_GROUP_WRITE's members: a user id and a role (-1 when the
    line gives none). */
typedef struct {
    qms_str_t id;
    int role;
} member_line_t;

/*  The line at *offset: 1 (and *line), 0 at the end, -1 when malformed.
    A line is "id" or "id TAB role"; a last newline may follow the last
    line.  An empty line, an empty or over-long id, a control character in
    it, or a role other than one digit 0-2 is malformed. */
static int
member_line_next (qms_str_t lines, size_t *offset, member_line_t *line)
{
    if (*offset >= lines.len)
        return 0;
    const char *start = lines.ptr + *offset;
    size_t rest = lines.len - *offset;
    const char *newline = memchr (start, '\n', rest);
    size_t len = newline ? (size_t) (newline - start) : rest;
    *offset += len + (newline ? 1 : 0);
    const char *tab = memchr (start, '\t', len);
    size_t id_len = tab ? (size_t) (tab - start) : len;
    if (id_len == 0 || id_len > STORE_GROUP_ID_MAX)
        return -1;
    for (size_t i = 0; i < id_len; i++)
        if ((unsigned char) start [i] < 0x20 || start [i] == 0x7f)
            return -1;
    line->id = qms_strn (start, id_len);
    line->role = -1;
    if (tab) {
        if (len - id_len - 1 != 1 || tab [1] < '0' || tab [1] > '0' + (int) QMS_GROUP_ROLE_OWNER)
            return -1;
        line->role = tab [1] - '0';
    }
    return 1;
}

/*  An outcome whose detail names a member (in self->detail). */
static outcome_t
group_fail (store_t *self, uint64_t status, const char *what, qms_str_t id)
{
    snprintf (self->detail, sizeof self->detail, "%s%.*s", what,
              (int) (id.len > STORE_GROUP_ID_MAX ? STORE_GROUP_ID_MAX : id.len), id.ptr);
    return (outcome_t) { status, self->detail };
}

/*  Every member line is checked before anything is written: its form, and
    the role the op lets it carry.  Create: every line has a role, the
    owner's (s2) is the one with the owner role; add: member or admin;
    promote: admin; demote: member; remove and leave: a role is not used;
    rename: the lines are not read. */
static outcome_t
group_lines_check (store_t *self, const qms_rec_t *rec, uint64_t op)
{
    if (op == QMS_GROUP_OP_RENAME)
        return s_ok;
    qms_str_t lines = rec->s [QMS_GWRITE_MEMBERS], owner = rec->s [QMS_GWRITE_OWNER];
    size_t offset = 0;
    member_line_t line;
    int rc, count = 0, owners = 0;
    while ((rc = member_line_next (lines, &offset, &line)) == 1) {
        count++;
        bool is_owner = str_same (line.id, owner);
        const char *why = NULL;
        if (op == QMS_GROUP_OP_CREATE) {
            owners += is_owner;
            if (line.role < 0)
                why = "a member line without a role: ";
            else
            if (is_owner && line.role != (int) QMS_GROUP_ROLE_OWNER)
                why = "the owner's line must have the owner role: ";
            else
            if (!is_owner && line.role == (int) QMS_GROUP_ROLE_OWNER)
                why = "only the owner (s2) has the owner role: ";
        }
        else
        if (op == QMS_GROUP_OP_ADD && line.role != (int) QMS_GROUP_ROLE_MEMBER
                                   && line.role != (int) QMS_GROUP_ROLE_ADMIN)
            why = "a member is added as a member (0) or an admin (1): ";
        else
        if (op == QMS_GROUP_OP_PROMOTE && line.role != (int) QMS_GROUP_ROLE_ADMIN)
            why = "promote gives the admin role (1): ";
        else
        if (op == QMS_GROUP_OP_DEMOTE && line.role != (int) QMS_GROUP_ROLE_MEMBER)
            why = "demote gives the member role (0): ";
        if (why)
            return group_fail (self, QMS_ST_ERROR, why, line.id);
    }
    if (rc < 0) {
        snprintf (self->detail, sizeof self->detail,
                  "member line %d is malformed (a user id of 1-%d bytes, TAB, a role 0-2)",
                  count + 1, STORE_GROUP_ID_MAX);
        return (outcome_t) { QMS_ST_ERROR, self->detail };
    }
    if (op == QMS_GROUP_OP_CREATE && owners != 1)
        return (outcome_t) { QMS_ST_ERROR, owners ? "the owner is named more than once"
                                                  : "the owner (s2) is not among the members" };
    if (op != QMS_GROUP_OP_CREATE && count == 0)
        return (outcome_t) { QMS_ST_ERROR, "no member named" };
    return s_ok;
}

/*  Run a write bound with ?1 = a, ?2 = b (when given) and ?index = n (when
    index > 0); returns the SQLite code and sets *changes. */
static int
group_step (store_t *self, stmt_id_t id, qms_str_t a, const qms_str_t *b,
            int index, sqlite3_int64 n, int *changes)
{
    sqlite3_stmt *stmt = self->stmt [id];
    int rc = bind_str (stmt, 1, a);
    if (rc == SQLITE_OK && b)
        rc = bind_str (stmt, 2, *b);
    if (rc == SQLITE_OK && index > 0)
        rc = sqlite3_bind_int64 (stmt, index, n);
    if (rc != SQLITE_OK) {
        stmt_done (stmt);
        return rc;
    }
    rc = step_once (self, id);
    *changes = rc == SQLITE_DONE ? sqlite3_changes (self->db) : 0;
    return rc;
}

/*  One integer of a one-row query bound with ?1 = a, ?2 = b (when given):
    1 and *value when there is a row, 0 when none, -1 on failure. */
static int
group_query (store_t *self, stmt_id_t id, qms_str_t a, const qms_str_t *b, sqlite3_int64 *value)
{
    sqlite3_stmt *stmt = self->stmt [id];
    int rc = bind_str (stmt, 1, a);
    if (rc == SQLITE_OK && b)
        rc = bind_str (stmt, 2, *b);
    if (rc == SQLITE_OK)
        rc = sqlite3_step (stmt);
    if (rc == SQLITE_ROW)
        *value = sqlite3_column_int64 (stmt, 0);
    stmt_done (stmt);
    return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

/*  The group as stored before the change: its name and owner (malloc'd)
    and epoch.  SQLITE_ROW, SQLITE_DONE when there is none, else an error. */
static int
group_get (store_t *self, qms_str_t id, char **name, char **owner, sqlite3_int64 *epoch)
{
    sqlite3_stmt *stmt = self->stmt [S_GROUP_GET];
    int rc = bind_str (stmt, 1, id);
    if (rc == SQLITE_OK)
        rc = sqlite3_step (stmt);
    if (rc == SQLITE_ROW) {
        *name = qms_str_dup (col_str (stmt, 0));
        *owner = qms_str_dup (col_str (stmt, 1));
        *epoch = sqlite3_column_int64 (stmt, 2);
        if (!*name || !*owner)
            rc = SQLITE_NOMEM;
    }
    stmt_done (stmt);
    return rc;
}

/*  Create and add: every member line inserted, each answered with an
    ST_GROUP_ROW (its cursor, the member's name and key).  A user who does
    not exist is NO_USER naming them. */
static outcome_t
group_members_add (store_t *self, const qms_rec_t *rec, qms_str_t name, qms_str_t owner,
                   sqlite3_int64 epoch, sqlite3_int64 now)
{
    qms_str_t group = rec->s [QMS_GWRITE_GROUP];
    size_t offset = 0;
    member_line_t line;
    while (member_line_next (rec->s [QMS_GWRITE_MEMBERS], &offset, &line) == 1) {
        sqlite3_stmt *stmt = self->stmt [S_GROUP_MEMBER_INSERT];
        int rc = bind_str (stmt, 1, group);
        if (rc == SQLITE_OK)
            rc = bind_str (stmt, 2, line.id);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int (stmt, 3, line.role);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int64 (stmt, 4, now);
        if (rc != SQLITE_OK) {
            stmt_done (stmt);
            return (outcome_t) { QMS_ST_ERROR, "bind failed" };
        }
        rc = step_once (self, S_GROUP_MEMBER_INSERT);
        if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
            return group_fail (self, QMS_ST_NO_USER, "", line.id);
        if (rc == SQLITE_CONSTRAINT_UNIQUE)
            return group_fail (self, QMS_ST_ERROR, "already a member: ", line.id);
        if (rc != SQLITE_DONE)
            return (outcome_t) { QMS_ST_ERROR, (rc & 0xff) == SQLITE_READONLY ? "database is read-only"
                                                                              : "member insert failed" };
        qms_rec_t row = { .type = QMS_ST_GROUP_ROW, .req = rec->req, .num = (uint64_t) line.role,
                          .time = (uint64_t) epoch, .seq = (uint64_t) sqlite3_last_insert_rowid (self->db) };
        row.s [QMS_GROW_GROUP] = group;
        row.s [QMS_GROW_NAME] = name;
        row.s [QMS_GROW_OWNER] = owner;
        row.s [QMS_GROW_MEMBER] = line.id;
        stmt = self->stmt [S_GROUP_USER];
        rc = bind_str (stmt, 1, line.id);
        if (rc == SQLITE_OK)
            rc = sqlite3_step (stmt);
        if (rc == SQLITE_ROW) {
            row.s [QMS_GROW_MEMBER_NAME] = col_str (stmt, 0);
            row.s [QMS_GROW_MEMBER_KEY] = col_str (stmt, 1);
            if (rec->req)
                reply (self, &row);
        }
        stmt_done (stmt);
        if (rc != SQLITE_ROW)
            return (outcome_t) { QMS_ST_ERROR, "member lookup failed" };
    }
    return s_ok;
}

/*  Remove and leave: the members named go; a group left with nobody is
    deleted.  When the owner goes, s2 names the new owner (a member who
    stays), who gets the owner role. */
static outcome_t
group_members_remove (store_t *self, const qms_rec_t *rec, const char *owner_was)
{
    qms_str_t group = rec->s [QMS_GWRITE_GROUP], owner = rec->s [QMS_GWRITE_OWNER];
    size_t offset = 0;
    member_line_t line;
    int changes = 0;
    while (member_line_next (rec->s [QMS_GWRITE_MEMBERS], &offset, &line) == 1) {
        if (group_step (self, S_GROUP_MEMBER_DEL, group, &line.id, 0, 0, &changes) != SQLITE_DONE)
            return (outcome_t) { QMS_ST_ERROR, "member delete failed" };
        if (changes == 0)
            return group_fail (self, QMS_ST_ERROR, "not a member: ", line.id);
    }
    sqlite3_int64 left = 0, role = 0;
    if (group_query (self, S_GROUP_MEMBER_COUNT, group, NULL, &left) != 1)
        return (outcome_t) { QMS_ST_ERROR, "member count failed" };
    if (left == 0) {
        if (group_step (self, S_GROUP_DEL, group, NULL, 0, 0, &changes) != SQLITE_DONE)
            return (outcome_t) { QMS_ST_ERROR, "group delete failed" };
        return (outcome_t) { QMS_ST_OK, "group deleted: no member left" };
    }
    qms_str_t previous = qms_str (owner_was);
    int stays = group_query (self, S_GROUP_MEMBER_IS, group, &previous, &role);
    if (stays < 0)
        return (outcome_t) { QMS_ST_ERROR, "member lookup failed" };
    if (owner.len == 0 || str_same (owner, previous))
        return stays ? s_ok : (outcome_t) { QMS_ST_ERROR, "the owner left: s2 must name the new owner" };
    if (stays)
        return (outcome_t) { QMS_ST_ERROR, "the owner changes only when the owner leaves" };
    if (group_step (self, S_GROUP_MEMBER_ROLE, group, &owner, 3, QMS_GROUP_ROLE_OWNER, &changes) != SQLITE_DONE)
        return (outcome_t) { QMS_ST_ERROR, "role update failed" };
    if (changes == 0)
        return group_fail (self, QMS_ST_ERROR, "the new owner is not a member: ", owner);
    if (group_step (self, S_GROUP_SET_OWNER, group, &owner, 0, 0, &changes) != SQLITE_DONE)
        return (outcome_t) { QMS_ST_ERROR, "owner update failed" };
    return s_ok;
}

/*  Promote and demote: the role of each member named; the owner's own role
    does not change this way. */
static outcome_t
group_members_role (store_t *self, const qms_rec_t *rec, const char *owner)
{
    qms_str_t group = rec->s [QMS_GWRITE_GROUP];
    size_t offset = 0;
    member_line_t line;
    int changes = 0;
    while (member_line_next (rec->s [QMS_GWRITE_MEMBERS], &offset, &line) == 1) {
        if (str_same (line.id, qms_str (owner)))
            return group_fail (self, QMS_ST_ERROR, "the owner's role does not change: ", line.id);
        if (group_step (self, S_GROUP_MEMBER_ROLE, group, &line.id, 3, line.role, &changes) != SQLITE_DONE)
            return (outcome_t) { QMS_ST_ERROR, "role update failed" };
        if (changes == 0)
            return group_fail (self, QMS_ST_ERROR, "not a member: ", line.id);
    }
    return s_ok;
}

/*  The writes of one ST_GROUP_WRITE, inside its savepoint. */
static outcome_t
group_apply (store_t *self, const qms_rec_t *rec)
{
    qms_str_t group = rec->s [QMS_GWRITE_GROUP];
    sqlite3_int64 now = db_time (rec->time ? rec->time : qms_now_ms ());
    sqlite3_int64 epoch = db_time (rec->seq);
    int changes = 0, rc;
    if (rec->num == QMS_GROUP_OP_CREATE) {
        sqlite3_stmt *stmt = self->stmt [S_GROUP_INSERT];
        rc = bind_strs (stmt, rec->s, 3);       /* id, name, owner */
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int64 (stmt, 4, epoch ? epoch : 1);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int64 (stmt, 5, now);
        if (rc != SQLITE_OK) {
            stmt_done (stmt);
            return (outcome_t) { QMS_ST_ERROR, "bind failed" };
        }
        rc = step_once (self, S_GROUP_INSERT);
        if (rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE)
            return (outcome_t) { QMS_ST_EXISTS, "group id taken" };
        if (rc != SQLITE_DONE)
            return (outcome_t) { QMS_ST_ERROR, (rc & 0xff) == SQLITE_READONLY ? "database is read-only"
                                                                              : "group insert failed" };
        return group_members_add (self, rec, rec->s [QMS_GWRITE_NAME], rec->s [QMS_GWRITE_OWNER],
                                  epoch ? epoch : 1, now);
    }
    char *name = NULL, *owner = NULL;
    sqlite3_int64 stored_epoch = 0;
    rc = group_get (self, group, &name, &owner, &stored_epoch);
    outcome_t outcome = s_ok;
    if (rc == SQLITE_DONE)
        outcome = group_fail (self, QMS_ST_ERROR, "no such group: ", group);
    else
    if (rc != SQLITE_ROW)
        outcome = (outcome_t) { QMS_ST_ERROR, "group lookup failed" };
    else
    if (epoch && group_step (self, S_GROUP_SET_EPOCH, group, NULL, 2, epoch, &changes) != SQLITE_DONE)
        outcome = (outcome_t) { QMS_ST_ERROR, "epoch update failed" };
    else
    switch (rec->num) {
        case QMS_GROUP_OP_ADD:
            outcome = group_members_add (self, rec, qms_str (name), qms_str (owner),
                                         epoch ? epoch : stored_epoch, now);
            break;
        case QMS_GROUP_OP_REMOVE:
        case QMS_GROUP_OP_LEAVE:
            outcome = group_members_remove (self, rec, owner);
            break;
        case QMS_GROUP_OP_RENAME:
            if (group_step (self, S_GROUP_SET_NAME, group, &rec->s [QMS_GWRITE_NAME], 0, 0, &changes) != SQLITE_DONE)
                outcome = (outcome_t) { QMS_ST_ERROR, "rename failed" };
            break;
        default:                /* promote, demote */
            outcome = group_members_role (self, rec, owner);
    }
    free (name);
    free (owner);
    return outcome;
}

/*  QMS_ST_GROUP_WRITE: one change of a group, whole or not at all (its own
    savepoint; the batch's commit makes it durable).  The rows it answered
    are taken back when it fails. */
static outcome_t
group_write (store_t *self, const qms_rec_t *rec)
{
    if (rec->num < QMS_GROUP_OP_CREATE || rec->num > QMS_GROUP_OP_DEMOTE) {
        snprintf (self->detail, sizeof self->detail, "unknown group op %llu", (unsigned long long) rec->num);
        return (outcome_t) { QMS_ST_ERROR, self->detail };
    }
    qms_str_t group = rec->s [QMS_GWRITE_GROUP];
    if (group.len == 0 || group.len > STORE_GROUP_ID_MAX)
        return (outcome_t) { QMS_ST_ERROR, "missing or over-long group id" };
    if ((rec->num == QMS_GROUP_OP_CREATE || rec->num == QMS_GROUP_OP_RENAME)
    &&  rec->s [QMS_GWRITE_NAME].len == 0)
        return (outcome_t) { QMS_ST_ERROR, "missing group name" };
    if (rec->num == QMS_GROUP_OP_CREATE && rec->s [QMS_GWRITE_OWNER].len == 0)
        return (outcome_t) { QMS_ST_ERROR, "missing owner" };
    outcome_t outcome = group_lines_check (self, rec, rec->num);
    if (outcome.status != QMS_ST_OK)
        return outcome;
    size_t mark = self->out.len;
    if (!exec_stmt (self, S_SAVEPOINT))
        return (outcome_t) { QMS_ST_ERROR, "savepoint failed" };
    outcome = group_apply (self, rec);
    if (outcome.status == QMS_ST_OK && exec_stmt (self, S_RELEASE))
        return outcome;
    if (outcome.status == QMS_ST_OK)
        outcome = (outcome_t) { QMS_ST_ERROR, "commit failed" };
    record_rollback (self);
    self->out.len = mark;
    return outcome;
}

/*  Whether the database takes writes.  SQLite opens a file it may not
    write (mode 0444, a read-only mount) read-only, and says so; and a write
    transaction must be able to start: BEGIN IMMEDIATE takes the write lock
    and fails with SQLITE_READONLY on such a database (or when the lock
    cannot be had within the busy timeout).  Inside a batch the batch's own
    BEGIN IMMEDIATE has succeeded already; outside one (the batch's could
    not start) the probe does not wait for the lock again.  Nothing is
    written, so this costs no fsync; a disk that fills up or a file system
    that fails under a write shows only when a real write fails
    (docs/OPERATIONS.md). */
static bool
db_writable (store_t *self)
{
    if (sqlite3_db_readonly (self->db, "main") != 0)
        return false;
    if (!sqlite3_get_autocommit (self->db))
        return true;
    sqlite3_busy_timeout (self->db, 0);
    bool began = sqlite3_exec (self->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK;
    sqlite3_busy_timeout (self->db, STORE_BUSY_TIMEOUT_MS);
    if (!sqlite3_get_autocommit (self->db))
        sqlite3_exec (self->db, "ROLLBACK", NULL, NULL, NULL);
    return began;
}

/*  The probe, with a log line when its answer changes. */
static bool
writable_check (store_t *self)
{
    bool writable = db_writable (self);
    if (writable != self->writable) {
        if (writable)
            qms_info (ACTOR, "event=database_writable path=\"%s\"", self->path);
        else
            qms_warn (ACTOR, "event=database_read_only path=\"%s\" reason=\"%s\"", self->path,
                      sqlite3_db_readonly (self->db, "main") ? "opened read-only: the file or its file system is not writable"
                                                              : sqlite3_errmsg (self->db));
        self->writable = writable;
    }
    return writable;
}

/*  QMS_STATS_GET: req 0 (a gateway's heartbeat) or with QMS_STATS_BRIEF (a
    readiness probe) wants only whether the database takes writes; others
    get every figure. */
static void
stats (store_t *self, const qms_rec_t *rec)
{
    qms_buf_t text;
    qms_buf_init (&text);
    bool writable = writable_check (self);
    qms_metrics_head (&text, "qms_store_writable", "gauge", "Whether the database takes writes.");
    qms_metrics_value (&text, "qms_store_writable", "", writable ? 1 : 0);
    if (rec->req && !(rec->req & QMS_STATS_BRIEF)) {
        qms_metrics_head (&text, "qms_store_rows", "gauge", "Rows in the database.");
        qms_metrics_value (&text, "qms_store_rows", "actor=\"store\",table=\"users\"", (double) query_int (self, S_COUNT_USERS));
        qms_metrics_value (&text, "qms_store_rows", "actor=\"store\",table=\"sessions\"", (double) query_int (self, S_COUNT_SESSIONS));
        qms_metrics_value (&text, "qms_store_rows", "actor=\"store\",table=\"messages\"", (double) query_int (self, S_COUNT_MESSAGES));
        qms_metrics_value (&text, "qms_store_rows", "actor=\"store\",table=\"groups\"", (double) query_int (self, S_COUNT_GROUPS));
        qms_metrics_value (&text, "qms_store_rows", "actor=\"store\",table=\"group_members\"", (double) query_int (self, S_COUNT_GROUP_MEMBERS));
        qms_metrics_head (&text, "qms_store_op_duration_seconds", "histogram", "SQLite work per request, by request.");
        for (int type = 0; type < QMS_TYPE_COUNT; type++)
            if (self->op_ms [type].count) {
                char labels [96];
                snprintf (labels, sizeof labels, "actor=\"store\",op=\"%s\"", qms_type_name (type));
                qms_metrics_hist (&text, "qms_store_op_duration_seconds", labels, &self->op_ms [type]);
            }
    }
    qms_rec_t answer = { .type = QMS_STATS, .req = rec->req };
    answer.s [QMS_STATS_TEXT] = qms_strn ((const char *) text.data, text.len);
    reply (self, &answer);
    qms_buf_free (&text);
}

static void run_record (store_t *self, const qms_rec_t *rec);

/*  Run one record, its time observed per type (qms_store_op_duration_seconds). */
static void
run_record_timed (store_t *self, const qms_rec_t *rec)
{
    if (rec->type == QMS_STATS_GET) {
        stats (self, rec);
        return;
    }
    struct timespec t0, t1;
    clock_gettime (CLOCK_MONOTONIC, &t0);
    run_record (self, rec);
    clock_gettime (CLOCK_MONOTONIC, &t1);
    qms_hist_observe (&self->op_ms [rec->type],
                      (double) (t1.tv_sec - t0.tv_sec) * 1e3 + (double) (t1.tv_nsec - t0.tv_nsec) / 1e6);
}

static void
run_record (store_t *self, const qms_rec_t *rec)
{
    outcome_t outcome;
    switch (rec->type) {
        case QMS_ST_USER_GET:       user_get (self, rec); return;
        case QMS_ST_SESSION_GET:    session_get (self, rec); return;
        case QMS_ST_USER_CREATE:    outcome = user_create (self, rec); break;
        case QMS_ST_USER_REHASH:    outcome = user_rehash (self, rec); break;
        case QMS_ST_SESSION_START:  outcome = session_start (self, rec); break;
        case QMS_ST_SESSION_DEL:    outcome = session_del (self, rec); break;
        case QMS_ST_SESSION_TOUCH:  outcome = session_touch (self, rec); break;
        case QMS_ST_MSG_FETCH:      msg_fetch (self, rec); return;
        case QMS_ST_USER_FIND:      user_find (self, rec); return;
        case QMS_ST_MSG_DEL:        msg_del (self, rec); return;
        case QMS_ST_MSG_DEL_UPTO:   outcome = msg_del_upto (self, rec); break;
        case QMS_ST_MSG_STORE:
        case QMS_ST_GROUP_MSG_STORE:
            outcome = msg_store (self, rec, rec->type == QMS_ST_GROUP_MSG_STORE
                                            ? rec->s [QMS_STORE_GROUP] : qms_str (""));
            if (!outcome.detail)
                return;                         /* answered already */
            break;
        case QMS_ST_GROUP_LOAD:     group_load (self, rec); return;
        case QMS_ST_GROUP_WRITE:    outcome = group_write (self, rec); break;
        default:                    return;     /* logged by batch_check */
    }
    if (outcome.status == QMS_ST_ERROR)
        qms_warn (ACTOR, "event=request_failed type=%s req=%" PRIu64 " reason=\"%s\"",
                  qms_type_name (rec->type), rec->req, outcome.detail);
    if (rec->req) {
        qms_rec_t answer = { .type = QMS_ST_RESULT, .req = rec->req,
                             .num = outcome.status, .s = { [QMS_RESULT_DETAIL] = qms_str (outcome.detail) } };
        reply (self, &answer);
    }
}

/* ------------------------------------------------------------------------ */
/*  Administration (common/qms_admin.h).  Replies go to self->peer; a long
    answer leaves in several messages. */

static void
admin_flush (store_t *self)
{
    if (self->out.len
    &&  qms_batch_send (self->router_raw, self->peer, self->peer_len, &self->out))
        qms_warn (ACTOR, "event=reply_dropped to=admin bytes=%zu reason=\"%s\"",
                  self->out.len, zmq_strerror (errno));
    qms_buf_reset (&self->out);
}

static void
admin_done (store_t *self, uint64_t req, uint64_t status, const char *detail)
{
    qms_rec_t done = { .type = QMS_ADMIN_DONE, .req = req, .num = status, .s = { [QMS_RESULT_DETAIL] = qms_str (detail) } };
    reply (self, &done);
}

/*  The current row of S_ADMIN_USER(S) as an admin user row. */
static void
admin_user_row (store_t *self, uint64_t req, sqlite3_stmt *stmt)
{
    qms_rec_t row = { .type = QMS_ST_ADMIN_ROW, .req = req };
    sqlite3_int64 created = sqlite3_column_int64 (stmt, 0), waiting = sqlite3_column_int64 (stmt, 1);
    row.time = created > 0 ? (uint64_t) created : 0;
    row.num = waiting > 0 ? (uint64_t) waiting : 0;
    for (int i = 0; i < 4; i++)
        row.s [i] = col_str (stmt, i + 2);
    reply (self, &row);
}

static void
admin_list (store_t *self, const qms_rec_t *rec)
{
    sqlite3_stmt *stmt = self->stmt [S_ADMIN_USERS];
    uint64_t count = 0;
    int rc;
    while ((rc = sqlite3_step (stmt)) == SQLITE_ROW) {
        admin_user_row (self, rec->req, stmt);
        if (++count % STORE_ADMIN_ROWS == 0)
            admin_flush (self);
    }
    char detail [64];
    snprintf (detail, sizeof detail, "%llu users", (unsigned long long) count);
    if (rc != SQLITE_DONE)
        snprintf (detail, sizeof detail, "%s", sqlite3_errmsg (self->db));
    stmt_done (stmt);
    admin_done (self, rec->req, rc == SQLITE_DONE ? QMS_ST_OK : QMS_ST_ERROR, detail);
}

/*  The user whose name key is s0: its row replied, its id copied.
    SQLITE_ROW when found, SQLITE_DONE when not, else an error. */
static int
admin_find (store_t *self, const qms_rec_t *rec, char *id, size_t id_size, bool *session)
{
    sqlite3_stmt *stmt = self->stmt [S_ADMIN_USER];
    int rc = bind_str (stmt, 1, rec->s [QMS_ADMIN_ARG_KEY]);
    if (rc == SQLITE_OK)
        rc = sqlite3_step (stmt);
    if (rc == SQLITE_ROW) {
        admin_user_row (self, rec->req, stmt);
        if (!qms_str_copy (col_str (stmt, 2), id, id_size))
            rc = SQLITE_TOOBIG;
        *session = sqlite3_column_type (stmt, 5) != SQLITE_NULL;
    }
    stmt_done (stmt);
    return rc;
}

static void
admin_not_found (store_t *self, const qms_rec_t *rec, int rc)
{
    if (rc == SQLITE_DONE)
        admin_done (self, rec->req, QMS_ST_NO_USER, "no such user");
    else
        admin_done (self, rec->req, QMS_ST_ERROR, sqlite3_errstr (rc));
}

static void
admin_show (store_t *self, const qms_rec_t *rec)
{
    char id [MAX_ADMIN_ID];
    bool session;
    int rc = admin_find (self, rec, id, sizeof id, &session);
    if (rc != SQLITE_ROW) {
        admin_not_found (self, rec, rc);
        return;
    }
    if (rec->num == QMS_ADMIN_USER_SESSIONS) {
        sqlite3_stmt *stmt = self->stmt [S_ADMIN_SESSIONS];
        rc = bind_str (stmt, 1, rec->s [QMS_ADMIN_ARG_KEY]);
        while (rc == SQLITE_OK && (rc = sqlite3_step (stmt)) == SQLITE_ROW) {
            qms_rec_t row = { .type = QMS_ST_ADMIN_ROW, .req = rec->req };
            row.time = (uint64_t) sqlite3_column_int64 (stmt, 0);
            row.num = (uint64_t) sqlite3_column_int64 (stmt, 1);
            row.s [QMS_ROW_ID] = col_str (stmt, 2);
            row.s [QMS_ROW_HASH] = col_str (stmt, 3);
            reply (self, &row);
            rc = SQLITE_OK;
        }
        stmt_done (stmt);
        if (rc != SQLITE_DONE && rc != SQLITE_OK) {
            admin_done (self, rec->req, QMS_ST_ERROR, sqlite3_errstr (rc));
            return;
        }
    }
    admin_done (self, rec->req, QMS_ST_OK, "");
}

/*  A user's delete, inside admin_user_write's transaction: the session,
    the messages waiting and the memberships go with the user (ON DELETE
    CASCADE).  Each group the user was in moves to its next epoch (a router
    that loads it after sees the membership changed); one left with no
    member is deleted, and one that lost its owner gets the
    longest-standing admin, else the longest-standing member, as owner
    (docs/PROTOCOL.md, "Groups").  A router that runs meanwhile keeps its
    copy of the groups until it loads them again. */
static int
admin_user_delete (store_t *self, const char *id)
{
    int changes = 0;
    int rc = write_rows (self, S_GROUP_USER_EPOCH, qms_str (id), NULL, NULL, &changes);
    if (rc == SQLITE_DONE)
        rc = write_rows (self, S_ADMIN_USER_DEL, qms_str (id), NULL, NULL, &changes);
    if (rc == SQLITE_DONE)
        rc = step_once (self, S_GROUP_DROP_EMPTY);
    if (rc == SQLITE_DONE)
        rc = write_rows (self, S_GROUP_NEW_OWNER, qms_str (id), NULL, NULL, &changes);
    if (rc == SQLITE_DONE)
        rc = step_once (self, S_GROUP_OWNER_ROLE);
    return rc;
}

/*  delete, logout, password: the user's row as it was, then the change in
    one transaction. */
static void
admin_user_write (store_t *self, const qms_rec_t *rec)
{
    if (rec->num == QMS_ADMIN_USER_PASSWORD && rec->s [QMS_ADMIN_ARG_PHC].len == 0) {
        admin_done (self, rec->req, QMS_ST_ERROR, "no password hash");
        return;
    }
    size_t mark = self->out.len;
    if (!exec_stmt (self, S_BEGIN)) {
        admin_done (self, rec->req, QMS_ST_ERROR, sqlite3_errmsg (self->db));
        return;
    }
    char id [MAX_ADMIN_ID];
    bool session = false;
    int changes = 0, rc = admin_find (self, rec, id, sizeof id, &session);
    const char *what = rec->num == QMS_ADMIN_USER_DELETE ? "user_deleted"
                     : rec->num == QMS_ADMIN_USER_LOGOUT ? "session_deleted" : "password_reset";
    if (rc == SQLITE_ROW && rec->num == QMS_ADMIN_USER_DELETE)
        rc = admin_user_delete (self, id);
    else
    if (rc == SQLITE_ROW) {
        rc = SQLITE_DONE;
        if (rec->num == QMS_ADMIN_USER_PASSWORD)
            rc = write_rows (self, S_USER_REHASH, qms_str (id), &rec->s [QMS_ADMIN_ARG_PHC], NULL, &changes);
        if (rc == SQLITE_DONE)
            rc = write_rows (self, S_SESSION_DEL_USER, qms_str (id), NULL, NULL, &changes);
    }
    else {
        exec_stmt (self, S_ROLLBACK);
        self->out.len = mark;
        admin_not_found (self, rec, rc);
        return;
    }
    if (rc == SQLITE_DONE && exec_stmt (self, S_COMMIT)) {
        qms_info (ACTOR, "event=admin_%s user=%s", what, id);
        admin_done (self, rec->req, QMS_ST_OK, session ? "session deleted" : "no session");
        return;
    }
    const char *why = sqlite3_errmsg (self->db);
    qms_warn (ACTOR, "event=admin_failed op=%s user=%s reason=\"%s\"", what, id, why);
    if (!sqlite3_get_autocommit (self->db))
        exec_stmt (self, S_ROLLBACK);
    self->out.len = mark;
    admin_done (self, rec->req, QMS_ST_ERROR, "the change could not be written");
}

/*  SQLite's online backup into a new file.  The store's thread copies the
    whole database in one step: consistent, and nothing else runs meanwhile. */
static void
admin_backup (store_t *self, const qms_rec_t *rec)
{
    char path [1100], detail [1400];
    qms_str_t file = rec->s [QMS_ADMIN_ARG_FILE];
    if (file.len == 0 || file.ptr [0] != '/' || memchr (file.ptr, 0, file.len)
    ||  !qms_str_copy (file, path, sizeof path)) {
        admin_done (self, rec->req, QMS_ST_ERROR, "give the backup file as an absolute path");
        return;
    }
    int fd = open (path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf (detail, sizeof detail, "%s: %s", path, errno == EEXIST ? "the file exists" : strerror (errno));
        admin_done (self, rec->req, errno == EEXIST ? QMS_ST_EXISTS : QMS_ST_ERROR, detail);
        return;
    }
    close (fd);
    sqlite3 *copy = NULL;
    int rc = sqlite3_open_v2 (path, &copy, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    sqlite3_backup *backup = rc == SQLITE_OK ? sqlite3_backup_init (copy, "main", self->db, "main") : NULL;
    int pages = 0;
    if (backup) {
        rc = sqlite3_backup_step (backup, -1);
        pages = sqlite3_backup_pagecount (backup);
        int finish = sqlite3_backup_finish (backup);
        rc = rc == SQLITE_DONE ? finish : rc;
    }
    else
    if (rc == SQLITE_OK)
        rc = sqlite3_errcode (copy);
    snprintf (detail, sizeof detail, "%s", copy ? sqlite3_errmsg (copy) : sqlite3_errstr (rc));
    if (copy && sqlite3_close (copy) != SQLITE_OK && rc == SQLITE_OK)
        rc = SQLITE_ERROR;
    struct stat info;
    if (rc != SQLITE_OK || stat (path, &info)) {
        unlink (path);
        qms_warn (ACTOR, "event=admin_backup_failed path=\"%s\" reason=\"%s\"", path, detail);
        admin_done (self, rec->req, QMS_ST_ERROR, detail);
        return;
    }
    qms_info (ACTOR, "event=admin_backup path=\"%s\" pages=%d bytes=%lld", path, pages,
              (long long) info.st_size);
    snprintf (detail, sizeof detail, "%d pages, %lld bytes", pages, (long long) info.st_size);
    admin_done (self, rec->req, QMS_ST_OK, detail);
}

static void
admin_problem (store_t *self, uint64_t req, const char *text, int *problems)
{
    qms_rec_t row = { .type = QMS_ST_ADMIN_ROW, .req = req, .s = { [QMS_ROW_PROBLEM] = qms_str (text) } };
    reply (self, &row);
    if (++*problems % STORE_ADMIN_ROWS == 0)
        admin_flush (self);
}

/*  integrity_check, foreign_key_check and the groups' own rules (one
    owner, who is a member; no empty group): every problem is a row. */
static void
admin_check (store_t *self, const qms_rec_t *rec)
{
    int problems = 0, rc;
    char text [512];
    sqlite3_stmt *stmt = self->stmt [S_ADMIN_INTEGRITY];
    while ((rc = sqlite3_step (stmt)) == SQLITE_ROW) {
        qms_str_t line = col_str (stmt, 0);
        if (!qms_str_eq (line, "ok")) {
            snprintf (text, sizeof text, "integrity: %.*s", (int) line.len, line.ptr);
            admin_problem (self, rec->req, text, &problems);
        }
    }
    if (rc != SQLITE_DONE) {
        snprintf (text, sizeof text, "integrity_check stopped: %s", sqlite3_errmsg (self->db));
        admin_problem (self, rec->req, text, &problems);
    }
    stmt_done (stmt);
    stmt = self->stmt [S_ADMIN_FOREIGN_KEYS];
    while ((rc = sqlite3_step (stmt)) == SQLITE_ROW) {
        qms_str_t table = col_str (stmt, 0), parent = col_str (stmt, 2);
        snprintf (text, sizeof text, "foreign key: %.*s row %lld refers to a missing row of %.*s",
                  (int) table.len, table.ptr, (long long) sqlite3_column_int64 (stmt, 1),
                  (int) parent.len, parent.ptr);
        admin_problem (self, rec->req, text, &problems);
    }
    if (rc != SQLITE_DONE) {
        snprintf (text, sizeof text, "foreign_key_check stopped: %s", sqlite3_errmsg (self->db));
        admin_problem (self, rec->req, text, &problems);
    }
    stmt_done (stmt);
    stmt = self->stmt [S_ADMIN_GROUP_CHECK];
    while ((rc = sqlite3_step (stmt)) == SQLITE_ROW) {
        qms_str_t line = col_str (stmt, 0);
        snprintf (text, sizeof text, "%.*s", (int) line.len, line.ptr);
        admin_problem (self, rec->req, text, &problems);
    }
    if (rc != SQLITE_DONE) {
        snprintf (text, sizeof text, "group check stopped: %s", sqlite3_errmsg (self->db));
        admin_problem (self, rec->req, text, &problems);
    }
    stmt_done (stmt);
    snprintf (text, sizeof text, "%d problem%s", problems, problems == 1 ? "" : "s");
    qms_info (ACTOR, "event=admin_check problems=%d", problems);
    admin_done (self, rec->req, problems ? QMS_ST_ERROR : QMS_ST_OK, problems ? text : "ok");
}

static void
admin_run (store_t *self, const qms_rec_t *rec)
{
    switch (rec->num) {
        case QMS_ADMIN_PING:            admin_done (self, rec->req, QMS_ST_OK, self->path); break;
        case QMS_ADMIN_USER_LIST:       admin_list (self, rec); break;
        case QMS_ADMIN_USER_SHOW:
        case QMS_ADMIN_USER_SESSIONS:   admin_show (self, rec); break;
        case QMS_ADMIN_USER_DELETE:
        case QMS_ADMIN_USER_LOGOUT:
        case QMS_ADMIN_USER_PASSWORD:   admin_user_write (self, rec); break;
        case QMS_ADMIN_DB_BACKUP:       admin_backup (self, rec); break;
        case QMS_ADMIN_DB_CHECK:        admin_check (self, rec); break;
        default:
            qms_warn (ACTOR, "event=admin_unknown op=%llu", (unsigned long long) rec->num);
            admin_done (self, rec->req, QMS_ST_ERROR, "unknown operation");
    }
}

static bool batch_check (const uint8_t *data, size_t size);

/*  A batch of QMS_ST_ADMIN records (the command sends one at a time). */
static void
admin_batch (store_t *self, const uint8_t *identity, size_t identity_len,
             const uint8_t *data, size_t size)
{
    if (!batch_check (data, size))
        return;
    size_t offset = 0;
    qms_rec_t rec;
    self->peer = identity;
    self->peer_len = identity_len;
    qms_buf_reset (&self->out);
    offset = 0;
    while (qms_rec_next (data, size, &offset, &rec) == 1) {
        if (rec.type == QMS_ST_ADMIN)
            admin_run (self, &rec);
        else
            qms_warn (ACTOR, "event=unexpected_records from=admin type=%s action=ignored",
                      qms_type_name (rec.type));
    }
    admin_flush (self);
    self->peer = NULL;
}

/* ------------------------------------------------------------------------ */
/*  Batches */

/*  The whole batch is checked before any of it runs (qms_batch_valid), so
    a bad batch is dropped whole instead of half applied. */
static bool
batch_check (const uint8_t *data, size_t size)
{
    return qms_inbox_accept (ACTOR, "peer", QMS_ROLE_STORE, data, size);
}

/*  Returns -1 when, inside a batch transaction, an error made SQLite roll
    the whole transaction back (SQLITE_FULL, IOERR, ...): nothing of the
    batch is applied then, and the caller retries it record by record. */
static int
run_records (store_t *self, const uint8_t *data, size_t size)
{
    size_t offset = 0;
    qms_rec_t rec;
    while (qms_rec_next (data, size, &offset, &rec) == 1) {
        run_record_timed (self, &rec);
        if (self->in_batch && sqlite3_get_autocommit (self->db))
            return -1;
    }
    return 0;
}

static void
handle_batch (store_t *self, const uint8_t *identity, size_t identity_len,
              const uint8_t *data, size_t size)
{
    if (size && data [0] == QMS_ST_ADMIN) {
        admin_batch (self, identity, identity_len, data, size);
        return;
    }
    if (!batch_check (data, size))
        return;
    qms_buf_reset (&self->out);
    self->in_batch = exec_stmt (self, S_BEGIN);
    int rc = run_records (self, data, size);
    if (self->in_batch && (rc < 0 || !exec_stmt (self, S_COMMIT))) {
        /*  The batch as a whole could not commit: undo it and give each
            record its own transaction, so every reply tells the truth. */
        qms_warn (ACTOR, "event=batch_failed action=retry_each reason=\"%s\"",
                  sqlite3_errmsg (self->db));
        if (!sqlite3_get_autocommit (self->db))
            exec_stmt (self, S_ROLLBACK);
        self->in_batch = false;
        qms_buf_reset (&self->out);
        run_records (self, data, size);
    }
    self->in_batch = false;
    if (self->out.len
    &&  qms_batch_send (self->router_raw, identity, identity_len, &self->out))
        qms_warn (ACTOR, "event=reply_dropped bytes=%zu reason=\"%s\"",
                  self->out.len, zmq_strerror (errno));
}

/* ------------------------------------------------------------------------ */
/*  Opening, migrating, closing */

/*  The version row, created (as 0) in a new database; -1 on failure. */
static int
schema_version_read (sqlite3 *db, char *why, size_t why_size)
{
    sqlite3_stmt *stmt = NULL;
    int version = -1, rows = 0, rc;
    if (sqlite3_prepare_v2 (db, "SELECT version FROM schema_version", -1, &stmt, NULL) == SQLITE_OK) {
        while ((rc = sqlite3_step (stmt)) == SQLITE_ROW) {
            sqlite3_int64 value = sqlite3_column_int64 (stmt, 0);
            version = value < 0 || value > INT32_MAX ? -2 : (int) value;
            rows++;
        }
        if (rc != SQLITE_DONE)
            rows = -1;
    }
    else
        rows = -1;
    sqlite3_finalize (stmt);
    if (rows < 0) {
        snprintf (why, why_size, "%s", sqlite3_errmsg (db));
        return -1;
    }
    if (rows == 0)
        return sqlite3_exec (db, "INSERT INTO schema_version (version) VALUES (0)",
                             NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
    if (rows > 1 || version < 0) {
        snprintf (why, why_size, "schema_version holds %d rows or a bad value", rows);
        return -1;
    }
    return version;
}

static bool
schema_version_write (sqlite3 *db, int version)
{
    sqlite3_stmt *stmt = NULL;
    bool ok = sqlite3_prepare_v2 (db, "UPDATE schema_version SET version = ?1", -1, &stmt, NULL) == SQLITE_OK
           && sqlite3_bind_int (stmt, 1, version) == SQLITE_OK
           && sqlite3_step (stmt) == SQLITE_DONE;
    sqlite3_finalize (stmt);
    return ok;
}

/*  Bring the schema to STORE_SCHEMA_VERSION, one transaction per step.  The
    version is read inside each step's transaction, so two processes
    starting on one file cannot both apply a step. */
static bool
store_migrate (sqlite3 *db, char *why, size_t why_size)
{
    for (;;) {
        if (sqlite3_exec (db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
            snprintf (why, why_size, "%s", sqlite3_errmsg (db));
            return false;
        }
        int version = -1;
        if (sqlite3_exec (db, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
                          NULL, NULL, NULL) == SQLITE_OK)
            version = schema_version_read (db, why, why_size);
        else
            snprintf (why, why_size, "%s", sqlite3_errmsg (db));
        bool ok = version >= 0;
        if (ok && version > STORE_SCHEMA_VERSION) {
            snprintf (why, why_size, "database schema version %d is newer than this build knows (%d)",
                      version, STORE_SCHEMA_VERSION);
            ok = false;
        }
        if (ok && version == STORE_SCHEMA_VERSION) {
            if (sqlite3_exec (db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK)
                return true;
            snprintf (why, why_size, "%s", sqlite3_errmsg (db));
            ok = false;
        }
        if (ok && (sqlite3_exec (db, s_migrations [version], NULL, NULL, NULL) != SQLITE_OK
               || !schema_version_write (db, version + 1)
               || sqlite3_exec (db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)) {
            snprintf (why, why_size, "migration to version %d failed: %s",
                      version + 1, sqlite3_errmsg (db));
            ok = false;
        }
        if (!ok) {
            if (!sqlite3_get_autocommit (db))
                sqlite3_exec (db, "ROLLBACK", NULL, NULL, NULL);
            return false;
        }
        qms_info (ACTOR, "event=migrate from=%d to=%d", version, version + 1);
    }
}

/*  Create the file ourselves (SQLite would create it 0644): password hashes
    and session hashes are nobody else's business.  SQLite gives the -wal
    and -shm files the database file's mode.  A file that exists but may
    not be written (mode 0444, a read-only mount) is opened read-only: what
    needs no write goes on working (look-ups, sessions the router holds,
    live messages), every write is refused ("database is read-only"), and
    /readyz answers 503. */
static bool
store_create_file (const char *path, char *why, size_t why_size)
{
    int fd = open (path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 && (errno == EACCES || errno == EROFS || errno == EPERM)) {
        int err = errno;
        fd = open (path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0)
            qms_warn (ACTOR, "event=database_read_only path=\"%s\" reason=\"%s\" "
                      "action=\"serving read-only: every write fails, /readyz answers 503\"",
                      path, strerror (err));
        else
            errno = err;
    }
    if (fd < 0) {
        snprintf (why, why_size, "%s", strerror (errno));
        return false;
    }
    struct stat info;
    bool ok = fstat (fd, &info) == 0 && S_ISREG (info.st_mode);
    if (!ok)
        snprintf (why, why_size, "not a regular file");
    else
    if (info.st_mode & 077)
        qms_warn (ACTOR, "event=loose_mode path=\"%s\" mode=%03o", path,
                  (unsigned) (info.st_mode & 0777));
    close (fd);
    return ok;
}

/*  PRAGMAs, checked.  journal_mode=WAL with synchronous=FULL: a commit
    returns only after its WAL frames are fsynced, so a message we answered
    "stored" survives a crash of this process (kill -9) and of the machine
    (power loss) alike.  The cost is one fsync per commit, and a commit is a
    whole batch of records (the router sends its writes batched), so under
    load many messages share one fsync. */
static bool
store_pragmas (sqlite3 *db, char *why, size_t why_size)
{
    sqlite3_busy_timeout (db, STORE_BUSY_TIMEOUT_MS);
    sqlite3_stmt *stmt = NULL;
    bool wal = false;
    int rc = sqlite3_prepare_v2 (db, "PRAGMA journal_mode = WAL", -1, &stmt, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step (stmt)) == SQLITE_ROW) {
        const char *mode = (const char *) sqlite3_column_text (stmt, 0);
        wal = mode && strcmp (mode, "wal") == 0;
        rc = SQLITE_OK;
    }
    sqlite3_finalize (stmt);
    if (rc != SQLITE_OK || !wal) {
        snprintf (why, why_size, "%s", rc != SQLITE_OK ? sqlite3_errmsg (db)
                                                        : "journal_mode=WAL refused");
        return false;
    }
    if (sqlite3_exec (db, "PRAGMA synchronous = FULL", NULL, NULL, NULL) != SQLITE_OK
    ||  sqlite3_exec (db, "PRAGMA foreign_keys = ON", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf (why, why_size, "%s", sqlite3_errmsg (db));
        return false;
    }
    return true;
}

/*  Users of a database from before schema version 3 have no skeleton yet:
    compute them once, in one transaction.  Until that succeeds (a
    read-only database) those names are not matched against new ones. */
static void
store_fill_skeletons (store_t *self)
{
    sqlite3_stmt *get = self->stmt [S_USER_NO_SKELETON];
    sqlite3_stmt *set = self->stmt [S_USER_SET_SKELETON];
    int filled = 0, failed = 0;
    bool began = false;
    int rc;
    while ((rc = sqlite3_step (get)) == SQLITE_ROW) {
        if (!began) {
            if (sqlite3_exec (self->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
                break;
            began = true;
        }
        const char *name = (const char *) sqlite3_column_text (get, 1);
        char skeleton [QMS_NAME_NORM_MAX], upper [QMS_NAME_NORM_MAX];
        if (!name || qms_name_skeletons (name, strlen (name), skeleton, upper, sizeof skeleton)) {
            failed++;
            continue;
        }
        if (sqlite3_bind_value (set, 1, sqlite3_column_value (get, 0)) == SQLITE_OK
        &&  sqlite3_bind_text (set, 2, skeleton, -1, SQLITE_TRANSIENT) == SQLITE_OK
        &&  sqlite3_bind_text (set, 3, upper, -1, SQLITE_TRANSIENT) == SQLITE_OK
        &&  sqlite3_step (set) == SQLITE_DONE)
            filled++;
        else
            failed++;
        stmt_done (set);
    }
    stmt_done (get);
    if (began && (failed || sqlite3_exec (self->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)) {
        sqlite3_exec (self->db, "ROLLBACK", NULL, NULL, NULL);
        qms_warn (ACTOR, "event=skeletons_not_filled users=%d reason=\"%s\"", filled + failed,
                  sqlite3_db_readonly (self->db, "main") ? "database is read-only"
                  : failed ? "a name has no skeleton" : sqlite3_errmsg (self->db));
        return;
    }
    if (filled)
        qms_info (ACTOR, "event=skeletons_filled users=%d", filled);
}

static bool
store_prepare (store_t *self, char *why, size_t why_size)
{
    for (int i = 0; i < S_COUNT; i++)
        if (sqlite3_prepare_v3 (self->db, s_sql [i], -1, SQLITE_PREPARE_PERSISTENT,
                                &self->stmt [i], NULL) != SQLITE_OK) {
            snprintf (why, why_size, "cannot prepare statement %d: %s", i, sqlite3_errmsg (self->db));
            return false;
        }
    self->prepared = true;
    return true;
}

/*  One store per database: an exclusive lock on a file beside it, held
    until the store closes (the kernel drops it if the process dies).  The
    file names the holder's process for the message of the one refused. */
static bool
store_lock (store_t *self, const char *data_dir, char *why, size_t why_size)
{
    char path [1100];
    int written = snprintf (path, sizeof path, "%s/%s", data_dir, STORE_LOCK_NAME);
    if (written < 0 || (size_t) written >= sizeof path) {
        snprintf (why, why_size, "path too long");
        return false;
    }
    int fd = open (path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        snprintf (why, why_size, "%s: %s", STORE_LOCK_NAME, strerror (errno));
        return false;
    }
    if (flock (fd, LOCK_EX | LOCK_NB)) {
        int err = errno;
        char holder [32] = "";
        ssize_t n = err == EWOULDBLOCK ? pread (fd, holder, sizeof holder - 1, 0) : -1;
        holder [n > 0 ? n : 0] = 0;
        holder [strcspn (holder, "\n")] = 0;
        if (err == EWOULDBLOCK)
            snprintf (why, why_size, STORE_BUSY_TEXT " (process %s): "
                      "a server runs on this data directory", holder [0] ? holder : "?");
        else
            snprintf (why, why_size, "%s: %s", STORE_LOCK_NAME, strerror (err));
        close (fd);
        return false;
    }
    char pid [32];
    int len = snprintf (pid, sizeof pid, "%d\n", (int) getpid ());
    if (ftruncate (fd, 0) || pwrite (fd, pid, (size_t) len, 0) != len)
        qms_warn (ACTOR, "event=lock_note_failed path=\"%s\"", path);
    self->lock_fd = fd;
    return true;
}

static bool
store_open (store_t *self, const char *data_dir, char *reason, size_t reason_size)
{
    char why [512] = "";
    int written = snprintf (self->path, sizeof self->path, "%s/%s", data_dir, STORE_DB_NAME);
    bool ok = written > 0 && (size_t) written < sizeof self->path;
    if (!ok)
        snprintf (why, sizeof why, "path too long");
    ok = ok && store_lock (self, data_dir, why, sizeof why);
    ok = ok && store_create_file (self->path, why, sizeof why);
    if (ok && sqlite3_open_v2 (self->path, &self->db,
                               SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        snprintf (why, sizeof why, "%s", self->db ? sqlite3_errmsg (self->db) : "out of memory");
        ok = false;
    }
    if (ok)
        sqlite3_extended_result_codes (self->db, 1);
    ok = ok && store_pragmas (self->db, why, sizeof why)
            && store_migrate (self->db, why, sizeof why)
            && store_prepare (self, why, sizeof why);
    if (!ok) {
        snprintf (reason, reason_size, "cannot open %s: %s", self->path, why);
        return false;
    }
    store_fill_skeletons (self);
    qms_info (ACTOR, "event=open path=\"%s\" version=%d users=%lld sessions=%lld messages=%lld",
              self->path, STORE_SCHEMA_VERSION,
              (long long) query_int (self, S_COUNT_USERS),
              (long long) query_int (self, S_COUNT_SESSIONS),
              (long long) query_int (self, S_COUNT_MESSAGES));
    return true;
}

static bool
store_bind (store_t *self, const char *endpoint, char *reason, size_t reason_size)
{
    self->router = zsock_new (ZMQ_ROUTER);
    if (!self->router) {
        snprintf (reason, reason_size, "cannot create socket for %s", endpoint);
        return false;
    }
    qms_socket_tune (self->router);
    /*  A reply to a peer that went away fails visibly instead of vanishing. */
    zsock_set_router_mandatory (self->router, 1);
    if (qms_curve_bind (self->router, endpoint) < 0) {
        snprintf (reason, reason_size, "cannot bind %s: %s", endpoint, zmq_strerror (errno));
        return false;
    }
    self->router_raw = zsock_resolve (self->router);
    return true;
}

static void
store_close (store_t *self)
{
    zsock_destroy (&self->router);
    if (self->prepared)
        qms_info (ACTOR, "event=close path=\"%s\" users=%lld sessions=%lld", self->path,
                  (long long) query_int (self, S_COUNT_USERS),
                  (long long) query_int (self, S_COUNT_SESSIONS));
    for (int i = 0; i < S_COUNT; i++)
        sqlite3_finalize (self->stmt [i]);
    if (self->prepared) {
        /*  Fold the WAL back into the database so the file stands alone. */
        int rc = sqlite3_wal_checkpoint_v2 (self->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
        if (rc != SQLITE_OK)
            qms_warn (ACTOR, "event=checkpoint_failed reason=\"%s\"", sqlite3_errmsg (self->db));
    }
    if (self->db && sqlite3_close (self->db) != SQLITE_OK)
        qms_error (ACTOR, "event=close_failed reason=\"%s\"", sqlite3_errmsg (self->db));
    self->db = NULL;
    qms_buf_free (&self->out);
    /*  Last: no other store may open the database before it is closed. */
    qms_admin_unbind (self->admin_path);
    if (self->lock_fd >= 0)
        close (self->lock_fd);
    self->lock_fd = -1;
}

/* ------------------------------------------------------------------------ */
/*  The actor */

/*  qms_inbox batch handler: every peer (auth, router, the admin command,
    an ops responder) is on the one ROUTER socket. */
static void
on_batch (void *self, const uint8_t *identity, size_t identity_len, const uint8_t *data, size_t size)
{
    handle_batch ((store_t *) self, identity, identity_len, data, size);
}

/*  The end of a loop pass: expiry of old stored messages, once a period. */
static long
end_of_pass (void *self_)
{
    store_t *self = (store_t *) self_;
    uint64_t mono = qms_mono_ms ();
    if (!self->local && mono >= self->next_expire) {
        msg_expire (self);
        self->next_expire = mono + STORE_EXPIRE_PERIOD_MS;
    }
    return 1000;
}

static void
store_loop (store_t *self, zsock_t *pipe)
{
    qms_inbox_t *loop = qms_inbox_new (pipe, ACTOR, self);
    if (!loop || qms_inbox_batches (loop, self->router_raw, true, STORE_DRAIN_MAX, "peer", on_batch)) {
        qms_error (ACTOR, "event=loop_failed reason=\"out of memory\"");
        qms_inbox_destroy (&loop);
        return;
    }
    qms_inbox_set_pass (loop, end_of_pass);
    qms_inbox_run (loop);
    /*  Finish: what peers sent before we were told to stop (the router's
        last touches) is still written. */
    qms_inbox_drain (loop, STORE_TERM_DRAIN_MAX);
    qms_inbox_destroy (&loop);
}

static void
store_run (zsock_t *pipe, const qms_config_t *cfg, bool local, char *reason, size_t reason_size)
{
    store_t self;
    memset (&self, 0, sizeof self);
    self.lock_fd = -1;
    self.local = local;
    qms_buf_init (&self.out);
    self.message_quota = cfg->message_quota;
    self.message_max_age_ms = (uint64_t) cfg->message_max_age * 86400000u;
    bool ok = store_open (&self, cfg->data_dir, reason, reason_size)
           && store_bind (&self, cfg->store_endpoint, reason, reason_size);
    /*  Without its admin socket the server still serves: a warning only. */
    if (ok && !local)
        qms_admin_bind (self.router, cfg->data_dir, QMS_ADMIN_STORE_SOCKET, ACTOR,
                    self.admin_path, sizeof self.admin_path);
    zsock_signal (pipe, 0);
    if (!ok) {
        store_close (&self);
        qms_actor_ready (pipe, reason);
        return;
    }
    self.writable = true;       /* logged below only when it is not */
    writable_check (&self);
    qms_actor_ready (pipe, NULL);
    store_loop (&self, pipe);
    store_close (&self);
}

void
store_actor (zsock_t *pipe, void *args)
{
    char reason [1600] = "";
    store_run (pipe, (const qms_config_t *) args, false, reason, sizeof reason);
}

void
store_local_actor (zsock_t *pipe, void *args)
{
    store_local_t *local = (store_local_t *) args;
    store_run (pipe, local->cfg, true, local->reason, sizeof local->reason);
}

/* ------------------------------------------------------------------------ */
/*  Selftest */

/*  A DEALER that speaks records to the store. */
typedef struct {
    zsock_t *dealer;
    qms_buf_t out;
    zmq_msg_t in;               /* the last batch received: rec [] points into it */
    qms_rec_t rec [16];
    int count;
} t_client_t;

static void
t_connect (t_client_t *c, const char *endpoint)
{
    memset (c, 0, sizeof *c);
    c->dealer = zsock_new_dealer (endpoint);
    assert (c->dealer);
    qms_socket_tune (c->dealer);
    qms_buf_init (&c->out);
    zmq_msg_init (&c->in);
}

static void
t_close (t_client_t *c)
{
    zsock_destroy (&c->dealer);
    qms_buf_free (&c->out);
    zmq_msg_close (&c->in);
}

static qms_rec_t
t_req (int type, uint64_t req, uint64_t time,
       const char *s0, const char *s1, const char *s2, const char *s3)
{
    qms_rec_t rec = { .type = (uint8_t) type, .req = req, .time = time,
                      .s = { qms_str (s0), qms_str (s1), qms_str (s2), qms_str (s3) } };
    return rec;
}

static void
t_add (t_client_t *c, qms_rec_t rec)
{
    assert (qms_rec_encode (&c->out, &rec) == 0);
}

static void
t_send (t_client_t *c)
{
    assert (qms_batch_send (zsock_resolve (c->dealer), NULL, 0, &c->out) == 0);
    qms_buf_reset (&c->out);
}

/*  The next batch of replies: its record count, or -1 if none came within
    timeout_ms. */
static int
t_recv (t_client_t *c, int timeout_ms)
{
    void *raw = zsock_resolve (c->dealer);
    zmq_pollitem_t item = { raw, 0, ZMQ_POLLIN, 0 };
    if (zmq_poll (&item, 1, timeout_ms) != 1)
        return -1;
    zmq_msg_close (&c->in);
    zmq_msg_init (&c->in);
    assert (qms_batch_recv (raw, NULL, NULL, &c->in) == 1);
    size_t offset = 0;
    c->count = 0;
    int rc;
    while ((rc = qms_rec_next (zmq_msg_data (&c->in), zmq_msg_size (&c->in),
                               &offset, &c->rec [c->count])) == 1) {
        c->count++;
        assert (c->count < 16);
    }
    assert (rc == 0);
    return c->count;
}

#define STORE_TEST_VERSION 4
static_assert (STORE_TEST_VERSION == STORE_SCHEMA_VERSION, "update STORE_TEST_VERSION");

/*  One request, one reply of the given type and the same req. */
static qms_rec_t
t_call (t_client_t *c, qms_rec_t rec, int reply_type)
{
    t_add (c, rec);
    t_send (c);
    assert (t_recv (c, 5000) == 1);
    assert (c->rec [0].type == reply_type);
    assert (c->rec [0].req == rec.req);
    return c->rec [0];
}

/*  QMS_STATS_GET: whether it says the database takes writes; *rows
    whether it counted the rows. */
static int
t_stats_writable (t_client_t *c, uint64_t req, bool *rows)
{
    t_add (c, (qms_rec_t) { .type = QMS_STATS_GET, .req = req });
    t_send (c);
    /*  A batch waits up to the busy timeout for the write lock. */
    assert (t_recv (c, STORE_BUSY_TIMEOUT_MS + 5000) == 1);
    assert (c->rec [0].type == QMS_STATS && c->rec [0].req == req);
    char *text = strndup (c->rec [0].s [QMS_STATS_TEXT].ptr, c->rec [0].s [QMS_STATS_TEXT].len);
    assert (text);
    *rows = strstr (text, "qms_store_rows{") != NULL;
    bool one = strstr (text, "\nqms_store_writable 1\n") != NULL;
    bool zero = strstr (text, "\nqms_store_writable 0\n") != NULL;
    free (text);
    assert (one != zero);
    return one;
}

/*  The probe finds a database on which no write can start (the write lock
    held by another connection; SAVEPOINT/RELEASE alone would not), and a
    readiness probe gets no row counts. */
static void
t_writable_probe (t_client_t *c, const char *path)
{
    bool rows = false;
    assert (t_stats_writable (c, 7, &rows) == 1 && rows);
    assert (t_stats_writable (c, 8 | QMS_STATS_BRIEF, &rows) == 1 && !rows);
    sqlite3 *other = NULL;
    assert (sqlite3_open_v2 (path, &other, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK);
    assert (sqlite3_exec (other, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK);
    assert (t_stats_writable (c, 9 | QMS_STATS_BRIEF, &rows) == 0);
    assert (sqlite3_exec (other, "ROLLBACK", NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close (other);
    assert (t_stats_writable (c, 10, &rows) == 1 && rows);
}

static uint64_t
t_result (t_client_t *c, qms_rec_t rec)
{
    return t_call (c, rec, QMS_ST_RESULT).num;
}

static void
t_endpoint (qms_config_t *cfg)
{
    static int counter = 0;
    snprintf (cfg->store_endpoint, sizeof cfg->store_endpoint,
              "inproc://store-test-%d-%d", (int) getpid (), ++counter);
}

/*  Run one fixed statement on a database file directly (the actor must not
    be running); returns the first column of the first row, or -1. */
static long long
t_db (const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    long long value = -1;
    assert (sqlite3_open_v2 (path, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK);
    assert (sqlite3_prepare_v2 (db, sql, -1, &stmt, NULL) == SQLITE_OK);
    int rc = sqlite3_step (stmt);
    assert (rc == SQLITE_ROW || rc == SQLITE_DONE);
    if (rc == SQLITE_ROW)
        value = sqlite3_column_int64 (stmt, 0);
    sqlite3_finalize (stmt);
    assert (sqlite3_close (db) == SQLITE_OK);
    return value;
}

/*  Remove a directory and the files in it. */
static void
t_rmdir (const char *path)
{
    DIR *dir = opendir (path);
    if (!dir)
        return;
    struct dirent *entry;
    while ((entry = readdir (dir))) {
        if (streq (entry->d_name, ".") || streq (entry->d_name, ".."))
            continue;
        char file [1200];
        snprintf (file, sizeof file, "%s/%s", path, entry->d_name);
        unlink (file);
    }
    closedir (dir);
    assert (rmdir (path) == 0);
}

static void
t_users (t_client_t *c)
{
    qms_rec_t r = t_call (c, t_req (QMS_ST_USER_GET, 1, 0, "alice", 0, 0, 0), QMS_ST_USER);
    assert (r.num == 0);

    assert (t_result (c, t_req (QMS_ST_USER_CREATE, 2, 0, "id-alice", "Alice", "alice", "phc1")) == QMS_ST_OK);
    r = t_call (c, t_req (QMS_ST_USER_GET, 3, 0, "alice", 0, 0, 0), QMS_ST_USER);
    assert (r.num == 1);
    assert (qms_str_eq (r.s [QMS_USER_ID], "id-alice") && qms_str_eq (r.s [QMS_USER_NAME], "Alice"));
    assert (qms_str_eq (r.s [QMS_USER_PHC], "phc1") && r.s [QMS_USER_PUBKEY].len == 0);

    /*  Names differing only in case share a key: the second one exists. */
    char key [QMS_NAME_MAX_BYTES + 1];
    assert (qms_name_key ("ALICE", 5, key) == 0 && streq (key, "alice"));
    assert (t_result (c, t_req (QMS_ST_USER_CREATE, 4, 0, "id-other", "ALICE", key, "phc")) == QMS_ST_EXISTS);
    /*  A taken id is EXISTS too, and nothing of the attempt is kept. */
    assert (t_result (c, t_req (QMS_ST_USER_CREATE, 5, 0, "id-alice", "Bob", "bob", "phc")) == QMS_ST_EXISTS);
    assert (t_call (c, t_req (QMS_ST_USER_GET, 6, 0, "bob", 0, 0, 0), QMS_ST_USER).num == 0);
    assert (t_result (c, t_req (QMS_ST_USER_CREATE, 7, 0, "", "Bob", "bob", "phc")) == QMS_ST_ERROR);
    assert (t_result (c, t_req (QMS_ST_USER_CREATE, 8, 0, "id-bob", "Bob", "bob", "")) == QMS_ST_ERROR);
    assert (t_result (c, t_req (QMS_ST_USER_CREATE, 9, 0, "id-bob", "Bob", "bob", "phc-bob")) == QMS_ST_OK);

    /*  Rehash replaces the hash; an unknown id is an error. */
    assert (t_result (c, t_req (QMS_ST_USER_REHASH, 10, 0, "id-alice", "phc2", 0, 0)) == QMS_ST_OK);
    r = t_call (c, t_req (QMS_ST_USER_GET, 11, 0, "alice", 0, 0, 0), QMS_ST_USER);
    assert (r.num == 1 && qms_str_eq (r.s [QMS_USER_PHC], "phc2"));
    assert (t_result (c, t_req (QMS_ST_USER_REHASH, 12, 0, "id-nobody", "phc", 0, 0)) == QMS_ST_ERROR);
    assert (t_result (c, t_req (QMS_ST_USER_REHASH, 13, 0, "id-alice", "", 0, 0)) == QMS_ST_ERROR);
}

static void
t_session_is (t_client_t *c, const char *hash, uint64_t last_active, const char *user, const char *pubkey)
{
    qms_rec_t r = t_call (c, t_req (QMS_ST_SESSION_GET, 99, 0, hash, 0, 0, 0), QMS_ST_SESSION);
    if (!user) {
        assert (r.num == 0);
        return;
    }
    assert (r.num == 1);
    assert (r.time == last_active);
    assert (qms_str_eq (r.s [QMS_SESSION_ID], user));
    assert (qms_str_eq (r.s [QMS_SESSION_NAME], streq (user, "id-alice") ? "Alice" : "Bob"));
    assert (qms_str_eq (r.s [QMS_SESSION_PUBKEY], pubkey));
}

static void
t_sessions (t_client_t *c)
{
    assert (t_result (c, t_req (QMS_ST_SESSION_START, 20, 1000, "id-alice", "h1", "pk1", 0)) == QMS_ST_OK);
    t_session_is (c, "h1", 1000, "id-alice", "pk1");
    qms_rec_t r = t_call (c, t_req (QMS_ST_USER_GET, 21, 0, "alice", 0, 0, 0), QMS_ST_USER);
    assert (qms_str_eq (r.s [QMS_USER_PUBKEY], "pk1"));
    assert (t_result (c, t_req (QMS_ST_SESSION_START, 22, 1000, "id-nobody", "hx", "pk", 0)) == QMS_ST_ERROR);
    t_session_is (c, "hx", 0, NULL, NULL);
    assert (t_result (c, t_req (QMS_ST_SESSION_START, 23, 1000, "id-alice", "", "pk", 0)) == QMS_ST_ERROR);

    /*  A second start replaces the first: the old hash is gone. */
    assert (t_result (c, t_req (QMS_ST_SESSION_START, 24, 2000, "id-alice", "h2", "pk2", 0)) == QMS_ST_OK);
    t_session_is (c, "h1", 0, NULL, NULL);
    t_session_is (c, "h2", 2000, "id-alice", "pk2");

    /*  A token hash another user holds fails, and undoes the whole record
        (bob's pubkey stays as it was). */
    assert (t_result (c, t_req (QMS_ST_SESSION_START, 25, 2000, "id-bob", "h2", "pk-bob", 0)) == QMS_ST_ERROR);
    r = t_call (c, t_req (QMS_ST_USER_GET, 26, 0, "bob", 0, 0, 0), QMS_ST_USER);
    assert (r.num == 1 && r.s [QMS_USER_PUBKEY].len == 0);
    t_session_is (c, "h2", 2000, "id-alice", "pk2");

    /*  Touch never moves activity backwards. */
    assert (t_result (c, t_req (QMS_ST_SESSION_TOUCH, 27, 5000, "id-alice", 0, 0, 0)) == QMS_ST_OK);
    t_session_is (c, "h2", 5000, "id-alice", "pk2");
    assert (t_result (c, t_req (QMS_ST_SESSION_TOUCH, 28, 3000, "id-alice", 0, 0, 0)) == QMS_ST_OK);
    t_session_is (c, "h2", 5000, "id-alice", "pk2");
    assert (t_result (c, t_req (QMS_ST_SESSION_TOUCH, 29, 3000, "id-bob", 0, 0, 0)) == QMS_ST_OK);
    assert (t_result (c, t_req (QMS_ST_SESSION_TOUCH, 30, 3000, "", 0, 0, 0)) == QMS_ST_ERROR);

    /*  Delete rules. */
    assert (t_result (c, t_req (QMS_ST_SESSION_DEL, 31, 0, "", "", 0, 0)) == QMS_ST_ERROR);
    assert (t_result (c, t_req (QMS_ST_SESSION_DEL, 32, 0, "id-alice", "wrong", 0, 0)) == QMS_ST_OK);
    t_session_is (c, "h2", 5000, "id-alice", "pk2");
    assert (t_result (c, t_req (QMS_ST_SESSION_DEL, 33, 0, "id-bob", "h2", 0, 0)) == QMS_ST_OK);
    t_session_is (c, "h2", 5000, "id-alice", "pk2");
    assert (t_result (c, t_req (QMS_ST_SESSION_DEL, 34, 0, "id-alice", "h2", 0, 0)) == QMS_ST_OK);
    t_session_is (c, "h2", 0, NULL, NULL);
    assert (t_result (c, t_req (QMS_ST_SESSION_START, 35, 6000, "id-alice", "h3", "pk3", 0)) == QMS_ST_OK);
    assert (t_result (c, t_req (QMS_ST_SESSION_DEL, 36, 0, "", "h3", 0, 0)) == QMS_ST_OK);
    t_session_is (c, "h3", 0, NULL, NULL);
    assert (t_result (c, t_req (QMS_ST_SESSION_START, 37, 6000, "id-alice", "h4", "pk4", 0)) == QMS_ST_OK);
    assert (t_result (c, t_req (QMS_ST_SESSION_DEL, 38, 0, "id-alice", "", 0, 0)) == QMS_ST_OK);
    t_session_is (c, "h4", 0, NULL, NULL);

    /*  Left for the restart test. */
    assert (t_result (c, t_req (QMS_ST_SESSION_START, 39, 7000, "id-alice", "h5", "pk5", 0)) == QMS_ST_OK);
}

static void
t_batches (t_client_t *c)
{
    /*  Many requests in one message: one transaction, one reply message
        with the replies in order; req 0 and unknown (newer) types answer
        nothing. */
    t_add (c, t_req (QMS_ST_USER_GET, 101, 0, "alice", 0, 0, 0));
    t_add (c, t_req (QMS_ST_USER_CREATE, 102, 0, "id-carol", "Carol", "carol", "phc-carol"));
    t_add (c, t_req (QMS_ST_USER_GET, 103, 0, "carol", 0, 0, 0));
    t_add (c, t_req (QMS_ST_SESSION_START, 104, 8000, "id-carol", "h6", "pk6", 0));
    t_add (c, t_req (QMS_ST_SESSION_TOUCH, 0, 9000, "id-carol", 0, 0, 0));
    uint8_t unknown [] = { 200, 2, 0, 0, 0, 'x', 'y' };
    assert (qms_buf_append (&c->out, unknown, sizeof unknown) == 0);
    t_add (c, t_req (QMS_ST_SESSION_GET, 105, 0, "h6", 0, 0, 0));
    t_add (c, t_req (QMS_ST_USER_REHASH, 106, 0, "id-nobody", "phc", 0, 0));
    t_send (c);
    assert (t_recv (c, 5000) == 6);
    for (int i = 0; i < 6; i++)
        assert (c->rec [i].req == 101u + (uint64_t) i);
    assert (c->rec [0].type == QMS_ST_USER && c->rec [0].num == 1);
    assert (c->rec [1].type == QMS_ST_RESULT && c->rec [1].num == QMS_ST_OK);
    assert (c->rec [2].type == QMS_ST_USER && c->rec [2].num == 1 && qms_str_eq (c->rec [2].s [QMS_USER_ID], "id-carol"));
    assert (c->rec [3].type == QMS_ST_RESULT && c->rec [3].num == QMS_ST_OK);
    assert (c->rec [4].type == QMS_ST_SESSION && c->rec [4].num == 1 && c->rec [4].time == 9000);
    assert (c->rec [5].type == QMS_ST_RESULT && c->rec [5].num == QMS_ST_ERROR);
    assert (t_recv (c, 100) == -1);

    /*  A record the store does not receive (a gateway's RT_HELLO) makes
        the batch wrong for this role: dropped whole, the user before it is
        not created. */
    t_add (c, t_req (QMS_ST_USER_CREATE, 150, 0, "id-erin", "Erin", "erin", "phc-erin"));
    qms_rec_t hello = { .type = QMS_RT_HELLO, .num = 1, .s = { [QMS_HELLO_NAME] = qms_str ("gw") } };
    t_add (c, hello);
    t_send (c);
    assert (t_recv (c, 300) == -1);
    t_add (c, t_req (QMS_ST_USER_GET, 151, 0, "erin", 0, 0, 0));
    t_send (c);
    assert (t_recv (c, 5000) == 1 && c->rec [0].type == QMS_ST_USER && c->rec [0].num == 0);
    assert (t_recv (c, 100) == -1);

    /*  A malformed batch is dropped whole (its valid first record is not
        applied), a two-frame message too; what follows is still answered. */
    t_add (c, t_req (QMS_ST_USER_CREATE, 201, 0, "id-dave", "Dave", "dave", "phc-dave"));
    uint8_t truncated [] = { QMS_ST_USER_GET, 50, 0, 0, 0, 'x' };
    assert (qms_buf_append (&c->out, truncated, sizeof truncated) == 0);
    t_send (c);
    void *raw = zsock_resolve (c->dealer);
    assert (zmq_send (raw, "a", 1, ZMQ_SNDMORE) == 1);
    assert (zmq_send (raw, "b", 1, 0) == 1);
    assert (t_call (c, t_req (QMS_ST_USER_GET, 202, 0, "dave", 0, 0, 0), QMS_ST_USER).num == 0);

    /*  req 0: done, but not answered. */
    t_add (c, t_req (QMS_ST_USER_CREATE, 0, 0, "id-erin", "Erin", "erin", "phc-erin"));
    t_send (c);
    qms_rec_t r = t_call (c, t_req (QMS_ST_USER_GET, 301, 0, "erin", 0, 0, 0), QMS_ST_USER);
    assert (r.num == 1 && qms_str_eq (r.s [QMS_USER_ID], "id-erin"));

    /*  An empty batch is valid and answers nothing. */
    t_send (c);
    assert (t_recv (c, 100) == -1);
}

/*  The actor refuses to start on cfg. */
/*  Times of stored messages in the test: recent, except one that is not. */
static uint64_t s_t_base;

static qms_rec_t
t_msg (uint64_t req, const char *id, const char *recipient, const char *client_id, uint64_t time)
{
    if (!s_t_base)
        s_t_base = qms_now_ms () - 60000;
    qms_rec_t rec = { .type = QMS_ST_MSG_STORE, .req = req, .time = time > 1000 ? s_t_base + time : time };
    rec.s [QMS_STORE_MSG_ID] = qms_str (id);
    rec.s [QMS_STORE_RECIPIENT] = qms_str (recipient);
    rec.s [QMS_STORE_SENDER] = qms_str ("id-bob");
    rec.s [QMS_STORE_SENDER_NAME] = qms_str ("Bob");
    rec.s [QMS_STORE_SENDER_KEY] = qms_str ("bob-key");
    rec.s [QMS_STORE_TEXT] = qms_str ("ciphertext \"quoted\"");
    rec.s [QMS_STORE_CLIENT_ID] = qms_str (client_id);
    return rec;
}

/*  Store-and-forward: store, idempotent retries, unknown recipients,
    paging in order, receipts, delete-up-to, quota (3 in this test). */
static void
t_messages (t_client_t *c)
{
    assert (t_result (c, t_msg (1, "m1", "id-alice", "c1", 5000)) == QMS_ST_OK);
    assert (t_result (c, t_msg (2, "m2", "id-alice", "", 6000)) == QMS_ST_OK);
    /*  The same sender and client id: EXISTS, naming the stored message. */
    qms_rec_t r = t_call (c, t_msg (3, "m9", "id-alice", "c1", 7000), QMS_ST_RESULT);
    assert (r.num == QMS_ST_EXISTS && qms_str_eq (r.s [QMS_RESULT_STORED_ID], "m1"));
    assert (t_result (c, t_msg (4, "m4", "id-nobody", "c4", 7000)) == QMS_ST_NO_USER);
    qms_rec_t missing = t_msg (5, "", "id-alice", "", 1);
    assert (t_result (c, missing) == QMS_ST_ERROR);
    assert (t_result (c, t_msg (6, "m3", "id-alice", "c3", 8000)) == QMS_ST_OK);
    assert (t_result (c, t_msg (7, "m5", "id-alice", "c5", 9000)) == QMS_ST_QUOTA);

    /*  Fetch: oldest first, fields intact, a page limit, then after a seq. */
    t_add (c, (qms_rec_t) { .type = QMS_ST_MSG_FETCH, .req = 8, .num = 2,
                            .s = { [QMS_FETCH_RECIPIENT] = qms_str ("id-alice") } });
    t_send (c);
    assert (t_recv (c, 5000) == 3);
    assert (c->rec [0].type == QMS_ST_MSG && qms_str_eq (c->rec [0].s [QMS_MSG_ID], "m1"));
    assert (c->rec [0].time == s_t_base + 5000 && qms_str_eq (c->rec [0].s [QMS_MSG_SENDER], "id-bob"));
    assert (qms_str_eq (c->rec [0].s [QMS_MSG_SENDER_NAME], "Bob") && qms_str_eq (c->rec [0].s [QMS_MSG_SENDER_KEY], "bob-key"));
    assert (qms_str_eq (c->rec [0].s [QMS_MSG_TEXT], "ciphertext \"quoted\"")
            && qms_str_eq (c->rec [0].s [QMS_MSG_CLIENT_ID], "c1"));
    assert (qms_str_eq (c->rec [1].s [QMS_MSG_ID], "m2") && c->rec [1].s [QMS_MSG_CLIENT_ID].len == 0);
    assert (c->rec [2].type == QMS_ST_MSG_END && c->rec [2].num == 2 && c->rec [2].seq == c->rec [1].seq);
    uint64_t after = c->rec [1].seq, first = c->rec [0].seq;
    t_add (c, (qms_rec_t) { .type = QMS_ST_MSG_FETCH, .req = 9, .num = 10, .seq = after,
                            .s = { [QMS_FETCH_RECIPIENT] = qms_str ("id-alice") } });
    t_send (c);
    assert (t_recv (c, 5000) == 2);
    assert (qms_str_eq (c->rec [0].s [QMS_MSG_ID], "m3") && c->rec [1].num == 1);

    /*  A receipt deletes one message and names its sender; a second receipt,
        or someone else's, finds nothing. */
    qms_rec_t del = { .type = QMS_ST_MSG_DEL, .req = 10, .s = { [QMS_DEL_RECIPIENT] = qms_str ("id-alice"),
                                                                [QMS_DEL_MSG_ID] = qms_str ("m3") } };
    r = t_call (c, del, QMS_ST_MSG_DELETED);
    assert (r.num == 1 && qms_str_eq (r.s [QMS_DELETED_MSG_ID], "m3")
            && qms_str_eq (r.s [QMS_DELETED_SENDER], "id-bob") && qms_str_eq (r.s [QMS_DELETED_CLIENT_ID], "c3")
            && r.s [QMS_DELETED_GROUP].len == 0);
    del.req = 11;
    assert (t_call (c, del, QMS_ST_MSG_DELETED).num == 0);
    del.req = 12;
    del.s [QMS_DEL_RECIPIENT] = qms_str ("id-carol");
    del.s [QMS_DEL_MSG_ID] = qms_str ("m1");
    assert (t_call (c, del, QMS_ST_MSG_DELETED).num == 0);

    /*  A user found by name key for others: id, name and key, no hash. */
    qms_rec_t find = { .type = QMS_ST_USER_FIND, .req = 16, .s = { [QMS_FIND_KEY] = qms_str ("alice") } };
    r = t_call (c, find, QMS_ST_USER);
    assert (r.num == 1 && qms_str_eq (r.s [QMS_USER_ID], "id-alice") && r.s [QMS_USER_PHC].len == 0
            && r.s [QMS_USER_NAME].len > 0);
    find.req = 17;
    find.s [QMS_FIND_KEY] = qms_str ("nobody-at-all");
    assert (t_call (c, find, QMS_ST_USER).num == 0);

    /*  Delete up to a seq: m1 goes, m2 stays. */
    t_add (c, (qms_rec_t) { .type = QMS_ST_MSG_DEL_UPTO, .req = 13, .seq = first,
                            .s = { [QMS_UPTO_RECIPIENT] = qms_str ("id-alice") } });
    t_send (c);
    assert (t_recv (c, 5000) == 1 && c->rec [0].num == QMS_ST_OK);
    t_add (c, (qms_rec_t) { .type = QMS_ST_MSG_FETCH, .req = 14, .num = 10,
                            .s = { [QMS_FETCH_RECIPIENT] = qms_str ("id-alice") } });
    t_send (c);
    assert (t_recv (c, 5000) == 2 && qms_str_eq (c->rec [0].s [QMS_MSG_ID], "m2"));
    /*  Room again under the quota. */
    assert (t_result (c, t_msg (15, "m3", "id-alice", "c3b", 8500)) == QMS_ST_OK);
}

/*  Names that look alike (common/qms_names.h): refused when either is not
    ASCII; an older database gets its skeletons when the store opens. */
static void
t_skeletons (qms_config_t *cfg, const char *root)
{
    char dir [256], path [300], key [QMS_NAME_MAX_BYTES + 1];
    snprintf (dir, sizeof dir, "%s/names", root);
    assert (mkdir (dir, 0700) == 0);
    snprintf (path, sizeof path, "%s/users.db", dir);
    snprintf (cfg->data_dir, sizeof cfg->data_dir, "%s", dir);
    t_endpoint (cfg);
    zactor_t *store = qms_actor_start (store_actor, cfg, "store");
    assert (store);
    t_client_t c;
    t_connect (&c, cfg->store_endpoint);
    /*  Two ASCII names stay apart by more than letter case, as before ("rn" and "m"). */
    assert (t_result (&c, t_req (QMS_ST_USER_CREATE, 1, 0, "id-m1", "modern", "modern", "phc")) == QMS_ST_OK);
    assert (t_result (&c, t_req (QMS_ST_USER_CREATE, 2, 0, "id-m2", "rnodern", "rnodern", "phc")) == QMS_ST_OK);
    /*  A name that is not ASCII and looks like a taken one: SIMILAR, nothing written. */
    const char *full = "\xef\xbc\xadodern";                                 /* fullwidth M */
    assert (qms_name_key (full, strlen (full), key) == 0);
    assert (t_result (&c, t_req (QMS_ST_USER_CREATE, 3, 0, "id-m3", full, key, "phc")) == QMS_ST_SIMILAR);
    assert (t_db (path, "SELECT count(*) FROM users") == 2);
    /*  Cyrillic "paypal" first; then the ASCII one looks like it. */
    const char *cyr = "\xd1\x80\xd0\xb0\xd1\x83\xd1\x80\xd0\xb0l";     /* раураl */
    assert (qms_name_key (cyr, strlen (cyr), key) == 0);
    assert (t_result (&c, t_req (QMS_ST_USER_CREATE, 4, 0, "id-p1", cyr, key, "phc")) == QMS_ST_OK);
    assert (t_result (&c, t_req (QMS_ST_USER_CREATE, 5, 0, "id-p2", "PayPal", "paypal", "phc")) == QMS_ST_SIMILAR);
    /*  The same name key stays EXISTS. */
    const char *upper = "\xd0\xa0\xd0\x90\xd0\xa3\xd0\xa0\xd0\x90l";  /* РАУРАl */
    assert (qms_name_key (upper, strlen (upper), key) == 0);
    assert (t_result (&c, t_req (QMS_ST_USER_CREATE, 6, 0, "id-p3", upper, key, "phc")) == QMS_ST_EXISTS);
    assert (t_result (&c, t_req (QMS_ST_USER_CREATE, 7, 0, "id-b1", "bob", "bob", "phc")) == QMS_ST_OK);
    /*  Greek capitals that look like a taken ASCII name in upper case */
    const char *greek = "\xce\x9c\xce\x9f\xce\x94\xce\x95\xce\xa1\xce\x9d";   /* ΜΟΔΕΡΝ: no Δ look-alike */
    assert (qms_name_key (greek, strlen (greek), key) == 0);
    assert (t_result (&c, t_req (QMS_ST_USER_CREATE, 10, 0, "id-g1", greek, key, "phc")) == QMS_ST_OK);
    const char *abe = "\xce\x91\xce\x92\xce\x95";                                  /* ΑΒΕ */
    assert (t_result (&c, t_req (QMS_ST_USER_CREATE, 11, 0, "id-a1", "abe", "abe", "phc")) == QMS_ST_OK);
    assert (qms_name_key (abe, strlen (abe), key) == 0);
    assert (t_result (&c, t_req (QMS_ST_USER_CREATE, 12, 0, "id-a2", abe, key, "phc")) == QMS_ST_SIMILAR);
    t_close (&c);
    zactor_destroy (&store);

    /*  The same users in a database of schema version 2 (no skeletons yet,
        no groups: the rebuilt messages table of version 4 is rebuilt
        again, which its columns allow). */
    assert (t_db (path, "DROP TABLE group_members") == -1);
    assert (t_db (path, "DROP TABLE groups") == -1);
    assert (t_db (path, "DROP INDEX users_by_skeleton") == -1);
    assert (t_db (path, "DROP INDEX users_by_skeleton_upper") == -1);
    assert (t_db (path, "ALTER TABLE users DROP COLUMN skeleton") == -1);
    assert (t_db (path, "ALTER TABLE users DROP COLUMN skeleton_upper") == -1);
    assert (t_db (path, "UPDATE schema_version SET version = 2") == -1);
    t_endpoint (cfg);
    store = qms_actor_start (store_actor, cfg, "store");
    assert (store);
    assert (t_db (path, "SELECT version FROM schema_version") == STORE_SCHEMA_VERSION);
    assert (t_db (path, "SELECT count(*) FROM users WHERE skeleton IS NULL OR skeleton_upper IS NULL") == 0);
    assert (t_db (path, "SELECT count(*) FROM users") == 6);
    t_connect (&c, cfg->store_endpoint);
    const char *bob = "b\xd0\xbe" "b";                                         /* Cyrillic о */
    assert (qms_name_key (bob, strlen (bob), key) == 0);
    assert (t_result (&c, t_req (QMS_ST_USER_CREATE, 8, 0, "id-b2", bob, key, "phc")) == QMS_ST_SIMILAR);
    assert (t_result (&c, t_req (QMS_ST_USER_CREATE, 9, 0, "id-r1", "rob", "rob", "phc")) == QMS_ST_OK);
    t_close (&c);
    zactor_destroy (&store);
    t_rmdir (dir);
}

static void
t_refused (qms_config_t *cfg, const char *data_dir)
{
    snprintf (cfg->data_dir, sizeof cfg->data_dir, "%s", data_dir);
    t_endpoint (cfg);
    zactor_t *store = qms_actor_start (store_actor, cfg, "store");
    assert (store == NULL);
}

static void
t_refusals (qms_config_t *cfg, const char *root)
{
    char dir [256], path [300];

    /*  A newer schema is refused; the same file at our version opens. */
    snprintf (dir, sizeof dir, "%s/data", root);
    snprintf (path, sizeof path, "%s/users.db", dir);
    assert (t_db (path, "UPDATE schema_version SET version = 99") == -1);
    t_refused (cfg, dir);
    assert (t_db (path, "SELECT version FROM schema_version") == 99);
    assert (t_db (path, "UPDATE schema_version SET version = " QMS_STRINGIFY (STORE_TEST_VERSION)) == -1);
    t_endpoint (cfg);
    zactor_t *store = qms_actor_start (store_actor, cfg, "store");
    assert (store);
    zactor_destroy (&store);

    /*  A file that is not a database. */
    snprintf (dir, sizeof dir, "%s/garbage", root);
    assert (mkdir (dir, 0700) == 0);
    snprintf (path, sizeof path, "%s/users.db", dir);
    FILE *file = fopen (path, "w");
    assert (file);
    for (int i = 0; i < 64; i++)
        fputs ("this is not an SQLite database. ", file);
    fclose (file);
    t_refused (cfg, dir);

    /*  Data dirs that cannot hold the file: a regular file, a missing
        directory, and (when not root, who may write anywhere) a read-only
        directory. */
    snprintf (path, sizeof path, "%s/afile", root);
    file = fopen (path, "w");
    assert (file);
    fclose (file);
    t_refused (cfg, path);
    snprintf (path, sizeof path, "%s/missing", root);
    t_refused (cfg, path);
    snprintf (dir, sizeof dir, "%s/readonly", root);
    assert (mkdir (dir, 0500) == 0);
    if (geteuid () != 0)
        t_refused (cfg, dir);
}

/*  The answer to one QMS_ST_ADMIN: its rows (the first 8 kept, all
    counted) and its DONE. */
typedef struct {
    int rows;
    char s [8][4][128];
    uint64_t num [8], time [8];
    uint64_t status;
    char detail [256];
} t_admin_t;

static void
t_admin (t_client_t *c, uint64_t req, uint64_t op, const char *s0, const char *s1, t_admin_t *a)
{
    memset (a, 0, sizeof *a);
    t_add (c, (qms_rec_t) { .type = QMS_ST_ADMIN, .req = req, .num = op, .s = { qms_str (s0), qms_str (s1) } });
    t_send (c);
    void *raw = zsock_resolve (c->dealer);
    bool done = false;
    while (!done) {
        zmq_pollitem_t item = { raw, 0, ZMQ_POLLIN, 0 };
        assert (zmq_poll (&item, 1, 5000) == 1);
        zmq_msg_t msg;
        zmq_msg_init (&msg);
        assert (qms_batch_recv (raw, NULL, NULL, &msg) == 1);
        size_t offset = 0;
        qms_rec_t rec;
        while (qms_rec_next (zmq_msg_data (&msg), zmq_msg_size (&msg), &offset, &rec) == 1) {
            assert (rec.req == req && !done);
            if (rec.type == QMS_ST_ADMIN_ROW) {
                if (a->rows < 8) {
                    for (int i = 0; i < 4; i++)
                        assert (qms_str_copy (rec.s [i], a->s [a->rows][i], sizeof a->s [0][0]));
                    a->num [a->rows] = rec.num;
                    a->time [a->rows] = rec.time;
                }
                a->rows++;
                continue;
            }
            assert (rec.type == QMS_ADMIN_DONE);
            done = true;
            a->status = rec.num;
            assert (qms_str_copy (rec.s [QMS_RESULT_DETAIL], a->detail, sizeof a->detail));
        }
        zmq_msg_close (&msg);
    }
}

/*  Administration through the admin socket; one store per database. */
static void
t_admin_ops (qms_config_t *cfg, const char *root)
{
    char dir [256], sock [128], copy [300], db [300];
    snprintf (dir, sizeof dir, "%s/admin", root);
    snprintf (copy, sizeof copy, "%s/admin-copy.db", root);
    snprintf (db, sizeof db, "%s/users.db", dir);
    assert (mkdir (dir, 0700) == 0);
    snprintf (cfg->data_dir, sizeof cfg->data_dir, "%s", dir);
    t_endpoint (cfg);
    zactor_t *store = qms_actor_start (store_actor, cfg, "store");
    assert (store);
    /*  The admin socket: private and live. */
    assert (qms_admin_socket_path (dir, QMS_ADMIN_STORE_SOCKET, sock, sizeof sock) == 0);
    struct stat info;
    assert (stat (sock, &info) == 0 && S_ISSOCK (info.st_mode) && (info.st_mode & 0777) == 0600);
    assert (qms_admin_socket_live (sock));
    /*  A second store on the database is refused, an admin command's too,
        and neither takes the socket over. */
    qms_config_t second = *cfg;         /* no origins: nothing shared to free */
    t_endpoint (&second);
    assert (qms_actor_start (store_actor, &second, "store") == NULL);
    store_local_t local = { .cfg = &second };
    assert (qms_actor_start (store_local_actor, &local, "store") == NULL);
    assert (strstr (local.reason, "in use by another store"));
    assert (qms_admin_socket_live (sock));

    char endpoint [140];
    snprintf (endpoint, sizeof endpoint, "ipc://%s", sock);
    t_client_t c;
    t_connect (&c, endpoint);
    t_admin_t a;
    t_admin (&c, 1, QMS_ADMIN_PING, NULL, NULL, &a);
    assert (a.status == QMS_ST_OK && a.rows == 0 && streq (a.detail, db));
    assert (t_result (&c, t_req (QMS_ST_USER_CREATE, 2, 0, "id-carol", "Carol", "carol", "phc-c")) == QMS_ST_OK);
    assert (t_result (&c, t_req (QMS_ST_USER_CREATE, 3, 0, "id-dave", "Dave", "dave", "phc-d")) == QMS_ST_OK);
    assert (t_result (&c, t_req (QMS_ST_SESSION_START, 4, 5000, "id-carol", "hc", "pk-c", 0)) == QMS_ST_OK);
    assert (t_result (&c, t_msg (5, "m-d", "id-dave", "c-d", 5000)) == QMS_ST_OK);
    /*  Enough users that the list streams in several messages. */
    for (int i = 0; i < 1200; i++) {
        char id [32], name [32];
        snprintf (id, sizeof id, "id-u%04d", i);
        snprintf (name, sizeof name, "u%04d", i);
        t_add (&c, t_req (QMS_ST_USER_CREATE, 0, 0, id, name, name, "phc"));
    }
    t_send (&c);

    t_admin (&c, 6, QMS_ADMIN_USER_LIST, NULL, NULL, &a);
    assert (a.status == QMS_ST_OK && a.rows == 1202 && streq (a.detail, "1202 users"));
    assert (streq (a.s [0][QMS_ROW_ID], "id-carol") && streq (a.s [0][QMS_ROW_NAME], "Carol")
            && streq (a.s [0][QMS_ROW_PUBKEY], "pk-c"));
    assert (streq (a.s [0][QMS_ROW_ACTIVE], "5000") && a.num [0] == 0 && a.time [0] > 0);
    assert (streq (a.s [1][QMS_ROW_NAME], "Dave") && a.s [1][QMS_ROW_ACTIVE][0] == 0 && a.num [1] == 1);
    assert (streq (a.s [2][QMS_ROW_NAME], "u0000"));
    t_admin (&c, 7, QMS_ADMIN_USER_SHOW, "dave", NULL, &a);
    assert (a.status == QMS_ST_OK && a.rows == 1 && streq (a.s [0][QMS_ROW_ID], "id-dave") && a.num [0] == 1);
    t_admin (&c, 8, QMS_ADMIN_USER_SHOW, "nobody", NULL, &a);
    assert (a.status == QMS_ST_NO_USER && a.rows == 0);
    t_admin (&c, 9, QMS_ADMIN_USER_SESSIONS, "carol", NULL, &a);
    assert (a.status == QMS_ST_OK && a.rows == 2 && streq (a.s [1][QMS_ROW_ID], "id-carol"));
    assert (a.time [1] == 5000 && a.num [1] == 5000 && streq (a.s [1][QMS_ROW_HASH], "hc"));
    t_admin (&c, 10, QMS_ADMIN_USER_SESSIONS, "dave", NULL, &a);
    assert (a.status == QMS_ST_OK && a.rows == 1);

    /*  A new password ends the session, in one go. */
    t_admin (&c, 11, QMS_ADMIN_USER_PASSWORD, "carol", "", &a);
    assert (a.status == QMS_ST_ERROR && a.rows == 0);
    t_admin (&c, 12, QMS_ADMIN_USER_PASSWORD, "carol", "phc-new", &a);
    assert (a.status == QMS_ST_OK && a.rows == 1 && streq (a.detail, "session deleted"));
    assert (qms_str_eq (t_call (&c, t_req (QMS_ST_USER_GET, 13, 0, "carol", 0, 0, 0), QMS_ST_USER).s [QMS_USER_PHC], "phc-new"));
    t_session_is (&c, "hc", 0, NULL, NULL);
    t_admin (&c, 14, QMS_ADMIN_USER_LOGOUT, "carol", NULL, &a);
    assert (a.status == QMS_ST_OK && a.rows == 1 && streq (a.detail, "no session"));
    assert (t_result (&c, t_req (QMS_ST_SESSION_START, 15, 6000, "id-carol", "hc2", "pk-c", 0)) == QMS_ST_OK);
    t_admin (&c, 16, QMS_ADMIN_USER_LOGOUT, "carol", NULL, &a);
    assert (a.status == QMS_ST_OK && streq (a.detail, "session deleted"));
    t_session_is (&c, "hc2", 0, NULL, NULL);

    /*  Delete takes the messages waiting for the user along. */
    t_admin (&c, 17, QMS_ADMIN_USER_DELETE, "dave", NULL, &a);
    assert (a.status == QMS_ST_OK && a.rows == 1 && a.num [0] == 1);
    assert (t_call (&c, t_req (QMS_ST_USER_GET, 18, 0, "dave", 0, 0, 0), QMS_ST_USER).num == 0);
    t_add (&c, (qms_rec_t) { .type = QMS_ST_MSG_FETCH, .req = 19, .num = 10,
                             .s = { [QMS_FETCH_RECIPIENT] = qms_str ("id-dave") } });
    t_send (&c);
    assert (t_recv (&c, 5000) == 1 && c.rec [0].type == QMS_ST_MSG_END && c.rec [0].num == 0);
    t_admin (&c, 20, QMS_ADMIN_USER_DELETE, "dave", NULL, &a);
    assert (a.status == QMS_ST_NO_USER);
    t_admin (&c, 21, 99, NULL, NULL, &a);
    assert (a.status == QMS_ST_ERROR);

    /*  Backup: a new file only, a consistent copy. */
    t_admin (&c, 22, QMS_ADMIN_DB_BACKUP, "relative.db", NULL, &a);
    assert (a.status == QMS_ST_ERROR);
    t_admin (&c, 23, QMS_ADMIN_DB_BACKUP, copy, NULL, &a);
    assert (a.status == QMS_ST_OK && strstr (a.detail, "pages"));
    assert (stat (copy, &info) == 0 && (info.st_mode & 0777) == 0600);
    t_admin (&c, 24, QMS_ADMIN_DB_BACKUP, copy, NULL, &a);
    assert (a.status == QMS_ST_EXISTS);
    assert (t_db (copy, "SELECT count(*) FROM users") == 1201);
    assert (t_db (copy, "SELECT count(*) FROM sessions") == 0);

    /*  Check: clean, then a session of a user that does not exist (written
        beside the store, without foreign keys) is found. */
    t_admin (&c, 25, QMS_ADMIN_DB_CHECK, NULL, NULL, &a);
    assert (a.status == QMS_ST_OK && a.rows == 0 && streq (a.detail, "ok"));
    assert (t_db (db, "INSERT INTO sessions VALUES ('id-ghost', 'hg', 1, 1)") == -1);
    t_admin (&c, 26, QMS_ADMIN_DB_CHECK, NULL, NULL, &a);
    assert (a.status == QMS_ST_ERROR && a.rows == 1 && strstr (a.s [0][QMS_ROW_PROBLEM], "foreign key: sessions"));
    t_close (&c);
    zactor_destroy (&store);

    /*  Closed: the socket file is gone and the lock free; an admin
        command's store opens and binds no socket. */
    assert (stat (sock, &info) == -1);
    t_endpoint (cfg);
    store_local_t own = { .cfg = cfg };
    store = qms_actor_start (store_local_actor, &own, "store");
    assert (store);
    assert (stat (sock, &info) == -1);
    zactor_destroy (&store);
    unlink (copy);
    t_rmdir (dir);
}

/*  Run fixed SQL text (several statements) on a database file directly. */
static void
t_db_exec (const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    assert (sqlite3_open_v2 (path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) == SQLITE_OK);
    assert (sqlite3_exec (db, sql, NULL, NULL, NULL) == SQLITE_OK);
    assert (sqlite3_close (db) == SQLITE_OK);
}

/*  A database of schema version 3 with messages in it (one whose
    recipient is gone, one deleted after the highest seq) becomes version
    4: the messages keep their seq, the counter goes on past the deleted
    one, ids are unique per recipient only, and a direct message's retry
    is found as before. */
static void
t_migrate_groups (qms_config_t *cfg, const char *root)
{
    char dir [256], path [300];
    snprintf (dir, sizeof dir, "%s/v3", root);
    snprintf (path, sizeof path, "%s/users.db", dir);
    assert (mkdir (dir, 0700) == 0);
    int fd = open (path, O_RDWR | O_CREAT, 0600);
    assert (fd >= 0);
    close (fd);
    for (int i = 0; i < 3; i++)
        t_db_exec (path, s_migrations [i]);
    char sql [1024];
    uint64_t now = qms_now_ms ();
    snprintf (sql, sizeof sql,
              "CREATE TABLE schema_version (version INTEGER NOT NULL);"
              "INSERT INTO schema_version VALUES (3);"
              "INSERT INTO users (id, name, name_key, password, created) VALUES"
              " ('id-u1', 'u1', 'u1', 'phc', 1), ('id-u2', 'u2', 'u2', 'phc', 1);"
              "INSERT INTO messages VALUES"
              " (1, 'm1', 'id-u1', 'id-u2', 'u2', 'k2', 'c1', 'b1', %llu),"
              " (2, 'm2', 'id-u2', 'id-u1', 'u1', 'k1', NULL, 'b2', %llu),"
              " (3, 'm3', 'id-u1', 'id-u2', 'u2', 'k2', 'c3', 'b3', %llu),"
              " (4, 'm4', 'id-ghost', 'id-u2', 'u2', 'k2', 'c4', 'b4', %llu),"
              " (5, 'm5', 'id-u1', 'id-u2', 'u2', 'k2', 'c5', 'b5', %llu);"
              "DELETE FROM messages WHERE seq = 5;",
              (unsigned long long) now, (unsigned long long) now, (unsigned long long) now,
              (unsigned long long) now, (unsigned long long) now);
    t_db_exec (path, sql);
    assert (t_db (path, "SELECT seq FROM sqlite_sequence WHERE name = 'messages'") == 5);

    snprintf (cfg->data_dir, sizeof cfg->data_dir, "%s", dir);
    t_endpoint (cfg);
    zactor_t *store = qms_actor_start (store_actor, cfg, "store");
    assert (store);
    assert (t_db (path, "SELECT version FROM schema_version") == 4);
    assert (t_db (path, "SELECT count(*) FROM messages") == 3);
    assert (t_db (path, "SELECT count(*) FROM messages WHERE group_id IS NOT NULL") == 0);
    assert (t_db (path, "SELECT seq FROM sqlite_sequence WHERE name = 'messages'") == 5);
    assert (t_db (path, "SELECT count(*) FROM sqlite_sequence WHERE name = 'messages_new'") == 0);
    assert (t_db (path, "SELECT count(*) FROM sqlite_master WHERE name IN ('messages_by_recipient',"
                        " 'messages_by_client_id', 'messages_by_age', 'group_members_by_user',"
                        " 'groups', 'group_members')") == 6);
    assert (t_db (path, "SELECT count(*) FROM pragma_foreign_key_check") == 0);
    t_client_t c;
    t_connect (&c, cfg->store_endpoint);
    t_add (&c, (qms_rec_t) { .type = QMS_ST_MSG_FETCH, .req = 1, .num = 10,
                             .s = { [QMS_FETCH_RECIPIENT] = qms_str ("id-u1") } });
    t_send (&c);
    assert (t_recv (&c, 5000) == 3);
    assert (c.rec [0].type == QMS_ST_MSG && c.rec [0].seq == 1 && qms_str_eq (c.rec [0].s [QMS_MSG_ID], "m1")
            && qms_str_eq (c.rec [0].s [QMS_MSG_CLIENT_ID], "c1") && qms_str_eq (c.rec [0].s [QMS_MSG_TEXT], "b1"));
    assert (c.rec [1].type == QMS_ST_MSG && c.rec [1].seq == 3 && qms_str_eq (c.rec [1].s [QMS_MSG_ID], "m3"));
    assert (c.rec [2].type == QMS_ST_MSG_END && c.rec [2].num == 2);
    /*  A new message comes after the deleted seq 5. */
    qms_rec_t msg = t_msg (2, "m6", "id-u1", "c6", 5000);
    assert (t_result (&c, msg) == QMS_ST_OK);
    assert (t_db (path, "SELECT seq FROM messages WHERE id = 'm6'") == 6);
    /*  The same sender and client id, to another recipient: EXISTS, as before. */
    msg = t_msg (3, "m7", "id-u2", "c1", 5000);
    msg.s [QMS_STORE_SENDER] = qms_str ("id-u2");
    qms_rec_t r = t_call (&c, msg, QMS_ST_RESULT);
    assert (r.num == QMS_ST_EXISTS && qms_str_eq (r.s [QMS_RESULT_STORED_ID], "m1"));
    /*  An id is unique per recipient only. */
    assert (t_result (&c, t_msg (4, "m1", "id-u2", "c8", 5000)) == QMS_ST_OK);
    assert (t_result (&c, t_msg (5, "m1", "id-u2", "c9", 5000)) == QMS_ST_ERROR);     /* under quota: the id */
    t_close (&c);
    zactor_destroy (&store);
    t_rmdir (dir);
}

/*  A QMS_ST_GROUP_WRITE by the owner given, at time 5000. */
static qms_rec_t
t_gwrite (uint64_t req, uint64_t op, uint64_t epoch, const char *group, const char *name,
          const char *owner, const char *members)
{
    qms_rec_t rec = { .type = QMS_ST_GROUP_WRITE, .req = req, .num = op, .time = 5000, .seq = epoch };
    rec.s [QMS_GWRITE_GROUP] = qms_str (group);
    rec.s [QMS_GWRITE_NAME] = qms_str (name);
    rec.s [QMS_GWRITE_OWNER] = qms_str (owner);
    rec.s [QMS_GWRITE_MEMBERS] = qms_str (members);
    rec.s [QMS_GWRITE_BY] = qms_str (owner);
    return rec;
}

/*  Send a write; expect rows ST_GROUP_ROW records, then the ST_RESULT,
    whose status is returned (and *detail its detail, when asked). */
static uint64_t
t_group (t_client_t *c, qms_rec_t rec, int rows, char *detail, size_t size)
{
    t_add (c, rec);
    t_send (c);
    assert (t_recv (c, 5000) == rows + 1);
    for (int i = 0; i < rows; i++)
        assert (c->rec [i].type == QMS_ST_GROUP_ROW && c->rec [i].req == rec.req);
    assert (c->rec [rows].type == QMS_ST_RESULT && c->rec [rows].req == rec.req);
    if (detail)
        assert (qms_str_copy (c->rec [rows].s [QMS_RESULT_DETAIL], detail, size));
    return c->rec [rows].num;
}

/*  Every membership through ST_GROUP_LOAD in pages of limit, as text:
    "group|name|owner|member|member name|key|role|epoch;" in cursor order.
    Returns the pages that held rows. */
static int
t_group_dump (t_client_t *c, uint64_t limit, char *out, size_t size)
{
    size_t used = 0;
    uint64_t after = 0;
    int pages = 0;
    out [0] = 0;
    for (;;) {
        t_add (c, (qms_rec_t) { .type = QMS_ST_GROUP_LOAD, .req = 900, .num = limit, .seq = after });
        t_send (c);
        int n = t_recv (c, 5000);
        assert (n >= 1);
        qms_rec_t *end = &c->rec [n - 1];
        assert (end->type == QMS_ST_MSG_END && end->req == 900);
        assert (end->num == (uint64_t) (n - 1) && (limit == 0 || end->num <= limit));
        for (int i = 0; i < n - 1; i++) {
            qms_rec_t *r = &c->rec [i];
            assert (r->type == QMS_ST_GROUP_ROW && r->req == 900 && r->seq > after);
            after = r->seq;
            int wrote = snprintf (out + used, size - used, "%.*s|%.*s|%.*s|%.*s|%.*s|%.*s|%d|%d;",
                                  (int) r->s [0].len, r->s [0].ptr, (int) r->s [1].len, r->s [1].ptr,
                                  (int) r->s [2].len, r->s [2].ptr, (int) r->s [3].len, r->s [3].ptr,
                                  (int) r->s [4].len, r->s [4].ptr, (int) r->s [5].len, r->s [5].ptr,
                                  (int) r->num, (int) r->time);
            assert (wrote > 0 && (size_t) wrote < size - used);
            used += (size_t) wrote;
        }
        assert (end->seq == after);
        if (n == 1)
            return pages;
        pages++;
    }
}

/*  A group message for one member, as t_msg's direct one. */
static qms_rec_t
t_gmsg (uint64_t req, const char *id, const char *recipient, const char *client_id, const char *group)
{
    qms_rec_t rec = t_msg (req, id, recipient, client_id, 5000);
    rec.type = QMS_ST_GROUP_MSG_STORE;
    rec.s [QMS_STORE_GROUP] = qms_str (group);
    return rec;
}

/*  Groups: writes whole or not at all (a bad input anywhere leaves the
    database as it was), the changes, paging, group messages among direct
    ones, an admin's user delete, a restart. */
static void
t_groups (qms_config_t *cfg, const char *root)
{
    char dir [256], path [300], before [4096], after [4096], detail [256];
    snprintf (dir, sizeof dir, "%s/groups", root);
    snprintf (path, sizeof path, "%s/users.db", dir);
    assert (mkdir (dir, 0700) == 0);
    snprintf (cfg->data_dir, sizeof cfg->data_dir, "%s", dir);
    t_endpoint (cfg);
    zactor_t *store = qms_actor_start (store_actor, cfg, "store");
    assert (store);
    t_client_t c;
    t_connect (&c, cfg->store_endpoint);
    const char *users [][3] = { { "id-a", "Alice", "alice" }, { "id-b", "Bob", "bob" }, { "id-c", "Carol", "carol" },
                                { "id-d", "Dave", "dave" }, { "id-e", "Erin", "erin" } };
    for (int i = 0; i < 5; i++)
        assert (t_result (&c, t_req (QMS_ST_USER_CREATE, 1, 0, users [i][0], users [i][1], users [i][2], "phc")) == QMS_ST_OK);
    assert (t_result (&c, t_req (QMS_ST_SESSION_START, 2, 1000, "id-a", "ha", "pk-a", 0)) == QMS_ST_OK);

    /*  Create: one row per member (cursor, name, key, role, epoch), then OK. */
    assert (t_group (&c, t_gwrite (10, QMS_GROUP_OP_CREATE, 1, "g1", "Climbing", "id-a",
                                   "id-a\t2\nid-b\t0\nid-c\t1\n"), 3, NULL, 0) == QMS_ST_OK);
    assert (c.rec [0].num == QMS_GROUP_ROLE_OWNER && c.rec [0].time == 1 && qms_str_eq (c.rec [0].s [QMS_GROW_MEMBER], "id-a"));
    assert (qms_str_eq (c.rec [0].s [QMS_GROW_MEMBER_NAME], "Alice") && qms_str_eq (c.rec [0].s [QMS_GROW_MEMBER_KEY], "pk-a"));
    assert (qms_str_eq (c.rec [0].s [QMS_GROW_GROUP], "g1") && qms_str_eq (c.rec [0].s [QMS_GROW_NAME], "Climbing")
            && qms_str_eq (c.rec [0].s [QMS_GROW_OWNER], "id-a"));
    assert (c.rec [1].num == QMS_GROUP_ROLE_MEMBER && qms_str_eq (c.rec [1].s [QMS_GROW_MEMBER_NAME], "Bob")
            && c.rec [1].s [QMS_GROW_MEMBER_KEY].len == 0);
    assert (c.rec [2].num == QMS_GROUP_ROLE_ADMIN && c.rec [0].seq < c.rec [1].seq && c.rec [1].seq < c.rec [2].seq);
    t_group_dump (&c, 100, before, sizeof before);
    assert (streq (before, "g1|Climbing|id-a|id-a|Alice|pk-a|2|1;g1|Climbing|id-a|id-b|Bob||0|1;"
                           "g1|Climbing|id-a|id-c|Carol||1|1;"));

    /*  As an enemy would: every one of these fails and writes nothing. */
    assert (t_group (&c, t_gwrite (11, QMS_GROUP_OP_CREATE, 1, "g1", "Other", "id-b", "id-b\t2"), 0, NULL, 0) == QMS_ST_EXISTS);
    /*  One unknown user among many, in a create and in an add: NO_USER
        naming it, and the rows of the members before it taken back. */
    assert (t_group (&c, t_gwrite (12, QMS_GROUP_OP_CREATE, 1, "g2", "Two", "id-a",
                                   "id-a\t2\nid-b\t0\nid-ghost\t0\nid-c\t0"), 0, detail, sizeof detail) == QMS_ST_NO_USER);
    assert (streq (detail, "id-ghost"));
    assert (t_group (&c, t_gwrite (13, QMS_GROUP_OP_ADD, 2, "g1", "", "id-a", "id-d\t0\nid-e\t1\nid-ghost2\t1"),
                     0, detail, sizeof detail) == QMS_ST_NO_USER);
    assert (streq (detail, "id-ghost2"));
    const struct { uint64_t op; const char *owner, *members, *detail; } bad [] = {
        { QMS_GROUP_OP_ADD, "id-a", "id-d\t0\nid-b\t0", "already a member: id-b" },
        { QMS_GROUP_OP_ADD, "id-a", "id-d", "a member is added as a member (0) or an admin (1): id-d" },
        { QMS_GROUP_OP_ADD, "id-a", "id-d\t5", "member line 1 is malformed" },
        { QMS_GROUP_OP_ADD, "id-a", "id-d\t01", "member line 1 is malformed" },
        { QMS_GROUP_OP_ADD, "id-a", "\t0", "member line 1 is malformed" },
        { QMS_GROUP_OP_ADD, "id-a", "id-d\t0\n\nid-e\t0", "member line 2 is malformed" },
        { QMS_GROUP_OP_ADD, "id-a", "id-d\t0\nid\x01" "e\t0", "member line 2 is malformed" },
        { QMS_GROUP_OP_ADD, "id-a", "id-d\t2", "a member is added as a member (0) or an admin (1): id-d" },
        { QMS_GROUP_OP_ADD, "id-a", "", "no member named" },
        { QMS_GROUP_OP_ADD, "id-a", "\n", "member line 1 is malformed" },
        { QMS_GROUP_OP_PROMOTE, "id-a", "id-a\t1", "the owner's role does not change: id-a" },
        { QMS_GROUP_OP_PROMOTE, "id-a", "id-b\t0", "promote gives the admin role (1): id-b" },
        { QMS_GROUP_OP_PROMOTE, "id-a", "id-b\t1\nid-d\t1", "not a member: id-d" },
        { QMS_GROUP_OP_DEMOTE, "id-a", "id-c\t1", "demote gives the member role (0): id-c" },
        { QMS_GROUP_OP_REMOVE, "id-a", "id-b\nid-d", "not a member: id-d" },
        { QMS_GROUP_OP_REMOVE, "id-a", "id-b\t0\nid-b\t0", "not a member: id-b" },
        { QMS_GROUP_OP_REMOVE, "id-c", "id-b", "the owner changes only when the owner leaves" },
        { QMS_GROUP_OP_LEAVE, "id-a", "id-a", "the owner left: s2 must name the new owner" },
        { QMS_GROUP_OP_LEAVE, "", "id-a", "the owner left: s2 must name the new owner" },
        { QMS_GROUP_OP_LEAVE, "id-d", "id-a", "the new owner is not a member: id-d" },
        { QMS_GROUP_OP_LEAVE, "id-b", "id-a\nid-b", "the new owner is not a member: id-b" },
        { QMS_GROUP_OP_RENAME, "id-a", "", "missing group name" },
        { QMS_GROUP_OP_LIST, "id-a", "id-b\t0", "unknown group op 8" },
        { 0, "id-a", "id-b\t0", "unknown group op 0" },
        { 1000, "id-a", "id-b\t0", "unknown group op 1000" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++) {
        assert (t_group (&c, t_gwrite (20 + i, bad [i].op, 9, "g1", "", bad [i].owner, bad [i].members),
                         0, detail, sizeof detail) == QMS_ST_ERROR);
        assert (strstr (detail, bad [i].detail) == detail);
    }
    const struct { const char *owner, *members, *detail; } bad_create [] = {
        { "id-a", "id-b\t0", "the owner (s2) is not among the members" },
        { "id-a", "id-a\t0\nid-b\t0", "the owner's line must have the owner role: id-a" },
        { "id-a", "id-a\t2\nid-b\t2", "only the owner (s2) has the owner role: id-b" },
        { "id-a", "id-a\t2\nid-a\t2", "the owner is named more than once" },
        { "id-a", "id-a\t2\nid-b", "a member line without a role: id-b" },
        { "id-a", "id-a\t2\nid-b\t0\nid-b\t1", "already a member: id-b" },
        { "", "id-a\t2", "missing owner" },
    };
    for (size_t i = 0; i < sizeof bad_create / sizeof bad_create [0]; i++) {
        assert (t_group (&c, t_gwrite (60 + i, QMS_GROUP_OP_CREATE, 1, "g2", "Two", bad_create [i].owner,
                                       bad_create [i].members), 0, detail, sizeof detail) == QMS_ST_ERROR);
        assert (streq (detail, bad_create [i].detail));
    }
    assert (t_group (&c, t_gwrite (70, QMS_GROUP_OP_ADD, 2, "nope", "", "id-a", "id-d\t0"), 0, detail, sizeof detail) == QMS_ST_ERROR);
    assert (streq (detail, "no such group: nope"));
    assert (t_group (&c, t_gwrite (71, QMS_GROUP_OP_ADD, 2, "", "", "id-a", "id-d\t0"), 0, NULL, 0) == QMS_ST_ERROR);
    assert (t_group (&c, t_gwrite (72, QMS_GROUP_OP_CREATE, 1, "g2", "", "id-a", "id-a\t2"), 0, NULL, 0) == QMS_ST_ERROR);
    /*  In one batch with a good record after it, a failed write still
        answers nothing but its ERROR. */
    t_add (&c, t_gwrite (73, QMS_GROUP_OP_CREATE, 1, "g2", "Two", "id-a", "id-a\t2\nid-b\t0\nid-b\t0"));
    t_add (&c, t_req (QMS_ST_USER_GET, 74, 0, "bob", 0, 0, 0));
    t_send (&c);
    assert (t_recv (&c, 5000) == 2 && c.rec [0].type == QMS_ST_RESULT && c.rec [0].num == QMS_ST_ERROR
            && c.rec [1].type == QMS_ST_USER && c.rec [1].num == 1);
    t_group_dump (&c, 100, after, sizeof after);
    assert (streq (before, after));
    assert (t_db (path, "SELECT count(*) FROM groups") == 1);
    assert (t_db (path, "SELECT epoch FROM groups") == 1);

    /*  The changes. */
    assert (t_group (&c, t_gwrite (80, QMS_GROUP_OP_ADD, 2, "g1", "", "id-a", "id-d\t0\nid-e\t1"), 2, NULL, 0) == QMS_ST_OK);
    assert (c.rec [0].time == 2 && qms_str_eq (c.rec [0].s [QMS_GROW_MEMBER_NAME], "Dave") && c.rec [0].num == 0
            && qms_str_eq (c.rec [0].s [QMS_GROW_NAME], "Climbing") && qms_str_eq (c.rec [0].s [QMS_GROW_OWNER], "id-a"));
    assert (qms_str_eq (c.rec [1].s [QMS_GROW_MEMBER], "id-e") && c.rec [1].num == 1 && c.rec [1].seq > c.rec [0].seq);
    assert (t_group (&c, t_gwrite (81, QMS_GROUP_OP_RENAME, 0, "g1", "Bouldering", "id-a", ""), 0, NULL, 0) == QMS_ST_OK);
    assert (t_group (&c, t_gwrite (82, QMS_GROUP_OP_PROMOTE, 0, "g1", "", "id-a", "id-b\t1"), 0, NULL, 0) == QMS_ST_OK);
    assert (t_group (&c, t_gwrite (83, QMS_GROUP_OP_DEMOTE, 0, "g1", "", "id-a", "id-c\t0\n"), 0, NULL, 0) == QMS_ST_OK);
    assert (t_group (&c, t_gwrite (84, QMS_GROUP_OP_REMOVE, 3, "g1", "", "id-a", "id-d\t0"), 0, NULL, 0) == QMS_ST_OK);
    t_group_dump (&c, 100, after, sizeof after);
    assert (streq (after, "g1|Bouldering|id-a|id-a|Alice|pk-a|2|3;g1|Bouldering|id-a|id-b|Bob||1|3;"
                          "g1|Bouldering|id-a|id-c|Carol||0|3;g1|Bouldering|id-a|id-e|Erin||1|3;"));
    /*  The owner leaves; the router names the new owner, who gets the role. */
    assert (t_group (&c, t_gwrite (85, QMS_GROUP_OP_LEAVE, 4, "g1", "", "id-b", "id-a"), 0, NULL, 0) == QMS_ST_OK);
    t_group_dump (&c, 100, after, sizeof after);
    assert (streq (after, "g1|Bouldering|id-b|id-b|Bob||2|4;g1|Bouldering|id-b|id-c|Carol||0|4;"
                          "g1|Bouldering|id-b|id-e|Erin||1|4;"));
    /*  A group whose last member leaves is deleted. */
    assert (t_group (&c, t_gwrite (86, QMS_GROUP_OP_CREATE, 1, "g3", "Solo", "id-c", "id-c\t2"), 1, NULL, 0) == QMS_ST_OK);
    assert (t_db (path, "SELECT count(*) FROM groups") == 2);
    assert (t_group (&c, t_gwrite (87, QMS_GROUP_OP_LEAVE, 2, "g3", "", "id-c", "id-c"), 0, detail, sizeof detail) == QMS_ST_OK);
    assert (strstr (detail, "group deleted"));
    assert (t_db (path, "SELECT count(*) FROM groups") == 1);
    /*  Paging: more memberships than a page, in several pages, the same
        rows as in one; a limit of 0 or over the cap is the cap. */
    assert (t_group (&c, t_gwrite (88, QMS_GROUP_OP_CREATE, 1, "g4", "Four", "id-d", "id-d\t2\nid-a\t0\nid-c\t1\nid-b\t1"),
                     4, NULL, 0) == QMS_ST_OK);
    assert (t_group (&c, t_gwrite (89, QMS_GROUP_OP_CREATE, 1, "g5", "Five", "id-d", "id-d\t2"), 1, NULL, 0) == QMS_ST_OK);
    t_group_dump (&c, 100, before, sizeof before);
    assert (t_group_dump (&c, 2, after, sizeof after) == 4);
    assert (streq (before, after));
    assert (t_group_dump (&c, 0, after, sizeof after) == 1 && streq (before, after));
    assert (t_group_dump (&c, UINT64_MAX, after, sizeof after) == 1 && streq (before, after));
    /*  req 0: written, nothing answered. */
    t_add (&c, t_gwrite (0, QMS_GROUP_OP_RENAME, 0, "g5", "Fifth", "id-d", ""));
    t_add (&c, (qms_rec_t) { .type = QMS_ST_GROUP_LOAD, .req = 0 });
    t_send (&c);
    assert (t_recv (&c, 200) == -1);
    assert (t_db (path, "SELECT count(*) FROM groups WHERE name = 'Fifth'") == 1);

    /*  Group messages: the same message id and client id for two members,
        both stored; a retry per member is EXISTS; among direct ones in seq
        order; quota (3) as for direct ones. */
    assert (t_result (&c, t_msg (100, "d1", "id-c", "dc1", 5000)) == QMS_ST_OK);
    assert (t_result (&c, t_gmsg (101, "gm1", "id-c", "gc1", "g1")) == QMS_ST_OK);
    assert (t_result (&c, t_gmsg (102, "gm1", "id-e", "gc1", "g1")) == QMS_ST_OK);
    qms_rec_t r = t_call (&c, t_gmsg (103, "gm1-again", "id-c", "gc1", "g1"), QMS_ST_RESULT);
    assert (r.num == QMS_ST_EXISTS && qms_str_eq (r.s [QMS_RESULT_STORED_ID], "gm1"));
    /*  A direct message with a client id a group message holds for the
        same recipient is that message; for another recipient it is new,
        and then a direct retry finds it wherever it went, as before. */
    r = t_call (&c, t_msg (104, "d-x", "id-c", "gc1", 5000), QMS_ST_RESULT);
    assert (r.num == QMS_ST_EXISTS && qms_str_eq (r.s [QMS_RESULT_STORED_ID], "gm1"));
    assert (t_result (&c, t_msg (105, "d-y", "id-d", "gc1", 5000)) == QMS_ST_OK);
    r = t_call (&c, t_msg (106, "d-z", "id-a", "gc1", 5000), QMS_ST_RESULT);
    assert (r.num == QMS_ST_EXISTS && qms_str_eq (r.s [QMS_RESULT_STORED_ID], "d-y"));
    assert (t_result (&c, t_msg (107, "d2", "id-c", "", 5000)) == QMS_ST_OK);
    assert (t_result (&c, t_gmsg (108, "gm2", "id-c", "gc2", "g1")) == QMS_ST_QUOTA);
    assert (t_result (&c, t_gmsg (109, "gm2", "id-ghost", "gc2", "g1")) == QMS_ST_NO_USER);
    assert (t_result (&c, t_gmsg (110, "gm2", "id-e", "gc2", "")) == QMS_ST_ERROR);
    assert (t_result (&c, t_gmsg (111, "gm1", "id-e", "gc3", "g1")) == QMS_ST_ERROR);     /* id taken for id-e */
    t_add (&c, (qms_rec_t) { .type = QMS_ST_MSG_FETCH, .req = 112, .num = 10,
                             .s = { [QMS_FETCH_RECIPIENT] = qms_str ("id-c") } });
    t_send (&c);
    assert (t_recv (&c, 5000) == 4);
    assert (c.rec [0].type == QMS_ST_MSG && qms_str_eq (c.rec [0].s [QMS_MSG_ID], "d1"));
    assert (c.rec [1].type == QMS_ST_GROUP_MSG && qms_str_eq (c.rec [1].s [QMS_MSG_ID], "gm1")
            && qms_str_eq (c.rec [1].s [QMS_MSG_GROUP], "g1") && qms_str_eq (c.rec [1].s [QMS_MSG_CLIENT_ID], "gc1")
            && qms_str_eq (c.rec [1].s [QMS_MSG_SENDER], "id-bob") && qms_str_eq (c.rec [1].s [QMS_MSG_SENDER_NAME], "Bob")
            && qms_str_eq (c.rec [1].s [QMS_MSG_SENDER_KEY], "bob-key")
            && qms_str_eq (c.rec [1].s [QMS_MSG_TEXT], "ciphertext \"quoted\"") && c.rec [1].time == s_t_base + 5000);
    assert (c.rec [2].type == QMS_ST_MSG && qms_str_eq (c.rec [2].s [QMS_MSG_ID], "d2"));
    assert (c.rec [0].seq < c.rec [1].seq && c.rec [1].seq < c.rec [2].seq);
    assert (c.rec [3].type == QMS_ST_MSG_END && c.rec [3].num == 3 && c.rec [3].seq == c.rec [2].seq);
    /*  A receipt deletes one member's copy; the other member's stays, then
        goes with delete-up-to. */
    qms_rec_t del = { .type = QMS_ST_MSG_DEL, .req = 113, .s = { [QMS_DEL_RECIPIENT] = qms_str ("id-c"),
                                                                 [QMS_DEL_MSG_ID] = qms_str ("gm1") } };
    r = t_call (&c, del, QMS_ST_MSG_DELETED);
    assert (r.num == 1 && qms_str_eq (r.s [QMS_DELETED_SENDER], "id-bob") && qms_str_eq (r.s [QMS_DELETED_CLIENT_ID], "gc1")
            && qms_str_eq (r.s [QMS_DELETED_GROUP], "g1"));
    del.req = 114;
    assert (t_call (&c, del, QMS_ST_MSG_DELETED).num == 0);
    t_add (&c, (qms_rec_t) { .type = QMS_ST_MSG_FETCH, .req = 115, .num = 10,
                             .s = { [QMS_FETCH_RECIPIENT] = qms_str ("id-e") } });
    t_send (&c);
    assert (t_recv (&c, 5000) == 2 && c.rec [0].type == QMS_ST_GROUP_MSG && qms_str_eq (c.rec [0].s [QMS_MSG_ID], "gm1"));
    t_add (&c, (qms_rec_t) { .type = QMS_ST_MSG_DEL_UPTO, .req = 116, .seq = c.rec [0].seq,
                             .s = { [QMS_UPTO_RECIPIENT] = qms_str ("id-e") } });
    t_send (&c);
    assert (t_recv (&c, 5000) == 1 && c.rec [0].num == QMS_ST_OK);
    assert (t_db (path, "SELECT count(*) FROM messages WHERE recipient_id = 'id-e'") == 0);

    /*  An admin deletes Dave: g5 (Dave alone) is deleted; g4 (Dave the
        owner; Alice its longest-standing member, Carol its longest-standing
        admin) gets Carol as owner and a new epoch; db check finds nothing. */
    t_admin_t a;
    t_admin (&c, 120, QMS_ADMIN_USER_DELETE, "dave", NULL, &a);
    assert (a.status == QMS_ST_OK);
    t_group_dump (&c, 100, after, sizeof after);
    assert (streq (after, "g1|Bouldering|id-b|id-b|Bob||2|4;g1|Bouldering|id-b|id-c|Carol||0|4;"
                          "g1|Bouldering|id-b|id-e|Erin||1|4;"
                          "g4|Four|id-c|id-a|Alice|pk-a|0|2;g4|Four|id-c|id-c|Carol||2|2;g4|Four|id-c|id-b|Bob||1|2;"));
    assert (t_db (path, "SELECT count(*) FROM groups") == 2);
    t_admin (&c, 121, QMS_ADMIN_DB_CHECK, NULL, NULL, &a);
    assert (a.status == QMS_ST_OK && a.rows == 0);
    /*  Alice was a member of g4 only: deleting her too moves g4's epoch,
        and db check finds a group broken behind the store's back. */
    t_admin (&c, 122, QMS_ADMIN_USER_DELETE, "alice", NULL, &a);
    assert (a.status == QMS_ST_OK);
    assert (t_db (path, "SELECT epoch FROM groups WHERE id = 'g4'") == 3);
    assert (t_db (path, "SELECT epoch FROM groups WHERE id = 'g1'") == 4);
    assert (t_db (path, "UPDATE group_members SET role = 0 WHERE user_id = 'id-b' AND group_id = 'g1'") == -1);
    t_admin (&c, 123, QMS_ADMIN_DB_CHECK, NULL, NULL, &a);
    assert (a.status == QMS_ST_ERROR && a.rows == 1 && streq (a.s [0][QMS_ROW_PROBLEM],
            "group g1 has an owner who is not its member with the owner role"));
    assert (t_db (path, "UPDATE group_members SET role = 2 WHERE user_id = 'id-b' AND group_id = 'g1'") == -1);

    /*  Groups survive a restart. */
    t_group_dump (&c, 100, before, sizeof before);
    t_close (&c);
    zactor_destroy (&store);
    t_endpoint (cfg);
    store = qms_actor_start (store_actor, cfg, "store");
    assert (store);
    t_connect (&c, cfg->store_endpoint);
    t_group_dump (&c, 3, after, sizeof after);
    assert (streq (before, after));
    t_close (&c);
    zactor_destroy (&store);
    t_rmdir (dir);
}

void
store_test (bool verbose)
{
    if (verbose)
        printf (" * store: ");
    char root [] = "/tmp/qms-store-test-XXXXXX";
    assert (mkdtemp (root));
    char dir [256], path [300];
    snprintf (dir, sizeof dir, "%s/data", root);
    snprintf (path, sizeof path, "%s/users.db", dir);
    assert (mkdir (dir, 0700) == 0);

    qms_config_t cfg;
    qms_config_defaults (&cfg);
    snprintf (cfg.data_dir, sizeof cfg.data_dir, "%s", dir);
    cfg.message_quota = 3;
    t_endpoint (&cfg);
    zactor_t *store = qms_actor_start (store_actor, &cfg, "store");
    assert (store);
    t_client_t client;
    t_connect (&client, cfg.store_endpoint);
    t_users (&client);
    t_sessions (&client);
    t_batches (&client);
    t_messages (&client);
    /*  An old message, to be expired when the store starts again. */
    t_add (&client, t_msg (0, "m-old", "id-alice", "c-old", 1000));
    t_send (&client);
    /*  Finish on $TERM: what was sent before it is still written. */
    t_add (&client, t_req (QMS_ST_USER_CREATE, 0, 0, "id-frank", "Frank", "frank", "phc-frank"));
    t_send (&client);
    zactor_destroy (&store);
    t_close (&client);

    /*  On disk: private, at schema version 1, one version row. */
    struct stat info;
    assert (stat (path, &info) == 0);
    assert ((info.st_mode & 0777) == 0600);
    assert (t_db (path, "SELECT version FROM schema_version") == STORE_SCHEMA_VERSION);
    assert (t_db (path, "SELECT count(*) FROM schema_version") == 1);
    assert (t_db (path, "SELECT count(*) FROM users") == 5);

    /*  A restart on the same directory keeps users and sessions. */
    t_endpoint (&cfg);
    store = qms_actor_start (store_actor, &cfg, "store");
    assert (store);
    t_connect (&client, cfg.store_endpoint);
    qms_rec_t r = t_call (&client, t_req (QMS_ST_USER_GET, 1, 0, "alice", 0, 0, 0), QMS_ST_USER);
    assert (r.num == 1 && qms_str_eq (r.s [QMS_USER_ID], "id-alice") && qms_str_eq (r.s [QMS_USER_PHC], "phc2"));
    assert (qms_str_eq (r.s [QMS_USER_PUBKEY], "pk5"));
    t_session_is (&client, "h5", 7000, "id-alice", "pk5");
    /*  Stored messages survive the restart; the one past the age limit does not. */
    t_add (&client, (qms_rec_t) { .type = QMS_ST_MSG_FETCH, .req = 3, .num = 10,
                                  .s = { [QMS_FETCH_RECIPIENT] = qms_str ("id-alice") } });
    t_send (&client);
    assert (t_recv (&client, 5000) == 3);
    assert (qms_str_eq (client.rec [0].s [QMS_MSG_ID], "m2") && qms_str_eq (client.rec [1].s [QMS_MSG_ID], "m3"));
    assert (client.rec [2].type == QMS_ST_MSG_END && client.rec [2].num == 2);
    r = t_call (&client, t_req (QMS_ST_SESSION_GET, 2, 0, "h6", 0, 0, 0), QMS_ST_SESSION);
    assert (r.num == 1 && r.time == 9000 && qms_str_eq (r.s [QMS_SESSION_NAME], "Carol"));
    t_writable_probe (&client, path);
    t_close (&client);
    zactor_destroy (&store);

    t_refusals (&cfg, root);
    t_admin_ops (&cfg, root);
    t_skeletons (&cfg, root);
    t_migrate_groups (&cfg, root);
    t_groups (&cfg, root);

    t_rmdir (dir);
    snprintf (dir, sizeof dir, "%s/garbage", root);
    t_rmdir (dir);
    snprintf (dir, sizeof dir, "%s/readonly", root);
    t_rmdir (dir);
    t_rmdir (root);
    qms_config_free (&cfg);
    if (verbose)
        printf ("OK\n");
}
