// crypto.test.mjs - unit tests of html/crypto.mjs and html/util.mjs in node
// (globalThis.crypto.subtle). Key storage (IndexedDB) is covered in the browser tests.

import { test } from "node:test";
import assert from "node:assert/strict";
import * as e2e from "../../html/crypto.mjs";
import { chatUrl, backoffDelay, nameError, passwordError, passwordDigest } from "../../html/util.mjs";

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

test("both sides compute the same safety number; it changes with either key", async () => {
  const a = await device(), b = await device(), c = await device();
  const ab = await e2e.safetyNumber(a.published, b.published);
  assert.equal(ab, await e2e.safetyNumber(b.published, a.published));
  assert.match(ab, /^(\d{5} ){7}\d{5}$/);
  assert.notEqual(ab, await e2e.safetyNumber(a.published, c.published));
  assert.notEqual(ab, await e2e.safetyNumber(c.published, b.published));
  await assert.rejects(e2e.safetyNumber(a.published, "-----BEGIN PUBLIC KEY-----"), e2e.UnsupportedKeyError);
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
