"""The hub replica (tests/hub_replica.py) answers the real huggingface_hub client as the hub does:
file listings with sizes, downloads with the hub's headers, the hub's error codes. In-process,
with huggingface_hub's ``endpoint`` arguments (the fetch tests use ``HF_ENDPOINT`` in subprocesses)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hub_replica import HubReplica, HubRepo

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture()
def hub():
    repo = HubRepo("org/model", SHA)
    repo.add("config.json", '{"model_type": "whisper"}')
    repo.add("sub/tokenizer.json", "{}")
    repo.add("pytorch_model.bin", b"\x00" * 1000)
    repo.decoy("flax_model.msgpack", 6_173_370_000)
    with HubReplica([repo]) as replica:
        yield replica


def test_model_info_and_the_tree_list_files_with_sizes(hub):
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.url)
    info = api.model_info("org/model", revision="main", files_metadata=True)
    assert info.sha == SHA
    sizes = {s.rfilename: s.size for s in info.siblings}
    assert sizes == {"config.json": 25, "sub/tokenizer.json": 2, "pytorch_model.bin": 1000,
                     "flax_model.msgpack": 6_173_370_000}
    lfs = {s.rfilename: s.lfs for s in info.siblings}
    assert lfs["pytorch_model.bin"].size == 1000 and lfs["config.json"] is None
    tree = {f.path: f.size for f in api.list_repo_tree("org/model", revision=SHA, recursive=True)}
    assert tree == sizes
    assert hub.revisions_asked("org/model") == {"main", SHA}


def test_downloads_follow_allow_patterns_and_land_in_the_cache(hub, tmp_path):
    from huggingface_hub import hf_hub_download, snapshot_download

    folder = snapshot_download("org/model", revision=SHA, allow_patterns=["config.json", "*.bin"],
                               cache_dir=tmp_path, endpoint=hub.url)
    assert sorted(p.name for p in Path(folder).iterdir()) == ["config.json", "pytorch_model.bin"]
    assert hub.downloads("org/model") == {"config.json", "pytorch_model.bin"}
    assert hub.revisions_asked("org/model") == {SHA}
    # the cached file again: no request, even for a branch once its ref is known
    n = len(hub.requests)
    assert hf_hub_download("org/model", "config.json", revision=SHA, cache_dir=tmp_path, endpoint=hub.url)
    assert len(hub.requests) == n
    path = hf_hub_download("org/model", "sub/tokenizer.json", revision="main", cache_dir=tmp_path, endpoint=hub.url)
    assert Path(path).read_text() == "{}"


def test_the_hub_errors_come_back_as_huggingface_hub_exceptions(hub, tmp_path):
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    api = HfApi(endpoint=hub.url)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("org/nothing")
    with pytest.raises(RevisionNotFoundError):
        api.model_info("org/model", revision="f" * 40)
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download("org/model", "missing.json", revision=SHA, cache_dir=tmp_path, endpoint=hub.url)
    # a decoy is never served (a 403: the client then looks in its cache and gives up), and it is on record
    with pytest.raises((HfHubHTTPError, LocalEntryNotFoundError)):
        hf_hub_download("org/model", "flax_model.msgpack", revision=SHA, cache_dir=tmp_path, endpoint=hub.url)
    assert "flax_model.msgpack" in hub.downloads("org/model")
