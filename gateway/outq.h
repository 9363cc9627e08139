/*  outq.h - one connection's output, written by us straight to its socket.

    A queue of segments, written in order: bytes we framed ourselves (copied
    in, or a whole block handed over), and slices of immutable buffers that
    many connections share by reference (a user list is encoded once per
    change, not once per reader).  outq_write sends from the head with
    writev(), or SSL_write() over TLS, and keeps whatever the socket did
    not take: no library below us ever holds a connection's unsent output,
    so every queued byte is counted here, and a peer's end of stream never
    meets output that only the library could flush (see docs/ROBUSTNESS.md:
    libwebsockets 4.1 spins forever in that case).

    One segment at most carries the OUTQ_LIST tag: a user list that a newer
    one may replace as long as none of it has left (outq_list_replace).

    Single-threaded: a queue and the shared buffers it points at belong to
    one event loop.
*/
#ifndef OUTQ_H_INCLUDED
#define OUTQ_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/*  Figures over every queue of one gateway: what the global budget and
    /metrics read. */
typedef struct {
    size_t owned;           /* unsent bytes of the queues' own segments */
    size_t shared;          /* bytes of shared buffers still alive */
    size_t shared_count;    /* shared buffers still alive */
} outq_acct_t;

/*  An immutable, reference-counted buffer.  Filled once after
    outq_shared_new (through outq_shared_data), then only read. */
typedef struct outq_shared_s outq_shared_t;

outq_shared_t *outq_shared_new (size_t len, outq_acct_t *acct);
uint8_t *outq_shared_data (outq_shared_t *shared);
size_t outq_shared_len (const outq_shared_t *shared);
outq_shared_t *outq_shared_ref (outq_shared_t *shared);
/*  Drop one reference (the buffer goes with the last) and null *shared_p. */
void outq_shared_unref (outq_shared_t **shared_p);

typedef struct outq_seg_s outq_seg_t;

typedef struct {
    outq_seg_t *head, *tail;
    outq_acct_t *acct;
    size_t queued;          /* unsent bytes, but for a list segment's */
    size_t list_bytes;      /* unsent bytes of the list segment, if any */
    size_t owned;           /* unsent bytes of our own segments (not shared) */
    size_t tls_retry;       /* an SSL_write to repeat with at least this many bytes */
} outq_t;

/*  Tags of shared segments. */
#define OUTQ_PLAIN      0
#define OUTQ_LIST       1   /* a user list a newer one may replace */

/*  outq_write's flags. */
#define OUTQ_BLOCKED    1   /* the socket took less than offered: wait for writeable */
#define OUTQ_LIST_DONE  2   /* the list segment has left whole */

void outq_init (outq_t *q, outq_acct_t *acct);
/*  Free every segment (what was not sent is lost). */
void outq_clear (outq_t *q);

/*  Copy bytes to the tail.  0, or -1 when out of memory (nothing added). */
int outq_append (outq_t *q, const void *data, size_t len);
/*  A WebSocket text frame (FIN, opcode 1, unmasked) holding payload. */
int outq_frame (outq_t *q, const void *payload, size_t len);
/*  Just the header of such a frame, for a payload appended in parts. */
int outq_frame_header (outq_t *q, size_t payload_len);
/*  The bytes of that header (2 to 10), for frames built elsewhere. */
size_t outq_ws_header (uint8_t head [10], size_t payload_len);
/*  Hand over a malloc'd block: freed by the queue once sent (or on
    failure: -1 then, and block is freed too). */
int outq_adopt (outq_t *q, void *block, size_t len);
/*  A slice of a shared buffer, by reference; tag OUTQ_PLAIN or OUTQ_LIST
    (only one list segment at a time: -1 if there is one already). */
int outq_share (outq_t *q, outq_shared_t *shared, size_t off, size_t len, int tag);

/*  Whether a list segment is queued, and whether any of it has left. */
bool outq_has_list (const outq_t *q);
bool outq_list_started (const outq_t *q);
/*  Point the list segment at a newer list; false (nothing changed) when
    there is none or part of it has left. */
bool outq_list_replace (outq_t *q, outq_shared_t *shared, size_t off, size_t len);

/*  Unsent bytes, everything counted. */
size_t outq_pending (const outq_t *q);
bool outq_empty (const outq_t *q);
/*  Whether the head segment is under way (part of it left, or an SSL_write
    of it must be repeated): it cannot be dropped without breaking the
    stream. */
bool outq_head_started (const outq_t *q);
/*  Drop every segment but a started head: a slow consumer's backlog,
    given back at once. */
void outq_drop_unstarted (outq_t *q);

/*  Send from the head: at most max bytes, to fd (ssl NULL) or through ssl
    (an OpenSSL SSL*, with SSL_MODE_ENABLE_PARTIAL_WRITE and
    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER set).  Returns the bytes that left,
    or -1 when the connection is broken; *flags gets OUTQ_* bits. */
ssize_t outq_write (outq_t *q, int fd, void *ssl, size_t max, int *flags);

void outq_test (bool verbose);

#ifdef __cplusplus
}
#endif

#endif
