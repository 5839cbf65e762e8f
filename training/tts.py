"""``s2s-train tts``: fine-tune SpeechT5 on Telugu and export a folder the engine's ``speecht5`` backend loads.

SpeechT5's tokenizer is a SentencePiece *character* model over English letters: it has no
Telugu characters. Two things make Telugu work, both recorded in the export and applied
identically at inference by ``engine.stages.tts_speecht5`` (both use ``engine.text``):

1. Telugu is normalised (``normalize_telugu``) and transliterated to ISO 15919 Latin with
   ``indic-transliteration`` (``namaskāraṁ``): reversible, and it reuses the pretrained
   embeddings of the plain letters.
2. Characters of that text missing from the base vocabulary (``ā ī ū ṁ ṭ ḍ ṇ ś ṣ ḷ ...``)
   are appended to the vocabulary and the embedding matrix grows to match; each new row
   starts as the embedding of its base letter (``ā`` from ``a``), so training starts close.
   Ids are computed from ``text_vocab.json`` without the sentencepiece package.

The speaker embedding (512-d, what the decoder prenet is conditioned on) is computed from
each speaker's own audio: ``--speaker-encoder xvector`` uses SpeechBrain's x-vector model
(what microsoft/speecht5_tts was trained with; needs ``speechbrain`` and the hub), the
default ``stats`` projects the speaker's log-mel mean and spread to 512 dimensions (a fixed
projection, no download). Either way the embedding is a trained parameter afterwards.

Output folder::

    export/          asr-style engine folder: tts.backend=speecht5, tts.model=OUT/export
      config.json, model.safetensors    SpeechT5ForTextToSpeech
      vocoder/                          SpeechT5HifiGan
      text_vocab.json                   character -> id
      speaker_embedding.npy             the voice the engine speaks with
      speaker_embeddings.npz            every speaker's
      preprocessor_config.json          SpeechT5 feature extractor (for more training)
      s2s_tts.json                      backend, sample rate, text front end
    checkpoints/, loss.csv, train_config.json, summary.json
"""

from __future__ import annotations

import json
import shutil
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from training.audio import SAMPLE_RATE, load_audio
from training.data import load_split
from training.loop import TrainConfig, Trainer
from training.text import SPACE_PIECE, char_ids, read_spm_pieces, tts_model_text

EXPORT_FORMAT = 1
TTS_CONFIG = "s2s_tts.json"


@dataclass
class TTSOptions:
    """SpeechT5 fine-tuning options.

    Fields:
        base: SpeechT5 TTS folder or hub id (microsoft/speecht5_tts), or an earlier export.
        vocoder: HiFi-GAN folder or hub id; empty: ``base/vocoder`` if there, else microsoft/speecht5_hifigan.
        transliteration: "iso15919" (Telugu -> ISO 15919 Latin) or "none".
        speaker_encoder: "stats" (log-mel statistics, offline) or "xvector" (SpeechBrain).
        train_speaker_embedding: fine-tune the speaker embeddings with the model.
        speaker: the speaker the export speaks with; empty: the one with the most clips.
    """

    base: str = "microsoft/speecht5_tts"
    vocoder: str = ""
    transliteration: str = "iso15919"
    speaker_encoder: str = "stats"
    train_speaker_embedding: bool = True
    speaker: str = ""


# --------------------------------------------------------------------------- vocabulary
def base_char_vocab(base: str) -> dict[str, int]:
    """Character -> id of the base model: an export's text_vocab.json, or its spm_char.model."""
    local = Path(base).expanduser()
    if (local / "text_vocab.json").exists():
        return json.loads((local / "text_vocab.json").read_text(encoding="utf-8"))["vocab"]
    if (local / "spm_char.model").exists():
        spm = local / "spm_char.model"
    else:
        from huggingface_hub import hf_hub_download

        spm = Path(hf_hub_download(base, "spm_char.model"))
    return {piece: i for i, piece in enumerate(read_spm_pieces(str(spm)))}


def extend_vocab(model: Any, vocab: dict[str, int], texts: list[str]) -> tuple[dict[str, int], list[str]]:
    """Add every character of ``texts`` missing from ``vocab``; grow the embeddings to match."""
    needed = sorted({c for t in texts for c in (SPACE_PIECE + t.replace(" ", SPACE_PIECE))} - set(vocab))
    if not needed:
        return vocab, []
    emb = model.speecht5.get_input_embeddings()
    old_n = emb.num_embeddings
    start = max(old_n, max(vocab.values()) + 1)
    vocab = dict(vocab)
    for offset, c in enumerate(needed):
        vocab[c] = start + offset
    new = nn.Embedding(start + len(needed), emb.embedding_dim, padding_idx=emb.padding_idx)
    with torch.no_grad():
        new.weight.normal_(0.0, float(emb.weight.std()))
        new.weight[:old_n] = emb.weight
        mean = emb.weight.mean(dim=0)
        for c in needed:
            root = unicodedata.normalize("NFD", c)[0]
            new.weight[vocab[c]] = emb.weight[vocab[root]] if root in vocab and vocab[root] < old_n else mean
    model.speecht5.set_input_embeddings(new)
    model.config.vocab_size = new.num_embeddings
    return vocab, needed


