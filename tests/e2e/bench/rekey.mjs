// rekey.mjs - what a membership change (re-keying) of an end-to-end encrypted
// group costs the browser of the member who makes it (docs/E2E.md, "Groups",
// "Re-keying"; issue 18 part 5). A benchmark, not a test: it prints figures.
//
//   node tests/e2e/bench/rekey.mjs [--sizes 10,100,1000] [--changes 6] [--cold 2] [--json FILE]
//
// The real server (lib/harness.mjs, cheap Argon2id) and, per group size N,
// a fresh Chromium with one page of the real web UI (html/) as the owner.
// N-1 members are registered from node over plain WebSocket with real keys
// of the kind the UI publishes (made by html/crypto.mjs itself, in node's
// WebCrypto), so the page's pairwise encryption to them is the real work.
//
// The path measured is the UI's own, driven the way a person does it:
//   - the owner registers in the page and sees the members (the user list);
//   - the members go offline (but one, the probe); the owner creates the
//     group in the "New group" dialog with all of them ticked: its own
//     device made the group, so every member is confirmed (groups.mjs).
//     Over 801 members this cannot be done in one step (the key message
//     names every member added, and its plaintext would pass the UI's 32 KiB
//     limit, see CREATE_AT_ONCE below): the group is created with 800 and
//     the rest added at once in the group's Members dialog, both measured;
//   - each change is a click on "Remove" next to the last member in the
//     group's Members dialog, or ticking that member under "Add people" and
//     "Add", alternately. The server's GroupEvent comes back, app.mjs makes
//     a new sender key and sends it, pairwise encrypted, to every other
//     member: one MessageRequest each.
//   - "cold" changes follow a reload of the page: the pairwise keys
//     (ECDH + HKDF per contact) are derived again, as after any reload.
// Nothing in html/ is changed. The page is observed at its boundaries by a
// script added before the UI loads: every WebCrypto call, WebSocket send,
// IndexedDB put and localStorage write is timed (performance.now, about a
// microsecond each); the WebSocket frames are counted from what the browser
// sent (playwright) and timed by the DevTools protocol (Network domain);
// Performance.getMetrics gives the page's main-thread time and heap, and
// SystemInfo.getProcessInfo the CPU time of the browser's processes.
//
// Why the members are offline: in a real group they are on other machines.
// Here every online member would receive the GroupEvent with the whole
// member list (about 250 KB at 1,000 members) and its key message on the
// same two cores, and the node process reading them would compete with the
// browser being measured. Offline, the server stores the key messages
// instead (store-and-forward). One member, the probe, stays online and
// decrypts the key message it gets after every change with html/crypto.mjs:
// the figures are of a distribution that works.

import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { cpus, loadavg } from "node:os";

if (typeof WebSocket === "undefined") { // node 20: the WebSocket client is behind a flag
  const r = spawnSync(process.execPath, ["--experimental-websocket", ...process.execArgv, ...process.argv.slice(1)],
    { stdio: "inherit" });
  process.exit(r.status ?? 1);
}

const { startServer, launchBrowser, openPage, waitFor, uniq, sleep, SOURCE_DIR } = await import("../lib/harness.mjs");
const { register } = await import("../lib/ui.mjs");
const e2e = await import(join(SOURCE_DIR, "html", "crypto.mjs"));

// ---- options ---------------------------------------------------------------

const opt = { sizes: [10, 100, 1000], changes: 6, cold: 2, json: null };
for (let i = 2; i < process.argv.length; i++) {
  const a = process.argv[i], v = process.argv[i + 1];
  if (a === "--sizes") { opt.sizes = v.split(",").map(Number); i++; }
  else if (a === "--changes") { opt.changes = Number(v); i++; }
  else if (a === "--cold") { opt.cold = Number(v); i++; }
  else if (a === "--json") { opt.json = v; i++; }
  else { console.error(`unknown option ${a}`); process.exit(2); }
}
const MAX = Math.max(...opt.sizes);
if (!opt.sizes.every((n) => Number.isInteger(n) && n >= 3 && n <= 1024)) throw new Error("sizes: 3 to 1024");

