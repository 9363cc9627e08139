"""Store-and-forward and presence across two gateways (docs/PROTOCOL.md,
"Nothing lost" and "Presence modes"), against the cluster of
test_cluster.py: store, auth, router, a monitor and two gateways, each its
own process.

A message stored through gateway 1 reaches its recipient at a login on
gateway 2 with the sender's name and key and the original timestamp; the
"received" ack, the redelivery to a receipts client that dropped before its
receipt, the order of stored messages, live delivery with ids, idempotent
resends, delta presence and user lookups all cross from one gateway to the
other, because the router and the store are shared while the connections
are not.

Every wait is for a reply the server must send; where a test needs "nothing
more", a live sentinel message (which comes after any stored one) answers.
Each test has its own cluster (it starts in well under a second)."""

import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmslib import (AUTHORIZE, EV_AUTHORIZATION, EV_LOGIN, EV_MESSAGE, EV_USERLIST, LOGIN,
                    LOGOUT, MESSAGE, REGISTER, connect, uniq)
from test_cluster import ClusterCase

RECEIPT, LOOKUP = 5, 6
EV_INVALID_USER, EV_ACK, EV_DELTA, EV_LOOKUP = 3, 5, 6, 7
LOGIN_TIMEOUT = 15.0
WAIT = 10.0


def now_ms():
    return int(time.time() * 1000)


class Peer:
    """A user and its current connection, which may be on either gateway:
    every (re)connection names the chat port it goes to."""

    def __init__(self, test, port, name=None, pubKey=None, receipts=False, presence=None):
        self.test = test
        self.name = name or uniq("sfc")
        self.password = "sfc-secret"
        self.pubKey = pubKey if pubKey is not None else "key-" + self.name
        self.port = None
        self.ws = None
        self.token = None
        self.id = None
        self.reply = None
        self._connect(port).send_json(self._login_request(REGISTER, receipts, presence))
        self.finish_login()

    # -- sessions ----------------------------------------------------------

    def _connect(self, port):
        ws = connect(port)
        self.test.addCleanup(ws.abort)
        self.ws, self.port = ws, port
        return ws

    def _login_request(self, action, receipts, presence):
        req = {"action": action, "name": self.name, "password": self.password, "pubKey": self.pubKey}
        if receipts:
            req["receipts"] = True
        if presence is not None:
            req["presence"] = presence
        return req

    def start_login(self, port, receipts=False):
        self._connect(port).send_json(self._login_request(LOGIN, receipts, None))

    def finish_login(self):
        reply = self.ws.wait_event(EV_LOGIN, LOGIN_TIMEOUT)
        self.test.assertEqual(reply.get("valid"), True, reply)
        self.reply = reply
        self.token = reply["token"]
        mine = [u["id"] for u in reply["users"] if u["name"] == self.name]
        self.test.assertEqual(len(mine), 1, reply)
        if self.id is not None:
            self.test.assertEqual(mine[0], self.id, "the user id changed")
        self.id = mine[0]
        return reply

    def login(self, port, receipts=False):
        self.start_login(port, receipts)
        return self.finish_login()

    def authorize(self, port, receipts=False):
        req = {"action": AUTHORIZE, "token": self.token}
        if receipts:
            req["receipts"] = True
        self._connect(port).send_json(req)
        reply = self.ws.wait_for(lambda m: m.get("event") in (EV_AUTHORIZATION, EV_INVALID_USER),
                                 LOGIN_TIMEOUT, what="an answer to Authorize")
        self.test.assertEqual((reply.get("valid"), reply.get("event")), (True, EV_AUTHORIZATION), reply)
        return reply

    def drop(self):
        """The connection ends without a close frame (a lost network)."""
        self.ws.abort()

    # -- messages ----------------------------------------------------------

    def send(self, target, message, cid=None):
        req = {"action": MESSAGE, "token": self.token,
               "target": target.id if isinstance(target, Peer) else target, "message": message}
        if cid is not None:
            req["id"] = cid
        self.ws.send_json(req)

    def ack(self, cid, status=None, timeout=WAIT):
        def pred(m):
            return (m.get("event") == EV_ACK and m.get("id") == cid
                    and (status is None or m.get("status") == status))
        return self.ws.wait_for(pred, timeout, what="the %s ack for id %r" % (status or "first", cid))

    def receipt(self, ids):
        self.ws.send_json({"action": RECEIPT, "token": self.token, "ids": list(ids)})

    def messages(self, n, after_login=True, timeout=WAIT):
        """The next n valid MessageEvents in arrival order.  With after_login
        a user list must come before the first one (stored messages follow
        the login answer and the user list).  Other events stay pending."""
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


