// The page's audio format on the wire: `s2s.opus` through WebCodecs (AudioEncoder / AudioDecoder,
// codec "opus", 20 ms frames: a frame of speech goes up with the next one as one packet, a quiet
// frame at once, as remote/protocol/opus.py does), or `audio/pcm` (24 kHz PCM16). The page asks
// for Opus by default (`?format=opus`, `opus:24`, `pcm` in the address, or the select), when this browser can
// encode and decode Opus with WebCodecs and the server lists `s2s.opus` in `session.s2s.formats`;
// otherwise it stays on PCM and says why. Nothing here sends anything: app.js does.

import { Resampler } from './resampler.js';

export const WIRE_RATE = 24000;
export const OPUS = 's2s.opus';
export const BITRATES = [12, 16, 24, 32];

/** `opus`, `opus:24`, `pcm` to {type, bitrate}; anything else is Opus at 16 kbit/s. */
export function parseChoice(text) {
  const [name, param] = String(text || 'opus').toLowerCase().split(':');
  if (name === 'pcm') return { type: 'audio/pcm' };
  const kbps = Number(param);
  return { type: OPUS, bitrate: BITRATES.includes(kbps) ? kbps : 16 };
}

/** Why this browser cannot do Opus with WebCodecs, or null when it can (both ways, mono, 24 kHz). */
export async function opusUnavailable(bitrate = 16) {
  if (!window.AudioEncoder || !window.AudioDecoder || !window.AudioData || !window.EncodedAudioChunk) {
    return 'this browser has no WebCodecs audio';
  }
  try {
    const enc = await AudioEncoder.isConfigSupported(encoderConfig(bitrate));
    if (!enc.supported) return 'WebCodecs here cannot encode Opus';
    const dec = await AudioDecoder.isConfigSupported({ codec: 'opus', sampleRate: 48000, numberOfChannels: 1 });
    if (!dec.supported) return 'WebCodecs here cannot decode Opus';
  } catch (err) {
    return `WebCodecs refused Opus: ${err.message}`;
  }
  return null;
}

function encoderConfig(bitrate) {
  return {
    codec: 'opus', sampleRate: WIRE_RATE, numberOfChannels: 1, bitrate: bitrate * 1000,
    opus: { frameDuration: 20000, application: 'voip' },
  };
}

/** The format objects of a session.update for a choice. */
export function wireFormats(choice) {
  if (choice.type !== OPUS) return { input: { type: 'audio/pcm', rate: WIRE_RATE }, output: { type: 'audio/pcm', rate: WIRE_RATE } };
  const f = { type: OPUS, rate: WIRE_RATE, bitrate: choice.bitrate };
  return { input: f, output: { ...f } };
}

/** A short label: `s2s.opus 16 kbit/s`, `audio/pcm`. */
export function label(fmt) {
  if (!fmt) return 'audio/pcm';
  return fmt.type === OPUS ? `${OPUS} ${fmt.bitrate || 16} kbit/s` : fmt.type;
}

/** Two one-frame Opus packets as one packet of two frames (RFC 6716 3.2.2-3.2.3: code 1 for frames
 * of one size, else code 2), or null when they cannot share one. As `join_packets` in opus.py. */
export function joinPackets(a, b) {
  if (!a.length || !b.length || a[0] & 3 || b[0] & 3 || a[0] !== b[0]) return null;
  const n = a.length - 1;
  const same = n === b.length - 1;
  const size = same ? [] : n < 252 ? [n] : [252 + (n & 3), (n - 252 - (n & 3)) >> 2];
  const out = new Uint8Array(1 + size.length + n + b.length - 1);
  out[0] = a[0] | (same ? 1 : 2);
  out.set(size, 1);
  out.set(a.subarray(1), 1 + size.length);
  out.set(b.subarray(1), 1 + size.length + n);
  return out;
}

const FRAME = WIRE_RATE / 50; // 20 ms
const VOICED_OVER_FLOOR_DB = 12;
const VOICED_MIN_DB = -55;
const FLOOR_RISE_DB = 0.1; // per frame: the noise floor follows louder frames at 5 dB/s

/** A frame of speech waits for the next and goes with it; a quiet frame goes at once (opus.py's
 * VoicedPairs). Levels are measured on the PCM going in, one per 20 ms, and matched to the
 * encoder's packets in order (one packet per 20 ms frame). */
