/*  fuzz_http_path.c - libFuzzer harness for URL paths and the HTTP answers
    built on them (gateway/http.c).

    Input: one flag byte, one size byte, then the request target.
    1. http_path_resolve() on the target (a NUL-terminated copy), into a
       buffer of exactly the size http_handle() uses and into a small one
       (ASan sees any write past either).  A path it accepts has no "." or
       ".." segment, no leading '/', no empty segment, no backslash, no
       control byte, is UTF-8, and came from a target whose decoded path had
       no NUL.  It must also agree with a small reference resolver written
       here from the rules in http.c's header comment, and resolving it again
       gives itself.
    2. http_handle() on a small site made once in a temporary folder, next
       to secrets that must never be served: a file outside the folder
       (reached by symlinks out, "..", a sibling folder whose name starts
       with the site's) and hidden files inside it.  Every answer is
       complete with the security headers, its header lines cannot be
       split, a 200 body is one of the few bodies the site really has, and
       no body ever holds a secret.
*/
#include "fuzz_common.h"
#include "http.h"
#include "qms_log.h"
#include "qms_util.h"

#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#define SECRET_OUTSIDE  "QMS-FUZZ-SECRET-OUTSIDE-5b0e8d71"
#define SECRET_HIDDEN   "QMS-FUZZ-SECRET-HIDDEN-a93f02c6"
#define SERVER_ADDRESS  "fuzz.example"
#define HTTPS_PORT      8443

static char s_base [PATH_MAX];          /* temp folder: site/, secret.txt, site-evil/ */
/*  What set-up made, in order, so it can be removed in reverse. */
#define MAX_MADE 64
static char *s_made [MAX_MADE];
static size_t s_made_count;
static http_site_t *s_site;
static http_site_t *s_redirect_site;

/*  The bodies a 200 may carry: every file and generated form the site has. */
#define MAX_BODIES 32
static struct {
    char *data;
    size_t len;
} s_bodies [MAX_BODIES];
static size_t s_body_count;

/* ------------------------------------------------------------------------ */
/*  The site */

static void
made (const char *path)
{
    FUZZ_CHECK (s_made_count < MAX_MADE);
    s_made [s_made_count] = strdup (path);
    FUZZ_CHECK (s_made [s_made_count]);
    s_made_count++;
}

static void
write_file (const char *rel, const char *text)
{
    char path [PATH_MAX];
    snprintf (path, sizeof path, "%s/%s", s_base, rel);
    made (path);
    FILE *f = fopen (path, "wb");
    FUZZ_CHECK (f);
    FUZZ_CHECK (fwrite (text, 1, strlen (text), f) == strlen (text));
    FUZZ_CHECK (fclose (f) == 0);
}

static void
make_dir (const char *rel)
{
    char path [PATH_MAX];
    snprintf (path, sizeof path, "%s/%s", s_base, rel);
    FUZZ_CHECK (mkdir (path, 0700) == 0);
    made (path);
}

static void
make_link (const char *target, const char *rel)
{
    char path [PATH_MAX];
    snprintf (path, sizeof path, "%s/%s", s_base, rel);
    FUZZ_CHECK (symlink (target, path) == 0);
    made (path);
}

static void
remove_site (void)
{
    http_site_destroy (&s_site);
    http_site_destroy (&s_redirect_site);
    for (size_t i = 0; i < s_body_count; i++)
        free (s_bodies [i].data);
    s_body_count = 0;
    while (s_made_count > 0) {
        s_made_count--;
        remove (s_made [s_made_count]);
        free (s_made [s_made_count]);
    }
    if (s_base [0])
        rmdir (s_base);
    s_base [0] = 0;
}

