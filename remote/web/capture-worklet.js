// The microphone's AudioWorklet: mixes the input to mono, resamples it to 24 kHz (the wire's
// rate), and posts chunks of `chunkSamples` PCM16 samples (20 ms by default) with their level to
// the page, which sends each as one input_audio_buffer.append. Runs on the audio thread: no
// allocation beyond one Int16Array per chunk, which is transferred, not copied.
import { Resampler } from './resampler.js';

const WIRE_RATE = 24000;

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = (options && options.processorOptions) || {};
    this.chunk = o.chunkSamples || 480;
    this.resampler = new Resampler(sampleRate, WIRE_RATE);
    this.acc = new Float32Array(this.chunk * 8);
    this.n = 0;
    this.mono = new Float32Array(128);
    this.running = true;
    this.port.onmessage = (e) => {
      if (e.data && e.data.type === 'stop') this.running = false;
    };
  }

  process(inputs) {
    const input = inputs[0];
    if (input && input.length > 0 && input[0].length > 0) {
      const frames = input[0].length;
      if (this.mono.length !== frames) this.mono = new Float32Array(frames);
      const mono = this.mono;
      if (input.length === 1) {
        mono.set(input[0]);
      } else {
        mono.fill(0);
        for (const ch of input) for (let i = 0; i < frames; i++) mono[i] += ch[i] / input.length;
      }
      this._push(this.resampler.process(mono));
    }
    return this.running;
  }

  _push(y) {
    if (this.n + y.length > this.acc.length) {
      const bigger = new Float32Array((this.n + y.length) * 2);
      bigger.set(this.acc.subarray(0, this.n));
      this.acc = bigger;
    }
    this.acc.set(y, this.n);
    this.n += y.length;
    while (this.n >= this.chunk) {
      const pcm = new Int16Array(this.chunk);
      let sumsq = 0;
      let peak = 0;
      for (let i = 0; i < this.chunk; i++) {
        const s = Math.max(-1, Math.min(1, this.acc[i]));
        pcm[i] = s < 0 ? s * 32768 : s * 32767;
        sumsq += s * s;
        const a = s < 0 ? -s : s;
        if (a > peak) peak = a;
      }
      this.acc.copyWithin(0, this.chunk, this.n);
      this.n -= this.chunk;
      const rms = Math.sqrt(sumsq / this.chunk);
      this.port.postMessage({ type: 'chunk', pcm, rms, peak, ctxTime: currentTime }, [pcm.buffer]);
    }
  }
}

registerProcessor('s2s-capture', CaptureProcessor);
