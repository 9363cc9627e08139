// groups.test.mjs - end-to-end encrypted groups in the web UI (docs/E2E.md,
// "Groups"): three people in separate browser contexts create a group, talk,
// and one is removed; the removed member's browser holds no key for what
// follows and the server sends it nothing of it; no frame of any page
// carries a message text. And the client against a server that lies about
// membership: a member added by the server alone gets no sender key.
//
// Every page talks to the real server; the lying server is the real one
// behind the attacker's proxy (lib/hostile.mjs), which injects frames.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, launchBrowser, openPage, waitFor, uniq, sleep } from "./lib/harness.mjs";
import { register, contact, sentRequests } from "./lib/ui.mjs";
import { hostileLink } from "./lib/hostile.mjs";

let server, browser;
const contexts = [];
const pages = [];
const plaintexts = [];
const say = (t) => { plaintexts.push(t); return t; };

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
  const enums = await (await fetch(server.origin + "/enums.json")).json();
  assert.equal(enums.Requests?.GroupCreateRequest, 7, "the server publishes the group requests");
});

after(async () => {
  await browser?.close();
  assert.deepEqual(await server?.stop(), { code: 0, sig: null });
});

/** Every frame a page sent and received: [{dir, payload}]. */
function wire(p) {
  if (p.wire) return p.wire;
  return [...p.sentFrames.map((f) => ({ dir: "sent", payload: f.payload })),
    ...p.receivedFrames.map((f) => ({ dir: "received", payload: f.payload }))];
}

const parsed = (frames) => frames.map((f) => { try { return JSON.parse(f.payload); } catch { return null; } }).filter(Boolean);

/** A person on their own device. hostile: (real server) the connection goes through the attacker's proxy. */
async function person(prefix, { hostile = false } = {}) {
  const p = await openPage(browser, null);
  contexts.push(p.context());
  pages.push(p);
  let link = null;
  if (hostile) link = await hostileLink(p);
  await p.goto(server.origin + "/");
  const name = uniq(prefix);
  await register(p, name);
  const session = JSON.parse(await p.evaluate(() => sessionStorage.getItem("qms1.session")));
  const key = await waitFor(() => sentRequests(p).filter((r) => r.pubKey).at(-1) ||
    parsed(wire(p)).filter((r) => r.pubKey).at(-1), "the published key").then((r) => r.pubKey);
  return { page: p, name, id: session.id, key, link };
}

/** Sends `frame` to the person's page as the server (the lying one). */
function lie(who, frame) {
  who.link.inject(frame);
}

const group = (p, name) => p.locator(`#groups li[data-name="${name}"]`);

async function openGroup(p, name) {
  await group(p, name).locator("button").click();
  await p.locator("#peer-name", { hasText: name }).waitFor();
}

async function sendInGroup(p, text) {
  const input = p.locator("#message");
  await waitFor(async () => !(await input.isDisabled()), "an enabled composer (the group's keys ready)", 15000);
  await input.fill(text);
  await input.press("Enter");
  await p.locator("#messages li.msg.out .bubble", { hasText: text }).waitFor();
}

const incoming = (p, text) => p.locator("#messages li.msg.in .bubble", { hasText: text }).waitFor({ timeout: 15000 });

async function unreadOfGroup(p, name) {
  const badge = group(p, name).locator(".badge");
  return (await badge.count()) ? Number(await badge.textContent()) : 0;
}

/** The MessageRequests (pairwise: sender keys and chat) a page sent, from frame index `from` on. */
function directRequests(p, from = 0) {
  return parsed(wire(p).filter((f) => f.dir === "sent").slice(from)).filter((r) => r.action === 3);
}

async function createGroup(owner, name, members) {
  await owner.page.click("#new-group");
  await owner.page.locator("#create-dialog[open]").waitFor();
  await owner.page.fill("#create-name", name);
  for (const m of members) await owner.page.check(`#create-members input[value="${m.id}"]`);
  await owner.page.click("#create-go");
}

