/*  auth.c - the auth actor: register, login, tokens (see auth.h and
    docs/ARCHITECTURE.md, "Register / Login").

    The actor only routes: a request becomes a login_t that moves through
    stages (look the user up in the store, hash or verify on a worker,
    create the user, start the session) and ends in exactly one AUTH_OK or
    AUTH_FAIL to the gateway that asked.  Requests to the store carry
    increasing req ids; a login waiting on the store sits in a list ordered
    by deadline, so timeouts cost O(expired).  Everything written during one
    pass of the loop leaves as one batch per peer.
*/
#include "auth.h"
#include "auth_throttle.h"
#include "auth_worker.h"
#include "qms_actor.h"
#include "qms_config.h"
#include "qms_log.h"
#include "qms_curve.h"
#include "qms_inbox.h"
#include "qms_metrics.h"
#include "qms_msg.h"
#include "qms_names.h"
#include "qms_util.h"

#include <argon2.h>
#include <assert.h>
#include <errno.h>
#include <stdatomic.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AUTH_ACTOR          "auth"
#define QUEUE_PER_WORKER    64          /* jobs pending per worker */
#define MAX_WORKERS         64
#define MAX_PENDING         10000       /* logins in flight, all stages */
#define THROTTLE_ENTRIES    100000      /* per table */
#define ADDRESS_MAX         255
#define RECV_PER_PASS       256         /* messages per socket per pass */

#define TEXT_FIELDS         "Please fill all fields."
#define TEXT_LONG_PASSWORD  "Password is too long (at most 1024 bytes)."
#define TEXT_INVALID        "User or password is invalid."
#define TEXT_EXISTS         "Username already exists."
#define TEXT_SIMILAR        "Username is too similar to an existing one."
#define TEXT_BUSY           "Server is busy. Try again in a moment."
#define TEXT_UNAVAILABLE    "Service temporarily unavailable."
#define TEXT_THROTTLED      "Too many failed login attempts. Try again in %d seconds."

/*  How long the store may take to answer; tests shorten it before they
    start an actor (the actor copies it during set-up). */
static uint64_t s_store_timeout_ms = 5000;

typedef enum {
    STAGE_GET,              /* ST_USER_GET sent */
    STAGE_WORK,             /* on a worker: hash or verify */
    STAGE_CREATE,           /* ST_USER_CREATE sent */
    STAGE_SESSION           /* ST_SESSION_START sent */
} stage_t;

typedef struct {
    uint64_t req;           /* key in pending: store req id or job id */
    stage_t stage;
    bool reg;               /* register, else login */
    bool unknown;           /* login for a name the store does not know */
    bool counted;           /* began in the throttle tables */
    uint64_t conn;
    uint8_t gw [255];       /* the gateway's routing identity */
    size_t gw_len;
    char name [QMS_NAME_MAX_BYTES + 1];     /* as typed (register: NFKC), then as registered */
    char key [QMS_NAME_MAX_BYTES + 1];
    char nfkc_key [QMS_NAME_MAX_BYTES + 1]; /* login: the key of the NFKC form when it differs,
                                               looked up if the name as typed is unknown */
    char throttle_key [QMS_NAME_MAX_BYTES + 1];  /* the name as counted in the throttle */
    char address [ADDRESS_MAX + 1];
    char user_id [QMS_UUID_CHARS + 1];
    char *pubkey;
    size_t pubkey_len;
    char *password;         /* wiped and freed once handed to a worker */
    size_t password_len;
    char phc [AUTH_PHC_MAX];
    char token [QMS_TOKEN_CHARS + 1];
    int worker;
    uint64_t deadline;      /* while waiting on the store */
    void *handle;           /* in waiting, or NULL */
} login_t;

/*  The batch being built for one gateway during a pass. */
typedef struct {
    uint8_t id [255];
    size_t id_len;
    qms_buf_t buf;
} gw_out_t;

typedef struct {
    zsock_t *pipe;
    zsock_t *gateways;      /* ROUTER */
    zsock_t *store;         /* DEALER */
    int worker_count;
    zactor_t *workers [MAX_WORKERS];
    zsock_t *jobs [MAX_WORKERS];            /* PAIR, one per worker */
    int queued [MAX_WORKERS];               /* jobs sent, results not yet read */
    uint32_t memory_kib;
    uint32_t iterations;
    uint64_t store_timeout_ms;
    char dummy_phc [AUTH_PHC_MAX];          /* verified for unknown names */
    auth_throttle_t *names;
    auth_throttle_t *addresses;
    zhashx_t *pending;      /* req as decimal -> login_t */
    zlistx_t *waiting;      /* logins waiting on the store, by deadline */
    uint64_t next_req;
    qms_buf_t store_out;
    gw_out_t *outs;
    size_t out_count;
    size_t out_cap;
    uint64_t nonce;         /* this instance, for gateways' liveness checks */
    struct {                /* outcomes, for /metrics: by operation and reason */
        char what [48];     /* "login/ok", "register/exists", ... */
        uint64_t count;
    } outcomes [32];
    int outcome_count;
} auth_t;

/* ------------------------------------------------------------------------ */
/*  Logs: names come from clients, so they are quoted, cut and defused.     */

static void
log_name (qms_str_t name, char *out, size_t size)
{
    size_t o = 0;
    uint32_t i = 0;
    for (; i < name.len && o + 2 < size; i++) {
        char c = name.ptr [i];
        out [o++] = c == '"' || c == '\\' ? '?' : c;
    }
    if (i < name.len)
        out [o++] = '~';    /* cut */
    out [o] = 0;
}

static void
count_outcome (auth_t *self, bool reg, const char *reason)
{
    char what [48];
    snprintf (what, sizeof what, "%s/%s", reg ? "register" : "login", reason ? reason : "ok");
    for (int i = 0; i < self->outcome_count; i++)
        if (streq (self->outcomes [i].what, what)) {
            self->outcomes [i].count++;
            return;
        }
    if (self->outcome_count < 32) {
        snprintf (self->outcomes [self->outcome_count].what, sizeof self->outcomes [0].what, "%s", what);
        self->outcomes [self->outcome_count++].count = 1;
    }
}

static qms_buf_t *gw_out (auth_t *self, const uint8_t *id, size_t id_len);

/*  QMS_STATS: our figures for a gateway's /metrics. */
static void
answer_stats (auth_t *self, const uint8_t *gw, size_t gw_len, uint64_t req)
{
    qms_buf_t text;
    qms_buf_init (&text);
    qms_metrics_head (&text, "qms_auth_outcomes_total", "counter", "Logins and registrations by result and reason.");
    for (int i = 0; i < self->outcome_count; i++) {
        char labels [128];
        const char *slash = strchr (self->outcomes [i].what, '/');
        snprintf (labels, sizeof labels, "actor=\"auth\",op=\"%.*s\",result=\"%s\"",
                  (int) (slash - self->outcomes [i].what), self->outcomes [i].what, slash + 1);
        qms_metrics_value (&text, "qms_auth_outcomes_total", labels, (double) self->outcomes [i].count);
    }
    int queued = 0;
    for (int i = 0; i < self->worker_count; i++)
        queued += self->queued [i];
    qms_metrics_head (&text, "qms_auth_pending", "gauge", "Work waiting in auth.");
    qms_metrics_value (&text, "qms_auth_pending", "actor=\"auth\",of=\"hashing_jobs\"", queued);
    qms_metrics_value (&text, "qms_auth_pending", "actor=\"auth\",of=\"logins_in_flight\"",
                       (double) zhashx_size (self->pending));
    qms_rec_t stats = { .type = QMS_STATS, .req = req };
    stats.s [QMS_STATS_TEXT] = qms_strn ((const char *) text.data, text.len);
    qms_buf_t *buf = gw_out (self, gw, gw_len);
    if (buf)
        qms_rec_encode (buf, &stats);
    qms_buf_free (&text);
}

static void
log_outcome (bool reg, qms_str_t name, const char *reason, const char *user_id)
{
    char shown [100];
    log_name (name, shown, sizeof shown);
    if (reason)
        qms_info (AUTH_ACTOR, "event=%s result=fail reason=%s name=\"%s\"",
                  reg ? "register" : "login", reason, shown);
    else
        qms_info (AUTH_ACTOR, "event=%s result=ok name=\"%s\" user=%s",
                  reg ? "register" : "login", shown, user_id);
}

/* ------------------------------------------------------------------------ */
/*  Output batches.                                                          */

