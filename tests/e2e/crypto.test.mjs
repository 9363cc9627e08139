// crypto.test.mjs - unit tests of html/crypto.mjs, html/validate.mjs,
// html/util.mjs and the storage-free parts of html/keystore.mjs (known keys,
// seen messages) in node (globalThis.crypto.subtle, a Map for localStorage).
// Device keys in IndexedDB are covered in the browser tests.

import { test } from "node:test";
import assert from "node:assert/strict";
import * as e2e from "../../html/crypto.mjs";
import { chatUrl, backoffDelay, nameError, passwordError, passwordDigest } from "../../html/util.mjs";
import * as check from "../../html/validate.mjs";
import { KnownKeys, ReplayGuard } from "../../html/keystore.mjs";
import { GroupBook, checkedGroup } from "../../html/groups.mjs";

const subtle = globalThis.crypto.subtle;

async function device() {
  const pair = await e2e.generateDeviceKeyPair();
  return { ...pair, published: await e2e.exportPublicKey(pair.publicKey) };
}

async function pair(aliceId = "id-alice", bobId = "id-bob") {
  const a = await device(), b = await device();
  const ab = await e2e.openChannel({ myId: aliceId, myPrivateKey: a.privateKey, myPublic: a.published,
    peerId: bobId, peerPublic: b.published });
  const ba = await e2e.openChannel({ myId: bobId, myPrivateKey: b.privateKey, myPublic: b.published,
    peerId: aliceId, peerPublic: a.published });
  return { a, b, ab, ba };
}

function tamper(envelope, field, fn) {
  const e = JSON.parse(envelope);
  e[field] = fn(e[field]);
  return JSON.stringify(e);
}

function flipB64url(text, at = 0) {
  const bytes = e2e.b64urlToBytes(text);
  bytes[at] ^= 1;
  return e2e.bytesToB64url(bytes);
}

test("device keys: P-256 SPKI with a version prefix, private key not extractable", async () => {
  const d = await device();
  assert.match(d.published, /^qms1:p256:[A-Za-z0-9+/]+={0,2}$/);
  assert.equal(e2e.b64ToBytes(d.published.slice(e2e.KEY_PREFIX.length)).length, 91); // SPKI of an uncompressed point
  assert.equal(d.privateKey.extractable, false);
  await assert.rejects(subtle.exportKey("pkcs8", d.privateKey));
  await assert.rejects(subtle.exportKey("jwk", d.privateKey));
  const other = await device();
  assert.notEqual(d.published, other.published, "each key pair is random");
  const imported = await e2e.importPublicKey(d.published);
  assert.equal(imported.algorithm.namedCurve, "P-256");
});

test("foreign and malformed keys are refused as unsupported", async () => {
  const pem = "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n-----END PUBLIC KEY-----";
  for (const k of [pem, "", "qms1:p256:", "qms1:p256:!!!!", "qms1:p256:AAAA", "qms2:p256:AAAA", null, 42]) {
    await assert.rejects(e2e.importPublicKey(k), e2e.UnsupportedKeyError, String(k));
  }
  assert.equal(e2e.isOurKeyFormat(pem), false);
  assert.equal(e2e.isOurKeyFormat(undefined), false);
  // an RSA SPKI under our prefix does not import as P-256 either
  const rsa = await subtle.generateKey({ name: "RSA-OAEP", modulusLength: 1024, publicExponent: new Uint8Array([1, 0, 1]),
    hash: "SHA-256" }, true, ["encrypt", "decrypt"]);
  const spki = new Uint8Array(await subtle.exportKey("spki", rsa.publicKey));
  await assert.rejects(e2e.importPublicKey(e2e.KEY_PREFIX + e2e.bytesToB64(spki)), e2e.UnsupportedKeyError);
});

test("a message round-trips both ways and the envelope hides the text", async () => {
  const { ab, ba } = await pair();
  const text = "Meet at the old bridge at 7 ✓ \u{1F510}";
  const { id, envelope } = await ab.encrypt(text, 1700000000000);
  assert.ok(!envelope.includes("bridge"));
  const e = JSON.parse(envelope);
  assert.deepEqual(Object.keys(e).sort(), ["alg", "ct", "id", "iv", "rk", "sk", "v"]);
  assert.equal(e.v, "qms1");
  assert.equal(e.id, id);
  assert.equal(e2e.b64urlToBytes(e.iv).length, 12);
  assert.equal(e2e.b64urlToBytes(e.id).length, 16);
  const got = await ba.decrypt(envelope);
  assert.deepEqual(got, { id, text, ts: 1700000000000 });
  const back = await ba.encrypt("ok");
  assert.equal((await ab.decrypt(back.envelope)).text, "ok");
});

