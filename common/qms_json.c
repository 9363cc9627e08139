/*  qms_json.c - JSON strings out (qms_json.h). */
#include "qms_json.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>

size_t
qms_utf8_sequence (const uint8_t *p, size_t len, uint32_t *cp)
{
    size_t need;
    if (p [0] < 0x80)       { *cp = p [0]; return 1; }
    else if (p [0] >= 0xc2 && p [0] <= 0xdf) { need = 2; *cp = p [0] & 0x1f; }
    else if (p [0] >= 0xe0 && p [0] <= 0xef) { need = 3; *cp = p [0] & 0x0f; }
    else if (p [0] >= 0xf0 && p [0] <= 0xf4) { need = 4; *cp = p [0] & 0x07; }
    else return 0;
    if (len < need)
        return 0;
    for (size_t i = 1; i < need; i++) {
        if ((p [i] & 0xc0) != 0x80)
            return 0;
        *cp = (*cp << 6) | (p [i] & 0x3f);
    }
    if ((need == 3 && (*cp < 0x800 || (*cp >= 0xd800 && *cp <= 0xdfff)))
    ||  (need == 4 && (*cp < 0x10000 || *cp > 0x10ffff)))
        return 0;
    return need;
}

static size_t
hex_escape (uint32_t c, char *esc)
{
    static const char hex [] = "0123456789abcdef";
    memcpy (esc, "\\u00", 4);
    esc [4] = hex [(c >> 4) & 15];
    esc [5] = hex [c & 15];
    return 6;
}

size_t
qms_json_char (const uint8_t *p, size_t len, unsigned flags, char *esc, size_t *esc_len)
{
    uint32_t c = p [0];
    size_t used = 1;
    if ((flags & QMS_JSON_CLEAN) && c >= 0x80) {
        used = qms_utf8_sequence (p, len, &c);
        if (used == 0) {
            memcpy (esc, "\\ufffd", 6);      /* keeps the text valid UTF-8 */
            *esc_len = 6;
            return 1;
        }
    }
    switch (c) {
        case '"':  memcpy (esc, "\\\"", 2); *esc_len = 2; return used;
        case '\\': memcpy (esc, "\\\\", 2); *esc_len = 2; return used;
        case '\n': memcpy (esc, "\\n", 2); *esc_len = 2; return used;
        case '\r': memcpy (esc, "\\r", 2); *esc_len = 2; return used;
        case '\t': memcpy (esc, "\\t", 2); *esc_len = 2; return used;
        case '\b': memcpy (esc, "\\b", 2); *esc_len = 2; return used;
        case '\f': memcpy (esc, "\\f", 2); *esc_len = 2; return used;
    }
    if (c < 0x20 || (c == '<' && (flags & QMS_JSON_HTML))
    ||  ((flags & QMS_JSON_CLEAN) && c >= 0x7f && c <= 0x9f)) {
        *esc_len = hex_escape (c, esc);
        return used;
    }
    memcpy (esc, p, used);
    *esc_len = used;
    return used;
}

int
qms_json_string (qms_buf_t *out, const char *s, size_t len, unsigned flags)
{
    /*  Worst case every byte becomes \u00XX (or \ufffd): reserve once. */
    if (len > (SIZE_MAX - 2) / 6 || qms_buf_reserve (out, len * 6 + 2))
        return -1;
    uint8_t *p = out->data + out->len;
    *p++ = '"';
    const uint8_t *in = (const uint8_t *) s, *end = in + len;
    while (in < end) {
        if (!flags) {
            /*  Runs that need no escape are copied in one go. */
            const uint8_t *run = in;
            in = qms_json_plain_end (in, end);
            if (in > run) {
                memcpy (p, run, (size_t) (in - run));
                p += in - run;
            }
            if (in == end)
                break;
        }
        char esc [8];
        size_t esc_len;
        in += qms_json_char (in, (size_t) (end - in), flags, esc, &esc_len);
        memcpy (p, esc, esc_len);
        p += esc_len;
    }
    *p++ = '"';
    out->len = (size_t) (p - out->data);
    return 0;
}

/* ------------------------------------------------------------------------ */

