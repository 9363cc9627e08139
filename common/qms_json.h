/*  qms_json.h - JSON strings out, written once.

    Every JSON string the server writes (client events, log lines, the
    published enums, metrics answers) goes through one rule set,
    qms_json_char: '"' and '\' escaped, control bytes as \n \r \t \b \f or
    \u00XX, and, by flag, '<' (a string inside a <script>) or what a
    terminal must not see (bytes that are not UTF-8 become U+FFFD, DEL and
    C1 controls are escaped).  qms_json_string writes a whole quoted string
    into a qms_buf_t; without flags it copies runs that need no escape in
    one go (the client events' hot path).
*/
#ifndef QMS_JSON_H_INCLUDED
#define QMS_JSON_H_INCLUDED

#include "qms_msg.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define QMS_JSON_HTML   1u      /* also escape '<': "</script>" can never appear */
#define QMS_JSON_CLEAN  2u      /* not UTF-8 -> U+FFFD; DEL and C1 controls escaped */

/*  The escaped form of the character at p (len > 0 bytes left) into esc
    (at least 8 bytes) and its length into *esc_len; returns how many bytes
    of p it stands for. */
size_t qms_json_char (const uint8_t *p, size_t len, unsigned flags, char *esc, size_t *esc_len);

/*  Append s as a quoted JSON string.  0, or -1 when out of memory. */
int qms_json_string (qms_buf_t *out, const char *s, size_t len, unsigned flags);

/*  Length of the valid UTF-8 sequence at p, its code point in *cp; 0 when
    the bytes are not UTF-8 (overlong forms and surrogates included). */
size_t qms_utf8_sequence (const uint8_t *p, size_t len, uint32_t *cp);

/*  The first byte at or after p that a JSON string cannot hold as is ('"',
    '\' or below 0x20), or end.  Also what a parser uses to find the end of
    a string without escapes. */
static inline const uint8_t *
qms_json_plain_end (const uint8_t *p, const uint8_t *end)
{
#ifdef __SSE2__
    /*  Sixteen at a time where the CPU has SSE2 (every x86-64). */
    const __m128i quote16 = _mm_set1_epi8 ('"'), backslash16 = _mm_set1_epi8 ('\\');
    const __m128i control_bits = _mm_set1_epi8 ((char) 0xe0), zero = _mm_setzero_si128 ();
    while (end - p >= 16) {
        __m128i x = _mm_loadu_si128 ((const __m128i *) p);
        __m128i special = _mm_or_si128 (_mm_or_si128 (_mm_cmpeq_epi8 (x, quote16),
                                                      _mm_cmpeq_epi8 (x, backslash16)),
                                        _mm_cmpeq_epi8 (_mm_and_si128 (x, control_bits), zero));
        int mask = _mm_movemask_epi8 (special);
        if (mask)
            return p + __builtin_ctz ((unsigned) mask);
        p += 16;
    }
#endif
    /*  Eight at a time: a word has a byte below n, or equal to c, exactly
        when these masks are not zero. */
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    while (end - p >= 8) {
        uint64_t x;
        memcpy (&x, p, 8);
        uint64_t quote = x ^ (ones * '"'), backslash = x ^ (ones * '\\');
        uint64_t special = ((x - ones * 0x20) & ~x)
                         | ((quote - ones) & ~quote)
                         | ((backslash - ones) & ~backslash);
        if (special & highs)
            break;
        p += 8;
    }
    while (p < end && *p >= 0x20 && *p != '"' && *p != '\\')
        p++;
    return p;
}

void qms_json_test (bool verbose);

#ifdef __cplusplus
}
#endif

#endif
