/*  proto.h - client JSON in, client JSON out.

    Each client frame is parsed once, here, into a proto_request_t whose
    strings point into the parsed document, or for a plain MessageRequest
    into the frame itself (not NUL-terminated: use the lengths).  Outgoing
    events are written straight into a buffer from templates (no JSON DOM):
    their shapes are fixed, only the strings vary, and those are escaped by
    proto_escape.
*/
#ifndef PROTO_H_INCLUDED
#define PROTO_H_INCLUDED

#include "qms_msg.h"

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/*  Limits of docs/PROTOCOL.md ("Limits"). */
#define PROTO_MAX_MESSAGE   65536       /* bytes of the "message" string */
#define PROTO_MAX_PUBKEY    16384       /* bytes of "pubKey" */
#define PROTO_MAX_TARGET    64          /* bytes of "target" (a user id) */
#define PROTO_MAX_TOKEN     256         /* longer tokens are not ours */
#define PROTO_MAX_CLIENT_ID 64          /* ext: "id" of a message */
#define PROTO_MAX_RECEIPTS  256         /* ext: ids in one ReceiptRequest */
#define PROTO_MAX_GROUP_ID  64          /* ext: bytes of "group" (a group id) */
#define PROTO_MAX_USER_ID   64          /* ext: bytes of a user id in "members" */

/*  ext: the group limits a request is checked against (--group-max-members,
    --group-name-max), with the error texts that name them. */
typedef struct {
    int max_members;
    int name_max;               /* characters (code points) */
    char name_error [128];
    char members_error [96];
} proto_limits_t;

/*  Fill limits and its texts; proto_limits_default holds the defaults. */
void proto_limits_init (proto_limits_t *limits, int max_members, int name_max);
extern const proto_limits_t proto_limits_default;

/*  ext: "presence" on login, register and authorize. */
typedef enum {
    PROTO_PRESENCE_FULL = 0,    /* the whole list on every change (the original; coalesced) */
    PROTO_PRESENCE_DELTA,       /* the list once, then the changes */
    PROTO_PRESENCE_NONE         /* nothing pushed; look users up by name */
} proto_presence_t;

typedef enum {
    PROTO_OK = 0,           /* a request to carry out */
    PROTO_ERROR,            /* answer {"valid":false[,"event":E],"error":...} */
    PROTO_INVALID_USER      /* answer {"valid":false,"event":3} */
} proto_status_t;

typedef struct {
    proto_status_t status;
    int action;                 /* a qms_request_t */
    int error_event;            /* event for PROTO_ERROR, or -1 for none */
    const char *error;          /* text for PROTO_ERROR */
    qms_str_t name, password, pubkey, token, target, message;
    qms_str_t client_id;        /* ext: a message's "id", empty if none */
    bool receipts;              /* ext: "receipts": true on login/register/authorize */
    int presence;               /* ext: a proto_presence_t */
    void *ids;                  /* ext: the cJSON array of a ReceiptRequest */
    qms_str_t group;            /* ext: "group" of a group request (name: its "name") */
    unsigned group_op;          /* ext: a QMS_GROUP_OP_* (GroupCreate, GroupUpdate, GroupList) */
    void *members;              /* ext: the cJSON array "members", NULL if none */
    void *doc;                  /* the cJSON document the strings live in */
} proto_request_t;

/*  Parse one text frame.  Always fills req; free with proto_request_free.
    Group requests are checked against limits (NULL: the defaults); the
    error texts of those then live as long as limits does. */
void proto_parse (const char *data, size_t len, proto_request_t *req);
void proto_parse_limits (const char *data, size_t len, const proto_limits_t *limits,
                         proto_request_t *req);
/*  Whether two parses say the same: status, action, error and every field
    (by content). */
bool proto_request_same (const proto_request_t *a, const proto_request_t *b);
/*  The same with cJSON only, never the one-pass reader that proto_parse
    tries first for MessageRequests: for tests that compare the two. */
void proto_parse_dom (const char *data, size_t len, proto_request_t *req);
void proto_request_free (proto_request_t *req);

/*  ext: the members of a group request as RT_GROUP carries them: one user
    id per line (no newline after the last), each once, in the order the
    client gave them (a repeated id is dropped).  0, or -1 when out of
    memory. */
int proto_members_lines (const proto_request_t *req, qms_buf_t *out);

/*  Append a JSON string literal (with quotes) for s to out. */
int proto_escape (qms_buf_t *out, const char *s, size_t len);

/*  The events, appended to out as complete JSON texts. */
int proto_error (qms_buf_t *out, int event, const char *text, size_t text_len);
/*  An actor's failure in the client's words: GW_ERROR names the request
    (its record type) and why (a QMS_REASON_* key); the event answering
    that request, or -1 for none. */
int proto_request_event (uint64_t request_type);
/*  The client's text for a QMS_REASON_* key ("Unknown recipient."); a key
    this gateway does not know reads "Request failed." */
const char *proto_reason_text (qms_str_t reason);
/*  proto_error for a GW_ERROR record's request and reason. */
int proto_actor_error (qms_buf_t *out, uint64_t request_type, qms_str_t reason);
int proto_invalid_user (qms_buf_t *out);
int proto_authorized (qms_buf_t *out);
int proto_login_ok (qms_buf_t *out, qms_str_t token, qms_str_t username,
                    const char *users_json, size_t users_len);
/*  MessageEvent; with a message id and time (ext) when id.len > 0, and for
    a message that waited in the store also the sender's name and key. */
