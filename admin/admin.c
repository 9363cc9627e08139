/*  admin.c - the administration commands: users and the database.

    The command is a client of the store actor (QMS_ST_ADMIN) and of the
    router (QMS_RT_KICK_USER); it never opens SQLite.  Which store it talks
    to is decided once, at the start:

      1. --store-endpoint given as tcp:// or ipc://: that store, or fail.
      2. a live process on ipc://<data dir>/.qms-admin-store: the running
         server's store (a ping must answer within 3 s).
      3. otherwise no server runs on the data directory: the store actor is
         started in this process on an inproc:// endpoint.  The store takes
         an exclusive lock on the data directory, so this cannot happen
         beside a live server whose admin socket could not be reached.

    Writes that end a user's session (delete, logout, reset-password) are
    done in the store first, then the running router is told to close the
    user's connection at once; in that order, a client that reconnects in
    between finds its session already gone.
*/
#include "admin.h"
#include "qms_admin.h"
#include "qms_curve.h"
#include "qms_password.h"
#include "qms_actor.h"
#include "qms_config.h"
#include "qms_log.h"
#include "qms_msg.h"
#include "qms_util.h"
#include "store.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define LOG                 "admin"
#define ADMIN_PING_MS       3000        /* a running store answers a ping */
#define ADMIN_REPLY_MS      30000       /* silence allowed in a quick operation */
#define ADMIN_LONG_MS       3600000     /* silence allowed in a backup or check */
#define ADMIN_KICK_MS       3000        /* the running router answers a kick */
#define ADMIN_KICK_REASON   "Removed by an administrator"
#define ADMIN_NAME_WIDTH    20
#define SUN_PATH_MAX        (sizeof ((struct sockaddr_un *) 0)->sun_path)

/* ------------------------------------------------------------------------ */
/*  The commands */

typedef enum {
    CMD_LIST, CMD_SHOW, CMD_SESSIONS, CMD_DELETE, CMD_LOGOUT, CMD_PASSWORD,
    CMD_BACKUP, CMD_CHECK
} cmd_kind_t;

typedef struct {
    const char *group, *verb;
    cmd_kind_t kind;
    const char *arg;            /* the positional argument's name, or NULL */
    int op;                     /* QMS_ADMIN_* */
} command_t;

static const command_t s_commands [] = {
    { "users", "list",           CMD_LIST,     NULL,   QMS_ADMIN_USER_LIST },
    { "users", "show",           CMD_SHOW,     "NAME", QMS_ADMIN_USER_SHOW },
    { "users", "sessions",       CMD_SESSIONS, "NAME", QMS_ADMIN_USER_SESSIONS },
    { "users", "delete",         CMD_DELETE,   "NAME", QMS_ADMIN_USER_DELETE },
    { "users", "logout",         CMD_LOGOUT,   "NAME", QMS_ADMIN_USER_LOGOUT },
    { "users", "reset-password", CMD_PASSWORD, "NAME", QMS_ADMIN_USER_PASSWORD },
    { "db",    "backup",         CMD_BACKUP,   "FILE", QMS_ADMIN_DB_BACKUP },
    { "db",    "check",          CMD_CHECK,    NULL,   QMS_ADMIN_DB_CHECK },
};
#define COMMAND_COUNT (sizeof s_commands / sizeof s_commands [0])

bool
admin_is_command (const char *word)
{
    return word && (streq (word, "users") || streq (word, "db"));
}

static void
admin_usage (FILE *out)
{
    fprintf (out,
        "Usage: qmessageserver users list|show NAME|sessions NAME|delete NAME|logout NAME\n"
        "                          |reset-password NAME   [options]\n"
        "       qmessageserver db backup FILE|check   [options]\n"
        "Administration of a server's data directory, running or stopped (docs/ADMIN.md).\n"
        "  users list                 every user: name, id, created, last activity, waiting messages\n"
        "  users show NAME            one user\n"
        "  users sessions NAME        the user's stored session (token hash, created, last activity)\n"
        "  users delete NAME          delete the user, its session and the messages waiting for it\n"
        "  users logout NAME          end the user's session\n"
        "  users reset-password NAME  a new password, read from standard input (asked twice,\n"
        "                             without echo, on a terminal); ends the user's session\n"
        "  db backup FILE             an online, consistent copy of the database into FILE (new);\n"
        "                             the store writes it: with a running server, a path that\n"
        "                             the server's user may write\n"
        "  db check                   SQLite's integrity and foreign-key checks\n"
        "A running server is reached on ipc://DIR/" QMS_ADMIN_STORE_SOCKET " and ipc://DIR/"
        QMS_ADMIN_ROUTER_SOCKET ",\nand ends a user's connection at once; without one, the store "
        "runs inside this command.\n"
        "Options (the server's options are accepted; these matter):\n"
        "  --data-dir DIR             the server's data directory (default: the working directory)\n"
        "  --store-endpoint URL       a cluster's store (tcp:// or ipc://) instead of DIR's socket\n"
        "  --router-endpoint URL      a cluster's router, to close connections at once\n"
        "  --argon2-memory KIB, --argon2-iterations N   hash cost for reset-password (the server's)\n"
        "  --log-level LEVEL          warnings and errors by default\n"
        "Exit codes: 0 done, 1 no such user / check failed / refused, 2 usage,\n"
        "3 no store could be reached or started, or the running router did not answer.\n");
}

/* ------------------------------------------------------------------------ */
/*  One run of a command */

