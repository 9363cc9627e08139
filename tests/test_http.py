"""The HTTP side: the web UI files with their placeholders, the published
enumerations, methods, HEAD, and paths that try to leave the html folder."""

import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmslib import (HOST, HTML_DIR, QmsTestCase, REQUESTS, RESPONSES, SOURCE_DIR, SharedServerTestCase,
                    http_get, http_raw)

GENERATED = {"enums.js", "enum.js", "enums.mjs", "enums.json"}
SUBSTITUTED = (".html", ".js", ".mjs")
PASSWD_MARK = b"root:x:0:0"
PROBE = "addr=%SERVER_ADDRESS%;port=%SERVER_PORT%;proto=%SERVER_PROTOCOL%;again=%SERVER_PORT%"


def substitute(data, address, port, protocol="ws"):
    return (data.replace(b"%SERVER_ADDRESS%", address.encode())
                .replace(b"%SERVER_PORT%", str(port).encode())
                .replace(b"%SERVER_PROTOCOL%", protocol.encode()))


def html_files(root):
    """Every served file under root, as URL paths relative to it."""
    out = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for f in files:
            if f.startswith("."):
                continue
            rel = os.path.relpath(os.path.join(folder, f), root).replace(os.sep, "/")
            if rel not in GENERATED:
                out.append(rel)
    return sorted(out)


def make_probe_html(parent):
    """A copy of the html folder plus probe files that hold every placeholder."""
    dst = os.path.join(parent, "html-copy")
    if os.path.isdir(HTML_DIR):
        shutil.copytree(HTML_DIR, dst, symlinks=True)
    else:
        os.makedirs(dst)
    for name in ("probe.js", "probe.mjs", "probe.html", "probe.txt", "probe.css"):
        with open(os.path.join(dst, name), "w") as f:
            f.write(PROBE)
    if not os.path.exists(os.path.join(dst, "index.html")):
        with open(os.path.join(dst, "index.html"), "w") as f:
            f.write("<!doctype html><title>t</title>%SERVER_PROTOCOL%://%SERVER_ADDRESS%:%SERVER_PORT%")
    return dst


def content_type(headers):
    return (headers.get("content-type") or "").split(";")[0].strip().lower()


def enum_pairs(text):
    """name -> number pairs written as name: n or "name": n in JS/JSON."""
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"[\"']?([A-Za-z]+(?:Request|Event))[\"']?\s*:\s*(\d+)", text)}


def check_enum_table(test, got, known):
    """got holds every known name with its number; anything else was
    appended after them (PROTOCOL.md: new values are only ever appended)."""
    for name, value in known.items():
        test.assertEqual(got.get(name), value, "%s in %r" % (name, got))
    extra = {k: v for k, v in got.items() if k not in known}
    test.assertTrue(all(isinstance(v, int) and v > max(known.values()) for v in extra.values()), got)
    test.assertEqual(len(set(got.values())), len(got), "numbers are distinct: %r" % got)


def check_enums(test, requests, responses):
    check_enum_table(test, requests, REQUESTS)
    check_enum_table(test, responses, RESPONSES)


