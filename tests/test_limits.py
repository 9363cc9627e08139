"""WebSocket framing and limits: binary frames, fragmentation, ping/pong,
oversized messages (1009), invalid UTF-8 (1007), origins, and a burst that
the default rate limit must allow."""

import json
import os
import struct
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmslib import (Client, EV_MESSAGE, EV_USERLIST, HandshakeError, MESSAGE, OP_CONT, OP_PING,
                    OP_PONG, OP_TEXT, QmsTestCase, REGISTER, SharedServerTestCase, connect, http_get,
                    register, uniq, WebSocketClosed)

MIB = 1 << 20


class Limits(SharedServerTestCase):

    def client(self, name=None, **kwargs):
        return Client(self.server.chat_port, name=name or uniq(), test=self, **kwargs)

    def ws(self, port=None, **kwargs):
        ws = connect(port or self.server.chat_port, **kwargs)
        self.addCleanup(ws.abort)
        return ws

    def assert_still_open(self, ws):
        reply = register(ws, uniq("alive"))
        self.assertEqual(reply.get("valid"), True, reply)

    def not_userlist(self, m):
        return m.get("event") == EV_USERLIST

    # -- frames ------------------------------------------------------------

    def test_binary_frame_is_an_error_and_the_connection_stays_open(self):
        ws = self.ws()
        ws.send_binary(json.dumps({"action": REGISTER, "name": uniq(), "password": "x"}).encode())
        reply = ws.recv_json()
        self.assertEqual(reply.get("valid"), False, reply)
        self.assertTrue(reply.get("error"), reply)
        ws.send_binary(b"\x00\xff\x10")
        reply = ws.recv_json()
        self.assertEqual(reply.get("valid"), False, reply)
        self.assert_still_open(ws)

    def test_fragmented_text_is_reassembled(self):
        a, b = self.client(), self.client()
        text = json.dumps({"action": MESSAGE, "token": a.token, "target": b.id,
                           "message": "fragm\u00e9nted \U0001F642 message"}, ensure_ascii=False).encode()
        # cut inside the multi-byte characters on purpose: UTF-8 is checked per message
        cut1 = text.index("\u00e9".encode()) + 1
        cut2 = text.index("\U0001F642".encode()) + 2
        a.ws.send_frame(OP_TEXT, text[:cut1], fin=False)
        a.ws.send_frame(OP_CONT, text[cut1:cut2], fin=False)
        a.ws.send_frame(OP_CONT, text[cut2:], fin=True)
        b.expect_message(a, "fragm\u00e9nted \U0001F642 message")

    def test_ping_between_fragments(self):
        a, b = self.client(), self.client()
        text = json.dumps({"action": MESSAGE, "token": a.token, "target": b.id,
                           "message": "with a ping inside"}).encode()
        a.ws.send_frame(OP_TEXT, text[:10], fin=False)
        a.ws.send_frame(OP_PING, b"mid")
        a.ws.send_frame(OP_CONT, text[10:], fin=True)
        b.expect_message(a, "with a ping inside")

    def test_many_fragments(self):
        a, b = self.client(), self.client()
        message = "m" * 20000
        text = json.dumps({"action": MESSAGE, "token": a.token, "target": b.id,
                           "message": message}).encode()
        chunks = [text[i:i + 1000] for i in range(0, len(text), 1000)]
        a.ws.send_frame(OP_TEXT, chunks[0], fin=False)
        for c in chunks[1:-1]:
            a.ws.send_frame(OP_CONT, c, fin=False)
        a.ws.send_frame(OP_CONT, chunks[-1], fin=True)
        b.expect_message(a, message)

    def test_ping_gets_pong(self):
        ws = self.ws()
        for payload in (b"", b"hello-ping", bytes(range(125))):
            with self.subTest(length=len(payload)):
                ws.ping(payload)
                opcode, data = ws.recv()
                self.assertEqual(opcode, OP_PONG)
                self.assertEqual(data, payload)
        ws.send_frame(OP_PONG, b"unsolicited")   # must be ignored
        self.assert_still_open(ws)

    def test_ping_while_logged_in(self):
        a, b = self.client(), self.client()
        a.ws.drain(0.2)
        a.ws.ping(b"p1")
        while True:
            opcode, data = a.ws.recv()
            if opcode == OP_PONG:
                break
            self.assertEqual(opcode, OP_TEXT)
        self.assertEqual(data, b"p1")
        a.send(b, "after ping")
        b.expect_message(a, "after ping")

    def _send_oversized(self, ws, frames):
        try:
            for opcode, payload, fin in frames:
                ws.send_frame(opcode, payload, fin=fin)
        except (BrokenPipeError, ConnectionResetError):
            pass   # the server may close while we are still writing
        return ws.expect_close(10)

    def test_message_over_1_mib_closes_with_1009(self):
        a, b = self.client(), self.client()
        prefix = json.dumps({"action": MESSAGE, "token": a.token, "target": b.id, "message": ""})[:-2]
        body = prefix + "z" * (MIB + 1 - len(prefix) - 2) + "\"}"
        self.assertEqual(len(body), MIB + 1)
        self.assertEqual(self._send_oversized(a.ws, [(OP_TEXT, body.encode(), True)]), 1009)
        b.ws.expect_silence(0.3, allow=self.not_userlist)
        self.assert_still_open(self.ws())

    def test_fragmented_message_over_1_mib_closes_with_1009(self):
        ws = self.ws()
        part = b"a" * (400 * 1024)
        code = self._send_oversized(ws, [(OP_TEXT, b"{\"action\":0,\"x\":\"" + part, False),
                                         (OP_CONT, part, False), (OP_CONT, part + b"\"}", True)])
        self.assertEqual(code, 1009)

    def test_one_mib_exactly_is_not_closed(self):
        a, b = self.client(), self.client()
        prefix = json.dumps({"action": MESSAGE, "token": a.token, "target": b.id, "message": ""})[:-2]
        body = prefix + "z" * (MIB - len(prefix) - 2) + "\"}"
        self.assertEqual(len(body), MIB)
        a.ws.send_text(body)
        err = a.ws.wait_event(EV_MESSAGE, 10, valid=False)
        self.assertIn("too long", err.get("error", "").lower(), err)
        a.send(b, "fine")
        b.expect_message(a, "fine")

    def test_invalid_utf8_closes_with_1007(self):
        for bad in (b"{\"action\":0,\"name\":\"\xff\xfe\",\"password\":\"x\"}",
                    b"{\"action\":0,\"name\":\"\xc0\xaf\",\"password\":\"x\"}",      # overlong '/'
                    b"{\"action\":0,\"name\":\"\xed\xa0\x80\",\"password\":\"x\"}",  # surrogate
                    b"{\"action\":0,\"name\":\"abc\xe2\x82\",\"password\":\"x\"}"):  # truncated
            with self.subTest(frame=bad):
                ws = self.ws()
                ws.send_frame(OP_TEXT, bad)
                self.assertEqual(ws.expect_close(3), 1007)

    def test_invalid_utf8_across_fragments_closes_with_1007(self):
        ws = self.ws()
        ws.send_frame(OP_TEXT, b"{\"action\":0,\"name\":\"\xe2", fin=False)
        ws.send_frame(OP_CONT, b"(\xa1\",\"password\":\"x\"}", fin=True)   # not a continuation byte
        self.assertEqual(ws.expect_close(3), 1007)

    def test_reserved_opcode_is_refused(self):
        ws = self.ws()
        ws.send_frame(0x3, b"x")
        self.assertIn(ws.expect_close(), (None, 1002))

    def test_default_rate_allows_a_burst_of_1500(self):
        a, b = self.client(), self.client()
        frames = b"".join(_masked_text(json.dumps({"action": MESSAGE, "token": a.token,
                                                   "target": b.id, "message": "b%d" % i}))
                          for i in range(1500))
        a.ws.sock.settimeout(10)
        a.ws.sock.sendall(frames)
        for i in range(1500):
            b.expect_message(a, "b%d" % i)
        a.ws.expect_silence(0.3, allow=self.not_userlist)

    # -- origins -----------------------------------------------------------

    def test_origins_allowed(self):
        for origin in (None, "http://127.0.0.1:%d" % self.server.http_port,
                       "http://localhost:%d" % self.server.http_port):
            for port, path in ((self.server.chat_port, "/"), (self.server.http_port, "/ws")):
                with self.subTest(origin=origin, port=port):
                    ws = self.ws(port=port, path=path, origin=origin)
                    self.assert_still_open(ws)

    def test_foreign_origin_refused(self):
        for origin in ("http://evil.example", "http://127.0.0.1.evil.example:%d" % self.server.http_port,
                       "https://evil.example:%d" % self.server.http_port, "null"):
            for port, path in ((self.server.chat_port, "/"), (self.server.http_port, "/ws")):
                with self.subTest(origin=origin, port=port):
                    with self.assertRaises(HandshakeError) as cm:
                        ws = connect(port, path=path, origin=origin)
                        ws.abort()
                    self.assertNotEqual(cm.exception.status, 101)
        self.assert_still_open(self.ws())