typedef struct {
    const command_t *cmd;
    char arg [PATH_MAX];        /* NAME, or FILE made absolute */
    qms_config_t cfg;
    FILE *out, *err;
    int in_fd;                  /* where reset-password reads from */
    zsock_t *store;             /* DEALER to the store */
    zactor_t *local;            /* the store in this process, or NULL */
    qms_config_t local_cfg;
    store_local_t local_args;
    bool running;               /* a server runs: kick through its router */
    char store_at [PATH_MAX + 64];
    uint64_t next_req;
    size_t rows;
} admin_t;

typedef void (row_fn) (admin_t *self, const qms_rec_t *row);

typedef struct {
    bool answered;
    uint64_t status;
    char detail [1024];
} done_t;

/*  Send ask on sock and read until its QMS_ADMIN_DONE, handing each of its
    rows to on_row.  timeout_ms is the silence allowed between messages.
    0 when DONE came, -1 when nothing more came in time. */
static int
admin_call (admin_t *self, zsock_t *sock, qms_rec_t *ask, int timeout_ms, row_fn *on_row, done_t *done)
{
    memset (done, 0, sizeof *done);
    ask->req = ++self->next_req;
    void *raw = zsock_resolve (sock);
    if (qms_rec_send (raw, NULL, 0, ask))
        return -1;
    int64_t deadline = zclock_mono () + timeout_ms;
    while (!done->answered) {
        int64_t wait = deadline - zclock_mono ();
        zmq_pollitem_t item = { raw, 0, ZMQ_POLLIN, 0 };
        if (wait <= 0 || zmq_poll (&item, 1, (long) wait) <= 0)
            return -1;
        deadline = zclock_mono () + timeout_ms;
        zmq_msg_t body;
        zmq_msg_init (&body);
        if (qms_batch_recv (raw, NULL, NULL, &body) == 1) {
            const uint8_t *data = (const uint8_t *) zmq_msg_data (&body);
            size_t size = zmq_msg_size (&body), offset = 0;
            qms_rec_t rec;
            if (!qms_batch_valid (data, size, QMS_ROLE_ADMIN, NULL))
                size = 0;               /* not an answer we can trust: none */
            while (qms_rec_next (data, size, &offset, &rec) == 1) {
                if (rec.req != ask->req)
                    continue;           /* an answer to an earlier, timed-out ask */
                if (rec.type == QMS_ST_ADMIN_ROW && on_row)
                    on_row (self, &rec);
                else
                if (rec.type == QMS_ADMIN_DONE) {
                    done->answered = true;
                    done->status = rec.num;
                    qms_str_copy (rec.s [QMS_RESULT_DETAIL], done->detail, sizeof done->detail);
                }
            }
        }
        zmq_msg_close (&body);
    }
    return 0;
}

static zsock_t *
admin_dealer (const char *endpoint)
{
    zsock_t *dealer = zsock_new (ZMQ_DEALER);
    if (!dealer)
        return NULL;
    qms_socket_tune (dealer);
    if (qms_curve_connect (dealer, endpoint)) {
        zsock_destroy (&dealer);
        return NULL;
    }
    return dealer;
}

static bool
is_inproc (const char *endpoint)
{
    return strncmp (endpoint, "inproc://", 9) == 0;
}

/*  A store actor in this process, on a database nobody else has open. */
static int
admin_start_local (admin_t *self)
{
    char db [PATH_MAX + 16];
    struct stat info;
    snprintf (db, sizeof db, "%s/users.db", self->cfg.data_dir);
    if (stat (db, &info) || !S_ISREG (info.st_mode)) {
        /*  Never make a new, empty database for a mistyped --data-dir. */
        fprintf (self->err, "qmessageserver: no database in %s (no users.db there; is --data-dir "
                 "right?)\n", self->cfg.data_dir);
        return ADMIN_EXIT_FAILED;
    }
    if (geteuid () == 0 && info.st_uid != 0)
        fprintf (self->err, "qmessageserver: warning: running as root on a database owned by uid %u; "
                 "files made now would belong to root (better: sudo -u <that user>)\n",
                 (unsigned) info.st_uid);
    self->local_cfg = self->cfg;
    /*  A new name each time: libzmq frees an inproc name only some time
        after its socket closed (the selftest runs many commands). */
    static int s_runs = 0;
    snprintf (self->local_cfg.store_endpoint, sizeof self->local_cfg.store_endpoint,
              "inproc://qms-admin-store-%d-%d", (int) getpid (), ++s_runs);
    self->local_args.cfg = &self->local_cfg;
    self->local_args.reason [0] = 0;
    /*  The reason comes back in local_args; the actor's own error line
        would only repeat it in log form. */
    bool to_stderr = qms_log_get_level () >= QMS_LOG_DEBUG;
    qms_log_set_stderr (to_stderr);
    self->local = qms_actor_start (store_local_actor, &self->local_args, "store");
    qms_log_set_stderr (true);
    if (!self->local) {
        const char *reason = self->local_args.reason [0] ? self->local_args.reason : "(no reason given)";
        /*  A database the store cannot open has failed its check. */
        if (self->cmd->kind == CMD_CHECK && !strstr (reason, STORE_BUSY_TEXT)) {
            fprintf (self->err, "qmessageserver: the check failed: %s\n", reason);
            return ADMIN_EXIT_FAILED;
        }
        fprintf (self->err, "qmessageserver: the store cannot start: %s%s\n", reason,
                 strstr (reason, STORE_BUSY_TEXT) ? "; its admin socket did not answer: give "
                 "--store-endpoint, or stop the server" : "");
        return ADMIN_EXIT_UNREACHABLE;
    }
    snprintf (self->store_at, sizeof self->store_at, "%s (no server running; store started here)", db);
    self->store = admin_dealer (self->local_cfg.store_endpoint);
    return self->store ? ADMIN_EXIT_OK : ADMIN_EXIT_UNREACHABLE;
}

