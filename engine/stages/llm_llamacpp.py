"""llama.cpp (llama-cpp-python) language model over a GGUF file.

llama.cpp runs quantised GGUF models fast on CPU and fully offloaded on CUDA
(``n_gpu_layers=-1``), streams tokens, and needs no torch. One ``Llama`` object is not
thread-safe: the engine serialises calls to it (one LLM worker thread).

Two prompt formats:
- ``chat``: messages through the model's chat template (``chat_format``), for instruct models;
- ``dialogue``: for base models such as the offline Gemma 3 270M, the conversation is
  written as a Telugu dialogue (system prompt, one example exchange, the history) that the
  model continues; generation stops at the next speaker label.

End of turn (``stream_turn``): before a reply, the model reads the user's last message with
its final punctuation removed and gives the probability that a sentence end (``. ? ! ।``, a
line break, the template's end of the user's turn) comes next: near 0 for "what is the
weather like in", near 1 for "what is the weather like in Hyderabad today", in Telugu too
(measured with Gemma 3 270M). The reply's prompt starts with the same tokens, so the
probability is one more logit row in the decode of the reply's prompt, after which the reply's
first token is sampled at once: the signal costs almost nothing. Without the punctuation because
Whisper closes cut-off sentences with a full stop by itself.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from engine.config import LLMOptions
from engine.errors import ConfigError, ModelError
from engine.stages.base import ChatMessage, LLMBackend, default_cpu_threads
from engine.text import speakable

log = logging.getLogger(__name__)

USER, AGENT = "వినియోగదారు", "సహాయకుడు"
DIALOGUE_STOPS = [f"\n{USER}", f"{USER}:", f"\n{AGENT}", f"{AGENT}:", "\n\n"]
"""Where a reply in the dialogue format ends: at the next speaker label, the user's or its own
(a base model may go on with a second "సహాయకుడు:" line of its own), or a blank line."""
EMPTY_RETRIES = 2
"""A reply with nothing to say aloud is sampled again this many times, hotter; the last time the
model may not end before it has written something (its end and line-break tokens are banned)."""
NO_END_BIAS = -100.0
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


def chat_prompt(llama: Any, chat_format: str, messages: list[ChatMessage]) -> str:
    """The prompt text a chat completion sends: the GGUF's own template, or Gemma's turns
    (what llama-cpp-python's ``gemma`` chat format writes), without the BOS token."""
    template = (getattr(llama, "metadata", None) or {}).get("tokenizer.chat_template")
    if template and not chat_format:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        eos = llama.detokenize([llama.token_eos()], special=True).decode("utf-8", errors="ignore")
        bos = llama.detokenize([llama.token_bos()], special=True).decode("utf-8", errors="ignore")
        prompt = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)(messages=messages).prompt
        return prompt[len(bos):] if bos and prompt.startswith(bos) else prompt
    if chat_format in ("gemma", ""):
        system = " ".join(m["content"] for m in messages if m["role"] == "system")
        out = []
        for m in messages:
            if m["role"] == "system":
                continue
            role = "user" if m["role"] == "user" else "model"
            content = m["content"]
            if role == "user" and system:
                content, system = f"{system}\n\n{content}", ""
            out.append(f"<start_of_turn>{role}\n{content}<end_of_turn>\n")
        return "".join(out) + "<start_of_turn>model\n"
    raise ConfigError(f"no prompt text for chat_format={chat_format!r}: use the gemma format or the GGUF's template")


SENTENCE_END = (".", "?", "!", "\n", "।", "॥")
TRAILING = " \t\n.?!।॥,;:…-"
_MARK = "\ue000"  # cuts the rendered prompt where the user's text ends


