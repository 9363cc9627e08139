"""Bad input, one table: every kind of hostile or malformed thing a client can
send (JSON text, raw bytes, raw WebSocket frames, raw HTTP, TLS junk), each
with the answer docs/PROTOCOL.md promises for it and the state the
connection must be in afterwards.

After EVERY case the server is checked on three counts:
  (a) two bystanders logged in on the same server still exchange a message;
  (b) nothing stored was lost: a user registered at the start still logs in,
      and one more message to a user who has been offline since the start is
      acknowledged "stored" (its text full of SQL metacharacters);
  (c) the process is alive and its log shows no sanitizer report.
At the end of each server's cases that offline user logs in and must get
every stored message, whole and in order.

Most cases share one server; the few that need other options (TLS, a small
--max-queue, a low rate limit, 3 connections per address) get their own,
with their own bystanders.  Every case runs even when an earlier one failed;
the table (case, expected, observed) is always printed to stdout, then the
test fails listing every case that did not match.

Expected answers are the documented ones (docs/PROTOCOL.md, and
docs/SECURITY.md for HTTP paths).  Where the server disagrees with the
documents, the case keeps the documented answer and fails.  Where the
documents say nothing (RFC 6455 framing errors, duplicate keys, the \u0000
text), the case asserts what the server does and its note says so.

Run:  QMS_BINARY=build/qmessageserver python3 tests/test_bad_input.py [-v]
"""

import collections
import json
import os
import re
import shutil
import socket
import ssl
import struct
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmslib import (EV_LOGIN, EV_MESSAGE, HOST, HTML_DIR, LOGIN, MESSAGE, OP_BINARY,
                    OP_CONT, OP_PING, OP_PONG, OP_TEXT, REGISTER, Server,
                    WebSocketClosed, connect, dump_log, http_get, uniq)

MIB = 1 << 20
PASSWORD = "secret-pw"
PASSWD_MARK = b"root:x:0:0"
EV_ACK, EV_LOOKUP = 5, 7
GROUP_CREATE, GROUP_UPDATE, GROUP_LIST, GROUP_MESSAGE = 7, 8, 9, 10
EV_GROUP, EV_GROUP_LIST, EV_GROUP_MESSAGE = 8, 9, 10
PRESENCE_EVENTS = (4, 6)          # user lists: pushed at any time, never an answer
FAKE_TOKEN = "A" * 43             # the shape of a token, but nobody's
PROBE = '{"action":99}'           # always answered, never changes anything
PROBE_ANSWER = {"valid": False, "error": "Unknown action."}
# Stored for the offline user after every case: the store must keep it byte for byte.
SQL_TEXT = "' OR '1'='1'; DROP TABLE messages; -- \" ; DELETE FROM users WHERE 1=1; /*"


# ---------------------------------------------------------------------------
# What a case expects: small matchers that also describe themselves.

class Exact:
    """The answer is exactly this JSON object."""

    def __init__(self, obj):
        self.obj = obj

    def __call__(self, got):
        return got == self.obj

    def __str__(self):
        return json.dumps(self.obj, ensure_ascii=False, separators=(",", ":"))


class Has:
    """The answer holds these fields (an answer with more, e.g. a LoginEvent)."""

    def __init__(self, **fields):
        self.fields = fields

    def __call__(self, got):
        return isinstance(got, dict) and all(got.get(k) == v for k, v in self.fields.items())

    def __str__(self):
        return "{%s,...}" % ",".join("%s:%s" % (k, json.dumps(v, ensure_ascii=False))
                                     for k, v in self.fields.items())


class Is:
    """A line that a scripted case or a raw exchange produced."""

    def __init__(self, *texts):
        self.texts = texts

    def __call__(self, got):
        return got in self.texts

    def __str__(self):
        return " | ".join(self.texts)


class Matches:
    """A line of a scripted case that varies (counts): checked by a regular
    expression, described by the pattern."""

    def __init__(self, pattern):
        self.pattern = pattern

    def __call__(self, got):
        return isinstance(got, str) and re.fullmatch(self.pattern, got) is not None

    def __str__(self):
        return "/%s/" % self.pattern


def http_status(*codes):
    return Is(*("HTTP %d" % c for c in codes))


def login_error(text):
    return Exact({"valid": False, "event": EV_LOGIN, "error": text})


def message_error(text):
    return Exact({"valid": False, "event": EV_MESSAGE, "error": text})


NOT_JSON = Exact({"valid": False, "error": "Not valid JSON."})
NOT_INTEGER = Exact({"valid": False, "error": "Field 'action' must be an integer."})
UNKNOWN_ACTION = Exact(PROBE_ANSWER)
INVALID_USER = Exact({"valid": False, "event": 3})
FILL_ALL = login_error("Please fill all fields.")
BINARY = Exact({"valid": False, "error": "Binary frames are not supported: send JSON text."})
INVISIBLE = login_error("Name contains a control or invisible character.")
SPACE_AT_ENDS = login_error("Name must not begin or end with a space.")
REGISTERED = Has(valid=True, event=EV_LOGIN)
NUL_TEXT = "Strings must not contain NUL characters (\\u0000)."   # not in PROTOCOL.md (see cases)


def state_text(state):
    if state == "open":
        return "open"
    if isinstance(state, tuple):
        return "closed %s" % state[1]
    return state


# ---------------------------------------------------------------------------
# Frames and raw sockets

def frame_bytes(opcode, payload=b"", fin=True):
    """One masked client frame, as bytes (to send many in one write)."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    head = bytearray([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head.append(0x80 | n)
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    key = os.urandom(4)
    if n:
        k = (key * (n // 4 + 1))[:n]
        payload = (int.from_bytes(payload, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")
    return bytes(head) + key + payload


def raw_exchange(port, data, timeout=3.0):
    """Send bytes as they are; read until the server closes, or a complete
    HTTP answer and 0.3 s more, or `timeout`.  Returns (bytes received, True
    if the server closed the connection)."""
    sock = socket.create_connection((HOST, port), timeout=timeout)
    try:
        sock.sendall(data)
        buf, closed = b"", False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            buf += chunk
            if b"\r\n\r\n" in buf:
                head, body = buf.split(b"\r\n\r\n", 1)
                for line in head.split(b"\r\n")[1:]:
                    if line.lower().startswith(b"content-length:"):
                        if len(body) >= int(line.split(b":", 1)[1]):
                            deadline = time.monotonic() + 0.3   # then wait briefly for the close
        return buf, closed
    finally:
        sock.close()


def describe_http(buf, closed):
    """'HTTP 404', or 'no answer, closed' / 'no answer, still open'."""
    if buf.startswith(b"HTTP/"):
        try:
            return "HTTP %d" % int(buf.split(b" ", 2)[1])
        except (IndexError, ValueError):
            return "garbled status line %r" % buf[:40]
    if buf:
        return "non-HTTP bytes %r, %s" % (buf[:20], "closed" if closed else "still open")
    return "no answer, closed" if closed else "no answer, still open"


def client_hello():
    """The first flight of a real TLS 1.2/1.3 handshake (a ClientHello)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


# ---------------------------------------------------------------------------
# Users and servers

