"""A separate held-out file (``data.eval``): read with its own field names (``data.eval_columns``, else the standard
ones) whatever ``data.columns`` renames in the training file; a file that gives no example is a one-line error that
names the file and the fields its rows have. For offline training (:func:`align.pipeline.load_data`), GRPO's
prompts and ``align iterate``'s prompts (which take their held-out prompts from that file, not from a split)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from align.config import load_recipe
from align.data.example import DataError
from align.iterate import load_iterate_prompts
from align.online_run import load_prompt_data
from align.pipeline import load_data
from tests.conftest import REPO


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _pairs(tmp: Path, custom: bool) -> tuple[str, str]:
    """A 20-row training file with custom field names and a 12-row held-out file (custom or standard names)."""
    train = [{"question": f"q{i}?", "response_j": f"good {i}", "response_k": f"bad {i}"} for i in range(20)]
    names = ("question", "response_j", "response_k") if custom else ("prompt", "chosen", "rejected")
    held = [dict(zip(names, (f"h{i}?", f"fine {i}", f"poor {i}"))) for i in range(12)]
    return _jsonl(tmp / "train.jsonl", train), _jsonl(tmp / "held.jsonl", held)


COLUMNS = "data.columns={question: prompt, response_j: chosen, response_k: rejected}"


def test_columns_apply_to_the_training_file_only(small_tokenizer, tmp_path):
    train, held = _pairs(tmp_path, custom=False)
    recipe = load_recipe(REPO / "recipes/dpo_tiny.yaml", [f"data.train={train}", f"data.eval={held}", COLUMNS])
    data = load_data(recipe, small_tokenizer)
    assert (len(data.train), len(data.eval)) == (20, 12)
    assert data.report.rows_read == 32 and data.report.examples == 32 and not data.report.skipped


def test_eval_columns_rename_the_eval_file(small_tokenizer, tmp_path):
    train, held = _pairs(tmp_path, custom=True)
    recipe = load_recipe(REPO / "recipes/dpo_tiny.yaml", [f"data.train={train}", f"data.eval={held}", COLUMNS,
                                                          COLUMNS.replace("data.columns", "data.eval_columns")])
    assert len(load_data(recipe, small_tokenizer).eval) == 12


def test_an_eval_file_with_no_example_is_an_error_naming_its_fields(small_tokenizer, tmp_path):
    train, held = _pairs(tmp_path, custom=True)  # custom names in the eval file, no eval_columns
    recipe = load_recipe(REPO / "recipes/dpo_tiny.yaml", [f"data.train={train}", f"data.eval={held}", COLUMNS])
    with pytest.raises(DataError) as e:
        load_data(recipe, small_tokenizer)
    msg = str(e.value)
    assert "\n" not in msg and "data.eval" in msg and held in msg and "12 rows read, 0 examples" in msg
    assert "question, response_j, response_k" in msg and "data.eval_columns" in msg


def test_a_training_file_with_no_example_is_an_error_naming_its_fields(small_tokenizer, tmp_path):
    train, _ = _pairs(tmp_path, custom=True)
    recipe = load_recipe(REPO / "recipes/dpo_tiny.yaml", [f"data.train={train}"])  # no mapping
    with pytest.raises(DataError, match=r"data.train .*train.jsonl: 20 rows read, 0 examples .*fields: question, "
                                        r"response_j, response_k; read with the standard field names"):
        load_data(recipe, small_tokenizer)


def test_bad_eval_columns_are_a_config_error():
    with pytest.raises(Exception, match="data.eval_columns: 'q' maps to unknown field 'question'"):
        load_recipe(REPO / "recipes/dpo_tiny.yaml", ["data.eval_columns={q: question}"])


def _prompt_files(tmp: Path) -> tuple[str, str]:
    train = _jsonl(tmp / "prompts.jsonl", [{"question": f"train prompt {i}", "answer": str(i)} for i in range(30)])
    held = _jsonl(tmp / "eval_prompts.jsonl", [{"prompt": f"held-out prompt {i}", "answer": str(i)} for i in range(8)])
    return train, held


def test_grpo_prompts_read_the_eval_file_with_its_own_names(small_tokenizer, tmp_path):
    train, held = _prompt_files(tmp_path)
    recipe = load_recipe(REPO / "recipes/grpo_rank_tiny.yaml",
                         [f"data.train={train}", f"data.eval={held}", "data.columns={question: prompt}"])
    tr, ev, report, _ = load_prompt_data(recipe, small_tokenizer)
    assert (len(tr), len(ev)) == (30, 8) and report.examples == 38


def test_iterate_holds_out_the_eval_files_prompts(small_tokenizer, tmp_path):
    train, held = _prompt_files(tmp_path)
    recipe = load_recipe(REPO / "recipes/iterate_dpo_tiny.yaml",
                         [f"data.train={train}", f"data.eval={held}", "data.columns={question: prompt}",
                          "data.eval_fraction=0.1", "iterate.eval_prompts=46"])
    tr, ev, report = load_iterate_prompts(recipe, small_tokenizer)
    # every training prompt is trained on; the 8 held-out prompts are the eval file's, in its order
    assert [p.example.prompt for p in tr] == [f"train prompt {i}" for i in range(30)]
    assert [p.example.prompt for p in ev] == [f"held-out prompt {i}" for i in range(8)]
    assert ev[0].example.columns == {"answer": "0"} and report.rows_read == 38
    # iterate.eval_prompts caps the held-out prompts; 0 holds none out
    recipe.iterate.eval_prompts = 3
    assert len(load_iterate_prompts(recipe, small_tokenizer)[1]) == 3
    recipe.iterate.eval_prompts = 0
    tr, ev, _ = load_iterate_prompts(recipe, small_tokenizer)
    assert (len(tr), len(ev)) == (30, 0)


def test_iterate_without_an_eval_file_splits_by_prompt(small_tokenizer, tmp_path):
    train, _ = _prompt_files(tmp_path)
    recipe = load_recipe(REPO / "recipes/iterate_dpo_tiny.yaml", [f"data.train={train}", "data.eval_fraction=0.2",
                                                                  "data.columns={question: prompt}"])
    tr, ev, _ = load_iterate_prompts(recipe, small_tokenizer)
    assert (len(tr), len(ev)) == (24, 6)
    assert not {p.example.prompt for p in tr} & {p.example.prompt for p in ev}
