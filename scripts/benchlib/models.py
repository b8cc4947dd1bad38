"""The benchmark models: random (or embedded) weights built once from a seed and saved with the tokenizer, so that
every configuration loads the same files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

# Model shapes. small: a Llama of ~27 M parameters with the embedded 4096-token tokenizer (compute dominates on
# CPU); bigvocab: a 2-layer body with Qwen2's 151,936-token vocabulary (~84 M parameters, the embedding dominates);
# qwen2_0_5b: Qwen2-0.5B's dimensions (its 151,936-row embedding included), for GPU runs.
SHAPES: dict[str, dict[str, Any]] = {
    "small": {"arch": "llama", "hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 8,
              "num_attention_heads": 8, "num_key_value_heads": 8},
    "bigvocab": {"arch": "llama", "hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 2,
                 "num_attention_heads": 8, "num_key_value_heads": 4, "vocab_size": 151936},
    "qwen2_0_5b": {"arch": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                   "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936, "rope_theta": 1e6,
                   "rms_norm_eps": 1e-6, "max_position_embeddings": 4096},
}


def model_config(shape: dict[str, Any], tokenizer, max_length: int):
    """The transformers config of a benchmark model (vocabulary from the tokenizer unless the shape fixes a larger
    one; the extra rows are never fed)."""
    from transformers import LlamaConfig, Qwen2Config

    m = dict(shape)
    arch = m.pop("arch")
    vocab = max(m.pop("vocab_size", 0), len(tokenizer))
    common = {"vocab_size": vocab, "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id,
              "bos_token_id": None, "tie_word_embeddings": True}
    if arch == "qwen2":
        return Qwen2Config(**m, **common)
    return LlamaConfig(**m, max_position_embeddings=max(1024, max_length), **common)


def count_params(config) -> int:
    """Parameters of ``config``'s causal LM, counted on the meta device (nothing allocated)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def build_model_dir(shape: dict[str, Any], tokenizer, out: Path, *, seed: int, max_length: int,
                    dtype: str = "float32") -> tuple[Path, int]:
    """Build the random model once (seeded) and save it with the tokenizer: every run loads these weights. A
    Llama shape without a fixed vocabulary is built by align's own embedded-model builder at that size."""
    from transformers import AutoModelForCausalLM

    from align.models.tiny import TinyShape, build_model

    if shape["arch"] == "llama" and not shape.get("vocab_size"):
        spec = TinyShape(vocab_size=len(tokenizer), hidden_size=shape["hidden_size"],
                        intermediate_size=shape["intermediate_size"], num_hidden_layers=shape["num_hidden_layers"],
                        num_attention_heads=shape["num_attention_heads"],
                        num_key_value_heads=shape["num_key_value_heads"], max_position_embeddings=max(1024, max_length),
                        seed=seed)
        model = build_model(tokenizer, spec)
    else:
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(model_config(shape, tokenizer, max_length))
    if dtype != "float32":
        model = model.to(getattr(torch, dtype))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out, sum(p.numel() for p in model.parameters())


def load_measured_policy(spec: dict[str, Any], out: dict[str, Any]) -> torch.nn.Module:
    """The worker's policy (``spec``'s model, dtype, device and seed), with ``rss_after_model_load_mb`` recorded in
    ``out`` and the GPU peak counter reset after the load, alike on both sides."""
    from align.models.loading import load_model
    from benchlib.memory import maxrss_mb
    from benchlib.timing import sync

    device = spec["device"]
    torch.manual_seed(spec["seed"])
    policy = load_model(spec["model_dir"], spec["dtype"]).to(device)
    sync(device)
    out["rss_after_model_load_mb"] = maxrss_mb()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    return policy
