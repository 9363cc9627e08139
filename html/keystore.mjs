// keystore.mjs - where the end-to-end keys live in the browser.
//
// Device keys: one ECDH key pair per (browser profile, account name) in
// IndexedDB. The CryptoKey objects are stored as they are (structured clone),
// so the private key stays non-extractable: page script can use it but never
// read its bytes.
//
// Known keys: the public keys accepted and seen for each contact, per
// signed-in user, in localStorage (public keys are not secret). They make key
// changes visible (trust on first use, then warn and hold) and bind
// "verified" to one exact key. Seen messages: the ids of messages already
// shown, per contact, so that a replay is caught in a fresh tab too.

import { generateDeviceKeyPair, exportPublicKey } from "./crypto.mjs";
import { isUserId } from "./validate.mjs";

const DB_NAME = "qms-e2e";
const DB_VERSION = 2;
const STORE = "device-keys";
// Group sender keys (version 2): non-extractable AES-GCM CryptoKeys, ours
// (encrypt) and the other members' (decrypt only), per signed-in user.
const SENDER_KEYS = "sender-keys";

function openDb() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB_NAME, DB_VERSION);
    req.onupgradeneeded = () => {
      const db = req.result;
      if (!db.objectStoreNames.contains(STORE)) db.createObjectStore(STORE);
      if (!db.objectStoreNames.contains(SENDER_KEYS)) db.createObjectStore(SENDER_KEYS);
    };
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
    req.onblocked = () => reject(new Error("the key database is blocked by another tab"));
  });
}

function run(mode, fn, store = STORE) {
  return openDb().then((db) => new Promise((resolve, reject) => {
    const tx = db.transaction(store, mode);
    const req = fn(tx.objectStore(store));
    tx.oncomplete = () => { db.close(); resolve(req && req.result); };
    tx.onerror = tx.onabort = () => { db.close(); reject(tx.error || new Error("key database error")); };
  }));
}

// Names are unique regardless of letter case on the server.
function slot(name) {
  return "user:" + name.trim().toLowerCase();
}

/** This device's key for `name`: {privateKey, publicKey, published, created}, or null. */
export function loadDeviceKey(name) {
  return run("readonly", (s) => s.get(slot(name))).then((r) => r || null);
}

/** The device key for `name`, made and stored on first use. */
export async function deviceKeyFor(name) {
  const existing = await loadDeviceKey(name);
  if (existing && existing.privateKey && existing.published) return existing;
  const pair = await generateDeviceKeyPair();
  const record = {
    privateKey: pair.privateKey,
    publicKey: pair.publicKey,
    published: await exportPublicKey(pair.publicKey),
    created: Date.now(),
  };
  await run("readwrite", (s) => s.put(record, slot(name)));
  return record;
}

export function forgetDeviceKey(name) {
  return run("readwrite", (s) => s.delete(slot(name)));
}

/**
 * Keeps a group sender key: {me, group, sender, epoch, gen, key} where `key`
 * is a non-extractable CryptoKey (stored as it is, its bytes never leave
 * WebCrypto). Keys of earlier epochs stay, to read earlier messages.
 */
export function saveSenderKey(rec) {
  const k = [rec.me, rec.group, rec.sender, rec.epoch, rec.gen].join("|");
  return run("readwrite", (s) => s.put({ ...rec, at: Date.now() }, k), SENDER_KEYS);
}

/** Every sender key kept for the signed-in user `me`. */
export function loadSenderKeys(me) {
  return run("readonly", (s) => s.getAll(IDBKeyRange.bound(me + "|", me + "|\uffff")), SENDER_KEYS)
    .then((all) => (all || []).filter((r) => r && r.me === me && r.key));
}

// Everything below keeps records per contact id, and contact ids come from
// the server: they live in Maps (never in plain objects, where an id such as
// "__proto__" or "constructor" would reach Object.prototype), only valid ids
// get in (validate.isUserId), and what is read back from storage is checked
// again as if it came from the server.

function readJson(storage, slot) {
  try { return JSON.parse(storage.getItem(slot)); } catch { return null; }
}

function writeJson(storage, slot, value) {
  try { storage.setItem(slot, JSON.stringify(value)); } catch { /* full or disabled: keep in memory */ }
}

