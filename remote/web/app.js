// The browser client of `s2s-engine --headless`: wires the microphone and speaker (audio.js), the
// Realtime connection (realtime.js), the conversation (conversation.js) and the latency panel
// (latency.js) to the page, and maps keys to actions as the TUI does. See docs/web.md.
//
// Tests and the benchmark read `window.s2sTest.snapshot()`: samples played by the playback
// worklet, agent state, connection state, transcripts, replies, each turn's voice-to-voice (the
// engine's and this page's), barge-ins and bytes on the wire.

import { AudioIO, micErrorMessage } from './audio.js';
import { OPUS, OpusDown, OpusUp, label, opusUnavailable, parseChoice, wireFormats } from './codec.js';
import { Conversation } from './conversation.js';
import { LatencyPanel, STAGES } from './latency.js';
import { RealtimeConnection } from './realtime.js';

const WIRE_RATE = 24000;
const TOKEN_KEY = 's2s.token';
const CHUNK_LOG = 3000; // (end sample, page time) of the last 60 s of microphone chunks
const MAX_SOCKET_BACKLOG = 1 << 20; // bytes queued in the socket before mic audio is dropped
const EVENT_LOG = 500;

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------------------- token

function takeFragmentToken() {
  const h = location.hash.slice(1);
  if (!h) return;
  const params = new URLSearchParams(h);
  if (!params.has('token')) return;
  const t = params.get('token').trim();
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  else sessionStorage.removeItem(TOKEN_KEY);
  params.delete('token');
  const rest = params.toString();
  // out of the address bar and the history: only this tab's sessionStorage keeps it
  history.replaceState(null, '', location.pathname + location.search + (rest ? `#${rest}` : ''));
}

const getToken = () => sessionStorage.getItem(TOKEN_KEY);

// ---------------------------------------------------------------------------- state

const S = {
  started: false, // the user pressed Start (audio may run)
  muted: false,
  ptt: false,
  recording: false, // push-to-talk: space held
  userSpeaking: false,
  awaiting: false, // a user turn ended; no response yet
  activeResponse: null, // key of the response the server is generating
  gen: 0, // connection number: response ids restart on each connection
  sentSamples: 0, // 24 kHz samples sent on this connection (the session's audio clock)
  chunkLog: [],
  pttStartSamples: 0,
  pendingSpeechEnd: null, // page time of the end of the user's last turn, until its response starts
  itemOf: new Map(), // response key -> assistant item id
  replies: new Map(), // response key -> {samples, done, firstReadMs, speechEndMs, pageV2V, engineV2V, text, status}
  charsPerMs: 0.012, // reply text per ms of audio (learned), for showing the spoken part
  droppingMic: false,
  replySamples: 0, // 24 kHz reply samples received, all responses
  choice: parseChoice(new URLSearchParams(location.search).get('format') || 'opus'), // what the user asked for
  opusWhy: 'not checked yet', // why this browser cannot do Opus (null: it can)
  formats: wireFormats({ type: 'audio/pcm' }), // what this page asked the session for (input, output)
  up: null, // OpusUp while the input format is Opus
  down: new Map(), // response key -> OpusDown
  outFormatOf: new Map(), // response key -> the output format it started with
  wireNote: '', // why the page is not on the format asked for
  offered: null, // the session as session.created gave it (the formats the server offers)
};
/** The select's value for a choice: `opus:16`, `pcm`. */
function choiceValue(choice) {
  return choice.type === OPUS ? `opus:${choice.bitrate}` : 'pcm';
}
const opusChecked = opusUnavailable(S.choice.bitrate).then((why) => {
  S.opusWhy = why;
});

// what tests and the benchmark read
const T = {
  events: [],
  eventCounts: {},
  transcripts: [],
  turns: [],
  bargeIns: [],
  interrupts: [],
  micSettings: null,
  micErrors: 0,
};

const key = (rid) => `${S.gen}:${rid}`;

// ---------------------------------------------------------------------------- UI helpers

const conv = new Conversation($('conversation'), $('hint'));
const latency = new LatencyPanel(document.querySelector('#latency tbody'), $('turns'));
let problemKey = null;