const CREATE_AT_ONCE = 800;
const loadStart = loadavg();
const log = (...a) => console.error(`[${new Date().toISOString().slice(11, 19)}]`, ...a);

// ---- members in node -------------------------------------------------------

const PASSWORD = "correct horse battery";
const digest = async (p) => Buffer.from(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(p))).toString("hex");

/** One request on a new socket; resolves with the socket and the LoginEvent. */
function connectAs(port, request) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
    const timer = setTimeout(() => reject(new Error("no LoginEvent in 30 s")), 30000);
    ws.onerror = () => reject(new Error("socket error"));
    ws.onopen = () => ws.send(JSON.stringify(request));
    ws.onmessage = (ev) => {
      const d = JSON.parse(ev.data);
      if (d.event !== 1) return;
      clearTimeout(timer);
      if (d.valid !== true) return reject(new Error(`login refused: ${d.error}`));
      resolve({ ws, login: d });
    };
  });
}

async function pool(items, width, fn) {
  let next = 0;
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < items.length) { const i = next++; await fn(items[i], i); }
  }));
}

/** Registers (first time) or logs in every member, presence "none"; they stay connected. */
async function membersOnline(port, members, first) {
  const pw = await digest(PASSWORD);
  await pool(members, 24, async (m) => {
    const { ws, login } = await connectAs(port, { action: first ? 1 : 0, name: m.name, password: pw, pubKey: m.published,
      presence: "none" });
    m.ws = ws;
    m.id = m.id || (login.users || []).find((u) => u.name === m.name)?.id;
  });
}

async function membersOffline(members) {
  await Promise.all(members.map((m) => new Promise((r) => {
    if (!m.ws || m.ws.readyState === WebSocket.CLOSED) return r();
    m.ws.onclose = () => r();
    m.ws.close();
  })));
  for (const m of members) m.ws = null;
}

// ---- instrumentation in the page -------------------------------------------

// Runs in the page before the UI's modules (playwright addInitScript). Only
// wraps platform functions; records into window.__rk.
function instrument() {
  const now = () => performance.now();
  const rk = window.__rk = { log: [] };
  const push = (r) => { rk.log.push(r); return r; };
  const name = (alg) => (typeof alg === "string" ? alg : alg && alg.name) || "";
  for (const method of ["importKey", "deriveBits", "deriveKey", "encrypt", "decrypt", "digest", "generateKey", "exportKey"]) {
    const orig = SubtleCrypto.prototype[method];
    SubtleCrypto.prototype[method] = function (...a) {
      const r = push({ k: method, t0: now(), t1: null });
      if (method === "importKey") { r.fmt = a[0]; r.alg = name(a[2]); r.use = (a[4] || []).join(","); r.len = a[1]?.byteLength; }
      else if (method === "encrypt" || method === "decrypt" || method === "digest") r.alg = name(a[0]);
      const p = orig.apply(this, a);
      p.then(() => { r.t1 = now(); }, () => { r.t1 = now(); r.err = true; });
      return p;
    };
  }
  const send = WebSocket.prototype.send;
  WebSocket.prototype.send = function (data) {
    const t0 = now();
    const out = send.call(this, data);
    const m = typeof data === "string" ? /^\{"action":(\d+)/.exec(data) : null;
    push({ k: "send", t0, t1: now(), action: m ? Number(m[1]) : null, bytes: typeof data === "string" ? data.length : 0 });
    return out;
  };
  const Native = WebSocket;
  window.WebSocket = class extends Native {
    constructor(...a) {
      super(...a);
      // registered before the UI's onmessage: runs first, on the same event
      this.addEventListener("message", (ev) => {
        const s = typeof ev.data === "string" ? ev.data : "";
        const m = /"event":(\d+)/.exec(s.slice(0, 200));
        if (m && m[1] === "8") push({ k: "recv", event: 8, t0: now(), t1: now(), bytes: s.length });
      });
    }
  };
  const put = IDBObjectStore.prototype.put;
  IDBObjectStore.prototype.put = function (...a) {
    const r = push({ k: "idb", t0: now(), t1: null, store: this.name });
    const req = put.apply(this, a);
    req.addEventListener("success", () => { r.t1 = now(); });
    return req;
  };
  const setItem = Storage.prototype.setItem;
  Storage.prototype.setItem = function (key, value) {
    const t0 = now();
    const out = setItem.call(this, key, value);
    push({ k: "ls", t0, t1: now(), key: String(key).replace(/\..*$/, ""), bytes: String(value).length });
    return out;
  };
}

// ---- one change, measured --------------------------------------------------

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const n = s.length; return n ? (n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2) : NaN; };
const sum = (xs) => xs.reduce((a, b) => a + b, 0);

