"""The wire protocol: a compatible subset of the OpenAI Realtime API (GA) plus ``s2s.`` extensions.

A pure package, no I/O. The WebSocket server (:mod:`remote.server`) and client
(:mod:`remote.client`) are thin asyncio layers over it, so every rule here is tested without a
socket (``tests/test_protocol.py``, ``tests/test_rules.py``). The protocol is written down in
``docs/protocol.md``. One module per job:

========================  ==========================================================================
``base``                  limits, enums of the wire's codes (:class:`CloseCode`, :class:`ErrorCode`),
                          :class:`ProtocolError` (the one exception), the pydantic base of every shape
``formats``               audio formats: :class:`AudioFormat`, their negotiation and coding
``g711`` / ``opus``       the coders of ``audio/pcmu``/``audio/pcma`` (numpy) and ``s2s.opus`` (PyAV)
``session``               the session object: :class:`SessionPatch` (an update), :class:`SessionConfig`
``client_events``         the client's events, :func:`parse_client_event`
``server_events``         the server's events, :func:`parse_server_event`
``mapper``                engine events to server events (:class:`EventMapper`)
``rules``                 the session rules as a sans-I/O state machine (:class:`SessionRules`)
========================  ==========================================================================

Why these choices:

- The event names and shapes are Realtime GA's (``session.update``, ``input_audio_buffer.append``,
  ``response.output_audio.delta``...), so stock Realtime clients and SDKs talk to the engine.
- Our own events live in the ``s2s.`` namespace (``s2s.turn.metrics``, ``s2s.stats``,
  ``s2s.ping``/``s2s.pong``); extra fields inside Realtime objects start with ``s2s`` too. Stock
  clients ignore both.
- Each event and object is one pydantic model of its JSON: the model validates what arrives
  (strict JSON types, constraints, our error codes) and writes what leaves; a validation failure
  becomes one :class:`ProtocolError` naming the field as a dotted path.
- Besides pydantic, only numpy and the standard library are imported (plus the light
  :mod:`engine.events`, :mod:`engine.audio` for its soxr stream resampler, and
  :mod:`remote.codec_format`, the Encodec packet format); the Encodec model is loaded by the server,
  and PyAV (libopus) only when a session asks for ``s2s.opus``.

Everything public is importable from here (``from remote import protocol as p``).
"""

from remote.protocol import base, client_events, formats, mapper, rules, server_events, session
from remote.protocol.base import *  # noqa: F403 - the package re-exports each module's __all__
from remote.protocol.client_events import *  # noqa: F403
from remote.protocol.formats import *  # noqa: F403
from remote.protocol.mapper import *  # noqa: F403
from remote.protocol.rules import *  # noqa: F403
from remote.protocol.server_events import *  # noqa: F403
from remote.protocol.session import *  # noqa: F403

__all__ = [name for m in (base, formats, session, client_events, server_events, mapper, rules) for name in m.__all__]
