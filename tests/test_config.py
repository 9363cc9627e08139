"""Settings from three sources, with the real binary: a configuration file
(--config, QMS_CONFIG), the environment (QMS_<NAME>) and flags, in that
order of precedence, shown by --print-config and by the ports the server
really listens on; unknown keys and bad values exit 2 naming where they
came from; --log-format json writes one JSON object per line, while the
monitor still gets (and shows) the usual lines.  See docs/CONFIG.md."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmslib import (BINARY, HOST, HTML_DIR, SANITIZER_MARKERS, SOURCE_DIR, QmsTestCase, connect,
                    free_port, http_get, port_open, register, uniq)

RUN_TIMEOUT = 20
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
FAST_ARGON2 = ["--argon2-memory", "256", "--argon2-iterations", "1"]

# Every option a file or the environment can set (the long names).
ALL_KEYS = [
    "chatServerPort", "httpServerPort", "httpsServerPort", "serverIp", "sslCertificate",
    "sslPrivateKey", "disableHttps", "disableWss", "self-signed", "reuse-port", "poll-loop", "config", "bind",
    "data-dir", "html-dir", "allow-inline-scripts", "session-timeout", "log-level", "log-format", "argon2-memory",
    "argon2-iterations", "auth-workers", "max-connections", "rate-limit", "rate-burst", "rate-limit-bytes", "max-queue", "rx-buffer",
    "write-timeout", "output-budget", "drain-timeout",
    "login-fail-limit", "login-fail-window", "message-quota", "message-max-age",
    "group-max-members", "group-max-per-user", "group-name-max",
    "presence-interval", "ping-interval", "max-connections-per-address", "allow-origin", "trusted-proxy",
    "proxy-protocol", "store-endpoint", "auth-endpoint", "router-endpoint", "curve-keys", "log-endpoint", "filter-actor",
    "filter-level",
]

PRINT_LINE = re.compile(r'^(# )?(\S+)\s+= (".*"|\S*)\s+# (.+)$')


def clean_env(**extra):
    """The environment without any QMS_* setting of the caller's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QMS_")}
    env.update(extra)
    return env


def parse_printed(text):
    """--print-config's lines: key -> (value, source, commented); the
    header and the "(none)" line of an empty list are skipped."""
    settings = {}
    for line in text.splitlines():
        m = PRINT_LINE.match(line)
        if not m:
            continue
        commented, key, value, source = m.group(1) is not None, m.group(2), m.group(3), m.group(4)
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            value = value[1:-1]
        if key in settings:     # allow-origin: one line each
            value = settings[key][0] + "," + value
        settings[key] = (value, source, commented)
    return settings


