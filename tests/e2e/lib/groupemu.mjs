// groupemu.mjs - the group part of docs/PROTOCOL.md ("Groups (ext)"), played
// by the test between the pages and a server that does not have it yet.
// Everything else (accounts, user lists, lookups, the pairwise messages
// that carry sender keys) goes to the real server and back unchanged; the
// group requests (actions 7-10) are answered here, as the protocol document
// says the server answers them, and the group numbers are added to the
// page's /enums.mjs. groups.test.mjs uses it only when the server does not
// publish GroupCreateRequest; against a server with groups it is not used.
//
// Every frame each page sent and was sent is recorded in page.wire
// ({dir: "sent"|"received", payload}), whichever of the two answered it.

import { randomBytes } from "node:crypto";

const GROUP_REQUESTS = { GroupCreateRequest: 7, GroupUpdateRequest: 8, GroupListRequest: 9, GroupMessageRequest: 10 };
const GROUP_EVENTS = { GroupEvent: 8, GroupListEvent: 9, GroupMessageEvent: 10 };

const parse = (t) => { try { return JSON.parse(t); } catch { return null; } };
const serverId = () => randomBytes(12).toString("base64url");

export function groupEmulator(origin) {
  const emu = { groups: new Map(), users: new Map(), routes: new Map(), log: [] };

  const learn = (d) => {
    if (!d || typeof d !== "object") return;
    const list = (d.event === 1 || d.event === 4) && Array.isArray(d.users) ? d.users
      : d.event === 6 && Array.isArray(d.changes) ? d.changes.filter((c) => c.op === "join")
      : d.event === 7 && d.user ? [d.user] : [];
    for (const u of list) if (u && u.id) emu.users.set(u.id, { id: u.id, name: u.name, publicKey: u.publicKey });
  };

  const view = (g) => ({ id: g.id, name: g.name, owner: g.owner, epoch: g.epoch,
    members: g.members.map((m) => ({ ...emu.users.get(m.id), role: m.role })) });

  function to(userId, frame) {
    const r = emu.routes.get(userId);
    if (!r) return false;
    const text = JSON.stringify(frame);
    r.page.wire.push({ dir: "received", payload: text });
    r.ws.send(text);
    return true;
  }

  function err(userId, event, id, error) {
    to(userId, { valid: false, event, error, ...(id ? { id } : {}) });
  }

  function broadcast(g, userIdOfRequest, reqId, change, extraTo = []) {
    for (const m of g.members)
      to(m.id, { valid: true, event: 8, ...(m.id === userIdOfRequest && reqId ? { id: reqId } : {}), group: view(g), change });
    for (const [uid, frame] of extraTo) to(uid, frame);
  }

  function handle(me, d) {
    const id = typeof d.id === "string" ? d.id : undefined;
    if (d.action === 7) {
      if (typeof d.name !== "string" || d.name.length < 1 || d.name.length > 64)
        return err(me, 8, id, "Field 'name' must be a string of 1 to 64 characters without control characters.");
      const others = (d.members || []).filter((x) => x !== me);
      for (const x of others) if (!emu.users.has(x)) return err(me, 8, id, `Unknown user: ${x}.`);
      const g = { id: serverId().slice(0, 16), name: d.name, owner: me, epoch: 1,
        members: [{ id: me, role: "owner" }, ...others.map((x) => ({ id: x, role: "member" }))] };
      emu.groups.set(g.id, g);
      return broadcast(g, me, id, { op: "create", by: me, members: others });
    }
    const g = emu.groups.get(d.group);
    const self = g && g.members.find((m) => m.id === me);
    if ((d.action === 8 || d.action === 10) && !self) return d.action === 8 ? err(me, 8, id, "Unknown group.")
      : to(me, { valid: false, event: 5, id, status: "rejected", error: "Unknown group." });
    if (d.action === 9) return to(me, { valid: true, event: 9, groups: [...emu.groups.values()]
      .filter((x) => x.members.some((m) => m.id === me)).map(view) });
    if (d.action === 10) {
      const messageId = serverId().slice(0, 16);
      const timestamp = Date.now();
      let n = 0;
      for (const m of g.members) if (m.id !== me) {
        n++;
        to(m.id, { valid: true, event: 10, group: g.id, sender: me, message: d.message, id: messageId, timestamp });
      }
      return to(me, { valid: true, event: 5, id, status: "delivered", messageId, timestamp, group: g.id, members: n });
    }
    // action 8
    const admin = self.role === "owner" || self.role === "admin";
    const members = Array.isArray(d.members) ? d.members : [];
    switch (d.op) {
      case "add": {
        if (!admin) return err(me, 8, id, "Only the group's owner or an admin can do that.");
        const fresh = members.filter((x) => !g.members.some((m) => m.id === x));
        if (!fresh.length) return err(me, 8, id, "Nothing to change.");
        g.members.push(...fresh.map((x) => ({ id: x, role: "member" })));
        g.epoch++;
        return broadcast(g, me, id, { op: "add", by: me, members: fresh });
      }
      case "remove": {
        if (!admin) return err(me, 8, id, "Only the group's owner or an admin can do that.");
        const out = g.members.filter((m) => members.includes(m.id));
        if (out.length !== members.length) return err(me, 8, id, `Not a member of the group: ${members[0]}.`);
        if (self.role !== "owner" && out.some((m) => m.role !== "member")) return err(me, 8, id, "Only the group's owner can do that.");
        g.members = g.members.filter((m) => !members.includes(m.id));
        g.epoch++;
        const change = { op: "remove", by: me, members };
        return broadcast(g, me, id, change,
          out.map((m) => [m.id, { valid: true, event: 8, group: { id: g.id, name: g.name }, change, removed: true }]));
      }
      case "leave": {
        g.members = g.members.filter((m) => m.id !== me);
        g.epoch++;
        if (g.owner === me && g.members.length) { g.members[0].role = "owner"; g.owner = g.members[0].id; }
        const change = { op: "leave", by: me, members: [me] };
        return broadcast(g, me, id, change, [[me, { valid: true, event: 8, id, group: { id: g.id, name: g.name }, change, removed: true }]]);
      }
      case "rename":
        if (!admin) return err(me, 8, id, "Only the group's owner or an admin can do that.");
        g.name = d.name;
        return broadcast(g, me, id, { op: "rename", by: me, members: [] });
      default:
        return err(me, 8, id, "Field 'op' must be one of add, remove, promote, demote, rename, leave.");
    }
  }

  /** Puts the emulator in front of one page; call before the page loads. */
  emu.attach = async (page) => {
    page.wire = [];
    await page.route("**/enums.mjs", async (route) => {
      const json = await (await fetch(`${origin}/enums.json`)).json();
      const Requests = { ...json.Requests, ...GROUP_REQUESTS };
      const Responses = { ...json.Responses, ...GROUP_EVENTS };
      await route.fulfill({ contentType: "text/javascript; charset=utf-8", body:
        `export const Requests = Object.freeze(${JSON.stringify(Requests)});\n` +
        `export const Responses = Object.freeze(${JSON.stringify(Responses)});\n` });
    });
    await page.routeWebSocket(() => true, (ws) => {
      const server = ws.connectToServer();
      let me = null;
      let pubKey = null;
      ws.onMessage((m) => {
        const text = String(m);
        page.wire.push({ dir: "sent", payload: text });
        const d = parse(text);
        if (d && typeof d.pubKey === "string") pubKey = d.pubKey;
        if (d && d.action >= 7 && d.action <= 10) {
          emu.log.push({ from: me, ...d });
          if (me) handle(me, d);
          return;
        }
        server.send(text);
      });
      server.onMessage((m) => {
        const text = String(m);
        const d = parse(text);
        learn(d);
        if (d && d.event === 1 && d.valid === true && Array.isArray(d.users)) {
          const u = d.users.find((x) => x.publicKey === pubKey);
          if (u) { me = u.id; emu.routes.set(me, { ws, page }); }
        }
        page.wire.push({ dir: "received", payload: text });
        ws.send(text);
      });
      const pass = (code, reason) => (code >= 1000 && code < 5000 && code !== 1005 && code !== 1006 ? { code, reason } : {});
      ws.onClose((code, reason) => { if (me && emu.routes.get(me)?.ws === ws) emu.routes.delete(me); server.close(pass(code, reason)).catch?.(() => {}); });
      server.onClose((code, reason) => ws.close(pass(code, reason)).catch?.(() => {}));
    });
  };

  return emu;
}

/** Does the server at `origin` publish the group requests (docs/PROTOCOL.md, "Groups (ext)")? */
export async function serverHasGroups(origin) {
  const json = await (await fetch(`${origin}/enums.json`)).json();
  return json && json.Requests && json.Requests.GroupCreateRequest === 7;
}
