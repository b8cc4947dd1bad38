"""Tokenize ranked examples once: chat template where the tokenizer has one, explicit counted truncation."""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field

from jinja2 import TemplateError
from transformers import PreTrainedTokenizerBase

from align.data.example import Prompt, RankedExample, deprecated_scores
from align.errors import ConfigError

log = logging.getLogger("align.data")


@dataclass(frozen=True)
class TokenizedList:
    """One prompt and its K responses as token ids; ``labels`` are the example's human labels (higher is better;
    ``scores`` is a deprecated read-only alias)."""

    prompt_ids: tuple[int, ...]
    response_ids: tuple[tuple[int, ...], ...]
    labels: tuple[float, ...]
    row: int = -1
    subset: str | None = None  # a RewardBench-style ``subset`` of the source row, for per-subset reports

    @property
    def scores(self) -> tuple[float, ...]:
        """Deprecated name of :attr:`labels` (read-only)."""
        return deprecated_scores(self)

    @property
    def num_tokens(self) -> int:
        """Tokens fed to the model for the whole list (the prompt is repeated for each response)."""
        return sum(len(self.prompt_ids) + len(r) for r in self.response_ids)


@dataclass
class TruncationReport:
    """Counts of what tokenization cut or dropped, reported in ``summary.json``."""

    prompts_truncated: int = 0
    responses_truncated: int = 0
    dropped: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict:
        return {
            "prompts_truncated": self.prompts_truncated,
            "responses_truncated": self.responses_truncated,
            "dropped": dict(self.dropped),
        }


def _plain_dialogue(messages: list[dict[str, str]]) -> str:
    # HH-RLHF's own rendering, used when the tokenizer has no chat template.
    names = {"user": "Human", "assistant": "Assistant", "system": "System"}
    turns = "".join(f"\n\n{names.get(m['role'], m['role'])}: {m['content']}" for m in messages)
    return turns + "\n\nAssistant:"


def render(tokenizer: PreTrainedTokenizerBase, prompt: Prompt, responses: tuple[str, ...]) -> tuple[str, list[str]]:
    """Text of the prompt and of each response as the model will see them.

    Chat prompts (message lists) go through the tokenizer's chat template: the response text is what the
    template adds after the generation prompt (so it carries the template's end-of-turn token). Plain string
    prompts are used as they are, as TRL does for its standard format; responses then end with eos.
    """
    eos = tokenizer.eos_token or ""

    def with_eos(text: str) -> str:  # as TRL: a response that already ends with eos gets no second one
        return text if eos and text.endswith(eos) else text + eos

    if isinstance(prompt, list):
        if getattr(tokenizer, "chat_template", None):
            head = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
            texts = []
            for r in responses:
                full = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": r}], tokenize=False)
                # Templates that rewrite earlier turns (e.g. strip reasoning) break the prefix; fall back to eos.
                texts.append(full[len(head) :] if full.startswith(head) else with_eos(r))
            return head, texts
        return _plain_dialogue(prompt), [with_eos(" " + r) for r in responses]
    return prompt, [with_eos(r) for r in responses]


def tokenize_examples(
    examples: list[RankedExample],
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_prompt_length: int = 512,
    max_response_length: int = 512,
    truncation: str = "truncate",
) -> tuple[list[TokenizedList], TruncationReport]:
    """Tokenize each example once.

    Prompts longer than ``max_prompt_length`` keep their last tokens (the turn being answered); responses
    longer than ``max_response_length`` keep their first. ``truncation="drop"`` drops such examples instead.
    Dropped and counted in ``report.dropped`` as well: a list whose truncated responses become identical
    ("identical after truncation": it would carry no preference), a prompt the tokenizer's chat template
    rejects ("chat template error", e.g. a template that allows no system turn), and a list with a prompt or
    response of no tokens at all ("empty after tokenization").
    """
    if truncation not in ("truncate", "drop"):
        raise ConfigError(f"truncation must be 'truncate' or 'drop', got {truncation!r}")
    bos = tokenizer.bos_token_id
    report = TruncationReport()
    out: list[TokenizedList] = []
    for ex in examples:
        try:
            head, texts = render(tokenizer, ex.prompt, ex.responses)
        except TemplateError as e:
            if not report.dropped["chat template error"]:
                log.warning("row %d: the chat template rejects this prompt (%s); such lists are dropped", ex.row, e)
            report.dropped["chat template error"] += 1
            continue
        # verbose=False: no "longer than the maximum" warning, the truncation below is explicit and counted
        p = tokenizer(head, add_special_tokens=False, verbose=False)["input_ids"]
        if bos is not None and (not p or p[0] != bos):
            p = [bos] + p
        rs = [tokenizer(t, add_special_tokens=False, verbose=False)["input_ids"] for t in texts]
        if not p or not all(rs):
            report.dropped["empty after tokenization"] += 1
            continue
        long_p = len(p) > max_prompt_length
        long_r = sum(len(r) > max_response_length for r in rs)
        if truncation == "drop" and (long_p or long_r):
            report.dropped["over max length"] += 1
            continue
        report.prompts_truncated += long_p
        report.responses_truncated += long_r
        if long_p:  # keep the last tokens, and the BOS the model expects in front
            p = ([bos] + p[-(max_prompt_length - 1) :]) if bos is not None and p[0] == bos else p[-max_prompt_length:]
        rs = [tuple(r[:max_response_length]) for r in rs]
        if len(set(rs)) < len(rs):
            report.dropped["identical after truncation"] += 1
            continue
        subset = ex.meta.get("subset")
        out.append(TokenizedList(tuple(p), tuple(rs), tuple(float(s) for s in ex.labels), ex.row,
                                 None if subset is None else str(subset)))
    return out, report


def data_fingerprint(lists: list[TokenizedList]) -> str:
    """sha256 over every token id and label, in order: changes whenever what the model sees changes."""
    h = hashlib.sha256()
    for t in lists:
        h.update(repr((t.prompt_ids, t.response_ids, t.labels)).encode())
    return h.hexdigest()
