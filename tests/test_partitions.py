"""Network partitions: each role in its own network namespace, links cut and healed.

Where tests/test_cluster_faults.py kills processes, this file keeps every
process running and cuts the network between them, as a failed switch port
or cable would: store, auth, router and two gateways each run the real
binary in a network namespace of their own (ip-netns(8)), on tcp://
endpoints at the namespaces' addresses.

Topology (docs/CLUSTER.md, "Network partitions"):

    cluster network 10.213.0.0/24: a bridge (ip-link(8) type bridge) in a
    namespace of its own; each role's namespace has a veth
    pair (veth(4)) into it: store .1, auth .2, router .3, gateway 1 .11,
    gateway 2 .12.

    client network: each gateway's namespace also has a veth pair to the
    root namespace (10.213.X.4i+1 here, 10.213.X.4i+2 in the gateway, a /30
    each; X from this process's pid), where this test's clients are.

A partition takes the bridge's end of a role's veth down (ip link set ...
down in the bridge's namespace): the role's interface loses its carrier,
packets are dropped both ways, no socket is told anything (TCP keeps
retransmitting), exactly as when a cable is pulled.  Healing sets it up
again.  The clients' links are never cut: a gateway cut from the cluster
still talks to its clients, which is what makes the cases interesting.

- GatewayCut: gateway 1 cut from everything behind it.  Its users get
  "Service temporarily unavailable." for what they send within a bound;
  they then reconnect to gateway 2 with their tokens, as a client would.
  Every message acknowledged "delivered" or "stored", before or during the
  cut, reaches its recipient (online, or at a login for one offline).
  After the heal gateway 1's /readyz is 200 again and new users on it
  reach users on gateway 2.
- StoreCut: the store cut.  A message to an offline user is refused
  "unavailable" within a bound (never acknowledged and lost); live messages
  between online users keep flowing; after the heal messages to offline
  users are stored again and arrive at the recipient's login.
- FlappingLink: gateway 1's link goes down and up every second or so for
  about 10 s under traffic both ways; then the cluster converges, nothing
  acknowledged is lost, every process still runs and exits 0 on SIGTERM.

Recovery times are printed at the end.  Needs root and ip-netns(8): without
them the file exits with 77, which CTest reports as skipped (the test's
SKIP_RETURN_CODE).  Every namespace, link and process is removed at the end,
also when a test fails; namespaces left by a run that was killed (their
names carry the pid of a test process no longer running) are removed at the
start.

Run: QMS_BINARY=build/qmessageserver python3 tests/test_partitions.py
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmslib import (AUTHORIZE, EV_AUTHORIZATION, EV_INVALID_USER, EV_LOGIN, EV_MESSAGE,
                    HTML_DIR, LOGIN, MESSAGE, REGISTER, HandshakeError,
                    QmsTestCase, WebSocketClosed, connect, free_port, http_get, uniq)
from test_cluster import FAST_ARGON2, STOP_LIMIT, Cluster  # noqa: E402

SKIP = 77
EV_ACK = 5
UNAVAILABLE = "Service temporarily unavailable."
PASSWORD = "netns-pw"

# Bounds asserted (the design, docs/CLUSTER.md "Recovery": a gateway hears
# from the router every second and takes it for gone after 3 s; the router
# gives a gateway up after 6 s; the router times a store request out after
# 5 s).  Heal bounds leave room for TCP's retransmission backoff: the first
# packet after a heal may wait for the next retransmission of a socket that
# has been retrying since the cut.
CUT_TOLD = 5.0            # cut -> a client of the cut gateway is told "unavailable"
STORE_CUT_TOLD = 8.0      # store cut -> a message to an offline user refused
HEAL_READY = 25.0         # heal -> /readyz 200 again
HEAL_FLOWING = 25.0       # heal -> messages cross again
DELIVERY = 25.0           # an acknowledged message reaches its recipient

MEASURED = []


def measured(what, seconds):
    MEASURED.append((what, seconds))
    sys.stderr.write("  [measured] %-66s %6.2f s\n" % (what, seconds))
    return seconds


def tearDownModule():
    if MEASURED:
        sys.stderr.write("\nMeasured (seconds):\n")
        for what, seconds in MEASURED:
            sys.stderr.write("  %-70s %6.2f\n" % (what, seconds))


# ---------------------------------------------------------------------------
# Namespaces and links

PREFIX = "qp"                       # namespaces qp<pid>-<role>, root links qf<pid>g<n>
NS_RE = re.compile(r"^qp(\d+)-[a-z0-9]+$")
LINK_RE = re.compile(r"^qf(\d+)g\d$")


def ip(*args, check=True):
    p = subprocess.run(["ip"] + list(args), stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=20)
    if check and p.returncode != 0:
        raise AssertionError("ip %s: exit %d: %s" % (" ".join(args), p.returncode,
                                                     p.stderr.decode("utf-8", "replace").strip()))
    return p.returncode, p.stdout.decode("utf-8", "replace")


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale():
    """Namespaces and root links of earlier runs whose test process is gone."""
    _, out = ip("netns", "list", check=False)
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        m = NS_RE.match(name)
        if m and not pid_alive(int(m.group(1))):
            ip("netns", "pids", name, check=False)
            ip("netns", "del", name, check=False)
    _, out = ip("-o", "link", "show", check=False)
    for line in out.splitlines():
        fields = line.split(":")
        if len(fields) > 1:
            name = fields[1].strip().split("@")[0]
            m = LINK_RE.match(name)
            if m and not pid_alive(int(m.group(1))):
                ip("link", "del", name, check=False)


def netns_usable():
    """None if this process may make namespaces, veths and bridges; else why not."""
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("ip") is None:
        return "no ip command (iproute2)"
    probe = "%s%d-probe" % (PREFIX, os.getpid())
    code, _ = ip("netns", "add", probe, check=False)
    if code != 0:
        return "ip netns add failed"
    try:
        code, _ = ip("-n", probe, "link", "add", "br0", "type", "bridge", check=False)
        if code != 0:
            return "no bridges in a namespace"
        code, _ = ip("-n", probe, "link", "add", "va", "type", "veth", "peer", "name", "vb", check=False)
        if code != 0:
            return "no veth pairs"
    finally:
        ip("netns", "del", probe, check=False)
    return None


class Topology:
    """The namespaces, the bridge and the links; gone after destroy()."""

    BACKEND = {"store": "10.213.0.1", "auth": "10.213.0.2", "router": "10.213.0.3",
               "gateway1": "10.213.0.11", "gateway2": "10.213.0.12"}

    def __init__(self):
        pid = os.getpid()
        self.pid = pid
        self.bridge_ns = "%s%d-br" % (PREFIX, pid)
        self.ns = {role: "%s%d-%s" % (PREFIX, pid, role.replace("gateway", "gw"))
                   for role in self.BACKEND}
        self.root_links = []
        self.front = {}             # gateway role -> (root address, gateway address)
        self.made = []              # namespaces made, for destroy()

    def _client_subnet(self):
        """The third byte of the client network: from the pid, avoiding any
        10.213.X.0/24 already in use in the root namespace."""
        _, out = ip("-4", "-o", "addr", "show", check=False)
        used = set(int(m) for m in re.findall(r"inet 10\.213\.(\d+)\.", out))
        for k in range(250):
            x = 1 + (self.pid + k) % 250
            if x not in used:
                return x
        raise AssertionError("no free 10.213.X.0/24 for the client network")

    def create(self):
        ip("netns", "add", self.bridge_ns)
        self.made.append(self.bridge_ns)
        ip("-n", self.bridge_ns, "link", "set", "lo", "up")
        ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        ip("-n", self.bridge_ns, "link", "set", "br0", "up")
        for role, addr in self.BACKEND.items():
            ns = self.ns[role]
            ip("netns", "add", ns)
            self.made.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
            port = self.port_name(role)
            ip("-n", self.bridge_ns, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
            ip("-n", self.bridge_ns, "link", "set", port, "master", "br0")
            ip("-n", self.bridge_ns, "link", "set", port, "up")
            ip("-n", ns, "addr", "add", addr + "/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
        x = self._client_subnet()
        for i, role in enumerate(("gateway1", "gateway2")):
            link = "qf%dg%d" % (self.pid, i + 1)
            root_addr, gw_addr = "10.213.%d.%d" % (x, 4 * i + 1), "10.213.%d.%d" % (x, 4 * i + 2)
            ip("link", "add", link, "type", "veth", "peer", "name", "front", "netns", self.ns[role])
            self.root_links.append(link)
            ip("addr", "add", root_addr + "/30", "dev", link)
            ip("link", "set", link, "up")
            ip("-n", self.ns[role], "addr", "add", gw_addr + "/30", "dev", "front")
            ip("-n", self.ns[role], "link", "set", "front", "up")
            self.front[role] = (root_addr, gw_addr)
        return self

    @staticmethod
    def port_name(role):
        return "v-" + role.replace("gateway", "gw")

    def cut(self, role):
        ip("-n", self.bridge_ns, "link", "set", self.port_name(role), "down")
        return time.monotonic()

    def heal(self, role):
        ip("-n", self.bridge_ns, "link", "set", self.port_name(role), "up")
        return time.monotonic()

    def destroy(self):
        for link in self.root_links:
            ip("link", "del", link, check=False)
        self.root_links = []
        for ns in reversed(self.made):
            ip("netns", "del", ns, check=False)
        self.made = []

    def leftovers(self):
        """Names of ours still present (for the test of the teardown)."""
        _, out = ip("netns", "list", check=False)
        left = [l.split()[0] for l in out.splitlines()
                if l.split() and l.split()[0].startswith("%s%d-" % (PREFIX, self.pid))]
        _, out = ip("-o", "link", "show", check=False)
        left += [l.split(":")[1].strip().split("@")[0] for l in out.splitlines()
                 if "qf%dg" % self.pid in l]
        return left


# ---------------------------------------------------------------------------
# The cluster in the namespaces


class NetnsCluster(Cluster):
    """Store, auth, router and two gateways, each its own process of the real
    binary in its own namespace.  Starting, stopping and the logs are
    test_cluster's Cluster's; what differs is where each role runs and
    listens."""

    ROLES = ["store", "auth", "router", "gateway1", "gateway2"]

    def __init__(self, topo):   # not Cluster's: no loopback endpoints, no monitor
        self.topo = topo
        self.tmp = tempfile.mkdtemp(prefix="qms-netns-")
        self.data_dir = os.path.join(self.tmp, "data")
        os.makedirs(self.data_dir)
        self.monitor_out = os.path.join(self.tmp, "monitor.out")
        b = Topology.BACKEND
        # ports from the test library's allocator (each namespace has its
        # own port space, but the rule is the same everywhere)
        self.env = {
            "QMS_STORE_ENDPOINT": "tcp://%s:%d" % (b["store"], free_port()),
            "QMS_AUTH_ENDPOINT": "tcp://%s:%d" % (b["auth"], free_port()),
            "QMS_ROUTER_ENDPOINT": "tcp://%s:%d" % (b["router"], free_port()),
            "QMS_LOG_ENDPOINT": "",
        }
        self.gateway_ports = {"gateway1": (free_port(), free_port()),
                              "gateway2": (free_port(), free_port())}
        self.procs = {}
        self.logs = {}

    # -- addresses -----------------------------------------------------------

    def host(self, g):
        """The address clients use for gateway g (1 or 2)."""
        return self.topo.front["gateway%d" % g][1]

    def chat_port(self, g):
        return self.gateway_ports["gateway%d" % g][0]

    def http_port(self, g):
        return self.gateway_ports["gateway%d" % g][1]

    # -- processes -----------------------------------------------------------

    def role_args(self, name):
        if name.startswith("gateway"):
            chat, http = self.gateway_ports[name]
            return ["gateway", "--bind", self.topo.front[name][1], "-cp", str(chat), "-hp", str(http),
                    "--html-dir", HTML_DIR]
        if name == "store":
            return ["store", "--data-dir", self.data_dir]
        return [name] + FAST_ARGON2

    def health_args(self, name):
        if name.startswith("gateway"):
            return ["--health", "gateway", "--bind", self.topo.front[name][1], "-hp",
                    str(self.gateway_ports[name][1])]
        return ["--health", name]

    def prefix(self, name):
        return ["ip", "netns", "exec", self.topo.ns[name]]

    def start_all(self):
        for name in self.ROLES:
            self.start(name)
        return self

    def assert_running(self):
        for name in self.ROLES:
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                raise AssertionError("%s is not running (exit code %s)\n%s"
                                     % (name, None if proc is None else proc.returncode, self.log_tail(name)))

    # -- HTTP ----------------------------------------------------------------

    def readyz(self, g):
        """(status, body) of gateway g's /readyz, or (None, error)."""
        try:
            status, _, body = http_get(self.http_port(g), "/readyz", host=self.host(g), timeout=2)
            return status, body.decode("utf-8", "replace")
        except OSError as e:
            return None, repr(e)


