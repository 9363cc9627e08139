/*  qms_password.h - Argon2id password hashes as PHC strings.

    The one place that knows how a password is hashed: auth's workers hash
    and verify with it, and the administration command's reset-password
    hashes with it when no server runs.  Hashing is slow on purpose
    (--argon2-memory, --argon2-iterations): call it from a worker thread or
    a command, never from an event loop.
*/
#ifndef QMS_PASSWORD_H_INCLUDED
#define QMS_PASSWORD_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*  Room for an encoded Argon2id hash with a 16-byte salt and 32-byte output
    (about 100 characters) and for any PHC a store might hold. */
#define QMS_PHC_MAX         256
#define QMS_SALT_BYTES      16
#define QMS_HASH_BYTES      32
/*  Longer passwords are refused (auth says so to the client). */
#define QMS_PASSWORD_MAX    1024

typedef enum {
    QMS_PASSWORD_OK = 0,        /* it matches */
    QMS_PASSWORD_MISMATCH = 1,  /* it does not */
    QMS_PASSWORD_ERROR = 2      /* the PHC could not be used, or out of memory */
} qms_password_result_t;

/*  Hash password into a PHC string (Argon2id, parallelism 1, a fresh
    16-byte salt, 32-byte output).  0, or -1 (bad parameters, no memory;
    logged under actor). */
int qms_password_hash (const void *password, size_t len, uint32_t memory_kib,
                       uint32_t iterations, char *phc, size_t phc_size, const char *actor);

/*  Check password against a PHC string (a qms_password_result_t; errors
    logged under actor). */
int qms_password_verify (const char *phc, const void *password, size_t len, const char *actor);

/*  Read m and t from an Argon2id PHC string; false if it is not one. */
bool qms_password_params (const char *phc, uint32_t *memory_kib, uint32_t *iterations);

void qms_password_test (bool verbose);

#ifdef __cplusplus
}
#endif

#endif
