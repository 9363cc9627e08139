"""Hostile clients: no client can stop the server, and what waits for a
reader that does not read is bounded (docs/ROBUSTNESS.md).

Each attack runs against the real binary, and afterwards the server must
still answer /healthz at once, let a new user register and chat, go back to
idle (CPU), and stop on SIGTERM with exit code 0.

The first test is the reproduction that used to hang the gateway for good:
20 sinks that log in with a 4 KiB receive buffer and do not read, 20
flooders (each from its own 127.0.1.x address) sending them 60 KB messages
as fast as they can for 9 s, the sinks read for a few seconds, then every
socket closes.  libwebsockets 4.1 then looped forever on the flooders' end
of stream, because it still held output for them that it alone could flush.
"""

import json
import os
import socket
import struct
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmslib import (HOST, Client, EV_USERLIST, OP_PING, QmsTestCase, SANITIZED, WebSocketClosed, _mask, http_get,
                    uniq)

MIB = 1 << 20


def cpu_seconds(pid):
    """User + system CPU of a process so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def text_frame(payload):
    """A masked client text frame."""
    key = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x81, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x81, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
    return head + key + _mask(payload, key)


class _Connect:
    """socket.create_connection for qmslib's connect(): from a source
    address, and/or with a receive buffer set before the handshake."""

    def __init__(self, source=None, rcvbuf=None):
        self.source, self.rcvbuf = source, rcvbuf

    def __enter__(self):
        self.orig = socket.create_connection
        source, rcvbuf, orig = self.source, self.rcvbuf, self.orig

        def create(addr, timeout=None, source_address=None):
            if rcvbuf is None:
                return orig(addr, timeout=timeout, source_address=(source, 0) if source else source_address)
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            s.settimeout(timeout)
            if source:
                s.bind((source, 0))
            s.connect(addr)
            return s
        socket.create_connection = create
        return self

    def __exit__(self, *exc):
        socket.create_connection = self.orig


def metric(srv, name, **labels):
    """One sample of the gateway's /metrics, or None."""
    status, _, body = http_get(srv.http_port, "/metrics")
    assert status == 200, status
    want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
    for line in body.decode().splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        key, _, value = line.rpartition(" ")
        got = key[len(name):].strip("{}")
        if all(part in got.split(",") for part in want.split(",") if part):
            return float(value)
    return None


