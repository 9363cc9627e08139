// hostile.mjs - the attacker of the hostile-server suite: a proxy between one
// page and the real server (playwright's WebSocket routing, in the browser's
// network layer) that rewrites, drops, holds back and injects what the
// server sends, as a malicious server could. What the page sends passes
// unchanged. Also the attacker's own crypto: its key pairs, and messages
// it encrypts under them in the client's own format (html/crypto.mjs), as a
// server that substituted a key would.

import { randomBytes, randomUUID } from "node:crypto";
import * as e2e from "../../../html/crypto.mjs";
import { waitFor } from "./harness.mjs";

const parse = (t) => { try { return JSON.parse(t); } catch { return null; } };

/**
 * Puts a hostile server between `page` and the real one; call before the
 * page opens its connection. Returns the link:
 *   use(rule)      rule(data, text) sees each frame from the server (data
 *                  parsed, or null) and returns undefined (pass it), null
 *                  (drop it), a frame (object or string) or an array of
 *                  frames; returns a function that removes the rule
 *   inject(frame)  sends a frame to the page as if from the server
 *   users          the user list as the page was given it (id -> entry),
 *                  kept up to date from lists and presence changes
 *   injectList(f)  sends the page a whole user list as the server would now
 *                  (the current entries, through the rules), changed by
 *                  f(entries) -> entries
 *   seen(pred)     waits until the real server has sent a frame pred(data)
 *                  accepts (the rules and the page had it from then on)
 *   fromServer     every frame the real server sent, before any rule
 *   sync()         resolves once the page has handled every frame sent to
 *                  it so far (the page handles server frames one by one, in
 *                  order; the last one is an error answer it shows)
 */
export async function hostileLink(page) {
  const link = { route: null, rules: new Set(), fromServer: [], users: new Map(), syncs: 0 };

  const track = (d) => {
    if (!d || typeof d !== "object") return;
    if ((d.event === 1 || d.event === 4) && Array.isArray(d.users)) {
      link.users = new Map();
      for (const u of d.users) if (u && typeof u.id === "string") link.users.set(u.id, { ...u });
    } else if (d.event === 6 && Array.isArray(d.changes)) {
      for (const ch of d.changes) {
        if (!ch || typeof ch.id !== "string") continue;
        if (ch.op === "leave") link.users.delete(ch.id);
        else if (ch.op === "join") link.users.set(ch.id, { id: ch.id, name: ch.name, publicKey: ch.publicKey });
      }
    }
  };

  const toPage = (frame) => {
    const text = typeof frame === "string" ? frame : JSON.stringify(frame);
    track(parse(text));
    link.route.send(text);
  };

  // A frame through every rule: the frames that go on to the page instead.
  const rewrite = (text) => {
    let out = [text];
    for (const rule of link.rules) {
      out = out.flatMap((t) => {
        const r = rule(parse(t), t);
        if (r === undefined) return [t];
        if (r === null) return [];
        return (Array.isArray(r) ? r : [r]).map((x) => (typeof x === "string" ? x : JSON.stringify(x)));
      });
    }
    return out;
  };

  await page.routeWebSocket(() => true, (ws) => {
    const server = ws.connectToServer();
    link.route = ws;
    ws.onMessage((m) => server.send(m));
    server.onMessage((m) => {
      const text = String(m);
      link.fromServer.push({ text, data: parse(text) });
      for (const t of rewrite(text)) toPage(t);
    });
    const pass = (code, reason) => (code >= 1000 && code < 5000 && code !== 1005 && code !== 1006
      ? { code, reason } : {});
    ws.onClose((code, reason) => server.close(pass(code, reason)).catch?.(() => {}));
    server.onClose((code, reason) => ws.close(pass(code, reason)).catch?.(() => {}));
  });

  link.use = (rule) => { link.rules.add(rule); return () => link.rules.delete(rule); };
  link.inject = (frame) => toPage(frame);
  link.injectList = (f = (x) => x) => {
    for (const t of rewrite(JSON.stringify({ valid: true, event: 4, users: [...link.users.values()] }))) {
      const d = parse(t);
      toPage(d && d.event === 4 ? { ...d, users: f(d.users) } : t);
    }
  };
  link.seen = (pred, what = "a frame from the server") => waitFor(() => link.fromServer.some((f) => pred(f.data)), what);
  link.sync = async () => {
    const mark = `hostile-sync-${++link.syncs}-${Date.now()}`;
    toPage({ valid: false, error: mark });
    await page.locator(".toast", { hasText: mark }).waitFor();
  };
  return link;
}

/** A rule: every user entry of `userId` (lists, presence changes) gets fields from `change`. */
export function rewriteUser(userId, change) {
  return (d) => {
    if (!d) return undefined;
    if ((d.event === 1 || d.event === 4) && Array.isArray(d.users) && d.users.some((u) => u && u.id === userId))
      return { ...d, users: d.users.map((u) => (u && u.id === userId ? { ...u, ...change } : u)) };
    if (d.event === 6 && Array.isArray(d.changes) && d.changes.some((c) => c && c.id === userId && c.op === "join"))
      return { ...d, changes: d.changes.map((c) => (c && c.id === userId && c.op === "join" ? { ...c, ...change } : c)) };
    return undefined;
  };
}

/** A key pair of the attacker's, published like a client's. */
export async function attackerKey() {
  const pair = await e2e.generateDeviceKeyPair();
  return { ...pair, published: await e2e.exportPublicKey(pair.publicKey) };
}

/**
 * A MessageEvent that says it comes from `sender`, encrypted by the attacker
 * under its key `key` for `to` (id and real key), in the client's format.
 */
export async function forged({ key, sender, to, toKey, text, ts = Date.now() }) {
  const ch = await e2e.openChannel({ myId: sender, myPrivateKey: key.privateKey, myPublic: key.published,
    peerId: to, peerPublic: toKey });
  const { envelope } = await ch.encrypt(text, ts);
  return { valid: true, event: 2, sender, message: envelope, id: serverMessageId(), timestamp: Date.now() };
}

/** An id as the server gives messages (16 characters). */
export function serverMessageId() {
  return randomBytes(12).toString("base64url");
}

/** A user id in the server's format that nobody has. */
export function unusedUserId() {
  return randomUUID();
}
