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

export const KEY_PREFIX = "qms1:p256:";
export const ENVELOPE_VERSION = "qms1";
export const ENVELOPE_ALG = "p256-aes256gcm";
export const SALT_LABEL = "qms1 pair salt";
export const INFO_LABEL = "qms1 p256 hkdf-sha256 aes-256-gcm message key";
export const SAFETY_LABEL = "qms1 safety number";
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

// Two length-prefixed byte strings in a canonical (sorted) order, so that both
// ends of a conversation compute the same bytes.
function canonicalPair(label, a, b) {
  const [lo, hi] = compareBytes(a, b) <= 0 ? [a, b] : [b, a];
  const len = (x) => new Uint8Array([x.length >> 8, x.length & 0xff]);
  return concat(enc.encode(label), new Uint8Array([0]), len(lo), lo, len(hi), hi);
}

async function sha256(bytes) {
  return new Uint8Array(await subtle().digest("SHA-256", bytes));
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

/** True when `text` looks like one of our public keys (cheap, no import). */
export function isOurKeyFormat(text) {
  return typeof text === "string" && text.startsWith(KEY_PREFIX) && text.length < 400;
}

function spkiOf(text) {
  if (!isOurKeyFormat(text)) throw new UnsupportedKeyError();
  try {
    return b64ToBytes(text.slice(KEY_PREFIX.length));
  } catch {
    throw new UnsupportedKeyError("malformed key");
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
 * The safety number of a pair of keys: the same on both sides, 40 digits in
 * 8 groups of 5. It changes when either key changes.
 */
export async function safetyNumber(pubA, pubB) {
  const h = await sha256(canonicalPair(SAFETY_LABEL, spkiOf(pubA), spkiOf(pubB)));
  const groups = [];
  for (let i = 0; i < 32; i += 4) {
    const v = ((h[i] << 24) >>> 0) + (h[i + 1] << 16) + (h[i + 2] << 8) + h[i + 3];
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
    const body = enc.encode(JSON.stringify({ text: String(text), ts }));
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
    if (!body || typeof body.text !== "string" || typeof body.ts !== "number")
      throw new DecryptError("format", "malformed message content");
    return { id: e.id, text: body.text, ts: body.ts };
  }

  return { encrypt, decrypt, myKid, peerKid };
}