static qms_buf_t *
gw_out (auth_t *self, const uint8_t *id, size_t id_len)
{
    for (size_t i = 0; i < self->out_count; i++)
        if (self->outs [i].id_len == id_len && memcmp (self->outs [i].id, id, id_len) == 0)
            return &self->outs [i].buf;
    if (self->out_count == self->out_cap) {
        size_t cap = self->out_cap ? self->out_cap * 2 : 4;
        gw_out_t *outs = (gw_out_t *) realloc (self->outs, cap * sizeof *outs);
        if (!outs)
            return NULL;
        for (size_t i = self->out_cap; i < cap; i++)
            qms_buf_init (&outs [i].buf);
        self->outs = outs;
        self->out_cap = cap;
    }
    gw_out_t *out = &self->outs [self->out_count++];
    memcpy (out->id, id, id_len);
    out->id_len = id_len;
    qms_buf_reset (&out->buf);
    return &out->buf;
}

static void
answer_fail (auth_t *self, const uint8_t *gw, size_t gw_len, uint64_t conn, const char *text)
{
    qms_rec_t rec = { .type = QMS_AUTH_FAIL, .conn = conn };
    rec.s [QMS_AUTH_FAIL_TEXT] = qms_str (text);
    qms_buf_t *buf = gw_out (self, gw, gw_len);
    if (!buf || qms_rec_encode (buf, &rec))
        qms_error (AUTH_ACTOR, "event=answer_lost conn=%" PRIu64 " reason=\"out of memory\"", conn);
}

static void
answer_ok (auth_t *self, const login_t *login)
{
    qms_rec_t rec = { .type = QMS_AUTH_OK, .conn = login->conn };
    rec.s [QMS_AUTH_OK_ID] = qms_str (login->user_id);
    rec.s [QMS_AUTH_OK_NAME] = qms_str (login->name);
    rec.s [QMS_AUTH_OK_TOKEN] = qms_str (login->token);
    rec.s [QMS_AUTH_OK_PUBKEY] = qms_strn (login->pubkey, login->pubkey_len);
    qms_buf_t *buf = gw_out (self, login->gw, login->gw_len);
    if (!buf || qms_rec_encode (buf, &rec))
        qms_error (AUTH_ACTOR, "event=answer_lost conn=%" PRIu64 " reason=\"out of memory\"",
                   login->conn);
}

static void
flush (auth_t *self)
{
    if (self->store_out.len) {
        if (qms_batch_send (zsock_resolve (self->store), NULL, 0, &self->store_out))
            qms_warn (AUTH_ACTOR, "event=store_send_failed reason=\"%s\"", zmq_strerror (errno));
        qms_buf_reset (&self->store_out);
    }
    for (size_t i = 0; i < self->out_count; i++) {
        gw_out_t *out = &self->outs [i];
        if (qms_batch_send (zsock_resolve (self->gateways), out->id, out->id_len, &out->buf))
            qms_warn (AUTH_ACTOR, "event=gateway_send_failed reason=\"%s\"", zmq_strerror (errno));
        /*  The batch held raw tokens. */
        if (out->buf.len)
            OPENSSL_cleanse (out->buf.data, out->buf.len);
        qms_buf_reset (&out->buf);
    }
    self->out_count = 0;
}

/* ------------------------------------------------------------------------ */
/*  Logins in flight.                                                        */

static void
req_key (uint64_t req, char *key)
{
    snprintf (key, 21, "%" PRIu64, req);
}

static void
login_wipe_password (login_t *login)
{
    if (login->password) {
        OPENSSL_cleanse (login->password, login->password_len);
        free (login->password);
        login->password = NULL;
        login->password_len = 0;
    }
}

static void
login_destroy (login_t **login_p)
{
    login_t *login = *login_p;
    if (!login)
        return;
    login_wipe_password (login);
    free (login->pubkey);
    OPENSSL_cleanse (login, sizeof *login);
    free (login);
    *login_p = NULL;
}

/*  Give the login a new req id; with store_wait it also gets a deadline. */
static int
login_pend (auth_t *self, login_t *login, bool store_wait)
{
    char key [21];
    login->req = ++self->next_req;
    req_key (login->req, key);
    if (zhashx_insert (self->pending, key, login))
        return -1;
    if (store_wait) {
        login->deadline = qms_mono_ms () + self->store_timeout_ms;
        login->handle = zlistx_add_end (self->waiting, login);
        if (!login->handle) {
            zhashx_delete (self->pending, key);
            return -1;
        }
    }
    return 0;
}

static void
login_unpend (auth_t *self, login_t *login)
{
    char key [21];
    req_key (login->req, key);
    zhashx_delete (self->pending, key);
    if (login->handle) {
        zlistx_delete (self->waiting, login->handle);
        login->handle = NULL;
    }
}

/*  The end of every login: one answer, the throttle, the log line. */
static void
login_finish (auth_t *self, login_t *login, const char *reason, const char *text)
{
    if (text)
        answer_fail (self, login->gw, login->gw_len, login->conn, text);
    else
        answer_ok (self, login);
    if (login->counted) {
        uint64_t now = qms_mono_ms ();
        bool failed = reason && streq (reason, "invalid");
        auth_throttle_end (self->names, login->throttle_key, failed, now);
        if (failed)
            auth_throttle_fail (self->addresses, login->address, now);
        if (!reason)
            auth_throttle_clear (self->names, login->key);
    }
    count_outcome (self, login->reg, reason);
    log_outcome (login->reg, qms_str (login->name), reason, login->user_id);
    login_unpend (self, login);
    login_destroy (&login);
}

/*  Append a record for the store; the login waits for its answer. */
static void
store_request (auth_t *self, login_t *login, qms_rec_t *rec, stage_t stage)
{
    login->stage = stage;
    if (login_pend (self, login, true)) {
        login_finish (self, login, "no_memory", TEXT_UNAVAILABLE);
        return;
    }
    rec->req = login->req;
    if (qms_rec_encode (&self->store_out, rec))
        login_finish (self, login, "no_memory", TEXT_UNAVAILABLE);
}

static void
request_user (auth_t *self, login_t *login)
{
    qms_rec_t rec = { .type = QMS_ST_USER_GET };
    rec.s [QMS_FIND_KEY] = qms_str (login->key);
    store_request (self, login, &rec, STAGE_GET);
}

static void
request_create (auth_t *self, login_t *login)
{
    if (qms_uuid_new (login->user_id)) {
        login_finish (self, login, "no_random", TEXT_UNAVAILABLE);
        return;
    }
    qms_rec_t rec = { .type = QMS_ST_USER_CREATE };
    rec.s [QMS_CREATE_ID] = qms_str (login->user_id);
    rec.s [QMS_CREATE_NAME] = qms_str (login->name);
    rec.s [QMS_CREATE_KEY] = qms_str (login->key);
    rec.s [QMS_CREATE_PHC] = qms_str (login->phc);
    store_request (self, login, &rec, STAGE_CREATE);
}

/*  A new token; only its hash goes to the store. */
static void
request_session (auth_t *self, login_t *login)
{
    if (qms_token_new (login->token)) {
        login_finish (self, login, "no_random", TEXT_UNAVAILABLE);
        return;
    }
    char hash [QMS_HASH_HEX + 1];
    qms_sha256_hex (login->token, QMS_TOKEN_CHARS, hash);
    qms_rec_t rec = { .type = QMS_ST_SESSION_START, .time = qms_now_ms () };
    rec.s [QMS_START_ID] = qms_str (login->user_id);
    rec.s [QMS_START_HASH] = qms_str (hash);
    rec.s [QMS_START_PUBKEY] = qms_strn (login->pubkey, login->pubkey_len);
    store_request (self, login, &rec, STAGE_SESSION);
}

/*  A stronger hash for the store; nobody waits for its answer (a late
    ST_RESULT for an unknown req is dropped). */
static void
request_rehash (auth_t *self, const login_t *login, const char *phc)
{
    qms_rec_t rec = { .type = QMS_ST_USER_REHASH, .req = ++self->next_req };
    rec.s [QMS_REHASH_ID] = qms_str (login->user_id);
    rec.s [QMS_REHASH_PHC] = qms_str (phc);
    if (qms_rec_encode (&self->store_out, &rec) == 0)
        qms_info (AUTH_ACTOR, "event=rehash user=%s", login->user_id);
}

/* ------------------------------------------------------------------------ */
/*  Workers.                                                                 */

static int
pick_worker (auth_t *self)
{
    int best = 0;
    for (int i = 1; i < self->worker_count; i++)
        if (self->queued [i] < self->queued [best])
            best = i;
    return self->queued [best] < QUEUE_PER_WORKER ? best : -1;
}

