/*  enums.h - the client protocol's enumerations, defined once.

    The gateway parses and answers with these numbers and the HTTP server
    publishes them as /enums.js, /enums.mjs and /enums.json from the tables
    below, so a new value appended here reaches clients by itself.  Values
    are only ever appended (PROTOCOL.md).
*/
#ifndef ENUMS_H_INCLUDED
#define ENUMS_H_INCLUDED

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    QMS_REQ_LOGIN = 0,
    QMS_REQ_REGISTER = 1,
    QMS_REQ_LOGOUT = 2,
    QMS_REQ_MESSAGE = 3,
    QMS_REQ_AUTHORIZE = 4,
    QMS_REQ_RECEIPT = 5,        /* ext: confirm received messages */
    QMS_REQ_USER_LOOKUP = 6,    /* ext: find users by name ("none" presence) */
    QMS_REQ_GROUP_CREATE = 7,   /* ext: a new group */
    QMS_REQ_GROUP_UPDATE = 8,   /* ext: add, remove, promote, demote, rename, leave */
    QMS_REQ_GROUP_LIST = 9,     /* ext: the caller's groups */
    QMS_REQ_GROUP_MESSAGE = 10, /* ext: a message to a group */
    QMS_REQ_COUNT
} qms_request_t;

typedef enum {
    QMS_EV_AUTHORIZATION = 0,
    QMS_EV_LOGIN = 1,
    QMS_EV_MESSAGE = 2,
    QMS_EV_INVALID_USER = 3,
    QMS_EV_USERLIST = 4,
    QMS_EV_MESSAGE_ACK = 5,     /* ext: what became of a message with an id */
    QMS_EV_USERLIST_DELTA = 6,  /* ext: who joined and left, for "delta" presence */
    QMS_EV_USER_LOOKUP = 7,     /* ext: the answer to a UserLookupRequest */
    QMS_EV_GROUP = 8,           /* ext: a group and what changed */
    QMS_EV_GROUP_LIST = 9,      /* ext: the answer to a GroupListRequest */
    QMS_EV_GROUP_MESSAGE = 10,  /* ext: a message to a group */
    QMS_EV_COUNT
} qms_event_t;

typedef struct {
    const char *name;
    int value;
} qms_enum_entry_t;

/*  Names as clients know them ("LoginRequest", "MessageEvent"), in value
    order; each table ends with { NULL, 0 }. */
extern const qms_enum_entry_t qms_request_names [];
extern const qms_enum_entry_t qms_event_names [];

#ifdef __cplusplus
}
#endif

#endif
