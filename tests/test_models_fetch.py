"""``s2s-engine models fetch`` and the gpu profile's models, against a replica of the hub.

The replica (``tests/hub_replica.py``) serves the gpu profile's four repos with the real repos'
file names and layouts, tiny random weights inside; the real huggingface_hub client reaches it
through ``HF_ENDPOINT``, in ``s2s-engine`` subprocesses (huggingface_hub reads the variable at
import). What these tests hold:

- the fetch downloads only the files the engine reads, at the profile's pinned revisions: the
  6.2 GB Flax copy of the Whisper, ``training_args.bin`` and the second weight copies of the
  other repos are never requested;
- it says what it needs on disk and what is free, and refuses in one line when it will not fit;
- hub errors (no such repo, revision or file, no hub at all) are one line with the fix;
- the 2022 Whisper checkpoint (no ``lang_to_id``, no ``tokenizer.json``) converts with the real
  language list (``<|te|>`` = 50299), so language detection works;
- the fetched gpu profile replays a turn on this CPU with every one of its backends;
- a Transformers Whisper folder as ``asr.model`` is converted once, cached by content, and with
  ``asr.language = "auto"`` gives a completed turn;
- what the engine does with code-switched (Telugu + English) speech under "auto".
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.config import load_profile
from engine.errors import ModelError
from engine.models import HubRef, is_transformers_whisper, parse_hub_ref, resolve, select_files, status
from tests.conftest import silence, speak
from tests.hub_replica import (
    ENCODEC_REPO,
    ENCODEC_SHA,
    GGUF_FILE,
    GGUF_REPO,
    VITS_REPO,
    VITS_SHA,
    WHISPER_REPO,
    WHISPER_SHA,
    HubReplica,
    gpu_profile_repos,
    write_legacy_whisper,
)

ROOT = Path(__file__).resolve().parents[1]
CPU = ["asr.device=cpu", "asr.compute_type=int8", "tts.device=cpu", "llm.n_gpu_layers=0", "llm.parallel=1",
       "llm.max_tokens=24"]
"""The gpu profile on this CPU: every stage off the GPU, one LLM instance, short replies."""

WHISPER_READ = {"added_tokens.json", "config.json", "generation_config.json", "merges.txt", "normalizer.json",
                "preprocessor_config.json", "pytorch_model.bin", "special_tokens_map.json", "tokenizer_config.json",
                "vocab.json"}


def engine_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("s2s-engine")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "remote.cli"]


def run_engine(args: list[str], env: dict[str, str], timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([*engine_cmd(), *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def sets(overrides: list[str]) -> list[str]:
    return [arg for o in overrides for arg in ("--set", o)]


def hub_env(home: Path, endpoint: str | None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HOME=str(home / "hf"), S2S_HOME=str(home / "s2s"),
               HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_OFFLINE="0" if endpoint else "1")
    env.pop("HF_TOKEN", None)
    if endpoint:
        env["HF_ENDPOINT"] = endpoint
    return env


@pytest.fixture(scope="module")
def repos(tmp_path_factory):
    """The gpu profile's repos as the replica serves them (built once: about 10 s)."""
    return gpu_profile_repos(tmp_path_factory.mktemp("hub-files"))


def replica(repos, **reported_sizes: dict[str, int]) -> HubReplica:
    """A fresh replica over ``repos`` (sizes a test makes the hub report: ``{repo_id: {file: n}}``)."""
    fresh = [dataclasses.replace(r, reported_sizes=dict(reported_sizes.get(r.repo_id, {}))) for r in repos]
    return HubReplica(fresh)


@pytest.fixture(scope="module")
def fetched(repos, tmp_path_factory):
    """One real ``s2s-engine models fetch --profile gpu`` against the replica, then a second one."""
    home = tmp_path_factory.mktemp("pod")
    with replica(repos) as hub:
        env = hub_env(home, hub.url)
        first = run_engine(["models", "fetch", "--profile", "gpu", *sets(["asr.compute_type=int8"])], env)
        requests_after_first = list(hub.requests)
        second = run_engine(["models", "fetch", "--profile", "gpu", *sets(["asr.compute_type=int8"])], env)
    return {"home": home, "hub": hub, "first": first, "second": second, "first_requests": requests_after_first}


