"""The administration commands (docs/ADMIN.md): `qmessageserver users ...`
and `qmessageserver db ...` against a running all-in-one server (through its
admin sockets: a connection is closed at once) and against the same data
directory with the server stopped (the store runs inside the command).

Run:  QMS_BINARY=build/qmessageserver python3 tests/test_admin.py
"""

import hashlib
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmslib import (BINARY, EV_INVALID_USER, EV_AUTHORIZATION, HTML_DIR, Client, QmsTestCase, Server,
                    authorize, connect, login, register, send_message, uniq, wait_userlist)

FAST_ARGON2 = ["--argon2-memory", "256", "--argon2-iterations", "1"]
RUN_TIMEOUT = 60
KICK_LIMIT = 2.0          # seconds from the command's exit to the closed connection


def admin(data_dir, *args, input=None, extra=()):
    """Run one command on data_dir: (exit code, stdout, stderr)."""
    proc = subprocess.run([BINARY] + list(args) + ["--data-dir", data_dir] + list(extra),
                          input=input if input is not None else "", capture_output=True, text=True,
                          timeout=RUN_TIMEOUT, env=dict(os.environ, QMS_STORE_ENDPOINT="",
                                                        QMS_ROUTER_ENDPOINT=""))
    return proc.returncode, proc.stdout, proc.stderr


def list_rows(out):
    """users list output as {name: (id, created, last active, waiting)}."""
    lines = out.strip().splitlines()
    rows = {}
    if not lines[-1].endswith("users") and not lines[-1].endswith("user"):
        raise AssertionError("no count line: %r" % out)
    count = int(lines[-1].split()[0])
    if count:
        assert lines[0].split()[:2] == ["NAME", "ID"], out
        for line in lines[1:-1]:
            m = re.match(r"^(\S+)\s+(\S+)\s+(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC)\s+"
                         r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC|-)\s+(\d+)$", line)
            assert m, "bad row %r" % line
            rows[m.group(1)] = (m.group(2), m.group(3), m.group(4), int(m.group(5)))
    assert len(rows) == count, out
    return rows


def token_hash(token):
    return hashlib.sha256(token.encode()).hexdigest()


class AdminTestCase(QmsTestCase):

    def server(self):
        return self.start_server()

    def ws(self, srv):
        ws = connect(srv.chat_port)
        self.addCleanup(ws.abort)
        return ws

    def run_ok(self, srv, *args, **kw):
        code, out, err = admin(srv.data_dir, *args, **kw)
        self.assertEqual(code, 0, "%s: stdout %r stderr %r" % (args, out, err))
        return out

    def assert_kicked(self, client, began):
        code = client.ws.expect_close(KICK_LIMIT + 3)
        self.assertEqual(code, 4001)
        self.assertEqual(client.ws.close_reason, b"Removed by an administrator")
        self.assertLess(time.monotonic() - began, KICK_LIMIT + 1)

    def assert_token_dead(self, srv, token):
        reply = authorize(self.ws(srv), token)
        self.assertEqual(reply.get("event"), EV_INVALID_USER, reply)

    def assert_token_alive(self, srv, token):
        reply = authorize(self.ws(srv), token)
        self.assertEqual((reply.get("valid"), reply.get("event")), (True, EV_AUTHORIZATION), reply)


