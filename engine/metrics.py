"""Per-turn latency metrics, all stamped on one monotonic clock (``engine.clock.now_ns``).

Stamps are taken where each event happens. Durations are derived, never measured twice:

==================  ============================================================
stage               from -> to
==================  ============================================================
eot_wait_ms         end of speech (last voiced audio arrived) -> end of turn decided
asr_ms              end of turn decided -> final transcript
llm_first_token_ms  final transcript -> first LLM token
first_sentence_ms   first LLM token -> first speakable chunk ready
tts_ms              first speakable chunk ready -> first TTS audio
out_ms              first TTS audio -> first reply audio handed out
voice_to_voice_ms   end of speech -> first reply audio handed out
==================  ============================================================
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from engine.clock import ms

STAGES: tuple[tuple[str, str, str, str], ...] = (
    ("eot_wait_ms", "end-of-turn wait", "speech_end_ns", "turn_end_ns"),
    ("asr_ms", "ASR final", "turn_end_ns", "asr_final_ns"),
    ("llm_first_token_ms", "LLM first token", "asr_final_ns", "llm_first_token_ns"),
    ("first_sentence_ms", "first sentence", "llm_first_token_ns", "first_sentence_ns"),
    ("tts_ms", "TTS first audio", "first_sentence_ns", "tts_first_audio_ns"),
    ("out_ms", "audio out", "tts_first_audio_ns", "first_audio_out_ns"),
)


@dataclass
class TurnMetrics:
    """Stamps (ns, monotonic) and counters of one turn. Missing stamps stay None.

    Fields:
        turn_id / response_id: which turn and response.
        speech_start_ns: the first voiced audio of the turn arrived.
        speech_end_ns: the last voiced audio of the turn arrived.
        turn_end_ns: the VAD decided the turn ended (or a commit / text message came in).
        asr_final_ns: the final transcript was ready.
        llm_first_token_ns: the LLM produced its first token.
        first_sentence_ns: the first speakable chunk was cut from the token stream.
        tts_first_audio_ns: TTS returned the first audio of the reply.
        first_audio_out_ns: the first reply audio chunk was handed out of the session.
        llm_tokens / llm_seconds: tokens generated and the time spent generating them.
        tts_audio_s / tts_compute_s: seconds of audio synthesised and compute spent on it.
        asr_audio_s: seconds of user audio transcribed.
        interrupted: the reply was cut by barge-in or cancel.
        script_ok: the transcript is in the ASR language's script (False: mostly another script,
            the model did not understand; None: cannot be told, see ``engine.script``).
        asr_stop: why the final decode stopped early ("loop", "script", "cap", "no_speech"), or None.
        gpu_mem_used_mb / gpu_mem_total_mb: CUDA memory when present, else None.
        turn_policy: what ended the turn (``engine.turn.TurnDecision.by``: silence,
            smart-turn, transcript, combined, deadline, max-silence, fallback-silence; commit or
            text for a turn the client ended).
        turn_missing: the end-of-turn evidence the policy was still waiting for when the turn
            ended ("audio", "transcript" or "audio,transcript"; None when all was in): with
            ``turn_policy`` "deadline", what came too late (``turn.deadline_ms``).
        turn_probability: the P(complete) of the evidence that ended the turn (None: none).
        turn_audio_probability / turn_text_probability: each signal's P(complete), also when it
            came after the turn ended (``turn_missing`` then names it; None where the signal was
            not used or not there).
        turn_audio_ms: what the audio turn model cost.
        turn_audio_after_reply: the audio model waited for the held reply's first audio, since
            fewer than ``turn.audio_spare_cores`` cores were idle at the pause (False also where the
            transcript's reading said "incomplete" first: the turn then waits on the model, which
            starts at once; None: it did not run).
        cpu_idle_cores: the idle cores over the half second before the pause that started the
            turn (``engine.cpu``; None: not known).
        llm_threads: the CPU threads the reply's LLM ran on: one per idle core at the pause, at
            most ``llm.n_threads`` (``engine.cpu.threads_for``; None: the configured count).
        turn_audio_ns / turn_text_ns: when the audio model's answer and the transcript's reading
            arrived (also after the turn ended: how late they were).
        spec_start_ns: the turn started running speculatively (the first short silence).
        resumed: earlier parts of this utterance: the turn was ended this many times and the
            user went on (the parts are answered as one).
        half_replies: replies to an earlier part whose audio had already gone out when the
            user went on (a reply to half an utterance, cut).
        extra: asr_decode_ms (what the final decode cost), asr_speculative (1.0 when it was
            decoded during the end-of-turn silence, so asr_ms only counts what was left of it).
    """

    turn_id: str | None = None
    response_id: str | None = None
    speech_start_ns: int | None = None
    speech_end_ns: int | None = None
    turn_end_ns: int | None = None
    asr_final_ns: int | None = None
    llm_first_token_ns: int | None = None
    first_sentence_ns: int | None = None
    tts_first_audio_ns: int | None = None
    first_audio_out_ns: int | None = None
    llm_tokens: int = 0
    llm_seconds: float = 0.0
    tts_audio_s: float = 0.0
    tts_compute_s: float = 0.0
    asr_audio_s: float = 0.0
    interrupted: bool = False
    script_ok: bool | None = None
    asr_stop: str | None = None
    gpu_mem_used_mb: float | None = None
    gpu_mem_total_mb: float | None = None
    turn_policy: str | None = None
    turn_missing: str | None = None
    turn_probability: float | None = None
    turn_audio_probability: float | None = None
    turn_text_probability: float | None = None
    turn_audio_ms: float | None = None
    turn_audio_after_reply: bool | None = None
    cpu_idle_cores: float | None = None
    llm_threads: int | None = None
    turn_audio_ns: int | None = None
    turn_text_ns: int | None = None
    spec_start_ns: int | None = None
    resumed: int = 0
    half_replies: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    def stages_ms(self) -> dict[str, float | None]:
        """What each stage added to the wait, in ms (None where a stamp is missing).

        Work done before the end of turn was decided (a turn run speculatively during the
        end-of-turn silence) is hidden in that silence: stamps earlier than ``turn_end_ns``
        count from it, so such a stage shows 0 and the stages still add up to voice-to-voice.
        """
        out: dict[str, float | None] = {}
        floor = None
        for key, _, a, b in STAGES:
            start, end = getattr(self, a), getattr(self, b)
            if key != "eot_wait_ms" and self.turn_end_ns is not None:
                floor = self.turn_end_ns if floor is None else floor
                start = None if start is None else max(start, floor)
                end = None if end is None else max(end, floor)
            out[key] = ms(start, end)
        return out

    @property
    def voice_to_voice_ms(self) -> float | None:
        """First reply audio out minus end of the user's speech."""
        return ms(self.speech_end_ns, self.first_audio_out_ns)

    @property
    def llm_tokens_per_s(self) -> float | None:
        return self.llm_tokens / self.llm_seconds if self.llm_seconds > 0 else None

    @property
    def tts_rtf(self) -> float | None:
        """TTS real-time factor: compute seconds per second of audio (lower is faster)."""
        return self.tts_compute_s / self.tts_audio_s if self.tts_audio_s > 0 else None

    def to_dict(self) -> dict:
        """A JSON-ready summary: stage durations, voice-to-voice, rates, raw stamps."""
        out = {
            "turn_id": self.turn_id,
            "response_id": self.response_id,
            **{k: _round(v) for k, v in self.stages_ms().items()},
            "voice_to_voice_ms": _round(self.voice_to_voice_ms),
            "llm_tokens": self.llm_tokens,
            "llm_tokens_per_s": _round(self.llm_tokens_per_s),
            "tts_rtf": _round(self.tts_rtf, 4),
            "asr_audio_s": round(self.asr_audio_s, 3),
            "asr_decode_ms": self.extra.get("asr_decode_ms"),
            "asr_speculative": bool(self.extra.get("asr_speculative")),
            "script_ok": self.script_ok,
            "asr_stop": self.asr_stop,
            "interrupted": self.interrupted,
            "turn_policy": self.turn_policy,
            "turn_missing": self.turn_missing,
            "turn_probability": _round(self.turn_probability, 3),
            "turn_audio_probability": _round(self.turn_audio_probability, 3),
            "turn_text_probability": _round(self.turn_text_probability, 3),
            "turn_audio_ms": _round(self.turn_audio_ms),
            "turn_audio_after_reply": self.turn_audio_after_reply,
            "cpu_idle_cores": _round(self.cpu_idle_cores, 2),
            "llm_threads": self.llm_threads,
            "spec_start_ms": _round(ms(self.speech_end_ns, self.spec_start_ns)),
            "turn_audio_at_ms": _round(ms(self.speech_end_ns, self.turn_audio_ns)),
            "turn_text_at_ms": _round(ms(self.speech_end_ns, self.turn_text_ns)),
            "asr_final_at_ms": _round(ms(self.speech_end_ns, self.asr_final_ns)),
            "llm_first_token_at_ms": _round(ms(self.speech_end_ns, self.llm_first_token_ns)),
            "reply_made_at_ms": _round(ms(self.speech_end_ns, self.tts_first_audio_ns)),
            "resumed": self.resumed,
            "half_replies": self.half_replies,
            "gpu_mem_used_mb": self.gpu_mem_used_mb,
            "gpu_mem_total_mb": self.gpu_mem_total_mb,
        }
        out["stamps_ns"] = {k: v for k, v in asdict(self).items() if k.endswith("_ns")}
        return out


def _round(v: float | None, nd: int = 1) -> float | None:
    return None if v is None else round(v, nd)
