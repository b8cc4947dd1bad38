"""The embedded model's tokenizer corpus is an explicit setting ($ALIGN_DATA_DIR), and its directory name says
which corpus (or none) the tokenizer was trained on; a run names its training data."""

import shutil

import pytest

from align.config import load_recipe
from align.errors import DataError
from align.models.tiny import corpus_digest, default_corpus_files


def test_no_setting_no_corpus(monkeypatch):
    monkeypatch.delenv("ALIGN_DATA_DIR", raising=False)
    assert default_corpus_files() == []
    assert corpus_digest([]) == "none"


def test_digest_follows_the_corpus_content(monkeypatch, tmp_path):
    from tests.conftest import OASST

    if not OASST.exists():
        pytest.fail(f"{OASST} is needed")
    monkeypatch.setenv("ALIGN_DATA_DIR", str(tmp_path))
    assert default_corpus_files() == []
    shutil.copy(OASST, tmp_path / OASST.name)
    files = default_corpus_files()
    assert [p.name for p in files] == [OASST.name]
    first = corpus_digest(files)
    assert len(first) == 12 and first != "none"
    with open(tmp_path / OASST.name, "a") as f:
        f.write('{"prompt": {"text": "one more row"}}\n')
    assert corpus_digest(default_corpus_files()) != first


def test_ensure_tiny_names_its_corpus(monkeypatch, tmp_path):
    from align.models import tiny

    monkeypatch.delenv("ALIGN_DATA_DIR", raising=False)
    out = tiny.ensure_tiny(tmp_path, tiny.TinySpec(vocab_size=300, hidden_size=16, intermediate_size=32,
                                                   num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
    assert out.name.endswith("-none") and (out / "tokenizer.json").exists()


def test_a_run_without_data_names_the_missing_setting():
    from align.run_setup import resolve_path

    assert load_recipe(None).data.train == ""  # no file outside the package by default
    with pytest.raises(DataError, match="no data given: set data.train"):
        resolve_path("", ["."])
