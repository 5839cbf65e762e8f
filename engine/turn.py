"""End-of-turn policies: when is the user done speaking?

A fixed silence (the ``silence`` policy) is simple and wrong both ways: it waits the full
silence after every finished question, and it still cuts in on anyone who pauses longer
mid-sentence. The adaptive policies gather evidence during the first short silence and end
the turn as soon as the evidence says "complete", or wait longer when it says "incomplete":

- ``smart-turn``: an audio model (Smart Turn v3.2, ``engine.stages.turn_smart``) hears the
  prosody of the last 8 s. It knows 23 languages, not Telugu; on flat synthetic speech it
  calls a cut-off phrase complete.
- ``transcript``: the language model's probability that the speculative transcript is a
  finished sentence. Whisper closes a cut-off sentence with a full stop by itself, so the
  final punctuation is removed first and the model is asked whether a sentence end follows
  (``LLMBackend.stream_turn``): "what is the weather like in" scores near 0, "what is the
  weather like in Hyderabad today" near 1, in Telugu as well as English. A transcript in
  the wrong script (the ASR did not understand) is no evidence and is not used.
- ``combined``: both, fused in log-odds: each signal's logit measured from its own threshold,
  the audio model's weighted by ``audio_weight`` (0.5: the transcript counts double; its
  probability held within ``AUDIO_P_RANGE``), and the turn is complete when the sum is at or
  above 0. A signal that is not usable (a transcript in the wrong script, a failed model) is
  left out. When the transcript alone settles the sum whatever the audio says, the audio model
  is not waited for; with ``audio_when = "undecided"`` it is not even run then (on a 2-core CPU
  it would share the cores with the turn's ASR), and with ``"auto"`` so where the last transcript
  in the language was usable (else the audio model starts at the pause, as it decides alone).

Evidence has a deadline (``deadline_ms``: by default the fixed policy's silence,
``vad.end_of_turn_silence_ms``). Evidence that has not arrived by then (an audio model or an
LLM slowed by a busy CPU) is not waited for any longer: the turn ends there ("deadline", with
what was missing), so an adaptive policy never ends a turn later than the fixed timer would for
want of evidence. Evidence that did arrive is still heeded: if it says "incomplete", the policy
goes on waiting (for the rest of the evidence, up to ``max_silence_ms``).

:class:`TurnPolicy` is pure: the session feeds it the silence so far and the evidence, and it
answers "end now" (with what decided it) or "keep waiting". It never waits past
``max_wait_ms``, where the VAD ends the turn whatever the evidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.config import TurnOptions
from engine.script import script_ok

AUDIO_POLICIES = ("smart-turn", "combined")
TEXT_POLICIES = ("transcript", "combined")
AUDIO_P_RANGE = (0.02, 0.98)
"""The audio model's P(complete) is taken within these bounds: one model's certainty is never
infinite evidence, and it bounds what the audio can add to the transcript's say (``text_decides``)."""


@dataclass
class TurnEvidence:
    """What is known about one pause. ``None``: not known yet.

    Fields:
        audio: the audio model's P(complete).
        text: the language model's P(the transcript is a finished sentence).
        audio_usable: False when the audio model failed: it is not waited for.
        text_usable: False once the transcript turned out empty or in the wrong script (or
            no response ran for it): the text signal will not come and is not waited for.
        text_expected: the ASR's last transcript in this language was usable, so this one
            likely is too (``TurnOptions.audio_when = "auto"``).
    """

    audio: float | None = None
    text: float | None = None
    audio_usable: bool = True
    text_usable: bool = True
    text_expected: bool = False


@dataclass(frozen=True)
class TurnDecision:
    """The turn ended. ``by`` names what decided: the policy (``silence``, ``smart-turn``,
    ``transcript``, ``combined``), ``deadline`` (evidence had not arrived by
    :attr:`TurnPolicy.deadline_ms` and what had arrived did not say "incomplete"),
    ``max-silence`` (an adaptive policy that heard "incomplete" and waited its longest) or
    ``fallback-silence`` (no usable evidence, e.g. a transcript in the wrong script for a
    text-only policy: the fixed silence decides). ``probability`` is the evidence's P(complete)
    (for ``combined`` the fused score's), None if there was none. ``missing``: the evidence the
    policy still waited for when the turn ended ("audio", "transcript"; empty when all was in)."""

    by: str
    probability: float | None
    silence_ms: float
    missing: tuple[str, ...] = ()