const isKeyText = (k) => typeof k === "string" && k.startsWith("qms1:p256:") && k.length <= 200;
const PREVIOUS_MAX = 4;   // keys accepted before, kept to read messages that were under way

/**
 * Public keys per contact for one signed-in user (localStorage, public keys
 * are not secret). For each contact:
 *   key          the key the person accepted (first seen: trust on first use)
 *   pending      a different key the server lists now, not accepted yet
 *   verifiedKey  the exact key whose fingerprint the person compared and
 *                marked as verified (a contact is verified only while this
 *                is its accepted key and nothing is pending)
 *   previous     keys accepted before `key`, newest first (at most 4)
 *   name, firstSeen, changedAt
 * Keys reach observe() only after crypto.keyStatus() said "ok".
 */
export class KnownKeys {
  constructor(myUserId, storage = globalThis.localStorage) {
    this.storage = storage;
    this.slot = "qms1.known." + myUserId;
    this.map = new Map();
    this.load();
  }

  load() {
    const data = readJson(this.storage, this.slot);
    let entries = [];
    if (data && data.v === 2 && Array.isArray(data.peers)) {
      entries = data.peers.filter((e) => Array.isArray(e) && e.length === 2);
    } else if (data && typeof data === "object" && !Array.isArray(data)) {
      // Version 1: {peerId: {key, name, firstSeen, verified, previous?}} where
      // `key` was the newest key and `previous` the accepted one before an
      // unacknowledged change.
      entries = Object.keys(data).map((id) => {
        const r = data[id];
        if (!r || typeof r !== "object") return [id, null];
        const accepted = isKeyText(r.previous) ? r.previous : r.key;
        return [id, { key: accepted, pending: isKeyText(r.previous) ? r.key : null,
                      verifiedKey: r.verified === true && !r.previous ? r.key : null,
                      name: r.name, firstSeen: r.firstSeen, changedAt: r.changedAt }];
      });
    }
    for (const [id, r] of entries) {
      if (!isUserId(id) || !r || typeof r !== "object" || !isKeyText(r.key)) continue;
      this.map.set(id, {
        key: r.key,
        pending: isKeyText(r.pending) && r.pending !== r.key ? r.pending : null,
        verifiedKey: isKeyText(r.verifiedKey) ? r.verifiedKey : null,
        previous: Array.isArray(r.previous) ? r.previous.filter(isKeyText).slice(0, PREVIOUS_MAX) : [],
        name: typeof r.name === "string" ? r.name : "",
        firstSeen: Number.isSafeInteger(r.firstSeen) ? r.firstSeen : 0,
        changedAt: Number.isSafeInteger(r.changedAt) ? r.changedAt : 0,
      });
    }
  }

  save() {
    writeJson(this.storage, this.slot, { v: 2, peers: [...this.map.entries()] });
  }

  /** [id, record copy] of every contact. */
  *entries() {
    for (const id of this.map.keys()) yield [id, this.get(id)];
  }

  /** A copy of the record of `peerId`, or null. */
  get(peerId) {
    const r = this.map.get(peerId);
    return r ? { ...r, previous: [...r.previous] } : null;
  }

  /**
   * Records the key a contact publishes now. Returns "new" (first time: the
   * key is accepted), "same" (the accepted key; a pending change the server
   * takes back is dropped) or "changed" (a key not accepted: it is pending
   * until the person accepts it or verifies it).
   */
  observe(peerId, name, key) {
    if (!isUserId(peerId) || !isKeyText(key)) throw new TypeError("observe: not a user id and key");
    const rec = this.map.get(peerId);
    if (!rec) {
      this.map.set(peerId, { key, pending: null, verifiedKey: null, previous: [], name, firstSeen: Date.now(),
                             changedAt: 0 });
      this.save();
      return "new";
    }
    if (rec.key === key) {
      if (rec.pending) { rec.pending = null; this.save(); }
      return "same";
    }
    if (rec.pending !== key) {
      rec.pending = key;
      rec.changedAt = Date.now();
      this.save();
    }
    return "changed";
  }

  /** The contact's name as last recorded, and records a new one. Returns the old name. */
  rename(peerId, name) {
    const rec = this.map.get(peerId);
    if (!rec || rec.name === name) return rec ? rec.name : null;
    const old = rec.name;
    rec.name = name;
    this.save();
    return old;
  }

