// app.mjs - the QMessage web UI: sign in or create an account, see who is
// online, one end-to-end encrypted conversation per contact.
//
// Protocol: shared PROTOCOL.md; numbers come from the server's /enums.mjs.
// Encryption: crypto.mjs (formats in docs/E2E.md); keys: keystore.mjs.
// Every string from the server or from a person is put on the page with
// textContent, never as HTML. Every value from the server is checked
// (validate.mjs) before it is used: the server is the party end-to-end
// encryption guards against, and a bad value gets a visible outcome, never a
// crash and never plaintext under a key the person did not accept.

import { Requests, Responses } from "./enums.mjs";
import * as e2e from "./crypto.mjs";
import { deviceKeyFor, loadDeviceKey, KnownKeys, ReplayGuard } from "./keystore.mjs";
import { Connection } from "./connection.mjs";
import {
  nameError, passwordError, passwordDigest, chatUrl, shortTime, clockTime, dayLabel, hueOf, initials,
} from "./util.mjs";
import {
  isUserId, isMessageId, isToken, validName, validTime, errorText, userEntry, lookalikeKey, MESSAGE_MAX, USERS_MAX,
} from "./validate.mjs";

// The server writes its chat address here when it sends this file.
const CONFIGURED_URL = "%SERVER_PROTOCOL%://%SERVER_ADDRESS%:%SERVER_PORT%";

const SESSION = "qms1.session";          // sessionStorage: {token, name, id}
const HISTORY = "qms1.history.";         // sessionStorage + user id: the conversations
const THEME = "qms1.theme";              // localStorage: "light" | "dark"
const FAIL_WINDOW_MS = 5000;             // a send error refers to a message this recent
// A sender's clock and the server's may differ a little; beyond this the
// message is flagged (a delay or a replay by the server, or a wrong clock).
const SKEW_MS = 5 * 60 * 1000;
// Server extensions (docs/PROTOCOL.md): acknowledgements of our messages by
// id, and receipts for what we got. Used only when the server publishes them.
const ACKS = Responses.MessageAckEvent !== undefined;
const RECEIPTS = Requests.ReceiptRequest !== undefined;
// Presence as changes ("delta"): the list once, then who joined and left,
// instead of the whole list on every change. Used when the server has it.
const DELTA = Responses.UserlistDeltaEvent !== undefined;
const PRESENCE = DELTA ? { presence: "delta" } : {};
const ACK_TEXT = new Map([["delivered", "Delivered"], ["stored", "Waiting on the server until they are online"],
  ["received", "Received"]]);

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const n = document.createElement(tag);
  if (cls) n.className = cls;
  if (text !== undefined) n.textContent = text;
  return n;
};

// ---- state -----------------------------------------------------------------

const state = {
  conn: null,
  registering: false,
  pending: null,            // {kind: "login"|"authorize"} while waiting for an answer
  me: null,                 // {id, name, token}
  device: null,             // {privateKey, published} of this browser for `me`
  known: null,              // KnownKeys of `me`
  guard: null,              // ReplayGuard of `me`
  contacts: new Map(),      // id -> contact (see contactFor)
  order: [],                // contact ids in the order the server listed them
  selected: null,           // id of the open conversation
  channels: new Map(),      // id|key -> Promise<channel>
  seen: new Set(),          // message ids shown in this tab
  lastSend: null,           // {peerId, msgId, at} for mapping a send error
  lastUsers: null,          // the latest user list (checked entries), applied once a session starts
  verifying: null,          // {id, key, stale} while the safety-number dialog is open
  inbox: Promise.resolve(), // server events (and what they start) are handled one after the other
};

// Key checks and key ids cost WebCrypto calls: remembered per key text.
const keyStatusCache = new Map();
const kidCache = new Map();

async function statusOf(key) {
  if (typeof key !== "string") return e2e.keyStatus(key);
  if (!keyStatusCache.has(key)) {
    if (keyStatusCache.size > 2000) keyStatusCache.clear();
    keyStatusCache.set(key, await e2e.keyStatus(key));
  }
  return keyStatusCache.get(key);
}

async function kidOf(key) {
  if (!kidCache.has(key)) {
    if (kidCache.size > 2000) kidCache.clear();
    kidCache.set(key, await e2e.keyId(key));
  }
  return kidCache.get(key);
}

/** Runs fn after everything queued before it (server events, releases). */
function serial(fn) {
  state.inbox = state.inbox.then(fn).catch((err) => {
    console.error(err);
    toast(`Unexpected error: ${err.message || err}`);
  });
  return state.inbox;
}

function loadSession() {
  let s;
  try { s = JSON.parse(sessionStorage.getItem(SESSION)); } catch { s = null; }
  if (!s || !isToken(s.token) || !isUserId(s.id) || validName(s.name) === null) return null;
  return s;
}

function saveSession() {
  sessionStorage.setItem(SESSION, JSON.stringify(state.me));
}

// Conversations survive a reload of this tab (sessionStorage), not the tab.
function saveHistory() {
  if (!state.me) return;
  const out = [];
  for (const c of state.contacts.values())
    if (c.messages.length) out.push({ id: c.id, name: c.name, unread: c.unread, messages: c.messages.slice(-500) });
  try { sessionStorage.setItem(HISTORY + state.me.id, JSON.stringify(out)); } catch { /* quota: keep in memory */ }
}

function loadHistory() {
  let list;
  try { list = JSON.parse(sessionStorage.getItem(HISTORY + state.me.id)); } catch { list = null; }
  if (!Array.isArray(list)) return;
  for (const h of list) {
    if (!h || !isUserId(h.id) || !Array.isArray(h.messages)) continue;
    const c = contactFor(h.id, validName(h.name) || undefined);
    c.unread = Number.isSafeInteger(h.unread) && h.unread > 0 ? h.unread : 0;
    c.messages = h.messages.filter((m) => m && typeof m === "object" && validTime(m.ts) !== null);
    for (const m of c.messages) if (typeof m.id === "string") state.seen.add(m.id);
    const rec = state.known.get(h.id);
    if (rec && !c.publicKey) { // so an offline contact can still be written to
      c.publicKey = rec.pending || rec.key;
      c.listedKey = c.publicKey;
      c.keyState = rec.pending ? "changed" : "ok";
    }
  }
}

