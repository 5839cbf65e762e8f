"""Fine-tune Telugu ASR (Whisper -> CTranslate2) and TTS (SpeechT5) for the engine; evaluate them.

The ``s2s-train`` console script (``training.cli``). Modules: ``data`` (prepare), ``asr``,
``tts``, ``evaluate``, ``export`` (Whisper -> CTranslate2, also used by
``s2s-engine models fetch``), ``loop`` (the shared training loop), ``text`` (Telugu
normalisation and transliteration, shared with the engine's TTS backends), ``tiny`` and
``synth`` (offline tiny models and an espeak-ng dataset for tests).
"""
