"""Reference log-probs, computed once and shared by every trainer, run, evaluation and training round.

- :class:`ReferenceIdentity`: the one key builder (weights, config, tokenizer, dtype, per-token flag).
- :class:`ReferenceStore`: content-addressed, verified shards on disk; an entry per (prompt, response) sequence.
- :class:`ReferenceProvider`, with :class:`CachedReference` (the store, filled once) and :class:`LiveReference`
  (a model scoring on demand, for samples made during training).
- :func:`default_cache_root` and :func:`reference_for` build the usual provider for a policy.
"""

from align.reference.build import REFERENCE_ADAPTER, default_cache_root, reference_for
from align.reference.fingerprint import config_fingerprint, tokenizer_fingerprint, weights_fingerprint
from align.reference.identity import ReferenceIdentity
from align.reference.maintenance import describe
from align.reference.provider import CachedReference, CacheStats, LiveReference, ReferenceProvider
from align.reference.store import CacheError, Entry, ReferenceStore, entry_key

__all__ = ["REFERENCE_ADAPTER", "CacheError", "CacheStats", "CachedReference", "Entry", "LiveReference",
           "ReferenceIdentity", "ReferenceProvider", "ReferenceStore", "config_fingerprint", "default_cache_root",
           "describe", "entry_key", "reference_for", "tokenizer_fingerprint", "weights_fingerprint"]