/*  The running store at endpoint must answer a ping. */
static int
admin_connect_remote (admin_t *self, const char *endpoint)
{
    snprintf (self->store_at, sizeof self->store_at, "%s", endpoint);
    if (strncmp (endpoint, "ipc://", 6) == 0 && !qms_admin_socket_live (endpoint + 6)) {
        fprintf (self->err, "qmessageserver: nothing listens at %s\n", endpoint);
        return ADMIN_EXIT_UNREACHABLE;
    }
    self->store = admin_dealer (endpoint);
    qms_rec_t ping = { .type = QMS_ST_ADMIN, .num = QMS_ADMIN_PING };
    done_t done;
    if (!self->store || admin_call (self, self->store, &ping, ADMIN_PING_MS, NULL, &done)
    ||  done.status != QMS_ST_OK) {
        fprintf (self->err, "qmessageserver: no answer from the store at %s within %d s "
                 "(a server too old for admin commands, or a hung one?)\n",
                 endpoint, ADMIN_PING_MS / 1000);
        return ADMIN_EXIT_UNREACHABLE;
    }
    self->running = true;
    qms_debug (LOG, "event=store_found endpoint=%s db=\"%s\"", endpoint, done.detail);
    return ADMIN_EXIT_OK;
}

static int
admin_connect (admin_t *self)
{
    if (!is_inproc (self->cfg.store_endpoint))
        return admin_connect_remote (self, self->cfg.store_endpoint);
    char path [SUN_PATH_MAX], endpoint [SUN_PATH_MAX + 8];
    if (qms_admin_socket_path (self->cfg.data_dir, QMS_ADMIN_STORE_SOCKET, path, sizeof path) == 0
    &&  qms_admin_socket_live (path)) {
        snprintf (endpoint, sizeof endpoint, "ipc://%s", path);
        return admin_connect_remote (self, endpoint);
    }
    return admin_start_local (self);
}

static void
admin_disconnect (admin_t *self)
{
    zsock_destroy (&self->store);
    zactor_destroy (&self->local);
}

/*  The running router ends the user's session and closes its connection.
    Sets *closed when a connection was closed. */
static int
admin_kick (admin_t *self, const char *user_id, const char *name, bool *closed)
{
    *closed = false;
    if (!self->running)
        return ADMIN_EXIT_OK;           /* no server: no connection to close */
    char endpoint [sizeof self->cfg.router_endpoint + SUN_PATH_MAX] = "", path [SUN_PATH_MAX];
    bool reachable = true;
    if (!is_inproc (self->cfg.router_endpoint))
        snprintf (endpoint, sizeof endpoint, "%s", self->cfg.router_endpoint);
    else
    if (qms_admin_socket_path (self->cfg.data_dir, QMS_ADMIN_ROUTER_SOCKET, path, sizeof path) == 0) {
        snprintf (endpoint, sizeof endpoint, "ipc://%s", path);
        reachable = qms_admin_socket_live (path);
    }
    else
        reachable = false;
    zsock_t *router = reachable ? admin_dealer (endpoint) : NULL;
    qms_rec_t kick = { .type = QMS_RT_KICK_USER };
    kick.s [QMS_KICK_USER_ID] = qms_str (user_id);
    kick.s [QMS_KICK_USER_REASON] = qms_str (ADMIN_KICK_REASON);
    done_t done = { .answered = false };
    int rc = router ? admin_call (self, router, &kick, ADMIN_KICK_MS, NULL, &done) : -1;
    zsock_destroy (&router);
    if (rc || (done.status != QMS_ST_OK && done.status != QMS_ST_NO_USER)) {
        fprintf (self->err, "qmessageserver: warning: the running router did not answer at %s: "
                 "%s may stay connected until the session expires or the router restarts "
                 "(give --router-endpoint)\n", endpoint [0] ? endpoint : "(no admin socket)", name);
        return ADMIN_EXIT_UNREACHABLE;
    }
    *closed = done.status == QMS_ST_OK && strstr (done.detail, "closed") != NULL;
    return ADMIN_EXIT_OK;
}

/* ------------------------------------------------------------------------ */
/*  Output */

static void
format_time (uint64_t ms, char *out, size_t size)
{
    if (ms == 0) {
        snprintf (out, size, "-");
        return;
    }
    time_t seconds = (time_t) (ms / 1000);
    struct tm tm;
    if (!gmtime_r (&seconds, &tm) || !strftime (out, size, "%Y-%m-%d %H:%M:%S UTC", &tm))
        snprintf (out, size, "%llu ms", (unsigned long long) ms);
}

static uint64_t
str_u64 (qms_str_t s)
{
    char text [32];
    if (!s.len || !qms_str_copy (s, text, sizeof text))
        return 0;
    return strtoull (text, NULL, 10);
}

/*  Pad a UTF-8 name to width code points. */
static void
print_name (FILE *out, qms_str_t name, int width)
{
    int chars = 0;
    for (uint32_t i = 0; i < name.len; i++)
        chars += ((uint8_t) name.ptr [i] & 0xC0) != 0x80;
    fprintf (out, "%.*s%*s", (int) name.len, name.ptr, chars < width ? width - chars : 0, "");
}

/*  The user row of an operation on one user, kept for the messages. */
typedef struct {
    bool seen;
    char id [256];
    char name [QMS_NAME_MAX_BYTES + 1];
    bool session;
    uint64_t waiting;
} user_t;

static user_t s_user;           /* one command per process */