class Reading(AdminTestCase):

    def test_list_show_sessions_running_then_stopped(self):
        srv = self.server()
        alice = Client(srv.chat_port, uniq("Alice"), "alice-pw", "alice-key", test=self)
        bob = Client(srv.chat_port, uniq("Bob"), "bob-pw", "", test=self)
        bob.close()
        outputs = {}
        for running in (True, False):
            with self.subTest(running=running):
                if running:
                    self.assertTrue(os.path.exists(os.path.join(srv.data_dir, ".qms-admin-store")))
                out = self.run_ok(srv, "users", "list")
                rows = list_rows(out)
                self.assertEqual(set(rows), {alice.name, bob.name})
                self.assertEqual(rows[alice.name][0], alice.id)
                self.assertEqual(rows[bob.name][0], bob.id)
                self.assertNotEqual(rows[alice.name][2], "-", "alice has a session")
                self.assertEqual(rows[alice.name][3], 0)

                out = self.run_ok(srv, "users", "show", alice.name.upper())   # names fold case
                self.assertIn("name:        %s\n" % alice.name, out)
                self.assertIn("id:          %s\n" % alice.id, out)
                self.assertIn("public key:  alice-key\n", out)
                self.assertIn("session:     yes, last active", out)
                self.assertIn("waiting:     0 stored messages", out)
                out = self.run_ok(srv, "users", "show", bob.name)
                self.assertIn("public key:  (none)", out)

                out = self.run_ok(srv, "users", "sessions", alice.name)
                self.assertIn(token_hash(alice.token), out)
                self.assertNotIn(alice.token, out, "never the token itself")
                self.assertEqual(len(out.strip().splitlines()), 2, out)

                code, out, err = admin(srv.data_dir, "users", "show", "nobody-" + uniq())
                self.assertEqual(code, 1, err)
                self.assertIn("no user named", err)
                self.assertEqual(out, "")
                outputs[running] = rows
                if running:
                    srv.stop()
                    self.assertFalse(os.path.exists(os.path.join(srv.data_dir, ".qms-admin-store")))
        self.assertEqual(set(outputs[True]), set(outputs[False]))
        # the store ran inside the command and let go of the database
        srv.start()
        self.assert_token_alive(srv, alice.token)

    def test_usage_errors_and_help(self):
        with tempfile.TemporaryDirectory() as tmp:
            for args in (["users"], ["users", "bogus"], ["users", "show"], ["db", "backup"],
                         ["db", "nothing"], ["users", "list", "--no-such-option"],
                         ["users", "show", "--data-dir", tmp]):
                with self.subTest(args=args):
                    code, _, err = admin(tmp, *args)
                    self.assertEqual(code, 2, err)
                    self.assertTrue(err.startswith("qmessageserver: "), err)
            code, out, _ = admin(tmp, "users", "--help")
            self.assertEqual(code, 0)
            self.assertIn("reset-password", out)
            # no database here: none is made
            code, _, err = admin(tmp, "users", "list")
            self.assertEqual(code, 1, err)
            self.assertIn("no users.db", err)
            self.assertEqual(os.listdir(tmp), [])


class Writing(AdminTestCase):

    def test_delete_closes_an_online_user_at_once(self):
        srv = self.server()
        alice = Client(srv.chat_port, uniq("Alice"), "alice-pw", test=self)
        bob = Client(srv.chat_port, uniq("Bob"), "bob-pw", test=self)
        wait_userlist(bob.ws, lambda names: alice.name in names)
        out = self.run_ok(srv, "users", "delete", alice.name)
        began = time.monotonic()
        self.assertIn("Deleted user %s (id %s) and its session; its connection was closed."
                      % (alice.name, alice.id), out)
        self.assert_kicked(alice, began)
        wait_userlist(bob.ws, lambda names: alice.name not in names)
        self.assert_token_dead(srv, alice.token)
        self.assertEqual(login(self.ws(srv), alice.name, "alice-pw").get("valid"), False)
        # messages to the id go nowhere, and the name is free again
        send_message(bob.ws, bob.token, alice.id, "still there?")
        err = bob.ws.wait_for(lambda m: m.get("event") == 2 and m.get("valid") is False)
        self.assertEqual(err.get("error"), "Unknown recipient.")
        again = register(self.ws(srv), alice.name, "new-pw")
        self.assertEqual(again.get("valid"), True, again)
        rows = list_rows(self.run_ok(srv, "users", "list"))
        self.assertNotEqual(rows[alice.name][0], alice.id, "a new user, a new id")
        code, _, err = admin(srv.data_dir, "users", "delete", uniq("nobody"))
        self.assertEqual(code, 1, err)

    def test_delete_with_the_server_stopped(self):
        srv = self.server()
        alice = Client(srv.chat_port, uniq("Alice"), "alice-pw", test=self)
        srv.stop()
        out = self.run_ok(srv, "users", "delete", alice.name)
        self.assertIn("Deleted user %s" % alice.name, out)
        self.assertNotIn("connection", out)
        srv.start()
        self.assert_token_dead(srv, alice.token)
        self.assertEqual(login(self.ws(srv), alice.name, "alice-pw").get("valid"), False)

    def test_logout_closes_the_connection_and_ends_the_session(self):
        srv = self.server()
        alice = Client(srv.chat_port, uniq("Alice"), "alice-pw", test=self)
        out = self.run_ok(srv, "users", "logout", alice.name)
        began = time.monotonic()
        self.assertEqual(out, "Ended the session of %s; its connection was closed.\n" % alice.name)
        self.assert_kicked(alice, began)
        self.assert_token_dead(srv, alice.token)
        self.assertEqual(self.run_ok(srv, "users", "logout", alice.name), "%s had no session.\n" % alice.name)
        # the password still works
        ws = self.ws(srv)
        r = login(ws, alice.name, "alice-pw")
        self.assertEqual(r.get("valid"), True, r)
        # stopped: the session of that login ends too
        ws.close()
        srv.stop()
        self.assertEqual(self.run_ok(srv, "users", "logout", alice.name),
                         "Ended the session of %s.\n" % alice.name)
        srv.start()
        self.assert_token_dead(srv, r["token"])

    def test_reset_password(self):
        srv = self.server()
        alice = Client(srv.chat_port, uniq("Alice"), "old-pw", test=self)
        out = self.run_ok(srv, "users", "reset-password", alice.name, input="new pw 1\n", extra=FAST_ARGON2)
        began = time.monotonic()
        self.assertIn("Changed the password of %s; its session ended; its connection was closed."
                      % alice.name, out)
        self.assert_kicked(alice, began)
        self.assert_token_dead(srv, alice.token)
        self.assertEqual(login(self.ws(srv), alice.name, "old-pw").get("valid"), False)
        r = login(self.ws(srv), alice.name, "new pw 1")
        self.assertEqual(r.get("valid"), True, r)
        # no password, an unknown user: nothing changes
        code, _, err = admin(srv.data_dir, "users", "reset-password", alice.name, input="", extra=FAST_ARGON2)
        self.assertEqual(code, 2, err)
        code, _, err = admin(srv.data_dir, "users", "reset-password", uniq("nobody"), input="x\n")
        self.assertEqual(code, 1, err)
        self.assert_token_alive(srv, r["token"])
        # stopped: the new password works after the start, the old session is gone
        srv.stop()
        out = self.run_ok(srv, "users", "reset-password", alice.name, input="third\r\n", extra=FAST_ARGON2)
        self.assertIn("its session ended", out)
        srv.start()
        self.assert_token_dead(srv, r["token"])
        self.assertEqual(login(self.ws(srv), alice.name, "new pw 1").get("valid"), False)
        self.assertEqual(login(self.ws(srv), alice.name, "third").get("valid"), True)

    def test_a_router_that_cannot_be_told_is_reported(self):
        srv = self.server()
        alice = Client(srv.chat_port, uniq("Alice"), "alice-pw", test=self)
        os.unlink(os.path.join(srv.data_dir, ".qms-admin-router"))
        code, out, err = admin(srv.data_dir, "users", "logout", alice.name)
        self.assertEqual(code, 3, err)
        self.assertIn("did not answer", err)
        self.assertIn("Ended the session", out, "the store's part was done")


