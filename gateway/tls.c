/*  tls.c - a self-signed development certificate (see tls.h). */
#include "tls.h"
#include "qms_log.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

static bool
is_ip_literal (const char *name)
{
    return strspn (name, "0123456789.") == strlen (name) || strchr (name, ':');
}

static int
add_san (X509 *cert, const char *server_name)
{
    char san [512] = "DNS:localhost,IP:127.0.0.1,IP:::1";
    if (server_name && *server_name && strcmp (server_name, "localhost") != 0
    &&  strcmp (server_name, "127.0.0.1") != 0 && strlen (server_name) < 256
    &&  !strpbrk (server_name, ", \t\r\n"))
        snprintf (san + strlen (san), sizeof san - strlen (san), ",%s:%s",
                  is_ip_literal (server_name) ? "IP" : "DNS", server_name);
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb (&ctx);
    X509V3_set_ctx (&ctx, cert, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid (NULL, &ctx, NID_subject_alt_name, san);
    if (!ext)
        return -1;
    int rc = X509_add_ext (cert, ext, -1) ? 0 : -1;
    X509_EXTENSION_free (ext);
    return rc;
}

static int
write_pem (const char *path, int mode, EVP_PKEY *key, X509 *cert)
{
    int fd = open (path, O_WRONLY | O_CREAT | O_EXCL, mode);
    if (fd < 0)
        return -1;
    FILE *file = fdopen (fd, "w");
    if (!file) {
        close (fd);
        return -1;
    }
    int ok = key ? PEM_write_PrivateKey (file, key, NULL, NULL, 0, NULL, NULL)
                 : PEM_write_X509 (file, cert);
    if (fclose (file) != 0)
        ok = 0;
    return ok ? 0 : -1;
}

static int
generate (const char *cert_path, const char *key_path, const char *server_name)
{
    int rc = -1;
    X509 *cert = NULL;
    EVP_PKEY *key = EVP_EC_gen ("P-256");
    if (!key)
        goto done;
    cert = X509_new ();
    if (!cert)
        goto done;
    uint8_t serial [16];
    FILE *urandom = fopen ("/dev/urandom", "rb");
    if (!urandom || fread (serial, 1, sizeof serial, urandom) != sizeof serial) {
        if (urandom)
            fclose (urandom);
        goto done;
    }
    fclose (urandom);
    serial [0] &= 0x7f;
    BIGNUM *bn = BN_bin2bn (serial, sizeof serial, NULL);
    if (!bn || !BN_to_ASN1_INTEGER (bn, X509_get_serialNumber (cert))) {
        BN_free (bn);
        goto done;
    }
    BN_free (bn);
    X509_set_version (cert, 2);
    X509_gmtime_adj (X509_getm_notBefore (cert), -3600);
    X509_gmtime_adj (X509_getm_notAfter (cert), 825L * 24 * 3600);
    X509_NAME *name = X509_get_subject_name (cert);
    X509_NAME_add_entry_by_txt (name, "CN", MBSTRING_UTF8, (const unsigned char *) "localhost", -1, -1, 0);
    X509_NAME_add_entry_by_txt (name, "O", MBSTRING_UTF8,
                                (const unsigned char *) "QMessageServer development", -1, -1, 0);
    X509_set_issuer_name (cert, name);
    if (!X509_set_pubkey (cert, key) || add_san (cert, server_name)
    ||  !X509_sign (cert, key, EVP_sha256 ()))
        goto done;
    /*  The key first, private from birth; the certificate last, so that a
        crash in between leaves no certificate without its key. */
    if (write_pem (key_path, 0600, key, NULL))
        goto done;
    if (write_pem (cert_path, 0644, NULL, cert)) {
        unlink (key_path);
        goto done;
    }
    rc = 0;
done:
    X509_free (cert);
    EVP_PKEY_free (key);
    return rc;
}

int
tls_self_signed_ensure (const char *dir, const char *server_name,
                        char *cert_path, char *key_path, size_t path_size,
                        char *err, size_t err_size)
{
    if ((size_t) snprintf (cert_path, path_size, "%s/selfsigned-cert.pem", dir) >= path_size
    ||  (size_t) snprintf (key_path, path_size, "%s/selfsigned-key.pem", dir) >= path_size) {
        snprintf (err, err_size, "data directory path too long");
        return -1;
    }
    struct stat st;
    bool have_cert = stat (cert_path, &st) == 0;
    bool have_key = stat (key_path, &st) == 0;
    if (have_cert && have_key)
        return 0;
    if (have_cert != have_key) {
        snprintf (err, err_size, "found only one of %s and %s: remove it to make a new pair",
                  cert_path, key_path);
        return -1;
    }
    if (generate (cert_path, key_path, server_name)) {
        snprintf (err, err_size, "cannot create a self-signed certificate in %s: %s", dir,
                  errno ? strerror (errno) : "OpenSSL error");
        return -1;
    }
    qms_info ("main", "event=self_signed_created cert=\"%s\"", cert_path);
    return 0;
}

void
tls_test (bool verbose)
{
    if (verbose)
        printf (" * tls: ");
    char dir [] = "/tmp/qms-tls-test-XXXXXX";
    assert (mkdtemp (dir));
    char cert [512], key [512], err [256];
    assert (tls_self_signed_ensure (dir, "chat.example", cert, key, sizeof cert, err, sizeof err) == 0);
    struct stat st;
    assert (stat (key, &st) == 0 && (st.st_mode & 0777) == 0600);
    assert (stat (cert, &st) == 0);
    time_t made = st.st_mtime;

    /*  The pair loads, matches, and names what we asked for. */
    FILE *file = fopen (cert, "r");
    X509 *x = PEM_read_X509 (file, NULL, NULL, NULL);
    fclose (file);
    file = fopen (key, "r");
    EVP_PKEY *k = PEM_read_PrivateKey (file, NULL, NULL, NULL);
    fclose (file);
    assert (x && k && X509_check_private_key (x, k) == 1);
    assert (X509_check_host (x, "localhost", 0, 0, NULL) == 1);
    assert (X509_check_host (x, "chat.example", 0, 0, NULL) == 1);
    assert (X509_check_ip_asc (x, "127.0.0.1", 0) == 1);
    assert (X509_check_host (x, "other.example", 0, 0, NULL) != 1);
    X509_free (x);
    EVP_PKEY_free (k);

    /*  A second call reuses the pair. */
    assert (tls_self_signed_ensure (dir, "chat.example", cert, key, sizeof cert, err, sizeof err) == 0);
    assert (stat (cert, &st) == 0 && st.st_mtime == made);
    /*  Half a pair is an error, not a silent replacement. */
    unlink (key);
    assert (tls_self_signed_ensure (dir, "x", cert, key, sizeof cert, err, sizeof err) == -1);
    assert (strstr (err, "only one"));
    unlink (cert);
    assert (rmdir (dir) == 0);
    if (verbose)
        printf ("OK\n");
}