/*  Hand the login's password to a worker; the login keeps no copy. */
static void
dispatch (auth_t *self, login_t *login, int kind, const char *phc, bool rehash)
{
    int worker = pick_worker (self);
    if (worker < 0) {
        login_finish (self, login, "busy", TEXT_BUSY);
        return;
    }
    login->stage = STAGE_WORK;
    if (login_pend (self, login, false)) {
        login_finish (self, login, "no_memory", TEXT_UNAVAILABLE);
        return;
    }
    auth_job_t job = {
        .id = login->req, .kind = kind,
        .memory_kib = self->memory_kib, .iterations = self->iterations,
        .rehash = rehash,
        .password = qms_strn (login->password, login->password_len),
        .phc = qms_str (phc)
    };
    int rc = auth_job_send (zsock_resolve (self->jobs [worker]), &job);
    login_wipe_password (login);
    if (rc) {
        login_finish (self, login, "worker_send", TEXT_UNAVAILABLE);
        return;
    }
    self->queued [worker]++;
    login->worker = worker;
}

static bool
needs_rehash (auth_t *self, const char *phc)
{
    uint32_t memory_kib, iterations;
    if (!qms_password_params (phc, &memory_kib, &iterations))
        return false;
    return memory_kib < self->memory_kib || iterations < self->iterations;
}

static void
on_result (auth_t *self, int worker, const auth_result_t *result)
{
    if (self->queued [worker] > 0)
        self->queued [worker]--;
    char key [21];
    req_key (result->id, key);
    login_t *login = (login_t *) zhashx_lookup (self->pending, key);
    if (!login || login->stage != STAGE_WORK) {
        qms_warn (AUTH_ACTOR, "event=stray_result id=%" PRIu64, result->id);
        return;
    }
    login_unpend (self, login);
    if (result->status == AUTH_JOB_ERROR)
        login_finish (self, login, "hash_error", TEXT_UNAVAILABLE);
    else
    if (login->reg) {
        snprintf (login->phc, sizeof login->phc, "%s", result->phc);
        request_create (self, login);
    }
    else
    if (result->status == AUTH_JOB_MISMATCH || login->unknown)
        login_finish (self, login, "invalid", TEXT_INVALID);
    else {
        if (result->phc [0])
            request_rehash (self, login, result->phc);
        request_session (self, login);
    }
}

/*  A worker's results (qms_inbox socket handler). */
static void
drain_worker (void *self_, void *socket)
{
    auth_t *self = (auth_t *) self_;
    int worker = 0;
    while (worker < self->worker_count - 1 && zsock_resolve (self->jobs [worker]) != socket)
        worker++;
    auth_result_t result;
    int rc;
    while ((rc = auth_result_recv (socket, &result)) != 0) {
        if (rc < 0)
            qms_warn (AUTH_ACTOR, "event=malformed_result worker=%d", worker);
        else
            on_result (self, worker, &result);
    }
    OPENSSL_cleanse (&result, sizeof result);
}

/* ------------------------------------------------------------------------ */
/*  Requests from gateways.                                                  */

static void
reject (auth_t *self, const uint8_t *gw, size_t gw_len, const qms_rec_t *rec,
        bool reg, const char *reason, const char *text)
{
    answer_fail (self, gw, gw_len, rec->conn, text);
    count_outcome (self, reg, reason);
    log_outcome (reg, rec->s [QMS_LOGIN_NAME], reason, NULL);
}

/*  Seconds a login must wait because of its name or address, or 0. */
static int
throttle_wait (auth_t *self, const char *key, const char *address)
{
    uint64_t now = qms_mono_ms ();
    int by_name = key ? auth_throttle_check (self->names, key, now) : 0;
    int by_address = auth_throttle_check (self->addresses, address, now);
    return by_name > by_address ? by_name : by_address;
}

static login_t *
login_new (const uint8_t *gw, size_t gw_len, const qms_rec_t *rec, bool reg,
           const char *key, const char *address)
{
    login_t *login = (login_t *) calloc (1, sizeof *login);
    if (!login)
        return NULL;
    login->reg = reg;
    login->conn = rec->conn;
    memcpy (login->gw, gw, gw_len);
    login->gw_len = gw_len;
    qms_str_copy (rec->s [QMS_LOGIN_NAME], login->name, sizeof login->name);
    snprintf (login->key, sizeof login->key, "%s", key);
    snprintf (login->address, sizeof login->address, "%s", address);
    login->pubkey = qms_str_dup (rec->s [QMS_LOGIN_PUBKEY]);
    login->pubkey_len = rec->s [QMS_LOGIN_PUBKEY].len;
    login->password = qms_str_dup (rec->s [QMS_LOGIN_PASSWORD]);
    login->password_len = rec->s [QMS_LOGIN_PASSWORD].len;
    if (!login->pubkey || !login->password)
        login_destroy (&login);
    return login;
}

static void
on_login (auth_t *self, const uint8_t *gw, size_t gw_len, const qms_rec_t *rec)
{
    bool reg = (rec->num & QMS_LOGIN_REGISTER) != 0;
    qms_str_t name = rec->s [QMS_LOGIN_NAME], password = rec->s [QMS_LOGIN_PASSWORD];
    if (name.len == 0 || password.len == 0) {
        reject (self, gw, gw_len, rec, reg, "empty_fields", TEXT_FIELDS);
        return;
    }
    if (password.len > AUTH_PASSWORD_MAX) {
        reject (self, gw, gw_len, rec, reg, "long_password", TEXT_LONG_PASSWORD);
        return;
    }
    /*  Names are registered in Unicode compatibility form (NFKC), after the
        spoof checks of common/qms_names.h; ASCII names are their own NFKC
        form and pass those checks, so for them nothing changes.  A login
        looks the name up as typed (names registered before this rule may
        not be in NFKC), then in NFKC. */
    char key [QMS_NAME_MAX_BYTES + 1] = "", nfkc_key [QMS_NAME_MAX_BYTES + 1] = "";
    char nfkc [QMS_NAME_NORM_MAX] = "";
    const char *bad = qms_name_check (name.ptr, name.len);
    if (!bad && qms_name_nfkc (name.ptr, name.len, nfkc, sizeof nfkc))
        bad = "Name is too long (at most 64 characters).";
    const char *bad_nfkc = bad ? bad : qms_name_check (nfkc, strlen (nfkc));
    if (reg) {
        bad = bad_nfkc;
        if (!bad)
            bad = qms_name_spoof_check (nfkc, strlen (nfkc));
        if (!bad && qms_name_key (nfkc, strlen (nfkc), key))
            bad = "Name is not valid.";
    }
    else {
        if (!bad && qms_name_key (name.ptr, name.len, key))
            bad = "Name is not valid.";
        if (!bad && !bad_nfkc && qms_name_key (nfkc, strlen (nfkc), nfkc_key) == 0 && streq (nfkc_key, key))
            nfkc_key [0] = 0;
        if (bad_nfkc)
            nfkc_key [0] = 0;
    }
    char address [ADDRESS_MAX + 1];
    qms_str_copy (qms_strn (rec->s [QMS_LOGIN_ADDRESS].ptr,
                            rec->s [QMS_LOGIN_ADDRESS].len > ADDRESS_MAX ? ADDRESS_MAX : rec->s [QMS_LOGIN_ADDRESS].len),
                  address, sizeof address);

    if (reg && bad) {
        reject (self, gw, gw_len, rec, reg, "bad_name", bad);
        return;
    }
    if (!reg) {
        int wait = throttle_wait (self, bad ? NULL : key, address);
        if (wait) {
            char text [100];
            snprintf (text, sizeof text, TEXT_THROTTLED, wait);
            reject (self, gw, gw_len, rec, reg, "throttled", text);
            return;
        }
        if (bad) {
            /*  No such user can exist; the address still pays for it. */
            auth_throttle_fail (self->addresses, address, qms_mono_ms ());
            reject (self, gw, gw_len, rec, reg, "invalid", TEXT_INVALID);
            return;
        }
    }
    if (zhashx_size (self->pending) >= MAX_PENDING) {
        reject (self, gw, gw_len, rec, reg, "busy", TEXT_BUSY);
        return;
    }
    login_t *login = login_new (gw, gw_len, rec, reg, key, address);
    if (!login) {
        reject (self, gw, gw_len, rec, reg, "no_memory", TEXT_UNAVAILABLE);
        return;
    }
    size_t nfkc_len = strlen (nfkc);
    if (reg && nfkc_len < sizeof login->name)  /* (it does: qms_name_check passed) */
        memcpy (login->name, nfkc, nfkc_len + 1);
    else
    if (!reg)
        snprintf (login->nfkc_key, sizeof login->nfkc_key, "%s", nfkc_key);
    if (!reg) {
        uint64_t now = qms_mono_ms ();
        /*  Attempts in flight count per name (so guesses sent all at once
            are held back), but per address only failures count: many
            people behind one NAT or proxy log in at the same time. */
        auth_throttle_begin (self->names, key, now);
        snprintf (login->throttle_key, sizeof login->throttle_key, "%s", key);
        login->counted = true;
    }
    request_user (self, login);
}

