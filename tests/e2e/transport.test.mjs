// transport.test.mjs - how the web UI reaches the chat: HTTPS with the
// server's --self-signed certificate (wss on the chat port, and /ws on the
// HTTPS port when the page is opened under another name), the HTTP -> HTTPS
// redirect, /ws on the HTTP port, and the refusal to run without a secure
// context (a non-local host over plain HTTP).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { connect as tlsConnect } from "node:tls";
import https from "node:https";
import http from "node:http";
import { startServer, launchBrowser, openPage, allSentFrames } from "./lib/harness.mjs";
import { register, contact, openConversation, send, waitIncoming, sentRequests } from "./lib/ui.mjs";

let tls, plain, browser;
let alpn; // what TLS negotiated when a client offered h2 first, as browsers do
const pages = [];
const secrets = [];

before(async () => {
  [tls, plain] = await Promise.all([
    startServer({ tls: true, serverIp: "127.0.0.1" }),
    startServer({ serverIp: "localhost" }),
  ]);
  alpn = await negotiated(tls.httpsPort, ["h2", "http/1.1"]);
  // chat.test is a name that is not loopback for the browser's security rules.
  browser = await launchBrowser(["--host-resolver-rules=MAP chat.test 127.0.0.1"]);
});

after(async () => {
  await browser?.close();
  for (const s of [tls, plain]) if (s) assert.deepEqual(await s.stop(), { code: 0, sig: null });
});

function get1(port, path) {
  return new Promise((resolve, reject) => {
    https.get({ host: "127.0.0.1", port, path, rejectUnauthorized: false, timeout: 5000 }, (res) => {
      const parts = [];
      res.on("data", (d) => parts.push(d));
      res.on("end", () => resolve(Buffer.concat(parts)));
    }).on("error", reject);
  });
}

// The application protocol TLS agrees on when a client offers these.
function negotiated(port, protocols) {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: "127.0.0.1", port, ALPNProtocols: protocols, rejectUnauthorized: false },
      () => { resolve(socket.alpnProtocol); socket.destroy(); });
    socket.on("error", reject);
  });
}

function headersOf(mod, port, path) {
  return new Promise((resolve, reject) => {
    mod.get({ host: "127.0.0.1", port, path, rejectUnauthorized: false, timeout: 5000 }, (res) => {
      res.resume();
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers }));
    }).on("error", reject);
  });
}

test("over TLS every answer carries Strict-Transport-Security and the page's policy", async () => {
  for (const path of ["/", "/app.mjs", "/enums.js", "/missing"]) {
    const { status, headers } = await headersOf(https, tls.httpsPort, path);
    assert.equal(headers["strict-transport-security"], "max-age=31536000", `${path} (${status})`);
    assert.match(headers["content-security-policy"], new RegExp(`connect-src 'self' wss://127\\.0\\.0\\.1:${tls.chatPort};`));
    assert.equal(headers["x-frame-options"], "DENY");
  }
  // the plain HTTP port only redirects; HSTS there would mean nothing to a browser
  const { status, headers } = await headersOf(http, tls.httpPort, "/");
  assert.equal(status, 301);
  assert.equal(headers["strict-transport-security"], undefined);
});

// The server writes every byte of its responses itself (docs/ROBUSTNESS.md), which HTTP/2's
// framing would not allow: HTTPS offers HTTP/1.1 only, and a page over it is whole.
test("HTTPS speaks HTTP/1.1 only, and serves whole files", async () => {
  assert.equal(alpn, "http/1.1");
  const page = await get1(tls.httpsPort, "/");
  assert.ok(page.length > 1000 && page.toString().includes("</html>"), `short page: ${page.length} bytes`);
});

async function device(url) {
  const p = await openPage(browser, url);
  pages.push(p);
  return p;
}

test("HTTP redirects to HTTPS, and the UI chats over wss on the chat port", async () => {
  const a = await device(null);
  const resp = await a.goto(`http://127.0.0.1:${tls.httpPort}/?from=http`);
  assert.equal(a.url(), `https://127.0.0.1:${tls.httpsPort}/?from=http`);
  const hop = resp.request().redirectedFrom();
  assert.ok(hop, "there was a redirect");
  assert.equal((await hop.response()).status(), 301);
  assert.equal(await a.evaluate(() => window.isSecureContext && location.protocol), "https:");
  await register(a, "tina");
  assert.deepEqual(a.sockets.map((s) => s.url().replace(/\/$/, "")), [`wss://127.0.0.1:${tls.chatPort}`]);

  const b = await device(tls.origin + "/");
  await register(b, "ulf");
  await openConversation(a, "ulf");
  secrets.push("Over TLS and end to end");
  await send(a, secrets.at(-1));
  await openConversation(b, "tina");
  await waitIncoming(b, "Over TLS and end to end");
  secrets.push("Both layers, thanks");
  await send(b, secrets.at(-1));
  await waitIncoming(a, "Both layers");
});

test("opened under another name, the HTTPS page uses wss:// on its own origin at /ws", async () => {
  const c = await device(`https://localhost:${tls.httpsPort}/`);
  await register(c, "vera");
  assert.deepEqual(c.sockets.map((s) => s.url()), [`wss://localhost:${tls.httpsPort}/ws`]);
  const a = pages[0];
  await contact(a, "vera").waitFor();
  await openConversation(a, "vera");
  secrets.push("Reaching you through the HTTPS port");
  await send(a, secrets.at(-1));
  await openConversation(c, "tina");
  await waitIncoming(c, "through the HTTPS port");
});

test("over plain HTTP under another name than configured, the page uses /ws on the HTTP port", async () => {
  const d = await device(`http://127.0.0.1:${plain.httpPort}/`);
  await register(d, "walt");
  assert.deepEqual(d.sockets.map((s) => s.url()), [`ws://127.0.0.1:${plain.httpPort}/ws`]);
  const e = await device(`http://localhost:${plain.httpPort}/`);
  await register(e, "xena");
  assert.deepEqual(e.sockets.map((s) => s.url().replace(/\/$/, "")), [`ws://localhost:${plain.chatPort}`]);
  await openConversation(d, "xena");
  secrets.push("Two ways in, one chat");
  await send(d, secrets.at(-1));
  await openConversation(e, "walt");
  await waitIncoming(e, "Two ways in");
});

test("plain HTTP from a non-local host: HTTPS is required and nothing is sent", async () => {
  const p = await device(`http://chat.test:${plain.httpPort}/`);
  await p.locator("#insecure").waitFor();
  assert.equal(await p.evaluate(() => window.isSecureContext), false);
  assert.match(await p.textContent("#insecure"), /HTTPS is needed/);
  assert.equal(await p.locator("#submit").isDisabled(), true);
  assert.equal(await p.locator("#name").isDisabled(), true);
  assert.equal(await p.locator('body[data-conn="closed"]').count(), 1);
  await p.waitForTimeout(500);
  assert.equal(p.sockets.length, 0, "no WebSocket was opened");
  assert.deepEqual(p.pageErrors, []);
});

test("no plaintext in any frame sent over these transports", async () => {
  const frames = allSentFrames(...pages);
  assert.ok(frames.length >= 10);
  for (const s of secrets) assert.ok(!frames.some((f) => f.payload.includes(s)), s);
  const msgs = pages.flatMap(sentRequests).filter((r) => r.action === 3);
  assert.equal(msgs.length, secrets.length);
});