# --- references and file choice (no network) ----------------------------------------------


def test_hub_references_carry_a_revision():
    assert parse_hub_ref("hf:org/repo") == HubRef("org/repo", "main", None, False)
    assert parse_hub_ref(f"hf+ct2:org/repo@{WHISPER_SHA}") == HubRef("org/repo", WHISPER_SHA, None, True)
    assert parse_hub_ref("hf:org/repo@v1.0/sub/model.gguf") == HubRef("org/repo", "v1.0", "sub/model.gguf", False)
    assert parse_hub_ref(f"hf+ct2:org/repo@{WHISPER_SHA}").pinned and not parse_hub_ref("hf:org/repo").pinned
    assert parse_hub_ref("pkg:whisper-base") is None and parse_hub_ref("/models/whisper") is None
    for bad in ("hf:repo-without-org", "hf:org/repo@", "hf+ct2:org/repo/file.bin", "hf:/repo"):
        with pytest.raises(ValueError):
            parse_hub_ref(bad)
    with pytest.raises(ModelError, match="ORG/REPO"):
        resolve("asr", "hf+ct2:no-org")
    # every hub model of the shipped gpu profile is at an explicit revision; all but the GGUF pinned
    profile = load_profile("gpu")
    refs = {"asr": profile.asr.model, "llm": profile.llm.model, "tts": profile.tts.model,
            "codec": profile.session.codec_model}
    hubs = {k: parse_hub_ref(v) for k, v in refs.items()}
    assert all(h is not None and "@" in refs[k] for k, h in hubs.items())
    assert {k for k, h in hubs.items() if h.pinned} == {"asr", "tts", "codec"}
    assert (hubs["asr"].revision, hubs["tts"].revision, hubs["codec"].revision) == (WHISPER_SHA, VITS_SHA, ENCODEC_SHA)
    assert (hubs["llm"].repo_id, hubs["llm"].filename) == (GGUF_REPO, GGUF_FILE)


def test_only_the_files_the_engine_reads_are_chosen(repos):
    by_id = {r.repo_id: r for r in repos}
    assert set(select_files(by_id[WHISPER_REPO].files)) == WHISPER_READ  # no flax, no training_args
    assert set(select_files(by_id[VITS_REPO].files)) == {"config.json", "model.safetensors", "special_tokens_map.json",
                                                         "tokenizer_config.json", "vocab.json"}
    assert set(select_files(by_id[ENCODEC_REPO].files)) == {"config.json", "model.safetensors",
                                                            "preprocessor_config.json"}
    assert select_files(by_id[GGUF_REPO].files, GGUF_FILE) == [GGUF_FILE]
    # a CTranslate2 repo (faster-whisper-*), a sharded safetensors repo with a PyTorch copy
    ct2 = ["README.md", "config.json", "model.bin", "preprocessor_config.json", "tokenizer.json", "vocabulary.json"]
    assert select_files(ct2) == ["config.json", "model.bin", "preprocessor_config.json", "tokenizer.json",
                                 "vocabulary.json"]
    sharded = ["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
               "model.safetensors.index.json", "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin",
               "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack", "optimizer.pt"]
    assert select_files(sharded) == ["config.json", "model-00001-of-00002.safetensors",
                                     "model-00002-of-00002.safetensors", "model.safetensors.index.json"]
    # a fine-tune's repo with its training leftovers; a model in a subfolder (a SpeechT5 vocoder) is kept
    finetune = ["config.json", "pytorch_model.bin", "training_args.bin", "vocab.json",
                "checkpoint-500/pytorch_model.bin", "checkpoint-500/config.json", "runs/Dec01/events.out.tfevents.1",
                ".ipynb_checkpoints/config.json", "vocoder/config.json", "vocoder/pytorch_model.bin"]
    assert select_files(finetune) == ["config.json", "pytorch_model.bin", "vocab.json", "vocoder/config.json",
                                      "vocoder/pytorch_model.bin"]


