"""compose_stack - checks compose.yml's stack for real, through its front.

Run by scripts/compose-test, which prepares the engine and the images and
brings everything down afterwards; this program brings the stack up and
uses it as a person and an operator would.  Environment (set by the script):
  DOCKER_HOST, COMPOSE_PROJECT_NAME   the engine's API socket and the project
  QMS_COMPOSE_ENGINE                  the engine's CLI (podman or docker)
  QMS_HTTP_PORT, QMS_HTTPS_PORT, QMS_CHAT_PORT, QMS_PUBLIC_HOST
                                      compose.yml's own variables

Not a unittest file on purpose (ctest runs tests/test_*.py against a local
binary; this one needs a container engine).  Every wait has a deadline; the
first failed check ends the run with exit status 1 and says what it saw.
"""

import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qmslib  # noqa: E402

ROOT = os.environ.get("QMS_SOURCE_DIR") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENGINE = os.environ.get("QMS_COMPOSE_ENGINE", "podman")
PROJECT = os.environ["COMPOSE_PROJECT_NAME"]
HTTP = int(os.environ["QMS_HTTP_PORT"])
HTTPS = int(os.environ["QMS_HTTPS_PORT"])
CHAT = int(os.environ["QMS_CHAT_PORT"])
PUBLIC = os.environ.get("QMS_PUBLIC_HOST", "localhost")
LOCAL = "127.0.0.1"

T0 = time.monotonic()
TIMES = {}


def say(text):
    print("[%6.1f s] %s" % (time.monotonic() - T0, text), flush=True)


def fail(text):
    say("FAILED: " + text)
    for service, lines in (("monitor", 40), ("lb", 30)):
        try:
            p = subprocess.run(["docker-compose", "-f", os.path.join(ROOT, "compose.yml"), "logs", "--no-color",
                                "--tail=%d" % lines, service], capture_output=True, text=True, timeout=60)
            say("last %s lines:\n%s%s" % (service, p.stdout, p.stderr))
        except Exception:  # noqa: BLE001 - the report above matters more
            pass
    say("containers:\n" + subprocess.run([ENGINE, "ps", "-a", "--filter", "label=com.docker.compose.project="
                                          + PROJECT, "--format", "{{.Names}} {{.Status}}"],
                                         capture_output=True, text=True).stdout)
    sys.exit(1)


def check(cond, text):
    if not cond:
        fail(text)


def run(*args, check=True, timeout=300, env=None):
    p = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                       env=dict(os.environ, **(env or {})))
    if check and p.returncode != 0:
        fail("%s: exit %d\n%s%s" % (" ".join(args), p.returncode, p.stdout[-3000:], p.stderr[-3000:]))
    return p.stdout


def compose(*args, check=True, timeout=300, env=None):
    return run("docker-compose", "-f", os.path.join(ROOT, "compose.yml"), *args, check=check,
               timeout=timeout, env=env)


def containers(service):
    """[(id, name)] of the running containers of one service."""
    out = run(ENGINE, "ps", "--filter", "label=com.docker.compose.project=" + PROJECT,
              "--filter", "label=com.docker.compose.service=" + service, "--format", "{{.ID}} {{.Names}}")
    return sorted(tuple(line.split()[:2]) for line in out.splitlines() if line.strip())


def inspect(cid, fmt):
    return run(ENGINE, "inspect", "-f", fmt, cid).strip()


def address(cid):
    return inspect(cid, "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}").split()[0]


def health(cid):
    return inspect(cid, "{{.State.Health.Status}}")


def wait_until(what, fn, timeout, interval=0.2, detail=None):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except (OSError, qmslib.HandshakeError, qmslib.WebSocketClosed, AssertionError, ssl.SSLError,
                ValueError) as e:
            last = e
        time.sleep(interval)
    fail("%s: not within %d s (last: %r)%s" % (what, timeout, last, "\n" + detail() if detail else ""))


def get(port, path, tls=True, host=LOCAL, headers=None):
    hdrs = {"Host": "%s:%d" % (PUBLIC, port)}
    hdrs.update(headers or {})
    return qmslib.http_get(port, path, headers=hdrs, host=host, tls=tls)


