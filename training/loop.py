"""The training loop shared by ``asr`` and ``tts``: precision, accumulation, checkpoints, resume, CSV log.

A small hand-written loop rather than ``transformers.Trainer`` or ``accelerate``: the two
recipes need a custom loss input (SpeechT5's speaker embeddings) and an exact resume
(same step, same data order), and this keeps every moving part visible in ~200 lines.

``OUT/checkpoints/step-NNNNNN/`` holds ``state.pt`` (module and optimizer state, scheduler,
grad scaler, RNG states) and ``trainer_state.json`` (step, epoch, position in the epoch).
``--resume`` continues from the newest one with the same data order it would have had;
``OUT/loss.csv`` is cut back to that step and appended to.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import pickle
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

LOG_FIELDS = ["step", "epoch", "loss", "lr", "grad_norm", "val_loss", "elapsed_s"]


@dataclass
class TrainConfig:
    """Options shared by the ``asr`` and ``tts`` recipes.

    Fields:
        steps: optimizer steps in total (a resumed run continues up to this number).
        batch_size: clips per micro-batch.
        grad_accum: micro-batches per optimizer step (effective batch = batch_size * grad_accum).
        lr / warmup_steps / weight_decay / max_grad_norm: AdamW with linear warm-up and decay.
        precision: "auto" (bf16 on CUDA when supported, else fp16; fp32 on CPU), "fp32", "fp16", "bf16".
        device: "auto", "cpu" or "cuda".
        save_every: checkpoint every this many steps (and at the end); keep_checkpoints: how many to keep.
        eval_every: validation loss every this many steps (0: only at the end).
        log_every: loss.csv row every this many steps.
        num_workers: DataLoader worker processes for feature extraction.
        gradient_checkpointing: recompute activations in backward to save memory (CUDA default).
        seed: data order and initialisation.
        resume: continue from the newest checkpoint in OUT/checkpoints.
    """

    steps: int = 2000
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 1e-5
    warmup_steps: int = 100
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    precision: str = "auto"
    device: str = "auto"
    save_every: int = 500
    keep_checkpoints: int = 2
    eval_every: int = 500
    log_every: int = 1
    num_workers: int = 2
    gradient_checkpointing: bool = False
    seed: int = 1234
    resume: bool = False
    progress: bool = True


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' asked for, but torch sees no CUDA GPU (use --device cpu)")
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32."""
    if device.type != "cuda":
        if name in ("fp16", "bf16"):
            print(f"note: --precision {name} is for CUDA; training in fp32 on {device.type}")
        return None
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def _rng_state() -> dict[str, Any]:
    """Every RNG's state as tensors and plain values (what ``torch.load(weights_only=True)`` reads)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(rng: dict[str, Any]) -> None:
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = rng["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def latest_checkpoint(out_dir: Path) -> Path | None:
    ckpts = sorted((out_dir / "checkpoints").glob("step-*"))
    ckpts = [c for c in ckpts if (c / "trainer_state.json").exists()]
    return ckpts[-1] if ckpts else None


class Trainer:
    """Runs ``steps`` optimizer steps of ``loss_fn(module, batch)`` over ``dataset``.

    ``module`` holds every trainable parameter (a model, or a wrapper with extra parameters
    such as speaker embeddings). ``collate`` builds a batch (dict of tensors) from items.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        dataset: Dataset,
        collate: Callable[[list[Any]], dict[str, Any]],
        loss_fn: Callable[[torch.nn.Module, dict[str, Any]], torch.Tensor],
        config: TrainConfig,
        out_dir: Path,
        val_dataset: Dataset | None = None,
        run_info: dict[str, Any] | None = None,
    ):
        self.module, self.dataset, self.collate, self.loss_fn = module, dataset, collate, loss_fn
        self.cfg, self.out_dir, self.val_dataset = config, Path(out_dir), val_dataset
        self.device = resolve_device(config.device)
        self.amp_dtype = resolve_precision(config.precision, self.device)
        self.module.to(self.device)
        params = [p for p in module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.step, self.epoch, self.position = 0, 0, 0
        self.run_info = run_info or {}
        self.history: list[dict[str, Any]] = []

    def _lr_factor(self, step: int) -> float:
        warm = max(1, self.cfg.warmup_steps)
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (self.cfg.steps - step) / max(1, self.cfg.steps - warm))

    # ----------------------------------------------------------------- data order
    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        order = list(range(len(self.dataset)))  # type: ignore[arg-type]
        random.Random(self.cfg.seed * 1_000_003 + epoch).shuffle(order)
        bs = self.cfg.batch_size
        return [order[i : i + bs] for i in range(0, len(order), bs)]

    def _micro_batches(self) -> Iterator[dict[str, Any]]:
        while True:
            batches = self._epoch_batches(self.epoch)[self.position :]
            loader = DataLoader(
                self.dataset,
                batch_sampler=batches,
                collate_fn=self.collate,
                num_workers=self.cfg.num_workers if self.device.type == "cuda" else 0,
                pin_memory=self.device.type == "cuda",
            )
            for batch in loader:
                self.position += 1
                yield batch
            self.epoch += 1
            self.position = 0

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {
            k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()
        }

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    # ----------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path:
        ckpt = self.out_dir / "checkpoints" / f"step-{self.step:06d}"
        tmp = ckpt.with_name(ckpt.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        torch.save(
            {
                "module": self.module.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": _rng_state(),
            },
            tmp / "state.pt",
        )
        state = {
            "step": self.step,
            "epoch": self.epoch,
            "position": self.position,
            "config": asdict(self.cfg),
        }
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2))
        shutil.rmtree(ckpt, ignore_errors=True)
        tmp.rename(ckpt)
        old = sorted((self.out_dir / "checkpoints").glob("step-??????"))
        for stale in old[: max(0, len(old) - self.cfg.keep_checkpoints)]:
            shutil.rmtree(stale, ignore_errors=True)
        return ckpt

    def load_checkpoint(self, ckpt: Path) -> None:
        state = json.loads((ckpt / "trainer_state.json").read_text())
        try:  # tensors and plain containers only: a checkpoint cannot run code when loaded
            blob = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise ValueError(f"{ckpt / 'state.pt'} holds more than tensors and plain values, so it was not loaded "
                             f"(an s2s-train checkpoint never does; an older one stored its RNG state as "
                             f"objects): remove {ckpt} or train without --resume. "
                             f"({str(exc).splitlines()[0][:200]})") from None
        self.module.load_state_dict(blob["module"])
        self.module.to(self.device)
        self.optimizer.load_state_dict(blob["optimizer"])
        self.scheduler.load_state_dict(blob["scheduler"])
        self.scaler.load_state_dict(blob["scaler"])
        _set_rng_state(blob["rng"])
        self.step, self.epoch, self.position = state["step"], state["epoch"], state["position"]

    # ----------------------------------------------------------------- log
    def _open_log(self) -> None:
        path = self.out_dir / "loss.csv"
        rows: list[dict[str, str]] = []
        if path.exists() and self.step > 0:
            with open(path, newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= self.step]
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=LOG_FIELDS)
            writer.writeheader()
            writer.writerows(rows)

    def _log(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        with open(self.out_dir / "loss.csv", "a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=LOG_FIELDS).writerow({k: row.get(k, "") for k in LOG_FIELDS})

    @torch.no_grad()
    def validation_loss(self) -> float | None:
        if self.val_dataset is None or len(self.val_dataset) == 0:  # type: ignore[arg-type]
            return None
        self.module.eval()
        total, n = 0.0, 0
        bs = self.cfg.batch_size
        idx = list(range(len(self.val_dataset)))  # type: ignore[arg-type]
        for i in range(0, len(idx), bs):
            batch = self._to_device(self.collate([self.val_dataset[j] for j in idx[i : i + bs]]))
            with self._autocast():
                loss = self.loss_fn(self.module, batch)
            total += float(loss) * len(idx[i : i + bs])
            n += len(idx[i : i + bs])
        self.module.train()
        return total / max(1, n)

    # ----------------------------------------------------------------- main loop
    def train(self) -> dict[str, Any]:
        """Run to ``cfg.steps``; returns a summary (first/last loss, steps, seconds)."""
        cfg = self.cfg
        self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        resumed_from = None
        if cfg.resume:
            ckpt = latest_checkpoint(self.out_dir)
            if ckpt is None:
                print(f"--resume: no checkpoint in {self.out_dir / 'checkpoints'}, starting at step 0")
            else:
                self.load_checkpoint(ckpt)
                resumed_from = self.step
                print(f"resumed from {ckpt} (step {self.step}, epoch {self.epoch})")
        self._open_log()
        (self.out_dir / "train_config.json").write_text(
            json.dumps({"train": asdict(cfg), **self.run_info}, indent=2, ensure_ascii=False)
        )
        self.module.train()
        start_step, t0 = self.step, time.perf_counter()
        micro = self._micro_batches()
        progress = None
        if cfg.progress:
            from tqdm.auto import tqdm

            progress = tqdm(total=cfg.steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        try:
            while self.step < cfg.steps:
                self.optimizer.zero_grad(set_to_none=True)
                loss_sum = 0.0
                for _ in range(cfg.grad_accum):
                    batch = self._to_device(next(micro))
                    with self._autocast():
                        loss = self.loss_fn(self.module, batch) / cfg.grad_accum
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"loss is {float(loss)} at step {self.step}: lower --lr")
                    self.scaler.scale(loss).backward()
                    loss_sum += float(loss.detach())
                self.scaler.unscale_(self.optimizer)
                params = [p for g in self.optimizer.param_groups for p in g["params"]]
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.scheduler.step()
                self.step += 1
                val = None
                last = self.step == cfg.steps
                if (cfg.eval_every and self.step % cfg.eval_every == 0) or last:
                    val = self.validation_loss()
                if self.step % max(1, cfg.log_every) == 0 or last or val is not None:
                    self._log(
                        {
                            "step": self.step,
                            "epoch": self.epoch,
                            "loss": round(loss_sum, 6),
                            "lr": f"{self.scheduler.get_last_lr()[0]:.3e}",
                            "grad_norm": round(grad_norm, 4) if math.isfinite(grad_norm) else "",
                            "val_loss": "" if val is None else round(val, 6),
                            "elapsed_s": round(time.perf_counter() - t0, 2),
                        }
                    )
                if progress is not None:
                    progress.update(1)
                    progress.set_postfix(
                        loss=f"{loss_sum:.4f}", **({"val": f"{val:.4f}"} if val is not None else {})
                    )
                if (cfg.save_every and self.step % cfg.save_every == 0) or last:
                    self.save_checkpoint()
        finally:
            if progress is not None:
                progress.close()
        losses = [float(r["loss"]) for r in self.history]
        vals = [float(r["val_loss"]) for r in self.history if r.get("val_loss") not in ("", None)]
        return {
            "steps": self.step,
            "resumed_from": resumed_from,
            "steps_this_run": self.step - start_step,
            "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None,
            "val_loss": vals[-1] if vals else None,
            "seconds": round(time.perf_counter() - t0, 2),
            "device": str(self.device),
            "precision": str(self.amp_dtype or "fp32"),
        }
