// app.mjs - the QMessage web UI: sign in or create an account, see who is
// online, one end-to-end encrypted conversation per contact.
//
// Protocol: shared PROTOCOL.md; numbers come from the server's /enums.mjs.
// Encryption: crypto.mjs (formats in docs/E2E.md); keys: keystore.mjs.
// Every string from the server or from a person is put on the page with
// textContent, never as HTML.

import { Requests, Responses } from "./enums.mjs";
import * as e2e from "./crypto.mjs";
import { deviceKeyFor, loadDeviceKey, KnownKeys } from "./keystore.mjs";
import { Connection } from "./connection.mjs";
import {
  nameError, passwordError, passwordDigest, chatUrl, shortTime, clockTime, dayLabel, hueOf, initials,
} from "./util.mjs";

// The server writes its chat address here when it sends this file.
const CONFIGURED_URL = "%SERVER_PROTOCOL%://%SERVER_ADDRESS%:%SERVER_PORT%";

const SESSION = "qms1.session";          // sessionStorage: {token, name, id}
const HISTORY = "qms1.history.";         // sessionStorage + user id: the conversations
const THEME = "qms1.theme";              // localStorage: "light" | "dark"
const FAIL_WINDOW_MS = 5000;             // a send error refers to a message this recent
// Server extensions (docs/PROTOCOL.md): acknowledgements of our messages by
// id, and receipts for what we got. Used only when the server publishes them.
const ACKS = Responses.MessageAckEvent !== undefined;
const RECEIPTS = Requests.ReceiptRequest !== undefined;
// Presence as changes ("delta"): the list once, then who joined and left,
// instead of the whole list on every change. Used when the server has it.
const DELTA = Responses.UserlistDeltaEvent !== undefined;
const PRESENCE = DELTA ? { presence: "delta" } : {};
const ACK_TEXT = { delivered: "Delivered", stored: "Waiting on the server until they are online", received: "Received" };

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
  contacts: new Map(),      // id -> contact (see contactFor)
  order: [],                // contact ids in the order the server listed them
  selected: null,           // id of the open conversation
  channels: new Map(),      // id|key -> Promise<channel>
  seen: new Set(),          // message ids already shown (replay protection)
  lastSend: null,           // {peerId, msgId, at} for mapping a send error
  lastUsers: null,          // the latest user list, applied once a session starts
  inbox: Promise.resolve(), // server events are handled one after the other
};

function loadSession() {
  try { return JSON.parse(sessionStorage.getItem(SESSION)); } catch { return null; }
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
  try { list = JSON.parse(sessionStorage.getItem(HISTORY + state.me.id)) || []; } catch { list = []; }
  for (const h of list) {
    const c = contactFor(h.id, h.name);
    c.unread = h.unread || 0;
    c.messages = h.messages || [];
    for (const m of c.messages) if (m.id) state.seen.add(m.id);
    const rec = state.known.get(h.id);
    if (rec && rec.key && !c.publicKey) applyKey(c, rec.key); // so an offline contact can still be written to
  }
}

function contactFor(id, name) {
  let c = state.contacts.get(id);
  if (!c) {
    c = { id, name: name || "Unknown user", publicKey: "", online: false, keyState: "none",
          messages: [], unread: 0, safety: "" };
    state.contacts.set(id, c);
  }
  return c;
}

// ---- feedback --------------------------------------------------------------

