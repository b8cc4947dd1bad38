"""Fingerprints of what changes reference log-probs: weights and tokenizer (the data has its own)."""

from __future__ import annotations

import hashlib
import json

import torch
from transformers import PreTrainedTokenizerBase

# Tensors up to this size are hashed whole; larger ones by a strided sample of this many elements plus their
# float64 sum and sum of squares. Any training step moves every weight, so this is exact in practice and keeps
# a 7B fingerprint to seconds instead of a minute of hashing.
_FULL_HASH_ELEMENTS = 1 << 22


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer's name, shape, dtype and values.

    PEFT adapter weights (names containing ``lora_``) are left out: the reference of a PEFT run is the base
    model with the adapter disabled.
    """
    h = hashlib.sha256()
    # PEFT renames base weights (``base_model.model.`` prefix, ``.base_layer`` infix); undo that so a PEFT
    # policy with its adapter disabled fingerprints exactly like the plain base model it wraps.
    state = {_base_name(k): v for k, v in model.state_dict().items()}
    state.pop(None, None)  # adapter weights and PEFT's trainable copies: not the reference
    for name in sorted(state):
        t = state[name].detach()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        flat = t.reshape(-1)
        if flat.numel() > _FULL_HASH_ELEMENTS:
            step = flat.numel() // _FULL_HASH_ELEMENTS
            h.update("|".join(map(str, _exact_checksums(flat))).encode())
            flat = flat[::step]
        h.update(flat.cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _exact_checksums(flat: torch.Tensor, chunk: int = 1 << 24) -> tuple[int, int]:
    """Integer sums of the raw 16-bit words, plain and position-weighted.

    Exact (no float rounding), so the same on any device, thread count or reduction order; every bit of every
    element counts, and the weighted sum sees swapped elements. Chunked to bound memory; no int64 overflow
    (|word| < 2**15, weight <= 65521, 2**24 words a chunk).
    """
    words = flat.contiguous().view(torch.int16 if flat.element_size() > 1 else torch.uint8)
    plain = weighted = 0
    for start in range(0, words.numel(), chunk):
        w = words[start : start + chunk].long()
        pos = torch.arange(start, start + w.numel(), device=w.device) % 65521 + 1
        plain += int(w.sum())
        weighted += int((w * pos).sum())
    return plain, weighted


def _base_name(name: str) -> str | None:
    """The plain model's name of a (possibly PEFT-wrapped) weight; None for adapter weights and trained copies."""
    if "lora_" in name or ".modules_to_save." in name:
        return None
    if name.startswith("base_model.model."):
        name = name[len("base_model.model."):]
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
