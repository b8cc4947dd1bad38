"""The embedded default: a tiny Llama-style causal LM and a byte-level BPE tokenizer, both built offline.

The tokenizer is trained with `tokenizers` on the preference data of a named folder (``embedded:tiny?corpus=DIR``,
else ``$ALIGN_DATA_DIR``; no hub download; see :func:`corpus_files`) and carries a ChatML template, so the same code
path as for a real chat model is exercised. The model is a LlamaConfig of a few million parameters with random
weights from a fixed seed. Both are saved to a directory named by the shape and the corpus, and reused.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from align.errors import ModelError

log = logging.getLogger("align.models")

CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


@dataclass(frozen=True)
class TinyShape:
    """Shape of the embedded model. ~3.4 M parameters with the defaults."""

    vocab_size: int = 4096
    hidden_size: int = 256
    intermediate_size: int = 688
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 1024
    seed: int = 0

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


CORPUS_FILES = ("hh_rlhf_harmless_base.jsonl.gz", "oasst_en_trees.jsonl")


def corpus_files(folder: str | Path | None = None) -> list[Path]:
    """The corpus the embedded tokenizer is trained on: the preference files (:data:`CORPUS_FILES`) in ``folder``
    (``embedded:tiny?corpus=FOLDER``), else in the folder ``$ALIGN_DATA_DIR`` names. None when neither is given: the
    tokenizer is then byte-level BPE with only the merges of a built-in line (every input still tokenizes, in more
    tokens). A named folder that holds none of the files is an error, not a silent switch to no corpus."""
    named = folder is not None
    folder = folder if named else os.environ.get("ALIGN_DATA_DIR")
    if not folder:
        return []
    root = Path(folder).expanduser()
    files = [root / f for f in CORPUS_FILES if (root / f).exists()]
    if named and not files:
        raise ModelError(f"embedded:tiny?corpus={folder}: no {' or '.join(CORPUS_FILES)} in {root.resolve()}")
    return files


@functools.lru_cache(maxsize=8)
def _file_digest(path: Path, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def corpus_digest(files: list[Path]) -> str:
    """12 hex digits naming the tokenizer's corpus by content (``none`` for no corpus): part of the embedded model's
    directory name, so a tokenizer trained on other files (or on none) is never taken for this one."""
    if not files:
        return "none"
    h = hashlib.sha256()
    for p in files:
        st = p.stat()
        h.update(p.name.encode() + b"\0" + _file_digest(p.resolve(), st.st_size, st.st_mtime_ns).encode())
    return h.hexdigest()[:12]


def _texts(files: list[Path]) -> Iterator[str]:
    def walk(node: dict) -> Iterator[str]:
        yield str(node.get("text", ""))
        for child in node.get("replies") or []:
            yield from walk(child)

    for path in files:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if "prompt" in row and isinstance(row["prompt"], dict):
                    yield from walk(row["prompt"])
                else:
                    yield from (v for v in row.values() if isinstance(v, str))


def build_tokenizer(files: list[Path], vocab_size: int = 4096) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``files`` and wrap it as a chat tokenizer (ChatML, eos ``<|im_end|>``)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = list(_texts(files)) or ["hello world"]  # byte alphabet alone still covers every input
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHATML_TEMPLATE,
        model_max_length=1024,
    )


def build_model(tokenizer: PreTrainedTokenizerFast, spec: TinyShape = TinyShape()) -> LlamaForCausalLM:
    """A randomly initialised Llama-style model sized by ``spec`` with tied embeddings."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(spec.seed)
    return LlamaForCausalLM(config)


def ensure_tiny(root: Path, spec: TinyShape = TinyShape(), files: list[Path] | None = None) -> Path:
    """Build the embedded model and tokenizer under ``root`` once; later calls return the saved directory (one per
    spec and tokenizer corpus ``files``, default :func:`corpus_files`; see :func:`corpus_digest`)."""
    files = corpus_files() if files is None else files
    out = root / f"tiny-{spec.digest()}-{corpus_digest(files)}"
    if (out / "config.json").exists() and (out / "tokenizer.json").exists():
        return out
    log.info("building the embedded tiny model in %s (tokenizer trained on %s)", out,
             ", ".join(str(f) for f in files) or "no corpus")
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tokenizer = build_tokenizer(files, spec.vocab_size)
    model = build_model(tokenizer, spec)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if out.exists():  # another process won the race; both copies are equal, keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.replace(out)
    return out
