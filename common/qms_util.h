/*  qms_util.h - small helpers every actor uses: time, secrets, names.

    Secrets come from OpenSSL's CSPRNG and are compared in constant time.
    Names are validated and case-folded here, once, so that the rule "names
    are unique case-insensitively" has one definition.
*/
#ifndef QMS_UTIL_H_INCLUDED
#define QMS_UTIL_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*  A session token is 32 random bytes (256 bits), written in base64url
    without padding: 43 characters. */
#define QMS_TOKEN_BYTES      32
#define QMS_TOKEN_CHARS      43
/*  What is stored and compared is the SHA-256 of the token, in hex. */
#define QMS_HASH_HEX         64
/*  User ids are random RFC 4122 version 4 UUIDs, 36 characters. */
#define QMS_UUID_CHARS       36
/*  A name is 1..64 characters (code points) of printable UTF-8. */
#define QMS_NAME_MAX_CHARS   64
#define QMS_NAME_MAX_BYTES   (QMS_NAME_MAX_CHARS * 4)

/*  Milliseconds since the Unix epoch, and a monotonic clock in ms. */
uint64_t qms_now_ms (void);
uint64_t qms_mono_ms (void);
uint64_t qms_mono_us (void);

/*  Fill buf with n bytes from the CSPRNG; returns 0, or -1 on failure. */
int qms_random (void *buf, size_t n);

/*  A new token (QMS_TOKEN_CHARS + NUL) from the CSPRNG; 0 or -1. */
int qms_token_new (char *token);

/*  SHA-256 of data as lowercase hex (QMS_HASH_HEX + NUL). */
void qms_sha256_hex (const void *data, size_t len, char *hex);

/*  A new random user id (QMS_UUID_CHARS + NUL); 0 or -1. */
int qms_uuid_new (char *uuid);

/*  base64url without padding.  out must hold 4 * ceil(len / 3) + 1. */
size_t qms_base64url (const void *data, size_t len, char *out);

/*  Compare two byte strings in time that depends only on their lengths. */
bool qms_ct_equal (const void *a, size_t alen, const void *b, size_t blen);

/*  True if s is valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
bool qms_utf8_valid (const char *s, size_t len);

/*  Check a user name: 1..64 code points of valid UTF-8, none of them a
    control character, a line or paragraph separator, or a format character
    that hides text; no space at either end.  Returns NULL if the name is
    fine, else the reason to show the client. */
const char *qms_name_check (const char *name, size_t len);

/*  The case-folded form of a valid name, used as its unique key: names
    that differ only in letter case share one key.  key must hold
    QMS_NAME_MAX_BYTES + 1.  Returns 0, or -1 if the name is not valid
    UTF-8. */
int qms_name_key (const char *name, size_t len, char *key);

/*  An address range (CIDR): IPv4 kept as IPv4-mapped IPv6, so one test
    covers "127.0.0.1" and "::ffff:127.0.0.1" alike. */
typedef struct {
    uint8_t addr [16];
    uint8_t bits;               /* prefix length over the 128 */
} qms_cidr_t;

/*  "10.0.0.0/8", "192.0.2.7" (/32), "2001:db8::/32", "::1" (/128).  0, or
    -1 when text is none of these (host bits set are an error too: say
    what you mean). */
int qms_cidr_parse (const char *text, qms_cidr_t *cidr);
/*  Whether address (the text of one IPv4 or IPv6 address) is inside. */
bool qms_cidr_contains (const qms_cidr_t *cidr, const char *address);
/*  "10.0.0.0/8" back (size >= 64). */
void qms_cidr_format (const qms_cidr_t *cidr, char *out, size_t size);

/*  The reason phrase of an HTTP status ("Not Found"); every HTTP answer
    this server writes takes it from here. */
const char *qms_http_reason (int status);

void qms_util_test (bool verbose);

#ifdef __cplusplus
}
#endif

#endif
