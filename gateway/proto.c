/*  proto.c - client JSON in and out (see proto.h). */
#include "proto.h"
#include "enums.h"
#include "qms_json.h"
#include "qms_password.h"
#include "qms_util.h"

#include <assert.h>
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
set_error (proto_request_t *req, int event, const char *text)
{
    req->status = PROTO_ERROR;
    req->error_event = event;
    req->error = text;
}

/*  A field that must be a string.  Returns 1 and sets *out if present and a
    string, 0 if absent, -1 if present with another type. */
static int
get_string (cJSON *doc, const char *key, qms_str_t *out)
{
    cJSON *item = cJSON_GetObjectItemCaseSensitive (doc, key);
    if (!item)
        return 0;
    if (!cJSON_IsString (item) || !item->valuestring)
        return -1;
    out->ptr = item->valuestring;
    out->len = (uint32_t) strlen (item->valuestring);
    return 1;
}

/*  "receipts": true asks for the receipt protocol (ext). */
static void
parse_receipts_flag (cJSON *doc, proto_request_t *req)
{
    req->receipts = cJSON_IsTrue (cJSON_GetObjectItemCaseSensitive (doc, "receipts"));
    cJSON *presence = cJSON_GetObjectItemCaseSensitive (doc, "presence");
    if (!presence)
        return;
    const char *mode = cJSON_IsString (presence) ? presence->valuestring : "";
    if (strcmp (mode, "full") == 0)
        req->presence = PROTO_PRESENCE_FULL;
    else
    if (strcmp (mode, "delta") == 0)
        req->presence = PROTO_PRESENCE_DELTA;
    else
    if (strcmp (mode, "none") == 0)
        req->presence = PROTO_PRESENCE_NONE;
    else
        set_error (req, req->action == QMS_REQ_AUTHORIZE ? QMS_EV_AUTHORIZATION : QMS_EV_LOGIN,
                   "Field 'presence' must be \"full\", \"delta\" or \"none\".");
}

static void
parse_login (cJSON *doc, proto_request_t *req)
{
    parse_receipts_flag (doc, req);
    if (get_string (doc, "name", &req->name) != 1 || req->name.len == 0
    ||  get_string (doc, "password", &req->password) != 1 || req->password.len == 0) {
        set_error (req, QMS_EV_LOGIN, "Please fill all fields.");
        return;
    }
    /*  What the texts say is what is checked: 64 characters are at most
        QMS_NAME_MAX_BYTES of UTF-8 (auth counts the characters), and a
        password at most QMS_PASSWORD_MAX bytes. */
    if (req->name.len > QMS_NAME_MAX_BYTES || req->password.len > QMS_PASSWORD_MAX) {
        set_error (req, QMS_EV_LOGIN, req->name.len > QMS_NAME_MAX_BYTES
                   ? "Name is too long (at most 64 characters)."
                   : "Password is too long (at most 1024 bytes).");
        return;
    }
    int rc = get_string (doc, "pubKey", &req->pubkey);
    if (rc < 0) {
        cJSON *item = cJSON_GetObjectItemCaseSensitive (doc, "pubKey");
        if (!cJSON_IsNull (item)) {
            set_error (req, QMS_EV_LOGIN, "Field 'pubKey' must be a string.");
            return;
        }
    }
    if (req->pubkey.len > PROTO_MAX_PUBKEY)
        set_error (req, QMS_EV_LOGIN, "Field 'pubKey' is too long (at most 16384 bytes).");
}

/*  rc is what get_string said of "token". */
static bool
check_token (proto_request_t *req, int rc)
{
    if (rc != 1 || req->token.len == 0 || req->token.len > PROTO_MAX_TOKEN) {
        req->status = PROTO_INVALID_USER;
        return false;
    }
    return true;
}

static bool
parse_token (cJSON *doc, proto_request_t *req)
{
    return check_token (req, get_string (doc, "token", &req->token));
}

/*  The rules of a MessageRequest, once its fields are read; each rc is what
    get_string says of that field (1 a string, 0 absent, -1 another type).
    Both readers (cJSON's DOM and the one-pass scanner) end here. */
static void
check_message (proto_request_t *req, int token_rc, int target_rc, int message_rc, int id_rc)
{
    if (!check_token (req, token_rc))
        return;
    int rc = target_rc;
    if (rc != 1 || req->target.len == 0) {
        set_error (req, QMS_EV_MESSAGE, rc < 0 ? "Field 'target' must be a string."
                                               : "Field 'target' is missing.");
        return;
    }
    if (req->target.len > PROTO_MAX_TARGET) {
        set_error (req, QMS_EV_MESSAGE, "Field 'target' is too long (a user id).");
        return;
    }
    rc = message_rc;
    if (rc != 1) {
        set_error (req, QMS_EV_MESSAGE, rc < 0 ? "Field 'message' must be a string."
                                               : "Field 'message' is missing.");
        return;
    }
    rc = id_rc;
    if (rc < 0 || (rc == 1 && (req->client_id.len == 0 || req->client_id.len > PROTO_MAX_CLIENT_ID))) {
        set_error (req, QMS_EV_MESSAGE, "Field 'id' must be a string of 1 to 64 characters.");
        return;
    }
    if (req->message.len > PROTO_MAX_MESSAGE)
        set_error (req, QMS_EV_MESSAGE, "Field 'message' is too long (at most 65536 bytes).");
}

static void
parse_message (cJSON *doc, proto_request_t *req)
{
    int token_rc = get_string (doc, "token", &req->token);
    int target_rc = get_string (doc, "target", &req->target);
    int message_rc = get_string (doc, "message", &req->message);
    int id_rc = get_string (doc, "id", &req->client_id);
    check_message (req, token_rc, target_rc, message_rc, id_rc);
}

/*  The hot path.  A MessageRequest as clients send it (one flat object
    whose values are strings without escapes, or integers) is read here in
    one pass, with no DOM and no allocation: its strings point into the
    frame.  Anything else (escapes, control bytes, nesting, other kinds of
    value, a known key twice, other actions) returns false and is read by
    cJSON instead, so that both readers give the same answer to every input
    (proto_test and fuzz_proto compare them). */
#define SKIP_WS(p, end) while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++

/*  A string without escapes or control bytes at *pp (on its opening quote);
    false for anything else. */
static bool
scan_plain_string (const char **pp, const char *end, qms_str_t *out)
{
    const char *start = *pp + 1;
    const char *p = (const char *) qms_json_plain_end ((const uint8_t *) start, (const uint8_t *) end);
    if (p == end || *p != '"' || p - start > UINT32_MAX)
        return false;
    out->ptr = start;
    out->len = (uint32_t) (p - start);
    *pp = p + 1;
    return true;
}