static void
gateway_batch (auth_t *self, const uint8_t *gw, size_t gw_len, const uint8_t *data, size_t size);

/*  A batch from a gateway (qms_inbox batch handler). */
static void
on_gateway_batch (void *self, const uint8_t *gw, size_t gw_len, const uint8_t *data, size_t size)
{
    gateway_batch ((auth_t *) self, gw, gw_len, data, size);
    /*  The batch held passwords. */
    if (size)
        OPENSSL_cleanse ((void *) data, size);
}

static void
gateway_batch (auth_t *self, const uint8_t *gw, size_t gw_len, const uint8_t *data, size_t size)
{
    /*  A batch is checked whole before any of it is acted on. */
    if (!qms_inbox_accept (AUTH_ACTOR, "gateway", QMS_ROLE_AUTH, data, size))
        return;
    size_t offset = 0;
    qms_rec_t rec;
    while (qms_rec_next (data, size, &offset, &rec) == 1) {
        if (rec.type == QMS_AUTH_LOGIN)
            on_login (self, gw, gw_len, &rec);
        else
        if (rec.type == QMS_STATS_GET)
            answer_stats (self, gw, gw_len, rec.req);
        else
        if (rec.type == QMS_AUTH_PING) {
            /*  A gateway checks that we are alive (it answers logins with
                "Service temporarily unavailable." while we are not). */
            qms_rec_t pong = { .type = QMS_AUTH_PONG, .num = self->nonce };
            qms_buf_t *buf = gw_out (self, gw, gw_len);
            if (buf)
                qms_rec_encode (buf, &pong);
        }
        else
        if (rec.type != QMS_NONE)
            qms_warn (AUTH_ACTOR, "event=unexpected_record type=%s from=gateway",
                      qms_type_name (rec.type));
    }
}

/* ------------------------------------------------------------------------ */
/*  Answers from the store.                                                  */

static void
on_user (auth_t *self, login_t *login, const qms_rec_t *rec)
{
    if (login->reg) {
        if (rec->num)
            login_finish (self, login, "exists", TEXT_EXISTS);
        else
            dispatch (self, login, AUTH_JOB_HASH, "", false);
        return;
    }
    if (!rec->num && login->nfkc_key [0]) {
        /*  Not known as typed: the same name in NFKC, as registered now. */
        snprintf (login->key, sizeof login->key, "%s", login->nfkc_key);
        login->nfkc_key [0] = 0;
        request_user (self, login);
        return;
    }
    if (!rec->num) {
        /*  Verify against the dummy anyway: the answer takes as long as
            for a name that exists. */
        login->unknown = true;
        dispatch (self, login, AUTH_JOB_VERIFY, self->dummy_phc, false);
        return;
    }
    if (!qms_str_copy (rec->s [QMS_USER_ID], login->user_id, sizeof login->user_id)
    ||  !qms_str_copy (rec->s [QMS_USER_NAME], login->name, sizeof login->name)
    ||  !qms_str_copy (rec->s [QMS_USER_PHC], login->phc, sizeof login->phc)) {
        qms_warn (AUTH_ACTOR, "event=bad_user_record req=%" PRIu64, rec->req);
        login_finish (self, login, "store_error", TEXT_UNAVAILABLE);
        return;
    }
    dispatch (self, login, AUTH_JOB_VERIFY, login->phc, needs_rehash (self, login->phc));
}

static void
on_store_record (auth_t *self, const qms_rec_t *rec)
{
    char key [21];
    req_key (rec->req, key);
    login_t *login = (login_t *) zhashx_lookup (self->pending, key);
    if (!login || login->stage == STAGE_WORK) {
        /*  Timed out already, or the answer to a rehash. */
        qms_debug (AUTH_ACTOR, "event=store_reply_dropped type=%s req=%" PRIu64,
                   qms_type_name (rec->type), rec->req);
        return;
    }
    login_unpend (self, login);
    bool result = rec->type == QMS_ST_RESULT;
    if (login->stage == STAGE_GET && rec->type == QMS_ST_USER)
        on_user (self, login, rec);
    else
    if (login->stage == STAGE_CREATE && result && rec->num == QMS_ST_OK)
        request_session (self, login);
    else
    if (login->stage == STAGE_CREATE && result && rec->num == QMS_ST_EXISTS)
        login_finish (self, login, "exists", TEXT_EXISTS);
    else
    if (login->stage == STAGE_CREATE && result && rec->num == QMS_ST_SIMILAR)
        login_finish (self, login, "similar", TEXT_SIMILAR);
    else
    if (login->stage == STAGE_SESSION && result && rec->num == QMS_ST_OK)
        login_finish (self, login, NULL, NULL);
    else {
        char detail [120];
        log_name (rec->s [QMS_RESULT_DETAIL], detail, sizeof detail);
        qms_warn (AUTH_ACTOR, "event=store_error type=%s status=%" PRIu64 " detail=\"%s\"",
                  qms_type_name (rec->type), rec->num, detail);
        login_finish (self, login, "store_error", TEXT_UNAVAILABLE);
    }
}

/*  A batch from the store (qms_inbox batch handler). */
static void
on_store_batch (void *self_, const uint8_t *identity, size_t identity_len,
                const uint8_t *data, size_t size)
{
    auth_t *self = (auth_t *) self_;
    if (!qms_inbox_accept (AUTH_ACTOR, "store", QMS_ROLE_AUTH, data, size))
        return;
    size_t offset = 0;
    qms_rec_t rec;
    while (qms_rec_next (data, size, &offset, &rec) == 1)
        if (rec.type != QMS_NONE)
            on_store_record (self, &rec);
}

/*  Logins the store has not answered in time. */
static void
expire (auth_t *self)
{
    uint64_t now = qms_mono_ms ();
    login_t *login;
    while ((login = (login_t *) zlistx_first (self->waiting)) && login->deadline <= now) {
        qms_warn (AUTH_ACTOR, "event=store_timeout req=%" PRIu64, login->req);
        login_finish (self, login, "store_timeout", TEXT_UNAVAILABLE);
    }
}

/* ------------------------------------------------------------------------ */
/*  Set-up, loop, tear-down.                                                 */

static void
auth_destroy (auth_t **self_p)
{
    auth_t *self = *self_p;
    if (!self)
        return;
    /*  Workers first: after this no thread holds anything of ours. */
    for (int i = 0; i < self->worker_count; i++) {
        zactor_destroy (&self->workers [i]);
        zsock_destroy (&self->jobs [i]);
    }
    if (self->pending) {
        login_t *login;
        while ((login = (login_t *) zhashx_first (self->pending))) {
            login_unpend (self, login);
            login_destroy (&login);
        }
    }
    zhashx_destroy (&self->pending);
    zlistx_destroy (&self->waiting);
    auth_throttle_destroy (&self->names);
    auth_throttle_destroy (&self->addresses);
    qms_buf_free (&self->store_out);
    for (size_t i = 0; i < self->out_cap; i++)
        qms_buf_free (&self->outs [i].buf);
    free (self->outs);
    zsock_destroy (&self->gateways);
    zsock_destroy (&self->store);
    OPENSSL_cleanse (self, sizeof *self);
    free (self);
    *self_p = NULL;
}

/*  Job endpoints are numbered for the process: an address would be reused
    by the next auth actor at the same address while libzmq's reaper may
    still hold the last one's inproc name (bind then fails). */
static atomic_uint s_job_endpoints;

static const char *
start_workers (auth_t *self, int count)
{
    self->worker_count = count < 1 ? 1 : count > MAX_WORKERS ? MAX_WORKERS : count;
    for (int i = 0; i < self->worker_count; i++) {
        char endpoint [64];
        snprintf (endpoint, sizeof endpoint, "inproc://qms-auth-jobs-%u",
                  atomic_fetch_add (&s_job_endpoints, 1));
        self->jobs [i] = zsock_new (ZMQ_PAIR);
        if (!self->jobs [i])
            return "cannot create a job socket";
        qms_socket_tune (self->jobs [i]);
        if (zsock_bind (self->jobs [i], "%s", endpoint))
            return "cannot bind a job socket";
        self->workers [i] = qms_actor_start (auth_worker_actor, endpoint, AUTH_ACTOR);
        if (!self->workers [i])
            return "cannot start a worker";
    }
    return NULL;
}

