"""Sessions and credentials over time: failed-login throttling (per name and
per address), session expiry and activity, and the real Argon2 defaults."""

import os
import re
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmslib import (Client, EV_AUTHORIZATION, EV_INVALID_USER, QmsTestCase, authorize, connect,
                    login, register, send_message, uniq, wait_userlist)

INVALID = "User or password is invalid."
TOO_MANY = re.compile(r"^Too many failed login attempts\. Try again in (\d+) seconds\.$")


class FailedLogins(QmsTestCase):

    def ws(self, srv):
        ws = connect(srv.chat_port)
        self.addCleanup(ws.abort)
        return ws

    def assert_throttled(self, reply):
        self.assertEqual(reply.get("valid"), False, reply)
        self.assertEqual(reply.get("event"), 1, reply)
        m = TOO_MANY.match(reply.get("error", ""))
        self.assertIsNotNone(m, reply)
        self.assertTrue(1 <= int(m.group(1)) <= 300, reply)

    def test_five_failures_for_one_name(self):
        srv = self.start_server()
        victim = Client(srv.chat_port, uniq("victim"), "right-pw", test=self)
        victim.close()
        ws = self.ws(srv)
        for i in range(5):
            reply = login(ws, victim.name, "wrong-%d" % i)
            self.assertEqual(reply.get("error"), INVALID, "attempt %d: %r" % (i + 1, reply))
        # the sixth is refused even with the right password, from any connection, any case
        self.assert_throttled(login(ws, victim.name, "right-pw"))
        self.assert_throttled(login(self.ws(srv), victim.name.upper(), "right-pw"))
        # other names from the same address are not affected
        other = Client(srv.chat_port, uniq("other"), "pw", test=self)
        other.close()
        self.assertEqual(login(self.ws(srv), other.name, "pw").get("valid"), True)
        # nor is the session the victim already had
        reply = authorize(self.ws(srv), victim.token)
        self.assertEqual(reply.get("event"), EV_AUTHORIZATION, reply)

    def test_unknown_name_is_limited_too(self):
        srv = self.start_server()
        ws = self.ws(srv)
        ghost = uniq("ghost")
        for i in range(5):
            self.assertEqual(login(ws, ghost, "pw%d" % i).get("error"), INVALID)
        self.assert_throttled(login(ws, ghost, "pw"))

    def test_fifty_failures_from_one_address(self):
        srv = self.start_server()
        real = Client(srv.chat_port, uniq("real"), "pw", test=self)
        real.close()
        ws = self.ws(srv)
        for i in range(50):
            reply = login(ws, uniq("nobody"), "pw")
            self.assertEqual(reply.get("error"), INVALID, "attempt %d: %r" % (i + 1, reply))
        self.assert_throttled(login(ws, uniq("nobody"), "pw"))
        self.assert_throttled(login(self.ws(srv), real.name, "pw"))

    def test_success_does_not_count(self):
        srv = self.start_server()
        c = Client(srv.chat_port, uniq("fine"), "pw", test=self)
        c.close()
        for i in range(8):
            r = login(self.ws(srv), c.name, "pw")
            self.assertEqual(r.get("valid"), True, "login %d: %r" % (i + 1, r))


