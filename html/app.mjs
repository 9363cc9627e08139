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
import { deviceKeyFor, loadDeviceKey, KnownKeys, ReplayGuard, saveSenderKey, loadSenderKeys } from "./keystore.mjs";
import { GroupBook, checkedGroup, checkedChange, isGroupId, validGroupName } from "./groups.mjs";
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
// Groups and finding people by name (docs/PROTOCOL.md, "Groups", "User
// lists and presence"): shown only when the server publishes them.
const GROUPS = Requests.GroupCreateRequest !== undefined && Responses.GroupEvent !== undefined && ACKS;
const LOOKUP = Requests.UserLookupRequest !== undefined && Responses.UserLookupEvent !== undefined;
const GROUP_HELD_MAX = 500;              // group messages and keys waiting for what they need, per kind
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
  groupListParts: null,     // the group ids of a GroupListEvent's parts so far
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
  groups: null,             // GroupBook of `me` (groups.mjs)
  gconvs: new Map(),        // group id -> {id, messages, unread}
  selectedGroup: null,      // id of the open group conversation
  gguard: null,             // ReplayGuard of `me` for group messages
  senderKeys: new Map(),    // "group|sender|epoch|gen" -> CryptoKey (decrypt)
  myKeys: new Map(),        // group id -> {epoch, gen, key, raw|null, sentTo: Map(member id -> their key)}
  pendingKeys: [],          // sender keys for a group or epoch not known yet: [{from, k}]
  pendingGroupMsgs: [],     // group messages for a group not known yet: [event data]
  myRequests: new Map(),    // request id -> {op, members, group} of our group requests
  managing: null,           // group id while the members dialog is open
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
  const groups = [...state.gconvs.values()].filter((g) => g.messages.length)
    .map((g) => ({ id: g.id, unread: g.unread, messages: g.messages.slice(-500) }));
  try { sessionStorage.setItem(HISTORY + "g." + state.me.id, JSON.stringify(groups)); } catch { /* as above */ }
}

function loadHistory() {
  let glist;
  try { glist = JSON.parse(sessionStorage.getItem(HISTORY + "g." + state.me.id)); } catch { glist = null; }
  if (Array.isArray(glist))
    for (const h of glist) {
      if (!h || !isGroupId(h.id) || !Array.isArray(h.messages)) continue;
      const gc = gconvFor(h.id);
      gc.unread = Number.isSafeInteger(h.unread) && h.unread > 0 ? h.unread : 0;
      gc.messages = h.messages.filter((m) => m && typeof m === "object" && validTime(m.ts) !== null);
      for (const m of gc.messages) if (typeof m.id === "string") state.seen.add(m.id);
    }
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

/** The end of a sidebar entry (a contact or a group): the unread badge, then the parts in place. */
function finishSidebarItem(list, li, btn, av, body, top, bottom, unread) {
  if (unread > 0) {
    const badge = el("span", "badge", String(unread));
    badge.setAttribute("aria-label", `${unread} unread`);
    bottom.append(badge);
  }
  body.append(top, bottom);
  btn.append(av, body);
  li.append(btn);
  list.append(li);
}

function renderContacts() {
  const list = $("contacts");
  list.textContent = "";
  const ids = [...state.order];
  for (const c of state.contacts.values())
    if (!ids.includes(c.id) && (c.messages.length || c.found)) ids.push(c.id); // offline, with history or found
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
    finishSidebarItem(list, li, btn, av, body, top, bottom, c.unread);
  }
  $("online-count").textContent = online ? String(online) : "";
  $("no-contacts").hidden = ids.length > 0;
  renderGroups();
  const unread = [...state.contacts.values()].reduce((n, c) => n + c.unread, 0) +
    [...state.gconvs.values()].reduce((n, g) => n + g.unread, 0);
  document.title = unread ? `(${unread}) QMessage` : "QMessage";
}

function previewOf(m) {
  if (m.held) return "Held message";
  if (m.error) return m.error;
  return m.text || "";
}

function select(id) {
  state.selected = id;
  state.selectedGroup = null;
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
  if (state.selectedGroup) return renderGroupConversation();
  $("group-info").hidden = true;
  $("peer-avatar").classList.remove("group-avatar");
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
  renderMessageList(c.messages, c.keyState === "ok" || c.keyState === "changed"
    ? "Messages here are end-to-end encrypted: only you and " + c.name +
      " can read them. Compare the safety numbers to be sure."
    : null, false);
}

/* One conversation's messages into #messages, under its note: a direct
   conversation's, or a group's (withSenders: each incoming message names its
   sender, and a run of messages is one sender's). */
