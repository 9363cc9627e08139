"""Store-and-forward: message ids and acknowledgements, messages
for offline users kept in SQLite and delivered at the next login, in order
and before new ones, quota, expiry, idempotent resends, receipts, survival
of SIGKILL, and the original client's flow (no ids, no receipts).

Every wait is for a reply the server must send; where a test needs "nothing
more", it sends a live sentinel message (stored messages always come before
a live one) or a request whose answer must come after any earlier one."""

import json
import os
import sqlite3
import sys
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmslib import (AUTHORIZE, EV_AUTHORIZATION, EV_LOGIN, EV_MESSAGE, EV_USERLIST, LOGIN,
                    MESSAGE, REGISTER, QmsTestCase, SharedServerTestCase, connect, http_get, uniq)

EV_ACK = 5
RECEIPT = 5

UNKNOWN = "Unknown recipient."
FULL = "The recipient's mailbox is full."
BAD_ID = "Field 'id' must be a string of 1 to 64 characters."
DAY_MS = 86400 * 1000


NO_ID = object()     # a MessageRequest without an "id" field


def now_ms():
    return int(time.time() * 1000)


def unknown_target():
    """A user id that no user has (shaped like a real one)."""
    return str(uuid.uuid4())


class Peer:
    """A user of the chat with its current connection.  Unlike qmslib.Client
    it can ask for receipts and come back with Login or Authorize."""

    def __init__(self, test, port, name=None, pubKey=None, receipts=False, password="sf-secret"):
        self.test = test
        self.port = port
        self.name = name or uniq("sf")
        self.password = password
        self.pubKey = pubKey if pubKey is not None else "key-" + self.name
        self.ws = None
        self.token = None
        self.id = None
        self.reply = None
        self.start_login(REGISTER, receipts)
        self.finish_login()

    # -- sessions ----------------------------------------------------------

    def _connect(self):
        ws = connect(self.port)
        self.test.addCleanup(ws.abort)
        self.ws = ws
        return ws

    def start_login(self, action=LOGIN, receipts=False, pubKey=None):
        """A new connection and a Login/Register on it, without waiting."""
        if pubKey is not None:
            self.pubKey = pubKey
        req = {"action": action, "name": self.name, "password": self.password, "pubKey": self.pubKey}
        if receipts:
            req["receipts"] = True
        self._connect().send_json(req)

    def finish_login(self):
        reply = self.ws.wait_event(EV_LOGIN, 15.0)
        self.test.assertEqual(reply.get("valid"), True, reply)
        self.reply = reply
        self.token = reply["token"]
        mine = [u["id"] for u in reply["users"] if u["name"] == self.name]
        self.test.assertEqual(len(mine), 1, reply)
        if self.id is not None:
            self.test.assertEqual(mine[0], self.id)
        self.id = mine[0]
        return reply

    def login(self, receipts=False, pubKey=None):
        self.start_login(LOGIN, receipts, pubKey)
        return self.finish_login()

    def start_authorize(self, receipts=False):
        req = {"action": AUTHORIZE, "token": self.token}
        if receipts:
            req["receipts"] = True
        self._connect().send_json(req)

    def finish_authorize(self):
        reply = self.ws.wait_for(lambda m: m.get("event") in (EV_AUTHORIZATION, 3),
                                 15.0, what="an answer to Authorize")
        self.test.assertEqual((reply.get("valid"), reply.get("event")), (True, EV_AUTHORIZATION), reply)
        return reply

    def authorize(self, receipts=False):
        self.start_authorize(receipts)
        return self.finish_authorize()

    def drop(self):
        """The connection ends without a close frame (a crash, a lost network)."""
        self.ws.abort()

    # -- messages ----------------------------------------------------------

    def send(self, target, message, cid=NO_ID, token=None):
        req = {"action": MESSAGE, "token": token or self.token,
               "target": target.id if isinstance(target, Peer) else target, "message": message}
        if cid is not NO_ID:
            req["id"] = cid
        self.ws.send_json(req)

    def ack(self, cid, timeout=10.0):
        return self.ws.wait_for(lambda m: m.get("event") == EV_ACK and m.get("id") == cid, timeout,
                                what="the ack for id %r" % cid)

    def acks(self, cids, timeout=20.0):
        return [self.ack(c, timeout) for c in cids]

    def receipt(self, ids):
        self.ws.send_json({"action": RECEIPT, "token": self.token, "ids": list(ids)})

    def messages(self, n, after_login=True, timeout=10.0):
        """The next n MessageEvents in the order they arrive.  With
        after_login, a user list must have come before the first one (stored
        messages follow the login answer and the user list).  Other events
        are kept in self.ws.pending for later waits."""
        got, kept, seen_list = [], [], False
        deadline = time.monotonic() + timeout
        while len(got) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("timed out after %d of %d messages; other events: %r"
                                     % (len(got), n, kept[:5]))
            try:
                msg = self.ws.recv_json(remaining)
            except TimeoutError:
                continue
            if msg.get("event") == EV_MESSAGE and msg.get("valid") is True:
                if after_login and not seen_list:
                    raise AssertionError("a message came before the user list: %r" % msg)
                got.append(msg)
            else:
                if msg.get("event") == EV_USERLIST:
                    seen_list = True
                kept.append(msg)
        self.ws.pending.extend(kept)
        return got

    def barrier(self):
        """A request whose answer comes after the answers to everything this
        peer sent before it: a message without an id to an unknown user
        (which only the store can tell)."""
        self.send(unknown_target(), "barrier")
        return self.ws.wait_for(lambda m: m.get("event") == EV_MESSAGE and m.get("valid") is False,
                                10.0, what="the barrier's error")

    def pending_acks(self):
        return [m for m in self.ws.pending if m.get("event") == EV_ACK]


