"""Operations: /healthz, /readyz and /metrics against the real server.

The figures must move as traffic flows: the test parses the Prometheus text
exposition and checks the counters after an exchange whose size it knows.
/readyz must fail while the store is away (a cluster with the store as its
own process) and recover when it is back.  In a cluster the store, auth and
router processes serve their own figures on --metrics-port.  A database that
may not be written (users.db mode 0444, the server run as an unprivileged
user, since root writes anyway) is served read-only with /readyz 503.
"""

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmslib import (BINARY, HOST, Client, QmsTestCase, Server, connect, free_port, http_get,  # noqa: E402
                    http_raw, login, register, uniq)
from test_cluster import Cluster, ClusterCase  # noqa: E402

# the unprivileged user the read-only tests run the server as, when root
SETPRIV = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? (\S+)$')


def parse_metrics(text):
    """{(name, frozenset(labels)): value}; fails on a malformed line or a
    metric whose TYPE is declared twice."""
    samples, types = {}, set()
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# TYPE "):
            name = line.split()[2]
            assert name not in types, "TYPE of %s declared twice" % name
            types.add(name)
            continue
        if line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, "not an exposition line: %r" % line
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(3) or ""))
        samples[(m.group(1), labels)] = float(m.group(4))
    return samples


def value(samples, name, **labels):
    want = set(labels.items())
    found = [v for (n, ls), v in samples.items() if n == name and want <= set(ls)]
    assert len(found) == 1, "%s%s: %d samples" % (name, labels, len(found))
    return found[0]


class Metrics(QmsTestCase):

    def scrape(self, srv):
        status, headers, body = http_get(srv.http_port, "/metrics")[:3]
        self.assertEqual(status, 200)
        self.assertIn("text/plain", headers.get("content-type", ""))
        return parse_metrics(body.decode("utf-8"))

    def test_health_and_ready(self):
        srv = self.start_server()
        status, headers, body = http_get(srv.http_port, "/healthz")[:3]
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["status"], "ok")
        status, _, body = http_get(srv.http_port, "/readyz")[:3]
        ready = json.loads(body)
        self.assertEqual((status, ready["ready"]), (200, True), ready)
        self.assertTrue(ready["database_writable"])

    def test_counters_follow_a_known_exchange(self):
        srv = self.start_server()
        before = self.scrape(srv)
        self.assertEqual(value(before, "qms_requests_total", action="MessageRequest"), 0)
        a = Client(srv.chat_port, uniq("meter"), test=self)
        b = Client(srv.chat_port, uniq("meter"), test=self)
        for i in range(3):
            a.send(b, "counted %d" % i)
            b.expect_message(a, "counted %d" % i)
        a.ws.send_text("not json")
        a.ws.wait_for(lambda m: m.get("error") == "Not valid JSON.")
        after = self.scrape(srv)
        self.assertEqual(value(after, "qms_requests_total", action="MessageRequest"), 3)
        self.assertEqual(value(after, "qms_requests_total", action="RegisterRequest"), 2)
        self.assertEqual(value(after, "qms_request_errors_total", kind="malformed"), 1)
        self.assertEqual(value(after, "qms_logins_total", result="ok"), 2)
        self.assertEqual(value(after, "qms_messages_total", actor="router", result="delivered"), 3)
        self.assertEqual(value(after, "qms_events_total", kind="message"), 3)
        self.assertEqual(value(after, "qms_connections_open", actor="gateway"), 2)
        self.assertEqual(value(after, "qms_sessions", actor="router", state="online"), 2)
        self.assertEqual(value(after, "qms_store_rows", table="users"), 2)
        self.assertEqual(value(after, "qms_auth_outcomes_total", op="register", result="ok"), 2)
        self.assertEqual(value(after, "qms_request_duration_seconds_count", op="login"), 2)
        self.assertGreater(value(after, "qms_bytes_received_total", actor="gateway"), 0)
        self.assertGreater(value(after, "qms_store_op_duration_seconds_count", op="ST_USER_CREATE"), 0)
        for actor in ("router", "auth", "store"):
            self.assertEqual(value(after, "qms_actor_up", actor=actor), 1)
        # a close by the server is counted by its code
        a.ws.send_frame(1, b"x" * (1024 * 1024 + 10))
        self.assertEqual(a.ws.expect_close(5), 1009)
        deadline = time.monotonic() + 5
        while value(self.scrape(srv), "qms_closes_total", code="1009") != 1:
            self.assertLess(time.monotonic(), deadline, "the 1009 close was not counted")
            time.sleep(0.1)