static bool
parse_fast (const char *data, size_t len, proto_request_t *req)
{
    enum { F_TOKEN, F_TARGET, F_MESSAGE, F_ID, F_COUNT };
    static const struct { const char *name; size_t len; } keys [F_COUNT] = {
        { "token", 5 }, { "target", 6 }, { "message", 7 }, { "id", 2 }
    };
    qms_str_t field [F_COUNT] = { { 0 } };
    bool seen [F_COUNT] = { false };
    long action = -1;
    const char *p = data, *end = data + len;
    SKIP_WS (p, end);
    if (p == end || *p++ != '{')
        return false;
    for (;;) {
        qms_str_t key, text = { 0 };
        long number = -1;
        SKIP_WS (p, end);
        if (p == end || *p != '"' || !scan_plain_string (&p, end, &key))
            return false;
        SKIP_WS (p, end);
        if (p == end || *p++ != ':')
            return false;
        SKIP_WS (p, end);
        if (p < end && *p == '"') {
            if (!scan_plain_string (&p, end, &text))
                return false;
        }
        else
        if (p < end && *p >= '0' && *p <= '9') {
            /*  A small integer in JSON's spelling: no leading zero, no
                fraction, no exponent (those go the long way). */
            const char *digits = p;
            number = 0;
            while (p < end && *p >= '0' && *p <= '9' && p - digits < 9)
                number = number * 10 + (*p++ - '0');
            if ((*digits == '0' && p - digits > 1)
            ||  (p < end && ((*p >= '0' && *p <= '9') || *p == '.' || *p == 'e' || *p == 'E')))
                return false;
        }
        else
            return false;
        if (key.len == 6 && memcmp (key.ptr, "action", 6) == 0) {
            if (action >= 0 || number < 0)
                return false;
            action = number;
        }
        else
            for (int i = 0; i < F_COUNT; i++)
                if (key.len == keys [i].len && memcmp (key.ptr, keys [i].name, key.len) == 0) {
                    if (seen [i] || number >= 0)
                        return false;
                    seen [i] = true;
                    field [i] = text;
                    break;
                }
        SKIP_WS (p, end);
        if (p < end && *p == ',') {
            p++;
            continue;
        }
        if (p < end && *p == '}') {
            p++;
            break;
        }
        return false;
    }
    SKIP_WS (p, end);
    if (p != end || action != QMS_REQ_MESSAGE)
        return false;
    req->action = QMS_REQ_MESSAGE;
    req->token = field [F_TOKEN];
    req->target = field [F_TARGET];
    req->message = field [F_MESSAGE];
    req->client_id = field [F_ID];
    check_message (req, seen [F_TOKEN], seen [F_TARGET], seen [F_MESSAGE], seen [F_ID]);
    return true;
}

/*  True if a JSON string in data contains the escape \u0000.  cJSON keeps
    strings NUL-terminated without a length, so such a string would be cut
    short silently; we refuse it instead.  A small scanner that follows
    string and escape state, so "\\u0000" (an escaped backslash) is not
    mistaken for it. */
typedef enum { STRINGS_OK, STRINGS_NUL_ESCAPE, STRINGS_RAW_CONTROL } strings_t;

/*  What cJSON lets through but we must not: the escape \u0000 (cJSON keeps
    strings NUL-terminated without a length, so such a string would be cut
    short silently) and raw control bytes, NUL included, inside strings
    (JSON forbids them; cJSON copies them).  A small scanner that follows
    string and escape state, so "\\u0000" (an escaped backslash) is not
    mistaken for the escape. */
static strings_t
check_strings (const char *data, size_t len)
{
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char) data [i];
        if (!in_string) {
            if (c == '"')
                in_string = true;
            continue;
        }
        if (c < 0x20)
            return STRINGS_RAW_CONTROL;
        if (c == '"')
            in_string = false;
        else
        if (c == '\\' && i + 1 < len) {
            if (data [i + 1] == 'u' && i + 5 < len && data [i + 2] == '0' && data [i + 3] == '0'
            &&  data [i + 4] == '0' && data [i + 5] == '0')
                return STRINGS_NUL_ESCAPE;
            i++;                        /* skip the escaped character */
        }
    }
    return STRINGS_OK;
}

static void
parse_receipt (cJSON *doc, proto_request_t *req)
{
    if (!parse_token (doc, req))
        return;
    cJSON *ids = cJSON_GetObjectItemCaseSensitive (doc, "ids");
    int count = cJSON_IsArray (ids) ? cJSON_GetArraySize (ids) : -1;
    if (count < 1 || count > PROTO_MAX_RECEIPTS) {
        set_error (req, -1, "Field 'ids' must be an array of 1 to 256 message ids.");
        return;
    }
    cJSON *item;
    cJSON_ArrayForEach (item, ids)
        if (!cJSON_IsString (item) || !item->valuestring || !*item->valuestring
        ||  strlen (item->valuestring) > PROTO_MAX_CLIENT_ID) {
            set_error (req, -1, "Field 'ids' must be an array of 1 to 256 message ids.");
            return;
        }
    req->ids = ids;
}

static void
parse_lookup (cJSON *doc, proto_request_t *req)
{
    if (!parse_token (doc, req))
        return;
    cJSON *names = cJSON_GetObjectItemCaseSensitive (doc, "names");
    int count = cJSON_IsArray (names) ? cJSON_GetArraySize (names) : -1;
    if (count < 1 || count > 64) {
        set_error (req, QMS_EV_USER_LOOKUP, "Field 'names' must be an array of 1 to 64 names.");
        return;
    }
    cJSON *item;
    cJSON_ArrayForEach (item, names)
        if (!cJSON_IsString (item) || !item->valuestring || !*item->valuestring
        ||  strlen (item->valuestring) > 256) {
            set_error (req, QMS_EV_USER_LOOKUP, "Field 'names' must be an array of 1 to 64 names.");
            return;
        }
    req->ids = names;
}

size_t
proto_receipt_count (const proto_request_t *req)
{
    return req->ids ? (size_t) cJSON_GetArraySize ((cJSON *) req->ids) : 0;
}

qms_str_t
proto_receipt_id (const proto_request_t *req, size_t n)
{
    cJSON *item = cJSON_GetArrayItem ((cJSON *) req->ids, (int) n);
    return qms_str (item ? item->valuestring : NULL);
}