function contactFor(id, name) {
  let c = state.contacts.get(id);
  if (!c) {
    c = { id, name: name || "Unknown user", named: !!name, publicKey: "", listedKey: undefined, online: false,
          keyState: "none", messages: [], unread: 0 };
    state.contacts.set(id, c);
  }
  return c;
}

// ---- trust: what the person is told about a contact's key -------------------

/** [state, label]: shown next to the contact's name everywhere. */
function trustOf(c) {
  switch (c.keyState) {
    case "none": return ["none", "No key"];
    case "unsupported": return ["unsupported", "No encryption"];
    case "invalid": return ["invalid", "Invalid key"];
    case "changed": return ["changed", "⚠ Key changed"];
    default:
      return state.known && state.known.isVerified(c.id, c.publicKey) ? ["verified", "✓ Verified"]
        : ["unverified", "Not verified"];
  }
}

function trustBadge(c) {
  const [kind, label] = trustOf(c);
  const b = el("span", `trust trust-${kind}`, label);
  b.dataset.trust = kind;
  b.title = {
    verified: "You compared safety numbers with this person for this key.",
    unverified: "Not verified: compare safety numbers to be sure who this is.",
    changed: "This contact's key changed. Their new messages are held until you accept the key or compare numbers.",
    invalid: "The server sent a key that is not valid.",
    unsupported: "This contact's app has no compatible end-to-end encryption.",
    none: "No encryption key is known for this contact.",
  }[kind];
  return b;
}

/** The look-alike comparison form of a contact's name, kept until the name changes. */
function alikeKeyOf(c) {
  if (c.alikeName !== c.name) { c.alikeName = c.name; c.alikeKey = lookalikeKey(c.name); }
  return c.alikeKey;
}

/** Contacts by the comparison form of their names (one pass per render, not one per pair). */
function alikeGroups() {
  const groups = new Map();
  for (const o of state.contacts.values()) {
    const k = alikeKeyOf(o);
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k).push(o);
  }
  return groups;
}

function lookalikeText(c, groups = alikeGroups()) {
  const k = alikeKeyOf(c);
  if (state.me && lookalikeKey(state.me.name) === k) return "⚠ Looks like your own name";
  const others = (groups.get(k) || []).filter((o) => o.id !== c.id);
  if (!others.length) return "";
  const verified = others.find((o) => trustOf(o)[0] === "verified");
  return verified ? `⚠ Looks like ${verified.name} (verified), but is another account`
    : "⚠ Looks like another contact's name";
}

// ---- feedback --------------------------------------------------------------

function toast(text, kind = "error") {
  const t = el("div", `toast ${kind}`, text);
  t.setAttribute("role", kind === "error" ? "alert" : "status");
  $("toasts").append(t);
  setTimeout(() => { t.classList.add("leaving"); setTimeout(() => t.remove(), 300); }, kind === "error" ? 7000 : 4000);
}

/** Says that the server sent something malformed, and what became of it. */
function badInput(what) {
  toast(`The server sent ${what}. It was ignored.`);
}

function formError(text) {
  $("form-error").textContent = text || "";
}

function setBusy(busy) {
  $("submit").disabled = busy || !state.conn;
  document.body.classList.toggle("busy", busy);
}

// ---- views -----------------------------------------------------------------

function showAuth(message) {
  document.body.dataset.view = "auth";
  document.body.classList.remove("resuming");
  $("auth").hidden = false;
  $("chat").hidden = true;
  setBusy(false);
  formError(message || "");
  document.title = "QMessage";
  ($("name").value ? $("password") : $("name")).focus();
}

function showChat() {
  document.body.dataset.view = "chat";
  $("auth").hidden = true;
  $("chat").hidden = false;
  $("password").value = $("confirm").value = "";
  $("me-name").textContent = state.me.name;
  paintAvatar($("me-avatar"), state.me.name);
  renderContacts();
  renderConversation();
}

function setMode(registering) {
  state.registering = registering;
  $("tab-login").setAttribute("aria-selected", String(!registering));
  $("tab-register").setAttribute("aria-selected", String(registering));
  $("confirm-field").hidden = !registering;
  $("password").autocomplete = registering ? "new-password" : "current-password";
  $("submit-label").textContent = registering ? "Create account" : "Sign in";
  formError("");
}

function paintAvatar(node, name) {
  node.textContent = initials(name);
  node.style.setProperty("--hue", hueOf(name));
}

function connText(s) {
  switch (s.state) {
    case "open": return "Connected";
    case "connecting": return "Connecting…";
    case "waiting": return `Connection lost. Reconnecting in ${Math.max(1, Math.round(s.delay / 1000))} s…`;
    default:
      if (s.code === 4001) return "Signed in somewhere else. This window is disconnected.";
      return s.reason ? `Disconnected: ${s.reason}` : "Disconnected.";
  }
}

function onConnStatus(s) {
  document.body.dataset.conn = s.state;
  const text = connText(s);
  $("auth-status").textContent = text;
  $("conn-status").textContent = s.state === "open" ? "Connected" : s.state === "waiting" ? "Reconnecting…" : text;
  $("conn-banner").hidden = s.state === "open" || s.state === "connecting";
  $("conn-banner-text").textContent = text;
  $("submit").disabled = s.state !== "open" || document.body.classList.contains("busy");
  if (s.state !== "open" && state.pending && state.pending.kind === "login") {
    state.pending = null;
    setBusy(false);
    formError("The connection was lost. Please try again.");
  }
  renderComposer();
}

// ---- contacts --------------------------------------------------------------