def metric(text, name, labels=""):
    """The sum of a Prometheus sample over the lines whose labels contain `labels`."""
    total, seen = 0.0, False
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {") and labels in line:
            total += float(line.rsplit(" ", 1)[1])
            seen = True
    return total if seen else None


def gateway_metrics(ip):
    status, _, body = qmslib.http_get(9100, "/metrics", host=ip, tls=False)
    check(status == 200, "a gateway's /metrics on its own port 9100: HTTP %d" % status)
    return body.decode()


def opened(ip):
    return metric(gateway_metrics(ip), "qms_connections_opened_total") or 0.0


class Chat:
    """A user logged in through the front's chat port (wss://)."""

    def __init__(self, name=None, do_register=True, token=None):
        self.name = name or qmslib.uniq("cmp")
        self.ws = qmslib.connect(CHAT, host=LOCAL, tls=True, timeout=10)
        if token:
            reply = qmslib.authorize(self.ws, token, timeout=10)
            if reply.get("event") != qmslib.EV_AUTHORIZATION or reply.get("valid") is not True:
                self.ws.abort()
                raise AssertionError("Authorize refused: %r" % reply)
            self.token = token
            return
        reply = (qmslib.register if do_register else qmslib.login)(self.ws, self.name, "secret-pw-1")
        if reply.get("valid") is not True:
            self.ws.abort()
            raise AssertionError("register %s: %r" % (self.name, reply))
        self.token = reply["token"]
        self.id = [u["id"] for u in reply["users"] if u["name"] == reply["username"]][0]

    def send(self, target, text):
        qmslib.send_message(self.ws, self.token, target.id, text)

    def expect(self, sender, text, timeout=10):
        m = self.ws.wait_for(lambda m: m.get("event") == qmslib.EV_MESSAGE and m.get("valid") is True
                             and m.get("sender") == sender.id and m.get("message") == text,
                             timeout, what="%r from %s" % (text, sender.name))
        return m


def gateways():
    """{container id: ip} of the running gateways."""
    return {cid: address(cid) for cid, _ in containers("gateway")}


def connect_on(gw_ips, name=None):
    """A new user through the front, and the gateway it landed on (the one whose
    count of opened connections went up)."""
    before = {cid: opened(ip) for cid, ip in gw_ips.items()}
    user = Chat(name)
    for _ in range(20):
        after = {cid: opened(ip) for cid, ip in gw_ips.items()}
        moved = [cid for cid in gw_ips if after[cid] > before[cid]]
        if len(moved) == 1:
            return user, moved[0]
        time.sleep(0.1)
    fail("could not tell which gateway %s landed on (%r -> %r)" % (user.name, before, after))


# ---------------------------------------------------------------------------

def step_up():
    say("docker-compose up -d (store, auth, router, monitor, 2 gateways, lb)")
    t = time.monotonic()
    compose("up", "-d", "--no-build", timeout=600)
    say("up returned after %.1f s; waiting for the web UI through the front" % (time.monotonic() - t))
    wait_until("the web UI over HTTPS through lb", lambda: get(HTTPS, "/")[0] == 200, 180)
    TIMES["stack up (compose up to the web UI served over TLS)"] = time.monotonic() - t
    gws = gateways()
    check(len(gws) == 2, "compose.yml asks for 2 gateways (deploy.replicas), running: %d" % len(gws))
    for cid, ip in gws.items():
        wait_until("gateway %s /readyz" % cid,
                   lambda ip=ip: qmslib.http_get(9100, "/readyz", host=ip)[0] == 200, 60)
    say("stack up in %.1f s, gateways %s" % (TIMES["stack up (compose up to the web UI served over TLS)"],
                                             sorted(gws.values())))
    return gws


def step_front(gws):
    say("the front: redirect, HSTS, certificate, the UI's chat address, operator paths")
    status, hdrs, _ = get(HTTP, "/some/page?x=1", tls=False)
    check(status == 301, "plain HTTP is redirected: got %d" % status)
    want = "https://%s:%d/some/page?x=1" % (PUBLIC, HTTPS)
    check(hdrs.get("Location") == want, "redirect to %s, got %r" % (want, hdrs.get("Location")))

    status, hdrs, body = get(HTTPS, "/")
    check(status == 200 and b"<html" in body.lower(), "the web UI over HTTPS: %d" % status)
    hsts = hdrs.get("Strict-Transport-Security") or ""
    check(re.match(r"max-age=\d{7,}", hsts), "HSTS on the HTTPS answers, got %r" % hsts)
    check(hdrs.get("Content-Security-Policy"), "the gateway's own headers pass through (CSP)")

    # The UI is told the chat port compose publishes (QMS_CHAT_PORT), not 12345.
    status, _, js = get(HTTPS, "/app.mjs")
    check(status == 200, "app.mjs over HTTPS: %d" % status)
    configured = re.search(rb'CONFIGURED_URL = "([^"]*)"', js)
    check(configured and configured.group(1).decode().endswith("://%s:%d" % (PUBLIC, CHAT)),
          "the UI's chat address is %s:%d: %r" % (PUBLIC, CHAT, configured and configured.group(1)))

    # The certificate made on the first start names the public host.
    der, version = served_certificate(HTTPS)
    text = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-text"], input=der,
                          capture_output=True).stdout.decode()
    check("DNS:%s" % PUBLIC in text, "the self-signed certificate names %s" % PUBLIC)
    check(version in ("TLSv1.2", "TLSv1.3"), "TLS version %s" % version)
    say("  TLS %s, certificate for %s, HSTS %r, UI told %s" % (version, PUBLIC, hsts,
                                                              configured.group(1).decode()))

    # Figures and readiness are the operator's: 404 at the front, served by
    # each gateway on its own port inside the network.
    ip = next(iter(gws.values()))
    check(qmslib.http_get(9100, "/metrics", host=ip)[0] == 200, "a gateway serves /metrics on :9100")
    for port in (HTTPS, CHAT):
        for path in ("/metrics", "/readyz", "/healthz", "/%6detrics", "//metrics", "/readyz/",
                     "/./metrics", "/x/../readyz", "/METRICS"):
            status, _, body = get(port, path)
            check(status == 404, "%s on the public port %d: HTTP %d %r" % (path, port, status, body[:80]))

    # wss on the chat port, through the front.
    a, b = Chat(), Chat()
    a.send(b, "over the chat port")
    b.expect(a, "over the chat port")
    a.ws.abort(); b.ws.abort()


