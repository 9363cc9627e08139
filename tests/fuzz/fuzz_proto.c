/*  fuzz_proto.c - libFuzzer harness for the client JSON (gateway/proto.c).

    Each input is one WebSocket text frame as a client could send it.  The
    harness checks that:
    - proto_parse() says what proto_parse_dom() (cJSON only) says;
    - proto_parse() gives a consistent answer: a known status, an error
      text with every error, and for a request to carry out the limits of
      docs/PROTOCOL.md on every field;
    - a string it accepts is the whole JSON string: a raw NUL byte inside a
      string literal must not let a request through cut short (cJSON keeps
      strings NUL-terminated without a length);
    - everything it parsed, written back with the proto_* encoders, is JSON
      that cJSON reads back to the same strings, as are the WebSocket frames
      around it;
    - proto_escape() of the raw input bytes reads back as the same bytes.

    QMS_FUZZ_SKIP in the environment names known, reported bugs to step
    around during long runs that look for other problems (comma-separated):
    "raw-nul" turns the raw-NUL check off, "timestamp" keeps timestamps
    below 10^13 (milliseconds until the year 2286) instead of any u64.
*/
#include "fuzz_common.h"
#include "proto.h"
#include "enums.h"
#include "qms_password.h"
#include "qms_util.h"

#include <cJSON.h>

static bool s_skip_raw_nul;
static bool s_skip_timestamp;

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
    (void) argc;
    (void) argv;
    const char *skip = getenv ("QMS_FUZZ_SKIP");
    s_skip_raw_nul = skip && strstr (skip, "raw-nul");
    s_skip_timestamp = skip && strstr (skip, "timestamp");
    return 0;
}

/*  A field string: NULL only when empty, never holding a NUL (the one-pass
    reader's strings point into the frame, so they need not end in one). */
static void
check_str (qms_str_t s)
{
    if (!s.ptr)
        FUZZ_CHECK (s.len == 0);
    else
        FUZZ_CHECK (memchr (s.ptr, 0, s.len) == NULL);
}

/*  True if a raw NUL byte lies inside a string literal of text, scanning
    the way a JSON reader does (escapes skip the next byte). */
static bool
raw_nul_in_string (const uint8_t *text, size_t len)
{
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        uint8_t c = text [i];
        if (!in_string) {
            if (c == '"')
                in_string = true;
        }
        else
        if (c == 0)
            return true;
        else
        if (c == '"')
            in_string = false;
        else
        if (c == '\\')
            i++;
    }
    return false;
}

