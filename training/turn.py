"""``s2s-train turn``: fine-tune the Smart Turn end-of-turn model on Telugu, export ONNX for the engine.

Examples come from a prepared set (``s2s-train prepare``): every clip is a *complete* turn,
and cutting it at a word boundary before its last word makes an *incomplete* one. Both are
shaped as the engine hears a turn at its first short silence: leading and trailing silence
trimmed (``training.audio.trim_silence``), then ``tail_ms`` of silence appended, then the
engine's own features (``engine.stages.turn_smart.features``: the last 8 s, zero-padded at
the front, normalised, Whisper log-Mel). Label 1 is complete, as the model's output.

Word times (where a cut may fall), ``words``:

- ``data``: the prepared rows' own alignment, a ``words`` list of ``{"start", "end"}`` (or
  ``[start, end]``) in seconds, which ``prepare`` carries over from a JSONL manifest;
- ``asr``: faster-whisper's ``word_timestamps=True`` with an ASR model (``words_asr``, by
  default the profile's ``asr.model``: on the gpu profile a Telugu Whisper). The boundaries
  are cached in ``PREPARED/turn_words.json`` per model. The offline profile's Whisper base
  does not understand Telugu: its word times on Telugu audio are rough;
- ``auto``: ``data`` when every clip has an alignment, else ``asr``.

Output folder::

    model/                the fine-tuned torch model (s2s_turn.json + model.safetensors): --base to continue
    smart-turn-te.onnx    float ONNX for the engine: --set turn.model=OUT/smart-turn-te.onnx
    smart-turn-te-int8.onnx   with --int8: static int8 (QDQ), as the stock CPU file
    checkpoints/, loss.csv, train_config.json
    summary.json          examples per class, held-out accuracy before and after, the exports

``evaluate_turn`` (``s2s-train eval --turn``) scores any Smart Turn ONNX file through the
engine's own backend on the same kind of examples, or on a folder of ``complete/`` and
``incomplete/`` WAVs.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.audio import SAMPLE_RATE, load_audio, trim_silence
from training.data import DataError, load_split

COMPLETE, INCOMPLETE = 1, 0
WORDS_CACHE = "turn_words.json"
FEATURE_CACHE = 4096  # examples whose features are computed once and kept (256 KB each: 1 GB)


@dataclass
class TurnExamplesOptions:
    """How examples are made.

    Fields:
        words: where word times come from: "auto", "data" or "asr" (module docstring).
        words_asr: the ASR model for ``asr`` word times ("": the profile's ``asr.model``).
        profile: the engine profile whose ASR (model, device, language) gives word times.
        cuts_per_clip: incomplete examples cut from each clip (at different word boundaries).
        min_prefix_s: a cut keeps at least this much audio.
        tail_ms: silence appended to every example (the engine asks the model after ~200 ms).
        seed: which boundaries are cut.
    """

    words: str = "auto"
    words_asr: str = ""
    profile: str = "offline"
    cuts_per_clip: int = 1
    min_prefix_s: float = 0.5
    tail_ms: int = 200
    seed: int = 1234


@dataclass
class TurnTrainOptions:
    """Fields:
    base: the starting weights (``training.turn_model``): ``pkg:smart-turn-v3.2`` (offline, the
        stock model), a Smart Turn ONNX path, a Whisper checkpoint (``openai/whisper-tiny``,
        upstream's start) or an earlier ``s2s-train turn`` ``OUT/model``.
    freeze_encoder: train only the pooling and the classifier.
    threshold: P(complete) at or above which a clip counts as complete (the engine's
        ``turn.audio_threshold``).
    int8: also write a static int8 export, calibrated on up to ``calibration_clips`` clips.
    """

    base: str = "pkg:smart-turn-v3.2"
    freeze_encoder: bool = False
    threshold: float = 0.5
    int8: bool = False
    calibration_clips: int = 256


@dataclass(frozen=True)
class TurnExample:
    """One labelled clip: ``audio`` cut at ``end_s`` (None: whole), label 1 complete / 0 incomplete."""

    audio: str
    label: int
    end_s: float | None = None
    clip: str = ""


# ----------------------------------------------------------------------------- word times
def _parse_words(words: Any) -> list[tuple[float, float]] | None:
    """``[{"start", "end"}, ...]`` or ``[[start, end], ...]`` -> sorted (start, end); None if unusable."""
    if not isinstance(words, list):
        return None
    out = []
    for w in words:
        try:
            start, end = (w["start"], w["end"]) if isinstance(w, dict) else (w[0], w[1])
            start, end = float(start), float(end)
        except (KeyError, IndexError, TypeError, ValueError):
            return None
        if end > start >= 0:
            out.append((start, end))
    return sorted(out)


def asr_words(model: Any, audio: np.ndarray, language: str | None) -> list[tuple[float, float]]:
    """Word (start, end) times from a faster-whisper ``WhisperModel`` (greedy, token-capped as the
    engine's decode so a looping decode cannot run away; zero-length words dropped)."""
    from engine.stages.asr_whisper import max_new_tokens

    segments, _ = model.transcribe(
        np.asarray(audio, np.float32), language=language, task="transcribe", beam_size=1, temperature=0.0,
        word_timestamps=True, condition_on_previous_text=False, vad_filter=False,
        max_new_tokens=max_new_tokens(len(audio) / SAMPLE_RATE),
    )
    words, last = [], 0.0
    for seg in segments:  # the generator decodes as it is consumed
        for w in seg.words or []:
            start, end = max(float(w.start), last), float(w.end)
            if end - start >= 0.03:
                words.append((round(start, 3), round(end, 3)))
                last = end
    return words


def _load_asr(opts: TurnExamplesOptions) -> tuple[Any, str, str | None]:
    from faster_whisper import WhisperModel

    from engine.config import load_profile
    from engine.models import resolve

    profile = load_profile(opts.profile)
    ref = opts.words_asr or profile.asr.model
    path = resolve("asr", ref, profile.name, profile.asr.compute_type)
    device = profile.asr.device
    if device not in ("cpu", "cuda"):
        import ctranslate2

        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    compute = profile.asr.compute_type if device == "cuda" else "int8"
    if device == "cuda":
        from engine.cuda import preload

        preload()
    lang = profile.asr.language if profile.asr.language not in ("", "auto") else None
    return WhisperModel(path, device=device, compute_type=compute, local_files_only=True), ref, lang


def word_times(prepared: str | Path, items: list[dict[str, Any]],
               opts: TurnExamplesOptions) -> tuple[dict[str, list[tuple[float, float]]], str]:
    """Clip id -> word times, and where they came from ("data" or "asr:<model>")."""
    own = {it["id"]: _parse_words(it.get("words")) for it in items}
    mode = opts.words
    if mode not in ("auto", "data", "asr"):
        raise ValueError(f"--words must be auto, data or asr, not {mode!r}")
    if mode == "data" or (mode == "auto" and items and all(w is not None for w in own.values())):
        if any(w is None for w in own.values()):
            bad = sum(w is None for w in own.values())
            raise DataError(f"{bad} of {len(items)} clips in {prepared} have no word alignment "
                            "(a 'words' list in the JSONL manifest before prepare): use --words asr")
        return {k: v for k, v in own.items() if v is not None}, "data"
    cache_path = Path(prepared).expanduser() / WORDS_CACHE
    try:
        cache = json.loads(cache_path.read_text(encoding="utf-8")) if cache_path.exists() else {}
    except (OSError, json.JSONDecodeError):
        cache = {}
    if not (ref := opts.words_asr):
        from engine.config import load_profile

        ref = load_profile(opts.profile).asr.model
    clips = cache.get("clips", {}) if cache.get("asr") == ref else {}
    todo = [it for it in items if it["id"] not in clips]
    if todo:
        from tqdm.auto import tqdm

        model, ref, lang = _load_asr(opts)
        print(f"word times: {len(todo)} clip(s) through {ref} (word_timestamps; cached in {cache_path})")

        def save() -> None:  # as it goes: an interrupted pass keeps what it did
            cache_path.write_text(json.dumps({"asr": ref, "clips": clips}, ensure_ascii=False), encoding="utf-8")

        for n, it in enumerate(tqdm(todo, desc="word times", unit="clip", dynamic_ncols=True), 1):
            clips[it["id"]] = asr_words(model, load_audio(it["audio"], SAMPLE_RATE), lang)
            if n % 200 == 0:
                save()
        save()
    return {it["id"]: [tuple(w) for w in clips[it["id"]]] for it in items}, f"asr:{ref}"


# ----------------------------------------------------------------------------- examples
def make_examples(items: list[dict[str, Any]], words: dict[str, list[tuple[float, float]]],
                  opts: TurnExamplesOptions) -> tuple[list[TurnExample], int]:
    """Each clip whole (complete) plus up to ``cuts_per_clip`` cuts at word ends before its last
    word (incomplete); returns the examples and how many clips had no boundary to cut at."""
    examples, uncut = [], 0
    for it in items:
        examples.append(TurnExample(it["audio"], COMPLETE, None, it["id"]))
        ws = words.get(it["id"]) or []
        duration = float(it.get("duration") or 0) or len(load_audio(it["audio"], SAMPLE_RATE)) / SAMPLE_RATE
        cuts = []
        for k in range(1, len(ws)):
            end, next_start = ws[k - 1][1], ws[k][0]
            cut = end + min(0.1, max(0.0, next_start - end) / 2)  # in the gap, if there is one
            if opts.min_prefix_s <= cut <= duration - 0.15:
                cuts.append(round(cut, 3))
        if not cuts:
            uncut += 1
            continue
        rng = random.Random(f"{opts.seed}:{it['id']}")
        for cut in sorted(rng.sample(cuts, min(opts.cuts_per_clip, len(cuts)))):
            examples.append(TurnExample(it["audio"], INCOMPLETE, cut, it["id"]))
    return examples, uncut


def folder_examples(folder: Path) -> list[TurnExample]:
    """A labelled folder: ``complete/*.wav`` and ``incomplete/*.wav``."""
    out = []
    for name, label in (("complete", COMPLETE), ("incomplete", INCOMPLETE)):
        out += [TurnExample(str(p), label, None, p.stem) for p in sorted((folder / name).glob("*.wav"))]
    return out


def example_audio(ex: TurnExample, tail_ms: int) -> np.ndarray:
    """The clip as the engine would hear it at the first short silence after ``end_s``."""
    audio = load_audio(ex.audio, SAMPLE_RATE)
    if ex.end_s is not None:
        audio = audio[: int(ex.end_s * SAMPLE_RATE)]
    audio = trim_silence(audio, SAMPLE_RATE)
    return np.concatenate([audio, np.zeros(int(SAMPLE_RATE * tail_ms / 1000), np.float32)])


def count(examples: list[TurnExample]) -> dict[str, int]:
    return {"complete": sum(e.label == COMPLETE for e in examples),
            "incomplete": sum(e.label == INCOMPLETE for e in examples)}


def split_examples(prepared: str | Path, split: str,
                   opts: TurnExamplesOptions) -> tuple[list[TurnExample], dict[str, Any]]:
    """Examples of one split of a prepared set, or of a labelled folder; plus how they were made."""
    folder = Path(prepared).expanduser()
    if (folder / "complete").is_dir() or (folder / "incomplete").is_dir():
        examples = folder_examples(folder)
        return examples, {"source": "labelled folder", "examples": count(examples)}
    items = load_split(folder, split)
    words, source = word_times(folder, items, opts) if items else ({}, "none")
    examples, uncut = make_examples(items, words, opts)
    return examples, {"source": f"{split} split", "word_times": source, "clips": len(items),
                      "clips_without_cut": uncut, "examples": count(examples)}


# ----------------------------------------------------------------------------- scoring
def metrics(probs: list[float], labels: list[int], threshold: float) -> dict[str, Any]:
    """Accuracy, and precision / recall of "incomplete" (the class whose miss cuts the user off)."""
    p, y = np.asarray(probs, np.float64), np.asarray(labels)
    pred_incomplete, incomplete = p < threshold, y == INCOMPLETE
    tp = int(np.sum(pred_incomplete & incomplete))
    n_pred, n_true = int(pred_incomplete.sum()), int(incomplete.sum())
    return {
        "threshold": threshold,
        "n": len(y),
        "accuracy": round(float(np.mean(pred_incomplete == incomplete)), 4) if len(y) else None,
        "precision_incomplete": round(tp / n_pred, 4) if n_pred else None,
        "recall_incomplete": round(tp / n_true, 4) if n_true else None,
        "mean_p_complete": {"complete": _mean(p[~incomplete]), "incomplete": _mean(p[incomplete])},
    }


def _mean(x: np.ndarray) -> float | None:
    return round(float(x.mean()), 4) if x.size else None


def engine_model(path: str | Path, threads: int = 1) -> Any:
    """The engine's own turn backend on ``path`` (set up)."""
    from engine.config import TurnOptions
    from engine.registry import backend_class

    cls = backend_class("turn", "smart-turn")
    backend = cls(TurnOptions(model=str(path), threads=threads), str(path))
    backend.setup()
    return backend


def score_engine(path: str | Path, examples: list[TurnExample], tail_ms: int,
                 times: list[float] | None = None) -> list[float]:
    """P(complete) of each example from the engine's backend (one thread, as the engine runs
    it); each ``predict``'s milliseconds are appended to ``times`` if given."""
    backend = engine_model(path)
    probs = []
    try:
        for ex in examples:
            audio = example_audio(ex, tail_ms)
            t0 = time.perf_counter()
            probs.append(backend.predict(audio))
            if times is not None:
                times.append((time.perf_counter() - t0) * 1000)
        return probs
    finally:
        backend.close()


def evaluate_turn(prepared: str | Path, model: str, opts: TurnExamplesOptions | None = None,
                  split: str = "validation", threshold: float = 0.5, limit: int = 0) -> dict[str, Any]:
    """``s2s-train eval --turn``: a Smart Turn ONNX file (``pkg:`` or a path) on labelled examples."""
    from engine.models import resolve

    opts = opts or TurnExamplesOptions()
    path = resolve("turn", model)
    examples, made = split_examples(prepared, split, opts)
    if limit:
        examples = examples[:limit]
        made["examples"] = count(examples)
    if not examples:
        raise DataError(f"no turn examples in {prepared} ({split}): run `s2s-train prepare` first, or give a "
                        "folder with complete/ and incomplete/ WAVs")
    times: list[float] = []
    probs = score_engine(path, examples, opts.tail_ms, times)
    return {"model": model, "path": path, **made, "tail_ms": opts.tail_ms,
            **metrics(probs, [e.label for e in examples], threshold),
            "predict_ms": {"median": round(float(np.median(times)), 1), "max": round(max(times), 1), "threads": 1}}


# ----------------------------------------------------------------------------- training
def _identity(item: Any) -> Any:
    return item


def train_turn(prepared: str | Path, out_dir: str | Path, options: TurnTrainOptions,
               example_opts: TurnExamplesOptions, config: Any) -> dict[str, Any]:
    """Fine-tune, export, score; returns the summary (also written to OUT/summary.json)."""
    import torch
    from torch.utils.data import Dataset

    from engine.stages.turn_smart import features
    from training.loop import Trainer, resolve_device
    from training.turn_model import export_onnx, load_base, quantize_int8, save

    out_dir = Path(out_dir).expanduser()
    items = load_split(prepared, "train")
    if not items:
        raise DataError(f"no training clips in {prepared}/train.jsonl: run `s2s-train prepare DATA --out {prepared}`")
    val_items = load_split(prepared, "validation")
    torch.manual_seed(config.seed)  # the new head's initialisation
    model, kind = load_base(options.base)
    if options.freeze_encoder:
        model.encoder.requires_grad_(False)
    if config.gradient_checkpointing:  # off by default for this 8 M-parameter model (cli.py)
        model.encoder.gradient_checkpointing_enable()
    words, source = word_times(prepared, items + val_items, example_opts)
    train, uncut = make_examples(items, words, example_opts)
    val, val_uncut = make_examples(val_items, words, example_opts)
    n = count(train)
    if not n["incomplete"]:
        raise DataError(f"only complete examples: none of the {len(items)} training clips has a word boundary to cut "
                        f"at ({source} word times, cuts keep >= {example_opts.min_prefix_s} s); give clips of "
                        "several words, or word times (--words)")
    print(f"examples: train {n['complete']} complete + {n['incomplete']} incomplete, validation "
          f"{count(val)['complete']} + {count(val)['incomplete']} (word times: {source}; base: {options.base}, {kind})")
    pos_weight = min(10.0, max(0.1, n["incomplete"] / max(1, n["complete"])))  # as upstream: balance the classes

    from faster_whisper.feature_extractor import FeatureExtractor

    extractor = FeatureExtractor(feature_size=80, chunk_length=8)  # the engine's, made once
    workers = config.num_workers if resolve_device(config.device).type == "cuda" else 0  # as the Trainer

    class Examples(Dataset):
        """Features on the fly, or computed once up front for a set that fits in memory."""

        def __init__(self, examples: list[TurnExample], name: str):
            self.examples, self.cached = examples, None
            if len(examples) <= FEATURE_CACHE:
                from torch.utils.data import DataLoader
                from tqdm.auto import tqdm

                loader = DataLoader(self, batch_size=None, num_workers=workers, collate_fn=_identity)
                self.cached = [item["x"] for item in tqdm(loader, total=len(examples), desc=f"features ({name})",
                                                          unit="clip", disable=not config.progress)]

        def compute(self, i: int) -> np.ndarray:
            return features(example_audio(self.examples[i], example_opts.tail_ms), extractor)

        def __len__(self) -> int:
            return len(self.examples)

        def __getitem__(self, i: int) -> dict[str, Any]:
            x = self.cached[i] if self.cached is not None else self.compute(i)
            return {"x": x, "y": float(self.examples[i].label)}

    def collate(batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return {"input_features": torch.from_numpy(np.stack([b["x"] for b in batch])),
                "labels": torch.tensor([b["y"] for b in batch], dtype=torch.float32)}

    def loss_fn(module: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = module(batch["input_features"]).float()
        weight = torch.tensor(pos_weight, device=logits.device)
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["labels"], pos_weight=weight)

    @torch.no_grad()
    def score_torch(module: torch.nn.Module, data: Examples) -> list[float]:
        module.eval()
        device, probs = next(module.parameters()).device, []
        for i in range(0, len(data), 16):
            x = collate([data[j] for j in range(i, min(i + 16, len(data)))])["input_features"]
            probs += torch.sigmoid(module(x.to(device)).float()).cpu().tolist()
        return probs

    labels = [e.label for e in val]
    summary: dict[str, Any] = {"base": options.base, "base_kind": kind, "word_times": source,
                               "examples": {"train": n, "validation": count(val)},
                               "clips_without_cut": {"train": uncut, "validation": val_uncut},
                               "tail_ms": example_opts.tail_ms, "threshold": options.threshold}
    heldout: dict[str, Any] = {}
    model.to(resolve_device(config.device))
    train_data, val_data = Examples(train, "train"), Examples(val, "validation")
    if val:
        heldout["before"] = metrics(score_torch(model, val_data), labels, options.threshold)
        if kind == "smart-turn-onnx":  # the base file as the engine runs it (int8 activations and all)
            from engine.models import resolve

            heldout["before_onnx"] = metrics(score_engine(resolve("turn", options.base), val, example_opts.tail_ms),
                                             labels, options.threshold)
    trainer = Trainer(model, train_data, collate, loss_fn, config, out_dir, val_dataset=val_data,
                      run_info={"recipe": "turn-smart-turn-v3", "turn": asdict(options),
                                "examples": asdict(example_opts), "prepared": str(prepared)})
    summary.update(trainer.train())
    model = trainer.module.to("cpu").float().eval()
    save(model, out_dir / "model")
    exports = {"fp32": str(export_onnx(model, out_dir / "smart-turn-te.onnx"))}
    if options.int8:
        calib = random.Random(config.seed).sample(range(len(train)), min(len(train), options.calibration_clips))
        exports["int8"] = str(quantize_int8(exports["fp32"], out_dir / "smart-turn-te-int8.onnx",
                                            (train_data[i]["x"] for i in calib)))
    summary["exports"] = exports
    if val:
        heldout["after"] = metrics(score_torch(model, val_data), labels, options.threshold)
        for name, path in exports.items():  # the files as the engine runs them
            heldout[f"after_onnx_{name}"] = metrics(score_engine(path, val, example_opts.tail_ms), labels,
                                                    options.threshold)
    summary["heldout"] = heldout
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    return summary
