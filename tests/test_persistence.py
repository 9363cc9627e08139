"""What survives a restart: users (login works, names stay taken), sessions
(an old token still authorizes), logouts (a dead token stays dead); a clean
SIGTERM with clients connected; the database file's mode."""

import os
import stat
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmslib import (Client, EV_AUTHORIZATION, EV_INVALID_USER, LOGOUT, QmsTestCase,
                    authorize, connect, login, register, uniq, wait_userlist)


class Persistence(QmsTestCase):

    def ws(self, srv):
        ws = connect(srv.chat_port)
        self.addCleanup(ws.abort)
        return ws

    def test_restart_keeps_users_and_sessions(self):
        srv = self.start_server()
        alice = Client(srv.chat_port, uniq("Alice"), "alice-pw", "alice-key", test=self)
        bob = Client(srv.chat_port, uniq("Bob"), "bob-pw", "bob-key", test=self)
        alice.send(bob, "before restart")
        bob.expect_message(alice, "before restart")

        elapsed = srv.stop(timeout=5)   # SIGTERM: exit 0 within 5 s
        self.assertLess(elapsed, 5)
        for c in (alice, bob):          # the clients learn that the server is going away
            self.assertEqual(c.ws.expect_close(5), 1001)
        srv.start()

        db = os.path.join(srv.data_dir, "users.db")
        self.assertTrue(os.path.isfile(db), os.listdir(srv.data_dir))
        self.assertEqual(stat.S_IMODE(os.stat(db).st_mode), 0o600)

        # a user logs in with its password
        ws = self.ws(srv)
        r = login(ws, alice.name, "alice-pw")
        self.assertEqual(r.get("valid"), True, r)
        self.assertEqual(r.get("username"), alice.name)
        self.assertEqual([u["id"] for u in r["users"] if u["name"] == alice.name], [alice.id])
        self.assertEqual(login(self.ws(srv), bob.name, "alice-pw").get("error"),
                         "User or password is invalid.")
        # a session from before the restart resumes
        ws_b = self.ws(srv)
        reply = authorize(ws_b, bob.token)
        self.assertEqual((reply.get("valid"), reply.get("event")), (True, EV_AUTHORIZATION), reply)
        ev = wait_userlist(ws_b, lambda names: {alice.name, bob.name} <= names)
        self.assertEqual([u["publicKey"] for u in ev["users"] if u["name"] == bob.name], ["bob-key"])
        # and works for messages both ways
        ws.send_json({"action": 3, "token": r["token"], "target": bob.id, "message": "after"})
        msg = ws_b.wait_event(2, valid=True)
        self.assertEqual((msg["sender"], msg["message"]), (alice.id, "after"))
        # names stay taken in any case
        dup = register(self.ws(srv), bob.name.upper(), "x")
        self.assertEqual(dup.get("error"), "Username already exists.", dup)

    def test_dead_tokens_stay_dead(self):
        srv = self.start_server()
        a = Client(srv.chat_port, uniq("out"), test=self)
        a.ws.send_json({"action": LOGOUT, "token": a.token})
        b = Client(srv.chat_port, uniq("kicked"), test=self)
        old_b = b.token
        r = login(self.ws(srv), b.name, b.password)     # replaces b's session
        self.assertEqual(r.get("valid"), True, r)
        new_b = r["token"]
        time.sleep(0.3)
        srv.restart()
        for token in (a.token, old_b):
            with self.subTest(token=token[:6]):
                reply = authorize(self.ws(srv), token)
                self.assertEqual((reply.get("valid"), reply.get("event")), (False, EV_INVALID_USER), reply)
        reply = authorize(self.ws(srv), new_b)
        self.assertEqual(reply.get("valid"), True, reply)

    def test_sigterm_with_busy_clients(self):
        srv = self.start_server()
        clients = [Client(srv.chat_port, uniq("busy"), test=self) for _ in range(4)]
        half = connect(srv.chat_port)       # and one that is mid-frame
        self.addCleanup(half.abort)
        half.sock.sendall(b"\x81\xfe\x10\x00abcd")
        for i in range(200):
            clients[i % 4].send(clients[(i + 1) % 4], "x" * 1000)
        elapsed = srv.stop(timeout=5)
        self.assertLess(elapsed, 5)
        for c in clients:
            self.assertEqual(c.ws.expect_close(5), 1001)
        srv.start()
        r = login(self.ws(srv), clients[0].name, clients[0].password)
        self.assertEqual(r.get("valid"), True, r)

    def test_several_restarts(self):
        srv = self.start_server()
        names = []
        for round_ in range(3):
            c = Client(srv.chat_port, uniq("r%d" % round_), test=self)
            names.append((c.name, c.password))
            c.close()
            srv.restart()
        for name, pw in names:
            with self.subTest(name=name):
                self.assertEqual(login(self.ws(srv), name, pw).get("valid"), True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