static void
check_request (const uint8_t *data, size_t size, const proto_request_t *req)
{
    FUZZ_CHECK (req->status == PROTO_OK || req->status == PROTO_ERROR
             || req->status == PROTO_INVALID_USER);
    check_str (req->name);
    check_str (req->password);
    check_str (req->pubkey);
    check_str (req->token);
    check_str (req->target);
    check_str (req->message);
    check_str (req->client_id);

    /*  Our own reading of the same bytes: what cJSON cannot parse must be
        answered "Not valid JSON." with no event. */
    const char *end = NULL;
    cJSON *doc = cJSON_ParseWithLengthOpts ((const char *) data, size, &end, false);
    if (!doc)
        FUZZ_CHECK (req->status == PROTO_ERROR && req->error_event == -1);

    if (req->status == PROTO_ERROR) {
        FUZZ_CHECK (req->error && req->error [0]);
        FUZZ_CHECK (req->error_event >= -1 && req->error_event < QMS_EV_COUNT);
    }
    FUZZ_CHECK (req->presence == PROTO_PRESENCE_FULL || req->presence == PROTO_PRESENCE_DELTA
             || req->presence == PROTO_PRESENCE_NONE);
    if (req->status == PROTO_OK) {
        FUZZ_CHECK (doc && cJSON_IsObject (doc));
        FUZZ_CHECK (req->action >= 0 && req->action < QMS_REQ_COUNT);
        cJSON *action = cJSON_GetObjectItemCaseSensitive (doc, "action");
        FUZZ_CHECK (cJSON_IsNumber (action) && action->valuedouble == (double) req->action);
        switch (req->action) {
            case QMS_REQ_LOGIN:
            case QMS_REQ_REGISTER:
                FUZZ_CHECK (req->name.len >= 1 && req->name.len <= QMS_NAME_MAX_BYTES);
                FUZZ_CHECK (req->password.len >= 1 && req->password.len <= QMS_PASSWORD_MAX);
                FUZZ_CHECK (req->pubkey.len <= PROTO_MAX_PUBKEY);
                break;
            case QMS_REQ_MESSAGE:
                FUZZ_CHECK (req->token.len >= 1 && req->token.len <= PROTO_MAX_TOKEN);
                FUZZ_CHECK (req->target.len >= 1 && req->target.len <= PROTO_MAX_TARGET);
                FUZZ_CHECK (req->message.len <= PROTO_MAX_MESSAGE);
                FUZZ_CHECK (req->client_id.len <= PROTO_MAX_CLIENT_ID);
                break;
            case QMS_REQ_RECEIPT: {
                FUZZ_CHECK (req->token.len >= 1 && req->token.len <= PROTO_MAX_TOKEN);
                size_t count = proto_receipt_count (req);
                FUZZ_CHECK (count >= 1 && count <= PROTO_MAX_RECEIPTS);
                for (size_t i = 0; i < count; i++) {
                    qms_str_t id = proto_receipt_id (req, i);
                    check_str (id);
                    FUZZ_CHECK (id.len >= 1 && id.len <= PROTO_MAX_CLIENT_ID);
                }
                break;
            }
            case QMS_REQ_LOGOUT:
            case QMS_REQ_AUTHORIZE:
                FUZZ_CHECK (req->token.len >= 1 && req->token.len <= PROTO_MAX_TOKEN);
                break;
            case QMS_REQ_USER_LOOKUP: {
                FUZZ_CHECK (req->token.len >= 1 && req->token.len <= PROTO_MAX_TOKEN);
                size_t count = proto_receipt_count (req);
                FUZZ_CHECK (count >= 1 && count <= 64);
                for (size_t i = 0; i < count; i++) {
                    qms_str_t name = proto_receipt_id (req, i);
                    check_str (name);
                    FUZZ_CHECK (name.len >= 1 && name.len <= 256);
                }
                break;
            }
            case QMS_REQ_GROUP_CREATE:
            case QMS_REQ_GROUP_UPDATE:
            case QMS_REQ_GROUP_LIST:
            case QMS_REQ_GROUP_MESSAGE: {
                FUZZ_CHECK (req->token.len >= 1 && req->token.len <= PROTO_MAX_TOKEN);
                FUZZ_CHECK (req->client_id.len <= PROTO_MAX_CLIENT_ID);
                check_str (req->group);
                bool grouped = req->action == QMS_REQ_GROUP_UPDATE || req->action == QMS_REQ_GROUP_MESSAGE;
                FUZZ_CHECK (grouped ? req->group.len >= 1 && req->group.len <= PROTO_MAX_GROUP_ID
                                    : req->group.len == 0);
                if (req->action == QMS_REQ_GROUP_MESSAGE)
                    FUZZ_CHECK (req->message.len <= PROTO_MAX_MESSAGE);
                /*  The member lines hold no control byte but the newlines
                    between ids, and no id twice. */
                qms_buf_t lines;
                qms_buf_init (&lines);
                FUZZ_CHECK (proto_members_lines (req, &lines) == 0);
                FUZZ_CHECK (!req->members || cJSON_GetArraySize (req->members) <= proto_limits_default.max_members);
                for (size_t i = 0; i < lines.len; i++)
                    FUZZ_CHECK (lines.data [i] >= 0x20 || lines.data [i] == '\n');
                FUZZ_CHECK (lines.len == 0 || (lines.data [0] != '\n' && lines.data [lines.len - 1] != '\n'));
                qms_buf_free (&lines);
                break;
            }
            default:
                break;          /* later extensions: their own rules */
        }
        /*  The known bug this guards against: {"message":"hi<NUL>there"}
            was carried out as the message "hi". */
        if (!s_skip_raw_nul && end)
            FUZZ_CHECK (!raw_nul_in_string (data, (size_t) (end - (const char *) data)));
    }
    cJSON_Delete (doc);
}

/*  A cJSON string item equal to s, byte for byte. */
static void
check_item (cJSON *obj, const char *key, qms_str_t s)
{
    cJSON *item = cJSON_GetObjectItemCaseSensitive (obj, key);
    FUZZ_CHECK (cJSON_IsString (item) && item->valuestring);
    FUZZ_CHECK (strlen (item->valuestring) == s.len);
    FUZZ_CHECK (s.len == 0 || memcmp (item->valuestring, s.ptr, s.len) == 0);
}