async function metrics(cdp) {
  const { metrics: list } = await cdp.send("Performance.getMetrics");
  return Object.fromEntries(list.map((m) => [m.name, m.value]));
}

async function processCpu(bcdp) {
  const { processInfo } = await bcdp.send("SystemInfo.getProcessInfo");
  const renderer = sum(processInfo.filter((p) => p.type === "renderer").map((p) => p.cpuTime));
  return { renderer, all: sum(processInfo.map((p) => p.cpuTime)) };
}

/**
 * Runs `act` (which makes the page request a membership change) and waits
 * until the page has sent `expect` MessageRequests after the GroupEvent and
 * gone quiet. Returns the figures of that change.
 */
async function measure(ctx, act, expect, label) {
  const { page, cdp, bcdp, net } = ctx;
  await page.evaluate(() => { window.__rk.log = []; });
  net.length = 0;
  const framesFrom = page.sentFrames.length;
  const m0 = await metrics(cdp);
  const c0 = await processCpu(bcdp);
  await act();
  const sent = () => page.sentFrames.slice(framesFrom).map((f) => f.payload).filter((p) => p.startsWith('{"action":3,'));
  try {
    await waitFor(() => sent().length >= expect, `${expect} key messages (${label})`, Number(process.env.RK_TIMEOUT || 120000));
  } catch (err) {
    const got = page.receivedFrames.slice(-5).map((f) => f.payload.slice(0, 300));
    const toasts = await page.evaluate(() => [...document.querySelectorAll("#toasts *, .toast")].map((n) => n.textContent));
    const recs = JSON.stringify(await page.evaluate(() => window.__rk.log));
    console.error(await page.evaluate(() => document.body.innerText.slice(0, 3000)));
    throw new Error(`${err.message}: ${sent().length} sent; records ${recs}; toasts ${JSON.stringify(toasts)}; ` +
      `last received ${JSON.stringify(got)}; page errors ${JSON.stringify(page.pageErrors)}`);
  }
  // quiet: no new frame and no pending record for 500 ms (the acks come back, the key record is saved, the UI renders)
  let last = -1;
  for (let i = 0; i < 60; i++) {
    await sleep(500);
    const n = await page.evaluate(() => window.__rk.log.length);
    if (n === last) break;
    last = n;
  }
  const m1 = await metrics(cdp);
  const c1 = await processCpu(bcdp);
  const recs = await page.evaluate(() => window.__rk.log);
  const frames = sent();
  if (frames.length !== expect) throw new Error(`${label}: ${frames.length} key messages, expected ${expect}`);

  const ev = recs.find((r) => r.k === "recv" && r.event === 8);
  const req = recs.find((r) => r.k === "send" && (r.action === 8 || r.action === 7));
  const keygen = recs.find((r) => r.k === "importKey" && r.fmt === "raw" && r.alg === "AES-GCM" && r.len === 32 && r.use.includes("encrypt"));
  if (!ev || !keygen) throw new Error(`${label}: no GroupEvent or no new sender key seen in the page`);
  const hash = recs.find((r) => r.k === "digest" && r.t0 >= keygen.t1);
  const sends = recs.filter((r) => r.k === "send" && r.action === 3 && r.t0 >= keygen.t1);
  const loopEnd = sends.at(-1).t1;
  const inLoop = (r) => r.t0 >= hash.t1 && r.t1 !== null && r.t1 <= loopEnd;
  const loopCrypto = recs.filter((r) => inLoop(r) && r.k !== "send" && r.k !== "idb" && r.k !== "ls" && r.k !== "recv");
  const enc = loopCrypto.filter((r) => r.k === "encrypt");
  const derive = loopCrypto.filter((r) => r.k !== "encrypt");
  const dur = (r) => r.t1 - r.t0;
  const idbAfter = recs.filter((r) => r.k === "idb" && r.t0 >= loopEnd && r.t1 !== null);
  const keySaved = recs.find((r) => r.k === "idb" && r.t0 >= keygen.t1 && r.t0 < hash.t0);
  const lsBefore = recs.filter((r) => r.k === "ls" && r.t0 >= ev.t0 && r.t1 <= keygen.t0);
  const wsEvent = net.find((f) => f.dir === "recv" && f.event === 8);
  const wsSent = net.filter((f) => f.dir === "sent" && f.action === 3);
  const bytes = sum(frames.map((p) => Buffer.byteLength(p)));
  const n = sends.length;
  return {
    label, recipients: n,
    requestToEvent: req ? ev.t0 - req.t0 : null,
    total: loopEnd - ev.t0,                          // GroupEvent in the page -> last key message handed to the socket
    network: wsEvent && wsSent.length ? (wsSent.at(-1).ts - wsEvent.ts) * 1000 : null, // the same, as the browser's network layer saw it
    eventHandling: keygen.t0 - ev.t0,                // validation, the group book (localStorage), notices
    groupBookWrite: sum(lsBefore.map(dur)), groupBookBytes: sum(lsBefore.map((r) => r.bytes)),
    keygen: dur(keygen),                             // importKey of 32 random bytes (crypto.getRandomValues)
    keyStoreAndHash: hash.t1 - keygen.t1,            // the new key kept in IndexedDB, the member hash
    keyStore: keySaved && keySaved.t1 ? dur(keySaved) : null,
    loop: loopEnd - hash.t1,                         // per member: pair key (cold), seal, send
    perMember: (loopEnd - hash.t1) / n,
    encrypt: sum(enc.map(dur)), encryptN: enc.length,
    derive: sum(derive.map(dur)), deriveN: derive.length,
    send: sum(sends.map(dur)),
    after: idbAfter.length ? Math.max(...idbAfter.map((r) => r.t1)) - loopEnd : null, // sentTo saved in IndexedDB
    frames: frames.length, bytes, bytesPerMember: bytes / frames.length,
    rendererCpu: (c1.renderer - c0.renderer) * 1000, browserCpu: (c1.all - c0.all) * 1000,
    taskDuration: (m1.TaskDuration - m0.TaskDuration) * 1000, scriptDuration: (m1.ScriptDuration - m0.ScriptDuration) * 1000,
    heapUsed: m1.JSHeapUsedSize, heapTotal: m1.JSHeapTotalSize,
  };
}

