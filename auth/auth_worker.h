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

#ifdef __cplusplus
extern "C" {
#endif

/*  Room for an encoded Argon2id hash with a 16-byte salt and 32-byte output
    (about 100 characters) and for any PHC a store might hold. */
#define AUTH_PHC_MAX        256
#define AUTH_SALT_BYTES     16
#define AUTH_HASH_BYTES     32
#define AUTH_PASSWORD_MAX   1024

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

/*  Hash password into a PHC string (Argon2id, parallelism 1, a fresh
    16-byte salt, 32-byte output).  0, or -1 (bad parameters, no memory). */
int auth_hash (const void *password, size_t len, uint32_t memory_kib,
               uint32_t iterations, char *phc, size_t phc_size);

/*  Read m and t from an Argon2id PHC string; false if it is not one. */
bool auth_phc_params (const char *phc, uint32_t *memory_kib, uint32_t *iterations);

void auth_worker_test (bool verbose);

#ifdef __cplusplus
}
#endif

#endif