# --- the fetch ----------------------------------------------------------------------------


def test_fetch_downloads_only_what_the_engine_reads_at_the_pinned_revisions(fetched, repos):
    first, hub = fetched["first"], fetched["hub"]
    assert first.returncode == 0, first.stdout + first.stderr
    out = " ".join(first.stdout.split())
    assert "Traceback" not in first.stdout + first.stderr
    # the 12 GB repo: 10 small files and the PyTorch weights, never the Flax copy or the training state
    assert hub.downloads(WHISPER_REPO) == WHISPER_READ
    assert hub.downloads(VITS_REPO) == {"config.json", "model.safetensors", "special_tokens_map.json",
                                        "tokenizer_config.json", "vocab.json"}
    assert hub.downloads(ENCODEC_REPO) == {"config.json", "model.safetensors", "preprocessor_config.json"}
    assert hub.downloads(GGUF_REPO) == {GGUF_FILE}
    decoys = {(r.repo_id, f.path) for r in repos for f in r.files.values() if f.decoy}
    assert ("vasista22/whisper-telugu-large-v2", "flax_model.msgpack") in decoys
    assert not {(r, p) for r, p in decoys if p in hub.downloads(r)}
    assert not any("flax_model.msgpack" in path or "training_args.bin" in path for _, path in hub.requests)
    # at the revisions the profile pins, and only those
    assert hub.revisions_asked(WHISPER_REPO) == {WHISPER_SHA}
    assert hub.revisions_asked(VITS_REPO) == {VITS_SHA}
    assert hub.revisions_asked(ENCODEC_REPO) == {ENCODEC_SHA}
    assert hub.revisions_asked(GGUF_REPO) == {"main"}
    assert f"{GGUF_REPO} is not pinned: @main is commit" in out  # and it says how to pin it
    # it said what it needs and what is free before it started; the repo's size beside it
    assert "of the repo's 6.2 GB" in out
    assert "the fetch needs" in out and "is free there" in out
    assert out.index("the fetch needs") < out.index("converting the Transformers Whisper")
    assert f"converted {WHISPER_REPO} to CTranslate2 int8 in" in out


def test_the_2022_whisper_converts_with_its_language_list(fetched):
    home = fetched["home"]
    converted = list((home / "s2s" / "models" / "ct2").glob("vasista22--whisper-telugu-large-v2-int8-*"))
    assert len(converted) == 1
    config = json.loads((converted[0] / "config.json").read_text())
    assert len(config["lang_ids"]) == 99 and 50299 in config["lang_ids"]  # <|te|> in the large-v2 layout
    assert min(config["lang_ids"]) == 50259 and max(config["lang_ids"]) == 50357  # <|en|> .. <|su|>
    tokens = {t["content"]: t["id"] for t in json.loads((converted[0] / "tokenizer.json").read_text())["added_tokens"]}
    assert tokens["<|te|>"] == 50299 and tokens["<|notimestamps|>"] == 50363
    # the hub cache holds the repo as it was: no tokenizer.json, the generation config untouched
    snapshot = home / "hf" / "hub" / "models--vasista22--whisper-telugu-large-v2" / "snapshots" / WHISPER_SHA
    assert {p.name for p in snapshot.iterdir()} == WHISPER_READ
    assert "lang_to_id" not in json.loads((snapshot / "generation_config.json").read_text())
    # so detection works: faster-whisper's own transcribe(language=None) and the engine's decode
    from faster_whisper import WhisperModel

    from engine.stages.asr_whisper import transcribe

    model = WhisperModel(str(converted[0]), device="cpu", compute_type="int8")
    audio = np.random.default_rng(0).normal(0, 0.05, 32_000).astype(np.float32)
    _, info = model.transcribe(audio, language=None, beam_size=1, without_timestamps=True)
    assert info.language and len(info.all_language_probs) == 99
    assert transcribe(model, audio, None).language in {code for code, _ in info.all_language_probs}


