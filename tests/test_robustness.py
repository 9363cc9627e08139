"""The server under misbehaving and many clients: junk connections while a
pair keeps chatting, user lists with several users, concurrent traffic, and
a reader that does not read."""

import json
import os
import socket
import struct
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmslib import (Client, EV_MESSAGE, EV_USERLIST, HOST, MESSAGE, QmsTestCase, connect,
                    http_get, names_of, register, uniq, wait_userlist)


def _rst(sock):
    """Close with a TCP reset instead of a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class Robustness(QmsTestCase):

    def exchange(self, a, b, tag):
        a.send(b, "a->b " + tag)
        b.expect_message(a, "a->b " + tag)
        b.send(a, "b->a " + tag)
        a.expect_message(b, "b->a " + tag)

    def junk(self, srv, i):
        """One misbehaving connection of kind i % 8; returns the open socket."""
        kind = i % 8
        port = srv.http_port if kind in (5, 6) else srv.chat_port
        s = socket.create_connection((HOST, port), timeout=5)
        if kind == 0:     # half a handshake
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgr")
        elif kind == 1:   # nothing at all
            pass
        elif kind == 2:   # garbage bytes
            s.sendall(os.urandom(512))
        elif kind in (3, 4):   # a good handshake, then garbage or half a frame
            ws = connect(port)
            s.close()
            s = ws.sock
            if kind == 3:
                s.sendall(os.urandom(300))
            else:
                s.sendall(b"\x81\xfe\x40\x00" + os.urandom(4) + b"{\"action\":")
        elif kind == 5:   # half an HTTP request
            s.sendall(b"GET /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        elif kind == 6:   # garbage on the HTTP port
            s.sendall(os.urandom(700))
        else:             # a handshake with absurd headers
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      b"Sec-WebSocket-Version: 99\r\nSec-WebSocket-Key: !!!\r\n\r\n")
        return s

    def test_junk_connections_while_a_pair_chats(self):
        srv = self.start_server()
        a = Client(srv.chat_port, uniq("alice"), test=self)
        b = Client(srv.chat_port, uniq("bob"), test=self)
        socks = []
        try:
            for i in range(200):
                socks.append(self.junk(srv, i))
                if i % 10 == 9:
                    self.exchange(a, b, "during %d" % i)
            self.exchange(a, b, "all open")
            for j, s in enumerate(socks):
                if j % 2:
                    _rst(s)
                else:
                    s.close()
            socks = []
        finally:
            for s in socks:
                s.close()
        self.exchange(a, b, "after")
        srv.check()
        c = Client(srv.chat_port, uniq("carol"), test=self)
        self.exchange(a, c, "newcomer")
        self.assertEqual(http_get(srv.http_port, "/")[0], 200)
        ws = connect(srv.http_port, path="/ws")
        self.addCleanup(ws.abort)
        self.assertEqual(register(ws, uniq("late"))["valid"], True)

    def test_hostile_json_and_huge_fields(self):
        srv = self.start_server()
        ws = connect(srv.chat_port)
        self.addCleanup(ws.abort)
        hostile = [
            "[" * 200000 + "]" * 200000,
            "{\"action\":1,\"x\":" + "[" * 200000 + "]" * 200000 + "}",
            "{\"action\":1,\"x\":" + "{\"a\":" * 100000 + "1" + "}" * 100000 + "}",
            "{\"action\":99999999999999999999999999}",
            "{\"action\":1e400}",
            "{\"action\":-0}",
            "{\"action\":1,\"action\":3}",
            "{\"action\":1,\"name\":\"\\ud800\",\"password\":\"x\"}",   # lone surrogate escape
            "{\"action\":3,\"token\":\"x\",\"target\":\"y\",\"message\":\"\\u0000\"}",
            "\ufeff{\"action\":1}",
        ]
        for text in hostile:
            with self.subTest(frame=text[:40]):
                ws.send_text(text)
                reply = ws.recv_json(10)     # some answer, and the server lives
                self.assertIn("valid", reply)
                srv.check()
        ws.drain(0.3)
        for field, size in (("password", 500000), ("pubKey", 500000), ("name", 500000)):
            with self.subTest(field=field):
                req = {"action": 1, "name": uniq("big"), "password": "pw", "pubKey": "k"}
                req[field] = "p" * size
                ws.send_json(req)
                reply = ws.wait_event(1, 20)
                self.assertIn(reply.get("valid"), (True, False))
                if reply["valid"] is False:
                    self.assertTrue(reply.get("error"), reply)
                srv.check()
        c = Client(srv.chat_port, uniq("after"), test=self)
        self.assertTrue(c.token)

    def test_five_users_see_each_other(self):
        srv = self.start_server()
        clients = []
        for i in range(5):
            clients.append(Client(srv.chat_port, uniq("u%d" % i), pubKey="key-%d" % i, test=self))
        everyone = {c.name for c in clients}
        ids = {c.name: c.id for c in clients}
        self.assertEqual(len(set(ids.values())), 5, "ids are distinct")
        for c in clients:
            with self.subTest(user=c.name):
                ev = wait_userlist(c.ws, lambda names: names == everyone)
                self.assertEqual(len(ev["users"]), 5, ev)
                for u in ev["users"]:
                    self.assertEqual(u["id"], ids[u["name"]])
                    self.assertEqual(u["publicKey"], "key-%d" % [x.name for x in clients].index(u["name"]))
        # the last to arrive got everyone in its LoginEvent, in the order they came online
        self.assertEqual([u["name"] for u in clients[-1].reply["users"]], [c.name for c in clients])
        # one leaves: the others see four
        clients[2].ws.close()
        rest = everyone - {clients[2].name}
        for c in clients[:2] + clients[3:]:
            wait_userlist(c.ws, lambda names: names == rest)
        # everybody can write to everybody
        for x in clients[:2] + clients[3:]:
            for y in clients[:2] + clients[3:]:
                if x is not y:
                    x.send(y, "%s to %s" % (x.name, y.name))
        for y in clients[:2] + clients[3:]:
            for x in clients[:2] + clients[3:]:
                if x is not y:
                    y.expect_message(x, "%s to %s" % (x.name, y.name))

    def test_concurrent_pairs(self):
        srv = self.start_server()
        pairs = [(Client(srv.chat_port, uniq("p"), test=self), Client(srv.chat_port, uniq("q"), test=self))
                 for _ in range(6)]
        errors = []

        def talk(a, b):
            try:
                for i in range(150):
                    a.send(b, "n%d" % i)
                for i in range(150):
                    b.expect_message(a, "n%d" % i, timeout=15)
            except BaseException as e:   # reported by the main thread
                errors.append(repr(e))

        threads = [threading.Thread(target=talk, args=p) for p in pairs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertFalse(any(t.is_alive() for t in threads), "a talker hung")
        self.assertEqual(errors, [])

    def test_a_reader_that_does_not_read_does_not_stall_others(self):
        # a small queue limit so that the slow-reader path is taken, not only
        # the kernel's socket buffers
        srv = self.start_server(["--max-queue", "65536"])
        sender = Client(srv.chat_port, uniq("flood"), test=self)
        sleeper = Client(srv.chat_port, uniq("sleeper"), test=self)
        a = Client(srv.chat_port, uniq("alice"), test=self)
        b = Client(srv.chat_port, uniq("bob"), test=self)
        big = "s" * 65000
        frame = json.dumps({"action": MESSAGE, "token": sender.token, "target": sleeper.id,
                            "message": big})
        began = time.monotonic()
        for i in range(250):      # about 16 MB towards a reader that never reads
            sender.ws.send_text(frame)
            if i % 50 == 49:
                self.exchange(a, b, "flood %d" % i)
        self.exchange(a, b, "flood done")
        self.assertLess(time.monotonic() - began, 30)
        # the sender is still served
        sender.send(a, "still here")
        a.expect_message(sender, "still here")
        # the sleeper wakes up: it was either closed for its full queue, or it
        # gets every message, whole and in order (never a gap)
        got = 0
        try:
            while got < 250:
                msg = sleeper.ws.wait_for(lambda m: m.get("event") == EV_MESSAGE, 10)
                self.assertEqual(msg.get("message"), big, "message %d damaged" % got)
                got += 1
        except AssertionError as e:
            if not sleeper.ws.server_closed:
                raise
            self.assertLess(got, 250, e)
        srv.check()

    def test_stalled_handshakes_are_dropped(self):
        srv = self.start_server()
        half = socket.create_connection((HOST, srv.chat_port), timeout=5)
        half.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
        silent = socket.create_connection((HOST, srv.chat_port), timeout=5)
        began = time.monotonic()
        for s in (half, silent):
            s.settimeout(max(0.1, began + 20 - time.monotonic()))
            try:
                while s.recv(4096):
                    pass
            except socket.timeout:
                self.fail("a stalled handshake was kept open for 20 s")
            except ConnectionResetError:
                pass
            s.close()
        self.assertLess(time.monotonic() - began, 20)
        c = Client(srv.chat_port, uniq("fresh"), test=self)
        self.assertTrue(c.token)

    def test_many_short_lived_clients(self):
        srv = self.start_server()
        watcher = Client(srv.chat_port, uniq("watch"), test=self)
        for i in range(40):
            c = Client(srv.chat_port, uniq("brief"), test=self)
            c.send(watcher, "hi %d" % i)
            watcher.expect_message(c, "hi %d" % i)
            if i % 2:
                c.ws.abort()
            else:
                c.close()
        # the last user list shows the watcher alone, and no message is left over
        last = None
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for m in watcher.ws.drain(0.3):
                self.assertNotEqual(m.get("event"), EV_MESSAGE, m)
                if m.get("event") == EV_USERLIST:
                    last = m
            if last is not None and names_of(last) == [watcher.name]:
                break
        self.assertIsNotNone(last)
        self.assertEqual(names_of(last), [watcher.name], last)


if __name__ == "__main__":
    unittest.main(verbosity=2)
