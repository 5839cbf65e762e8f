"""Encodec 24 kHz as the compressed audio codec on the wire: the model.

Two layers, kept apart so the wire format can be tested (and parsed by a relay) without torch:

- **Packets** (pure numpy, :mod:`remote.codec_format`): the 11-byte header and the bit-packed
  10-bit codes; re-exported here.
- **The model** (torch, imported lazily; this module): :class:`EncodecCodec` turns float32 mono
  24 kHz PCM into one packet and back; :class:`EncodecStreamEncoder` / :class:`EncodecStreamDecoder`
  do the same for a stream of arbitrary chunk sizes, cutting packets on 320-sample frame boundaries
  and keeping some left context so packet edges do not click.

Why transformers' ``EncodecModel`` and not the ``encodec`` package: the package imports torchaudio at
import time, and the torchaudio wheel available here cannot load. transformers holds the same model
(``facebook/encodec_24khz``, CC-BY-NC) without it. torch and transformers are imported only inside the
functions that need them, so importing this module costs nothing.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import AudioError, BackendUnavailable, ConfigError, ModelError
from remote.codec_format import (
    BANDWIDTHS,
    CODE_BITS,
    CODEBOOK_SIZE,
    CODEBOOKS,
    FRAME_RATE,
    HEADER_SIZE,
    HOP,
    MAGIC,
    MAX_FRAMES,
    MAX_PACKET_FRAMES,
    SAMPLE_RATE,
    VERSION,
    CodecPacket,
    build_packet,
    bytes_per_second,
    check_bandwidth,
    num_codebooks,
    pack_codes,
    packed_size,
    packet_size,
    parse_packet,
    unpack_codes,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

DEFAULT_MODEL = "facebook/encodec_24khz"
FETCH_FIX = "run `s2s-engine models fetch --profile gpu` (needs the network once), or pass a local folder"
INSTALL_FIX = "pip install -c constraints.txt '.[gpu]'  (torch + transformers)"


# --------------------------------------------------------------------------- the model


def _import_torch() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise BackendUnavailable(
            f"the Encodec codec needs torch and transformers ({exc}): {INSTALL_FIX}"
        ) from None
    return torch, transformers


def _as_pcm(pcm: np.ndarray) -> np.ndarray:
    x = np.asarray(pcm)
    if x.ndim == 2 and 1 in x.shape:
        x = x.reshape(-1)
    if x.ndim != 1:
        raise AudioError(f"the codec takes mono audio as a 1-D array, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise AudioError(f"the codec takes float samples in [-1, 1], got dtype {x.dtype}")
    x = x.astype(np.float32, copy=False)
    if not np.all(np.isfinite(x)):
        raise AudioError("the audio holds NaN or infinite samples")
    return x


def _random_config(small: bool) -> Any:
    """EncodecConfig of facebook/encodec_24khz (transformers' default); ``small`` narrows it only."""
    from transformers import EncodecConfig

    config = EncodecConfig()  # 24 kHz, causal, no normalisation, ratios 8-5-4-2, 1024-entry codebooks
    if small:
        # Same layers, strides, frame rate, codebook count and size; fewer channels.
        config = EncodecConfig(num_filters=4, hidden_size=32, codebook_dim=32)
    return config


class EncodecCodec:
    """Encodec 24 kHz mono: PCM to packets and back. One instance is safe to share between threads.

    Build one with :meth:`load` (real weights) or :meth:`random` (the real architecture with random
    weights, for tests: ``random_weights`` is then True and the sound is meaningless).
    """

    def __init__(self, model: Any, *, name: str, random_weights: bool, device: str = "cpu"):
        config = model.config
        if (
            config.sampling_rate != SAMPLE_RATE
            or config.audio_channels != 1
            or config.codebook_size != CODEBOOK_SIZE
            or config.frame_rate != FRAME_RATE
            or config.chunk_length_s is not None
            or tuple(config.target_bandwidths) != BANDWIDTHS
        ):
            raise ModelError(
                "codec",
                name,
                None,
                "not the Encodec 24 kHz mono model (rate, channels, codebooks or bandwidths differ)",
                f"use {DEFAULT_MODEL}",
            )
        self.model = model.eval()
        self.name = name
        self.random_weights = random_weights
        self.device = device
        self._lock = threading.Lock()

    # ---- construction

    @classmethod
    def load(
        cls,
        model: str | os.PathLike = DEFAULT_MODEL,
        device: str = "cpu",
        *,
        allow_download: bool = False,
    ) -> EncodecCodec:
        """Load real weights from a local folder or a hub id already in the local HF cache.

        Never touches the network unless ``allow_download=True``. Missing or incomplete weights raise
        :class:`ModelError` naming the model, the path and the fix.
        """
        name = os.fspath(model)
        as_path = Path(name).expanduser()
        # A hub id is "owner/name" (or a bare name); anything else that looks like a path is one.
        is_path = (
            isinstance(model, os.PathLike)
            or as_path.exists()
            or name.startswith((".", "/", "~"))
            or name.count("/") >= 2
            or (os.sep != "/" and os.sep in name)
        )
        if is_path:
            if not as_path.is_dir():
                raise ModelError("codec", name, str(as_path), "no such model folder", FETCH_FIX)
            if not (as_path / "config.json").is_file():
                raise ModelError("codec", name, str(as_path), "the folder has no config.json", FETCH_FIX)
        torch, transformers = _import_torch()
        where = str(as_path) if is_path else _hf_cache_dir()
        try:
            loaded, info = transformers.EncodecModel.from_pretrained(
                str(as_path) if is_path else name,
                local_files_only=not allow_download,
                output_loading_info=True,
            )
        except (OSError, ValueError, RuntimeError) as exc:
            if is_path:
                problem = f"weights missing or unreadable ({_first_line(exc)})"
            elif allow_download:
                problem = f"download failed ({_first_line(exc)})"
            else:
                problem = (
                    f"not in the local Hugging Face cache (and no folder {as_path.resolve()} exists); "
                    "the network is not tried unless allow_download=True"
                )
            raise ModelError("codec", name, where, problem, FETCH_FIX) from None
        missing = list(info.get("missing_keys") or [])
        if missing:
            raise ModelError(
                "codec",
                name,
                where,
                f"checkpoint incomplete: {len(missing)} tensors missing, e.g. {missing[0]}",
                FETCH_FIX,
            )
        with torch.inference_mode():
            if any(not layer.codebook.embed.any() for layer in loaded.quantizer.layers):
                raise ModelError("codec", name, where, "checkpoint has empty (all-zero) codebooks", FETCH_FIX)
        loaded = loaded.to(device=device, dtype=torch.float32)
        return cls(loaded, name=name, random_weights=False, device=device)

    @classmethod
    def random(cls, seed: int = 0, small: bool = False) -> EncodecCodec:
        """The real Encodec 24 kHz architecture with random weights (tests, benchmarks).

        transformers initialises codebooks to zeros, which would make every code 0. Each codebook is
        drawn with ``normal_()`` and scaled to the statistics of the residual it quantises on a fixed
        calibration signal (like Encodec's k-means initialisation), so codes actually vary.
        """
        torch, transformers = _import_torch()
        torch.manual_seed(seed)
        model = transformers.EncodecModel(_random_config(small)).eval()
        gen = torch.Generator().manual_seed(seed + 1)
        t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
        sweep = 0.5 * np.sin(2 * np.pi * (60 + 2000 * t) * t)
        with torch.inference_mode():
            cal = torch.from_numpy(sweep.astype(np.float32))[None, None]
            cal = cal + 0.05 * torch.randn(cal.shape, generator=gen)
            residual = model.encoder(cal)  # (1, dim, frames)
            for layer in model.quantizer.layers:
                embed = layer.codebook.embed  # (1024, dim)
                embed.normal_(generator=gen)
                embed.mul_(residual[0].std(dim=1)).add_(residual[0].mean(dim=1))
                residual = residual - layer.decode(layer.encode(residual))
        name = f"random-encodec-24khz{'-small' if small else ''}(seed={seed})"
        return cls(model, name=name, random_weights=True)

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the model (config.json + safetensors) so :meth:`load` can read it back."""
        path = Path(folder)
        with self._lock:
            self.model.save_pretrained(path)
        return path

    # ---- codes

    def encode_codes(self, pcm: np.ndarray, bandwidth: float) -> np.ndarray:
        """PCM to codes of shape ``(num_codebooks, ceil(len(pcm) / 320))``, ``uint16``."""
        bw = check_bandwidth(bandwidth)
        x = _as_pcm(pcm)
        if x.size == 0:
            raise AudioError("cannot encode empty audio")
        return self._encode(x, bw, skip_frames=0)

    def decode_codes(self, codes: np.ndarray) -> np.ndarray:
        """Codes ``(num_codebooks, frames)`` to ``frames * 320`` float32 samples in [-1, 1]."""
        torch, _ = _import_torch()
        with self._lock, torch.inference_mode():
            latent = self._latent(torch, codes)
            return self._decode_latent(torch, latent, skip_frames=0)

    def _encode(self, x: np.ndarray, bw: float, skip_frames: int) -> np.ndarray:
        torch, _ = _import_torch()
        with self._lock, torch.inference_mode():
            inp = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)[None, None]
            emb = self.model.encoder(inp)
            codes = self.model.quantizer.encode(emb[..., skip_frames:], bw)  # (n_q, 1, frames)
            return codes[:, 0].cpu().numpy().astype(np.uint16)

    def _latent(self, torch: Any, codes: np.ndarray) -> torch.Tensor:
        idx = torch.from_numpy(np.asarray(codes).astype(np.int64)).to(self.device)[:, None, :]
        return self.model.quantizer.decode(idx)  # (1, dim, frames)

    def _decode_latent(self, torch: Any, latent: torch.Tensor, skip_frames: int) -> np.ndarray:
        audio = self.model.decoder(latent)[0, 0, skip_frames * HOP :]
        return np.clip(audio.float().cpu().numpy(), -1.0, 1.0)

    # ---- packets

    def encode(self, pcm: np.ndarray, bandwidth: float) -> bytes:
        """Float32 mono 24 kHz PCM in [-1, 1] to one packet (at most :data:`MAX_PACKET_FRAMES`, 2 s)."""
        bw = check_bandwidth(bandwidth)
        x = _as_pcm(pcm)
        if x.size == 0:
            raise AudioError("cannot encode empty audio")
        if x.size > MAX_PACKET_FRAMES * HOP:
            raise AudioError(
                f"{x.size / SAMPLE_RATE:.1f} s is too long for one packet (at most "
                f"{MAX_PACKET_FRAMES / FRAME_RATE:g} s): use EncodecStreamEncoder"
            )
        return build_packet(self._encode(x, bw, skip_frames=0), bw, x.size)

    def decode(self, packet: bytes) -> np.ndarray:
        """One packet to float32 mono 24 kHz samples, exactly the packet's sample count."""
        p = parse_packet(packet)
        return self.decode_codes(p.codes)[: p.num_samples]

    def bytes_per_second(self, bandwidth: float, packet_ms: float = 100.0) -> float:
        """Wire rate with headers for ``packet_ms`` packets; see :func:`bytes_per_second`."""
        return bytes_per_second(bandwidth, packet_ms)

    def stream_encoder(self, bandwidth: float, **kwargs: Any) -> EncodecStreamEncoder:
        return EncodecStreamEncoder(self, bandwidth, **kwargs)

    def stream_decoder(self, **kwargs: Any) -> EncodecStreamDecoder:
        return EncodecStreamDecoder(self, **kwargs)


def _hf_cache_dir() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return os.path.expanduser("~/.cache/huggingface/hub")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


# --------------------------------------------------------------------------- streaming


# Left context re-run per packet. The encoder's convolutions see about 8.5 frames back (plus its
# LSTM); 16 frames (213 ms) made streamed codes match a one-shot encode on 97-100% of frames in a
# test with random weights, 8 frames on about half. The decoder reaches >110 dB against a one-shot
# decode of the same codes with 8 frames.
ENCODER_CONTEXT_FRAMES = 16
DECODER_CONTEXT_FRAMES = 8


class EncodecStreamEncoder:
    """Chunks of any size in, packets out on 320-sample frame boundaries.

    Each :meth:`push` returns the packets it completed: one packet holding every whole frame buffered
    (several, of at most :data:`MAX_PACKET_FRAMES`, for a long chunk), once at least ``min_frames`` are
    there. :meth:`flush` zero-pads the tail into a last frame and
    returns its packet (or None), then the encoder starts afresh. ``context_frames`` of earlier audio
    are fed through the (causal) encoder again so codes at packet edges match a one-shot encode.
    ``bandwidth`` may be changed between pushes. One instance serves one stream, from one thread.
    """

    def __init__(
        self,
        codec: EncodecCodec,
        bandwidth: float,
        *,
        min_frames: int = 1,
        context_frames: int = ENCODER_CONTEXT_FRAMES,
    ):
        if min_frames < 1 or min_frames > MAX_PACKET_FRAMES:
            raise ConfigError(f"min_frames must be 1..{MAX_PACKET_FRAMES}, got {min_frames}")
        if context_frames < 0:
            raise ConfigError(f"context_frames must be >= 0, got {context_frames}")
        self.codec = codec
        self.bandwidth = check_bandwidth(bandwidth)
        self.min_frames = min_frames
        self.context_frames = context_frames
        self._pending = np.zeros(0, np.float32)
        self._history = np.zeros(0, np.float32)

    def push(self, pcm: np.ndarray) -> list[bytes]:
        x = _as_pcm(pcm)
        self._pending = np.concatenate([self._pending, x])
        frames = len(self._pending) // HOP
        if frames < self.min_frames:
            return []
        out = []
        while frames >= self.min_frames:
            take = min(frames, MAX_PACKET_FRAMES)
            out.append(self._emit(self._pending[: take * HOP], take * HOP))
            self._pending = self._pending[take * HOP :]
            frames -= take
        return out

    def flush(self) -> bytes | None:
        """Encode what is left (padding the last frame); None when nothing is buffered. Resets."""
        out = None
        if self._pending.size:
            n = self._pending.size
            frames = -(-n // HOP)
            padded = np.zeros(frames * HOP, np.float32)
            padded[:n] = self._pending
            out = self._emit(padded, n)
        self.reset()
        return out

    def reset(self) -> None:
        self._pending = np.zeros(0, np.float32)
        self._history = np.zeros(0, np.float32)

    def _emit(self, block: np.ndarray, num_samples: int) -> bytes:
        bw = check_bandwidth(self.bandwidth)
        skip = len(self._history) // HOP
        codes = self.codec._encode(np.concatenate([self._history, block]), bw, skip_frames=skip)
        keep = self.context_frames * HOP
        self._history = np.concatenate([self._history, block])[-keep:] if keep else self._history[:0]
        return build_packet(codes, bw, num_samples)


class EncodecStreamDecoder:
    """Packets in, PCM out; keeps ``context_frames`` of decoded latents so packet edges join smoothly.

    :meth:`push` returns exactly the packet's samples. Packets of different bandwidths may follow
    each other. Call :meth:`reset` between utterances. One instance serves one stream.
    """

    def __init__(self, codec: EncodecCodec, *, context_frames: int = DECODER_CONTEXT_FRAMES):
        if context_frames < 0:
            raise ConfigError(f"context_frames must be >= 0, got {context_frames}")
        self.codec = codec
        self.context_frames = context_frames
        self._history: Any = None  # latent (1, dim, frames) tensor

    def push(self, packet: bytes) -> np.ndarray:
        p = parse_packet(packet)
        torch, _ = _import_torch()
        codec = self.codec
        with codec._lock, torch.inference_mode():
            latent = codec._latent(torch, p.codes)
            skip = 0
            if self._history is not None:
                skip = self._history.shape[-1]
                latent = torch.cat([self._history, latent], dim=-1)
            audio = codec._decode_latent(torch, latent, skip_frames=skip)
            self._history = latent[..., -self.context_frames :] if self.context_frames else None
        return audio[: p.num_samples]

    def reset(self) -> None:
        self._history = None


# --------------------------------------------------------------------------- benchmark


def _test_signal(seconds: float) -> np.ndarray:
    """Telugu speech from espeak-ng when installed, else a sine sweep; float32 at 24 kHz."""
    import shutil
    import subprocess

    n = int(seconds * SAMPLE_RATE)
    if shutil.which("espeak-ng"):
        try:
            import io

            import soundfile as sf
            import soxr

            text = "నమస్కారం. మీరు ఎలా ఉన్నారు? ఈ రోజు వాతావరణం చాలా బాగుంది. " * 4
            wav = subprocess.run(
                ["espeak-ng", "-v", "te", "--stdout", text], capture_output=True, check=True, timeout=60
            ).stdout
            data, rate = sf.read(io.BytesIO(wav), dtype="float32", always_2d=True)
            x = soxr.resample(data.mean(axis=1), rate, SAMPLE_RATE).astype(np.float32)
            if x.size >= n:
                return x[:n]
            return np.resize(x, n).astype(np.float32)
        except (OSError, subprocess.SubprocessError, RuntimeError, ImportError):
            pass
    t = np.arange(n) / SAMPLE_RATE
    return (0.5 * np.sin(2 * np.pi * (100 + 1500 * t / max(seconds, 1e-9)) * t)).astype(np.float32)


def benchmark(codec: EncodecCodec, seconds: float = 5.0, packet_ms: float = 100.0) -> list[dict[str, float]]:
    """Per bandwidth: one-shot encode/decode real-time factors (in the largest packets, 2 s each)
    and streamed wire bytes per second."""
    x = _test_signal(seconds)
    chunk = round(packet_ms * SAMPLE_RATE / 1000)
    longest = MAX_PACKET_FRAMES * HOP
    rows = []
    codec.decode(codec.encode(x[:HOP], BANDWIDTHS[0]))  # warm-up
    for bw in BANDWIDTHS:
        t0 = time.perf_counter_ns()
        packets = [codec.encode(x[i : i + longest], bw) for i in range(0, x.size, longest)]
        t1 = time.perf_counter_ns()
        y = np.concatenate([codec.decode(pk) for pk in packets])
        t2 = time.perf_counter_ns()
        enc, dec = codec.stream_encoder(bw), codec.stream_decoder()
        sent, out = 0, []
        t3 = time.perf_counter_ns()
        for i in range(0, x.size, chunk):
            for pk in enc.push(x[i : i + chunk]):
                sent += len(pk)
                out.append(dec.push(pk))
        last = enc.flush()
        if last is not None:
            sent += len(last)
            out.append(dec.push(last))
        t4 = time.perf_counter_ns()
        if y.size != x.size or sum(o.size for o in out) != x.size:
            raise AudioError(f"codec self-check failed at {bw} kbps: decoded length differs from the input")
        rows.append(
            {
                "bandwidth": bw,
                "codebooks": CODEBOOKS[bw],
                "encode_rtf": (t1 - t0) / 1e9 / seconds,
                "decode_rtf": (t2 - t1) / 1e9 / seconds,
                "stream_rtf": (t4 - t3) / 1e9 / seconds,
                "one_packet_bps": sum(len(pk) for pk in packets) / seconds,
                "stream_bps": sent / x.size * SAMPLE_RATE,
                "formula_bps": bytes_per_second(bw, packet_ms),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    """``python -m remote.codec``: real-time factors and bytes per second at each bandwidth."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m remote.codec", description=main.__doc__)
    ap.add_argument(
        "--model", help="folder or cached hub id; default: random weights of the real architecture"
    )
    ap.add_argument("--small", action="store_true", help="with random weights: the narrow test variant")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--packet-ms", type=float, default=100.0)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    codec = (
        EncodecCodec.load(args.model, args.device) if args.model else EncodecCodec.random(small=args.small)
    )
    import torch

    note = "  (RANDOM WEIGHTS: timings only, the sound is meaningless)" if codec.random_weights else ""
    print(f"model: {codec.name}{note}")
    print(
        f"device: {codec.device}, torch threads: {torch.get_num_threads()}, clip: {args.seconds:g} s, "
        f"stream packets: {args.packet_ms:g} ms"
    )
    pcm16 = SAMPLE_RATE * 2
    print(
        "| kbps | codebooks | encode RTF | decode RTF | stream enc+dec RTF | B/s 2 s packets | B/s streamed "
        f"| B/s formula | vs PCM16 {pcm16} B/s |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in benchmark(codec, args.seconds, args.packet_ms):
        print(
            f"| {r['bandwidth']:g} | {r['codebooks']} | {r['encode_rtf']:.3f} | {r['decode_rtf']:.3f} "
            f"| {r['stream_rtf']:.3f} | {r['one_packet_bps']:.0f} | {r['stream_bps']:.0f} "
            f"| {r['formula_bps']:.1f} | {pcm16 / r['stream_bps']:.0f}x smaller |"
        )
    return 0


__all__ = ["BANDWIDTHS", "CODEBOOKS", "CODEBOOK_SIZE", "CODE_BITS", "DEFAULT_MODEL", "FRAME_RATE", "HEADER_SIZE",
           "HOP", "MAGIC", "MAX_FRAMES", "MAX_PACKET_FRAMES", "SAMPLE_RATE", "VERSION", "CodecPacket", "EncodecCodec",
           "EncodecStreamDecoder", "EncodecStreamEncoder", "benchmark", "build_packet", "bytes_per_second",
           "check_bandwidth", "num_codebooks", "pack_codes", "packed_size", "packet_size", "parse_packet",
           "unpack_codes"]

if __name__ == "__main__":
    raise SystemExit(main())
