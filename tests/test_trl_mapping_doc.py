"""docs/coming_from_trl.md lists every field of TRL's GRPOConfig that is not a TrainingArguments field (with what
align does instead, or that it has none), and the defaults and loss types that differ."""

from __future__ import annotations

import dataclasses
import re

import transformers
import trl

from tests.conftest import REPO

DOC = (REPO / "docs" / "coming_from_trl.md").read_text()


def _names_in_doc() -> set[str]:
    return set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*\*?)`", DOC))


def _covered(field: str, names: set[str]) -> bool:
    return field in names or any(n.endswith("*") and field.startswith(n[:-1]) for n in names)


def test_every_grpo_config_field_is_listed():
    base = {f.name for f in dataclasses.fields(transformers.TrainingArguments)}
    fields = [f.name for f in dataclasses.fields(trl.GRPOConfig) if f.name not in base]
    names = _names_in_doc()
    missing = [f for f in fields if not _covered(f, names)]
    assert not missing, f"GRPOConfig fields missing from docs/coming_from_trl.md: {missing}"


def test_the_differences_a_trl_user_trips_on_are_stated():
    grpo = DOC[DOC.index("## `GRPOConfig`"):DOC.index("## `TrainingArguments`")]
    for loss_type in ("cispo", "sapo", "luspo", "vespo"):
        assert f"`{loss_type}`" in grpo
    assert "not implemented" in grpo
    assert re.search(r"`max_completion_length` \| `loss.max_completion_length` \| \*\*256 in align, 512 in TRL", grpo)
    assert "| `disable_dropout` | `model.disable_dropout` | **`true` in align, `false` in TRL" in grpo
    assert "| `generation_batch_size` | `loss.generation_batch_size` | **Another meaning.**" in grpo
    assert "| `truncation_mode` | `data.truncation` | **Another setting.**" in DOC
    for key in ("importance_sampling_level", "multi_objective_aggregation", "log_completions", "reward_funcs"):
        assert f"| `{key}`" in grpo, key
