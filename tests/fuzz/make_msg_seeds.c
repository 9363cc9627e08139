/*  make_msg_seeds.c - writes the seed corpus of fuzz_msg: batches of every
    record type this build knows, a user list, several records in one batch,
    an unknown type, and truncated records.

    Usage: make_msg_seeds DIR   (tests/fuzz/corpus/fuzz_msg; run again after
    adding a record type, and commit what changed)
*/
#include "qms_msg.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

static const char *s_dir;

static void
save (const char *name, const qms_buf_t *buf, size_t len)
{
    char path [512];
    snprintf (path, sizeof path, "%s/%s", s_dir, name);
    FILE *f = fopen (path, "wb");
    assert (f);
    assert (fwrite (buf->data, 1, len, f) == len);
    assert (fclose (f) == 0);
}

static void
fill (qms_rec_t *rec, int type)
{
    static const char *strings [] = { "4f9c2a1e-7b3d-4c8e-9a6f-1d2e3f4a5b6c", "alice",
                                      "{\"kty\":\"EC\"}", "hello \"world\"\n", "b\0c", "",
                                      "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA", "x" };
    memset (rec, 0, sizeof *rec);
    rec->type = (uint8_t) type;
    rec->conn = 0x0000010000000001ull;
    rec->req = 42;
    rec->num = (uint64_t) type;
    rec->time = 1764000000000ull;
    for (int i = 0; i < QMS_MSG_MAX_STRINGS; i++)
        rec->s [i] = i == 4 ? qms_strn ("b\0c", 3) : qms_str (strings [i % 8]);
}

int
main (int argc, char **argv)
{
    assert (argc == 2);
    s_dir = argv [1];
    qms_buf_t buf, all;
    qms_buf_init (&buf);
    qms_buf_init (&all);
    qms_rec_t rec;
    char name [64];
    for (int type = QMS_NONE + 1; type < QMS_TYPE_COUNT; type++) {
        fill (&rec, type);
        qms_buf_reset (&buf);
        assert (qms_rec_encode (&buf, &rec) == 0);
        snprintf (name, sizeof name, "type-%02d-%s", type, qms_type_name (type));
        save (name, &buf, buf.len);
        assert (qms_rec_encode (&all, &rec) == 0);
    }
    save ("batch-every-type", &all, all.len);
    save ("truncated-batch", &all, all.len / 2);

    /*  A user list as the router sends it. */
    qms_buf_reset (&buf);
    fill (&rec, QMS_GW_USERS);
    rec.num = 3;
    assert (qms_rec_encode (&buf, &rec) == 0);
    const char *names [] = { "alice", "Bob", "J\xc3\xbcrgen" };
    for (int i = 0; i < 3; i++) {
        fill (&rec, QMS_GW_USER);
        rec.s [QMS_PRESENCE_NAME] = qms_str (names [i]);
        assert (qms_rec_encode (&buf, &rec) == 0);
    }
    save ("batch-userlist", &buf, buf.len);

    /*  A type from a newer release (skipped), then a known one. */
    qms_buf_reset (&buf);
    uint8_t unknown [] = { 250, 3, 0, 0, 0, 'n', 'e', 'w' };
    qms_buf_append (&buf, unknown, sizeof unknown);
    fill (&rec, QMS_RT_CLOSED);
    assert (qms_rec_encode (&buf, &rec) == 0);
    save ("batch-unknown-type", &buf, buf.len);

    /*  A record longer than its schema: fields a newer release appended. */
    qms_buf_reset (&buf);
    fill (&rec, QMS_AUTH_FAIL);
    assert (qms_rec_encode (&buf, &rec) == 0);
    buf.data [1] += 4;
    qms_buf_append (&buf, "more", 4);
    save ("record-with-appended-fields", &buf, buf.len);

    /*  One record cut at every field boundary is up to the fuzzer; one cut
        in the middle of a string, and a length field that lies, here. */
    qms_buf_reset (&buf);
    fill (&rec, QMS_AUTH_LOGIN);
    assert (qms_rec_encode (&buf, &rec) == 0);
    save ("record-cut-in-string", &buf, buf.len - 3);
    buf.data [1] = 0xff;
    save ("record-length-too-long", &buf, buf.len);

    qms_buf_free (&buf);
    qms_buf_free (&all);
    return 0;
}
