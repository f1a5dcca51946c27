// The staff WebSocket (/ws/staff): live consultation list, viewer signalling, events.
// Reconnects with backoff until stopped (logout).

import { wsUrl } from "/common/rtc.js";

export class StaffSocket {
  /**
   * @param {(msg: object) => void} onMessage
   * @param {(state: "connecting"|"open"|"closed") => void} onState
   */
  constructor(onMessage, onState) {
    this.onMessage = onMessage;
    this.onState = onState;
    this.ws = null;
    this.stopped = true;
    this.backoff = 1000;
    this.timer = 0;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  connect() {
    if (this.stopped) return;
    this.onState("connecting");
    const ws = new WebSocket(wsUrl("/ws/staff"));
    this.ws = ws;
    ws.addEventListener("open", () => {
      this.backoff = 1000;
      this.onState("open");
    });
    ws.addEventListener("message", (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (msg && typeof msg.type === "string") this.onMessage(msg);
    });
    ws.addEventListener("close", () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.onState("closed");
      if (!this.stopped) {
        this.timer = window.setTimeout(() => this.connect(), this.backoff);
        this.backoff = Math.min(this.backoff * 2, 15000);
      }
    });
  }

  get open() {
    return !!this.ws && this.ws.readyState === WebSocket.OPEN;
  }

  send(msg) {
    if (!this.open) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  stop() {
    this.stopped = true;
    window.clearTimeout(this.timer);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close();
    }
  }
}
