"""Who the reference is: the one key builder for every reference log-prob, wherever it is computed or read.

An entry of the cache is addressed by this identity plus the hash of its own token ids
(:func:`align.reference.store.entry_key`), so the identity holds exactly what changes a log-prob besides the
tokens: the weights by value, the model config, the tokenizer and chat template, the dtype, and whether per-token
values are stored. Names, paths and data settings are not in it: the same weights loaded from another directory
share entries, and max lengths or truncation are already in the token ids.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

import torch

from align.distributed import agree
from align.reference.fingerprint import config_fingerprint, tokenizer_fingerprint, weights_fingerprint

FORMAT_VERSION = 3  # 3: signed shards, key index; 2 (unsigned, no index) is rebuilt, not read


@dataclass(frozen=True)
class ReferenceIdentity:
    """Everything besides the tokens that determines a reference log-prob.

    Attributes:
        weights: :func:`~align.reference.fingerprint.weights_fingerprint` of the reference.
        config: :func:`~align.reference.fingerprint.config_fingerprint` of its model config.
        tokenizer: :func:`~align.reference.fingerprint.tokenizer_fingerprint` (vocabulary, specials, template).
        dtype: the dtype the forward runs in.
        per_token: whether entries also hold per-token log-probs.
        format: the cache format version.
    """

    weights: str
    config: str
    tokenizer: str
    dtype: str
    per_token: bool = False
    format: int = FORMAT_VERSION

    @property
    def key(self) -> str:
        """32 hex digits naming the cache directory of this reference."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:32]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, model: torch.nn.Module, tokenizer: Any, *, per_token: bool = False,
           adapter: str | None = None) -> ReferenceIdentity:
        """The identity of ``model`` as a reference.

        Args:
            model: the reference model; for a PEFT policy, the model whose reference mode (adapters disabled, or
                the frozen ``adapter``) gives the reference numbers.
            tokenizer: its tokenizer.
            per_token: entries hold per-token values too.
            adapter: the PEFT adapter that is part of the reference (see
                :func:`~align.reference.fingerprint.weights_fingerprint`).

        In a distributed run every rank must call this (ZeRO-3 gathers each parameter); the ranks then check that
        they agree, so a rank holding other weights is an error, not a silently different cache.
        """
        identity = cls(weights=weights_fingerprint(model, adapter), config=config_fingerprint(model),
                       tokenizer=tokenizer_fingerprint(tokenizer), dtype=str(next(model.parameters()).dtype),
                       per_token=per_token)
        agree(identity.key, "reference identity (weights, config, tokenizer, dtype)")
        return identity