static int
action_event (int action)
{
    switch (action) {
        case QMS_REQ_LOGIN:
        case QMS_REQ_REGISTER: return QMS_EV_LOGIN;
        case QMS_REQ_MESSAGE:  return QMS_EV_MESSAGE;
        default:               return -1;
    }
}

void
proto_parse (const char *data, size_t len, proto_request_t *req)
{
    memset (req, 0, sizeof *req);
    req->action = -1;
    req->error_event = -1;
    if (!parse_fast (data, len, req))
        proto_parse_dom (data, len, req);
}

void
proto_parse_dom (const char *data, size_t len, proto_request_t *req)
{
    memset (req, 0, sizeof *req);
    req->action = -1;
    req->error_event = -1;
    /*  A NUL byte is never valid JSON text, and cJSON would stop at it. */
    if (memchr (data, 0, len)) {
        set_error (req, -1, "Not valid JSON.");
        return;
    }
    const char *end = NULL;
    cJSON *doc = cJSON_ParseWithLengthOpts (data, len, &end, false);
    req->doc = doc;
    /*  One JSON text per frame: only white space may follow it. */
    while (doc && end && end < data + len && strchr (" \t\r\n", *end))
        end++;
    if (!doc || (end && end != data + len)) {
        set_error (req, -1, "Not valid JSON.");
        return;
    }
    if (!cJSON_IsObject (doc)) {
        set_error (req, -1, "Expected a JSON object.");
        return;
    }
    cJSON *action = cJSON_GetObjectItemCaseSensitive (doc, "action");
    if (!action) {
        set_error (req, -1, "Field 'action' is missing.");
        return;
    }
    double value = cJSON_IsNumber (action) ? action->valuedouble : NAN;
    if (!cJSON_IsNumber (action) || !isfinite (value) || value != floor (value)) {
        set_error (req, -1, "Field 'action' must be an integer.");
        return;
    }
    if (value < 0 || value >= QMS_REQ_COUNT) {
        set_error (req, -1, "Unknown action.");
        return;
    }
    req->action = (int) value;
    strings_t strings = check_strings (data, len);
    if (strings == STRINGS_RAW_CONTROL) {
        set_error (req, -1, "Not valid JSON.");
        return;
    }
    if (strings == STRINGS_NUL_ESCAPE) {
        set_error (req, action_event (req->action), "Strings must not contain NUL characters (\\u0000).");
        return;
    }
    switch (req->action) {
        case QMS_REQ_LOGIN:
        case QMS_REQ_REGISTER:
            parse_login (doc, req);
            break;
        case QMS_REQ_MESSAGE:
            parse_message (doc, req);
            break;
        case QMS_REQ_LOGOUT:
            parse_token (doc, req);
            break;
        case QMS_REQ_AUTHORIZE:
            if (parse_token (doc, req))
                parse_receipts_flag (doc, req);
            break;
        case QMS_REQ_RECEIPT:
            parse_receipt (doc, req);
            break;
        case QMS_REQ_USER_LOOKUP:
            parse_lookup (doc, req);
            break;
    }
}

static bool
str_same (qms_str_t a, qms_str_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp (a.ptr, b.ptr, a.len) == 0);
}

bool
proto_request_same (const proto_request_t *a, const proto_request_t *b)
{
    if (a->status != b->status || a->action != b->action || a->error_event != b->error_event
    ||  (!a->error != !b->error) || (a->error && strcmp (a->error, b->error) != 0)
    ||  a->receipts != b->receipts || a->presence != b->presence
    ||  proto_receipt_count (a) != proto_receipt_count (b))
        return false;
    const qms_str_t *sa [] = { &a->name, &a->password, &a->pubkey, &a->token, &a->target,
                               &a->message, &a->client_id };
    const qms_str_t *sb [] = { &b->name, &b->password, &b->pubkey, &b->token, &b->target,
                               &b->message, &b->client_id };
    for (size_t i = 0; i < sizeof sa / sizeof sa [0]; i++)
        if (!str_same (*sa [i], *sb [i]))
            return false;
    return true;
}

void
proto_request_free (proto_request_t *req)
{
    cJSON_Delete ((cJSON *) req->doc);
    req->doc = NULL;
}

/* ------------------------------------------------------------------------ */

#define APPEND_LIT(out, lit) qms_buf_append (out, lit, sizeof (lit) - 1)

int
proto_escape (qms_buf_t *out, const char *s, size_t len)
{
    return qms_json_string (out, s, len, 0);
}

int
proto_error (qms_buf_t *out, int event, const char *text, size_t text_len)
{
    char head [48];
    int n = event >= 0 ? snprintf (head, sizeof head, "{\"valid\":false,\"event\":%d,\"error\":", event)
                       : snprintf (head, sizeof head, "{\"valid\":false,\"error\":");
    if (qms_buf_append (out, head, (size_t) n)
    ||  proto_escape (out, text, text_len)
    ||  APPEND_LIT (out, "}"))
        return -1;
    return 0;
}

int
proto_request_event (uint64_t request_type)
{
    switch (request_type) {
        case QMS_RT_ONLINE:     return QMS_EV_LOGIN;
        case QMS_RT_AUTHORIZE:  return QMS_EV_AUTHORIZATION;
        case QMS_RT_MESSAGE:    return QMS_EV_MESSAGE;
        case QMS_RT_LOOKUP:     return QMS_EV_USER_LOOKUP;
    }
    return -1;
}

/*  The words clients have always seen for what the actors report. */
static const struct {
    const char *key, *text;
} s_reasons [] = {
    { QMS_REASON_UNAVAILABLE, "Service temporarily unavailable." },
    { QMS_REASON_UNKNOWN_RECIPIENT, "Unknown recipient." },
    { QMS_REASON_MAILBOX_FULL, "The recipient's mailbox is full." },
};

const char *
proto_reason_text (qms_str_t reason)
{
    for (size_t i = 0; i < sizeof s_reasons / sizeof s_reasons [0]; i++)
        if (qms_str_eq (reason, s_reasons [i].key))
            return s_reasons [i].text;
    return "Request failed.";
}

int
proto_actor_error (qms_buf_t *out, uint64_t request_type, qms_str_t reason)
{
    const char *text = proto_reason_text (reason);
    return proto_error (out, proto_request_event (request_type), text, strlen (text));
}

int
proto_invalid_user (qms_buf_t *out)
{
    return APPEND_LIT (out, "{\"valid\":false,\"event\":3}");
}

int
proto_authorized (qms_buf_t *out)
{
    return APPEND_LIT (out, "{\"valid\":true,\"event\":0}");
}

