"""``s2s-train asr``: fine-tune Whisper for Telugu and export CTranslate2 models for faster-whisper.

Targets are ``<|startoftranscript|><|te|><|transcribe|><|notimestamps|> text <|endoftext|>``
(teacher forcing: the decoder reads the sequence minus its last token and predicts it
shifted by one, so it also learns to emit ``<|te|>`` and Telugu script rather than Latin).
Features come from the base model's own ``WhisperFeatureExtractor`` (30 s windows).

Output folder::

    hf/              the fine-tuned transformers model (tokenizer, feature extractor): --base for more training
    ct2-int8/        CTranslate2 int8: asr.model for the CPU profile
    ct2-float16/     CTranslate2 float16: asr.model for a GPU (compute_type float16)
    checkpoints/     for --resume
    loss.csv, train_config.json, summary.json
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from engine.ct2_convert import convert_whisper_to_ct2
from training.audio import SAMPLE_RATE, load_audio
from training.data import load_split
from training.loop import TrainConfig, Trainer


@dataclass
class ASROptions:
    """Whisper fine-tuning options.

    Fields:
        base: a transformers Whisper folder or hub id (on the pod, e.g. vasista22/whisper-telugu-medium).
        language / task: the prefix tokens trained into every target.
        freeze_encoder: train the decoder only (half the memory; for large models on 24 GB).
        spec_augment: SpecAugment time/feature masking inside the model while training.
        quantizations: CTranslate2 exports to write after training.
    """

    base: str = "openai/whisper-small"
    language: str = "te"
    task: str = "transcribe"
    freeze_encoder: bool = False
    spec_augment: bool = False
    quantizations: tuple[str, ...] = ("int8", "float16")


class WhisperDataset(Dataset):
    """Prepared clips -> (log-mel features, target token ids). Clips whose target exceeds
    ``max_tokens`` are left out (they would be cut mid-sentence)."""

    def __init__(
        self, items: list[dict[str, Any]], feature_extractor: Any, tokenizer: Any, max_tokens: int = 448
    ):
        self.fe = feature_extractor
        self.items: list[dict[str, Any]] = []
        self.targets: list[list[int]] = []
        self.skipped = 0
        for item in items:
            ids = tokenizer(item["text"]).input_ids
            if len(ids) > max_tokens:
                self.skipped += 1
                continue
            self.items.append(item)
            self.targets.append(ids)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        audio = load_audio(self.items[i]["audio"], SAMPLE_RATE)
        feats = self.fe(audio, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features[0]
        return {"input_features": feats.astype(np.float32), "tokens": self.targets[i]}


def make_collate(pad_id: int):
    def collate(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        feats = torch.from_numpy(np.stack([it["input_features"] for it in items]))
        n = max(len(it["tokens"]) for it in items) - 1
        dec = torch.full((len(items), n), pad_id, dtype=torch.long)
        labels = torch.full((len(items), n), -100, dtype=torch.long)
        for row, it in enumerate(items):
            toks = torch.tensor(it["tokens"], dtype=torch.long)
            dec[row, : len(toks) - 1] = toks[:-1]
            labels[row, : len(toks) - 1] = toks[1:]
        return {"input_features": feats, "decoder_input_ids": dec, "labels": labels}

    return collate


def whisper_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    out = model(
        input_features=batch["input_features"],
        decoder_input_ids=batch["decoder_input_ids"],
        labels=batch["labels"],
        use_cache=False,
    )
    return out.loss


def load_base(base: str, language: str, task: str) -> tuple[Any, Any, Any]:
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer

    model = WhisperForConditionalGeneration.from_pretrained(base)
    tokenizer = WhisperTokenizer.from_pretrained(base)
    tokenizer.set_prefix_tokens(language=language, task=task, predict_timestamps=False)
    feature_extractor = WhisperFeatureExtractor.from_pretrained(base)
    return model, tokenizer, feature_extractor


def train_asr(
    prepared: str | Path, out_dir: str | Path, options: ASROptions, config: TrainConfig
) -> dict[str, Any]:
    """Fine-tune, save ``hf/``, export CTranslate2 folders; returns the summary (also in summary.json)."""
    out_dir = Path(out_dir).expanduser()
    model, tokenizer, fe = load_base(options.base, options.language, options.task)
    model.config.use_cache = False
    if options.spec_augment:
        model.config.apply_spec_augment = True
        model.config.mask_time_prob = max(model.config.mask_time_prob, 0.05)
    if options.freeze_encoder:
        model.model.encoder.requires_grad_(False)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    max_tokens = getattr(model.config, "max_target_positions", 448)
    train_ds = WhisperDataset(load_split(prepared, "train"), fe, tokenizer, max_tokens)
    val_ds = WhisperDataset(load_split(prepared, "validation"), fe, tokenizer, max_tokens)
    if len(train_ds) == 0:
        raise ValueError(f"no usable training clips in {prepared}")
    pad_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    trainer = Trainer(
        model,
        train_ds,
        make_collate(pad_id),
        whisper_loss,
        config,
        out_dir,
        val_dataset=val_ds,
        run_info={"recipe": "asr-whisper", "asr": asdict(options), "prepared": str(prepared)},
    )
    summary = trainer.train()
    summary["skipped_long_targets"] = train_ds.skipped

    model = trainer.module.to("cpu").float()
    model.config.use_cache = True
    if config.gradient_checkpointing:
        model.gradient_checkpointing_disable()
    hf_dir = out_dir / "hf"
    model.save_pretrained(str(hf_dir))
    tokenizer.save_pretrained(str(hf_dir))
    fe.save_pretrained(str(hf_dir))
    exports = {}
    for quant in options.quantizations:
        exports[quant] = str(convert_whisper_to_ct2(hf_dir, out_dir / f"ct2-{quant}", quant))
    summary["exports"] = exports
    summary["hf"] = str(hf_dir)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