def test_a_second_fetch_downloads_and_converts_nothing(fetched):
    second = fetched["second"]
    assert second.returncode == 0, second.stdout + second.stderr
    out = " ".join(second.stdout.split())
    assert out.count("in the hub cache already") == 4 and "converting" not in out
    later = fetched["hub"].requests[len(fetched["first_requests"]):]
    assert not [p for method, p in later if "/resolve/" in p and method == "GET"]  # no content again
    # the pinned repos need no request at all; the unpinned GGUF gets a HEAD: has main moved?
    assert [p for _, p in later if "/resolve/" in p] == [f"/{GGUF_REPO}/resolve/main/{GGUF_FILE}"]


def test_models_list_and_the_codec_after_the_fetch(fetched, monkeypatch):
    import huggingface_hub.constants

    home = fetched["home"]
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(home / "hf" / "hub"))
    monkeypatch.setenv("S2S_HOME", str(home / "s2s"))
    profile = load_profile("gpu", ["asr.compute_type=int8"])
    rows = {r.stage: r for r in status(profile)}
    assert all(r.present for r in rows.values()), [r.problem for r in rows.values()]
    assert Path(rows["asr"].path).parent == home / "s2s" / "models" / "ct2"
    assert rows["llm"].path.endswith(GGUF_FILE) and WHISPER_SHA not in rows["llm"].path
    assert Path(rows["tts"].path).name == VITS_SHA
    # what s2s-engine --headless loads for s2s.encodec: the fetched folder, unless --codec-model says else
    from remote.codec import EncodecCodec
    from remote.server import codec_path

    assert codec_path("", profile) == rows["codec"].path and Path(rows["codec"].path).name == ENCODEC_SHA
    assert codec_path("/my/encodec", profile) == "/my/encodec"
    assert not (Path(rows["codec"].path) / "pytorch_model.bin").exists()
    assert EncodecCodec.load(codec_path("", profile)).random_weights is False


