"""Echo-safe barge-in: what stands between the microphone and the engine's VAD.

On laptop speakers the agent's own voice comes back through the microphone. Sent to the
engine as it is, the engine's VAD would hear "speech", cut the reply short (barge-in) and
transcribe the agent's own words as a user turn. Every backend here knows what was played
(the *far-end reference*) and has the same small interface (:class:`EchoBackend`):
``far(samples)`` with every played sample, ``process(mic)`` returning what the engine should
hear, ``holding`` (the echo is being held back now, for the status line) and ``name``.
:func:`make_echo` picks one (``--echo {auto,webrtc,gate,off}``):

- ``webrtc`` (:class:`WebRTCEcho`): WebRTC's audio processing module (AEC3: adaptive linear
  filter, delay estimator, residual suppressor) from ``livekit``'s
  ``rtc.AudioProcessingModule``, a maintained 12 MB wheel with no further native needs. AEC3
  also holds back echo that a linear model cannot (loudspeaker saturation, clock drift), where
  the gate below lets it through. Its suppressor is conservative in double talk: a user
  talking over a loud echo is attenuated 5-25 dB and the VAD often does not hear them. So the
  reference gate runs beside it on the raw mic as a double-talk detector: when the gate
  hears the user *and* the canceller's own output confirms it (above ``confirm_db`` within
  ``confirm_ms``), the gate's residual is passed instead; otherwise the canceller's output.
  Chosen by measurement (``tests/test_echo.py``); the APM alone and "APM, then the gate on
  its output" both missed or delayed barge-ins. If livekit is missing or fails, the gate.
- ``gate`` (:class:`EchoGate`): numpy only, described below.
- ``off`` (:class:`NoEcho`): passes the mic unchanged (headsets).

The reference gate, for each 20 ms mic frame:

1. While nothing was played in the last ``max_delay_ms`` the frame passes unchanged.
2. Otherwise the echo path is estimated: the delay by cross-correlating the recent mic
   signal with the recent reference (FFT, every ``delay_update_ms``), and the echo gain by
   least squares over the same window.
3. The frame's echo estimate (reference at that delay, times the gain) is subtracted. If
   what is left (the residual) is ``margin_db`` above the learned level of echo leftovers
   and above the noise floor for ``open_frames`` frames in a row, someone is
   talking over the agent: the gate opens (for at least ``hangover_ms``) and passes the
   residual, so the VAD hears the user and barge-in happens. Otherwise the frame is
   replaced by silence: the echo alone never reaches the VAD.

The gate's limits: a user much quieter at the mic than the echo is not
heard while the agent speaks (use the interrupt key or a headset), and echo that is not a
delayed, scaled copy of the reference (a distorting speaker, drifting clocks) can open it.

Everything works at one rate (the engine's 16 kHz); mic and reference are two sample
clocks that run side by side (the player writes silence when idle), so a constant offset
between them is just part of the estimated delay.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from engine.audio import ENGINE_RATE
from engine.errors import S2SError

log = logging.getLogger(__name__)

ECHO_CHOICES = ("auto", "webrtc", "gate", "off")


@dataclass
class GateOptions:
    """Options of :class:`EchoGate`.

    Fields:
        rate: sample rate of mic and reference (Hz).
        frame_ms: frame size the gate decides on.
        max_delay_ms: longest echo delay searched (output latency + input latency + air).
        window_ms: length of signal used to estimate delay and gain.
        delay_update_ms: how often the delay is re-estimated while the far end is active.
        margin_db: how far (dB) a frame's residual-to-reference ratio must rise above the
            learned ratio of echo leftovers to count as the user talking.
        initial_baseline_db: that learned ratio before anything was learned: 0 dB assumes
            the echo is not louder at the mic than the reference is digitally.
        learn_db: step of the baseline tracker per frame (dB).
        learn_above_floor_db: the baseline learns only from frames whose reference is this
            far above ``floor_db``.
        spread_ms: the reference is compared over +-this around the estimated delay.
        min_corr: normalised correlation needed to trust the delay/gain estimate (and subtract).
        calibrate_corr: above this correlation the estimation window is taken to be echo only,
            and the baseline is set from it directly.
        floor_db: absolute residual level (dBFS) under which a frame is never speech.
        open_frames: consecutive near-end frames needed to open the gate.
        hangover_ms: how long the gate stays open after the last near-end frame.
        far_active_db: reference level (dBFS) above which the far end counts as playing.
    """

    rate: int = ENGINE_RATE
    frame_ms: int = 20
    max_delay_ms: int = 500
    window_ms: int = 600
    delay_update_ms: int = 200
    margin_db: float = 6.0
    initial_baseline_db: float = 0.0
    learn_db: float = 2.0
    learn_above_floor_db: float = 15.0
    spread_ms: int = 60
    min_corr: float = 0.3
    calibrate_corr: float = 0.8
    floor_db: float = -50.0
    open_frames: int = 3
    hangover_ms: int = 400
    far_active_db: float = -55.0


def _db(energy: float) -> float:
    return 10.0 * np.log10(energy + 1e-12)


class EchoGate:
    """Decides, frame by frame, whether mic audio is the user or the agent's own echo.

    Call :meth:`far` with every reference sample as it is played (silence included), and
    :meth:`process` with each mic chunk; it returns what to send to the engine.
    ``stats`` counts frames passed / gated / opened for tests and the status bar.
    """

    name = "gate"

    def __init__(self, options: GateOptions | None = None):
        self.o = options or GateOptions()
        o = self.o
        self.frame = o.rate * o.frame_ms // 1000
        self.max_delay = o.rate * o.max_delay_ms // 1000
        self.window = o.rate * o.window_ms // 1000
        keep = self.window + 2 * self.max_delay + 4 * self.frame
        self._ref: deque[np.ndarray] = deque()
        self._ref_len = 0
        self._ref_total = 0  # reference samples seen since start
        self._keep = keep
        self._mic_hist = np.zeros(0, np.float32)
        self._mic_total = 0  # mic samples seen since start
        self._pending = np.zeros(0, np.float32)
        self.delay: int | None = None  # mic index - ref index of the echo
        self.gain = 0.0
        self._since_update = 0
        self._near_run = 0
        self._open_left = 0
        self._last_far_active = -10**9
        self._last_near = -10**9
        self.is_open = False
        self.spread = o.rate * o.spread_ms // 1000
        self.baseline_db = o.initial_baseline_db
        self.stats = {"passed": 0, "gated": 0, "near": 0, "opened": 0}
        self.last_gated = False  # the last frame was replaced by silence

    @property
    def holding(self) -> bool:
        """The echo is being held back right now."""
        return self.last_gated

    # --- input -----------------------------------------------------------------------------

    def far(self, samples: np.ndarray) -> None:
        """The reference: exactly what the speaker played (or silence), in order."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if not len(x):
            return
        self._ref.append(x)
        self._ref_len += len(x)
        self._ref_total += len(x)
        while self._ref_len - len(self._ref[0]) >= self._keep:
            self._ref_len -= len(self._ref.popleft())

    def process(self, mic: np.ndarray) -> np.ndarray:
        """Mic samples in, what the engine should hear out (same length, frames may lag by < 1 frame)."""
        data = np.concatenate([self._pending, np.asarray(mic, dtype=np.float32).reshape(-1)])
        n = len(data) // self.frame
        self._pending = data[n * self.frame:]
        out = [self._frame(data[i * self.frame:(i + 1) * self.frame]) for i in range(n)]
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    # --- internals -------------------------------------------------------------------------

    def _ref_array(self) -> tuple[np.ndarray, int]:
        """Recent reference and the absolute index of its first sample."""
        if not self._ref:
            return np.zeros(0, np.float32), self._ref_total
        ref = np.concatenate(list(self._ref))
        if len(self._ref) > 1:
            self._ref.clear()
            self._ref.append(ref)
        return ref, self._ref_total - len(ref)

    def _frame(self, x: np.ndarray) -> np.ndarray:
        o = self.o
        start = self._mic_total
        self._mic_total += len(x)
        self._mic_hist = np.concatenate([self._mic_hist, x])[-(self.window + self.frame):]
        ref, ref0 = self._ref_array()
        # is the far end active anywhere within the delay range of this frame?
        lo = max(0, start - self.max_delay - self.frame - ref0)
        hi = max(0, min(len(ref), start + len(x) + self.max_delay - ref0))
        seg = ref[lo:hi]
        far_active = len(seg) > 0 and _db(float(np.max(_frame_energies(seg, self.frame)))) > o.far_active_db
        if far_active:
            self._last_far_active = self._mic_total
        elif self._mic_total - self._last_far_active > self.max_delay:
            self._near_run, self._open_left, self.is_open = 0, 0, False
            self.stats["passed"] += 1
            self.last_gated = False
            return x
        self._since_update += len(x)
        every = self.frame if self.delay is None else o.rate * o.delay_update_ms // 1000
        if self._since_update >= every:
            self._estimate(ref, ref0)
        res = x - self.gain * self._echo(ref, ref0, start, len(x)) if self.gain > 0 else x
        e_res = float(np.mean(res * res))
        # the loudest reference near where this frame's echo comes from (whole range if unknown)
        if self.delay is None:
            ref_e = float(np.max(_frame_energies(seg, self.frame)))
        else:
            ref_e = _ref_energy(ref, ref0, start - self.delay, len(x), self.spread, self.frame)
        res_db = _db(e_res)
        ratio = max(res_db, o.floor_db) - _db(ref_e)
        near = res_db > o.floor_db and ratio > self.baseline_db + o.margin_db
        if near:
            self._last_near = self._mic_total
        elif not self.is_open and _db(ref_e) > o.floor_db + o.learn_above_floor_db:
            # learn how loud echo leftovers are, relative to the reference (a 90th-percentile
            # tracker in dB), only while the reference is loud enough for its echo to be measured
            q = 0.9
            self.baseline_db += o.learn_db * (q if ratio > self.baseline_db else -(1 - q))
        if near:
            self._near_run += 1
            self.stats["near"] += 1
        else:
            self._near_run = 0
        if self._near_run >= o.open_frames:
            if not self.is_open:
                self.stats["opened"] += 1
            self.is_open = True
            self._open_left = o.rate * o.hangover_ms // 1000
        elif self.is_open:
            self._open_left -= len(x)
            if self._open_left <= 0:
                self.is_open = False
        self.last_gated = not self.is_open
        if self.is_open:
            self.stats["passed"] += 1
            return res.astype(np.float32)
        self.stats["gated"] += 1
        return np.zeros_like(x)

    def _echo(self, ref: np.ndarray, ref0: int, start: int, n: int) -> np.ndarray:
        """The reference samples that would be heard in mic samples [start, start+n)."""
        if self.delay is None:
            return np.zeros(n, np.float32)
        a = start - self.delay - ref0
        out = np.zeros(n, np.float32)
        lo, hi = max(0, a), min(len(ref), a + n)
        if hi > lo:
            out[lo - a:hi - a] = ref[lo:hi]
        return out

    def _estimate(self, ref: np.ndarray, ref0: int) -> None:
        """Delay by cross-correlation of the recent mic window with the reference; gain by LS."""
        o = self.o
        self._since_update = 0
        mic = self._mic_hist
        m0 = self._mic_total - len(mic)
        if len(mic) < 4 * self.frame or len(ref) == 0:
            return
        # reference span that may contain the echo of this mic window
        a = max(0, m0 - self.max_delay - ref0)
        b = min(len(ref), self._mic_total + self.max_delay - ref0)
        r = ref[a:b]
        if len(r) < len(mic) // 2 or float(np.mean(r * r)) < 1e-9 or float(np.mean(mic * mic)) < 1e-10:
            return
        nfft = 1 << int(np.ceil(np.log2(len(r) + len(mic))))
        xc = np.fft.irfft(np.fft.rfft(mic, nfft) * np.conj(np.fft.rfft(r, nfft)), nfft)
        # xc[k] = sum_t mic[t] * r[t - k]: mic[t] ~ r[t-k]; k is mic pos - ref pos (shift)
        lags = np.concatenate([np.arange(0, len(mic)), np.arange(-len(r) + 1, 0)])
        vals = np.concatenate([xc[: len(mic)], xc[nfft - len(r) + 1:]])
        best = int(np.argmax(np.abs(vals)))
        shift = int(lags[best])  # mic index (window) - r index
        # mic[t] (absolute m0+t) echoes r[t-shift] (absolute ref0+a+t-shift)
        delay = (m0 - (ref0 + a)) + shift
        if not -self.max_delay <= delay <= self.max_delay + self.window:
            return
        old = self.delay
        self.delay = delay
        echo = self._echo(ref, ref0, m0, len(mic))
        ee = float(np.dot(echo, echo))
        if ee <= 1e-9:
            self.delay = old
            return
        corr = float(np.dot(mic, echo)) / np.sqrt(ee * float(np.dot(mic, mic)) + 1e-12)
        if corr < o.min_corr:  # no convincing echo: keep the delay, subtract nothing
            self.delay = old if old is not None else None
            self.gain = 0.0
            return
        self.gain = max(0.0, float(np.dot(mic, echo)) / ee)
        if corr >= o.calibrate_corr and self._mic_total - self._last_near > len(mic):
            # the window is mostly echo: measure its leftovers directly (90th percentile, dB)
            res = mic - self.gain * echo
            ratios = []
            for i in range(0, len(mic) - self.frame + 1, self.frame):
                ref_e = _ref_energy(ref, ref0, m0 + i - self.delay, self.frame, self.spread, self.frame)
                if _db(ref_e) > o.floor_db + o.learn_above_floor_db:
                    e = float(np.mean(res[i:i + self.frame] ** 2))
                    ratios.append(max(_db(e), o.floor_db) - _db(ref_e))
            if len(ratios) >= 5:
                self.baseline_db = float(np.percentile(ratios, 90))


