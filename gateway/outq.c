/*  outq.c - one connection's output, written by us (see outq.h).

    Segments are a singly linked list.  The tail, when it holds our own
    bytes, grows in place up to SEG_MAX so that many small events become
    one segment and one write; bigger appends start a segment of their own.
    A segment is freed as soon as its last byte has left.
*/
#define _GNU_SOURCE
#include "outq.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

/*  Our own bytes gather in one segment up to this size. */
#define SEG_MAX     (64u * 1024)
/*  The first room a segment of our own bytes gets. */
#define SEG_FIRST   2048u
/*  Segments gathered into one writev. */
#define IOV_COUNT   16

typedef enum { SEG_INLINE, SEG_BLOCK, SEG_SHARED } seg_kind_t;

struct outq_shared_s {
    size_t refs;
    size_t len;
    outq_acct_t *acct;
    uint8_t data [];
};

struct outq_seg_s {
    outq_seg_t *next;
    uint8_t *data;              /* the segment's bytes */
    size_t off, len;            /* [off, len) is still to send */
    size_t cap;                 /* SEG_INLINE: room in bytes [] */
    outq_shared_t *shared;      /* SEG_SHARED: the buffer data points into */
    uint8_t kind;               /* a seg_kind_t */
    uint8_t tag;                /* OUTQ_PLAIN or OUTQ_LIST */
    uint8_t bytes [];           /* SEG_INLINE */
};

/* ------------------------------------------------------------------------ */

outq_shared_t *
outq_shared_new (size_t len, outq_acct_t *acct)
{
    outq_shared_t *shared = malloc (sizeof *shared + (len ? len : 1));
    if (!shared)
        return NULL;
    shared->refs = 1;
    shared->len = len;
    shared->acct = acct;
    if (acct) {
        acct->shared += len;
        acct->shared_count++;
    }
    return shared;
}

uint8_t *
outq_shared_data (outq_shared_t *shared)
{
    return shared->data;
}

size_t
outq_shared_len (const outq_shared_t *shared)
{
    return shared->len;
}

outq_shared_t *
outq_shared_ref (outq_shared_t *shared)
{
    shared->refs++;
    return shared;
}

void
outq_shared_unref (outq_shared_t **shared_p)
{
    outq_shared_t *shared = *shared_p;
    if (!shared)
        return;
    *shared_p = NULL;
    if (--shared->refs)
        return;
    if (shared->acct) {
        shared->acct->shared -= shared->len;
        shared->acct->shared_count--;
    }
    free (shared);
}

/* ------------------------------------------------------------------------ */

void
outq_init (outq_t *q, outq_acct_t *acct)
{
    memset (q, 0, sizeof *q);
    q->acct = acct;
}

static bool
seg_owned (const outq_seg_t *seg)
{
    return seg->kind != SEG_SHARED;
}

/*  What a segment's unsent bytes count against. */
static void
seg_uncount (outq_t *q, const outq_seg_t *seg, size_t n)
{
    if (seg->tag == OUTQ_LIST)
        q->list_bytes -= n;
    else
        q->queued -= n;
    if (seg_owned (seg)) {
        q->owned -= n;
        if (q->acct)
            q->acct->owned -= n;
    }
}

static void
seg_count (outq_t *q, const outq_seg_t *seg, size_t n)
{
    if (seg->tag == OUTQ_LIST)
        q->list_bytes += n;
    else
        q->queued += n;
    if (seg_owned (seg)) {
        q->owned += n;
        if (q->acct)
            q->acct->owned += n;
    }
}

static void
seg_free (outq_seg_t *seg)
{
    if (seg->kind == SEG_BLOCK)
        free (seg->data);
    else
    if (seg->kind == SEG_SHARED)
        outq_shared_unref (&seg->shared);
    free (seg);
}

static void
seg_link (outq_t *q, outq_seg_t *seg)
{
    seg->next = NULL;
    if (q->tail)
        q->tail->next = seg;
    else
        q->head = seg;
    q->tail = seg;
}

/*  Unlink and free the head. */
static void
pop_head (outq_t *q)
{
    outq_seg_t *seg = q->head;
    q->head = seg->next;
    if (!q->head)
        q->tail = NULL;
    seg_free (seg);
}

