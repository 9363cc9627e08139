"""HTTPS and WSS with a self-signed certificate made by the openssl tool:
HTTP redirects to HTTPS, the UI over HTTPS says wss, chat over wss:// and
/ws on the HTTPS port, -disableWss / -disableHttps, and a key that does not
match its certificate (exit 2).  Skipped when no openssl binary exists."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmslib import (BINARY, HOST, HTML_DIR, Client, QmsTestCase, connect, free_port, http_get,
                    http_raw, port_open, register, uniq, wait_userlist)

OPENSSL = shutil.which("openssl")


def make_cert(folder, name):
    cert = os.path.join(folder, name + "-cert.pem")
    key = os.path.join(folder, name + "-key.pem")
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-days", "2", "-keyout", key, "-out", cert, "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=30)
    return cert, key


@unittest.skipUnless(OPENSSL, "no openssl tool to make a certificate")
class Tls(QmsTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tempfile.mkdtemp(prefix="qms-tls-")
        cls.cert, cls.key = make_cert(cls.tmp, "a")
        cls.cert2, cls.key2 = make_cert(cls.tmp, "b")
        cls.html = os.path.join(cls.tmp, "html")
        shutil.copytree(HTML_DIR, cls.html, symlinks=True)
        with open(os.path.join(cls.html, "probe.js"), "w") as f:
            f.write("%SERVER_PROTOCOL%://%SERVER_ADDRESS%:%SERVER_PORT%")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, True)
        super().tearDownClass()

    def tls_server(self, *extra, wait_https=True, cert_flags=("-sslcert", "-sslprvkey"),
                   port_flags=("-cp", "-hp", "-hsp")):
        return self.start_server([cert_flags[0], self.cert, cert_flags[1], self.key] + list(extra),
                                 html_dir=self.html, wait_https=wait_https, port_flags=port_flags)

    def test_https_and_wss(self):
        srv = self.tls_server(port_flags=("-csp", "--httpPort", "--httpsPort"))
        # HTTP answers everything with a redirect to the same path on HTTPS
        for path in ("/", "/probe.js?x=1", "/enums.js"):
            with self.subTest(path=path):
                status, headers, _ = http_get(srv.http_port, path)
                self.assertEqual(status, 301)
                self.assertEqual(headers.get("location"), "https://localhost:%d%s" % (srv.https_port, path))
        # HTTPS serves the UI, which now says wss
        status, headers, body = http_get(srv.https_port, "/", tls=True)
        self.assertEqual(status, 200)
        status, _, body = http_get(srv.https_port, "/probe.js", tls=True)
        self.assertEqual((status, body.decode()), (200, "wss://localhost:%d" % srv.chat_port))
        # chat over wss on the chat port and over /ws on the HTTPS port
        a = connect(srv.chat_port, tls=True)
        self.addCleanup(a.abort)
        ra = register(a, uniq("tlsA"))
        self.assertEqual(ra.get("valid"), True, ra)
        b = connect(srv.https_port, path="/ws", tls=True)
        self.addCleanup(b.abort)
        rb = register(b, uniq("tlsB"))
        self.assertEqual(rb.get("valid"), True, rb)
        wait_userlist(a, lambda names: rb["username"] in names)
        b_id = [u["id"] for u in rb["users"] if u["name"] == rb["username"]][0]
        a.send_json({"action": 3, "token": ra["token"], "target": b_id, "message": "secure \U0001F512"})
        msg = b.wait_event(2, valid=True)
        self.assertEqual(msg["message"], "secure \U0001F512")
        # a plain ws:// handshake on the wss port does not get through
        with self.assertRaises(Exception):
            ws = connect(srv.chat_port, timeout=2)
            ws.abort()

    def test_sighup_reloads_the_certificate(self):
        # a renewal: the files are replaced and the server told with SIGHUP;
        # new handshakes get the new certificate, a connection keeps going
        folder = tempfile.mkdtemp(dir=self.tmp)
        cert, key = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
        shutil.copy(self.cert, cert)
        shutil.copy(self.key, key)
        # wait_https: the HTTPS port opens after the chat and HTTP ports (under
        # the sanitizers, late enough for the first handshake to be refused)
        srv = self.start_server(["-sslcert", cert, "-sslprvkey", key], html_dir=self.html, wait_https=True)

        def served_cert(port):
            import ssl
            return ssl.get_server_certificate((HOST, port))

        def pem_of(path):
            import ssl
            with open(path) as f:
                return ssl.DER_cert_to_PEM_cert(ssl.PEM_cert_to_DER_cert(f.read()))

        self.assertEqual(served_cert(srv.https_port), pem_of(self.cert))
        a = connect(srv.chat_port, tls=True)
        self.addCleanup(a.abort)
        ra = register(a, uniq("renew"))
        self.assertEqual(ra.get("valid"), True, ra)
        # a bad pair is refused and the old certificate stays
        shutil.copy(self.cert2, cert)
        srv.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        self.assertEqual(served_cert(srv.https_port), pem_of(self.cert))
        self.assertIn("result=refused", srv.log_text())
        # the whole new pair is taken
        shutil.copy(self.key2, key)
        srv.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while served_cert(srv.https_port) != pem_of(self.cert2):
            self.assertLess(time.monotonic(), deadline, "the new certificate was not served")
            time.sleep(0.1)
        self.assertEqual(served_cert(srv.chat_port), pem_of(self.cert2))
        # the wss connection made before the reload still works
        a.send_json({"action": 4, "token": ra["token"]})
        self.assertEqual(a.wait_event(0).get("valid"), True)

    def test_disable_wss(self):
        srv = self.tls_server("--disableWss", cert_flags=("--sslCertificate", "--sslPrivateKey"),
                              port_flags=("--chatServerPort", "--httpServerPort", "--httpsServerPort"))
        c = Client(srv.chat_port, uniq("plain"), test=self)     # plain ws on the chat port
        self.assertTrue(c.token)
        status, _, body = http_get(srv.https_port, "/probe.js", tls=True)
        self.assertEqual((status, body.decode()), (200, "ws://localhost:%d" % srv.chat_port))

    def test_disable_https(self):
        srv = self.tls_server("-disableHttps", wait_https=False,
                              cert_flags=("-sslCertificate", "-sslPrivateKey"))
        status, _, body = http_get(srv.http_port, "/probe.js")
        self.assertEqual((status, body.decode()), (200, "wss://localhost:%d" % srv.chat_port))
        a = connect(srv.chat_port, tls=True)
        self.addCleanup(a.abort)
        self.assertEqual(register(a, uniq("wssonly")).get("valid"), True)
        self.assertFalse(port_open(srv.https_port))

    def test_key_that_does_not_match_exits_2(self):
        cp, hp, hsp = free_port(), free_port(), free_port()
        res = subprocess.run([BINARY, "--bind", HOST, "-cp", str(cp), "-hp", str(hp), "-hsp", str(hsp),
                              "-sslcert", self.cert, "-sslprvkey", self.key2,
                              "--data-dir", self.tmp, "--html-dir", HTML_DIR],
                             capture_output=True, timeout=15)
        self.assertEqual(res.returncode, 2, res.stderr.decode(errors="replace"))
        self.assertTrue(res.stderr.strip())
        self.assertFalse(port_open(cp) or port_open(hp) or port_open(hsp))

    def test_garbage_certificate_exits_2(self):
        bad = os.path.join(self.tmp, "bad.pem")
        with open(bad, "w") as f:
            f.write("not a certificate\n")
        res = subprocess.run([BINARY, "--bind", HOST, "-cp", str(free_port()), "-hp", str(free_port()),
                              "-hsp", str(free_port()), "-sslcert", bad, "-sslprvkey", bad,
                              "--data-dir", self.tmp, "--html-dir", HTML_DIR],
                             capture_output=True, timeout=15)
        self.assertEqual(res.returncode, 2, res.stderr.decode(errors="replace"))
        self.assertTrue(res.stderr.strip())

    def test_tls_junk_does_not_hurt(self):
        srv = self.tls_server()
        for port in (srv.chat_port, srv.https_port):
            http_raw(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", timeout=2)   # plain text to TLS
            http_raw(port, b"\x16\x03\x01\x02\x00" + os.urandom(300), timeout=2)
        status, _, _ = http_get(srv.https_port, "/", tls=True)
        self.assertEqual(status, 200)


if __name__ == "__main__":
    unittest.main(verbosity=2)
