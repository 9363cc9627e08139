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

/* ------------------------------------------------------------------------ */
/*  ext: groups.  Each request is checked whole here, against the limits the
    gateway runs with; the router checks what only it knows (membership,
    rights, the limits of the group as it is). */

static const char k_group_id_error [] = "Field 'id' must be a string of 1 to 64 characters.";
static const char k_member_id_error [] =
    "Field 'members' must hold user ids of 1 to 64 bytes without control characters.";

const proto_limits_t proto_limits_default = {
    1024, 64,
    "Field 'name' must be a string of 1 to 64 characters without control characters.",
    "Field 'members' must be an array of 1 to 1024 user ids."
};

void
proto_limits_init (proto_limits_t *limits, int max_members, int name_max)
{
    limits->max_members = max_members;
    limits->name_max = name_max;
    snprintf (limits->name_error, sizeof limits->name_error,
              "Field 'name' must be a string of 1 to %d characters without control characters.", name_max);
    snprintf (limits->members_error, sizeof limits->members_error,
              "Field 'members' must be an array of 1 to %d user ids.", max_members);
}

/*  A C0 or C1 control character, or DEL. */
static bool
is_control (uint32_t cp)
{
    return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f);
}

/*  1 to max characters of UTF-8 (code points), none a control character;
    max_bytes bounds the bytes too (0: no bound). */
static bool
text_ok (qms_str_t text, size_t max, size_t max_bytes)
{
    if (text.len == 0 || (max_bytes && text.len > max_bytes))
        return false;
    const uint8_t *p = (const uint8_t *) text.ptr, *end = p + text.len;
    size_t count = 0;
    while (p < end) {
        uint32_t cp;
        size_t n = qms_utf8_sequence (p, (size_t) (end - p), &cp);
        if (n == 0 || is_control (cp) || ++count > max)
            return false;
        p += n;
    }
    return true;
}

/*  The request's "id", read before any other field so that every error
    can carry it back; an "id" that is there but not 1-64 characters is
    the error (after the fields that come first) and is not echoed. */
static bool
read_group_id (cJSON *doc, proto_request_t *req)
{
    int rc = get_string (doc, "id", &req->client_id);
    if (rc == 1 && req->client_id.len >= 1 && req->client_id.len <= PROTO_MAX_CLIENT_ID)
        return true;
    req->client_id = (qms_str_t) { 0 };
    return rc == 0;
}

static bool
parse_group_field (cJSON *doc, proto_request_t *req, int event)
{
    if (get_string (doc, "group", &req->group) != 1 || req->group.len == 0
    ||  req->group.len > PROTO_MAX_GROUP_ID) {
        req->group = (qms_str_t) { 0 };
        set_error (req, event, "Field 'group' must be a string.");
        return false;
    }
    return true;
}

static bool
parse_group_name (cJSON *doc, proto_request_t *req, const proto_limits_t *limits)
{
    int rc = get_string (doc, "name", &req->name);
    if (rc != 1 || !text_ok (req->name, (size_t) limits->name_max, 0)) {
        req->name = (qms_str_t) { 0 };
        set_error (req, QMS_EV_GROUP, limits->name_error);
        return false;
    }
    return true;
}

/*  "members": an array of user ids, 1 to max_members of them (0 or more
    for a create, where it may also be absent). */
static bool
parse_members (cJSON *doc, proto_request_t *req, const proto_limits_t *limits, bool create)
{
    cJSON *members = cJSON_GetObjectItemCaseSensitive (doc, "members");
    if (!members && create)
        return true;
    int count = cJSON_IsArray (members) ? cJSON_GetArraySize (members) : -1;
    if (count < (create ? 0 : 1) || count > limits->max_members) {
        set_error (req, QMS_EV_GROUP, limits->members_error);
        return false;
    }
    cJSON *item;
    cJSON_ArrayForEach (item, members) {
        if (!cJSON_IsString (item) || !item->valuestring) {
            set_error (req, QMS_EV_GROUP, limits->members_error);
            return false;
        }
        if (!text_ok (qms_str (item->valuestring), PROTO_MAX_USER_ID, PROTO_MAX_USER_ID)) {
            set_error (req, QMS_EV_GROUP, k_member_id_error);
            return false;
        }
    }
    req->members = members;
    return true;
}

static void
parse_group_create (cJSON *doc, proto_request_t *req, const proto_limits_t *limits)
{
    if (!parse_token (doc, req))
        return;
    bool id_ok = read_group_id (doc, req);
    req->group_op = QMS_GROUP_OP_CREATE;
    if (!parse_group_name (doc, req, limits) || !parse_members (doc, req, limits, true))
        return;
    if (!id_ok)
        set_error (req, QMS_EV_GROUP, k_group_id_error);
}

static const struct {
    const char *name;
    unsigned op;
} s_group_ops [] = {
    { "add", QMS_GROUP_OP_ADD }, { "remove", QMS_GROUP_OP_REMOVE },
    { "promote", QMS_GROUP_OP_PROMOTE }, { "demote", QMS_GROUP_OP_DEMOTE },
    { "rename", QMS_GROUP_OP_RENAME }, { "leave", QMS_GROUP_OP_LEAVE },
};

static void
parse_group_update (cJSON *doc, proto_request_t *req, const proto_limits_t *limits)
{
    if (!parse_token (doc, req))
        return;
    bool id_ok = read_group_id (doc, req);
    if (!parse_group_field (doc, req, QMS_EV_GROUP))
        return;
    qms_str_t op = { 0 };
    if (get_string (doc, "op", &op) == 1)
        for (size_t i = 0; i < sizeof s_group_ops / sizeof s_group_ops [0]; i++)
            if (qms_str_eq (op, s_group_ops [i].name))
                req->group_op = s_group_ops [i].op;
    if (req->group_op == 0) {
        set_error (req, QMS_EV_GROUP, "Field 'op' must be one of add, remove, promote, demote, rename, leave.");
        return;
    }
    if (req->group_op == QMS_GROUP_OP_RENAME && !parse_group_name (doc, req, limits))
        return;
    if (req->group_op != QMS_GROUP_OP_RENAME && req->group_op != QMS_GROUP_OP_LEAVE
    &&  !parse_members (doc, req, limits, false))
        return;
    if (!id_ok)
        set_error (req, QMS_EV_GROUP, k_group_id_error);
}

static void
parse_group_list (cJSON *doc, proto_request_t *req)
{
    if (!parse_token (doc, req))
        return;
    req->group_op = QMS_GROUP_OP_LIST;
    if (!read_group_id (doc, req))
        set_error (req, QMS_EV_GROUP_LIST, k_group_id_error);
}

/*  The rules of a MessageRequest, in its order, with "group" for "target". */
static void
parse_group_message (cJSON *doc, proto_request_t *req)
{
    if (!parse_token (doc, req))
        return;
    bool id_ok = read_group_id (doc, req);
    if (!parse_group_field (doc, req, QMS_EV_GROUP_MESSAGE))
        return;
    int rc = get_string (doc, "message", &req->message);
    if (rc != 1) {
        set_error (req, QMS_EV_GROUP_MESSAGE, rc < 0 ? "Field 'message' must be a string."
                                                     : "Field 'message' is missing.");
        return;
    }
    if (!id_ok) {
        set_error (req, QMS_EV_GROUP_MESSAGE, k_group_id_error);
        return;
    }
    if (req->message.len > PROTO_MAX_MESSAGE)
        set_error (req, QMS_EV_GROUP_MESSAGE, "Field 'message' is too long (at most 65536 bytes).");
}