test("fresh IV and id per message; lengths are padded to 64-byte blocks", async () => {
  const { ab } = await pair();
  const one = JSON.parse((await ab.encrypt("same")).envelope);
  const two = JSON.parse((await ab.encrypt("same")).envelope);
  assert.notEqual(one.iv, two.iv);
  assert.notEqual(one.id, two.id);
  assert.notEqual(one.ct, two.ct);
  const short = e2e.b64urlToBytes(one.ct).length;
  const longer = e2e.b64urlToBytes(JSON.parse((await ab.encrypt("same but a little longer")).envelope).ct).length;
  assert.equal(short, longer, "short texts fall into the same padded size");
  assert.equal((short - 16) % e2e.PAD_BLOCK, 0);
});

test("altering any part of the envelope is detected", async () => {
  const { ab, ba } = await pair();
  const { envelope } = await ab.encrypt("transfer 10 coins");
  await assert.rejects(ba.decrypt(tamper(envelope, "ct", (v) => flipB64url(v, 3))), { reason: "integrity" });
  await assert.rejects(ba.decrypt(tamper(envelope, "iv", (v) => flipB64url(v, 0))), { reason: "integrity" });
  await assert.rejects(ba.decrypt(tamper(envelope, "id", (v) => flipB64url(v, 5))), { reason: "integrity" });
  await assert.rejects(ba.decrypt(tamper(envelope, "rk", (v) => flipB64url(v, 0))), { reason: "recipient-key" });
  await assert.rejects(ba.decrypt(tamper(envelope, "sk", (v) => flipB64url(v, 0))), { reason: "sender-key" });
  await assert.rejects(ba.decrypt(tamper(envelope, "v", () => "qms0")), { reason: "format" });
  await assert.rejects(ba.decrypt("hello in plaintext"), { reason: "format" });
  await assert.rejects(ba.decrypt('{"v":"qms1","alg":"p256-aes256gcm"}'), { reason: "format" });
  assert.equal((await ba.decrypt(envelope)).text, "transfer 10 coins", "the untouched envelope still works");
});

test("associated data binds sender and recipient ids: no replay to someone else", async () => {
  const a = await device(), b = await device();
  const alice = { myId: "alice", myPrivateKey: a.privateKey, myPublic: a.published };
  const bob = { myId: "bob", myPrivateKey: b.privateKey, myPublic: b.published };
  const toBob = await e2e.openChannel({ ...alice, peerId: "bob", peerPublic: b.published });
  const { envelope } = await toBob.encrypt("for bob only");
  // the server reflects Alice's message back to Alice as if Bob had sent it
  const aliceFromBob = await e2e.openChannel({ ...alice, peerId: "bob", peerPublic: b.published });
  await assert.rejects(aliceFromBob.decrypt(envelope), e2e.DecryptError);
  // Bob receives it claimed as from another user id that has the same key (a server lying about ids)
  const bobFromMallory = await e2e.openChannel({ ...bob, peerId: "mallory", peerPublic: a.published });
  await assert.rejects(bobFromMallory.decrypt(envelope), { reason: "integrity" });
  // and under Bob's own id for another recipient id
  const otherBob = await e2e.openChannel({ ...bob, myId: "bob2", peerId: "alice", peerPublic: a.published });
  await assert.rejects(otherBob.decrypt(envelope), { reason: "integrity" });
  const realBob = await e2e.openChannel({ ...bob, peerId: "alice", peerPublic: a.published });
  assert.equal((await realBob.decrypt(envelope)).text, "for bob only");
});

test("a third key cannot read, and a message to an old key says so", async () => {
  const { a, b, ab } = await pair();
  const { envelope } = await ab.encrypt("secret");
  const eve = await device();
  // Eve as Bob's new device: the envelope names Bob's old key
  const eveAsBob = await e2e.openChannel({ myId: "id-bob", myPrivateKey: eve.privateKey, myPublic: eve.published,
    peerId: "id-alice", peerPublic: a.published });
  await assert.rejects(eveAsBob.decrypt(envelope), { reason: "recipient-key" });
  // Bob while the server substitutes Eve's key for Alice's
  const bobWithEve = await e2e.openChannel({ myId: "id-bob", myPrivateKey: b.privateKey, myPublic: b.published,
    peerId: "id-alice", peerPublic: eve.published });
  await assert.rejects(bobWithEve.decrypt(envelope), { reason: "sender-key" });
});

test("fingerprints: one per identity, 30 digits, bound to the id and the key", async () => {
  const a = await device(), b = await device();
  const idA = "3f1c9a52-8d4e-4b7a-9c21-0a6b5e7d8f90", idB = "7b2e4c61-1f3a-4d8b-a5e9-6c0d2b4f8e13";
  const fa = await e2e.fingerprint(idA, a.published);
  assert.match(fa, /^(\d{5} ){5}\d{5}$/);
  assert.equal(await e2e.fingerprint(idA, a.published), fa, "deterministic");
  assert.notEqual(await e2e.fingerprint(idB, a.published), fa, "the id is bound in: a key cannot move to another account");
  assert.notEqual(await e2e.fingerprint(idA, b.published), fa, "another key, another number");
  await assert.rejects(e2e.fingerprint(idA, "-----BEGIN PUBLIC KEY-----"), e2e.UnsupportedKeyError);
  await assert.rejects(e2e.fingerprint("", a.published), TypeError);
});

