"""A replica of the Hugging Face Hub on 127.0.0.1, for the tests of ``s2s-engine models fetch``.

The real ``huggingface_hub`` client talks to it through ``HF_ENDPOINT`` (read when
huggingface_hub is imported, so the fetch runs in a subprocess with the variable set). It
answers the calls that client makes for ``model_info``, ``snapshot_download`` and
``hf_hub_download`` (huggingface_hub 2.4, read from its source):

- ``GET /api/models/{repo}/revision/{rev}[?blobs=true]``: the commit (``sha``) and the files
  (``siblings``, with sizes, blob ids and LFS data when ``blobs`` is asked for);
- ``GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=..``: the file listing
  ``snapshot_download`` filters with ``allow_patterns``;
- ``HEAD``/``GET /{repo}/resolve/{rev}/{file}``: the file, with ``X-Repo-Commit``, ``ETag``
  (``X-Linked-Etag`` and ``X-Linked-Size`` for LFS files) and ``Content-Length``; no Xet
  headers, so the client uses plain HTTP;
- 404s with ``X-Error-Code`` ``RepoNotFound``, ``RevisionNotFound`` or ``EntryNotFound``, as
  the hub sends them.

A repo answers at its commit SHA and at ``main``. Every request is recorded
(:attr:`HubReplica.requests`), so a test can assert which files were fetched. Decoys are
files listed at their real size (``flax_model.msgpack``, 6.2 GB) with no content: asking for
one gets a 403, and the request is on record.

:func:`gpu_profile_repos` lays out the repos of ``engine/profiles/gpu.toml`` with the real
repos' file names (read from the hub's file listings): tiny random weights of the real
architectures, the real tokenizer layouts. They say nothing; they load and run.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

LFS_MIN_BYTES = 10 * 2**20
"""Files from this size, and weights of any size, are stored with LFS (``lfs`` data, sha256 etag)."""


@dataclass
class HubFile:
    """One file of a replica repo: its content (bytes or a path), or a decoy of ``size`` bytes."""

    path: str
    content: bytes | Path | None
    size: int
    oid: str  # the git blob id
    sha256: str | None  # LFS files: the content's sha256 (the hub's etag for them)

    @property
    def decoy(self) -> bool:
        return self.content is None

    def read(self) -> bytes:
        assert self.content is not None
        return self.content if isinstance(self.content, bytes) else self.content.read_bytes()


@dataclass
class HubRepo:
    """A model repo at one commit."""

    repo_id: str
    sha: str
    files: dict[str, HubFile] = field(default_factory=dict)
    reported_sizes: dict[str, int] = field(default_factory=dict)  # what the API says instead (a test's lie)

    def add(self, path: str, content: bytes | str | Path) -> None:
        """A real file: ``content`` as bytes, text, or a file to serve."""
        if isinstance(content, str):
            content = content.encode("utf-8")
        data = content if isinstance(content, bytes) else Path(content).read_bytes()
        oid = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        lfs = len(data) >= LFS_MIN_BYTES or path.endswith((".bin", ".safetensors", ".gguf", ".msgpack"))
        self.files[path] = HubFile(path, content, len(data), oid, hashlib.sha256(data).hexdigest() if lfs else None)

    def decoy(self, path: str, size: int) -> None:
        """A file the hub lists (at ``size`` bytes) that must never be downloaded."""
        digest = hashlib.sha256(f"{self.repo_id}/{path}".encode()).hexdigest()
        self.files[path] = HubFile(path, None, size, digest[:40], digest)

    def size(self, path: str) -> int:
        return self.reported_sizes.get(path, self.files[path].size)


class HubReplica:
    """The replica server: ``with HubReplica(repos) as hub: ... hub.url ...``."""

    def __init__(self, repos: list[HubRepo]):
        self.repos = {r.repo_id: r for r in repos}
        self.requests: list[tuple[str, str]] = []  # (method, path with query)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "the replica is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubReplica:
        replica = self

        class Handler(_Handler):
            hub = replica

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="hub-replica", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> HubReplica:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def record(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append((method, path))

    def downloads(self, repo_id: str) -> set[str]:
        """The files of ``repo_id`` whose content was asked for (HEAD or GET on /resolve/)."""
        prefix = f"/{repo_id}/resolve/"
        with self._lock:
            paths = [urlsplit(p).path for _, p in self.requests]
        return {unquote(p[len(prefix):]).split("/", 1)[1] for p in paths if p.startswith(prefix)}

    def revisions_asked(self, repo_id: str) -> set[str]:
        """The revisions any request for ``repo_id`` named."""
        out = set()
        with self._lock:
            paths = [urlsplit(p).path for _, p in self.requests]
        for p in paths:
            for prefix in (f"/api/models/{repo_id}/revision/", f"/api/models/{repo_id}/tree/", f"/{repo_id}/resolve/"):
                if p.startswith(prefix):
                    out.add(unquote(p[len(prefix):].split("/", 1)[0]))
        return out


class _Handler(BaseHTTPRequestHandler):
    hub: HubReplica
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # quiet: the requests are recorded instead

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._serve(head=False)

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
        self._serve(head=True)

    # --- routing -------------------------------------------------------------------------

    def _serve(self, head: bool) -> None:
        self.hub.record("HEAD" if head else "GET", self.path)
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.split("/") if p]
        query = parse_qs(url.query)
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo = self._repo(parts[2], parts[3])
            if repo is None:
                return
            if len(parts) == 4:  # /api/models/{repo}: the default branch
                return self._model_info(repo, "main", query)
            if len(parts) >= 6 and parts[4] == "revision":
                return self._model_info(repo, parts[5], query)
            if len(parts) >= 6 and parts[4] == "tree":
                return self._tree(repo, parts[5], "/".join(parts[6:]))
        if len(parts) >= 5 and parts[2] == "resolve":
            repo = self._repo(parts[0], parts[1])
            if repo is None:
                return
            return self._resolve(repo, parts[3], "/".join(parts[4:]), head)
        self._error(404, "not a route of the replica", "RepoNotFound")

    def _repo(self, org: str, name: str) -> HubRepo | None:
        repo = self.hub.repos.get(f"{org}/{name}")
        if repo is None:
            self._error(404, "Repository not found", "RepoNotFound")
        return repo

    def _commit(self, repo: HubRepo, revision: str) -> str | None:
        if revision in ("main", repo.sha):
            return repo.sha
        self._error(404, f"Invalid rev id: {revision}", "RevisionNotFound", repo.sha)
        return None

    # --- answers -------------------------------------------------------------------------

    def _model_info(self, repo: HubRepo, revision: str, query: dict[str, list[str]]) -> None:
        sha = self._commit(repo, revision)
        if sha is None:
            return
        blobs = query.get("blobs", ["false"])[0].lower() == "true"
        siblings = []
        for f in repo.files.values():
            s: dict[str, Any] = {"rfilename": f.path}
            if blobs:
                s.update(size=repo.size(f.path), blobId=f.oid)
                if f.sha256:
                    s["lfs"] = {"size": repo.size(f.path), "sha256": f.sha256, "pointerSize": 134}
            siblings.append(s)
        self._json({"_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24], "id": repo.repo_id,
                    "modelId": repo.repo_id, "author": repo.repo_id.split("/")[0], "sha": sha, "private": False,
                    "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [],
                    "lastModified": "2023-04-24T00:00:00.000Z", "createdAt": "2022-12-20T00:00:00.000Z",
                    "siblings": siblings}, sha)

    def _tree(self, repo: HubRepo, revision: str, under: str) -> None:
        sha = self._commit(repo, revision)
        if sha is None:
            return
        entries = []
        for f in sorted(repo.files.values(), key=lambda f: f.path):
            if under and not f.path.startswith(under.rstrip("/") + "/"):
                continue
            e: dict[str, Any] = {"type": "file", "oid": f.oid, "size": repo.size(f.path), "path": f.path}
            if f.sha256:
                e["lfs"] = {"oid": f.sha256, "size": repo.size(f.path), "pointerSize": 134}
            entries.append(e)
        self._json(entries, sha)

    def _resolve(self, repo: HubRepo, revision: str, path: str, head: bool) -> None:
        sha = self._commit(repo, revision)
        if sha is None:
            return
        f = repo.files.get(path)
        if f is None:
            return self._error(404, "Entry not found", "EntryNotFound", sha)
        if f.decoy:
            return self._error(403, f"{path} is a decoy of the replica: the fetch must not download it",
                               None, sha)
        data = f.read()
        self.send_response(200)
        self.send_header("X-Repo-Commit", sha)
        self.send_header("ETag", f'"{f.oid}"')
        if f.sha256:
            self.send_header("X-Linked-Etag", f'"{f.sha256}"')
            self.send_header("X-Linked-Size", str(len(data)))
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _json(self, data: Any, sha: str) -> None:
        body = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Repo-Commit", sha)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, message: str, code: str | None, sha: str | None = None) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        if sha:
            self.send_header("X-Repo-Commit", sha)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


# --- the gpu profile's repos, laid out as on the hub ------------------------------------------

WHISPER_REPO = "vasista22/whisper-telugu-large-v2"
WHISPER_SHA = "ba19a24bf6530de184860de2b8ba968595b9b18a"
GGUF_REPO = "bartowski/google_gemma-3-1b-it-GGUF"
GGUF_FILE = "google_gemma-3-1b-it-Q4_K_M.gguf"
GGUF_SHA = "3c6b9a6a5d4e1f2a7b8c9d0e1f2a3b4c5d6e7f80"  # main of the replica (the real SHA is not pinned)
VITS_REPO = "facebook/mms-tts-tel"
VITS_SHA = "d29d4270e5563fe79a6d4b459db903487b069562"
ENCODEC_REPO = "facebook/encodec_24khz"
ENCODEC_SHA = "c1dbe2ae3f1de713481a3b3e7c47f357092ee040"

GITATTRIBUTES = "*.bin filter=lfs diff=lfs merge=lfs -text\n*.msgpack filter=lfs diff=lfs merge=lfs -text\n" \
                "*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.gguf filter=lfs diff=lfs merge=lfs -text\n"


def gpu_profile_repos(root: Path) -> list[HubRepo]:
    """The four hub repos of the gpu profile, built under ``root`` (about 20 s on 2 cores)."""
    root.mkdir(parents=True, exist_ok=True)
    return [legacy_whisper_repo(root / "whisper"), gguf_repo(root / "gguf"), mms_tts_repo(root / "mms"),
            encodec_repo(root / "encodec")]


def legacy_whisper_repo(folder: Path) -> HubRepo:
    """``vasista22/whisper-telugu-large-v2`` at main (``ba19a24``), as fine-tuned and saved in
    2022: the slow-tokenizer files (vocab.json, merges.txt, added_tokens.json,
    special_tokens_map.json, tokenizer_config.json, normalizer.json; no tokenizer.json), a
    ``_from_model_config`` generation config without ``lang_to_id``, a 185 kB
    preprocessor_config.json holding the mel filters, PyTorch weights saved without the tied
    ``proj_out`` head, and the same weights as Flax (a 6.2 GB decoy) plus ``training_args.bin``."""
    repo = HubRepo(WHISPER_REPO, WHISPER_SHA)
    for path, content in write_legacy_whisper(folder).items():
        repo.add(path, content)
    repo.add(".gitattributes", GITATTRIBUTES)
    repo.add("README.md", "---\nlanguage:\n- te\nlicense: apache-2.0\n---\n# Whisper Telugu Large-v2 (replica)\n")
    repo.decoy("flax_model.msgpack", 6_173_370_000)
    repo.decoy("training_args.bin", 3_643)
    return repo


def write_legacy_whisper(folder: Path, seed: int = 0) -> dict[str, Path]:
    """A tiny random Whisper (d_model 64, 2+2 layers, the real 51865-token vocabulary) in the
    2022 Transformers layout of the large-v2 fine-tunes; returns name -> file."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    from training.tiny import whisper_tokenizer_json

    folder.mkdir(parents=True, exist_ok=True)
    tok = json.loads(whisper_tokenizer_json().read_text(encoding="utf-8"))
    vocab = tok["model"]["vocab"]  # 50258 entries: the byte-level BPE, "" at 50256, <|endoftext|> at 50257
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    specials = [t["content"] for t in tok["added_tokens"]]
    eot, sot = vocab["<|endoftext|>"], next(t["id"] for t in tok["added_tokens"]
                                            if t["content"] == "<|startoftranscript|>")

    def added(content: str) -> dict[str, Any]:
        return {"content": content, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}

    files = {
        "vocab.json": json.dumps(vocab, ensure_ascii=False, indent=2),
        "merges.txt": "#version: 0.2\n" + "\n".join(merges) + "\n",
        "added_tokens.json": json.dumps({t["content"]: t["id"] for t in tok["added_tokens"]
                                         if t["content"] not in vocab}, indent=2),
        "special_tokens_map.json": json.dumps({"additional_special_tokens": specials,
                                               "bos_token": added("<|endoftext|>"), "eos_token": added("<|endoftext|>"),
                                               "pad_token": "<|endoftext|>", "unk_token": added("")}, indent=2),
        "tokenizer_config.json": json.dumps({
            "add_bos_token": False, "add_prefix_space": False,
            "bos_token": {"__type": "AddedToken", **added("<|endoftext|>")},
            "eos_token": {"__type": "AddedToken", **added("<|endoftext|>")}, "errors": "replace",
            "model_max_length": 1024, "name_or_path": "openai/whisper-large-v2", "pad_token": None,
            "processor_class": "WhisperProcessor", "return_attention_mask": False, "special_tokens_map_file": None,
            "tokenizer_class": "WhisperTokenizer", "unk_token": {"__type": "AddedToken", **added("")}}, indent=2),
        "normalizer.json": json.dumps({"accessorise": "accessorize", "analyse": "analyze", "colour": "color",
                                       "favourite": "favorite", "organise": "organize"}, indent=2),
        "generation_config.json": json.dumps({
            "_from_model_config": True, "begin_suppress_tokens": [220, eot], "bos_token_id": eot,
            "decoder_start_token_id": sot, "eos_token_id": eot, "max_length": 448, "pad_token_id": eot,
            "suppress_tokens": [], "transformers_version": "4.27.4", "use_cache": False}, indent=2),
    }
    config = WhisperConfig(vocab_size=51865, num_mel_bins=80, d_model=64, encoder_layers=2, decoder_layers=2,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128,
                           decoder_ffn_dim=128, max_source_positions=1500, max_target_positions=448,
                           decoder_start_token_id=sot, pad_token_id=eot, bos_token_id=eot, eos_token_id=eot,
                           begin_suppress_tokens=[220, eot], suppress_tokens=[], use_cache=False)
    config_json = {"_name_or_path": "openai/whisper-large-v2", "architectures": ["WhisperForConditionalGeneration"],
                   **{k: v for k, v in config.to_dict().items() if k not in ("transformers_version", "dtype")},
                   "forced_decoder_ids": None, "torch_dtype": "float32", "transformers_version": "4.26.0.dev0"}
    files["config.json"] = json.dumps(config_json, indent=2)
    fe = WhisperFeatureExtractor(feature_size=80)
    files["preprocessor_config.json"] = json.dumps({**{k: v for k, v in fe.to_dict().items() if k != "dither"},
                                                    "mel_filters": fe.mel_filters.tolist()}, indent=2)
    out = {}
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
        out[name] = folder / name
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    # 2022's save_pretrained left out the output head tied to the token embeddings
    state = {k: v for k, v in model.state_dict().items() if k != "proj_out.weight"}
    torch.save(state, folder / "pytorch_model.bin")
    out["pytorch_model.bin"] = folder / "pytorch_model.bin"
    return out


GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if message['role'] == 'assistant' -%}{%- set role = 'model' -%}{%- else -%}"
    "{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') + message['content'] | trim"
    " + '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)
"""Gemma 3's chat template, as in the instruct GGUFs (the system prompt joins the first user turn)."""


def gguf_repo(folder: Path) -> HubRepo:
    """``bartowski/google_gemma-3-1b-it-GGUF``: the Q4_K_M file the profile names (here a tiny
    random Gemma 3 GGUF with its chat template) among the other quantisations of the repo
    (decoys, at their real sizes), an imatrix file and a README."""
    repo = HubRepo(GGUF_REPO, GGUF_SHA)
    repo.add(GGUF_FILE, write_tiny_gemma3_gguf(folder / GGUF_FILE))
    repo.add(".gitattributes", GITATTRIBUTES)
    repo.add("README.md", "# Llamacpp imatrix Quantizations of gemma-3-1b-it (replica)\n")
    for name, size in (("google_gemma-3-1b-it-bf16.gguf", 2_006_000_000), ("google_gemma-3-1b-it-Q8_0.gguf",
                       1_069_000_000), ("google_gemma-3-1b-it-Q6_K.gguf", 1_012_000_000),
                       ("google_gemma-3-1b-it-Q4_K_S.gguf", 781_000_000), ("google_gemma-3-1b-it.imatrix", 1_200_000)):
        repo.decoy(name, size)
    return repo


