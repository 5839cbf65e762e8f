// A streaming windowed-sinc resampler for mono Float32 audio, shared by both AudioWorklets:
// the microphone (the context's rate, usually 44.1 or 48 kHz) down to the wire's 24 kHz, and
// reply audio (24 kHz) up to the context's rate. The low-pass sits at 92 % of the lower Nyquist
// (Blackman window, 8 zero crossings each side), so downsampling does not alias; the delay is
// the kernel's half-width (under 1 ms). Positions are kept as exact integers (input sample =
// num / outRate), so long streams do not drift.

const PHASES = 256; // kernel table resolution per input sample (linear interpolation between)

export class Resampler {
  /**
   * @param {number} inRate input sample rate (Hz)
   * @param {number} outRate output sample rate (Hz)
   * @param {number} zeroCrossings kernel half-width in zero crossings of the low-pass
   */
  constructor(inRate, outRate, zeroCrossings = 8) {
    this.inRate = Math.round(inRate);
    this.outRate = Math.round(outRate);
    this.passthrough = this.inRate === this.outRate;
    const cutoff = 0.92 * Math.min(1, this.outRate / this.inRate); // of the input Nyquist
    this.half = Math.ceil(zeroCrossings / cutoff); // kernel half-width in input samples
    const n = this.half * PHASES + 2;
    this.table = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const x = i / PHASES; // distance from the centre, input samples
      const u = x / this.half;
      if (u >= 1) continue;
      const w = 0.42 + 0.5 * Math.cos(Math.PI * u) + 0.08 * Math.cos(2 * Math.PI * u);
      const a = Math.PI * cutoff * x;
      this.table[i] = cutoff * (x === 0 ? 1 : Math.sin(a) / a) * w;
    }
    this.reset();
  }

  /** Forget the stream (a new one starts at its first sample). */
  reset() {
    // `half` zeros in front, so the first output is centred on the first input sample
    this.buf = new Float32Array(this.half + 4096);
    this.len = this.half;
    this.num = this.half * this.outRate; // position of the next output, times outRate
  }

  _append(input) {
    if (this.len + input.length > this.buf.length) {
      const bigger = new Float32Array(Math.max(this.buf.length * 2, this.len + input.length));
      bigger.set(this.buf.subarray(0, this.len));
      this.buf = bigger;
    }
    this.buf.set(input, this.len);
    this.len += input.length;
  }

  /**
   * Resample the next block of the stream.
   * @param {Float32Array} input
   * @returns {Float32Array} the output samples this block completes
   */
  process(input) {
    if (this.passthrough) return input.slice();
    this._append(input);
    const { buf, half, table, outRate, inRate } = this;
    const out = new Float32Array(Math.ceil(((this.len - half) * outRate - this.num) / inRate) + 2);
    let n = 0;
    let num = this.num;
    for (;;) {
      const centre = Math.floor(num / outRate);
      if (centre + half >= this.len) break;
      const frac = num / outRate - centre;
      let acc = 0;
      for (let k = centre - half + 1; k <= centre + half; k++) {
        const d = Math.abs(k - centre - frac) * PHASES;
        const i = d | 0;
        const f = d - i;
        acc += buf[k] * (table[i] + (table[i + 1] - table[i]) * f);
      }
      out[n++] = acc;
      num += inRate;
    }
    // keep only what later outputs still need
    const drop = Math.max(0, Math.floor(num / outRate) - half);
    if (drop > 0) {
      buf.copyWithin(0, drop, this.len);
      this.len -= drop;
      num -= drop * outRate;
    }
    this.num = num;
    return out.subarray(0, n);
  }

  /** The stream ended: the outputs still held back for the kernel's look-ahead, then a fresh state. */
  flush() {
    if (this.passthrough) return new Float32Array(0);
    // `half` zeros complete every output centred before the end of the stream, and no more
    const tail = this.process(new Float32Array(this.half)).slice();
    this.reset();
    return tail;
  }
}
