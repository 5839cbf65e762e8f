// The latency panel: the last turn's stages from s2s.turn.metrics as bars (the same stages as
// engine/metrics.py STAGES; they add up to the engine's voice-to-voice), the network legs of that
// turn, and the page's own voice-to-voice; p50 / p95 of each row over the session.

export const STAGES = [
  ['eot_wait_ms', 'end-of-turn wait', 'end of your speech → the engine decides your turn ended (the silence it waits for)'],
  ['asr_ms', 'ASR final', 'end of turn → the final transcript'],
  ['llm_first_token_ms', 'LLM first token', 'transcript → the first token of the reply'],
  ['first_sentence_ms', 'first sentence', 'first token → the first piece of text to speak'],
  ['tts_ms', 'TTS first audio', 'that text → its first synthesised audio'],
  ['out_ms', 'audio out', 'first synthesised audio → handed to the network'],
];
const ROWS = [
  ...STAGES.map(([key, label, title]) => ({ key, label, title, kind: 'stage' })),
  { key: 'net_up_ms', label: '≈ ↑ mic → engine', kind: 'net',
    title: 'the audio that ended your turn, page → engine (one way: the clock offset comes from s2s.ping)' },
  { key: 'net_down_ms', label: '≈ ↓ engine → page', kind: 'net', title: 'the first reply audio, engine → page (one way)' },
  { key: 'voice_to_voice_ms', label: 'voice-to-voice, engine', kind: 'total',
    title: "end of your speech → first reply audio out of the engine (the engine's clock)" },
  { key: 'page_v2v_ms', label: 'voice-to-voice, this page', kind: 'total page',
    title: "end of your speech leaving this page's microphone worklet → first reply sample at the speaker (this page's clock)" },
];
const HISTORY = 200; // turns kept for the percentiles

export function percentile(values, q) {
  if (!values.length) return null;
  const s = [...values].sort((a, b) => a - b);
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return s[lo] + (s[hi] - s[lo]) * (pos - lo);
}

function fmt(ms) {
  return ms === null || ms === undefined || Number.isNaN(ms) ? '—' : `${Math.round(ms)}`;
}

export class LatencyPanel {
  constructor(tbody, countEl) {
    this.tbody = tbody;
    this.countEl = countEl;
    this.history = new Map(ROWS.map((r) => [r.key, []]));
    this.last = {};
    this.turns = 0;
    this.cells = new Map();
    for (const r of ROWS) {
      const tr = document.createElement('tr');
      tr.className = r.kind;
      tr.dataset.key = r.key;
      const label = document.createElement('td');
      label.className = 'label';
      label.textContent = r.label;
      label.title = r.title;
      const barCell = document.createElement('td');
      barCell.className = 'bar-cell';
      const bar = document.createElement('div');
      bar.className = 'bar';
      barCell.appendChild(bar);
      const [ms, p50, p95] = ['ms', 'p50', 'p95'].map((c) => {
        const td = document.createElement('td');
        td.className = `num ${c}`;
        td.textContent = '—';
        return td;
      });
      tr.append(label, barCell, ms, p50, p95);
      this.tbody.appendChild(tr);
      this.cells.set(r.key, { bar, ms, p50, p95 });
    }
  }

  /** One turn's figures: {key: ms or null}; a later call for the same turn may add keys. */
  show(values, newTurn = true) {
    if (newTurn) {
      this.turns += 1;
      this.last = {};
    }
    Object.assign(this.last, values);
    for (const [key, v] of Object.entries(values)) {
      const h = this.history.get(key);
      if (h && typeof v === 'number') {
        h.push(v);
        if (h.length > HISTORY) h.shift();
      }
    }
    this._render();
  }

  _render() {
    const scale = Math.max(1, ...ROWS.map((r) => this.last[r.key] || 0));
    for (const r of ROWS) {
      const c = this.cells.get(r.key);
      const v = this.last[r.key];
      const h = this.history.get(r.key);
      c.ms.textContent = fmt(v);
      c.p50.textContent = fmt(percentile(h, 0.5));
      c.p95.textContent = fmt(percentile(h, 0.95));
      c.bar.style.width = typeof v === 'number' ? `${Math.max(0.5, (100 * v) / scale)}%` : '0';
    }
    this.countEl.textContent = `${this.turns} turn${this.turns === 1 ? '' : 's'}`;
  }

  /** The figures, for tests and the benchmark. */
  snapshot() {
    return { last: { ...this.last }, turns: this.turns, history: Object.fromEntries([...this.history].map(([k, v]) => [k, [...v]])) };
  }
}
