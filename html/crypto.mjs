// crypto.mjs - end-to-end encryption of chat messages with WebCrypto only.
//
// Pure functions over CryptoKeys and strings: no DOM, no storage, so the same
// module runs in the browser and in node (globalThis.crypto.subtle) for unit
// tests. Key storage lives in keystore.mjs. The formats are described in
// docs/E2E.md; change them only together with that document and a new
// version string.
//
//   public key   "qms1:p256:" + base64(SPKI of an ECDH P-256 public key)
//   pair key     AES-256-GCM key = HKDF-SHA-256(ECDH(myPriv, peerPub),
//                  salt = SHA-256(SALT_LABEL 0x00 | len|spkiLo | len|spkiHi),
//                  info = INFO_LABEL)
//   envelope     JSON {"v":"qms1","alg":"p256-aes256gcm","id","sk","rk","iv","ct"}
//   AAD          UTF-8 JSON ["qms1", senderId, recipientId, id, sk, rk]
//   plaintext    UTF-8 JSON {"text","ts"} padded with spaces to a multiple of 64 bytes
//   fingerprint  per identity: SHA-512 over FP_LABEL 0x00 | len|userId | len|spki, then
//                FP_ITERATIONS - 1 times SHA-512(previous | spki); 30 digits from 30 bytes

export const KEY_PREFIX = "qms1:p256:";
export const ENVELOPE_VERSION = "qms1";
export const ENVELOPE_ALG = "p256-aes256gcm";
export const SALT_LABEL = "qms1 pair salt";
export const INFO_LABEL = "qms1 p256 hkdf-sha256 aes-256-gcm message key";
export const FP_LABEL = "qms1 fingerprint";
// Iterations of SHA-512 per fingerprint: each guess of an attacker who looks
// for a key with a given fingerprint costs this many hashes (docs/E2E.md).
export const FP_ITERATIONS = 5200;
export const FP_GROUPS = 6;           // of 5 digits: 30 digits per identity
// DER of an SPKI for a P-256 public key, up to the uncompressed point (0x04 x y).
const P256_SPKI_HEAD = [0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
  0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04];
export const SPKI_BYTES = 91;
export const PAD_BLOCK = 64;
// The server allows 65536 bytes per message; base64 and JSON cost about 4/3.
export const MAX_TEXT_BYTES = 32768;

const ECDH = { name: "ECDH", namedCurve: "P-256" };
const enc = new TextEncoder();
const dec = new TextDecoder("utf-8", { fatal: true });

/** A peer key that is not ours (e.g. the original client's PEM RSA key). */
export class UnsupportedKeyError extends Error {
  constructor(message = "unsupported key") {
    super(message);
    this.name = "UnsupportedKeyError";
  }
}

/** A message that cannot be decrypted; `reason` is a short machine code. */
export class DecryptError extends Error {
  constructor(reason, message) {
    super(message);
    this.name = "DecryptError";
    this.reason = reason;
  }
}

function subtle() {
  const s = globalThis.crypto && globalThis.crypto.subtle;
  if (!s) throw new Error("WebCrypto is not available (a secure context is needed)");
  return s;
}

/** True when this environment can do the end-to-end encryption. */
export function isSupported() {
  return !!(globalThis.crypto && globalThis.crypto.subtle && globalThis.crypto.getRandomValues);
}

// ---- encodings -------------------------------------------------------------

export function bytesToB64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000)
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

