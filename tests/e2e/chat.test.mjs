// chat.test.mjs - the web UI in real Chromium against the real server:
// registration and its errors, two (three) people chatting both ways with
// unread counts and timestamps, a reload that resumes the session, the
// key-change warning when someone signs in from a new device, logout, server
// errors shown to the person, and that no plaintext ever leaves a browser.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import {
  startServer, launchBrowser, openPage, allSentFrames, waitFor, recordFrames, interceptSockets, framesOn,
} from "./lib/harness.mjs";
import {
  PASSWORD, register, login, formErrorOf, contact, openConversation, send, waitIncoming, unreadOf,
  safetyNumbersWith, markVerified, trustOf, sentRequests, waitConnected,
} from "./lib/ui.mjs";

let server, browser;
const pages = [];                 // every page opened, for the plaintext check
const plaintexts = [];            // every message text typed in any test
let alice, bob, carol;

const say = (t) => { plaintexts.push(t); return t; };

async function newDevice(path = "/") {
  const p = await openPage(browser, server.origin + path);
  pages.push(p);
  return p;
}

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  const exit = await server?.stop();
  assert.deepEqual(exit, { code: 0, sig: null }, "the server ran to the end and stopped cleanly");
});

test("forms validate before anything is sent, and server errors are shown", async () => {
  const p = await newDevice();
  await waitConnected(p);
  assert.equal(await p.textContent("#form-error"), "");
  assert.match(await formErrorOf(p, "", PASSWORD, { register: true }), /Enter a name/);
  assert.equal(await p.getAttribute("#name", "maxlength"), "64");
  assert.match(await formErrorOf(p, "zero\u200bwidth", PASSWORD, { register: true }), /invisible/);
  assert.match(await formErrorOf(p, "dora", PASSWORD, { register: true, confirm: PASSWORD + "!" }), /do not match/);
  assert.match(await formErrorOf(p, "dora", "short", { register: true }), /at least 8/);
  assert.equal(sentRequests(p).length, 0, "nothing was sent for an invalid form");

  await register(p, "dora");
  await p.click("#logout");
  await p.locator('body[data-view="auth"]').waitFor();
  // errors from the server, word for word
  assert.equal(await formErrorOf(p, "DORA", PASSWORD, { register: true }), "Username already exists.");
  assert.equal(await formErrorOf(p, "dora", "wrong password"), "User or password is invalid.");
  assert.equal(await formErrorOf(p, "nobody", PASSWORD), "User or password is invalid.");
  // the password never leaves as typed: the original client's SHA-256 hex digest goes instead
  // (the recorder hears of a sent frame through its own channel: wait for it, do not assume it)
  const logins = await waitFor(() => {
    const l = sentRequests(p).filter((r) => r.password !== undefined);
    return l.length >= 4 && l;
  }, "the four sign-in requests in the recorder");
  for (const r of logins) assert.match(r.password, /^[0-9a-f]{64}$/);
  assert.ok(!allSentFrames(p).some((f) => f.payload.includes(PASSWORD)));
  await p.context().close();
});

