// hostile.test.mjs - the web UI against a malicious server. The real server
// runs; between it and Chromium sits the test's proxy (lib/hostile.mjs),
// which plays the server as an attacker would: it substitutes keys, sends
// ids that are not ids, replays, reorders, holds back and renames. One test
// per attack. Each asserts what the person sees (a warning, a held message,
// a refusal) and that no text encrypted under a key the person did not
// accept was ever put on the page. The list of attacks and their results is
// in docs/E2E.md, "Attacks tried".

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { request as httpRequest } from "node:http";
import { writeFileSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { startServer, launchBrowser, openPage, recordFrames, waitFor, uniq } from "./lib/harness.mjs";
import {
  register, login, formErrorOf, contact, openConversation, send, waitIncoming, sentRequests, safetyNumbersWith,
  markVerified, trustOf,
} from "./lib/ui.mjs";
import { hostileLink, rewriteUser, attackerKey, forged, serverMessageId, unusedUserId } from "./lib/hostile.mjs";

let server, browser;
const contexts = [];

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  assert.deepEqual(await server?.stop(), { code: 0, sig: null });
});

/** A person on their own device; hostile: their connection goes through the attacker's proxy. */
async function person(prefix, { hostile = false, page = null, name = uniq(prefix), signIn = register, path = "/",
  before = () => {} } = {}) {
  const p = page || await openPage(browser, null);
  if (!page) contexts.push(p.context());
  const link = hostile ? await hostileLink(p) : null;
  if (link) before(link);
  await p.goto(server.origin + path);
  await signIn(p, name);
  const session = JSON.parse(await p.evaluate(() => sessionStorage.getItem("qms1.session")));
  const key = await waitFor(() => sentRequests(p).filter((r) => r.pubKey).at(-1), "the published key").then((r) => r.pubKey);
  return { page: p, link, name, id: session.id, key };
}

async function closeAll() {
  while (contexts.length) await contexts.pop().close().catch(() => {});
}

/** The whole page as text, hidden parts included: what was put on the page at all. */
const pageText = (p) => p.evaluate(() => document.documentElement.textContent);

async function assertNeverShown(p, secret, what) {
  assert.ok(!(await pageText(p)).includes(secret), `${what}: "${secret}" was put on the page`);
}

test("a new contact's key substituted: the fingerprints do not match and the contact is not verified", async () => {
  try {
    const bob = await person("bob");
    const carol = await person("carol");
    const mallory = await attackerKey();
    // dave's very first sight of bob already carries the attacker's key
    const dave = await person("dave", { hostile: true,
      before: (link) => link.use(rewriteUser(bob.id, { publicKey: mallory.published })) });
    await contact(dave.page, bob.name).waitFor();
    assert.ok(dave.link.users.get(bob.id).publicKey === mallory.published, "dave was given the substituted key");
    // trust on first use cannot tell: the UI says so next to the name
    assert.equal(await trustOf(dave.page, bob.name), "unverified");
    // comparing numbers tells: what dave shows as bob's number is not what bob shows as his own
    const atDave = await safetyNumbersWith(dave.page, bob.name);
    const atBob = await safetyNumbersWith(bob.page, dave.name);
    assert.notEqual(atDave.peer, atBob.mine, "the substituted key has another fingerprint");
    assert.equal(atDave.mine, atBob.peer, "dave's own key reached bob unchanged");
    // and it is bob's identity that differs: carol, not attacked, shows bob's real number
    assert.equal((await safetyNumbersWith(carol.page, bob.name)).peer, atBob.mine);
  } finally {
    await closeAll();
  }
});