static void
check_number (cJSON *obj, const char *key, int value)
{
    cJSON *item = cJSON_GetObjectItemCaseSensitive (obj, key);
    FUZZ_CHECK (cJSON_IsNumber (item) && item->valuedouble == (double) value);
}

static void
check_valid (cJSON *obj, bool valid)
{
    cJSON *item = cJSON_GetObjectItemCaseSensitive (obj, "valid");
    FUZZ_CHECK (valid ? cJSON_IsTrue (item) : cJSON_IsFalse (item));
}

/*  out must hold exactly one JSON text, compact, with every control byte
    escaped; its WebSocket frame must carry it unchanged.  Returns the
    parsed document (caller deletes) and empties out. */
static cJSON *
take_json (qms_buf_t *out)
{
    FUZZ_CHECK (out->len > 0);
    for (size_t i = 0; i < out->len; i++)
        FUZZ_CHECK (out->data [i] >= 0x20);
    const char *end = NULL;
    cJSON *doc = cJSON_ParseWithLengthOpts ((const char *) out->data, out->len, &end, false);
    FUZZ_CHECK (doc);
    FUZZ_CHECK (end == (const char *) out->data + out->len);

    qms_buf_t frame;
    qms_buf_init (&frame);
    FUZZ_CHECK (proto_ws_frame (&frame, out->data, out->len) == 0);
    FUZZ_CHECK (frame.len >= 2 && frame.data [0] == 0x81);
    size_t head = 2;
    uint64_t len = frame.data [1];
    FUZZ_CHECK ((len & 0x80) == 0);             /* server frames are never masked */
    if (len == 126) {
        FUZZ_CHECK (frame.len >= 4);
        len = (uint64_t) frame.data [2] << 8 | frame.data [3];
        head = 4;
        FUZZ_CHECK (len >= 126);                /* shortest form only */
    }
    else
    if (len == 127) {
        FUZZ_CHECK (frame.len >= 10);
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | frame.data [2 + i];
        head = 10;
        FUZZ_CHECK (len > 0xffff);
    }
    FUZZ_CHECK (len == out->len && frame.len == head + len);
    FUZZ_CHECK (memcmp (frame.data + head, out->data, out->len) == 0);
    qms_buf_free (&frame);
    qms_buf_reset (out);
    return doc;
}

static void
check_user (cJSON *user, qms_str_t id, qms_str_t name, qms_str_t pubkey)
{
    FUZZ_CHECK (cJSON_IsObject (user));
    check_item (user, "id", id);
    check_item (user, "name", name);
    check_item (user, "publicKey", pubkey);
}

static void
check_time (cJSON *obj, uint64_t time)
{
    cJSON *item = cJSON_GetObjectItemCaseSensitive (obj, "timestamp");
    FUZZ_CHECK (cJSON_IsNumber (item) && item->valuedouble == (double) time);
}

/*  A MessageEvent: id and timestamp only when there is an id (ext). */
static void
check_message (cJSON *doc, qms_str_t sender, qms_str_t message, qms_str_t id, uint64_t time)
{
    check_valid (doc, true);
    check_number (doc, "event", QMS_EV_MESSAGE);
    check_item (doc, "sender", sender);
    check_item (doc, "message", message);
    if (id.len) {
        check_item (doc, "id", id);
        check_time (doc, time);
    }
    else
        FUZZ_CHECK (!cJSON_GetObjectItemCaseSensitive (doc, "id")
                 && !cJSON_GetObjectItemCaseSensitive (doc, "timestamp"));
}

/*  Everything parsed goes back out through every encoder it could reach
    in the server, and must read back the same. */
