"""Model loading: the embedded tiny default, or any Hugging Face id or local path."""

from align.models.loading import load_model, load_tokenizer, resolve_model_path

__all__ = ["load_model", "load_tokenizer", "resolve_model_path"]