/*  Everything the actor needs, from the config; NULL or the reason. */
static const char *
auth_setup (auth_t *self, const qms_config_t *cfg)
{
    self->memory_kib = cfg->argon2_memory_kib;
    self->iterations = cfg->argon2_iterations;
    self->store_timeout_ms = s_store_timeout_ms;
    uint64_t window = (uint64_t) (cfg->login_fail_window > 0 ? cfg->login_fail_window : 0) * 1000;
    int limit = cfg->login_fail_limit;
    self->names = auth_throttle_new (limit, window, THROTTLE_ENTRIES);
    self->addresses = auth_throttle_new (limit > 0 && limit < INT32_MAX / 10 ? limit * 10 : limit,
                                         window, THROTTLE_ENTRIES);
    self->pending = zhashx_new ();
    self->waiting = zlistx_new ();
    if (!self->names || !self->addresses || !self->pending || !self->waiting)
        return "out of memory";

    /*  The dummy hash doubles as a check that the parameters work. */
    uint8_t secret [16];
    if (qms_random (secret, sizeof secret)
    ||  qms_password_hash (secret, sizeof secret, self->memory_kib, self->iterations,
                           self->dummy_phc, sizeof self->dummy_phc, AUTH_ACTOR))
        return "cannot hash with the configured Argon2 parameters";
    OPENSSL_cleanse (secret, sizeof secret);
    if (qms_random (&self->nonce, sizeof self->nonce))
        return "no random numbers";

    self->gateways = zsock_new (ZMQ_ROUTER);
    self->store = zsock_new (ZMQ_DEALER);
    if (!self->gateways || !self->store)
        return "cannot create sockets";
    qms_socket_tune (self->gateways);
    qms_socket_tune (self->store);
    if (qms_curve_bind (self->gateways, cfg->auth_endpoint) < 0)
        return "cannot bind the auth endpoint";
    if (qms_curve_connect (self->store, cfg->store_endpoint))
        return "cannot connect to the store endpoint";
    return start_workers (self, cfg->auth_workers);
}

/*  Wait no longer than the next store deadline, and at most a second. */
static long
poll_timeout (auth_t *self)
{
    login_t *first = (login_t *) zlistx_first (self->waiting);
    if (!first)
        return 1000;
    uint64_t now = qms_mono_ms ();
    if (first->deadline <= now)
        return 0;
    uint64_t wait = first->deadline - now;
    return wait > 1000 ? 1000 : (long) wait;
}

/*  The end of a loop pass: expired logins answered, output flushed. */
static long
end_of_pass (void *self_)
{
    auth_t *self = (auth_t *) self_;
    expire (self);
    flush (self);
    return poll_timeout (self);
}

static void
auth_loop (auth_t *self)
{
    qms_inbox_t *loop = qms_inbox_new (self->pipe, AUTH_ACTOR, self);
    bool ok = loop
           && qms_inbox_batches (loop, zsock_resolve (self->gateways), true, RECV_PER_PASS, "gateway",
                                on_gateway_batch) == 0
           && qms_inbox_batches (loop, zsock_resolve (self->store), false, RECV_PER_PASS, "store",
                                on_store_batch) == 0;
    for (int i = 0; ok && i < self->worker_count; i++)
        ok = qms_inbox_socket (loop, zsock_resolve (self->jobs [i]), drain_worker) == 0;
    if (ok) {
        qms_inbox_set_pass (loop, end_of_pass);
        qms_inbox_run (loop);
    }
    else
        qms_error (AUTH_ACTOR, "event=loop_failed reason=\"out of memory or too many workers\"");
    qms_inbox_destroy (&loop);
}

void
auth_actor (zsock_t *pipe, void *args)
{
    const qms_config_t *cfg = (const qms_config_t *) args;
    auth_t *self = (auth_t *) calloc (1, sizeof *self);
    const char *error = "out of memory";
    if (self) {
        self->pipe = pipe;
        error = auth_setup (self, cfg);
    }
    zsock_signal (pipe, 0);
    qms_actor_ready (pipe, error);
    if (!error) {
        qms_info (AUTH_ACTOR, "event=started endpoint=%s workers=%d m=%" PRIu32 " t=%" PRIu32,
                  cfg->auth_endpoint, self->worker_count, self->memory_kib, self->iterations);
        auth_loop (self);
        qms_info (AUTH_ACTOR, "event=stopped");
    }
    auth_destroy (&self);
}

/* ======================================================================== */
/*  Selftest                                                                 */

/*  The store is faked here: a ROUTER on the store endpoint answering ST_*
    from a small table, pumped by the test loop.  The gateway is a DEALER
    with routing id "gw-test". */

typedef struct {
    char id [QMS_UUID_CHARS + 1];
    char name [QMS_NAME_MAX_BYTES + 1];
    char key [QMS_NAME_MAX_BYTES + 1];
    char phc [AUTH_PHC_MAX];
} fake_user_t;

typedef enum {
    FAKE_ANSWER,            /* answer from the table */
    FAKE_SILENT,            /* hold requests, answer nothing */
    FAKE_ERROR,             /* ST_RESULT error to every request */
    FAKE_HIDE,              /* ST_USER_GET finds nobody (a register race) */
    FAKE_SIMILAR            /* ST_USER_CREATE: the name looks like a taken one */
} fake_mode_t;

typedef struct {
    zsock_t *router;
    fake_mode_t mode;
    fake_user_t users [8];
    int user_count;
    int rehashes;
    int sessions;
    char session_user [QMS_UUID_CHARS + 1];
    char session_hash [QMS_HASH_HEX + 1];
    char session_pubkey [64];
    size_t biggest_batch;   /* most records in one request batch */
    zlist_t *held;          /* zmsg_t held while silent */
} fake_store_t;

typedef struct {
    int type;
    uint64_t conn;
    char s [4][300];
} answer_t;

typedef struct {
    qms_config_t cfg;
    fake_store_t fake;
    zactor_t *auth;
    zsock_t *gw;
    int instance;
    uint64_t next_conn;
} harness_t;

static fake_user_t *
fake_find (fake_store_t *fake, qms_str_t key, bool by_id)
{
    for (int i = 0; i < fake->user_count; i++)
        if (qms_str_eq (key, by_id ? fake->users [i].id : fake->users [i].key))
            return &fake->users [i];
    return NULL;
}

static void
fake_result (qms_buf_t *out, uint64_t req, uint64_t status)
{
    qms_rec_t reply = { .type = QMS_ST_RESULT, .req = req, .num = status };
    reply.s [QMS_RESULT_DETAIL] = qms_str (status == QMS_ST_OK ? "" : "fake");
    assert (qms_rec_encode (out, &reply) == 0);
}

static void
fake_user_get (fake_store_t *fake, const qms_rec_t *rec, qms_buf_t *out)
{
    fake_user_t *user = fake->mode == FAKE_HIDE ? NULL : fake_find (fake, rec->s [QMS_FIND_KEY], false);
    qms_rec_t reply = { .type = QMS_ST_USER, .req = rec->req, .num = user != NULL };
    if (user) {
        reply.s [QMS_USER_ID] = qms_str (user->id);
        reply.s [QMS_USER_NAME] = qms_str (user->name);
        reply.s [QMS_USER_PHC] = qms_str (user->phc);
    }
    assert (qms_rec_encode (out, &reply) == 0);
}

static void
fake_user_create (fake_store_t *fake, const qms_rec_t *rec, qms_buf_t *out)
{
    assert (rec->s [QMS_CREATE_ID].len == QMS_UUID_CHARS);
    if (fake_find (fake, rec->s [QMS_CREATE_KEY], false)) {
        fake_result (out, rec->req, QMS_ST_EXISTS);
        return;
    }
    assert (fake->user_count < 8);
    fake_user_t *user = &fake->users [fake->user_count++];
    assert (qms_str_copy (rec->s [QMS_CREATE_ID], user->id, sizeof user->id));
    assert (qms_str_copy (rec->s [QMS_CREATE_NAME], user->name, sizeof user->name));
    assert (qms_str_copy (rec->s [QMS_CREATE_KEY], user->key, sizeof user->key));
    assert (qms_str_copy (rec->s [QMS_CREATE_PHC], user->phc, sizeof user->phc));
    fake_result (out, rec->req, QMS_ST_OK);
}

static void
fake_session_start (fake_store_t *fake, const qms_rec_t *rec, qms_buf_t *out)
{
    uint64_t now = qms_now_ms ();
    assert (rec->time <= now && rec->time + 10000 > now);
    assert (rec->s [QMS_START_HASH].len == QMS_HASH_HEX);
    assert (qms_str_copy (rec->s [QMS_START_ID], fake->session_user, sizeof fake->session_user));
    assert (qms_str_copy (rec->s [QMS_START_HASH], fake->session_hash, sizeof fake->session_hash));
    assert (qms_str_copy (rec->s [QMS_START_PUBKEY], fake->session_pubkey, sizeof fake->session_pubkey));
    fake->sessions++;
    fake_result (out, rec->req, QMS_ST_OK);
}