def _frame_energies(x: np.ndarray, frame: int) -> np.ndarray:
    n = max(1, len(x) // frame)
    x = x[: n * frame] if len(x) >= frame else np.pad(x, (0, frame - len(x)))
    return np.mean(x.reshape(n, -1) ** 2, axis=1)


def _ref_energy(ref: np.ndarray, ref0: int, at: int, n: int, spread: int, frame: int) -> float:
    """Energy of the loudest reference frame within ``spread`` of absolute index ``at`` (tolerates
    delay error and reverberation)."""
    a = at - ref0 - spread
    lo, hi = max(0, a), min(len(ref), at - ref0 + n + spread)
    if hi <= lo:
        return 0.0
    return float(np.max(_frame_energies(ref[lo:hi], frame)))




class EchoBackend(Protocol):
    """What the pump needs from an echo backend (all work at 16 kHz, float32 mono)."""

    name: str

    def far(self, samples: np.ndarray) -> None:
        """The reference: exactly what the speaker played (or silence), in order."""

    def process(self, mic: np.ndarray) -> np.ndarray:
        """Mic samples in, what the engine should hear out (may lag by less than one frame)."""
        ...

    @property
    def holding(self) -> bool:
        """The agent's echo is being held back right now (for the status line)."""
        ...


class NoEcho:
    """``--echo off``: the mic passes unchanged (a headset, or to hear what the echo does)."""

    name = "off"
    holding = False

    def far(self, samples: np.ndarray) -> None:
        pass

    def process(self, mic: np.ndarray) -> np.ndarray:
        return np.asarray(mic, dtype=np.float32).reshape(-1)


@dataclass
class WebRTCOptions:
    """Options of :class:`WebRTCEcho`.

    Fields:
        noise_suppression: WebRTC noise suppression on the mic (off: Silero copes with noise,
            and the suppressor would colour the user's voice for ASR).
        high_pass_filter: WebRTC high-pass filter (removes DC and rumble before the canceller).
        stream_delay_ms: the delay hint given to the canceller. The pump hands over the
            reference as it is played, so only the device latencies remain, and AEC3 finds
            those itself; 0 is right unless a device is known to add much more.
        double_talk: run the reference gate beside the canceller to let a user talking over
            the agent through (see the module docstring); off: the canceller's output only.
        confirm_db: the canceller's output must reach this level (dBFS, 20 ms frames) ...
        confirm_ms: ... within this long, for the gate's "user is talking" to be believed.
        gate: options of the double-talk gate.
    """

    noise_suppression: bool = False
    high_pass_filter: bool = True
    stream_delay_ms: int = 0
    double_talk: bool = True
    confirm_db: float = -40.0
    confirm_ms: int = 100
    gate: GateOptions | None = None


class WebRTCEcho:
    """WebRTC AEC3 (``livekit.rtc.AudioProcessingModule``) with the gate as double-talk detector.

    Raises :class:`EchoUnavailable` when livekit cannot be imported or the module cannot be
    made. If the module fails later, it says so in the log and goes on as the gate alone.
    """

    name = "webrtc"

    def __init__(self, options: WebRTCOptions | None = None):
        self.o = options or WebRTCOptions()
        try:
            from livekit import rtc  # lazy: a 12 MB native library, only needed here
        except ImportError as exc:
            raise EchoUnavailable("the WebRTC echo canceller needs livekit (pip install -c constraints.txt "
                                  "livekit); using the echo gate") from exc
        self._rtc = rtc
        try:
            self.apm = rtc.AudioProcessingModule(echo_cancellation=True,
                                                 noise_suppression=self.o.noise_suppression,
                                                 high_pass_filter=self.o.high_pass_filter,
                                                 auto_gain_control=False)
            self.apm.set_stream_delay_ms(self.o.stream_delay_ms)
        except Exception as exc:  # noqa: BLE001 - any native failure means: use the gate
            raise EchoUnavailable(f"the WebRTC echo canceller failed to start ({exc}); using the echo gate") from exc
        self.gate = EchoGate(self.o.gate)
        self.rate = self.gate.o.rate
        self.step = self.rate // 100  # the APM's 10 ms frames
        self.frame = self.gate.frame
        self._far = np.zeros(0, np.float32)
        self._mic = np.zeros(0, np.float32)
        self._recent: deque[float] = deque(maxlen=max(1, self.o.confirm_ms // self.gate.o.frame_ms))
        self.failed = False
        self.last_source = "apm"  # which signal the last frame came from: apm / gate / failed
        self.stats = {"apm": 0, "gate": 0}

    @property
    def holding(self) -> bool:
        return self.gate.holding and self.last_source == "apm"

    def far(self, samples: np.ndarray) -> None:
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        self.gate.far(x)
        if self.failed:
            return
        data = np.concatenate([self._far, x])
        n = len(data) // self.step
        self._far = data[n * self.step:]
        try:
            for i in range(n):
                self.apm.process_reverse_stream(self._frame_of(data[i * self.step:(i + 1) * self.step]))
        except Exception as exc:  # noqa: BLE001 - native failure: carry on with the gate
            self._fail(exc)

    def process(self, mic: np.ndarray) -> np.ndarray:
        data = np.concatenate([self._mic, np.asarray(mic, dtype=np.float32).reshape(-1)])
        n = len(data) // self.frame
        self._mic = data[n * self.frame:]
        out = [self._process_frame(data[i * self.frame:(i + 1) * self.frame]) for i in range(n)]
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def _process_frame(self, x: np.ndarray) -> np.ndarray:
        gated = self.gate.process(x)  # always run: it is the double-talk detector and the fallback
        if self.failed:
            self.last_source = "failed"
            return gated
        try:
            cleaned = np.concatenate([self._cancel(x[i:i + self.step]) for i in range(0, len(x), self.step)])
        except Exception as exc:  # noqa: BLE001 - native failure: carry on with the gate
            self._fail(exc)
            self.last_source = "failed"
            return gated
        self._recent.append(_db(float(np.mean(cleaned * cleaned))))
        if self.o.double_talk and self.gate.is_open and max(self._recent) > self.o.confirm_db:
            self.last_source = "gate"
            self.stats["gate"] += 1
            return gated
        self.last_source = "apm"
        self.stats["apm"] += 1
        return cleaned

    def _frame_of(self, x: np.ndarray):  # -> rtc.AudioFrame
        pcm = (np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16)
        return self._rtc.AudioFrame(pcm.tobytes(), self.rate, 1, len(pcm))

    def _cancel(self, x: np.ndarray) -> np.ndarray:
        frame = self._frame_of(x)
        self.apm.set_stream_delay_ms(self.o.stream_delay_ms)  # WebRTC wants it before every frame
        self.apm.process_stream(frame)
        return np.frombuffer(frame.data, dtype=np.int16).astype(np.float32) / 32768.0

    def _fail(self, exc: Exception) -> None:
        log.warning("WebRTC echo canceller failed (%s); going on with the echo gate", exc)
        self.failed = True


class EchoUnavailable(S2SError, RuntimeError):
    """The chosen echo backend cannot run here (the message says why and what is used instead)."""


def make_echo(kind: str = "auto") -> EchoBackend:
    """The echo backend for ``--echo``: auto = webrtc if livekit works here, else the gate."""
    if kind not in ECHO_CHOICES:
        raise ValueError(f"unknown echo backend {kind!r}: use one of {', '.join(ECHO_CHOICES)}")
    if kind == "off":
        return NoEcho()
    if kind == "gate":
        return EchoGate()
    try:
        return WebRTCEcho()
    except EchoUnavailable as exc:
        (log.info if kind == "auto" else log.warning)("%s", exc)
        return EchoGate()


__all__ = ["ECHO_CHOICES", "EchoBackend", "EchoGate", "EchoUnavailable", "GateOptions", "NoEcho",
           "WebRTCEcho", "WebRTCOptions", "make_echo"]