function problem(text, kind = 'warning', k = 'general') {
  const p = $('problem');
  p.textContent = text;
  p.dataset.kind = kind;
  p.hidden = false;
  problemKey = k;
}

function clearProblem(k) {
  if (k === undefined || problemKey === k) {
    $('problem').hidden = true;
    $('problem').textContent = '';
    problemKey = null;
  }
}

function agentState() {
  const st = audio.status;
  if (st.buffered > 0 || st.playing) return ['speaking', 'agent speaking'];
  if (S.userSpeaking) return ['user', 'you are speaking'];
  if (S.recording) return ['recording', 'recording: release space to send'];
  if (S.awaiting || S.activeResponse) return ['thinking', 'thinking…'];
  if (!audio.micOpen) return ['idle', S.started ? 'microphone off' : 'press Start'];
  if (S.muted) return ['muted', 'muted'];
  if (S.ptt) return ['ptt', 'push-to-talk: hold space'];
  return ['listening', 'listening'];
}

function renderState() {
  const [k, text] = agentState();
  const el = $('state');
  if (el.dataset.state !== k) {
    el.dataset.state = k;
    el.textContent = text;
  }
  $('mute').classList.toggle('on', S.muted);
  $('ptt').classList.toggle('on', S.ptt);
  $('talk').disabled = !S.ptt;
  $('talk').classList.toggle('on', S.recording);
  $('start').textContent = audio.micOpen ? 'Stop' : 'Start';
}

function renderConn(s) {
  const pill = $('conn');
  pill.dataset.status = s.status;
  if (s.status === 'open') pill.textContent = 'connected';
  else if (s.status === 'connecting') pill.textContent = s.attempt ? `connecting (attempt ${s.attempt + 1})…` : 'connecting…';
  else if (s.status === 'reconnecting') {
    const left = Math.max(0, (s.retryAt - performance.now()) / 1000);
    pill.textContent = `${s.kind === 'full' ? 'server full, retrying' : 'reconnecting'} in ${left.toFixed(left < 10 ? 1 : 0)} s`;
  } else if (s.status === 'auth') pill.textContent = 'token needed';
  else if (s.status === 'closed') pill.textContent = 'disconnected: click to connect';
  else pill.textContent = s.status;
}

// ---------------------------------------------------------------------------- audio

const audio = new AudioIO({ onChunk, onPlayback });

