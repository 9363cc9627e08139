/*  qms_names.h - user names in Unicode, with ICU: the form a name is stored
    in, names that mix scripts, and names that look like each other.

    - Registration stores a name in Unicode compatibility form (NFKC, UAX
      #15): fullwidth "ｂｏｂ" is the name "bob". ASCII is already in that
      form, so ASCII names are stored as typed, as before.
    - A name that is not ASCII must pass ICU's spoof checks (Unicode TR39):
      the restriction level "highly restrictive" (one script, or Latin with
      Han and Japanese kana, Han and Hangul, or Han and Bopomofo), digits of
      one numbering system, no repeated combining marks.
    - The skeletons (TR39 section 4) of a name's NFKC form in lower and in
      upper case are equal for names that look alike ("bob" with a Cyrillic
      o, "paypal" in Cyrillic letters, "ABE" in Greek capitals, "rn" for
      "m"). The store keeps them per user and refuses a new name that
      shares one with a taken name, unless both names are ASCII: two ASCII
      names stay apart by letter case only, as before.
*/
#ifndef QMS_NAMES_H_INCLUDED
#define QMS_NAMES_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/*  NFKC may lengthen a name (a ligature becomes letters) and a skeleton
    may too ("m" stays, "ɱ" becomes "rn"): room for either. */
#define QMS_NAME_NORM_MAX    (64 * 18 * 4)

/*  True when every byte of name is ASCII. */
bool qms_name_is_ascii (const char *name, size_t len);

/*  Writes the NFKC form of name (UTF-8, len bytes) to out, NUL-terminated.
    Returns 0, or -1 for invalid UTF-8 or a result that does not fit. */
int qms_name_nfkc (const char *name, size_t len, char *out, size_t out_size);

/*  NULL when the name (UTF-8) passes the spoof checks above, else the
    client's error text.  ASCII names always pass. */
const char *qms_name_spoof_check (const char *name, size_t len);

/*  Writes the skeletons of name's NFKC form in lower case and in upper
    case to lower and upper (UTF-8, NUL-terminated, size bytes each).  Two
    names look alike when one skeleton of the one equals one of the other:
    lower case catches "bob" and "bоb" (Cyrillic о), upper case catches
    "ABE" and "ΑΒΕ" (Greek capitals) whose small letters differ.  Returns 0
    or -1. */
int qms_name_skeletons (const char *name, size_t len, char *lower, char *upper, size_t size);

void qms_names_test (bool verbose);

#ifdef __cplusplus
}
#endif

#endif