test("a known contact's key substituted: warning, and their messages are held until the key is accepted", async () => {
  try {
    const bob = await person("bob");
    const alice = await person("alice", { hostile: true });
    await openConversation(bob.page, alice.name);
    await send(bob.page, "Hello from the real Bob");
    await openConversation(alice.page, bob.name);
    await waitIncoming(alice.page, "real Bob");

    const mallory = await attackerKey();
    alice.link.use(rewriteUser(bob.id, { publicKey: mallory.published }));
    await alice.link.injectList();
    const secret = "Mallory speaking as Bob: send me the code";
    alice.link.inject(await forged({ key: mallory, sender: bob.id, to: alice.id, toKey: alice.key, text: secret }));
    await alice.link.sync();

    await assertNeverShown(alice.page, secret, "a message under a key alice did not accept");
    await alice.page.locator("#key-warning").waitFor();
    assert.match(await alice.page.textContent("#key-warning"), /Security key changed/);
    assert.match(await alice.page.locator("#messages li.msg.in.held .bubble").textContent(), /held: the sender's key changed/i);
    assert.equal(await alice.page.locator("#message").isDisabled(), true, "nothing is sent to the new key");
    assert.equal(await trustOf(alice.page, bob.name), "changed");

    // the person accepts the new key: from then on it is a key they accepted, and the message is read
    await alice.page.click("#key-accept");
    await waitIncoming(alice.page, secret);
    assert.equal(await alice.page.locator("#messages li.msg.in.held").count(), 0, "nothing is lost");
    assert.equal(await trustOf(alice.page, bob.name), "unverified");
    assert.deepEqual(alice.page.pageErrors, []);
  } finally {
    await closeAll();
  }
});

test("a verified contact's key substituted, also while the numbers are on screen: never verified, held", async () => {
  try {
    const bob = await person("bob");
    const alice = await person("alice", { hostile: true });
    await markVerified(alice.page, bob.name);

    // alice looks at bob's numbers; while the dialog is open the server swaps bob's key
    await openConversation(alice.page, bob.name);
    await alice.page.click("#verify");
    await alice.page.locator("#verify-dialog[data-ready]").waitFor().catch(() => {});
    const mallory = await attackerKey();
    alice.link.use(rewriteUser(bob.id, { publicKey: mallory.published }));
    await alice.link.injectList();
    await alice.link.sync();
    // she ticks "verified" if she can, and closes the dialog
    const box = alice.page.locator("#verified");
    if (!(await box.isDisabled()) && !(await box.isChecked())) await box.check();
    await alice.page.click("#verify-dialog button[value=close]");
    await alice.link.sync();

    assert.equal(await alice.page.locator("#key-warning").isVisible(), true,
      "the swapped key is not accepted by closing a dialog that showed the old key's numbers");
    assert.equal(await trustOf(alice.page, bob.name), "changed", "not verified: the mark was for bob's real key");
    const secret = "Verified? Not with this key";
    alice.link.inject(await forged({ key: mallory, sender: bob.id, to: alice.id, toKey: alice.key, text: secret }));
    await alice.link.sync();
    await assertNeverShown(alice.page, secret, "a message under the swapped key");
    await alice.page.locator("#messages li.msg.in.held").waitFor();

    // the server goes back to bob's real key: verified again, and bob's own messages read as before
    alice.link.rules.clear();
    await alice.link.injectList((users) => users.map((u) => (u.id === bob.id ? { ...u, publicKey: bob.key } : u)));
    await alice.link.sync();
    assert.equal(await trustOf(alice.page, bob.name), "verified");
    await openConversation(bob.page, alice.name);
    await send(bob.page, "It is really me");
    await waitIncoming(alice.page, "It is really me");
    await assertNeverShown(alice.page, secret, "the held message after the key went back");
  } finally {
    await closeAll();
  }
});

test("ids __proto__ and constructor: refused, and they cannot switch off the key-change warning", async () => {
  try {
    const bob = await person("bob");
    const alice = await person("alice", { hostile: true });
    await markVerified(alice.page, bob.name);
    const [k1, k2] = [await attackerKey(), await attackerKey()];
    // the same id twice with two keys: with plain objects this wrote key and previous onto Object.prototype
    await alice.link.injectList((users) => [...users,
      { id: "__proto__", name: "proto one", publicKey: k1.published },
      { id: "__proto__", name: "proto two", publicKey: k2.published },
      { id: "constructor", name: "ctor", publicKey: k2.published },
      { id: "hasOwnProperty", name: "own", publicKey: k2.published }]);
    await alice.link.sync();
    // then bob's key becomes K1, "the key we trusted before"
    alice.link.use(rewriteUser(bob.id, { publicKey: k1.published }));
    await alice.link.injectList();
    const secret = "Prototype says: I am still verified Bob";
    alice.link.inject(await forged({ key: k1, sender: bob.id, to: alice.id, toKey: alice.key, text: secret }));
    await alice.link.sync();

    await assertNeverShown(alice.page, secret, "a message under the key smuggled in through __proto__");
    const proto = await alice.page.evaluate(() => {
      const o = {};
      return ["key", "previous", "name", "verified", "changedAt", "pending"].filter((k) => o[k] !== undefined);
    });
    assert.deepEqual(proto, [], "nothing was written onto Object.prototype");
    await openConversation(alice.page, bob.name);
    await alice.page.locator("#key-warning").waitFor();
    assert.equal(await trustOf(alice.page, bob.name), "changed");
    await alice.page.locator("#messages li.msg.in.held").waitFor();
    for (const id of ["__proto__", "constructor", "hasOwnProperty"])
      assert.equal(await alice.page.locator(`#contacts li[data-id="${id}"]`).count(), 0, `no contact ${id}`);
    assert.deepEqual(alice.page.pageErrors, []);
  } finally {
    await closeAll();
  }
});

test("an old ciphertext replayed into a fresh tab is not shown as new", async () => {
  try {
    const bob = await person("bob");
    const alice = await person("alice", { hostile: true });
    const original = "The meeting moved to Thursday";
    await openConversation(bob.page, alice.name);
    await send(bob.page, original);
    await openConversation(alice.page, bob.name);
    await waitIncoming(alice.page, original);
    const recorded = alice.link.fromServer.find((f) => f.data && f.data.event === 2 && f.data.sender === bob.id);
    assert.ok(recorded, "the attacker recorded the ciphertext");

    // a new tab of the same browser (same keys, same localStorage, a fresh sessionStorage)
    const tab = await alice.page.context().newPage();
    recordFrames(tab);
    tab.pageErrors = [];
    tab.on("pageerror", (e) => tab.pageErrors.push(String(e)));
    await alice.page.close();
    const fresh = await person("alice", { hostile: true, page: tab, name: alice.name, signIn: login });
    await contact(fresh.page, bob.name).waitFor();
    // the server sends the old ciphertext again, as a new message with a new id and time
    fresh.link.inject({ ...recorded.data, id: serverMessageId(), timestamp: Date.now() });
    await fresh.link.sync();
    await openConversation(fresh.page, bob.name);
    assert.equal(await fresh.page.locator("#messages li.msg.in", { hasText: original }).count(), 0,
      "the replay is not shown as a new message");
    await fresh.page.locator('#messages li.system[data-kind="replay"]').waitFor();
    // bob's next message still arrives
    await send(bob.page, "And this one is new");
    await waitIncoming(fresh.page, "this one is new");
    assert.deepEqual(fresh.page.pageErrors, []);
  } finally {
    await closeAll();
  }
});

test("the time inside the ciphertext is shown, and a server time far from it is flagged", async () => {
  try {
    const bob = await person("bob");
    const alice = await person("alice", { hostile: true });
    const shift = 3 * 3600 * 1000;
    alice.link.use((d) => (d && d.event === 2 && d.sender === bob.id ? { ...d, timestamp: d.timestamp + shift } : undefined));
    await openConversation(bob.page, alice.name);
    const sentAt = Date.now();
    await send(bob.page, "What time is it for you?");
    await openConversation(alice.page, bob.name);
    await waitIncoming(alice.page, "What time is it");
    const li = alice.page.locator("#messages li.msg.in", { hasText: "What time is it" });
    const shown = Date.parse(await li.locator("time").getAttribute("datetime"));
    assert.ok(Math.abs(shown - sentAt) < 60000, `the time shown is the sender's (${new Date(shown).toISOString()})`);
    assert.ok(await li.getAttribute("data-skew"), "the gap to the server's time is flagged");
    assert.match(await li.locator(".flag.skew").textContent(), /server dated it .*3 h/);
  } finally {
    await closeAll();
  }
});

test("a ciphertext with its sender id swapped is refused, and the swap is named", async () => {
  try {
    const bob = await person("bob");
    const carol = await person("carol");
    const alice = await person("alice", { hostile: true });
    await contact(alice.page, carol.name).waitFor();
    await contact(alice.page, bob.name).waitFor();
    alice.link.use((d) => (d && d.event === 2 && d.sender === bob.id ? { ...d, sender: carol.id } : undefined));
    const secret = "Only Bob wrote this";
    await openConversation(bob.page, alice.name);
    await send(bob.page, secret);
    await alice.link.seen((d) => d && d.event === 2 && d.sender === bob.id, "bob's message at the proxy");
    await alice.link.sync();
    await assertNeverShown(alice.page, secret, "a message under another sender's id");
    await openConversation(alice.page, carol.name);
    const bubble = alice.page.locator("#messages li.msg.in .bubble.error");
    await bubble.waitFor();
    assert.match(await bubble.textContent(), new RegExp(`names ${carol.name} as its sender but was encrypted with the key of ${bob.name}`));
  } finally {
    await closeAll();
  }
});

test("messages delivered out of order are flagged", async () => {
  try {
    const bob = await person("bob");
    const alice = await person("alice", { hostile: true });
    let held = null;
    let done = false;
    alice.link.use((d, t) => {
      if (done || !d || d.event !== 2 || d.sender !== bob.id) return undefined;
      if (!held) { held = t; return null; }         // hold back the first
      done = true;
      return [t, held];                              // the second, then the first
    });
    await openConversation(bob.page, alice.name);
    await send(bob.page, "First: the plan");
    await send(bob.page, "Second: go ahead");
    await openConversation(alice.page, bob.name);
    await waitIncoming(alice.page, "First: the plan");
    await waitIncoming(alice.page, "Second: go ahead");
    const texts = await alice.page.locator("#messages li.msg.in .bubble").allTextContents();
    assert.deepEqual(texts, ["Second: go ahead", "First: the plan"], "they arrived in this order");
    const late = alice.page.locator("#messages li.msg.in", { hasText: "First: the plan" });
    assert.equal(await late.getAttribute("data-late"), "1");
    assert.match(await late.textContent(), /sent before the message above/);
    assert.equal(await alice.page.locator("#messages li.msg.in", { hasText: "Second" }).getAttribute("data-late"), null);
  } finally {
    await closeAll();
  }
});

test("a contact renamed to a look-alike of a verified one does not borrow its trust", async () => {
  try {
    const bob = await person("bob");
    const mallory = await person("mal");
    const alice = await person("alice", { hostile: true });
    await markVerified(alice.page, bob.name);
    // Greek omicron for the first "o": looks the same
    const fake = bob.name.replace("o", "\u03bf");
    alice.link.use(rewriteUser(mallory.id, { name: fake }));
    await alice.link.injectList();
    await alice.link.sync();
    const real = alice.page.locator(`#contacts li[data-id="${bob.id}"]`);
    const copy = alice.page.locator(`#contacts li[data-id="${mallory.id}"]`);
    assert.equal(await copy.getAttribute("data-name"), fake);
    assert.equal(await real.getAttribute("data-trust"), "verified");
    assert.equal(await copy.getAttribute("data-trust"), "unverified");
    assert.match(await copy.textContent(), /Not verified/);
    assert.match(await copy.locator(".preview").textContent(), new RegExp(`Looks like ${bob.name} \\(verified\\)`));
    await copy.locator("button").click();
    await alice.page.locator("#peer-name", { hasText: fake }).waitFor();
    assert.equal(await alice.page.locator("#peer-trust .trust").getAttribute("data-trust"), "unverified");
    assert.match(await alice.page.textContent("#peer-lookalike"), /Looks like/);
    assert.match(await alice.page.locator('#messages li.system[data-kind="rename"]').textContent(),
      new RegExp(`now lists ${mallory.name} as ${fake}`));
  } finally {
    await closeAll();
  }
});

test("registering a name confusable with an existing one is refused by the server", async () => {
  try {
    const bob = await person("bob");
    const p = await openPage(browser, server.origin + "/");
    contexts.push(p.context());
    const cyrillic = bob.name.replace("o", "\u043e");   // Cyrillic o inside Latin letters
    assert.match(await formErrorOf(p, cyrillic, "correct horse battery", { register: true }), /scripts|similar/);
    const fullwidth = [...bob.name].map((ch) => String.fromCodePoint(ch.codePointAt(0) + 0xfee0)).join("");
    // the page normalises (NFKC) before it sends: fullwidth letters are the same name
    assert.equal(await formErrorOf(p, fullwidth, "correct horse battery", { register: true }), "Username already exists.");
  } finally {
    await closeAll();
  }
});

test("a dropped key-change event: the new key's messages are held, then read once the key is shown and accepted", async () => {
  try {
    const bob = await person("bob");
    const alice = await person("alice", { hostile: true });
    await openConversation(alice.page, bob.name);
    await send(alice.page, "Before your new laptop");
    await openConversation(bob.page, alice.name);
    await waitIncoming(bob.page, "Before your new laptop");
    // the server keeps showing alice bob's old key
    const drop = alice.link.use(rewriteUser(bob.id, { publicKey: bob.key }));
    const bob2 = await person("bob", { name: bob.name, signIn: login });
    assert.notEqual(bob2.key, bob.key);
    await openConversation(bob2.page, alice.name);
    const text = "Writing from my new laptop";
    await send(bob2.page, text);
    await alice.link.seen((d) => d && d.event === 2 && d.sender === bob.id, "bob's new message at the proxy");
    await alice.link.sync();
    await assertNeverShown(alice.page, text, "a message under a key alice was never shown");
    const held = alice.page.locator("#messages li.msg.in.held .bubble");
    await held.waitFor();
    assert.match(await held.textContent(), /key the server has not shown you/);
    // the server stops hiding it: the change shows, alice accepts, and the message is read
    drop();
    await alice.link.injectList((users) => users.map((u) => (u.id === bob.id ? { ...u, publicKey: bob2.key } : u)));
    await alice.page.locator("#key-warning").waitFor();
    await alice.page.click("#key-accept");
    await waitIncoming(alice.page, text);
    assert.equal(await alice.page.locator("#messages li.msg.in.held").count(), 0);
  } finally {
    await closeAll();
  }
});

test("malformed keys, ids and frames: each refused with a visible outcome, nothing stored, nothing breaks", async () => {
  try {
    const bob = await person("bob");
    const alice = await person("alice", { hostile: true });
    const m = await attackerKey();
    const head = Buffer.from("3059301306072a8648ce3d020106082a8648ce3d030107034200", "hex");
    const offCurve = "qms1:p256:" + Buffer.concat([head, Buffer.from([4]), Buffer.alloc(64, 0xff)]).toString("base64");
    const short = "qms1:p256:" + Buffer.alloc(90, 7).toString("base64");
    const garbage = "qms1:p256:!!!!";
    const ids = [unusedUserId(), unusedUserId(), unusedUserId(), unusedUserId()];
    await alice.link.injectList((users) => [...users,
      { id: ids[0], name: "badkey-a", publicKey: garbage },
      { id: ids[1], name: "badkey-b", publicKey: offCurve },
      { id: ids[2], name: "badkey-c", publicKey: short },
      { id: 42, name: "numeric id", publicKey: m.published },
      { id: "not-a-uuid", name: "free text id", publicKey: m.published },
      { id: ids[0].toUpperCase(), name: "upper case id", publicKey: m.published },
      { id: "x".repeat(70000), name: "long id" },
      null, "a string", [1, 2, 3],
      { id: ids[3], name: "bell\u0007name", publicKey: m.published },
      { id: unusedUserId(), name: { toString: 1 }, publicKey: m.published },
      { id: unusedUserId(), name: "object key", publicKey: { k: 1 } },
      { id: bob.id, name: bob.name, publicKey: m.published }]);       // bob twice: the second is refused
    for (const frame of [
      { valid: true, event: 2, sender: "__proto__", message: "x" },
      { valid: true, event: 2, sender: ids[0], message: 5 },
      { valid: true, event: 2, sender: bob.id, message: "{not json", id: "m1" },
      { valid: true, event: 2, sender: bob.id, message: '{"v":"qms1","alg":"p256-aes256gcm","id":1}' },
      { valid: true, event: 2, sender: bob.id, message: "x".repeat(70000) },
      { valid: true, event: 5, id: "__proto__", status: "__proto__" },
      { valid: true, event: 6, changes: "nope" },
      { valid: true, event: 6, changes: [{ op: "join", id: "__proto__", name: "p", publicKey: m.published },
        { op: "leave", id: {} }, { op: "explode", id: ids[1] }] },
      { valid: true, event: 4, users: { length: 5 } },
      { valid: true, event: 1, token: 5 },
      [1, 2, 3], "not json at all", { event: "2" }, { valid: false, event: 2, error: { html: "<b>x</b>" } },
    ]) alice.link.inject(frame);
    await alice.link.sync();

    assert.deepEqual(alice.page.pageErrors, [], "no uncaught error");
    const stored = await alice.page.evaluate(() => Object.keys(localStorage).map((k) => localStorage.getItem(k)).join("\n"));
    for (const k of [garbage, offCurve, short]) assert.ok(!stored.includes(k), `a malformed key was stored: ${k.slice(0, 30)}`);
    for (const n of ["badkey-a", "badkey-b", "badkey-c"]) {
      assert.equal(await trustOf(alice.page, n), "invalid", n);
      await openConversation(alice.page, n);
      assert.match(await alice.page.textContent("#conv-notice"), /not valid/);
      assert.equal(await alice.page.locator("#message").isDisabled(), true);
    }
    for (const n of ["numeric id", "free text id", "upper case id", "long id", "object key"])
      assert.equal(await contact(alice.page, n).count(), 0, `no contact "${n}"`);
    assert.equal(await alice.page.locator('#contacts li[data-name^="bell"]').count(), 0, "a name with a control character");
    assert.ok(await alice.page.locator(".toast", { hasText: /invalid user entr/ }).count() > 0, "the person is told");
    assert.equal(await contact(alice.page, bob.name).getAttribute("data-trust"), "unverified", "bob keeps his real key");
    const proto = await alice.page.evaluate(() => Object.getOwnPropertyNames(Object.prototype).filter(
      (k) => !["constructor", "__defineGetter__", "__defineSetter__", "hasOwnProperty", "__lookupGetter__",
        "__lookupSetter__", "isPrototypeOf", "propertyIsEnumerable", "toString", "valueOf", "__proto__",
        "toLocaleString"].includes(k)));
    assert.deepEqual(proto, []);
    // and the chat still works both ways
    await openConversation(bob.page, alice.name);
    await send(bob.page, "Still working after all that");
    await openConversation(alice.page, bob.name);
    await waitIncoming(alice.page, "Still working after all that");
    await send(alice.page, "Yes, still here");
    await waitIncoming(bob.page, "Yes, still here");
  } finally {
    await closeAll();
  }
});

function getHeaders(port, path) {
  return new Promise((resolve, reject) => {
    httpRequest({ host: "127.0.0.1", port, path, method: "GET" }, (res) => {
      res.resume();
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers }));
    }).on("error", reject).end();
  });
}