static void
reencode (const proto_request_t *req)
{
    qms_buf_t out, users;
    qms_buf_init (&out);
    qms_buf_init (&users);
    cJSON *doc;

    if (req->status == PROTO_ERROR) {
        FUZZ_CHECK (proto_error (&out, req->error_event, req->error, strlen (req->error)) == 0);
        doc = take_json (&out);
        check_valid (doc, false);
        check_item (doc, "error", qms_str (req->error));
        if (req->error_event >= 0)
            check_number (doc, "event", req->error_event);
        else
            FUZZ_CHECK (!cJSON_GetObjectItemCaseSensitive (doc, "event"));
        cJSON_Delete (doc);
    }
    else
    if (req->status == PROTO_INVALID_USER) {
        FUZZ_CHECK (proto_invalid_user (&out) == 0);
        doc = take_json (&out);
        check_valid (doc, false);
        check_number (doc, "event", QMS_EV_INVALID_USER);
        cJSON_Delete (doc);
    }
    else {
        qms_str_t name = qms_strn (req->name.ptr, req->name.len);
        qms_str_t password = qms_strn (req->password.ptr, req->password.len);
        qms_str_t pubkey = qms_strn (req->pubkey.ptr, req->pubkey.len);
        qms_str_t token = qms_strn (req->token.ptr, req->token.len);
        qms_str_t target = qms_strn (req->target.ptr, req->target.len);
        qms_str_t message = qms_strn (req->message.ptr, req->message.len);
        qms_str_t client_id = qms_strn (req->client_id.ptr, req->client_id.len);
        /*  A time from the input, so every size of number is written. */
        uint64_t time = (uint64_t) message.len * 0x9e3779b97f4a7c15ull ^ token.len;
        if (s_skip_timestamp)
            time %= 10000000000000ull;

        FUZZ_CHECK (proto_users_begin (&users) == 0);
        FUZZ_CHECK (proto_users_add (&users, name, password, pubkey) == 0);
        FUZZ_CHECK (proto_users_add (&users, token, target, message) == 0);
        FUZZ_CHECK (proto_users_end (&users) == 0);

        FUZZ_CHECK (proto_userlist_event (&out, (const char *) users.data, users.len) == 0);
        doc = take_json (&out);
        check_valid (doc, true);
        check_number (doc, "event", QMS_EV_USERLIST);
        cJSON *list = cJSON_GetObjectItemCaseSensitive (doc, "users");
        FUZZ_CHECK (cJSON_IsArray (list) && cJSON_GetArraySize (list) == 2);
        check_user (cJSON_GetArrayItem (list, 0), name, password, pubkey);
        check_user (cJSON_GetArrayItem (list, 1), token, target, message);
        cJSON_Delete (doc);

        FUZZ_CHECK (proto_login_ok (&out, token, name, (const char *) users.data, users.len) == 0);
        doc = take_json (&out);
        check_valid (doc, true);
        check_number (doc, "event", QMS_EV_LOGIN);
        check_item (doc, "token", token);
        check_item (doc, "username", name);
        list = cJSON_GetObjectItemCaseSensitive (doc, "users");
        FUZZ_CHECK (cJSON_IsArray (list) && cJSON_GetArraySize (list) == 2);
        cJSON_Delete (doc);

        FUZZ_CHECK (proto_login_ok (&out, password, pubkey, NULL, 0) == 0);
        doc = take_json (&out);
        list = cJSON_GetObjectItemCaseSensitive (doc, "users");
        FUZZ_CHECK (cJSON_IsArray (list) && cJSON_GetArraySize (list) == 0);
        cJSON_Delete (doc);

        FUZZ_CHECK (proto_message_event (&out, target, message, client_id, time) == 0);
        doc = take_json (&out);
        check_message (doc, target, message, client_id, time);
        FUZZ_CHECK (!cJSON_GetObjectItemCaseSensitive (doc, "stored"));
        cJSON_Delete (doc);

        FUZZ_CHECK (proto_stored_message_event (&out, target, message, token, time, name, pubkey) == 0);
        doc = take_json (&out);
        check_message (doc, target, message, token, time);
        check_item (doc, "senderName", name);
        check_item (doc, "senderKey", pubkey);
        FUZZ_CHECK (cJSON_IsTrue (cJSON_GetObjectItemCaseSensitive (doc, "stored")));
        cJSON_Delete (doc);

        for (uint64_t status = 0; status <= QMS_ACK_REJECTED + 1; status++) {
            FUZZ_CHECK (proto_ack (&out, status, client_id, token, time, message) == 0);
            doc = take_json (&out);
            bool rejected = status >= QMS_ACK_REJECTED;
            check_valid (doc, !rejected);
            check_number (doc, "event", QMS_EV_MESSAGE_ACK);
            check_item (doc, "id", client_id);
            cJSON *st = cJSON_GetObjectItemCaseSensitive (doc, "status");
            FUZZ_CHECK (cJSON_IsString (st) && st->valuestring);
            if (rejected) {
                FUZZ_CHECK (strcmp (st->valuestring, "rejected") == 0);
                /*  the reason is a key (QMS_REASON_*): the client reads its words */
                check_item (doc, "error", qms_str (proto_reason_text (message)));
            }
            else {
                check_item (doc, "messageId", token);
                check_time (doc, time);
            }
            cJSON_Delete (doc);
        }

        /*  Presence changes (ext): a join and a leave. */
        qms_buf_t changes;
        qms_buf_init (&changes);
        FUZZ_CHECK (proto_change_join (&changes, name, password, pubkey) == 0);
        FUZZ_CHECK (proto_change_leave (&changes, token) == 0);
        FUZZ_CHECK (proto_changes_event (&out, (const char *) changes.data, changes.len) == 0);
        qms_buf_free (&changes);
        doc = take_json (&out);
        check_valid (doc, true);
        check_number (doc, "event", QMS_EV_USERLIST_DELTA);
        list = cJSON_GetObjectItemCaseSensitive (doc, "changes");
        FUZZ_CHECK (cJSON_IsArray (list) && cJSON_GetArraySize (list) == 2);
        cJSON *join = cJSON_GetArrayItem (list, 0), *leave = cJSON_GetArrayItem (list, 1);
        check_item (join, "op", qms_str ("join"));
        check_user (join, name, password, pubkey);
        check_item (leave, "op", qms_str ("leave"));
        check_item (leave, "id", token);
        cJSON_Delete (doc);

        /*  Lookup answers (ext): not found, found offline, found online. */
        for (int kind = 0; kind < 3; kind++) {
            FUZZ_CHECK (proto_lookup_event (&out, kind > 0, kind > 1, name, target, message, pubkey) == 0);
            doc = take_json (&out);
            check_valid (doc, kind > 0);
            check_number (doc, "event", QMS_EV_USER_LOOKUP);
            check_item (doc, "name", name);
            cJSON *user = cJSON_GetObjectItemCaseSensitive (doc, "user");
            if (kind == 0)
                FUZZ_CHECK (!user && cJSON_IsString (cJSON_GetObjectItemCaseSensitive (doc, "error")));
            else {
                check_user (user, target, message, pubkey);
                cJSON *online = cJSON_GetObjectItemCaseSensitive (user, "online");
                FUZZ_CHECK (kind > 1 ? cJSON_IsTrue (online) : cJSON_IsFalse (online));
            }
            cJSON_Delete (doc);
        }

        FUZZ_CHECK (proto_authorized (&out) == 0);
        doc = take_json (&out);
        check_valid (doc, true);
        check_number (doc, "event", QMS_EV_AUTHORIZATION);
        cJSON_Delete (doc);
    }
    qms_buf_free (&users);
    qms_buf_free (&out);
}

