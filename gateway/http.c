/*  http.c - the web UI over HTTP: decides every HTTP answer (see http.h).

    The rules, in the order they are applied:
    - Request targets longer than HTTP_MAX_URI (8 KiB) get 414; shorter ones
      are handled without fixed-size buffers (paths too long for the file
      system just give 404).
    - redirect_to_https answers every request (any method, any path) 301;
      a target too long for the fixed headers[] (about 900 bytes) gets 414.
    - Only GET and HEAD; anything else is 405 with an Allow header.
    - The request target must start with "/"; the query and fragment are
      ignored; the path is percent-decoded exactly once; a bad escape, a NUL
      or other control byte, or bytes that are not UTF-8 give 400; a
      backslash gives 403; a "." or ".." segment gives 403; a segment that
      starts with "." (a hidden file) gives 404; empty segments collapse.
    - /enums.js, /enum.js, /enums.mjs and /enums.json are generated from
      gateway/enums.h and win over files of the same name.
    - Files: realpath() of root + path must stay inside the root's realpath
      (else 403), must be a regular file (a directory serves its index.html),
      and the descriptor actually opened is checked again through
      /proc/self/fd, so a symlink swapped in between cannot lead out.
    - Files over HTTP_MAX_FILE (32 MiB) are refused with 500: this serves a
      small UI from memory and does not stream.
    - Every answer carries the page's security headers (http.h): a strict
      Content-Security-Policy without 'unsafe-inline', X-Frame-Options
      DENY, Cross-Origin-Opener-Policy same-origin, nosniff, and over TLS
      Strict-Transport-Security.
*/
#include "http.h"
#include "enums.h"
#include "qms_json.h"
#include "qms_util.h"
#include "qms_util.h"
#include "qms_log.h"

#include <cJSON.h>
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define HTTP_MAX_FILE   (32u * 1024 * 1024)
#define HTTP_CSP_MAX    768
#define HTTP_HSTS       "max-age=31536000"
#define HTTP_MAX_URI    8192
#define HTTP_ACTOR      "gateway"
/*  Internal result of opening: the path names a directory. */
#define HTTP_IS_DIR     1

struct _http_site_t {
    char *root;                 /* realpath of html_dir */
    size_t root_len;
    char *server_address;       /* our copy */
    char csp [HTTP_CSP_MAX];    /* Content-Security-Policy */
    http_options_t options;     /* the caller's, with pointers to our copies */
};

/*  The chat address as a CSP source ("ws://host:port"), or "" when the
    address holds anything but a host name or an IP address (it is written
    into a header). */
static void
s_chat_source (const http_options_t *options, const char *address, char *out, size_t size)
{
    out [0] = 0;
    size_t len = strlen (address);
    if (len == 0 || len > 253)
        return;
    bool ipv6 = strchr (address, ':') != NULL;
    for (const char *p = address; *p; p++) {
        char c = *p;
        bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
               || (ipv6 ? c == ':' || c == '.' : (c >= 'g' && c <= 'z') || (c >= 'G' && c <= 'Z')
                                                 || c == '.' || c == '-');
        if (!ok)
            return;
    }
    if (options->chat_port <= 0 || options->chat_port > 65535)
        return;
    snprintf (out, size, "%s://%s%s%s:%d", options->chat_secure ? "wss" : "ws",
              ipv6 ? "[" : "", address, ipv6 ? "]" : "", options->chat_port);
}

static void
s_build_csp (http_site_t *self)
{
    char chat [300];
    s_chat_source (&self->options, self->server_address, chat, sizeof chat);
    /*  'self' covers ws:/wss: to the page's own host and port (the /ws
        path the UI falls back to); the chat port is another origin. */
    if (self->options.allow_inline)
        /*  --allow-inline-scripts: a page written with inline code (the
            original web client); everything else stays as strict. */
        snprintf (self->csp, sizeof self->csp,
                  "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
                  "img-src 'self' data:; connect-src 'self'%s%s; form-action 'self'; frame-ancestors 'none'; "
                  "base-uri 'none'", chat [0] ? " " : "", chat);
    else
        snprintf (self->csp, sizeof self->csp,
                  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                  "connect-src 'self'%s%s; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
                  "require-trusted-types-for 'script'; trusted-types 'none'",
                  chat [0] ? " " : "", chat);
}

const char *
http_site_csp (const http_site_t *self)
{
    return self->csp;
}

/* ------------------------------------------------------------------------ */
/*  Site */

http_site_t *
http_site_new (const http_options_t *options)
{
    if (!options || !options->html_dir)
        return NULL;
    char *root = realpath (options->html_dir, NULL);
    struct stat st;
    if (!root || stat (root, &st) != 0 || !S_ISDIR (st.st_mode)) {
        free (root);
        return NULL;
    }
    http_site_t *self = calloc (1, sizeof *self);
    char *address = strdup (options->server_address ? options->server_address : "localhost");
    if (!self || !address) {
        free (self);
        free (address);
        free (root);
        return NULL;
    }
    self->root = root;
    self->root_len = strlen (root);
    self->server_address = address;
    self->options = *options;
    self->options.html_dir = self->root;
    self->options.server_address = self->server_address;
    s_build_csp (self);
    return self;
}

void
http_site_destroy (http_site_t **self_p)
{
    if (self_p && *self_p) {
        http_site_t *self = *self_p;
        free (self->root);
        free (self->server_address);
        free (self);
        *self_p = NULL;
    }
}

/* ------------------------------------------------------------------------ */
/*  Generated bodies: a qms_buf_t and whether anything failed on the way
    (checked once, at the end). */

typedef struct {
    qms_buf_t out;
    bool failed;
} buf_t;

static void
buf_add (buf_t *b, const char *s, size_t n)
{
    if (!b->failed && qms_buf_append (&b->out, s, n))
        b->failed = true;
}

static void
buf_str (buf_t *b, const char *s)
{
    buf_add (b, s, strlen (s));
}

/*  A JSON string literal; the names are identifiers today, but escaping
    keeps the output valid whatever is appended to the tables, and '<' is
    escaped so "</script>" can never appear in the script form. */
static void
buf_json_string (buf_t *b, const char *s)
{
    if (!b->failed && qms_json_string (&b->out, s, strlen (s), QMS_JSON_HTML))
        b->failed = true;
}

/*  The text, NUL-terminated (for a header line); NULL if anything failed. */
static const char *
buf_cstr (buf_t *b)
{
    buf_add (b, "", 1);
    if (b->failed)
        return NULL;
    b->out.len--;
    return (const char *) b->out.data;
}

static void
buf_enum_object (buf_t *b, const qms_enum_entry_t *table)
{
    buf_add (b, "{", 1);
    for (size_t i = 0; table [i].name; i++) {
        if (i)
            buf_add (b, ",", 1);
        buf_json_string (b, table [i].name);
        char num [24];
        int n = snprintf (num, sizeof num, ":%d", table [i].value);
        buf_add (b, num, (size_t) n);
    }
    buf_add (b, "}", 1);
}

/* ------------------------------------------------------------------------ */
/*  Response helpers */

static void
s_header (http_response_t *resp, const char *name, const char *value)
{
    size_t used = strlen (resp->headers);
    size_t need = strlen (name) + 2 + strlen (value) + 2;
    /*  Every caller adds short, fixed headers or the CSP (under
        HTTP_CSP_MAX); the one long header (Location) is checked before it
        gets here. */
    assert (used + need < sizeof resp->headers);
    snprintf (resp->headers + used, sizeof resp->headers - used, "%s: %s\r\n", name, value);
}

static void
s_set_type (http_response_t *resp, const char *type)
{
    snprintf (resp->content_type, sizeof resp->content_type, "%s", type);
}


/*  A status with a short text/plain body ("404 Not Found\n").  Keeps the
    headers already set (Allow, Location). */
static void
s_status_page (http_response_t *resp, int status)
{
    resp->status = status;
    s_set_type (resp, "text/plain; charset=utf-8");
    free (resp->body);
    resp->body = NULL;
    resp->body_len = 0;
    char text [64];
    int n = snprintf (text, sizeof text, "%d %s\n", status, qms_http_reason (status));
    resp->body = malloc ((size_t) n + 1);
    if (resp->body) {
        memcpy (resp->body, text, (size_t) n + 1);
        resp->body_len = (size_t) n;
    }
}