# ---------------------------------------------------------------------------
# Clients and what they were told


class Ledger:
    """Every message sent with an id, what its sender was told, and what each
    recipient received.  The promise checked: a message acknowledged
    "delivered" or "stored" reaches its recipient."""

    def __init__(self):
        self.sent = {}          # text -> (sender name, recipient name, send time)
        self.acks = {}          # text -> list of ack statuses (or "rejected:<error>")
        self.received = {}      # recipient name -> {text: count}

    def note_sent(self, text, sender, recipient):
        self.sent.setdefault(text, (sender, recipient, time.monotonic()))

    def note_ack(self, text, status):
        self.acks.setdefault(text, []).append(status)

    def note_received(self, name, text):
        got = self.received.setdefault(name, {})
        got[text] = got.get(text, 0) + 1

    def acknowledged(self):
        """texts acknowledged delivered or stored (at least once)."""
        return [t for t, s in self.acks.items() if "delivered" in s or "stored" in s]

    def missing(self):
        out = []
        for text in self.acknowledged():
            sender, recipient, _ = self.sent[text]
            if text not in self.received.get(recipient, {}):
                out.append((text, self.acks[text]))
        return out

    def duplicates(self):
        return sum(n - 1 for got in self.received.values() for n in got.values() if n > 1)

    def summary(self):
        counts = {}
        for statuses in self.acks.values():
            for s in statuses:
                counts[s] = counts.get(s, 0) + 1
        return counts