class User:
    """A logged-in user on a plain or TLS connection (qmslib.Client speaks
    plain ws:// only)."""

    def __init__(self, env, name=None, do_register=True, password=PASSWORD):
        self.name = name or uniq("u")
        req = {"action": REGISTER if do_register else LOGIN, "name": self.name, "password": password,
               "pubKey": "pk-" + self.name}
        deadline = time.monotonic() + 3
        while True:
            self.ws = env.connect()
            try:
                self.ws.send_json(req)
                reply = self.ws.wait_event(EV_LOGIN, 15)
                break
            except (AssertionError, OSError):
                # closed at once with 1008: a slot of --max-connections-per-address
                # that a connection closed a moment ago has not been given back yet
                self.ws.abort()
                if self.ws.close_code != 1008 or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        if reply.get("valid") is not True:
            self.ws.abort()
            raise AssertionError("%s of %r failed: %r" % ("register" if do_register else "login",
                                                          self.name, reply))
        self.reply = reply
        self.token = reply["token"]
        self.id = [u["id"] for u in reply["users"] if u["name"] == reply["username"]][0]

    def send(self, target, text, msg_id=None):
        req = {"action": MESSAGE, "token": self.token, "target": target.id if isinstance(target, User) else target,
               "message": text}
        if msg_id is not None:
            req["id"] = msg_id
        self.ws.send_json(req)

    def expect_message(self, sender, text, timeout=None):
        msg = self.ws.wait_for(lambda m: m.get("event") == EV_MESSAGE and m.get("valid") is True
                               and m.get("sender") == sender.id, timeout, what="a message from " + sender.name)
        if msg.get("message") != text:
            raise AssertionError("message from %s differs: %r, sent %r" % (sender.name, msg.get("message")[:80],
                                                                          text[:80]))
        return msg

    def forget_presence(self):
        """Drop user lists kept by wait_for, so the queue never grows."""
        self.ws.pending = collections.deque(m for m in self.ws.pending
                                            if not (isinstance(m, dict) and m.get("event") in PRESENCE_EVENTS))

    def close(self):
        self.ws.close(wait=0.5)


class Env:
    """One server with its witnesses: bystanders A and B, a keeper (registered,
    offline), an offline recipient that collects a stored message per case,
    and (helpers=True) a logged-in 'me' and 'peer' for the cases to use."""

    def __init__(self, key, args=(), tls=False, helpers=True, canary=False):
        self.key = key
        self.tls = tls
        self.helpers = helpers
        self.srv = Server(list(args), wait_https=tls)
        if canary:
            # the UI folder is a copy; a secret lies right next to it
            self.srv.html_dir = os.path.join(self.srv.tmp, "html")
            shutil.copytree(HTML_DIR, self.srv.html_dir, symlinks=True)
            self.canary = ("CANARY-%s" % os.urandom(8).hex()).encode()
            with open(os.path.join(self.srv.tmp, "secret.txt"), "wb") as f:
                f.write(self.canary + b"\n")
        self.me = self.peer = None
        self.stored = []

    # -- connections -------------------------------------------------------

    def connect(self, **kwargs):
        return connect(self.srv.chat_port, tls=self.tls, **kwargs)

    def user(self, name=None, do_register=True):
        return User(self, name, do_register)

    def fresh(self):
        return self.connect()

    def get_me(self):
        if self.me is None or self.me.ws.server_closed:
            self.me = self.user(uniq("me"))
        return self.me

    # -- life cycle --------------------------------------------------------

    def start(self):
        self.srv.start()
        self.a = self.user(uniq("bysA"))
        self.b = self.user(uniq("bysB"))
        self.keeper_name = uniq("keeper")
        self.user(self.keeper_name).close()
        self.offline_name = uniq("offline")
        off = self.user(self.offline_name)
        self.offline_id = off.id
        off.close()
        if self.helpers:
            self.me = self.user(uniq("me"))
            self.peer = self.user(uniq("peer"))
        self.store_one("start")

    def store_one(self, label):
        """A message with an id to the offline user: acked 'stored'."""
        cid = "s%d" % len(self.stored)
        text = "#%d after %s: %s" % (len(self.stored), label, SQL_TEXT)
        self.a.send(self.offline_id, text, msg_id=cid)
        ack = self.a.ws.wait_for(lambda m: m.get("event") == EV_ACK and m.get("id") == cid,
                                 what="the ack of stored message " + cid)
        if ack.get("valid") is not True or ack.get("status") != "stored":
            raise AssertionError("message %s to the offline user: %r" % (cid, ack))
        self.stored.append(text)

    def check(self, label):
        """(a) bystanders talk, (b) the keeper logs in and one more message
        is stored, (c) the process is alive and clean.  Raises on failure."""
        self.srv.check()
        tag = "%s/%d" % (label, len(self.stored))
        self.a.send(self.b, "A->B " + tag)
        self.b.expect_message(self.a, "A->B " + tag)
        self.b.send(self.a, "B->A " + tag)
        self.a.expect_message(self.b, "B->A " + tag)
        keeper = self.user(self.keeper_name, do_register=False)
        keeper.close()
        self.store_one(label)
        for u in (self.a, self.b, self.me, self.peer):
            if u is not None:
                u.forget_presence()
        self.srv.check()

    def finish(self):
        """The offline user comes back: every stored message, in order, once.
        Then everyone leaves and the server stops cleanly (exit 0)."""
        off = self.user(self.offline_name, do_register=False)
        got = []
        try:
            while len(got) < len(self.stored):
                m = off.ws.wait_for(lambda m: m.get("event") == EV_MESSAGE, 10,
                                    what="stored message %d of %d" % (len(got) + 1, len(self.stored)))
                got.append(m)
            off.ws.expect_silence(0.3, allow=lambda m: m.get("event") in PRESENCE_EVENTS)
        finally:
            off.close()
        bad = [i for i, (m, text) in enumerate(zip(got, self.stored))
               if m.get("message") != text or m.get("sender") != self.a.id or m.get("stored") is not True]
        if bad:
            raise AssertionError("stored messages differ at %s: %r" % (bad, got[bad[0]]))
        for u in (self.a, self.b, self.me, self.peer):
            if u is not None:
                u.close()
        self.srv.stop()
        return "%d of %d delivered in order" % (len(got), len(self.stored))


# ---------------------------------------------------------------------------
# Running one case

def next_answer(ws, timeout=None):
    """The next JSON message that is not a user-list push."""
    while True:
        m = ws.recv_json(timeout)
        if not (isinstance(m, dict) and m.get("event") in PRESENCE_EVENTS):
            return m


def show(obj, limit=200):
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":")) if isinstance(obj, (dict, list)) else str(obj)
    return text if len(text) <= limit else text[:limit] + "...(%d chars)" % len(text)


def substitute(text, env):
    me = env.get_me() if "$TOKEN" in text else None
    return (text.replace("$TOKEN", me.token if me else "").replace("$PEER", env.peer.id if env.peer else "")
            .replace("$FAKE", FAKE_TOKEN))


def observe_state(ws, expected_state):
    """'open' if the probe is answered next (nothing else in between),
    'closed N' if the server closed (N its close code, None without one)."""
    if ws.server_closed:
        return "closed %s" % ws.close_code
    if isinstance(expected_state, tuple):
        try:
            return "closed %s" % ws.expect_close(10)
        except AssertionError as e:
            return "not closed (%s)" % str(e)[:80]
    try:
        ws.send_text(PROBE)
        got = next_answer(ws)
    except WebSocketClosed as e:
        return "closed %s" % e.code
    except (BrokenPipeError, ConnectionResetError):
        return "closed (reset)"
    except TimeoutError:
        return "open but the probe was not answered"
    if got == PROBE_ANSWER:
        return "open"
    return "open, but before the probe's answer came %s" % show(got)


def send_frames(ws, frames):
    """Frames as (opcode, payload, fin); the server may close mid-way."""
    try:
        ws.sock.settimeout(10)
        ws.sock.sendall(b"".join(frame_bytes(*f) for f in frames))
    except (BrokenPipeError, ConnectionResetError):
        pass