test("fingerprints: the construction as docs/E2E.md states it", async () => {
  // recomputed here from the description (label, lengths, iterations, digits), with node's own hash
  const { createHash } = await import("node:crypto");
  const d = await device();
  const id = "3f1c9a52-8d4e-4b7a-9c21-0a6b5e7d8f90";
  const spki = Buffer.from(d.published.slice(e2e.KEY_PREFIX.length), "base64");
  const len = (x) => Buffer.from([x.length >> 8, x.length & 0xff]);
  let h = createHash("sha512").update(Buffer.concat([Buffer.from("qms1 fingerprint"), Buffer.from([0]),
    len(Buffer.from(id)), Buffer.from(id), len(spki), spki])).digest();
  for (let i = 1; i < 5200; i++) h = createHash("sha512").update(Buffer.concat([h, spki])).digest();
  const groups = [];
  for (let g = 0; g < 6; g++) groups.push(String(h.readUIntBE(g * 5, 5) % 100000).padStart(5, "0"));
  assert.equal(await e2e.fingerprint(id, d.published), groups.join(" "));
  assert.equal(e2e.FP_ITERATIONS, 5200);
});

test("keyStatus: only a well-formed P-256 key on the curve is a key", async () => {
  const d = await device();
  assert.equal(await e2e.keyStatus(d.published), "ok");
  const head = Buffer.from("3059301306072a8648ce3d020106082a8648ce3d030107034200", "hex");
  const spki = Buffer.from(d.published.slice(e2e.KEY_PREFIX.length), "base64");
  const offCurve = Buffer.concat([head, Buffer.from([4]), Buffer.alloc(64, 0xff)]);
  const compressed = Buffer.concat([head.subarray(0, 25), Buffer.from([0x22, 0x00, 0x02]), spki.subarray(28, 60)]);
  for (const [k, want] of [
    [undefined, "none"], [null, "none"], ["", "none"],
    [42, "malformed"], [{}, "malformed"], [["qms1:p256:"], "malformed"],
    ["-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----", "unsupported"], ["qms2:x25519:AAAA", "unsupported"],
    ["qms1:p256:", "malformed"], ["qms1:p256:!!!!", "malformed"], ["qms1:p256:AAAA", "malformed"],
    [e2e.KEY_PREFIX + offCurve.toString("base64"), "malformed"],
    [e2e.KEY_PREFIX + compressed.toString("base64"), "malformed"],
    [e2e.KEY_PREFIX + Buffer.alloc(91, 7).toString("base64"), "malformed"],
    [d.published + "=", "malformed"], [d.published.replace(/==$/, ""), "malformed"],
    [d.published + "\n", "malformed"], [" " + d.published, "unsupported"],
    [e2e.KEY_PREFIX + "x".repeat(100000), "malformed"],
  ]) assert.equal(await e2e.keyStatus(k), want, String(k).slice(0, 40));
});

test("pair keys agree across the two ends and are not extractable", async () => {
  const a = await device(), b = await device();
  const kab = await e2e.derivePairKey(a.privateKey, a.published, b.published);
  const kba = await e2e.derivePairKey(b.privateKey, b.published, a.published);
  assert.equal(kab.extractable, false);
  assert.equal(kab.algorithm.length, 256);
  const iv = new Uint8Array(12);
  const ct = await subtle.encrypt({ name: "AES-GCM", iv }, kab, new TextEncoder().encode("x"));
  assert.equal(new TextDecoder().decode(await subtle.decrypt({ name: "AES-GCM", iv }, kba, ct)), "x");
});

test("too long messages are refused before sending", async () => {
  const { ab } = await pair();
  await assert.rejects(ab.encrypt("x".repeat(e2e.MAX_TEXT_BYTES)), RangeError);
  const { envelope } = await ab.encrypt("y".repeat(e2e.MAX_TEXT_BYTES - 100));
  assert.ok(new TextEncoder().encode(envelope).length < 65536, "fits the server's message limit");
});

