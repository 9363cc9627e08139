"""qmslib - what the integration tests share: the real server on free ports,
a small RFC 6455 WebSocket client, and HTTP helpers.

Standard library only.  Everything talks to the real `qmessageserver`
binary over real loopback sockets; nothing is mocked.  Every read has a
timeout so that a silent server fails a test instead of hanging it.

Environment:
  QMS_BINARY      the server binary (default <repo>/build/qmessageserver)
  QMS_SOURCE_DIR  the repository root (default: this file's parent folder)
  QMS_KEEP_TMP    if set, temporary folders are left behind for inspection

Run one file:  QMS_BINARY=build/qmessageserver python3 tests/test_protocol.py
or one test:   ... python3 tests/test_protocol.py Messages.test_delivery_shape
"""

import base64
import collections
import hashlib
import http.client
import itertools
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest

SOURCE_DIR = os.path.abspath(os.environ.get("QMS_SOURCE_DIR")
                             or os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
BINARY = os.path.abspath(os.environ.get("QMS_BINARY")
                         or os.path.join(SOURCE_DIR, "build", "qmessageserver"))
HTML_DIR = os.path.join(SOURCE_DIR, "html")
# The binary under test is an AddressSanitizer build (set by CMake).
SANITIZED = os.environ.get("QMSTEST_SANITIZED") == "1"
HOST = "127.0.0.1"

DEFAULT_TIMEOUT = 5.0     # any single read
LOGIN_TIMEOUT = 15.0      # a login waits for a password hash
START_TIMEOUT = 15.0      # until the ports accept TCP
STOP_TIMEOUT = 10.0       # SIGTERM until exit

# Log lines that mean the server has a memory or undefined-behaviour bug.
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer",
                     "AddressSanitizer:DEADLYSIGNAL", "WARNING: ThreadSanitizer")

REQUESTS = {"LoginRequest": 0, "RegisterRequest": 1, "LogoutRequest": 2,
            "MessageRequest": 3, "AuthorizeRequest": 4}
RESPONSES = {"AuthorizationEvent": 0, "LoginEvent": 1, "MessageEvent": 2,
             "InvalidUserEvent": 3, "UserlistChangeEvent": 4}

LOGIN, REGISTER, LOGOUT, MESSAGE, AUTHORIZE = 0, 1, 2, 3, 4
EV_AUTHORIZATION, EV_LOGIN, EV_MESSAGE, EV_INVALID_USER, EV_USERLIST = 0, 1, 2, 3, 4

TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")

# ---------------------------------------------------------------------------
# Ports and names


_given_ports = set()


# Ports are taken below the kernel's ephemeral range (32768-60999 here):
# a port the kernel handed out with bind(0) was free a moment ago, but it
# is in the range every outgoing connection (ZeroMQ's, the clients') also
# draws from, and one of them took it before the server bound it now and
# then.  Each test process draws from its own slice (by its pid), so two
# test files running at once do not meet either.
_PORT_LOW, _PORT_SLICES, _PORT_SLICE = 10000, 18, 1100   # 10000-29799


def free_port():
    """A TCP port that was free on 127.0.0.1 a moment ago, never the same
    one twice in this process (so one server's ports never collide)."""
    base = _PORT_LOW + (os.getpid() % _PORT_SLICES) * _PORT_SLICE
    for _ in range(500):
        port = base + random.randrange(_PORT_SLICE)
        if port in _given_ports:
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((HOST, port))
        except OSError:
            continue
        finally:
            s.close()
        _given_ports.add(port)
        return port
    raise RuntimeError("no free port found")


