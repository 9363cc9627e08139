"""Behind a load balancer: a real nginx (Debian's package) in front of the
real server.  Without --trusted-proxy every client has nginx's address, so
the per-address limits (--max-connections-per-address, failed logins per
address) apply to all of them together; with it, the server takes the
client's address from X-Forwarded-For, as nginx writes it, and only from
nginx: a client cannot name itself someone else, through nginx or around it.
With --proxy-protocol the chat port takes the client's address from the
PROXY protocol v2 header a trusted proxy sends first (nginx's stream
module here), and from nobody else.
"""
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmslib import (BINARY, HOST, Client, HandshakeError, QmsTestCase, WebSocketClosed, connect,
                    free_port, http_get, port_open, uniq)

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
CONF = """
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
"""

# The chat port behind nginx's stream module: TCP passed through, a PROXY
# protocol v2 header first (the module is a package of its own:
# libnginx-mod-stream, which scripts/test installs).
# The same with HAProxy (Debian's package), which sends version 2.
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
HAPROXY_CONF = """
global
    maxconn 256
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend chat
    bind 127.0.0.1:{port}
    default_backend gateways
backend gateways
    server gateway 127.0.0.1:{upstream} send-proxy-v2
"""


class HAProxy:
    def __init__(self, upstream):
        self.dir = tempfile.mkdtemp(prefix="qms-haproxy-")
        self.port = free_port()
        conf = os.path.join(self.dir, "haproxy.cfg")
        with open(conf, "w") as f:
            f.write(HAPROXY_CONF.format(port=self.port, upstream=upstream))
        self.proc = subprocess.Popen([HAPROXY, "-db", "-f", conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while not port_open(self.port) and time.monotonic() < deadline and self.proc.poll() is None:
            time.sleep(0.05)
        if not port_open(self.port):
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.poll() is not None else ""
            self.stop()
            raise AssertionError("haproxy did not listen: %s" % err)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stderr.close()
        shutil.rmtree(self.dir, True)


STREAM_CONF = """
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
stream {{
    server {{
        listen 127.0.0.1:{port};
        proxy_pass 127.0.0.1:{upstream};
        proxy_protocol on;
    }}
}}
"""

PROXY_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v2(source, command=1):
    """A PROXY protocol v2 header naming source (IPv4 or IPv6) as the client
    of a TCP connection; command 0 is LOCAL (the proxy's own connection)."""
    if command == 0:
        return PROXY_SIG + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    if ":" in source:
        body = socket.inet_pton(socket.AF_INET6, source) + socket.inet_pton(socket.AF_INET6, "::1")
        family = 0x21
    else:
        body = socket.inet_aton(source) + socket.inet_aton("127.0.0.1")
        family = 0x11
    body += struct.pack("!HH", 40000, 12345)
    return PROXY_SIG + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


class Prefixed:
    """socket.create_connection from source, sending prefix first (in
    pieces of `piece` bytes, `pause` seconds apart, when given)."""

    def __init__(self, source, prefix, piece=None, pause=0.0):
        self.source, self.prefix, self.piece, self.pause = source, prefix, piece, pause

    def __enter__(self):
        self.orig = socket.create_connection
        orig, me = self.orig, self

        def create(addr, timeout=None, source_address=None):
            sock = orig(addr, timeout=timeout, source_address=(me.source, 0))
            step = me.piece or len(me.prefix)
            for at in range(0, len(me.prefix), step):
                sock.sendall(me.prefix[at:at + step])
                time.sleep(me.pause)
            return sock
        socket.create_connection = create

    def __exit__(self, *exc):
        socket.create_connection = self.orig


class FromAddress:
    """socket.create_connection from a given source address (127.0.x.y)."""

    def __init__(self, source):
        self.source = source

    def __enter__(self):
        self.orig = socket.create_connection
        source, orig = self.source, self.orig

        def create(addr, timeout=None, source_address=None):
            return orig(addr, timeout=timeout, source_address=(source, 0))
        socket.create_connection = create

    def __exit__(self, *exc):
        socket.create_connection = self.orig


class Nginx:
    def __init__(self, upstream, conf=CONF):
        self.dir = tempfile.mkdtemp(prefix="qms-nginx-")
        self.port = free_port()
        with open(os.path.join(self.dir, "nginx.conf"), "w") as f:
            f.write(conf.format(dir=self.dir, port=self.port, upstream=upstream))
        self.proc = subprocess.Popen([NGINX, "-p", self.dir, "-c", os.path.join(self.dir, "nginx.conf"),
                                      "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while not port_open(self.port) and time.monotonic() < deadline and self.proc.poll() is None:
            time.sleep(0.05)
        if not port_open(self.port):
            with open(os.path.join(self.dir, "error.log"), errors="replace") as log:
                text = log.read()
            self.stop()
            raise AssertionError("nginx did not listen: %s" % text)

    def stop(self):
        self.proc.stderr.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, True)


def refused(port, source, headers=None):
    """True when the server closes a new connection from source with 1008
    ("Too many connections from your address"); False when it stays open."""
    return refused_with(port, FromAddress(source), headers)


def refused_with(port, connecting, headers=None):
    """refused(), for a connection made inside the context `connecting`."""
    with connecting:
        try:
            ws = connect(port, headers=headers)
        except HandshakeError:
            return True
    try:
        return ws.expect_close(2) == 1008
    except AssertionError:          # still open after 2 s
        return False
    finally:
        ws.abort()


class TrustedProxy(QmsTestCase):

    def setUp(self):
        super().setUp()
        self.assertTrue(os.path.exists(NGINX), "nginx is not installed (scripts/test installs it)")

    def front(self, srv, conf=CONF):
        nginx = Nginx(srv.chat_port, conf)
        self.addCleanup(nginx.stop)
        return nginx

    def hold(self, port, source, count, headers=None):
        """count connections from source that the server keeps open."""
        held = []
        for _ in range(count):
            with FromAddress(source):
                held.append(connect(port, headers=headers))
        self.addCleanup(lambda: [ws.abort() for ws in held])
        for ws in held:
            with self.assertRaises(AssertionError, msg="the server closed a connection from %s" % source):
                ws.expect_close(0.3)            # raises while the connection stays open
        return held

    def test_connection_limit_is_per_client_behind_the_proxy(self):
        srv = self.start_server(["--trusted-proxy", "127.0.0.1", "--max-connections-per-address", "2"])
        nginx = self.front(srv)
        self.hold(nginx.port, "127.0.1.1", 2)
        self.assertTrue(refused(nginx.port, "127.0.1.1"), "a third connection of the same client")
        # another client behind the same proxy is not counted with the first
        self.hold(nginx.port, "127.0.1.2", 2)
        self.assertTrue(refused(nginx.port, "127.0.1.2"))

    def test_without_trust_everyone_behind_the_proxy_is_one_address(self):
        """What --trusted-proxy fixes (and the default when none is given):
        the proxy's address counts for all its clients."""
        srv = self.start_server(["--max-connections-per-address", "2"])
        nginx = self.front(srv)
        self.hold(nginx.port, "127.0.1.1", 1)
        self.hold(nginx.port, "127.0.1.2", 1)
        self.assertTrue(refused(nginx.port, "127.0.1.3"), "all of them are nginx's 127.0.0.1")

    def test_a_forged_forwarded_for_is_not_believed(self):
        srv = self.start_server(["--trusted-proxy", "127.0.0.1", "--max-connections-per-address", "2"])
        nginx = self.front(srv)
        # through nginx: it appends the real address after the forged one
        self.hold(nginx.port, "127.0.1.5", 1, headers={"X-Forwarded-For": "203.0.113.1"})
        self.hold(nginx.port, "127.0.1.5", 1, headers={"X-Forwarded-For": "203.0.113.2"})
        self.assertTrue(refused(nginx.port, "127.0.1.5", headers={"X-Forwarded-For": "203.0.113.3"}))
        # around nginx: a peer that is not a trusted proxy names only itself
        for i in range(2):
            self.hold(srv.chat_port, "127.0.2.1", 1, headers={"X-Forwarded-For": "203.0.113.%d" % (10 + i),
                                                              "Forwarded": "for=203.0.113.%d" % (20 + i)})
        self.assertTrue(refused(srv.chat_port, "127.0.2.1", headers={"X-Forwarded-For": "203.0.113.99"}))

    def test_failed_logins_count_against_the_client_not_the_proxy(self):
        """--login-fail-limit 1: ten failures from one address pause that
        address's logins; behind a trusted proxy that is the client's."""
        srv = self.start_server(["--trusted-proxy", "127.0.0.1", "--login-fail-limit", "1"])
        nginx = self.front(srv)
        victim = uniq("victim")
        with FromAddress("127.0.1.8"):
            Client(nginx.port, name=victim, password="right-password", test=self)
        with FromAddress("127.0.1.7"):
            attacker = connect(nginx.port)
        self.addCleanup(attacker.close)
        answers = []
        for i in range(12):
            attacker.send_json({"action": 0, "name": uniq("guess%d" % i), "password": "wrong"})
            answers.append(attacker.wait_for(lambda m: m.get("event") == 1, timeout=10)["error"])
        self.assertTrue(any(a.startswith("Too many failed login attempts") for a in answers),
                        "the attacker's address was never paused: %s" % answers)
        # the victim, behind the same nginx, logs in
        with FromAddress("127.0.1.8"):
            ws = connect(nginx.port)
        self.addCleanup(ws.close)
        ws.send_json({"action": 0, "name": victim, "password": "right-password"})
        answer = ws.wait_for(lambda m: m.get("event") == 1, timeout=10)
        self.assertTrue(answer.get("valid"), answer)



def handshake_fails(port, prefixed):
    """True when the chat port answers a WebSocket handshake behind this
    prefix with no upgrade (closed, or an HTTP error)."""
    with prefixed:
        try:
            ws = connect(port, timeout=8)
        except (HandshakeError, ConnectionResetError, BrokenPipeError):
            return True
    ws.abort()
    return False


class ProxyProtocol(QmsTestCase):
    ARGS = ["--trusted-proxy", "127.0.0.1", "--proxy-protocol", "--max-connections-per-address", "2"]

    def setUp(self):
        super().setUp()
        self.assertTrue(os.path.exists("/usr/lib/nginx/modules/ngx_stream_module.so"),
                        "nginx's stream module is not installed (scripts/test installs libnginx-mod-stream)")

    def hold(self, port, prefixed, count):
        held = []
        for _ in range(count):
            with prefixed:
                held.append(connect(port))
        self.addCleanup(lambda: [ws.abort() for ws in held])
        for ws in held:
            with self.assertRaises(AssertionError, msg="the server closed a held connection"):
                ws.expect_close(0.3)
        return held

    def assert_counts_clients(self, srv, front):
        """Behind a TCP front every connection is the front's; its PROXY
        header names the client: the limits count clients, and chat works
        through it."""
        TrustedProxy.hold(self, front.port, "127.0.1.1", 2)
        self.assertTrue(refused(front.port, "127.0.1.1"), "a third connection of the same client")
        self.assertIn("reason=max_per_address address=127.0.1.1 limit=2", srv.log_text())
        TrustedProxy.hold(self, front.port, "127.0.1.2", 2)
        with FromAddress("127.0.1.3"):
            a = Client(front.port, test=self)
            b = Client(front.port, test=self)
        a.send(b, "through the front")
        b.expect_message(a, "through the front")

    def test_nginx_stream_names_each_client(self):
        """nginx's stream module: version 1, the text line."""
        srv = self.start_server(self.ARGS)
        nginx = Nginx(srv.chat_port, STREAM_CONF)
        self.addCleanup(nginx.stop)
        self.assert_counts_clients(srv, nginx)

    def test_haproxy_names_each_client(self):
        """HAProxy's send-proxy-v2: the binary header, from a real sender."""
        self.assertTrue(os.path.exists(HAPROXY), "haproxy is not installed (scripts/test installs it)")
        srv = self.start_server(self.ARGS)
        front = HAProxy(srv.chat_port)
        self.addCleanup(front.stop)
        self.assert_counts_clients(srv, front)

    def test_a_header_from_anyone_else_is_not_believed(self):
        """A client that is no trusted proxy cannot name itself someone else
        with a PROXY header: to the server it is a bad request; without one
        it is served under its own address."""
        srv = self.start_server(self.ARGS)
        self.assertTrue(handshake_fails(srv.chat_port, Prefixed("127.0.2.1", proxy_v2("203.0.113.5"))))
        self.hold(srv.chat_port, FromAddress("127.0.2.1"), 2)
        self.assertTrue(refused(srv.chat_port, "127.0.2.1"), "counted as itself")

    def test_the_header_names_ipv4_ipv6_or_the_proxy(self):
        srv = self.start_server(self.ARGS)
        for client in ("198.51.100.7", "2001:db8::9"):
            self.hold(srv.chat_port, Prefixed("127.0.0.1", proxy_v2(client)), 2)
            self.assertTrue(refused_with(srv.chat_port, Prefixed("127.0.0.1", proxy_v2(client))))
            self.assertIn("address=%s limit=2" % client, srv.log_text())
        # version 1, by hand (nginx's is below)
        line = b"PROXY TCP4 198.51.100.8 127.0.0.1 40000 12345\r\n"
        self.hold(srv.chat_port, Prefixed("127.0.0.1", line), 2)
        self.assertTrue(refused_with(srv.chat_port, Prefixed("127.0.0.1", line)))
        self.assertIn("address=198.51.100.8 limit=2", srv.log_text())
        # LOCAL: the proxy's own connection (a health check) is the proxy's
        self.hold(srv.chat_port, Prefixed("127.0.0.1", proxy_v2("", command=0)), 2)
        self.assertTrue(refused_with(srv.chat_port, Prefixed("127.0.0.1", proxy_v2("", command=0))))
        self.assertIn("address=127.0.0.1 limit=2", srv.log_text())

    def test_a_header_in_pieces_is_waited_for(self):
        """A header that arrives a few bytes at a time, and the handshake
        right behind it: nothing of either is lost."""
        srv = self.start_server(self.ARGS)
        with Prefixed("127.0.0.1", proxy_v2("192.0.2.44"), piece=5, pause=0.05):
            c = Client(srv.chat_port, test=self)
        with Prefixed("127.0.0.1", proxy_v2("192.0.2.45")):
            d = Client(srv.chat_port, test=self)
        c.send(d, "after a slow header")
        d.expect_message(c, "after a slow header")

    def test_a_trusted_peer_without_a_good_header_is_closed(self):
        """From a trusted proxy the header is required: no header, a broken
        one, or one that never ends closes the connection (counted and
        logged), and the server serves on."""
        srv = self.start_server(self.ARGS)
        self.assertTrue(handshake_fails(srv.chat_port, FromAddress("127.0.0.1")), "no header")
        bad_length = PROXY_SIG + bytes([0x21, 0x11]) + struct.pack("!H", 0xFFFF)
        self.assertTrue(handshake_fails(srv.chat_port, Prefixed("127.0.0.1", bad_length)), "64 KiB 'header'")
        version1 = b"PROXY TCP4 198.51.100.1 not-an-address 40000 12345\r\n"
        self.assertTrue(handshake_fails(srv.chat_port, Prefixed("127.0.0.1", version1)), "a broken version 1 line")
        began = time.monotonic()
        with socket.create_connection((HOST, srv.chat_port), timeout=10) as sock:
            sock.sendall(proxy_v2("198.51.100.1")[:10])         # and then nothing
            try:
                self.assertEqual(sock.recv(100), b"")
            except ConnectionResetError:
                pass
        self.assertGreater(time.monotonic() - began, 4.0, "closed before the header's 5 s")
        log = srv.log_text()
        self.assertEqual(log.count("event=proxy_header_refused"), 4, log)
        self.assertIn('reason="no whole PROXY header within 5 s"', log)
        with Prefixed("127.0.0.1", proxy_v2("192.0.2.50")):
            Client(srv.chat_port, test=self)
        status, _, body = http_get(srv.http_port, "/metrics")
        self.assertIn('qms_proxy_headers_refused_total{actor="gateway"} 4', body.decode())

    def test_without_trusted_proxies_the_flag_is_refused(self):
        r = subprocess.run([BINARY, "--proxy-protocol", "-cp", str(free_port()), "-hp", str(free_port())],
                           capture_output=True, text=True, timeout=20)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("--proxy-protocol takes the header only from a --trusted-proxy", r.stdout + r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
