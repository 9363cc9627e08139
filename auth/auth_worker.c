/*  auth_worker.c - Argon2id hashing and verification threads (see
    auth_worker.h).

    A job is one ZeroMQ message: a fixed header, then the password bytes,
    then the PHC bytes.  A result is one message holding an auth_result_t.
    Both ends are the same binary, so the structs travel as they are.
*/
#include "auth_worker.h"
#include "qms_actor.h"
#include "qms_log.h"
#include "qms_password.h"
#include "qms_util.h"

#include <argon2.h>
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>

#define WORKER_ACTOR "auth"

typedef struct {
    uint64_t id;
    uint32_t kind;
    uint32_t memory_kib;
    uint32_t iterations;
    uint32_t rehash;
    uint32_t password_len;
    uint32_t phc_len;
} job_header_t;

int
auth_job_send (void *socket, const auth_job_t *job)
{
    if (job->password.len > AUTH_PASSWORD_MAX || job->phc.len >= AUTH_PHC_MAX)
        return -1;
    job_header_t header;
    memset (&header, 0, sizeof header);
    header.id = job->id;
    header.kind = (uint32_t) job->kind;
    header.memory_kib = job->memory_kib;
    header.iterations = job->iterations;
    header.rehash = job->rehash;
    header.password_len = job->password.len;
    header.phc_len = job->phc.len;

    size_t size = sizeof header + header.password_len + header.phc_len;
    zmq_msg_t msg;
    if (zmq_msg_init_size (&msg, size))
        return -1;
    uint8_t *p = (uint8_t *) zmq_msg_data (&msg);
    memcpy (p, &header, sizeof header);
    if (header.password_len)
        memcpy (p + sizeof header, job->password.ptr, header.password_len);
    if (header.phc_len)
        memcpy (p + sizeof header + header.password_len, job->phc.ptr, header.phc_len);
    qms_sent_mark (socket);
    if (zmq_msg_send (&msg, socket, ZMQ_DONTWAIT) < 0) {
        OPENSSL_cleanse (zmq_msg_data (&msg), size);
        zmq_msg_close (&msg);
        return -1;
    }
    return 0;
}

int
auth_result_recv (void *socket, auth_result_t *result)
{
    int rc = zmq_recv (socket, result, sizeof *result, ZMQ_DONTWAIT);
    if (rc < 0)
        return errno == EAGAIN ? 0 : -1;
    if ((size_t) rc != sizeof *result)
        return -1;
    result->phc [AUTH_PHC_MAX - 1] = 0;
    return 1;
}

/* ------------------------------------------------------------------------ */

static void
run_verify (const job_header_t *job, const char *password, const char *phc_bytes,
            auth_result_t *result)
{
    char phc [AUTH_PHC_MAX];
    memcpy (phc, phc_bytes, job->phc_len);
    phc [job->phc_len] = 0;
    int rc = qms_password_verify (phc, password, job->password_len, WORKER_ACTOR);
    if (rc != QMS_PASSWORD_OK) {
        result->status = rc == QMS_PASSWORD_MISMATCH ? AUTH_JOB_MISMATCH : AUTH_JOB_ERROR;
        return;
    }
    result->status = AUTH_JOB_OK;
    /*  A failed rehash costs nothing but strength: the login stands. */
    if (job->rehash
    &&  qms_password_hash (password, job->password_len, job->memory_kib, job->iterations,
                           result->phc, sizeof result->phc, WORKER_ACTOR))
        result->phc [0] = 0;
}

static void
run_job (const uint8_t *data, size_t size, auth_result_t *result)
{
    job_header_t job;
    memset (result, 0, sizeof *result);
    result->status = AUTH_JOB_ERROR;
    if (size < sizeof job)
        return;
    memcpy (&job, data, sizeof job);
    result->id = job.id;
    result->kind = (int) job.kind;
    if (job.password_len > AUTH_PASSWORD_MAX || job.phc_len >= AUTH_PHC_MAX
    ||  size != sizeof job + job.password_len + job.phc_len)
        return;
    const char *password = (const char *) data + sizeof job;
    if (job.kind == AUTH_JOB_VERIFY)
        run_verify (&job, password, password + job.password_len, result);
    else
    if (job.kind == AUTH_JOB_HASH)
        result->status = qms_password_hash (password, job.password_len, job.memory_kib, job.iterations,
                                            result->phc, sizeof result->phc, WORKER_ACTOR)
                       ? AUTH_JOB_ERROR : AUTH_JOB_OK;
}

