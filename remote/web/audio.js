// The page's audio: one AudioContext with the two worklets. The microphone (getUserMedia with the
// browser's echo canceller, noise suppression and auto gain, each switchable) feeds the capture
// worklet, whose 24 kHz PCM16 chunks come back through `onChunk`; reply audio goes to the playback
// worklet (jitter buffer). Nothing here knows the protocol.

const CHUNK_MS = 20; // one input_audio_buffer.append per 20 ms of microphone audio

/** A sentence for each way getUserMedia can fail. */
export function micErrorMessage(err) {
  const name = err && err.name;
  if (name === 'NotAllowedError' || name === 'SecurityError') {
    return 'Microphone access was denied. Allow it for this page (the icon left of the address) and press Start again.';
  }
  if (name === 'NotFoundError' || name === 'OverconstrainedError') return 'No microphone was found. Plug one in and press Start again.';
  if (name === 'NotReadableError' || name === 'AbortError') {
    return 'The microphone could not be opened (is another application using it?). Press Start to try again.';
  }
  return `The microphone failed: ${(err && err.message) || err}`;
}

export class AudioIO {
  /**
   * @param {{onChunk: (chunk: {pcm: Int16Array, rms: number, peak: number}) => void,
   *          onPlayback: (msg: object) => void}} handlers
   */
  constructor({ onChunk, onPlayback }) {
    this.onChunk = onChunk;
    this.onPlayback = onPlayback;
    this.ctx = null;
    this.player = null;
    this.stream = null;
    this.source = null;
    this.capture = null;
    this.status = { played: 0, buffered: 0, playing: false, id: null, idPlayedMs: 0, underruns: 0, dropped: 0, flushes: 0 };
    this._flushWaiters = new Map();
    this._flushToken = 0;
    this._ready = null;
  }

  /** Create the context and the player (call from a user gesture: browsers start audio only then). */
  start() {
    if (!this._ready) this._ready = this._start();
    return this._ready;
  }

  async _start() {
    if (!window.AudioContext || !window.AudioWorkletNode) {
      throw new Error('This browser has no AudioWorklet: use a current Chrome, Edge, Firefox or Safari.');
    }
    const ctx = new AudioContext({ latencyHint: 'interactive' });
    this.ctx = ctx;
    await ctx.audioWorklet.addModule(new URL('./capture-worklet.js', import.meta.url));
    await ctx.audioWorklet.addModule(new URL('./playback-worklet.js', import.meta.url));
    this.player = new AudioWorkletNode(ctx, 's2s-playback', {
      numberOfInputs: 0,
      numberOfOutputs: 1,
      outputChannelCount: [1],
      processorOptions: { prebufferMs: 60, maxBufferS: 120 },
    });
    this.player.port.onmessage = (e) => this._playerMessage(e.data);
    this.player.connect(ctx.destination);
    if (ctx.state !== 'running') await ctx.resume();
  }

  get running() {
    return !!this.ctx && this.ctx.state === 'running';
  }

  /** Open (or re-open with new switches) the microphone. Throws what getUserMedia throws. */
  async openMic({ echoCancellation = true, noiseSuppression = true, autoGainControl = true } = {}) {
    await this.start();
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      const err = new Error(
        'The microphone needs a secure page: open http://localhost:PORT/ (through the SSH tunnel) or https, not a bare address.',
      );
      err.name = 'InsecureContext';
      throw err;
    }
    this.closeMic();
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation, noiseSuppression, autoGainControl, channelCount: 1 },
      video: false,
    });
    const ctx = this.ctx;
    this.stream = stream;
    this.source = ctx.createMediaStreamSource(stream);
    this.capture = new AudioWorkletNode(ctx, 's2s-capture', {
      numberOfInputs: 1,
      numberOfOutputs: 0,
      processorOptions: { chunkSamples: (24000 * CHUNK_MS) / 1000 },
    });
    this.capture.port.onmessage = (e) => {
      if (e.data.type === 'chunk') this.onChunk(e.data);
    };
    this.source.connect(this.capture);
    const [track] = stream.getAudioTracks();
    track.onended = () => this.onPlayback({ type: 'mic-ended' });
    if (ctx.state !== 'running') await ctx.resume();
    return track.getSettings ? track.getSettings() : {};
  }

  closeMic() {
    if (this.capture) {
      this.capture.port.postMessage({ type: 'stop' });
      this.capture.port.onmessage = null;
      this.capture = null;
    }
    if (this.source) {
      this.source.disconnect();
      this.source = null;
    }
    if (this.stream) {
      for (const t of this.stream.getTracks()) t.stop();
      this.stream = null;
    }
  }

  get micOpen() {
    return !!this.stream;
  }

  /** Queue reply audio (PCM16 at 24 kHz) of response `id`. */
  play(id, pcm16) {
    if (!this.player) return false;
    const samples = new Float32Array(pcm16.length);
    for (let i = 0; i < pcm16.length; i++) samples[i] = pcm16[i] / 32768;
    this.player.port.postMessage({ type: 'push', id, samples }, [samples.buffer]);
    return true;
  }

  /** Response `id` sent its last audio: play out what is buffered. */
  endResponse(id) {
    if (this.player) this.player.port.postMessage({ type: 'end', id });
  }

  /** Drop all queued reply audio now; resolves to {id, playedMs, discardedMs} of the reply cut. */
  flush() {
    if (!this.player) return Promise.resolve({ id: null, playedMs: 0, discardedMs: 0 });
    const token = ++this._flushToken;
    return new Promise((resolve) => {
      this._flushWaiters.set(token, resolve);
      this.player.port.postMessage({ type: 'flush', token });
    });
  }

  /** The page's clock (performance.now(), ms) of a context time, as the speaker outputs it. */
  perfTimeOf(ctxTime) {
    const ctx = this.ctx;
    if (ctx && ctx.getOutputTimestamp) {
      const ts = ctx.getOutputTimestamp();
      if (ts && ts.performanceTime > 0) return ts.performanceTime + (ctxTime - ts.contextTime) * 1000;
    }
    return null;
  }

  _playerMessage(m) {
    if (m.type === 'status') {
      this.status = m;
    } else if (m.type === 'flushed') {
      this.status = { ...this.status, buffered: 0, playing: false, id: null, idPlayedMs: 0 };
      const resolve = this._flushWaiters.get(m.token);
      this._flushWaiters.delete(m.token);
      if (resolve) resolve(m);
    }
    this.onPlayback(m);
  }
}