class Database(AdminTestCase):

    def test_backup_while_running_then_restore(self):
        srv = self.server()
        alice = Client(srv.chat_port, uniq("Alice"), "alice-pw", "alice-key", test=self)
        bob = Client(srv.chat_port, uniq("Bob"), "bob-pw", "bob-key", test=self)
        # a message waiting for an offline user is in the copy too
        carol = Client(srv.chat_port, uniq("Carol"), "carol-pw", test=self)
        carol.close()
        wait_userlist(alice.ws, lambda names: carol.name not in names)
        alice.ws.send_json({"action": 3, "token": alice.token, "target": carol.id, "message": "hi",
                            "id": "m1"})
        alice.ws.wait_for(lambda m: m.get("event") == 5 and m.get("status") == "stored")
        tmp = tempfile.mkdtemp(prefix="qms-admin-backup-")
        self.addCleanup(shutil.rmtree, tmp, True)
        backup = os.path.join(tmp, "backup.db")
        # chatting goes on while the copy is made
        alice.send(bob, "during the backup")
        out = self.run_ok(srv, "db", "backup", backup)
        self.assertRegex(out, r"^Backup written to %s \(\d+ pages, \d+ bytes\)\.\n$" % re.escape(backup))
        bob.expect_message(alice, "during the backup")
        self.assertEqual(os.stat(backup).st_mode & 0o777, 0o600)
        code, _, err = admin(srv.data_dir, "db", "backup", backup)
        self.assertEqual(code, 1, err)
        self.assertIn("exists", err)
        # a relative path is the command's, not the server's
        rel = subprocess.run([BINARY, "db", "backup", "rel.db", "--data-dir", srv.data_dir],
                             cwd=tmp, capture_output=True, text=True, timeout=RUN_TIMEOUT)
        self.assertEqual(rel.returncode, 0, rel.stderr)
        self.assertTrue(os.path.isfile(os.path.join(tmp, "rel.db")))

        # restore: a fresh data directory with the copy as users.db
        restored = os.path.join(tmp, "restored")
        os.makedirs(restored)
        shutil.copy(backup, os.path.join(restored, "users.db"))
        self.assertEqual(admin(restored, "db", "check")[0], 0)
        srv2 = self.start_server(data_dir=restored)
        self.assertEqual(list_rows(self.run_ok(srv2, "users", "list")).keys(),
                         {alice.name, bob.name, carol.name})
        r = login(self.ws(srv2), bob.name, "bob-pw")
        self.assertEqual(r.get("valid"), True, r)
        self.assert_token_alive(srv2, alice.token)
        ws = self.ws(srv2)
        r = login(ws, carol.name, "carol-pw")
        self.assertEqual(r.get("valid"), True, r)
        msg = ws.wait_for(lambda m: m.get("event") == 2 and m.get("message") == "hi")
        self.assertEqual(msg.get("sender"), alice.id)

    def test_backup_with_the_server_stopped(self):
        srv = self.server()
        alice = Client(srv.chat_port, uniq("Alice"), "alice-pw", test=self)
        srv.stop()
        backup = os.path.join(srv.tmp, "stopped.db")
        self.run_ok(srv, "db", "backup", backup)
        db = sqlite3.connect(backup)
        try:
            self.assertEqual(db.execute("SELECT name FROM users").fetchall(), [(alice.name,)])
        finally:
            db.close()

    def test_check_ok_and_corrupted(self):
        srv = self.server()
        Client(srv.chat_port, uniq("Alice"), "alice-pw", test=self)
        for i in range(30):
            Client(srv.chat_port, uniq("user%d-" % i), "pw", test=self).close()
        self.assertEqual(self.run_ok(srv, "db", "check"), "ok\n")
        backup = os.path.join(srv.tmp, "copy.db")
        self.run_ok(srv, "db", "backup", backup)
        srv.stop()
        self.assertEqual(self.run_ok(srv, "db", "check"), "ok\n")

        # a damaged index page
        broken = os.path.join(srv.tmp, "broken")
        os.makedirs(broken)
        path = os.path.join(broken, "users.db")
        shutil.copy(backup, path)
        db = sqlite3.connect(path)
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE type = 'index' AND tbl_name = 'users'"
                          " ORDER BY rootpage DESC LIMIT 1").fetchone()[0]
        db.close()
        with open(path, "r+b") as f:
            f.seek((root - 1) * page_size + 1)
            f.write(b"\xff" * (page_size - 1))
        code, out, err = admin(broken, "db", "check")
        self.assertEqual(code, 1, "stdout %r stderr %r" % (out, err))
        self.assertIn("the check failed", err)

        # a session whose user is gone (written without foreign keys)
        orphan = os.path.join(srv.tmp, "orphan")
        os.makedirs(orphan)
        path = os.path.join(orphan, "users.db")
        shutil.copy(backup, path)
        db = sqlite3.connect(path)
        db.execute("INSERT INTO sessions VALUES ('no-such-user', 'feed', 1, 1)")
        db.commit()
        db.close()
        code, out, err = admin(orphan, "db", "check")
        self.assertEqual(code, 1, err)
        self.assertIn("foreign key: sessions", out)
        self.assertIn("1 problem", err)