function renderMessageList(messages, note, withSenders) {
  const list = $("messages");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 60;
  list.textContent = "";
  if (note) list.append(el("li", "e2e-note", note));
  let day = "";
  let prev = null;
  for (const m of messages) {
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
    if (withSenders && m.sender) li.dataset.sender = m.sender;
    if (prev && prev.dir === m.dir && (!withSenders || prev.sender === m.sender) && m.ts - prev.ts < 120000)
      li.classList.add("cont");
    if (withSenders && m.dir === "in") li.append(el("span", "sender", nameOf(m.sender)));
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
  if (atBottom || messages.length < 3) list.scrollTop = list.scrollHeight;
}

function renderComposer() {
  if (state.selectedGroup) return renderGroupComposer();
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
          if (wasChanged) await distributeTo(c.id);
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
    await distributeTo(c.id);
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
    else if (m.control) { c.messages.splice(i, 1); await onControl(c, m); }
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
      if (m.control) await onControl(c, m);
      else deliver(c, m, { serverTs });
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
    // (-1 when the server does not publish the event: never a frame's "event")
    case LOOKUP ? Responses.UserLookupEvent : -1: return onLookup(data);
    case GROUPS ? Responses.GroupEvent : -1: return onGroupEvent(data);
    case GROUPS ? Responses.GroupListEvent : -1: return onGroupList(data);
    case GROUPS ? Responses.GroupMessageEvent : -1: return onGroupMessage(data);
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
  state.gguard = new ReplayGuard(me.id, localStorage, "qms1.gseen.");
  state.groups = new GroupBook(me.id);
  saveSession();
  if (state.contacts.size === 0) loadHistory();
  showChat();
  // the group keys this browser kept; then the server's groups (the events wait for both, in order)
  serial(() => loadMyGroupKeys(me.id));
  requestGroups();
}

async function onAuthorized(data) {
  if (!state.pending || state.pending.kind !== "authorize") return;
  state.pending = null;
  if (data.valid !== true) return onInvalidUser();
  const saved = loadSession();
  if (!saved) return;
  if (state.me && state.device && state.me.id === saved.id) { // a reconnect: already set up
    requestGroups();
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
  state.gguard = null;
  state.groups = null;
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
  state.gconvs.clear();
  state.selectedGroup = null;
  state.senderKeys.clear();
  state.myKeys.clear();
  state.pendingKeys = [];
  state.pendingGroupMsgs = [];
  state.myRequests.clear();
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
  for (const g of state.gconvs.values()) {
    const m = g.messages.find((x) => x.dir === "out" && x.id === id);
    if (m) return { c: g, m, group: true };
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
    if (found.group ? state.selectedGroup === found.c.id : state.selected === found.c.id) renderConversation();
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
  if (state.selectedGroup) return sendGroupMessage();
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

// ---- groups ----------------------------------------------------------------
//
// Sender keys (docs/E2E.md, "Groups"): each member encrypts to a group under
// its own random key for the group's current epoch, and sends that key to
// every other member it may send it to (groups.mjs decides who) inside the
// pairwise channel. A new epoch (a membership change) means a new key.

const skid = (g, sender, epoch, gen) => `${g}|${sender}|${epoch}|${gen}`;

function gconvFor(id) {
  let g = state.gconvs.get(id);
  if (!g) { g = { id, messages: [], unread: 0 }; state.gconvs.set(id, g); }
  return g;
}

function nameOf(id) {
  if (state.me && id === state.me.id) return "you";
  const c = state.contacts.get(id);
  return c ? c.name : "someone";
}

const listNames = (ids) => ids.map(nameOf).join(", ");

function addGSystem(gc, text, kind) {
  gc.messages.push({ dir: "sys", ts: Date.now(), text, ...(kind ? { kind } : {}) });
}

function requestGroups() {
  if (GROUPS && state.me && state.conn) state.conn.send({ action: Requests.GroupListRequest, token: state.me.token });
}

let requestCounter = 0;
/** Sends a group request with an id of ours, remembered to recognise our own change in its answer. */
function groupRequest(action, fields, mine) {
  const id = `g${Date.now().toString(36)}${(++requestCounter).toString(36)}`;
  state.myRequests.set(id, { ...mine, at: Date.now() });
  for (const [k, v] of state.myRequests) if (Date.now() - v.at > 600000) state.myRequests.delete(k);
  if (!state.conn.send({ action, token: state.me.token, ...fields, id })) {
    state.myRequests.delete(id);
    toast("Not connected: nothing was changed.");
    return false;
  }
  return true;
}

/** The sender keys this browser kept for `me` (ours can encrypt; the rest only decrypt). */
async function loadMyGroupKeys(meId) {
  let all = [];
  try { all = await loadSenderKeys(meId); } catch { all = []; }
  if (!state.me || state.me.id !== meId) return;
  for (const r of all) {
    if (!isGroupId(r.group) || !Number.isSafeInteger(r.epoch) || !Number.isSafeInteger(r.gen)) continue;
    if (r.sender === meId) {
      const have = state.myKeys.get(r.group);
      if (!have || have.epoch < r.epoch || (have.epoch === r.epoch && have.gen < r.gen))
        state.myKeys.set(r.group, { epoch: r.epoch, gen: r.gen, key: r.key, raw: null,
          sentTo: new Map(Array.isArray(r.sentTo) ? r.sentTo.filter((x) => Array.isArray(x) && x.length === 2) : []) });
    } else if (isUserId(r.sender)) {
      state.senderKeys.set(skid(r.group, r.sender, r.epoch, r.gen), r.key);
    }
  }
}

function keepMyKey(groupId, mk) {
  return saveSenderKey({ me: state.me.id, group: groupId, sender: state.me.id, epoch: mk.epoch, gen: mk.gen, key: mk.key,
    sentTo: [...mk.sentTo.entries()] }).catch(() => {});
}

/** A new sender key of ours for the group's current epoch (generation 1, or the next), sent to who may have it. */
async function rekey(g) {
  const prev = state.myKeys.get(g.id);
  const gen = prev && prev.epoch === g.epoch ? prev.gen + 1 : 1;
  const { key, raw } = await e2e.newSenderKey();
  const mk = { epoch: g.epoch, gen, key, raw, sentTo: new Map() };
  state.myKeys.set(g.id, mk);
  await keepMyKey(g.id, mk);
  await distribute(g);
}

/**
 * The members our current key goes to: confirmed (groups.mjs) and with a
 * key the person accepted for them (the pairwise channel's rules: a changed,
 * invalid or missing key gets nothing until it is accepted).
 */
function eligible(g) {
  return g.members.filter((m) => {
    if (m.id === state.me.id || !g.confirmed.includes(m.id)) return false;
    const c = state.contacts.get(m.id);
    return c && c.keyState === "ok" && c.publicKey;
  });
}

/** Sends our current key to every eligible member who does not have it (under the key they have now). */
async function distribute(g) {
  if (!g || g.removed || !state.me) return;
  const mk = state.myKeys.get(g.id);
  if (!mk || mk.epoch !== g.epoch) return rekey(g);
  const targets = eligible(g).filter((m) => mk.sentTo.get(m.id) !== state.contacts.get(m.id).publicKey);
  if (!targets.length) return;
  if (!mk.raw) return rekey(g); // its bytes are gone (a reload): a new generation for everyone
  const mh = await e2e.memberHash(g.id, g.epoch, g.members.map((m) => m.id));
  const change = g.author && g.author.epoch === g.epoch ? { op: g.author.op } : null;
  for (const m of targets) {
    const c = state.contacts.get(m.id);
    const ch = await channelFor(c.id, c.publicKey);
    const { id, envelope } = await ch.encryptControl(e2e.senderKeyControl({ groupId: g.id, epoch: g.epoch, gen: mk.gen,
      raw: mk.raw, mh, change }));
    const request = { action: Requests.MessageRequest, token: state.me.token, target: c.id, message: envelope, id };
    if (!state.conn.send(request)) break; // not connected: the rest go after the next GroupList
    mk.sentTo.set(m.id, c.publicKey);
  }
  await keepMyKey(g.id, mk);
}

/** A contact's key was accepted: the groups they are in may now get our key. */
async function distributeTo(contactId) {
  if (!state.groups) return;
  for (const g of state.groups.all())
    if (!g.removed && g.members.some((m) => m.id === contactId)) await distribute(g);
}

/** A group member as a contact (name and key from the group's list, under the same rules as user lists). */
async function memberContact(m) {
  const c = contactFor(m.id, m.name);
  if (!c.named) { c.name = m.name; c.named = true; }
  if (c.listedKey !== m.publicKey && !(c.online && c.listedKey !== undefined)) await applyKey(c, m.publicKey);
}

function trustWord(id) {
  const c = state.contacts.get(id);
  return c ? trustOf(c)[1] : "No key";
}

/** A group state from the server: checked against what we knew, notices, new keys. */
async function applyGroup(raw, change, mine) {
  const gnew = checkedGroup(raw);
  if (!gnew) return badInput("a group that is not valid");
  const before = state.groups.get(gnew.id);
  const r = state.groups.apply(gnew, change, mine);
  const gc = gconvFor(gnew.id);
  if (r.verdict === "not-member") return badInput("a group that does not list you as a member");
  if (r.verdict === "stale") {
    addGSystem(gc, `The server sent an older state of this group (change ${gnew.epoch}, after ${before.epoch}). ` +
      "It was ignored.", "warn");
    return refreshGroup(gc);
  }
  if (r.verdict === "fork") {
    addGSystem(gc, `The server sent another member list for the same state of this group (change ${gnew.epoch}). ` +
      "It was ignored: the server may be showing members different lists.", "warn");
    return refreshGroup(gc);
  }
  for (const m of gnew.members) if (m.id !== state.me.id) await memberContact(m);
  const g = r.record;
  const by = change && change.by ? nameOf(change.by) : null;
  const By = by ? by[0].toUpperCase() + by.slice(1) : "The server";
  const withTrust = (ids) => ids.map((id) => `${nameOf(id)} (${trustWord(id)})`).join(", ");
  if (r.verdict === "same") {
    if (r.renamed) addGSystem(gc, `${By} renamed the group from “${r.previousName}” to “${g.name}”.`);
    if (change && (change.op === "promote" || change.op === "demote") && change.members.length)
      addGSystem(gc, `${By} made ${listNames(change.members)} ${change.op === "promote" ? "an admin" : "a member"}.`);
  } else if (r.verdict === "new") {
    const others = g.members.filter((m) => m.id !== state.me.id).map((m) => m.id);
    addGSystem(gc, mine && mine.op === "create" ? `You created the group “${g.name}” with ${withTrust(others) || "nobody else"}.`
      : `You are in the group “${g.name}”${by && change.op !== "create" ? ` (added by ${by})` : by ? ` (created by ${by})` : ""}` +
        ` with ${withTrust(others) || "nobody else"}.`);
  } else { // advance
    if (r.added.length) addGSystem(gc, `${By} added ${withTrust(r.added)}.`, "member");
    if (r.removed.length) {
      const left = change && change.op === "leave";
      addGSystem(gc, left ? `${listNames(r.removed)} left the group.` : `${By} removed ${listNames(r.removed)}.`, "member");
    }
    if (!r.added.length && !r.removed.length) addGSystem(gc, `The group changed (change ${g.epoch}).`, "member");
  }
  if (r.verdict === "new" || r.verdict === "advance") {
    const waiting = state.groups.unconfirmed(g.id);
    if (waiting.length)
      addGSystem(gc, `Not confirmed yet: ${listNames(waiting)}. Your key for this group is not sent to ` +
        `${waiting.length === 1 ? "them" : "these members"} until the owner or an admin who added them confirms ` +
        "it from their own device, or you choose to send it (Members).", "warn");
    addGSystem(gc, "New encryption keys for this group: earlier messages stay readable here; people who were " +
      "not members then cannot read them, and people who are no longer members cannot read what follows.", "key");
    await rekey(g);
  }
  await releaseGroupHeld(g);
  await retryPendingKeys(g.id);
  await retryPendingMessages(g.id);
  refreshGroup(gc);
}

function refreshGroup(gc) {
  renderContacts();
  if (state.selectedGroup === gc.id) renderConversation();
  if (state.managing === gc.id) renderGroupDialog();
  saveHistory();
}

async function onGroupEvent(data) {
  if (!state.me) return;
  const mine = isMessageId(data.id) ? state.myRequests.get(data.id) || null : null;
  if (mine) state.myRequests.delete(data.id);
  if (data.valid !== true) {
    toast(errorText(data.error, "The server refused the group request."));
    return;
  }
  if (data.removed === true) {
    const gid = data.group && data.group.id;
    if (!isGroupId(gid)) return badInput("a group removal without a valid group");
    const g = state.groups.get(gid);
    if (!g) return;
    const change = checkedChange(data.change);
    state.groups.markRemoved(gid, data.group.name);
    state.myKeys.delete(gid);
    const gc = gconvFor(gid);
    addGSystem(gc, change && change.op === "leave" ? "You left this group." :
      `${change && change.by ? nameOf(change.by)[0].toUpperCase() + nameOf(change.by).slice(1) : "The server"} removed you ` +
      "from this group. You get nothing sent to it from now on.", "member");
    if (state.managing === gid) $("group-dialog").close();
    return refreshGroup(gc);
  }
  await applyGroup(data.group, checkedChange(data.change), mine);
}

async function onGroupList(data) {
  if (!state.me) return;
  if (data.valid !== true) return toast(errorText(data.error, "The server did not list your groups."));
  if (!Array.isArray(data.groups)) return badInput("a group list that is not a list");
  // a long list comes in parts ("more": true on all but the last): what a
  // group missing from the list means is known only at the last part
  const listed = state.groupListParts || new Set();
  for (const raw of data.groups) {
    if (raw && isGroupId(raw.id)) listed.add(raw.id);
    await applyGroup(raw, null, null);
  }
  if (data.more === true) {
    state.groupListParts = listed;
    return;
  }
  state.groupListParts = null;
  for (const g of state.groups.all())
    if (!g.removed && !listed.has(g.id)) {
      state.groups.markRemoved(g.id);
      state.myKeys.delete(g.id);
      const gc = gconvFor(g.id);
      addGSystem(gc, "The server no longer lists you in this group.", "member");
      refreshGroup(gc);
    }
  // members whose keys were not accepted before may be now
  for (const g of state.groups.all()) await distribute(g);
  renderContacts();
}

/** A sender key from contact c (a pairwise message that decrypted under a key the person accepted). */
async function onControl(c, m) {
  let k;
  try {
    k = e2e.parseSenderKeyControl(m.control);
  } catch (err) {
    addSystem(c, `${c.name} sent a group key message that is not valid (${err.message}). It was ignored.`, "warn");
    return refresh(c);
  }
  return onSenderKey(c, k);
}

async function onSenderKey(c, k) {
  const g = state.groups.get(k.groupId);
  if (!g || k.epoch > g.epoch) { // its group or epoch is not known yet: kept until it is
    state.pendingKeys.push({ from: c.id, k });
    if (state.pendingKeys.length > GROUP_HELD_MAX) state.pendingKeys.shift();
    return;
  }
  const gc = gconvFor(g.id);
  const exact = state.groups.membersAt(g.id, k.epoch);
  const members = exact || (k.epoch < state.groups.firstEpoch(g.id)
    ? state.groups.membersAt(g.id, state.groups.firstEpoch(g.id)) : null);
  if (!members || !members.includes(c.id)) {
    addGSystem(gc, `${c.name} sent a key for this group (change ${k.epoch}) but was not a member then, as the ` +
      "server told you. It was refused.", "warn");
    return refreshGroup(gc);
  }
  const id = skid(g.id, c.id, k.epoch, k.gen);
  if (!state.senderKeys.has(id)) {
    const key = await e2e.importSenderKey(k.raw);
    state.senderKeys.set(id, key);
    await saveSenderKey({ me: state.me.id, group: g.id, sender: c.id, epoch: k.epoch, gen: k.gen, key }).catch(() => {});
  }
  if (exact) {
    const mh = await e2e.memberHash(g.id, k.epoch, exact);
    if (mh !== k.mh) {
      addGSystem(gc, `${c.name}'s device sees another member list for this group (change ${k.epoch}) than the server ` +
        "showed you. The server may be showing members different lists.", "warn");
    } else if (k.change) {
      const now = state.groups.vouch(g.id, k.epoch, c.id, k.change);
      if (now.length) {
        addGSystem(gc, `${c.name} confirmed from their own device that the group has ${listNames(now)}. ` +
          "Your key is sent to them now.", "member");
        await distribute(state.groups.get(g.id));
      }
    }
  }
  await releaseGroupHeld(state.groups.get(g.id));
  refreshGroup(gc);
}

async function retryPendingKeys(groupId) {
  const g = state.groups.get(groupId);
  const ready = state.pendingKeys.filter((p) => p.k.groupId === groupId && g && p.k.epoch <= g.epoch);
  if (!ready.length) return;
  state.pendingKeys = state.pendingKeys.filter((p) => !ready.includes(p));
  for (const p of ready) {
    const c = state.contacts.get(p.from);
    if (c) await onSenderKey(c, p.k);
  }
}

async function retryPendingMessages(groupId) {
  const ready = state.pendingGroupMsgs.filter((d) => d.group === groupId);
  if (!ready.length) return;
  state.pendingGroupMsgs = state.pendingGroupMsgs.filter((d) => !ready.includes(d));
  for (const d of ready) await onGroupMessage(d);
}

const GROUP_HOLD_TEXT = {
  key: (name) => `Waiting for ${name}'s key for this group: it travels separately and is read when it arrives.`,
  epoch: () => "Waiting for the group's member list of the change this message was written in.",
};

/** What an envelope from `sender` in group g is: {m}, {hold}, or {error}. Only keys of members at that epoch read it. */
async function openGroupEnvelope(g, senderId, text) {
  let e;
  try { e = e2e.parseGroupEnvelope(text); } catch (err) { return { error: `cannot decrypt (${err.message})` }; }
  if (e.g !== g.id) return { error: "refused: this message was written for another group. The server moved it here." };
  let members = state.groups.membersAt(g.id, e.e);
  if (!members) {
    if (e.e > g.epoch) return { hold: "epoch" };
    members = state.groups.membersAt(g.id, state.groups.firstEpoch(g.id));
  }
  if (!members.includes(senderId))
    return { error: `refused: ${nameOf(senderId)} was not a member of this group when it was written (change ${e.e}), ` +
      "as the server told you." };
  const key = state.senderKeys.get(skid(g.id, senderId, e.e, e.gen));
  if (!key) return { hold: "key" };
  try {
    return { m: await e2e.decryptGroup(e, { groupId: g.id, senderId, key }) };
  } catch (err) {
    return { error: `cannot decrypt (${err instanceof e2e.DecryptError ? err.message : "bad key"})` };
  }
}

/** A decrypted group message after the replay checks; `at` replaces a held one. */
function deliverGroup(gc, senderId, m, serverTs, at = -1) {
  const drop = () => { if (at >= 0) gc.messages.splice(at, 1); };
  if (state.seen.has(m.id) && gc.messages.some((x, i) => i !== at && x.id === m.id && !x.held)) return drop();
  const verdict = state.gguard.check(senderId, m.id, m.ts);
  if (verdict === "replay") {
    drop();
    addGSystem(gc, `A message from ${nameOf(senderId)} that was shown before arrived again. It is not shown again.`, "replay");
    return;
  }
  state.gguard.add(senderId, m.id, m.ts);
  const rec = { id: m.id, dir: "in", ts: m.ts, text: m.text, sender: senderId };
  if (serverTs !== null && serverTs !== undefined && Math.abs(m.ts - serverTs) > SKEW_MS) rec.skew = serverTs;
  if (verdict === "too-old") rec.old = true;
  if (at >= 0) gc.messages[at] = rec; else gc.messages.push(rec);
  state.seen.add(m.id);
  if (at < 0 && !isGroupVisible(gc)) gc.unread++;
}

async function releaseGroupHeld(g) {
  if (!g) return;
  const gc = gconvFor(g.id);
  for (const h of gc.messages.filter((x) => x.held)) {
    const r = await openGroupEnvelope(g, h.sender, h.envelope);
    if (r.hold) { h.reason = GROUP_HOLD_TEXT[r.hold](nameOf(h.sender)); continue; }
    const i = gc.messages.indexOf(h);
    if (i < 0) continue;
    if (r.error) gc.messages[i] = { dir: "in", ts: h.ts, error: r.error, sender: h.sender };
    else deliverGroup(gc, h.sender, r.m, h.serverTs, i);
  }
}

function isGroupVisible(gc) {
  return state.selectedGroup === gc.id && document.visibilityState === "visible" &&
    (window.innerWidth > 760 || $("chat").dataset.pane === "conversation");
}

async function onGroupMessage(data) {
  if (!state.me) return;
  if (data.valid === false) return toast(`Not delivered: ${errorText(data.error, "the server refused the message.")}`);
  const serverId = isMessageId(data.id) ? data.id : null;
  if (!isGroupId(data.group) || !isUserId(data.sender) || typeof data.message !== "string" ||
      data.message.length > MESSAGE_MAX) {
    badInput("a group message with an invalid group, sender or content");
    return queueReceipt(serverId);
  }
  if (data.sender === state.me.id) {
    badInput("a group message that claims to come from you");
    return queueReceipt(serverId);
  }
  const g = state.groups.get(data.group);
  if (!g) { // its group is not known yet (stored messages come before the group list): kept until it is
    state.pendingGroupMsgs.push(data);
    if (state.pendingGroupMsgs.length > GROUP_HELD_MAX) state.pendingGroupMsgs.shift();
    return queueReceipt(serverId);
  }
  if (!state.contacts.has(data.sender) && validName(data.senderName)) contactFor(data.sender, validName(data.senderName));
  const gc = gconvFor(g.id);
  const serverTs = validTime(data.timestamp);
  const at = serverTs !== null ? serverTs : Date.now();
  const r = await openGroupEnvelope(g, data.sender, data.message);
  if (r.error) {
    gc.messages.push({ dir: "in", ts: at, error: r.error, sender: data.sender });
    if (!isGroupVisible(gc)) gc.unread++;
  } else if (r.hold) {
    let hid = null;
    try { hid = e2e.parseGroupEnvelope(data.message).id; } catch { /* shape checked in openGroupEnvelope */ }
    if (!gc.messages.some((x) => x.held && x.hid === hid)) {
      gc.messages.push({ dir: "in", held: true, hid, reason: GROUP_HOLD_TEXT[r.hold](nameOf(data.sender)),
        envelope: data.message, sender: data.sender, ts: at, serverTs });
      if (gc.messages.filter((x) => x.held).length > GROUP_HELD_MAX) gc.messages.splice(gc.messages.findIndex((x) => x.held), 1);
      if (!isGroupVisible(gc)) gc.unread++;
    }
  } else {
    deliverGroup(gc, data.sender, r.m, serverTs);
  }
  refreshGroup(gc);
  queueReceipt(serverId);
}

async function sendGroupMessage() {
  const g = state.groups && state.groups.get(state.selectedGroup);
  const gc = g && gconvFor(g.id);
  const input = $("message");
  const text = input.value.replace(/\s+$/, "");
  if (!g || g.removed || !text.trim() || input.disabled) return;
  const mk = state.myKeys.get(g.id);
  if (!mk || mk.epoch !== g.epoch) { toast("The group's keys are being prepared. Try again in a moment."); return; }
  try {
    const { id, envelope } = await e2e.encryptGroup({ groupId: g.id, senderId: state.me.id, epoch: mk.epoch, gen: mk.gen,
      key: mk.key }, text);
    const sent = state.conn.send({ action: Requests.GroupMessageRequest, token: state.me.token, group: g.id,
      message: envelope, id });
    if (!sent) { toast("Not connected: the message was not sent."); return; }
    input.value = "";
    autosize();
    gc.messages.push({ id, dir: "out", ts: Date.now(), text, sender: state.me.id });
    state.seen.add(id);
    refreshGroup(gc);
  } catch (err) {
    toast(err instanceof RangeError ? "This message is too long." : `Could not encrypt: ${err.message || err}`);
  }
}

// ---- groups: views ---------------------------------------------------------

function renderGroups() {
  $("groups-section").hidden = !GROUPS || !state.groups;
  $("lookup-form").hidden = !LOOKUP;
  if (!GROUPS || !state.groups) return;
  const list = $("groups");
  list.textContent = "";
  const groups = state.groups.all();
  for (const g of groups) {
    const gc = gconvFor(g.id);
    const li = el("li", "contact group");
    li.dataset.groupId = g.id;
    li.dataset.name = g.name;
    li.classList.toggle("selected", state.selectedGroup === g.id);
    li.classList.toggle("offline", !!g.removed);
    const btn = el("button");
    btn.type = "button";
    btn.addEventListener("click", () => selectGroup(g.id));
    const av = el("span", "avatar group-avatar");
    paintAvatar(av, g.name);
    const body = el("span", "contact-body");
    const top = el("span", "contact-top");
    top.append(el("span", "contact-name ellipsis", g.name));
    const last = gc.messages.filter((m) => m.dir !== "sys").at(-1);
    if (last) top.append(el("time", "contact-time", shortTime(last.ts)));
    const bottom = el("span", "contact-bottom");
    const preview = el("span", "preview ellipsis");
    const waiting = state.groups.unconfirmed(g.id).length;
    if (g.removed) preview.textContent = "You are not a member";
    else if (waiting) { preview.textContent = `⚠ ${waiting} not confirmed`; preview.classList.add("warn-text"); }
    else if (last) preview.textContent = (last.dir === "out" ? "You: " : `${nameOf(last.sender)}: `) + previewOf(last);
    else preview.textContent = `${g.members.length} members`;
    bottom.append(preview);
    finishSidebarItem(list, li, btn, av, body, top, bottom, gc.unread);
  }
  $("group-count").textContent = groups.length ? String(groups.length) : "";
}

function selectGroup(id) {
  state.selectedGroup = id;
  state.selected = null;
  const gc = gconvFor(id);
  gc.unread = 0;
  $("chat").dataset.pane = "conversation";
  renderContacts();
  renderConversation();
  saveHistory();
  if (!$("message").disabled) $("message").focus();
}

function myRole(g) {
  const m = g && g.members.find((x) => x.id === state.me.id);
  return m ? m.role : null;
}

function renderGroupConversation() {
  const g = state.groups && state.groups.get(state.selectedGroup);
  const gc = gconvFor(state.selectedGroup);
  $("placeholder").hidden = !!g;
  for (const id of ["conv-head", "messages", "composer"]) $(id).hidden = !g;
  $("key-warning").hidden = true;
  $("conv-notice").hidden = true;
  $("peer-lookalike").hidden = true;
  if (!g) return;
  $("peer-name").textContent = g.name;
  paintAvatar($("peer-avatar"), g.name);
  $("peer-avatar").classList.add("group-avatar");
  $("peer-trust").replaceChildren(el("span", "trust", `${g.members.length} members`));
  $("peer-state").textContent = g.removed ? "You are not a member" : "end-to-end encrypted group";
  $("peer-state").classList.toggle("secure", !g.removed);
  $("verify").hidden = true;
  $("group-info").hidden = false;
  const waiting = state.groups.unconfirmed(g.id);
  if (waiting.length)
    showNotice(`Not confirmed: ${listNames(waiting)}. They get no key from you until the member who added them ` +
      "confirms it from their device, or you send it from Members.");
  renderGroupMessages(g, gc);
  renderGroupComposer();
}

function renderGroupMessages(g, gc) {
  renderMessageList(gc.messages, "Messages in this group are end-to-end encrypted with each member's own key. " +
    "Members who join later cannot read earlier messages; members who leave cannot read later ones.", true);
}

function renderGroupComposer() {
  const g = state.groups && state.groups.get(state.selectedGroup);
  if (!g) return;
  const mk = state.myKeys.get(g.id);
  let reason = "";
  if (!state.conn || !state.conn.isOpen) reason = "Waiting for the connection…";
  else if (g.removed) reason = "You are not a member of this group";
  else if (!mk || mk.epoch !== g.epoch) reason = "Preparing this group's keys…";
  $("message").disabled = !!reason;
  $("send").disabled = !!reason;
  $("message").placeholder = reason || `Message ${g.name}`;
}

/** People the person can pick: every contact this browser knows with a usable key. */
function pickable(exclude = new Set()) {
  return [...state.contacts.values()].filter((c) => !exclude.has(c.id) && c.keyState !== "none" && c.named)
    .sort((a, b) => a.name.localeCompare(b.name));
}

function pickList(node, contacts) {
  node.textContent = "";
  for (const c of contacts) {
    const li = el("li");
    const label = el("label");
    const box = el("input");
    box.type = "checkbox";
    box.value = c.id;
    label.append(box, el("span", "ellipsis", c.name), trustBadge(c));
    li.append(label);
    node.append(li);
  }
}

function openCreate() {
  $("create-name").value = "";
  $("create-error").textContent = "";
  const people = pickable();
  pickList($("create-members"), people);
  $("create-none").hidden = people.length > 0;
  $("create-dialog").showModal();
  $("create-name").focus();
}

function submitCreate(ev) {
  if (ev.submitter && ev.submitter.value !== "create") return;
  ev.preventDefault();
  const name = $("create-name").value.trim();
  if (validGroupName(name) === null) {
    $("create-error").textContent = "Give the group a name of 1 to 64 characters.";
    return;
  }
  const members = [...$("create-members").querySelectorAll("input:checked")].map((b) => b.value).filter(isUserId);
  if (groupRequest(Requests.GroupCreateRequest, { name, members }, { op: "create", members }))
    $("create-dialog").close();
}

function openGroupDialog() {
  const g = state.groups && state.groups.get(state.selectedGroup);
  if (!g) return;
  state.managing = g.id;
  renderGroupDialog();
  $("group-dialog").showModal();
}

function renderGroupDialog() {
  const g = state.groups && state.groups.get(state.managing);
  if (!g) return;
  const role = myRole(g);
  const admin = role === "owner" || role === "admin";
  $("group-title").textContent = g.name;
  $("group-epoch").textContent = `${g.members.length} members · change ${g.epoch} · ` +
    (role ? `you are ${role === "member" ? "a member" : `the ${role}`}` : "you are not a member");
  $("group-rename-row").hidden = !admin;
  if (document.activeElement !== $("group-rename")) $("group-rename").value = g.name;
  const waiting = state.groups.unconfirmed(g.id);
  $("group-unconfirmed").hidden = !waiting.length;
  $("group-unconfirmed").textContent = waiting.length ? `Not confirmed: ${listNames(waiting)}. The server says they ` +
    "are members, but nobody who could have added them has confirmed it from their own device yet." : "";
  $("group-trust").hidden = !waiting.length;
  const list = $("group-members");
  list.textContent = "";
  for (const m of g.members) {
    const li = el("li", "member");
    li.dataset.id = m.id;
    li.dataset.name = m.name;
    const me = m.id === state.me.id;
    const c = state.contacts.get(m.id);
    li.dataset.trust = me ? "self" : c ? trustOf(c)[0] : "none";
    li.append(el("span", "member-name ellipsis", me ? `${m.name} (you)` : m.name));
    if (!me && c) li.append(trustBadge(c));
    if (!me && !g.confirmed.includes(m.id)) {
      li.dataset.unconfirmed = "1";
      li.append(el("span", "unconfirmed warn-text", "Not confirmed"));
    }
    li.append(el("span", "role", m.role));
    const canRemove = !me && !g.removed && (role === "owner" || (role === "admin" && m.role === "member"));
    if (canRemove) {
      const b = el("button", "ghost small danger", "Remove");
      b.type = "button";
      b.setAttribute("aria-label", `Remove ${m.name}`);
      b.addEventListener("click", () => groupRequest(Requests.GroupUpdateRequest, { group: g.id, op: "remove", members: [m.id] },
        { op: "remove", members: [m.id] }));
      li.append(b);
    }
    list.append(li);
  }
  const people = pickable(new Set(g.members.map((m) => m.id)));
  $("group-add").hidden = !admin || g.removed;
  pickList($("group-add-list"), people);
  $("group-add-none").hidden = people.length > 0;
  $("group-add-go").hidden = !people.length;
  $("group-leave").hidden = !!g.removed;
}

function addToGroup() {
  const g = state.groups.get(state.managing);
  const members = [...$("group-add-list").querySelectorAll("input:checked")].map((b) => b.value).filter(isUserId);
  if (!g || !members.length) return;
  groupRequest(Requests.GroupUpdateRequest, { group: g.id, op: "add", members }, { op: "add", members });
}

function renameGroup() {
  const g = state.groups.get(state.managing);
  const name = $("group-rename").value.trim();
  if (!g || name === g.name) return;
  if (validGroupName(name) === null) { toast("A group name has 1 to 64 characters."); return; }
  groupRequest(Requests.GroupUpdateRequest, { group: g.id, op: "rename", name }, { op: "rename", members: [] });
}

function leaveGroup() {
  const g = state.groups.get(state.managing);
  if (!g) return;
  groupRequest(Requests.GroupUpdateRequest, { group: g.id, op: "leave" }, { op: "leave", members: [] });
}

function trustGroupMembers() {
  const id = state.managing;
  serial(async () => {
    const now = state.groups.trustAll(id);
    if (!now.length) return;
    const gc = gconvFor(id);
    addGSystem(gc, `You chose to send your key to ${listNames(now)} without a confirmation.`, "member");
    await distribute(state.groups.get(id));
    refreshGroup(gc);
  });
}

// ---- finding people by name ------------------------------------------------

function submitLookup(ev) {
  ev.preventDefault();
  const name = $("lookup-name").value.trim().normalize("NFKC");
  if (!name || nameError(name)) { toast(nameError(name) || "Enter a name."); return; }
  if (!state.me || !state.conn.send({ action: Requests.UserLookupRequest, token: state.me.token, names: [name] }))
    toast("Not connected.");
}

async function onLookup(data) {
  if (!state.me) return;
  if (data.valid !== true) {
    const asked = validName(data.name);
    toast(asked ? `No user named ${asked}.` : errorText(data.error, "The search failed."), "info");
    return;
  }
  const u = userEntry(data.user);
  if (!u) return badInput("a search answer with an invalid user");
  if (u.id === state.me.id) return toast("That is you.", "info");
  const c = contactFor(u.id, u.name);
  if (c.named && c.name !== u.name) {
    addSystem(c, `The server now lists ${c.name} as ${u.name}.`, "rename");
    state.known.rename(c.id, u.name);
  }
  c.name = u.name;
  c.named = true;
  c.found = true;
  if (c.listedKey !== u.publicKey && !(c.online && c.listedKey !== undefined)) await applyKey(c, u.publicKey);
  $("lookup-name").value = "";
  renderContacts();
  toast(`Found ${u.name}${data.user.online === true ? "" : " (offline)"}.`, "info");
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
  $("new-group").addEventListener("click", openCreate);
  $("create-form").addEventListener("submit", submitCreate);
  $("group-info").addEventListener("click", openGroupDialog);
  $("group-dialog").addEventListener("close", () => { state.managing = null; });
  $("group-add-go").addEventListener("click", addToGroup);
  $("group-rename-go").addEventListener("click", renameGroup);
  $("group-leave").addEventListener("click", leaveGroup);
  $("group-trust").addEventListener("click", trustGroupMembers);
  $("lookup-form").addEventListener("submit", submitLookup);
  document.addEventListener("visibilitychange", () => {
    const c = state.contacts.get(state.selected);
    if (document.visibilityState === "visible" && c && c.unread) { c.unread = 0; renderContacts(); saveHistory(); }
    const gc = state.selectedGroup && state.gconvs.get(state.selectedGroup);
    if (document.visibilityState === "visible" && gc && gc.unread) { gc.unread = 0; renderContacts(); saveHistory(); }
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