void
outq_clear (outq_t *q)
{
    while (q->head) {
        seg_uncount (q, q->head, q->head->len - q->head->off);
        pop_head (q);
    }
    q->tls_retry = 0;
}

/*  The predecessor of the tail, to relink a tail that moved. */
static outq_seg_t **
tail_link (outq_t *q)
{
    if (q->head == q->tail)
        return &q->head;
    outq_seg_t *seg = q->head;
    while (seg->next != q->tail)
        seg = seg->next;
    return &seg->next;
}

/*  Room for len more bytes of our own at the tail: a pointer to write them
    at, or NULL when out of memory. */
static uint8_t *
tail_room (outq_t *q, size_t len)
{
    outq_seg_t *tail = q->tail;
    if (tail && tail->kind == SEG_INLINE) {
        if (tail->cap - tail->len >= len)
            return tail->bytes + tail->len;
        if (tail->len + len <= SEG_MAX) {
            size_t cap = tail->cap * 2;
            if (cap < tail->len + len)
                cap = tail->len + len;
            if (cap > SEG_MAX)
                cap = SEG_MAX;
            outq_seg_t **link = tail_link (q);
            outq_seg_t *grown = realloc (tail, sizeof *grown + cap);
            if (!grown)
                return NULL;
            grown->cap = cap;
            grown->data = grown->bytes;
            *link = grown;
            q->tail = grown;
            return grown->bytes + grown->len;
        }
    }
    size_t cap = len > SEG_FIRST ? len : SEG_FIRST;
    outq_seg_t *seg = malloc (sizeof *seg + cap);
    if (!seg)
        return NULL;
    memset (seg, 0, sizeof *seg);
    seg->kind = SEG_INLINE;
    seg->cap = cap;
    seg->data = seg->bytes;
    seg_link (q, seg);
    return seg->bytes;
}

int
outq_append (outq_t *q, const void *data, size_t len)
{
    if (len == 0)
        return 0;
    uint8_t *at = tail_room (q, len);
    if (!at)
        return -1;
    memcpy (at, data, len);
    q->tail->len += len;
    seg_count (q, q->tail, len);
    return 0;
}

size_t
outq_ws_header (uint8_t head [10], size_t len)
{
    size_t n = 0;
    head [n++] = 0x81;                  /* FIN, text */
    if (len < 126)
        head [n++] = (uint8_t) len;
    else
    if (len <= 0xffff) {
        head [n++] = 126;
        head [n++] = (uint8_t) (len >> 8);
        head [n++] = (uint8_t) len;
    }
    else {
        head [n++] = 127;
        for (int i = 7; i >= 0; i--)
            head [n++] = (uint8_t) ((uint64_t) len >> (8 * i));
    }
    return n;
}

int
outq_frame_header (outq_t *q, size_t payload_len)
{
    uint8_t head [10];
    return outq_append (q, head, outq_ws_header (head, payload_len));
}

int
outq_frame (outq_t *q, const void *payload, size_t len)
{
    uint8_t head [10];
    size_t n = outq_ws_header (head, len);
    uint8_t *at = tail_room (q, n + len);
    if (!at)
        return -1;
    memcpy (at, head, n);
    memcpy (at + n, payload, len);
    q->tail->len += n + len;
    seg_count (q, q->tail, n + len);
    return 0;
}

int
outq_adopt (outq_t *q, void *block, size_t len)
{
    if (len == 0) {
        free (block);
        return 0;
    }
    outq_seg_t *seg = calloc (1, sizeof *seg);
    if (!seg) {
        free (block);
        return -1;
    }
    seg->kind = SEG_BLOCK;
    seg->data = block;
    seg->len = len;
    seg_link (q, seg);
    seg_count (q, seg, len);
    return 0;
}

static outq_seg_t *
find_list (const outq_t *q)
{
    for (outq_seg_t *seg = q->head; seg; seg = seg->next)
        if (seg->tag == OUTQ_LIST)
            return seg;
    return NULL;
}