class ConfiguredLimits(QmsTestCase):
    """Limits set low on the command line: hitting one is a clear error,
    never a silent drop."""

    def test_rate_limit_answers_every_request(self):
        srv = self.start_server(["--rate-limit", "10", "--rate-burst", "10"])
        a = Client(srv.chat_port, uniq("fast"), test=self)
        b = Client(srv.chat_port, uniq("target"), test=self)
        for i in range(60):
            a.send(b, "r%d" % i)
        delivered, errors = [], []
        deadline = time.monotonic() + 10
        while len(delivered) + len(errors) < 60 and time.monotonic() < deadline:
            for m in b.ws.drain(0.2):
                if m.get("event") == EV_MESSAGE:
                    delivered.append(m["message"])
            for m in a.ws.drain(0.2):
                if m.get("valid") is False:
                    self.assertTrue(m.get("error"), m)
                    errors.append(m)
        self.assertEqual(len(delivered) + len(errors), 60,
                         "each request is delivered or answered with an error")
        self.assertTrue(errors, "60 requests at once exceed 10/s")
        self.assertTrue(delivered)
        self.assertEqual(delivered, sorted(delivered, key=lambda s: int(s[1:])), "order kept")
        time.sleep(1.2)   # the bucket refills
        a.send(b, "later")
        b.expect_message(a, "later")

    def test_idle_pings_keep_live_peers_and_drop_dead_ones(self):
        """--ping-interval 1: a silent WebSocket gets a ping after about a
        second; one that answers pongs stays open however long it sends
        nothing else; one that answers nothing is dropped after 2 x 1 + 10
        seconds.  Both counted in /metrics."""
        from test_operations import parse_metrics, value
        srv = self.start_server(["--ping-interval", "1"])
        live = connect(srv.chat_port)
        dead = connect(srv.chat_port)
        self.addCleanup(live.abort)
        self.addCleanup(dead.abort)
        self.assertEqual(register(live, uniq("live")).get("valid"), True)
        start = time.monotonic()
        pings = 0
        first_ping = None
        while time.monotonic() - start < 15:
            try:
                opcode, payload = live.recv(timeout=0.5)
            except TimeoutError:
                continue
            if opcode == OP_TEXT:
                continue    # user lists: it is our side that stays silent
            self.assertEqual(opcode, OP_PING, "nothing but pings and events while silent")
            pings += 1
            if first_ping is None:
                first_ping = time.monotonic() - start
            live.send_frame(OP_PONG, payload)
        self.assertIsNotNone(first_ping, "a silent connection is pinged")
        self.assertLess(first_ping, 3.0, "pinged within about one interval")
        self.assertGreaterEqual(pings, 5, "pinged again while it stays silent")
        self.assertEqual(register(live, uniq("alive")).get("valid"), True,
                         "a peer that answers pings stays open")
        # The one that never answered was dropped after 12 s of silence:
        # what it did not read is pings, then the end of the connection.
        with self.assertRaises(WebSocketClosed):
            for _ in range(64):
                opcode, _payload = dead.recv(timeout=1.0)
                self.assertEqual(opcode, OP_PING)
        samples = parse_metrics(http_get(srv.http_port, "/metrics")[2].decode())
        self.assertGreaterEqual(value(samples, "qms_pings_sent_total"), pings + 1)
        self.assertEqual(value(samples, "qms_idle_closed_total"), 1)

    def test_max_connections(self):
        srv = self.start_server(["--max-connections", "3"])
        socks = [connect(srv.chat_port) for _ in range(3)]
        for w in socks:
            self.addCleanup(w.abort)
        with self.assertRaises(HandshakeError) as cm:
            extra = connect(srv.chat_port)
            extra.abort()
        self.assertNotEqual(cm.exception.status, 101)
        for w in socks:
            self.assertEqual(register(w, uniq("slot")).get("valid"), True)
        socks[0].close()
        time.sleep(0.3)
        again = None
        for _ in range(20):    # the freed slot becomes available again
            try:
                again = connect(srv.chat_port)
                break
            except HandshakeError:
                time.sleep(0.1)
        self.assertIsNotNone(again, "a closed connection frees its slot")
        self.addCleanup(again.abort)
        self.assertEqual(register(again, uniq("slot")).get("valid"), True)
        self.assertEqual(http_get(srv.http_port, "/")[0], 200, "HTTP is still served")


class AllowedOrigins(QmsTestCase):

    def test_allow_origin_option_and_any_port(self):
        srv = self.start_server(["--allow-origin", "https://chat.example",
                                 "--allow-origin", "http://other.example:8000"])
        ok = ["https://chat.example", "http://other.example:8000", "http://localhost:1",
              "http://127.0.0.1:65000", "https://localhost:%d" % srv.https_port]
        for origin in ok:
            with self.subTest(origin=origin):
                ws = connect(srv.chat_port, origin=origin)
                self.addCleanup(ws.abort)
                self.assertEqual(register(ws, uniq("o")).get("valid"), True)
        for origin in ("https://chat.example.evil", "http://other.example:8001", "http://chat.example",
                       "https://evil.example"):
            with self.subTest(origin=origin):
                with self.assertRaises(HandshakeError) as cm:
                    connect(srv.chat_port, origin=origin).abort()
                self.assertNotEqual(cm.exception.status, 101)


def _masked_text(text):
    payload = text.encode()
    key = os.urandom(4)
    n = len(payload)
    head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n))
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + masked


if __name__ == "__main__":
    unittest.main(verbosity=2)
