"""Fingerprints of what changes reference log-probs: the weights (by value), the model config and the tokenizer.

Under DeepSpeed ZeRO-3 the parameters are partitioned across ranks; each one is gathered in turn (every rank
takes part), so the fingerprint is of the full weights, never of the empty placeholders a rank holds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections import Counter
from collections.abc import Iterator

import torch
from transformers import PreTrainedTokenizerBase

# Tensors up to this size are hashed whole; larger ones by a strided sample of this many elements plus exact
# integer checksums of every element. Any training step moves every weight, so this is exact in practice and
# keeps a 7B fingerprint to seconds instead of a minute of hashing.
_FULL_HASH_ELEMENTS = 1 << 22


def weights_fingerprint(model: torch.nn.Module, adapter: str | None = None) -> str:
    """sha256 over every persistent parameter and buffer's name, shape, dtype and values.

    Args:
        model: a plain model, or a PEFT model.
        adapter: for a PEFT model, the adapter that is part of the reference (a frozen copy of the adapter a run
            started from), or None when the reference is the base model with adapters disabled. Every other
            adapter's weights, and PEFT's trainable ``modules_to_save`` copies, are left out.
    """
    h = hashlib.sha256()
    tensors = sorted(_reference_tensors(model, adapter), key=lambda nt: nt[0])
    # Tied weights (one parameter under two names) are read once; their hashed bytes are kept only until the last
    # name that uses them. Keyed by the parameter object, which the model keeps alive, not by its storage address:
    # a gathered ZeRO-3 weight's buffer is freed after use and the next one may get the same address.
    uses = Counter(id(t) for _, t in tensors)
    kept: dict[int, list[bytes]] = {}
    for name, t in tensors:
        with _gathered(t):
            data = t.detach()
            h.update(f"{name}|{tuple(data.shape)}|{data.dtype}".encode())
            parts = kept.get(id(t))
            if parts is None:
                parts = []
                flat = data.reshape(-1)
                if flat.numel() > _FULL_HASH_ELEMENTS:
                    step = flat.numel() // _FULL_HASH_ELEMENTS
                    parts.append("|".join(map(str, _exact_checksums(flat))).encode())
                    flat = flat[::step]
                parts.append(flat.cpu().contiguous().view(torch.uint8).numpy().tobytes())
            for part in parts:
                h.update(part)
            uses[id(t)] -= 1
            if uses[id(t)]:
                kept[id(t)] = parts
            else:
                kept.pop(id(t), None)
    return h.hexdigest()


def _reference_tensors(model: torch.nn.Module, adapter: str | None) -> Iterator[tuple[str, torch.Tensor]]:
    """``(plain name, tensor)`` of what the reference computes with; ``keep_vars`` keeps ZeRO-3's attributes."""
    seen: set[str] = set()
    for key, t in model.state_dict(keep_vars=True).items():
        name = _base_name(key, adapter)
        if name is not None and name not in seen:  # tied weights appear once under each name; keep both names
            seen.add(name)
            yield name, t


@contextlib.contextmanager
def _gathered(t: torch.Tensor):
    """The full tensor of a ZeRO-3 partitioned parameter for the duration of the block (a no-op otherwise)."""
    if hasattr(t, "ds_id"):
        import deepspeed

        with deepspeed.zero.GatheredParameters([t], modifier_rank=None):
            yield
    else:
        yield


_CHECKSUM_PERIOD = 65521  # position weights cycle through 1..65521 (the largest prime below 2**16)


def _exact_checksums(flat: torch.Tensor) -> tuple[int, int]:
    """Integer sums of the raw 16-bit words, plain and position-weighted (word i weighs i mod 65521 + 1).

    Exact (no float rounding), so the same on any device, thread count or reduction order; every bit of every
    element counts, and the weighted sum sees swapped elements. One pass: the words are viewed as rows of 65521,
    so every column has one weight and the weighted sum is the column sums times 1..65521 (int32 column sums where
    they cannot overflow: fewer than 2**16 rows of |word| <= 2**15); the last partial row is weighted directly.
    """
    words = flat.contiguous().view(torch.int16 if flat.element_size() > 1 else torch.uint8)
    n = words.numel()
    body = n - n % _CHECKSUM_PERIOD
    plain = weighted = 0
    if body:
        rows = body // _CHECKSUM_PERIOD
        acc = torch.int32 if rows < 1 << 16 else torch.int64
        col = words[:body].view(rows, _CHECKSUM_PERIOD).sum(0, dtype=acc).long()
        plain += int(col.sum())
        weighted += int((col * torch.arange(1, _CHECKSUM_PERIOD + 1, device=col.device)).sum())
    if n > body:
        tail = words[body:].long()
        plain += int(tail.sum())
        weighted += int((tail * torch.arange(1, tail.numel() + 1, device=tail.device)).sum())
    return plain, weighted


def _base_name(name: str, adapter: str | None = None) -> str | None:
    """The plain model's name of a (possibly PEFT-wrapped) weight; None for what is not part of the reference.

    PEFT renames base weights (``base_model.model.`` prefix, ``.base_layer`` infix); undoing that makes a PEFT
    policy with its adapter disabled fingerprint exactly like the plain base model it wraps. The reference
    adapter's weights keep their module path with the adapter name replaced by ``reference``.
    """
    if name.startswith("base_model.model."):
        name = name[len("base_model.model."):]
    if ".modules_to_save." in name:
        return None
    if "lora_" in name:
        if adapter is None or f".{adapter}." not in name and not name.endswith(f".{adapter}"):
            return None
        name = name.replace(f".{adapter}.", ".reference.")
    return name.replace(".base_layer.", ".").replace(".original_module.", ".")


# Config entries that do not change the numbers (names, versions, output switches); dtype is keyed on its own.
_CONFIG_IGNORED = frozenset({"_name_or_path", "transformers_version", "architectures", "dtype", "torch_dtype",
                             "use_cache", "output_attentions", "output_hidden_states", "return_dict"})


def config_fingerprint(model: torch.nn.Module) -> str:
    """sha256 of the model config (rope, norm eps, activation, ...): the same weights under another config give
    other numbers."""
    config = getattr(model, "config", None)
    d = config.to_dict() if hasattr(config, "to_dict") else {}
    d = {k: v for k, v in d.items() if k not in _CONFIG_IGNORED}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """sha256 of the vocabulary, special tokens and chat template."""
    payload = {
        "vocab": sorted(tokenizer.get_vocab().items()),
        "special": {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())},
        "template": getattr(tokenizer, "chat_template", None),
        "class": type(tokenizer).__name__,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