/*  Take one job, run it, wipe it, answer. */
static void
worker_one (void *jobs)
{
    zmq_msg_t msg;
    zmq_msg_init (&msg);
    if (zmq_msg_recv (&msg, jobs, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close (&msg);
        return;
    }
    auth_result_t result;
    run_job ((const uint8_t *) zmq_msg_data (&msg), zmq_msg_size (&msg), &result);
    OPENSSL_cleanse (zmq_msg_data (&msg), zmq_msg_size (&msg));
    zmq_msg_close (&msg);
    if (zmq_send (jobs, &result, sizeof result, ZMQ_DONTWAIT) < 0)
        qms_error (WORKER_ACTOR, "event=result_lost id=%" PRIu64 " reason=\"%s\"",
                   result.id, zmq_strerror (errno));
    OPENSSL_cleanse (&result, sizeof result);
}

void
auth_worker_actor (zsock_t *pipe, void *args)
{
    zsock_t *jobs = zsock_new (ZMQ_PAIR);
    if (jobs) {
        qms_socket_tune (jobs);
        if (zsock_connect (jobs, "%s", (const char *) args))
            zsock_destroy (&jobs);
    }
    zsock_signal (pipe, 0);
    if (!jobs) {
        qms_actor_ready (pipe, "cannot connect the worker's job socket");
        return;
    }
    qms_actor_ready (pipe, NULL);

    zmq_pollitem_t items [] = {
        { zsock_resolve (pipe), 0, ZMQ_POLLIN, 0 },
        { zsock_resolve (jobs), 0, ZMQ_POLLIN, 0 },
    };
    while (true) {
        if (zmq_poll (items, 2, 1000) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        /*  The pipe first, and one job per turn: $TERM never waits behind
            a queue of hashes. */
        if (items [0].revents & ZMQ_POLLIN) {
            char *command = zstr_recv (pipe);
            bool stop = !command || streq (command, "$TERM");
            zstr_free (&command);
            if (stop)
                break;
        }
        else
        if (items [1].revents & ZMQ_POLLIN)
            worker_one (zsock_resolve (jobs));
    }
    zsock_destroy (&jobs);
}

/* ------------------------------------------------------------------------ */

/*  Wait up to 10 s for one result (hashing under valgrind is slow). */
static int
wait_result (zsock_t *sock, auth_result_t *result)
{
    zmq_pollitem_t item = { zsock_resolve (sock), 0, ZMQ_POLLIN, 0 };
    int64_t deadline = zclock_mono () + 10000;
    while (zclock_mono () < deadline) {
        int rc = auth_result_recv (zsock_resolve (sock), result);
        if (rc)
            return rc;
        zmq_poll (&item, 1, 100);
    }
    return 0;
}

void
auth_worker_test (bool verbose)
{
    if (verbose)
        printf (" * auth_worker: ");

    uint32_t m, t;
    zsock_t *sock = zsock_new (ZMQ_PAIR);
    assert (sock);
    qms_socket_tune (sock);
    assert (zsock_bind (sock, "inproc://auth-worker-test") == 0);
    zactor_t *worker = qms_actor_start (auth_worker_actor, "inproc://auth-worker-test", "auth");
    assert (worker);
    void *raw = zsock_resolve (sock);
    auth_result_t result;

    /*  Hash, then verify right and wrong, then verify with a rehash. */
    auth_job_t job = { .id = 7, .kind = AUTH_JOB_HASH, .memory_kib = 256, .iterations = 1,
                       .password = qms_str ("hunter2") };
    assert (auth_job_send (raw, &job) == 0);
    assert (wait_result (sock, &result) == 1);
    assert (result.id == 7 && result.kind == AUTH_JOB_HASH && result.status == AUTH_JOB_OK);
    assert (qms_password_params (result.phc, &m, &t) && m == 256 && t == 1);
    char stored [AUTH_PHC_MAX];
    strcpy (stored, result.phc);

    job = (auth_job_t) { .id = 8, .kind = AUTH_JOB_VERIFY, .password = qms_str ("hunter2"),
                         .phc = qms_str (stored) };
    assert (auth_job_send (raw, &job) == 0);
    job.id = 9;
    job.password = qms_str ("hunter3");
    assert (auth_job_send (raw, &job) == 0);
    assert (wait_result (sock, &result) == 1);
    assert (result.id == 8 && result.status == AUTH_JOB_OK && result.phc [0] == 0);
    assert (wait_result (sock, &result) == 1);
    assert (result.id == 9 && result.status == AUTH_JOB_MISMATCH);

    job = (auth_job_t) { .id = 10, .kind = AUTH_JOB_VERIFY, .password = qms_str ("hunter2"),
                         .phc = qms_str (stored), .rehash = true, .memory_kib = 512,
                         .iterations = 2 };
    assert (auth_job_send (raw, &job) == 0);
    assert (wait_result (sock, &result) == 1);
    assert (result.id == 10 && result.status == AUTH_JOB_OK);
    assert (qms_password_params (result.phc, &m, &t) && m == 512 && t == 2);
    assert (argon2id_verify (result.phc, "hunter2", 7) == ARGON2_OK);

    /*  A PHC that is not one is an error, not a mismatch. */
    job = (auth_job_t) { .id = 11, .kind = AUTH_JOB_VERIFY, .password = qms_str ("x"),
                         .phc = qms_str ("$argon2id$garbage") };
    assert (auth_job_send (raw, &job) == 0);
    assert (wait_result (sock, &result) == 1);
    assert (result.id == 11 && result.status == AUTH_JOB_ERROR);

    /*  Oversized inputs are refused before they are queued. */
    char big [AUTH_PASSWORD_MAX + 1];
    memset (big, 'a', sizeof big);
    job = (auth_job_t) { .id = 12, .kind = AUTH_JOB_HASH, .password = qms_strn (big, sizeof big) };
    assert (auth_job_send (raw, &job) == -1);

    /*  A malformed job gets an error result, and the worker lives on. */
    assert (zmq_send (raw, "short", 5, 0) == 5);
    assert (wait_result (sock, &result) == 1);
    assert (result.status == AUTH_JOB_ERROR);

    /*  $TERM is read before a queue of jobs: stopping waits for the job
        in hand at most, not for the queue (50 jobs would take 50 x one). */
    job = (auth_job_t) { .id = 13, .kind = AUTH_JOB_HASH, .memory_kib = 8192, .iterations = 2,
                         .password = qms_str ("slow") };
    int64_t started = zclock_mono ();
    assert (auth_job_send (raw, &job) == 0);
    assert (wait_result (sock, &result) == 1 && result.status == AUTH_JOB_OK);
    int64_t one_job = zclock_mono () - started;
    for (int i = 0; i < 50; i++)
        assert (auth_job_send (raw, &job) == 0);
    started = zclock_mono ();
    zactor_destroy (&worker);
    assert (zclock_mono () - started < 10 * one_job + 50);
    zsock_destroy (&sock);

    if (verbose)
        printf ("OK\n");
}
