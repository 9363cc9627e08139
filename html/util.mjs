// util.mjs - small pure helpers of the web UI (no DOM), unit-tested in node:
// form validation, the chat URL choice, reconnect backoff, time labels.

export const NAME_MAX = 64;
export const PASSWORD_MIN = 8;
export const PASSWORD_MAX = 256;

// Control, format (zero-width, bidi) and separator characters other than the
// plain space: the server refuses them in names too.
const INVISIBLE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\u00a0\u2000-\u200b\u3000]/u;

/** Returns an error text for a user name, or "" when it is acceptable. */
export function nameError(name) {
  const n = [...name].length;
  if (n === 0) return "Enter a name.";
  if (n > NAME_MAX) return `Names have at most ${NAME_MAX} characters.`;
  if (INVISIBLE.test(name)) return "Names cannot contain control or invisible characters.";
  if (name !== name.trim()) return "Names cannot begin or end with a space.";
  return "";
}

/** Returns an error text for the password fields, or "" when acceptable. */
export function passwordError(password, confirm, registering) {
  if (!password) return "Enter a password.";
  if (password.length > PASSWORD_MAX) return `Passwords have at most ${PASSWORD_MAX} characters.`;
  if (registering) {
    if ([...password].length < PASSWORD_MIN) return `Choose a password of at least ${PASSWORD_MIN} characters.`;
    if (password !== confirm) return "The passwords do not match.";
  }
  return "";
}

/**
 * The password string sent to the server: the SHA-256 hex digest of the
 * trimmed password, exactly what the original web client sends, so an
 * account works from either client. The server hashes it again (Argon2id).
 */
export async function passwordDigest(password) {
  const d = await globalThis.crypto.subtle.digest("SHA-256", new TextEncoder().encode(password.trim()));
  return [...new Uint8Array(d)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Which WebSocket URL to use. `configured` is the URL the server wrote into
 * the page ("<proto>://<address>:<chat port>"); `page` is the page location.
 * The configured chat port is used when the page was opened under the same
 * host name the server was configured with. Otherwise (the server is known
 * by another name, or the placeholders were not filled in, or an https page
 * would have to use ws:) the page's own origin at /ws is used: the server
 * accepts WebSocket upgrades there on its HTTP and HTTPS ports.
 */
export function chatUrl(configured, page) {
  const web = page && (page.protocol === "http:" || page.protocol === "https:");
  const sameOrigin = web ? `${page.protocol === "https:" ? "wss" : "ws"}://${page.host}/ws` : null;
  const m = /^(wss?):\/\/(.+):(\d+)$/.exec(configured || "");
  if (!m) return sameOrigin;
  let host = m[2];
  if (host.includes(":") && !host.startsWith("[")) host = `[${host}]`; // IPv6 literal
  const url = `${m[1]}://${host}:${m[3]}`;
  if (!web) return url;
  const bare = (h) => h.replace(/^\[|\]$/g, "").toLowerCase();
  if (bare(host) !== bare(page.hostname)) return sameOrigin;
  if (page.protocol === "https:" && m[1] === "ws") return sameOrigin;
  return url;
}

/** Delay before reconnect attempt `n` (0-based): 0.5 s doubling to 30 s, with jitter. */
export function backoffDelay(n, random = Math.random) {
  const base = Math.min(30000, 500 * 2 ** Math.min(n, 16));
  return Math.round(base * (0.75 + 0.5 * random()));
}

function sameDay(a, b) {
  return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();
}

/** "14:05" today, "Yesterday", "Mon", or a date, for the contact list. */
export function shortTime(ts, now = Date.now()) {
  const d = new Date(ts), n = new Date(now);
  if (sameDay(d, n)) return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const y = new Date(n); y.setDate(n.getDate() - 1);
  if (sameDay(d, y)) return "Yesterday";
  if (now - ts < 6 * 86400000) return d.toLocaleDateString([], { weekday: "short" });
  return d.toLocaleDateString([], { day: "numeric", month: "short" });
}

/** Time of one message bubble. */
export function clockTime(ts) {
  return new Date(ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/** Day separator label inside a conversation. */
export function dayLabel(ts, now = Date.now()) {
  const d = new Date(ts), n = new Date(now);
  if (sameDay(d, n)) return "Today";
  const y = new Date(n); y.setDate(n.getDate() - 1);
  if (sameDay(d, y)) return "Yesterday";
  return d.toLocaleDateString([], { weekday: "long", day: "numeric", month: "long", year: "numeric" });
}

/** A stable hue (0-359) for a contact's avatar. */
export function hueOf(text) {
  let h = 0;
  for (const c of text) h = (h * 31 + c.codePointAt(0)) >>> 0;
  return h % 360;
}

/** One or two letters for an avatar. */
export function initials(name) {
  const parts = name.trim().split(/\s+/).filter(Boolean);
  if (parts.length === 0) return "?";
  const first = [...parts[0]][0] || "?";
  const second = parts.length > 1 ? [...parts[parts.length - 1]][0] : "";
  return (first + second).toUpperCase();
}