# --------------------------------------------------------------------------- speakers
def _stats_embedding(clips: list[np.ndarray], fe: Any) -> np.ndarray:
    mels = np.concatenate(
        [np.asarray(fe(audio_target=a, sampling_rate=SAMPLE_RATE).input_values[0]) for a in clips]
    )
    stats = np.concatenate([mels.mean(axis=0), mels.std(axis=0)])
    proj = np.random.default_rng(15919).standard_normal((512, stats.size)) / np.sqrt(stats.size)
    vec = np.tanh(proj @ (stats - stats.mean()) / (stats.std() + 1e-6))
    return (vec / (np.linalg.norm(vec) + 1e-9)).astype(np.float32)


def _xvector_embedding(clips: list[np.ndarray]) -> np.ndarray:
    try:
        from speechbrain.inference.speaker import EncoderClassifier
    except ImportError:
        raise ImportError(
            "--speaker-encoder xvector needs speechbrain: .venv/bin/pip install -c constraints.txt speechbrain"
        ) from None
    enc = EncoderClassifier.from_hparams(source="speechbrain/spkrec-xvect-voxceleb")
    vecs = []
    with torch.inference_mode():
        for a in clips:
            e = enc.encode_batch(torch.from_numpy(a)[None])[0, 0]
            vecs.append(torch.nn.functional.normalize(e, dim=-1).numpy())
    vec = np.mean(vecs, axis=0)
    return (vec / (np.linalg.norm(vec) + 1e-9)).astype(np.float32)


def speaker_embeddings(
    items: list[dict[str, Any]], fe: Any, encoder: str, max_clips: int = 20
) -> dict[str, np.ndarray]:
    """One 512-d unit vector per speaker, from up to ``max_clips`` of that speaker's clips."""
    by_speaker: dict[str, list[str]] = {}
    for it in items:
        by_speaker.setdefault(it["speaker"], []).append(it["audio"])
    out = {}
    for name, paths in sorted(by_speaker.items()):
        clips = [load_audio(p, SAMPLE_RATE) for p in paths[:max_clips]]
        out[name] = _xvector_embedding(clips) if encoder == "xvector" else _stats_embedding(clips, fe)
    return out


# --------------------------------------------------------------------------- data
class SpeechT5Dataset(Dataset):
    def __init__(
        self, items, fe, vocab, eos_id, speakers: list[str], transliteration, reduction, max_frames, max_ids
    ):
        self.fe, self.reduction = fe, reduction
        self.rows: list[tuple[str, list[int], int]] = []
        self.skipped = 0
        for it in items:
            ids = char_ids(tts_model_text(it["text"], transliteration), vocab, eos_id)
            frames = it["duration"] * 1000 / fe.hop_length  # hop_length is in ms
            if len(ids) > max_ids or frames > max_frames or it["speaker"] not in speakers:
                self.skipped += 1
                continue
            self.rows.append((it["audio"], ids, speakers.index(it["speaker"])))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        path, ids, speaker = self.rows[i]
        mel = np.asarray(self.fe(audio_target=load_audio(path), sampling_rate=SAMPLE_RATE).input_values[0])
        mel = mel[: len(mel) // self.reduction * self.reduction]
        return {"input_ids": ids, "labels": mel.astype(np.float32), "speaker": speaker}


def make_collate(pad_id: int):
    def collate(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        n_ids = max(len(it["input_ids"]) for it in items)
        n_frames = max(len(it["labels"]) for it in items)
        ids = torch.full((len(items), n_ids), pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), n_ids), dtype=torch.long)
        labels = torch.full((len(items), n_frames, items[0]["labels"].shape[1]), -100.0)
        for row, it in enumerate(items):
            ids[row, : len(it["input_ids"])] = torch.tensor(it["input_ids"])
            mask[row, : len(it["input_ids"])] = 1
            labels[row, : len(it["labels"])] = torch.from_numpy(it["labels"])
        speakers = torch.tensor([it["speaker"] for it in items], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels, "speaker": speakers}

    return collate


class SpeechT5Trainable(nn.Module):
    """The model plus one trainable embedding per speaker."""

    def __init__(self, model: nn.Module, speaker_vectors: np.ndarray, train_speakers: bool):
        super().__init__()
        self.model = model
        self.speakers = nn.Parameter(torch.from_numpy(speaker_vectors), requires_grad=train_speakers)


def speecht5_loss(module: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    out = module.model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        labels=batch["labels"],
        speaker_embeddings=module.speakers[batch["speaker"]],
    )
    return out.loss


# --------------------------------------------------------------------------- recipe
def _resolve_vocoder(options: TTSOptions) -> str:
    if options.vocoder:
        return options.vocoder
    local = Path(options.base).expanduser() / "vocoder"
    return str(local) if (local / "config.json").exists() else "microsoft/speecht5_hifigan"