async function closeAll() {
  while (contexts.length) await contexts.pop().close().catch(() => {});
}

test("three people: create a group, talk, remove one; the removed member cannot read what follows; no plaintext on the wire", async () => {
  try {
    const alice = await person("alice"), bob = await person("bob"), carol = await person("carol");
    for (const [p, others] of [[alice, [bob, carol]], [bob, [alice, carol]], [carol, [alice, bob]]])
      for (const o of others) await contact(p.page, o.name).waitFor();

    const gname = uniq("Climbing ");
    await createGroup(alice, gname, [bob, carol]);
    for (const p of [alice, bob, carol]) await group(p.page, gname).waitFor();

    // alice writes first; bob and carol have not opened the group: an unread count each
    await openGroup(alice.page, gname);
    await sendInGroup(alice.page, say("Saturday at the crag, who is in?"));
    for (const p of [bob, carol]) await waitFor(async () => (await unreadOfGroup(p.page, gname)) === 1, `${p.name}'s unread count`);
    await openGroup(bob.page, gname);
    await openGroup(carol.page, gname);
    assert.equal(await unreadOfGroup(bob.page, gname), 0, "opening the group reads it");
    await incoming(bob.page, "Saturday at the crag");
    await incoming(carol.page, "Saturday at the crag");
    // each sees the others' plaintext, with the sender's name
    await sendInGroup(bob.page, say("Bob: count me in"));
    await sendInGroup(carol.page, say("Carol: I bring the rope"));
    await incoming(alice.page, "count me in");
    await incoming(carol.page, "count me in");
    await incoming(alice.page, "I bring the rope");
    await incoming(bob.page, "I bring the rope");
    assert.equal(await alice.page.locator("#messages li.msg.in", { hasText: "I bring the rope" }).locator(".sender").textContent(),
      carol.name);
    // the member list: everyone there, with the key state as for direct chats
    await alice.page.click("#group-info");
    await alice.page.locator("#group-dialog[open]").waitFor();
    for (const p of [bob, carol]) {
      const row = alice.page.locator(`#group-members li[data-id="${p.id}"]`);
      assert.equal(await row.getAttribute("data-trust"), "unverified");
      assert.equal(await row.getAttribute("data-unconfirmed"), null);
    }

    // alice removes carol
    const carolFrom = wire(carol.page).length;
    const aliceFrom = wire(alice.page).filter((f) => f.dir === "sent").length;
    const bobFrom = wire(bob.page).filter((f) => f.dir === "sent").length;
    await alice.page.click(`#group-members button[aria-label="Remove ${carol.name}"]`);
    await carol.page.locator("#messages li.system", { hasText: "removed you" }).waitFor();
    await alice.page.locator("#messages li.system", { hasText: `removed ${carol.name}` }).waitFor();
    await bob.page.locator("#messages li.system", { hasText: `removed ${carol.name}` }).waitFor();
    await alice.page.click("#group-dialog button[value=close]");
    assert.equal(await carol.page.locator("#message").isDisabled(), true, "carol cannot write to the group any more");

    const secret = say("After carol left: the new meeting point is the north gate");
    await sendInGroup(alice.page, secret);
    await incoming(bob.page, "north gate");
    const bobSecret = say("Bob after the removal: fine by me");
    await sendInGroup(bob.page, bobSecret);
    await incoming(alice.page, "fine by me");
    await sleep(500);

    // the server never delivered anything of the group sent after the removal to carol
    const carolGot = parsed(wire(carol.page).slice(carolFrom).filter((f) => f.dir === "received"));
    assert.deepEqual(carolGot.filter((d) => d.event === 10), [], "no group message after the removal reached carol");
    // nobody sent carol a key after the removal
    for (const [p, from] of [[alice, aliceFrom], [bob, bobFrom]])
      assert.deepEqual(directRequests(p.page, from).filter((r) => r.target === carol.id), [],
        `${p.name} sent carol nothing after the removal`);
    // and the new keys did go to the members who stayed
    assert.ok(directRequests(alice.page, aliceFrom).some((r) => r.target === bob.id), "alice re-keyed for bob");
    assert.ok(directRequests(bob.page, bobFrom).some((r) => r.target === alice.id), "bob re-keyed for alice");

    // the ciphertexts carol would have needed (as bob's browser received them): carol's browser holds
    // no key that opens them, and no key of the new epoch at all
    const after = parsed(wire(bob.page).filter((f) => f.dir === "received")).filter((d) => d.event === 10);
    const needed = after.slice(-1).concat(parsed(wire(alice.page).filter((f) => f.dir === "received"))
      .filter((d) => d.event === 10).slice(-1));
    assert.equal(needed.length, 2);
    const verdict = await carol.page.evaluate(async ({ frames, me, bobId }) => {
      const e2e = await import("/crypto.mjs");
      const { loadSenderKeys } = await import("/keystore.mjs");
      const keys = await loadSenderKeys(me);
      const out = { keys: keys.map((k) => [k.sender === me ? "me" : k.sender, k.epoch, k.gen]), opened: [], epochs: [] };
      for (const f of frames) {
        const e = e2e.parseGroupEnvelope(f.message);
        out.epochs.push(e.e);
        for (const k of keys) {
          if (k.sender === me) continue;
          try {
            await e2e.decryptGroup(e, { groupId: f.group, senderId: f.sender, key: k.key });
            out.opened.push([f.sender, k.sender, k.epoch]);
          } catch { /* expected */ }
        }
      }
      out.bobEpochs = keys.filter((k) => k.sender === bobId).map((k) => k.epoch);
      return out;
    }, { frames: needed, me: carol.id, bobId: bob.id });
    assert.deepEqual(verdict.opened, [], "no key in carol's browser opens a message sent after her removal");
    assert.ok(verdict.epochs.every((e) => e === 2), "the messages after the removal are of epoch 2");
    assert.ok(verdict.keys.every(([, epoch]) => epoch === 1), `carol holds keys of epoch 1 only: ${JSON.stringify(verdict.keys)}`);
    assert.ok(verdict.bobEpochs.includes(1), "carol did hold bob's key of the epoch she was in");
    await carol.page.evaluate(() => {}); // carol's page still works
    assert.ok(!(await carol.page.evaluate(() => document.documentElement.textContent)).includes("north gate"));

    // no frame of any page, sent or received, carries any message text
    for (const p of pages)
      for (const f of wire(p))
        for (const t of plaintexts) assert.ok(!f.payload.includes(t), `plaintext "${t}" on the wire of a page`);
    for (const p of [alice, bob, carol]) assert.deepEqual(p.page.pageErrors, []);
  } finally {
    await closeAll();
    pages.length = 0;
  }
});