class Peer:
    """A user; its connection may be on either gateway and is replaced when
    it reconnects (Authorize with its token, as a real client does)."""

    def __init__(self, cluster, ledger, g, prefix):
        self.cluster = cluster
        self.ledger = ledger
        self.name = uniq(prefix)
        self.ws = None
        self.g = None
        self.token = None
        self.id = None
        self.events = []        # (monotonic time, message) of everything read
        self.closed = None      # the WebSocketClosed that ended the connection
        self.count = 0
        self.login(g, REGISTER)

    def _open(self, g):
        if self.ws is not None:
            self.ws.close(wait=0.2)
        self.ws = connect(self.cluster.chat_port(g), host=self.cluster.host(g), timeout=5)
        self.g = g
        self.closed = None

    def login(self, g, action=LOGIN, timeout=15.0):
        self._open(g)
        self.ws.send_json({"action": action, "name": self.name, "password": PASSWORD, "pubKey": "pk"})
        msg = self.read_until(lambda m: m.get("event") == EV_LOGIN, timeout)
        if msg is None or msg.get("valid") is not True:
            raise AssertionError("%s of %s on gateway %d: %r"
                                 % ("register" if action == REGISTER else "login", self.name, g, msg))
        self.token = msg["token"]
        self.id = [u["id"] for u in msg["users"] if u["name"] == self.name][0]
        return msg

    def authorize(self, g, timeout=5.0):
        """Reconnect to gateway g with the token; the answer (or None)."""
        try:
            self._open(g)
        except (OSError, HandshakeError) as e:
            return {"error": repr(e)}
        self.ws.send_json({"action": AUTHORIZE, "token": self.token})
        return self.read_until(lambda m: m.get("event") in (EV_AUTHORIZATION, EV_INVALID_USER), timeout)

    def leave(self):
        self.ws.close(wait=0.2)
        self.ws = None

    def send(self, target, mid=None):
        """Send target a message with a client id (a new one unless mid is
        given: a retry); returns the id."""
        if mid is None:
            self.count += 1
            mid = "%s-%d" % (self.name[-6:], self.count)
        text = "%s->%s %s" % (self.name, target.name, mid)
        self.ledger.note_sent(text, self.name, target.name)
        self.ws.send_json({"action": MESSAGE, "token": self.token, "target": target.id,
                           "message": text, "id": mid})
        return mid

    def text_of(self, target, mid):
        return "%s->%s %s" % (self.name, target.name, mid)

    def _record(self, msg):
        self.events.append((time.monotonic(), msg))
        ev = msg.get("event")
        if ev == EV_MESSAGE and msg.get("valid") is True:
            self.ledger.note_received(self.name, msg.get("message"))
        elif ev == EV_ACK and msg.get("id"):
            text = self.ack_text(msg.get("id"))
            if text is not None:
                status = msg.get("status") if msg.get("valid") is True else \
                    "rejected:%s" % msg.get("error")
                self.ledger.note_ack(text, status)

    def ack_text(self, mid):
        for text, (sender, _, _) in self.ledger.sent.items():
            if sender == self.name and text.endswith(" " + mid):
                return text
        return None

    def poll(self, timeout):
        """Read one message (recorded) or None.  A closed connection: None
        and self.closed is set."""
        if self.ws is None or self.closed is not None:
            time.sleep(min(timeout, 0.05))
            return None
        try:
            msg = self.ws.recv_json(timeout)
        except TimeoutError:
            return None
        except (WebSocketClosed, OSError) as e:
            self.closed = e
            return None
        if isinstance(msg, dict):
            self._record(msg)
            return msg
        return None

    def read_until(self, predicate, timeout):
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            msg = self.poll(remaining)
            if msg is None:
                if self.closed is not None:
                    return None
                continue
            try:
                if predicate(msg):
                    return msg
            except (AttributeError, KeyError, TypeError):
                pass

    def drain(self, quiet=0.2):
        while self.poll(quiet) is not None:
            pass

    def ack_for(self, mid, timeout):
        return self.read_until(lambda m: m.get("event") == EV_ACK and m.get("id") == mid, timeout)


