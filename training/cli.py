"""``s2s-train``: prepare data, fine-tune Telugu ASR (Whisper), TTS (SpeechT5) and turn end (Smart Turn), evaluate.

Subcommands::

    s2s-train prepare DATA_DIR --out PREPARED
    s2s-train prepare --hf-dataset google/fleurs --hf-config te_in --split train --out PREPARED
    s2s-train asr PREPARED --base openai/whisper-small --out runs/asr
    s2s-train tts PREPARED --base microsoft/speecht5_tts --out runs/tts
    s2s-train turn PREPARED --out runs/turn   # the end-of-turn model (Smart Turn v3), ONNX
    s2s-train eval PREPARED --asr runs/asr/ct2-int8 --tts runs/tts/export --turn runs/turn/smart-turn-te.onnx
    s2s-train tiny-models --out tiny          # tiny random base models, offline
    s2s-train synth-data --out data/synth     # espeak-ng Telugu clips + metadata.csv
    s2s-train scorecard --profile gpu         # Telugu figures per stage on FLEURS te test

Training defaults suit a 24 GB L4 (see docs/training.md); every training option is a flag.
Errors the user can fix print one line and exit 2, not a traceback (``S2S_DEBUG=1`` shows it). torch and
transformers are imported by the subcommands that need them, so ``prepare`` and
``--help`` stay fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

L4_DEFAULTS = {"batch_size": 8, "grad_accum": 2, "save_every": 250, "eval_every": 250}


def _add_train_args(p: argparse.ArgumentParser, lr: float, steps: int) -> None:
    g = p.add_argument_group("training (defaults: a 24 GB L4)")
    g.add_argument("--steps", type=int, default=steps, help="optimizer steps in total")
    g.add_argument("--batch-size", type=int, default=L4_DEFAULTS["batch_size"], help="clips per micro-batch")
    g.add_argument("--grad-accum", type=int, default=L4_DEFAULTS["grad_accum"], help="micro-batches per step")
    g.add_argument("--lr", type=float, default=lr, help="peak learning rate (AdamW)")
    g.add_argument("--warmup-steps", type=int, default=100)
    g.add_argument("--weight-decay", type=float, default=0.0)
    g.add_argument("--max-grad-norm", type=float, default=1.0)
    g.add_argument(
        "--precision",
        choices=["auto", "fp32", "fp16", "bf16"],
        default="auto",
        help="auto: bf16 on CUDA when supported, else fp16; fp32 on CPU",
    )
    g.add_argument("--device", default="auto", help="auto, cpu or cuda")
    g.add_argument(
        "--save-every", type=int, default=L4_DEFAULTS["save_every"], help="checkpoint interval (steps)"
    )
    g.add_argument("--keep-checkpoints", type=int, default=2)
    g.add_argument(
        "--eval-every", type=int, default=L4_DEFAULTS["eval_every"], help="validation loss interval"
    )
    g.add_argument("--log-every", type=int, default=1, help="loss.csv row interval")
    g.add_argument("--num-workers", type=int, default=2, help="DataLoader workers (CUDA only)")
    g.add_argument(
        "--gradient-checkpointing", choices=["auto", "on", "off"], default="auto", help="auto: on for CUDA"
    )
    g.add_argument("--seed", type=int, default=1234)
    g.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    g.add_argument("--no-progress", action="store_true", help="no progress bar (logs still go to loss.csv)")


def _add_turn_example_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("turn examples (complete clips, and clips cut at a word boundary)")
    g.add_argument("--words", choices=["auto", "data", "asr"], default="auto",
                   help="word times: the prepared rows' 'words', or faster-whisper word_timestamps (auto: data if all have it)")
    g.add_argument("--words-asr", default="", help="ASR model for --words asr (default: the profile's asr.model)")
    g.add_argument("--profile", default="offline", help="engine profile whose ASR gives word times")
    g.add_argument("--tail-ms", type=int, default=200, help="silence after each example (the engine's first pause)")
    g.add_argument("--cuts-per-clip", type=int, default=1, help="incomplete examples cut from each clip")


def from_args(cls: type[T], args: argparse.Namespace, **special: Any) -> T:
    """An options dataclass from the parsed arguments: each field takes the argument of the same
    name (argparse's ``dest``), when there is one; ``special`` gives the fields whose flag says
    something else (``--no-progress`` is ``progress=False``). Unset fields keep their defaults."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = {k: v for k, v in vars(args).items() if k in names}
    return cls(**{**values, **special})


def _turn_examples(args: argparse.Namespace):
    from training.turn import TurnExamplesOptions

    return from_args(TurnExamplesOptions, args)


def _train_config(args: argparse.Namespace):
    import torch

    from training.loop import TrainConfig

    on_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    gc = {"on": True, "off": False, "auto": on_cuda}[args.gradient_checkpointing]
    return from_args(TrainConfig, args, gradient_checkpointing=gc, progress=not args.no_progress)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="s2s-train",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="check, resample (16 kHz mono), normalise and split a dataset")
    p.add_argument(
        "data_dir", nargs="?", default="",
        help="folder with audio and metadata.csv (file,text[,speaker]) or a JSONL manifest; "
        "or a datasets save_to_disk folder, parquet file(s) or glob",
    )
    p.add_argument("--out", required=True, help="the prepared folder to write")
    p.add_argument("--manifest", help="a metadata.csv / .jsonl elsewhere (paths relative to DATA_DIR)")
    p.add_argument("--min-seconds", type=float, default=0.5)
    p.add_argument("--max-seconds", type=float, default=30.0)
    p.add_argument("--max-chars-per-second", type=float, default=30.0)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--no-trim", action="store_true", help="keep leading/trailing silence")
    p.add_argument("--keep-digits", action="store_true", help="do not spell numbers as Telugu words")
    p.add_argument("--add", action="store_true",
                   help="add to the clips already prepared in --out (e.g. IndicTTS after FLEURS)")
    _add_dataset_args(p, split="train")

    p = sub.add_parser("asr", help="fine-tune Whisper for Telugu; export CTranslate2 int8 + float16")
    p.add_argument("prepared")
    p.add_argument("--base", default="openai/whisper-small", help="transformers Whisper folder or hub id")
    p.add_argument("--out", required=True)
    p.add_argument("--language", default="te")
    p.add_argument("--freeze-encoder", action="store_true", help="train the decoder only (less memory)")
    p.add_argument("--spec-augment", action="store_true", help="SpecAugment masking while training")
    p.add_argument("--quantizations", default="int8,float16", help="CTranslate2 exports, comma separated")
    _add_train_args(p, lr=1e-5, steps=2000)

    p = sub.add_parser(
        "tts", help="fine-tune SpeechT5 on Telugu (ISO 15919 transliteration); export for the engine"
    )
    p.add_argument("prepared")
    p.add_argument(
        "--base", default="microsoft/speecht5_tts", help="SpeechT5 TTS folder, hub id or earlier export"
    )
    p.add_argument(
        "--vocoder",
        default="",
        help="HiFi-GAN folder or hub id (default: BASE/vocoder or microsoft/speecht5_hifigan)",
    )
    p.add_argument("--out", required=True)
    p.add_argument("--transliteration", choices=["iso15919", "none"], default="iso15919")
    p.add_argument(
        "--speaker-encoder",
        choices=["stats", "xvector"],
        default="stats",
        help="stats: offline log-mel statistics; xvector: SpeechBrain (needs speechbrain + hub)",
    )
    p.add_argument("--freeze-speaker-embedding", action="store_true")
    p.add_argument(
        "--speaker", default="", help="the voice of the export (default: the speaker with most clips)"
    )
    _add_train_args(p, lr=1e-5, steps=4000)

    p = sub.add_parser("turn", help="fine-tune the Smart Turn v3 end-of-turn model on Telugu; export ONNX")
    p.add_argument("prepared")
    p.add_argument("--base", default="pkg:smart-turn-v3.2",
                   help="Smart Turn ONNX (pkg:smart-turn-v3.2, offline), Whisper checkpoint (openai/whisper-tiny) "
                        "or an earlier OUT/model")
    p.add_argument("--out", required=True)
    p.add_argument("--freeze-encoder", action="store_true", help="train the pooling and classifier only")
    p.add_argument("--threshold", type=float, default=0.5, help="P(complete) that counts as complete")
    p.add_argument("--int8", action="store_true", help="also export static int8 (onnxruntime.quantization)")
    _add_turn_example_args(p)
    _add_train_args(p, lr=5e-5, steps=600)
    p.set_defaults(batch_size=32, grad_accum=1, warmup_steps=60, weight_decay=0.01, save_every=200, eval_every=100,
                   gradient_checkpointing="off")

    p = sub.add_parser("eval", help="ASR CER/WER, TTS round-trip CER, turn accuracy; JSON report + table")
    p.add_argument("prepared")
    p.add_argument("--asr", help="CTranslate2 Whisper folder (e.g. runs/asr/ct2-int8)")
    p.add_argument("--tts", help="TTS folder (runs/tts/export, or a VITS folder)")
    p.add_argument("--out", help="report path (default: PREPARED/eval.json)")
    p.add_argument("--split", default="validation", choices=["validation", "train"])
    p.add_argument("--device", default="auto")
    p.add_argument("--compute-type", default="auto")
    p.add_argument("--beam-size", type=int, default=1)
    p.add_argument("--limit", type=int, default=0, help="at most this many clips")
    p.add_argument("--window-s", type=int, default=30,
                   help="ASR encoder window in seconds (30: Whisper's own; 10: as the offline profile)")
    p.add_argument("--turn", nargs="?", const="pkg:smart-turn-v3.2",
                   help="turn accuracy of a Smart Turn ONNX (default pkg:smart-turn-v3.2) on the split, or on "
                        "PREPARED/complete/ + incomplete/ WAVs")
    p.add_argument("--turn-threshold", type=float, default=0.5, help="P(complete) that counts as complete")
    _add_turn_example_args(p)

    p = sub.add_parser(
        "tiny-models", help="build tiny random Whisper, SpeechT5 + HiFi-GAN and VITS models offline"
    )
    p.add_argument("--out", required=True)
    p.add_argument("--only", default="whisper,speecht5,vits", help="comma separated subset")
    p.add_argument(
        "--ct2", action="store_true", help="also convert the tiny Whisper to CTranslate2 (whisper-ct2/)"
    )

    p = sub.add_parser("synth-data", help="a small synthetic Telugu dataset spoken by espeak-ng")
    p.add_argument("--out", required=True)
    p.add_argument("-n", type=int, default=12, help="number of clips")
    p.add_argument(
        "--with-bad", action="store_true", help="add rows prepare must drop (missing, silent, ...)"
    )
    p.add_argument("--words", action="store_true",
                   help="speak word by word; metadata.jsonl with word times (for s2s-train turn)")

    # --- public datasets and the Telugu scorecard (issue 14) ---
    p = sub.add_parser("scorecard", help="Telugu figures per stage of a profile: ASR WER/CER + script, "
                       "TTS round trip, LLM replies in Telugu; JSON + table")
    p.add_argument("data_dir", nargs="?", default="",
                   help="test clips: a folder with metadata.csv, a save_to_disk folder or parquet "
                   "(default: --hf-dataset google/fleurs --hf-config te_in --split test)")
    p.add_argument("--profile", default="gpu", help="engine profile name or .toml path")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="profile override, e.g. asr.model=runs/asr/ct2-float16 (repeatable)")
    p.add_argument("--stages", default="asr,tts,llm", help="comma separated subset of asr,tts,llm")
    p.add_argument("--manifest", help="a metadata.csv / .jsonl elsewhere (e.g. PREPARED/validation.jsonl)")
    p.add_argument("--limit", type=int, default=0, help="at most this many test clips (0: all)")
    p.add_argument("--tts-limit", type=int, default=50, help="texts for the TTS round trip (0: as ASR)")
    p.add_argument("--llm-prompts", type=int, default=0, help="how many of the fixed Telugu prompts (0: all 20)")
    p.add_argument("--out", help="report path (default: scorecard-PROFILE.json)")
    _add_dataset_args(p, split="test")
    return parser


