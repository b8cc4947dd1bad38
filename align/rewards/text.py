"""Completion text as reward functions receive it: a string, or TRL's conversational list of messages."""

from __future__ import annotations

END_MARKERS = ("<|im_end|>", "<|endoftext|>")  # end-of-turn / padding tokens left in a decoded completion


def completion_text(completion: str | list[dict[str, str]]) -> str:
    """The text of a completion cut at its first end marker: a string, or the last message's content of a
    conversational completion (``[{"role": "assistant", "content": ...}]``)."""
    if isinstance(completion, list):
        completion = str(completion[-1].get("content", "")) if completion else ""
    for marker in END_MARKERS:
        completion = completion.split(marker, 1)[0]
    return completion
