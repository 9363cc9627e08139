"""The chat protocol over real WebSockets: malformed input, register and
login, names, messages, authorize, logout, disconnects, a second login, and
the chat protocol on /ws of the HTTP port (PROTOCOL.md)."""

import json
import os
import socket
import struct
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmslib import (ABSENT, AUTHORIZE, Client, EV_AUTHORIZATION, HandshakeError, EV_INVALID_USER, EV_LOGIN,
                    EV_MESSAGE, EV_USERLIST, LOGIN, LOGOUT, MESSAGE, OP_TEXT, REGISTER,
                    SharedServerTestCase, START_TIMEOUT, TOKEN_RE, authorize, connect, login, names_of,
                    register, send_message, uniq, wait_userlist)

FILL = "Please fill all fields."
EXISTS = "Username already exists."
INVALID = "User or password is invalid."
NOT_ONLINE = "Recipient is not online."
TOO_LONG_NAME = "Name is too long (at most 64 characters)."
# A message to an id nobody has: the original's text, or the one this server
# gives since store-and-forward.
UNKNOWN_TARGET = (NOT_ONLINE, "Unknown recipient.")


def offline_outcome(test, sender_ws, wait=1.5):
    """After a message to a registered user who is offline: either the
    sender got "Recipient is not online." (the original's answer), or
    nothing, because the server keeps it for the user's next login
    (store-and-forward, docs/PROTOCOL.md).  Returns True
    when it was kept; the caller then checks that it is delivered."""
    try:
        err = sender_ws.wait_for(lambda m: m.get("event") == EV_MESSAGE and m.get("valid") is False,
                                 wait)
    except AssertionError:
        return True
    test.assertEqual(err.get("error"), NOT_ONLINE, err)
    return False


class ProtocolCase(SharedServerTestCase):

    def client(self, name=None, **kwargs):
        return Client(self.server.chat_port, name=name, test=self, **kwargs)

    def ws(self, **kwargs):
        ws = connect(self.server.chat_port, **kwargs)
        self.addCleanup(ws.abort)
        return ws

    def assert_still_open(self, ws):
        """The connection still answers: a fresh registration works on it."""
        reply = register(ws, uniq("alive"))
        self.assertEqual(reply.get("valid"), True, reply)
        return reply

    def assert_login_error(self, reply, text):
        self.assertEqual(reply.get("valid"), False, reply)
        self.assertEqual(reply.get("event"), EV_LOGIN, reply)
        if text is None:
            self.assertIsInstance(reply.get("error"), str, reply)
            self.assertTrue(reply["error"], reply)
        else:
            self.assertEqual(reply.get("error"), text, reply)
        self.assertNotIn("token", reply)


class MalformedInput(ProtocolCase):

    BAD = ["not json", "{", "", "   ", "{\"action\":1", "[1,2,3]", "\"text\"", "42", "null",
           "true", "{}", "{\"name\":\"x\",\"password\":\"y\"}", "{\"action\":\"1\"}",
           "{\"action\":null}", "{\"action\":true}", "{\"action\":1.5}", "{\"action\":[1]}",
           "{\"action\":{}}", "{\"action\":99}", "{\"action\":-1}", "{\"action\":4096}"]

    def test_each_malformed_frame_gets_an_error_and_the_connection_stays_open(self):
        ws = self.ws()
        for text in self.BAD:
            with self.subTest(frame=text):
                ws.send_text(text)
                reply = ws.recv_json()
                self.assertEqual(reply.get("valid"), False, reply)
                self.assertIsInstance(reply.get("error"), str, reply)
                self.assertTrue(reply["error"].strip(), reply)
                self.assertNotIn("event", reply, "an error that is not about a request type has no event")
        ws.expect_silence(0.3)
        self.assert_still_open(ws)

    def test_malformed_after_login_keeps_the_session(self):
        a, b = self.client(), self.client()
        a.ws.send_text("{oops")
        reply = a.ws.wait_for(lambda m: "error" in m and "event" not in m)
        self.assertEqual(reply["valid"], False)
        a.send(b, "still here")
        b.expect_message(a, "still here")

    def test_unknown_fields_are_ignored(self):
        ws = self.ws()
        name = uniq()
        ws.send_json({"action": REGISTER, "name": name, "password": "pw", "pubKey": "k",
                      "future": {"x": [1, 2]}, "version": 99})
        reply = ws.wait_event(EV_LOGIN, 15)
        self.assertEqual(reply["valid"], True, reply)


