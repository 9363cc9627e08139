"""Faults in the cluster: kill -9 each role in turn, under traffic, and start it again.

A cluster of one store, one auth, one router and two gateways, each its own
process of the real binary on free loopback tcp:// endpoints, data in a
temporary folder (tests/test_cluster.py's Cluster, without a monitor).  A few
users on each gateway exchange messages in the background the whole time
(Traffic) while one role is killed with SIGKILL and started again:

- router: messages are answered "Service temporarily unavailable." within a
  bound, logins and authorizes too, the gateways keep serving HTTP; after the
  restart, with no client doing anything, the users on both gateways see and
  message each other again (the gateways re-announce their connections).
- store: a new login or registration gets an error within a bound (not a
  hang); live messages keep flowing; after the restart (same data folder)
  registrations and logins work, and earlier users and sessions are there.
- auth: logins are answered "Service temporarily unavailable." quickly;
  messages and Authorize still work; after the restart logins work again.
- a gateway: its users leave the other gateway's lists within ~8 s; they come
  back on the other gateway with Authorize and their tokens; the restarted
  gateway serves new clients.

Every test ends the same way (ClusterFaultCase.finish): every process still
runs and answers --health, every user ever registered can still log in, and
SIGTERM stops each role with exit 0 within 5 s (gateways close their
WebSockets with 1001).  Every wait is bounded.  Measured recovery times are
printed at the end of the run.

Run: QMS_BINARY=build/qmessageserver python3 tests/test_cluster_faults.py
"""

import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmslib import (EV_AUTHORIZATION, EV_INVALID_USER, EV_LOGIN, EV_MESSAGE, EV_USERLIST, AUTHORIZE,
                    LOGIN, MESSAGE, REGISTER, Client, HandshakeError, WebSocketClosed, connect,
                    http_get, uniq)
from test_cluster import STOP_LIMIT, Cluster, ClusterCase

UNAVAILABLE = "Service temporarily unavailable."
EV_ACK = 5
PASSWORD = "secret-pw"

# Bounds asserted (the design: hello every 1 s, an actor silent for 3 s is
# "gone" for a gateway, the router gives up a gateway silent for 6 s and
# checks once a second, auth and store time store requests out after 5 s,
# a login/authorize an actor took is answered after 10 s).
ROUTER_DOWN_ANSWER = 5.0      # kill -9 router -> first message answered "unavailable"
PROMPT = 1.0                  # once an actor is known to be gone: an answer at once
STORE_DOWN_LOGIN = 10.0       # kill -9 store -> a new login/registration answered with an error
AUTH_DOWN_ANSWER = 5.0        # kill -9 auth -> first login answered "unavailable"
TAKEN_REQUEST = 11.0          # a login sent right at the kill: answered (one way or the other)
GATEWAY_GONE = 8.5            # kill -9 gateway -> its users gone from the other gateway's lists
RECOVERY = 10.0               # restart -> working again

MEASURED = []                 # (what, seconds), printed at the end of the run


def measured(what, seconds):
    MEASURED.append((what, seconds))
    return seconds


def tearDownModule():
    if MEASURED:
        sys.stderr.write("\nMeasured (seconds):\n")
        for what, seconds in MEASURED:
            sys.stderr.write("  %-68s %6.2f\n" % (what, seconds))


# ---------------------------------------------------------------------------
# Small client helpers


def poll(ws, timeout):
    """The next JSON message within timeout, or None.  A close raises
    WebSocketClosed."""
    try:
        return ws.recv_json(timeout)
    except TimeoutError:
        return None