def run_ws_case(env, case):
    """text / raw / frames: send on a fresh or logged-in connection, read as
    many answers as expected, then the state."""
    user = env.get_me() if case.get("conn") == "user" else None
    ws = user.ws if user else env.fresh()
    try:
        kind, what = case["send"]
        if kind == "text":
            ws.send_text(substitute(what, env))
        elif kind == "raw":
            send_frames(ws, [(OP_TEXT, what, True)])
        else:
            send_frames(ws, [(op, substitute(p, env).encode() if isinstance(p, str) else p, fin)
                             for op, p, fin in what])
        answers = []
        for _ in case["expect"]:
            try:
                answers.append(next_answer(ws, case.get("timeout")))
            except WebSocketClosed:
                break
            except TimeoutError:
                answers.append("(no answer)")
        delivered = case.get("delivered")
        if delivered is not None:
            try:
                env.peer.expect_message(env.get_me(), delivered, timeout=5)
                answers.append("peer got %s" % json.dumps(delivered))
            except AssertionError as e:
                answers.append("peer: %s" % str(e)[:100])
        state = observe_state(ws, case["state"])
        return answers, state
    finally:
        if not user:
            ws.abort()


def run_http_case(env, case):
    port = {"http": env.srv.http_port, "chat": env.srv.chat_port,
            "https": env.srv.https_port}[case.get("port", "http")]
    data = case["send"][1]
    buf, closed = raw_exchange(port, data, timeout=case.get("timeout", 3))
    leaks = [mark.decode() for mark in (PASSWD_MARK, getattr(env, "canary", None)) if mark and mark in buf]
    answer = describe_http(buf, closed)
    if leaks:
        answer += " LEAKED " + ",".join(leaks)
    return [answer], ("closed" if closed else "open")


def run_case(env, case):
    kind = case["send"][0]
    if kind == "script":
        return case["send"][1](env)
    if kind == "http":
        return run_http_case(env, case)
    return run_ws_case(env, case)


def matches(case, answers, state):
    expect = case["expect"]
    if len(answers) != len(expect) + (1 if case.get("delivered") is not None else 0):
        return False
    if not all(m(a) for m, a in zip(expect, answers)):
        return False
    if case.get("delivered") is not None and not answers[-1].startswith("peer got"):
        return False
    return state == state_text(case["state"])


# ---------------------------------------------------------------------------
# Scripted cases (several steps; each returns (answers, state) as text)

def ping_flood(env):
    """1000 pings in one write, then 1000 one after another.  RFC 6455 5.5.3
    lets a peer that has not yet answered earlier pings answer only one of
    them, so at once: at least one pong, payloads of our pings, in order;
    one by one: every pong."""
    ws = env.fresh()
    n = 1000
    try:
        ws.sock.settimeout(10)
        ws.sock.sendall(b"".join(frame_bytes(OP_PING, b"p%d" % i) for i in range(n)))
        seen = []
        try:
            while True:      # until the server is quiet for 1 s
                op, payload = ws.recv(1.0)
                if op == OP_PONG:
                    seen.append(payload)
        except TimeoutError:
            pass
        numbers = [int(p[1:]) if re.fullmatch(rb"p\d+", p) else -1 for p in seen]
        in_order = all(0 <= a < b < n for a, b in zip(numbers, numbers[1:])) and all(0 <= x < n for x in numbers)
        first = "at once: %d pongs%s" % (len(seen), ", ours, in order" if in_order else ": %r" % seen[:5])
        answered = 0
        for i in range(n):
            ws.ping(b"q%d" % i)
            op, payload = ws.recv(5)
            while op != OP_PONG:
                op, payload = ws.recv(5)
            if payload != b"q%d" % i:
                break
            answered += 1
        return [first, "one by one: %d of %d pongs" % (answered, n)], observe_state(ws, "open")
    except WebSocketClosed as e:
        return ["closed %s during the flood" % e.code], "closed %s" % e.code
    finally:
        ws.abort()


def pongs_and_delivery(env, frames, pong_payloads, text):
    """Send frames on 'me'; collect the pongs; the peer must get text."""
    me = env.get_me()
    send_frames(me.ws, frames)
    pongs = []
    deadline = time.monotonic() + 1.5
    try:
        while len(pongs) < len(pong_payloads) and time.monotonic() < deadline:
            op, payload = me.ws.recv(max(0.01, deadline - time.monotonic()))
            if op == OP_PONG:
                pongs.append(payload)
            elif op == OP_TEXT:
                me.ws.pending.append(json.loads(payload))
    except (TimeoutError, WebSocketClosed):
        pass
    answers = ["pongs %s" % [p.decode() for p in pongs]]
    try:
        env.peer.expect_message(me, text, timeout=5)
        answers.append("peer got it")
    except AssertionError as e:
        answers.append("peer: %s" % str(e)[:100])
    return answers, observe_state(me.ws, "open")


def fragments_with_pings(env):
    me = env.get_me()
    body = json.dumps({"action": MESSAGE, "token": me.token, "target": env.peer.id,
                       "message": "three fragments, two pings"}).encode()
    third = len(body) // 3
    frames = [(OP_TEXT, body[:third], False), (OP_PING, b"mid-1", True), (OP_CONT, body[third:2 * third], False),
              (OP_PING, b"mid-2", True), (OP_CONT, body[2 * third:], True)]
    return pongs_and_delivery(env, frames, [b"mid-1", b"mid-2"], "three fragments, two pings")


def sql_name(env):
    """A name made of SQL metacharacters registers, logs in again and is
    found by lookup; LIKE wildcards find nobody."""
    name = "o'b\"r;--%_" + uniq("x")[:20] + "'); DROP TABLE users;--"
    answers = []
    first = env.user(name)
    answers.append("registered" if first.reply["username"] == name else "registered as %r" % first.reply["username"])
    first.close()
    again = env.user(name, do_register=False)
    answers.append("logged in, same id" if again.id == first.id else "logged in, id changed")
    again.ws.send_json({"action": 6, "token": again.token, "names": [name.upper(), "%", "_%", "*"]})
    found = [next_answer(again.ws) for _ in range(4)]
    answers.append("lookup: %s" % ", ".join(
        ("found" if f.get("valid") and f["user"]["id"] == first.id else f.get("error", show(f))) for f in found))
    state = observe_state(again.ws, "open")
    again.close()
    return answers, state


def sql_message(env):
    me = env.get_me()
    texts = ["'; DELETE FROM messages; --", "\" OR 1=1 --", "Robert'); DROP TABLE users;--",
             "%' UNION SELECT password FROM users --", "\\'; \\\"; \\x00; \\u0000"]
    answers = []
    for t in texts:
        me.send(env.peer, t)
        try:
            env.peer.expect_message(me, t, timeout=5)
            answers.append("ok")
        except AssertionError as e:
            answers.append(str(e)[:60])
    return ["delivered intact: %s" % ", ".join(answers)], observe_state(me.ws, "open")


def lookalike_name(env):
    """Look-alikes of an existing name: a Cyrillic letter among Latin ones
    mixes scripts, a zero-width space or an RTL override inside is an
    invisible character, another letter case is the same name: all refused
    (docs/PROTOCOL.md, "Names in Unicode")."""
    base = uniq("paypal")
    env.user(base).close()
    answers = []
    ws = env.fresh()
    try:
        for name in (base.replace("a", "\u0430"), base[:3] + "\u200b" + base[3:], base + "\u202e",
                     base.upper()):
            ws.send_json({"action": REGISTER, "name": name, "password": PASSWORD})
            r = next_answer(ws, 15)
            answers.append("registered" if r.get("valid") else r.get("error", show(r)))
        return ["; ".join(answers)], observe_state(ws, "open")
    finally:
        ws.abort()