test("util: chat URL choice", () => {
  const page = (href) => new URL(href);
  assert.equal(chatUrl("ws://127.0.0.1:12345", page("http://127.0.0.1:8080/")), "ws://127.0.0.1:12345");
  assert.equal(chatUrl("wss://chat.example:12345", page("https://chat.example:8443/")), "wss://chat.example:12345");
  // opened under another name than the configured one: same origin /ws
  assert.equal(chatUrl("ws://localhost:12345", page("http://192.168.1.9:8080/")), "ws://192.168.1.9:8080/ws");
  assert.equal(chatUrl("ws://localhost:12345", page("https://chat.example:8443/x")), "wss://chat.example:8443/ws");
  // an https page never downgrades to ws:
  assert.equal(chatUrl("ws://chat.example:12345", page("https://chat.example/")), "wss://chat.example/ws");
  // placeholders not filled in
  assert.equal(chatUrl("%SERVER_PROTOCOL%://x", page("http://h:1/")), "ws://h:1/ws");
  // IPv6 literal
  assert.equal(chatUrl("ws://::1:12345", page("http://[::1]:8080/")), "ws://[::1]:12345");
  assert.equal(chatUrl("ws://localhost:12345", page("file:///tmp/index.html")), "ws://localhost:12345");
});

test("util: backoff grows to 30 s with jitter", () => {
  assert.equal(backoffDelay(0, () => 0.5), 500);
  assert.equal(backoffDelay(1, () => 0.5), 1000);
  assert.equal(backoffDelay(3, () => 0.5), 4000);
  assert.equal(backoffDelay(20, () => 0.5), 30000);
  assert.equal(backoffDelay(0, () => 0), 375);
  assert.equal(backoffDelay(0, () => 0.999999), 625);
});