function renderContacts() {
  const list = $("contacts");
  list.textContent = "";
  const ids = [...state.order];
  for (const c of state.contacts.values())
    if (!ids.includes(c.id) && c.messages.length) ids.push(c.id); // offline, with history
  let online = 0;
  const groups = alikeGroups();
  for (const id of ids) {
    const c = state.contacts.get(id);
    if (!c) continue;
    if (c.online) online++;
    const li = el("li", "contact");
    li.dataset.id = c.id;
    li.dataset.name = c.name;
    li.dataset.trust = trustOf(c)[0];
    li.classList.toggle("selected", c.id === state.selected);
    li.classList.toggle("offline", !c.online);
    const btn = el("button");
    btn.type = "button";
    btn.addEventListener("click", () => select(c.id));
    const av = el("span", "avatar");
    paintAvatar(av, c.name);
    if (c.online) av.append(el("span", "presence"));
    const body = el("span", "contact-body");
    const top = el("span", "contact-top");
    top.append(el("span", "contact-name ellipsis", c.name), trustBadge(c));
    const last = c.messages[c.messages.length - 1];
    if (last) top.append(el("time", "contact-time", shortTime(last.ts)));
    const bottom = el("span", "contact-bottom");
    const preview = el("span", "preview ellipsis");
    const alike = lookalikeText(c, groups);
    if (alike) {
      li.classList.add("lookalike");
      preview.textContent = alike;
      preview.classList.add("warn-text");
    } else if (c.keyState === "changed") {
      preview.textContent = "⚠ Security key changed";
      preview.classList.add("warn-text");
    } else if (c.keyState === "invalid") {
      preview.textContent = "⚠ The server sent an invalid key";
      preview.classList.add("warn-text");
    } else if (c.keyState === "unsupported") {
      preview.textContent = "No end-to-end encryption";
    } else if (last) {
      preview.textContent = (last.dir === "out" ? "You: " : "") + previewOf(last);
    } else {
      preview.textContent = c.online ? "Online" : "Offline";
    }
    bottom.append(preview);
    if (c.unread > 0) {
      const badge = el("span", "badge", String(c.unread));
      badge.setAttribute("aria-label", `${c.unread} unread`);
      bottom.append(badge);
    }
    body.append(top, bottom);
    btn.append(av, body);
    li.append(btn);
    list.append(li);
  }
  $("online-count").textContent = online ? String(online) : "";
  $("no-contacts").hidden = ids.length > 0;
  const unread = [...state.contacts.values()].reduce((n, c) => n + c.unread, 0);
  document.title = unread ? `(${unread}) QMessage` : "QMessage";
}

function previewOf(m) {
  if (m.held) return "Held message";
  if (m.error) return m.error;
  return m.text || "";
}

function select(id) {
  state.selected = id;
  const c = state.contacts.get(id);
  if (c) c.unread = 0;
  $("chat").dataset.pane = "conversation";
  renderContacts();
  renderConversation();
  saveHistory();
  if (c && !$("composer").hidden && !$("message").disabled) $("message").focus();
}

// ---- conversation ----------------------------------------------------------

function renderConversation() {
  const c = state.selected ? state.contacts.get(state.selected) : null;
  $("placeholder").hidden = !!c;
  $("conv-head").hidden = !c;
  $("messages").hidden = !c;
  $("composer").hidden = !c;
  $("key-warning").hidden = true;
  $("conv-notice").hidden = true;
  if (!c) return;

  $("peer-name").textContent = c.name;
  paintAvatar($("peer-avatar"), c.name);
  const trust = $("peer-trust");
  trust.replaceChildren(trustBadge(c));
  const alike = lookalikeText(c);
  $("peer-lookalike").textContent = alike;
  $("peer-lookalike").hidden = !alike;
  const parts = [c.online ? "Online" : "Offline"];
  if (c.keyState === "ok" || c.keyState === "changed") parts.push("end-to-end encrypted");
  $("peer-state").textContent = parts.join(" · ");
  $("peer-state").classList.toggle("secure", c.keyState === "ok");
  $("verify").hidden = !(c.keyState === "ok" || c.keyState === "changed");

  if (c.keyState === "changed") {
    const held = c.messages.filter((m) => m.held).length;
    $("key-warning").hidden = false;
    $("key-warning-text").textContent =
      ` ${c.name} now uses a different key: they signed in on another device, or someone is trying to ` +
      "intercept your messages. Compare the safety numbers with them before you continue." +
      (held ? ` ${held === 1 ? "One message is" : `${held} messages are`} held until then.` : "");
  } else if (c.keyState === "invalid") {
    showNotice(`The server sent a security key for ${c.name} that is not valid. Nothing can be sent to them ` +
      "or read from them until it sends a valid one.");
  } else if (c.keyState === "unsupported") {
    showNotice(`${c.name} uses an app without compatible end-to-end encryption. ` +
      "Their messages cannot be decrypted here, and nothing is sent to them unencrypted.");
  } else if (!c.online) {
    showNotice(ACKS
      ? `${c.name} is offline. Your messages wait on the server, encrypted, until they sign in.`
      : `${c.name} is offline. Messages can be sent when they are back online.`);
  }

  renderMessages(c);
  renderComposer();
}

function showNotice(text) {
  $("conv-notice").hidden = false;
  $("conv-notice").textContent = text;
}

function ago(ms) {
  const m = Math.round(Math.abs(ms) / 60000);
  if (m < 120) return `${m} min`;
  const h = Math.round(m / 60);
  return h < 48 ? `${h} h` : `${Math.round(h / 24)} days`;
}