def served_certificate(port):
    with socket.create_connection((LOCAL, port), timeout=5) as raw:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        with ctx.wrap_socket(raw, server_hostname=PUBLIC) as tls:
            return tls.getpeercert(binary_form=True), tls.version()


def step_operator_certificate(tmp):
    """The operator's certificate from a mounted folder (QMS_TLS_DIR) on both
    TLS ports; a key that does not belong to it stops lb with a message;
    then back to the self-signed one kept in the volume."""
    say("the operator's certificate (QMS_TLS_DIR), and a wrong key refused")
    good, bad = os.path.join(tmp, "good"), os.path.join(tmp, "bad")
    for d in (good, bad):
        os.makedirs(d)
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-days", "2", "-subj", "/CN=" + PUBLIC, "-addext", "subjectAltName=DNS:" + PUBLIC,
        "-keyout", os.path.join(good, "tls.key"), "-out", os.path.join(good, "tls.crt"))
    run("openssl", "genpkey", "-algorithm", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-out", os.path.join(bad, "tls.key"))
    with open(os.path.join(good, "tls.crt"), "rb") as f:
        open(os.path.join(bad, "tls.crt"), "wb").write(f.read())
    for d in (good, bad):
        os.chmod(d, 0o755)
        for name in ("tls.crt", "tls.key"):
            os.chmod(os.path.join(d, name), 0o644)      # uid 10001 reads them
    want = ssl.PEM_cert_to_DER_cert(open(os.path.join(good, "tls.crt")).read())
    before = served_certificate(HTTPS)[0]
    check(before != want, "the operator's certificate is new")

    # A key that does not belong: the lb image, with that folder mounted
    # where compose mounts QMS_TLS_DIR, refuses it (run beside the running
    # lb, which is not touched; `docker-compose run` needs container links,
    # which podman's API does not have).
    p = subprocess.run([ENGINE, "run", "--rm", "-v", bad + ":/etc/qmessageserver/tls:ro",
                        "qmessageserver-lb:latest"], capture_output=True, text=True, timeout=120)
    check(p.returncode != 0 and "the key does not belong to the certificate" in p.stdout + p.stderr,
          "lb with a wrong key: exit %d, %s%s" % (p.returncode, p.stdout[-500:], p.stderr[-500:]))
    say("  a wrong key: lb's entrypoint stops before nginx starts (exit %d), with that message" % p.returncode)

    recreate_lb({"QMS_TLS_DIR": good})
    wait_until("the operator's certificate on the HTTPS port",
               lambda: served_certificate(HTTPS)[0] == want, 60)
    check(served_certificate(CHAT)[0] == want, "the operator's certificate on the chat port")
    check(get(HTTPS, "/")[0] == 200, "the UI with the operator's certificate")
    say("  the operator's certificate served on both TLS ports")

    recreate_lb()
    wait_until("the self-signed certificate again", lambda: served_certificate(HTTPS)[0] == before, 60)
    say("  back to the self-signed certificate kept in the volume lb-tls (the same one)")


def recreate_lb(env=None):
    """lb alone made again (other services untouched), with `env` for compose.
    The host ports of the container just removed may take a moment to be
    released (podman holds them for it): "address already in use" is retried."""
    compose("rm", "-s", "-f", "lb", env=env)
    for _ in range(20):
        p = subprocess.run(["docker-compose", "-f", os.path.join(ROOT, "compose.yml"), "up", "-d", "--no-deps",
                            "--no-build", "lb"], capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, **(env or {})))
        if p.returncode == 0:
            return
        if "address already in use" not in p.stderr:
            fail("lb could not be started again: %s" % p.stderr[-2000:])
        compose("rm", "-s", "-f", "lb", env=env)
        time.sleep(0.5)
    fail("lb could not be started again: its ports stay in use")