test("a lying server adds a member: no sender key goes to them until the person sees it and decides", async () => {
  try {
    const alice = await person("alice"), bob = await person("bob", { hostile: true });
    const mallory = await person("mallory"); // an account the server controls
    await contact(alice.page, bob.name).waitFor();
    const gname = uniq("Team ");
    await createGroup(alice, gname, [bob]);
    await group(bob.page, gname).waitFor();
    await openGroup(bob.page, gname);
    await openGroup(alice.page, gname);
    await sendInGroup(alice.page, say("Only for bob"));
    await incoming(bob.page, "Only for bob");

    // the server tells bob (only) that alice added mallory
    const real = parsed(wire(bob.page).filter((f) => f.dir === "received")).filter((d) => d.event === 8 && d.group && d.group.members).at(-1).group;
    const forgedGroup = { ...real, epoch: real.epoch + 1,
      members: [...real.members, { id: mallory.id, name: mallory.name, publicKey: mallory.key, role: "member" }] };
    const bobFrom = wire(bob.page).filter((f) => f.dir === "sent").length;
    lie(bob, { valid: true, event: 8, group: forgedGroup, change: { op: "add", by: alice.id, members: [mallory.id] } });

    // bob sees it: a notice with mallory's key state, and "not confirmed"
    await bob.page.locator("#messages li.system", { hasText: `added ${mallory.name} (Not verified)` }).waitFor();
    // bob re-keys for the new epoch: alice gets the new key, mallory does not
    await waitFor(() => directRequests(bob.page, bobFrom).some((r) => r.target === alice.id), "bob's new key for alice");
    await sleep(800);
    assert.deepEqual(directRequests(bob.page, bobFrom).filter((r) => r.target === mallory.id), [],
      "bob's sender key did not go to the member the server added on its own");
    await bob.page.locator("#messages li.system", { hasText: `Not confirmed yet: ${mallory.name}` }).waitFor();
    await bob.page.click("#group-info");
    await bob.page.locator("#group-dialog[open]").waitFor();
    assert.equal(await bob.page.locator(`#group-members li[data-id="${mallory.id}"]`).getAttribute("data-unconfirmed"), "1");
    // mallory's own browser got no pairwise message from bob at all
    assert.deepEqual(parsed(wire(mallory.page).filter((f) => f.dir === "received"))
      .filter((d) => d.event === 2 && d.sender === bob.id), [], "mallory got nothing from bob");

    // the person decides: only then the key goes to mallory
    await bob.page.click("#group-trust");
    await waitFor(() => directRequests(bob.page, bobFrom).some((r) => r.target === mallory.id), "the key sent on the person's choice");
    await bob.page.locator("#messages li.system", { hasText: "You chose to send your key" }).waitFor();
    for (const p of pages) for (const f of wire(p)) for (const t of plaintexts) assert.ok(!f.payload.includes(t));
    assert.deepEqual(bob.page.pageErrors, []);
  } finally {
    await closeAll();
    pages.length = 0;
  }
});

