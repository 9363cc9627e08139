"""CURVE on the links between roles: a cluster whose every role loads the
deployment's keys (--curve-keys, made by `qmessageserver keys`) works as
before, and a rogue process on the cluster's network, a gateway without the
keys or with another deployment's, gets nothing through: its users cannot
register, the actors log the refusal, and the health probe without keys
fails.  (docs/CLUSTER.md, "Links between roles".)"""
import os
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmslib import BINARY, HOST, HTML_DIR, Client, connect, free_port, register, uniq
from test_cluster import Cluster, ClusterCase, run


def make_keys(directory):
    code, out, err = run(["keys", directory])
    assert code == 0, err
    return directory


class CurveCluster(Cluster):
    def __init__(self, gateways=2):
        super().__init__(gateways)
        self.keys = make_keys(os.path.join(self.tmp, "keys"))
        self.env["QMS_CURVE_KEYS"] = self.keys


class Curve(ClusterCase):

    def rogue_gateway(self, c, keys):
        """A gateway process of its own, with keys (a directory, or "" for
        none), pointed at the cluster's actors."""
        chat, http = free_port(), free_port()
        env = dict(os.environ)
        env.update(c.env)
        env["QMS_CURVE_KEYS"] = keys
        log = open(os.path.join(c.tmp, "rogue-%d.log" % chat), "wb")
        proc = subprocess.Popen([BINARY, "gateway", "--bind", HOST, "-cp", str(chat), "-hp", str(http),
                                 "--html-dir", HTML_DIR], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=env, cwd=c.tmp)

        def stop():
            proc.kill()
            proc.wait(5)
            log.close()
        self.addCleanup(stop)
        deadline = time.monotonic() + 10
        while True:
            try:
                return connect(chat)
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)

    def test_a_keyed_cluster_works_across_gateways(self):
        c = self.cluster(make=lambda: CurveCluster(2))
        a = Client(c.chat_port(1), uniq("alice"), test=self)
        b = Client(c.chat_port(2), uniq("bob"), test=self)
        a.send(b, "over CURVE")
        b.expect_message(a, "over CURVE")
        b.send(a, "and back")
        a.expect_message(b, "and back")
        # the monitor's link is keyed too, and it still hears every role
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "gateway_hello" not in c.monitor_text():
            time.sleep(0.1)
        self.assertIn("gateway_hello", c.monitor_text())

    def test_a_rogue_gateway_gets_nothing_through(self):
        c = self.cluster(make=lambda: CurveCluster(1))
        stranger = make_keys(os.path.join(c.tmp, "other-keys"))
        for keys, what in (("", "no keys"), (stranger, "another deployment's keys")):
            with self.subTest(what):
                ws = self.rogue_gateway(c, keys)
                reply = register(ws, uniq("mallory"), "secret-pw", "pk")
                ws.abort()
                self.assertFalse(reply.get("valid"), "a user registered through a gateway with %s" % what)
                self.assertEqual(reply.get("error"), "Service temporarily unavailable.", reply)
        # the actors said whom they refused
        for role in ("auth", "router"):
            self.assertIn("event=peer_refused", c.read(c.logs[role]), "%s logged no refusal" % role)
        # and the real gateway is unaffected
        a = Client(c.chat_port(1), uniq("alice"), test=self)
        b = Client(c.chat_port(1), uniq("bob"), test=self)
        a.send(b, "still here")
        b.expect_message(a, "still here")

    def test_the_health_probe_needs_the_keys(self):
        c = self.cluster(make=lambda: CurveCluster(1))
        code, _, _ = c.health("router")
        self.assertEqual(code, 0)
        env = dict(c.env)
        env["QMS_CURVE_KEYS"] = ""
        code, out, err = run(c.health_args("router"), env, 20)
        self.assertNotEqual(code, 0, "a probe without keys reached the router: %s %s" % (out, err))

    def test_keys_command(self):
        d = tempfile.mkdtemp(prefix="qms-keys-")
        keys = os.path.join(d, "k")
        code, out, err = run(["keys", keys])
        self.assertEqual(code, 0, err)
        for name in ("server.cert", "server.cert_secret", "client.cert", "client.cert_secret",
                     "clients/client.cert"):
            self.assertTrue(os.path.exists(os.path.join(keys, name)), name)
        self.assertEqual(os.stat(os.path.join(keys, "server.cert_secret")).st_mode & 0o777, 0o600)
        code, _, err = run(["keys", keys])
        self.assertEqual(code, 1)
        self.assertIn("holds keys already", err)
        code, _, err = run(["keys"])
        self.assertEqual(code, 2)
        # a role given a directory without keys refuses to start
        code, _, err = run(["router", "--curve-keys", os.path.join(d, "none"),
                            "--router-endpoint", "tcp://%s:%d" % (HOST, free_port()),
                            "--store-endpoint", "tcp://%s:%d" % (HOST, free_port())])
        self.assertEqual(code, 2)
        self.assertIn("no key set", err)
        subprocess.run(["rm", "-rf", d])


if __name__ == "__main__":
    unittest.main(verbosity=2)