def _add_dataset_args(p: argparse.ArgumentParser, split: str) -> None:
    g = p.add_argument_group("Hugging Face datasets (hub id, save_to_disk folder or parquet as DATA_DIR)")
    g.add_argument("--hf-dataset", default="", metavar="ID", help="a Hub dataset id, e.g. google/fleurs")
    g.add_argument("--hf-config", default="", help="its configuration, e.g. te_in")
    g.add_argument("--hf-revision", default="", help="a Hub branch, tag or commit")
    g.add_argument("--split", default=split, help=f"the split to read (default: {split})")
    g.add_argument("--audio-column", default="", help="default: the Audio-typed column, or audio/path")
    g.add_argument("--text-column", default="", help="default: text, sentence, transcription, ...")
    g.add_argument("--speaker-column", default="", help="default: speaker_id, speaker, client_id (else none)")
    g.add_argument("--streaming", action="store_true", help="read rows as they download")
    g.add_argument("--max-rows", type=int, default=0, help="read at most this many rows (0: all)")
    g.add_argument("--cache-dir", default="", help="the datasets cache (default: ~/.cache/huggingface)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def _dataset_source(args: argparse.Namespace, default_hub: str = ""):
    """A DatasetSource when the arguments name a datasets source, else None (a WAV folder)."""
    from training.hfdata import DatasetSource, is_dataset_path

    if not args.hf_dataset and args.data_dir and not is_dataset_path(args.data_dir):
        return None
    hub = args.hf_dataset or ("" if args.data_dir else default_hub)
    if not hub and not args.data_dir:
        return None
    return DatasetSource(
        hub_id=hub, config=args.hf_config or ("te_in" if hub == "google/fleurs" else ""), split=args.split,
        revision=args.hf_revision, path="" if hub else args.data_dir, audio_column=args.audio_column,
        text_column=args.text_column, speaker_column=args.speaker_column, streaming=args.streaming,
        limit=args.max_rows, cache_dir=args.cache_dir,
    )


def _cmd_scorecard(args: argparse.Namespace) -> int:
    from engine.config import load_profile
    from training.data import folder_clips, read_metadata
    from training.hfdata import dataset_clips
    from training.scorecard import STAGES, ScorecardOptions, format_table, run_scorecard, write_report

    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    if not stages or set(stages) - set(STAGES):
        raise SystemExit(f"s2s-train scorecard: --stages takes a comma separated subset of {','.join(STAGES)}")
    profile = load_profile(args.profile, args.set)
    source = _dataset_source(args, default_hub="google/fleurs") if "asr" in stages or "tts" in stages else None
    if source is not None:
        clips, _ = dataset_clips(source)
        name = source.describe()
    elif "asr" in stages or "tts" in stages:
        data_dir = Path(args.data_dir).expanduser()
        clips = folder_clips(data_dir, read_metadata(data_dir, Path(args.manifest) if args.manifest else None))
        name = str(args.manifest or data_dir)
    else:
        clips, name = iter(()), ""
    opts = ScorecardOptions(stages=stages, limit=args.limit, tts_limit=args.tts_limit,
                            llm_prompts=args.llm_prompts, dataset=name, progress=not args.no_progress,
                            extra={"overrides": list(args.set)})
    report = run_scorecard(profile, clips, opts)
    path = write_report(report, args.out or f"scorecard-{profile.name}.json")
    print(format_table(report))
    print(f"report: {path}")
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from training.data import PrepareOptions, prepare

    opts = from_args(PrepareOptions, args, trim=not args.no_trim, spell_numbers=not args.keep_digits)
    source = _dataset_source(args)
    if source is None and not args.data_dir:
        raise SystemExit("s2s-train prepare: give DATA_DIR (a folder, save_to_disk folder or parquet) "
                         "or --hf-dataset ID")
    if source is not None:
        from training.data import prepare_clips
        from training.hfdata import dataset_clips

        clips, total = dataset_clips(source)
        report = prepare_clips(clips, args.out, opts, source.describe(), total, not args.no_progress, args.add)
    else:
        report = prepare(args.data_dir, args.out, opts, args.manifest, not args.no_progress, args.add)
    print(report.summary())
    return 0 if report.clips_kept else 1


def _cmd_asr(args: argparse.Namespace) -> int:
    from training.asr import ASROptions, train_asr

    opts = from_args(ASROptions, args,
                     quantizations=tuple(q.strip() for q in args.quantizations.split(",") if q.strip()))
    summary = train_asr(args.prepared, args.out, opts, _train_config(args))
    _print_summary(summary)
    for quant, path in summary["exports"].items():
        print(
            f"engine: --set asr.model={path} --set asr.compute_type={'int8' if quant == 'int8' else 'float16'}"
        )
    return 0


def _cmd_tts(args: argparse.Namespace) -> int:
    from training.tts import TTSOptions, train_tts

    opts = from_args(TTSOptions, args, train_speaker_embedding=not args.freeze_speaker_embedding)
    summary = train_tts(args.prepared, args.out, opts, _train_config(args))
    _print_summary(summary)
    print(f"engine: --set tts.backend=speecht5 --set tts.model={summary['export']}")
    return 0


def _cmd_turn(args: argparse.Namespace) -> int:
    from training.turn import TurnTrainOptions, train_turn

    opts = from_args(TurnTrainOptions, args)
    summary = train_turn(args.prepared, args.out, opts, _turn_examples(args), _train_config(args))
    _print_summary(summary)
    for name, m in summary["heldout"].items():
        print(f"held-out {name}: accuracy {m['accuracy']}, incomplete precision {m['precision_incomplete']} "
              f"recall {m['recall_incomplete']} ({m['n']} clips, threshold {m['threshold']})")
    print(f"summary: {Path(args.out) / 'summary.json'}")
    held = summary["heldout"]  # the export that scored best on the held-out clips (int8 on a tie: faster)
    best = max(summary["exports"], key=lambda k: ((held.get(f"after_onnx_{k}") or {}).get("accuracy") or 0, k == "int8"))
    print(f"engine: --set turn.model={summary['exports'][best]} --set turn.policy=combined")
    return 0


def _print_summary(summary: dict) -> None:
    first, last = summary.get("first_loss"), summary.get("last_loss")
    resumed = f" (resumed at {summary['resumed_from']})" if summary.get("resumed_from") is not None else ""
    loss = f"loss {first:.4f} -> {last:.4f}" if first is not None and last is not None else "no new steps"
    val = f", validation loss {summary['val_loss']:.4f}" if summary.get("val_loss") is not None else ""
    print(
        f"step {summary['steps']}{resumed}: {loss}{val}; {summary['seconds']} s on {summary['device']} "
        f"({summary['precision']})"
    )


def _cmd_eval(args: argparse.Namespace) -> int:
    from training.evaluate import EvalOptions, evaluate, format_table, write_report

    if not args.asr and not args.tts and not args.turn:
        raise SystemExit("s2s-train eval: give --asr DIR, --tts DIR and/or --turn [MODEL]")
    if args.window_s < 1:
        raise SystemExit("s2s-train eval: --window-s must be at least 1 second (30: Whisper's own window)")
    opts = from_args(EvalOptions, args)
    report = evaluate(args.prepared, args.asr, args.tts, opts) if args.asr or args.tts else {
        "prepared": str(args.prepared), "split": args.split}
    if args.turn:
        from training.turn import evaluate_turn

        report["turn"] = evaluate_turn(args.prepared, args.turn, _turn_examples(args), args.split,
                                       args.turn_threshold, args.limit)
    path = write_report(report, args.out or Path(args.prepared) / "eval.json")
    print(format_table(report))
    print(f"report: {path}")
    return 0


def _cmd_tiny(args: argparse.Namespace) -> int:
    from training.tiny import build_all

    built = build_all(args.out, tuple(w.strip() for w in args.only.split(",") if w.strip()))
    if args.ct2 and "whisper" in built:
        from engine.ct2_convert import convert_whisper_to_ct2

        built["whisper-ct2"] = convert_whisper_to_ct2(
            built["whisper"], Path(args.out) / "whisper-ct2", "int8"
        )
    for name, path in built.items():
        print(f"{name}: {path}")
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from training.synth import make_dataset

    out = make_dataset(args.out, n=args.n, with_bad=args.with_bad, words=args.words)
    print(f"wrote {args.n} clips{' and bad rows' if args.with_bad else ''} to {out} "
          f"({'metadata.jsonl, with word times' if args.words else 'metadata.csv'})")
    return 0


COMMANDS = {
    "prepare": _cmd_prepare,
    "asr": _cmd_asr,
    "tts": _cmd_tts,
    "turn": _cmd_turn,
    "eval": _cmd_eval,
    "tiny-models": _cmd_tiny,
    "synth-data": _cmd_synth,
    "scorecard": _cmd_scorecard,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from engine.errors import S2SError
    from training.data import DataError

    try:
        return COMMANDS[args.command](args)
    except (DataError, S2SError, OSError, ValueError, ImportError, RuntimeError) as exc:
        if os.environ.get("S2S_DEBUG") or (isinstance(exc, RuntimeError) and "cuda" not in str(exc).lower()):
            raise
        print(f"s2s-train {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"\ns2s-train {args.command}: interrupted; continue with the same command and --resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