typedef struct {
    qms_str_t id;
    uint32_t at;                /* its place in the array */
} member_t;

static int
cmp_member (const void *a, const void *b)
{
    const member_t *x = a, *y = b;
    size_t n = x->id.len < y->id.len ? x->id.len : y->id.len;
    int c = memcmp (x->id.ptr, y->id.ptr, n);
    if (c)
        return c;
    if (x->id.len != y->id.len)
        return x->id.len < y->id.len ? -1 : 1;
    return x->at < y->at ? -1 : x->at > y->at;
}

int
proto_members_lines (const proto_request_t *req, qms_buf_t *out)
{
    size_t count = req->members ? (size_t) cJSON_GetArraySize ((cJSON *) req->members) : 0;
    if (count == 0)
        return 0;
    /*  Sorted (O(n log n), not a comparison of every pair) to find the
        repeats; written in the client's order. */
    member_t *sorted = malloc (count * sizeof *sorted);
    bool *repeat = calloc (count, sizeof *repeat);
    qms_str_t *ids = malloc (count * sizeof *ids);
    int rc = sorted && repeat && ids ? 0 : -1;
    size_t n = 0;
    cJSON *item;
    cJSON_ArrayForEach (item, (cJSON *) req->members)
        if (!rc && n < count) {
            ids [n] = qms_str (item->valuestring);
            sorted [n] = (member_t) { ids [n], (uint32_t) n };
            n++;
        }
    if (!rc) {
        qsort (sorted, n, sizeof *sorted, cmp_member);
        for (size_t i = 1; i < n; i++)
            if (sorted [i].id.len == sorted [i - 1].id.len
            &&  memcmp (sorted [i].id.ptr, sorted [i - 1].id.ptr, sorted [i].id.len) == 0)
                repeat [sorted [i].at] = true;
        bool first = true;
        for (size_t i = 0; i < n && !rc; i++) {
            if (repeat [i])
                continue;
            rc = (!first && qms_buf_append (out, "\n", 1)) || qms_buf_append (out, ids [i].ptr, ids [i].len);
            first = false;
        }
    }
    free (sorted);
    free (repeat);
    free (ids);
    return rc ? -1 : 0;
}

static int
action_event (int action)
{
    switch (action) {
        case QMS_REQ_LOGIN:
        case QMS_REQ_REGISTER: return QMS_EV_LOGIN;
        case QMS_REQ_MESSAGE:  return QMS_EV_MESSAGE;
        case QMS_REQ_GROUP_CREATE:
        case QMS_REQ_GROUP_UPDATE: return QMS_EV_GROUP;
        case QMS_REQ_GROUP_LIST:   return QMS_EV_GROUP_LIST;
        case QMS_REQ_GROUP_MESSAGE: return QMS_EV_GROUP_MESSAGE;
        default:               return -1;
    }
}

static void parse_dom (const char *data, size_t len, const proto_limits_t *limits, proto_request_t *req);

void
proto_parse (const char *data, size_t len, proto_request_t *req)
{
    proto_parse_limits (data, len, NULL, req);
}

void
proto_parse_limits (const char *data, size_t len, const proto_limits_t *limits, proto_request_t *req)
{
    memset (req, 0, sizeof *req);
    req->action = -1;
    req->error_event = -1;
    if (!parse_fast (data, len, req))
        parse_dom (data, len, limits ? limits : &proto_limits_default, req);
}

void
proto_parse_dom (const char *data, size_t len, proto_request_t *req)
{
    parse_dom (data, len, &proto_limits_default, req);
}

static void
parse_dom (const char *data, size_t len, const proto_limits_t *limits, proto_request_t *req)
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
        case QMS_REQ_GROUP_CREATE:
            parse_group_create (doc, req, limits);
            break;
        case QMS_REQ_GROUP_UPDATE:
            parse_group_update (doc, req, limits);
            break;
        case QMS_REQ_GROUP_LIST:
            parse_group_list (doc, req);
            break;
        case QMS_REQ_GROUP_MESSAGE:
            parse_group_message (doc, req);
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
    ||  proto_receipt_count (a) != proto_receipt_count (b) || a->group_op != b->group_op
    ||  (!a->members != !b->members)
    ||  (a->members && cJSON_GetArraySize (a->members) != cJSON_GetArraySize (b->members)))
        return false;
    const qms_str_t *sa [] = { &a->name, &a->password, &a->pubkey, &a->token, &a->target,
                               &a->message, &a->client_id, &a->group };
    const qms_str_t *sb [] = { &b->name, &b->password, &b->pubkey, &b->token, &b->target,
                               &b->message, &b->client_id, &b->group };
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

/* ------------------------------------------------------------------------ */
/*  ext: group events. */

int
proto_group_op_action (uint64_t op)
{
    switch (op & QMS_GROUP_OP_MASK) {
        case QMS_GROUP_OP_MESSAGE: return QMS_REQ_GROUP_MESSAGE;
        case QMS_GROUP_OP_LIST:    return QMS_REQ_GROUP_LIST;
        case QMS_GROUP_OP_CREATE:  return QMS_REQ_GROUP_CREATE;
    }
    return QMS_REQ_GROUP_UPDATE;
}

static int
append_field (qms_buf_t *out, const char *key_lit, size_t key_len, qms_str_t value)
{
    if (qms_buf_append (out, key_lit, key_len) || proto_escape (out, value.ptr, value.len))
        return -1;
    return 0;
}
#define APPEND_FIELD(out, lit, value) append_field (out, lit, sizeof (lit) - 1, value)

static int
append_u64 (qms_buf_t *out, uint64_t value)
{
    char digits [24];
    int n = snprintf (digits, sizeof digits, "%llu", (unsigned long long) value);
    return qms_buf_append (out, digits, (size_t) n);
}

int
proto_group_error (qms_buf_t *out, int action, qms_str_t client_id, qms_str_t group,
                   const char *text, size_t text_len)
{
    if (action == QMS_REQ_GROUP_MESSAGE) {
        if (!client_id.len)
            return proto_error (out, QMS_EV_GROUP_MESSAGE, text, text_len);
        if (APPEND_FIELD (out, "{\"valid\":false,\"event\":5,\"id\":", client_id)
        ||  APPEND_LIT (out, ",\"status\":\"rejected\",\"error\":")
        ||  proto_escape (out, text, text_len)
        ||  (group.len && APPEND_FIELD (out, ",\"group\":", group))
        ||  APPEND_LIT (out, "}"))
            return -1;
        return 0;
    }
    if ((action == QMS_REQ_GROUP_LIST ? APPEND_LIT (out, "{\"valid\":false,\"event\":9,\"error\":")
                                      : APPEND_LIT (out, "{\"valid\":false,\"event\":8,\"error\":"))
    ||  proto_escape (out, text, text_len)
    ||  (client_id.len && APPEND_FIELD (out, ",\"id\":", client_id))
    ||  APPEND_LIT (out, "}"))
        return -1;
    return 0;
}

/*  The words for the group reasons that need no detail. */
static const struct {
    const char *key, *text;
} s_group_reasons [] = {
    { QMS_REASON_UNKNOWN_GROUP, "Unknown group." },
    { QMS_REASON_NOT_ALLOWED, "Only the group's owner or an admin can do that." },
    { QMS_REASON_OWNER_ONLY, "Only the group's owner can do that." },
    { QMS_REASON_NO_CHANGE, "Nothing to change." },
    { QMS_REASON_GROUP_BUSY, "The group is being changed; try again." },
};

static bool
is_decimal (qms_str_t s)
{
    if (s.len == 0 || s.len > 19)
        return false;
    for (uint32_t i = 0; i < s.len; i++)
        if (s.ptr [i] < '0' || s.ptr [i] > '9')
            return false;
    return true;
}