def header_too_large(env):
    """libwebsockets 4.1 gives every connection max_http_header_data (4096
    bytes here) for the request head; a longer head must be refused (it
    closes without an answer) while a head just under it is served."""
    answers = []
    for port_key, path, size in (("http", "/", 3900), ("http", "/", 5000), ("http", "/", 64 * 1024),
                                 ("chat", "/", 5000)):
        port = env.srv.http_port if port_key == "http" else env.srv.chat_port
        upgrade = ("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n") if port_key == "chat" else "Connection: close\r\n"
        req = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%sX-Filler: %s\r\n\r\n"
               % (path, upgrade, "f" * size)).encode()
        buf, closed = raw_exchange(port, req, timeout=3)
        answers.append("%s %d B: %s" % (port_key, size, describe_http(buf, closed)))
    status = http_get(env.srv.http_port, "/")[0]
    answers.append("then GET / -> %d" % status)
    return ["; ".join(answers)], "-"


def tls_junk(what):
    def run(env):
        port = env.srv.https_port if what[1] == "https" else env.srv.chat_port
        kind = what[0]
        if kind == "random":
            buf, closed = raw_exchange(port, os.urandom(1024), timeout=3)
        elif kind == "plain-http":
            buf, closed = raw_exchange(port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", timeout=3)
        elif kind == "bad-record":   # a handshake record header, then garbage
            buf, closed = raw_exchange(port, b"\x16\x03\x01\x01\x00" + os.urandom(256), timeout=3)
        else:                       # half a ClientHello, held open while others are served
            hello = client_hello()
            sock = socket.create_connection((HOST, port), timeout=3)
            try:
                sock.sendall(hello[:len(hello) // 2])
                status = http_get(env.srv.https_port, "/", tls=True)[0]
                u = env.user(uniq("tlsmid"))
                served = "meanwhile HTTPS %d, wss login ok" % status
                u.close()
                sock.settimeout(0.5)
                try:
                    data = sock.recv(100)
                    held = "closed" if not data else "got %r" % data[:10]
                except socket.timeout:
                    held = "still waiting"
            finally:
                sock.close()
            return ["half ClientHello %s; %s" % (held, served)], "-"
        answer = "no HTTP answer" if not buf.startswith(b"HTTP/") else describe_http(buf, closed)
        return [answer + (", closed" if closed else ", still open")], "-"
    return run


def slow_reader(env):
    """A reader that never reads (small --max-queue): closed with 1008; the
    sender and the bystanders are served meanwhile."""
    me = env.get_me()
    sleeper = env.user(uniq("sleeper"))
    frame = frame_bytes(OP_TEXT, json.dumps({"action": MESSAGE, "token": me.token, "target": sleeper.id,
                                             "message": "s" * 60000}))
    # 65536 bytes of queue are a frame and a bit, but the kernel's buffers
    # on the way (each side's grows to megabytes) take a hundred frames or
    # more first on a busy machine.  The sender stops once the close is
    # logged: one that went on would only be queueing stored messages
    # behind its own check below.
    sent, logged = 0, False
    deadline = time.monotonic() + 20
    while sent < 600 and time.monotonic() < deadline and not logged:
        me.ws.sock.sendall(frame)
        sent += 1
        logged = sent % 10 == 0 and "event=slow_consumer" in env.srv.log_text()
    answers = ["closed and logged" if logged else "not logged after %d frames" % sent]
    me.send(env.peer, "sender still served")
    env.peer.expect_message(me, "sender still served")
    answers.append("sender served")
    code = sleeper.ws.expect_close(10)
    answers.append("sleeper closed %s (%r)" % (code, (sleeper.ws.close_reason or b"").decode("utf-8", "replace")))
    sleeper.ws.abort()
    return answers, observe_state(me.ws, "open")


def rate_limit(env, limit):
    me, peer = env.get_me(), env.peer
    n = 3 * limit
    me.ws.sock.settimeout(10)
    me.ws.sock.sendall(b"".join(frame_bytes(OP_TEXT, json.dumps(
        {"action": MESSAGE, "token": me.token, "target": peer.id, "message": "r%d" % i})) for i in range(n)))
    expected_error = {"valid": False, "error": "Rate limit exceeded: at most %d requests per second." % limit}
    delivered, errors, other = [], 0, []
    deadline = time.monotonic() + 10
    while len(delivered) + errors < n and time.monotonic() < deadline:
        for m in peer.ws.drain(0.1):
            if m.get("event") == EV_MESSAGE:
                delivered.append(int(m["message"][1:]))
        for m in me.ws.drain(0.1):
            if m == expected_error:
                errors += 1
            elif m.get("event") not in PRESENCE_EVENTS:
                other.append(m)
    if other:
        first = "other answers: %s" % show(other[:2])
    elif len(delivered) + errors != n:
        first = "%d delivered + %d refused of %d" % (len(delivered), errors, n)
    elif delivered != sorted(delivered) or errors == 0:
        first = "order broken or nothing refused (%d refused)" % errors
    else:
        first = "each delivered in order or refused with the text"
    time.sleep(1.1)             # the bucket refills
    me.send(peer, "after the pause")
    try:
        peer.expect_message(me, "after the pause")
        second = "recovered after 1 s"
    except AssertionError as e:
        second = "not recovered: %s" % str(e)[:80]
    return [first, second], observe_state(me.ws, "open")


def per_address(env):
    """--max-connections-per-address 3; the bystanders hold two."""
    third = env.user(uniq("third"))
    fourth = connect(env.srv.chat_port)
    try:
        code = fourth.expect_close(5)
        reason = (fourth.close_reason or b"").decode("utf-8", "replace")
    finally:
        fourth.abort()
    answers = ["3rd served", "4th closed %s%s" % (code, " with a reason" if reason else " without a reason")]
    third_state = observe_state(third.ws, "open")
    third.close()
    again = None
    deadline = time.monotonic() + 3
    while again is None and time.monotonic() < deadline:
        ws = connect(env.srv.chat_port)
        try:
            ws.send_text(PROBE)
            if next_answer(ws, 2) == PROBE_ANSWER:
                again = ws
                break
        except (WebSocketClosed, TimeoutError):
            time.sleep(0.1)
        ws.abort()
    answers.append("after the 3rd left: a new one is served" if again else "no slot freed")
    if again:
        again.close(wait=0.2)
    answers.append("4th's reason: %r" % reason)
    return answers[:3], third_state


# ---------------------------------------------------------------------------
# The table

def wrong_type_cases():
    """Every field of every request with values of the wrong type."""
    cases = []
    kinds = [("number", 5), ("true", True), ("null", None), ("array", ["x"]), ("object", {"a": 1})]

    def add(action, name, req, field, value_kind, value, expect, conn="fresh", note=""):
        body = dict(req)
        body[field] = value
        cases.append(dict(name="%s: '%s' is %s" % (name, field, value_kind), env="main",
                          send=("text", json.dumps(body)), expect=[expect], state="open", conn=conn,
                          note=note))

    for kind, value in kinds[1:] + [("string", "1"), ("fraction", 1.5)]:   # 5 is an action
        cases.append(dict(name="'action' is %s" % kind, env="main", send=("text", json.dumps({"action": value})),
                          expect=[NOT_INTEGER], state="open"))
    for action, name in ((LOGIN, "Login"), (REGISTER, "Register")):
        req = {"action": action, "name": uniq("wt"), "password": PASSWORD, "pubKey": "pk"}
        for field in ("name", "password"):
            for kind, value in kinds:
                add(action, name, req, field, kind, value, FILL_ALL)
        for kind, value in kinds:
            if kind == "null":   # null counts as absent
                if action == REGISTER:
                    r = dict(req, name=uniq("nullkey"))
                    cases.append(dict(name="Register: 'pubKey' is null (absent)", env="main",
                                      send=("text", json.dumps(dict(r, pubKey=None))), expect=[REGISTERED],
                                      state="open"))
                continue
            add(action, name, req, "pubKey", kind, value, login_error("Field 'pubKey' must be a string."))
        for kind, value in kinds + [("unknown", "all")]:
            add(action, name, req, "presence", kind, value,
                login_error("Field 'presence' must be \"full\", \"delta\" or \"none\"."))
    cases.append(dict(name="Register: 'receipts' is a string (ignored)", env="main",
                      send=("text", json.dumps({"action": REGISTER, "name": uniq("rc"), "password": PASSWORD,
                                                "receipts": "yes"})),
                      expect=[REGISTERED], state="open", note="not in PROTOCOL.md: anything but true is 'no'"))
    for kind, value in kinds:
        cases.append(dict(name="Logout: 'token' is %s" % kind, env="main",
                          send=("text", json.dumps({"action": 2, "token": value})), expect=[], state="open",
                          note="no answer (like an unknown token)"))
    msg = {"action": MESSAGE, "token": "$TOKEN", "target": "$PEER", "message": "m", "id": "c1"}
    for kind, value in kinds:
        add(MESSAGE, "Message", msg, "token", kind, value, INVALID_USER, conn="user")
        add(MESSAGE, "Message", msg, "target", kind, value, message_error("Field 'target' must be a string."),
            conn="user")
        add(MESSAGE, "Message", msg, "message", kind, value, message_error("Field 'message' must be a string."),
            conn="user")
        add(MESSAGE, "Message", msg, "id", kind, value,
            message_error("Field 'id' must be a string of 1 to 64 characters."), conn="user")
    auth = {"action": 4, "token": "$FAKE"}
    for kind, value in kinds:
        add(4, "Authorize", auth, "token", kind, value, INVALID_USER)
        add(4, "Authorize", auth, "presence", kind, value,
            Exact({"valid": False, "event": 0, "error": "Field 'presence' must be \"full\", \"delta\" or \"none\"."}))
    receipt = {"action": 5, "token": "$TOKEN", "ids": ["x"]}
    lookup = {"action": 6, "token": "$TOKEN", "names": ["x"]}
    ids_error = Exact({"valid": False, "error": "Field 'ids' must be an array of 1 to 256 message ids."})
    names_error = Exact({"valid": False, "event": EV_LOOKUP, "error": "Field 'names' must be an array of 1 to 64 names."})
    for kind, value in kinds:
        add(5, "Receipt", receipt, "token", kind, value, INVALID_USER, conn="user")
        add(6, "UserLookup", lookup, "token", kind, value, INVALID_USER, conn="user")
    for kind, value in [("number", 5), ("string", "x"), ("null", None), ("object", {"a": "x"}),
                        ("empty array", []), ("array of numbers", [1, 2]), ("array holding null", [None]),
                        ("array holding an array", [["x"]])]:
        add(5, "Receipt", receipt, "ids", kind, value, ids_error, conn="user")
        add(6, "UserLookup", lookup, "names", kind, value, names_error, conn="user")
    return cases


def group_error(text, event=EV_GROUP, req_id=None):
    """A group request's error: events 8 and 9 carry the request's id back."""
    obj = {"valid": False, "event": event, "error": text}
    if req_id is not None:
        obj["id"] = req_id
    return Exact(obj)


def group_rejected(text, req_id, group=None):
    """A GroupMessageRequest's error when it has an id: a rejected ack."""
    obj = {"valid": False, "event": EV_ACK, "id": req_id, "status": "rejected", "error": text}
    if group is not None:
        obj["group"] = group
    return Exact(obj)


def group_cases():
    """Groups (docs/PROTOCOL.md, "Groups (ext) / Errors"): every error the
    gateway answers by itself, before anything reaches the router, with the
    default limits (64 characters of name, 1024 members)."""
    cases = []
    name_error = "Field 'name' must be a string of 1 to 64 characters without control characters."
    members_error = "Field 'members' must be an array of 1 to 1024 user ids."
    member_id_error = "Field 'members' must hold user ids of 1 to 64 bytes without control characters."
    group_field_error = "Field 'group' must be a string."
    op_error = "Field 'op' must be one of add, remove, promote, demote, rename, leave."
    id_error = "Field 'id' must be a string of 1 to 64 characters."

    def add(name, body, expect):
        cases.append(dict(name=name, env="main", send=("text", json.dumps(body)), expect=[expect],
                          state="open", conn="user"))

    create = {"action": GROUP_CREATE, "token": "$TOKEN", "name": "Climbing", "members": ["x"], "id": "r1"}
    update = {"action": GROUP_UPDATE, "token": "$TOKEN", "group": "G", "op": "add", "members": ["x"], "id": "r2"}
    group_list = {"action": GROUP_LIST, "token": "$TOKEN", "id": "r3"}
    message = {"action": GROUP_MESSAGE, "token": "$TOKEN", "group": "G", "message": "m", "id": "c1"}
    wrong = [("number", 5), ("true", True), ("null", None), ("array", ["x"]), ("object", {"a": 1})]
    for what, req in (("GroupCreate", create), ("GroupUpdate", update), ("GroupList", group_list),
                      ("GroupMessage", message)):
        for kind, value in wrong:
            add("%s: 'token' is %s" % (what, kind), dict(req, token=value), INVALID_USER)
        add("%s: 'token' missing" % what, {k: v for k, v in req.items() if k != "token"}, INVALID_USER)
    # names: 1 to 64 characters (code points), no control character
    for kind, value in wrong + [("empty", ""), ("65 characters", "\u00e9" * 65), ("with a tab", "a\tb"),
                                ("with a newline", "a\nb"), ("with DEL", "a\x7f"), ("with C1 U+0085", "a\u0085")]:
        add("GroupCreate: 'name' is %s" % kind, dict(create, name=value), group_error(name_error, req_id="r1"))
        add("GroupUpdate rename: 'name' is %s" % kind, dict(update, op="rename", name=value),
            group_error(name_error, req_id="r2"))
    add("GroupCreate: 'name' missing", {k: v for k, v in create.items() if k != "name"},
        group_error(name_error, req_id="r1"))
    # members
    for kind, value in [("number", 5), ("string", "x"), ("null", None), ("object", {"a": "x"}),
                        ("array of numbers", [1, 2]), ("array holding null", ["x", None]),
                        ("array holding an array", [["x"]]), ("1025 ids", ["u%d" % i for i in range(1025)])]:
        add("GroupCreate: 'members' is %s" % kind, dict(create, members=value),
            group_error(members_error, req_id="r1"))
        add("GroupUpdate add: 'members' is %s" % kind, dict(update, members=value),
            group_error(members_error, req_id="r2"))
    for op in ("add", "remove", "promote", "demote"):
        add("GroupUpdate %s: 'members' is empty" % op, dict(update, op=op, members=[]),
            group_error(members_error, req_id="r2"))
        add("GroupUpdate %s: 'members' missing" % op,
            {k: v for k, v in dict(update, op=op).items() if k != "members"}, group_error(members_error, req_id="r2"))
    for kind, value in [("empty", ""), ("65 bytes", "x" * 65), ("with a newline", "a\nb"), ("with a tab", "a\tb"),
                        ("with a C1 control", "a\u0085")]:
        add("GroupCreate: a member id %s" % kind, dict(create, members=["ok", value]),
            group_error(member_id_error, req_id="r1"))
    # group and op
    for kind, value in wrong + [("empty", ""), ("65 bytes", "g" * 65)]:
        add("GroupUpdate: 'group' is %s" % kind, dict(update, group=value),
            group_error(group_field_error, req_id="r2"))
        add("GroupMessage: 'group' is %s" % kind, dict(message, group=value), group_rejected(group_field_error, "c1"))
    add("GroupUpdate: 'group' missing", {k: v for k, v in update.items() if k != "group"},
        group_error(group_field_error, req_id="r2"))
    for kind, value in wrong + [("'create'", "create"), ("'list'", "list"), ("'ADD'", "ADD"), ("empty", "")]:
        add("GroupUpdate: 'op' is %s" % kind, dict(update, op=value), group_error(op_error, req_id="r2"))
    add("GroupUpdate: 'op' missing", {k: v for k, v in update.items() if k != "op"},
        group_error(op_error, req_id="r2"))
    # the request's id: not echoed when it is not 1-64 characters
    for kind, value in [("number", 5), ("empty", ""), ("null", None), ("65 characters", "i" * 65)]:
        add("GroupCreate: 'id' is %s" % kind, dict(create, id=value), group_error(id_error))
        add("GroupUpdate: 'id' is %s" % kind, dict(update, id=value), group_error(id_error))
        add("GroupList: 'id' is %s" % kind, dict(group_list, id=value), group_error(id_error, EV_GROUP_LIST))
        add("GroupMessage: 'id' is %s" % kind, dict(message, id=value), group_error(id_error, EV_GROUP_MESSAGE))
    # the message: as for a MessageRequest; a rejected ack when there is an id
    for kind, value in wrong:
        add("GroupMessage: 'message' is %s" % kind, dict(message, message=value),
            group_rejected("Field 'message' must be a string.", "c1", "G"))
    add("GroupMessage: 'message' missing", {k: v for k, v in message.items() if k != "message"},
        group_rejected("Field 'message' is missing.", "c1", "G"))
    add("GroupMessage: 'message' of 65,537 bytes", dict(message, message="x" * 65537),
        group_rejected("Field 'message' is too long (at most 65536 bytes).", "c1", "G"))
    add("GroupMessage without an id: 'message' is a number",
        {k: v for k, v in dict(message, message=5).items() if k != "id"},
        group_error("Field 'message' must be a string.", EV_GROUP_MESSAGE))
    add("GroupMessage without an id: 'group' missing",
        {k: v for k, v in message.items() if k not in ("id", "group")},
        group_error(group_field_error, EV_GROUP_MESSAGE))
    return cases


def build_cases():
    c = []

    def add(name, send, expect, state="open", env="main", **kw):
        c.append(dict(name=name, send=send, expect=expect, state=state, env=env, **kw))

    # -- invalid UTF-8: 1007 -------------------------------------------------
    for label, bad in (("0xff 0xfe", b"\xff\xfe"), ("overlong '/' 0xc0 0xaf", b"\xc0\xaf"),
                       ("UTF-16 surrogate 0xed 0xa0 0x80", b"\xed\xa0\x80"),
                       ("above U+10FFFF 0xf4 0x90 0x80 0x80", b"\xf4\x90\x80\x80"),
                       ("truncated 0xe2 0x82 at the end", b"\xe2\x82")):
        add("invalid UTF-8: " + label, ("raw", b'{"action":1,"name":"x' + bad + b'","password":"x"}'
                                        if "end" not in label else b'{"action":1,"name":"x' + bad),
            [], ("closed", 1007))
    add("invalid UTF-8 split across fragments", ("frames", [(OP_TEXT, b'{"action":0,"name":"\xe2', False),
                                                            (OP_CONT, b'(\xa1","password":"x"}', True)]),
        [], ("closed", 1007))
    add("invalid UTF-8 in a binary frame (not text: no 1007)", ("frames", [(OP_BINARY, b"\xff\xfe\xc0", True)]),
        [BINARY])
    add("lone surrogate escape \\ud800 (valid UTF-8, bad JSON)",
        ("text", '{"action":1,"name":"\\ud800x","password":"x"}'), [NOT_JSON])

    # -- deep nesting and huge numbers -------------------------------------------
    add("nesting: 500,000 '[' (1 MB)", ("text", "[" * 500000 + "]" * 500000), [NOT_JSON],
        note="valid JSON grammar; cJSON stops at depth 1000")
    add("nesting: 100,000 objects inside the request", ("text", '{"action":1,"x":' + '{"a":' * 100000 + "1"
                                                        + "}" * 100000 + "}"), [NOT_JSON])
    add("nesting: 500 arrays is fine", ("text", '{"action":99,"x":' + "[" * 500 + "]" * 500 + "}"),
        [UNKNOWN_ACTION])
    add('"action": 1e400', ("text", '{"action":1e400}'), [NOT_INTEGER])
    add('"action": -1e400', ("text", '{"action":-1e400}'), [NOT_INTEGER])
    add('"action": 99999999999999999999', ("text", '{"action":99999999999999999999}'), [UNKNOWN_ACTION])
    add('"action": -1', ("text", '{"action":-1}'), [UNKNOWN_ACTION])
    add('"action": NaN (not JSON)', ("text", '{"action":NaN}'), [NOT_JSON])
    add('"name": 1e400 in a Register', ("text", '{"action":1,"name":1e400,"password":"x"}'), [FILL_ALL])
    add('"id": 99999999999999999999 in a Message', ("text", '{"action":3,"token":"$TOKEN","target":"$PEER",'
                                                    '"message":"m","id":99999999999999999999}'),
        [message_error("Field 'id' must be a string of 1 to 64 characters.")], conn="user")

    # -- duplicate keys: cJSON takes the first --------------------------------------
    add("duplicate 'action' (99 then 1)", ("text", '{"action":99,"action":1,"name":"x","password":"x"}'),
        [UNKNOWN_ACTION], note="not in PROTOCOL.md: the first occurrence wins")
    add("duplicate 'message' and 'target'", ("text", '{"action":3,"token":"$TOKEN","target":"$PEER",'
                                             '"message":"first","message":"second","target":"nobody"}'),
        [], conn="user", delivered="first", note="not in PROTOCOL.md: the first occurrence wins")

    # -- NUL ---------------------------------------------------------------------------
    add("raw NUL inside the name string", ("raw", b'{"action":1,"name":"a\x00b","password":"x"}'), [NOT_JSON])
    add("raw NUL inside a message", ("raw", b'{"action":3,"token":"t","target":"u","message":"hi\x00there"}'),
        [NOT_JSON])
    add("raw NUL between tokens", ("raw", b'{"action":99,\x00"x":1}'), [NOT_JSON])
    add("\\u0000 escape in a name", ("text", '{"action":1,"name":"a\\u0000b","password":"x"}'),
        [login_error(NUL_TEXT)], note="error text not in PROTOCOL.md")
    add("\\u0000 escape in a message", ("text", '{"action":3,"token":"$TOKEN","target":"$PEER",'
                                        '"message":"a\\u0000b"}'),
        [message_error(NUL_TEXT)], conn="user", note="error text not in PROTOCOL.md")
    add("escaped backslash then 'u0000' is plain text", ("text", '{"action":3,"token":"$TOKEN","target":"$PEER",'
                                                         '"message":"a\\\\u0000b"}'),
        [], conn="user", delivered="a\\u0000b")

    # -- binary frames -----------------------------------------------------------------
    add("binary frame holding a valid request", ("frames", [(OP_BINARY, json.dumps(
        {"action": REGISTER, "name": uniq("bin"), "password": PASSWORD}).encode(), True)]), [BINARY])
    add("binary frame of junk", ("frames", [(OP_BINARY, os.urandom(300), True)]), [BINARY])
    add("binary message in 2 fragments", ("frames", [(OP_BINARY, b"\x01\x02", False), (OP_CONT, b"\x03", True)]),
        [BINARY])
    add("empty binary frame", ("frames", [(OP_BINARY, b"", True)]), [BINARY])

    # -- fragmentation and control frames ------------------------------------------------
    body = '{"action":3,"token":"$TOKEN","target":"$PEER","message":"in three fragments \u00e9\U0001F642"}'
    add("a good message in 3 fragments", ("frames", [(OP_TEXT, body[:20], False), (OP_CONT, body[20:60], False),
                                                      (OP_CONT, body[60:], True)]),
        [], conn="user", delivered="in three fragments \u00e9\U0001F642")
    add("3 fragments with a ping between each", ("script", fragments_with_pings),
        [Is("pongs ['mid-1', 'mid-2']", "pongs ['mid-1']", "pongs ['mid-2']"), Is("peer got it")],
        note="RFC 6455 5.5.3: pings before a pong is sent may get one pong")
    add("ping flood: 1000 pings", ("script", ping_flood),
        [Matches(r"at once: [1-9][0-9]* pongs, ours, in order"), Is("one by one: 1000 of 1000 pongs")],
        note="lws 4.1 answers the first of the pings that arrive before its pong is written")
    add("continuation frame without a start", ("frames", [(OP_CONT, b"abc", True)]), [], ("closed", 1002),
        note="RFC 6455; not in PROTOCOL.md")
    add("new text frame inside a fragmented one", ("frames", [(OP_TEXT, b'{"a', False), (OP_TEXT, b"x", True)]),
        [], ("closed", 1002), note="RFC 6455; not in PROTOCOL.md")
    add("fragmented ping", ("frames", [(OP_PING, b"p", False)]), [], ("closed", 1002),
        note="RFC 6455; not in PROTOCOL.md")

    # -- oversized ------------------------------------------------------------------------------
    head = '{"action":99,"x":"'
    add("exactly 1 MiB is read", ("text", head + "z" * (MIB - len(head) - 2) + '"}'), [UNKNOWN_ACTION],
        timeout=10)
    add("text frame of 1 MiB + 1", ("text", head + "z" * (MIB - len(head) - 1) + '"}'), [],
        ("closed", 1009))
    add("3 fragments adding up to 1.2 MiB", ("frames", [(OP_TEXT, b'{"action":0,"x":"' + b"a" * 409600, False),
                                                        (OP_CONT, b"a" * 409600, False),
                                                        (OP_CONT, b"a" * 409600 + b'"}', True)]),
        [], ("closed", 1009))
    add("binary frame of 2 MiB", ("frames", [(OP_BINARY, b"\x00" * (2 * MIB), True)]), [], ("closed", 1009))

    # -- wrong field types ------------------------------------------------------------------------
    c.extend(wrong_type_cases())
    c.extend(group_cases())

    # -- names: control and look-alike characters ----------------------------------------------------
    def reg(name):
        return ("text", json.dumps({"action": REGISTER, "name": name, "password": PASSWORD}))
    u = uniq("n")
    add("name with a zero-width space U+200B", reg(u[:2] + "\u200b" + u[2:]), [INVISIBLE])
    add("name with an RTL override U+202E", reg("\u202e" + u), [INVISIBLE])
    add("name with a BOM U+FEFF", reg(u + "\ufeff"), [INVISIBLE])
    add("name with a soft hyphen U+00AD", reg(u[:2] + "\u00ad" + u[2:]), [INVISIBLE])
    add("name with a BEL control U+0007", reg(u + "\u0007"), [INVISIBLE])
    add("name with a C1 control U+0085", reg(u + "\u0085"), [INVISIBLE])
    add("name with a tab", reg(u[:2] + "\t" + u[2:]), [INVISIBLE])
    add("name with a Hangul filler U+3164", reg(u + "\u3164"), [INVISIBLE])
    add("name starting with NBSP", reg("\u00a0" + u), [SPACE_AT_ENDS])
    add("name ending with NBSP", reg(u + "\u00a0"), [SPACE_AT_ENDS])
    add("name ending with an ideographic space", reg(u + "\u3000"), [SPACE_AT_ENDS])
    add("name with NBSP in the middle is fine", reg(u[:3] + "\u00a0" + u[3:]), [REGISTERED])
    add("name of 65 characters", reg("\u00e9" * 65), [login_error("Name is too long (at most 64 characters).")])
    add("look-alike names (Cyrillic a, ZWSP, RTL, other case)", ("script", lookalike_name),
        [Is("Name mixes letters of different scripts or number systems.; "
            "Name contains a control or invisible character.; "
            "Name contains a control or invisible character.; Username already exists.")])

    # -- SQL metacharacters --------------------------------------------------------------------------
    add("SQL metacharacters in a name", ("script", sql_name),
        [Is("registered"), Is("logged in, same id"), Is("lookup: found, No such user., No such user., No such user.")])
    add("SQL metacharacters in messages", ("script", sql_message), [Is("delivered intact: ok, ok, ok, ok, ok")])

    # -- path traversal over raw HTTP ----------------------------------------------------------------
    # PROTOCOL.md ("HTTP requests the parser changes or refuses"): lws turns
    # a last segment `..` / `%2e%2e` into "/" (the index page), drops a `%00`
    # inside a segment with the connection, and refuses a request head over
    # 4 KiB the same way; every other spelling is answered 400, 403 or 404.
    # Never a byte from outside html/ (the canary next to it, /etc/passwd).
    def parser_outcome(path):
        last = path.rstrip("/").rsplit("/", 1)[-1].lower()
        if last in ("..", "%2e%2e"):
            return "index"
        if path in ("/index.html%00.txt", "/a%00b"):
            return "closed"
        return None

    def get(path, extra=""):
        return ("http", ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%sConnection: close\r\n\r\n"
                         % (path, extra)).encode("latin-1"))

    for path in ("/../secret.txt", "/../../../../../../etc/passwd", "/%2e%2e/secret.txt", "/%2E%2E/secret.txt",
                 "/.%2e/secret.txt", "/%2e./secret.txt", "/%2e%2e%2fsecret.txt", "/..%2fsecret.txt",
                 "/..%2Fsecret.txt", "/%252e%252e/secret.txt", "/%252e%252e%252fsecret.txt",
                 "/..\\secret.txt", "/..%5csecret.txt", "/%2e%2e%5csecret.txt", "/%c0%ae%c0%ae/secret.txt",
                 "/..%c0%afsecret.txt", "/%e0%80%ae%e0%80%ae/secret.txt", "/./../secret.txt",
                 "/html/../../secret.txt", "/index.html/../../secret.txt", "/..;/secret.txt",
                 "/....//secret.txt", "/..%00/secret.txt", "/%00../secret.txt", "/index.html%00.txt",
                 "/%u002e%u002e/secret.txt", "/..", "/%2e%2e", "/html/..", "/.git/config", "/.htpasswd",
                 "//etc/passwd", "/%2fetc%2fpasswd"):
        outcome = parser_outcome(path)
        if outcome == "closed":
            add("GET " + path, get(path), [Is("no answer, closed")], "closed",
                note="PROTOCOL.md: refused by the parser, closed without an answer")
        elif outcome == "index":
            add("GET " + path, get(path), [http_status(200)], "closed",
                note="PROTOCOL.md: lws makes the path '/', the index page")
        else:
            add("GET " + path, get(path), [http_status(400, 403, 404)], "closed")
    add("GET absolute-form http://127.0.0.1/../secret.txt", get("http://127.0.0.1/../secret.txt"),
        [http_status(400, 403, 404)], "closed")
    add("GET /../secret.txt over HTTP/1.0", ("http", b"GET /../secret.txt HTTP/1.0\r\n\r\n"),
        [http_status(400, 403, 404)], "closed")
    add("upgrade to /../secret.txt on the chat port", get("/../secret.txt"),
        [http_status(400, 403, 404, 426)], "closed", port="chat",
        note="the chat port serves no files (426 for a plain GET)")

    # -- a header larger than the server accepts ----------------------------------------------------------
    add("request head over 4 KiB (lws max_http_header_data)", ("script", header_too_large),
        [Is("http 3900 B: HTTP 200; http 5000 B: no answer, closed; http 65536 B: no answer, closed; "
            "chat 5000 B: no answer, closed; then GET / -> 200")], "-",
        note="lws 4.1: 'Ran out of header data space', connection dropped without a status")
    add("36 header lines of 120 B (4.3 KiB in all)",
        get("/", "".join("X-H%02d: %s\r\n" % (i, "v" * 112) for i in range(36))),
        [Is("no answer, closed")], "closed", note="PROTOCOL.md: a request head over 4 KiB is refused")
    add("request target of 3.5 KiB", get("/" + "t" * 3584), [http_status(404)], "closed",
        note="under the 4 KiB head limit: an ordinary missing file")
    add("request target of 5 KiB", get("/" + "t" * 5120), [Is("no answer, closed")], "closed",
        note="PROTOCOL.md: a request head over 4 KiB is refused")
    add("request target of 9 KiB", get("/" + "t" * 9216), [Is("no answer, closed")], "closed",
        note="PROTOCOL.md: a request head over 4 KiB is refused")

    # -- TLS (own server, --self-signed) --------------------------------------------------------------------
    for label, what in (("1 KiB of random bytes to the HTTPS port", ("random", "https")),
                        ("1 KiB of random bytes to the WSS chat port", ("random", "chat")),
                        ("plain HTTP to the HTTPS port", ("plain-http", "https")),
                        ("plain HTTP to the WSS chat port", ("plain-http", "chat")),
                        ("handshake record header then garbage", ("bad-record", "https"))):
        add(label, ("script", tls_junk(what)), [Is("no HTTP answer, closed")], "-", env="tls")
    add("a ClientHello cut short, held open", ("script", tls_junk(("half-hello", "https"))),
        [Is("half ClientHello still waiting; meanwhile HTTPS 200, wss login ok",
            "half ClientHello closed; meanwhile HTTPS 200, wss login ok")], "-", env="tls")

    # -- limits (own servers) ---------------------------------------------------------------------------------
    add("a reader that never reads (--max-queue 65536)", ("script", slow_reader),
        [Is("closed and logged"), Is("sender served"), Is("sleeper closed 1008 ('Slow consumer')")],
        env="slow",
        note="reason text not in PROTOCOL.md")
    add("150 messages at once (--rate-limit 50 --rate-burst 50)", ("script", lambda env: rate_limit(env, 50)),
        [Is("each delivered in order or refused with the text"), Is("recovered after 1 s")], env="rate")
    add("4 connections from one address (--max-connections-per-address 3)", ("script", per_address),
        [Is("3rd served"), Is("4th closed 1008 with a reason"), Is("after the 3rd left: a new one is served")],
        env="peraddr")
    return c


ENVS = {
    "main": dict(canary=True),
    "tls": dict(args=["--self-signed"], tls=True),
    "slow": dict(args=["--max-queue", "65536"]),
    "rate": dict(args=["--rate-limit", "50", "--rate-burst", "50"]),
    "peraddr": dict(args=["--max-connections-per-address", "3"], helpers=False),
}


def expected_text(case):
    parts = [str(m) for m in case["expect"]]
    if case.get("delivered") is not None:
        parts.append("peer got %s" % json.dumps(case["delivered"]))
    if not parts:
        parts = ["(no answer)"]
    return " ; ".join(parts) + "  => " + state_text(case["state"])


def print_table(rows, out=sys.stdout):
    width = max(len(r[1]) for r in rows)
    out.write("\n%-4s %-*s  expected / observed\n" % ("ok", width, "case"))
    for ok, name, expected, observed, note in rows:
        out.write("%-4s %-*s  %s\n" % ("ok" if ok else "FAIL", width, name, expected))
        if not ok or observed != expected:
            out.write("%-4s %-*s  %s\n" % ("", width, "", "OBSERVED: " + observed if not ok else observed))
        if note:
            out.write("%-4s %-*s  (%s)\n" % ("", width, "", note))
    out.flush()


class BadInput(unittest.TestCase):

    def run_env(self, key, cases, rows):
        """The cases of one server, each followed by the checks; then the
        stored messages.  Appends a row per case; returns the failed ones."""
        env = Env(key, **ENVS[key])
        failed = []
        try:
            env.start()
            for cs in cases:
                try:
                    answers, state = run_case(env, cs)
                    observed = " ; ".join(show(a) for a in answers) or "(no answer)"
                    observed += "  => " + state
                    ok = matches(cs, answers, state)
                except Exception as e:    # a case that breaks the harness still gets its row
                    observed, ok = "ERROR %s: %s" % (type(e).__name__, str(e)[:300]), False
                try:
                    env.check(cs["name"][:30])
                except Exception as e:
                    observed += "  | AFTER-CHECK FAILED: %s" % str(e)[:300]
                    ok = False
                rows.append((ok, "[%s] %s" % (key, cs["name"]), expected_text(cs), observed, cs.get("note", "")))
                if not ok:
                    failed.append(rows[-1])
            try:
                final = env.finish()
                ok = True
            except Exception as e:
                final, ok = "ERROR %s: %s" % (type(e).__name__, str(e)[:300]), False
            rows.append((ok, "[%s] end: the offline user gets every stored message" % key,
                         "%d of %d delivered in order  => server exits 0" % (len(env.stored), len(env.stored)),
                         final + ("  => server exits 0" if ok else ""), ""))
            if not ok:
                failed.append(rows[-1])
        except Exception as e:
            rows.append((False, "[%s] server set-up" % key, "starts, witnesses log in",
                         "ERROR %s: %s" % (type(e).__name__, str(e)[:300]), ""))
            failed.append(rows[-1])
        finally:
            if failed:
                dump_log(env.srv)
            env.srv.cleanup()
        return failed

    def test_bad_input_table(self):
        began = time.monotonic()
        cases = build_cases()
        names = [cs["name"] for cs in cases]
        self.assertEqual(len(names), len(set(names)), "case names are unique")
        rows, failures, order = [], [], []
        for cs in cases:
            if cs["env"] not in order:
                order.append(cs["env"])
        for key in order:
            failures += self.run_env(key, [cs for cs in cases if cs["env"] == key], rows)
        print_table(rows)
        sys.stdout.write("%d cases on %d servers, %d failed, %.1f s\n"
                         % (len(rows), len(order), len(failures), time.monotonic() - began))
        if failures:
            self.fail("%d of %d cases failed:\n%s" % (len(failures), len(rows), "\n".join(
                "  %s\n    expected: %s\n    observed: %s" % (r[1], r[2], r[3]) for r in failures)))


if __name__ == "__main__":
    unittest.main(verbosity=2)