class RegisterLogin(ProtocolCase):

    def test_register_success_shape(self):
        ws = self.ws()
        name = uniq("Reg")
        ws.send_json({"action": REGISTER, "name": name, "password": "pw1", "pubKey": "my-key"})
        reply = ws.recv_json(15)   # nothing may come before the answer on a fresh connection
        self.assertEqual(reply.get("valid"), True, reply)
        self.assertEqual(reply.get("event"), EV_LOGIN, reply)
        self.assertRegex(reply.get("token", ""), TOKEN_RE)
        self.assertEqual(reply.get("username"), name)
        self.assertIsInstance(reply.get("users"), list)
        mine = [u for u in reply["users"] if u.get("name") == name]
        self.assertEqual(len(mine), 1, reply)
        self.assertIsInstance(mine[0].get("id"), str)
        self.assertTrue(mine[0]["id"])
        self.assertEqual(mine[0].get("publicKey"), "my-key")
        for u in reply["users"]:
            self.assertEqual(set(u) >= {"id", "name", "publicKey"}, True, u)
        # then the caller gets a user-list event that includes itself
        ev = wait_userlist(ws, lambda names: name in names)
        self.assertEqual([u["id"] for u in ev["users"] if u["name"] == name], [mine[0]["id"]])

    def test_tokens_are_distinct(self):
        tokens = {self.client().token for _ in range(4)}
        self.assertEqual(len(tokens), 4)

    def test_login_after_register(self):
        name = uniq("Log")
        ws1 = self.ws()
        r1 = register(ws1, name, "pw-A", "k1")
        self.assertEqual(r1["valid"], True, r1)
        ws1.close()
        observer = self.client(uniq("observer"))
        ws2 = self.ws()
        r2 = login(ws2, name, "pw-A", "k2")
        self.assertEqual(r2.get("valid"), True, r2)
        self.assertEqual(r2.get("username"), name)
        self.assertRegex(r2["token"], TOKEN_RE)
        self.assertNotEqual(r2["token"], r1["token"])
        mine = [u for u in r2["users"] if u["name"] == name]
        self.assertEqual(len(mine), 1, r2)
        self.assertEqual(mine[0]["id"], [u for u in r1["users"] if u["name"] == name][0]["id"],
                         "a user keeps its id across logins")
        self.assertEqual(mine[0]["publicKey"], "k2", "the login's pubKey is published")
        # everyone online, the caller included, gets a user list with the new user
        wait_userlist(ws2, lambda names: {name, observer.name} <= names)
        ev = wait_userlist(observer.ws, lambda names: name in names)
        self.assertEqual([u["publicKey"] for u in ev["users"] if u["name"] == name], ["k2"])

    def test_login_is_case_insensitive_and_returns_the_registered_name(self):
        name = uniq("MiXeD")
        c = self.client(name)
        c.close()
        ws = self.ws()
        reply = login(ws, name.upper(), c.password)
        self.assertEqual(reply.get("valid"), True, reply)
        self.assertEqual(reply.get("username"), name)

    def test_fill_all_fields(self):
        ws = self.ws()
        cases = [(ABSENT, "pw"), ("n", ABSENT), (ABSENT, ABSENT), ("", "pw"), ("n", ""),
                 (5, "pw"), ("n", 5), (None, "pw"), ("n", None), (["n"], "pw"), ("n", {"p": 1}),
                 (True, "pw")]
        for action in (REGISTER, LOGIN):
            for name, password in cases:
                with self.subTest(action=action, name=name, password=password):
                    req = {"action": action, "pubKey": "k"}
                    if name is not ABSENT:
                        req["name"] = name
                    if password is not ABSENT:
                        req["password"] = password
                    ws.send_json(req)
                    reply = ws.wait_event(EV_LOGIN, 15)
                    self.assert_login_error(reply, FILL)
        self.assert_still_open(ws)

    def test_duplicate_name_any_case(self):
        base = uniq("Dup")
        c = self.client(base)
        for variant in (base, base.lower(), base.upper(), base.swapcase()):
            with self.subTest(variant=variant):
                reply = register(self.ws(), variant, "other-pw")
                self.assert_login_error(reply, EXISTS)
        # the original still logs in with its own password
        self.assertEqual(login(self.ws(), base, c.password)["valid"], True)

    def test_duplicate_name_unicode_case(self):
        tail = uniq("")
        self.client("\u00c9LODIE" + tail)   # ÉLODIE
        reply = register(self.ws(), "\u00e9lodie" + tail)
        self.assert_login_error(reply, EXISTS)
        # (digits only after a Cyrillic name: Latin letters with it would mix scripts)
        digits = str(int(tail.encode().hex(), 16))[-12:]
        self.client("\u0410\u043d\u043d\u0430" + digits)  # Анна
        reply = register(self.ws(), "\u0430\u043d\u043d\u0430" + digits)
        self.assert_login_error(reply, EXISTS)

    def test_wrong_password_and_unknown_name(self):
        c = self.client()
        c.close()
        ws = self.ws()
        self.assert_login_error(login(ws, c.name, "wrong-" + c.password), INVALID)
        self.assert_login_error(login(ws, uniq("ghost"), "whatever"), INVALID)
        r = login(ws, c.name, c.password)
        self.assertEqual(r["valid"], True, r)

    def test_name_lengths(self):
        prefix = uniq("L")
        name64 = prefix + "\u00e9" * (64 - len(prefix))     # 64 characters, more bytes
        self.assertEqual(len(name64), 64)
        ok = register(self.ws(), name64)
        self.assertEqual(ok.get("valid"), True, ok)
        self.assertEqual(ok.get("username"), name64)
        name65 = uniq("L") + "x" * 64
        name65 = name65[:65]
        self.assert_login_error(register(self.ws(), name65), TOO_LONG_NAME)
        self.assert_login_error(register(self.ws(), "y" * 1000), TOO_LONG_NAME)
        one = register(self.ws(), "\u4e00" + uniq("")[-6:])
        self.assertEqual(one.get("valid"), True, one)

    def test_spaces_at_the_ends_of_a_name(self):
        for bad in (" lead" + uniq(""), uniq("trail") + " "):
            with self.subTest(name=bad):
                self.assert_login_error(register(self.ws(), bad),
                                        "Name must not begin or end with a space.")
        inner = uniq("in") + " side"
        self.assertEqual(register(self.ws(), inner).get("username"), inner)

    def test_password_and_pubkey_sizes(self):
        ok = register(self.ws(), uniq("pw1024"), "p" * 1024)
        self.assertEqual(ok.get("valid"), True, ok)
        self.assert_login_error(register(self.ws(), uniq("pw1025"), "p" * 1025),
                                "Password is too long (at most 1024 bytes).")
        self.assert_login_error(login(self.ws(), uniq("pw1025"), "p" * 1025),
                                "Password is too long (at most 1024 bytes).")
        ok = register(self.ws(), uniq("pk16k"), "pw", "k" * 16384)
        self.assertEqual(ok.get("valid"), True, ok)
        bad = register(self.ws(), uniq("pk16k1"), "pw", "k" * 16385)
        self.assert_login_error(bad, None)
        self.assertIn("too long", bad["error"])

    def test_control_characters_rejected(self):
        ws = self.ws()
        for bad in ("a\nb", "a\x01b", "tab\there", "del\x7f", "nul\x00x", "\x1b[31mred",
                    "cr\rlf", "zw\u200bsp", "rlo\u202eevil"):
            with self.subTest(name=bad):
                self.assert_login_error(register(ws, bad + uniq("")), None)
        self.assert_still_open(ws)

    def test_sql_like_name_is_just_a_name(self):
        name = "Robert'); DROP TABLE users;--" + uniq("")[-6:]
        c = self.client(name)
        self.assertEqual(c.reply["username"], name)
        c.close()
        r = login(self.ws(), name, c.password)
        self.assertEqual(r.get("valid"), True, r)
        self.assertEqual(r.get("username"), name)
        self.assert_login_error(register(self.ws(), name.upper()), EXISTS)
        self.client()   # the users table is still there
        for other in ("x' OR '1'='1", "\"; DELETE FROM sessions; --", "%_%"):
            self.assert_login_error(login(self.ws(), other, "' OR '1'='1"), INVALID)

    def test_pubkey_must_be_a_string(self):
        ws = self.ws()
        for bad in (5, {"k": 1}, ["k"], True):
            with self.subTest(pubKey=bad):
                self.assert_login_error(register(ws, uniq(), "pw", bad), None)
        self.assert_still_open(ws)

    def test_pubkey_absent_or_empty(self):
        for pk in (ABSENT, ""):
            with self.subTest(pubKey=pk):
                name = uniq()
                r = register(self.ws(), name, "pw", pk)
                self.assertEqual(r.get("valid"), True, r)
                mine = [u for u in r["users"] if u["name"] == name][0]
                self.assertEqual(mine.get("publicKey"), "", r)

    def test_pubkey_reaches_others(self):
        a = self.client(pubKey="-----BEGIN PUBLIC KEY-----\nAAAA\"\\\n-----END PUBLIC KEY-----")
        b = self.client(pubKey="bob-key")
        ev = wait_userlist(a.ws, lambda names: b.name in names)
        self.assertEqual([u["publicKey"] for u in ev["users"] if u["name"] == b.name], ["bob-key"])
        ev = wait_userlist(b.ws, lambda names: a.name in names)
        self.assertEqual([u["publicKey"] for u in ev["users"] if u["name"] == a.name], [a.pubKey])

    def test_everyone_online_gets_a_user_list_on_register(self):
        a = self.client()
        b = self.client()
        wait_userlist(a.ws, lambda names: {a.name, b.name} <= names)
        wait_userlist(b.ws, lambda names: {a.name, b.name} <= names)
        self.assertIn(a.name, names_of(b.reply), "the LoginEvent lists every online user")

    def test_compact_json(self):
        ws = self.ws()
        ws.send_json({"action": REGISTER, "name": uniq(), "password": "pw", "pubKey": "k"})
        while True:
            opcode, payload = ws.recv(15)
            if opcode == OP_TEXT:
                break
        self.assertNotIn(b"\n", payload)
        self.assertNotIn(b"\": ", payload)
        self.assertNotIn(b", \"", payload)


