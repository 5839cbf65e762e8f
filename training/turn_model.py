"""The Smart Turn v3 end-of-turn model in torch: build it, load its starting weights, export ONNX.

Architecture, as in pipecat-ai/smart-turn's ``train.py`` (BSD-2-Clause; rewritten here, not
copied): a Whisper encoder cut to 400 source positions (8 s of audio, log-Mel (80, 800)),
attention pooling over time (Linear d->256, tanh, Linear 256->1, softmax), and a classifier
(Linear d->256, LayerNorm, GELU, Dropout 0.1, Linear 256->64, GELU, Linear 64->1). The module
gives one logit per clip; the ONNX export adds the sigmoid, so the file gives P(complete)
with shape (batch, 1), input ``input_features`` (batch, 80, 800), as the stock files do and
as ``engine.stages.turn_smart.SmartTurn`` loads.

Starting weights (``--base``), decided by what the reference names:

- A Smart Turn ONNX file: ``pkg:smart-turn-v3.2`` (the default: the stock model, offline,
  from the pipecat-ai wheel) or a path, e.g. the hub's fp32 ``smart-turn-v3.2-gpu.onnx``.
  The published v3 checkpoints are ONNX only, so the weights are read back out of the graph:
  named initialisers by name, the anonymous (transposed) MatMul weights by the bias that the
  graph adds after them (the bias-free ``k_proj`` by sharing its input with ``q_proj``), and
  int8 weights dequantised. The stock CPU file is int8 with quantised activations too, so
  this float model reproduces the file's float graph exactly, and the int8 file itself only
  approximately (its activations are rounded to 8 bits; upstream trains it with QAT).
- A transformers Whisper checkpoint (hub id such as ``openai/whisper-tiny``, upstream's
  starting point, or a folder): its encoder, with the first 400 of its 1500 positions; the
  pooling and classifier start random. ``s2s-train tiny-models``' ``whisper/`` is a tiny
  random one for tests.
- An earlier ``s2s-train turn`` output folder (``OUT/model``): to continue training.

``export_onnx`` writes the float model with the legacy TorchScript exporter (no onnxscript
needed); ``quantize_int8`` makes an int8 QDQ file like the one upstream ships
(``onnxruntime.quantization``, static, per-channel, calibrated on training clips), but
without upstream's quantisation-aware training: it costs accuracy, which ``s2s-train turn``
reports next to the float export's.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

SOURCE_POSITIONS = 400  # 8 s: the encoder's conv2 halves 800 Mel frames
N_MELS = 80
N_FRAMES = 2 * SOURCE_POSITIONS
HEAD_DIM = 64  # every Whisper size has 64-wide attention heads
SAVED_MARKER = "s2s_turn.json"
ONNX_OPSET = 17


def whisper_config(d_model: int, layers: int, ffn: int, heads: int | None = None) -> Any:
    """A ``WhisperConfig`` for the encoder of a Smart Turn model (decoder fields unused)."""
    from transformers import WhisperConfig

    return WhisperConfig(
        d_model=d_model,
        encoder_layers=layers,
        encoder_attention_heads=heads or max(1, d_model // HEAD_DIM),
        encoder_ffn_dim=ffn,
        num_mel_bins=N_MELS,
        max_source_positions=SOURCE_POSITIONS,
        decoder_layers=1,
        decoder_attention_heads=heads or max(1, d_model // HEAD_DIM),
        decoder_ffn_dim=ffn,
    )


class SmartTurnModel(nn.Module):
    """Whisper encoder + attention pooling + classifier; ``forward`` gives (batch,) logits."""

    def __init__(self, config: Any):
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        super().__init__()
        config.max_source_positions = SOURCE_POSITIONS
        self.config = config
        self.encoder = WhisperEncoder(config)
        d = config.d_model
        self.pool_attention = nn.Sequential(nn.Linear(d, 256), nn.Tanh(), nn.Linear(256, 1))
        self.classifier = nn.Sequential(
            nn.Linear(d, 256), nn.LayerNorm(256), nn.GELU(), nn.Dropout(0.1),
            nn.Linear(256, 64), nn.GELU(), nn.Linear(64, 1),
        )
        for module in (*self.pool_attention, *self.classifier):  # upstream's head initialisation
            if isinstance(module, nn.Linear):
                module.weight.data.normal_(0.0, 0.1)
                module.bias.data.zero_()

    def forward(self, input_features: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_features=input_features).last_hidden_state
        weights = torch.softmax(self.pool_attention(hidden), dim=1)
        return self.classifier((hidden * weights).sum(dim=1)).squeeze(-1)


class _Probability(nn.Module):
    """What the ONNX file computes: P(complete), shape (batch, 1)."""

    def __init__(self, model: SmartTurnModel):
        super().__init__()
        self.model = model

    def forward(self, input_features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(input_features)).unsqueeze(-1)


# ----------------------------------------------------------------------------- starting weights
def load_base(base: str) -> tuple[SmartTurnModel, str]:
    """The model to start from and what it is ("smart-turn-onnx", "whisper", "s2s-turn")."""
    ref = base.strip()
    if ref.startswith("pkg:"):
        from engine.models import resolve

        return from_onnx(resolve("turn", ref)), "smart-turn-onnx"
    path = Path(ref).expanduser()
    if path.suffix == ".onnx":
        if not path.is_file():
            raise FileNotFoundError(f"Smart Turn ONNX file not found: {path}")
        return from_onnx(path), "smart-turn-onnx"
    if (path / SAVED_MARKER).is_file():
        return load_saved(path), "s2s-turn"
    return from_whisper(ref), "whisper"


def from_whisper(ref: str) -> SmartTurnModel:
    """A Whisper checkpoint's encoder (first 400 positions) under a fresh pooling + classifier."""
    from transformers import WhisperModel

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    local = Path(ref).expanduser()
    try:
        whisper = WhisperModel.from_pretrained(str(local) if local.is_dir() else ref,
                                               local_files_only=offline or local.is_dir())
    except (OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OSError(
            f"cannot load the Whisper checkpoint {ref!r} ({reason[:160]}): download it where the hub is "
            f"reachable (`hf download {ref}`, then copy ~/.cache/huggingface) or pass a local folder; or "
            "start from the packaged Smart Turn with --base pkg:smart-turn-v3.2 (offline)"
        ) from None
    src = whisper.config
    if src.num_mel_bins != N_MELS:
        raise ValueError(f"{ref} takes {src.num_mel_bins} Mel bins; Smart Turn's input has {N_MELS} "
                         "(use a Whisper tiny/base/small/medium checkpoint, not large-v3)")
    config = whisper_config(src.d_model, src.encoder_layers, src.encoder_ffn_dim, src.encoder_attention_heads)
    config.activation_function = src.activation_function
    model = SmartTurnModel(config)
    state = whisper.encoder.state_dict()
    state["embed_positions.weight"] = state["embed_positions.weight"][:SOURCE_POSITIONS]
    model.encoder.load_state_dict(state)
    return model


def from_onnx(path: str | Path) -> SmartTurnModel:
    """A Smart Turn v3 model with the weights of an exported ONNX file (int8 or float)."""
    weights = onnx_weights(path)
    try:
        d_model = weights["encoder.layer_norm.weight"].shape[0]
        layers = 1 + max(int(k.split(".")[2]) for k in weights if k.startswith("encoder.layers."))
        ffn = weights["encoder.layers.0.fc1.bias"].shape[0]
    except (KeyError, ValueError):
        raise ValueError(f"{path}: not a Smart Turn v3 graph (no Whisper encoder weights found)") from None
    model = SmartTurnModel(whisper_config(d_model, layers, ffn))
    state = model.state_dict()
    missing = [k for k in state if k not in weights]
    wrong = [k for k in state if k in weights and tuple(weights[k].shape) != tuple(state[k].shape)]
    if missing or wrong:
        raise ValueError(f"{path}: not a Smart Turn v3 graph (missing {missing[:3]}, shape mismatch {wrong[:3]})")
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(weights[k], np.float32)) for k in state})
    return model


