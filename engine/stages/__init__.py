"""Stage interfaces (``base``) and their backends, one module per backend.

Backends import their heavy library (onnxruntime, ctranslate2, llama_cpp, torch,
transformers) inside their own module only; ``engine.registry`` imports them lazily.
"""