def wait_metric(srv, test, timeout, name, **labels):
    """Poll a metric until test(value) holds (a busy machine makes fixed
    sleeps flaky); the last value, whether it held or not."""
    deadline = time.monotonic() + timeout
    while True:
        value = metric(srv, name, **labels)
        if test(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


class Hostile(QmsTestCase):

    def assert_serves(self, srv, what):
        """The server answers at once and works for a newcomer."""
        began = time.monotonic()
        try:
            status, _, _ = http_get(srv.http_port, "/healthz", timeout=3)
        except OSError as e:
            self.fail("after %s, /healthz did not answer: %r" % (what, e))
        self.assertEqual(status, 200)
        self.assertLess(time.monotonic() - began, 1.0, "after %s, /healthz was slow" % what)
        a = Client(srv.chat_port, test=self)
        b = Client(srv.chat_port, test=self)
        a.send(b, "still here after %s" % what)
        b.expect_message(a, "still here after %s" % what, timeout=3)

    def assert_idle(self, srv, what, settle=2.0, window=3.0, limit=0.15):
        """No work left over: CPU over a quiet window stays under limit."""
        time.sleep(settle)
        pid = srv.proc.pid
        before = cpu_seconds(pid)
        time.sleep(window)
        used = (cpu_seconds(pid) - before) / window
        self.assertLess(used, limit, "after %s the server still used %.0f%% of a core" % (what, used * 100))

    def assert_stops(self, srv):
        took = srv.stop(timeout=8)
        self.assertLess(took, 5.0)

    # -- the reproduction ---------------------------------------------------

    def test_flood_then_close(self):
        srv = self.start_server()
        pairs = 20
        sinks = [Client(srv.chat_port) for _ in range(pairs)]
        for sink in sinks:
            sink.ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        flooders = []
        for i in range(pairs):
            with _Connect(source="127.0.1.%d" % (i + 1)):
                flooders.append(Client(srv.chat_port))
        stop_at = time.monotonic() + 9.0
        sent = [0] * pairs

        def flood(i):
            sock = flooders[i].ws.sock
            body = json.dumps({"action": 3, "token": flooders[i].token, "target": sinks[i].id,
                               "message": "x" * 60000}).encode()
            data = text_frame(body) * 4
            while time.monotonic() < stop_at:
                sock.setblocking(False)
                try:                    # a flooder reads what it is sent
                    while sock.recv(1 << 16):
                        pass
                except (BlockingIOError, OSError):
                    pass
                sock.settimeout(1.0)
                try:
                    sock.sendall(data)
                    sent[i] += 4
                except socket.timeout:
                    pass
                except OSError:
                    return
        threads = [threading.Thread(target=flood, args=(i,)) for i in range(pairs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertGreater(sum(sent), 1000, "the flood did not get going")
        for sink in sinks:
            sink.ws.sock.setblocking(False)
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            for sink in sinks:
                try:
                    sink.ws.sock.recv(1 << 16)
                except OSError:
                    pass
        for c in flooders:              # drained, so that they end with a FIN
            c.ws.sock.setblocking(False)
            try:
                while c.ws.sock.recv(1 << 20):
                    pass
            except OSError:
                pass
        for c in sinks + flooders:
            c.ws.sock.close()
        self.assert_serves(srv, "the flood")
        self.assert_idle(srv, "the flood")
        peak = peak_rss_kib(srv.proc.pid)
        # The output budget (256 MiB) and the router's store in-flight cap
        # (32 MiB) plus the process itself; under AddressSanitizer also its
        # quarantine of freed blocks (256 MiB by default) and redzones.
        limit = (400 + 320) * 1024 if SANITIZED else 400 * 1024
        self.assertLess(peak, limit, "peak RSS %d KiB" % peak)
        self.assert_stops(srv)

    # -- half-closed peers with output waiting for them ---------------------

    def test_half_closed_reader_with_output_pending(self):
        """A reader that stops reading, has megabytes waiting, and sends its
        FIN: the server goes on serving everyone else."""
        srv = self.start_server(["--max-queue", str(64 * MIB)])
        a = Client(srv.chat_port, test=self)
        a.ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        b = Client(srv.chat_port, test=self)
        for _ in range(120):            # 7 MB: more than the kernel buffers
            b.send(a, "y" * 60000)
        time.sleep(1.0)
        a.ws.sock.shutdown(socket.SHUT_WR)
        time.sleep(0.5)
        self.assert_serves(srv, "a half-close with output pending")
        self.assert_idle(srv, "a half-close with output pending", settle=0.5)
        self.assert_stops(srv)

    def test_half_closed_tls_reader_with_output_pending(self):
        srv = self.start_server(["--self-signed", "--max-queue", str(64 * MIB)])
        a = Client(srv.chat_port, test=self, tls=True)
        a.ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        b = Client(srv.chat_port, test=self, tls=True)
        for _ in range(120):
            b.send(a, "y" * 60000)
        time.sleep(1.0)
        a.ws.sock.shutdown(socket.SHUT_WR)     # the TCP FIN, under TLS
        time.sleep(0.5)
        status, _, _ = http_get(srv.http_port, "/healthz", timeout=3)
        self.assertEqual(status, 200)
        c = Client(srv.chat_port, test=self, tls=True)
        d = Client(srv.chat_port, test=self, tls=True)
        c.send(d, "over TLS")
        d.expect_message(c, "over TLS", timeout=3)
        self.assert_idle(srv, "a TLS half-close with output pending", settle=0.5)
        self.assert_stops(srv)

    def test_half_closed_http_client_with_responses_pending(self):
        """Pipelined requests for the biggest file, never read, then FIN."""
        srv = self.start_server()
        sizes = [(os.path.getsize(os.path.join(srv.html_dir, f)), f)
                 for f in os.listdir(srv.html_dir) if os.path.isfile(os.path.join(srv.html_dir, f))]
        biggest = max(sizes)[1]
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect((HOST, srv.http_port))
        request = ("GET /%s HTTP/1.1\r\nHost: localhost\r\n\r\n" % biggest).encode()
        s.settimeout(2.0)
        try:
            for _ in range(400):
                s.sendall(request)
        except socket.timeout:
            pass                        # the server stopped reading us: fine
        except ConnectionResetError:
            pass                        # or closed us, this far behind: fine too
        time.sleep(1.0)
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass                        # the server may have closed it (a reader this far behind)
        time.sleep(0.5)
        self.assert_serves(srv, "a half-closed HTTP client")
        self.assert_idle(srv, "a half-closed HTTP client", settle=0.5)
        s.close()
        self.assert_stops(srv)

    def test_ping_flood_then_half_close(self):
        """Pings, never reading the pongs, then FIN: lws's own answers must
        not leave it holding output either."""
        srv = self.start_server()
        a = Client(srv.chat_port, test=self)
        a.ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        a.ws.sock.settimeout(2.0)
        ping = b"".join(bytes([0x80 | OP_PING, 0x80 | 125]) + b"\0\0\0\0" + b"p" * 125 for _ in range(64))
        try:
            for _ in range(2000):
                a.ws.sock.sendall(ping)
        except (socket.timeout, OSError):
            pass
        a.ws.sock.shutdown(socket.SHUT_WR)
        time.sleep(0.5)
        self.assert_serves(srv, "a ping flood")
        self.assert_idle(srv, "a ping flood", settle=0.5)
        self.assert_stops(srv)

    # -- slow consumers -----------------------------------------------------

    def stalled_reader(self, srv, megabytes, sender=None):
        """A client that reads nothing, with megabytes sent to it."""
        with _Connect(rcvbuf=4096):
            r = Client(srv.chat_port, test=self)
        sender = sender or Client(srv.chat_port, test=self)
        for _ in range(int(megabytes * MIB / 60000)):
            sender.send(r, "z" * 60000)
        return r

    def wait_closed(self, ws, timeout):
        """Read (slowly draining what is queued) until the server closes;
        the close code, or None for a connection dropped without one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                ws.recv_frame(timeout=max(0.1, deadline - time.monotonic()))
            except WebSocketClosed as closed:
                return closed.code
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                return None
        self.fail("not closed within %.0f s" % timeout)

    def test_write_timeout_closes_a_stalled_reader(self):
        srv = self.start_server(["--max-queue", str(64 * MIB), "--write-timeout", "3"])
        began = time.monotonic()
        r = self.stalled_reader(srv, 7)
        # a queue well over what a chat client ever holds, not yet timed out
        self.assertGreater(wait_metric(srv, lambda v: v > 1 * MIB, 2.0, "qms_queue_bytes", of="max"), 1 * MIB)
        self.assertEqual(metric(srv, "qms_slow_consumers_closed_total", reason="write_timeout"), 0)
        self.assertEqual(wait_metric(srv, lambda v: v >= 1, 10.0, "qms_slow_consumers_closed_total",
                                     reason="write_timeout"), 1)
        self.assertGreaterEqual(time.monotonic() - began, 3.0, "closed before the write timeout")
        # its backlog was given back, all but the part of a frame under way
        self.assertLess(metric(srv, "qms_queue_bytes", of="all"), 70000)
        self.assertIn(self.wait_closed(r.ws, 10), (1008, None))
        self.assert_serves(srv, "a stalled reader")

    def test_queue_cap_closes_the_reader_not_the_sender(self):
        srv = self.start_server(["--max-queue", str(1 * MIB)])
        r = self.stalled_reader(srv, 6)
        time.sleep(1.0)
        self.assertEqual(metric(srv, "qms_slow_consumers_closed_total", reason="queue_full"), 1)
        self.assertLessEqual(metric(srv, "qms_queue_bytes", of="peak"), 1 * MIB + 70000)
        self.assertIn(self.wait_closed(r.ws, 10), (1008, None))
        self.assert_serves(srv, "a full queue")

    def test_output_budget_closes_the_largest_first(self):
        """Readers that do not read, each under --max-queue, together over
        --output-budget: the largest goes, the smaller stay and lose nothing,
        and a pair chatting meanwhile is not slowed.

        The kernel's send buffer of each reader takes an amount we do not
        choose (Linux grows it up to tcp_wmem's 4 MiB), so the sizes are
        set to hold whatever it takes: the two small readers together stay
        under nine tenths of the budget even if the kernel takes nothing,
        and the large one is fed until the budget trips, which it must by
        the time the kernel's share is full: then it is the largest."""
        budget = 6 * MIB
        srv = self.start_server(["--max-queue", str(64 * MIB), "--output-budget", str(budget),
                                 "--write-timeout", "0"])
        pair = Client(srv.chat_port, test=self), Client(srv.chat_port, test=self)
        small = [self.stalled_reader(srv, 2), self.stalled_reader(srv, 2)]
        with _Connect(rcvbuf=4096):
            big = Client(srv.chat_port, test=self)
        fed = 0
        while metric(srv, "qms_slow_consumers_closed_total", reason="output_budget") < 1:
            self.assertLess(fed, 40 * MIB, "fed a reader 40 MB past a 6 MiB budget, nothing closed")
            sender = Client(srv.chat_port, test=self)   # one each 3 MB: under the byte-rate burst
            for _ in range(50):
                sender.send(big, "z" * 60000)
            fed += 50 * 60000
            wait_metric(srv, lambda v: v >= 1, 1.0, "qms_slow_consumers_closed_total", reason="output_budget")
        self.assertIn(self.wait_closed(big.ws, 10), (1008, None))
        self.assertLessEqual(metric(srv, "qms_queue_bytes", of="all"), budget)
        worst = 0.0
        for i in range(50):
            began = time.monotonic()
            pair[0].send(pair[1], "m%d" % i)
            pair[1].expect_message(pair[0], "m%d" % i, timeout=3)
            worst = max(worst, time.monotonic() - began)
        self.assertLess(worst, 0.5, "the chatting pair was slowed: %.3f s" % worst)
        for s in small:                 # the smaller ones stayed, and lost nothing
            got = 0
            while got < int(2 * MIB / 60000):
                msg = s.ws.recv_json(timeout=5)
                if msg.get("event") == 2:
                    self.assertEqual(msg.get("message"), "z" * 60000)
                    got += 1
        self.assertEqual(metric(srv, "qms_slow_consumers_closed_total", reason="output_budget"), 1)

    # -- input shaping ------------------------------------------------------

    def test_a_flooder_is_read_at_the_byte_rate_and_loses_nothing(self):
        # The reader is not on trial here (slow consumers have their own
        # tests): a queue that holds the whole burst keeps a reader slowed by
        # a busy machine from being closed as one.
        srv = self.start_server(["--rate-limit-bytes", str(1 * MIB), "--max-queue", str(16 * MIB)])
        a = Client(srv.chat_port, test=self)
        b = Client(srv.chat_port, test=self)
        count = 140                     # 8.4 MB: the 4 MiB burst, then 1 MiB/s
        began = time.monotonic()

        def flood():
            for i in range(count):
                a.send(b, "%04d" % i + "f" * 60000)
        sender = threading.Thread(target=flood)
        sender.start()
        for i in range(count):
            b.expect_message(a, "%04d" % i + "f" * 60000, timeout=15)
        sender.join()
        took = time.monotonic() - began
        self.assertGreater(took, 3.0, "8.4 MB were read faster than the byte budget allows")
        self.assertGreaterEqual(metric(srv, "qms_input_paused_total"), 1)
        self.assert_serves(srv, "a flood at the byte rate")

    def test_one_byte_fragments_are_read_at_the_frame_rate(self):
        """A message in fragments of one byte each: every frame costs a read
        token, so past the budget the peer waits, and its message still
        arrives whole."""
        srv = self.start_server()
        a = Client(srv.chat_port, test=self)
        b = Client(srv.chat_port, test=self)
        text = json.dumps({"action": 3, "token": a.token, "target": b.id, "message": "d" * 12000}).encode()
        frames = []
        for i, byte in enumerate(text):
            opcode = 0x1 if i == 0 else 0x0
            fin = 0x80 if i == len(text) - 1 else 0
            key = os.urandom(4)
            frames.append(bytes([fin | opcode, 0x81]) + key + _mask(bytes([byte]), key))
        a.ws.sock.sendall(b"".join(frames))
        b.expect_message(a, "d" * 12000, timeout=15)
        self.assertGreaterEqual(metric(srv, "qms_input_paused_total"), 1)
        self.assert_serves(srv, "one-byte fragments")

    # -- everyone sees everyone ----------------------------------------------

    def test_full_user_lists_are_shared_and_paced(self):
        """Original-protocol clients (whole lists) that do not read while
        everyone logs in: what waits for them is one shared list each, a
        newer one replacing an unsent older one, not a copy per change; once
        they read, every client's last list names everyone."""
        srv = self.start_server()
        n = 100
        clients = []
        for _ in range(n):
            with _Connect(rcvbuf=4096):
                # big keys: lists of up to 1.6 MB outgrow what the kernel buffers
                clients.append(Client(srv.chat_port, pubKey="k" * 16000, test=self))
        time.sleep(1.0)                 # a few coalesced pushes
        self.assertGreater(metric(srv, "qms_user_list_pushes_total", how="replaced")
                           + metric(srv, "qms_user_list_pushes_total", how="deferred"), 0)
        # one copy of a 1.6 MB list per connection would be 160 MB: the
        # lists waiting are shared (a few generations of them), and what each
        # connection holds of its own is a few frames, not lists
        self.assertLess(metric(srv, "qms_queue_bytes", of="shared"), 40 * MIB)
        self.assertLess(metric(srv, "qms_queue_bytes", of="all"), n * 4096)
        last = {}                       # every client reads now: the newest list reaches each
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len([c for c in clients if last.get(c.name) == n]) < n:
            for c in clients:
                if last.get(c.name) == n:
                    continue
                try:
                    m = c.ws.recv_json(timeout=0.02)
                except TimeoutError:
                    continue
                if m.get("event") == EV_USERLIST:
                    last[c.name] = len(m["users"])
        short = {name: got for name, got in last.items() if got != n}
        self.assertEqual(len(last), n, "some clients got no list")
        self.assertFalse(short, "last lists not complete: %r" % short)

    # -- the guards ---------------------------------------------------------

    def test_loop_pass_figures_are_exported(self):
        srv = self.start_server()
        Client(srv.chat_port, test=self)
        self.assertGreater(metric(srv, "qms_loop_pass_seconds_count", actor="gateway"), 0)
        self.assertIsNotNone(metric(srv, "qms_loop_pass_last_seconds", actor="gateway"))
        self.assertIsNotNone(metric(srv, "qms_loop_pass_longest_seconds", actor="gateway"))
        self.assertEqual(metric(srv, "qms_loop_stalls_total", actor="gateway"), 0)


if __name__ == "__main__":
    unittest.main()