static void
keep_user (const qms_rec_t *row)
{
    s_user.seen = true;
    qms_str_copy (row->s [QMS_ROW_ID], s_user.id, sizeof s_user.id);
    qms_str_copy (row->s [QMS_ROW_NAME], s_user.name, sizeof s_user.name);
    s_user.session = row->s [QMS_ROW_ACTIVE].len > 0;
    s_user.waiting = row->num;
}

static void
on_list_row (admin_t *self, const qms_rec_t *row)
{
    if (self->rows++ == 0)
        fprintf (self->out, "%-*s  %-36s  %-23s  %-23s  %s\n", ADMIN_NAME_WIDTH, "NAME", "ID",
                 "CREATED", "LAST ACTIVE", "WAITING");
    char created [40], active [40];
    format_time (row->time, created, sizeof created);
    format_time (str_u64 (row->s [QMS_ROW_ACTIVE]), active, sizeof active);
    print_name (self->out, row->s [QMS_ROW_NAME], ADMIN_NAME_WIDTH);
    fprintf (self->out, "  %-36.*s  %-23s  %-23s  %llu\n", (int) row->s [QMS_ROW_ID].len, row->s [QMS_ROW_ID].ptr,
             created, active, (unsigned long long) row->num);
}

static void
on_show_row (admin_t *self, const qms_rec_t *row)
{
    keep_user (row);
    char created [40], active [40];
    format_time (row->time, created, sizeof created);
    format_time (str_u64 (row->s [QMS_ROW_ACTIVE]), active, sizeof active);
    fprintf (self->out, "name:        %.*s\n", (int) row->s [QMS_ROW_NAME].len, row->s [QMS_ROW_NAME].ptr);
    fprintf (self->out, "id:          %.*s\n", (int) row->s [QMS_ROW_ID].len, row->s [QMS_ROW_ID].ptr);
    fprintf (self->out, "created:     %s\n", created);
    if (row->s [QMS_ROW_PUBKEY].len)
        fprintf (self->out, "public key:  %.*s\n", (int) row->s [QMS_ROW_PUBKEY].len, row->s [QMS_ROW_PUBKEY].ptr);
    else
        fprintf (self->out, "public key:  (none)\n");
    if (row->s [QMS_ROW_ACTIVE].len)
        fprintf (self->out, "session:     yes, last active %s\n", active);
    else
        fprintf (self->out, "session:     none\n");
    fprintf (self->out, "waiting:     %llu stored message%s\n", (unsigned long long) row->num,
             row->num == 1 ? "" : "s");
}

static void
on_sessions_row (admin_t *self, const qms_rec_t *row)
{
    if (!s_user.seen) {
        keep_user (row);            /* the user row comes first */
        return;
    }
    char created [40], active [40];
    format_time (row->time, created, sizeof created);
    format_time (row->num, active, sizeof active);
    if (self->rows++ == 0)
        fprintf (self->out, "%-23s  %-23s  %s\n", "CREATED", "LAST ACTIVE", "TOKEN HASH (SHA-256)");
    fprintf (self->out, "%-23s  %-23s  %.*s\n", created, active, (int) row->s [QMS_ROW_HASH].len, row->s [QMS_ROW_HASH].ptr);
}

static void
on_user_row (admin_t *self, const qms_rec_t *row)
{
    (void) self;
    keep_user (row);
}

static void
on_check_row (admin_t *self, const qms_rec_t *row)
{
    self->rows++;
    fprintf (self->out, "%.*s\n", (int) row->s [QMS_ROW_PROBLEM].len, row->s [QMS_ROW_PROBLEM].ptr);
}

/* ------------------------------------------------------------------------ */
/*  Reading a new password */

static struct termios s_saved_termios;
static int s_termios_fd = -1;

static void
restore_echo (int signo)
{
    if (s_termios_fd >= 0)
        tcsetattr (s_termios_fd, TCSAFLUSH, &s_saved_termios);
    _exit (128 + signo);
}

/*  One line from fd, without its end of line ("\n" or "\r\n"), at most
    size - 2 bytes.  The length, or -1 when the line is too long, -2 at end
    of input before any byte. */
