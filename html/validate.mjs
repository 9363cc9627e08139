// validate.mjs - what the web UI accepts from the server, checked before any
// of it is used as a key of a collection, shown, stored or given to crypto.
// Pure functions (no DOM), unit-tested in node. The server is the party the
// end-to-end encryption guards against (docs/E2E.md, "A malicious server"),
// so nothing it sends is trusted to have the shape the protocol promises.

import { nameError } from "./util.mjs";

// The server's user ids: random UUIDs, version 4, lower case (docs/PROTOCOL.md).
const USER_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
// Message ids the server assigns (16 characters) and client ids (1-64).
const MESSAGE_ID = /^[A-Za-z0-9_-]{1,64}$/;
const TOKEN = /^[A-Za-z0-9_-]{43}$/;
// A ciphertext envelope fits the server's 65,536-byte limit on "message".
export const MESSAGE_MAX = 65536;
// More entries than this in one user list is not a list we show.
export const USERS_MAX = 100000;

export function isUserId(v) {
  return typeof v === "string" && USER_ID.test(v);
}

export function isMessageId(v) {
  return typeof v === "string" && MESSAGE_ID.test(v);
}

export function isToken(v) {
  return typeof v === "string" && TOKEN.test(v);
}

/** A name as the server must have checked it, or null. */
export function validName(v) {
  return typeof v === "string" && nameError(v) === "" ? v : null;
}

/** Milliseconds since the epoch, within what a Date can show, or null. */
export function validTime(v) {
  return Number.isSafeInteger(v) && v >= 0 && v <= 8.64e15 ? v : null;
}

/** A string the UI may show as the server's error text (cut to 300 characters). */
export function errorText(v, fallback) {
  if (typeof v !== "string" || v === "") return fallback;
  const clean = v.replace(/[\p{Cc}\p{Cf}]/gu, " ");
  return clean.length > 300 ? clean.slice(0, 300) + "…" : clean;
}

/**
 * One entry of a user list: {id, name, publicKey} with id and name valid, and
 * publicKey a string ("" when absent; its kind is crypto.keyStatus()'s
 * question). Returns null for anything else.
 */
export function userEntry(u) {
  if (!u || typeof u !== "object" || Array.isArray(u)) return null;
  const name = validName(u.name);
  if (!isUserId(u.id) || name === null) return null;
  if (u.publicKey !== undefined && u.publicKey !== null && typeof u.publicKey !== "string") return null;
  if (typeof u.publicKey === "string" && u.publicKey.length > 16384) return null;
  return { id: u.id, name, publicKey: u.publicKey || "" };
}

// Letters of other scripts that look like Latin ones, and a few Latin and
// digit look-alikes: enough for the UI to point out two contacts whose names
// look the same. The server refuses confusable names at registration with
// the full Unicode data (TR39); this is the client's own, smaller check for
// a server that does not.
const LOOKALIKE = new Map(Object.entries({
  // Cyrillic
  "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c", "т": "t",
  "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "һ": "h", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ɡ": "g",
  "ո": "n", "ս": "u", "օ": "o", // Armenian
  // Greek
  "α": "a", "β": "b", "γ": "y", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p",
  "τ": "t", "υ": "u", "χ": "x", "ω": "w", "ϲ": "c", "ϳ": "j",
  // Latin and digits
  "ı": "i", "ł": "l", "ø": "o", "0": "o", "1": "l", "|": "l", "5": "s", "$": "s", "@": "a",
}));

/**
 * A comparison form of a name: compatibility-normalised, capital I read as
 * l, lower case, marks removed, look-alike letters mapped, "rn" read as "m",
 * "vv" as "w". Two names with the same form look alike.
 */
export function lookalikeKey(name) {
  const base = String(name).normalize("NFKC").replace(/I/g, "l").toLowerCase().normalize("NFD")
    .replace(/\p{M}/gu, "");
  let out = "";
  for (const ch of base) out += LOOKALIKE.has(ch) ? LOOKALIKE.get(ch) : ch;
  return out.replace(/rn/g, "m").replace(/vv/g, "w").replace(/\s+/g, " ").trim();
}