def onnx_weights(path: str | Path) -> dict[str, np.ndarray]:
    """Parameter name -> float array, read from a Smart Turn ONNX graph (see the module docstring)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def const(name: str) -> np.ndarray | None:
        if name in inits:
            return inits[name].astype(np.float32)
        node = producer.get(name)
        if node is None or node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            return None
        q = inits[node.input[0]].astype(np.float32)
        scale = inits[node.input[1]].astype(np.float32)
        zero = inits[node.input[2]].astype(np.float32) if len(node.input) > 2 else np.zeros_like(scale)
        if scale.size > 1:  # per channel, along the node's axis (default 1)
            axis = next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 1)
            shape = [1] * q.ndim
            shape[axis] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        return (q - zero) * scale

    def param(name: str) -> str:
        return name.removesuffix("_DequantizeLinear_Output").removeprefix("inner.")

    def users(name: str) -> list[Any]:  # the nodes that read ``name``, past activation Q/DQ pairs
        out = []
        for node in consumers.get(name, []):
            if node.op_type == "QuantizeLinear":
                for dq in consumers.get(node.output[0], []):
                    out += consumers.get(dq.output[0], [])
            else:
                out.append(node)
        return out

    def source(name: str) -> str:  # the tensor behind activation Q/DQ pairs
        node = producer.get(name)
        while node is not None and node.op_type in ("QuantizeLinear", "DequantizeLinear") \
                and node.input[0] not in inits:
            name = node.input[0]
            node = producer.get(name)
        return name

    def bias_after(matmul: Any) -> str | None:
        for node in users(matmul.output[0]):
            if node.op_type == "Add":
                for name in node.input:
                    if param(name).endswith(".bias") and const(name) is not None:
                        return param(name)
        return None

    weights: dict[str, np.ndarray] = {}
    for name in [*inits, *(n.output[0] for n in graph.node if n.op_type == "DequantizeLinear")]:
        if param(name).endswith((".weight", ".bias")) and (value := const(name)) is not None:
            weights[param(name)] = value
    matmuls = [n for n in graph.node if n.op_type == "MatMul" and (w := const(n.input[1])) is not None
               and w.ndim == 2]
    no_bias = []
    for node in matmuls:
        bias = bias_after(node)
        if bias is None:
            no_bias.append(node)
        else:
            weights[bias.removesuffix(".bias") + ".weight"] = const(node.input[1]).T
    for node in no_bias:  # k_proj: reads the same tensor as the q_proj next to it
        for other in matmuls:
            bias = bias_after(other)
            if other is not node and bias and bias.endswith("q_proj.bias") \
                    and source(other.input[0]) == source(node.input[0]):
                weights[bias.replace("q_proj.bias", "k_proj.weight")] = const(node.input[1]).T
    return weights


# ----------------------------------------------------------------------------- save / load
def save(model: SmartTurnModel, folder: str | Path) -> Path:
    """``folder/model.safetensors`` + ``s2s_turn.json`` (the encoder config): a ``--base`` for more training."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))
    meta = {"format": 1, "architecture": "smart-turn-v3", "whisper_config": model.config.to_dict()}
    (folder / SAVED_MARKER).write_text(json.dumps(meta, indent=2))
    return folder


