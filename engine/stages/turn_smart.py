"""Smart Turn v3 end-of-turn model (ONNX) on onnxruntime.

Smart Turn v3.2 (pipecat-ai, BSD-2-Clause) is a Whisper-tiny encoder with a small classifier
head: it hears the last 8 s of the user's turn and gives P(the turn is complete), from
prosody and words together. The int8 CPU export is 8.7 MB and runs in tens of milliseconds on
one core, so it fits in the first short silence. It ships inside the ``pipecat-ai`` wheel
(``pkg:smart-turn-v3.2``, see ``engine.models``); ``s2s-train turn`` exports fine-tuned
versions with the same input and output, which load here by path.

Input: Whisper log-Mel features (80 bins, 10 ms hop) of exactly 8 s at 16 kHz, the audio
zero-mean/unit-variance normalised and zero-padded at the front. faster-whisper's numpy
feature extractor computes the same log-Mel as ``transformers.WhisperFeatureExtractor`` (no
torch, no transformers at run time). Output: a sigmoid probability, shape (batch, 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from engine.audio import ENGINE_RATE
from engine.config import TurnOptions
from engine.errors import ModelError
from engine.stages.base import TurnBackend

WINDOW_S = 8
WINDOW = WINDOW_S * ENGINE_RATE


def features(audio: np.ndarray, extractor: Any = None) -> np.ndarray:
    """(80, 800) float32 log-Mel of the last 8 s of ``audio`` (zero-padded at the front)."""
    if extractor is None:
        from faster_whisper.feature_extractor import FeatureExtractor

        extractor = FeatureExtractor(feature_size=80, chunk_length=WINDOW_S)
    x = np.asarray(audio, np.float32)[-WINDOW:]
    if len(x) < WINDOW:
        x = np.concatenate([np.zeros(WINDOW - len(x), np.float32), x])
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    return extractor(x.astype(np.float32), padding=0)[:, : WINDOW // 160].astype(np.float32)


class SmartTurn(TurnBackend):
    name = "smart-turn"

    def __init__(self, options: TurnOptions, model_path: str):
        self.options, self.model_path = options, model_path
        self._session = None
        self._extractor = None
        self._input = "input_features"

    def setup(self) -> None:
        import onnxruntime as ort
        from faster_whisper.feature_extractor import FeatureExtractor

        path = Path(self.model_path).expanduser()
        if not path.is_file():
            raise ModelError("turn", self.options.model, str(path), "file not found",
                             "set turn.model to a Smart Turn ONNX file, or run scripts/setup.sh")
        so = ort.SessionOptions()
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.inter_op_num_threads = 1
        so.intra_op_num_threads = max(1, self.options.threads)
        try:
            self._session = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidGraph types
            raise ModelError("turn", self.options.model, str(path), f"not a loadable ONNX model ({exc})") from None
        inputs = self._session.get_inputs()
        shape = list(inputs[0].shape) if inputs else []
        if len(inputs) != 1 or len(shape) != 3 or shape[1:] != [80, WINDOW // 160]:
            self._session = None
            raise ModelError("turn", self.options.model, str(path),
                             f"not a Smart Turn model (input {shape}, want [batch, 80, {WINDOW // 160}])")
        self._input = inputs[0].name
        self._extractor = FeatureExtractor(feature_size=80, chunk_length=WINDOW_S)
        self.predict(np.zeros(ENGINE_RATE, np.float32))  # warm up: the first run allocates

    def predict(self, audio: np.ndarray) -> float:
        if self._session is None:
            from engine.errors import StageError

            raise StageError("turn", "the turn model was used before setup()")
        x = features(audio, self._extractor)[None]
        out = self._session.run(None, {self._input: x})[0]
        return float(np.clip(np.asarray(out, np.float64).reshape(-1)[0], 0.0, 1.0))

    def close(self) -> None:
        self._session = None

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.options.model, "path": self.model_path, "device": "cpu",
                "threads": self.options.threads}