function b64FromBytes(bytes) {
  if (bytes.toBase64) return bytes.toBase64();
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

function bytesFromB64(b64) {
  if (Uint8Array.fromBase64) return Uint8Array.fromBase64(b64);
  const s = atob(b64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

function onChunk({ pcm, rms }) {
  const db = rms > 1e-5 ? 20 * Math.log10(rms) : -Infinity; // below -100 dBFS: silence
  $('level').style.width = `${Math.max(0, Math.min(100, ((db + 60) / 60) * 100))}%`;
  $('level-db').textContent = Number.isFinite(db) ? `${db.toFixed(0)} dB` : '–∞ dB';
  if (!conn.open || (S.ptt && !S.recording)) return;
  if (conn.ws.bufferedAmount > MAX_SOCKET_BACKLOG) {
    // the network cannot keep up: drop microphone audio rather than queue it without bound
    if (!S.droppingMic) problem('The connection is too slow: microphone audio is being dropped.', 'warning', 'backlog');
    S.droppingMic = true;
    return;
  }
  if (S.droppingMic) {
    S.droppingMic = false;
    clearProblem('backlog');
  }
  const data = S.muted ? new Int16Array(pcm.length) : pcm; // muted: silence, so a turn in progress ends
  if (S.up) S.up.push(data); // packets go out as the encoder gives them (sendPacket)
  else conn.send({ type: 'input_audio_buffer.append', audio: b64FromBytes(new Uint8Array(data.buffer)) });
  S.sentSamples += data.length;
  S.chunkLog.push([S.sentSamples, performance.now()]);
  if (S.chunkLog.length > CHUNK_LOG) S.chunkLog.splice(0, S.chunkLog.length - CHUNK_LOG);
}

/** The page time at which the session's audio reached `ms` (when that sample left the capture worklet). */
function pageTimeOfAudioMs(ms) {
  const sample = (ms * WIRE_RATE) / 1000;
  for (const [end, t] of S.chunkLog) {
    if (end >= sample) return t - ((end - sample) * 1000) / WIRE_RATE;
  }
  return null;
}

function onPlayback(m) {
  if (m.type === 'started') {
    const r = S.replies.get(m.id);
    if (r) {
      const at = audio.perfTimeOf(m.ctxTime) ?? performance.now();
      r.firstPlayedMs = at;
      if (r.speechEndMs !== null && r.speechEndMs !== undefined) {
        r.pageV2V = at - r.speechEndMs;
        if (r.metricsShown) latency.show({ page_v2v_ms: r.pageV2V }, false);
        recordTurn(m.id);
      }
    }
  } else if (m.type === 'status') {
    if (m.id) spokenProgress(m.id, m.idPlayedMs);
  } else if (m.type === 'finished') {
    const r = S.replies.get(m.id);
    if (r && r.audioDone) {
      conv.spoken(m.id, 1, true);
      learnRate(r, m.playedMs);
    }
  } else if (m.type === 'mic-ended') {
    problem('The microphone stopped (unplugged?). Press Start to open it again.', 'error', 'mic');
    audio.closeMic();
  }
  renderState();
}

function spokenProgress(k, playedMs) {
  const r = S.replies.get(k);
  if (!r) return;
  const receivedMs = (1000 * r.samples) / WIRE_RATE;
  if (r.audioDone && receivedMs > 0) conv.spoken(k, playedMs / receivedMs, playedMs >= receivedMs - 1);
  else if (r.textLength > 0) conv.spoken(k, Math.min(1, (playedMs * S.charsPerMs) / r.textLength), false);
}

function learnRate(r, playedMs) {
  const ms = (1000 * r.samples) / WIRE_RATE;
  if (ms > 500 && r.textLength > 0 && playedMs >= ms - 50) S.charsPerMs = 0.7 * S.charsPerMs + (0.3 * r.textLength) / ms;
}

// ---------------------------------------------------------------------------- actions

async function startAudio() {
  S.started = true;
  try {
    await audio.start();
  } catch (err) {
    problem(String(err.message || err), 'error', 'audio');
    return false;
  }
  return true;
}

async function openMic() {
  if (S.opening) return; // a second click while the browser asks for the microphone
  S.opening = true;
  try {
    await openMicNow();
  } finally {
    S.opening = false;
  }
}

async function openMicNow() {
  if (!(await startAudio())) return;
  try {
    T.micSettings = await audio.openMic({
      echoCancellation: $('aec').checked,
      noiseSuppression: $('ns').checked,
      autoGainControl: $('agc').checked,
    });
    clearProblem('mic');
  } catch (err) {
    T.micErrors += 1;
    problem(err.name === 'InsecureContext' ? err.message.replace('PORT', location.port || '8765') : micErrorMessage(err), 'error', 'mic');
  }
  renderState();
}

async function toggleStart() {
  if (audio.micOpen) {
    audio.closeMic();
    renderState();
    return;
  }
  if (conn.state.status === 'closed') conn.connect();
  await openMic();
}

function toggleMute() {
  S.muted = !S.muted;
  renderState();
}

function sendTurnDetection() {
  conn.send({
    type: 'session.update',
    session: {
      type: 'realtime',
      audio: {
        input: { format: S.formats.input, turn_detection: S.ptt ? null : { type: 'server_vad', create_response: true } },
        output: { format: S.formats.output },
      },
    },
  });
}

// ---------------------------------------------------------------------------- the wire's format

/** After session.created: Opus both ways when asked for, this browser codes it and the server offers it. */
function chooseFormats(session) {
  const offered = (session.s2s && session.s2s.formats) || [];
  let choice = S.choice;
  S.wireNote = '';
  if (choice.type === OPUS && S.opusWhy) {
    S.wireNote = `PCM: ${S.opusWhy}`;
    choice = { type: 'audio/pcm' };
  } else if (choice.type === OPUS && !offered.includes(OPUS)) {
    S.wireNote = 'PCM: the server does not offer Opus';
    choice = { type: 'audio/pcm' };
  }
  setFormats(wireFormats(choice));
}

function setFormats(formats) {
  S.formats = formats;
  if (S.up) S.up.close();
  S.up = formats.input.type === OPUS ? new OpusUp(formats.input.bitrate, sendPacket, codecFailed) : null;
}

function sendPacket(bytes) {
  if (conn.open) conn.send({ type: 'input_audio_buffer.append', audio: b64FromBytes(bytes) });
}

function codecFailed(err) {
  problem(`Opus failed in this browser (${err.message || err}): back to PCM.`, 'warning', 'codec');
  S.choice = { type: 'audio/pcm' };
  $('format-choice').value = choiceValue(S.choice); // the select says what the page now asks for
  S.wireNote = `PCM: Opus failed (${err.message || err})`;
  setFormats(wireFormats(S.choice));
  sendTurnDetection();
}

/** Reply audio of response `k`, PCM16 at 24 kHz (decoded, if it came as Opus). */
function playReply(k, pcm, t) {
  const r = S.replies.get(k);
  if (!r || r.status === 'cancelled' || r.cut) return; // cut already: late audio is not played
  if (r.firstReadMs === undefined) r.firstReadMs = t;
  r.samples += pcm.length;
  S.replySamples += pcm.length;
  if (!audio.play(k, pcm) && !S.warnedSilent) {
    S.warnedSilent = true;
    problem('Press Start to hear the replies (browsers start sound only after a click).', 'info', 'audio');
  }
}

function togglePtt() {
  S.ptt = !S.ptt;
  S.recording = false;
  sendTurnDetection();
  renderState();
}

function talkDown() {
  if (!S.ptt || S.recording) return;
  // recording from now (a quick tap must find it on release), after a clean input buffer
  S.recording = true;
  S.pttStartSamples = S.sentSamples;
  conn.send({ type: 'input_audio_buffer.clear' });
  interrupt(); // talking over the agent stops it
  renderState();
}

function talkUp() {
  if (!S.recording) return;
  S.recording = false;
  if (S.sentSamples - S.pttStartSamples < WIRE_RATE / 5) {
    problem('Hold space (or the button) while you speak, then release.', 'info', 'ptt');
  } else {
    if (S.up) S.up.release(); // a held frame of speech goes before the commit
    conn.send({ type: 'input_audio_buffer.commit' });
    conn.send({ type: 'response.create' });
    S.pendingSpeechEnd = performance.now();
    S.awaiting = true;
  }
  renderState();
}

/** Stop the agent now: playback flushed, the engine told to cancel and how much was heard. */
async function interrupt(reason = 'key') {
  const active = S.activeResponse;
  const before = { ...audio.status };
  const f = await audio.flush();
  // on barge-in the engine cancels by itself (it heard the speech too); a key or a button asks it
  if (active && reason !== 'barge-in') conn.send({ type: 'response.cancel' });
  if (f.id && S.itemOf.has(f.id)) {
    conn.send({ type: 'conversation.item.truncate', item_id: S.itemOf.get(f.id), content_index: 0, audio_end_ms: Math.round(f.playedMs) });
  }
  const rid = f.id || active;
  if (rid && (f.id || active)) conv.cut(rid, f.playedMs);
  if (rid) {
    // Opus replies decode asynchronously: frames still in the decoder would refill the buffer
    const r = S.replies.get(rid);
    if (r) r.cut = true;
    const dec = S.down.get(rid);
    if (dec) { S.down.delete(rid); dec.close(); }
  }
  const rec = { reason, id: rid, playedMs: f.playedMs, discardedMs: f.discardedMs, bufferedBefore: before.buffered, at: performance.now() };
  (reason === 'barge-in' ? T.bargeIns : T.interrupts).push(rec);
  if (T.bargeIns.length > 100) T.bargeIns.shift();
  if (T.interrupts.length > 100) T.interrupts.shift();
  renderState();
  return rec;
}

async function reset() {
  await interrupt();
  conn.send({ type: 's2s.session.reset' });
  conv.clear();
  S.awaiting = false;
  renderState();
}

async function sendText(text) {
  if (!text.trim()) return;
  await startAudio(); // a click or Enter is a gesture: replies can be heard
  if (S.activeResponse || audio.status.buffered > 0) await interrupt();
  if (!conn.send({ type: 'conversation.item.create', item: { type: 'message', role: 'user', content: [{ type: 'input_text', text }] } })) {
    problem('Not connected: the message was not sent.', 'warning', 'send');
    return;
  }
  conn.send({ type: 'response.create' });
  S.pendingSpeechEnd = null; // a text turn has no end of speech
  S.awaiting = true;
  renderState();
}

// ---------------------------------------------------------------------------- server events

function logEvent(type, t) {
  T.eventCounts[type] = (T.eventCounts[type] || 0) + 1;
  T.events.push([type, Math.round(t)]);
  if (T.events.length > EVENT_LOG) T.events.shift();
}

function recordTurn(k) {
  const r = S.replies.get(k);
  if (!r || !r.metricsShown) return;
  const row = T.turns.find((x) => x.key === k);
  const data = { key: k, status: r.status, engineV2V: r.engineV2V, pageV2V: r.pageV2V ?? null, network: r.network, stages: r.stages };
  if (row) Object.assign(row, data);
  else {
    T.turns.push(data);
    if (T.turns.length > 500) T.turns.shift();
  }
}

function onEvent(e, t) {
  logEvent(e.type, t);
  switch (e.type) {
    case 'session.created':
      S.offered = e.session;
      $('session-info').textContent = `${e.session.id} · ${(e.session.s2s && e.session.s2s.profile) || ''}`;
      opusChecked.then(() => { // PCM until then (the session starts in PCM)
        chooseFormats(e.session);
        sendTurnDetection();
      });
      break;
    case 'session.updated':
      S.session = e.session;
      break;
    case 'error':
      S.lastError = e.error;
      if (['unsupported_audio_format', 'codec_unavailable'].includes(e.error && e.error.code)) {
        S.wireNote = `PCM: the server refused ${label(S.formats.input)} (${e.error.message})`;
        setFormats(wireFormats({ type: 'audio/pcm' }));
        sendTurnDetection();
      }
      break;
    case 'input_audio_buffer.speech_started':
      S.userSpeaking = true;
      conv.partial(`${S.gen}:${e.item_id}`, '');
      if (audio.status.buffered > 0 || audio.status.playing || S.activeResponse) interrupt('barge-in');
      break;
    case 'input_audio_buffer.speech_stopped':
      S.userSpeaking = false;
      S.awaiting = true;
      S.pendingSpeechEnd = pageTimeOfAudioMs(e.audio_end_ms);
      break;
    case 'conversation.item.input_audio_transcription.delta':
      conv.partial(`${S.gen}:${e.item_id}`, e.s2s_partial || '');
      break;
    case 'conversation.item.input_audio_transcription.completed':
      conv.final(`${S.gen}:${e.item_id}`, e.transcript || '');
      T.transcripts.push(e.transcript || '');
      if (T.transcripts.length > 200) T.transcripts.shift();
      if (!(e.transcript || '').trim()) S.awaiting = false; // nothing recognised: no reply comes
      break;
    case 'conversation.item.added': {
      const item = e.item || {};
      if (item.role === 'user') {
        for (const part of item.content || []) {
          if (part.type === 'input_text') conv.final(`${S.gen}:${item.id}`, part.text || '');
          else conv.user(`${S.gen}:${item.id}`);
        }
      }
      break;
    }
    case 'response.created': {
      const k = key(e.response.id);
      S.activeResponse = k;
      S.awaiting = false;
      S.itemOf.set(k, `item_${e.response.id}`);
      S.outFormatOf.set(k, S.session ? S.session.audio.output.format : { type: 'audio/pcm' });
      if (S.outFormatOf.size > 64) S.outFormatOf.delete(S.outFormatOf.keys().next().value);
      S.replies.set(k, { samples: 0, textLength: 0, audioDone: false, speechEndMs: S.pendingSpeechEnd, status: 'in_progress' });
      S.pendingSpeechEnd = null;
      if (S.replies.size > 200) S.replies.delete(S.replies.keys().next().value);
      conv.agent(k);
      break;
    }
    case 'response.output_audio_transcript.delta': {
      const k = key(e.response_id);
      const r = S.replies.get(k);
      if (r) r.textLength += e.delta.length;
      conv.replyText(k, e.delta);
      break;
    }
    case 'response.output_audio.delta': {
      const k = key(e.response_id);
      const r = S.replies.get(k);
      if (!r || r.status === 'cancelled' || r.cut) break; // cut already: late audio is not played
      const bytes = bytesFromB64(e.delta);
      const fmt = S.outFormatOf.get(k);
      if (fmt && fmt.type === OPUS) {
        if (!S.down.has(k)) S.down.set(k, new OpusDown((pcm) => playReply(k, pcm, t), codecFailed));
        S.down.get(k).push(bytes);
      } else {
        playReply(k, new Int16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >> 1), t);
      }
      break;
    }
    case 'response.output_audio.done': {
      const k = key(e.response_id);
      const r = S.replies.get(k);
      if (r) r.audioDone = true;
      const dec = S.down.get(k);
      S.down.delete(k);
      if (dec) dec.dec.flush().then(() => { dec.close(); audio.endResponse(k); }, () => audio.endResponse(k));
      else audio.endResponse(k);
      break;
    }
    case 'conversation.item.truncated': {
      // the engine cut a reply it had finished sending (barge-in while it was still playing)
      const k = [...S.itemOf].find(([, item]) => item === e.item_id);
      if (k) conv.cut(k[0], e.audio_end_ms);
      break;
    }
    case 'response.done': {
      const resp = e.response || {};
      const k = key(resp.id);
      const s2s = resp.s2s || {};
      const r = S.replies.get(k);
      if (r) r.status = resp.status;
      if (S.activeResponse === k) S.activeResponse = null;
      if (resp.status === 'cancelled' && audio.status.id === k) audio.flush();
      conv.done(k, resp.status, s2s.text || '', s2s.heard_text || '', s2s.played_ms || 0);
      if (resp.status === 'failed') {
        const err = (resp.status_details && resp.status_details.error) || {};
        problem(`The reply failed: ${err.message || err.code || 'engine error'}`, 'warning', 'engine');
      }
      break;
    }
    case 's2s.turn.metrics': {
      const k = key(e.response_id);
      const m = e.metrics || {};
      const r = S.replies.get(k) || {};
      const legs = conn.networkLegs(e.network, r.firstReadMs);
      const values = { voice_to_voice_ms: m.voice_to_voice_ms ?? null, page_v2v_ms: r.pageV2V ?? null };
      for (const [name] of STAGES) values[name] = m[name] ?? null;
      values.net_up_ms = legs ? legs.up : null;
      values.net_down_ms = legs ? legs.down : null;
      latency.show(values);
      $('turn-end').textContent = turnEndCaption(m);
      Object.assign(r, { metricsShown: true, engineV2V: m.voice_to_voice_ms ?? null, network: legs, stages: values });
      if (S.replies.has(k)) recordTurn(k);
      break;
    }
    case 's2s.stats':
      renderStats(e);
      break;
    case 's2s.pong':
      $('rtt').textContent = conn.rttMs === null ? '' : `rtt ${conn.rttMs.toFixed(conn.rttMs < 10 ? 1 : 0)} ms`;
      break;
    case 's2s.session.reset_done':
      S.activeResponse = null;
      break;
    case 'error': {
      const err = e.error || {};
      if (err.code === 'response_cancel_not_active') break; // an interrupt raced the reply's end
      if (['session_limit_reached', 'server_shutting_down', 'idle_timeout'].includes(err.code)) break; // the close says it
      problem(`${err.code || 'error'}: ${err.message || ''}`, err.type === 'server_error' ? 'error' : 'warning', 'engine');
      if (err.s2s_stage) S.awaiting = false;
      break;
    }
    default:
      break;
  }
  renderState();
}

/** What ended the turn and what ran inside the silence (as the TUI's dimmed lines). */
function turnEndCaption(m) {
  const parts = [];
  if (m.turn_policy) {
    let p = `turn ended by ${m.turn_policy}`;
    if (typeof m.turn_probability === 'number') p += `, p(complete) ${m.turn_probability.toFixed(2)}`;
    if (m.resumed) p += `, resumed ×${m.resumed}`;
    parts.push(p);
  }
  if (m.asr_speculative && m.asr_decode_ms) parts.push(`ASR decoded in the silence: ${Math.round(m.asr_decode_ms)} ms`);
  return parts.join(' · ');
}

function renderStats(e) {
  const gpu = e.gpu || {};
  const el = $('gpu');
  if (gpu.used_mb != null && gpu.total_mb != null) {
    el.textContent = `GPU ${(gpu.used_mb / 1024).toFixed(1)} / ${(gpu.total_mb / 1024).toFixed(1)} GB`;
    el.dataset.gpu = 'yes';
  } else {
    el.textContent = 'CPU (no GPU)';
    el.dataset.gpu = 'no';
  }
  const models = Object.entries(e.models || {})
    .map(([stage, info]) => `${stage} ${(info && (info.model || info.backend)) || '?'}`)
    .join(' · ');
  $('engine').textContent = [e.profile, e.device, models].filter(Boolean).join(' · ');
  if (e.sessions && e.session) {
    $('session-info').textContent = `${e.session.id} · ${e.sessions.active}/${e.sessions.max} sessions`;
  }
}

// ---------------------------------------------------------------------------- connection

takeFragmentToken();
const base = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}`;
const conn = new RealtimeConnection({
  url: `${base}/v1/realtime`,
  readyUrl: `${location.origin}/readyz`,
  getToken,
  onEvent,
  onOpen() {
    S.gen += 1;
    S.sentSamples = 0;
    S.chunkLog = [];
    S.activeResponse = null;
    S.awaiting = false;
    S.userSpeaking = false;
    S.itemOf.clear();
    S.session = null;
    if (S.gen > 1) {
      const note = document.createElement('div');
      note.className = 'divider';
      note.textContent = 'reconnected: a new session (the engine has forgotten the conversation)';
      $('conversation').appendChild(note);
    }
    clearProblem('conn'); // the session.update follows session.created (chooseFormats)
  },
  onState(s) {
    renderConn(s);
    if (s.status === 'reconnecting') problem(`${capital(s.reason)}; reconnecting.`, 'warning', 'conn');
    else if (s.status === 'auth') {
      problem(s.reason, 'error', 'conn');
      askToken(s.reason);
    } else if (s.status === 'closed') problem(s.reason, 'warning', 'conn');
    S.userSpeaking = false;
    renderState();
  },
});

const capital = (s) => (s ? s[0].toUpperCase() + s.slice(1) : s);

function askToken(reason) {
  const d = $('token-dialog');
  $('token-reason').textContent = reason || '';
  $('token').value = '';
  if (!d.open) d.showModal();
  $('token').focus();
}

// ---------------------------------------------------------------------------- wiring

$('start').addEventListener('click', toggleStart);
$('mute').addEventListener('click', toggleMute);
$('ptt').addEventListener('click', togglePtt);
$('interrupt').addEventListener('click', () => interrupt());
$('reset').addEventListener('click', reset);
$('help-button').addEventListener('click', () => $('help').showModal());
$('help-close').addEventListener('click', () => $('help').close());
$('talk').addEventListener('pointerdown', talkDown);
$('talk').addEventListener('pointerup', talkUp);
$('talk').addEventListener('pointerleave', talkUp);
$('conn').addEventListener('click', () => {
  if (conn.state.status === 'closed') conn.connect();
});
$('format-choice').value = choiceValue(S.choice);
$('format-choice').addEventListener('change', () => {
  // the wire's format, now: the address keeps it for a reload; the session is asked again
  const value = $('format-choice').value;
  S.choice = parseChoice(value);
  const url = new URL(location.href);
  url.searchParams.set('format', value);
  history.replaceState(null, '', url);
  opusChecked.then(() => {
    if (!conn.open || !S.offered) return; // the next session.created chooses
    chooseFormats(S.offered);
    sendTurnDetection();
    renderState();
  });
});
for (const id of ['aec', 'ns', 'agc']) {
  $(id).addEventListener('change', () => {
    if (audio.micOpen) openMic(); // re-open with the new switches
  });
}
$('text-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const text = $('text').value;
  $('text').value = '';
  sendText(text);
});
$('token-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const t = $('token').value.trim();
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  $('token-dialog').close();
  conn.attempt = 0;
  conn.close();
  conn.connect();
});
$('token-forget').addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  $('token').value = '';
});
$('token-cancel').addEventListener('click', () => $('token-dialog').close());
$('token-button').addEventListener('click', () => askToken(getToken() ? 'A token is set for this tab.' : 'No token is set.'));

document.addEventListener('keydown', (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.target.closest && e.target.closest('input, textarea, select, dialog')) return;
  if (document.querySelector('dialog[open]')) return;
  switch (e.key) {
    case 'm':
      toggleMute();
      break;
    case 't':
      togglePtt();
      break;
    case ' ':
      if (S.ptt) {
        e.preventDefault();
        if (!e.repeat) talkDown();
      }
      break;
    case 'i':
    case 'Escape':
      interrupt();
      break;
    case 'r':
      reset();
      break;
    case '?':
      $('help').showModal();
      break;
    default:
      return;
  }
});
document.addEventListener('keyup', (e) => {
  if (e.key === ' ' && S.recording) {
    e.preventDefault();
    talkUp();
  }
});

setInterval(() => {
  if (conn.state.status === 'reconnecting') renderConn(conn.state);
  renderWire();
  renderState();
}, 250);

// bytes per second over the last ~5 s
const wireLog = [];
function renderWire() {
  const now = performance.now();
  wireLog.push([now, conn.bytesUp, conn.bytesDown]);
  while (wireLog.length > 2 && now - wireLog[0][0] > 5000) wireLog.shift();
  const [t0, up0, down0] = wireLog[0];
  const dt = (now - t0) / 1000;
  if (dt < 0.5) return;
  $('up-rate').textContent = `${((conn.bytesUp - up0) / dt / 1000).toFixed(1)} kB/s`;
  $('down-rate').textContent = `${((conn.bytesDown - down0) / dt / 1000).toFixed(1)} kB/s`;
  $('wire-format').textContent = wireFormat();
  $('wire-format').title = S.wireNote;
}

function wireFormat() {
  const f = S.session ? S.session.audio.input.format : S.formats.input;
  return label(f) + (S.wireNote ? ' *' : '');
}

window.s2sTest = {
  snapshot() {
    const st = audio.status;
    const [state] = agentState();
    return {
      conn: conn.state.status,
      connReason: conn.state.reason || null,
      connAttempt: conn.state.attempt || 0,
      connText: $('conn').textContent,
      state,
      stateText: $('state').textContent,
      problem: $('problem').hidden ? null : $('problem').textContent,
      micOpen: audio.micOpen,
      micSettings: T.micSettings,
      micErrors: T.micErrors,
      contextRate: audio.ctx ? audio.ctx.sampleRate : null,
      baseLatencyMs: audio.ctx ? audio.ctx.baseLatency * 1000 : null,
      outputLatencyMs: audio.ctx && audio.ctx.outputLatency !== undefined ? audio.ctx.outputLatency * 1000 : null,
      samplesPlayed: st.played,
      bufferedSamples: st.buffered,
      playing: st.playing,
      flushes: st.flushes,
      underruns: st.underruns,
      dropped: st.dropped,
      sentSamples: S.sentSamples,
      replySamples: S.replySamples,
      wireFormat: S.session ? label(S.session.audio.input.format) : null,
      wireOutFormat: S.session ? label(S.session.audio.output.format) : null,
      wireNote: S.wireNote,
      lastError: S.lastError || null,
      opusWhy: S.opusWhy,
      opusPaired: S.up ? S.up.paired : null,
      formatChoice: $('format-choice').value,
      bytesUp: conn.bytesUp,
      bytesDown: conn.bytesDown,
      messagesUp: conn.messagesUp,
      messagesDown: conn.messagesDown,
      bytesUpByType: { ...conn.bytesUpByType },
      bytesDownByType: { ...conn.bytesDownByType },
      rttMs: conn.rttMs,
      gen: S.gen,
      eventCounts: { ...T.eventCounts },
      transcripts: [...T.transcripts],
      turns: T.turns.map((x) => ({ ...x })),
      bargeIns: T.bargeIns.map((x) => ({ ...x })),
      interrupts: T.interrupts.map((x) => ({ ...x })),
      latency: latency.snapshot(),
      now: performance.now(),
    };
  },
  events: () => T.events.map((x) => [...x]),
};

renderState();
conn.connect();
