"""Fine-tune Telugu ASR (Whisper -> CTranslate2) and TTS (SpeechT5) for the engine; evaluate them.

The ``s2s-train`` console script (``training.cli``). Modules: ``data`` (prepare), ``asr``,
``tts``, ``evaluate`` (Whisper -> CTranslate2 exports use :mod:`engine.ct2_convert`, the
engine's own conversion for ``s2s-engine models fetch``), ``loop`` (the shared training loop), ``text`` (the engine's
Telugu text front end, :mod:`engine.text`, plus SentencePiece model files), ``tiny`` and
``synth`` (offline tiny models and an espeak-ng dataset for tests).
"""
