"""The embedded model's tokenizer corpus is named (``embedded:tiny?corpus=DIR``, else ``$ALIGN_DATA_DIR``), never a
folder outside the package by default, and its directory name says which corpus (or none) the tokenizer saw."""

import shutil

import pytest

from align.config import load_recipe
from align.errors import ConfigError, DataError, ModelError
from align.models.loading import embedded_corpus, is_embedded
from align.models.tiny import corpus_digest, corpus_files

SMALL = dict(vocab_size=300, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
             num_key_value_heads=1)


def test_no_setting_no_corpus(monkeypatch):
    monkeypatch.delenv("ALIGN_DATA_DIR", raising=False)
    assert corpus_files() == []
    assert corpus_digest([]) == "none"


def test_digest_follows_the_corpus_content(monkeypatch, tmp_path):
    from tests.conftest import OASST

    monkeypatch.setenv("ALIGN_DATA_DIR", str(tmp_path))
    assert corpus_files() == []
    shutil.copy(OASST, tmp_path / OASST.name)
    files = corpus_files()
    assert [p.name for p in files] == [OASST.name] and corpus_files(tmp_path) == files
    first = corpus_digest(files)
    assert len(first) == 12 and first != "none"
    with open(tmp_path / OASST.name, "a") as f:
        f.write('{"prompt": {"text": "one more row"}}\n')
    assert corpus_digest(corpus_files()) != first


def test_a_named_folder_without_the_files_is_an_error(tmp_path):
    with pytest.raises(ModelError, match="no hh_rlhf_harmless_base.jsonl.gz or oasst_en_trees.jsonl"):
        corpus_files(tmp_path)


def test_the_embedded_name_and_its_corpus():
    assert is_embedded("embedded:tiny") and is_embedded("embedded:tiny?corpus=/d") and not is_embedded("gpt2")
    assert embedded_corpus("embedded:tiny") is None
    assert embedded_corpus("embedded:tiny?corpus=/a%20b") == "/a b"
    for bad in ("embedded:tiny?corpus=", "embedded:tiny?data=/d", "embedded:tiny?corpus=/a&corpus=/b"):
        with pytest.raises(ConfigError, match="one setting, corpus=DIR"):
            embedded_corpus(bad)


def test_ensure_tiny_names_its_corpus(monkeypatch, tmp_path):
    from align.models import tiny
    from tests.conftest import OASST

    monkeypatch.delenv("ALIGN_DATA_DIR", raising=False)
    out = tiny.ensure_tiny(tmp_path, tiny.TinyShape(**SMALL))
    assert out.name.endswith("-none") and (out / "tokenizer.json").exists()
    named = tiny.ensure_tiny(tmp_path, tiny.TinyShape(**SMALL), corpus_files(OASST.parent))
    assert named.name.endswith(corpus_digest(corpus_files(OASST.parent))) and named != out


def test_a_recipe_corpus_is_found_as_data_paths_are(tmp_path, monkeypatch):
    from tests.conftest import REPO, SHARED_DATA

    monkeypatch.chdir(REPO)
    r = load_recipe(REPO / "recipes" / "dpo_tiny.yaml")  # names ../shared/data: found from the working directory
    assert r.model.name_or_path == f"embedded:tiny?corpus={SHARED_DATA.resolve()}"
    assert corpus_files(embedded_corpus(r.model.name_or_path))  # the preference files it names


def test_a_run_without_data_names_the_missing_setting():
    from align.run_setup import resolve_path

    assert load_recipe(None).data.train == ""  # no file outside the package by default
    with pytest.raises(DataError, match="no data given: set data.train"):
        resolve_path("", ["."])