static void
remember_body (const char *method, const char *uri, const char *accept, const char *dest)
{
    http_request_t req = { method, uri, accept, dest, "localhost" };
    http_response_t resp;
    http_handle (s_site, &req, &resp);
    if (resp.status != 200) {
        fprintf (stderr, "fuzz_http_path: set-up request %s gave %d\n", uri, resp.status);
        abort ();
    }
    FUZZ_CHECK (s_body_count < MAX_BODIES);
    s_bodies [s_body_count].data = resp.body;
    s_bodies [s_body_count].len = resp.body_len;
    s_body_count++;
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
    (void) argc;
    (void) argv;
    qms_log_set_level (QMS_LOG_ERROR);
    const char *tmp = getenv ("TMPDIR");
    snprintf (s_base, sizeof s_base, "%s/qms-fuzz-http-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    FUZZ_CHECK (mkdtemp (s_base));
    atexit (remove_site);

    write_file ("secret.txt", SECRET_OUTSIDE "\n");
    make_dir ("site-evil");                 /* shares the site's name as a prefix */
    write_file ("site-evil/secret.txt", SECRET_OUTSIDE "\n");
    make_dir ("site");
    write_file ("site/index.html", "<html>%SERVER_PROTOCOL%://%SERVER_ADDRESS%:%SERVER_PORT%</html>\n");
    write_file ("site/app.js", "const url = '%SERVER_PROTOCOL%://%SERVER_ADDRESS%:%SERVER_PORT%/';\n");
    write_file ("site/style.css", "body { margin: 0 }\n");
    write_file ("site/caf\xc3\xa9 menu.txt", "menu\n");
    make_dir ("site/sub");
    write_file ("site/sub/index.html", "<p>sub %SERVER_PORT%</p>\n");
    write_file ("site/sub/data.json", "{\"ok\":true}\n");
    make_dir ("site/empty");                /* a folder without index.html */
    write_file ("site/.htpasswd", SECRET_HIDDEN "\n");
    make_dir ("site/.git");
    write_file ("site/.git/config", SECRET_HIDDEN "\n");
    make_dir ("site/sub/.private");
    write_file ("site/sub/.private/key", SECRET_HIDDEN "\n");
    make_link ("../secret.txt", "site/link_out");
    make_link ("..", "site/dir_out");
    make_link ("../site-evil", "site/evil");
    make_link (".git", "site/git_link");
    make_link ("sub/.private/key", "site/key_link");
    char absolute [PATH_MAX];
    snprintf (absolute, sizeof absolute, "%s/secret.txt", s_base);
    make_link (absolute, "site/abs_out");
    make_link ("/etc", "site/etc");
    make_link ("index.html", "site/link_in");
    make_link ("sub", "site/sub_link");

    char root [PATH_MAX];
    snprintf (root, sizeof root, "%s/site", s_base);
    http_options_t options = { .html_dir = root, .server_address = SERVER_ADDRESS,
                               .chat_port = 12345, .chat_secure = false,
                               .https_port = HTTPS_PORT };
    s_site = http_site_new (&options);
    options.redirect_to_https = true;
    s_redirect_site = http_site_new (&options);
    FUZZ_CHECK (s_site && s_redirect_site);

    remember_body ("GET", "/", NULL, NULL);
    remember_body ("GET", "/app.js", NULL, NULL);
    remember_body ("GET", "/style.css", NULL, NULL);
    remember_body ("GET", "/caf%C3%A9%20menu.txt", NULL, NULL);
    remember_body ("GET", "/sub/", NULL, NULL);
    remember_body ("GET", "/sub/data.json", NULL, NULL);
    remember_body ("GET", "/link_in", NULL, NULL);      /* unsubstituted: no extension */
    remember_body ("GET", "/enums.js", NULL, NULL);
    remember_body ("GET", "/enums.js", "application/json", NULL);
    remember_body ("GET", "/enums.mjs", NULL, NULL);
    remember_body ("GET", "/enums.json", NULL, NULL);
    return 0;
}

/* ------------------------------------------------------------------------ */
/*  The reference resolver: the rules of http.c's header comment, written
    independently.  Returns 0 with the path in out (big enough), or a status. */

static int
hexval (uint8_t c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/*  Decoded path part of uri into dec; returns its length, or -400.  A NUL
    decoded from %00 is kept in dec (and refused): *had_nul says so. */
static long
ref_decode (const char *uri, char *dec, bool *had_nul)
{
    size_t n = 0;
    *had_nul = false;
    for (size_t i = 0; uri [i] && uri [i] != '?' && uri [i] != '#'; i++) {
        uint8_t c = (uint8_t) uri [i];
        if (c == '%') {
            int hi = hexval ((uint8_t) uri [i + 1]);
            int lo = hi < 0 ? -1 : hexval ((uint8_t) uri [i + 2]);
            if (hi < 0 || lo < 0)
                return -400;
            c = (uint8_t) (hi * 16 + lo);
            i += 2;
        }
        if (c == 0)
            *had_nul = true;
        if (c < 0x20 || c == 0x7f)
            return -400;
        dec [n++] = (char) c;
    }
    return (long) n;
}

static int
ref_resolve (const char *uri, char *out)
{
    if (uri [0] != '/')
        return 400;
    char *dec = malloc (strlen (uri) + 1);
    FUZZ_CHECK (dec);
    bool had_nul;
    long n = ref_decode (uri, dec, &had_nul);
    int rc = 0;
    if (n < 0)
        rc = 400;
    else
    if (!qms_utf8_valid (dec, (size_t) n))
        rc = 400;
    else
    if (memchr (dec, '\\', (size_t) n))
        rc = 403;
    size_t w = 0;
    for (long i = 0; rc == 0 && i < n; ) {
        long start = i;
        while (i < n && dec [i] != '/')
            i++;
        long seg_len = i - start;
        i++;
        if (seg_len == 0)
            continue;
        if ((seg_len == 1 && dec [start] == '.')
        ||  (seg_len == 2 && dec [start] == '.' && dec [start + 1] == '.'))
            rc = 403;
        else
        if (dec [start] == '.')
            rc = 404;
        else {
            if (w)
                out [w++] = '/';
            memcpy (out + w, dec + start, (size_t) seg_len);
            w += (size_t) seg_len;
        }
    }
    if (rc == 0 && (w == 0 || dec [n - 1] == '/')) {
        const char *index = w ? "/index.html" : "index.html";
        memcpy (out + w, index, strlen (index));
        w += strlen (index);
    }
    out [w] = 0;
    FUZZ_CHECK (rc != 0 || !had_nul);
    free (dec);
    return rc;
}

/* ------------------------------------------------------------------------ */
/*  1. Path resolution */

static void
check_resolved_path (const char *path, size_t size)
{
    size_t len = strlen (path);
    FUZZ_CHECK (len > 0 && len < size);
    FUZZ_CHECK (path [0] != '/');
    FUZZ_CHECK (!strchr (path, '\\'));
    FUZZ_CHECK (qms_utf8_valid (path, len));
    for (size_t i = 0; i < len; i++)
        FUZZ_CHECK ((uint8_t) path [i] >= 0x20 && (uint8_t) path [i] != 0x7f);
    /*  Segment by segment: none empty, none "." or "..", none hidden. */
    const char *seg = path;
    while (true) {
        const char *slash = strchr (seg, '/');
        size_t seg_len = slash ? (size_t) (slash - seg) : strlen (seg);
        FUZZ_CHECK (seg_len > 0);
        FUZZ_CHECK (!(seg_len == 2 && seg [0] == '.' && seg [1] == '.'));
        FUZZ_CHECK (!(seg_len == 1 && seg [0] == '.'));
        FUZZ_CHECK (seg [0] != '.');
        if (!slash)
            break;
        seg = slash + 1;
    }
}

static void
fuzz_resolve (const char *uri, size_t small_size)
{
    size_t uri_len = strlen (uri);
    /*  Exactly what http_handle() allocates. */
    size_t size = uri_len + 2 * sizeof "/index.html";
    char *out = malloc (size);
    FUZZ_CHECK (out);
    int rc = http_path_resolve (uri, out, size);
    FUZZ_CHECK (rc == 0 || rc == 400 || rc == 403 || rc == 404);
    if (uri [0] != '/')
        FUZZ_CHECK (rc == 400);

    char *ref = malloc (size);
    FUZZ_CHECK (ref);
    int ref_rc = ref_resolve (uri, ref);
    if (rc != ref_rc || (rc == 0 && strcmp (out, ref) != 0)) {
        fprintf (stderr, "\nhttp_path_resolve: rc %d path '%s', reference: rc %d path '%s'\n",
                 rc, rc == 0 ? out : "", ref_rc, ref_rc == 0 ? ref : "");
        FUZZ_CHECK (!"http_path_resolve disagrees with the reference");
    }
    free (ref);

    if (rc == 0) {
        check_resolved_path (out, size);
        /*  Resolving the result again gives itself, when nothing in it
            would be read differently the second time. */
        if (!strpbrk (out, "%?#")) {
            size_t again_size = strlen (out) + 2 + 2 * sizeof "/index.html";
            char *again_uri = malloc (again_size);
            char *again = malloc (again_size);
            FUZZ_CHECK (again_uri && again);
            snprintf (again_uri, again_size, "/%s", out);
            FUZZ_CHECK (http_path_resolve (again_uri, again, again_size) == 0);
            FUZZ_CHECK (strcmp (again, out) == 0);
            free (again_uri);
            free (again);
        }
    }

    /*  A small buffer: the same answer, or 414 when it does not fit. */
    char *small = malloc (small_size);
    FUZZ_CHECK (small);
    int small_rc = http_path_resolve (uri, small, small_size);
    if (small_rc == 414)
        FUZZ_CHECK (uri [0] == '/');
    else {
        FUZZ_CHECK (small_rc == rc);
        if (rc == 0)
            FUZZ_CHECK (strlen (small) < small_size && strcmp (small, out) == 0);
    }
    free (small);
    free (out);
}

/* ------------------------------------------------------------------------ */
/*  2. Whole answers */

static void
check_headers (const http_response_t *resp)
{
    FUZZ_CHECK (memchr (resp->headers, 0, sizeof resp->headers));
    FUZZ_CHECK (strstr (resp->headers, "X-Content-Type-Options: nosniff\r\n"));
    /*  The page's security headers are on every answer, the redirect too.
        (The policy is fixed per site; the request can reach no part of it.) */
    const char *csp = strstr (resp->headers, "Content-Security-Policy: ");
    FUZZ_CHECK (csp && strncmp (csp + strlen ("Content-Security-Policy: "), http_site_csp (s_site),
                                strlen (http_site_csp (s_site))) == 0);
    FUZZ_CHECK (strstr (csp, "\r\n") == csp + strlen ("Content-Security-Policy: ") + strlen (http_site_csp (s_site)));
    FUZZ_CHECK (strstr (http_site_csp (s_site), "frame-ancestors 'none'") && !strstr (http_site_csp (s_site), "unsafe-"));
    FUZZ_CHECK (strstr (resp->headers, "X-Frame-Options: DENY\r\n"));
    FUZZ_CHECK (strstr (resp->headers, "Cross-Origin-Opener-Policy: same-origin\r\n"));
    /*  Every line is "Name: value\r\n" with nothing that could split it. */
    const char *line = resp->headers;
    while (*line) {
        const char *crlf = strstr (line, "\r\n");
        FUZZ_CHECK (crlf);
        const char *colon = memchr (line, ':', (size_t) (crlf - line));
        FUZZ_CHECK (colon && colon > line && colon [1] == ' ');
        for (const char *p = line; p < crlf; p++)
            FUZZ_CHECK ((uint8_t) *p >= 0x20 && (uint8_t) *p != 0x7f);
        line = crlf + 2;
    }
}

static void
fuzz_handle (uint8_t flags, const char *uri)
{
    static const char *methods [] = { "GET", "HEAD", "POST", "get" };
    const char *method = methods [flags & 3];
    bool redirect = flags & 4;
    http_request_t req = {
        .method = method,
        .uri = uri,
        .accept = (flags & 16) ? "text/html, application/json;q=0.9" : NULL,
        .sec_fetch_dest = (flags & 32) ? " empty " : NULL,
        .host = (flags & 64) ? NULL : "localhost:8080",
    };
    http_response_t resp;
    http_handle (redirect ? s_redirect_site : s_site, &req, &resp);

    int status = resp.status;
    FUZZ_CHECK (status == 200 || status == 301 || status == 400 || status == 403
             || status == 404 || status == 405 || status == 414);
    FUZZ_CHECK (resp.content_type [0] && memchr (resp.content_type, 0, sizeof resp.content_type));
    FUZZ_CHECK (resp.body_len == 0 || resp.body);
    FUZZ_CHECK (resp.head_only == (strcmp (method, "HEAD") == 0));
    check_headers (&resp);

    FUZZ_CHECK (!fuzz_contains (resp.body, resp.body_len, SECRET_OUTSIDE, strlen (SECRET_OUTSIDE)));
    FUZZ_CHECK (!fuzz_contains (resp.body, resp.body_len, SECRET_HIDDEN, strlen (SECRET_HIDDEN)));

    if (redirect)
        FUZZ_CHECK (status == 301 || status == 414);
    else
        FUZZ_CHECK (status != 301);
    if (status == 301) {
        const char *want = "Location: https://" SERVER_ADDRESS ":8443/";
        FUZZ_CHECK (strstr (resp.headers, want));
    }
    if (status == 405)
        FUZZ_CHECK (strstr (resp.headers, "Allow: GET, HEAD\r\n"));
    if (status == 200) {
        bool known = false;
        for (size_t i = 0; i < s_body_count && !known; i++)
            known = s_bodies [i].len == resp.body_len
                 && memcmp (s_bodies [i].data, resp.body, resp.body_len) == 0;
        if (!known)
            fprintf (stderr, "\nunexpected 200 body for '%s': %.*s\n", uri,
                     (int) (resp.body_len > 200 ? 200 : resp.body_len), resp.body);
        FUZZ_CHECK (known);
    }
    http_response_free (&resp);
    FUZZ_CHECK (resp.body == NULL);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    fuzz_input_t in = { data, size, 0 };
    uint8_t flags = fuzz_u8 (&in);
    size_t small_size = (size_t) fuzz_u8 (&in) % 48 + 1;
    size_t len;
    const uint8_t *rest = fuzz_rest (&in, &len);
    /*  Targets start with '/' when flag 8 says so: most of the interesting
        ones do, and the fuzzer need not find that out each time. */
    bool slash = flags & 8;
    char *uri = malloc (len + 2);
    FUZZ_CHECK (uri);
    size_t n = 0;
    if (slash)
        uri [n++] = '/';
    memcpy (uri + n, rest, len);
    uri [n + len] = 0;

    fuzz_resolve (uri, small_size);
    fuzz_handle (flags, uri);
    free (uri);
    return 0;
}