function renderMessages(c) {
  const list = $("messages");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 60;
  list.textContent = "";
  if (c.keyState === "ok" || c.keyState === "changed")
    list.append(el("li", "e2e-note", "Messages here are end-to-end encrypted: only you and " + c.name +
      " can read them. Compare the safety numbers to be sure."));
  let day = "";
  let prev = null;
  for (const m of c.messages) {
    const label = dayLabel(m.ts);
    if (label !== day) {
      day = label;
      list.append(el("li", "day", label));
      prev = null;
    }
    if (m.dir === "sys") {
      const li = el("li", `system${m.kind ? " " + m.kind : ""}`, m.text);
      if (m.kind) li.dataset.kind = m.kind;
      list.append(li);
      prev = null;
      continue;
    }
    const li = el("li", `msg ${m.dir}`);
    if (m.id) li.dataset.msgId = m.id;
    if (prev && prev.dir === m.dir && m.ts - prev.ts < 120000) li.classList.add("cont");
    const bubble = el("div", "bubble");
    if (m.held) {
      li.classList.add("held");
      bubble.classList.add("held");
      bubble.textContent = m.reason;
    } else if (m.error) {
      bubble.classList.add("error");
      bubble.textContent = m.error;
    } else {
      bubble.textContent = m.text;
    }
    const meta = el("div", "meta");
    const time = el("time", "", clockTime(m.ts));
    time.dateTime = new Date(m.ts).toISOString();
    time.title = (m.dir === "in" && !m.held && !m.error ? "Sent (their clock): " : "") + new Date(m.ts).toLocaleString();
    meta.append(time);
    if (m.skew !== undefined) {
      li.dataset.skew = String(m.ts - m.skew);
      meta.append(el("span", "flag skew", ` · ⚠ the server dated it ${clockTime(m.skew)}, ` +
        `${ago(m.ts - m.skew)} ${m.skew > m.ts ? "later" : "earlier"} than their clock`));
    }
    if (m.late) {
      li.dataset.late = "1";
      meta.append(el("span", "flag late", " · ⚠ sent before the message above: delayed or reordered"));
    }
    if (m.old) {
      li.dataset.old = "1";
      meta.append(el("span", "flag old", " · ⚠ older than what this browser remembers: could be a replay"));
    }
    if (m.failed) {
      li.classList.add("failed");
      meta.append(el("span", "failed-text", ` · Not delivered: ${m.failed}`));
    } else if (m.dir === "out" && m.ack && ACK_TEXT.has(m.ack)) {
      li.dataset.ack = m.ack;
      meta.append(el("span", "ack", m.ack === "received" ? " · ✓✓" : m.ack === "delivered" ? " · ✓" : " · ◷"));
      meta.title = ACK_TEXT.get(m.ack);
      meta.lastChild.setAttribute("aria-label", ACK_TEXT.get(m.ack));
    }
    li.append(bubble, meta);
    list.append(li);
    prev = m;
  }
  if (atBottom || c.messages.length < 3) list.scrollTop = list.scrollHeight;
}

function renderComposer() {
  const c = state.selected ? state.contacts.get(state.selected) : null;
  if (!c) return;
  const input = $("message");
  let reason = "";
  if (!state.conn || !state.conn.isOpen) reason = "Waiting for the connection…";
  else if (!c.online && !ACKS) reason = `${c.name} is offline`;
  else if (c.keyState === "unsupported") reason = "Cannot encrypt for this contact";
  else if (c.keyState === "invalid") reason = "This contact's key is not valid";
  else if (c.keyState === "changed") reason = "Accept or verify the new key first";
  else if (c.keyState !== "ok") reason = "This contact has no encryption key";
  input.disabled = !!reason;
  $("send").disabled = !!reason;
  input.placeholder = reason || (c.online ? `Message ${c.name}` : `Message ${c.name} (delivered when they are back)`);
}

function isVisible(c) {
  return state.selected === c.id && document.visibilityState === "visible" &&
    (window.innerWidth > 760 || $("chat").dataset.pane === "conversation");
}

function refresh(c) {
  renderContacts();
  if (state.selected === c.id) renderConversation();
  saveHistory();
}

function addMessage(c, m) {
  c.messages.push(m);
  if (m.id) state.seen.add(m.id);
  if (m.dir === "in" && !isVisible(c)) c.unread++;
  renderContacts();
  if (state.selected === c.id) renderMessages(c);
  saveHistory();
}

function addSystem(c, text, kind) {
  c.messages.push({ dir: "sys", ts: Date.now(), text, ...(kind ? { kind } : {}) });
}

// ---- keys ------------------------------------------------------------------

function channelFor(id, publicKey) {
  const k = id + "|" + publicKey;
  let p = state.channels.get(k);
  if (!p) {
    p = e2e.openChannel({
      myId: state.me.id, myPrivateKey: state.device.privateKey, myPublic: state.device.published,
      peerId: id, peerPublic: publicKey,
    });
    p.catch(() => state.channels.delete(k));
    state.channels.set(k, p);
  }
  return p;
}

/**
 * The key the server lists for a contact now. Only a key that crypto
 * accepts reaches the known keys; anything else makes the contact
 * "invalid", "unsupported" or keyless, with a visible reason.
 */
async function applyKey(c, publicKey) {
  c.listedKey = publicKey;
  const status = await statusOf(publicKey);
  if (status !== "ok") {
    const was = c.keyState;
    c.publicKey = "";
    c.keyState = status === "malformed" ? "invalid" : status;
    if (status === "malformed" && was !== "invalid")
      addSystem(c, `The server sent an invalid security key for ${c.name}. It was not used or stored.`, "warn");
    return;
  }
  const before = c.keyState;
  const beforeKey = c.publicKey;
  c.publicKey = publicKey;
  const seen = state.known.observe(c.id, c.name, publicKey);
  c.keyState = seen === "changed" ? "changed" : "ok";
  if (seen === "changed" && (before !== "changed" || beforeKey !== publicKey))
    addSystem(c, `${c.name}'s security key changed.`, "warn");
  else if (seen === "same" && before === "changed")
    addSystem(c, `${c.name} is listed with the key you accepted again.`);
  const v = state.verifying;
  if (v && v.id === c.id && v.key !== publicKey) markVerifyStale();
  await releaseHeld(c); // reads what the accepted key now opens; updates why the others wait
}