test("util: name and password validation, password digest", async () => {
  assert.equal(nameError("alice"), "");
  assert.equal(nameError("ä".repeat(64)), "");
  assert.match(nameError(""), /Enter a name/);
  assert.match(nameError("x".repeat(65)), /at most 64/);
  assert.match(nameError("a\u200bb"), /invisible/);
  assert.match(nameError("a\nb"), /control/);
  assert.match(nameError(" a"), /space/);
  assert.equal(passwordError("secret12", "", false), "");
  assert.match(passwordError("", "", false), /Enter a password/);
  assert.match(passwordError("short", "short", true), /at least 8/);
  assert.match(passwordError("longenough", "longenougH", true), /do not match/);
  assert.equal(passwordError("longenough", "longenough", true), "");
  // the original client's value: SHA-256 hex of the (trimmed) password
  assert.equal(await passwordDigest(" abc "), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
});

const ID = (n) => `${String(n).padStart(8, "0")}-0000-4000-8000-000000000000`;

test("validate: ids, names, times and user entries as the server must send them", () => {
  assert.equal(check.isUserId("3f1c9a52-8d4e-4b7a-9c21-0a6b5e7d8f90"), true);
  for (const bad of ["__proto__", "constructor", "3F1C9A52-8D4E-4B7A-9C21-0A6B5E7D8F90",
    "3f1c9a52-8d4e-1b7a-9c21-0a6b5e7d8f90", "3f1c9a52-8d4e-4b7a-9c21-0a6b5e7d8f90 ", 42, null, {}, ""])
    assert.equal(check.isUserId(bad), false, String(bad));
  assert.equal(check.isMessageId("w8Yk3yZ0aQk2xV1b"), true);
  assert.equal(check.isMessageId("a".repeat(65)), false);
  assert.equal(check.isMessageId("a b"), false);
  assert.equal(check.validName("alice"), "alice");
  assert.equal(check.validName("a\u0007b"), null);
  assert.equal(check.validName({ toString: () => "x" }), null);
  assert.equal(check.validTime(1764000000123), 1764000000123);
  for (const bad of [-1, 1.5, "1", NaN, Infinity, 9e15, null]) assert.equal(check.validTime(bad), null, String(bad));
  assert.equal(check.errorText({ html: 1 }, "fallback"), "fallback");
  assert.equal(check.errorText("a\u202eb", "x"), "a b");
  assert.deepEqual(check.userEntry({ id: ID(1), name: "bob", publicKey: "k", extra: 1 }), { id: ID(1), name: "bob", publicKey: "k" });
  assert.deepEqual(check.userEntry({ id: ID(1), name: "bob" }), { id: ID(1), name: "bob", publicKey: "" });
  for (const bad of [null, "x", [ID(1)], { id: "__proto__", name: "x" }, { id: ID(1), name: "" },
    { id: ID(1), name: "bob", publicKey: 5 }, { id: ID(1), name: "bob", publicKey: "k".repeat(16385) }])
    assert.equal(check.userEntry(bad), null, JSON.stringify(bad));
});

test("validate: look-alike names share a comparison form", () => {
  const k = check.lookalikeKey;
  assert.equal(k("bob"), k("b\u03bfb"));          // Greek omicron
  assert.equal(k("bob"), k("b\u043eb"));          // Cyrillic o
  assert.equal(k("paypal"), k("\u0440\u0430\u0443\u0440\u0430l"));
  assert.equal(k("Bob"), k("BOB"));
  assert.equal(k("modern"), k("rnodern"));
  assert.equal(k("bill"), k("biII"));              // capital I as l
  assert.equal(k("ｂｏｂ"), k("bob"));               // fullwidth
  assert.equal(k("José"), k("Jose"));
  assert.notEqual(k("bob"), k("rob"));
  assert.notEqual(k("tim"), k("tom"));
});

/** localStorage for node: a Map behind the Storage methods. */
function memoryStorage() {
  const m = new Map();
  return { getItem: (k) => (m.has(k) ? m.get(k) : null), setItem: (k, v) => m.set(k, String(v)), map: m };
}

test("known keys: trust on first use, changes pending until accepted, verified binds to one key", () => {
  const store = memoryStorage();
  const known = new KnownKeys(ID(0), store);
  const K1 = e2e.KEY_PREFIX + "A".repeat(124), K2 = e2e.KEY_PREFIX + "B".repeat(124), K3 = e2e.KEY_PREFIX + "C".repeat(124);
  assert.equal(known.observe(ID(1), "bob", K1), "new");
  assert.equal(known.observe(ID(1), "bob", K1), "same");
  assert.equal(known.setVerified(ID(1), K1, true), true);
  assert.equal(known.isVerified(ID(1), K1), true);
  assert.equal(known.observe(ID(1), "bob", K2), "changed");
  assert.equal(known.isVerified(ID(1), K1), false, "a pending change suspends the mark");
  assert.equal(known.get(ID(1)).key, K1, "the accepted key stays until the person accepts");
  assert.equal(known.observe(ID(1), "bob", K3), "changed");
  assert.equal(known.accept(ID(1), K2), false, "only the key pending now can be accepted");
  assert.equal(known.observe(ID(1), "bob", K1), "same", "back to the accepted key");
  assert.equal(known.isVerified(ID(1), K1), true);
  assert.equal(known.observe(ID(1), "bob", K2), "changed");
  assert.equal(known.accept(ID(1), K2), true);
  assert.equal(known.isVerified(ID(1), K2), false, "accepting is not verifying");
  assert.deepEqual(known.get(ID(1)).previous, [K1]);
  assert.equal(known.setVerified(ID(1), K3, true), false, "a key that is neither accepted nor pending");
  // what was saved loads again the same way
  const again = new KnownKeys(ID(0), store);
  assert.equal(again.get(ID(1)).key, K2);
  assert.deepEqual(again.get(ID(1)).previous, [K1]);
  // ids that are not ids never get in
  assert.throws(() => known.observe("__proto__", "x", K1), TypeError);
  assert.throws(() => known.observe("constructor", "x", K1), TypeError);
  assert.throws(() => known.observe(ID(2), "x", "not a key"), TypeError);
  assert.equal(known.get("__proto__"), null);
  assert.equal({}.key, undefined);
  assert.equal({}.previous, undefined);
});

test("known keys: stored data is checked like server data; version 1 records are carried over", () => {
  const K1 = e2e.KEY_PREFIX + "A".repeat(124), K2 = e2e.KEY_PREFIX + "B".repeat(124);
  const store = memoryStorage();
  // version 1: key was the newest, previous the accepted one; and the ids that polluted Object.prototype
  // (written as text: in an object literal __proto__ would set the prototype, not a key)
  store.setItem("qms1.known." + ID(0), "{" + [
    `"${ID(1)}":${JSON.stringify({ key: K2, previous: K1, name: "bob", verified: false })}`,
    `"${ID(2)}":${JSON.stringify({ key: K1, name: "carol", verified: true })}`,
    `"__proto__":${JSON.stringify({ key: K1, previous: K2 })}`,
    `"constructor":${JSON.stringify({ key: K1 })}`,
    `"${ID(3)}":${JSON.stringify({ key: "junk" })}`].join(",") + "}");
  assert.ok(Object.hasOwn(JSON.parse(store.getItem("qms1.known." + ID(0))), "__proto__"));
  const known = new KnownKeys(ID(0), store);
  assert.deepEqual([known.get(ID(1)).key, known.get(ID(1)).pending], [K1, K2]);
  assert.equal(known.isVerified(ID(2), K1), true);
  assert.equal(known.get(ID(3)), null);
  assert.deepEqual([...known.entries()].map(([id]) => id).sort(), [ID(1), ID(2)]);
  assert.equal({}.key, undefined);
  for (const junk of ["not json", "[1,2]", "null", '{"v":2,"peers":"x"}', '{"v":2,"peers":[["__proto__",{"key":"qms1:p256:x"}]]}'])
    assert.equal([...new KnownKeys(ID(9), { getItem: () => junk, setItem() {} }).entries()].length, 0, junk);
});

test("seen messages: replays caught across instances, bounded, too old refused", () => {
  const store = memoryStorage();
  const seen = new ReplayGuard(ID(0), store);
  assert.equal(seen.check(ID(1), "m1", 1000), "new");
  seen.add(ID(1), "m1", 1000);
  assert.equal(seen.check(ID(1), "m1", 1000), "replay");
  assert.equal(new ReplayGuard(ID(0), store).check(ID(1), "m1", 1000), "replay", "a fresh tab knows it too");
  assert.equal(seen.check(ID(2), "m1", 1000), "new", "per contact");
  for (let i = 2; i <= ReplayGuard.PER_PEER + 10; i++) seen.add(ID(1), "m" + i, 1000 + i);
  const g = new ReplayGuard(ID(0), store);
  assert.equal(g.check(ID(1), "m1", 1000), "too-old", "forgotten, but dated before what is remembered");
  assert.equal(g.check(ID(1), "m11", 1011), "replay");
  assert.equal(g.check(ID(1), "new-one", 5000), "new");
  assert.ok(store.map.get("qms1.seen." + ID(0)).length < 20000, "bounded");
  for (let p = 10; p < 10 + ReplayGuard.MAX_PEERS + 5; p++) seen.add(ID(p), "x", 7);
  assert.ok([...seen.map.values()].filter((v) => v.seen.length).length <= ReplayGuard.MAX_PEERS);
  assert.equal(seen.check(ID(1), "m20", 1020), "too-old", "the least recent contact's ids went, its floor stayed");
});

// ---- groups: sender keys (docs/E2E.md, "Groups") ----------------------------

async function senderKeyOf(groupId, senderId, epoch = 1, gen = 1) {
  const { key, raw } = await e2e.newSenderKey();
  return { groupId, senderId, epoch, gen, key, raw, rx: await e2e.importSenderKey(raw) };
}

test("sender keys: random, 256 bits, not extractable, a receiver's copy can only decrypt", async () => {
  const a = await e2e.newSenderKey(), b = await e2e.newSenderKey();
  assert.equal(a.raw.length, 32);
  assert.notDeepEqual(a.raw, b.raw);
  assert.equal(a.key.extractable, false);
  assert.equal(a.key.algorithm.length, 256);
  await assert.rejects(subtle.exportKey("raw", a.key));
  const rx = await e2e.importSenderKey(a.raw);
  assert.equal(rx.extractable, false);
  assert.deepEqual(rx.usages, ["decrypt"]);
  await assert.rejects(e2e.importSenderKey(new Uint8Array(16)), e2e.DecryptError);
});

test("group messages: round trip; the AAD binds group, sender, id, epoch and generation", async () => {
  const s = await senderKeyOf("grp1", "id-alice", 3, 2);
  const { id, envelope } = await e2e.encryptGroup(s, "hello group", 1234);
  const e = e2e.parseGroupEnvelope(envelope);
  assert.equal(e.id, id);
  assert.deepEqual([e.v, e.alg, e.g, e.e, e.gen], ["qms1g", "sk-aes256gcm", "grp1", 3, 2]);
  assert.ok(!envelope.includes("hello"), "no plaintext in the envelope");
  assert.equal(e2e.b64urlToBytes(e.ct).length % 64, 16, "padded to 64 bytes, plus the tag");
  assert.deepEqual(await e2e.decryptGroup(e, { groupId: "grp1", senderId: "id-alice", key: s.rx }),
    { id, text: "hello group", ts: 1234 });

  // the AAD recomputed from docs/E2E.md decrypts it; any other sender, group, id, epoch or generation does not
  const open = (aadParts, env = e) => subtle.decrypt({ name: "AES-GCM", iv: e2e.b64urlToBytes(env.iv),
    additionalData: new TextEncoder().encode(JSON.stringify(aadParts)), tagLength: 128 }, s.rx, e2e.b64urlToBytes(env.ct));
  await open(["qms1g", "grp1", "id-alice", id, 3, 2]);
  for (const wrong of [["qms1g", "grp1", "id-bob", id, 3, 2], ["qms1g", "grp2", "id-alice", id, 3, 2],
    ["qms1g", "grp1", "id-alice", id, 4, 2], ["qms1g", "grp1", "id-alice", id, 3, 1], ["qms1", "grp1", "id-alice", id, 3, 2]])
    await assert.rejects(open(wrong), undefined, JSON.stringify(wrong));

  await assert.rejects(e2e.decryptGroup(e, { groupId: "grp1", senderId: "id-bob", key: s.rx }), { reason: "integrity" });
  await assert.rejects(e2e.decryptGroup(e, { groupId: "grp2", senderId: "id-alice", key: s.rx }), { reason: "group" });
  const moved = e2e.parseGroupEnvelope(tamper(envelope, "g", () => "grp2"));
  await assert.rejects(e2e.decryptGroup(moved, { groupId: "grp2", senderId: "id-alice", key: s.rx }), { reason: "integrity" });
  for (const [f, fn] of [["e", (x) => x + 1], ["gen", (x) => x + 1], ["id", () => e2e.bytesToB64url(new Uint8Array(16))],
    ["iv", (x) => flipB64url(x)], ["ct", (x) => flipB64url(x, 5)]]) {
    const t = e2e.parseGroupEnvelope(tamper(envelope, f, fn));
    await assert.rejects(e2e.decryptGroup(t, { groupId: "grp1", senderId: "id-alice", key: s.rx }), { reason: "integrity" }, f);
  }
  // another member's key (or the key of another epoch) opens nothing
  const other = await senderKeyOf("grp1", "id-alice", 4, 1);
  await assert.rejects(e2e.decryptGroup(e, { groupId: "grp1", senderId: "id-alice", key: other.rx }), { reason: "integrity" });
});

test("group envelopes are checked by shape before any crypto", () => {
  const good = { v: "qms1g", alg: "sk-aes256gcm", g: "grp1", e: 1, gen: 1, id: "A".repeat(22), iv: "B".repeat(16), ct: "C".repeat(40) };
  assert.ok(e2e.parseGroupEnvelope(JSON.stringify(good)));
  for (const bad of [{ v: "qms1" }, { alg: "x" }, { g: "" }, { g: "a b" }, { g: "x".repeat(65) }, { e: 0 }, { e: 1.5 },
    { e: "1" }, { gen: -1 }, { id: "A".repeat(21) }, { iv: "B".repeat(15) }, { ct: "C+" }, { ct: 5 }])
    assert.throws(() => e2e.parseGroupEnvelope(JSON.stringify({ ...good, ...bad })), e2e.DecryptError, JSON.stringify(bad));
  for (const t of ["", "null", "[]", "{", JSON.stringify({ v: "qms1", alg: "p256-aes256gcm" })])
    assert.throws(() => e2e.parseGroupEnvelope(t), e2e.DecryptError);
});

test("sender key messages: pairwise encrypted control messages, told apart from chat text", async () => {
  const { ab, ba } = await pair();
  const { raw } = await e2e.newSenderKey();
  const mh = await e2e.memberHash("grp1", 2, ["id-bob", "id-alice"]);
  const control = e2e.senderKeyControl({ groupId: "grp1", epoch: 2, gen: 1, raw, mh,
    change: { op: "add", members: Array.from({ length: 1000 }, (_, i) => `id-${i}`) }, ts: 99 });
  const { envelope } = await ab.encryptControl(control);
  assert.ok(!envelope.includes(e2e.bytesToB64url(raw)), "the key is not in the clear");
  const got = await ba.decrypt(envelope);
  assert.equal(got.text, undefined, "a control message is never chat text");
  const k = e2e.parseSenderKeyControl(got.control);
  // the change names no members (the member hash binds the list), so a key
  // message for a group of 1,000 is as small as for one of 2
  assert.deepEqual(k, { groupId: "grp1", epoch: 2, gen: 1, raw, mh, change: { op: "add" }, ts: 99 });
  assert.ok(JSON.stringify(control).length < 400, "a key message's size does not grow with the group");
  // a chat message is still text, and an unknown control type is refused
  assert.equal((await ba.decrypt((await ab.encrypt("gk")).envelope)).text, "gk");
  await assert.rejects(ba.decrypt((await ab.encryptControl({ t: "zz", ts: 1 })).envelope), { reason: "format" });
  // the pairwise AAD already binds sender and recipient: a third member cannot be handed bob's copy
  const carol = await device();
  const ca = await e2e.openChannel({ myId: "id-carol", myPrivateKey: carol.privateKey, myPublic: carol.published,
    peerId: "id-alice", peerPublic: (await pair()).a.published });
  await assert.rejects(ca.decrypt(envelope));
  // every field is checked
  for (const bad of [{ v: 2 }, { g: "a b" }, { e: 0 }, { gen: 1.5 }, { k: "AAAA" }, { k: 7 }, { mh: "x" },
    { ch: { op: "remove" } }, { ch: { op: "add", m: ["id-bob"] } }, { ts: -1 }])
    assert.throws(() => e2e.parseSenderKeyControl({ ...control, ...bad }), e2e.DecryptError, JSON.stringify(bad));
});

test("member hash: order-free, bound to group and epoch", async () => {
  const h = await e2e.memberHash("grp1", 2, ["b", "a", "c"]);
  assert.match(h, /^[A-Za-z0-9_-]{22}$/);
  assert.equal(await e2e.memberHash("grp1", 2, ["c", "a", "b"]), h);
  assert.notEqual(await e2e.memberHash("grp1", 3, ["a", "b", "c"]), h);
  assert.notEqual(await e2e.memberHash("grp2", 2, ["a", "b", "c"]), h);
  assert.notEqual(await e2e.memberHash("grp1", 2, ["a", "b"]), h);
  const want = e2e.bytesToB64url(new Uint8Array(await subtle.digest("SHA-256",
    new TextEncoder().encode(JSON.stringify(["qms1g members", "grp1", 2, ["a", "b", "c"]])))).subarray(0, 16));
  assert.equal(h, want, "the construction docs/E2E.md states");
});

// ---- groups.mjs: what the client believes of the server's group states ------

const U = (n) => `00000000-0000-4000-8000-${String(n).padStart(12, "0")}`;
function groupState(epoch, ids, { owner = U(1), name = "G" } = {}) {
  return { id: "grp1", name, owner, epoch, members: ids.map((id) => ({ id, name: `u${id.slice(-2)}`, publicKey: "",
    role: id === owner ? "owner" : "member" })) };
}

test("group book: epochs only rise, forks are refused, changes are reported", () => {
  const st = memoryStorage();
  const book = new GroupBook(U(2), st);
  let r = book.apply(groupState(1, [U(1), U(2), U(3)]), { op: "create", by: U(1), members: [U(2), U(3)] });
  assert.equal(r.verdict, "new");
  r = book.apply(groupState(2, [U(1), U(2)]), { op: "remove", by: U(1), members: [U(3)] });
  assert.deepEqual([r.verdict, r.added, r.removed], ["advance", [], [U(3)]]);
  assert.equal(book.apply(groupState(1, [U(1), U(2), U(3)])).verdict, "stale", "an older epoch is refused");
  assert.equal(book.apply(groupState(2, [U(1), U(2), U(4)])).verdict, "fork", "the same epoch with other members");
  assert.equal(book.apply(groupState(2, [U(1), U(2)], { name: "H" })).verdict, "same");
  assert.equal(book.apply(groupState(3, [U(1), U(3)])).verdict, "not-member");
  assert.deepEqual(book.membersAt("grp1", 1), [U(1), U(2), U(3)]);
  assert.deepEqual(book.membersAt("grp1", 2), [U(1), U(2)]);
  // it survives a reload: the stale check still holds
  const again = new GroupBook(U(2), st);
  assert.equal(again.apply(groupState(1, [U(1), U(2), U(3)])).verdict, "stale");
  assert.equal(again.get("grp1").name, "H");
  // a group state that is not one is refused before it reaches the book
  assert.equal(checkedGroup({ ...groupState(1, [U(1)]), owner: U(9) }), null);
  assert.equal(checkedGroup({ ...groupState(1, [U(1), U(1)]) }), null);
  assert.equal(checkedGroup({ ...groupState(0, [U(1)]) }), null);
  assert.equal(checkedGroup({ ...groupState(1, [U(1)]), id: "__proto__ x" }), null);
});

test("group book: new members are unconfirmed until this client, their adder (owner or admin) or the person vouches", () => {
  const book = new GroupBook(U(2), memoryStorage());
  book.apply(groupState(1, [U(1), U(2), U(3)]), { op: "create", by: U(1), members: [U(2), U(3)] });
  assert.deepEqual(book.unconfirmed("grp1"), [U(1), U(3)], "a group new to us: nobody vouched yet");
  assert.deepEqual(book.vouch("grp1", 1, U(3), { op: "create", members: [] }), [], "a plain member cannot vouch");
  assert.deepEqual(book.vouch("grp1", 1, U(1), null), [], "a key without the change does not vouch");
  assert.deepEqual(book.vouch("grp1", 1, U(1), { op: "create", members: [U(2), U(3)] }), [U(1), U(3)]);
  assert.deepEqual(book.unconfirmed("grp1"), []);
  // the server adds mallory (5): unconfirmed; bob (3) stays confirmed
  book.apply(groupState(2, [U(1), U(2), U(3), U(5)]), { op: "add", by: U(1), members: [U(5)] });
  assert.deepEqual(book.unconfirmed("grp1"), [U(5)]);
  assert.deepEqual(book.vouch("grp1", 1, U(1), { op: "add", members: [U(5)] }), [], "a vouch for another epoch counts not");
  assert.deepEqual(book.trustAll("grp1"), [U(5)], "the person's choice");
  // our own add is confirmed at once, and we say so in our key messages
  const own = new GroupBook(U(1), memoryStorage());
  own.apply(groupState(1, [U(1), U(2)]), { op: "create", by: U(1), members: [U(2)] }, { op: "create", members: [U(2)] });
  assert.deepEqual(own.unconfirmed("grp1"), []);
  const r = own.apply(groupState(2, [U(1), U(2), U(3), U(5)]), { op: "add", by: U(1), members: [U(3), U(5)] },
    { op: "add", members: [U(3)] });
  assert.deepEqual(own.unconfirmed("grp1"), [U(5)], "the server added one more than we asked for");
  assert.deepEqual(r.record.author, { epoch: 2, op: "add", members: [U(3)] });
});
