// The session's WebSocket, reconnecting with backoff; frames sent while it is down wait for it.

import { openSocket } from "./api.js";

const MAX_DELAY = 10_000;

export class SessionSocket {
  /** `onEvent(event)` hears every event; `onState(state, {reconnected})` hears "open" and "closed". */
  constructor(sessionId, { onEvent, onState }) {
    this.sessionId = sessionId;
    this.onEvent = onEvent;
    this.onState = onState;
    this.waiting = [];
    this.delay = 500;
    this.opened = false;
    this.stopped = false;
    this.timer = null;
    this.connect();
  }

  connect() {
    this.timer = null;
    const socket = openSocket(this.sessionId);
    this.socket = socket;
    socket.onopen = () => {
      this.delay = 500;
      const reconnected = this.opened;
      this.opened = true;
      for (const frame of this.waiting.splice(0)) socket.send(JSON.stringify(frame));
      this.onState("open", { reconnected });
    };
    socket.onmessage = (message) => {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return;
      }
      this.onEvent(event);
    };
    socket.onclose = (close) => {
      if (this.socket !== socket || this.stopped) return;
      this.onState("closed", { code: close.code, reason: close.reason });
      this.timer = setTimeout(() => this.connect(), this.delay);
      this.delay = Math.min(MAX_DELAY, this.delay * 2);
    };
  }

  get open() {
    return this.socket && this.socket.readyState === WebSocket.OPEN;
  }

  send(frame) {
    if (this.open) this.socket.send(JSON.stringify(frame));
    else this.waiting.push(frame);
  }

  /** Reconnect now (e.g. when the server is reachable again). */
  retry() {
    if (this.timer === null || this.stopped) return;
    clearTimeout(this.timer);
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.socket) this.socket.close();
  }
}