int
outq_share (outq_t *q, outq_shared_t *shared, size_t off, size_t len, int tag)
{
    assert (off + len <= shared->len);
    if (len == 0)
        return 0;
    if (tag == OUTQ_LIST && find_list (q))
        return -1;
    outq_seg_t *seg = calloc (1, sizeof *seg);
    if (!seg)
        return -1;
    seg->kind = SEG_SHARED;
    seg->tag = (uint8_t) tag;
    seg->shared = outq_shared_ref (shared);
    seg->data = shared->data + off;
    seg->len = len;
    seg_link (q, seg);
    seg_count (q, seg, len);
    return 0;
}

bool
outq_has_list (const outq_t *q)
{
    return find_list (q) != NULL;
}

bool
outq_head_started (const outq_t *q)
{
    return q->head && (q->head->off > 0 || q->tls_retry > 0);
}

bool
outq_list_started (const outq_t *q)
{
    const outq_seg_t *list = find_list (q);
    return list && list == q->head && outq_head_started (q);
}

bool
outq_list_replace (outq_t *q, outq_shared_t *shared, size_t off, size_t len)
{
    outq_seg_t *list = find_list (q);
    if (!list || outq_list_started (q) || len == 0)
        return false;
    seg_uncount (q, list, list->len);
    outq_shared_unref (&list->shared);
    list->shared = outq_shared_ref (shared);
    list->data = shared->data + off;
    list->len = len;
    seg_count (q, list, len);
    return true;
}

size_t
outq_pending (const outq_t *q)
{
    return q->queued + q->list_bytes;
}

bool
outq_empty (const outq_t *q)
{
    return q->head == NULL;
}

void
outq_drop_unstarted (outq_t *q)
{
    outq_seg_t *keep = outq_head_started (q) ? q->head : NULL;
    outq_seg_t *seg = keep ? keep->next : q->head;
    while (seg) {
        outq_seg_t *next = seg->next;
        seg_uncount (q, seg, seg->len - seg->off);
        seg_free (seg);
        seg = next;
    }
    if (keep) {
        keep->next = NULL;
        q->head = q->tail = keep;
    }
    else
        q->head = q->tail = NULL;
}

/*  n bytes have left: advance, freeing what is done. */
static void
consume (outq_t *q, size_t n, int *flags)
{
    while (n) {
        outq_seg_t *seg = q->head;
        size_t take = seg->len - seg->off;
        if (take > n)
            take = n;
        seg->off += take;
        seg_uncount (q, seg, take);
        n -= take;
        if (seg->off == seg->len) {
            if (seg->tag == OUTQ_LIST)
                *flags |= OUTQ_LIST_DONE;
            pop_head (q);
        }
    }
}

static ssize_t
write_plain (outq_t *q, int fd, size_t max, int *flags)
{
    size_t total = 0;
    while (q->head && total < max) {
        struct iovec iov [IOV_COUNT];
        int count = 0;
        size_t want = 0;
        for (outq_seg_t *seg = q->head; seg && count < IOV_COUNT && want < max - total; seg = seg->next) {
            size_t len = seg->len - seg->off;
            if (len > max - total - want)
                len = max - total - want;
            iov [count].iov_base = seg->data + seg->off;
            iov [count].iov_len = len;
            count++;
            want += len;
        }
        struct msghdr msg = { .msg_iov = iov, .msg_iovlen = (size_t) count };
        ssize_t n = sendmsg (fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                *flags |= OUTQ_BLOCKED;
                break;
            }
            return -1;
        }
        consume (q, (size_t) n, flags);
        total += (size_t) n;
        if ((size_t) n < want) {
            *flags |= OUTQ_BLOCKED;
            break;
        }
    }
    return (ssize_t) total;
}

/*  One segment per SSL_write.  An SSL_write that could not finish must be
    repeated with the same bytes and at least the same length (OpenSSL
    keeps the record it began): our head only grows at its end, so that
    holds; the buffer may move (SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER). */
