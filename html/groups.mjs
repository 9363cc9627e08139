// groups.mjs - what this client knows about its groups, and the rules that
// decide whom its sender keys go to (docs/E2E.md, "Groups"). Pure state, no
// DOM and no crypto; localStorage holds it per signed-in user (member lists
// are not secret: the server has them). Unit-tested in node.
//
// The server is not trusted with membership either, but it is the only one
// who keeps the lists, so the client checks what it can:
//   - a group's epoch only rises: an older state is refused, and a state
//     with the same epoch but other members is refused as a fork;
//   - every change of the member list is reported to the person (the caller
//     turns the diff that apply() returns into notices);
//   - a member who is new to this client (not in the previous epoch it
//     knew) is "unconfirmed" and gets no sender key until the change is
//     vouched for: this client made it, or the owner or an admin who made it
//     sent its own sender key for that epoch with the change and the hash of
//     the same member list, or the person chose to trust the list.

import { isUserId, validName, userEntry } from "./validate.mjs";

export const ROLES = new Set(["owner", "admin", "member"]);
export const GROUP_NAME_MAX = 64;
const GROUP_ID = /^[A-Za-z0-9_-]{1,64}$/;
const EPOCHS_KEPT = 32;   // member lists of earlier epochs, to check who sent what then
const MEMBERS_MAX = 4096;

export function isGroupId(v) {
  return typeof v === "string" && GROUP_ID.test(v);
}

/** A group name as the server must have checked it: 1-64 characters, no control characters. */
export function validGroupName(v) {
  return typeof v === "string" && v.length >= 1 && [...v].length <= GROUP_NAME_MAX && !/[\p{Cc}\p{Cf}]/u.test(v)
    ? v : null;
}

/**
 * A group object from the server ({id, name, owner, epoch, members}),
 * checked: returns {id, name, owner, epoch, members: [{id, name, publicKey,
 * role}]} or null. Exactly one owner, who is the `owner`; no member twice.
 */
export function checkedGroup(g) {
  if (!g || typeof g !== "object" || Array.isArray(g)) return null;
  const name = validGroupName(g.name);
  if (!isGroupId(g.id) || name === null || !isUserId(g.owner)) return null;
  if (!Number.isSafeInteger(g.epoch) || g.epoch < 1) return null;
  if (!Array.isArray(g.members) || g.members.length < 1 || g.members.length > MEMBERS_MAX) return null;
  const members = [];
  const ids = new Set();
  for (const raw of g.members) {
    const u = userEntry(raw);
    if (!u || ids.has(u.id) || !ROLES.has(raw.role)) return null;
    ids.add(u.id);
    members.push({ ...u, role: raw.role });
  }
  const owners = members.filter((m) => m.role === "owner");
  if (owners.length !== 1 || owners[0].id !== g.owner) return null;
  return { id: g.id, name, owner: g.owner, epoch: g.epoch, members };
}

/** The `change` of a GroupEvent, checked, or null. */
export function checkedChange(ch) {
  const OPS = ["create", "add", "remove", "leave", "rename", "promote", "demote"];
  if (!ch || typeof ch !== "object" || !OPS.includes(ch.op)) return null;
  const members = Array.isArray(ch.members) ? ch.members.filter(isUserId) : [];
  return { op: ch.op, by: isUserId(ch.by) ? ch.by : null, members };
}

function readJson(storage, slot) {
  try { return JSON.parse(storage.getItem(slot)); } catch { return null; }
}

/**
 * The groups of one signed-in user. A record:
 *   id, name, owner, epoch, members [{id, name, publicKey, role}]
 *   epochs      [[epoch, [member ids]]...] oldest first, the current one last
 *   confirmed   member ids of the current epoch this client may send its key to
 *   author      {epoch, op, members} when this client made the change that
 *               started the current epoch (it says so in its key messages)
 *   removed     true once the server said we are out (we keep the history)
 */
export class GroupBook {
  constructor(myId, storage = globalThis.localStorage) {
    this.me = myId;
    this.storage = storage;
    this.slot = "qms1.groups." + myId;
    this.map = new Map();
    const data = readJson(storage, this.slot);
    if (data && data.v === 1 && Array.isArray(data.groups))
      for (const r of data.groups) {
        const g = r && checkedGroup(r);
        if (!g || !Array.isArray(r.epochs)) continue;
        const epochs = r.epochs.filter((e) => Array.isArray(e) && e.length === 2 && Number.isSafeInteger(e[0]) &&
          Array.isArray(e[1]) && e[1].every(isUserId)).slice(-EPOCHS_KEPT);
        if (!epochs.length || epochs[epochs.length - 1][0] !== g.epoch) continue;
        this.map.set(g.id, {
          ...g, epochs,
          confirmed: Array.isArray(r.confirmed) ? r.confirmed.filter(isUserId) : [myId],
          author: r.author && r.author.epoch === g.epoch && Array.isArray(r.author.members) ? r.author : null,
          removed: r.removed === true,
        });
      }
  }

  save() {
    try {
      this.storage.setItem(this.slot, JSON.stringify({ v: 1, groups: [...this.map.values()] }));
    } catch { /* full or disabled: keep in memory */ }
  }