static void
fake_answer (fake_store_t *fake, zmsg_t *msg)
{
    zframe_t *id = zmsg_pop (msg);
    zframe_t *body = zmsg_pop (msg);
    assert (id && body);
    qms_buf_t out;
    qms_buf_init (&out);
    size_t offset = 0, records = 0;
    qms_rec_t rec;
    while (qms_rec_next (zframe_data (body), zframe_size (body), &offset, &rec) == 1) {
        records++;
        if (fake->mode == FAKE_ERROR)
            fake_result (&out, rec.req, QMS_ST_ERROR);
        else
        if (fake->mode == FAKE_SIMILAR && rec.type == QMS_ST_USER_CREATE)
            fake_result (&out, rec.req, QMS_ST_SIMILAR);
        else
        if (rec.type == QMS_ST_USER_GET)
            fake_user_get (fake, &rec, &out);
        else
        if (rec.type == QMS_ST_USER_CREATE)
            fake_user_create (fake, &rec, &out);
        else
        if (rec.type == QMS_ST_SESSION_START)
            fake_session_start (fake, &rec, &out);
        else {
            assert (rec.type == QMS_ST_USER_REHASH);
            fake_user_t *user = fake_find (fake, rec.s [QMS_REHASH_ID], true);
            assert (user);
            assert (qms_str_copy (rec.s [QMS_REHASH_PHC], user->phc, sizeof user->phc));
            fake->rehashes++;
            fake_result (&out, rec.req, QMS_ST_OK);
        }
    }
    if (records > fake->biggest_batch)
        fake->biggest_batch = records;
    assert (qms_batch_send (zsock_resolve (fake->router), zframe_data (id),
                            zframe_size (id), &out) == 0);
    qms_buf_free (&out);
    zframe_destroy (&id);
    zframe_destroy (&body);
}

static void
fake_pump (fake_store_t *fake)
{
    zmsg_t *msg;
    while ((msg = zmsg_recv (fake->router))) {
        if (fake->mode == FAKE_SILENT) {
            zlist_append (fake->held, msg);
            continue;
        }
        fake_answer (fake, msg);
        zmsg_destroy (&msg);
    }
}

/*  Answer what was held, late. */
static void
fake_release (fake_store_t *fake)
{
    zmsg_t *msg;
    while ((msg = (zmsg_t *) zlist_pop (fake->held))) {
        fake_answer (fake, msg);
        zmsg_destroy (&msg);
    }
}

static void
harness_start (harness_t *h)
{
    snprintf (h->cfg.auth_endpoint, sizeof h->cfg.auth_endpoint,
              "inproc://auth-test-%d", ++h->instance);
    h->auth = qms_actor_start (auth_actor, &h->cfg, "auth");
    assert (h->auth);
    h->gw = zsock_new (ZMQ_DEALER);
    assert (h->gw);
    qms_socket_tune (h->gw);
    zsock_set_identity (h->gw, "gw-test");
    assert (zsock_connect (h->gw, "%s", h->cfg.auth_endpoint) == 0);
}

static void
harness_stop (harness_t *h)
{
    zactor_destroy (&h->auth);
    zsock_destroy (&h->gw);
}

static void
add_login (qms_buf_t *batch, uint64_t conn, bool reg, const char *name,
           qms_str_t password, const char *pubkey, const char *address)
{
    qms_rec_t rec = { .type = QMS_AUTH_LOGIN, .conn = conn, .num = reg ? QMS_LOGIN_REGISTER : 0 };
    rec.s [QMS_LOGIN_NAME] = qms_str (name);
    rec.s [QMS_LOGIN_PASSWORD] = password;
    rec.s [QMS_LOGIN_PUBKEY] = qms_str (pubkey);
    rec.s [QMS_LOGIN_ADDRESS] = qms_str (address);
    assert (qms_rec_encode (batch, &rec) == 0);
}

/*  Pump the fake store and collect answers until count arrived or
    timeout_ms passed; returns how many arrived. */
static int
collect (harness_t *h, answer_t *answers, int count, int timeout_ms)
{
    int got = 0;
    int64_t deadline = zclock_mono () + timeout_ms;
    zmq_pollitem_t items [] = {
        { zsock_resolve (h->gw), 0, ZMQ_POLLIN, 0 },
        { zsock_resolve (h->fake.router), 0, ZMQ_POLLIN, 0 },
    };
    while (got < count && zclock_mono () < deadline) {
        zmq_poll (items, 2, 20);
        fake_pump (&h->fake);
        zmq_msg_t body;
        zmq_msg_init (&body);
        while (qms_batch_recv (zsock_resolve (h->gw), NULL, NULL, &body) == 1) {
            size_t offset = 0;
            qms_rec_t rec;
            while (qms_rec_next ((const uint8_t *) zmq_msg_data (&body), zmq_msg_size (&body),
                                 &offset, &rec) == 1) {
                assert (got < count);
                answer_t *a = &answers [got++];
                memset (a, 0, sizeof *a);
                a->type = rec.type;
                a->conn = rec.conn;
                for (int i = 0; i < 4; i++)
                    assert (qms_str_copy (rec.s [i], a->s [i], sizeof a->s [i]));
            }
        }
        zmq_msg_close (&body);
    }
    return got;
}

/*  One request, one answer (for the same conn). */
static answer_t
ask (harness_t *h, bool reg, const char *name, const char *password,
     const char *pubkey, const char *address)
{
    qms_buf_t batch;
    qms_buf_init (&batch);
    uint64_t conn = ++h->next_conn;
    add_login (&batch, conn, reg, name, qms_str (password), pubkey, address);
    assert (qms_batch_send (zsock_resolve (h->gw), NULL, 0, &batch) == 0);
    qms_buf_free (&batch);
    answer_t answer;
    assert (collect (h, &answer, 1, 20000) == 1);
    assert (answer.conn == conn);
    return answer;
}

static void
expect_fail (answer_t a, const char *text)
{
    assert (a.type == QMS_AUTH_FAIL);
    assert (streq (a.s [QMS_AUTH_FAIL_TEXT], text));
}