class Messages(ProtocolCase):

    def setUp(self):
        self.a = self.client(uniq("alice"))
        self.b = self.client(uniq("bob"))

    def test_delivery_shape(self):
        self.a.send(self.b, "hello")
        msg = self.b.expect_message(self.a, "hello")
        self.assertEqual(msg["valid"], True)
        self.assertEqual(msg["event"], EV_MESSAGE)
        self.assertEqual(msg["sender"], self.a.id)
        self.b.send(self.a, "hi back")
        self.a.expect_message(self.b, "hi back")

    def test_contents_byte_for_byte(self):
        samples = [
            "Gr\u00fc\u00dfe, \u4f60\u597d, \U0001F642 \u0645\u0631\u062d\u0628\u0627",
            "\"double\" and 'single' quotes",
            "back\\slash \\n \\u0041 \\\\ \\\"",
            "\x01\x02\x03\t\n\r\x0b\x0c\x1b\x1f\x7f ctrl",
            "{\"action\":2,\"token\":\"x\"}",
            "</script><script>alert(1)</script>",
            "\u2028\u2029 separators",
            " leading and trailing spaces ",
            "a",
            "x" * 65536,                       # exactly 64 KiB
            "\u00e9" * 32768,                  # 64 KiB of two-byte characters
            "\U0001F600" * 16384,              # 64 KiB of four-byte characters
        ]
        for raw_utf8 in (False, True):
            for text in samples:
                with self.subTest(raw_utf8=raw_utf8, sample=text[:30], length=len(text)):
                    req = {"action": MESSAGE, "token": self.a.token, "target": self.b.id,
                           "message": text}
                    self.a.ws.send_text(json.dumps(req, ensure_ascii=not raw_utf8))
                    self.b.expect_message(self.a, text, timeout=10)
        self.a.ws.expect_silence(0.3, allow=lambda m: m.get("event") == EV_USERLIST)

    def test_nul_is_never_silently_truncated(self):
        # Either delivered whole or refused with an error: never cut at the NUL.
        text = "before\x00after"
        self.a.send(self.b, text)
        deadline = time.monotonic() + 5
        got = err = None
        while got is None and err is None and time.monotonic() < deadline:
            try:
                got = self.b.ws.wait_for(lambda m: m.get("event") == EV_MESSAGE, 0.2)
            except AssertionError:
                pass
            try:
                err = self.a.ws.wait_for(lambda m: m.get("event") == EV_MESSAGE
                                         and m.get("valid") is False, 0.2)
            except AssertionError:
                pass
        if got is not None:
            self.assertEqual(got.get("message"), text, "a NUL must not cut the message")
        else:
            self.assertIsNotNone(err, "neither delivered nor refused")
            self.assertTrue(err.get("error"), err)

    def test_message_too_long(self):
        for text in ("x" * 65537, "\u00e9" * 32768 + "x", "y" * 300000):
            with self.subTest(length=len(text.encode())):
                self.a.send(self.b, text)
                err = self.a.ws.wait_event(EV_MESSAGE, 10, valid=False)
                self.assertIn("too long", err.get("error", "").lower(), err)
        self.b.ws.expect_silence(0.5, allow=lambda m: m.get("event") == EV_USERLIST)
        self.a.send(self.b, "short")
        self.b.expect_message(self.a, "short")

    def test_bad_token(self):
        for token in ("nope", "", "A" * 43, self.a.token[:-1] + ("A" if self.a.token[-1] != "A" else "B")):
            with self.subTest(token=token):
                send_message(self.a.ws, token, self.b.id, "forged")
                reply = self.a.ws.wait_for(lambda m: m.get("event") == EV_INVALID_USER)
                self.assertEqual(reply.get("valid"), False, reply)
        for token in (ABSENT, 5, None, ["x"]):
            with self.subTest(token=repr(token)):
                req = {"action": MESSAGE, "target": self.b.id, "message": "forged"}
                if token is not ABSENT:
                    req["token"] = token
                self.a.ws.send_json(req)
                reply = self.a.ws.wait_for(lambda m: m.get("event") == EV_INVALID_USER)
                self.assertEqual(reply.get("valid"), False, reply)
        ws = self.ws()   # and on a connection that never logged in
        send_message(ws, "not-a-token", self.b.id, "forged")
        reply = ws.recv_json()
        self.assertEqual((reply.get("valid"), reply.get("event")), (False, EV_INVALID_USER), reply)
        self.b.ws.expect_silence(0.5, allow=lambda m: m.get("event") == EV_USERLIST)
        self.a.send(self.b, "real")
        self.b.expect_message(self.a, "real")

    def test_unknown_target(self):
        for target in ("no-such-user", "00000000-0000-4000-8000-000000000000", self.a.name):
            with self.subTest(target=target):
                send_message(self.a.ws, self.a.token, target, "anyone?")
                reply = self.a.ws.wait_event(EV_MESSAGE, valid=False)
                self.assertIn(reply.get("error"), UNKNOWN_TARGET, reply)

    def test_offline_target(self):
        c = self.client(uniq("carol"))
        wait_userlist(self.a.ws, lambda names: c.name in names)
        c.close()
        wait_userlist(self.a.ws, lambda names: c.name not in names)
        self.a.send(c, "are you there?")
        stored = offline_outcome(self, self.a.ws)
        ws = self.ws()
        self.assertEqual(authorize(ws, c.token).get("event"), EV_AUTHORIZATION)
        self.a.send(c, "live one")
        if stored:
            first = ws.wait_event(EV_MESSAGE, valid=True)
            self.assertEqual((first["sender"], first["message"]), (self.a.id, "are you there?"))
        live = ws.wait_event(EV_MESSAGE, valid=True)
        self.assertEqual(live["message"], "live one")

    def test_wrong_field_types(self):
        cases = [{"message": 5}, {"message": None}, {"message": {"a": 1}}, {"message": ["x"]},
                 {"target": 5}, {"target": None}, {"target": ""}, {"target": [self.b.id]}]
        for override in cases:
            with self.subTest(**{k: repr(v) for k, v in override.items()}):
                req = {"action": MESSAGE, "token": self.a.token, "target": self.b.id,
                       "message": "m"}
                req.update(override)
                self.a.ws.send_json(req)
                reply = self.a.ws.wait_event(EV_MESSAGE, valid=False)
                self.assertIsInstance(reply.get("error"), str, reply)
                self.assertTrue(reply["error"], reply)
        for missing in ("message", "target"):
            with self.subTest(missing=missing):
                req = {"action": MESSAGE, "token": self.a.token, "target": self.b.id,
                       "message": "m"}
                del req[missing]
                self.a.ws.send_json(req)
                reply = self.a.ws.wait_event(EV_MESSAGE, valid=False)
                self.assertTrue(reply.get("error"), reply)
        self.b.ws.expect_silence(0.5, allow=lambda m: m.get("event") == EV_USERLIST)

    def test_token_used_on_another_connection(self):
        ws = self.ws()   # never logged in
        send_message(ws, self.a.token, self.b.id, "via a second socket")
        self.b.expect_message(self.a, "via a second socket")
        c = self.client(uniq("carol"))   # logged in as someone else
        c.send(self.b, "as alice", token=self.a.token)
        self.b.expect_message(self.a, "as alice")
        c.send(self.b, "as carol")
        self.b.expect_message(c, "as carol")

    def test_message_to_self(self):
        self.a.send(self.a, "note to self")
        self.a.expect_message(self.a, "note to self")

    def test_many_messages_keep_order(self):
        frames = []
        for i in range(500):
            frames.append(json.dumps({"action": MESSAGE, "token": self.a.token,
                                      "target": self.b.id, "message": "m%d" % i}))
        for f in frames:
            self.a.ws.send_text(f)
        for i in range(500):
            self.b.expect_message(self.a, "m%d" % i)
        self.a.ws.expect_silence(0.3, allow=lambda m: m.get("event") == EV_USERLIST)