const char *
proto_group_reason_text (qms_str_t reason, qms_str_t detail, int max_members, char *buf, size_t size)
{
    for (size_t i = 0; i < sizeof s_group_reasons / sizeof s_group_reasons [0]; i++)
        if (qms_str_eq (reason, s_group_reasons [i].key))
            return s_group_reasons [i].text;
    /*  A detail goes into the text as it is: JSON escaping comes after. */
    if (qms_str_eq (reason, QMS_REASON_UNKNOWN_USER) || qms_str_eq (reason, QMS_REASON_NOT_MEMBER)) {
        snprintf (buf, size, qms_str_eq (reason, QMS_REASON_UNKNOWN_USER) ? "Unknown user: %.*s."
                                                                          : "Not a member of the group: %.*s.",
                  (int) (detail.len > 256 ? 256 : detail.len), detail.ptr ? detail.ptr : "");
        return buf;
    }
    if (qms_str_eq (reason, QMS_REASON_GROUP_FULL)) {
        if (is_decimal (detail))
            snprintf (buf, size, "A group has at most %.*s members.", (int) detail.len, detail.ptr);
        else
            snprintf (buf, size, "A group has at most %d members.", max_members);
        return buf;
    }
    if (qms_str_eq (reason, QMS_REASON_TOO_MANY_GROUPS)) {
        const char *tab = detail.len ? memchr (detail.ptr, '\t', detail.len) : NULL;
        qms_str_t id = tab ? qms_strn (detail.ptr, (size_t) (tab - detail.ptr)) : detail;
        qms_str_t limit = tab ? qms_strn (tab + 1, detail.len - id.len - 1) : qms_str (NULL);
        if (is_decimal (limit))
            snprintf (buf, size, "%.*s is in too many groups (at most %.*s).",
                      (int) (id.len > 256 ? 256 : id.len), id.ptr ? id.ptr : "", (int) limit.len, limit.ptr);
        else
            snprintf (buf, size, "%.*s is in too many groups.", (int) (id.len > 256 ? 256 : id.len),
                      id.ptr ? id.ptr : "");
        return buf;
    }
    return proto_reason_text (reason);
}

/*  The next line of text at *at (without its newline); false at the end. */
static bool
next_line (qms_str_t text, size_t *at, qms_str_t *line)
{
    if (*at >= text.len)
        return false;
    const char *start = text.ptr + *at;
    const char *nl = memchr (start, '\n', text.len - *at);
    size_t len = nl ? (size_t) (nl - start) : text.len - *at;
    *line = qms_strn (start, len);
    *at += len + 1;
    return true;
}

/*  "members":[{"id","name","publicKey","role"},...] from GW_GROUP's
    members (qms_members_next: length-prefixed, so a key may hold any
    byte). */
static int
append_members (qms_buf_t *out, qms_str_t members)
{
    static const char *roles [] = { "member", "admin", "owner" };
    if (APPEND_LIT (out, "\"members\":["))
        return -1;
    size_t at = 0;
    qms_member_t m;
    int rc;
    bool first = true;
    while ((rc = qms_members_next (members, &at, &m)) == 1) {
        if (m.role > QMS_GROUP_ROLE_OWNER
        ||  (!first && APPEND_LIT (out, ","))
        ||  APPEND_FIELD (out, "{\"id\":", m.id)
        ||  APPEND_FIELD (out, ",\"name\":", m.name)
        ||  APPEND_FIELD (out, ",\"publicKey\":", m.key)
        ||  APPEND_FIELD (out, ",\"role\":", qms_str (roles [m.role]))
        ||  APPEND_LIT (out, "}"))
            return -1;
        first = false;
    }
    return rc < 0 ? -1 : APPEND_LIT (out, "]");
}

/*  A JSON array of the lines' strings (empty lines skipped). */
static int
append_id_lines (qms_buf_t *out, qms_str_t lines)
{
    if (APPEND_LIT (out, "["))
        return -1;
    size_t at = 0;
    qms_str_t line;
    bool first = true;
    while (next_line (lines, &at, &line)) {
        if (!line.len)
            continue;
        if ((!first && APPEND_LIT (out, ",")) || proto_escape (out, line.ptr, line.len))
            return -1;
        first = false;
    }
    return APPEND_LIT (out, "]");
}

static int
append_group (qms_buf_t *out, bool gone, qms_str_t id, qms_str_t name, qms_str_t owner,
              uint64_t epoch, qms_str_t members)
{
    if (APPEND_FIELD (out, "{\"id\":", id) || APPEND_FIELD (out, ",\"name\":", name))
        return -1;
    if (!gone
    &&  (APPEND_FIELD (out, ",\"owner\":", owner) || APPEND_LIT (out, ",\"epoch\":")
         || append_u64 (out, epoch) || APPEND_LIT (out, ",") || append_members (out, members)))
        return -1;
    return APPEND_LIT (out, "}");
}

int
proto_group_event_head (qms_buf_t *out, qms_str_t client_id)
{
    if (APPEND_LIT (out, "{\"valid\":true,\"event\":8,")
    ||  (client_id.len && (APPEND_FIELD (out, "\"id\":", client_id) || APPEND_LIT (out, ","))))
        return -1;
    return 0;
}

int
proto_group_event_body (qms_buf_t *out, uint64_t op, bool gone, qms_str_t id, qms_str_t name,
                        qms_str_t owner, uint64_t epoch, qms_str_t members, qms_str_t by,
                        qms_str_t named)
{
    static const char *ops [] = { NULL, "create", "add", "remove", "leave", "rename", "promote", "demote" };
    op &= QMS_GROUP_OP_MASK;
    if (op == 0 || op >= sizeof ops / sizeof ops [0])
        return -1;
    if (APPEND_LIT (out, "\"group\":")
    ||  append_group (out, gone, id, name, owner, epoch, members)
    ||  APPEND_FIELD (out, ",\"change\":{\"op\":", qms_str (ops [op]))
    ||  APPEND_FIELD (out, ",\"by\":", by)
    ||  APPEND_LIT (out, ",\"members\":")
    ||  append_id_lines (out, named)
    ||  (gone ? APPEND_LIT (out, "},\"removed\":true}") : APPEND_LIT (out, "}}")))
        return -1;
    return 0;
}

int
proto_group_list_head (qms_buf_t *out, qms_str_t client_id)
{
    if (APPEND_LIT (out, "{\"valid\":true,\"event\":9,")
    ||  (client_id.len && (APPEND_FIELD (out, "\"id\":", client_id) || APPEND_LIT (out, ",")))
    ||  APPEND_LIT (out, "\"groups\":["))
        return -1;
    return 0;
}

int
proto_group_list_add (qms_buf_t *out, qms_str_t id, qms_str_t name, qms_str_t owner,
                      uint64_t epoch, qms_str_t members)
{
    bool first = out->len > 0 && out->data [out->len - 1] == '[';
    if ((!first && APPEND_LIT (out, ","))
    ||  append_group (out, false, id, name, owner, epoch, members))
        return -1;
    return 0;
}

int
proto_group_list_end (qms_buf_t *out, bool more)
{
    return more ? APPEND_LIT (out, "],\"more\":true}") : APPEND_LIT (out, "]}");
}

static int
group_message_head (qms_buf_t *out, qms_str_t group, qms_str_t sender, qms_str_t message,
                    qms_str_t id, uint64_t time)
{
    if (APPEND_FIELD (out, "{\"valid\":true,\"event\":10,\"group\":", group)
    ||  APPEND_FIELD (out, ",\"sender\":", sender)
    ||  APPEND_FIELD (out, ",\"message\":", message)
    ||  append_id_time (out, id, time))
        return -1;
    return 0;
}