int
proto_login_ok_head (qms_buf_t *out, qms_str_t token, qms_str_t username)
{
    if (APPEND_LIT (out, "{\"valid\":true,\"event\":1,\"token\":")
    ||  proto_escape (out, token.ptr, token.len)
    ||  APPEND_LIT (out, ",\"username\":")
    ||  proto_escape (out, username.ptr, username.len)
    ||  APPEND_LIT (out, ",\"users\":"))
        return -1;
    return 0;
}

int
proto_event_tail (qms_buf_t *out)
{
    return APPEND_LIT (out, "}");
}

int
proto_login_ok (qms_buf_t *out, qms_str_t token, qms_str_t username,
                const char *users_json, size_t users_len)
{
    if (proto_login_ok_head (out, token, username)
    ||  (users_len ? qms_buf_append (out, users_json, users_len) : APPEND_LIT (out, "[]"))
    ||  proto_event_tail (out))
        return -1;
    return 0;
}

/*  ,"timestamp":N (written by hand: snprintf was a tenth of an event). */
static int
append_timestamp (qms_buf_t *out, uint64_t time)
{
    char stamp [13 + 20];
    memcpy (stamp, ",\"timestamp\":", 13);
    char digits [20];
    size_t n = 0;
    do {
        digits [n++] = (char) ('0' + time % 10);
        time /= 10;
    } while (time);
    for (size_t i = 0; i < n; i++)
        stamp [13 + i] = digits [n - 1 - i];
    return qms_buf_append (out, stamp, 13 + n);
}

static int
append_id_time (qms_buf_t *out, qms_str_t id, uint64_t time)
{
    if (APPEND_LIT (out, ",\"id\":")
    ||  proto_escape (out, id.ptr, id.len)
    ||  append_timestamp (out, time))
        return -1;
    return 0;
}

static int
message_head (qms_buf_t *out, qms_str_t sender, qms_str_t message, qms_str_t id, uint64_t time)
{
    if (APPEND_LIT (out, "{\"valid\":true,\"event\":2,\"sender\":")
    ||  proto_escape (out, sender.ptr, sender.len)
    ||  APPEND_LIT (out, ",\"message\":")
    ||  proto_escape (out, message.ptr, message.len)
    ||  (id.len && append_id_time (out, id, time)))
        return -1;
    return 0;
}

int
proto_message_event (qms_buf_t *out, qms_str_t sender, qms_str_t message, qms_str_t id, uint64_t time)
{
    if (message_head (out, sender, message, id, time) || APPEND_LIT (out, "}"))
        return -1;
    return 0;
}

int
proto_stored_message_event (qms_buf_t *out, qms_str_t sender, qms_str_t message, qms_str_t id,
                            uint64_t time, qms_str_t sender_name, qms_str_t sender_key)
{
    if (message_head (out, sender, message, id, time)
    ||  APPEND_LIT (out, ",\"senderName\":")
    ||  proto_escape (out, sender_name.ptr, sender_name.len)
    ||  APPEND_LIT (out, ",\"senderKey\":")
    ||  proto_escape (out, sender_key.ptr, sender_key.len)
    ||  APPEND_LIT (out, ",\"stored\":true}"))
        return -1;
    return 0;
}

int
proto_ack (qms_buf_t *out, uint64_t status, qms_str_t client_id, qms_str_t id,
           uint64_t time, qms_str_t reason)
{
    static const char *names [] = { "delivered", "stored", "received", "rejected" };
    const char *name = status < 4 ? names [status] : "rejected";
    bool rejected = status >= QMS_ACK_REJECTED;
    if ((rejected ? APPEND_LIT (out, "{\"valid\":false,\"event\":5,\"id\":")
                  : APPEND_LIT (out, "{\"valid\":true,\"event\":5,\"id\":"))
    ||  proto_escape (out, client_id.ptr, client_id.len)
    ||  APPEND_LIT (out, ",\"status\":")
    ||  proto_escape (out, name, strlen (name)))
        return -1;
    if (rejected) {
        const char *text = proto_reason_text (reason);
        if (APPEND_LIT (out, ",\"error\":") || proto_escape (out, text, strlen (text)))
            return -1;
    }
    else {
        if (APPEND_LIT (out, ",\"messageId\":")
        ||  proto_escape (out, id.ptr, id.len)
        ||  append_timestamp (out, time))
            return -1;
    }
    return APPEND_LIT (out, "}");
}

int
proto_users_begin (qms_buf_t *out)
{
    return APPEND_LIT (out, "[");
}

/*  "id":…,"name":…,"publicKey":…} : the fields of a user, for lists and
    for join changes alike. */
static int
append_user (qms_buf_t *out, qms_str_t id, qms_str_t name, qms_str_t pubkey)
{
    if (APPEND_LIT (out, "\"id\":")
    ||  proto_escape (out, id.ptr, id.len)
    ||  APPEND_LIT (out, ",\"name\":")
    ||  proto_escape (out, name.ptr, name.len)
    ||  APPEND_LIT (out, ",\"publicKey\":")
    ||  proto_escape (out, pubkey.ptr, pubkey.len)
    ||  APPEND_LIT (out, "}"))
        return -1;
    return 0;
}

int
proto_users_add (qms_buf_t *out, qms_str_t id, qms_str_t name, qms_str_t pubkey)
{
    bool first = out->len > 0 && out->data [out->len - 1] == '[';
    if ((!first && APPEND_LIT (out, ","))
    ||  APPEND_LIT (out, "{")
    ||  append_user (out, id, name, pubkey))
        return -1;
    return 0;
}

int
proto_change_join (qms_buf_t *out, qms_str_t id, qms_str_t name, qms_str_t pubkey)
{
    if ((out->len && APPEND_LIT (out, ","))
    ||  APPEND_LIT (out, "{\"op\":\"join\",")
    ||  append_user (out, id, name, pubkey))
        return -1;
    return 0;
}

int
proto_change_leave (qms_buf_t *out, qms_str_t id)
{
    if ((out->len && APPEND_LIT (out, ","))
    ||  APPEND_LIT (out, "{\"op\":\"leave\",\"id\":")
    ||  proto_escape (out, id.ptr, id.len)
    ||  APPEND_LIT (out, "}"))
        return -1;
    return 0;
}

int
proto_changes_event (qms_buf_t *out, const char *changes, size_t len)
{
    if (APPEND_LIT (out, "{\"valid\":true,\"event\":6,\"changes\":[")
    ||  qms_buf_append (out, changes, len)
    ||  APPEND_LIT (out, "]}"))
        return -1;
    return 0;
}

