#!/usr/bin/env python3
"""qmsattack - hostile clients for the attack scenarios of scripts/bench.

Speaks only the public protocol (WebSocket on the chat port, HTTP), so it
can be pointed at any compatible server on loopback.  One attack per run:

  flood-close     pairs: a sink logs in with a 4 KiB receive buffer and does
                  not read; a flooder (its own 127.0.1.x address) sends it
                  60 KB messages as fast as it can; then the sinks read a
                  little and every socket closes
  zero-window     readers with a 4 KiB window that never read, sent 60 KB
                  messages by a few senders
  slowloris       handshakes that never end: one header byte per second
  reset-mid-frame half of a 60 KB frame, then a TCP reset, again and again
  half-close      readers with megabytes waiting for them send their FIN
  byte-frames     1 MiB messages in 1 KiB fragments, sent a byte per packet
  conn-storm      connections (WebSocket handshakes) up to --max-conns, held
                  a second, closed, again
  legacy-bursts   original-protocol clients (whole user lists) log in and
                  leave in bursts

  qmsattack.py --port P --attack NAME [--seconds S] [--scale F] [--max-conns N]

--scale multiplies the number of attacking connections (1 = the figures in
docs/BENCHMARKS.md, 0.2 for the seconds-long run in CI).  Prints one line
"RESULT {json}": what the attack did (connections, bytes, errors seen).
Standard library only.
"""

import argparse
import base64
import json
import os
import socket
import struct
import sys
import threading
import time

HOST = "127.0.0.1"
REGISTER = 1


# --- a minimal RFC 6455 client ----------------------------------------------

def mask(payload, key):
    n = len(payload)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big") if n else b""


