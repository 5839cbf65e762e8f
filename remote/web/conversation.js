// The conversation view: user turns (the partial transcript, dimmed, settles into the final one)
// and agent replies that stream in as written; the part already spoken is shown in full colour as
// playback goes on, and an interrupted reply keeps the heard part, strikes the rest through and
// says where it was cut. Every method is idempotent: events may repeat or come late.

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

export class Conversation {
  constructor(root, hint) {
    this.root = root;
    this.hint = hint;
    this.users = new Map(); // item id -> {row, text, final}
    this.agents = new Map(); // response id -> {row, text, heard, status, cutMs, spokenChars}
  }

  _add(row) {
    if (this.hint) this.hint.hidden = true;
    const stick = this.root.scrollHeight - this.root.scrollTop - this.root.clientHeight < 40;
    this.root.appendChild(row);
    while (this.root.children.length > 400) this.root.removeChild(this.root.children[1]); // bounded
    if (stick) this.root.scrollTop = this.root.scrollHeight;
  }

  _scroll() {
    this.root.scrollTop = this.root.scrollHeight;
  }

  user(itemId) {
    let u = this.users.get(itemId);
    if (!u) {
      const row = el('div', 'turn user partial');
      row.dataset.item = itemId;
      row.append(el('span', 'who', 'you'), el('span', 'text', '…'));
      u = { row, text: '', final: false };
      this.users.set(itemId, u);
      this._add(row);
    }
    return u;
  }

  partial(itemId, text) {
    const u = this.user(itemId);
    if (u.final) return;
    u.text = text;
    u.row.querySelector('.text').textContent = text || '…';
  }

  final(itemId, text) {
    const u = this.user(itemId);
    u.text = text;
    u.final = true;
    u.row.classList.remove('partial');
    const t = u.row.querySelector('.text');
    t.textContent = text || '∅ (nothing recognised)';
    t.classList.toggle('empty', !text);
    this._scroll();
  }

  agent(responseId) {
    let a = this.agents.get(responseId);
    if (!a) {
      const row = el('div', 'turn agent streaming');
      row.dataset.response = responseId;
      const body = el('span', 'text');
      body.append(el('span', 'spoken'), el('span', 'unspoken', '…'), el('span', 'cut-rest'));
      row.append(el('span', 'who', 'agent'), body, el('span', 'mark'));
      a = { row, text: '', heard: null, status: 'in_progress', cutMs: null, spokenChars: 0 };
      this.agents.set(responseId, a);
      this._add(row);
    }
    return a;
  }

  replyText(responseId, delta) {
    const a = this.agent(responseId);
    if (a.status === 'cancelled') return;
    a.text += delta;
    this._render(a);
    this._scroll();
  }

  /** Playback reached `fraction` (0..1) of this reply's audio received so far. */
  spoken(responseId, fraction, complete) {
    const a = this.agents.get(responseId);
    if (!a || a.status === 'cancelled') return;
    const n = complete && fraction >= 0.999 ? a.text.length : Math.floor(a.text.length * Math.max(0, Math.min(1, fraction)));
    if (n > a.spokenChars) {
      a.spokenChars = n;
      this._render(a);
    }
  }

  done(responseId, status, text, heard, playedMs) {
    const a = this.agent(responseId);
    if (text) a.text = text;
    if (status === 'cancelled') {
      if (a.status !== 'cancelled' || heard) {
        if (heard || a.heard === null) a.heard = heard || '';
        if (playedMs || a.cutMs === null) a.cutMs = playedMs || 0;
      }
      a.status = 'cancelled';
    } else if (a.status !== 'cancelled') {
      a.status = status;
    }
    this._render(a);
  }

  /** The user cut the reply (a key or barge-in) after `playedMs`; `heard` if the engine said it. */
  cut(responseId, playedMs, heard) {
    const a = this.agents.get(responseId);
    if (!a) return;
    if (a.status === 'cancelled' && heard === undefined) return;
    a.cutMs = playedMs;
    if (heard !== undefined && heard !== null) a.heard = heard;
    else if (a.heard === null) a.heard = a.text.slice(0, a.spokenChars).replace(/\S*$/, '').trim();
    a.status = 'cancelled';
    this._render(a);
  }

  _render(a) {
    const row = a.row;
    const [spoken, unspoken, rest] = row.querySelectorAll('.text > span');
    const mark = row.querySelector('.mark');
    row.classList.toggle('streaming', a.status === 'in_progress');
    row.classList.toggle('interrupted', a.status === 'cancelled');
    row.classList.toggle('failed', a.status === 'failed');
    if (a.status === 'cancelled') {
      const heard = (a.heard || '').trim();
      const full = a.text.trim();
      const tail = heard && full.startsWith(heard) ? full.slice(heard.length) : heard ? '' : full;
      spoken.textContent = heard;
      unspoken.textContent = '';
      rest.textContent = tail.trim() ? (heard && !tail.startsWith(' ') ? '' : ' ') + tail.trim() : '';
      mark.textContent = `✂ interrupted at ${((a.cutMs || 0) / 1000).toFixed(1)} s`;
    } else {
      const n = a.status === 'completed' && a.spokenChars >= a.text.length ? a.text.length : a.spokenChars;
      spoken.textContent = a.text.slice(0, n);
      unspoken.textContent = a.text.slice(n) || (a.text ? '' : '…');
      rest.textContent = '';
      mark.textContent = a.status === 'failed' ? '✕ failed' : '';
    }
  }

  clear() {
    this.users.clear();
    this.agents.clear();
    for (const row of [...this.root.querySelectorAll('.turn')]) row.remove();
    if (this.hint) this.hint.hidden = false;
  }
}
