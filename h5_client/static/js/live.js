// Keeping the page current: the websocket (SPEC §7) with backoff and resume via `since`, and
// polling GET /h5/table whenever the socket is not open (older H5 builds poll only).
//
// States (reported through onState):
//   connecting    first attempt, nothing known yet
//   live          the socket is open
//   reconnecting  the socket was open and dropped: retrying with backoff, polling meanwhile
//   polling       the socket never opened (blocked, unsupported, ?nows=1): polling, retrying rarely

const OPEN_TIMEOUT_MS = 5000;
// A socket that stayed open this long was healthy: the backoff starts over after it drops.
const HEALTHY_MS = 5000;

export class Live {
  /**
   * @param {object} o
   * @param {(since: number) => string} o.url          websocket URL resuming after `since`
   * @param {() => string[]} [o.protocols]              subprotocols to offer (they carry the token)
   * @param {() => number} o.since                      the last seq applied
   * @param {(msg: object) => void} o.onMessage         hello, snapshot and event messages
   * @param {() => Promise<void>} o.poll                one GET /h5/table applied to the state
   * @param {(state: string) => void} o.onState
   * @param {() => Promise<void>} o.onAuthLost           close 4401: the session must be reopened
   * @param {boolean} [o.websocket=true]                 false: poll only (?nows=1)
   * @param {number} [o.pollMs=1500]
   */
  constructor(o) {
    Object.assign(this, { pollMs: 1500, websocket: true }, o);
    this.ws = null;
    this.everOpened = false;
    this.failures = 0;
    this.retryTimer = null;
    this.pollTimer = null;
    this.polling = false;
    this.state = null;
  }

  start() {
    document.addEventListener("visibilitychange", () => {
      // A phone coming back from the background: try at once rather than after the backoff.
      if (document.visibilityState === "visible" && !this.isOpen()) this.retryNow();
    });
    if (!this.websocket || typeof WebSocket === "undefined") {
      this.setState("polling");
      this.startPolling();
      return;
    }
    this.setState("connecting");
    this.connect();
  }

  isOpen() {
    return !!this.ws && this.ws.readyState === WebSocket.OPEN;
  }

  setState(state) {
    if (state !== this.state) {
      this.state = state;
      this.onState(state);
    }
  }

  connect() {
    clearTimeout(this.retryTimer);
    let ws;
    try {
      ws = new WebSocket(this.url(this.since()), this.protocols ? this.protocols() : undefined);
    } catch (e) {
      this.failed();
      return;
    }
    this.ws = ws;
    let opened = false;
    let openedAt = 0;
    const openTimer = setTimeout(() => {
      if (!opened) ws.close();
    }, OPEN_TIMEOUT_MS);
    ws.onopen = () => {
      opened = true;
      openedAt = performance.now();
      clearTimeout(openTimer);
      this.everOpened = true;
      this.stopPolling();
      this.setState("live");
    };
    ws.onmessage = (e) => {
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch (err) {
        return;
      }
      this.onMessage(msg);
    };
    ws.onclose = (e) => {
      clearTimeout(openTimer);
      if (this.ws !== ws) return;
      this.ws = null;
      // A server that accepts and at once closes must not be hammered: only a socket that lived
      // a while resets the backoff.
      if (opened && performance.now() - openedAt >= HEALTHY_MS) this.failures = 0;
      if (e.code === 4401) {
        // The session lapsed: reopen it, then reconnect at once.
        this.onAuthLost().then(() => this.connect(), () => this.failed());
        return;
      }
      this.failed();
    };
  }

  failed() {
    this.failures += 1;
    this.setState(this.everOpened ? "reconnecting" : "polling");
    this.startPolling();
    // 0.5 s, 1 s, 2 s … capped at 10 s (30 s while the socket has never opened), with jitter.
    const cap = this.everOpened ? 10_000 : 30_000;
    const base = Math.min(cap, 500 * 2 ** Math.min(this.failures - 1, 10));
    this.retryTimer = setTimeout(() => this.connect(), base * (0.75 + Math.random() * 0.5));
  }

  /** Open a new socket at once (the session's table changed: the new one subscribes to it). */
  resubscribe() {
    if (!this.websocket) return;
    const old = this.ws;
    this.ws = null;
    if (old) old.close();
    this.connect();
  }

  retryNow() {
    if (!this.websocket) {
      this.poll().catch(() => {});
      return;
    }
    if (this.ws) return; // an attempt is under way
    clearTimeout(this.retryTimer);
    this.connect();
  }

  startPolling() {
    if (this.polling) return;
    this.polling = true;
    const generation = (this.pollGeneration = (this.pollGeneration || 0) + 1);
    const tick = async () => {
      try {
        await this.poll();
      } catch (e) {
        /* the next tick tries again */
      }
      if (this.polling && this.pollGeneration === generation) this.pollTimer = setTimeout(tick, this.pollMs);
    };
    this.pollTimer = setTimeout(tick, 0);
  }

  stopPolling() {
    this.polling = false;
    clearTimeout(this.pollTimer);
  }
}
