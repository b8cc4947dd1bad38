"""Row formats: one raw row (a dict) -> RankedExamples, or the reason it is skipped.

Every converter returns a list whose items are either a ``RankedExample`` or a skip reason
(a short string). Most rows give exactly one item; an OASST tree gives one item per ranked
list in it (and one "unranked reply" / "deleted reply" note per reply left out of a list).
A converter raises ``Skip(reason)`` for a row that gives nothing at all.

Labels are checked in the dtype the trainers use them in (float32, see ``align/data/collate.py``): a label
that is finite in float64 but not in float32, or a list whose score span overflows float32 (LiPO's min-max
labels divide by it), is skipped, as is a list whose labels all round to one float32 value.
"""

from __future__ import annotations

import math
import numbers
import re
import struct
from collections.abc import Callable, Mapping
from typing import Any

from align.data.example import LabelKind, Message, Prompt, RankedExample
from align.errors import ConfigError

HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"
_TURN = re.compile(r"(\n\nHuman:|\n\nAssistant:)")
ROLES = ("system", "user", "assistant")
# Notes about replies left out of an OASST list: counted in the report, not errors (strict mode ignores them).
NOTES = frozenset({"unranked reply", "deleted reply"})
UNRECOGNISED = "unrecognised row format"
# What each format reads, for messages about rows that fit none of them.
ACCEPTED = (
    "accepted row formats: HH-RLHF {chosen, rejected} (whole dialogues); "
    "TRL {prompt, chosen, rejected} (strings or chat messages; no prompt for implicit-prompt conversations); "
    "ranked {prompt, responses, ranks or scores}; OASST message trees {message_tree_id, prompt: {text, role, replies}}"
    ". Rename other fields with data.columns, e.g. {question: prompt, response_j: chosen, response_k: rejected}"
)
# Field names the formats read: the allowed targets of a column mapping.
FIELDS = ("prompt", "chosen", "rejected", "responses", "ranks", "scores", "subset", "message_tree_id")
FLOAT32_MAX = 3.4028234663852886e38
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


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
    """A real number (not a bool) that is finite as a Python float."""
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        return False
    try:
        return math.isfinite(float(x))
    except (OverflowError, ValueError, TypeError):  # an int too large for a float, an odd Real subclass
        return False


def _float32(x: float) -> float:
    """``x`` rounded to float32 (``x`` within the float32 range)."""
    return struct.unpack("f", struct.pack("f", x))[0]


def _valid_text(value: Any) -> bool:
    """False for a string (or message list) holding a lone surrogate: valid JSON (``"\\udfff"``) that no
    tokenizer or UTF-8 writer accepts."""
    if isinstance(value, str):
        return value.isascii() or not _LONE_SURROGATE.search(value)
    if isinstance(value, list):
        return all(_valid_text(m["content"]) for m in value)
    return True


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
    if not (_valid_text(prompt) and all(_valid_text(t) for t in texts)
            and all(_valid_text(v) for v in (meta or {}).values() if isinstance(v, str))):
        raise Skip("invalid text (lone surrogate)")
    scores = [0.0 - float(x) if kind == "rank" else float(x) for x in labels]  # 0.0 - 0 is 0.0, not -0.0
    # Trainers hold labels in float32: each label, and the span min-max labels divide by, must be finite there.
    if any(abs(s) > FLOAT32_MAX for s in scores):
        raise Skip("label out of range")
    as32 = [_float32(s) for s in scores]
    if max(as32) - min(as32) > FLOAT32_MAX:
        raise Skip("label out of range")
    if len(set(as32)) == 1:
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
    # Non-numbers (and ints beyond float range) sort last; make_example then skips the list as "non-numeric label".
    rank = reply["rank"]
    return float(rank) if _is_number(rank) else math.inf


FORMATS: dict[str, Callable[[dict[str, Any], int], list[RankedExample | str]]] = {
    "hh": from_hh,
    "trl": from_trl,
    "ranked": from_ranked,
    "oasst": from_oasst,
}


def detect_format(row: dict[str, Any]) -> str | None:
    """The format of a row from its keys (for prompt-less text pairs: HH when they hold "Assistant:" turns), or
    None if it fits none."""
    if "message_tree_id" in row or (isinstance(row.get("prompt"), dict) and "replies" in row["prompt"]):
        return "oasst"
    if "responses" in row:
        return "ranked"
    if "chosen" in row or "rejected" in row:
        if "prompt" in row or isinstance(row.get("chosen"), list) or isinstance(row.get("rejected"), list):
            return "trl"
        # HH dialogues carry "Assistant:" turns; other prompt-less text pairs are TRL rows missing their prompt.
        if any(isinstance(v, str) and "Assistant:" in v for v in (row.get("chosen"), row.get("rejected"))):
            return "hh"
        return "trl"
    return None


def check_columns(columns: Mapping[str, str] | None) -> dict[str, str]:
    """A validated column mapping ``{field in the data: field of a format}``; ``ValueError`` names the bad entry.

    Targets must be names the formats read (``FIELDS``), each used once; sources are the data's own names.
    """
    if columns is None:
        return {}
    if not isinstance(columns, Mapping):
        raise ConfigError(f"columns must be a mapping of field names, got {type(columns).__name__}")
    out: dict[str, str] = {}
    for src, dst in columns.items():
        if not isinstance(src, str) or not src or not isinstance(dst, str) or not _valid_text(src):
            raise ConfigError(f"columns: {src!r}: {dst!r} must map a field name to a field name")
        if dst not in FIELDS:
            raise ConfigError(f"columns: {src!r} maps to unknown field {dst!r}; expected one of {', '.join(FIELDS)}")
        if dst in out.values():
            raise ConfigError(f"columns: two fields map to {dst!r}")
        out[src] = dst
    return out


def rename_columns(row: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    """``row`` with each mapped field renamed (a mapped field replaces a field already of the target name).

    Raises ``Skip("missing field 'SRC'")`` when a mapped field is absent (or null).
    """
    for src in columns:
        if row.get(src) is None:
            raise Skip(f"missing field {src!r}")
    out = {k: v for k, v in row.items() if k not in columns}
    out.update((dst, row[src]) for src, dst in columns.items())
    return out


def _user_names(reason: str, columns: dict[str, str]) -> str:
    """A skip reason that names the user's fields (``'response_j'``), not the format's (``'chosen'``)."""
    for src, dst in columns.items():
        reason = reason.replace(repr(dst), repr(src))
    return reason


def convert_row(
    row: Any, fmt: str, n: int, columns: dict[str, str] | None = None
) -> tuple[str | None, list[RankedExample | str]]:
    """The format used and the examples / skip reasons of one raw row.

    ``fmt`` is ``"auto"`` or a key of ``FORMATS``; ``columns`` (from :func:`check_columns`) renames fields
    before the format is detected. The format is None when the row fits none.
    """
    if not isinstance(row, dict):
        return None, ["not an object"]
    row = {k: v for k, v in row.items() if v is not None}  # parquet / hub rows fill absent columns with None
    try:
        if columns:
            row = rename_columns(row, columns)
        name = detect_format(row) if fmt == "auto" else fmt
        if name is None:
            return None, [UNRECOGNISED]
        items = FORMATS[name](row, n)
    except Skip as e:
        return None, [_user_names(e.reason, columns or {})]
    return name, [it if isinstance(it, RankedExample) else _user_names(it, columns or {}) for it in items]


def convert(row: Any, fmt: str, n: int) -> list[RankedExample | str]:
    """Examples and skip reasons from one raw row; ``fmt`` is ``"auto"`` or a key of ``FORMATS``."""
    return convert_row(row, fmt, n)[1]
