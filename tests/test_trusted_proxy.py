"""Behind a load balancer: a real nginx (Debian's package) in front of the
real server.  Without --trusted-proxy every client has nginx's address, so
the per-address limits (--max-connections-per-address, failed logins per
address) apply to all of them together; with it, the server takes the
client's address from X-Forwarded-For, as nginx writes it, and only from
nginx: a client cannot name itself someone else, through nginx or around it.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmslib import (Client, HandshakeError, QmsTestCase, WebSocketClosed, connect, free_port,
                    port_open, uniq)

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
    def __init__(self, upstream):
        self.dir = tempfile.mkdtemp(prefix="qms-nginx-")
        self.port = free_port()
        with open(os.path.join(self.dir, "nginx.conf"), "w") as f:
            f.write(CONF.format(dir=self.dir, port=self.port, upstream=upstream))
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
    with FromAddress(source):
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

    def front(self, srv):
        nginx = Nginx(srv.chat_port)
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


if __name__ == "__main__":
    unittest.main(verbosity=2)