test("three people register, see each other and chat both ways with unread counts and times", async () => {
  alice = await newDevice();
  bob = await newDevice();
  carol = await newDevice();
  await register(alice, "alice");
  await register(bob, "bob");
  await register(carol, "carol");
  for (const [p, others] of [[alice, ["bob", "carol"]], [bob, ["alice", "carol"]], [carol, ["alice", "bob"]]])
    for (const n of others) await contact(p, n).waitFor();
  assert.equal(await alice.textContent("#me-name"), "alice");
  assert.equal(await contact(alice, "alice").count(), 0, "you are not your own contact");
  assert.equal((await alice.textContent("#online-count")).trim(), "2");

  // the published key is ours, in the user list every client receives
  const reg = sentRequests(alice).find((r) => r.action === 1);
  assert.match(reg.pubKey, /^qms1:p256:/);

  await openConversation(alice, "bob");
  assert.match(await alice.textContent("#peer-state"), /end-to-end encrypted/);
  await send(alice, say("Hi Bob! Are we still on for lunch at noon?"));
  await send(alice, say("I booked the table by the window."));
  // bob has not opened the conversation: two unread, with the time of the last one
  await waitFor(async () => (await unreadOf(bob, "alice")) === 2, "2 unread at bob");
  assert.match(await contact(bob, "alice").locator(".contact-time").textContent(), /\d{1,2}:\d{2}/);
  assert.match(await contact(bob, "alice").locator(".preview").textContent(), /window/);
  assert.equal(await bob.title(), "(2) QMessage");

  await openConversation(bob, "alice");
  assert.equal(await unreadOf(bob, "alice"), 0, "opening the conversation clears the count");
  await waitIncoming(bob, "lunch at noon");
  await waitIncoming(bob, "by the window");
  const times = await bob.locator("#messages li.msg.in time").allTextContents();
  assert.equal(times.length, 2);
  for (const t of times) assert.match(t, /\d{1,2}:\d{2}/);
  assert.match(await bob.locator("#messages li.msg.in time").first().getAttribute("datetime"), /^\d{4}-\d\d-\d\dT/);

  await send(bob, say("Yes, see you there. I'll bring the slides."));
  await waitIncoming(alice, "bring the slides");
  assert.equal(await unreadOf(alice, "bob"), 0, "an open conversation has no unread count");

  await openConversation(carol, "alice");
  await send(carol, say("Alice, can you review my pull request today?"));
  await waitFor(async () => (await unreadOf(alice, "carol")) === 1, "1 unread from carol at alice");
  // the conversations are separate
  assert.equal(await alice.locator("#messages li.msg", { hasText: "pull request" }).count(), 0);

  // each side shows both fingerprints: what alice shows as bob's number is what bob shows as his own
  const fromAlice = await safetyNumbersWith(alice, "bob");
  const fromBob = await safetyNumbersWith(bob, "alice");
  assert.match(fromAlice.peer, /^(\d{5} ){5}\d{5}$/);
  assert.match(fromAlice.mine, /^(\d{5} ){5}\d{5}$/);
  assert.equal(fromAlice.peer, fromBob.mine);
  assert.equal(fromAlice.mine, fromBob.peer);
  assert.notEqual(fromAlice.peer, fromAlice.mine);
  // a fingerprint belongs to one identity: carol sees the same number for alice as bob does
  assert.equal((await safetyNumbersWith(carol, "alice")).peer, fromBob.peer);
  // verifying shows next to the name, in the list and the conversation
  assert.equal(await trustOf(alice, "bob"), "unverified");
  await markVerified(alice, "bob");
  assert.equal(await trustOf(alice, "bob"), "verified");
  assert.equal(await trustOf(alice, "carol"), "unverified");

  await openConversation(alice, "bob");
  if (process.env.QMS_SCREENSHOT) {
    await alice.evaluate(() => document.activeElement && document.activeElement.blur());
    await alice.screenshot({ path: process.env.QMS_SCREENSHOT });
  }
  for (const p of [alice, bob, carol]) assert.deepEqual(p.pageErrors, []);
});

test("a reload resumes the session with AuthorizeRequest and keeps the conversation", async () => {
  const token = JSON.parse(await bob.evaluate(() => sessionStorage.getItem("qms1.session"))).token;
  // the connections the reloaded page opens; a receipt of the old page may still be on its way
  const mark = bob.sockets.length;
  await bob.reload();
  await bob.locator('body[data-view="chat"]').waitFor();
  const resumed = await waitFor(() => framesOn(bob, mark).length && framesOn(bob, mark), "the new connection's requests");
  assert.equal(resumed.length, 1, "one new connection");
  assert.deepEqual(resumed[0][0], { action: 4, token, receipts: true, presence: "delta" });
  assert.ok(!resumed[0].some((r) => r.action === 0 || r.action === 1), "no new login");
  await contact(bob, "alice").waitFor();
  await openConversation(bob, "alice");
  await waitIncoming(bob, "lunch at noon");   // history of this tab survived
  await alice.locator("#contacts li:not(.offline)[data-name=\"bob\"]").waitFor();
  await openConversation(alice, "bob");
  await send(alice, say("Welcome back, Bob."));
  await waitIncoming(bob, "Welcome back");
  await send(bob, say("Thanks, the page reloaded."));
  await waitIncoming(alice, "page reloaded");
  // no key change for a reload: the device key is the same
  assert.equal(await alice.locator("#key-warning").isHidden(), true);
});

test("after a server restart both pages reconnect and resume their sessions", async () => {
  // Connections opened from here on are the new ones. Frames of the old
  // connections (a receipt of the previous test still in flight) are not
  // what this test is about, so it looks at each new connection by itself.
  const marks = [alice, bob].map((p) => p.sockets.length);
  const how = await server.restart(700);
  assert.deepEqual(how, { code: 0, sig: null }, "a clean shutdown on SIGTERM");
  for (const p of [alice, bob]) {
    await p.locator('body[data-conn="open"]').waitFor({ timeout: 20000 });
  }
  // each page sent AuthorizeRequest first on its new connection, never a login
  for (const [i, p] of [alice, bob].entries()) {
    const fresh = await waitFor(() => framesOn(p, marks[i]).length && framesOn(p, marks[i]), "a new connection's requests");
    for (const requests of fresh) {
      assert.equal(requests[0].action, 4, `first request on a new connection: ${JSON.stringify(requests[0])}`);
      assert.ok(!requests.some((r) => r.action === 0 || r.action === 1), "no new login");
    }
  }
  await alice.locator('#contacts li:not(.offline)[data-name="bob"]').waitFor();
  await openConversation(alice, "bob");
  await openConversation(bob, "alice");
  await send(alice, say("Still there after the server restart?"));
  await waitIncoming(bob, "server restart");
  await openConversation(carol, "alice"); // carol resumed too
  await carol.locator('body[data-conn="open"]').waitFor({ timeout: 20000 });
});

