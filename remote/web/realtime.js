// The page's Realtime connection: one WebSocket to /v1/realtime on the page's own host and port,
// JSON events in and out, reconnection with exponential backoff (0.5 s doubling to 10 s, ±20 %
// jitter, as remote/client.py), s2s.ping every 2 s for the round trip and the clock offset, and
// byte counts both ways. A browser cannot set headers on a WebSocket, so the token travels as the
// `openai-insecure-api-key.<token>` subprotocol next to `realtime`.
//
// Why a handshake failed is invisible to a page (the browser reports 1006 for a 401, a 503 and a
// dead server alike), so after a failed handshake the page asks /readyz (no token needed): a server
// that is ready but refused the socket refused the token; otherwise it says why (loading, draining, full).

const SUBPROTOCOL = 'realtime';
const KEY_PREFIX = 'openai-insecure-api-key.';
const SENT_LOG = 8192; // send times of the last messages (for the per-turn network legs)
const PING_EVERY_MS = 2000;

const encoder = new TextEncoder();

/** The server's readiness state ('ready', 'loading', 'draining', 'full'), or null when it does not
 * answer. Without a token /readyz says the word; a server without a token answers JSON. */
async function readiness(url) {
  try {
    const r = await fetch(url, { cache: 'no-store' });
    const text = (await r.text()).trim();
    return text.startsWith('{') ? JSON.parse(text).state : text;
  } catch {
    return null;
  }
}

/** UTF-8 size of a string (audio events are ASCII; transcripts are Telugu). */
export function utf8Length(s) {
  let ascii = true;
  for (let i = 0; i < s.length; i++) {
    if (s.charCodeAt(i) > 127) {
      ascii = false;
      break;
    }
  }
  return ascii ? s.length : encoder.encode(s).length;
}

/** Is `token` something a browser can send as a subprotocol (an HTTP token)? */
export function tokenIsSendable(token) {
  return /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(token);
}

export class RealtimeConnection {
  /**
   * @param {{url: string, readyUrl: string, getToken: () => (string|null),
   *          onEvent: (e: object) => void, onState: (s: object) => void, onOpen: () => void}} o
   */
  constructor(o) {
    this.url = o.url;
    this.readyUrl = o.readyUrl;
    this.getToken = o.getToken;
    this.onEvent = o.onEvent;
    this.onState = o.onState;
    this.onOpen = o.onOpen;
    this.backoffInitialMs = 500;
    this.backoffMaxMs = 10000;
    this.ws = null;
    this.ready = false;
    this.attempt = 0;
    this.state = { status: 'idle' };
    this.stopped = false;
    this._retryTimer = null;
    this._pingTimer = null;
    this._lastError = null; // the server's last `error` event before a close
    // counters: this connection (reset on open) and the page's lifetime
    this.sentCount = 0;
    this.sentTimes = new Float64Array(SENT_LOG);
    this.bytesUp = 0;
    this.bytesDown = 0;
    this.messagesUp = 0;
    this.messagesDown = 0;
    this.bytesUpByType = {}; // event type -> bytes (audio vs everything else)
    this.bytesDownByType = {};
    this.pings = []; // {rtt, offset} of the last 16 pongs
    this.rttMs = null;
    this.offsetMs = null; // server clock - page clock (ms), from the least-queued ping
    this.offsetRttMs = null;
  }

  /** Connected, and the server has started a session (session.created). */
  get open() {
    return this.ready && !!this.ws && this.ws.readyState === WebSocket.OPEN;
  }

  _setState(s) {
    this.state = s;
    this.onState(s);
  }

  connect() {
    this.stopped = false;
    clearTimeout(this._retryTimer);
    if (this.ws) return;
    const token = this.getToken();
    const protocols = [SUBPROTOCOL];
    if (token) {
      if (!tokenIsSendable(token)) {
        this._setState({ status: 'auth', reason: 'This token has characters a browser cannot send (use letters, digits and - _ .).' });
        return;
      }
      protocols.push(KEY_PREFIX + token);
    }
    this._setState({ status: 'connecting', attempt: this.attempt });
    let ws;
    try {
      ws = new WebSocket(this.url, protocols);
    } catch (err) {
      this._setState({ status: 'closed', reason: `cannot connect: ${err.message}` });
      return;
    }
    this.ws = ws;
    let opened = false;
    this._lastError = null;
    ws.onopen = () => {
      opened = true;
      this.sentCount = 0;
      this.pings = [];
      this.offsetMs = this.rttMs = this.offsetRttMs = null;
    };
    ws.onmessage = (m) => {
      if (typeof m.data !== 'string') return;
      const size = utf8Length(m.data);
      this.bytesDown += size;
      this.messagesDown += 1;
      let e;
      try {
        e = JSON.parse(m.data);
      } catch {
        return;
      }
      this.bytesDownByType[e.type] = (this.bytesDownByType[e.type] || 0) + size;
      const t = performance.now();
      if (e.type === 'error') this._lastError = e.error || {};
      if (e.type === 's2s.pong') this._pong(e, t);
      if (e.type === 'session.created') this._ready();
      this.onEvent(e, t);
    };
    ws.onclose = (c) => {
      clearInterval(this._pingTimer);
      this.ws = null;
      this.ready = false;
      if (this.stopped) {
        this._setState({ status: 'closed', reason: 'disconnected' });
        return;
      }
      this._closed(opened, c.code, c.reason);
    };
    ws.onerror = () => {}; // onclose follows with the code
  }