static void
t_expect (const char *in, size_t len, unsigned flags, const char *expected)
{
    qms_buf_t out;
    qms_buf_init (&out);
    assert (qms_json_string (&out, in, len, flags) == 0);
    if (out.len != strlen (expected) || memcmp (out.data, expected, out.len) != 0) {
        fprintf (stderr, "\nexpected %s\n     got %.*s\n", expected, (int) out.len, out.data);
        assert (false);
    }
    qms_buf_free (&out);
}

void
qms_json_test (bool verbose)
{
    if (verbose)
        printf (" * qms_json: ");
    t_expect ("", 0, 0, "\"\"");
    t_expect ("plain text", 10, 0, "\"plain text\"");
    t_expect ("a\"b\\c", 5, 0, "\"a\\\"b\\\\c\"");
    t_expect ("\n\r\t\b\f\x01\x1f", 7, 0, "\"\\n\\r\\t\\b\\f\\u0001\\u001f\"");
    t_expect ("x\0y", 3, 0, "\"x\\u0000y\"");
    /*  Without flags, bytes from 0x20 up pass as they are (the gateway
        checked its input is UTF-8), '<' too. */
    t_expect ("</script>\x7f\xc3\xa9", 12, 0, "\"</script>\x7f\xc3\xa9\"");
    t_expect ("</script>", 9, QMS_JSON_HTML, "\"\\u003c/script>\"");
    /*  CLEAN: not UTF-8 becomes U+FFFD byte by byte; DEL and C1 escaped,
        valid UTF-8 kept. */
    t_expect ("a\xff\xc3" "b", 4, QMS_JSON_CLEAN, "\"a\\ufffd\\ufffdb\"");
    t_expect ("\x7f\xc2\x9b\xc3\xa9\xe2\x82\xac", 8, QMS_JSON_CLEAN, "\"\\u007f\\u009b\xc3\xa9\xe2\x82\xac\"");
    t_expect ("\xed\xa0\x80", 3, QMS_JSON_CLEAN, "\"\\ufffd\\ufffd\\ufffd\"");     /* a surrogate */
    t_expect ("\xc0\xaf", 2, QMS_JSON_CLEAN, "\"\\ufffd\\ufffd\"");               /* overlong */

    /*  The run copy and the per-character rules agree on every byte value,
        at every position of a 40-byte string (both the 16- and the 8-byte
        scans see it). */
    for (int c = 0; c < 256; c++)
        for (size_t at = 0; at < 40; at++) {
            char in [40];
            memset (in, 'a', sizeof in);
            in [at] = (char) c;
            qms_buf_t fast, slow;
            qms_buf_init (&fast);
            qms_buf_init (&slow);
            assert (qms_json_string (&fast, in, sizeof in, 0) == 0);
            assert (qms_buf_append (&slow, "\"", 1) == 0);
            for (size_t i = 0; i < sizeof in; ) {
                char esc [8];
                size_t esc_len;
                i += qms_json_char ((const uint8_t *) in + i, sizeof in - i, 0, esc, &esc_len);
                assert (qms_buf_append (&slow, esc, esc_len) == 0);
            }
            assert (qms_buf_append (&slow, "\"", 1) == 0);
            assert (fast.len == slow.len && memcmp (fast.data, slow.data, fast.len) == 0);
            const uint8_t *stop = qms_json_plain_end ((const uint8_t *) in, (const uint8_t *) in + 40);
            bool special = c < 0x20 || c == '"' || c == '\\';
            assert (stop == (const uint8_t *) in + (special ? at : 40));
            qms_buf_free (&fast);
            qms_buf_free (&slow);
        }
    uint32_t cp;
    assert (qms_utf8_sequence ((const uint8_t *) "\xf0\x9f\x98\x80", 4, &cp) == 4 && cp == 0x1f600);
    assert (qms_utf8_sequence ((const uint8_t *) "\xf0\x9f\x98", 3, &cp) == 0);
    assert (qms_utf8_sequence ((const uint8_t *) "\xf4\x90\x80\x80", 4, &cp) == 0);
    if (verbose)
        printf ("OK\n");
}