/*  The body, NUL-terminated after its length like every body here. */
static void
s_take_body (http_response_t *resp, buf_t *b)
{
    buf_cstr (b);
    resp->body = (char *) b->out.data;
    resp->body_len = b->out.len;
    qms_buf_init (&b->out);
}

void
http_response_free (http_response_t *resp)
{
    if (resp) {
        free (resp->body);
        resp->body = NULL;
        resp->body_len = 0;
    }
}

/* ------------------------------------------------------------------------ */
/*  Path resolution */

static int
s_hexval (char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/*  Percent-decode the path part of uri (up to '?' or '#') into out, once.
    Returns the decoded length, or -400 / -403 / -414. */
static long
s_decode (const char *uri, char *out, size_t out_size)
{
    size_t o = 0;
    for (const char *p = uri; *p && *p != '?' && *p != '#'; p++) {
        unsigned char c = (unsigned char) *p;
        if (c == '%') {
            int hi = s_hexval (p [1]);
            int lo = hi < 0 ? -1 : s_hexval (p [2]);
            if (hi < 0 || lo < 0)
                return -400;
            c = (unsigned char) (hi * 16 + lo);
            p += 2;
        }
        if (c < 0x20 || c == 0x7f)
            return -400;        /* NUL and control bytes: never a file name */
        if (o + 1 >= out_size)
            return -414;
        out [o++] = (char) c;
    }
    out [o] = 0;
    if (!qms_utf8_valid (out, o))
        return -400;            /* "%c0%ae" overlongs and other non-UTF-8 */
    if (memchr (out, '\\', o))
        return -403;
    return (long) o;
}

int
http_path_resolve (const char *uri, char *out, size_t out_size)
{
    if (!uri || uri [0] != '/' || !out || out_size == 0)
        return 400;
    long decoded = s_decode (uri, out, out_size);
    if (decoded < 0)
        return (int) -decoded;
    size_t len = (size_t) decoded;
    bool trailing_slash = len > 0 && out [len - 1] == '/';

    /*  Split on '/', in place: the write position never passes the read
        position, so memmove within out is enough. */
    size_t w = 0;
    size_t r = 0;
    while (r < len) {
        size_t start = r;
        while (r < len && out [r] != '/')
            r++;
        size_t seg_len = r - start;
        r++;                    /* past the '/' */
        if (seg_len == 0)
            continue;           /* "//": empty segments collapse */
        const char *seg = out + start;
        if ((seg_len == 1 && seg [0] == '.')
        ||  (seg_len == 2 && seg [0] == '.' && seg [1] == '.'))
            return 403;
        if (seg [0] == '.')
            return 404;         /* hidden file or folder */
        if (w > 0)
            out [w++] = '/';
        memmove (out + w, seg, seg_len);
        w += seg_len;
    }
    if (w == 0 || trailing_slash) {
        const char *index = w ? "/index.html" : "index.html";
        size_t n = strlen (index);
        if (w + n + 1 > out_size)
            return 414;
        memcpy (out + w, index, n);
        w += n;
    }
    out [w] = 0;
    return 0;
}

/* ------------------------------------------------------------------------ */
/*  Content types and substitution */

typedef struct {
    const char *ext;
    const char *type;
} type_entry_t;

static const type_entry_t s_types [] = {
    { "html", "text/html; charset=utf-8" },
    { "htm", "text/html; charset=utf-8" },
    { "js", "text/javascript; charset=utf-8" },
    { "mjs", "text/javascript; charset=utf-8" },
    { "css", "text/css; charset=utf-8" },
    { "txt", "text/plain; charset=utf-8" },
    { "json", "application/json" },
    { "map", "application/json" },
    { "svg", "image/svg+xml" },
    { "png", "image/png" },
    { "jpg", "image/jpeg" },
    { "jpeg", "image/jpeg" },
    { "gif", "image/gif" },
    { "ico", "image/x-icon" },
    { "webp", "image/webp" },
    { "woff", "font/woff" },
    { "woff2", "font/woff2" },
    { "wasm", "application/wasm" },
};

/*  The extension of the last segment (after its last '.'), or NULL. */
static const char *
s_extension (const char *path)
{
    const char *slash = strrchr (path, '/');
    const char *name = slash ? slash + 1 : path;
    const char *dot = strrchr (name, '.');
    return dot && dot [1] ? dot + 1 : NULL;
}

const char *
http_content_type (const char *path)
{
    const char *ext = path ? s_extension (path) : NULL;
    if (ext)
        for (size_t i = 0; i < sizeof s_types / sizeof s_types [0]; i++)
            if (strcasecmp (ext, s_types [i].ext) == 0)
                return s_types [i].type;
    return "application/octet-stream";
}

/*  Files whose placeholders the server fills in (PROTOCOL.md). */
static bool
s_substituted (const char *path)
{
    const char *ext = s_extension (path);
    return ext && (strcasecmp (ext, "html") == 0
                || strcasecmp (ext, "js") == 0
                || strcasecmp (ext, "mjs") == 0);
}

typedef struct {
    const char *token;
    size_t token_len;
    const char *value;
    size_t value_len;
} placeholder_t;

char *
http_substitute (const http_options_t *options, const char *data, size_t len,
                 size_t *out_len)
{
    char port [16];
    snprintf (port, sizeof port, "%d", options->chat_port);
    const char *address = options->server_address ? options->server_address : "localhost";
    const char *protocol = options->chat_secure ? "wss" : "ws";
    const placeholder_t holders [] = {
        { "%SERVER_ADDRESS%", 16, address, strlen (address) },
        { "%SERVER_PORT%", 13, port, strlen (port) },
        { "%SERVER_PROTOCOL%", 17, protocol, strlen (protocol) },
    };
    const size_t count = sizeof holders / sizeof holders [0];

    /*  Two passes over the input, one to size and one to write, so the
        output is allocated once; output is never rescanned. */
    char *out = NULL;
    size_t total = 0;
    for (int pass = 0; pass < 2; pass++) {
        size_t o = 0;
        size_t i = 0;
        while (i < len) {
            const char *pct = data [i] == '%' ? data + i
                            : memchr (data + i, '%', len - i);
            size_t plain = pct ? (size_t) (pct - (data + i)) : len - i;
            if (out)
                memcpy (out + o, data + i, plain);
            o += plain;
            i += plain;
            if (i >= len)
                break;
            size_t h;
            for (h = 0; h < count; h++)
                if (len - i >= holders [h].token_len
                &&  memcmp (data + i, holders [h].token, holders [h].token_len) == 0)
                    break;
            if (h < count) {
                if (out)
                    memcpy (out + o, holders [h].value, holders [h].value_len);
                o += holders [h].value_len;
                i += holders [h].token_len;
            }
            else {
                if (out)
                    out [o] = '%';
                o++;
                i++;
            }
        }
        if (pass == 0) {
            total = o;
            out = malloc (total + 1);
            if (!out)
                return NULL;
        }
    }
    out [total] = 0;
    if (out_len)
        *out_len = total;
    return out;
}

/* ------------------------------------------------------------------------ */
/*  Generated enums */

typedef enum { ENUMS_SCRIPT, ENUMS_MODULE, ENUMS_JSON } enums_form_t;

static bool
s_enums_body (enums_form_t form, buf_t *b)
{
    if (form == ENUMS_JSON) {
        buf_str (b, "{\"Requests\":");
        buf_enum_object (b, qms_request_names);
        buf_str (b, ",\"Responses\":");
        buf_enum_object (b, qms_event_names);
        buf_str (b, "}");
    }
    else {
        const char *prefix = form == ENUMS_MODULE ? "export const" : "var";
        buf_str (b, "/* Generated by the server from its protocol tables. */\n");
        buf_str (b, prefix);
        buf_str (b, " Requests = Object.freeze(");
        buf_enum_object (b, qms_request_names);
        buf_str (b, ");\n");
        buf_str (b, prefix);
        buf_str (b, " Responses = Object.freeze(");
        buf_enum_object (b, qms_event_names);
        buf_str (b, ");\n");
        if (form == ENUMS_SCRIPT)
            /*  Top-level var already makes window properties; this also
                covers a page that loads the file as a module by mistake. */
            buf_str (b, "globalThis.Requests = Requests;\n"
                        "globalThis.Responses = Responses;\n");
    }
    return !b->failed;
}

/*  Case-insensitive search for a token in a header value. */
static bool
s_header_has (const char *value, const char *token)
{
    if (!value)
        return false;
    size_t n = strlen (token);
    for (const char *p = value; *p; p++)
        if (strncasecmp (p, token, n) == 0)
            return true;
    return false;
}

static bool
s_header_is (const char *value, const char *token)
{
    if (!value)
        return false;
    while (*value == ' ' || *value == '\t')
        value++;
    size_t n = strlen (token);
    if (strncasecmp (value, token, n) != 0)
        return false;
    for (value += n; *value; value++)
        if (*value != ' ' && *value != '\t')
            return false;
    return true;
}

/*  Answers the generated files; false if path is not one of them. */
static bool
s_serve_enums (const http_request_t *req, const char *path, http_response_t *resp)
{
    enums_form_t form;
    bool negotiated = false;
    if (strcmp (path, "enums.js") == 0 || strcmp (path, "enum.js") == 0) {
        /*  fetch('/enums.js').then(r => r.json()) from the original README
            must work, and so must <script src="enums.js"> (PROTOCOL.md). */
        negotiated = true;
        form = s_header_is (req->sec_fetch_dest, "empty")
            || s_header_has (req->accept, "application/json")
             ? ENUMS_JSON : ENUMS_SCRIPT;
    }
    else
    if (strcmp (path, "enums.mjs") == 0)
        form = ENUMS_MODULE;
    else
    if (strcmp (path, "enums.json") == 0)
        form = ENUMS_JSON;
    else
        return false;

    buf_t b = { 0 };
    if (!s_enums_body (form, &b)) {
        qms_buf_free (&b.out);
        s_status_page (resp, 500);
        return true;
    }
    resp->status = 200;
    s_set_type (resp, form == ENUMS_JSON ? "application/json" : "text/javascript; charset=utf-8");
    s_take_body (resp, &b);
    s_header (resp, "Cache-Control", "no-cache");
    if (negotiated)
        s_header (resp, "Vary", "Sec-Fetch-Dest, Accept");
    return true;
}

/* ------------------------------------------------------------------------ */
/*  Files */

static bool
s_inside_root (const http_site_t *self, const char *resolved)
{
    if (self->root_len == 1)    /* root is "/": everything is inside */
        return resolved [0] == '/';
    return strncmp (resolved, self->root, self->root_len) == 0
        && (resolved [self->root_len] == '/' || resolved [self->root_len] == 0);
}

/*  True if any segment of the resolved path below the root is hidden, so a
    symlink cannot publish a dot-folder either. */
static bool
s_hidden_below_root (const http_site_t *self, const char *resolved)
{
    for (const char *p = resolved + self->root_len; *p; p++)
        if (*p == '/' && p [1] == '.')
            return true;
    return false;
}

/*  The descriptor really is the file we checked: a symlink swapped into the
    path after realpath() would show here.  Without /proc the realpath check
    stands alone. */
static bool
s_fd_is (int fd, const char *resolved)
{
    char link [64];
    snprintf (link, sizeof link, "/proc/self/fd/%d", fd);
    size_t want = strlen (resolved);
    char *seen = malloc (want + 2);
    if (!seen)
        return false;
    ssize_t n = readlink (link, seen, want + 2);
    bool same;
    if (n < 0)
        same = errno == ENOENT; /* no /proc mounted */
    else
        same = (size_t) n == want && memcmp (seen, resolved, want) == 0;
    free (seen);
    return same;
}

/*  What a failed realpath() or open() means to the client. */
static int
s_errno_status (int err)
{
    if (err == ENOENT || err == ENOTDIR || err == ENAMETOOLONG)
        return 404;
    if (err == EACCES || err == EPERM || err == ELOOP)
        return 403;             /* includes a symlink swapped in (O_NOFOLLOW) */
    qms_warn (HTTP_ACTOR, "event=http_open_failed errno=%d", err);
    return 500;
}

/*  Opens rel (relative to the root) for reading.  Returns 0 with *fd_p set,
    HTTP_IS_DIR, or an HTTP status. */
static int
s_open (const http_site_t *self, const char *rel, int *fd_p, struct stat *st)
{
    size_t full_len = self->root_len + 1 + strlen (rel) + 1;
    char *full = malloc (full_len);
    if (!full)
        return 500;
    snprintf (full, full_len, "%s/%s", self->root, rel);
    char *resolved = realpath (full, NULL);
    int err = errno;
    free (full);
    if (!resolved)
        return s_errno_status (err);

    int rc = 0;
    int fd = -1;
    if (!s_inside_root (self, resolved))
        rc = 403;
    else
    if (s_hidden_below_root (self, resolved))
        rc = 404;
    else {
        fd = open (resolved, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
        if (fd < 0)
            rc = s_errno_status (errno);
        else
        if (fstat (fd, st) != 0)
            rc = 500;
        else
        if (!s_fd_is (fd, resolved))
            rc = 403;
        else
        if (S_ISDIR (st->st_mode))
            rc = HTTP_IS_DIR;
        else
        if (!S_ISREG (st->st_mode))
            rc = 404;           /* FIFOs, devices, sockets: never served */
    }
    free (resolved);
    if (rc != 0 && fd >= 0)
        close (fd);
    else
        *fd_p = fd;
    return rc;
}

/*  Reads the whole file into a malloc'd buffer.  Returns 0 or a status. */
static int
s_read_all (int fd, const struct stat *st, char **data_p, size_t *len_p)
{
    if (st->st_size < 0 || (uintmax_t) st->st_size > HTTP_MAX_FILE) {
        qms_warn (HTTP_ACTOR, "event=http_file_too_big size=%jd max=%u",
                  (intmax_t) st->st_size, HTTP_MAX_FILE);
        return 500;
    }
    size_t size = (size_t) st->st_size;
    char *data = malloc (size + 1);
    if (!data)
        return 500;
    size_t got = 0;
    while (got < size) {
        ssize_t n = read (fd, data + got, size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            qms_warn (HTTP_ACTOR, "event=http_read_failed errno=%d", errno);
            free (data);
            return 500;
        }
        if (n == 0)
            break;              /* the file shrank while we read it */
        got += (size_t) n;
    }
    data [got] = 0;
    *data_p = data;
    *len_p = got;
    return 0;
}

static void
s_serve_file (http_site_t *self, char *path, size_t path_size, http_response_t *resp)
{
    int fd = -1;
    struct stat st;
    int rc = s_open (self, path, &fd, &st);
    if (rc == HTTP_IS_DIR) {
        /*  A folder serves its index.html, if it has one. */
        size_t len = strlen (path);
        if (len + sizeof "/index.html" > path_size) {
            s_status_page (resp, 404);
            return;
        }
        memcpy (path + len, "/index.html", sizeof "/index.html");
        rc = s_open (self, path, &fd, &st);
        if (rc == HTTP_IS_DIR)
            rc = 404;
    }
    if (rc != 0) {
        s_status_page (resp, rc);
        return;
    }
    char *data = NULL;
    size_t len = 0;
    rc = s_read_all (fd, &st, &data, &len);
    close (fd);
    if (rc != 0) {
        s_status_page (resp, rc);
        return;
    }
    if (s_substituted (path)) {
        size_t out_len = 0;
        char *out = http_substitute (&self->options, data, len, &out_len);
        free (data);
        if (!out) {
            s_status_page (resp, 500);
            return;
        }
        data = out;
        len = out_len;
        s_header (resp, "Cache-Control", "no-cache");
    }
    resp->status = 200;
    s_set_type (resp, http_content_type (path));
    resp->body = data;
    resp->body_len = len;
}

/* ------------------------------------------------------------------------ */
/*  Redirect */

/*  301 to https://<address>:<port><uri>.  Bytes that could break the header
    line (controls, spaces, non-ASCII) are percent-encoded. */
static void
s_redirect (http_site_t *self, const char *uri, http_response_t *resp)
{
    buf_t b = { 0 };
    bool ipv6 = strchr (self->server_address, ':') && self->server_address [0] != '[';
    char port [24];
    snprintf (port, sizeof port, ":%d", self->options.https_port);
    buf_str (&b, "https://");
    if (ipv6)
        buf_str (&b, "[");
    buf_str (&b, self->server_address);
    if (ipv6)
        buf_str (&b, "]");
    buf_str (&b, port);
    if (!uri || uri [0] != '/')
        buf_str (&b, "/");
    for (const char *p = uri ? uri : ""; *p; p++) {
        unsigned char c = (unsigned char) *p;
        if (c <= 0x20 || c >= 0x7f) {
            char esc [4];
            snprintf (esc, sizeof esc, "%%%02X", c);
            buf_add (&b, esc, 3);
        }
        else
            buf_add (&b, p, 1);
    }
    const char *location = buf_cstr (&b);
    if (!location) {
        qms_buf_free (&b.out);
        s_status_page (resp, 500);
        return;
    }
    /*  headers[] is fixed; a target too long for it gets 414. */
    if (strlen (resp->headers) + b.out.len + sizeof "Location: \r\n" + 64 > sizeof resp->headers) {
        qms_buf_free (&b.out);
        s_status_page (resp, 414);
        return;
    }
    s_header (resp, "Location", location);
    qms_buf_free (&b.out);
    s_status_page (resp, 301);
}

/* ------------------------------------------------------------------------ */
/*  Entry point */

void
http_handle (http_site_t *self, const http_request_t *req, http_response_t *resp)
{
    memset (resp, 0, sizeof *resp);
    bool is_get = req->method && strcmp (req->method, "GET") == 0;
    bool is_head = req->method && strcmp (req->method, "HEAD") == 0;
    resp->head_only = is_head;
    s_header (resp, "X-Content-Type-Options", "nosniff");
    /*  The page's defences, on every answer (error pages are documents too). */
    s_header (resp, "Content-Security-Policy", self->csp);
    s_header (resp, "X-Frame-Options", "DENY");
    s_header (resp, "Cross-Origin-Opener-Policy", "same-origin");
    if (self->options.hsts && !self->options.redirect_to_https)
        s_header (resp, "Strict-Transport-Security", HTTP_HSTS);

    size_t uri_len = req->uri ? strlen (req->uri) : 0;
    if (uri_len > HTTP_MAX_URI) {
        s_status_page (resp, 414);
        return;
    }
    if (self->options.redirect_to_https) {
        s_redirect (self, req->uri, resp);
        return;
    }
    if (!is_get && !is_head) {
        s_header (resp, "Allow", "GET, HEAD");
        s_status_page (resp, 405);
        return;
    }
    /*  Room for the decoded path (never longer than the URI) plus a
        "/index.html" appended for a folder. */
    size_t path_size = uri_len + 2 * sizeof "/index.html";
    char *path = malloc (path_size);
    if (!path) {
        s_status_page (resp, 500);
        return;
    }
    int rc = http_path_resolve (req->uri, path, path_size);
    if (rc != 0)
        s_status_page (resp, rc);
    else
    if (!s_serve_enums (req, path, resp))
        s_serve_file (self, path, path_size, resp);
    free (path);
}

/* ------------------------------------------------------------------------ */
/*  Selftest */

#ifndef streq
#   define streq(a, b) (strcmp ((a), (b)) == 0)
#endif

static void
s_write_file (const char *dir, const char *name, const char *text)
{
    char path [PATH_MAX];
    snprintf (path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen (path, "wb");
    assert (f);
    assert (fwrite (text, 1, strlen (text), f) == strlen (text));
    assert (fclose (f) == 0);
}

static void
s_mkdir (const char *dir, const char *name)
{
    char path [PATH_MAX];
    snprintf (path, sizeof path, "%s/%s", dir, name);
    assert (mkdir (path, 0700) == 0);
}

static void
s_symlink (const char *target, const char *dir, const char *name)
{
    char path [PATH_MAX];
    snprintf (path, sizeof path, "%s/%s", dir, name);
    assert (symlink (target, path) == 0);
}

/*  One request; the response is left in resp for the caller to inspect
    and free. */
static int
s_req (http_site_t *site, const char *method, const char *uri,
       const char *accept, const char *dest, http_response_t *resp)
{
    http_request_t req = { method, uri, accept, dest, "localhost" };
    http_handle (site, &req, resp);
    /*  Every response is complete: a status, a type, the security headers. */
    assert (resp->status >= 200 && resp->status < 600);
    assert (resp->content_type [0]);
    assert (strstr (resp->headers, "X-Content-Type-Options: nosniff\r\n"));
    const char *csp = strstr (resp->headers, "Content-Security-Policy: default-src 'none'; ");
    assert (csp && strncmp (csp + 25, http_site_csp (site), strlen (http_site_csp (site))) == 0);
    assert (!strstr (http_site_csp (site), "unsafe-"));
    assert (strstr (resp->headers, "X-Frame-Options: DENY\r\n"));
    assert (strstr (resp->headers, "Cross-Origin-Opener-Policy: same-origin\r\n"));
    assert (resp->body_len == 0 || resp->body);
    return resp->status;
}

/*  Status of a GET, checking that no secret from outside the root leaked. */
static int
s_get (http_site_t *site, const char *uri)
{
    http_response_t resp;
    int status = s_req (site, "GET", uri, NULL, NULL, &resp);
    assert (!resp.body || !strstr (resp.body, "SECRET"));
    if (status != 200) {
        /*  Errors carry a short text/plain body naming the status. */
        char expect [8];
        snprintf (expect, sizeof expect, "%d ", status);
        assert (strncmp (resp.content_type, "text/plain", 10) == 0);
        assert (resp.body && strncmp (resp.body, expect, 4) == 0);
        assert (resp.body [resp.body_len - 1] == '\n');
    }
    http_response_free (&resp);
    return status;
}

/*  GET uri, expect 200 and a body equal to want (NULL: don't compare);
    returns nothing, checks the content type too when type is given. */
static void
s_get_expect (http_site_t *site, const char *uri, const char *want, const char *type)
{
    http_response_t resp;
    int status = s_req (site, "GET", uri, NULL, NULL, &resp);
    if (status != 200)
        fprintf (stderr, "http_test: GET %.80s -> %d\n", uri, status);
    assert (status == 200);
    assert (!resp.head_only);
    if (want) {
        assert (resp.body_len == strlen (want));
        assert (memcmp (resp.body, want, resp.body_len) == 0);
    }
    if (type)
        assert (strcmp (resp.content_type, type) == 0);
    http_response_free (&resp);
}

/*  Removes a test tree (does not follow symlinks). */
static void
s_rm_tree (const char *path)
{
    struct stat st;
    assert (lstat (path, &st) == 0);
    if (S_ISDIR (st.st_mode)) {
        DIR *dir = opendir (path);
        assert (dir);
        struct dirent *entry;
        while ((entry = readdir (dir))) {
            if (streq (entry->d_name, ".") || streq (entry->d_name, ".."))
                continue;
            char child [PATH_MAX];
            snprintf (child, sizeof child, "%s/%s", path, entry->d_name);
            s_rm_tree (child);
        }
        closedir (dir);
        assert (rmdir (path) == 0);
    }
    else
        assert (unlink (path) == 0);
}

/*  Checks one enums table against the parsed JSON object: every entry,
    by name and number, and nothing else. */
static void
s_check_enum_json (const cJSON *obj, const qms_enum_entry_t *table)
{
    assert (cJSON_IsObject (obj));
    int count = 0;
    for (size_t i = 0; table [i].name; i++, count++) {
        const cJSON *item = cJSON_GetObjectItemCaseSensitive (obj, table [i].name);
        assert (cJSON_IsNumber (item));
        assert (item->valueint == table [i].value);
    }
    assert (cJSON_GetArraySize (obj) == count);
}

static void
s_test_building_blocks (void)
{
    /*  http_path_resolve */
    char out [256];
    assert (http_path_resolve ("/", out, sizeof out) == 0 && streq (out, "index.html"));
    assert (http_path_resolve ("//", out, sizeof out) == 0 && streq (out, "index.html"));
    assert (http_path_resolve ("/a//b///c", out, sizeof out) == 0 && streq (out, "a/b/c"));
    assert (http_path_resolve ("/sub/", out, sizeof out) == 0 && streq (out, "sub/index.html"));
    assert (http_path_resolve ("/sub?x=/../", out, sizeof out) == 0 && streq (out, "sub"));
    assert (http_path_resolve ("/a%20b#f", out, sizeof out) == 0 && streq (out, "a b"));
    assert (http_path_resolve ("/%252e%252e/x", out, sizeof out) == 0 && streq (out, "%2e%2e/x"));
    assert (http_path_resolve ("/a+b", out, sizeof out) == 0 && streq (out, "a+b"));
    assert (http_path_resolve ("/caf%C3%A9", out, sizeof out) == 0 && streq (out, "caf\xc3\xa9"));
    assert (http_path_resolve ("/..", out, sizeof out) == 403);
    assert (http_path_resolve ("/.", out, sizeof out) == 403);
    assert (http_path_resolve ("/a/./b", out, sizeof out) == 403);
    assert (http_path_resolve ("/%2e%2e%2fx", out, sizeof out) == 403);
    assert (http_path_resolve ("/a%5cb", out, sizeof out) == 403);
    assert (http_path_resolve ("/.git/config", out, sizeof out) == 404);
    assert (http_path_resolve ("/a/.env", out, sizeof out) == 404);
    assert (http_path_resolve ("/%", out, sizeof out) == 400);
    assert (http_path_resolve ("/%4", out, sizeof out) == 400);
    assert (http_path_resolve ("/%g0", out, sizeof out) == 400);
    assert (http_path_resolve ("/%00", out, sizeof out) == 400);
    assert (http_path_resolve ("/%0a", out, sizeof out) == 400);
    assert (http_path_resolve ("/\x01", out, sizeof out) == 400);
    assert (http_path_resolve ("/%c0%ae%c0%ae", out, sizeof out) == 400);
    assert (http_path_resolve ("/%ff", out, sizeof out) == 400);
    assert (http_path_resolve ("", out, sizeof out) == 400);
    assert (http_path_resolve ("x", out, sizeof out) == 400);
    assert (http_path_resolve ("*", out, sizeof out) == 400);
    assert (http_path_resolve ("http://h/x", out, sizeof out) == 400);
    assert (http_path_resolve (NULL, out, sizeof out) == 400);
    /*  Too small an output buffer is a clean 414, never an overflow. */
    char tiny [8];
    assert (http_path_resolve ("/abcdefgh", tiny, sizeof tiny) == 414);
    assert (http_path_resolve ("/", tiny, 5) == 414);
    assert (http_path_resolve ("/abc", tiny, sizeof tiny) == 0 && streq (tiny, "abc"));

    /*  http_content_type */
    assert (streq (http_content_type ("index.html"), "text/html; charset=utf-8"));
    assert (streq (http_content_type ("a/INDEX.HTML"), "text/html; charset=utf-8"));
    assert (streq (http_content_type ("app.js"), "text/javascript; charset=utf-8"));
    assert (streq (http_content_type ("m.mjs"), "text/javascript; charset=utf-8"));
    assert (streq (http_content_type ("s.css"), "text/css; charset=utf-8"));
    assert (streq (http_content_type ("d.json"), "application/json"));
    assert (streq (http_content_type ("i.svg"), "image/svg+xml"));
    assert (streq (http_content_type ("i.png"), "image/png"));
    assert (streq (http_content_type ("i.jpg"), "image/jpeg"));
    assert (streq (http_content_type ("i.jpeg"), "image/jpeg"));
    assert (streq (http_content_type ("i.gif"), "image/gif"));
    assert (streq (http_content_type ("favicon.ico"), "image/x-icon"));
    assert (streq (http_content_type ("i.webp"), "image/webp"));
    assert (streq (http_content_type ("f.woff"), "font/woff"));
    assert (streq (http_content_type ("f.woff2"), "font/woff2"));
    assert (streq (http_content_type ("r.txt"), "text/plain; charset=utf-8"));
    assert (streq (http_content_type ("app.js.map"), "application/json"));
    assert (streq (http_content_type ("m.wasm"), "application/wasm"));
    assert (streq (http_content_type ("data.bin"), "application/octet-stream"));
    assert (streq (http_content_type ("js"), "application/octet-stream"));
    assert (streq (http_content_type ("dir.js/file"), "application/octet-stream"));
    assert (streq (http_content_type ("x."), "application/octet-stream"));

    /*  http_substitute: one pass, output never rescanned */
    http_options_t opts = { NULL, "%SERVER_PORT%", 12345, true, false, 0, false, false };
    const char *in = "%SERVER_PROTOCOL%://%SERVER_ADDRESS%:%SERVER_PORT%/%%SERVER_PORT%%"
                     " %SERVER_ %SERVER_PORT";
    size_t len = 0;
    char *res = http_substitute (&opts, in, strlen (in), &len);
    assert (res && len == strlen (res));
    assert (streq (res, "wss://%SERVER_PORT%:12345/%12345% %SERVER_ %SERVER_PORT"));
    free (res);
    opts.chat_secure = false;
    opts.server_address = "chat.example";
    res = http_substitute (&opts, "%SERVER_PROTOCOL%", 17, &len);
    assert (res && streq (res, "ws") && len == 2);
    free (res);
    /*  Binary-safe: a NUL in the data is copied, not an end. */
    res = http_substitute (&opts, "a\0%SERVER_ADDRESS%", 18, &len);
    assert (res && len == 14 && memcmp (res, "a\0chat.example", 14) == 0);
    free (res);
    res = http_substitute (&opts, "", 0, &len);
    assert (res && len == 0 && res [0] == 0);
    free (res);
}

static void
s_test_enums (http_site_t *site)
{
    const char *json =
        "{\"Requests\":{\"LoginRequest\":0,\"RegisterRequest\":1,\"LogoutRequest\":2,"
        "\"MessageRequest\":3,\"AuthorizeRequest\":4,\"ReceiptRequest\":5,\"UserLookupRequest\":6,"
        "\"GroupCreateRequest\":7,\"GroupUpdateRequest\":8,\"GroupListRequest\":9,\"GroupMessageRequest\":10"
        "},\"Responses\":{\"AuthorizationEvent\":0,\"LoginEvent\":1,\"MessageEvent\":2,"
        "\"InvalidUserEvent\":3,\"UserlistChangeEvent\":4,\"MessageAckEvent\":5,\"UserlistDeltaEvent\":6,\"UserLookupEvent\":7,"
        "\"GroupEvent\":8,\"GroupListEvent\":9,\"GroupMessageEvent\":10}}";
    const char *requests =
        "Requests = Object.freeze({\"LoginRequest\":0,\"RegisterRequest\":1,"
        "\"LogoutRequest\":2,\"MessageRequest\":3,\"AuthorizeRequest\":4,\"ReceiptRequest\":5,\"UserLookupRequest\":6,"
        "\"GroupCreateRequest\":7,\"GroupUpdateRequest\":8,\"GroupListRequest\":9,\"GroupMessageRequest\":10});";
    const char *responses =
        "Responses = Object.freeze({\"AuthorizationEvent\":0,\"LoginEvent\":1,"
        "\"MessageEvent\":2,\"InvalidUserEvent\":3,\"UserlistChangeEvent\":4,\"MessageAckEvent\":5,\"UserlistDeltaEvent\":6,\"UserLookupEvent\":7,"
        "\"GroupEvent\":8,\"GroupListEvent\":9,\"GroupMessageEvent\":10});";

    /*  /enums.json: exactly the documented numbers, and every table entry */
    http_response_t resp;
    assert (s_req (site, "GET", "/enums.json", NULL, NULL, &resp) == 200);
    assert (streq (resp.content_type, "application/json"));
    assert (resp.body_len == strlen (json) && streq (resp.body, json));
    cJSON *root = cJSON_Parse (resp.body);
    assert (root);
    s_check_enum_json (cJSON_GetObjectItemCaseSensitive (root, "Requests"), qms_request_names);
    s_check_enum_json (cJSON_GetObjectItemCaseSensitive (root, "Responses"), qms_event_names);
    cJSON_Delete (root);
    assert (!strstr (resp.headers, "Vary:"));
    http_response_free (&resp);

    /*  /enums.mjs: an ES module */
    assert (s_req (site, "GET", "/enums.mjs", NULL, NULL, &resp) == 200);
    assert (streq (resp.content_type, "text/javascript; charset=utf-8"));
    assert (strstr (resp.body, "export const Requests = Object.freeze({\"LoginRequest\":0,"));
    assert (strstr (resp.body, requests) && strstr (resp.body, responses));
    assert (strstr (resp.body, "export const Responses = "));
    assert (!strstr (resp.body, "var ") && !strstr (resp.body, "globalThis"));
    http_response_free (&resp);

    /*  /enums.js and /enum.js: a classic script for <script> and for
        clients that say nothing; JSON for fetch() and for Accept: json.
        The generated file wins over the enums.js file in the folder. */
    const char *uris [] = { "/enums.js", "/enum.js", "/enums.js?v=2" };
    for (size_t u = 0; u < 3; u++) {
        const struct { const char *accept, *dest; bool json; } cases [] = {
            { NULL, NULL, false },
            { "*/*", "script", false },
            { "*/*", NULL, false },
            { NULL, "script", false },
            { "text/javascript", "script", false },
            { NULL, "empty", true },
            { "*/*", "empty", true },
            { "*/*", "Empty ", true },
            { "application/json", NULL, true },
            { "application/json, text/plain, */*", "script", true },
            { "APPLICATION/JSON", NULL, true },
            { NULL, "emptyish", false },
        };
        for (size_t c = 0; c < sizeof cases / sizeof cases [0]; c++) {
            assert (s_req (site, "GET", uris [u], cases [c].accept, cases [c].dest, &resp) == 200);
            assert (strstr (resp.headers, "Vary: Sec-Fetch-Dest, Accept\r\n"));
            assert (!strstr (resp.body, "FILE ON DISK"));
            if (cases [c].json) {
                assert (streq (resp.content_type, "application/json"));
                assert (streq (resp.body, json));
            }
            else {
                assert (streq (resp.content_type, "text/javascript; charset=utf-8"));
                assert (strstr (resp.body, "var Requests = Object.freeze({\"LoginRequest\":0,"));
                assert (strstr (resp.body, "var Responses = Object.freeze({\"AuthorizationEvent\":0,"));
                assert (strstr (resp.body, requests) && strstr (resp.body, responses));
                assert (strstr (resp.body, "globalThis.Requests = Requests;"));
                assert (strstr (resp.body, "globalThis.Responses = Responses;"));
                assert (!strstr (resp.body, "export"));
            }
            http_response_free (&resp);
        }
    }
    /*  HEAD: same headers and length, flagged to send no body. */
    assert (s_req (site, "HEAD", "/enums.json", NULL, NULL, &resp) == 200);
    assert (resp.head_only && resp.body_len == strlen (json));
    http_response_free (&resp);
    /*  Percent-encoded names are the same resource. */
    s_get_expect (site, "/%65nums.json", json, "application/json");
}

static void
s_test_traversal (http_site_t *site, const char *outside_dir)
{
    /*  The secret sits one level above the root, so a single ".." that got
        through would find it (s_get asserts no body ever contains SECRET). */
    assert (s_get (site, "/../outside.txt") == 403);
    assert (s_get (site, "/%2e%2e/outside.txt") == 403);
    assert (s_get (site, "/%2E%2E/outside.txt") == 403);
    assert (s_get (site, "/%2E%2E%2Foutside.txt") == 403);
    assert (s_get (site, "/%2e%2e%2foutside.txt") == 403);
    assert (s_get (site, "/sub/../../outside.txt") == 403);
    assert (s_get (site, "/sub/%2e%2e/%2e%2e/outside.txt") == 403);
    assert (s_get (site, "/..%2foutside.txt") == 403);
    assert (s_get (site, "/.%2e/outside.txt") == 403);
    assert (s_get (site, "/%2e./outside.txt") == 403);
    assert (s_get (site, "/.%2e/") == 403);
    assert (s_get (site, "/..") == 403);
    assert (s_get (site, "/sub/..") == 403);
    assert (s_get (site, "/./index.html") == 403);
    assert (s_get (site, "/sub/%2e") == 403);
    assert (s_get (site, "/..\\outside.txt") == 403);
    assert (s_get (site, "/\\..\\outside.txt") == 403);
    assert (s_get (site, "/%5c..%5coutside.txt") == 403);
    assert (s_get (site, "/%2e%2e%5coutside.txt") == 403);
    assert (s_get (site, "/..%5coutside.txt") == 403);
    assert (s_get (site, "/sub\\index.html") == 403);
    /*  Decoded once only: "%252e%252e" is a folder literally named "%2e%2e". */
    s_get_expect (site, "/%252e%252e/x.txt", "literal folder\n", NULL);
    assert (s_get (site, "/%252e%252e/outside.txt") == 404);
    assert (s_get (site, "/%25252e%25252e/x.txt") == 404);
    /*  NUL, control bytes, bad escapes, overlong UTF-8 */
    assert (s_get (site, "/%00") == 400);
    assert (s_get (site, "/index.html%00.txt") == 400);
    assert (s_get (site, "/%00/../outside.txt") == 400);
    assert (s_get (site, "/%0d%0aSet-Cookie:x") == 400);
    assert (s_get (site, "/%c0%ae%c0%ae/outside.txt") == 400);
    assert (s_get (site, "/%c0%ae%c0%ae%c0%afoutside.txt") == 400);
    assert (s_get (site, "/%e0%80%ae%e0%80%ae/outside.txt") == 400);
    assert (s_get (site, "/%") == 400);
    assert (s_get (site, "/%2") == 400);
    assert (s_get (site, "/%%32%65") == 400);
    assert (s_get (site, "/%zz") == 400);
    /*  Not origin-form, absolute paths */
    assert (s_get (site, "") == 400);
    assert (s_get (site, "outside.txt") == 400);
    assert (s_get (site, "../outside.txt") == 400);
    assert (s_get (site, "http://localhost/index.html") == 400);
    assert (s_get (site, "*") == 400);
    assert (s_get (site, NULL) == 400);
    assert (s_get (site, "//etc/passwd") == 404);
    assert (s_get (site, "/etc/passwd") == 404);
    assert (s_get (site, "/%2fetc%2fpasswd") == 404);
    char uri [PATH_MAX + 16];
    snprintf (uri, sizeof uri, "/%s/outside.txt", outside_dir);
    assert (s_get (site, uri) == 404);
    snprintf (uri, sizeof uri, "/%s/outside.txt", outside_dir + 1);
    assert (s_get (site, uri) == 404);
    /*  Hidden files and folders, also through an inside symlink */
    assert (s_get (site, "/.hidden") == 404);
    assert (s_get (site, "/%2ehidden") == 404);
    assert (s_get (site, "/.hiddendir/file.txt") == 404);
    assert (s_get (site, "/sub/.hidden") == 404);
    assert (s_get (site, "/to-hidden") == 404);
    /*  Symlinks: out of the root is 403, inside is fine */
    assert (s_get (site, "/out.txt") == 403);
    assert (s_get (site, "/outdir/outside.txt") == 403);
    assert (s_get (site, "/outdir") == 403);
    assert (s_get (site, "/outdir/") == 404);    /* no index.html out there */
    assert (s_get (site, "/loop") == 403);
    assert (s_get (site, "/dangling") == 404);
    s_get_expect (site, "/in.html", "<p>sub 12345</p>\n", "text/html; charset=utf-8");
    /*  Only regular files */
    assert (s_get (site, "/fifo") == 404);
    assert (s_get (site, "/nodir") == 404);
    assert (s_get (site, "/nodir/") == 404);
    assert (s_get (site, "/style.css/") == 404);
    assert (s_get (site, "/missing.html") == 404);
}

static void
s_test_files (http_site_t *site)
{
    /*  index.html: placeholders replaced everywhere, no-cache */
    const char *index_want =
        "<p>chat.example 12345 ws</p><p>chat.example 12345 ws</p>\n";
    http_response_t resp;
    const char *index_uris [] = { "/", "/index.html", "//", "/?x=1", "/#top", "/%69ndex.html" };
    for (size_t i = 0; i < sizeof index_uris / sizeof index_uris [0]; i++) {
        assert (s_req (site, "GET", index_uris [i], NULL, NULL, &resp) == 200);
        assert (streq (resp.content_type, "text/html; charset=utf-8"));
        assert (resp.body_len == strlen (index_want) && streq (resp.body, index_want));
        assert (strstr (resp.headers, "Cache-Control: no-cache\r\n"));
        http_response_free (&resp);
    }
    /*  .js too; "%SERVER_" without a full name is left alone */
    s_get_expect (site, "/app.js", "connect(\"ws://chat.example:12345\"); // %SERVER_\n",
                  "text/javascript; charset=utf-8");
    s_get_expect (site, "/mod.mjs", "export const url = \"ws://chat.example:12345\";\n",
                  "text/javascript; charset=utf-8");
    /*  .css is served as is, and without no-cache */
    const char *css = "/* %SERVER_ADDRESS% %SERVER_PORT% %SERVER_PROTOCOL% */\n";
    assert (s_req (site, "GET", "/style.css", NULL, NULL, &resp) == 200);
    assert (streq (resp.content_type, "text/css; charset=utf-8"));
    assert (streq (resp.body, css));
    assert (!strstr (resp.headers, "Cache-Control"));
    http_response_free (&resp);
    s_get_expect (site, "/data.json", "{\"a\":\"%SERVER_PORT%\"}\n", "application/json");
    s_get_expect (site, "/blob.bin", "\x01\x02", "application/octet-stream");
    s_get_expect (site, "/img.png", "PNG", "image/png");
    s_get_expect (site, "/empty.txt", "", "text/plain; charset=utf-8");
    s_get_expect (site, "/a%20b.txt", "space\n", NULL);
    s_get_expect (site, "/caf%C3%A9.txt", "utf8\n", NULL);
    /*  A folder serves its index.html */
    const char *sub_want = "<p>sub 12345</p>\n";
    s_get_expect (site, "/sub", sub_want, "text/html; charset=utf-8");
    s_get_expect (site, "/sub/", sub_want, NULL);
    s_get_expect (site, "//sub//", sub_want, NULL);
    s_get_expect (site, "/sub/index.html", sub_want, NULL);
    /*  Too big for this server: 500 (it does not stream) */
    int level = qms_log_get_level ();
    qms_log_set_level (QMS_LOG_ERROR);     /* the warning is expected */
    assert (s_get (site, "/big.bin") == 500);
    qms_log_set_level (level);

    /*  HEAD: same status, type and length as GET, no body to send */
    assert (s_req (site, "HEAD", "/", NULL, NULL, &resp) == 200);
    assert (resp.head_only && resp.body_len == strlen (index_want));
    assert (streq (resp.content_type, "text/html; charset=utf-8"));
    http_response_free (&resp);
    assert (s_req (site, "HEAD", "/missing", NULL, NULL, &resp) == 404);
    assert (resp.head_only);
    http_response_free (&resp);

    /*  Methods */
    const char *methods [] = { "POST", "PUT", "DELETE", "OPTIONS", "PATCH",
                               "TRACE", "CONNECT", "get", "", NULL };
    for (size_t m = 0; m < sizeof methods / sizeof methods [0]; m++) {
        assert (s_req (site, methods [m], "/index.html", NULL, NULL, &resp) == 405);
        assert (strstr (resp.headers, "Allow: GET, HEAD\r\n"));
        assert (streq (resp.body, "405 Method Not Allowed\n"));
        assert (!resp.head_only);
        http_response_free (&resp);
    }
    /*  Error bodies */
    assert (s_req (site, "GET", "/missing", NULL, NULL, &resp) == 404);
    assert (streq (resp.body, "404 Not Found\n"));
    assert (streq (resp.content_type, "text/plain; charset=utf-8"));
    http_response_free (&resp);

    /*  Long URIs: handled without fixed buffers, or 414 past 8 KiB */
    size_t n = 6000;
    char *uri = malloc (HTTP_MAX_URI + 16);
    assert (uri);
    uri [0] = '/';
    memset (uri + 1, 'a', n);
    uri [n + 1] = 0;
    assert (s_get (site, uri) == 404);          /* name too long for the disk */
    for (size_t i = 2; i < n; i += 2)
        uri [i] = '/';
    assert (s_get (site, uri) == 404);          /* 3000 folders deep */
    snprintf (uri, HTTP_MAX_URI, "/index.html?");
    memset (uri + 12, 'q', n);
    uri [12 + n] = 0;
    s_get_expect (site, uri, index_want, NULL); /* long query */
    memset (uri, '%', HTTP_MAX_URI + 8);
    uri [0] = '/';
    uri [HTTP_MAX_URI + 8] = 0;
    assert (s_get (site, uri) == 414);
    free (uri);
}

static void
s_test_redirect (const char *root)
{
    http_options_t opts = { root, "chat.example", 12345, true, true, 8443, false, false };
    http_site_t *site = http_site_new (&opts);
    assert (site);
    const struct { const char *method, *uri, *location; } cases [] = {
        { "GET", "/", "https://chat.example:8443/" },
        { "GET", "/a/b?x=1&y=2", "https://chat.example:8443/a/b?x=1&y=2" },
        { "POST", "/index.html", "https://chat.example:8443/index.html" },
        { "HEAD", "/enums.js", "https://chat.example:8443/enums.js" },
        { "DELETE", "/../etc/passwd", "https://chat.example:8443/../etc/passwd" },
        { "GET", "/%2e%2e/x", "https://chat.example:8443/%2e%2e/x" },
        { "GET", "/a b\r\nX: y", "https://chat.example:8443/a%20b%0D%0AX:%20y" },
        { "GET", "*", "https://chat.example:8443/*" },
    };
    http_response_t resp;
    for (size_t c = 0; c < sizeof cases / sizeof cases [0]; c++) {
        assert (s_req (site, cases [c].method, cases [c].uri, NULL, NULL, &resp) == 301);
        char want [256];
        snprintf (want, sizeof want, "Location: %s\r\n", cases [c].location);
        assert (strstr (resp.headers, want));
        assert (resp.body && resp.body_len > 0);
        assert (resp.head_only == streq (cases [c].method, "HEAD"));
        http_response_free (&resp);
    }
    /*  A target too long for the Location header: 414, not a cut header */
    char *uri = malloc (2001);
    assert (uri);
    uri [0] = '/';
    memset (uri + 1, 'x', 1999);
    uri [2000] = 0;
    assert (s_req (site, "GET", uri, NULL, NULL, &resp) == 414);
    assert (!strstr (resp.headers, "Location"));
    http_response_free (&resp);
    free (uri);
    http_site_destroy (&site);

    /*  An IPv6 address gets brackets */
    opts.server_address = "::1";
    site = http_site_new (&opts);
    assert (site);
    assert (s_req (site, "GET", "/x", NULL, NULL, &resp) == 301);
    assert (strstr (resp.headers, "Location: https://[::1]:8443/x\r\n"));
    http_response_free (&resp);
    http_site_destroy (&site);
}

static void
s_test_policy (const char *root)
{
    http_options_t opts = { root, "chat.example", 12345, false, false, 8443, false, false };
    http_site_t *site = http_site_new (&opts);
    assert (site);
    const char *csp = http_site_csp (site);
    assert (streq (csp, "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                        "connect-src 'self' ws://chat.example:12345; form-action 'self'; "
                        "frame-ancestors 'none'; base-uri 'none'; require-trusted-types-for 'script'; "
                        "trusted-types 'none'"));
    http_response_t resp;
    assert (s_req (site, "GET", "/", NULL, NULL, &resp) == 200);
    assert (!strstr (resp.headers, "Strict-Transport-Security"));   /* plain HTTP */
    http_response_free (&resp);
    http_site_destroy (&site);

    /*  Over TLS: HSTS on every answer, wss in the policy; never on the redirecting site */
    opts.hsts = true;
    opts.chat_secure = true;
    site = http_site_new (&opts);
    assert (strstr (http_site_csp (site), "connect-src 'self' wss://chat.example:12345;"));
    for (int i = 0; i < 3; i++) {
        const char *uri = i == 0 ? "/" : i == 1 ? "/missing" : "/enums.js";
        s_req (site, "GET", uri, NULL, NULL, &resp);
        assert (strstr (resp.headers, "Strict-Transport-Security: max-age=31536000\r\n"));
        http_response_free (&resp);
    }
    http_site_destroy (&site);
    opts.redirect_to_https = true;
    site = http_site_new (&opts);
    assert (s_req (site, "GET", "/", NULL, NULL, &resp) == 301);
    assert (!strstr (resp.headers, "Strict-Transport-Security"));
    http_response_free (&resp);
    http_site_destroy (&site);
    opts.redirect_to_https = false;

    /*  --allow-inline-scripts: inline code may run, nothing else changes */
    opts.allow_inline = true;
    site = http_site_new (&opts);
    assert (streq (http_site_csp (site), "default-src 'none'; script-src 'self' 'unsafe-inline'; "
                   "style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                   "connect-src 'self' wss://chat.example:12345; form-action 'self'; "
                   "frame-ancestors 'none'; base-uri 'none'"));
    http_site_destroy (&site);
    opts.allow_inline = false;

    /*  An IPv6 address in brackets; anything that is not a host or an
        address stays out of the header (only 'self') */
    opts.server_address = "::1";
    site = http_site_new (&opts);
    assert (strstr (http_site_csp (site), "connect-src 'self' wss://[::1]:12345;"));
    http_site_destroy (&site);
    const char *bad [] = { "a b", "x;script-src *", "evil\r\nX: y", "h\xc3\xa9", "*", "" };
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++) {
        opts.server_address = bad [i];
        site = http_site_new (&opts);
        assert (strstr (http_site_csp (site), "connect-src 'self'; form-action"));
        assert (s_req (site, "GET", "/", NULL, NULL, &resp) == 200);
        assert (!strstr (resp.headers, "X: y") && !strstr (resp.headers, "script-src *"));
        http_response_free (&resp);
        http_site_destroy (&site);
    }
}

void
http_test (bool verbose)
{
    if (verbose)
        printf (" * http: ");
    s_test_building_blocks ();

    /*  A site: tmp/site is the root, tmp/outside.txt is a secret beside it. */
    char tmp [] = "/tmp/qms-http-test-XXXXXX";
    assert (mkdtemp (tmp));
    char root [64];
    snprintf (root, sizeof root, "%s/site", tmp);
    char outside [64];
    snprintf (outside, sizeof outside, "%s/outside.txt", tmp);
    s_write_file (tmp, "outside.txt", "SECRET\n");
    s_mkdir (tmp, "site");
    s_write_file (root, "index.html",
        "<p>%SERVER_ADDRESS% %SERVER_PORT% %SERVER_PROTOCOL%</p>"
        "<p>%SERVER_ADDRESS% %SERVER_PORT% %SERVER_PROTOCOL%</p>\n");
    s_write_file (root, "app.js",
        "connect(\"%SERVER_PROTOCOL%://%SERVER_ADDRESS%:%SERVER_PORT%\"); // %SERVER_\n");
    s_write_file (root, "mod.mjs",
        "export const url = \"%SERVER_PROTOCOL%://%SERVER_ADDRESS%:%SERVER_PORT%\";\n");
    s_write_file (root, "style.css", "/* %SERVER_ADDRESS% %SERVER_PORT% %SERVER_PROTOCOL% */\n");
    s_write_file (root, "data.json", "{\"a\":\"%SERVER_PORT%\"}\n");
    s_write_file (root, "blob.bin", "\x01\x02");
    s_write_file (root, "img.png", "PNG");
    s_write_file (root, "empty.txt", "");
    s_write_file (root, "a b.txt", "space\n");
    s_write_file (root, "caf\xc3\xa9.txt", "utf8\n");
    s_write_file (root, "enums.js", "FILE ON DISK\n");
    s_write_file (root, "enums.json", "FILE ON DISK\n");
    s_write_file (root, ".hidden", "SECRET hidden\n");
    s_mkdir (root, ".hiddendir");
    s_write_file (root, ".hiddendir/file.txt", "SECRET hidden\n");
    s_mkdir (root, "sub");
    s_write_file (root, "sub/index.html", "<p>sub %SERVER_PORT%</p>\n");
    s_write_file (root, "sub/.hidden", "SECRET hidden\n");
    s_mkdir (root, "nodir");
    s_mkdir (root, "%2e%2e");
    s_write_file (root, "%2e%2e/x.txt", "literal folder\n");
    s_symlink (outside, root, "out.txt");           /* absolute, leads out */
    s_symlink ("..", root, "outdir");               /* relative, leads out */
    s_symlink ("sub/index.html", root, "in.html");  /* stays inside */
    s_symlink (".hiddendir/file.txt", root, "to-hidden");
    s_symlink ("loop", root, "loop");
    s_symlink ("nowhere", root, "dangling");
    char path [PATH_MAX];
    snprintf (path, sizeof path, "%s/fifo", root);
    assert (mkfifo (path, 0600) == 0);
    snprintf (path, sizeof path, "%s/big.bin", root);
    int fd = open (path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert (fd >= 0);
    assert (ftruncate (fd, (off_t) HTTP_MAX_FILE + 1) == 0);   /* sparse */
    close (fd);

    /*  Sites that cannot be */
    http_options_t opts = { outside, "chat.example", 12345, false, false, 0, false, false };
    assert (http_site_new (&opts) == NULL);             /* a file */
    opts.html_dir = "/nonexistent/qms-html";
    assert (http_site_new (&opts) == NULL);
    assert (http_site_new (NULL) == NULL);

    /*  The root given with a trailing slash and a detour still works. */
    snprintf (path, sizeof path, "%s/site/../site/", tmp);
    opts.html_dir = path;
    http_site_t *site = http_site_new (&opts);
    assert (site);
    s_test_files (site);
    s_test_traversal (site, tmp);
    s_test_enums (site);
    http_site_destroy (&site);
    assert (site == NULL);
    http_site_destroy (&site);

    /*  wss when the chat port is secure */
    opts.chat_secure = true;
    opts.server_address = "10.0.0.1";
    opts.chat_port = 443;
    site = http_site_new (&opts);
    assert (site);
    s_get_expect (site, "/", "<p>10.0.0.1 443 wss</p><p>10.0.0.1 443 wss</p>\n", NULL);
    s_get_expect (site, "/app.js", "connect(\"wss://10.0.0.1:443\"); // %SERVER_\n", NULL);
    http_site_destroy (&site);

    s_test_redirect (root);
    s_test_policy (root);

    /*  The /proc/self/fd check that catches a symlink swapped in after
        realpath(): the same path passes, any other fails. */
    fd = open (outside, O_RDONLY);
    assert (fd >= 0);
    assert (s_fd_is (fd, outside));
    snprintf (path, sizeof path, "%s/site/index.html", tmp);
    assert (!s_fd_is (fd, path));
    assert (!s_fd_is (fd, tmp));
    close (fd);

    s_rm_tree (tmp);
    struct stat st;
    assert (lstat (tmp, &st) != 0);
    if (verbose)
        printf ("OK\n");
}
