/*  qms_password.c - Argon2id password hashes (see qms_password.h). */
#include "qms_password.h"
#include "qms_log.h"
#include "qms_util.h"

#include <argon2.h>
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

int
qms_password_hash (const void *password, size_t len, uint32_t memory_kib,
                   uint32_t iterations, char *phc, size_t phc_size, const char *actor)
{
    uint8_t salt [QMS_SALT_BYTES];
    if (qms_random (salt, sizeof salt))
        return -1;
    int rc = argon2id_hash_encoded (iterations, memory_kib, 1, password, len,
                                    salt, sizeof salt, QMS_HASH_BYTES, phc, phc_size);
    if (rc != ARGON2_OK) {
        qms_warn (actor, "event=hash_failed m=%" PRIu32 " t=%" PRIu32 " reason=\"%s\"",
                  memory_kib, iterations, argon2_error_message (rc));
        return -1;
    }
    return 0;
}

int
qms_password_verify (const char *phc, const void *password, size_t len, const char *actor)
{
    int rc = argon2id_verify (phc, password, len);
    if (rc == ARGON2_VERIFY_MISMATCH)
        return QMS_PASSWORD_MISMATCH;
    if (rc != ARGON2_OK) {
        qms_warn (actor, "event=verify_failed reason=\"%s\"", argon2_error_message (rc));
        return QMS_PASSWORD_ERROR;
    }
    return QMS_PASSWORD_OK;
}

bool
qms_password_params (const char *phc, uint32_t *memory_kib, uint32_t *iterations)
{
    unsigned version, m, t, p;
    if (sscanf (phc, "$argon2id$v=%u$m=%u,t=%u,p=%u$", &version, &m, &t, &p) != 4)
        return false;
    *memory_kib = m;
    *iterations = t;
    return true;
}

void
qms_password_test (bool verbose)
{
    if (verbose)
        printf (" * qms_password: ");
    char phc [QMS_PHC_MAX], again [QMS_PHC_MAX];
    assert (qms_password_hash ("pw", 2, 256, 1, phc, sizeof phc, "test") == 0);
    assert (strncmp (phc, "$argon2id$v=19$m=256,t=1,p=1$", 29) == 0);
    assert (qms_password_hash ("pw", 2, 256, 1, again, sizeof again, "test") == 0);
    assert (strcmp (phc, again) != 0);                  /* a fresh salt each time */
    assert (qms_password_verify (phc, "pw", 2, "test") == QMS_PASSWORD_OK);
    assert (qms_password_verify (phc, "pW", 2, "test") == QMS_PASSWORD_MISMATCH);
    assert (qms_password_verify ("$argon2id$garbage", "pw", 2, "test") == QMS_PASSWORD_ERROR);
    uint32_t m, t;
    assert (qms_password_params (phc, &m, &t) && m == 256 && t == 1);
    assert (!qms_password_params ("$argon2i$v=19$m=256,t=1,p=1$x$y", &m, &t));
    assert (!qms_password_params ("", &m, &t));
    /*  libargon2 refuses memory below 8 KiB per lane. */
    assert (qms_password_hash ("pw", 2, 4, 1, phc, sizeof phc, "test") == -1);
    if (verbose)
        printf ("OK\n");
}
