/*  auth_worker.h - Argon2id on worker threads, so the auth actor never waits.

    The auth actor binds one PAIR socket per worker (inproc) and starts the
    worker as a zactor that connects to it.  Jobs go down that socket and
    results come back on it; the zactor pipe carries only $TERM, which the
    worker reads before every job so that stopping never waits for a queue.

    A job message carries its own copy of the password (and of the PHC to
    verify against); the worker wipes the password from the message buffer
    once it is done with it.  Nothing is shared between threads but
    messages.
*/
#ifndef AUTH_WORKER_H_INCLUDED
#define AUTH_WORKER_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>
#include "qms_msg.h"
#include "qms_password.h"

#ifdef __cplusplus
extern "C" {
#endif

/*  The sizes of qms_password.h, by their job here. */
#define AUTH_PHC_MAX        QMS_PHC_MAX
#define AUTH_PASSWORD_MAX   QMS_PASSWORD_MAX

typedef enum {
    AUTH_JOB_VERIFY = 1,    /* password against phc; optionally rehash */
    AUTH_JOB_HASH = 2       /* a new PHC for password */
} auth_job_kind_t;

typedef enum {
    AUTH_JOB_OK = 0,        /* verified, or hashed */
    AUTH_JOB_MISMATCH = 1,  /* wrong password */
    AUTH_JOB_ERROR = 2      /* the PHC could not be used, or out of memory */
} auth_job_status_t;

typedef struct {
    uint64_t id;            /* echoed in the result */
    int kind;               /* auth_job_kind_t */
    uint32_t memory_kib;    /* HASH, and the rehash after VERIFY */
    uint32_t iterations;
    bool rehash;            /* VERIFY: on a match, also hash anew */
    qms_str_t password;     /* at most AUTH_PASSWORD_MAX bytes */
    qms_str_t phc;          /* VERIFY: the stored PHC */
} auth_job_t;

typedef struct {
    uint64_t id;
    int kind;
    int status;             /* auth_job_status_t */
    char phc [AUTH_PHC_MAX];/* HASH: the new PHC; VERIFY: the rehash or "" */
} auth_result_t;

/*  Queue a job on a raw socket handle; never blocks.  0, or -1. */
int auth_job_send (void *socket, const auth_job_t *job);

/*  Read one result without blocking: 1 read, 0 none waiting, -1 malformed. */
int auth_result_recv (void *socket, auth_result_t *result);

/*  zactor body; args is the endpoint (const char *) to connect the job
    socket to, read during set-up only. */
void auth_worker_actor (zsock_t *pipe, void *args);

void auth_worker_test (bool verbose);

#ifdef __cplusplus
}
#endif

#endif
