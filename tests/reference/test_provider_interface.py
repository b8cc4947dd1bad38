"""The reference provider's interface is all a trainer uses: prefetch, bind to an engine, release the policy."""

import torch
from transformers import AutoModelForCausalLM

from align.reference import CachedReference, CacheStats, LiveReference
from align.reference.provider import ReferenceProvider


class _Constant(ReferenceProvider):
    """A provider with nothing but the abstract methods: the defaults must make it usable by a trainer."""

    def __init__(self):
        self.stats = CacheStats(key="constant")

    @property
    def identity(self):
        raise NotImplementedError

    def lookup(self, lists):
        return [[None] * len(t.response_ids) for t in lists]


def test_defaults_of_a_minimal_provider():
    p = _Constant()
    assert p.prefetch([]) is p.stats
    p.bind_engine(True)
    p.release(torch.nn.Linear(1, 1))


def test_cached_reference_binds_and_releases_its_live_model(small_model_dir, small_tokenizer, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(small_model_dir)
    ref = CachedReference.for_model(tmp_path, LiveReference(model, small_tokenizer), progress=False)
    live = ref.live
    ref.bind_engine(True)
    assert live.engine_managed is True
    ref.bind_engine(False)
    assert live.engine_managed is False
    ref.release(torch.nn.Linear(1, 1))  # another model: the live reference stays
    assert ref.live is live
    ref.release(model)  # the policy itself is about to change: no longer a reference
    assert ref.live is None
    ref.bind_engine(True)  # nothing left to bind