class AuthorizeLogout(ProtocolCase):

    def test_authorize_valid(self):
        a = self.client(uniq("alice"))
        b = self.client(uniq("bob"))
        wait_userlist(b.ws, lambda names: a.name in names)
        a.ws.abort()
        wait_userlist(b.ws, lambda names: a.name not in names)
        ws = self.ws()
        ws.send_json({"action": AUTHORIZE, "token": a.token})
        raw = None
        while raw is None:
            opcode, payload = ws.recv()
            if opcode == OP_TEXT and b'"event":0' in payload:
                raw = payload
            elif opcode == OP_TEXT:
                ws.pending.append(json.loads(payload))
        reply = json.loads(raw)
        self.assertEqual(reply.get("valid"), True, reply)
        self.assertEqual(reply.get("event"), EV_AUTHORIZATION, reply)
        self.assertNotIn(b" ", raw, "compact JSON")
        wait_userlist(ws, lambda names: {a.name, b.name} <= names)
        wait_userlist(b.ws, lambda names: a.name in names)
        b.send(a, "welcome back")
        msg = ws.wait_event(EV_MESSAGE, valid=True)
        self.assertEqual((msg["sender"], msg["message"]), (b.id, "welcome back"))
        send_message(ws, a.token, b.id, "thanks")
        b.expect_message(a, "thanks")

    def test_authorize_answer_comes_before_the_user_list(self):
        a = self.client(uniq("alice"))
        a.ws.abort()
        ws = self.ws()
        ws.send_json({"action": AUTHORIZE, "token": a.token})
        first = ws.recv_json()
        self.assertEqual((first.get("valid"), first.get("event")), (True, EV_AUTHORIZATION), first)
        second = ws.recv_json()
        self.assertEqual(second.get("event"), EV_USERLIST, second)
        self.assertIn(a.name, names_of(second))

    def test_authorize_elsewhere_closes_the_older_connection(self):
        a = self.client(uniq("alice"))
        b = self.client(uniq("bob"))
        ws = self.ws()
        reply = authorize(ws, a.token)
        self.assertEqual(reply.get("event"), EV_AUTHORIZATION, reply)
        self.assertEqual(a.ws.expect_close(), 4001)
        # the session itself goes on, on the new connection
        b.send(a, "to the resumed one")
        self.assertEqual(ws.wait_event(EV_MESSAGE, valid=True)["message"], "to the resumed one")
        ev = wait_userlist(b.ws, lambda names: a.name in names)
        self.assertEqual(names_of(ev).count(a.name), 1)

    def test_authorize_invalid_exactly_once(self):
        for token in ("garbage", "", "x" * 43, "y" * 5000):
            with self.subTest(token=token[:10]):
                ws = self.ws()
                reply = authorize(ws, token)
                self.assertEqual((reply.get("valid"), reply.get("event")), (False, EV_INVALID_USER), reply)
                ws.expect_silence(0.7)
                self.assert_still_open(ws)

    def test_logout(self):
        a = self.client(uniq("alice"))
        b = self.client(uniq("bob"))
        wait_userlist(b.ws, lambda names: a.name in names)
        a.ws.send_json({"action": LOGOUT, "token": a.token})
        ev = wait_userlist(b.ws, lambda names: a.name not in names)
        self.assertIn(b.name, names_of(ev))
        # the token is dead for messages ...
        send_message(a.ws, a.token, b.id, "after logout")
        reply = a.ws.wait_event(EV_INVALID_USER)
        self.assertEqual(reply.get("valid"), False)
        # ... and for authorize
        reply = authorize(self.ws(), a.token)
        self.assertEqual((reply.get("valid"), reply.get("event")), (False, EV_INVALID_USER), reply)
        b.ws.expect_silence(0.3, allow=lambda m: m.get("event") == EV_USERLIST
                            and a.name not in names_of(m))
        # the connection may stay open and log in again
        r = login(a.ws, a.name, a.password)
        self.assertEqual(r.get("valid"), True, r)
        self.assertNotEqual(r["token"], a.token)
        wait_userlist(b.ws, lambda names: a.name in names)

    def test_logout_with_bad_token_changes_nothing(self):
        a = self.client(uniq("alice"))
        b = self.client(uniq("bob"))
        a.ws.send_json({"action": LOGOUT, "token": "not-a-token"})
        a.ws.expect_silence(0.5, allow=lambda m: m.get("event") == EV_USERLIST)   # no answer
        a.send(b, "still logged in")
        b.expect_message(a, "still logged in")

    def test_disconnect_keeps_the_token(self):
        a = self.client(uniq("alice"))
        b = self.client(uniq("bob"))
        wait_userlist(b.ws, lambda names: a.name in names)
        a.ws.close()
        wait_userlist(b.ws, lambda names: a.name not in names)
        b.send(a, "gone?")
        stored = offline_outcome(self, b.ws)
        ws = self.ws()
        reply = authorize(ws, a.token)
        self.assertEqual((reply.get("valid"), reply.get("event")), (True, EV_AUTHORIZATION), reply)
        wait_userlist(b.ws, lambda names: a.name in names)
        b.send(a, "hello again")
        if stored:
            self.assertEqual(ws.wait_event(EV_MESSAGE, valid=True)["message"], "gone?")
        msg = ws.wait_event(EV_MESSAGE, valid=True)
        self.assertEqual(msg["message"], "hello again")

    def test_abrupt_disconnect(self):
        a = self.client(uniq("alice"))
        b = self.client(uniq("bob"))
        wait_userlist(b.ws, lambda names: a.name in names)
        a.ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        a.ws.abort()   # RST, no close frame
        wait_userlist(b.ws, lambda names: a.name not in names)

    def test_second_login_closes_the_older_connection(self):
        a = self.client(uniq("alice"))
        b = self.client(uniq("bob"))
        old_token = a.token
        ws2 = self.ws()
        r = login(ws2, a.name, a.password)
        self.assertEqual(r.get("valid"), True, r)
        self.assertNotEqual(r["token"], old_token)
        self.assertEqual(a.ws.expect_close(), 4001, "the older connection is closed with 4001")
        reply = authorize(self.ws(), old_token)
        self.assertEqual((reply.get("valid"), reply.get("event")), (False, EV_INVALID_USER), reply)
        ws3 = self.ws()
        send_message(ws3, old_token, b.id, "old token")
        self.assertEqual(ws3.recv_json().get("event"), EV_INVALID_USER)
        # the new session works and alice is listed once
        ev = wait_userlist(b.ws, lambda names: a.name in names)
        self.assertEqual(names_of(ev).count(a.name), 1, ev)
        b.send(a, "to the new one")
        msg = ws2.wait_event(EV_MESSAGE, valid=True)
        self.assertEqual(msg["message"], "to the new one")
        send_message(ws2, r["token"], b.id, "from the new one")
        b.expect_message(a, "from the new one")

    def test_register_then_login_same_name_elsewhere(self):
        # register also logs in: a login elsewhere replaces that session too
        name = uniq("twice")
        ws1 = self.ws()
        r1 = register(ws1, name, "pw")
        self.assertEqual(r1["valid"], True, r1)
        ws2 = self.ws()
        r2 = login(ws2, name, "pw")
        self.assertEqual(r2["valid"], True, r2)
        self.assertEqual(ws1.expect_close(), 4001)


