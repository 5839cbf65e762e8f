"""llama.cpp (llama-cpp-python) language model over a GGUF file.

llama.cpp runs quantised GGUF models fast on CPU and fully offloaded on CUDA
(``n_gpu_layers=-1``), streams tokens, and needs no torch. One ``Llama`` object is not
thread-safe: the engine serialises calls to it (one LLM worker thread).

Two prompt formats:
- ``chat``: messages through the model's chat template (``chat_format``), for instruct models;
- ``dialogue``: for base models such as the offline Gemma 3 270M, the conversation is
  written as a Telugu dialogue (system prompt, one example exchange, the history) that the
  model continues; generation stops at the next speaker label.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

from engine.config import LLMOptions
from engine.errors import ModelError
from engine.stages.base import ChatMessage, LLMBackend

USER, AGENT = "వినియోగదారు", "సహాయకుడు"
EMPTY_RETRIES = 2  # an empty reply is sampled again this many times
EXAMPLE = (
    f"{USER}: ఈ రోజు వాతావరణం ఎలా ఉంది?\n"
    f"{AGENT}: ఈ రోజు ఎండగా ఉంది. బయటకు వెళ్ళేటప్పుడు నీళ్ళు తీసుకెళ్ళండి.\n\n"
)


def dialogue_prompt(messages: list[ChatMessage]) -> str:
    """Write chat messages as a Telugu dialogue ending where the agent speaks next."""
    system = " ".join(m["content"] for m in messages if m["role"] == "system")
    lines = [system.strip() + "\n\n" if system else "", EXAMPLE]
    for m in messages:
        if m["role"] == "user":
            lines.append(f"{USER}: {m['content'].strip()}\n")
        elif m["role"] == "assistant":
            lines.append(f"{AGENT}: {m['content'].strip()}\n\n")
    lines.append(f"{AGENT}:")
    return "".join(lines)


class LlamaCppLLM(LLMBackend):
    name = "llama-cpp"

    def __init__(self, options: LLMOptions, model_path: str):
        self.options, self.model_path = options, model_path
        self._llm = None
        self._slots: queue.Queue = queue.Queue()
        self._all: list = []
        self.context_size = options.n_ctx
        self.device = "cpu"

    def setup(self) -> None:
        if self.options.n_gpu_layers != 0:
            from engine.cuda import preload

            preload()  # a CUDA build of llama.cpp links libcudart/libcublas from pip wheels
        import llama_cpp

        with open(self.model_path, "rb") as f:
            if f.read(4) != b"GGUF":
                raise ModelError("llm", self.options.model, self.model_path, "not a GGUF file",
                                 "set llm.model to a .gguf file")
        if self.options.parallel < 1:
            raise ModelError("llm", self.options.model, self.model_path, "llm.parallel must be at least 1")
        for _ in range(self.options.parallel):
            try:
                llm = llama_cpp.Llama(
                    self.model_path,
                    n_ctx=self.options.n_ctx,
                    n_gpu_layers=self.options.n_gpu_layers,
                    n_threads=self.options.n_threads or None,
                    chat_format=self.options.chat_format or None,
                    seed=self.options.seed,
                    verbose=False,
                )
            except Exception as exc:  # noqa: BLE001 - llama_cpp raises ValueError/RuntimeError
                self.close()
                raise ModelError("llm", self.options.model, self.model_path, f"failed to load ({exc})") from None
            self._all.append(llm)
            self._slots.put(llm)
        self._llm = self._all[0]
        self.context_size = self._llm.n_ctx()
        self.device = "cuda" if self.options.n_gpu_layers != 0 and llama_cpp.llama_supports_gpu_offload() else "cpu"
        # Warm up with the configured system prompt: the first call pays for buffer allocation,
        # and llama.cpp keeps the prompt's prefix cached, so the first real turn only prefills
        # what follows the system prompt.
        warm: list[ChatMessage] = [{"role": "user", "content": "నమస్కారం"}]
        if self.options.system_prompt:
            warm.insert(0, {"role": "system", "content": self.options.system_prompt})
        for _ in self._all:
            llm = self._slots.get()
            try:
                for _ in self._generate(llm, warm, 1, threading.Event()):
                    pass
            finally:
                self._slots.put(llm)

    @property
    def llama(self):  # noqa: ANN201 - llama_cpp.Llama, imported lazily
        """The loaded ``llama_cpp.Llama`` (for benchmarks that drive generation directly)."""
        return self._llm

    def count_tokens(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def stream(self, messages: list[ChatMessage], max_tokens: int, cancel: threading.Event) -> Iterator[str]:
        llm = self._slots.get()  # a free model instance (blocks while all are generating)
        try:
            for attempt in range(EMPTY_RETRIES + 1):
                said = False
                for text in self._generate(llm, messages, max_tokens, cancel, hotter=attempt > 0):
                    said = True
                    yield text
                if said or cancel.is_set():
                    return
                # nothing at all (a small model can stop at once): sample again, a little hotter
        finally:
            self._slots.put(llm)

    def _generate(self, llm, messages: list[ChatMessage], max_tokens: int,  # noqa: ANN001
                  cancel: threading.Event, hotter: bool = False) -> Iterator[str]:
        o = self.options
        temperature = max(o.temperature, 0.5) + 0.3 if hotter else o.temperature
        common = dict(max_tokens=max_tokens, temperature=temperature, top_p=o.top_p,
                      repeat_penalty=o.repeat_penalty, stream=True)
        if o.prompt_format == "dialogue":
            chunks = llm(dialogue_prompt(messages), stop=[f"\n{USER}", f"{USER}:", "\n\n"], **common)
            texts = (c["choices"][0].get("text") or "" for c in chunks)
        else:
            chunks = llm.create_chat_completion(list(messages), **common)
            texts = (c["choices"][0]["delta"].get("content") or "" for c in chunks)
        try:
            for text in texts:
                if cancel.is_set():
                    break
                if text:
                    yield text
        finally:
            close = getattr(chunks, "close", None)
            if close:
                close()

    def close(self) -> None:
        for llm in self._all:
            llm.close()
        self._all.clear()
        self._llm = None

    def describe(self) -> dict:
        return {"backend": self.name, "model": self.options.model, "path": self.model_path,
                "device": self.device, "n_ctx": self.context_size, "prompt_format": self.options.prompt_format,
                "parallel": len(self._all)}
