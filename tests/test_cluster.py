"""The cluster: one role per process on loopback tcp:// endpoints.

Store, auth, router, a monitor and two gateways run as separate processes of
the real binary; users on different gateways see and message each other, a
login through one gateway closes the older session on the other, the monitor
shows every actor's lines, every role stops on SIGTERM with 0 within 5 s,
`--health` answers for each role and fails once it is down, and a role
refuses inproc:// endpoints.  Also: scripts/local-cluster, and compose.yml
validated with docker-compose (which must be installed)."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmslib import (BINARY, HOST, HTML_DIR, SANITIZER_MARKERS, SOURCE_DIR, Client, QmsTestCase,
                    connect, free_port, http_get, login, names_of, port_open, uniq, wait_userlist)

START_TIMEOUT = 15.0
STOP_LIMIT = 5.0          # SIGTERM to exit, for every role
FAST_ARGON2 = ["--argon2-memory", "256", "--argon2-iterations", "1"]


def run(args, env=None, timeout=20, prefix=()):
    """Run the binary to completion (behind prefix, a command that execs it,
    such as `ip netns exec NS`): (exit code, stdout, stderr)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    p = subprocess.run(list(prefix) + [BINARY] + args, stdin=subprocess.DEVNULL, capture_output=True,
                       env=full_env, timeout=timeout)
    out, err = p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
    for marker in SANITIZER_MARKERS:
        if marker in err:
            raise AssertionError("qmessageserver %s: sanitizer report (%r)\n%s" % (" ".join(args), marker, err))
    return p.returncode, out, err