class StoreForwardCase(QmsTestCase):

    port = None     # set by subclasses with a shared server

    def peer(self, port=None, **kwargs):
        return Peer(self, port or self.server.chat_port, **kwargs)

    def offline(self, peer):
        """Drop peer's connection and return once the server counts it
        offline: a fresh watcher, logged in while peer is online, sees a
        user list without it."""
        watcher = Peer(self, peer.port, name=uniq("watch"))
        self.assertIn(peer.name, {u["name"] for u in watcher.reply["users"]},
                      "%s is not online to begin with" % peer.name)
        peer.drop()
        watcher.ws.wait_for(lambda m: m.get("event") == EV_USERLIST and m.get("valid") is True
                            and peer.name not in {u["name"] for u in m["users"]},
                            10.0, what="a user list without %s" % peer.name)
        watcher.drop()

    def offline_user(self, port=None, **kwargs):
        """A registered user who is offline now."""
        p = self.peer(port, **kwargs)
        self.offline(p)
        return p

    def assert_ack(self, ack, cid, status, before=None):
        self.assertEqual(ack.get("valid"), True, ack)
        self.assertEqual(ack.get("event"), EV_ACK, ack)
        self.assertEqual(ack.get("id"), cid, ack)
        self.assertEqual(ack.get("status"), status, ack)
        self.assertIsInstance(ack.get("messageId"), str, ack)
        self.assertTrue(ack["messageId"], ack)
        ts = ack.get("timestamp")
        self.assertIsInstance(ts, int, ack)
        self.assertNotIsInstance(ts, bool, ack)
        if before is not None:
            self.assertGreaterEqual(ts, before - 1000, ack)
            self.assertLessEqual(ts, now_ms() + 1000, ack)
        return ack

    def assert_rejected(self, ack, cid, error):
        self.assertEqual(ack.get("valid"), False, ack)
        self.assertEqual(ack.get("event"), EV_ACK, ack)
        self.assertEqual(ack.get("id"), cid, ack)
        self.assertEqual(ack.get("status"), "rejected", ack)
        self.assertEqual(ack.get("error"), error, ack)
        self.assertNotIn("messageId", ack)

    def assert_live(self, msg, sender, text, message_id=None):
        self.assertEqual(msg.get("valid"), True, msg)
        self.assertEqual(msg.get("event"), EV_MESSAGE, msg)
        self.assertEqual(msg.get("sender"), sender.id, msg)
        self.assertEqual(msg.get("message"), text, msg)
        self.assertIsInstance(msg.get("id"), str, msg)
        self.assertTrue(msg["id"], msg)
        self.assertIsInstance(msg.get("timestamp"), int, msg)
        self.assertNotEqual(msg.get("stored"), True, msg)
        if message_id is not None:
            self.assertEqual(msg["id"], message_id, msg)

    def assert_stored(self, msg, sender, text, ack=None, sender_key=None):
        self.assertEqual(msg.get("valid"), True, msg)
        self.assertEqual(msg.get("event"), EV_MESSAGE, msg)
        self.assertEqual(msg.get("sender"), sender.id, msg)
        self.assertEqual(msg.get("message"), text, msg)
        self.assertIs(msg.get("stored"), True, msg)
        self.assertEqual(msg.get("senderName"), sender.name, msg)
        self.assertEqual(msg.get("senderKey"), sender_key if sender_key is not None else sender.pubKey, msg)
        self.assertIsInstance(msg.get("id"), str, msg)
        self.assertIsInstance(msg.get("timestamp"), int, msg)
        if ack is not None:
            self.assertEqual(msg["id"], ack["messageId"], msg)
            self.assertEqual(msg["timestamp"], ack["timestamp"], msg)

    def assert_nothing_stored(self, recipient, sender):
        """Right after recipient's login: the first message it gets is a live
        sentinel from sender, so nothing was waiting in the store."""
        cid = "sentinel-" + uniq()
        text = "sentinel " + cid
        sender.send(recipient, text, cid)
        self.assert_ack(sender.ack(cid), cid, "delivered")
        first = recipient.messages(1)[0]
        self.assert_live(first, sender, text)


