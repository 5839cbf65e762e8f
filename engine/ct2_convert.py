"""Whisper (transformers) -> CTranslate2, the format faster-whisper loads.

``s2s-engine models fetch`` calls :func:`convert_whisper_to_ct2` for ``hf+ct2:`` models, and
``s2s-train asr`` for its exports (training imports it from here). It imports nothing heavy at
import time (ctranslate2 and transformers are imported inside) and has no side effects.

faster-whisper needs ``tokenizer.json`` and ``preprocessor_config.json`` next to
``model.bin`` (without them it goes to the hub for the tokenizer and guesses the mel
count). Older hub repos and transformers 5 processors may not have those two files under
those names: they are written into a staging folder of links before conversion, so the
source folder (possibly a read-only hub cache) is never modified.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

REQUIRED_FILES = ("tokenizer.json", "preprocessor_config.json")
_FLOAT16 = ("float16", "int8_float16", "bfloat16", "int8_bfloat16")


def convert_whisper_to_ct2(src_dir: str | Path, out_dir: str | Path, quantization: str = "float16") -> Path:
    """Convert a transformers Whisper folder to a CTranslate2 folder faster-whisper loads.

    ``quantization`` is a CTranslate2 weight type: "float16" (GPU), "int8" (CPU),
    "int8_float16", "float32", ... The output is written next to ``out_dir`` and moved into
    place at the end, so an interrupted conversion leaves no half folder. Returns ``out_dir``.
    """
    import ctranslate2

    src, out = Path(src_dir).expanduser(), Path(out_dir).expanduser()
    if not (src / "config.json").exists():
        raise FileNotFoundError(f"{src} is not a transformers Whisper folder (no config.json)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ct2-stage-", dir=out.parent) as stage_dir:
        stage = Path(stage_dir) / "model"
        stage.mkdir()
        for item in src.iterdir():
            (stage / item.name).symlink_to(item.resolve())
        _ensure_tokenizer_json(src, stage)
        _ensure_preprocessor_config(src, stage)
        converter = ctranslate2.converters.TransformersConverter(
            str(stage),
            copy_files=list(REQUIRED_FILES),
            load_as_float16=quantization in _FLOAT16,
            low_cpu_mem_usage=True,
        )
        tmp_out = Path(stage_dir) / "out"
        converter.convert(str(tmp_out), quantization=quantization, force=True)
        if out.exists():
            shutil.rmtree(out)
        shutil.move(str(tmp_out), str(out))
    return out


def _ensure_tokenizer_json(src: Path, stage: Path) -> None:
    if (stage / "tokenizer.json").exists():
        return
    from transformers import WhisperTokenizer

    tok = WhisperTokenizer.from_pretrained(str(src))
    tok_dir = stage / "_tok"
    tok.save_pretrained(str(tok_dir))
    if not (tok_dir / "tokenizer.json").exists():
        raise FileNotFoundError(f"could not build tokenizer.json for {src}")
    shutil.copy(tok_dir / "tokenizer.json", stage / "tokenizer.json")


def _ensure_preprocessor_config(src: Path, stage: Path) -> None:
    if (stage / "preprocessor_config.json").exists():
        return
    proc = src / "processor_config.json"
    if proc.exists():
        data = json.loads(proc.read_text())
        if "feature_extractor" in data:
            (stage / "preprocessor_config.json").write_text(json.dumps(data["feature_extractor"], indent=2))
            return
    # fall back to the model's mel count: enough for faster-whisper's feature extractor
    n_mels = json.loads((src / "config.json").read_text()).get("num_mel_bins", 80)
    from transformers import WhisperFeatureExtractor

    WhisperFeatureExtractor(feature_size=n_mels).save_pretrained(str(stage / "_fe"))
    shutil.copy(stage / "_fe" / "preprocessor_config.json", stage / "preprocessor_config.json")
