"""align: fine-tune language models on ranked responses."""

__version__ = "0.1.0"