int
proto_lookup_event (qms_buf_t *out, bool found, bool online, qms_str_t asked,
                    qms_str_t id, qms_str_t name, qms_str_t pubkey)
{
    if (!found) {
        if (APPEND_LIT (out, "{\"valid\":false,\"event\":7,\"name\":")
        ||  proto_escape (out, asked.ptr, asked.len)
        ||  APPEND_LIT (out, ",\"error\":\"No such user.\"}"))
            return -1;
        return 0;
    }
    if (APPEND_LIT (out, "{\"valid\":true,\"event\":7,\"name\":")
    ||  proto_escape (out, asked.ptr, asked.len)
    ||  APPEND_LIT (out, ",\"user\":{\"id\":")
    ||  proto_escape (out, id.ptr, id.len)
    ||  APPEND_LIT (out, ",\"name\":")
    ||  proto_escape (out, name.ptr, name.len)
    ||  APPEND_LIT (out, ",\"publicKey\":")
    ||  proto_escape (out, pubkey.ptr, pubkey.len)
    ||  (online ? APPEND_LIT (out, ",\"online\":true}}") : APPEND_LIT (out, ",\"online\":false}}")))
        return -1;
    return 0;
}

int
proto_users_end (qms_buf_t *out)
{
    return APPEND_LIT (out, "]");
}

int
proto_userlist_head (qms_buf_t *out)
{
    return APPEND_LIT (out, "{\"valid\":true,\"event\":4,\"users\":");
}

int
proto_userlist_event (qms_buf_t *out, const char *users_json, size_t users_len)
{
    if (proto_userlist_head (out)
    ||  (users_len ? qms_buf_append (out, users_json, users_len) : APPEND_LIT (out, "[]"))
    ||  proto_event_tail (out))
        return -1;
    return 0;
}

int
proto_ws_frame (qms_buf_t *out, const void *payload, size_t len)
{
    uint8_t head [10];
    size_t n = 0;
    head [n++] = 0x81;                  /* FIN, text */
    if (len < 126)
        head [n++] = (uint8_t) len;
    else
    if (len <= 0xffff) {
        head [n++] = 126;
        head [n++] = (uint8_t) (len >> 8);
        head [n++] = (uint8_t) len;
    }
    else {
        head [n++] = 127;
        for (int i = 7; i >= 0; i--)
            head [n++] = (uint8_t) ((uint64_t) len >> (8 * i));
    }
    if (qms_buf_reserve (out, n + len))
        return -1;
    qms_buf_append (out, head, n);
    qms_buf_append (out, payload, len);
    return 0;
}

/* ------------------------------------------------------------------------ */

static void
expect_json (qms_buf_t *buf, const char *expected)
{
    if (buf->len != strlen (expected) || memcmp (buf->data, expected, buf->len) != 0) {
        fprintf (stderr, "\nexpected: %s\n     got: %.*s\n", expected, (int) buf->len, buf->data);
        assert (false);
    }
    /*  And it must be JSON that cJSON reads back. */
    cJSON *doc = cJSON_ParseWithLength ((const char *) buf->data, buf->len);
    assert (doc);
    cJSON_Delete (doc);
    qms_buf_reset (buf);
}

static void
parse_str (const char *text, proto_request_t *req)
{
    proto_request_free (req);
    proto_parse (text, strlen (text), req);
}