class VoicedPairs {
  constructor(send) {
    this.send = send;
    this.held = null;
    this.floor = -60;
    this.levels = []; // voiced?, per 20 ms frame not yet matched to its packet
    this.acc = 0;
    this.n = 0;
    this.paired = 0;
  }

  measure(pcm) {
    for (let i = 0; i < pcm.length; i++) {
      const x = pcm[i] / 32768;
      this.acc += x * x;
      if (++this.n < FRAME) continue;
      const db = 10 * Math.log10(this.acc / FRAME + 1e-12);
      this.floor = Math.min(db, this.floor + FLOOR_RISE_DB);
      this.levels.push(db >= Math.max(this.floor + VOICED_OVER_FLOOR_DB, VOICED_MIN_DB));
      if (this.levels.length > 500) this.levels.shift(); // bounded, if packets ever stop coming
      this.acc = 0;
      this.n = 0;
    }
  }

  packet(b) {
    const voiced = this.levels.length ? this.levels.shift() : false;
    if (this.held) {
      const held = this.held;
      this.held = null;
      const joined = joinPackets(held, b);
      if (joined) {
        this.paired += 1;
        this.send(joined);
      } else {
        this.send(held);
        this.send(b);
      }
    } else if (voiced) {
      this.held = b;
    } else {
      this.send(b);
    }
  }

  release() {
    if (this.held) this.send(this.held);
    this.held = null;
  }
}

/** Microphone PCM16 (24 kHz) to Opus packets: `onPacket(Uint8Array)` for each packet of one or two
 * 20 ms frames. `release()` sends a held frame of speech now (before a commit). */
export class OpusUp {
  constructor(bitrate, onPacket, onError) {
    this.ts = 0;
    this.pairs = new VoicedPairs(onPacket);
    this.enc = new AudioEncoder({
      output: (chunk) => {
        const b = new Uint8Array(chunk.byteLength);
        chunk.copyTo(b);
        this.pairs.packet(b);
      },
      error: (e) => onError(e),
    });
    this.enc.configure(encoderConfig(bitrate));
  }

  get paired() {
    return this.pairs.paired;
  }

  release() {
    this.pairs.release();
  }

  push(pcm) {
    if (this.enc.state !== 'configured') return;
    this.pairs.measure(pcm);
    const data = new AudioData({
      format: 's16', sampleRate: WIRE_RATE, numberOfFrames: pcm.length, numberOfChannels: 1,
      timestamp: Math.round((this.ts * 1e6) / WIRE_RATE), data: pcm,
    });
    this.ts += pcm.length;
    this.enc.encode(data);
    data.close();
  }

  close() {
    if (this.enc.state !== 'closed') this.enc.close();
  }
}

/** Opus packets of one response to PCM16 at 24 kHz, in order: `onPcm(Int16Array)` per packet. */
export class OpusDown {
  constructor(onPcm, onError) {
    this.n = 0;
    this.rs = null; // the decoder's rate (48 kHz) to the wire's 24 kHz, one stream per response
    this.dec = new AudioDecoder({
      output: (data) => {
        const f = new Float32Array(data.numberOfFrames);
        data.copyTo(f, { planeIndex: 0, format: 'f32-planar' });
        const rate = data.sampleRate;
        data.close();
        if (rate !== WIRE_RATE && !this.rs) this.rs = new Resampler(rate, WIRE_RATE);
        onPcm(toPcm16(this.rs ? this.rs.process(f) : f));
      },
      error: (e) => onError(e),
    });
    this.dec.configure({ codec: 'opus', sampleRate: 48000, numberOfChannels: 1 });
  }

  push(bytes) {
    if (this.dec.state !== 'configured') return;
    // the timestamp only orders the chunks (the server's packets hold 100 ms: five 20 ms frames)
    this.dec.decode(new EncodedAudioChunk({ type: 'key', timestamp: this.n * 100000, data: bytes }));
    this.n += 1;
  }

  close() {
    if (this.dec.state !== 'closed') this.dec.close();
  }
}

function toPcm16(f) {
  const out = new Int16Array(f.length);
  for (let i = 0; i < f.length; i++) out[i] = Math.max(-32768, Math.min(32767, Math.round(f[i] * 32767)));
  return out;
}
