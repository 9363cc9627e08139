// harness.mjs - what the browser end-to-end tests share: the real server
// binary on free loopback ports in a temp dir (serving a temp copy of html/
// plus the test fixtures), Debian's chromium driven by playwright-core, and a
// recorder of every WebSocket frame a page sends.

import { spawn } from "node:child_process";
import { cpSync, mkdtempSync, rmSync, existsSync, mkdirSync } from "node:fs";
import { createServer, connect } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const HERE = dirname(fileURLToPath(import.meta.url));
export const SOURCE_DIR = resolve(process.env.QMS_SOURCE_DIR || join(HERE, "..", "..", ".."));
export const BINARY = process.env.QMS_BINARY || join(SOURCE_DIR, "build", "qmessageserver");
export const CHROMIUM = process.env.QMS_CHROMIUM || "/usr/bin/chromium";
export const FIXTURES = join(HERE, "..", "fixtures");

export const CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

const given = new Set();

/** A TCP port that was free on 127.0.0.1 a moment ago (never the same twice
 *  here).  Drawn below the kernel's ephemeral range (32768 up), which every
 *  outgoing connection also draws from, and from a range the Python tests
 *  (tests/qmslib.py: 10000-29799) do not use. */
export async function freePort() {
  for (let tries = 0; tries < 500; tries++) {
    const port = 29800 + Math.floor(Math.random() * 2200);
    if (given.has(port)) continue;
    const free = await new Promise((res) => {
      const s = createServer();
      s.once("error", () => res(false));
      s.listen(port, "127.0.0.1", () => s.close(() => res(true)));
    });
    if (free) { given.add(port); return port; }
  }
  throw new Error("no free port found");
}

function portOpen(port) {
  return new Promise((res) => {
    const s = connect({ port, host: "127.0.0.1" });
    s.once("connect", () => { s.destroy(); res(true); });
    s.once("error", () => res(false));
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts the server. Options: tls (use --self-signed), serverIp (the name
 * written into the UI's placeholders; default 127.0.0.1), extra (more args).
 * Returns {httpPort, httpsPort, chatPort, dir, htmlDir, origin, stop(), log()}.
 */
export async function startServer({ tls = false, serverIp = "127.0.0.1", extra = [] } = {}) {
  if (!existsSync(BINARY)) throw new Error(`server binary not found: ${BINARY} (set QMS_BINARY)`);
  const dir = mkdtempSync(join(tmpdir(), "qms-e2e-"));
  const htmlDir = join(dir, "html");
  cpSync(join(SOURCE_DIR, "html"), htmlDir, { recursive: true });
  cpSync(FIXTURES, join(htmlDir, "fixtures"), { recursive: true });
  const dataDir = join(dir, "data");
  mkdirSync(dataDir);
  const [chatPort, httpPort, httpsPort] = [await freePort(), await freePort(), await freePort()];
  const args = ["--bind", "127.0.0.1", "-serverIp", serverIp, "-cp", String(chatPort), "-hp", String(httpPort),
    "-hsp", String(httpsPort), "--data-dir", dataDir, "--html-dir", htmlDir,
    "--argon2-memory", "256", "--argon2-iterations", "1", "--log-level", "warn", ...(tls ? ["--self-signed"] : []),
    ...extra];
  const ports = tls ? [chatPort, httpPort, httpsPort] : [chatPort, httpPort];
  let output = "";
  let child = null;
  let exited = null;

  async function launch() {
    exited = null;
    child = spawn(BINARY, args, { stdio: ["ignore", "pipe", "pipe"] });
    child.stdout.on("data", (d) => { output += d; });
    child.stderr.on("data", (d) => { output += d; });
    child.on("exit", (code, sig) => { exited = { code, sig }; });
    const deadline = Date.now() + 15000;
    for (;;) {
      if (exited) throw new Error(`server exited early (${JSON.stringify(exited)}):\n${output}`);
      if ((await Promise.all(ports.map(portOpen))).every(Boolean)) return;
      if (Date.now() > deadline) { child.kill("SIGKILL"); throw new Error(`server did not start:\n${output}`); }
      await sleep(50);
    }
  }

  // SIGTERM and wait; returns how it ended ({code, sig}), or null if it was already gone.
  async function terminate() {
    if (exited) return null;
    const done = new Promise((r) => child.once("exit", (code, sig) => r({ code, sig })));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
    const how = await done;
    clearTimeout(timer);
    return how;
  }

  await launch();
  const origin = tls ? `https://${serverIp}:${httpsPort}` : `http://${serverIp}:${httpPort}`;
  return {
    chatPort, httpPort, httpsPort, dir, htmlDir, origin,
    log: () => output,
    /** Stops the server (SIGTERM) and starts it again on the same ports and data. */
    async restart(pauseMs = 0) {
      const how = await terminate();
      await sleep(pauseMs);
      await launch();
      return how;
    },
    /** Stops the server and removes its files; returns how it exited.  Prints
     * the most output one connection had queued (docs/ROBUSTNESS.md: what a
     * real client needs of --max-queue). */
    async stop() {
      try {
        const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
        const peak = /qms_queue_bytes\{actor="gateway",of="peak"\} (\d+)/.exec(text);
        if (peak) console.log(`queue peak of one connection: ${peak[1]} bytes`);
      } catch { /* the figure is informative only */ }
      const how = await terminate();
      rmSync(dir, { recursive: true, force: true });
      return how;
    },
  };
}

export function launchBrowser(extraArgs = []) {
  return chromium.launch({ executablePath: CHROMIUM, args: [...CHROMIUM_ARGS, ...extraArgs] });
}

/**
 * A new browser context (a separate "device": own IndexedDB, storage) with
 * one page whose sent WebSocket frames are recorded in page.sentFrames, and
 * received ones in page.receivedFrames (parsed JSON where possible). Each
 * recorded frame names its socket (`socket`, an index into page.sockets), so
 * a test can look at what one connection carried, whatever the others sent
 * around it (framesOn).
 */
export async function openPage(browser, url, contextOptions = {}) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1180, height: 760 },
    ...contextOptions });
  const page = await context.newPage();
  recordFrames(page);
  page.pageErrors = [];
  page.on("pageerror", (e) => page.pageErrors.push(String(e)));
  if (url) await page.goto(url);
  return page;
}