function openVerify() {
  const c = state.contacts.get(state.selected);
  if (!c || !c.publicKey) return;
  const v = { id: c.id, key: c.publicKey, stale: false };
  state.verifying = v;
  $("verify-title").textContent = `Safety numbers with ${c.name}`;
  $("verify-trust").replaceChildren(trustBadge(c));
  $("verify-text").textContent = `Compare both numbers with what ${c.name} sees, in person or over a call you ` +
    `trust: ${c.name}'s number here must be the one their screen calls theirs, and yours the one it shows for you.`;
  $("fp-peer-label").textContent = `${c.name}'s number`;
  $("verify-stale").hidden = true;
  for (const id of ["fp-peer", "fp-mine"]) $(id).textContent = "…";
  const box = $("verified");
  box.checked = state.known.isVerified(c.id, v.key);
  box.disabled = true;
  const render = (node, digits) => {
    node.textContent = "";
    for (const g of digits.split(" ")) node.append(el("span", "", g));
  };
  Promise.all([e2e.fingerprint(c.id, v.key), e2e.fingerprint(state.me.id, state.device.published)]).then(([peer, mine]) => {
    if (state.verifying !== v || v.stale) return;
    render($("fp-peer"), peer);
    render($("fp-mine"), mine);
    $("verify-dialog").dataset.ready = "1";
    box.disabled = false;
  }, (err) => { $("fp-peer").textContent = `cannot compute: ${err.message || err}`; });
  delete $("verify-dialog").dataset.ready;
  $("verify-dialog").showModal();
}

// The key changed while the numbers were on screen: they are not the
// contact's any more, so the dialog must not mark anything as verified.
function markVerifyStale() {
  const v = state.verifying;
  if (!v) return;
  v.stale = true;
  const c = state.contacts.get(v.id);
  $("verify-stale").hidden = false;
  $("verify-stale").textContent = `${c ? c.name : "This contact"}'s key changed while these numbers were shown. ` +
    "They are not the numbers of the key the server lists now: close this and compare again.";
  $("verified").checked = false;
  $("verified").disabled = true;
  for (const id of ["fp-peer", "fp-mine"]) $(id).classList.add("stale");
}

// What the dialog decides is read when it closes: a box that was disabled
// (numbers not shown yet, or gone stale) decides nothing, not even "not
// verified"; the rest runs in the event queue, after what came before.
function closeVerify() {
  const v = state.verifying;
  state.verifying = null;
  for (const id of ["fp-peer", "fp-mine"]) $(id).classList.remove("stale");
  const box = $("verified");
  if (!v || !state.known || box.disabled || v.stale) return;
  const checked = box.checked;
  serial(async () => {
    const c = state.contacts.get(v.id);
    if (!c) return;
    if (checked && !v.stale && c.publicKey === v.key) {
      if (!state.known.isVerified(c.id, v.key)) {
        const wasChanged = c.keyState === "changed";
        if (state.known.setVerified(c.id, v.key, true)) {
          c.keyState = "ok";
          addSystem(c, wasChanged ? `You compared the numbers and accepted ${c.name}'s new key.`
            : `You marked ${c.name} as verified.`);
          await releaseHeld(c);
        }
      }
    } else if (checked) {
      toast(`Not marked as verified: ${c.name}'s key changed while the numbers were shown. Compare again.`);
    } else if (state.known.isVerified(c.id, v.key)) {
      state.known.setVerified(c.id, v.key, false);
      addSystem(c, `You removed the verified mark of ${c.name}.`);
    }
    refresh(c);
  });
}

function acceptKey(c) {
  const key = c.publicKey;
  serial(async () => {
    if (c.keyState !== "changed" || !state.known.accept(c.id, key)) return;
    c.keyState = "ok";
    addSystem(c, `You accepted ${c.name}'s new key.`);
    await releaseHeld(c);
    refresh(c);
  });
}

// ---- incoming messages -----------------------------------------------------

const HOLD_TEXT = {
  changed: () => "Held: the sender's key changed. Accept the new key or compare the safety numbers to read it.",
  nokey: () => "Held: no key is known for this sender yet.",
  unknown: (c) => `Held: written with a key the server has not shown you for ${c.name} (their key may have ` +
    "changed). It is read once that key is shown and accepted.",
  unaccepted: (c) => `Held: sent with a key of ${c.name}'s that you have not accepted.`,
};

/**
 * Which key reads an envelope from contact c: {key}, {hold: reason} or
 * {error: text}. Only keys the person accepted (now or before) read a
 * message; a message under any other key is held, or refused when it is
 * under a key of someone else (the server changed its sender).
 */
async function keyForEnvelope(c, e, senderKey) {
  if (c.keyState === "unsupported") return { error: "cannot decrypt (unsupported key)" };
  const rec = state.known.get(c.id);
  if (rec) {
    if ((await kidOf(rec.key)) === e.sk) return { key: rec.key };
    for (const k of rec.previous) if ((await kidOf(k)) === e.sk) return { key: k };
    if (rec.pending && (await kidOf(rec.pending)) === e.sk) return { hold: "changed" };
  }
  if (e.sk === (await kidOf(state.device.published)))
    return { error: "refused: this message was encrypted with your own key, not " + c.name + "'s. " +
      "The server sent one of your messages back as theirs." };
  for (const [id, r] of state.known.entries()) {
    if (id === c.id) continue;
    for (const k of [r.key, r.pending, ...r.previous])
      if (k && (await kidOf(k)) === e.sk) {
        const other = state.contacts.get(id);
        return { error: `refused: this message names ${c.name} as its sender but was encrypted with the key of ` +
          `${other ? other.name : r.name || "another contact"}. The server changed its sender.` };
      }
  }
  if (senderKey && (await statusOf(senderKey)) === "ok" && (await kidOf(senderKey)) === e.sk) {
    // A stored message names the key its sender had then: the first key of
    // a contact we had none for, or a key change we learn from it.
    if (!rec || !c.online) {
      await applyKey(c, senderKey);
      return rec ? { hold: "changed" } : { key: senderKey };
    }
    return { hold: "unaccepted" };
  }
  return { hold: rec ? "unknown" : "nokey" };
}

