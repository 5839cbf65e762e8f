"""The audio pump: every 20 ms, mic (or replay) audio goes through the echo backend (WebRTC
canceller or reference gate, see ``echo.py``) to the agent link, and the played reference
goes to the echo backend. It runs on the event loop and only
moves small numpy arrays (no model work): the PortAudio callbacks have already copied
their blocks into rings, so nothing here can make them wait."""

from __future__ import annotations

import numpy as np

from s2s_tui.audio import ChunkRing, Sink, Source, level_db
from s2s_tui.echo import EchoBackend, make_echo
from s2s_tui.link import AgentLink


class AudioPump:
    """``tick()`` moves what arrived since the last tick. ``level()`` is the last ~100 ms."""

    def __init__(self, source: Source | None, sink: Sink, link: AgentLink, echo: EchoBackend | str = "auto"):
        self.source, self.sink, self.link = source, sink, link
        self.echo: EchoBackend = make_echo(echo) if isinstance(echo, str) else echo
        self.muted = False
        self.recording = True  # push-to-talk: False until the talk key is pressed
        self._levels: list[float] = []
        self.last_level_db = -100.0
        self.sent_samples = 0

    def set_source(self, source: Source | None) -> None:
        self.source = source

    def tick(self) -> None:
        ref = self.sink.reference.drain()
        if len(ref):
            self.echo.far(ref)
        ring: ChunkRing | None = self.source.ring if self.source is not None else None
        mic = ring.drain() if ring is not None else np.zeros(0, np.float32)
        if not len(mic):
            return
        self.last_level_db = level_db(mic)
        out = self.echo.process(mic)
        if not len(out):
            return
        if self.muted or not self.recording:
            out = np.zeros_like(out)
        self.link.send_audio(out)
        self.sent_samples += len(out)
