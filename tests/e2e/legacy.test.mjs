// legacy.test.mjs - the original web client's way of using the protocol still
// works against this server, shown with a compatibility page written for
// these tests (fixtures/legacy: classic scripts, /enums.js globals, SHA-256
// hex passwords, PEM public keys), served by the real server so enums.js and
// the placeholders are the server's. Also: how the new UI treats such a peer.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startServer, launchBrowser, openPage, waitFor } from "./lib/harness.mjs";
import { register, contact, openConversation, sentRequests } from "./lib/ui.mjs";

const LEGACY = "/fixtures/legacy/index.html";
let server, browser;
let l1, l2, ours;
const ids = {};

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  assert.deepEqual(await server?.stop(), { code: 0, sig: null });
});

const events = (page) => page.evaluate(() => window.probe.events);

async function waitEvent(page, pred, what) {
  return waitFor(async () => (await events(page)).find(pred), what);
}

async function legacyPage() {
  const p = await openPage(browser, server.origin + LEGACY);
  await p.locator("#state", { hasText: "open" }).waitFor();
  return p;
}

test("the page gets enums.js globals and the filled-in chat address", async () => {
  l1 = await legacyPage();
  const info = await l1.evaluate(() => ({
    address: window.probe.address, globals: window.probe.hasGlobals,
    requests: { ...Requests }, responses: { ...Responses }, frozen: Object.isFrozen(Requests),
  }));
  assert.equal(info.address, `ws://127.0.0.1:${server.chatPort}`);
  assert.equal(info.globals, true);
  // the original's values, exactly; the server may append more (never renumber)
  const original = {
    requests: { LoginRequest: 0, RegisterRequest: 1, LogoutRequest: 2, MessageRequest: 3, AuthorizeRequest: 4 },
    responses: { AuthorizationEvent: 0, LoginEvent: 1, MessageEvent: 2, InvalidUserEvent: 3, UserlistChangeEvent: 4 },
  };
  for (const kind of ["requests", "responses"]) {
    for (const [name, value] of Object.entries(original[kind])) assert.equal(info[kind][name], value, name);
    for (const [name, value] of Object.entries(info[kind]))
      if (!(name in original[kind])) assert.ok(value > 4, `${name} is appended`);
  }
  assert.equal(info.frozen, true);
  assert.equal(l1.sockets.length, 1);
  assert.equal(l1.sockets[0].url().replace(/\/$/, ""), info.address);
});