def last_user_stripped(messages: list[ChatMessage]) -> tuple[int, str] | None:
    """(index, text without its final punctuation) of the last user message; None if empty."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i]["role"] == "user":
            text = messages[i]["content"].strip().rstrip(TRAILING).strip()
            return (i, text) if text else None
    return None


def keep_prefix(llm: Any, tokens: list[int], most: int | None = None) -> int:
    """Keep in ``llm``'s context only the start it shares with ``tokens`` (at most ``most``
    tokens of it), and drop the rest from its KV cache; returns how many tokens it kept."""
    cached = llm.input_ids[: llm.n_tokens].tolist()
    lcp = 0
    for a, b in zip(cached, tokens, strict=False):
        if a != b:
            break
        lcp += 1
    if most is not None:
        lcp = min(lcp, most)
    if lcp > 0 and llm._ctx.kv_cache_seq_rm(-1, lcp, -1):
        llm.n_tokens = lcp
    else:
        llm.reset()
        llm._ctx.kv_cache_seq_rm(-1, 0, -1)
        lcp = 0
    return lcp


def eval_logits(llm: Any, tokens: list[int], rows: list[int]) -> list[np.ndarray]:
    """Evaluate ``tokens`` in ``llm``'s context and return the logits after each position in
    ``rows`` (indices into ``tokens``), all in one llama.cpp decode where ``tokens`` fit a batch.

    The prefix ``tokens`` share with what was evaluated before is reused (down to the first
    row asked for, which is evaluated afresh). Afterwards ``llm`` holds exactly ``tokens``, with
    the last one's logits current: a completion of that very prompt samples its first token at
    once (llama-cpp-python's exact-prompt cache hit), with no decode of its own."""
    import llama_cpp

    if not tokens or not rows or not all(0 <= r < len(tokens) for r in rows):
        raise ValueError(f"rows {rows} outside the {len(tokens)} tokens")
    llm._requires_eval = True  # until the decode below has finished: no sampling from stale logits
    keep_prefix(llm, tokens, most=min(rows))
    want, out, n_vocab = set(rows), {}, llm.n_vocab()
    for start in range(llm.n_tokens, len(tokens), llm.n_batch):
        chunk = tokens[start: start + llm.n_batch]
        inside = [r for r in want if start <= r < start + len(chunk)]
        llm._batch.set_batch(batch=chunk, n_past=start, logits_all=False)  # the last row has logits
        for r in inside:
            llm._batch.batch.logits[r - start] = True
        llm._ctx.decode(llm._batch)
        for r in inside:
            ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, r - start)
            out[r] = np.ctypeslib.as_array(ptr, shape=(n_vocab,)).astype(np.float64)
        llm.input_ids[start: start + len(chunk)] = chunk
        llm.n_tokens = start + len(chunk)
    llm._requires_eval = False  # what llm.eval() sets: the last row's logits are live
    return [out[r] for r in rows]


def free_sampler(llm: Any) -> None:
    """Free the sampler chain that llama-cpp-python made for ``llm``'s last generation.

    Each generation makes a new chain (``Llama.generate``), and llama.cpp's chain keeps a buffer
    of one entry per vocabulary token: 3 MiB for Gemma 3's 262,144. The chain's Python wrapper
    (``_internals.LlamaSampler``) frees it only in ``__del__``, and the wrapper sits in a
    reference cycle (its ``ExitStack`` holds a closure over itself), so only Python's cyclic
    collector frees it: in a server, whenever a full collection happens to run. In a soak of three
    sessions, 6 to 45 MiB of them were alive at any moment, and RSS kept each new high
    (docs/soak.md). Freed here, when the generation ends, the buffer is reused by the next one."""
    sampler = getattr(llm, "_sampler", None)
    if sampler is not None:
        llm._sampler = None
        sampler.close()