def step_cross(gws, pairs=3):
    say("messages between users on different gateways")
    users = {cid: [] for cid in gws}
    tries = 0
    while min(len(v) for v in users.values()) < pairs:
        tries += 1
        check(tries <= 20 * pairs * len(gws), "new connections do not spread over the gateways: %r"
              % {k: len(v) for k, v in users.items()})
        user, cid = connect_on(gws)
        users[cid].append(user)
    ids = sorted(users)
    sent = 0
    for i in range(pairs):
        for j, src in enumerate(ids):
            dst = ids[(j + 1) % len(ids)]
            a, b = users[src][i], users[dst][i]
            text = "cross %d %s->%s" % (i, a.name, b.name)
            a.send(b, text)
            b.expect(a, text)
            sent += 1
    say("  %d of %d messages crossed gateways (%s)" % (sent, sent, ", ".join(
        "%s: %d users" % (gws[c], len(users[c])) for c in ids)))
    return users


def step_scale():
    say("docker-compose up -d --scale gateway=3")
    t = time.monotonic()
    compose("up", "-d", "--no-build", "--scale", "gateway=3", timeout=300)
    say("  the command returned after %.1f s (it waits for the new gateway's health check)"
        % (time.monotonic() - t))
    gws = wait_until("3 running gateways", lambda: (lambda g: g if len(g) == 3 else None)(gateways()), 60)
    for cid, ip in gws.items():
        wait_until("gateway %s /readyz" % ip, lambda ip=ip: qmslib.http_get(9100, "/readyz", host=ip)[0] == 200, 60)
    # The router greets each new gateway by name (gateway@CONTAINER/1).
    # (Its qms_gateways gauge is not used here: a `--health router` probe
    # counts in it for 6 s, so it reads 4 while the checks run.)
    new = [cid for cid in gws if opened(gws[cid]) == 0]
    check(len(new) == 1, "one new gateway with no connection yet: %r" % new)
    wait_until("the router greeting the new gateway",
               lambda: re.search(r'event=gateway_hello gateway=\d+ name="gateway@%s' % new[0][:12],
                                 compose("logs", "--no-color", "--tail=400", "monitor")), 30, interval=1)
    # the new one takes new connections through the front
    # nginx starts each connection at a random address of the name (its
    # resolver rotates the list), so a given gateway is hit with p = 1/3:
    # 40 misses in a row would happen once in 10^7 runs.
    for tries in range(1, 41):
        user, cid = connect_on(gws)
        user.ws.abort()
        if cid == new[0]:
            break
    check(cid == new[0], "none of %d new connections reached the third gateway" % tries)
    TIMES["scale 2 -> 3 gateways (to a connection through the front on the new one)"] = time.monotonic() - t
    say("  third gateway %s serves through the front %.1f s after the command"
        % (gws[new[0]], time.monotonic() - t))
    return gws


