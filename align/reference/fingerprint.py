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
    state = {_base_name(k): v for k, v in model.state_dict().items() if "lora_" not in k}
    for name in sorted(state):
        t = state[name].detach()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        flat = t.reshape(-1)
        if flat.numel() > _FULL_HASH_ELEMENTS:
            step = flat.numel() // _FULL_HASH_ELEMENTS
            f64 = flat.double()
            h.update(f"{f64.sum().item():.17g}|{(f64 * f64).sum().item():.17g}".encode())
            flat = flat[::step]
        h.update(flat.cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _base_name(name: str) -> str:
    if name.startswith("base_model.model."):
        name = name[len("base_model.model."):]
    return name.replace(".base_layer.", ".")


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """sha256 of the vocabulary, special tokens and chat template."""
    payload = {
        "vocab": sorted(tokenizer.get_vocab().items()),
        "special": {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())},
        "template": getattr(tokenizer, "chat_template", None),
        "class": type(tokenizer).__name__,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
