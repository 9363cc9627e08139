// connection.mjs - one WebSocket to the chat server that comes back by
// itself: after an unexpected close it reconnects with exponential backoff
// (util.backoffDelay) and tells the app, which then resumes its session.

import { backoffDelay } from "./util.mjs";

// Close codes after which reconnecting would only repeat the problem.
const FINAL_CODES = new Set([
  4001, // the same account logged in or resumed elsewhere
  1008, // policy: too much queued output
  1009, // message too big
]);

export class Connection {
  /**
   * handlers: open(), message(object), status({state, delay?, code?, reason?})
   * state is "connecting" | "open" | "waiting" | "closed".
   */
  constructor(url, handlers) {
    this.url = url;
    this.h = handlers;
    this.ws = null;
    this.attempt = 0;
    this.timer = null;
    this.stopped = true;
    this.onOnline = () => { if (!this.stopped && this.state === "waiting") this.connectNow(); };
    globalThis.addEventListener?.("online", this.onOnline);
  }

  start() {
    this.stopped = false;
    this.connectNow();
  }

  /** Connect now (also used by a "retry now" button). */
  connectNow() {
    clearTimeout(this.timer);
    this.timer = null;
    if (this.ws) return;
    this.stopped = false;
    this.setState("connecting");
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (e) {
      this.h.status({ state: "closed", reason: String(e.message || e) });
      this.stopped = true;
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      this.attempt = 0;
      this.setState("open");
      this.h.open();
    };
    ws.onmessage = (ev) => {
      let data;
      try { data = JSON.parse(ev.data); } catch { data = null; }
      if (data && typeof data === "object") this.h.message(data);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.stopped) return;
      if (FINAL_CODES.has(ev.code)) {
        this.stopped = true;
        this.setState("closed", { code: ev.code, reason: ev.reason });
        return;
      }
      this.scheduleRetry(ev.code);
    };
  }

  scheduleRetry(code) {
    const delay = backoffDelay(this.attempt++);
    this.setState("waiting", { delay, code, at: Date.now() + delay });
    this.timer = setTimeout(() => this.connectNow(), delay);
  }

  setState(state, extra = {}) {
    this.state = state;
    this.h.status({ state, ...extra });
  }

  get isOpen() {
    return !!this.ws && this.ws.readyState === WebSocket.OPEN;
  }

  /** Sends one request; false when not connected (nothing is queued). */
  send(obj) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(obj));
    return true;
  }

  /** Closes for good (logout, page teardown). */
  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = null;
    if (this.ws) { const ws = this.ws; this.ws = null; ws.close(1000, "bye"); }
    this.setState("closed", {});
  }
}
