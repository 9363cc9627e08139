/*  enums.c - names of the protocol's enumerations (see enums.h). */
#include "enums.h"

const qms_enum_entry_t qms_request_names [] = {
    { "LoginRequest", QMS_REQ_LOGIN },
    { "RegisterRequest", QMS_REQ_REGISTER },
    { "LogoutRequest", QMS_REQ_LOGOUT },
    { "MessageRequest", QMS_REQ_MESSAGE },
    { "AuthorizeRequest", QMS_REQ_AUTHORIZE },
    { "ReceiptRequest", QMS_REQ_RECEIPT },
    { "UserLookupRequest", QMS_REQ_USER_LOOKUP },
    { "GroupCreateRequest", QMS_REQ_GROUP_CREATE },
    { "GroupUpdateRequest", QMS_REQ_GROUP_UPDATE },
    { "GroupListRequest", QMS_REQ_GROUP_LIST },
    { "GroupMessageRequest", QMS_REQ_GROUP_MESSAGE },
    { 0, 0 }
};

const qms_enum_entry_t qms_event_names [] = {
    { "AuthorizationEvent", QMS_EV_AUTHORIZATION },
    { "LoginEvent", QMS_EV_LOGIN },
    { "MessageEvent", QMS_EV_MESSAGE },
    { "InvalidUserEvent", QMS_EV_INVALID_USER },
    { "UserlistChangeEvent", QMS_EV_USERLIST },
    { "MessageAckEvent", QMS_EV_MESSAGE_ACK },
    { "UserlistDeltaEvent", QMS_EV_USERLIST_DELTA },
    { "UserLookupEvent", QMS_EV_USER_LOOKUP },
    { "GroupEvent", QMS_EV_GROUP },
    { "GroupListEvent", QMS_EV_GROUP_LIST },
    { "GroupMessageEvent", QMS_EV_GROUP_MESSAGE },
    { 0, 0 }
};