test("signing in from a new device changes the key: the other side is warned", async () => {
  const oldNumber = (await safetyNumbersWith(alice, "bob")).peer;
  const bob2 = await newDevice();
  await login(bob2, "bob");
  // the old device is told it was signed in elsewhere and stops
  await bob.locator('body[data-conn="closed"]').waitFor();
  assert.match(await bob.textContent("#conn-banner-text"), /somewhere else/);

  await openConversation(alice, "bob");
  await alice.locator("#key-warning").waitFor();
  assert.match(await alice.textContent("#key-warning"), /Security key changed/);
  assert.match(await contact(alice, "bob").locator(".preview").textContent(), /key changed/);
  assert.equal(await alice.locator("#message").isDisabled(), true, "no sending until the change is seen");
  assert.match(await alice.locator("#messages li.system").last().textContent(), /security key changed/);
  assert.equal(await trustOf(alice, "bob"), "changed", "no longer verified: the mark was for the old key");
  const newNumber = (await safetyNumbersWith(alice, "bob")).peer;
  assert.notEqual(newNumber, oldNumber);
  assert.equal(newNumber, (await safetyNumbersWith(bob2, "alice")).mine);

  await alice.locator("#key-warning").waitFor();
  await alice.click("#key-accept");
  await alice.locator("#key-warning").waitFor({ state: "hidden" });
  assert.equal(await trustOf(alice, "bob"), "unverified", "accepted, not verified: nobody compared the new numbers");
  await send(alice, say("Is this really you on the new laptop?"));
  await waitIncoming(bob2, "new laptop");
  await send(bob2, say("Yes, it is me, new laptop."));
  await waitIncoming(alice, "it is me");
  // the warning does not come back for the accepted key, even after a reload
  await alice.reload();
  await alice.locator('body[data-view="chat"]').waitFor();
  await openConversation(alice, "bob");
  await waitIncoming(alice, "it is me");
  assert.equal(await alice.locator("#key-warning").isHidden(), true);
  bob = bob2;
});

test("a message altered or replayed on the way is caught", async () => {
  // mallory's page talks through the test, which plays a malicious server
  const mallory = await browser.newContext().then((c) => c.newPage());
  recordFrames(mallory);
  pages.push(mallory);
  let mode = "pass";
  await interceptSockets(mallory, {
    fromPage(text) {
      const r = JSON.parse(text);
      if (r.action !== 3 || mode === "pass") return text;
      if (mode === "replay") return [text, text, text];
      const e = JSON.parse(r.message);
      const ct = Buffer.from(e.ct, "base64url");
      ct[5] ^= 0x40;
      e.ct = ct.toString("base64url");
      return JSON.stringify({ ...r, message: JSON.stringify(e) });
    },
  });
  await mallory.goto(server.origin + "/");
  await register(mallory, "mallory");
  await openConversation(mallory, "carol");
  mode = "replay";
  await send(mallory, say("Replayed three times on the wire"));
  await openConversation(carol, "mallory");
  await waitIncoming(carol, "Replayed three times");
  // A later message passes the same way: once carol shows it, she has handled
  // every copy before it (one connection, in order), so the count is final.
  mode = "pass";
  await send(mallory, say("A marker after the replays"));
  await waitIncoming(carol, "marker after the replays");
  assert.equal(await carol.locator("#messages li.msg.in", { hasText: "Replayed three times" }).count(), 1,
    "a replay is shown once");
  mode = "tamper";
  await send(mallory, say("This one is altered on the wire"));
  await carol.locator("#messages li.msg.in .bubble.error", { hasText: "cannot decrypt" }).waitFor();
  assert.match(await carol.locator("#messages li.msg.in .bubble.error").textContent(), /altered/);
  assert.equal(await carol.locator("#messages li.msg.in", { hasText: "altered on the wire" }).count(), 0);
  await mallory.context().close();
});

