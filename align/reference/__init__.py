"""Reference log-probs, computed once and shared by every trainer, run and evaluation."""

from align.reference.cache import CacheError, CacheStats, ReferenceCache
from align.reference.fingerprint import tokenizer_fingerprint, weights_fingerprint

__all__ = ["CacheError", "CacheStats", "ReferenceCache", "tokenizer_fingerprint", "weights_fingerprint"]
