"""The command line: -help, bad options and values (exit 2 before anything
listens), every alias of the original's options with one and two dashes,
a port already in use (exit 1, no hang), and signals."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmslib import (BINARY, HOST, HTML_DIR, SOURCE_DIR, QmsTestCase, Server, connect, free_port,
                    http_get, port_open, register, uniq)

RUN_TIMEOUT = 10


class CommandLine(QmsTestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="qms-cli-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def run_binary(self, args, timeout=RUN_TIMEOUT):
        """Run the binary to completion: (exit code, stdout, stderr).  A run
        that does not end in time is killed and fails the test."""
        proc = subprocess.Popen([BINARY] + args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, cwd=self.tmp)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            self.fail("%s did not exit within %d s (it hangs)\nstdout: %s\nstderr: %s"
                      % (args, timeout, out.decode(errors="replace")[-2000:],
                         err.decode(errors="replace")[-2000:]))
        for marker in ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer"):
            self.assertNotIn(marker, err.decode(errors="replace"), "sanitizer report for %s" % args)
        return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    def base_args(self, cp, hp):
        return ["--bind", HOST, "-cp", str(cp), "-hp", str(hp), "-hsp", str(free_port()),
                "--data-dir", self.tmp, "--html-dir", HTML_DIR]

    def test_help(self):
        for flag in ("-help", "--help"):
            with self.subTest(flag=flag):
                code, out, err = self.run_binary([flag])
                self.assertEqual(code, 0, err)
                text = out + err
                self.assertIn("Usage", text)
                for option in ("-chatServerPort", "-httpServerPort", "-httpsServerPort", "-serverIp",
                               "-sslCertificate", "-sslPrivateKey", "-disableHttps", "-disableWss"):
                    self.assertIn(option, text)
                self.assertFalse(os.path.exists(os.path.join(self.tmp, "users.db")))

    def test_version(self):
        """--version prints the version CMake's project() names, and nothing starts."""
        with open(os.path.join(SOURCE_DIR, "CMakeLists.txt")) as f:
            version = re.search(r"project\(qmessageserver VERSION ([0-9.]+)", f.read()).group(1)
        for flag in ("--version", "-V"):
            with self.subTest(flag=flag):
                code, out, err = self.run_binary([flag])
                self.assertEqual((code, out), (0, "qmessageserver %s\n" % version), err)
                self.assertFalse(os.path.exists(os.path.join(self.tmp, "users.db")))

    def test_bad_options_exit_2_before_listening(self):
        bad = [["--bogus"], ["-bogus"], ["stray"], ["-cp", "0"], ["-cp", "70000"], ["-csp", "abc"],
               ["-hp", "-5"], ["-httpPort", "65536"], ["-hsp", "1.5"], ["-hsp", ""], ["-cp", "12x"],
               ["-sslcert", "/nonexistent/cert.pem", "-sslprvkey", "/nonexistent/key.pem"],
               ["-sslCertificate", "/nonexistent/cert.pem"],
               ["-sslcert", "/etc/hostname"],   # a certificate without a key
               ["-disableWss=1"], ["--session-timeout", "0"], ["--argon2-memory", "abc"],
               ["--data-dir", "/nonexistent-dir-for-qms"], ["--log-level", "loud"]]
        for extra in bad:
            with self.subTest(args=extra):
                cp, hp = free_port(), free_port()
                code, out, err = self.run_binary(self.base_args(cp, hp) + extra)
                self.assertEqual(code, 2, "stdout: %s\nstderr: %s" % (out, err))
                self.assertTrue(err.strip(), "a reason on stderr")
                self.assertFalse(port_open(cp) or port_open(hp))
        # a missing value at the very end
        for flag in ("-cp", "--chatServerPort", "-serverIp", "--data-dir", "-sslcert"):
            with self.subTest(missing_value=flag):
                cp, hp = free_port(), free_port()
                code, out, err = self.run_binary(self.base_args(cp, hp) + [flag])
                self.assertEqual(code, 2, "stdout: %s\nstderr: %s" % (out, err))
                self.assertTrue(err.strip())

    def test_same_port_twice_is_an_error(self):
        p = free_port()
        code, out, err = self.run_binary(["--bind", HOST, "-cp", str(p), "-hp", str(p),
                                          "--data-dir", self.tmp, "--html-dir", HTML_DIR])
        self.assertEqual(code, 2, err)
        self.assertTrue(err.strip())

    def check_serves(self, srv):
        ws = connect(srv.chat_port)
        try:
            reply = register(ws, uniq("alias"))
            self.assertEqual(reply.get("valid"), True, reply)
        finally:
            ws.close(wait=0.2)
        self.assertEqual(http_get(srv.http_port, "/")[0], 200)

    def test_aliases(self):
        sets = [("-chatServerPort", "-httpServerPort", "-httpsServerPort", "-serverIp"),
                ("-csp", "-httpPort", "-httpsPort", "-ip"),
                ("-cp", "-hp", "-hsp", "-serverIp")]
        probe_html = os.path.join(self.tmp, "html")
        shutil.copytree(HTML_DIR, probe_html, symlinks=True)
        with open(os.path.join(probe_html, "probe.js"), "w") as f:
            f.write("%SERVER_ADDRESS%:%SERVER_PORT%")
        for names in sets:
            for dashes in ("-", "--"):
                for joined in (False, True):
                    if joined and dashes == "-" and names[0] != "-cp":
                        continue   # keep the run short: '=' is checked on some sets
                    flags = [dashes + n.lstrip("-") + ("=" if joined else "") for n in names]
                    with self.subTest(flags=flags):
                        ip = "10.%d.%d.7" % (len(names[0]), len(dashes))
                        ip_args = [flags[3] + ip] if joined else [flags[3], ip]
                        srv = Server(ip_args, port_flags=tuple(flags[:3]), html_dir=probe_html)
                        try:
                            srv.start()
                            self.check_serves(srv)
                            status, _, body = http_get(srv.http_port, "/probe.js")
                            self.assertEqual((status, body.decode()), (200, "%s:%d" % (ip, srv.chat_port)))
                            srv.stop()
                        finally:
                            srv.cleanup()

    def test_port_in_use_exits_1(self):
        for which in ("chat", "http"):
            with self.subTest(port=which):
                blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                blocker.bind((HOST, 0))
                blocker.listen(5)
                busy = blocker.getsockname()[1]
                try:
                    cp = busy if which == "chat" else free_port()
                    hp = busy if which == "http" else free_port()
                    began = time.monotonic()
                    code, out, err = self.run_binary(self.base_args(cp, hp))
                    self.assertEqual(code, 1, "stdout: %s\nstderr: %s" % (out, err))
                    self.assertTrue((out + err).strip(), "a message says why")
                    self.assertLess(time.monotonic() - began, RUN_TIMEOUT)
                    other = hp if which == "chat" else cp
                    self.assertFalse(port_open(other), "nothing left listening")
                finally:
                    blocker.close()

    def test_second_instance_on_the_same_ports_exits_1(self):
        first = self.start_server()
        args = [BINARY, "--bind", HOST, "-cp", str(first.chat_port), "-hp", str(first.http_port),
                "-hsp", str(first.https_port), "--data-dir", self.tmp, "--html-dir", HTML_DIR]
        code, out, err = self.run_binary(args[1:])
        self.assertEqual(code, 1, "stdout: %s\nstderr: %s" % (out, err))
        self.assertTrue((out + err).strip())
        # the first one is unharmed
        self.check_serves(first)

    def test_sigterm_and_sigint_exit_0(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            with self.subTest(signal=sig):
                srv = Server()
                try:
                    srv.start()
                    self.check_serves(srv)
                    ws = connect(srv.chat_port)     # an open connection must not delay the exit
                    began = time.monotonic()
                    srv.proc.send_signal(sig)
                    code = srv.proc.wait(10)
                    self.assertEqual(code, 0)
                    self.assertLess(time.monotonic() - began, 5)
                    srv.proc = None
                    srv.check_log()
                    ws.abort()
                    self.assertFalse(port_open(srv.chat_port) or port_open(srv.http_port))
                finally:
                    srv.cleanup()

    def test_data_dir_defaults_to_the_working_directory(self):
        cp, hp = free_port(), free_port()
        proc = subprocess.Popen([BINARY, "--bind", HOST, "-cp", str(cp), "-hp", str(hp),
                                 "-hsp", str(free_port()), "--html-dir", HTML_DIR,
                                 "--argon2-memory", "256", "--argon2-iterations", "1"],
                                cwd=self.tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 15
            while not port_open(cp) and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.05)
            self.assertTrue(port_open(cp), "server did not start")
            ws = connect(cp)
            self.assertEqual(register(ws, uniq("cwd"))["valid"], True)
            ws.close(wait=0.2)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.assertTrue(os.path.exists(os.path.join(self.tmp, "users.db")))


if __name__ == "__main__":
    unittest.main(verbosity=2)