def is_unavailable(msg, event):
    return msg.get("valid") is False and msg.get("event") == event and msg.get("error") == UNAVAILABLE


def is_refusal(msg):
    """A message refused: the gateway's own error event 2, or the router's
    rejected ack."""
    return (msg.get("valid") is False and msg.get("event") in (EV_MESSAGE, EV_ACK)
            and msg.get("error") == UNAVAILABLE)


# ---------------------------------------------------------------------------
# The common frame of every test


class PartitionCase(QmsTestCase):

    def setUp(self):
        super().setUp()
        self.topo = Topology()
        self.addCleanup(self._destroy_topology)
        self.topo.create()
        self.c = NetnsCluster(self.topo)
        self.addCleanup(self._stop_cluster)
        try:
            self.c.start_all()
        except BaseException:
            self.c.dump()
            raise
        self.ledger = Ledger()
        self.peers = []
        self.problems = []

    def _stop_cluster(self):
        failed = self._failed()
        try:
            for name in reversed(self.c.ROLES):
                proc = self.c.procs.get(name)
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in self.c.procs.values():
                try:
                    proc.wait(STOP_LIMIT + 5)
                except subprocess.TimeoutExpired:
                    pass
            if failed:
                self.c.dump()
        finally:
            for p in self.peers:
                if p.ws is not None:
                    p.ws.abort()
            self.c.cleanup()

    def _destroy_topology(self):
        self.topo.destroy()
        left = self.topo.leftovers()
        if left:
            raise AssertionError("left behind after the test: %s" % left)

    def _failed(self):
        outcome = getattr(self, "_outcome", None)
        result = getattr(outcome, "result", None)
        if result is None:
            return False
        return bool(result.failures or result.errors)

    def peer(self, g, prefix):
        p = Peer(self.c, self.ledger, g, prefix)
        self.peers.append(p)
        return p

    def soft(self, ok, text):
        if not ok:
            self.problems.append(text)

    # -- waiting -------------------------------------------------------------

    def pump(self, duration, peers=None):
        """Read every peer's messages for about `duration` seconds."""
        peers = peers or self.peers
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline:
            for p in peers:
                p.poll(0.01)

    def wait_ready(self, g, timeout, since):
        """Seconds from `since` until gateway g's /readyz is 200."""
        last = None
        while time.monotonic() - since < timeout:
            last = self.c.readyz(g)
            if last[0] == 200:
                return time.monotonic() - since
            self.pump(0.2)
        self.fail("gateway %d's /readyz not 200 within %.0f s; last: %r" % (g, timeout, last))

    def assert_delivered(self, sender, target, timeout=10.0, retry_unavailable=False):
        """sender -> target now: ack "delivered" and the message itself.
        With retry_unavailable, a refusal "unavailable" is retried (same id)
        until the timeout.  Returns the seconds it took."""
        began = time.monotonic()
        mid = sender.send(target)
        text = sender.text_of(target, mid)
        while True:
            remaining = began + timeout - time.monotonic()
            self.assertGreater(remaining, 0, "%s -> %s: not delivered within %.0f s; acks %r; last: %s"
                               % (sender.name, target.name, timeout, self.ledger.acks.get(text),
                                  [m for _, m in sender.events[-5:]]))
            msg = sender.read_until(lambda m: (m.get("event") == EV_ACK and m.get("id") == mid)
                                    or is_unavailable(m, EV_MESSAGE), min(remaining, 1.0))
            if msg is None:
                if sender.closed is not None:
                    self.fail("%s's connection closed: %r" % (sender.name, sender.closed))
                continue
            if msg.get("status") == "delivered":
                break
            if retry_unavailable and is_refusal(msg):
                self.pump(0.2)
                sender.send(target, mid)
                continue
            self.fail("%s -> %s: %r" % (sender.name, target.name, msg))
        got = target.read_until(lambda m: m.get("event") == EV_MESSAGE and m.get("message") == text,
                                max(0.5, began + timeout - time.monotonic()))
        self.assertIsNotNone(got, "%s did not receive %r (acked delivered)" % (target.name, text))
        return time.monotonic() - began

    def wait_stored(self, sender, target, timeout=10.0):
        """Send target messages until one is acknowledged "stored": the
        router has taken target for offline (its connection's close reaches
        the router a moment after the client closed it)."""
        began = time.monotonic()
        while True:
            mid = sender.send(target)
            msg = sender.ack_for(mid, timeout)
            if msg is not None and msg.get("status") == "stored":
                return
            self.assertLess(time.monotonic() - began, timeout, "%s -> %s (offline) never stored: %r"
                            % (sender.name, target.name, msg))
            self.pump(0.1)

    def assert_nothing_lost(self, offline=(), timeout=DELIVERY):
        """Every acknowledged message reaches its recipient: online ones are
        read until they have them all; offline ones log in (on gateway 2)
        and get theirs from the store."""
        for p in offline:
            p.login(2)
        deadline = time.monotonic() + timeout
        while self.ledger.missing() and time.monotonic() < deadline:
            self.pump(0.3)
        missing = self.ledger.missing()
        self.assertEqual(missing, [], "%d acknowledged message(s) never reached their recipient: %s"
                         % (len(missing), missing[:8]))
        sys.stderr.write("  ledger: %d sent, acks %s, %d acknowledged and all received, %d duplicate(s)\n"
                         % (len(self.ledger.sent), self.ledger.summary(), len(self.ledger.acknowledged()),
                            self.ledger.duplicates()))

    def finish(self):
        """Every process still runs, answers --health and stops with 0."""
        self.c.assert_running()
        for name in self.c.ROLES:
            code, out, err = self.c.health(name)
            self.assertEqual(code, 0, "--health %s at the end: %s%s\n%s" % (name, out, err, self.c.log_tail(name)))
        for p in self.peers:
            if p.ws is not None:
                p.ws.abort()
                p.ws = None
        for name in ["gateway2", "gateway1", "router", "auth", "store"]:
            code, took = self.c.stop(name)
            self.assertEqual(code, 0, "%s exit code after SIGTERM\n%s" % (name, self.c.log_tail(name)))
            self.assertLess(took, STOP_LIMIT, "%s took %.1f s to stop" % (name, took))
        self.c.check_logs()
        if self.problems:
            self.fail("\n".join(self.problems))