int proto_message_event (qms_buf_t *out, qms_str_t sender, qms_str_t message,
                         qms_str_t id, uint64_t time);
int proto_stored_message_event (qms_buf_t *out, qms_str_t sender, qms_str_t message,
                                qms_str_t id, uint64_t time, qms_str_t sender_name,
                                qms_str_t sender_key);
/*  MessageAckEvent (ext); status is a QMS_ACK_* value.  A rejection carries
    reason as "error" and "valid":false. */
int proto_ack (qms_buf_t *out, uint64_t status, qms_str_t client_id, qms_str_t id,
               uint64_t time, qms_str_t reason);
/*  ext: the answer to one name of a UserLookupRequest. */
int proto_lookup_event (qms_buf_t *out, bool found, bool online, qms_str_t asked,
                        qms_str_t id, qms_str_t name, qms_str_t pubkey);
/*  The n-th id of a ReceiptRequest, or name of a UserLookupRequest. */
size_t proto_receipt_count (const proto_request_t *req);
qms_str_t proto_receipt_id (const proto_request_t *req, size_t n);
/*  A user list: proto_users_begin, proto_users_add for each, proto_users_end
    give the JSON array; proto_userlist_event wraps an array as event 4. */
int proto_users_begin (qms_buf_t *out);
int proto_users_add (qms_buf_t *out, qms_str_t id, qms_str_t name, qms_str_t pubkey);
int proto_users_end (qms_buf_t *out);
int proto_userlist_event (qms_buf_t *out, const char *users_json, size_t users_len);
/*  The same two events in three parts, for a users array sent by reference
    (gateway: one encoding shared by every connection): the text before the
    array, then proto_event_tail after it. */
int proto_login_ok_head (qms_buf_t *out, qms_str_t token, qms_str_t username);
int proto_userlist_head (qms_buf_t *out);
int proto_event_tail (qms_buf_t *out);
/*  ext: changes for "delta" clients.  proto_change_* append one JSON object
    (comma-separated) to a list; proto_changes_event wraps the list as
    {"valid":true,"event":6,"changes":[...]}. */
int proto_change_join (qms_buf_t *out, qms_str_t id, qms_str_t name, qms_str_t pubkey);
int proto_change_leave (qms_buf_t *out, qms_str_t id);
int proto_changes_event (qms_buf_t *out, const char *changes, size_t len);

/*  ext: groups (docs/PROTOCOL.md, "Groups").  The request (a qms_request_t)
    a GW_GROUP_ERROR's op answers. */
int proto_group_op_action (uint64_t op);
/*  The error of a group request (action 7-10) in its shape: event 8 or 9
    with the client's id; for a GroupMessageRequest a rejected
    MessageAckEvent with its group when it had an id, else event 10. */
int proto_group_error (qms_buf_t *out, int action, qms_str_t client_id, qms_str_t group,
                       const char *text, size_t text_len);
/*  The client's text for a group failure: reason a QMS_REASON_* key,
    detail what the router adds (a user id; "id TAB limit" for
    too_many_groups; the limit for group_full: max_members when empty).
    Formatted into buf when it needs the detail. */
const char *proto_group_reason_text (qms_str_t reason, qms_str_t detail, int max_members,
                                     char *buf, size_t size);
/*  GroupEvent in two parts: the head ({"valid":true,"event":8, and the
    requester's "id" when client_id is not empty), then the body the same
    for every recipient ("group":{...},"change":{...}[,"removed":true]}).
    members are GW_GROUP's lines (id TAB name TAB key TAB role), named its
    member ids (lines); gone: the recipients are no longer members.  -1
    when out of memory or the lines or op are malformed. */
int proto_group_event_head (qms_buf_t *out, qms_str_t client_id);
int proto_group_event_body (qms_buf_t *out, uint64_t op, bool gone, qms_str_t id, qms_str_t name,
                            qms_str_t owner, uint64_t epoch, qms_str_t members, qms_str_t by,
                            qms_str_t named);
/*  GroupListEvent: the head (with the client's id), one group object per
    group ({"id","name","owner","epoch","members"}), then the tail (more:
    a part of the list, "more":true). */
int proto_group_list_head (qms_buf_t *out, qms_str_t client_id);
int proto_group_list_add (qms_buf_t *out, qms_str_t id, qms_str_t name, qms_str_t owner,
                          uint64_t epoch, qms_str_t members);
int proto_group_list_end (qms_buf_t *out, bool more);
/*  GroupMessageEvent, live or (with the sender's name and key) stored. */
int proto_group_message_event (qms_buf_t *out, qms_str_t group, qms_str_t sender, qms_str_t message,
                               qms_str_t id, uint64_t time);
int proto_group_stored_event (qms_buf_t *out, qms_str_t group, qms_str_t sender, qms_str_t message,
                              qms_str_t id, uint64_t time, qms_str_t sender_name, qms_str_t sender_key);
/*  MessageAckEvent of a group message: delivered/stored with "members"
    (and "unreached" when that decimal text is not empty or "0"), received
    with "by"; rejected with text (see proto_group_error). */
int proto_group_ack (qms_buf_t *out, uint64_t status, qms_str_t client_id, qms_str_t msg_id,
                     uint64_t time, qms_str_t group, uint64_t members, qms_str_t unreached,
                     qms_str_t by, const char *text);

/*  Append a WebSocket text frame (server to client: FIN, opcode 1, no
    mask) holding payload. */
int proto_ws_frame (qms_buf_t *out, const void *payload, size_t len);

void proto_test (bool verbose);

#ifdef __cplusplus
}
#endif

#endif
