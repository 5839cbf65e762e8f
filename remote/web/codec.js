// The page's audio format on the wire: `s2s.opus` through WebCodecs (AudioEncoder / AudioDecoder,
// codec "opus", one packet per 20 ms), or `audio/pcm` (24 kHz PCM16). The page asks for Opus by
// default (`?format=opus`, `opus:24`, `pcm` in the address, or the select), when this browser can
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

/** Microphone PCM16 (24 kHz) to Opus packets: `onPacket(Uint8Array)` for each 20 ms. */
export class OpusUp {
  constructor(bitrate, onPacket, onError) {
    this.ts = 0;
    this.enc = new AudioEncoder({
      output: (chunk) => {
        const b = new Uint8Array(chunk.byteLength);
        chunk.copyTo(b);
        onPacket(b);
      },
      error: (e) => onError(e),
    });
    this.enc.configure(encoderConfig(bitrate));
  }

  push(pcm) {
    if (this.enc.state !== 'configured') return;
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