  // The server accepted the session (a full or closing server opens the socket, sends an error
  // and closes it: that is not a success, and the backoff keeps growing).
  _ready() {
    this.ready = true;
    this.attempt = 0;
    this._setState({ status: 'open' });
    this._ping();
    this._pingTimer = setInterval(() => this._ping(), PING_EVERY_MS);
    this.onOpen();
  }

  async _closed(opened, code, reason) {
    const err = this._lastError || {};
    if (!opened) {
      // a refused or failed handshake: is the server there, and does it take sessions?
      const state = await readiness(this.readyUrl);
      if (state === 'ready') {
        const token = this.getToken();
        this._setState({
          status: 'auth',
          reason: token ? 'The server refused this token.' : 'This server needs a token.',
        });
        return; // no retry until the user gives a token
      }
      if (state === 'full') {
        this._retry('the server is full', 'full');
      } else {
        this._retry({ loading: 'the server is loading its models', draining: 'the server is shutting down' }[state]
          || 'the server is not reachable');
      }
      return;
    }
    if (err.code === 'session_limit_reached' || code === 1013) {
      this._retry(`the server is full: ${err.message || 'too many sessions'}`, 'full');
    } else if (err.code === 'idle_timeout' || code === 4000) {
      this._setState({ status: 'closed', reason: 'The session was closed after being idle. Press Connect.' });
    } else if (err.code === 'server_shutting_down' || code === 1001) {
      this._retry('the server shut down');
    } else {
      this._retry(`connection lost (${code}${reason ? ': ' + reason : ''})`);
    }
  }

  _retry(reason, kind = 'reconnecting') {
    this.attempt += 1;
    let delay = Math.min(this.backoffMaxMs, this.backoffInitialMs * 2 ** (this.attempt - 1));
    delay *= 0.8 + 0.4 * Math.random(); // many pages must not retry in step
    const retryAt = performance.now() + delay;
    this._setState({ status: 'reconnecting', kind, reason, attempt: this.attempt, retryAt });
    this._retryTimer = setTimeout(() => this.connect(), delay);
  }

  /** Stop for good (until connect()). */
  close() {
    this.stopped = true;
    clearTimeout(this._retryTimer);
    clearInterval(this._pingTimer);
    if (this.ws) this.ws.close(1000, 'bye');
    else this._setState({ status: 'closed', reason: 'disconnected' });
  }

  /** Send one client event; false when not connected (the event is dropped, never queued). */
  send(event) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    const text = JSON.stringify(event);
    this.ws.send(text);
    this.sentTimes[this.sentCount % SENT_LOG] = performance.now();
    this.sentCount += 1;
    const size = utf8Length(text);
    this.bytesUp += size;
    this.bytesUpByType[event.type] = (this.bytesUpByType[event.type] || 0) + size;
    this.messagesUp += 1;
    return true;
  }

  /** The page's send time of this connection's message number `index` (1-based), if still known. */
  sentTime(index) {
    if (!(index >= 1) || index > this.sentCount || this.sentCount - index >= SENT_LOG) return null;
    return this.sentTimes[(index - 1) % SENT_LOG];
  }

  _ping() {
    this.send({ type: 's2s.ping', client_time_ms: performance.now() });
  }

  _pong(e, t3) {
    const t0 = e.client_time_ms;
    const rtt = t3 - t0;
    const offset = e.server_time_ms - (t0 + t3) / 2;
    this.pings.push({ rtt, offset });
    if (this.pings.length > 16) this.pings.shift();
    const best = this.pings.reduce((a, b) => (b.rtt < a.rtt ? b : a));
    this.offsetMs = best.offset;
    this.offsetRttMs = best.rtt;
    this.rttMs = this.rttMs === null ? rtt : 0.7 * this.rttMs + 0.3 * rtt;
  }

  /**
   * One turn's network legs from the server's `network` stamps (see docs/protocol.md): up = the
   * message that ended the turn, page -> server; down = the first reply audio, server -> page.
   * A leg slightly below 0 (within half the ping's round trip) is clamped to 0; further below, null.
   */
  networkLegs(network, firstAudioReadMs) {
    if (!network || this.offsetMs === null) return null;
    const slack = this.offsetRttMs / 2 + 1;
    const leg = (v) => (v === null ? null : v >= 0 ? v : v >= -slack ? 0 : null);
    let up = null;
    const sent = this.sentTime(network.turn_end_message);
    if (sent !== null && network.turn_end_received_server_ms != null) {
      up = leg(network.turn_end_received_server_ms - this.offsetMs - sent);
    }
    let down = null;
    if (firstAudioReadMs != null && network.first_audio_sent_server_ms != null) {
      down = leg(firstAudioReadMs - (network.first_audio_sent_server_ms - this.offsetMs));
    }
    return { up, down, total: up !== null && down !== null ? up + down : null };
  }
}