def load_saved(folder: str | Path) -> SmartTurnModel:
    from safetensors.torch import load_file
    from transformers import WhisperConfig

    folder = Path(folder)
    meta = json.loads((folder / SAVED_MARKER).read_text())
    model = SmartTurnModel(WhisperConfig.from_dict(meta["whisper_config"]))
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    return model


# ----------------------------------------------------------------------------- export
def export_onnx(model: SmartTurnModel, path: str | Path) -> Path:
    """The float model as ONNX: ``input_features`` (batch, 80, 800) -> ``logits`` (batch, 1),
    which despite its (upstream) name holds the sigmoid probability."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = _Probability(model).eval().cpu()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation notes about the legacy exporter
        torch.onnx.export(
            wrapper,
            (torch.zeros(1, N_MELS, N_FRAMES),),
            str(path),
            input_names=["input_features"],
            output_names=["logits"],
            dynamic_axes={"input_features": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=ONNX_OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    return path


def quantize_int8(fp32_path: str | Path, out_path: str | Path, calibration: Iterable[np.ndarray]) -> Path:
    """Static int8 (QDQ) as the upstream recipe (per-channel int8 weights, uint8 activations,
    Conv/MatMul/Gemm), calibrated on ``calibration`` (each a (80, 800) feature array).

    Activation ranges: the 99.99th percentile, not upstream's MinMax: upstream trains with QAT,
    this recipe does not, and on 16 held-out espeak-ng clips (2026-12-01) MinMax ranges took a
    fine-tuned model from 0.875 to 0.5625 accuracy, percentile ranges to 0.8125."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.it, None)
            return None if x is None else {"input_features": np.asarray(x, np.float32)[None]}

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    pre = out_path.with_name(out_path.stem + "-pre.onnx")
    try:
        quant_pre_process(str(fp32_path), str(pre), skip_optimization=False)
        quantize_static(
            str(pre), str(out_path), Reader(), quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
            calibrate_method=CalibrationMethod.Percentile, extra_options={"CalibPercentile": 99.99},
            op_types_to_quantize=["Conv", "MatMul", "Gemm"],
        )
    finally:
        pre.unlink(missing_ok=True)
    return out_path