def frame(payload, opcode=0x1, fin=True):
    key = os.urandom(4)
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    if n < 126:
        head = struct.pack("!BB", b0, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", b0, 0x80 | 127, n)
    return head + key + mask(payload, key)


def upgrade_request(port):
    key = base64.b64encode(os.urandom(16)).decode()
    return ("GET / HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (HOST, port, key)).encode()


def ws_connect(port, source=None, rcvbuf=None, timeout=10.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    if source:
        s.bind((source, 0))
    s.connect((HOST, port))
    s.sendall(upgrade_request(port))
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = s.recv(4096)
        if not data:
            raise OSError("closed during the handshake")
        buf += data
    if not buf.startswith(b"HTTP/1.1 101"):
        raise OSError("handshake refused: %r" % buf[:40])
    return s, buf.split(b"\r\n\r\n", 1)[1]


class Reader:
    """Text frames from a socket (server frames are unmasked)."""

    def __init__(self, sock, rest=b""):
        self.sock, self.buf = sock, rest

    def next(self):
        while True:
            if len(self.buf) >= 2:
                n = self.buf[1] & 0x7f
                at = 2
                if n == 126 and len(self.buf) >= 4:
                    n, at = struct.unpack("!H", self.buf[2:4])[0], 4
                elif n == 127 and len(self.buf) >= 10:
                    n, at = struct.unpack("!Q", self.buf[2:10])[0], 10
                elif n >= 126:
                    n = None
                if n is not None and len(self.buf) >= at + n:
                    op, payload = self.buf[0] & 0x0f, self.buf[at:at + n]
                    self.buf = self.buf[at + n:]
                    if op == 0x8:
                        raise OSError("closed by the server")
                    if op == 0x1:
                        return json.loads(payload)
                    continue
            data = self.sock.recv(1 << 16)
            if not data:
                raise OSError("connection ended")
            self.buf += data


def register(port, name, source=None, rcvbuf=None, presence=None):
    """A logged-in user: (socket, reader, token, id)."""
    s, rest = ws_connect(port, source, rcvbuf)
    req = {"action": REGISTER, "name": name, "password": "attack-pw", "pubKey": "pk"}
    if presence:
        req["presence"] = presence
    s.sendall(frame(json.dumps(req).encode()))
    r = Reader(s, rest)
    while True:
        m = r.next()
        if m.get("event") == 1:
            if not m.get("valid"):
                raise OSError("register failed: %r" % m.get("error"))
            mine = [u for u in m.get("users", []) if u["name"] == name]
            return s, r, m["token"], mine[0]["id"] if mine else None


def message(token, target, text):
    return frame(json.dumps({"action": 3, "token": token, "target": target, "message": text}).encode())


def close_all(socks):
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


def drain_nonblocking(sock):
    sock.setblocking(False)
    try:
        while sock.recv(1 << 20):
            pass
    except OSError:
        pass


# --- the attacks --------------------------------------------------------------

class Attack:
    def __init__(self, args):
        self.args = args
        self.port = args.port
        self.end = time.monotonic() + args.seconds
        self.stats = {"connections": 0, "bytes_sent": 0, "errors": 0}
        self.lock = threading.Lock()
        self.tag = "%s%x" % (args.attack.replace("-", "")[:6], os.getpid() & 0xffff)
        self.counter = 0

    def name(self):
        with self.lock:
            self.counter += 1
            return "%s%d" % (self.tag, self.counter)

    def count(self, key, n=1):
        with self.lock:
            self.stats[key] = self.stats.get(key, 0) + n

    def n(self, full):
        return max(1, int(round(full * self.args.scale)))

    def left(self):
        return self.end - time.monotonic()

    def run_threads(self, target, count):
        threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(count)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(1.0, self.left() + 30))

    # flood-close ----------------------------------------------------------------
    def flood_close(self):
        pairs = self.n(20)
        sinks, flooders = [], []
        for i in range(pairs):
            s, r, tok, uid = register(self.port, self.name())
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sinks.append((s, uid))
            f = register(self.port, self.name(), source="127.0.1.%d" % (i % 250 + 1))
            flooders.append(f)
            self.count("connections", 2)
        flood_end = self.end - min(4.0, self.args.seconds / 3)

        def flood(i):
            s, r, tok, _ = flooders[i]
            data = message(tok, sinks[i][1], "x" * 60000) * 4
            while time.monotonic() < flood_end:
                drain_nonblocking(s)
                s.settimeout(1.0)
                try:
                    s.sendall(data)
                    self.count("bytes_sent", len(data))
                except socket.timeout:
                    pass
                except OSError:
                    self.count("errors")
                    return
        self.run_threads(flood, pairs)
        read_end = time.monotonic() + min(3.0, max(0.5, self.left() - 0.5))
        for s, _ in sinks:
            s.setblocking(False)
        while time.monotonic() < read_end:
            for s, _ in sinks:
                try:
                    s.recv(1 << 16)
                except OSError:
                    pass
        for f in flooders:
            drain_nonblocking(f[0])
        close_all([s for s, _ in sinks] + [f[0] for f in flooders])

    # zero-window ----------------------------------------------------------------
    def zero_window(self):
        readers = [register(self.port, self.name(), rcvbuf=4096) for _ in range(self.n(200))]
        senders = [register(self.port, self.name()) for _ in range(self.n(20))]
        self.count("connections", len(readers) + len(senders))

        def send(i):
            s, r, tok, _ = senders[i]
            k = i
            while self.left() > 0:
                drain_nonblocking(s)
                s.settimeout(1.0)
                try:
                    s.sendall(message(tok, readers[k % len(readers)][3], "z" * 60000))
                    self.count("bytes_sent", 60100)
                except socket.timeout:
                    pass
                except OSError:
                    self.count("errors")
                    return
                k += len(senders)
        self.run_threads(send, len(senders))
        close_all([r[0] for r in readers] + [s[0] for s in senders])

    # slowloris ------------------------------------------------------------------
    def slowloris(self):
        socks = []
        for i in range(self.n(1000)):
            try:
                s = socket.create_connection((HOST, self.port), timeout=2,
                                             source_address=("127.0.2.%d" % (i // 900 + 1), 0))
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
                socks.append(s)
                self.count("connections")
            except OSError:
                self.count("errors")
        alive = list(socks)
        while self.left() > 0 and alive:
            still = []
            for s in alive:
                try:
                    s.send(b"X")
                    still.append(s)
                except OSError:
                    self.count("dropped_by_server")
            alive = still
            time.sleep(min(1.0, max(0.0, self.left())))
        self.stats["held_at_end"] = len(alive)
        close_all(socks)

    # reset-mid-frame --------------------------------------------------------------
    def reset_mid_frame(self):
        payload = json.dumps({"action": 3, "token": "t" * 43, "target": "x", "message": "r" * 60000}).encode()
        half = frame(payload)[:30000]

        def loop(i):
            while self.left() > 0:
                try:
                    s, _ = ws_connect(self.port, source="127.0.3.%d" % (i + 1))
                    s.sendall(half)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    s.close()               # RST
                    self.count("connections")
                    self.count("bytes_sent", len(half))
                except OSError:
                    self.count("errors")
                    time.sleep(0.05)
        self.run_threads(loop, self.n(20))

    # half-close -------------------------------------------------------------------
    def half_close(self):
        readers = [register(self.port, self.name()) for _ in range(self.n(50))]
        for r in readers:
            r[0].setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sender = register(self.port, self.name())
        self.count("connections", len(readers) + 1)
        s, _, tok, _ = sender
        s.settimeout(2.0)
        try:
            for _ in range(50):             # 3 MB each, more than the kernel keeps
                for r in readers:
                    s.sendall(message(tok, r[3], "h" * 60000))
                    self.count("bytes_sent", 60100)
                drain_nonblocking(s)
                s.settimeout(2.0)
        except OSError:
            self.count("errors")
        for r in readers:
            try:
                r[0].shutdown(socket.SHUT_WR)
            except OSError:
                self.count("errors")
        while self.left() > 0:
            time.sleep(0.1)
        close_all([r[0] for r in readers] + [s])

    # byte-frames --------------------------------------------------------------------
    def byte_frames(self):
        def dribble(i):
            try:
                s, r, tok, uid = register(self.port, self.name())
            except OSError:
                self.count("errors")
                return
            self.count("connections")
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            text = json.dumps({"action": 3, "token": tok, "target": uid, "message": "b" * (1 << 20)}).encode()
            pieces = [text[k:k + 1024] for k in range(0, len(text), 1024)]
            wire = b"".join(frame(p, 0x1 if k == 0 else 0x0, k == len(pieces) - 1)
                            for k, p in enumerate(pieces))
            at = 0
            while self.left() > 0 and at < len(wire):
                try:
                    s.send(wire[at:at + 1])
                    at += 1
                except OSError:
                    self.count("errors")
                    break
            self.count("bytes_sent", at)
            s.close()
        self.run_threads(dribble, self.n(10))

    # conn-storm -----------------------------------------------------------------------
    def conn_storm(self):
        target = self.n(self.args.max_conns)
        rounds = 0
        while self.left() > 0:
            socks = []
            per_thread = (target + 7) // 8
            lock = threading.Lock()

            def open_some(t):
                for k in range(per_thread):
                    if self.left() <= 0:
                        return
                    i = t * per_thread + k
                    if i >= target:
                        return
                    try:
                        s, _ = ws_connect(self.port, source="127.0.4.%d" % (i // 900 + 1), timeout=5)
                        with lock:
                            socks.append(s)
                        self.count("connections")
                    except OSError:
                        self.count("refused_or_failed")
            self.run_threads(open_some, 8)
            self.stats["most_open"] = max(self.stats.get("most_open", 0), len(socks))
            time.sleep(min(1.0, max(0.0, self.left())))
            close_all(socks)
            rounds += 1
        self.stats["rounds"] = rounds

    # legacy-bursts ----------------------------------------------------------------------
    def legacy_bursts(self):
        burst = self.n(300)
        rounds = 0
        while self.left() > 0:
            clients = []
            lock = threading.Lock()

            def join(t):
                for _ in range((burst + 7) // 8):
                    if self.left() <= 0:
                        return
                    try:
                        c = register(self.port, self.name(), source="127.0.5.%d" % (t + 1))
                        with lock:
                            clients.append(c)
                        self.count("connections")
                    except OSError:
                        self.count("errors")
            self.run_threads(join, 8)
            for c in clients:
                drain_nonblocking(c[0])
            close_all([c[0] for c in clients])
            rounds += 1
        self.stats["rounds"] = rounds


ATTACKS = {
    "flood-close": Attack.flood_close, "zero-window": Attack.zero_window,
    "slowloris": Attack.slowloris, "reset-mid-frame": Attack.reset_mid_frame,
    "half-close": Attack.half_close, "byte-frames": Attack.byte_frames,
    "conn-storm": Attack.conn_storm, "legacy-bursts": Attack.legacy_bursts,
}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--attack", required=True, choices=sorted(ATTACKS))
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--max-conns", type=int, default=10000)
    args = p.parse_args()
    a = Attack(args)
    began = time.monotonic()
    try:
        ATTACKS[args.attack](a)
        a.stats["ok"] = True
    except OSError as e:
        a.stats["ok"] = False
        a.stats["failure"] = str(e)
    a.stats.update(attack=args.attack, seconds=round(time.monotonic() - began, 2), scale=args.scale)
    print("RESULT " + json.dumps(a.stats))
    sys.stdout.flush()
    os._exit(0 if a.stats["ok"] else 1)


if __name__ == "__main__":
    main()