# ---------------------------------------------------------------------------
# The tests


class GatewayCut(PartitionCase):

    def test_gateway_cut_from_the_router(self):
        a1, a2 = self.peer(1, "a1_"), self.peer(1, "a2_")       # on the gateway that is cut
        b1, b2 = self.peer(2, "b1_"), self.peer(2, "b2_")
        away = self.peer(2, "away_")                            # offline: its messages are stored
        away.leave()
        self.wait_stored(a1, away)
        self.assert_delivered(a1, b1)
        self.assert_delivered(b1, a2)

        # traffic the whole time: a1 -> b1 and b2 -> a2 across the gateways,
        # a1 -> away (stored); every 0.2 s
        cut = self.topo.cut("gateway1")
        told, moved = {}, {}
        next_send = 0.0
        while time.monotonic() - cut < CUT_TOLD + 3 and len(moved) < 2:
            now = time.monotonic()
            if now >= next_send:
                for sender, target in ((a1, b1), (b2, a2), (a1, away)):
                    if sender.g == 1 and sender.name in moved:
                        continue
                    sender.send(target)
                next_send = now + 0.2
            for p in (a1, a2, b1, b2):
                msg = p.poll(0.01)
                if msg is not None and p.g == 1 and p.name not in told and is_refusal(msg):
                    told[p.name] = time.monotonic() - cut
            # a1 is told when it sends; a2, which only receives, learns it
            # when it sends too: a client with nothing to send is not told
            if a1.name in told and a2.name not in told and a2.name not in moved:
                a2.send(b2)
            for p in (a1, a2):
                if p.name in told and p.name not in moved:
                    # told "unavailable": reconnect to the other gateway
                    answer = p.authorize(2)
                    self.assertEqual(answer, {"valid": True, "event": EV_AUTHORIZATION},
                                     "%s's token on gateway 2 during the cut" % p.name)
                    moved[p.name] = time.monotonic() - cut
        for p in (a1, a2):
            self.assertIn(p.name, told, "%s (gateway 1) was not told \"%s\" within %.0f s of the cut; "
                          "it saw: %s" % (p.name, UNAVAILABLE, CUT_TOLD + 3, [m for _, m in p.events[-6:]]))
            self.assertLessEqual(told[p.name], CUT_TOLD)
        measured("gateway cut: its client told \"unavailable\" after", told[a1.name])
        measured("gateway cut: its clients reconnected to gateway 2 after", max(moved.values()))
        # on gateway 2 now: both ways with b1 and b2
        self.assert_delivered(a1, b1)
        self.assert_delivered(b2, a2)
        measured("gateway cut: cut to first message delivered from the moved client",
                 time.monotonic() - cut)
        # gateway 1 says it is not ready while it cannot reach the router
        status, body = self.c.readyz(1)
        self.assertEqual(status, 503, "gateway 1's /readyz during the cut: %r" % body)
        self.assertIn("router", body)
        # messages keep flowing for a few seconds more, across the point
        # where the router gives gateway 1 up (6 s)
        while time.monotonic() - cut < 8.0:
            for sender, target in ((a1, b1), (b2, a2), (a1, away)):
                sender.send(target)
            self.pump(0.25)

        healed = self.topo.heal("gateway1")
        ready = self.wait_ready(1, HEAL_READY, healed)
        measured("gateway cut: heal to gateway 1 /readyz 200", ready)
        # new clients on gateway 1 work and reach gateway 2
        began = time.monotonic()
        c1 = None
        while c1 is None:
            try:
                c1 = self.peer(1, "c1_")
            except AssertionError as e:
                self.assertLess(time.monotonic() - began, HEAL_FLOWING, "no registration on gateway 1 "
                                "after the heal: %s" % e)
                self.pump(0.2)
        took = self.assert_delivered(c1, b1, timeout=HEAL_FLOWING, retry_unavailable=True)
        measured("gateway cut: heal to a message from gateway 1 delivered on gateway 2",
                 time.monotonic() - healed)
        self.assert_delivered(b1, c1, timeout=HEAL_FLOWING)
        self.assert_nothing_lost(offline=[away])
        self.finish()