def port_open(port, host=HOST, timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


_name_counter = itertools.count(1)


def uniq(prefix="user"):
    """A user name unique across this test run (and short: < 64 chars)."""
    return "%s%d%s" % (prefix, next(_name_counter), os.urandom(3).hex())


# ---------------------------------------------------------------------------
# The server


class ServerError(AssertionError):
    pass


_servers = []   # every Server made in this process, for log dumps


class Server:
    """The real binary in a temporary folder on free loopback ports.

        with Server() as srv:
            ws = connect(port=srv.chat_port)

    The default arguments make password hashing cheap; argon2_fast=False
    leaves the server's real defaults.  port_flags names the options used
    for the chat, HTTP and HTTPS ports (to test the aliases)."""

    def __init__(self, extra_args=(), *, html_dir=None, data_dir=None, argon2_fast=True,
                 port_flags=("-cp", "-hp", "-hsp"), bind="127.0.0.1", env=None, wait_https=False):
        self.tmp = tempfile.mkdtemp(prefix="qms-test-")
        self.data_dir = data_dir or os.path.join(self.tmp, "data")
        os.makedirs(self.data_dir, exist_ok=True)
        self.html_dir = html_dir or HTML_DIR
        self.extra_args = list(extra_args)
        self.argon2_fast = argon2_fast
        self.port_flags = port_flags
        self.bind = bind
        self.env = env
        self.wait_https = wait_https
        self.chat_port = free_port()
        self.http_port = free_port()
        self.https_port = free_port()
        self.proc = None
        self.log_paths = []
        self.starts = 0
        self.exit_codes = []
        self._port_retries = 0
        _servers.append(self)

    # -- command line ------------------------------------------------------

    def args(self):
        args = [BINARY]
        if self.bind:
            args += ["--bind", self.bind]
        for flag, port in zip(self.port_flags, (self.chat_port, self.http_port, self.https_port)):
            # a flag ending in '=' takes its value in the same argument
            args += [flag + str(port)] if flag.endswith("=") else [flag, str(port)]
        args += ["--data-dir", self.data_dir, "--html-dir", self.html_dir]
        if self.argon2_fast:
            args += ["--argon2-memory", "256", "--argon2-iterations", "1"]
        return args + self.extra_args

    # -- life cycle --------------------------------------------------------

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self):
        if self.running:
            raise ServerError("server already running")
        self.starts += 1
        log_path = os.path.join(self.tmp, "server-%d.log" % self.starts)
        self.log_paths.append(log_path)
        env = dict(os.environ)
        if self.env:
            env.update(self.env)
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(self.args(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.tmp, env=env)
        deadline = time.monotonic() + START_TIMEOUT
        waiting = [self.chat_port, self.http_port] + ([self.https_port] if self.wait_https else [])
        while waiting:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.exit_codes.append(code)
                self.proc = None
                if code == 1 and self.starts == 1 and self._port_retries < 3:
                    # another process took one of our free ports meanwhile: new ports
                    self._port_retries += 1
                    self.starts = 0
                    self.log_paths.pop()
                    self.chat_port, self.http_port, self.https_port = free_port(), free_port(), free_port()
                    return self.start()
                raise ServerError("server exited with %s while starting: %s\n%s"
                                  % (code, " ".join(self.args()), self.log_tail()))
            if port_open(waiting[0], timeout=0.2):
                waiting.pop(0)
                continue
            if time.monotonic() > deadline:
                self.kill()
                raise ServerError("server did not open ports %s within %.0f s\n%s"
                                  % (waiting, START_TIMEOUT, self.log_tail()))
            time.sleep(0.05)
        return self

    def stop(self, timeout=STOP_TIMEOUT, expect_code=0):
        """SIGTERM, wait, check the exit code and the log.  Returns the
        seconds the server took to exit."""
        if self.proc is None:
            self.check_log()
            return 0.0
        if self.proc.poll() is not None:
            code = self.proc.returncode
            self.exit_codes.append(code)
            self.proc = None
            raise ServerError("server had exited unexpectedly with %s\n%s" % (code, self.log_tail()))
        began = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ServerError("server did not exit within %.0f s of SIGTERM\n%s"
                              % (timeout, self.log_tail()))
        elapsed = time.monotonic() - began
        self.exit_codes.append(code)
        self.proc = None
        self.check_log()
        if expect_code is not None and code != expect_code:
            raise ServerError("server exited with %s after SIGTERM (expected %s)\n%s"
                              % (code, expect_code, self.log_tail()))
        return elapsed

    def kill(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass
            self.proc = None

    def restart(self):
        self.stop()
        return self.start()

    def check(self):
        """Fail if the server is gone or its log shows a sanitizer report."""
        if self.proc is not None and self.proc.poll() is not None:
            code = self.proc.returncode
            self.exit_codes.append(code)
            self.proc = None
            raise ServerError("server exited unexpectedly with %s\n%s" % (code, self.log_tail()))
        if self.proc is None:
            raise ServerError("server is not running")
        self.check_log()

    def check_log(self):
        text = self.log_text()
        for marker in SANITIZER_MARKERS:
            if marker in text:
                raise ServerError("server log shows a sanitizer report (%r)\n%s"
                                  % (marker, self.log_tail(400)))

    def cleanup(self):
        self.kill()
        if not os.environ.get("QMS_KEEP_TMP"):
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        if not self.running:
            self.start()
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            if self.running or self.proc is not None:
                self.stop()
            else:
                self.check_log()
        finally:
            if exc_type is not None:
                dump_log(self)
            self.cleanup()
        return False

    # -- logs --------------------------------------------------------------

    def log_text(self):
        parts = []
        for path in self.log_paths:
            try:
                with open(path, "rb") as f:
                    parts.append(f.read().decode("utf-8", "replace"))
            except OSError:
                pass
        return "".join(parts)

    def log_tail(self, lines=150):
        text = self.log_text().splitlines()
        head = "----- server log (%s, last %d of %d lines) -----" % (
            self.tmp, min(lines, len(text)), len(text))
        return "\n".join([head] + text[-lines:] + ["----- end of server log -----"])

    def url(self, path="/"):
        return "http://%s:%d%s" % (HOST, self.http_port, path)


def dump_log(server, out=None):
    out = out or sys.stderr
    try:
        out.write("\n" + server.log_tail() + "\n")
        out.flush()
    except Exception:
        pass


class QmsTestCase(unittest.TestCase):
    """A TestCase that prints the log of every server that was alive or
    started during a test when that test fails."""

    def run(self, result=None):
        if result is None:
            return super().run(result)
        before = len(result.failures) + len(result.errors)
        first_new = len(_servers)
        alive = [s for s in _servers if s.running]
        super().run(result)
        if len(result.failures) + len(result.errors) > before:
            seen = set()
            for s in alive + _servers[first_new:]:
                if id(s) not in seen:
                    seen.add(id(s))
                    dump_log(s)
        return result

    def start_server(self, *args, **kwargs):
        """A fresh server for this test, stopped and checked at the end."""
        srv = Server(*args, **kwargs)
        try:
            srv.start()
        except BaseException:
            srv.cleanup()     # the error already holds the log
            raise

        def finish():
            try:
                if srv.proc is not None:
                    srv.stop()
                else:
                    srv.check_log()
            finally:
                srv.cleanup()
        self.addCleanup(finish)
        return srv


class SharedServerTestCase(QmsTestCase):
    """One server for every test in the class; each test checks it is still
    alive and clean afterwards.  Subclasses may set server_args."""

    server_args = ()
    server_kwargs = {}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        server = Server(cls.server_args, **cls.server_kwargs)
        try:
            server.start()
        except BaseException:
            server.cleanup()
            raise
        cls.server = server

    @classmethod
    def tearDownClass(cls):
        try:
            cls.server.stop()
        except Exception:
            dump_log(cls.server)
            raise
        finally:
            cls.server.cleanup()
            super().tearDownClass()

    def tearDown(self):
        self.server.check()
        super().tearDown()


# ---------------------------------------------------------------------------
# WebSocket client (RFC 6455)

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WebSocketClosed(AssertionError):
    """The server closed the connection (code is its close code, or None when
    the TCP connection ended without a close frame)."""

    def __init__(self, code, reason=b""):
        super().__init__("connection closed by the server (close code %s, reason %r)" % (code, reason))
        self.code = code
        self.reason = reason


class HandshakeError(AssertionError):
    """The server did not answer the upgrade with 101 (status None: it closed
    the connection without an HTTP answer)."""

    def __init__(self, status, headers=None, body=b"", detail=""):
        super().__init__("WebSocket handshake refused: status %s %s" % (status, detail))
        self.status = status
        self.headers = headers or {}
        self.body = body


def _parse_http_head(raw):
    """(status, {lowercase name: value}) from the bytes before the blank line."""
    lines = raw.decode("iso-8859-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise ValueError("bad status line %r" % lines[0])
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            name = name.strip().lower()
            value = value.strip()
            headers[name] = headers[name] + ", " + value if name in headers else value
    return status, headers


class WebSocket:
    def __init__(self, sock, leftover=b"", timeout=DEFAULT_TIMEOUT):
        self.sock = sock
        self.buf = bytearray(leftover)
        self.timeout = timeout
        self.pending = collections.deque()  # parsed frames read but not yet consumed
        self.close_code = None               # the server's close code, once seen
        self.close_reason = None
        self.server_closed = False           # close frame received or TCP ended
        self.close_sent = False
        self.handshake_headers = {}

    # -- low level ----------------------------------------------------------

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no data from the server in time")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(262144)
        except socket.timeout:
            raise TimeoutError("no data from the server in time")
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.server_closed = True
            raise WebSocketClosed(self.close_code, self.close_reason or b"")
        self.buf += data

    def _parse_frame(self):
        """A complete frame from the buffer, or None (nothing consumed)."""
        buf = self.buf
        if len(buf) < 2:
            return None
        b0, b1 = buf[0], buf[1]
        length, pos = b1 & 0x7F, 2
        if length == 126:
            if len(buf) < 4:
                return None
            length, pos = struct.unpack("!H", bytes(buf[2:4]))[0], 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length, pos = struct.unpack("!Q", bytes(buf[2:10]))[0], 10
        if b1 & 0x80:
            raise AssertionError("server frame is masked (RFC 6455 5.1 forbids it)")
        if b0 & 0x70:
            raise AssertionError("server frame with RSV bits 0x%x (no extension was negotiated)"
                                 % (b0 & 0x70))
        if len(buf) < pos + length:
            return None
        payload = bytes(buf[pos:pos + length])
        del buf[:pos + length]
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def recv_frame(self, timeout=None):
        """One raw frame: (fin, opcode, payload).  A timeout never loses a
        partly received frame."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            frame = self._parse_frame()
            if frame is not None:
                return frame
            self._fill(deadline)

    def recv(self, timeout=None):
        """One message: (opcode, payload).  Data fragments are reassembled;
        control frames (ping, pong, close) are returned as they come.  A close
        frame is answered and its code kept in close_code."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        message_op, parts = None, []
        while True:
            fin, opcode, payload = self.recv_frame(max(0.001, deadline - time.monotonic()))
            if opcode >= 0x8:
                if not fin:
                    raise AssertionError("fragmented control frame from the server")
                if opcode == OP_CLOSE:
                    self._on_close(payload)
                return opcode, payload
            if opcode == OP_CONT:
                if message_op is None:
                    raise AssertionError("continuation frame without a start")
                parts.append(payload)
            else:
                if message_op is not None:
                    raise AssertionError("new data frame inside a fragmented message")
                if opcode not in (OP_TEXT, OP_BINARY):
                    raise AssertionError("reserved opcode 0x%x from the server" % opcode)
                message_op = opcode
                parts = [payload]
            if fin:
                return message_op, b"".join(parts)

    def _on_close(self, payload):
        self.server_closed = True
        if len(payload) >= 2:
            self.close_code = struct.unpack("!H", payload[:2])[0]
            self.close_reason = payload[2:]
        else:
            self.close_code = 1005
            self.close_reason = b""
        if not self.close_sent:
            try:
                self.send_frame(OP_CLOSE, payload[:2])
                self.close_sent = True
            except OSError:
                pass

    def _read_json(self, timeout):
        """Read the next text message and parse it; answer pings; raise
        WebSocketClosed on a close frame."""
        deadline = time.monotonic() + timeout
        while True:
            opcode, payload = self.recv(max(0.001, deadline - time.monotonic()))
            if opcode == OP_TEXT:
                text = payload.decode("utf-8")   # the server must send valid UTF-8
                try:
                    return json.loads(text)
                except ValueError:
                    raise AssertionError("server sent a text frame that is not JSON: %r" % text[:200])
            if opcode == OP_CLOSE:
                raise WebSocketClosed(self.close_code, self.close_reason)
            if opcode == OP_PING:
                self.send_frame(OP_PONG, payload)
                continue
            if opcode == OP_PONG:
                continue
            raise AssertionError("server sent a binary message: %r" % payload[:100])

    # -- reading JSON ------------------------------------------------------

    def recv_json(self, timeout=None):
        """The next JSON message (messages kept by wait_for come first)."""
        if self.pending:
            return self.pending.popleft()
        return self._read_json(self.timeout if timeout is None else timeout)

    def wait_for(self, predicate, timeout=None, what="a matching message"):
        """Read until a message satisfies predicate and return it; the others
        are kept, in order, for later recv_json/wait_for calls."""
        for i, msg in enumerate(self.pending):
            if _matches(predicate, msg):
                del self.pending[i]
                return msg
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        seen = []
        while True:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError()
                msg = self._read_json(remaining)
            except TimeoutError:
                raise AssertionError("timed out waiting for %s; got instead: %s"
                                     % (what, _short(list(self.pending))))
            except WebSocketClosed as e:
                raise AssertionError("connection closed (code %s) while waiting for %s; got: %s"
                                     % (e.code, what, _short(list(self.pending))))
            if _matches(predicate, msg):
                return msg
            seen.append(msg)
            self.pending.append(msg)

    def wait_event(self, event, timeout=None, **fields):
        """The next message with this event number (and these field values)."""
        def pred(m):
            return m.get("event") == event and all(m.get(k) == v for k, v in fields.items())
        return self.wait_for(pred, timeout, what="event %s %s" % (event, fields or ""))

    def drain(self, quiet=0.3):
        """Drop every message that arrives until the connection is quiet for
        `quiet` seconds; returns them."""
        out = list(self.pending)
        self.pending.clear()
        while True:
            try:
                out.append(self._read_json(quiet))
            except TimeoutError:
                return out

    def expect_silence(self, duration=0.5, allow=None):
        """Fail if a message (other than ones `allow` accepts) arrives within
        `duration` seconds."""
        extra = [m for m in self.pending if not (allow and allow(m))]
        self.pending.clear()
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline:
            try:
                msg = self._read_json(max(0.001, deadline - time.monotonic()))
            except TimeoutError:
                break
            if not (allow and allow(msg)):
                extra.append(msg)
        if extra:
            raise AssertionError("unexpected messages: %s" % _short(extra))

    def expect_close(self, timeout=None):
        """Read until the server closes; return its close code (None when the
        TCP connection ended without a close frame).  Messages before the
        close are kept in pending."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        if self.server_closed:
            return self.close_code
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("server did not close the connection in time; got: %s"
                                     % _short(list(self.pending)))
            try:
                opcode, payload = self.recv(remaining)
            except WebSocketClosed as e:
                return e.code
            except TimeoutError:
                continue
            if opcode == OP_CLOSE:
                return self.close_code
            if opcode == OP_TEXT:
                try:
                    self.pending.append(json.loads(payload.decode("utf-8")))
                except ValueError:
                    self.pending.append(payload)
            elif opcode == OP_PING:
                try:
                    self.send_frame(OP_PONG, payload)
                except OSError:
                    pass

    # -- writing -----------------------------------------------------------

    def send_frame(self, opcode, payload=b"", fin=True, masked=True, rsv=0):
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        head = bytearray([(0x80 if fin else 0) | (rsv << 4) | opcode])
        n = len(payload)
        mask_bit = 0x80 if masked else 0
        if n < 126:
            head.append(mask_bit | n)
        elif n < 65536:
            head.append(mask_bit | 126)
            head += struct.pack("!H", n)
        else:
            head.append(mask_bit | 127)
            head += struct.pack("!Q", n)
        if masked:
            key = os.urandom(4)
            head += key
            payload = _mask(payload, key)
        self.sock.settimeout(self.timeout * 4)
        self.sock.sendall(bytes(head) + payload)

    def send_text(self, text):
        self.send_frame(OP_TEXT, text.encode("utf-8") if isinstance(text, str) else text)

    def send_binary(self, data):
        self.send_frame(OP_BINARY, data)

    def send_json(self, obj):
        self.send_text(json.dumps(obj))

    def ping(self, payload=b""):
        self.send_frame(OP_PING, payload)

    def close(self, code=1000, reason=b"", wait=1.0):
        """Send a close frame, wait briefly for the server's, and close."""
        try:
            if not self.close_sent and not self.server_closed:
                self.send_frame(OP_CLOSE, struct.pack("!H", code) + reason)
                self.close_sent = True
                if wait:
                    try:
                        self.expect_close(wait)
                    except AssertionError:
                        pass
        except OSError:
            pass
        finally:
            self.abort()

    def abort(self):
        """Drop the TCP connection without a close frame."""
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close(wait=0.2)
        return False


def _mask(payload, key):
    if not payload:
        return b""
    n = len(payload)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")


def _matches(predicate, msg):
    try:
        return bool(predicate(msg))
    except (AttributeError, KeyError, TypeError):
        return False


def _short(msgs, limit=600):
    text = repr(msgs)
    return text if len(text) <= limit else text[:limit] + "...(%d chars)" % len(text)


def _tls_context():
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE   # the tests' certificates are self-signed
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def connect(port, host=HOST, path="/", origin=None, headers=None, timeout=DEFAULT_TIMEOUT,
            tls=False):
    """Open a WebSocket: the HTTP upgrade, checked (101, Upgrade, Accept).
    Raises HandshakeError when the server refuses.  tls=True for wss://."""
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        if tls:
            sock = _tls_context().wrap_socket(sock, server_hostname="localhost")
        key = base64.b64encode(os.urandom(16)).decode()
        lines = ["GET %s HTTP/1.1" % path,
                 "Host: %s:%d" % (host, port),
                 "Upgrade: websocket",
                 "Connection: Upgrade",
                 "Sec-WebSocket-Key: " + key,
                 "Sec-WebSocket-Version: 13"]
        if origin is not None:
            lines.append("Origin: " + origin)
        for name, value in (headers or {}).items():
            lines.append("%s: %s" % (name, value))
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("iso-8859-1"))
        buf = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise HandshakeError(None, detail="(no complete answer within %.0f s)" % timeout)
            sock.settimeout(remaining)
            try:
                data = sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                data = b""
            if not data:
                raise HandshakeError(None, body=buf, detail="(connection closed: %r)" % buf[:200])
            buf += data
            if len(buf) > 1 << 20:
                raise HandshakeError(None, detail="(answer head too long)")
        head, rest = buf.split(b"\r\n\r\n", 1)
        status, hdrs = _parse_http_head(head)
        if status != 101:
            raise HandshakeError(status, hdrs, rest)
        if hdrs.get("upgrade", "").lower() != "websocket":
            raise AssertionError("101 without 'Upgrade: websocket': %r" % hdrs)
        if "upgrade" not in hdrs.get("connection", "").lower():
            raise AssertionError("101 without 'Connection: Upgrade': %r" % hdrs)
        expected = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()
        if hdrs.get("sec-websocket-accept") != expected:
            raise AssertionError("bad Sec-WebSocket-Accept %r (expected %r)"
                                 % (hdrs.get("sec-websocket-accept"), expected))
        if "sec-websocket-extensions" in hdrs:
            raise AssertionError("server chose an extension we did not offer: %r"
                                 % hdrs["sec-websocket-extensions"])
        ws = WebSocket(sock, rest, timeout)
        ws.handshake_headers = hdrs
        return ws
    except BaseException:
        sock.close()
        raise


# ---------------------------------------------------------------------------
# Protocol helpers

_ABSENT = object()


def _login_request(action, name, password, pubKey):
    req = {"action": action}
    if name is not _ABSENT:
        req["name"] = name
    if password is not _ABSENT:
        req["password"] = password
    if pubKey is not _ABSENT:
        req["pubKey"] = pubKey
    return req


def register(ws, name, password="secret-pw", pubKey="pk", timeout=LOGIN_TIMEOUT):
    """Send a RegisterRequest and return the LoginEvent that answers it."""
    ws.send_json(_login_request(REGISTER, name, password, pubKey))
    return ws.wait_event(EV_LOGIN, timeout)


def login(ws, name, password="secret-pw", pubKey="pk", timeout=LOGIN_TIMEOUT):
    """Send a LoginRequest and return the LoginEvent that answers it."""
    ws.send_json(_login_request(LOGIN, name, password, pubKey))
    return ws.wait_event(EV_LOGIN, timeout)


ABSENT = _ABSENT


def wait_for(ws, predicate, timeout=None):
    """Read frames until one matches predicate; the others are kept."""
    return ws.wait_for(predicate, timeout)


def authorize(ws, token, timeout=None):
    """Send an AuthorizeRequest; return the first event 0 or 3 answer."""
    ws.send_json({"action": AUTHORIZE, "token": token})
    return ws.wait_for(lambda m: m.get("event") in (EV_AUTHORIZATION, EV_INVALID_USER),
                       timeout, what="an answer to Authorize")


def send_message(ws, token, target, message):
    ws.send_json({"action": MESSAGE, "token": token, "target": target, "message": message})


def names_of(event):
    return sorted(u["name"] for u in event["users"])


def wait_userlist(ws, predicate, timeout=None, what="a user list"):
    """The next event 4 whose list of names satisfies predicate(set of names)."""
    return ws.wait_for(lambda m: m.get("event") == EV_USERLIST and m.get("valid") is True
                       and predicate({u["name"] for u in m["users"]}), timeout, what=what)


class Client:
    """A logged-in user: connection, token, id, name."""

    def __init__(self, port, name=None, password="secret-pw", pubKey="pk", do_register=True,
                 path="/", test=None, tls=False):
        self.port = port
        self.name = name or uniq()
        self.password = password
        self.pubKey = pubKey
        self.ws = connect(port, path=path, tls=tls)
        reply = (register if do_register else login)(self.ws, self.name, password, pubKey)
        if reply.get("valid") is not True:
            self.ws.abort()
            raise AssertionError("%s of %r failed: %r" % ("register" if do_register else "login",
                                                          self.name, reply))
        self.reply = reply
        self.token = reply["token"]
        mine = [u for u in reply["users"] if u["name"] == reply["username"]]
        if len(mine) != 1:
            raise AssertionError("the LoginEvent's user list does not hold the caller once: %r" % reply)
        self.id = mine[0]["id"]
        if test is not None:
            test.addCleanup(self.ws.abort)

    def send(self, target, message, token=None):
        send_message(self.ws, token or self.token, target.id if isinstance(target, Client) else target,
                     message)

    def expect_message(self, sender, message=None, timeout=None):
        sid = sender.id if isinstance(sender, Client) else sender
        msg = self.ws.wait_for(lambda m: m.get("event") == EV_MESSAGE and m.get("valid") is True
                               and m.get("sender") == sid, timeout, what="a message from %s" % sid)
        if message is not None and msg.get("message") != message:
            raise AssertionError("message differs: got %r... (%d chars), sent %r... (%d chars)"
                                 % (msg.get("message", "")[:80], len(msg.get("message", "")),
                                    message[:80], len(message)))
        return msg

    def close(self):
        self.ws.close(wait=0.2)


# ---------------------------------------------------------------------------
# HTTP


def http_get(port, path, headers=None, method="GET", body=None, host=HOST, timeout=DEFAULT_TIMEOUT,
             tls=False):
    """(status, headers (case-insensitive), body bytes) through http.client."""
    if tls:
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=_tls_context())
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, resp.headers, data
    finally:
        conn.close()


def http_raw(port, data, host=HOST, timeout=DEFAULT_TIMEOUT):
    """Send bytes as they are (no normalisation) and read the answer until
    the server closes or the Content-Length is complete.  Returns (status or
    None if no HTTP answer came, headers {lowercase: value}, body, raw bytes)."""
    if isinstance(data, str):
        data = data.encode("iso-8859-1")
    sock = socket.create_connection((host, port), timeout=timeout)
    buf = b""
    try:
        sock.sendall(data)
        deadline = time.monotonic() + timeout
        while True:
            if b"\r\n\r\n" in buf:
                head, body = buf.split(b"\r\n\r\n", 1)
                try:
                    status, hdrs = _parse_http_head(head)
                except ValueError:
                    status, hdrs = None, {}
                if "content-length" in hdrs and len(body) >= int(hdrs["content-length"]):
                    break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            buf += chunk
    finally:
        sock.close()
    if b"\r\n\r\n" not in buf:
        return None, {}, b"", buf
    head, body = buf.split(b"\r\n\r\n", 1)
    try:
        status, hdrs = _parse_http_head(head)
    except ValueError:
        return None, {}, b"", buf
    return status, hdrs, body, buf


def main():
    unittest.main(verbosity=2)
