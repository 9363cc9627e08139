/*  fuzz_common.h - shared by the libFuzzer harnesses in tests/fuzz/.

    FUZZ_CHECK is an invariant: when it fails it names the condition and
    aborts, so libFuzzer saves the input as a crash.  Harnesses check
    properties (round trips, limits, things that must never appear), not
    only "no crash"; the sanitizers catch the rest.
*/
#ifndef FUZZ_COMMON_H_INCLUDED
#define FUZZ_COMMON_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_CHECK(cond) \
    do { \
        if (!(cond)) { \
            fprintf (stderr, "\nFUZZ INVARIANT FAILED: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
            abort (); \
        } \
    } while (0)

/*  Reads the fuzzer's input front to back; reading past the end gives
    zeros, so a harness never has to check lengths. */
typedef struct {
    const uint8_t *data;
    size_t size;
    size_t at;
} fuzz_input_t;

static inline uint8_t
fuzz_u8 (fuzz_input_t *in)
{
    return in->at < in->size ? in->data [in->at++] : 0;
}

static inline uint32_t
fuzz_u32 (fuzz_input_t *in)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t) fuzz_u8 (in) << (8 * i);
    return v;
}

/*  The rest of the input. */
static inline const uint8_t *
fuzz_rest (fuzz_input_t *in, size_t *len)
{
    *len = in->size - in->at;
    return in->data + in->at;
}

/*  True if needle occurs in hay (both with lengths; no NUL needed). */
static inline bool
fuzz_contains (const void *hay, size_t hay_len, const void *needle, size_t needle_len)
{
    if (needle_len == 0)
        return true;
    if (!hay || hay_len < needle_len)
        return false;
    const uint8_t *h = hay;
    for (size_t i = 0; i + needle_len <= hay_len; i++)
        if (h [i] == *(const uint8_t *) needle && memcmp (h + i, needle, needle_len) == 0)
            return true;
    return false;
}

#endif