class ConfigCase(QmsTestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="qms-config-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.data = os.path.join(self.tmp, "data")
        os.makedirs(self.data)

    def write(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def run_binary(self, args, env=None):
        """Run to completion: (exit code, stdout, stderr)."""
        p = subprocess.run([BINARY] + args, stdin=subprocess.DEVNULL, capture_output=True,
                           env=clean_env(**(env or {})), cwd=self.tmp, timeout=RUN_TIMEOUT)
        out, err = p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
        for marker in SANITIZER_MARKERS:
            self.assertNotIn(marker, err, "sanitizer report for %s" % args)
        return p.returncode, out, err

    def print_config(self, args, env=None):
        code, out, err = self.run_binary(args + ["--print-config"], env)
        self.assertEqual(code, 0, "stdout: %s\nstderr: %s" % (out, err))
        return parse_printed(out), out, err


class PrintConfig(ConfigCase):

    def test_every_option_with_its_value_and_source(self):
        p = [free_port() for _ in range(6)]
        path = self.write("qms.conf",
                          "chatServerPort = %d\n"
                          "httpServerPort = %d   # the environment wins\n"
                          "httpsServerPort = %d\n"
                          "session-timeout = 111\n"
                          "log-level = warn\n"
                          "allow-origin = https://a.example\n"
                          "trusted-proxy = 10.0.0.0/8, 192.0.2.1\n" % (p[0], p[1], p[2]))
        settings, out, _ = self.print_config(
            ["--config", path, "-hsp", str(p[5]), "--data-dir", self.data],
            {"QMS_HTTP_PORT": str(p[3]), "QMS_HTTPS_PORT": str(p[4]), "QMS_SESSION_TIMEOUT": "222"})
        self.assertEqual(settings["chatServerPort"], (str(p[0]), "file %s:1" % path, False))
        self.assertEqual(settings["httpServerPort"], (str(p[3]), "env QMS_HTTP_PORT", False))
        self.assertEqual(settings["httpsServerPort"], (str(p[5]), "flag", False))
        self.assertEqual(settings["session-timeout"], ("222", "env QMS_SESSION_TIMEOUT", False))
        self.assertEqual(settings["log-level"], ("warn", "file %s:5" % path, False))
        self.assertEqual(settings["data-dir"], (self.data, "flag", False))
        self.assertEqual(settings["allow-origin"][0], "https://a.example")
        self.assertEqual(settings["trusted-proxy"], ("10.0.0.0/8,192.0.2.1/32", "file %s" % path, False))
        self.assertEqual(settings["max-connections"], ("10000", "default", True))
        self.assertEqual(settings["log-format"], ("text", "default", True))
        self.assertEqual(settings["config"], (path, "flag", True))
        for key in ALL_KEYS:
            self.assertIn(key, settings, "every option is printed\n" + out)
        # nothing started
        for port in p:
            self.assertFalse(port_open(port))
        self.assertFalse(os.path.exists(os.path.join(self.data, "users.db")))

    def test_qms_config_names_the_file_and_the_flag_beats_it(self):
        a = self.write("a.conf", "chatServerPort = 7001\n")
        b = self.write("b.conf", "chatServerPort = 7002\n")
        settings, _, _ = self.print_config([], {"QMS_CONFIG": a})
        self.assertEqual(settings["chatServerPort"][:2], ("7001", "file %s:1" % a))
        self.assertEqual(settings["config"][:2], (a, "env QMS_CONFIG"))
        settings, _, _ = self.print_config(["--config", b], {"QMS_CONFIG": a})
        self.assertEqual(settings["chatServerPort"][:2], ("7002", "file %s:1" % b))

    def test_the_output_reads_back_as_the_same_settings(self):
        path = self.write("in.conf", 'serverIp = " spaced # host "\nallow-origin = https://a.example, '
                                     'https://b.example\ndisableWss = true\ntrusted-proxy = 2001:db8::/32\n'
                                     'trusted-proxy = 10.1.0.0/16\n')
        first, out, _ = self.print_config(
            ["--config", path, "--log-format", "json", "-hp", "9999", "--data-dir", self.data],
            {"QMS_SESSION_TIMEOUT": "42", "QMS_LOG_ENDPOINT": "tcp://127.0.0.1:5558"})
        printed = self.write("printed.conf", out)
        again, _, _ = self.print_config(["--config", printed])
        for key in ALL_KEYS:
            if key != "config":
                self.assertEqual(again[key][0], first[key][0], key)
        self.assertEqual(again["serverIp"][0], " spaced # host ")
        self.assertEqual(again["allow-origin"][0], "https://a.example,https://b.example")
        self.assertEqual(again["trusted-proxy"][0], "2001:db8::/32,10.1.0.0/16")
        self.assertTrue(again["session-timeout"][1].startswith("file %s:" % printed))

    def test_flags_can_turn_a_boolean_off_again(self):
        path = self.write("q.conf", "disableWss = true\ndisableHttps = true\n")
        settings, _, _ = self.print_config(["--config", path, "--disableWss=false"],
                                           {"QMS_DISABLE_HTTPS": "false"})
        self.assertEqual(settings["disableWss"][:2], ("false", "flag"))
        self.assertEqual(settings["disableHttps"][:2], ("false", "env QMS_DISABLE_HTTPS"))

    def test_unknown_qms_variables_only_warn(self):
        settings, _, err = self.print_config([], {"QMS_CHAT_PROT": "1", "QMS_BINARY": "x"})
        self.assertIn("QMS_CHAT_PROT is not a setting (did you mean QMS_CHAT_PORT?)", err)
        self.assertNotIn("QMS_BINARY", err)
        self.assertEqual(settings["chatServerPort"][:2], ("12345", "default"))


class Documentation(ConfigCase):

    def test_the_table_in_config_md_matches_the_binary(self):
        """Every row of docs/CONFIG.md's table: the variable sets that
        option (its source shows it), and the default is the binary's."""
        with open(os.path.join(SOURCE_DIR, "docs", "CONFIG.md")) as f:
            doc = f.read()
        rows = re.findall(r"^\| `([^`]+)`[^|]* \| `(QMS_[A-Z0-9_]+)` \| (\S+) \| (?:`([^`]*)`)? *\|$",
                          doc, re.M)
        self.assertEqual(sorted(r[0] for r in rows), sorted(ALL_KEYS))
        defaults, _, _ = self.print_config([])
        conf = self.write("empty.conf", "")
        by_type = {"FILE": conf, "DIR": self.tmp, "ADDR": HOST, "ORIGIN": "https://x.example",
                   "CIDR": "10.0.0.0/8",
                   "URL": "tcp://127.0.0.1:5558", "NAME": "store"}
        for key, variable, kind, default in rows:
            with self.subTest(key=key):
                shown = defaults.get(key, ("", "default"))     # allow-origin: "(none)"
                self.assertEqual(shown[1], "default")
                self.assertEqual(shown[0], default)
                # a default folder (./html) need not exist here
                env = {variable: by_type[kind] if kind in by_type else default}
                if key in ("sslCertificate", "sslPrivateKey"):     # they go together
                    env = {"QMS_SSL_CERTIFICATE": conf, "QMS_SSL_PRIVATE_KEY": conf}
                settings, _, _ = self.print_config([], env)
                self.assertEqual(settings[key][1], "env " + variable)


class Errors(ConfigCase):

    def check_exit_2(self, args, env, expect, port_flags=True):
        """Exit 2 with the reason on one line, before anything listens
        (on the ports given as flags, when the case leaves them free)."""
        chat, http = free_port(), free_port()
        ports = ["-cp", str(chat), "-hp", str(http)] if port_flags else []
        code, out, err = self.run_binary(
            ["--bind", HOST, "--data-dir", self.data, "--html-dir", HTML_DIR] + ports + args, env)
        self.assertEqual(code, 2, "stdout: %s\nstderr: %s" % (out, err))
        self.assertIn(expect, err)
        self.assertEqual(len(err.strip().splitlines()), 1, "one line: %r" % err)
        self.assertFalse(port_open(chat) or port_open(http))

    def test_file_errors_name_file_and_line(self):
        cases = [
            ("serverIp = x\nbogus = 2\n", ":2: unknown key 'bogus'"),
            ("\n# comment\nchatServerPort = 0\n", ":3: chatServerPort: '0' is not a port from 1 to 65535"),
            ("disableWss = yes\n", ":1: disableWss: 'yes' is not true or false"),
            ("log-format = xml\n", ":1: log-format: 'xml' is not text or json"),
            ("session-timeout = 5\nsession-timeout = 6\n", ":2: session-timeout is already set on line 1"),
            ("sslCertificate = /nonexistent/cert.pem\n", ":1: sslCertificate: cannot read file"),
            ("chatServerPort 5\n", ":1: expected 'key = value'"),
            ("config = other.conf\n", ":1: 'config' cannot be set in a configuration file"),
        ]
        for i, (text, expect) in enumerate(cases):
            with self.subTest(text=text):
                path = self.write("bad%d.conf" % i, text)
                self.check_exit_2(["--config", path], {}, path + expect)

    def test_environment_errors_name_the_variable(self):
        cases = [
            ({"QMS_SESSION_TIMEOUT": "abc"},
             "environment variable QMS_SESSION_TIMEOUT: 'abc' is not a whole number"),
            ({"QMS_CHAT_PORT": "70000"}, "environment variable QMS_CHAT_PORT: '70000' is not a port"),
            ({"QMS_LOG_FORMAT": "xml"}, "environment variable QMS_LOG_FORMAT: 'xml' is not text or json"),
            ({"QMS_DISABLE_WSS": "1"}, "environment variable QMS_DISABLE_WSS: '1' is not true or false"),
            ({"QMS_DATA_DIR": "/nonexistent-qms-dir"}, "environment variable QMS_DATA_DIR"),
            ({"QMS_CONFIG": "/nonexistent/qms.conf"}, "environment variable QMS_CONFIG: cannot read file"),
        ]
        for env, expect in cases:
            with self.subTest(env=env):
                code, out, err = self.run_binary(["--bind", HOST, "-cp", str(free_port()),
                                                  "-hp", str(free_port())], env)
                self.assertEqual(code, 2, err)
                self.assertIn(expect, err)

    def test_flag_errors_name_the_flag(self):
        self.check_exit_2(["--log-format", "yaml"], {}, "option '--log-format': 'yaml' is not text or json")
        self.check_exit_2(["-cp", "70000"], {}, "option '-cp': '70000' is not a port")
        self.check_exit_2(["--config", "/nonexistent/qms.conf"], {},
                          "option '--config': cannot read file '/nonexistent/qms.conf'")
        self.check_exit_2(["--print-config=yes"], {}, "option '--print-config' takes no value")

    def test_settings_that_clash_say_where_each_came_from(self):
        port = free_port()
        path = self.write("q.conf", "httpServerPort = %d\n" % port)
        self.check_exit_2(["--config", path], {"QMS_CHAT_PORT": str(port)},
                          "the chat, HTTP and HTTPS ports must differ: chatServerPort %d from env "
                          "QMS_CHAT_PORT, httpServerPort %d from file %s:1" % (port, port, path),
                          port_flags=False)


class RealServer(ConfigCase):

    def start(self, args, env):
        log = open(os.path.join(self.tmp, "server.err"), "wb")
        self.addCleanup(log.close)
        proc = subprocess.Popen([BINARY] + args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=log, env=clean_env(**env), cwd=self.tmp)
        self.addCleanup(lambda: proc.poll() is None and (proc.kill(), proc.wait()))
        return proc

    def stop(self, proc):
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(STOP_TIMEOUT), 0)

    def stderr_text(self):
        with open(os.path.join(self.tmp, "server.err"), "rb") as f:
            return f.read().decode("utf-8")

    def json_lines(self):
        """Every line of stderr as JSON (fails on any that is not)."""
        objects = []
        for line in self.stderr_text().splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                self.fail("not a JSON line: %r" % line)
            self.assertIsInstance(obj, dict)
            for key in ("ts", "level", "actor"):
                self.assertIsInstance(obj.get(key), str, line)
            self.assertRegex(obj["ts"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
            objects.append(obj)
        return objects

    def test_listens_where_the_precedence_says_and_logs_json(self):
        a, b, c, d, e, f = (free_port() for _ in range(6))
        path = self.write("qms.conf",
                          "# the file: lowest of the three\n"
                          "chatServerPort = %d\n"
                          "httpServerPort = %d\n"
                          "httpsServerPort = %d\n"
                          "log-format = json\n"
                          "bind = %s\n" % (a, b, c, HOST))
        # the environment beats the file's HTTP port; the flag beats both chat ports
        proc = self.start(["--config", path, "-cp", str(f), "--data-dir", self.data,
                           "--html-dir", HTML_DIR] + FAST_ARGON2,
                          {"QMS_HTTP_PORT": str(d), "QMS_CHAT_PORT": str(e)})
        deadline = time.monotonic() + START_TIMEOUT
        while not (port_open(f) and port_open(d)):
            self.assertIsNone(proc.poll(), "the server exited:\n" + self.stderr_text())
            self.assertLess(time.monotonic(), deadline, "not listening:\n" + self.stderr_text())
            time.sleep(0.05)
        self.assertEqual(http_get(d, "/")[0], 200)
        ws = connect(f)
        try:
            self.assertEqual(register(ws, uniq("cfg")).get("valid"), True)
        finally:
            ws.close(wait=0.2)
        for port in (a, b, e):
            self.assertFalse(port_open(port), "port %d from a lower source is not used" % port)
        self.stop(proc)

        lines = self.json_lines()
        starting = [o for o in lines if o.get("event") == "starting"]
        self.assertEqual(len(starting), 1, lines)
        self.assertEqual(starting[0]["chat_port"], str(f))
        self.assertEqual(starting[0]["http_port"], str(d))
        self.assertEqual(starting[0]["actor"], "main")
        events = {(o["actor"], o.get("event")) for o in lines}
        for wanted in [("gateway", "listening"), ("main", "ready"), ("main", "exit")]:
            self.assertIn(wanted, events)

    def test_sighup_reads_the_log_level_again(self):
        chat, http = free_port(), free_port()
        path = self.write("live.conf", "log-level = info\nbind = %s\n" % HOST)
        proc = self.start(["--config", path, "-cp", str(chat), "-hp", str(http),
                           "--data-dir", self.data, "--html-dir", HTML_DIR] + FAST_ARGON2, {})
        deadline = time.monotonic() + START_TIMEOUT
        while not port_open(http):
            self.assertIsNone(proc.poll(), "the server exited:\n" + self.stderr_text())
            self.assertLess(time.monotonic(), deadline, "not listening:\n" + self.stderr_text())
            time.sleep(0.05)
        http_get(http, "/")
        self.assertNotIn("level=debug", self.stderr_text())
        with open(path, "w") as f:
            f.write("log-level = debug\nbind = %s\n" % HOST)
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while "event=reload what=log_level level=debug" not in self.stderr_text():
            self.assertLess(time.monotonic(), deadline, "no reload:\n" + self.stderr_text())
            time.sleep(0.05)
        http_get(http, "/")
        deadline = time.monotonic() + 5
        while "level=debug actor=gateway event=http" not in self.stderr_text():
            self.assertLess(time.monotonic(), deadline, "still not at debug:\n" + self.stderr_text())
            time.sleep(0.05)
        self.assertIsNone(proc.poll(), "SIGHUP must not stop the server")
        self.stop(proc)

    def test_the_monitor_still_shows_lines_of_a_json_logger(self):
        log_endpoint = "tcp://%s:%d" % (HOST, free_port())
        out_path = os.path.join(self.tmp, "monitor.out")
        with open(out_path, "wb") as out:
            monitor = subprocess.Popen([BINARY, "monitor", "--log-endpoint", log_endpoint],
                                       stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.DEVNULL,
                                       env=clean_env(), cwd=self.tmp)
        self.addCleanup(lambda: monitor.poll() is None and (monitor.kill(), monitor.wait()))
        deadline = time.monotonic() + START_TIMEOUT
        while self.run_binary(["--health", "monitor", "--log-endpoint", log_endpoint])[0] != 0:
            self.assertLess(time.monotonic(), deadline, "the monitor did not start")
            time.sleep(0.1)
        store = self.start(["store", "--data-dir", self.data],
                           {"QMS_STORE_ENDPOINT": "tcp://%s:%d" % (HOST, free_port()),
                            "QMS_LOG_ENDPOINT": log_endpoint, "QMS_LOG_FORMAT": "json"})
        text = ""
        while "event=ready role=store" not in text:
            self.assertIsNone(store.poll(), "the store exited:\n" + self.stderr_text())
            self.assertLess(time.monotonic(), deadline + 5, "no store line in the monitor: %r" % text)
            time.sleep(0.05)
            with open(out_path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        self.stop(store)
        self.stop(monitor)
        row = [r for r in text.splitlines() if "event=ready role=store" in r][0]
        self.assertRegex(row, r"^\d\d:\d\d:\d\d\.\d{3} INFO  main     event=ready role=store endpoint=tcp://")
        self.assertNotIn("{", row)
        ready = [o for o in self.json_lines() if o.get("event") == "ready"]
        self.assertEqual(ready[0]["role"], "store")


if __name__ == "__main__":
    unittest.main()
