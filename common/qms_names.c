/*  qms_names.c - user names in Unicode with ICU (see qms_names.h).

    ICU works in UTF-16; names arrive and leave as UTF-8.  One spoof checker
    is made once (pthread_once) and only read afterwards: ICU allows checks
    on a configured checker from several threads (auth and store both use
    it).  If ICU cannot make one, every non-ASCII name is refused, never
    let through unchecked.
*/
#include "qms_names.h"

#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>
#include <unicode/uspoof.h>

#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define TEXT_SCRIPTS    "Name mixes letters of different scripts or number systems."
#define TEXT_UNCHECKED  "Name cannot be checked on this server: use ASCII letters."
/*  UTF-16 units: 64 code points of a name, 18 each after NFKC at most, 2 units each */
#define UNITS_MAX       (64 * 18 * 2)

static USpoofChecker *s_checker;
static pthread_once_t s_once = PTHREAD_ONCE_INIT;

static void
s_checker_init (void)
{
    UErrorCode status = U_ZERO_ERROR;
    USpoofChecker *sc = uspoof_open (&status);
    uspoof_setChecks (sc, USPOOF_RESTRICTION_LEVEL | USPOOF_MIXED_NUMBERS | USPOOF_INVISIBLE, &status);
    uspoof_setRestrictionLevel (sc, USPOOF_HIGHLY_RESTRICTIVE);
    if (U_FAILURE (status)) {
        uspoof_close (sc);
        sc = NULL;
    }
    s_checker = sc;
}

bool
qms_name_is_ascii (const char *name, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char) name [i] >= 0x80)
            return false;
    return true;
}

/*  UTF-8 -> UTF-16; returns the length in units or -1. */
static int32_t
s_to_utf16 (const char *in, size_t len, UChar *out, int32_t cap)
{
    if (len > (size_t) INT32_MAX)
        return -1;
    UErrorCode status = U_ZERO_ERROR;
    int32_t n = 0;
    u_strFromUTF8WithSub (out, cap, &n, in, (int32_t) len, -1, NULL, &status);
    /*  -1 as the substitute: invalid UTF-8 is an error, never replaced */
    return U_SUCCESS (status) && status != U_STRING_NOT_TERMINATED_WARNING && n < cap ? n : -1;
}

static int
s_to_utf8 (const UChar *in, int32_t len, char *out, size_t out_size)
{
    if (out_size > (size_t) INT32_MAX)
        out_size = INT32_MAX;
    UErrorCode status = U_ZERO_ERROR;
    int32_t n = 0;
    u_strToUTF8 (out, (int32_t) out_size, &n, in, len, &status);
    if (U_FAILURE (status) || status == U_STRING_NOT_TERMINATED_WARNING || (size_t) n >= out_size)
        return -1;
    out [n] = 0;
    return 0;
}

static int32_t
s_nfkc16 (const char *name, size_t len, UChar *out, int32_t cap)
{
    UChar in [UNITS_MAX];
    int32_t n = s_to_utf16 (name, len, in, UNITS_MAX);
    if (n < 0)
        return -1;
    UErrorCode status = U_ZERO_ERROR;
    const UNormalizer2 *nfkc = unorm2_getNFKCInstance (&status);
    if (U_FAILURE (status))
        return -1;
    int32_t m = unorm2_normalize (nfkc, in, n, out, cap, &status);
    return U_SUCCESS (status) && status != U_STRING_NOT_TERMINATED_WARNING && m < cap ? m : -1;
}

int
qms_name_nfkc (const char *name, size_t len, char *out, size_t out_size)
{
    UChar norm [UNITS_MAX];
    int32_t n = s_nfkc16 (name, len, norm, UNITS_MAX);
    return n < 0 ? -1 : s_to_utf8 (norm, n, out, out_size);
}

const char *
qms_name_spoof_check (const char *name, size_t len)
{
    if (qms_name_is_ascii (name, len))
        return NULL;
    pthread_once (&s_once, s_checker_init);
    if (!s_checker)
        return TEXT_UNCHECKED;
    UChar text [UNITS_MAX];
    int32_t n = s_to_utf16 (name, len, text, UNITS_MAX);
    if (n < 0)
        return "Name is not valid UTF-8.";
    UErrorCode status = U_ZERO_ERROR;
    int32_t failed = uspoof_check (s_checker, text, n, NULL, &status);
    if (U_FAILURE (status))
        return TEXT_UNCHECKED;
    return failed ? TEXT_SCRIPTS : NULL;
}

/*  One case of the NFKC form (upper or lower), then its skeleton. */
static int
s_skeleton_of_case (const UChar *norm, int32_t n, bool upper, char *out, size_t out_size)
{
    UChar cased [UNITS_MAX], skeleton [UNITS_MAX];
    UErrorCode status = U_ZERO_ERROR;
    int32_t c = upper ? u_strToUpper (cased, UNITS_MAX, norm, n, "", &status)
                      : u_strToLower (cased, UNITS_MAX, norm, n, "", &status);
    if (U_FAILURE (status) || status == U_STRING_NOT_TERMINATED_WARNING || c >= UNITS_MAX)
        return -1;
    int32_t k = uspoof_getSkeleton (s_checker, 0, cased, c, skeleton, UNITS_MAX, &status);
    if (U_FAILURE (status) || status == U_STRING_NOT_TERMINATED_WARNING || k >= UNITS_MAX)
        return -1;
    return s_to_utf8 (skeleton, k, out, out_size);
}

int
qms_name_skeletons (const char *name, size_t len, char *lower, char *upper, size_t size)
{
    pthread_once (&s_once, s_checker_init);
    if (!s_checker)
        return -1;
    UChar norm [UNITS_MAX];
    int32_t n = s_nfkc16 (name, len, norm, UNITS_MAX);
    if (n < 0)
        return -1;
    return s_skeleton_of_case (norm, n, false, lower, size) || s_skeleton_of_case (norm, n, true, upper, size)
         ? -1 : 0;
}