/** A decrypted message, after the replay checks; `at` replaces a held one. */
function deliver(c, m, meta, at = -1) {
  const replaceWith = (rec) => {
    if (at >= 0) {
      c.messages[at] = rec;
      if (rec.id) state.seen.add(rec.id);
    } else {
      addMessage(c, rec);
    }
  };
  const drop = () => { if (at >= 0) c.messages.splice(at, 1); };
  if (state.seen.has(m.id) && c.messages.some((x, i) => i !== at && x.id === m.id && !x.held)) {
    drop(); // shown in this tab already: a second delivery or a replay, silently
    return;
  }
  const verdict = state.guard.check(c.id, m.id, m.ts);
  if (verdict === "replay") {
    drop();
    addSystem(c, `A message from ${c.name} that was shown before (in this browser, ${dayLabel(m.ts)} ` +
      `${clockTime(m.ts)}) arrived again. It is not shown again: a replay, or a second delivery.`, "replay");
    if (!isVisible(c)) c.unread++;
    if (at < 0) refresh(c);
    return;
  }
  state.guard.add(c.id, m.id, m.ts);
  const rec = { id: m.id, dir: "in", ts: m.ts, text: m.text };
  if (meta.serverTs !== null && Math.abs(m.ts - meta.serverTs) > SKEW_MS) rec.skew = meta.serverTs;
  const lastIn = c.messages.reduce((t, x, i) => (i !== at && x.dir === "in" && x.text !== undefined && !x.held
    ? Math.max(t, x.ts) : t), -1);
  if (m.ts < lastIn) rec.late = true;
  if (verdict === "too-old") rec.old = true;
  replaceWith(rec);
}

/** Reads the held messages of c whose key is now accepted. */
async function releaseHeld(c) {
  const held = c.messages.filter((m) => m.held);
  if (!held.length) return;
  for (const h of held) {
    let e;
    try { e = e2e.parseEnvelope(h.envelope); } catch { continue; }
    const how = await keyForEnvelope(c, e, h.senderKey);
    if (how.hold) {
      h.reason = HOLD_TEXT[how.hold](c);
      continue;
    }
    let m = null;
    let error = how.error;
    if (!error) {
      try {
        m = await (await channelFor(c.id, how.key)).decrypt(h.envelope);
      } catch (err) {
        error = `cannot decrypt (${err instanceof e2e.DecryptError ? err.message : "unsupported key"})`;
      }
    }
    const i = c.messages.indexOf(h);
    if (i < 0) continue;
    if (error) c.messages[i] = { dir: "in", ts: h.ts, error };
    else deliver(c, m, { serverTs: h.serverTs }, i);
  }
  refresh(c);
}

async function onChatMessage(data) {
  if (!state.me) return;
  const serverId = isMessageId(data.id) ? data.id : null;
  if (!isUserId(data.sender) || typeof data.message !== "string" || data.message.length > MESSAGE_MAX) {
    badInput("a message with an invalid sender or content");
    return queueReceipt(serverId);
  }
  if (data.sender === state.me.id) {
    badInput("a message that claims to come from you");
    return queueReceipt(serverId);
  }
  const serverTs = validTime(data.timestamp);
  const senderName = validName(data.senderName);
  const senderKey = typeof data.senderKey === "string" && data.senderKey.length <= 16384 ? data.senderKey : "";
  const c = contactFor(data.sender, senderName || undefined);
  const at = serverTs !== null ? serverTs : Date.now();
  if (c.keyState === "unsupported") {
    addMessage(c, { dir: "in", ts: at, error: "cannot decrypt (unsupported key)" });
    return queueReceipt(serverId);
  }
  let e;
  try {
    e = e2e.parseEnvelope(data.message);
  } catch (err) {
    addMessage(c, { dir: "in", ts: at, error: `cannot decrypt (${err.message})` });
    return queueReceipt(serverId);
  }
  const how = await keyForEnvelope(c, e, senderKey);
  if (how.error) {
    addMessage(c, { dir: "in", ts: at, error: how.error });
  } else if (how.hold) {
    if (!c.messages.some((x) => x.held && x.hid === e.id))
      addMessage(c, { dir: "in", held: true, hid: e.id, reason: HOLD_TEXT[how.hold](c), envelope: data.message,
                      senderKey, ts: at, serverTs });
    refresh(c);
  } else {
    try {
      const m = await (await channelFor(c.id, how.key)).decrypt(data.message);
      deliver(c, m, { serverTs });
    } catch (err) {
      const why = err instanceof e2e.DecryptError ? err.message : "unsupported key";
      addMessage(c, { dir: "in", ts: at, error: `cannot decrypt (${why})` });
    }
  }
  queueReceipt(serverId);
}

// ---- protocol: answers -----------------------------------------------------

function onOpen() {
  const saved = loadSession();
  if (saved && saved.token) {
    state.pending = { kind: "authorize" };
    state.conn.send({ action: Requests.AuthorizeRequest, token: saved.token, receipts: RECEIPTS, ...PRESENCE });
  }
  renderComposer();
}

// Handlers may wait for crypto or IndexedDB; a queue keeps the events in order.
function onMessage(data) {
  serial(() => handleEvent(data));
}

function handleEvent(data) {
  if (Array.isArray(data)) return badInput("an answer that is not an object");
  switch (data.event) {
    case Responses.LoginEvent: return onLogin(data);
    case Responses.AuthorizationEvent: return onAuthorized(data);
    case Responses.InvalidUserEvent: return onInvalidUser();
    case Responses.UserlistChangeEvent: return onUserList(data);
    case Responses.UserlistDeltaEvent: if (DELTA) return onUserDelta(data); break;
    case Responses.MessageEvent: return data.valid === true ? onChatMessage(data) : onSendError(data);
    case Responses.MessageAckEvent: if (ACKS) return onAck(data); break;
    default:
      if (data.valid === false) {
        const text = errorText(data.error, "The server refused the request.");
        if (document.body.dataset.view === "auth" && state.pending) {
          state.pending = null;
          setBusy(false);
          formError(text);
        } else {
          toast(text);
        }
      }
  }
}