class TurnPolicy:
    def __init__(self, options: TurnOptions, fixed_silence_ms: int, policy: str | None = None):
        self.o = options
        self.policy = policy or options.policy
        self.fixed_silence_ms = fixed_silence_ms

    @property
    def adaptive(self) -> bool:
        return self.policy != "silence"

    @property
    def needs_audio(self) -> bool:
        return self.policy in AUDIO_POLICIES

    @property
    def needs_text(self) -> bool:
        return self.policy in TEXT_POLICIES

    @property
    def max_wait_ms(self) -> int:
        """The VAD ends the turn after this much silence, whatever the evidence."""
        if not self.adaptive:
            return self.fixed_silence_ms
        return max(self.o.max_silence_ms, self.fallback_ms)

    @property
    def fallback_ms(self) -> int:
        """Where a policy with no usable evidence ends: the fixed silence."""
        return self.fixed_silence_ms

    @property
    def deadline_ms(self) -> int | None:
        """The silence after which evidence still missing is not waited for (None: no deadline;
        ``turn.deadline_ms``: 0 is the fixed policy's silence, -1 none)."""
        if not self.adaptive or self.o.deadline_ms < 0:
            return None
        return self.o.deadline_ms or self.fixed_silence_ms

    def missing(self, ev: TurnEvidence) -> tuple[str, ...]:
        """The evidence the policy waits for and does not have yet: the audio model's answer
        (unless the transcript settles it alone), the transcript's reading."""
        out = []
        if self.needs_audio and ev.audio_usable and ev.audio is None and not self.text_decides(ev):
            out.append("audio")  # still running (or not started: see TurnOptions.audio_when)
        if self.needs_text and ev.text_usable and ev.text is None:
            out.append("transcript")  # the transcript, or the model's reading of it, is still coming
        return tuple(out)

    @property
    def earliest_ms(self) -> int:
        """The silence at which evidence is first looked at (and the turn run speculatively)."""
        return self.o.min_silence_ms if self.adaptive else self.fixed_silence_ms

    def score(self, ev: TurnEvidence) -> float | None:
        """The evidence in log-odds from the decision point: >= 0 says complete (None: none)."""
        terms = []
        if self.needs_audio and ev.audio_usable and ev.audio is not None:
            weight = self.o.audio_weight if self.policy == "combined" else 1.0
            audio = min(max(ev.audio, AUDIO_P_RANGE[0]), AUDIO_P_RANGE[1])
            terms.append(weight * (_logit(audio) - _logit(self.o.audio_threshold)))
        if self.needs_text and ev.text_usable and ev.text is not None:
            terms.append(_logit(ev.text) - _logit(self.o.text_threshold))
        return sum(terms) if terms else None

    def text_decides(self, ev: TurnEvidence) -> bool:
        """``combined`` only: the transcript's reading alone settles the answer, since no audio
        probability (within ``AUDIO_P_RANGE``, at ``audio_weight``) could turn it. The turn
        then need not wait for the audio model, nor run it (``TurnOptions.audio_when``)."""
        if self.policy != "combined" or not ev.text_usable or ev.text is None:
            return False
        t = _logit(ev.text) - _logit(self.o.text_threshold)
        w, th = self.o.audio_weight, _logit(self.o.audio_threshold)
        return t + w * (_logit(AUDIO_P_RANGE[0]) - th) >= 0 or t + w * (_logit(AUDIO_P_RANGE[1]) - th) < 0

    def waits_on_audio(self, ev: TurnEvidence) -> bool:
        """The evidence in says "incomplete" and only the audio model's answer can turn it: the
        turn does not end before that answer (the deadline heeds an "incomplete" that arrived)
        or ``max_silence_ms``, so the answer is on the turn's path whatever the reply's compute."""
        if not self.needs_audio or not ev.audio_usable or ev.audio is not None or self.text_decides(ev):
            return False
        z = self.score(ev)
        return z is not None and z < 0

    def audio_needed(self, ev: TurnEvidence) -> bool:
        """Should the audio model run now? With ``audio_when = "undecided"`` (``combined``):
        only once the transcript signal is in and leaves the answer open, or will not come;
        ``"auto"``: so where a usable transcript is expected, else at once."""
        if not self.needs_audio:
            return False
        if self.o.audio_when == "always" or not self.needs_text:
            return True
        if self.o.audio_when == "auto" and not ev.text_expected:
            return True
        if ev.text_usable and ev.text is None:
            return False  # not yet known
        return not self.text_decides(ev)

    def probability(self, ev: TurnEvidence) -> float | None:
        """The evidence as one P(complete): the single signal's own, or for ``combined`` the
        fused score mapped back to a probability (0.5 at the decision point)."""
        if self.policy == "smart-turn":
            return ev.audio if ev.audio_usable else None
        if self.policy == "transcript":
            return ev.text if ev.text_usable else None
        z = self.score(ev)
        return None if z is None else 1.0 / (1.0 + math.exp(-z))

    def decide(self, silence_ms: float, ev: TurnEvidence) -> TurnDecision | None:
        """End the turn now (a decision) or keep waiting (None)."""
        if not self.adaptive:
            return TurnDecision("silence", None, silence_ms) if silence_ms >= self.fixed_silence_ms else None
        missing = self.missing(ev)
        if silence_ms >= self.max_wait_ms:
            return TurnDecision("max-silence", self.probability(ev), silence_ms, missing)
        if silence_ms < self.o.min_silence_ms:
            return None
        if missing:
            deadline = self.deadline_ms
            if deadline is None or silence_ms < deadline:
                return None  # wait for it
            # past the deadline: decide on what did arrive; "incomplete" from it is still heeded
            z = self.score(ev)
            if z is not None and z < 0:
                return None  # the rest may still turn it, else max_silence_ms ends the turn
            return TurnDecision("deadline", self.probability(ev), silence_ms, missing)
        z = self.score(ev)
        if z is None:  # no usable evidence at all: the fixed silence decides
            return TurnDecision("fallback-silence", None, silence_ms) if silence_ms >= self.fallback_ms else None
        if z >= 0:
            return TurnDecision(self.policy, self.probability(ev), silence_ms)
        return None


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def text_usable(text: str, language: str | None) -> bool:
    """Is ``text`` evidence of what was said? It needs letters, and not mostly in another script
    than ``language``'s (``engine.script``): digits or symbols alone ("2. 2") are not."""
    return any(c.isalpha() for c in text) and script_ok(text, language) is not False
