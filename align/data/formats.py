"""Row formats: one raw row (a dict) -> RankedExamples, or the reason it is skipped.

Every converter returns a list whose items are either a ``RankedExample`` or a skip reason
(a short string). Most rows give exactly one item; an OASST tree gives one item per ranked
list in it (and one "unranked reply" / "deleted reply" note per reply left out of a list).
A converter raises ``Skip(reason)`` for a row that gives nothing at all.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from align.data.example import LabelKind, Message, Prompt, RankedExample

HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"
_TURN = re.compile(r"(\n\nHuman:|\n\nAssistant:)")
ROLES = ("system", "user", "assistant")
# Notes about replies left out of an OASST list: counted in the report, not errors (strict mode ignores them).
NOTES = frozenset({"unranked reply", "deleted reply"})


class Skip(Exception):
    """A row (or an OASST list) that is not an example; ``reason`` is the skip reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _need(row: dict[str, Any], key: str) -> Any:
    if key not in row:
        raise Skip(f"missing field {key!r}")
    return row[key]


# ---------------------------------------------------------------------------------------------
# shared checks


def _messages(value: Any, name: str) -> list[Message]:
    """Validate a list of chat messages; keep only ``role`` and ``content``."""
    if not isinstance(value, list):
        raise Skip(f"wrong type for {name!r}")
    out = []
    for m in value:
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or m.get("role") not in ROLES:
            raise Skip(f"wrong type for {name!r}")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _check_prompt(prompt: Any) -> Prompt:
    if isinstance(prompt, str):
        if not prompt.strip():
            raise Skip("empty prompt")
        return prompt
    messages = _messages(prompt, "prompt")
    if not any(m["content"].strip() for m in messages):
        raise Skip("empty prompt")
    if messages[-1]["role"] != "user":
        raise Skip("malformed dialogue")
    return messages


