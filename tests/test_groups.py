"""Groups (docs/PROTOCOL.md, "Groups (ext)") against the real binary: create,
change, leave and list; messages fanned out to members online and stored
for members offline, one ack, receipts per member; rights and limits; what a
removed member no longer gets, live or stored; groups surviving a restart;
and, on a cluster, members on two gateways and a router restart.

"Nothing more arrives" is shown with a sentinel: a direct message sent after
the thing that must not arrive; it goes the same way (the router, then the
member's gateway, in order), so whatever was going to come is in front of it.
"""

import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmslib import QmsTestCase, SharedServerTestCase, uniq
from test_admin import admin
from test_cluster import ClusterCase
from test_store_forward import Peer

GROUP_CREATE, GROUP_UPDATE, GROUP_LIST, GROUP_MESSAGE = 7, 8, 9, 10
EV_GROUP, EV_GROUP_LIST, EV_GROUP_MESSAGE, EV_ACK, EV_MESSAGE = 8, 9, 10, 5, 2


class Member(Peer):
    """A Peer that speaks the group requests."""

    def ask(self, req):
        req = dict(req)
        req["token"] = self.token
        self.ws.send_json(req)

    def create(self, name, members, rid=None):
        rid = rid or uniq("c")
        self.ask({"action": GROUP_CREATE, "name": name, "members": [m.id for m in members], "id": rid})
        ev = self.answer(rid, EV_GROUP)
        self.test.assertIs(ev.get("valid"), True, ev)
        return ev["group"]

    def update(self, gid, op, members=None, name=None, rid=None):
        rid = rid or uniq("u")
        req = {"action": GROUP_UPDATE, "group": gid, "op": op, "id": rid}
        if members is not None:
            req["members"] = [m.id if isinstance(m, Peer) else m for m in members]
        if name is not None:
            req["name"] = name
        self.ask(req)
        return self.answer(rid, EV_GROUP)

    def answer(self, rid, event, timeout=10.0):
        return self.ws.wait_for(lambda m: m.get("event") == event and m.get("id") == rid, timeout,
                                what="the answer to request %r" % rid)

    def group_event(self, gid, op, timeout=10.0):
        return self.ws.wait_for(lambda m: m.get("event") == EV_GROUP and m.get("group", {}).get("id") == gid
                                and m.get("change", {}).get("op") == op, timeout,
                                what="GroupEvent %s of %s" % (op, gid))

    def say(self, gid, text, cid=None):
        req = {"action": GROUP_MESSAGE, "group": gid, "message": text}
        if cid is not None:
            req["id"] = cid
        self.ask(req)

    def heard(self, gid, sender, text, timeout=10.0):
        m = self.ws.wait_for(lambda m: m.get("event") == EV_GROUP_MESSAGE and m.get("group") == gid
                             and m.get("message") == text, timeout,
                             what="group message %r in %s" % (text, gid))
        self.test.assertEqual((m.get("valid"), m.get("sender")), (True, sender.id), m)
        self.test.assertEqual(len(m.get("id", "")), 16, m)
        return m

    def nothing_before(self, sender, sentinel, what):
        """sender sends a direct sentinel; no group message may come first."""
        sender.send(self, sentinel)
        seen = []
        while True:
            m = self.ws.recv_json(10.0)
            if m.get("event") == EV_MESSAGE and m.get("message") == sentinel:
                break
            seen.append(m)
        bad = [m for m in seen if m.get("event") == EV_GROUP_MESSAGE]
        self.test.assertEqual(bad, [], what)


def role_of(group, member):
    return {m["id"]: m["role"] for m in group["members"]}.get(member.id)