def collect_until(ws, predicate, timeout, seen=None):
    """Read until predicate(message) or the timeout; returns the message or
    None.  Every message read (matching or not) is appended to seen."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        msg = poll(ws, remaining)
        if msg is None:
            return None
        if seen is not None:
            seen.append(msg)
        try:
            if predicate(msg):
                return msg
        except (AttributeError, KeyError, TypeError):
            pass


def is_unavailable(msg, event):
    return msg.get("valid") is False and msg.get("event") == event and msg.get("error") == UNAVAILABLE


def send_msg(client, target, text, mid=None):
    req = {"action": MESSAGE, "token": client.token, "target": target.id, "message": text}
    if mid is not None:
        req["id"] = mid
    client.ws.send_json(req)


def userlist_names(msg):
    if msg.get("event") == EV_USERLIST and msg.get("valid") is True:
        return {u["name"] for u in msg["users"]}
    return None


class Watched:
    """A logged-in client whose every message is kept, so that a test can
    tell at the end whether it ever saw an InvalidUserEvent or a close."""

    def __init__(self, client):
        self.c = client
        self.seen = []

    def __getattr__(self, name):
        return getattr(self.c, name)

    def read_until(self, predicate, timeout):
        return collect_until(self.c.ws, predicate, timeout, self.seen)

    def wait_list(self, predicate, timeout, what, since=None):
        """A user list whose names satisfy predicate: one already read at
        index `since` or later in seen, else the next that arrives."""
        if since is not None:
            for m in self.seen[since:]:
                if userlist_names(m) is not None and predicate(userlist_names(m)):
                    return m
        msg = self.read_until(lambda m: userlist_names(m) is not None and predicate(userlist_names(m)),
                              timeout)
        if msg is None:
            raise AssertionError("%s: no user list within %.0f s; last lists: %s"
                                 % (what, timeout, [sorted(userlist_names(m)) for m in self.seen
                                                    if userlist_names(m) is not None][-3:]))
        return msg

    def drain(self, quiet=0.3):
        """Read (and keep) everything until the connection is quiet."""
        while True:
            msg = poll(self.c.ws, quiet)
            if msg is None:
                return
            self.seen.append(msg)

    def invalid_events(self):
        return [m for m in self.seen if m.get("event") == EV_INVALID_USER]


# ---------------------------------------------------------------------------
# Background traffic


class TrafficUser:
    def __init__(self, client, home):
        self.client = client
        self.home = home            # its gateway number
        self.partner = None
        self.ws = client.ws
        self.next_send = 0.0
        self.next_reconnect = 0.0
        self.count = 0


class Traffic:
    """Light background traffic: pairs of users on different gateways, each
    sending its partner a message with an id every `period` seconds and
    reading whatever comes.  A user whose connection is lost comes back with
    Authorize and its token on a gateway that accepts it (its own first), as
    a real client would; one that gets InvalidUserEvent authorizes again on
    the same connection.  Everything that happens is logged with the time."""

    def __init__(self, cluster, pairs=2, period=0.3):
        self.cluster = cluster
        self.period = period
        self.users = []
        for _ in range(pairs):
            u1 = TrafficUser(Client(cluster.chat_port(1), uniq("traffic1_")), 1)
            u2 = TrafficUser(Client(cluster.chat_port(2), uniq("traffic2_")), 2)
            u1.partner, u2.partner = u2, u1
            self.users += [u1, u2]
        self.events = []            # (monotonic time, user name, kind, detail)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.paused = threading.Event()
        self.thread = threading.Thread(target=self.run, name="traffic", daemon=True)
        self.failure = None

    def start(self):
        self.thread.start()
        return self

    def close(self):
        """Stop without judging (for cleanups after a failure)."""
        self.stopping.set()
        self.thread.join(5)
        for u in self.users:
            if u.ws is not None:
                u.ws.abort()

    def stop(self):
        self.stopping.set()
        self.thread.join(10)
        if self.thread.is_alive():
            raise AssertionError("the traffic thread did not stop")
        for u in self.users:
            if u.ws is not None:
                u.ws.abort()
        if self.failure:
            raise AssertionError("the traffic thread failed: %r" % (self.failure,))

    def pause(self):
        """Stop sending (answers to what was sent are still read)."""
        self.paused.set()
        time.sleep(0.5)

    def resume(self):
        self.paused.clear()

    def names(self):
        return [(u.client.name, u.client.password) for u in self.users]

    def note(self, user, kind, detail=""):
        with self.lock:
            self.events.append((time.monotonic(), user.client.name, kind, detail))

    def count(self, kind, since=0.0, prefix=False):
        with self.lock:
            return sum(1 for t, _, k, _ in self.events
                       if t >= since and (k.startswith(kind) if prefix else k == kind))

    def summary(self, since=0.0):
        out = {}
        with self.lock:
            for t, _, k, _ in self.events:
                if t >= since:
                    out[k] = out.get(k, 0) + 1
        return out

    def wait_flowing(self, since, timeout):
        """Seconds from `since` until every user's messages were delivered
        to its partner again after `since` (None if not within timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                got = {}
                for t, name, k, _ in self.events:
                    if t >= since and k == "received":
                        got.setdefault(name, t)
            if len(got) == len(self.users):
                return max(got.values()) - since
            time.sleep(0.05)
        return None

    # -- the thread ----------------------------------------------------------

    def run(self):
        try:
            while not self.stopping.is_set():
                for u in self.users:
                    self.step(u)
                time.sleep(0.02)
        except Exception as e:          # reported by stop()
            self.failure = e

    def step(self, u):
        now = time.monotonic()
        if u.ws is None:
            if now >= u.next_reconnect:
                self.reconnect(u)
            return
        try:
            if now >= u.next_send and u.partner is not None and not self.paused.is_set():
                u.count += 1
                mid = "t%d" % u.count
                u.ws.send_json({"action": MESSAGE, "token": u.client.token, "target": u.partner.client.id,
                                "message": "%s %s" % (u.client.name, mid), "id": mid})
                self.note(u, "sent", mid)
                u.next_send = now + self.period
            for _ in range(50):
                msg = poll(u.ws, 0.002)
                if msg is None:
                    break
                self.classify(u, msg)
        except (WebSocketClosed, OSError, AssertionError) as e:
            self.note(u, "lost", repr(e)[:200])
            u.ws.abort()
            u.ws = None
            u.next_reconnect = now + 0.3

    def classify(self, u, msg):
        ev, valid = msg.get("event"), msg.get("valid")
        if ev == EV_ACK:
            self.note(u, "ack:" + str(msg.get("status")), msg.get("error", ""))
        elif ev == EV_MESSAGE and valid is True:
            self.note(u, "received" if msg.get("sender") == u.partner.client.id else "received_other",
                      msg.get("message", "")[:60])
        elif ev == EV_MESSAGE:
            self.note(u, "error:" + str(msg.get("error")))
        elif ev == EV_INVALID_USER:
            self.note(u, "invalid")
            u.ws.send_json({"action": AUTHORIZE, "token": u.client.token})
        elif ev == EV_AUTHORIZATION:
            self.note(u, "authorized" if valid is True else "authorize_error:" + str(msg.get("error")))
        elif ev in (EV_USERLIST, 6):
            pass
        else:
            self.note(u, "other", repr(msg)[:200])

    def reconnect(self, u):
        order = [u.home] + [g for g in (1, 2) if g != u.home]
        for g in order:
            name = "gateway%d" % g
            proc = self.cluster.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            try:
                ws = connect(self.cluster.chat_port(g), timeout=1.0)
            except (OSError, HandshakeError):
                continue
            try:
                ws.send_json({"action": AUTHORIZE, "token": u.client.token})
                answer = collect_until(ws, lambda m: m.get("event") in (EV_AUTHORIZATION, EV_INVALID_USER),
                                       2.0)
            except (WebSocketClosed, OSError, AssertionError):
                answer = None
            if answer is not None and answer.get("valid") is True and answer.get("event") == EV_AUTHORIZATION:
                u.ws = ws
                self.note(u, "reconnected", name)
                return
            self.note(u, "reconnect_failed", "%s %r" % (name, answer))
            ws.abort()
        u.next_reconnect = time.monotonic() + 0.5


# ---------------------------------------------------------------------------
# The cluster and the common end of every test


class FaultCluster(Cluster):
    """Store, auth, router and two gateways; no monitor (no log endpoint)."""

    ROLES = ["store", "auth", "router", "gateway1", "gateway2"]

    def __init__(self):
        super().__init__(gateways=2)
        self.env["QMS_LOG_ENDPOINT"] = ""       # empty counts as unset

    def start_all(self):
        for name in self.ROLES:
            self.start(name)
        return self

    def kill9(self, name):
        """SIGKILL a running role; returns the monotonic time of the kill."""
        proc = self.procs[name]
        if proc.poll() is not None:
            raise AssertionError("%s had already exited with %s before we killed it\n%s"
                                 % (name, proc.returncode, self.log_tail(name)))
        began = time.monotonic()
        proc.kill()
        proc.wait(5)
        return began

    def restart(self, name):
        """Start a killed role again (same options, ports and data folder) and
        wait until it answers --health; returns (spawned, healthy) times."""
        began = time.monotonic()
        self.start(name)
        return began, time.monotonic()

    def assert_running(self, names=None):
        for name in names or self.ROLES:
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                raise AssertionError("%s is not running (exit code %s)\n%s"
                                     % (name, None if proc is None else proc.returncode, self.log_tail(name)))


class ClusterFaultCase(ClusterCase):

    def setUp(self):
        super().setUp()
        self.registered = []        # (name, password) of every user that registered
        self.problems = []          # failures reported at the very end, after finish()

    def soft(self, ok, text):
        """A failure that should not stop the test before it has measured
        the rest and stopped the cluster cleanly: reported at the end."""
        if not ok:
            self.problems.append(text)

    def fault_cluster(self):
        return self.cluster(make=FaultCluster)

    def user(self, c, gateway, prefix="user"):
        client = Client(c.chat_port(gateway), uniq(prefix), password=PASSWORD)
        self.addCleanup(client.ws.abort)
        self.registered.append((client.name, PASSWORD))
        return Watched(client)

    def traffic(self, c):
        t = Traffic(c)
        self.registered += t.names()
        self.addCleanup(t.close)
        return t.start()

    # -- assertions ------------------------------------------------------------

    def assert_delivered(self, sender, target, text, timeout=5.0):
        """sender -> target is delivered now (ack and the message itself)."""
        mid = "m-%s" % os.urandom(4).hex()
        send_msg(sender, target, text, mid)
        ack = sender.read_until(lambda m: m.get("event") == EV_ACK and m.get("id") == mid, timeout)
        self.assertIsNotNone(ack, "%s -> %s: no ack within %.0f s; got %s"
                             % (sender.name, target.name, timeout, sender.seen[-5:]))
        self.assertEqual(ack.get("status"), "delivered", "%s -> %s: %r" % (sender.name, target.name, ack))
        got = target.read_until(lambda m: m.get("event") == EV_MESSAGE and m.get("valid") is True
                                and m.get("message") == text, timeout)
        self.assertIsNotNone(got, "%s did not receive %r; got %s" % (target.name, text, target.seen[-5:]))
        self.assertEqual(got.get("sender"), sender.id)

    def login_answer(self, port, name, password=PASSWORD, action=LOGIN, timeout=15.0):
        """(seconds, LoginEvent or None) for a login/registration on a new connection."""
        ws = connect(port)
        try:
            began = time.monotonic()
            ws.send_json({"action": action, "name": name, "password": password, "pubKey": "pk"})
            msg = collect_until(ws, lambda m: m.get("event") == EV_LOGIN, timeout)
            return time.monotonic() - began, msg
        finally:
            ws.abort()

    def assert_never_invalid(self, *clients):
        for w in clients:
            self.soft(w.invalid_events() == [], "%s got InvalidUserEvent (%d times) although its session "
                      "was never ended: no client action should be needed; its last messages: %s"
                      % (w.name, len(w.invalid_events()), w.seen[-8:]))

    def wait_login_works(self, c, gateway, name, timeout=RECOVERY):
        """Seconds until a login of this user succeeds (trying every 0.2 s)."""
        began = time.monotonic()
        last = None
        while time.monotonic() - began < timeout:
            _, last = self.login_answer(c.chat_port(gateway), name, timeout=12)
            if last is not None and last.get("valid") is True:
                return time.monotonic() - began
            time.sleep(0.2)
        self.fail("logins did not work again within %.0f s; last answer %r" % (timeout, last))

    def finish(self, c, traffic=None, watched=()):
        """The end of every test: no crash or hang, no user lost, clean stops."""
        if traffic is not None:
            traffic.stop()
            invalid = [e for e in traffic.events if e[2] == "invalid"]
            self.soft(invalid == [], "background users got InvalidUserEvent %d times although their "
                      "sessions were never ended (they authorized again each time); the first at +%.2f s "
                      "of the test's traffic: %s" % (len(invalid), invalid[0][0] - traffic.events[0][0]
                                                      if invalid else 0, invalid[:3]))
        c.assert_running()
        for name in c.ROLES:
            code, out, err = c.health(name)
            self.assertEqual(code, 0, "--health %s at the end: %s %s\n%s" % (name, out, err, c.log_tail(name)))
        # every user ever registered can still log in (the store lost no one)
        for name, password in self.registered:
            _, msg = self.login_answer(c.chat_port(1), name, password)
            self.assertIsNotNone(msg, "no answer to the login of %s" % name)
            self.assertIs(msg.get("valid"), True, "login of %s at the end: %r" % (name, msg))
        # SIGTERM: gateways close their WebSockets with 1001; every role exits 0 within 5 s
        for name in ["gateway2", "gateway1", "router", "auth", "store"]:
            ws = None
            if name.startswith("gateway"):
                ws = connect(c.chat_port(int(name[7:])))
            code, took = c.stop(name)
            self.assertEqual(code, 0, "%s exit code after SIGTERM\n%s" % (name, c.log_tail(name)))
            self.assertLess(took, STOP_LIMIT, "%s took %.1f s to stop" % (name, took))
            measured("SIGTERM %s: exit 0 after" % name, took)
            if ws is not None:
                try:
                    self.assertEqual(ws.expect_close(3), 1001, "%s closes WebSockets with 1001" % name)
                finally:
                    ws.abort()
        c.check_logs()
        if self.problems:
            self.fail("\n".join(self.problems))


# ---------------------------------------------------------------------------
# The tests


class KillRouter(ClusterFaultCase):

    def test_kill9_router_then_restart(self):
        c = self.fault_cluster()
        a1, a2 = self.user(c, 1, "a1_"), self.user(c, 1, "a2_")
        b1, b2 = self.user(c, 2, "b1_"), self.user(c, 2, "b2_")
        away = self.user(c, 2, "away_")         # offline with a valid token
        away.ws.close()
        traffic = self.traffic(c)
        self.assert_delivered(a1, b1, "before the fault")
        time.sleep(1.0)

        killed = c.kill9("router")
        # a1 (gateway 1) and b2 (gateway 2) keep sending until a message is
        # refused "unavailable" on each (each gateway notices on its own heartbeat)
        probes = {1: (a1, b1), 2: (b2, a2)}
        first, sent = {}, {1: 0, 2: 0}
        while len(first) < 2 and time.monotonic() - killed < ROUTER_DOWN_ANSWER + 2:
            for g, (sender, target) in probes.items():
                if g not in first:
                    send_msg(sender, target, "while the router is down %d" % sent[g])
                    sent[g] += 1
            for g, (sender, target) in probes.items():
                if g not in first and sender.read_until(lambda m: is_unavailable(m, EV_MESSAGE), 0.12):
                    first[g] = time.monotonic() - killed
        for g, (sender, _) in probes.items():
            self.assertIn(g, first, "gateway %d: no \"%s\" for a message within %.0f s of kill -9 router; "
                          "%d sent, got: %s" % (g, UNAVAILABLE, ROUTER_DOWN_ANSWER + 2, sent[g], sender.seen[-8:]))
            measured("router down: gateway %d answers a message unavailable after" % g, first[g])
            self.assertLessEqual(first[g], ROUTER_DOWN_ANSWER)
        # from now on, at once, on both gateways; logins and authorizes too
        for sender, target in ((a2, b2), (b2, a2)):
            began = time.monotonic()
            send_msg(sender, target, "refused at once")
            msg = sender.read_until(lambda m: is_unavailable(m, EV_MESSAGE), PROMPT)
            self.assertIsNotNone(msg, "%s: no prompt refusal: %s" % (sender.name, sender.seen[-5:]))
            self.assertLess(time.monotonic() - began, PROMPT)
        took, msg = self.login_answer(c.chat_port(1), a2.name, timeout=PROMPT + 1)
        self.assertTrue(msg is not None and is_unavailable(msg, EV_LOGIN), "login while the router is down: %r" % msg)
        self.assertLess(took, PROMPT)
        ws = connect(c.chat_port(2))
        self.addCleanup(ws.abort)
        ws.send_json({"action": AUTHORIZE, "token": away.token})
        msg = collect_until(ws, lambda m: m.get("event") in (EV_AUTHORIZATION, EV_INVALID_USER), PROMPT)
        self.assertTrue(msg is not None and is_unavailable(msg, EV_AUTHORIZATION),
                        "authorize while the router is down: %r" % msg)
        ws.abort()
        # the gateways still serve HTTP
        for g in (1, 2):
            status, _, body = http_get(c.gateway_ports[g - 1][1], "/")
            self.assertEqual(status, 200)
            self.assertGreater(len(body), 100)
            self.assertEqual(c.health("gateway%d" % g)[0], 0)

        # (the messages sent before the gateways noticed got no answer: they
        # wait in ZeroMQ for the next router; kept apart from what follows)
        unanswered = sent[1] - sum(1 for m in a1.seen if is_unavailable(m, EV_MESSAGE))
        for w in (a1, a2, b1, b2):
            w.drain(0.2)
        marks = {w.name: len(w.seen) for w in (a1, a2, b1, b2)}

        spawned, healthy = c.restart("router")
        measured("router restart: spawn to healthy", healthy - spawned)
        # no client does anything: a1 keeps trying to reach b1 until it is delivered
        mid, n, delivered = None, 0, None
        while time.monotonic() - spawned < RECOVERY:
            n += 1
            mid = "probe-%d" % n
            send_msg(a1, b1, "after the restart %d" % n, mid)
            ack = a1.read_until(lambda m: m.get("event") == EV_ACK and m.get("id") == mid
                                or is_unavailable(m, EV_MESSAGE), 0.5)
            if ack is not None and ack.get("status") == "delivered":
                delivered = time.monotonic()
                break
            time.sleep(0.1)
        self.assertIsNotNone(delivered, "no cross-gateway message delivered within %.0f s of restarting the "
                             "router; a1 saw: %s" % (RECOVERY, a1.seen[-8:]))
        measured("router restart: spawn to first cross-gateway message delivered", delivered - spawned)
        measured("router restart: healthy to first cross-gateway message delivered", delivered - healthy)
        got = b1.read_until(lambda m: m.get("event") == EV_MESSAGE and m.get("valid") is True
                            and m.get("message") == "after the restart %d" % n, 5)
        self.assertIsNotNone(got, "b1 did not get the message a1's ack said was delivered: %s" % b1.seen[-5:])
        # user lists on both gateways show everyone again
        everyone = {a1.name, a2.name, b1.name, b2.name}
        for w in (a1, a2, b1, b2):
            w.wait_list(lambda names: everyone <= names, 5, "%s after the router restart" % w.name,
                        since=marks[w.name])
        measured("router restart: spawn to user lists whole again", time.monotonic() - spawned)
        self.assert_delivered(b2, a2, "gateway 2 to gateway 1 after the restart")
        self.assert_delivered(a2, b1, "gateway 1 to gateway 2 after the restart")
        flowing = traffic.wait_flowing(spawned, RECOVERY)
        self.assertIsNotNone(flowing, "background traffic did not flow again after the restart: %s"
                             % traffic.summary(spawned))
        measured("router restart: spawn to all background traffic flowing", flowing)
        a1.drain(0.2)
        late = [m for m in a1.seen[marks[a1.name]:] if m.get("event") == EV_INVALID_USER]
        self.soft(not late, "a1 sent %d messages in the %.1f s before its gateway took the router for gone "
                  "(they got no answer then); after the restart a1 got %d InvalidUserEvent(s), although "
                  "its session was restored" % (unanswered, first[1], len(late)))
        self.assert_never_invalid(a1, a2, b1, b2)
        # the offline user's session is still good (from the store)
        ws = connect(c.chat_port(1))
        self.addCleanup(ws.abort)
        ws.send_json({"action": AUTHORIZE, "token": away.token})
        msg = collect_until(ws, lambda m: m.get("event") in (EV_AUTHORIZATION, EV_INVALID_USER), 5)
        self.assertEqual(msg, {"valid": True, "event": EV_AUTHORIZATION})
        ws.abort()
        self.finish(c, traffic)


class KillStore(ClusterFaultCase):

    def test_kill9_store_then_restart(self):
        c = self.fault_cluster()
        a1, b1 = self.user(c, 1, "a1_"), self.user(c, 2, "b1_")
        old = self.user(c, 1, "old_")           # will log in again while the store is down
        away = self.user(c, 2, "away_")         # offline with a session in the store
        old.ws.close()
        away.ws.close()
        traffic = self.traffic(c)
        self.assert_delivered(a1, b1, "before the fault")
        time.sleep(0.5)

        killed = c.kill9("store")
        # a login and a registration, each on its own connection, both at once
        login_ws, reg_ws = connect(c.chat_port(1)), connect(c.chat_port(2))
        self.addCleanup(login_ws.abort)
        self.addCleanup(reg_ws.abort)
        login_ws.send_json({"action": LOGIN, "name": old.name, "password": PASSWORD, "pubKey": "pk"})
        newcomer = uniq("new_")
        reg_ws.send_json({"action": REGISTER, "name": newcomer, "password": PASSWORD, "pubKey": "pk"})
        # meanwhile live messages still flow both ways (the hot path does not touch the store)
        self.assert_delivered(a1, b1, "while the store is down")
        self.assert_delivered(b1, a1, "back while the store is down")
        for ws, what in ((login_ws, "login"), (reg_ws, "registration")):
            msg = collect_until(ws, lambda m: m.get("event") == EV_LOGIN,
                                max(0.1, STORE_DOWN_LOGIN - (time.monotonic() - killed)))
            took = time.monotonic() - killed
            self.assertIsNotNone(msg, "no answer to a %s within %.0f s of kill -9 store" % (what, STORE_DOWN_LOGIN))
            self.assertIs(msg.get("valid"), False, "%s while the store is down: %r" % (what, msg))
            self.assertEqual(msg.get("error"), UNAVAILABLE, "%s while the store is down: %r" % (what, msg))
            measured("store down: %s answered unavailable after" % what, took)
        self.assert_delivered(a1, b1, "still, later")
        c.assert_running(["auth", "router", "gateway1", "gateway2"])

        spawned, healthy = c.restart("store")
        measured("store restart: spawn to healthy", healthy - spawned)
        # new registrations and logins work again; the earlier user is there
        began = time.monotonic()
        fresh = None
        while time.monotonic() - began < RECOVERY:
            try:
                fresh = self.user(c, 2, "after_")
                break
            except AssertionError as e:      # "unavailable" while auth reconnects
                last = e
                time.sleep(0.2)
        self.assertIsNotNone(fresh, "no registration within %.0f s of restarting the store: %s"
                             % (RECOVERY, last if fresh is None else ""))
        measured("store restart: spawn to first registration", time.monotonic() - spawned)
        _, msg = self.login_answer(c.chat_port(1), old.name)
        self.assertIs(msg and msg.get("valid"), True, "login of a user from before the store was killed: %r" % msg)
        _, msg = self.login_answer(c.chat_port(2), newcomer)
        self.assertEqual(msg and msg.get("error"), "User or password is invalid.",
                         "the registration refused while the store was down must not exist now: %r" % msg)
        # the sessions are in the store: a router that starts empty restores
        # them, for connections that stayed and for a user who is away
        # (traffic pauses meanwhile: a message racing the restart is the
        # router test's business)
        traffic.pause()
        for w in (a1, b1, fresh):
            w.drain(0.2)
        c.kill9("router")
        r_spawned, _ = c.restart("router")
        fresh_w = fresh
        for w in (a1, b1):
            w.wait_list(lambda names: {a1.name, b1.name, fresh_w.name} <= names, RECOVERY,
                        "%s after the router restart" % w.name)
        measured("store test: router kill -9 + restart, spawn to user lists whole", time.monotonic() - r_spawned)
        traffic.resume()
        self.assert_delivered(a1, b1, "after the store and the router restarted")
        self.assert_delivered(fresh, a1, "from the new user")
        ws = connect(c.chat_port(1))
        self.addCleanup(ws.abort)
        ws.send_json({"action": AUTHORIZE, "token": away.token})
        msg = collect_until(ws, lambda m: m.get("event") in (EV_AUTHORIZATION, EV_INVALID_USER), 5)
        self.assertEqual(msg, {"valid": True, "event": EV_AUTHORIZATION},
                         "a session started before the store was killed")
        ws.abort()
        flowing = traffic.wait_flowing(r_spawned, RECOVERY)
        self.assertIsNotNone(flowing, "background traffic did not flow again: %s" % traffic.summary(r_spawned))
        self.assert_never_invalid(a1, b1)
        self.finish(c, traffic)


class KillAuth(ClusterFaultCase):

    def test_kill9_auth_then_restart(self):
        c = self.fault_cluster()
        a1, b1 = self.user(c, 1, "a1_"), self.user(c, 2, "b1_")
        away = self.user(c, 2, "away_")         # offline with a valid token
        prober = self.user(c, 1, "prober_")     # logs in while auth is down
        away.ws.close()
        prober.ws.close()
        traffic = self.traffic(c)
        self.assert_delivered(a1, b1, "before the fault")
        time.sleep(0.5)

        killed = c.kill9("auth")
        # a login sent right away is taken before the gateway knows; it is
        # answered all the same (the request timeout), never left hanging
        early = connect(c.chat_port(1))
        self.addCleanup(early.abort)
        early.send_json({"action": LOGIN, "name": prober.name, "password": PASSWORD, "pubKey": "pk"})
        early_sent = time.monotonic()
        # then logins on each gateway until one is refused "unavailable" (each
        # gateway notices on its own heartbeat)
        for g in (1, 2):
            first, answers = None, []
            while first is None and time.monotonic() - killed < AUTH_DOWN_ANSWER + 2:
                took, msg = self.login_answer(c.chat_port(g), prober.name, timeout=0.3)
                answers.append(msg)
                if msg is not None and is_unavailable(msg, EV_LOGIN):
                    first = time.monotonic() - killed
            self.assertIsNotNone(first, "gateway %d: no \"%s\" for a login within %.0f s of kill -9 auth: %s"
                                 % (g, UNAVAILABLE, AUTH_DOWN_ANSWER + 2, answers[-3:]))
            measured("auth down: gateway %d answers a login unavailable after" % g, first)
            self.assertLessEqual(first, AUTH_DOWN_ANSWER)
        for g in (1, 2):
            for action in (LOGIN, REGISTER):
                took, msg = self.login_answer(c.chat_port(g), uniq("x"), action=action, timeout=PROMPT + 1)
                self.assertTrue(msg is not None and is_unavailable(msg, EV_LOGIN),
                                "gateway %d, action %d while auth is down: %r" % (g, action, msg))
                self.assertLess(took, PROMPT)
        # messages and Authorize do not need auth
        self.assert_delivered(a1, b1, "while auth is down")
        self.assert_delivered(b1, a1, "back while auth is down")
        ws = connect(c.chat_port(1))
        self.addCleanup(ws.abort)
        ws.send_json({"action": AUTHORIZE, "token": away.token})
        msg = collect_until(ws, lambda m: m.get("event") in (EV_AUTHORIZATION, EV_INVALID_USER), 5)
        self.assertEqual(msg, {"valid": True, "event": EV_AUTHORIZATION}, "authorize while auth is down")
        ws.close()
        # the early login: answered within the request timeout
        msg = collect_until(early, lambda m: m.get("event") == EV_LOGIN,
                            max(0.1, TAKEN_REQUEST - (time.monotonic() - early_sent)))
        self.assertIsNotNone(msg, "a login sent right after kill -9 auth was not answered within %.0f s"
                             % TAKEN_REQUEST)
        self.assertEqual(msg.get("error"), UNAVAILABLE, "the early login: %r" % msg)
        measured("auth down: login taken at the kill answered after", time.monotonic() - early_sent)
        early.abort()

        spawned, healthy = c.restart("auth")
        measured("auth restart: spawn to healthy", healthy - spawned)
        measured("auth restart: healthy to first login", self.wait_login_works(c, 2, prober.name))
        measured("auth restart: spawn to first login", time.monotonic() - spawned)
        fresh = self.user(c, 1, "after_")
        self.assert_delivered(fresh, b1, "from a user registered after the restart")
        self.assert_never_invalid(a1, b1)
        self.assertIsNotNone(traffic.wait_flowing(time.monotonic(), 5))
        self.finish(c, traffic)


class KillGateway(ClusterFaultCase):

    def test_kill9_gateway_then_restart(self):
        c = self.fault_cluster()
        a1, a2 = self.user(c, 1, "a1_"), self.user(c, 1, "a2_")
        b1, b2 = self.user(c, 2, "b1_"), self.user(c, 2, "b2_")
        traffic = self.traffic(c)
        everyone = {a1.name, a2.name, b1.name, b2.name}
        a1.wait_list(lambda names: everyone <= names, 5, "a1 before the fault")
        self.assert_delivered(a1, b1, "before the fault")
        time.sleep(0.5)

        killed = c.kill9("gateway2")
        for w in (b1, b2):
            w.ws.expect_close(5)            # the TCP connection ends with the process
        # b1 comes back at once on gateway 1 with its token, as a client would
        b1_ws = connect(c.chat_port(1))
        self.addCleanup(b1_ws.abort)
        b1_ws.send_json({"action": AUTHORIZE, "token": b1.token})
        msg = collect_until(b1_ws, lambda m: m.get("event") in (EV_AUTHORIZATION, EV_INVALID_USER), 5)
        self.assertEqual(msg, {"valid": True, "event": EV_AUTHORIZATION}, "b1's token on the other gateway")
        b1.c.ws, b1.seen = b1_ws, []
        # b2 stays away: it leaves a1's and a2's lists when the router gives gateway 2 up
        for w in (a1, a2):
            w.wait_list(lambda names: b2.name not in names and b1.name in names, GATEWAY_GONE + 1,
                        "%s: b2 gone, b1 back" % w.name)
            gone = time.monotonic() - killed
            if w is a1:
                measured("gateway killed: its user gone from the other's list after", gone)
            self.assertLessEqual(gone, GATEWAY_GONE)
        # ... and then comes back on gateway 1 with its token
        b2_ws = connect(c.chat_port(1))
        self.addCleanup(b2_ws.abort)
        b2_ws.send_json({"action": AUTHORIZE, "token": b2.token})
        msg = collect_until(b2_ws, lambda m: m.get("event") in (EV_AUTHORIZATION, EV_INVALID_USER), 5)
        self.assertEqual(msg, {"valid": True, "event": EV_AUTHORIZATION}, "b2's token on the other gateway")
        b2.c.ws, b2.seen = b2_ws, []
        a1.wait_list(lambda names: everyone <= names, 5, "a1 sees b2 back")
        self.assert_delivered(a1, b2, "to b2 on its new gateway")
        self.assert_delivered(b1, a2, "from b1 on its new gateway")
        # gateway 1 serves HTTP all along, and the router never went away
        self.assertEqual(http_get(c.gateway_ports[0][1], "/")[0], 200)

        spawned, healthy = c.restart("gateway2")
        measured("gateway restart: spawn to healthy", healthy - spawned)
        began = time.monotonic()
        newcomer = None
        while time.monotonic() - began < RECOVERY:
            try:
                newcomer = self.user(c, 2, "c1_")
                break
            except AssertionError as e:
                last = e
                time.sleep(0.2)
        self.assertIsNotNone(newcomer, "no registration on the restarted gateway: %s"
                             % (last if newcomer is None else ""))
        measured("gateway restart: spawn to first registration on it", time.monotonic() - spawned)
        newcomer.wait_list(lambda names: everyone <= names, 5, "the newcomer sees everyone")
        a1.wait_list(lambda names: newcomer.name in names, 5, "a1 sees the newcomer")
        self.assert_delivered(newcomer, a1, "from the restarted gateway")
        self.assert_delivered(a1, newcomer, "to the restarted gateway")
        # an old user can go back to it with its token
        ws = connect(c.chat_port(2))
        self.addCleanup(ws.abort)
        ws.send_json({"action": AUTHORIZE, "token": a2.token})
        msg = collect_until(ws, lambda m: m.get("event") in (EV_AUTHORIZATION, EV_INVALID_USER), 5)
        self.assertEqual(msg, {"valid": True, "event": EV_AUTHORIZATION})
        self.assertEqual(a2.ws.expect_close(5), 4001, "a2's older connection is replaced")
        ws.abort()
        self.assertIsNotNone(traffic.wait_flowing(time.monotonic(), 5), traffic.summary(killed))
        self.assertGreaterEqual(traffic.count("reconnected", killed), 2,
                                "gateway 2's background users came back on gateway 1: %s" % traffic.summary(killed))
        self.assert_never_invalid(a1, b1, b2)
        self.finish(c, traffic)


if __name__ == "__main__":
    unittest.main(verbosity=2)