class StoreCut(PartitionCase):

    def test_store_cut_from_the_router(self):
        a, b = self.peer(1, "a_"), self.peer(2, "b_")
        away = self.peer(2, "away_")
        away.leave()
        self.wait_stored(a, away)
        self.assert_delivered(a, b)

        cut = self.topo.cut("store")
        # a message to the offline user: refused, with a clear error
        mid = a.send(away)
        msg = a.ack_for(mid, STORE_CUT_TOLD + 2)
        refused = time.monotonic() - cut
        self.assertIsNotNone(msg, "no answer within %.0f s to a message for an offline user while the "
                             "store is cut" % (STORE_CUT_TOLD + 2))
        self.assertEqual((msg.get("valid"), msg.get("status"), msg.get("error")),
                         (False, "rejected", UNAVAILABLE), "a message to an offline user while the store "
                         "is cut: %r" % msg)
        self.assertLessEqual(refused, STORE_CUT_TOLD)
        measured("store cut: a message to an offline user refused after", refused)
        # from then on: refused again (each waits for the store's timeout)
        began = time.monotonic()
        mid2 = a.send(away)
        msg = a.ack_for(mid2, STORE_CUT_TOLD + 2)
        self.assertTrue(msg is not None and msg.get("status") == "rejected", "the second: %r" % msg)
        measured("store cut: the next message to an offline user refused after", time.monotonic() - began)
        # online users keep messaging each other, both ways
        measured("store cut: a live message between gateways delivered in", self.assert_delivered(a, b))
        self.assert_delivered(b, a)
        # a login needs the store: refused too, not left hanging
        began = time.monotonic()
        ws = connect(self.c.chat_port(2), host=self.c.host(2))
        try:
            ws.send_json({"action": LOGIN, "name": b.name, "password": PASSWORD, "pubKey": "pk"})
            msg = ws.wait_event(EV_LOGIN, 12)
        finally:
            ws.abort()
        self.assertTrue(is_unavailable(msg, EV_LOGIN), "a login while the store is cut: %r" % msg)
        measured("store cut: a login refused after", time.monotonic() - began)
        status, body = self.c.readyz(1)
        self.assertEqual(status, 503, "gateway 1's /readyz while the store is cut: %r" % body)
        self.assertIn("store", body)

        healed = self.topo.heal("store")
        # messages to the offline user are stored again (the sender retries
        # with a new id until one is)
        stored = None
        while stored is None:
            self.assertLess(time.monotonic() - healed, HEAL_FLOWING,
                            "no message to an offline user stored within %.0f s of the heal" % HEAL_FLOWING)
            mid = a.send(away)
            msg = a.ack_for(mid, 6)
            if msg is not None and msg.get("status") == "stored":
                stored = time.monotonic() - healed
        measured("store cut: heal to a message for an offline user stored", stored)
        ready = self.wait_ready(1, HEAL_READY, healed)
        measured("store cut: heal to gateway 1 /readyz 200", ready)
        # what the refused messages became: the store had them queued,
        # each with the router's delete behind it
        self.pump(1.0)
        self.assert_nothing_lost(offline=[away])
        got = self.ledger.received.get(away.name, {})
        refused_texts = [t for t, s in self.ledger.acks.items()
                         if all(x.startswith("rejected") for x in s)]
        late = [t for t in refused_texts if t in got]
        sys.stderr.write("  store cut: %d message(s) refused during the cut, %d of them reached the "
                         "recipient after all\n" % (len(refused_texts), len(late)))
        # refused means not kept: the router takes back a store request it
        # timed out, so the heal does not deliver it after all
        self.assertTrue(refused_texts, "no message was refused during the cut")
        self.assertEqual(late, [], "refused during the cut, yet delivered after the heal")
        self.finish()


