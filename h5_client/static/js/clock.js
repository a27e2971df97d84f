// The coordinator's clock as seen from this page (SPEC §2: lock expiry is the Redis server clock).
//
// Every server time we observe (an event's `ts`, a grant's `acquired_at`) was stamped before we
// received it, so `server_ms - local_ms_at_receipt` is a lower bound of the true offset; the
// largest bound seen so far is the best estimate (a replayed old event only gives a smaller one).
// The local side is monotonic (performance.now), so a phone adjusting its wall clock mid-payment
// does not move the countdown.

export class ServerClock {
  constructor(localNow = () => performance.timeOrigin + performance.now()) {
    this.localNow = localNow;
    this.offset = null;
  }

  /** Take note of a server timestamp (Unix ms) received just now. */
  observe(serverMs) {
    if (typeof serverMs !== "number" || !Number.isFinite(serverMs)) return;
    const bound = serverMs - this.localNow();
    if (this.offset === null || bound > this.offset) this.offset = bound;
  }

  /** The server's time now in Unix ms, or null while no server time has been seen. */
  now() {
    return this.offset === null ? null : this.localNow() + this.offset;
  }
}
