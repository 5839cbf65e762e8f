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

    from engine.codec import EncodecCodec
    from training.tiny import build_tiny_vits, build_tiny_whisper

    repos = {
        "org/whisper-te": build_tiny_whisper(tmp_path / "hub" / "whisper"),
        "org/vits-te": build_tiny_vits(tmp_path / "hub" / "vits"),
        "facebook/encodec_24khz": EncodecCodec.random(small=True).save(tmp_path / "hub" / "encodec"),
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
    # the wire codec of the gpu profile is a row too: fetch brings the Encodec weights
    assert before["codec"].ref == "hf:facebook/encodec_24khz" and not before["codec"].present
    assert "s2s-engine models fetch --profile gpu" in before["codec"].problem
    after = {r.stage: r for r in fetch(profile)}
    assert all(r.present for r in after.values()), [r.problem for r in after.values()]
    out = ct2_dir("org/whisper-te", "int8")
    assert after["asr"].path == str(out) and (out / "model.bin").exists() and (out / "tokenizer.json").exists()
    from faster_whisper import WhisperModel

    WhisperModel(str(out), device="cpu", compute_type="int8")  # the conversion loads in faster-whisper
    assert resolve("tts", "hf:org/vits-te", "gpu").endswith("vits")
    assert "facebook/encodec_24khz" in fake_hub
    from engine.codec import EncodecCodec
    from remote.server import codec_path

    # what s2s-engine --headless loads for s2s.encodec: the fetched folder, unless --codec-model says else
    assert codec_path("", profile) == after["codec"].path
    assert codec_path("/my/encodec", profile) == "/my/encodec"
    assert EncodecCodec.load(codec_path("", profile)).random_weights is False


def test_the_offline_profile_needs_no_codec_row():
    assert "codec" not in {r.stage for r in status(load_profile("offline"))}