class StoreForwardAcrossGateways(ClusterCase):

    def setUp(self):
        super().setUp()
        self.c = self.cluster()
        self.gw1, self.gw2 = self.c.chat_port(1), self.c.chat_port(2)

    # -- helpers -------------------------------------------------------------

    def peer(self, port, **kwargs):
        return Peer(self, port, **kwargs)

    def other(self, port):
        return self.gw2 if port == self.gw1 else self.gw1

    def offline(self, peer):
        """Drop peer's connection; return once the cluster counts it offline:
        a watcher on the other gateway, logged in while peer is online, gets
        a user list without it."""
        watcher = Peer(self, self.other(peer.port), name=uniq("watch"))
        self.assertIn(peer.name, {u["name"] for u in watcher.reply["users"]},
                      "%s is not online to begin with" % peer.name)
        peer.drop()
        watcher.ws.wait_for(lambda m: m.get("event") == EV_USERLIST and m.get("valid") is True
                            and peer.name not in {u["name"] for u in m["users"]},
                            WAIT, what="a user list without %s" % peer.name)
        watcher.drop()

    def offline_user(self, port, **kwargs):
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

    def assert_live(self, msg, sender, text, ack=None):
        self.assertEqual(msg.get("valid"), True, msg)
        self.assertEqual(msg.get("event"), EV_MESSAGE, msg)
        self.assertEqual(msg.get("sender"), sender.id, msg)
        self.assertEqual(msg.get("message"), text, msg)
        self.assertIsInstance(msg.get("id"), str, msg)
        self.assertTrue(msg["id"], msg)
        self.assertIsInstance(msg.get("timestamp"), int, msg)
        self.assertNotEqual(msg.get("stored"), True, msg)
        if ack is not None:
            self.assertEqual(msg["id"], ack["messageId"], msg)

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
            self.assertEqual(msg["timestamp"], ack["timestamp"], "not the original timestamp: %r" % msg)

    def assert_nothing_stored(self, recipient, sender):
        """Right after recipient's login: the first message it gets is a live
        sentinel from sender, so nothing was waiting in the store."""
        cid = "sentinel-" + uniq()
        sender.send(recipient, "sentinel " + cid, cid)
        self.assert_ack(sender.ack(cid), cid, "delivered")
        self.assert_live(recipient.messages(1)[0], sender, "sentinel " + cid)

    def received(self, sender, cid):
        return self.assert_ack(sender.ack(cid, "received"), cid, "received")

    # -- stored on gateway 1, delivered on gateway 2 --------------------------

    def test_stored_through_gateway_1_arrives_at_login_on_gateway_2(self):
        alice = self.peer(self.gw1, pubKey="alice-key-1")
        bob = self.offline_user(self.gw1)
        before = now_ms()
        alice.send(bob, "ciphertext for bob", "c-1")
        ack1 = self.assert_ack(alice.ack("c-1"), "c-1", "stored", before)
        alice.send(bob, "second, no id")                 # stored without an ack
        alice.send(bob, "third", "c-3")
        ack3 = self.assert_ack(alice.ack("c-3"), "c-3", "stored", before)
        self.assertNotEqual(ack1["messageId"], ack3["messageId"])
        self.assertEqual([m for m in alice.ws.pending if m.get("event") == EV_ACK], [],
                         "an ack for a message without an id")

        # alice logs in again on gateway 2 with another key: the stored
        # messages keep the key she had when she sent them
        alice.pubKey = "alice-key-2"
        alice.login(self.gw2)
        login_began = now_ms()
        reply = bob.login(self.gw2)
        self.assertIn(alice.name, {u["name"] for u in reply["users"]})
        msgs = bob.messages(3)
        self.assert_stored(msgs[0], alice, "ciphertext for bob", ack1, sender_key="alice-key-1")
        self.assert_stored(msgs[1], alice, "second, no id", sender_key="alice-key-1")
        self.assert_stored(msgs[2], alice, "third", ack3, sender_key="alice-key-1")
        self.assertLessEqual(msgs[0]["timestamp"], msgs[1]["timestamp"])
        self.assertLessEqual(msgs[1]["timestamp"], msgs[2]["timestamp"])
        self.assertLess(msgs[2]["timestamp"], login_began + 1, "stamped at delivery, not at sending")
        self.assertEqual(len({m["id"] for m in msgs}), 3, msgs)
        # delivered once: after a new login on gateway 1 nothing is waiting
        self.offline(bob)
        bob.login(self.gw1)
        self.assert_nothing_stored(bob, alice)

    def test_received_ack_reaches_the_sender_on_gateway_1(self):
        alice = self.peer(self.gw1)
        bob = self.offline_user(self.gw1, receipts=True)
        alice.send(bob, "confirm me", "r-1")
        ack = self.assert_ack(alice.ack("r-1"), "r-1", "stored")
        bob.login(self.gw2, receipts=True)
        msg = bob.messages(1)[0]
        self.assert_stored(msg, alice, "confirm me", ack)
        bob.receipt([msg["id"]])
        received = self.received(alice, "r-1")
        self.assertEqual(received["messageId"], ack["messageId"])
        # the receipt deleted it: nothing comes at the next authorize
        self.offline(bob)
        bob.authorize(self.gw1, receipts=True)
        self.assert_nothing_stored(bob, alice)

    def test_receipts_client_that_drops_on_gateway_2_gets_it_again_on_gateway_1(self):
        alice = self.peer(self.gw1)
        bob = self.offline_user(self.gw2, receipts=True)
        alice.send(bob, "again until confirmed", "d-1")
        ack = self.assert_ack(alice.ack("d-1"), "d-1", "stored")

        bob.authorize(self.gw2, receipts=True)
        first = bob.messages(1)[0]
        self.assert_stored(first, alice, "again until confirmed", ack)
        self.offline(bob)                    # gone before its receipt

        bob.authorize(self.gw1, receipts=True)
        again = bob.messages(1)[0]
        self.assert_stored(again, alice, "again until confirmed", ack)
        self.assertEqual(again["id"], first["id"])
        bob.receipt([again["id"]])
        self.assertEqual(self.received(alice, "d-1")["messageId"], ack["messageId"])

        self.offline(bob)
        bob.authorize(self.gw2, receipts=True)
        self.assert_nothing_stored(bob, alice)

    # -- order ----------------------------------------------------------------

    def test_order_of_50_stored_messages_from_both_gateways(self):
        """Senders on both gateways take turns (each waits for its ack, so
        the order is defined); the recipient gets all 50 in that order."""
        n = 50
        alice = self.peer(self.gw1)
        carol = self.peer(self.gw2)
        bob = self.offline_user(self.gw1)
        acks, senders = [], []
        for i in range(n):
            sender = alice if i % 2 == 0 else carol
            cid = "o-%d" % i
            sender.send(bob, "message %d" % i, cid)
            acks.append(self.assert_ack(sender.ack(cid), cid, "stored"))
            senders.append(sender)
        self.assertEqual(len({a["messageId"] for a in acks}), n)
        bob.login(self.gw2)
        msgs = bob.messages(n)
        self.assertEqual([m["message"] for m in msgs], ["message %d" % i for i in range(n)])
        for msg, sender, ack, i in zip(msgs, senders, acks, range(n)):
            self.assert_stored(msg, sender, "message %d" % i, ack)
        stamps = [m["timestamp"] for m in msgs]
        self.assertEqual(stamps, sorted(stamps))
        self.offline(bob)
        bob.login(self.gw1)
        self.assert_nothing_stored(bob, alice)

    def test_stored_messages_come_before_live_ones_sent_from_the_other_gateway(self):
        n = 50
        alice = self.peer(self.gw1)
        bob = self.offline_user(self.gw1)
        cids = ["s-%d" % i for i in range(n)]
        for i, cid in enumerate(cids):
            alice.send(bob, "stored %d" % i, cid)
        for cid in cids:
            self.assert_ack(alice.ack(cid), cid, "stored")
        bob.login(self.gw2)          # bob is online now: alice sends at once
        live = ["l-%d" % i for i in range(3)]
        for cid in live:
            alice.send(bob, "live " + cid, cid)
        msgs = bob.messages(n + len(live))
        self.assertEqual([m["message"] for m in msgs],
                         ["stored %d" % i for i in range(n)] + ["live " + c for c in live])
        self.assertTrue(all(m.get("stored") is True for m in msgs[:n]), msgs[:n])
        for cid, msg in zip(live, msgs[n:]):
            ack = self.assert_ack(alice.ack(cid), cid, "delivered")
            self.assert_live(msg, alice, "live " + cid, ack)

    # -- live messages and resends --------------------------------------------

    def test_live_message_between_gateways_with_id(self):
        alice = self.peer(self.gw1)
        bob = self.peer(self.gw2)
        before = now_ms()
        alice.send(bob, "live across", "v-1")
        ack = self.assert_ack(alice.ack("v-1"), "v-1", "delivered", before)
        msg = bob.messages(1, after_login=False)[0]
        self.assert_live(msg, alice, "live across", ack)
        self.assertGreaterEqual(msg["timestamp"], before - 1000, msg)
        self.assertLessEqual(msg["timestamp"], now_ms() + 1000, msg)
        self.assertEqual(msg["timestamp"], ack["timestamp"],
                         "the event and the ack name one acceptance time")
        self.assertNotIn("senderName", msg)
        # and back the other way
        bob.send(alice, "and back", "v-2")
        back = self.assert_ack(bob.ack("v-2"), "v-2", "delivered")
        self.assert_live(alice.messages(1, after_login=False)[0], bob, "and back", back)

    def test_resend_through_the_other_gateway_is_delivered_once(self):
        alice = self.peer(self.gw1)
        bob = self.peer(self.gw2)
        alice.send(bob, "just once", "x")
        first = self.assert_ack(alice.ack("x"), "x", "delivered")
        old = alice.ws
        alice.authorize(self.gw2)            # a reconnect, to the other gateway
        self.assertEqual(old.expect_close(WAIT), 4001, "the older connection is closed with 4001")
        alice.send(bob, "just once", "x")
        self.assertEqual(alice.ack("x"), first, "the retry gets the first answer again")
        alice.send(bob, "after", "y")
        self.assert_ack(alice.ack("y"), "y", "delivered")
        msgs = bob.messages(2, after_login=False)
        self.assert_live(msgs[0], alice, "just once", first)
        self.assert_live(msgs[1], alice, "after")

    def test_resend_of_a_stored_message_through_the_other_gateway_is_stored_once(self):
        alice = self.peer(self.gw1)
        bob = self.offline_user(self.gw1)
        alice.send(bob, "stored once", "z")
        first = self.assert_ack(alice.ack("z"), "z", "stored")
        alice.authorize(self.gw2)
        alice.send(bob, "stored once", "z")
        self.assertEqual(alice.ack("z"), first, "the retry gets the first answer again")
        bob.login(self.gw1)
        self.assert_stored(bob.messages(1)[0], alice, "stored once", first)
        self.assert_nothing_stored(bob, alice)

    # -- presence -------------------------------------------------------------

    def wait_change(self, ws, op, uid, seen, what):
        """Read delta batches until one holds the change (op, uid); every
        change read is appended to seen.  Returns the change."""
        found = []

        def pred(m):
            if m.get("event") != EV_DELTA or m.get("valid") is not True:
                return False
            self.assertIsInstance(m.get("changes"), list, m)
            seen.extend(m["changes"])
            found[:] = [ch for ch in m["changes"] if ch.get("op") == op and ch.get("id") == uid]
            return bool(found)
        ws.wait_for(pred, WAIT, what=what)
        return found[-1]

    def test_delta_client_on_gateway_2_sees_joins_and_leaves_on_gateway_1(self):
        alice = self.peer(self.gw1)
        dave = self.peer(self.gw2, presence="delta")
        self.assertIn(alice.name, {u["name"] for u in dave.reply["users"]},
                      "the whole list once, in the LoginEvent")
        seen = []
        carol = self.peer(self.gw1, pubKey="carol-key")
        join = self.wait_change(dave.ws, "join", carol.id, seen, "carol's join")
        self.assertEqual(join, {"op": "join", "id": carol.id, "name": carol.name, "publicKey": "carol-key"})
        erin = self.peer(self.gw1)
        self.assertEqual(self.wait_change(dave.ws, "join", erin.id, seen, "erin's join"),
                         {"op": "join", "id": erin.id, "name": erin.name, "publicKey": erin.pubKey})
        carol.drop()
        self.assertEqual(self.wait_change(dave.ws, "leave", carol.id, seen, "carol's leave"),
                         {"op": "leave", "id": carol.id})
        erin.ws.send_json({"action": LOGOUT, "token": erin.token})
        self.assertEqual(self.wait_change(dave.ws, "leave", erin.id, seen, "erin's leave"),
                         {"op": "leave", "id": erin.id})
        for ch in seen:
            self.assertIn(ch.get("op"), ("join", "leave"), seen)
            self.assertFalse(ch.get("op") == "leave" and ch.get("id") == alice.id,
                             "alice, still online, left: %r" % seen)
        # the changes came as they happened, in order, for carol and erin
        ours = [(ch["op"], ch["id"]) for ch in seen if ch.get("id") in (carol.id, erin.id)]
        self.assertEqual(ours, [("join", carol.id), ("join", erin.id), ("leave", carol.id),
                                ("leave", erin.id)])
        # a delta client gets no whole lists after the first
        lists = [m for m in dave.ws.pending if m.get("event") == EV_USERLIST
                 and carol.name in {u["name"] for u in m.get("users", [])}]
        self.assertEqual(lists, [], "a whole list came to a delta client")

    def test_lookup_on_gateway_2_finds_online_and_offline_users_of_gateway_1(self):
        alice = self.peer(self.gw1, pubKey="alice-key")
        bob = self.offline_user(self.gw1, pubKey="bob-key")
        erin = self.peer(self.gw2)
        missing = uniq("nobody")
        asked = [alice.name.upper(), bob.name, missing]
        erin.ws.send_json({"action": LOOKUP, "token": erin.token, "names": asked})
        answers = {}
        for _ in asked:
            ev = erin.ws.wait_for(lambda m: m.get("event") == EV_LOOKUP and m.get("name") not in answers,
                                  WAIT, what="a UserLookupEvent")
            answers[ev.get("name")] = ev
        self.assertEqual(set(answers), set(asked), answers)
        self.assertEqual(answers[asked[0]], {"valid": True, "event": EV_LOOKUP, "name": asked[0],
                                             "user": {"id": alice.id, "name": alice.name,
                                                      "publicKey": "alice-key", "online": True}})
        self.assertEqual(answers[bob.name], {"valid": True, "event": EV_LOOKUP, "name": bob.name,
                                             "user": {"id": bob.id, "name": bob.name,
                                                      "publicKey": "bob-key", "online": False}})
        self.assertEqual(answers[missing], {"valid": False, "event": EV_LOOKUP, "name": missing,
                                            "error": "No such user."})


if __name__ == "__main__":
    unittest.main(verbosity=2)