async function onLogin(data) {
  if (!state.pending || state.pending.kind !== "login") return;
  const name = state.pending.name;
  const device = state.pending.device;
  state.pending = null;
  setBusy(false);
  if (data.valid !== true) {
    formError(errorText(data.error, "Sign-in failed."));
    return;
  }
  const users = Array.isArray(data.users) ? data.users.map(userEntry).filter(Boolean) : [];
  const username = validName(data.username) || name;
  const mine = users.find((u) => u.publicKey === device.published && u.name === username) ||
               users.find((u) => u.name.toLowerCase() === username.toLowerCase());
  if (!mine || !isToken(data.token)) {
    formError("The server's answer was incomplete. Please try again.");
    return;
  }
  startSession({ id: mine.id, name: username, token: data.token }, device);
  await onUserList(data);
}

function startSession(me, device) {
  if (!state.me || state.me.id !== me.id) resetConversations();
  state.me = me;
  state.device = device;
  state.known = new KnownKeys(me.id);
  state.guard = new ReplayGuard(me.id);
  saveSession();
  if (state.contacts.size === 0) loadHistory();
  showChat();
}

async function onAuthorized(data) {
  if (!state.pending || state.pending.kind !== "authorize") return;
  state.pending = null;
  if (data.valid !== true) return onInvalidUser();
  const saved = loadSession();
  if (!saved) return;
  if (state.me && state.device && state.me.id === saved.id) { // a reconnect: already set up
    renderConversation();
    return;
  }
  const device = await loadDeviceKey(saved.name).catch(() => null);
  if (!device) {
    // The session exists but this browser lost its key: sign in again to publish a new one.
    endSession("This browser no longer has your encryption key. Please sign in again.");
    return;
  }
  const users = state.lastUsers;
  startSession(saved, device);
  if (users) await onUserList(users);
}

function onInvalidUser() {
  const wasPending = state.pending && state.pending.kind === "authorize";
  state.pending = null;
  endSession(wasPending || state.me ? "Your session has ended. Please sign in again." : "");
}

function endSession(message) {
  if (state.me) sessionStorage.removeItem(HISTORY + state.me.id);
  sessionStorage.removeItem(SESSION);
  if (state.me) $("name").value = state.me.name;
  state.me = null;
  state.device = null;
  state.known = null;
  state.guard = null;
  resetConversations();
  showAuth(message);
}

function resetConversations() {
  state.contacts.clear();
  state.order = [];
  state.selected = null;
  state.channels.clear();
  state.seen.clear();
  state.lastSend = null;
  state.lastUsers = null;
  $("chat").dataset.pane = "list";
}

/** The valid entries of a user list; says how many were not. */
function checkedUsers(users) {
  if (!Array.isArray(users) || users.length > USERS_MAX) {
    badInput("a user list that is not a list");
    return null;
  }
  const out = [];
  const ids = new Set();
  let bad = 0;
  for (const raw of users) {
    const u = userEntry(raw);
    if (!u || ids.has(u.id)) { bad++; continue; }
    ids.add(u.id);
    out.push(u);
  }
  if (bad) badInput(`${bad} invalid user ${bad === 1 ? "entry" : "entries"} (a malformed or repeated id, name or key)`);
  return out;
}

async function onUserList(data) {
  const users = data.checked ? data.users : checkedUsers(data.users);
  if (!users) return;
  state.lastUsers = { users, checked: true };
  if (!state.me) return;
  const order = [];
  for (const c of state.contacts.values()) c.online = false;
  for (const u of users) {
    if (u.id === state.me.id) {
      if (u.publicKey !== state.device.published)
        toast("The server lists a different key for your own account. Sign in again on this device to use it here.");
      continue;
    }
    const c = contactFor(u.id, u.name);
    if (c.named && c.name !== u.name) {
      addSystem(c, `The server now lists ${c.name} as ${u.name}.`, "rename");
      state.known.rename(c.id, u.name);
    }
    c.name = u.name;
    c.named = true;
    c.online = true;
    if (c.listedKey !== u.publicKey) await applyKey(c, u.publicKey);
    order.push(u.id);
  }
  state.order = order;
  renderContacts();
  if (state.selected) renderConversation();
  saveHistory();
}

// Changes apply in order to the last whole list: a join replaces or adds,
// a leave removes (docs/PROTOCOL.md, "Presence modes").
async function onUserDelta(data) {
  if (!Array.isArray(data.changes) || !state.lastUsers) {
    if (!Array.isArray(data.changes)) badInput("a presence change that is not a list");
    return;
  }
  const list = state.lastUsers.users.slice();
  let bad = 0;
  for (const ch of data.changes) {
    const leave = ch && ch.op === "leave" && isUserId(ch.id);
    const join = ch && ch.op === "join" ? userEntry(ch) : null;
    if (!leave && !join) { bad++; continue; }
    const at = list.findIndex((u) => u.id === ch.id);
    if (leave) {
      if (at >= 0) list.splice(at, 1);
    } else if (at >= 0) list[at] = join; else list.push(join);
  }
  if (bad) badInput(`${bad} invalid presence ${bad === 1 ? "change" : "changes"}`);
  await onUserList({ users: list, checked: true });
}

function findOwn(id) {
  for (const c of state.contacts.values()) {
    const m = c.messages.find((x) => x.dir === "out" && x.id === id);
    if (m) return { c, m };
  }
  return null;
}

function onAck(data) {
  const found = isMessageId(data.id) ? findOwn(data.id) : null;
  if (data.valid === false || data.status === "rejected") {
    const text = errorText(data.error, "The server refused the message.");
    if (found) found.m.failed = text;
    toast(`Not delivered: ${text}`);
  } else if (found && typeof data.status === "string" && ACK_TEXT.has(data.status)) {
    // "received" is final; a late "delivered" or "stored" must not undo it
    if (found.m.ack !== "received") found.m.ack = data.status;
    delete found.m.failed;
  }
  if (found) {
    if (state.selected === found.c.id) renderMessages(found.c);
    saveHistory();
  }
}