class Groups(SharedServerTestCase):
    server_args = ["--group-max-members", "5", "--group-max-per-user", "3"]

    def member(self, name=None, receipts=False):
        return Member(self, self.server.chat_port, name or uniq("g"), receipts=receipts)

    def test_create_tells_every_member_with_names_keys_and_roles(self):
        a, b, c = self.member(), self.member(), self.member()
        g = a.create("Climbing", [b, c, b], rid="r1")
        self.assertEqual(len(g["id"]), 16)
        self.assertEqual((g["name"], g["owner"], g["epoch"]), ("Climbing", a.id, 1))
        self.assertEqual([m["id"] for m in g["members"]], [a.id, b.id, c.id], "no duplicate, in order")
        self.assertEqual((role_of(g, a), role_of(g, b)), ("owner", "member"))
        self.assertEqual({m["name"] for m in g["members"]}, {a.name, b.name, c.name})
        self.assertEqual({m["publicKey"] for m in g["members"]}, {a.pubKey, b.pubKey, c.pubKey})
        for other in (b, c):
            ev = other.group_event(g["id"], "create")
            self.assertNotIn("id", ev, "only the requester's copy carries its id")
            self.assertEqual(ev["change"]["by"], a.id)
            self.assertEqual(ev["group"]["members"], g["members"])

    def test_message_fans_out_once_to_each_member_with_one_ack(self):
        a, b, c = self.member(), self.member(), self.member()
        g = a.create("fan", [b, c])
        for m in (b, c):
            m.group_event(g["id"], "create")
        a.say(g["id"], "ciphertext-1", cid="m1")
        ack = a.ack("m1")
        self.assertEqual((ack["valid"], ack["status"], ack["group"], ack["members"]),
                         (True, "delivered", g["id"], 2), ack)
        ids = {b.heard(g["id"], a, "ciphertext-1")["id"], c.heard(g["id"], a, "ciphertext-1")["id"]}
        self.assertEqual(ids, {ack["messageId"]}, "one message id for every member")
        # the sender does not get its own message back; a retry sends nothing
        a.say(g["id"], "ciphertext-1", cid="m1")
        again = a.ack("m1")
        self.assertEqual((again["status"], again["messageId"]), ("delivered", ack["messageId"]))
        b.nothing_before(a, "sentinel-retry", "a retried id was delivered twice")
        a.nothing_before(b, "sentinel-self", "the sender got its own group message")

    def test_offline_member_gets_it_stored_at_login_in_order(self):
        a, b, d = self.member(), self.member(), self.member()
        g = a.create("later", [b, d])
        d.group_event(g["id"], "create")
        d.drop()
        time.sleep(0.3)
        a.say(g["id"], "while away 1", cid="s1")
        a.say(g["id"], "while away 2", cid="s2")
        for cid in ("s1", "s2"):
            ack = a.ack(cid)
            self.assertEqual((ack["status"], ack["members"]), ("stored", 2), ack)
        a.send(d, "direct after")
        d.login()
        first = d.heard(g["id"], a, "while away 1")
        self.assertEqual((first.get("stored"), first.get("senderName"), first.get("senderKey")),
                         (True, a.name, a.pubKey), first)
        d.heard(g["id"], a, "while away 2")
        d.ws.wait_for(lambda m: m.get("event") == EV_MESSAGE and m.get("message") == "direct after",
                      10.0, what="the direct message stored after them")

    def test_a_removed_member_gets_nothing_sent_after_live_or_stored(self):
        a, b, c, e = self.member(), self.member(), self.member(), self.member()
        g = a.create("tight", [b, c, e])
        for m in (b, c, e):
            m.group_event(g["id"], "create")
        # b online, e offline when they are removed
        e.drop()
        time.sleep(0.3)
        ev = a.update(g["id"], "remove", [b, e])
        self.assertEqual((ev["valid"], ev["group"]["epoch"]), (True, 2), ev)
        self.assertEqual([m["id"] for m in ev["group"]["members"]], [a.id, c.id])
        gone = b.group_event(g["id"], "remove")
        self.assertIs(gone.get("removed"), True, gone)
        self.assertNotIn("members", gone["group"], "a removed member is not told who stays")
        a.say(g["id"], "after the removal", cid="x1")
        ack = a.ack("x1")
        self.assertEqual((ack["status"], ack["members"]), ("delivered", 1), ack)
        c.heard(g["id"], a, "after the removal")
        b.nothing_before(a, "sentinel-b", "a removed member got a message sent after its removal")
        # e comes back: nothing of the group was stored for it
        a.send(e, "sentinel-e")
        e.login()
        e.nothing_before(a, "sentinel-e2", "a member removed while offline got a later message")
        # and b cannot send to the group any more
        b.say(g["id"], "let me back", cid="b1")
        rej = b.ack("b1")
        self.assertEqual((rej["valid"], rej["status"], rej["error"]), (False, "rejected", "Unknown group."))

    def test_rights_of_owner_admin_and_member(self):
        a, b, c, d = self.member(), self.member(), self.member(), self.member()
        g = a.create("ranks", [b, c])
        ev = b.update(g["id"], "add", [d])
        self.assertEqual(ev, {"valid": False, "event": EV_GROUP, "id": ev["id"],
                              "error": "Only the group's owner or an admin can do that."})
        ev = a.update(g["id"], "promote", [b])
        self.assertEqual((ev["valid"], role_of(ev["group"], b), ev["group"]["epoch"]), (True, "admin", 1), ev)
        ev = b.update(g["id"], "add", [d])
        self.assertEqual((ev["valid"], ev["group"]["epoch"]), (True, 2), ev)
        ev = b.update(g["id"], "remove", [a])
        self.assertEqual(ev.get("error"), "Only the group's owner can do that.", ev)
        ev = b.update(g["id"], "promote", [c])
        self.assertEqual(ev.get("error"), "Only the group's owner can do that.", ev)
        ev = b.update(g["id"], "rename", name="Ranks")
        self.assertEqual((ev["valid"], ev["group"]["name"], ev["group"]["epoch"]), (True, "Ranks", 2), ev)
        ev = a.update(g["id"], "add", [c])
        self.assertEqual(ev.get("error"), "Nothing to change.", ev)
        ev = a.update(g["id"], "remove", [self.member()])
        self.assertTrue(ev.get("error", "").startswith("Not a member of the group: "), ev)
        outsider = self.member()
        ev = outsider.update(g["id"], "rename", name="mine")
        self.assertEqual(ev.get("error"), "Unknown group.", ev)
        outsider.say(g["id"], "hi")
        err = outsider.ws.wait_event(EV_GROUP_MESSAGE)
        self.assertEqual(err, {"valid": False, "event": EV_GROUP_MESSAGE, "error": "Unknown group."})

    def test_owner_leaves_the_longest_standing_admin_takes_over(self):
        a, b, c = self.member(), self.member(), self.member()
        g = a.create("heirs", [b, c])
        a.update(g["id"], "promote", [c])
        ev = a.update(g["id"], "leave")
        self.assertIs(ev.get("removed"), True, ev)
        after = b.group_event(g["id"], "leave")
        self.assertEqual((after["group"]["owner"], role_of(after["group"], c)), (c.id, "owner"), after)
        self.assertEqual(after["change"]["members"], [a.id])

    def test_list_holds_every_group_of_the_caller(self):
        a, b = self.member(), self.member()
        g1 = a.create("one", [b])
        g2 = b.create("two", [a])
        a.ask({"action": GROUP_LIST, "id": "l1"})
        ev = a.answer("l1", EV_GROUP_LIST)
        self.assertIs(ev.get("valid"), True, ev)
        self.assertEqual(sorted(x["id"] for x in ev["groups"]), sorted([g1["id"], g2["id"]]))
        mine = {x["id"]: x for x in ev["groups"]}
        self.assertEqual(mine[g2["id"]]["owner"], b.id)
        self.assertEqual(len(mine[g1["id"]]["members"]), 2)

    def test_limits_members_and_groups_per_user(self):
        a = self.member()
        others = [self.member() for _ in range(5)]
        a.ask({"action": GROUP_CREATE, "name": "big", "members": [m.id for m in others], "id": "big"})
        ev = a.answer("big", EV_GROUP)
        self.assertEqual(ev.get("error"), "A group has at most 5 members.", ev)
        for i in range(3):
            a.create("g%d" % i, [])
        a.ask({"action": GROUP_CREATE, "name": "fourth", "members": [], "id": "four"})
        ev = a.answer("four", EV_GROUP)
        self.assertEqual(ev.get("error"), "%s is in too many groups (at most 3)." % a.id, ev)

    def test_unknown_user_creates_nothing(self):
        a = self.member()
        ghost = "00000000-0000-4000-8000-000000000000"
        a.ask({"action": GROUP_CREATE, "name": "ghosts", "members": [ghost], "id": "gh"})
        ev = a.answer("gh", EV_GROUP)
        self.assertEqual(ev.get("error"), "Unknown user: %s." % ghost, ev)
        a.ask({"action": GROUP_LIST, "id": "l"})
        self.assertEqual(a.answer("l", EV_GROUP_LIST)["groups"], [])

    def test_receipts_come_back_per_member(self):
        a = self.member()
        b, c = self.member(receipts=True), self.member(receipts=True)
        g = a.create("read", [b, c])
        a.say(g["id"], "read me", cid="r1")
        mid = a.ack("r1")["messageId"]
        for m in (b, c):
            m.heard(g["id"], a, "read me")
            m.receipt([mid])
        got = {}
        for _ in range(2):
            r = a.ws.wait_for(lambda m: m.get("event") == EV_ACK and m.get("status") == "received", 10.0,
                              what="a received ack")
            self.assertEqual((r["id"], r["messageId"], r["group"]), ("r1", mid, g["id"]), r)
            got[r["by"]] = r
        self.assertEqual(set(got), {b.id, c.id})

    def test_a_stored_group_message_is_deleted_by_its_receipt_and_acked(self):
        a, d = self.member(), self.member(receipts=True)
        g = a.create("rcpt", [d])
        d.drop()
        time.sleep(0.3)
        a.say(g["id"], "stored then read", cid="sr")
        self.assertEqual(a.ack("sr")["status"], "stored")
        d.login(receipts=True)
        m = d.heard(g["id"], a, "stored then read")
        d.receipt([m["id"]])
        r = a.ws.wait_for(lambda x: x.get("event") == EV_ACK and x.get("status") == "received", 10.0,
                          what="the received ack of a stored group message")
        self.assertEqual((r["id"], r["group"], r["by"]), ("sr", g["id"], d.id), r)