class Cluster:
    """Every role as its own process, on free loopback ports."""

    def __init__(self, gateways=2, shared_port=False):
        self.tmp = tempfile.mkdtemp(prefix="qms-cluster-")
        self.data_dir = os.path.join(self.tmp, "data")
        os.makedirs(self.data_dir)
        self.env = {
            "QMS_STORE_ENDPOINT": "tcp://%s:%d" % (HOST, free_port()),
            "QMS_AUTH_ENDPOINT": "tcp://%s:%d" % (HOST, free_port()),
            "QMS_ROUTER_ENDPOINT": "tcp://%s:%d" % (HOST, free_port()),
            "QMS_LOG_ENDPOINT": "tcp://%s:%d" % (HOST, free_port()),
        }
        self.shared_port = shared_port
        if shared_port:
            # every gateway on the same chat and HTTP ports (--reuse-port)
            self.gateway_ports = [(free_port(), free_port())] * gateways
        else:
            self.gateway_ports = [(free_port(), free_port()) for _ in range(gateways)]
        self.procs = {}       # name -> Popen
        self.logs = {}        # name -> path of its stderr (and stdout, but for the monitor)
        self.monitor_out = os.path.join(self.tmp, "monitor.out")

    # -- processes ---------------------------------------------------------

    def role_args(self, name):
        if name.startswith("gateway"):
            chat, http = self.gateway_ports[int(name[7:]) - 1]
            return ["gateway", "--bind", HOST, "-cp", str(chat), "-hp", str(http),
                    "--html-dir", HTML_DIR] + (["--reuse-port"] if self.shared_port else [])
        if name == "store":
            return ["store", "--data-dir", self.data_dir]
        if name in ("auth", "router"):
            return [name] + FAST_ARGON2
        return ["monitor"]

    def health_args(self, name):
        if name.startswith("gateway"):
            return ["--health", "gateway", "--bind", HOST, "-hp",
                    str(self.gateway_ports[int(name[7:]) - 1][1])]
        return ["--health", name]

    def prefix(self, name):
        """What runs a role's process (it execs the binary): nothing here."""
        return []

    def health(self, name, timeout=20):
        return run(self.health_args(name), self.env, timeout, self.prefix(name))

    def start(self, name):
        env = dict(os.environ)
        env.update(self.env)
        log_path = os.path.join(self.tmp, name + ".log")
        self.logs[name] = log_path
        command = self.prefix(name) + [BINARY] + self.role_args(name)
        with open(log_path, "ab") as log:
            if name == "monitor":
                with open(self.monitor_out, "ab") as out:
                    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                            stdout=out, stderr=log, env=env, cwd=self.tmp)
            else:
                proc = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.tmp)
        self.procs[name] = proc
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise AssertionError("%s exited with %s while starting\n%s"
                                     % (name, proc.returncode, self.log_tail(name)))
            code, _, err = self.health(name)
            if code == 0:
                return proc
            if time.monotonic() > deadline:
                raise AssertionError("%s not healthy within %.0f s: %s\n%s"
                                     % (name, START_TIMEOUT, err, self.log_tail(name)))
            time.sleep(0.1)

    def start_all(self):
        for name in ["monitor", "store", "auth", "router"] + self.gateway_names():
            self.start(name)
        return self

    def gateway_names(self):
        return ["gateway%d" % (i + 1) for i in range(len(self.gateway_ports))]

    def chat_port(self, n):
        return self.gateway_ports[n - 1][0]

    def stop(self, name):
        """SIGTERM; returns (exit code, seconds it took)."""
        proc = self.procs[name]
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(STOP_LIMIT + 5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            raise AssertionError("%s did not exit within %.0f s of SIGTERM\n%s"
                                 % (name, STOP_LIMIT + 5, self.log_tail(name)))
        return code, time.monotonic() - began

    def cleanup(self):
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        if not os.environ.get("QMS_KEEP_TMP"):
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- logs --------------------------------------------------------------

    def read(self, path):
        try:
            with open(path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, name, lines=60):
        text = self.read(self.logs.get(name, "")).splitlines()
        return "----- %s log (last %d lines) -----\n%s\n----- end -----" % (
            name, lines, "\n".join(text[-lines:]))

    def monitor_text(self):
        return self.read(self.monitor_out)

    def check_logs(self):
        for name, path in self.logs.items():
            text = self.read(path)
            for marker in SANITIZER_MARKERS:
                if marker in text:
                    raise AssertionError("%s log shows a sanitizer report (%r)\n%s"
                                         % (name, marker, self.log_tail(name, 300)))

    def dump(self):
        for name in self.logs:
            sys.stderr.write("\n" + self.log_tail(name) + "\n")
        sys.stderr.write("\n----- monitor output -----\n%s\n" % self.monitor_text()[-6000:])


class ClusterCase(QmsTestCase):
    """Starts a cluster for the test; dumps its logs if the test failed."""

    def cluster(self, gateways=2, shared_port=False, make=None):
        """make: a function returning an unstarted Cluster (default: a
        Cluster of `gateways` gateways)."""
        c = make() if make else Cluster(gateways, shared_port)
        failed_before = self._failures()

        def finish():
            try:
                for name in reversed(list(c.procs)):
                    if c.procs[name].poll() is None:
                        c.stop(name)
                c.check_logs()
            finally:
                if self._failures() > failed_before:
                    c.dump()
                c.cleanup()
        self.addCleanup(finish)
        try:
            c.start_all()
        except BaseException:
            c.dump()
            raise
        return c

    def _failures(self):
        outcome = getattr(self, "_outcome", None)
        result = getattr(outcome, "result", None)
        if result is None:
            return 0
        return len(result.failures) + len(result.errors)


class TwoGateways(ClusterCase):

    def test_users_on_two_gateways_see_and_message_each_other(self):
        c = self.cluster()
        a = Client(c.chat_port(1), uniq("alice"), test=self)
        b = Client(c.chat_port(2), uniq("bob"), test=self)
        # each sees both, whichever gateway the other is on
        wait_userlist(a.ws, lambda names: {a.name, b.name} <= names, what="alice sees bob")
        self.assertIn(a.name, names_of(b.reply), "bob's login lists alice, who is on gateway 1")
        a.send(b, "hello from gateway 1")
        b.expect_message(a, "hello from gateway 1")
        b.send(a, "and back from gateway 2")
        a.expect_message(b, "and back from gateway 2")
        # a third user on gateway 1 reaches bob too
        d = Client(c.chat_port(1), uniq("dave"), test=self)
        wait_userlist(b.ws, lambda names: d.name in names, what="bob sees dave")
        d.send(b, "x" * 5000)
        b.expect_message(d, "x" * 5000)
        # leaving is seen across gateways
        a.close()
        wait_userlist(b.ws, lambda names: a.name not in names and d.name in names,
                      what="bob sees alice leave")

    def test_gateways_sharing_one_port(self):
        # two gateway processes listen on the same chat and HTTP ports
        # (SO_REUSEPORT); the kernel spreads connections, and users on either
        # see and reach each other
        c = self.cluster(shared_port=True)
        port = c.chat_port(1)
        self.assertEqual(port, c.chat_port(2))
        clients = [Client(port, uniq("shared%d" % i), test=self) for i in range(16)]
        owners = set()
        for cl in clients:
            local = cl.ws.sock.getsockname()[1]
            out = subprocess.run(["ss", "-Htnp", "state", "established",
                                  "( sport = :%d and dport = :%d )" % (port, local)],
                                 capture_output=True, text=True, timeout=10).stdout
            for pid in re.findall(r"pid=(\d+)", out):
                owners.add(int(pid))
        gateway_pids = {c.procs[n].pid for n in c.gateway_names()}
        self.assertTrue(owners <= gateway_pids, (owners, gateway_pids))
        self.assertEqual(owners, gateway_pids, "both gateways took connections: %s" % owners)
        first, last = clients[0], clients[-1]
        wait_userlist(first.ws, lambda names: last.name in names, what="first sees last")
        for i, cl in enumerate(clients):
            nxt = clients[(i + 1) % len(clients)]
            cl.send(nxt, "round %d" % i)
        for i, cl in enumerate(clients):
            prev = clients[i - 1]
            cl.expect_message(prev, "round %d" % (i - 1 if i else len(clients) - 1))
        self.assertEqual(http_get(c.gateway_ports[0][1], "/")[0], 200)

    def test_login_on_gateway_2_closes_the_session_on_gateway_1(self):
        c = self.cluster()
        a = Client(c.chat_port(1), uniq("alice"), password="pw1", test=self)
        b = Client(c.chat_port(1), uniq("bob"), test=self)
        ws2 = connect(c.chat_port(2))
        self.addCleanup(ws2.abort)
        reply = login(ws2, a.name, "pw1")
        self.assertEqual(reply.get("valid"), True, reply)
        self.assertNotEqual(reply["token"], a.token)
        self.assertEqual(a.ws.expect_close(), 4001, "the older session on gateway 1 is closed with 4001")
        # the new session on gateway 2 receives what bob on gateway 1 sends
        b.send(a, "to your new place")
        msg = ws2.wait_for(lambda m: m.get("event") == 2 and m.get("valid") is True,
                           what="the message on gateway 2")
        self.assertEqual(msg["message"], "to your new place")

    def test_monitor_shows_lines_of_every_actor(self):
        c = self.cluster()
        a = Client(c.chat_port(1), uniq("alice"), test=self)
        b = Client(c.chat_port(2), uniq("bob"), test=self)
        a.send(b, "seen")
        b.expect_message(a, "seen")
        # "HH:MM:SS.mmm LEVEL actor    event=...  [role@host/pid]"
        line = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} (ERROR|WARN |INFO |DEBUG) (\S+) +(.*?)(  \[(\S+)\])?$")
        wanted = {"store", "auth", "router", "gateway", "main", "monitor"}
        deadline = time.monotonic() + 10
        while True:
            text = c.monitor_text()
            actors, sources = set(), set()
            for row in text.splitlines():
                m = line.match(row)
                if m:
                    actors.add(m.group(2))
                    if m.group(5):
                        sources.add(m.group(5).split("@")[0])
            if wanted <= actors and {"store", "auth", "router"} <= sources \
               and len([s for s in sources if s.startswith("gateway:")]) == 2:
                break
            if time.monotonic() > deadline:
                self.fail("the monitor did not show every actor and process: actors %s, sources %s\n%s"
                          % (sorted(actors), sorted(sources), text[-4000:]))
            time.sleep(0.1)
        self.assertIn("event=session_started", text, "the router's line about the login")
        self.assertIn("event=socket_accepted", text, "the monitor's own socket events")
        self.assertNotIn("\x1b[", text, "no colour when the output is not a terminal")
        for row in text.splitlines():
            self.assertRegex(row, line, "every monitor line has time, level and actor")

    def test_filtered_monitor(self):
        c = self.cluster(gateways=1)
        log_endpoint = "tcp://%s:%d" % (HOST, free_port())
        env = dict(os.environ, **c.env)
        env["QMS_LOG_ENDPOINT"] = log_endpoint
        out_path = os.path.join(c.tmp, "filtered.out")
        with open(out_path, "wb") as out:
            mon = subprocess.Popen([BINARY, "monitor", "--filter-actor", "router", "--filter-level", "info"],
                                   stdout=out, stderr=subprocess.DEVNULL, env=env)
        extra = None
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while run(["--health", "monitor"], {"QMS_LOG_ENDPOINT": log_endpoint})[0] != 0:
                self.assertLess(time.monotonic(), deadline, "the filtered monitor did not start")
            # a second router (on its own endpoint) publishing to this monitor:
            # a monitor that is up gets even its first lines, and only the
            # router's lines at info or above show
            extra = subprocess.Popen([BINARY, "router", "--router-endpoint",
                                      "tcp://%s:%d" % (HOST, free_port())],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            text = ""
            while "event=started" not in text:
                self.assertLess(time.monotonic(), deadline, "no router line in the filtered monitor: %r" % text)
                time.sleep(0.05)
                text = c.read(out_path)
            extra.send_signal(signal.SIGTERM)
            self.assertEqual(extra.wait(STOP_LIMIT), 0)
            while "event=stopped" not in text:
                self.assertLess(time.monotonic(), deadline + 5, "no stop line: %r" % text)
                time.sleep(0.05)
                text = c.read(out_path)
            for row in text.splitlines():
                self.assertRegex(row, r"^\S+ (ERROR|WARN |INFO ) router ", "only the router's lines")
        finally:
            if extra is not None and extra.poll() is None:
                extra.kill()
                extra.wait()
            mon.send_signal(signal.SIGTERM)
            self.assertEqual(mon.wait(STOP_LIMIT), 0)


class Lifecycle(ClusterCase):

    def test_health_of_every_role_then_sigterm_each_and_health_fails(self):
        c = self.cluster()
        for name in ["store", "auth", "router", "gateway1", "gateway2", "monitor"]:
            code, out, err = c.health(name)
            self.assertEqual(code, 0, "%s: %s %s" % (name, out, err))
            self.assertIn("healthy", out)
        # the router's probes (one while it started, one here) were not taken
        # for gateways: it met exactly the two real ones
        router_log = c.read(c.logs["router"])
        self.assertEqual(router_log.count("event=gateway_new"), 2, router_log[-3000:])
        # a user, so that the store has something to close
        Client(c.chat_port(1), uniq("alice"), test=self).close()
        # stop in the order of the data flow; each stops at once and cleanly
        for name in ["gateway2", "gateway1", "router", "auth", "store", "monitor"]:
            code, took = c.stop(name)
            self.assertEqual(code, 0, "%s exit code after SIGTERM\n%s" % (name, c.log_tail(name)))
            self.assertLess(took, STOP_LIMIT, "%s took %.1f s to stop" % (name, took))
            began = time.monotonic()
            code, out, err = c.health(name)
            self.assertNotEqual(code, 0, "--health %s after it stopped: %s" % (name, out))
            self.assertIn("not healthy", err)
            self.assertLess(time.monotonic() - began, 5, "--health gives up after about 2 s")
        for name in ["store", "auth", "router"]:
            self.assertIn("event=exit status=0", c.read(c.logs[name]))

    def test_sigint_stops_a_role_too(self):
        c = Cluster(gateways=0)
        self.addCleanup(c.cleanup)
        c.start("store")
        c.procs["store"].send_signal(signal.SIGINT)
        self.assertEqual(c.procs["store"].wait(STOP_LIMIT), 0)

    def test_a_store_that_cannot_bind_exits_1(self):
        busy = socket.socket()
        busy.bind((HOST, 0))
        busy.listen()
        self.addCleanup(busy.close)
        with tempfile.TemporaryDirectory() as tmp:
            code, _, err = run(["store", "--data-dir", tmp, "--store-endpoint",
                                "tcp://%s:%d" % (HOST, busy.getsockname()[1])])
        self.assertEqual(code, 1, err)


class Options(QmsTestCase):

    def test_inproc_endpoints_are_refused_outside_all(self):
        clean = {k: "" for k in ("QMS_STORE_ENDPOINT", "QMS_AUTH_ENDPOINT", "QMS_ROUTER_ENDPOINT",
                                 "QMS_LOG_ENDPOINT")}
        tcp = "tcp://%s:%d" % (HOST, free_port())
        cases = [
            ["store"],                                                   # the default is inproc
            ["auth", "--auth-endpoint", tcp],                            # its store is inproc
            ["router", "--store-endpoint", tcp],                         # itself inproc
            ["gateway", "--router-endpoint", tcp],                       # auth inproc
            ["store", "--store-endpoint", tcp, "--log-endpoint", "inproc://logs"],
            ["monitor", "--log-endpoint", "inproc://logs"],
            ["--health", "store"],
            ["--health", "router", "--router-endpoint", "inproc://qms-router"],
        ]
        for args in cases:
            with self.subTest(args=args):
                code, out, err = run(args, clean)
                self.assertEqual(code, 2, "%s: %s %s" % (args, out, err))
                self.assertIn("inproc://", err)
                self.assertIn("tcp://", err, "the message says what to give instead")
        # and from the environment just the same
        code, _, err = run(["store"], {"QMS_STORE_ENDPOINT": "inproc://x"})
        self.assertEqual(code, 2, err)

    def test_bad_endpoints_and_missing_log_endpoint(self):
        clean = {"QMS_LOG_ENDPOINT": ""}
        code, _, err = run(["monitor"], clean)
        self.assertEqual(code, 2)
        self.assertIn("--log-endpoint", err)
        for args in (["gateway", "--auth-endpoint", "tcp://*:5555", "--router-endpoint", "tcp://127.0.0.1:1"],
                     ["store", "--store-endpoint", "udp://127.0.0.1:5"],
                     ["auth", "--auth-endpoint", "tcp://127.0.0.1", "--store-endpoint", "tcp://127.0.0.1:2"]):
            with self.subTest(args=args):
                code, _, err = run(args, clean)
                self.assertEqual(code, 2, err)
        # the default role is still all, and still refuses stray words
        self.assertEqual(run(["stray"])[0], 2)

    def test_flags_override_the_environment(self):
        with tempfile.TemporaryDirectory() as tmp:
            live = "tcp://%s:%d" % (HOST, free_port())
            dead = "tcp://%s:%d" % (HOST, free_port())
            store = subprocess.Popen([BINARY, "store", "--data-dir", tmp],
                                     env=dict(os.environ, QMS_STORE_ENDPOINT=live),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                deadline = time.monotonic() + START_TIMEOUT
                while run(["--health", "store"], {"QMS_STORE_ENDPOINT": live})[0] != 0:
                    self.assertIsNone(store.poll(), "the store exited")
                    self.assertLess(time.monotonic(), deadline, "store not healthy")
                    time.sleep(0.1)
                code, out, _ = run(["--health", "store", "--store-endpoint", live],
                                   {"QMS_STORE_ENDPOINT": dead})
                self.assertEqual(code, 0, out)
                code, _, err = run(["--health", "store", "--store-endpoint", dead],
                                   {"QMS_STORE_ENDPOINT": live})
                self.assertEqual(code, 1, err)
            finally:
                store.send_signal(signal.SIGTERM)
                self.assertEqual(store.wait(STOP_LIMIT), 0)

    def test_a_host_name_is_bound_where_it_resolves(self):
        # "localhost" is what the others connect to; the store binds 127.0.0.1
        with tempfile.TemporaryDirectory() as tmp:
            port = free_port()
            env = dict(os.environ, QMS_STORE_ENDPOINT="tcp://localhost:%d" % port)
            store = subprocess.Popen([BINARY, "store", "--data-dir", tmp], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                deadline = time.monotonic() + START_TIMEOUT
                while not port_open(port):
                    self.assertIsNone(store.poll(), "the store exited")
                    self.assertLess(time.monotonic(), deadline)
                    time.sleep(0.05)
                self.assertEqual(run(["--health", "store"], {"QMS_STORE_ENDPOINT": "tcp://localhost:%d" % port})[0], 0)
                listening = subprocess.run(["ss", "-ltnH", "sport = :%d" % port], capture_output=True,
                                           text=True).stdout if shutil.which("ss") else ""
                if listening:
                    self.assertIn("127.0.0.1:%d" % port, listening)
            finally:
                store.send_signal(signal.SIGTERM)
                self.assertEqual(store.wait(STOP_LIMIT), 0)
        code, _, err = run(["store", "--store-endpoint", "tcp://no-such-host.invalid:5555"])
        self.assertEqual(code, 1, err)
        self.assertIn("does not resolve", err)


def free_range(count_from_base):
    """A base port with base..base+count_from_base free (below the ephemeral range)."""
    import random
    for _ in range(200):
        base = random.randrange(20000, 30000 - count_from_base)
        ok = True
        for port in range(base, base + count_from_base + 1):
            s = socket.socket()
            try:
                s.bind((HOST, port))
            except OSError:
                ok = False
            finally:
                s.close()
            if not ok:
                break
        if ok:
            return base
    raise RuntimeError("no free port range")


class LocalClusterScript(QmsTestCase):

    def start_script(self, gateways=2):
        base = free_range(11 + 2 * gateways)
        tmp = tempfile.mkdtemp(prefix="qms-local-cluster-")
        self.addCleanup(shutil.rmtree, tmp, True)
        out = open(os.path.join(tmp, "out"), "wb")
        err_path = os.path.join(tmp, "err")
        err = open(err_path, "wb")
        self.addCleanup(out.close)
        self.addCleanup(err.close)
        proc = subprocess.Popen([os.path.join(SOURCE_DIR, "scripts", "local-cluster"),
                                 "--gateways", str(gateways), "--base-port", str(base),
                                 "--data-dir", os.path.join(tmp, "data"), "--"] + FAST_ARGON2,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                env=dict(os.environ, QMS_BINARY=BINARY), start_new_session=True)

        def finish():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self.addCleanup(finish)
        deadline = time.monotonic() + 60
        text = ""
        while "gateway%d " % gateways not in text:
            self.assertIsNone(proc.poll(), "local-cluster exited: %s" % text)
            self.assertLess(time.monotonic(), deadline, "local-cluster did not start: %s" % text)
            time.sleep(0.1)
            with open(err_path, "rb") as f:
                text = f.read().decode()
        pids = {m.group(1): int(m.group(2)) for m in re.finditer(r"^  (\w+) +(\d+) ", text, re.M)}
        self.assertEqual(set(pids), {"store", "auth", "router", "monitor"}
                         | {"gateway%d" % (i + 1) for i in range(gateways)}, text)
        return proc, base, pids, err_path, os.path.join(tmp, "out")

    def alive(self, pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        # a zombie is gone for our purposes
        try:
            with open("/proc/%d/stat" % pid) as f:
                return f.read().split(") ")[1][0] != "Z"
        except OSError:
            return False

    def test_starts_every_role_and_ctrl_c_stops_them(self):
        proc, base, pids, err_path, out_path = self.start_script(gateways=2)
        with open(err_path) as f:
            table = f.read()
        self.assertIn("ws://127.0.0.1:%d/" % (base + 10), table)
        self.assertIn("http://127.0.0.1:%d/" % (base + 13), table)
        a = Client(base + 10, uniq("alice"), test=self)
        b = Client(base + 12, uniq("bob"), test=self)
        a.send(b, "through the local cluster")
        b.expect_message(a, "through the local cluster")
        # the store's, auth's and router's own ports
        for offset in (4, 5, 6):
            self.assertIn("http://127.0.0.1:%d/metrics" % (base + offset), table)
            self.assertEqual(http_get(base + offset, "/readyz")[0], 200)
        self.assertIn(b"qms_store_rows", http_get(base + 4, "/metrics")[2])
        os.killpg(proc.pid, signal.SIGINT)     # what Ctrl-C does
        self.assertEqual(proc.wait(15), 0)
        for name, pid in pids.items():
            self.assertFalse(self.alive(pid), "%s (pid %d) still runs" % (name, pid))
        with open(out_path) as f:
            merged = f.read()
        self.assertIn("event=session_started", merged, "the monitor's tail is on stdout")
        self.assertIn("gateway:%d@" % (base + 12), merged)

    def test_when_one_dies_the_script_says_which_and_stops_the_rest(self):
        proc, base, pids, err_path, _ = self.start_script(gateways=2)
        os.kill(pids["gateway2"], signal.SIGKILL)
        self.assertEqual(proc.wait(15), 1)
        with open(err_path) as f:
            text = f.read()
        self.assertIn("gateway2 (pid %d) exited" % pids["gateway2"], text)
        for name, pid in pids.items():
            self.assertFalse(self.alive(pid), "%s (pid %d) still runs" % (name, pid))


class Compose(unittest.TestCase):

    def docker_compose(self):
        path = shutil.which("docker-compose") or ("/usr/bin/docker-compose"
                                                  if os.path.exists("/usr/bin/docker-compose") else None)
        if not path:
            self.fail("docker-compose is not installed, so compose.yml cannot be validated: "
                      "apt-get install -y --no-install-recommends docker-compose "
                      "(scripts/test installs it)")
        return path

    def test_compose_file_is_valid(self):
        dc = self.docker_compose()
        compose = os.path.join(SOURCE_DIR, "compose.yml")
        p = subprocess.run([dc, "-f", compose, "config", "-q"], capture_output=True, text=True,
                           cwd=SOURCE_DIR, timeout=120)
        self.assertEqual(p.returncode, 0, "docker-compose config -q: %s%s" % (p.stdout, p.stderr))
        p = subprocess.run([dc, "-f", compose, "config", "--services"], capture_output=True, text=True,
                           cwd=SOURCE_DIR, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        services = set(p.stdout.split())
        self.assertTrue({"store", "auth", "router", "gateway", "monitor", "lb"} <= services, services)
        p = subprocess.run([dc, "-f", compose, "config"], capture_output=True, text=True,
                           cwd=SOURCE_DIR, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        normalized = p.stdout
        self.assertIn("service_healthy", normalized)
        self.assertIn("--health", normalized)

    def test_front_follows_the_published_ports(self):
        """The chat port the web UI is told is the one lb publishes, the
        front publishes HTTPS, its health check is its own, and the open-file
        limits are set (docs/DEPLOY.md)."""
        dc = self.docker_compose()
        env = dict(os.environ, QMS_CHAT_PORT="2345", QMS_HTTPS_PORT="4433", QMS_HTTP_PORT="8088",
                   QMS_PUBLIC_HOST="chat.example.org", QMS_NOFILE="30000")
        p = subprocess.run([dc, "-f", os.path.join(SOURCE_DIR, "compose.yml"), "config"],
                           capture_output=True, text=True, cwd=SOURCE_DIR, env=env, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        text = p.stdout
        gateway = text[text.index("\n  gateway:"):text.index("\n  lb:")]
        lb = text[text.index("\n  lb:"):text.index("\n  monitor:")]
        self.assertRegex(gateway, r"- -cp\n    - '2345'\n")
        self.assertRegex(gateway, r"- -serverIp\n    - chat.example.org\n")
        for published in ("2345", "4433", "8088"):
            self.assertRegex(lb, r"published: %s|- %s:" % (published, published))
        self.assertIn("lb-entrypoint", lb)
        self.assertIn("QMS_CHAT_PORT: '2345'", lb)
        for service in (gateway, lb):
            self.assertRegex(service, r"nofile:\n        hard: 30000\n        soft: 30000")

    def test_dockerfile(self):
        with open(os.path.join(SOURCE_DIR, "Dockerfile")) as f:
            text = f.read().replace("\\\n", " ")     # join continued lines
        self.assertRegex(text, r"(?m)^FROM debian:bookworm AS build")
        self.assertRegex(text, r"(?m)^FROM debian:bookworm-slim")
        self.assertRegex(text, r"(?m)^HEALTHCHECK .*--health")
        self.assertRegex(text, r"(?m)^USER ")
        self.assertRegex(text, r"(?m)^VOLUME .*/data")


if __name__ == "__main__":
    unittest.main(verbosity=2)
