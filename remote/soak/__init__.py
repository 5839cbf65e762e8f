"""``s2s-engine bench soak``: many users, for a long time, against a headless engine, watched from outside.

    s2s-engine bench soak [--sessions N] [--minutes T] [--url ws://... [--pid PID]]
                          [--profile P] [--set k=v]... [--max-sessions M] [--allocator auto|jemalloc|glibc]
                          [--server-env K=V]...
                          [--wavs FILE_OR_DIR ...] [--kill-share F] [--hostile-share F] [--stall-share F]
                          [--stall-s S] [--sample-s S] [--warmup-min W] [--window-min W]
                          [--json OUT] [--plot OUT.svg] [--seed N]

**The server.** Without ``--url`` the command starts ``s2s-engine --headless`` as a subprocess on
127.0.0.1 (a port the OS picks; ``--max-sessions`` default N + 2 so a reconnect never waits for
the close of the client's previous connection), with its stderr captured to a log file, and stops it
with SIGTERM at the end. ``--server-env MALLOC_ARENA_MAX=2`` sets its environment (allocator
experiments). With ``--url`` it soaks a server that is already running; memory, fds and threads
are then sampled only if ``--pid`` names its process on this machine, and server errors are not
counted (there is no log to read).

**The clients.** ``--sessions`` users run at once, each in a loop until ``--minutes`` are over:
connect; one or two turns (``--turns-max``); disconnect. A turn is the audio of one WAV (default the bundled
``engine/assets/sample_te.wav``; ``--wavs`` files or folders, e.g. those of ``s2s-engine bench
make-wavs``) as 20 ms ``input_audio_buffer.append`` messages paced in real time, then silence
(20 ms appends) until the reply's first audio (server VAD ends the turn), then wait for
``response.done``, then listen while the reply "plays" (its audio length) before the next turn.
Voice-to-voice is measured by the client's clock: from the moment the last chunk holding speech was
sent (the end of the user's speech in the WAV, found by energy) to the arrival of the first
``response.output_audio.delta``. Each new connection takes the next role of a deck shared by all
clients (:class:`~remote.soak.clients.RoleDeck`: smooth weighted round-robin, so the shares hold
exactly, not by luck):

- ``kill`` (``--kill-share``, default 0.15): at the first reply audio, the socket is aborted (no
  close frame): a phone that lost its network mid-reply.
- ``hostile`` (``--hostile-share``, default 0.15): before its turn, a burst of bad messages: not
  JSON, an unknown ``type``, a wrong field type, invalid base64, audio of an odd byte count, a
  message over the server's ``max_message_bytes`` (from ``/healthz``); each must get a Realtime
  ``error`` event, and the turn after it must still complete.
- ``stall`` (``--stall-share``, default 0.1): at the first reply audio, the client stops reading
  its socket (``transport.pause_reading()``: no WebSocket pongs either) for ``--stall-s`` (default
  45 s, past the server's 20 s + 20 s keepalive); the server may cut it (close 1011) or the
  turn may finish; either way the server must not be harmed.
- otherwise ``normal``.

**Sampling.** Every ``--sample-s`` (default 30) the server process is read from ``/proc``: RSS
(``VmRSS``; the verdict and the plot use the process's own, the report also has it with any child
processes, e.g. a running espeak-ng), open fds, threads, and ``/proc/loadavg`` (the
machine's load, since other work on it moves the latency); ``/readyz`` gives the session counts;
the log gives ERROR lines and tracebacks so far; plus the voice-to-voice p50/p95 of the turns
that ended since the previous sample.

**Verdict** (:func:`~remote.soak.report.verdict`, bounds in :class:`~remote.soak.options.Bounds`):
after ``--warmup-min`` (5) minutes the RSS stays within 3 % of its value then; fds and threads stay
within 2 of the most seen during the warm-up (the same load, so the same sockets and pool
threads); no ERROR line or traceback in the server's log and the server still up; the
voice-to-voice p50 of every ``--window-min`` (5) window at most 10 % above that of the first
window (a faster later window is no regression; a window with under 5 turns is not judged). The exit code is 1 when it fails.

**Output**: a one-screen live view (rich: progress bar and the latest sample), the JSON
(``--json``, schema ``s2s.bench.soak/1``) and a plot of memory and latency over time (``--plot``,
SVG drawn by :mod:`remote.soak.plot`; no plotting library is needed).

The clients speak the wire as plain JSON over :mod:`websockets`, not through :mod:`remote.protocol`:
what is soaked is the server as any Realtime client sees it. Every client time comes from one
monotonic clock (``time.perf_counter_ns``, :func:`engine.clock.now_ns`).

Each job has its module:

- :mod:`remote.soak.options`: the options, the roles and the bounds of a healthy soak;
- :mod:`remote.soak.results`: what the clients saw (each turn, the tally) and its percentiles;
- :mod:`remote.soak.clients`: the utterances, the hostile messages, the deck of roles and one user;
- :mod:`remote.soak.watch`: the server from outside (``/proc``, ``/readyz``, its log) and the
  headless engine as a subprocess;
- :mod:`remote.soak.report`: the verdict, the live view and the tables;
- :mod:`remote.soak.plot`: the SVG plot;
- :mod:`remote.soak.run`: the soak itself, start to end, and its command line.
"""

from __future__ import annotations

from remote.soak.clients import (
    CHUNK,
    RATE,
    Client,
    RoleDeck,
    Utterance,
    hostile_messages,
    load_utterances,
    speech_end,
)
from remote.soak.options import ROLES, Bounds, SoakOptions
from remote.soak.report import latency_windows, render, sample_table, verdict
from remote.soak.results import Tally, Turn
from remote.soak.run import SCHEMA, cmd_soak, register, run_soak, soak
from remote.soak.watch import Headless, Sampler, read_proc

__all__ = ["CHUNK", "RATE", "ROLES", "SCHEMA", "Bounds", "Client", "Headless", "RoleDeck", "Sampler",
           "SoakOptions", "Tally", "Turn", "Utterance", "cmd_soak", "hostile_messages", "latency_windows",
           "load_utterances", "read_proc", "register", "render", "run_soak", "sample_table", "soak", "speech_end",
           "verdict"]
