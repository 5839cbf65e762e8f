"""Every message the TUI moves: small documented dataclasses.

An agent link (:mod:`s2s_tui.link`, in-process or remote) and the audio pump turn what
happens into these messages and post them to the App; screens and widgets only ever see
these, so they do not know whether the engine runs in this process or behind a WebSocket.

High-rate messages (the mic level, partial transcripts, stats, connection countdowns)
define ``can_replace``: a newer one replaces an older one still waiting in the queue, so
they cannot flood it (the pattern of toolong's ``PendingLines``).

Reply *audio* never travels as a message: a link hands it straight to the player's jitter
buffer, so playback never waits on the UI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from textual.message import Message

LinkStatus = Literal["loading", "connecting", "ready", "retrying", "failed", "closed"]
AgentState = Literal["listening", "user_speaking", "thinking", "speaking", "muted", "recording"]


@dataclass(eq=False)
class _Msg(Message):
    """Base: a dataclass message (Textual's ``Message.__post_init__`` sets its internals)."""

    def __post_init__(self) -> None:
        super().__post_init__()


@dataclass(eq=False)
class LinkState(_Msg):
    """The agent link's connection state.

    Fields:
        status: loading (in-process engine loading), connecting, ready, retrying, failed, closed.
        detail: a sentence for the user (the error, or what is being done).
        retry_at: ``time.monotonic()`` of the next retry while ``retrying``, else None.
        fatal: True when retrying will not help (a refused token, a model that failed to load).
    """

    status: LinkStatus
    detail: str = ""
    retry_at: float | None = None
    fatal: bool = False

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, LinkState)


@dataclass(eq=False)
class EngineInfo(_Msg):
    """What the engine runs: profile, device, models per stage, notes (fallbacks taken)."""

    profile: str
    device: str
    models: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    partials: bool = False


@dataclass(eq=False)
class Stats(_Msg):
    """GPU memory in MB (both None on a CPU-only engine); a remote link adds the round trip and
    ``wire``: the audio format and the bytes per second each way (``s2s.opus 16 kbit/s  ↑2.3 ↓2.1 kB/s``)."""

    gpu_used_mb: float | None
    gpu_total_mb: float | None
    rtt_ms: float | None = None
    wire: str | None = None

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, Stats)


@dataclass(eq=False)
class MicLevel(_Msg):
    """Microphone level of the last ~100 ms in dBFS, and whether echo handling (canceller or gate) let it through."""

    level_db: float
    gated: bool = False

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, MicLevel)


@dataclass(eq=False)
class UserSpeechStarted(_Msg):
    """The engine's VAD heard the user start a turn."""

    turn_id: str


@dataclass(eq=False)
class UserSpeechStopped(_Msg):
    """The engine's VAD decided the user's turn ended."""

    turn_id: str


@dataclass(eq=False)
class UserPartial(_Msg):
    """A provisional transcript of the turn so far."""

    turn_id: str
    text: str

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, UserPartial) and message.turn_id == self.turn_id


@dataclass(eq=False)
class UserFinal(_Msg):
    """The final transcript of a user turn (empty when nothing was recognised).

    Fields:
        script_ok: False when the transcript is mostly in another script than the ASR language's
            (the model did not understand); None when that cannot be told or for typed text.
        language: the ASR language (names the script the flag asks for).
    """

    turn_id: str
    text: str
    script_ok: bool | None = None
    language: str | None = None


@dataclass(eq=False)
class ReplyStarted(_Msg):
    """The agent started a reply to ``turn_id``."""

    response_id: str
    turn_id: str | None = None


@dataclass(eq=False)
class ReplyText(_Msg):
    """Text the agent wrote, as it writes it."""

    response_id: str
    delta: str


@dataclass(eq=False)
class ReplyDone(_Msg):
    """A reply ended.

    Fields:
        status: completed, cancelled (barge-in or the interrupt key) or failed.
        text: everything the agent wrote.
        heard_text: the part the user heard (equal to ``text`` unless cut off).
        played_ms: how much reply audio was played when it ended or was cut.
    """

    response_id: str
    status: str
    text: str = ""
    heard_text: str = ""
    played_ms: int = 0


@dataclass(eq=False)
class TurnLatency(_Msg):
    """One turn's latency breakdown.

    Fields:
        turn_id: the user turn.
        stages_ms: stage key (see ``engine.metrics.STAGES``) -> ms, None where not measured.
        voice_to_voice_ms: end of the user's speech -> first reply audio, in the engine.
        network_ms: the network's share of this turn in remote mode: the measured one-way times
            up (the audio that ended the turn, client -> server) plus down (the first reply audio,
            server -> client); None in-process or when a leg could not be measured.
        interrupted: the reply was cut.
        network_up_ms / network_down_ms: the two legs (each relies on the clock offset estimate
            from s2s.ping; their sum does not), None where not measured.
        asr_decode_ms: what the final ASR decode cost (None where not reported).
        speculative: the turn ran during the end-of-turn silence, so ``asr_decode_ms`` (and
            possibly the LLM's first token) is hidden there and the after-silence stages are
            only what was left.
        turn_policy: what ended the turn (``engine.turn``: silence, smart-turn, transcript,
            combined, deadline, max-silence, fallback-silence, commit); the silence it waited is the
            ``eot_wait_ms`` stage.
        turn_probability: the evidence's P(complete) when it ended (None: no evidence).
        resumed: times the turn was ended and the user went on (answered as one).
    """

    turn_id: str | None
    stages_ms: dict[str, float | None]
    voice_to_voice_ms: float | None
    network_ms: float | None = None
    interrupted: bool = False
    network_up_ms: float | None = None
    network_down_ms: float | None = None
    asr_decode_ms: float | None = None
    speculative: bool = False
    turn_policy: str | None = None
    turn_probability: float | None = None
    resumed: int = 0

    @property
    def total_ms(self) -> float | None:
        """Voice-to-voice as the user hears it: the engine's plus the network's."""
        if self.voice_to_voice_ms is None:
            return None
        return self.voice_to_voice_ms + (self.network_ms or 0.0)


@dataclass(eq=False)
class Problem(_Msg):
    """Something went wrong and the user should know (never a crash).

    Fields:
        source: "mic", "speaker", "engine", "network", "replay", ...
        text: what happened and what to do.
        severity: "error" or "warning" (also "information" when a problem cleared).
    """

    source: str
    text: str
    severity: Literal["error", "warning", "information"] = "error"


@dataclass(eq=False)
class AudioStatus(_Msg):
    """What the audio side runs: the input and output in words (device name, rate, or replay)."""

    input: str
    output: str


__all__ = [
    "LinkState", "EngineInfo", "Stats", "MicLevel", "UserSpeechStarted", "UserSpeechStopped",
    "UserPartial", "UserFinal", "ReplyStarted", "ReplyText", "ReplyDone", "TurnLatency", "Problem",
    "AudioStatus", "LinkStatus", "AgentState",
]
