"""Microphone in, replies out: sounddevice (PortAudio) streams, a WAV stand-in, a jitter buffer.

Rules this module keeps:

- PortAudio callbacks never wait on the UI or the network. The input callback copies its
  block into a :class:`ChunkRing` (a bounded deque: ``append``/``popleft`` are atomic under
  the GIL, no lock); the output callback only pulls from a :class:`JitterBuffer` (no lock
  either: each of its fields has a single writer).
- Devices run at their native rate; the mic is resampled to the engine's 16 kHz and reply
  audio to the output rate with soxr streams (``engine.audio.StreamResampler``).
- Every played sample (silence included) is also written, at 16 kHz, to the echo handling's
  reference ring, so the gate sees exactly what went out and when.
- sounddevice is imported lazily (:func:`sounddevice`): without PortAudio the module
  still imports, and the TUI reports "no audio" instead of crashing.

Sources (what stands in for the mic): :class:`MicSource` (sounddevice InputStream) and
:class:`ReplaySource` (a WAV file fed in real time, then silence). Sinks:
:class:`SpeakerSink` (sounddevice OutputStream) and :class:`ClockSink` (no device: the reply
is consumed in real time so timing, state and barge-in behave the same, just silently).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.audio import ENGINE_RATE, StreamResampler, load_wav
from engine.bounded import remember
from engine.errors import S2SError

BLOCK_MS = 20


class AudioUnavailable(S2SError):
    """An audio device cannot be used; ``str()`` says why and what to do."""


def sounddevice() -> Any:
    """Import sounddevice, or raise :class:`AudioUnavailable` with the fix."""
    try:
        import sounddevice as sd
    except OSError as exc:  # PortAudio library missing
        raise AudioUnavailable(f"PortAudio is not installed ({exc}): apt-get install libportaudio2") from None
    except ImportError:
        raise AudioUnavailable("sounddevice is not installed: pip install sounddevice") from None
    return sd


@dataclass(frozen=True)
class Device:
    index: int
    name: str
    inputs: int
    outputs: int
    default_rate: float
    is_default_input: bool = False
    is_default_output: bool = False


def list_devices() -> list[Device]:
    """Every PortAudio device (empty when there is no sound card). Raises AudioUnavailable."""
    sd = sounddevice()
    try:
        devices = sd.query_devices()
        default_in, default_out = (sd.default.device if sd.default.device is not None else (-1, -1))
    except Exception as exc:  # noqa: BLE001 - PortAudio raises its own types
        raise AudioUnavailable(f"cannot list audio devices: {exc}") from None
    out = []
    for i, d in enumerate(devices):
        out.append(Device(i, str(d["name"]), int(d["max_input_channels"]), int(d["max_output_channels"]),
                          float(d["default_samplerate"]), i == default_in, i == default_out))
    return out


def describe_devices() -> str:
    try:
        devices = list_devices()
    except AudioUnavailable as exc:
        return str(exc)
    if not devices:
        return "no audio devices (PortAudio sees no sound card)"
    lines = []
    for d in devices:
        mark = ("<" if d.is_default_input else " ") + (">" if d.is_default_output else " ")
        lines.append(f"{mark} {d.index:3d}  {d.name}  (in {d.inputs}, out {d.outputs}, {d.default_rate:.0f} Hz)")
    return "\n".join(lines)


def _device_arg(device: str | int | None) -> str | int | None:
    if device is None or device == "":
        return None
    try:
        return int(device)
    except (TypeError, ValueError):
        return str(device)


def level_db(x: np.ndarray) -> float:
    """RMS level in dBFS (-100 for silence)."""
    if len(x) == 0:
        return -100.0
    return max(-100.0, 10.0 * float(np.log10(float(np.mean(np.square(x, dtype=np.float64))) + 1e-10)))


# --- buffers -------------------------------------------------------------------------------


class ChunkRing:
    """A bounded single-producer/single-consumer queue of float32 chunks; never blocks.

    ``deque.append`` and ``popleft`` are atomic under the GIL, so a PortAudio callback can
    write while the event loop reads with no lock. When full, the oldest chunk is dropped
    (and counted): a stalled consumer costs old audio, never a blocked callback.
    """

    def __init__(self, max_chunks: int = 500):
        self._q: deque[np.ndarray] = deque(maxlen=max_chunks)
        self.dropped = 0

    def put(self, chunk: np.ndarray) -> None:
        if len(self._q) == self._q.maxlen:
            self.dropped += 1
        self._q.append(chunk)

    def drain(self) -> np.ndarray:
        parts = []
        while True:
            try:
                parts.append(self._q.popleft())
            except IndexError:
                break
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)


class JitterBuffer:
    """Reply audio waiting to be played, tagged by response; read in exact-size blocks.

    The producer (an agent link, on the event loop) appends chunks as they arrive; the consumer
    (the output callback or the clock sink, on an audio thread) calls :meth:`read`. Playback
    starts once ``prebuffer_ms`` is queued (or the response said it is complete), so network or
    TTS jitter does not cause a stutter at the start; an underrun later plays silence and re-arms
    the prebuffer. ``played_ms(response_id)`` says how much of a response was really played.

    Thread safety without a lock (the audio callback never waits): every field has one writer.
    The producer writes ``_pushed``, ``_flushes``, ``_complete`` and ``_muted``; the consumer
    writes ``_taken``, ``_dropped``, ``_played`` and the playback state; the chunks travel in a
    deque (``append``/``popleft`` are atomic). ``queued_ms`` is ``pushed - taken - dropped``.

    :meth:`flush` (an interrupt) drops what is queued and mutes the responses it belonged to: a
    late chunk of a cut response is dropped too, while a new response plays, even if it arrives
    before the audio thread noticed the flush. A response is unmuted by :meth:`complete` (no more
    audio comes for it). The per-response records keep the last :data:`MAX_RESPONSES`.
    """

    MAX_RESPONSES = 64

    def __init__(self, rate: int, prebuffer_ms: int = 120):
        self.rate = rate
        self.prebuffer = rate * prebuffer_ms // 1000
        self._q: deque[tuple[int, str, np.ndarray]] = deque()  # (flush generation, response, samples)
        # producer side
        self._pushed = 0
        self._flushes = 0
        self._complete: dict[str, None] = {}
        self._muted: dict[str, None] = {}
        self._ids: dict[str, None] = {}  # responses pushed since the last flush
        # consumer side
        self._taken = 0
        self._dropped = 0
        self._seen_flushes = 0
        self._head: tuple[int, str, np.ndarray] | None = None
        self._pos = 0
        self._armed = False
        self._played: dict[str, int] = {}
        self.current: str | None = None

    # --- producer ---------------------------------------------------------------------------

    def push(self, response_id: str, samples: np.ndarray) -> None:
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if not x.size or response_id in self._muted:
            return
        remember(self._ids, response_id, None, self.MAX_RESPONSES)
        self._q.append((self._flushes, response_id, x))
        self._pushed += x.size

    def complete(self, response_id: str) -> None:
        """No more audio will come for this response: play out whatever is left."""
        remember(self._complete, response_id, None, self.MAX_RESPONSES)
        self._muted.pop(response_id, None)

    def flush(self) -> None:
        """Drop everything queued and any late audio of those responses (interrupt)."""
        for rid in list(self._ids):
            remember(self._muted, rid, None, self.MAX_RESPONSES)
        self._ids.clear()
        self._flushes += 1

    # --- either side (reads only) ---------------------------------------------------------

    @property
    def playing(self) -> bool:
        return self._armed and (self._head is not None or bool(self._q))

    @property
    def queued_ms(self) -> int:
        return max(0, int(1000 * (self._pushed - self._taken - self._dropped) / self.rate))

    def played_ms(self, response_id: str) -> int:
        return int(1000 * self._played.get(response_id, 0) / self.rate)

    # --- consumer -------------------------------------------------------------------------

    def read(self, n: int) -> np.ndarray:
        """Exactly ``n`` samples (silence where nothing is ready). Never blocks."""
        out = np.zeros(n, np.float32)
        flushes = self._flushes
        if self._seen_flushes != flushes:
            self._seen_flushes = flushes
            if self._head is not None:
                self._dropped += len(self._head[2]) - self._pos
            self._head, self._pos, self._armed, self.current = None, 0, False, None
            while self._q and self._q[0][0] < flushes:  # queued before the flush; later pushes stay
                self._dropped += len(self._q.popleft()[2])
            return out
        if not self._armed:
            last = self._q[-1][1] if self._q else None
            queued = self._pushed - self._taken - self._dropped
            if queued >= self.prebuffer or (last is not None and last in self._complete):
                self._armed = True
            else:
                return out
        filled = 0
        while filled < n:
            if self._head is None:
                try:
                    self._head = self._q.popleft()
                except IndexError:
                    self._armed = False  # underrun: wait for the prebuffer again
                    self.current = None
                    break
                self._pos = 0
            _, rid, data = self._head
            take = min(n - filled, len(data) - self._pos)
            out[filled:filled + take] = data[self._pos:self._pos + take]
            self._pos += take
            filled += take
            self._taken += take
            if rid not in self._played:
                remember(self._played, rid, 0, self.MAX_RESPONSES)
            self._played[rid] += take
            self.current = rid
            if self._pos >= len(data):
                self._head = None
        return out


# --- sources -------------------------------------------------------------------------------


class BlockClock:
    """Calls ``tick(i)`` for block i = 0, 1, 2, ... every ``BLOCK_MS`` on its own thread, paced
    against ``time.monotonic`` (so a busy event loop cannot speed it up or slow it down)."""

    def __init__(self, tick: Callable[[int], None], name: str):
        self.tick, self.name = tick, name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        t0, i = time.monotonic(), 0
        while not self._stop.is_set():
            self.tick(i)
            i += 1
            delay = t0 + i * BLOCK_MS / 1000 - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)
            self._thread = None


class Source:
    """Something that produces 16 kHz mono float32 audio into ``ring``."""

    description = ""

    def __init__(self) -> None:
        self.ring = ChunkRing()

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class MicSource(Source):
    """The microphone through a sounddevice InputStream at the device's native rate."""

    def __init__(self, device: str | int | None = None):
        super().__init__()
        self.device = _device_arg(device)
        self._stream: Any = None
        self._resampler: StreamResampler | None = None
        self.status_errors = 0

    def start(self) -> None:
        def open_input(sd: Any, rate: int) -> Any:
            rs = self._resampler = StreamResampler(rate, ENGINE_RATE)
            ring = self.ring

            def callback(indata: np.ndarray, frames: int, t: Any, status: Any) -> None:
                if status:
                    self.status_errors += 1
                ring.put(rs.process(indata[:, 0].copy()))

            return sd.InputStream(device=self.device, channels=1, samplerate=rate, dtype="float32",
                                  blocksize=rate * BLOCK_MS // 1000, callback=callback)

        self._stream, name, rate = _open_stream("input", self.device, "microphone", open_input)
        self.description = f"mic: {name} ({rate} Hz)"

    def stop(self) -> None:
        _close(self._stream)
        self._stream = None


def _open_stream(kind: str, device: Any, label: str, make: Any) -> tuple[Any, str, int]:
    """Open and start a PortAudio stream at the device's native rate: ``make(sd, rate)``
    builds it. Any PortAudio/device error becomes :class:`AudioUnavailable` with a reason."""
    sd = sounddevice()
    try:
        info = sd.query_devices(device, kind)
        rate = int(info["default_samplerate"])
        stream = make(sd, rate)
        stream.start()
    except AudioUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - PortAudioError, ValueError (no such device)
        raise AudioUnavailable(_explain(label, exc)) from None
    return stream, str(info["name"]), rate


def _close(stream: Any) -> None:
    """Stop and close a PortAudio stream; closing a dead one must not raise."""
    if stream is None:
        return
    try:
        stream.stop()
        stream.close()
    except Exception:  # noqa: BLE001, S110 - PortAudioError and friends
        pass


class ReplaySource(Source):
    """A WAV file as the microphone: fed in real time (20 ms blocks), then silence forever.

    A thread paces the blocks against ``time.monotonic`` (so a busy event loop cannot speed
    it up or slow it down). ``finished`` is set once the whole file went out.
    """

    def __init__(self, path: str | list[str], lead_in_ms: int = 300, gap_ms: int = 3000):
        super().__init__()
        paths = [path] if isinstance(path, str) else list(path)
        self.path = paths[0]
        parts = [np.zeros(ENGINE_RATE * lead_in_ms // 1000, np.float32)]
        seconds = 0.0
        for i, one in enumerate(paths):  # several files: one after another, a pause between
            audio, info = load_wav(one)  # raises AudioError (an S2SError) on a bad file
            if i:
                parts.append(np.zeros(ENGINE_RATE * gap_ms // 1000, np.float32))
            parts.append(audio)
            seconds += info.duration_s
        self.audio = np.concatenate(parts)
        names = paths[0] if len(paths) == 1 else f"{len(paths)} files"
        self.description = f"replay: {names} ({seconds:.1f} s)"
        self.finished = threading.Event()
        self._clock = BlockClock(self._block, "s2s-replay")
        self._silence = np.zeros(ENGINE_RATE * BLOCK_MS // 1000, np.float32)
        self.position = 0

    def start(self) -> None:
        self._clock.start()

    def restart(self) -> None:
        self.stop()
        self.position = 0
        self.finished.clear()
        self.start()

    def _block(self, i: int) -> None:
        step = len(self._silence)
        start = i * step
        if start < len(self.audio):
            self.ring.put(self.audio[start:start + step].copy())
            self.position = min(len(self.audio), start + step)
        else:
            self.finished.set()
            self.ring.put(self._silence)

    def stop(self) -> None:
        self._clock.stop()


# --- sinks ---------------------------------------------------------------------------------


class Sink:
    """Plays reply audio from ``buffer`` and writes what it played (16 kHz) into ``reference``."""

    description = ""

    def __init__(self, reply_rate: int):
        self.reply_rate = reply_rate
        self.buffer = JitterBuffer(reply_rate)
        self.reference = ChunkRing(max_chunks=1000)
        self._ref_rs = StreamResampler(reply_rate, ENGINE_RATE)

    def _pull(self, n_reply: int) -> np.ndarray:
        out = self.buffer.read(n_reply)
        self.reference.put(self._ref_rs.process(out))
        return out

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class SpeakerSink(Sink):
    """Replies through a sounddevice OutputStream at the device's native rate."""

    def __init__(self, reply_rate: int, device: str | int | None = None):
        super().__init__(reply_rate)
        self.device = _device_arg(device)
        self._stream: Any = None

    def start(self) -> None:
        def open_output(sd: Any, rate: int) -> Any:
            up = StreamResampler(self.reply_rate, rate)
            pending = np.zeros(0, np.float32)

            def callback(outdata: np.ndarray, frames: int, t: Any, status: Any) -> None:
                nonlocal pending
                while len(pending) < frames:
                    need = max(1, (frames - len(pending)) * self.reply_rate // rate + 8)
                    pending = np.concatenate([pending, up.process(self._pull(need))])
                outdata[:, 0] = pending[:frames]
                pending = pending[frames:]

            return sd.OutputStream(device=self.device, channels=1, samplerate=rate, dtype="float32",
                                   blocksize=rate * BLOCK_MS // 1000, callback=callback)

        self._stream, name, rate = _open_stream("output", self.device, "speaker", open_output)
        self.description = f"speaker: {name} ({rate} Hz)"

    def stop(self) -> None:
        _close(self._stream)
        self._stream = None


class ClockSink(Sink):
    """No output device: consume replies in real time on a thread, silently."""

    description = "no speaker (replies are timed, not heard)"

    def __init__(self, reply_rate: int):
        super().__init__(reply_rate)
        self._clock = BlockClock(lambda _: self._pull(self.reply_rate * BLOCK_MS // 1000), "s2s-clock-sink")

    def start(self) -> None:
        self._clock.start()

    def stop(self) -> None:
        self._clock.stop()


def _explain(what: str, exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    low = text.lower()
    if "busy" in low or "unanticipated host error" in low or "-9985" in low:
        hint = "the device is busy (another program uses it?)"
    elif "no default" in low or "error querying device -1" in low or "invalid device" in low or "-9996" in low:
        hint = f"no {what} found"
    elif "no device" in low or "does not exist" in low or "no input" in low or "no output" in low:
        hint = f"no such {what} device"
    else:
        hint = f"the {what} could not be opened"
    return f"{hint}: {text} (pick another with 'd', or --list-devices)"


__all__ = ["AudioUnavailable", "ChunkRing", "JitterBuffer", "MicSource", "ReplaySource", "SpeakerSink",
           "ClockSink", "Source", "Sink", "list_devices", "describe_devices", "level_db", "sounddevice",
           "BLOCK_MS", "Device"]