export function b64ToBytes(text) {
  if (typeof text !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0)
    throw new Error("not base64");
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

export function bytesToB64url(bytes) {
  return bytesToB64(bytes).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export function b64urlToBytes(text) {
  if (typeof text !== "string" || !/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1)
    throw new Error("not base64url");
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
  return b64ToBytes(b64 + "===".slice((b64.length + 3) % 4));
}

function randomBytes(n) {
  const b = new Uint8Array(n);
  globalThis.crypto.getRandomValues(b);
  return b;
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

function compareBytes(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

const len16 = (x) => new Uint8Array([x.length >> 8, x.length & 0xff]);

// Two length-prefixed byte strings in a canonical (sorted) order, so that both
// ends of a conversation compute the same bytes.
function canonicalPair(label, a, b) {
  const [lo, hi] = compareBytes(a, b) <= 0 ? [a, b] : [b, a];
  return concat(enc.encode(label), new Uint8Array([0]), len16(lo), lo, len16(hi), hi);
}

async function sha256(bytes) {
  return new Uint8Array(await subtle().digest("SHA-256", bytes));
}

async function sha512(bytes) {
  return new Uint8Array(await subtle().digest("SHA-512", bytes));
}

// ---- keys ------------------------------------------------------------------

/** A fresh device key pair; the private key cannot be exported. */
export async function generateDeviceKeyPair() {
  return subtle().generateKey(ECDH, false, ["deriveBits"]);
}

/** The string published as `pubKey`. */
export async function exportPublicKey(publicKey) {
  const spki = new Uint8Array(await subtle().exportKey("spki", publicKey));
  return KEY_PREFIX + bytesToB64(spki);
}

/**
 * True when `text` claims to be one of our public keys (our prefix). Whether
 * it really is one is keyStatus()'s question.
 */
export function isOurKeyFormat(text) {
  return typeof text === "string" && text.startsWith(KEY_PREFIX);
}

/**
 * The SPKI bytes of a published key, checked strictly: our prefix, canonical
 * base64 of exactly 91 bytes, the DER of a P-256 key with an uncompressed
 * point. Throws UnsupportedKeyError ("malformed key" for a key with our
 * prefix that is not well formed).
 */
function spkiOf(text) {
  if (!isOurKeyFormat(text)) throw new UnsupportedKeyError();
  const b64 = text.slice(KEY_PREFIX.length);
  let spki;
  try {
    spki = b64ToBytes(b64);
  } catch {
    throw new UnsupportedKeyError("malformed key");
  }
  if (spki.length !== SPKI_BYTES || bytesToB64(spki) !== b64 || P256_SPKI_HEAD.some((b, i) => spki[i] !== b))
    throw new UnsupportedKeyError("malformed key");
  return spki;
}

/**
 * What a `pubKey` from the server is: "ok" (one of ours, and a point on the
 * curve), "unsupported" (another client's kind of key, e.g. PEM RSA), "none"
 * (absent or empty) or "malformed" (our prefix but not a valid key, or not a
 * string at all). Nothing else may be stored or used as a key.
 */
export async function keyStatus(text) {
  if (text === undefined || text === null || text === "") return "none";
  if (typeof text !== "string") return "malformed";
  if (!isOurKeyFormat(text)) return "unsupported";
  try {
    await importPublicKey(text);
    return "ok";
  } catch {
    return "malformed";
  }
}

/** Imports a published key; throws UnsupportedKeyError for anything else. */
export async function importPublicKey(text) {
  const spki = spkiOf(text);
  try {
    return await subtle().importKey("spki", spki, ECDH, true, []);
  } catch {
    throw new UnsupportedKeyError("malformed key");
  }
}

/** Short id of a published key, carried in envelopes (not secret). */
export async function keyId(text) {
  return bytesToB64url((await sha256(spkiOf(text))).subarray(0, 12));
}

/**
 * The fingerprint of one identity: a user id with the key it publishes, 30
 * digits in 6 groups of 5. Each person compares two of them with the other
 * (their own and the other's), as in Signal's safety numbers: a server in the
 * middle must then find a key whose fingerprint for the victim's id matches a
 * fixed target (a second preimage of about 2^100 guesses, each
 * FP_ITERATIONS hashes), not merely any collision between two numbers it
 * controls both sides of. The id is bound in, so a key cannot be moved to
 * another account either.
 */
export async function fingerprint(userId, publicText) {
  if (typeof userId !== "string" || userId === "") throw new TypeError("fingerprint needs a user id");
  const spki = spkiOf(publicText);
  const id = enc.encode(userId);
  let h = await sha512(concat(enc.encode(FP_LABEL), new Uint8Array([0]), len16(id), id, len16(spki), spki));
  for (let i = 1; i < FP_ITERATIONS; i++) h = await sha512(concat(h, spki));
  const groups = [];
  for (let g = 0; g < FP_GROUPS; g++) {
    let v = 0;
    for (let j = 0; j < 5; j++) v = v * 256 + h[g * 5 + j]; // 40 bits: exact in a double
    groups.push(String(v % 100000).padStart(5, "0"));
  }
  return groups.join(" ");
}

/** The AES-256-GCM key shared by the two ends of a conversation. */
export async function derivePairKey(myPrivateKey, myPublicText, peerPublicText) {
  const peerKey = await importPublicKey(peerPublicText);
  const secret = await subtle().deriveBits({ name: "ECDH", public: peerKey }, myPrivateKey, 256);
  const salt = await sha256(canonicalPair(SALT_LABEL, spkiOf(myPublicText), spkiOf(peerPublicText)));
  const ikm = await subtle().importKey("raw", secret, "HKDF", false, ["deriveKey"]);
  return subtle().deriveKey(
    { name: "HKDF", hash: "SHA-256", salt, info: enc.encode(INFO_LABEL) },
    ikm, { name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]);
}

// ---- messages --------------------------------------------------------------

function aad(senderId, recipientId, id, sk, rk) {
  return enc.encode(JSON.stringify([ENVELOPE_VERSION, senderId, recipientId, id, sk, rk]));
}

function pad(bytes) {
  const size = Math.ceil((bytes.length + 1) / PAD_BLOCK) * PAD_BLOCK;
  const out = new Uint8Array(size).fill(0x20);
  out.set(bytes);
  return out;
}

/** Is this string one of our envelopes (by shape, before any crypto)? */
export function parseEnvelope(text) {
  let e;
  try { e = JSON.parse(text); } catch { e = null; }
  if (!e || typeof e !== "object" || e.v !== ENVELOPE_VERSION)
    throw new DecryptError("format", "not an end-to-end encrypted message");
  if (e.alg !== ENVELOPE_ALG)
    throw new DecryptError("format", "unsupported encryption");
  for (const f of ["id", "sk", "rk", "iv", "ct"])
    if (typeof e[f] !== "string" || !/^[A-Za-z0-9_-]+$/.test(e[f]))
      throw new DecryptError("format", "malformed envelope");
  if (e.id.length !== 22 || e.iv.length !== 16 || e.sk.length !== 16 || e.rk.length !== 16)
    throw new DecryptError("format", "malformed envelope");
  return e;
}

/**
 * One conversation seen from this device: me (id, key pair, published key)
 * and a peer (id, published key). encrypt() gives the string for the
 * protocol's "message" field; decrypt() reverses a peer's envelope and throws
 * DecryptError when it is not for this pair or was altered.
 */
export async function openChannel({ myId, myPrivateKey, myPublic, peerId, peerPublic }) {
  const key = await derivePairKey(myPrivateKey, myPublic, peerPublic);
  const myKid = await keyId(myPublic);
  const peerKid = await keyId(peerPublic);

  async function encrypt(text, ts = Date.now()) {
    return seal({ text: String(text), ts });
  }

  // A control message (a group's sender key): the same envelope and AAD as
  // a chat message, a typed object instead of {"text"} inside. decrypt()
  // tells the two apart; a client without groups shows it as malformed.
  async function encryptControl(control) {
    if (!control || typeof control.t !== "string" || !Number.isSafeInteger(control.ts))
      throw new TypeError("a control message needs a type and a time");
    return seal(control);
  }

  async function seal(content) {
    const body = enc.encode(JSON.stringify(content));
    if (body.length > MAX_TEXT_BYTES) throw new RangeError("message is too long");
    const id = bytesToB64url(randomBytes(16));
    const iv = randomBytes(12);
    const ct = new Uint8Array(await subtle().encrypt(
      { name: "AES-GCM", iv, additionalData: aad(myId, peerId, id, myKid, peerKid), tagLength: 128 },
      key, pad(body)));
    const envelope = JSON.stringify({ v: ENVELOPE_VERSION, alg: ENVELOPE_ALG, id, sk: myKid, rk: peerKid,
                                      iv: bytesToB64url(iv), ct: bytesToB64url(ct) });
    return { id, envelope };
  }

  async function decrypt(envelopeText) {
    const e = parseEnvelope(envelopeText);
    if (e.rk !== myKid)
      throw new DecryptError("recipient-key", "encrypted for another key of yours (another device or an earlier login)");
    if (e.sk !== peerKid)
      throw new DecryptError("sender-key", "encrypted with a key this contact does not publish");
    let plain;
    try {
      plain = new Uint8Array(await subtle().decrypt(
        { name: "AES-GCM", iv: b64urlToBytes(e.iv), additionalData: aad(peerId, myId, e.id, e.sk, e.rk), tagLength: 128 },
        key, b64urlToBytes(e.ct)));
    } catch {
      throw new DecryptError("integrity", "the message was altered or was not meant for this conversation");
    }
    let body;
    try { body = JSON.parse(dec.decode(plain)); } catch { body = null; }
    if (body && typeof body === "object" && body.t !== undefined && Number.isSafeInteger(body.ts) && body.ts >= 0) {
      if (body.t !== CONTROL_KEY) throw new DecryptError("format", "unknown control message");
      return { id: e.id, ts: body.ts, control: body };
    }
    if (!body || typeof body.text !== "string" || !Number.isSafeInteger(body.ts) || body.ts < 0)
      throw new DecryptError("format", "malformed message content");
    return { id: e.id, text: body.text, ts: body.ts };
  }

  return { encrypt, encryptControl, decrypt, myKid, peerKid };
}

// ---- groups: sender keys ---------------------------------------------------
//
// Each member of a group has its own sender key per group, epoch (the
// server's counter of membership changes) and generation (a counter of keys
// within one epoch): AES-256-GCM, random. It reaches the other members
// inside a pairwise envelope (openChannel above) as a control message:
//
//   control      {"t":"gk","v":1,"g":group id,"e":epoch,"gen":generation,
//                 "k":base64url(32 key bytes),"mh":member hash,
//                 "ch"?:{"op":"create"|"add"},"ts":ms}
//                (ch names no members: mh binds the whole list, and a key
//                message stays small whatever the group's size)
//   member hash  base64url(first 16 bytes of SHA-256(UTF-8 JSON
//                 ["qms1g members", group id, epoch, sorted member ids])))
//   group msg    {"v":"qms1g","alg":"sk-aes256gcm","g","e","gen","id","iv","ct"}
//   group AAD    UTF-8 JSON ["qms1g", group id, sender id, id, epoch, generation]
//   plaintext    as for pairwise messages: {"text","ts"} padded to 64 bytes

export const GROUP_VERSION = "qms1g";
export const GROUP_ALG = "sk-aes256gcm";
export const CONTROL_KEY = "gk";        // the "t" of a sender-key control message
export const CONTROL_VERSION = 1;
export const MEMBERS_LABEL = "qms1g members";
// Group ids are chosen by the server: 1-64 characters of this alphabet.
const GROUP_ID = /^[A-Za-z0-9_-]{1,64}$/;
const MAX_EPOCH = Number.MAX_SAFE_INTEGER;

export function isGroupId(v) {
  return typeof v === "string" && GROUP_ID.test(v);
}

const isCounter = (v) => Number.isSafeInteger(v) && v >= 1 && v <= MAX_EPOCH;

/**
 * A fresh sender key: {key, raw}. `key` is a non-extractable AES-GCM key
 * for encrypting; `raw` the 32 bytes, exported once so that they can be
 * sent to the other members (pairwise encrypted). The caller keeps `raw`
 * in memory only, for as long as it may still have to send it.
 */
export async function newSenderKey() {
  const raw = randomBytes(32);
  const key = await subtle().importKey("raw", raw, { name: "AES-GCM" }, false, ["encrypt", "decrypt"]);
  return { key, raw };
}

/** A received sender key (32 bytes) as a non-extractable key that can only decrypt. */
export async function importSenderKey(raw) {
  if (!(raw instanceof Uint8Array) || raw.length !== 32) throw new DecryptError("format", "malformed sender key");
  return subtle().importKey("raw", raw, { name: "AES-GCM" }, false, ["decrypt"]);
}

/**
 * The hash of a group's member list at one epoch, carried in every sender
 * key message, so that two members can tell whether the server showed them
 * the same list.
 */
export async function memberHash(groupId, epoch, memberIds) {
  const ids = [...new Set(memberIds)].sort();
  const h = await sha256(enc.encode(JSON.stringify([MEMBERS_LABEL, groupId, epoch, ids])));
  return bytesToB64url(h.subarray(0, 16));
}

/** The plaintext object of a sender key message (for openChannel's encryptControl). */
export function senderKeyControl({ groupId, epoch, gen, raw, mh, change = null, ts = Date.now() }) {
  const c = { t: CONTROL_KEY, v: CONTROL_VERSION, g: groupId, e: epoch, gen, k: bytesToB64url(raw), mh, ts };
  if (change) c.ch = { op: change.op };
  return c;
}

/**
 * Checks a control message's content (already decrypted and authenticated
 * by the pairwise channel): {groupId, epoch, gen, raw, mh, change, ts}.
 * Throws DecryptError for anything not exactly as written above.
 */
export function parseSenderKeyControl(c) {
  const bad = (why) => { throw new DecryptError("format", `malformed sender key message (${why})`); };
  if (!c || typeof c !== "object" || c.t !== CONTROL_KEY) bad("type");
  if (c.v !== CONTROL_VERSION) bad("version");
  if (!isGroupId(c.g)) bad("group");
  if (!isCounter(c.e) || !isCounter(c.gen)) bad("epoch");
  if (typeof c.mh !== "string" || !/^[A-Za-z0-9_-]{22}$/.test(c.mh)) bad("member hash");
  let raw;
  try { raw = b64urlToBytes(c.k); } catch { bad("key"); }
  if (raw.length !== 32) bad("key");
  let change = null;
  if (c.ch !== undefined) {
    if (!c.ch || typeof c.ch !== "object" || (c.ch.op !== "create" && c.ch.op !== "add") ||
        Object.keys(c.ch).length !== 1) bad("change");
    change = { op: c.ch.op };
  }
  if (!Number.isSafeInteger(c.ts) || c.ts < 0) bad("time");
  return { groupId: c.g, epoch: c.e, gen: c.gen, raw, mh: c.mh, change, ts: c.ts };
}

function groupAad(groupId, senderId, id, epoch, gen) {
  return enc.encode(JSON.stringify([GROUP_VERSION, groupId, senderId, id, epoch, gen]));
}

/** A group message envelope by shape (before any crypto), or DecryptError. */
export function parseGroupEnvelope(text) {
  let e;
  try { e = JSON.parse(text); } catch { e = null; }
  if (!e || typeof e !== "object" || e.v !== GROUP_VERSION)
    throw new DecryptError("format", "not an end-to-end encrypted group message");
  if (e.alg !== GROUP_ALG) throw new DecryptError("format", "unsupported encryption");
  if (!isGroupId(e.g) || !isCounter(e.e) || !isCounter(e.gen)) throw new DecryptError("format", "malformed envelope");
  for (const f of ["id", "iv", "ct"])
    if (typeof e[f] !== "string" || !/^[A-Za-z0-9_-]+$/.test(e[f])) throw new DecryptError("format", "malformed envelope");
  if (e.id.length !== 22 || e.iv.length !== 16) throw new DecryptError("format", "malformed envelope");
  return e;
}

/**
 * Encrypts `text` to a group under my sender key {key} of (epoch, gen).
 * Returns {id, envelope}; `id` is also the request's id.
 */
export async function encryptGroup({ groupId, senderId, epoch, gen, key }, text, ts = Date.now()) {
  const body = enc.encode(JSON.stringify({ text: String(text), ts }));
  if (body.length > MAX_TEXT_BYTES) throw new RangeError("message is too long");
  const id = bytesToB64url(randomBytes(16));
  const iv = randomBytes(12);
  const ct = new Uint8Array(await subtle().encrypt(
    { name: "AES-GCM", iv, additionalData: groupAad(groupId, senderId, id, epoch, gen), tagLength: 128 }, key, pad(body)));
  const envelope = JSON.stringify({ v: GROUP_VERSION, alg: GROUP_ALG, g: groupId, e: epoch, gen, id,
                                    iv: bytesToB64url(iv), ct: bytesToB64url(ct) });
  return { id, envelope };
}

/**
 * Decrypts a parsed group envelope `e` that the server says `senderId` sent
 * to `groupId`, under that sender's key for (e.e, e.gen). The AAD binds the
 * group, the sender, the message id, the epoch and the generation: a
 * message moved to another group, given another sender, or relabelled
 * with another epoch does not decrypt. Returns {id, text, ts}.
 */
export async function decryptGroup(e, { groupId, senderId, key }) {
  if (e.g !== groupId) throw new DecryptError("group", "this message was written for another group");
  let plain;
  try {
    plain = new Uint8Array(await subtle().decrypt(
      { name: "AES-GCM", iv: b64urlToBytes(e.iv), additionalData: groupAad(groupId, senderId, e.id, e.e, e.gen),
        tagLength: 128 }, key, b64urlToBytes(e.ct)));
  } catch {
    throw new DecryptError("integrity", "the message was altered, or does not come from this sender and group");
  }
  let body;
  try { body = JSON.parse(dec.decode(plain)); } catch { body = null; }
  if (!body || typeof body.text !== "string" || !Number.isSafeInteger(body.ts) || body.ts < 0)
    throw new DecryptError("format", "malformed message content");
  return { id: e.id, text: body.text, ts: body.ts };
}
