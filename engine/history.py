"""Per-session chat history, trimmed oldest-first to fit the context.

Bounded twice: the history keeps at most ``MAX_MESSAGES`` messages (the oldest go first), and a
run of same-role messages merged into one prompt message keeps only its newest
``MAX_MERGED_CHARS`` characters (a user who talks turn after turn with no reply in between
does not grow one message without end)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from engine.stages.base import ChatMessage

MAX_MESSAGES = 256
MAX_MERGED_CHARS = 4000


@dataclass
class ChatHistory:
    messages: list[ChatMessage] = field(default_factory=list)
    dropped: int = 0  # messages trimmed off the front so far (keeps marks valid)

    def add(self, role: str, content: str) -> None:
        content = content.strip()
        if content:
            self.messages.append({"role": role, "content": content})
            over = len(self.messages) - MAX_MESSAGES
            if over > 0:
                del self.messages[:over]
                self.dropped += over

    def mark(self) -> int:
        """A position to go back to with :meth:`drop_since`."""
        return self.dropped + len(self.messages)

    def drop_since(self, mark: int) -> None:
        """Forget every message added after ``mark``."""
        del self.messages[max(0, mark - self.dropped):]

    def replace_last_assistant(self, content: str) -> None:
        """Keep only what the user heard of the last reply (drop it if nothing was heard)."""
        for i in range(len(self.messages) - 1, -1, -1):
            if self.messages[i]["role"] == "assistant":
                if content.strip():
                    self.messages[i] = {"role": "assistant", "content": content.strip()}
                else:
                    del self.messages[i]
                return

    def clear(self) -> None:
        self.dropped += len(self.messages)
        self.messages.clear()

    def build(
        self, system_prompt: str, count_tokens: Callable[[str], int], max_prompt_tokens: int, max_turns: int
    ) -> list[ChatMessage]:
        """System prompt + the newest history that fits; consecutive same-role messages merged.

        Whole exchanges are dropped oldest-first: beyond ``max_turns`` user messages, and while
        the prompt would exceed ``max_prompt_tokens``. The newest user message always stays.
        """
        merged: list[ChatMessage] = []
        for m in self.messages:
            if merged and merged[-1]["role"] == m["role"]:
                joined = (merged[-1]["content"] + " " + m["content"])[-MAX_MERGED_CHARS:]
                merged[-1] = {"role": m["role"], "content": joined}
            else:
                merged.append(dict(m))  # type: ignore[arg-type]
        while merged and merged[0]["role"] != "user":
            merged.pop(0)

        def n_user(ms: list[ChatMessage]) -> int:
            return sum(1 for m in ms if m["role"] == "user")

        def cost(ms: list[ChatMessage]) -> int:
            return count_tokens(system_prompt) + sum(count_tokens(m["content"]) + 4 for m in ms)

        while n_user(merged) > max(1, max_turns) or (n_user(merged) > 1 and cost(merged) > max_prompt_tokens):
            merged.pop(0)
            while merged and merged[0]["role"] != "user":
                merged.pop(0)
        system: list[ChatMessage] = [{"role": "system", "content": system_prompt}] if system_prompt else []
        return system + merged