class FlappingLink(PartitionCase):

    def test_flapping_gateway_link(self):
        a1, a2 = self.peer(1, "a1_"), self.peer(1, "a2_")
        b1, b2 = self.peer(2, "b1_"), self.peer(2, "b2_")
        away = self.peer(2, "away_")
        away.leave()
        self.wait_stored(a1, away)
        self.assert_delivered(a1, b1)
        pairs = ((a1, b1), (b1, a1), (a2, b2), (b2, a2), (a1, away))
        # down 1.0 s, up 1.5 s, five times; traffic every 0.2 s each way
        began = time.monotonic()
        flips = 0
        state_up, next_flip = True, time.monotonic()
        next_send = 0.0
        while flips < 10:
            now = time.monotonic()
            if now >= next_flip:
                if state_up:
                    self.topo.cut("gateway1")
                    next_flip = now + 1.0
                else:
                    self.topo.heal("gateway1")
                    next_flip = now + 1.5
                state_up = not state_up
                flips += 1
            if now >= next_send:
                for sender, target in pairs:
                    sender.send(target)
                next_send = now + 0.2
            self.pump(0.02)
        healed = time.monotonic()
        self.assertTrue(state_up)
        measured("flapping: %d cuts over" % (flips // 2), healed - began)
        self.c.assert_running()
        for g in (1, 2):
            measured("flapping: last heal to gateway %d /readyz 200" % g, self.wait_ready(g, HEAL_READY, healed))
        self.assert_delivered(a1, b1, timeout=HEAL_FLOWING, retry_unavailable=True)
        self.assert_delivered(b2, a2, timeout=HEAL_FLOWING, retry_unavailable=True)
        measured("flapping: last heal to messages crossing both ways", time.monotonic() - healed)
        # every message was answered one way or the other
        self.pump(2.0)
        unanswered = [t for t in self.ledger.sent if t not in self.ledger.acks]
        self.soft(not unanswered, "%d message(s) sent during the flapping never answered: %s"
                  % (len(unanswered), unanswered[:5]))
        self.assert_nothing_lost(offline=[away])
        self.finish()


def main():
    why = netns_usable()
    if why is not None:
        sys.stderr.write("test_partitions: skipped: %s\n" % why)
        sys.exit(SKIP)
    remove_stale()
    unittest.main(verbosity=2)


if __name__ == "__main__":
    main()