  /** The person accepts `key`, which must be the pending one. */
  accept(peerId, key) {
    const rec = this.map.get(peerId);
    if (!rec || !rec.pending || rec.pending !== key) return false;
    rec.previous = [rec.key, ...rec.previous.filter((k) => k !== rec.key && k !== key)].slice(0, PREVIOUS_MAX);
    rec.key = key;
    rec.pending = null;
    this.save();
    return true;
  }

  /**
   * Marks exactly `key` as verified (the person compared its fingerprint), or
   * clears the mark. Verifying the pending key accepts it. False when `key`
   * is neither the accepted nor the pending key any more.
   */
  setVerified(peerId, key, verified) {
    const rec = this.map.get(peerId);
    if (!rec) return false;
    if (!verified) {
      if (rec.verifiedKey) { rec.verifiedKey = null; this.save(); }
      return true;
    }
    if (key === rec.pending) this.accept(peerId, key);
    if (key !== rec.key) return false;
    rec.verifiedKey = key;
    this.save();
    return true;
  }

  /** Verified: the person compared this very key, it is accepted and nothing is pending. */
  isVerified(peerId, key) {
    const rec = this.map.get(peerId);
    return !!rec && !rec.pending && rec.key === key && rec.verifiedKey === key;
  }
}

/**
 * Which incoming messages this user has already seen, per contact, across
 * reloads and tabs (localStorage), so that a server cannot show an old
 * ciphertext again as new in a fresh tab. Bounded: for each contact the ids
 * of the last PER_PEER messages, and `floor`, the newest sender time among
 * ids forgotten; a message the sender dated at or before `floor` is too old
 * to tell apart from a replay and is refused. Ids of the least recently
 * active contacts beyond MAX_PEERS are forgotten too (their floor stays).
 */
export class ReplayGuard {
  static PER_PEER = 256;
  static MAX_PEERS = 100;

  constructor(myUserId, storage = globalThis.localStorage, prefix = "qms1.seen.") {
    this.storage = storage;
    this.slot = prefix + myUserId;
    this.map = new Map();   // peer id -> {seen: [[id, ts]...] oldest first, floor, last}
    const data = readJson(storage, this.slot);
    if (data && data.v === 1 && Array.isArray(data.peers))
      for (const e of data.peers) {
        if (!Array.isArray(e) || e.length !== 2 || !isUserId(e[0]) || !e[1] || typeof e[1] !== "object") continue;
        const r = e[1];
        const seen = Array.isArray(r.seen) ? r.seen.filter((x) => Array.isArray(x) && typeof x[0] === "string" &&
          x[0].length <= 64 && Number.isSafeInteger(x[1])) : [];
        this.map.set(e[0], {
          seen: seen.slice(-ReplayGuard.PER_PEER),
          floor: Number.isSafeInteger(r.floor) ? r.floor : -1,
          last: Number.isSafeInteger(r.last) ? r.last : 0,
        });
      }
  }

  /** "new", "replay" (this id was seen) or "too-old" (dated at or before what was forgotten). */
  check(peerId, id, ts) {
    const r = this.map.get(peerId);
    if (!r) return "new";
    if (r.seen.some((x) => x[0] === id)) return "replay";
    if (ts <= r.floor) return "too-old";
    return "new";
  }

  /** Remembers message `id` of `peerId`, dated `ts` by its sender. */
  add(peerId, id, ts) {
    if (!isUserId(peerId) || typeof id !== "string" || !Number.isSafeInteger(ts)) return;
    let r = this.map.get(peerId);
    if (!r) { r = { seen: [], floor: -1, last: 0 }; this.map.set(peerId, r); }
    if (r.seen.some((x) => x[0] === id)) return;
    r.seen.push([id, ts]);
    r.last = Date.now();
    while (r.seen.length > ReplayGuard.PER_PEER) r.floor = Math.max(r.floor, r.seen.shift()[1]);
    const active = [...this.map.values()].filter((v) => v.seen.length);
    if (active.length > ReplayGuard.MAX_PEERS) {
      active.sort((a, b) => a.last - b.last);
      for (const v of active.slice(0, active.length - ReplayGuard.MAX_PEERS)) {
        for (const x of v.seen) v.floor = Math.max(v.floor, x[1]);
        v.seen = [];
      }
    }
    this.save();
  }

  save() {
    writeJson(this.storage, this.slot, { v: 1, peers: [...this.map.entries()] });
  }
}
