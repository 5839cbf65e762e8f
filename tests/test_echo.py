"""The echo gate, offline: the agent's reply mixed back into the mic (delayed, attenuated,
with and without a room's reverberation) must not make the engine's VAD hear speech, so
no barge-in; a user talking over it must. The VAD is the engine's real one (Silero +
TurnDetector, the code that decides barge-in in a Session)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.config import VADOptions
from engine.vad import TurnDetector
from s2s_tui.echo import EchoGate
from tests.conftest import speak

RATE = 16_000
FRAME = 320  # 20 ms, the pump's block


@pytest.fixture(scope="module")
def vad():
    from engine.models import resolve
    from engine.registry import backend_class

    o = VADOptions()
    backend = backend_class("vad", o.backend)(o, resolve("vad", o.model, "offline", None))
    backend.setup()
    return backend


@pytest.fixture(scope="module")
def voices(tmp_path_factory):
    from engine.audio import load_wav

    d = tmp_path_factory.mktemp("echo")
    reply, _ = load_wav(speak("నమస్కారం, నేను మీకు ఎలా సహాయం చేయగలను? ఈ రోజు వాతావరణం చాలా బాగుంది.",
                              d / "reply.wav", speed=150))
    user, _ = load_wav(speak("ఆపండి, నాకు వేరే ప్రశ్న ఉంది", d / "user.wav", speed=170))
    return reply, user


def speech_starts(vad, audio: np.ndarray) -> list[float]:
    """Seconds at which the engine's turn detector says speech started."""
    det = TurnDetector(VADOptions(), vad.frame_samples)
    state = vad.new_state()
    n = len(audio) // vad.frame_samples
    probs = vad.probabilities(state, audio[: n * vad.frame_samples].reshape(n, -1))
    starts = []
    for i, prob in enumerate(probs):
        e = det.update(i, float(prob), 0)
        if e is not None and e.kind == "start":
            starts.append(e.sample / RATE)
    return starts


def room(far: np.ndarray, delay_ms: int, gain: float, reverb: bool, seed: int = 0) -> np.ndarray:
    d = RATE * delay_ms // 1000
    echo = np.zeros_like(far)
    echo[d:] = gain * far[: len(far) - d]
    if reverb:  # a short decaying tail, as off a laptop's case and a desk
        rng = np.random.default_rng(seed)
        n = RATE * 60 // 1000
        ir = rng.standard_normal(n).astype(np.float32) * np.exp(-np.arange(n) / (0.012 * RATE)).astype(np.float32) * 0.07
        ir[0] = 1.0
        echo = np.convolve(echo, ir)[: len(far)].astype(np.float32)
    noise = 0.002 * np.random.default_rng(seed + 1).standard_normal(len(far)).astype(np.float32)
    return echo + noise


def through_gate(far: np.ndarray, mic: np.ndarray) -> tuple[np.ndarray, EchoGate]:
    gate = EchoGate()
    out = []
    for i in range(0, len(far) - FRAME + 1, FRAME):  # lock-step, as the pump does
        gate.far(far[i:i + FRAME])
        out.append(gate.process(mic[i:i + FRAME]))
    return np.concatenate(out), gate


def far_signal(reply: np.ndarray) -> np.ndarray:
    return np.concatenate([np.zeros(RATE // 2, np.float32), reply, np.zeros(RATE, np.float32)])


@pytest.mark.parametrize("delay_ms,gain,reverb", [(40, 1.0, False), (120, 0.5, False), (250, 0.3, True),
                                                  (180, 0.8, True)])
def test_echo_alone_does_not_barge_in(vad, voices, delay_ms, gain, reverb):
    reply, _ = voices
    far = far_signal(reply)
    mic = room(far, delay_ms, gain, reverb)
    assert speech_starts(vad, mic), "without the gate the VAD hears the echo (else this test proves nothing)"
    out, gate = through_gate(far, mic)
    assert speech_starts(vad, out) == []
    assert gate.stats["gated"] > 0.5 * len(reply) / FRAME


@pytest.mark.parametrize("delay_ms,gain,reverb,at_s", [(120, 0.5, False, 2.0), (250, 0.3, True, 1.5),
                                                       (180, 0.8, True, 2.5)])
def test_user_over_echo_barges_in(vad, voices, delay_ms, gain, reverb, at_s):
    reply, user = voices
    far = far_signal(reply)
    mic = room(far, delay_ms, gain, reverb)
    start = int(at_s * RATE)
    mic[start:start + len(user)] += 0.35 * user[: len(mic) - start]
    out, _ = through_gate(far, mic)
    starts = speech_starts(vad, out)
    assert starts, "the user talking over the agent must reach the VAD"
    assert starts[0] >= at_s - 0.35  # it is the user's speech, not the echo before it


def test_nothing_played_passes_unchanged(voices):
    _, user = voices
    far = np.zeros(len(user) + RATE, np.float32)
    mic = np.concatenate([user, np.zeros(RATE, np.float32)])
    out, gate = through_gate(far, mic)
    n = len(out)
    assert np.allclose(out, mic[:n])
    assert gate.stats["gated"] == 0