int
proto_group_message_event (qms_buf_t *out, qms_str_t group, qms_str_t sender, qms_str_t message,
                           qms_str_t id, uint64_t time)
{
    if (group_message_head (out, group, sender, message, id, time) || APPEND_LIT (out, "}"))
        return -1;
    return 0;
}

int
proto_group_stored_event (qms_buf_t *out, qms_str_t group, qms_str_t sender, qms_str_t message,
                          qms_str_t id, uint64_t time, qms_str_t sender_name, qms_str_t sender_key)
{
    if (group_message_head (out, group, sender, message, id, time)
    ||  APPEND_FIELD (out, ",\"senderName\":", sender_name)
    ||  APPEND_FIELD (out, ",\"senderKey\":", sender_key)
    ||  APPEND_LIT (out, ",\"stored\":true}"))
        return -1;
    return 0;
}

int
proto_group_ack (qms_buf_t *out, uint64_t status, qms_str_t client_id, qms_str_t msg_id,
                 uint64_t time, qms_str_t group, uint64_t members, qms_str_t unreached,
                 qms_str_t by, const char *text)
{
    if (status >= QMS_ACK_REJECTED)
        return proto_group_error (out, QMS_REQ_GROUP_MESSAGE, client_id, group, text, strlen (text));
    static const char *names [] = { "delivered", "stored", "received" };
    if (APPEND_FIELD (out, "{\"valid\":true,\"event\":5,\"id\":", client_id)
    ||  APPEND_FIELD (out, ",\"status\":", qms_str (names [status]))
    ||  APPEND_FIELD (out, ",\"messageId\":", msg_id))
        return -1;
    if (status == QMS_ACK_RECEIVED) {
        if (APPEND_FIELD (out, ",\"group\":", group) || APPEND_FIELD (out, ",\"by\":", by))
            return -1;
    }
    else {
        if (append_timestamp (out, time)
        ||  APPEND_FIELD (out, ",\"group\":", group)
        ||  APPEND_LIT (out, ",\"members\":") || append_u64 (out, members))
            return -1;
        if (is_decimal (unreached) && !(unreached.len == 1 && unreached.ptr [0] == '0')
        &&  (APPEND_LIT (out, ",\"unreached\":") || qms_buf_append (out, unreached.ptr, unreached.len)))
            return -1;
    }
    return APPEND_LIT (out, "}");
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

/*  Parse with limits; the error text and event, or "" and -1 when OK. */
static void
parse_group_str (const char *text, const proto_limits_t *limits, proto_request_t *req)
{
    proto_request_free (req);
    proto_parse_limits (text, strlen (text), limits, req);
}

static void
expect_group_error (const char *text, const proto_limits_t *limits, int event, const char *error,
                    const char *echoed_id)
{
    proto_request_t req = { 0 };
    parse_group_str (text, limits, &req);
    if (req.status != PROTO_ERROR || req.error_event != event || strcmp (req.error, error) != 0
    ||  (*echoed_id ? !qms_str_eq (req.client_id, echoed_id) : req.client_id.len != 0)) {
        fprintf (stderr, "\n%s\n  status %d event %d error %s id %.*s\n", text, req.status, req.error_event,
                 req.error ? req.error : "-", (int) req.client_id.len, req.client_id.ptr ? req.client_id.ptr : "");
        assert (false);
    }
    proto_request_free (&req);
}

static void
expect_lines (const char *text, const char *lines)
{
    proto_request_t req = { 0 };
    parse_group_str (text, NULL, &req);
    assert (req.status == PROTO_OK);
    qms_buf_t out;
    qms_buf_init (&out);
    assert (proto_members_lines (&req, &out) == 0);
    assert (out.len == strlen (lines) && (out.len == 0 || memcmp (out.data, lines, out.len) == 0));
    qms_buf_free (&out);
    proto_request_free (&req);
}

/*  Members as GW_GROUP carries them, from a spec of entries "id TAB name
    TAB key TAB role" joined by '|' (a key may hold a newline here). */
static qms_str_t
t_members (qms_buf_t *buf, const char *spec)
{
    qms_buf_reset (buf);
    char copy [512];
    snprintf (copy, sizeof copy, "%s", spec);
    for (char *entry = strtok (copy, "|"); entry; entry = strtok (NULL, "|")) {
        char *t1 = strchr (entry, '\t'), *t2 = t1 ? strchr (t1 + 1, '\t') : NULL;
        char *t3 = t2 ? strrchr (t2 + 1, '\t') : NULL;
        assert (t3);
        *t1 = *t2 = *t3 = 0;
        assert (qms_members_add (buf, (unsigned) atoi (t3 + 1), qms_str (entry), qms_str (t1 + 1),
                                 qms_str (t2 + 1)) == 0);
    }
    return qms_strn ((const char *) buf->data, buf->len);
}

static void
proto_group_test (void)
{
    const proto_limits_t *def = &proto_limits_default;
    proto_limits_t lim;
    proto_limits_init (&lim, 1024, 64);
    assert (strcmp (lim.name_error, def->name_error) == 0 && strcmp (lim.members_error, def->members_error) == 0);
    assert (lim.max_members == def->max_members && lim.name_max == def->name_max);
    const char *name_error = "Field 'name' must be a string of 1 to 64 characters without control characters.";
    const char *members_error = "Field 'members' must be an array of 1 to 1024 user ids.";
    const char *member_id_error = "Field 'members' must hold user ids of 1 to 64 bytes without control characters.";
    const char *group_error = "Field 'group' must be a string.";
    const char *op_error = "Field 'op' must be one of add, remove, promote, demote, rename, leave.";
    const char *id_error = "Field 'id' must be a string of 1 to 64 characters.";
    assert (strcmp (def->name_error, name_error) == 0 && strcmp (def->members_error, members_error) == 0);

    /*  GroupCreateRequest */
    proto_request_t req = { 0 };
    parse_group_str ("{\"action\":7,\"token\":\"t\",\"name\":\"Climbing\",\"members\":[\"a\",\"b\"],\"id\":\"r1\"}",
                     NULL, &req);
    assert (req.status == PROTO_OK && req.action == QMS_REQ_GROUP_CREATE && req.group_op == QMS_GROUP_OP_CREATE);
    assert (qms_str_eq (req.name, "Climbing") && qms_str_eq (req.client_id, "r1") && qms_str_eq (req.token, "t"));
    assert (req.members && proto_receipt_count (&req) == 0);
    parse_group_str ("{\"action\":7,\"token\":\"t\",\"name\":\"G\"}", NULL, &req);
    assert (req.status == PROTO_OK && !req.members && req.client_id.len == 0);
    parse_group_str ("{\"action\":7,\"token\":\"t\",\"name\":\"G\",\"members\":[]}", NULL, &req);
    assert (req.status == PROTO_OK && req.members);
    parse_group_str ("{\"action\":7,\"name\":\"G\",\"members\":[]}", NULL, &req);
    assert (req.status == PROTO_INVALID_USER);
    parse_group_str ("{\"action\":7,\"token\":5,\"name\":\"G\"}", NULL, &req);
    assert (req.status == PROTO_INVALID_USER);
    proto_request_free (&req);
    /*  Members as lines: each once, in the client's order. */
    expect_lines ("{\"action\":7,\"token\":\"t\",\"name\":\"G\"}", "");
    expect_lines ("{\"action\":7,\"token\":\"t\",\"name\":\"G\",\"members\":[]}", "");
    expect_lines ("{\"action\":7,\"token\":\"t\",\"name\":\"G\",\"members\":[\"a\"]}", "a");
    expect_lines ("{\"action\":7,\"token\":\"t\",\"name\":\"G\",\"members\":[\"b\",\"a\",\"b\",\"c\",\"a\",\"ab\"]}",
                  "b\na\nc\nab");
    expect_lines ("{\"action\":8,\"token\":\"t\",\"group\":\"g\",\"op\":\"add\",\"members\":[\"x\",\"x\",\"x\"]}", "x");

    /*  Names: 1 to name_max code points, no control character. */
    const char *bad_names [] = { "\"\"", "5", "null", "[\"a\"]", "\"a\\tb\"", "\"a\\nb\"", "\"\\u007f\"",
                                 "\"x\\u0085\"", "\"\\u009f\"", "\"\\u0001\"", NULL };
    char json [8192];
    for (int i = 0; bad_names [i]; i++) {
        snprintf (json, sizeof json, "{\"action\":7,\"token\":\"t\",\"name\":%s,\"id\":\"r1\"}", bad_names [i]);
        expect_group_error (json, NULL, QMS_EV_GROUP, name_error, "r1");
        snprintf (json, sizeof json, "{\"action\":8,\"token\":\"t\",\"group\":\"g\",\"op\":\"rename\",\"name\":%s}",
                  bad_names [i]);
        expect_group_error (json, NULL, QMS_EV_GROUP, name_error, "");
    }
    expect_group_error ("{\"action\":7,\"token\":\"t\"}", NULL, QMS_EV_GROUP, name_error, "");
    /*  64 characters of 1, 2 and 4 bytes pass; 65 do not. */
    static const char *chars [] = { "a", "\xc3\xa9", "\xf0\x9f\x99\x82", NULL };
    for (int c = 0; chars [c]; c++)
        for (int count = 64; count <= 65; count++) {
            int n = snprintf (json, sizeof json, "{\"action\":7,\"token\":\"t\",\"name\":\"");
            for (int k = 0; k < count; k++)
                n += snprintf (json + n, sizeof json - (size_t) n, "%s", chars [c]);
            snprintf (json + n, sizeof json - (size_t) n, "\"}");
            if (count == 64) {
                parse_group_str (json, NULL, &req);
                assert (req.status == PROTO_OK && req.name.len == 64 * strlen (chars [c]));
                proto_request_free (&req);
            }
            else
                expect_group_error (json, NULL, QMS_EV_GROUP, name_error, "");
        }
    /*  A space, a NBSP and U+2028 are not control characters. */
    parse_group_str ("{\"action\":7,\"token\":\"t\",\"name\":\" a\\u00a0b\\u2028 \"}", NULL, &req);
    assert (req.status == PROTO_OK);

    /*  Members: an array of 1 (create: 0) to max_members strings, each a
        user id of 1-64 bytes without control characters. */
    const char *bad_arrays [] = { "5", "\"a\"", "null", "{\"a\":\"b\"}", "[1]", "[\"a\",null]", "[[\"a\"]]",
                                  "[\"a\",{}]", "true", NULL };
    for (int i = 0; bad_arrays [i]; i++) {
        snprintf (json, sizeof json, "{\"action\":7,\"token\":\"t\",\"name\":\"G\",\"members\":%s,\"id\":\"r2\"}",
                  bad_arrays [i]);
        expect_group_error (json, NULL, QMS_EV_GROUP, members_error, "r2");
        snprintf (json, sizeof json, "{\"action\":8,\"token\":\"t\",\"group\":\"g\",\"op\":\"remove\",\"members\":%s}",
                  bad_arrays [i]);
        expect_group_error (json, NULL, QMS_EV_GROUP, members_error, "");
    }
    for (int op = 0; op < 4; op++) {
        static const char *ops [] = { "add", "remove", "promote", "demote" };
        snprintf (json, sizeof json, "{\"action\":8,\"token\":\"t\",\"group\":\"g\",\"op\":\"%s\",\"members\":[]}", ops [op]);
        expect_group_error (json, NULL, QMS_EV_GROUP, members_error, "");
        snprintf (json, sizeof json, "{\"action\":8,\"token\":\"t\",\"group\":\"g\",\"op\":\"%s\"}", ops [op]);
        expect_group_error (json, NULL, QMS_EV_GROUP, members_error, "");
        snprintf (json, sizeof json, "{\"action\":8,\"token\":\"t\",\"group\":\"g\",\"op\":\"%s\",\"members\":[\"u\"]}",
                  ops [op]);
        parse_group_str (json, NULL, &req);
        static const unsigned op_values [] = { QMS_GROUP_OP_ADD, QMS_GROUP_OP_REMOVE, QMS_GROUP_OP_PROMOTE,
                                               QMS_GROUP_OP_DEMOTE };
        assert (req.status == PROTO_OK && req.action == QMS_REQ_GROUP_UPDATE && req.group_op == op_values [op]);
        assert (qms_str_eq (req.group, "g") && req.name.len == 0);
        proto_request_free (&req);
    }
    const char *bad_ids [] = { "\"\"", "\"a\\nb\"", "\"a\\tb\"", "\"\\u0085\"", "\"\\u007f\"",
                               "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"", NULL };  /* 65 */
    for (int i = 0; bad_ids [i]; i++) {
        snprintf (json, sizeof json, "{\"action\":7,\"token\":\"t\",\"name\":\"G\",\"members\":[\"ok\",%s],\"id\":\"r3\"}",
                  bad_ids [i]);
        expect_group_error (json, NULL, QMS_EV_GROUP, member_id_error, "r3");
    }
    parse_group_str ("{\"action\":7,\"token\":\"t\",\"name\":\"G\",\"members\":"
                     "[\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"]}", NULL, &req);     /* 64 */
    assert (req.status == PROTO_OK);
    proto_request_free (&req);
    /*  At most max_members ids, duplicates counted: the limit as configured. */
    proto_limits_init (&lim, 3, 5);
    assert (strcmp (lim.name_error, "Field 'name' must be a string of 1 to 5 characters without control characters.") == 0);
    assert (strcmp (lim.members_error, "Field 'members' must be an array of 1 to 3 user ids.") == 0);
    parse_group_str ("{\"action\":7,\"token\":\"t\",\"name\":\"abcde\",\"members\":[\"a\",\"b\",\"a\"]}", &lim, &req);
    assert (req.status == PROTO_OK);
    proto_request_free (&req);
    expect_group_error ("{\"action\":7,\"token\":\"t\",\"name\":\"abcde\",\"members\":[\"a\",\"b\",\"c\",\"a\"]}", &lim,
                        QMS_EV_GROUP, lim.members_error, "");
    expect_group_error ("{\"action\":7,\"token\":\"t\",\"name\":\"abcdef\"}", &lim, QMS_EV_GROUP, lim.name_error, "");
    int n = snprintf (json, sizeof json, "{\"action\":8,\"token\":\"t\",\"group\":\"g\",\"op\":\"add\",\"members\":[");
    for (int i = 0; i < 1025; i++)
        n += snprintf (json + n, sizeof json - (size_t) n, "%s\"%d\"", i ? "," : "", i);
    snprintf (json + n, sizeof json - (size_t) n, "]}");
    expect_group_error (json, NULL, QMS_EV_GROUP, members_error, "");
    char *comma = strrchr (json, ',');
    strcpy (comma, "]}");                                   /* 1024 */
    parse_group_str (json, NULL, &req);
    assert (req.status == PROTO_OK);
    proto_request_free (&req);

    /*  GroupUpdateRequest: group, op, then what the op needs. */
    const char *bad_groups [] = { "", ",\"group\":\"\"", ",\"group\":5", ",\"group\":null", ",\"group\":[\"g\"]",
                                  ",\"group\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"", NULL };
    for (int i = 0; bad_groups [i]; i++) {
        snprintf (json, sizeof json, "{\"action\":8,\"token\":\"t\"%s,\"op\":\"leave\",\"id\":\"r4\"}", bad_groups [i]);
        expect_group_error (json, NULL, QMS_EV_GROUP, group_error, "r4");
        snprintf (json, sizeof json, "{\"action\":10,\"token\":\"t\"%s,\"message\":\"m\"}", bad_groups [i]);
        expect_group_error (json, NULL, QMS_EV_GROUP_MESSAGE, group_error, "");
    }
    const char *bad_ops [] = { "", ",\"op\":\"create\"", ",\"op\":\"list\"", ",\"op\":\"ADD\"", ",\"op\":2",
                               ",\"op\":null", ",\"op\":\"\"", ",\"op\":\"add \"", NULL };
    for (int i = 0; bad_ops [i]; i++) {
        snprintf (json, sizeof json, "{\"action\":8,\"token\":\"t\",\"group\":\"g\"%s,\"members\":[\"u\"]}", bad_ops [i]);
        expect_group_error (json, NULL, QMS_EV_GROUP, op_error, "");
    }
    parse_group_str ("{\"action\":8,\"token\":\"t\",\"group\":\"g\",\"op\":\"leave\",\"members\":5,\"name\":7}", NULL, &req);
    assert (req.status == PROTO_OK && req.group_op == QMS_GROUP_OP_LEAVE && !req.members && req.name.len == 0);
    parse_group_str ("{\"action\":8,\"token\":\"t\",\"group\":\"g\",\"op\":\"rename\",\"name\":\"New\",\"members\":5}", NULL, &req);
    assert (req.status == PROTO_OK && req.group_op == QMS_GROUP_OP_RENAME && qms_str_eq (req.name, "New") && !req.members);
    proto_request_free (&req);

    /*  The request's id: echoed when it is 1-64 characters, else the error
        (after the fields before it) and not echoed. */
    const char *bad_client_ids [] = { "5", "\"\"", "null", "[\"r\"]",
                                      "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"", NULL };
    for (int i = 0; bad_client_ids [i]; i++) {
        snprintf (json, sizeof json, "{\"action\":7,\"token\":\"t\",\"name\":\"G\",\"id\":%s}", bad_client_ids [i]);
        expect_group_error (json, NULL, QMS_EV_GROUP, id_error, "");
        snprintf (json, sizeof json, "{\"action\":7,\"token\":\"t\",\"name\":\"\",\"id\":%s}", bad_client_ids [i]);
        expect_group_error (json, NULL, QMS_EV_GROUP, name_error, "");
        snprintf (json, sizeof json, "{\"action\":8,\"token\":\"t\",\"group\":\"g\",\"op\":\"leave\",\"id\":%s}", bad_client_ids [i]);
        expect_group_error (json, NULL, QMS_EV_GROUP, id_error, "");
        snprintf (json, sizeof json, "{\"action\":9,\"token\":\"t\",\"id\":%s}", bad_client_ids [i]);
        expect_group_error (json, NULL, QMS_EV_GROUP_LIST, id_error, "");
        snprintf (json, sizeof json, "{\"action\":10,\"token\":\"t\",\"group\":\"g\",\"message\":\"m\",\"id\":%s}",
                  bad_client_ids [i]);
        expect_group_error (json, NULL, QMS_EV_GROUP_MESSAGE, id_error, "");
    }

    /*  GroupListRequest */
    parse_group_str ("{\"action\":9,\"token\":\"t\"}", NULL, &req);
    assert (req.status == PROTO_OK && req.action == QMS_REQ_GROUP_LIST && req.group_op == QMS_GROUP_OP_LIST);
    parse_group_str ("{\"action\":9,\"token\":\"t\",\"id\":\"r9\"}", NULL, &req);
    assert (req.status == PROTO_OK && qms_str_eq (req.client_id, "r9"));
    parse_group_str ("{\"action\":9}", NULL, &req);
    assert (req.status == PROTO_INVALID_USER);

    /*  GroupMessageRequest: the rules of a MessageRequest. */
    parse_group_str ("{\"action\":10,\"token\":\"t\",\"group\":\"g\",\"message\":\"\",\"id\":\"c1\"}", NULL, &req);
    assert (req.status == PROTO_OK && req.action == QMS_REQ_GROUP_MESSAGE && qms_str_eq (req.group, "g")
            && req.message.len == 0 && qms_str_eq (req.client_id, "c1"));
    parse_group_str ("{\"action\":10,\"group\":\"g\",\"message\":\"m\"}", NULL, &req);
    assert (req.status == PROTO_INVALID_USER);
    proto_request_free (&req);
    expect_group_error ("{\"action\":10,\"token\":\"t\",\"group\":\"g\",\"id\":\"c2\"}", NULL, QMS_EV_GROUP_MESSAGE,
                        "Field 'message' is missing.", "c2");
    expect_group_error ("{\"action\":10,\"token\":\"t\",\"group\":\"g\",\"message\":[],\"id\":\"c2\"}", NULL,
                        QMS_EV_GROUP_MESSAGE, "Field 'message' must be a string.", "c2");
    static char big [PROTO_MAX_MESSAGE + 256];
    for (int extra = 0; extra <= 1; extra++) {
        int at = snprintf (big, sizeof big, "{\"action\":10,\"token\":\"t\",\"group\":\"g\",\"id\":\"c3\",\"message\":\"");
        memset (big + at, 'x', PROTO_MAX_MESSAGE + (size_t) extra);
        strcpy (big + at + PROTO_MAX_MESSAGE + extra, "\"}");
        if (extra)
            expect_group_error (big, NULL, QMS_EV_GROUP_MESSAGE, "Field 'message' is too long (at most 65536 bytes).", "c3");
        else {
            parse_group_str (big, NULL, &req);
            assert (req.status == PROTO_OK && req.message.len == PROTO_MAX_MESSAGE);
            proto_request_free (&req);
        }
    }
    /*  A NUL escape: the action's event, no id. */
    expect_group_error ("{\"action\":10,\"token\":\"t\",\"group\":\"g\",\"message\":\"a\\u0000\",\"id\":\"c\"}", NULL,
                        QMS_EV_GROUP_MESSAGE, "Strings must not contain NUL characters (\\u0000).", "");
    expect_group_error ("{\"action\":7,\"token\":\"t\",\"name\":\"a\\u0000\"}", NULL, QMS_EV_GROUP,
                        "Strings must not contain NUL characters (\\u0000).", "");
    /*  The two readers agree on group requests too (the fast one declines). */
    const char *same = "{\"action\":10,\"token\":\"t\",\"group\":\"g\",\"message\":\"m\",\"id\":\"c\"}";
    proto_request_t dom = { 0 };
    parse_group_str (same, NULL, &req);
    proto_parse_dom (same, strlen (same), &dom);
    assert (proto_request_same (&req, &dom));
    proto_request_free (&dom);
    proto_request_free (&req);

    /*  Output: errors in the shape of each request. */
    qms_buf_t out;
    qms_buf_init (&out);
    const char *t = "Unknown group.";
    proto_group_error (&out, QMS_REQ_GROUP_CREATE, qms_str ("r1"), qms_str ("g"), t, strlen (t));
    expect_json (&out, "{\"valid\":false,\"event\":8,\"error\":\"Unknown group.\",\"id\":\"r1\"}");
    proto_group_error (&out, QMS_REQ_GROUP_UPDATE, qms_str (NULL), qms_str ("g"), t, strlen (t));
    expect_json (&out, "{\"valid\":false,\"event\":8,\"error\":\"Unknown group.\"}");
    proto_group_error (&out, QMS_REQ_GROUP_LIST, qms_str ("r\"2"), qms_str (NULL), t, strlen (t));
    expect_json (&out, "{\"valid\":false,\"event\":9,\"error\":\"Unknown group.\",\"id\":\"r\\\"2\"}");
    proto_group_error (&out, QMS_REQ_GROUP_MESSAGE, qms_str (NULL), qms_str ("g"), t, strlen (t));
    expect_json (&out, "{\"valid\":false,\"event\":10,\"error\":\"Unknown group.\"}");
    proto_group_error (&out, QMS_REQ_GROUP_MESSAGE, qms_str ("c-18"), qms_str ("g"), t, strlen (t));
    expect_json (&out, "{\"valid\":false,\"event\":5,\"id\":\"c-18\",\"status\":\"rejected\",\"error\":\"Unknown group.\","
                       "\"group\":\"g\"}");
    proto_group_error (&out, QMS_REQ_GROUP_MESSAGE, qms_str ("c-19"), qms_str (NULL), t, strlen (t));
    expect_json (&out, "{\"valid\":false,\"event\":5,\"id\":\"c-19\",\"status\":\"rejected\",\"error\":\"Unknown group.\"}");
    assert (proto_group_op_action (QMS_GROUP_OP_MESSAGE) == QMS_REQ_GROUP_MESSAGE);
    assert (proto_group_op_action (QMS_GROUP_OP_LIST) == QMS_REQ_GROUP_LIST);
    assert (proto_group_op_action (QMS_GROUP_OP_CREATE) == QMS_REQ_GROUP_CREATE);
    assert (proto_group_op_action (QMS_GROUP_OP_DEMOTE) == QMS_REQ_GROUP_UPDATE);
    assert (proto_group_op_action (QMS_GROUP_OP_LEAVE | QMS_GROUP_GONE) == QMS_REQ_GROUP_UPDATE);

    /*  Every reason in the words of docs/PROTOCOL.md. */
    static const struct { const char *key, *detail, *text; } reasons [] = {
        { QMS_REASON_UNKNOWN_GROUP, "", "Unknown group." },
        { QMS_REASON_NOT_ALLOWED, "", "Only the group's owner or an admin can do that." },
        { QMS_REASON_OWNER_ONLY, "", "Only the group's owner can do that." },
        { QMS_REASON_UNKNOWN_USER, "u-1", "Unknown user: u-1." },
        { QMS_REASON_NOT_MEMBER, "u-2", "Not a member of the group: u-2." },
        { QMS_REASON_GROUP_FULL, "1024", "A group has at most 1024 members." },
        { QMS_REASON_GROUP_FULL, "", "A group has at most 77 members." },
        { QMS_REASON_GROUP_FULL, "lots", "A group has at most 77 members." },
        { QMS_REASON_TOO_MANY_GROUPS, "u-3\t256", "u-3 is in too many groups (at most 256)." },
        { QMS_REASON_TOO_MANY_GROUPS, "u-3", "u-3 is in too many groups." },
        { QMS_REASON_NO_CHANGE, "", "Nothing to change." },
        { QMS_REASON_GROUP_BUSY, "", "The group is being changed; try again." },
        { QMS_REASON_UNAVAILABLE, "", "Service temporarily unavailable." },
        { QMS_REASON_MAILBOX_FULL, "", "The recipient's mailbox is full." },
        { "from_a_newer_router", "x", "Request failed." },
    };
    for (size_t i = 0; i < sizeof reasons / sizeof reasons [0]; i++) {
        char buf [400];
        const char *text = proto_group_reason_text (qms_str (reasons [i].key), qms_str (reasons [i].detail), 77,
                                                    buf, sizeof buf);
        if (strcmp (text, reasons [i].text) != 0) {
            fprintf (stderr, "\n%s: %s\n", reasons [i].key, text);
            assert (false);
        }
    }

    /*  GroupEvent: the same body after either head.  A member's key may
        hold a newline (PEM); names are escaped. */
    qms_buf_t mb;
    qms_buf_init (&mb);
    qms_str_t members = t_members (&mb, "id-a\talice\tKA\t2|id-b\tb\"ob\t-----BEGIN-----\nK\n-----END-----\t0|"
                                        "id-c\tcy\t\t1");
    qms_str_t named = qms_str ("id-b\nid-c");
    const char *body = "\"group\":{\"id\":\"G1\",\"name\":\"Climbing\",\"owner\":\"id-a\",\"epoch\":3,\"members\":["
                       "{\"id\":\"id-a\",\"name\":\"alice\",\"publicKey\":\"KA\",\"role\":\"owner\"},"
                       "{\"id\":\"id-b\",\"name\":\"b\\\"ob\",\"publicKey\":\"-----BEGIN-----\\nK\\n-----END-----\","
                       "\"role\":\"member\"},"
                       "{\"id\":\"id-c\",\"name\":\"cy\",\"publicKey\":\"\",\"role\":\"admin\"}]},"
                       "\"change\":{\"op\":\"add\",\"by\":\"id-a\",\"members\":[\"id-b\",\"id-c\"]}}";
    char want [2048];
    assert (proto_group_event_head (&out, qms_str ("r1")) == 0);
    assert (proto_group_event_body (&out, QMS_GROUP_OP_ADD, false, qms_str ("G1"), qms_str ("Climbing"),
                                    qms_str ("id-a"), 3, members, qms_str ("id-a"), named) == 0);
    snprintf (want, sizeof want, "{\"valid\":true,\"event\":8,\"id\":\"r1\",%s", body);
    expect_json (&out, want);
    assert (proto_group_event_head (&out, qms_str (NULL)) == 0);
    assert (proto_group_event_body (&out, QMS_GROUP_OP_ADD, false, qms_str ("G1"), qms_str ("Climbing"),
                                    qms_str ("id-a"), 3, members, qms_str ("id-a"), named) == 0);
    snprintf (want, sizeof want, "{\"valid\":true,\"event\":8,%s", body);
    expect_json (&out, want);
    /*  Empty lines of the members named are nothing. */
    assert (proto_group_event_head (&out, qms_str (NULL)) == 0);
    assert (proto_group_event_body (&out, QMS_GROUP_OP_CREATE, false, qms_str ("G"), qms_str ("n"), qms_str ("o"),
                                    1, t_members (&mb, "o\tO\tk\t2"), qms_str ("o"), qms_str ("\n")) == 0);
    expect_json (&out, "{\"valid\":true,\"event\":8,\"group\":{\"id\":\"G\",\"name\":\"n\",\"owner\":\"o\",\"epoch\":1,"
                       "\"members\":[{\"id\":\"o\",\"name\":\"O\",\"publicKey\":\"k\",\"role\":\"owner\"}]},"
                       "\"change\":{\"op\":\"create\",\"by\":\"o\",\"members\":[]}}");
    /*  Removed, or left: the group's id and name only. */
    assert (proto_group_event_head (&out, qms_str ("r5")) == 0);
    assert (proto_group_event_body (&out, QMS_GROUP_OP_LEAVE | QMS_GROUP_GONE, true, qms_str ("G1"),
                                    qms_str ("Climbing"), qms_str ("id-a"), 4, qms_str (NULL), qms_str ("id-b"),
                                    qms_str ("id-b")) == 0);
    expect_json (&out, "{\"valid\":true,\"event\":8,\"id\":\"r5\",\"group\":{\"id\":\"G1\",\"name\":\"Climbing\"},"
                       "\"change\":{\"op\":\"leave\",\"by\":\"id-b\",\"members\":[\"id-b\"]},\"removed\":true}");
    static const char *ops [] = { NULL, "create", "add", "remove", "leave", "rename", "promote", "demote" };
    for (unsigned op = 1; op <= 7; op++) {
        assert (proto_group_event_body (&out, op, true, qms_str ("G"), qms_str ("n"), qms_str (NULL), 0,
                                        qms_str (NULL), qms_str ("b"), qms_str (NULL)) == 0);
        snprintf (want, sizeof want, "\"op\":\"%s\"", ops [op]);
        qms_buf_append (&out, "", 1);
        assert (strstr ((const char *) out.data, want));
        qms_buf_reset (&out);
    }
    /*  Malformed: an unknown op, a line without its fields or role. */
    assert (proto_group_event_body (&out, 0, false, qms_str ("G"), qms_str ("n"), qms_str ("o"), 1,
                                    qms_str (NULL), qms_str ("o"), qms_str (NULL)) == -1);
    qms_buf_reset (&out);
    assert (proto_group_event_body (&out, QMS_GROUP_OP_LIST, false, qms_str ("G"), qms_str ("n"), qms_str ("o"), 1,
                                    qms_str (NULL), qms_str ("o"), qms_str (NULL)) == -1);
    qms_buf_reset (&out);
    /*  Malformed members: each cut of an entry, and a role past owner. */
    qms_str_t one = t_members (&mb, "abc\tname\tkey\t1");
    for (uint32_t cut = 1; cut < one.len; cut++) {
        assert (proto_group_event_body (&out, QMS_GROUP_OP_ADD, false, qms_str ("G"), qms_str ("n"), qms_str ("o"),
                                        1, qms_strn (one.ptr, one.len - cut), qms_str ("o"), qms_str (NULL)) == -1);
        qms_buf_reset (&out);
    }
    assert (proto_group_event_body (&out, QMS_GROUP_OP_ADD, false, qms_str ("G"), qms_str ("n"), qms_str ("o"),
                                    1, t_members (&mb, "a\tb\tk\t3"), qms_str ("o"), qms_str (NULL)) == -1);
    qms_buf_reset (&out);

    /*  GroupListEvent */
    proto_group_list_head (&out, qms_str (NULL));
    proto_group_list_end (&out, false);
    expect_json (&out, "{\"valid\":true,\"event\":9,\"groups\":[]}");
    proto_group_list_head (&out, qms_str ("p"));
    proto_group_list_end (&out, true);
    expect_json (&out, "{\"valid\":true,\"event\":9,\"id\":\"p\",\"groups\":[],\"more\":true}");
    proto_group_list_head (&out, qms_str ("r7"));
    assert (proto_group_list_add (&out, qms_str ("G1"), qms_str ("a"), qms_str ("o"), 2, t_members (&mb, "o\tO\tk\t2")) == 0);
    assert (proto_group_list_add (&out, qms_str ("G2"), qms_str ("b"), qms_str ("o"), 9,
                                  t_members (&mb, "o\tO\tk\t2|p\tP\t\t1")) == 0);
    qms_buf_free (&mb);
    proto_group_list_end (&out, false);
    expect_json (&out, "{\"valid\":true,\"event\":9,\"id\":\"r7\",\"groups\":["
                       "{\"id\":\"G1\",\"name\":\"a\",\"owner\":\"o\",\"epoch\":2,\"members\":["
                       "{\"id\":\"o\",\"name\":\"O\",\"publicKey\":\"k\",\"role\":\"owner\"}]},"
                       "{\"id\":\"G2\",\"name\":\"b\",\"owner\":\"o\",\"epoch\":9,\"members\":["
                       "{\"id\":\"o\",\"name\":\"O\",\"publicKey\":\"k\",\"role\":\"owner\"},"
                       "{\"id\":\"p\",\"name\":\"P\",\"publicKey\":\"\",\"role\":\"admin\"}]}]}");

    /*  GroupMessageEvent, live and stored. */
    proto_group_message_event (&out, qms_str ("G1"), qms_str ("id-a"), qms_str ("c\"t"), qms_str ("M1"), 1764000000123ull);
    expect_json (&out, "{\"valid\":true,\"event\":10,\"group\":\"G1\",\"sender\":\"id-a\",\"message\":\"c\\\"t\","
                       "\"id\":\"M1\",\"timestamp\":1764000000123}");
    proto_group_stored_event (&out, qms_str ("G1"), qms_str ("id-a"), qms_str ("ct"), qms_str ("M1"), 5,
                              qms_str ("alice"), qms_str ("KA"));
    expect_json (&out, "{\"valid\":true,\"event\":10,\"group\":\"G1\",\"sender\":\"id-a\",\"message\":\"ct\","
                       "\"id\":\"M1\",\"timestamp\":5,\"senderName\":\"alice\",\"senderKey\":\"KA\",\"stored\":true}");

    /*  Acks of a group message. */
    proto_group_ack (&out, QMS_ACK_DELIVERED, qms_str ("c-18"), qms_str ("M1"), 7, qms_str ("G1"), 2, qms_str ("0"),
                     qms_str (NULL), NULL);
    expect_json (&out, "{\"valid\":true,\"event\":5,\"id\":\"c-18\",\"status\":\"delivered\",\"messageId\":\"M1\","
                       "\"timestamp\":7,\"group\":\"G1\",\"members\":2}");
    proto_group_ack (&out, QMS_ACK_STORED, qms_str ("c-18"), qms_str ("M1"), 7, qms_str ("G1"), 2, qms_str ("1"),
                     qms_str (NULL), NULL);
    expect_json (&out, "{\"valid\":true,\"event\":5,\"id\":\"c-18\",\"status\":\"stored\",\"messageId\":\"M1\","
                       "\"timestamp\":7,\"group\":\"G1\",\"members\":2,\"unreached\":1}");
    proto_group_ack (&out, QMS_ACK_STORED, qms_str ("c-18"), qms_str ("M1"), 7, qms_str ("G1"), 0, qms_str ("x1"),
                     qms_str (NULL), NULL);
    expect_json (&out, "{\"valid\":true,\"event\":5,\"id\":\"c-18\",\"status\":\"stored\",\"messageId\":\"M1\","
                       "\"timestamp\":7,\"group\":\"G1\",\"members\":0}");
    proto_group_ack (&out, QMS_ACK_RECEIVED, qms_str ("c-18"), qms_str ("M1"), 7, qms_str ("G1"), 0, qms_str (NULL),
                     qms_str ("id-b"), NULL);
    expect_json (&out, "{\"valid\":true,\"event\":5,\"id\":\"c-18\",\"status\":\"received\",\"messageId\":\"M1\","
                       "\"group\":\"G1\",\"by\":\"id-b\"}");
    proto_group_ack (&out, QMS_ACK_REJECTED, qms_str ("c-18"), qms_str (NULL), 7, qms_str ("G1"), 0, qms_str (NULL),
                     qms_str (NULL), "Unknown group.");
    expect_json (&out, "{\"valid\":false,\"event\":5,\"id\":\"c-18\",\"status\":\"rejected\",\"error\":\"Unknown group.\","
                       "\"group\":\"G1\"}");
    qms_buf_free (&out);
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

    /*  ext: groups.  Requests, each error text, the limits in the texts. */
    proto_group_test ();

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