class Paths(ProtocolCase):

    def test_any_path_on_the_chat_port(self):
        for path in ("/", "/chat", "/some/deep/path?x=1", "/ws"):
            with self.subTest(path=path):
                ws = self.ws(path=path)
                self.assert_still_open(ws)

    def test_http_port_upgrades_only_at_ws(self):
        for path in ("/", "/chat", "/ws/x", "/index.html"):
            with self.subTest(path=path):
                with self.assertRaises(HandshakeError) as cm:
                    connect(self.server.http_port, path=path).abort()
                self.assertNotEqual(cm.exception.status, 101)

    def test_ws_on_the_http_port(self):
        a = Client(self.server.http_port, name=uniq("httpws"), path="/ws", test=self)
        b = self.client(uniq("bob"))
        wait_userlist(a.ws, lambda names: b.name in names)
        wait_userlist(b.ws, lambda names: a.name in names)
        a.send(b, "from /ws")
        b.expect_message(a, "from /ws")
        b.send(a, "to /ws")
        a.expect_message(b, "to /ws")
        ws = connect(self.server.http_port, path="/ws")
        self.addCleanup(ws.abort)
        ws.send_text("garbage")
        self.assertEqual(ws.recv_json().get("valid"), False)
        reply = authorize(ws, b.token)
        self.assertEqual(reply.get("event"), EV_AUTHORIZATION, reply)


def logged(server, text, timeout=START_TIMEOUT):
    """True once the server's log holds text: the gateway logs its loop
    after its ports accept, so a slow start (Valgrind) writes it later."""
    deadline = time.monotonic() + timeout
    while text not in server.log_text():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class EventLoop(ProtocolCase):
    def test_the_gateway_runs_on_libuv(self):
        self.assertTrue(logged(self.server, "event=event_loop loop=libuv"), self.server.log_text()[-2000:])


# The same messages, logins and server-side closes on libwebsockets' own
# poll() loop (--poll-loop), which stays selectable for comparison.
class PollLoopMessages(Messages):
    server_args = ("--poll-loop",)


# Messages read in pieces of the smallest --rx-buffer: the long ones are
# joined from many.
class SmallReadsMessages(Messages):
    server_args = ("--rx-buffer", "512")


class PollLoopAuthorizeLogout(AuthorizeLogout):
    server_args = ("--poll-loop",)

    def test_the_gateway_runs_on_poll(self):
        self.assertTrue(logged(self.server, "event=event_loop loop=poll"), self.server.log_text()[-2000:])


if __name__ == "__main__":
    unittest.main(verbosity=2)