test("a message to someone offline waits on the server and arrives when they sign in", async () => {
  const eve = await newDevice();
  await register(eve, "eve");
  const dora = await newDevice();
  await login(dora, "dora");
  await contact(eve, "dora").waitFor();
  await openConversation(eve, "dora");
  await send(eve, say("Hello Dora, nice to meet you"));
  await eve.locator('#messages li.msg.out[data-ack="received"]').waitFor();
  assert.equal(await eve.locator("#messages li.msg.out .ack").last().textContent(), " · ✓✓");
  await dora.click("#logout");
  await eve.locator('#contacts li.offline[data-name="dora"]').waitFor();
  assert.match(await eve.textContent("#conv-notice"), /wait on the server, encrypted/);
  await send(eve, say("Read this when you are back, Dora"));
  await eve.locator('#messages li.msg.out[data-ack="stored"]', { hasText: "when you are back" }).waitFor();
  // dora signs in again on the same device (same key) and gets it, decrypted, with its time
  await login(dora, "dora");
  await contact(dora, "eve").waitFor();
  await waitFor(async () => (await unreadOf(dora, "eve")) === 1, "the stored message as unread");
  await openConversation(dora, "eve");
  await waitIncoming(dora, "when you are back");
  assert.match(await dora.locator("#messages li.msg.in time").last().textContent(), /\d{1,2}:\d{2}/);
  // her receipt reaches eve as the second acknowledgement
  await eve.locator('#messages li.msg.out[data-ack="received"]', { hasText: "when you are back" }).waitFor();
  await dora.context().close();
  await eve.context().close();
});

test("a message the server rejects is marked and the reason shown", async () => {
  // frank's page talks through the test, which sends his next message to a user id that does not exist
  const frank = await browser.newContext().then((c) => c.newPage());
  recordFrames(frank);
  pages.push(frank);
  let redirect = false;
  await interceptSockets(frank, {
    fromPage(text) {
      const r = JSON.parse(text);
      if (!redirect || r.action !== 3) return text;
      return JSON.stringify({ ...r, target: "00000000-0000-4000-8000-000000000000" });
    },
  });
  await frank.goto(server.origin + "/");
  await register(frank, "frank");
  await openConversation(frank, "carol");
  redirect = true;
  await frank.locator("#message").fill(say("This goes nowhere, sadly"));
  await frank.locator("#message").press("Enter");
  await frank.locator(".toast.error", { hasText: "Not delivered: Unknown recipient." }).waitFor();
  await frank.locator("#messages li.msg.out.failed", { hasText: "Not delivered: Unknown recipient." }).waitFor();
  await frank.context().close();
});

test("logout ends the session and the others see it", async () => {
  await openConversation(bob, "alice");
  const token = JSON.parse(await bob.evaluate(() => sessionStorage.getItem("qms1.session"))).token;
  await bob.click("#logout");
  await bob.locator('body[data-view="auth"]').waitFor();
  await waitFor(() => sentRequests(bob).some((r) => r.action === 2), "the logout request in the recorder");
  assert.deepEqual(sentRequests(bob).at(-1), { action: 2, token });
  assert.equal(await bob.evaluate(() => sessionStorage.getItem("qms1.session")), null);
  assert.equal(await bob.inputValue("#name"), "bob", "the name stays filled in");
  await alice.locator('#contacts li.offline[data-name="bob"]').waitFor();
  await openConversation(alice, "bob");
  assert.match(await alice.textContent("#conv-notice"), /bob is offline/);
  // a reload stays signed out: the page resumes nothing on its new connection
  // (it would have sent AuthorizeRequest as soon as the connection opened)
  const mark = bob.sockets.length;
  await bob.reload();
  await waitConnected(bob);
  assert.equal(await bob.locator('body[data-view="auth"]').count(), 1);
  assert.deepEqual(framesOn(bob, mark), [], "nothing sent on the new connection");
});

test("no message plaintext or password ever left a browser", async () => {
  const frames = allSentFrames(...pages);
  assert.ok(frames.length > 20, `recorded ${frames.length} frames`);
  for (const text of plaintexts)
    for (const f of frames) {
      assert.ok(!f.payload.includes(text), `plaintext "${text}" in a sent frame`);
      for (const word of text.split(/\W+/).filter((w) => w.length >= 6))
        assert.ok(!f.payload.includes(word), `word "${word}" of a message in a sent frame`);
    }
  let messages = 0;
  for (const f of frames) {
    const r = JSON.parse(f.payload);
    assert.ok(!f.payload.includes(PASSWORD), "password in a frame");
    if (r.action !== 3) continue;
    messages++;
    const e = JSON.parse(r.message);
    assert.equal(e.v, "qms1");
    assert.equal(e.alg, "p256-aes256gcm");
  }
  assert.ok(messages >= 9, `${messages} messages checked`);
});