def step_browser():
    say("the web UI in Chromium over HTTPS, at https://%s:%d/ (a non-loopback name)" % (PUBLIC, HTTPS))
    env = dict(os.environ, QMS_FRONT_URL="https://%s:%d/" % (PUBLIC, HTTPS),
               QMS_FRONT_HTTP_URL="http://%s:%d/" % (PUBLIC, HTTP), QMS_FRONT_HOST=PUBLIC)
    t = time.monotonic()
    p = subprocess.run(["node", os.path.join(ROOT, "tests", "e2e", "compose-front.mjs")], env=env,
                       capture_output=True, text=True, timeout=180)
    sys.stdout.write("".join("    " + line + "\n" for line in p.stdout.splitlines()))
    check(p.returncode == 0, "the browser check failed:\n%s" % p.stderr[-3000:])
    say("  browser check passed in %.1f s" % (time.monotonic() - t))


def host_pid(cid):
    pid = int(inspect(cid, "{{.State.Pid}}"))
    check(pid > 1, "the main process of %s: pid %d" % (cid, pid))
    return pid


def step_kill_gateway(gws, users):
    say("a gateway killed (SIGKILL to its process)")
    ids = sorted(users)
    victim_gw, other_gw = ids[0], ids[1]
    x, y = users[victim_gw][0], users[other_gw][0]
    pid = host_pid(victim_gw)
    t = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    x.ws.expect_close(timeout=10)      # the front closes it when its gateway is gone
    # The client reconnects through the front (any gateway that answers)
    # and resumes its session with its token, as the web UI does.
    box = {}

    def resumed():
        c = Chat(name=x.name, token=x.token)
        c.id = x.id
        box["x"] = c
        return True

    wait_until("the user of the killed gateway resuming through the front", resumed, 60, interval=0.1)
    x2 = box["x"]
    text = "after the gateway died"
    y.send(x2, text)
    x2.expect(y, text)
    TIMES["gateway killed -> its user reconnected through the front, message received"] = time.monotonic() - t
    say("  %s resumed and received a message %.2f s after the kill"
        % (x.name, TIMES["gateway killed -> its user reconnected through the front, message received"]))
    # the restart policy brings the container back
    wait_until("the killed gateway restarted (restart: unless-stopped)",
               lambda: inspect(victim_gw, "{{.State.Pid}}") not in ("0", str(pid))
               and qmslib.http_get(9100, "/readyz", host=address(victim_gw))[0] == 200, 90, interval=0.5)
    TIMES["gateway killed -> container restarted and ready"] = time.monotonic() - t
    say("  the gateway container is back and ready %.1f s after the kill"
        % TIMES["gateway killed -> container restarted and ready"])
    users[victim_gw][0] = x2
    return x2, y


