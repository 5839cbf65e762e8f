"""``s2s-engine models fetch`` with the hub replaced at its boundary (no network here):
the download functions return local tiny models of the real architectures, and the rest
(conversion of ``hf+ct2:`` Whisper checkpoints to CTranslate2, resolution, status) is real."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import load_profile
from engine.models import ct2_dir, fetch, resolve, status


@pytest.fixture()
def fake_hub(tmp_path, monkeypatch):
    import huggingface_hub

    from training.tiny import build_tiny_vits, build_tiny_whisper

    repos = {
        "org/whisper-te": build_tiny_whisper(tmp_path / "hub" / "whisper"),
        "org/vits-te": build_tiny_vits(tmp_path / "hub" / "vits"),
    }
    gguf = tmp_path / "hub" / "model.gguf"
    gguf.write_bytes(Path(resolve("llm", "pkg:gemma3-270m")).read_bytes()[:64])  # a stand-in file
    downloaded: list[str] = []

    def snapshot_download(repo_id, local_files_only=False, **kw):
        if repo_id not in repos:
            raise FileNotFoundError(repo_id)
        if local_files_only and repo_id not in downloaded:
            raise FileNotFoundError(f"{repo_id} not in the local cache")
        downloaded.append(repo_id)
        return str(repos[repo_id])

    def hf_hub_download(repo_id, filename, local_files_only=False, **kw):
        if local_files_only and repo_id not in downloaded:
            raise FileNotFoundError(f"{repo_id}/{filename} not in the local cache")
        downloaded.append(repo_id)
        return str(gguf)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.setenv("S2S_HOME", str(tmp_path / "s2s"))
    return downloaded


def test_fetch_downloads_converts_and_then_resolves(fake_hub):
    profile = load_profile("gpu", ["asr.model=hf+ct2:org/whisper-te", "asr.compute_type=int8",
                                   "llm.model=hf:org/llm-GGUF/model.gguf", "tts.model=hf:org/vits-te"])
    before = {r.stage: r for r in status(profile)}
    assert not before["asr"].present and not before["llm"].present and not before["tts"].present
    assert "s2s-engine models fetch --profile gpu" in before["asr"].problem
    after = {r.stage: r for r in fetch(profile)}
    assert all(r.present for r in after.values()), [r.problem for r in after.values()]
    out = ct2_dir("org/whisper-te", "int8")
    assert after["asr"].path == str(out) and (out / "model.bin").exists() and (out / "tokenizer.json").exists()
    from faster_whisper import WhisperModel

    WhisperModel(str(out), device="cpu", compute_type="int8")  # the conversion loads in faster-whisper
    assert resolve("tts", "hf:org/vits-te", "gpu").endswith("vits")