static ssize_t
write_tls (outq_t *q, SSL *ssl, size_t max, int *flags)
{
    size_t total = 0;
    while (q->head && total < max) {
        outq_seg_t *seg = q->head;
        size_t len = seg->len - seg->off;
        if (len > max - total)
            len = max - total;
        if (len < q->tls_retry)
            len = q->tls_retry;
        if (len > INT_MAX / 2)
            len = INT_MAX / 2;
        ERR_clear_error ();
        int n = SSL_write (ssl, seg->data + seg->off, (int) len);
        if (n <= 0) {
            int error = SSL_get_error (ssl, n);
            ERR_clear_error ();
            if (error == SSL_ERROR_WANT_WRITE || error == SSL_ERROR_WANT_READ) {
                q->tls_retry = len;
                *flags |= OUTQ_BLOCKED;
                break;
            }
            return -1;
        }
        q->tls_retry = 0;
        consume (q, (size_t) n, flags);
        total += (size_t) n;
    }
    return (ssize_t) total;
}

ssize_t
outq_write (outq_t *q, int fd, void *ssl, size_t max, int *flags)
{
    *flags = 0;
    return ssl ? write_tls (q, (SSL *) ssl, max, flags) : write_plain (q, fd, max, flags);
}

/* ------------------------------------------------------------------------ */
/*  Selftest: real sockets (a socketpair, and TLS over one), small socket
    buffers so that writes come back partial. */

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdio.h>

/*  Read everything the peer has now into out. */
static void
read_all (int fd, uint8_t *out, size_t *len, size_t cap)
{
    for (;;) {
        ssize_t n = recv (fd, out + *len, cap - *len, MSG_DONTWAIT);
        if (n <= 0)
            break;
        *len += (size_t) n;
    }
}