test("the page's policy: an injected inline script does not run, framing is refused, the UI works", async () => {
  try {
    const { headers } = await getHeaders(server.httpPort, "/");
    const csp = headers["content-security-policy"] || "";
    for (const d of ["default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'",
      "base-uri 'none'", `connect-src 'self' ws://127.0.0.1:${server.chatPort}`, "require-trusted-types-for 'script'"])
      assert.ok(csp.includes(d), `Content-Security-Policy has ${d}: ${csp}`);
    assert.ok(!csp.includes("unsafe-inline") && !csp.includes("unsafe-eval"), csp);
    assert.equal(headers["x-frame-options"], "DENY");
    assert.equal(headers["cross-origin-opener-policy"], "same-origin");
    assert.equal(headers["strict-transport-security"], undefined, "no HSTS over plain HTTP");

    // a copy of the page with an injected inline script and an inline handler (as an XSS would put there)
    const page = readFileSync(join(server.htmlDir, "index.html"), "utf8").replace("</body>",
      '<script>window.injected = "inline script ran";</script>' +
      '<img src="/nothing-here.png" onerror="window.injected2 = \'inline handler ran\'"></body>');
    writeFileSync(join(server.htmlDir, "injected.html"), page);
    const p = await openPage(browser, null);
    contexts.push(p.context());
    const violations = [];
    p.on("console", (msg) => { if (/Content Security Policy/.test(msg.text())) violations.push(msg.text()); });
    const alice = await person("alice", { page: p, path: "/injected.html" });
    assert.deepEqual(await p.evaluate(() => [window.injected, window.injected2]), [undefined, undefined]);
    await waitFor(() => violations.length >= 2, "the violations in the console");
    // Trusted Types: no HTML from a string
    assert.equal(await p.evaluate(() => { try { document.body.insertAdjacentHTML("beforeend", "<b>x</b>"); return "inserted"; } catch (e) { return e.name; } }), "TypeError");
    // and the UI works under the policy, connection and all
    const bob = await person("bob");
    await openConversation(alice.page, bob.name);
    await send(alice.page, "Under a strict policy");
    await openConversation(bob.page, alice.name);
    await waitIncoming(bob.page, "Under a strict policy");
    assert.deepEqual(alice.page.pageErrors, []);

    // another page may not frame the UI
    const framer = await openPage(browser, null);
    contexts.push(framer.context());
    // (the load event of the outer page waits for the frame, loaded or refused)
    await framer.setContent(`<iframe src="${server.origin}/" width="400" height="300"></iframe>`, { waitUntil: "load" });
    const frame = framer.frames().find((f) => f !== framer.mainFrame());
    assert.ok(frame, "the frame exists");
    assert.equal(await frame.locator("#auth").count(), 0, "the UI did not load inside a frame");
  } finally {
    await closeAll();
  }
});
