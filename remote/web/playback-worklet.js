// The speaker's AudioWorklet: a jitter buffer for reply audio. The page posts each 24 kHz
// response.output_audio.delta here; it is resampled to the context's rate on arrival and kept in a
// bounded ring (2 minutes; more is dropped and counted). Playback of a response starts once
// `prebufferMs` is buffered (or its last audio is in); after a stall (the engine was slower than
// real time) it waits for a longer prebuffer, up to 500 ms. `flush` empties the ring at once
// (barge-in, interrupt) and answers how much of the reply had been played. The page learns when
// each response's first sample was rendered (`started`, on the context's clock), when it finished,
// and every ~40 ms how much was played and buffered (`status`).
import { Resampler } from './resampler.js';

const WIRE_RATE = 24000;

class PlaybackProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = (options && options.processorOptions) || {};
    this.capacity = Math.round(sampleRate * (o.maxBufferS || 120));
    this.ring = new Float32Array(this.capacity);
    this.written = 0; // absolute sample counters at the context's rate
    this.read = 0;
    this.minPrebuffer = Math.round((sampleRate * (o.prebufferMs ?? 60)) / 1000);
    this.maxPrebuffer = Math.round(sampleRate * 0.5);
    this.prebuffer = this.minPrebuffer;
    this.playing = false;
    this.segments = []; // one per response, in ring order: {id, end, ended, played, started}
    this.resampler = new Resampler(WIRE_RATE, sampleRate);
    this.rsId = null;
    this.played = 0; // samples of reply audio rendered, all responses
    this.underruns = 0;
    this.dropped = 0;
    this.flushes = 0;
    this.blocks = 0;
    this.port.onmessage = (e) => this._message(e.data);
  }

  _segment(id) {
    const last = this.segments[this.segments.length - 1];
    if (last && last.id === id && !last.ended) return last;
    const seg = { id, end: this.written, ended: false, played: 0, started: false };
    this.segments.push(seg);
    return seg;
  }

  _message(m) {
    if (m.type === 'push') {
      if (this.rsId !== m.id) {
        if (this.rsId !== null) this._end(this.rsId);
        this.rsId = m.id;
        this.resampler.reset();
      }
      this._write(this.resampler.process(m.samples), this._segment(m.id));
    } else if (m.type === 'end') {
      this._end(m.id);
    } else if (m.type === 'flush') {
      const seg = this.segments[0];
      const discarded = this.written - this.read;
      this.read = this.written;
      this.segments = [];
      this.rsId = null;
      this.resampler.reset();
      this.playing = false;
      this.flushes += 1;
      this.port.postMessage({
        type: 'flushed',
        id: seg ? seg.id : null,
        playedMs: seg ? (1000 * seg.played) / sampleRate : 0,
        discardedMs: (1000 * discarded) / sampleRate,
        token: m.token,
      });
      this._status();
    }
  }

  _end(id) {
    const seg = this.segments.find((s) => s.id === id && !s.ended);
    if (this.rsId === id) {
      if (seg) this._write(this.resampler.flush(), seg);
      this.rsId = null;
    }
    if (!seg) return;
    seg.ended = true;
    if (this.segments[0] === seg && this.read >= seg.end) this._finish();
  }

  _finish() {
    const seg = this.segments.shift();
    this.port.postMessage({ type: 'finished', id: seg.id, playedMs: (1000 * seg.played) / sampleRate });
  }

  _write(y, seg) {
    const free = this.capacity - (this.written - this.read);
    let n = y.length;
    if (n > free) {
      this.dropped += n - free;
      n = free;
    }
    const at = this.written % this.capacity;
    const first = Math.min(n, this.capacity - at);
    this.ring.set(y.subarray(0, first), at);
    if (n > first) this.ring.set(y.subarray(first, n), 0);
    this.written += n;
    seg.end = this.written;
  }

  process(inputs, outputs) {
    const out = outputs[0];
    const ch0 = out[0];
    const frames = ch0.length;
    const avail = this.written - this.read;
    if (!this.playing && avail > 0) {
      const seg = this.segments[0];
      if (avail >= this.prebuffer || (seg && seg.ended)) this.playing = true;
    }
    let n = 0;
    if (this.playing) {
      n = Math.min(frames, avail);
      const at = this.read % this.capacity;
      const first = Math.min(n, this.capacity - at);
      ch0.set(this.ring.subarray(at, at + first), 0);
      if (n > first) ch0.set(this.ring.subarray(0, n - first), first);
      let pos = this.read;
      let left = n;
      while (left > 0 && this.segments.length) {
        const seg = this.segments[0];
        const take = Math.min(seg.end - pos, left);
        if (take > 0 && !seg.started) {
          seg.started = true;
          this.port.postMessage({ type: 'started', id: seg.id, ctxTime: currentTime + (pos - this.read) / sampleRate });
        }
        seg.played += take;
        pos += take;
        left -= take;
        if (pos >= seg.end) {
          if (seg.ended) this._finish();
          else break;
        }
      }
      this.read += n;
      this.played += n;
      if (n < frames) {
        this.playing = false;
        const seg = this.segments[0];
        if (seg && !seg.ended) {
          // a stall inside a reply: wait for more next time
          this.underruns += 1;
          this.prebuffer = Math.min(this.maxPrebuffer, this.prebuffer + Math.round(sampleRate * 0.04));
        }
      }
    }
    if (n < frames) ch0.fill(0, n);
    for (let c = 1; c < out.length; c++) out[c].set(ch0);
    if (++this.blocks % 16 === 0) this._status();
    return true;
  }

  _status() {
    const seg = this.segments[0];
    this.port.postMessage({
      type: 'status',
      played: this.played,
      buffered: this.written - this.read,
      playing: this.playing,
      id: seg ? seg.id : null,
      idPlayedMs: seg ? (1000 * seg.played) / sampleRate : 0,
      underruns: this.underruns,
      dropped: this.dropped,
      flushes: this.flushes,
      prebufferMs: (1000 * this.prebuffer) / sampleRate,
      rate: sampleRate,
    });
  }
}

registerProcessor('s2s-playback', PlaybackProcessor);