test("register and login answer with token, username and the users with their PEM keys", async () => {
  await l1.evaluate(() => window.probe.enter("OldTimer", "hunter2 ", true));
  const login = await waitEvent(l1, (e) => e.event === 1, "LoginEvent");
  assert.equal(login.valid, true);
  assert.match(login.token, /^[A-Za-z0-9_-]{43}$/);
  assert.equal(login.username, "OldTimer");
  const me = login.users.find((u) => u.name === "OldTimer");
  assert.match(me.id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  const pem = await l1.evaluate(() => window.probe.pem);
  assert.match(pem, /^-----BEGIN PUBLIC KEY-----\n[A-Za-z0-9+/=\n]+-----END PUBLIC KEY-----\n$/);
  assert.equal(me.publicKey, pem, "the PEM key comes back byte for byte");
  ids.l1 = me.id;
  const sent = await waitFor(() => sentRequests(l1)[0], "the register request in the recorder");
  assert.equal(sent.action, 1);
  assert.equal(sent.password, "f52fbd32b2b3b86ff88ef6c490628285f482af15ddcb29541f94bcf526a3f6c7"); // sha256("hunter2")

  l2 = await legacyPage();
  await l2.evaluate(() => window.probe.enter("Second", "pw", true));
  const l2login = await waitEvent(l2, (e) => e.event === 1, "LoginEvent at l2");
  ids.l2 = l2login.users.find((u) => u.name === "Second").id;
  const list = await waitEvent(l1, (e) => e.event === 4 && e.users.some((u) => u.name === "Second"), "user list at l1");
  assert.equal(list.valid, true);
  assert.deepEqual(list.users.map((u) => u.name), ["OldTimer", "Second"]);
  for (const u of list.users) assert.deepEqual(Object.keys(u).sort(), ["id", "name", "publicKey"]);

  // login (not register) with the same digest works too, from a new page
  await l2.evaluate(() => { window.probe.logout(); });
  const l2b = await legacyPage();
  await l2b.evaluate(() => window.probe.enter("second", "pw", false));
  const again = await waitEvent(l2b, (e) => e.event === 1, "LoginEvent of the login");
  assert.equal(again.valid, true);
  assert.equal(again.username, "Second", "the name as registered");
  await l2.context().close();
  l2 = l2b;
});

test("a message arrives with sender id and the message string unchanged", async () => {
  const text = "0a1b2c3d4e5f60718293a4b5c6d7e8f9-RSA-ciphertext-as-hex \u00e9\u{1F600}";
  await l1.evaluate(([to, t]) => window.probe.message(to, t), [ids.l2, text]);
  const m = await waitEvent(l2, (e) => e.event === 2, "MessageEvent");
  // the fields the original reads; extra fields (server id, timestamp) are allowed
  assert.deepEqual({ valid: m.valid, event: m.event, sender: m.sender, message: m.message },
    { valid: true, event: 2, sender: ids.l1, message: text });
});

test("after a reload the token is resumed: AuthorizationEvent, then the user list", async () => {
  await l2.reload();
  await l2.locator("#state", { hasText: "open" }).waitFor();
  const auth = await waitEvent(l2, (e) => e.event === 0, "AuthorizationEvent");
  assert.deepEqual(auth, { valid: true, event: 0 });
  const list = await waitEvent(l2, (e) => e.event === 4, "user list after authorize");
  assert.ok(list.users.some((u) => u.id === ids.l2));
  await waitFor(() => sentRequests(l2).some((r) => r.action === 4), "the authorize request in the recorder");
  assert.equal(sentRequests(l2).at(-1).action, 4);
  // and messages still reach it
  await l1.evaluate(([to]) => window.probe.message(to, "after reload"), [ids.l2]);
  await waitEvent(l2, (e) => e.event === 2 && e.message === "after reload", "message after reload");
});

test("a bad token gets InvalidUserEvent", async () => {
  const p = await openPage(browser, null);
  await p.context().addInitScript(() => { if (!sessionStorage.getItem("token")) sessionStorage.setItem("token", "not-a-real-token"); });
  await p.goto(server.origin + LEGACY);
  const inv = await waitEvent(p, (e) => e.event === 3, "InvalidUserEvent");
  assert.deepEqual(inv, { valid: false, event: 3 });
  await p.locator("#state", { hasText: "invalid" }).waitFor();
  // a message with the bad token too
  await p.evaluate(() => { window.probe.token = "not-a-real-token"; window.probe.message("x", "y"); });
  await waitFor(async () => (await events(p)).filter((e) => e.event === 3).length === 2, "second InvalidUserEvent");
  await p.context().close();
});

test("the original's logout (its action name is misspelt, so no action) gets an error, the socket stays", async () => {
  const p = await legacyPage();
  await p.evaluate(() => window.probe.enter("Leaver", "pw", true));
  const login = await waitEvent(p, (e) => e.event === 1, "LoginEvent");
  await p.evaluate((token) => window.probe.send({ action: Requests.LogoutRequests, token }), login.token);
  const err = await waitEvent(p, (e) => e.valid === false && e.event === undefined, "error answer");
  assert.deepEqual(err, { valid: false, error: "Field 'action' is missing." });
  assert.equal(await p.evaluate(() => window.probe.open), true);
  await p.context().close();
});

test("the new UI lists a legacy peer as without encryption and never sends it plaintext", async () => {
  ours = await openPage(browser, server.origin + "/");
  await register(ours, "modern");
  const oursId = JSON.parse(await ours.evaluate(() => sessionStorage.getItem("qms1.session"))).id;
  await contact(ours, "OldTimer").waitFor();
  assert.match(await contact(ours, "OldTimer").locator(".preview").textContent(), /No end-to-end encryption/);
  await openConversation(ours, "OldTimer");
  assert.match(await ours.textContent("#conv-notice"), /cannot be decrypted here, and nothing is sent to them unencrypted/);
  assert.equal(await ours.locator("#message").isDisabled(), true);
  assert.equal(await ours.locator("#send").isDisabled(), true);
  assert.equal(await ours.locator("#verify").isHidden(), true);
  await ours.locator("#message").press("Enter", { force: true }).catch(() => {});
  // the legacy client sees our key as an opaque string
  const list = await waitEvent(l1, (e) => e.event === 4 && e.users.some((u) => u.name === "modern"), "user list with modern");
  assert.match(list.users.find((u) => u.name === "modern").publicKey, /^qms1:p256:/);
  // what it sends us is shown as undecryptable, never as text
  await l1.evaluate(([to]) => window.probe.message(to, "4f2a9c...rsa-hex"), [oursId]);
  await ours.locator("#messages li.msg.in .bubble.error", { hasText: "cannot decrypt (unsupported key)" }).waitFor();
  assert.equal(await ours.locator("#messages li.msg.in", { hasText: "rsa-hex" }).count(), 0);
  assert.ok(!sentRequests(ours).some((r) => r.action === 3), "no message request at all");
  assert.deepEqual(ours.pageErrors, []);
});

// The original QMessageServer page is written with inline scripts and on...=
// handlers, which the default Content-Security-Policy blocks: served from
// --html-dir with --allow-inline-scripts, such a page runs.  (A page of our
// own written that way, not the original: nothing of it is copied here.)
test("a web UI written with inline code runs with --allow-inline-scripts", async () => {
  const dir = mkdtempSync(join(tmpdir(), "qms-inline-"));
  writeFileSync(join(dir, "index.html"), "<!doctype html><html><head><title>inline</title>" +
    "<script>window.ranInline = true;</script></head><body>" +
    "<button id=\"b\" onclick=\"document.title = 'clicked'\">b</button></body></html>");
  const inline = await startServer({ extra: ["--html-dir", dir, "--allow-inline-scripts"] });
  const strict = await startServer({ extra: ["--html-dir", dir] });
  try {
    const p = await openPage(browser, inline.origin + "/");
    assert.equal(await p.evaluate(() => window.ranInline === true), true, "the inline script ran");
    await p.click("#b");
    await waitFor(async () => (await p.title()) === "clicked", "the inline handler ran");
    const q = await openPage(browser, strict.origin + "/");
    assert.equal(await q.evaluate(() => window.ranInline === true), false, "blocked without the option");
    await q.click("#b");
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(await q.title(), "inline");
    await p.context().close();
    await q.context().close();
  } finally {
    assert.deepEqual(await inline.stop(), { code: 0, sig: null });
    assert.deepEqual(await strict.stop(), { code: 0, sig: null });
    rmSync(dir, { recursive: true, force: true });
  }
});