class GroupsSurviveRestart(QmsTestCase):

    def test_groups_and_stored_group_messages_survive_a_restart(self):
        server = self.start_server()
        a = Member(self, server.chat_port, uniq("r"))
        b = Member(self, server.chat_port, uniq("r"))
        g = a.create("durable", [b])
        b.drop()
        time.sleep(0.3)
        a.say(g["id"], "kept", cid="k1")
        self.assertEqual(a.ack("k1")["status"], "stored")
        a.drop()
        server.restart()
        a.port = b.port = server.chat_port
        a.login()
        b.login()
        b.heard(g["id"], a, "kept")
        a.ask({"action": GROUP_LIST, "id": "l"})
        groups = a.answer("l", EV_GROUP_LIST)["groups"]
        self.assertEqual([(x["id"], x["name"], x["epoch"]) for x in groups], [(g["id"], "durable", 1)])
        a.say(g["id"], "after restart", cid="k2")
        self.assertEqual(a.ack("k2")["status"], "delivered")
        b.heard(g["id"], a, "after restart")


class AdminDelete(QmsTestCase):

    def test_a_user_deleted_by_an_administrator_leaves_its_groups_at_once(self):
        # the store takes the user out of its groups and moves their epoch in
        # the same transaction; the running router must follow, or its next
        # change would reuse an epoch (a fork to every client)
        server = self.start_server()
        a, b, c = (Member(self, server.chat_port, uniq("ad")) for _ in range(3))
        g = a.create("admin", [b, c])
        code, out, err = admin(server.data_dir, "users", "delete", b.name)
        self.assertEqual(code, 0, err)
        deadline = time.monotonic() + 10
        while True:
            a.ask({"action": GROUP_LIST, "id": "l"})
            listed = a.answer("l", EV_GROUP_LIST)
            if listed.get("valid") and listed["groups"] and b.id not in {
                    m["id"] for m in listed["groups"][0]["members"]}:
                break
            self.assertLess(time.monotonic(), deadline, "the router still lists the deleted member: %r" % listed)
            time.sleep(0.1)
        mine = listed["groups"][0]
        self.assertEqual(([m["id"] for m in mine["members"]], mine["epoch"]), ([a.id, c.id], 2), mine)
        a.say(g["id"], "after the delete", cid="d1")
        self.assertEqual(a.ack("d1")["members"], 1)
        ev = a.update(g["id"], "remove", [c])
        self.assertEqual(ev["group"]["epoch"], 3, "the next change follows the store's epoch: %r" % ev)