function toast(text, kind = "error") {
  const t = el("div", `toast ${kind}`, text);
  t.setAttribute("role", kind === "error" ? "alert" : "status");
  $("toasts").append(t);
  setTimeout(() => { t.classList.add("leaving"); setTimeout(() => t.remove(), 300); }, kind === "error" ? 7000 : 4000);
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
  for (const id of ids) {
    const c = state.contacts.get(id);
    if (!c) continue;
    if (c.online) online++;
    const li = el("li", "contact");
    li.dataset.id = c.id;
    li.dataset.name = c.name;
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
    top.append(el("span", "contact-name ellipsis", c.name));
    const last = c.messages[c.messages.length - 1];
    if (last) top.append(el("time", "contact-time", shortTime(last.ts)));
    const bottom = el("span", "contact-bottom");
    const preview = el("span", "preview ellipsis");
    if (c.keyState === "changed") {
      preview.textContent = "⚠ Security key changed";
      preview.classList.add("warn-text");
    } else if (c.keyState === "unsupported") {
      preview.textContent = "No end-to-end encryption";
    } else if (last) {
      preview.textContent = (last.dir === "out" ? "You: " : "") + (last.error ? last.error : last.text);
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
  const rec = state.known && state.known.get(c.id);
  const parts = [c.online ? "Online" : "Offline"];
  if (c.keyState === "ok" || c.keyState === "changed")
    parts.push(rec && rec.verified && c.keyState === "ok" ? "verified ✓" : "end-to-end encrypted");
  $("peer-state").textContent = parts.join(" · ");
  $("peer-state").classList.toggle("secure", c.keyState === "ok");
  $("verify").hidden = !(c.keyState === "ok" || c.keyState === "changed");

  if (c.keyState === "changed") {
    $("key-warning").hidden = false;
    $("key-warning-text").textContent =
      ` ${c.name} now uses a different key: they signed in on another device, or someone is trying to ` +
      "intercept your messages. Compare the safety number with them before you continue.";
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

function renderMessages(c) {
  const list = $("messages");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 60;
  list.textContent = "";
  if (c.keyState === "ok" || c.keyState === "changed")
    list.append(el("li", "e2e-note", "Messages here are end-to-end encrypted: only you and " + c.name +
      " can read them. Compare the safety number to be sure."));
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
      list.append(el("li", "system", m.text));
      prev = null;
      continue;
    }
    const li = el("li", `msg ${m.dir}`);
    if (m.id) li.dataset.msgId = m.id;
    if (prev && prev.dir === m.dir && m.ts - prev.ts < 120000) li.classList.add("cont");
    const bubble = el("div", "bubble");
    if (m.error) {
      bubble.classList.add("error");
      bubble.textContent = m.error;
    } else {
      bubble.textContent = m.text;
    }
    const meta = el("div", "meta");
    const time = el("time", "", clockTime(m.ts));
    time.dateTime = new Date(m.ts).toISOString();
    time.title = new Date(m.ts).toLocaleString();
    meta.append(time);
    if (m.failed) {
      li.classList.add("failed");
      meta.append(el("span", "failed-text", ` · Not delivered: ${m.failed}`));
    } else if (m.dir === "out" && m.ack) {
      li.dataset.ack = m.ack;
      meta.append(el("span", "ack", m.ack === "received" ? " · ✓✓" : m.ack === "delivered" ? " · ✓" : " · ◷"));
      meta.title = ACK_TEXT[m.ack];
      meta.lastChild.setAttribute("aria-label", ACK_TEXT[m.ack]);
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
  else if (c.keyState === "changed") reason = "Accept or verify the new key first";
  else if (c.keyState !== "ok") reason = "This contact has no encryption key";
  input.disabled = !!reason;
  $("send").disabled = !!reason;
  input.placeholder = reason || (c.online ? `Message ${c.name}` : `Message ${c.name} (delivered when they are back)`);
}

function addMessage(c, m) {
  c.messages.push(m);
  if (m.id) state.seen.add(m.id);
  const visible = state.selected === c.id && document.visibilityState === "visible" &&
                  (window.innerWidth > 760 || $("chat").dataset.pane === "conversation");
  if (m.dir === "in" && !visible) c.unread++;
  renderContacts();
  if (state.selected === c.id) renderMessages(c);
  saveHistory();
}

// ---- keys ------------------------------------------------------------------

function channelFor(c) {
  const k = c.id + "|" + c.publicKey;
  let p = state.channels.get(k);
  if (!p) {
    p = e2e.openChannel({
      myId: state.me.id, myPrivateKey: state.device.privateKey, myPublic: state.device.published,
      peerId: c.id, peerPublic: c.publicKey,
    });
    p.catch(() => state.channels.delete(k));
    state.channels.set(k, p);
  }
  return p;
}

function applyKey(c, publicKey) {
  c.publicKey = typeof publicKey === "string" ? publicKey : "";
  if (!c.publicKey) { c.keyState = "none"; return; }
  if (!e2e.isOurKeyFormat(c.publicKey)) { c.keyState = "unsupported"; return; }
  const before = c.keyState;
  const seen = state.known.observe(c.id, c.name, c.publicKey);
  c.keyState = seen === "changed" ? "changed" : "ok";
  if (seen === "changed" && before !== "changed")
    c.messages.push({ dir: "sys", ts: Date.now(), text: `${c.name}'s security key changed.` });
  c.safety = "";
  e2e.safetyNumber(state.device.published, c.publicKey).then((s) => { c.safety = s; }, () => {
    c.keyState = "unsupported"; // a "qms1:" key that does not import
    renderContacts();
    if (state.selected === c.id) renderConversation();
  });
}

function openVerify() {
  const c = state.contacts.get(state.selected);
  if (!c) return;
  $("verify-title").textContent = `Safety number with ${c.name}`;
  $("verify-text").textContent = `Compare these digits with what ${c.name} sees on their screen, ` +
    "in person or over a call you trust.";
  const box = $("safety");
  box.textContent = "";
  const render = (s) => { box.textContent = ""; for (const g of s.split(" ")) box.append(el("span", "", g)); };
  if (c.safety) render(c.safety);
  else e2e.safetyNumber(state.device.published, c.publicKey).then((s) => { c.safety = s; render(s); });
  const rec = state.known.get(c.id);
  $("verified").checked = !!(rec && rec.verified && c.keyState === "ok");
  $("verify-dialog").showModal();
}

function closeVerify() {
  const c = state.contacts.get(state.selected);
  if (!c || !state.known) return;
  if ($("verified").checked) {
    if (c.keyState === "changed") acceptKey(c);
    state.known.setVerified(c.id, true);
  } else {
    state.known.setVerified(c.id, false);
  }
  renderConversation();
}

function acceptKey(c) {
  state.known.acknowledge(c.id);
  c.keyState = "ok";
  c.messages.push({ dir: "sys", ts: Date.now(), text: `You accepted ${c.name}'s new key.` });
  saveHistory();
  renderContacts();
  renderConversation();
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
  state.inbox = state.inbox.then(() => handleEvent(data)).catch((err) => {
    console.error(err);
    toast(`Unexpected error: ${err.message || err}`);
  });
}

function handleEvent(data) {
  switch (data.event) {
    case Responses.LoginEvent: return onLogin(data);
    case Responses.AuthorizationEvent: return onAuthorized(data);
    case Responses.InvalidUserEvent: return onInvalidUser();
    case Responses.UserlistChangeEvent: return onUserList(data);
    case Responses.UserlistDeltaEvent: if (DELTA) return onUserDelta(data); break;
    case Responses.MessageEvent: return data.valid ? onChatMessage(data) : onSendError(data);
    case Responses.MessageAckEvent: if (ACKS) return onAck(data); break;
    default:
      if (data.valid === false) {
        const text = typeof data.error === "string" ? data.error : "The server refused the request.";
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

function onLogin(data) {
  if (!state.pending || state.pending.kind !== "login") return;
  const name = state.pending.name;
  const device = state.pending.device;
  state.pending = null;
  setBusy(false);
  if (!data.valid) {
    formError(typeof data.error === "string" ? data.error : "Sign-in failed.");
    return;
  }
  const users = Array.isArray(data.users) ? data.users : [];
  const username = typeof data.username === "string" ? data.username : name;
  const mine = users.find((u) => u && u.publicKey === device.published && u.name === username) ||
               users.find((u) => u && typeof u.name === "string" && u.name.toLowerCase() === username.toLowerCase());
  if (!mine || typeof data.token !== "string") {
    formError("The server's answer was incomplete. Please try again.");
    return;
  }
  startSession({ id: mine.id, name: username, token: data.token }, device);
  onUserList(data);
}

function startSession(me, device) {
  if (!state.me || state.me.id !== me.id) resetConversations();
  state.me = me;
  state.device = device;
  state.known = new KnownKeys(me.id);
  saveSession();
  if (state.contacts.size === 0) loadHistory();
  showChat();
}

async function onAuthorized(data) {
  if (!state.pending || state.pending.kind !== "authorize") return;
  state.pending = null;
  if (!data.valid) return onInvalidUser();
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
  if (users) onUserList(users);
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

function onUserList(data) {
  if (!Array.isArray(data.users)) return;
  state.lastUsers = data;
  if (!state.me) return;
  const order = [];
  for (const c of state.contacts.values()) c.online = false;
  for (const u of data.users) {
    if (!u || typeof u.id !== "string" || typeof u.name !== "string") continue;
    if (u.id === state.me.id) {
      if (u.publicKey !== state.device.published)
        toast("The server lists a different key for your own account. Sign in again on this device to use it here.");
      continue;
    }
    const c = contactFor(u.id, u.name);
    c.name = u.name;
    c.online = true;
    if (c.publicKey !== u.publicKey || c.keyState === "none") applyKey(c, u.publicKey);
    order.push(u.id);
  }
  state.order = order;
  renderContacts();
  if (state.selected) renderConversation();
  saveHistory();
}

// Changes apply in order to the last whole list: a join replaces or adds,
// a leave removes (docs/PROTOCOL.md, "Presence modes").
function onUserDelta(data) {
  if (!Array.isArray(data.changes) || !state.lastUsers || !Array.isArray(state.lastUsers.users)) return;
  const list = state.lastUsers.users.slice();
  for (const ch of data.changes) {
    if (!ch || typeof ch.id !== "string") continue;
    const at = list.findIndex((u) => u && u.id === ch.id);
    if (ch.op === "leave") {
      if (at >= 0) list.splice(at, 1);
    } else if (ch.op === "join") {
      const u = { id: ch.id, name: ch.name, publicKey: ch.publicKey };
      if (at >= 0) list[at] = u; else list.push(u);
    }
  }
  onUserList({ users: list });
}

async function onChatMessage(data) {
  if (!state.me || typeof data.sender !== "string" || typeof data.message !== "string") return;
  const c = contactFor(data.sender, typeof data.senderName === "string" ? data.senderName : undefined);
  const ts = typeof data.timestamp === "number" ? data.timestamp : Date.now();
  // A stored message names the key it was sent with. Adopt it for a contact
  // we have no key for (through the known-keys check); otherwise use it only
  // if it is a key we already knew for this contact.
  let key = c.publicKey;
  const senderKey = typeof data.senderKey === "string" ? data.senderKey : "";
  if (senderKey && senderKey !== key) {
    if (!key) {
      applyKey(c, senderKey);
      key = c.publicKey;
      renderContacts();
    } else {
      const rec = state.known.get(c.id);
      key = rec && (rec.key === senderKey || rec.previous === senderKey) ? senderKey : "";
      if (!key) {
        addMessage(c, { dir: "in", ts, error: "cannot decrypt (sent with a key this contact does not use now)" });
        return queueReceipt(data.id);
      }
    }
  }
  if (!key || !e2e.isOurKeyFormat(key) || c.keyState === "unsupported") {
    addMessage(c, { dir: "in", ts, error: "cannot decrypt (unsupported key)" });
    return queueReceipt(data.id);
  }
  try {
    const ch = await channelFor({ id: c.id, publicKey: key });
    const m = await ch.decrypt(data.message);
    if (!state.seen.has(m.id)) addMessage(c, { id: m.id, dir: "in", ts, sentTs: m.ts, text: m.text });
    // else: a replay or a stored copy shown already
  } catch (err) {
    const why = err instanceof e2e.DecryptError ? err.message : "unsupported key";
    addMessage(c, { dir: "in", ts, error: `cannot decrypt (${why})` });
  }
  queueReceipt(data.id);
}

function findOwn(id) {
  for (const c of state.contacts.values()) {
    const m = c.messages.find((x) => x.dir === "out" && x.id === id);
    if (m) return { c, m };
  }
  return null;
}

function onAck(data) {
  const found = typeof data.id === "string" ? findOwn(data.id) : null;
  if (data.valid === false || data.status === "rejected") {
    const text = typeof data.error === "string" ? data.error : "The server refused the message.";
    if (found) found.m.failed = text;
    toast(`Not delivered: ${text}`);
  } else if (found && ACK_TEXT[data.status]) {
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
  if (!RECEIPTS || typeof id !== "string") return;
  receiptIds.push(id);
  if (receiptIds.length === 1) setTimeout(() => {
    const ids = receiptIds;
    receiptIds = [];
    if (state.me && ids.length) state.conn.send({ action: Requests.ReceiptRequest, token: state.me.token, ids });
  }, 50);
}

function onSendError(data) {
  const text = typeof data.error === "string" ? data.error : "The message was not delivered.";
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
  const name = $("name").value.trim();
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
  if (c.keyState !== "ok") return; // never plaintext, never to an unverified key change
  try {
    const ch = await channelFor(c);
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
  if (theme) document.documentElement.dataset.theme = theme;
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