  get(id) {
    return this.map.get(id) || null;
  }

  all() {
    return [...this.map.values()];
  }

  /** Member ids at `epoch` as this client was told, or null when it does not know that epoch. */
  membersAt(id, epoch) {
    const r = this.map.get(id);
    const e = r && r.epochs.find((x) => x[0] === epoch);
    return e ? e[1] : null;
  }

  /** The earliest epoch whose member list this client knows. */
  firstEpoch(id) {
    const r = this.map.get(id);
    return r ? r.epochs[0][0] : null;
  }

  /**
   * A group state from the server (checked with checkedGroup). `mine` is the
   * request of ours it answers, if any ({op, members}). Returns
   *   {verdict, record, added, removed, renamed, previousName}
   * verdict: "new" (first sight), "advance" (a higher epoch), "same" (the
   * same epoch and members; name and roles may change), "stale" (a lower
   * epoch: refused), "fork" (the same epoch with other members: refused),
   * "not-member" (a list without us: refused).
   */
  apply(g, change = null, mine = null) {
    const ids = g.members.map((m) => m.id);
    if (!ids.includes(this.me)) return { verdict: "not-member", record: this.map.get(g.id) || null, added: [], removed: [] };
    const old = this.map.get(g.id);
    if (old && !old.removed) {
      if (g.epoch < old.epoch) return { verdict: "stale", record: old, added: [], removed: [] };
      if (g.epoch === old.epoch) {
        const before = old.epochs[old.epochs.length - 1][1];
        if (before.length !== ids.length || ids.some((x) => !before.includes(x)))
          return { verdict: "fork", record: old, added: [], removed: [] };
        const previousName = old.name;
        Object.assign(old, { name: g.name, owner: g.owner, members: g.members });
        this.save();
        return { verdict: "same", record: old, added: [], removed: [], renamed: previousName !== g.name, previousName };
      }
    }
    if (old && old.removed && g.epoch <= old.epoch) return { verdict: "stale", record: old, added: [], removed: [] };
    // a new epoch (or a group new to us, or one we are back in)
    const prevIds = old && !old.removed ? old.epochs[old.epochs.length - 1][1] : [];
    const prevConfirmed = old && !old.removed ? old.confirmed : [];
    const added = old && !old.removed ? ids.filter((x) => !prevIds.includes(x)) : ids.filter((x) => x !== this.me);
    const removed = prevIds.filter((x) => !ids.includes(x));
    const confirmed = new Set([this.me, ...ids.filter((x) => prevConfirmed.includes(x))]);
    let author = null;
    if (mine && change && change.op === mine.op && (change.by === null || change.by === this.me)) {
      // our own change: we vouch for the members we asked for, and for everyone when we created the group
      const vouched = mine.op === "create" ? ids : mine.members.filter((x) => ids.includes(x));
      for (const x of vouched) confirmed.add(x);
      if (mine.op === "create" || mine.op === "add")
        author = { epoch: g.epoch, op: mine.op, members: mine.op === "create" ? ids.filter((x) => x !== this.me) : vouched };
    }
    const epochs = old && !old.removed ? old.epochs.slice() : [];
    epochs.push([g.epoch, ids]);
    const record = { ...g, epochs: epochs.slice(-EPOCHS_KEPT), confirmed: [...confirmed], author, removed: false };
    this.map.set(g.id, record);
    this.save();
    return { verdict: old && !old.removed ? "advance" : "new", record, added, removed, previousName: old ? old.name : null };
  }

  /** The server says we are out of the group (removed, or we left). */
  markRemoved(id, name) {
    const r = this.map.get(id);
    if (!r) return null;
    r.removed = true;
    if (validGroupName(name)) r.name = name;
    r.confirmed = [this.me];
    r.author = null;
    this.save();
    return r;
  }

  /** Members of the current epoch not vouched for (see the top of this file). */
  unconfirmed(id) {
    const r = this.map.get(id);
    if (!r || r.removed) return [];
    return r.members.map((m) => m.id).filter((x) => !r.confirmed.includes(x));
  }

  /**
   * A member's key message for the current epoch says it made the change
   * (`change`) and sees the member list whose hash is `mh` (equal to ours,
   * the caller checked): if it is the owner or an admin, the whole list of
   * that epoch is vouched for. Returns the ids that became confirmed.
   */
  vouch(id, epoch, senderId, change) {
    const r = this.map.get(id);
    if (!r || r.removed || r.epoch !== epoch || !change) return [];
    const sender = r.members.find((m) => m.id === senderId);
    if (!sender || (sender.role !== "owner" && sender.role !== "admin")) return [];
    const now = this.unconfirmed(id);
    if (!now.length) return [];
    r.confirmed = r.members.map((m) => m.id);
    this.save();
    return now;
  }

  /** The person chose to send their key to every member listed now. */
  trustAll(id) {
    const r = this.map.get(id);
    if (!r || r.removed) return [];
    const now = this.unconfirmed(id);
    r.confirmed = r.members.map((m) => m.id);
    this.save();
    return now;
  }

  remove(id) {
    this.map.delete(id);
    this.save();
  }
}
