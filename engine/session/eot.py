"""The end of a user's turn: the turn held at the first pause, and the evidence that decides
whether that pause is the end.

:class:`~engine.turn.TurnPolicy` decides; this part gathers what it decides on, for the one
turn the Session holds at a time:

1. At the first short silence the Session starts the turn at once, *held* (its transcript and
   reply are made but kept back), and hands it to :meth:`EndOfTurn.hold`.
2. The evidence comes in while the silence lasts:

   - the audio turn model on the turn's audio (:meth:`EndOfTurn.maybe_predict`): at once, or,
     with no spare core at the pause, after the held reply's first audio, so that it takes no
     CPU from the reply; unless the transcript's reading has come and only the audio model
     can still end the turn (``TurnPolicy.waits_on_audio``);
   - the LLM's reading of the transcript (:meth:`EndOfTurn.on_text`), or word that none will
     come (:meth:`EndOfTurn.no_text`).

3. After every frame of silence and every piece of evidence, :meth:`EndOfTurn.check` asks the
   policy whether the silence so far ends the turn; if it does, the Session ends it there, and
   :meth:`EndOfTurn.claim` hands the held turn over, with what it already made.
4. Speech that starts again before that drops the held turn (:meth:`EndOfTurn.drop`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from engine.clock import now_ns
from engine.config import TurnOptions
from engine.events import ErrorEvent, SessionEvent
from engine.session.turns import Turn
from engine.turn import TurnDecision, TurnEvidence, TurnPolicy

if TYPE_CHECKING:
    from engine.engine import Engine

log = logging.getLogger(__name__)


class EndOfTurn:
    """The held turn of one session, and its end-of-turn evidence.

    Args:
        session_id: names its tasks.
        engine: the shared engine (its audio turn model and worker, its idle-core reading).
        options, fixed_ms: the session's ``turn.*`` options and its fixed end-of-turn silence,
            which make its policy (:meth:`use` makes it again when the client updates them).
        emit: where an error event goes (the audio model failed: the transcript decides).
        pause_ms: how long the current pause has lasted, or None outside a pause.
        end_now: the Session ends the turn at once, decided so (if it is still in its pause).
    """

    def __init__(self, session_id: str, engine: Engine, options: TurnOptions, fixed_ms: int,
                 emit: Callable[[SessionEvent], None], pause_ms: Callable[[], int | None],
                 end_now: Callable[[TurnDecision], None]):
        self.id, self.engine = session_id, engine
        self._emit, self._pause_ms, self._end_now = emit, pause_ms, end_now
        self.held: Turn | None = None  # the turn started at the pause, while its end is open
        self.use(options, fixed_ms)

    def use(self, options: TurnOptions, fixed_ms: int) -> None:
        """The session's ``turn.*`` options and fixed silence (again, after an update)."""
        self.options, self.policy = options, TurnPolicy(options, fixed_ms)

    @property
    def evidence(self) -> TurnEvidence:
        """What the held turn's evidence says so far (no turn held: nothing to wait for)."""
        return self.held.evidence if self.held is not None else TurnEvidence(text_usable=False)

    def decide_at_most(self, silence_ms: int) -> TurnDecision:
        """The pause reached the policy's longest wait: the decision, with the evidence in."""
        return self.policy.decide(silence_ms, self.evidence) or TurnDecision("max-silence", None, silence_ms)

    def hold(self, turn: Turn, idle_cores: float | None, language: str, clip: Callable[[], np.ndarray]) -> None:
        """``turn`` was started at a pause, held: gather the policy's evidence for it.
        ``idle_cores``: what other work left of the cores before the turn's own started;
        ``clip``: the turn's audio so far, for the audio model."""
        self.drop()
        self.held = turn
        turn.note_cores(idle_cores, self.options.audio_spare_cores)
        if not self.policy.needs_text:
            turn.evidence.text_usable = False
        turn.evidence.text_expected = self.engine.text_evidence.get(language, False)
        if self.policy.needs_audio and self.engine.turn_model is not None:
            turn.audio_clip = clip()
            self.maybe_predict(turn)  # now, or once the transcript leaves the answer open
        else:
            turn.evidence.audio_usable = False

    def maybe_predict(self, turn: Turn) -> None:
        """Start the audio turn model on the held turn's audio if the policy wants it now."""
        if turn.audio_clip is None or turn.predict_task is not None or self.held is not turn:
            return
        if not self.policy.audio_needed(turn.evidence):
            return
        if turn.audio_after_reply and not turn.reply_made and not self.policy.waits_on_audio(turn.evidence):
            return  # no spare core: the reply's compute first (unless the turn now waits on this model)
        turn.metrics.turn_audio_after_reply = turn.audio_after_reply and turn.reply_made
        audio, turn.audio_clip = turn.audio_clip, None
        turn.predict_task = asyncio.create_task(self._predict(turn, audio), name=f"{self.id}-{turn.id}-turn-model")

    async def _predict(self, turn: Turn, audio: np.ndarray) -> None:
        loop = asyncio.get_running_loop()
        try:
            p = await loop.run_in_executor(self.engine.turn_pool, turn.predict, self.engine.turn_model, audio)
        except Exception as exc:  # noqa: BLE001 - without the audio model, the transcript decides
            log.exception("turn model")
            self._emit(ErrorEvent(getattr(exc, "code", "turn_failed"), f"the turn model failed: {exc}", "turn",
                                  turn.id))
            p = None
        if self.held is turn:
            turn.evidence.audio, turn.evidence.audio_usable = p, p is not None
            self.check()

    def on_reply_audio(self, turn: Turn) -> None:
        """The held reply made its first audio: the cores are the audio model's now."""
        if not turn.reply_made:
            turn.reply_made = True
            self.maybe_predict(turn)

    def on_text(self, turn: Turn, p: float | None, at_ns: int | None = None) -> None:
        """The language model read the held turn's transcript (on the event loop; ``at_ns``:
        when it did, in the LLM's thread): ``p``, the chance it is complete, or None."""
        turn.metrics.turn_text_probability = p
        if p is None:
            turn.evidence.text_usable = False
        else:
            turn.evidence.text = p
            turn.metrics.turn_text_ns = at_ns or now_ns()
        if self.held is turn:
            self.maybe_predict(turn)
            self.check()

    def no_text(self, turn: Turn) -> None:
        """The held turn will not give the policy a text signal (no transcript worth reading,
        or no reply to read it in): stop waiting for one."""
        if turn.held and turn.evidence.text_usable and turn.evidence.text is None:
            turn.evidence.text_usable = False
            if self.held is turn:
                self.maybe_predict(turn)
                self.check()

    def check(self) -> None:
        """Ask the policy whether the pause so far, with the evidence in, ends the turn."""
        silence = self._pause_ms()
        if silence is None:
            return
        decision = self.policy.decide(silence, self.evidence)
        if decision is not None:
            self._end_now(decision)

    def claim(self, turn_id: str, end_sample: int) -> Turn | None:
        """The turn ended at ``end_sample``: the held turn if it is that one (it goes on, and
        is no longer held here); otherwise it is dropped, and None."""
        turn = self.held
        if turn is not None and turn.id == turn_id and turn.end_sample == end_sample and turn.task is not None:
            self.held = None
            if turn.predict_task is not None and not turn.predict_task.done():
                turn.predict_task.cancel()  # decided without it (a fixed or maximum wait, the deadline)
            return turn
        self.drop()
        return None

    def drop(self) -> None:
        """The user went on speaking: throw the held turn away (it emitted nothing)."""
        turn, self.held = self.held, None
        if turn is not None:
            turn.drop()


__all__ = ["EndOfTurn"]