class Shared(StoreForwardCase, SharedServerTestCase):
    """Behaviour that needs no particular options or restarts."""

    # -- delivery at the next login -------------------------------------------

    def test_offline_message_arrives_at_next_login_with_sender_name_key_and_timestamp(self):
        alice = self.peer(pubKey="alice-key-1")
        bob = self.offline_user()
        before = now_ms()
        alice.send(bob, "ciphertext for bob", "c-1")
        ack1 = self.assert_ack(alice.ack("c-1"), "c-1", "stored", before)
        alice.send(bob, "second, no id")            # stored silently
        alice.send(bob, "third", "c-3")
        ack3 = self.assert_ack(alice.ack("c-3"), "c-3", "stored", before)
        self.assertNotEqual(ack1["messageId"], ack3["messageId"])
        self.assertEqual(alice.pending_acks(), [], "an ack for a message without an id")

        # alice logs in again with another key, then goes offline: the stored
        # messages keep her name and her key as they were when she sent them
        alice.login(pubKey="alice-key-2")
        self.offline(alice)

        reply = bob.login()
        self.assertNotIn(alice.name, {u["name"] for u in reply["users"]})
        msgs = bob.messages(3)
        self.assert_stored(msgs[0], alice, "ciphertext for bob", ack1, sender_key="alice-key-1")
        self.assert_stored(msgs[1], alice, "second, no id", sender_key="alice-key-1")
        self.assert_stored(msgs[2], alice, "third", ack3, sender_key="alice-key-1")
        self.assertLessEqual(msgs[0]["timestamp"], msgs[1]["timestamp"])
        self.assertLessEqual(msgs[1]["timestamp"], msgs[2]["timestamp"])
        self.assertEqual(len({m["id"] for m in msgs}), 3, msgs)

    def test_delivered_at_authorize_too(self):
        alice = self.peer()
        bob = self.offline_user()
        alice.send(bob, "via authorize", "a-1")
        ack = self.assert_ack(alice.ack("a-1"), "a-1", "stored")
        bob.start_authorize()
        bob.finish_authorize()
        self.assert_stored(bob.messages(1)[0], alice, "via authorize", ack)

    def test_non_receipts_client_gets_stored_messages_once(self):
        alice = self.peer()
        bob = self.offline_user()
        for i in range(3):
            alice.send(bob, "once %d" % i, "o-%d" % i)
        for i, a in enumerate(alice.acks(["o-0", "o-1", "o-2"])):
            self.assert_ack(a, "o-%d" % i, "stored")
        bob.login()
        self.assertEqual([m["message"] for m in bob.messages(3)], ["once 0", "once 1", "once 2"])
        self.offline(bob)
        bob.login()
        self.assert_nothing_stored(bob, alice)
        self.offline(bob)
        bob.authorize()
        self.assert_nothing_stored(bob, alice)

    def test_order_of_many_stored_messages(self):
        """300 messages: more than one page of 256."""
        n = 300
        alice = self.peer()
        bob = self.offline_user()
        cids = ["m-%d" % i for i in range(n)]
        for i, cid in enumerate(cids):
            alice.send(bob, "message %d" % i, cid)
        acks = alice.acks(cids)
        for cid, ack in zip(cids, acks):
            self.assertEqual(ack.get("status"), "stored", ack)
        self.assertEqual(len({a["messageId"] for a in acks}), n)
        bob.login()
        msgs = bob.messages(n)
        self.assertEqual([m["message"] for m in msgs], ["message %d" % i for i in range(n)])
        self.assertEqual([m["id"] for m in msgs], [a["messageId"] for a in acks])
        self.assertTrue(all(m.get("stored") is True for m in msgs))
        stamps = [m["timestamp"] for m in msgs]
        self.assertEqual(stamps, sorted(stamps))
        # all pages were deleted once written (bob has no receipts)
        self.offline(bob)
        bob.login()
        self.assert_nothing_stored(bob, alice)

    def test_big_stored_messages_drain_in_pages_a_queue_can_hold(self):
        """150 stored messages of 60 KB (9 MB) to a reader that reads: pages
        end at 256 KiB of text, so the drain never fills the connection's
        queue (--max-queue, 1 MiB by default) and nothing is lost."""
        n = 150
        alice = self.peer()
        bob = self.offline_user()
        cids = ["big-%d" % i for i in range(n)]
        for i, cid in enumerate(cids):
            alice.send(bob, "%04d" % i + "b" * 60000, cid)
        for ack in alice.acks(cids):
            self.assertEqual(ack.get("status"), "stored", ack)
        bob.login()
        msgs = bob.messages(n)
        self.assertEqual([m["message"][:4] for m in msgs], ["%04d" % i for i in range(n)])
        self.assertTrue(all(len(m["message"]) == 60004 for m in msgs))

    def test_stored_messages_come_before_a_live_message_sent_at_login(self):
        n = 300
        alice = self.peer()
        bob = self.offline_user()
        cids = ["s-%d" % i for i in range(n)]
        for i, cid in enumerate(cids):
            alice.send(bob, "stored %d" % i, cid)
        alice.acks(cids)
        bob.start_login()
        bob.finish_login()          # the server has bob online now: send at once
        live = ["l-%d" % i for i in range(3)]
        for cid in live:
            alice.send(bob, "live " + cid, cid)
        msgs = bob.messages(n + len(live))
        self.assertEqual([m["message"] for m in msgs],
                         ["stored %d" % i for i in range(n)] + ["live " + c for c in live])
        self.assertTrue(all(m.get("stored") is True for m in msgs[:n]))
        for cid, msg, ack in zip(live, msgs[n:], alice.acks(live)):
            self.assert_ack(ack, cid, "delivered")
            self.assert_live(msg, alice, "live " + cid, ack["messageId"])

    # -- idempotent resend --------------------------------------------------

    def test_same_id_twice_while_recipient_offline_is_stored_once(self):
        alice = self.peer()
        carol = self.peer()
        bob = self.offline_user()
        alice.send(bob, "hello once", "dup")
        first = self.assert_ack(alice.ack("dup"), "dup", "stored")
        alice.send(bob, "hello once", "dup")
        second = alice.ack("dup")
        self.assertEqual(second, first)
        # the same id from another sender is another message
        carol.send(bob, "from carol", "dup")
        other = self.assert_ack(carol.ack("dup"), "dup", "stored")
        self.assertNotEqual(other["messageId"], first["messageId"])
        bob.login()
        msgs = bob.messages(2)
        self.assert_stored(msgs[0], alice, "hello once", first)
        self.assert_stored(msgs[1], carol, "from carol", other)
        self.assert_nothing_stored(bob, alice)

    def test_same_id_twice_while_recipient_online_is_delivered_once(self):
        alice = self.peer()
        bob = self.peer()
        alice.send(bob, "just once", "x")
        first = self.assert_ack(alice.ack("x"), "x", "delivered")
        alice.send(bob, "just once", "x")
        self.assertEqual(alice.ack("x"), first)
        alice.send(bob, "after", "y")
        self.assert_ack(alice.ack("y"), "y", "delivered")
        msgs = bob.messages(2)
        self.assert_live(msgs[0], alice, "just once", first["messageId"])
        self.assert_live(msgs[1], alice, "after")

    # -- receipts -----------------------------------------------------------

    def test_receipts_client_gets_message_again_until_it_confirms(self):
        alice = self.peer()
        bob = self.peer(receipts=True)
        self.offline(bob)
        alice.send(bob, "confirm me", "r-1")
        ack = self.assert_ack(alice.ack("r-1"), "r-1", "stored")

        bob.authorize(receipts=True)
        self.assert_stored(bob.messages(1)[0], alice, "confirm me", ack)
        self.offline(bob)               # gone before its receipt

        bob.authorize(receipts=True)
        again = bob.messages(1)[0]
        self.assert_stored(again, alice, "confirm me", ack)
        bob.receipt([again["id"]])
        received = alice.ws.wait_for(lambda m: m.get("event") == EV_ACK and m.get("id") == "r-1"
                                     and m.get("status") == "received", 10.0, what="a received ack")
        self.assert_ack(received, "r-1", "received")
        self.assertEqual(received["messageId"], ack["messageId"])

        self.offline(bob)
        bob.authorize(receipts=True)
        self.assert_nothing_stored(bob, alice)

    def test_receipts_across_pages(self):
        """A receipts client whose 300 stored messages are not deleted until
        confirmed: all of them come again, then receipts remove them."""
        n = 300
        alice = self.peer()
        bob = self.peer(receipts=True)
        self.offline(bob)
        cids = ["p-%d" % i for i in range(n)]
        for i, cid in enumerate(cids):
            alice.send(bob, "page %d" % i, cid)
        alice.acks(cids)
        bob.login(receipts=True)
        first = bob.messages(n)
        self.assertEqual([m["message"] for m in first], ["page %d" % i for i in range(n)])
        self.offline(bob)
        bob.login(receipts=True)
        second = bob.messages(n)
        self.assertEqual([m["id"] for m in second], [m["id"] for m in first])
        bob.receipt([m["id"] for m in second[:256]])
        bob.receipt([m["id"] for m in second[256:]])
        received = [alice.ws.wait_for(lambda m, c=c: m.get("event") == EV_ACK and m.get("id") == c
                                      and m.get("status") == "received", 10.0, what="received " + c)
                    for c in cids]
        self.assertEqual([r["messageId"] for r in received], [m["id"] for m in first])
        self.offline(bob)
        bob.login(receipts=True)
        self.assert_nothing_stored(bob, alice)

    def test_sender_gets_received_for_a_live_message(self):
        alice = self.peer()
        bob = self.peer(receipts=True)
        alice.send(bob, "live, confirm", "lr")
        ack = self.assert_ack(alice.ack("lr"), "lr", "delivered")
        msg = bob.messages(1, after_login=False)[0]
        self.assert_live(msg, alice, "live, confirm", ack["messageId"])
        bob.receipt([msg["id"]])
        received = alice.ws.wait_for(lambda m: m.get("event") == EV_ACK and m.get("status") == "received",
                                     10.0, what="a received ack")
        self.assert_ack(received, "lr", "received")
        self.assertEqual(received["messageId"], ack["messageId"])

    def test_receipt_request_errors(self):
        bob = self.peer(receipts=True)
        bad = [
            ("no ids", {}),
            ("ids a string", {"ids": "abc"}),
            ("ids an object", {"ids": {"a": 1}}),
            ("ids null", {"ids": None}),
            ("ids a number", {"ids": 7}),
            ("empty array", {"ids": []}),
            ("numbers", {"ids": [1, 2]}),
            ("a null id", {"ids": [None]}),
            ("mixed", {"ids": ["abc", 3]}),
            ("nested", {"ids": [["abc"]]}),
            ("257 ids", {"ids": ["id%d" % i for i in range(257)]}),
        ]
        for label, fields in bad:
            with self.subTest(label):
                req = {"action": RECEIPT, "token": bob.token}
                req.update(fields)
                bob.ws.send_json(req)
                reply = bob.ws.wait_for(lambda m: m.get("valid") is False, 5.0,
                                        what="an error for %s" % label)
                self.assertIsInstance(reply.get("error"), str, reply)
                self.assertTrue(reply["error"], reply)
        # ids nobody has, and 256 of them, are no error; the connection still works
        bob.receipt(["no-such-message"])
        bob.receipt(["id%d" % i for i in range(256)])
        alice = self.peer()
        alice.send(bob, "still here", "sh")
        self.assert_ack(alice.ack("sh"), "sh", "delivered")
        self.assert_live(bob.messages(1, after_login=False)[0], alice, "still here")
        self.assertEqual([m for m in bob.ws.pending if m.get("valid") is False], [])

    # -- errors ---------------------------------------------------------------

    def test_unknown_recipient(self):
        alice = self.peer()
        for target in (unknown_target(), "nobody"):
            with self.subTest(target=target):
                alice.send(target, "to nobody", "u-" + target)
                self.assert_rejected(alice.ack("u-" + target), "u-" + target, UNKNOWN)
                alice.send(target, "to nobody")
                err = alice.ws.wait_event(EV_MESSAGE, 5.0, valid=False)
                self.assertEqual(err, {"valid": False, "event": EV_MESSAGE, "error": UNKNOWN})
        self.assertEqual(alice.pending_acks(), [])

    def test_bad_id(self):
        alice = self.peer()
        bob = self.peer()
        for bad in (17, 1.5, True, False, None, [], ["a"], {}, {"a": "b"}, "", "x" * 65):
            with self.subTest(id=bad):
                alice.send(bob, "not delivered", bad)
                err = alice.ws.wait_event(EV_MESSAGE, 5.0, valid=False)
                self.assertEqual(err, {"valid": False, "event": EV_MESSAGE, "error": BAD_ID})
        # also to an offline recipient, and the limits themselves are fine
        carol = self.offline_user()
        alice.send(carol, "not stored", "y" * 65)
        self.assertEqual(alice.ws.wait_event(EV_MESSAGE, 5.0, valid=False).get("error"), BAD_ID)
        for good in ("1", "z" * 64):
            alice.send(bob, "good " + good, good)
            self.assert_ack(alice.ack(good), good, "delivered")
        msgs = bob.messages(2, after_login=False)
        self.assertEqual([m["message"] for m in msgs], ["good 1", "good " + "z" * 64])
        self.assertEqual(alice.pending_acks(), [])
        carol.login()
        self.assert_nothing_stored(carol, alice)

    def test_enums_name_the_new_values(self):
        status, _, body = http_get(self.server.http_port, "/enums.json")
        self.assertEqual(status, 200)
        enums = json.loads(body)
        self.assertEqual(enums["Requests"].get("ReceiptRequest"), RECEIPT, enums)
        self.assertEqual(enums["Responses"].get("MessageAckEvent"), EV_ACK, enums)

    # -- the original client ----------------------------------------------

    def test_original_client_flow(self):
        """No ids, no receipts: online messages arrive with the original
        fields, the sender gets no ack; offline ones come later."""
        alice = self.peer()
        bob = self.peer()
        before = now_ms()
        alice.send(bob, "plain live")
        msg = bob.messages(1, after_login=False)[0]
        for key, kind in (("valid", bool), ("event", int), ("sender", str), ("message", str)):
            self.assertIsInstance(msg.get(key), kind, msg)
        self.assert_live(msg, alice, "plain live")
        self.assertGreaterEqual(msg["timestamp"], before - 1000)
        self.assertLessEqual(msg["timestamp"], now_ms() + 1000)
        alice.barrier()
        self.assertEqual(alice.pending_acks(), [])

        self.offline(bob)
        alice.send(bob, "plain stored 1")
        alice.send(bob, "plain stored 2")
        alice.barrier()
        self.assertEqual(alice.pending_acks(), [])
        self.assertEqual([m for m in alice.ws.pending if m.get("valid") is False
                          and m.get("event") == EV_MESSAGE], [])
        bob.login()
        msgs = bob.messages(2)
        self.assert_stored(msgs[0], alice, "plain stored 1")
        self.assert_stored(msgs[1], alice, "plain stored 2")
        # and bob answers the original way
        bob.send(alice, "reply")
        self.assert_live(alice.messages(1, after_login=False)[0], bob, "reply")


