/*  http.h - the web UI over HTTP: a pure function from request to response.

    The gateway's libwebsockets code hands each HTTP request to http_handle()
    and sends what it returns; everything that decides an answer lives here,
    where it can be tested without sockets.  Files come from one folder and
    nothing outside it is ever read: the URL path is percent-decoded once,
    split into segments, dot segments and NULs are refused, and the final
    real path (symlinks resolved) must still lie inside the folder.
*/
#ifndef HTTP_H_INCLUDED
#define HTTP_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    const char *html_dir;       /* the folder served; made absolute by http_site_new */
    const char *server_address; /* %SERVER_ADDRESS% */
    int chat_port;              /* %SERVER_PORT% */
    bool chat_secure;           /* %SERVER_PROTOCOL% is wss when true, else ws */
    /*  When set, every request is answered 301 to
        https://<server_address>:<https_port><same path and query>. */
    bool redirect_to_https;
    int https_port;
    /*  The site is served over TLS: answers carry Strict-Transport-Security
        (never the redirecting site's, which is plain HTTP). */
    bool hsts;
    /*  A web UI of its own with inline scripts and on...= handlers (the
        original QMessageServer page): the policy lets them run. */
    bool allow_inline;
} http_options_t;

typedef struct _http_site_t http_site_t;

/*  Resolves html_dir once (realpath).  NULL if the folder does not exist. */
http_site_t *http_site_new (const http_options_t *options);
void http_site_destroy (http_site_t **self_p);

typedef struct {
    int status;                 /* 200, 301, 400, 403, 404, 405, 414, 500 */
    char content_type [64];
    char *body;                 /* malloc'd (NULL for none); freed by http_response_free */
    size_t body_len;
    /*  Extra header lines, each "Name: value\r\n" (the security headers
        below, Location, Allow, Vary, Cache-Control, ...), NUL-terminated. */
    char headers [2048];
    bool head_only;             /* HEAD: send the headers (with the GET length) and no body;
                                   body and body_len are still filled in */
} http_response_t;

typedef struct {
    const char *method;         /* "GET", "HEAD", ... */
    const char *uri;            /* raw request target: path and query, as received */
    const char *accept;         /* Accept header or NULL */
    const char *sec_fetch_dest; /* Sec-Fetch-Dest header or NULL */
    const char *host;           /* Host header or NULL */
} http_request_t;

/*  Fill resp for req.  Always returns a complete response (errors are
    responses too, with a short text/plain body).  Every response carries
    the page's security headers: X-Content-Type-Options, a strict
    Content-Security-Policy (http_site_csp), X-Frame-Options,
    Cross-Origin-Opener-Policy, and with options.hsts
    Strict-Transport-Security. */
void http_handle (http_site_t *self, const http_request_t *req, http_response_t *resp);
void http_response_free (http_response_t *resp);

/*  Building blocks, exposed for tests and for fuzzing. */
/*  Map a raw URI path to a path relative to the site root ("index.html"
    for "/").  Returns 0, or 400 / 403 / 404 (out then holds nothing useful),
    or 414 when the decoded path does not fit in out_size. */
int http_path_resolve (const char *uri, char *out, size_t out_size);
const char *http_content_type (const char *path);
/*  Replace %SERVER_ADDRESS%, %SERVER_PORT% and %SERVER_PROTOCOL% in data;
    returns a malloc'd buffer and its length in *out_len (NULL if out of
    memory). */
char *http_substitute (const http_options_t *options, const char *data, size_t len,
                       size_t *out_len);
/*  The Content-Security-Policy this site sends: nothing but the site's own
    scripts, styles and images (and data: images), connections only to
    itself and to the chat address written into the UI, no framing, no
    <base>, no inline script or style, Trusted Types for every DOM sink. */
const char *http_site_csp (const http_site_t *self);

void http_test (bool verbose);

#ifdef __cplusplus
}
#endif

#endif
