"""Whisper (transformers) -> CTranslate2, the format faster-whisper loads.

``s2s-engine models fetch`` calls :func:`convert_whisper_to_ct2` for ``hf+ct2:`` models, and
``s2s-train asr`` for its exports (training imports it from here). It imports nothing heavy at
import time (ctranslate2 and transformers are imported inside) and has no side effects.

faster-whisper needs ``tokenizer.json`` and ``preprocessor_config.json`` next to
``model.bin`` (without them it goes to the hub for the tokenizer and guesses the mel
count). Older hub repos and transformers 5 processors may not have those two files under
those names: they are written into a staging folder of links before conversion, so the
source folder (possibly a read-only hub cache) is never modified.

Language detection needs the language list in CTranslate2's ``config.json`` (``lang_ids``),
which the converter takes from the generation config's ``lang_to_id``. Checkpoints saved in
2022 (``vasista22/whisper-telugu-large-v2`` among them) have a ``_from_model_config``
generation config without it, and under transformers 5 the converter's fallback (the
tokenizer's ``additional_special_tokens``) finds nothing either: the model converts with
``"lang_ids": []`` and every detection raises IndexError. The staged generation config gets
``lang_to_id`` from the vocabulary's ``<|xx|>`` language tokens instead, and loses its
``_from_model_config`` flag (transformers 5 ignores a generation config file that has it).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

REQUIRED_FILES = ("tokenizer.json", "preprocessor_config.json")
_GENERATION_KEYS = ("begin_suppress_tokens", "suppress_tokens", "decoder_start_token_id", "bos_token_id",
                    "eos_token_id", "pad_token_id", "max_length", "forced_decoder_ids")
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
        _ensure_lang_to_id(stage)
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


def language_tokens(tokenizer_json: Path) -> dict[str, int]:
    """``<|xx|>`` -> id for every language token of a Whisper ``tokenizer.json`` (its added
    tokens whose code is one of Whisper's languages): 99 in the large-v2 layout (``<|te|>`` is
    50299), 100 in large-v3's (``<|yue|>`` added)."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    found = {}
    for tok in data.get("added_tokens", []):
        m = re.fullmatch(r"<\|([a-z]{2,3})\|>", tok["content"])
        if m and m.group(1) in LANGUAGES:
            found[tok["content"]] = tok["id"]
    return found


def _ensure_lang_to_id(stage: Path) -> None:
    """Give the staged generation config a ``lang_to_id`` when it has none (see the module
    docstring); the source's file is a link, replaced here, never written through."""
    path = stage / "generation_config.json"
    if path.exists():
        config = json.loads(path.read_text(encoding="utf-8"))
    else:  # none at all: what transformers would derive from config.json, written out
        model = json.loads((stage / "config.json").read_text(encoding="utf-8"))
        config = {k: model[k] for k in _GENERATION_KEYS if k in model}
    if config.get("lang_to_id"):
        return
    langs = language_tokens(stage / "tokenizer.json")
    if not langs:
        return  # an English-only vocabulary: CTranslate2 forces English, there is nothing to detect
    config["lang_to_id"] = dict(sorted(langs.items(), key=lambda kv: kv[1]))
    config.setdefault("is_multilingual", True)
    config.pop("_from_model_config", None)  # with it, transformers 5 rebuilds the config from config.json
    if path.is_symlink() or path.exists():
        path.unlink()
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")


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