void
proto_test (bool verbose)
{
    if (verbose)
        printf (" * proto: ");
    proto_request_t req = { 0 };

    /*  The run scanner stops at exactly the bytes a JSON string must
        escape, wherever they stand in a word; every other byte passes. */
    uint8_t run [27];           /* 27 = 16 (SSE2) + 8 (a word) + 3 (bytes); 11 = 8 + 3 */
    for (size_t size = 27; size > 0; size = size == 27 ? 11 : 0)
        for (int b = 0; b < 256; b++)
            for (size_t at = 0; at < size; at++) {
                memset (run, 'a', size);
                run [at] = (uint8_t) b;
                bool special = b < 0x20 || b == '"' || b == '\\';
                assert (qms_json_plain_end (run, run + size) == (special ? run + at : run + size));
            }

    /*  The one-pass reader of MessageRequests and cJSON's DOM agree,
        whichever of them takes the input. */
    const char *both [] = {
        "{\"action\":3,\"token\":\"t\",\"target\":\"u\",\"message\":\"hi\"}",
        " {\"message\" : \"hi\" ,\"target\":\"u\",\n\"action\":3,\"token\":\"t\",\"id\":\"c\"} \r\n",
        "{\"action\":3,\"token\":\"t\",\"target\":\"u\",\"message\":\"\",\"extra\":12,\"x\":\"y\"}",
        "{\"action\":3,\"token\":\"\",\"target\":\"u\",\"message\":\"m\"}",
        "{\"action\":3,\"token\":\"t\",\"target\":\"\",\"message\":\"m\"}",
        "{\"action\":3,\"token\":\"t\",\"message\":\"m\"}",
        "{\"action\":3,\"token\":\"t\",\"target\":\"u\"}",
        "{\"action\":3,\"token\":\"t\",\"target\":\"u\",\"message\":\"m\",\"id\":\"\"}",
        "{\"action\":3,\"target\":\"u\",\"message\":\"m\"}",
        "{\"action\":3,\"token\":\"t\",\"target\":\"u\",\"message\":\"m\",\"target\":\"v\"}",
        "{\"action\":3,\"action\":3,\"token\":\"t\",\"target\":\"u\",\"message\":\"m\"}",
        "{\"action\":03,\"token\":\"t\",\"target\":\"u\",\"message\":\"m\"}",
        "{\"action\":3.0,\"token\":\"t\",\"target\":\"u\",\"message\":\"m\"}",
        "{\"action\":3e0,\"token\":\"t\",\"target\":\"u\",\"message\":\"m\"}",
        "{\"action\":30000000000,\"token\":\"t\"}",
        "{\"action\":3,\"token\":\"t\",\"target\":\"u\",\"message\":\"m\"} x",
        "{\"action\":3,\"token\":\"t\",\"target\":\"u\",\"message\":\"m\",}",
        "{\"action\":3,\"token\":\"t\",\"target\":\"u\",\"message\":\"m\"",
        "{\"action\":3,\"token\":\"t\",\"target\":\"u\",\"message\":\"a\\\"b\"}",
        "{\"action\":3,\"token\":\"t\",\"target\":\"u\",\"message\":\"a\tb\"}",
        "{\"action\":3,\"token\":7,\"target\":\"u\",\"message\":\"m\"}",
        "{\"action\":3,\"token\":\"t\",\"target\":\"u\",\"message\":[\"m\"]}",
        "{\"action\":2,\"token\":\"t\"}", "{\"action\":3}", "{}", "{\"action\":3,}", "",
        NULL
    };
    for (int i = 0; both [i]; i++) {
        proto_request_t fast, dom;
        proto_parse (both [i], strlen (both [i]), &fast);
        proto_parse_dom (both [i], strlen (both [i]), &dom);
        if (!proto_request_same (&fast, &dom)) {
            fprintf (stderr, "\nthe two readers differ on: %s\n", both [i]);
            assert (false);
        }
        proto_request_free (&fast);
        proto_request_free (&dom);
    }
    /*  And the one-pass reader really takes the plain ones (no DOM). */
    proto_parse (both [1], strlen (both [1]), &req);
    assert (req.doc == NULL && req.status == PROTO_OK && qms_str_eq (req.client_id, "c"));
    assert (req.message.len == 2 && memcmp (req.message.ptr, "hi", 2) == 0);
    proto_parse (both [18], strlen (both [18]), &req);
    assert (req.doc != NULL && req.status == PROTO_OK);
    proto_request_free (&req);
    const char long_message [] = "{\"action\":3,\"token\":\"t\",\"target\":\"u\",\"message\":\"";
    size_t long_len = sizeof long_message - 1 + PROTO_MAX_MESSAGE + 1 + 2;
    char *too_long = malloc (long_len);
    assert (too_long);
    memcpy (too_long, long_message, sizeof long_message - 1);
    memset (too_long + sizeof long_message - 1, 'x', PROTO_MAX_MESSAGE + 1);
    memcpy (too_long + long_len - 2, "\"}", 2);
    proto_parse (too_long, long_len, &req);
    assert (req.doc == NULL && req.status == PROTO_ERROR && strstr (req.error, "too long"));
    proto_request_t dom;
    proto_parse_dom (too_long, long_len, &dom);
    assert (proto_request_same (&req, &dom));
    proto_request_free (&dom);
    free (too_long);

    parse_str ("{\"action\":1,\"name\":\"alice\",\"password\":\"pw\",\"pubKey\":\"K\"}", &req);
    assert (req.status == PROTO_OK && req.action == QMS_REQ_REGISTER);
    assert (qms_str_eq (req.name, "alice") && qms_str_eq (req.password, "pw") && qms_str_eq (req.pubkey, "K"));
    parse_str ("{\"action\":0,\"name\":\"alice\",\"password\":\"pw\"}", &req);
    assert (req.status == PROTO_OK && req.action == QMS_REQ_LOGIN && req.pubkey.len == 0);
    parse_str ("{\"action\":0,\"name\":\"alice\",\"password\":\"pw\",\"pubKey\":null}", &req);
    assert (req.status == PROTO_OK);

    /*  Malformed input: a reason and no event. */
    const char *bad [] = { "", "nope", "[1,2]", "42", "{\"action\":\"1\"}", "{\"action\":1.5}",
                           "{\"action\":-1}", "{\"action\":99}", "{\"x\":1}", "{\"action\":1e400}",
                           "{\"action\":true}", "{\"action\":0", NULL };
    for (int i = 0; bad [i]; i++) {
        parse_str (bad [i], &req);
        assert (req.status == PROTO_ERROR && req.error_event == -1 && req.error);
    }
    parse_str ("{\"action\":99}", &req);
    assert (strstr (req.error, "Unknown action"));
    /*  One JSON text per frame; raw NUL and control bytes are not JSON. */
    parse_str ("{\"action\":4,\"token\":\"t\"} garbage", &req);
    assert (req.status == PROTO_ERROR && req.error_event == -1);
    parse_str ("{\"action\":4,\"token\":\"t\"} \r\n", &req);
    assert (req.status == PROTO_OK);
    parse_str ("{\"action\":3,\"token\":\"t\",\"target\":\"u\",\"message\":\"a\x01b\"}", &req);
    assert (req.status == PROTO_ERROR && req.error_event == -1);
    proto_request_free (&req);
    const char raw_nul [] = "{\"action\":3,\"token\":\"t\",\"target\":\"u\",\"message\":\"hi\0there\"}";
    proto_parse (raw_nul, sizeof raw_nul - 1, &req);
    assert (req.status == PROTO_ERROR && strcmp (req.error, "Not valid JSON.") == 0);

    /*  Login and register field rules. */
    const char *fill [] = { "{\"action\":0}", "{\"action\":0,\"name\":\"\",\"password\":\"x\"}",
                            "{\"action\":1,\"name\":\"a\",\"password\":5}",
                            "{\"action\":1,\"name\":[\"a\"],\"password\":\"x\"}", NULL };
    for (int i = 0; fill [i]; i++) {
        parse_str (fill [i], &req);
        assert (req.status == PROTO_ERROR && req.error_event == QMS_EV_LOGIN);
        assert (strcmp (req.error, "Please fill all fields.") == 0);
    }
    parse_str ("{\"action\":1,\"name\":\"a\",\"password\":\"x\",\"pubKey\":7}", &req);
    assert (req.status == PROTO_ERROR && strstr (req.error, "pubKey"));

    /*  Token-bearing requests. */
    parse_str ("{\"action\":4,\"token\":\"abc\"}", &req);
    assert (req.status == PROTO_OK && req.action == QMS_REQ_AUTHORIZE && qms_str_eq (req.token, "abc"));
    parse_str ("{\"action\":4}", &req);
    assert (req.status == PROTO_INVALID_USER);
    parse_str ("{\"action\":2,\"token\":12}", &req);
    assert (req.status == PROTO_INVALID_USER);
    parse_str ("{\"action\":3,\"token\":\"t\",\"target\":\"u\",\"message\":\"hi\\u0000there\"}", &req);
    assert (req.status == PROTO_ERROR && req.error_event == QMS_EV_MESSAGE && strstr (req.error, "NUL"));
    parse_str ("{\"action\":1,\"name\":\"a\\u0000b\",\"password\":\"x\"}", &req);
    assert (req.status == PROTO_ERROR && req.error_event == QMS_EV_LOGIN);
    /*  An escaped backslash followed by u0000 is text, not a NUL. */
    parse_str ("{\"action\":3,\"token\":\"t\",\"target\":\"u\",\"message\":\"a\\\\u0000\"}", &req);
    assert (req.status == PROTO_OK && qms_str_eq (req.message, "a\\u0000"));
    assert (qms_str_eq (req.target, "u"));
    parse_str ("{\"action\":3,\"token\":\"t\",\"target\":\"u\",\"message\":5}", &req);
    assert (req.status == PROTO_ERROR && req.error_event == QMS_EV_MESSAGE && strstr (req.error, "message"));
    parse_str ("{\"action\":3,\"token\":\"t\",\"target\":1,\"message\":\"m\"}", &req);
    assert (req.status == PROTO_ERROR && req.error_event == QMS_EV_MESSAGE && strstr (req.error, "target"));
    parse_str ("{\"action\":3,\"target\":\"u\",\"message\":\"m\"}", &req);
    assert (req.status == PROTO_INVALID_USER);
    /*  Extensions: message ids, receipts. */
    parse_str ("{\"action\":3,\"token\":\"t\",\"target\":\"u\",\"message\":\"m\",\"id\":\"c-1\"}", &req);
    assert (req.status == PROTO_OK && qms_str_eq (req.client_id, "c-1"));
    parse_str ("{\"action\":3,\"token\":\"t\",\"target\":\"u\",\"message\":\"m\",\"id\":7}", &req);
    assert (req.status == PROTO_ERROR && req.error_event == QMS_EV_MESSAGE && strstr (req.error, "'id'"));
    parse_str ("{\"action\":3,\"token\":\"t\",\"target\":\"u\",\"message\":\"m\",\"id\":\"\"}", &req);
    assert (req.status == PROTO_ERROR);
    parse_str ("{\"action\":0,\"name\":\"a\",\"password\":\"p\",\"receipts\":true}", &req);
    assert (req.status == PROTO_OK && req.receipts);
    parse_str ("{\"action\":4,\"token\":\"t\",\"receipts\":1}", &req);
    assert (req.status == PROTO_OK && !req.receipts && req.presence == PROTO_PRESENCE_FULL);
    parse_str ("{\"action\":4,\"token\":\"t\",\"presence\":\"delta\"}", &req);
    assert (req.status == PROTO_OK && req.presence == PROTO_PRESENCE_DELTA);
    parse_str ("{\"action\":1,\"name\":\"a\",\"password\":\"p\",\"presence\":\"none\"}", &req);
    assert (req.status == PROTO_OK && req.presence == PROTO_PRESENCE_NONE);
    parse_str ("{\"action\":0,\"name\":\"a\",\"password\":\"p\",\"presence\":\"some\"}", &req);
    assert (req.status == PROTO_ERROR && req.error_event == QMS_EV_LOGIN && strstr (req.error, "presence"));
    parse_str ("{\"action\":4,\"token\":\"t\",\"presence\":3}", &req);
    assert (req.status == PROTO_ERROR && req.error_event == QMS_EV_AUTHORIZATION);
    parse_str ("{\"action\":5,\"token\":\"t\",\"ids\":[\"a\",\"bb\"]}", &req);
    assert (req.status == PROTO_OK && req.action == QMS_REQ_RECEIPT && proto_receipt_count (&req) == 2);
    assert (qms_str_eq (proto_receipt_id (&req, 1), "bb"));
    const char *bad_receipts [] = { "{\"action\":5,\"token\":\"t\"}", "{\"action\":5,\"token\":\"t\",\"ids\":[]}",
                                    "{\"action\":5,\"token\":\"t\",\"ids\":[1]}",
                                    "{\"action\":5,\"token\":\"t\",\"ids\":\"a\"}", NULL };
    for (int i = 0; bad_receipts [i]; i++) {
        parse_str (bad_receipts [i], &req);
        assert (req.status == PROTO_ERROR && req.error_event == -1);
    }
    parse_str ("{\"action\":5,\"ids\":[\"a\"]}", &req);
    assert (req.status == PROTO_INVALID_USER);
    parse_str ("{\"action\":6,\"token\":\"t\",\"names\":[\"bob\",\"Carol\"]}", &req);
    assert (req.status == PROTO_OK && req.action == QMS_REQ_USER_LOOKUP && proto_receipt_count (&req) == 2);
    assert (qms_str_eq (proto_receipt_id (&req, 1), "Carol"));
    parse_str ("{\"action\":6,\"token\":\"t\",\"names\":[]}", &req);
    assert (req.status == PROTO_ERROR && req.error_event == QMS_EV_USER_LOOKUP);

    /*  Duplicate keys: the first one counts. */
    parse_str ("{\"action\":4,\"action\":0,\"token\":\"t\"}", &req);
    assert (req.status == PROTO_OK && req.action == QMS_REQ_AUTHORIZE);

    /*  Message size limit, exactly at and one past it. */
    static char big [PROTO_MAX_MESSAGE + 8192];
    for (int extra = 0; extra <= 1; extra++) {
        int n = snprintf (big, sizeof big, "{\"action\":3,\"token\":\"t\",\"target\":\"u\",\"message\":\"");
        memset (big + n, 'x', PROTO_MAX_MESSAGE + (size_t) extra);
        n += PROTO_MAX_MESSAGE + extra;
        strcpy (big + n, "\"}");
        parse_str (big, &req);
        assert (req.status == (extra ? PROTO_ERROR : PROTO_OK));
    }
    /*  Deep nesting is refused by the parser, not a stack overflow. */
    static char deep [20010];
    memset (deep, '[', 20000);
    deep [20000] = 0;
    parse_str (deep, &req);
    assert (req.status == PROTO_ERROR);
    proto_request_free (&req);

    /*  Output, byte for byte. */
    qms_buf_t out;
    qms_buf_init (&out);
    proto_escape (&out, "a\"b\\c\n\x01\xc3\xa9/", 10);
    expect_json (&out, "\"a\\\"b\\\\c\\n\\u0001\xc3\xa9/\"");
    proto_error (&out, -1, "Not valid JSON.", 15);
    expect_json (&out, "{\"valid\":false,\"error\":\"Not valid JSON.\"}");
    proto_error (&out, 1, "Please fill all fields.", 23);
    expect_json (&out, "{\"valid\":false,\"event\":1,\"error\":\"Please fill all fields.\"}");
    proto_invalid_user (&out);
    expect_json (&out, "{\"valid\":false,\"event\":3}");
    proto_authorized (&out);
    expect_json (&out, "{\"valid\":true,\"event\":0}");
    proto_message_event (&out, qms_str ("id1"), qms_str ("he said \"hi\""), qms_str (NULL), 0);
    expect_json (&out, "{\"valid\":true,\"event\":2,\"sender\":\"id1\",\"message\":\"he said \\\"hi\\\"\"}");
    proto_message_event (&out, qms_str ("id1"), qms_str ("m"), qms_str ("M1"), 1764000000123ull);
    expect_json (&out, "{\"valid\":true,\"event\":2,\"sender\":\"id1\",\"message\":\"m\",\"id\":\"M1\","
                       "\"timestamp\":1764000000123}");
    proto_stored_message_event (&out, qms_str ("id1"), qms_str ("m"), qms_str ("M1"), 5,
                                qms_str ("Al"), qms_str ("K"));
    expect_json (&out, "{\"valid\":true,\"event\":2,\"sender\":\"id1\",\"message\":\"m\",\"id\":\"M1\","
                       "\"timestamp\":5,\"senderName\":\"Al\",\"senderKey\":\"K\",\"stored\":true}");
    proto_ack (&out, QMS_ACK_STORED, qms_str ("c1"), qms_str ("M1"), 7, qms_str (NULL));
    expect_json (&out, "{\"valid\":true,\"event\":5,\"id\":\"c1\",\"status\":\"stored\",\"messageId\":\"M1\","
                       "\"timestamp\":7}");
    /*  The largest time there is still makes a whole object. */
    proto_message_event (&out, qms_str ("s"), qms_str ("m"), qms_str ("M"), UINT64_MAX);
    expect_json (&out, "{\"valid\":true,\"event\":2,\"sender\":\"s\",\"message\":\"m\",\"id\":\"M\","
                       "\"timestamp\":18446744073709551615}");
    proto_ack (&out, QMS_ACK_DELIVERED, qms_str ("c0"), qms_str ("M0"), 0, qms_str (NULL));
    expect_json (&out, "{\"valid\":true,\"event\":5,\"id\":\"c0\",\"status\":\"delivered\",\"messageId\":\"M0\","
                       "\"timestamp\":0}");
    proto_ack (&out, QMS_ACK_REJECTED, qms_str ("c2"), qms_str (NULL), 7,
               qms_str (QMS_REASON_UNKNOWN_RECIPIENT));
    expect_json (&out, "{\"valid\":false,\"event\":5,\"id\":\"c2\",\"status\":\"rejected\","
                       "\"error\":\"Unknown recipient.\"}");
    proto_ack (&out, QMS_ACK_REJECTED, qms_str ("c3"), qms_str (NULL), 7, qms_str ("<b>raw</b>"));
    expect_json (&out, "{\"valid\":false,\"event\":5,\"id\":\"c3\",\"status\":\"rejected\","
                       "\"error\":\"Request failed.\"}");
    /*  An actor's error: the request names the event, the key the words. */
    proto_actor_error (&out, QMS_RT_MESSAGE, qms_str (QMS_REASON_MAILBOX_FULL));
    expect_json (&out, "{\"valid\":false,\"event\":2,\"error\":\"The recipient's mailbox is full.\"}");
    proto_actor_error (&out, QMS_RT_ONLINE, qms_str (QMS_REASON_UNAVAILABLE));
    expect_json (&out, "{\"valid\":false,\"event\":1,\"error\":\"Service temporarily unavailable.\"}");
    proto_actor_error (&out, QMS_RT_AUTHORIZE, qms_str (QMS_REASON_UNAVAILABLE));
    expect_json (&out, "{\"valid\":false,\"event\":0,\"error\":\"Service temporarily unavailable.\"}");
    proto_actor_error (&out, QMS_RT_CLOSED, qms_str ("nonsense"));
    expect_json (&out, "{\"valid\":false,\"error\":\"Request failed.\"}");

    qms_buf_t users;
    qms_buf_init (&users);
    proto_users_begin (&users);
    proto_users_end (&users);
    expect_json (&users, "[]");
    proto_users_begin (&users);
    proto_users_add (&users, qms_str ("1"), qms_str ("al\"ice"), qms_str ("K1"));
    proto_users_add (&users, qms_str ("2"), qms_str ("bob"), qms_str (""));
    proto_users_end (&users);
    proto_userlist_event (&out, (const char *) users.data, users.len);
    expect_json (&out, "{\"valid\":true,\"event\":4,\"users\":[{\"id\":\"1\",\"name\":\"al\\\"ice\",\"publicKey\":\"K1\"},"
                       "{\"id\":\"2\",\"name\":\"bob\",\"publicKey\":\"\"}]}");
    qms_buf_t changes;
    qms_buf_init (&changes);
    proto_change_join (&changes, qms_str ("3"), qms_str ("cy"), qms_str ("K3"));
    proto_change_leave (&changes, qms_str ("1"));
    proto_changes_event (&out, (const char *) changes.data, changes.len);
    expect_json (&out, "{\"valid\":true,\"event\":6,\"changes\":[{\"op\":\"join\",\"id\":\"3\",\"name\":\"cy\","
                       "\"publicKey\":\"K3\"},{\"op\":\"leave\",\"id\":\"1\"}]}");
    qms_buf_free (&changes);
    proto_lookup_event (&out, true, false, qms_str ("BOB"), qms_str ("2"), qms_str ("bob"), qms_str ("K"));
    expect_json (&out, "{\"valid\":true,\"event\":7,\"name\":\"BOB\",\"user\":{\"id\":\"2\",\"name\":\"bob\","
                       "\"publicKey\":\"K\",\"online\":false}}");
    proto_lookup_event (&out, false, false, qms_str ("zed"), qms_str (NULL), qms_str (NULL), qms_str (NULL));
    expect_json (&out, "{\"valid\":false,\"event\":7,\"name\":\"zed\",\"error\":\"No such user.\"}");
    proto_login_ok (&out, qms_str ("T"), qms_str ("Alice"), (const char *) users.data, users.len);
    expect_json (&out, "{\"valid\":true,\"event\":1,\"token\":\"T\",\"username\":\"Alice\",\"users\":"
                       "[{\"id\":\"1\",\"name\":\"al\\\"ice\",\"publicKey\":\"K1\"},"
                       "{\"id\":\"2\",\"name\":\"bob\",\"publicKey\":\"\"}]}");
    qms_buf_free (&users);

    /*  Frames: the three length encodings. */
    proto_ws_frame (&out, "hi", 2);
    assert (out.len == 4 && out.data [0] == 0x81 && out.data [1] == 2 && memcmp (out.data + 2, "hi", 2) == 0);
    qms_buf_reset (&out);
    proto_ws_frame (&out, big, 300);
    assert (out.len == 304 && out.data [1] == 126 && out.data [2] == 1 && out.data [3] == 44);
    qms_buf_reset (&out);
    proto_ws_frame (&out, big, 70000);
    assert (out.len == 70010 && out.data [1] == 127 && out.data [7] == 1 && out.data [8] == 0x11 && out.data [9] == 0x70);
    qms_buf_free (&out);
    if (verbose)
        printf ("OK\n");
}