class MetricsPort(QmsTestCase):

    def test_metrics_only_on_the_metrics_port(self):
        from qmslib import free_port
        port = free_port()
        srv = self.start_server(["--metrics-port", str(port)])
        status, _, body = http_get(port, "/metrics")[:3]
        self.assertEqual(status, 200)
        self.assertIn("qms_connections_open", body.decode())
        self.assertEqual(http_get(port, "/readyz")[0], 200)
        self.assertEqual(http_get(port, "/")[0], 404, "the UI is not on the metrics port")
        # not on the public HTTP port any more (the UI's 404 for a missing file)
        self.assertEqual(http_get(srv.http_port, "/metrics")[0], 404)
        self.assertEqual(http_get(srv.http_port, "/healthz")[0], 200)


class ReadyInACluster(ClusterCase):

    def test_readyz_fails_while_the_store_is_away(self):
        c = self.cluster(gateways=1)
        http = c.gateway_ports[0][1]

        def ready():
            status, _, body = http_get(http, "/readyz")[:3]
            return status, json.loads(body)

        self.assertEqual(ready()[0], 200)
        c.stop("store")
        deadline = time.monotonic() + 8
        while ready()[0] != 503:
            self.assertLess(time.monotonic(), deadline, "/readyz stayed 200 without a store")
            time.sleep(0.2)
        status, body = ready()
        self.assertEqual((body["store"], body["router"], body["auth"]), (False, True, True), body)
        self.assertEqual(http_get(http, "/healthz")[0], 200, "alive while not ready")
        c.start("store")
        deadline = time.monotonic() + 8
        while ready()[0] != 200:
            self.assertLess(time.monotonic(), deadline, "/readyz did not recover with the store")
            time.sleep(0.2)


class OpsCluster(Cluster):
    """A cluster whose store, auth and router serve their own figures."""

    def __init__(self, gateways=1):
        super().__init__(gateways)
        self.ops_ports = {name: free_port() for name in ("store", "auth", "router")}

    def role_args(self, name):
        args = super().role_args(name)
        if name in self.ops_ports:
            args += ["--bind", HOST, "--metrics-port", str(self.ops_ports[name])]
        return args