class SessionExpiry(QmsTestCase):

    def test_unused_token_expires(self):
        srv = self.start_server(["--session-timeout", "2"])
        a = Client(srv.chat_port, uniq("idle"), test=self)
        keep = Client(srv.chat_port, uniq("busy"), test=self)
        a.ws.close()
        began = time.monotonic()
        # keep one session alive by activity while the other idles
        while time.monotonic() - began < 4.0:
            reply = authorize(keep.ws, keep.token)
            self.assertEqual(reply.get("event"), EV_AUTHORIZATION, reply)
            time.sleep(0.8)
        ws = connect(srv.chat_port)
        self.addCleanup(ws.abort)
        reply = authorize(ws, a.token)
        self.assertEqual((reply.get("valid"), reply.get("event")), (False, EV_INVALID_USER), reply)
        ws.expect_silence(0.5)
        ws2 = connect(srv.chat_port)
        self.addCleanup(ws2.abort)
        reply = authorize(ws2, keep.token)
        self.assertEqual(reply.get("event"), EV_AUTHORIZATION, reply)
        # an expired user logs in again
        r = login(ws, a.name, a.password)
        self.assertEqual(r.get("valid"), True, r)

    def test_expiry_of_a_connected_session(self):
        srv = self.start_server(["--session-timeout", "2"])
        idle = Client(srv.chat_port, uniq("sleepy"), test=self)
        watcher = Client(srv.chat_port, uniq("watcher"), test=self)
        # the watcher stays active; the idle connection is told once, and
        # leaves the watcher's user list
        told = gone = False
        deadline = time.monotonic() + 10
        while not (told and gone) and time.monotonic() < deadline:
            reply = authorize(watcher.ws, watcher.token)
            self.assertEqual(reply.get("event"), EV_AUTHORIZATION, reply)
            if not told:
                try:
                    ev = idle.ws.wait_event(EV_INVALID_USER, 0.5)
                    self.assertEqual(ev.get("valid"), False)
                    told = True
                except AssertionError:
                    pass
            if not gone:
                try:
                    wait_userlist(watcher.ws, lambda names: idle.name not in names, 0.5)
                    gone = True
                except AssertionError:
                    pass
        self.assertTrue(told, "the connection holding the expired session gets event 3")
        self.assertTrue(gone, "the expired user left the user list")
        idle.ws.expect_silence(0.3, allow=lambda m: m.get("event") == 4)
        send_message(idle.ws, idle.token, watcher.id, "too late")
        self.assertEqual(idle.ws.wait_event(EV_INVALID_USER).get("valid"), False)

    def test_messages_count_as_activity(self):
        srv = self.start_server(["--session-timeout", "2"])
        a = Client(srv.chat_port, uniq("talker"), test=self)
        began = time.monotonic()
        while time.monotonic() - began < 4.0:
            a.send(a, "ping")
            a.expect_message(a, "ping")
            time.sleep(0.5)
        ws = connect(srv.chat_port)
        self.addCleanup(ws.abort)
        reply = authorize(ws, a.token)
        self.assertEqual(reply.get("event"), EV_AUTHORIZATION, reply)


class RealArgon2(QmsTestCase):

    def test_defaults_register_and_login(self):
        srv = self.start_server(argon2_fast=False)
        ws = connect(srv.chat_port)
        self.addCleanup(ws.abort)
        name = uniq("argon")
        r = register(ws, name, "a long enough password")
        self.assertEqual(r.get("valid"), True, r)
        ws.close()
        ws = connect(srv.chat_port)
        self.addCleanup(ws.abort)
        self.assertEqual(login(ws, name, "a long enough password").get("valid"), True)
        self.assertEqual(login(ws, name, "wrong").get("error"), INVALID)

class Secrets(QmsTestCase):

    def test_log_never_holds_passwords_or_tokens(self):
        srv = self.start_server(["--log-level", "debug"])
        password = "pw-" + os.urandom(8).hex()
        a = Client(srv.chat_port, uniq("secretive"), password, test=self)
        b = Client(srv.chat_port, uniq("other"), test=self)
        a.send(b, "hello")
        b.expect_message(a, "hello")
        ws = connect(srv.chat_port)
        self.addCleanup(ws.abort)
        self.assertEqual(login(ws, a.name, "wrong-" + password).get("valid"), False)
        r = login(ws, a.name, password)
        self.assertEqual(r.get("valid"), True, r)
        ws2 = connect(srv.chat_port)
        self.addCleanup(ws2.abort)
        self.assertEqual(authorize(ws2, r["token"]).get("event"), EV_AUTHORIZATION)
        ws.send_json({"action": 2, "token": r["token"]})
        srv.stop()
        log = srv.log_text()
        self.assertTrue(log.strip(), "the server logs something at debug level")
        for secret in (password, a.token, b.token, r["token"]):
            self.assertNotIn(secret, log)


if __name__ == "__main__":
    unittest.main(verbosity=2)
