/*  fuzz_msg.c - libFuzzer harness for the actor record codec
    (common/qms_msg.c): qms_rec_next() over arbitrary batches, as an actor
    would read a body frame from a peer.

    Checks:
    - reading always ends (each record moves the offset forward, within the
      batch) with 0 at the end or -1 on a malformed batch;
    - every string of a record read is a view inside the batch and no longer
      than QMS_MSG_MAX_STRING;
    - a record of a type this build does not know comes back as QMS_NONE
      and cannot be encoded;
    - every record read re-encodes with qms_rec_encode() to at most the
      bytes it was read from, and reads back to the same type, integers and
      strings; encoding that again gives the same bytes;
    - all known records re-encoded into one batch read back in order.
*/
#include "fuzz_common.h"
#include "qms_msg.h"

#define MAX_RECORDS 4096

/*  Records compare field by field: the integers by value, the strings by
    content (their pointers differ by design).  qms_rec_next fills the
    fields one by one and leaves the padding alone, so the bytes of the
    whole struct are not compared; the size check below fails when a field
    is added to qms_rec_t, so that it is added here too. */
_Static_assert (sizeof (qms_rec_t) == 8 + 5 * 8 + QMS_MSG_MAX_STRINGS * sizeof (qms_str_t),
                "qms_rec_t changed: compare its new fields in check_same");

static void
check_same (const qms_rec_t *x, const qms_rec_t *y)
{
    FUZZ_CHECK (x->type == y->type);
    FUZZ_CHECK (x->conn == y->conn && x->req == y->req && x->num == y->num);
    FUZZ_CHECK (x->time == y->time && x->seq == y->seq);
    for (int i = 0; i < QMS_MSG_MAX_STRINGS; i++) {
        FUZZ_CHECK (x->s [i].len == y->s [i].len);
        FUZZ_CHECK (x->s [i].len == 0 || memcmp (x->s [i].ptr, y->s [i].ptr, x->s [i].len) == 0);
    }
}

static void
check_views (const qms_rec_t *rec, const uint8_t *data, size_t size)
{
    for (int i = 0; i < QMS_MSG_MAX_STRINGS; i++) {
        FUZZ_CHECK (rec->s [i].ptr);
        FUZZ_CHECK (rec->s [i].len <= QMS_MSG_MAX_STRING);
        if (rec->s [i].len == 0)
            continue;
        const uint8_t *p = (const uint8_t *) rec->s [i].ptr;
        FUZZ_CHECK (p >= data && p + rec->s [i].len <= data + size);
    }
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    qms_buf_t batch, one, twice;
    qms_buf_init (&batch);
    qms_buf_init (&one);
    qms_buf_init (&twice);
    static qms_rec_t recs [MAX_RECORDS];
    size_t count = 0;

    size_t offset = 0;
    int rc;
    qms_rec_t rec;
    while ((rc = qms_rec_next (data, size, &offset, &rec)) == 1) {
        FUZZ_CHECK (offset <= size);
        check_views (&rec, data, size);
        if (rec.type == QMS_NONE) {
            qms_buf_reset (&one);
            FUZZ_CHECK (qms_rec_encode (&one, &rec) == -1);
            continue;
        }
        FUZZ_CHECK (rec.type < QMS_TYPE_COUNT);
        FUZZ_CHECK (strcmp (qms_type_name (rec.type), "?") != 0);

        qms_buf_reset (&one);
        FUZZ_CHECK (qms_rec_encode (&one, &rec) == 0);
        FUZZ_CHECK (one.len >= 5 && one.data [0] == rec.type);
        /*  A record may carry fields a newer release appended; never fewer. */
        size_t body = (size_t) one.data [1] | (size_t) one.data [2] << 8
                    | (size_t) one.data [3] << 16 | (size_t) one.data [4] << 24;
        FUZZ_CHECK (body == one.len - 5);

        size_t at = 0;
        qms_rec_t back;
        FUZZ_CHECK (qms_rec_next (one.data, one.len, &at, &back) == 1);
        FUZZ_CHECK (at == one.len);
        check_same (&rec, &back);
        check_views (&back, one.data, one.len);
        qms_rec_t none;
        FUZZ_CHECK (qms_rec_next (one.data, one.len, &at, &none) == 0);

        qms_buf_reset (&twice);
        FUZZ_CHECK (qms_rec_encode (&twice, &back) == 0);
        FUZZ_CHECK (twice.len == one.len && memcmp (twice.data, one.data, one.len) == 0);

        FUZZ_CHECK (qms_rec_encode (&batch, &rec) == 0);
        if (count < MAX_RECORDS)
            memcpy (&recs [count++], &rec, sizeof rec);     /* padding too */
    }
    FUZZ_CHECK (rc == 0 || rc == -1);
    if (rc == 0)
        FUZZ_CHECK (offset == size);

    /*  The known records, re-batched, read back in order.  The re-encoded
        batch is never longer than what they were read from. */
    FUZZ_CHECK (batch.len <= size);
    size_t at = 0;
    for (size_t i = 0; i < count; i++) {
        FUZZ_CHECK (qms_rec_next (batch.data, batch.len, &at, &rec) == 1);
        check_same (&recs [i], &rec);
    }
    if (count < MAX_RECORDS)
        FUZZ_CHECK (qms_rec_next (batch.data, batch.len, &at, &rec) == 0);

    qms_buf_free (&batch);
    qms_buf_free (&one);
    qms_buf_free (&twice);
    return 0;
}