class LlamaCppLLM(LLMBackend):
    name = "llama-cpp"

    def __init__(self, options: LLMOptions, model_path: str):
        self.options, self.model_path = options, model_path
        self._llm = None
        self._slots: queue.Queue = queue.Queue()
        self._threads: dict[int, int] = {}  # id(instance) -> the CPU threads it now runs on
        self._all: list = []
        self.context_size = options.n_ctx
        self.device = "cpu"
        self._end_ids: dict[str, np.ndarray] = {}  # sentence-end tokens, by the template's end of a user turn
        self._sentence_ids: np.ndarray | None = None

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
                    n_threads=self.max_threads, n_threads_batch=self.max_threads,
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
                self.sentence_end_probability(llm, warm)  # builds the sentence-end token set once
            finally:
                self._slots.put(llm)

    @property
    def llama(self):  # noqa: ANN201 - llama_cpp.Llama, imported lazily
        """The loaded ``llama_cpp.Llama`` (for benchmarks that drive generation directly)."""
        return self._llm

    def count_tokens(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def stream(self, messages: list[ChatMessage], max_tokens: int, cancel: threading.Event,
               threads: int | None = None) -> Iterator[str]:
        llm = self._slots.get()  # a free model instance (blocks while all are generating)
        try:
            self.use_threads(llm, threads)
            yield from self._reply(llm, messages, max_tokens, cancel)
        finally:
            self._slots.put(llm)

    def stream_turn(self, messages: list[ChatMessage], max_tokens: int, cancel: threading.Event,
                    turn_end: Callable[[float | None], None], threads: int | None = None) -> Iterator[str]:
        llm = self._slots.get()  # the same instance reads the turn and replies: one prefill
        try:
            self.use_threads(llm, threads)
            p = None
            if not cancel.is_set():
                try:
                    p = self.sentence_end_probability(llm, messages)
                except Exception:  # noqa: BLE001 - no signal is better than no reply
                    log.exception("end-of-turn probability")
            turn_end(p)
            yield from self._reply(llm, messages, max_tokens, cancel)
        finally:
            self._slots.put(llm)

    @property
    def max_threads(self) -> int:
        """The configured CPU threads (``llm.n_threads``; 0: one per core, up to 8)."""
        return self.options.n_threads or default_cpu_threads()

    def use_threads(self, llm, threads: int | None) -> None:  # noqa: ANN001
        """Generate and prefill with the model instance ``llm`` on ``threads`` CPU threads (at most
        :attr:`max_threads`; None: that many) from now on: with a core taken by another program, a
        llama.cpp thread without a core of its own stalls the others at every operation (``engine.cpu``)."""
        n = self.max_threads if threads is None else max(1, min(self.max_threads, threads))
        if self._threads.get(id(llm), self.max_threads) != n:  # loaded with max_threads
            import llama_cpp

            llama_cpp.llama_set_n_threads(llm.ctx, n, n)
            self._threads[id(llm)] = n

    def threads_in_use(self) -> list[int]:
        """The CPU threads each model instance last generated with."""
        return [self._threads.get(id(llm), self.max_threads) for llm in self._all]

    def _reply(self, llm, messages: list[ChatMessage], max_tokens: int,  # noqa: ANN001
               cancel: threading.Event) -> Iterator[str]:
        for attempt in range(EMPTY_RETRIES + 1):
            said, held = False, ""  # held: leading text with nothing to say aloud ("¿", "..."), until a word
            for text in self._generate(llm, messages, max_tokens, cancel, hotter=attempt > 0,
                                       no_end=attempt == EMPTY_RETRIES):
                if not said:
                    held += text
                    if not speakable(held):
                        continue
                    text, held, said = held, "", True
                yield text
            if said or cancel.is_set():
                return
            if attempt < EMPTY_RETRIES:
                log.info("the reply had nothing to say aloud (%r): sampling again", held)
            # nothing to say aloud (a small model can stop at once, or write only "¿"): sample
            # again, a little hotter
        # even with its end banned a base model can write a stop string (the user's label) first:
        # the session then says llm.empty_reply (engine.session.reply), whatever the backend

    def prompt_text(self, llm, messages: list[ChatMessage]) -> str:  # noqa: ANN001
        """The prompt a reply to ``messages`` starts from (without the BOS token)."""
        if self.options.prompt_format == "dialogue":
            return dialogue_prompt(messages)
        return chat_prompt(llm, self.options.chat_format, messages)

    def sentence_end_probability(self, llm, messages: list[ChatMessage]) -> float | None:  # noqa: ANN001
        """P(a sentence end follows the user's last message, its final punctuation removed);
        None when there is no user text.

        Read in the same llama.cpp decode as the reply's prompt, which starts with the same
        tokens (unless the tokenizer joins across the cut): one more logit row, where a decode
        of its own would cost a step. ``llm`` is left holding the reply's prompt with its
        logits live, so the reply's first token is sampled at once."""
        found = last_user_stripped(messages)
        if found is None:
            return None
        i, text = found
        probe = list(messages)
        probe[i] = {"role": "user", "content": text + _MARK}
        rendered = self.prompt_text(llm, probe)
        cut = rendered.find(_MARK)
        if cut < 0:
            return None
        tokens = llm.tokenize(rendered[:cut].encode("utf-8"), add_bos=True, special=True)
        reply = llm.tokenize(self.prompt_text(llm, messages).encode("utf-8"), add_bos=True, special=True)
        together = len(reply) > len(tokens) and reply[: len(tokens)] == tokens
        logits = eval_logits(llm, reply if together else tokens, [len(tokens) - 1])[0]
        ids = self._sentence_end_ids(llm, rendered[cut + len(_MARK):])
        z = np.exp(logits - logits.max())
        return float(z[ids].sum() / z.sum())

    def _sentence_end_ids(self, llm, after_user: str) -> np.ndarray:  # noqa: ANN001
        """Tokens that start with a sentence end, plus the first token of what the prompt
        template writes after a user's message (``<end_of_turn>``); computed once."""
        if self._sentence_ids is None:
            ids = []
            for t in range(llm.n_vocab()):
                piece = llm.detokenize([t], special=False).decode("utf-8", errors="ignore")
                if piece.startswith(SENTENCE_END):
                    ids.append(t)
            self._sentence_ids = np.asarray(ids, np.int64)
        key = after_user[:32]
        if key not in self._end_ids:
            first = llm.tokenize(after_user.encode("utf-8"), add_bos=False, special=True)[:1]
            self._end_ids[key] = np.unique(np.concatenate([self._sentence_ids, np.asarray(first, np.int64)]))
        return self._end_ids[key]

    def _end_tokens(self, llm) -> list[int]:  # noqa: ANN001
        """The tokens a reply can end on at once: end of sequence, end of turn, line breaks."""
        ids = {llm.token_eos()}
        for text, special in ((b"\n", False), (b"\n\n", False), (b"<end_of_turn>", True), (b"<|im_end|>", True),
                              (b"<|eot_id|>", True)):
            toks = llm.tokenize(text, add_bos=False, special=special)
            if len(toks) == 1:
                ids.add(toks[0])
        return sorted(ids)

    def _generate(self, llm, messages: list[ChatMessage], max_tokens: int,  # noqa: ANN001
                  cancel: threading.Event, hotter: bool = False, no_end: bool = False) -> Iterator[str]:
        o = self.options
        temperature = max(o.temperature, 0.5) + 0.3 if hotter else o.temperature
        common = dict(max_tokens=max_tokens, temperature=temperature, top_p=o.top_p,
                      repeat_penalty=o.repeat_penalty, stream=True)
        if no_end:  # the last try: it may not end before it writes (then only at max_tokens or a stop)
            common["logit_bias"] = {t: NO_END_BIAS for t in self._end_tokens(llm)}
        if o.prompt_format == "dialogue":
            chunks = llm(dialogue_prompt(messages), stop=DIALOGUE_STOPS, **common)
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
            free_sampler(llm)  # now, not when the cyclic collector next runs

    def close(self) -> None:
        for llm in self._all:
            llm.close()
        self._all.clear()
        self._llm = None

    def describe(self) -> dict:
        return {"backend": self.name, "model": self.options.model, "path": self.model_path,
                "device": self.device, "n_ctx": self.context_size, "prompt_format": self.options.prompt_format,
                "parallel": len(self._all), "n_threads": self.max_threads}