class Options(StoreForwardCase):
    """Quota, expiry, restarts: a server each."""

    def test_quota(self):
        srv = self.start_server(["--message-quota", "3"])
        alice = self.peer(srv.chat_port)
        bob = self.offline_user(srv.chat_port)
        carol = self.offline_user(srv.chat_port)
        for i in range(3):
            alice.send(bob, "q%d" % i, "q-%d" % i)
        acks = [self.assert_ack(a, "q-%d" % i, "stored") for i, a in enumerate(alice.acks(["q-0", "q-1", "q-2"]))]
        alice.send(bob, "q3", "q-3")
        self.assert_rejected(alice.ack("q-3"), "q-3", FULL)
        # the quota is per recipient
        alice.send(carol, "for carol", "c-0")
        self.assert_ack(alice.ack("c-0"), "c-0", "stored")

        bob.login()
        msgs = bob.messages(3)
        for i, (m, a) in enumerate(zip(msgs, acks)):
            self.assert_stored(m, alice, "q%d" % i, a)
        self.assert_nothing_stored(bob, alice)
        # delivered and deleted: room again
        self.offline(bob)
        alice.send(bob, "q4", "q-4")
        self.assert_ack(alice.ack("q-4"), "q-4", "stored")

    def test_expired_messages_are_removed_at_start(self):
        srv = self.start_server()
        alice = self.peer(srv.chat_port)
        bob = self.offline_user(srv.chat_port)
        carol = self.offline_user(srv.chat_port)
        for cid in ("e-1", "e-2"):
            alice.send(bob, "old " + cid, cid)
        alice.send(carol, "young", "y-1")
        alice.acks(["e-1", "e-2"])
        young = self.assert_ack(alice.ack("y-1"), "y-1", "stored")
        srv.stop()

        db = sqlite3.connect(os.path.join(srv.data_dir, "users.db"))
        try:
            with db:
                cur = db.execute("UPDATE messages SET created = ? WHERE recipient_id = ?",
                                 (now_ms() - 40 * DAY_MS, bob.id))
                self.assertEqual(cur.rowcount, 2)
        finally:
            db.close()

        srv.start()                 # default --message-max-age 30
        alice.authorize()
        bob.login()
        self.assert_nothing_stored(bob, alice)
        carol.login()
        self.assert_stored(carol.messages(1)[0], alice, "young", young)
        srv.stop()
        db = sqlite3.connect(os.path.join(srv.data_dir, "users.db"))
        try:
            left = db.execute("SELECT count(*) FROM messages WHERE recipient_id = ?", (bob.id,)).fetchone()[0]
        finally:
            db.close()
        self.assertEqual(left, 0)

    def test_stored_message_survives_sigkill(self):
        srv = self.start_server()
        alice = self.peer(srv.chat_port)
        bob = self.offline_user(srv.chat_port)
        alice.send(bob, "survive", "k-1")
        ack = self.assert_ack(alice.ack("k-1"), "k-1", "stored")
        srv.kill()                  # SIGKILL right after the ack
        srv.start()
        bob.login()
        self.assert_stored(bob.messages(1)[0], alice, "survive", ack)

    def test_same_id_after_restart_is_not_stored_again(self):
        srv = self.start_server()
        alice = self.peer(srv.chat_port)
        bob = self.offline_user(srv.chat_port)
        alice.send(bob, "once only", "r-dup")
        first = self.assert_ack(alice.ack("r-dup"), "r-dup", "stored")
        srv.stop()
        srv.start()
        alice.authorize()
        alice.send(bob, "once only", "r-dup")
        again = self.assert_ack(alice.ack("r-dup"), "r-dup", "stored")
        self.assertEqual(again["messageId"], first["messageId"])
        bob.login()
        self.assert_stored(bob.messages(1)[0], alice, "once only", first)
        self.assert_nothing_stored(bob, alice)


if __name__ == "__main__":
    unittest.main(verbosity=2)