def step_kill_router(gws, users):
    say("the router killed (SIGKILL to its process)")
    ids = sorted(users)
    a, b = users[ids[1]][1], users[ids[2] if len(ids) > 2 else ids[0]][1]
    a.send(b, "before the router died")
    b.expect(a, "before the router died")
    rid = containers("router")[0][0]
    pid = host_pid(rid)
    t = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    n = 0
    delivered = None
    deadline = t + 90
    while time.monotonic() < deadline and delivered is None:
        n += 1
        text = "probe %d" % n
        a.send(b, text)
        try:
            b.ws.wait_for(lambda m: m.get("event") == qmslib.EV_MESSAGE and m.get("valid") is True
                          and m.get("sender") == a.id and m.get("message", "").startswith("probe "),
                          0.3, what="a probe")
            delivered = time.monotonic() - t
        except AssertionError:
            a.ws.drain(quiet=0.01)
    check(delivered is not None, "no message crossed gateways within 90 s of the router's death")
    TIMES["router killed -> messages cross gateways again (clients do nothing)"] = delivered
    say("  messages cross gateways again %.2f s after the kill (%d probes; the restart policy "
        "brought the router back)" % (delivered, n))
    check(inspect(rid, "{{.State.Pid}}") != str(pid), "the router is a new process")


def step_monitor():
    say("the monitor's merged tail")
    out = compose("logs", "--no-color", "--tail=2000", "monitor")
    # "monitor_1  | 05:39:29.973 INFO  router   event=... [router@host/1]"
    lines = [m.groups() for m in (re.match(r"^\S+\s+\|\s+(\S+)\s+([A-Z]+)\s+(\w+)\s+(.*)$", line)
                                  for line in out.splitlines()) if m]
    actors = {actor for _, _, actor, _ in lines}
    for want in ("router", "gateway", "main"):
        check(want in actors, "the monitor shows %s lines (actors seen: %s)" % (want, sorted(actors)))
    starts = [rest for _, _, actor, rest in lines if actor == "main" and "event=starting" in rest
              and "role=router" in rest]
    check(len(starts) >= 2, "the monitor saw the router start twice (before and after the kill): %d" % len(starts))
    # the links between roles are CURVE (the keys service's keys), and no
    # role warns that they are not
    for service in ("store", "auth", "router", "gateway"):
        text = compose("logs", "--no-color", service)
        check("actor=curve event=on" in text, "%s loaded the deployment's CURVE keys" % service)
        check("links_unauthenticated" not in text, "%s runs tcp:// links without CURVE" % service)
    say("  %d lines from %s; the router's two starts are among them" % (len(lines), ", ".join(sorted(actors))))
    for line in out.splitlines()[-8:]:
        print("    " + line[:200])


def step_front_health():
    say("the front's health check when no gateway answers")
    lb = containers("lb")[0][0]
    p = subprocess.run([ENGINE, "exec", lb, "/usr/bin/lb-entrypoint", "health"], capture_output=True, text=True)
    check(p.returncode == 0, "lb healthy while gateways run: %s" % p.stderr)
    compose("stop", "-t", "2", "gateway")
    status = wait_until("nginx answering 502 with every gateway stopped",
                        lambda: (lambda s: s if s in (502, 504) else None)(get(HTTPS, "/")[0]), 30)
    p = subprocess.run([ENGINE, "exec", lb, "/usr/bin/lb-entrypoint", "health"], capture_output=True, text=True)
    check(p.returncode != 0, "lb's health check passes while nginx answers %d" % status)
    say("  nginx answers %d to the public and lb's health check fails: %s" % (status, p.stderr.strip()))


def main():
    gws = step_up()
    step_front(gws)
    users = step_cross(gws)
    gws = step_scale()
    step_browser()
    users = step_cross(gws, pairs=2)
    step_kill_gateway(gws, users)
    step_kill_router(gws, users)
    step_monitor()
    with tempfile.TemporaryDirectory(prefix="qms-tls-") as tmp:
        step_operator_certificate(tmp)
    step_front_health()
    say("all checks passed; times:")
    for k, v in TIMES.items():
        print("    %-75s %6.2f s" % (k, v))


if __name__ == "__main__":
    main()