static void
small_buffers (int fd)
{
    int size = 4096;
    setsockopt (fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    setsockopt (fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    fcntl (fd, F_SETFL, fcntl (fd, F_GETFL) | O_NONBLOCK);
}

/*  Write q to fd until empty, reading the other end as we go; the bytes
    that arrived, in order. */
static size_t
pump_plain (outq_t *q, int fd, int peer, uint8_t *got, size_t cap, int *all_flags)
{
    size_t len = 0;
    *all_flags = 0;
    for (int rounds = 0; !outq_empty (q) && rounds < 100000; rounds++) {
        int flags;
        assert (outq_write (q, fd, NULL, 1u << 20, &flags) >= 0);
        *all_flags |= flags;
        read_all (peer, got, &len, cap);
    }
    read_all (peer, got, &len, cap);
    assert (outq_empty (q));
    return len;
}

static void
test_plain (void)
{
    outq_acct_t acct = { 0 };
    outq_t q;
    outq_init (&q, &acct);
    int pair [2];
    assert (socketpair (AF_UNIX, SOCK_STREAM, 0, pair) == 0);
    small_buffers (pair [0]);
    small_buffers (pair [1]);

    /*  Our bytes, a frame, a big block, a shared slice, a list: in order. */
    static uint8_t expect [300000], got [300000];
    size_t expect_len = 0;
    assert (outq_append (&q, "hello ", 6) == 0);
    memcpy (expect, "hello ", 6), expect_len = 6;
    assert (outq_frame (&q, "{}", 2) == 0);
    memcpy (expect + expect_len, "\x81\x02{}", 4), expect_len += 4;
    uint8_t *block = malloc (100000);
    for (size_t i = 0; i < 100000; i++)
        block [i] = (uint8_t) (i * 7);
    memcpy (expect + expect_len, block, 100000), expect_len += 100000;
    assert (outq_adopt (&q, block, 100000) == 0);
    outq_shared_t *shared = outq_shared_new (70000, &acct);
    for (size_t i = 0; i < 70000; i++)
        outq_shared_data (shared) [i] = (uint8_t) (i * 13 + 1);
    assert (acct.shared == 70000 && acct.shared_count == 1);
    assert (outq_share (&q, shared, 1000, 60000, OUTQ_PLAIN) == 0);
    memcpy (expect + expect_len, outq_shared_data (shared) + 1000, 60000), expect_len += 60000;
    assert (outq_share (&q, shared, 0, 50000, OUTQ_LIST) == 0);
    assert (outq_share (&q, shared, 0, 10, OUTQ_LIST) == -1);     /* one list at most */
    assert (outq_has_list (&q) && !outq_list_started (&q));
    /*  A newer list replaces the unsent one in place. */
    outq_shared_t *newer = outq_shared_new (20000, &acct);
    memset (outq_shared_data (newer), 'N', 20000);
    assert (outq_list_replace (&q, newer, 0, 20000));
    memcpy (expect + expect_len, outq_shared_data (newer), 20000), expect_len += 20000;
    outq_shared_unref (&newer);               /* the queue keeps its own reference */
    assert (acct.shared_count == 2);
    for (int i = 0; i < 500; i++) {           /* many small frames become one segment */
        char text [32];
        int n = snprintf (text, sizeof text, "{\"n\":%d}", i);
        assert (outq_frame (&q, text, (size_t) n) == 0);
        expect [expect_len++] = 0x81;
        expect [expect_len++] = (uint8_t) n;
        memcpy (expect + expect_len, text, (size_t) n), expect_len += (size_t) n;
    }
    assert (outq_pending (&q) == expect_len);
    assert (q.list_bytes == 20000 && q.queued == expect_len - 20000);
    assert (acct.owned == expect_len - 60000 - 20000 && q.owned == acct.owned);

    int flags;
    size_t got_len = pump_plain (&q, pair [0], pair [1], got, sizeof got, &flags);
    assert (flags & OUTQ_BLOCKED);            /* the small buffers made it wait */
    assert (flags & OUTQ_LIST_DONE);
    assert (got_len == expect_len && memcmp (got, expect, expect_len) == 0);
    assert (acct.owned == 0 && q.owned == 0 && q.queued == 0 && q.list_bytes == 0);
    assert (acct.shared_count == 1);          /* the newer list went with its segment */
    outq_shared_unref (&shared);
    assert (acct.shared == 0 && acct.shared_count == 0);

    /*  A started list cannot be replaced; a slow consumer's backlog is
        dropped, but never a started head. */
    shared = outq_shared_new (200000, &acct);
    memset (outq_shared_data (shared), 'L', 200000);
    assert (outq_share (&q, shared, 0, 200000, OUTQ_LIST) == 0);
    assert (outq_append (&q, "tail", 4) == 0);
    ssize_t n = outq_write (&q, pair [0], NULL, 1 << 20, &flags);
    assert (n > 0 && n < 200000 && (flags & OUTQ_BLOCKED));
    assert (outq_list_started (&q) && outq_head_started (&q));
    assert (!outq_list_replace (&q, shared, 0, 10));
    outq_drop_unstarted (&q);
    assert (q.head && q.head == q.tail && q.queued == 0 && q.list_bytes == 200000 - (size_t) n);
    assert (acct.owned == 0);
    outq_clear (&q);
    assert (outq_empty (&q) && q.list_bytes == 0);
    outq_shared_unref (&shared);
    assert (acct.shared_count == 0);
    outq_drop_unstarted (&q);                 /* nothing started: everything goes */
    assert (outq_append (&q, "x", 1) == 0);
    outq_drop_unstarted (&q);
    assert (outq_empty (&q) && acct.owned == 0);

    /*  A broken connection says so. */
    assert (outq_append (&q, "x", 1) == 0);
    close (pair [1]);
    assert (outq_write (&q, pair [0], NULL, 100, &flags) < 0);
    outq_clear (&q);
    close (pair [0]);
    assert (acct.owned == 0);
}

/*  A throw-away certificate for the TLS test. */
static SSL_CTX *
test_server_ctx (void)
{
    EVP_PKEY *key = EVP_EC_gen ("P-256");
    X509 *cert = X509_new ();
    assert (key && cert);
    ASN1_INTEGER_set (X509_get_serialNumber (cert), 1);
    X509_gmtime_adj (X509_getm_notBefore (cert), 0);
    X509_gmtime_adj (X509_getm_notAfter (cert), 3600);
    X509_set_pubkey (cert, key);
    X509_NAME *name = X509_get_subject_name (cert);
    X509_NAME_add_entry_by_txt (name, "CN", MBSTRING_ASC, (const unsigned char *) "outq", -1, -1, 0);
    X509_set_issuer_name (cert, name);
    assert (X509_sign (cert, key, EVP_sha256 ()) > 0);
    SSL_CTX *ctx = SSL_CTX_new (TLS_server_method ());
    assert (ctx && SSL_CTX_use_certificate (ctx, cert) == 1 && SSL_CTX_use_PrivateKey (ctx, key) == 1);
    X509_free (cert);
    EVP_PKEY_free (key);
    return ctx;
}

static void
test_tls (void)
{
    int pair [2];
    assert (socketpair (AF_UNIX, SOCK_STREAM, 0, pair) == 0);
    small_buffers (pair [0]);
    small_buffers (pair [1]);
    SSL_CTX *server_ctx = test_server_ctx ();
    SSL_CTX *client_ctx = SSL_CTX_new (TLS_client_method ());
    SSL *server = SSL_new (server_ctx), *client = SSL_new (client_ctx);
    SSL_set_fd (server, pair [0]);
    SSL_set_fd (client, pair [1]);
    SSL_set_accept_state (server);
    SSL_set_connect_state (client);
    /*  As libwebsockets sets its server connections up, and what we add. */
    SSL_set_mode (server, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS
                        | SSL_MODE_ENABLE_PARTIAL_WRITE);
    for (int i = 0; i < 1000 && (!SSL_is_init_finished (server) || !SSL_is_init_finished (client)); i++) {
        SSL_do_handshake (server);
        SSL_do_handshake (client);
    }
    assert (SSL_is_init_finished (server) && SSL_is_init_finished (client));

    outq_acct_t acct = { 0 };
    outq_t q;
    outq_init (&q, &acct);
    static uint8_t expect [2000000], got [2000000];
    size_t expect_len = 0, got_len = 0;
    int all_flags = 0;
    bool retried = false;
    /*  Appends between writes, while a record waits to be repeated. */
    for (int round = 0; round < 200 || !outq_empty (&q); round++) {
        if (round < 200) {
            uint8_t chunk [9000];
            for (size_t i = 0; i < sizeof chunk; i++)
                chunk [i] = (uint8_t) (round + i);
            assert (outq_append (&q, chunk, sizeof chunk) == 0);
            memcpy (expect + expect_len, chunk, sizeof chunk);
            expect_len += sizeof chunk;
        }
        int flags;
        assert (outq_write (&q, -1, server, 1u << 20, &flags) >= 0);
        all_flags |= flags;
        retried |= q.tls_retry > 0;
        if (round % 5 == 4)
            for (int r; (r = SSL_read (client, got + got_len, (int) (sizeof got - got_len))) > 0; )
                got_len += (size_t) r;
        assert (round < 100000);
    }
    for (int r; (r = SSL_read (client, got + got_len, (int) (sizeof got - got_len))) > 0; )
        got_len += (size_t) r;
    assert ((all_flags & OUTQ_BLOCKED) && retried);
    assert (got_len == expect_len && memcmp (got, expect, expect_len) == 0);
    assert (acct.owned == 0 && q.tls_retry == 0);

    /*  A repeat must not be shorter, whatever the caller's limit now. */
    static uint8_t big [300000];
    memset (big, 'r', sizeof big);
    assert (outq_append (&q, big, sizeof big) == 0);
    int flags;
    while (outq_write (&q, -1, server, sizeof big, &flags) >= 0 && !q.tls_retry)
        ;
    assert (q.tls_retry > 1);
    assert (outq_write (&q, -1, server, 1, &flags) >= 0);
    got_len = 0;
    for (int round = 0; !outq_empty (&q) && round < 100000; round++) {
        assert (outq_write (&q, -1, server, 1, &flags) >= 0);
        for (int r; (r = SSL_read (client, got + got_len, (int) (sizeof got - got_len))) > 0; )
            got_len += (size_t) r;
    }
    for (int r; (r = SSL_read (client, got + got_len, (int) (sizeof got - got_len))) > 0; )
        got_len += (size_t) r;
    assert (got_len == sizeof big && memcmp (got, big, sizeof big) == 0);
    SSL_free (server);
    SSL_free (client);
    SSL_CTX_free (server_ctx);
    SSL_CTX_free (client_ctx);
    close (pair [0]);
    close (pair [1]);
}

void
outq_test (bool verbose)
{
    if (verbose)
        printf (" * outq: ");
    test_plain ();
    test_tls ();
    if (verbose)
        printf ("OK\n");
}
