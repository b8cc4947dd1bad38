"""scripts/bench_grpo.py at a minuscule size: its pieces run in this process, the JSON has its documented keys,
and align's GRPO loss and gradients equal TRL's on the same fixed batch of completions."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

from tests.conftest import REPO

pytest.importorskip("trl")
pytest.importorskip("datasets")

RATIO_KEYS = {"tiny_speed_vs_trl", "bigvocab_speed_vs_trl", "bigvocab_memory_vs_trl", "generation_vs_trl"}


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_grpo", REPO / "scripts" / "bench_grpo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_minuscule_run_in_process(bench, tmp_path):
    """The embedded tiny model, 2 steps of 1 prompt × 2 completions of ≤ 4 tokens, both β: every configuration
    runs, the summary carries the contract's keys, TRL and align agree on the fixed batch."""
    args = bench.build_parser().parse_args(
        ["--models", "tiny", "--steps", "2", "--timing-warmup", "1", "--batch-prompts", "1", "--num-generations",
         "2", "--max-completion-length", "4", "--agreement-prompts", "2", "--output", str(tmp_path / "g.json")])
    plan = bench.make_plan(args)
    summary = bench.run_benchmark(plan, tmp_path / "work", in_process=True, log=lambda msg: None)

    assert RATIO_KEYS <= set(summary["ratios"]) and set(summary["targets"]) == RATIO_KEYS
    tiny = summary["ratios"]["tiny_speed_vs_trl"]
    assert tiny is not None and math.isfinite(tiny) and tiny > 0
    assert summary["ratios"]["generation_vs_trl"] > 0
    assert summary["ratios"]["bigvocab_speed_vs_trl"] is None  # not run: null, not a made-up number

    la = summary["loss_agreement"]
    assert summary["ratios"]["loss_agreement"] == {"max_abs_diff": la["max_abs_diff"]}
    assert set(la["by_beta"]) == {"0", "0.04"} and la["completions"] == 4
    for beta, x in la["by_beta"].items():
        assert x["trl"] != 0.0, beta  # the fixed batch has rewards that differ within a group: a real loss
        assert x["parameters_compared"] == x["parameters_with_grad"]["trl"] == x["parameters_with_grad"]["align"]
        assert x["grad_max_abs"] > 1e-3, beta  # and real gradients
    assert la["max_abs_diff"] < 1e-4, la
    assert la["grad_max_abs_diff"] < 1e-4, la

    model = summary["models"]["tiny"]
    assert set(model["configs"]) == {"align_beta0", "trl_beta0", "align_beta0.04", "trl_beta0.04"}
    for name, c in model["configs"].items():
        run = c["runs"][0]
        assert run["steps"] == 2 and run["warmup_steps"] == 1 and len(run["per_step"]) == 2, name
        med = c["median"]
        assert med["steps_per_second"] > 0 and med["peak_rss_mb"] > 0, name
        assert med["generation_seconds"] > 0 and med["fed_tokens"] > 0, name
        assert (med["reference_seconds"] is not None) == ("0.04" in name), name
        assert model["checks"][name]["order_same_as_trl"], name
    ids = model["checks"]["trl_beta0"]["identical_prompt_ids"]
    assert ids == {"prompts": 2, "identical": 2}  # TRL renders the chat itself and gets align's ids

    table = bench.render_markdown(summary, "python scripts/bench_grpo.py")
    assert "| align_beta0.04 |" in table and "Loss agreement" in table
    from align.io import json_text

    assert RATIO_KEYS <= set(json.loads(json_text(summary))["ratios"])


def test_quick_picks_a_few_of_the_full_runs_batches(bench):
    """--quick: 5 of the 16 four-prompt batches, the costliest as the warm-up one, no prompt twice."""
    from align.models.loading import load_tokenizer

    plan = bench.make_plan(bench.build_parser().parse_args(["--quick"]))
    order, data = bench.prompt_order(plan, load_tokenizer("embedded:tiny"), 4)
    sel = data["selected_from"]
    assert data["steps"] == 5 and len(order) == 20 == len(set(order))
    assert sel["batches"] == 16 and len(sel["picked"]) == 5
    assert sel["picked_max_padded_tokens_per_step"] == sel["full_max_padded_tokens_per_step"]
    assert data["prompt_tokens_min"] == 63 and data["prompt_tokens_max"] == 203
    full = bench.make_plan(bench.build_parser().parse_args([]))
    order, data = bench.prompt_order(full, load_tokenizer("embedded:tiny"), 4)
    assert order == list(range(64)) and data["steps"] == 16  # the full run: one epoch, in order


def test_bad_flags_are_one_line_errors(bench):
    with pytest.raises(SystemExit, match="unknown model"):
        bench.make_plan(bench.build_parser().parse_args(["--models", "tiny,gpt5"]))
    with pytest.raises(SystemExit, match="non-negative"):
        bench.make_plan(bench.build_parser().parse_args(["--betas", "-1"]))
