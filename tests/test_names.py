"""Names in Unicode at registration: stored in compatibility form (NFKC),
refused when they mix scripts or look like a taken name (Unicode TR39
skeletons), with ASCII names exactly as before; a database from before
skeletons gets them when the server starts, and its names keep working."""

import os
import sqlite3
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmslib import QmsTestCase, connect, login, register, uniq

SIMILAR = "Username is too similar to an existing one."
SCRIPTS = "Name mixes letters of different scripts or number systems."
EXISTS = "Username already exists."


_tags = iter(range(10, 10 ** 6))


def tag():
    """Digits unique across this run: a name part of no script (digits are common to all)."""
    return "%d%d" % (next(_tags), int.from_bytes(os.urandom(2), "big"))


GREEK = "\u0391\u0392\u0395\u0396\u0397\u0399\u039a\u039c\u039d\u039f"   # ΑΒΕΖΗΙΚΜΝΟ
LATIN = "ABEZHIKMNO"                                                     # what they look like


def fullwidth(text):
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


class Names(QmsTestCase):

    def setUp(self):
        self.srv = self.start_server()

    def reg(self, name, password="pw-names-1"):
        ws = connect(self.srv.chat_port)
        self.addCleanup(ws.abort)
        return register(ws, name, password)

    def log_in(self, name, password="pw-names-1"):
        ws = connect(self.srv.chat_port)
        self.addCleanup(ws.abort)
        return login(ws, name, password)

    def assert_ok(self, reply, username=None):
        self.assertEqual(reply.get("valid"), True, reply)
        if username is not None:
            self.assertEqual(reply.get("username"), username, reply)

    def assert_refused(self, reply, text):
        self.assertEqual((reply.get("valid"), reply.get("error")), (False, text), reply)

    def test_ascii_names_as_before(self):
        base = uniq("modern")
        # ASCII look-alikes ("rn" and "m", "1" and "l") are different names, as they always were
        self.assert_ok(self.reg(base), base)
        self.assert_ok(self.reg(base.replace("m", "rn", 1)))
        self.assert_ok(self.reg(base + "1"))
        self.assert_ok(self.reg(base + "l"))
        # only letter case makes the same name
        self.assert_refused(self.reg(base.upper()), EXISTS)
        self.assert_ok(self.log_in(base.upper()), base)

    def test_registered_in_compatibility_form(self):
        base = uniq("kim")
        r = self.reg(fullwidth(base))
        self.assert_ok(r, base)
        self.assertEqual([u["name"] for u in r["users"] if u["name"] == base], [base])
        # found by either form, taken in either form
        self.assert_ok(self.log_in(base), base)
        self.assert_ok(self.log_in(fullwidth(base)), base)
        self.assert_refused(self.reg(base), EXISTS)
        self.assert_refused(self.log_in(fullwidth(base), "wrong"), "User or password is invalid.")
        # a composed and a decomposed accent are one name
        name = uniq("Jos") + "\u00e9"
        self.assert_ok(self.reg(name.replace("\u00e9", "e\u0301")), name)

    def test_mixed_scripts_refused(self):
        base = uniq("bob")
        for name in (base.replace("o", "\u043e", 1),     # Cyrillic o among Latin letters
                     base.replace("o", "\u03bf", 1),     # Greek omicron
                     "\u0418\u0432\u0430n" + base):      # Cyrillic then Latin
            with self.subTest(name=name):
                self.assert_refused(self.reg(name), SCRIPTS)
        # one script at a time is fine, so are Latin letters with accents, and Han with kana
        for name in ("\u0418\u0432\u0430\u043d" + tag(), "J\u00fcrgen " + uniq("M"),
                     "\u5c71\u7530\u3055\u3093" + tag(), "\u0391\u03bb\u03ad\u03be\u03b7\u03c2" + tag()):
            with self.subTest(name=name):
                self.assert_ok(self.reg(name), name)

    def test_look_alike_of_a_taken_name_refused(self):
        t = tag()
        # an ASCII name first, then the same in Cyrillic letters (all one script)
        self.assert_ok(self.reg("choose" + t))
        self.assert_refused(self.reg("\u0441\u04bb\u043e\u043e\u0455\u0435" + t), SIMILAR)   # сһооѕе
        # the other way round: Greek capitals first, then the ASCII name they look like, in any case
        greek = "".join(GREEK[int(d)] for d in tag())
        self.assert_ok(self.reg(greek), greek)
        latin = greek.translate(str.maketrans(GREEK, LATIN))
        self.assert_refused(self.reg(latin), SIMILAR)
        self.assert_refused(self.reg(latin.lower()), SIMILAR)
        # a fullwidth copy is the same name, not merely a similar one
        self.assert_refused(self.reg(fullwidth("choose" + t)), EXISTS)

    def test_old_database_gets_skeletons_and_keeps_its_names(self):
        greek = "".join(GREEK[int(d)] for d in tag())
        self.assert_ok(self.reg(greek), greek)
        odd = uniq("old")
        self.assert_ok(self.reg(odd), odd)
        self.srv.stop()
        # the database as an older server left it: schema version 2, no skeletons,
        # no groups (version 4's messages table is rebuilt again, which its
        # columns allow), and a name registered before names were normalised
        # (fullwidth)
        db = sqlite3.connect(os.path.join(self.srv.data_dir, "users.db"))
        with db:
            for sql in ("DROP TABLE group_members", "DROP TABLE groups",
                        "DROP INDEX users_by_skeleton", "DROP INDEX users_by_skeleton_upper",
                        "ALTER TABLE users DROP COLUMN skeleton", "ALTER TABLE users DROP COLUMN skeleton_upper",
                        "UPDATE schema_version SET version = 2"):
                db.execute(sql)
            db.execute("UPDATE users SET name = ?, name_key = ? WHERE name = ?",
                       (fullwidth(odd), fullwidth(odd).lower(), odd))
        db.close()
        self.srv.start()
        db = sqlite3.connect(os.path.join(self.srv.data_dir, "users.db"))
        try:
            self.assertEqual(db.execute("SELECT version FROM schema_version").fetchone()[0], 4)
            self.assertEqual(db.execute("SELECT count(*) FROM users WHERE skeleton IS NULL"
                                        " OR skeleton_upper IS NULL").fetchone()[0], 0)
        finally:
            db.close()
        # the old name logs in as typed; its NFKC form is not that name, and looks like it
        self.assert_ok(self.log_in(fullwidth(odd)), fullwidth(odd))
        self.assert_refused(self.log_in(odd), "User or password is invalid.")
        self.assert_refused(self.reg(odd), SIMILAR)
        # and the old Greek name is protected against its Latin look-alike
        self.assert_refused(self.reg(greek.translate(str.maketrans(GREEK, LATIN))), SIMILAR)


if __name__ == "__main__":
    unittest.main()