test("a lying server replays an older group state and forks the member list: refused, and said", async () => {
  try {
    const alice = await person("alice"), bob = await person("bob", { hostile: true });
    await contact(alice.page, bob.name).waitFor();
    const gname = uniq("Old ");
    await createGroup(alice, gname, [bob]);
    await group(bob.page, gname).waitFor();
    const first = parsed(wire(bob.page).filter((f) => f.dir === "received")).filter((d) => d.event === 8 && d.group && d.group.members).at(-1);
    await alice.page.locator("#new-group").waitFor();
    await group(alice.page, gname).locator("button").click();
    await alice.page.click("#group-info");
    await alice.page.fill("#group-rename", gname + " 2");
    await alice.page.click("#group-rename-go");
    await group(bob.page, gname + " 2").waitFor();
    await openGroup(bob.page, gname + " 2");
    // an add (epoch 2) and then the first state again (epoch 1), as a replay
    const carolLike = await person("carol");
    const two = { ...first.group, name: gname + " 2", epoch: 2,
      members: [...first.group.members, { id: carolLike.id, name: carolLike.name, publicKey: carolLike.key, role: "member" }] };
    lie(bob, { valid: true, event: 8, group: two, change: { op: "add", by: alice.id, members: [carolLike.id] } });
    await bob.page.locator("#messages li.system", { hasText: `added ${carolLike.name}` }).waitFor();
    lie(bob, first);
    await bob.page.locator("#messages li.system", { hasText: "older state of this group (change 1, after 2)" }).waitFor();
    // the same epoch with another member list
    lie(bob, { ...first, group: { ...two, members: two.members.slice(0, 2) } });
    await bob.page.locator("#messages li.system", { hasText: "another member list for the same state" }).waitFor();
    assert.equal(await bob.page.locator("#peer-trust").textContent(), "3 members", "the state of change 2 stays");
    assert.deepEqual(bob.page.pageErrors, []);
  } finally {
    await closeAll();
    pages.length = 0;
  }
});