class LongGroupList(QmsTestCase):

    def test_a_long_list_comes_in_parts_each_written_before_the_next(self):
        # 24 groups with a member whose key is 15 KiB: about 360 KiB of list,
        # more than one part of about 256 KiB
        server = self.start_server()
        a = Member(self, server.chat_port, uniq("l"), pubKey="K" * 15000)
        b = Member(self, server.chat_port, uniq("l"))
        made = {a.create("list %d" % i, [b])["id"] for i in range(24)}
        b.ask({"action": GROUP_LIST, "id": "all"})
        parts, seen = [], set()
        while True:
            part = b.answer("all", EV_GROUP_LIST, 20.0)
            self.assertIs(part.get("valid"), True, part)
            parts.append(part)
            seen |= {g["id"] for g in part["groups"]}
            if not part.get("more"):
                break
            self.assertIs(part["more"], True)
        self.assertGreater(len(parts), 1, "the list came in one part")
        self.assertEqual(seen, made)
        self.assertEqual(sum(len(p["groups"]) for p in parts), 24, "a group listed twice")


class GroupsOnACluster(ClusterCase):
    """Members on two gateways; the router restarted (its groups come back
    from the store; the gateways announce their connections again)."""

    def test_members_on_two_gateways_then_a_router_restart(self):
        c = self.cluster()
        a = Member(self, c.chat_port(1), uniq("ca"))
        b = Member(self, c.chat_port(2), uniq("cb"))
        d = Member(self, c.chat_port(2), uniq("cd"))
        e = Member(self, c.chat_port(1), uniq("ce"))
        g = a.create("across", [b, d, e])
        for m in (b, d, e):
            m.group_event(g["id"], "create")
        a.say(g["id"], "to both gateways", cid="x1")
        self.assertEqual(a.ack("x1")["members"], 3)
        for m in (b, d, e):
            m.heard(g["id"], a, "to both gateways")
        # the router goes and comes back: no membership is lost
        code, _ = c.stop("router")
        self.assertEqual(code, 0)
        c.start("router")
        deadline = time.monotonic() + 20
        while True:
            b.say(g["id"], "after the router came back", cid="y%d" % int(time.monotonic() * 1000))
            ack = b.ws.wait_for(lambda m: m.get("event") == EV_ACK, 10.0, what="an ack")
            # stored: the router is back but the gateways have not yet
            # announced their connections again; it then reaches the members
            # when they are (a drain), with "stored": either way, not lost
            if ack.get("status") in ("delivered", "stored"):
                break
            self.assertEqual(ack.get("error"), "Service temporarily unavailable.", ack)
            self.assertLess(time.monotonic(), deadline, "groups did not come back after the router restart")
            time.sleep(0.3)
        self.assertEqual(ack["members"], 3)
        for m in (a, d, e):
            m.heard(g["id"], b, "after the router came back")
        # a change after the restart reaches both gateways
        ev = a.update(g["id"], "remove", [d])
        self.assertEqual(ev["group"]["epoch"], 2, ev)
        self.assertIs(d.group_event(g["id"], "remove").get("removed"), True)
        b.group_event(g["id"], "remove")
        e.group_event(g["id"], "remove")


if __name__ == "__main__":
    unittest.main()
