/*  qms_util.c - time, secrets and names (see qms_util.h). */
#define _GNU_SOURCE
#include "qms_util.h"

#include <arpa/inet.h>
#include <assert.h>
#include <stdlib.h>
#include <locale.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <wctype.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

uint64_t
qms_now_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    return (uint64_t) ts.tv_sec * 1000u + (uint64_t) ts.tv_nsec / 1000000u;
}

uint64_t
qms_mono_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000u + (uint64_t) ts.tv_nsec / 1000000u;
}

uint64_t
qms_mono_us (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000u + (uint64_t) ts.tv_nsec / 1000u;
}

int
qms_random (void *buf, size_t n)
{
    return RAND_bytes ((unsigned char *) buf, (int) n) == 1 ? 0 : -1;
}

size_t
qms_base64url (const void *data, size_t len, char *out)
{
    static const char alphabet [] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const uint8_t *p = (const uint8_t *) data;
    size_t o = 0, i = 0;
    for (; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t) p [i] << 16 | (uint32_t) p [i + 1] << 8 | p [i + 2];
        out [o++] = alphabet [v >> 18 & 63];
        out [o++] = alphabet [v >> 12 & 63];
        out [o++] = alphabet [v >> 6 & 63];
        out [o++] = alphabet [v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t) p [i] << 16;
        out [o++] = alphabet [v >> 18 & 63];
        out [o++] = alphabet [v >> 12 & 63];
    }
    else
    if (len - i == 2) {
        uint32_t v = (uint32_t) p [i] << 16 | (uint32_t) p [i + 1] << 8;
        out [o++] = alphabet [v >> 18 & 63];
        out [o++] = alphabet [v >> 12 & 63];
        out [o++] = alphabet [v >> 6 & 63];
    }
    out [o] = 0;
    return o;
}

int
qms_token_new (char *token)
{
    uint8_t raw [QMS_TOKEN_BYTES];
    if (qms_random (raw, sizeof raw))
        return -1;
    qms_base64url (raw, sizeof raw, token);
    OPENSSL_cleanse (raw, sizeof raw);
    return 0;
}

void
qms_sha256_hex (const void *data, size_t len, char *hex)
{
    static const char digits [] = "0123456789abcdef";
    uint8_t digest [SHA256_DIGEST_LENGTH];
    SHA256 ((const unsigned char *) data, len, digest);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++) {
        hex [2 * i] = digits [digest [i] >> 4];
        hex [2 * i + 1] = digits [digest [i] & 15];
    }
    hex [QMS_HASH_HEX] = 0;
}

int
qms_uuid_new (char *uuid)
{
    uint8_t b [16];
    if (qms_random (b, sizeof b))
        return -1;
    b [6] = (uint8_t) ((b [6] & 0x0f) | 0x40);     /* version 4 */
    b [8] = (uint8_t) ((b [8] & 0x3f) | 0x80);     /* RFC 4122 variant */
    snprintf (uuid, QMS_UUID_CHARS + 1,
              "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
              b [0], b [1], b [2], b [3], b [4], b [5], b [6], b [7],
              b [8], b [9], b [10], b [11], b [12], b [13], b [14], b [15]);
    return 0;
}

bool
qms_ct_equal (const void *a, size_t alen, const void *b, size_t blen)
{
    if (alen != blen)
        return false;
    return CRYPTO_memcmp (a, b, alen) == 0;
}

