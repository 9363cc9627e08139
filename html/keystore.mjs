// keystore.mjs - where the end-to-end keys live in the browser.
//
// Device keys: one ECDH key pair per (browser profile, account name) in
// IndexedDB. The CryptoKey objects are stored as they are (structured clone),
// so the private key stays non-extractable: page script can use it but never
// read its bytes.
//
// Known keys: the public key last seen for each contact, per logged-in user,
// in localStorage (public keys are not secret). They make key changes
// visible (trust on first use, then warn).

import { generateDeviceKeyPair, exportPublicKey } from "./crypto.mjs";

const DB_NAME = "qms-e2e";
const DB_VERSION = 1;
const STORE = "device-keys";

function openDb() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB_NAME, DB_VERSION);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
    req.onblocked = () => reject(new Error("the key database is blocked by another tab"));
  });
}

function run(mode, fn) {
  return openDb().then((db) => new Promise((resolve, reject) => {
    const tx = db.transaction(STORE, mode);
    const req = fn(tx.objectStore(STORE));
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
 * Public keys seen per contact id for one logged-in user:
 * {peerId: {key, name, firstSeen, verified, previous?, changedAt?}}.
 */
export class KnownKeys {
  constructor(myUserId, storage = globalThis.localStorage) {
    this.storage = storage;
    this.slot = "qms1.known." + myUserId;
    try { this.map = JSON.parse(storage.getItem(this.slot)) || {}; } catch { this.map = {}; }
  }

  save() {
    try { this.storage.setItem(this.slot, JSON.stringify(this.map)); } catch { /* full or disabled: keep in memory */ }
  }

  get(peerId) { return this.map[peerId] || null; }

  /**
   * Records the key a contact publishes now. Returns "new" (first time),
   * "same" or "changed" (then the previous key is kept until acknowledged).
   */
  observe(peerId, name, key) {
    const rec = this.map[peerId];
    if (!rec) {
      this.map[peerId] = { key, name, firstSeen: Date.now(), verified: false };
      this.save();
      return "new";
    }
    if (rec.key === key) return rec.previous ? "changed" : "same";
    if (rec.previous === key) {
      // Back to the key we trusted before the unacknowledged change.
      rec.key = key;
      delete rec.previous;
      delete rec.changedAt;
      this.save();
      return "same";
    }
    rec.previous = rec.previous || rec.key;
    rec.key = key;
    rec.name = name;
    rec.verified = false;
    rec.changedAt = Date.now();
    this.save();
    return "changed";
  }

  /** The person has seen the warning: the new key becomes the known one. */
  acknowledge(peerId) {
    const rec = this.map[peerId];
    if (rec) { delete rec.previous; delete rec.changedAt; this.save(); }
  }

  setVerified(peerId, verified) {
    const rec = this.map[peerId];
    if (rec) { rec.verified = !!verified; this.save(); }
  }
}