export function recordFrames(page) {
  page.sentFrames = [];
  page.receivedFrames = [];
  page.sockets = [];
  page.on("websocket", (ws) => {
    const socket = page.sockets.push(ws) - 1;
    ws.on("framesent", (f) => page.sentFrames.push({ url: ws.url(), payload: String(f.payload), socket }));
    ws.on("framereceived", (f) => {
      let data = null;
      try { data = JSON.parse(String(f.payload)); } catch { /* not JSON */ }
      page.receivedFrames.push({ url: ws.url(), payload: String(f.payload), data, socket });
    });
  });
}

/**
 * Puts the test between the page and the server, like a malicious server or
 * network would be: every WebSocket the page opens is routed through
 * playwright. fromPage(text) and fromServer(text) return what to pass on: a
 * string, an array of strings (e.g. a replay), or null to drop it. Frames the
 * page sends are recorded in page.sentFrames as for other pages.
 */
export async function interceptSockets(page, { fromPage = (t) => t, fromServer = (t) => t } = {}) {
  const forward = (out, result) => {
    for (const m of result === null ? [] : Array.isArray(result) ? result : [result]) out.send(m);
  };
  await page.routeWebSocket(() => true, (ws) => {
    const server = ws.connectToServer();
    ws.onMessage((m) => {
      // what the page itself sent (recordFrames sees what goes on to the server)
      page.sentFrames.push({ url: ws.url(), payload: String(m) });
      forward(server, fromPage(String(m)));
    });
    server.onMessage((m) => forward(ws, fromServer(String(m))));
    const pass = (code, reason) => (code >= 1000 && code < 5000 && code !== 1005 && code !== 1006
      ? { code, reason } : {});
    ws.onClose((code, reason) => server.close(pass(code, reason)).catch?.(() => {}));
    server.onClose((code, reason) => ws.close(pass(code, reason)).catch?.(() => {}));
  });
}

/**
 * The requests (parsed) a page sent on each socket it opened from index
 * `from` on, one array per socket that sent anything. A test that looks for
 * "the first request after X" names the connection it means this way, so a
 * frame still in flight on an older connection (a receipt, say) cannot take
 * its place.
 */
export function framesOn(page, from = 0) {
  const bySocket = new Map();
  for (const f of page.sentFrames) {
    if (f.socket === undefined || f.socket < from) continue;
    if (!bySocket.has(f.socket)) bySocket.set(f.socket, []);
    bySocket.get(f.socket).push(JSON.parse(f.payload));
  }
  return [...bySocket.keys()].sort((a, b) => a - b).map((k) => bySocket.get(k));
}

/** Asserts-style helper: every frame any of `pages` sent, as one list. */
export function allSentFrames(...pages) {
  return pages.flatMap((p) => p.sentFrames);
}

/** Waits until `fn()` is truthy (polling), or throws with `what`. */
export async function waitFor(fn, what, timeout = 10000) {
  const end = Date.now() + timeout;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

export function uniq(prefix) {
  return `${prefix}${Date.now().toString(36).slice(-4)}${Math.floor(Math.random() * 1e4)}`;
}