class Safety(AdminTestCase):

    def test_stale_sockets_after_a_crash(self):
        srv = self.server()
        alice = Client(srv.chat_port, uniq("Alice"), "alice-pw", test=self)
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait(10)
        srv.proc = None
        self.assertTrue(os.path.exists(os.path.join(srv.data_dir, ".qms-admin-store")), "left behind")
        began = time.monotonic()
        self.assertIn(alice.name, self.run_ok(srv, "users", "list"))
        self.assertLess(time.monotonic() - began, 3, "a dead socket is seen at once")
        srv.start()
        self.assertIn(alice.name, self.run_ok(srv, "users", "list"))
        self.assertNotIn("admin_socket_busy", srv.log_text())
        code, _, err = admin(srv.data_dir, "users", "logout", alice.name)
        self.assertEqual(code, 0, err)

    def test_one_store_per_database(self):
        srv = self.server()
        # a second server on the same data directory refuses to start
        other = Server(data_dir=srv.data_dir)
        self.addCleanup(other.cleanup)
        with self.assertRaises(Exception):
            other.start()
        self.assertIn("in use by another store", other.log_text())
        # and the first one is still reached by the commands
        self.assertIn("0 users", self.run_ok(srv, "users", "list"))
        # without its admin socket, a running server is not opened beside it
        os.unlink(os.path.join(srv.data_dir, ".qms-admin-store"))
        code, _, err = admin(srv.data_dir, "users", "list")
        self.assertEqual(code, 3, err)
        self.assertIn("in use by another store", err)


if __name__ == "__main__":
    unittest.main(verbosity=2)
