"""One root for every error the engine raises on purpose.

Each error says what went wrong and, where there is one, what to do next. The CLI, the
WebSocket server and the TUI catch :class:`S2SError` and show its message; anything else
is a bug.

- :class:`S2SError` — the root.
  - :class:`ConfigError` — a profile or a ``--set`` override is wrong.
  - :class:`ModelError` — a model is missing, broken or failed to load.
  - :class:`AudioError` — audio input that cannot be used (corrupt, empty, wrong format).
  - :class:`ResponseInProgress` — a response was asked for while one is running.
  - :class:`BackendUnavailable` — a backend's library is not installed.
  - :class:`StageError` — a stage failed while running a turn.

The layers above subclass it too, so one ``except S2SError`` catches every deliberate error:

- ``remote.protocol.ProtocolError`` — a client event the server refuses (it becomes a Realtime
  ``error`` event).
- ``remote.client.NotConnected`` and ``AuthError`` — the client's link is down or refused (also
  ``ConnectionError``).
- ``remote.browser.BrowserError`` — the browser test driver cannot run.
- ``s2s_tui.audio.AudioUnavailable`` and ``s2s_tui.echo.EchoUnavailable`` — no usable sound
  device, or an echo canceller that cannot run here.
- ``training.data.DataError`` — a dataset cannot be read at all.
"""

from __future__ import annotations


class S2SError(Exception):
    """Root of every deliberate engine error; ``str(err)`` is meant for the user."""

    code = "s2s_error"


class ConfigError(S2SError):
    code = "invalid_config"


class ModelError(S2SError):
    """A model is missing, broken or failed to load; the message names model, path and fix."""

    code = "model_error"

    def __init__(self, stage: str, model: str, path: str | None, problem: str, fix: str | None = None):
        self.stage, self.model, self.path, self.problem, self.fix = stage, model, path, problem, fix
        msg = f"{stage} model {model!r}"
        if path:
            msg += f" at {path}"
        msg += f": {problem}"
        if fix:
            msg += f" — {fix}"
        super().__init__(msg)


class ResponseInProgress(S2SError):
    """A response was asked for while another one is still being produced."""

    code = "conversation_already_has_active_response"


class AudioError(S2SError):
    code = "invalid_audio"


class BackendUnavailable(S2SError):
    code = "backend_unavailable"


class StageError(S2SError):
    """A stage failed during one turn; the session reports it and carries on."""

    code = "stage_error"

    def __init__(self, stage: str, message: str):
        self.stage = stage
        super().__init__(f"{stage}: {message}")