/*  Decode one code point at *p; returns it, or -1 if not valid UTF-8. */
static int32_t
utf8_next (const uint8_t **p, const uint8_t *end)
{
    const uint8_t *s = *p;
    uint32_t c = s [0];
    int extra;
    uint32_t min;
    if (c < 0x80) { *p = s + 1; return (int32_t) c; }
    else if ((c & 0xe0) == 0xc0) { extra = 1; min = 0x80;    c &= 0x1f; }
    else if ((c & 0xf0) == 0xe0) { extra = 2; min = 0x800;   c &= 0x0f; }
    else if ((c & 0xf8) == 0xf0) { extra = 3; min = 0x10000; c &= 0x07; }
    else return -1;
    if (end - s <= extra)
        return -1;
    for (int i = 1; i <= extra; i++) {
        if ((s [i] & 0xc0) != 0x80)
            return -1;
        c = (c << 6) | (s [i] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return -1;
    *p = s + extra + 1;
    return (int32_t) c;
}

static size_t
utf8_put (uint32_t c, char *out)
{
    if (c < 0x80) { out [0] = (char) c; return 1; }
    if (c < 0x800) {
        out [0] = (char) (0xc0 | c >> 6);
        out [1] = (char) (0x80 | (c & 0x3f));
        return 2;
    }
    if (c < 0x10000) {
        out [0] = (char) (0xe0 | c >> 12);
        out [1] = (char) (0x80 | (c >> 6 & 0x3f));
        out [2] = (char) (0x80 | (c & 0x3f));
        return 3;
    }
    out [0] = (char) (0xf0 | c >> 18);
    out [1] = (char) (0x80 | (c >> 12 & 0x3f));
    out [2] = (char) (0x80 | (c >> 6 & 0x3f));
    out [3] = (char) (0x80 | (c & 0x3f));
    return 4;
}

bool
qms_utf8_valid (const char *s, size_t len)
{
    const uint8_t *p = (const uint8_t *) s, *end = p + len;
    while (p < end) {
        /*  Chat text is mostly ASCII: skip eight such bytes at a time. */
        uint64_t word;
        while (end - p >= 8 && (memcpy (&word, p, 8), (word & 0x8080808080808080ull) == 0))
            p += 8;
        while (p < end && *p < 0x80)
            p++;
        if (p < end && utf8_next (&p, end) < 0)
            return false;
    }
    return true;
}

/*  Code points that must not appear in a name: they are invisible, change
    the direction of text, or break lines, so two names that look alike
    could differ by them. */
static bool
name_forbidden (uint32_t c)
{
    if (c < 0x20 || (c >= 0x7f && c <= 0x9f))
        return true;                            /* C0 and C1 controls */
    if (c == 0xad || c == 0x34f || c == 0x61c || c == 0x115f || c == 0x1160
    ||  c == 0x17b4 || c == 0x17b5 || c == 0x180e || c == 0x3164 || c == 0xffa0)
        return true;                            /* invisible fillers */
    if ((c >= 0x200b && c <= 0x200f) || (c >= 0x2028 && c <= 0x202e)
    ||  (c >= 0x2060 && c <= 0x206f) || c == 0xfeff)
        return true;                            /* zero width, bidi, separators */
    if ((c >= 0xfe00 && c <= 0xfe0f) || (c >= 0xe0000 && c <= 0xe0fff))
        return true;                            /* variation selectors, tags */
    if ((c >= 0xe000 && c <= 0xf8ff) || c >= 0xf0000)
        return true;                            /* private use */
    if ((c & 0xfffe) == 0xfffe || (c >= 0xfdd0 && c <= 0xfdef))
        return true;                            /* noncharacters */
    return false;
}

static bool
is_space (uint32_t c)
{
    return c == ' ' || c == 0xa0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200a)
        || c == 0x202f || c == 0x205f || c == 0x3000;
}

const char *
qms_name_check (const char *name, size_t len)
{
    if (len == 0)
        return "Please fill all fields.";
    if (len > QMS_NAME_MAX_BYTES)
        return "Name is too long (at most 64 characters).";
    const uint8_t *p = (const uint8_t *) name, *end = p + len;
    size_t count = 0;
    int32_t first = -1, last = -1;
    while (p < end) {
        int32_t c = utf8_next (&p, end);
        if (c < 0)
            return "Name is not valid UTF-8.";
        if (name_forbidden ((uint32_t) c))
            return "Name contains a control or invisible character.";
        if (first < 0)
            first = c;
        last = c;
        count++;
    }
    if (count > QMS_NAME_MAX_CHARS)
        return "Name is too long (at most 64 characters).";
    if (is_space ((uint32_t) first) || is_space ((uint32_t) last))
        return "Name must not begin or end with a space.";
    return NULL;
}

/*  towlower_l() with a UTF-8 locale folds every script glibc knows, not
    only ASCII (SQLite's NOCASE does ASCII alone). */
static locale_t s_utf8_locale;
static pthread_once_t s_locale_once = PTHREAD_ONCE_INIT;

static void
locale_init (void)
{
    s_utf8_locale = newlocale (LC_CTYPE_MASK, "C.UTF-8", (locale_t) 0);
}

int
qms_name_key (const char *name, size_t len, char *key)
{
    pthread_once (&s_locale_once, locale_init);
    const uint8_t *p = (const uint8_t *) name, *end = p + len;
    size_t o = 0;
    while (p < end) {
        int32_t c = utf8_next (&p, end);
        if (c < 0)
            return -1;
        uint32_t folded = (uint32_t) c;
        if (s_utf8_locale)
            folded = (uint32_t) towlower_l ((wint_t) c, s_utf8_locale);
        else
        if (c < 0x80)
            folded = (uint32_t) (c >= 'A' && c <= 'Z' ? c + 32 : c);
        if (o + 4 > QMS_NAME_MAX_BYTES)
            return -1;
        o += utf8_put (folded, key + o);
    }
    key [o] = 0;
    return 0;
}

/* ------------------------------------------------------------------------ */

/*  One address into 16 bytes (IPv4 mapped); false when it is none. */
static bool
address_bytes (const char *text, uint8_t out [16])
{
    struct in_addr v4;
    if (inet_pton (AF_INET, text, &v4) == 1) {
        memset (out, 0, 10);
        out [10] = out [11] = 0xff;
        memcpy (out + 12, &v4, 4);
        return true;
    }
    struct in6_addr v6;
    if (inet_pton (AF_INET6, text, &v6) == 1) {
        memcpy (out, &v6, 16);
        return true;
    }
    return false;
}

static bool
is_mapped (const uint8_t addr [16])
{
    static const uint8_t prefix [12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
    return memcmp (addr, prefix, 12) == 0;
}

int
qms_cidr_parse (const char *text, qms_cidr_t *cidr)
{
    char address [INET6_ADDRSTRLEN + 1];
    const char *slash = strchr (text, '/');
    size_t len = slash ? (size_t) (slash - text) : strlen (text);
    if (len == 0 || len >= sizeof address)
        return -1;
    memcpy (address, text, len);
    address [len] = 0;
    if (!address_bytes (address, cidr->addr))
        return -1;
    bool v4 = strchr (address, ':') == NULL;
    int max = v4 ? 32 : 128;
    int bits = max;
    if (slash) {
        char *end;
        long n = strtol (slash + 1, &end, 10);
        if (!slash [1] || *end || n < 0 || n > max || (slash [1] < '0' || slash [1] > '9'))
            return -1;
        bits = (int) n;
    }
    cidr->bits = (uint8_t) (v4 ? bits + 96 : bits);
    /*  Host bits set ("10.0.0.1/8") are refused: a typo, more likely than not. */
    for (int bit = cidr->bits; bit < 128; bit++)
        if (cidr->addr [bit / 8] & (0x80 >> (bit % 8)))
            return -1;
    return 0;
}

bool
qms_cidr_contains (const qms_cidr_t *cidr, const char *address)
{
    uint8_t addr [16];
    if (!address_bytes (address, addr))
        return false;
    int full = cidr->bits / 8, rest = cidr->bits % 8;
    if (memcmp (addr, cidr->addr, (size_t) full) != 0)
        return false;
    if (rest) {
        uint8_t mask = (uint8_t) (0xff << (8 - rest));
        if ((addr [full] & mask) != (cidr->addr [full] & mask))
            return false;
    }
    return true;
}

void
qms_cidr_format (const qms_cidr_t *cidr, char *out, size_t size)
{
    char text [INET6_ADDRSTRLEN];
    if (is_mapped (cidr->addr) && cidr->bits >= 96) {
        inet_ntop (AF_INET, cidr->addr + 12, text, sizeof text);
        snprintf (out, size, "%s/%d", text, cidr->bits - 96);
    }
    else {
        inet_ntop (AF_INET6, cidr->addr, text, sizeof text);
        snprintf (out, size, "%s/%d", text, cidr->bits);
    }
}

const char *
qms_http_reason (int status)
{
    switch (status) {
        case 200: return "OK";
        case 301: return "Moved Permanently";
        case 400: return "Bad Request";
        case 403: return "Forbidden";
        case 404: return "Not Found";
        case 405: return "Method Not Allowed";
        case 408: return "Request Timeout";
        case 414: return "URI Too Long";
        case 431: return "Request Header Fields Too Large";
        case 503: return "Service Unavailable";
        default:  return "Internal Server Error";
    }
}

void
qms_util_test (bool verbose)
{
    if (verbose)
        printf (" * qms_util: ");

    /*  Address ranges. */
    qms_cidr_t cidr;
    char range [64];
    assert (qms_cidr_parse ("10.0.0.0/8", &cidr) == 0);
    assert (qms_cidr_contains (&cidr, "10.255.1.2") && qms_cidr_contains (&cidr, "::ffff:10.0.0.1"));
    assert (!qms_cidr_contains (&cidr, "11.0.0.1") && !qms_cidr_contains (&cidr, "nonsense"));
    qms_cidr_format (&cidr, range, sizeof range);
    assert (strcmp (range, "10.0.0.0/8") == 0);
    assert (qms_cidr_parse ("192.0.2.7", &cidr) == 0 && cidr.bits == 128);
    assert (qms_cidr_contains (&cidr, "192.0.2.7") && !qms_cidr_contains (&cidr, "192.0.2.8"));
    assert (qms_cidr_parse ("172.16.0.0/12", &cidr) == 0);
    assert (qms_cidr_contains (&cidr, "172.31.255.255") && !qms_cidr_contains (&cidr, "172.32.0.0"));
    assert (qms_cidr_parse ("2001:db8::/32", &cidr) == 0);
    assert (qms_cidr_contains (&cidr, "2001:db8:1::5") && !qms_cidr_contains (&cidr, "2001:db9::1"));
    assert (!qms_cidr_contains (&cidr, "10.0.0.1"));
    qms_cidr_format (&cidr, range, sizeof range);
    assert (strcmp (range, "2001:db8::/32") == 0);
    assert (qms_cidr_parse ("0.0.0.0/0", &cidr) == 0 && qms_cidr_contains (&cidr, "8.8.8.8")
            && !qms_cidr_contains (&cidr, "2001:db8::1"));
    assert (qms_cidr_parse ("::1", &cidr) == 0 && qms_cidr_contains (&cidr, "::1"));
    const char *bad [] = { "", "/8", "10.0.0.0/", "10.0.0.0/33", "10.0.0.0/-1", "10.0.0.1/8",
                           "10.0.0.0/8x", "host.example", "10.0.0.0/ 8", "2001:db8::/129", NULL };
    for (int i = 0; bad [i]; i++)
        assert (qms_cidr_parse (bad [i], &cidr) == -1);

    uint64_t now = qms_now_ms ();
    assert (now > 1700000000000ull);
    uint64_t m1 = qms_mono_ms (), m2 = qms_mono_ms ();
    assert (m2 >= m1);

    char t1 [QMS_TOKEN_CHARS + 1], t2 [QMS_TOKEN_CHARS + 1];
    assert (qms_token_new (t1) == 0 && qms_token_new (t2) == 0);
    assert (strlen (t1) == QMS_TOKEN_CHARS);
    assert (strcmp (t1, t2) != 0);
    for (size_t i = 0; i < QMS_TOKEN_CHARS; i++)
        assert (strchr ("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", t1 [i]));

    /*  RFC 4648 test vectors, written the url-safe way without padding. */
    char b64 [32];
    assert (qms_base64url ("", 0, b64) == 0 && strcmp (b64, "") == 0);
    qms_base64url ("f", 1, b64);      assert (strcmp (b64, "Zg") == 0);
    qms_base64url ("fo", 2, b64);     assert (strcmp (b64, "Zm8") == 0);
    qms_base64url ("foo", 3, b64);    assert (strcmp (b64, "Zm9v") == 0);
    qms_base64url ("foobar", 6, b64); assert (strcmp (b64, "Zm9vYmFy") == 0);
    qms_base64url ("\xfb\xff", 2, b64); assert (strcmp (b64, "-_8") == 0);

    char hex [QMS_HASH_HEX + 1];
    qms_sha256_hex ("abc", 3, hex);
    assert (strcmp (hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0);

    char u1 [QMS_UUID_CHARS + 1], u2 [QMS_UUID_CHARS + 1];
    assert (qms_uuid_new (u1) == 0 && qms_uuid_new (u2) == 0);
    assert (strlen (u1) == 36 && u1 [14] == '4' && strchr ("89ab", u1 [19]));
    assert (u1 [8] == '-' && u1 [13] == '-' && u1 [18] == '-' && u1 [23] == '-');
    assert (strcmp (u1, u2) != 0);

    assert (qms_ct_equal ("abc", 3, "abc", 3));
    assert (!qms_ct_equal ("abc", 3, "abd", 3));
    assert (!qms_ct_equal ("abc", 3, "abcd", 4));
    assert (qms_ct_equal ("", 0, "", 0));

    assert (qms_utf8_valid ("h\xc3\xa9llo", 6));
    assert (!qms_utf8_valid ("\xc0\xaf", 2));            /* overlong '/' */
    assert (!qms_utf8_valid ("\xed\xa0\x80", 3));        /* surrogate */
    assert (!qms_utf8_valid ("\xf4\x90\x80\x80", 4));    /* > U+10FFFF */
    assert (!qms_utf8_valid ("\xe2\x82", 2));            /* truncated */
    /*  The eight-bytes-at-a-time ASCII skip: a bad byte at every offset of
        a long ASCII text is still found, and good text around it passes. */
    char text [40];
    memset (text, 'a', sizeof text);
    assert (qms_utf8_valid (text, sizeof text));
    for (size_t at = 0; at < sizeof text; at++) {
        text [at] = (char) 0xff;
        assert (!qms_utf8_valid (text, sizeof text));
        text [at] = (char) 0xc3;                        /* a lead byte cut short */
        assert (!qms_utf8_valid (text, at + 1));
        if (at + 1 < sizeof text) {
            text [at + 1] = (char) 0xa9;                /* é */
            assert (qms_utf8_valid (text, sizeof text));
            text [at + 1] = 'a';
        }
        text [at] = 'a';
    }

    assert (qms_name_check ("alice", 5) == NULL);
    assert (qms_name_check ("J\xc3\xbcrgen M\xc3\xbcller", 15) == NULL);
    assert (qms_name_check ("", 0) != NULL);
    assert (qms_name_check ("a\nb", 3) != NULL);
    assert (qms_name_check ("a\x7f", 2) != NULL);
    assert (qms_name_check (" alice", 6) != NULL);
    assert (qms_name_check ("alice ", 6) != NULL);
    assert (qms_name_check ("al\xe2\x80\x8bice", 8) != NULL);   /* zero width space */
    assert (qms_name_check ("al\xe2\x80\xaeice", 8) != NULL);   /* right-to-left override */
    assert (qms_name_check ("\xff", 1) != NULL);
    char long_name [80];
    memset (long_name, 'x', sizeof long_name);
    assert (qms_name_check (long_name, 64) == NULL);
    assert (qms_name_check (long_name, 65) != NULL);
    /*  64 two-byte characters are fine: the limit counts characters. */
    char wide [128];
    for (int i = 0; i < 64; i++) { wide [2 * i] = (char) 0xc3; wide [2 * i + 1] = (char) 0xa9; }
    assert (qms_name_check (wide, 128) == NULL);

    char k1 [QMS_NAME_MAX_BYTES + 1], k2 [QMS_NAME_MAX_BYTES + 1];
    assert (qms_name_key ("Alice", 5, k1) == 0 && strcmp (k1, "alice") == 0);
    assert (qms_name_key ("ALICE", 5, k2) == 0 && strcmp (k1, k2) == 0);
    /*  Beyond ASCII: "ÉLODIE" and "élodie" share a key, as do Cyrillic cases. */
    assert (qms_name_key ("\xc3\x89LODIE", 7, k1) == 0);
    assert (qms_name_key ("\xc3\xa9lodie", 7, k2) == 0);
    assert (strcmp (k1, k2) == 0);
    assert (qms_name_key ("\xd0\x90\xd0\x9d\xd0\x9d\xd0\x90", 8, k1) == 0);    /* АННА */
    assert (qms_name_key ("\xd0\xb0\xd0\xbd\xd0\xbd\xd0\xb0", 8, k2) == 0);    /* анна */
    assert (strcmp (k1, k2) == 0);
    assert (qms_name_key ("\xff", 1, k1) == -1);

    if (verbose)
        printf ("OK\n");
}