static int
read_line (int fd, char *buf, size_t size)
{
    size_t len = 0;
    bool any = false;
    while (true) {
        char c;
        ssize_t n = read (fd, &c, 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        any = true;
        if (c == '\n')
            break;
        if (len + 1 >= size) {
            /*  Too long: read the rest of the line away, fail. */
            while (read (fd, &c, 1) == 1 && c != '\n')
                ;
            OPENSSL_cleanse (buf, size);
            return -1;
        }
        buf [len++] = c;
    }
    if (!any)
        return -2;
    if (len && buf [len - 1] == '\r')
        len--;
    if (len + 2 > size) {
        OPENSSL_cleanse (buf, size);
        return -1;
    }
    buf [len] = 0;
    return (int) len;
}

/*  Ask on a terminal with echo off; the terminal is restored even when a
    signal ends the command meanwhile. */
static int
read_hidden (int fd, FILE *err, const char *prompt, char *buf, size_t size)
{
    fprintf (err, "%s", prompt);
    fflush (err);
    struct termios quiet;
    if (tcgetattr (fd, &s_saved_termios))
        return read_line (fd, buf, size);
    quiet = s_saved_termios;
    quiet.c_lflag &= (tcflag_t) ~(ECHO | ECHONL);
    struct sigaction restore = { .sa_handler = restore_echo }, old [3];
    int signals [3] = { SIGINT, SIGTERM, SIGHUP };
    s_termios_fd = fd;
    for (int i = 0; i < 3; i++)
        sigaction (signals [i], &restore, &old [i]);
    tcsetattr (fd, TCSAFLUSH, &quiet);
    int len = read_line (fd, buf, size);
    tcsetattr (fd, TCSAFLUSH, &s_saved_termios);
    for (int i = 0; i < 3; i++)
        sigaction (signals [i], &old [i], NULL);
    s_termios_fd = -1;
    fprintf (err, "\n");
    return len;
}

/*  The new password into buf (QMS_PASSWORD_MAX + 2 bytes): its length, or
    -1 after saying why. */
static int
read_password (int fd, FILE *err, const char *name, char *buf, size_t size)
{
    int len;
    if (isatty (fd)) {
        char prompt [QMS_NAME_MAX_BYTES + 64], again [QMS_PASSWORD_MAX + 2];
        snprintf (prompt, sizeof prompt, "New password for %s: ", name);
        len = read_hidden (fd, err, prompt, buf, size);
        if (len > 0) {
            int len2 = read_hidden (fd, err, "Repeat it: ", again, sizeof again);
            bool same = len2 == len && memcmp (buf, again, (size_t) len) == 0;
            OPENSSL_cleanse (again, sizeof again);
            if (!same) {
                OPENSSL_cleanse (buf, size);
                fprintf (err, "qmessageserver: the passwords differ; nothing was changed\n");
                return -1;
            }
        }
    }
    else
        len = read_line (fd, buf, size);
    if (len == -1)
        fprintf (err, "qmessageserver: the password is longer than %d bytes\n", QMS_PASSWORD_MAX);
    else
    if (len == -2 || len == 0)
        fprintf (err, "qmessageserver: no password given (one line on standard input)\n");
    return len > 0 ? len : -1;
}

/* ------------------------------------------------------------------------ */
/*  Running the commands */

/*  Status of an operation on one user: 0 on OK, else a message and code. */
static int
user_status (admin_t *self, int rc, const done_t *done)
{
    if (rc) {
        fprintf (self->err, "qmessageserver: the store at %s stopped answering\n", self->store_at);
        return ADMIN_EXIT_UNREACHABLE;
    }
    if (done->status == QMS_ST_NO_USER) {
        fprintf (self->err, "qmessageserver: no user named '%s'\n", self->arg);
        return ADMIN_EXIT_FAILED;
    }
    if (done->status != QMS_ST_OK) {
        fprintf (self->err, "qmessageserver: the store refused: %s\n", done->detail);
        return ADMIN_EXIT_FAILED;
    }
    return ADMIN_EXIT_OK;
}

/*  Hash the new password before anything changes; the PHC into phc. */
static int
new_password_phc (admin_t *self, char *phc, size_t phc_size)
{
    char password [QMS_PASSWORD_MAX + 2];
    int len = read_password (self->in_fd, self->err, self->arg, password, sizeof password);
    if (len < 0)
        return ADMIN_EXIT_USAGE;
    int rc = qms_password_hash (password, (size_t) len, self->cfg.argon2_memory_kib,
                                self->cfg.argon2_iterations, phc, phc_size, LOG);
    OPENSSL_cleanse (password, sizeof password);
    if (rc) {
        fprintf (self->err, "qmessageserver: cannot hash the password (Argon2id m=%u t=%u)\n",
                 (unsigned) self->cfg.argon2_memory_kib, (unsigned) self->cfg.argon2_iterations);
        return ADMIN_EXIT_FAILED;
    }
    return ADMIN_EXIT_OK;
}

/*  delete, logout, reset-password: in the store, then at the router. */
static int
run_user_write (admin_t *self, qms_rec_t *ask)
{
    char phc [QMS_PHC_MAX] = "";
    if (self->cmd->kind == CMD_PASSWORD) {
        /*  Fail on an unknown name before asking for a password. */
        qms_rec_t show = { .type = QMS_ST_ADMIN, .num = QMS_ADMIN_USER_SHOW,
                           .s = { [QMS_ADMIN_ARG_KEY] = ask->s [QMS_ADMIN_ARG_KEY] } };
        done_t done;
        int rc = user_status (self, admin_call (self, self->store, &show, ADMIN_REPLY_MS, NULL, &done),
                              &done);
        if (rc == 0)
            rc = new_password_phc (self, phc, sizeof phc);
        if (rc)
            return rc;
        ask->s [QMS_ADMIN_ARG_PHC] = qms_str (phc);
    }
    done_t done;
    int rc = user_status (self, admin_call (self, self->store, ask, ADMIN_REPLY_MS, on_user_row, &done),
                          &done);
    if (rc)
        return rc;
    bool closed = false;
    int kick = admin_kick (self, s_user.id, s_user.name, &closed);
    const char *connection = closed ? "; its connection was closed" : "";
    if (self->cmd->kind == CMD_DELETE)
        fprintf (self->out, "Deleted user %s (id %s)%s%s%s.\n", s_user.name, s_user.id,
                 s_user.session ? " and its session" : "",
                 s_user.waiting ? " and the messages waiting for it" : "", connection);
    else
    if (self->cmd->kind == CMD_LOGOUT) {
        if (s_user.session || closed)
            fprintf (self->out, "Ended the session of %s%s.\n", s_user.name, connection);
        else
            fprintf (self->out, "%s had no session.\n", s_user.name);
    }
    else
        fprintf (self->out, "Changed the password of %s%s%s.\n", s_user.name,
                 s_user.session || closed ? "; its session ended" : "", connection);
    return kick;
}

static int
run_command (admin_t *self)
{
    qms_rec_t ask = { .type = QMS_ST_ADMIN, .num = (uint64_t) self->cmd->op };
    char key [QMS_NAME_MAX_BYTES + 1] = "";
    if (self->cmd->arg && streq (self->cmd->arg, "NAME")) {
        if (qms_name_key (self->arg, strlen (self->arg), key)) {
            fprintf (self->err, "qmessageserver: no user named '%s'\n", self->arg);
            return ADMIN_EXIT_FAILED;
        }
        ask.s [QMS_ADMIN_ARG_KEY] = qms_str (key);
    }
    if (self->cmd->kind == CMD_BACKUP)
        ask.s [QMS_ADMIN_ARG_FILE] = qms_str (self->arg);
    done_t done;
    int rc;
    switch (self->cmd->kind) {
        case CMD_LIST:
            rc = admin_call (self, self->store, &ask, ADMIN_REPLY_MS, on_list_row, &done);
            if (rc == 0 && done.status == QMS_ST_OK)
                fprintf (self->out, "%zu user%s\n", self->rows, self->rows == 1 ? "" : "s");
            return user_status (self, rc, &done);
        case CMD_SHOW:
            return user_status (self, admin_call (self, self->store, &ask, ADMIN_REPLY_MS,
                                                  on_show_row, &done), &done);
        case CMD_SESSIONS:
            rc = user_status (self, admin_call (self, self->store, &ask, ADMIN_REPLY_MS,
                                                on_sessions_row, &done), &done);
            if (rc == 0 && self->rows == 0)
                fprintf (self->out, "%s has no session.\n", s_user.name);
            return rc;
        case CMD_DELETE:
        case CMD_LOGOUT:
        case CMD_PASSWORD:
            return run_user_write (self, &ask);
        case CMD_BACKUP:
            rc = admin_call (self, self->store, &ask, ADMIN_LONG_MS, NULL, &done);
            if (rc == 0 && done.status == QMS_ST_OK) {
                fprintf (self->out, "Backup written to %s (%s).\n", self->arg, done.detail);
                return ADMIN_EXIT_OK;
            }
            if (rc == 0)
                fprintf (self->err, "qmessageserver: no backup: %s\n", done.detail);
            return rc ? user_status (self, rc, &done) : ADMIN_EXIT_FAILED;
        case CMD_CHECK:
            rc = admin_call (self, self->store, &ask, ADMIN_LONG_MS, on_check_row, &done);
            if (rc)
                return user_status (self, rc, &done);
            if (done.status == QMS_ST_OK) {
                fprintf (self->out, "ok\n");
                return ADMIN_EXIT_OK;
            }
            fprintf (self->err, "qmessageserver: the check failed: %s\n", done.detail);
            return ADMIN_EXIT_FAILED;
    }
    return ADMIN_EXIT_USAGE;
}

/* ------------------------------------------------------------------------ */
/*  The command line */

static bool
is_help (const char *word)
{
    return streq (word, "-h") || streq (word, "--h") || streq (word, "-help") || streq (word, "--help")
        || streq (word, "help");
}

/*  Find the command and its positional argument; the options that follow
    are left in *argc/argv (argv [0] kept).  0, or an exit code. */
static int
parse_command (admin_t *self, int *argc, char **argv)
{
    for (int i = 1; i < *argc && !streq (argv [i], "--"); i++)
        if (is_help (argv [i])) {
            admin_usage (self->out);
            return -1;
        }
    const char *group = argv [1], *verb = *argc > 2 ? argv [2] : "";
    for (size_t i = 0; i < COMMAND_COUNT && !self->cmd; i++)
        if (streq (s_commands [i].group, group) && streq (s_commands [i].verb, verb))
            self->cmd = &s_commands [i];
    if (!self->cmd) {
        if (*verb)
            fprintf (self->err, "qmessageserver: unknown command '%s %s' (see qmessageserver %s --help)\n",
                     group, verb, group);
        else
            fprintf (self->err, "qmessageserver: %s needs a command (see qmessageserver %s --help)\n",
                     group, group);
        return ADMIN_EXIT_USAGE;
    }
    int used = 2;
    if (self->cmd->arg) {
        int at = 3;
        if (at < *argc && streq (argv [at], "--"))
            at++;               /* a name that starts with '-' */
        if (at >= *argc || (at == 3 && argv [at][0] == '-') || !argv [at][0]) {
            fprintf (self->err, "qmessageserver: %s %s needs %s (before the options)\n", group, verb,
                     self->cmd->arg);
            return ADMIN_EXIT_USAGE;
        }
        if (strlen (argv [at]) >= sizeof self->arg) {
            fprintf (self->err, "qmessageserver: %s is too long\n", self->cmd->arg);
            return ADMIN_EXIT_USAGE;
        }
        snprintf (self->arg, sizeof self->arg, "%s", argv [at]);
        used = at;
    }
    memmove (argv + 1, argv + 1 + used, (size_t) (*argc - used) * sizeof *argv);
    *argc -= used;
    return 0;
}

/*  The backup's path as the store must see it: absolute. */
static int
absolute_file (admin_t *self)
{
    if (self->arg [0] == '/')
        return 0;
    char cwd [PATH_MAX], joined [PATH_MAX];
    if (!getcwd (cwd, sizeof cwd)
    ||  snprintf (joined, sizeof joined, "%s/%s", cwd, self->arg) >= (int) sizeof joined) {
        fprintf (self->err, "qmessageserver: cannot make '%s' an absolute path\n", self->arg);
        return ADMIN_EXIT_USAGE;
    }
    memcpy (self->arg, joined, sizeof self->arg);
    return 0;
}

/*  admin_main with its streams given, for the selftest. */
static int
admin_run (int argc, char **argv, FILE *out, FILE *err, int in_fd)
{
    admin_t self;
    memset (&self, 0, sizeof self);
    memset (&s_user, 0, sizeof s_user);
    self.out = out;
    self.err = err;
    self.in_fd = in_fd;
    char **args = (char **) calloc ((size_t) argc + 1, sizeof *args);
    if (!args)
        return ADMIN_EXIT_FAILED;
    memcpy (args, argv, (size_t) argc * sizeof *args);
    int rc = parse_command (&self, &argc, args);
    char why [1024];
    if (rc == 0) {
        /*  The server's settings as the server reads them (--config, the
            environment, the flags): the same data directory and endpoints. */
        qms_config_defaults (&self.cfg);
        int loaded = qms_config_load (&self.cfg, argc, args, why, sizeof why, out);
        if (loaded < 0)
            fprintf (err, "qmessageserver: %s\n", why);
        rc = loaded < 0 ? ADMIN_EXIT_USAGE : loaded > 0 ? -1 : 0;
    }
    free (args);
    if (rc == 0 && self.cmd->kind == CMD_BACKUP)
        rc = absolute_file (&self);
    if (rc == 0) {
        int level = self.cfg.log_level;
        qms_log_set_level (level >= QMS_LOG_DEBUG ? level : level < QMS_LOG_WARN ? level : QMS_LOG_WARN);
        /*  A running server on tcp:// with --curve-keys lets in only its
            deployment's keys: the command uses the same. */
        if (qms_curve_init (self.cfg.curve_keys, why, sizeof why)) {
            fprintf (err, "qmessageserver: %s\n", why);
            rc = ADMIN_EXIT_USAGE;
        }
        if (rc == 0)
            rc = admin_connect (&self);
        if (rc == 0)
            rc = run_command (&self);
        admin_disconnect (&self);
        qms_curve_shutdown ();
    }
    qms_config_free (&self.cfg);
    return rc < 0 ? ADMIN_EXIT_OK : rc;
}

int
admin_main (int argc, char **argv)
{
    /*  The server blocks its stop signals for its threads; a command
        should stop on Ctrl-C like any other. */
    sigset_t stop;
    sigemptyset (&stop);
    sigaddset (&stop, SIGINT);
    sigaddset (&stop, SIGTERM);
    pthread_sigmask (SIG_UNBLOCK, &stop, NULL);
    return admin_run (argc, argv, stdout, stderr, STDIN_FILENO);
}

/* ------------------------------------------------------------------------ */
/*  Selftest */

/*  Run a command line (words separated by spaces) with input as stdin;
    its output lands in out (size bytes), its errors nowhere (on stderr
    with ADMIN_TEST_STDERR set, to debug a failure).  Returns the exit
    code. */
static int
t_run (const char *line, const char *input, char *out, size_t size)
{
    char copy [2048], *argv [32];
    int argc = 0;
    snprintf (copy, sizeof copy, "qmessageserver %s", line);
    for (char *word = strtok (copy, " "); word && argc < 31; word = strtok (NULL, " "))
        argv [argc++] = word;
    argv [argc] = NULL;
    int pipe_fds [2];
    assert (pipe (pipe_fds) == 0);
    if (input)
        assert (write (pipe_fds [1], input, strlen (input)) == (ssize_t) strlen (input));
    close (pipe_fds [1]);
    FILE *o = fmemopen (out, size, "w");
    FILE *e = getenv ("ADMIN_TEST_STDERR") ? stderr : fopen ("/dev/null", "w");
    assert (o && e);
    setvbuf (o, NULL, _IONBF, 0);
    memset (out, 0, size);
    int rc = admin_run (argc, argv, o, e, pipe_fds [0]);
    fclose (o);
    if (e != stderr)
        fclose (e);
    close (pipe_fds [0]);
    return rc;
}

static void
t_passwords (void)
{
    char buf [QMS_PASSWORD_MAX + 2];
    int fds [2];
    FILE *null = fopen ("/dev/null", "w");
    assert (null);
    const char *cases [] = { "s3cret\n", "with space\r\nnext line\n", "no newline", "\n", "" };
    const int lengths [] = { 6, 10, 10, -1, -1 };
    for (int i = 0; i < 5; i++) {
        assert (pipe (fds) == 0);
        assert (write (fds [1], cases [i], strlen (cases [i])) == (ssize_t) strlen (cases [i]));
        close (fds [1]);
        int len = read_password (fds [0], null, "x", buf, sizeof buf);
        assert (len == lengths [i]);
        if (len > 0)
            assert (strncmp (buf, cases [i], (size_t) len) == 0 && buf [len] == 0);
        close (fds [0]);
    }
    /*  The limit is the server's: QMS_PASSWORD_MAX bytes, not one more. */
    static char longest [QMS_PASSWORD_MAX + 3];
    for (int extra = 0; extra < 2; extra++) {
        memset (longest, 'p', sizeof longest);
        longest [QMS_PASSWORD_MAX + extra] = '\n';
        assert (pipe (fds) == 0);
        assert (write (fds [1], longest, QMS_PASSWORD_MAX + extra + 1) == QMS_PASSWORD_MAX + extra + 1);
        close (fds [1]);
        assert (read_password (fds [0], null, "x", buf, sizeof buf) == (extra ? -1 : QMS_PASSWORD_MAX));
        close (fds [0]);
    }
    fclose (null);
}

/*  The commands end to end, on a stopped server's data directory: the
    store runs in this process. */
static void
t_commands (const char *dir)
{
    char out [8192], line [1024];
    /*  Usage errors, help. */
    assert (t_run ("users", NULL, out, sizeof out) == ADMIN_EXIT_USAGE);
    assert (t_run ("users frobnicate", NULL, out, sizeof out) == ADMIN_EXIT_USAGE);
    assert (t_run ("users show", NULL, out, sizeof out) == ADMIN_EXIT_USAGE);
    assert (t_run ("users show --data-dir /tmp", NULL, out, sizeof out) == ADMIN_EXIT_USAGE);
    assert (t_run ("db backup", NULL, out, sizeof out) == ADMIN_EXIT_USAGE);
    assert (t_run ("users list --no-such-option", NULL, out, sizeof out) == ADMIN_EXIT_USAGE);
    assert (t_run ("users list --help", NULL, out, sizeof out) == 0);
    assert (strstr (out, "reset-password") && strstr (out, "Exit codes"));

    /*  No database in the directory: none is made. */
    snprintf (line, sizeof line, "users list --data-dir %s", dir);
    assert (t_run (line, NULL, out, sizeof out) == ADMIN_EXIT_FAILED);
    char db [600];
    snprintf (db, sizeof db, "%s/users.db", dir);
    struct stat info;
    assert (stat (db, &info) == -1);

    /*  A database with one user, made through the store as auth would. */
    qms_config_t cfg;
    qms_config_defaults (&cfg);
    snprintf (cfg.data_dir, sizeof cfg.data_dir, "%s", dir);
    snprintf (cfg.store_endpoint, sizeof cfg.store_endpoint, "inproc://admin-test-%d", (int) getpid ());
    zactor_t *store = qms_actor_start (store_actor, &cfg, "store");
    assert (store);
    zsock_t *dealer = admin_dealer (cfg.store_endpoint);
    assert (dealer);
    qms_rec_t create = { .type = QMS_ST_USER_CREATE, .req = 1,
                         .s = { [QMS_CREATE_ID] = qms_str ("id-zoe"), [QMS_CREATE_NAME] = qms_str ("Zoë"),
                                [QMS_CREATE_KEY] = qms_str ("zoë"), [QMS_CREATE_PHC] = qms_str ("phc") } };
    assert (qms_rec_send (zsock_resolve (dealer), NULL, 0, &create) == 0);
    zmq_pollitem_t item = { zsock_resolve (dealer), 0, ZMQ_POLLIN, 0 };
    assert (zmq_poll (&item, 1, 5000) == 1);
    zsock_destroy (&dealer);

    /*  While that store runs, a command reaches it on its admin socket. */
    snprintf (line, sizeof line, "users show ZOË --data-dir %s", dir);
    assert (t_run (line, NULL, out, sizeof out) == 0);
    assert (strstr (out, "name:        Zoë") && strstr (out, "id:          id-zoe"));
    zactor_destroy (&store);

    /*  Stopped: the store starts here. */
    snprintf (line, sizeof line, "users list --data-dir %s", dir);
    assert (t_run (line, NULL, out, sizeof out) == 0);
    assert (strstr (out, "NAME") && strstr (out, "id-zoe") && strstr (out, "1 user\n"));
    snprintf (line, sizeof line, "users show nobody --data-dir=%s", dir);
    assert (t_run (line, NULL, out, sizeof out) == ADMIN_EXIT_FAILED);
    snprintf (line, sizeof line, "users sessions zoë --data-dir %s", dir);
    assert (t_run (line, NULL, out, sizeof out) == 0 && strstr (out, "has no session"));
    snprintf (line, sizeof line, "users reset-password zoë --data-dir %s --argon2-memory 64 "
              "--argon2-iterations 1", dir);
    assert (t_run (line, "", out, sizeof out) == ADMIN_EXIT_USAGE);
    assert (t_run (line, "n3w pass\n", out, sizeof out) == 0 && strstr (out, "Changed the password"));
    snprintf (line, sizeof line, "users logout zoë --data-dir %s", dir);
    assert (t_run (line, NULL, out, sizeof out) == 0 && strstr (out, "had no session"));
    snprintf (line, sizeof line, "db check --data-dir %s", dir);
    assert (t_run (line, NULL, out, sizeof out) == 0 && streq (out, "ok\n"));
    snprintf (line, sizeof line, "db backup %s/copy.db --data-dir %s", dir, dir);
    assert (t_run (line, NULL, out, sizeof out) == 0 && strstr (out, "Backup written"));
    assert (t_run (line, NULL, out, sizeof out) == ADMIN_EXIT_FAILED);      /* exists */
    snprintf (line, sizeof line, "users delete zoë --data-dir %s", dir);
    assert (t_run (line, NULL, out, sizeof out) == 0 && strstr (out, "Deleted user Zoë"));
    assert (t_run (line, NULL, out, sizeof out) == ADMIN_EXIT_FAILED);
    snprintf (line, sizeof line, "users list --data-dir %s", dir);
    assert (t_run (line, NULL, out, sizeof out) == 0 && streq (out, "0 users\n"));

    /*  An explicit store endpoint that nobody serves: unreachable, fast. */
    snprintf (line, sizeof line, "users list --data-dir %s --store-endpoint ipc://%s/nobody", dir, dir);
    assert (t_run (line, NULL, out, sizeof out) == ADMIN_EXIT_UNREACHABLE);

    qms_config_free (&cfg);
    const char *files [] = { "users.db", "copy.db", ".qms-store.lock", ".qms-admin-store", NULL };
    for (int i = 0; files [i]; i++) {
        snprintf (db, sizeof db, "%s/%s", dir, files [i]);
        unlink (db);
    }
}

void
admin_test (bool verbose)
{
    if (verbose)
        printf (" * admin: ");
    char dir [] = "/tmp/qms-admin-test-XXXXXX";
    assert (mkdtemp (dir));
    int level = qms_log_get_level ();
    t_passwords ();
    t_commands (dir);
    qms_log_set_level (level);
    assert (rmdir (dir) == 0);
    if (verbose)
        printf ("OK\n");
}