/*  Any bytes at all (invalid UTF-8, controls, quotes) escaped and read back
    give the same bytes, up to the first NUL (a C string cannot hold more;
    the NUL itself must come out escaped). */
static void
check_escape (const uint8_t *data, size_t size)
{
    qms_buf_t out;
    qms_buf_init (&out);
    FUZZ_CHECK (qms_buf_append (&out, "[", 1) == 0);
    FUZZ_CHECK (proto_escape (&out, (const char *) data, size) == 0);
    FUZZ_CHECK (out.len >= 3 && out.len <= 1 + size * 6 + 2);
    FUZZ_CHECK (out.data [1] == '"' && out.data [out.len - 1] == '"');
    FUZZ_CHECK (qms_buf_append (&out, "]", 1) == 0);
    cJSON *doc = take_json (&out);
    FUZZ_CHECK (cJSON_IsArray (doc) && cJSON_GetArraySize (doc) == 1);
    cJSON *item = cJSON_GetArrayItem (doc, 0);
    FUZZ_CHECK (cJSON_IsString (item) && item->valuestring);
    size_t until_nul = strnlen ((const char *) data, size);
    FUZZ_CHECK (strlen (item->valuestring) == until_nul);
    FUZZ_CHECK (memcmp (item->valuestring, data, until_nul) == 0);
    cJSON_Delete (doc);
    qms_buf_free (&out);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    proto_request_t req;
    proto_parse ((const char *) data, size, &req);
    check_request (data, size, &req);
    /*  The one-pass reader that proto_parse tries first for MessageRequests
        must say exactly what cJSON's DOM says. */
    proto_request_t dom;
    proto_parse_dom ((const char *) data, size, &dom);
    FUZZ_CHECK (proto_request_same (&req, &dom));
    proto_request_free (&dom);
    reencode (&req);
    proto_request_free (&req);
    FUZZ_CHECK (req.doc == NULL);
    check_escape (data, size);
    return 0;
}