def train_tts(
    prepared: str | Path, out_dir: str | Path, options: TTSOptions, config: TrainConfig
) -> dict[str, Any]:
    """Fine-tune SpeechT5, write ``export/``; returns the summary (also in summary.json)."""
    from transformers import SpeechT5FeatureExtractor, SpeechT5ForTextToSpeech, SpeechT5HifiGan

    out_dir = Path(out_dir).expanduser()
    train_items, val_items = load_split(prepared, "train"), load_split(prepared, "validation")
    model = SpeechT5ForTextToSpeech.from_pretrained(options.base)
    vocoder_ref = _resolve_vocoder(options)
    vocoder = SpeechT5HifiGan.from_pretrained(vocoder_ref)
    fe = SpeechT5FeatureExtractor.from_pretrained(options.base)
    vocab = base_char_vocab(options.base)
    texts = [tts_model_text(it["text"], options.transliteration) for it in train_items + val_items]
    vocab, added = extend_vocab(model, vocab, texts)
    pad_id, eos_id = vocab.get("<pad>", 1), vocab.get("</s>", 2)

    speakers = sorted({it["speaker"] for it in train_items})
    base_npz = Path(options.base).expanduser() / "speaker_embeddings.npz"
    known = dict(np.load(base_npz)) if base_npz.exists() else {}
    fresh = speaker_embeddings(
        [it for it in train_items if it["speaker"] not in known], fe, options.speaker_encoder
    )
    vectors = np.stack([known.get(s, fresh.get(s)) for s in speakers]).astype(np.float32)

    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    module = SpeechT5Trainable(model, vectors, options.train_speaker_embedding)
    args = (fe, vocab, eos_id, speakers, options.transliteration, model.config.reduction_factor)
    limits = (model.config.max_speech_positions - 2, model.config.max_text_positions - 2)
    train_ds = SpeechT5Dataset(train_items, *args, *limits)
    val_ds = SpeechT5Dataset(val_items, *args, *limits)
    if len(train_ds) == 0:
        raise ValueError(f"no usable training clips in {prepared}")
    trainer = Trainer(
        module,
        train_ds,
        make_collate(pad_id),
        speecht5_loss,
        config,
        out_dir,
        val_dataset=val_ds,
        run_info={
            "recipe": "tts-speecht5",
            "tts": asdict(options),
            "vocoder": vocoder_ref,
            "prepared": str(prepared),
            "added_characters": added,
        },
    )
    summary = trainer.train()
    summary["added_characters"] = added

    module = trainer.module.to("cpu").float()
    if config.gradient_checkpointing:
        module.model.gradient_checkpointing_disable()
    counts = Counter(it["speaker"] for it in train_items)
    speaker = options.speaker or counts.most_common(1)[0][0]
    if speaker not in speakers:
        raise ValueError(
            f"--speaker {speaker!r} is not in the training data (speakers: {', '.join(speakers)})"
        )
    final = {s: module.speakers[i].detach().numpy().astype(np.float32) for i, s in enumerate(speakers)}
    export = write_export(
        out_dir / "export", module.model, vocoder, fe, vocab, final, speaker, options, config.steps
    )
    summary["export"] = str(export)
    summary["speaker"] = speaker
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    return summary


def write_export(
    export: Path,
    model: Any,
    vocoder: Any,
    fe: Any,
    vocab: dict[str, int],
    speakers: dict[str, np.ndarray],
    speaker: str,
    options: TTSOptions,
    steps: int,
) -> Path:
    """Write the engine folder (see the module docstring) atomically."""
    tmp = export.with_name(export.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(str(tmp))
    vocoder.save_pretrained(str(tmp / "vocoder"))
    fe.save_pretrained(str(tmp))
    special = {k: vocab[k] for k in ("<s>", "<pad>", "</s>", "<unk>") if k in vocab}
    (tmp / "text_vocab.json").write_text(
        json.dumps({"vocab": vocab, "special": special}, ensure_ascii=False, indent=1), encoding="utf-8"
    )
    np.save(tmp / "speaker_embedding.npy", speakers[speaker])
    np.savez(tmp / "speaker_embeddings.npz", **speakers)
    config = {
        "format": EXPORT_FORMAT,
        "backend": "speecht5",
        "sample_rate": int(getattr(vocoder.config, "sampling_rate", SAMPLE_RATE)),
        "text": {
            "normalizer": "engine.text.normalize_telugu",
            "transliteration": options.transliteration,
            "library": "indic-transliteration (sanscript.TELUGU -> sanscript.ISO), NFC, lower case",
        },
        "vocab": "text_vocab.json",
        "eos_id": vocab.get("</s>", 2),
        "vocoder": "vocoder",
        "speaker": speaker,
        "speaker_encoder": options.speaker_encoder,
        "generation": {"threshold": 0.5, "minlenratio": 0.0, "maxlenratio": 20.0},
        "base": options.base,
        "steps": steps,
    }
    (tmp / TTS_CONFIG).write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")
    shutil.rmtree(export, ignore_errors=True)
    tmp.rename(export)
    return export