// Receipts go out in small batches once the messages are handled (and saved).
let receiptIds = [];
function queueReceipt(id) {
  if (!RECEIPTS || !isMessageId(id)) return;
  receiptIds.push(id);
  if (receiptIds.length === 1) setTimeout(() => {
    const ids = receiptIds;
    receiptIds = [];
    if (state.me && ids.length) state.conn.send({ action: Requests.ReceiptRequest, token: state.me.token, ids });
  }, 50);
}

function onSendError(data) {
  const text = errorText(data.error, "The message was not delivered.");
  const last = state.lastSend;
  if (last && Date.now() - last.at < FAIL_WINDOW_MS) {
    const c = state.contacts.get(last.peerId);
    const m = c && c.messages.find((x) => x.id === last.msgId);
    if (m) {
      m.failed = text;
      if (state.selected === c.id) renderMessages(c);
      saveHistory();
    }
  }
  toast(`Not delivered: ${text}`);
}

// ---- protocol: requests ----------------------------------------------------

async function submitAuth(ev) {
  ev.preventDefault();
  formError("");
  // The server stores names in Unicode compatibility form (NFKC); so does the key slot here.
  const name = $("name").value.trim().normalize("NFKC");
  $("name").value = name;
  const password = $("password").value;
  const problem = nameError(name) || passwordError(password, $("confirm").value, state.registering);
  if (problem) {
    formError(problem);
    return;
  }
  if (!state.conn || !state.conn.isOpen) {
    formError("Not connected to the server yet. Please wait a moment.");
    return;
  }
  setBusy(true);
  try {
    const device = await deviceKeyFor(name);
    const digest = await passwordDigest(password);
    state.pending = { kind: "login", name, device };
    const sent = state.conn.send({
      action: state.registering ? Requests.RegisterRequest : Requests.LoginRequest,
      name, password: digest, pubKey: device.published, receipts: RECEIPTS, ...PRESENCE,
    });
    if (!sent) throw new Error("The connection was lost. Please try again.");
  } catch (err) {
    state.pending = null;
    setBusy(false);
    formError(err.message || String(err));
  }
}

async function sendMessage(ev) {
  if (ev) ev.preventDefault();
  const c = state.contacts.get(state.selected);
  const input = $("message");
  const text = input.value.replace(/\s+$/, "");
  if (!c || !text.trim() || input.disabled) return;
  if (c.keyState !== "ok") return; // never plaintext, never to a key the person did not accept
  try {
    const ch = await channelFor(c.id, c.publicKey);
    const { id, envelope } = await ch.encrypt(text);
    const request = { action: Requests.MessageRequest, token: state.me.token, target: c.id, message: envelope };
    if (ACKS) request.id = id;
    const sent = state.conn.send(request);
    if (!sent) { toast("Not connected: the message was not sent."); return; }
    state.lastSend = { peerId: c.id, msgId: id, at: Date.now() };
    input.value = "";
    autosize();
    addMessage(c, { id, dir: "out", ts: Date.now(), text });
  } catch (err) {
    toast(err instanceof RangeError ? "This message is too long." : `Could not encrypt: ${err.message || err}`);
  }
}

function logout() {
  if (state.me && state.conn) state.conn.send({ action: Requests.LogoutRequest, token: state.me.token });
  const name = state.me ? state.me.name : "";
  endSession("");
  $("name").value = name;
  toast("You are logged out.", "info");
}

// ---- wiring ----------------------------------------------------------------

function autosize() {
  const t = $("message");
  t.style.height = "auto";
  t.style.height = Math.min(t.scrollHeight, 160) + "px";
}

function applyTheme(theme) {
  if (theme === "light" || theme === "dark") document.documentElement.dataset.theme = theme;
  else delete document.documentElement.dataset.theme;
}

function toggleTheme() {
  const dark = document.documentElement.dataset.theme
    ? document.documentElement.dataset.theme === "dark"
    : matchMedia("(prefers-color-scheme: dark)").matches;
  const next = dark ? "light" : "dark";
  localStorage.setItem(THEME, next);
  applyTheme(next);
}

function wire() {
  $("tab-login").addEventListener("click", () => setMode(false));
  $("tab-register").addEventListener("click", () => setMode(true));
  $("auth-form").addEventListener("submit", submitAuth);
  $("composer").addEventListener("submit", sendMessage);
  $("message").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) sendMessage(ev);
  });
  $("message").addEventListener("input", autosize);
  $("logout").addEventListener("click", logout);
  $("theme").addEventListener("click", toggleTheme);
  $("back").addEventListener("click", () => { $("chat").dataset.pane = "list"; });
  $("verify").addEventListener("click", openVerify);
  $("key-compare").addEventListener("click", openVerify);
  $("key-accept").addEventListener("click", () => { const c = state.contacts.get(state.selected); if (c) acceptKey(c); });
  $("verify-dialog").addEventListener("close", closeVerify);
  $("retry").addEventListener("click", () => state.conn && state.conn.connectNow());
  document.addEventListener("visibilitychange", () => {
    const c = state.contacts.get(state.selected);
    if (document.visibilityState === "visible" && c && c.unread) { c.unread = 0; renderContacts(); saveHistory(); }
  });
}

function main() {
  applyTheme(localStorage.getItem(THEME));
  wire();
  setMode(false);
  if (!e2e.isSupported() || !window.isSecureContext) {
    // Without WebCrypto nothing could be encrypted: refuse to run at all.
    document.body.dataset.conn = "closed";
    $("insecure").hidden = false;
    for (const n of $("auth-form").elements) n.disabled = true;
    $("tab-register").disabled = true;
    $("auth-status").textContent = "Not connected: HTTPS is needed.";
    return;
  }
  const saved = loadSession();
  if (saved && saved.name) $("name").value = saved.name;
  state.conn = new Connection(chatUrl(CONFIGURED_URL, location), {
    open: onOpen, message: onMessage, status: onConnStatus,
  });
  state.conn.start();
  showAuth("");
  if (saved && saved.token) document.body.classList.add("resuming");
}

main();
