"""espeak-ng Telugu voice (the offline default TTS).

espeak-ng is a rule-based formant synthesiser with a Telugu voice (``te``) in Debian; it
speaks a sentence in about 15 ms on one CPU core, so it never holds the reply back. It is
intelligible, not natural: the gpu profile uses MMS VITS instead. Run as a subprocess
(``--stdout`` gives a WAV) so a crash in the synthesiser cannot take the engine down.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import unicodedata

import numpy as np

from engine.config import TTSOptions
from engine.errors import ModelError, StageError
from engine.stages.base import TTSBackend


class EspeakTTS(TTSBackend):
    name = "espeak-ng"
    sample_rate = 22_050

    def __init__(self, options: TTSOptions, model_path: str | None = None):
        self.options = options
        self.voice = options.model if options.backend == "espeak-ng" else "te"
        self.exe: str | None = None

    def setup(self) -> None:
        self.exe = shutil.which("espeak-ng")
        if self.exe is None:
            raise ModelError("tts", f"espeak-ng voice {self.voice}", None, "espeak-ng is not installed",
                             "apt-get install -y espeak-ng (scripts/setup.sh does this)")
        voices = subprocess.run([self.exe, "--voices"], capture_output=True, text=True, timeout=10).stdout
        if not any(line.split()[1:2] == [self.voice] for line in voices.splitlines()[1:]):
            raise ModelError("tts", f"espeak-ng voice {self.voice}", self.exe, "no such voice",
                             "set tts.model to a voice from `espeak-ng --voices` (Telugu is te)")
        self.synthesize("నమస్కారం")  # warm the page cache

    def synthesize(self, text: str) -> np.ndarray:
        import soundfile as sf

        text = unicodedata.normalize("NFC", text).strip()
        if not text:
            return np.zeros(0, np.float32)
        try:
            # the text goes in on stdin: as an argument, a reply starting with "-" is an option
            proc = subprocess.run(
                [self.exe, "-v", self.voice, "-s", str(self.options.speed), "--stdout", "-b", "1", "--stdin"],
                input=text.encode("utf-8"), capture_output=True, timeout=30,
            )
        except subprocess.TimeoutExpired:
            raise StageError("tts", "espeak-ng timed out") from None
        if proc.returncode != 0 or len(proc.stdout) < 44:
            raise StageError("tts", f"espeak-ng failed: {proc.stderr.decode(errors='replace').strip()[:200]}")
        audio, rate = sf.read(io.BytesIO(proc.stdout), dtype="float32")
        self.sample_rate = rate
        return audio if audio.ndim == 1 else audio.mean(axis=1)

    def describe(self) -> dict:
        return {"backend": self.name, "model": f"espeak-ng voice {self.voice}", "path": self.exe, "device": "cpu"}