class UiFiles(SharedServerTestCase):

    def test_index(self):
        status, headers, body = http_get(self.server.http_port, "/")
        self.assertEqual(status, 200)
        self.assertEqual(content_type(headers), "text/html")
        with open(os.path.join(HTML_DIR, "index.html"), "rb") as f:
            source = f.read()
        self.assertEqual(body, substitute(source, "localhost", self.server.chat_port))
        status, _, body2 = http_get(self.server.http_port, "/index.html")
        self.assertEqual((status, body2), (200, body))
        status, _, body3 = http_get(self.server.http_port, "/?v=1")
        self.assertEqual((status, body3), (200, body))

    def test_every_ui_file_with_placeholders_replaced(self):
        files = html_files(HTML_DIR)
        self.assertIn("index.html", files)
        for rel in files:
            with self.subTest(file=rel):
                with open(os.path.join(HTML_DIR, rel), "rb") as f:
                    source = f.read()
                status, headers, body = http_get(self.server.http_port, "/" + rel)
                self.assertEqual(status, 200)
                if rel.endswith(SUBSTITUTED):
                    self.assertEqual(body, substitute(source, "localhost", self.server.chat_port))
                    self.assertNotIn(b"%SERVER_", body)
                else:
                    self.assertEqual(body, source)
                if rel.endswith(".js") or rel.endswith(".mjs"):
                    self.assertEqual(content_type(headers), "text/javascript")
                if rel.endswith(".css"):
                    self.assertEqual(content_type(headers), "text/css")

    def test_keep_alive(self):
        conn = http.client.HTTPConnection(HOST, self.server.http_port, timeout=5)
        try:
            bodies = []
            for method, path, expected in (("GET", "/", 200), ("GET", "/no-such", 404),
                                           ("HEAD", "/", 200), ("GET", "/enums.json", 200),
                                           ("GET", "/", 200)):
                conn.request(method, path)
                resp = conn.getresponse()
                body = resp.read()
                self.assertEqual(resp.status, expected, path)
                bodies.append(body)
            self.assertEqual(bodies[0], bodies[4])
            self.assertEqual(bodies[2], b"")
        finally:
            conn.close()

    def test_missing_is_404(self):
        for path in ("/no-such-file.html", "/nodir/x.js", "/index.html/x", "/.hidden"):
            with self.subTest(path=path):
                status, _, body = http_get(self.server.http_port, path)
                self.assertEqual(status, 404)

    def test_other_methods_are_405_with_allow(self):
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            for path in ("/", "/index.html", "/enums.js"):
                with self.subTest(method=method, path=path):
                    status, headers, _ = http_get(self.server.http_port, path, method=method,
                                                  body=b"x=1",
                                                  headers={"Content-Type": "text/plain"})
                    self.assertEqual(status, 405)
                    allow = (headers.get("allow") or "").upper()
                    self.assertIn("GET", allow)
                    self.assertIn("HEAD", allow)
        status, _, _ = http_get(self.server.http_port, "/")
        self.assertEqual(status, 200)

    def test_head_has_no_body(self):
        _, _, get_body = http_get(self.server.http_port, "/")
        for path in ("/", "/enums.js"):
            with self.subTest(path=path):
                status, headers, body, raw = http_raw(
                    self.server.http_port,
                    "HEAD %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" % path,
                    timeout=3)
                self.assertEqual(status, 200, raw[:300])
                self.assertEqual(body, b"", "HEAD must not send a body")
                if path == "/" and "content-length" in headers:
                    self.assertEqual(int(headers["content-length"]), len(get_body))

    def test_traversal_never_leaves_the_folder(self):
        # the spellings the project named: each must be answered 400, 403 or 404
        named = ["/../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/%2e%2e%2fetc%2fpasswd",
                 "/..%2f..%2fetc%2fpasswd", "/%252e%252e/etc/passwd", "//etc/passwd",
                 "/html/../../etc/passwd", "/..\\..\\etc\\passwd"]
        # "/%00": libwebsockets' own request parser drops a %00 that ends the
        # path, so it reaches the server as "/" and may be answered with the
        # index page; anything else it must not be.
        nul = "/%00"
        # more: these must never leak, and may also be dropped without an answer
        more = ["/../../../../../../etc/passwd", "/index.html%00.js", "/%2E%2E/%2E%2E/etc/passwd",
                "/.%2e/.%2e/etc/passwd", "/%c0%ae%c0%ae/etc/passwd", "/./../etc/passwd",
                "/etc/passwd", "/..%5c..%5cetc%5cpasswd", "/%2f%2fetc%2fpasswd"]
        status, _, body, raw = http_raw(
            self.server.http_port, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" % nul)
        self.assertNotIn(PASSWD_MARK, raw)
        if status == 200:
            self.assertIn(b"<!doctype html>", body.lower())     # the index page, nothing else
        else:
            self.assertIn(status, (400, 403, 404), raw[:300])
        for path in named + more:
            for version in ("HTTP/1.1", "HTTP/1.0"):
                with self.subTest(path=path, version=version):
                    status, _, body, raw = http_raw(
                        self.server.http_port,
                        "GET %s %s\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" % (path, version))
                    self.assertNotIn(PASSWD_MARK, raw)
                    allowed = (400, 403, 404) if path in named else (None, 400, 403, 404)
                    self.assertIn(status, allowed, raw[:300])
        # the server is fine afterwards
        self.assertEqual(http_get(self.server.http_port, "/")[0], 200)

    def test_absolute_uri_forms(self):
        for target in ("http://127.0.0.1/../../etc/passwd", "*", "etc/passwd"):
            with self.subTest(target=target):
                status, _, body, raw = http_raw(
                    self.server.http_port,
                    "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" % target)
                self.assertNotIn(PASSWD_MARK, raw)

    def test_garbage_request_does_not_hurt(self):
        for junk in (b"\x00\x01\x02\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                     b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Long: " + b"a" * 20000 + b"\r\n\r\n"):
            with self.subTest(junk=junk[:20]):
                http_raw(self.server.http_port, junk, timeout=2)
        self.assertEqual(http_get(self.server.http_port, "/")[0], 200)


class Enums(SharedServerTestCase):

    def check_js_defines(self, body):
        text = body.decode("utf-8")
        self.assertRegex(text, r"\bRequests\b")
        self.assertRegex(text, r"\bResponses\b")
        pairs = enum_pairs(text)
        check_enums(self, {k: v for k, v in pairs.items() if k.endswith("Request")},
                    {k: v for k, v in pairs.items() if k.endswith("Event")})
        self.assertNotIn("export", text, "a classic script cannot export")
        node = shutil.which("node")
        if node:
            script = ("const vm=require('vm');const src=require('fs').readFileSync(0,'utf8');"
                      "const ctx=vm.createContext({});vm.runInContext(src,ctx);"
                      "const out=vm.runInContext('JSON.stringify({Requests,Responses,"
                      "frozen:Object.isFrozen(Requests)&&Object.isFrozen(Responses)})',ctx);"
                      "process.stdout.write(out);")
            res = subprocess.run([node, "-e", script], input=body, capture_output=True, timeout=20)
            self.assertEqual(res.returncode, 0, res.stderr.decode())
            got = json.loads(res.stdout)
            check_enums(self, got["Requests"], got["Responses"])
            self.assertEqual(set(got["Requests"]) | set(got["Responses"]), set(pairs),
                             "the text check saw every name")
            self.assertTrue(got["frozen"], "Requests and Responses are frozen objects")

    def test_enums_js(self):
        for path in ("/enums.js", "/enum.js"):
            for headers in ({}, {"Sec-Fetch-Dest": "script"}, {"Accept": "*/*"}):
                with self.subTest(path=path, headers=headers):
                    status, h, body = http_get(self.server.http_port, path, headers=headers)
                    self.assertEqual(status, 200)
                    self.assertEqual(content_type(h), "text/javascript")
                    self.check_js_defines(body)
                    vary = (h.get("vary") or "").lower()
                    self.assertIn("sec-fetch-dest", vary)
                    self.assertIn("accept", vary)

    def test_enum_js_is_an_alias(self):
        a = http_get(self.server.http_port, "/enums.js")[2]
        b = http_get(self.server.http_port, "/enum.js")[2]
        self.assertEqual(a, b)

    def test_enums_js_as_json_for_fetch(self):
        for path in ("/enums.js", "/enum.js"):
            for headers in ({"Sec-Fetch-Dest": "empty"}, {"Accept": "application/json"}):
                with self.subTest(path=path, headers=headers):
                    status, h, body = http_get(self.server.http_port, path, headers=headers)
                    self.assertEqual(status, 200)
                    self.assertEqual(content_type(h), "application/json")
                    doc = json.loads(body)
                    self.assertEqual(set(doc), {"Requests", "Responses"})
                    check_enums(self, doc["Requests"], doc["Responses"])
                    self.assertIn("sec-fetch-dest", (h.get("vary") or "").lower())

    def test_enums_json(self):
        status, h, body = http_get(self.server.http_port, "/enums.json")
        self.assertEqual(status, 200)
        self.assertEqual(content_type(h), "application/json")
        doc = json.loads(body)
        self.assertEqual(set(doc), {"Requests", "Responses"})
        check_enums(self, doc["Requests"], doc["Responses"])
        # the same tables as the script
        pairs = enum_pairs(http_get(self.server.http_port, "/enums.js")[2].decode())
        self.assertEqual({**doc["Requests"], **doc["Responses"]}, pairs)

    def test_enums_json_is_the_documented_table(self):
        """Every value, the extensions too, exactly as docs/PROTOCOL.md's
        "Enumerations" table has it: nothing more, nothing less."""
        with open(os.path.join(SOURCE_DIR, "docs", "PROTOCOL.md"), encoding="utf-8") as f:
            doc_text = f.read()
        table = doc_text.split("## Enumerations", 1)[1].split("\n## ", 1)[0]
        documented = {}
        for m in re.finditer(r"^\|(.*)\|\s*$", table, re.M):
            cells = [c.replace("**ext**", "").strip() for c in m.group(1).split("|")]
            for name, value in zip(cells[0::2], cells[1::2]):
                if re.fullmatch(r"[A-Za-z]+(Request|Event)", name) and value.isdigit():
                    documented[name] = int(value)
        self.assertGreaterEqual(len(documented), 22, documented)
        doc = json.loads(http_get(self.server.http_port, "/enums.json")[2])
        self.assertEqual({**doc["Requests"], **doc["Responses"]}, documented)

    def test_enums_mjs(self):
        status, h, body = http_get(self.server.http_port, "/enums.mjs")
        self.assertEqual(status, 200)
        self.assertEqual(content_type(h), "text/javascript")
        text = body.decode("utf-8")
        self.assertRegex(text, r"export\s+const\s+Requests\s*=")
        self.assertRegex(text, r"export\s+const\s+Responses\s*=")
        pairs = enum_pairs(text)
        check_enums(self, {k: v for k, v in pairs.items() if k.endswith("Request")},
                    {k: v for k, v in pairs.items() if k.endswith("Event")})
        node = shutil.which("node")
        if node:
            with tempfile.TemporaryDirectory() as d:
                mod = os.path.join(d, "enums.mjs")
                with open(mod, "wb") as f:
                    f.write(body)
                code = ("import {Requests, Responses} from %s;"
                        "process.stdout.write(JSON.stringify({Requests, Responses}));"
                        % json.dumps("file://" + mod))
                res = subprocess.run([node, "--input-type=module", "-e", code],
                                     capture_output=True, timeout=20)
                self.assertEqual(res.returncode, 0, res.stderr.decode())
                got = json.loads(res.stdout)
                check_enums(self, got["Requests"], got["Responses"])


class Placeholders(QmsTestCase):
    """Probe files in a copy of the html folder make the check independent
    of what the UI files happen to contain."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="qms-html-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.html = make_probe_html(self.tmp)

    def check_probes(self, srv, address):
        for name in ("probe.js", "probe.mjs", "probe.html"):
            with self.subTest(file=name, address=address):
                status, _, body = http_get(srv.http_port, "/" + name)
                self.assertEqual(status, 200)
                self.assertEqual(body.decode(), "addr=%s;port=%d;proto=ws;again=%d"
                                 % (address, srv.chat_port, srv.chat_port))
        for name in ("probe.txt", "probe.css"):
            with self.subTest(file=name):
                status, _, body = http_get(srv.http_port, "/" + name)
                self.assertEqual((status, body.decode()), (200, PROBE), "only .html/.js/.mjs change")

    def test_default_server_ip_is_localhost(self):
        srv = self.start_server(html_dir=self.html)
        self.check_probes(srv, "localhost")

    def test_server_ip_option(self):
        srv = self.start_server(["-serverIp", "127.0.0.1"], html_dir=self.html)
        self.check_probes(srv, "127.0.0.1")
        for rel in html_files(HTML_DIR):
            if rel.endswith(SUBSTITUTED):
                with self.subTest(file=rel):
                    with open(os.path.join(HTML_DIR, rel), "rb") as f:
                        source = f.read()
                    status, _, body = http_get(srv.http_port, "/" + rel)
                    self.assertEqual((status, body), (200, substitute(source, "127.0.0.1", srv.chat_port)))

    def test_symlinks_out_of_the_folder(self):
        secret = os.path.join(self.tmp, "secret.txt")
        with open(secret, "w") as f:
            f.write("TOP-SECRET")
        os.symlink("/etc/passwd", os.path.join(self.html, "passwd"))
        os.symlink("/etc", os.path.join(self.html, "etcdir"))
        os.symlink(secret, os.path.join(self.html, "secret.txt"))
        os.symlink("../secret.txt", os.path.join(self.html, "relsecret.js"))
        os.symlink(self.tmp, os.path.join(self.html, "parent"))
        srv = self.start_server(html_dir=self.html)
        for path in ("/passwd", "/etcdir/passwd", "/secret.txt", "/relsecret.js",
                     "/parent/secret.txt", "/parent/../secret.txt"):
            with self.subTest(path=path):
                status, _, body, raw = http_raw(
                    srv.http_port, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" % path)
                self.assertIn(status, (403, 404), raw[:300])
                self.assertNotIn(PASSWD_MARK, raw)
                self.assertNotIn(b"TOP-SECRET", raw)
        self.assertEqual(http_get(srv.http_port, "/probe.txt")[0], 200)


if __name__ == "__main__":
    unittest.main(verbosity=2)