class RolesServeTheirOwnMetrics(ClusterCase):

    def get(self, c, role, path):
        status, headers, body = http_get(c.ops_ports[role], path)[:3]
        return status, headers, body.decode("utf-8")

    def scrape(self, c, role):
        status, headers, body = self.get(c, role, "/metrics")
        self.assertEqual(status, 200, body)
        self.assertIn("text/plain", headers.get("content-type", ""))
        return parse_metrics(body)

    def test_each_role_answers_metrics_healthz_and_readyz(self):
        c = self.cluster(make=lambda: OpsCluster(gateways=1))
        for role in ("store", "auth", "router"):
            status, headers, body = self.get(c, role, "/readyz")
            ready = json.loads(body)
            self.assertEqual((status, ready["ready"], ready[role]), (200, True, True), (role, ready))
            self.assertEqual(headers.get("content-type"), "application/json")
            status, _, body = self.get(c, role, "/healthz")
            self.assertEqual((status, json.loads(body)), (200, {"status": "ok", "role": role}))
        self.assertTrue(json.loads(self.get(c, "store", "/readyz")[2])["database_writable"])
        self.assertEqual(json.loads(self.get(c, "store", "/readyz")[2])["database"],
                         os.path.join(c.data_dir, "users.db"))
        # only those three GETs
        self.assertEqual(self.get(c, "auth", "/")[0], 404)
        self.assertEqual(self.get(c, "auth", "/metricsx")[0], 404)
        status, headers, _ = http_get(c.ops_ports["router"], "/metrics", method="POST", body=b"x=1")
        self.assertEqual(status, 405)
        self.assertEqual(headers.get("allow"), "GET, HEAD")
        # a request head past 4 KiB is dropped without a status, as on the
        # gateway's ports (libwebsockets 4.1 answers none); the port serves on
        with socket.create_connection((HOST, c.ops_ports["store"]), timeout=5) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 9000)
            try:
                got = sock.recv(100)
            except ConnectionResetError:    # closed with our bytes unread: a reset
                got = b""
            self.assertEqual(got, b"", "an endless request head is dropped, not held")

        before = {role: self.scrape(c, role) for role in ("store", "auth", "router")}
        self.assertEqual(value(before["store"], "qms_store_rows", table="users"), 0)
        self.assertEqual(value(before["router"], "qms_messages_total", result="delivered"), 0)
        # register two, log one in again elsewhere, send three messages
        a = Client(c.chat_port(1), uniq("own"), test=self)
        b = Client(c.chat_port(1), uniq("own"), test=self)
        ws = connect(c.chat_port(1))
        self.addCleanup(ws.abort)
        self.assertEqual(login(ws, a.name).get("valid"), True)
        wrong = connect(c.chat_port(1))
        self.addCleanup(wrong.abort)
        self.assertEqual(login(wrong, a.name, "wrong-pw").get("valid"), False)
        for i in range(3):
            b.send(a, "counted %d" % i)
        for i in range(3):
            ws.wait_for(lambda m, i=i: m.get("event") == 2 and m.get("message") == "counted %d" % i,
                        what="message %d" % i)

        # the gateway, and --health's probe while the cluster started (its
        # hello may be logged late on a busy machine: counted only now)
        gateways_seen = c.read(c.logs["router"]).count("event=gateway_new")
        store, auth, router = (self.scrape(c, role) for role in ("store", "auth", "router"))
        # each role's own figures, and nobody else's
        self.assertEqual(value(store, "qms_store_rows", table="users"), 2)
        self.assertEqual(value(store, "qms_store_writable"), 1)
        self.assertEqual(value(store, "qms_store_op_duration_seconds_count", op="ST_USER_CREATE"), 2)
        self.assertEqual(value(auth, "qms_auth_outcomes_total", op="register", result="ok"), 2)
        self.assertEqual(value(auth, "qms_auth_outcomes_total", op="login", result="ok"), 1)
        self.assertEqual(value(router, "qms_messages_total", result="delivered"), 3)
        self.assertEqual(value(router, "qms_sessions", state="online"), 2)
        # the router's own scrapes do not take a gateway's place
        self.assertLessEqual(value(router, "qms_gateways"), gateways_seen)
        self.assertEqual(c.read(c.logs["router"]).count("event=gateway_new"), gateways_seen)
        for role, samples in (("store", store), ("auth", auth), ("router", router)):
            self.assertEqual(value(samples, "qms_build_info"), 1)
            actors = {dict(ls).get("actor") for (_, ls) in samples} - {None}
            self.assertEqual(actors, {role}, "%s's /metrics holds only its figures" % role)

        # a stopped store: the store's port is gone, the others still answer
        c.stop("store")
        self.assertEqual(self.get(c, "router", "/readyz")[0], 200)
        with self.assertRaises(OSError):
            http_get(c.ops_ports["store"], "/healthz")


