/*  tls.h - a self-signed certificate for development (--self-signed).

    Made once in the data directory and reused afterwards, so a browser
    that was told to trust it keeps trusting it across restarts.
*/
#ifndef TLS_H_INCLUDED
#define TLS_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/*  Ensure <dir>/selfsigned-cert.pem and <dir>/selfsigned-key.pem exist
    (an ECDSA P-256 key, mode 0600, and a certificate for localhost,
    127.0.0.1, ::1 and server_name, valid for 825 days).  Fills cert_path
    and key_path (each of size path_size).  Returns 0, or -1 with a reason
    in err. */
int tls_self_signed_ensure (const char *dir, const char *server_name,
                            char *cert_path, char *key_path, size_t path_size,
                            char *err, size_t err_size);

void tls_test (bool verbose);

#ifdef __cplusplus
}
#endif

#endif