/* ------------------------------------------------------------------------ */

/*  The store's rule: one skeleton of a equals one of b. */
static bool
s_look_alike (const char *a, const char *b)
{
    char la [QMS_NAME_NORM_MAX], ua [QMS_NAME_NORM_MAX], lb [QMS_NAME_NORM_MAX], ub [QMS_NAME_NORM_MAX];
    assert (qms_name_skeletons (a, strlen (a), la, ua, sizeof la) == 0);
    assert (qms_name_skeletons (b, strlen (b), lb, ub, sizeof lb) == 0);
    return strcmp (la, lb) == 0 || strcmp (ua, ub) == 0 || strcmp (la, ub) == 0 || strcmp (ua, lb) == 0;
}

void
qms_names_test (bool verbose)
{
    if (verbose)
        printf (" * qms_names: ");
    char out [QMS_NAME_NORM_MAX];

    /*  NFKC: ASCII unchanged, compatibility forms folded, composed accents */
    assert (qms_name_nfkc ("Alice Smith", 11, out, sizeof out) == 0 && strcmp (out, "Alice Smith") == 0);
    const char *fullwidth = "\xef\xbd\x82\xef\xbd\x8f\xef\xbd\x82";          /* ｂｏｂ */
    assert (qms_name_nfkc (fullwidth, strlen (fullwidth), out, sizeof out) == 0 && strcmp (out, "bob") == 0);
    assert (qms_name_nfkc ("\xef\xac\x81x", 4, out, sizeof out) == 0 && strcmp (out, "fix") == 0);  /* ﬁ */
    assert (qms_name_nfkc ("Jo\x65\xcc\x81", 5, out, sizeof out) == 0 && strcmp (out, "Jo\xc3\xa9") == 0);
    assert (qms_name_nfkc ("\xc2\xb2", 2, out, sizeof out) == 0 && strcmp (out, "2") == 0);       /* ² */
    assert (qms_name_nfkc ("a\xff", 2, out, sizeof out) == -1);                                    /* not UTF-8 */
    assert (qms_name_nfkc ("\xef\xb7\xba", 3, out, 10) == -1);                                     /* ﷺ: 18 letters */
    assert (qms_name_nfkc ("\xef\xb7\xba", 3, out, sizeof out) == 0);

    /*  Scripts: one script, or the mixes TR39 allows; never Latin with Cyrillic or Greek */
    const char *ok [] = { "alice", "J\xc3\xbcrgen M\xc3\xbcller", "\xd0\x98\xd0\xb2\xd0\xb0\xd0\xbd",   /* Иван */
        "\xce\x91\xce\xbb\xce\xad\xce\xbe\xce\xb7\xcf\x82",                                          /* Αλέξης */
        "\xe5\xb1\xb1\xe7\x94\xb0 \xe5\xa4\xaa\xe9\x83\x8e",                                         /* 山田 太郎 */
        "Tanaka \xe3\x81\x95\xe3\x82\x93", "Jos\xc3\xa9 \xf0\x9f\x9a\x80", "O'Brien-2" };            /* さん, 🚀 */
    for (size_t i = 0; i < sizeof ok / sizeof ok [0]; i++) {
        if (qms_name_spoof_check (ok [i], strlen (ok [i])))
            fprintf (stderr, "qms_names: refused '%s'\n", ok [i]);
        assert (qms_name_spoof_check (ok [i], strlen (ok [i])) == NULL);
    }
    const char *mixed [] = { "b\xd0\xbe\x62",                     /* Latin b, Cyrillic о */
        "p\xce\xb1ypal",                                         /* Greek α inside Latin */
        "\xd0\x98\xd0\xb2\xd0\xb0n",                             /* Cyrillic then Latin n */
        "a1\xd9\xa3" };                                          /* ASCII and Arabic-Indic digits */
    for (size_t i = 0; i < sizeof mixed / sizeof mixed [0]; i++)
        assert (qms_name_spoof_check (mixed [i], strlen (mixed [i])) != NULL);

    /*  Skeletons: look-alikes meet, different names stay apart */
    assert (s_look_alike ("bob", "b\xd0\xbe" "b"));                                  /* Cyrillic о */
    assert (s_look_alike ("paypal", "\xd1\x80\xd0\xb0\xd1\x83\xd1\x80\xd0\xb0l"));  /* раураl */
    assert (s_look_alike ("ABE", "\xce\x91\xce\x92\xce\x95"));                   /* Greek ΑΒΕ */
    assert (s_look_alike ("abe", "\xce\x91\xce\x92\xce\x95"));                   /* same name class as ABE */
    assert (s_look_alike ("BOB", "\xd0\x92\xd0\x9e\xd0\x92"));                   /* Cyrillic ВОВ */
    assert (s_look_alike ("Bob", "bob"));                                            /* case */
    assert (s_look_alike ("bob", fullwidth));
    assert (s_look_alike ("modern", "rnodern"));
    assert (s_look_alike ("alice1", "alicel"));          /* (two ASCII names: the store keeps them apart) */
    assert (!s_look_alike ("bob", "rob"));
    assert (!s_look_alike ("\xd0\x98\xd0\xb2\xd0\xb0\xd0\xbd", "alice"));
    char up [QMS_NAME_NORM_MAX];
    assert (qms_name_skeletons ("a\xff", 2, out, up, sizeof out) == -1);

    assert (qms_name_is_ascii ("alice", 5));
    assert (!qms_name_is_ascii ("\xc3\xa9", 2));
    if (verbose)
        printf ("OK\n");
}