def write_tiny_gemma3_gguf(path: Path, seed: int = 0) -> Path:
    """A tiny random Gemma 3 GGUF (64 wide, 2 layers) that llama.cpp loads: a SentencePiece-style
    vocabulary of the Gemma control tokens, the 256 byte tokens, the Telugu block and a few
    words, and Gemma's chat template. Written in well under a second."""
    import gguf
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    T = gguf.TokenType
    tokens = [("<pad>", T.CONTROL), ("<eos>", T.CONTROL), ("<bos>", T.CONTROL), ("<unk>", T.UNKNOWN),
              ("<start_of_turn>", T.CONTROL), ("<end_of_turn>", T.CONTROL)]
    tokens += [(f"<0x{b:02X}>", T.BYTE) for b in range(256)]
    tokens += [("\u2581", T.NORMAL), (".", T.NORMAL), ("?", T.NORMAL), ("!", T.NORMAL), ("user", T.NORMAL),
               ("model", T.NORMAL), ("\n", T.NORMAL)]
    tokens += [(chr(c), T.NORMAL) for c in range(0x0C00, 0x0C80) if chr(c).isprintable()]
    n_vocab, h, f, heads, kv_heads, hd, layers = len(tokens), 64, 128, 4, 1, 16, 2
    w = gguf.GGUFWriter(str(path), "gemma3")
    w.add_name("tiny random Gemma 3 (s2s hub replica)")
    w.add_context_length(8192)
    w.add_embedding_length(h)
    w.add_block_count(layers)
    w.add_feed_forward_length(f)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(1_000_000.0)
    w.add_sliding_window(512)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list([t for t, _ in tokens])
    w.add_token_scores([0.0 if k != T.NORMAL else -float(i) for i, (_, k) in enumerate(tokens)])
    w.add_token_types([int(k) for _, k in tokens])
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_unk_token_id(3)
    w.add_pad_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(False)
    w.add_chat_template(GEMMA_TEMPLATE)
    rng = np.random.default_rng(seed)

    def rand(*shape: int) -> np.ndarray:
        return (0.02 * rng.standard_normal(shape)).astype(np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, np.float32)

    q, kv = heads * hd, kv_heads * hd
    w.add_tensor("token_embd.weight", rand(n_vocab, h))  # tied: also the output projection
    w.add_tensor("output_norm.weight", ones(h))
    for i in range(layers):
        for name, arr in (("attn_norm", ones(h)), ("attn_q", rand(q, h)), ("attn_k", rand(kv, h)),
                          ("attn_v", rand(kv, h)), ("attn_q_norm", ones(hd)), ("attn_k_norm", ones(hd)),
                          ("attn_output", rand(h, q)), ("post_attention_norm", ones(h)), ("ffn_norm", ones(h)),
                          ("ffn_gate", rand(f, h)), ("ffn_up", rand(f, h)), ("ffn_down", rand(h, f)),
                          ("post_ffw_norm", ones(h))):
            w.add_tensor(f"blk.{i}.{name}.weight", arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def mms_tts_repo(folder: Path) -> HubRepo:
    """``facebook/mms-tts-tel`` at ``d29d427``: config.json, vocab.json, tokenizer_config.json
    (``is_uroman: false``: Telugu script goes in as it is), special_tokens_map.json and the
    weights twice, model.safetensors and pytorch_model.bin (the decoy: one copy is enough)."""
    from training.tiny import build_tiny_vits

    build_tiny_vits(folder)
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    pad = next(iter(vocab))
    repo = HubRepo(VITS_REPO, VITS_SHA)
    repo.add(".gitattributes", GITATTRIBUTES)
    repo.add("config.json", folder / "config.json")
    repo.add("model.safetensors", folder / "model.safetensors")
    repo.add("vocab.json", folder / "vocab.json")
    repo.add("tokenizer_config.json", json.dumps({
        "add_blank": True, "clean_up_tokenization_spaces": True, "is_uroman": False, "language": "tel",
        "model_max_length": 1000000000000000019884624838656, "normalize": True, "pad_token": pad,
        "phonemize": False, "tokenizer_class": "VitsTokenizer", "unk_token": "<unk>"}, ensure_ascii=False, indent=2))
    repo.add("special_tokens_map.json", json.dumps({"pad_token": pad, "unk_token": "<unk>"}, ensure_ascii=False,
                                                   indent=2))
    repo.decoy("pytorch_model.bin", 145_000_000)
    return repo


def encodec_repo(folder: Path) -> HubRepo:
    """``facebook/encodec_24khz`` at ``c1dbe2a``: README.md, config.json, preprocessor_config.json,
    model.safetensors and pytorch_model.bin (the decoy)."""
    from remote.codec import EncodecCodec

    EncodecCodec.random(small=True).save(folder)
    repo = HubRepo(ENCODEC_REPO, ENCODEC_SHA)
    repo.add(".gitattributes", GITATTRIBUTES)
    repo.add("README.md", "---\ninference: false\n---\n# EnCodec 24 kHz (replica)\n")
    repo.add("config.json", folder / "config.json")
    repo.add("model.safetensors", folder / "model.safetensors")
    repo.add("preprocessor_config.json", json.dumps({
        "chunk_length_s": None, "feature_extractor_type": "EncodecFeatureExtractor", "feature_size": 1,
        "overlap": None, "padding_side": "right", "padding_value": 0.0, "return_attention_mask": True,
        "sampling_rate": 24000}, indent=2))
    repo.decoy("pytorch_model.bin", 93_200_000)
    return repo
