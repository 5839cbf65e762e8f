"""The engine: one loaded model set, shared by every session.

``Engine.load(profile)`` resolves and loads the four stages once. Each stage gets its own
worker pool, so model work never runs on the asyncio event loop and a slow stage does
not hold another back:

- VAD: one thread (sub-millisecond frames, in order);
- turn (the audio end-of-turn model, when the profile's turn policy uses it): one thread;
- ASR: two threads, so a final transcript never waits behind a partial one;
- LLM: ``llm.parallel`` threads, one per model instance (a llama.cpp context is not
  thread-safe; with 1, sessions take turns);
- TTS: one thread.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from engine.config import Profile, load_profile
from engine.cpu import IdleCores
from engine.errors import BackendUnavailable, ModelError
from engine.models import resolve
from engine.registry import backend_class
from engine.session import Session
from engine.stages.base import ASRBackend, LLMBackend, TTSBackend, TurnBackend, VADBackend
from engine.turn import AUDIO_POLICIES

log = logging.getLogger(__name__)

CLOSE_WAIT_S = 10.0
"""How long :meth:`Engine.close` lets running model work finish before leaving it be."""


class Engine:
    def __init__(self, profile: Profile, vad: VADBackend, asr: ASRBackend, llm: LLMBackend, tts: TTSBackend,
                 notes: list[str] | None = None, turn_model: TurnBackend | None = None,
                 cpu: IdleCores | None = None):
        self.profile = profile
        self.vad, self.asr, self.llm, self.tts = vad, asr, llm, tts
        self.turn_model = turn_model
        self.notes = notes or []
        self.vad_pool = ThreadPoolExecutor(1, thread_name_prefix="s2s-vad")
        self.turn_pool = ThreadPoolExecutor(1, thread_name_prefix="s2s-turn")
        # idle cores before a pause (sampled by the sessions, on the event loop): with fewer than
        # turn.audio_spare_cores the audio turn model waits until the turn's reply is made, and
        # the reply's LLM runs one thread per idle core
        self.cpu = cpu or IdleCores()
        self.asr_pool = ThreadPoolExecutor(2, thread_name_prefix="s2s-asr")
        # turn (final or speculative) decodes running now, any session; partials wait while > 0
        # (touched on the event loop only)
        self.asr_turns_in_flight = 0
        # language -> whether the ASR's last turn transcript in it was text in its script (any
        # session; on the event loop only): turn.audio_when = "auto" reads it
        self.text_evidence: dict[str, bool] = {}
        self.llm_pool = ThreadPoolExecutor(max(1, profile.llm.parallel), thread_name_prefix="s2s-llm")
        self.tts_pool = ThreadPoolExecutor(1, thread_name_prefix="s2s-tts")
        self.sessions: dict[str, Session] = {}
        self._next_session = 0
        self._gpu_cache: tuple[float, dict[str, float | None]] = (0.0, {"used_mb": None, "total_mb": None})
        self._gpu_lock = threading.Lock()
        self._stats_pool = ThreadPoolExecutor(1, thread_name_prefix="s2s-stats")
        self._gpu_refresh: Future | None = None
        self.load_times_ms: dict[str, float] = {}

    # --- construction -------------------------------------------------------------------

    @classmethod
    def load(cls, profile: Profile | str = "offline", overrides: list[str] | None = None) -> Engine:
        """Resolve and load every stage (blocking; seconds). Raises ModelError/S2SError."""
        if isinstance(profile, str):
            profile = load_profile(profile, overrides)
        notes: list[str] = []
        times: dict[str, float] = {}

        def build(stage: str) -> Any:
            t0 = time.perf_counter()
            backend = load_stage(profile, stage, notes)
            times[stage] = (time.perf_counter() - t0) * 1000
            return backend

        vad = build("vad")
        turn = build("turn") if profile.turn.policy in AUDIO_POLICIES else None
        asr, llm, tts = build("asr"), build("llm"), build("tts")
        notes += [n for n in (getattr(b, "note", None) for b in (asr, llm)) if n]
        engine = cls(profile, vad, asr, llm, tts, notes, turn_model=turn)
        engine.load_times_ms = times
        engine.gpu_memory()  # the first reading, so turn metrics never wait for one
        return engine

    def ensure_turn_model(self) -> TurnBackend:
        """Load the audio end-of-turn model if the profile's policy did not (blocking: call it
        at start-up, not on the event loop), so sessions can switch to a policy that uses it."""
        if self.turn_model is None:
            t0 = time.perf_counter()
            o = self.profile.turn
            model = backend_class("turn", o.backend)(o, resolve("turn", o.model, self.profile.name))
            model.setup()
            self.turn_model = model
            self.load_times_ms["turn"] = (time.perf_counter() - t0) * 1000
        return self.turn_model

    def new_session(self, session_id: str | None = None) -> Session:
        self._next_session += 1
        sid = session_id or f"sess_{self._next_session}"
        session = Session(self, sid)
        self.sessions[sid] = session
        return session

    def forget(self, session: Session) -> None:
        self.sessions.pop(session.id, None)

    # --- introspection ------------------------------------------------------------------

    def partials_enabled(self) -> bool:
        """Partial transcripts on this hardware? "auto" measures one decode at load."""
        mode = self.profile.asr.partials
        if mode == "on":
            return True
        if mode == "off":
            return False
        cost = getattr(self.asr, "decode_cost_ms", None)
        return cost is not None and cost <= self.profile.asr.partial_max_cost_ms

    def describe(self) -> dict[str, Any]:
        return {
            "profile": self.profile.name,
            "device": getattr(self.asr, "device", "cpu"),
            "models": {"vad": self.vad.describe(), "asr": self.asr.describe(),
                       "llm": self.llm.describe(), "tts": self.tts.describe(),
                       **({"turn": self.turn_model.describe()} if self.turn_model is not None else {})},
            "turn_policy": self.profile.turn.policy,
            "partials": self.partials_enabled(),
            "load_ms": {k: round(v, 1) for k, v in self.load_times_ms.items()},
            "notes": list(self.notes),
        }

    def gpu_memory(self) -> dict[str, float | None]:
        """CUDA memory used/total in MB (None on a machine without a GPU). Cached for 1 s."""
        with self._gpu_lock:
            t, cached = self._gpu_cache
            if time.monotonic() - t < 1.0:
                return dict(cached)
            value = _query_gpu_memory()
            self._gpu_cache = (time.monotonic(), value)
            return dict(value)

    def refresh_gpu_memory(self) -> None:
        """Measure GPU memory in the background (at most one measurement at a time); the
        engine owns the future and logs a failure. Safe to call from the event loop."""
        with self._gpu_lock:
            if self._gpu_refresh is not None and not self._gpu_refresh.done():
                return
            self._gpu_refresh = self._stats_pool.submit(self.gpu_memory)
        self._gpu_refresh.add_done_callback(_log_failure)

    def gpu_memory_cached(self) -> dict[str, float | None]:
        """The last GPU memory reading, without measuring (safe on the event loop)."""
        with self._gpu_lock:
            return dict(self._gpu_cache[1])

    def close(self, wait_s: float = CLOSE_WAIT_S) -> None:
        """Stop the workers, then free each stage once its worker is idle.

        Queued work is cancelled; work already running gets ``wait_s`` seconds (all stages
        together) to finish. A stage whose worker is still busy then is not closed (freeing a
        llama.cpp context under a running thread crashes the process): it is logged, and its
        memory goes with the process.
        """
        self._stats_pool.shutdown(wait=False, cancel_futures=True)
        pairs = ((self.vad, self.vad_pool), (self.turn_model, self.turn_pool), (self.asr, self.asr_pool),
                 (self.llm, self.llm_pool), (self.tts, self.tts_pool))
        for _, pool in pairs:
            pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + wait_s
        for stage, pool in pairs:
            if not _drained(pool, deadline - time.monotonic()):
                log.warning("%s is still running after %.0f s; not closing it", getattr(stage, "name", "stage"),
                            wait_s)
                continue
            if stage is None:
                continue
            try:
                stage.close()
            except Exception:  # noqa: BLE001 - closing must not raise
                log.exception("closing %s", stage.name)


def _log_failure(future: Future) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("GPU memory reading failed: %s", future.exception())


def load_stage(profile: Profile, stage: str, notes: list[str] | None = None) -> Any:
    """Resolve, construct and ``setup()`` one stage's backend as the profile names it (blocking).

    A TTS that fails to load falls back to ``tts.fallback`` when the profile names one; the
    reason is appended to ``notes``. Raises ModelError/S2SError otherwise.
    """
    options = getattr(profile, stage)

    def build(options: Any) -> Any:
        path = None if stage == "tts" and options.backend == "espeak-ng" else resolve(
            stage, options.model, profile.name, getattr(options, "compute_type", None))
        backend = backend_class(stage, options.backend)(options, path)
        backend.setup()
        return backend

    if stage != "tts":
        return build(options)
    try:
        return build(options)
    except (ModelError, BackendUnavailable) as exc:
        if not options.fallback:
            raise
        note = f"TTS {options.backend} failed to load ({exc}); using {options.fallback}"
        log.warning(note)
        if notes is not None:
            notes.append(note)
        return build(replace(options, backend=options.fallback, model="te"))


def _drained(pool: ThreadPoolExecutor, timeout_s: float) -> bool:
    """Whether ``pool``'s threads have all finished within ``timeout_s`` (after its shutdown)."""
    waiter = threading.Thread(target=pool.shutdown, kwargs={"wait": True}, daemon=True)
    waiter.start()
    waiter.join(max(0.0, timeout_s))
    return not waiter.is_alive()


def _query_gpu_memory() -> dict[str, float | None]:
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available():
                free, total = torch.cuda.mem_get_info()
                return {"used_mb": (total - free) / 2**20, "total_mb": total / 2**20}
        except Exception:  # noqa: BLE001
            pass
    exe = shutil.which("nvidia-smi")
    if exe:
        try:
            out = subprocess.run([exe, "--query-gpu=memory.used,memory.total", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=2).stdout.splitlines()
            used, total = (float(v) for v in out[0].split(","))
            return {"used_mb": used, "total_mb": total}
        except (OSError, ValueError, IndexError, subprocess.SubprocessError):
            pass
    return {"used_mb": None, "total_mb": None}