def test_status_before_a_fetch_names_the_fix(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("S2S_HOME", str(tmp_path / "s2s"))
    rows = {r.stage: r for r in status(load_profile("gpu"))}
    for stage in ("asr", "llm", "tts", "codec"):
        assert not rows[stage].present and "s2s-engine models fetch --profile gpu" in rows[stage].problem
    assert rows["codec"].ref.startswith("hf:facebook/encodec_24khz@")


def test_the_offline_profile_needs_no_codec_row():
    assert "codec" not in {r.stage for r in status(load_profile("offline"))}


def test_fetch_refuses_when_the_disk_is_too_small(repos, tmp_path):
    with replica(repos, **{WHISPER_REPO: {"pytorch_model.bin": 10**15}}) as hub:  # the hub says 1 PB
        proc = run_engine(["models", "fetch", "--profile", "gpu"], hub_env(tmp_path, hub.url))
    assert proc.returncode == 1
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stdout + err and len(err.splitlines()) == 1
    assert "not enough disk space: the fetch needs" in err and "GB on the disk of" in err and "HF_HOME" in err
    assert not [p for _, p in hub.requests if "/resolve/" in p]  # refused before any download
    assert "of the repo's" in proc.stdout  # it said what it would take first


def test_hub_errors_are_one_line_with_the_fix(repos, tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()  # nothing listens there: connection refused
    with replica(repos) as hub:
        cases = [
            (hub.url, ["asr.model=hf+ct2:nobody/no-such-whisper"], "no repository nobody/no-such-whisper",
             "correct the repo id"),
            (hub.url, [f"asr.model=hf+ct2:{WHISPER_REPO}@{'0' * 40}"], f"has no revision '{'0' * 40}'",
             "correct the @revision"),
            (hub.url, ["asr.model=pkg:whisper-base", f"llm.model=hf:{GGUF_REPO}/nope.gguf"],
             f"no file 'nope.gguf' in {GGUF_REPO} at main (it has: {GGUF_FILE}", "correct the file name"),
            (closed, [], "cannot reach the hub (ConnectError", "check the internet connection"),
        ]
        for endpoint, overrides, problem, fix in cases:
            proc = run_engine(["models", "fetch", "--profile", "gpu", *sets(overrides)], hub_env(tmp_path, endpoint))
            err = proc.stderr.strip()
            assert proc.returncode == 1 and "Traceback" not in proc.stdout + err, err
            assert len(err.splitlines()) == 1 and problem in err and fix in err, err
        assert not [p for _, p in hub.requests if "/resolve/" in p]


# --- the fetched gpu profile runs ---------------------------------------------------------


def test_the_fetched_gpu_profile_replays_a_turn_on_the_cpu(fetched, tmp_path):
    report = tmp_path / "report.json"
    proc = run_engine(["replay", "--profile", "gpu", *sets(CPU), "--fast", "--out", str(tmp_path / "out"),
                       "--json", str(report)], hub_env(fetched["home"], None))  # HF_HUB_OFFLINE=1: no hub
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr and "converting" not in proc.stderr
    data = json.loads(report.read_text(encoding="utf-8"))
    engine = data["engine"]
    assert data["profile"] == "gpu" and engine["notes"] == []  # no fallback: every gpu-profile backend loaded
    models = engine["models"]
    assert (models["asr"]["backend"], models["llm"]["backend"], models["tts"]["backend"]) == (
        "faster-whisper", "llama-cpp", "vits")
    assert "/models/ct2/vasista22--whisper-telugu-large-v2-int8-" in models["asr"]["path"]
    assert models["llm"]["path"].endswith(GGUF_FILE) and Path(models["tts"]["path"]).name == VITS_SHA
    turns = data["files"][0]["turns"]
    assert turns and turns[0]["status"] == "completed" and turns[0]["response_id"]
    assert turns[0]["reply_audio_ms"] > 0 and Path(turns[0]["reply_wav"]).exists()  # random weights: any words


# --- a Transformers Whisper folder as asr.model, language "auto" -------------------------------


def test_a_transformers_whisper_folder_with_language_auto_gives_a_turn(tmp_path, monkeypatch):
    folder = tmp_path / "my-whisper-finetune"
    write_legacy_whisper(folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert is_transformers_whisper(folder) and "tokenizer.json" not in before
    report = tmp_path / "report.json"
    env = hub_env(tmp_path / "home", None)
    proc = run_engine(["replay", *sets([f"asr.model={folder}", "asr.language=auto"]), "--fast", "--out",
                       str(tmp_path / "out"), "--json", str(report)], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    err = " ".join(proc.stderr.split())
    assert f"converting the Transformers Whisper {folder} to CTranslate2 int8" in err
    assert "converted my-whisper-finetune to CTranslate2 int8 in" in err
    turn = json.loads(report.read_text(encoding="utf-8"))["files"][0]["turns"][0]
    assert turn["status"] == "completed" and turn["reply_text"] and Path(turn["reply_wav"]).exists()
    assert turn["language"] and len(turn["language"]) in (2, 3)  # detected (random weights: any language)
    # converted once, into the model cache, keyed by content; the folder itself untouched
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    monkeypatch.setenv("S2S_HOME", env["S2S_HOME"])
    cached = Path(resolve("asr", str(folder), compute_type="int8", convert=False))  # no conversion: it is there
    assert cached.parent == Path(env["S2S_HOME"]) / "models" / "ct2" and cached.name.startswith("my-whisper-finetune-int8-")
    assert 50299 in json.loads((cached / "config.json").read_text())["lang_ids"]
    # another quantization, or a changed checkpoint, is another conversion
    with pytest.raises(ModelError, match="not converted to CTranslate2 float16 yet"):
        resolve("asr", str(folder), compute_type="float16", convert=False)
    gen = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps({**gen, "max_length": 200}))
    with pytest.raises(ModelError, match="s2s-engine models fetch --profile offline` converts it now"):
        resolve("asr", str(folder), compute_type="int8", convert=False)


def test_a_checkpoint_without_a_generation_config_converts_with_its_language_list(tmp_path):
    from engine.ct2_convert import convert_whisper_to_ct2

    src = tmp_path / "hf"
    write_legacy_whisper(src)
    (src / "generation_config.json").unlink()
    out = convert_whisper_to_ct2(src, tmp_path / "ct2", "int8")
    config = json.loads((out / "config.json").read_text())
    assert len(config["lang_ids"]) == 99 and 50299 in config["lang_ids"]
    assert config["suppress_ids_begin"] == [220, 50257]  # the rest as transformers derives it from config.json
    assert not (src / "generation_config.json").exists() and not (src / "tokenizer.json").exists()


def test_language_auto_refuses_a_model_without_a_language_list(tmp_path):
    from engine.config import ASROptions
    from engine.stages.asr_whisper import FasterWhisperASR

    base = Path(resolve("asr", "pkg:whisper-base"))
    broken = tmp_path / "ct2"
    broken.mkdir()
    for p in base.iterdir():
        (broken / p.name).symlink_to(p)
    config = json.loads((base / "config.json").read_text())
    (broken / "config.json").unlink()
    (broken / "config.json").write_text(json.dumps({**config, "lang_ids": []}))  # what the old conversion wrote
    asr = FasterWhisperASR(ASROptions(model=str(broken), language="auto"), str(broken))
    with pytest.raises(ModelError, match='asr.language is "auto" but this model has no language list'):
        asr.setup()


# --- code-switched speech under "auto" ---------------------------------------------------------


@pytest.fixture(scope="module")
def code_switched(tmp_path_factory):
    """A Telugu phrase then an English one (espeak-ng, 0.3 s apart): one utterance, 6.5 s."""
    d = tmp_path_factory.mktemp("code-switch")
    from engine.audio import load_wav

    te, _ = load_wav(speak("నమస్కారం, మీరు ఎలా ఉన్నారు?", d / "te.wav", "te", 16_000))
    en, _ = load_wav(speak("I want to book a table for two people tonight.", d / "en.wav", "en", 16_000))
    return te, en


def test_code_switched_speech_gets_one_language_per_utterance(offline_engine, code_switched):
    """Whisper detects one language for the utterance (from its first 30 s window) and writes the
    whole utterance in it. Whisper base detects English here (p 0.78) and drops the Telugu part:
    not transliterated, just gone. Forced to Telugu it loops on the same audio (and writes the
    English of a plain English clip in Latin letters). A Telugu fine-tune would weigh the other way;
    what base shows is the mechanism: one language per utterance, never a switch inside one."""
    te, en = code_switched
    asr = offline_engine.asr
    mixed = np.concatenate([te, silence(0.3), en])
    tr = asr.transcribe(mixed, None)  # asr.language = "auto"
    assert tr.language == "en" and tr.script_ok is True
    assert "table for two people" in tr.text
    assert not any("\u0c00" <= c <= "\u0c7f" for c in tr.text)  # nothing of the Telugu part survives
    assert asr.transcribe(te, None).language != "te"  # base does not even detect espeak Telugu alone
    forced = asr.transcribe(mixed, "te")
    assert forced.language == "te" and "table" not in forced.text


async def test_language_auto_in_a_session_reports_the_detected_language(offline_engine, code_switched, tmp_path):
    from engine.replay import replay_file

    _, en = code_switched
    report = await replay_file(offline_engine, "en.wav", tmp_path, fast=True, language="auto",
                               audio=np.concatenate([silence(0.5), en]))
    assert report.turns and report.turns[0].language == "en" and report.turns[0].script_ok is True
    assert "table" in report.turns[0].transcript and report.turns[0].status == "completed"