// ---- the page --------------------------------------------------------------

async function openOwner(browser, server) {
  const page = await openPage(browser, null);
  await page.addInitScript(instrument);
  const cdp = await page.context().newCDPSession(page);
  const bcdp = await browser.newBrowserCDPSession();
  await cdp.send("Performance.enable");
  await cdp.send("Network.enable");
  const net = [];
  cdp.on("Network.webSocketFrameSent", (e) => {
    const m = /^\{"action":(\d+)/.exec(e.response.payloadData || "");
    net.push({ dir: "sent", ts: e.timestamp, action: m ? Number(m[1]) : null });
  });
  cdp.on("Network.webSocketFrameReceived", (e) => {
    const m = /"event":(\d+)/.exec((e.response.payloadData || "").slice(0, 200));
    net.push({ dir: "recv", ts: e.timestamp, event: m ? Number(m[1]) : null });
  });
  await page.goto(server.origin + "/");
  return { page, cdp, bcdp, net };
}

const groupItem = (page, name) => page.locator(`#groups li[data-name="${name}"]`);

async function openMembers(page, gname) {
  await groupItem(page, gname).locator("button").click();
  await page.locator("#peer-name", { hasText: gname }).waitFor();
  await page.click("#group-info");
  await page.locator("#group-dialog[open]").waitFor();
}

// ---- the probe: one member online that reads its key message ---------------

function probeReader(probe, ownerRef) {
  probe.got = [];
  probe.ws.onmessage = async (ev) => {
    const d = JSON.parse(ev.data);
    if (d.event !== 2 || !ownerRef.owner || d.sender !== ownerRef.owner.id) return;
    try {
      const ch = await e2e.openChannel({ myId: probe.id, myPrivateKey: probe.privateKey, myPublic: probe.published,
        peerId: ownerRef.owner.id, peerPublic: ownerRef.owner.key });
      const m = await ch.decrypt(d.message);
      const k = e2e.parseSenderKeyControl(m.control);
      await e2e.importSenderKey(k.raw);
      probe.got.push({ epoch: k.epoch, gen: k.gen });
    } catch (err) { probe.got.push({ error: String(err.message || err) }); }
  };
}

// ---- what a member receiving it pays (crypto only, in the page) ------------

async function receiverCost(page) {
  return page.evaluate(async () => {
    const m = await import("/crypto.mjs");
    const t = () => performance.now();
    const a = await m.generateDeviceKeyPair(), b = await m.generateDeviceKeyPair();
    const pa = await m.exportPublicKey(a.publicKey), pb = await m.exportPublicKey(b.publicKey);
    const ia = crypto.randomUUID(), ib = crypto.randomUUID();
    const sender = await m.openChannel({ myId: ia, myPrivateKey: a.privateKey, myPublic: pa, peerId: ib, peerPublic: pb });
    const { raw } = await m.newSenderKey();
    const mh = await m.memberHash("benchGroup", 2, [ia, ib]);
    const envs = [];
    for (let i = 0; i < 200; i++)
      envs.push((await sender.encryptControl(m.senderKeyControl({ groupId: "benchGroup", epoch: 2, gen: 1, raw, mh }))).envelope);
    const open = () => m.openChannel({ myId: ib, myPrivateKey: b.privateKey, myPublic: pb, peerId: ia, peerPublic: pa });
    // performance.now() is coarse in a page that is not cross-origin isolated (0.1 ms): time batches
    const ch = await open();
    let t0 = t();
    for (const e of envs) {
      const d = await ch.decrypt(e);
      await m.importSenderKey(m.parseSenderKeyControl(d.control).raw);
    }
    const warm = (t() - t0) / envs.length;
    t0 = t();
    for (const e of envs) {
      const d = await (await open()).decrypt(e);
      await m.importSenderKey(m.parseSenderKeyControl(d.control).raw);
    }
    const cold = (t() - t0) / envs.length;
    return { warm, cold, envelopeBytes: envs[0].length };
  });
}

// ---- main ------------------------------------------------------------------

const server = await startServer({ extra: ["--group-max-members", "1024", "--max-connections-per-address", "4000"] });
const port = server.chatPort;
log(`server on ${server.origin}, chat port ${port}; ${MAX - 1} members`);

const results = [];
const extras = {};
let openBrowser = null;
const members = [];
try {
  const run = uniq("rk");
  for (let i = 0; i < MAX - 1; i++) {
    const pair = await e2e.generateDeviceKeyPair();
    members.push({ name: `${run}m${i}`, privateKey: pair.privateKey, published: await e2e.exportPublicKey(pair.publicKey) });
  }
  let t = Date.now();
  await membersOnline(port, members, true);
  log(`${members.length} members registered in ${Date.now() - t} ms`);
  if (!members.every((m) => m.id)) throw new Error("a LoginEvent without the user's id");
  const probe = members[0];
  await membersOffline(members.slice(1));

  for (const size of opt.sizes) {
    const group = members.slice(0, size - 1);
    log(`group of ${size}`);
    const browser = openBrowser = await launchBrowser();
    const ctx = await openOwner(browser, server);
    const { page } = ctx;
    // the members come online so that the owner's page lists them, then go (the probe stays)
    await membersOnline(port, group.slice(1), false);
    const ownerName = uniq("owner");
    await register(page, ownerName);
    const session = JSON.parse(await page.evaluate(() => sessionStorage.getItem("qms1.session")));
    const ownerRef = { owner: null };
    await waitFor(async () => (await page.locator("#contacts li").count()) >= size - 1, "the members in the owner's list", 60000);
    const ownerKey = page.sentFrames.map((f) => { try { return JSON.parse(f.payload); } catch { return null; } })
      .find((r) => r && r.pubKey).pubKey;
    ownerRef.owner = { id: session.id, key: ownerKey };
    await membersOffline(group.slice(1));
    probeReader(probe, ownerRef);

    // create: the "New group" dialog, every member ticked. A key message of
    // the member who made a change names the members it added (`ch`, E2E.md),
    // and its plaintext may not pass crypto.mjs's MAX_TEXT_BYTES (32 KiB): at
    // 836 members named at once the UI cannot send its key to anyone (the
    // page says "Unexpected error: message is too long"). So a group over
    // CREATE_AT_ONCE + 1 is made the way an owner can: created with the first
    // CREATE_AT_ONCE, the rest added in one more step.
    const gname = `Bench ${size}`;
    const first = Math.min(size - 1, CREATE_AT_ONCE);
    const tick = (list, ids) => page.evaluate(([sel, want]) => {
      let n = 0;
      for (const b of document.querySelectorAll(`${sel} input[type=checkbox]`))
        if (want.includes(b.value)) { b.checked = true; n++; }
      return n;
    }, [list, ids]);
    const create = await measure(ctx, async () => {
      await page.click("#new-group");
      await page.locator("#create-dialog[open]").waitFor();
      await page.fill("#create-name", gname);
      const ticked = await tick("#create-members", group.slice(0, first).map((m) => m.id));
      if (ticked !== first) throw new Error(`only ${ticked} of ${first} members to pick in the dialog`);
      await page.click("#create-go");
    }, first, `create ${size}`);
    results.push({ size, kind: first < size - 1 ? "create-part" : "create", ...create });
    log(`create: ${create.total.toFixed(0)} ms for ${create.recipients}`);
    await waitFor(() => probe.got.length >= 1, "the probe's key", 30000);
    await openMembers(page, gname);
    if (first < size - 1) {
      const rest = group.slice(first);
      const add = await measure(ctx, async () => {
        const ticked = await tick("#group-add-list", rest.map((m) => m.id));
        if (ticked !== rest.length) throw new Error(`only ${ticked} of ${rest.length} members to add in the dialog`);
        await page.click("#group-add-go");
      }, size - 1, `add the rest ${size}`);
      results.push({ size, kind: "add-rest", ...add });
      log(`add the other ${rest.length}: ${add.total.toFixed(0)} ms for ${add.recipients}`);
      await sleep(1500);
    }

    // warm: the last member removed and added back, alternately; cold (after a
    // reload): one more member removed each time (a removed member who is
    // offline is no longer a contact the reloaded page knows, to add back)
    const change = async (kind, i, target, op) => {
      const r = await measure(ctx, async () => {
        if (op === "remove") await page.click(`#group-members li[data-id="${target.id}"] button`);
        else {
          await page.locator(`#group-add-list input[value="${target.id}"]`).check();
          await page.click("#group-add-go");
        }
      }, ctx.groupSize - (op === "remove" ? 2 : 0), `${kind} ${op} ${size} #${i}`);
      ctx.groupSize += op === "remove" ? -1 : 1;
      r.op = op;
      results.push({ size, kind, ...r });
      log(`${kind} ${r.op}: ${r.total.toFixed(0)} ms for ${r.recipients} (${r.perMember.toFixed(3)} ms each)`);
      await sleep(1500);
    };
    ctx.groupSize = size;
    for (let i = 0; i < opt.changes; i++) await change("warm", i, group.at(-1), i % 2 ? "add" : "remove");
    if (opt.changes % 2) await change("extra", opt.changes, group.at(-1), "add");  // back to full size (not counted below)
    for (let i = 0; i < opt.cold; i++) {
      await page.reload();
      await page.locator('body[data-view="chat"]').waitFor({ timeout: 30000 });
      await groupItem(page, gname).waitFor({ timeout: 30000 });
      await sleep(2000); // the group list applied; nothing to send (every member has the current key)
      await openMembers(page, gname);
      await change("cold", i, group.at(-2 - i), "remove");
    }
    const bad = probe.got.filter((g) => g.error);
    if (bad.length) throw new Error(`the probe could not read a key message: ${bad[0].error}`);
    extras[size] = { probeKeys: probe.got.length, probeEpochs: probe.got.map((g) => g.epoch) };
    if (size === MAX) extras.receiver = await receiverCost(page);
    extras[size].pageErrors = page.pageErrors;
    await browser.close();
    openBrowser = null;
  }

} finally {
  await openBrowser?.close().catch(() => {});
  await membersOffline(members).catch(() => {});
  await server.stop();
}

// ---- report ----------------------------------------------------------------

const f = (v, d = 1) => (v === null || v === undefined || Number.isNaN(v) ? "-" : v.toFixed(d));
const rows = [];
const LABEL = { create: "create (cold)", "create-part": `create with ${CREATE_AT_ONCE} (cold)`,
  "add-rest": "add the rest at once", warm: "change", cold: "change after reload (cold)" };
for (const size of opt.sizes)
  for (const kind of ["create", "create-part", "add-rest", "warm", "cold"]) {
    const rs = results.filter((r) => r.size === size && r.kind === kind);
    if (!rs.length) continue;
    const mm = (k, d = 1) => {
      const xs = rs.map((r) => r[k]).filter((v) => v !== null && v !== undefined);
      if (!xs.length) return "-";
      return rs.length === 1 ? f(xs[0], d) : `${f(median(xs), d)} / ${f(Math.max(...xs), d)}`;
    };
    rows.push(`| ${size} | ${LABEL[kind]} | ${rs.length} | ` +
      `${[...new Set(rs.map((r) => r.recipients))].join("/")} | ${mm("total")} | ${mm("network")} | ${mm("eventHandling")} | ` +
      `${mm("keygen", 2)} | ${mm("keyStoreAndHash")} | ${mm("loop")} | ${mm("perMember", 3)} | ${mm("derive")} | ${mm("encrypt")} | ` +
      `${mm("send")} | ${mm("after")} | ${mm("rendererCpu", 0)} | ${mm("taskDuration", 0)} | ${f(median(rs.map((r) => r.bytes)) / 1024, 0)} | ` +
      `${f(Math.max(...rs.map((r) => r.heapUsed)) / 1048576, 1)} |`);
  }
console.log(`machine: ${cpus().length} cores (${cpus()[0].model}), load ${loadStart.map((x) => x.toFixed(2)).join(" ")} at the start, ` +
  `${loadavg().map((x) => x.toFixed(2)).join(" ")} at the end`);
console.log("times in ms; two figures: median / max over the runs");
console.log("| members | change | runs | key messages | GroupEvent → last key message sent (page) | same, network layer | " +
  "event handling | key generation | key kept (IndexedDB) + member hash | all members | per member | of which: pair keys derived | " +
  "AES-GCM seals | WebSocket send() | after: sentTo saved | renderer CPU | main-thread task time | KiB sent | JS heap used (MiB) |");
console.log("|" + "---|".repeat(19));
for (const r of rows) console.log(r);
if (extras.receiver)
  console.log(`a member receiving it (crypto only, in the page): decrypt + import the key ${extras.receiver.warm.toFixed(3)} ms ` +
    `with the pair key derived before, ${extras.receiver.cold.toFixed(3)} ms deriving it first; envelope ${extras.receiver.envelopeBytes} bytes`);
for (const size of opt.sizes)
  console.log(`probe (${size}): ${extras[size].probeKeys} key messages read, epochs ${extras[size].probeEpochs.join(",")}; ` +
    `page errors: ${extras[size].pageErrors.length}`);
if (opt.json) writeFileSync(opt.json, JSON.stringify({ opt, results, extras }, null, 1));