class ReadOnlyDatabase(QmsTestCase):
    """users.db that may not be written.  Root writes any file whatever its
    mode, so as root the server runs as nobody (setpriv), in a data
    directory that user owns."""

    def unprivileged(self, srv):
        """The binary to run.  As root: a copy of the binary and the web UI
        inside the server's own folder (the checkout may lie in a folder
        that nobody may enter, like a CI's mkdtemp), run as nobody."""
        if os.geteuid() != 0:
            return BINARY
        os.chmod(srv.tmp, 0o755)
        os.chown(srv.data_dir, 65534, 65534)
        binary = os.path.join(srv.tmp, "qmessageserver")
        shutil.copy2(BINARY, binary)
        srv.html_dir = shutil.copytree(srv.html_dir, os.path.join(srv.tmp, "html"))
        args = srv.args
        srv.args = lambda: SETPRIV + [binary] + args()[1:]
        return binary

    def make_read_only(self, srv):
        """Start once to create the database and a user, stop, chmod 0444."""
        srv.start()
        name = uniq("ro")
        Client(srv.chat_port, name, test=self)
        srv.stop()
        path = os.path.join(srv.data_dir, "users.db")
        os.chmod(path, 0o444)
        return name, path

    def test_all_in_one_serves_a_read_only_database(self):
        srv = Server()
        self.addCleanup(srv.cleanup)
        self.unprivileged(srv)
        name, path = self.make_read_only(srv)
        srv.start()

        def ready():
            status, _, body = http_get(srv.http_port, "/readyz")[:3]
            return status, json.loads(body)

        deadline = time.monotonic() + 5
        while not ready()[1]["store"]:
            self.assertLess(time.monotonic(), deadline, "the store never answered")
            time.sleep(0.1)
        status, body = ready()
        self.assertEqual((status, body["ready"], body["database_writable"]), (503, False, False), body)
        self.assertEqual(http_get(srv.http_port, "/healthz")[0], 200)
        # a registration is refused with an answer, and the server goes on
        ws = connect(srv.chat_port)
        self.addCleanup(ws.abort)
        reply = register(ws, uniq("new"))
        self.assertEqual(reply.get("valid"), False, reply)
        self.assertEqual(reply.get("error"), "Service temporarily unavailable.", reply)
        # so is a login (it starts a session), though the user is found
        self.assertEqual(login(ws, name), {"valid": False, "event": 1,
                                           "error": "Service temporarily unavailable."})
        srv.check()
        self.assertIn("event=database_read_only", srv.log_text())
        self.assertIn("database is read-only", srv.log_text(), "the store says why the write failed")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o444)
        srv.stop()

    def test_store_role_names_the_read_only_database(self):
        srv = Server()
        self.addCleanup(srv.cleanup)
        binary = self.unprivileged(srv)
        _, path = self.make_read_only(srv)
        port, endpoint = free_port(), "tcp://%s:%d" % (HOST, free_port())
        cmd = [binary, "store", "--store-endpoint", endpoint, "--data-dir", srv.data_dir,
               "--bind", HOST, "--metrics-port", str(port)]
        if os.geteuid() == 0:
            cmd = SETPRIV + cmd
        with open(os.path.join(srv.tmp, "store.log"), "wb") as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, cwd=srv.tmp)
        self.addCleanup(proc.kill)
        deadline = time.monotonic() + 10
        while True:
            try:
                status, _, body = http_get(port, "/readyz")[:3]
                break
            except OSError:
                self.assertIsNone(proc.poll(), "the store exited")
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.1)
        ready = json.loads(body)
        self.assertEqual(status, 503, ready)
        self.assertEqual(ready, {"ready": False, "store": True, "database_writable": False,
                                 "database": path, "reason": "database is read-only"})
        self.assertEqual(http_get(port, "/healthz")[0], 200)
        self.assertEqual(value(parse_metrics(http_get(port, "/metrics")[2].decode()), "qms_store_writable"), 0)
        proc.terminate()
        self.assertEqual(proc.wait(10), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