static void
expect_ok (answer_t a, const char *name)
{
    assert (a.type == QMS_AUTH_OK);
    assert (streq (a.s [QMS_AUTH_OK_NAME], name));
    /*  A version 4 UUID and a 43-character base64url token. */
    assert (strlen (a.s [QMS_AUTH_OK_ID]) == QMS_UUID_CHARS);
    for (int i = 0; i < QMS_UUID_CHARS; i++)
        assert (i == 8 || i == 13 || i == 18 || i == 23
                ? a.s [QMS_AUTH_OK_ID][i] == '-' : strchr ("0123456789abcdef", a.s [QMS_AUTH_OK_ID][i]) != NULL);
    assert (a.s [QMS_AUTH_OK_ID][14] == '4');
    assert (strlen (a.s [QMS_AUTH_OK_TOKEN]) == QMS_TOKEN_CHARS);
    assert (strspn (a.s [QMS_AUTH_OK_TOKEN], "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
            == QMS_TOKEN_CHARS);
}

/*  Everything logged during the test, to prove no secret is. */
static pthread_mutex_t s_log_lock = PTHREAD_MUTEX_INITIALIZER;
static char *s_log_text;
static size_t s_log_size;

static void
capture_log (int level, const char *actor, const char *line, void *arg)
{
    (void) level;
    (void) actor;
    (void) arg;
    pthread_mutex_lock (&s_log_lock);
    size_t n = strlen (line);
    char *text = (char *) realloc (s_log_text, s_log_size + n + 2);
    if (text) {
        memcpy (text + s_log_size, line, n);
        text [s_log_size + n] = '\n';
        text [s_log_size + n + 1] = 0;
        s_log_text = text;
        s_log_size += n + 1;
    }
    pthread_mutex_unlock (&s_log_lock);
}

/*  Names in Unicode (common/qms_names.h): registered in NFKC, found at
    login in either form, refused when they mix scripts or look like a
    taken name (the store decides that). */
static void
test_unicode_names (harness_t *h)
{
    fake_store_t *fake = &h->fake;
    int users = fake->user_count;
    /*  Fullwidth "Ｋｉｍ" is registered as "Kim" */
    expect_ok (ask (h, true, "\xef\xbc\xab\xef\xbd\x89\xef\xbd\x8d", "pw-kim-1", "", "10.0.0.9"), "Kim");
    assert (fake->user_count == users + 1 && streq (fake->users [users].name, "Kim"));
    /*  and found at login typed either way */
    expect_ok (ask (h, false, "kim", "pw-kim-1", "", "10.0.0.9"), "Kim");
    expect_ok (ask (h, false, "\xef\xbd\x8b\xef\xbd\x89\xef\xbd\x8d", "pw-kim-1", "", "10.0.0.9"), "Kim");
    expect_fail (ask (h, false, "\xef\xbd\x8b\xef\xbd\x89\xef\xbd\x8d", "wrong-guess", "", "10.0.0.9"), TEXT_INVALID);
    /*  Latin with a Cyrillic letter: refused before anything is hashed */
    const char *mixed = "K\xd1\x96m";                      /* Cyrillic і */
    expect_fail (ask (h, true, mixed, "pw-kim-2", "", "10.0.0.9"), qms_name_spoof_check (mixed, strlen (mixed)));
    assert (qms_name_spoof_check (mixed, strlen (mixed)) != NULL);
    /*  The store finds the name too similar to a taken one */
    fake->mode = FAKE_SIMILAR;
    expect_fail (ask (h, true, "\xce\x9a\xce\xb9\xce\xbc", "pw-kim-3", "", "10.0.0.9"), TEXT_SIMILAR);   /* Κιμ */
    fake->mode = FAKE_ANSWER;
    assert (fake->user_count == users + 1);
    /*  A name whose NFKC form breaks the rules (too long) is refused at register */
    char ligatures [64 * 3 + 1] = "";
    for (int i = 0; i < 40; i++)
        strcat (ligatures, "\xef\xac\x81");            /* ﬁ: 40 characters, 80 after NFKC */
    expect_fail (ask (h, true, ligatures, "pw-lig-1", "", "10.0.0.9"), "Name is too long (at most 64 characters).");
}

static void
test_register_login (harness_t *h, char tokens [][QMS_TOKEN_CHARS + 1], int *token_count)
{
    fake_store_t *fake = &h->fake;

    /*  Register: the session holds the token's hash, never the token. */
    answer_t a = ask (h, true, "Alice", "pw-alpha-1", "pk-alice", "10.0.0.1");
    expect_ok (a, "Alice");
    assert (streq (a.s [QMS_AUTH_OK_PUBKEY], "pk-alice"));
    char hash [QMS_HASH_HEX + 1];
    qms_sha256_hex (a.s [QMS_AUTH_OK_TOKEN], strlen (a.s [QMS_AUTH_OK_TOKEN]), hash);
    assert (fake->sessions == 1 && streq (fake->session_hash, hash));
    assert (streq (fake->session_user, a.s [QMS_AUTH_OK_ID]) && streq (fake->session_pubkey, "pk-alice"));
    assert (fake->user_count == 1 && streq (fake->users [0].key, "alice"));
    assert (strncmp (fake->users [0].phc, "$argon2id$v=19$m=256,t=1,p=1$", 29) == 0);
    assert (argon2id_verify (fake->users [0].phc, "pw-alpha-1", 10) == ARGON2_OK);
    char alice_id [QMS_UUID_CHARS + 1];
    strcpy (alice_id, a.s [QMS_AUTH_OK_ID]);
    strcpy (tokens [(*token_count)++], a.s [QMS_AUTH_OK_TOKEN]);

    /*  Names are unique case-insensitively, found first or by the store. */
    expect_fail (ask (h, true, "ALICE", "other-pw", "", "10.0.0.1"), TEXT_EXISTS);
    fake->mode = FAKE_HIDE;
    expect_fail (ask (h, true, "aLICE", "other-pw", "", "10.0.0.1"), TEXT_EXISTS);
    fake->mode = FAKE_ANSWER;
    assert (fake->user_count == 1);

    /*  Login in another case: the name comes back as registered. */
    a = ask (h, false, "aLiCe", "pw-alpha-1", "pk-2", "10.0.0.1");
    expect_ok (a, "Alice");
    assert (streq (a.s [QMS_AUTH_OK_ID], alice_id) && streq (a.s [QMS_AUTH_OK_PUBKEY], "pk-2"));
    assert (!streq (a.s [QMS_AUTH_OK_TOKEN], tokens [0]));
    assert (fake->sessions == 2 && streq (fake->session_pubkey, "pk-2"));
    strcpy (tokens [(*token_count)++], a.s [QMS_AUTH_OK_TOKEN]);

    /*  Wrong password and unknown name read the same. */
    expect_fail (ask (h, false, "Alice", "wrong-guess", "", "10.0.0.1"), TEXT_INVALID);
    expect_fail (ask (h, false, "bob", "wrong-guess", "", "10.0.0.1"), TEXT_INVALID);

    /*  Empty fields, long passwords, bad names. */
    expect_fail (ask (h, false, "", "pw", "", "10.0.0.1"), TEXT_FIELDS);
    expect_fail (ask (h, false, "Alice", "", "", "10.0.0.1"), TEXT_FIELDS);
    expect_fail (ask (h, true, "Zed", "", "", "10.0.0.1"), TEXT_FIELDS);
    char long_pw [AUTH_PASSWORD_MAX + 2];
    memset (long_pw, 'q', sizeof long_pw);
    long_pw [AUTH_PASSWORD_MAX + 1] = 0;
    expect_fail (ask (h, true, "Zed", long_pw, "", "10.0.0.1"), TEXT_LONG_PASSWORD);
    expect_fail (ask (h, false, "Alice", long_pw, "", "10.0.0.1"), TEXT_LONG_PASSWORD);
    long_pw [AUTH_PASSWORD_MAX] = 0;
    expect_fail (ask (h, false, "Alice", long_pw, "", "10.0.0.1"), TEXT_INVALID);
    expect_fail (ask (h, true, " Zed", "pw-zed", "", "10.0.0.1"), qms_name_check (" Zed", 4));
    expect_fail (ask (h, true, "Z\ned", "pw-zed", "", "10.0.0.1"), qms_name_check ("Z\ned", 4));
    expect_fail (ask (h, false, " Alice", "pw-alpha-1", "", "10.0.0.1"), TEXT_INVALID);
    assert (fake->user_count == 1);

    /*  A long password within the limit registers; no pubkey is fine. */
    a = ask (h, true, "Zed", long_pw, "", "10.0.0.1");
    expect_ok (a, "Zed");
    assert (streq (a.s [QMS_AUTH_OK_PUBKEY], ""));
    strcpy (tokens [(*token_count)++], a.s [QMS_AUTH_OK_TOKEN]);
    /*  Alice has two failures; a success clears them. */
    expect_ok (ask (h, false, "alice", "pw-alpha-1", "", "10.0.0.1"), "Alice");
}

static void
test_throttle (harness_t *h)
{
    /*  limit 3 per name: two failures, a success clears them, two more
        are still allowed, a third blocks even the right password. */
    expect_ok (ask (h, true, "Carol", "pw-carol-1", "", "10.0.0.2"), "Carol");
    for (int i = 0; i < 2; i++)
        expect_fail (ask (h, false, "Carol", "wrong-guess", "", "10.0.0.2"), TEXT_INVALID);
    expect_ok (ask (h, false, "Carol", "pw-carol-1", "", "10.0.0.2"), "Carol");
    for (int i = 0; i < 2; i++)
        expect_fail (ask (h, false, "Carol", "wrong-guess", "", "10.0.0.2"), TEXT_INVALID);
    expect_ok (ask (h, false, "Carol", "pw-carol-1", "", "10.0.0.2"), "Carol");
    for (int i = 0; i < 3; i++)
        expect_fail (ask (h, false, "Carol", "wrong-guess", "", "10.0.0.2"), TEXT_INVALID);
    answer_t a = ask (h, false, "CAROL", "pw-carol-1", "", "10.0.0.9");
    assert (a.type == QMS_AUTH_FAIL);
    int seconds = 0;
    assert (sscanf (a.s [QMS_AUTH_FAIL_TEXT], TEXT_THROTTLED, &seconds) == 1);
    assert (seconds >= 1 && seconds <= h->cfg.login_fail_window);
    char text [100];
    snprintf (text, sizeof text, TEXT_THROTTLED, seconds);
    assert (streq (a.s [QMS_AUTH_FAIL_TEXT], text));
    /*  Other names from the same address are not blocked. */
    expect_ok (ask (h, false, "Alice", "pw-alpha-1", "", "10.0.0.2"), "Alice");

    /*  Per address: 10 x limit failures over any names block it. */
    qms_buf_t batch;
    qms_buf_init (&batch);
    int count = 10 * h->cfg.login_fail_limit;
    for (int i = 0; i < count; i++) {
        char name [32];
        snprintf (name, sizeof name, "ghost%d", i);
        add_login (&batch, 1000 + (uint64_t) i, false, name, qms_str ("wrong-guess"), "", "10.0.0.3");
    }
    assert (qms_batch_send (zsock_resolve (h->gw), NULL, 0, &batch) == 0);
    qms_buf_free (&batch);
    answer_t answers [64];
    assert (collect (h, answers, count, 20000) == count);
    for (int i = 0; i < count; i++)
        expect_fail (answers [i], TEXT_INVALID);
    a = ask (h, false, "Alice", "pw-alpha-1", "", "10.0.0.3");
    assert (a.type == QMS_AUTH_FAIL && strncmp (a.s [QMS_AUTH_FAIL_TEXT], "Too many failed login attempts.", 31) == 0);
    expect_ok (ask (h, false, "Alice", "pw-alpha-1", "", "10.0.0.4"), "Alice");
}

/*  Parameters rose: a good login stores a stronger hash, once.  This is
    also the one run with the real default cost. */
static void
test_rehash (harness_t *h)
{
    harness_stop (h);
    h->cfg.argon2_memory_kib = 19456;
    h->cfg.argon2_iterations = 2;
    harness_start (h);
    assert (h->fake.rehashes == 0);
    expect_ok (ask (h, false, "Alice", "pw-alpha-1", "", "10.0.0.5"), "Alice");
    assert (h->fake.rehashes == 1);
    const char *phc = h->fake.users [0].phc;
    assert (strncmp (phc, "$argon2id$v=19$m=19456,t=2,p=1$", 31) == 0);
    assert (argon2id_verify (phc, "pw-alpha-1", 10) == ARGON2_OK);
    expect_ok (ask (h, false, "Alice", "pw-alpha-1", "", "10.0.0.5"), "Alice");
    expect_fail (ask (h, false, "Alice", "wrong-guess", "", "10.0.0.5"), TEXT_INVALID);
    assert (h->fake.rehashes == 1);
}

/*  One worker, a flood in one batch: the store answers it in one batch,
    so exactly QUEUE_PER_WORKER jobs are queued and the rest are busy. */
static void
test_busy (harness_t *h)
{
    harness_stop (h);
    h->cfg.argon2_memory_kib = 256;
    h->cfg.argon2_iterations = 1;
    h->cfg.auth_workers = 1;
    h->cfg.login_fail_limit = 1000;
    harness_start (h);
    enum { FLOOD = 100 };
    qms_buf_t batch;
    qms_buf_init (&batch);
    for (int i = 0; i < FLOOD; i++) {
        char name [32];
        snprintf (name, sizeof name, "nobody%d", i);
        add_login (&batch, 5000 + (uint64_t) i, false, name, qms_str ("wrong-guess"), "", "10.0.0.6");
    }
    h->fake.biggest_batch = 0;
    assert (qms_batch_send (zsock_resolve (h->gw), NULL, 0, &batch) == 0);
    qms_buf_free (&batch);
    answer_t *answers = (answer_t *) calloc (FLOOD, sizeof *answers);
    assert (answers);
    assert (collect (h, answers, FLOOD, 30000) == FLOOD);
    assert (h->fake.biggest_batch == FLOOD);
    int busy = 0, invalid = 0;
    bool seen [FLOOD] = { false };
    for (int i = 0; i < FLOOD; i++) {
        assert (answers [i].type == QMS_AUTH_FAIL);
        assert (answers [i].conn >= 5000 && answers [i].conn < 5000 + FLOOD);
        assert (!seen [answers [i].conn - 5000]);
        seen [answers [i].conn - 5000] = true;
        busy += streq (answers [i].s [QMS_AUTH_FAIL_TEXT], TEXT_BUSY);
        invalid += streq (answers [i].s [QMS_AUTH_FAIL_TEXT], TEXT_INVALID);
    }
    assert (invalid == QUEUE_PER_WORKER && busy == FLOOD - QUEUE_PER_WORKER);
    free (answers);
    /*  The queue drains: the next login is served. */
    expect_ok (ask (h, false, "Alice", "pw-alpha-1", "", "10.0.0.6"), "Alice");
}

/*  A store that does not answer, answers late, or fails. */
static void
test_store_trouble (harness_t *h)
{
    harness_stop (h);
    h->cfg.auth_workers = 2;
    h->cfg.login_fail_limit = 3;
    s_store_timeout_ms = 300;
    harness_start (h);
    s_store_timeout_ms = 5000;

    h->fake.mode = FAKE_SILENT;
    int64_t started = zclock_mono ();
    expect_fail (ask (h, false, "Alice", "pw-alpha-1", "", "10.0.0.7"), TEXT_UNAVAILABLE);
    assert (zclock_mono () - started >= 290);
    assert (zlist_size (h->fake.held) == 1);
    h->fake.mode = FAKE_ANSWER;
    fake_release (&h->fake);
    answer_t extra;
    assert (collect (h, &extra, 1, 300) == 0);     /* the late reply was dropped */
    expect_ok (ask (h, false, "Alice", "pw-alpha-1", "", "10.0.0.7"), "Alice");

    h->fake.mode = FAKE_ERROR;
    expect_fail (ask (h, false, "Alice", "pw-alpha-1", "", "10.0.0.7"), TEXT_UNAVAILABLE);
    expect_fail (ask (h, true, "Dave", "pw-dave-1", "", "10.0.0.7"), TEXT_UNAVAILABLE);
    h->fake.mode = FAKE_ANSWER;

    /*  Store failures are not login failures: Alice is not throttled. */
    expect_ok (ask (h, false, "Alice", "pw-alpha-1", "", "10.0.0.7"), "Alice");

    /*  Garbage and unexpected records are dropped, never fatal. */
    assert (zmq_send (zsock_resolve (h->gw), "\x02\xff\xff", 3, 0) == 3);
    qms_buf_t batch;
    qms_buf_init (&batch);
    qms_rec_t odd = { .type = QMS_RT_CLOSED, .conn = 1 };
    assert (qms_rec_encode (&batch, &odd) == 0);
    assert (qms_batch_send (zsock_resolve (h->gw), NULL, 0, &batch) == 0);
    qms_buf_free (&batch);
    assert (collect (h, &extra, 1, 200) == 0);
    expect_ok (ask (h, false, "Alice", "pw-alpha-1", "", "10.0.0.7"), "Alice");
}

void
auth_test (bool verbose)
{
    auth_throttle_test (verbose);
    auth_worker_test (verbose);
    if (verbose)
        printf (" * auth: ");
    qms_log_set_sink (capture_log, NULL);

    harness_t *h = (harness_t *) calloc (1, sizeof *h);
    assert (h);
    qms_config_defaults (&h->cfg);
    h->cfg.argon2_memory_kib = 256;
    h->cfg.argon2_iterations = 1;
    h->cfg.auth_workers = 2;
    h->cfg.login_fail_limit = 3;
    h->cfg.login_fail_window = 60;
    strcpy (h->cfg.store_endpoint, "inproc://auth-test-store");
    h->fake.router = zsock_new (ZMQ_ROUTER);
    assert (h->fake.router);
    qms_socket_tune (h->fake.router);
    zsock_set_rcvtimeo (h->fake.router, 0);
    assert (zsock_bind (h->fake.router, "%s", h->cfg.store_endpoint) == 0);
    h->fake.held = zlist_new ();

    /*  Parameters libargon2 refuses stop the actor before it listens. */
    h->cfg.argon2_memory_kib = 4;
    zactor_t *broken = qms_actor_start (auth_actor, &h->cfg, "auth");
    assert (broken == NULL);
    h->cfg.argon2_memory_kib = 256;

    char tokens [8][QMS_TOKEN_CHARS + 1];
    int token_count = 0;
    harness_start (h);
    test_register_login (h, tokens, &token_count);
    test_throttle (h);
    test_rehash (h);
    test_busy (h);
    test_store_trouble (h);
    test_unicode_names (h);
    harness_stop (h);

    /*  The log tells the story, but no password and no token. */
    qms_log_set_sink (NULL, NULL);
    assert (s_log_text);
    assert (strstr (s_log_text, "event=register result=ok name=\"Alice\""));
    assert (strstr (s_log_text, "event=register result=fail reason=exists name=\"ALICE\""));
    assert (strstr (s_log_text, "event=login result=fail reason=invalid name=\"bob\""));
    assert (strstr (s_log_text, "event=login result=fail reason=throttled"));
    assert (strstr (s_log_text, "event=login result=fail reason=busy"));
    assert (strstr (s_log_text, "event=login result=fail reason=store_timeout"));
    assert (strstr (s_log_text, "event=rehash"));
    assert (!strstr (s_log_text, "pw-alpha-1") && !strstr (s_log_text, "pw-carol-1"));
    assert (!strstr (s_log_text, "wrong-guess") && !strstr (s_log_text, "qqqqqqqq"));
    for (int i = 0; i < token_count; i++)
        assert (!strstr (s_log_text, tokens [i]));
    free (s_log_text);
    s_log_text = NULL;
    s_log_size = 0;

    zmsg_t *msg;
    while ((msg = (zmsg_t *) zlist_pop (h->fake.held)))
        zmsg_destroy (&msg);
    zlist_destroy (&h->fake.held);
    zsock_destroy (&h->fake.router);
    qms_config_free (&h->cfg);
    free (h);

    if (verbose)
        printf ("OK\n");
}
