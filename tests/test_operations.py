"""Operations: /healthz, /readyz and /metrics against the real server.

The figures must move as traffic flows: the test parses the Prometheus text
exposition and checks the counters after an exchange whose size it knows.
/readyz must fail while the store is away (a cluster with the store as its
own process) and recover when it is back.  A database that may not be
written (users.db mode 0444, the server run as an unprivileged user, since
root writes anyway) is served read-only with /readyz 503.
"""

import json
import os
import re
import stat
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmslib import Client, QmsTestCase, Server, connect, http_get, login, register, uniq  # noqa: E402
from test_cluster import ClusterCase  # noqa: E402

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


class ReadOnlyDatabase(QmsTestCase):
    """users.db that may not be written.  Root writes any file whatever its
    mode, so as root the server runs as nobody (setpriv), in a data
    directory that user owns."""

    def unprivileged(self, srv):
        if os.geteuid() == 0:
            os.chmod(srv.tmp, 0o755)
            os.chown(srv.data_dir, 65534, 65534)
            args = srv.args
            srv.args = lambda: SETPRIV + args()

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


if __name__ == "__main__":
    unittest.main(verbosity=2)