def _is_number(x: Any) -> bool:
    """A finite int or float (not a bool)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:  # an int too large for a float
        return False


def _response_texts(prompt: Any, values: list[Any], names: list[str]) -> tuple[Any, list[str]]:
    """Response texts from strings, ``{"content"}`` dicts or message lists.

    A message list's last message is the response; the messages before it (if any) must be
    the same in every response and form the prompt (TRL's implicit prompt): they replace a
    string prompt (UltraFeedback-binarized rows repeat the prompt text that way) and extend a
    message prompt unless they already start with it.
    """
    texts, prefixes = [], []
    for value, name in zip(values, names):
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, dict):
            if not isinstance(value.get("content"), str) or value.get("role", "assistant") != "assistant":
                raise Skip(f"wrong type for {name!r}")
            texts.append(value["content"])
        elif isinstance(value, list):
            messages = _messages(value, name)
            if not messages:
                raise Skip("empty response")
            if messages[-1]["role"] != "assistant":
                raise Skip("malformed dialogue")
            texts.append(messages[-1]["content"])
            prefixes.append(messages[:-1])
        else:
            raise Skip(f"wrong type for {name!r}")
    if prefixes and any(p for p in prefixes):
        if len(prefixes) != len(values) or any(p != prefixes[0] for p in prefixes):
            raise Skip("prompt mismatch")
        prefix = prefixes[0]
        if prompt is None or isinstance(prompt, str):
            prompt = prefix  # the messages carry the whole prompt (as TRL's maybe_extract_prompt)
        else:
            prompt = _messages(prompt, "prompt")
            prompt = prefix if prefix[: len(prompt)] == prompt else prompt + prefix  # no turn twice
    return prompt, texts


def make_example(
    prompt: Any, responses: list[str], labels: list[Any], kind: LabelKind, row: int, meta: dict[str, Any] | None = None
) -> RankedExample:
    """Check a candidate example and build it; ``labels`` are ranks for ``"rank"``, else scores."""
    if prompt is None:
        raise Skip("missing field 'prompt'")
    prompt = _check_prompt(prompt)
    if len(labels) != len(responses):
        raise Skip("labels do not match responses")
    if len(responses) < 2:
        raise Skip("fewer than 2 responses")
    if not all(_is_number(x) for x in labels):
        raise Skip("non-numeric label")
    texts = [r.strip() for r in responses]
    if not all(texts):
        raise Skip("empty response")
    if len(set(texts)) < len(texts):
        raise Skip("identical responses")
    scores = [0.0 - x if kind == "rank" else float(x) for x in labels]  # 0.0 - 0 is 0.0, not -0.0
    if len(set(scores)) == 1:
        raise Skip("all responses tied")
    return RankedExample(prompt, tuple(texts), tuple(scores), kind, row, meta or {})


# ---------------------------------------------------------------------------------------------
# formats


def hh_prompt_messages(prompt: str) -> list[Message]:
    """Chat messages of an HH-RLHF prompt (a dialogue that ends with ``"\\n\\nAssistant:"``).

    Text before the first marker belongs to the first user turn; consecutive turns of one
    role (a few HH rows have two Assistant turns in a row) are merged with a blank line.
    """
    body = prompt[: -len(ASSISTANT)]
    if body.startswith("Human:"):  # some copies drop the leading blank line
        body = "\n\n" + body
    parts = _TURN.split(body)
    messages: list[Message] = []
    if parts[0].strip():
        messages.append({"role": "user", "content": parts[0].strip()})
    for marker, content in zip(parts[1::2], parts[2::2]):
        role = "user" if marker == HUMAN else "assistant"
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] = f"{messages[-1]['content']}\n\n{content.strip()}".strip()
        else:
            messages.append({"role": role, "content": content.strip()})
    if not messages or messages[-1]["role"] != "user":
        raise Skip("malformed dialogue")
    return messages


def _split_dialogue(text: str) -> tuple[str, str]:
    i = text.rfind(ASSISTANT)
    if i < 0:
        raise Skip("malformed dialogue")
    return text[: i + len(ASSISTANT)], text[i + len(ASSISTANT) :]


def from_hh(row: dict[str, Any], n: int) -> list[RankedExample | str]:
    """HH-RLHF: ``chosen`` and ``rejected`` are whole dialogues; the prompt ends at the last Assistant marker."""
    chosen, rejected = _need(row, "chosen"), _need(row, "rejected")
    for name, value in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(value, str):
            raise Skip(f"wrong type for {name!r}")
    (prompt, good), (prompt2, bad) = _split_dialogue(chosen), _split_dialogue(rejected)
    if prompt != prompt2:
        raise Skip("prompt mismatch")
    messages = hh_prompt_messages(prompt)
    return [make_example(messages, [good, bad], [1.0, 0.0], "pair", n)]


def from_trl(row: dict[str, Any], n: int) -> list[RankedExample | str]:
    """TRL ``prompt``/``chosen``/``rejected``: standard (strings), conversational (messages), or
    implicit-prompt conversational (no ``prompt``; the shared message prefix is the prompt).
    A ``subset`` field (RewardBench) goes to ``meta``."""
    chosen, rejected = _need(row, "chosen"), _need(row, "rejected")
    if "prompt" not in row and not isinstance(chosen, list):
        raise Skip("missing field 'prompt'")
    if isinstance(chosen, str) != isinstance(rejected, str):
        raise Skip(f"wrong type for {'rejected' if isinstance(chosen, str) else 'chosen'!r}")
    prompt, texts = _response_texts(row.get("prompt"), [chosen, rejected], ["chosen", "rejected"])
    meta = {"subset": row["subset"]} if "subset" in row else {}
    return [make_example(prompt, texts, [1.0, 0.0], "pair", n, meta)]


def from_ranked(row: dict[str, Any], n: int) -> list[RankedExample | str]:
    """Ranked or scored lists: ``prompt``, ``responses`` and ``ranks`` (0 = best) or ``scores``
    (higher is better; used when both are present, as they carry margins)."""
    prompt, responses = _need(row, "prompt"), _need(row, "responses")
    if "scores" in row:
        labels, kind = row["scores"], "score"
    elif "ranks" in row:
        labels, kind = row["ranks"], "rank"
    else:
        raise Skip("missing field 'ranks' or 'scores'")
    if not isinstance(responses, list):
        raise Skip("wrong type for 'responses'")
    if not isinstance(labels, list):
        raise Skip(f"wrong type for {'scores' if kind == 'score' else 'ranks'!r}")
    prompt, texts = _response_texts(prompt, responses, ["responses"] * len(responses))
    return [make_example(prompt, texts, labels, kind, n)]


def from_oasst(row: dict[str, Any], n: int) -> list[RankedExample | str]:
    """An OASST message tree: every prompter message with >= 2 ranked, non-deleted assistant
    replies is one ranked list (prompt = the path from the root, responses ordered by rank).

    Replies without a rank, or deleted, are left out and noted ("unranked reply" /
    "deleted reply": these count replies, not rows) for prompter messages that form a list.
    Deleted messages are not descended into. A malformed message skips the whole tree.
    """
    root = _need(row, "prompt")
    if not isinstance(root, dict):
        raise Skip("wrong type for 'prompt'")
    out: list[RankedExample | str] = []
    meta_id = row.get("message_tree_id")
    stack: list[tuple[dict[str, Any], list[Message]]] = [(root, [])]
    while stack:
        node, path = stack.pop()
        text, role, replies = node.get("text"), node.get("role"), node.get("replies") or []
        if not isinstance(text, str) or role not in ("prompter", "assistant") or not isinstance(replies, list):
            raise Skip("malformed message")
        if not all(isinstance(r, dict) for r in replies):
            raise Skip("malformed message")
        if node.get("deleted"):
            continue
        path = path + [{"role": "user" if role == "prompter" else "assistant", "content": text.strip()}]
        stack.extend((r, path) for r in reversed(replies))
        if role != "prompter":
            continue
        answers = [r for r in replies if r.get("role") == "assistant"]
        ranked = sorted((r for r in answers if r.get("rank") is not None and not r.get("deleted")), key=_rank_key)
        if len(ranked) < 2:
            continue  # not a list (many prompter messages have 0 or 1 ranked replies): no skip
        out += ["unranked reply" for r in answers if r.get("rank") is None]
        out += ["deleted reply" for r in answers if r.get("rank") is not None and r.get("deleted")]
        meta = {"message_tree_id": meta_id, "message_id": node.get("message_id")}
        try:
            responses = [r["text"] if isinstance(r.get("text"), str) else None for r in ranked]
            if None in responses:
                raise Skip("malformed message")
            out.append(make_example(path, responses, [r["rank"] for r in ranked], "rank", n, meta))
        except Skip as e:
            out.append(e.reason)
    return out


def _rank_key(reply: dict[str, Any]) -> float:
    rank = reply["rank"]
    return rank if isinstance(rank, (int, float)) and not isinstance(rank, bool) and not math.isnan(rank) else math.inf


FORMATS: dict[str, Callable[[dict[str, Any], int], list[RankedExample | str]]] = {
    "hh": from_hh,
    "trl": from_trl,
    "ranked": from_ranked,
    "oasst": from_oasst,
}


def detect_format(row: dict[str, Any]) -> str | None:
    """The format of a row from its keys, or None if it fits none."""
    if "message_tree_id" in row or (isinstance(row.get("prompt"), dict) and "replies" in row["prompt"]):
        return "oasst"
    if "responses" in row:
        return "ranked"
    if "chosen" in row or "rejected" in row:
        if "prompt" in row or isinstance(row.get("chosen"), list) or isinstance(row.get("rejected"), list):
            return "trl"
        return "hh"
    return None


def convert(row: Any, fmt: str, n: int) -> list[RankedExample | str]:
    """Examples and skip reasons from one raw row; ``fmt`` is ``"auto"`` or a key of ``FORMATS``."""
    if not isinstance(row, dict):
        return ["not an object"]
    row = {k: v for k, v in row.items() if v is not None}  # parquet / hub rows fill absent columns with None
    name = detect_format(row) if fmt == "auto" else fmt
    if name is None:
        return ["unrecognised row format"]
    try:
        return FORMATS[name](row, n)
    except Skip as e:
        return [e.reason]
